//! BLAKE2b-512 tree-mode keys of leaves and roots, with datamon's parameters
//! (`fanout = 0, max_depth = 2, leaf_length = leaf size, inner_length = 64`).

use super::key::{Key, KEY_LEN};
use super::leaf::{Leaf, LeafSize};

fn params(leaf_size: LeafSize) -> blake2b_simd::Params {
    let mut p = blake2b_simd::Params::new();
    p.hash_length(KEY_LEN)
        .fanout(0)
        .max_depth(2)
        .max_leaf_length(leaf_size.get())
        .inner_hash_length(KEY_LEN);
    p
}

fn finish(hash: blake2b_simd::Hash) -> Key {
    // Invariant: hash_length is KEY_LEN, so the digest is exactly KEY_LEN bytes.
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(hash.as_bytes());
    Key::from_bytes(out)
}

/// The key of one leaf's bytes.
pub fn leaf_key(data: &[u8], leaf: &Leaf, leaf_size: LeafSize) -> Key {
    let mut p = params(leaf_size);
    p.node_offset(leaf.node_offset)
        .node_depth(0)
        .last_node(leaf.last_node);
    finish(p.hash(data))
}

/// The root key of a file from its leaf keys, in order.
pub fn root_key<'a>(leaf_keys: impl IntoIterator<Item = &'a Key>, leaf_size: LeafSize) -> Key {
    let mut p = params(leaf_size);
    p.node_offset(0).node_depth(1).last_node(true);
    let mut state = p.to_state();
    for k in leaf_keys {
        state.update(k.as_bytes());
    }
    finish(state.finalize())
}

/// Keys of a whole in-memory file: its leaf keys and its root key.
#[cfg(test)]
pub fn file_keys(data: &[u8], leaf_size: LeafSize) -> (Vec<Key>, Key) {
    let layout = super::leaf::LeafLayout::new(data.len() as u64, leaf_size);
    let leaves: Vec<Key> = layout
        .leaves()
        .map(|l| {
            let start = l.offset as usize;
            leaf_key(&data[start..start + l.len as usize], &l, leaf_size)
        })
        .collect();
    let root = root_key(&leaves, leaf_size);
    (leaves, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deterministic pattern used for multi-leaf vectors (shared with the Python
    /// reference in tests/interop): byte i is (i * 31 + 7) % 251.
    fn pattern(size: usize) -> Vec<u8> {
        (0..size).map(|i| ((i * 31 + 7) % 251) as u8).collect()
    }

    fn hex(keys: &[Key]) -> Vec<String> {
        keys.iter().map(|k| k.to_hex()).collect()
    }

    #[test]
    fn reference_vector_hello_world() {
        let (leaves, root) = file_keys(b"hello world\n", LeafSize::default());
        assert_eq!(hex(&leaves), vec!["a80cbf802ec85d3513e67f96a53af975ee108641693332097d0bb263841195003c027cb3073fb5f1d621851ec9132b7431b8b3e38853627d5a9f8cde4d62e099"]);
        assert_eq!(root.to_hex(), "6914dbf186447c478b265aea9e30383c05b8e15576641b12997dd4300639a997c5b04c39eeb00bcad6f3eed6f6d2f37bb99acb648b668e427873d7af183e5777");
    }

    #[test]
    fn reference_vector_empty() {
        let (leaves, root) = file_keys(b"", LeafSize::default());
        assert!(leaves.is_empty());
        assert_eq!(root.to_hex(), "a0c4be8a8f5ea443fdd4b148ddd8b187416b07d955c62fc45d4ad4fb88a705a9d5229a236e5bea6c870d6bd232772c9d7df1431649015432cd74b266ac65a5b5");
    }

    include!("vectors.rs");

    #[test]
    fn multi_leaf_vectors_from_python_hashlib() {
        for (size, leaves, root) in MULTI_LEAF_VECTORS {
            let (got_leaves, got_root) = file_keys(&pattern(*size), LeafSize::default());
            assert_eq!(hex(&got_leaves), leaves.to_vec(), "leaves of size {size}");
            assert_eq!(got_root.to_hex(), *root, "root of size {size}");
        }
    }
}
