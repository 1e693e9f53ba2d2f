//! 12-factor settings: defaults < config file < environment < flags, merged by figment
//! into one validated [`Settings`].
//!
//! - file: `--config-file`, `DATAMON_CONFIG_FILE`, else `$HOME/.datamon2/datamon.yaml` if
//!   it exists (datamon's location);
//! - environment: `DATAMON_GLOBAL_CONFIG` (config bucket) and `DATAMON_CONTEXT` as in
//!   datamon, and `DATAMON_<FIELD>` for every other field (`DATAMON_CONTRIBUTOR__EMAIL`
//!   for nested ones);
//! - flags: the CLI's global flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::bucket::{BucketUrl, StoreOptions};
use crate::cafs::LeafSize;
use crate::model::Contributor;
use crate::tuning::Tuning;

pub use datamon_edge::LogFormat;

/// Default bound of the on-disk leaf cache of `bundle mount`, in MiB.
pub const DEFAULT_CACHE_MIB: u64 = 4096;

/// Largest bound of the on-disk leaf cache, in MiB (1 PiB).
pub const MAX_CACHE_MIB: u64 = 1 << 30;

/// Every setting of the agent's bundle commands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Config bucket URL (`gs://b`, `s3://b`, `file:///dir`, or a bare GCS bucket name).
    pub config: Option<String>,
    /// Context name.
    pub context: String,
    /// Endpoint of an S3-compatible server.
    pub s3_endpoint: Option<String>,
    /// Endpoint of a GCS emulator (`http://host:port`, or `host:port` as
    /// `STORAGE_EMULATOR_HOST` is written); requests to it go unsigned.
    pub gcs_endpoint: Option<String>,
    /// GCS without credentials (a public bucket).
    pub gcs_anonymous: bool,
    /// Who is recorded as contributor of repos, bundles and labels.
    pub contributor: Contributor,
    /// Files transferred at once (datamon's `--concurrency-factor`).
    pub concurrency: usize,
    /// Memory for leaf buffers in flight, in MiB.
    pub memory_mib: usize,
    /// Leaf size of new bundles, in bytes.
    pub leaf_size: u64,
    /// Retries of a failed store request.
    pub retries: usize,
    /// Give up retrying a request after this many seconds.
    pub retry_timeout_secs: u64,
    /// Deadline for connecting to a store, in seconds.
    pub connect_timeout_secs: u64,
    /// Deadline for one store request, in seconds.
    pub request_timeout_secs: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `datamon_agent=debug`, ...).
    pub loglevel: String,
    /// `bundle mount`: also keep verified leaves in this directory, across mounts.
    pub cache_dir: Option<PathBuf>,
    /// `bundle mount`: most MiB of leaves kept in `cache_dir`.
    pub cache_mib: u64,
    /// The PostgreSQL servers of the data plan's databases.
    pub postgres: PostgresSettings,
    /// Kubernetes Events at each participant's end (`events:`, `DATAMON_EVENTS__<FIELD>`).
    pub events: crate::events::EventsSettings,
}

/// Settings of the PostgreSQL servers (`postgres:` in the file, `DATAMON_POSTGRES__<FIELD>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    /// Where PostgreSQL builds are, looked in before the defaults
    /// (`/usr/lib/postgresql/<major>/bin`, `/opt/datamon-postgres/<major>/bin`,
    /// `/usr/local/pgsql/bin`): bin dirs holding `postgres`, or dirs of `<major>/bin` dirs.
    /// In the environment a list (`[/a, /b]`) or `:`-separated.
    #[serde(deserialize_with = "paths_or_colon_list")]
    pub bin_dirs: Vec<PathBuf>,
    /// The account the servers run as when the agent is root (PostgreSQL refuses root).
    pub user: String,
    /// The superuser role the agent connects as.
    pub superuser: String,
    /// Deadline for a server to start and accept connections, in seconds.
    pub start_timeout_secs: u64,
    /// Deadline for a server to shut down, in seconds.
    pub stop_timeout_secs: u64,
    /// Deadline for a major-version migration (pg_upgrade, or dump and restore), in seconds.
    pub migrate_timeout_secs: u64,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            bin_dirs: Vec::new(),
            user: crate::postgres::process::DEFAULT_USER.into(),
            superuser: "postgres".into(),
            start_timeout_secs: 120,
            stop_timeout_secs: 120,
            migrate_timeout_secs: 3600,
        }
    }
}

impl PostgresSettings {
    /// Deadline for a server to start.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_secs)
    }

    /// Deadline for a server to stop.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout_secs)
    }

    /// Deadline for a migration.
    pub fn migrate_timeout(&self) -> Duration {
        Duration::from_secs(self.migrate_timeout_secs)
    }

    /// Checks ranges and formats.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason: &str| ConfigError::Invalid {
            name,
            reason: reason.to_string(),
        };
        if self.user.trim().is_empty() {
            return Err(invalid(
                "postgres.user",
                "must not be empty (default postgres)",
            ));
        }
        if self.superuser.trim().is_empty() {
            return Err(invalid(
                "postgres.superuser",
                "must not be empty (default postgres)",
            ));
        }
        for (name, v) in [
            ("postgres.start_timeout_secs", self.start_timeout_secs),
            ("postgres.stop_timeout_secs", self.stop_timeout_secs),
            ("postgres.migrate_timeout_secs", self.migrate_timeout_secs),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1 (seconds)"));
            }
        }
        if self.bin_dirs.iter().any(|d| d.as_os_str().is_empty()) {
            return Err(invalid("postgres.bin_dirs", "must not hold an empty path"));
        }
        Ok(())
    }
}

/// A list of paths, or one string of `:`-separated paths (as `PATH` is written).
fn paths_or_colon_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Paths {
        List(Vec<PathBuf>),
        One(String),
    }
    Ok(match Paths::deserialize(d)? {
        Paths::List(l) => l,
        Paths::One(s) => s
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
    })
}

impl Default for Settings {
    fn default() -> Self {
        let store = StoreOptions::default();
        let tuning = Tuning::default();
        let user = std::env::var("USER").unwrap_or_else(|_| "datamon".into());
        Self {
            config: None,
            context: "dev".into(),
            s3_endpoint: None,
            gcs_endpoint: None,
            gcs_anonymous: false,
            contributor: Contributor {
                name: user.clone(),
                email: format!("{user}@localhost"),
            },
            concurrency: tuning.files,
            memory_mib: tuning.memory_budget >> 20,
            leaf_size: LeafSize::default().bytes(),
            retries: store.retries,
            retry_timeout_secs: store.retry_timeout.as_secs(),
            connect_timeout_secs: store.connect_timeout.as_secs(),
            request_timeout_secs: store.request_timeout.as_secs(),
            log_format: LogFormat::Auto,
            loglevel: "info".into(),
            cache_dir: None,
            cache_mib: DEFAULT_CACHE_MIB,
            postgres: PostgresSettings::default(),
            events: crate::events::EventsSettings::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Sources that do not merge into [`Settings`].
    #[error("invalid configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    /// An explicitly named config file that does not exist.
    #[error("config file {0} does not exist: fix --config-file / DATAMON_CONFIG_FILE")]
    MissingFile(PathBuf),
    /// A value out of range.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Where the config file is: explicit, else datamon's default location if it exists.
pub fn config_file(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(Some(p.to_path_buf()))
        } else {
            Err(ConfigError::MissingFile(p.to_path_buf()))
        };
    }
    let default = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".datamon2/datamon.yaml"));
    Ok(default.filter(|p| p.is_file()))
}

/// The environment provider: datamon's two variables plus `DATAMON_<FIELD>`.
pub fn env_provider() -> Env {
    Env::prefixed("DATAMON_")
        .ignore(&["config_file"])
        // The data plan has its own variables (`DATAMON_PLAN`, `DATAMON_PLAN__...`), and the
        // webhook gives the application (whose wrapper reads these settings) its databases'
        // `DATAMON_DB_<NAME>_*`: neither is a setting.
        .filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            !k.starts_with("plan") && !k.starts_with("db_")
        })
        .map(|k| {
            if k == "global_config" {
                "config".into()
            } else {
                k.into()
            }
        })
        .split("__")
}

/// Merges defaults < `file` < environment < `flags` (a serializable struct whose `None`
/// fields are skipped).
pub fn load<F: Serialize>(file: Option<&Path>, flags: &F) -> Result<Settings, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(f) = file {
        fig = fig.merge(Yaml::file(f));
    }
    let settings: Settings = fig
        // Google's client libraries read the emulator from this variable; ours wins.
        .merge(
            Env::raw()
                .only(&[crate::gcs::EMULATOR_ENV])
                .map(|_| "gcs_endpoint".into()),
        )
        .merge(env_provider())
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(Box::new)?;
    settings.validate()?;
    Ok(settings)
}

impl Settings {
    /// Checks ranges and formats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason: &str| ConfigError::Invalid {
            name,
            reason: reason.to_string(),
        };
        if self.concurrency == 0 || self.concurrency > 4096 {
            return Err(invalid("concurrency", "must be between 1 and 4096"));
        }
        if self.memory_mib < 4 || self.memory_mib > 4095 {
            return Err(invalid("memory_mib", "must be between 4 and 4095 (MiB)"));
        }
        LeafSize::new(self.leaf_size).map_err(|e| invalid("leaf_size", &e.to_string()))?;
        if self.cache_mib == 0 || self.cache_mib > MAX_CACHE_MIB {
            return Err(invalid(
                "cache_mib",
                &format!("must be between 1 and {MAX_CACHE_MIB} (MiB)"),
            ));
        }
        if self
            .cache_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(invalid("cache_dir", "must not be empty"));
        }
        if let Some(c) = &self.config {
            BucketUrl::parse(c).map_err(|e| invalid("config", &e.to_string()))?;
        }
        self.postgres.validate()?;
        self.events.validate()?;
        if let Some(ep) = &self.s3_endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(invalid("s3_endpoint", "must be an http:// or https:// URL"));
            }
        }
        if let Some(ep) = &self.gcs_endpoint {
            if crate::gcs::endpoint_url(ep).is_none() {
                return Err(invalid(
                    "gcs_endpoint",
                    "must be an http:// or https:// URL, or host:port (as STORAGE_EMULATOR_HOST)",
                ));
            }
        }
        Ok(())
    }

    /// The config bucket URL.
    pub fn config_bucket(&self) -> crate::Result<BucketUrl> {
        BucketUrl::parse(self.config.as_deref().ok_or(crate::Error::NoConfigBucket)?)
    }

    /// Store options from these settings.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            gcs_endpoint: self
                .gcs_endpoint
                .as_deref()
                .and_then(crate::gcs::endpoint_url),
            gcs_anonymous: self.gcs_anonymous,
            retries: self.retries,
            retry_timeout: Duration::from_secs(self.retry_timeout_secs),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
        }
    }

    /// Transfer limits from these settings.
    pub fn tuning(&self) -> Tuning {
        Tuning {
            files: self.concurrency,
            memory_budget: self.memory_mib << 20,
        }
    }

    /// The on-disk leaf cache of `bundle mount`, if a directory is set.
    pub fn disk_cache(&self) -> Option<crate::mount::disk::DiskCacheConfig> {
        self.cache_dir
            .clone()
            .map(|dir| crate::mount::disk::DiskCacheConfig {
                dir,
                bytes: self.cache_mib << 20,
            })
    }

    /// The validated leaf size.
    pub fn leaf_size(&self) -> crate::Result<LeafSize> {
        Ok(LeafSize::new(self.leaf_size)?)
    }
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        context: Option<String>,
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        Jail::expect_with(|jail| {
            jail.create_file("c.yaml", "config: gs://from-file\ncontext: filectx\nconcurrency: 7\ncontributor:\n  email: a@b.c\n")?;
            let s = load(Some(Path::new("c.yaml")), &Flags::default()).unwrap();
            assert_eq!(s.config.as_deref(), Some("gs://from-file"));
            assert_eq!(s.context, "filectx");
            assert_eq!(s.concurrency, 7);
            assert_eq!(s.contributor.email, "a@b.c");
            assert_eq!(s.memory_mib, 64);

            jail.set_env("DATAMON_GLOBAL_CONFIG", "s3://from-env");
            jail.set_env("DATAMON_CONTEXT", "envctx");
            jail.set_env("DATAMON_CONTRIBUTOR__NAME", "Env Name");
            jail.set_env("DATAMON_DB_LEDGER_PORT", "5433"); // the application's, not ours
            let s = load(Some(Path::new("c.yaml")), &Flags::default()).unwrap();
            assert_eq!(s.config.as_deref(), Some("s3://from-env"));
            assert_eq!(s.context, "envctx");
            assert_eq!(s.contributor.name, "Env Name");

            let flags = Flags {
                context: Some("flagctx".into()),
            };
            let s = load(Some(Path::new("c.yaml")), &flags).unwrap();
            assert_eq!(s.context, "flagctx");
            assert_eq!(s.config.as_deref(), Some("s3://from-env"));
            Ok(())
        });
    }

    #[test]
    fn rejects_bad_values_with_their_name() {
        Jail::expect_with(|jail| {
            jail.create_file("c.yaml", "concurrency: 0\n")?;
            let e = load(Some(Path::new("c.yaml")), &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("concurrency"), "{e}");
            jail.create_file("d.yaml", "leaf_size: 0\n")?;
            let e = load(Some(Path::new("d.yaml")), &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("leaf_size") && e.contains("out of range"), "{e}");
            jail.create_file("e.yaml", "no_such_setting: 1\n")?;
            let e = load(Some(Path::new("e.yaml")), &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("no_such_setting"), "{e}");
            jail.create_file("g.yaml", "cache_mib: 0\n")?;
            let e = load(Some(Path::new("g.yaml")), &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("cache_mib"), "{e}");
            jail.create_file("f.yaml", "config: ftp://x\n")?;
            let e = load(Some(Path::new("f.yaml")), &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("ftp://x"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn the_disk_cache_comes_from_the_file_or_the_environment() {
        Jail::expect_with(|jail| {
            let s = load(None, &Flags::default()).unwrap();
            assert_eq!(s.disk_cache(), None);
            jail.create_file("c.yaml", "cache_dir: /var/cache/datamon\ncache_mib: 10\n")?;
            let s = load(Some(Path::new("c.yaml")), &Flags::default()).unwrap();
            let d = s.disk_cache().unwrap();
            assert_eq!(d.dir, PathBuf::from("/var/cache/datamon"));
            assert_eq!(d.bytes, 10 << 20);
            jail.set_env("DATAMON_CACHE_DIR", "/env/cache");
            jail.set_env("DATAMON_CACHE_MIB", "20");
            let s = load(Some(Path::new("c.yaml")), &Flags::default()).unwrap();
            let d = s.disk_cache().unwrap();
            assert_eq!(d.dir, PathBuf::from("/env/cache"));
            assert_eq!(d.bytes, 20 << 20);
            Ok(())
        });
    }

    #[test]
    fn postgres_settings_from_the_file_or_the_environment() {
        Jail::expect_with(|jail| {
            let s = load(None, &Flags::default()).unwrap();
            assert_eq!(s.postgres, PostgresSettings::default());
            assert_eq!(s.postgres.user, "postgres");
            jail.create_file(
                "c.yaml",
                "postgres:\n  bin_dirs: [/opt/pg]\n  user: pgsrv\n  migrate_timeout_secs: 60\n",
            )?;
            let s = load(Some(Path::new("c.yaml")), &Flags::default()).unwrap();
            assert_eq!(s.postgres.bin_dirs, [PathBuf::from("/opt/pg")]);
            assert_eq!(s.postgres.user, "pgsrv");
            assert_eq!(s.postgres.migrate_timeout(), Duration::from_secs(60));
            jail.set_env("DATAMON_POSTGRES__BIN_DIRS", "/a/bin:/b");
            jail.set_env("DATAMON_POSTGRES__USER", "other");
            let s = load(Some(Path::new("c.yaml")), &Flags::default()).unwrap();
            assert_eq!(s.postgres.bin_dirs, [PathBuf::from("/a/bin"), "/b".into()]);
            assert_eq!(s.postgres.user, "other");
            jail.set_env("DATAMON_POSTGRES__BIN_DIRS", "[/x, /y]");
            let s = load(None, &Flags::default()).unwrap();
            assert_eq!(s.postgres.bin_dirs, [PathBuf::from("/x"), "/y".into()]);
            jail.set_env("DATAMON_POSTGRES__START_TIMEOUT_SECS", "0");
            let e = load(None, &Flags::default()).unwrap_err().to_string();
            assert!(e.contains("postgres.start_timeout_secs"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn events_settings_from_the_file_or_the_environment() {
        Jail::expect_with(|jail| {
            let s = load(None, &Flags::default()).unwrap();
            assert!(!s.events.enabled);
            jail.create_file("c.yaml", "events:\n  timeout_ms: 500\n")?;
            let s = load(Some(Path::new("c.yaml")), &Flags::default()).unwrap();
            assert_eq!(s.events.timeout_ms, 500);
            jail.set_env("DATAMON_EVENTS__ENABLED", "true");
            jail.set_env("DATAMON_EVENTS__CA_FILE", "/tmp/ca.pem");
            let s = load(Some(Path::new("c.yaml")), &Flags::default()).unwrap();
            assert!(s.events.enabled);
            assert_eq!(s.events.ca_file, PathBuf::from("/tmp/ca.pem"));
            jail.set_env("DATAMON_EVENTS__API_SERVER", "http://plain");
            let e = load(None, &Flags::default()).unwrap_err().to_string();
            assert!(e.contains("events.api_server"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let e = config_file(Some(Path::new("/nonexistent/x.yaml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.yaml"), "{e}");
    }
}
