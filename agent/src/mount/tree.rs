//! The directory tree of a mounted bundle: inodes built from the bundle's entries (pure,
//! no I/O). Inode 1 is the root; every other node gets the next number in build order.

use std::collections::BTreeMap;

use crate::destination::entry_path;
use crate::error::{Error, Result};
use crate::model::bundle::BundleEntry;
use crate::model::Timestamp;

/// Inode number of the root directory (FUSE's convention).
pub const ROOT: u64 = 1;

/// A file of the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileNode {
    /// The entry name, for messages and blob reads.
    pub name: String,
    /// Hex root key.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time recorded in the bundle, if any.
    pub mtime: Option<Timestamp>,
}

/// What an inode is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory: child name → inode.
    Dir(BTreeMap<String, u64>),
    /// A regular file.
    File(FileNode),
}

/// One inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Inode of the parent directory (the root is its own parent).
    pub parent: u64,
    /// What it is.
    pub kind: NodeKind,
}

/// Every inode of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Builds the tree of `entries`: names are checked with [`entry_path`], split on '/',
    /// and intermediate directories created. A name used twice, or both as a file and as
    /// a directory, is refused.
    pub fn build(entries: Vec<BundleEntry>) -> Result<Self> {
        let mut tree = Tree {
            nodes: vec![Node {
                parent: ROOT,
                kind: NodeKind::Dir(BTreeMap::new()),
            }],
        };
        let conflict = |name: &str, reason: &str| Error::UnsafeEntry {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        for e in entries {
            entry_path(&e.name)?;
            let parts: Vec<&str> = e.name.split('/').collect();
            let (file_name, dirs) = match parts.split_last() {
                Some(x) => x,
                None => return Err(conflict(&e.name, "the name is empty")),
            };
            let mut dir = ROOT;
            for part in dirs {
                dir = match tree.child(dir, part) {
                    Some(ino) if tree.is_dir(ino) => ino,
                    Some(_) => {
                        return Err(conflict(
                            &e.name,
                            "a parent of it is also a file of the bundle",
                        ))
                    }
                    None => tree.add(
                        dir,
                        part,
                        Node {
                            parent: dir,
                            kind: NodeKind::Dir(BTreeMap::new()),
                        },
                    ),
                };
            }
            if tree.child(dir, file_name).is_some() {
                return Err(conflict(
                    &e.name,
                    "it appears twice in the bundle (or is also a directory)",
                ));
            }
            let node = Node {
                parent: dir,
                kind: NodeKind::File(FileNode {
                    name: e.name.clone(),
                    hash: e.hash,
                    size: e.size,
                    mtime: e.timestamp,
                }),
            };
            tree.add(dir, file_name, node);
        }
        Ok(tree)
    }

    /// Adds `node` as `name` in directory `dir` and returns its inode.
    fn add(&mut self, dir: u64, name: &str, node: Node) -> u64 {
        self.nodes.push(node);
        let ino = self.nodes.len() as u64;
        if let Some(Node {
            kind: NodeKind::Dir(children),
            ..
        }) = self.nodes.get_mut(index(dir))
        {
            children.insert(name.to_string(), ino);
        }
        ino
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.get(ino),
            Some(Node {
                kind: NodeKind::Dir(_),
                ..
            })
        )
    }

    /// The inode `ino`, if it exists.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(index(ino))
    }

    /// The inode of `name` in directory `dir`.
    pub fn child(&self, dir: u64, name: &str) -> Option<u64> {
        match &self.get(dir)?.kind {
            NodeKind::Dir(children) => children.get(name).copied(),
            NodeKind::File(_) => None,
        }
    }

    /// Number of inodes (directories and files, root included).
    pub fn len(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// Total bytes of the files.
    pub fn bytes(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match &n.kind {
                NodeKind::File(f) => f.size,
                NodeKind::Dir(_) => 0,
            })
            .sum()
    }
}

/// Position of inode `ino` in the node table (inode 0 does not exist).
fn index(ino: u64) -> usize {
    usize::try_from(ino.wrapping_sub(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64) -> BundleEntry {
        BundleEntry {
            hash: format!("{size:0128x}"),
            name: name.to_string(),
            mode: 0,
            size,
            timestamp: None,
        }
    }

    fn file(t: &Tree, ino: u64) -> &FileNode {
        match &t.get(ino).unwrap().kind {
            NodeKind::File(f) => f,
            NodeKind::Dir(_) => panic!("{ino} is a directory"),
        }
    }

    #[test]
    fn nested_names_make_intermediate_directories_once() {
        let t = Tree::build(vec![
            entry("a/b/c.txt", 3),
            entry("a/b/d.txt", 4),
            entry("a/e", 5),
            entry("top", 0),
        ])
        .unwrap();
        // root, a, b, c.txt, d.txt, e, top
        assert_eq!(t.len(), 7);
        let a = t.child(ROOT, "a").unwrap();
        let b = t.child(a, "b").unwrap();
        assert_eq!(t.get(b).unwrap().parent, a);
        assert_eq!(t.get(a).unwrap().parent, ROOT);
        let c = t.child(b, "c.txt").unwrap();
        assert_eq!(file(&t, c).name, "a/b/c.txt");
        assert_eq!(file(&t, c).size, 3);
        assert_eq!(file(&t, t.child(a, "e").unwrap()).size, 5);
        assert_eq!(file(&t, t.child(ROOT, "top").unwrap()).size, 0);
        assert_eq!(t.bytes(), 12);
        assert_eq!(t.child(ROOT, "missing"), None);
        assert_eq!(t.child(c, "x"), None, "a file has no children");
        assert!(t.get(0).is_none());
        assert!(t.get(8).is_none());
    }

    #[test]
    fn an_empty_bundle_is_an_empty_root() {
        let t = Tree::build(vec![]).unwrap();
        assert_eq!(t.len(), 1);
        assert!(matches!(&t.get(ROOT).unwrap().kind, NodeKind::Dir(c) if c.is_empty()));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in ["/etc/passwd", "a/../../x", "a//b", "", "./a", "a/"] {
            let err = Tree::build(vec![entry(bad, 1)]).unwrap_err();
            assert!(matches!(err, Error::UnsafeEntry { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn duplicates_and_file_directory_clashes_are_refused() {
        for entries in [
            vec![entry("a", 1), entry("a", 2)],
            vec![entry("a", 1), entry("a/b", 2)],
            vec![entry("a/b", 1), entry("a", 2)],
        ] {
            let err = Tree::build(entries).unwrap_err();
            assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
        }
    }
}
