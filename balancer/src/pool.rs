//! [`Pool`]: the endpoints of one backend (Service port) and the algorithm that picks
//! among them.
//!
//! Members are published with one atomic swap, so a pick never waits for an update and an
//! update never waits for picks. Updates are applied in place: an address present before
//! and after keeps its [`EndpointState`] (in-flight count and everything else).

use crate::endpoint::{EndpointSpec, EndpointState};
use crate::registry::EndpointRegistry;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How a pool chooses among its routable endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Rotation over the routable endpoints with one shared atomic counter. Endpoint
    /// weights are not applied yet (smooth weighted round robin comes with the balancer
    /// issue); every endpoint currently has weight 1.
    #[default]
    RoundRobin,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
        }
    }
}

/// Why a pick went where it did. Reaches access logs and metrics as [`PickReason::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PickReason {
    /// The algorithm's first choice among routable endpoints.
    Primary,
    /// A retry: chosen among endpoints not yet tried by this request.
    Retry,
    /// No routable endpoint exists; a draining (`serving && terminating`) one was used.
    DrainingFallback,
    /// Nothing could be picked.
    NoneAvailable,
}

impl PickReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PickReason::Primary => "primary",
            PickReason::Retry => "retry",
            PickReason::DrainingFallback => "draining_fallback",
            PickReason::NoneAvailable => "none_available",
        }
    }
}

/// The outcome of [`Pool::pick`].
#[derive(Debug)]
pub struct Pick {
    pub endpoint: Option<Arc<EndpointState>>,
    pub reason: PickReason,
}

#[derive(Debug, Default)]
struct Members {
    /// Endpoints that take new requests.
    routable: Vec<Arc<EndpointState>>,
    /// `serving && terminating`: only used when `routable` is empty.
    draining: Vec<Arc<EndpointState>>,
}

#[derive(Debug)]
pub struct Pool {
    algorithm: Algorithm,
    members: ArcSwap<Members>,
    cursor: AtomicUsize,
}

impl Pool {
    pub fn new(algorithm: Algorithm) -> Self {
        Pool {
            algorithm,
            members: ArcSwap::from_pointee(Members::default()),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Replaces the member set. Endpoints neither routable nor draining are dropped from
    /// the pool (their in-flight requests keep their guards and finish normally).
    pub fn update(&self, specs: &[EndpointSpec], registry: &EndpointRegistry) {
        let mut members = Members::default();
        for spec in specs {
            if spec.is_routable() {
                members.routable.push(registry.resolve(spec));
            } else if spec.is_draining() {
                members.draining.push(registry.resolve(spec));
            }
        }
        members.routable.sort_by_key(|e| e.addr());
        members.draining.sort_by_key(|e| e.addr());
        self.members.store(Arc::new(members));
    }

    /// (routable, draining) member counts.
    pub fn counts(&self) -> (usize, usize) {
        let m = self.members.load();
        (m.routable.len(), m.draining.len())
    }

    /// Every member, routable first.
    pub fn endpoints(&self) -> Vec<Arc<EndpointState>> {
        let m = self.members.load();
        m.routable
            .iter()
            .chain(m.draining.iter())
            .cloned()
            .collect()
    }

    /// Chooses an endpoint for a request that has already tried `tried` (empty on the
    /// first attempt). Never returns an endpoint in `tried`.
    pub fn pick(&self, tried: &[SocketAddr]) -> Pick {
        let members = self.members.load();
        let (candidates, reason) = if !members.routable.is_empty() {
            let reason = if tried.is_empty() {
                PickReason::Primary
            } else {
                PickReason::Retry
            };
            (&members.routable, reason)
        } else {
            (&members.draining, PickReason::DrainingFallback)
        };
        match self.algorithm {
            Algorithm::RoundRobin => self.pick_round_robin(candidates, tried, reason),
        }
    }

    fn pick_round_robin(
        &self,
        candidates: &[Arc<EndpointState>],
        tried: &[SocketAddr],
        reason: PickReason,
    ) -> Pick {
        let n = candidates.len();
        if n > 0 {
            let start = self.cursor.fetch_add(1, Ordering::Relaxed);
            for offset in 0..n {
                let endpoint = &candidates[(start + offset) % n];
                if !tried.contains(&endpoint.addr()) {
                    return Pick {
                        endpoint: Some(Arc::clone(endpoint)),
                        reason,
                    };
                }
            }
        }
        Pick {
            endpoint: None,
            reason: PickReason::NoneAvailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pool_of(specs: &[EndpointSpec]) -> (Pool, EndpointRegistry) {
        let reg = EndpointRegistry::new();
        let pool = Pool::new(Algorithm::RoundRobin);
        pool.update(specs, &reg);
        (pool, reg)
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let specs: Vec<_> = (1..=3).map(|p| EndpointSpec::ready(addr(p))).collect();
        let (pool, _reg) = pool_of(&specs);
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for _ in 0..300 {
            let pick = pool.pick(&[]);
            assert_eq!(pick.reason, PickReason::Primary);
            let ep = pick.endpoint.expect("endpoint");
            *counts.entry(ep.addr()).or_default() += 1;
        }
        // Exact rotation: every endpoint gets exactly a third.
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    }

    #[test]
    fn retry_never_repeats_an_endpoint() {
        let specs: Vec<_> = (1..=3).map(|p| EndpointSpec::ready(addr(p))).collect();
        let (pool, _reg) = pool_of(&specs);
        let mut tried = Vec::new();
        for _ in 0..3 {
            let pick = pool.pick(&tried);
            let ep = pick.endpoint.expect("endpoint");
            assert!(!tried.contains(&ep.addr()));
            tried.push(ep.addr());
        }
        let last = pool.pick(&tried);
        assert!(last.endpoint.is_none());
        assert_eq!(last.reason, PickReason::NoneAvailable);
    }

    #[test]
    fn draining_only_when_nothing_routable() {
        let mut draining = EndpointSpec::ready(addr(2));
        draining.ready = false;
        draining.terminating = true;
        let (pool, reg) = pool_of(&[EndpointSpec::ready(addr(1)), draining.clone()]);
        for _ in 0..10 {
            let pick = pool.pick(&[]);
            assert_eq!(pick.endpoint.expect("endpoint").addr(), addr(1));
        }
        pool.update(std::slice::from_ref(&draining), &reg);
        let pick = pool.pick(&[]);
        assert_eq!(pick.reason, PickReason::DrainingFallback);
        assert_eq!(pick.endpoint.expect("endpoint").addr(), addr(2));
    }

    #[test]
    fn update_in_place_keeps_in_flight() {
        let (pool, reg) = pool_of(&[EndpointSpec::ready(addr(1))]);
        let guard = pool.pick(&[]).endpoint.expect("endpoint").start_request();
        pool.update(
            &[EndpointSpec::ready(addr(1)), EndpointSpec::ready(addr(2))],
            &reg,
        );
        let survivor = pool
            .endpoints()
            .into_iter()
            .find(|e| e.addr() == addr(1))
            .expect("survivor");
        assert_eq!(survivor.in_flight(), 1);
        drop(survivor);
        // Removal: the guard keeps the removed endpoint's state valid.
        pool.update(&[EndpointSpec::ready(addr(2))], &reg);
        assert_eq!(guard.endpoint().in_flight(), 1);
        drop(guard);
        reg.prune();
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn empty_pool_picks_nothing() {
        let (pool, _reg) = pool_of(&[]);
        let pick = pool.pick(&[]);
        assert!(pick.endpoint.is_none());
        assert_eq!(pick.reason, PickReason::NoneAvailable);
    }
}
