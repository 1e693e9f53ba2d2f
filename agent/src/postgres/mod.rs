//! PostgreSQL databases of a pod's data plan: a data directory restored from a bundle (or
//! a new cluster), migrated to the server's major when it is older, served to the
//! application on localhost and a Unix socket, then saved back as a datamon-compatible
//! bundle (the raw data directory with `pg_version` at its root).
//!
//! - `binaries`: which PostgreSQL builds are installed, one per major;
//! - `control`: `PG_VERSION` and `global/pg_control`, read without the server (pure);
//! - `process`: PostgreSQL's programs run as the server's non-root account, with deadlines;
//! - `migrate`: an old major's data directory moved to a newer one (pg_upgrade, or dump
//!   and restore);
//! - the restore, serve and save steps build on these.

pub(crate) mod binaries;
pub(crate) mod control;
pub(crate) mod migrate;
pub(crate) mod process;
