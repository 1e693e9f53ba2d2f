//! End-to-end tests of what is particular to Google Cloud Storage, through the
//! `datamon-agent` CLI against fake-gcs-server behind the test proxy
//! (`datamon_e2e::gcs`): the emulator endpoint settings, create-only writes and their
//! races, credentials (none, a key file, the metadata server) and their errors, 403s
//! naming the permission, retries of transient answers and no retry of the others, and
//! the emulator stopped in the middle of a transfer. The round trips shared with the
//! other backends run on GCS too (`World::each` in bundle_store.rs and mount.rs).
//!
//! No request leaves the machine: every world's environment points the metadata server
//! and the store at loopback (`gcs::safe_env`), and each agent run checks it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::process::Stdio;
use std::time::Duration;

use datamon_e2e::gcs::{MetadataServer, Seen, METADATA_TOKEN};
use datamon_e2e::{
    list_files, noise, read_tree, wait_until, within_deadline, write_file, World, MIB,
};

/// Runs `args`, which must fail, and asserts that the error holds every piece of `says`;
/// returns the error.
fn refuses(w: &World, args: &[&str], says: &[&str]) -> String {
    let (_, err) = w.fails(args);
    for piece in says {
        assert!(err.contains(piece), "{args:?}: no {piece:?} in:\n{err}");
    }
    err
}

/// The requests the proxy saw for objects whose name ends with `suffix`.
fn seen_for(w: &mut World, suffix: &str) -> Vec<Seen> {
    w.gcs_server()
        .seen()
        .into_iter()
        .filter(|s| s.object.ends_with(suffix))
        .collect()
}

/// A GCS world whose later runs are not told about the emulator: the credentials path
/// of a real bucket (the store's base URL stays the proxy on loopback).
fn without_emulator(w: &mut World) {
    w.unset_env("STORAGE_EMULATOR_HOST");
}

/// A GCS world whose later runs see the store as a real bucket: no emulator setting,
/// and the proxy's HTTPS port standing for storage.googleapis.com (https only), its test
/// CA trusted through `SSL_CERT_FILE`. Forgets the requests seen so far.
fn as_a_real_bucket(w: &mut World) {
    without_emulator(w);
    let base = w.gcs_server().tls_endpoint();
    let ca = w.gcs_server().ca_file().display().to_string();
    w.set_env("GOOGLE_BASE_URL", &base);
    w.set_env("SSL_CERT_FILE", &ca);
    w.gcs_server().clear_seen();
}

#[test]
fn each_emulator_setting_reaches_the_emulator() {
    let mut w = World::gcs();
    w.create_repo("r", "d");
    let endpoint = w.gcs_server().endpoint();
    without_emulator(&mut w);
    // The agent's own variable and flag, beside STORAGE_EMULATOR_HOST (World::gcs).
    w.set_env("DATAMON_GCS_ENDPOINT", &endpoint);
    assert!(w.ok(&["repo", "list"]).starts_with("r , d , "));
    w.unset_env("DATAMON_GCS_ENDPOINT");
    let out = w.ok(&["repo", "list", "--gcs-endpoint", &endpoint]);
    assert!(out.starts_with("r , d , "), "{out}");
    // Unsigned, as Google's libraries talk to an emulator.
    let auth: Vec<_> = w
        .gcs_server()
        .seen()
        .into_iter()
        .filter_map(|s| s.authorization)
        .filter(|a| a.trim() != "Bearer")
        .collect();
    assert!(auth.is_empty(), "signed requests to the emulator: {auth:?}");
}

#[test]
fn create_only_documents_are_written_with_if_generation_match_0() {
    let mut w = World::gcs();
    let id = w.seed("r", &[("f.txt", b"hello".to_vec())]);
    let creates = [
        "contexts/dev/context.yaml".to_string(),
        "repos/r/repo.yaml".to_string(),
        format!("bundles/r/{id}/bundle.yaml"),
        format!("bundles/r/{id}/bundle-files-0.yaml"),
    ];
    for key in creates {
        let puts: Vec<_> = seen_for(&mut w, &key)
            .into_iter()
            .filter(|s| s.method == "PUT")
            .collect();
        assert_eq!(puts.len(), 1, "{key}: {puts:?}");
        assert_eq!(
            puts[0].if_generation_match.as_deref(),
            Some("0"),
            "{key} is not written create-only: {puts:?}"
        );
        assert_eq!(puts[0].status, 200, "{key}: {puts:?}");
    }
}

#[test]
fn racing_creates_of_one_repo_leave_one_winner_and_overwrite_nothing() {
    let mut w = World::gcs();
    let runs: Vec<_> = (0..6)
        .map(|i| {
            w.agent()
                .args(["repo", "create", "--repo", "r", "--description"])
                .arg(format!("writer-{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut winners = Vec::new();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.wait_with_output().unwrap();
        if out.status.success() {
            winners.push(i);
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("repo \"r\" already exists"), "{err}");
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let repos = w.ok(&["repo", "list"]);
    assert!(
        repos.starts_with(&format!("r , writer-{} , ", winners[0])),
        "the winner's description was overwritten: {repos}"
    );
    let refused = seen_for(&mut w, "repos/r/repo.yaml")
        .into_iter()
        .filter(|s| s.method == "PUT" && s.status == 412)
        .count();
    assert_eq!(refused, 5, "the losers' writes were not refused by 412");
}

#[test]
fn no_credentials_and_no_metadata_server_fail_at_once_with_the_fixes() {
    let mut w = World::gcs();
    without_emulator(&mut w);
    // World::gcs's metadata address is a closed loopback port.
    let w = std::sync::Arc::new(w);
    let w2 = w.clone();
    let err = within_deadline("the credentials check", move || {
        w2.fails(&["repo", "list"]).1
    });
    for piece in [
        "gs://config",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "--gcs-anonymous",
        "metadata server",
    ] {
        assert!(err.contains(piece), "no {piece:?} in:\n{err}");
    }
}

#[test]
fn a_missing_or_foreign_key_file_is_named_with_the_fix() {
    let mut w = World::gcs();
    without_emulator(&mut w);
    let missing = w.path("keys/missing.json");
    w.set_env("GOOGLE_APPLICATION_CREDENTIALS", missing.to_str().unwrap());
    refuses(
        &w,
        &["repo", "list"],
        &[
            "gs://config",
            missing.to_str().unwrap(),
            "cannot be read",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ],
    );
    let foreign = w.path("keys/key.json");
    write_file(&foreign, b"this is not a key\n");
    w.set_env("GOOGLE_APPLICATION_CREDENTIALS", foreign.to_str().unwrap());
    refuses(
        &w,
        &["repo", "list"],
        &[foreign.to_str().unwrap(), "not a Google credentials file"],
    );
}

#[test]
fn a_service_account_key_named_by_google_application_credentials_signs_every_request() {
    let mut w = World::gcs();
    w.create_repo("r", "d");
    as_a_real_bucket(&mut w);
    // A service-account key of a fresh RSA key: object_store signs its own JWT with it
    // (no token exchange, so nothing is asked of Google); the metadata server is a
    // closed port, so the key is the only way in.
    let pem = w.path("keys/private.pem");
    std::fs::create_dir_all(pem.parent().unwrap()).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "openssl genpkey failed: the test needs the openssl command (apt-get install openssl)"
    );
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "k1",
        "private_key": std::fs::read_to_string(&pem).unwrap(),
        "client_email": "sa@p.iam.gserviceaccount.com",
    });
    let key_file = w.path("keys/sa.json");
    write_file(&key_file, key.to_string().as_bytes());
    w.set_env("GOOGLE_APPLICATION_CREDENTIALS", key_file.to_str().unwrap());
    let out = w.ok(&["repo", "list"]);
    assert!(out.starts_with("r , d , "), "{out}");
    let seen = w.gcs_server().seen();
    assert!(!seen.is_empty());
    for s in seen {
        let jwt = s
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer ey"))
            .unwrap_or_else(|| panic!("not signed with a JWT: {s:?}"));
        assert_eq!(jwt.matches('.').count(), 2, "{s:?}");
    }
}

#[test]
fn the_metadata_servers_token_signs_every_request_when_nothing_else_is_set() {
    let metadata = MetadataServer::start().unwrap();
    let mut w = World::gcs();
    w.create_repo("r", "d");
    for k in ["GCE_METADATA_HOST", "GCE_METADATA_IP", "GCE_METADATA_ROOT"] {
        w.set_env(k, &metadata.host());
    }
    as_a_real_bucket(&mut w);
    let out = w.ok(&["repo", "list"]);
    assert!(out.starts_with("r , d , "), "{out}");
    let asked = metadata.asked();
    assert!(
        asked
            .iter()
            .any(|p| p == "/computeMetadata/v1/instance/service-accounts/default/token"),
        "the metadata server was not asked for a token: {asked:?}"
    );
    let seen = w.gcs_server().seen();
    assert!(!seen.is_empty());
    for s in seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {METADATA_TOKEN}").as_str()),
            "{s:?}"
        );
    }
}

#[test]
fn a_403_names_the_bucket_and_the_permission() {
    let mut w = World::gcs();
    w.create_repo("r", "d");
    w.gcs_server().deny(datamon_e2e::gcs::Deny::Writes);
    let err = refuses(
        &w,
        &["repo", "create", "--repo", "other", "--description", "d"],
        &[
            "permission denied to write gs://",
            "repos/other/repo.yaml",
            "storage.objects.create",
        ],
    );
    assert!(!err.contains("storage.objects.get"), "{err}");
    // Reads still work.
    assert!(w.ok(&["repo", "list"]).starts_with("r , d , "));
    w.gcs_server().deny(datamon_e2e::gcs::Deny::Everything);
    refuses(
        &w,
        &["repo", "list"],
        &[
            "permission denied to read gs://config/contexts/dev/context.yaml",
            "storage.objects.get",
        ],
    );
}

#[test]
fn transient_answers_are_retried_and_the_others_are_not() {
    let mut w = World::gcs();
    w.create_repo("r", "d");
    let key = "contexts/dev/context.yaml";
    for status in [503, 429] {
        w.gcs_server().clear_seen();
        w.gcs_server().fail_next(key, 2, status);
        assert!(w.ok(&["repo", "list"]).starts_with("r , d , "));
        let statuses: Vec<u16> = seen_for(&mut w, key).iter().map(|s| s.status).collect();
        assert_eq!(statuses, [status, status, 200], "{status}");
    }
    // A create-only write too: retried, and the retry is not taken for an existing object.
    w.gcs_server().fail_next("repos/w/repo.yaml", 2, 503);
    w.create_repo("w", "written");
    let statuses: Vec<u16> = seen_for(&mut w, "repos/w/repo.yaml")
        .iter()
        .filter(|s| s.method == "PUT")
        .map(|s| s.status)
        .collect();
    assert_eq!(statuses, [503, 503, 200]);
    for status in [400, 404] {
        w.gcs_server().clear_seen();
        w.gcs_server().fail_next(key, 1, status);
        w.fails(&["repo", "list"]);
        let statuses: Vec<u16> = seen_for(&mut w, key).iter().map(|s| s.status).collect();
        assert_eq!(statuses, [status], "a {status} was retried");
    }
}

/// Sets short retries, so that a stopped emulator fails a command in seconds.
fn short_retries(w: &mut World) {
    w.set_env("DATAMON_RETRIES", "2");
    w.set_env("DATAMON_RETRY_TIMEOUT_SECS", "3");
}

/// Runs the agent with `args` (two transfers at once) and stops the emulator once the
/// proxy answered a request that `first` (described by `what`) picks; the run must fail.
fn stopped_during(
    w: &mut World,
    args: &[&str],
    what: &str,
    first: impl Fn(&Seen) -> bool,
) -> std::process::Output {
    let run = w
        .agent()
        .args(args)
        .args(["--concurrency-factor", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(what, || w.gcs_server().seen().iter().any(&first));
    w.gcs_server().stop_emulator();
    let out = within_deadline("the agent", move || run.wait_with_output().unwrap());
    assert!(
        !out.status.success(),
        "{args:?} succeeded without its store"
    );
    out
}

#[test]
fn the_emulator_stopped_mid_upload_leaves_no_bundle() {
    let mut w = World::gcs();
    w.create_repo("r", "d");
    let src = w.path("src");
    for i in 0..24u64 {
        write_file(&src.join(format!("f{i}.bin")), &noise(MIB, i));
    }
    short_retries(&mut w);
    w.gcs_server().slow("PUT", Duration::from_millis(300));
    let src_text = src.to_string_lossy().into_owned();
    let upload: Vec<&str> = "bundle upload --repo r --message m --path"
        .split(' ')
        .chain([src_text.as_str()])
        .collect();
    let out = stopped_during(&mut w, &upload, "the first blob written", |s| {
        s.method == "PUT" && s.bucket == "dev-blob" && s.status == 200
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gs://dev-"), "{err}");
    w.gcs_server().start_emulator().unwrap();
    let list = w.ok(&["bundle", "list", "--repo", "r"]);
    assert_eq!(list.trim(), "", "a bundle is visible after a failed upload");
}

#[test]
fn the_emulator_stopped_mid_download_leaves_no_wrong_file() {
    let mut w = World::gcs();
    let src = w.path("src");
    for i in 0..12u64 {
        write_file(&src.join(format!("f{i}.bin")), &noise(3 * MIB, i));
    }
    w.create_repo("r", "d");
    let id = w.upload("r", &src, &[]);
    short_retries(&mut w);
    w.gcs_server().clear_seen();
    w.gcs_server().slow("GET", Duration::from_millis(300));
    let dest = w.path("out");
    let dest_text = dest.to_string_lossy().into_owned();
    let download = [
        "bundle",
        "download",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        &dest_text,
    ];
    let out = stopped_during(&mut w, &download, "the first leaf read", |s| {
        s.bucket == "dev-blob" && s.status == 200
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gs://dev-blob/"), "{err}");
    // Whatever is in place is a whole, good file; nothing half-written.
    let want = read_tree(&src);
    for p in list_files(&dest) {
        let name = p
            .strip_prefix(&dest)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let got = std::fs::read(&p).unwrap();
        let good = want.iter().any(|(n, b)| *n == name && *b == got);
        assert!(good, "{name} is not a whole file of the bundle");
    }
}
