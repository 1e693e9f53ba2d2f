//! A bounded in-memory cache of verified leaves, least recently used out first. Only leaves
//! whose hash was checked are ever inserted, so a hit never returns unverified bytes.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::cafs::Key;

/// Verified leaves by key, at most `limit` bytes in all (a single leaf larger than the
/// limit is not kept).
#[derive(Debug)]
pub struct LeafCache {
    limit: usize,
    used: usize,
    clock: u64,
    leaves: HashMap<Key, (Bytes, u64)>,
    order: BTreeMap<u64, Key>,
}

impl LeafCache {
    /// An empty cache of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            clock: 0,
            leaves: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// Bytes held (for tests: the cache keeps its own bound).
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used
    }

    /// Whether the leaf `key` is held (without marking it used).
    pub fn contains(&self, key: &Key) -> bool {
        self.leaves.contains_key(key)
    }

    /// The leaf `key`, marked as just used.
    pub fn get(&mut self, key: &Key) -> Option<Bytes> {
        self.clock += 1;
        let clock = self.clock;
        let (bytes, stamp) = self.leaves.get_mut(key)?;
        self.order.remove(stamp);
        *stamp = clock;
        self.order.insert(clock, *key);
        Some(bytes.clone())
    }

    /// Keeps the verified leaf `key`, evicting the least recently used leaves to fit.
    pub fn insert(&mut self, key: Key, bytes: Bytes) {
        if bytes.len() > self.limit {
            return;
        }
        if let Some((old, stamp)) = self.leaves.remove(&key) {
            self.order.remove(&stamp);
            self.used -= old.len();
        }
        while self.used + bytes.len() > self.limit {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.leaves.remove(&oldest) {
                self.used -= old.len();
            }
        }
        self.clock += 1;
        self.used += bytes.len();
        self.order.insert(self.clock, key);
        self.leaves.insert(key, (bytes, self.clock));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        format!("{n:02x}").repeat(64).parse().unwrap()
    }

    #[test]
    fn least_recently_used_goes_first_and_the_limit_holds() {
        let mut c = LeafCache::new(10);
        c.insert(key(1), Bytes::from_static(b"aaaa"));
        c.insert(key(2), Bytes::from_static(b"bbbb"));
        assert!(c.contains(&key(1)) && !c.contains(&key(3)));
        assert_eq!(c.get(&key(1)).unwrap(), &b"aaaa"[..]); // 1 is now the most recent
        c.insert(key(3), Bytes::from_static(b"cccc")); // evicts 2
        assert!(c.get(&key(2)).is_none());
        assert!(c.get(&key(1)).is_some());
        assert!(c.get(&key(3)).is_some());
        assert_eq!(c.used(), 8);
        c.insert(key(4), Bytes::from_static(b"0123456789")); // evicts everything
        assert_eq!(c.used(), 10);
        assert!(c.get(&key(1)).is_none() && c.get(&key(3)).is_none());
        c.insert(key(5), Bytes::from_static(b"too large, not kept"));
        assert!(c.get(&key(5)).is_none());
        assert!(c.get(&key(4)).is_some());
    }

    #[test]
    fn reinserting_a_key_does_not_count_it_twice() {
        let mut c = LeafCache::new(10);
        c.insert(key(1), Bytes::from_static(b"aaaa"));
        c.insert(key(1), Bytes::from_static(b"aaaa"));
        assert_eq!(c.used(), 4);
        assert_eq!(c.order.len(), 1);
    }
}
