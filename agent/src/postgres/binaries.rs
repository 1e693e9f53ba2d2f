//! Which PostgreSQL builds are installed: one per major, found in the configured
//! directories (`postgres.bin_dirs`, `DATAMON_POSTGRES__BIN_DIRS`), then where packages put
//! them (Debian's `/usr/lib/postgresql/<major>/bin`, the image's
//! `/opt/datamon-postgres/<major>/bin`, a source build's `/usr/local/pgsql/bin`). The
//! version of each is what its `postgres --version` says.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Directories of per-major builds (`<dir>/<major>/bin`) looked in after the configured ones.
pub(crate) const DEFAULT_ROOTS: [&str; 2] = ["/usr/lib/postgresql", "/opt/datamon-postgres"];

/// A bin directory looked in last.
pub(crate) const DEFAULT_BIN: &str = "/usr/local/pgsql/bin";

/// How long `postgres --version` may take.
const VERSION_DEADLINE: Duration = Duration::from_secs(10);

/// One installed build of PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Binaries {
    /// Its major (9 for 9.6).
    pub major: u32,
    /// Its version, as `postgres --version` says it ("18.6").
    pub version: String,
    /// Its bin directory.
    pub bin: PathBuf,
}

impl Binaries {
    /// The path of one of its programs (which may not exist: see [`Binaries::has`]).
    pub(crate) fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Whether it has the program `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.tool(name).is_file()
    }

    /// Those of `names` it lacks.
    pub(crate) fn missing<'a>(&self, names: &[&'a str]) -> Vec<&'a str> {
        names.iter().copied().filter(|n| !self.has(n)).collect()
    }
}

impl std::fmt::Display for Binaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL {} ({})", self.version, self.bin.display())
    }
}

/// The installed builds, sorted by major, one per major.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Installed {
    builds: Vec<Binaries>,
}

impl Installed {
    /// Looks in each dir of `dirs` (a bin dir holding `postgres`, or a dir of per-major dirs
    /// `<d>/<major>/bin`), then the defaults: /usr/lib/postgresql/<major>/bin (Debian),
    /// /opt/datamon-postgres/<major>/bin, /usr/local/pgsql/bin. The version comes from
    /// `postgres --version`. One entry per major (the first found wins).
    pub(crate) async fn discover(dirs: &[PathBuf]) -> Installed {
        let mut candidates = Vec::new();
        for d in dirs {
            candidates.extend(bin_dirs_of(d));
        }
        for root in DEFAULT_ROOTS {
            candidates.extend(bin_dirs_of(Path::new(root)));
        }
        candidates.push(PathBuf::from(DEFAULT_BIN));
        let mut found = Vec::new();
        for bin in candidates {
            if let Some(b) = probe(&bin).await {
                found.push(b);
            }
        }
        Self::from_found(found)
    }

    /// The builds of `found` in order of preference: the first of each major, sorted.
    pub(crate) fn from_found(found: Vec<Binaries>) -> Installed {
        let mut builds: Vec<Binaries> = Vec::new();
        for b in found {
            if builds.iter().all(|k| k.major != b.major) {
                builds.push(b);
            }
        }
        builds.sort_by_key(|b| b.major);
        Installed { builds }
    }

    /// The newest major.
    pub(crate) fn newest(&self) -> Option<&Binaries> {
        self.builds.last()
    }

    /// The build of major `m`.
    pub(crate) fn major(&self, m: u32) -> Option<&Binaries> {
        self.builds.iter().find(|b| b.major == m)
    }

    /// Every build, sorted by major.
    // The brief's interface; nothing outside the tests lists the builds yet.
    #[allow(dead_code)]
    pub(crate) fn all(&self) -> &[Binaries] {
        &self.builds
    }

    /// The builds for a message: "12.22 (/opt/…/12/bin), 18.6 (…)", or "none".
    pub(crate) fn describe(&self) -> String {
        if self.builds.is_empty() {
            return "none".into();
        }
        self.builds
            .iter()
            .map(|b| format!("{} ({})", b.version, b.bin.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The bin directories `dir` stands for: itself when it holds `postgres`, else its
/// `<major>/bin` subdirectories by ascending major.
fn bin_dirs_of(dir: &Path) -> Vec<PathBuf> {
    if dir.join("postgres").is_file() {
        return vec![dir.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut majors: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let major = crate::postgres::control::parse_pg_version(name.to_str()?)?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").is_file())
        .collect();
    majors.sort();
    majors.into_iter().map(|(_, b)| b).collect()
}

/// The build in `bin`, if its `postgres --version` answers.
async fn probe(bin: &Path) -> Option<Binaries> {
    let postgres = bin.join("postgres");
    if !postgres.is_file() {
        return None;
    }
    let mut cmd = tokio::process::Command::new(&postgres);
    cmd.arg("--version")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(VERSION_DEADLINE, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => out,
        other => {
            tracing::warn!(postgres = %postgres.display(), result = ?other.map(|r| r.map(|o| o.status)), "skipping a PostgreSQL build whose `postgres --version` fails");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some((major, version)) = parse_version(&text) else {
        tracing::warn!(postgres = %postgres.display(), output = %text.trim(), "skipping a PostgreSQL build whose version cannot be read");
        return None;
    };
    Some(Binaries {
        major,
        version,
        bin: bin.to_path_buf(),
    })
}

/// The major and version of `postgres --version`'s output:
/// `postgres (PostgreSQL) 18.6` → (18, "18.6"); "9.6.24" → (9, "9.6.24");
/// `15.18 (Debian 15.18-0+deb12u1)` → (15, "15.18"); `18beta1` → (18, "18beta1").
pub(crate) fn parse_version(text: &str) -> Option<(u32, String)> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let rest = match line.find("(PostgreSQL)") {
        Some(i) => &line[i + "(PostgreSQL)".len()..],
        None => line,
    };
    let version = rest.split_whitespace().next()?;
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().ok().filter(|&m| m > 0)?;
    Some((major, version.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 18.6\n"),
            Some((18, "18.6".into()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 12.22"),
            Some((12, "12.22".into()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 9.6.24"),
            Some((9, "9.6.24".into()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some((15, "15.18".into()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 18beta1"),
            Some((18, "18beta1".into()))
        );
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("postgres (PostgreSQL) x"), None);
    }

    fn b(major: u32, bin: &str) -> Binaries {
        Binaries {
            major,
            version: format!("{major}.1"),
            bin: bin.into(),
        }
    }

    #[test]
    fn the_first_of_each_major_wins_sorted() {
        let i = Installed::from_found(vec![b(18, "/a"), b(12, "/b"), b(18, "/c")]);
        assert_eq!(i.all(), &[b(12, "/b"), b(18, "/a")]);
        assert_eq!(i.newest(), Some(&b(18, "/a")));
        assert_eq!(i.major(12), Some(&b(12, "/b")));
        assert_eq!(i.major(14), None);
        assert_eq!(i.describe(), "12.1 (/b), 18.1 (/a)");
        assert_eq!(Installed::default().describe(), "none");
        assert_eq!(Installed::default().newest(), None);
    }

    /// A fake build: a `postgres` script that prints `version`.
    fn fake(bin: &Path, version: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(bin).unwrap();
        let p = bin.join("postgres");
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn discovers_bin_dirs_and_per_major_dirs_first_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        fake(&t.join("single/bin"), "16.2");
        fake(&t.join("many/13/bin"), "13.9");
        fake(&t.join("many/16/bin"), "16.9");
        std::fs::create_dir_all(t.join("many/notes")).unwrap();
        let i = Installed::discover(&[t.join("single/bin"), t.join("many")]).await;
        assert_eq!(i.major(16).unwrap().version, "16.2");
        assert_eq!(i.major(13).unwrap().bin, t.join("many/13/bin"));
        assert!(i.all().windows(2).all(|w| w[0].major < w[1].major));
        let sixteen = i.major(16).unwrap();
        assert!(sixteen.has("postgres") && !sixteen.has("pg_upgrade"));
        assert_eq!(sixteen.missing(&["postgres", "psql"]), ["psql"]);
    }
}
