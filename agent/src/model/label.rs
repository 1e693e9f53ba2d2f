//! `labels/<repo>/<label>/label.yaml` in the versioned metadata bucket.

use serde::{Deserialize, Serialize};

use super::{Contributor, Timestamp};

/// A label: a name pointing at a bundle; overwritten to move it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelDoc {
    /// Label name.
    #[serde(default)]
    pub name: String,
    /// The bundle it points at.
    pub id: String,
    /// When it was set.
    pub timestamp: Timestamp,
    /// Who set it.
    #[serde(default)]
    pub contributors: Vec<Contributor>,
}

/// Prefix of a repo's labels.
pub fn prefix(repo: &str) -> String {
    format!("labels/{repo}")
}

/// Key of a label document.
pub fn key(repo: &str, label: &str) -> String {
    format!("labels/{repo}/{label}/label.yaml")
}
