//! Passive outlier ejection and slow start (docs/balancing.md): how outcomes and age
//! change whether, and how much, an endpoint is used.
//!
//! Per endpoint ([`OutlierState`], lock-free): consecutive failures; ejected until when;
//! how many times it was ejected (ejection time = base x that count, capped at max; the
//! count starts over once the endpoint stays clear of ejection for `max` after its last
//! one); quarantine (back from an ejection, not yet succeeded: the first failure ejects it
//! again); and a `Retry-After` penalty that lowers its weight until a time. Pool-level rules
//! (max-ejection-percent, the 50 % panic threshold) live in [`crate::Pool`].

use crate::clock::Nanos;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Weight factor of an endpoint that answered 503 with `Retry-After`, for that long.
pub const RETRY_AFTER_WEIGHT: f64 = 0.1;

/// What one upstream attempt says about the endpoint it went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response that says nothing bad about the endpoint (1xx–4xx).
    Success,
    /// Connect failure, reset, timeout, protocol error, or a 5xx from the upstream.
    Failure,
    /// 503 with `Retry-After`: a failure, and the endpoint's weight is lowered for that long.
    Overloaded { retry_after: Duration },
    /// The client went away first: says nothing about the endpoint.
    ClientCancelled,
}

impl Outcome {
    /// What a response head says of its endpoint: a 503 with `Retry-After` (`retry_after`) is
    /// overload, any other 5xx a failure, anything else a success. The proxy and weir-client
    /// judge responses alike through this.
    pub fn of_response(status: u16, retry_after: Option<Duration>) -> Outcome {
        match (status, retry_after) {
            (503, Some(retry_after)) => Outcome::Overloaded { retry_after },
            (500.., _) => Outcome::Failure,
            _ => Outcome::Success,
        }
    }
}

/// `weir.dev/outlier-*` annotations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share of a pool is ejected at once (at least one endpoint always may be).
    pub max_ejection_percent: u32,
    /// An ejected endpoint returns only after active health checks pass
    /// (`weir.dev/health-check-path`), not when its ejection ends.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub readmit_on_check: bool,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
            readmit_on_check: false,
        }
    }
}

/// `weir.dev/slow-start*` annotations: effective weight =
/// `weight x max(min_weight, (age / window) ^ aggression)` while `age < window`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SlowStart {
    pub window: Duration,
    pub aggression: f64,
    pub min_weight: f64,
}

impl SlowStart {
    pub fn new(window: Duration) -> Self {
        SlowStart {
            window,
            aggression: 1.0,
            min_weight: 0.1,
        }
    }

    /// The weight factor at `age`.
    pub fn factor(&self, age: Duration) -> f64 {
        if self.window.is_zero() || age >= self.window {
            return 1.0;
        }
        let progress = age.as_secs_f64() / self.window.as_secs_f64();
        progress.powf(self.aggression).max(self.min_weight).min(1.0)
    }
}

#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_failures: AtomicU32,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    quarantined: AtomicBool,
    penalty_until: AtomicU64,
    /// Ejected in a pool that re-admits on checks: out until a check passes.
    awaiting_check: AtomicBool,
}

impl OutlierState {
    /// Until when the endpoint is out: its ejection's end, or (its ejection over, waiting for
    /// a health check to pass) always a moment ahead.
    pub fn ejected_until(&self, now: Nanos) -> Option<Nanos> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until > now.0 {
            return Some(Nanos(until));
        }
        self.awaiting_check
            .load(Ordering::Relaxed)
            .then(|| Nanos(now.0.saturating_add(1_000_000)))
    }

    /// When its last ejection ends (or ended; zero: never ejected), whatever checks it waits
    /// for after.
    pub fn ejection_ends(&self) -> Nanos {
        Nanos(self.ejected_until.load(Ordering::Relaxed))
    }

    /// Whether it waits for an active check before it returns.
    pub fn awaiting_check(&self) -> bool {
        self.awaiting_check.load(Ordering::Relaxed)
    }

    /// Its ejection is over and it waits for an active check to pass before it returns.
    pub fn check_due(&self, now: Nanos) -> bool {
        self.awaiting_check.load(Ordering::Relaxed)
            && self.ejected_until.load(Ordering::Relaxed) <= now.0
    }

    /// Active checks passed: the endpoint returns (quarantined, as after any ejection).
    pub fn check_passed(&self) {
        self.awaiting_check.store(false, Ordering::Relaxed);
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Relaxed)
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Failures in a row since the last success or ejection (what this process saw).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    pub fn penalized(&self, now: Nanos) -> bool {
        self.penalty_until.load(Ordering::Relaxed) > now.0
    }

    pub(crate) fn penalize(&self, until: Nanos) {
        self.penalty_until.fetch_max(until.0, Ordering::Relaxed);
    }

    pub(crate) fn success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.quarantined.store(false, Ordering::Relaxed);
    }

    /// Counts a failure; true when it calls for an ejection. Failures of requests that were
    /// already in flight when the endpoint got ejected do not extend the ejection.
    pub(crate) fn failure(&self, now: Nanos, config: &OutlierConfig) -> bool {
        if self.ejected_until(now).is_some() {
            return false;
        }
        let last_until = Nanos(self.ejected_until.load(Ordering::Relaxed));
        if last_until.0 > 0 && now.since(last_until) >= config.max_ejection {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.is_quarantined() || failures >= config.consecutive_failures
    }

    /// Ejects the endpoint until `until` (an ejection another replica made): quarantined
    /// when it returns, as after an ejection of its own; counted, so that the next one of
    /// its own backs off further.
    pub(crate) fn eject_until(&self, until: Nanos, config: &OutlierConfig) {
        if config.readmit_on_check {
            self.awaiting_check.store(true, Ordering::Relaxed);
        }
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.ejected_until.fetch_max(until.0, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.quarantined.store(true, Ordering::Relaxed);
    }

    /// Ejects the endpoint; returns until when.
    pub(crate) fn eject(&self, now: Nanos, config: &OutlierConfig) -> Nanos {
        let count = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = config
            .base_ejection
            .saturating_mul(count)
            .min(config.max_ejection);
        let until = now.after(duration);
        if config.readmit_on_check {
            self.awaiting_check.store(true, Ordering::Relaxed);
        }
        self.ejected_until.store(until.0, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.quarantined.store(true, Ordering::Relaxed);
        until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_head_says_success_failure_or_overload() {
        let pause = Some(Duration::from_secs(2));
        assert_eq!(Outcome::of_response(200, None), Outcome::Success);
        assert_eq!(Outcome::of_response(404, pause), Outcome::Success);
        assert_eq!(Outcome::of_response(500, None), Outcome::Failure);
        assert_eq!(Outcome::of_response(503, None), Outcome::Failure);
        assert_eq!(Outcome::of_response(502, pause), Outcome::Failure);
        assert_eq!(
            Outcome::of_response(503, pause),
            Outcome::Overloaded {
                retry_after: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn slow_start_curve() {
        let linear = SlowStart::new(Duration::from_secs(100));
        let at = |s: &SlowStart, secs: u64| s.factor(Duration::from_secs(secs));
        assert_eq!(at(&linear, 0), 0.1, "floor at min_weight");
        assert_eq!(at(&linear, 5), 0.1);
        assert!((at(&linear, 25) - 0.25).abs() < 1e-12);
        assert!((at(&linear, 50) - 0.5).abs() < 1e-12);
        assert_eq!(at(&linear, 100), 1.0);
        assert_eq!(at(&linear, 1000), 1.0);
        let steep = SlowStart {
            aggression: 2.0,
            min_weight: 0.05,
            ..linear
        };
        assert!((at(&steep, 50) - 0.25).abs() < 1e-12, "(1/2)^2");
        assert!(
            (at(&steep, 10) - 0.05).abs() < 1e-12,
            "(1/10)^2 = 0.01 floored at 0.05"
        );
    }
}
