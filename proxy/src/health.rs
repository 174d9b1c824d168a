//! Active health checks before re-admission: an endpoint ejected from a pool with
//! `weir.dev/health-check-path` stays out after its ejection ends until `GET <path>` answers
//! 2xx or 3xx `healthy_threshold` times in a row. Checks run every `interval`, each endpoint's
//! at a random offset, so that a fleet's replicas do not all check (or, once it passes, send
//! to) a recovering endpoint at the same moment.
//!
//! Must not: check endpoints that are not waiting for a check (a live endpoint is judged by
//! its traffic), or touch the request path.

use crate::routes::routing::LiveRouting;
use crate::subrequest::{Deadlines, Destination, Subrequests};
use pingora::http::RequestHeader;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use weir_balancer::Nanos;

/// How often the checker looks for endpoints whose check is due.
const SCAN: Duration = Duration::from_millis(100);

/// Where one endpoint's checks stand.
struct Progress {
    next: Instant,
    passes: u32,
}

/// Checks the endpoints that wait for it until `stop` resolves.
pub async fn run(routing: Arc<LiveRouting>, stop: impl std::future::Future<Output = ()>) {
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
            progress.retain(|addr, _| due.iter().any(|(e, ..)| e.addr() == *addr));
            // The checks due now, sent together (one dead endpoint's timeout delays no other).
            let mut now_due = Vec::new();
            for (endpoint, check, service) in due {
                let entry = progress.entry(endpoint.addr()).or_insert_with(|| Progress {
                    // The first check after a random part of the interval: jitter.
                    next: Instant::now()
                        + check.interval.mul_f64(rand::rng().random_range(0.0..1.0)),
                    passes: 0,
                });
                if Instant::now() >= entry.next {
                    now_due.push((endpoint, check, service));
                }
            }
            let results = futures::future::join_all(
                now_due
                    .iter()
                    .map(|(endpoint, check, _)| check_once(&subrequests, endpoint.addr(), check)),
            )
            .await;
            for ((endpoint, check, service), healthy) in now_due.into_iter().zip(results) {
                let addr = endpoint.addr();
                let Some(entry) = progress.get_mut(&addr) else {
                    continue;
                };
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
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        run(Arc::clone(&self.routing), stop).await;
    }
}
