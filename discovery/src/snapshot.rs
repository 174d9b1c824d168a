//! [`RoutingSnapshot`]: everything the proxy needs to route, as plain immutable data.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use weir_balancer::EndpointSpec;

/// `namespace/name` of a Kubernetes object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Which Host header values a route applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum HostMatch {
    /// Rule without `host`: every host.
    Any,
    /// `foo.example.com` (lowercase).
    Exact(String),
    /// `*.example.com`, stored as the suffix `example.com`: matches exactly one more label.
    Wildcard(String),
}

/// Which request paths a route applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum PathMatch {
    /// `pathType: Exact`: the whole path, case-sensitive.
    Exact(String),
    /// `pathType: Prefix`, and `ImplementationSpecific` without the regex annotation:
    /// element-wise prefix on `/`, trailing slash ignored.
    Prefix(String),
    /// `ImplementationSpecific` with `weir.dev/path-regex: "true"`: a regular expression
    /// anchored at the start of the path.
    Regex(String),
}

impl PathMatch {
    /// The path as written in the Ingress; its length ranks matches (longest wins).
    pub fn as_written(&self) -> &str {
        match self {
            PathMatch::Exact(p) | PathMatch::Prefix(p) | PathMatch::Regex(p) => p,
        }
    }
}

/// A Service port as an Ingress backend names it, in the Ingress's namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BackendKey {
    pub namespace: String,
    pub service: String,
    /// The port as written: a number or a name.
    pub port: String,
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// The endpoints behind one [`BackendKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendSnapshot {
    /// Deduplicated by address, sorted.
    pub endpoints: Vec<EndpointSpec>,
    /// Why the backend has no endpoints, when the reason is a configuration problem
    /// (missing Service, unknown port) rather than "no pods".
    pub problem: Option<String>,
}

/// One Service of a traffic split and its relative weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WeightedBackend {
    pub backend: BackendKey,
    pub weight: u32,
}

/// One host+path rule of one Ingress (or an Ingress's `defaultBackend`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteSnapshot {
    pub host: HostMatch,
    pub path: PathMatch,
    /// Where requests go; with a [`RouteSnapshot::split`], its first member.
    pub backend: BackendKey,
    /// `weir.dev/backend-weights`: several Services share this host and path by weight
    /// (every weight > 0). Empty: everything goes to `backend`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<WeightedBackend>,
    /// Plain-HTTP requests get a 308 to https: the Ingress lists this rule's host under
    /// `spec.tls` and `weir.dev/ssl-redirect` is not "false".
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ssl_redirect: bool,
    /// The Ingress this rule came from.
    pub ingress: ObjectRef,
    /// How requests on this route are balanced (the Ingress's `weir.dev/*` annotations).
    pub policy: crate::annotations::RoutePolicy,
}

/// An object that was left out of the snapshot, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub object: ObjectRef,
    pub reason: String,
}

/// Every route and backend, as of one consistent view of the objects.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RoutingSnapshot {
    /// Rules in precedence order of their Ingresses (oldest first, then namespace/name):
    /// when two Ingresses claim the same host and path, the earlier one wins.
    pub routes: Vec<RouteSnapshot>,
    /// Backend for requests no rule matches (the oldest Ingress `defaultBackend`).
    pub default_backend: Option<RouteSnapshot>,
    pub backends: BTreeMap<BackendKey, BackendSnapshot>,
    /// Objects skipped because they are invalid.
    pub rejected: Vec<Rejection>,
    /// Ingresses of our class that made it in.
    pub ingresses: Vec<ObjectRef>,
    /// Hosts served over TLS (oldest Ingress first; the first listing of a host wins).
    pub tls_hosts: Vec<crate::tls::TlsHost>,
    /// Usable certificates of the Secrets `tls_hosts` name, by `(namespace, name)`. A host
    /// whose Secret is missing or unusable (see `rejected`) gets the default certificate.
    pub certificates: BTreeMap<(String, String), crate::tls::CertificateSnapshot>,
}

impl RouteSnapshot {
    /// Every backend this route sends traffic to.
    pub fn backends(&self) -> impl Iterator<Item = &BackendKey> {
        let single = self.split.is_empty().then_some(&self.backend);
        single
            .into_iter()
            .chain(self.split.iter().map(|w| &w.backend))
    }
}

impl RoutingSnapshot {
    /// The JSON view of the snapshot that `/debug/routes` shows and the golden tests compare:
    /// routes, default backend, backends (by `namespace/service:port`) and rejections.
    pub fn to_json(&self) -> serde_json::Value {
        let backends: serde_json::Map<String, serde_json::Value> = self
            .backends
            .iter()
            .map(|(key, backend)| {
                (
                    key.to_string(),
                    serde_json::json!({ "endpoints": backend.endpoints, "problem": backend.problem }),
                )
            })
            .collect();
        let certificates: serde_json::Map<String, serde_json::Value> = self
            .certificates
            .iter()
            .map(|((ns, name), c)| {
                (
                    format!("{ns}/{name}"),
                    serde_json::json!({ "not_after_unix": c.not_after_unix, "dns_names": c.dns_names }),
                )
            })
            .collect();
        serde_json::json!({
            "routes": self.routes,
            "default_backend": self.default_backend,
            "backends": backends,
            "rejected": self.rejected,
            "tls": { "hosts": self.tls_hosts, "certificates": certificates },
        })
    }
}
