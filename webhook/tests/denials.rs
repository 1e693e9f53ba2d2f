//! Every invalid annotation is denied with a message that names it, says what is wrong and
//! how to fix it; problems are all reported at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::collections::BTreeMap;

use datamon_webhook::mutate::{mutate_pod, NamespaceDefaults, Verdict, WebhookSettings};
use serde_json::{json, Value};

const GOOD_INPUT: (&str, &str) = ("datamon.io/input.raw", "{repo: raw, path: /data/raw}");

fn pod(annotations: &[(&str, &str)]) -> Value {
    let a: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": a},
        "spec": {"containers": [
            {"name": "app", "image": "busybox", "command": ["ls"]},
            {"name": "side", "image": "busybox"},
        ]},
    })
}

fn deny(pod: &Value, ns: &[(&str, &str)]) -> String {
    let ns = NamespaceDefaults {
        annotations: ns
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..NamespaceDefaults::default()
    };
    match mutate_pod(pod, &ns, &WebhookSettings::default()) {
        Verdict::Deny(m) => m,
        other => panic!("not denied: {other:?}"),
    }
}

#[test]
fn each_invalid_annotation_is_named_with_its_problem() {
    // (annotation, value, words the message must hold besides the annotation)
    let cases: &[(&str, &str, &str)] = &[
        (
            "datamon.io/input.raw",
            "{repo: raw}",
            "missing field `path`",
        ),
        (
            "datamon.io/input.raw",
            "{repo: raw, path: /d, lable: v}",
            "unknown field `lable`",
        ),
        ("datamon.io/input.raw", "[a, b]", "must be a mapping"),
        (
            "datamon.io/input.raw",
            "{repo: raw, path: /d, name: x}",
            "remove the `name` field",
        ),
        (
            "datamon.io/input.raw",
            "{repo: raw, path: /d, mode: copy}",
            "unknown variant `copy`",
        ),
        (
            "datamon.io/input.raw",
            "{repo: raw, path: relative}",
            "absolute path",
        ),
        (
            "datamon.io/input.raw",
            "{repo: raw, path: /d, bundle: b, label: l}",
            "keep one",
        ),
        (
            "datamon.io/input.Raw",
            "{repo: raw, path: /d}",
            "not a valid name",
        ),
        (
            "datamon.io/input.raw",
            "{repo: raw, path: [unclosed",
            "not valid YAML",
        ),
        (
            "datamon.io/output.out",
            "{path: /out}",
            "missing field `repo`",
        ),
        (
            "datamon.io/output.out",
            "{repo: r, path: /out, upload: sometimes}",
            "unknown variant",
        ),
        (
            "datamon.io/output.out",
            "{repo: r, path: /data/raw/out}",
            "overlaps",
        ),
        (
            "datamon.io/output.out",
            "{repo: r, path: /o, message: ''}",
            "commit message is empty",
        ),
        ("datamon.io/input.", "{repo: r, path: /o}", "has no name"),
        (
            "datamon.io/input.img",
            "{repo: i, path: /img, mode: mount}",
            "needs one",
        ),
        (
            "datamon.io/input.img",
            "{repo: i, path: /data/img, mode: mount}",
            "directory of their own",
        ),
        ("datamon.io/config", "not a bucket", "config bucket"),
        ("datamon.io/context", "bad context", "context name"),
        ("datamon.io/s3-endpoint", "minio:9000", "http://host:port"),
        ("datamon.io/gcs-endpoint", "ftp://gcs:4443", "host:port"),
        ("datamon.io/coordination", "run/datamon", "absolute path"),
        (
            "datamon.io/coordination",
            "/data/raw",
            "is also the directory of",
        ),
        (
            "datamon.io/credentials-secret",
            "My_Secret",
            "not a Secret name",
        ),
        ("datamon.io/image", "", "not an image reference"),
        (
            "datamon.io/resources",
            "{requests: {cpu: lots}}",
            "not a quantity",
        ),
        (
            "datamon.io/resources",
            "{request: {cpu: 1}}",
            "unknown field `request`",
        ),
        ("datamon.io/resources", "1Gi", "not a mapping"),
        (
            "datamon.io/deadlines",
            "{ready: soon}",
            "expected a duration",
        ),
        (
            "datamon.io/deadlines",
            "{readiness: 1m}",
            "unknown field `readiness`",
        ),
        ("datamon.io/deadlines", "{grace: 0s}", "zero deadline"),
        ("datamon.io/native-sidecar", "maybe", "auto"),
        ("datamon.io/wrap", "nope", "no container is named \"nope\""),
        (
            "datamon.io/wrap",
            "app,nope",
            "no container is named \"nope\"",
        ),
        ("datamon.io/wrap", "app,side,app", "\"app\" is listed twice"),
        ("datamon.io/wrap", "app,Side", "not a container name"),
        ("datamon.io/wrap", " ", "empty"),
        (
            "datamon.io/command.side",
            "[run]",
            "not the application container",
        ),
        (
            "datamon.io/command.ghost",
            "[run]",
            "no container is named \"ghost\"",
        ),
        ("datamon.io/command.app", "[run]", "has a `command`"),
        ("datamon.io/command.app", "run me", "not a list"),
        ("datamon.io/command.app", "[]", "non-empty list"),
        ("datamon.io/inject", "perhaps", "neither"),
        (
            "datamon.io/inputs.raw",
            "{}",
            "did you mean `datamon.io/input.raw`",
        ),
        ("datamon.io/typo", "x", "unknown annotation"),
        (
            "datamon.io/database.pg",
            "{port: 70000}",
            "field `port`: 70000 is not a port: use 1 to 65535",
        ),
        ("datamon.io/database.pg", "{port: 0}", "is not a port"),
        (
            "datamon.io/database.pg",
            "{prot: 5433}",
            "unknown field `prot`, expected one of",
        ),
        (
            "datamon.io/database.pg",
            "{owner: {role: pg_admin}}",
            "field `owner.role`: \"pg_admin\" is not a role name",
        ),
        (
            "datamon.io/database.pg",
            "{owner: {role: App}}",
            "lowercase letters, digits and `_`",
        ),
        (
            "datamon.io/database.pg",
            "{owner: {password_env: P}}",
            "unknown field `password_env`",
        ),
        (
            "datamon.io/database.pg",
            "{owner: {secret: {name: s}}}",
            "missing field `key`",
        ),
        (
            "datamon.io/database.pg",
            "{owner: {secret: {name: S_1, key: k}}}",
            "not a Secret name",
        ),
        (
            "datamon.io/database.pg",
            "{source: {repo: r, bundle: b, label: l}}",
            "field `source.bundle`: both `bundle` and `label` are set",
        ),
        (
            "datamon.io/database.pg",
            "{output: {repo: r, message: ' '}}",
            "field `output.message`: the commit message is empty",
        ),
        (
            "datamon.io/database.pg",
            "{major: 11}",
            "field `major`: PostgreSQL 11 is older",
        ),
        (
            "datamon.io/database.pg",
            "{settings: {listen_addresses: '*'}}",
            "`listen_addresses` is set by the agent itself",
        ),
        (
            "datamon.io/database.pg",
            "{settings: {Work-Mem: 1MB}}",
            "not a PostgreSQL setting name",
        ),
        (
            "datamon.io/database.pg",
            "{upload: never}",
            "unknown variant",
        ),
        ("datamon.io/database.", "{}", "has no name"),
        (
            "datamon.io/databases.pg",
            "{}",
            "did you mean `datamon.io/database.pg`",
        ),
        ("datamon.io/postgres-image", "a b", "not an image reference"),
    ];
    // Cases that need a sidecar (outputs) to reach the layout's checks.
    let out = (
        "datamon.io/output.result",
        "{repo: res, path: /data/result}",
    );
    let mut failures = Vec::new();
    for (key, value, words) in cases {
        let mut ann = vec![GOOD_INPUT, out, (*key, *value)];
        if key.starts_with("datamon.io/input.") {
            ann.retain(|(k, _)| k != &GOOD_INPUT.0 || k == key);
        }
        ann.dedup_by(|a, b| a.0 == b.0);
        let msg = deny(&pod(&ann), &[]);
        if !msg.contains(key) || !msg.contains(words) {
            failures.push(format!("{key}: {value:?}: expected {words:?} in:\n  {msg}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn namespace_defaults_are_named_as_such_and_the_pod_wins() {
    let msg = deny(
        &pod(&[GOOD_INPUT]),
        &[
            ("datamon.io/native-sidecar", "sometimes"),
            ("datamon.io/image", "a b"),
        ],
    );
    assert!(
        msg.contains("datamon.io/native-sidecar (namespace default)"),
        "{msg}"
    );
    // The pod's value replaces the bad default: no problem left with that annotation.
    let msg = deny(
        &pod(&[GOOD_INPUT, ("datamon.io/native-sidecar", "off")]),
        &[
            ("datamon.io/native-sidecar", "sometimes"),
            ("datamon.io/image", "a b"),
        ],
    );
    assert!(!msg.contains("native-sidecar"), "{msg}");
    assert!(
        msg.contains("datamon.io/image (namespace default)"),
        "{msg}"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let msg = deny(
        &pod(&[
            (
                "datamon.io/input.raw",
                "{repo: raw, path: data/raw, lable: v}",
            ),
            (
                "datamon.io/input.img",
                "{repo: img, path: /img, mode: mount, name_filter: x}",
            ),
            ("datamon.io/output.out", "{repo: 'bad repo', path: /out}"),
            ("datamon.io/native-sidecar", "maybe"),
        ]),
        &[],
    );
    for want in [
        "datamon.io/input.raw: unknown field `lable`",
        "datamon.io/input.img: field `name_filter`",
        "datamon.io/output.out: field `repo`",
        "datamon.io/native-sidecar",
    ] {
        assert!(msg.contains(want), "{want} missing from {msg}");
    }
    assert!(msg.starts_with("datamon: 4 problems"), "{msg}");
}

#[test]
fn annotations_without_inputs_or_outputs_are_denied() {
    let msg = deny(&pod(&[("datamon.io/config", "gs://b")]), &[]);
    assert!(msg.contains("no input, output or database"), "{msg}");
}

#[test]
fn objects_that_are_not_pods_are_denied_only_when_they_ask_for_datamon() {
    let ns = NamespaceDefaults::default();
    let s = WebhookSettings::default();
    let asks =
        json!({"metadata": {"annotations": {"datamon.io/input.raw": "{repo: r, path: /r}"}}});
    assert!(
        matches!(mutate_pod(&asks, &ns, &s), Verdict::Deny(m) if m.contains("spec.containers"))
    );
    for v in [
        json!(null),
        json!([1]),
        json!({"metadata": 3}),
        json!({"spec": {}}),
    ] {
        assert!(
            matches!(mutate_pod(&v, &ns, &s), Verdict::Skip { .. }),
            "{v}"
        );
    }
}

#[test]
fn several_wrapped_containers_are_allowed_each_with_its_participant() {
    let out = (
        "datamon.io/output.result",
        "{repo: res, path: /data/result}",
    );
    let p = pod(&[
        GOOD_INPUT,
        out,
        ("datamon.io/wrap", "app,side"),
        ("datamon.io/command.side", "[run]"),
    ]);
    let ns = NamespaceDefaults::default();
    let Verdict::Patch(patch) = mutate_pod(&p, &ns, &WebhookSettings::default()) else {
        panic!("not patched");
    };
    let mut patched = p.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let c = &patched["spec"]["containers"];
    for (i, participant, tail) in [(0, "app-app", "ls"), (1, "app-side", "run")] {
        let cmd: Vec<&str> = c[i]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            cmd[1..],
            ["wrap", "--participant", participant, "--", tail],
            "{cmd:?}"
        );
        let plan: Value = serde_json::from_str(c[i]["env"][0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(plan["apps"], json!(["app-app", "app-side"]));
    }
    // A command annotation for a container that is not wrapped is still refused.
    let msg = deny(
        &pod(&[
            GOOD_INPUT,
            out,
            ("datamon.io/wrap", "app"),
            ("datamon.io/command.side", "[run]"),
        ]),
        &[],
    );
    assert!(msg.contains("not the application container"), "{msg}");
}

#[test]
fn participant_names_that_cannot_be_told_apart_are_denied() {
    let long = "a".repeat(58);
    let (a, b) = (format!("{long}-one"), format!("{long}-two"));
    let p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": {
            "datamon.io/output.result": "{repo: res, path: /data/result}",
            "datamon.io/wrap": format!("{a},{b}"),
        }},
        "spec": {"containers": [
            {"name": a, "image": "busybox", "command": ["ls"]},
            {"name": b, "image": "busybox", "command": ["ls"]},
        ]},
    });
    let msg = deny(&p, &[]);
    assert!(
        msg.contains("datamon.io/wrap") && msg.contains("both give the participant name"),
        "{msg}"
    );
}

#[test]
fn databases_are_denied_together_naming_each_one() {
    let msg = deny(
        &pod(&[
            ("datamon.io/database.a", "{port: 5433}"),
            ("datamon.io/database.b", "{port: 5433, owner: {role: 1st}}"),
            ("datamon.io/database.c", "{output: {repo: 'bad repo'}}"),
        ]),
        &[],
    );
    for want in [
        "datamon.io/database.b: field `port`: port 5433 is also the port of database \"a\": give each database its own port",
        "datamon.io/database.b: field `owner.role`: \"1st\"",
        "datamon.io/database.c: field `output.repo`: \"bad repo\" is not a repo name",
    ] {
        assert!(msg.contains(want), "{want:?} missing from {msg}");
    }
    assert!(msg.starts_with("datamon: 3 problems"), "{msg}");
    // An output where the agent keeps the databases.
    let msg = deny(
        &pod(&[
            ("datamon.io/database.a", "{}"),
            (
                "datamon.io/output.out",
                "{repo: r, path: /var/lib/datamon/postgres/out}",
            ),
        ]),
        &[],
    );
    assert!(
        msg.contains("datamon.io/output.out: /var/lib/datamon/postgres/out holds or is inside /var/lib/datamon/postgres, where the agent keeps the databases"),
        "{msg}"
    );
    // A database alone is enough to ask for the agent.
    let p = pod(&[("datamon.io/database.a", "{}")]);
    assert!(matches!(
        mutate_pod(
            &p,
            &NamespaceDefaults::default(),
            &WebhookSettings::default()
        ),
        Verdict::Patch(_)
    ));
}

#[test]
fn the_database_image_comes_from_the_annotation_the_namespace_or_the_flag() {
    let image_of =
        |annotations: &[(&str, &str)], ns: &[(&str, &str)], settings: &WebhookSettings| {
            let p = pod(annotations);
            let ns = NamespaceDefaults {
                annotations: ns
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..NamespaceDefaults::default()
            };
            let Verdict::Patch(patch) = mutate_pod(&p, &ns, settings) else {
                panic!("not patched");
            };
            let mut patched = p.clone();
            json_patch::patch(&mut patched, &patch).unwrap();
            let images: Vec<String> = patched["spec"]["initContainers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["image"].as_str().unwrap().to_string())
                .collect();
            images
        };
    let settings = WebhookSettings {
        image: "flag/agent:1".into(),
        postgres_image: "flag/agent-postgres:1".into(),
        ..WebhookSettings::default()
    };
    let db = ("datamon.io/database.pg", "{}");
    let ours = ("datamon.io/image", "pod/agent:2");
    // Install and agent alike: one image to pull.
    assert_eq!(
        image_of(&[db], &[], &settings),
        ["flag/agent-postgres:1"; 2]
    );
    assert_eq!(
        image_of(
            &[db, ours],
            &[("datamon.io/postgres-image", "ns/pg:3")],
            &settings
        ),
        ["ns/pg:3"; 2]
    );
    assert_eq!(
        image_of(
            &[db, ("datamon.io/postgres-image", "pod/pg:4")],
            &[("datamon.io/postgres-image", "ns/pg:3")],
            &settings
        ),
        ["pod/pg:4"; 2]
    );
    // Without a database, the plain agent image.
    let out = ("datamon.io/output.o", "{repo: r, path: /o}");
    assert_eq!(image_of(&[out], &[], &settings), ["flag/agent:1"; 2]);
    assert_eq!(
        WebhookSettings::default().postgres_image,
        format!(
            "ghcr.io/datamon-sidecar/datamon-agent-postgres:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
}
