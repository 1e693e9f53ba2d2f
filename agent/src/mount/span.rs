//! Which leaves a read touches, and which bytes of each (pure).

use crate::cafs::{leaf::Leaf, LeafLayout};

/// The part of one leaf that a read needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The leaf.
    pub leaf: Leaf,
    /// First byte needed, relative to the leaf.
    pub from: usize,
    /// End of the bytes needed (exclusive), relative to the leaf.
    pub to: usize,
}

/// The leaves of `layout` that bytes `offset .. offset + size` touch, in order; nothing at
/// or past the end of the file.
pub fn spans(layout: &LeafLayout, offset: u64, size: u32) -> Vec<Span> {
    let end = offset.saturating_add(u64::from(size)).min(layout.size);
    if offset >= end {
        return Vec::new();
    }
    let ls = layout.leaf_size.bytes();
    (offset / ls..=(end - 1) / ls)
        .filter_map(|i| layout.leaf(i))
        .filter_map(|leaf| {
            // Both ends are within one leaf, whose length is at most 64 MiB.
            let from = usize::try_from(offset.max(leaf.offset) - leaf.offset).ok()?;
            let to = usize::try_from(end.min(leaf.offset + leaf.len) - leaf.offset).ok()?;
            Some(Span { leaf, from, to })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cafs::LeafSize;

    fn parts(size: u64, offset: u64, len: u32) -> Vec<(u64, usize, usize)> {
        let layout = LeafLayout::new(size, LeafSize::new(10).unwrap());
        spans(&layout, offset, len)
            .into_iter()
            .map(|s| (s.leaf.index, s.from, s.to))
            .collect()
    }

    #[test]
    fn reads_are_cut_at_leaf_boundaries_and_at_the_end_of_the_file() {
        assert_eq!(parts(25, 0, 5), [(0, 0, 5)]);
        assert_eq!(parts(25, 9, 2), [(0, 9, 10), (1, 0, 1)]);
        assert_eq!(parts(25, 5, 100), [(0, 5, 10), (1, 0, 10), (2, 0, 5)]);
        assert_eq!(parts(25, 20, 5), [(2, 0, 5)]);
        assert_eq!(parts(25, 24, 1), [(2, 4, 5)]);
        assert_eq!(parts(20, 10, 10), [(1, 0, 10)]);
        assert!(parts(25, 25, 10).is_empty());
        assert!(parts(25, 100, 10).is_empty());
        assert!(parts(25, 3, 0).is_empty());
        assert!(parts(0, 0, 10).is_empty());
        assert_eq!(parts(25, u64::MAX - 1, u32::MAX), []);
    }
}
