//! Where downloaded files may go: entry names are checked so that nothing escapes the
//! destination, and no symlink planted in the destination redirects a write.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Checks a bundle entry name and returns its path relative to the destination.
pub fn entry_path(name: &str) -> Result<PathBuf> {
    let unsafe_entry = |reason: &str| Error::UnsafeEntry {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(unsafe_entry("the name is empty"));
    }
    if name.starts_with('/') {
        return Err(unsafe_entry("it is an absolute path"));
    }
    if name.contains('\0') {
        return Err(unsafe_entry("it contains a NUL byte"));
    }
    let mut rel = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" => return Err(unsafe_entry("it has an empty path component")),
            "." | ".." => {
                return Err(unsafe_entry(
                    "it has a '.' or '..' component that could escape the destination",
                ))
            }
            p => rel.push(p),
        }
    }
    Ok(rel)
}

/// A download destination directory.
#[derive(Debug)]
pub struct Destination {
    root: PathBuf,
    checked: Mutex<HashSet<PathBuf>>,
}

impl Destination {
    /// Prepares `root`: created if missing; must be empty unless `force`.
    pub fn prepare(root: &Path, force: bool) -> Result<Self> {
        match std::fs::symlink_metadata(root) {
            Ok(m) if m.is_dir() => {
                let mut entries =
                    std::fs::read_dir(root).map_err(Error::io("read directory", root))?;
                if !force && entries.next().is_some() {
                    return Err(Error::DestinationNotEmpty {
                        path: root.to_path_buf(),
                    });
                }
            }
            Ok(_) => {
                return Err(Error::Io {
                    op: "download into",
                    path: root.to_path_buf(),
                    source: std::io::Error::other("it exists and is not a directory"),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(root).map_err(Error::io("create directory", root))?;
            }
            Err(e) => return Err(Error::io("inspect", root)(e)),
        }
        Ok(Self {
            root: root.to_path_buf(),
            checked: Mutex::new(HashSet::new()),
        })
    }

    /// The destination root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the parent directories of entry `name` (creating them, refusing symlinks and
    /// non-directories on the way) and returns the entry's full path.
    pub fn place(&self, name: &str) -> Result<PathBuf> {
        let rel = entry_path(name)?;
        let mut dir = self.root.clone();
        if let Some(parent) = rel.parent() {
            for part in parent.components() {
                dir.push(part);
                if self.is_checked(&dir) {
                    continue;
                }
                match std::fs::symlink_metadata(&dir) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(Error::UnsafeEntry {
                            name: name.to_string(),
                            reason: format!(
                                "{} is a symlink in the destination and would redirect the write",
                                dir.display()
                            ),
                        })
                    }
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(Error::Io {
                            op: "create directory",
                            path: dir,
                            source: std::io::Error::other("a file of that name is in the way"),
                        })
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        match std::fs::create_dir(&dir) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                                // Another task made it; check it once more on the next pass.
                                if !std::fs::symlink_metadata(&dir)
                                    .map(|m| m.is_dir())
                                    .unwrap_or(false)
                                {
                                    return Err(Error::io("create directory", &dir)(e));
                                }
                            }
                            Err(e) => return Err(Error::io("create directory", &dir)(e)),
                        }
                    }
                    Err(e) => return Err(Error::io("inspect", &dir)(e)),
                }
                self.mark_checked(&dir);
            }
        }
        let target = self.root.join(&rel);
        if let Ok(m) = std::fs::symlink_metadata(&target) {
            if m.is_dir() {
                return Err(Error::Io {
                    op: "download to",
                    path: target,
                    source: std::io::Error::other("a directory of that name is in the way"),
                });
            }
        }
        Ok(target)
    }

    fn is_checked(&self, dir: &Path) -> bool {
        self.checked
            .lock()
            .map(|s| s.contains(dir))
            .unwrap_or(false)
    }

    fn mark_checked(&self, dir: &Path) {
        if let Ok(mut s) = self.checked.lock() {
            s.insert(dir.to_path_buf());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert_eq!(entry_path("a/b.txt").unwrap(), PathBuf::from("a/b.txt"));
        for bad in ["../x", "/etc/x", "a/../../x", "a//b", "./a", "", "a/.."] {
            let e = entry_path(bad).unwrap_err().to_string();
            assert!(e.contains("is unsafe"), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_symlinked_parent_and_non_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("d");
        std::fs::create_dir(&dest).unwrap();
        std::os::unix::fs::symlink(outside.path(), dest.join("link")).unwrap();
        let e = Destination::prepare(&dest, false).unwrap_err();
        assert!(matches!(e, Error::DestinationNotEmpty { .. }));
        let d = Destination::prepare(&dest, true).unwrap();
        let e = d.place("link/x").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert_eq!(d.place("sub/dir/f").unwrap(), dest.join("sub/dir/f"));
        assert!(dest.join("sub/dir").is_dir());
    }
}
