//! Locks that outlive a panic: a thread that panicked while holding one of our mutexes
//! leaves data that is still consistent (every critical section only swaps or pushes
//! whole values), so the next holder takes it instead of failing in turn.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, recovering it if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
