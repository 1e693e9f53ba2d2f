//! Recycled leaf buffers, for uploads and for the mount alike. A transfer or a mount that
//! moves more leaves than it keeps would otherwise allocate (and fault in) a fresh leaf
//! each time and free it later on another thread, where glibc's per-thread arenas keep
//! the freed leaves as holes they never give back (a mount was measured about 90 MiB
//! above its cache). Leaves are instead filled into buffers of one leaf each that go back
//! to this pool when their last [`Bytes`] is dropped, so the allocator sees no churn of
//! leaf-sized blocks.

use std::sync::{Arc, Mutex};

use crate::sync::lock;
use crate::tuning::MemoryBudget;

use bytes::Bytes;

/// Buffers of `buffer_bytes` each; at most `keep` idle ones are kept for reuse.
#[derive(Debug)]
pub struct BufferPool {
    buffer_bytes: usize,
    keep: usize,
    idle: Mutex<Vec<Vec<u8>>>,
}

/// A pooled buffer owned by a [`Bytes`]; back to the pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() != self.pool.buffer_bytes {
            return;
        }
        let mut idle = lock(&self.pool.idle);
        if idle.len() < self.pool.keep {
            idle.push(buf);
        }
    }
}

impl BufferPool {
    /// A pool of buffers of `buffer_bytes`, keeping at most `keep` idle ones.
    pub fn new(buffer_bytes: usize, keep: usize) -> Arc<Self> {
        Arc::new(Self {
            buffer_bytes,
            keep,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A pool of leaf buffers for a transfer under `budget`: it keeps as many idle ones as
    /// the budget lets exist at once, since each leaf in flight holds one.
    pub fn for_budget(leaf_bytes: usize, budget: &MemoryBudget) -> Arc<Self> {
        Self::new(leaf_bytes, budget.bytes() / leaf_bytes.max(1))
    }

    /// Idle buffers held.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        lock(&self.idle).len()
    }

    /// `data` in a pooled buffer (a plain copy if it does not fit in one).
    pub fn copy(self: &Arc<Self>, data: &[u8]) -> Bytes {
        if data.len() > self.buffer_bytes {
            return Bytes::copy_from_slice(data);
        }
        let filled: Result<Bytes, std::convert::Infallible> = self.fill(|buf| {
            buf.extend_from_slice(data);
            Ok(())
        });
        filled.unwrap_or_else(|never| match never {})
    }

    /// A pooled buffer, emptied, filled by `write` (which should not grow it past one
    /// buffer: a grown buffer is not taken back).
    pub fn fill<E>(
        self: &Arc<Self>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Bytes, E> {
        let recycled = lock(&self.idle).pop();
        let mut buf = recycled.unwrap_or_else(|| Vec::with_capacity(self.buffer_bytes));
        buf.clear();
        write(&mut buf)?;
        Ok(Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_their_last_bytes_is_dropped() {
        let pool = BufferPool::new(8, 2);
        let a = pool.copy(b"abc");
        let a2 = a.slice(1..);
        assert_eq!(&a[..], b"abc");
        drop(a);
        assert_eq!(pool.idle(), 0, "a slice still holds the buffer");
        drop(a2);
        assert_eq!(pool.idle(), 1);
        let b = pool.copy(b"12345678");
        assert_eq!(pool.idle(), 0, "the idle buffer was reused");
        assert_eq!(&b[..], b"12345678");
        let (c, d) = (pool.copy(b"x"), pool.copy(b"y"));
        drop((b, c, d));
        assert_eq!(pool.idle(), 2, "at most `keep` idle buffers are kept");
    }

    #[test]
    fn data_larger_than_a_buffer_is_copied_apart() {
        let pool = BufferPool::new(4, 2);
        let big = pool.copy(b"too long");
        assert_eq!(&big[..], b"too long");
        drop(big);
        assert_eq!(pool.idle(), 0);
    }
}
