//! What a participant says about itself (its state file), and what others conclude from it
//! together with its liveness lock (pure). The file format is `docs/protocol.md`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a participant is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Started, working towards ready (sidecar) or waiting for the sidecars (wrapper).
    Starting,
    /// Sidecar: every input it provides is in place; it now waits for the application.
    Ready,
    /// Wrapper: the application runs.
    Running,
    /// Wrapper: the application exited (see `exit_code`).
    Exited,
    /// Sidecar: uploading its outputs.
    Uploading,
    /// Sidecar: its work is done (outputs uploaded or, with a reason, skipped).
    Done,
    /// The participant failed (see `reason`); for the wrapper, the application did not run
    /// to its end.
    Failed,
}

impl Phase {
    /// Whether the participant has nothing left to do in the protocol: its process may be
    /// gone without that meaning it died.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Exited | Phase::Done | Phase::Failed)
    }
}

/// Machine-readable failure reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The plan or the settings cannot be used.
    InvalidPlan,
    /// The store could not be opened.
    StoreUnreachable,
    /// An input could not be downloaded or mounted.
    InputFailed,
    /// An output's repository is missing or unreadable.
    OutputUnavailable,
    /// A mount stopped serving while the application ran.
    MountLost,
    /// An upload failed after its retries.
    UploadFailed,
    /// A database could not be restored, migrated or started (before ready).
    DatabaseFailed,
    /// A database server stopped while the application ran.
    DatabaseCrashed,
    /// A database could not be saved as a new bundle (after the application).
    DatabaseSaveFailed,
    /// Another participant failed.
    SidecarFailed,
    /// Another participant's process died without saying why (`kill -9`, OOM).
    SidecarDied,
    /// The wrapper's process died without saying how the application ended.
    AppDied,
    /// The application could not be started.
    AppNotStarted,
    /// The application exited non-zero (outputs skipped).
    AppFailed,
    /// A deadline passed.
    Deadline,
    /// SIGTERM or SIGINT ended the work.
    Terminated,
    /// Anything else (an I/O error on the coordination directory, ...).
    Internal,
}

/// Why a participant failed or skipped work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// What kind of failure.
    pub code: ReasonCode,
    /// The details, for people.
    pub message: String,
}

impl Reason {
    /// A reason.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        write!(f, "{code}: {}", self.message)
    }
}

/// What a transfer moves data for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferKind {
    /// An input downloaded into its directory.
    Download,
    /// An input mounted (its totals are the bundle's; done once the mount answers).
    Mount,
    /// An output uploaded as a new bundle.
    Upload,
    /// A database's data directory downloaded from its bundle (the migration and the
    /// start that follow are not part of it).
    Restore,
    /// A database saved as a new bundle.
    Save,
}

impl TransferKind {
    /// What the transfer's name names: `input`, `output` or `database`.
    pub fn role(self) -> &'static str {
        match self {
            TransferKind::Download | TransferKind::Mount => "input",
            TransferKind::Upload => "output",
            TransferKind::Restore | TransferKind::Save => "database",
        }
    }

    /// Its name in the state file (`download`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TransferKind::Download => "download",
            TransferKind::Mount => "mount",
            TransferKind::Upload => "upload",
            TransferKind::Restore => "restore",
            TransferKind::Save => "save",
        }
    }
}

/// How far one transfer of a sidecar is (`transfers` in its state file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// What it does.
    pub kind: TransferKind,
    /// Files finished.
    #[serde(default)]
    pub files_done: u64,
    /// Files to move (0 until the transfer knows).
    #[serde(default)]
    pub files_total: u64,
    /// Bytes moved.
    #[serde(default)]
    pub bytes_done: u64,
    /// Bytes to move (0 until the transfer knows).
    #[serde(default)]
    pub bytes_total: u64,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ended (RFC 3339); absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
}

impl Transfer {
    /// A transfer of `kind` starting now, nothing known yet.
    pub fn start(kind: TransferKind) -> Self {
        Self {
            kind,
            files_done: 0,
            files_total: 0,
            bytes_done: 0,
            bytes_total: 0,
            started: chrono::Utc::now().to_rfc3339(),
            finished: None,
        }
    }

    /// Takes the counters of `c`.
    pub fn count(&mut self, c: crate::progress::Counts) {
        self.files_done = c.files_done;
        self.files_total = c.files_total;
        self.bytes_done = c.bytes_done;
        self.bytes_total = c.bytes_total;
    }

    /// Marks it ended now.
    pub fn finish(&mut self) {
        self.finished = Some(chrono::Utc::now().to_rfc3339());
    }
}

/// The content of `<participant>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Protocol version.
    pub protocol: u32,
    /// Who writes it.
    pub participant: String,
    /// Where it is.
    pub phase: Phase,
    /// Why it failed, or why work was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// What it is doing now, for people (`downloading input raw`, `uploading output out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Wrapper: the application's exit code (128 + signal number when killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Sidecar: input name → bundle id provided.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// Sidecar: output name → new bundle id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// Sidecar: input, output or database name → how far its transfer is (a database's
    /// restore, then its save once that starts).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transfers: BTreeMap<String, Transfer>,
    /// Process id (in its container's namespace), for people.
    pub pid: u32,
    /// When it was written (RFC 3339).
    pub updated: String,
}

impl State {
    /// A state of this process.
    pub fn new(participant: &str, phase: Phase) -> Self {
        Self {
            protocol: datamon_plan::PROTOCOL_VERSION,
            participant: participant.to_string(),
            phase,
            reason: None,
            step: None,
            exit_code: None,
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            transfers: BTreeMap::new(),
            pid: std::process::id(),
            updated: chrono::Utc::now().to_rfc3339(),
        }
    }

    /// The same, failed for `reason`.
    pub fn failed(participant: &str, reason: Reason) -> Self {
        Self {
            reason: Some(reason),
            ..Self::new(participant, Phase::Failed)
        }
    }
}

/// What others can tell about a participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// No state file yet: it has not started.
    Absent,
    /// Its last state; its process holds its lock, or the state is final.
    Known(State),
    /// Its state is not final but nothing holds its lock: the process died.
    Dead(State),
}

impl Status {
    /// Judges a participant from whether its lock is held (checked first) and its state
    /// file (read after): a process takes its lock before writing its first state and
    /// writes its final state before it lets the lock go.
    pub fn judge(state: Option<State>, lock_held: bool) -> Self {
        match state {
            None => Status::Absent,
            Some(s) if s.phase.is_final() || lock_held => Status::Known(s),
            Some(s) => Status::Dead(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging_liveness() {
        let ready = State::new("s", Phase::Ready);
        let done = State::new("s", Phase::Done);
        assert_eq!(Status::judge(None, false), Status::Absent);
        assert_eq!(Status::judge(None, true), Status::Absent);
        assert_eq!(
            Status::judge(Some(ready.clone()), true),
            Status::Known(ready.clone())
        );
        assert_eq!(
            Status::judge(Some(ready.clone()), false),
            Status::Dead(ready)
        );
        assert_eq!(
            Status::judge(Some(done.clone()), false),
            Status::Known(done)
        );
    }

    #[test]
    fn state_file_format() {
        let mut s = State::failed("datamon", Reason::new(ReasonCode::UploadFailed, "x"));
        s.outputs.insert("out".into(), "id1".into());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["phase"], "failed");
        assert_eq!(json["reason"]["code"], "upload_failed");
        assert_eq!(json["outputs"]["out"], "id1");
        assert_eq!(json["protocol"], 1);
        assert!(json.get("exit_code").is_none());
        assert!(json.get("transfers").is_none(), "no transfers, no field");
        let back: State = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            Reason::new(ReasonCode::SidecarDied, "gone").to_string(),
            "sidecar_died: gone"
        );
    }

    #[test]
    fn transfers_in_the_state_file() {
        let mut s = State::new("datamon", Phase::Ready);
        let mut t = Transfer::start(TransferKind::Download);
        t.count(crate::progress::Counts {
            files_done: 3,
            files_total: 5,
            bytes_done: 12,
            bytes_total: 20,
        });
        s.transfers.insert("tables".into(), t.clone());
        let json = serde_json::to_value(&s).unwrap();
        let tj = &json["transfers"]["tables"];
        assert_eq!(tj["kind"], "download");
        assert_eq!(
            (
                &tj["files_done"],
                &tj["files_total"],
                &tj["bytes_done"],
                &tj["bytes_total"]
            ),
            (&3.into(), &5.into(), &12.into(), &20.into())
        );
        assert!(tj.get("finished").is_none(), "running: no finished");
        t.finish();
        s.transfers.insert("tables".into(), t);
        let back: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // A state file of an agent without transfers still reads.
        let old = r#"{"protocol":1,"participant":"d","phase":"ready","pid":1,"updated":"x"}"#;
        let old: State = serde_json::from_str(old).unwrap();
        assert!(old.transfers.is_empty());
        // A transfer without counters reads too (all optional but kind and started).
        let t: Transfer =
            serde_json::from_str(r#"{"kind":"mount","started":"2026-12-01T00:00:00Z"}"#).unwrap();
        assert_eq!((t.kind, t.bytes_total), (TransferKind::Mount, 0));
    }
}
