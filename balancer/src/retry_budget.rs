//! A retry budget: how many retries may be in flight at once against one target (20 % of its
//! active requests, at least 3), so that retries cannot multiply the load on a struggling
//! backend. The proxy keeps one per route, weir-client one per client.
//!
//! Must not: decide whether a request may be retried at all (the callers know its method,
//! its body and the error).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Active requests and retries in flight.
#[derive(Debug, Default)]
pub struct RetryBudget {
    active: AtomicI64,
    retrying: AtomicI64,
}

/// Counts one request (or one retry) until dropped.
#[derive(Debug)]
pub struct BudgetGuard {
    budget: Arc<RetryBudget>,
    retry: bool,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        let counter = if self.retry {
            &self.budget.retrying
        } else {
            &self.budget.active
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryBudget {
    /// Counts an active request.
    pub fn start(self: &Arc<Self>) -> BudgetGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        BudgetGuard {
            budget: Arc::clone(self),
            retry: false,
        }
    }

    /// A retry slot, if the budget has one.
    pub fn try_retry(self: &Arc<Self>) -> Option<BudgetGuard> {
        let allowed = (self.active.load(Ordering::Relaxed) / 5).max(3);
        let now = self.retrying.fetch_add(1, Ordering::Relaxed) + 1;
        if now > allowed {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(BudgetGuard {
            budget: Arc::clone(self),
            retry: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_percent_of_active_requests_at_least_three() {
        let budget = Arc::new(RetryBudget::default());
        let active: Vec<_> = (0..5).map(|_| budget.start()).collect();
        let retries: Vec<_> = (0..5).filter_map(|_| budget.try_retry()).collect();
        assert_eq!(retries.len(), 3, "minimum 3");
        drop(retries);
        let more: Vec<_> = (0..45).map(|_| budget.start()).collect();
        let retries: Vec<_> = (0..20).filter_map(|_| budget.try_retry()).collect();
        assert_eq!(retries.len(), 10, "20 % of 50");
        drop((active, more, retries));
        assert_eq!(budget.active.load(Ordering::Relaxed), 0);
        assert_eq!(budget.retrying.load(Ordering::Relaxed), 0);
    }
}
