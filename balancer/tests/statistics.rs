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
use weir_balancer::{
    Algorithm, EndpointRegistry, EndpointSpec, EndpointState, InFlightGuard, Pool,
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
    let pool = Pool::new(algorithm);
    pool.update(&specs, &registry);
    let endpoints = pool.endpoints();
    (pool, endpoints)
}

/// Share (0..1) of `picks` immediate (released at once) picks per endpoint, by index.
fn shares(pool: &Pool, endpoints: &[Arc<EndpointState>], picks: usize, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..picks {
        let ep = pool.pick(&[], &mut rng).endpoint.expect("endpoint");
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
            pool.pick(&[], &mut rng)
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
            let ep = pool.pick(&[], &mut rng).endpoint.expect("endpoint");
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
        let picked = pool.pick(&[], &mut rng).endpoint.expect("endpoint");
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
