//! datamon's metadata documents (YAML, fields in datamon's order) and the names and keys
//! that place them in the metadata buckets. Pure data: no I/O here.

pub mod bundle;
pub mod context;
pub mod label;
pub mod names;
pub mod repo;

use serde::{Deserialize, Serialize};

/// Who made a repo, bundle or label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contributor {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// E-mail address.
    #[serde(default)]
    pub email: String,
}

impl std::fmt::Display for Contributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.name.is_empty(), self.email.is_empty()) {
            (_, true) => f.write_str(&self.name),
            (true, false) => f.write_str(&self.email),
            (false, false) => write!(f, "{} <{}>", self.name, self.email),
        }
    }
}

/// Timestamps are UTC, written as RFC 3339 with nanoseconds, as Go's time.Time is.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Parses a YAML document, naming it in the error.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    location: impl FnOnce() -> String,
) -> crate::Result<T> {
    serde_norway::from_slice(bytes).map_err(|e| crate::Error::Document {
        location: location(),
        reason: format!("{e} (the document is truncated or not valid YAML for this type)"),
    })
}

/// Serializes a document to YAML.
pub fn to_yaml<T: Serialize>(doc: &T) -> crate::Result<bytes::Bytes> {
    serde_norway::to_string(doc)
        .map(|s| bytes::Bytes::from(s.into_bytes()))
        .map_err(|source| crate::Error::Serialize {
            what: std::any::type_name::<T>(),
            source,
        })
}
