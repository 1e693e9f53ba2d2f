//! The file system of a mounted bundle, apart from FUSE (which [`super::fuse`] adapts to
//! it): metadata from the [`Tree`], file bytes read leaf by leaf through [`Leaves`] (every
//! leaf verified, kept in a bounded cache, read ahead as each handle's [`Prefetcher`]
//! says); with a disk cache, whole files read through are kept and later opens are handed
//! a backing file ([`WholeFiles`]). Everything that would change the tree is refused.
//!
//! Only [`BundleFs::read`] waits for the store; every other operation answers from memory.
//! Errors are [`FsError`]s, each with its errno. The type `B` is the kernel's id of a
//! backing file (fuser's `BackingId` in the mount, anything in tests).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use super::disk::DiskCache;
use super::error::FsError;
use super::leaves::{Leaves, OnDisk};
use super::prefetch::Prefetcher;
use super::span::{spans, Span};
use super::tree::{FileNode, Node, NodeKind, Tree};
use super::whole::{Opened, WholeFiles};
use crate::buffers::BufferPool;
use crate::cafs::leaf::Leaf;
use crate::cafs::reader::BlobReader;
use crate::cafs::{Key, LeafLayout};
use crate::error::{Error, Result};
use crate::sync::lock;

/// Block size reported by `stat` and `statfs`.
pub(crate) const BLOCK: u32 = 4096;

/// Longest name `statfs` reports.
const NAME_MAX: u32 = 255;

/// Who owns every inode, and the time of inodes without their own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner {
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
pub(crate) fn share_memory(memory_bytes: usize, leaf_bytes: u64) -> (u64, usize) {
    let leaves = u64::try_from(memory_bytes).unwrap_or(u64::MAX) / leaf_bytes.max(1);
    let cap = (leaves / 8).min(MAX_PREFETCH_LEAVES);
    let in_flight = usize::try_from(cap.saturating_mul(leaf_bytes)).unwrap_or(usize::MAX);
    (cap, memory_bytes.saturating_sub(in_flight))
}

/// What an inode is, as `stat` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
}

/// The attributes of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attr {
    /// The inode.
    pub ino: u64,
    /// Directory or file.
    pub kind: Kind,
    /// Bytes (0 for a directory).
    pub size: u64,
    /// Permission bits: read (and search) for everyone, write for nobody.
    pub perm: u16,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access, modification, change and creation time.
    pub time: SystemTime,
}

/// One entry of a directory listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DirEntry<'a> {
    /// Its inode.
    pub ino: u64,
    /// Where the listing resumes after it.
    pub next: u64,
    /// Directory or file.
    pub kind: Kind,
    /// Its name (`.` and `..` first).
    pub name: &'a str,
}

/// An open file.
#[derive(Debug)]
pub(crate) struct Open<B> {
    /// The handle, for reads and the release.
    pub fh: u64,
    /// The backing file to pass the handle through to, if the whole file is on disk and
    /// verified; else reads come to [`BundleFs::read`].
    pub backing: Option<Arc<B>>,
}

/// What `statfs` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StatFs {
    /// Blocks of [`BLOCK`] bytes that the files take.
    pub blocks: u64,
    /// Inodes.
    pub files: u64,
    /// Block size.
    pub block_size: u32,
    /// Longest name.
    pub name_max: u32,
}

/// What a [`BundleFs`] serves, and with what.
pub(crate) struct Setup {
    /// The inodes.
    pub tree: Tree,
    /// Reads the bundle's blobs.
    pub reader: BlobReader,
    /// Where reads, and the work they start, run.
    pub runtime: tokio::runtime::Handle,
    /// Who owns every inode.
    pub owner: Owner,
    /// Bytes of leaves in memory, cached and read ahead (see [`share_memory`]).
    pub memory_bytes: usize,
    /// A cache of leaves and whole files on disk.
    pub disk: Option<Arc<DiskCache>>,
}

/// A bundle served read-only.
pub(crate) struct BundleFs<B> {
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
    whole: Option<Arc<WholeFiles<B>>>,
    /// Whether the kernel passes opens through to backing files (set at init).
    passthrough: bool,
    /// The inode of each open handle counted in the whole files' open modes.
    moded: Mutex<HashMap<u64, u64>>,
}

impl<B: Send + Sync + 'static> BundleFs<B> {
    /// Serves what `setup` says; `drop_pages` drops the kernel's page cache of an inode
    /// (see [`WholeFiles::new`]).
    pub fn new(setup: Setup, drop_pages: impl Fn(u64) + Send + Sync + 'static) -> Self {
        let Setup {
            tree,
            reader,
            runtime,
            owner,
            memory_bytes,
            disk,
        } = setup;
        let leaf_bytes = reader.leaf_size().bytes();
        let (cap, cache_bytes) = share_memory(memory_bytes, leaf_bytes);
        let pool = BufferPool::new(
            usize::try_from(leaf_bytes).unwrap_or(usize::MAX),
            usize::try_from(cap).unwrap_or(0) + 4,
        );
        Self {
            whole: disk
                .clone()
                .map(|d| Arc::new(WholeFiles::new(d, drop_pages))),
            passthrough: false,
            moded: Mutex::new(HashMap::new()),
            leaves: Arc::new(Leaves::new(reader.clone(), cache_bytes, pool, disk)),
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

    /// The runtime the file system's reads run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Whether whole files can be kept (there is a disk cache), so that passing opens
    /// through is worth asking the kernel for.
    pub fn keeps_whole_files(&self) -> bool {
        self.whole.is_some()
    }

    /// Records whether the kernel passes opens through to backing files.
    pub fn set_passthrough(&mut self, granted: bool) {
        self.passthrough = granted;
    }

    /// The entry `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        name.to_str()
            .and_then(|n| self.tree.child(parent, n))
            .and_then(|ino| Some((ino, self.tree.get(ino)?)))
            .map(|(ino, node)| self.attr(ino, node))
            .ok_or_else(|| FsError::NoEntry {
                parent,
                name: name.to_string_lossy().into_owned(),
            })
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        self.node(ino).map(|node| self.attr(ino, node))
    }

    /// Opens file `ino` (`write`: for writing, refused): a new handle, which reads ahead
    /// on its own, passed through to its whole file on disk when there is one (verified in
    /// this mount; `backing` registers it with the kernel), else read through the page
    /// cache. A whole file on disk not yet verified in this mount is checked in the
    /// background.
    pub fn open(
        &self,
        ino: u64,
        write: bool,
        backing: impl FnOnce(&std::fs::File) -> std::io::Result<B>,
    ) -> Result<Open<B>, FsError> {
        let file = self.file(ino)?;
        if write {
            return Err(FsError::ReadOnly);
        }
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let cached = Open { fh, backing: None };
        let whole = self
            .whole()
            .filter(|_| file.size > self.reader.leaf_size().bytes());
        let (Some(whole), Ok(root)) = (whole, file.hash.parse::<Key>()) else {
            return Ok(cached);
        };
        lock(&self.moded).insert(fh, ino);
        match whole.open(ino, &root, backing) {
            Opened::Direct(backing) => {
                tracing::debug!(file = %file.name, "open passed through to the cached file");
                Ok(Open {
                    fh,
                    backing: Some(backing),
                })
            }
            Opened::Cached => Ok(cached),
            Opened::Verify => {
                self.verify_whole(ino, root, file);
                Ok(cached)
            }
        }
    }

    /// Closes handle `fh`.
    pub fn release(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
        let moded = lock(&self.moded).remove(&fh);
        if let (Some(ino), Some(whole)) = (moded, &self.whole) {
            whole.release(ino);
        }
    }

    /// Bytes `offset .. offset + size` of file `ino` open as `fh` (fewer at the end of the
    /// file, none past it), reading ahead as that handle's [`Prefetcher`] says.
    pub async fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let file = self.file(ino)?;
        self.read_range(ino, fh, file, offset, size)
            .await
            .map_err(|source| FsError::Read {
                file: file.name.clone(),
                offset,
                size,
                source: Box::new(source),
            })
    }

    /// Opens directory `ino` for listing.
    pub fn opendir(&self, ino: u64) -> Result<(), FsError> {
        self.children(ino).map(|_| ())
    }

    /// The entries of directory `ino` from position `offset` on (`.` and `..` first, then
    /// the children by name); each says where the listing resumes after it.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = DirEntry<'_>> + '_, FsError> {
        let (node, children) = self.children(ino)?;
        let dots = [
            (ino, Kind::Directory, "."),
            (node.parent, Kind::Directory, ".."),
        ];
        let kids = children.iter().map(|(name, &child)| {
            let kind = match self.tree.get(child).map(|n| &n.kind) {
                Some(NodeKind::File(_)) => Kind::File,
                _ => Kind::Directory,
            };
            (child, kind, name.as_str())
        });
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        Ok(dots
            .into_iter()
            .chain(kids)
            .enumerate()
            .skip(skip)
            .map(|(i, (ino, kind, name))| DirEntry {
                ino,
                next: i as u64 + 1,
                kind,
                name,
            }))
    }

    /// The file system's size.
    pub fn statfs(&self) -> StatFs {
        StatFs {
            blocks: self.tree.bytes().div_ceil(u64::from(BLOCK)),
            files: self.tree.len(),
            block_size: BLOCK,
            name_max: NAME_MAX,
        }
    }

    fn node(&self, ino: u64) -> Result<&Node, FsError> {
        self.tree.get(ino).ok_or(FsError::NoInode { ino })
    }

    fn file(&self, ino: u64) -> Result<&FileNode, FsError> {
        match &self.node(ino)?.kind {
            NodeKind::File(f) => Ok(f),
            NodeKind::Dir(_) => Err(FsError::IsDir { ino }),
        }
    }

    fn children(
        &self,
        ino: u64,
    ) -> Result<(&Node, &std::collections::BTreeMap<String, u64>), FsError> {
        let node = self.node(ino)?;
        match &node.kind {
            NodeKind::Dir(children) => Ok((node, children)),
            NodeKind::File(_) => Err(FsError::NotDir { ino }),
        }
    }

    fn attr(&self, ino: u64, node: &Node) -> Attr {
        let (kind, perm, size, nlink, time) = match &node.kind {
            NodeKind::Dir(_) => (Kind::Directory, 0o555, 0, 2, self.owner.time),
            NodeKind::File(f) => (
                Kind::File,
                0o444,
                f.size,
                1,
                f.mtime.map_or(self.owner.time, SystemTime::from),
            ),
        };
        Attr {
            ino,
            kind,
            size,
            perm,
            nlink,
            uid: self.owner.uid,
            gid: self.owner.gid,
            time,
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

    /// Bytes `offset .. offset + size` of file `ino` open as `fh` (see [`Self::read`]).
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
                    Error::Internal(format!(
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
                Err(Error::Internal(format!(
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
                Error::Internal(format!(
                    "leaf {} of {:?} is shorter than its layout",
                    leaf.index, file.name
                ))
            })?;
            out.extend_from_slice(slice);
        }
        Ok(out.into())
    }

    /// The whole files, when the kernel passes opens through.
    fn whole(&self) -> Option<&Arc<WholeFiles<B>>> {
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
        if self.leaves.cached(&key) {
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

#[cfg(test)]
mod tests;
