//! Leaf sizes and how a file of a given size is cut into leaves (datamon's node-offset rule).

use std::fmt;

/// datamon's default leaf size: 2 MiB.
pub const DEFAULT_LEAF_SIZE: u32 = 2 * 1024 * 1024;

/// The largest leaf size this agent accepts. datamon stores the leaf size as a `uint32`;
/// larger leaves than 64 MiB would make a single leaf blow the memory budget, so they are
/// refused with an explanation rather than attempted.
pub const MAX_LEAF_SIZE: u32 = 64 * 1024 * 1024;

/// A validated leaf size in bytes (1 ..= [`MAX_LEAF_SIZE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafSize(u32);

/// A leaf size outside the accepted range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("leaf size {value} is out of range: datamon leaf sizes are 1 to {MAX_LEAF_SIZE} bytes (default {DEFAULT_LEAF_SIZE})")]
pub struct InvalidLeafSize {
    /// The rejected value.
    pub value: u64,
}

impl LeafSize {
    /// Validates a leaf size.
    pub fn new(value: u64) -> Result<Self, InvalidLeafSize> {
        match u32::try_from(value) {
            Ok(v) if (1..=MAX_LEAF_SIZE).contains(&v) => Ok(Self(v)),
            _ => Err(InvalidLeafSize { value }),
        }
    }

    /// The size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The size in bytes as `u64`, for offset arithmetic.
    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }
}

impl Default for LeafSize {
    fn default() -> Self {
        Self(DEFAULT_LEAF_SIZE)
    }
}

impl fmt::Display for LeafSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One leaf of a file: where it is and which tree-mode node parameters name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Position of the leaf in the file (0-based).
    pub index: u64,
    /// Byte offset of the leaf in the file.
    pub offset: u64,
    /// Length of the leaf in bytes.
    pub len: u64,
    /// BLAKE2b `node_offset` parameter (datamon's quirk: see [`LeafLayout`]).
    pub node_offset: u64,
    /// BLAKE2b `last_node` flag.
    pub last_node: bool,
}

/// How a file of `size` bytes is cut into leaves of `leaf_size` bytes.
///
/// datamon numbers full leaves 1, 2, …, N with `last_node = false`; a trailing partial leaf
/// after N full leaves gets `node_offset = N` and `last_node = true`; a file shorter than one
/// leaf is one leaf with `node_offset = 0, last_node = true`; an empty file has no leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafLayout {
    /// File size in bytes.
    pub size: u64,
    /// Leaf size.
    pub leaf_size: LeafSize,
}

impl LeafLayout {
    /// The layout of a file of `size` bytes.
    pub fn new(size: u64, leaf_size: LeafSize) -> Self {
        Self { size, leaf_size }
    }

    /// Number of full leaves.
    fn full(&self) -> u64 {
        self.size / self.leaf_size.bytes()
    }

    /// Number of leaves.
    pub fn count(&self) -> u64 {
        self.size.div_ceil(self.leaf_size.bytes())
    }

    /// The leaf at `index` (0-based), if the file has one there.
    pub fn leaf(&self, index: u64) -> Option<Leaf> {
        if index >= self.count() {
            return None;
        }
        let l = self.leaf_size.bytes();
        let offset = index * l;
        let len = (self.size - offset).min(l);
        let full = self.full();
        let (node_offset, last_node) = if index < full {
            (index + 1, false)
        } else {
            // The trailing partial leaf (or the only leaf of a short file, where full == 0).
            (full, true)
        };
        Some(Leaf {
            index,
            offset,
            len,
            node_offset,
            last_node,
        })
    }

    /// All leaves in order.
    pub fn leaves(&self) -> impl Iterator<Item = Leaf> + '_ {
        (0..self.count()).filter_map(|i| self.leaf(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: u64, leaf: u64) -> Vec<(u64, u64, bool)> {
        LeafLayout::new(size, LeafSize::new(leaf).unwrap())
            .leaves()
            .map(|l| (l.len, l.node_offset, l.last_node))
            .collect()
    }

    #[test]
    fn datamon_node_offsets() {
        assert_eq!(layout(0, 4), vec![]);
        assert_eq!(layout(3, 4), vec![(3, 0, true)]);
        assert_eq!(layout(4, 4), vec![(4, 1, false)]);
        assert_eq!(layout(8, 4), vec![(4, 1, false), (4, 2, false)]);
        assert_eq!(
            layout(9, 4),
            vec![(4, 1, false), (4, 2, false), (1, 2, true)]
        );
    }

    #[test]
    fn leaf_size_range() {
        assert!(LeafSize::new(0).is_err());
        assert!(LeafSize::new(u64::from(MAX_LEAF_SIZE) + 1).is_err());
        assert!(LeafSize::new(u64::from(u32::MAX) + 1).is_err());
        assert_eq!(LeafSize::new(1).unwrap().get(), 1);
        let msg = LeafSize::new(0).unwrap_err().to_string();
        assert!(msg.contains("leaf size 0 is out of range"), "{msg}");
    }
}
