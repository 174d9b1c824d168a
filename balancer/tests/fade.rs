//! N-ring fade-in for consistent hashing (docs/balancing.md), under an injected clock.
//! Tolerances: shares are measured over the keys whose owner differs between rings; each
//! stated tolerance is at least 4 standard deviations for the number of such keys.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::net::SocketAddr;
use std::time::Duration;
use weir_balancer::fade::FADE_EXPONENT;
use weir_balancer::ring::{key_hash, HashRing};
use weir_balancer::{
    Algorithm, EndpointRegistry, EndpointSpec, Nanos, PickReason, PickRequest, Pool, PoolConfig,
    SlowStart,
};

const WINDOW: u64 = 100;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 8080))
}

fn secs(s: u64) -> Nanos {
    Nanos::from_secs(s)
}

fn spec(i: usize, ready: u64) -> EndpointSpec {
    EndpointSpec {
        ready_since: Some(secs(ready)),
        ..EndpointSpec::ready(addr(i))
    }
}

fn fading_pool(specs: &[EndpointSpec], now: u64) -> (Pool, EndpointRegistry) {
    let registry = EndpointRegistry::new();
    let pool = Pool::new(PoolConfig {
        algorithm: Algorithm::ConsistentHash,
        slow_start: Some(SlowStart::new(Duration::from_secs(WINDOW))),
        ..PoolConfig::default()
    });
    pool.update(specs, &registry, secs(now));
    (pool, registry)
}

struct Rings {
    rings: Vec<(Vec<SocketAddr>, HashRing)>,
}

impl Rings {
    fn new(sets: &[Vec<usize>]) -> Self {
        Rings {
            rings: sets
                .iter()
                .map(|set| {
                    let addrs: Vec<SocketAddr> = set.iter().map(|&i| addr(i)).collect();
                    let ring = HashRing::new(&addrs);
                    (addrs, ring)
                })
                .collect(),
        }
    }

    fn owners(&self, key: u64) -> Vec<SocketAddr> {
        self.rings
            .iter()
            .map(|(addrs, ring)| addrs[ring.owner(key).expect("owner")])
            .collect()
    }
}

fn pick(pool: &Pool, key: u64, now: u64, rng: &mut SmallRng) -> (SocketAddr, PickReason) {
    let pick = pool.pick(
        &PickRequest {
            tried: &[],
            key_hash: key,
            now: secs(now),
        },
        rng,
    );
    (pick.endpoint.expect("endpoint").addr(), pick.reason)
}

#[test]
fn a_scale_up_fades_in_at_progress_to_the_two_and_a_half() {
    // 10 endpoints ready long ago; 5 more ready at 1,000 s.
    let old: Vec<usize> = (0..10).collect();
    let all: Vec<usize> = (0..15).collect();
    let mut specs: Vec<EndpointSpec> = old.iter().map(|&i| spec(i, 0)).collect();
    specs.extend((10..15).map(|i| spec(i, 1_000)));
    let (pool, _registry) = fading_pool(&specs, 1_000);
    let rings = Rings::new(&[old.clone(), all.clone()]);
    let new_addrs: Vec<SocketAddr> = (10..15).map(addr).collect();
    let mut rng = SmallRng::seed_from_u64(1);

    for (at, tolerance) in [(1_025u64, 1.0), (1_050, 1.5), (1_075, 2.0)] {
        let progress = (at - 1_000) as f64 / WINDOW as f64;
        let expected = progress.powf(FADE_EXPONENT);
        let (mut moved, mut to_new) = (0usize, 0usize);
        for k in 0..100_000u64 {
            let key = key_hash(format!("key-{k}").as_bytes());
            let owners = rings.owners(key);
            let (got, reason) = pick(&pool, key, at, &mut rng);
            assert!(
                owners.contains(&got),
                "a key only ever goes to one of its ring owners"
            );
            if new_addrs.contains(&got) {
                // Warming endpoints only receive keys they own in the final ring.
                assert_eq!(got, owners[1]);
                assert_eq!(reason, PickReason::Primary);
            }
            if owners[0] != owners[1] {
                moved += 1;
                to_new += usize::from(got == owners[1]);
            } else {
                assert_eq!(got, owners[0]);
            }
        }
        let share = to_new as f64 / moved as f64;
        assert!(
            (share - expected).abs() * 100.0 <= tolerance,
            "at {at} s: {share:.4} of moved keys on the new ring, expected {expected:.4} ± {tolerance} points ({moved} keys)"
        );
    }
    // After the window: everything on the full ring, exactly.
    for k in 0..10_000u64 {
        let key = key_hash(format!("key-{k}").as_bytes());
        assert_eq!(pick(&pool, key, 1_100, &mut rng).0, rings.owners(key)[1]);
    }
}

#[test]
fn concurrent_scale_ups_fade_independently() {
    // Base: 10 endpoints. Batch A (3) ready at 1,000 s, batch B (3) at 1,050 s. At 1,075 s:
    // ring B is used with 0.25^2.5, else ring A with 0.75^2.5, else the base ring.
    let base: Vec<usize> = (0..10).collect();
    let with_a: Vec<usize> = (0..13).collect();
    let with_b: Vec<usize> = (0..16).collect();
    let mut specs: Vec<EndpointSpec> = base.iter().map(|&i| spec(i, 0)).collect();
    specs.extend((10..13).map(|i| spec(i, 1_000)));
    specs.extend((13..16).map(|i| spec(i, 1_050)));
    let (pool, _registry) = fading_pool(&specs, 1_050);
    let rings = Rings::new(&[base, with_a, with_b]);
    let p_b = 0.25f64.powf(FADE_EXPONENT);
    let p_a = (1.0 - p_b) * 0.75f64.powf(FADE_EXPONENT);
    let mut rng = SmallRng::seed_from_u64(2);
    let (mut distinct, mut on_b, mut on_a) = (0usize, 0usize, 0usize);
    for k in 0..400_000u64 {
        let key = key_hash(format!("k{k}").as_bytes());
        let owners = rings.owners(key);
        if owners[0] == owners[1] || owners[1] == owners[2] || owners[0] == owners[2] {
            continue;
        }
        distinct += 1;
        let (got, _) = pick(&pool, key, 1_075, &mut rng);
        on_b += usize::from(got == owners[2]);
        on_a += usize::from(got == owners[1]);
    }
    let (share_b, share_a) = (on_b as f64 / distinct as f64, on_a as f64 / distinct as f64);
    assert!(
        distinct > 5_000,
        "too few keys with three distinct owners: {distinct}"
    );
    assert!(
        (share_b - p_b).abs() * 100.0 <= 1.0,
        "ring B {share_b:.4} vs {p_b:.4}"
    );
    assert!(
        (share_a - p_a).abs() * 100.0 <= 2.5,
        "ring A {share_a:.4} vs {p_a:.4}"
    );
}

#[test]
fn removals_apply_to_every_ring_and_restarts_do_not_refade() {
    let mut specs: Vec<EndpointSpec> = (0..10).map(|i| spec(i, 0)).collect();
    specs.extend((10..15).map(|i| spec(i, 1_000)));
    let (pool, registry) = fading_pool(&specs, 1_000);
    let removed = addr(3);
    specs.retain(|s| s.addr != removed);
    pool.update(&specs, &registry, secs(1_010));
    let mut rng = SmallRng::seed_from_u64(3);
    for k in 0..20_000u64 {
        let key = key_hash(format!("r{k}").as_bytes());
        assert_ne!(pick(&pool, key, 1_030, &mut rng).0, removed);
    }
    // A restarted weir at 5,000 s learns readiness times from the source: nothing is young,
    // one ring, no fade reason anywhere.
    let (pool, _registry) = fading_pool(&specs, 5_000);
    for k in 0..5_000u64 {
        let key = key_hash(format!("s{k}").as_bytes());
        assert_eq!(pick(&pool, key, 5_000, &mut rng).1, PickReason::Primary);
    }
}

#[test]
fn older_ring_picks_say_fade_in_ring() {
    let mut specs: Vec<EndpointSpec> = (0..10).map(|i| spec(i, 0)).collect();
    specs.extend((10..15).map(|i| spec(i, 1_000)));
    let (pool, _registry) = fading_pool(&specs, 1_000);
    let mut rng = SmallRng::seed_from_u64(4);
    // Right at the start the new ring's share is 0: every pick uses the base ring.
    for k in 0..1_000u64 {
        let key = key_hash(format!("f{k}").as_bytes());
        let (got, reason) = pick(&pool, key, 1_000, &mut rng);
        assert_eq!(reason, PickReason::FadeInRing);
        assert!(!(10..15).map(addr).any(|a| a == got));
    }
}

#[test]
fn every_key_moves_once_and_never_back() {
    // 10 endpoints ready long ago; 5 more ready at 1,000 s. Each key is followed through
    // the whole window in 1 s steps: its owner may change from the old ring's to the new
    // ring's once, and never back (per-request draws would alternate between the two).
    let old: Vec<usize> = (0..10).collect();
    let all: Vec<usize> = (0..15).collect();
    let mut specs: Vec<EndpointSpec> = old.iter().map(|&i| spec(i, 0)).collect();
    specs.extend((10..15).map(|i| spec(i, 1_000)));
    let (pool, _registry) = fading_pool(&specs, 1_000);
    let rings = Rings::new(&[old, all]);
    let mut rng = SmallRng::seed_from_u64(3);
    let mut moving = 0;
    for k in 0..2_000u64 {
        let key = key_hash(format!("key-{k}").as_bytes());
        let owners = rings.owners(key);
        if owners[0] == owners[1] {
            continue;
        }
        moving += 1;
        let mut moved_at = None;
        for at in 1_000..=1_000 + WINDOW {
            let (got, _) = pick(&pool, key, at, &mut rng);
            match (moved_at, got == owners[1]) {
                (None, true) => moved_at = Some(at),
                (Some(when), false) => panic!("key {k} moved at {when} s and went back at {at} s"),
                _ => {}
            }
        }
        assert!(moved_at.is_some(), "key {k} never moved within the window");
    }
    // About a third of the keys belong to the 5 new endpoints of 15.
    assert!((500..=850).contains(&moving), "{moving} moving keys");
}
