//! The images the demo's pods run: the three that scripts/build-images.sh writes
//! (`target/images/<name>-<version>.oci.tar`, named in pods by their full reference), and an
//! application image that is not ours ([`AppImage`]).

use std::path::{Path, PathBuf};

use super::DemoError;
use crate::app_image::AppImage;

/// The registry and tag of the built images (scripts/build-images.sh's defaults).
const REGISTRY: &str = "ghcr.io/datamon-sidecar";

/// The application image's name in the demo's pods.
pub const APP_IMAGE: &str = "busybox:demo";

/// The full reference of a built image, as the webhook injects it.
pub fn reference(name: &str) -> String {
    format!("{REGISTRY}/{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// The archive of a built image, which must exist.
pub fn built(name: &str) -> Result<PathBuf, DemoError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/images")
        .join(format!("{name}-{}.oci.tar", env!("CARGO_PKG_VERSION")));
    super::existing(path, "run `just images` first (scripts/build-images.sh)")
}

/// Builds the application image under `dir` (busybox, not ours: [`AppImage`]'s default,
/// the same digest every run): its archive.
pub fn app_image(dir: &Path) -> Result<PathBuf, DemoError> {
    AppImage::default().build(dir).map_err(|e| DemoError::Step {
        step: "build the application image".into(),
        detail: format!("{e:#}"),
    })
}
