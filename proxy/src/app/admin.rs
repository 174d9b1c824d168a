//! The admin listener (`--admin-listen`): `/healthz`, `/readyz`, `/metrics`,
//! `/debug/routes`, `/debug/endpoints`.
//!
//! Must not: change routing state. Everything here is read-only except the shutdown flag,
//! which only the shutdown watcher sets.

use crate::app::metrics::Metrics;
use crate::routes::routing::LiveRouting;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set once SIGTERM arrives: `/readyz` fails from then on so load balancers stop sending.
/// Also says whether the signal handlers are in place: until they are, a SIGTERM would end
/// the process at once, so `/readyz` does not report ready before.
#[derive(Debug, Default)]
pub struct ShutdownFlag {
    shutting_down: AtomicBool,
    handlers_installed: AtomicBool,
}

impl ShutdownFlag {
    pub fn begin(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
    pub fn handlers_installed(&self) {
        self.handlers_installed.store(true, Ordering::Release);
    }
    pub fn can_shut_down_gracefully(&self) -> bool {
        self.handlers_installed.load(Ordering::Acquire)
    }
}

pub struct AdminApp {
    routing: Arc<LiveRouting>,
    metrics: Metrics,
    shutdown: Arc<ShutdownFlag>,
    /// The fleet as this replica sees it (`/debug/fleet`), with `--fleet-listen`.
    fleet: Option<Arc<arc_swap::ArcSwap<crate::fleet::FleetStatus>>>,
}

impl AdminApp {
    pub fn new(routing: Arc<LiveRouting>, metrics: Metrics, shutdown: Arc<ShutdownFlag>) -> Self {
        AdminApp {
            routing,
            metrics,
            shutdown,
            fleet: None,
        }
    }

    /// Serves the fleet's view on `/debug/fleet`.
    pub fn with_fleet(mut self, fleet: Arc<arc_swap::ArcSwap<crate::fleet::FleetStatus>>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    fn readyz(&self) -> (u16, String) {
        if self.shutdown.is_shutting_down() {
            (503, "shutting down\n".into())
        } else if !self.routing.is_ready() {
            (503, "no routing snapshot yet\n".into())
        } else if !self.shutdown.can_shut_down_gracefully() {
            (503, "signal handlers not installed yet\n".into())
        } else {
            (200, "ready\n".into())
        }
    }

    fn routes_json(&self) -> serde_json::Value {
        let table = self.routing.load_full();
        let mut view = table.snapshot.to_json();
        view["generation"] = json!(table.generation);
        view
    }

    fn endpoints_json(&self) -> serde_json::Value {
        let now = weir_balancer::Nanos::now();
        let endpoints: Vec<_> = self
            .routing
            .registry()
            .snapshot()
            .iter()
            .map(|e| {
                json!({
                    "address": e.addr().to_string(),
                    "zone": e.zone(),
                    "in_flight": e.in_flight(),
                    "requests_total": e.requests_total(),
                    "weight": e.weight(),
                    "draining": e.is_draining(),
                    "ready_since_unix_seconds": e.ready_since().0 / 1_000_000_000,
                    "ejected_for_seconds": e.ejected_until(now).map(|u| u.since(now).as_secs_f64()),
                    "latency_ewma_ms": e.latency_estimate(now).map(|ns| ns / 1e6),
                    "latency_smoothed_ms": e.health_latency().map(|ns| ns / 1e6),
                    "occupancy": e.occupancy(now),
                })
            })
            .collect();
        // Per pool (backend x balancing policy): what its algorithm sees of each member.
        let pools: Vec<_> = self
            .routing
            .pools()
            .iter()
            .map(|(backend, pool)| {
                let config = pool.config();
                let window = config.slow_start.map(|s| s.window);
                let members: Vec<_> = pool
                    .endpoints()
                    .iter()
                    .map(|e| {
                        json!({
                            "address": e.addr().to_string(),
                            "effective_weight": pool.effective_weight(e, now) as f64 / 1000.0,
                            "slow_start_progress": window.map(|w| {
                                (now.since(e.ready_since()).as_secs_f64() / w.as_secs_f64()).min(1.0)
                            }),
                            "latency_health_factor": pool.health_factor(e, now),
                            "draining": e.is_draining(),
                        })
                    })
                    .collect();
                json!({
                    "backend": backend.to_string(),
                    "algorithm": config.algorithm.name(),
                    "members": members,
                })
            })
            .collect();
        json!({ "endpoints": endpoints, "pools": pools })
    }
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

fn json_response(value: &serde_json::Value) -> Response<Vec<u8>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => response(200, "application/json", body),
        Err(e) => response(
            500,
            "text/plain",
            format!("encoding failed: {e}\n").into_bytes(),
        ),
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" => response(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let (code, body) = self.readyz();
                response(code, "text/plain", body.into_bytes())
            }
            "/metrics" => {
                self.metrics.endpoints.reset();
                for (service, state, n) in self.routing.endpoint_states() {
                    self.metrics
                        .endpoints
                        .with_label_values(&[&service, state])
                        .set(n);
                }
                if let Some(gauge) = &self.metrics.endpoint_in_flight {
                    gauge.reset();
                    let mut seen = std::collections::HashSet::new();
                    for (backend, pool) in self.routing.pools() {
                        for e in pool.endpoints() {
                            let addr = e.addr().to_string();
                            if seen.insert((backend.service.clone(), addr.clone())) {
                                gauge
                                    .with_label_values(&[&backend.service, &addr])
                                    .set(i64::try_from(e.in_flight()).unwrap_or(i64::MAX));
                            }
                        }
                    }
                }
                response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            "/debug/routes" => json_response(&self.routes_json()),
            "/debug/endpoints" => json_response(&self.endpoints_json()),
            "/debug/fleet" => match &self.fleet {
                Some(fleet) => {
                    json_response(&serde_json::to_value(&**fleet.load()).unwrap_or_default())
                }
                None => response(
                    404,
                    "text/plain",
                    b"no fleet: weir runs without --fleet-listen\n".to_vec(),
                ),
            },
            _ => response(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
