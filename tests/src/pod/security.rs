//! A container's `securityContext` as the kubelet and runc apply it in the image mode,
//! with the pod's `securityContext` inherited where the container sets nothing ("the
//! settings made at the Container level override the settings made at the Pod level",
//! <https://kubernetes.io/docs/tasks/configure-pod-container/security-context/>). Pure.
//!
//! - user: `runAsUser`, else the image's `User` (a name looked up in the image's
//!   `/etc/passwd`, as the container runtime does); group: `runAsGroup`, else the image's
//!   group, else the user's primary group in the image's `/etc/passwd`, else 0.
//!   `supplementalGroups` and `fsGroup` are supplementary groups.
//! - `runAsNonRoot`: refused, with the kubelet's messages, when the user is 0 or when the
//!   image's user is a name and no `runAsUser` is set (the kubelet cannot verify a name);
//!   the container then never starts (`CreateContainerConfigError`).
//! - capabilities: the container runtime's default set, `drop` then `add` (`ALL` in either);
//!   `privileged` gives every capability. `allowPrivilegeEscalation: false` is runc's
//!   `noNewPrivileges`. `readOnlyRootFilesystem` is a read-only root.
//! - `seccompProfile`: recorded, not applied (runc gets no filter). containerd's
//!   RuntimeDefault profile blocks about fifty system calls (kexec, module loading, `mount`
//!   and `unshare` without CAP_SYS_ADMIN, ...); without CAP_SYS_ADMIN most of them fail
//!   anyway, so no test outcome here depends on it. `Localhost` profiles are refused.

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};

use super::image::Image;

/// containerd's default capabilities (the Docker set), without the `CAP_` prefix.
pub(crate) const DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux 6.x knows (`privileged`, `add: [ALL]`).
pub(crate) const ALL_CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// What runc is given for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Security {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Capability names with the `CAP_` prefix, for the bounding, effective and permitted
    /// sets.
    pub capabilities: Vec<String>,
    pub privileged: bool,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    /// `seccompProfile.type`, recorded only.
    pub seccomp: Option<String>,
}

/// Why a container cannot be created (the kubelet's `CreateContainerConfigError`).
pub(crate) type ConfigError = String;

/// The security of container `c` of `pod` from `image`.
pub(crate) fn resolve(pod: &Pod, c: &Container, image: &Image) -> Result<Security, ConfigError> {
    let none_pod = PodSecurityContext::default();
    let none_c = SecurityContext::default();
    let ps = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .unwrap_or(&none_pod);
    let cs = c.security_context.as_ref().unwrap_or(&none_c);
    let pod_name = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    );
    let id = |v: i64, what: &str| -> Result<u32, ConfigError> {
        u32::try_from(v).map_err(|_| format!("{what} {v} is not a valid id"))
    };
    let run_as_user = cs.run_as_user.or(ps.run_as_user);
    let run_as_group = cs.run_as_group.or(ps.run_as_group);
    let (image_user, image_group) = match image.user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image.user.as_str(), None),
    };
    let numeric_image_user: Option<u32> = if image_user.is_empty() {
        Some(0)
    } else {
        image_user.parse().ok()
    };
    let non_root = cs.run_as_non_root.or(ps.run_as_non_root) == Some(true);
    // The kubelet's checks (pkg/kubelet/kuberuntime/security_context_others.go).
    if non_root {
        if run_as_user == Some(0) {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {pod_name:?}, container: {})",
                c.name
            ));
        }
        if run_as_user.is_none() {
            match numeric_image_user {
                None => {
                    return Err(format!(
                        "container has runAsNonRoot and image has non-numeric user ({image_user}), cannot verify user is non-root (pod: {pod_name:?}, container: {})",
                        c.name
                    ))
                }
                Some(0) => {
                    return Err(format!(
                        "container has runAsNonRoot and image will run as root (pod: {pod_name:?}, container: {})",
                        c.name
                    ))
                }
                Some(_) => {}
            }
        }
    }
    let (uid, from_image) = match run_as_user {
        Some(u) => (id(u, "runAsUser")?, false),
        None => match numeric_image_user {
            Some(u) => (u, true),
            None => (
                image
                    .passwd
                    .iter()
                    .find(|a| a.name == image_user)
                    .map(|a| a.id)
                    .ok_or_else(|| {
                        format!(
                            "unable to find user {image_user}: no matching entries in passwd file"
                        )
                    })?,
                true,
            ),
        },
    };
    let gid = match run_as_group {
        Some(g) => id(g, "runAsGroup")?,
        None => match image_group.filter(|_| from_image) {
            Some(g) => match g.parse() {
                Ok(g) => g,
                Err(_) => image
                    .groups
                    .iter()
                    .find(|a| a.name == g)
                    .map(|a| a.id)
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?,
            },
            None => image
                .passwd
                .iter()
                .find(|a| a.id == uid)
                .map_or(0, |a| a.gid),
        },
    };
    let mut additional_gids = Vec::new();
    for g in ps.supplemental_groups.iter().flatten().chain(&ps.fs_group) {
        let g = id(*g, "supplementalGroups/fsGroup")?;
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    let privileged = cs.privileged == Some(true);
    let mut caps: Vec<String> = if privileged {
        ALL_CAPS.iter().map(|s| s.to_string()).collect()
    } else {
        let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
        let norm = |s: &String| s.trim_start_matches("CAP_").to_uppercase();
        let drop: Vec<String> = cs
            .capabilities
            .iter()
            .flat_map(|c| c.drop.iter().flatten())
            .map(norm)
            .collect();
        if drop.iter().any(|d| d == "ALL") {
            caps.clear();
        }
        caps.retain(|c| !drop.contains(c));
        for a in cs
            .capabilities
            .iter()
            .flat_map(|c| c.add.iter().flatten())
            .map(norm)
        {
            if a == "ALL" {
                caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
            } else if !caps.contains(&a) {
                caps.push(a);
            }
        }
        caps
    };
    for c in &mut caps {
        *c = format!("CAP_{c}");
    }
    let seccomp = cs
        .seccomp_profile
        .as_ref()
        .or(ps.seccomp_profile.as_ref())
        .map(|p| p.type_.clone());
    if seccomp.as_deref() == Some("Localhost") {
        return Err("seccompProfile Localhost is not supported by the pod runner".into());
    }
    Ok(Security {
        uid,
        gid,
        additional_gids,
        capabilities: caps,
        privileged,
        read_only_root: cs.read_only_root_filesystem == Some(true),
        // The API server's default: allowPrivilegeEscalation is true unless set false.
        no_new_privileges: cs.allow_privilege_escalation == Some(false) && !privileged,
        seccomp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::image::Account;

    fn image(user: &str) -> Image {
        Image {
            rootfs: "/nonexistent".into(),
            entrypoint: vec![],
            cmd: vec![],
            env: vec![],
            user: user.into(),
            working_dir: String::new(),
            passwd: vec![Account {
                name: "postgres".into(),
                id: 999,
                gid: 998,
            }],
            groups: vec![],
        }
    }

    fn pod_and(pod_sc: serde_json::Value, c_sc: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"securityContext": pod_sc, "containers": [
                {"name": "c", "securityContext": c_sc}]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn run_as_non_root() {
        let (pod, c) = pod_and(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({}),
        );
        let e = resolve(&pod, &c, &image("")).unwrap_err();
        assert!(
            e.starts_with("container has runAsNonRoot and image will run as root"),
            "{e}"
        );
        let e = resolve(&pod, &c, &image("postgres")).unwrap_err();
        assert!(e.contains("non-numeric user (postgres)"), "{e}");
        assert_eq!(resolve(&pod, &c, &image("1000")).unwrap().uid, 1000);
        let (pod, c) = pod_and(
            serde_json::json!({"runAsNonRoot": true, "runAsUser": 7}),
            serde_json::json!({"runAsUser": 0}),
        );
        assert!(resolve(&pod, &c, &image("1000"))
            .unwrap_err()
            .contains("breaks non-root policy"));
    }

    #[test]
    fn users_groups_and_capabilities() {
        let (pod, c) = pod_and(
            serde_json::json!({"runAsUser": 5, "fsGroup": 2000}),
            serde_json::json!({"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true}),
        );
        let s = resolve(&pod, &c, &image("postgres")).unwrap();
        assert_eq!(
            (s.uid, s.gid, s.additional_gids.clone()),
            (5, 0, vec![2000])
        );
        assert_eq!(s.capabilities, ["CAP_NET_ADMIN"]);
        assert!(s.no_new_privileges && s.read_only_root);
        let (pod, c) = pod_and(serde_json::json!({}), serde_json::json!({}));
        let s = resolve(&pod, &c, &image("postgres")).unwrap();
        assert_eq!((s.uid, s.gid), (999, 998));
        assert_eq!(s.capabilities.len(), DEFAULT_CAPS.len());
        let (pod, c) = pod_and(
            serde_json::json!({}),
            serde_json::json!({"privileged": true}),
        );
        assert_eq!(
            resolve(&pod, &c, &image("")).unwrap().capabilities.len(),
            ALL_CAPS.len()
        );
    }
}
