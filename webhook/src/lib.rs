//! # datamon-webhook
//!
//! Rewrites pods that opt in so that their data plan (`datamon-plan`) is carried out by the
//! agent: annotations in, a JSON Patch out.
//!
//! - [`mutate`]: the pure core, no I/O: a pod (and its namespace's defaults) in, a verdict
//!   out. Built from `annotations` (parsing; every problem collected), `k8s_names`
//!   (Kubernetes name and quantity checks), `render` (the plan), `layout` (where the agent
//!   goes), `security` (the injected containers' securityContext, and where the namespace's
//!   Pod Security level or the pod refuses a mounted input) and `patch` (explicit JSON Patch
//!   operations);
//! - [`serve`]: `datamon-webhook serve`, the HTTPS admission endpoint, health and metrics
//!   around [`mutate::mutate_pod`]. Built from `config` (flags, validated), `native` (does
//!   the cluster run native sidecars?), `admission` (AdmissionReview in and out), [`serve::tls`]
//!   (certificates reloaded from files), [`serve::namespace`] (namespace defaults, cached)
//!   and [`serve::metrics`];
//! - [`inject`]: `datamon-webhook inject`, the same mutation offline, on workload files;
//! - [`certs`]: `datamon-webhook certs`, serving certificates;
//! - [`yaml`]: prints objects so that YAML 1.1 readers (kubectl) read them back unchanged.
//!
//! Dependencies point one way: `serve` and `inject` call `mutate`; `mutate` imports neither
//! them nor any HTTP, TLS, async or Kubernetes client crate. Each subcommand returns a typed
//! error; the binary (`main.rs`) prints it once and maps it to an exit code.

pub mod certs;
pub mod inject;
pub mod mutate;
pub mod serve;
pub mod yaml;
