//! [`Pool`]: the endpoints of one backend (Service port) and the algorithm that picks
//! among them.
//!
//! Members are published with one atomic swap, so a pick never waits for an update and an
//! update never waits for picks. Updates are applied in place: an address present before
//! and after keeps its [`EndpointState`] (in-flight count and everything else).
//!
//! Randomness and time come from the caller (`pick(request, rng)` with `request.now`), so
//! every algorithm is deterministic under a seeded RNG and an injected clock in tests and
//! the simulator; the proxy passes a thread-local RNG and the wall clock.
//!
//! Eligibility, in order: routable endpoints (draining ones only when none is routable),
//! less those tried by this request, less ejected outliers — unless fewer than half the
//! routable endpoints would remain (panic: ejection is ignored). The fast path (nothing
//! ejected, first attempt) neither allocates nor locks.

use crate::affinity::{endpoint_token, rendezvous_weight, Sticky};
use crate::algorithms::{
    least_loaded, peak_ewma, power_of_two, random_weighted, SmoothWeights, WeightOf,
};
use crate::clock::Nanos;
use crate::endpoint::{EndpointSpec, EndpointState};
use crate::fade::FadeRings;
use crate::outlier::{Outcome, OutlierConfig, SlowStart, RETRY_AFTER_WEIGHT};
use crate::registry::EndpointRegistry;
use crate::zone::ZonePlan;
use crate::InFlightGuard;
use arc_swap::ArcSwap;
use rand::Rng;
use serde::Serialize;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Power of two choices on peak-EWMA latency x (in-flight + 1).
    PeakEwma,
    /// Skipper-compatible consistent hash ring, optionally with bounded load
    /// ([`PoolConfig::hash_balance_factor`]).
    ConsistentHash,
}

impl Algorithm {
    /// Every algorithm, in the order the annotation documentation lists them.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::LeastRequest,
        Algorithm::LeastConnections,
        Algorithm::RoundRobin,
        Algorithm::Random,
        Algorithm::PeakEwma,
        Algorithm::ConsistentHash,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::LeastRequest => "least-request",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Random => "random",
            Algorithm::PeakEwma => "peak-ewma",
            Algorithm::ConsistentHash => "consistent-hash",
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Algorithm::ALL
            .into_iter()
        .find(|a| a.name() == s)
        .ok_or_else(|| {
            format!("{s:?} is not one of least-request, least-connections, round-robin, random, peak-ewma, consistent-hash")
        })
    }
}

/// Why a pick went where it did. Reaches access logs and metrics as [`PickReason::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PickReason {
    /// The algorithm's first choice among routable endpoints.
    Primary,
    /// Consistent hash with bounded load: the key's endpoint was over its share, so the
    /// walk went on along the ring.
    BoundedLoadSpill,
    /// Consistent hash with fade-in: an older ring was used because newer endpoints are
    /// still warming.
    FadeInRing,
    /// A retry: chosen among endpoints not yet tried by this request.
    Retry,
    /// Too many endpoints are ejected (fewer than half would remain): ejection is ignored.
    Panic,
    /// Zone-aware routing sent the request out of the local zone (its share was used up).
    ZoneSpill,
    /// No routable endpoint exists; a draining (`serving && terminating`) one was used.
    DrainingFallback,
    /// The session's cookie bound the request to this endpoint ([`crate::affinity`]).
    Affinity,
    /// Nothing could be picked.
    NoneAvailable,
}

impl PickReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PickReason::Primary => "primary",
            PickReason::BoundedLoadSpill => "bounded_load_spill",
            PickReason::FadeInRing => "fade_in_ring",
            PickReason::Retry => "retry",
            PickReason::Panic => "panic",
            PickReason::ZoneSpill => "zone_spill",
            PickReason::DrainingFallback => "draining_fallback",
            PickReason::Affinity => "affinity",
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

/// How one pool balances (from the Ingress annotations).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PoolConfig {
    pub algorithm: Algorithm,
    /// Consistent hash only: cap every endpoint at `factor x` the average load (>= 1.0);
    /// `None` = unbounded.
    pub hash_balance_factor: Option<f64>,
    /// Weight ramp for new endpoints (weighted algorithms; not consistent hash).
    pub slow_start: Option<SlowStart>,
    pub outlier: OutlierConfig,
    /// Prefer the proxy's own zone (needs the pool built with [`Pool::in_zone`]).
    pub zone_aware: bool,
    /// What bounded load measures (`weir.dev/hash-load-signal`).
    pub hash_load_signal: LoadSignal,
    /// Weigh load by `min(endpoint latency / (1.25 x pool median latency), 5)` (never
    /// below 1) in
    /// least request, least connections and bounded load (`weir.dev/latency-health-factor`,
    /// default on). In-flight counts alone cannot see a slow endpoint when each of many
    /// proxies holds only a few of its requests; latency can.
    pub latency_health_factor: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            algorithm: Algorithm::default(),
            hash_balance_factor: None,
            slow_start: None,
            outlier: OutlierConfig::default(),
            zone_aware: false,
            hash_load_signal: LoadSignal::default(),
            latency_health_factor: true,
        }
    }
}

/// Cap of the latency health factor: a stuck endpoint counts as five times its load.
pub const MAX_HEALTH_FACTOR: f64 = 5.0;

/// Latency up to this multiple of the pool median counts as healthy (factor 1). Without
/// it, ordinary spread among equal endpoints (cache hits and misses, request mix) would
/// push keys off their consistent-hash owner: simulator scenario (c) lost 0.8 points of
/// hit ratio at 1.0 and none at 1.25.
pub const HEALTH_TOLERANCE: f64 = 1.25;

/// Without latency samples an endpoint's health factor falls back to 1 over this time
/// (linearly: cheaper than an exponential on a path that full scans run per endpoint).
pub const HEALTH_FADE: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a pool recomputes its median latency (the health factor's reference).
const REFERENCE_REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// The load bounded load compares (docs/balancing.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadSignal {
    /// Requests in flight.
    #[default]
    InFlight,
    /// Seconds of work per second over 150 ms, max'd with requests in flight: also sees
    /// load that comes and goes between two picks (short requests at high rates).
    Occupancy,
}

/// Ring walk cap for bounded load: after this many distinct endpoints over target, the
/// least loaded of them is taken (docs/balancing.md).
pub const BOUNDED_WALK: usize = 10;

/// What the pool needs to know about one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickRequest<'a> {
    /// Endpoints this request already went to (retries never repeat one).
    pub tried: &'a [SocketAddr],
    /// [`crate::ring::key_hash`] of the request's hash key (consistent hash only).
    pub key_hash: u64,
    /// The current time (the injected clock).
    pub now: Nanos,
}

#[derive(Debug, Default)]
struct Members {
    /// Endpoints that take new requests.
    routable: Vec<Arc<EndpointState>>,
    /// `serving && terminating`: only used when `routable` is empty.
    draining: Vec<Arc<EndpointState>>,
    /// Smooth round-robin state over `routable`; new members start a new cycle.
    smooth: SmoothWeights,
    /// Rings over `routable` (consistent hash only; empty otherwise): one, or with slow
    /// start the N-ring fade-in set.
    rings: FadeRings,
    /// Every routable endpoint has the same weight: weighted choices reduce to uniform ones.
    uniform: bool,
    /// Zone-aware routing plan (when it applies).
    zones: Option<ZonePlan>,
}

#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    /// This proxy's zone (`--zone`).
    local_zone: Option<Box<str>>,
    members: ArcSwap<Members>,
    /// Requests in flight through this pool (the bounded-load average, in O(1)).
    in_flight: Arc<AtomicU64>,
    /// The pool's total occupancy (bounded load on occupancy only).
    occupancy: crate::occupancy::Occupancy,
    /// Rotates ties (least-connections) and retries (round-robin).
    cursor: AtomicUsize,
    /// Latest ejection end of any member: while `now` is before it, picks check ejections.
    ejection_horizon: AtomicU64,
    /// Latest `Retry-After` penalty end of any member: while `now` is before it, weights
    /// are not uniform.
    penalty_horizon: AtomicU64,
    /// Median smoothed latency of the routable members (f64 ns as bits, 0 = unknown): the
    /// latency health factor's reference, refreshed from the response path at most every
    /// [`REFERENCE_REFRESH`] so picks only read it.
    latency_reference: AtomicU64,
    reference_stamp: AtomicU64,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Self {
        Self::in_zone(config, None)
    }

    /// A pool of a proxy running in `local_zone` (for zone-aware routing).
    pub fn in_zone(config: PoolConfig, local_zone: Option<&str>) -> Self {
        Pool {
            config,
            local_zone: local_zone.map(Box::from),
            members: ArcSwap::from_pointee(Members::default()),
            in_flight: Arc::new(AtomicU64::new(0)),
            occupancy: Default::default(),
            cursor: AtomicUsize::new(0),
            ejection_horizon: AtomicU64::new(0),
            penalty_horizon: AtomicU64::new(0),
            latency_reference: AtomicU64::new(0),
            reference_stamp: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> PoolConfig {
        self.config
    }

    pub fn algorithm(&self) -> Algorithm {
        self.config.algorithm
    }

    /// Starts a request on a picked endpoint: counted on the endpoint until the guard
    /// drops, and in this pool's total when bounded load needs it (a pool-wide counter is
    /// one cache line every core writes, so it is kept only where it is read).
    pub fn start_request(&self, endpoint: &Arc<EndpointState>) -> InFlightGuard {
        let total = self.counts_total().then_some(&self.in_flight);
        endpoint.start(total)
    }

    fn counts_total(&self) -> bool {
        self.config.algorithm == Algorithm::ConsistentHash
            && self.config.hash_balance_factor.is_some()
    }

    /// Requests in flight through this pool (counted for bounded load only; 0 otherwise).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Replaces the member set. Endpoints neither routable nor draining are dropped from
    /// the pool (their in-flight requests keep their guards and finish normally).
    /// `now` starts the slow start of endpoints that become routable without a readiness
    /// time of their own.
    pub fn update(&self, specs: &[EndpointSpec], registry: &EndpointRegistry, now: Nanos) {
        let mut routable = Vec::new();
        let mut draining = Vec::new();
        for spec in specs {
            if spec.is_routable() {
                routable.push(registry.resolve(spec, now));
            } else if spec.is_draining() {
                draining.push(registry.resolve(spec, now));
            }
        }
        // Members ejected through another pool that shares them must be checked here too.
        let horizon = routable
            .iter()
            .filter_map(|e| e.ejected_until(now))
            .max()
            .map_or(Nanos::ZERO, |until| self.horizon_for(until));
        self.ejection_horizon
            .fetch_max(horizon.0, Ordering::Relaxed);
        routable.sort_by_key(|e| e.addr());
        draining.sort_by_key(|e| e.addr());
        let smooth = SmoothWeights::new(routable.len());
        let rings = if self.config.algorithm == Algorithm::ConsistentHash {
            FadeRings::build(&routable, self.config.slow_start.map(|s| s.window), now)
        } else {
            FadeRings::default()
        };
        let uniform = routable.windows(2).all(|w| w[0].weight() == w[1].weight());
        let zones = match (&self.local_zone, self.config.zone_aware) {
            (Some(zone), true) if self.config.algorithm != Algorithm::ConsistentHash => {
                ZonePlan::build(&routable, zone)
            }
            _ => None,
        };
        self.members.store(Arc::new(Members {
            routable,
            draining,
            smooth,
            rings,
            uniform,
            zones,
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

    /// An endpoint still in slow start, chosen at random, while others have finished theirs:
    /// where `weir.dev/warm-up-mirror` sends its copies. `None` without slow start, or when
    /// every endpoint is new (as at startup), when copies would only double the load.
    pub fn warming_endpoint<R: Rng + ?Sized>(&self, now: Nanos, rng: &mut R) -> Option<SocketAddr> {
        let window = self.config.slow_start?.window;
        let members = self.members.load();
        let young = |e: &&Arc<EndpointState>| now.since(e.ready_since()) < window;
        let count = members.routable.iter().filter(young).count();
        if count == 0 || count == members.routable.len() {
            return None;
        }
        let nth = rng.random_range(0..count);
        members
            .routable
            .iter()
            .filter(young)
            .nth(nth)
            .map(|e| e.addr())
    }

    /// Chooses an endpoint for `request`. Never returns an endpoint in `request.tried`.
    pub fn pick<R: Rng + ?Sized>(&self, request: &PickRequest<'_>, rng: &mut R) -> Pick {
        let members = self.members.load();
        let (tried, now) = (request.tried, request.now);
        let weight_of = |e: &EndpointState| self.effective_weight(e, now);
        if members.routable.is_empty() {
            return self.pick_among(
                &members.draining,
                tried,
                PickReason::DrainingFallback,
                &weight_of,
                now,
                rng,
            );
        }
        // Outliers: only looked at while some member may be ejected.
        let mut panic = false;
        let mut available: Option<Vec<Arc<EndpointState>>> = None;
        let ejecting = self.ejection_horizon.load(Ordering::Relaxed) > now.0;
        if ejecting {
            let routable = &members.routable;
            let left: Vec<_> = routable
                .iter()
                .filter(|e| e.ejected_until(now).is_none())
                .cloned()
                .collect();
            if left.len() * 2 < routable.len() {
                panic = true;
            } else if left.len() < routable.len() {
                available = Some(left);
            }
        }
        let candidates: &[Arc<EndpointState>] = available.as_deref().unwrap_or(&members.routable);
        let first = if panic {
            PickReason::Panic
        } else {
            PickReason::Primary
        };

        if self.config.algorithm == Algorithm::ConsistentHash {
            return self.pick_hashed(&members, request, panic, first);
        }
        if !tried.is_empty() {
            return self.pick_among(candidates, tried, PickReason::Retry, &weight_of, now, rng);
        }
        // Zones: pick the zone first, then the algorithm within it (not in panic). The
        // zone's member list is used as is unless endpoints are ejected right now.
        let mut first = first;
        let mut zone_slice: Option<&[Arc<EndpointState>]> = None;
        let mut zone_usable: Option<Vec<Arc<EndpointState>>> = None;
        if let (Some(plan), false) = (&members.zones, panic) {
            let (zone, spilled) = plan.choose(rng);
            if spilled {
                first = PickReason::ZoneSpill;
            }
            if ejecting {
                let usable: Vec<_> = zone
                    .iter()
                    .filter(|e| e.ejected_until(now).is_none())
                    .cloned()
                    .collect();
                zone_usable = (!usable.is_empty()).then_some(usable);
            } else if !zone.is_empty() {
                zone_slice = Some(zone);
            }
        }
        let whole_set = available.is_none() && zone_slice.is_none() && zone_usable.is_none();
        let candidates: &[Arc<EndpointState>] =
            zone_usable.as_deref().or(zone_slice).unwrap_or(candidates);
        let endpoint = match self.config.algorithm {
            Algorithm::RoundRobin if whole_set => members.smooth.next(candidates, &weight_of),
            Algorithm::Random if members.uniform && !self.dynamic_weights(now) => {
                candidates.get(rng.random_range(0..candidates.len()))
            }
            _ => self.choose(candidates, &weight_of, now, rng),
        };
        match endpoint {
            Some(e) => Pick {
                endpoint: Some(Arc::clone(e)),
                reason: first,
            },
            None => Pick::none(),
        }
    }

    /// The endpoint a session cookie binds this request to ([`crate::affinity`]), when it
    /// can take it: routable, not ejected, and not tried by this request. `None`: the
    /// session needs a new endpoint ([`Pool::pick`]).
    pub fn pick_sticky(
        &self,
        sticky: Sticky,
        salt: u64,
        request: &PickRequest<'_>,
    ) -> Option<Arc<EndpointState>> {
        let members = self.members.load();
        let now = request.now;
        let ejecting = self.ejection_horizon.load(Ordering::Relaxed) > now.0;
        let mut usable = members.routable.iter().filter(|e| {
            let ejected = ejecting && e.ejected_until(now).is_some();
            !ejected && !request.tried.contains(&e.addr())
        });
        let endpoint = match sticky {
            Sticky::Endpoint(token) => usable.find(|e| endpoint_token(salt, e.addr()) == token),
            Sticky::Key(key) => usable.max_by_key(|e| rendezvous_weight(key, e.addr())),
        };
        endpoint.cloned()
    }

    /// Weight in thousandths after slow start, `Retry-After` penalties and (least request,
    /// least connections) the latency health factor: what the algorithm weighs right now.
    pub fn effective_weight(&self, endpoint: &EndpointState, now: Nanos) -> u64 {
        let base = u64::from(endpoint.weight()) * 1000;
        let mut factor = 1.0;
        if let Some(slow_start) = &self.config.slow_start {
            factor = slow_start.factor(now.since(endpoint.ready_since()));
        }
        if endpoint.outlier.penalized(now) {
            factor *= RETRY_AFTER_WEIGHT;
        }
        if matches!(
            self.config.algorithm,
            Algorithm::LeastRequest | Algorithm::LeastConnections
        ) {
            factor /= self.health_factor(endpoint, now);
        }
        if factor >= 1.0 {
            return base;
        }
        ((base as f64 * factor) as u64).max(1)
    }

    /// The latency health factor of `endpoint`: its smoothed latency over
    /// [`HEALTH_TOLERANCE`] x the pool's median, clamped to `1..=MAX_HEALTH_FACTOR` (1 when
    /// off or not yet measured). The
    /// excess over 1 fades linearly to 0 over [`HEALTH_FADE`] without a sample: an
    /// endpoint the factor keeps idle gets traffic again and so a chance to show it
    /// recovered, instead of starving on an old measurement.
    pub fn health_factor(&self, endpoint: &EndpointState, now: Nanos) -> f64 {
        if !self.config.latency_health_factor {
            return 1.0;
        }
        let reference = f64::from_bits(self.latency_reference.load(Ordering::Relaxed));
        match endpoint.health_latency() {
            Some(latency) if reference > 0.0 => {
                let excess =
                    (latency / (reference * HEALTH_TOLERANCE)).clamp(1.0, MAX_HEALTH_FACTOR) - 1.0;
                if excess == 0.0 {
                    return 1.0;
                }
                let idle = endpoint.since_latency_sample(now).as_secs_f64();
                1.0 + excess * (1.0 - idle / HEALTH_FADE.as_secs_f64()).max(0.0)
            }
            _ => 1.0,
        }
    }

    /// Recomputes the median member latency when it is older than [`REFERENCE_REFRESH`];
    /// one caller does the O(n) work, the others see a fresh stamp and return.
    fn refresh_latency_reference(&self, now: Nanos) {
        let stamp = self.reference_stamp.load(Ordering::Relaxed);
        if now.0 < stamp.saturating_add(REFERENCE_REFRESH.as_nanos() as u64)
            || self
                .reference_stamp
                .compare_exchange(stamp, now.0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let members = self.members.load();
        let mut measured: Vec<f64> = members
            .routable
            .iter()
            .filter_map(|e| e.health_latency())
            .collect();
        if measured.is_empty() {
            return;
        }
        let mid = measured.len() / 2;
        let (_, median, _) = measured.select_nth_unstable_by(mid, f64::total_cmp);
        self.latency_reference
            .store(median.to_bits(), Ordering::Relaxed);
    }

    /// Whether weights may differ from the configured ones right now.
    fn dynamic_weights(&self, now: Nanos) -> bool {
        self.config.slow_start.is_some() || self.penalty_horizon.load(Ordering::Relaxed) > now.0
    }

    /// Records how long one request kept `endpoint` busy (time to response headers): its
    /// peak-EWMA latency and, for bounded load on occupancy, its and the pool's occupancy.
    pub fn observe_latency(
        &self,
        endpoint: &EndpointState,
        latency: std::time::Duration,
        now: Nanos,
    ) {
        endpoint.observe_latency(latency, now);
        if self.config.latency_health_factor {
            self.refresh_latency_reference(now);
        }
        if self.config.hash_load_signal == LoadSignal::Occupancy && self.counts_total() {
            endpoint.occupancy.add(latency, now);
            self.occupancy.add(latency, now);
        }
    }

    /// Feeds the outcome of one attempt on `endpoint` back: clears or counts failures and
    /// ejects per [`OutlierConfig`] and max-ejection-percent. Returns the ejection end when
    /// this outcome ejected the endpoint.
    pub fn record(&self, endpoint: &EndpointState, outcome: Outcome, now: Nanos) -> Option<Nanos> {
        let config = &self.config.outlier;
        match outcome {
            Outcome::ClientCancelled => return None,
            Outcome::Success => {
                endpoint.outlier.success();
                return None;
            }
            Outcome::Overloaded { retry_after } => {
                let until = now.after(retry_after.min(config.max_ejection));
                endpoint.outlier.penalize(until);
                self.penalty_horizon.fetch_max(until.0, Ordering::Relaxed);
            }
            Outcome::Failure => {}
        }
        if !endpoint.outlier.failure(now, config) {
            return None;
        }
        if !self.may_eject(now) {
            return None; // stays suspect; ejected once others return
        }
        let until = endpoint.outlier.eject(now, config);
        self.ejection_horizon
            .fetch_max(self.horizon_for(until).0, Ordering::Relaxed);
        Some(until)
    }

    /// Until when picks must look at ejections after one that lasts until `until`: for
    /// ever in a pool whose endpoints return only after health checks (the end of an
    /// ejection is not their return).
    fn horizon_for(&self, until: Nanos) -> Nanos {
        match self.config.outlier.readmit_on_check {
            true => Nanos(u64::MAX),
            false => until,
        }
    }

    /// Whether one more endpoint may be ejected: fewer than max-ejection-percent of the
    /// routable endpoints are (at least one may always be).
    fn may_eject(&self, now: Nanos) -> bool {
        let members = self.members.load();
        let n = members.routable.len();
        let ejected = members
            .routable
            .iter()
            .filter(|e| e.ejected_until(now).is_some())
            .count();
        ejected < (n * self.config.outlier.max_ejection_percent as usize / 100).max(1)
    }

    /// Applies what the fleet (the other replicas) says of `endpoint`, one of this pool's:
    /// `fleet_failures`, the failures in a row every replica saw together, ejects it when
    /// they reach this pool's threshold; `reported_until`, an ejection another replica made,
    /// is applied as it is. Either only within max-ejection-percent, so hearsay never ejects
    /// more than the pool's own view could. Returns the ejection end, and whether it was a
    /// reported one (`true`) or one of the fleet's failures.
    pub fn apply_fleet_view(
        &self,
        endpoint: &EndpointState,
        fleet_failures: u32,
        reported_until: Option<Nanos>,
        now: Nanos,
    ) -> Option<(Nanos, bool)> {
        let config = &self.config.outlier;
        if endpoint.ejected_until(now).is_some() || !self.has_member(endpoint.addr()) {
            return None;
        }
        let reported = reported_until.filter(|until| *until > now);
        if reported.is_none() && fleet_failures < config.consecutive_failures {
            return None;
        }
        if !self.may_eject(now) {
            return None;
        }
        let until = match reported {
            // Never longer than this pool's own longest ejection.
            Some(until) => {
                let until = Nanos(until.0.min(now.after(config.max_ejection).0));
                endpoint.outlier.eject_until(until, config);
                until
            }
            None => endpoint.outlier.eject(now, config),
        };
        self.ejection_horizon
            .fetch_max(self.horizon_for(until).0, Ordering::Relaxed);
        Some((until, reported.is_some()))
    }

    /// This pool's endpoints whose ejection is over and that wait for a health check.
    pub fn checks_due(&self, now: Nanos) -> Vec<Arc<EndpointState>> {
        let members = self.members.load();
        members
            .routable
            .iter()
            .chain(members.draining.iter())
            .filter(|e| e.outlier.check_due(now))
            .cloned()
            .collect()
    }

    /// Whether `addr` is one of this pool's endpoints (routable or draining).
    pub fn has_member(&self, addr: SocketAddr) -> bool {
        let members = self.members.load();
        members
            .routable
            .iter()
            .chain(members.draining.iter())
            .any(|e| e.addr() == addr)
    }

    /// Consistent hash (on the ring N-ring fade-in chooses): the key's endpoint, or with
    /// bounded load the first endpoint along
    /// the ring whose in-flight count is at most `factor x (1 + pool in-flight) / n`
    /// (Skipper's average, counting this request); after [`BOUNDED_WALK`] endpoints over
    /// target, the least loaded of them. Retries walk on from the key's endpoint, so they
    /// keep locality.
    fn pick_hashed(
        &self,
        members: &Members,
        request: &PickRequest<'_>,
        panic: bool,
        first: PickReason,
    ) -> Pick {
        let now = request.now;
        let Some((ring, newest)) = members.rings.choose(now, request.key_hash) else {
            return Pick::none();
        };
        // Steered to an older ring because newer endpoints are still warming.
        let first = if newest {
            first
        } else {
            PickReason::FadeInRing
        };
        let mut walk = ring
            .walk_from(request.key_hash)
            .map(|i| &members.routable[i])
            .filter(|e| !request.tried.contains(&e.addr()))
            .filter(|e| panic || e.ejected_until(now).is_none());
        let retry = !request.tried.is_empty();
        let Some(factor) = self.config.hash_balance_factor else {
            return match walk.next() {
                Some(e) => Pick {
                    endpoint: Some(Arc::clone(e)),
                    reason: if retry { PickReason::Retry } else { first },
                },
                None => Pick::none(),
            };
        };
        let n = members.routable.len() as f64;
        let occupancy = self.config.hash_load_signal == LoadSignal::Occupancy;
        // Zalando's effective load: max(in-flight, occupancy) x latency health factor.
        let load = |e: &EndpointState| {
            let in_flight = e.in_flight() as f64;
            let raw = if occupancy {
                in_flight.max(e.occupancy(now))
            } else {
                in_flight
            };
            raw * self.health_factor(e, now)
        };
        let pool_load = if occupancy {
            (self.in_flight() as f64).max(self.occupancy.value(now))
        } else {
            self.in_flight() as f64
        };
        let target = factor * (1.0 + pool_load) / n;
        let mut least: Option<&Arc<EndpointState>> = None;
        for (step, endpoint) in walk.take(BOUNDED_WALK).enumerate() {
            if load(endpoint) <= target {
                let reason = match (retry, step) {
                    (true, _) => PickReason::Retry,
                    (false, 0) => first,
                    (false, _) => PickReason::BoundedLoadSpill,
                };
                return Pick {
                    endpoint: Some(Arc::clone(endpoint)),
                    reason,
                };
            }
            if least.is_none_or(|l| load(endpoint) < load(l)) {
                least = Some(endpoint);
            }
        }
        match least {
            Some(e) => Pick {
                endpoint: Some(Arc::clone(e)),
                reason: if retry {
                    PickReason::Retry
                } else {
                    PickReason::BoundedLoadSpill
                },
            },
            None => Pick::none(),
        }
    }

    /// Picks among `candidates` less `tried` (a retry or the draining fallback: rare, so
    /// the filtered copy is affordable). Round robin rotates here instead of keeping a
    /// second smooth-weight cycle.
    fn pick_among<R: Rng + ?Sized>(
        &self,
        candidates: &[Arc<EndpointState>],
        tried: &[SocketAddr],
        reason: PickReason,
        weight_of: &impl WeightOf,
        now: Nanos,
        rng: &mut R,
    ) -> Pick {
        let eligible: Vec<Arc<EndpointState>> = candidates
            .iter()
            .filter(|e| !tried.contains(&e.addr()))
            .cloned()
            .collect();
        let endpoint = match self.config.algorithm {
            Algorithm::RoundRobin => {
                let n = eligible.len();
                (n > 0).then(|| &eligible[self.cursor.fetch_add(1, Ordering::Relaxed) % n])
            }
            _ => self.choose(&eligible, weight_of, now, rng),
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
        weight_of: &impl WeightOf,
        now: Nanos,
        rng: &mut R,
    ) -> Option<&'a Arc<EndpointState>> {
        match self.config.algorithm {
            Algorithm::LeastRequest => power_of_two(candidates, weight_of, rng),
            Algorithm::PeakEwma => peak_ewma(candidates, weight_of, now, rng),
            Algorithm::LeastConnections => least_loaded(
                candidates,
                weight_of,
                self.cursor.fetch_add(1, Ordering::Relaxed),
            ),
            Algorithm::Random => random_weighted(candidates, weight_of, rng),
            // Only reached for the draining fallback: no ring is kept for draining members.
            Algorithm::ConsistentHash => least_loaded(candidates, weight_of, 0),
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
        let pool = Pool::new(PoolConfig {
            algorithm,
            ..PoolConfig::default()
        });
        pool.update(specs, &reg, Nanos::ZERO);
        (pool, reg)
    }

    fn ready(ports: std::ops::RangeInclusive<u16>) -> Vec<EndpointSpec> {
        ports.map(|p| EndpointSpec::ready(addr(p))).collect()
    }

    #[test]
    fn with_health_checks_an_ejected_endpoint_returns_only_when_they_pass() {
        let second = 1_000_000_000u64;
        let reg = EndpointRegistry::new();
        let mut config = PoolConfig {
            algorithm: Algorithm::RoundRobin,
            ..PoolConfig::default()
        };
        config.outlier.readmit_on_check = true;
        let pool = Pool::new(config);
        pool.update(&ready(1..=4), &reg, Nanos::ZERO);
        let a = &pool.endpoints()[0];
        let threshold = config.outlier.consecutive_failures;
        let until = pool
            .apply_fleet_view(a, threshold, None, Nanos(second))
            .map(|(until, _)| until)
            .expect("ejected");
        // Its ejection is over: still out, and due for a check.
        let later = Nanos(until.0 + second);
        assert!(a.ejected_until(later).is_some());
        assert_eq!(pool.checks_due(later).len(), 1);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..20 {
            let pick = pool.pick(
                &PickRequest {
                    tried: &[],
                    key_hash: 0,
                    now: later,
                },
                &mut rng,
            );
            assert_ne!(pick.endpoint.map(|e| e.addr()), Some(a.addr()));
        }
        // The checks pass: it returns.
        a.check_passed();
        assert_eq!(a.ejected_until(later), None);
        assert!(pool.checks_due(later).is_empty());
    }

    #[test]
    fn the_fleets_view_ejects_within_max_ejection_percent() {
        let second = 1_000_000_000u64;
        let now = Nanos(100 * second);
        // Ten endpoints, max-ejection-percent 10 %: one may be ejected at a time.
        let (pool, _reg) = pool_of(Algorithm::RoundRobin, &ready(1..=10));
        let endpoints = pool.endpoints();
        let [a, b, c] = [&endpoints[0], &endpoints[1], &endpoints[2]];
        let threshold = pool.config().outlier.consecutive_failures;
        // Below the threshold together: nothing; at it: ejected by this pool's own rule.
        assert_eq!(pool.apply_fleet_view(a, threshold - 1, None, now), None);
        let (until, reported) = pool
            .apply_fleet_view(a, threshold, None, now)
            .expect("ejected");
        assert!(!reported);
        assert_eq!(until, now.after(pool.config().outlier.base_ejection));
        // Already out: nothing more.
        assert_eq!(pool.apply_fleet_view(a, threshold, None, now), None);
        // A reported ejection beyond max-ejection-percent is not applied.
        let far = Nanos(now.0 + 20 * second);
        assert_eq!(pool.apply_fleet_view(b, 0, Some(far), now), None);
        assert_eq!(b.ejected_until(now), None);
        // Once a returns, it is; capped at this pool's longest ejection.
        let later = Nanos(until.0 + second);
        let forever = Nanos(later.0 + 10_000 * second);
        let (until_b, reported) = pool
            .apply_fleet_view(b, 0, Some(forever), later)
            .expect("applied");
        assert!(reported);
        assert_eq!(until_b, later.after(pool.config().outlier.max_ejection));
        // A report that already ended, or one for an endpoint of another pool: nothing.
        let (other, _reg) = pool_of(Algorithm::RoundRobin, &ready(20..=21));
        assert_eq!(pool.apply_fleet_view(c, 0, Some(now), later), None);
        assert_eq!(
            pool.apply_fleet_view(&other.endpoints()[0], threshold, None, later),
            None
        );
    }

    #[test]
    fn only_young_endpoints_beside_older_ones_are_warmed() {
        let second = Nanos(1_000_000_000);
        let reg = EndpointRegistry::new();
        let pool = Pool::new(PoolConfig {
            slow_start: Some(SlowStart::new(std::time::Duration::from_secs(30))),
            ..PoolConfig::default()
        });
        let mut rng = SmallRng::seed_from_u64(3);
        // At startup every endpoint is new: nothing to warm beside.
        pool.update(&ready(1..=2), &reg, Nanos::ZERO);
        assert_eq!(pool.warming_endpoint(Nanos(10 * second.0), &mut rng), None);
        // Later, one joins: it is the one warmed, until its window ends.
        pool.update(&ready(1..=3), &reg, Nanos(60 * second.0));
        for _ in 0..20 {
            assert_eq!(
                pool.warming_endpoint(Nanos(70 * second.0), &mut rng),
                Some(addr(3))
            );
        }
        assert_eq!(pool.warming_endpoint(Nanos(91 * second.0), &mut rng), None);
        // Without slow start there is no warming.
        let (plain, _reg) = pool_of(Algorithm::RoundRobin, &ready(1..=2));
        assert_eq!(plain.warming_endpoint(Nanos::ZERO, &mut rng), None);
    }

    #[test]
    fn every_algorithm_retries_without_repeating_and_then_gives_up() {
        for algorithm in Algorithm::ALL {
            let (pool, _reg) = pool_of(algorithm, &ready(1..=3));
            let mut rng = SmallRng::seed_from_u64(7);
            let mut tried = Vec::new();
            for attempt in 0..3 {
                let pick = pool.pick(
                    &PickRequest {
                        tried: &tried,
                        key_hash: 42,
                        now: Nanos::ZERO,
                    },
                    &mut rng,
                );
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
            let last = pool.pick(
                &PickRequest {
                    tried: &tried,
                    key_hash: 42,
                    now: Nanos::ZERO,
                },
                &mut rng,
            );
            assert!(last.endpoint.is_none());
            assert_eq!(last.reason, PickReason::NoneAvailable);
        }
    }

    /// A persistent cookie finds its endpoint among every routable member, never a tried,
    /// ejected or draining one; a balanced key's endpoint stays put while others come and go.
    #[test]
    fn sticky_picks_follow_the_cookie_while_its_endpoint_can_serve() {
        let specs: Vec<_> = (1..=4).map(|p| EndpointSpec::ready(addr(p))).collect();
        let (pool, reg) = pool_of(Algorithm::LeastRequest, &specs);
        let salt = 99;
        let now = Nanos::from_secs(1);
        let request = PickRequest {
            now,
            ..PickRequest::default()
        };
        let token = crate::affinity::endpoint_token(salt, addr(3));
        let sticky = Sticky::Endpoint(token);
        let found = pool.pick_sticky(sticky, salt, &request).map(|e| e.addr());
        assert_eq!(found, Some(addr(3)));
        // Another route's salt: the token names nothing.
        assert!(pool.pick_sticky(sticky, salt + 1, &request).is_none());
        // Tried by this request: not again.
        let tried = [addr(3)];
        let retry = PickRequest {
            tried: &tried,
            ..request
        };
        assert!(pool.pick_sticky(sticky, salt, &retry).is_none());
        // Ejected: the session needs a new endpoint.
        let third = pool
            .endpoints()
            .into_iter()
            .find(|e| e.addr() == addr(3))
            .expect("member");
        let mut ejected = false;
        for _ in 0..50 {
            ejected |= pool.record(&third, Outcome::Failure, now).is_some();
        }
        assert!(ejected, "consecutive failures eject");
        assert!(pool.pick_sticky(sticky, salt, &request).is_none());
        // Draining (terminating but serving): no longer a member new picks may use.
        let mut drain = specs.clone();
        drain[1].terminating = true;
        pool.update(&drain, &reg, now);
        let second = Sticky::Endpoint(crate::affinity::endpoint_token(salt, addr(2)));
        assert!(pool.pick_sticky(second, salt, &request).is_none());

        // Balanced: the key keeps its endpoint when a member that is not its own leaves.
        let (pool, reg) = pool_of(Algorithm::RoundRobin, &specs);
        let key = Sticky::Key(0x5eed);
        let own = pool
            .pick_sticky(key, salt, &request)
            .expect("a member")
            .addr();
        let others: Vec<_> = specs.iter().filter(|s| s.addr != own).cloned().collect();
        pool.update(
            &[&others[..1], &[EndpointSpec::ready(own)]].concat(),
            &reg,
            now,
        );
        let after = pool.pick_sticky(key, salt, &request).map(|e| e.addr());
        assert_eq!(after, Some(own));
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
            let pick = pool.pick(&PickRequest::default(), &mut rng);
            assert_eq!(pick.endpoint.expect("endpoint").addr(), addr(1));
        }
        pool.update(std::slice::from_ref(&draining), &reg, Nanos::ZERO);
        let pick = pool.pick(&PickRequest::default(), &mut rng);
        assert_eq!(pick.reason, PickReason::DrainingFallback);
        assert_eq!(pick.endpoint.expect("endpoint").addr(), addr(2));
    }

    #[test]
    fn update_in_place_keeps_in_flight() {
        let (pool, reg) = pool_of(Algorithm::LeastRequest, &ready(1..=1));
        let mut rng = SmallRng::seed_from_u64(1);
        let guard = pool
            .pick(&PickRequest::default(), &mut rng)
            .endpoint
            .expect("endpoint")
            .start_request();
        pool.update(&ready(1..=2), &reg, Nanos::ZERO);
        let survivor = pool
            .endpoints()
            .into_iter()
            .find(|e| e.addr() == addr(1))
            .expect("survivor");
        assert_eq!(survivor.in_flight(), 1);
        drop(survivor);
        // Removal: the guard keeps the removed endpoint's state valid.
        pool.update(&ready(2..=2), &reg, Nanos::ZERO);
        assert_eq!(guard.endpoint().in_flight(), 1);
        drop(guard);
        reg.prune();
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn empty_pool_picks_nothing() {
        let (pool, _reg) = pool_of(Algorithm::LeastRequest, &[]);
        let pick = pool.pick(&PickRequest::default(), &mut SmallRng::seed_from_u64(1));
        assert!(pick.endpoint.is_none());
        assert_eq!(pick.reason, PickReason::NoneAvailable);
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in Algorithm::ALL {
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
                .entry(
                    pool.pick(&PickRequest::default(), &mut rng)
                        .endpoint
                        .expect("ep")
                        .addr(),
                )
                .or_default() += 1;
        }
        assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    }
}
