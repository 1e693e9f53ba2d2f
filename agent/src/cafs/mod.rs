//! Content-addressed file storage, exactly as datamon lays it out in its blob bucket.
//!
//! A file is cut into leaves of a bundle's leaf size; every leaf is stored under its
//! BLAKE2b tree-mode key, and the file itself under its root key, as a *root object* that
//! lists the leaf keys followed by the root key. [`hasher`] computes keys (pure),
//! [`root`] encodes and checks root objects (pure), [`writer`] and [`reader`] move them
//! to and from an object store, verifying every leaf read and skipping every leaf that is
//! already stored.

pub mod hasher;
pub mod key;
pub mod leaf;
pub mod reader;
pub mod root;
pub mod writer;

pub use key::Key;
pub use leaf::{LeafLayout, LeafSize};
