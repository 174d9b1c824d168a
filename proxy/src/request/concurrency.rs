//! Per-route concurrency limits (`weir.dev/max-concurrency`): how many requests a route may
//! have in flight before weir answers 503 at once instead of queueing more on its upstreams.
//!
//! Owns the counter and its permit. A limit survives reloads (it is kept by route in
//! [`crate::routes::routing::LiveRouting`]), so requests in flight across a reload still count.
//! Must not: pick endpoints or answer requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct ConcurrencyLimit {
    max: AtomicU64,
    in_flight: AtomicU64,
}

impl ConcurrencyLimit {
    pub fn new(max: u32) -> Self {
        let limit = ConcurrencyLimit::default();
        limit.set_max(max);
        limit
    }

    /// A new maximum (from a reload); requests already in flight are not affected.
    pub fn set_max(&self, max: u32) {
        self.max.store(u64::from(max), Ordering::Relaxed);
    }

    /// A slot, or `None` when the route is full.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConcurrencyPermit> {
        let max = self.max.load(Ordering::Relaxed);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConcurrencyPermit(Arc::clone(self)))
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One request's slot; released on drop, however the request ends.
#[derive(Debug)]
pub struct ConcurrencyPermit(Arc<ConcurrencyLimit>);

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_limit_and_return_on_drop() {
        let limit = Arc::new(ConcurrencyLimit::new(2));
        let a = limit.try_acquire();
        let b = limit.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(limit.try_acquire().is_none());
        drop(a);
        assert_eq!(limit.in_flight(), 1);
        let c = limit.try_acquire();
        assert!(c.is_some());
        limit.set_max(1);
        assert!(limit.try_acquire().is_none(), "2 in flight, new max 1");
        drop((b, c));
        assert_eq!(limit.in_flight(), 0);
    }
}
