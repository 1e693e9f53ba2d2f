//! How much work is in flight at once: bounded by a memory budget, not by luck.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Limits shared by every transfer of one command.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Files in flight at once.
    pub files: usize,
    /// Bytes of leaf buffers in flight at once.
    pub memory_budget: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            files: 64,
            memory_budget: 64 * 1024 * 1024,
        }
    }
}

/// A byte budget: every leaf buffer holds a permit for its bytes while it exists.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    semaphore: Arc<Semaphore>,
    limit: u32,
}

impl MemoryBudget {
    /// A budget of `bytes` (at least 1 MiB, at most 4 GiB - 1).
    pub fn new(bytes: usize) -> Self {
        let limit = u32::try_from(bytes.max(1 << 20)).unwrap_or(u32::MAX);
        Self {
            semaphore: Arc::new(Semaphore::new(limit as usize)),
            limit,
        }
    }

    /// The budget in bytes.
    pub fn bytes(&self) -> usize {
        self.limit as usize
    }

    /// Waits until `bytes` fit in the budget. A request larger than the whole budget takes
    /// the whole budget, so it can never wait forever.
    pub async fn reserve(&self, bytes: u64) -> Result<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.limit);
        self.semaphore
            .clone()
            .acquire_many_owned(n)
            .await
            // Invariant: the semaphore is never closed.
            .map_err(|e| Error::Internal(format!("memory budget: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_larger_than_the_budget_takes_all_of_it_instead_of_waiting_forever() {
        let budget = MemoryBudget::new(1 << 20);
        let permit = budget.reserve(10 << 20).await.unwrap();
        assert_eq!(permit.num_permits(), 1 << 20);
    }
}
