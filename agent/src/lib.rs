//! # datamon-agent
//!
//! Reads and writes datamon repositories, bucket for bucket as datamon does, on GCS, S3
//! and a local directory.
//!
//! Layers, from pure to I/O:
//! - [`cafs`]: keys, leaves and root objects (pure), and the blob reader and writer;
//! - [`model`]: the YAML documents and where they live (pure);
//! - [`store`]: buckets behind `object_store`, with retries and deadlines;
//! - [`stores`], [`repo`], [`label`], [`bundle`]: the operations datamon's CLI offers;
//! - [`mount`]: a bundle served read-only through FUSE;
//! - [`runtime`]: the sidecar runtime: a pod's data plan carried out around its application;
//! - [`config`] and [`cli`]: settings (defaults < file < env < flags) and the command line.

pub mod bundle;
pub mod cafs;
pub mod cli;
pub mod config;
pub mod destination;
pub mod error;
pub mod label;
pub mod model;
pub mod mount;
pub mod progress;
pub mod repo;
pub mod runtime;
pub mod store;
pub mod stores;
pub mod tuning;

pub use error::{Error, Result};
