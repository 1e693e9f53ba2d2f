//! `bundle upload`: stores a directory tree as a new bundle, in datamon's commit order:
//! blobs → file lists → `bundle.yaml` (the commit point) → label. A failure before the
//! commit leaves no visible bundle (only unreferenced, content-addressed blobs).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::bucket::Created;
use crate::cafs::writer::BlobWriter;
use crate::cafs::LeafSize;
use crate::context::Stores;
use crate::error::{Error, Result};
use crate::model::bundle::{
    self as bundledoc, BundleDoc, BundleEntries, BundleEntry, BUNDLE_VERSION, ENTRIES_PER_DOC,
};
use crate::model::{names, to_yaml, Contributor, Timestamp};
use crate::progress::Progress;
use crate::tuning::{MemoryBudget, Tuning};

/// What to upload.
#[derive(Clone, Debug)]
pub struct UploadRequest {
    /// Target repo (must exist).
    pub repo: String,
    /// Directory whose files become the bundle.
    pub source: PathBuf,
    /// Commit message.
    pub message: String,
    /// Label to point at the new bundle.
    pub label: Option<String>,
    /// Who uploads.
    pub contributor: Contributor,
    /// Leaf size of the new bundle.
    pub leaf_size: LeafSize,
}

/// What an upload did.
#[derive(Clone, Debug)]
pub struct UploadReport {
    /// The new bundle's descriptor.
    pub bundle: BundleDoc,
    /// Files in the bundle.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Leaf and root objects written.
    pub objects_written: u64,
    /// Leaf and root objects already stored (deduplicated).
    pub objects_deduplicated: u64,
}

/// A file found under the source directory.
#[derive(Clone, Debug)]
struct SourceFile {
    name: String,
    path: PathBuf,
    size: u64,
    mtime: Option<Timestamp>,
}

/// Lists regular files under `root` (names relative, with `/`), sorted. Symlinks are
/// skipped with a warning; `.datamon` at the top is skipped as datamon does.
fn walk(root: &Path) -> Result<Vec<SourceFile>> {
    let meta = std::fs::metadata(root).map_err(Error::io("read upload path", root))?;
    if !meta.is_dir() {
        return Err(Error::Io {
            op: "upload",
            path: root.to_path_buf(),
            source: std::io::Error::other("--path must be a directory"),
        });
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(root).sort_by_file_name().into_iter();
    for entry in walker.filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".datamon")) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            Error::Io {
                op: "read",
                path,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("directory loop")),
            }
        })?;
        let ft = entry.file_type();
        if ft.is_symlink() {
            tracing::warn!(path = %entry.path().display(), "skipping symlink: bundles hold regular files only");
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        let meta = entry.metadata().map_err(|e| Error::Io {
            op: "read",
            path: entry.path().to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("metadata")),
        })?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let name = rel
            .to_str()
            .ok_or_else(|| Error::Io {
                op: "upload",
                path: entry.path().to_path_buf(),
                source: std::io::Error::other(
                    "the file name is not UTF-8, which datamon cannot record",
                ),
            })?
            .to_string();
        files.push(SourceFile {
            name,
            path: entry.path().to_path_buf(),
            size: meta.len(),
            mtime: meta.modified().ok().map(Timestamp::from),
        });
    }
    Ok(files)
}

/// Most small files read and hashed in one hand-off.
const SMALL_BATCH_FILES: usize = 64;

/// Groups files into units of work: each large file alone, small files (one leaf at most)
/// in batches of up to [`SMALL_BATCH_FILES`] files and `batch_bytes` bytes.
fn batches(files: Vec<SourceFile>, writer: &BlobWriter, batch_bytes: u64) -> Vec<Vec<SourceFile>> {
    let mut out = Vec::new();
    let mut small: Vec<SourceFile> = Vec::new();
    let mut small_bytes = 0;
    for f in files {
        if !writer.is_small(f.size) {
            out.push(vec![f]);
            continue;
        }
        if !small.is_empty()
            && (small.len() >= SMALL_BATCH_FILES || small_bytes + f.size > batch_bytes)
        {
            out.push(std::mem::take(&mut small));
            small_bytes = 0;
        }
        small_bytes += f.size;
        small.push(f);
    }
    if !small.is_empty() {
        out.push(small);
    }
    out
}

/// Uploads `req.source` as a new bundle of `req.repo`.
pub async fn upload(stores: &Stores, req: &UploadRequest, tuning: &Tuning) -> Result<UploadReport> {
    crate::repo::get(stores, &req.repo).await?;
    if let Some(l) = &req.label {
        names::check_label(l)?;
    }
    let source = req.source.clone();
    let files = tokio::task::spawn_blocking(move || walk(&source)).await??;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::new("upload", files.len() as u64, total_bytes);
    let _reporter = progress.report(Duration::from_secs(5));

    let writer = BlobWriter::new(
        stores.blob.clone(),
        req.leaf_size,
        MemoryBudget::new(tuning.memory_budget),
    );
    let on_bytes: Arc<dyn Fn(u64) + Send + Sync> = {
        let p = progress.clone();
        Arc::new(move |n| p.add_bytes(n))
    };
    let work = batches(files, &writer, tuning.memory_budget as u64 / 8);
    let entries: Vec<Vec<BundleEntry>> = futures::stream::iter(work)
        .map(|batch| {
            let (writer, on_bytes, progress) = (writer.clone(), on_bytes.clone(), progress.clone());
            async move {
                let roots = match batch.as_slice() {
                    [one] if !writer.is_small(one.size) => {
                        vec![writer.write_file(&one.path, one.size, on_bytes).await?]
                    }
                    _ => {
                        let list = batch.iter().map(|f| (f.path.clone(), f.size)).collect();
                        writer.write_small_files(list, &on_bytes).await?
                    }
                };
                Ok::<_, Error>(
                    batch
                        .into_iter()
                        .zip(roots)
                        .map(|(f, root)| {
                            progress.add_file();
                            BundleEntry {
                                hash: root.to_hex(),
                                name: f.name,
                                mode: 0,
                                size: f.size,
                                timestamp: f.mtime,
                            }
                        })
                        .collect(),
                )
            }
        })
        // A unit is a large file or a batch of small ones, each with its own parallelism.
        .buffer_unordered((tuning.files / 16).max(2))
        .try_collect()
        .await?;
    let mut entries: Vec<BundleEntry> = entries.into_iter().flatten().collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));

    let id = names::new_bundle_id();
    let lists: Vec<(String, BundleEntries)> = entries
        .chunks(ENTRIES_PER_DOC)
        .enumerate()
        .map(|(n, chunk)| {
            let key = bundledoc::files_key(&req.repo, &id, n as u64);
            (
                key,
                BundleEntries {
                    entries: chunk.to_vec(),
                },
            )
        })
        .collect();
    let count = lists.len() as u64;
    futures::stream::iter(lists)
        .map(|(key, doc)| async move {
            let yaml = tokio::task::spawn_blocking(move || to_yaml(&doc)).await??;
            put_new(stores, &key, yaml).await
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;

    let doc = BundleDoc {
        leaf_size: req.leaf_size.bytes(),
        id: id.clone(),
        message: req.message.clone(),
        parents: Vec::new(),
        timestamp: chrono::Utc::now(),
        contributors: vec![req.contributor.clone()],
        count,
        version: BUNDLE_VERSION,
        deduplication: Some("blake".to_string()),
        runstage: None,
    };
    put_new(stores, &bundledoc::key(&req.repo, &id), to_yaml(&doc)?).await?;
    if let Some(label) = &req.label {
        crate::label::set(stores, &req.repo, label, &id, &req.contributor).await?;
    }
    let stats = writer.stats();
    tracing::info!("{}", progress.line());
    Ok(UploadReport {
        bundle: doc,
        files: entries.len() as u64,
        bytes: total_bytes,
        objects_written: stats.objects_written.load(Ordering::Relaxed),
        objects_deduplicated: stats.objects_deduplicated.load(Ordering::Relaxed),
    })
}

/// A create-only metadata write; an existing object means a bundle id collision.
async fn put_new(stores: &Stores, key: &str, bytes: bytes::Bytes) -> Result<()> {
    match stores.metadata.put_new(key, bytes).await? {
        Created::Yes => Ok(()),
        Created::AlreadyExisted => Err(Error::Document {
            location: stores.metadata.location(key),
            reason: "it already exists; bundle documents are never overwritten (retry the upload for a new bundle id)".into(),
        }),
    }
}
