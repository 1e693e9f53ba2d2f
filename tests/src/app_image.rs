//! An application image that is not ours, for pods run from images: Debian's static busybox
//! with every applet linked in `/bin`, `/tmp` (1777), user root, as an OCI archive made with
//! umoci and skopeo (no daemon, nothing pulled). The same inputs give the same bytes (file
//! times, layer history and creation dates fixed at the epoch), so the same digest: the pod
//! runner's cache of unpacked images keeps one entry for it however often it is built.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// Debian's busybox-static (`./dev.sh` installs it).
const BUSYBOX: &str = "/bin/busybox";
/// Every date in the image.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// What the image's config says.
#[derive(Clone, Debug)]
pub struct AppImage<'a> {
    /// `Entrypoint`.
    pub entrypoint: &'a [&'a str],
    /// `Cmd`.
    pub cmd: &'a [&'a str],
    /// `Env`, as `K=V`.
    pub env: &'a [&'a str],
}

impl Default for AppImage<'_> {
    /// A shell image: no entrypoint, `sh` as its command, `PATH=/bin`.
    fn default() -> Self {
        AppImage {
            entrypoint: &[],
            cmd: &["sh"],
            env: &["PATH=/bin"],
        }
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let what = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl AppImage<'_> {
    /// Builds the image in `dir` (a scratch directory): its archive, `dir/app.oci.tar`.
    pub fn build(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let busybox = Path::new(BUSYBOX);
        if !busybox.is_file() {
            bail!("{BUSYBOX} is missing: apt-get install busybox-static (./dev.sh does)");
        }
        let root = dir.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin)
            .with_context(|| format!("cannot create {}", bin.display()))?;
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
            .with_context(|| format!("cannot chmod {}", tmp.display()))?;
        std::fs::copy(busybox, bin.join("busybox")).context("cannot copy /bin/busybox")?;
        let list = Command::new(busybox)
            .arg("--list")
            .output()
            .context("cannot run busybox --list")?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet))
                    .with_context(|| format!("cannot link the applet {applet}"))?;
            }
        }
        run(Command::new("find")
            .arg(&root)
            .args(["-exec", "touch", "-h", "-d", "@0", "{}", "+"]))?;
        let layout = dir.join("layout");
        let image = format!("{}:app", layout.display());
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout))?;
        run(Command::new("umoci").args(["new", "--image", &image]))?;
        run(Command::new("umoci")
            .args(["insert", "--history.created", EPOCH, "--image", &image])
            .arg(&root)
            .arg("/"))?;
        let mut config = Command::new("umoci");
        config.args([
            "config",
            "--image",
            &image,
            "--created",
            EPOCH,
            "--history.created",
            EPOCH,
        ]);
        for e in self.entrypoint {
            config.args(["--config.entrypoint", e]);
        }
        for c in self.cmd {
            config.args(["--config.cmd", c]);
        }
        for e in self.env {
            config.args(["--config.env", e]);
        }
        run(&mut config)?;
        let policy = dir.join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .context("cannot write skopeo's policy")?;
        let archive = dir.join("app.oci.tar");
        run(Command::new("skopeo")
            .arg("--policy")
            .arg(&policy)
            .args(["copy", "--quiet"])
            .arg(format!("oci:{image}"))
            .arg(format!("oci-archive:{}", archive.display())))?;
        Ok(archive)
    }
}
