//! The agent's Kubernetes Events (`events.enabled`): the `datamon-agent` binary against a
//! local store posts a core/v1 Event about its pod at each participant's end to an API
//! server over HTTPS on 127.0.0.1: `DataFailed` for an input whose label does not exist,
//! `DataReady` with the bundle id for one that downloads, `BundleSaved` with the new
//! bundle's id when the sidecar uploads what the wrapped application wrote (the wrapper
//! itself announces no success). An API server that cannot be reached changes nothing of
//! the outcome.
//!
//! The API server is the one stand-in here (no kube-apiserver runs on these machines): a
//! small HTTPS/1.1 server with a self-signed rcgen certificate, whose PEM is the CA file the
//! agent is given (`DATAMON_EVENTS__CA_FILE`); it answers `GET .../pods/<name>` (the pod's
//! uid) and records `POST .../events`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datamon_e2e::World;
use serde_json::{json, Value};

/// What the fake API server saw: (method, path, authorization, JSON body).
type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

const TOKEN: &str = "events-test-token";
const POD_UID: &str = "6f1d9a3e-0000-4000-8000-0000000000e7";

/// Starts the fake API server on 127.0.0.1; writes its certificate to `ca_file`; returns
/// its URL and what it sees.
fn fake_api_server(ca_file: &Path) -> (String, Seen) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(ca_file, cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into()),
            )
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let seen = Seen::default();
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            let (config, seen) = (config.clone(), recorded.clone());
            std::thread::spawn(move || {
                let mut tls = rustls::ServerConnection::new(config).unwrap();
                let mut socket = socket;
                let stream = rustls::Stream::new(&mut tls, &mut socket);
                let _ = answer_requests(stream, &seen);
            });
        }
    });
    (url, seen)
}

/// Answers HTTP/1.1 requests on one connection until the client closes it.
fn answer_requests(stream: impl Read + Write, seen: &Seen) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let (method, path) = (
            words.next().unwrap_or("").to_string(),
            words.next().unwrap_or("").to_string(),
        );
        let (mut length, mut auth) = (0, String::new());
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => auth = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, reply) = if method == "GET" && path.contains("/pods/") {
            (
                "200 OK",
                json!({"kind": "Pod", "metadata": {"uid": POD_UID}}),
            )
        } else {
            ("201 Created", body.clone())
        };
        seen.lock().unwrap().push((method, path, auth, body));
        let reply = reply.to_string();
        let out = reader.get_mut();
        write!(
            out,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        )?;
        out.flush()?;
    }
}

/// A world with the repo `raw` (one bundle, returned) and the agent's Events pointed at
/// `api` (the token and CA files in the world's directory), as pod `train-x7` in `team`.
fn world_with_events(api: &str, ca_file: &Path) -> (World, String) {
    let mut world = World::local();
    let id = world.seed("raw", &[("a.txt", b"hello".to_vec())]);
    let token_file = world.path("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    for (k, v) in [
        ("DATAMON_EVENTS__ENABLED", "true"),
        ("DATAMON_EVENTS__API_SERVER", api),
        ("DATAMON_EVENTS__CA_FILE", ca_file.to_str().unwrap()),
        ("DATAMON_EVENTS__TOKEN_FILE", token_file.to_str().unwrap()),
        ("POD_NAME", "train-x7"),
        ("POD_NAMESPACE", "team"),
    ] {
        world.set_env(k, v);
    }
    (world, id)
}

/// The plan of a pod in the world's directory `pod/` whose one sidecar `datamon` has
/// `inputs` and `outputs` (plan entries); the plan and the termination message's path.
fn plan(world: &World, inputs: Value, outputs: Value) -> (Value, PathBuf) {
    let dir = world.path("pod");
    std::fs::create_dir_all(&dir).unwrap();
    let termination = dir.join("termination-log");
    let names = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].clone())
            .collect()
    };
    let sidecar = json!({
        "name": "datamon", "inputs": names(&inputs), "outputs": names(&outputs),
        "lifecycle": "classic"
    });
    let plan = json!({
        "version": 1,
        "coordination": dir.join("run"),
        "termination_message": termination,
        "inputs": inputs,
        "outputs": outputs,
        "sidecars": [sidecar],
        "deadlines": {"ready": "30s", "start": "30s", "upload": "30s", "grace": "2s"}
    });
    (plan, termination)
}

/// The fake API server (its CA in a scratch directory, returned to keep) and a world
/// whose agent posts Events to it ([`world_with_events`]), with the bundle of `raw`.
fn start() -> (tempfile::TempDir, Seen, World, String) {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.crt");
    let (api, seen) = fake_api_server(&ca);
    let (world, id) = world_with_events(&api, &ca);
    (tmp, seen, world, id)
}

/// Runs `datamon-agent <args>` with `plan`; its exit code and termination message.
fn run(world: &World, plan: &(Value, PathBuf), args: &[&str]) -> (i32, Value) {
    let out = world
        .agent()
        .env("DATAMON_PLAN", plan.0.to_string())
        .args(args)
        .output()
        .unwrap();
    let message = std::fs::read_to_string(&plan.1).unwrap_or_default();
    let message = serde_json::from_str(&message).unwrap_or_else(|_| {
        panic!(
            "no termination message; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), message)
}

/// Runs the sidecar on a download-only plan of the input `raw` (`selector`: `label: ...`
/// or `bundle: ...`); its exit code and termination message.
fn run_sidecar(world: &World, selector: (&str, &str)) -> (i32, Value) {
    let mut input =
        json!({"name": "raw", "repo": "raw", "path": world.path("pod/raw"), "mode": "download"});
    input[selector.0] = json!(selector.1);
    let plan = plan(world, json!([input]), json!([]));
    run(world, &plan, &["sidecar", "--participant", "datamon"])
}

/// The Events posted, in order.
fn events(seen: &Seen) -> Vec<(String, String, Value)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(method, path, _, _)| method == "POST" && path.ends_with("/events"))
        .map(|(_, path, auth, body)| (path.clone(), auth.clone(), body.clone()))
        .collect()
}

#[test]
fn a_failed_input_is_a_warning_event_about_the_pod() {
    let (_tmp, seen, world, _) = start();

    let (code, message) = run_sidecar(&world, ("label", "no-such-label"));
    assert_eq!(code, 1, "{message}");
    assert_eq!(message["reason"]["code"], "input_failed", "{message}");

    let posted = events(&seen);
    assert_eq!(posted.len(), 1, "{posted:?}");
    let (path, auth, event) = &posted[0];
    assert_eq!(path, "/api/v1/namespaces/team/events");
    assert_eq!(auth, &format!("Bearer {TOKEN}"));
    assert_eq!(event["reason"], "DataFailed", "{event}");
    assert_eq!(event["type"], "Warning");
    // The uid was read from the API server (no POD_UID given).
    assert_eq!(
        event["involvedObject"],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "train-x7", "namespace": "team", "uid": POD_UID})
    );
    let text = event["message"].as_str().unwrap();
    assert!(text.starts_with("datamon: input_failed: "), "{text}");
    assert!(text.contains("no-such-label"), "{text}");
    // The termination message's reason, word for word.
    let reason = message["reason"]["message"].as_str().unwrap();
    assert_eq!(text, format!("datamon: input_failed: {reason}"));
    assert_eq!(event["source"]["component"], "datamon-agent");
}

#[test]
fn a_provided_input_is_a_normal_event_with_its_bundle() {
    let (_tmp, seen, mut world, id) = start();
    world.set_env("POD_UID", "uid-from-the-downward-api");

    let (code, message) = run_sidecar(&world, ("bundle", &id));
    assert_eq!(code, 0, "{message}");
    assert_eq!(message["inputs"]["raw"], id.as_str());
    assert_eq!(
        std::fs::read(world.path("pod/raw/a.txt")).unwrap(),
        b"hello"
    );

    let posted = events(&seen);
    assert_eq!(posted.len(), 1, "{posted:?}");
    let event = &posted[0].2;
    assert_eq!(event["reason"], "DataReady", "{event}");
    assert_eq!(event["type"], "Normal");
    assert_eq!(
        event["message"],
        format!("datamon: inputs provided: raw={id}")
    );
    assert_eq!(event["involvedObject"]["uid"], "uid-from-the-downward-api");
    // With POD_UID given, the pod is not read.
    assert!(!seen.lock().unwrap().iter().any(|(m, _, _, _)| m == "GET"));
}

#[test]
fn an_unreachable_api_server_changes_nothing_of_the_outcome() {
    let (_tmp, _seen, mut world, id) = start();
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    world.set_env("DATAMON_EVENTS__API_SERVER", &url);
    let (code, message) = run_sidecar(&world, ("bundle", &id));
    assert_eq!(code, 0, "{message}");
    assert_eq!(message["inputs"]["raw"], id.as_str());
}

#[test]
fn a_saved_output_is_a_normal_event_with_the_new_bundle() {
    let (_tmp, seen, mut world, _) = start();
    world.set_env("POD_UID", "uid-1");
    world.create_repo("models", "test");
    let out = world.path("pod/out");
    let outputs = json!([{"name": "model", "repo": "models", "path": out, "message": "trained"}]);
    let plan = plan(&world, json!([]), outputs);

    // The sidecar and the application's wrapper, as the pod's two containers (each with a
    // termination message of its own).
    let sidecar_log = world.path("pod/sidecar-termination-log");
    let mut sidecar = world.agent();
    sidecar
        .env("DATAMON_PLAN", plan.0.to_string())
        .env("DATAMON_PLAN__TERMINATION_MESSAGE", &sidecar_log)
        .args(["sidecar", "--participant", "datamon"]);
    let sidecar = std::thread::spawn(move || sidecar.output().unwrap());
    let script = format!("mkdir -p {0} && echo weights > {0}/w.bin", out.display());
    let (code, app) = run(&world, &plan, &["wrap", "--", "sh", "-c", &script]);
    assert_eq!(code, 0, "{app}");
    let sidecar = sidecar.join().unwrap();
    assert!(
        sidecar.status.success(),
        "{}",
        String::from_utf8_lossy(&sidecar.stderr)
    );
    let bundles = world.bundles("models");
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    let told: Value = serde_json::from_slice(&std::fs::read(&sidecar_log).unwrap()).unwrap();
    assert_eq!(told["outputs"]["model"], bundles[0].as_str());

    // One Event: the sidecar's (the wrapper announces no success).
    let posted = events(&seen);
    assert_eq!(posted.len(), 1, "{posted:?}");
    let event = &posted[0].2;
    assert_eq!(event["reason"], "BundleSaved", "{event}");
    assert_eq!(event["type"], "Normal");
    assert_eq!(
        event["message"],
        format!("datamon: bundles saved: model={}", bundles[0])
    );
}
