//! The pick functions behind [`crate::Pool`], each over a slice of candidates.
//!
//! Weights come from a function (`weight_of`, in thousandths) so slow start and
//! `Retry-After` penalties apply to every weighted algorithm. Load score of an endpoint =
//! `(in_flight + 1) / weight`, compared by cross-multiplying integers. Must not: filter
//! candidates (the pool decides who is eligible) or allocate.

use crate::clock::Nanos;
use crate::endpoint::EndpointState;
use rand::Rng;
use std::cmp::Ordering;
use std::sync::{Arc, Mutex};

/// An endpoint's effective weight in thousandths (>= 1).
pub trait WeightOf: Fn(&EndpointState) -> u64 {}
impl<F: Fn(&EndpointState) -> u64> WeightOf for F {}

/// Orders two endpoints by `(in_flight + 1) / weight`.
fn compare_load(a: &EndpointState, b: &EndpointState, weight_of: &impl WeightOf) -> Ordering {
    let lhs = u128::from(a.in_flight() + 1) * u128::from(weight_of(b));
    let rhs = u128::from(b.in_flight() + 1) * u128::from(weight_of(a));
    lhs.cmp(&rhs)
}

/// Least request by the power of two choices: two **distinct** random candidates (as
/// Tower does; Envoy draws with replacement, which sends a busy endpoint 1/N² of picks),
/// the less loaded wins, the first drawn on a tie.
pub fn power_of_two<'a, R: Rng + ?Sized>(
    candidates: &'a [Arc<EndpointState>],
    weight_of: &impl WeightOf,
    rng: &mut R,
) -> Option<&'a Arc<EndpointState>> {
    let n = candidates.len();
    match n {
        0 => None,
        1 => candidates.first(),
        _ => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (&candidates[a], &candidates[b]);
            Some(if compare_load(eb, ea, weight_of) == Ordering::Less {
                eb
            } else {
                ea
            })
        }
    }
}

/// Peak EWMA (docs/balancing.md): two distinct random candidates, the lower
/// `latency x (in_flight + 1) / weight` wins. An endpoint without a latency sample yet is
/// valued at the median of the measured candidates (computed only when such an endpoint is
/// drawn), so a new endpoint is neither flooded nor starved.
pub fn peak_ewma<'a, R: Rng + ?Sized>(
    candidates: &'a [Arc<EndpointState>],
    weight_of: &impl WeightOf,
    now: Nanos,
    rng: &mut R,
) -> Option<&'a Arc<EndpointState>> {
    let n = candidates.len();
    if n < 2 {
        return candidates.first();
    }
    let a = rng.random_range(0..n);
    let mut b = rng.random_range(0..n - 1);
    if b >= a {
        b += 1;
    }
    let (ea, eb) = (&candidates[a], &candidates[b]);
    let (la, lb) = (ea.latency_estimate(now), eb.latency_estimate(now));
    let median = if la.is_none() || lb.is_none() {
        median_latency(candidates, now)
    } else {
        0.0
    };
    let cost = |e: &EndpointState, latency: Option<f64>| {
        latency.unwrap_or(median) * (e.in_flight() + 1) as f64 / weight_of(e) as f64
    };
    Some(if cost(eb, lb) < cost(ea, la) { eb } else { ea })
}

/// Median latency estimate of the measured candidates (1.0 when none is measured, which
/// makes the cost plain in-flight per weight).
fn median_latency(candidates: &[Arc<EndpointState>], now: Nanos) -> f64 {
    let mut measured: Vec<f64> = candidates
        .iter()
        .filter_map(|e| e.latency_estimate(now))
        .collect();
    if measured.is_empty() {
        return 1.0;
    }
    let mid = measured.len() / 2;
    let (_, median, _) = measured.select_nth_unstable_by(mid, f64::total_cmp);
    *median
}

/// Least connections: a full scan for the least loaded; among equals, the first at or
/// after `rotation` (so ties take turns).
pub fn least_loaded<'a>(
    candidates: &'a [Arc<EndpointState>],
    weight_of: &impl WeightOf,
    rotation: usize,
) -> Option<&'a Arc<EndpointState>> {
    let n = candidates.len();
    // Each endpoint's weight is computed once (it may involve slow start and the latency
    // health factor), not once per comparison.
    let mut best: Option<(&Arc<EndpointState>, u128, u128)> = None;
    for offset in 0..n {
        let e = &candidates[(rotation + offset) % n];
        let (load, weight) = (u128::from(e.in_flight() + 1), u128::from(weight_of(e)));
        let better =
            best.is_none_or(|(_, best_load, best_weight)| load * best_weight < best_load * weight);
        if better {
            best = Some((e, load, weight));
        }
    }
    best.map(|(e, ..)| e)
}

/// Weighted random.
pub fn random_weighted<'a, R: Rng + ?Sized>(
    candidates: &'a [Arc<EndpointState>],
    weight_of: &impl WeightOf,
    rng: &mut R,
) -> Option<&'a Arc<EndpointState>> {
    let total: u64 = candidates.iter().map(|e| weight_of(e)).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = rng.random_range(0..total);
    for e in candidates {
        let w = weight_of(e);
        if ticket < w {
            return Some(e);
        }
        ticket -= w;
    }
    candidates.last()
}

/// nginx's smooth weighted round robin state for one member set: each pick adds every
/// weight to its current value, takes the largest and subtracts the total from it. Weights
/// 5:1:1 give `a a b a c a a`. One short lock per pick; the state is per pool.
#[derive(Debug, Default)]
pub struct SmoothWeights {
    current: Mutex<Vec<i64>>,
}

impl SmoothWeights {
    pub fn new(members: usize) -> Self {
        SmoothWeights {
            current: Mutex::new(vec![0; members]),
        }
    }

    pub fn next<'a>(
        &self,
        members: &'a [Arc<EndpointState>],
        weight_of: &impl WeightOf,
    ) -> Option<&'a Arc<EndpointState>> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.len() != members.len() {
            *current = vec![0; members.len()];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, e) in members.iter().enumerate() {
            let w = i64::try_from(weight_of(e)).unwrap_or(i64::MAX / 4);
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        members.get(best)
    }
}
