//! Configuration pipeline: source objects -> translation -> [`LiveRouting::apply`], with
//! the logging and metrics operators need to see what happened.
//!
//! [`ConfigApplier`] is the one place a snapshot is published from; [`ManifestsService`]
//! re-reads manifests when files change and [`KubernetesService`] watches the API server. Problems are logged
//! once when they appear (not on every reload) and counted in `weir_config_errors_total`.

use crate::metrics::Metrics;
use crate::routing::LiveRouting;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weir_discovery::manifests::{LoadReport, ManifestSource, ManifestWatcher};
use weir_discovery::{translate, ClusterObjects, Rejection, TranslateOptions};

pub struct ConfigApplier {
    routing: Arc<LiveRouting>,
    metrics: Metrics,
    options: TranslateOptions,
    /// Problems reported by the previous apply, so each is logged once.
    known_problems: Mutex<BTreeSet<String>>,
}

impl ConfigApplier {
    pub fn new(routing: Arc<LiveRouting>, metrics: Metrics, options: TranslateOptions) -> Self {
        ConfigApplier {
            routing,
            metrics,
            options,
            known_problems: Mutex::new(BTreeSet::new()),
        }
    }

    /// Translates `objects` and makes the result live. `parse_rejected` are documents the
    /// source could not turn into objects; `report` says which files failed to load.
    pub fn apply(
        &self,
        objects: &ClusterObjects,
        parse_rejected: Vec<Rejection>,
        report: &LoadReport,
    ) {
        let snapshot = translate(objects, &self.options);

        let mut problems: Vec<(&'static str, String)> = Vec::new();
        for (path, reason) in &report.failed {
            let kind = if reason.starts_with("invalid YAML") {
                "yaml"
            } else {
                "read"
            };
            problems.push((
                kind,
                format!(
                    "{}: {reason}; keeping its last good content",
                    path.display()
                ),
            ));
        }
        for r in parse_rejected.iter().chain(snapshot.rejected.iter()) {
            problems.push((
                "invalid_object",
                format!("{} skipped: {}", r.object, r.reason),
            ));
        }
        for (key, backend) in &snapshot.backends {
            if let Some(problem) = &backend.problem {
                problems.push((
                    "backend",
                    format!("backend {key}: {problem}; requests to it get 503"),
                ));
            }
        }
        self.report_new_problems(&problems);

        let ingresses = snapshot.ingresses.len();
        let routes = self.routing.apply(snapshot);
        self.metrics
            .routes
            .set(i64::try_from(routes).unwrap_or(i64::MAX));
        let result = if report.is_clean() {
            "success"
        } else {
            "error"
        };
        self.metrics
            .config_reloads_total
            .with_label_values(&[result])
            .inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.config_last_reload.set(now);
        tracing::info!(
            routes,
            ingresses,
            problems = problems.len(),
            generation = self.routing.load().generation,
            "routing snapshot applied"
        );
    }

    fn report_new_problems(&self, problems: &[(&'static str, String)]) {
        let mut known = self
            .known_problems
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current: BTreeSet<String> = problems.iter().map(|(_, m)| m.clone()).collect();
        for (kind, message) in problems {
            if !known.contains(message) {
                tracing::warn!(kind, "{message}");
                self.metrics
                    .config_errors_total
                    .with_label_values(&[kind])
                    .inc();
            }
        }
        *known = current;
    }
}

/// Re-reads `--manifests` when files change and applies the result.
pub struct ManifestsService {
    source: Mutex<ManifestSource>,
    applier: Arc<ConfigApplier>,
    debounce: Duration,
}

impl ManifestsService {
    pub fn new(source: ManifestSource, applier: Arc<ConfigApplier>, debounce: Duration) -> Self {
        ManifestsService {
            source: Mutex::new(source),
            applier,
            debounce,
        }
    }

    /// Reads every manifest again and applies what is there.
    pub fn reload(&self) {
        let mut source = self
            .source
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let report = source.reload();
        let objects = source.objects();
        let rejected = source.rejected();
        drop(source);
        self.applier.apply(&objects, rejected, &report);
    }
}

#[async_trait]
impl BackgroundService for ManifestsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let roots = self
            .source
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .roots()
            .to_vec();
        let mut watcher = loop {
            match ManifestWatcher::new(&roots, self.debounce) {
                Ok(w) => break w,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch manifests; retrying in 5s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        // Changes between the initial load and the watch starting would otherwise be lost.
        self.reload();
        loop {
            tokio::select! {
                changed = watcher.changed() => {
                    if changed.is_none() {
                        tracing::error!("manifest watcher stopped; routes stay as they are");
                        return;
                    }
                    self.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Watches Kubernetes and applies what it sees (when weir runs without `--manifests`).
pub struct KubernetesService {
    kubeconfig: Option<std::path::PathBuf>,
    namespace: Option<String>,
    applier: Arc<ConfigApplier>,
    debounce: Duration,
}

impl KubernetesService {
    pub fn new(
        kubeconfig: Option<std::path::PathBuf>,
        namespace: Option<String>,
        applier: Arc<ConfigApplier>,
        debounce: Duration,
    ) -> Self {
        KubernetesService {
            kubeconfig,
            namespace,
            applier,
            debounce,
        }
    }

    async fn client(&self) -> Result<kube::Client, String> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => kube::Config::infer().await.map_err(|e| e.to_string())?,
        };
        kube::Client::try_from(config).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl BackgroundService for KubernetesService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The client lives on this service's runtime (its workers are spawned here).
        let client = loop {
            match self.client().await {
                Ok(client) => break client,
                Err(e) => {
                    tracing::error!(error = %e, "cannot configure the Kubernetes client; retrying in 5s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        let applier = Arc::clone(&self.applier);
        let metrics = applier.metrics.clone();
        let watch = weir_discovery::kubernetes::run(
            client,
            self.namespace.clone(),
            self.debounce,
            move |objects| applier.apply(&objects, Vec::new(), &LoadReport::default()),
            move |error| {
                tracing::warn!(
                    kind = "watch",
                    "{error}; keeping the last good routes and retrying"
                );
                metrics
                    .config_errors_total
                    .with_label_values(&["watch"])
                    .inc();
            },
        );
        tokio::select! {
            _ = watch => tracing::error!("Kubernetes watches ended"),
            _ = shutdown.changed() => {}
        }
    }
}
