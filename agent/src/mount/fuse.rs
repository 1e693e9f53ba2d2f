//! The FUSE adapter: a thin [`fuser::Filesystem`] over the file system [`BundleFs`], so
//! that the file system is tested without the kernel in the loop. Each callback calls the
//! core (blocking on [`BundleFs::read`], the one operation that waits for the store, on
//! the session thread that got the request) and turns its answer into a reply:
//! attributes into `FileAttr`s, errors into their errno, logging the mount's own failures.
//! What only FUSE has stays here: negotiating passthrough at init, registering backing
//! files at open, and the notifier that drops the kernel's page cache of an inode.
//! Everything that would change the tree answers EROFS (`read_only!`).

use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, Notifier, OpenAccMode, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::error::FsError;
use super::fs::{Attr, BundleFs, Kind, Setup, BLOCK};

/// How long the kernel may cache names and attributes: the content never changes.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// A bundle served read-only through FUSE.
pub(crate) struct FuseFs {
    fs: BundleFs<BackingId>,
    /// How to tell the kernel to drop cached pages, once the session runs.
    notifier: Arc<OnceLock<Notifier>>,
}

impl FuseFs {
    /// Serves what `setup` says (see [`BundleFs::new`]); the kernel's page cache of a file
    /// kept whole is dropped through the session's notifier, once [`Self::notifier`] holds
    /// it.
    pub fn new(setup: Setup) -> Self {
        let notifier: Arc<OnceLock<Notifier>> = Arc::new(OnceLock::new());
        let n = notifier.clone();
        let drop_pages = move |ino| {
            let dropped = n.get().map(|n| n.inval_inode(INodeNo(ino), 0, 0));
            if let Some(Err(e)) = dropped {
                tracing::debug!(ino, "cannot drop the page cache of a kept file: {e}");
            }
        };
        Self {
            fs: BundleFs::new(setup, drop_pages),
            notifier,
        }
    }

    /// Where to put the session's notifier once the file system is mounted.
    pub fn notifier(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }
}

/// The errno of `e` for the kernel; a failure of the mount is logged first, with its
/// whole chain, as the answer to operation `op`.
fn errno(op: &str, e: &FsError) -> Errno {
    let errno = e.errno();
    if e.is_failure() {
        tracing::error!(
            "{op} failed, answering {errno:?}: {}",
            datamon_edge::chain(e)
        );
    }
    Errno::from_i32(errno as i32)
}

/// How the kernel names a kind of inode.
fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

/// The kernel's attributes of an inode (blocks of 512 bytes, as `stat` counts them).
fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.time,
        mtime: a.time,
        ctime: a.time,
        crtime: a.time,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLOCK,
        flags: 0,
    }
}

/// Callbacks that would change the tree: each answers EROFS. Written as
/// `name(argument types after the request) -> reply type;`.
macro_rules! read_only {
    ($($op:ident($($arg:ty),* $(,)?) -> $reply:ty;)*) => {
        $(
            fn $op(&self, _req: &Request, $(_: $arg,)* reply: $reply) {
                reply.error(Errno::EROFS);
            }
        )*
    };
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if !self.fs.keeps_whole_files() {
            return Ok(());
        }
        // Backing files may sit on a stacked file system (a container's overlay).
        let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok();
        self.fs.set_passthrough(granted);
        if granted {
            tracing::info!("whole files kept on disk are passed through to the kernel");
        } else {
            tracing::info!(
                "the kernel cannot pass files through: every read goes through the mount"
            );
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno("lookup", &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        match self.fs.open(ino.0, write, |f| reply.open_backing(f)) {
            // The kernel takes no other flag with a passthrough open (FOPEN_PASSTHROUGH_MASK).
            Ok(open) => match &open.backing {
                Some(backing) => {
                    reply.opened_passthrough(FileHandle(open.fh), FopenFlags::empty(), backing)
                }
                // The bytes never change: the kernel may keep its page cache across opens.
                None => reply.opened(FileHandle(open.fh), FopenFlags::FOPEN_KEEP_CACHE),
            },
            Err(e) => reply.error(errno("open", &e)),
        }
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
        self.fs.release(fh.0);
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
        match self
            .fs
            .runtime()
            .block_on(self.fs.read(ino.0, fh.0, offset, size))
        {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(errno("read", &e)),
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
        match self.fs.opendir(ino.0) {
            // Listings never change either: the kernel may cache them across opens.
            Ok(()) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno("opendir", &e)),
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
        let entries = match self.fs.readdir(ino.0, offset) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno("readdir", &e)),
        };
        for e in entries {
            // True once the reply is full: the kernel asks again from `e.next - 1`.
            if reply.add(INodeNo(e.ino), e.next, file_type(e.kind), e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks,
            0,
            0,
            s.files,
            0,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    read_only! {
        setattr(
            INodeNo,
            Option<u32>,
            Option<u32>,
            Option<u32>,
            Option<u64>,
            Option<TimeOrNow>,
            Option<TimeOrNow>,
            Option<SystemTime>,
            Option<FileHandle>,
            Option<SystemTime>,
            Option<SystemTime>,
            Option<SystemTime>,
            Option<BsdFileFlags>,
        ) -> ReplyAttr;
        mknod(INodeNo, &OsStr, u32, u32, u32) -> ReplyEntry;
        mkdir(INodeNo, &OsStr, u32, u32) -> ReplyEntry;
        unlink(INodeNo, &OsStr) -> ReplyEmpty;
        rmdir(INodeNo, &OsStr) -> ReplyEmpty;
        symlink(INodeNo, &OsStr, &Path) -> ReplyEntry;
        rename(INodeNo, &OsStr, INodeNo, &OsStr, RenameFlags) -> ReplyEmpty;
        link(INodeNo, INodeNo, &OsStr) -> ReplyEntry;
        write(
            INodeNo,
            FileHandle,
            u64,
            &[u8],
            WriteFlags,
            OpenFlags,
            Option<LockOwner>,
        ) -> ReplyWrite;
        create(INodeNo, &OsStr, u32, u32, i32) -> ReplyCreate;
        setxattr(INodeNo, &OsStr, &[u8], i32, u32) -> ReplyEmpty;
        removexattr(INodeNo, &OsStr) -> ReplyEmpty;
        fallocate(INodeNo, FileHandle, u64, u64, i32) -> ReplyEmpty;
    }
}
