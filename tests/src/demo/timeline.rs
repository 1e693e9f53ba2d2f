//! The demo's timeline: what each participant of a pod did, when. [`Timeline::observe`]
//! compares successive `datamon-agent status --output json` snapshots (pure) and turns each
//! change into an [`Event`]: phases, steps, the bundles provided and made, reasons, and,
//! where the state files carry them, per-transfer progress (`transfers`: name → kind,
//! files and bytes done of total, started, finished), with sizes and speeds. Container
//! starts are told by [`Timeline::container_started`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

/// One line of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Since the pod started.
    pub at: Duration,
    /// Which participant or container.
    pub who: String,
    /// What happened.
    pub what: String,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "+{:>6.2}s  {:<16} {}",
            self.at.as_secs_f64(),
            self.who,
            self.what
        )
    }
}

/// What has been seen so far.
#[derive(Default)]
pub struct Timeline {
    last: BTreeMap<String, Value>,
    containers: BTreeSet<String>,
    /// What each input holds ("20.0 MiB, 2 files"), told with the bundle it is.
    pub sizes: BTreeMap<String, String>,
    /// Every event, in order.
    pub events: Vec<Event>,
}

/// `n` bytes for people: "20.0 MiB", "512 B".
pub fn size(n: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Seconds between two RFC 3339 times, when both parse.
fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

/// What a transfer's change says: started, finished (with size and speed), or nothing.
fn transfer_news(name: &str, old: Option<&Value>, new: &Value) -> Option<String> {
    let kind = new["kind"].as_str().unwrap_or("transfer");
    let bytes = new["bytes_done"]
        .as_f64()
        .or(new["bytes_total"].as_f64())
        .unwrap_or(0.0);
    let files = new["files_done"]
        .as_u64()
        .or(new["files_total"].as_u64())
        .filter(|f| *f > 0);
    let had = |k: &str| old.is_some_and(|o| !o[k].is_null());
    let nothing = new["bytes_total"].as_u64() == Some(0) && new["files_total"].as_u64() == Some(0);
    if !new["finished"].is_null() && !had("finished") && nothing {
        // Failed before its totals were known, or a new cluster's restore.
        return Some(format!("{kind} {name}: nothing moved"));
    }
    if !new["finished"].is_null() && !had("finished") {
        let mut s = format!("{kind} {name} {}", size(bytes));
        if let Some(f) = files {
            s.push_str(&format!(" ({f} files)"));
        }
        let took = new["started"]
            .as_str()
            .zip(new["finished"].as_str())
            .and_then(|(a, b)| seconds_between(a, b));
        if let Some(t) = took {
            s.push_str(&format!(" in {t:.2}s"));
            if t > 0.0 && bytes > 0.0 {
                s.push_str(&format!(" at {}/s", size(bytes / t)));
            }
        }
        return Some(s);
    }
    if !new["started"].is_null() && !had("started") {
        let total = new["bytes_total"].as_f64().filter(|b| *b > 0.0).map(size);
        return Some(match total {
            Some(t) => format!("{kind} {name} started ({t})"),
            None => format!("{kind} {name} started"),
        });
    }
    None
}

/// The changes of one participant from `old` to `new` (pure); `sizes` describe inputs.
pub fn changes(old: Option<&Value>, new: &Value, sizes: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let field = |v: Option<&Value>, k: &str| v.map(|v| v[k].clone()).unwrap_or(Value::Null);
    let phase = &new["phase"];
    if *phase != field(old, "phase") && phase.as_str() != Some("absent") {
        let mut s = phase.as_str().unwrap_or("?").to_string();
        if let Some(code) = new["exit_code"].as_i64() {
            s.push_str(&format!(" (exit {code})"));
        }
        if let Some(w) = new["died_while"].as_str() {
            s.push_str(&format!(" while {w}"));
        }
        out.push(s);
    }
    if let Some(step) = new["step"].as_str() {
        if field(old, "step").as_str() != Some(step) {
            out.push(step.to_string());
        }
    }
    for (key, what) in [("inputs", "provided"), ("outputs", "made")] {
        for (name, id) in new[key].as_object().into_iter().flatten() {
            if field(old, key)[name] != *id {
                let mut line = format!("{name}: {what} bundle {}", id.as_str().unwrap_or("?"));
                if let Some(s) = sizes.get(name).filter(|_| key == "inputs") {
                    line.push_str(&format!(" ({s})"));
                }
                out.push(line);
            }
        }
    }
    for (name, t) in new["transfers"].as_object().into_iter().flatten() {
        let before = old.and_then(|o| o["transfers"].get(name));
        out.extend(transfer_news(name, before, t));
    }
    if !new["reason"].is_null() && new["reason"] != field(old, "reason") {
        out.push(format!(
            "reason {}: {}",
            new["reason"]["code"].as_str().unwrap_or("?"),
            new["reason"]["message"].as_str().unwrap_or("")
        ));
    }
    out
}

impl Timeline {
    /// Takes a status snapshot (the JSON array) seen `at`: the new events.
    pub fn observe(&mut self, at: Duration, snapshot: &Value) -> Vec<Event> {
        let mut new = Vec::new();
        for p in snapshot.as_array().into_iter().flatten() {
            let Some(name) = p["name"].as_str() else {
                continue;
            };
            for what in changes(self.last.get(name), p, &self.sizes) {
                new.push(Event {
                    at,
                    who: name.to_string(),
                    what,
                });
            }
            self.last.insert(name.to_string(), p.clone());
        }
        self.events.extend(new.iter().cloned());
        new
    }

    /// A container seen started `at` (once per container): its event, the first time.
    pub fn container_started(&mut self, at: Duration, container: &str) -> Option<Event> {
        if !self.containers.insert(container.to_string()) {
            return None;
        }
        let e = Event {
            at,
            who: container.to_string(),
            what: "container started".into(),
        };
        self.events.push(e.clone());
        Some(e)
    }

    /// Adds an event the caller learned otherwise (the runner's report).
    pub fn note(&mut self, at: Duration, who: &str, what: String) -> Event {
        let e = Event {
            at,
            who: who.to_string(),
            what,
        };
        self.events.push(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_are_told_once_with_sizes_and_speeds() {
        let mut t = Timeline::default();
        let s1 = json!([{"name": "datamon", "phase": "starting", "step": "restoring database ledger"},
                        {"name": "app", "phase": "absent"}]);
        let e = t.observe(Duration::from_millis(100), &s1);
        let lines: Vec<String> = e.iter().map(|e| e.what.clone()).collect();
        assert_eq!(lines, ["starting", "restoring database ledger"]);
        assert!(t.observe(Duration::from_millis(300), &s1).is_empty());
        let s2 = json!([{"name": "datamon", "phase": "ready", "inputs": {"tables": "B1"},
                         "transfers": {"tables": {"kind": "download", "files_done": 2, "files_total": 2,
                             "bytes_done": 20971520, "bytes_total": 20971520,
                             "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:00.5Z"}}},
                        {"name": "app", "phase": "exited", "exit_code": 0}]);
        let e = t.observe(Duration::from_secs(2), &s2);
        let lines: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines[0], "+  2.00s  datamon          ready");
        assert!(
            lines[1].ends_with("tables: provided bundle B1"),
            "{lines:?}"
        );
        assert!(
            lines[2].ends_with("download tables 20.0 MiB (2 files) in 0.50s at 40.0 MiB/s"),
            "{lines:?}"
        );
        assert!(
            lines[3].ends_with("app              exited (exit 0)"),
            "{lines:?}"
        );
        assert_eq!(size(512.0), "512 B");
    }
}
