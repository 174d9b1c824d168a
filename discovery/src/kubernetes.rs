//! The Kubernetes source: watches Ingresses, IngressClasses, Services, EndpointSlices, TLS
//! Secrets, Opaque Secrets (basic auth's password files) and, when the cluster serves Gateway
//! API, GatewayClasses, Gateways, HTTPRoutes and ReferenceGrants with kube-rs reflectors and publishes [`ClusterObjects`] — first once every
//! kind has finished its initial sync, then after each debounced burst of changes. The
//! objects go through the same [`crate::translate()`] as manifests.
//!
//! Resilience comes from kube-rs's watcher: relist on 410 Gone, re-watch when a stream ends,
//! exponential backoff on errors. While the API server is unreachable nothing is published,
//! so the proxy keeps its last good snapshot. Errors are reported through `on_error`,
//! repeated identical errors once.
//!
//! Must not: translate, touch the proxy, or write to the API server (status and events come
//! with the rest of the Kubernetes issue).

use crate::gateway::objects::{
    BackendLbPolicy, BalancerPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant,
};
use crate::objects::ClusterObjects;
use futures::stream::{select_all, BoxStream};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// What happened on one of the watched kinds.
enum Progress {
    Changed,
    Synced(&'static str),
    Failed(&'static str, String),
}

fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    name: &'static str,
    trim: fn(&mut K),
) -> (Store<K>, BoxStream<'static, Progress>)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher(api, config).modify(trim))
        .default_backoff()
        .map(move |event| match event {
            Ok(watcher::Event::InitDone) => Progress::Synced(name),
            Ok(_) => Progress::Changed,
            Err(e) => Progress::Failed(name, e.to_string()),
        })
        .boxed();
    (reader, stream)
}

/// `kubectl apply`'s copy of the whole object as it was last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops `managedFields`, which translation never reads and the API server sends with every
/// object; often larger than the rest of it. Safe for objects weir writes back (Ingress
/// status): an update without `managedFields` leaves the server's unchanged.
fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// [`drop_managed_fields`] and `kubectl apply`'s last-applied copy of the whole object, for
/// the kinds weir only reads: the stores keep every Service and EndpointSlice of the cluster.
/// (Not for Ingresses: their status is written back with a replace, which would remove it.)
fn drop_bookkeeping<K: Resource>(object: &mut K) {
    drop_managed_fields(object);
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Which resources (`httproutes`, `grpcroutes`, ...) the API server serves in
/// `group_version`; empty when it serves none (the CRDs are not installed).
async fn served_resources(client: &Client, group_version: &str) -> Vec<String> {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(e) => {
            tracing::debug!(error = %e, group_version, "not served");
            Vec::new()
        }
    }
}

/// The stores of the Gateway API kinds (and weir's policy) the cluster serves.
struct GatewayStores {
    namespaces: Option<Store<Namespace>>,
    classes: Option<Store<GatewayClass>>,
    gateways: Option<Store<Gateway>>,
    http_routes: Option<Store<HttpRoute>>,
    grpc_routes: Option<Store<GrpcRoute>>,
    grants: Option<Store<ReferenceGrant>>,
    lb_policies: Option<Store<BackendLbPolicy>>,
    balancer_policies: Option<Store<BalancerPolicy>>,
}

/// Watches `api` when `served`, adding its stream to `streams`.
fn watch_if<K>(
    served: bool,
    api: Api<K>,
    name: &'static str,
    streams: &mut Vec<BoxStream<'static, Progress>>,
) -> Option<Store<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    if !served {
        return None;
    }
    let (store, stream) = watch_kind(api, watcher::Config::default(), name, drop_bookkeeping);
    streams.push(stream);
    Some(store)
}

/// A store's objects; none when the kind is not watched.
fn stored<K: Clone + Resource<DynamicType = ()>>(store: Option<&Option<Store<K>>>) -> Vec<Arc<K>> {
    store
        .and_then(Option::as_ref)
        .map_or_else(Vec::new, snapshot)
}

fn snapshot<K: Clone + Resource<DynamicType = ()>>(store: &Store<K>) -> Vec<Arc<K>> {
    store.state()
}

/// Watches until the watch streams end (they do not, short of the runtime stopping).
/// `publish` receives every object after the initial sync and after each burst of changes
/// has been quiet for `debounce` (at most `4 x debounce` of continuous churn).
pub async fn run(
    client: Client,
    namespace: Option<String>,
    debounce: Duration,
    mut publish: impl FnMut(ClusterObjects),
    mut on_error: impl FnMut(String),
) {
    let ns = namespace.as_deref();
    let (ingresses, s1) = watch_kind(
        api::<Ingress>(&client, ns),
        watcher::Config::default(),
        "Ingress",
        drop_managed_fields,
    );
    let (classes, s2) = watch_kind(
        Api::<IngressClass>::all(client.clone()),
        watcher::Config::default(),
        "IngressClass",
        drop_bookkeeping,
    );
    let (services, s3) = watch_kind(
        api::<Service>(&client, ns),
        watcher::Config::default(),
        "Service",
        drop_bookkeeping,
    );
    let (slices, s4) = watch_kind(
        api::<EndpointSlice>(&client, ns),
        watcher::Config::default(),
        "EndpointSlice",
        drop_bookkeeping,
    );
    let (secrets, s5) = watch_kind(
        api::<Secret>(&client, ns),
        watcher::Config::default().fields("type=kubernetes.io/tls"),
        "TLS Secret",
        drop_bookkeeping,
    );
    // Basic auth's password files (`auth-secret`) are Opaque Secrets; other types (service
    // account tokens, Helm releases) are never read, so never held.
    let (opaque_secrets, s6) = watch_kind(
        api::<Secret>(&client, ns),
        watcher::Config::default().fields("type=Opaque"),
        "Opaque Secret",
        drop_bookkeeping,
    );
    let mut streams = vec![s1, s2, s3, s4, s5, s6];
    // Gateway API, when the cluster serves its CRDs (asked once: installing them later
    // takes a restart of weir); without them weir serves Ingresses alone. Each kind is
    // watched when the cluster serves it (GRPCRoute became v1 after HTTPRoute; policies
    // have CRDs of their own).
    let served = [
        served_resources(&client, "gateway.networking.k8s.io/v1").await,
        served_resources(&client, "gateway.networking.k8s.io/v1beta1").await,
        served_resources(&client, "gateway.networking.k8s.io/v1alpha2").await,
        served_resources(&client, "weir.dev/v1alpha1").await,
    ];
    let [v1, v1beta1, v1alpha2, weir] = &served;
    let gateway = match v1.iter().any(|r| r == "httproutes") {
        true => Some(GatewayStores {
            // Listeners may allow routes by their namespace's labels.
            namespaces: watch_if(true, Api::all(client.clone()), "Namespace", &mut streams),
            classes: watch_if(true, Api::all(client.clone()), "GatewayClass", &mut streams),
            gateways: watch_if(true, api(&client, ns), "Gateway", &mut streams),
            http_routes: watch_if(true, api(&client, ns), "HTTPRoute", &mut streams),
            grpc_routes: watch_if(
                v1.iter().any(|r| r == "grpcroutes"),
                api(&client, ns),
                "GRPCRoute",
                &mut streams,
            ),
            grants: watch_if(
                v1beta1.iter().any(|r| r == "referencegrants"),
                api(&client, ns),
                "ReferenceGrant",
                &mut streams,
            ),
            lb_policies: watch_if(
                v1alpha2.iter().any(|r| r == "backendlbpolicies"),
                api(&client, ns),
                "BackendLBPolicy",
                &mut streams,
            ),
            balancer_policies: watch_if(
                weir.iter().any(|r| r == "balancerpolicies"),
                api(&client, ns),
                "BalancerPolicy",
                &mut streams,
            ),
        }),
        false => {
            tracing::info!("the cluster serves no Gateway API (gateway.networking.k8s.io/v1): watching Ingresses only");
            None
        }
    };
    let watched_kinds = streams.len();
    let mut events = select_all(streams);
    let mut synced: Vec<&'static str> = Vec::new();
    let mut last_error: Option<String> = None;
    let mut dirty_since: Option<tokio::time::Instant> = None;
    let collect = || ClusterObjects {
        ingresses: snapshot(&ingresses),
        ingress_classes: snapshot(&classes),
        services: snapshot(&services),
        endpoint_slices: snapshot(&slices),
        secrets: [snapshot(&secrets), snapshot(&opaque_secrets)].concat(),
        namespaces: stored(gateway.as_ref().map(|g| &g.namespaces)),
        gateway_classes: stored(gateway.as_ref().map(|g| &g.classes)),
        gateways: stored(gateway.as_ref().map(|g| &g.gateways)),
        http_routes: stored(gateway.as_ref().map(|g| &g.http_routes)),
        grpc_routes: stored(gateway.as_ref().map(|g| &g.grpc_routes)),
        reference_grants: stored(gateway.as_ref().map(|g| &g.grants)),
        backend_lb_policies: stored(gateway.as_ref().map(|g| &g.lb_policies)),
        balancer_policies: stored(gateway.as_ref().map(|g| &g.balancer_policies)),
    };
    loop {
        let next = match dirty_since {
            Some(since) => {
                let quiet = tokio::time::sleep(debounce);
                let cap = tokio::time::sleep_until(since + debounce * 4);
                tokio::select! {
                    e = events.next() => e,
                    _ = quiet => { publish(collect()); dirty_since = None; continue; }
                    _ = cap => { publish(collect()); dirty_since = None; continue; }
                }
            }
            None => events.next().await,
        };
        let Some(progress) = next else { return };
        match progress {
            Progress::Failed(kind, error) => {
                let message = format!("watching {kind}s: {error}");
                if last_error.as_ref() != Some(&message) {
                    on_error(message.clone());
                    last_error = Some(message);
                }
                continue;
            }
            Progress::Synced(kind) => {
                last_error = None;
                if !synced.contains(&kind) {
                    synced.push(kind);
                    if synced.len() == watched_kinds {
                        // Ready: publish at once, no debounce.
                        publish(collect());
                        continue;
                    }
                }
            }
            Progress::Changed => last_error = None,
        }
        if synced.len() == watched_kinds && dirty_since.is_none() {
            dirty_since = Some(tokio::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use std::collections::BTreeMap;

    #[test]
    fn bookkeeping_is_dropped_and_annotations_weir_reads_are_kept() {
        let mut service = Service::default();
        service.metadata.name = Some("web".to_string());
        service.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".to_string()),
            ..ManagedFieldsEntry::default()
        }]);
        service.metadata.annotations = Some(BTreeMap::from([
            (
                LAST_APPLIED.to_string(),
                "{\"kind\":\"Service\"}".to_string(),
            ),
            (
                "weir.dev/lb-algorithm".to_string(),
                "least-request".to_string(),
            ),
        ]));
        drop_bookkeeping(&mut service);
        assert_eq!(service.metadata.managed_fields, None);
        let annotations = service.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["weir.dev/lb-algorithm"]
        );
        assert_eq!(service.metadata.name.as_deref(), Some("web"));
    }
}
