//! Bundles: resolving which one is meant (id, label or latest), reading their documents,
//! and listing them. [`upload`] and [`download`] move their files.

pub mod download;
pub mod upload;

use futures::{StreamExt, TryStreamExt};

use crate::context::Stores;
use crate::error::{Error, Result};
use crate::model::bundle::{self as bundledoc, BundleDoc, BundleEntries, BundleEntry};
use crate::model::{names, parse_yaml};

/// Which bundle of a repo is meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleRef {
    /// A bundle id.
    Id(String),
    /// The bundle a label points at.
    Label(String),
    /// The latest committed bundle.
    Latest,
}

impl BundleRef {
    /// From datamon's flags: `--bundle` wins, then `--label`, else latest.
    pub fn from_flags(bundle: Option<String>, label: Option<String>) -> Self {
        match (bundle, label) {
            (Some(id), _) => Self::Id(id),
            (None, Some(l)) => Self::Label(l),
            (None, None) => Self::Latest,
        }
    }
}

/// Resolves a reference to a committed bundle's descriptor.
pub async fn resolve(stores: &Stores, repo: &str, r: &BundleRef) -> Result<BundleDoc> {
    crate::repo::get(stores, repo).await?;
    match r {
        BundleRef::Id(id) => get(stores, repo, id).await,
        BundleRef::Label(l) => {
            let label = crate::label::get(stores, repo, l).await?;
            get(stores, repo, &label.id).await
        }
        BundleRef::Latest => latest(stores, repo).await,
    }
}

/// The latest committed bundle. Ids sort by their KSUID second; bundles made within the
/// same second are ordered by their `timestamp` (nanoseconds). A directory without
/// `bundle.yaml` is an upload that never committed and is skipped.
async fn latest(stores: &Stores, repo: &str) -> Result<BundleDoc> {
    let ids = stores.metadata.list_dirs(&bundledoc::prefix(repo)).await?;
    let mut best: Option<BundleDoc> = None;
    for id in ids.iter().rev() {
        if let Some(b) = &best {
            if names::bundle_id_second(id) != names::bundle_id_second(&b.id) {
                break;
            }
        }
        match get(stores, repo, id).await {
            Ok(doc) => {
                if best.as_ref().is_none_or(|b| order(&doc) > order(b)) {
                    best = Some(doc);
                }
            }
            Err(Error::BundleNotFound { .. } | Error::InvalidName { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    best.ok_or_else(|| Error::NoBundle {
        repo: repo.to_string(),
    })
}

/// Creation order of bundles: KSUID second, then commit time, then id.
fn order(doc: &BundleDoc) -> (Option<u32>, crate::model::Timestamp, &str) {
    (
        names::bundle_id_second(&doc.id),
        doc.timestamp,
        doc.id.as_str(),
    )
}

/// Reads a committed bundle's descriptor.
pub async fn get(stores: &Stores, repo: &str, id: &str) -> Result<BundleDoc> {
    names::check_repo(repo)?;
    names::check_bundle_id(id)?;
    let key = bundledoc::key(repo, id);
    let bytes = stores
        .metadata
        .get(&key)
        .await?
        .ok_or_else(|| Error::BundleNotFound {
            repo: repo.to_string(),
            bundle: id.to_string(),
        })?;
    let doc: BundleDoc = parse_yaml(&bytes, || stores.metadata.location(&key))?;
    if doc.id != id {
        return Err(Error::Document {
            location: stores.metadata.location(&key),
            reason: format!("it describes bundle {:?}, not {id:?}", doc.id),
        });
    }
    Ok(doc)
}

/// All committed bundles of a repo, oldest first.
pub async fn list(stores: &Stores, repo: &str) -> Result<Vec<BundleDoc>> {
    crate::repo::get(stores, repo).await?;
    let ids = stores.metadata.list_dirs(&bundledoc::prefix(repo)).await?;
    futures::stream::iter(ids)
        .map(|id| async move {
            match get(stores, repo, &id).await {
                Ok(doc) => Ok(Some(doc)),
                Err(Error::BundleNotFound { .. } | Error::InvalidName { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffered(32)
        .try_filter_map(|d| async move { Ok(d) })
        .try_collect::<Vec<BundleDoc>>()
        .await
        .map(|mut docs| {
            docs.sort_by(|a, b| order(a).cmp(&order(b)));
            docs
        })
}

/// Every file entry of a bundle, from its `count` file lists fetched in parallel.
pub async fn entries(stores: &Stores, repo: &str, doc: &BundleDoc) -> Result<Vec<BundleEntry>> {
    let docs: Vec<Vec<BundleEntry>> = futures::stream::iter(0..doc.count)
        .map(|n| async move {
            let key = bundledoc::files_key(repo, &doc.id, n);
            let bytes = stores.metadata.get(&key).await?.ok_or_else(|| Error::Document {
                location: stores.metadata.location(&key),
                reason: format!(
                    "bundle.yaml says there are {} file lists but this one is missing; the bundle is damaged",
                    doc.count
                ),
            })?;
            let list: BundleEntries = parse_yaml(&bytes, || stores.metadata.location(&key))?;
            Ok::<_, Error>(list.entries)
        })
        .buffered(16)
        .try_collect()
        .await?;
    Ok(docs.into_iter().flatten().collect())
}
