//! `bundle.yaml` (the commit point) and `bundle-files-<n>.yaml` (the file lists) under
//! `bundles/<repo>/<id>/` in the metadata bucket.

use serde::{Deserialize, Serialize};

use super::{Contributor, Timestamp};
use crate::cafs::leaf::DEFAULT_LEAF_SIZE;

/// The bundle format version this agent writes.
pub const BUNDLE_VERSION: u64 = 2;

/// Most entries in one `bundle-files-<n>.yaml`.
pub const ENTRIES_PER_DOC: usize = 1000;

fn default_leaf_size() -> u64 {
    u64::from(DEFAULT_LEAF_SIZE)
}

/// A bundle's descriptor; its presence is what makes the bundle exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleDoc {
    /// Leaf size of every file in the bundle (validated on use).
    #[serde(default = "default_leaf_size")]
    pub leaf_size: u64,
    /// KSUID.
    pub id: String,
    /// Commit message.
    #[serde(default)]
    pub message: String,
    /// Parent bundles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    /// Commit time.
    pub timestamp: Timestamp,
    /// Who made it.
    #[serde(default)]
    pub contributors: Vec<Contributor>,
    /// Number of `bundle-files-<n>.yaml` documents.
    pub count: u64,
    /// Bundle format version.
    #[serde(default)]
    pub version: u64,
    /// Always `blake`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication: Option<String>,
    /// Optional run stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runstage: Option<String>,
}

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// Hex root key of the file.
    pub hash: String,
    /// Relative path with `/`.
    pub name: String,
    /// Always 0 in datamon.
    #[serde(default)]
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time of the file when it was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

/// One `bundle-files-<n>.yaml` document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntries {
    /// The entries.
    #[serde(rename = "BundleEntries", default)]
    pub entries: Vec<BundleEntry>,
}

/// Prefix of a repo's bundles.
pub fn prefix(repo: &str) -> String {
    format!("bundles/{repo}")
}

/// Key of a bundle's descriptor.
pub fn key(repo: &str, id: &str) -> String {
    format!("bundles/{repo}/{id}/bundle.yaml")
}

/// Key of a bundle's n-th file list.
pub fn files_key(repo: &str, id: &str, n: u64) -> String {
    format!("bundles/{repo}/{id}/bundle-files-{n}.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_order_matches_datamon() {
        let doc = BundleDoc {
            leaf_size: 2097152,
            id: "2Cw1nGJHBpK3nDdRkPjMYZdeFSb".into(),
            message: "m".into(),
            parents: vec![],
            timestamp: "2026-11-28T05:27:09.5Z".parse().unwrap(),
            contributors: vec![Contributor {
                name: "n".into(),
                email: "e@x".into(),
            }],
            count: 1,
            version: BUNDLE_VERSION,
            deduplication: Some("blake".into()),
            runstage: None,
        };
        let y = serde_norway::to_string(&doc).unwrap();
        let keys: Vec<&str> = y
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('-'))
            .filter_map(|l| l.split(':').next())
            .collect();
        assert_eq!(
            keys,
            [
                "leafSize",
                "id",
                "message",
                "timestamp",
                "contributors",
                "count",
                "version",
                "deduplication"
            ]
        );
        let back: BundleDoc = serde_norway::from_str(&y).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn reads_go_timestamps_and_missing_optional_fields() {
        let y = "BundleEntries:\n- hash: abc\n  name: a/b\n  mode: 0\n  size: 3\n  timestamp: 2019-05-03T21:11:32.123456789-07:00\n- hash: def\n  name: c\n  size: 0\n";
        let e: BundleEntries = serde_norway::from_str(y).unwrap();
        assert_eq!(e.entries.len(), 2);
        assert_eq!(
            e.entries[0].timestamp.unwrap().to_rfc3339(),
            "2019-05-04T04:11:32.123456789+00:00"
        );
        assert_eq!(e.entries[1].timestamp, None);
    }
}
