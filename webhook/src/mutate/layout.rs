//! Where the agent goes in the pod, as JSON Patch operations on the pod's own JSON.
//!
//! - Volumes (emptyDir): the coordination directory, the installed agent (when the
//!   application is wrapped), and one per distinct input/output path (a download input and
//!   an output on the same path share one: read-update); a Secret volume for the
//!   credentials.
//! - A download-only plan: one plain init container running `sidecar`, appended after the
//!   pod's own init containers; the application is not wrapped.
//! - Otherwise: an init container that installs the agent, and the agent itself, either a
//!   native sidecar (init container, `restartPolicy: Always`, a startupProbe) or a regular
//!   container appended after the pod's containers. Each application container's command
//!   becomes `<agent dir>/datamon-agent wrap -- <command>` (its `args` stay: Kubernetes
//!   appends them, as before); with several (`datamon.io/wrap: a,b`), each is its own
//!   participant: `wrap --participant app-<container> -- <command>`, as the plan's `apps`
//!   lists them.
//! - Databases (`super::database`): an emptyDir `datamon-postgres` mounted only in the agent
//!   at `DATABASE_ROOT` (each database's directory is inside it), the agent image with
//!   PostgreSQL, each password's Secret key in the agent's environment, and per application
//!   container the variables that say where each server is (those it sets itself stay).
//! - Every injected container gets an explicit `securityContext` (`super::security`): the
//!   Pod Security Standards' `restricted` level on its own, but for the agent of a FUSE mount.
//! - FUSE (an input with `mode: mount`) only: the agent is privileged, as root, and its mount
//!   of that volume has `Bidirectional` propagation, the application's `HostToContainer`.
//!   That volume is mounted at the input's parent directory and the FUSE mount served on
//!   a directory inside it: a FUSE mount stacked on the volume's own mount point is not
//!   unmounted in the application's namespace (seen on the pod runner: the agent's
//!   unmount hung until the application's container ended). So that directory holds no
//!   other datamon directory.
//!
//! Every name is checked against the pod's own (containers, volumes) and suffixed when
//! taken; mount paths that the application container already uses are refused.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use datamon_plan::schema::DATABASE_ROOT;
use datamon_plan::{InputMode, Plan};
use serde_json::{json, Value};

use super::annotations::{
    Problem, Request, COMMAND, COORDINATION, INPUT, OUTPUT, PLAN_DIGEST, STATUS, WRAP,
};
use super::database;
use super::patch::PatchBuilder;
use super::render::{needs_sidecar, PARTICIPANT};
use super::security::{self, PodSecurityLevel};

/// What the agent needs to post Kubernetes Events (`datamon.io/events: "true"`): the
/// switch, and the pod's name, namespace and uid from the downward API
/// (https://kubernetes.io/docs/concepts/workloads/pods/downward-api/), so that no API call is
/// needed to name the pod.
fn events_env() -> Vec<Value> {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    vec![
        json!({"name": "DATAMON_EVENTS__ENABLED", "value": "true"}),
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_UID", "metadata.uid"),
    ]
}

/// `restartPolicy: OnFailure` or `Always` with an agent beside the application: refused.
/// The agent does the pod's data work once (after the application: outputs uploaded or
/// skipped, mounts and databases stopped), but the kubelet restarts the application in the
/// same pod (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#restart-policy):
/// - `OnFailure`: after a failure, so a second run that succeeds would end the pod
///   `Succeeded` without its outputs;
/// - `Always` (a bare pod's default, a Deployment's only choice): after every end, forever;
///   the wrapper of a restarted application finds the agent done and exits without waiting
///   for its outputs (never uploaded), and a classic agent container is restarted too,
///   fetching the inputs and uploading again at each round.
///
/// A download-only plan (no sidecar) is unaffected: its init container runs once and its
/// files stay for the restarted runs. A pod without the field is not refused: the API
/// server gives it `Always` before admission, so in a cluster the field is always there;
/// a manifest read by `inject` without it stands for a Job's pod.
fn restart_problem(pod: &Value, wrapped: bool) -> Option<Problem> {
    let why = match pod["spec"]["restartPolicy"].as_str() {
        _ if !wrapped => return None,
        Some("OnFailure") => "OnFailure restarts the application inside the pod after the agent has ended the pod's data work for its failure (outputs skipped, mounts and databases stopped), so a second run that succeeds would end the pod Succeeded without its outputs: use restartPolicy: Never, and the Job's backoffLimit for retries (each retry a new pod with its data fetched again)",
        Some("Always") => "Always restarts the application inside the pod each time it ends, after the agent has done the pod's data work once, so the outputs of later runs are never uploaded and a classic agent container is restarted too (inputs fetched and outputs uploaded again at every round): a batch job uses restartPolicy: Never (a Job, with its backoffLimit for retries); a Deployment's pods always restart and are not batch jobs, so give them only download inputs (no outputs, mounts or databases), which run once before the application",
        _ => return None,
    };
    Some(Problem::new("spec.restartPolicy", why))
}

/// Environment variable carrying the plan (the agent's `DATAMON_PLAN`).
pub(crate) const PLAN_ENV: &str = "DATAMON_PLAN";
/// Where the credentials Secret is mounted in the agent containers.
pub(crate) const CREDENTIALS_DIR: &str = "/var/run/secrets/datamon";
/// The annotation naming a pod's default container (kubectl's).
pub(crate) const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// What the layout needs besides the pod.
pub(crate) struct Inputs<'a> {
    /// The annotations' request.
    pub req: &'a Request,
    /// The rendered, valid plan.
    pub plan: &'a Plan,
    /// The agent image.
    pub image: &'a str,
    /// The agent as a native sidecar.
    pub native: bool,
    /// The Pod Security level the namespace enforces, if known.
    pub enforce: Option<PodSecurityLevel>,
}

/// Where the install init container puts the agent for the wrapper: beside the
/// coordination directory, `<coordination>-bin` (`/var/run/datamon-bin` by default).
pub(crate) fn agent_dir(plan: &Plan) -> String {
    format!("{}-bin", s(&plan.coordination).trim_end_matches('/'))
}

/// A volume of ours and where it is mounted (a mounted input's parent directory).
struct DataVolume {
    name: String,
    path: PathBuf,
    /// The annotation that asked for it (for messages).
    annotation: String,
    /// A FUSE mount lives there.
    fuse: bool,
}

/// Names already used in the pod (or by us), to pick unique ones.
struct Names(HashSet<String>);

impl Names {
    fn of(items: &[&Value]) -> Self {
        Self(
            items
                .iter()
                .filter_map(|v| v.as_array())
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect(),
        )
    }

    /// `base`, or `base-2`, `base-3`… (at most 63 characters), and takes it.
    fn unique(&mut self, base: &str) -> String {
        let trimmed = |s: &str, max: usize| -> String {
            let mut s: String = s.chars().take(max).collect();
            while s.ends_with('-') {
                s.pop();
            }
            s
        };
        let mut name = trimmed(base, 63);
        let mut n = 2;
        while self.0.contains(&name) {
            let suffix = format!("-{n}");
            name = format!("{}{suffix}", trimmed(base, 63 - suffix.len()));
            n += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The patch that lays out `inp.plan` in `pod`, or the problems that prevent it.
pub(crate) fn build(pod: &Value, inp: &Inputs<'_>) -> Result<json_patch::Patch, Vec<Problem>> {
    let mut problems = Vec::new();
    let spec = &pod["spec"];
    let containers: &[Value] = spec["containers"].as_array().map_or(&[], Vec::as_slice);
    let container_names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    if containers.is_empty() {
        return Err(vec![Problem::new(
            "datamon.io",
            "the pod has no containers: datamon needs an application container",
        )]);
    }
    let wrapped = needs_sidecar(inp.req);
    let agent_dir = agent_dir(inp.plan);
    let agent_dir = agent_dir.as_str();

    // The application containers (indices into `containers`).
    let annotations = &pod["metadata"]["annotations"];
    let apps: Vec<usize> = if inp.req.wrap.is_empty() {
        let default = annotations[DEFAULT_CONTAINER]
            .as_str()
            .and_then(|d| container_names.iter().position(|c| *c == d));
        vec![default.unwrap_or(0)]
    } else {
        let found: Vec<Option<usize>> = inp
            .req
            .wrap
            .iter()
            .map(|name| container_names.iter().position(|c| c == name))
            .collect();
        for (name, at) in inp.req.wrap.iter().zip(&found) {
            if at.is_none() {
                problems.push(Problem::new(
                    WRAP,
                    format!(
                        "no container is named {name:?}: name one or more of {}",
                        container_names.join(", ")
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        found.into_iter().flatten().collect()
    };
    let app_names: Vec<&str> = apps
        .iter()
        .map(|&i| container_names.get(i).copied().unwrap_or(""))
        .collect();

    // Their commands.
    let mut commands: Vec<Vec<Value>> = Vec::new();
    if wrapped {
        for c in inp.req.commands.keys() {
            if !app_names.contains(&c.as_str()) {
                let why = if !container_names.contains(&c.as_str()) {
                    format!(
                        "no container is named {c:?}: name one of {}",
                        container_names.join(", ")
                    )
                } else if let [app_name] = app_names.as_slice() {
                    format!("container {c:?} is not the application container ({app_name:?}): remove the annotation, or set {WRAP}: {c}")
                } else {
                    format!("container {c:?} is not an application container (wrapped: {}): remove the annotation, or add {c} to {WRAP}", app_names.join(", "))
                };
                problems.push(Problem::new(format!("{COMMAND}{c}"), why));
            }
        }
        for (&app, &app_name) in apps.iter().zip(&app_names) {
            let own = containers[app]["command"]
                .as_array()
                .filter(|c| !c.is_empty());
            match (own, inp.req.commands.get(app_name)) {
                (Some(_), Some(_)) => problems.push(Problem::new(
                    format!("{COMMAND}{app_name}"),
                    format!("container {app_name:?} has a `command`, which is wrapped as it is: remove the annotation"),
                )),
                (Some(own), None) => commands.push(own.clone()),
                (None, Some(ann)) => {
                    commands.push(ann.iter().map(|a| Value::String(a.clone())).collect());
                }
                (None, None) => problems.push(Problem::new(
                    format!("{COMMAND}{app_name}"),
                    format!("container {app_name:?} has no `command`, and the webhook cannot see its image's entrypoint to wrap it: set `command` in the pod spec, or add the annotation {COMMAND}{app_name}: '[\"/entrypoint\", \"arg\"]' with the image's ENTRYPOINT (and CMD, unless `args` gives them)"),
                )),
            }
        }
    }

    // Volumes and mount paths.
    let mut volume_names = Names::of(&[&spec["volumes"]]);
    let mut container_names_taken = Names::of(&[
        &spec["containers"],
        &spec["initContainers"],
        &spec["ephemeralContainers"],
    ]);
    let run_volume = volume_names.unique("datamon-run");
    let bin_volume = wrapped.then(|| volume_names.unique("datamon-bin"));
    let mut data: Vec<DataVolume> = Vec::new();
    let paths = inp
        .plan
        .inputs
        .iter()
        .map(|i| (&i.name, &i.path, i.mode == InputMode::Mount, INPUT))
        .chain(
            inp.plan
                .outputs
                .iter()
                .map(|o| (&o.name, &o.path, false, OUTPUT)),
        );
    for (name, path, fuse, prefix) in paths {
        let annotation = format!("{prefix}{name}");
        // A FUSE mount is served on a directory inside its volume, never on the volume's
        // own mount point (unmounting would not reach the application's copy of it).
        let path = if fuse {
            match path.parent().filter(|p| p.parent().is_some()) {
                Some(parent) => parent.to_path_buf(),
                None => {
                    problems.push(Problem::new(annotation, format!("a mounted input is served from a volume at its parent directory, so {} needs one: use e.g. /mnt/datamon/{name}", path.display())));
                    continue;
                }
            }
        } else {
            path.clone()
        };
        if let Some(d) = data.iter().find(|d| d.path == path) {
            if d.fuse != fuse {
                problems.push(Problem::new(annotation, format!("{} is both the directory of {} and the parent directory of a mounted input: put mounted inputs in a directory of their own, e.g. /mnt/datamon/<name>", path.display(), d.annotation)));
            }
            continue; // read-update, or mounts side by side: one volume
        }
        data.push(DataVolume {
            name: volume_names.unique(&format!("datamon-{name}")),
            path,
            annotation,
            fuse,
        });
    }
    let postgres_volume =
        (!inp.plan.databases.is_empty()).then(|| volume_names.unique("datamon-postgres"));
    if postgres_volume.is_some() {
        for d in &data {
            let root = Path::new(DATABASE_ROOT);
            if d.path.starts_with(root) || root.starts_with(&d.path) {
                problems.push(Problem::new(d.annotation.clone(), format!("{} holds or is inside {DATABASE_ROOT}, where the agent keeps the databases: choose another path", d.path.display())));
            }
        }
    }
    let creds_volume = inp
        .req
        .credentials_secret
        .as_ref()
        .map(|secret| (volume_names.unique("datamon-credentials"), secret));

    // Our paths must be free in the application containers, and distinct from each other.
    let app_paths: Vec<BTreeSet<String>> = apps
        .iter()
        .map(|&app| {
            containers[app]["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["mountPath"].as_str())
                .map(|p| p.trim_end_matches('/').to_string())
                .collect()
        })
        .collect();
    let coordination = s(&inp.plan.coordination);
    let mut ours: Vec<(String, String)> = vec![(coordination.clone(), COORDINATION.to_string())];
    if wrapped {
        ours.push((
            agent_dir.to_string(),
            format!("{COORDINATION} (its `-bin` sibling, where the agent is installed)"),
        ));
    }
    for d in &data {
        ours.push((s(&d.path), d.annotation.clone()));
    }
    // The volume under a FUSE mount propagates mounts: no other volume of ours inside.
    for d in data.iter().filter(|d| d.fuse) {
        for (path, annotation) in &ours {
            let q = Path::new(path);
            if q != d.path && (q.starts_with(&d.path) || d.path.starts_with(q)) {
                problems.push(Problem::new(d.annotation.clone(), format!("a mounted input is served from a volume at its parent directory {}, which must not hold or be inside another datamon directory ({path}, of {annotation}): put mounted inputs in a directory of their own, e.g. /mnt/datamon/<name>", d.path.display())));
            }
        }
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (path, annotation) in &ours {
        for (taken, app_name) in app_paths.iter().zip(&app_names) {
            if taken.contains(path.as_str()) {
                problems.push(Problem::new(annotation.clone(), format!("container {app_name:?} already mounts a volume at {path}: choose another path for datamon")));
            }
        }
        if let Some(first) = seen.insert(path, annotation) {
            problems.push(Problem::new(annotation.clone(), format!("{path} is also the directory of {first}: give each datamon directory (coordination, agent, inputs, outputs) its own path")));
        }
    }
    problems.extend(restart_problem(pod, wrapped));
    problems.extend(security::mount_problems(pod, inp.plan, inp.enforce));
    if !problems.is_empty() {
        return Err(problems);
    }

    // The agent containers.
    let plan_json = serde_json::to_string(inp.plan).unwrap_or_default();
    let fuse = data.iter().any(|d| d.fuse);
    let resources = inp.req.resources.to_json();
    let mut agent_env = vec![json!({"name": PLAN_ENV, "value": plan_json})];
    let mut env_from = None;
    let mut agent_mounts = vec![json!({"name": run_volume, "mountPath": coordination})];
    for d in &data {
        let mut m = json!({"name": d.name, "mountPath": s(&d.path)});
        if d.fuse {
            m["mountPropagation"] = json!("Bidirectional");
        }
        agent_mounts.push(m);
    }
    if let Some(volume) = &postgres_volume {
        agent_mounts.push(json!({"name": volume, "mountPath": DATABASE_ROOT}));
    }
    agent_env.extend(database::agent_env(&inp.req.databases));
    let events = if inp.req.events {
        events_env()
    } else {
        Vec::new()
    };
    agent_env.extend(events.iter().cloned());
    if let Some((volume, secret)) = &creds_volume {
        agent_mounts.push(json!({"name": volume, "mountPath": CREDENTIALS_DIR, "readOnly": true}));
        env_from = Some(json!([{"secretRef": {"name": secret}}]));
        let config = inp.plan.store.config.as_deref().unwrap_or("");
        if !config.starts_with("s3://") && !config.starts_with("file://") {
            agent_env.push(json!({
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": format!("{CREDENTIALS_DIR}/key.json"),
            }));
        }
    }
    let app_containers: Vec<&Value> = apps.iter().map(|&i| &containers[i]).collect();
    let mut identity = security::identity(pod, &app_containers);
    if !inp.plan.databases.is_empty() {
        identity = security::known_to_postgres(identity);
    }
    let unprivileged = security::restricted(identity);
    let security = if fuse {
        security::fuse_agent()
    } else {
        unprivileged.clone()
    };
    let agent_name = container_names_taken.unique("datamon");
    let mut agent = json!({
        "name": agent_name,
        "image": inp.image,
        "args": ["sidecar", "--participant", PARTICIPANT],
        "env": agent_env,
        "resources": resources,
        "securityContext": security,
        "terminationMessagePath": s(&inp.plan.termination_message),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": agent_mounts,
    });
    if let Some(env_from) = env_from {
        agent["envFrom"] = env_from;
    }

    let mut b = PatchBuilder::new(pod);
    b.push(
        &["spec", "volumes"],
        json!({"name": run_volume, "emptyDir": {}}),
    );
    if let Some(bin) = &bin_volume {
        b.push(&["spec", "volumes"], json!({"name": bin, "emptyDir": {}}));
    }
    for d in &data {
        b.push(
            &["spec", "volumes"],
            json!({"name": d.name, "emptyDir": {}}),
        );
    }
    if let Some(volume) = &postgres_volume {
        b.push(
            &["spec", "volumes"],
            json!({"name": volume, "emptyDir": {}}),
        );
    }
    if let Some((volume, secret)) = &creds_volume {
        b.push(
            &["spec", "volumes"],
            json!({"name": volume, "secret": {"secretName": secret}}),
        );
    }

    let app_indices: Vec<String> = apps.iter().map(ToString::to_string).collect();
    let at = |i: usize, k: &'static str| -> Vec<&str> {
        vec!["spec", "containers", app_indices[i].as_str(), k]
    };
    match &bin_volume {
        Some(bin) => {
            // Install, then the agent (native: an init container; classic: a container).
            let install = json!({
                "name": container_names_taken.unique("datamon-install"),
                "image": inp.image,
                "args": ["install", agent_dir],
                "resources": resources,
                "securityContext": unprivileged,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [{"name": bin, "mountPath": agent_dir}],
            });
            b.push(&["spec", "initContainers"], install);
            if inp.native {
                agent["restartPolicy"] = json!("Always");
                let ready = inp.plan.deadlines.ready.as_secs();
                agent["startupProbe"] = json!({
                    "exec": {"command": ["datamon-agent", "probe", "--participant", PARTICIPANT]},
                    "periodSeconds": 2,
                    "timeoutSeconds": 10,
                    "failureThreshold": ready / 2 + 30,
                });
                b.push(&["spec", "initContainers"], agent);
            } else {
                b.push(&["spec", "containers"], agent);
            }
            // The applications, wrapped: one participant each when the plan names them.
            for (i, command) in commands.into_iter().enumerate() {
                let mut wrapped_cmd = vec![
                    json!(format!("{}/datamon-agent", agent_dir.trim_end_matches('/'))),
                    json!("wrap"),
                ];
                if let Some(participant) = inp.plan.apps.get(i) {
                    wrapped_cmd.push(json!("--participant"));
                    wrapped_cmd.push(json!(participant));
                }
                wrapped_cmd.push(json!("--"));
                wrapped_cmd.extend(command);
                b.set(&at(i, "command"), Value::Array(wrapped_cmd));
                b.push(&at(i, "env"), json!({"name": PLAN_ENV, "value": plan_json}));
                // Where the databases are (and, with Events, the pod); the container's own
                // variables win.
                let own: HashSet<&str> = containers[apps[i]]["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["name"].as_str())
                    .collect();
                let app_env = database::app_env(inp.plan, &inp.req.databases);
                for e in app_env.into_iter().chain(events.iter().cloned()) {
                    if !e["name"].as_str().is_some_and(|n| own.contains(n)) {
                        b.push(&at(i, "env"), e);
                    }
                }
                b.push(
                    &at(i, "volumeMounts"),
                    json!({"name": run_volume, "mountPath": coordination}),
                );
                b.push(
                    &at(i, "volumeMounts"),
                    json!({"name": bin, "mountPath": agent_dir, "readOnly": true}),
                );
                if containers[apps[i]]
                    .get("terminationMessagePolicy")
                    .is_none()
                {
                    b.set(
                        &at(i, "terminationMessagePolicy"),
                        json!("FallbackToLogsOnError"),
                    );
                }
            }
        }
        None => {
            // Download-only: one plain init container does it all.
            b.push(&["spec", "initContainers"], agent);
        }
    }
    for i in 0..apps.len() {
        for d in &data {
            let mut m = json!({"name": d.name, "mountPath": s(&d.path)});
            if d.fuse {
                m["mountPropagation"] = json!("HostToContainer");
            }
            b.push(&at(i, "volumeMounts"), m);
        }
    }

    // The pod has annotations: ours brought it here.
    b.set(&["metadata", "annotations", STATUS], json!("injected"));
    b.set(
        &["metadata", "annotations", PLAN_DIGEST],
        json!(digest(&plan_json)),
    );
    Ok(b.finish())
}

/// A short digest of the plan (BLAKE2b, 128 bits, hex), shown on injected pods.
pub(crate) fn digest(plan_json: &str) -> String {
    let hash = blake2b_simd::Params::new()
        .hash_length(16)
        .hash(plan_json.as_bytes());
    hash.to_hex().to_string()
}
