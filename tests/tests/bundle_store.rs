//! End-to-end tests of the bundle store through the `datamon-agent` CLI, on a local
//! directory, on a real S3-protocol server started by the test, and (where a test runs on
//! `World::each`) on the GCS emulator behind the test proxy.

#![allow(clippy::unwrap_used)] // a test stops at its first failed step

use std::path::PathBuf;
use std::time::{Duration, Instant};

use datamon_e2e::{
    download_args, list_files, noise, read_tree, sample_tree, write_file, World, MIB,
};

/// A command that must fail: its arguments, its exit code when that matters, and pieces
/// its error must hold.
type Refusal<'a> = (&'a [&'a str], Option<i32>, &'a [&'a str]);

/// Runs the agent with `args`, which must fail (with `code`, when given) with an error
/// that holds every piece of `says`.
fn refuses(w: &World, args: &[&str], code: Option<i32>, says: &[&str]) {
    let (got, err) = w.fails(args);
    if let Some(code) = code {
        assert_eq!(got, code, "[{}] {args:?}: {err}", w.name());
    }
    for piece in says {
        assert!(
            err.contains(piece),
            "[{}] {args:?}: no {piece:?} in:\n{err}",
            w.name()
        );
    }
}

/// Runs each row of `cases` through [`refuses`].
fn refused(w: &World, cases: &[Refusal<'_>]) {
    for (args, code, says) in cases {
        refuses(w, args, *code, says);
    }
}

/// The arguments of downloading bundle `id` of `repo` to `dest`, then `extra`.
fn download_id<'a>(repo: &'a str, id: &'a str, dest: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = download_args(repo, dest, &["--bundle", id]);
    args.extend_from_slice(extra);
    args
}

/// A fresh path under the world's scratch directory, and its text.
fn dest_of(w: &World, name: &str) -> (PathBuf, String) {
    let p = w.path(name);
    let text = p.to_string_lossy().into_owned();
    (p, text)
}

#[test]
fn round_trip_of_edge_sizes_on_every_backend() {
    for w in World::each() {
        let src = w.path("src");
        sample_tree(&src);
        w.create_repo("data", "test data");
        let id = w.upload("data", &src, &["--label", "v1"]);

        for (how, extra) in [
            ("id", vec!["--bundle", id.as_str()]),
            ("label", vec!["--label", "v1"]),
            ("latest", vec![]),
        ] {
            let dest = w.path(&format!("out-{how}"));
            let out = w.download("data", &dest, &extra);
            assert!(out.contains(&id), "[{}] {out}", w.name());
            assert_eq!(
                read_tree(&dest),
                read_tree(&src),
                "[{}] bytes differ ({how})",
                w.name()
            );
        }

        let list = w.ok(&["bundle", "list", "--repo", "data"]);
        assert!(
            list.starts_with(&format!("{id} , ")),
            "[{}] {list}",
            w.name()
        );
        let json: serde_json::Value =
            serde_json::from_str(&w.ok(&["bundle", "list", "--repo", "data", "--output", "json"]))
                .unwrap();
        assert_eq!(json[0]["id"], id.as_str());
        assert_eq!(json[0]["leafSize"], 2097152);
        assert_eq!(json[0]["contributors"][0]["email"], "tests@example.com");

        let labels: serde_json::Value =
            serde_json::from_str(&w.ok(&["label", "list", "--repo", "data", "--output", "json"]))
                .unwrap();
        assert_eq!(labels[0]["name"], "v1");
        assert_eq!(labels[0]["id"], id.as_str());
        let got = w.ok(&["label", "get", "--repo", "data", "--label", "v1"]);
        assert!(got.starts_with(&format!("v1 , {id} , ")), "{got}");
        let repos = w.ok(&["repo", "list"]);
        assert!(
            repos.starts_with("data , test data , Test Runner , tests@example.com , "),
            "{repos}"
        );
    }
}

#[test]
fn ten_thousand_files_round_trip_and_a_second_upload_writes_no_leaf() {
    for w in World::each() {
        // 2,000 on GCS: the emulator's filesystem backend slows down with every object a
        // bucket holds (10,000 take it minutes), and 2,000 still make several documents.
        let files: u64 = if w.name() == "gcs" { 2_000 } else { 10_000 };
        let src = w.path("src");
        for i in 0..files {
            let name = format!("d{}/e{}/f{i}.bin", i % 10, (i / 10) % 10);
            write_file(&src.join(name), &noise(1 + (i as usize * 7) % 300, i));
        }
        w.create_repo("many", "d");
        let first = w.upload("many", &src, &[]);
        // Every blob with its modification time and size.
        let blobs = || -> Vec<_> {
            list_files(&w.blob_dir())
                .into_iter()
                .map(|p| {
                    let m = std::fs::metadata(&p).unwrap();
                    (p, m.modified().unwrap(), m.len())
                })
                .collect()
        };
        let blobs_before = blobs();
        let bundle_dir = w.metadata_dir().join(format!("bundles/many/{first}"));
        let docs = list_files(&bundle_dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("bundle-files-"))
            .count();
        assert_eq!(
            docs as u64,
            files / 1000,
            "[{}] {files} entries make documents of 1,000",
            w.name()
        );

        let second = w.upload("many", &src, &[]);
        assert_ne!(first, second);
        let blobs_after = blobs();
        assert_eq!(
            blobs_before,
            blobs_after,
            "[{}] the second upload wrote blobs",
            w.name()
        );

        let dest = w.path("out");
        w.download("many", &dest, &["--bundle", &second]);
        assert_eq!(read_tree(&dest), read_tree(&src), "[{}]", w.name());
    }
}

#[test]
fn name_filter_downloads_only_matching_entries() {
    let w = World::local();
    let src = w.path("src");
    sample_tree(&src);
    w.create_repo("r", "d");
    w.upload("r", &src, &[]);
    let dest = w.path("out");
    w.download("r", &dest, &["--name-filter", "^sizes/2mib"]);
    let names: Vec<String> = read_tree(&dest).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["sizes/2mib", "sizes/2mib+1"]);
    let (_, o2) = dest_of(&w, "o2");
    refuses(
        &w,
        &download_args("r", &o2, &["--name-filter", "(unclosed"]),
        Some(64),
        &["invalid --name-filter \"(unclosed\""],
    );
}

#[test]
fn missing_repo_bundle_and_label_are_named() {
    let w = World::local();
    let (dest, d) = dest_of(&w, "out");
    refuses(
        &w,
        &download_args("nope", &d, &[]),
        None,
        &["repo \"nope\" not found", "repo create"],
    );
    w.create_repo("r", "d");
    let missing = "2Cw1nGJHBpK3nDdRkPjMYZdeFSb";
    refused(
        &w,
        &[
            (
                &download_args("r", &d, &[]),
                None,
                &["repo \"r\" has no bundle yet"],
            ),
            (
                &download_args("r", &d, &["--bundle", missing]),
                None,
                &["bundle \"2Cw1nGJHBpK3nDdRkPjMYZdeFSb\" not found in repo \"r\""],
            ),
            (
                &download_args("r", &d, &["--label", "gone"]),
                None,
                &["label \"gone\" not found in repo \"r\""],
            ),
            (
                &[
                    "label", "set", "--repo", "r", "--label", "x", "--bundle", missing,
                ],
                None,
                &["not found"],
            ),
            (
                &["repo", "create", "--repo", "r", "--description", "again"],
                None,
                &["repo \"r\" already exists"],
            ),
        ],
    );
    assert!(
        !dest.exists(),
        "nothing should be created for a failed resolve"
    );
}

#[test]
fn create_only_documents_are_never_overwritten_on_any_backend() {
    for w in World::each() {
        w.create_repo("r", "first");
        refused(
            &w,
            &[
                (
                    &["repo", "create", "--repo", "r", "--description", "second"],
                    None,
                    &["repo \"r\" already exists"],
                ),
                (
                    &["context", "create"],
                    None,
                    &["context \"dev\" already exists"],
                ),
            ],
        );
        let repos = w.ok(&["repo", "list"]);
        assert!(repos.starts_with("r , first , "), "[{}] {repos}", w.name());
    }
}

#[test]
fn invalid_names_are_usage_errors() {
    let w = World::local();
    w.create_repo("r", "d");
    refused(
        &w,
        &[
            (
                &["repo", "create", "--repo", "bad/name", "--description", "d"],
                Some(64),
                &[
                    "invalid repo name \"bad/name\"",
                    "letters, digits and hyphens",
                ],
            ),
            (
                &download_args("r", "/tmp/x", &["--bundle", "../../etc"]),
                Some(64),
                &["invalid bundle id name \"../../etc\""],
            ),
        ],
    );
}

/// Rewrites the bundle's first file list with `f` applied to its text.
fn tamper_file_list(w: &World, repo: &str, id: &str, f: impl Fn(String) -> String) {
    let p = w
        .metadata_dir()
        .join(format!("bundles/{repo}/{id}/bundle-files-0.yaml"));
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, f(text)).unwrap();
}

#[test]
fn entries_escaping_the_destination_are_refused_before_anything_is_written() {
    let w = World::local();
    let src = w.path("src");
    write_file(&src.join("a.txt"), b"aaa");
    write_file(&src.join("b.txt"), b"bbb");
    w.create_repo("r", "d");
    for (i, evil) in ["../escape.txt", "/etc/evil.txt", "x/../../up.txt"]
        .iter()
        .enumerate()
    {
        let id = w.upload("r", &src, &[]);
        tamper_file_list(&w, "r", &id, |t| {
            t.replace("name: b.txt", &format!("name: {evil}"))
        });
        let (dest, d) = dest_of(&w, &format!("out{i}"));
        let unsafe_entry = format!("bundle entry \"{evil}\" is unsafe");
        refuses(&w, &download_id("r", &id, &d, &[]), None, &[&unsafe_entry]);
        assert!(
            !dest.exists() || list_files(&dest).is_empty(),
            "files written: {:?}",
            list_files(&dest)
        );
    }
    assert!(!w.path("escape.txt").exists());
    assert!(!w.tmp.path().parent().unwrap().join("up.txt").exists());
}

#[test]
fn a_symlink_planted_in_the_destination_is_not_followed() {
    let w = World::local();
    let id = w.seed("r", &[("sub/file.txt", b"payload".to_vec())]);
    let outside = w.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let (dest, d) = dest_of(&w, "dest");
    std::fs::create_dir_all(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
    refuses(
        &w,
        &download_id("r", &id, &d, &["--force-dest"]),
        None,
        &["is a symlink in the destination"],
    );
    assert!(list_files(&outside).is_empty(), "wrote through the symlink");
}

#[test]
fn non_empty_destination_needs_force_dest() {
    let w = World::local();
    w.seed("r", &[("a.txt", b"new".to_vec())]);
    let (dest, d) = dest_of(&w, "dest");
    write_file(&dest.join("a.txt"), b"old");
    write_file(&dest.join("keep.txt"), b"keep");
    refuses(
        &w,
        &download_args("r", &d, &[]),
        None,
        &["is not empty", "--force-dest"],
    );
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"old");
    w.download("r", &dest, &["--force-dest"]);
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"new");
    assert_eq!(std::fs::read(dest.join("keep.txt")).unwrap(), b"keep");
}

#[test]
fn a_corrupt_leaf_fails_the_download_and_leaves_no_file() {
    for w in World::each() {
        let src = w.path("src");
        let big = noise(3 * MIB, 9);
        write_file(&src.join("big.bin"), &big);
        write_file(&src.join("dir/good.txt"), b"good");
        w.create_repo("r", "d");
        let id = w.upload("r", &src, &[]);
        // The first leaf of big.bin is the 2 MiB object in the blob bucket.
        let leaf = w.blob_of_len(2 * MIB, "2 MiB leaf");
        let mut bytes = std::fs::read(&leaf).unwrap();
        bytes[12345] ^= 0xff;
        std::fs::write(&leaf, &bytes).unwrap();
        let (dest, d) = dest_of(&w, "out");
        let (_, out2) = dest_of(&w, "out2");
        refused(
            &w,
            &[
                (
                    &download_id("r", &id, &d, &[]),
                    None,
                    &["of \"big.bin\" is corrupt"],
                ),
                // Re-uploading the same bytes repairs the damaged leaf only if its size
                // differs; a same-size corruption is caught on every read.
                (
                    &download_id("r", &id, &out2, &["--name-filter", "big"]),
                    None,
                    &["is corrupt"],
                ),
            ],
        );
        assert!(
            !dest.join("big.bin").exists(),
            "[{}] a corrupt file was left in place",
            w.name()
        );
        let partial: Vec<_> = list_files(&dest)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".partial"))
            .collect();
        assert!(
            partial.is_empty(),
            "[{}] temporary files left: {partial:?}",
            w.name()
        );
    }
}

#[test]
fn a_root_object_with_a_wrong_trailing_key_is_refused() {
    let w = World::local();
    let id = w.seed("r", &[("f.txt", b"hello world\n".to_vec())]);
    let root = w.blob_dir().join("6914dbf186447c478b265aea9e30383c05b8e15576641b12997dd4300639a997c5b04c39eeb00bcad6f3eed6f6d2f37bb99acb648b668e427873d7af183e5777");
    let mut bytes = std::fs::read(&root).unwrap();
    assert_eq!(bytes.len(), 128);
    bytes[127] ^= 1;
    std::fs::write(&root, &bytes).unwrap();
    let (dest, d) = dest_of(&w, "out");
    refuses(
        &w,
        &download_id("r", &id, &d, &[]),
        None,
        &["file \"f.txt\"", "ends with key"],
    );
    assert!(!dest.join("f.txt").exists());
}

#[test]
fn truncated_or_invalid_yaml_is_a_clear_error() {
    let w = World::local();
    let id = w.seed("r", &[("f.txt", b"x".to_vec())]);
    let bundle_yaml = w.metadata_dir().join(format!("bundles/r/{id}/bundle.yaml"));
    let good = std::fs::read_to_string(&bundle_yaml).unwrap();
    let (_, o1) = dest_of(&w, "o1");
    std::fs::write(&bundle_yaml, &good[..good.len() / 3]).unwrap();
    let invalid = format!("invalid document file://{}", bundle_yaml.display());
    refuses(&w, &download_id("r", &id, &o1, &[]), None, &[&invalid]);

    let (_, o2) = dest_of(&w, "o2");
    std::fs::write(
        &bundle_yaml,
        good.replace("leafSize: 2097152", "leafSize: 0"),
    )
    .unwrap();
    refuses(
        &w,
        &download_id("r", &id, &o2, &[]),
        None,
        &["leaf size 0 is out of range"],
    );

    let (_, o3) = dest_of(&w, "o3");
    std::fs::write(&bundle_yaml, &good).unwrap();
    tamper_file_list(&w, "r", &id, |t| {
        t.replace("BundleEntries:", "BundleEntries: [unclosed")
    });
    refuses(
        &w,
        &download_id("r", &id, &o3, &[]),
        None,
        &["bundle-files-0.yaml", "invalid document"],
    );
}

#[test]
fn an_uncommitted_bundle_is_invisible() {
    let w = World::local();
    let id = w.seed("r", &[("f.txt", b"committed".to_vec())]);
    // A later upload that died before its commit point: file lists, no bundle.yaml.
    let dead = w
        .metadata_dir()
        .join("bundles/r/zzzzzzzzzzzzzzzzzzzzzzzzzzz");
    write_file(&dead.join("bundle-files-0.yaml"), b"BundleEntries: []\n");
    let list = w.ok(&["bundle", "list", "--repo", "r"]);
    assert_eq!(list.lines().count(), 1, "{list}");
    let out = w.download("r", &w.path("out"), &[]);
    assert!(
        out.contains(&id),
        "latest must skip the uncommitted bundle: {out}"
    );
}

#[test]
fn an_unreachable_store_fails_after_bounded_retries() {
    let mut w = World::s3();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    w.set_env("DATAMON_S3_ENDPOINT", &format!("http://127.0.0.1:{port}"));
    w.set_env("DATAMON_RETRIES", "2");
    w.set_env("DATAMON_RETRY_TIMEOUT_SECS", "3");
    let started = Instant::now();
    refuses(
        &w,
        &["repo", "list"],
        Some(1),
        &["s3://config/contexts/dev/context.yaml"],
    );
    let took = started.elapsed();
    // Not a timing assertion on performance: a guard that the command did not hang.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn a_missing_local_store_is_named_with_the_fix() {
    let mut w = World::local();
    w.set_env(
        "DATAMON_GLOBAL_CONFIG",
        "file:///nonexistent/datamon/config",
    );
    refuses(
        &w,
        &["repo", "list"],
        None,
        &[
            "/nonexistent/datamon/config does not exist",
            "context create",
        ],
    );
    w.set_env("DATAMON_GLOBAL_CONFIG", "");
    refuses(&w, &["repo", "list"], Some(64), &[]);
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn an_unreadable_file_fails_the_upload_naming_it_and_commits_nothing() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let w = World::local();
    let src = w.path("src");
    write_file(&src.join("ok.txt"), b"fine");
    write_file(&src.join("secret/locked.txt"), b"locked");
    w.create_repo("r", "d");
    let locked = src.join("secret/locked.txt");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = w.agent();
    if running_as_root() {
        // root reads anything: run the agent as `nobody`, with the scratch tree open to it.
        for p in list_files(w.tmp.path())
            .iter()
            .chain([w.tmp.path().to_path_buf()].iter())
        {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777));
        }
        let mut stack = vec![w.tmp.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777));
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        cmd.uid(65534).gid(65534);
    }
    let out = cmd
        .args([
            "bundle",
            "upload",
            "--repo",
            "r",
            "--message",
            "m",
            "--path",
            &src.to_string_lossy(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "upload should fail");
    assert!(
        err.contains("locked.txt") && err.contains("ermission denied"),
        "{err}"
    );
    let bundles = w.metadata_dir().join("bundles/r");
    let committed: Vec<_> = list_files(&bundles)
        .into_iter()
        .filter(|p| p.ends_with("bundle.yaml"))
        .collect();
    assert!(
        committed.is_empty(),
        "a bundle was committed: {committed:?}"
    );
}

#[test]
fn flags_override_environment_which_overrides_the_config_file() {
    let mut w = World::local();
    let real = format!("file://{}/config", w.buckets.display());
    let file = w.path("datamon.yaml");
    std::fs::write(&file, format!("config: {real}\ncontext: nosuch\n")).unwrap();
    w.unset_env("DATAMON_GLOBAL_CONFIG");
    w.set_env("DATAMON_CONFIG_FILE", &file.to_string_lossy());
    // File says context nosuch.
    refuses(
        &w,
        &["repo", "list"],
        None,
        &["context \"nosuch\" not found"],
    );
    // Env overrides the file.
    w.set_env("DATAMON_CONTEXT", "dev");
    w.ok(&["repo", "list"]);
    // A flag overrides the env.
    refuses(
        &w,
        &["repo", "list", "--context", "other"],
        None,
        &["context \"other\" not found"],
    );
}

#[test]
fn latest_is_the_last_upload_even_within_one_second() {
    let w = World::local();
    w.create_repo("r", "d");
    let src = w.path("src");
    let mut ids = Vec::new();
    for i in 0..4u8 {
        write_file(&src.join("version.txt"), &[b'0' + i]);
        ids.push(w.upload("r", &src, &[]));
    }
    let dest = w.path("out");
    let out = w.download("r", &dest, &[]);
    assert!(out.contains(&ids[3]), "latest should be {}: {out}", ids[3]);
    assert_eq!(std::fs::read(dest.join("version.txt")).unwrap(), b"3");
    let listed: Vec<String> = w
        .ok(&["bundle", "list", "--repo", "r"])
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids, "bundle list is in upload order");
}

#[test]
fn a_missing_leaf_is_named_and_nothing_is_written() {
    let w = World::local();
    let id = w.seed("r", &[("f.bin", noise(3 * MIB, 5))]);
    let leaf = w.blob_of_len(MIB, "the 1 MiB trailing leaf");
    std::fs::remove_file(&leaf).unwrap();
    let (dest, d) = dest_of(&w, "out");
    refuses(
        &w,
        &download_id("r", &id, &d, &[]),
        None,
        &["of \"f.bin\" is missing from the blob bucket"],
    );
    assert!(list_files(&dest).is_empty(), "{:?}", list_files(&dest));
}

#[test]
fn leaf_sizes_out_of_range_are_refused_before_any_work() {
    let mut w = World::local();
    for bad in ["0", "4294967296", "134217728"] {
        w.set_env("DATAMON_LEAF_SIZE", bad);
        let says = format!("leaf size {bad} is out of range");
        refuses(&w, &["repo", "list"], Some(64), &[&says]);
    }
    // A smaller leaf size than datamon's default still round-trips.
    w.set_env("DATAMON_LEAF_SIZE", "65536");
    let src = w.path("src");
    write_file(&src.join("f.bin"), &noise(300_000, 8));
    w.create_repo("r", "d");
    w.upload("r", &src, &[]);
    w.unset_env("DATAMON_LEAF_SIZE");
    let dest = w.path("out");
    w.download("r", &dest, &[]);
    assert_eq!(read_tree(&dest), read_tree(&src));
}
