//! An error and its sources on one line: `cannot download x: store unreachable: timed out`.
//!
//! Library errors carry their cause as `#[source]` and do not repeat its text; where one
//! does (a wrapped error that prints its source too), the repeated text is said once.

use std::fmt;

/// Displays an error followed by each source not already said, separated by `: `.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(self.0))
    }
}

/// The error and its sources on one line, each said once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk full")]
    struct Leaf;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write {0}")]
    struct Mid(&'static str, #[source] Leaf);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write a.bin: disk full")]
    struct Repeats(#[source] Leaf);

    #[test]
    fn each_source_follows_its_error() {
        assert_eq!(chain(&Mid("a.bin", Leaf)), "cannot write a.bin: disk full");
        assert_eq!(
            ErrorChain(&Mid("a.bin", Leaf)).to_string(),
            "cannot write a.bin: disk full"
        );
    }

    #[test]
    fn a_source_already_said_is_not_said_again() {
        assert_eq!(chain(&Repeats(Leaf)), "cannot write a.bin: disk full");
    }
}
