//! Optional Prometheus metrics on a registry the caller owns, defined once with the proxy's in
//! `weir_balancer::metric_names` where they mean the same (`weir_balancer_picks_total`,
//! `weir_upstream_response_seconds`, `weir_outlier_ejections_total`,
//! `weir_upstream_errors_total`; docs/metrics.md), so one dashboard reads the edge and the
//! in-process client alike. `service` is the client's name (`namespace/name`); the client's
//! error kinds are connect, timeout, reset and protocol.
//!
//! Must not: register twice on one registry: register once, and give every client a clone.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use weir_balancer::metric_names::{
    MetricName, DURATION_BUCKETS, OUTLIER_EJECTIONS_TOTAL, PICKS_TOTAL, UPSTREAM_ERRORS_TOTAL,
    UPSTREAM_RESPONSE_SECONDS,
};

fn counter(metric: MetricName) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(metric.name, metric.help), metric.labels)
}

/// The client's metrics; cheap to clone (every clone counts into the same series).
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    pub(crate) picks: IntCounterVec,
    pub(crate) response_seconds: HistogramVec,
    pub(crate) ejections: IntCounterVec,
    pub(crate) upstream_errors: IntCounterVec,
    pub(crate) retries: IntCounterVec,
}

impl ClientMetrics {
    /// Registers the client's metrics on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let picks = counter(PICKS_TOTAL)?;
        let response_seconds = HistogramVec::new(
            HistogramOpts::new(
                UPSTREAM_RESPONSE_SECONDS.name,
                UPSTREAM_RESPONSE_SECONDS.help,
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            UPSTREAM_RESPONSE_SECONDS.labels,
        )?;
        let ejections = counter(OUTLIER_EJECTIONS_TOTAL)?;
        let upstream_errors = counter(UPSTREAM_ERRORS_TOTAL)?;
        let retries = IntCounterVec::new(
            Opts::new(
                "weir_client_retries_total",
                "Attempts weir-client sent again to another endpoint after a failed one.",
            ),
            &["service"],
        )?;
        registry.register(Box::new(picks.clone()))?;
        registry.register(Box::new(response_seconds.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        Ok(ClientMetrics {
            picks,
            response_seconds,
            ejections,
            upstream_errors,
            retries,
        })
    }
}
