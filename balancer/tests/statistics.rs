//! Statistical tests of the pick algorithms. Every test uses a seeded RNG and states its
//! tolerance; shares are measured over 100,000 picks, where one standard deviation of a
//! share near 1/2 is 0.16 percentage points, so ±1 point is over 6 sigma.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use weir_balancer::ring::{key_hash, HashRing};
use weir_balancer::{
    Algorithm, EndpointRegistry, EndpointSpec, EndpointState, InFlightGuard, Nanos, PickReason,
    PickRequest, Pool, PoolConfig, BOUNDED_WALK,
};

const PICKS: usize = 100_000;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 8080))
}

fn pool_with(algorithm: Algorithm, weights: &[u32]) -> (Pool, Vec<Arc<EndpointState>>) {
    let registry = EndpointRegistry::new();
    let specs: Vec<_> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| EndpointSpec {
            weight: w,
            ..EndpointSpec::ready(addr(i + 1))
        })
        .collect();
    let pool = Pool::new(PoolConfig {
        algorithm,
        ..PoolConfig::default()
    });
    pool.update(&specs, &registry, Nanos::ZERO);
    let endpoints = pool.endpoints();
    (pool, endpoints)
}

/// Share (0..1) of `picks` immediate (released at once) picks per endpoint, by index.
fn shares(pool: &Pool, endpoints: &[Arc<EndpointState>], picks: usize, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..picks {
        let ep = pool
            .pick(&PickRequest::default(), &mut rng)
            .endpoint
            .expect("endpoint");
        *counts.entry(ep.addr()).or_default() += 1;
    }
    endpoints
        .iter()
        .map(|e| *counts.get(&e.addr()).unwrap_or(&0) as f64 / picks as f64)
        .collect()
}

fn assert_shares(actual: &[f64], expected: &[f64], tolerance_points: f64, what: &str) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() * 100.0 <= tolerance_points,
            "{what}: endpoint {i} got {:.2} %, expected {:.2} % ± {tolerance_points} points (all: {actual:?})",
            a * 100.0,
            e * 100.0
        );
    }
}

fn hold(endpoint: &Arc<EndpointState>, n: usize) -> Vec<InFlightGuard> {
    (0..n).map(|_| endpoint.start_request()).collect()
}

#[test]
fn p2c_idle_endpoints_share_equally() {
    let (pool, eps) = pool_with(Algorithm::LeastRequest, &[1, 1, 1]);
    let s = shares(&pool, &eps, PICKS, 1);
    assert_shares(&s, &[1.0 / 3.0; 3], 1.0, "3 idle");
}

#[test]
fn p2c_with_one_busy_endpoint() {
    // Distinct candidates: the busy endpoint loses every comparison, so it gets nothing
    // while two idle endpoints exist (Envoy, drawing with replacement, gives it 1/9).
    let (pool, eps) = pool_with(Algorithm::LeastRequest, &[1, 1, 1]);
    let _busy = hold(&eps[0], 10);
    let s = shares(&pool, &eps, PICKS, 2);
    assert_shares(&s, &[0.0, 0.5, 0.5], 1.0, "one busy of 3");

    let (pool, eps) = pool_with(Algorithm::LeastRequest, &[1, 1]);
    let _busy = hold(&eps[0], 1);
    let s = shares(&pool, &eps, PICKS, 3);
    assert_shares(&s, &[0.0, 1.0], 0.0, "one busy of 2");
}

#[test]
fn p2c_held_load_follows_weights() {
    // Requests that stay in flight: the pool equalises (in_flight + 1) / weight, so a
    // weight-2 endpoint ends up with twice the requests (±2 requests of 300).
    let (pool, eps) = pool_with(Algorithm::LeastRequest, &[2, 1]);
    let mut rng = SmallRng::seed_from_u64(4);
    let guards: Vec<_> = (0..300)
        .map(|_| {
            pool.pick(&PickRequest::default(), &mut rng)
                .endpoint
                .expect("endpoint")
                .start_request()
        })
        .collect();
    let heavy = eps[0].in_flight() as i64;
    let light = eps[1].in_flight() as i64;
    assert_eq!(heavy + light, 300);
    assert!(
        (heavy - 200).abs() <= 2 && (light - 100).abs() <= 2,
        "{heavy} / {light}"
    );
    drop(guards);
}

#[test]
fn smooth_round_robin_is_exact() {
    let (pool, eps) = pool_with(Algorithm::RoundRobin, &[5, 1, 1]);
    let mut rng = SmallRng::seed_from_u64(5);
    let names: Vec<usize> = (0..7)
        .map(|_| {
            let ep = pool
                .pick(&PickRequest::default(), &mut rng)
                .endpoint
                .expect("endpoint");
            eps.iter()
                .position(|e| Arc::ptr_eq(e, &ep))
                .expect("member")
        })
        .collect();
    assert_eq!(
        names,
        vec![0, 0, 1, 0, 2, 0, 0],
        "nginx's smooth sequence a a b a c a a"
    );
    // Exact proportions over whole cycles: no tolerance.
    let s = shares(&pool, &eps, 7_000, 6);
    assert_eq!(s, vec![5.0 / 7.0, 1.0 / 7.0, 1.0 / 7.0]);
}

#[test]
fn least_connections_never_picks_a_strictly_busier_endpoint() {
    let (pool, eps) = pool_with(Algorithm::LeastConnections, &[1, 2, 1, 3, 1, 1, 2, 1]);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut held: Vec<InFlightGuard> = Vec::new();
    for round in 0..2_000 {
        // Random churn: start and finish requests.
        if rng.random_bool(0.5) || held.is_empty() {
            let ep = &eps[rng.random_range(0..eps.len())];
            held.push(ep.start_request());
        } else {
            let i = rng.random_range(0..held.len());
            held.swap_remove(i);
        }
        let picked = pool
            .pick(&PickRequest::default(), &mut rng)
            .endpoint
            .expect("endpoint");
        let score = |e: &EndpointState| (e.in_flight() + 1) as f64 / f64::from(e.weight());
        let best = eps.iter().map(|e| score(e)).fold(f64::INFINITY, f64::min);
        assert!(
            score(&picked) <= best + 1e-12,
            "round {round}: picked score {} but {best} was available",
            score(&picked)
        );
    }
}

#[test]
fn least_connections_rotates_ties() {
    let (pool, eps) = pool_with(Algorithm::LeastConnections, &[1, 1, 1, 1]);
    let s = shares(&pool, &eps, 400, 8);
    assert_eq!(s, vec![0.25; 4], "exactly 100 each");
}

#[test]
fn random_follows_weights() {
    let (pool, eps) = pool_with(Algorithm::Random, &[3, 1]);
    let s = shares(&pool, &eps, PICKS, 9);
    assert_shares(&s, &[0.75, 0.25], 1.0, "weights 3:1");
}

/// A pool of `n` consistent-hash endpoints with bounded load `factor`.
fn bounded_pool(n: usize, factor: Option<f64>) -> (Pool, EndpointRegistry) {
    let registry = EndpointRegistry::new();
    let specs: Vec<_> = (1..=n).map(|i| EndpointSpec::ready(addr(i))).collect();
    let pool = Pool::new(PoolConfig {
        algorithm: Algorithm::ConsistentHash,
        hash_balance_factor: factor,
        ..PoolConfig::default()
    });
    pool.update(&specs, &registry, Nanos::ZERO);
    (pool, registry)
}

#[test]
fn bounded_load_caps_every_endpoint_at_ceil_factor_times_average_plus_one() {
    // Worst case: every request carries the same key, and all stay in flight. After each
    // pick no endpoint may hold more than ceil(f x average) + 1, average = in flight / n.
    for (n, factor) in [(3, 1.25), (5, 1.25), (10, 1.5), (10, 1.0), (20, 2.0)] {
        let (pool, _registry) = bounded_pool(n, Some(factor));
        let mut rng = SmallRng::seed_from_u64(11);
        let hot = key_hash(b"the-one-hot-key");
        let mut guards = Vec::new();
        let mut spills = 0;
        for i in 1..=(n * 40) {
            let pick = pool.pick(
                &PickRequest {
                    tried: &[],
                    key_hash: hot,
                    now: Nanos::ZERO,
                },
                &mut rng,
            );
            if pick.reason == PickReason::BoundedLoadSpill {
                spills += 1;
            }
            let ep = pick.endpoint.expect("endpoint");
            guards.push(pool.start_request(&ep));
            let average = i as f64 / n as f64;
            let cap = (factor * average).ceil() as u64 + 1;
            let max = pool
                .endpoints()
                .iter()
                .map(|e| e.in_flight())
                .max()
                .unwrap_or(0);
            assert!(
                max <= cap,
                "n={n} f={factor}: after {i} picks an endpoint holds {max} > {cap}"
            );
        }
        assert!(spills > 0, "the hot key must spill");
        assert_eq!(pool.in_flight(), (n * 40) as u64);
        drop(guards);
        assert_eq!(pool.in_flight(), 0, "guards release the pool total");
    }
}

#[test]
fn unbounded_hashing_piles_a_hot_key_onto_one_endpoint() {
    let (pool, _registry) = bounded_pool(5, None);
    let mut rng = SmallRng::seed_from_u64(12);
    let hot = key_hash(b"the-one-hot-key");
    let guards: Vec<_> = (0..100)
        .map(|_| {
            let pick = pool.pick(
                &PickRequest {
                    tried: &[],
                    key_hash: hot,
                    now: Nanos::ZERO,
                },
                &mut rng,
            );
            assert_eq!(pick.reason, PickReason::Primary);
            pool.start_request(&pick.endpoint.expect("endpoint"))
        })
        .collect();
    let max = pool
        .endpoints()
        .iter()
        .map(|e| e.in_flight())
        .max()
        .unwrap_or(0);
    assert_eq!(max, 100);
    drop(guards);
}

#[test]
fn bounded_load_walks_at_most_the_cap_then_takes_the_least_loaded_seen() {
    let n = 30;
    let (pool, _registry) = bounded_pool(n, Some(1.25));
    let mut rng = SmallRng::seed_from_u64(13);
    let key = key_hash(b"k");
    // The pool's members are sorted by address, as `addr(1..=n)` is: the same ring.
    let addrs: Vec<SocketAddr> = (1..=n).map(addr).collect();
    let ring = HashRing::new(&addrs);
    let walk: Vec<usize> = ring.walk(ring.position(key)).collect();
    let endpoints = pool.endpoints();
    let owner = pool.pick(
        &PickRequest {
            tried: &[],
            key_hash: key,
            now: Nanos::ZERO,
        },
        &mut rng,
    );
    assert_eq!(owner.reason, PickReason::Primary);
    assert_eq!(owner.endpoint.expect("owner").addr(), addrs[walk[0]]);

    // Overload exactly the first BOUNDED_WALK endpoints along the key's walk, the k-th
    // with 110 - k requests; everything after them is idle. Average = 1 + 1045 / 30 ~ 35,
    // target ~ 44: all ten are over it, so the walk stops there (the idle eleventh is never
    // reached) and takes the least loaded of the ten, the tenth.
    let mut guards = Vec::new();
    for (k, &i) in walk.iter().take(BOUNDED_WALK).enumerate() {
        for _ in 0..(110 - k) {
            guards.push(pool.start_request(&endpoints[i]));
        }
    }
    let pick = pool.pick(
        &PickRequest {
            tried: &[],
            key_hash: key,
            now: Nanos::ZERO,
        },
        &mut rng,
    );
    assert_eq!(pick.reason, PickReason::BoundedLoadSpill);
    assert_eq!(
        pick.endpoint.expect("endpoint").addr(),
        addrs[walk[BOUNDED_WALK - 1]]
    );

    // Relieve the third endpoint along the walk below target: the walk stops there.
    let third = addrs[walk[2]];
    guards.retain(|g| g.endpoint().addr() != third);
    let pick = pool.pick(
        &PickRequest {
            tried: &[],
            key_hash: key,
            now: Nanos::ZERO,
        },
        &mut rng,
    );
    assert_eq!(pick.reason, PickReason::BoundedLoadSpill);
    assert_eq!(pick.endpoint.expect("endpoint").addr(), third);
    drop(guards);
}

#[test]
fn consistent_hash_retries_walk_on_along_the_ring() {
    let (pool, _registry) = bounded_pool(4, None);
    let mut rng = SmallRng::seed_from_u64(14);
    let key = key_hash(b"user-7");
    let mut tried = Vec::new();
    for _ in 0..4 {
        let ep = pool
            .pick(
                &PickRequest {
                    tried: &tried,
                    key_hash: key,
                    now: Nanos::ZERO,
                },
                &mut rng,
            )
            .endpoint
            .expect("endpoint");
        assert!(!tried.contains(&ep.addr()));
        tried.push(ep.addr());
    }
    // Deterministic: the same key walks the same way.
    let again = pool
        .pick(
            &PickRequest {
                tried: &tried[..1],
                key_hash: key,
                now: Nanos::ZERO,
            },
            &mut rng,
        )
        .endpoint
        .expect("endpoint");
    assert_eq!(again.addr(), tried[1]);
}

#[test]
fn peak_ewma_prefers_fast_endpoints_until_they_queue() {
    let (pool, eps) = pool_with(Algorithm::PeakEwma, &[1, 1]);
    let now = Nanos::from_secs(100);
    eps[0].observe_latency(std::time::Duration::from_millis(10), now);
    eps[1].observe_latency(std::time::Duration::from_millis(30), now);
    let pick = |seed| {
        pool.pick(
            &PickRequest {
                now,
                ..PickRequest::default()
            },
            &mut SmallRng::seed_from_u64(seed),
        )
        .endpoint
        .expect("endpoint")
        .addr()
    };
    assert_eq!(pick(1), eps[0].addr(), "10 ms x 1 beats 30 ms x 1");
    let _queue = hold(&eps[0], 3);
    assert_eq!(pick(2), eps[1].addr(), "10 ms x 4 loses to 30 ms x 1");
}

#[test]
fn peak_ewma_values_unmeasured_endpoints_at_the_median() {
    // A = 10 ms, B = 20 ms, C = 30 ms, U unmeasured (= median 20 ms). Over the six equally
    // likely pairs: A wins 3, B wins B-C and half of B-U, U wins U-C and half of B-U, C none.
    let (pool, eps) = pool_with(Algorithm::PeakEwma, &[1, 1, 1, 1]);
    let now = Nanos::from_secs(100);
    for (ep, ms) in eps.iter().zip([10u64, 20, 30]) {
        ep.observe_latency(std::time::Duration::from_millis(ms), now);
    }
    let mut rng = SmallRng::seed_from_u64(15);
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..PICKS {
        let ep = pool
            .pick(
                &PickRequest {
                    now,
                    ..PickRequest::default()
                },
                &mut rng,
            )
            .endpoint
            .expect("endpoint");
        *counts.entry(ep.addr()).or_default() += 1;
    }
    let share: Vec<f64> = eps
        .iter()
        .map(|e| *counts.get(&e.addr()).unwrap_or(&0) as f64 / PICKS as f64)
        .collect();
    assert_shares(&share, &[0.5, 0.25, 0.0, 0.25], 1.0, "A, B, C, unmeasured");
}

#[test]
fn bounded_load_on_occupancy_sees_short_requests_that_in_flight_misses() {
    // The key's owner just served 100 requests of 10 ms each: nothing in flight, but
    // 100 x 10 ms / 150 ms = 6.7 seconds of work per second. On in-flight it still looks
    // idle; on occupancy it is over 1.25 x the average and the key spills.
    for (signal, expected) in [
        (weir_balancer::LoadSignal::InFlight, PickReason::Primary),
        (
            weir_balancer::LoadSignal::Occupancy,
            PickReason::BoundedLoadSpill,
        ),
    ] {
        let registry = EndpointRegistry::new();
        let specs: Vec<_> = (1..=10).map(|i| EndpointSpec::ready(addr(i))).collect();
        let pool = Pool::new(PoolConfig {
            algorithm: Algorithm::ConsistentHash,
            hash_balance_factor: Some(1.25),
            hash_load_signal: signal,
            ..PoolConfig::default()
        });
        pool.update(&specs, &registry, Nanos::ZERO);
        let now = Nanos::from_secs(100);
        let key = key_hash(b"busy-key");
        let request = PickRequest {
            tried: &[],
            key_hash: key,
            now,
        };
        let mut rng = SmallRng::seed_from_u64(16);
        let owner = pool.pick(&request, &mut rng).endpoint.expect("owner");
        for _ in 0..100 {
            pool.observe_latency(&owner, std::time::Duration::from_millis(10), now);
        }
        let pick = pool.pick(&request, &mut rng);
        assert_eq!(pick.reason, expected, "{signal:?}");
    }
}

/// Feeds `latency_ms[i]` as the response time of endpoint `i`, at 10 ms steps from `from`,
/// 20 samples each (enough to refresh the pool's median reference).
fn observe(pool: &Pool, eps: &[Arc<EndpointState>], latency_ms: &[u64], from: Nanos) -> Nanos {
    let mut now = from;
    for _ in 0..20 {
        now = now.after(std::time::Duration::from_millis(10));
        for (e, &ms) in eps.iter().zip(latency_ms) {
            pool.observe_latency(e, std::time::Duration::from_millis(ms), now);
        }
    }
    now
}

#[test]
fn latency_health_factor_steers_least_request_off_a_slow_endpoint() {
    let (pool, eps) = pool_with(Algorithm::LeastRequest, &[1, 1, 1]);
    let now = observe(&pool, &eps, &[10, 10, 30], Nanos::ZERO);
    // 30 ms against a 10 ms median: factor 30 / (1.25 x 10) = 2.4.
    let factor = pool.health_factor(&eps[2], now);
    assert!((factor - 2.4).abs() < 0.01, "factor {factor}");
    assert_eq!(pool.health_factor(&eps[0], now), 1.0);
    // Idle: (0 + 1) x 2.4 loses every comparison; the two fast endpoints split the picks.
    let pick_shares = |pool: &Pool, seed| {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = [0usize; 3];
        for _ in 0..PICKS {
            let request = PickRequest {
                now,
                ..PickRequest::default()
            };
            let ep = pool.pick(&request, &mut rng).endpoint.expect("endpoint");
            if let Some(i) = eps.iter().position(|e| e.addr() == ep.addr()) {
                counts[i] += 1;
            }
        }
        counts.map(|c| c as f64 / PICKS as f64)
    };
    assert_shares(&pick_shares(&pool, 5), &[0.5, 0.5, 0.0], 1.0, "idle");
    // Two requests held on each fast endpoint: (2 + 1) x 1 > (0 + 1) x 2.4, so the slow
    // one wins every pair it is in (2/3 of pairs).
    let _held: Vec<_> = [&eps[0], &eps[1]]
        .into_iter()
        .flat_map(|e| hold(e, 2))
        .collect();
    assert_shares(
        &pick_shares(&pool, 6),
        &[1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0],
        1.0,
        "fast endpoints busy",
    );
}

#[test]
fn latency_health_factor_tolerates_spread_fades_when_idle_and_can_be_off() {
    let (pool, eps) = pool_with(Algorithm::LeastRequest, &[1, 1, 1]);
    let now = observe(&pool, &eps, &[10, 12, 40], Nanos::ZERO);
    // Within 1.25x of the median (12 ms): healthy.
    assert_eq!(pool.health_factor(&eps[0], now), 1.0);
    assert_eq!(pool.health_factor(&eps[1], now), 1.0);
    let factor = pool.health_factor(&eps[2], now);
    assert!((factor - 40.0 / 15.0).abs() < 0.01, "factor {factor}");
    // No sample for 12 s: 40 % of the 30 s fade has passed, 60 % of the excess is left;
    // after 30 s none.
    let later = now.after(std::time::Duration::from_secs(12));
    let faded = pool.health_factor(&eps[2], later);
    let expected = 1.0 + (40.0 / 15.0 - 1.0) * 0.6;
    assert!(
        (faded - expected).abs() < 0.01,
        "faded {faded}, expected {expected}"
    );
    let gone = now.after(std::time::Duration::from_secs(30));
    assert_eq!(pool.health_factor(&eps[2], gone), 1.0);

    let registry = EndpointRegistry::new();
    let off = Pool::new(PoolConfig {
        latency_health_factor: false,
        ..PoolConfig::default()
    });
    let specs: Vec<_> = (1..=3).map(|i| EndpointSpec::ready(addr(i))).collect();
    off.update(&specs, &registry, Nanos::ZERO);
    let off_eps = off.endpoints();
    let now = observe(&off, &off_eps, &[10, 10, 30], Nanos::ZERO);
    assert_eq!(off.health_factor(&off_eps[2], now), 1.0);
    assert_shares(
        &shares(&off, &off_eps, PICKS, 7),
        &[1.0 / 3.0; 3],
        1.0,
        "off",
    );
}
