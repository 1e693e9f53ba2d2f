//! How far to read ahead of one open file (pure): a window of leaves that starts at one
//! leaf when a reader moves on sequentially, doubles each time it enters a new leaf, up
//! to a cap, and falls back to nothing on a jump, so that random reads fetch only what
//! they touch.

use std::ops::Range;

/// The read-ahead state of one open file, in leaf indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefetcher {
    /// Most leaves read ahead of the last leaf read.
    cap: u64,
    /// Current window, in leaves (0: not sequential).
    window: u64,
    /// Last leaf touched by the previous read.
    last: Option<u64>,
    /// Leaves before this one were already asked for (read or read ahead).
    issued: u64,
}

impl Prefetcher {
    /// A file opened, not read yet; the window never exceeds `cap` leaves.
    pub fn new(cap: u64) -> Self {
        Self {
            cap,
            window: 0,
            last: None,
            issued: 0,
        }
    }

    /// The current window, in leaves (for tests).
    #[cfg(test)]
    pub fn window(&self) -> u64 {
        self.window
    }

    /// A read touched leaves `first..=last` of a file of `count` leaves: returns the leaves
    /// to fetch ahead now (none already asked for, none past the end of the file).
    ///
    /// A read is sequential when it starts at most one leaf away from where the previous
    /// one ended (the kernel issues its read-ahead in parallel, slightly out of order), or,
    /// for the first read, at the first leaf. A sequential read entering a new leaf grows
    /// the window (1, 2, 4, ... up to the cap); anything else resets it.
    pub fn on_read(&mut self, first: u64, last: u64, count: u64) -> Range<u64> {
        let sequential = match self.last {
            None => first == 0,
            Some(prev) => first.abs_diff(prev) <= 1,
        };
        let advanced = self.last.is_none_or(|prev| last > prev);
        if !sequential {
            self.window = 0;
            self.issued = last + 1;
        } else if advanced {
            self.window = (self.window * 2).max(1).min(self.cap);
        }
        self.last = Some(match self.last {
            Some(prev) if sequential => prev.max(last),
            _ => last,
        });
        let from = self.issued.max(last + 1);
        let to = (last + 1 + self.window).min(count);
        if from >= to {
            return from..from;
        }
        self.issued = to;
        from..to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads whole leaves `0..n` one after another; returns what each read fetches ahead.
    fn sequential(p: &mut Prefetcher, leaves: Range<u64>, count: u64) -> Vec<Range<u64>> {
        leaves.map(|i| p.on_read(i, i, count)).collect()
    }

    #[test]
    fn the_window_doubles_on_sequential_reads_up_to_the_cap() {
        let mut p = Prefetcher::new(8);
        let got = sequential(&mut p, 0..8, 100);
        assert_eq!(
            got,
            [1..2, 2..4, 4..7, 7..12, 12..13, 13..14, 14..15, 15..16]
        );
        assert_eq!(p.window(), 8);
    }

    #[test]
    fn reads_within_a_leaf_fetch_nothing_more() {
        let mut p = Prefetcher::new(8);
        assert_eq!(p.on_read(0, 0, 100), 1..2);
        // The kernel reads a leaf in many small requests.
        for _ in 0..15 {
            assert!(p.on_read(0, 0, 100).is_empty());
        }
        assert_eq!(p.window(), 1);
        assert_eq!(p.on_read(1, 1, 100), 2..4);
    }

    #[test]
    fn a_jump_resets_the_window_and_random_reads_fetch_nothing_ahead() {
        let mut p = Prefetcher::new(8);
        sequential(&mut p, 0..5, 100);
        assert_eq!(p.window(), 8);
        assert!(p.on_read(50, 50, 100).is_empty());
        assert_eq!(p.window(), 0);
        for (first, last) in [(10, 10), (70, 71), (3, 3), (90, 90), (40, 40)] {
            assert!(p.on_read(first, last, 100).is_empty(), "{first}");
        }
        // Reading on from the last jump starts over with one leaf.
        assert_eq!(p.on_read(41, 41, 100), 42..43);
        assert_eq!(p.on_read(42, 42, 100), 43..45);
    }

    #[test]
    fn a_first_read_past_the_start_is_not_sequential() {
        let mut p = Prefetcher::new(4);
        assert!(p.on_read(7, 7, 100).is_empty());
        assert_eq!(p.on_read(8, 8, 100), 9..10);
    }

    #[test]
    fn slightly_out_of_order_reads_stay_sequential() {
        let mut p = Prefetcher::new(4);
        assert_eq!(p.on_read(0, 0, 100), 1..2);
        assert_eq!(p.on_read(1, 1, 100), 2..4);
        // An earlier request of leaf 0 arrives late: no reset, nothing new.
        assert!(p.on_read(0, 0, 100).is_empty());
        assert_eq!(p.window(), 2);
        assert_eq!(p.on_read(2, 2, 100), 4..7);
    }

    #[test]
    fn nothing_is_fetched_past_the_end_of_the_file() {
        let mut p = Prefetcher::new(8);
        assert_eq!(sequential(&mut p, 0..5, 5), [1..2, 2..4, 4..5, 5..5, 5..5]);
        let mut one = Prefetcher::new(8);
        assert!(one.on_read(0, 0, 1).is_empty());
    }

    #[test]
    fn reads_spanning_leaves_fetch_after_their_last_leaf() {
        let mut p = Prefetcher::new(4);
        assert_eq!(p.on_read(0, 1, 100), 2..3);
        assert_eq!(p.on_read(1, 2, 100), 3..5);
    }

    #[test]
    fn a_zero_cap_never_reads_ahead() {
        let mut p = Prefetcher::new(0);
        assert!(sequential(&mut p, 0..5, 100).iter().all(Range::is_empty));
    }
}
