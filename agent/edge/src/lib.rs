//! # datamon-edge
//!
//! What `datamon-agent` and `datamon-webhook` do at their edge, written once:
//! - [`chain`]: an error and its sources printed on one line, each text said once;
//! - [`logging`]: one `tracing` setup (JSON inside Kubernetes, text elsewhere);
//! - [`exit`]: the exit codes both binaries share.
//!
//! It sits below both crates and imports neither.

pub mod chain;
pub mod exit;
pub mod logging;

pub use chain::{chain, ErrorChain};
pub use logging::LogFormat;
