//! `datamon-agent status`: what every participant of a pod says about itself, read from the
//! coordination directory (`kubectl exec POD -c datamon -- datamon-agent status`): its
//! phase (or that it died, or has not started), what it is doing now, the bundles it
//! provided or made, how far each of its transfers is (downloads, mounts, uploads,
//! database restores and saves: bytes and files done of total, speed), and why it failed.
//! Text for people, `--output json` for tools (the state file's field names). The
//! participants are the ones the plan names (when the container has it) and every state
//! file found.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use chrono::{DateTime, FixedOffset};

use crate::error::{Error, Result};
use crate::progress::human;
use crate::runtime::board::Board;
use crate::runtime::state::{Reason, State, Status, Transfer};

/// One participant, as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Participant {
    /// Its name.
    pub name: String,
    /// Its phase (`starting`, `ready`, ...), `died` (not final and no process holds its
    /// lock) or `absent` (no state file yet).
    pub phase: String,
    /// The phase its last state file gave, when it died.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub died_while: Option<String>,
    /// What it is doing now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why it failed, or why work was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// The application's exit code (wrappers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Input (or database) name → bundle id provided.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub inputs: std::collections::BTreeMap<String, String>,
    /// Output (or database) name → new bundle id.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub outputs: std::collections::BTreeMap<String, String>,
    /// Input, output or database name → how far its transfer is (as in the state file).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub transfers: std::collections::BTreeMap<String, Transfer>,
    /// When it last wrote its state (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
}

/// A participant from what the board tells of it (pure).
pub fn participant(name: &str, status: Status) -> Participant {
    let name_of = |phase| {
        serde_json::to_value(phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let (phase, died_while, state): (String, Option<String>, Option<State>) = match status {
        Status::Absent => ("absent".into(), None, None),
        Status::Dead(s) => ("died".into(), Some(name_of(s.phase)), Some(s)),
        Status::Known(s) => (name_of(s.phase), None, Some(s)),
    };
    let mut p = Participant {
        name: name.to_string(),
        phase,
        died_while,
        step: None,
        reason: None,
        exit_code: None,
        inputs: Default::default(),
        outputs: Default::default(),
        transfers: Default::default(),
        updated: None,
    };
    if let Some(s) = state {
        p.step = s.step;
        p.reason = s.reason;
        p.exit_code = s.exit_code;
        p.inputs = s.inputs;
        p.outputs = s.outputs;
        p.transfers = s.transfers;
        p.updated = Some(s.updated);
    }
    p
}

/// Every participant of the coordination directory `dir`: those of `expected` (the plan's)
/// first, in order, then the other state files found, by name.
pub fn read(dir: &Path, expected: &[String]) -> Result<Vec<Participant>> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a coordination directory: run `status` in a container of the pod (the plan's `coordination`), or pass --dir",
            dir.display()
        )));
    }
    let board = Board::open(dir)?;
    let mut names: Vec<String> = expected.to_vec();
    let mut found = BTreeSet::new();
    let entries = std::fs::read_dir(dir).map_err(Error::io("list", dir))?;
    for e in entries {
        let e = e.map_err(Error::io("list", dir))?;
        let file = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = file.strip_suffix(".json") {
            if !stem.starts_with('.') {
                found.insert(stem.to_string());
            }
        }
    }
    names.extend(found.into_iter().filter(|n| !expected.contains(n)));
    names
        .iter()
        .map(|n| Ok(participant(n, board.status(n)?)))
        .collect()
}

/// The text for people: one block per participant (pure).
pub fn render(participants: &[Participant]) -> String {
    let mut out = String::new();
    let width = participants.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in participants {
        let _ = write!(out, "{:<width$}  {}", p.name, p.phase);
        if let Some(w) = &p.died_while {
            let _ = write!(out, " while {w} (its process is gone)");
        }
        if let Some(code) = p.exit_code {
            let _ = write!(out, " (exit {code})");
        }
        if let Some(u) = &p.updated {
            let _ = write!(out, "  since {u}");
        }
        out.push('\n');
        if let Some(step) = &p.step {
            let _ = writeln!(out, "{:width$}  now: {step}", "");
        }
        for (k, v) in &p.inputs {
            let _ = writeln!(out, "{:width$}  input {k}: bundle {v}", "");
        }
        for (k, v) in &p.outputs {
            let _ = writeln!(out, "{:width$}  output {k}: bundle {v}", "");
        }
        let labels: Vec<String> = p
            .transfers
            .iter()
            .map(|(name, t)| format!("{} {name}", t.kind.role()))
            .collect();
        let label_width = labels.iter().map(String::len).max().unwrap_or(0);
        for (label, t) in labels.iter().zip(p.transfers.values()) {
            let line = transfer_line(t, p.updated.as_deref());
            let _ = writeln!(out, "{:width$}  {label:<label_width$}  {line}", "");
        }
        if let Some(r) = &p.reason {
            let _ = writeln!(out, "{:width$}  reason: {r}", "");
        }
    }
    out
}

/// One transfer for people (pure): while it runs, `download  12.0 MiB / 20.0 MiB  3 / 5
/// files  60%  4.1 MiB/s` (the speed so far, up to `updated`, when its state was written);
/// finished, `upload    20.0 MiB  5 files  in 4.9s  4.1 MiB/s`; ended short of its total
/// (it failed), what it moved and `stopped after` how long; `nothing moved` when it ended
/// with nothing to count.
pub fn transfer_line(t: &Transfer, updated: Option<&str>) -> String {
    let kind = t.kind.name();
    let secs = |end: &str| -> Option<f64> {
        let (a, b) = (parse_time(&t.started)?, parse_time(end)?);
        let ms = (b - a).num_milliseconds();
        (ms >= 0).then(|| ms as f64 / 1000.0)
    };
    let speed = |secs: f64| {
        if secs > 0.0 {
            format!("  {}/s", human((t.bytes_done as f64 / secs) as u64))
        } else {
            String::new()
        }
    };
    let complete = t.bytes_done >= t.bytes_total && t.files_done >= t.files_total;
    match &t.finished {
        // Ended before its totals were known (failed at once), or nothing to move (a new
        // cluster's restore): no sizes, times or speeds of nothing.
        Some(_) if t.files_total == 0 && t.bytes_total == 0 => format!("{kind:<8}  nothing moved"),
        Some(end) if complete => {
            let took = secs(end);
            format!(
                "{kind:<8}  {}  {} files{}{}",
                human(t.bytes_total),
                t.files_total,
                took.map(|s| format!("  in {}", duration(s)))
                    .unwrap_or_default(),
                took.map(speed).unwrap_or_default()
            )
        }
        Some(end) => format!(
            "{kind:<8}  {} / {}  {} / {} files  stopped after {}",
            human(t.bytes_done),
            human(t.bytes_total),
            t.files_done,
            t.files_total,
            secs(end).map(duration).unwrap_or_else(|| "?".into())
        ),
        None => {
            let pct = match (t.bytes_total, t.files_total) {
                (0, 0) => 0,
                (0, files) => t.files_done * 100 / files,
                (bytes, _) => t.bytes_done.saturating_mul(100) / bytes,
            };
            format!(
                "{kind:<8}  {} / {}  {} / {} files  {pct}%{}",
                human(t.bytes_done),
                human(t.bytes_total),
                t.files_done,
                t.files_total,
                updated.and_then(secs).map(speed).unwrap_or_default()
            )
        }
    }
}

fn parse_time(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// `4.9s`, `2m05s`, `1h02m`.
fn duration(secs: f64) -> String {
    let whole = secs as u64;
    match whole {
        0..=59 => format!("{secs:.1}s"),
        60..=3599 => format!("{}m{:02}s", whole / 60, whole % 60),
        _ => format!("{}h{:02}m", whole / 3600, whole % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::{Phase, ReasonCode};

    #[test]
    fn every_kind_of_participant_is_told() {
        let mut ready = State::new("datamon", Phase::Ready);
        ready.inputs.insert("raw".into(), "B1".into());
        ready.step = Some("serving mount images".into());
        let mut exited = State::new("app", Phase::Exited);
        exited.exit_code = Some(3);
        let dead = State::new("other", Phase::Uploading);
        let failed = State::failed(
            "db",
            Reason::new(ReasonCode::DatabaseCrashed, "server pid 7 exited"),
        );
        let ps = vec![
            participant("datamon", Status::Known(ready)),
            participant("app", Status::Known(exited)),
            participant("other", Status::Dead(dead)),
            participant("db", Status::Known(failed)),
            participant("late", Status::Absent),
        ];
        let phases: Vec<&str> = ps.iter().map(|p| p.phase.as_str()).collect();
        assert_eq!(phases, ["ready", "exited", "died", "failed", "absent"]);
        let text = render(&ps);
        assert!(text.contains("now: serving mount images"), "{text}");
        assert!(text.contains("died while uploading"), "{text}");
        assert!(text.contains("input raw: bundle B1"), "{text}");
        assert!(text.contains("app      exited (exit 3)"), "{text}");
        assert!(
            text.contains("reason: database_crashed: server pid 7 exited"),
            "{text}"
        );
        let json = serde_json::to_value(&ps).unwrap();
        assert_eq!(
            json[4],
            serde_json::json!({"name": "late", "phase": "absent"})
        );
        assert_eq!(json[3]["reason"]["code"], "database_crashed");
    }

    #[test]
    fn transfers_are_told_one_line_each() {
        use crate::runtime::state::TransferKind;
        const MIB: u64 = 1 << 20;
        let at = |s: &str| format!("2026-12-01T10:00:{s}+00:00");
        let t = |kind, done: (u64, u64), total: (u64, u64), finished: Option<String>| Transfer {
            kind,
            files_done: done.0,
            files_total: total.0,
            bytes_done: done.1,
            bytes_total: total.1,
            started: at("00"),
            finished,
        };
        let mut st = State::new("datamon", crate::runtime::state::Phase::Uploading);
        st.updated = at("03");
        st.transfers.insert(
            "tables".into(),
            t(TransferKind::Download, (3, 12 * MIB), (5, 20 * MIB), None),
        );
        st.transfers.insert(
            "result".into(),
            t(
                TransferKind::Upload,
                (5, 20 * MIB),
                (5, 20 * MIB),
                Some(at("04")),
            ),
        );
        st.transfers.insert(
            "warehouse".into(),
            t(
                TransferKind::Restore,
                (1, MIB),
                (2, 4 * MIB),
                Some(at("02")),
            ),
        );
        st.transfers.insert(
            "empty".into(),
            t(TransferKind::Download, (0, 0), (0, 0), Some(at("01"))),
        );
        let ps = [participant("datamon", Status::Known(st))];
        let text = render(&ps);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1..],
            [
                "         input empty         download  nothing moved",
                "         output result       upload    20.0 MiB  5 files  in 4.0s  5.0 MiB/s",
                "         input tables        download  12.0 MiB / 20.0 MiB  3 / 5 files  60%  4.0 MiB/s",
                "         database warehouse  restore   1.0 MiB / 4.0 MiB  1 / 2 files  stopped after 2.0s",
            ],
            "{text}"
        );
        let json = serde_json::to_value(&ps).unwrap();
        let tables = &json[0]["transfers"]["tables"];
        assert_eq!(tables["kind"], "download");
        assert_eq!(tables["bytes_done"], 12 * MIB);
        assert!(tables.get("finished").is_none());
        assert_eq!(json[0]["transfers"]["result"]["finished"], at("04"));
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(duration(3720.0), "1h02m");
    }

    #[test]
    fn read_lists_the_plans_participants_then_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let board = Board::open(tmp.path()).unwrap();
        board.write(&State::new("zeta", Phase::Done)).unwrap();
        board.write(&State::new("datamon", Phase::Done)).unwrap();
        let ps = read(tmp.path(), &["datamon".into(), "app".into()]).unwrap();
        let names: Vec<(&str, &str)> = ps
            .iter()
            .map(|p| (p.name.as_str(), p.phase.as_str()))
            .collect();
        assert_eq!(
            names,
            [("datamon", "done"), ("app", "absent"), ("zeta", "done")]
        );
        let e = read(&tmp.path().join("nope"), &[]).unwrap_err().to_string();
        assert!(e.contains("not a coordination directory"), "{e}");
    }
}
