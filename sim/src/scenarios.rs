//! The scenarios of the balancer issue, each printing a Markdown table (and writing SVG
//! plots) with the numbers `docs/balancing.md` records. Every run is seeded.

use crate::engine::{run, BackendModel, Keys, Policy, Report, Scenario};
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
    };
    let policies = [
        (
            "global least-connections (oracle)",
            Policy::GlobalLeastConnections,
        ),
        ("least-request (P2C)", weir(Algorithm::LeastRequest)),
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
    let (lr, glc, rr) = (p99("least-request"), p99("global"), p99("round-robin"));
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

fn cache_backends(n: usize) -> Vec<BackendModel> {
    (0..n)
        .map(|_| BackendModel {
            cache: Some((2_000, 0.001, 0.010)),
            ..BackendModel::new(8, 0.005)
        })
        .collect()
}

/// (b) consistent hash with a cache per backend, scale 10 -> 15 from 60 s (the new pods
/// turn ready 4 s apart, as a scale-up does), 60 s fade.
pub fn scale_up(out: &Path) -> Result<String, String> {
    let mut backends = cache_backends(15);
    for (i, b) in backends[10..].iter_mut().enumerate() {
        b.ready_at = 60.0 + 4.0 * i as f64;
        b.warm_up = Some((3.0, 30.0));
    }
    let window = Duration::from_secs(60);
    let base = Scenario {
        proxies: 20,
        backends,
        rate: 6_000.0,
        duration: 180.0,
        keys: Keys::Zipf { n: 50_000, s: 1.1 },
        policy: Policy::GlobalLeastConnections,
        seed: 2,
        bucket: 5.0,
    };
    let hash = |slow_start| {
        Policy::Weir(PoolConfig {
            algorithm: Algorithm::ConsistentHash,
            slow_start,
            ..PoolConfig::default()
        })
    };
    let policies = [
        ("N-ring fade-in (weir)", hash(Some(SlowStart::new(window)))),
        (
            "probabilistic fade-in (Skipper, exponent 1)",
            Policy::SkipperFade {
                window: 60.0,
                exponent: 1.0,
            },
        ),
        (
            "probabilistic fade-in (Skipper, exponent 2.5)",
            Policy::SkipperFade {
                window: 60.0,
                exponent: 2.5,
            },
        ),
        ("no fade-in", hash(None)),
    ];
    let mut table = String::from(
        "| policy | cache hit ratio 60–120 s (fade) | p99 whole run | requests on new backends for keys they do not keep |\n|---|---:|---:|---:|\n",
    );
    let mut series = Vec::new();
    for (name, policy) in policies {
        let r = run(&Scenario {
            policy,
            ..base.clone()
        })?;
        let fade: Vec<&[u64; 5]> = r.timeline[12..24].iter().collect();
        let (hits, lookups) = fade.iter().fold((0, 0), |(h, l), b| (h + b[2], l + b[3]));
        let _ = writeln!(
            table,
            "| {name} | {:.1} % | {} | {} |",
            hits as f64 / lookups.max(1) as f64 * 100.0,
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
    line_chart(
        &out.join("b-scale-up-hit-ratio.svg"),
        "(b) cache hit ratio, consistent hash, 10 -> 15 backends at 60 s, 60 s fade-in",
        "time (s)",
        "hit ratio (%)",
        &series,
    )?;
    Ok(table)
}

/// (c) Zipf keys (s = 1.1), bounded load f = 1.25 against unbounded.
pub fn zipf_bounded(_out: &Path) -> Result<String, String> {
    let base = Scenario {
        proxies: 1,
        backends: cache_backends(10),
        rate: 8_000.0,
        duration: 60.0,
        keys: Keys::Zipf { n: 100_000, s: 1.1 },
        policy: Policy::GlobalLeastConnections,
        seed: 3,
        bucket: 5.0,
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
    for (name, policy) in policies {
        let r = run(&Scenario {
            policy,
            ..base.clone()
        })?;
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
        let failed =
            |from: usize, to: usize| -> u64 { r.timeline[from..to].iter().map(|b| b[1]).sum() };
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
            points: r.timeline[..180]
                .iter()
                .enumerate()
                .map(|(i, b)| (i as f64, b[1] as f64))
                .collect(),
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
