//! Outlier ejection, Retry-After and slow start under an injected clock.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weir_balancer::{
    Algorithm, EndpointRegistry, EndpointSpec, EndpointState, Nanos, Outcome, OutlierConfig,
    PickReason, PickRequest, Pool, PoolConfig, SlowStart,
};

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 8080))
}

fn secs(s: u64) -> Nanos {
    Nanos::from_secs(s)
}

fn pool_of(n: usize, config: PoolConfig) -> (Pool, Vec<Arc<EndpointState>>, EndpointRegistry) {
    let registry = EndpointRegistry::new();
    let specs: Vec<_> = (1..=n).map(|i| EndpointSpec::ready(addr(i))).collect();
    let pool = Pool::new(config);
    pool.update(&specs, &registry, Nanos::ZERO);
    let eps = pool.endpoints();
    (pool, eps, registry)
}

/// Picks at `now`: (count per address, reasons seen).
fn picks(
    pool: &Pool,
    now: Nanos,
    n: usize,
    seed: u64,
) -> (HashMap<SocketAddr, usize>, Vec<PickReason>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut counts = HashMap::new();
    let mut reasons = Vec::new();
    for _ in 0..n {
        let pick = pool.pick(
            &PickRequest {
                now,
                ..PickRequest::default()
            },
            &mut rng,
        );
        *counts
            .entry(pick.endpoint.expect("endpoint").addr())
            .or_insert(0) += 1;
        if !reasons.contains(&pick.reason) {
            reasons.push(pick.reason);
        }
    }
    (counts, reasons)
}

#[test]
fn ejection_return_quarantine_and_growing_ejection_times() {
    let (pool, eps, _r) = pool_of(10, PoolConfig::default());
    let bad = &eps[0];
    let t = secs(1_000);
    for _ in 0..4 {
        assert_eq!(pool.record(bad, Outcome::Failure, t), None);
    }
    // The fifth consecutive failure ejects for the base time, 30 s.
    assert_eq!(pool.record(bad, Outcome::Failure, t), Some(secs(1_030)));
    let (counts, reasons) = picks(&pool, secs(1_029), 2_000, 1);
    assert!(!counts.contains_key(&bad.addr()), "ejected endpoint picked");
    assert_eq!(reasons, vec![PickReason::Primary]);
    // Failures of requests already in flight do not extend it.
    assert_eq!(pool.record(bad, Outcome::Failure, secs(1_010)), None);
    assert_eq!(bad.ejected_until(secs(1_010)), Some(secs(1_030)));

    // Back at 1,030 s, quarantined: it takes traffic again...
    let (counts, _) = picks(&pool, secs(1_030), 2_000, 2);
    assert!(counts.get(&bad.addr()).copied().unwrap_or(0) > 100);
    // ...and the first failure ejects it again, for 2 x base.
    assert_eq!(
        pool.record(bad, Outcome::Failure, secs(1_031)),
        Some(secs(1_091))
    );
    // Then 3 x base, ... capped at the 300 s maximum.
    let mut now = secs(1_091);
    let mut durations = Vec::new();
    for _ in 0..10 {
        let until = pool.record(bad, Outcome::Failure, now).expect("re-ejected");
        durations.push(until.since(now).as_secs());
        now = until;
    }
    assert_eq!(
        durations,
        vec![90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
    );
}

#[test]
fn success_clears_quarantine_and_failure_streaks() {
    let (pool, eps, _r) = pool_of(10, PoolConfig::default());
    let ep = &eps[3];
    let t = secs(50);
    for _ in 0..4 {
        pool.record(ep, Outcome::Failure, t);
    }
    pool.record(ep, Outcome::Success, t);
    for _ in 0..4 {
        assert_eq!(
            pool.record(ep, Outcome::Failure, t),
            None,
            "the streak restarted"
        );
    }
    // Client cancellations say nothing: the streak goes on.
    pool.record(ep, Outcome::ClientCancelled, t);
    let until = pool.record(ep, Outcome::Failure, t).expect("fifth failure");
    // Returned and succeeded: no longer quarantined, one failure is not enough.
    pool.record(ep, Outcome::Success, until);
    assert_eq!(pool.record(ep, Outcome::Failure, until), None);
}

#[test]
fn ejection_count_starts_over_after_a_quiet_max_ejection_time() {
    let (pool, eps, _r) = pool_of(10, PoolConfig::default());
    let ep = &eps[0];
    let mut now = secs(0);
    for _ in 0..5 {
        pool.record(ep, Outcome::Failure, now);
    }
    now = secs(30);
    let until = pool
        .record(ep, Outcome::Failure, now)
        .expect("second ejection");
    assert_eq!(until.since(now).as_secs(), 60);
    pool.record(ep, Outcome::Success, until);
    // Healthy for the max ejection time (300 s) after the last ejection ended: back to base.
    now = until.after(Duration::from_secs(300));
    for _ in 0..4 {
        pool.record(ep, Outcome::Failure, now);
    }
    let until = pool.record(ep, Outcome::Failure, now).expect("ejected");
    assert_eq!(until.since(now).as_secs(), 30);
}

#[test]
fn max_ejection_percent_limits_ejections_but_one_is_always_allowed() {
    let (pool, eps, _r) = pool_of(10, PoolConfig::default()); // 10 % of 10 = 1
    let t = secs(10);
    for _ in 0..5 {
        pool.record(&eps[0], Outcome::Failure, t);
    }
    assert!(eps[0].ejected_until(t).is_some());
    for _ in 0..8 {
        assert_eq!(
            pool.record(&eps[1], Outcome::Failure, t),
            None,
            "over max-ejection-percent"
        );
    }
    assert!(eps[1].ejected_until(t).is_none());
    // Once the first returns, the second's next failure ejects it.
    let later = secs(40);
    assert!(pool.record(&eps[1], Outcome::Failure, later).is_some());

    let (small, eps, _r) = pool_of(3, PoolConfig::default()); // 10 % of 3 rounds to 0: still 1
    for _ in 0..5 {
        small.record(&eps[2], Outcome::Failure, t);
    }
    assert!(eps[2].ejected_until(t).is_some());
}

#[test]
fn panic_threshold_ignores_ejection_below_half_the_pool() {
    let config = PoolConfig {
        outlier: OutlierConfig {
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        },
        ..PoolConfig::default()
    };
    let (pool, eps, _r) = pool_of(4, config);
    let t = secs(100);
    let eject = |ep: &Arc<EndpointState>| {
        for _ in 0..5 {
            pool.record(ep, Outcome::Failure, t);
        }
        assert!(ep.ejected_until(t).is_some());
    };
    eject(&eps[0]);
    eject(&eps[1]);
    // Two of four left = half: ejection holds.
    let (counts, reasons) = picks(&pool, t, 4_000, 3);
    assert_eq!(counts.len(), 2);
    assert!(!counts.contains_key(&eps[0].addr()) && !counts.contains_key(&eps[1].addr()));
    assert_eq!(reasons, vec![PickReason::Primary]);
    eject(&eps[2]);
    // One of four left: panic, every endpoint is used again.
    let (counts, reasons) = picks(&pool, t, 4_000, 4);
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert_eq!(reasons, vec![PickReason::Panic]);
}

#[test]
fn retry_after_lowers_weight_for_its_duration_and_counts_as_failure() {
    let config = PoolConfig {
        algorithm: Algorithm::RoundRobin,
        ..PoolConfig::default()
    };
    let (pool, eps, _r) = pool_of(2, config);
    let t = secs(0);
    pool.record(
        &eps[0],
        Outcome::Overloaded {
            retry_after: Duration::from_secs(10),
        },
        t,
    );
    // Weight 1 x 0.1 against 1: smooth round robin gives exactly 1 in 11.
    let (counts, _) = picks(&pool, secs(5), 1_100, 5);
    assert_eq!(counts[&eps[0].addr()], 100);
    assert_eq!(counts[&eps[1].addr()], 1_000);
    let (counts, _) = picks(&pool, secs(10), 1_000, 6);
    assert_eq!(counts[&eps[0].addr()], 500, "penalty over");
    // It was a failure too: four more make five.
    for _ in 0..3 {
        assert_eq!(pool.record(&eps[0], Outcome::Failure, secs(11)), None);
    }
    assert!(pool.record(&eps[0], Outcome::Failure, secs(11)).is_some());
}

#[test]
fn slow_start_ramps_a_new_endpoints_share() {
    let config = PoolConfig {
        algorithm: Algorithm::RoundRobin,
        slow_start: Some(SlowStart::new(Duration::from_secs(60))),
        ..PoolConfig::default()
    };
    let registry = EndpointRegistry::new();
    let pool = Pool::new(config);
    let old = EndpointSpec::ready(addr(1));
    pool.update(std::slice::from_ref(&old), &registry, secs(0));
    // The new endpoint becomes ready at 100 s (first seen then: no readiness time given).
    pool.update(&[old, EndpointSpec::ready(addr(2))], &registry, secs(100));
    let share_of_new = |at: u64| {
        let (counts, _) = picks(&pool, secs(at), 3_300, 7);
        counts.get(&addr(2)).copied().unwrap_or(0)
    };
    // Old has weight 1 (its window is long over), the new one 0.1 (floor), 0.5, then 1:
    // exact smooth round-robin shares over whole cycles.
    assert_eq!(share_of_new(100), 300, "1 in 11 at the min weight");
    assert_eq!(share_of_new(130), 1_100, "1 in 3 at half the window");
    assert_eq!(share_of_new(160), 1_650, "equal after the window");
}

#[test]
fn readiness_time_from_the_source_wins_over_first_seen() {
    let config = PoolConfig {
        slow_start: Some(SlowStart::new(Duration::from_secs(60))),
        ..PoolConfig::default()
    };
    let registry = EndpointRegistry::new();
    let pool = Pool::new(config);
    // A restart of weir at 1,000 s sees an endpoint that has been ready since 10 s: it must
    // not fade in again.
    let spec = EndpointSpec {
        ready_since: Some(secs(10)),
        ..EndpointSpec::ready(addr(1))
    };
    pool.update(&[spec], &registry, secs(1_000));
    assert_eq!(pool.endpoints()[0].ready_since(), secs(10));
    let fresh = EndpointSpec::ready(addr(2));
    pool.update(&[fresh], &registry, secs(1_000));
    assert_eq!(pool.endpoints()[0].ready_since(), secs(1_000));
}
