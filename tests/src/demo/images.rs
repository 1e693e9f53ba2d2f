//! The images the demo's pods run: the three that scripts/build-images.sh writes
//! (`target/images/<name>-<version>.oci.tar`, named in pods by their full reference), and an
//! application image that is not ours: Debian's busybox-static with every applet linked,
//! made into an OCI archive with umoci and skopeo.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::DemoError;

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

fn run(program: &str, args: &[&str]) -> Result<(), DemoError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| DemoError::Io {
            what: format!("run {program} (scripts/build-images.sh installs it)"),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(DemoError::Step {
        step: format!("{program} {}", args.join(" ")),
        detail: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Builds the application image under `dir`: its archive.
pub fn app_image(dir: &Path) -> Result<PathBuf, DemoError> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err(DemoError::Step {
            step: "build the application image".into(),
            detail: "/bin/busybox is missing: apt-get install busybox-static (./dev.sh does)"
                .into(),
        });
    }
    let io = |what: &str| {
        let what = what.to_string();
        move |source| DemoError::Io { what, source }
    };
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).map_err(io("create the image's /bin"))?;
    std::fs::create_dir_all(root.join("tmp")).map_err(io("create the image's /tmp"))?;
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(io("copy /bin/busybox"))?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(io("run busybox --list"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .map_err(io("link a busybox applet"))?;
        }
    }
    let layout = dir.join("layout").display().to_string();
    let image = format!("{layout}:demo");
    let rootfs = root.display().to_string();
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .map_err(io("write the skopeo policy"))?;
    let archive = dir.join("app.oci.tar");
    let steps: [&[&str]; 4] = [
        &["init", "--layout", &layout],
        &["new", "--image", &image],
        &["insert", "--image", &image, &rootfs, "/"],
        &[
            "config",
            "--image",
            &image,
            "--config.env",
            "PATH=/bin",
            "--config.cmd",
            "sh",
        ],
    ];
    for args in steps {
        run("umoci", args)?;
    }
    run(
        "skopeo",
        &[
            "--policy",
            &policy.display().to_string(),
            "copy",
            "--quiet",
            &format!("oci:{image}"),
            &format!("oci-archive:{}", archive.display()),
        ],
    )?;
    Ok(archive)
}
