//! # datamon-plan
//!
//! A pod's **data plan**: which bundles its application reads (downloaded into a volume or
//! mounted read-only), which directories become new bundles when it is done, where the
//! store is, which agent process does which part of the work, and how long every wait may
//! last. The webhook renders it from a pod's annotations; the agent's `sidecar`, `wrap` and
//! `probe` commands carry it out. It is the only definition of the schema: both crates use
//! this one.
//!
//! [`schema`] holds the serde types (the YAML/JSON document), [`validate`] the checks that
//! turn a document into a plan the agent can run, with errors that name the field at fault.
//! The file `docs/plan.example.yaml` at the top of the repository is a documented example
//! (a test parses it).

pub mod schema;
pub mod validate;

pub use schema::{
    Contributor, Database, DatabaseOutput, DatabaseSource, Deadlines, Input, InputMode, Lifecycle,
    Output, Owner, Plan, Sidecar, Store, UploadWhen, APP, DEFAULT_SIDECAR, PROTOCOL_VERSION,
};
pub use validate::PlanError;
