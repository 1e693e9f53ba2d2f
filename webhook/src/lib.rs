//! # datamon-webhook
//!
//! Rewrites pods that opt in so that their data plan (`datamon-plan`) is carried out by the
//! agent: annotations in, a JSON Patch out.
//!
//! - [`mutate`]: the pure core: a pod (and its namespace's defaults) in, a verdict out;
//! - [`inject`]: the same offline, on workload files;
//! - [`server`]: HTTPS admission endpoint, health, metrics;
//! - [`certs`]: serving certificates.

pub mod certs;
pub mod inject;
pub mod mutate;
pub mod server;
