//! The scenarios of the balancer issue, each printing a Markdown table (and writing SVG
//! plots) with the numbers `docs/balancing.md` records. Every run is seeded.

use crate::engine::{run, BackendModel, FleetModel, Keys, Policy, Report, Scenario};
use crate::plot::{line_chart, Series};
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;
use weir_balancer::{Algorithm, LoadSignal, OutlierConfig, PoolConfig, SlowStart};

fn weir(algorithm: Algorithm) -> Policy {
    Policy::Weir(PoolConfig {
        algorithm,
        ..PoolConfig::default()
    })
}

fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1000.0)
}

/// (a) 10 backends, one 3x slower, 80 % load, 20 proxies.
pub fn slow_backend(out: &Path) -> Result<String, String> {
    let mut backends: Vec<BackendModel> = (0..10).map(|_| BackendModel::new(4, 0.010)).collect();
    backends[9].slowdown = 3.0;
    let capacity = 9.0 * 4.0 / 0.010 + 4.0 / 0.030;
    let base = Scenario {
        proxies: 20,
        backends,
        rate: 0.8 * capacity,
        duration: 60.0,
        keys: Keys::None,
        policy: Policy::GlobalLeastConnections,
        seed: 1,
        bucket: 1.0,
        fleet: None,
    };
    let policies = [
        (
            "global least-connections (oracle)",
            Policy::GlobalLeastConnections,
        ),
        ("least-request (P2C)", weir(Algorithm::LeastRequest)),
        (
            "least-request, latency health factor off",
            Policy::Weir(PoolConfig {
                latency_health_factor: false,
                ..PoolConfig::default()
            }),
        ),
        ("peak-EWMA", weir(Algorithm::PeakEwma)),
        (
            "least-connections (per proxy)",
            weir(Algorithm::LeastConnections),
        ),
        ("round-robin", weir(Algorithm::RoundRobin)),
    ];
    let mut table = String::from(
        "| policy | p50 | p99 | p99.9 | share of the slow backend |\n|---|---:|---:|---:|---:|\n",
    );
    let mut reports: Vec<(&str, Report)> = Vec::new();
    for (name, policy) in policies {
        let r = run(&Scenario {
            policy,
            ..base.clone()
        })?;
        let slow_share = r.per_backend[9] as f64 / r.requests.max(1) as f64;
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} | {:.1} % |",
            ms(r.percentile(50.0)),
            ms(r.percentile(99.0)),
            ms(r.percentile(99.9)),
            slow_share * 100.0
        );
        reports.push((name, r));
    }
    let p99 = |name: &str| {
        reports
            .iter()
            .find(|(n, _)| n.starts_with(name))
            .map_or(f64::NAN, |(_, r)| r.percentile(99.0))
    };
    let (lr, glc, rr) = (
        p99("least-request (P2C)"),
        p99("global"),
        p99("round-robin"),
    );
    let _ = writeln!(
        table,
        "\nleast-request p99 / oracle p99 = {:.2} (target <= 1.25); round-robin p99 / least-request p99 = {:.1} (target >= 3)",
        lr / glc,
        rr / lr
    );
    let quantiles: Vec<f64> = (0..=40).map(|i| 50.0 + i as f64 * 49.9 / 40.0).collect();
    let series: Vec<Series> = reports
        .iter()
        .filter(|(n, _)| !n.starts_with("round-robin")) // off the chart: seconds, not ms
        .map(|(n, r)| Series {
            name: (*n).to_string(),
            points: quantiles
                .iter()
                .map(|&q| (q, r.percentile(q) * 1000.0))
                .collect(),
        })
        .collect();
    line_chart(
        &out.join("a-slow-backend.svg"),
        "(a) latency percentiles, one backend 3x slower, 80 % load, 20 proxies",
        "percentile",
        "latency (ms)",
        &series,
    )?;
    Ok(table)
}

fn cache_backends(n: usize, capacity: usize) -> Vec<BackendModel> {
    (0..n)
        .map(|_| BackendModel {
            cache: Some((capacity, 0.001, 0.010)),
            ..BackendModel::new(8, 0.005)
        })
        .collect()
}

/// One key model of scenario (b).
struct KeyModel {
    name: &'static str,
    keys: Keys,
    cache_per_backend: usize,
}

const KEY_MODELS: [KeyModel; 2] = [
    KeyModel {
        name: "hot keys: Zipf s = 1.1 over 50,000 keys, 2,000 cached per backend",
        keys: Keys::Zipf { n: 50_000, s: 1.1 },
        cache_per_backend: 2_000,
    },
    KeyModel {
        name: "catalogue: Zipf s = 0.8 over 200,000 keys, 10,000 cached per backend",
        keys: Keys::Zipf { n: 200_000, s: 0.8 },
        cache_per_backend: 10_000,
    },
];

/// The fade-in policies compared in (b).
fn fade_policies(window: Duration) -> [(&'static str, Policy); 4] {
    let hash = |slow_start| {
        Policy::Weir(PoolConfig {
            algorithm: Algorithm::ConsistentHash,
            slow_start,
            ..PoolConfig::default()
        })
    };
    [
        ("N-ring fade-in (weir)", hash(Some(SlowStart::new(window)))),
        (
            "probabilistic fade-in (Skipper, exponent 1)",
            Policy::SkipperFade {
                window: window.as_secs_f64(),
                exponent: 1.0,
            },
        ),
        (
            "probabilistic fade-in (Skipper, exponent 2.5)",
            Policy::SkipperFade {
                window: window.as_secs_f64(),
                exponent: 2.5,
            },
        ),
        ("no fade-in", hash(None)),
    ]
}

/// (b) scale 10 -> 15 from 60 s (the new pods turn ready 4 s apart, as a scale-up does),
/// 60 s fade, 3x warm-up penalty, 20 proxies.
fn scale_up_scenario(model: &KeyModel, seed: u64) -> Scenario {
    let mut backends = cache_backends(15, model.cache_per_backend);
    for (i, b) in backends[10..].iter_mut().enumerate() {
        b.ready_at = 60.0 + 4.0 * i as f64;
        b.warm_up = Some((3.0, 30.0));
    }
    Scenario {
        proxies: 20,
        backends,
        rate: 6_000.0,
        duration: 180.0,
        keys: model.keys.clone(),
        policy: Policy::GlobalLeastConnections,
        seed,
        bucket: 5.0,
        fleet: None,
    }
}

/// Hit ratio over the fade (60–120 s: timeline buckets 12..24 of 5 s).
fn fade_hit_ratio(r: &Report) -> f64 {
    let (hits, lookups) = r.timeline[12..24]
        .iter()
        .fold((0, 0), |(h, l), b| (h + b[2], l + b[3]));
    hits as f64 / lookups.max(1) as f64
}

/// (b) consistent hash with a cache per backend, scale 10 -> 15: one table per key model
/// (seed 2), the hit-ratio plot of the first, and the spread of the fade hit ratio over
/// five seeds.
pub fn scale_up(out: &Path) -> Result<String, String> {
    let window = Duration::from_secs(60);
    let mut table = String::new();
    for (m, model) in KEY_MODELS.iter().enumerate() {
        let _ = writeln!(
            table,
            "\n{}\n\n| policy | cache hit ratio 60–120 s (fade) | p99 whole run | requests on new backends for keys they do not keep |\n|---|---:|---:|---:|",
            model.name
        );
        let mut series = Vec::new();
        for (name, policy) in fade_policies(window) {
            let r = run(&Scenario {
                policy,
                ..scale_up_scenario(model, 2)
            })?;
            let _ = writeln!(
                table,
                "| {name} | {:.1} % | {} | {} |",
                fade_hit_ratio(&r) * 100.0,
                ms(r.percentile(99.0)),
                r.foreign_keys_on_new
            );
            series.push(Series {
                name: name.to_string(),
                points: r
                    .timeline
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b[3] > 0)
                    .map(|(i, b)| (i as f64 * 5.0, b[2] as f64 / b[3] as f64 * 100.0))
                    .collect(),
            });
        }
        if m == 0 {
            line_chart(
                &out.join("b-scale-up-hit-ratio.svg"),
                "(b) cache hit ratio, consistent hash, 10 -> 15 backends at 60 s, 60 s fade-in",
                "time (s)",
                "hit ratio (%)",
                &series,
            )?;
        }
    }
    // Seed spread: is the difference larger than what another seed changes?
    let _ = writeln!(
        table,
        "\nFade hit ratio over seeds 2–6 (min / mean / max) and N-ring's cache misses relative to each:\n\n| key model | policy | min | mean | max | N-ring misses / these misses (mean) |\n|---|---|---:|---:|---:|---:|"
    );
    for model in &KEY_MODELS {
        let policies: Vec<(&str, Policy)> = fade_policies(window).into_iter().take(3).collect();
        let mut ratios: Vec<Vec<f64>> = Vec::new();
        for (_, policy) in &policies {
            let mut per_seed = Vec::new();
            for seed in 2..=6 {
                let r = run(&Scenario {
                    policy: policy.clone(),
                    ..scale_up_scenario(model, seed)
                })?;
                per_seed.push(fade_hit_ratio(&r));
            }
            ratios.push(per_seed);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let n_ring_misses = 1.0 - mean(&ratios[0]);
        for ((name, _), v) in policies.iter().zip(&ratios) {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let short = model.name.split(':').next().unwrap_or(model.name);
            let _ = writeln!(
                table,
                "| {short} | {name} | {:.2} % | {:.2} % | {:.2} % | {:.2} |",
                min * 100.0,
                mean(v) * 100.0,
                max * 100.0,
                n_ring_misses / (1.0 - mean(v)).max(f64::MIN_POSITIVE)
            );
        }
    }
    Ok(table)
}

/// (c) Zipf keys (s = 1.1), bounded load f = 1.25 against unbounded.
pub fn zipf_bounded(out: &Path) -> Result<String, String> {
    let base = Scenario {
        proxies: 1,
        backends: cache_backends(10, 2_000),
        rate: 8_000.0,
        duration: 60.0,
        keys: Keys::Zipf { n: 100_000, s: 1.1 },
        policy: Policy::GlobalLeastConnections,
        seed: 3,
        bucket: 5.0,
        fleet: None,
    };
    let hash = |factor| {
        Policy::Weir(PoolConfig {
            algorithm: Algorithm::ConsistentHash,
            hash_balance_factor: factor,
            ..PoolConfig::default()
        })
    };
    let occupancy = Policy::Weir(PoolConfig {
        algorithm: Algorithm::ConsistentHash,
        hash_balance_factor: Some(1.25),
        hash_load_signal: LoadSignal::Occupancy,
        ..PoolConfig::default()
    });
    let policies = [
        ("consistent hash, unbounded", hash(None)),
        ("consistent hash, bounded f = 1.25", hash(Some(1.25))),
        ("consistent hash, bounded f = 1.25 on occupancy", occupancy),
        ("least-request (no affinity)", weir(Algorithm::LeastRequest)),
    ];
    let mut table = String::from(
        "| policy | mean max/mean in flight | worst max/mean | samples over ceil(1.25 x mean) + 1 | cache hit ratio | p99 |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut series = Vec::new();
    for (name, policy) in policies {
        let r = run(&Scenario {
            policy,
            ..base.clone()
        })?;
        // Requests per backend, busiest first: how far each policy lets the hot keys pile up.
        let mut per_backend = r.per_backend.clone();
        per_backend.sort_unstable_by(|a, b| b.cmp(a));
        series.push(Series {
            name: name.to_string(),
            points: per_backend
                .iter()
                .enumerate()
                .map(|(i, n)| ((i + 1) as f64, *n as f64 / 1_000.0))
                .collect(),
        });
        let _ = writeln!(
            table,
            "| {name} | {:.2} | {:.2} | {} of {} | {:.1} % | {} |",
            r.mean_imbalance(),
            r.imbalance_max,
            r.over_bound_125,
            r.imbalance_samples,
            r.hit_ratio() * 100.0,
            ms(r.percentile(99.0))
        );
    }
    line_chart(
        &out.join("c-zipf-bounded-load.svg"),
        "(c) requests per backend, busiest first, Zipf(1.1) keys over 10 cached backends",
        "backend (rank by requests)",
        "thousands of requests",
        &series,
    )?;
    Ok(table)
}

/// (d) one backend fails from 30 s to 90 s, 50 proxies, each ejecting on its own.
pub fn failing_backend(out: &Path) -> Result<String, String> {
    let mut backends: Vec<BackendModel> = (0..10).map(|_| BackendModel::new(4, 0.010)).collect();
    backends[0].failing = vec![(30.0, 90.0)];
    let base = Scenario {
        proxies: 50,
        backends,
        rate: 2_000.0,
        duration: 180.0,
        keys: Keys::None,
        policy: Policy::GlobalLeastConnections,
        seed: 4,
        bucket: 1.0,
        fleet: None,
    };
    let with = |outlier| {
        Policy::Weir(PoolConfig {
            algorithm: Algorithm::LeastRequest,
            outlier,
            ..PoolConfig::default()
        })
    };
    let disabled = OutlierConfig {
        consecutive_failures: u32::MAX,
        ..OutlierConfig::default()
    };
    let policies = [
        (
            "outlier ejection (defaults: 5 failures, 30 s base)",
            with(OutlierConfig::default()),
        ),
        ("no ejection", with(disabled)),
    ];
    let mut table = String::from(
        "| policy | failed 30–90 s (while failing) | of those, in the first 5 s | last second with a failure | failed after recovery (90–180 s) |\n|---|---:|---:|---:|---:|\n",
    );
    let mut series = Vec::new();
    for (name, policy) in policies {
        let r = run(&Scenario {
            policy,
            ..base.clone()
        })?;
        let failed = |from: usize, to: usize| r.failed_between(from, to);
        let last_failure = (0..180)
            .rev()
            .find(|&s| r.timeline[s][1] > 0)
            .map_or(0, |s| s + 1);
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} s | {} |",
            failed(30, 90),
            failed(30, 35),
            last_failure,
            failed(90, 180)
        );
        series.push(Series {
            name: name.to_string(),
            points: r.failures_over_time(180),
        });
    }
    line_chart(
        &out.join("d-failing-backend.svg"),
        "(d) failed requests per second, 1 of 10 backends failing 30–90 s, 50 proxies",
        "time (s)",
        "failed requests / s",
        &series,
    )?;
    Ok(table)
}

/// (e) the fleet: 50 proxies, one of 10 backends failing 30–90 s, a false recovery 90–95 s,
/// failing again 95–150 s; each proxy alone, or sharing what its pool learns as weir's fleet
/// does (failures in a row summed over the proxies, ejections applied by all) every gossip
/// round, and with each change also pushed to every proxy at once.
pub fn fleet_sharing(out: &Path) -> Result<String, String> {
    let mut backends: Vec<BackendModel> = (0..10).map(|_| BackendModel::new(4, 0.010)).collect();
    backends[0].failing = vec![(30.0, 90.0), (95.0, 150.0)];
    let base = Scenario {
        proxies: 50,
        backends,
        rate: 2_000.0,
        duration: 180.0,
        keys: Keys::None,
        policy: weir(Algorithm::LeastRequest),
        seed: 5,
        bucket: 1.0,
        fleet: None,
    };
    let threshold = OutlierConfig::default().consecutive_failures;
    let fleet = |round: f64, push: Option<f64>| Some(FleetModel { round, push });
    let rows = [
        ("each proxy alone", None),
        ("fleet, 200 ms gossip rounds only", fleet(0.2, None)),
        ("fleet, 50 ms gossip rounds only", fleet(0.05, None)),
        (
            "fleet, 200 ms rounds + reports pushed at once, heard in 2 ms (weir's default)",
            fleet(0.2, Some(0.002)),
        ),
    ];
    let mut table = format!(
        "| proxies | failed 30–31 s (the first second) | that in one proxy's thresholds ({threshold}) | failed 30–90 s | failed 95–150 s (failing again after a false recovery) | failed in all |\n|---|---:|---:|---:|---:|---:|\n"
    );
    let mut series = Vec::new();
    for (name, fleet) in rows {
        let r = run(&Scenario {
            fleet,
            ..base.clone()
        })?;
        let failed = |from: usize, to: usize| r.failed_between(from, to);
        let first = failed(30, 31);
        let _ = writeln!(
            table,
            "| {name} | {first} | {:.1}x | {} | {} | {} |",
            first as f64 / f64::from(threshold),
            failed(30, 90),
            failed(95, 150),
            r.failed
        );
        series.push(Series {
            name: name.to_string(),
            points: r.failures_over_time(180),
        });
    }
    line_chart(
        &out.join("e-fleet.svg"),
        "(e) failed requests per second, 50 proxies, 1 of 10 backends failing 30–90 s and 95–150 s",
        "time (s)",
        "failed requests / s",
        &series,
    )?;
    Ok(table)
}
