//! A fake Kubernetes API server on 127.0.0.1 that speaks the real wire protocol for the
//! kinds weir reads, so the real kube client can be tested against it over HTTP.
//!
//! Supported: `GET` list (`{Kind}List` with `metadata.resourceVersion`; `limit` is ignored
//! and everything is returned in one page) and streaming watch (`watch=true`: NDJSON
//! `ADDED`/`MODIFIED`/`DELETED` events after the requested `resourceVersion`, `BOOKMARK`s
//! when `allowWatchBookmarks=true`, the stream ends after `timeoutSeconds`, and an `ERROR`
//! event with a 410 `Status` when the version was compacted away), cluster-wide and per
//! namespace, `fieldSelector=type=...` for Secrets. Objects get increasing
//! `metadata.resourceVersion`s. Tests create, update and delete objects, compact history,
//! drop every open watch, or take the whole server down (every request then gets 503).
//!
//! Not here yet (the Kubernetes issue adds them): `/status` writes, Leases, Events.

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
    pub fn set_down(&self, down: bool) {
        lock(&self.shared).down = down;
        if down {
            self.drop_watches();
        }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared).rv
    }
}

type Body = BoxBody<Bytes, Infallible>;

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

/// (kind entry, namespace filter) for a request path.
fn route(path: &str) -> Option<(&'static KindEntry, Option<String>)> {
    for kind in KINDS {
        let (prefix, resource, ..) = kind;
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        if rest == format!("/{resource}") {
            return Some((kind, None));
        }
        if let Some(ns_rest) = rest.strip_prefix("/namespaces/") {
            if let Some((ns, r)) = ns_rest.split_once('/') {
                if r == *resource {
                    return Some((kind, Some(ns.to_string())));
                }
            }
        }
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

fn selected(object: &Value, field_selector: Option<&String>) -> bool {
    match field_selector.and_then(|f| f.strip_prefix("type=")) {
        Some(t) => object.get("type").and_then(Value::as_str) == Some(t),
        None => true,
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    if lock(&shared).down {
        return full(
            StatusCode::SERVICE_UNAVAILABLE,
            status(503, "ServiceUnavailable", "fake API server is down"),
        );
    }
    if req.method() != http::Method::GET {
        return full(
            StatusCode::METHOD_NOT_ALLOWED,
            status(405, "MethodNotAllowed", "not supported by the fake yet"),
        );
    }
    let Some((&(_, resource, kind, api_version, _), namespace)) = route(req.uri().path()) else {
        return full(
            StatusCode::NOT_FOUND,
            status(404, "NotFound", "unknown path"),
        );
    };
    let q = query(&req);
    let field_selector = q.get("fieldSelector");
    let in_scope = |ns: &str, object: &Value| {
        namespace.as_deref().is_none_or(|want| want == ns) && selected(object, field_selector)
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
    let field = field_selector.cloned();
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
                        if c.rv > last && c.resource == resource && ns_ok && selected(&c.object, field.as_ref()) {
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
