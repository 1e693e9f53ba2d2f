//! Pod Security: the checker of the published standards (`common::pss`) catches each rule
//! of `baseline` and `restricted`; the pods the webhook makes pass them (a hardened pod with
//! a downloaded input, or a database, is `restricted` as a whole: PostgreSQL needs no
//! exemption; one with a mounted input breaks `baseline` only by its privileged agent, as
//! root); and a mounted input is denied where the namespace enforces a level that refuses
//! privileged containers, or the pod runs in a user namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

mod common;

use std::collections::BTreeMap;

use common::pss::{violations, Level, Violation};
use datamon_webhook::mutate::{
    mutate_pod, NamespaceDefaults, PodSecurityLevel, Verdict, WebhookSettings,
};
use serde_json::{json, Value};

/// A pod that passes `restricted`, with `f` applied.
fn hardened(f: impl FnOnce(&mut Value)) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "app", "image": "busybox", "command": ["ls"],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                },
                "ports": [{"containerPort": 80}],
            }],
            "volumes": [{"name": "v", "emptyDir": {}}],
        },
    });
    f(&mut pod);
    pod
}

/// A rule's check, and a change to a hardened pod that breaks it.
type Case = (&'static str, Box<dyn Fn(&mut Value)>);

/// The application container's securityContext.
fn app(p: &mut Value) -> &mut Value {
    &mut p["spec"]["containers"][0]["securityContext"]
}

fn checks(vs: &[Violation]) -> Vec<&'static str> {
    vs.iter().map(|v| v.check).collect()
}

#[test]
fn a_hardened_pod_passes_both_levels() {
    assert_eq!(violations(&hardened(|_| {}), Level::Restricted), vec![]);
}

#[test]
fn each_baseline_rule_is_caught_at_both_levels() {
    let cases: Vec<Case> = vec![
        (
            "hostProcess",
            Box::new(|p| {
                p["spec"]["securityContext"]["windowsOptions"] = json!({"hostProcess": true})
            }),
        ),
        (
            "hostNamespaces",
            Box::new(|p| p["spec"]["hostPID"] = json!(true)),
        ),
        (
            "hostNamespaces",
            Box::new(|p| p["spec"]["hostNetwork"] = json!(true)),
        ),
        (
            "privileged",
            Box::new(|p| app(p)["privileged"] = json!(true)),
        ),
        (
            "capabilities",
            Box::new(|p| app(p)["capabilities"]["add"] = json!(["SYS_ADMIN"])),
        ),
        (
            "hostPathVolumes",
            Box::new(|p| p["spec"]["volumes"][0] = json!({"name": "h", "hostPath": {"path": "/"}})),
        ),
        (
            "hostPorts",
            Box::new(|p| p["spec"]["containers"][0]["ports"][0]["hostPort"] = json!(8080)),
        ),
        (
            "appArmorProfile",
            Box::new(|p| {
                p["metadata"]["annotations"] =
                    json!({"container.apparmor.security.beta.kubernetes.io/app": "unconfined"})
            }),
        ),
        (
            "appArmorProfile",
            Box::new(|p| app(p)["appArmorProfile"] = json!({"type": "Unconfined"})),
        ),
        (
            "seLinuxOptions",
            Box::new(|p| p["spec"]["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"})),
        ),
        (
            "seLinuxOptions",
            Box::new(|p| app(p)["seLinuxOptions"] = json!({"user": "system_u"})),
        ),
        (
            "procMount",
            Box::new(|p| app(p)["procMount"] = json!("Unmasked")),
        ),
        (
            "seccompProfile_baseline",
            Box::new(|p| app(p)["seccompProfile"] = json!({"type": "Unconfined"})),
        ),
        (
            "sysctls",
            Box::new(|p| {
                p["spec"]["securityContext"]["sysctls"] =
                    json!([{"name": "kernel.msgmax", "value": "1"}])
            }),
        ),
        (
            "hostProbesAndHostLifecycle",
            Box::new(|p| {
                p["spec"]["containers"][0]["livenessProbe"] =
                    json!({"httpGet": {"port": 80, "host": "10.0.0.1"}})
            }),
        ),
    ];
    for (check, f) in &cases {
        let pod = hardened(f);
        let base = violations(&pod, Level::Baseline);
        assert!(checks(&base).contains(check), "{check}: {base:?}");
        let restricted = violations(&pod, Level::Restricted);
        assert!(
            checks(&restricted).contains(check),
            "{check}: {restricted:?}"
        );
    }
    // Allowed by baseline: its capabilities, safe sysctls, known SELinux types, RuntimeDefault.
    let pod = hardened(|p| {
        p["spec"]["securityContext"]["sysctls"] =
            json!([{"name": "net.ipv4.ping_group_range", "value": "0 1"}]);
        p["spec"]["securityContext"]["seLinuxOptions"] =
            json!({"type": "container_t", "level": "s0:c1"});
        app(p)["procMount"] = json!("Default");
        p["metadata"]["annotations"] =
            json!({"container.apparmor.security.beta.kubernetes.io/app": "localhost/mine"});
    });
    assert_eq!(violations(&pod, Level::Restricted), vec![]);
    let pod = hardened(|p| {
        app(p)["capabilities"]["add"] = json!(["CHOWN"]);
        p["spec"]["containers"][0]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("allowPrivilegeEscalation");
    });
    assert_eq!(violations(&pod, Level::Baseline), vec![]);
}

#[test]
fn each_restricted_rule_is_caught_and_only_there() {
    let cases: Vec<Case> = vec![
        (
            "restrictedVolumes",
            Box::new(|p| {
                p["spec"]["volumes"][0] = json!({"name": "n", "nfs": {"server": "s", "path": "/"}})
            }),
        ),
        (
            "allowPrivilegeEscalation",
            Box::new(|p| {
                app(p)
                    .as_object_mut()
                    .unwrap()
                    .remove("allowPrivilegeEscalation");
            }),
        ),
        (
            "allowPrivilegeEscalation",
            Box::new(|p| app(p)["allowPrivilegeEscalation"] = json!(true)),
        ),
        (
            "runAsNonRoot",
            Box::new(|p| {
                p["spec"]["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("runAsNonRoot");
            }),
        ),
        (
            "runAsNonRoot",
            Box::new(|p| app(p)["runAsNonRoot"] = json!(false)),
        ),
        ("runAsUser", Box::new(|p| app(p)["runAsUser"] = json!(0))),
        (
            "runAsUser",
            Box::new(|p| p["spec"]["securityContext"]["runAsUser"] = json!(0)),
        ),
        (
            "seccompProfile_restricted",
            Box::new(|p| {
                p["spec"]["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("seccompProfile");
            }),
        ),
        (
            "capabilities_restricted",
            Box::new(|p| app(p)["capabilities"] = json!({"drop": ["NET_RAW"]})),
        ),
        (
            "capabilities_restricted",
            Box::new(|p| app(p)["capabilities"]["add"] = json!(["CHOWN"])),
        ),
    ];
    for (check, f) in &cases {
        let pod = hardened(f);
        let restricted = violations(&pod, Level::Restricted);
        assert!(
            checks(&restricted).contains(check),
            "{check}: {restricted:?}"
        );
        assert_eq!(
            violations(&pod, Level::Baseline),
            vec![],
            "{check} is not a baseline rule"
        );
    }
    // Container-level settings stand in for the pod's, and every container is looked at.
    let pod = hardened(|p| {
        p["spec"]["securityContext"] = json!({});
        let c = app(p);
        c["runAsNonRoot"] = json!(true);
        c["seccompProfile"] = json!({"type": "Localhost", "localhostProfile": "p.json"});
    });
    assert_eq!(violations(&pod, Level::Restricted), vec![]);
    let pod = hardened(|p| {
        p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    });
    let found = violations(&pod, Level::Restricted);
    assert_eq!(
        checks(&found),
        ["allowPrivilegeEscalation", "capabilities_restricted"]
    );
    assert!(found.iter().all(|v| v.container.as_deref() == Some("init")));
    // A pod in a user namespace may run as root inside it.
    let pod = hardened(|p| {
        p["spec"]["hostUsers"] = json!(false);
        p["spec"]["securityContext"]["runAsUser"] = json!(0);
        p["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
    });
    assert_eq!(violations(&pod, Level::Restricted), vec![]);
}

fn with_annotations(mut pod: Value, annotations: &[(&str, &str)]) -> Value {
    let a: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    pod["metadata"]["annotations"] = json!(a);
    pod
}

const DOWNLOAD: (&str, &str) = ("datamon.io/input.raw", "{repo: raw, path: /data/raw}");
const MOUNT: (&str, &str) = (
    "datamon.io/input.img",
    "{repo: img, path: /data/img/all, mode: mount}",
);
const OUTPUT: (&str, &str) = ("datamon.io/output.out", "{repo: out, path: /data/out}");
const DATABASE: (&str, &str) = (
    "datamon.io/database.pg",
    "{source: {repo: pg}, output: {repo: pg}, owner: {role: app, secret: {name: pg-pass, key: password}}}",
);

fn namespace(enforce: Option<PodSecurityLevel>) -> NamespaceDefaults {
    NamespaceDefaults {
        pod_security_enforce: enforce,
        ..NamespaceDefaults::default()
    }
}

fn patched(pod: &Value, ns: &NamespaceDefaults, native: bool) -> Value {
    let settings = WebhookSettings {
        native_sidecars_supported: native,
        ..WebhookSettings::default()
    };
    match mutate_pod(pod, ns, &settings) {
        Verdict::Patch(p) => {
            let out = common::apply(pod, &p).unwrap();
            common::check_patched(pod, &out, ns, &settings).unwrap();
            out
        }
        other => panic!("not patched: {other:?}"),
    }
}

fn deny(pod: &Value, ns: &NamespaceDefaults) -> String {
    match mutate_pod(pod, ns, &WebhookSettings::default()) {
        Verdict::Deny(m) => m,
        other => panic!("not denied: {other:?}"),
    }
}

#[test]
fn hardened_pods_without_a_mount_stay_restricted_in_every_layout() {
    let ns = namespace(Some(PodSecurityLevel::Restricted));
    for annotations in [
        &[DOWNLOAD][..],
        &[OUTPUT],
        &[DOWNLOAD, OUTPUT],
        &[DATABASE],
        &[DOWNLOAD, DATABASE],
    ] {
        for native in [true, false] {
            let pod = with_annotations(hardened(|_| {}), annotations);
            let out = patched(&pod, &ns, native);
            assert_eq!(
                violations(&out, Level::Restricted),
                vec![],
                "{annotations:?}, native {native}"
            );
            // The agent shares the application's user (the pod's), not root; with a
            // database, a user the PostgreSQL image has (initdb needs it in /etc/passwd).
            let uid = if annotations.contains(&DATABASE) {
                65532
            } else {
                1000
            };
            let agents: Vec<&Value> = ["initContainers", "containers"]
                .iter()
                .filter_map(|k| out["spec"][k].as_array())
                .flatten()
                .filter(|c| c["name"].as_str().unwrap().starts_with("datamon"))
                .collect();
            assert!(!agents.is_empty());
            for a in agents {
                assert_eq!(a["securityContext"]["runAsUser"], uid, "{a}");
                assert_eq!(a["securityContext"]["readOnlyRootFilesystem"], true);
            }
        }
    }
}

#[test]
fn a_mounted_input_gets_a_root_privileged_agent_that_overrides_the_pod() {
    let pod = with_annotations(hardened(|_| {}), &[MOUNT, OUTPUT]);
    for native in [true, false] {
        let out = patched(&pod, &namespace(Some(PodSecurityLevel::Privileged)), native);
        let base = violations(&out, Level::Baseline);
        assert_eq!(checks(&base), ["privileged"], "{base:?}");
        assert_eq!(base[0].container.as_deref(), Some("datamon"));
        let agent = ["initContainers", "containers"]
            .iter()
            .filter_map(|k| out["spec"][k].as_array())
            .flatten()
            .find(|c| c["name"] == "datamon")
            .unwrap();
        let ctx = &agent["securityContext"];
        assert_eq!(
            (&ctx["privileged"], &ctx["runAsUser"], &ctx["runAsNonRoot"]),
            (&json!(true), &json!(0), &json!(false))
        );
        // Everything else is still restricted.
        let others: Vec<Violation> = violations(&out, Level::Restricted)
            .into_iter()
            .filter(|v| v.container.as_deref() != Some("datamon"))
            .collect();
        assert_eq!(others, vec![]);
    }
}

#[test]
fn a_mounted_input_is_denied_where_privileged_containers_are_refused() {
    let pod = with_annotations(hardened(|_| {}), &[MOUNT, DOWNLOAD]);
    for level in [PodSecurityLevel::Baseline, PodSecurityLevel::Restricted] {
        let msg = deny(&pod, &namespace(Some(level)));
        for want in [
            "datamon: 1 problem",
            "datamon.io/input.img:",
            "privileged",
            &format!("Pod Security level `{level}`"),
            "use `mode: download` for this input",
            "pod-security.kubernetes.io/enforce=privileged",
        ] {
            assert!(msg.contains(want), "{want:?} missing from {msg}");
        }
    }
    // Downloaded inputs alone are fine there; so is a namespace that only warns or audits.
    patched(
        &with_annotations(hardened(|_| {}), &[DOWNLOAD]),
        &namespace(Some(PodSecurityLevel::Baseline)),
        true,
    );
    let labels: BTreeMap<String, String> = [
        ("pod-security.kubernetes.io/warn", "restricted"),
        ("pod-security.kubernetes.io/audit", "baseline"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ns = NamespaceDefaults::from_metadata(BTreeMap::new(), &labels);
    assert_eq!(ns.pod_security_enforce, None);
    patched(&pod, &ns, true);
    // A label value that names no level is read as restricted, as Pod Security Admission does.
    let labels = BTreeMap::from([(
        "pod-security.kubernetes.io/enforce".to_string(),
        "strict".to_string(),
    )]);
    let ns = NamespaceDefaults::from_metadata(BTreeMap::new(), &labels);
    assert!(deny(&pod, &ns).contains("`restricted`"));
}

#[test]
fn a_mounted_input_is_denied_in_a_user_namespace() {
    let pod = with_annotations(
        hardened(|p| p["spec"]["hostUsers"] = json!(false)),
        &[MOUNT],
    );
    let msg = deny(&pod, &NamespaceDefaults::default());
    for want in [
        "datamon.io/input.img:",
        "hostUsers: false",
        "mode: download",
    ] {
        assert!(msg.contains(want), "{want:?} missing from {msg}");
    }
    // Downloads do not need the privilege.
    let pod = with_annotations(
        hardened(|p| p["spec"]["hostUsers"] = json!(false)),
        &[DOWNLOAD],
    );
    patched(&pod, &NamespaceDefaults::default(), true);
}
