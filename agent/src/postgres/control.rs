//! A data directory read without its server: the major of `PG_VERSION` and the first
//! fields of `global/pg_control` (pure parsers over thin file reads).
//!
//! pg_control's first fields are laid out alike from 9.x to 18 (little-endian here): the
//! system identifier (u64), `pg_control_version` (u32 at byte 8: 1201 for 12, 1300 for
//! 13–17, 1800 for 18), `catalog_version_no` (u32 at 12) and the cluster `state` (u32 at
//! 16). A newer `pg_controldata` refuses an older file, so the agent reads these itself.

use std::path::{Path, PathBuf};

/// A data directory whose version or control file cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// No `PG_VERSION`.
    #[error("{0} is not a PostgreSQL data directory (no PG_VERSION): restore a bundle of a data directory, or none for a new cluster")]
    NotDataDir(PathBuf),
    /// A file that could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `PG_VERSION` holds no version.
    #[error("{path} holds {content:?}, not a PostgreSQL version (like 12 or 9.6): the data directory is corrupt or foreign")]
    BadVersion {
        /// The file.
        path: PathBuf,
        /// What it holds (its start).
        content: String,
    },
    /// `global/pg_control` missing.
    #[error("{0} is missing: the data directory is incomplete or corrupt")]
    NoControl(PathBuf),
    /// `global/pg_control` too short.
    #[error(
        "{path} has {len} bytes, too few for a pg_control file: the data directory is corrupt"
    )]
    ShortControl {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

/// PG_VERSION of a data directory: 12, 18 ("9.6" → 9). Error if missing: "not a PostgreSQL
/// data directory (no PG_VERSION)".
pub(crate) fn data_major(data: &Path) -> Result<u32, ControlError> {
    let path = data.join("PG_VERSION");
    let text = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ControlError::NotDataDir(data.to_path_buf()))
        }
        Err(source) => return Err(ControlError::Read { path, source }),
    };
    let text = String::from_utf8_lossy(&text);
    parse_pg_version(&text).ok_or_else(|| ControlError::BadVersion {
        path,
        content: text.chars().take(40).collect(),
    })
}

/// `PG_VERSION` of a data directory as written ("9.6"), trimmed, for messages.
pub(crate) fn pg_version_text(data: &Path) -> String {
    let text = std::fs::read(data.join("PG_VERSION")).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .trim()
        .chars()
        .take(40)
        .collect()
}

/// The major of a `PG_VERSION` text: "18\n" → 18, "9.6" → 9; `None` if it is not one.
pub(crate) fn parse_pg_version(text: &str) -> Option<u32> {
    let t = text.trim();
    let (major, rest) = t.split_once('.').unwrap_or((t, ""));
    if major.is_empty()
        || !major.bytes().all(|b| b.is_ascii_digit())
        || !rest.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    major.parse().ok().filter(|&m| m > 0)
}

/// The state a cluster's pg_control records (`DBState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClusterState {
    /// 0: starting up.
    Starting,
    /// 1: shut down cleanly.
    ShutDown,
    /// 2: a standby shut down cleanly.
    ShutDownInRecovery,
    /// 3: shutting down.
    ShuttingDown,
    /// 4: in crash recovery.
    InCrashRecovery,
    /// 5: in archive recovery.
    InArchiveRecovery,
    /// 6: running (or killed / stopped with `-m immediate` while running).
    InProduction,
    /// Any other value.
    Unknown(u32),
}

impl ClusterState {
    /// The state of its numeric value.
    pub(crate) fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::ShutDown,
            2 => Self::ShutDownInRecovery,
            3 => Self::ShuttingDown,
            4 => Self::InCrashRecovery,
            5 => Self::InArchiveRecovery,
            6 => Self::InProduction,
            n => Self::Unknown(n),
        }
    }
}

impl std::fmt::Display for ClusterState {
    /// As pg_controldata words it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Starting => f.write_str("starting up"),
            Self::ShutDown => f.write_str("shut down"),
            Self::ShutDownInRecovery => f.write_str("shut down in recovery"),
            Self::ShuttingDown => f.write_str("shutting down"),
            Self::InCrashRecovery => f.write_str("in crash recovery"),
            Self::InArchiveRecovery => f.write_str("in archive recovery"),
            Self::InProduction => f.write_str("in production"),
            Self::Unknown(n) => write!(f, "unrecognized status code {n}"),
        }
    }
}

/// The fields of pg_control the agent needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Control {
    /// `pg_control_version` (1201, 1300, 1800, ...).
    pub control_version: u32,
    /// `catalog_version_no`.
    pub catalog_version: u32,
    /// The cluster's state.
    pub state: ClusterState,
}

impl Control {
    /// Whether the cluster was shut down cleanly (a copy of it needs no recovery).
    pub(crate) fn clean(&self) -> bool {
        matches!(
            self.state,
            ClusterState::ShutDown | ClusterState::ShutDownInRecovery
        )
    }
}

/// Size of the fields [`parse_control`] reads.
const CONTROL_PREFIX: usize = 20;

/// The fields of a pg_control file's bytes, `None` when too short.
pub(crate) fn parse_control(bytes: &[u8]) -> Option<Control> {
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    };
    Some(Control {
        control_version: u32_at(8)?,
        catalog_version: u32_at(12)?,
        state: ClusterState::from_u32(u32_at(16)?),
    })
}

/// global/pg_control of a data directory: LE u32 at 8, 12, 16.
pub(crate) fn read_control(data: &Path) -> Result<Control, ControlError> {
    let path = data.join("global/pg_control");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ControlError::NoControl(path))
        }
        Err(source) => return Err(ControlError::Read { path, source }),
    };
    if bytes.len() < CONTROL_PREFIX {
        return Err(ControlError::ShortControl {
            path,
            len: bytes.len(),
        });
    }
    parse_control(&bytes).ok_or(ControlError::ShortControl {
        path,
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_version_gives_the_major() {
        assert_eq!(parse_pg_version("12\n"), Some(12));
        assert_eq!(parse_pg_version("18"), Some(18));
        assert_eq!(parse_pg_version("9.6\n"), Some(9));
        for bad in ["", "x", "12a", "-1", "0", "9.x", "1 2"] {
            assert_eq!(parse_pg_version(bad), None, "{bad:?}");
        }
    }

    fn control_bytes(version: u32, catalog: u32, state: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[..8].copy_from_slice(&0x1234_5678_9abc_def0u64.to_le_bytes());
        b[8..12].copy_from_slice(&version.to_le_bytes());
        b[12..16].copy_from_slice(&catalog.to_le_bytes());
        b[16..20].copy_from_slice(&state.to_le_bytes());
        b
    }

    #[test]
    fn pg_control_fields_and_states() {
        let c = parse_control(&control_bytes(1201, 201909212, 6)).unwrap();
        assert_eq!(c.control_version, 1201);
        assert_eq!(c.catalog_version, 201909212);
        assert_eq!(c.state, ClusterState::InProduction);
        assert!(!c.clean());
        for (v, s, clean) in [
            (0, ClusterState::Starting, false),
            (1, ClusterState::ShutDown, true),
            (2, ClusterState::ShutDownInRecovery, true),
            (3, ClusterState::ShuttingDown, false),
            (4, ClusterState::InCrashRecovery, false),
            (5, ClusterState::InArchiveRecovery, false),
            (77, ClusterState::Unknown(77), false),
        ] {
            let c = parse_control(&control_bytes(1800, 1, v)).unwrap();
            assert_eq!((c.state, c.clean()), (s, clean), "{v}");
        }
        assert_eq!(parse_control(&[0; 19]), None);
        assert_eq!(ClusterState::InProduction.to_string(), "in production");
    }

    #[test]
    fn files_missing_short_or_foreign_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let e = data_major(d).unwrap_err().to_string();
        assert!(
            e.contains("not a PostgreSQL data directory (no PG_VERSION)"),
            "{e}"
        );
        std::fs::write(d.join("PG_VERSION"), "hello").unwrap();
        let e = data_major(d).unwrap_err().to_string();
        assert!(e.contains("\"hello\""), "{e}");
        std::fs::write(d.join("PG_VERSION"), "14\n").unwrap();
        assert_eq!(data_major(d).unwrap(), 14);

        let e = read_control(d).unwrap_err().to_string();
        assert!(e.contains("global/pg_control is missing"), "{e}");
        std::fs::create_dir(d.join("global")).unwrap();
        std::fs::write(d.join("global/pg_control"), [0u8; 10]).unwrap();
        let e = read_control(d).unwrap_err().to_string();
        assert!(e.contains("10 bytes"), "{e}");
        std::fs::write(d.join("global/pg_control"), control_bytes(1300, 2, 1)).unwrap();
        let c = read_control(d).unwrap();
        assert_eq!(c.control_version, 1300);
        assert!(c.clean());
    }
}
