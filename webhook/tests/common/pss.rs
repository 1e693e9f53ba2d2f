//! The Pod Security Standards' `baseline` and `restricted` levels, as published
//! (kubernetes.io/docs/concepts/security/pod-security-standards) and as Pod Security
//! Admission checks them (its policy `latest`, Kubernetes 1.33), applied to a pod's JSON.
//!
//! Each violation names its check and, where the rule is about one container, that
//! container, so that tests can tell what the webhook added from what the user wrote.
//! Rules about a container visit `initContainers`, `containers` and `ephemeralContainers`.

use std::fmt;

use serde_json::Value;

/// A level of the standards (`privileged` checks nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Baseline,
    Restricted,
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The check, as Pod Security Admission names it (`privileged`, `runAsNonRoot`…).
    pub check: &'static str,
    /// The container at fault; `None` for the pod's own fields.
    pub container: Option<String>,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.container {
            Some(c) => write!(f, "{} (container {c}): {}", self.check, self.detail),
            None => write!(f, "{} (pod): {}", self.check, self.detail),
        }
    }
}

/// Baseline: capabilities that may be added.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Baseline: the "safe" sysctls (the last ones since 1.27, 1.29 and 1.32).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Baseline: SELinux types that may be set.
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Restricted: the only volume types.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every violation of `level` in `pod` (restricted includes baseline).
pub fn violations(pod: &Value, level: Level) -> Vec<Violation> {
    let mut v = Checker {
        spec: &pod["spec"],
        found: Vec::new(),
    };
    v.baseline(&pod["metadata"]["annotations"]);
    if level == Level::Restricted {
        v.restricted();
    }
    v.found.sort();
    v.found
}

struct Checker<'a> {
    spec: &'a Value,
    found: Vec<Violation>,
}

fn is_true(v: &Value) -> bool {
    v.as_bool() == Some(true)
}

impl<'a> Checker<'a> {
    fn containers(&self) -> impl Iterator<Item = (&'a str, &'a Value)> {
        let spec = self.spec;
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .filter_map(move |k| spec[k].as_array())
            .flatten()
            .map(|c| (c["name"].as_str().unwrap_or(""), c))
    }

    fn pod(&mut self, check: &'static str, detail: impl Into<String>) {
        self.found.push(Violation {
            check,
            container: None,
            detail: detail.into(),
        });
    }

    fn container(&mut self, check: &'static str, name: &str, detail: impl Into<String>) {
        self.found.push(Violation {
            check,
            container: Some(name.to_string()),
            detail: detail.into(),
        });
    }

    /// Each container, with its securityContext.
    fn each(&mut self, mut f: impl FnMut(&mut Self, &str, &'a Value, &'a Value)) {
        let all: Vec<_> = self.containers().collect();
        for (name, c) in all {
            f(self, name, c, &c["securityContext"]);
        }
    }

    fn baseline(&mut self, annotations: &'a Value) {
        let pod_ctx = &self.spec["securityContext"];
        // HostProcess.
        if is_true(&pod_ctx["windowsOptions"]["hostProcess"]) {
            self.pod("hostProcess", "windowsOptions.hostProcess is true");
        }
        self.each(|v, name, _, ctx| {
            if is_true(&ctx["windowsOptions"]["hostProcess"]) {
                v.container("hostProcess", name, "windowsOptions.hostProcess is true");
            }
        });
        // Host namespaces.
        for k in ["hostNetwork", "hostPID", "hostIPC"] {
            if is_true(&self.spec[k]) {
                self.pod("hostNamespaces", format!("{k} is true"));
            }
        }
        // Privileged containers.
        self.each(|v, name, _, ctx| {
            if is_true(&ctx["privileged"]) {
                v.container("privileged", name, "privileged is true");
            }
        });
        // Capabilities beyond the default set.
        self.each(|v, name, _, ctx| {
            for cap in ctx["capabilities"]["add"].as_array().into_iter().flatten() {
                let cap = cap.as_str().unwrap_or("");
                if !BASELINE_CAPABILITIES.contains(&cap) {
                    v.container("capabilities", name, format!("adds {cap}"));
                }
            }
        });
        // HostPath volumes.
        for vol in self.spec["volumes"].as_array().into_iter().flatten() {
            if vol.get("hostPath").is_some_and(|h| !h.is_null()) {
                let name = vol["name"].as_str().unwrap_or("").to_string();
                self.pod("hostPathVolumes", format!("volume {name} is a hostPath"));
            }
        }
        // Host ports.
        self.each(|v, name, c, _| {
            for p in c["ports"].as_array().into_iter().flatten() {
                if p["hostPort"].as_i64().is_some_and(|h| h != 0) {
                    v.container("hostPorts", name, format!("hostPort {}", p["hostPort"]));
                }
            }
        });
        // AppArmor: the annotations, and the fields (since 1.30).
        for (k, val) in annotations.as_object().into_iter().flatten() {
            if k.starts_with("container.apparmor.security.beta.kubernetes.io/") {
                let val = val.as_str().unwrap_or("");
                if val != "runtime/default" && !val.starts_with("localhost/") {
                    self.pod("appArmorProfile", format!("annotation {k}: {val}"));
                }
            }
        }
        let apparmor_ok = |ctx: &Value| {
            matches!(
                ctx["appArmorProfile"]["type"].as_str(),
                None | Some("RuntimeDefault" | "Localhost")
            )
        };
        if !apparmor_ok(pod_ctx) {
            self.pod("appArmorProfile", "appArmorProfile.type is not allowed");
        }
        self.each(|v, name, _, ctx| {
            if !apparmor_ok(ctx) {
                v.container(
                    "appArmorProfile",
                    name,
                    "appArmorProfile.type is not allowed",
                );
            }
        });
        // SELinux: a known type, no user, no role.
        let selinux_ok = |ctx: &Value| {
            let o = &ctx["seLinuxOptions"];
            let empty = |k: &str| o[k].as_str().is_none_or(str::is_empty);
            SELINUX_TYPES.contains(&o["type"].as_str().unwrap_or(""))
                && empty("user")
                && empty("role")
        };
        if !selinux_ok(pod_ctx) {
            self.pod("seLinuxOptions", "seLinuxOptions are not allowed");
        }
        self.each(|v, name, _, ctx| {
            if !selinux_ok(ctx) {
                v.container("seLinuxOptions", name, "seLinuxOptions are not allowed");
            }
        });
        // /proc mount type.
        self.each(|v, name, _, ctx| {
            if !matches!(ctx["procMount"].as_str(), None | Some("Default")) {
                v.container("procMount", name, format!("procMount {}", ctx["procMount"]));
            }
        });
        // Seccomp: never Unconfined.
        if pod_ctx["seccompProfile"]["type"].as_str() == Some("Unconfined") {
            self.pod(
                "seccompProfile_baseline",
                "seccompProfile.type is Unconfined",
            );
        }
        self.each(|v, name, _, ctx| {
            if ctx["seccompProfile"]["type"].as_str() == Some("Unconfined") {
                v.container(
                    "seccompProfile_baseline",
                    name,
                    "seccompProfile.type is Unconfined",
                );
            }
        });
        // Sysctls: the safe set only.
        for s in pod_ctx["sysctls"].as_array().into_iter().flatten() {
            let n = s["name"].as_str().unwrap_or("");
            if !SAFE_SYSCTLS.contains(&n) {
                self.pod("sysctls", format!("sysctl {n}"));
            }
        }
        // Probes and lifecycle handlers: no `host` (1.34+).
        self.each(|v, name, c, _| {
            let handlers = ["livenessProbe", "readinessProbe", "startupProbe"]
                .iter()
                .map(|k| &c[*k])
                .chain(["postStart", "preStop"].iter().map(|k| &c["lifecycle"][*k]));
            for h in handlers {
                for kind in ["httpGet", "tcpSocket"] {
                    if h[kind]["host"].as_str().is_some_and(|s| !s.is_empty()) {
                        v.container(
                            "hostProbesAndHostLifecycle",
                            name,
                            format!("{kind}.host is set"),
                        );
                    }
                }
            }
        });
    }

    fn restricted(&mut self) {
        let pod_ctx = &self.spec["securityContext"];
        // Pods in a user namespace may run as uid 0 inside it (KEP-127).
        let user_namespace = self.spec["hostUsers"].as_bool() == Some(false);
        // Volume types.
        for vol in self.spec["volumes"].as_array().into_iter().flatten() {
            let name = vol["name"].as_str().unwrap_or("");
            let kinds: Vec<&String> = vol
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, val)| *k != "name" && !val.is_null())
                .map(|(k, _)| k)
                .collect();
            if kinds
                .iter()
                .any(|k| !RESTRICTED_VOLUMES.contains(&k.as_str()))
            {
                let detail = format!("volume {name} is of type {kinds:?}");
                self.pod("restrictedVolumes", detail);
            }
        }
        // Privilege escalation: explicitly false.
        self.each(|v, name, _, ctx| {
            if ctx["allowPrivilegeEscalation"].as_bool() != Some(false) {
                v.container(
                    "allowPrivilegeEscalation",
                    name,
                    "allowPrivilegeEscalation is not false",
                );
            }
        });
        // Running as non-root: true on the pod or on every container, false nowhere.
        if !user_namespace {
            let pod_non_root = &pod_ctx["runAsNonRoot"];
            if pod_non_root.as_bool() == Some(false) {
                self.pod("runAsNonRoot", "runAsNonRoot is false");
            }
            let pod_true = is_true(pod_non_root);
            self.each(|v, name, _, ctx| match ctx["runAsNonRoot"].as_bool() {
                Some(false) => v.container("runAsNonRoot", name, "runAsNonRoot is false"),
                None if !pod_true => v.container(
                    "runAsNonRoot",
                    name,
                    "neither the pod nor the container sets runAsNonRoot: true",
                ),
                _ => {}
            });
            // Running as a non-root user.
            if pod_ctx["runAsUser"].as_i64() == Some(0) {
                self.pod("runAsUser", "runAsUser is 0");
            }
            self.each(|v, name, _, ctx| {
                if ctx["runAsUser"].as_i64() == Some(0) {
                    v.container("runAsUser", name, "runAsUser is 0");
                }
            });
        }
        // Seccomp: RuntimeDefault or Localhost, on the pod or on every container.
        let seccomp_ok = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
        let pod_seccomp = pod_ctx["seccompProfile"]["type"].as_str();
        if pod_seccomp.is_some_and(|t| !seccomp_ok(t)) {
            self.pod(
                "seccompProfile_restricted",
                format!("seccompProfile.type {pod_seccomp:?}"),
            );
        }
        let pod_set = pod_seccomp.is_some_and(seccomp_ok);
        self.each(|v, name, _, ctx| match ctx["seccompProfile"]["type"].as_str() {
            Some(t) if !seccomp_ok(t) => {
                v.container("seccompProfile_restricted", name, format!("seccompProfile.type {t}"));
            }
            None if !pod_set => v.container(
                "seccompProfile_restricted",
                name,
                "neither the pod nor the container sets a RuntimeDefault or Localhost seccompProfile",
            ),
            _ => {}
        });
        // Capabilities: drop ALL, add NET_BIND_SERVICE at most.
        self.each(|v, name, _, ctx| {
            let caps = &ctx["capabilities"];
            let drops_all = caps["drop"]
                .as_array()
                .is_some_and(|d| d.iter().any(|c| c == "ALL"));
            if !drops_all {
                v.container(
                    "capabilities_restricted",
                    name,
                    "capabilities.drop lacks ALL",
                );
            }
            for cap in caps["add"].as_array().into_iter().flatten() {
                if cap != "NET_BIND_SERVICE" {
                    v.container("capabilities_restricted", name, format!("adds {cap}"));
                }
            }
        });
    }
}
