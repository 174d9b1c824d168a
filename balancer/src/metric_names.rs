//! The metrics the proxy and weir-client both export about balancing: their names, help and
//! labels in one place, so that a dashboard reads the edge and the in-process client alike
//! (docs/metrics.md). Plain data: the exporters build their Prometheus series from it.
//!
//! Must not: depend on a metrics library.

/// One metric's name, help and label names.
#[derive(Clone, Copy, Debug)]
pub struct MetricName {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// Latency buckets (seconds) of every duration histogram, so that series aggregate together.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub const PICKS_TOTAL: MetricName = MetricName {
    name: "weir_balancer_picks_total",
    help: "Endpoint picks, by why the balancer chose as it did.",
    labels: &["service", "algorithm", "reason"],
};

pub const UPSTREAM_RESPONSE_SECONDS: MetricName = MetricName {
    name: "weir_upstream_response_seconds",
    help: "Time from sending a request upstream to its response headers, per attempt, in seconds.",
    labels: &["service"],
};

pub const OUTLIER_EJECTIONS_TOTAL: MetricName = MetricName {
    name: "weir_outlier_ejections_total",
    help: "Endpoints ejected after consecutive failures.",
    labels: &["service"],
};

pub const UPSTREAM_ERRORS_TOTAL: MetricName = MetricName {
    name: "weir_upstream_errors_total",
    help: "Failed upstream attempts, by kind (connect, tls, timeout, reset, protocol).",
    labels: &["service", "kind"],
};
