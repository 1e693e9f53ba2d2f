//! What an operation of the mounted file system answers when it fails: [`FsError`], with
//! the errno the kernel gets for each variant (mapped one by one, no catch-all, so a new
//! variant must choose its errno) and, for the mount's own failures, the message and
//! source that go to the log.

use nix::errno::Errno;

use crate::error::Error;

/// Why the core of the file system ([`super::fs::BundleFs`]) refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FsError {
    /// No inode of that number: the kernel asked for one this mount never gave out.
    #[error("no inode {ino} in the bundle")]
    NoInode {
        /// The inode asked for.
        ino: u64,
    },
    /// No entry of that name in the directory.
    #[error("no entry {name:?} in directory inode {parent}")]
    NoEntry {
        /// The directory's inode.
        parent: u64,
        /// The name looked up (lossily shown if it is not UTF-8).
        name: String,
    },
    /// A file operation on a directory.
    #[error("inode {ino} is a directory")]
    IsDir {
        /// The directory's inode.
        ino: u64,
    },
    /// A directory operation on a file.
    #[error("inode {ino} is not a directory")]
    NotDir {
        /// The file's inode.
        ino: u64,
    },
    /// Anything that would change the bundle: it is served read-only.
    #[error("the bundle is mounted read-only")]
    ReadOnly,
    /// The bytes of a file could not be read (store, root object or leaf check).
    #[error("cannot read {size} bytes at offset {offset} of {file:?}")]
    Read {
        /// The file's name in the bundle.
        file: String,
        /// Where the read starts.
        offset: u64,
        /// Bytes asked for.
        size: u32,
        /// What failed (boxed: the other answers stay small).
        #[source]
        source: Box<Error>,
    },
}

impl FsError {
    /// The errno the kernel answers the caller with.
    pub(crate) fn errno(&self) -> Errno {
        match self {
            FsError::NoInode { .. } => Errno::ENOENT,
            FsError::NoEntry { .. } => Errno::ENOENT,
            FsError::IsDir { .. } => Errno::EISDIR,
            FsError::NotDir { .. } => Errno::ENOTDIR,
            FsError::ReadOnly => Errno::EROFS,
            FsError::Read { .. } => Errno::EIO,
        }
    }

    /// Whether it is a failure of the mount, to be logged, rather than an answer to a
    /// request that cannot succeed (a missing name, a write).
    pub(crate) fn is_failure(&self) -> bool {
        match self {
            FsError::NoInode { .. }
            | FsError::NoEntry { .. }
            | FsError::IsDir { .. }
            | FsError::NotDir { .. }
            | FsError::ReadOnly => false,
            FsError::Read { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_errno_and_only_read_failures_are_logged() {
        let cases = [
            (FsError::NoInode { ino: 9 }, Errno::ENOENT, false),
            (
                FsError::NoEntry {
                    parent: 1,
                    name: "x".into(),
                },
                Errno::ENOENT,
                false,
            ),
            (FsError::IsDir { ino: 1 }, Errno::EISDIR, false),
            (FsError::NotDir { ino: 2 }, Errno::ENOTDIR, false),
            (FsError::ReadOnly, Errno::EROFS, false),
            (
                FsError::Read {
                    file: "a/big".into(),
                    offset: 4096,
                    size: 10,
                    source: Box::new(Error::Internal("boom".into())),
                },
                Errno::EIO,
                true,
            ),
        ];
        for (e, errno, failure) in cases {
            assert_eq!(e.errno(), errno, "{e}");
            assert_eq!(e.is_failure(), failure, "{e}");
        }
        let read = FsError::Read {
            file: "a/big".into(),
            offset: 4096,
            size: 10,
            source: Box::new(Error::Internal("boom".into())),
        };
        let chain = datamon_edge::chain(&read);
        assert!(
            chain.contains("a/big") && chain.contains("4096") && chain.contains("boom"),
            "{chain}"
        );
    }
}
