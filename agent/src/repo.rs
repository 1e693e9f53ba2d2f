//! Repositories: create, list, and the existence check every bundle operation makes.

use futures::{StreamExt, TryStreamExt};

use crate::bucket::Created;
use crate::context::Stores;
use crate::error::{Error, Result};
use crate::model::repo::{self as repodoc, RepoDoc};
use crate::model::{names, parse_yaml, to_yaml, Contributor};

/// Creates a repo (create-only: an existing repo is an error).
pub async fn create(
    stores: &Stores,
    repo: &str,
    description: &str,
    contributor: &Contributor,
) -> Result<RepoDoc> {
    names::check_repo(repo)?;
    if description.trim().is_empty() {
        return Err(Error::InvalidName {
            kind: "repo description for",
            name: repo.to_string(),
            reason: "datamon requires a description: pass --description \"what this repo holds\""
                .into(),
        });
    }
    let doc = RepoDoc {
        name: repo.to_string(),
        description: description.to_string(),
        timestamp: chrono::Utc::now(),
        contributor: contributor.clone(),
    };
    match stores
        .metadata
        .put_new(&repodoc::key(repo), to_yaml(&doc)?)
        .await?
    {
        Created::Yes => Ok(doc),
        Created::AlreadyExisted => Err(Error::RepoExists {
            repo: repo.to_string(),
        }),
    }
}

/// Reads a repo's descriptor; [`Error::RepoNotFound`] when it does not exist.
pub async fn get(stores: &Stores, repo: &str) -> Result<RepoDoc> {
    names::check_repo(repo)?;
    let key = repodoc::key(repo);
    match stores.metadata.get(&key).await? {
        Some(bytes) => parse_yaml(&bytes, || stores.metadata.location(&key)),
        None => Err(Error::RepoNotFound {
            repo: repo.to_string(),
        }),
    }
}

/// All repos, sorted by name.
pub async fn list(stores: &Stores) -> Result<Vec<RepoDoc>> {
    let names = stores.metadata.list_dirs(repodoc::PREFIX).await?;
    futures::stream::iter(names)
        .map(|name| async move { get(stores, &name).await.map(Some).or_else(skip_missing) })
        .buffered(32)
        .try_filter_map(|r| async move { Ok(r) })
        .try_collect()
        .await
}

/// A directory without a descriptor is not a repo (yet): skip it in listings.
fn skip_missing(e: Error) -> Result<Option<RepoDoc>> {
    match e {
        Error::RepoNotFound { .. } | Error::InvalidName { .. } => Ok(None),
        e => Err(e),
    }
}
