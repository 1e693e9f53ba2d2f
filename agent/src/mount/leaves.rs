//! Verified leaves for the mount: from the in-memory [`LeafCache`], else from the disk
//! cache (a leaf, or a whole file holding it), else from the store through the
//! [`BlobReader`] (every leaf checked against its key), with one fetch per leaf however
//! many reads wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::cache::LeafCache;
use super::disk::DiskCache;
use crate::buffers::BufferPool;
use crate::cafs::leaf::Leaf;
use crate::cafs::reader::BlobReader;
use crate::cafs::Key;
use crate::error::Result;
use crate::sync::lock;

/// Where else than the leaf cache a leaf may be on disk, and whether to keep it there.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OnDisk {
    /// The root key of the file read: its whole file may be on disk.
    pub root: Option<Key>,
    /// Keep the leaf in the disk cache: not while its whole file is being assembled
    /// (the whole file will hold it).
    pub keep: bool,
}

/// Verified leaves: the cache, and the fetches in flight.
pub(crate) struct Leaves {
    reader: BlobReader,
    cache: Mutex<LeafCache>,
    pool: Arc<BufferPool>,
    disk: Option<Arc<DiskCache>>,
    fetching: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl Leaves {
    /// Leaves read with `reader`, `cache_bytes` of them kept in memory in buffers of
    /// `pool`, and kept on `disk` too if given.
    pub fn new(
        reader: BlobReader,
        cache_bytes: usize,
        pool: Arc<BufferPool>,
        disk: Option<Arc<DiskCache>>,
    ) -> Self {
        Self {
            reader,
            cache: Mutex::new(LeafCache::new(cache_bytes)),
            pool,
            disk,
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the leaf `key` is in the memory cache.
    pub fn cached(&self, key: &Key) -> bool {
        lock(&self.cache).contains(key)
    }

    /// One verified leaf, from the cache or fetched. Concurrent reads of the same leaf
    /// (the kernel reads ahead in parallel 128 KiB requests) wait for one fetch.
    pub async fn leaf(&self, key: &Key, leaf: &Leaf, name: &str, on_disk: OnDisk) -> Result<Bytes> {
        if let Some(b) = lock(&self.cache).get(key) {
            return Ok(b);
        }
        let gate = lock(&self.fetching).entry(*key).or_default().clone();
        let fetched = {
            let _turn = gate.lock().await;
            let hit = lock(&self.cache).get(key);
            match hit {
                Some(b) => Ok(b),
                None => self.fetch(key, leaf, name, on_disk).await.inspect(|b| {
                    lock(&self.cache).insert(*key, b.clone());
                }),
            }
        };
        // The last waiter out removes the gate (the map holds one reference).
        let mut fetching = lock(&self.fetching);
        if fetching
            .get(key)
            .is_some_and(|g| Arc::ptr_eq(g, &gate) && Arc::strong_count(g) == 2)
        {
            fetching.remove(key);
        }
        fetched
    }

    /// One verified leaf from the disk cache (a leaf, or the whole file), else from the
    /// store (then kept on disk, if `on_disk` says so).
    async fn fetch(&self, key: &Key, leaf: &Leaf, name: &str, on_disk: OnDisk) -> Result<Bytes> {
        if let Some(disk) = &self.disk {
            let (disk, pool, k, l) = (disk.clone(), self.pool.clone(), *key, *leaf);
            let in_leaf = disk.contains(key);
            let in_file = on_disk.root.filter(|r| disk.contains_file(r));
            if in_leaf || in_file.is_some() {
                let hit = tokio::task::spawn_blocking(move || {
                    let from_leaf = || in_leaf.then(|| disk.get(&k, &l, &pool)).flatten();
                    from_leaf().or_else(|| disk.get_in_file(&in_file?, &k, &l, &pool))
                })
                .await?;
                if let Some(bytes) = hit {
                    return Ok(bytes);
                }
            }
        }
        // Copied into a pooled buffer (and written to disk) on the thread that verifies it.
        let disk = self.disk.clone().filter(|_| on_disk.keep);
        let (pool, k) = (self.pool.clone(), *key);
        let file = name.to_string();
        self.reader
            .leaf_then(key, leaf, name, move |b| {
                if let Some(disk) = disk {
                    if let Err(e) = disk.put(&k, &b) {
                        tracing::warn!(
                            file = %file,
                            "cannot keep a leaf in the disk cache: {}",
                            datamon_edge::chain(&e)
                        );
                    }
                }
                Ok(pool.copy(&b))
            })
            .await
    }
}
