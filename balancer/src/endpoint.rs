//! One upstream endpoint: what the source of truth says about it ([`EndpointSpec`]) and
//! the live state the data path accumulates for it ([`EndpointState`]).

use crate::clock::Nanos;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Time constant of the smoothed latency behind the latency health factor: long enough
/// to average a burst of mixed requests, short enough to follow a pod that turns slow.
pub const HEALTH_SMOOTHING: Duration = Duration::from_secs(1);

/// Decay time of the peak-EWMA latency estimate (Finagle's and Linkerd's 10 s).
pub const LATENCY_DECAY: Duration = Duration::from_secs(10);

/// An endpoint as the source of truth describes it (EndpointSlice entry x port).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EndpointSpec {
    pub addr: SocketAddr,
    /// EndpointSlice `conditions.ready` (absent = true).
    pub ready: bool,
    /// EndpointSlice `conditions.serving` (absent = same as ready).
    pub serving: bool,
    /// EndpointSlice `conditions.terminating` (absent = false).
    pub terminating: bool,
    /// Topology zone, when the slice says.
    pub zone: Option<String>,
    /// Relative weight; 1 unless something says otherwise.
    pub weight: u32,
    /// When the endpoint became ready (Pod `Ready` condition time) if the source knows;
    /// otherwise the time weir first sees it routable. Slow start counts from here.
    pub ready_since: Option<Nanos>,
}

impl EndpointSpec {
    /// A ready, serving, non-terminating endpoint of weight 1.
    pub fn ready(addr: SocketAddr) -> Self {
        EndpointSpec {
            addr,
            ready: true,
            serving: true,
            terminating: false,
            zone: None,
            weight: 1,
            ready_since: None,
        }
    }

    /// Takes new requests while any such endpoint exists.
    pub fn is_routable(&self) -> bool {
        self.ready && !self.terminating
    }

    /// Finishing its work: used for new requests only when nothing routable is left
    /// (kube-proxy's fallback to `serving && terminating`).
    pub fn is_draining(&self) -> bool {
        !self.is_routable() && self.serving && self.terminating
    }
}

/// Live state of one endpoint, shared by every pool that contains its address.
///
/// Survives configuration updates for as long as any pool (or any in-flight guard) holds it,
/// so in-flight counts stay exact across reloads.
#[derive(Debug)]
pub struct EndpointState {
    addr: SocketAddr,
    in_flight: AtomicU64,
    draining: AtomicBool,
    routable: AtomicBool,
    weight: AtomicU32,
    requests: AtomicU64,
    /// Start of slow start, in [`Nanos`].
    ready_since: AtomicU64,
    /// Peak-EWMA latency estimate (f64 nanoseconds as bits) and when it was last updated
    /// (0 = never measured).
    latency_ewma: AtomicU64,
    latency_stamp: AtomicU64,
    /// Plain EWMA of latency (f64 nanoseconds as bits, 0 = never measured) for the latency
    /// health factor, and when it was last updated. Unlike the peak estimate, one slow
    /// request does not dominate it.
    health_latency: AtomicU64,
    health_stamp: AtomicU64,
    pub(crate) outlier: crate::outlier::OutlierState,
    /// Topology zone, as first reported.
    zone: Option<Box<str>>,
    pub(crate) occupancy: crate::occupancy::Occupancy,
}

impl EndpointState {
    pub(crate) fn new(spec: &EndpointSpec, now: Nanos) -> Self {
        let state = EndpointState {
            addr: spec.addr,
            in_flight: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            routable: AtomicBool::new(false),
            weight: AtomicU32::new(1),
            requests: AtomicU64::new(0),
            ready_since: AtomicU64::new(now.0),
            latency_ewma: AtomicU64::new(0),
            latency_stamp: AtomicU64::new(0),
            health_latency: AtomicU64::new(0),
            health_stamp: AtomicU64::new(0),
            outlier: Default::default(),
            zone: spec.zone.as_deref().map(Box::from),
            occupancy: Default::default(),
        };
        state.apply(spec, now);
        state
    }

    /// Takes the source-of-truth view of this endpoint without touching live counters. An
    /// endpoint that becomes routable (new, or back from not ready) starts its slow start.
    pub(crate) fn apply(&self, spec: &EndpointSpec, now: Nanos) {
        self.draining.store(spec.is_draining(), Ordering::Relaxed);
        self.weight.store(spec.weight.max(1), Ordering::Relaxed);
        let was_routable = self.routable.swap(spec.is_routable(), Ordering::Relaxed);
        if let Some(since) = spec.ready_since {
            self.ready_since.store(since.0, Ordering::Relaxed);
        } else if spec.is_routable() && !was_routable {
            self.ready_since.store(now.0, Ordering::Relaxed);
        }
    }

    /// Seconds of work per second over the last 150 ms (see [`crate::occupancy`]).
    pub fn occupancy(&self, now: Nanos) -> f64 {
        self.occupancy.value(now)
    }

    /// The endpoint's topology zone.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// When slow start began for this endpoint.
    pub fn ready_since(&self) -> Nanos {
        Nanos(self.ready_since.load(Ordering::Relaxed))
    }

    /// Records the time to response headers of one request (peak EWMA, docs/balancing.md): a
    /// sample above the decayed estimate replaces it at once (peak), otherwise
    /// `estimate = estimate x w + sample x (1 - w)` with `w = e^(-dt/decay)`. Concurrent updates may lose one sample (a benign
    /// race on an estimate; the pick path never locks).
    pub fn observe_latency(&self, latency: Duration, now: Nanos) {
        let sample = latency.as_nanos() as f64;
        let stamp = self.latency_stamp.load(Ordering::Relaxed);
        let next = if stamp == 0 {
            sample
        } else {
            let decayed = self.decayed_latency(now, stamp);
            if sample > decayed {
                sample
            } else {
                // `decayed` is already `estimate x w`: the EWMA step adds the new sample's part.
                let w =
                    (-(now.since(Nanos(stamp)).as_secs_f64()) / LATENCY_DECAY.as_secs_f64()).exp();
                decayed + sample * (1.0 - w)
            }
        };
        self.latency_ewma.store(next.to_bits(), Ordering::Relaxed);
        self.latency_stamp.store(now.0.max(1), Ordering::Relaxed);

        let stamp = self.health_stamp.load(Ordering::Relaxed);
        let health = if stamp == 0 {
            sample
        } else {
            let w =
                (-(now.since(Nanos(stamp)).as_secs_f64()) / HEALTH_SMOOTHING.as_secs_f64()).exp();
            f64::from_bits(self.health_latency.load(Ordering::Relaxed)) * w + sample * (1.0 - w)
        };
        self.health_latency
            .store(health.max(1.0).to_bits(), Ordering::Relaxed);
        self.health_stamp.store(now.0.max(1), Ordering::Relaxed);
    }

    /// The smoothed latency the latency health factor compares (nanoseconds; `None` before
    /// the first sample): an exponentially weighted average with a 1 s time constant, no
    /// peak tracking and no decay while idle.
    pub fn health_latency(&self) -> Option<f64> {
        let value = f64::from_bits(self.health_latency.load(Ordering::Relaxed));
        (value > 0.0).then_some(value)
    }

    /// Time since the last latency sample (zero before the first).
    pub fn since_latency_sample(&self, now: Nanos) -> Duration {
        now.since(Nanos(self.health_stamp.load(Ordering::Relaxed)))
    }

    /// The peak-EWMA latency estimate at `now` in nanoseconds, decayed since its last
    /// update; `None` before the first sample.
    pub fn latency_estimate(&self, now: Nanos) -> Option<f64> {
        let stamp = self.latency_stamp.load(Ordering::Relaxed);
        (stamp != 0).then(|| self.decayed_latency(now, stamp))
    }

    fn decayed_latency(&self, now: Nanos, stamp: u64) -> f64 {
        let value = f64::from_bits(self.latency_ewma.load(Ordering::Relaxed));
        let elapsed = now.since(Nanos(stamp)).as_secs_f64();
        value * (-elapsed / LATENCY_DECAY.as_secs_f64()).exp()
    }

    /// Failures in a row this process saw since the last success or ejection.
    pub fn consecutive_failures(&self) -> u32 {
        self.outlier.consecutive_failures()
    }

    /// When its last ejection ends or ended (zero: never ejected).
    pub fn ejection_ends(&self) -> Nanos {
        self.outlier.ejection_ends()
    }

    /// Whether it waits for an active health check before it returns.
    pub fn awaiting_check(&self) -> bool {
        self.outlier.awaiting_check()
    }

    /// Active health checks passed: an endpoint waiting for them returns.
    pub fn check_passed(&self) {
        self.outlier.check_passed();
    }

    /// Until when the endpoint is ejected (`None` when it is not at `now`).
    pub fn ejected_until(&self, now: Nanos) -> Option<Nanos> {
        self.outlier.ejected_until(now)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests currently between pick and completion.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests ever started on this endpoint (by any pool).
    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Starts a request: the count drops again when the guard is dropped, whatever path
    /// the request takes (success, error, client gone, panic unwinding).
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.start(None)
    }

    /// Like [`Self::start_request`], also counting the request in a pool-wide total.
    pub(crate) fn start(self: &Arc<Self>, pool_total: Option<&Arc<AtomicU64>>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(total) = pool_total {
            total.fetch_add(1, Ordering::Relaxed);
        }
        InFlightGuard {
            endpoint: Arc::clone(self),
            pool_total: pool_total.cloned(),
        }
    }
}

/// Holds one in-flight slot on an endpoint (and in its pool's total) until dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    endpoint: Arc<EndpointState>,
    pool_total: Option<Arc<AtomicU64>>,
}

impl InFlightGuard {
    pub fn endpoint(&self) -> &Arc<EndpointState> {
        &self.endpoint
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(total) = &self.pool_total {
            total.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn guard_releases_on_drop() {
        let ep = Arc::new(EndpointState::new(
            &EndpointSpec::ready(addr(1)),
            Nanos::ZERO,
        ));
        let g1 = ep.start_request();
        let g2 = ep.start_request();
        assert_eq!(ep.in_flight(), 2);
        drop(g1);
        assert_eq!(ep.in_flight(), 1);
        drop(g2);
        assert_eq!(ep.in_flight(), 0);
        assert_eq!(ep.requests_total(), 2);
    }

    #[test]
    fn peak_ewma_takes_peaks_at_once_and_decays() {
        let ep = EndpointState::new(&EndpointSpec::ready(addr(1)), Nanos::ZERO);
        let t = Nanos::from_secs(100);
        assert_eq!(ep.latency_estimate(t), None);
        ep.observe_latency(Duration::from_millis(10), t);
        assert_eq!(ep.latency_estimate(t), Some(10e6));
        // A peak replaces the estimate at once.
        ep.observe_latency(Duration::from_millis(500), t);
        assert_eq!(ep.latency_estimate(t), Some(500e6));
        // Decay: one decay time later the estimate is e^-1 of it.
        let later = t.after(LATENCY_DECAY);
        let decayed = ep.latency_estimate(later).unwrap_or(0.0);
        assert!(
            (decayed - 500e6 / std::f64::consts::E).abs() < 1.0,
            "{decayed}"
        );
        // A low sample is blended in with weight 1 - e^-1.
        ep.observe_latency(Duration::from_millis(10), later);
        let w = (-1.0f64).exp();
        let expected = 500e6 * w + 10e6 * (1.0 - w);
        let got = ep.latency_estimate(later).unwrap_or(0.0);
        assert!((got - expected).abs() < 1.0, "{got} vs {expected}");
    }

    #[test]
    fn conditions_classify_endpoints() {
        let mut s = EndpointSpec::ready(addr(1));
        assert!(s.is_routable() && !s.is_draining());
        s.ready = false;
        s.terminating = true;
        assert!(!s.is_routable() && s.is_draining());
        s.serving = false;
        assert!(
            !s.is_routable() && !s.is_draining(),
            "not serving: unusable"
        );
    }
}
