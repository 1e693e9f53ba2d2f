//! The context document (`contexts/<ctx>/context.yaml` in the config bucket), which names
//! a context's five buckets.

use serde::{Deserialize, Serialize};

/// datamon's context model version.
pub const CONTEXT_VERSION: u64 = 1;

/// A context: the buckets that hold its repos.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextDoc {
    /// Context name.
    pub name: String,
    /// Write-ahead log bucket (not used by bundle operations).
    pub wal: String,
    /// Read log bucket (not used by bundle operations).
    pub readlog: String,
    /// Blob bucket (leaves and root objects).
    pub blob: String,
    /// Metadata bucket (repos, bundles).
    pub metadata: String,
    /// Versioned metadata bucket (labels).
    pub vmetadata: String,
    /// Model version.
    #[serde(default)]
    pub version: u64,
}

impl ContextDoc {
    /// A context with datamon's default bucket names, overridden where given.
    pub fn with_defaults(name: &str, overrides: &BucketNames) -> Self {
        let pick = |o: &Option<String>, suffix: &str| {
            o.clone().unwrap_or_else(|| format!("{name}-{suffix}"))
        };
        Self {
            name: name.to_string(),
            wal: pick(&overrides.wal, "wal"),
            readlog: pick(&overrides.read_log, "read-log"),
            blob: pick(&overrides.blob, "blob"),
            metadata: pick(&overrides.meta, "metadata"),
            vmetadata: pick(&overrides.vmeta, "v-metadata"),
            version: CONTEXT_VERSION,
        }
    }

    /// The five bucket names.
    pub fn buckets(&self) -> [&str; 5] {
        [
            &self.blob,
            &self.metadata,
            &self.vmetadata,
            &self.wal,
            &self.readlog,
        ]
    }
}

/// Bucket names given to `context create` (datamon's flags `--blob --meta --vmeta --wal --read-log`).
#[derive(Clone, Debug, Default)]
pub struct BucketNames {
    /// `--blob`.
    pub blob: Option<String>,
    /// `--meta`.
    pub meta: Option<String>,
    /// `--vmeta`.
    pub vmeta: Option<String>,
    /// `--wal`.
    pub wal: Option<String>,
    /// `--read-log`.
    pub read_log: Option<String>,
}

/// Key of a context document in the config bucket.
pub fn key(context: &str) -> String {
    format!("contexts/{context}/context.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_field_order() {
        let c = ContextDoc::with_defaults("dev", &BucketNames::default());
        let y = serde_norway::to_string(&c).unwrap();
        assert_eq!(
            y,
            "name: dev\nwal: dev-wal\nreadlog: dev-read-log\nblob: dev-blob\nmetadata: dev-metadata\nvmetadata: dev-v-metadata\nversion: 1\n"
        );
    }
}
