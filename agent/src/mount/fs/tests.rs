//! The file system's core against a real bundle, uploaded by the crate's own code to a
//! `file://` store in a temporary directory, with 16-byte leaves so that files of a few
//! leaves stay small: no kernel, no root, no `/dev/fuse`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::*;
use crate::bucket::{BucketUrl, StoreOptions};
use crate::bundle::upload::{upload, UploadRequest};
use crate::cafs::LeafSize;
use crate::context::Stores;
use crate::model::context::BucketNames;
use crate::model::Contributor;
use crate::mount::disk::DiskCacheConfig;
use crate::mount::tree::ROOT;
use crate::tuning::Tuning;

const MIB: usize = 1 << 20;

/// The leaf size of the test bundles.
const LEAF: u64 = 16;

/// `a/big`: 7 leaves, the last one partial.
fn big() -> Vec<u8> {
    (0..100u8).map(|i| i.wrapping_mul(7)).collect()
}

/// A bundle uploaded to a `file://` store, and what it holds.
struct Bundle {
    tmp: tempfile::TempDir,
    stores: Stores,
    tree: Tree,
    leaf_size: LeafSize,
    /// Directories of the blob bucket.
    blobs: PathBuf,
    /// When `hello.txt` was last modified, as uploaded.
    hello_mtime: SystemTime,
    /// When the bundle was made: the time of directories.
    time: SystemTime,
}

/// Uploads `hello.txt`, `empty`, `a/big` (see [`big`]) and `a/b/small` with 16-byte
/// leaves.
async fn bundle() -> Bundle {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello world\n").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("a/big"), big()).unwrap();
    std::fs::write(src.join("a/b/small"), b"0123456789abcdef").unwrap();
    let hello_mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    std::fs::File::options()
        .write(true)
        .open(src.join("hello.txt"))
        .unwrap()
        .set_modified(hello_mtime)
        .unwrap();
    let config = BucketUrl::File(tmp.path().join("config"));
    let opts = StoreOptions::default();
    crate::context::create(&config, "test", &BucketNames::default(), &opts)
        .await
        .unwrap();
    let stores = Stores::open(&config, "test", &opts).await.unwrap();
    crate::repo::create(&stores, "r", "test data", &Contributor::default())
        .await
        .unwrap();
    let leaf_size = LeafSize::new(LEAF).unwrap();
    let req = UploadRequest {
        repo: "r".into(),
        source: src,
        message: "test".into(),
        label: None,
        contributor: Contributor::default(),
        leaf_size,
    };
    let doc = upload(&stores, &req, &Tuning::default())
        .await
        .unwrap()
        .bundle;
    let entries = crate::bundle::entries(&stores, "r", &doc).await.unwrap();
    let BucketUrl::File(blobs) = stores.blob.url().clone() else {
        panic!("not a file bucket: {}", stores.blob.url());
    };
    Bundle {
        tree: Tree::build(entries).unwrap(),
        time: SystemTime::from(doc.timestamp),
        tmp,
        stores,
        leaf_size,
        blobs,
        hello_mtime,
    }
}

/// Page-cache drops asked for, by inode.
type Drops = Arc<Mutex<Vec<u64>>>;

impl Bundle {
    /// The owner every inode shows.
    fn owner(&self) -> Owner {
        Owner {
            uid: 1234,
            gid: 5678,
            time: self.time,
        }
    }

    /// The bundle served with 1 MiB of memory (the read-ahead cap is then 16 leaves) and
    /// `disk`; backing files are numbered by the test.
    fn serve(&self, disk: Option<Arc<DiskCache>>) -> (BundleFs<u32>, Drops) {
        let drops = Drops::default();
        let d = drops.clone();
        let setup = Setup {
            tree: self.tree.clone(),
            reader: BlobReader::new(self.stores.blob.clone(), self.leaf_size),
            runtime: tokio::runtime::Handle::current(),
            owner: self.owner(),
            memory_bytes: MIB,
            disk,
        };
        (BundleFs::new(setup, move |ino| lock(&d).push(ino)), drops)
    }

    /// The bundle served with `disk`, the kernel passing opens through.
    fn serve_passthrough(&self, disk: Arc<DiskCache>) -> (BundleFs<u32>, Drops) {
        let (mut fs, drops) = self.serve(Some(disk));
        assert!(fs.keeps_whole_files());
        fs.set_passthrough(true);
        (fs, drops)
    }

    /// A disk cache of 1 MiB in the bundle's temporary directory.
    fn disk(&self) -> Arc<DiskCache> {
        let config = DiskCacheConfig {
            dir: self.tmp.path().join("cache"),
            bytes: MIB as u64,
        };
        DiskCache::open(&config, self.leaf_size).unwrap()
    }

    /// The blob of `key` in the store.
    fn blob(&self, key: &Key) -> PathBuf {
        self.blobs.join(key.to_hex())
    }

    /// The root and leaf keys of `name`.
    async fn keys(&self, name: &str) -> (Key, Vec<Key>) {
        let ino = self.ino(name);
        let Some(Node {
            kind: NodeKind::File(f),
            ..
        }) = self.tree.get(ino)
        else {
            panic!("{name} is not a file");
        };
        let root: Key = f.hash.parse().unwrap();
        let reader = BlobReader::new(self.stores.blob.clone(), self.leaf_size);
        let leaves = reader.leaf_keys(&root, f.size, name).await.unwrap();
        (root, leaves)
    }

    /// The inode of `path` (`/`-separated, from the root).
    fn ino(&self, path: &str) -> u64 {
        path.split('/')
            .try_fold(ROOT, |dir, name| self.tree.child(dir, name))
            .unwrap_or_else(|| panic!("no {path} in the bundle"))
    }
}

/// Opens `ino` for reading, never passed through.
fn open(fs: &BundleFs<u32>, ino: u64) -> u64 {
    let open = fs
        .open(ino, false, |_| {
            panic!("no backing file without passthrough")
        })
        .unwrap();
    assert!(open.backing.is_none());
    open.fh
}

/// Reads all of file `ino` through a new handle, `chunk` bytes at a time, in order.
async fn read_all(fs: &BundleFs<u32>, ino: u64, chunk: u32) -> Vec<u8> {
    let fh = open(fs, ino);
    let mut out = Vec::new();
    loop {
        let bytes = fs.read(ino, fh, out.len() as u64, chunk).await.unwrap();
        if bytes.is_empty() {
            break;
        }
        out.extend_from_slice(&bytes);
    }
    fs.release(fh);
    out
}

/// Waits up to 10 s for `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}

/// Opens `ino` until it is passed through to a backing file (numbered `id`, made from
/// the file the whole-file cache hands over, whose bytes are checked against `want`),
/// releasing the opens through the page cache meanwhile; up to 10 s.
async fn open_passed_through(fs: &BundleFs<u32>, ino: u64, id: u32, want: &[u8]) -> Open<u32> {
    for _ in 0..1000 {
        let open = fs
            .open(ino, false, |file| {
                let mut got = vec![0; want.len() + 1];
                let n = file.read_at(&mut got, 0)?;
                assert_eq!(&got[..n], want, "the backing file holds the file's bytes");
                Ok(id)
            })
            .unwrap();
        if open.backing.is_some() {
            return open;
        }
        fs.release(open.fh);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("inode {ino} never passed through");
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_finds_names_and_answers_enoent_for_the_others() {
    let b = bundle().await;
    let (fs, _) = b.serve(None);
    let hello = fs.lookup(ROOT, OsStr::new("hello.txt")).unwrap();
    assert_eq!((hello.kind, hello.size), (Kind::File, 12));
    let a = fs.lookup(ROOT, OsStr::new("a")).unwrap();
    assert_eq!(a.kind, Kind::Directory);
    let big = fs.lookup(a.ino, OsStr::new("big")).unwrap();
    assert_eq!((big.ino, big.size), (b.ino("a/big"), 100));
    assert_eq!(fs.lookup(a.ino, OsStr::new("b")).unwrap().ino, b.ino("a/b"));
    let missing = [
        (ROOT, OsStr::new("missing")),
        // Names are looked up in their own directory only.
        (ROOT, OsStr::new("big")),
        (ROOT, OsStr::new("a/big")),
        // Not UTF-8: no bundle entry has such a name.
        (ROOT, OsStr::from_bytes(b"hello\xff")),
        // A file has no entries; an unknown inode neither.
        (hello.ino, OsStr::new("x")),
        (999, OsStr::new("hello.txt")),
    ];
    for (parent, name) in missing {
        let e = fs.lookup(parent, name).unwrap_err();
        assert!(matches!(e, FsError::NoEntry { .. }), "{name:?}: {e}");
        assert_eq!(e.errno(), nix::errno::Errno::ENOENT);
        assert!(!e.is_failure());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getattr_shows_sizes_read_only_modes_the_owner_and_times() {
    let b = bundle().await;
    let (fs, _) = b.serve(None);
    let root = fs.getattr(ROOT).unwrap();
    let want_root = Attr {
        ino: ROOT,
        kind: Kind::Directory,
        size: 0,
        perm: 0o555,
        nlink: 2,
        uid: 1234,
        gid: 5678,
        time: b.time,
    };
    assert_eq!(root, want_root);
    let hello = fs.getattr(b.ino("hello.txt")).unwrap();
    let want_hello = Attr {
        ino: b.ino("hello.txt"),
        kind: Kind::File,
        size: 12,
        perm: 0o444,
        nlink: 1,
        uid: 1234,
        gid: 5678,
        time: b.hello_mtime,
    };
    assert_eq!(hello, want_hello);
    assert_eq!(fs.getattr(b.ino("a/big")).unwrap().size, 100);
    assert_eq!(fs.getattr(b.ino("empty")).unwrap().size, 0);
    assert_eq!(fs.getattr(b.ino("a/b")).unwrap().kind, Kind::Directory);
    // What lookup answers is what getattr answers.
    assert_eq!(fs.lookup(ROOT, OsStr::new("hello.txt")).unwrap(), hello);
    for ino in [0, 999] {
        let e = fs.getattr(ino).unwrap_err();
        assert!(matches!(e, FsError::NoInode { .. }), "{e}");
        assert_eq!(e.errno(), nix::errno::Errno::ENOENT);
    }
    let s = fs.statfs();
    assert_eq!((s.blocks, s.files, s.block_size), (1, 7, BLOCK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readdir_lists_dots_then_children_and_resumes_at_an_offset() {
    let b = bundle().await;
    let (fs, _) = b.serve(None);
    let list = |ino, offset| -> Vec<(u64, u64, Kind, String)> {
        fs.readdir(ino, offset)
            .unwrap()
            .map(|e| (e.ino, e.next, e.kind, e.name.to_string()))
            .collect()
    };
    let (a, dir, file) = (b.ino("a"), Kind::Directory, Kind::File);
    let all = list(ROOT, 0);
    let want = [
        (ROOT, 1, dir, "."),
        (ROOT, 2, dir, ".."),
        (a, 3, dir, "a"),
        (b.ino("empty"), 4, file, "empty"),
        (b.ino("hello.txt"), 5, file, "hello.txt"),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|&(i, n, k, s)| (i, n, k, s.to_string()))
        .collect();
    assert_eq!(all, want);
    // Each entry's `next` is where a listing cut after it resumes.
    for (i, entry) in all.iter().enumerate() {
        assert_eq!(list(ROOT, entry.1), all[i + 1..], "after {}", entry.3);
    }
    assert!(list(ROOT, 99).is_empty());
    let names: Vec<_> = list(a, 0).into_iter().map(|e| (e.0, e.3)).collect();
    let want = [
        (a, "."),
        (ROOT, ".."),
        (b.ino("a/b"), "b"),
        (b.ino("a/big"), "big"),
    ];
    let want: Vec<_> = want.iter().map(|&(i, s)| (i, s.to_string())).collect();
    assert_eq!(names, want);
    fs.opendir(a).unwrap();
    let hello = b.ino("hello.txt");
    for e in [
        fs.readdir(hello, 0).err().unwrap(),
        fs.opendir(hello).unwrap_err(),
    ] {
        assert!(matches!(e, FsError::NotDir { .. }), "{e}");
        assert_eq!(e.errno(), nix::errno::Errno::ENOTDIR);
    }
    for e in [
        fs.readdir(999, 0).err().unwrap(),
        fs.opendir(999).unwrap_err(),
    ] {
        assert_eq!(e.errno(), nix::errno::Errno::ENOENT, "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_are_for_reading_files_only() {
    let b = bundle().await;
    let (fs, _) = b.serve(None);
    let hello = b.ino("hello.txt");
    let e = fs.open(hello, true, |_| Ok(0)).unwrap_err();
    assert!(matches!(e, FsError::ReadOnly), "{e}");
    assert_eq!(e.errno(), nix::errno::Errno::EROFS);
    let e = fs.open(b.ino("a"), false, |_| Ok(0)).unwrap_err();
    assert_eq!(e.errno(), nix::errno::Errno::EISDIR, "{e}");
    let e = fs.open(999, false, |_| Ok(0)).unwrap_err();
    assert_eq!(e.errno(), nix::errno::Errno::ENOENT, "{e}");
    // Each open is a handle of its own.
    let (one, two) = (open(&fs, hello), open(&fs, hello));
    assert_ne!(one, two);
    let e = fs.read(b.ino("a"), one, 0, 10).await.unwrap_err();
    assert_eq!(e.errno(), nix::errno::Errno::EISDIR, "{e}");
    let e = fs.read(999, one, 0, 10).await.unwrap_err();
    assert_eq!(e.errno(), nix::errno::Errno::ENOENT, "{e}");
    fs.release(one);
    fs.release(two);
    // Releasing an unknown handle is harmless.
    fs.release(12345);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_within_a_leaf_across_leaves_and_past_the_end() {
    let b = bundle().await;
    let (fs, _) = b.serve(None);
    let (ino, data) = (b.ino("a/big"), big());
    let fh = open(&fs, ino);
    let read = |offset: u64, size: u32| {
        let fs = &fs;
        async move { fs.read(ino, fh, offset, size).await.unwrap().to_vec() }
    };
    // Within one leaf (16 bytes each): at its start, in its middle, to its end.
    assert_eq!(read(0, 10).await, data[0..10]);
    assert_eq!(read(21, 5).await, data[21..26]);
    assert_eq!(read(40, 8).await, data[40..48]);
    // Across leaves: two, then four.
    assert_eq!(read(10, 10).await, data[10..20]);
    assert_eq!(read(15, 50).await, data[15..65]);
    // The last, partial leaf, and a read past the end of the file: cut at the end.
    assert_eq!(read(90, 50).await, data[90..100]);
    assert_eq!(read(96, 4).await, data[96..100]);
    assert!(read(100, 10).await.is_empty());
    assert!(read(5000, 10).await.is_empty());
    assert!(read(0, 0).await.is_empty());
    fs.release(fh);
    // In reads of any size, in order, as the kernel does.
    for chunk in [1, 7, 16, 33, 4096] {
        assert_eq!(read_all(&fs, ino, chunk).await, data, "chunks of {chunk}");
    }
    assert_eq!(
        read_all(&fs, b.ino("hello.txt"), 4096).await,
        b"hello world\n"
    );
    assert_eq!(
        read_all(&fs, b.ino("a/b/small"), 4096).await,
        b"0123456789abcdef"
    );
    assert!(read_all(&fs, b.ino("empty"), 4096).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_leaf_answers_eio_naming_the_file_and_the_rest_still_reads() {
    let b = bundle().await;
    let (_, leaves) = b.keys("a/big").await;
    // Leaf 2: same length, other bytes. Leaf 4: truncated. Leaf 6: gone.
    let corrupt = b.blob(&leaves[2]);
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes[3] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    std::fs::write(b.blob(&leaves[4]), b"short").unwrap();
    std::fs::remove_file(b.blob(&leaves[6])).unwrap();
    let (fs, _) = b.serve(None);
    let ino = b.ino("a/big");
    let fh = open(&fs, ino);
    for (offset, what) in [(32, "corrupt"), (70, "expected 16"), (96, "missing")] {
        let e = fs.read(ino, fh, offset, 4).await.unwrap_err();
        assert!(matches!(e, FsError::Read { .. }), "{e}");
        assert_eq!(e.errno(), nix::errno::Errno::EIO);
        assert!(e.is_failure());
        let chain = datamon_edge::chain(&e);
        assert!(
            chain.contains("a/big") && chain.contains(what),
            "{offset}: {chain}"
        );
        // A read across the damaged leaf fails too: no partial answer.
        let e = fs.read(ino, fh, offset - 8, 16).await.unwrap_err();
        assert_eq!(e.errno(), nix::errno::Errno::EIO, "{e}");
    }
    // The sound leaves still read, and so does every other file.
    let data = big();
    assert_eq!(fs.read(ino, fh, 16, 16).await.unwrap(), data[16..32]);
    assert_eq!(fs.read(ino, fh, 50, 10).await.unwrap(), data[50..60]);
    assert_eq!(
        read_all(&fs, b.ino("hello.txt"), 4096).await,
        b"hello world\n"
    );
    // A damaged root object fails every read of its file.
    let (root, _) = b.keys("a/b/small").await;
    std::fs::write(b.blob(&root), b"not a root object").unwrap();
    let (fs, _) = b.serve(None);
    let small = b.ino("a/b/small");
    let e = fs.read(small, open(&fs, small), 0, 4).await.unwrap_err();
    assert_eq!(e.errno(), nix::errno::Errno::EIO, "{e}");
    assert!(datamon_edge::chain(&e).contains("a/b/small"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_fetch_the_next_leaves_ahead() {
    let b = bundle().await;
    let (fs, _) = b.serve(None);
    let (ino, data) = (b.ino("a/big"), big());
    let (_, leaves) = b.keys("a/big").await;
    let fh = open(&fs, ino);
    // Leaf 0, then leaf 1: the window doubles, leaves 2 and 3 are fetched ahead.
    assert_eq!(fs.read(ino, fh, 0, 16).await.unwrap(), data[0..16]);
    assert_eq!(fs.read(ino, fh, 16, 16).await.unwrap(), data[16..32]);
    eventually("leaves 2 and 3 read ahead", || {
        fs.leaves.cached(&leaves[2]) && fs.leaves.cached(&leaves[3])
    })
    .await;
    // Read from the cache: the store no longer has them.
    for k in &leaves[2..4] {
        std::fs::remove_file(b.blob(k)).unwrap();
    }
    assert_eq!(fs.read(ino, fh, 32, 32).await.unwrap(), data[32..64]);
    fs.release(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_kept_on_disk_serve_a_later_mount_without_the_store() {
    let b = bundle().await;
    let (ino, data) = (b.ino("a/big"), big());
    {
        // No passthrough: the leaves, not the whole file, are kept.
        let (fs, _) = b.serve(Some(b.disk()));
        assert_eq!(read_all(&fs, ino, 4096).await, data);
    }
    let (root, leaves) = b.keys("a/big").await;
    let disk = b.disk();
    assert!(leaves.iter().all(|k| disk.contains(k)));
    assert!(!disk.contains_file(&root));
    for k in &leaves {
        std::fs::remove_file(b.blob(k)).unwrap();
    }
    let (fs, _) = b.serve(Some(disk));
    assert_eq!(read_all(&fs, ino, 10).await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_read_through_is_kept_whole_and_later_opens_pass_through() {
    let b = bundle().await;
    let (ino, data) = (b.ino("a/big"), big());
    let (root, leaves) = b.keys("a/big").await;
    let disk = b.disk();
    let (fs, drops) = b.serve_passthrough(disk.clone());
    // Read leaf by leaf from start to end, as the kernel reads a file through.
    let fh = open(&fs, ino);
    for offset in (0..100).step_by(16) {
        let end = (offset + 16).min(100);
        let got = fs.read(ino, fh, offset as u64, 16).await.unwrap();
        assert_eq!(got, data[offset..end]);
    }
    eventually("the whole file on disk", || disk.contains_file(&root)).await;
    // Its leaves are in the whole file: the last ones were not kept apart.
    assert!(!disk.contains(&leaves[6]));
    // The kernel's page cache of the inode is dropped once nothing has it open.
    assert!(lock(&drops).is_empty());
    fs.release(fh);
    assert_eq!(*lock(&drops), [ino]);
    let direct = open_passed_through(&fs, ino, 7, &data).await;
    assert_eq!(direct.backing.as_deref(), Some(&7));
    // Another open of the same inode shares the backing file while it is open.
    let again = fs.open(ino, false, |_| Ok(8)).unwrap();
    assert_eq!(again.backing.as_deref(), Some(&7));
    fs.release(again.fh);
    fs.release(direct.fh);
    // A file of one leaf is never kept whole: it opens through the page cache.
    let hello = b.ino("hello.txt");
    let fh = open(&fs, hello);
    assert_eq!(
        fs.read(hello, fh, 0, 100).await.unwrap(),
        &b"hello world\n"[..]
    );
    fs.release(fh);
    let fh = open(&fs, hello);
    fs.release(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_file_from_an_earlier_mount_is_verified_before_it_is_passed_through() {
    let b = bundle().await;
    let (ino, data) = (b.ino("a/big"), big());
    let (root, _) = b.keys("a/big").await;
    {
        let (fs, _) = b.serve_passthrough(b.disk());
        assert_eq!(read_all(&fs, ino, 16).await, data);
        let direct = open_passed_through(&fs, ino, 1, &data).await;
        fs.release(direct.fh);
    }
    // A new mount checks the file before its first passthrough open.
    let (fs, _) = b.serve_passthrough(b.disk());
    let first = fs.open(ino, false, |_| panic!("not verified yet")).unwrap();
    assert!(first.backing.is_none());
    fs.release(first.fh);
    let direct = open_passed_through(&fs, ino, 2, &data).await;
    fs.release(direct.fh);
    drop(fs);
    // A damaged whole file fails its check: it is removed, and opens stay cached.
    let kept = b
        .tmp
        .path()
        .join("cache")
        .join(format!("{}.file", root.to_hex()));
    let mut bytes = std::fs::read(&kept).unwrap();
    bytes[50] ^= 0xff;
    std::fs::write(&kept, bytes).unwrap();
    let disk = b.disk();
    let (fs, _) = b.serve_passthrough(disk.clone());
    let first = fs.open(ino, false, |_| panic!("a damaged file")).unwrap();
    assert!(first.backing.is_none());
    fs.release(first.fh);
    eventually("the damaged file removed", || !disk.contains_file(&root)).await;
    assert!(!kept.exists());
    let fh = open(&fs, ino);
    assert_eq!(fs.read(ino, fh, 40, 20).await.unwrap(), data[40..60]);
    fs.release(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_keep_no_whole_file() {
    let b = bundle().await;
    let (ino, data) = (b.ino("a/big"), big());
    let (root, _) = b.keys("a/big").await;
    let disk = b.disk();
    let (fs, _) = b.serve_passthrough(disk.clone());
    let fh = open(&fs, ino);
    // Leaf 0 starts an assembly; a jump to leaf 5 gives it up, and only a read of leaf 0
    // would start another.
    assert_eq!(fs.read(ino, fh, 0, 16).await.unwrap(), data[0..16]);
    assert_eq!(fs.read(ino, fh, 80, 16).await.unwrap(), data[80..96]);
    assert!(!fs.whole.as_ref().unwrap().assembling(ino));
    for offset in (16..100).step_by(16) {
        let end = (offset + 16).min(100);
        assert_eq!(
            fs.read(ino, fh, offset as u64, 16).await.unwrap(),
            data[offset..end]
        );
    }
    fs.release(fh);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!disk.contains_file(&root));
    assert!(!fs.whole.as_ref().unwrap().assembling(ino));
}
