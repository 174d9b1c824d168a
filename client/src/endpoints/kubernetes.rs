//! A Service's endpoints from the API server: its Service (for the port), its EndpointSlices
//! (label `kubernetes.io/service-name`) and the Pods its selector names (for readiness times),
//! each a reflector made by weir-discovery's [`watch_kind`], as the proxy's; translated by
//! weir-discovery's [`endpoints_of`], the function the proxy resolves backends with.
//!
//! Must not: stop on an API error (the watchers back off and resume; the last endpoints
//! published stay until new ones are known), or publish before the Service and its slices
//! are synced.

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::Api;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use weir_balancer::EndpointSpec;
use weir_discovery::endpoints::{endpoints_of, pod_ready_since, service_port, SERVICE_NAME_LABEL};
use weir_discovery::kubernetes::{drop_bookkeeping, watch_kind, Progress};

/// A Kubernetes Service port: the target of a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTarget {
    pub namespace: String,
    pub name: String,
    /// The Service port's number or name.
    pub port: String,
}

impl ServiceTarget {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, port: impl ToString) -> Self {
        ServiceTarget {
            namespace: namespace.into(),
            name: name.into(),
            port: port.to_string(),
        }
    }

    /// `name.namespace.svc`, with the port when it is a number: what calls send as `Host`.
    pub fn authority(&self) -> String {
        match self.port.parse::<u16>() {
            Ok(port) => format!("{}.{}.svc:{port}", self.name, self.namespace),
            Err(_) => format!("{}.{}.svc", self.name, self.namespace),
        }
    }
}

impl std::fmt::Display for ServiceTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// The Service's pod selector as a label selector (`a=b,c=d`); `None` without one.
fn pod_selector(service: &Service) -> Option<String> {
    let selector: &BTreeMap<String, String> = service.spec.as_ref()?.selector.as_ref()?;
    (!selector.is_empty()).then(|| {
        selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Watches `target` and publishes its endpoints on `tx` until every receiver is gone.
pub(crate) async fn watch(
    client: kube::Client,
    target: ServiceTarget,
    debounce: Duration,
    tx: watch::Sender<Vec<EndpointSpec>>,
) {
    let ns = target.namespace.as_str();
    let (services, mut service_events) = watch_kind(
        Api::<Service>::namespaced(client.clone(), ns),
        watcher::Config::default().fields(&format!("metadata.name={}", target.name)),
        "services",
        drop_bookkeeping,
    );
    let (slices, mut slice_events) = watch_kind(
        Api::<EndpointSlice>::namespaced(client.clone(), ns),
        watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", target.name)),
        "endpointslices",
        drop_bookkeeping,
    );
    // Pods are watched by the Service's selector, once it is known (and again if it changes).
    let mut pods: Option<(String, Store<Pod>, BoxStream<'static, Progress>)> = None;
    let (mut service_synced, mut slices_synced) = (false, false);
    // When a burst of changes began, if one is waiting to be published.
    let mut pending: Option<Instant> = None;
    let mut last_error = String::new();
    let mut quiet_until = Instant::now();
    loop {
        let pod_events = async {
            match pods.as_mut() {
                Some((_, _, events)) => events.next().await,
                None => std::future::pending().await,
            }
        };
        let deadline = match pending {
            Some(began) => quiet_until.min(began + debounce * 4),
            None => Instant::now() + Duration::from_secs(3_600),
        };
        let progress = tokio::select! {
            _ = tx.closed() => return,
            event = service_events.next() => event,
            event = slice_events.next() => event,
            event = pod_events => event,
            _ = tokio::time::sleep_until(deadline), if pending.is_some() => {
                pending = None;
                publish(&target, &services, &slices, pods.as_ref().map(|p| &p.1), &tx);
                continue;
            }
        };
        let Some(progress) = progress else {
            // A watch stream ended (it does not, with backoff): stop rather than spin.
            tracing::error!(target = %target, "endpoint watch ended");
            return;
        };
        match progress {
            Progress::Failed(kind, e) => {
                if e != last_error {
                    tracing::warn!(target = %target, kind, error = %e, "endpoint watch failed; retrying with backoff");
                    last_error = e;
                }
                continue;
            }
            Progress::Synced(kind) => match kind {
                "services" => service_synced = true,
                "endpointslices" => slices_synced = true,
                _ => {}
            },
            Progress::Changed => {}
        }
        last_error.clear();
        // The Service's selector names the Pods to watch.
        let selector = services.state().first().and_then(|s| pod_selector(s));
        if selector.as_deref() != pods.as_ref().map(|p| p.0.as_str()) {
            pods = selector.map(|selector| {
                let (store, events) = watch_kind(
                    Api::<Pod>::namespaced(client.clone(), ns),
                    watcher::Config::default().labels(&selector),
                    "pods",
                    drop_bookkeeping,
                );
                (selector, store, events)
            });
        }
        if !(service_synced && slices_synced) {
            continue;
        }
        if tx.borrow().is_empty() && pending.is_none() {
            // The first full list goes at once.
            publish(
                &target,
                &services,
                &slices,
                pods.as_ref().map(|p| &p.1),
                &tx,
            );
            if !tx.borrow().is_empty() {
                continue;
            }
        }
        let now = Instant::now();
        pending.get_or_insert(now);
        quiet_until = now + debounce;
    }
}

/// Publishes the endpoints the stores say, if they differ from the last published.
fn publish(
    target: &ServiceTarget,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pods: Option<&Store<Pod>>,
    tx: &watch::Sender<Vec<EndpointSpec>>,
) {
    let endpoints = match services.state().first() {
        None => {
            tracing::warn!(target = %target, "Service not found: no endpoints");
            Vec::new()
        }
        Some(service) => match service_port(service, &target.port) {
            None => {
                tracing::warn!(target = %target, "the Service has no such port: no endpoints");
                Vec::new()
            }
            Some(port) => {
                let ready_times: HashMap<String, weir_balancer::Nanos> = pods
                    .map(|store| store.state())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|pod| Some((pod.metadata.name.clone()?, pod_ready_since(pod)?)))
                    .collect();
                let state = slices.state();
                let slices: Vec<&EndpointSlice> = state.iter().map(|s| s.as_ref()).collect();
                endpoints_of(port, &slices, |pod| ready_times.get(pod).copied())
            }
        },
    };
    tx.send_if_modified(|current| {
        let changed = *current != endpoints;
        if changed {
            tracing::debug!(target = %target, endpoints = endpoints.len(), "endpoints changed");
            *current = endpoints;
        }
        changed
    });
}
