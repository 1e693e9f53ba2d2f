//! `datamon-agent sidecar`: one participant's share of the plan. It provides its inputs
//! (downloads verified into their directories, mounts served) and its databases (restored,
//! migrated if need be, started and ready: `crate::postgres`), says `ready`, waits for the
//! application's end while serving its mounts and databases (a database server that exits
//! meanwhile fails the sidecar, `database_crashed`, which stops the application), then
//! uploads its outputs and saves its databases (after a success, or always when the plan
//! says so; a database without an output is only stopped) and says `done` with the new
//! bundle ids. Any failure is a `failed` state with a reason; a classic sidecar then exits,
//! a native one stays until SIGTERM (exiting would make the kubelet restart it).
//!
//! Every download, mount, upload, database restore and save is a transfer in the state file
//! (`transfers`): its counters are written every [`PROGRESS_EVERY`] while they change, in
//! the same task as the transfer (so the writing ends with it), and once at its end. A
//! restore's transfer ends with the download of the data directory: the migration and the
//! server's start that follow are steps (`step`), not part of its time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datamon_plan::{Database, InputMode, Lifecycle, Plan, Sidecar, UploadWhen};

use crate::bundle::download::{download, DownloadRequest};
use crate::bundle::upload::{upload, UploadRequest};
use crate::bundle::BundleRef;
use crate::config::Settings;
use crate::context::Stores;
use crate::model::Contributor;
use crate::mount::{MountRequest, Mounted};
use crate::postgres::binaries::Installed;
use crate::postgres::process::Account;
use crate::postgres::restore::{self, Served};
use crate::postgres::{save, DatabaseError};
use crate::progress::{self, Progress, Watch};
use crate::runtime::board::Board;
use crate::runtime::outcome::{self, Outcome};
use crate::runtime::state::{Phase, Reason, ReasonCode, State, Status, Transfer, TransferKind};
use crate::signals::Termination;
use crate::sync::lock;
use datamon_edge::chain;

/// After SIGTERM, a sidecar with outputs waits this much longer than the plan's grace
/// period for the application's outcome before it gives up.
const OUTCOME_AFTER_SIGTERM: Duration = Duration::from_secs(5);

/// How often a running transfer's counters are written to the state file (when they
/// changed).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How the application ended, as far as outputs are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AppEnd {
    /// It ran and exited with this code.
    Exited(i32),
    /// It did not run to its end (the wrapper says why).
    Failed(Reason),
}

/// How one application participant ended, if it did (`Some(Err(()))`: not started yet).
fn app_end(app: &str, status: Status) -> Option<Result<AppEnd, ()>> {
    match status {
        Status::Known(s) if s.phase == Phase::Exited => {
            Some(Ok(AppEnd::Exited(s.exit_code.unwrap_or(-1))))
        }
        Status::Known(s) if s.phase == Phase::Failed => {
            Some(Ok(AppEnd::Failed(s.reason.unwrap_or_else(|| {
                Reason::new(
                    ReasonCode::AppFailed,
                    format!("the wrapper {app} gave no reason"),
                )
            }))))
        }
        Status::Known(_) => None,
        Status::Dead(s) => Some(Ok(AppEnd::Failed(Reason::new(
            ReasonCode::AppDied,
            format!("the wrapper {app} (pid {}) died while {:?}", s.pid, s.phase),
        )))),
        Status::Absent => Some(Err(())),
    }
}

/// The outcome of every application together: the first failure, else the first non-zero
/// exit code, else 0.
fn combine(ends: Vec<AppEnd>) -> AppEnd {
    let mut code = 0;
    for end in ends {
        match end {
            AppEnd::Failed(r) => return AppEnd::Failed(r),
            AppEnd::Exited(c) if code == 0 => code = c,
            AppEnd::Exited(_) => {}
        }
    }
    AppEnd::Exited(code)
}

/// Runs the sidecar `name` of `plan`; returns the process exit code.
pub async fn run(plan: &Plan, name: &str, settings: &Settings) -> crate::Result<u8> {
    let mut signals = Termination::catch()?;
    let me = plan
        .effective_sidecars()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            crate::Error::Usage(format!(
                "the plan has no sidecar named {name:?}: pass --participant with one of {:?}",
                plan.effective_sidecars()
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
            ))
        })?;
    let board = Board::open(&plan.coordination)?;
    let _lock = board.hold(name)?;
    board.write(&State::new(name, Phase::Starting))?;
    let mut run = Run {
        plan,
        me: &me,
        board: &board,
        settings,
        state: State::new(name, Phase::Starting),
        live: Mutex::default(),
        terminated: None,
    };
    let result = run.work(&mut signals).await;
    let code = match result {
        Ok(()) => 0,
        Err(reason) => {
            tracing::error!(sidecar = name, reason = %reason, "sidecar failed");
            run.state.phase = Phase::Failed;
            run.state.reason = Some(reason);
            1
        }
    };
    {
        let mut live = lock(&run.live);
        live.step = None;
        // A transfer stopped midway (SIGTERM before the inputs were ready) runs no more.
        for t in live.transfers.values_mut().filter(|t| t.finished.is_none()) {
            t.finish();
        }
    }
    let written = board.write(&run.current());
    outcome::write(
        &plan.termination_message,
        &Outcome {
            participant: name.to_string(),
            inputs: run.state.inputs.clone(),
            outputs: run.state.outputs.clone(),
            reason: run.state.reason.clone(),
            ..Outcome::default()
        },
    );
    written?;
    if me.lifecycle == Lifecycle::Native && run.terminated.is_none() {
        // Exiting would make the kubelet start it again: stay until it says stop.
        tracing::info!(
            sidecar = name,
            "work over: waiting for SIGTERM (native sidecar)"
        );
        signals.recv().await;
    }
    Ok(code)
}

/// `sidecar` with a plan that does not load: says `failed` (`invalid_plan`, the error) in
/// the coordination directory the raw plan names and in the termination message, so the
/// wrapper ends the pod with the reason. A native sidecar then stays until SIGTERM: exiting
/// would make the kubelet restart it, and its startupProbe (which passes for a failed
/// participant) would never run, keeping the pod in `Init`. Returns the exit code (64).
pub async fn plan_failed(
    fallback: &crate::runtime::Fallback,
    name: &str,
    error: &crate::Error,
) -> crate::Result<u8> {
    let mut signals = Termination::catch()?;
    let reason = Reason::new(ReasonCode::InvalidPlan, chain(error));
    tracing::error!(sidecar = name, reason = %reason, "the plan does not load");
    let board = Board::open(&fallback.coordination)?;
    let _lock = board.hold(name)?;
    board.write(&State::failed(name, reason.clone()))?;
    outcome::write(
        &fallback.termination_message,
        &Outcome {
            participant: name.to_string(),
            reason: Some(reason),
            ..Outcome::default()
        },
    );
    if fallback.native {
        tracing::info!(
            sidecar = name,
            "waiting for SIGTERM (native sidecar; exiting would restart it)"
        );
        signals.recv().await;
    }
    Ok(datamon_edge::exit::USAGE)
}

/// One sidecar's run.
struct Run<'a> {
    plan: &'a Plan,
    me: &'a Sidecar,
    board: &'a Board,
    settings: &'a Settings,
    state: State,
    /// What changes while the work borrows the run: the step, the transfers.
    live: Mutex<Live>,
    /// The signal that asked this process to stop, once one did.
    terminated: Option<&'static str>,
}

/// The parts of the state that transfers update while they run.
#[derive(Debug, Default)]
struct Live {
    /// What it is doing now.
    step: Option<String>,
    /// Name → its transfer.
    transfers: BTreeMap<String, Transfer>,
}

fn failed(code: ReasonCode, what: String) -> impl FnOnce(crate::Error) -> Reason {
    move |e| Reason::new(code, format!("{what}: {}", chain(&e)))
}

fn db_failed(code: ReasonCode, name: &str) -> impl FnOnce(DatabaseError) -> Reason + '_ {
    move |e| Reason::new(code, format!("database {name}: {}", chain(&e)))
}

/// Whether an output (or a database's output) is uploaded after `end`.
fn uploads_after(end: &AppEnd, when: UploadWhen) -> bool {
    match end {
        AppEnd::Exited(0) => true,
        AppEnd::Exited(_) => when == UploadWhen::Always,
        AppEnd::Failed(_) => false,
    }
}

/// What `prepare` provides: the store, the mounts, the input bundle ids, the databases.
struct Prepared {
    stores: Stores,
    mounts: Vec<Mounted>,
    ids: BTreeMap<String, String>,
    databases: Vec<Served>,
}

/// Resolves when the first of `dbs`' servers exits (never when there is none): its index
/// and how it ended.
async fn first_exit(dbs: &mut [Served]) -> (usize, String) {
    if dbs.is_empty() {
        return std::future::pending().await;
    }
    let exits = dbs
        .iter_mut()
        .enumerate()
        .map(|(i, d)| Box::pin(async move { (i, d.server.exited().await) }));
    futures::future::select_all(exits).await.0
}

impl Run<'_> {
    /// The state to write now: the phase and bundles, the step and transfers.
    fn current(&self) -> State {
        let live = lock(&self.live);
        State {
            step: live.step.clone(),
            transfers: live.transfers.clone(),
            updated: chrono::Utc::now().to_rfc3339(),
            pid: std::process::id(),
            ..self.state.clone()
        }
    }

    /// Writes the current state, keeping its phase (a failure is only logged).
    fn rewrite(&self) {
        if let Err(e) = self.board.write(&self.current()) {
            tracing::warn!(error = %chain(&e), "cannot update the state file");
        }
    }

    /// Tells what it is doing, keeping its phase (a failure to say it is only logged).
    fn tell(&self, step: String) {
        lock(&self.live).step = Some(step);
        self.rewrite();
    }

    fn say(&mut self, phase: Phase) -> Result<(), Reason> {
        self.state.phase = phase;
        lock(&self.live).step = None;
        self.board
            .write(&self.current())
            .map_err(|e| Reason::new(ReasonCode::Internal, chain(&e)))
    }

    /// Changes the transfer `name` (if there is one) and writes the state.
    fn update_transfer(&self, name: &str, change: impl FnOnce(&mut Transfer)) {
        if let Some(t) = lock(&self.live).transfers.get_mut(name) {
            change(t);
        }
        self.rewrite();
    }

    /// Runs `work` as the transfer `name` of `kind`: the counters of the transfers it
    /// starts ([`Progress`]) are written while they change, and at its end, successful or
    /// not, with `finished`.
    async fn track<T, E>(
        &self,
        name: &str,
        kind: TransferKind,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.track_watched(name, kind, &Watch::default(), work)
            .await
    }

    /// [`Run::track`] with the caller's `watch`, so that the work may end its transfer
    /// before it ends itself ([`Run::end_transfer`]): a restore's once the data directory
    /// is downloaded. An ended transfer keeps its counters and `finished`.
    async fn track_watched<T, E>(
        &self,
        name: &str,
        kind: TransferKind,
        watch: &Watch,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        lock(&self.live)
            .transfers
            .insert(name.to_string(), Transfer::start(kind));
        self.rewrite();
        let out = progress::publish_while(
            watch,
            progress::ticks(PROGRESS_EVERY),
            progress::watched(watch.clone(), work),
            |c| {
                self.update_transfer(name, |t| {
                    if t.finished.is_none() {
                        t.count(c);
                    }
                })
            },
        )
        .await;
        self.end_transfer(name, watch);
        out
    }

    /// Ends the transfer `name` now with `watch`'s counters, unless it has ended already.
    fn end_transfer(&self, name: &str, watch: &Watch) {
        self.update_transfer(name, |t| {
            if t.finished.is_some() {
                return;
            }
            if let Some(c) = watch.counts() {
                t.count(c);
            }
            t.finish();
        });
    }

    async fn work(&mut self, signals: &mut Termination) -> Result<(), Reason> {
        let prepared = tokio::select! {
            r = self.prepare() => r?,
            name = signals.recv() => {
                self.terminated = Some(name);
                return Err(Reason::new(ReasonCode::Terminated, format!("{name} before the inputs were ready")));
            }
        };
        let Prepared {
            stores,
            mounts,
            ids,
            mut databases,
        } = prepared;
        self.state.inputs = ids;
        self.say(Phase::Ready)?;
        tracing::info!(sidecar = %self.me.name, inputs = ?self.state.inputs, databases = databases.len(), "ready");
        if self.me.outputs.is_empty() && mounts.is_empty() && databases.is_empty() {
            return self.say(Phase::Done);
        }
        let end = self.wait_for_app(signals, &mounts, &mut databases).await;
        for m in mounts {
            if let Err(e) = m.unmount().await {
                tracing::warn!(error = %chain(&e), "unmount failed");
            }
        }
        // A failure while the application ran: the servers are killed when dropped (their
        // data directories are not saved).
        let end = end?;
        let skip = |why: String| Reason::new(ReasonCode::AppFailed, why);
        let to_upload: Vec<_> = self
            .me
            .outputs
            .iter()
            .filter_map(|n| self.plan.output(n))
            .filter(|o| uploads_after(&end, o.upload))
            .cloned()
            .collect();
        let with_output = databases.iter().filter(|d| d.db.output.is_some()).count();
        let (mut to_save, to_stop): (Vec<Served>, Vec<Served>) = databases
            .into_iter()
            .partition(|d| d.db.output.is_some() && uploads_after(&end, d.db.upload));
        // Read-only databases, and those not saved after this outcome: stopped fast.
        for mut d in to_stop {
            if let Err(e) = save::stop(&mut d, self.settings.postgres.stop_timeout()).await {
                tracing::warn!(database = %d.db.name, error = %chain(&e), "the server did not stop cleanly");
            }
        }
        if to_upload.len() < self.me.outputs.len() || to_save.len() < with_output {
            let why = match &end {
                AppEnd::Exited(code) => format!(
                    "the application exited {code}: outputs with `upload: on_success` not uploaded"
                ),
                AppEnd::Failed(r) => {
                    format!("the application did not finish ({r}): outputs not uploaded")
                }
            };
            tracing::warn!(sidecar = %self.me.name, "{why}");
            self.state.reason = Some(skip(why));
        }
        if to_upload.is_empty() && to_save.is_empty() {
            return self.say(Phase::Done);
        }
        self.say(Phase::Uploading)?;
        let (ids, signal) = {
            let uploads = async {
                let mut ids = BTreeMap::new();
                for o in &to_upload {
                    self.tell(format!(
                        "uploading output {} from {} to repo {}",
                        o.name,
                        o.path.display(),
                        o.repo
                    ));
                    let req = UploadRequest {
                        repo: o.repo.clone(),
                        source: o.path.clone(),
                        message: o.message.clone(),
                        label: o.label.clone(),
                        contributor: o
                            .contributor
                            .as_ref()
                            .map(|c| Contributor {
                                name: c.name.clone(),
                                email: c.email.clone(),
                            })
                            .unwrap_or_else(|| self.settings.contributor.clone()),
                        leaf_size: self
                            .settings
                            .leaf_size()
                            .map_err(failed(ReasonCode::InvalidPlan, "leaf size".into()))?,
                    };
                    let tuning = self.settings.tuning();
                    let report = self
                        .track(
                            &o.name,
                            TransferKind::Upload,
                            upload(&stores, &req, &tuning),
                        )
                        .await
                        .map_err(failed(
                            ReasonCode::UploadFailed,
                            format!(
                                "output {} ({} to repo {})",
                                o.name,
                                o.path.display(),
                                o.repo
                            ),
                        ))?;
                    tracing::info!(output = %o.name, bundle = %report.bundle.id, files = report.files, bytes = report.bytes, "uploaded");
                    ids.insert(o.name.clone(), report.bundle.id.clone());
                }
                for d in &mut to_save {
                    let name = d.db.name.clone();
                    let id = self
                        .track(&name, TransferKind::Save, self.save_database(&stores, d))
                        .await?;
                    ids.insert(d.db.name.clone(), id);
                }
                Ok::<_, Reason>(ids)
            };
            tokio::pin!(uploads);
            // A signal does not stop an upload: a bundle is committed whole or not at all,
            // and stopping would lose the application's work. The kubelet's SIGKILL may.
            let mut signal = None;
            let ids = loop {
                tokio::select! {
                    r = &mut uploads => break r,
                    name = signals.recv() => {
                        signal = Some(name);
                        tracing::warn!("{name} during the upload: finishing it first (the grace period permitting)");
                    }
                }
            };
            (ids, signal)
        };
        if signal.is_some() {
            self.terminated = signal;
        }
        let ids = ids?;
        self.state.outputs = ids;
        self.say(Phase::Done)
    }

    /// Saves one database as a new bundle of its output's repo: its id.
    async fn save_database(&self, stores: &Stores, d: &mut Served) -> Result<String, Reason> {
        let name = d.db.name.clone();
        let Some(output) = d.db.output.clone() else {
            return Err(Reason::new(
                ReasonCode::Internal,
                format!("database {name} has no output to save to"),
            ));
        };
        let account = Account::resolve(Some(&self.settings.postgres.user))
            .map_err(|e| db_failed(ReasonCode::DatabaseSaveFailed, &name)(e.into()))?;
        let tell = |step: String| self.tell(step);
        let req = save::SaveRequest {
            output: &output,
            contributor: output
                .contributor
                .as_ref()
                .map(|c| Contributor {
                    name: c.name.clone(),
                    email: c.email.clone(),
                })
                .unwrap_or_else(|| self.settings.contributor.clone()),
            leaf_size: self
                .settings
                .leaf_size()
                .map_err(failed(ReasonCode::InvalidPlan, "leaf size".into()))?,
            stores,
            tuning: self.settings.tuning(),
            stop_deadline: self.settings.postgres.stop_timeout(),
            account: &account,
            tell: &tell,
        };
        save::save(d, &req)
            .await
            .map_err(db_failed(ReasonCode::DatabaseSaveFailed, &name))
    }

    /// Restores, starts and readies the sidecar's databases, in the plan's order.
    async fn provide_databases(&self, stores: &Stores) -> Result<Vec<Served>, Reason> {
        let dbs: Vec<&Database> = self
            .me
            .databases
            .iter()
            .filter_map(|n| self.plan.database(n))
            .collect();
        if dbs.is_empty() {
            return Ok(Vec::new());
        }
        let pg = &self.settings.postgres;
        // What needs no download first: passwords, builds, the outputs' repos.
        for d in &dbs {
            restore::owner_password(d).map_err(db_failed(ReasonCode::DatabaseFailed, &d.name))?;
        }
        let account = Account::resolve(Some(&pg.user))
            .map_err(|e| Reason::new(ReasonCode::DatabaseFailed, chain(&e)))?;
        let installed = Installed::discover(&pg.bin_dirs).await;
        for d in &dbs {
            restore::server_build(d, &installed)
                .map_err(db_failed(ReasonCode::DatabaseFailed, &d.name))?;
            if let Some(o) = &d.output {
                crate::repo::get(stores, &o.repo).await.map_err(failed(
                    ReasonCode::OutputUnavailable,
                    format!("database {}: its output repo", d.name),
                ))?;
            }
        }
        let tell = |step: String| self.tell(step);
        let mut served = Vec::new();
        for d in dbs {
            // The restore's transfer is the download of the data directory: it ends when
            // that does, before the migration and the start.
            let watch = Watch::default();
            let fetched = || self.end_transfer(&d.name, &watch);
            let cx = restore::Context {
                stores,
                tuning: self.settings.tuning(),
                installed: &installed,
                account: &account,
                superuser: &pg.superuser,
                coordination: &self.plan.coordination,
                start_deadline: pg.start_timeout().max(self.plan.deadlines.ready),
                migrate_deadline: pg.migrate_timeout(),
                tell: &tell,
                fetched: &fetched,
            };
            let restoring = restore::restore(d, &cx);
            served.push(
                self.track_watched(&d.name, TransferKind::Restore, &watch, restoring)
                    .await
                    .map_err(db_failed(ReasonCode::DatabaseFailed, &d.name))?,
            );
        }
        Ok(served)
    }

    /// Opens the store, checks the outputs' repos, and provides the inputs and databases.
    async fn prepare(&self) -> Result<Prepared, Reason> {
        let s = self.settings;
        let config = s
            .config_bucket()
            .map_err(failed(ReasonCode::InvalidPlan, "store".into()))?;
        let stores = Stores::open(&config, &s.context, &s.store_options())
            .await
            .map_err(failed(
                ReasonCode::StoreUnreachable,
                format!("cannot open context {:?} of {}", s.context, config),
            ))?;
        for n in &self.me.outputs {
            let Some(o) = self.plan.output(n) else {
                continue;
            };
            crate::repo::get(&stores, &o.repo)
                .await
                .map_err(failed(ReasonCode::OutputUnavailable, format!("output {n}")))?;
        }
        let mut mounts = Vec::new();
        let mut ids = BTreeMap::new();
        for n in &self.me.inputs {
            let Some(i) = self.plan.input(n) else {
                continue;
            };
            let bundle = BundleRef::from_flags(i.bundle.clone(), i.label.clone());
            let what = format!("input {n} (repo {}) at {}", i.repo, i.path.display());
            self.tell(match i.mode {
                InputMode::Download => format!("downloading {what}"),
                InputMode::Mount => format!("mounting {what}"),
            });
            tokio::fs::create_dir_all(&i.path).await.map_err(|e| {
                Reason::new(
                    ReasonCode::InputFailed,
                    format!("{what}: cannot create the directory: {e}"),
                )
            })?;
            match i.mode {
                InputMode::Download => {
                    let req = DownloadRequest {
                        repo: i.repo.clone(),
                        bundle,
                        destination: i.path.clone(),
                        name_filter: i.name_filter.clone(),
                        // The directory is the input's own volume; a restarted sidecar
                        // finds its earlier, verified files there.
                        force_dest: true,
                    };
                    let started = Instant::now();
                    let tuning = s.tuning();
                    let report = self
                        .track(n, TransferKind::Download, download(&stores, &req, &tuning))
                        .await
                        .map_err(failed(ReasonCode::InputFailed, what))?;
                    tracing::info!(input = %n, bundle = %report.bundle.id, files = report.files, bytes = report.bytes, secs = started.elapsed().as_secs_f64(), "downloaded");
                    ids.insert(n.clone(), report.bundle.id);
                }
                InputMode::Mount => {
                    let req = MountRequest {
                        repo: i.repo.clone(),
                        bundle,
                        mount: i.path.clone(),
                        // Other containers' users read it.
                        allow_other: true,
                        cache_bytes: s.tuning().memory_budget,
                        disk_cache: s.disk_cache(),
                        file_owner: Default::default(),
                    };
                    let mounting = async {
                        let m = Mounted::start(&stores, &req).await?;
                        // The transfer's totals are the bundle's (as the mount read them),
                        // all done once it serves.
                        Progress::complete("mount", m.files(), m.bytes());
                        Ok::<_, crate::Error>(m)
                    };
                    let m = self
                        .track(n, TransferKind::Mount, mounting)
                        .await
                        .map_err(failed(ReasonCode::InputFailed, what))?;
                    ids.insert(n.clone(), m.bundle.id.clone());
                    mounts.push(m);
                }
            }
        }
        let databases = self.provide_databases(&stores).await?;
        for d in &databases {
            if let Some(id) = &d.source_bundle {
                ids.insert(d.db.name.clone(), id.clone());
            }
        }
        Ok(Prepared {
            stores,
            mounts,
            ids,
            databases,
        })
    }

    /// Serves the mounts and databases until the application's outcome is known.
    async fn wait_for_app(
        &mut self,
        signals: &mut Termination,
        mounts: &[Mounted],
        databases: &mut [Served],
    ) -> Result<AppEnd, Reason> {
        let saves_something = self.plan.uploads(self.me);
        let mut watcher = self
            .board
            .watch()
            .map_err(|e| Reason::new(ReasonCode::Internal, chain(&e)))?;
        let start_deadline = Instant::now() + self.plan.deadlines.start;
        let apps = self.plan.effective_apps();
        let mut give_up: Option<Instant> = None;
        loop {
            let mut ends = Vec::new();
            let mut absent = Vec::new();
            for app in &apps {
                let status = self
                    .board
                    .status(app)
                    .map_err(|e| Reason::new(ReasonCode::Internal, chain(&e)))?;
                match app_end(app, status) {
                    Some(Ok(end)) => ends.push(end),
                    Some(Err(())) => absent.push(app.clone()),
                    None => {}
                }
            }
            if !absent.is_empty() && Instant::now() >= start_deadline {
                return Err(Reason::new(
                    ReasonCode::Deadline,
                    format!(
                        "the application wrapper(s) {absent:?} did not start within {} (deadlines.start): is the application's command wrapped with `datamon-agent wrap`?",
                        humantime::format_duration(self.plan.deadlines.start)
                    ),
                ));
            }
            if ends.len() == apps.len() {
                return Ok(combine(ends));
            }
            if let Some(m) = mounts.iter().find(|m| m.is_finished()) {
                return Err(Reason::new(
                    ReasonCode::MountLost,
                    format!("the mount at {} stopped serving", m.dir().display()),
                ));
            }
            if give_up.is_some_and(|t| Instant::now() >= t) {
                return Err(Reason::new(
                    ReasonCode::Terminated,
                    "terminated before the application's outcome was known",
                ));
            }
            tokio::select! {
                _ = watcher.changed() => {}
                (i, status) = first_exit(databases) => {
                    let d = &databases[i];
                    return Err(Reason::new(
                        ReasonCode::DatabaseCrashed,
                        format!(
                            "database {}: the server (pid {}) exited ({status}) while the application ran; the last lines of its log {}:\n{}",
                            d.db.name, d.server.pid(), d.server.log().display(), d.server.log_tail()
                        ),
                    ));
                }
                name = signals.recv() => {
                    self.terminated = Some(name);
                    if !saves_something {
                        // Nothing to upload: the mounts can go.
                        return Ok(AppEnd::Failed(Reason::new(ReasonCode::Terminated, name)));
                    }
                    // The pod is being deleted: the application gets the signal too and
                    // its outcome decides the uploads.
                    tracing::info!("{name}: waiting for the application's outcome");
                    give_up.get_or_insert(Instant::now() + self.plan.deadlines.grace + OUTCOME_AFTER_SIGTERM);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restore ends its transfer once the data directory is downloaded: what it does
    /// afterwards (a migration, the start) changes neither its counters nor `finished`.
    #[tokio::test]
    async fn a_transfer_ended_by_its_work_keeps_its_end() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = Plan {
            coordination: tmp.path().to_path_buf(),
            ..Plan::default()
        };
        let me = Sidecar {
            name: "datamon".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            databases: vec!["ledger".into()],
            lifecycle: Lifecycle::Classic,
        };
        let board = Board::open(&plan.coordination).unwrap();
        let run = Run {
            plan: &plan,
            me: &me,
            board: &board,
            settings: &Settings::default(),
            state: State::new("datamon", Phase::Starting),
            live: Mutex::default(),
            terminated: None,
        };
        let on_board = || board.read("datamon").unwrap().unwrap().transfers["ledger"].clone();
        let watch = Watch::default();
        let work = async {
            Progress::complete("download", 3, 3000);
            run.end_transfer("ledger", &watch);
            let fetched = on_board();
            // The migration's own work, counted or not, is not the restore's.
            Progress::complete("migration", 1, 1_000_000);
            run.tell("migrating database ledger".into());
            Ok::<_, ()>(fetched)
        };
        let fetched = run
            .track_watched("ledger", TransferKind::Restore, &watch, work)
            .await
            .unwrap();
        assert!(fetched.finished.is_some(), "{fetched:?}");
        assert_eq!(
            (fetched.files_done, fetched.files_total, fetched.bytes_done),
            (3, 3, 3000)
        );
        let last = on_board();
        assert_eq!(last, fetched);
        // A transfer its work does not end ends with the work, as before.
        let uploaded = run
            .track("out", TransferKind::Upload, async {
                Progress::complete("upload", 2, 20);
                Ok::<_, ()>(())
            })
            .await;
        assert!(uploaded.is_ok());
        let out = board.read("datamon").unwrap().unwrap().transfers["out"].clone();
        assert!(out.finished.is_some());
        assert_eq!((out.files_done, out.bytes_done), (2, 20));
    }

    #[test]
    fn every_application_decides_the_uploads() {
        let failed = Reason::new(ReasonCode::SidecarDied, "x");
        assert_eq!(
            combine(vec![AppEnd::Exited(0), AppEnd::Exited(0)]),
            AppEnd::Exited(0)
        );
        assert_eq!(
            combine(vec![
                AppEnd::Exited(0),
                AppEnd::Exited(3),
                AppEnd::Exited(4)
            ]),
            AppEnd::Exited(3)
        );
        assert_eq!(
            combine(vec![AppEnd::Exited(3), AppEnd::Failed(failed.clone())]),
            AppEnd::Failed(failed)
        );
        assert_eq!(app_end("app", Status::Absent), Some(Err(())));
        let running = State::new("app", Phase::Running);
        assert_eq!(app_end("app", Status::Known(running.clone())), None);
        assert!(
            matches!(app_end("app", Status::Dead(running)), Some(Ok(AppEnd::Failed(r))) if r.code == ReasonCode::AppDied)
        );
    }
}
