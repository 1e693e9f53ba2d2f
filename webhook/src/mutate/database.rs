//! `datamon.io/database.<name>`: a PostgreSQL server of the pod, and what it gives the
//! containers.
//!
//! The value is a YAML flow mapping of the plan's database fields (`source`, `port`,
//! `output`, `upload`, `major`, `settings`), but for the owner's password: the annotation
//! names a Secret key (`owner: {role, secret: {name, key}}`) where the plan names the agent's
//! environment variable holding it. Unknown fields are refused by name; there are no
//! namespace defaults. The webhook fixes what the plan leaves open: the data directory's
//! parent is `<DATABASE_ROOT>/<name>` (an emptyDir mounted only in the agent container) and
//! the socket directory the default, `<coordination>/postgres/<name>`, in the coordination
//! volume the application containers already mount.
//!
//! Each wrapped application container gets, per database, `DATAMON_DB_<NAME>_HOST` (the
//! socket directory; `localhost` when the owner is the superuser `postgres`, whom the socket
//! admits only as the agent), `_PORT`, `_USER`, `_DATABASE`, `_URL` and `_PASSWORD` (from the Secret)
//! or `_PASSWORD_FILE` (the generated password's file); with exactly one database also
//! libpq's `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE` and, with a Secret, `PGPASSWORD`.
//! A variable the container's own `env` already sets is left as it is.

use std::collections::BTreeMap;
use std::path::Path;

use datamon_plan::schema::{DATABASE_ROOT, PASSWORD_FILE};
use datamon_plan::{Database, DatabaseOutput, DatabaseSource, Owner, Plan, UploadWhen};
use serde::Deserialize;
use serde_json::{json, Value};

use super::annotations::{stringify_scalars, yaml_value, Found, Problem};
use super::k8s_names::is_dns_subdomain;

/// A database as the annotation asks for it: the plan's, and where its password is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseRequest {
    /// The plan's database (`dir`, `socket_dir` and `owner.password_env` not yet set).
    pub database: Database,
    /// The Secret key holding the owner's password; none: the agent generates one.
    pub secret: Option<SecretKey>,
}

/// A key of a Secret in the pod's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    /// The Secret's name.
    pub name: String,
    /// The key.
    pub key: String,
}

/// The annotation's fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Annotation {
    #[serde(default)]
    source: Option<DatabaseSource>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    output: Option<DatabaseOutput>,
    #[serde(default)]
    upload: UploadWhen,
    #[serde(default)]
    owner: Option<OwnerAnnotation>,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    major: Option<i64>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
}

/// `owner`: the role, and the Secret key of its password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerAnnotation {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    secret: Option<SecretKey>,
}

const EXAMPLE: &str = "\"{source: {repo: pg-warehouse, label: good}, port: 5432, output: {repo: pg-warehouse, message: nightly}, owner: {role: app, secret: {name: warehouse-db, key: password}}}\"";

/// Parses `datamon.io/database.<name>`.
pub(crate) fn parse(found: &Found<'_>, name: &str) -> Result<DatabaseRequest, Problem> {
    let bad = |p: String| Problem::new(found.to_string(), p);
    if name.is_empty() {
        return Err(bad(
            "the database has no name: name it in the key, as in `datamon.io/database.<name>`"
                .into(),
        ));
    }
    let Value::Object(map) = yaml_value(found)? else {
        return Err(bad(format!(
            "the value must be a mapping of the database's fields, such as {EXAMPLE}"
        )));
    };
    // Every leaf is a string (`label: 2024`, `work_mem: 64`) but the numbers `port` and
    // `major`, which may also be written as strings.
    let map = map
        .into_iter()
        .map(|(k, v)| {
            let v = match (k.as_str(), v) {
                ("port" | "major", Value::String(s)) => s
                    .trim()
                    .parse::<i64>()
                    .map_or(Value::String(s), Value::from),
                ("port" | "major", v) => v,
                (_, v) => stringify_scalars(v),
            };
            (k, v)
        })
        .collect();
    let a: Annotation = serde_json::from_value(Value::Object(map)).map_err(|e| {
        bad(format!(
            "{e}: write the database as a mapping such as {EXAMPLE} (docs/annotations.md)"
        ))
    })?;
    let port = match a.port {
        None => 5432,
        Some(p) => u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
            bad(format!(
                "field `port`: {p} is not a port: use 1 to 65535, e.g. 5432"
            ))
        })?,
    };
    let major = a
        .major
        .map(|m| {
            u32::try_from(m).map_err(|_| {
                bad(format!(
                    "field `major`: {m} is not a PostgreSQL major version: use e.g. 18"
                ))
            })
        })
        .transpose()?;
    let (role, secret) = match a.owner {
        Some(o) => (o.role, o.secret),
        None => (None, None),
    };
    if let Some(s) = &secret {
        if !is_dns_subdomain(&s.name) {
            return Err(bad(format!(
                "field `owner.secret.name`: {:?} is not a Secret name: use lowercase letters, digits, `-` and `.`",
                s.name
            )));
        }
        let key_ok = !s.key.is_empty()
            && s.key.len() <= 253
            && s.key
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c));
        if !key_ok {
            return Err(bad(format!(
                "field `owner.secret.key`: {:?} is not a Secret key: use letters, digits, `-`, `_` and `.`",
                s.key
            )));
        }
    }
    let mut owner = Owner::default();
    if let Some(role) = role {
        owner.role = role;
    }
    Ok(DatabaseRequest {
        database: Database {
            name: name.to_string(),
            source: a.source,
            port,
            output: a.output,
            upload: a.upload,
            owner,
            database: a.database,
            major,
            settings: a.settings,
            dir: None,
            socket_dir: None,
        },
        secret,
    })
}

/// `DATAMON_DB_<NAME>`: the name upper-cased, `-` as `_` (names have no `_`, so two
/// databases never share it).
fn env_prefix(name: &str) -> String {
    format!("DATAMON_DB_{}", name.to_uppercase().replace('-', "_"))
}

/// The agent's (and the application's) variable holding the owner's password.
pub(crate) fn password_env(name: &str) -> String {
    format!("{}_PASSWORD", env_prefix(name))
}

/// The plan's database for `req`: its directories and password variable filled in.
pub(crate) fn to_plan(req: &DatabaseRequest) -> Database {
    let mut db = req.database.clone();
    db.dir = Some(Path::new(DATABASE_ROOT).join(&db.name));
    if req.secret.is_some() {
        db.owner.password_env = Some(password_env(&db.name));
    }
    db
}

fn secret_env(name: String, secret: &SecretKey) -> Value {
    json!({
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
    })
}

/// The superuser role the agent connects as on the socket (its `postgres.superuser` default).
const SUPERUSER: &str = "postgres";

/// The agent container's variables: each database's password, from its Secret key.
pub(crate) fn agent_env(databases: &[DatabaseRequest]) -> Vec<Value> {
    databases
        .iter()
        .filter_map(|d| {
            let s = d.secret.as_ref()?;
            Some(secret_env(password_env(&d.database.name), s))
        })
        .collect()
}

/// An application container's variables for the databases of `plan` (the rendered ones,
/// in `databases`' order), before those the container sets itself are taken out.
pub(crate) fn app_env(plan: &Plan, databases: &[DatabaseRequest]) -> Vec<Value> {
    let value = |name: String, v: String| json!({"name": name, "value": v});
    let mut env = Vec::new();
    let single = databases.len() == 1;
    for (db, req) in plan.databases.iter().zip(databases) {
        let p = env_prefix(&db.name);
        let socket_dir = db.socket_dir_or_default(&plan.coordination);
        let role = &db.owner.role;
        // On the socket the superuser is the agent's (peer authentication,
        // agent/src/postgres/server.rs): an application that is the superuser too connects
        // over TCP, with its password, as everyone does there.
        let host = if role == SUPERUSER {
            "localhost".to_string()
        } else {
            socket_dir.display().to_string()
        };
        env.push(value(format!("{p}_HOST"), host.clone()));
        env.push(value(format!("{p}_PORT"), db.port.to_string()));
        env.push(value(format!("{p}_USER"), role.clone()));
        env.push(value(
            format!("{p}_DATABASE"),
            db.database_name().to_string(),
        ));
        env.push(value(
            format!("{p}_URL"),
            format!(
                "postgresql://{role}@localhost:{}/{}",
                db.port,
                db.database_name()
            ),
        ));
        match &req.secret {
            Some(s) => env.push(secret_env(format!("{p}_PASSWORD"), s)),
            None => env.push(value(
                format!("{p}_PASSWORD_FILE"),
                socket_dir.join(PASSWORD_FILE).display().to_string(),
            )),
        }
        if single {
            env.push(value("PGHOST".into(), host));
            env.push(value("PGPORT".into(), db.port.to_string()));
            env.push(value("PGUSER".into(), role.clone()));
            env.push(value("PGDATABASE".into(), db.database_name().to_string()));
            if let Some(s) = &req.secret {
                env.push(secret_env("PGPASSWORD".into(), s));
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::super::annotations::Source;
    use super::*;

    fn parse_value(value: &str) -> Result<DatabaseRequest, Problem> {
        let found = Found {
            key: "datamon.io/database.warehouse",
            value,
            source: Source::Pod,
        };
        parse(&found, "warehouse")
    }

    #[test]
    fn the_fields_and_their_defaults() {
        let r = parse_value(
            "{source: {repo: pg, label: 2024}, port: '5433', major: 18, settings: {work_mem: 64, jit: off}, owner: {role: app, secret: {name: db-pass, key: password}}}",
        )
        .unwrap();
        let db = &r.database;
        assert_eq!(db.source.as_ref().unwrap().label.as_deref(), Some("2024"));
        assert_eq!((db.port, db.major), (5433, Some(18)));
        assert_eq!(db.settings["work_mem"], "64");
        assert_eq!(db.settings["jit"], "off");
        assert_eq!(db.owner.role, "app");
        assert_eq!(r.secret.as_ref().unwrap().key, "password");
        let plan_db = to_plan(&r);
        assert_eq!(
            plan_db.owner.password_env.as_deref(),
            Some("DATAMON_DB_WAREHOUSE_PASSWORD")
        );
        assert_eq!(
            plan_db.dir.as_deref(),
            Some(Path::new("/var/lib/datamon/postgres/warehouse"))
        );
        let empty = parse_value("{}").unwrap();
        assert_eq!(empty.database.port, 5432);
        assert_eq!(empty.database.owner.role, "postgres");
        assert!(empty.secret.is_none() && to_plan(&empty).owner.password_env.is_none());
    }

    #[test]
    fn problems_name_the_field() {
        for (value, words) in [
            ("{prot: 5433}", "unknown field `prot`"),
            (
                "{owner: {role: app, password_env: P}}",
                "unknown field `password_env`",
            ),
            ("{port: 70000}", "field `port`: 70000 is not a port"),
            ("{port: -1}", "field `port`: -1 is not a port"),
            ("{port: many}", "invalid type: string \"many\""),
            ("{major: -3}", "field `major`: -3 is not a PostgreSQL major"),
            (
                "{owner: {secret: {name: Bad_Name, key: k}}}",
                "`owner.secret.name`",
            ),
            (
                "{owner: {secret: {name: s, key: 'a b'}}}",
                "`owner.secret.key`",
            ),
            ("{owner: {secret: {name: s}}}", "missing field `key`"),
            ("[5432]", "must be a mapping"),
        ] {
            let e = parse_value(value).unwrap_err().to_string();
            assert!(
                e.starts_with("datamon.io/database.warehouse: ") && e.contains(words),
                "{value}: {words:?} missing from {e}"
            );
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(password_env("pg-main-2"), "DATAMON_DB_PG_MAIN_2_PASSWORD");
    }
}
