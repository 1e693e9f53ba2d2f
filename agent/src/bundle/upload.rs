//! `bundle upload`: stores a directory tree as a new bundle, in datamon's commit order:
//! blobs → file lists → `bundle.yaml` (the commit point) → label. A failure before the
//! commit leaves no visible bundle (only unreferenced, content-addressed blobs).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::cafs::writer::BlobWriter;
use crate::cafs::LeafSize;
use crate::error::{Error, Result};
use crate::model::bundle::{
    self as bundledoc, BundleDoc, BundleEntries, BundleEntry, BUNDLE_VERSION, ENTRIES_PER_DOC,
};
use crate::model::{names, to_yaml, Contributor, Timestamp};
use crate::progress::Progress;
use crate::store::Created;
use crate::stores::Stores;
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
    let mut entries: Vec<BundleEntry> = futures::stream::iter(files)
        .map(|f| {
            let (writer, on_bytes, progress) = (writer.clone(), on_bytes.clone(), progress.clone());
            async move {
                let root = writer.write_file(&f.path, f.size, on_bytes).await?;
                progress.add_file();
                Ok::<_, Error>(BundleEntry {
                    hash: root.to_hex(),
                    name: f.name,
                    mode: 0,
                    size: f.size,
                    timestamp: f.mtime,
                })
            }
        })
        .buffer_unordered(tuning.files.max(1))
        .try_collect()
        .await?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));

    let id = names::new_bundle_id();
    let chunks: Vec<&[BundleEntry]> = entries.chunks(ENTRIES_PER_DOC).collect();
    futures::stream::iter(chunks.iter().enumerate())
        .map(|(n, chunk)| {
            let key = bundledoc::files_key(&req.repo, &id, n as u64);
            let doc = BundleEntries {
                entries: chunk.to_vec(),
            };
            async move { put_new(stores, &key, to_yaml(&doc)?).await }
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
        count: chunks.len() as u64,
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
