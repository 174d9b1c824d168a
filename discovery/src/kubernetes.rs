//! The Kubernetes source: watches Ingresses, IngressClasses, Services, EndpointSlices, TLS
//! Secrets, Opaque Secrets (basic auth's password files) and, when the cluster serves Gateway
//! API, Namespaces and the Gateway API kinds and policies it serves, with kube-rs reflectors,
//! and publishes [`ClusterObjects`] — first once every kind has finished its initial sync,
//! then after each debounced burst of changes. The objects go through the same
//! [`crate::translate()`] as manifests.
//!
//! Gateway API objects are watched untyped and decoded one by one when published: their
//! CRDs may validate less than weir reads (weir's chart can install minimal ones), and one
//! object weir cannot decode is rejected alone, not the whole kind. A Gateway API kind that
//! cannot be listed at all (RBAC from an older chart, say) does not hold Ingresses back: after
//! [`OPTIONAL_GRACE`] weir publishes without it, and adds it once it can be read.
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
use crate::snapshot::{ObjectRef, Rejection};
use futures::stream::{select_all, BoxStream};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// What happened on one of the watched kinds.
pub enum Progress {
    Changed,
    Synced(&'static str),
    Failed(&'static str, String),
}

/// A reflector on one kind (`name` in progress and errors) and its events as [`Progress`],
/// with kube-rs's backoff; `trim` drops what is not kept of each object. weir-client's
/// endpoint source watches with it too.
pub fn watch_kind<K>(
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
pub fn drop_bookkeeping<K: Resource>(object: &mut K) {
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

/// How long weir waits for a Gateway API kind that cannot be listed before it publishes
/// without it (Ingresses are not held back by it).
pub const OPTIONAL_GRACE: Duration = Duration::from_secs(10);

/// A kind watched untyped: its store, and how to decode its objects one by one.
struct Untyped<K> {
    store: Store<DynamicObject>,
    kind: &'static str,
    _decoded: std::marker::PhantomData<K>,
}

impl<K: DeserializeOwned> Untyped<K> {
    /// The objects that decode as `K`; the others are rejected, each alone.
    fn decode(&self, rejected: &mut Vec<Rejection>) -> Vec<Arc<K>> {
        let mut out = Vec::new();
        for object in self.store.state() {
            let decoded = serde_json::to_value(&*object).and_then(serde_json::from_value::<K>);
            match decoded {
                Ok(typed) => out.push(Arc::new(typed)),
                Err(e) => rejected.push(Rejection {
                    object: ObjectRef {
                        kind: self.kind,
                        namespace: object.metadata.namespace.clone().unwrap_or_default(),
                        name: object.metadata.name.clone().unwrap_or_default(),
                    },
                    reason: format!("not a {} weir can read: {e}", self.kind),
                }),
            }
        }
        out
    }
}

/// Watches kind `K` untyped when `served` (cluster-wide for cluster-scoped kinds, else in
/// `ns` or everywhere), adding its stream to `streams`.
fn watch_untyped<K>(
    served: bool,
    client: &Client,
    ns: Option<&str>,
    kind: &'static str,
    streams: &mut Vec<BoxStream<'static, Progress>>,
) -> Option<Untyped<K>>
where
    K: Resource<DynamicType = ()>,
{
    if !served {
        return None;
    }
    let resource = ApiResource::erase::<K>(&());
    let cluster_scoped = K::url_path(&(), None) == K::url_path(&(), Some("x"));
    let api: Api<DynamicObject> = match (ns, cluster_scoped) {
        (Some(ns), false) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    let writer = reflector::store::Writer::<DynamicObject>::new(resource);
    let store = writer.as_reader();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(drop_bookkeeping),
    )
    .default_backoff()
    .map(move |event| match event {
        Ok(watcher::Event::InitDone) => Progress::Synced(kind),
        Ok(_) => Progress::Changed,
        Err(e) => Progress::Failed(kind, e.to_string()),
    })
    .boxed();
    streams.push(stream);
    Some(Untyped {
        store,
        kind,
        _decoded: std::marker::PhantomData,
    })
}

/// The Gateway API kinds (and weir's policy) the cluster serves, and Namespaces.
struct GatewayStores {
    namespaces: Option<Store<Namespace>>,
    classes: Option<Untyped<GatewayClass>>,
    gateways: Option<Untyped<Gateway>>,
    http_routes: Option<Untyped<HttpRoute>>,
    grpc_routes: Option<Untyped<GrpcRoute>>,
    grants: Option<Untyped<ReferenceGrant>>,
    lb_policies: Option<Untyped<BackendLbPolicy>>,
    balancer_policies: Option<Untyped<BalancerPolicy>>,
}

/// Decoded objects of an untyped kind; none when it is not watched.
fn decoded<K: DeserializeOwned>(
    kind: Option<&Option<Untyped<K>>>,
    rejected: &mut Vec<Rejection>,
) -> Vec<Arc<K>> {
    kind.and_then(Option::as_ref)
        .map_or_else(Vec::new, |k| k.decode(rejected))
}

fn snapshot<K: Clone + Resource<DynamicType = ()>>(store: &Store<K>) -> Vec<Arc<K>> {
    store.state()
}

/// Watches until the watch streams end (they do not, short of the runtime stopping).
/// `publish` receives every object after the initial sync and after each burst of changes
/// has been quiet for `debounce` (at most `4 x debounce` of continuous churn), with the
/// objects that could not be decoded.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    debounce: Duration,
    mut publish: impl FnMut(ClusterObjects, Vec<Rejection>),
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
    // Ingresses and what they need: the kinds the first publish always waits for.
    let core_kinds = streams.len();
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
    let has = |list: &Vec<String>, resource: &str| list.iter().any(|r| r == resource);
    let gateway = match has(v1, "httproutes") {
        true => Some(GatewayStores {
            // Listeners may allow routes by their namespace's labels.
            namespaces: {
                let (store, stream) = watch_kind(
                    Api::<Namespace>::all(client.clone()),
                    watcher::Config::default(),
                    "Namespace",
                    drop_bookkeeping,
                );
                streams.push(stream);
                Some(store)
            },
            classes: watch_untyped(true, &client, ns, "GatewayClass", &mut streams),
            gateways: watch_untyped(true, &client, ns, "Gateway", &mut streams),
            http_routes: watch_untyped(true, &client, ns, "HTTPRoute", &mut streams),
            grpc_routes: watch_untyped(
                has(v1, "grpcroutes"),
                &client,
                ns,
                "GRPCRoute",
                &mut streams,
            ),
            grants: watch_untyped(
                has(v1beta1, "referencegrants"),
                &client,
                ns,
                "ReferenceGrant",
                &mut streams,
            ),
            lb_policies: watch_untyped(
                has(v1alpha2, "backendlbpolicies"),
                &client,
                ns,
                "BackendLBPolicy",
                &mut streams,
            ),
            balancer_policies: watch_untyped(
                has(weir, "balancerpolicies"),
                &client,
                ns,
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
    // The kinds synced, in the order they were (the core ones are the first `core_kinds`
    // streams, but they may sync in any order: counted by name).
    let mut synced: Vec<&'static str> = Vec::new();
    let core_names = [
        "Ingress",
        "IngressClass",
        "Service",
        "EndpointSlice",
        "TLS Secret",
        "Opaque Secret",
    ];
    debug_assert_eq!(core_names.len(), core_kinds);
    let mut published = false;
    // When a Gateway API kind first failed to list before the first publish.
    let mut optional_failing: Option<tokio::time::Instant> = None;
    let mut last_error: Option<String> = None;
    let mut dirty_since: Option<tokio::time::Instant> = None;
    let collect = || {
        let mut rejected = Vec::new();
        let g = gateway.as_ref();
        let objects = ClusterObjects {
            ingresses: snapshot(&ingresses),
            ingress_classes: snapshot(&classes),
            services: snapshot(&services),
            endpoint_slices: snapshot(&slices),
            secrets: [snapshot(&secrets), snapshot(&opaque_secrets)].concat(),
            namespaces: g
                .and_then(|g| g.namespaces.as_ref())
                .map_or_else(Vec::new, snapshot),
            gateway_classes: decoded(g.map(|g| &g.classes), &mut rejected),
            gateways: decoded(g.map(|g| &g.gateways), &mut rejected),
            http_routes: decoded(g.map(|g| &g.http_routes), &mut rejected),
            grpc_routes: decoded(g.map(|g| &g.grpc_routes), &mut rejected),
            reference_grants: decoded(g.map(|g| &g.grants), &mut rejected),
            backend_lb_policies: decoded(g.map(|g| &g.lb_policies), &mut rejected),
            balancer_policies: decoded(g.map(|g| &g.balancer_policies), &mut rejected),
        };
        (objects, rejected)
    };
    loop {
        // Before the first publish, a Gateway API kind that keeps failing is given up on
        // once the core kinds are in (Ingresses are not held back by it).
        let core_synced = core_names.iter().all(|k| synced.contains(k));
        let give_up = match (published, core_synced, optional_failing) {
            (false, true, Some(since)) => Some(since + OPTIONAL_GRACE),
            _ => None,
        };
        let next = match (dirty_since, give_up) {
            (Some(since), _) => {
                let quiet = tokio::time::sleep(debounce);
                let cap = tokio::time::sleep_until(since + debounce * 4);
                tokio::select! {
                    e = events.next() => e,
                    _ = quiet => { let (o, r) = collect(); publish(o, r); dirty_since = None; continue; }
                    _ = cap => { let (o, r) = collect(); publish(o, r); dirty_since = None; continue; }
                }
            }
            (None, Some(at)) => {
                tokio::select! {
                    e = events.next() => e,
                    _ = tokio::time::sleep_until(at) => {
                        let missing: Vec<&str> = ["Namespace", "GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant", "BackendLBPolicy", "BalancerPolicy"]
                            .into_iter()
                            .filter(|k| !synced.contains(k))
                            .collect();
                        on_error(format!(
                            "serving without {} until they can be read (Ingresses are served)",
                            missing.join(", ")
                        ));
                        let (o, r) = collect();
                        publish(o, r);
                        published = true;
                        continue;
                    }
                }
            }
            (None, None) => events.next().await,
        };
        let Some(progress) = next else { return };
        match progress {
            Progress::Failed(kind, error) => {
                if !core_names.contains(&kind) && !published {
                    optional_failing.get_or_insert_with(tokio::time::Instant::now);
                }
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
                    if synced.len() == watched_kinds && !published {
                        // Ready: publish at once, no debounce.
                        let (o, r) = collect();
                        publish(o, r);
                        published = true;
                        continue;
                    }
                }
            }
            Progress::Changed => last_error = None,
        }
        if published && dirty_since.is_none() {
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
