//! Fuzzing with a seeded generator (reproducible: the failing seed is printed): the
//! annotation parser and `mutate_pod` never panic on arbitrary JSON or on pods with
//! arbitrary annotations, and every patch they give applies and yields a pod that keeps
//! the invariants of `common::check_patched`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

mod common;

use std::collections::BTreeMap;

use datamon_webhook::mutate::annotations;
use datamon_webhook::mutate::{
    mutate_pod, NamespaceDefaults, PodSecurityLevel, Verdict, WebhookSettings,
};
use serde_json::{json, Map, Value};

/// xorshift64*: small, seeded, good enough to explore.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const WORDS: &[&str] = &[
    "",
    "raw",
    "a",
    "datamon",
    "datamon-run",
    "app",
    "/data/raw",
    "/data",
    "/",
    "x y",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "'",
    "\"",
    "\n",
    "-",
    "repo",
    "path",
    "mode",
    "mount",
    "download",
    "label",
    "bundle",
    "name",
    "upload",
    "always",
    "1",
    "0s",
    "5m",
    "é",
    "\u{0}",
    "~",
    "null",
    "true",
    "off",
    "name_filter",
    "message",
    "contributor",
    "{repo: r, path: /p}",
    "requests",
    "cpu",
    "100m",
    "Mi",
    "ready",
    "grace",
    "/var/run/datamon",
    "gs://b",
    "s3://b",
    "http://h:1",
];

const KEYS: &[&str] = &[
    "datamon.io/input.raw",
    "datamon.io/input.img",
    "datamon.io/input.",
    "datamon.io/output.out",
    "datamon.io/output.raw",
    "datamon.io/database.pg",
    "datamon.io/database.raw",
    "datamon.io/config",
    "datamon.io/context",
    "datamon.io/s3-endpoint",
    "datamon.io/gcs-endpoint",
    "datamon.io/coordination",
    "datamon.io/credentials-secret",
    "datamon.io/image",
    "datamon.io/postgres-image",
    "datamon.io/resources",
    "datamon.io/deadlines",
    "datamon.io/native-sidecar",
    "datamon.io/wrap",
    "datamon.io/command.app",
    "datamon.io/command.side",
    "datamon.io/inject",
    "datamon.io/status",
    "datamon.io/x",
    "kubectl.kubernetes.io/default-container",
    "other",
];

fn text(r: &mut Rng) -> String {
    (0..r.below(8))
        .map(|_| *r.pick(WORDS))
        .collect::<Vec<_>>()
        .join(if r.chance(50) { " " } else { "" })
}

/// A plausible annotation value: often well-formed, sometimes mangled.
fn value(r: &mut Rng, key: &str) -> String {
    let good = if key.contains("input.") {
        let mode = if r.chance(50) { "mount" } else { "download" };
        let path = *r.pick(&[
            "/data/raw",
            "/data/img",
            "/data/out",
            "/data",
            "/var/run/datamon",
            "/data/raw/x",
        ]);
        format!("{{repo: r, path: {path}, mode: {mode}}}")
    } else if key.contains("output.") {
        let path = *r.pick(&["/data/out", "/data/raw", "/data/out2", "/data"]);
        format!("{{repo: r, path: {path}}}")
    } else if key.contains("database.") {
        let port = *r.pick(&["5432", "5433", "0", "70000"]);
        let owner = *r.pick(&[
            "",
            ", owner: {role: app}",
            ", owner: {role: app, secret: {name: s, key: k}}",
            ", owner: {role: pg_x}",
        ]);
        let output = *r.pick(&["", ", output: {repo: r}"]);
        format!("{{source: {{repo: r}}, port: {port}{owner}{output}}}")
    } else if key.contains("command.") {
        "[run, --fast]".to_string()
    } else if key.ends_with("resources") {
        "{requests: {cpu: 100m}}".to_string()
    } else if key.ends_with("deadlines") {
        "{ready: 1m}".to_string()
    } else if key.ends_with("native-sidecar") {
        r.pick(&["auto", "on", "off"]).to_string()
    } else if key.ends_with("wrap") || key.ends_with("default-container") {
        r.pick(&[
            "app",
            "side",
            "datamon",
            "nope",
            "app,side",
            "side, app",
            "app,app",
        ])
        .to_string()
    } else if key.ends_with("coordination") {
        r.pick(&["/var/run/dm", "/data/raw", "/"]).to_string()
    } else {
        "v".to_string()
    };
    if r.chance(70) {
        good
    } else if r.chance(50) {
        let mut s = good;
        let at = r.below(s.len() + 1);
        let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        s.insert_str(at, &text(r));
        s
    } else {
        text(r)
    }
}

fn json_value(r: &mut Rng, depth: u32) -> Value {
    match r.below(if depth == 0 { 4 } else { 7 }) {
        0 => Value::Null,
        1 => json!(r.chance(50)),
        2 => json!(r.next() as i64 % 1000),
        3 => json!(text(r)),
        4 | 5 => {
            let mut m = Map::new();
            for _ in 0..r.below(5) {
                let k = if r.chance(50) {
                    r.pick(&[
                        "metadata",
                        "spec",
                        "annotations",
                        "containers",
                        "name",
                        "command",
                        "env",
                        "volumes",
                        "volumeMounts",
                        "initContainers",
                    ])
                    .to_string()
                } else {
                    text(r)
                };
                m.insert(k, json_value(r, depth - 1));
            }
            Value::Object(m)
        }
        _ => Value::Array((0..r.below(4)).map(|_| json_value(r, depth - 1)).collect()),
    }
}

fn container(r: &mut Rng, name: &str) -> Value {
    let mut c = json!({"name": name, "image": "busybox"});
    if r.chance(70) {
        c["command"] = json!(["sh", "-c", "true"]);
    }
    if r.chance(30) {
        c["args"] = json!(["a", "b"]);
    }
    if r.chance(30) {
        c["env"] = json!([{"name": "A", "value": "1"}]);
    } else if r.chance(20) {
        c["env"] = json!([{"name": "PGHOST", "value": "db"}, {"name": "DATAMON_DB_PG_PORT", "value": "1"}]);
    }
    if r.chance(30) {
        let path = *r.pick(&["/data/out", "/cfg", "/var/run/datamon"]);
        c["volumeMounts"] = json!([{"name": "cfg", "mountPath": path}]);
    }
    c
}

fn random_pod(r: &mut Rng) -> Value {
    let mut ann = BTreeMap::new();
    for _ in 0..r.below(7) {
        let k = *r.pick(KEYS);
        let v = value(r, k);
        ann.insert(k.to_string(), v);
    }
    let names = ["app", "side", "datamon"];
    let containers: Vec<Value> = (0..r.below(3) + usize::from(r.chance(95)))
        .map(|i| container(r, names[i]))
        .collect();
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": ann},
        "spec": {"containers": containers, "volumes": [{"name": "cfg", "emptyDir": {}}]},
    });
    if r.chance(30) {
        pod["spec"]["initContainers"] =
            json!([{"name": "datamon-install", "image": "x", "command": ["true"]}]);
    }
    if r.chance(20) {
        pod["spec"]["volumes"] = json!([{"name": "datamon-run", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}, {"name": "datamon-raw", "emptyDir": {}}]);
    }
    if r.chance(10) {
        pod["metadata"]["labels"] = json!({"datamon.io/inject": "false"});
    }
    pod
}

fn namespace(r: &mut Rng) -> NamespaceDefaults {
    let mut annotations = BTreeMap::new();
    for _ in 0..r.below(3) {
        let k = *r.pick(KEYS);
        annotations.insert(k.to_string(), value(r, k));
    }
    let levels = [
        PodSecurityLevel::Privileged,
        PodSecurityLevel::Baseline,
        PodSecurityLevel::Restricted,
    ];
    // Mostly unlabelled: a refusing level denies every mounted input.
    let pod_security_enforce = r.chance(10).then(|| *r.pick(&levels));
    NamespaceDefaults {
        annotations,
        pod_security_enforce,
    }
}

#[test]
fn mutate_pod_on_arbitrary_json_always_gives_a_verdict() {
    let settings = WebhookSettings::default();
    for seed in 1..=3000u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let v = json_value(&mut r, 5);
        let ns = namespace(&mut r);
        let outcome = std::panic::catch_unwind(|| mutate_pod(&v, &ns, &settings));
        assert!(outcome.is_ok(), "seed {seed} panicked on {v}");
    }
}

#[test]
fn annotation_parser_never_panics() {
    for seed in 1..=5000u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut pod = BTreeMap::new();
        for _ in 0..r.below(6) {
            let k = if r.chance(80) {
                r.pick(KEYS).to_string()
            } else {
                format!("datamon.io/{}", text(&mut r))
            };
            let v = value(&mut r, &k);
            pod.insert(k, v);
        }
        let ns = namespace(&mut r).annotations;
        let outcome = std::panic::catch_unwind(|| annotations::parse(&pod, &ns));
        assert!(outcome.is_ok(), "seed {seed} panicked on {pod:?} / {ns:?}");
    }
}

#[test]
fn every_patch_on_random_pods_applies_and_keeps_the_invariants() {
    let (mut patched, mut denied, mut skipped, mut with_databases) = (0, 0, 0, 0);
    for seed in 1..=4000u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let pod = random_pod(&mut r);
        let ns = namespace(&mut r);
        let settings = WebhookSettings {
            native_sidecars_supported: r.chance(50),
            ..WebhookSettings::default()
        };
        match mutate_pod(&pod, &ns, &settings) {
            Verdict::Patch(p) => {
                patched += 1;
                let out =
                    common::apply(&pod, &p).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{pod}"));
                if let Err(e) = common::check_patched(&pod, &out, &ns, &settings) {
                    panic!("seed {seed}: {e}\npod: {pod}\npatched: {out}");
                }
                with_databases += usize::from(out.to_string().contains("datamon-postgres"));
            }
            Verdict::Deny(m) => {
                denied += 1;
                assert!(m.contains("datamon.io"), "seed {seed}: {m}");
            }
            Verdict::Skip { .. } => skipped += 1,
        }
    }
    // The generator explores all three outcomes, and pods with databases.
    assert!(
        patched > 100 && denied > 200 && skipped > 100 && with_databases > 20,
        "{patched} {denied} {skipped} {with_databases}"
    );
}
