//! Reads files out of the blob bucket, checking every root object and every leaf.

use std::sync::Arc;

use bytes::Bytes;

use super::hasher::leaf_key;
use super::key::Key;
use super::leaf::{Leaf, LeafSize};
use super::root;
use crate::bucket::Bucket;
use crate::buffers::BufferPool;
use crate::error::{Error, Result};

/// Reads and verifies objects of one bundle (one leaf size).
#[derive(Clone, Debug)]
pub struct BlobReader {
    bucket: Bucket,
    leaf_size: LeafSize,
    /// Recycled buffers for leaves, when the caller gives some.
    buffers: Option<Arc<BufferPool>>,
}

impl BlobReader {
    /// A reader of `bucket` for a bundle with leaves of `leaf_size`.
    pub fn new(bucket: Bucket, leaf_size: LeafSize) -> Self {
        Self {
            bucket,
            leaf_size,
            buffers: None,
        }
    }

    /// The same reader, reading leaves into buffers of `pool` (one leaf each), which go
    /// back to it when the caller drops them.
    pub fn with_buffers(self, pool: Arc<BufferPool>) -> Self {
        Self {
            buffers: Some(pool),
            ..self
        }
    }

    /// The bundle's leaf size.
    pub fn leaf_size(&self) -> LeafSize {
        self.leaf_size
    }

    /// An object of the blob bucket, in a buffer of `pool` if given; a missing one is an
    /// error naming the file.
    async fn fetch(
        &self,
        what: &'static str,
        key: &Key,
        file: &str,
        pool: Option<&Arc<BufferPool>>,
    ) -> Result<Bytes> {
        let name = key.to_hex();
        let got = match pool {
            Some(pool) => self.bucket.get_pooled(&name, pool).await?,
            None => self.bucket.get(&name).await?,
        };
        got.ok_or_else(|| Error::MissingBlob {
            what,
            key: name,
            file: file.to_string(),
            bucket: self.bucket.url().to_string(),
        })
    }

    /// The leaf keys of `file` (root key `root`, `size` bytes), from its checked root object.
    pub async fn leaf_keys(&self, root: &Key, size: u64, file: &str) -> Result<Vec<Key>> {
        let bytes = self.fetch("root object", root, file, None).await?;
        root::decode(root, &bytes, size, self.leaf_size).map_err(|source| Error::Root {
            file: file.to_string(),
            source,
        })
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
        let bytes = self.fetch("leaf", key, file, self.buffers.as_ref()).await?;
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
