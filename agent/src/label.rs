//! Labels: names that point at bundles, stored in the versioned metadata bucket.

use futures::{StreamExt, TryStreamExt};

use crate::context::Stores;
use crate::error::{Error, Result};
use crate::model::label::{self as labeldoc, LabelDoc};
use crate::model::{names, parse_yaml, to_yaml, Contributor};

/// Points `label` at bundle `id` (which must exist), replacing any previous target.
pub async fn set(
    stores: &Stores,
    repo: &str,
    label: &str,
    id: &str,
    contributor: &Contributor,
) -> Result<LabelDoc> {
    names::check_label(label)?;
    crate::bundle::get(stores, repo, id).await?;
    let doc = LabelDoc {
        name: label.to_string(),
        id: id.to_string(),
        timestamp: chrono::Utc::now(),
        contributors: vec![contributor.clone()],
    };
    stores
        .vmetadata
        .put(&labeldoc::key(repo, label), to_yaml(&doc)?)
        .await?;
    Ok(doc)
}

/// Reads a label; [`Error::LabelNotFound`] when it does not exist.
pub async fn get(stores: &Stores, repo: &str, label: &str) -> Result<LabelDoc> {
    names::check_label(label)?;
    crate::repo::get(stores, repo).await?;
    read(stores, repo, label).await
}

async fn read(stores: &Stores, repo: &str, label: &str) -> Result<LabelDoc> {
    let key = labeldoc::key(repo, label);
    match stores.vmetadata.get(&key).await? {
        Some(bytes) => {
            let mut doc: LabelDoc = parse_yaml(&bytes, || stores.vmetadata.location(&key))?;
            if doc.name.is_empty() {
                doc.name = label.to_string();
            }
            Ok(doc)
        }
        None => Err(Error::LabelNotFound {
            repo: repo.to_string(),
            label: label.to_string(),
        }),
    }
}

/// A repo's labels whose names start with `prefix`, sorted by name.
pub async fn list(stores: &Stores, repo: &str, prefix: &str) -> Result<Vec<LabelDoc>> {
    crate::repo::get(stores, repo).await?;
    let names = stores.vmetadata.list_dirs(&labeldoc::prefix(repo)).await?;
    futures::stream::iter(names.into_iter().filter(|n| n.starts_with(prefix)))
        .map(|name| async move {
            match read(stores, repo, &name).await {
                Ok(doc) => Ok(Some(doc)),
                Err(Error::LabelNotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffered(32)
        .try_filter_map(|r| async move { Ok(r) })
        .try_collect()
        .await
}
