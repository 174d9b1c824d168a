//! A fake Kubernetes API server on 127.0.0.1 that speaks the real wire protocol for the
//! kinds weir reads, so the real kube client can be tested against it over HTTP.
//!
//! Supported: `GET` list (`{Kind}List` with `metadata.resourceVersion`; `limit` is ignored
//! and everything is returned in one page) and streaming watch (`watch=true`: NDJSON
//! `ADDED`/`MODIFIED`/`DELETED` events after the requested `resourceVersion`, `BOOKMARK`s
//! when `allowWatchBookmarks=true`, the stream ends after `timeoutSeconds`, and an `ERROR`
//! event with a 410 `Status` when the version was compacted away), cluster-wide and per
//! namespace, `fieldSelector` (`type=`, `metadata.name=`, `metadata.namespace=`) and equality
//! `labelSelector`s (other selector forms match nothing; an object changed so that it leaves a
//! watch's selector is not sent as `DELETED`, as the real server does: tests delete instead). Objects get increasing
//! `metadata.resourceVersion`s. Tests create, update and delete objects, compact history,
//! drop every open watch, answer the next requests with 500, stall (accept, never answer),
//! forbid a resource (403, as RBAC would), or take the whole server down (every request
//! then gets 503).
//!
//! Writes: `GET` of one object, `POST` to create (409 `AlreadyExists`), `PUT` to replace (409
//! `Conflict` when `metadata.resourceVersion` is stale — what leader election relies on), and
//! `PUT .../status` (replaces only `status`; counted per object so tests can check that a
//! controller writes only when something changed). `metadata.generation` starts at 1 and
//! counts changes of `spec`; a write without `status` keeps the stored one, as for kinds with
//! a status subresource. Leases and Events are served like the other kinds.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// A kind the fake serves: (API path prefix, resource, Kind, apiVersion, namespaced).
type KindEntry = (&'static str, &'static str, &'static str, &'static str, bool);

const KINDS: &[KindEntry] = &[
    ("/api/v1", "services", "Service", "v1", true),
    ("/api/v1", "secrets", "Secret", "v1", true),
    ("/api/v1", "pods", "Pod", "v1", true),
    ("/api/v1", "namespaces", "Namespace", "v1", false),
    (
        "/apis/discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
        true,
    ),
    (
        "/apis/networking.k8s.io/v1",
        "ingresses",
        "Ingress",
        "networking.k8s.io/v1",
        true,
    ),
    (
        "/apis/networking.k8s.io/v1",
        "ingressclasses",
        "IngressClass",
        "networking.k8s.io/v1",
        false,
    ),
    (
        "/apis/coordination.k8s.io/v1",
        "leases",
        "Lease",
        "coordination.k8s.io/v1",
        true,
    ),
    (
        "/apis/events.k8s.io/v1",
        "events",
        "Event",
        "events.k8s.io/v1",
        true,
    ),
    // Gateway API, as its CRDs serve it.
    (
        "/apis/gateway.networking.k8s.io/v1",
        "gatewayclasses",
        "GatewayClass",
        "gateway.networking.k8s.io/v1",
        false,
    ),
    (
        "/apis/gateway.networking.k8s.io/v1",
        "gateways",
        "Gateway",
        "gateway.networking.k8s.io/v1",
        true,
    ),
    (
        "/apis/gateway.networking.k8s.io/v1",
        "httproutes",
        "HTTPRoute",
        "gateway.networking.k8s.io/v1",
        true,
    ),
    (
        "/apis/gateway.networking.k8s.io/v1",
        "grpcroutes",
        "GRPCRoute",
        "gateway.networking.k8s.io/v1",
        true,
    ),
    (
        "/apis/gateway.networking.k8s.io/v1alpha2",
        "backendlbpolicies",
        "BackendLBPolicy",
        "gateway.networking.k8s.io/v1alpha2",
        true,
    ),
    // weir's own CRD, as its chart installs it.
    (
        "/apis/weir.dev/v1alpha1",
        "balancerpolicies",
        "BalancerPolicy",
        "weir.dev/v1alpha1",
        true,
    ),
    (
        "/apis/gateway.networking.k8s.io/v1beta1",
        "referencegrants",
        "ReferenceGrant",
        "gateway.networking.k8s.io/v1beta1",
        true,
    ),
];

type Key = (&'static str, String, String); // (resource, namespace, name)

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    resource: &'static str,
    namespace: String,
    kind: &'static str, // ADDED | MODIFIED | DELETED
    object: Value,
}

#[derive(Debug, Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    /// Versions at or below this were compacted: watching from them gets 410.
    compacted: u64,
    down: bool,
    /// Serve no Gateway API (a cluster without its CRDs).
    no_gateway_api: bool,
    /// Resources every request for is answered 403 (RBAC that does not grant them).
    forbidden: std::collections::BTreeSet<String>,
    /// `PUT .../status` calls per object.
    status_writes: BTreeMap<Key, u64>,
    /// Answer this many more requests with 500.
    fail_next: u64,
    /// Hold new requests unanswered until unstalled.
    stalled: bool,
}

#[derive(Clone)]
enum Signal {
    Change(Change),
    DropWatches,
}

struct Shared {
    store: Mutex<Store>,
    signals: broadcast::Sender<Signal>,
    /// Cap on a watch's lifetime whatever the client asks (forces re-watches in tests).
    max_watch: Duration,
}

/// A running fake API server; stops when dropped.
pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakeApiServer({})", self.addr)
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    shared.store.lock().unwrap_or_else(|p| p.into_inner())
}

fn kind_of(
    object: &Value,
) -> Option<&'static (&'static str, &'static str, &'static str, &'static str, bool)> {
    let kind = object.get("kind")?.as_str()?;
    KINDS.iter().find(|k| k.2 == kind)
}

impl FakeApiServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> std::io::Result<FakeApiServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (signals, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            signals,
            max_watch: Duration::from_secs(30),
        });
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let server_shared = Arc::clone(&shared);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = Arc::clone(&server_shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(handle(req, shared).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FakeApiServer {
            addr,
            shared,
            _runtime: runtime,
        })
    }

    /// A kubeconfig that points the real kube client at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{}\"}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: default}}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{token: fake-token}}\n",
            self.addr
        )
    }

    /// Creates or replaces every object of a (multi-document) YAML text.
    pub fn apply_yaml(&self, yaml: &str) -> Result<(), String> {
        use serde::Deserialize;
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
            if !value.is_null() {
                self.apply(value)?;
            }
        }
        Ok(())
    }

    /// Creates or replaces one object.
    pub fn apply(&self, mut object: Value) -> Result<(), String> {
        let (_, resource, _, _, namespaced) = *kind_of(&object).ok_or("unknown kind")?;
        if resource == "secrets" {
            store_string_data(&mut object);
        }
        let meta = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or("metadata missing")?;
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .ok_or("name missing")?
            .to_string();
        let namespace = if namespaced {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            meta.insert("namespace".into(), json!(ns));
            ns
        } else {
            String::new()
        };
        let mut store = lock(&self.shared);
        store.rv += 1;
        let rv = store.rv;
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.entry("uid")
            .or_insert(json!(format!("uid-{resource}-{namespace}-{name}")));
        let key = (resource, namespace.clone(), name);
        let kind = if store.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        as_an_update(store.objects.get(&key), &mut object);
        store.objects.insert(key, object.clone());
        self.record(
            &mut store,
            Change {
                rv,
                resource,
                namespace,
                kind,
                object,
            },
        );
        Ok(())
    }

    /// Deletes an object by kind, namespace (empty for cluster-scoped) and name.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let Some(&(_, resource, ..)) = KINDS.iter().find(|k| k.2 == kind) else {
            return false;
        };
        let mut store = lock(&self.shared);
        let Some(mut object) =
            store
                .objects
                .remove(&(resource, namespace.to_string(), name.to_string()))
        else {
            return false;
        };
        store.rv += 1;
        let rv = store.rv;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        self.record(
            &mut store,
            Change {
                rv,
                resource,
                namespace: namespace.to_string(),
                kind: "DELETED",
                object,
            },
        );
        true
    }

    fn record(&self, store: &mut Store, change: Change) {
        store.history.push(change.clone());
        let _ = self.shared.signals.send(Signal::Change(change));
    }

    /// Forgets history: watches from older versions get 410 Gone and must relist.
    pub fn compact(&self) {
        let mut store = lock(&self.shared);
        store.compacted = store.rv;
        store.history.clear();
    }

    /// Ends every open watch stream (clients must re-watch).
    pub fn drop_watches(&self) {
        let _ = self.shared.signals.send(Signal::DropWatches);
    }

    /// Takes the server down (503 for everything, watches dropped) or back up.
    /// Serves Gateway API or not (as a cluster with or without its CRDs).
    /// Answers every request for `resource` (`grpcroutes`, ...) 403 Forbidden, as the API
    /// server does for a service account whose role does not grant it.
    pub fn forbid(&self, resource: &str) {
        lock(&self.shared).forbidden.insert(resource.to_string());
    }

    pub fn set_gateway_api(&self, served: bool) {
        lock(&self.shared).no_gateway_api = !served;
    }

    pub fn set_down(&self, down: bool) {
        lock(&self.shared).down = down;
        if down {
            self.drop_watches();
        }
    }

    /// An object as stored, by kind, namespace (empty for cluster-scoped) and name.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let &(_, resource, ..) = KINDS.iter().find(|k| k.2 == kind)?;
        lock(&self.shared)
            .objects
            .get(&(resource, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of a kind.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let Some(&(_, resource, ..)) = KINDS.iter().find(|k| k.2 == kind) else {
            return Vec::new();
        };
        lock(&self.shared)
            .objects
            .iter()
            .filter(|((r, ..), _)| *r == resource)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// How many `PUT .../status` calls an object received.
    pub fn status_writes(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        let Some(&(_, resource, ..)) = KINDS.iter().find(|k| k.2 == kind) else {
            return 0;
        };
        lock(&self.shared)
            .status_writes
            .get(&(resource, namespace.to_string(), name.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Answers the next `n` requests with 500.
    pub fn fail_next(&self, n: u64) {
        lock(&self.shared).fail_next = n;
    }

    /// Stalls (accepts requests, answers none) or resumes. Open watches are dropped when
    /// stalling, so clients have to come back and wait.
    pub fn set_stalled(&self, stalled: bool) {
        lock(&self.shared).stalled = stalled;
        if stalled {
            self.drop_watches();
        }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared).rv
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn read_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|_| {
            full(
                StatusCode::BAD_REQUEST,
                status(400, "BadRequest", "unreadable body"),
            )
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        full(
            StatusCode::BAD_REQUEST,
            status(400, "BadRequest", &e.to_string()),
        )
    })
}

/// What the API server does to an object written over `previous` (none: created):
/// `metadata.generation` starts at 1 and counts changes of `spec`; a write without `status`
/// keeps the stored one (status has its own subresource).
fn as_an_update(previous: Option<&Value>, object: &mut Value) {
    let generation = previous
        .and_then(|p| p.pointer("/metadata/generation"))
        .and_then(Value::as_u64);
    let spec_changed = previous.is_none_or(|p| p.get("spec") != object.get("spec"));
    let generation = match generation {
        Some(g) if !spec_changed => g,
        Some(g) => g + 1,
        None => 1,
    };
    let status = previous.and_then(|p| p.get("status")).cloned();
    if let Some(obj) = object.as_object_mut() {
        if let (Some(status), false) = (status, obj.contains_key("status")) {
            obj.insert("status".into(), status);
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("generation".into(), json!(generation));
        }
    }
}

/// Sets a new resourceVersion on `object`, stores it and broadcasts the change.
fn commit(
    shared: &Shared,
    store: &mut Store,
    key: Key,
    mut object: Value,
    change: &'static str,
) -> Value {
    store.rv += 1;
    let rv = store.rv;
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if !key.1.is_empty() {
            meta.insert("namespace".into(), json!(key.1));
        }
    }
    store.objects.insert(key.clone(), object.clone());
    let c = Change {
        rv,
        resource: key.0,
        namespace: key.1,
        kind: change,
        object: object.clone(),
    };
    store.history.push(c.clone());
    let _ = shared.signals.send(Signal::Change(c));
    object
}

async fn create(
    req: Request<Incoming>,
    shared: &Shared,
    resource: &'static str,
    namespace: Option<String>,
    namespaced: bool,
) -> Response<Body> {
    let object = match read_json(req).await {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    let mut object = object;
    let generated = object
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .map(|prefix| format!("{prefix}{}", lock(shared).rv + 1));
    if let (Some(name), Some(meta)) = (
        generated,
        object.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.entry("name").or_insert(json!(name));
    }
    let Some(name) = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return full(
            StatusCode::UNPROCESSABLE_ENTITY,
            status(422, "Invalid", "metadata.name is required"),
        );
    };
    let ns = if namespaced {
        namespace.unwrap_or_else(|| "default".into())
    } else {
        String::new()
    };
    let key = (resource, ns, name);
    let mut store = lock(shared);
    if store.objects.contains_key(&key) {
        return full(
            StatusCode::CONFLICT,
            status(409, "AlreadyExists", "object already exists"),
        );
    }
    as_an_update(None, &mut object);
    let stored = commit(shared, &mut store, key, object, "ADDED");
    full(StatusCode::CREATED, stored)
}

async fn object_request(
    req: Request<Incoming>,
    shared: &Shared,
    key: Key,
    status_only: bool,
) -> Response<Body> {
    match *req.method() {
        http::Method::GET => match lock(shared).objects.get(&key) {
            Some(o) => full(StatusCode::OK, o.clone()),
            None => full(
                StatusCode::NOT_FOUND,
                status(404, "NotFound", "no such object"),
            ),
        },
        http::Method::PUT => {
            let body = match read_json(req).await {
                Ok(o) => o,
                Err(resp) => return resp,
            };
            let mut store = lock(shared);
            let Some(current) = store.objects.get(&key).cloned() else {
                return full(
                    StatusCode::NOT_FOUND,
                    status(404, "NotFound", "no such object"),
                );
            };
            let sent_rv = body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str);
            let stored_rv = current
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str);
            if sent_rv.is_some() && sent_rv != stored_rv {
                return full(
                    StatusCode::CONFLICT,
                    status(409, "Conflict", "the object has been modified; please apply your changes to the latest version"),
                );
            }
            let next = if status_only {
                *store.status_writes.entry(key.clone()).or_insert(0) += 1;
                let mut next = current;
                if let (Some(obj), Some(st)) = (next.as_object_mut(), body.get("status")) {
                    obj.insert("status".into(), st.clone());
                }
                next
            } else {
                let mut body = body;
                as_an_update(Some(&current), &mut body);
                body
            };
            let stored = commit(shared, &mut store, key, next, "MODIFIED");
            full(StatusCode::OK, stored)
        }
        _ => full(
            StatusCode::METHOD_NOT_ALLOWED,
            status(405, "MethodNotAllowed", "not supported by the fake"),
        ),
    }
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "message": message, "code": code})
}

/// API discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`), built
/// from [`KINDS`], so that generic clients such as kubectl find the resources.
fn discovery(path: &str) -> Option<Value> {
    let resources = |prefix: &str| -> Vec<Value> {
        KINDS
            .iter()
            .filter(|k| k.0 == prefix)
            .map(|&(_, resource, kind, _, namespaced)| {
                json!({"name": resource, "singularName": kind.to_ascii_lowercase(), "namespaced": namespaced,
                       "kind": kind, "verbs": ["get", "list", "watch", "create", "update"]})
            })
            .collect()
    };
    let groups: Vec<(&str, &str)> = {
        let mut g: Vec<(&str, &str)> = KINDS
            .iter()
            .filter_map(|k| k.0.strip_prefix("/apis/"))
            .filter_map(|gv| gv.split_once('/'))
            .collect();
        g.dedup();
        g
    };
    match path {
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"],
                              "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        "/apis" => {
            // One entry per group, its versions together (Gateway API: v1 and v1beta1).
            let mut by_group: Vec<(&str, Vec<&str>)> = Vec::new();
            for (g, v) in &groups {
                match by_group.iter_mut().find(|(name, _)| name == g) {
                    Some((_, versions)) => versions.push(v),
                    None => by_group.push((g, vec![v])),
                }
            }
            Some(
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": by_group.iter().map(|(g, versions)| {
                let listed: Vec<Value> = versions.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
                json!({"name": g, "versions": listed, "preferredVersion": listed[0].clone()})
            }).collect::<Vec<_>>()}),
            )
        }
        "/api/v1" => Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                                 "resources": resources("/api/v1")}),
        ),
        _ => {
            let gv = path.strip_prefix("/apis/")?;
            if gv.matches('/').count() != 1 || !groups.iter().any(|(g, v)| format!("{g}/{v}") == gv)
            {
                return None;
            }
            Some(
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                        "resources": resources(&format!("/apis/{gv}"))}),
            )
        }
    }
}

/// A parsed request path.
struct Target {
    kind: &'static KindEntry,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

/// `…/{resource}`, `…/namespaces/{ns}/{resource}`, then optionally `/{name}` and `/status`.
fn route(path: &str) -> Option<Target> {
    for kind in KINDS {
        let (prefix, resource, ..) = kind;
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let (namespace, rest) = match rest.strip_prefix("/namespaces/") {
            Some(ns_rest) => {
                let (ns, r) = ns_rest.split_once('/')?;
                (Some(ns.to_string()), format!("/{r}"))
            }
            None => (None, rest.to_string()),
        };
        let Some(rest) = rest.strip_prefix(&format!("/{resource}")) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            continue;
        }
        let mut parts = rest.split('/').filter(|p| !p.is_empty());
        let name = parts.next().map(str::to_string);
        let status = match parts.next() {
            None => false,
            Some("status") => true,
            Some(_) => return None,
        };
        return Some(Target {
            kind,
            namespace,
            name,
            status,
        });
    }
    None
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2F", "/")))
        .collect()
}

/// A Secret's `stringData` merged into `data` (base64) and dropped, as the API server stores
/// it: clients never read `stringData` back.
fn store_string_data(secret: &mut Value) {
    use base64::Engine as _;
    let Some(object) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = object.remove("stringData") else {
        return;
    };
    let data = object.entry("data").or_insert_with(|| json!({}));
    if let Some(data) = data.as_object_mut() {
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(key, json!(encoded));
        }
    }
}

/// Whether `object` passes the selectors: `fieldSelector` terms `type=`, `metadata.name=`
/// and `metadata.namespace=`, and `labelSelector` equality terms (`key=value`), all
/// comma-separated and all required.
fn selected(object: &Value, selectors: &Selectors) -> bool {
    let fields = selectors.fields.as_deref().unwrap_or("");
    let labels = selectors.labels.as_deref().unwrap_or("");
    let field_ok =
        fields
            .split(',')
            .filter(|t| !t.is_empty())
            .all(|term| match term.split_once('=') {
                Some(("type", t)) => object.get("type").and_then(Value::as_str) == Some(t),
                Some((path @ ("metadata.name" | "metadata.namespace"), want)) => {
                    let field = path.trim_start_matches("metadata.");
                    object["metadata"][field].as_str() == Some(want)
                }
                _ => false,
            });
    let label_ok =
        labels
            .split(',')
            .filter(|t| !t.is_empty())
            .all(|term| match term.split_once('=') {
                Some((key, want)) => object["metadata"]["labels"][key].as_str() == Some(want),
                None => false,
            });
    field_ok && label_ok
}

/// A list's or watch's `fieldSelector` and `labelSelector`.
#[derive(Clone, Default)]
struct Selectors {
    fields: Option<String>,
    labels: Option<String>,
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    while lock(&shared).stalled {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let mut store = lock(&shared);
        if store.fail_next > 0 {
            store.fail_next -= 1;
            return full(
                StatusCode::INTERNAL_SERVER_ERROR,
                status(500, "InternalError", "injected failure"),
            );
        }
    }
    if lock(&shared).down {
        return full(
            StatusCode::SERVICE_UNAVAILABLE,
            status(503, "ServiceUnavailable", "fake API server is down"),
        );
    }
    let no_gateway_api = lock(&shared).no_gateway_api;
    if no_gateway_api && req.uri().path().contains("/gateway.networking.k8s.io") {
        let message = format!(
            "the server could not find the requested resource {}",
            req.uri().path()
        );
        return full(StatusCode::NOT_FOUND, status(404, "NotFound", &message));
    }
    if let Some(document) = discovery(req.uri().path()) {
        return full(StatusCode::OK, document);
    }
    let Some(target) = route(req.uri().path()) else {
        let message = format!("unknown path {}", req.uri().path());
        return full(StatusCode::NOT_FOUND, status(404, "NotFound", &message));
    };
    let &(_, resource, kind, api_version, namespaced) = target.kind;
    if lock(&shared).forbidden.contains(resource) {
        let message = format!("{resource} is forbidden: the service account may not read it");
        return full(StatusCode::FORBIDDEN, status(403, "Forbidden", &message));
    }
    let namespace = target.namespace.clone();
    if let Some(name) = target.name.clone() {
        let ns = if namespaced {
            namespace.clone().unwrap_or_default()
        } else {
            String::new()
        };
        return object_request(req, &shared, (resource, ns, name), target.status).await;
    }
    if req.method() == http::Method::POST {
        return create(req, &shared, resource, namespace, namespaced).await;
    }
    if req.method() != http::Method::GET {
        return full(
            StatusCode::METHOD_NOT_ALLOWED,
            status(405, "MethodNotAllowed", "not supported by the fake"),
        );
    }
    let q = query(&req);
    let selectors = Selectors {
        fields: q.get("fieldSelector").cloned(),
        labels: q.get("labelSelector").cloned(),
    };
    let in_scope = |ns: &str, object: &Value| {
        namespace.as_deref().is_none_or(|want| want == ns) && selected(object, &selectors)
    };
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let store = lock(&shared);
        let items: Vec<Value> = store
            .objects
            .iter()
            .filter(|((r, ns, _), o)| *r == resource && in_scope(ns, o))
            .map(|(_, o)| o.clone())
            .collect();
        return full(
            StatusCode::OK,
            json!({"kind": format!("{kind}List"), "apiVersion": api_version,
                   "metadata": {"resourceVersion": store.rv.to_string()}, "items": items}),
        );
    }

    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(shared.max_watch, Duration::from_secs)
        .min(shared.max_watch);
    let (tx, rx) = mpsc::channel::<Value>(1024);
    let (backlog, mut live, current, expired) = {
        let store = lock(&shared);
        let expired = from != 0 && from < store.compacted;
        let backlog: Vec<Change> = store
            .history
            .iter()
            .filter(|c| c.rv > from && c.resource == resource && in_scope(&c.namespace, &c.object))
            .cloned()
            .collect();
        (backlog, shared.signals.subscribe(), store.rv, expired)
    };
    let bookmark = move |rv: u64| {
        json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
               "metadata": {"resourceVersion": rv.to_string()}}})
    };
    let scope_ns = namespace.clone();
    let field = selectors.clone();
    tokio::spawn(async move {
        if expired {
            let _ = tx
                .send(json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")}))
                .await;
            return;
        }
        let mut last = from;
        for c in backlog {
            last = c.rv;
            if tx
                .send(json!({"type": c.kind, "object": c.object}))
                .await
                .is_err()
            {
                return;
            }
        }
        if bookmarks && tx.send(bookmark(current.max(last))).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tick.tick() => {
                    if bookmarks && tx.send(bookmark(last)).await.is_err() { return; }
                }
                signal = live.recv() => match signal {
                    Ok(Signal::Change(c)) => {
                        let ns_ok = scope_ns.as_deref().is_none_or(|want| want == c.namespace);
                        if c.rv > last && c.resource == resource && ns_ok && selected(&c.object, &field) {
                            last = c.rv;
                            if tx.send(json!({"type": c.kind, "object": c.object})).await.is_err() { return; }
                        } else if c.rv > last {
                            last = c.rv;
                        }
                    }
                    Ok(Signal::DropWatches) | Err(_) => return,
                },
            }
        }
    });
    let stream = ReceiverStream::new(rx)
        .map(|event| Ok::<_, Infallible>(Frame::data(Bytes::from(event.to_string() + "\n"))));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
