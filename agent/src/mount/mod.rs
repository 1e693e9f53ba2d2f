//! `bundle mount`: serves a bundle read-only through FUSE. The bundle and its file lists are
//! read before anything is mounted, so a missing repo, bundle or label fails cleanly; the
//! mount then serves until SIGTERM or SIGINT, and is unmounted before the command returns.
//!
//! Modules, from pure to I/O:
//! - [`tree`] builds the inodes, [`span`] cuts reads into leaves and [`prefetch`] decides
//!   how far to read ahead (all three pure);
//! - [`cache`] keeps verified leaves in memory, [`disk`] on disk, and [`leaves`] gets each
//!   one from the first of them that has it, else from the store, once however many reads
//!   wait for it; [`whole`] assembles whole files on disk for the kernel to read directly;
//! - [`fs`] is the file system itself (lookups, attributes, listings, opens and reads),
//!   apart from FUSE and tested without it; [`error`] says what each of its errors answers;
//! - [`fuse`] adapts it to the kernel (fuser's callbacks and replies, passthrough);
//! - [`mountinfo`] reads the mount table, repairs stale mounts and checks mount points;
//!   [`session`] mounts, serves until told to stop, and unmounts.
//!
//! This file holds what a caller asks for: [`MountRequest`] and [`FileOwner`].

mod cache;
pub(crate) mod disk;
mod error;
mod fs;
mod fuse;
mod leaves;
mod mountinfo;
mod prefetch;
mod session;
mod span;
mod tree;
mod whole;

use std::path::PathBuf;

use crate::bundle::BundleRef;
pub(crate) use session::{mount, Mounted};

/// What to mount.
#[derive(Clone, Debug)]
pub(crate) struct MountRequest {
    /// Repo.
    pub repo: String,
    /// Which bundle.
    pub bundle: BundleRef,
    /// Mount point: an existing empty directory.
    pub mount: PathBuf,
    /// Let every user (not only the mounting one) use the mount (FUSE `allow_other`).
    pub allow_other: bool,
    /// Bytes of verified leaves kept in memory (cached and read ahead).
    pub cache_bytes: usize,
    /// Keep verified leaves on disk too, across mounts.
    pub disk_cache: Option<disk::DiskCacheConfig>,
    /// Who the mounted files and directories belong to.
    pub file_owner: FileOwner,
}

/// The user and group the mounted files and directories show; `None` is this process's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FileOwner {
    /// User id [default: this process's].
    pub uid: Option<u32>,
    /// Group id [default: this process's].
    pub gid: Option<u32>,
}

impl FileOwner {
    /// The user and group ids, this process's filling in those not given.
    pub fn ids(self) -> (u32, u32) {
        let (uid, gid) = process_owner();
        (self.uid.unwrap_or(uid), self.gid.unwrap_or(gid))
    }
}

/// The user and group of this process.
fn process_owner() -> (u32, u32) {
    (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_owner_defaults_to_this_process_per_id() {
        let (uid, gid) = process_owner();
        assert_eq!(FileOwner::default().ids(), (uid, gid));
        let only_uid = FileOwner {
            uid: Some(1234),
            gid: None,
        };
        assert_eq!(only_uid.ids(), (1234, gid));
        let both = FileOwner {
            uid: Some(1),
            gid: Some(2),
        };
        assert_eq!(both.ids(), (1, 2));
    }
}
