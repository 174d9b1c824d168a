//! [`EndpointRegistry`]: one [`EndpointState`] per endpoint address, shared by all pools.
//!
//! The registry is touched only when configuration changes (under a mutex); the request
//! path reads pool members that already hold `Arc`s to their states.

use crate::clock::Nanos;
use crate::endpoint::{EndpointSpec, EndpointState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

#[derive(Debug, Default)]
pub struct EndpointRegistry {
    endpoints: Mutex<HashMap<SocketAddr, Weak<EndpointState>>>,
}

impl EndpointRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The live state for `spec.addr`, created if no pool holds it yet; the spec's
    /// conditions (draining, weight, readiness time) are applied to it either way.
    pub fn resolve(&self, spec: &EndpointSpec, now: Nanos) -> Arc<EndpointState> {
        let mut map = self
            .endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = map.get(&spec.addr).and_then(Weak::upgrade) {
            existing.apply(spec, now);
            return existing;
        }
        let state = Arc::new(EndpointState::new(spec, now));
        map.insert(spec.addr, Arc::downgrade(&state));
        state
    }

    /// The live state of `addr`, if a pool holds it.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<EndpointState>> {
        self.endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&addr)
            .and_then(Weak::upgrade)
    }

    /// Forgets addresses no pool or guard holds any more. Called after each update.
    pub fn prune(&self) {
        let mut map = self
            .endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.retain(|_, weak| weak.strong_count() > 0);
    }

    /// Every endpoint still alive, sorted by address (for `/debug/endpoints`).
    pub fn snapshot(&self) -> Vec<Arc<EndpointState>> {
        let map = self
            .endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out: Vec<_> = map.values().filter_map(Weak::upgrade).collect();
        out.sort_by_key(|e| e.addr());
        out
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_address_same_state_until_unused() {
        let reg = EndpointRegistry::new();
        let spec = EndpointSpec::ready(SocketAddr::from(([127, 0, 0, 1], 9)));
        let a = reg.resolve(&spec, Nanos::ZERO);
        let b = reg.resolve(&spec, Nanos::ZERO);
        assert!(Arc::ptr_eq(&a, &b));
        let _g = a.start_request();
        drop(a);
        drop(b);
        // The guard still holds the state: it stays registered.
        reg.prune();
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.resolve(&spec, Nanos::ZERO).in_flight(), 1);
    }

    #[test]
    fn prune_forgets_unused() {
        let reg = EndpointRegistry::new();
        let spec = EndpointSpec::ready(SocketAddr::from(([127, 0, 0, 1], 9)));
        drop(reg.resolve(&spec, Nanos::ZERO));
        reg.prune();
        assert!(reg.is_empty());
    }
}
