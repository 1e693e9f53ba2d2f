//! Save: after the application's outcome, a database with an `output` becomes a new
//! bundle: the application's sessions ended (no new ones admitted), a CHECKPOINT, a fast
//! shutdown within its deadline, pg_control checked to say "shut down", what a copy need
//! not carry pruned, `pg_version` written at the root, and the data directory uploaded
//! (committed whole or not at all, as every bundle), then labelled. A database without an
//! output is only stopped.

use std::time::Duration;

use datamon_plan::DatabaseOutput;

use super::migrate::Migration;
use super::process;
use super::restore::Served;
use super::{control, datadir, DatabaseError};
use crate::bundle::upload::{upload, UploadRequest};
use crate::cafs::LeafSize;
use crate::context::Stores;
use crate::model::Contributor;
use crate::progress::human;
use crate::tuning::Tuning;

/// How long `pg_controldata` may take.
const CONTROLDATA_DEADLINE: Duration = Duration::from_secs(30);

/// What a save needs besides the database.
pub(crate) struct SaveRequest<'a> {
    /// Where to.
    pub output: &'a DatabaseOutput,
    /// Who is recorded.
    pub contributor: Contributor,
    /// Leaf size of the new bundle.
    pub leaf_size: LeafSize,
    /// The store.
    pub stores: &'a Stores,
    /// Transfer tuning.
    pub tuning: Tuning,
    /// Deadline of the shutdown.
    pub stop_deadline: Duration,
    /// The server account (pg_controldata runs as it).
    pub account: &'a process::Account,
    /// Reports a step (the sidecar's state file).
    pub tell: &'a (dyn Fn(String) + Sync),
}

/// The new bundle's message: the output's, and the migration when one happened (pure).
pub(crate) fn bundle_message(message: &str, migration: Option<&Migration>) -> String {
    match migration {
        Some(m) => format!("{message} ({m})"),
        None => message.to_string(),
    }
}

/// Saves `served` as a new bundle; its id. A full disk (the store's, or the data
/// directory's) is said as such.
pub(crate) async fn save(
    served: &mut Served,
    req: &SaveRequest<'_>,
) -> Result<String, DatabaseError> {
    let data = served.paths.data.clone();
    save_in(served, req).await.map_err(|e| {
        if !super::is_no_space(&e) {
            return e;
        }
        let place = match &e {
            DatabaseError::Upload { repo, .. } => format!("in the store of repo {repo}"),
            _ => format!("on the disk of {}", data.display()),
        };
        DatabaseError::SaveNoSpace {
            place,
            source: Box::new(e),
        }
    })
}

/// [`save`] itself.
async fn save_in(served: &mut Served, req: &SaveRequest<'_>) -> Result<String, DatabaseError> {
    let name = served.db.name.clone();
    (req.tell)(format!(
        "saving database {name}: ending the application's sessions, checkpoint, shutdown"
    ));
    {
        let client = served.server.admin().await?;
        let ended = served.server.close_to_others(&client).await?;
        if ended > 0 {
            tracing::info!(database = %name, sessions = ended, "ended the application's sessions");
        }
        client.batch_execute("CHECKPOINT").await.map_err(|source| {
            super::server::ServerError::Sql {
                what: "checkpoint".into(),
                source,
            }
        })?;
    }
    shut_down(served, req.stop_deadline).await?;
    let data = &served.paths.data;
    let wal = match served.build.has("pg_controldata") {
        true => {
            let mut cmd = process::command(&served.build.tool("pg_controldata"), req.account);
            cmd.arg("-D").arg(data);
            let out = process::run(cmd, "pg_controldata", CONTROLDATA_DEADLINE).await?;
            datadir::parse_controldata(&out)
        }
        false => None,
    };
    if wal.is_none() {
        tracing::warn!(database = %name, build = %served.build, "the checkpoint's WAL segment is not known (no pg_controldata): every WAL segment is kept");
    }
    let pruned = datadir::prune(data, wal.as_ref())?;
    tracing::info!(database = %name, files = pruned.files, bytes = pruned.bytes, "pruned what the copy need not carry");
    datadir::write_pg_version(data, served.build.major)?;
    let message = bundle_message(&req.output.message, served.migration.as_ref());
    (req.tell)(format!(
        "saving database {name}: uploading {} to repo {}",
        human(datadir::tree_bytes(data)),
        req.output.repo
    ));
    let report = upload(
        req.stores,
        &UploadRequest {
            repo: req.output.repo.clone(),
            source: data.clone(),
            message,
            label: req.output.label.clone(),
            contributor: req.contributor.clone(),
            leaf_size: req.leaf_size,
        },
        &req.tuning,
    )
    .await
    .map_err(|source| DatabaseError::Upload {
        repo: req.output.repo.clone(),
        source: Box::new(source),
    })?;
    tracing::info!(database = %name, bundle = %report.bundle.id, files = report.files, bytes = report.bytes, "database saved");
    Ok(report.bundle.id)
}

/// A fast shutdown, then pg_control must say the cluster was shut down.
async fn shut_down(served: &mut Served, deadline: Duration) -> Result<(), DatabaseError> {
    let status = served.server.stop(deadline).await?;
    let ctl = control::read_control(&served.paths.data)?;
    if !status.success() || !ctl.clean() {
        return Err(DatabaseError::Unclean {
            status: status.to_string(),
            state: format!("{:?}", ctl.state),
            tail: served.server.log_tail(),
        });
    }
    Ok(())
}

/// Stops a database that is not saved (read-only, or the application failed): fast.
pub(crate) async fn stop(served: &mut Served, deadline: Duration) -> Result<(), DatabaseError> {
    served.server.stop(deadline).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::migrate::Method;

    #[test]
    fn a_migration_is_recorded_in_the_message() {
        assert_eq!(bundle_message("nightly", None), "nightly");
        let m = Migration {
            from: "12.22".into(),
            to: "18.6".into(),
            method: Method::DumpRestore,
        };
        assert_eq!(
            bundle_message("nightly", Some(&m)),
            "nightly (PostgreSQL 12.22 → 18.6 by dump and restore)"
        );
    }
}
