//! Whole files for kernel passthrough. With an on-disk cache, a file of several leaves
//! read from its start to its end is assembled, leaf by verified leaf, into one file of
//! the cache; later opens hand that file to the kernel (FUSE passthrough), which then
//! reads it like any local file: no request reaches the daemon, and the page cache is the
//! local file system's (large folios), so warm reads go at the speed of the local disk's
//! page cache.
//!
//! - [`Assembly`]: one file being assembled; it takes leaves in about sequential order
//!   (a read far ahead of the leaves taken means random access: the assembly is dropped,
//!   so random reads never fetch or write more than they read). Dropped unfinished, it
//!   removes its temporary file.
//! - [`Modes`]: how each inode is open. The kernel refuses a passthrough open while the
//!   inode is open through the page cache and the reverse, so an inode switches mode only
//!   when nothing has it open (pure bookkeeping).
//! - Once a file is kept whole (or checked after a remount), the mount's own page cache of
//!   it is dropped (the kernel would otherwise drop it during the first passthrough open,
//!   and it duplicates the kept file's), but only while nothing has the inode open: the
//!   kernel's drop waits for pages being read, and reads wait for this daemon, so a drop
//!   during a read could wait forever. With the inode open, it waits for the last release.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::disk::DiskCache;
use crate::cafs::leaf::Leaf;
use crate::cafs::Key;
use crate::sync::lock;

/// Most files assembled at once (each holds a temporary file of its size).
const MAX_ASSEMBLIES: usize = 4;

/// How long an open of a file kept whole waits for the release of handles still open
/// through the page cache: the kernel sends a release in the background after the close,
/// so the next open (a program reading a file again) can come first.
const RELEASE_WAIT: Duration = Duration::from_millis(25);

/// How many leaves past the furthest one taken an assembly still accepts: the kernel's
/// parallel read-ahead answers slightly out of order.
const SLACK: u64 = 2;

/// One whole file being assembled in a temporary file of the cache.
#[derive(Debug)]
pub struct Assembly {
    /// The file's root key.
    pub root: Key,
    /// The file's size in bytes.
    pub size: u64,
    file: std::fs::File,
    /// The temporary file; `None` once it was renamed into place.
    temp: Option<PathBuf>,
    claimed: Vec<bool>,
    unclaimed: usize,
    written: usize,
    /// One past the furthest leaf claimed.
    next: u64,
}

/// What an assembly says of a leaf offered to it.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Write the leaf (then call [`Assembly::written`]).
    Take,
    /// Already taken: nothing to do.
    Have,
    /// Too far from the leaves taken: random access, give the assembly up.
    GiveUp,
}

impl Assembly {
    /// An assembly of the file `root` (`size` bytes in `leaves` leaves) into `file`,
    /// a new temporary file at `temp`.
    pub fn new(root: Key, size: u64, leaves: u64, file: std::fs::File, temp: PathBuf) -> Self {
        let count = usize::try_from(leaves).unwrap_or(usize::MAX);
        Self {
            root,
            size,
            file,
            temp: Some(temp),
            claimed: vec![false; count],
            unclaimed: count,
            written: 0,
            next: 0,
        }
    }

    /// Whether the leaf `index` is to be written now (it is then claimed).
    pub fn offer(&mut self, index: u64) -> Offer {
        let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.claimed.get_mut(i))
        else {
            return Offer::GiveUp;
        };
        if *slot {
            return Offer::Have;
        }
        if index > self.next + SLACK {
            return Offer::GiveUp;
        }
        *slot = true;
        self.unclaimed -= 1;
        self.next = self.next.max(index + 1);
        Offer::Take
    }

    /// Writes the claimed, verified `leaf`; returns whether every leaf is now written.
    pub fn write(&mut self, leaf: &Leaf, bytes: &[u8]) -> std::io::Result<bool> {
        crate::fsio::write_all_at(&self.file, bytes, leaf.offset)?;
        self.written += 1;
        Ok(self.unclaimed == 0 && self.written == self.claimed.len())
    }

    /// Hands the complete temporary file over, its handle and its path: the assembly
    /// then no longer removes it.
    pub fn hand_over(&mut self) -> std::io::Result<Option<(std::fs::File, PathBuf)>> {
        let file = self.file.try_clone()?;
        Ok(self.temp.take().map(|temp| (file, temp)))
    }
}

impl Drop for Assembly {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            if let Err(e) = std::fs::remove_file(&temp) {
                tracing::debug!(path = %temp.display(), "cannot remove an unfinished file: {e}");
            }
        }
    }
}

/// How an inode is open: through the page cache by `n` handles, or passed through to a
/// backing file `B` by `n` handles.
#[derive(Debug)]
enum Mode<B> {
    Cached(u32),
    Direct(B, u32),
}

/// How each inode is open (pure bookkeeping; `B` is the kernel's backing file id).
#[derive(Debug)]
pub struct Modes<B> {
    inodes: HashMap<u64, Mode<B>>,
}

impl<B> Default for Modes<B> {
    fn default() -> Self {
        Self {
            inodes: HashMap::new(),
        }
    }
}

impl<B: Clone> Modes<B> {
    /// Opens `ino`: passed through to the backing file the other open handles use, or to
    /// the one `backing` gives if nothing has the inode open; else through the page
    /// cache (`None`).
    pub fn open(&mut self, ino: u64, backing: impl FnOnce() -> Option<B>) -> Option<B> {
        match self.inodes.get_mut(&ino) {
            Some(Mode::Direct(b, n)) => {
                *n += 1;
                return Some(b.clone());
            }
            Some(Mode::Cached(n)) => {
                *n += 1;
                return None;
            }
            None => {}
        }
        let chosen = backing();
        let mode = match &chosen {
            Some(b) => Mode::Direct(b.clone(), 1),
            None => Mode::Cached(1),
        };
        self.inodes.insert(ino, mode);
        chosen
    }

    /// Closes one handle of `ino`; the last one out frees the inode to change mode (and
    /// drops the backing file id). Returns whether it was the last.
    pub fn release(&mut self, ino: u64) -> bool {
        let last = match self.inodes.get_mut(&ino) {
            Some(Mode::Cached(n) | Mode::Direct(_, n)) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if last {
            self.inodes.remove(&ino);
        }
        last
    }

    /// Whether `ino` is open passed through (for tests).
    #[cfg(test)]
    pub fn is_direct(&self, ino: u64) -> bool {
        matches!(self.inodes.get(&ino), Some(Mode::Direct(..)))
    }

    /// Whether `ino` is open through the page cache.
    pub fn is_cached(&self, ino: u64) -> bool {
        matches!(self.inodes.get(&ino), Some(Mode::Cached(_)))
    }

    /// Whether anything has `ino` open.
    pub fn is_open(&self, ino: u64) -> bool {
        self.inodes.contains_key(&ino)
    }

    /// Whether exactly one handle has `ino` open.
    pub fn is_last(&self, ino: u64) -> bool {
        matches!(
            self.inodes.get(&ino),
            Some(Mode::Cached(1) | Mode::Direct(_, 1))
        )
    }
}

/// Whole files of one mount: the assemblies under way, the files verified in this
/// mount, and how each inode is open.
pub struct WholeFiles<B> {
    disk: Arc<DiskCache>,
    modes: Mutex<Modes<Arc<B>>>,
    assemblies: Mutex<HashMap<u64, Arc<Mutex<Assembly>>>>,
    verified: Mutex<HashSet<Key>>,
    verifying: Mutex<HashSet<Key>>,
    /// Drops the mount's page cache of an inode; blocks, and may wait forever if a read
    /// of the inode is pending (see [`Self::drop_pages_when_closed`]).
    drop_pages: Box<dyn Fn(u64) + Send + Sync>,
    /// Inodes whose page cache is to be dropped at their last release.
    stale: Mutex<HashSet<u64>>,
}

/// What [`WholeFiles::open`] found.
pub enum Opened<B> {
    /// Pass the handle through to this backing file.
    Direct(Arc<B>),
    /// Open through the page cache.
    Cached,
    /// Open through the page cache; the whole file is on disk but not yet verified in
    /// this mount: verify it (then [`WholeFiles::verified`]).
    Verify,
}

impl<B> WholeFiles<B> {
    /// Whole files kept in `disk`; `drop_pages` drops the mount's page cache of an inode.
    pub fn new(disk: Arc<DiskCache>, drop_pages: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Self {
            disk,
            modes: Mutex::new(Modes::default()),
            assemblies: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashSet::new()),
            verifying: Mutex::new(HashSet::new()),
            drop_pages: Box::new(drop_pages),
            stale: Mutex::new(HashSet::new()),
        }
    }

    /// Drops the mount's page cache of `ino` if nothing has it open (then no read can
    /// hold its pages), else at its last release. Blocks for the drop: not to be called on
    /// an async task. Opens wait meanwhile (they take the same lock), so none can begin a
    /// read of the inode during the drop.
    fn drop_pages_when_closed(&self, ino: u64) {
        let modes = lock(&self.modes);
        if modes.is_open(ino) {
            lock(&self.stale).insert(ino);
        } else {
            (self.drop_pages)(ino);
        }
    }

    /// The disk cache holding the files.
    pub fn disk(&self) -> &Arc<DiskCache> {
        &self.disk
    }

    /// Opens inode `ino`, the file `root`: passed through to the whole file if it is on
    /// disk, verified, and nothing has the inode open through the page cache (`backing`
    /// registers the file with the kernel).
    pub fn open(
        &self,
        ino: u64,
        root: &Key,
        backing: impl FnOnce(&std::fs::File) -> std::io::Result<B>,
    ) -> Opened<B> {
        let mut verify = false;
        let ready = || lock(&self.verified).contains(root) && self.disk.contains_file(root);
        let start = Instant::now();
        while ready() && lock(&self.modes).is_cached(ino) && start.elapsed() < RELEASE_WAIT {
            std::thread::sleep(Duration::from_millis(1));
        }
        let direct = lock(&self.modes).open(ino, || {
            if !lock(&self.verified).contains(root) {
                verify = self.disk.contains_file(root) && lock(&self.verifying).insert(*root);
                return None;
            }
            let file = self.disk.open_file(root)?;
            match backing(&file) {
                Ok(b) => Some(Arc::new(b)),
                Err(e) => {
                    tracing::warn!("the kernel does not take a cached file to pass through: {e}");
                    lock(&self.verified).remove(root);
                    None
                }
            }
        });
        match (direct, verify) {
            (Some(b), _) => Opened::Direct(b),
            (None, true) => Opened::Verify,
            (None, false) => Opened::Cached,
        }
    }

    /// Whether the whole file of `ino` is being assembled.
    pub fn assembling(&self, ino: u64) -> bool {
        lock(&self.assemblies).contains_key(&ino)
    }

    /// Closes one handle of `ino`. Once nothing has it open, an unfinished assembly is
    /// given up: the leaves it lacks will not be read (leaves being written finish).
    pub fn release(&self, ino: u64) {
        let mut modes = lock(&self.modes);
        // The kernel sends a release once the last read of the handle is answered, so no
        // read holds a page of the inode if this is its last handle.
        if modes.is_last(ino) && lock(&self.stale).remove(&ino) {
            (self.drop_pages)(ino);
        }
        if modes.release(ino) {
            lock(&self.assemblies).remove(&ino);
        }
    }

    /// Records the outcome of a verification of inode `ino`'s whole file asked for by
    /// [`Self::open`]. Blocks (see [`Self::drop_pages_when_closed`]).
    pub fn verified(&self, ino: u64, root: &Key, ok: bool) {
        lock(&self.verifying).remove(root);
        if ok {
            tracing::debug!(root = %root.to_hex(), "cached file verified: later opens pass it through");
            lock(&self.verified).insert(*root);
            self.drop_pages_when_closed(ino);
        }
    }

    /// Offers the verified `leaf` (`bytes`) of inode `ino`, the file `root` of `size`
    /// bytes in `leaves` leaves: a read of leaf 0 starts an assembly (if the file is not
    /// on disk already and fits the cache); the leaves that follow are written to it on a
    /// blocking thread of `runtime`, and the last one puts the whole file in place.
    // The leaf's whole context, each part a plain value the caller already has: a struct
    // built for one call would only move the list.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        ino: u64,
        root: &Key,
        size: u64,
        leaves: u64,
        leaf: Leaf,
        bytes: &Bytes,
    ) where
        B: Send + Sync + 'static,
    {
        let assembly = {
            let mut assemblies = lock(&self.assemblies);
            match assemblies.get(&ino) {
                Some(a) => a.clone(),
                None => {
                    if leaf.index != 0
                        || leaves < 2
                        || size > self.disk.limit()
                        || assemblies.len() >= MAX_ASSEMBLIES
                        || self.disk.contains_file(root)
                    {
                        return;
                    }
                    let (file, temp) = match self.disk.temp_file(root) {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::warn!("cannot assemble a whole file: {e}");
                            return;
                        }
                    };
                    let a = Arc::new(Mutex::new(Assembly::new(*root, size, leaves, file, temp)));
                    assemblies.insert(ino, a.clone());
                    a
                }
            }
        };
        match lock(&assembly).offer(leaf.index) {
            Offer::Have => return,
            Offer::Take => {}
            Offer::GiveUp => {
                self.drop_assembly(ino, &assembly);
                return;
            }
        }
        let (this, bytes) = (self.clone(), bytes.clone());
        runtime.spawn_blocking(move || this.write(ino, &assembly, &leaf, &bytes));
    }

    /// Writes one claimed leaf; the last one puts the file in place.
    fn write(&self, ino: u64, assembly: &Arc<Mutex<Assembly>>, leaf: &Leaf, bytes: &[u8]) {
        let mut a = lock(assembly);
        let complete = match a.write(leaf, bytes) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot write a leaf of a whole file: {e}");
                drop(a);
                return self.drop_assembly(ino, assembly);
            }
        };
        if !complete {
            return;
        }
        let (root, size) = (a.root, a.size);
        let handed = a.hand_over();
        // Let go before the slow part: reads offer their leaves under that lock.
        drop(a);
        self.drop_assembly(ino, assembly);
        let kept = match handed {
            Ok(Some((file, temp))) => self.keep(ino, &root, size, &file, &temp),
            Ok(None) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        match kept {
            Ok(()) => {
                lock(&self.verified).insert(root);
                tracing::debug!(root = %root.to_hex(), size, "whole file kept on disk");
            }
            Err(e) => tracing::warn!("cannot keep a whole file: {e}"),
        }
    }

    /// Puts the complete file `temp` in place as the whole file `root` of inode `ino`:
    /// flushed to the disk first (the kernel reads a passed-through file without any
    /// check, so it must survive a crash whole), and the mount's page cache of the inode
    /// dropped before the file is in place, so that no passthrough open races with it.
    fn keep(
        &self,
        ino: u64,
        root: &Key,
        size: u64,
        file: &std::fs::File,
        temp: &std::path::Path,
    ) -> std::result::Result<(), String> {
        if let Err(e) = file.sync_data() {
            if let Err(e) = std::fs::remove_file(temp) {
                tracing::debug!(path = %temp.display(), "cannot remove an unfinished file: {e}");
            }
            return Err(format!("cannot flush {}: {e}", temp.display()));
        }
        self.drop_pages_when_closed(ino);
        self.disk
            .keep_file(root, file, temp, size)
            .map_err(|e| e.to_string())
    }

    /// Forgets the assembly of `ino` if it is still `assembly` (its temporary file goes
    /// with the last reference).
    fn drop_assembly(&self, ino: u64, assembly: &Arc<Mutex<Assembly>>) {
        let mut assemblies = lock(&self.assemblies);
        if assemblies
            .get(&ino)
            .is_some_and(|a| Arc::ptr_eq(a, assembly))
        {
            assemblies.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cafs::{LeafLayout, LeafSize};

    fn key() -> Key {
        "ab".repeat(64).parse().unwrap()
    }

    #[test]
    fn an_inode_changes_mode_only_when_nothing_has_it_open() {
        let mut m: Modes<u32> = Modes::default();
        // Nothing open: the backing file is used.
        assert_eq!(m.open(1, || Some(7)), Some(7));
        // Open again: the same backing file, whatever is offered now.
        assert_eq!(m.open(1, || None), Some(7));
        assert!(m.is_direct(1));
        assert!(!m.release(1));
        assert!(m.release(1));
        assert!(!m.is_direct(1));
        // Open through the page cache: a backing file offered later waits for the close.
        assert_eq!(m.open(1, || None), None);
        assert_eq!(m.open(1, || Some(8)), None);
        m.release(1);
        assert_eq!(m.open(1, || Some(8)), None);
        m.release(1);
        m.release(1);
        assert_eq!(m.open(1, || Some(9)), Some(9));
        // Other inodes are apart; releasing an unknown one is harmless.
        assert_eq!(m.open(2, || None), None);
        assert!(!m.release(3));
        assert!(m.is_direct(1) && !m.is_direct(2));
    }

    #[test]
    fn leaves_taken_in_about_sequential_order_complete_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("t.tmp");
        let file = std::fs::File::create_new(&temp).unwrap();
        let layout = LeafLayout::new(40, LeafSize::new(16).unwrap());
        let data: Vec<u8> = (0..40u8).collect();
        let mut a = Assembly::new(key(), 40, layout.count(), file, temp.clone());
        let leaves: Vec<Leaf> = layout.leaves().collect();
        let bytes = |l: &Leaf| &data[l.offset as usize..(l.offset + l.len) as usize];
        // Slightly out of order is fine; a leaf offered twice is written once.
        assert_eq!(a.offer(1), Offer::Take);
        assert_eq!(a.offer(0), Offer::Take);
        assert_eq!(a.offer(1), Offer::Have);
        assert!(!a.write(&leaves[1], bytes(&leaves[1])).unwrap());
        assert!(!a.write(&leaves[0], bytes(&leaves[0])).unwrap());
        assert_eq!(a.offer(2), Offer::Take);
        assert!(a.write(&leaves[2], bytes(&leaves[2])).unwrap());
        assert_eq!(std::fs::read(&temp).unwrap(), data);
        // Taken over: dropping the assembly leaves the file.
        assert_eq!(a.hand_over().unwrap().unwrap().1, temp);
        assert!(a.hand_over().unwrap().is_none());
        drop(a);
        assert!(temp.exists());
    }

    #[test]
    fn a_jump_ahead_gives_up_and_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("t.tmp");
        let file = std::fs::File::create_new(&temp).unwrap();
        let mut a = Assembly::new(key(), 160, 10, file, temp.clone());
        assert_eq!(a.offer(0), Offer::Take);
        assert_eq!(a.offer(3), Offer::Take);
        assert_eq!(a.offer(7), Offer::GiveUp);
        assert_eq!(a.offer(10), Offer::GiveUp);
        drop(a);
        assert!(!temp.exists());
    }
}
