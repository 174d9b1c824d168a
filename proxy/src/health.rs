//! Active health checks before re-admission: an endpoint ejected from a pool with
//! `weir.dev/health-check-path` stays out after its ejection ends until `GET <path>` answers
//! 2xx or 3xx `healthy_threshold` times in a row. Checks run every `interval`, each endpoint's
//! at a random offset, so that a fleet's replicas do not all check (or, once it passes, send
//! to) a recovering endpoint at the same moment.
//!
//! Results are shared through the [`CheckBoard`]: in a fleet, a replica whose check is due
//! takes another replica's result from less than an interval ago instead of checking itself,
//! so a recovering endpoint gets about one check per interval from the whole fleet, not one
//! per replica. A result counts only once per replica, and only if made after the replica
//! began waiting for checks (an old recovery's passes do not return an endpoint ejected since).
//!
//! Must not: check endpoints that are not waiting for a check (a live endpoint is judged by
//! its traffic), or touch the request path.

use crate::app::metrics::Metrics;
use crate::fleet::unix_ms;
use crate::routes::routing::LiveRouting;
use crate::subrequest::{Deadlines, Destination, Subrequests};
use pingora::http::RequestHeader;
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use weir_balancer::Nanos;

/// How often the checker looks for endpoints whose check is due.
const SCAN: Duration = Duration::from_millis(100);

/// One check of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub healthy: bool,
    /// When it was made (Unix ms: replicas share no other clock).
    pub at_ms: u64,
}

impl CheckResult {
    /// Which of two results is the later; at the same moment a failure wins.
    pub fn is_later_than(&self, other: &CheckResult) -> bool {
        (self.at_ms, !self.healthy) > (other.at_ms, !other.healthy)
    }
}

/// The latest check of each endpoint: this replica's, or (in a fleet) another's.
#[derive(Debug, Default)]
pub struct CheckBoard {
    latest: Mutex<HashMap<SocketAddr, Seen>>,
    /// This replica's latest result per endpoint that the fleet has not taken yet (bounded by
    /// the endpoints waiting: without a fleet nobody takes them).
    made_here: Mutex<HashMap<SocketAddr, CheckResult>>,
    wake: tokio::sync::Notify,
}

/// What is known of one endpoint's checks.
#[derive(Clone, Copy, Debug)]
struct Seen {
    latest: CheckResult,
    /// The latest failed check (Unix ms), which a later pass must not hide.
    failed_ms: Option<u64>,
}

impl CheckBoard {
    pub fn latest(&self, addr: SocketAddr) -> Option<CheckResult> {
        lock(&self.latest).get(&addr).map(|seen| seen.latest)
    }

    /// When the latest failed check of `addr` was made, if one is known.
    pub fn last_failure_ms(&self, addr: SocketAddr) -> Option<u64> {
        lock(&self.latest)
            .get(&addr)
            .and_then(|seen| seen.failed_ms)
    }

    /// Another replica's result (kept if it is the later).
    pub fn hear(&self, addr: SocketAddr, result: CheckResult) {
        let mut latest = lock(&self.latest);
        let seen = latest.entry(addr).or_insert(Seen {
            latest: result,
            failed_ms: None,
        });
        if result.is_later_than(&seen.latest) {
            seen.latest = result;
        }
        if !result.healthy {
            seen.failed_ms = Some(seen.failed_ms.map_or(result.at_ms, |f| f.max(result.at_ms)));
        }
    }

    /// This replica's results since the last call (what the fleet publishes).
    pub fn take_made_here(&self) -> Vec<(SocketAddr, CheckResult)> {
        std::mem::take(&mut *lock(&self.made_here))
            .into_iter()
            .collect()
    }

    /// Resolves once this replica records a result.
    pub async fn recorded(&self) {
        self.wake.notified().await;
    }

    fn record(&self, addr: SocketAddr, result: CheckResult) {
        self.hear(addr, result);
        lock(&self.made_here).insert(addr, result);
        self.wake.notify_one();
    }

    /// Forgets endpoints no longer waiting for checks anywhere in `waiting`.
    fn retain(&self, waiting: impl Fn(SocketAddr) -> bool) {
        lock(&self.latest).retain(|addr, _| waiting(*addr));
        lock(&self.made_here).retain(|addr, _| waiting(*addr));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where one endpoint's checks stand on this replica.
struct Progress {
    next: Instant,
    /// Results in a row that passed.
    passes: u32,
    /// When this replica began waiting: results made before do not count.
    waiting_since_ms: u64,
    /// The time of the last result counted (each counts once).
    counted_ms: u64,
}

/// Checks the endpoints that wait for it until `stop` resolves.
pub async fn run(
    routing: Arc<LiveRouting>,
    board: Arc<CheckBoard>,
    metrics: Metrics,
    stop: impl std::future::Future<Output = ()>,
) {
    let subrequests = Subrequests::default();
    let mut progress: HashMap<SocketAddr, Progress> = HashMap::new();
    let checking = async {
        let mut scan = tokio::time::interval(SCAN);
        let mut scans = 0u64;
        loop {
            scan.tick().await;
            scans += 1;
            let now = Nanos::now();
            let checked = routing.health_checked();
            let mut due = Vec::new();
            for checked in &checked {
                for endpoint in checked.pool.checks_due(now) {
                    due.push((endpoint, checked.check.clone(), checked.service.clone()));
                }
            }
            // Every few seconds: an endpoint waiting for checks that no pool with checks holds
            // any more (the annotation removed, the route gone) returns, instead of waiting
            // for ever.
            if scans.is_multiple_of(50) {
                for endpoint in routing.registry().snapshot() {
                    let held = checked.iter().any(|c| c.pool.has_member(endpoint.addr()));
                    if endpoint.awaiting_check() && !held {
                        endpoint.check_passed();
                    }
                }
            }
            // Endpoints no longer waiting (returned, or gone) are forgotten.
            let waiting: HashSet<SocketAddr> = due.iter().map(|(e, ..)| e.addr()).collect();
            progress.retain(|addr, _| waiting.contains(addr));
            board.retain(|addr| waiting.contains(&addr));
            // The checks due now: another replica's fresh result where there is one, else
            // checked here, all together (one dead endpoint's timeout delays no other).
            let now_ms = unix_ms();
            let mut now_due = Vec::new();
            let mut taken = Vec::new();
            for (endpoint, check, service) in due {
                let entry = progress.entry(endpoint.addr()).or_insert_with(|| Progress {
                    // The first check after a random part of the interval: jitter.
                    next: Instant::now()
                        + check.interval.mul_f64(rand::rng().random_range(0.0..1.0)),
                    passes: 0,
                    waiting_since_ms: now_ms,
                    counted_ms: 0,
                });
                if Instant::now() < entry.next {
                    continue;
                }
                let fresh = board.latest(endpoint.addr()).filter(|r| {
                    r.at_ms >= entry.waiting_since_ms
                        && r.at_ms > entry.counted_ms
                        && now_ms.saturating_sub(r.at_ms) < check.interval.as_millis() as u64
                });
                match fresh {
                    Some(result) => taken.push((endpoint, check, service, result)),
                    None => now_due.push((endpoint, check, service)),
                }
            }
            let checked = futures::future::join_all(
                now_due
                    .iter()
                    .map(|(endpoint, check, _)| check_once(&subrequests, endpoint.addr(), check)),
            )
            .await;
            let mut results = Vec::new();
            for ((endpoint, check, service), healthy) in now_due.into_iter().zip(checked) {
                let result = CheckResult {
                    healthy,
                    at_ms: unix_ms(),
                };
                board.record(endpoint.addr(), result);
                results.push((endpoint, check, service, result, "this_replica"));
            }
            results.extend(taken.into_iter().map(|(e, c, s, r)| (e, c, s, r, "fleet")));
            for (endpoint, check, service, result, checked_by) in results {
                let addr = endpoint.addr();
                let Some(entry) = progress.get_mut(&addr) else {
                    continue;
                };
                let healthy = result.healthy;
                metrics
                    .health_checks_total
                    .with_label_values(&[if healthy { "healthy" } else { "unhealthy" }, checked_by])
                    .inc();
                // A failure seen anywhere since the last result counted here breaks the run,
                // even if a later pass is what this replica takes.
                let failed_between = board.last_failure_ms(addr).is_some_and(|failed| {
                    failed > entry.counted_ms && failed >= entry.waiting_since_ms
                });
                if failed_between {
                    entry.passes = 0;
                }
                entry.counted_ms = result.at_ms;
                entry.passes = if healthy { entry.passes + 1 } else { 0 };
                entry.next =
                    Instant::now() + check.interval.mul_f64(rand::rng().random_range(0.75..1.25));
                if entry.passes >= check.healthy_threshold {
                    endpoint.check_passed();
                    progress.remove(&addr);
                    tracing::info!(endpoint = %addr, service, "endpoint passed its health checks and returns");
                } else if !healthy {
                    tracing::debug!(endpoint = %addr, service, "health check failed; the endpoint stays out");
                }
            }
        }
    };
    tokio::select! {
        _ = checking => {}
        _ = stop => {}
    }
}

/// One check: `GET path` answered 2xx or 3xx within the timeout.
async fn check_once(
    subrequests: &Subrequests,
    addr: SocketAddr,
    check: &weir_discovery::HealthCheck,
) -> bool {
    let Ok(url) = format!("http://{addr}{}", check.path).parse::<http::Uri>() else {
        return false;
    };
    let Ok(to) = Destination::of(&url) else {
        return false;
    };
    let Ok(mut head) = RequestHeader::build(http::Method::GET, check.path.as_bytes(), Some(2))
    else {
        return false;
    };
    if head
        .insert_header(http::header::HOST, addr.to_string())
        .is_err()
        || head
            .insert_header("user-agent", "weir-health-check")
            .is_err()
    {
        return false;
    }
    let deadlines = Deadlines {
        connect: check.timeout,
        read: check.timeout,
    };
    match subrequests.send(&to, head, None, deadlines).await {
        Ok(answer) => (200..400).contains(&answer.status.as_u16()),
        Err(_) => false,
    }
}

/// The checker as one of the process's background services.
pub struct HealthChecker {
    pub routing: Arc<LiveRouting>,
    /// Shared with the fleet, when there is one.
    pub board: Arc<CheckBoard>,
    pub metrics: Metrics,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        run(
            Arc::clone(&self.routing),
            Arc::clone(&self.board),
            self.metrics.clone(),
            stop,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(healthy: bool, at_ms: u64) -> CheckResult {
        CheckResult { healthy, at_ms }
    }

    #[test]
    fn the_board_keeps_the_latest_result_and_the_latest_failure() {
        let board = CheckBoard::default();
        let addr = SocketAddr::from(([10, 0, 0, 1], 80));
        board.hear(addr, result(true, 1_000));
        board.hear(addr, result(false, 2_000));
        board.hear(addr, result(true, 3_000));
        // An older result heard late changes neither.
        board.hear(addr, result(true, 1_500));
        assert_eq!(board.latest(addr), Some(result(true, 3_000)));
        assert_eq!(board.last_failure_ms(addr), Some(2_000));
        // At the same moment a failure wins.
        board.hear(addr, result(false, 3_000));
        assert_eq!(board.latest(addr), Some(result(false, 3_000)));
        // This replica's own results wait for the fleet, one per endpoint.
        board.record(addr, result(true, 4_000));
        board.record(addr, result(true, 5_000));
        assert_eq!(board.take_made_here(), vec![(addr, result(true, 5_000))]);
        assert!(board.take_made_here().is_empty());
    }
}
