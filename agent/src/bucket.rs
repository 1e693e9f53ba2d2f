//! Buckets on GCS (`gs://`), S3 (`s3://`) or a local directory (`file:///`), through the
//! `object_store` crate, with retries and deadlines on every remote call.
//!
//! A bucket URL names one bucket. Bucket names found in a context resolve with the config
//! bucket's scheme: on `file://`, a bucket is a directory beside the config bucket's
//! directory (one directory per bucket).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use crate::buffers::BufferPool;
use crate::error::{Error, Result};

/// Where a bucket lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketUrl {
    /// A Google Cloud Storage bucket.
    Gcs(String),
    /// An S3 (or S3-compatible) bucket.
    S3(String),
    /// A local directory.
    File(PathBuf),
}

impl BucketUrl {
    /// Parses `gs://bucket`, `s3://bucket`, `file:///abs/dir`, or a bare bucket name
    /// (GCS, as datamon does).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::StoreUrl {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        let text_trim = text.trim_end_matches('/');
        if let Some(rest) = text_trim.strip_prefix("gs://") {
            check_bucket_name(rest).map_err(|r| bad(&r))?;
            Ok(Self::Gcs(rest.to_string()))
        } else if let Some(rest) = text_trim.strip_prefix("s3://") {
            check_bucket_name(rest).map_err(|r| bad(&r))?;
            Ok(Self::S3(rest.to_string()))
        } else if text.starts_with("file://") {
            let url = url::Url::parse(text).map_err(|e| bad(&format!("{e}")))?;
            let path = url.to_file_path().map_err(|()| {
                bad("a file URL needs an absolute path, like file:///srv/datamon/config")
            })?;
            if path.parent().is_none() {
                return Err(bad("a file bucket cannot be the root directory"));
            }
            Ok(Self::File(path))
        } else if text.contains("://") {
            Err(bad(
                "unknown scheme: use gs://bucket, s3://bucket or file:///dir",
            ))
        } else {
            check_bucket_name(text).map_err(|r| bad(&r))?;
            Ok(Self::Gcs(text.to_string()))
        }
    }

    /// The bucket called `name` in the same place as this one (same scheme; on `file://`,
    /// a sibling directory). A `name` that is itself a URL is used as is.
    pub fn sibling(&self, name: &str) -> Result<Self> {
        if name.contains("://") {
            return Self::parse(name);
        }
        let bad = |reason: String| Error::StoreUrl {
            url: name.to_string(),
            reason,
        };
        check_bucket_name(name).map_err(bad)?;
        Ok(match self {
            Self::Gcs(_) => Self::Gcs(name.to_string()),
            Self::S3(_) => Self::S3(name.to_string()),
            // Invariant: parse() refuses a file bucket without a parent directory.
            Self::File(p) => Self::File(p.parent().unwrap_or(p).join(name)),
        })
    }
}

fn check_bucket_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 222
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['-', '.', '_'])
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bucket name {name:?} is not valid: use lowercase letters, digits, '-', '_' and '.'"
        ))
    }
}

impl BucketUrl {
    /// The permission an operation on this kind of bucket needs, for messages.
    pub fn permission_for(&self, op: &str) -> &'static str {
        match self {
            Self::Gcs(_) => crate::gcs::permission_for(op),
            Self::S3(_) => match op {
                "write" => "s3:PutObject",
                "list" => "s3:ListBucket",
                "delete" => "s3:DeleteObject",
                _ => "s3:GetObject",
            },
            Self::File(_) => "read and write access to the directory",
        }
    }
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gcs(b) => write!(f, "gs://{b}"),
            Self::S3(b) => write!(f, "s3://{b}"),
            Self::File(p) => write!(f, "file://{}", p.display()),
        }
    }
}

/// How to reach remote stores.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Endpoint of an S3-compatible server (e.g. `http://127.0.0.1:9000`); AWS when unset.
    pub s3_endpoint: Option<String>,
    /// Endpoint of a GCS emulator (e.g. `http://127.0.0.1:4443`); Google when unset.
    /// Requests to it go unsigned, as Google's client libraries do with an emulator.
    pub gcs_endpoint: Option<String>,
    /// Unsigned requests to GCS (a public bucket): no credentials are looked for.
    pub gcs_anonymous: bool,
    /// Retries of a failed request.
    pub retries: usize,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
    /// Deadline for connecting.
    pub connect_timeout: Duration,
    /// Deadline for a whole request.
    pub request_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            s3_endpoint: None,
            gcs_endpoint: None,
            gcs_anonymous: false,
            retries: 8,
            retry_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

impl StoreOptions {
    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: self.retries,
            retry_timeout: self.retry_timeout,
        }
    }

    /// Whether GCS requests go unsigned: a public bucket, or an emulator.
    pub fn gcs_unsigned(&self) -> bool {
        self.gcs_anonymous || self.gcs_endpoint.is_some()
    }

    fn client(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_allow_http(allow_http)
    }
}

/// One open bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    url: BucketUrl,
    store: Arc<dyn ObjectStore>,
    /// The directory of a `file://` bucket opened by [`Bucket::open`], for batched checks.
    local_dir: Option<PathBuf>,
}

/// Whether a create-only write created the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The object was written.
    Yes,
    /// An object with that key already existed; nothing was written.
    AlreadyExisted,
}

impl Bucket {
    /// Opens a bucket. A `file://` bucket must be an existing directory.
    pub fn open(url: &BucketUrl, opts: &StoreOptions) -> Result<Self> {
        let bad = |e: object_store::Error| Error::Store {
            op: "open",
            location: url.to_string(),
            source: e,
        };
        let store: Arc<dyn ObjectStore> = match url {
            BucketUrl::File(dir) => {
                if !dir.is_dir() {
                    return Err(Error::StoreUrl {
                        url: url.to_string(),
                        reason: format!(
                            "directory {} does not exist: create the context with `datamon-agent context create`, or fix --config",
                            dir.display()
                        ),
                    });
                }
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(bad)?)
            }
            BucketUrl::S3(bucket) => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(opts.retry());
                let mut allow_http = false;
                if let Some(ep) = &opts.s3_endpoint {
                    allow_http = ep.starts_with("http://");
                    b = b.with_endpoint(ep).with_virtual_hosted_style_request(false);
                }
                Arc::new(
                    b.with_client_options(opts.client(allow_http))
                        .build()
                        .map_err(bad)?,
                )
            }
            BucketUrl::Gcs(bucket) => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(opts.retry())
                    .with_skip_signature(opts.gcs_unsigned());
                if opts.gcs_unsigned() {
                    // object_store 0.14 signs writes even with skip_signature (its request
                    // sender asks the credential provider unconditionally): an empty token
                    // keeps it from looking for credentials, and emulators ignore it.
                    b = b.with_credentials(Arc::new(object_store::StaticCredentialProvider::new(
                        object_store::gcp::GcpCredential {
                            bearer: String::new(),
                        },
                    )));
                }
                let mut allow_http = false;
                if let Some(ep) = &opts.gcs_endpoint {
                    allow_http = ep.starts_with("http://");
                    b = b.with_base_url(ep);
                }
                Arc::new(
                    b.with_client_options(opts.client(allow_http))
                        .build()
                        .map_err(bad)?,
                )
            }
        };
        let local_dir = match url {
            BucketUrl::File(dir) => Some(dir.clone()),
            _ => None,
        };
        Ok(Self {
            url: url.clone(),
            store,
            local_dir,
        })
    }

    /// The bucket's URL.
    pub fn url(&self) -> &BucketUrl {
        &self.url
    }

    /// `<bucket URL>/<key>`, for messages.
    pub fn location(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    fn err(&self, op: &'static str, key: &str) -> impl FnOnce(object_store::Error) -> Error + '_ {
        let location = self.location(key);
        let scheme = &self.url;
        move |source| match source {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Error::Denied {
                op,
                location,
                permission: scheme.permission_for(op),
                source: Box::new(source),
            },
            source => Error::Store {
                op,
                location,
                source,
            },
        }
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = ObjectPath::from(key);
        let res = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("read", key)(e)),
        };
        res.bytes().await.map(Some).map_err(self.err("read", key))
    }

    /// Reads an object into a buffer of `pool` (`None` when it does not exist). A local
    /// directory's file is read straight into a recycled buffer in one hand-off to a
    /// blocking thread (object_store's local store allocates and zero-fills a new buffer
    /// for every read, in two hand-offs); other stores read as [`Bucket::get`] does.
    pub async fn get_pooled(&self, key: &str, pool: &Arc<BufferPool>) -> Result<Option<Bytes>> {
        let Some(dir) = &self.local_dir else {
            return self.get(key).await;
        };
        let (path, pool) = (dir.join(key), pool.clone());
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io("read", path)(e)),
            };
            pool.fill(|buf| file.read_to_end(buf).map(drop))
                .map(Some)
                .map_err(Error::io("read", path))
        })
        .await?
    }

    /// The size of an object; `None` when it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("check", key)(e)),
        }
    }

    /// The sizes of many objects (`None` for those that do not exist), in order. A local
    /// directory answers them all in one hand-off to a blocking thread; remote stores get
    /// concurrent requests.
    pub async fn sizes(&self, keys: Vec<String>) -> Result<Vec<Option<u64>>> {
        use futures::{StreamExt, TryStreamExt};
        if let Some(dir) = self.local_dir.clone() {
            return tokio::task::spawn_blocking(move || {
                keys.iter()
                    .map(|k| {
                        let path = dir.join(k);
                        match std::fs::metadata(&path) {
                            Ok(m) if m.is_file() => Ok(Some(m.len())),
                            Ok(_) => Ok(None),
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                            Err(e) => Err(Error::io("check", path)(e)),
                        }
                    })
                    .collect()
            })
            .await?;
        }
        futures::stream::iter(keys)
            .map(|k| async move { self.size(&k).await })
            .buffered(16)
            .try_collect()
            .await
    }

    /// Writes an object only if no object has that key (a does-not-exist precondition).
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<Created> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&ObjectPath::from(key), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Created::Yes),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExisted),
            Err(e) => Err(self.err("write", key)(e)),
        }
    }

    /// Writes an object, replacing any previous version.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        // A local store writes the payload's buffers one by one: pieces, not one leaf.
        let payload = if self.local_dir.is_some() {
            crate::fsio::pieces(&bytes).collect()
        } else {
            PutPayload::from(bytes)
        };
        self.store
            .put(&ObjectPath::from(key), payload)
            .await
            .map(|_| ())
            .map_err(self.err("write", key))
    }

    /// The names directly under `prefix/` (one level, like directories).
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let path = ObjectPath::from(prefix);
        let list = self
            .store
            .list_with_delimiter(Some(&path))
            .await
            .map_err(self.err("list", prefix))?;
        let mut names: Vec<String> = list
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            BucketUrl::parse("gs://b").unwrap(),
            BucketUrl::Gcs("b".into())
        );
        assert_eq!(
            BucketUrl::parse("plain-name").unwrap(),
            BucketUrl::Gcs("plain-name".into())
        );
        assert_eq!(
            BucketUrl::parse("s3://b/").unwrap(),
            BucketUrl::S3("b".into())
        );
        assert_eq!(
            BucketUrl::parse("file:///srv/dm/config").unwrap(),
            BucketUrl::File("/srv/dm/config".into())
        );
        for bad in [
            "http://x",
            "s3://",
            "gs://UPPER",
            "file://relative/x",
            "file:///",
            "a/b",
        ] {
            let e = BucketUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad.trim_end_matches('/')), "{bad}: {e}");
        }
    }

    #[test]
    fn siblings_keep_the_scheme() {
        let f = BucketUrl::parse("file:///srv/dm/config").unwrap();
        assert_eq!(
            f.sibling("dev-blob").unwrap(),
            BucketUrl::File("/srv/dm/dev-blob".into())
        );
        let s = BucketUrl::parse("s3://cfg").unwrap();
        assert_eq!(
            s.sibling("dev-blob").unwrap(),
            BucketUrl::S3("dev-blob".into())
        );
        assert_eq!(
            s.sibling("gs://other").unwrap(),
            BucketUrl::Gcs("other".into())
        );
        assert!(f.sibling("../escape").is_err());
    }
}
