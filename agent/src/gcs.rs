//! What is particular to Google Cloud Storage: an emulator's endpoint, anonymous access,
//! where the credentials come from, and a check of them that fails in about a second with
//! the fix instead of after minutes of retried token requests.
//!
//! Credentials, in the order Google's client libraries look for them:
//! 1. none, for an emulator (`--gcs-endpoint`, `STORAGE_EMULATOR_HOST`) or a public bucket
//!    (`--gcs-anonymous`);
//! 2. `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key file (or another credentials
//!    file `gcloud` writes);
//! 3. gcloud's application-default credentials (`~/.config/gcloud/...`);
//! 4. the metadata server (GKE Workload Identity, a GCE service account), at
//!    `GCE_METADATA_HOST` or `GCE_METADATA_IP` if set (tests point them at loopback),
//!    else `169.254.169.254`.
//!
//! [`source`] decides which one applies from the settings and the environment (pure);
//! [`check`] then looks at it: the file exists and is a credentials file, or the metadata
//! server accepts a connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bucket::{BucketUrl, StoreOptions};
use crate::error::{Error, Result};

/// The variable naming a credentials file.
pub const CREDENTIALS_ENV: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// The variable Google's client libraries read for an emulator (`host:port` or a URL).
pub const EMULATOR_ENV: &str = "STORAGE_EMULATOR_HOST";

/// The metadata server's address when the environment names none.
const DEFAULT_METADATA_HOST: &str = "169.254.169.254";

/// How long the metadata server may take to accept a connection (it answers within
/// milliseconds where it exists).
const METADATA_CONNECT_DEADLINE: Duration = Duration::from_secs(1);

/// gcloud's application-default credentials, below `$HOME`.
const ADC_PATH: &str = ".config/gcloud/application_default_credentials.json";

/// Where a GCS bucket's credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// No credentials: requests go unsigned.
    Anonymous {
        /// Why (the setting that asked for it).
        why: &'static str,
    },
    /// A credentials file named by `GOOGLE_APPLICATION_CREDENTIALS`.
    KeyFile(PathBuf),
    /// gcloud's application-default credentials file.
    ApplicationDefault(PathBuf),
    /// The metadata server at `host` (`host` or `host:port`).
    MetadataServer {
        /// Where it is asked.
        host: String,
    },
}

/// Which credentials a GCS bucket uses, given the settings (`anonymous`, `endpoint`) and
/// a view of the environment (`env`) and of which files exist (`exists`).
pub fn source(
    anonymous: bool,
    endpoint: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    exists: impl Fn(&Path) -> bool,
) -> CredentialSource {
    if anonymous {
        return CredentialSource::Anonymous {
            why: "--gcs-anonymous (gcs_anonymous) is set",
        };
    }
    if endpoint.is_some() {
        return CredentialSource::Anonymous {
            why: "an emulator endpoint is set (--gcs-endpoint or STORAGE_EMULATOR_HOST)",
        };
    }
    if let Some(path) = env(CREDENTIALS_ENV).filter(|p| !p.is_empty()) {
        return CredentialSource::KeyFile(PathBuf::from(path));
    }
    if let Some(home) = env("HOME") {
        let adc = Path::new(&home).join(ADC_PATH);
        if exists(&adc) {
            return CredentialSource::ApplicationDefault(adc);
        }
    }
    let host = env("GCE_METADATA_HOST")
        .or_else(|| env("GCE_METADATA_IP"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_string());
    CredentialSource::MetadataServer { host }
}

/// The emulator endpoint as a URL: `host:port` (as `STORAGE_EMULATOR_HOST` is often
/// written) means `http://host:port`. `None` for text that is no endpoint.
pub fn endpoint_url(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() || text.contains(char::is_whitespace) {
        return None;
    }
    if text.starts_with("http://") || text.starts_with("https://") {
        Some(text.to_string())
    } else if text.contains("://") {
        None
    } else {
        Some(format!("http://{text}"))
    }
}

/// Checks that `source` can give credentials for `bucket`, quickly: the file is a
/// readable credentials file, or the metadata server accepts a connection.
pub async fn check(source: &CredentialSource, bucket: &str) -> Result<()> {
    match source {
        CredentialSource::Anonymous { .. } => Ok(()),
        CredentialSource::KeyFile(path) => check_file(path, CREDENTIALS_ENV, bucket).await,
        CredentialSource::ApplicationDefault(path) => {
            check_file(path, "gcloud's application-default credentials", bucket).await
        }
        CredentialSource::MetadataServer { host } => {
            let addr = if host.contains(':') {
                host.clone()
            } else {
                format!("{host}:80")
            };
            let connect = tokio::net::TcpStream::connect(addr.clone());
            match tokio::time::timeout(METADATA_CONNECT_DEADLINE, connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(no_credentials(bucket, host, &e.to_string())),
                Err(_) => Err(no_credentials(
                    bucket,
                    host,
                    &format!("no answer within {METADATA_CONNECT_DEADLINE:?}"),
                )),
            }
        }
    }
}

fn no_credentials(bucket: &str, host: &str, why: &str) -> Error {
    Error::GcsCredentials {
        bucket: bucket.to_string(),
        reason: format!(
            "no credentials: {CREDENTIALS_ENV} is not set and the metadata server at {host} cannot be reached ({why}); \
             on GKE enable Workload Identity for the pod's service account, elsewhere set {CREDENTIALS_ENV} \
             to a service-account key file; for a public bucket pass --gcs-anonymous, for an emulator --gcs-endpoint"
        ),
    }
}

async fn check_file(path: &Path, what: &str, bucket: &str) -> Result<()> {
    let bad = |reason: String| Error::GcsCredentials {
        bucket: bucket.to_string(),
        reason,
    };
    let text = tokio::fs::read(path).await.map_err(|e| {
        bad(format!(
            "{what} names {}, which cannot be read ({e}): mount the key file there (a Secret volume) or fix {CREDENTIALS_ENV}",
            path.display()
        ))
    })?;
    let kind = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string));
    match kind {
        Some(_) => Ok(()),
        None => Err(bad(format!(
            "{what} names {}, which is not a Google credentials file (JSON with a \"type\", such as a service-account key from `gcloud iam service-accounts keys create`)",
            path.display()
        ))),
    }
}

/// For a `gs://` bucket: checks its credentials as [`check`] does, from the process's
/// environment. Other buckets need nothing.
pub async fn check_bucket(url: &BucketUrl, opts: &StoreOptions) -> Result<()> {
    let BucketUrl::Gcs(bucket) = url else {
        return Ok(());
    };
    let source = source(
        opts.gcs_anonymous,
        opts.gcs_endpoint.as_deref(),
        |k| std::env::var(k).ok(),
        Path::exists,
    );
    tracing::debug!(?source, bucket, "GCS credentials");
    check(&source, bucket).await
}

/// The IAM permission a refused operation needs, for the error message.
pub fn permission_for(op: &str) -> &'static str {
    match op {
        "write" => "storage.objects.create",
        "list" => "storage.objects.list",
        "delete" => "storage.objects.delete",
        _ => "storage.objects.get",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn credentials_are_looked_for_in_googles_order() {
        let none = |_: &Path| false;
        assert!(matches!(
            source(true, None, env(&[(CREDENTIALS_ENV, "/k.json")]), none),
            CredentialSource::Anonymous { .. }
        ));
        assert!(matches!(
            source(false, Some("http://127.0.0.1:1"), env(&[]), none),
            CredentialSource::Anonymous { .. }
        ));
        assert_eq!(
            source(false, None, env(&[(CREDENTIALS_ENV, "/k.json")]), none),
            CredentialSource::KeyFile("/k.json".into())
        );
        let adc = Path::new("/home/u").join(ADC_PATH);
        assert_eq!(
            source(false, None, env(&[("HOME", "/home/u")]), |p| p == adc),
            CredentialSource::ApplicationDefault(adc.clone())
        );
        assert_eq!(
            source(false, None, env(&[("HOME", "/home/u")]), none),
            CredentialSource::MetadataServer {
                host: DEFAULT_METADATA_HOST.into()
            }
        );
        assert_eq!(
            source(
                false,
                None,
                env(&[
                    ("GCE_METADATA_HOST", "127.0.0.1:9"),
                    ("GCE_METADATA_IP", "x")
                ]),
                none
            ),
            CredentialSource::MetadataServer {
                host: "127.0.0.1:9".into()
            }
        );
    }

    #[test]
    fn an_emulator_host_without_a_scheme_is_http() {
        assert_eq!(
            endpoint_url("localhost:4443").as_deref(),
            Some("http://localhost:4443")
        );
        assert_eq!(
            endpoint_url("https://gcs.local/").as_deref(),
            Some("https://gcs.local")
        );
        assert_eq!(endpoint_url("ftp://x"), None);
        assert_eq!(endpoint_url(" "), None);
    }

    #[tokio::test]
    async fn a_missing_or_foreign_key_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = CredentialSource::KeyFile(dir.path().join("nope.json"));
        let e = check(&missing, "b").await.unwrap_err().to_string();
        assert!(
            e.contains("nope.json") && e.contains("cannot be read"),
            "{e}"
        );
        let foreign = dir.path().join("k.json");
        std::fs::write(&foreign, "not json").unwrap();
        let e = check(&CredentialSource::KeyFile(foreign.clone()), "b")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Google credentials file"), "{e}");
        std::fs::write(&foreign, r#"{"type": "service_account"}"#).unwrap();
        check(&CredentialSource::KeyFile(foreign), "b")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_metadata_server_fails_at_once_with_the_fix() {
        // A port on loopback that nothing listens on: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = CredentialSource::MetadataServer {
            host: format!("127.0.0.1:{port}"),
        };
        let e = check(&s, "bkt").await.unwrap_err().to_string();
        assert!(
            e.contains("gs://bkt") && e.contains("--gcs-anonymous"),
            "{e}"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = CredentialSource::MetadataServer {
            host: listener.local_addr().unwrap().to_string(),
        };
        check(&s, "bkt").await.unwrap();
    }
}
