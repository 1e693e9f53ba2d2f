//! The demo's steps: the store's data, the webhook, the sample Job's pod admitted and run
//! from the images with its timeline, the result read back from the store, and the two
//! failures.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::describe;
use super::images::{self, APP_IMAGE};
use super::store::Store;
use super::timeline::{size, Timeline};
use super::webhook::{review, Images, Webhook};
use super::{check_interrupt, section, DemoError, Summary};
use crate::pod::{Phase, PodReport, PodRunner};
use crate::{noise, postgres as pg, DEADLINE, MIB};

/// The namespace of the demo's pods.
const NAMESPACE: &str = "analytics";
/// How often the coordination directory is looked at.
const POLL: Duration = Duration::from_millis(200);
/// Where the old PostgreSQL build is in the agent's container (a default build root).
const PG12_IN_IMAGE: &str = "/opt/datamon-postgres/12";

/// The image archives the pods run.
pub struct Archives {
    agent: PathBuf,
    agent_postgres: PathBuf,
}

impl Archives {
    /// The built agent images, which must exist (`just images`).
    pub fn find() -> Result<Self, DemoError> {
        Ok(Self {
            agent: images::built("datamon-agent")?,
            agent_postgres: images::built("datamon-agent-postgres")?,
        })
    }
}

/// A pod the demo ran.
#[derive(Debug)]
pub struct Ran {
    /// The runner's report.
    pub report: PodReport,
    /// The timeline's lines.
    pub timeline: Vec<String>,
    /// The output bundle made (none when the pod failed).
    pub output: Option<String>,
    /// The files the application wrote to its output (name, bytes), as it wrote them.
    pub wrote: Vec<(String, Vec<u8>)>,
    /// The output bundle's files, read back from the store.
    pub saved: Vec<(String, Vec<u8>)>,
    /// The database's new bundle, if saved.
    pub database: Option<String>,
    /// Its `pg_version`, read back from the store.
    pub database_pg_version: Option<String>,
    /// Bundles of the output repo before and after the pod.
    pub results_before: usize,
    /// After.
    pub results_after: usize,
    /// Whether the application's command ran.
    pub app_ran: bool,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io(format!("create {}", d.display())))?;
    }
    std::fs::write(path, bytes).map_err(io(format!("write {}", path.display())))
}

fn sh(cmd: &mut Command) -> Result<(), DemoError> {
    let out = cmd.output().map_err(io(format!("run {cmd:?}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(DemoError::Step {
        step: format!("{cmd:?}"),
        detail: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The demo's data: what the store holds and what the app should write from it.
struct Data {
    /// What each input of the Job holds, for people.
    sizes: BTreeMap<String, String>,
    index: Vec<u8>,
    photo: Vec<u8>,
    images: usize,
}

fn seed(store: &Store, root: &Path) -> Result<Data, DemoError> {
    section("a local-directory store with a sample repo, bundles and a PostgreSQL 12 bundle");
    println!(
        "store: {}/store (DATAMON_GLOBAL_CONFIG=file://{}/store/config)",
        root.display(),
        root.display()
    );
    let tables = root.join("data/tables");
    let index = b"id,name\n1,north\n2,south\n3,east\n".to_vec();
    write(&tables.join("big.parquet"), &noise(20 * MIB, 1))?;
    write(&tables.join("index.csv"), &index)?;
    store.create_repo("tables", "sample tables")?;
    let id = store.upload("tables", &tables, "v1")?;
    println!("repo tables  bundle {id} (label v1): big.parquet 20.0 MiB, index.csv: to download");
    let imgs = root.join("data/images");
    let images = 40;
    let mut image_bytes = 0;
    for i in 0..images - 1 {
        let bytes = noise(20_000 + i * 1000, i as u64 + 7);
        image_bytes += bytes.len();
        write(&imgs.join(format!("img{i:03}.bin")), &bytes)?;
    }
    let photo = noise(4 * MIB + 5, 99);
    image_bytes += photo.len();
    write(&imgs.join("photo.bin"), &photo)?;
    store.create_repo("images", "sample images")?;
    let id = store.upload("images", &imgs, "v1")?;
    let image_size = super::timeline::size(image_bytes as f64);
    println!("repo images  bundle {id} (label v1): {images} files, {image_size}: to mount (FUSE)");
    let old = pg::tempdir();
    let bundle = old.path().join("bundle");
    pg::old_datamon_bundle(&bundle);
    store.create_repo("pg-ledger", "the ledger database")?;
    let id = store.upload("pg-ledger", &bundle, "pg12")?;
    let rows = pg::OLD_ROWS_BEFORE_CHECKPOINT + pg::OLD_ROWS_AFTER_CHECKPOINT;
    println!("repo pg-ledger  bundle {id} (label pg12): PostgreSQL 12 data directory as datamon's old sidecar left it ({rows} rows, stopped -m immediate)");
    store.create_repo("results", "job outputs")?;
    println!("repo results: the job's output goes here");
    let sizes = BTreeMap::from([
        ("tables".to_string(), "20.0 MiB, 2 files".to_string()),
        (
            "images".to_string(),
            format!("{image_size}, {images} files"),
        ),
        ("ledger".to_string(), "PostgreSQL 12".to_string()),
    ]);
    Ok(Data {
        sizes,
        index,
        photo,
        images,
    })
}

/// What the PostgreSQL 12 build links that the agent-postgres image lacks: the C++ runtime
/// (its ICU) and glibc's pre-2.34 stubs (the image's builds need none of them).
const HOST_LIBS_FOR_PG12: [&str; 4] = [
    "libstdc++.so.6",
    "libpthread.so.0",
    "librt.so.1",
    "libdl.so.2",
];

/// A copy of the PostgreSQL 12 build for the agent's container, with the host libraries it
/// needs beside its own (found by its `$ORIGIN/../lib`): the agent-postgres image has 18 and
/// 14, and a cluster would use an image with 12.
fn pg12_for_image(root: &Path) -> Result<PathBuf, DemoError> {
    let dest = root.join("pg12");
    let build = pg::Build::major(12);
    let from = build.bin.parent().unwrap_or(&build.bin).to_path_buf();
    sh(Command::new("cp").arg("-a").arg(&from).arg(&dest))?;
    for lib in HOST_LIBS_FOR_PG12 {
        sh(Command::new("cp")
            .arg("-L")
            .arg(Path::new("/usr/lib/x86_64-linux-gnu").join(lib))
            .arg(dest.join("lib")))?;
    }
    sh(Command::new("chmod").args(["-R", "a+rX"]).arg(&dest))?;
    Ok(dest)
}

/// The Job's pod as its controller creates it: opted in, with the data as annotations.
fn job_pod(name: &str, annotations: Value, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NAMESPACE,
            "labels": {"datamon.io/inject": "true", "job-name": name.rsplit_once('-').map_or(name, |p| p.0)},
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "containers": [{"name": "report", "image": APP_IMAGE, "command": ["sh", "-c", script]}],
        },
    })
}

/// The annotations every demo pod has: the store and short deadlines.
fn base_annotations(store: &Store) -> serde_json::Map<String, Value> {
    let mut a = serde_json::Map::new();
    a.insert(
        "datamon.io/config".into(),
        json!(format!("file://{}/store/config", store.root.display())),
    );
    a.insert(
        "datamon.io/deadlines".into(),
        json!("{ready: 60s, start: 60s, upload: 60s, grace: 5s}"),
    );
    a
}

/// The names of the containers of `pod` (init containers first).
fn containers(pod: &Value) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// Sends `pod` through `/mutate`: the patched pod, or the denial's message.
fn admit(webhook: &Webhook, pod: &Value, uid: &str) -> Result<Result<Value, String>, DemoError> {
    let answer = webhook.mutate(&review(uid, NAMESPACE, pod))?;
    let response = &answer["response"];
    println!(
        "AdmissionReview uid {}: allowed {}",
        response["uid"].as_str().unwrap_or("?"),
        response["allowed"]
    );
    if response["allowed"] != json!(true) {
        return Ok(Err(response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()));
    }
    let text = response["patch"].as_str().unwrap_or("");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| DemoError::Step {
            step: "decode the webhook's patch".into(),
            detail: e.to_string(),
        })?;
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).map_err(|e| DemoError::Step {
        step: "read the webhook's JSON Patch".into(),
        detail: e.to_string(),
    })?;
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).map_err(|e| DemoError::Step {
        step: "apply the webhook's JSON Patch".into(),
        detail: e.to_string(),
    })?;
    let before = containers(pod);
    let added: Vec<String> = containers(&patched)
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    println!(
        "patch: {} operations ({}); containers added: {}",
        patch.0.len(),
        response["patchType"].as_str().unwrap_or("?"),
        added.join(", ")
    );
    Ok(Ok(patched))
}

/// [`admit`], which must patch the pod (`what` names it in the error).
fn admitted(webhook: &Webhook, pod: &Value, uid: &str, what: &str) -> Result<Value, DemoError> {
    admit(webhook, pod, uid)?.map_err(|message| DemoError::Step {
        step: what.to_string(),
        detail: format!("denied: {message}"),
    })
}

/// Adds what stands in for a cluster here: the store's directory at the same path in every
/// container (a bucket would be a network address), and `extra` mounts (volume name, host
/// path, path in the container, container).
fn host_paths(pod: &mut Value, store: &Store, extra: &[(&str, &Path, &str, &str)]) {
    let root = store.root.display().to_string();
    let mut volumes = vec![json!({"name": "demo-store", "hostPath": {"path": root}})];
    for (name, host, _, _) in extra {
        volumes.push(json!({"name": name, "hostPath": {"path": host.display().to_string()}}));
    }
    if let Some(v) = pod["spec"]["volumes"].as_array_mut() {
        v.extend(volumes);
    }
    for key in ["initContainers", "containers"] {
        for c in pod["spec"][key].as_array_mut().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("").to_string();
            let mut mounts = vec![json!({"name": "demo-store", "mountPath": root})];
            for (vol, _, at, only) in extra {
                if *only == name {
                    mounts.push(json!({"name": vol, "mountPath": at, "readOnly": true}));
                }
            }
            match c["volumeMounts"].as_array_mut() {
                Some(m) => m.extend(mounts),
                None => c["volumeMounts"] = Value::Array(mounts),
            }
        }
    }
}

/// The volume that container `container` of `pod` mounts at `path`.
fn volume_at(pod: &Value, container: &str, path: &str) -> Option<String> {
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == container)?["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["mountPath"] == path)?["name"]
        .as_str()
        .map(str::to_string)
}

/// The image of each container of `pod`.
fn image_of(pod: &Value) -> impl Fn(&str) -> String + '_ {
    move |name| {
        ["initContainers", "containers"]
            .iter()
            .filter_map(|k| pod["spec"][k].as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .and_then(|c| c["image"].as_str())
            .unwrap_or("?")
            .to_string()
    }
}

/// What [`run_pod`] saw.
struct PodRun {
    report: PodReport,
    timeline: Vec<String>,
    /// The application's output files, read as it left them.
    wrote: Vec<(String, Vec<u8>)>,
}

/// Runs `pod` from the images, printing its timeline (`sizes`: what each input holds).
fn run_pod(
    pod: &Value,
    store: &Store,
    workdir: &Path,
    archives: &Archives,
    app: &Path,
    out_volume: Option<&str>,
    sizes: &BTreeMap<String, String>,
) -> Result<PodRun, DemoError> {
    let parsed = serde_json::from_value(pod.clone()).map_err(|e| DemoError::Step {
        step: "read the patched pod".into(),
        detail: e.to_string(),
    })?;
    let mut runner = PodRunner::new(parsed)
        .workdir(workdir)
        .oci_image(images::reference("datamon-agent"), &archives.agent)
        .oci_image(
            images::reference("datamon-agent-postgres"),
            &archives.agent_postgres,
        )
        .oci_image(APP_IMAGE, app)
        .grace(Duration::from_secs(5))
        .restart_backoff(Duration::from_millis(200));
    for (k, v) in store.env() {
        runner = runner.env(k.clone(), v.clone());
    }
    let t0 = Instant::now();
    let running = runner.start()?;
    let run_dir = running
        .volume_dir("datamon-run")
        .ok_or_else(|| DemoError::Step {
            step: "find the coordination volume".into(),
            detail: "the patched pod has no volume datamon-run".into(),
        })?;
    let out_dir = out_volume.and_then(|v| running.volume_dir(v));
    let names = containers(pod);
    let logs = workdir.join("logs");
    let mut timeline = Timeline::default();
    timeline.sizes = sizes.clone();
    let mut wrote = Vec::new();
    println!(
        "TIMELINE (datamon-agent status --dir {} --output json, every {} ms)",
        run_dir.display(),
        POLL.as_millis()
    );
    println!("participants: datamon (the agent's container), app (the wrapper in container report); container starts from the runner");
    let until = t0 + DEADLINE;
    loop {
        if super::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = running.terminate();
            let _ = running.wait(Duration::from_secs(15));
            return Err(DemoError::Interrupted);
        }
        let at = t0.elapsed();
        for c in &names {
            if logs.join(format!("{c}.log")).exists() {
                if let Some(e) = timeline.container_started(at, c) {
                    println!("{e}");
                }
            }
        }
        let snapshot = store.status(&run_dir);
        if let Some(s) = &snapshot {
            for e in timeline.observe(at, s) {
                println!("{e}");
            }
        }
        if let Some(d) = &out_dir {
            if wrote.is_empty() {
                wrote = finished_output(snapshot.as_ref(), d);
            }
        }
        if snapshot.as_ref().is_some_and(all_final) || Instant::now() >= until {
            break;
        }
        std::thread::sleep(POLL);
    }
    let report = running.wait(
        until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(15)),
    )?;
    let at = t0.elapsed();
    for c in report.init_containers.iter().chain(&report.containers) {
        let how = match (c.exit_code, c.signal) {
            (Some(code), _) => format!("container exited {code}"),
            (None, Some(s)) => format!("container killed (signal {s})"),
            (None, None) => "container never started".to_string(),
        };
        println!("{}", timeline.note(at, &c.name, how));
    }
    let timeline = timeline.events.iter().map(|e| e.to_string()).collect();
    Ok(PodRun {
        report,
        timeline,
        wrote,
    })
}

/// The application's output files, read once the application has exited (before the
/// volume goes away with the pod).
fn finished_output(snapshot: Option<&Value>, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let exited = snapshot
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| p["name"] == "app" && p["phase"] == "exited");
    if exited && dir.is_dir() {
        crate::read_tree(dir)
    } else {
        Vec::new()
    }
}

/// Whether every participant has nothing left to do.
fn all_final(snapshot: &Value) -> bool {
    let ps = snapshot.as_array().cloned().unwrap_or_default();
    !ps.is_empty()
        && ps.iter().all(|p| {
            matches!(
                p["phase"].as_str(),
                Some("done" | "failed" | "exited" | "died")
            )
        })
        && !ps
            .iter()
            .any(|p| p["phase"] == "exited" && p["name"] != "app")
        && ps.iter().any(|p| p["name"] == "app")
}

/// The whole demo in `root`.
pub fn demo(
    root: &Path,
    agent: &Path,
    webhook_bin: &Path,
    archives: &Archives,
) -> Result<Summary, DemoError> {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
        .map_err(io("open the work directory to the containers' users"))?;
    let store_root = root.join("world");
    std::fs::create_dir_all(&store_root).map_err(io("create the store's directory"))?;
    let store = Store::create(agent, &store_root)?;
    let data = seed(&store, &store_root)?;
    check_interrupt()?;
    let pg12 = pg12_for_image(root)?;
    let app = images::app_image(&root.join("app-image"))?;
    // The agent runs as 65532 in pods without a mount: it reads the store and writes its HOME.
    sh(Command::new("chmod").args(["-R", "a+rwX"]).arg(&store_root))?;
    check_interrupt()?;

    section("the webhook: datamon-webhook certs, then serve over HTTPS on 127.0.0.1");
    let agent_ref = images::reference("datamon-agent");
    let pg_ref = images::reference("datamon-agent-postgres");
    let webhook = Webhook::start(
        webhook_bin,
        root,
        &Images {
            agent: &agent_ref,
            agent_postgres: &pg_ref,
        },
    )?;
    println!(
        "certificates: {}/certs (ca.crt, tls.crt, tls.key)",
        root.display()
    );
    println!(
        "serving {} : /readyz says 200; log {}",
        webhook.url("/mutate"),
        webhook.log.display()
    );
    println!("injects {agent_ref} and {pg_ref}");

    let job = job(&store, &webhook, root, archives, &app, &pg12, &data)?;
    check_interrupt()?;

    section("failure 1: a bad annotation, denied by the webhook");
    let mut a = base_annotations(&store);
    a.insert(
        "datamon.io/input.tables".into(),
        json!("{repo: tables, label: v1, path: /data/tables, mode: stream}"),
    );
    let bad = job_pod(
        "typo-report-q9z4t",
        Value::Object(a),
        "cat /data/tables/index.csv",
    );
    println!("datamon.io/input.tables: \"{{repo: tables, label: v1, path: /data/tables, mode: stream}}\"");
    let denied = match admit(&webhook, &bad, "demo-denied")? {
        Err(message) => message,
        Ok(_) => {
            return Err(DemoError::Step {
                step: "failure 1".into(),
                detail: "the webhook admitted an input with mode: stream".into(),
            })
        }
    };
    println!(
        "$ kubectl describe job typo-report\n{}",
        describe::denied_job("typo-report", &denied)
    );
    check_interrupt()?;

    section("failure 2: an input whose label does not exist");
    let missing_label = missing_label(&store, &webhook, root, archives, &app)?;
    Ok(Summary {
        job,
        denied,
        missing_label,
    })
}

fn job(
    store: &Store,
    webhook: &Webhook,
    root: &Path,
    archives: &Archives,
    app: &Path,
    pg12: &Path,
    data: &Data,
) -> Result<Ran, DemoError> {
    section("a Job's pod: one downloaded input, one mounted input, a database from PostgreSQL 12, one output");
    let mut a = base_annotations(store);
    for (k, v) in [
        ("datamon.io/input.tables", "{repo: tables, label: v1, path: /data/tables}".to_string()),
        ("datamon.io/input.images", "{repo: images, label: v1, path: /mnt/datamon/images, mode: mount}".to_string()),
        ("datamon.io/database.ledger", format!(
            "{{source: {{repo: pg-ledger, label: pg12}}, port: {}, output: {{repo: pg-ledger, label: migrated, message: ledger on 18}}}}",
            pg::free_port()
        )),
        ("datamon.io/output.report", "{repo: results, path: /data/out, message: nightly report, label: latest}".to_string()),
    ] {
        a.insert(k.into(), json!(v));
    }
    let script = "set -e; mkdir -p /data/out; cp /data/tables/index.csv /data/out/index.csv; \
                  ls /mnt/datamon/images | wc -l > /data/out/image-count; \
                  cp /mnt/datamon/images/photo.bin /data/out/photo.bin; sleep 1; echo report written";
    let pod = job_pod("nightly-report-x7k2p", Value::Object(a), script);
    println!(
        "{}",
        serde_norway::to_string(&pod).unwrap_or_default().trim_end()
    );
    println!("\n$ POST {}", webhook.url("/mutate"));
    let mut patched = admitted(webhook, &pod, "demo-job", "admit the Job's pod")?;
    host_paths(
        &mut patched,
        store,
        &[("demo-pg12", pg12, PG12_IN_IMAGE, "datamon")],
    );
    println!(
        "(for this machine: the store's directory mounted in every container, and PostgreSQL 12 at {PG12_IN_IMAGE} in the agent)"
    );

    section("the pod from the images on the pod runner (runc)");
    let before = store.bundles("results")?.len();
    let workdir = root.join("pod-job");
    let out_volume = volume_at(&patched, "report", "/data/out");
    let PodRun {
        report,
        timeline,
        wrote,
    } = run_pod(
        &patched,
        store,
        &workdir,
        archives,
        app,
        out_volume.as_deref(),
        &data.sizes,
    )?;
    let message: Value = report
        .container("datamon")
        .and_then(|c| serde_json::from_str(&c.termination_message).ok())
        .unwrap_or(Value::Null);
    let output = message["outputs"]["report"].as_str().map(str::to_string);
    let database = message["outputs"]["ledger"].as_str().map(str::to_string);

    section("the result");
    println!("pod {:?}", report.phase);
    let run_dir = workdir.join("volumes/datamon-run").display().to_string();
    println!("$ datamon-agent status --dir {run_dir}");
    match store.agent_ok(&["status", "--dir", &run_dir]) {
        Ok(text) => print!("{text}"),
        Err(e) => println!("(status: {e})"),
    }
    let mut saved = Vec::new();
    if let Some(id) = &output {
        let dest = root.join("check-report");
        store.download("results", id, &dest)?;
        saved = crate::read_tree(&dest);
        println!("output report: bundle {id} in repo results, read back from the store:");
        for (name, bytes) in &saved {
            println!("  {name:<12} {}", size(bytes.len() as f64));
        }
        let want_count = format!("{}\n", data.images);
        let same = saved
            .iter()
            .any(|(n, b)| n == "photo.bin" && *b == data.photo)
            && saved
                .iter()
                .any(|(n, b)| n == "index.csv" && *b == data.index)
            && saved
                .iter()
                .any(|(n, b)| n == "image-count" && b.as_slice() == want_count.as_bytes());
        println!(
            "  the bytes are those of the inputs the app read: {}",
            if same { "yes" } else { "NO" }
        );
    }
    let mut database_pg_version = None;
    if let Some(id) = &database {
        let dest = root.join("check-ledger");
        let d = dest.display().to_string();
        store.agent_ok(&[
            "bundle",
            "download",
            "--repo",
            "pg-ledger",
            "--bundle",
            id,
            "--destination",
            &d,
            "--name-filter",
            "^pg_version$",
        ])?;
        let v = std::fs::read_to_string(dest.join("pg_version"))
            .map_err(io("read the saved pg_version"))?;
        println!(
            "database ledger: bundle {id} in repo pg-ledger (label migrated), pg_version {}",
            v.trim()
        );
        database_pg_version = Some(v.trim().to_string());
    }
    if report.phase != Phase::Succeeded {
        println!(
            "{}",
            describe::pod("nightly-report-x7k2p", &report, &image_of(&patched))
        );
    }
    println!("where to look:");
    println!(
        "  the work dir      {} (removed at the end unless --keep)",
        root.display()
    );
    println!(
        "  container logs    {}/logs/<container>.log",
        workdir.display()
    );
    println!("  the pod's status  datamon-agent status --dir {}/volumes/datamon-run  (in a cluster: kubectl exec POD -c datamon -- datamon-agent status)", workdir.display());
    println!("  the store         DATAMON_GLOBAL_CONFIG=file://{}/store/config datamon-agent bundle list --repo results", store.root.display());
    let after = store.bundles("results")?.len();
    Ok(Ran {
        report,
        timeline,
        output,
        wrote,
        saved,
        database,
        database_pg_version,
        results_before: before,
        results_after: after,
        app_ran: true,
    })
}

fn missing_label(
    store: &Store,
    webhook: &Webhook,
    root: &Path,
    archives: &Archives,
    app: &Path,
) -> Result<Ran, DemoError> {
    let mut a = base_annotations(store);
    a.insert(
        "datamon.io/input.tables".into(),
        json!("{repo: tables, label: v7, path: /data/tables}"),
    );
    a.insert(
        "datamon.io/output.report".into(),
        json!("{repo: results, path: /data/out, message: never}"),
    );
    let marker = store.root.join("the-app-ran");
    let script = format!("touch {}; ls /data/tables", marker.display());
    let pod = job_pod("weekly-report-m2d8w", Value::Object(a), &script);
    println!("datamon.io/input.tables: \"{{repo: tables, label: v7, path: /data/tables}}\"   (tables has only v1)");
    let mut patched = admitted(webhook, &pod, "demo-missing", "admit the pod of failure 2")?;
    host_paths(&mut patched, store, &[]);
    let before = store.bundles("results")?.len();
    let t0 = Instant::now();
    let PodRun {
        report, timeline, ..
    } = run_pod(
        &patched,
        store,
        &root.join("pod-missing"),
        archives,
        app,
        None,
        &BTreeMap::new(),
    )?;
    println!("\nthe pod ended in {:.1}s", t0.elapsed().as_secs_f64());
    println!(
        "$ kubectl describe pod weekly-report-m2d8w\n{}",
        describe::pod("weekly-report-m2d8w", &report, &image_of(&patched))
    );
    let app_ran = marker.exists();
    let after = store.bundles("results")?.len();
    println!(
        "the app ran: {}; new bundles in results: {}",
        if app_ran { "yes" } else { "no" },
        after - before
    );
    Ok(Ran {
        report,
        timeline,
        output: None,
        wrote: Vec::new(),
        saved: Vec::new(),
        database: None,
        database_pg_version: None,
        results_before: before,
        results_after: after,
        app_ran,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_over_once_the_app_and_every_sidecar_are_final() {
        let over =
            json!([{"name": "datamon", "phase": "done"}, {"name": "app", "phase": "exited"}]);
        assert!(all_final(&over));
        let uploading =
            json!([{"name": "datamon", "phase": "uploading"}, {"name": "app", "phase": "exited"}]);
        assert!(!all_final(&uploading));
        let no_app_yet = json!([{"name": "datamon", "phase": "failed"}]);
        assert!(!all_final(&no_app_yet));
        assert!(!all_final(&json!([])));
        let pod = json!({"spec": {"containers": [{"name": "report",
            "volumeMounts": [{"name": "datamon-report", "mountPath": "/data/out"}]}]}});
        assert_eq!(
            volume_at(&pod, "report", "/data/out").as_deref(),
            Some("datamon-report")
        );
        assert_eq!(volume_at(&pod, "report", "/elsewhere"), None);
    }
}
