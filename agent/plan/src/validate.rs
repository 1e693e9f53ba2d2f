//! Checks that a parsed [`Plan`] can be carried out, before any work starts. Each error
//! names the field (`inputs[1].path`), says what is wrong and how to fix it; all problems
//! are reported at once.
//!
//! Databases are checked for what PostgreSQL itself would refuse later, when it is too late
//! to say which field was at fault: role names, setting names, the socket path's length.

use std::collections::HashSet;
use std::path::{Component, Path};
use std::time::Duration;

use crate::schema::{Database, InputMode, Plan, Sidecar, APP, DEFAULT_SIDECAR, PROTOCOL_VERSION};

/// The oldest PostgreSQL major a database may ask for (datamon's own bundles are 12).
pub const OLDEST_MAJOR: u32 = 12;

/// Server settings the agent sets itself: a plan may not set them in `settings`.
pub const AGENT_SETTINGS: [&str; 6] = [
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "hba_file",
    "ident_file",
    "data_directory",
];

/// The longest Unix socket path, in bytes (`sun_path` holds 108 with its NUL; PostgreSQL
/// refuses longer ones when it starts).
pub const MAX_SOCKET_PATH: usize = 106;

/// The longest database directory (`dir`), in bytes: a migration runs its servers with their
/// sockets in `<dir>/m/m??????/` (the agent's scratch directory, `postgres::restore`), which
/// must fit [`MAX_SOCKET_PATH`] with `.s.PGSQL.<port>`.
pub const MAX_DATABASE_DIR: usize = MAX_SOCKET_PATH - "/m/m123456/.s.PGSQL.65535".len();

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

/// Whether `s` is a role name the agent can use unquoted: 1 to 63 lowercase letters, digits
/// and `_`, not starting with a digit, and not `pg_*` (reserved by PostgreSQL).
pub fn is_role_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
        && !s.starts_with("pg_")
}

/// Whether `s` is an environment variable name: letters, digits and `_`, not starting with
/// a digit.
pub fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Whether `s` is a PostgreSQL setting name (`shared_buffers`, `auto_explain.log_min_duration`).
fn is_setting_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'.')
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
        self.validate_databases(&mut names, &mut bad);
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

    /// The databases: each field, then what they share with each other and with the inputs
    /// and outputs (names, ports, directories).
    fn validate_databases(
        &self,
        names: &mut HashSet<String>,
        bad: &mut impl FnMut(String, String),
    ) {
        let mut ports: Vec<(u16, &str)> = Vec::new();
        // (field, directory) of every database directory checked so far.
        let mut dirs: Vec<(String, std::path::PathBuf)> = Vec::new();
        for (i, db) in self.databases.iter().enumerate() {
            let f = |k: &str| format!("databases[{i}].{k}");
            if !is_name(&db.name) {
                bad(f("name"), format!("{:?} is not a valid name: use 1 to 63 lowercase letters, digits and `-`, starting with a letter", db.name));
            } else if !names.insert(db.name.clone()) {
                bad(
                    f("name"),
                    format!(
                        "{:?} is used twice: give each input, output and database its own name",
                        db.name
                    ),
                );
            }
            if db.port == 0 {
                bad(
                    f("port"),
                    "0 is not a port: use 1 to 65535, e.g. 5432".into(),
                );
            } else if let Some((_, other)) = ports.iter().find(|(p, _)| *p == db.port) {
                bad(f("port"), format!("port {} is also the port of database {other:?}: give each database its own port", db.port));
            }
            ports.push((db.port, &db.name));
            self.validate_database_fields(db, &f, bad);

            // Directories: given ones clean and absolute; the effective ones apart from the
            // inputs, the outputs and each other.
            for (key, given) in [("dir", &db.dir), ("socket_dir", &db.socket_dir)] {
                if given.as_deref().is_some_and(|p| !is_clean_absolute(p)) {
                    bad(
                        f(key),
                        format!(
                            "{} must be an absolute path without `.` or `..`",
                            given.as_deref().unwrap_or(Path::new("")).display()
                        ),
                    );
                }
            }
            let socket_dir = db.socket_dir_or_default(&self.coordination);
            for (key, dir) in [("dir", db.dir_or_default()), ("socket_dir", socket_dir)] {
                let others = self
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(j, x)| (format!("inputs[{j}].path"), x.path.clone()))
                    .chain(
                        self.outputs
                            .iter()
                            .enumerate()
                            .map(|(j, x)| (format!("outputs[{j}].path"), x.path.clone())),
                    )
                    .chain(dirs.iter().cloned());
                for (other_field, other) in others {
                    if nested(&dir, &other) {
                        bad(f(key), format!("{} overlaps {other_field} {}: give each database its own directories, apart from the inputs and outputs", dir.display(), other.display()));
                    }
                }
                dirs.push((f(key), dir));
            }
            let dir = db.dir_or_default();
            let len = dir.as_os_str().len();
            if len > MAX_DATABASE_DIR {
                let key = if db.dir.is_some() { "dir" } else { "name" };
                bad(f(key), format!("the database's directory {} is {len} bytes long, more than {MAX_DATABASE_DIR}: a migration's servers put their Unix sockets inside it, which would be too long; use a shorter `dir` or database name", dir.display()));
            }
            let socket = db.socket_path(&self.coordination);
            let len = socket.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                let key = if db.socket_dir.is_some() {
                    "socket_dir"
                } else {
                    "name"
                };
                bad(f(key), format!("the server's socket {} is {len} bytes long, more than a Unix socket may be ({MAX_SOCKET_PATH}): use a shorter `socket_dir`, database name or coordination directory", socket.display()));
            }
        }
    }

    /// The fields of one database that need nothing else of the plan.
    fn validate_database_fields(
        &self,
        db: &Database,
        f: &impl Fn(&str) -> String,
        bad: &mut impl FnMut(String, String),
    ) {
        let repo_problem =
            |repo: &str| format!("{repo:?} is not a repo name: use letters, digits, `-` and `_`");
        if let Some(src) = &db.source {
            if !is_repo_name(&src.repo) {
                bad(f("source.repo"), repo_problem(&src.repo));
            }
            if src.bundle.is_some() && src.label.is_some() {
                bad(f("source.bundle"), "both `bundle` and `label` are set: keep one (or neither, for the latest bundle)".into());
            }
        }
        if let Some(out) = &db.output {
            if !is_repo_name(&out.repo) {
                bad(f("output.repo"), repo_problem(&out.repo));
            }
            if out.message.trim().is_empty() {
                bad(
                    f("output.message"),
                    "the commit message is empty: say what the bundle holds".into(),
                );
            }
        }
        if !is_role_name(&db.owner.role) {
            bad(f("owner.role"), format!("{:?} is not a role name the agent can use: use 1 to 63 lowercase letters, digits and `_`, not starting with a digit nor with `pg_`", db.owner.role));
        }
        if let Some(d) = &db.database {
            let ok = !d.is_empty()
                && d.len() <= 63
                && d.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
            if !ok {
                bad(f("database"), format!("{d:?} is not a database name the agent can use: use 1 to 63 letters, digits, `_` and `-`"));
            }
        }
        if let Some(env) = &db.owner.password_env {
            if !is_env_name(env) {
                bad(f("owner.password_env"), format!("{env:?} is not an environment variable name: use letters, digits and `_`, not starting with a digit"));
            }
        }
        if let Some(major) = db.major.filter(|m| *m < OLDEST_MAJOR) {
            bad(f("major"), format!("PostgreSQL {major} is older than the oldest major the agent runs ({OLDEST_MAJOR}): use {OLDEST_MAJOR} or later, or leave `major` out for the newest installed"));
        }
        for (key, value) in &db.settings {
            if !is_setting_name(key) {
                bad(f("settings"), format!("{key:?} is not a PostgreSQL setting name: use lowercase letters, digits, `_` and `.`, e.g. shared_buffers"));
            } else if AGENT_SETTINGS.contains(&key.as_str()) {
                let hint = if key == "port" {
                    "use the database's `port` field"
                } else {
                    "remove it"
                };
                bad(
                    f("settings"),
                    format!("`{key}` is set by the agent itself: {hint}"),
                );
            }
            if value.contains('\0') {
                bad(
                    f("settings"),
                    format!("the value of `{key}` holds a NUL byte: remove it"),
                );
            }
        }
    }

    /// Every input, output and database is the work of exactly one sidecar, when the plan
    /// names sidecars.
    fn validate_sidecars(&self, bad: &mut impl FnMut(String, String)) {
        // (plural, singular, what a sidecar does with it, the plan's names, each sidecar's).
        type Share<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Vec<&'a str>,
            fn(&Sidecar) -> &[String],
        );
        let kinds: [Share<'_>; 3] = [
            (
                "inputs",
                "input",
                "provided",
                self.inputs.iter().map(|x| x.name.as_str()).collect(),
                |s| &s.inputs,
            ),
            (
                "outputs",
                "output",
                "uploaded",
                self.outputs.iter().map(|x| x.name.as_str()).collect(),
                |s| &s.outputs,
            ),
            (
                "databases",
                "database",
                "run",
                self.databases.iter().map(|x| x.name.as_str()).collect(),
                |s| &s.databases,
            ),
        ];
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
        }
        if self.sidecars.is_empty() {
            return;
        }
        for (plural, singular, verb, plan_names, of) in kinds {
            let mut owners = vec![0usize; plan_names.len()];
            for (i, s) in self.sidecars.iter().enumerate() {
                for n in of(s) {
                    match plan_names.iter().position(|x| x == n) {
                        Some(k) => owners[k] += 1,
                        None => bad(
                            format!("sidecars[{i}].{plural}"),
                            format!(
                                "no {singular} is named {n:?}: name one of the plan's {plural}"
                            ),
                        ),
                    }
                }
            }
            for (k, n) in owners.iter().enumerate() {
                if *n != 1 {
                    bad(format!("{plural}[{k}]"), format!("{:?} is {verb} by {n} sidecars: list it in exactly one sidecar's `{plural}`", plan_names[k]));
                }
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
        assert_eq!(plan.databases[0].name, "warehouse");
        assert_eq!(plan.databases[0].settings.len(), 2);
        assert_eq!(plan.sidecars[1].databases, ["warehouse"]);
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
    fn a_full_database_is_valid_and_gets_its_defaults() {
        let plan = parse(
            r#"
inputs: [{name: raw, repo: r, path: /data/raw}]
databases:
  - name: warehouse
    source: {repo: pg-warehouse, label: good}
    port: 5433
    output: {repo: pg-warehouse, label: good, message: nightly}
    upload: always
    owner: {role: app_rw, password_env: WAREHOUSE_PASSWORD}
    major: 18
    settings: {shared_buffers: 256MB, auto_explain.log_min_duration: "250"}
  - name: scratch
"#,
        );
        plan.validate().unwrap();
        let (w, s) = (&plan.databases[0], &plan.databases[1]);
        assert_eq!(
            w.dir_or_default(),
            Path::new("/var/lib/datamon/postgres/warehouse")
        );
        assert_eq!(
            w.socket_path(&plan.coordination),
            Path::new("/var/run/datamon/postgres/warehouse/.s.PGSQL.5433")
        );
        assert_eq!((s.port, s.owner.role.as_str()), (5432, "postgres"));
        assert!(s.source.is_none() && s.output.is_none());
        assert_eq!(
            plan.effective_sidecars()[0].databases,
            ["warehouse", "scratch"]
        );
    }

    #[test]
    fn every_database_problem_is_named_with_its_fix() {
        let plan = parse(
            r#"
inputs: [{name: raw, repo: r, path: /data/raw}]
outputs: [{name: out, repo: r, path: /data/out}]
databases:
  - name: Bad_Name
    port: 0
    source: {repo: "bad repo", bundle: b, label: l}
    output: {repo: "also bad", message: " "}
    owner: {role: pg_monitor, password_env: 1PASS}
    major: 11
    settings: {port: "5433", Shared-Buffers: 1GB, listen_addresses: "*", work_mem: "a\0b"}
    dir: relative/dir
    socket_dir: /data/out/sock
  - {name: raw, port: 5432}
  - {name: two, port: 5432, dir: /data/raw/pg}
"#,
        );
        let problems = plan.validate().unwrap_err().problems;
        let has = |field: &str, words: &str| {
            problems
                .iter()
                .any(|p| p.field == field && p.problem.contains(words))
        };
        for (field, words) in [
            ("databases[0].name", "not a valid name"),
            ("databases[0].port", "use 1 to 65535"),
            ("databases[0].source.repo", "not a repo name"),
            ("databases[0].source.bundle", "keep one"),
            ("databases[0].output.repo", "not a repo name"),
            ("databases[0].output.message", "empty"),
            (
                "databases[0].owner.role",
                "not starting with a digit nor with `pg_`",
            ),
            (
                "databases[0].owner.password_env",
                "not an environment variable name",
            ),
            ("databases[0].major", "use 12 or later"),
            (
                "databases[0].settings",
                "`port` is set by the agent itself: use the database's `port` field",
            ),
            (
                "databases[0].settings",
                "`listen_addresses` is set by the agent itself",
            ),
            (
                "databases[0].settings",
                "\"Shared-Buffers\" is not a PostgreSQL setting name",
            ),
            ("databases[0].settings", "NUL"),
            ("databases[0].dir", "absolute path"),
            (
                "databases[0].socket_dir",
                "overlaps outputs[0].path /data/out",
            ),
            ("databases[1].name", "used twice"),
            (
                "databases[2].port",
                "port 5432 is also the port of database \"raw\"",
            ),
            ("databases[2].dir", "overlaps inputs[0].path /data/raw"),
        ] {
            assert!(
                has(field, words),
                "{field}: {words:?} missing from {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 18, "{problems:#?}");
    }

    #[test]
    fn database_directories_stay_apart_and_sockets_short() {
        let plan = parse(
            r#"
databases:
  - {name: a, port: 5432, dir: /pg/a, socket_dir: /pg/a/sock}
  - {name: b, port: 5433, dir: /pg/b, socket_dir: /sock}
  - {name: c, port: 5434, socket_dir: /sock/c}
"#,
        );
        let f = fields(&plan);
        assert_eq!(
            f,
            ["databases[0].socket_dir", "databases[2].socket_dir"],
            "{:?}",
            plan.validate()
        );
        // The socket path: 106 bytes pass, 107 do not.
        let name = "d".repeat(63);
        let fits = 106 - format!("/postgres/{name}/.s.PGSQL.5432").len();
        let with_coordination = |n: usize| {
            parse(&format!(
                "coordination: /{}\ndatabases: [{{name: {name}, dir: /pg}}]\n",
                "c".repeat(n - 1)
            ))
        };
        with_coordination(fits).validate().unwrap();
        let e = with_coordination(fits + 1).validate().unwrap_err().problems;
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "databases[0].name");
        assert!(e[0].problem.contains("is 107 bytes long"), "{e:?}");
        // The directory: 81 bytes pass, 82 do not (migration sockets live inside it).
        let with_dir = |n: usize| {
            parse(&format!(
                "databases: [{{name: a, dir: /{}, socket_dir: /s}}]\n",
                "d".repeat(n - 1)
            ))
        };
        with_dir(MAX_DATABASE_DIR).validate().unwrap();
        assert_eq!(
            fields(&with_dir(MAX_DATABASE_DIR + 1)),
            ["databases[0].dir"]
        );
        // A default directory /var/lib/datamon/postgres/<name>: names up to 55 characters.
        let named = |n: usize| parse(&format!("databases: [{{name: {}}}]\n", "n".repeat(n)));
        named(55).validate().unwrap();
        assert_eq!(fields(&named(56)), ["databases[0].name"]);
        let given = parse(&format!(
            "databases: [{{name: a, socket_dir: /{}}}]\n",
            "s".repeat(100)
        ));
        assert_eq!(fields(&given), ["databases[0].socket_dir"]);
    }

    #[test]
    fn each_database_is_run_by_exactly_one_named_sidecar() {
        let plan = parse(
            r#"
databases: [{name: a, port: 5432}, {name: b, port: 5433}, {name: c, port: 5434}]
sidecars:
  - {name: s1, databases: [a, b, ghost]}
  - {name: s2, databases: [b]}
"#,
        );
        let problems = plan.validate().unwrap_err().problems;
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "plan field sidecars[0].databases: no database is named \"ghost\": name one of the plan's databases",
                "plan field databases[1]: \"b\" is run by 2 sidecars: list it in exactly one sidecar's `databases`",
                "plan field databases[2]: \"c\" is run by 0 sidecars: list it in exactly one sidecar's `databases`",
            ]
        );
    }

    #[test]
    fn role_env_and_setting_names() {
        for ok in ["postgres", "app_rw", "_x", "a1", &"r".repeat(63)] {
            assert!(is_role_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1app",
            "App",
            "app-rw",
            "pg_app",
            "a b",
            &"r".repeat(64),
        ] {
            assert!(!is_role_name(bad), "{bad}");
        }
        for ok in ["PASS", "_p", "db_1_PASSWORD", "lower"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1P", "A-B", "A.B", "A B"] {
            assert!(!is_env_name(bad), "{bad}");
        }
        assert!(is_setting_name("auto_explain.log_min_duration"));
        assert!(is_setting_name("_x"));
        assert!(!is_setting_name("1x") && !is_setting_name("work-mem") && !is_setting_name(""));
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
