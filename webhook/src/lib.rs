//! # datamon-webhook
//!
//! Rewrites pods that opt in so that their data plan (`datamon-plan`) is carried out by the
//! agent: annotations in, a JSON Patch out.
//!
//! - [`mutate`]: the pure core: a pod (and its namespace's defaults) in, a verdict out;
//!   built from [`annotations`] (parsing, pure), [`render`] (the plan), [`layout`] (where
//!   the agent goes) and [`patch`] (explicit JSON Patch operations); [`yaml`] prints
//!   objects so that YAML 1.1 readers (kubectl) read them back unchanged;
//! - [`inject`]: the same offline, on workload files;
//! - [`server`]: HTTPS admission endpoint, health, metrics; built from [`admission`]
//!   (AdmissionReview in and out), [`tls`] (certificates reloaded from files),
//!   [`namespace`] (namespace defaults, cached) and [`metrics`];
//! - [`certs`]: serving certificates.

pub mod admission;
pub mod annotations;
pub mod certs;
pub mod inject;
pub mod layout;
pub mod metrics;
pub mod mutate;
pub mod namespace;
pub mod patch;
pub mod render;
pub mod server;
pub mod tls;
pub mod yaml;
