//! The discrete-event engine: Poisson arrivals spread over `proxies`, each proxy a real
//! `weir_balancer::Pool` with its own registry (so in-flight counts are what that proxy
//! sees, as with separate weir processes), backends with workers, a FIFO queue, service
//! times, an optional LRU cache, warm-up penalties and failure windows.
//!
//! Must not: reimplement balancing. The only policies here that are not the balancer are
//! the comparison baselines: an oracle that sees every backend's true queue, and Skipper's
//! probabilistic fade-in filter.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Zipf};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use weir_balancer::ring::key_hash;
use weir_balancer::{
    EndpointRegistry, EndpointSpec, InFlightGuard, Nanos, Outcome, PickRequest, Pool, PoolConfig,
};

/// One backend's behaviour.
#[derive(Clone, Debug)]
pub struct BackendModel {
    pub workers: usize,
    /// Mean service time in seconds (exponentially distributed).
    pub service: f64,
    /// Multiplies service time (a slow backend).
    pub slowdown: f64,
    /// LRU cache of keys: (capacity, service time on a hit, on a miss). Without one, every
    /// request takes `service`.
    pub cache: Option<(usize, f64, f64)>,
    /// When the backend becomes ready (seconds); 0 = from the start.
    pub ready_at: f64,
    /// Extra service-time factor right after `ready_at`, decaying linearly to 1 over this
    /// many seconds (cold JIT and caches): (factor, seconds).
    pub warm_up: Option<(f64, f64)>,
    /// Answers every request with a fast 500 during these windows (seconds).
    pub failing: Vec<(f64, f64)>,
}

impl BackendModel {
    pub fn new(workers: usize, service: f64) -> Self {
        BackendModel {
            workers,
            service,
            slowdown: 1.0,
            cache: None,
            ready_at: 0.0,
            warm_up: None,
            failing: Vec::new(),
        }
    }
}

/// How proxies choose.
#[derive(Clone, Debug)]
pub enum Policy {
    /// weir's balancer with this configuration.
    Weir(PoolConfig),
    /// Oracle: the backend with the fewest outstanding requests fleet-wide (what no real
    /// proxy fleet can see; the bound to compare against).
    GlobalLeastConnections,
    /// Skipper's fade-in in front of a consistent hash ring: per request one uniform
    /// threshold; endpoints younger than `window` with `(age / window) ^ exponent` below it
    /// are skipped on the ring.
    SkipperFade { window: f64, exponent: f64 },
}

#[derive(Clone, Debug)]
pub enum Keys {
    /// No key (non-hashing policies).
    None,
    /// Zipf-distributed over `n` keys with exponent `s`.
    Zipf { n: u64, s: f64 },
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub proxies: usize,
    pub backends: Vec<BackendModel>,
    /// Arrivals per second, all proxies together.
    pub rate: f64,
    /// Simulated seconds.
    pub duration: f64,
    pub keys: Keys,
    pub policy: Policy,
    pub seed: u64,
    /// Width of the timeline buckets, seconds.
    pub bucket: f64,
    /// The proxies share what their pools learn as weir's fleet does (`None`: each proxy
    /// decides alone).
    pub fleet: Option<FleetModel>,
}

/// How the simulated fleet shares what its proxies learn.
#[derive(Clone, Copy, Debug)]
pub struct FleetModel {
    /// Seconds between gossip rounds: each round every proxy applies what all reported a
    /// round earlier.
    pub round: f64,
    /// Reports pushed at once to every peer (weir's bulletins), heard this many seconds
    /// after the change (`None`: gossip rounds only).
    pub push: Option<f64>,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Latencies of successful requests, seconds, sorted.
    pub latencies: Vec<f64>,
    pub failed: u64,
    pub requests: u64,
    pub cache_hits: u64,
    pub cache_lookups: u64,
    /// Sum and count of max/mean outstanding over backends, sampled at arrivals when the
    /// mean is at least 1.
    pub imbalance_sum: f64,
    pub imbalance_samples: u64,
    /// Highest max/mean seen.
    pub imbalance_max: f64,
    /// Samples where the busiest backend exceeded `ceil(1.25 x mean) + 1`.
    pub over_bound_125: u64,
    /// Per timeline bucket: (requests, failed, cache hits, cache lookups, requests to
    /// backends that became ready after the start).
    pub timeline: Vec<[u64; 5]>,
    /// Requests per backend.
    pub per_backend: Vec<u64>,
    /// Picks by reason.
    pub reasons: HashMap<&'static str, u64>,
    /// Requests a new backend served for keys it would not own once all are mature.
    pub foreign_keys_on_new: u64,
    /// Timeline bucket width, seconds.
    pub bucket: f64,
}

impl Report {
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }

    pub fn hit_ratio(&self) -> f64 {
        self.cache_hits as f64 / self.cache_lookups.max(1) as f64
    }

    /// Failed requests in the timeline buckets `from..to`.
    pub fn failed_between(&self, from: usize, to: usize) -> u64 {
        self.timeline[from..to].iter().map(|b| b[1]).sum()
    }

    /// (bucket start, failed requests) of the first `buckets` buckets, for a plot.
    pub fn failures_over_time(&self, buckets: usize) -> Vec<(f64, f64)> {
        self.timeline[..buckets]
            .iter()
            .enumerate()
            .map(|(i, b)| (i as f64 * self.bucket, b[1] as f64))
            .collect()
    }

    pub fn mean_imbalance(&self) -> f64 {
        self.imbalance_sum / self.imbalance_samples.max(1) as f64
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    Done(usize),
    /// Re-publish endpoints (a backend became ready, or a fade step).
    Topology,
    /// A fleet gossip round: every proxy applies what the others reported a round ago.
    Gossip,
    /// A pushed report reaches every proxy: the fleet's failures in a row on a backend and
    /// the latest ejection end (ns) any proxy made, as they were when it was sent.
    Heard {
        backend: usize,
        failures: u32,
        until: Option<u64>,
    },
}

struct Request {
    proxy: usize,
    backend: usize,
    key: u64,
    arrived: f64,
    guard: Option<InFlightGuard>,
    failed: bool,
}

struct Backend {
    model: BackendModel,
    busy: usize,
    queue: VecDeque<usize>,
    cache: Lru,
}

/// A small LRU of keys (a stamp per key; eviction scans, fine for the sizes simulated).
struct Lru {
    capacity: usize,
    stamps: HashMap<u64, u64>,
    clock: u64,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            stamps: HashMap::with_capacity(capacity + 1),
            clock: 0,
        }
    }

    /// True on a hit; inserts on a miss.
    fn touch(&mut self, key: u64) -> bool {
        self.clock += 1;
        let hit = self.stamps.insert(key, self.clock).is_some();
        if !hit && self.stamps.len() > self.capacity {
            if let Some((&oldest, _)) = self.stamps.iter().min_by_key(|(_, &s)| s) {
                self.stamps.remove(&oldest);
            }
        }
        hit
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 9, (i / 250) as u8, (i % 250 + 1) as u8], 8080))
}

fn nanos(t: f64) -> Nanos {
    Nanos((t * 1e9) as u64)
}

pub fn run(s: &Scenario) -> Result<Report, String> {
    let mut rng = SmallRng::seed_from_u64(s.seed);
    let arrivals = Exp::new(s.rate).map_err(|e| format!("arrival rate {}: {e}", s.rate))?;
    let unit = Exp::new(1.0).map_err(|e| e.to_string())?;
    let zipf = match s.keys {
        Keys::Zipf { n, s } => Some(Zipf::new(n as f64, s).map_err(|e| format!("zipf: {e}"))?),
        Keys::None => None,
    };
    let addr_index: HashMap<SocketAddr, usize> =
        (0..s.backends.len()).map(|i| (addr(i), i)).collect();
    let mut backends: Vec<Backend> = s
        .backends
        .iter()
        .map(|m| Backend {
            model: m.clone(),
            busy: 0,
            queue: VecDeque::new(),
            cache: Lru::new(m.cache.map_or(1, |c| c.0)),
        })
        .collect();
    let config = match &s.policy {
        Policy::Weir(c) => *c,
        _ => PoolConfig {
            algorithm: weir_balancer::Algorithm::ConsistentHash,
            ..PoolConfig::default()
        },
    };
    let proxies: Vec<(Pool, EndpointRegistry)> = (0..s.proxies)
        .map(|_| (Pool::new(config), EndpointRegistry::new()))
        .collect();
    let specs_at = |t: f64| -> Vec<EndpointSpec> {
        s.backends
            .iter()
            .enumerate()
            .filter(|(_, m)| m.ready_at <= t)
            .map(|(i, m)| EndpointSpec {
                ready_since: Some(nanos(m.ready_at)),
                ..EndpointSpec::ready(addr(i))
            })
            .collect()
    };
    let publish = |t: f64| {
        let specs = specs_at(t);
        for (pool, registry) in &proxies {
            pool.update(&specs, registry, nanos(t));
        }
    };
    publish(0.0);
    // Which backend owns each key once every backend is mature (for "foreign keys").
    let final_ring = {
        let all: Vec<SocketAddr> = (0..s.backends.len()).map(addr).collect();
        weir_balancer::ring::HashRing::new(&all)
    };

    let mut events: BinaryHeap<Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |events: &mut BinaryHeap<Reverse<(u64, u64, Event)>>, t: f64, e: Event| {
        seq += 1;
        events.push(Reverse((nanos(t).0, seq, e)));
    };
    push(&mut events, arrivals.sample(&mut rng), Event::Arrival);
    if let Some(fleet) = s.fleet {
        push(&mut events, fleet.round, Event::Gossip);
    }
    // What the fleet heard at the last round: per backend, the failures in a row of every
    // proxy (summed) and the latest ejection end any proxy made (as weir's fleet reports).
    let mut heard: Vec<(u32, Option<Nanos>)> = vec![(0, None); s.backends.len()];
    for m in &s.backends {
        if m.ready_at > 0.0 {
            push(&mut events, m.ready_at, Event::Topology);
        }
    }
    let buckets = (s.duration / s.bucket).ceil() as usize + 1;
    let mut report = Report {
        timeline: vec![[0; 5]; buckets],
        per_backend: vec![0; s.backends.len()],
        bucket: s.bucket,
        ..Report::default()
    };
    let mut requests: Vec<Request> = Vec::new();

    while let Some(Reverse((t_ns, _, event))) = events.pop() {
        let now = t_ns as f64 / 1e9;
        if now > s.duration {
            break;
        }
        let bucket = ((now / s.bucket) as usize).min(buckets - 1);
        match event {
            Event::Topology => publish(now),
            Event::Gossip => {
                // Apply what was heard a round ago (the time it takes to spread), then
                // listen to what every proxy says now.
                for (backend, (failures, until)) in heard.iter().enumerate() {
                    for (pool, registry) in &proxies {
                        if let Some(endpoint) = registry.get(addr(backend)) {
                            pool.apply_fleet_view(&endpoint, *failures, *until, nanos(now));
                        }
                    }
                }
                for (backend, slot) in heard.iter_mut().enumerate() {
                    *slot = fleet_reports(&proxies, backend, now);
                }
                if let Some(fleet) = s.fleet {
                    push(&mut events, now + fleet.round, Event::Gossip);
                }
            }
            Event::Heard {
                backend,
                failures,
                until,
            } => {
                for (pool, registry) in &proxies {
                    if let Some(endpoint) = registry.get(addr(backend)) {
                        pool.apply_fleet_view(&endpoint, failures, until.map(Nanos), nanos(now));
                    }
                }
            }
            Event::Arrival => {
                push(&mut events, now + arrivals.sample(&mut rng), Event::Arrival);
                report.requests += 1;
                report.timeline[bucket][0] += 1;
                let proxy = rng.random_range(0..s.proxies);
                let key = zipf.as_ref().map_or(0, |z| z.sample(&mut rng) as u64);
                let key_hash = key_hash(&key.to_le_bytes());
                let (pool, _) = &proxies[proxy];
                let request = |tried| PickRequest {
                    tried,
                    key_hash,
                    now: nanos(now),
                };
                let chosen: Option<(usize, Option<InFlightGuard>)> = match &s.policy {
                    Policy::GlobalLeastConnections => backends
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| b.model.ready_at <= now)
                        .min_by_key(|(_, b)| b.busy + b.queue.len())
                        .map(|(i, _)| (i, None)),
                    Policy::SkipperFade { window, exponent } => {
                        let threshold: f64 = rng.random();
                        let skipped: Vec<SocketAddr> = s
                            .backends
                            .iter()
                            .enumerate()
                            .filter(|(_, m)| {
                                let age = now - m.ready_at;
                                m.ready_at > 0.0
                                    && age < *window
                                    && (age / window).powf(*exponent) <= threshold
                            })
                            .map(|(i, _)| addr(i))
                            .collect();
                        let mut pick = pool.pick(&request(&skipped), &mut rng);
                        if pick.endpoint.is_none() {
                            // Skipper: when everything is filtered, use all.
                            pick = pool.pick(&request(&[]), &mut rng);
                        }
                        pick.endpoint
                            .map(|e| (addr_index[&e.addr()], Some(pool.start_request(&e))))
                    }
                    Policy::Weir(_) => {
                        let pick = pool.pick(&request(&[]), &mut rng);
                        *report.reasons.entry(pick.reason.as_str()).or_default() += 1;
                        pick.endpoint
                            .map(|e| (addr_index[&e.addr()], Some(pool.start_request(&e))))
                    }
                };
                let Some((backend, guard)) = chosen else {
                    report.failed += 1;
                    report.timeline[bucket][1] += 1;
                    continue;
                };
                report.per_backend[backend] += 1;
                if backends[backend].model.ready_at > 0.0 {
                    report.timeline[bucket][4] += 1;
                    if final_ring.owner(key_hash) != Some(backend) && zipf.is_some() {
                        report.foreign_keys_on_new += 1;
                    }
                }
                // Imbalance of outstanding work across ready backends, this request included.
                let ready: Vec<usize> = backends
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.model.ready_at <= now)
                    .map(|(i, b)| b.busy + b.queue.len() + usize::from(i == backend))
                    .collect();
                let total: usize = ready.iter().sum();
                let mean = total as f64 / ready.len().max(1) as f64;
                if mean >= 1.0 {
                    let max = ready.iter().copied().max().unwrap_or(0) as f64;
                    report.imbalance_sum += max / mean;
                    report.imbalance_samples += 1;
                    report.imbalance_max = report.imbalance_max.max(max / mean);
                    if max > (1.25 * mean).ceil() + 1.0 {
                        report.over_bound_125 += 1;
                    }
                }
                let id = requests.len();
                let failing = backends[backend]
                    .model
                    .failing
                    .iter()
                    .any(|(from, to)| *from <= now && now < *to);
                requests.push(Request {
                    proxy,
                    backend,
                    key,
                    arrived: now,
                    guard,
                    failed: failing,
                });
                if failing {
                    push(&mut events, now + 0.001, Event::Done(id));
                    continue;
                }
                let b = &mut backends[backend];
                if b.busy < b.model.workers {
                    b.busy += 1;
                    let service =
                        service_time(b, key, zipf.is_some(), now, &unit, &mut rng, &mut report);
                    push(&mut events, now + service, Event::Done(id));
                } else {
                    b.queue.push_back(id);
                }
            }
            Event::Done(id) => {
                let request = &mut requests[id];
                let backend = request.backend;
                let guard = request.guard.take();
                let (pool, _) = &proxies[request.proxy];
                if let Some(guard) = &guard {
                    let outcome = if request.failed {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    let endpoint = guard.endpoint();
                    let before = (endpoint.consecutive_failures(), endpoint.ejection_ends());
                    pool.record(endpoint, outcome, nanos(now));
                    let changed =
                        before != (endpoint.consecutive_failures(), endpoint.ejection_ends());
                    // weir's fleet pushes a changed report to every peer at once.
                    if let (true, Some(delay)) = (changed, s.fleet.and_then(|f| f.push)) {
                        let (failures, until) = fleet_reports(&proxies, backend, now);
                        let until = until.map(|u| u.0);
                        let heard = Event::Heard {
                            backend,
                            failures,
                            until,
                        };
                        push(&mut events, now + delay, heard);
                    }
                    if !request.failed {
                        let rtt = std::time::Duration::from_secs_f64(now - request.arrived);
                        pool.observe_latency(guard.endpoint(), rtt, nanos(now));
                    }
                }
                drop(guard);
                if request.failed {
                    report.failed += 1;
                    report.timeline[bucket][1] += 1;
                    continue;
                }
                report.latencies.push(now - request.arrived);
                let b = &mut backends[backend];
                if let Some(next) = b.queue.pop_front() {
                    let key = requests[next].key;
                    let service =
                        service_time(b, key, zipf.is_some(), now, &unit, &mut rng, &mut report);
                    push(&mut events, now + service, Event::Done(next));
                } else {
                    b.busy -= 1;
                }
            }
        }
    }
    report.latencies.sort_by(f64::total_cmp);
    Ok(report)
}

/// What the fleet reports on `backend` at `now`: every proxy's failures in a row (summed) and
/// the latest ejection end any proxy made.
fn fleet_reports(
    proxies: &[(Pool, EndpointRegistry)],
    backend: usize,
    now: f64,
) -> (u32, Option<Nanos>) {
    let mut failures = 0u32;
    let mut until: Option<Nanos> = None;
    for (_, registry) in proxies {
        if let Some(endpoint) = registry.get(addr(backend)) {
            failures = failures.saturating_add(endpoint.consecutive_failures());
            if let Some(u) = endpoint.ejected_until(nanos(now)) {
                until = Some(until.map_or(u, |x: Nanos| Nanos(x.0.max(u.0))));
            }
        }
    }
    (failures, until)
}

#[allow(clippy::too_many_arguments)]
fn service_time(
    b: &mut Backend,
    key: u64,
    keyed: bool,
    now: f64,
    unit: &Exp<f64>,
    rng: &mut SmallRng,
    report: &mut Report,
) -> f64 {
    let mut mean = b.model.service;
    if let (Some((_, hit, miss)), true) = (b.model.cache, keyed) {
        let is_hit = b.cache.touch(key);
        report.cache_lookups += 1;
        let bucket = ((now / report.bucket) as usize).min(report.timeline.len().saturating_sub(1));
        report.timeline[bucket][3] += 1;
        if is_hit {
            report.cache_hits += 1;
            report.timeline[bucket][2] += 1;
        }
        mean = if is_hit { hit } else { miss };
    }
    if let Some((factor, seconds)) = b.model.warm_up {
        let age = now - b.model.ready_at;
        if age < seconds {
            mean *= 1.0 + (factor - 1.0) * (1.0 - age / seconds);
        }
    }
    mean * b.model.slowdown * unit.sample(rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mm1(seed: u64) -> Report {
        // One backend, one worker, exponential service with mean 10 ms (mu = 100/s),
        // Poisson arrivals at lambda = 50/s: an M/M/1 queue.
        let scenario = Scenario {
            proxies: 1,
            backends: vec![BackendModel::new(1, 0.010)],
            rate: 50.0,
            duration: 2_000.0,
            keys: Keys::None,
            policy: Policy::Weir(PoolConfig::default()),
            seed,
            bucket: 10.0,
            fleet: None,
        };
        run(&scenario).unwrap_or_default()
    }

    #[test]
    fn an_mm1_queue_matches_theory() {
        // Time in system of M/M/1 is exponential with mean 1/(mu - lambda) = 20 ms, so the
        // median is 20 ms x ln 2 and p99 is 20 ms x ln 100. ~100,000 requests: tolerance 5 %.
        let r = mm1(7);
        assert!(r.requests > 95_000, "{}", r.requests);
        let mean = r.latencies.iter().sum::<f64>() / r.latencies.len() as f64;
        let close = |got: f64, want: f64| (got - want).abs() / want <= 0.05;
        assert!(close(mean, 0.020), "mean {mean}");
        assert!(
            close(r.percentile(50.0), 0.020 * std::f64::consts::LN_2),
            "p50 {}",
            r.percentile(50.0)
        );
        assert!(
            close(r.percentile(99.0), 0.020 * 100f64.ln()),
            "p99 {}",
            r.percentile(99.0)
        );
        assert_eq!(r.failed, 0);
    }

    #[test]
    fn runs_are_deterministic_per_seed() {
        let (a, b, c) = (mm1(3), mm1(3), mm1(4));
        assert_eq!(a.latencies, b.latencies);
        assert_ne!(a.latencies, c.latencies);
    }
}
