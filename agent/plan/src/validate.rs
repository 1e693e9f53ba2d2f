//! Checks that a parsed [`Plan`] can be carried out, before any work starts. Each error
//! names the field (`inputs[1].path`), says what is wrong and how to fix it; all problems
//! are reported at once.

use std::collections::HashSet;
use std::path::{Component, Path};
use std::time::Duration;

use crate::schema::{InputMode, Plan, APP, DEFAULT_SIDECAR, PROTOCOL_VERSION};

/// One problem in a plan.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plan field {field}: {problem}")]
pub struct Problem {
    /// The field at fault, e.g. `outputs[0].repo`.
    pub field: String,
    /// What is wrong, and the fix.
    pub problem: String,
}

/// A plan that cannot be carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid data plan: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct PlanError {
    /// Every problem found.
    pub problems: Vec<Problem>,
}

/// Whether `s` is a valid participant, input or output name: 1 to 63 lowercase letters,
/// digits and `-`, starting with a letter (it becomes a file and container name part).
pub fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Whether `s` can be a datamon repository name (letters, digits, `-`, `_`).
pub fn is_repo_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Whether `p` is absolute with no `.`/`..` components.
fn is_clean_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Whether one of `a` and `b` contains the other.
fn nested(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Checks what inputs and outputs share: a valid name used once, a repo name, a clean
/// absolute path. `f` names a field of the item.
fn check_item(
    f: &impl Fn(&str) -> String,
    (name, repo, path): (&str, &str, &Path),
    names: &mut HashSet<String>,
    bad: &mut impl FnMut(String, String),
) {
    if !is_name(name) {
        bad(f("name"), format!("{name:?} is not a valid name: use 1 to 63 lowercase letters, digits and `-`, starting with a letter"));
    } else if !names.insert(name.to_string()) {
        bad(
            f("name"),
            format!("{name:?} is used twice: give each input and output its own name"),
        );
    }
    if !is_repo_name(repo) {
        bad(
            f("repo"),
            format!("{repo:?} is not a repo name: use letters, digits, `-` and `_`"),
        );
    }
    if !is_clean_absolute(path) {
        bad(
            f("path"),
            format!(
                "{} must be an absolute path without `.` or `..`",
                path.display()
            ),
        );
    }
}

impl Plan {
    /// Checks the whole plan.
    pub fn validate(&self) -> Result<(), PlanError> {
        let mut problems = Vec::new();
        let mut bad = |field: String, problem: String| problems.push(Problem { field, problem });

        if self.version != PROTOCOL_VERSION {
            bad(
                "version".into(),
                format!(
                    "version {} is not understood; this agent speaks version {PROTOCOL_VERSION}: use a matching agent image",
                    self.version
                ),
            );
        }
        for (field, p) in [
            ("coordination", &self.coordination),
            ("termination_message", &self.termination_message),
        ] {
            if !is_clean_absolute(p) {
                bad(
                    field.into(),
                    format!(
                        "{} must be an absolute path without `.` or `..`",
                        p.display()
                    ),
                );
            }
        }

        let mut names = HashSet::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let f = |k: &str| format!("inputs[{i}].{k}");
            check_item(
                &f,
                (&input.name, &input.repo, &input.path),
                &mut names,
                &mut bad,
            );
            if input.bundle.is_some() && input.label.is_some() {
                bad(f("bundle"), "both `bundle` and `label` are set: keep one (or neither, for the latest bundle)".into());
            }
            if input.mode == InputMode::Mount && input.name_filter.is_some() {
                bad(
                    f("name_filter"),
                    "a mount shows the whole bundle: remove `name_filter` or use `mode: download`"
                        .into(),
                );
            }
        }
        for (i, output) in self.outputs.iter().enumerate() {
            let f = |k: &str| format!("outputs[{i}].{k}");
            check_item(
                &f,
                (&output.name, &output.repo, &output.path),
                &mut names,
                &mut bad,
            );
            if output.message.trim().is_empty() {
                bad(
                    f("message"),
                    "the commit message is empty: say what the bundle holds".into(),
                );
            }
            for (j, other) in self.outputs.iter().enumerate().skip(i + 1) {
                if nested(&output.path, &other.path) {
                    bad(
                        f("path"),
                        format!(
                            "{} overlaps outputs[{j}].path {}: give each output its own directory",
                            output.path.display(),
                            other.path.display()
                        ),
                    );
                }
            }
        }
        // Inputs may not overlap each other; a download may be updated in place and uploaded
        // (read-update), a read-only mount may not.
        for (i, input) in self.inputs.iter().enumerate() {
            for (j, other) in self.inputs.iter().enumerate().skip(i + 1) {
                if nested(&input.path, &other.path) {
                    bad(
                        format!("inputs[{i}].path"),
                        format!(
                            "{} overlaps inputs[{j}].path {}: give each input its own directory",
                            input.path.display(),
                            other.path.display()
                        ),
                    );
                }
            }
            for (j, output) in self.outputs.iter().enumerate() {
                let overlap = nested(&input.path, &output.path);
                let same = input.path == output.path && input.mode == InputMode::Download;
                if overlap && !same {
                    bad(format!("inputs[{i}].path"), format!("{} overlaps outputs[{j}].path {}: use separate directories, or the same directory with `mode: download` to update the input in place", input.path.display(), output.path.display()));
                }
            }
        }

        self.validate_sidecars(&mut bad);
        let mut apps = HashSet::new();
        for (i, a) in self.apps.iter().enumerate() {
            if !is_name(a)
                || self.sidecars.iter().any(|s| &s.name == a)
                || a == DEFAULT_SIDECAR && self.sidecars.is_empty()
            {
                bad(format!("apps[{i}]"), format!("{a:?} is not a valid application participant: use 1 to 63 lowercase letters, digits and `-`, starting with a letter, not a sidecar's name"));
            } else if !apps.insert(a.clone()) {
                bad(
                    format!("apps[{i}]"),
                    format!("{a:?} is listed twice: give each wrapped container its own name"),
                );
            }
        }

        let d = &self.deadlines;
        for (field, value) in [
            ("ready", Some(d.ready)),
            ("start", Some(d.start)),
            ("app", d.app),
            ("upload", d.upload.into()),
            ("grace", Some(d.grace)),
        ] {
            if value == Some(Duration::ZERO) {
                bad(
                    format!("deadlines.{field}"),
                    "a zero deadline can never be met: give a duration such as `30s` or `10m`"
                        .into(),
                );
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(PlanError { problems })
        }
    }

    fn validate_sidecars(&self, bad: &mut impl FnMut(String, String)) {
        let mut owner_of_input = vec![0usize; self.inputs.len()];
        let mut owner_of_output = vec![0usize; self.outputs.len()];
        let mut names = HashSet::new();
        for (i, s) in self.sidecars.iter().enumerate() {
            let f = |k: &str| format!("sidecars[{i}].{k}");
            if !is_name(&s.name) || s.name == APP {
                bad(f("name"), format!("{:?} is not a valid sidecar name: use 1 to 63 lowercase letters, digits and `-`, starting with a letter, and not `{APP}`", s.name));
            } else if !names.insert(s.name.clone()) {
                bad(
                    f("name"),
                    format!("{:?} is used twice: give each sidecar its own name", s.name),
                );
            }
            for n in &s.inputs {
                match self.inputs.iter().position(|x| &x.name == n) {
                    Some(k) => owner_of_input[k] += 1,
                    None => bad(
                        f("inputs"),
                        format!("no input is named {n:?}: name one of the plan's inputs"),
                    ),
                }
            }
            for n in &s.outputs {
                match self.outputs.iter().position(|x| &x.name == n) {
                    Some(k) => owner_of_output[k] += 1,
                    None => bad(
                        f("outputs"),
                        format!("no output is named {n:?}: name one of the plan's outputs"),
                    ),
                }
            }
        }
        if self.sidecars.is_empty() {
            return;
        }
        for (k, n) in owner_of_input.iter().enumerate() {
            if *n != 1 {
                bad(format!("inputs[{k}]"), format!("{:?} is provided by {n} sidecars: list it in exactly one sidecar's `inputs`", self.inputs[k].name));
            }
        }
        for (k, n) in owner_of_output.iter().enumerate() {
            if *n != 1 {
                bad(format!("outputs[{k}]"), format!("{:?} is uploaded by {n} sidecars: list it in exactly one sidecar's `outputs`", self.outputs[k].name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::*;

    fn parse(yaml: &str) -> Plan {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../../docs/plan.example.yaml");
        let plan = parse(text);
        plan.validate().unwrap();
        assert_eq!(plan.inputs.len(), 2);
        assert_eq!(plan.inputs[1].mode, InputMode::Mount);
        assert_eq!(plan.outputs[0].upload, UploadWhen::OnSuccess);
        assert_eq!(plan.deadlines.grace, Duration::from_secs(10));
        // JSON round trip: the webhook renders JSON.
        let json = serde_json::to_string(&plan).unwrap();
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn minimal_plan_gets_defaults_and_one_sidecar() {
        let plan = parse("inputs:\n  - {name: raw, repo: r, path: /data/raw}\noutputs:\n  - {name: out, repo: r2, path: /data/out}\n");
        plan.validate().unwrap();
        let s = plan.effective_sidecars();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, DEFAULT_SIDECAR);
        assert_eq!(s[0].inputs, vec!["raw"]);
        assert_eq!(s[0].outputs, vec!["out"]);
        assert_eq!(plan.deadlines.ready, Duration::from_secs(3600));
        assert_eq!(plan.coordination, Path::new("/var/run/datamon"));
        assert!(parse("{}").effective_sidecars().is_empty());
    }

    #[test]
    fn durations_are_human() {
        let plan = parse("deadlines: {ready: 1m30s, app: 2h, grace: 500ms}\n");
        assert_eq!(plan.deadlines.ready, Duration::from_secs(90));
        assert_eq!(plan.deadlines.app, Some(Duration::from_secs(7200)));
        assert_eq!(plan.deadlines.grace, Duration::from_millis(500));
        assert!(serde_norway::from_str::<Plan>("deadlines: {ready: soon}\n").is_err());
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e =
            serde_norway::from_str::<Plan>("inputs:\n  - {name: a, repo: r, path: /a, lable: x}\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("lable"), "{e}");
        let e = serde_norway::from_str::<Plan>("databases: [{name: d, prot: 5433}]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("prot"), "{e}");
    }

    fn fields(plan: &Plan) -> Vec<String> {
        plan.validate()
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    #[test]
    fn every_problem_is_named() {
        let plan = parse(
            r#"
version: 2
coordination: relative/dir
inputs:
  - {name: Raw, repo: "bad repo", path: /data/x, bundle: b, label: l}
  - {name: dup, repo: r, path: /data/x/y}
  - {name: m, repo: r, path: /data/m, mode: mount, name_filter: "a"}
outputs:
  - {name: dup, repo: r, path: data/out, message: " "}
  - {name: o2, repo: r, path: /data/m/sub}
deadlines: {grace: 0s}
"#,
        );
        let f = fields(&plan);
        for want in [
            "version",
            "coordination",
            "inputs[0].name",
            "inputs[0].repo",
            "inputs[0].bundle",
            "inputs[0].path",
            "inputs[2].name_filter",
            "outputs[0].name",
            "outputs[0].path",
            "outputs[0].message",
            "inputs[2].path",
            "deadlines.grace",
        ] {
            assert!(f.iter().any(|x| x == want), "{want} missing from {f:?}");
        }
        let msg = plan.validate().unwrap_err().to_string();
        assert!(msg.contains("overlaps"), "{msg}");
    }

    #[test]
    fn read_update_in_place_is_allowed_but_not_on_a_mount() {
        let ok = parse("inputs: [{name: db, repo: r, path: /data/db}]\noutputs: [{name: out, repo: r, path: /data/db}]\n");
        ok.validate().unwrap();
        let mount = parse("inputs: [{name: db, repo: r, path: /data/db, mode: mount}]\noutputs: [{name: out, repo: r, path: /data/db}]\n");
        assert_eq!(fields(&mount), vec!["inputs[0].path"]);
    }

    #[test]
    fn sidecars_must_share_the_work_exactly() {
        let plan = parse(
            r#"
inputs: [{name: a, repo: r, path: /a}, {name: b, repo: r, path: /b}]
outputs: [{name: o, repo: r, path: /o}]
sidecars:
  - {name: app, inputs: [a]}
  - {name: s2, inputs: [a, nope], outputs: []}
"#,
        );
        let f = fields(&plan);
        assert!(f.contains(&"sidecars[0].name".to_string()), "{f:?}");
        assert!(f.contains(&"sidecars[1].inputs".to_string()), "{f:?}");
        assert!(f.contains(&"inputs[0]".to_string()), "{f:?}"); // twice
        assert!(f.contains(&"inputs[1]".to_string()), "{f:?}"); // never
        assert!(f.contains(&"outputs[0]".to_string()), "{f:?}"); // never
    }

    #[test]
    fn several_apps_need_distinct_valid_names() {
        let plan = parse("apps: [app-a, app-b]\n");
        plan.validate().unwrap();
        assert_eq!(plan.effective_apps(), vec!["app-a", "app-b"]);
        assert_eq!(parse("{}").effective_apps(), vec![APP]);
        let bad = parse("apps: [x, x, Bad, datamon]\noutputs: [{name: o, repo: r, path: /o}]\n");
        assert_eq!(fields(&bad), vec!["apps[1]", "apps[2]", "apps[3]"]);
    }

    #[test]
    fn names() {
        assert!(is_name("raw-2"));
        for bad in ["", "Raw", "2raw", "a_b", "a/b", &"a".repeat(64)] {
            assert!(!is_name(bad), "{bad}");
        }
        assert!(is_repo_name("my_repo-1"));
        assert!(!is_repo_name("a b"));
    }
}
