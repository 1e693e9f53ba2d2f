//! Writes files into the blob bucket: cut into leaves, hashed on all cores, stored unless
//! an object with the same key and size is already there (the dedup), then the root object.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::task::JoinSet;

use super::hasher::{leaf_key, root_key};
use super::key::Key;
use super::leaf::{LeafLayout, LeafSize};
use super::root;
use crate::bucket::Bucket;
use crate::buffers::BufferPool;
use crate::error::{Error, Result};
use crate::tuning::MemoryBudget;

/// Store requests in flight for one batch of small files.
const SMALL_FILE_REQUESTS: usize = 16;

/// Counters of what a writer did.
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Leaf and root objects written.
    pub objects_written: AtomicU64,
    /// Leaf and root objects found already stored and skipped.
    pub objects_deduplicated: AtomicU64,
    /// Bytes of file content hashed.
    pub bytes_hashed: AtomicU64,
    /// Bytes of objects written.
    pub bytes_written: AtomicU64,
}

/// Writes files into a blob bucket.
#[derive(Clone, Debug)]
pub struct BlobWriter {
    bucket: Bucket,
    leaf_size: LeafSize,
    budget: MemoryBudget,
    buffers: Arc<BufferPool>,
    stats: Arc<WriteStats>,
}

impl BlobWriter {
    /// A writer into `bucket` with leaves of `leaf_size`.
    pub fn new(bucket: Bucket, leaf_size: LeafSize, budget: MemoryBudget) -> Self {
        Self {
            bucket,
            leaf_size,
            buffers: BufferPool::for_budget(leaf_size.get() as usize, &budget),
            budget,
            stats: Arc::default(),
        }
    }

    /// What this writer has done so far.
    pub fn stats(&self) -> &Arc<WriteStats> {
        &self.stats
    }

    /// Stores the file at `path`, expected to be `size` bytes, and returns its root key.
    /// `on_bytes` is told about every leaf hashed (for progress).
    pub async fn write_file(
        &self,
        path: &Path,
        size: u64,
        on_bytes: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Key> {
        let layout = LeafLayout::new(size, self.leaf_size);
        if layout.count() <= 1 {
            let mut roots = self
                .write_small_files(vec![(path.to_path_buf(), size)], &on_bytes)
                .await?;
            return roots
                .pop()
                .ok_or_else(|| Error::Internal("no root key for a small file".into()));
        }
        let open_path = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || File::open(&open_path))
            .await?
            .map_err(Error::io("read", path))?;
        let file = Arc::new(file);
        let root = self
            .write_leaves(file.clone(), path, layout, on_bytes)
            .await?;
        // A file that grew or shrank while being read would be stored wrong: refuse it.
        let now = tokio::task::spawn_blocking(move || file.metadata())
            .await?
            .map_err(Error::io("read", path))?;
        if now.len() != size {
            return Err(changed_while_reading(
                path,
                std::io::Error::other("its size changed"),
            ));
        }
        Ok(root)
    }

    /// Whether a file of `size` bytes is one leaf at most (see [`Self::write_small_files`]).
    pub fn is_small(&self, size: u64) -> bool {
        size <= self.leaf_size.bytes()
    }

    /// Files of at most one leaf each. Small files cost scheduling more than hashing, so
    /// a whole batch is read and hashed in one hand-off to a blocking thread; then one
    /// check of each root object (always written after its leaf) tells whether anything
    /// needs writing. Returns the root keys in the order of `files` (`(path, size)`).
    pub async fn write_small_files(
        &self,
        files: Vec<(PathBuf, u64)>,
        on_bytes: &Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Vec<Key>> {
        let total: u64 = files.iter().map(|(_, size)| size).sum();
        let permit = self.budget.reserve(total).await?;
        let ls = self.leaf_size;
        let hashed = tokio::task::spawn_blocking(move || {
            files
                .iter()
                .map(|(path, size)| read_small(path, LeafLayout::new(*size, ls)))
                .collect::<Result<Vec<_>>>()
        })
        .await??;
        self.stats.bytes_hashed.fetch_add(total, Ordering::Relaxed);
        on_bytes(total);
        let hashed: Vec<(Vec<u8>, Vec<Key>, Key)> = hashed
            .into_iter()
            .map(|(data, leaf_keys)| {
                let root = root_key(&leaf_keys, self.leaf_size);
                (data, leaf_keys, root)
            })
            .collect();
        let stored = self
            .bucket
            .sizes(hashed.iter().map(|(_, _, root)| root.to_hex()).collect())
            .await?;
        let roots = futures::stream::iter(hashed.into_iter().zip(stored))
            .map(|((data, leaf_keys, root), stored)| {
                self.store_small(data, leaf_keys, root, stored)
            })
            .buffered(SMALL_FILE_REQUESTS)
            .try_collect()
            .await?;
        drop(permit);
        Ok(roots)
    }

    /// Stores a one-leaf file unless its root object is already stored (`stored` is the
    /// size of the object under the root key, if there is one).
    async fn store_small(
        &self,
        data: Vec<u8>,
        leaf_keys: Vec<Key>,
        root: Key,
        stored: Option<u64>,
    ) -> Result<Key> {
        let root_obj = Bytes::from(root::encode(&leaf_keys, &root));
        if stored == Some(root_obj.len() as u64) {
            self.stats
                .objects_deduplicated
                .fetch_add(1 + leaf_keys.len() as u64, Ordering::Relaxed);
            return Ok(root);
        }
        // The root object of a one-leaf file is a function of its leaf alone, so a missing
        // root object means the leaf is almost surely missing too: write both unprobed.
        if let Some(k) = leaf_keys.first() {
            self.put(k, Bytes::from(data)).await?;
        }
        self.put(&root, root_obj).await?;
        Ok(root)
    }

    /// A file of several leaves: leaves read, hashed and stored in parallel under the
    /// memory budget, then the root object.
    async fn write_leaves(
        &self,
        file: Arc<File>,
        path: &Path,
        layout: LeafLayout,
        on_bytes: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Key> {
        let mut tasks = JoinSet::new();
        for leaf in layout.leaves() {
            let permit = self.budget.reserve(leaf.len).await?;
            let (file, writer, path, on_bytes) = (
                file.clone(),
                self.clone(),
                path.to_path_buf(),
                on_bytes.clone(),
            );
            tasks.spawn(async move {
                let ls = writer.leaf_size;
                let buffers = writer.buffers.clone();
                let (data, key) = tokio::task::spawn_blocking(move || -> Result<(Bytes, Key)> {
                    // The buffer goes back to the pool once the store has let go of it.
                    let data = buffers.fill(|buf| {
                        buf.resize(leaf.len as usize, 0);
                        file.read_exact_at(buf, leaf.offset)
                            .map_err(|e| changed_while_reading(&path, e))
                    })?;
                    let key = leaf_key(&data, &leaf, ls);
                    Ok((data, key))
                })
                .await??;
                writer
                    .stats
                    .bytes_hashed
                    .fetch_add(leaf.len, Ordering::Relaxed);
                on_bytes(leaf.len);
                writer.store(&key, data).await?;
                drop(permit);
                Ok::<_, Error>((leaf.index, key))
            });
        }
        let mut keys = vec![None; layout.count() as usize];
        while let Some(joined) = tasks.join_next().await {
            let (index, key) = joined??;
            keys[index as usize] = Some(key);
        }
        // Invariant: every leaf index in 0..count was spawned and joined without error.
        let keys: Vec<Key> = keys.into_iter().flatten().collect();
        let root = root_key(&keys, self.leaf_size);
        self.store(&root, Bytes::from(root::encode(&keys, &root)))
            .await?;
        Ok(root)
    }

    /// Stores one object unless an object of the same key and size is already there.
    async fn store(&self, key: &Key, data: Bytes) -> Result<()> {
        let name = key.to_hex();
        let len = data.len() as u64;
        if self.bucket.size(&name).await? == Some(len) {
            self.stats
                .objects_deduplicated
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // Content-addressed: an object of another size under this key is damaged, and
        // writing the right bytes over it repairs it.
        self.put(key, data).await
    }

    /// Writes one object (same key, same bytes: overwriting is harmless).
    async fn put(&self, key: &Key, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        self.bucket.put(&key.to_hex(), data).await?;
        self.stats.objects_written.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_written.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

/// Reads and hashes a file of at most one leaf; refuses it if its size is not `layout.size`.
fn read_small(path: &Path, layout: LeafLayout) -> Result<(Vec<u8>, Vec<Key>)> {
    use std::io::Read;
    let file = File::open(path).map_err(Error::io("read", path))?;
    // One byte more than expected tells a file that grew since it was listed.
    let mut buf = Vec::with_capacity(layout.size as usize + 1);
    file.take(layout.size + 1)
        .read_to_end(&mut buf)
        .map_err(Error::io("read", path))?;
    if buf.len() as u64 != layout.size {
        return Err(changed_while_reading(
            path,
            std::io::Error::other(format!(
                "it is now {} bytes, not {}",
                buf.len(),
                layout.size
            )),
        ));
    }
    let keys = layout
        .leaf(0)
        .map(|l| leaf_key(&buf, &l, layout.leaf_size))
        .into_iter()
        .collect();
    Ok((buf, keys))
}

fn changed_while_reading(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        op: "upload (the file changed while it was being read; upload again once it is stable)",
        path: PathBuf::from(path),
        source: e,
    }
}
