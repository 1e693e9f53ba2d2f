//! `bundle download`: writes a bundle's files into a directory. Every file is written to
//! a temporary name beside its target and renamed into place only once all its leaves
//! are verified, so a failure never leaves a half-written file under a real name.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use regex::Regex;
use tokio::task::JoinSet;

use super::BundleRef;
use crate::buffers::BufferPool;
use crate::cafs::reader::BlobReader;
use crate::cafs::{Key, LeafLayout, LeafSize};
use crate::context::Stores;
use crate::destination::{entry_path, Destination};
use crate::error::{Error, Result};
use crate::model::bundle::{BundleDoc, BundleEntry};
use crate::progress::Progress;
use crate::tuning::{MemoryBudget, Tuning};

/// What to download.
#[derive(Clone, Debug)]
pub struct DownloadRequest {
    /// Repo.
    pub repo: String,
    /// Which bundle.
    pub bundle: BundleRef,
    /// Destination directory.
    pub destination: PathBuf,
    /// Only entries whose names match (RE2 syntax, as datamon's `--name-filter`).
    pub name_filter: Option<String>,
    /// Allow a non-empty destination.
    pub force_dest: bool,
}

/// What a download did.
#[derive(Clone, Debug)]
pub struct DownloadReport {
    /// The bundle.
    pub bundle: BundleDoc,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Downloads a bundle into `req.destination`.
pub async fn download(
    stores: &Stores,
    req: &DownloadRequest,
    tuning: &Tuning,
) -> Result<DownloadReport> {
    let filter = req
        .name_filter
        .as_deref()
        .map(|p| {
            Regex::new(p).map_err(|source| Error::NameFilter {
                pattern: p.to_string(),
                source,
            })
        })
        .transpose()?;
    let doc = super::resolve(stores, &req.repo, &req.bundle).await?;
    let leaf_size = LeafSize::new(doc.leaf_size)?;
    let mut entries = super::entries(stores, &req.repo, &doc).await?;
    // Check every name before writing anything.
    let mut seen = HashSet::new();
    for e in &entries {
        entry_path(&e.name)?;
        if !seen.insert(e.name.as_str()) {
            return Err(Error::UnsafeEntry {
                name: e.name.clone(),
                reason: "it appears twice in the bundle".into(),
            });
        }
    }
    drop(seen);
    if let Some(f) = &filter {
        entries.retain(|e| f.is_match(&e.name));
    }
    let dest = {
        let (root, force) = (req.destination.clone(), req.force_dest);
        Arc::new(tokio::task::spawn_blocking(move || Destination::prepare(&root, force)).await??)
    };
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let progress = Progress::new("download", entries.len() as u64, total);
    let _reporter = progress.report(Duration::from_secs(5));
    let budget = MemoryBudget::new(tuning.memory_budget);
    // A leaf's buffer lives from its read to its write.
    let buffers = BufferPool::for_budget(leaf_size.get() as usize, &budget);
    let fetcher = FileFetcher {
        reader: BlobReader::new(stores.blob.clone(), leaf_size).with_buffers(buffers),
        budget,
        progress: progress.clone(),
    };
    let files = entries.len() as u64;
    futures::stream::iter(entries)
        .map(|entry| {
            let (fetcher, dest) = (fetcher.clone(), dest.clone());
            async move { fetcher.fetch(&dest, entry).await }
        })
        .buffer_unordered(tuning.files.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    tracing::info!("{}", progress.line());
    Ok(DownloadReport {
        bundle: doc,
        files,
        bytes: total,
    })
}

/// Fetches single files of one bundle.
#[derive(Clone, Debug)]
struct FileFetcher {
    reader: BlobReader,
    budget: MemoryBudget,
    progress: Arc<Progress>,
}

impl FileFetcher {
    /// Downloads one entry to its place under `dest`.
    async fn fetch(&self, dest: &Arc<Destination>, entry: BundleEntry) -> Result<()> {
        let root: Key = entry.hash.parse().map_err(|source| Error::Key {
            file: entry.name.clone(),
            source,
        })?;
        let keys = self
            .reader
            .leaf_keys(&root, entry.size, &entry.name)
            .await?;
        let (dest2, name) = (dest.clone(), entry.name.clone());
        let (target, tmp) =
            tokio::task::spawn_blocking(move || -> Result<(PathBuf, tempfile::NamedTempFile)> {
                let target = dest2.place(&name)?;
                let dir = target.parent().unwrap_or(dest2.root()).to_path_buf();
                let tmp = tempfile::Builder::new()
                    .prefix(".datamon-")
                    .suffix(".partial")
                    .tempfile_in(&dir)
                    .map_err(Error::io("create a temporary file in", &dir))?;
                Ok((target, tmp))
            })
            .await??;
        let file = Arc::new(
            tmp.as_file()
                .try_clone()
                .map_err(Error::io("open", tmp.path()))?,
        );
        let layout = LeafLayout::new(entry.size, self.reader.leaf_size());
        // Each leaf is fetched, verified and written at its offset by a task of its own,
        // under the memory budget: the tasks advance on their own (a stage waits for no
        // other leaf's write), so reading, hashing and writing overlap on every core. A
        // failure ends the file at once: the other tasks are aborted with the set, and the
        // temporary file is removed with `tmp`.
        let mut tasks = JoinSet::new();
        for (leaf, key) in layout.leaves().zip(keys) {
            while let Some(done) = tasks.try_join_next() {
                done??;
            }
            let permit = self.budget.reserve(leaf.len).await?;
            let (reader, progress, name) = (
                self.reader.clone(),
                self.progress.clone(),
                entry.name.clone(),
            );
            let (file, path) = (file.clone(), tmp.path().to_path_buf());
            tasks.spawn(async move {
                reader
                    .leaf_then(&key, &leaf, &name, move |bytes| {
                        crate::fsio::write_all_at(&file, &bytes, leaf.offset)
                            .map_err(Error::io("write", path))
                    })
                    .await?;
                progress.add_bytes(leaf.len);
                drop(permit);
                Ok::<_, Error>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let mtime = entry.timestamp;
        tokio::task::spawn_blocking(move || finish(tmp, &target, mtime.map(Into::into))).await??;
        self.progress.add_file();
        Ok(())
    }
}

/// Sets the file's modification time and renames it into place.
fn finish(
    tmp: tempfile::NamedTempFile,
    target: &Path,
    mtime: Option<std::time::SystemTime>,
) -> Result<()> {
    if let Some(t) = mtime {
        tmp.as_file()
            .set_modified(t)
            .map_err(Error::io("set the modification time of", tmp.path()))?;
    }
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    tmp.as_file()
        .set_permissions(mode)
        .map_err(Error::io("set permissions of", tmp.path()))?;
    tmp.persist(target).map_err(|e| Error::Io {
        op: "rename into place",
        path: target.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
