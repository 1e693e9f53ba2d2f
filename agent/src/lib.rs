//! # datamon-agent
//!
//! Reads and writes datamon repositories, bucket for bucket as datamon does, on GCS, S3
//! and a local directory; serves bundles read-only through FUSE; carries out a pod's data
//! plan around its application. The binary's `main` calls [`cli::main`]; everything else
//! is internal to the crate.
//!
//! Layers, from pure to I/O; each imports only the ones above it:
//! - `sync`, `buffers`, `fsio`, `tuning`, `progress`, `signals`: small mechanisms
//!   (poison-tolerant locks, recycled leaf buffers, file writes in 256 KiB pieces, memory
//!   budgets, progress lines, caught signals);
//! - [`error`]: the one error type, each variant naming the input at fault and the fix;
//! - `cafs`: keys, leaves and root objects (pure), and the blob reader and writer;
//! - `model`: the YAML documents and where they live (pure);
//! - `bucket`: buckets behind `object_store`, with retries and deadlines; `gcs`: what is
//!   particular to Google Cloud Storage (emulators, anonymous access, credentials);
//! - `context`, `repo`, `label`, `bundle`, `destination`: the operations datamon's CLI
//!   offers;
//! - `mount`: a bundle served read-only through FUSE;
//! - `runtime`: the sidecar runtime: a pod's data plan carried out around its application;
//!   `events`: the Kubernetes Events it posts at each participant's end (opt-in);
//! - `config` and [`cli`]: settings (defaults < file < env < flags) and the command line.
//!
//! Error chains, the logging setup and the usage exit code come from `datamon-edge`, which
//! the webhook shares.

pub(crate) mod bucket;
pub(crate) mod buffers;
pub(crate) mod bundle;
pub(crate) mod cafs;
pub mod cli;
pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod destination;
pub mod error;
pub(crate) mod events;
pub(crate) mod fsio;
pub(crate) mod gcs;
pub(crate) mod label;
pub(crate) mod model;
pub(crate) mod mount;
pub(crate) mod postgres;
pub(crate) mod progress;
pub(crate) mod repo;
pub(crate) mod runtime;
pub(crate) mod signals;
pub(crate) mod sync;
pub(crate) mod tuning;

pub use error::{Error, Result};
