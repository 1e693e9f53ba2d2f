//! The FUSE file system of a mounted bundle: metadata from the [`Tree`], file bytes read
//! leaf by leaf through the [`BlobReader`] (every leaf verified) and kept in a bounded
//! [`LeafCache`]; with a disk cache, whole files read through are kept and later opens
//! are passed through to them ([`WholeFiles`]). Everything that would change the tree
//! answers EROFS.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, Notifier, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::cache::LeafCache;
use super::disk::DiskCache;
use super::lock;
use super::pool::BufferPool;
use super::prefetch::Prefetcher;
use super::span::{spans, Span};
use super::tree::{FileNode, Node, NodeKind, Tree};
use super::whole::{Opened, WholeFiles};
use crate::cafs::leaf::Leaf;
use crate::cafs::reader::BlobReader;
use crate::cafs::{Key, LeafLayout};
use crate::error::{Error, Result};

/// How long the kernel may cache names and attributes: the content never changes.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// Block size reported by `stat` and `statfs`.
const BLOCK: u32 = 4096;

/// Who owns every inode, and the time of inodes without their own.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Time of directories and of files without a recorded modification time.
    pub time: SystemTime,
}

/// Most leaves read ahead of one reader, and in flight at once for all of them.
const MAX_PREFETCH_LEAVES: u64 = 16;

/// How a memory budget of `memory_bytes` for leaves of `leaf_bytes` is shared: the
/// read-ahead window cap (an eighth of the leaves, at most [`MAX_PREFETCH_LEAVES`]), and
/// the bytes left for the cache. Leaves being read ahead are held apart from the cache
/// until verified, so both count.
pub fn share_memory(memory_bytes: usize, leaf_bytes: u64) -> (u64, usize) {
    let leaves = u64::try_from(memory_bytes).unwrap_or(u64::MAX) / leaf_bytes.max(1);
    let cap = (leaves / 8).min(MAX_PREFETCH_LEAVES);
    let in_flight = usize::try_from(cap.saturating_mul(leaf_bytes)).unwrap_or(usize::MAX);
    (cap, memory_bytes.saturating_sub(in_flight))
}

/// A bundle served read-only.
pub struct BundleFs {
    tree: Tree,
    reader: BlobReader,
    runtime: tokio::runtime::Handle,
    owner: Owner,
    keys: Mutex<HashMap<u64, Arc<Vec<Key>>>>,
    leaves: Arc<Leaves>,
    /// Read-ahead fetches in flight, for all files.
    prefetch: Arc<tokio::sync::Semaphore>,
    /// Read-ahead window cap, in leaves.
    prefetch_cap: u64,
    /// Read-ahead state of each open file, by handle.
    handles: Mutex<HashMap<u64, Prefetcher>>,
    next_handle: AtomicU64,
    /// Whole files, with a disk cache.
    whole: Option<Arc<WholeFiles<BackingId>>>,
    /// Whether the kernel passes opens through to backing files (set at init).
    passthrough: bool,
    /// How to tell the kernel to drop cached pages, once the session runs.
    notifier: Arc<OnceLock<Notifier>>,
    /// The inode of each open handle counted in the whole files' open modes.
    moded: Mutex<HashMap<u64, u64>>,
}

/// Where else than the leaf cache a leaf may be on disk, and whether to keep it there.
#[derive(Clone, Copy, Debug, Default)]
struct OnDisk {
    /// The root key of the file read: its whole file may be on disk.
    root: Option<Key>,
    /// Keep the leaf in the disk cache: not while its whole file is being assembled
    /// (the whole file will hold it).
    keep: bool,
}

/// Verified leaves: the cache, and the fetches in flight.
struct Leaves {
    reader: BlobReader,
    cache: Mutex<LeafCache>,
    pool: Arc<BufferPool>,
    disk: Option<Arc<DiskCache>>,
    fetching: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl BundleFs {
    /// Serves `tree`, reading blobs with `reader` on `runtime`, with `memory_bytes` for
    /// leaves (cached and read ahead, see [`share_memory`]) and, if given, a cache of
    /// leaves on disk.
    pub fn new(
        tree: Tree,
        reader: BlobReader,
        runtime: tokio::runtime::Handle,
        owner: Owner,
        memory_bytes: usize,
        disk: Option<Arc<DiskCache>>,
    ) -> Self {
        let leaf_bytes = reader.leaf_size().bytes();
        let (cap, cache_bytes) = share_memory(memory_bytes, leaf_bytes);
        let notifier: Arc<OnceLock<Notifier>> = Arc::new(OnceLock::new());
        let pool = BufferPool::new(
            usize::try_from(leaf_bytes).unwrap_or(usize::MAX),
            usize::try_from(cap).unwrap_or(0) + 4,
        );
        Self {
            whole: disk.clone().map(|d| {
                let notifier = notifier.clone();
                Arc::new(WholeFiles::new(d, move |ino| {
                    let dropped = notifier.get().map(|n| n.inval_inode(INodeNo(ino), 0, 0));
                    if let Some(Err(e)) = dropped {
                        tracing::debug!(ino, "cannot drop the page cache of a kept file: {e}");
                    }
                }))
            }),
            notifier,
            passthrough: false,
            moded: Mutex::new(HashMap::new()),
            leaves: Arc::new(Leaves {
                reader: reader.clone(),
                cache: Mutex::new(LeafCache::new(cache_bytes)),
                pool,
                disk,
                fetching: Mutex::new(HashMap::new()),
            }),
            tree,
            reader,
            runtime,
            owner,
            keys: Mutex::new(HashMap::new()),
            prefetch: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(cap.max(1)).unwrap_or(1),
            )),
            prefetch_cap: cap,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    /// Where to put the session's notifier once the file system is mounted.
    pub fn notifier(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, perm, size, nlink, time) = match &node.kind {
            NodeKind::Dir(_) => (FileType::Directory, 0o555, 0, 2, self.owner.time),
            NodeKind::File(f) => (
                FileType::RegularFile,
                0o444,
                f.size,
                1,
                f.mtime.map_or(self.owner.time, SystemTime::from),
            ),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink,
            uid: self.owner.uid,
            gid: self.owner.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        }
    }

    fn file(&self, ino: u64) -> std::result::Result<&FileNode, Errno> {
        match self.tree.get(ino).map(|n| &n.kind) {
            Some(NodeKind::File(f)) => Ok(f),
            Some(NodeKind::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// The leaf keys of file `ino`, fetched from its root object once.
    async fn leaf_keys(&self, ino: u64, file: &FileNode) -> Result<Arc<Vec<Key>>> {
        if let Some(k) = lock(&self.keys).get(&ino) {
            return Ok(k.clone());
        }
        let root: Key = file.hash.parse().map_err(|source| Error::Key {
            file: file.name.clone(),
            source,
        })?;
        let keys = Arc::new(self.reader.leaf_keys(&root, file.size, &file.name).await?);
        lock(&self.keys).insert(ino, keys.clone());
        Ok(keys)
    }

    /// Bytes `offset .. offset + size` of file `ino` open as `fh` (fewer at the end of the
    /// file), reading ahead as that handle's [`Prefetcher`] says.
    async fn read_range(
        &self,
        ino: u64,
        fh: u64,
        file: &FileNode,
        offset: u64,
        size: u32,
    ) -> Result<Bytes> {
        let layout = LeafLayout::new(file.size, self.reader.leaf_size());
        let spans = spans(&layout, offset, size);
        let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
            return Ok(Bytes::new());
        };
        let keys = self.leaf_keys(ino, file).await?;
        let key_of = |index: u64| {
            usize::try_from(index)
                .ok()
                .and_then(|i| keys.get(i))
                .ok_or_else(|| {
                    Error::Task(format!(
                        "leaf {index} of {:?} has no key in its root object",
                        file.name
                    ))
                })
        };
        let on_disk = self.on_disk(ino, file, layout.count());
        let ahead = {
            let mut handles = lock(&self.handles);
            let p = handles
                .entry(fh)
                .or_insert_with(|| Prefetcher::new(self.prefetch_cap));
            p.on_read(first.leaf.index, last.leaf.index, layout.count())
        };
        for next in ahead.filter_map(|i| layout.leaf(i)) {
            self.prefetch(*key_of(next.index)?, next, &file.name, on_disk);
        }
        if let [Span { leaf, from, to }] = spans[..] {
            // Most reads fall within one leaf: answer with a slice of it, no copy.
            let bytes = self
                .leaves
                .leaf(key_of(leaf.index)?, &leaf, &file.name, on_disk)
                .await?;
            self.offer_whole(ino, file.size, on_disk, layout.count(), leaf, &bytes);
            return if to <= bytes.len() {
                Ok(bytes.slice(from..to))
            } else {
                Err(Error::Task(format!(
                    "leaf {} of {:?} is shorter than its layout",
                    leaf.index, file.name
                )))
            };
        }
        let mut out = Vec::with_capacity(spans.iter().map(|s| s.to - s.from).sum());
        for Span { leaf, from, to } in spans {
            let key = key_of(leaf.index)?;
            let bytes = self.leaves.leaf(key, &leaf, &file.name, on_disk).await?;
            self.offer_whole(ino, file.size, on_disk, layout.count(), leaf, &bytes);
            let slice = bytes.get(from..to).ok_or_else(|| {
                Error::Task(format!(
                    "leaf {} of {:?} is shorter than its layout",
                    leaf.index, file.name
                ))
            })?;
            out.extend_from_slice(slice);
        }
        Ok(out.into())
    }
}

impl BundleFs {
    /// The whole files, when the kernel passes opens through.
    fn whole(&self) -> Option<&Arc<WholeFiles<BackingId>>> {
        self.whole.as_ref().filter(|_| self.passthrough)
    }

    /// Where leaves of file `ino` (of `leaves` leaves) may be on disk, and whether to keep
    /// them there.
    fn on_disk(&self, ino: u64, file: &FileNode, leaves: u64) -> OnDisk {
        let Some(whole) = self.whole().filter(|_| leaves > 1) else {
            return OnDisk {
                root: None,
                keep: true,
            };
        };
        OnDisk {
            root: file.hash.parse().ok(),
            keep: !whole.assembling(ino),
        }
    }

    /// Offers a verified leaf read from file `ino` (`size` bytes in `leaves` leaves) to
    /// the assembly of its whole file, if `on_disk` names one.
    fn offer_whole(
        &self,
        ino: u64,
        size: u64,
        on_disk: OnDisk,
        leaves: u64,
        leaf: Leaf,
        bytes: &Bytes,
    ) {
        if let (Some(whole), Some(root)) = (self.whole(), on_disk.root) {
            whole.offer(&self.runtime, ino, &root, size, leaves, leaf, bytes);
        }
    }

    /// Opens file `ino` as handle `fh`: passed through to its whole file on disk when
    /// there is one (verified in this mount), else through the page cache.
    fn open_file(&self, ino: u64, file: &FileNode, fh: u64, reply: ReplyOpen) {
        // The bytes never change: the kernel may keep its page cache across opens.
        let flags = FopenFlags::FOPEN_KEEP_CACHE;
        let whole = self
            .whole()
            .filter(|_| file.size > self.reader.leaf_size().bytes());
        let (Some(whole), Ok(root)) = (whole, file.hash.parse::<Key>()) else {
            return reply.opened(FileHandle(fh), flags);
        };
        lock(&self.moded).insert(fh, ino);
        match whole.open(ino, &root, |f| reply.open_backing(f)) {
            // The kernel takes no other flag with a passthrough open (FOPEN_PASSTHROUGH_MASK).
            Opened::Direct(backing) => {
                tracing::debug!(file = %file.name, "open passed through to the cached file");
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing);
            }
            Opened::Cached => reply.opened(FileHandle(fh), flags),
            Opened::Verify => {
                reply.opened(FileHandle(fh), flags);
                self.verify_whole(ino, root, file);
            }
        }
    }

    /// Checks the whole file `root` on disk against the leaf keys of `file`, in the
    /// background; until it passes, opens go through the page cache.
    fn verify_whole(&self, ino: u64, root: Key, file: &FileNode) {
        let Some(whole) = self.whole().cloned() else {
            return;
        };
        let (reader, name, size) = (self.reader.clone(), file.name.clone(), file.size);
        self.runtime.spawn(async move {
            let layout = LeafLayout::new(size, reader.leaf_size());
            let ok = match reader.leaf_keys(&root, size, &name).await {
                Ok(keys) => {
                    let leaves: Vec<_> = keys.into_iter().zip(layout.leaves()).collect();
                    let w = whole.clone();
                    tokio::task::spawn_blocking(move || w.disk().verify_file(&root, &leaves, size))
                        .await
                        .unwrap_or(false)
                }
                Err(e) => {
                    tracing::warn!(file = %name, "cannot verify a cached file: {e}");
                    false
                }
            };
            // Blocking: it may drop the inode's page cache.
            let _ = tokio::task::spawn_blocking(move || whole.verified(ino, &root, ok)).await;
        });
    }

    /// Fetches a leaf into the cache in the background, unless it is there already; at
    /// most as many leaves as the window cap are read ahead at once (the others wait
    /// their turn). A failure is left for the read that needs the leaf to report.
    fn prefetch(&self, key: Key, leaf: Leaf, name: &str, on_disk: OnDisk) {
        if lock(&self.leaves.cache).contains(&key) {
            return;
        }
        let (leaves, name, turns) = (self.leaves.clone(), name.to_string(), self.prefetch.clone());
        self.runtime.spawn(async move {
            let Ok(_permit) = turns.acquire_owned().await else {
                return;
            };
            if let Err(e) = leaves.leaf(&key, &leaf, &name, on_disk).await {
                tracing::debug!(file = %name, "read-ahead failed: {e}");
            }
        });
    }
}

impl Leaves {
    /// One verified leaf, from the cache or fetched. Concurrent reads of the same leaf
    /// (the kernel reads ahead in parallel 128 KiB requests) wait for one fetch.
    async fn leaf(&self, key: &Key, leaf: &Leaf, name: &str, on_disk: OnDisk) -> Result<Bytes> {
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
}

impl Leaves {
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
                            crate::cli::chain(&e)
                        );
                    }
                }
                Ok(pool.copy(&b))
            })
            .await
    }
}

impl Filesystem for BundleFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = name
            .to_str()
            .and_then(|n| self.tree.child(parent.0, n))
            .and_then(|ino| Some((ino, self.tree.get(ino)?)));
        match found {
            Some((ino, node)) => reply.entry(&TTL, &self.attr(ino, node), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.get(ino.0) {
            Some(node) => reply.attr(&TTL, &self.attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if self.whole.is_none() {
            return Ok(());
        }
        // Backing files may sit on a stacked file system (a container's overlay).
        let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok();
        self.passthrough = granted;
        if granted {
            tracing::info!("whole files kept on disk are passed through to the kernel");
        } else {
            tracing::info!(
                "the kernel cannot pass files through: every read goes through the mount"
            );
        }
        Ok(())
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let file = match self.file(ino.0) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        // Each open file reads ahead on its own.
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.open_file(ino.0, file, fh, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        let moded = lock(&self.moded).remove(&fh.0);
        if let (Some(ino), Some(whole)) = (moded, &self.whole) {
            whole.release(ino);
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = match self.file(ino.0) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        match self
            .runtime
            .block_on(self.read_range(ino.0, fh.0, file, offset, size))
        {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => {
                tracing::error!(
                    file = %file.name,
                    offset,
                    size,
                    "read failed, answering EIO: {}",
                    crate::cli::chain(&e)
                );
                reply.error(Errno::EIO);
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to flush.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.get(ino.0).map(|n| &n.kind) {
            // Listings never change either: the kernel may cache them across opens.
            Some(NodeKind::Dir(_)) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Some(NodeKind::File(_)) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(node) = self.tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let NodeKind::Dir(children) = &node.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (ino.0, FileType::Directory, "."),
            (node.parent, FileType::Directory, ".."),
        ];
        let kids = children.iter().map(|(name, &child)| {
            let kind = match self.tree.get(child).map(|n| &n.kind) {
                Some(NodeKind::File(_)) => FileType::RegularFile,
                _ => FileType::Directory,
            };
            (child, kind, name.as_str())
        });
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (child, kind, name)) in dots.into_iter().chain(kids).enumerate().skip(skip) {
            // The offset of an entry is where the next readdir resumes.
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.tree.bytes().div_ceil(u64::from(BLOCK));
        reply.statfs(blocks, 0, 0, self.tree.len(), 0, BLOCK, 255, BLOCK);
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memory_budget_is_shared_between_cache_and_read_ahead() {
        let leaf = 2 * MIB as u64;
        assert_eq!(share_memory(64 * MIB, leaf), (4, 56 * MIB));
        assert_eq!(share_memory(16 * MIB, leaf), (1, 14 * MIB));
        // Too little memory to read ahead: everything goes to the cache.
        assert_eq!(share_memory(4 * MIB, leaf), (0, 4 * MIB));
        assert_eq!(
            share_memory(4095 * MIB, leaf),
            (MAX_PREFETCH_LEAVES, 4095 * MIB - 32 * MIB)
        );
    }
}
