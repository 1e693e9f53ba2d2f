//! The `datamon.io/` annotations a user writes on a pod (and, for defaults, on its
//! namespace), parsed into a [`Request`]: pure, no Kubernetes types. Every problem names
//! the annotation, says what is wrong and how to fix it; all problems are collected.
//!
//! Inputs, outputs and databases are one annotation each (`datamon.io/input.<name>`,
//! `datamon.io/output.<name>`, `datamon.io/database.<name>`, the last parsed by
//! `super::database`) whose value is a YAML (flow) mapping of the plan schema's fields,
//! deserialized into `datamon_plan`'s own types, so an unknown field is refused by name.
//! `docs/annotations.md` documents every annotation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use datamon_plan::{Deadlines, Input, Output, Store};
use serde_json::{Map, Value};

use super::database::{self, DatabaseRequest};
use super::k8s_names::{is_dns_label, is_dns_subdomain, is_quantity, is_resource_name};

/// Prefix of every annotation (and label) of ours.
pub(crate) const PREFIX: &str = "datamon.io/";
/// `datamon.io/input.<name>`: one input of the plan.
pub(crate) const INPUT: &str = "datamon.io/input.";
/// `datamon.io/output.<name>`: one output of the plan.
pub(crate) const OUTPUT: &str = "datamon.io/output.";
/// `datamon.io/database.<name>`: one PostgreSQL database of the plan.
pub(crate) const DATABASE: &str = "datamon.io/database.";
/// `datamon.io/command.<container>`: the command of a container that has none.
pub(crate) const COMMAND: &str = "datamon.io/command.";
/// The config bucket (`gs://b`, `s3://b`, `file:///dir`).
pub(crate) const CONFIG: &str = "datamon.io/config";
/// The datamon context.
pub(crate) const CONTEXT: &str = "datamon.io/context";
/// The endpoint of an S3-compatible server.
pub(crate) const S3_ENDPOINT: &str = "datamon.io/s3-endpoint";
/// The endpoint of a GCS emulator (requests to it go unsigned).
pub(crate) const GCS_ENDPOINT: &str = "datamon.io/gcs-endpoint";
/// The coordination directory (the plan's `coordination`).
pub(crate) const COORDINATION: &str = "datamon.io/coordination";
/// A Secret with the store's credentials.
pub(crate) const CREDENTIALS_SECRET: &str = "datamon.io/credentials-secret";
/// The agent image.
pub(crate) const IMAGE: &str = "datamon.io/image";
/// The agent image of pods with databases (the agent with PostgreSQL).
pub(crate) const POSTGRES_IMAGE: &str = "datamon.io/postgres-image";
/// The agent containers' resources.
pub(crate) const RESOURCES: &str = "datamon.io/resources";
/// The plan's deadlines.
pub(crate) const DEADLINES: &str = "datamon.io/deadlines";
/// `auto`, `on` or `off`: the agent as a native sidecar.
pub(crate) const NATIVE_SIDECAR: &str = "datamon.io/native-sidecar";
/// `datamon.io/events`: `"true"` has the agent post Kubernetes Events about the data outcome
/// (docs/events.md; the pod's service account needs the Role of manifests/agent-events/).
pub(crate) const EVENTS: &str = "datamon.io/events";
/// The application containers (wrapped and given the data), comma-separated.
pub(crate) const WRAP: &str = "datamon.io/wrap";
/// Opt-in label (pods: `"true"`, namespaces: `enabled`); as a pod label or annotation,
/// `"false"` opts a pod out.
pub(crate) const INJECT: &str = "datamon.io/inject";
/// Set by the webhook on the pods it injected: `injected`.
pub(crate) const STATUS: &str = "datamon.io/status";
/// Set by the webhook: a digest of the injected plan.
pub(crate) const PLAN_DIGEST: &str = "datamon.io/plan-digest";

/// Annotations that take a namespace default.
const DEFAULTABLE: [&str; 12] = [
    CONFIG,
    CONTEXT,
    S3_ENDPOINT,
    GCS_ENDPOINT,
    COORDINATION,
    CREDENTIALS_SECRET,
    IMAGE,
    POSTGRES_IMAGE,
    RESOURCES,
    DEADLINES,
    NATIVE_SIDECAR,
    EVENTS,
];

/// One problem with one annotation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{annotation}: {problem}")]
pub struct Problem {
    /// The annotation at fault (with ` (namespace default)` when it comes from the
    /// namespace).
    pub annotation: String,
    /// What is wrong, and the fix.
    pub problem: String,
}

impl Problem {
    /// A problem with `annotation`.
    pub(crate) fn new(annotation: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            annotation: annotation.into(),
            problem: problem.into(),
        }
    }
}

/// Whether the agent runs as a native sidecar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NativeMode {
    /// When the cluster supports native sidecars (the webhook's setting).
    #[default]
    Auto,
    /// Always (an init container with `restartPolicy: Always`).
    On,
    /// Never: a regular container after the application's.
    Off,
}

/// Resource requirements of the agent containers, as Kubernetes writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    /// `requests`: resource name → quantity.
    pub requests: BTreeMap<String, String>,
    /// `limits`: resource name → quantity.
    pub limits: BTreeMap<String, String>,
}

impl Default for Resources {
    /// Requests only (no limit that could kill an upload): enough for the agent's
    /// default 64 MiB data budget.
    fn default() -> Self {
        Self {
            requests: BTreeMap::from([
                ("cpu".to_string(), "100m".to_string()),
                ("memory".to_string(), "256Mi".to_string()),
            ]),
            limits: BTreeMap::new(),
        }
    }
}

impl Resources {
    /// The `resources` field of a container.
    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.limits.is_empty() {
            m.insert("limits".into(), serde_json::json!(self.limits));
        }
        if !self.requests.is_empty() {
            m.insert("requests".into(), serde_json::json!(self.requests));
        }
        Value::Object(m)
    }
}

/// What the annotations ask for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// Inputs, in annotation order (sorted by name).
    pub inputs: Vec<Input>,
    /// Outputs, sorted by name.
    pub outputs: Vec<Output>,
    /// Databases, sorted by name.
    pub databases: Vec<DatabaseRequest>,
    /// The store.
    pub store: Store,
    /// The coordination directory, when not the plan's default.
    pub coordination: Option<PathBuf>,
    /// Deadlines (defaults where not given).
    pub deadlines: Deadlines,
    /// The agent image, when an annotation names one.
    pub image: Option<String>,
    /// The agent image of a pod with databases, when an annotation names one.
    pub postgres_image: Option<String>,
    /// The Secret with the store's credentials.
    pub credentials_secret: Option<String>,
    /// Resources of the agent containers.
    pub resources: Resources,
    /// Native sidecar mode.
    pub native: NativeMode,
    /// Whether the agent posts Kubernetes Events (`datamon.io/events`).
    pub events: bool,
    /// The application containers named by `datamon.io/wrap`, in annotation order; empty
    /// means the default one (kubectl's default container, else the first).
    pub wrap: Vec<String>,
    /// `datamon.io/command.<container>`: container → command.
    pub commands: BTreeMap<String, Vec<String>>,
}

/// Where a value comes from.
#[derive(Clone, Copy)]
pub(crate) enum Source {
    Pod,
    Namespace,
}

/// An annotation and its value, with where it comes from.
pub(crate) struct Found<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: &'a str,
    pub(crate) source: Source,
}

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Source::Pod => write!(f, "{}", self.key),
            Source::Namespace => write!(f, "{} (namespace default)", self.key),
        }
    }
}

/// Whether `annotations` hold any annotation of ours that asks for work (anything under
/// `datamon.io/` but the opt-in and the webhook's own marks).
pub(crate) fn asks_for_injection(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .keys()
        .any(|k| k.starts_with(PREFIX) && ![INJECT, STATUS, PLAN_DIGEST].contains(&k.as_str()))
}

/// `"true"`/`"enabled"` → true, `"false"`/`"disabled"` → false, else `None`.
pub(crate) fn opt_in_value(v: &str) -> Option<bool> {
    match v.trim() {
        "true" | "enabled" => Some(true),
        "false" | "disabled" => Some(false),
        _ => None,
    }
}

/// Parses the pod's annotations, with the namespace's as defaults for the scalar ones:
/// what could be parsed, and every problem (the request is complete only without any).
pub fn parse(
    pod: &BTreeMap<String, String>,
    namespace: &BTreeMap<String, String>,
) -> (Request, Vec<Problem>) {
    let mut req = Request::default();
    let mut problems = Vec::new();

    for (key, value) in pod {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let found = Found {
            key,
            value,
            source: Source::Pod,
        };
        if let Some(name) = key.strip_prefix(INPUT) {
            match parse_entry::<Input>(&found, name, "input") {
                Ok(i) => req.inputs.push(i),
                Err(p) => problems.push(p),
            }
        } else if let Some(name) = key.strip_prefix(OUTPUT) {
            match parse_entry::<Output>(&found, name, "output") {
                Ok(o) => req.outputs.push(o),
                Err(p) => problems.push(p),
            }
        } else if let Some(name) = key.strip_prefix(DATABASE) {
            match database::parse(&found, name) {
                Ok(d) => req.databases.push(d),
                Err(p) => problems.push(p),
            }
        } else if let Some(container) = key.strip_prefix(COMMAND) {
            match parse_command(&found, container) {
                Ok(c) => {
                    req.commands.insert(container.to_string(), c);
                }
                Err(p) => problems.push(p),
            }
        } else if key == WRAP {
            match parse_wrap(&found) {
                Ok(w) => req.wrap = w,
                Err(p) => problems.push(p),
            }
        } else if key == INJECT {
            if opt_in_value(value).is_none() {
                problems.push(Problem::new(
                    key,
                    format!("{value:?} is neither \"true\" nor \"false\": use \"true\" to inject, \"false\" to opt out"),
                ));
            }
        } else if DEFAULTABLE.contains(&key.as_str()) || key == STATUS || key == PLAN_DIGEST {
            // Scalars are read below; our own marks are handled by the caller.
        } else {
            problems.push(unknown(key, rest));
        }
    }

    for key in DEFAULTABLE {
        let found = match (pod.get(key), namespace.get(key)) {
            (Some(v), _) => Found {
                key,
                value: v,
                source: Source::Pod,
            },
            (None, Some(v)) => Found {
                key,
                value: v,
                source: Source::Namespace,
            },
            (None, None) => continue,
        };
        if let Err(p) = scalar(&mut req, &found, namespace.get(key)) {
            problems.push(p);
        }
    }

    let asked = pod
        .keys()
        .any(|k| k.starts_with(INPUT) || k.starts_with(OUTPUT) || k.starts_with(DATABASE));
    if !asked {
        problems.push(Problem::new(
            format!("{INPUT}<name>"),
            "the pod has datamon.io annotations but no input, output or database: add `datamon.io/input.<name>: \"{repo: R, path: /data/in}\"`, `datamon.io/output.<name>: \"{repo: R, path: /data/out}\"` or `datamon.io/database.<name>: \"{port: 5432}\"`, or remove the datamon.io annotations",
        ));
    }
    (req, problems)
}

fn unknown(key: &str, rest: &str) -> Problem {
    let hint = match rest {
        "input" | "inputs" => format!(" (inputs are named in the key: `{INPUT}<name>`)"),
        "output" | "outputs" => format!(" (outputs are named in the key: `{OUTPUT}<name>`)"),
        "database" | "databases" => {
            format!(" (databases are named in the key: `{DATABASE}<name>`)")
        }
        "command" => format!(" (the container is named in the key: `{COMMAND}<container>`)"),
        _ if rest.starts_with("inputs.") => format!(" (did you mean `{INPUT}{}`?)", &rest[7..]),
        _ if rest.starts_with("outputs.") => format!(" (did you mean `{OUTPUT}{}`?)", &rest[8..]),
        _ if rest.starts_with("databases.") => {
            format!(" (did you mean `{DATABASE}{}`?)", &rest[10..])
        }
        _ => String::new(),
    };
    Problem::new(
        key,
        format!(
            "unknown annotation{hint}: use one of {INPUT}<name>, {OUTPUT}<name>, {DATABASE}<name>, {}, {WRAP}, {COMMAND}<container>, {INJECT}, or remove it",
            DEFAULTABLE.join(", ")
        ),
    )
}

/// YAML → JSON value, with YAML's numbers and booleans turned into strings (every leaf
/// field of an input or output is a string: `label: 2024` means the label "2024").
pub(crate) fn yaml_value(found: &Found<'_>) -> Result<Value, Problem> {
    serde_norway::from_str::<Value>(found.value).map_err(|e| {
        Problem::new(
            found.to_string(),
            format!(
                "not valid YAML ({e}): write a flow mapping such as \"{{repo: r, path: /data/x}}\""
            ),
        )
    })
}

pub(crate) fn stringify_scalars(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, stringify_scalars(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(stringify_scalars).collect()),
        other => other,
    }
}

/// Parses an input or output annotation: a mapping of the schema's fields but `name`.
fn parse_entry<T: serde::de::DeserializeOwned>(
    found: &Found<'_>,
    name: &str,
    what: &str,
) -> Result<T, Problem> {
    let bad = |p: String| Problem::new(found.to_string(), p);
    let example = if what == "input" {
        "\"{repo: measurements, label: v3, path: /data/raw}\""
    } else {
        "\"{repo: results, path: /data/out, message: nightly run}\""
    };
    if name.is_empty() {
        return Err(bad(format!(
            "the {what} has no name: name it in the key, as in `datamon.io/{what}.<name>`"
        )));
    }
    let Value::Object(mut map) = stringify_scalars(yaml_value(found)?) else {
        return Err(bad(format!(
            "the value must be a mapping of the {what}'s fields, such as {example}"
        )));
    };
    if map.contains_key("name") {
        return Err(bad(format!(
            "remove the `name` field: the {what}'s name is the key's suffix ({name:?})"
        )));
    }
    map.insert("name".into(), Value::String(name.to_string()));
    serde_json::from_value::<T>(Value::Object(map)).map_err(|e| {
        bad(format!(
            "{e}: write the {what} as a mapping of the plan's fields, such as {example} (docs/plan.example.yaml)"
        ))
    })
}

/// `datamon.io/command.<c>`: a YAML list of strings.
fn parse_command(found: &Found<'_>, container: &str) -> Result<Vec<String>, Problem> {
    let bad = |p: String| Problem::new(found.to_string(), p);
    if !is_dns_label(container) {
        return Err(bad(format!(
            "{container:?} is not a container name: name the container in the key, as in `{COMMAND}app`"
        )));
    }
    let fix = "give the command as a YAML list, such as '[\"python\", \"job.py\"]' (the image's ENTRYPOINT and CMD)";
    let v = yaml_value(found)?;
    let Value::Array(items) = stringify_scalars(v) else {
        return Err(bad(format!("not a list: {fix}")));
    };
    let cmd: Option<Vec<String>> = items
        .into_iter()
        .map(|i| match i {
            Value::String(s) => Some(s),
            _ => None,
        })
        .collect();
    match cmd {
        Some(c) if !c.is_empty() && !c[0].is_empty() => Ok(c),
        _ => Err(bad(format!(
            "the command must be a non-empty list of strings: {fix}"
        ))),
    }
}

/// `datamon.io/wrap`: the application containers, comma-separated, each named once.
fn parse_wrap(found: &Found<'_>) -> Result<Vec<String>, Problem> {
    let bad = |p: String| Problem::new(found.to_string(), p);
    let names: Vec<&str> = found
        .value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Err(bad(
            "empty: name the application containers (comma-separated), or remove the annotation to wrap the first container".to_string(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if !is_dns_label(name) {
            return Err(bad(format!(
                "{name:?} is not a container name: name one or more of the pod's containers, comma-separated"
            )));
        }
        if out.iter().any(|n| n == name) {
            return Err(bad(format!(
                "container {name:?} is listed twice: name each application container once"
            )));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// The scalar annotations (pod value, else namespace default).
fn scalar(req: &mut Request, found: &Found<'_>, ns_value: Option<&String>) -> Result<(), Problem> {
    let value = found.value.trim();
    let bad = |p: String| Problem::new(found.to_string(), p);
    match found.key {
        CONFIG => {
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(bad(format!("{value:?} is not a config bucket: use gs://bucket, s3://bucket or file:///dir")));
            }
            req.store.config = Some(value.to_string());
        }
        CONTEXT => {
            if !datamon_plan::validate::is_repo_name(value) {
                return Err(bad(format!(
                    "{value:?} is not a context name: use letters, digits, `-` and `_`"
                )));
            }
            req.store.context = Some(value.to_string());
        }
        S3_ENDPOINT => {
            let ok = (value.starts_with("http://") || value.starts_with("https://"))
                && !value.contains(char::is_whitespace);
            if !ok {
                return Err(bad(format!(
                    "{value:?} is not an endpoint URL: use http://host:port or https://host"
                )));
            }
            req.store.s3_endpoint = Some(value.to_string());
        }
        GCS_ENDPOINT => {
            // As the agent reads it: a URL, or host:port (as STORAGE_EMULATOR_HOST).
            let url = value.starts_with("http://") || value.starts_with("https://");
            if value.is_empty()
                || value.contains(char::is_whitespace)
                || (!url && value.contains("://"))
            {
                return Err(bad(format!(
                    "{value:?} is not an endpoint: use http://host:port, https://host or host:port"
                )));
            }
            req.store.gcs_endpoint = Some(value.to_string());
        }
        COORDINATION => {
            // The plan's checks name the problem (absolute, clean).
            req.coordination = Some(PathBuf::from(value));
        }
        CREDENTIALS_SECRET => {
            if !is_dns_subdomain(value) {
                return Err(bad(format!("{value:?} is not a Secret name: use lowercase letters, digits, `-` and `.`")));
            }
            req.credentials_secret = Some(value.to_string());
        }
        IMAGE | POSTGRES_IMAGE => {
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(bad(format!(
                    "{value:?} is not an image reference: use e.g. registry.example.com/datamon-agent:1.2"
                )));
            }
            let target = if found.key == IMAGE {
                &mut req.image
            } else {
                &mut req.postgres_image
            };
            *target = Some(value.to_string());
        }
        RESOURCES => req.resources = parse_resources(found)?,
        DEADLINES => req.deadlines = parse_deadlines(found, ns_value)?,
        EVENTS => {
            req.events = opt_in_value(value).ok_or_else(|| {
                bad(format!("{value:?} is neither \"true\" nor \"false\": use \"true\" to have the agent post Kubernetes Events (its service account needs the Role of docs/events.md), \"false\" for none"))
            })?;
        }
        NATIVE_SIDECAR => {
            req.native = match value {
                "auto" => NativeMode::Auto,
                "on" | "true" => NativeMode::On,
                "off" | "false" => NativeMode::Off,
                _ => {
                    return Err(bad(format!(
                        "{value:?} is not a mode: use auto (native when the cluster supports it), on or off"
                    )))
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `datamon.io/resources`: `{requests: {cpu: 100m, memory: 256Mi}, limits: {memory: 1Gi}}`.
fn parse_resources(found: &Found<'_>) -> Result<Resources, Problem> {
    let bad = |p: String| Problem::new(found.to_string(), p);
    let fix = "write e.g. \"{requests: {cpu: 100m, memory: 256Mi}, limits: {memory: 1Gi}}\"";
    let Value::Object(map) = stringify_scalars(yaml_value(found)?) else {
        return Err(bad(format!("not a mapping: {fix}")));
    };
    let mut out = Resources {
        requests: BTreeMap::new(),
        limits: BTreeMap::new(),
    };
    for (k, v) in map {
        let target = match k.as_str() {
            "requests" => &mut out.requests,
            "limits" => &mut out.limits,
            _ => {
                return Err(bad(format!(
                    "unknown field `{k}`: only `requests` and `limits`; {fix}"
                )))
            }
        };
        let Value::Object(q) = v else {
            return Err(bad(format!("`{k}` is not a mapping: {fix}")));
        };
        for (name, qty) in q {
            let Value::String(qty) = qty else {
                return Err(bad(format!("`{k}.{name}` is not a quantity: {fix}")));
            };
            if !is_resource_name(&name) {
                return Err(bad(format!(
                    "`{k}.{name}`: not a resource name: use cpu, memory or ephemeral-storage"
                )));
            }
            if !is_quantity(&qty) {
                return Err(bad(format!(
                    "`{k}.{name}`: {qty:?} is not a quantity: use e.g. 100m, 0.5, 256Mi, 1G"
                )));
            }
            target.insert(name, qty);
        }
    }
    Ok(out)
}

/// `datamon.io/deadlines`: the plan's `deadlines`, field by field over the namespace's.
fn parse_deadlines(found: &Found<'_>, ns_value: Option<&String>) -> Result<Deadlines, Problem> {
    let fix = "write e.g. \"{ready: 30m, upload: 2h, grace: 10s}\" (fields ready, start, app, upload, grace)";
    let as_map = |f: &Found<'_>| -> Result<Map<String, Value>, Problem> {
        match stringify_scalars(yaml_value(f)?) {
            Value::Object(m) => Ok(m),
            _ => Err(Problem::new(f.to_string(), format!("not a mapping: {fix}"))),
        }
    };
    let mut merged = Map::new();
    if let (Source::Pod, Some(ns)) = (found.source, ns_value) {
        let nsf = Found {
            key: found.key,
            value: ns,
            source: Source::Namespace,
        };
        merged = as_map(&nsf)?;
    }
    merged.extend(as_map(found)?);
    serde_json::from_value::<Deadlines>(Value::Object(merged))
        .map_err(|e| Problem::new(found.to_string(), format!("{e}: {fix}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn inputs_outputs_and_scalars() {
        let (req, problems) = parse(
            &map(&[
                (
                    "datamon.io/input.raw",
                    "{repo: measurements, label: 2024, path: /data/raw}",
                ),
                (
                    "datamon.io/output.out",
                    "{repo: results, path: /data/out, upload: always}",
                ),
                ("datamon.io/deadlines", "{ready: 5m}"),
                ("datamon.io/native-sidecar", "off"),
                ("other.io/x", "y"),
            ]),
            &map(&[
                ("datamon.io/deadlines", "{upload: 2h, ready: 1h}"),
                ("datamon.io/config", "gs://cfg"),
                ("datamon.io/native-sidecar", "on"),
            ]),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(req.inputs[0].name, "raw");
        assert_eq!(req.inputs[0].label.as_deref(), Some("2024"));
        assert_eq!(req.outputs[0].name, "out");
        assert_eq!(req.deadlines.ready.as_secs(), 300);
        assert_eq!(req.deadlines.upload.as_secs(), 7200);
        assert_eq!(req.store.config.as_deref(), Some("gs://cfg"));
        assert_eq!(req.native, NativeMode::Off);
    }

    #[test]
    fn problems_name_the_annotation() {
        let (_, e) = parse(
            &map(&[
                ("datamon.io/input.raw", "{repo: r, path: /d, lable: x}"),
                ("datamon.io/outputs.x", "{}"),
                ("datamon.io/wrap", "a,b,a"),
                ("datamon.io/command.app", "python job.py"),
            ]),
            &map(&[("datamon.io/resources", "{requests: {cpu: lots}}")]),
        );
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        assert!(
            all.contains("datamon.io/input.raw: unknown field `lable`"),
            "{all}"
        );
        assert!(all.contains("did you mean `datamon.io/output.x`"), "{all}");
        assert!(
            all.contains("datamon.io/wrap: container \"a\" is listed twice"),
            "{all}"
        );
        assert!(all.contains("datamon.io/command.app: not a list"), "{all}");
        assert!(
            all.contains("datamon.io/resources (namespace default): `requests.cpu`"),
            "{all}"
        );
        assert_eq!(e.len(), 5, "{all}");
    }

    #[test]
    fn wrap_names_several_containers_in_order() {
        let (req, problems) = parse(
            &map(&[
                ("datamon.io/output.out", "{repo: r, path: /data/out}"),
                ("datamon.io/wrap", " trainer, evaluator ,"),
            ]),
            &map(&[]),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(req.wrap, ["trainer", "evaluator"]);
    }
}
