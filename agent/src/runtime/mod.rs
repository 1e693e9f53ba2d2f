//! The sidecar runtime: the data plan of a pod carried out by agent processes that
//! cooperate with the application wrapper through files in a shared directory
//! (`docs/protocol.md`).
//!
//! - [`state`]: the state files' content and what others conclude from it (pure);
//! - [`board`]: the coordination directory: atomic state files, liveness locks, inotify;
//! - [`sidecar`]: `datamon-agent sidecar`, the inputs and outputs of one participant;
//! - [`wrapper`]: `datamon-agent wrap`, which runs the application between the two;
//! - [`probe`]: `datamon-agent probe` and `datamon-agent install`;
//! - [`status`]: `datamon-agent status`, every participant's state for people;
//! - [`outcome`]: exit codes and termination messages.

pub mod board;
pub mod outcome;
pub mod probe;
pub mod reaper;
pub mod sidecar;
pub mod state;
pub mod status;
pub mod wrapper;

use std::path::{Path, PathBuf};

use datamon_plan::Plan;
use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;

use crate::config::Settings;

/// Environment variable holding the plan itself (YAML or JSON).
pub const PLAN_ENV: &str = "DATAMON_PLAN";
/// Environment variable naming the plan file.
pub const PLAN_FILE_ENV: &str = "DATAMON_PLAN_FILE";

/// A plan that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PlanLoadError {
    /// No source given.
    #[error("no data plan: pass --plan FILE, or set {PLAN_FILE_ENV} or {PLAN_ENV} (the plan as YAML or JSON)")]
    Missing,
    /// The plan file does not exist.
    #[error("plan file {0} does not exist: fix --plan / {PLAN_FILE_ENV}")]
    MissingFile(PathBuf),
    /// The sources do not make a plan.
    #[error("cannot read the data plan: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// The plan is not valid.
    #[error(transparent)]
    Invalid(#[from] datamon_plan::PlanError),
}

/// Loads the plan: the file (`--plan` / `DATAMON_PLAN_FILE`) or `DATAMON_PLAN`, then
/// `DATAMON_PLAN__<FIELD>` overrides (`DATAMON_PLAN__DEADLINES__READY=5m`), then checks it.
pub fn load_plan(file: Option<&Path>) -> Result<Plan, PlanLoadError> {
    let mut fig = Figment::from(Serialized::defaults(Plan::default()));
    if let Some(f) = file {
        if !f.is_file() {
            return Err(PlanLoadError::MissingFile(f.to_path_buf()));
        }
        fig = fig.merge(Yaml::file(f));
    } else if let Ok(text) = std::env::var(PLAN_ENV) {
        fig = fig.merge(Yaml::string(&text));
    } else {
        return Err(PlanLoadError::Missing);
    }
    let plan: Plan = fig
        .merge(Env::prefixed("DATAMON_PLAN__").split("__"))
        .extract()
        .map_err(Box::new)?;
    plan.validate()?;
    Ok(plan)
}

/// What a participant can still learn from a plan that does not load (a field this agent
/// does not know, from a newer webhook; a typo): read leniently from the raw document, so
/// that it can say `failed` where the others look, instead of exiting unseen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// The coordination directory (the document's, else the default).
    pub coordination: PathBuf,
    /// Where the termination message goes (the document's, else the default).
    pub termination_message: PathBuf,
    /// Whether the document makes this participant a native sidecar.
    pub native: bool,
}

/// The [`Fallback`] for `participant` from the plan's sources (`--plan` file, else
/// `DATAMON_PLAN`); defaults for whatever cannot be read.
pub fn fallback(file: Option<&Path>, participant: &str) -> Fallback {
    let text = match file {
        Some(f) => std::fs::read_to_string(f).ok(),
        None => std::env::var(PLAN_ENV).ok(),
    };
    fallback_from(text.as_deref().unwrap_or(""), participant)
}

/// [`fallback`] from the document's text (pure).
pub fn fallback_from(text: &str, participant: &str) -> Fallback {
    let doc: serde_norway::Value = serde_norway::from_str(text).unwrap_or_default();
    let defaults = Plan::default();
    let path = |key: &str, default: PathBuf| {
        doc.get(key)
            .and_then(|v| v.as_str())
            .filter(|p| p.starts_with('/'))
            .map_or(default, PathBuf::from)
    };
    let native = doc
        .get("sidecars")
        .and_then(|v| v.as_sequence())
        .into_iter()
        .flatten()
        .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(participant))
        .and_then(|s| s.get("lifecycle").and_then(|l| l.as_str()))
        == Some("native");
    Fallback {
        coordination: path("coordination", defaults.coordination),
        termination_message: path("termination_message", defaults.termination_message),
        native,
    }
}

/// The agent's settings with the plan's store fields applied.
pub fn settings_for(plan: &Plan, settings: &Settings) -> Settings {
    let mut s = settings.clone();
    if let Some(c) = &plan.store.config {
        s.config = Some(c.clone());
    }
    if let Some(c) = &plan.store.context {
        s.context = c.clone();
    }
    if let Some(e) = &plan.store.s3_endpoint {
        s.s3_endpoint = Some(e.clone());
    }
    if let Some(e) = &plan.store.gcs_endpoint {
        s.gcs_endpoint = Some(e.clone());
    }
    if let Some(a) = plan.store.gcs_anonymous {
        s.gcs_anonymous = a;
    }
    s
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use std::time::Duration;

    #[test]
    fn a_plan_that_does_not_load_still_tells_where_to_say_so() {
        let text = r#"{"coordination": "/run/x", "termination_message": "/dev/t", "unknown": 1,
            "sidecars": [{"name": "datamon", "lifecycle": "native"}, {"name": "b"}]}"#;
        let f = fallback_from(text, "datamon");
        assert_eq!(f.coordination, Path::new("/run/x"));
        assert_eq!(f.termination_message, Path::new("/dev/t"));
        assert!(f.native);
        assert!(!fallback_from(text, "b").native);
        let f = fallback_from("[not: a plan", "datamon");
        assert_eq!(f.coordination, Plan::default().coordination);
        assert!(!f.native);
    }

    #[test]
    fn file_env_and_overrides() {
        Jail::expect_with(|jail| {
            assert!(matches!(load_plan(None), Err(PlanLoadError::Missing)));
            jail.create_file(
                "p.yaml",
                "inputs: [{name: raw, repo: r, path: /data/raw}]\n",
            )?;
            let p = load_plan(Some(Path::new("p.yaml"))).unwrap();
            assert_eq!(p.inputs[0].name, "raw");
            jail.set_env("DATAMON_PLAN__DEADLINES__READY", "5s");
            let p = load_plan(Some(Path::new("p.yaml"))).unwrap();
            assert_eq!(p.deadlines.ready, Duration::from_secs(5));
            jail.set_env(
                PLAN_ENV,
                r#"{"outputs":[{"name":"o","repo":"r","path":"/o"}]}"#,
            );
            let p = load_plan(None).unwrap();
            assert_eq!(p.outputs[0].name, "o");
            jail.set_env(PLAN_ENV, "inputs: [{name: Bad, repo: r, path: x}]");
            let e = load_plan(None).unwrap_err().to_string();
            assert!(
                e.contains("inputs[0].name") && e.contains("inputs[0].path"),
                "{e}"
            );
            assert!(matches!(
                load_plan(Some(Path::new("nope.yaml"))),
                Err(PlanLoadError::MissingFile(_))
            ));
            Ok(())
        });
    }
}
