//! Interoperability with an independent implementation of the datamon format
//! (`tests/interop/datamon_ref.py`, Python's hashlib and PyYAML): what it writes the agent
//! downloads byte for byte, and what the agent writes it verifies key by key (on every
//! backend: the S3 server and the GCS emulator keep one directory per bucket, as the local
//! store does).

#![allow(clippy::expect_used)] // a test stops at its first failed step, with its reason

use std::path::Path;
use std::process::Command;

use datamon_e2e::{noise, python_reference, read_tree, write_file, World, MIB};

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(python_reference())
        .args(args)
        .output()
        .expect("python3 must be installed (see .ci/run)");
    assert!(
        out.status.success(),
        "datamon_ref.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tree(dir: &Path) {
    write_file(&dir.join("empty"), b"");
    write_file(&dir.join("one"), b"1");
    write_file(&dir.join("a/2mib"), &noise(2 * MIB, 11));
    write_file(&dir.join("a/2mib+1"), &noise(2 * MIB + 1, 12));
    write_file(&dir.join("a/b/5mib+3"), &noise(5 * MIB + 3, 13));
    write_file(&dir.join("a/b/dup-of-5mib+3"), &noise(5 * MIB + 3, 13));
    for i in 0..1_205u64 {
        write_file(
            &dir.join(format!("small/{:02}/f{i}", i % 17)),
            &noise(10 + i as usize, i),
        );
    }
}

#[test]
fn python_reference_self_test() {
    let out = python(&["selftest"]);
    assert_eq!(out.lines().last(), Some("ok"), "{out}");
}

#[test]
fn the_agent_downloads_what_the_reference_writes() {
    let w = World::local();
    let src = w.path("src");
    tree(&src);
    let store = w.buckets.to_string_lossy().into_owned();
    let s = src.to_string_lossy().into_owned();
    w.create_repo("ref", "written by python");
    for leaf in ["2097152", "1048576"] {
        let id = python(&[
            "write",
            "--store",
            &store,
            "--context",
            "dev",
            "--repo",
            "ref",
            "--source",
            &s,
            "--leaf-size",
            leaf,
            "--label",
            "py",
        ]);
        let dest = w.path(&format!("out-{leaf}"));
        let out = w.ok(&[
            "bundle",
            "download",
            "--repo",
            "ref",
            "--label",
            "py",
            "--destination",
            &dest.to_string_lossy(),
        ]);
        assert!(out.contains(&id), "{out}");
        assert_eq!(read_tree(&dest), read_tree(&src), "leaf size {leaf}");
    }
}

#[test]
fn the_reference_verifies_what_the_agent_writes() {
    for w in World::each() {
        let src = w.path("src");
        tree(&src);
        w.create_repo("agent", "written by the agent");
        let id = w.upload("agent", &src, &["--label", "mine"]);
        let out = python(&[
            "verify",
            "--store",
            &w.buckets.to_string_lossy(),
            "--context",
            "dev",
            "--repo",
            "agent",
            "--bundle",
            &id,
            "--source",
            &src.to_string_lossy(),
            "--label",
            "mine",
        ]);
        assert_eq!(out, "ok 1211 files", "[{}]", w.name());
    }
}
