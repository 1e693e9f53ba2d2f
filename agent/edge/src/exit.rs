//! Exit codes both binaries share (BSD `sysexits.h` where one fits).
//!
//! Each binary maps its errors to a code in one place (`exit_code` beside its `main`);
//! the agent's protocol codes (69, 124, 126, 127, 143) are in `datamon_agent`'s outcome
//! module, since only the wrapper returns them.

/// A usage or configuration error: bad flags, a bad settings file, an invalid plan
/// (`EX_USAGE`). Nothing was started.
pub const USAGE: u8 = 64;

/// Any other failure.
pub const FAILURE: u8 = 1;
