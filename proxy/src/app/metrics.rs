//! Prometheus metrics of weir (names and labels: docs/metrics.md).
//!
//! Owns the registry and every metric handle. Label values are bounded: methods outside
//! the standard set become `_OTHER`, routes are identified by namespace/ingress/service,
//! never by raw path or host.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;
use weir_balancer::metric_names::{
    MetricName, DURATION_BUCKETS, OUTLIER_EJECTIONS_TOTAL, PICKS_TOTAL, UPSTREAM_ERRORS_TOTAL,
    UPSTREAM_RESPONSE_SECONDS,
};
use weir_balancer::PickReason;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_response: HistogramVec,
    pub routes: IntGauge,
    pub config_reloads_total: IntCounterVec,
    pub config_errors_total: IntCounterVec,
    pub config_unsupported_annotations_total: IntCounter,
    pub config_last_reload: Gauge,
    pub balancer_picks_total: IntCounterVec,
    pub outlier_ejections_total: IntCounterVec,
    pub upstream_errors_total: IntCounterVec,
    pub requests_rejected_total: IntCounterVec,
    /// Authentication checks by kind (`basic`, `external`) and result.
    pub auth_duration: HistogramVec,
    /// Mirror and warm-up copies by kind and result (sent, failed, dropped).
    pub mirror_requests_total: IntCounterVec,
    /// Requests of routes with a fleet-wide limit let on without a check, by reason.
    pub global_rate_limit_unchecked_total: IntCounterVec,
    /// Live replicas of this one's fleet, itself included (0 without a fleet).
    pub fleet_members: IntGauge,
    /// Ejections made on the fleet's view, by `source`: `fleet_failures` (failures summed
    /// over the fleet reached the threshold) or `reported` (another replica's ejection).
    pub fleet_ejections_total: IntCounterVec,
    pub fleet_gossip_bytes_total: IntCounterVec,
    /// Gossip datagrams dropped for a missing or wrong authentication tag.
    pub fleet_rejected_datagrams_total: IntCounter,
    /// Bulletins (changed reports pushed at once), by direction (sent, received).
    pub fleet_bulletins_total: IntCounterVec,
    /// Active health checks of ejected endpoints, by result (healthy, unhealthy) and by who
    /// checked (this_replica, or fleet: another replica's fresh result taken).
    pub health_checks_total: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_parked: IntGauge,
    pub connections_refused_total: IntCounter,
    pub request_header_timeouts_total: IntCounter,
    /// Access-log lines dropped because standard output could not keep up.
    pub access_log_dropped_total: IntCounter,
    pub background_restarts_total: IntCounterVec,
    pub endpoints: prometheus::IntGaugeVec,
    /// Per-endpoint series, only with `--endpoint-metrics` (one series per pod: cardinality
    /// an operator opts into).
    pub endpoint_requests_total: Option<IntCounterVec>,
    pub endpoint_in_flight: Option<prometheus::IntGaugeVec>,
}

/// A counter family of a metric the proxy shares with weir-client.
fn shared_counter(metric: MetricName) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(metric.name, metric.help), metric.labels)
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::with_endpoint_metrics(false)
    }

    /// Like [`Metrics::new`], with per-endpoint series when `per_endpoint`.
    pub fn with_endpoint_metrics(per_endpoint: bool) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let (endpoint_requests_total, endpoint_in_flight) = if per_endpoint {
            let requests = IntCounterVec::new(
                Opts::new(
                    "weir_endpoint_requests_total",
                    "Requests answered, by upstream endpoint (the last one tried) and status class.",
                ),
                &["service", "endpoint", "code_class"],
            )?;
            let in_flight = prometheus::IntGaugeVec::new(
                Opts::new(
                    "weir_endpoint_in_flight",
                    "Requests in flight per upstream endpoint (as of the scrape).",
                ),
                &["service", "endpoint"],
            )?;
            registry.register(Box::new(requests.clone()))?;
            registry.register(Box::new(in_flight.clone()))?;
            (Some(requests), Some(in_flight))
        } else {
            (None, None)
        };
        let requests_total = IntCounterVec::new(
            Opts::new(
                "weir_requests_total",
                "HTTP requests answered, by route and status code.",
            ),
            &["namespace", "ingress", "service", "method", "code"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_request_duration_seconds",
                "Time from request received to response completed, in seconds.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["namespace", "ingress", "service", "method", "code_class"],
        )?;
        let upstream_response = HistogramVec::new(
            HistogramOpts::new(
                UPSTREAM_RESPONSE_SECONDS.name,
                UPSTREAM_RESPONSE_SECONDS.help,
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            UPSTREAM_RESPONSE_SECONDS.labels,
        )?;
        let routes = IntGauge::new("weir_routes", "Routes in the live routing table.")?;
        let config_reloads_total = IntCounterVec::new(
            Opts::new(
                "weir_config_reloads_total",
                "Configuration reloads, by result (success: every source read cleanly; error: some source failed and its last good content was kept).",
            ),
            &["result"],
        )?;
        let config_errors_total = IntCounterVec::new(
            Opts::new(
                "weir_config_errors_total",
                "Configuration problems found while reloading, by kind.",
            ),
            &["kind"],
        )?;
        let config_unsupported_annotations_total = IntCounter::new(
            "weir_config_unsupported_annotations_total",
            "Annotations of served Ingresses that weir does not implement (an unknown weir.dev/* \
             name, any nginx.ingress.kubernetes.io/* one), each counted once when it appears.",
        )?;
        let config_last_reload = Gauge::new(
            "weir_config_last_reload_timestamp_seconds",
            "Unix time of the last configuration reload that was applied.",
        )?;
        let balancer_picks_total = shared_counter(PICKS_TOTAL)?;
        let outlier_ejections_total = shared_counter(OUTLIER_EJECTIONS_TOTAL)?;
        let upstream_errors_total = shared_counter(UPSTREAM_ERRORS_TOTAL)?;
        let requests_rejected_total = IntCounterVec::new(
            Opts::new(
                "weir_requests_rejected_total",
                "Requests refused before routing: ambiguous framing (smuggling shapes) or over the size limits, by reason.",
            ),
            &["reason"],
        )?;
        let auth_duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_auth_duration_seconds",
                "Time to authenticate a request, by kind (basic, external) and result (allowed, denied, error).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["kind", "result"],
        )?;
        registry.register(Box::new(auth_duration.clone()))?;
        let mirror_requests_total = IntCounterVec::new(
            Opts::new(
                "weir_mirror_requests_total",
                "Copies of requests sent elsewhere, by kind (mirror, warm_up) and result (sent: answered, failed: no answer in time, dropped: not sent, too many in flight or too large a body).",
            ),
            &["kind", "result"],
        )?;
        registry.register(Box::new(mirror_requests_total.clone()))?;
        let global_rate_limit_unchecked_total = IntCounterVec::new(
            Opts::new(
                "weir_global_rate_limit_unchecked_total",
                "Requests of routes with a global-rate-limit let on without a check (fail open), by reason (unreachable: Redis did not answer in time; not_configured: no --redis-url).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(global_rate_limit_unchecked_total.clone()))?;
        let fleet_members = IntGauge::new(
            "weir_fleet_members",
            "Live replicas of this weir's fleet, itself included (0 without --fleet-listen).",
        )?;
        registry.register(Box::new(fleet_members.clone()))?;
        let fleet_ejections_total = IntCounterVec::new(
            Opts::new(
                "weir_fleet_ejections_total",
                "Endpoint ejections made on the fleet's view, by source (fleet_failures: failures summed over the replicas reached the threshold; reported: another replica's ejection applied).",
            ),
            &["source"],
        )?;
        registry.register(Box::new(fleet_ejections_total.clone()))?;
        let fleet_gossip_bytes_total = IntCounterVec::new(
            Opts::new(
                "weir_fleet_gossip_bytes_total",
                "Bytes of fleet gossip, by direction (sent, received).",
            ),
            &["direction"],
        )?;
        registry.register(Box::new(fleet_gossip_bytes_total.clone()))?;
        let fleet_rejected_datagrams_total = IntCounter::new(
            "weir_fleet_rejected_datagrams_total",
            "Gossip datagrams dropped: no valid authentication tag for the fleet's key, or not a gossip message.",
        )?;
        registry.register(Box::new(fleet_rejected_datagrams_total.clone()))?;
        let fleet_bulletins_total = IntCounterVec::new(
            Opts::new(
                "weir_fleet_bulletins_total",
                "Bulletins (a replica's changed reports, pushed at once to every peer besides gossip), by direction (sent: datagrams sent; received: taken in).",
            ),
            &["direction"],
        )?;
        registry.register(Box::new(fleet_bulletins_total.clone()))?;
        let health_checks_total = IntCounterVec::new(
            Opts::new(
                "weir_health_checks_total",
                "Active health checks of endpoints waiting to return, by result (healthy, unhealthy) and checked_by (this_replica; fleet: another replica's fresh result taken instead of checking).",
            ),
            &["result", "checked_by"],
        )?;
        registry.register(Box::new(health_checks_total.clone()))?;
        let endpoints = prometheus::IntGaugeVec::new(
            Opts::new(
                "weir_endpoints",
                "Endpoints of the live routes, by state (ready, draining, ejected, slow_start).",
            ),
            &["service", "state"],
        )?;
        registry.register(Box::new(upstream_errors_total.clone()))?;
        registry.register(Box::new(endpoints.clone()))?;
        registry.register(Box::new(requests_rejected_total.clone()))?;
        let connections_open = IntGauge::new(
            "weir_connections_open",
            "Client connections with a request being read or served (what --max-connections limits).",
        )?;
        let connections_parked = IntGauge::new(
            "weir_connections_parked",
            "Idle plaintext HTTP/1 keep-alive connections waiting without a task of their own (counted in weir_connections_open too).",
        )?;
        let connections_refused_total = IntCounter::new(
            "weir_connections_refused_total",
            "Client connections answered 503 and closed at --max-connections.",
        )?;
        let request_header_timeouts_total = IntCounter::new(
            "weir_request_header_timeouts_total",
            "Connections closed because their first request header was not complete within --request-header-timeout.",
        )?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_parked.clone()))?;
        registry.register(Box::new(connections_refused_total.clone()))?;
        registry.register(Box::new(request_header_timeouts_total.clone()))?;
        let access_log_dropped_total = IntCounter::new(
            "weir_access_log_dropped_total",
            "Access-log lines dropped because standard output did not keep up (no request waits for the log).",
        )?;
        registry.register(Box::new(access_log_dropped_total.clone()))?;
        let background_restarts_total = IntCounterVec::new(
            Opts::new(
                "weir_background_restarts_total",
                "Background tasks (manifest watcher, Kubernetes watches) restarted after a panic or an early end.",
            ),
            &["task"],
        )?;
        registry.register(Box::new(background_restarts_total.clone()))?;
        registry.register(Box::new(balancer_picks_total.clone()))?;
        registry.register(Box::new(outlier_ejections_total.clone()))?;
        registry.register(Box::new(requests_total.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_response.clone()))?;
        registry.register(Box::new(routes.clone()))?;
        registry.register(Box::new(config_reloads_total.clone()))?;
        registry.register(Box::new(config_errors_total.clone()))?;
        registry.register(Box::new(config_unsupported_annotations_total.clone()))?;
        registry.register(Box::new(config_last_reload.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(crate::app::allocator::AllocatorCollector::new()?))?;
        // Make the result labels visible from the start (a scrape shows 0, not nothing).
        for result in ["success", "error"] {
            config_reloads_total.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry,
            requests_total,
            request_duration,
            upstream_response,
            routes,
            config_reloads_total,
            config_errors_total,
            config_unsupported_annotations_total,
            config_last_reload,
            balancer_picks_total,
            outlier_ejections_total,
            upstream_errors_total,
            requests_rejected_total,
            auth_duration,
            mirror_requests_total,
            global_rate_limit_unchecked_total,
            fleet_members,
            fleet_ejections_total,
            fleet_gossip_bytes_total,
            fleet_rejected_datagrams_total,
            fleet_bulletins_total,
            health_checks_total,
            connections_open,
            connections_parked,
            connections_refused_total,
            request_header_timeouts_total,
            access_log_dropped_total,
            background_restarts_total,
            endpoints,
            endpoint_requests_total,
            endpoint_in_flight,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// The `kind` label of `weir_upstream_errors_total` for a Pingora error.
pub fn upstream_error_kind(e: &pingora::Error) -> &'static str {
    use pingora::ErrorType as T;
    match e.etype() {
        T::ConnectTimedout | T::ReadTimedout | T::WriteTimedout | T::TLSHandshakeTimedout => {
            "timeout"
        }
        T::ConnectRefused | T::ConnectNoRoute | T::ConnectError | T::SocketError | T::BindError => {
            "connect"
        }
        // Handshake failures, rejected certificates: worth telling apart from a refused
        // connection (a configuration problem more often than a dead endpoint).
        T::TLSHandshakeFailure | T::HandshakeError | T::InvalidCert => "tls",
        T::ConnectionClosed | T::ReadError | T::WriteError => "reset",
        _ => "protocol",
    }
}

/// A bounded label value for an HTTP method.
pub fn method_label(method: &http::Method) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "_OTHER",
];

fn method_index(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        http::Method::PATCH => 5,
        http::Method::OPTIONS => 6,
        http::Method::CONNECT => 7,
        http::Method::TRACE => 8,
        _ => 9,
    }
}

/// `2xx`, `4xx`, ...; `0xx` when no response was sent (the client went away first).
pub fn code_class(code: u16) -> &'static str {
    CLASS_LABELS[class_index(code)]
}

const CLASS_LABELS: [&str; 6] = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(code: u16) -> usize {
    match code / 100 {
        c @ 1..=5 => usize::from(c),
        _ => 0,
    }
}

const PICK_REASONS: usize = PickReason::NoneAvailable as usize + 1;
const METHOD_CLASSES: usize = METHOD_LABELS.len() * CLASS_LABELS.len();

/// The labels of one route target's series.
pub struct RouteLabels<'a> {
    pub namespace: &'a str,
    pub ingress: &'a str,
    pub service: &'a str,
    pub algorithm: &'a str,
}

/// One route target's metric handles, each resolved on first use and then kept: the request
/// path bumps a counter instead of hashing up to five label values under the vector's lock
/// (four lookups cost ~1,000 instructions per request, callgrind). Nothing is allocated
/// for a target until it serves a request, so idle routes cost one pointer.
#[derive(Debug, Default)]
pub struct RouteSeries {
    handles: OnceLock<Box<RouteHandles>>,
}

#[derive(Debug)]
struct RouteHandles {
    picks: [OnceLock<IntCounter>; PICK_REASONS],
    upstream_response: OnceLock<Histogram>,
    durations: [OnceLock<Histogram>; METHOD_CLASSES],
    /// Per (method, status class): the first exact code seen and its counter. Other codes
    /// of the class (rare: a route answers 200, or 404, far more than 203) take the lookup.
    requests: [OnceLock<(u16, IntCounter)>; METHOD_CLASSES],
}

impl RouteSeries {
    fn handles(&self) -> &RouteHandles {
        self.handles.get_or_init(|| {
            Box::new(RouteHandles {
                picks: std::array::from_fn(|_| OnceLock::new()),
                upstream_response: OnceLock::new(),
                durations: std::array::from_fn(|_| OnceLock::new()),
                requests: std::array::from_fn(|_| OnceLock::new()),
            })
        })
    }

    /// `weir_balancer_picks_total` += 1.
    pub fn count_pick(&self, metrics: &Metrics, labels: &RouteLabels, reason: PickReason) {
        self.handles().picks[reason as usize]
            .get_or_init(|| {
                metrics.balancer_picks_total.with_label_values(&[
                    labels.service,
                    labels.algorithm,
                    reason.as_str(),
                ])
            })
            .inc();
    }

    /// `weir_upstream_response_seconds` of one attempt.
    pub fn observe_upstream_response(&self, metrics: &Metrics, labels: &RouteLabels, secs: f64) {
        self.handles()
            .upstream_response
            .get_or_init(|| {
                metrics
                    .upstream_response
                    .with_label_values(&[labels.service])
            })
            .observe(secs);
    }

    /// `weir_requests_total` += 1 and `weir_request_duration_seconds` of one request.
    pub fn count_request(
        &self,
        metrics: &Metrics,
        labels: &RouteLabels,
        method: &http::Method,
        code: u16,
        secs: f64,
    ) {
        let (m, c) = (method_index(method), class_index(code));
        let slot = m * CLASS_LABELS.len() + c;
        let handles = self.handles();
        let (namespace, ingress, service) = (labels.namespace, labels.ingress, labels.service);
        handles.durations[slot]
            .get_or_init(|| {
                metrics.request_duration.with_label_values(&[
                    namespace,
                    ingress,
                    service,
                    METHOD_LABELS[m],
                    CLASS_LABELS[c],
                ])
            })
            .observe(secs);
        let exact = |code: u16| {
            let code_label = code.to_string();
            metrics.requests_total.with_label_values(&[
                namespace,
                ingress,
                service,
                METHOD_LABELS[m],
                &code_label,
            ])
        };
        let (cached_code, counter) = handles.requests[slot].get_or_init(|| (code, exact(code)));
        if *cached_code == code {
            counter.inc();
        } else {
            exact(code).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new().expect("metrics");
        m.requests_total
            .with_label_values(&["ns", "ing", "svc", "GET", "200"])
            .inc();
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(text.contains(
            r#"weir_requests_total{code="200",ingress="ing",method="GET",namespace="ns",service="svc"} 1"#
        ));
        assert!(text.contains(r#"weir_config_reloads_total{result="error"} 0"#));
    }

    #[test]
    fn labels_are_bounded() {
        let odd = http::Method::from_bytes(b"BREW").expect("method");
        assert_eq!(method_label(&odd), "_OTHER");
        assert_eq!(code_class(503), "5xx");
        assert_eq!(code_class(0), "0xx");
    }
}
