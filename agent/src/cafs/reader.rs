//! Reads files out of the blob bucket, checking every root object and every leaf.

use bytes::Bytes;

use super::hasher::leaf_key;
use super::key::Key;
use super::leaf::{Leaf, LeafSize};
use super::root;
use crate::bucket::Bucket;
use crate::error::{Error, Result};

/// Reads and verifies objects of one bundle (one leaf size).
#[derive(Clone, Debug)]
pub struct BlobReader {
    bucket: Bucket,
    leaf_size: LeafSize,
}

impl BlobReader {
    /// A reader of `bucket` for a bundle with leaves of `leaf_size`.
    pub fn new(bucket: Bucket, leaf_size: LeafSize) -> Self {
        Self { bucket, leaf_size }
    }

    /// The bundle's leaf size.
    pub fn leaf_size(&self) -> LeafSize {
        self.leaf_size
    }

    /// An object of the blob bucket; a missing one is an error naming the file.
    async fn fetch(&self, what: &'static str, key: &Key, file: &str) -> Result<Bytes> {
        self.bucket
            .get(&key.to_hex())
            .await?
            .ok_or_else(|| Error::MissingBlob {
                what,
                key: key.to_hex(),
                file: file.to_string(),
                bucket: self.bucket.url().to_string(),
            })
    }

    /// The leaf keys of `file` (root key `root`, `size` bytes), from its checked root object.
    pub async fn leaf_keys(&self, root: &Key, size: u64, file: &str) -> Result<Vec<Key>> {
        let bytes = self.fetch("root object", root, file).await?;
        root::decode(root, &bytes, size, self.leaf_size).map_err(|source| Error::Root {
            file: file.to_string(),
            source,
        })
    }

    /// One leaf of `file`, whose bytes are checked against `key` before they are returned.
    pub async fn leaf(&self, key: &Key, leaf: &Leaf, file: &str) -> Result<Bytes> {
        self.leaf_then(key, leaf, file, Ok).await
    }

    /// Fetches one leaf of `file`, checks it against `key`, then hands the bytes to `then`
    /// on the same blocking thread (so that hashing and, say, writing the bytes out cost
    /// one hand-off, not two).
    pub async fn leaf_then<T: Send + 'static>(
        &self,
        key: &Key,
        leaf: &Leaf,
        file: &str,
        then: impl FnOnce(Bytes) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let bytes = self.fetch("leaf", key, file).await?;
        if bytes.len() as u64 != leaf.len {
            return Err(Error::LeafLength {
                key: key.to_hex(),
                file: file.to_string(),
                len: bytes.len(),
                expected: leaf.len,
            });
        }
        let (ls, leaf, key, file) = (self.leaf_size, *leaf, *key, file.to_string());
        tokio::task::spawn_blocking(move || {
            let computed = leaf_key(&bytes, &leaf, ls);
            if computed != key {
                return Err(Error::LeafMismatch {
                    key: key.to_hex(),
                    computed: computed.to_hex(),
                    file,
                });
            }
            then(bytes)
        })
        .await?
    }
}
