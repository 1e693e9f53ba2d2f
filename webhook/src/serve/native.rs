//! Whether the cluster runs native sidecars (init containers with `restartPolicy: Always`,
//! Kubernetes 1.29+), for `--native-sidecars auto`: asked of the API server in the
//! background; until it answers, classic sidecars (they work on every version).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Native sidecar support as known now: unknown (0), yes (1), no (2).
#[derive(Debug, Default)]
pub(crate) struct NativeSupport(AtomicU8);

impl NativeSupport {
    pub(crate) fn set(&self, supported: bool) {
        self.0
            .store(if supported { 1 } else { 2 }, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 1
    }
}

/// Whether a server version (`major`, `minor` as the API server writes them, e.g. "1",
/// "29+") runs native sidecars by default (1.29 and later).
pub(crate) fn supports_native_sidecars(major: &str, minor: &str) -> Option<bool> {
    let digits = |s: &str| -> Option<u32> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    let (major, minor) = (digits(major)?, digits(minor)?);
    Some(major > 1 || (major == 1 && minor >= 29))
}

/// Asks the API server its version until it answers (every 10 s).
pub(crate) async fn detect_native_sidecars(client: kube::Client, support: Arc<NativeSupport>) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
            Ok(Ok(info)) => match supports_native_sidecars(&info.major, &info.minor) {
                Some(supported) => {
                    support.set(supported);
                    tracing::info!(
                        version = %info.git_version,
                        native_sidecars = supported,
                        "API server version known"
                    );
                    return;
                }
                None => {
                    support.set(false);
                    tracing::warn!(major = %info.major, minor = %info.minor, "unreadable API server version: classic sidecars");
                    return;
                }
            },
            Ok(Err(e)) => {
                let error = datamon_edge::chain(&e);
                tracing::warn!(%error, "cannot read the API server's version yet: classic sidecars until it answers");
            }
            Err(_) => tracing::warn!(
                "the API server's version did not come within 5s: classic sidecars until it answers"
            ),
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sidecars_from_1_29() {
        assert_eq!(supports_native_sidecars("1", "28"), Some(false));
        assert_eq!(supports_native_sidecars("1", "29+"), Some(true));
        assert_eq!(supports_native_sidecars("1", "35"), Some(true));
        assert_eq!(supports_native_sidecars("", "x"), None);
    }
}
