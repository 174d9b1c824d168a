//! Zone-aware routing (docs/balancing.md): shares equal Envoy's formula with weir's replicas
//! assumed evenly spread over the zones. Tolerance: ±1 percentage point over 100,000
//! picks (one standard deviation of a share near 1/2 is 0.16 points).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::net::SocketAddr;
use weir_balancer::{
    EndpointRegistry, EndpointSpec, Nanos, Outcome, OutlierConfig, PickReason, PickRequest, Pool,
    PoolConfig,
};

const PICKS: usize = 100_000;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 8080))
}

/// A zone-aware pool in `local` over endpoints with these zones.
fn zoned_pool(local: &str, zones: &[&str], config: PoolConfig) -> (Pool, EndpointRegistry) {
    let registry = EndpointRegistry::new();
    let specs: Vec<_> = zones
        .iter()
        .enumerate()
        .map(|(i, z)| EndpointSpec {
            zone: Some((*z).to_string()),
            ..EndpointSpec::ready(addr(i + 1))
        })
        .collect();
    let pool = Pool::in_zone(
        PoolConfig {
            zone_aware: true,
            ..config
        },
        Some(local),
    );
    pool.update(&specs, &registry, Nanos::ZERO);
    (pool, registry)
}

/// Share of picks per zone, and the reasons seen.
fn zone_shares(pool: &Pool, seed: u64) -> (HashMap<String, f64>, HashMap<&'static str, usize>) {
    let zone_of: HashMap<SocketAddr, String> = pool
        .endpoints()
        .iter()
        .map(|e| (e.addr(), e.zone().unwrap_or("").to_string()))
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut reasons = HashMap::new();
    for _ in 0..PICKS {
        let pick = pool.pick(&PickRequest::default(), &mut rng);
        *reasons.entry(pick.reason.as_str()).or_insert(0) += 1;
        let ep = pick.endpoint.expect("endpoint");
        *counts.entry(zone_of[&ep.addr()].clone()).or_insert(0) += 1;
    }
    let shares = counts
        .into_iter()
        .map(|(z, c)| (z, c as f64 / PICKS as f64))
        .collect();
    (shares, reasons)
}

fn near(shares: &HashMap<String, f64>, zone: &str, expected: f64) {
    let got = shares.get(zone).copied().unwrap_or(0.0);
    assert!(
        (got - expected).abs() <= 0.01,
        "zone {zone}: {got:.4}, expected {expected:.4} ({shares:?})"
    );
}

/// Endpoints: 2 in a, 4 in b, 6 in c (12). Replicas assumed 1/3 per zone.
const SPREAD: [&str; 12] = ["a", "a", "b", "b", "b", "b", "c", "c", "c", "c", "c", "c"];

#[test]
fn a_zone_with_enough_endpoints_keeps_all_its_traffic() {
    // c holds 1/2 of the endpoints >= 1/3 of the traffic; b holds exactly 1/3.
    for local in ["c", "b"] {
        let (pool, _r) = zoned_pool(local, &SPREAD, PoolConfig::default());
        let (shares, reasons) = zone_shares(&pool, 1);
        near(&shares, local, 1.0);
        assert_eq!(reasons.get("primary"), Some(&PICKS));
    }
}

#[test]
fn a_small_zone_keeps_its_share_and_spills_the_rest_by_residual_capacity() {
    // a: upstream 1/6 < 1/3: stays local with (1/6)/(1/3) = 1/2. Residual capacity:
    // b: 1/3 - 1/3 = 0, c: 1/2 - 1/3 = 1/6: the whole spill goes to c.
    let (pool, _r) = zoned_pool("a", &SPREAD, PoolConfig::default());
    let (shares, reasons) = zone_shares(&pool, 2);
    near(&shares, "a", 0.5);
    near(&shares, "b", 0.0);
    near(&shares, "c", 0.5);
    let spilled = *reasons.get("zone_spill").unwrap_or(&0) as f64 / PICKS as f64;
    assert!((spilled - 0.5).abs() <= 0.01, "{reasons:?}");

    // Four zones, local d empty of endpoints: replicas 1/4 each; a 2/12, b 4/12, c 6/12.
    // Local share 0; residual b = 1/3 - 1/4 = 1/12, c = 1/2 - 1/4 = 1/4: b gets 1/4 of the
    // spill, c 3/4, a none.
    let (pool, _r) = zoned_pool("d", &SPREAD, PoolConfig::default());
    let (shares, _) = zone_shares(&pool, 3);
    near(&shares, "a", 0.0);
    near(&shares, "b", 0.25);
    near(&shares, "c", 0.75);
}

#[test]
fn too_few_endpoints_or_zones_turn_it_off() {
    // 5 endpoints: below the minimum of 6, so no zone preference: a gets 2/5.
    let (pool, _r) = zoned_pool("a", &["a", "a", "b", "b", "b"], PoolConfig::default());
    let (shares, _) = zone_shares(&pool, 4);
    near(&shares, "a", 0.4);
    // One zone only.
    let (pool, _r) = zoned_pool("a", &["b"; 8], PoolConfig::default());
    let (shares, _) = zone_shares(&pool, 5);
    near(&shares, "b", 1.0);
}

#[test]
fn a_pool_in_panic_ignores_zones() {
    let config = PoolConfig {
        outlier: OutlierConfig {
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        },
        ..PoolConfig::default()
    };
    let (pool, _r) = zoned_pool("c", &SPREAD, config);
    let now = Nanos::from_secs(10);
    // Eject 7 of 12 endpoints (all of a and b, one of c): 5 left < half.
    for e in pool
        .endpoints()
        .iter()
        .filter(|e| e.zone() != Some("c"))
        .chain(
            pool.endpoints()
                .iter()
                .filter(|e| e.zone() == Some("c"))
                .take(1),
        )
    {
        for _ in 0..5 {
            pool.record(e, Outcome::Failure, now);
        }
    }
    let mut rng = SmallRng::seed_from_u64(6);
    let mut zones = HashMap::new();
    for _ in 0..10_000 {
        let pick = pool.pick(
            &PickRequest {
                now,
                ..PickRequest::default()
            },
            &mut rng,
        );
        assert_eq!(pick.reason, PickReason::Panic);
        *zones
            .entry(
                pick.endpoint
                    .expect("endpoint")
                    .zone()
                    .unwrap_or("")
                    .to_string(),
            )
            .or_insert(0) += 1;
    }
    assert_eq!(zones.len(), 3, "all zones used in panic: {zones:?}");
}
