//! A context's buckets, opened from the config bucket, and `context create`.

use crate::bucket::{Bucket, BucketUrl, Created, StoreOptions};
use crate::error::{Error, Result};
use crate::model::context::{self as ctxdoc, BucketNames, ContextDoc};
use crate::model::{names, parse_yaml, to_yaml};

/// The buckets that bundle and label operations use.
#[derive(Clone, Debug)]
pub struct Stores {
    /// Leaves and root objects.
    pub blob: Bucket,
    /// Repos and bundles.
    pub metadata: Bucket,
    /// Labels.
    pub vmetadata: Bucket,
}

impl Stores {
    /// Reads context `context` from the config bucket and opens its buckets.
    pub async fn open(config: &BucketUrl, context: &str, opts: &StoreOptions) -> Result<Self> {
        names::check_context(context)?;
        crate::gcs::check_bucket(config, opts).await?;
        let config_bucket = Bucket::open(config, opts)?;
        let key = ctxdoc::key(context);
        // datamon releases before contexts/ was introduced kept `<ctx>/context.yaml`.
        let legacy = format!("{context}/context.yaml");
        let (key, bytes) = match config_bucket.get(&key).await? {
            Some(b) => (key, b),
            None => match config_bucket.get(&legacy).await? {
                Some(b) => (legacy, b),
                None => {
                    return Err(Error::ContextNotFound {
                        context: context.to_string(),
                        config: config.to_string(),
                    })
                }
            },
        };
        let doc: ContextDoc = parse_yaml(&bytes, || config_bucket.location(&key))?;
        let open = |name: &str| Bucket::open(&config.sibling(name)?, opts);
        Ok(Self {
            blob: open(&doc.blob)?,
            metadata: open(&doc.metadata)?,
            vmetadata: open(&doc.vmetadata)?,
        })
    }
}

/// Creates context `context` in the config bucket (create-only). On `file://`, also creates
/// the config directory and the five bucket directories.
pub async fn create(
    config: &BucketUrl,
    context: &str,
    buckets: &BucketNames,
    opts: &StoreOptions,
) -> Result<ContextDoc> {
    names::check_context(context)?;
    crate::gcs::check_bucket(config, opts).await?;
    let doc = ContextDoc::with_defaults(context, buckets);
    if let BucketUrl::File(dir) = config {
        let mut dirs = vec![dir.clone()];
        for name in doc.buckets() {
            if let BucketUrl::File(d) = config.sibling(name)? {
                dirs.push(d);
            }
        }
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(Error::io("create directory", &d))?;
        }
    } else {
        for name in doc.buckets() {
            config.sibling(name)?;
        }
    }
    let bucket = Bucket::open(config, opts)?;
    match bucket
        .put_new(&ctxdoc::key(context), to_yaml(&doc)?)
        .await?
    {
        Created::Yes => Ok(doc),
        Created::AlreadyExisted => Err(Error::ContextExists {
            context: context.to_string(),
            config: config.to_string(),
        }),
    }
}
