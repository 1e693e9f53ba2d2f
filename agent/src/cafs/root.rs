//! Root objects: `leafKey_1 ‖ … ‖ leafKey_N ‖ rootKey`, named by the root key.

use super::hasher::root_key;
use super::key::{Key, KEY_LEN};
use super::leaf::{LeafLayout, LeafSize};

/// A root object that does not describe the file it is said to describe.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    /// The object is not a whole number of keys, or holds no trailing key.
    #[error("root object {key} is {len} bytes, not a non-zero multiple of {KEY_LEN}: it is truncated or not a root object")]
    Malformed {
        /// The root key asked for.
        key: String,
        /// The object's length.
        len: usize,
    },
    /// The trailing key is not the key the object is stored under.
    #[error("root object {key} ends with key {trailing}: the object is corrupt or misnamed")]
    TrailingKey {
        /// The root key asked for.
        key: String,
        /// The trailing key found.
        trailing: String,
    },
    /// The leaf keys do not hash to the root key.
    #[error("the leaf keys in root object {key} hash to {computed}, not to {key}: the object is corrupt")]
    Recomputed {
        /// The root key asked for.
        key: String,
        /// What the leaf keys hash to.
        computed: String,
    },
    /// The number of leaves does not fit the file size the bundle records.
    #[error("root object {key} lists {found} leaves but a file of {size} bytes with {leaf_size}-byte leaves has {expected}")]
    LeafCount {
        /// The root key.
        key: String,
        /// Leaves listed.
        found: usize,
        /// Leaves expected.
        expected: u64,
        /// File size from the bundle.
        size: u64,
        /// Leaf size of the bundle.
        leaf_size: LeafSize,
    },
}

/// Encodes the root object of a file.
pub fn encode(leaf_keys: &[Key], root: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity((leaf_keys.len() + 1) * KEY_LEN);
    for k in leaf_keys.iter().chain(std::iter::once(root)) {
        out.extend_from_slice(k.as_bytes());
    }
    out
}

/// Decodes and checks the root object stored under `key` for a file of `size` bytes:
/// the trailing key must be `key`, the leaf keys must hash to it, and their number must
/// fit the size. Returns the leaf keys.
pub fn decode(
    key: &Key,
    bytes: &[u8],
    size: u64,
    leaf_size: LeafSize,
) -> Result<Vec<Key>, RootError> {
    if bytes.is_empty() || bytes.len() % KEY_LEN != 0 {
        return Err(RootError::Malformed {
            key: key.to_hex(),
            len: bytes.len(),
        });
    }
    let mut keys: Vec<Key> = bytes
        .chunks_exact(KEY_LEN)
        .filter_map(Key::from_slice)
        .collect();
    let trailing = keys.pop().ok_or(RootError::Malformed {
        key: key.to_hex(),
        len: bytes.len(),
    })?;
    if trailing != *key {
        return Err(RootError::TrailingKey {
            key: key.to_hex(),
            trailing: trailing.to_hex(),
        });
    }
    let computed = root_key(&keys, leaf_size);
    if computed != *key {
        return Err(RootError::Recomputed {
            key: key.to_hex(),
            computed: computed.to_hex(),
        });
    }
    let expected = LeafLayout::new(size, leaf_size).count();
    if keys.len() as u64 != expected {
        return Err(RootError::LeafCount {
            key: key.to_hex(),
            found: keys.len(),
            expected,
            size,
            leaf_size,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cafs::hasher::file_keys;

    #[test]
    fn round_trip_and_checks() {
        let ls = LeafSize::new(4).unwrap();
        let data = b"0123456789";
        let (leaves, root) = file_keys(data, ls);
        let obj = encode(&leaves, &root);
        assert_eq!(obj.len(), 4 * KEY_LEN);
        assert_eq!(decode(&root, &obj, 10, ls).unwrap(), leaves);

        // A wrong trailing key.
        let other = file_keys(b"x", ls).1;
        let mut bad = obj.clone();
        bad[3 * KEY_LEN..].copy_from_slice(other.as_bytes());
        assert!(matches!(
            decode(&root, &bad, 10, ls),
            Err(RootError::TrailingKey { .. })
        ));

        // A flipped leaf key.
        let mut bad = obj.clone();
        bad[0] ^= 1;
        assert!(matches!(
            decode(&root, &bad, 10, ls),
            Err(RootError::Recomputed { .. })
        ));

        // Truncated.
        assert!(matches!(
            decode(&root, &obj[..100], 10, ls),
            Err(RootError::Malformed { .. })
        ));

        // Size disagrees with the number of leaves.
        assert!(matches!(
            decode(&root, &obj, 20, ls),
            Err(RootError::LeafCount { .. })
        ));
    }

    #[test]
    fn empty_file_root_object_is_the_root_key_alone() {
        let ls = LeafSize::default();
        let (leaves, root) = file_keys(b"", ls);
        let obj = encode(&leaves, &root);
        assert_eq!(obj, root.as_bytes().to_vec());
        assert!(decode(&root, &obj, 0, ls).unwrap().is_empty());
    }
}
