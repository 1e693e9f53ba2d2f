//! `repos/<repo>/repo.yaml` in the metadata bucket.

use serde::{Deserialize, Serialize};

use super::{Contributor, Timestamp};

/// A repository's descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoDoc {
    /// Repo name.
    pub name: String,
    /// What the repo holds.
    #[serde(default)]
    pub description: String,
    /// Creation time.
    pub timestamp: Timestamp,
    /// Who created it.
    #[serde(default)]
    pub contributor: Contributor,
}

/// Prefix under which every repo has a directory.
pub const PREFIX: &str = "repos";

/// Key of a repo's descriptor.
pub fn key(repo: &str) -> String {
    format!("{PREFIX}/{repo}/repo.yaml")
}
