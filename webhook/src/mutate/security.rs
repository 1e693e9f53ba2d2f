//! The `securityContext` of the injected containers, and what a mounted input asks of the pod
//! and its namespace.
//!
//! Without a FUSE mount, every injected container meets the Pod Security Standards'
//! `restricted` level by its own context, whatever the pod sets: non-root, no privilege
//! escalation, every capability dropped, the RuntimeDefault seccomp profile, and a read-only
//! root file system (the agent writes only to its volumes and its termination log). Its user
//! is the application's when the pod or the application containers name one (`runAsUser`,
//! `runAsGroup`), else 65532, the agent image's: what the agent and the application share in
//! the emptyDirs then has one owner. The agent writes files 0644 and directories 0755, which
//! only their owner may change (an input updated in place), and it reads the application's
//! outputs, which the application may have made private to its user.
//!
//! In a pod with databases, the agent's user must be one the agent image with PostgreSQL
//! lists in its `/etc/passwd` (`postgres` 999, `nonroot` 65532): `initdb`, `postgres
//! --single` and `pg_upgrade` look their user up and stop without it ("could not look up
//! effective user ID 1000: user does not exist"), so a new cluster, a crash recovery or a
//! migration would fail. The application's user is kept when it is one of those, else the
//! agent runs as 65532 in the application's group; it can then still read what the
//! application writes with the usual modes, but the application cannot update downloaded
//! files in place.
//!
//! A mounted input needs a privileged agent (CAP_SYS_ADMIN and `/dev/fuse` to mount, and
//! Kubernetes allows `Bidirectional` mount propagation to privileged containers only), running
//! as root: its context says so explicitly, overriding the pod's `runAsNonRoot` and
//! `runAsUser`. Denied, with what to change: such a pod in a namespace whose Pod Security
//! `enforce` level refuses privileged containers (baseline, restricted), and a pod with
//! `hostUsers: false`, whose containers' root is not the node's.

use std::fmt;

use datamon_plan::{InputMode, Plan};
use serde_json::{json, Value};

use super::annotations::{Problem, INPUT};

/// The namespace label Pod Security Admission enforces.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// The user and group of the agent image (and of the injected containers when the
/// application names none).
pub(crate) const AGENT_ID: i64 = 65532;

/// A Pod Security Standards level, as a namespace's `enforce` label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodSecurityLevel {
    /// No restriction.
    Privileged,
    /// Prevents known privilege escalations: no privileged container, among others.
    Baseline,
    /// Baseline, and non-root, all capabilities dropped, RuntimeDefault seccomp.
    Restricted,
}

impl PodSecurityLevel {
    /// The level a label value names. Pod Security Admission evaluates a value that names
    /// no level as `restricted`, and so does this.
    pub fn from_label(value: &str) -> Self {
        match value {
            "privileged" => Self::Privileged,
            "baseline" => Self::Baseline,
            _ => Self::Restricted,
        }
    }

    fn refuses_privileged(self) -> bool {
        self != Self::Privileged
    }
}

impl fmt::Display for PodSecurityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        })
    }
}

/// Who the unprivileged injected containers run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    uid: i64,
    gid: i64,
}

/// The application's user and group where the pod or all the application containers
/// name the same non-root one, else the agent image's.
pub(crate) fn identity(pod: &Value, apps: &[&Value]) -> Identity {
    let common = |key: &str| -> Option<i64> {
        let pod_level = pod["spec"]["securityContext"][key].as_i64();
        let mut ids = apps
            .iter()
            .map(|c| c["securityContext"][key].as_i64().or(pod_level));
        let first = ids.next().flatten()?;
        ids.all(|id| id == Some(first))
            .then_some(first)
            .filter(|id| *id > 0)
    };
    Identity {
        uid: common("runAsUser").unwrap_or(AGENT_ID),
        gid: common("runAsGroup").unwrap_or(AGENT_ID),
    }
}

/// The users of the agent image with PostgreSQL (`postgres`, `nonroot`).
pub(crate) const POSTGRES_IMAGE_USERS: [i64; 2] = [999, AGENT_ID];

/// `id`, with a user the agent image with PostgreSQL knows: the same when it is one, else
/// [`AGENT_ID`] (the group is kept).
pub(crate) fn known_to_postgres(id: Identity) -> Identity {
    if POSTGRES_IMAGE_USERS.contains(&id.uid) {
        id
    } else {
        Identity {
            uid: AGENT_ID,
            ..id
        }
    }
}

/// The context of an unprivileged injected container: the `restricted` level on its own.
pub(crate) fn restricted(id: Identity) -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsGroup": id.gid,
        "runAsNonRoot": true,
        "runAsUser": id.uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// The context of an agent that serves a FUSE mount: privileged, as root, whatever the pod
/// sets (seccomp and AppArmor do not confine a privileged container).
pub(crate) fn fuse_agent() -> Value {
    json!({
        "privileged": true,
        "readOnlyRootFilesystem": true,
        "runAsGroup": 0,
        "runAsNonRoot": false,
        "runAsUser": 0,
    })
}

/// Why the mounted inputs of `plan` cannot be served in `pod`, in a namespace that
/// enforces `enforce`: one problem per mounted input and cause.
pub(crate) fn mount_problems(
    pod: &Value,
    plan: &Plan,
    enforce: Option<PodSecurityLevel>,
) -> Vec<Problem> {
    const NEEDS: &str = "a mounted input needs a privileged agent running as root (FUSE: the mount needs CAP_SYS_ADMIN and /dev/fuse, and its Bidirectional propagation to the application is for privileged containers only)";
    let mut problems = Vec::new();
    for input in plan.inputs.iter().filter(|i| i.mode == InputMode::Mount) {
        let annotation = format!("{INPUT}{}", input.name);
        if let Some(level) = enforce.filter(|l| l.refuses_privileged()) {
            problems.push(Problem::new(
                annotation.clone(),
                format!("{NEEDS}, and the namespace enforces the Pod Security level `{level}` ({ENFORCE_LABEL}), which refuses privileged containers: use `mode: download` for this input, or label the namespace {ENFORCE_LABEL}=privileged"),
            ));
        }
        if pod["spec"]["hostUsers"] == json!(false) {
            problems.push(Problem::new(
                annotation,
                format!("{NEEDS}, and the pod sets `hostUsers: false`, which runs its containers in a user namespace whose root is not the node's: use `mode: download` for this input, or remove `hostUsers: false`"),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(pod_ctx: Value) -> Value {
        json!({"spec": {"securityContext": pod_ctx, "containers": []}})
    }

    #[test]
    fn the_application_user_is_shared_when_the_pod_or_every_application_names_it() {
        let none = json!({"name": "a"});
        let as_1000 = json!({"name": "a", "securityContext": {"runAsUser": 1000}});
        let as_2000 =
            json!({"name": "b", "securityContext": {"runAsUser": 2000, "runAsGroup": 3000}});
        let default = Identity {
            uid: AGENT_ID,
            gid: AGENT_ID,
        };
        assert_eq!(identity(&pod(json!(null)), &[&none]), default);
        assert_eq!(
            identity(&pod(json!({"runAsUser": 1000})), &[&none]),
            Identity {
                uid: 1000,
                gid: AGENT_ID
            }
        );
        // The container's own setting wins over the pod's.
        assert_eq!(
            identity(&pod(json!({"runAsUser": 1000})), &[&as_2000]),
            Identity {
                uid: 2000,
                gid: 3000
            }
        );
        // Applications that disagree, or one that names nobody: the agent's own user.
        assert_eq!(identity(&pod(json!(null)), &[&as_1000, &as_2000]), default);
        assert_eq!(identity(&pod(json!(null)), &[&as_1000, &none]), default);
        // Root is never shared.
        assert_eq!(
            identity(&pod(json!({"runAsUser": 0, "runAsGroup": 0})), &[&none]),
            default
        );
    }

    #[test]
    fn a_database_agent_runs_as_a_user_of_the_postgres_image() {
        let id = |uid, gid| Identity { uid, gid };
        assert_eq!(known_to_postgres(id(1000, 3000)), id(AGENT_ID, 3000));
        assert_eq!(known_to_postgres(id(999, 999)), id(999, 999));
        assert_eq!(known_to_postgres(id(AGENT_ID, 5)), id(AGENT_ID, 5));
    }

    #[test]
    fn label_values_are_read_as_pod_security_admission_reads_them() {
        assert_eq!(
            PodSecurityLevel::from_label("privileged"),
            PodSecurityLevel::Privileged
        );
        assert_eq!(
            PodSecurityLevel::from_label("baseline"),
            PodSecurityLevel::Baseline
        );
        assert_eq!(
            PodSecurityLevel::from_label("Baseline"),
            PodSecurityLevel::Restricted
        );
        assert!(!PodSecurityLevel::Privileged.refuses_privileged());
        assert!(PodSecurityLevel::Baseline.refuses_privileged());
    }
}
