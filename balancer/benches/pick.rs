//! Pick cost per algorithm at 10, 100 and 1,000 endpoints, alone and with a second thread
//! picking from the same pool at the same time; and the cost of updating a 1,000-endpoint
//! pool in place. Targets (docs/balancing.md): P2C < 100 ns, bounded consistent hash < 300 ns at
//! 1,000 endpoints. Run: `cargo bench -p weir-balancer --bench pick`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use weir_balancer::ring::key_hash;
use weir_balancer::{
    Algorithm, EndpointRegistry, EndpointSpec, Nanos, PickRequest, Pool, PoolConfig,
};

fn specs(n: usize) -> Vec<EndpointSpec> {
    (0..n)
        .map(|i| {
            EndpointSpec::ready(SocketAddr::from((
                [
                    10,
                    (i / 65536) as u8,
                    (i / 256 % 256) as u8,
                    (i % 256) as u8,
                ],
                8080,
            )))
        })
        .collect()
}

/// The injected time of every pick (latency samples are taken just before it).
const NOW: Nanos = Nanos(1_000_000_000);

fn configs() -> Vec<(&'static str, PoolConfig)> {
    let of = |algorithm, hash_balance_factor| PoolConfig {
        algorithm,
        hash_balance_factor,
        ..PoolConfig::default()
    };
    vec![
        ("least_request_p2c", of(Algorithm::LeastRequest, None)),
        (
            "least_request_p2c_no_health_factor",
            PoolConfig {
                latency_health_factor: false,
                ..of(Algorithm::LeastRequest, None)
            },
        ),
        ("least_connections", of(Algorithm::LeastConnections, None)),
        (
            "least_connections_no_health_factor",
            PoolConfig {
                latency_health_factor: false,
                ..of(Algorithm::LeastConnections, None)
            },
        ),
        ("round_robin_smooth", of(Algorithm::RoundRobin, None)),
        ("random", of(Algorithm::Random, None)),
        ("consistent_hash", of(Algorithm::ConsistentHash, None)),
        (
            "consistent_hash_bounded_1.25",
            of(Algorithm::ConsistentHash, Some(1.25)),
        ),
    ]
}

/// Picks and releases at once, with a realistic spread of in-flight requests held open so
/// bounded load and least-request compare non-trivial loads.
fn bench_pick(c: &mut Criterion, contended: bool) {
    let name = if contended { "pick_contended" } else { "pick" };
    let mut group = c.benchmark_group(name);
    for (label, config) in configs() {
        for n in [10usize, 100, 1_000] {
            let registry = EndpointRegistry::new();
            let pool = Arc::new(Pool::new(config));
            pool.update(&specs(n), &registry, Nanos::ZERO);
            let mut rng = SmallRng::seed_from_u64(1);
            // Latency samples of 5–40 ms on every endpoint, so the latency health factor is
            // computed as in production (a median exists, some endpoints are over it).
            for e in pool.endpoints() {
                let ms = rng.random_range(5..40);
                pool.observe_latency(&e, std::time::Duration::from_millis(ms), NOW);
            }
            pool.observe_latency(
                &pool.endpoints()[0],
                std::time::Duration::from_millis(10),
                Nanos(NOW.0 + 200_000_000),
            );
            let held: Vec<_> = pool
                .endpoints()
                .iter()
                .flat_map(|e| {
                    let k = rng.random_range(0..4);
                    (0..k).map(|_| pool.start_request(e)).collect::<Vec<_>>()
                })
                .collect();
            let stop = Arc::new(AtomicBool::new(false));
            let rival = contended.then(|| {
                let (pool, stop) = (Arc::clone(&pool), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(2);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = key_hash(&i.to_le_bytes());
                        let pick = pool.pick(
                            &PickRequest {
                                tried: &[],
                                key_hash: key,
                                now: NOW,
                            },
                            &mut rng,
                        );
                        if let Some(e) = pick.endpoint {
                            drop(black_box(pool.start_request(&e)));
                        }
                        i += 1;
                    }
                })
            });
            let keys: Vec<u64> = (0..1024u64)
                .map(|i| key_hash(format!("user-{i}").as_bytes()))
                .collect();
            let mut i = 0usize;
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    let request = PickRequest {
                        tried: &[],
                        key_hash: keys[i],
                        now: NOW,
                    };
                    let pick = pool.pick(black_box(&request), &mut rng);
                    black_box(pick.endpoint.map(|e| pool.start_request(&e)))
                })
            });
            stop.store(true, Ordering::Relaxed);
            if let Some(t) = rival {
                let _ = t.join();
            }
            drop(held);
        }
    }
    group.finish();
}

fn pick_alone(c: &mut Criterion) {
    bench_pick(c, false);
}

fn pick_contended(c: &mut Criterion) {
    bench_pick(c, true);
}

/// Replacing 10 % of a 1,000-endpoint pool (a rolling deploy step), in place.
fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_update");
    for (label, config) in [configs()[0], configs()[5]] {
        let registry = EndpointRegistry::new();
        let pool = Pool::new(config);
        let a = specs(1_000);
        let mut b = specs(1_100);
        b.drain(0..100);
        let mut flip = false;
        group.bench_function(BenchmarkId::new(label, 1_000), |bench| {
            bench.iter(|| {
                flip = !flip;
                pool.update(if flip { &a } else { &b }, &registry, Nanos::ZERO);
                registry.prune();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pick_alone, pick_contended, update);
criterion_main!(benches);
