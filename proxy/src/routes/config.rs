//! Configuration pipeline: source objects -> translation -> [`LiveRouting::apply`], with
//! the logging and metrics operators need to see what happened.
//!
//! [`ConfigApplier`] is the one place a snapshot is published from; [`ManifestsService`]
//! re-reads manifests when files change and [`KubernetesService`] watches the API server. Problems are logged
//! once when they appear (not on every reload) and counted in `weir_config_errors_total`.

use crate::app::metrics::Metrics;
use crate::routes::routing::LiveRouting;
use async_trait::async_trait;
use k8s_openapi::api::networking::v1::Ingress;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weir_discovery::manifests::{LoadReport, ManifestSource, ManifestWatcher};
use weir_discovery::{
    translate, ClusterObjects, ObjectRef, OverriddenAnnotation, Rejection, TranslateOptions,
    UnsupportedAnnotation,
};

/// The outcome of one apply: Ingresses served, objects rejected, annotations of served
/// Ingresses that weir does not implement.
#[derive(Debug, Default)]
pub struct Applied {
    pub served: Vec<ObjectRef>,
    pub rejected: Vec<Rejection>,
    pub unsupported: Vec<UnsupportedAnnotation>,
    pub overridden: Vec<OverriddenAnnotation>,
    /// Problems of served Ingresses' authentication (unusable: their routes answer 503).
    pub auth_problems: Vec<Rejection>,
}

/// What a Warning Event says of one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Warning {
    object: ObjectRef,
    /// The Event's reason: `Rejected`, `UnsupportedAnnotation`, `AnnotationOverridden` or
    /// `AuthProblem`.
    reason: &'static str,
    note: String,
}

impl Applied {
    /// The Warning Events this outcome calls for: one per rejection of an Ingress, one per
    /// unsupported annotation, one per ingress-nginx annotation a `weir.dev/*` one overrides.
    fn warnings(&self) -> Vec<Warning> {
        let rejected = self
            .rejected
            .iter()
            // Objects users write routes with; a Secret's problem is reported on its Ingress
            // or Gateway listener.
            .filter(|r| {
                matches!(
                    r.object.kind,
                    "Ingress"
                        | "GatewayClass"
                        | "Gateway"
                        | "HTTPRoute"
                        | "GRPCRoute"
                        | "ReferenceGrant"
                        | "BalancerPolicy"
                        | "BackendLBPolicy"
                )
            })
            .map(|r| Warning {
                object: r.object.clone(),
                reason: "Rejected",
                note: r.reason.clone(),
            });
        let unsupported = self.unsupported.iter().map(|u| Warning {
            object: u.object.clone(),
            reason: "UnsupportedAnnotation",
            note: unsupported_note(&u.annotation),
        });
        let overridden = self.overridden.iter().map(|o| Warning {
            object: o.object.clone(),
            reason: "AnnotationOverridden",
            note: overridden_note(o),
        });
        let auth = self.auth_problems.iter().map(|a| Warning {
            object: a.object.clone(),
            reason: "AuthProblem",
            note: a.reason.clone(),
        });
        rejected
            .chain(unsupported)
            .chain(overridden)
            .chain(auth)
            .collect()
    }
}

fn overridden_note(o: &OverriddenAnnotation) -> String {
    format!(
        "annotation {} is overridden by {}, which sets the same and wins",
        o.annotation, o.by
    )
}

fn unsupported_note(annotation: &str) -> String {
    format!("annotation {annotation} is not supported by weir; the Ingress is served without it")
}

/// The kind of problem an unsupported annotation is (its own metric, not an error: the
/// Ingress is served).
const UNSUPPORTED_ANNOTATION: &str = "unsupported_annotation";

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
    /// Returns what was served and what was rejected.
    pub fn apply(
        &self,
        objects: &ClusterObjects,
        parse_rejected: Vec<Rejection>,
        report: &LoadReport,
    ) -> Applied {
        let started = std::time::Instant::now();
        // Certificates are checked for expiry against the time of each translation.
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let options = TranslateOptions {
            now_unix,
            ..self.options.clone()
        };
        let mut snapshot = translate(objects, &options);
        // Documents that could not be read show in /debug/routes with the rest.
        snapshot.rejected.splice(0..0, parse_rejected);

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
        for r in &snapshot.rejected {
            problems.push((
                "invalid_object",
                format!("{} skipped: {}", r.object, r.reason),
            ));
        }
        for u in &snapshot.unsupported {
            problems.push((
                UNSUPPORTED_ANNOTATION,
                format!("{}: {}", u.object, unsupported_note(&u.annotation)),
            ));
        }
        for a in &snapshot.auth_problems {
            problems.push(("auth", format!("{}: {}", a.object, a.reason)));
        }
        for o in &snapshot.overridden {
            problems.push((
                "annotation_overridden",
                format!("{}: {}", o.object, overridden_note(o)),
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

        let applied = Applied {
            served: snapshot.ingresses.clone(),
            rejected: snapshot.rejected.clone(),
            unsupported: snapshot.unsupported.clone(),
            overridden: snapshot.overridden.clone(),
            auth_problems: snapshot.auth_problems.clone(),
        };
        let ingresses = applied.served.len();
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
            translate_and_apply_ms = started.elapsed().as_secs_f64() * 1000.0,
            "routing snapshot applied"
        );
        applied
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
                if *kind == UNSUPPORTED_ANNOTATION {
                    self.metrics.config_unsupported_annotations_total.inc();
                } else {
                    self.metrics
                        .config_errors_total
                        .with_label_values(&[kind])
                        .inc();
                }
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
        let started = std::time::Instant::now();
        let report = source.reload();
        let objects = source.objects();
        let rejected = source.rejected();
        drop(source);
        let read_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(
            files = report.files,
            parsed = report.parsed,
            read_ms,
            "manifests read"
        );
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

/// Who writes status, and what: the Lease that elects the writer, the Service whose
/// addresses go into Ingress status and Gateway addresses (`--publish-service`), and the
/// Gateway API controller name whose objects get status.
#[derive(Debug, Clone)]
pub struct StatusPublishing {
    pub service: Option<(String, String)>,
    pub election_namespace: String,
    pub election_id: String,
    pub identity: String,
    pub gateway_controller: String,
}

/// Watches Kubernetes and applies what it sees (when weir runs without `--manifests`); the
/// elected replica writes Ingress status (with `--publish-service`) and the status of the
/// Gateway API objects of weir's classes.
pub struct KubernetesService {
    kubeconfig: Option<std::path::PathBuf>,
    namespace: Option<String>,
    applier: Arc<ConfigApplier>,
    debounce: Duration,
    publishing: StatusPublishing,
}

impl KubernetesService {
    pub fn new(
        kubeconfig: Option<std::path::PathBuf>,
        namespace: Option<String>,
        applier: Arc<ConfigApplier>,
        debounce: Duration,
        publishing: StatusPublishing,
    ) -> Self {
        KubernetesService {
            kubeconfig,
            namespace,
            applier,
            debounce,
            publishing,
        }
    }

    async fn client(&self) -> Result<kube::Client, String> {
        kube_client(self.kubeconfig.as_deref()).await
    }
}

/// A client of the API server: from `kubeconfig`, else the in-cluster service account, then
/// `KUBECONFIG` or `~/.kube/config`.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
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
        let served: Arc<Mutex<Vec<Arc<Ingress>>>> = Arc::default();
        // Warnings go to a task that posts Events, so the watch loop never waits on writes.
        let (warnings, warnings_rx) = tokio::sync::watch::channel(Vec::<Warning>::new());
        let identity = self.publishing.identity.clone();
        // What the elected replica writes Gateway API status from: the latest objects, and
        // how many sets came before them.
        let latest: Arc<Mutex<Option<(u64, ClusterObjects)>>> = Arc::default();
        let latest_by_watch = Arc::clone(&latest);
        let events = report_warnings(client.clone(), identity, warnings_rx);
        let served_by_watch = Arc::clone(&served);
        let watch = weir_discovery::kubernetes::run(
            client.clone(),
            self.namespace.clone(),
            self.debounce,
            move |objects, undecodable| {
                let applied = applier.apply(&objects, undecodable, &LoadReport::default());
                let _ = warnings.send(applied.warnings());
                // A set, not a scan per Ingress: snapshots may hold tens of thousands.
                let served: std::collections::HashSet<(&str, &str)> = applied
                    .served
                    .iter()
                    .filter(|r| r.kind == "Ingress")
                    .map(|r| (r.namespace.as_str(), r.name.as_str()))
                    .collect();
                let ours: Vec<Arc<Ingress>> = objects
                    .ingresses
                    .iter()
                    .filter(|i| {
                        let ns = i.metadata.namespace.as_deref().unwrap_or_default();
                        let name = i.metadata.name.as_deref().unwrap_or_default();
                        served.contains(&(ns, name))
                    })
                    .cloned()
                    .collect();
                *served_by_watch.lock().unwrap_or_else(|p| p.into_inner()) = ours;
                let mut latest = latest_by_watch.lock().unwrap_or_else(|p| p.into_inner());
                let version = latest.as_ref().map_or(0, |(v, _)| v + 1);
                *latest = Some((version, objects));
            },
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
        let status = publish_status(client.clone(), &self.publishing, served, latest);
        tokio::select! {
            _ = watch => tracing::error!("Kubernetes watches ended"),
            _ = status => {}
            _ = events => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Posts a `Warning` Event for each rejected Ingress and each unsupported annotation, once
/// per distinct note while this process runs.
async fn report_warnings(
    client: kube::Client,
    identity: String,
    mut warnings: tokio::sync::watch::Receiver<Vec<Warning>>,
) {
    let mut reported: BTreeSet<Warning> = BTreeSet::new();
    while warnings.changed().await.is_ok() {
        let current = warnings.borrow_and_update().clone();
        for w in current {
            if reported.contains(&w) {
                continue;
            }
            let posted = weir_discovery::status::report_warning(
                client.clone(),
                &w.object,
                w.reason,
                &w.note,
                &identity,
            )
            .await;
            match posted {
                Ok(()) => {
                    reported.insert(w);
                }
                Err(e) => tracing::warn!(error = %e, object = %w.object, "could not post an Event"),
            }
        }
    }
}

/// Every 2 s, while there is status to write (a publish Service, or Gateway API objects of
/// weir's classes): take part in the election; while leading, bring the status of the served
/// Ingresses to the publish Service's addresses, and that of the Gateway API objects to what
/// translation says of them.
async fn publish_status(
    client: kube::Client,
    publishing: &StatusPublishing,
    served: Arc<Mutex<Vec<Arc<Ingress>>>>,
    latest: Arc<Mutex<Option<(u64, ClusterObjects)>>>,
) {
    use weir_discovery::gateway::objects::GatewayStatusAddress;
    use weir_discovery::status::{
        gateway_addresses, published_addresses, update_ingress_status, write_gateway_status,
        LeaderElector,
    };
    let elector = LeaderElector::new(
        client.clone(),
        &publishing.election_namespace,
        &publishing.election_id,
        &publishing.identity,
        Duration::from_secs(15),
    );
    let mut leading = false;
    let mut last_error = String::new();
    // The objects' version and addresses whose Gateway API status is all written: nothing
    // to compute again until one of them changes (or leadership does).
    let mut settled: Option<(u64, Vec<GatewayStatusAddress>)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let (version, objects) = match latest.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some((version, objects)) => (version, Some(objects)),
            None => (0, None),
        };
        let gateway_api = objects.as_ref().is_some_and(|o| {
            o.gateway_classes
                .iter()
                .any(|c| c.spec.controller_name == publishing.gateway_controller)
        });
        if publishing.service.is_none() && !gateway_api {
            continue;
        }
        let round = async {
            let now_leading = elector.try_lead().await?;
            if now_leading != leading {
                tracing::info!(leading = now_leading, identity = %publishing.identity, "status leadership changed");
                leading = now_leading;
                settled = None;
            }
            if !leading {
                return Ok(());
            }
            let addresses = match &publishing.service {
                Some((service_ns, service_name)) => {
                    // A publish Service that does not exist has no addresses (and Gateways
                    // still get their other status); other errors end the round, keeping
                    // what status says until the Service can be read.
                    let addresses = match published_addresses(
                        client.clone(),
                        service_ns,
                        service_name,
                    )
                    .await
                    {
                        Ok(addresses) => addresses,
                        Err(kube::Error::Api(e)) if e.code == 404 => {
                            tracing::warn!(service = %format!("{service_ns}/{service_name}"), "the publish Service does not exist");
                            Vec::new()
                        }
                        Err(e) => return Err(e),
                    };
                    let ingresses = served.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let written =
                        update_ingress_status(client.clone(), &ingresses, &addresses).await?;
                    if written > 0 {
                        tracing::info!(written, "Ingress status updated");
                    }
                    addresses
                }
                None => Vec::new(),
            };
            let key = (version, gateway_addresses(&addresses));
            if let (Some(objects), true, false) =
                (&objects, gateway_api, settled.as_ref() == Some(&key))
            {
                let updates = weir_discovery::gateway::status::status_updates(
                    objects,
                    &publishing.gateway_controller,
                    &key.1,
                    k8s_openapi::jiff::Timestamp::now(),
                );
                for update in &updates {
                    tracing::debug!(object = update.describe(), "writing Gateway API status");
                }
                let nothing_to_write = updates.is_empty();
                let (written, failed) = write_gateway_status(client.clone(), updates).await;
                if written > 0 {
                    tracing::info!(written, "Gateway API status updated");
                }
                for (object, e) in failed {
                    tracing::warn!(error = %e, object, "could not write status; retrying next round");
                }
                if nothing_to_write {
                    settled = Some(key);
                }
            }
            Ok::<(), kube::Error>(())
        };
        match round.await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                let message = e.to_string();
                if message != last_error {
                    tracing::warn!(error = %message, "status round failed; retrying");
                    last_error = message;
                }
            }
        }
    }
}
