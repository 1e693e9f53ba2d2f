//! How a participant's end is told: its exit code, and a short JSON summary in the
//! container's termination message file (Kubernetes shows it in the pod's status), and, when
//! `events.enabled`, a Kubernetes Event about the pod ([`crate::events`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::runtime::state::Reason;

/// Exit code of the wrapper when a sidecar failed or died, or an upload failed
/// (BSD `EX_UNAVAILABLE`).
pub const EXIT_SIDECAR: u8 = 69;
/// Exit code of the wrapper when a deadline passed (as `timeout(1)`).
pub const EXIT_DEADLINE: u8 = 124;
/// Exit code of the wrapper when the application's command cannot be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// Exit code of the wrapper when the application's command is not found.
pub const EXIT_NOT_FOUND: u8 = 127;
/// Exit code when SIGTERM ended the wait before the application started (128 + 15).
pub const EXIT_TERMINATED: u8 = 143;

/// The bytes of a termination message that reach the pod's status in any pod of up to six
/// containers: the kubelet reads the file's last 4096 bytes, then its status manager keeps
/// 12 KiB shared evenly by the pod's containers (2048 each for six; 3072 for four). See
/// <https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/>.
/// A longer message would reach the status cut, as JSON no longer valid.
const MESSAGE_LIMIT: usize = 2048;

/// What a participant reports at its end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// Participant name.
    pub participant: String,
    /// Application exit code (wrapper).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Input name → bundle id provided.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// Output name → new bundle id.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// Why it failed or skipped work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// The message as JSON of at most [`MESSAGE_LIMIT`] bytes: a reason's message too long for
/// it is shortened (ending in `…`), so what reaches the pod's status is still valid JSON.
pub fn render(outcome: &Outcome) -> String {
    let text = serde_json::to_string(outcome).unwrap_or_default();
    let Some(reason) = outcome
        .reason
        .as_ref()
        .filter(|_| text.len() > MESSAGE_LIMIT)
    else {
        return text;
    };
    // The longest prefix of the reason's message that fits (escapes make the JSON longer
    // than the bytes kept, so it is searched for, not computed).
    let with = |keep: usize| {
        let mut message = reason.message.clone();
        cut(&mut message, keep);
        message.push('…');
        let mut shorter = outcome.clone();
        shorter.reason = Some(Reason::new(reason.code, message));
        serde_json::to_string(&shorter).unwrap_or_default()
    };
    let (mut fits, mut over) = (0, reason.message.len());
    while over - fits > 1 {
        let mid = (fits + over) / 2;
        if with(mid).len() <= MESSAGE_LIMIT {
            fits = mid;
        } else {
            over = mid;
        }
    }
    let mut text = with(fits);
    // Only maps of names and ids beyond the limit would leave it too long: cut, at last.
    cut(&mut text, MESSAGE_LIMIT);
    text
}

/// Cuts `text` to at most `limit` bytes, on a character boundary; whether it was cut.
pub(crate) fn cut(text: &mut String, limit: usize) -> bool {
    if text.len() <= limit {
        return false;
    }
    let mut at = limit;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    true
}

/// Writes the message; a missing directory (outside Kubernetes) is only logged. Then posts
/// the Event the outcome deserves if Events are on (waiting at most their deadline, 2 s by
/// default; a failed post is only logged).
pub fn write(path: &Path, outcome: &Outcome) {
    if let Err(e) = std::fs::write(path, render(outcome)) {
        tracing::debug!(path = %path.display(), error = %e, "no termination message written");
    }
    crate::events::post_outcome(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::ReasonCode;

    #[test]
    fn message_is_json_and_bounded() {
        let mut o = Outcome {
            participant: "app".into(),
            exit_code: Some(3),
            ..Outcome::default()
        };
        let v: serde_json::Value = serde_json::from_str(&render(&o)).unwrap();
        assert_eq!(v["exit_code"], 3);
        assert!(v.get("reason").is_none());
        o.reason = Some(Reason::new(ReasonCode::Internal, "é".repeat(5000)));
        assert!(render(&o).len() <= MESSAGE_LIMIT);
    }

    #[test]
    fn a_long_reason_is_shortened_and_the_message_stays_json() {
        for filler in ["é", "\"", "a\n"] {
            let o = Outcome {
                participant: "datamon".into(),
                reason: Some(Reason::new(ReasonCode::InputFailed, filler.repeat(3000))),
                ..Outcome::default()
            };
            let text = render(&o);
            assert!(text.len() <= MESSAGE_LIMIT, "{filler:?}: {}", text.len());
            assert!(text.len() > MESSAGE_LIMIT - 64, "{filler:?}: cut too much");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["reason"]["code"], "input_failed");
            let m = v["reason"]["message"].as_str().unwrap();
            assert!(m.starts_with(filler) && m.ends_with('…'), "{filler:?}");
        }
    }
}
