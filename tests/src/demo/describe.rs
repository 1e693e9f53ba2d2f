//! Failures shown as `kubectl describe` shows them (pure): a pod's containers with their
//! State, Reason, Exit Code and Message (the termination message), and a denied admission
//! as the Job's `FailedCreate` event.

use std::fmt::Write as _;

use crate::pod::{ContainerReport, Phase, PodReport};

/// The webhook's name in the MutatingWebhookConfiguration (manifests/base/).
pub const WEBHOOK_NAME: &str = "inject.datamon.io";

/// A Job's Events when the webhook denied its pod, as `kubectl describe job` shows them.
pub fn denied_job(job: &str, message: &str) -> String {
    format!(
        "Name:     {job}\nEvents:\n  Type     Reason        Age  From            Message\n  ----     ------        ---  ----            -------\n  \
         Warning  FailedCreate  1s   job-controller  Error creating: admission webhook \"{WEBHOOK_NAME}\" denied the request: {message}\n"
    )
}

fn state(c: &ContainerReport) -> (&'static str, String) {
    if let Some((reason, _)) = &c.waiting {
        return ("Waiting", reason.clone());
    }
    match (c.exit_code, c.signal, c.started) {
        (Some(0), _, _) => ("Terminated", "Completed".into()),
        (Some(_), _, _) => ("Terminated", "Error".into()),
        (None, Some(9), _) => ("Terminated", "OOMKilled or killed (signal 9)".into()),
        (None, Some(s), _) => ("Terminated", format!("Error (signal {s})")),
        (None, None, false) => ("Waiting", "PodInitializing".into()),
        (None, None, true) => ("Running", String::new()),
    }
}

fn container(out: &mut String, c: &ContainerReport, image: &str) {
    let (st, reason) = state(c);
    let _ = writeln!(out, "  {}:", c.name);
    let _ = writeln!(out, "    Image:          {image}");
    let _ = writeln!(out, "    State:          {st}");
    if !reason.is_empty() {
        let _ = writeln!(out, "      Reason:       {reason}");
    }
    if let Some((_, message)) = &c.waiting {
        let _ = writeln!(out, "      Message:      {message}");
    }
    let message = c.termination_message.trim();
    if !message.is_empty() {
        let _ = writeln!(out, "      Message:      {message}");
    }
    if let Some(code) = c.exit_code {
        let _ = writeln!(out, "      Exit Code:    {code}");
    }
    let _ = writeln!(out, "    Restart Count:  {}", c.restarts);
}

/// `kubectl describe pod` of a finished pod: its status, init containers and containers;
/// `image_of` gives each container's image.
pub fn pod(name: &str, report: &PodReport, image_of: &dyn Fn(&str) -> String) -> String {
    let phase = match report.phase {
        Phase::Pending => "Pending",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
    };
    let mut out = format!("Name:             {name}\nStatus:           {phase}\n");
    for (title, list) in [
        ("Init Containers", &report.init_containers),
        ("Containers", &report.containers),
    ] {
        let _ = writeln!(out, "{title}:");
        for c in list {
            container(&mut out, c, &image_of(&c.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, exit: Option<i32>, message: &str) -> ContainerReport {
        ContainerReport {
            name: name.into(),
            exit_code: exit,
            signal: None,
            restarts: 0,
            termination_message: message.into(),
            log: "/dev/null".into(),
            started: exit.is_some(),
            waiting: None,
        }
    }

    #[test]
    fn a_failed_pod_reads_as_kubectl_describe() {
        let r = PodReport {
            phase: Phase::Failed,
            reason: None,
            message: None,
            init_containers: vec![report("datamon", Some(1), r#"{"reason":"input_failed"}"#)],
            containers: vec![report("app", Some(69), "")],
        };
        let text = pod("job-x", &r, &|c| format!("img/{c}"));
        assert!(text.contains("Status:           Failed"), "{text}");
        assert!(text.contains("  datamon:\n    Image:          img/datamon\n    State:          Terminated\n      Reason:       Error\n      Message:      {\"reason\":\"input_failed\"}\n      Exit Code:    1\n"), "{text}");
        assert!(text.contains("Exit Code:    69"), "{text}");
        let d = denied_job("j", "bad mode");
        assert!(d.contains("denied the request: bad mode"), "{d}");
    }
}
