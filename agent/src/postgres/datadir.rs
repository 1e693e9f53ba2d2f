//! A data directory as a bundle carries it, and back: what a restored copy lacks (the
//! empty directories PostgreSQL needs, which a bundle of files cannot hold), what it must
//! lose (a stale `postmaster.pid`, the bundle's `pg_version`), and what a saved copy need
//! not carry (postmaster files, temporary statistics and files, WAL segments other than
//! the ones the last checkpoint needs). The decisions are pure functions; the I/O around
//! them is thin.

use std::path::{Path, PathBuf};

/// The file at a saved bundle's root holding the major ("18"), as datamon's own sidecar
/// writes and reads it; not part of the data directory.
pub(crate) const PG_VERSION_FILE: &str = "pg_version";

/// Files of a running or crashed postmaster, never restored or saved.
const POSTMASTER_FILES: [&str; 2] = ["postmaster.pid", "postmaster.opts"];

/// A data directory that could not be prepared or pruned.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}")]
pub(crate) struct DataDirError {
    /// What was being done.
    op: &'static str,
    /// The file or directory.
    path: PathBuf,
    /// Why.
    #[source]
    source: std::io::Error,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_path_buf();
    move |source| DataDirError { op, path, source }
}

/// The directories a data directory of `major` must have at start, empty or not
/// (relative to it). Creating one that is not used by that major is harmless.
pub(crate) fn skeleton(major: u32) -> Vec<&'static str> {
    let mut dirs = vec![
        "base",
        "global",
        "pg_commit_ts",
        "pg_dynshmem",
        "pg_logical",
        "pg_logical/mappings",
        "pg_logical/snapshots",
        "pg_multixact",
        "pg_multixact/members",
        "pg_multixact/offsets",
        "pg_notify",
        "pg_replslot",
        "pg_serial",
        "pg_snapshots",
        "pg_stat",
        "pg_stat_tmp",
        "pg_subtrans",
        "pg_tblspc",
        "pg_twophase",
        "pg_wal",
        "pg_wal/archive_status",
        "pg_xact",
    ];
    if major >= 17 {
        // WAL summaries (incremental backups) came with 17.
        dirs.push("pg_wal/summaries");
    }
    dirs
}

/// Makes a restored copy startable: the skeleton of `major` recreated, the postmaster's
/// files of the server that was copied and the bundle's `pg_version` removed.
pub(crate) fn prepare_restored(data: &Path, major: u32) -> Result<(), DataDirError> {
    for d in skeleton(major) {
        let p = data.join(d);
        std::fs::create_dir_all(&p).map_err(io("create", &p))?;
    }
    for f in POSTMASTER_FILES.iter().chain(&[PG_VERSION_FILE]) {
        remove_file_if_present(&data.join(f))?;
    }
    Ok(())
}

/// Writes `pg_version` (the major) at the root of a data directory about to be saved.
pub(crate) fn write_pg_version(data: &Path, major: u32) -> Result<(), DataDirError> {
    let p = data.join(PG_VERSION_FILE);
    std::fs::write(&p, format!("{major}\n")).map_err(io("write", &p))
}

fn remove_file_if_present(p: &Path) -> Result<(), DataDirError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", p)(e)),
        _ => Ok(()),
    }
}

/// What the last checkpoint of a cleanly stopped cluster needs of its WAL, from the
/// output of `pg_controldata`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CheckpointWal {
    /// "Latest checkpoint's REDO WAL file": the segment recovery starts in.
    pub redo_file: String,
    /// The segments holding the checkpoint record itself (its start, and the next one
    /// when the record may run over the segment's end).
    pub record_files: Vec<String>,
}

impl CheckpointWal {
    /// Whether the WAL file `name` (of pg_wal) is needed.
    pub(crate) fn keeps(&self, name: &str) -> bool {
        name == self.redo_file || self.record_files.iter().any(|f| f == name)
    }
}

/// Parses `pg_controldata`'s output: the REDO segment, and the segments of the checkpoint
/// record ("Latest checkpoint location", "Bytes per WAL segment"). None when a field is
/// missing or malformed (then nothing is pruned).
pub(crate) fn parse_controldata(text: &str) -> Option<CheckpointWal> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let redo_file = field("Latest checkpoint's REDO WAL file")?;
    if !is_wal_segment(&redo_file) {
        return None;
    }
    let seg_size: u64 = field("Bytes per WAL segment")?.parse().ok()?;
    if seg_size == 0 || !seg_size.is_power_of_two() {
        return None;
    }
    let lsn = parse_lsn(&field("Latest checkpoint location")?)?;
    let timeline = &redo_file[..8];
    // A checkpoint record is a few hundred bytes: one that starts this close to a
    // segment's end may continue in the next.
    const RECORD_MAX: u64 = 1024;
    let mut record_files = vec![segment_name(timeline, lsn, seg_size)];
    let end = segment_name(timeline, lsn + RECORD_MAX, seg_size);
    if end != record_files[0] {
        record_files.push(end);
    }
    Some(CheckpointWal {
        redo_file,
        record_files,
    })
}

/// `0/1A2B3C0` → the 64-bit position.
fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

/// The WAL file name of the segment holding `lsn` on `timeline` (8 hex digits), as
/// PostgreSQL's XLogFileName writes it.
fn segment_name(timeline: &str, lsn: u64, seg_size: u64) -> String {
    let segno = lsn / seg_size;
    let per_xlogid = 0x1_0000_0000 / seg_size;
    format!(
        "{timeline}{:08X}{:08X}",
        segno / per_xlogid,
        segno % per_xlogid
    )
}

/// A WAL segment's file name: 24 hex digits.
fn is_wal_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What [`prune`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    /// Files removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Removes from a cleanly stopped data directory what a copy need not carry: the
/// postmaster's files, the content of pg_stat_tmp, `pgsql_tmp*` directories, and (when
/// `wal` is known) every WAL segment the last checkpoint does not need.
pub(crate) fn prune(data: &Path, wal: Option<&CheckpointWal>) -> Result<Pruned, DataDirError> {
    let mut pruned = Pruned::default();
    let remove = |p: &Path, pruned: &mut Pruned| -> Result<(), DataDirError> {
        let len = std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0);
        remove_file_if_present(p)?;
        pruned.files += 1;
        pruned.bytes += len;
        Ok(())
    };
    for f in POSTMASTER_FILES {
        let p = data.join(f);
        if p.exists() {
            remove(&p, &mut pruned)?;
        }
    }
    for f in files_in(&data.join("pg_stat_tmp"))? {
        remove(&f, &mut pruned)?;
    }
    if let Some(wal) = wal {
        for f in files_in(&data.join("pg_wal"))? {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if is_wal_segment(name) && !wal.keeps(name) {
                remove(&f, &mut pruned)?;
            }
        }
    }
    // Temporary files of sorts and hashes: base/pgsql_tmp, and per tablespace.
    for parent in [data.join("base"), data.join("pg_tblspc")] {
        let Ok(rd) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("pgsql_tmp") && e.path().is_dir() {
                for f in files_in(&e.path())? {
                    remove(&f, &mut pruned)?;
                }
            }
        }
    }
    Ok(pruned)
}

/// The regular files directly in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, DataDirError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io("read", dir))?;
        if e.file_type().map_err(io("read", &e.path()))?.is_file() {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// Bytes of the regular files under `dir` (what a download has written so far).
pub(crate) fn tree_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLDATA: &str = "\
pg_control version number:            1800
Database cluster state:               shut down
Latest checkpoint location:           0/2000028
Latest checkpoint's REDO location:    0/2000028
Latest checkpoint's REDO WAL file:    000000010000000000000002
Bytes per WAL segment:                16777216
";

    #[test]
    fn the_checkpoint_keeps_its_redo_segment_only() {
        let w = parse_controldata(CONTROLDATA).unwrap();
        assert_eq!(w.redo_file, "000000010000000000000002");
        assert_eq!(w.record_files, vec!["000000010000000000000002"]);
        assert!(w.keeps("000000010000000000000002"));
        assert!(!w.keeps("000000010000000000000003"));
        assert!(!w.keeps("000000010000000000000001"));
    }

    #[test]
    fn a_record_near_a_segment_end_keeps_the_next_segment_too() {
        let text = CONTROLDATA
            .replace("0/2000028", "1/FFFFFF80")
            .replace("000000010000000000000002", "0000000300000001000000FF");
        let w = parse_controldata(&text).unwrap();
        assert_eq!(
            w.record_files,
            vec!["0000000300000001000000FF", "000000030000000200000000"]
        );
        // Other segment sizes name segments differently (64 MiB: 64 per xlogid).
        let text = CONTROLDATA
            .replace("16777216", "67108864")
            .replace("0/2000028", "0/C000028")
            .replace("000000010000000000000002", "000000010000000000000003");
        assert_eq!(
            parse_controldata(&text).unwrap().record_files,
            vec!["000000010000000000000003"]
        );
    }

    #[test]
    fn malformed_controldata_prunes_nothing() {
        assert_eq!(parse_controldata(""), None);
        assert_eq!(
            parse_controldata(&CONTROLDATA.replace("000000010000000000000002", "x")),
            None
        );
        assert_eq!(
            parse_controldata(&CONTROLDATA.replace("16777216", "3")),
            None
        );
    }

    #[test]
    fn every_major_gets_its_empty_directories() {
        assert!(skeleton(12).contains(&"pg_tblspc"));
        assert!(skeleton(12).contains(&"pg_wal/archive_status"));
        assert!(!skeleton(16).contains(&"pg_wal/summaries"));
        assert!(skeleton(18).contains(&"pg_wal/summaries"));
    }

    #[test]
    fn restored_and_pruned_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("pg_wal")).unwrap();
        std::fs::create_dir_all(d.join("base/pgsql_tmp")).unwrap();
        for f in [
            "postmaster.pid",
            "pg_version",
            "PG_VERSION",
            "base/pgsql_tmp/pgsql_tmp1.0",
            "pg_wal/000000010000000000000002",
            "pg_wal/000000010000000000000003",
            "pg_wal/00000002.history",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        prepare_restored(d, 18).unwrap();
        assert!(d.join("pg_replslot").is_dir() && d.join("pg_wal/summaries").is_dir());
        assert!(!d.join("postmaster.pid").exists() && !d.join("pg_version").exists());
        std::fs::write(d.join("pg_stat_tmp/global.stat"), b"xy").unwrap();
        let w = parse_controldata(CONTROLDATA).unwrap();
        let pruned = prune(d, Some(&w)).unwrap();
        assert_eq!(pruned.files, 3);
        assert!(d.join("pg_wal/000000010000000000000002").exists());
        assert!(!d.join("pg_wal/000000010000000000000003").exists());
        assert!(d.join("pg_wal/00000002.history").exists());
        assert!(d.join("pg_stat_tmp").is_dir() && d.join("PG_VERSION").exists());
        write_pg_version(d, 18).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("pg_version")).unwrap(),
            "18\n"
        );
    }
}
