//! The optional on-disk cache (`--cache-dir`, `--cache-mib`): verified leaves kept as
//! files named by their key, so that a remount (or another mount of a bundle sharing
//! leaves) reads them without the store; and whole files (`<root key>.file`), assembled
//! from verified leaves, that the kernel reads directly (see [`super::whole`]).
//!
//! - Only leaves verified against their key are written, each to a temporary file renamed
//!   into place, so a file under a key's name is never partly written by a live process.
//! - Every leaf read back is verified again (a crash before the bytes reached the disk, a
//!   bit flip, a hand edit): a mismatch removes the file and the leaf is fetched anew. A
//!   whole file is verified once per mount before its first use.
//! - The files' total size stays under the bound: least recently used out first, with the
//!   modification time of each file as its last use, so the order survives remounts.
//!
//! All of it is blocking file I/O, to be run on a blocking thread.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::buffers::BufferPool;
use crate::cafs::hasher::leaf_key;
use crate::cafs::leaf::Leaf;
use crate::cafs::{Key, LeafSize};
use crate::error::{Error, Result};
use crate::sync::lock;

/// Where the cache lives and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskCacheConfig {
    /// The cache directory (created if missing).
    pub dir: PathBuf,
    /// Most bytes of leaf files kept.
    pub bytes: u64,
}

/// Temporary files older than this are left over by a process that died while writing
/// them; younger ones may be another live mount's.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// Suffix of temporary files.
const TEMP_SUFFIX: &str = ".tmp";

/// Suffix of whole files.
const FILE_SUFFIX: &str = ".file";

/// What the cache holds under a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A leaf, by its key.
    Leaf(Key),
    /// A whole file, by its root key.
    File(Key),
}

impl Entry {
    /// The entry a cache directory's file name stands for, if any.
    fn parse(name: &str) -> Option<Self> {
        match name.strip_suffix(FILE_SUFFIX) {
            Some(hex) => hex.parse().ok().map(Entry::File),
            None => name.parse().ok().map(Entry::Leaf),
        }
    }

    /// The file name of the entry in the cache directory.
    fn name(&self) -> String {
        match self {
            Entry::Leaf(k) => k.to_hex(),
            Entry::File(k) => format!("{}{FILE_SUFFIX}", k.to_hex()),
        }
    }
}

/// Which entries are on disk, in order of last use (pure bookkeeping).
#[derive(Debug, Default)]
struct Index {
    used: u64,
    clock: u64,
    entries: HashMap<Entry, (u64, u64)>,
    order: BTreeMap<u64, Entry>,
}

impl Index {
    /// Records `key` (`size` bytes) as present and just used.
    fn touch(&mut self, key: Entry, size: u64) {
        self.remove(&key);
        self.clock += 1;
        self.used += size;
        self.entries.insert(key, (size, self.clock));
        self.order.insert(self.clock, key);
    }

    /// Forgets `key`.
    fn remove(&mut self, key: &Entry) {
        if let Some((size, stamp)) = self.entries.remove(key) {
            self.order.remove(&stamp);
            self.used -= size;
        }
    }

    /// Forgets the least recently used keys until at most `limit` bytes are left, and
    /// returns them.
    fn evict_to(&mut self, limit: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        while self.used > limit {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some((size, _)) = self.entries.remove(&key) {
                self.used -= size;
            }
            out.push(key);
        }
        out
    }
}

/// An on-disk cache of verified leaves.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    leaf_size: LeafSize,
    index: Mutex<Index>,
    temp: AtomicU64,
}

impl DiskCache {
    /// Opens (creating it if needed) the cache in `config.dir` for leaves of `leaf_size`:
    /// finds the leaves already there, removes temporary files left by a dead process,
    /// and evicts down to the bound.
    pub fn open(config: &DiskCacheConfig, leaf_size: LeafSize) -> Result<Arc<Self>> {
        let dir = &config.dir;
        std::fs::create_dir_all(dir).map_err(Error::io("create the cache directory", dir))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(Error::io("read the cache directory", dir))? {
            let entry = entry.map_err(Error::io("read the cache directory", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.ends_with(TEMP_SUFFIX) {
                let age = SystemTime::now().duration_since(used).unwrap_or_default();
                if meta.is_file() && age > STALE_TEMP {
                    remove_quietly(&entry.path());
                }
                continue;
            }
            if let (true, Some(key)) = (meta.is_file(), Entry::parse(name)) {
                found.push((used, key, meta.len()));
            }
        }
        found.sort_by_key(|(used, key, _)| (*used, key.name()));
        let mut index = Index::default();
        for (_, key, size) in found {
            index.touch(key, size);
        }
        let cache = Self {
            dir: dir.clone(),
            limit: config.bytes,
            leaf_size,
            index: Mutex::new(index),
            temp: AtomicU64::new(0),
        };
        let (evicted, entries, bytes) = {
            let mut index = lock(&cache.index);
            let evicted = index.evict_to(cache.limit);
            (evicted, index.entries.len(), index.used)
        };
        cache.remove_files(&evicted);
        tracing::info!(
            dir = %dir.display(),
            entries,
            bytes,
            limit = cache.limit,
            "on-disk cache"
        );
        Ok(Arc::new(cache))
    }

    /// Bytes of leaves on disk (for tests: the cache keeps its own bound).
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        lock(&self.index).used
    }

    /// Whether the leaf `key` is on disk, as far as this process knows.
    pub fn contains(&self, key: &Key) -> bool {
        lock(&self.index).entries.contains_key(&Entry::Leaf(*key))
    }

    /// Whether the whole file of root key `root` is on disk, as far as this process knows.
    pub fn contains_file(&self, root: &Key) -> bool {
        lock(&self.index).entries.contains_key(&Entry::File(*root))
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.entry_path(&Entry::Leaf(*key))
    }

    fn entry_path(&self, entry: &Entry) -> PathBuf {
        self.dir.join(entry.name())
    }

    /// Most bytes the cache holds.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// A new temporary file in the cache directory for the whole file `root`, to be
    /// completed with [`Self::keep_file`] (or removed).
    pub fn temp_file(&self, root: &Key) -> Result<(std::fs::File, PathBuf)> {
        let n = self.temp.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(
            ".{}.{}.{n}{FILE_SUFFIX}{TEMP_SUFFIX}",
            root.to_hex(),
            std::process::id()
        ));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(Error::io("create a whole file in the cache", &temp))?;
        Ok((file, temp))
    }

    /// Renames the completed, verified temporary file `temp` (`size` bytes) into place as
    /// the whole file `root`, evicting the least recently used entries to stay under the
    /// bound.
    pub fn keep_file(
        &self,
        root: &Key,
        file: &std::fs::File,
        temp: &Path,
        size: u64,
    ) -> Result<()> {
        let entry = Entry::File(*root);
        let path = self.entry_path(&entry);
        let kept = file
            .set_modified(SystemTime::now())
            .map_err(Error::io("complete the whole file", temp))
            .and_then(|()| {
                std::fs::rename(temp, &path).map_err(Error::io("rename into place", &path))
            });
        if kept.is_err() {
            remove_quietly(temp);
        }
        kept?;
        let evicted = {
            let mut index = lock(&self.index);
            index.touch(entry, size);
            index.evict_to(self.limit)
        };
        self.remove_files(&evicted);
        Ok(())
    }

    /// The whole file `root`, opened for reading and marked as just used; `None` if it is
    /// not on disk (any more).
    pub fn open_file(&self, root: &Key) -> Option<std::fs::File> {
        let entry = Entry::File(*root);
        let size = lock(&self.index)
            .entries
            .get(&entry)
            .map(|(size, _)| *size)?;
        let path = self.entry_path(&entry);
        match std::fs::File::open(&path) {
            Ok(f) => {
                // Its modification time is its last use (see `get`).
                let _ = f.set_modified(SystemTime::now());
                lock(&self.index).touch(entry, size);
                Some(f)
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), "cannot open a cached file: {e}");
                }
                lock(&self.index).remove(&entry);
                None
            }
        }
    }

    /// The leaf `key` (the leaf `leaf` of the file `root`) read from the whole file
    /// `root` on disk and verified; `None` if that file is not on disk or the bytes do not
    /// match (the file is then removed).
    pub fn get_in_file(
        &self,
        root: &Key,
        key: &Key,
        leaf: &Leaf,
        pool: &Arc<BufferPool>,
    ) -> Option<Bytes> {
        let entry = Entry::File(*root);
        if !lock(&self.index).entries.contains_key(&entry) {
            return None;
        }
        let path = self.entry_path(&entry);
        let len = usize::try_from(leaf.len).ok()?;
        let read = std::fs::File::open(&path).and_then(|f| {
            pool.fill(|buf| {
                buf.resize(len, 0);
                f.read_exact_at(buf, leaf.offset)
            })
        });
        let outcome = match read {
            Ok(bytes) if leaf_key(&bytes, leaf, self.leaf_size) == *key => return Some(bytes),
            Ok(_) => Ok(false),
            Err(e) => Err(e),
        };
        self.file_checked(&entry, outcome);
        None
    }

    /// Checks every leaf of the whole file `root` against `leaves` (each leaf's key and
    /// place); a file that does not match (or cannot be read) is removed. Returns whether
    /// it matched.
    pub fn verify_file(&self, root: &Key, leaves: &[(Key, Leaf)], size: u64) -> bool {
        let entry = Entry::File(*root);
        let path = self.entry_path(&entry);
        let checked = std::fs::File::open(&path).and_then(|f| {
            if f.metadata()?.len() != size {
                return Ok(false);
            }
            let mut buf = Vec::new();
            for (key, leaf) in leaves {
                buf.clear();
                (&f).take(leaf.len).read_to_end(&mut buf)?;
                if buf.len() as u64 != leaf.len || leaf_key(&buf, leaf, self.leaf_size) != *key {
                    return Ok(false);
                }
            }
            Ok(true)
        });
        self.file_checked(&entry, checked)
    }

    /// The outcome of a check of the whole file `entry`: a mismatch removes the file, a
    /// file that cannot be read is forgotten. Returns whether it matched.
    fn file_checked(&self, entry: &Entry, outcome: std::io::Result<bool>) -> bool {
        let path = self.entry_path(entry);
        match outcome {
            Ok(true) => return true,
            Ok(false) => {
                tracing::warn!(
                    path = %path.display(),
                    "a cached file does not match its leaves: removed it"
                );
                remove_quietly(&path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), "cannot read a cached file: {e}"),
        }
        lock(&self.index).remove(entry);
        false
    }

    /// The leaf `key` (the leaf `leaf` of some file), read into a buffer of `pool` and
    /// verified; `None` if it is not on disk or does not match its key (the file is then
    /// removed).
    pub fn get(&self, key: &Key, leaf: &Leaf, pool: &Arc<BufferPool>) -> Option<Bytes> {
        if !self.contains(key) {
            return None;
        }
        let path = self.path(key);
        let read = std::fs::File::open(&path).and_then(|mut f| {
            let len = f.metadata()?.len();
            if len != leaf.len {
                return Ok((f, None));
            }
            let bytes = pool.fill(|buf| (&mut f).take(len).read_to_end(buf).map(|_| ()))?;
            Ok((f, Some(bytes)))
        });
        let (file, bytes) = match read {
            Ok(r) => r,
            Err(e) => {
                // Removed by another mount sharing the directory, or unreadable.
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), "cannot read a cached leaf: {e}");
                }
                lock(&self.index).remove(&Entry::Leaf(*key));
                return None;
            }
        };
        let verified = bytes.filter(|b| leaf_key(b, leaf, self.leaf_size) == *key);
        if verified.is_none() {
            tracing::warn!(
                path = %path.display(),
                "a cached leaf does not match its key: removed it, fetching the leaf again"
            );
            lock(&self.index).remove(&Entry::Leaf(*key));
            remove_quietly(&path);
            return None;
        }
        // Its modification time is its last use, for the order of eviction after a remount.
        let _ = file.set_modified(SystemTime::now());
        lock(&self.index).touch(Entry::Leaf(*key), leaf.len);
        verified
    }

    /// Keeps the verified leaf `key` on disk (if it fits at all), evicting the least
    /// recently used leaves to stay under the bound.
    pub fn put(&self, key: &Key, bytes: &[u8]) -> Result<()> {
        let size = bytes.len() as u64;
        if size > self.limit || self.contains(key) {
            return Ok(());
        }
        let n = self.temp.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(
            ".{}.{}.{n}{TEMP_SUFFIX}",
            key.to_hex(),
            std::process::id()
        ));
        let written = std::fs::File::create(&temp)
            .and_then(|mut f| {
                crate::fsio::write_all(&mut f, bytes)?;
                // Set, not left to the kernel's coarser clock: the order of last uses.
                f.set_modified(SystemTime::now())
            })
            .map_err(Error::io("write the cached leaf", &temp))
            .and_then(|()| {
                let path = self.path(key);
                std::fs::rename(&temp, &path).map_err(Error::io("rename into place", &path))
            });
        if written.is_err() {
            remove_quietly(&temp);
        }
        written?;
        let evicted = {
            let mut index = lock(&self.index);
            index.touch(Entry::Leaf(*key), size);
            index.evict_to(self.limit)
        };
        self.remove_files(&evicted);
        Ok(())
    }

    fn remove_files(&self, entries: &[Entry]) {
        for entry in entries {
            remove_quietly(&self.entry_path(entry));
        }
    }
}

/// Removes a file of the cache; one already gone (another mount sharing the directory
/// removed it) is fine, and any other failure only leaves a file to be evicted later.
fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), "cannot remove from the leaf cache: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cafs::LeafLayout;
    use std::io::Write;

    fn key(n: u8) -> Key {
        format!("{n:02x}").repeat(64).parse().unwrap()
    }

    #[test]
    fn the_index_evicts_least_recently_used_first() {
        let mut i = Index::default();
        let (one, two, three) = (
            Entry::Leaf(key(1)),
            Entry::File(key(2)),
            Entry::Leaf(key(3)),
        );
        i.touch(one, 4);
        i.touch(two, 4);
        i.touch(three, 4);
        i.touch(one, 4); // 1 used again: 2 is now the oldest
        assert_eq!(i.used, 12);
        assert_eq!(i.evict_to(8), [two]);
        assert_eq!(i.evict_to(3), [three, one]);
        assert_eq!(i.used, 0);
        assert!(i.evict_to(0).is_empty());
    }

    /// Leaves of a test file, with their keys and bytes.
    type TestLeaves = Vec<(Key, Leaf, Vec<u8>)>;

    /// A cache of `limit` bytes in a new directory, for leaves of 16 bytes, and 3 leaves
    /// of one file with their keys.
    fn setup(limit: u64) -> (tempfile::TempDir, DiskCacheConfig, TestLeaves) {
        let tmp = tempfile::tempdir().unwrap();
        let config = DiskCacheConfig {
            dir: tmp.path().join("cache"),
            bytes: limit,
        };
        let ls = LeafSize::new(16).unwrap();
        let data: Vec<u8> = (0..40u8).collect();
        let layout = LeafLayout::new(40, ls);
        let leaves = layout
            .leaves()
            .map(|leaf| {
                let bytes = data[leaf.offset as usize..(leaf.offset + leaf.len) as usize].to_vec();
                (leaf_key(&bytes, &leaf, ls), leaf, bytes)
            })
            .collect();
        (tmp, config, leaves)
    }

    #[test]
    fn leaves_survive_a_reopen_and_are_verified_when_read() {
        let (_tmp, config, leaves) = setup(1000);
        let ls = LeafSize::new(16).unwrap();
        let pool = BufferPool::new(16, 4);
        let cache = DiskCache::open(&config, ls).unwrap();
        for (k, _, bytes) in &leaves {
            cache.put(k, bytes).unwrap();
        }
        assert_eq!(cache.used(), 40);
        drop(cache);
        let cache = DiskCache::open(&config, ls).unwrap();
        assert_eq!(cache.used(), 40);
        for (k, leaf, bytes) in &leaves {
            assert_eq!(cache.get(k, leaf, &pool).unwrap(), &bytes[..]);
        }
        // A file whose bytes changed is never returned, and is removed.
        let (k, leaf, _) = &leaves[1];
        std::fs::write(config.dir.join(k.to_hex()), [7u8; 16]).unwrap();
        assert!(cache.get(k, leaf, &pool).is_none());
        assert!(!config.dir.join(k.to_hex()).exists());
        assert!(!cache.contains(k));
        // A truncated one neither.
        let (k, leaf, _) = &leaves[0];
        std::fs::write(config.dir.join(k.to_hex()), [0u8; 3]).unwrap();
        assert!(cache.get(k, leaf, &pool).is_none());
        // One deleted behind its back is a miss.
        let (k, leaf, _) = &leaves[2];
        std::fs::remove_file(config.dir.join(k.to_hex())).unwrap();
        assert!(cache.get(k, leaf, &pool).is_none());
        assert_eq!(cache.used(), 0);
    }

    #[test]
    fn a_whole_file_is_kept_found_again_verified_and_serves_its_leaves() {
        let (_tmp, config, leaves) = setup(1000);
        let ls = LeafSize::new(16).unwrap();
        let pool = BufferPool::new(16, 4);
        let root = key(9);
        let data: Vec<u8> = leaves.iter().flat_map(|(_, _, b)| b.clone()).collect();
        let places: Vec<(Key, Leaf)> = leaves.iter().map(|(k, l, _)| (*k, *l)).collect();
        let cache = DiskCache::open(&config, ls).unwrap();
        let (mut f, temp) = cache.temp_file(&root).unwrap();
        f.write_all(&data).unwrap();
        assert!(!cache.contains_file(&root));
        cache.keep_file(&root, &f, &temp, 40).unwrap();
        assert!(!temp.exists() && cache.contains_file(&root));
        drop(cache);
        // Found again after a reopen, under its own name; a leaf of it is served.
        let cache = DiskCache::open(&config, ls).unwrap();
        assert!(cache.contains_file(&root) && cache.used() == 40);
        assert!(cache.verify_file(&root, &places, 40));
        let (k, leaf, bytes) = &leaves[1];
        assert_eq!(
            cache.get_in_file(&root, k, leaf, &pool).unwrap(),
            &bytes[..]
        );
        let mut f = cache.open_file(&root).unwrap();
        let mut read = Vec::new();
        f.read_to_end(&mut read).unwrap();
        assert_eq!(read, data);
        // Changed on disk: the check fails and the file is gone.
        let path = config.dir.join(format!("{}.file", root.to_hex()));
        let mut bad = data.clone();
        bad[20] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(!cache.verify_file(&root, &places, 40));
        assert!(!path.exists() && !cache.contains_file(&root));
        assert!(cache.open_file(&root).is_none());
        // A damaged leaf read from the file removes it too.
        let (mut f, temp) = cache.temp_file(&root).unwrap();
        f.write_all(&bad).unwrap();
        cache.keep_file(&root, &f, &temp, 40).unwrap();
        assert!(cache.get_in_file(&root, k, leaf, &pool).is_none());
        assert!(!path.exists() && cache.used() == 0);
        // A file larger than the bound evicts everything, itself too.
        let small = DiskCache::open(
            &DiskCacheConfig {
                bytes: 16,
                ..config
            },
            ls,
        )
        .unwrap();
        let (mut f, temp) = small.temp_file(&root).unwrap();
        f.write_all(&data).unwrap();
        small.keep_file(&root, &f, &temp, 40).unwrap();
        assert!(!small.contains_file(&root) && !path.exists());
    }

    #[test]
    fn the_bound_holds_and_old_temporary_files_go() {
        let (_tmp, config, leaves) = setup(32);
        let ls = LeafSize::new(16).unwrap();
        let pool = BufferPool::new(16, 4);
        let cache = DiskCache::open(&config, ls).unwrap();
        let (k0, l0, b0) = &leaves[0];
        let (k1, _, b1) = &leaves[1];
        let (k2, _, b2) = &leaves[2];
        cache.put(k0, b0).unwrap();
        cache.put(k1, b1).unwrap();
        assert!(cache.get(k0, l0, &pool).is_some()); // 0 used last: 1 goes first
        cache.put(k2, b2).unwrap();
        assert_eq!(cache.used(), 24);
        assert!(cache.contains(k0) && cache.contains(k2) && !cache.contains(k1));
        assert!(!config.dir.join(k1.to_hex()).exists());
        // A leftover temporary file of a dead process is removed on open; a fresh one
        // (maybe another mount's, being written) is left alone.
        let old = config.dir.join(".x.1.0.tmp");
        let fresh = config.dir.join(".y.1.0.tmp");
        std::fs::write(&old, b"torn").unwrap();
        std::fs::write(&fresh, b"torn").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_TEMP)
            .unwrap();
        drop(cache);
        // Reopened smaller: evicted down to the new bound, least recently used first.
        let small = DiskCacheConfig {
            bytes: 16,
            ..config.clone()
        };
        let cache = DiskCache::open(&small, ls).unwrap();
        assert!(!old.exists() && fresh.exists());
        assert_eq!(cache.used(), 8);
        assert!(cache.contains(k2) && !cache.contains(k0));
        // A leaf larger than the whole cache is not kept.
        let big = DiskCacheConfig { bytes: 4, ..config };
        let cache = DiskCache::open(&big, ls).unwrap();
        cache.put(k0, b0).unwrap();
        assert_eq!(cache.used(), 0);
    }
}
