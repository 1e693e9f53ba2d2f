//! The serving certificate: loaded from PEM files, swapped in place when the files change.
//!
//! A `ReloadingResolver` holds the current certificate and key; every new TLS handshake takes
//! whatever it holds then, so a reload needs no restart and never touches open connections.
//! A `Watcher` polls the files (Kubernetes updates a mounted Secret by swapping a symlink, which
//! inotify on the file itself would miss) and installs a new pair only if it parses and the key
//! matches the certificate: a half-written or broken pair keeps the old certificate in service
//! and logs an error once per distinct content.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::metrics::Metrics;

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The certificate file is not valid PEM.
    #[error("{} is not a valid PEM certificate chain", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The key file holds no usable private key.
    #[error("{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The key is of an unsupported type, or does not match the certificate.
    #[error("the key in {} cannot serve the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The TLS configuration could not be built.
    #[error("cannot configure TLS")]
    Config(#[source] rustls::Error),
}

/// The crypto provider of every TLS connection of this crate (ring, as kube's client).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default crypto provider, for the TLS connections this crate
/// does not configure itself (kube's client). Needed whenever both of rustls's providers
/// are compiled in (a workspace build also links the agent's aws-lc-rs), where rustls
/// cannot pick one on its own. Calling it again does nothing.
pub fn install_default_provider() {
    // An Err means a provider is already installed: that one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn certified_key_from_pem(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::BadKey {
        path: key_path.to_owned(),
        source,
    })?;
    // from_der checks that the key matches the leaf certificate.
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

/// Hands every handshake the certificate it holds now; empty until the first load.
#[derive(Debug, Default)]
pub(crate) struct ReloadingResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ReloadingResolver {
    /// Puts `key` in service for every handshake from now on.
    pub(crate) fn set(&self, key: CertifiedKey) {
        let key = Some(Arc::new(key));
        match self.current.write() {
            Ok(mut guard) => *guard = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }

    /// The certificate in service, if any.
    pub(crate) fn current(&self) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a certificate is in service.
    pub(crate) fn is_loaded(&self) -> bool {
        self.current().is_some()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// A rustls server configuration: TLS 1.2 and 1.3 only, ALPN h2 and http/1.1, the
/// certificate from `resolver`.
pub(crate) fn server_config(resolver: Arc<ReloadingResolver>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Where the certificate and key live, and how often to look at them.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Time between two looks.
    pub interval: Duration,
}

/// Loads the pair into a resolver, and again whenever the files' contents change. Failures
/// are logged and counted; the certificate in service stays until a good pair replaces it.
#[derive(Debug)]
pub(crate) struct Watcher {
    files: CertFiles,
    resolver: Arc<ReloadingResolver>,
    metrics: Arc<Metrics>,
    /// The contents last looked at (good or bad), or the last read error.
    seen: Option<(Vec<u8>, Vec<u8>)>,
}

impl Watcher {
    /// A watcher of `files` feeding `resolver`; nothing is read yet.
    pub(crate) fn new(
        files: CertFiles,
        resolver: Arc<ReloadingResolver>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            files,
            resolver,
            metrics,
            seen: None,
        }
    }

    /// Looks at the files once; installs the pair if it changed and is good.
    pub(crate) async fn check(&mut self) {
        let contents = match (
            tokio::fs::read(&self.files.cert).await,
            tokio::fs::read(&self.files.key).await,
        ) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(source), _) | (_, Err(source)) => {
                let path = if std::fs::metadata(&self.files.cert).is_err() {
                    self.files.cert.clone()
                } else {
                    self.files.key.clone()
                };
                // Reported once, not at every look.
                let marker = (Vec::new(), source.to_string().into_bytes());
                if self.seen.as_ref() != Some(&marker) {
                    let e = TlsError::Read { path, source };
                    report_failure(&e, self.resolver.is_loaded(), &self.metrics);
                    self.seen = Some(marker);
                }
                return;
            }
        };
        if self.seen.as_ref() == Some(&contents) {
            return;
        }
        let files = &self.files;
        match certified_key_from_pem(&files.cert, &contents.0, &files.key, &contents.1) {
            Ok(key) => {
                let first = !self.resolver.is_loaded();
                self.resolver.set(key);
                self.metrics.cert_reload("ok");
                let cert = files.cert.display().to_string();
                if first {
                    tracing::info!(cert, "serving certificate loaded");
                } else {
                    tracing::info!(cert, "serving certificate reloaded");
                }
            }
            Err(e) => report_failure(&e, self.resolver.is_loaded(), &self.metrics),
        }
        self.seen = Some(contents);
    }

    /// Looks at the files every interval, forever (run it as a task).
    pub(crate) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.files.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.check().await;
        }
    }
}

fn report_failure(e: &TlsError, serving: bool, metrics: &Metrics) {
    metrics.cert_reload("error");
    let error = datamon_edge::chain(e);
    if serving {
        tracing::error!(%error, "new serving certificate refused; the previous one stays in service");
    } else {
        tracing::error!(%error, "no serving certificate yet; TLS handshakes fail and /readyz says not ready until one loads");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let a = crate::certs::issue("svc", "ns", 1).unwrap();
        let b = crate::certs::issue("svc", "ns", 1).unwrap();
        let p = Path::new("x");
        assert!(certified_key_from_pem(p, a.cert_pem.as_bytes(), p, a.key_pem.as_bytes()).is_ok());
        let err =
            certified_key_from_pem(p, a.cert_pem.as_bytes(), p, b.key_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err:?}");
    }

    #[test]
    fn garbage_is_refused_with_the_file_named() {
        let p = Path::new("/etc/tls.crt");
        let err = certified_key_from_pem(p, b"hello", p, b"hello").unwrap_err();
        assert!(datamon_edge::chain(&err).contains("/etc/tls.crt"), "{err}");
    }
}
