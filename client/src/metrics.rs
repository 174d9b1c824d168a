//! Optional Prometheus metrics on a registry the caller owns, under the names weir's proxy uses
//! where they mean the same (`weir_balancer_picks_total`, `weir_upstream_response_seconds`,
//! `weir_outlier_ejections_total`, `weir_upstream_errors_total`; docs/metrics.md), so one
//! dashboard reads the edge and the in-process client alike. `service` is the client's name
//! (`namespace/name`).
//!
//! Must not: register twice on one registry: register once, and give every client a clone.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The proxy's latency buckets (seconds), so histograms of both aggregate together.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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
        let picks = IntCounterVec::new(
            Opts::new(
                "weir_balancer_picks_total",
                "Endpoint picks, by why the balancer chose as it did.",
            ),
            &["service", "algorithm", "reason"],
        )?;
        let response_seconds = HistogramVec::new(
            HistogramOpts::new(
                "weir_upstream_response_seconds",
                "Time from sending a request upstream to its response headers, per attempt, in seconds.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["service"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "weir_outlier_ejections_total",
                "Endpoints ejected after consecutive failures.",
            ),
            &["service"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "weir_upstream_errors_total",
                "Failed upstream attempts, by kind (connect, timeout, reset, protocol).",
            ),
            &["service", "kind"],
        )?;
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
