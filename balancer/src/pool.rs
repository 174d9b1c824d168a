//! [`Pool`]: the endpoints of one backend (Service port) and the algorithm that picks
//! among them.
//!
//! Members are published with one atomic swap, so a pick never waits for an update and an
//! update never waits for picks. Updates are applied in place: an address present before
//! and after keeps its [`EndpointState`] (in-flight count and everything else).
//!
//! Randomness comes from the caller (`pick(.., rng)`), so every algorithm is deterministic
//! under a seeded RNG in tests and the simulator; the proxy passes a thread-local RNG.

use crate::algorithms::{least_loaded, power_of_two, random_weighted, SmoothWeights};
use crate::endpoint::{EndpointSpec, EndpointState};
use crate::registry::EndpointRegistry;
use arc_swap::ArcSwap;
use rand::Rng;
use serde::Serialize;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How a pool chooses among its routable endpoints (annotation `weir.dev/load-balancer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Power of two choices: two distinct random endpoints, the one with fewer in-flight
    /// requests per unit of weight wins.
    #[default]
    LeastRequest,
    /// Full scan for the fewest in-flight requests per unit of weight; ties rotate.
    LeastConnections,
    /// Smooth weighted round robin (nginx's).
    RoundRobin,
    /// Weighted random.
    Random,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::LeastRequest => "least-request",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Random => "random",
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            Algorithm::LeastRequest,
            Algorithm::LeastConnections,
            Algorithm::RoundRobin,
            Algorithm::Random,
        ]
        .into_iter()
        .find(|a| a.name() == s)
        .ok_or_else(|| {
            format!("{s:?} is not one of least-request, least-connections, round-robin, random")
        })
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

impl Pick {
    fn none() -> Self {
        Pick {
            endpoint: None,
            reason: PickReason::NoneAvailable,
        }
    }
}

#[derive(Debug, Default)]
struct Members {
    /// Endpoints that take new requests.
    routable: Vec<Arc<EndpointState>>,
    /// `serving && terminating`: only used when `routable` is empty.
    draining: Vec<Arc<EndpointState>>,
    /// Smooth round-robin state over `routable`; new members start a new cycle.
    smooth: SmoothWeights,
}

#[derive(Debug)]
pub struct Pool {
    algorithm: Algorithm,
    members: ArcSwap<Members>,
    /// Rotates ties (least-connections) and retries (round-robin).
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
        let mut routable = Vec::new();
        let mut draining = Vec::new();
        for spec in specs {
            if spec.is_routable() {
                routable.push(registry.resolve(spec));
            } else if spec.is_draining() {
                draining.push(registry.resolve(spec));
            }
        }
        routable.sort_by_key(|e| e.addr());
        draining.sort_by_key(|e| e.addr());
        let smooth = SmoothWeights::new(routable.len());
        self.members.store(Arc::new(Members {
            routable,
            draining,
            smooth,
        }));
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
    pub fn pick<R: Rng + ?Sized>(&self, tried: &[SocketAddr], rng: &mut R) -> Pick {
        let members = self.members.load();
        if members.routable.is_empty() {
            return self.pick_among(&members.draining, tried, PickReason::DrainingFallback, rng);
        }
        if tried.is_empty() {
            let endpoint = match self.algorithm {
                Algorithm::RoundRobin => members.smooth.next(&members.routable),
                _ => self.choose(&members.routable, rng),
            };
            return Pick {
                endpoint: endpoint.cloned(),
                reason: PickReason::Primary,
            };
        }
        self.pick_among(&members.routable, tried, PickReason::Retry, rng)
    }

    /// Picks among `candidates` less `tried` (a retry or the draining fallback: rare, so
    /// the filtered copy is affordable). Round robin rotates here instead of keeping a
    /// second smooth-weight cycle.
    fn pick_among<R: Rng + ?Sized>(
        &self,
        candidates: &[Arc<EndpointState>],
        tried: &[SocketAddr],
        reason: PickReason,
        rng: &mut R,
    ) -> Pick {
        let eligible: Vec<Arc<EndpointState>> = candidates
            .iter()
            .filter(|e| !tried.contains(&e.addr()))
            .cloned()
            .collect();
        let endpoint = match self.algorithm {
            Algorithm::RoundRobin => {
                let n = eligible.len();
                (n > 0).then(|| &eligible[self.cursor.fetch_add(1, Ordering::Relaxed) % n])
            }
            _ => self.choose(&eligible, rng),
        };
        match endpoint {
            Some(e) => Pick {
                endpoint: Some(Arc::clone(e)),
                reason,
            },
            None => Pick::none(),
        }
    }

    fn choose<'a, R: Rng + ?Sized>(
        &self,
        candidates: &'a [Arc<EndpointState>],
        rng: &mut R,
    ) -> Option<&'a Arc<EndpointState>> {
        match self.algorithm {
            Algorithm::LeastRequest => power_of_two(candidates, rng),
            Algorithm::LeastConnections => {
                least_loaded(candidates, self.cursor.fetch_add(1, Ordering::Relaxed))
            }
            Algorithm::Random => random_weighted(candidates, rng),
            Algorithm::RoundRobin => {
                let n = candidates.len();
                (n > 0).then(|| &candidates[self.cursor.fetch_add(1, Ordering::Relaxed) % n])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::collections::HashMap;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pool_of(algorithm: Algorithm, specs: &[EndpointSpec]) -> (Pool, EndpointRegistry) {
        let reg = EndpointRegistry::new();
        let pool = Pool::new(algorithm);
        pool.update(specs, &reg);
        (pool, reg)
    }

    fn ready(ports: std::ops::RangeInclusive<u16>) -> Vec<EndpointSpec> {
        ports.map(|p| EndpointSpec::ready(addr(p))).collect()
    }

    #[test]
    fn every_algorithm_retries_without_repeating_and_then_gives_up() {
        for algorithm in [
            Algorithm::LeastRequest,
            Algorithm::LeastConnections,
            Algorithm::RoundRobin,
            Algorithm::Random,
        ] {
            let (pool, _reg) = pool_of(algorithm, &ready(1..=3));
            let mut rng = SmallRng::seed_from_u64(7);
            let mut tried = Vec::new();
            for attempt in 0..3 {
                let pick = pool.pick(&tried, &mut rng);
                let expected = if attempt == 0 {
                    PickReason::Primary
                } else {
                    PickReason::Retry
                };
                assert_eq!(pick.reason, expected, "{algorithm:?}");
                let ep = pick.endpoint.expect("endpoint");
                assert!(
                    !tried.contains(&ep.addr()),
                    "{algorithm:?} repeated an endpoint"
                );
                tried.push(ep.addr());
            }
            let last = pool.pick(&tried, &mut rng);
            assert!(last.endpoint.is_none());
            assert_eq!(last.reason, PickReason::NoneAvailable);
        }
    }

    #[test]
    fn draining_only_when_nothing_routable() {
        let mut draining = EndpointSpec::ready(addr(2));
        draining.ready = false;
        draining.terminating = true;
        let (pool, reg) = pool_of(
            Algorithm::LeastRequest,
            &[EndpointSpec::ready(addr(1)), draining.clone()],
        );
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..50 {
            let pick = pool.pick(&[], &mut rng);
            assert_eq!(pick.endpoint.expect("endpoint").addr(), addr(1));
        }
        pool.update(std::slice::from_ref(&draining), &reg);
        let pick = pool.pick(&[], &mut rng);
        assert_eq!(pick.reason, PickReason::DrainingFallback);
        assert_eq!(pick.endpoint.expect("endpoint").addr(), addr(2));
    }

    #[test]
    fn update_in_place_keeps_in_flight() {
        let (pool, reg) = pool_of(Algorithm::LeastRequest, &ready(1..=1));
        let mut rng = SmallRng::seed_from_u64(1);
        let guard = pool
            .pick(&[], &mut rng)
            .endpoint
            .expect("endpoint")
            .start_request();
        pool.update(&ready(1..=2), &reg);
        let survivor = pool
            .endpoints()
            .into_iter()
            .find(|e| e.addr() == addr(1))
            .expect("survivor");
        assert_eq!(survivor.in_flight(), 1);
        drop(survivor);
        // Removal: the guard keeps the removed endpoint's state valid.
        pool.update(&ready(2..=2), &reg);
        assert_eq!(guard.endpoint().in_flight(), 1);
        drop(guard);
        reg.prune();
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn empty_pool_picks_nothing() {
        let (pool, _reg) = pool_of(Algorithm::LeastRequest, &[]);
        let pick = pool.pick(&[], &mut SmallRng::seed_from_u64(1));
        assert!(pick.endpoint.is_none());
        assert_eq!(pick.reason, PickReason::NoneAvailable);
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in [
            Algorithm::LeastRequest,
            Algorithm::LeastConnections,
            Algorithm::RoundRobin,
            Algorithm::Random,
        ] {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
        }
        assert!("fastest".parse::<Algorithm>().is_err());
    }

    #[test]
    fn round_robin_visits_everyone_equally() {
        let (pool, _reg) = pool_of(Algorithm::RoundRobin, &ready(1..=3));
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for _ in 0..300 {
            *counts
                .entry(pool.pick(&[], &mut rng).endpoint.expect("ep").addr())
                .or_default() += 1;
        }
        assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    }
}
