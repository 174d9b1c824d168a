//! [`RoutingSnapshot`]: everything the proxy needs to route, as plain immutable data: the
//! route model every source translates onto. Types only: the parsing that fills them lives
//! in the translation modules (`annotations`, `tls`, `validate`), which depend on this one.

use rustls::sign::CertifiedKey;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use weir_balancer::{EndpointSpec, PoolConfig};

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
    /// Gateway API's `*.example.com`, stored as the suffix `example.com`: matches one or more
    /// labels more (`a.example.com`, `a.b.example.com`); a longer suffix is more specific.
    Suffix(String),
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
    /// ingress-nginx's regex paths (`use-regex`, `rewrite-target`): a regular expression
    /// anchored at the start of the path, case-insensitive.
    RegexIgnoreCase(String),
}

impl PathMatch {
    /// The path as written in the Ingress; its length ranks matches (longest wins).
    pub fn as_written(&self) -> &str {
        match self {
            PathMatch::Exact(p)
            | PathMatch::Prefix(p)
            | PathMatch::Regex(p)
            | PathMatch::RegexIgnoreCase(p) => p,
        }
    }

    /// The `Path` of a cookie set for this rule when none is configured: the path as
    /// written (ingress-nginx's location), `/` for a regular expression or a path that
    /// cannot be a cookie attribute.
    pub fn cookie_path(&self) -> &str {
        match self {
            PathMatch::Exact(p) | PathMatch::Prefix(p) if is_cookie_attribute(p) => p,
            _ => "/",
        }
    }
}

/// Whether `value` may stand as a cookie attribute's value: visible ASCII but `;` (and `,`,
/// which some clients split on), so it cannot end the attribute and start another.
pub fn is_cookie_attribute(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
}

/// A Service port as an Ingress backend names it, in the Ingress's namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BackendKey {
    pub namespace: String,
    pub service: String,
    /// The port as written: a number or a name.
    pub port: String,
    /// Reach the Service at its cluster IP and port instead of its endpoints
    /// (ingress-nginx's `service-upstream`): one upstream, balanced by kube-proxy or a mesh.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cluster_ip: bool,
}

impl BackendKey {
    /// No Service: what a route with nowhere to forward to names (a rule that only
    /// redirects, or answers), and a Gateway API `backendRef` that does not resolve, whose
    /// share of a split is answered 500 as the spec says.
    pub fn unresolved(namespace: &str) -> BackendKey {
        BackendKey {
            namespace: namespace.to_string(),
            service: String::new(),
            port: String::new(),
            cluster_ip: false,
        }
    }

    pub fn is_unresolved(&self) -> bool {
        self.service.is_empty()
    }
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)?;
        if self.cluster_ip {
            f.write_str(" (cluster IP)")?;
        }
        Ok(())
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

/// What a route does with a request besides forwarding it, in order; shaped like Gateway
/// API's HTTPRoute filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouteFilter {
    /// Answer with a redirect instead of forwarding.
    RequestRedirect(Redirect),
    /// Change where the upstream request goes: its `Host`, its path.
    UrlRewrite(UrlRewrite),
    /// Set fields of the upstream request, replacing any the client sent.
    RequestHeaderModifier(HeaderModifier),
    /// Cross-origin requests: preflights answered by weir, the response's CORS fields set.
    Cors(Cors),
    /// Send a copy of each request elsewhere too, its answer discarded.
    RequestMirror(RequestMirror),
    /// Change the fields of the response the client gets.
    ResponseHeaderModifier(HeaderModifier),
    /// Answer every request with this status and no backend (Gateway API's answer to a rule
    /// whose backends cannot be resolved: 500).
    Respond { status: u16 },
}

/// A copy of each request sent to `url` (ingress-nginx's `mirror-target`): the client never
/// waits for it, and its answer, slowness or failure never reaches the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestMirror {
    /// `http(s)://host[:port][/path]`, which may end in `$request_uri` (the client's path and
    /// query), as ingress-nginx users write it.
    pub url: String,
    /// `mirror-host`: the copy's `Host` (absent: the URL's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `mirror-request-body` (on): the copy carries the request's body.
    pub body: bool,
    /// Gateway API's mirror: copies go to an endpoint of this Service (with the request's
    /// own `Host` and path) instead of `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKey>,
    /// The share of requests copied, in millionths (1 000 000: every request).
    pub share_ppm: u32,
}

/// Gateway API's CORS filter, as ingress-nginx's `enable-cors` annotations fill it. A request
/// whose `Origin` is allowed gets the `Access-Control-*` fields on its response (replacing
/// the upstream's); an `OPTIONS` request from it is answered 204 by weir (the preflight).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cors {
    /// `*`, or origins as `scheme://host[:port]`, lowercase, whose host may begin with `*.`
    /// (any one or more labels).
    pub allow_origins: Vec<String>,
    /// `Access-Control-Allow-Credentials: true` (never with the origin `*`, which browsers
    /// refuse together).
    pub allow_credentials: bool,
    /// `Access-Control-Allow-Methods`, `-Allow-Headers`, `-Expose-Headers` as written.
    pub allow_methods: String,
    pub allow_headers: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub expose_headers: String,
    /// `Access-Control-Max-Age`, seconds.
    pub max_age: u64,
}

/// Gateway API's URLRewrite, with ingress-nginx's path rewrite.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UrlRewrite {
    /// The upstream request's `Host` (ingress-nginx's `upstream-vhost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
}

/// How a path is rewritten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PathRewrite {
    /// ingress-nginx's `rewrite-target`: where `pattern` (a regular expression, matched at
    /// the start of the path, case-insensitive) matches the request's path, the whole path
    /// becomes `replacement`, `$1`..`$9` standing for the pattern's captures. The request's
    /// query is kept, after the replacement's own if it has one; a replacement ending in `?`
    /// drops it (nginx's `rewrite ... break`).
    RegexReplace {
        pattern: String,
        replacement: String,
    },
    /// Gateway API's `ReplaceFullPath`: the path becomes this one (the query is kept).
    FullPath { path: String },
    /// Gateway API's `ReplacePrefixMatch`: the route's matched path prefix is replaced by
    /// `replacement`, the rest of the path kept (`/foo/x` with `/foo` -> `/bar`: `/bar/x`).
    PrefixMatch { prefix: String, replacement: String },
}

/// Gateway API's Request- and ResponseHeaderModifier: `set`, `add`, `remove`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderModifier {
    /// (lowercase name, value) pairs replacing any field of the name.
    pub set: Vec<(String, String)>,
    /// (lowercase name, value) pairs added to what is there (a field of the name the
    /// client or upstream sent gets `,value` appended).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Lowercase names of fields taken off.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl RouteFilter {
    /// The redirect this filter answers with, if it is one.
    pub fn as_redirect(&self) -> Option<&Redirect> {
        match self {
            RouteFilter::RequestRedirect(redirect) => Some(redirect),
            _ => None,
        }
    }
}

/// A canary of a route (ingress-nginx's `canary` Ingress for the same host and path): which
/// requests go to its backend instead, decided in this order: the header, the cookie, the
/// weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Canary {
    pub backend: BackendKey,
    /// The canary Ingress.
    pub ingress: ObjectRef,
    pub rule: CanaryRule,
}

/// When a request goes to a canary (ingress-nginx's `canary-*` annotations).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CanaryRule {
    /// `canary-by-header` (lowercase name) and how its value decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<(String, CanaryHeader)>,
    /// `canary-by-cookie`: `always` sends to the canary, `never` not; other values, the weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// `canary-weight` requests of `canary-weight-total` (100) go to the canary, of those
    /// neither the header nor the cookie decided.
    pub weight: u32,
    pub weight_total: u32,
}

/// How the `canary-by-header` value decides; a value that does not decide leaves it to the
/// cookie, then the weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum CanaryHeader {
    /// `always`: the canary; `never`: not.
    AlwaysNever,
    /// `canary-by-header-value`: this exact value sends to the canary.
    Value(String),
    /// `canary-by-header-pattern`: a value this regular expression matches (anywhere) sends to
    /// the canary.
    Pattern(String),
}

/// A redirect answer: its status and where it points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redirect {
    pub status: u16,
    pub to: RedirectTo,
}

/// Where a redirect points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RedirectTo {
    /// Exactly this absolute URL, the request's path and query dropped (ingress-nginx's
    /// `permanent-redirect`, `temporal-redirect`).
    Url(String),
    /// This path (and query, if it has one) on the request's own scheme and `Host`
    /// (ingress-nginx's `app-root`).
    Path(String),
    /// The request's scheme, path and query on this host (ingress-nginx's
    /// `from-to-www-redirect`).
    Host(String),
    /// Gateway API's RequestRedirect: each part given replaces the request's own.
    Parts(RedirectParts),
}

/// The parts of a Gateway API redirect; absent ones are the request's. Without a port, the
/// port is the scheme's well-known one (left out of the URL) when `scheme` is given, else the
/// request's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RedirectParts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `FullPath` or `PrefixMatch` (the query is kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
}

/// One host+path rule of one Ingress (or an Ingress's `defaultBackend`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteSnapshot {
    pub host: HostMatch,
    pub path: PathMatch,
    /// What else a request must carry to take this route (Gateway API's header, query
    /// parameter and method matches); none from an Ingress.
    #[serde(skip_serializing_if = "RequestConditions::is_empty")]
    pub conditions: RequestConditions,
    /// Where requests go; with a [`RouteSnapshot::split`], its first member.
    pub backend: BackendKey,
    /// `weir.dev/backend-weights`: several Services share this host and path by weight
    /// (every weight > 0). Empty: everything goes to `backend`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<WeightedBackend>,
    /// Plain-HTTP requests get a 308 to https: the Ingress lists this rule's host under
    /// `spec.tls` and `ssl-redirect` is not "false", or `force-ssl-redirect` is "true".
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ssl_redirect: bool,
    /// What the route does with a request besides forwarding it, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RouteFilter>,
    /// ingress-nginx's canary: another Ingress's backend takes some of this route's requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Where requests go while the route's backend has no endpoint to take them
    /// (ingress-nginx's `default-backend` annotation: a Service of the Ingress's namespace, at
    /// its first port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<BackendKey>,
    /// ingress-nginx's `custom-http-errors`: upstream responses with these statuses are
    /// replaced by the error backend's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_pages: Option<ErrorPages>,
    /// The Ingress this rule came from.
    pub ingress: ObjectRef,
    /// How requests on this route are balanced (the Ingress's `weir.dev/*` annotations).
    pub policy: RoutePolicy,
}

/// Conditions on a request beyond its host and path, all of which must hold (Gateway API's
/// `HTTPRouteMatch` `headers`, `queryParams` and `method`). Among routes of one host and path,
/// those with a method come first, then those with more header matches, then more query
/// parameter matches; a route whose conditions fail leaves the request to the next most
/// specific path.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RequestConditions {
    /// Header fields (names lowercase) and what their first value must be.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Query parameters (names as written, case-sensitive) and what their first value must be.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatch>,
    /// The request's method (uppercase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl RequestConditions {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query.is_empty() && self.method.is_none()
    }
}

/// A named value a request must have: exactly, or matching a regular expression (the whole
/// value, Rust's `regex` dialect).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ValueMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum StringMatch {
    Exact(String),
    Regex(String),
}

/// An object that was left out of the snapshot, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub object: ObjectRef,
    pub reason: String,
}

/// An annotation of a served Ingress that weir does not implement: the Ingress is served
/// without it, and it is reported ([`crate::annotations::unsupported`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UnsupportedAnnotation {
    pub object: ObjectRef,
    pub annotation: String,
}

/// An ingress-nginx annotation of a served Ingress that also has the `weir.dev/*` annotation
/// for the same setting: weir's wins, and this one is reported
/// ([`crate::nginx::overridden`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct OverriddenAnnotation {
    pub object: ObjectRef,
    pub annotation: String,
    /// The `weir.dev/*` annotation that wins.
    pub by: String,
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
    /// Problems of served Ingresses' authentication: one that made it unusable (its routes
    /// answer 503), or an entry of a password file that cannot log in.
    pub auth_problems: Vec<Rejection>,
    /// Ingresses of our class that made it in.
    pub ingresses: Vec<ObjectRef>,
    /// Annotations of those Ingresses that weir does not implement.
    pub unsupported: Vec<UnsupportedAnnotation>,
    /// ingress-nginx annotations of those Ingresses that a `weir.dev/*` one overrides.
    pub overridden: Vec<OverriddenAnnotation>,
    /// Hosts served over TLS (oldest Ingress first; the first listing of a host wins).
    pub tls_hosts: Vec<TlsHost>,
    /// Usable certificates of the Secrets `tls_hosts` name, by `(namespace, name)`. A host
    /// whose Secret is missing or unusable (see `rejected`) gets the default certificate.
    pub certificates: BTreeMap<(String, String), CertificateSnapshot>,
}

impl RouteSnapshot {
    /// Every backend this route sends traffic to.
    pub fn backends(&self) -> impl Iterator<Item = &BackendKey> {
        let single = self.split.is_empty().then_some(&self.backend);
        single
            .into_iter()
            .chain(self.split.iter().map(|w| &w.backend))
            .chain(self.canary.iter().map(|c| &c.backend))
            .chain(self.fallback.iter())
            .chain(self.error_pages.iter().filter_map(|p| p.backend.as_ref()))
            .chain(self.filters.iter().filter_map(|f| match f {
                RouteFilter::RequestMirror(m) => m.backend.as_ref(),
                _ => None,
            }))
    }
}

/// What replaces an upstream response whose status is one of `statuses` (ingress-nginx's
/// `custom-http-errors`): the answer of `backend` to the same request, told about the
/// original response by `X-Code` and the fields beside it (docs/migrating-from-ingress-nginx.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorPages {
    pub statuses: Vec<u16>,
    /// The Ingress's `default-backend` Service, else the default backend; absent when there
    /// is neither (responses are then relayed as they are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKey>,
}

impl RoutingSnapshot {
    /// The JSON view of the snapshot that `/debug/routes` shows and the golden tests compare:
    /// routes, default backend, backends (by `namespace/service:port`), rejections and
    /// unsupported annotations.
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
            "unsupported_annotations": self.unsupported,
            "overridden_annotations": self.overridden,
            "auth_problems": self.auth_problems,
            "tls": { "hosts": self.tls_hosts, "certificates": certificates },
        })
    }
}

/// Where a consistent-hash key comes from (`weir.dev/hash-key`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(tag = "from", content = "name", rename_all = "kebab-case")]
pub enum HashKey {
    /// First `X-Forwarded-For` address, else the peer address (Skipper's default).
    #[default]
    ClientIp,
    Header(String),
    Cookie(String),
    Query(String),
    Path,
}

/// How weir talks to a route's upstreams (`weir.dev/backend-protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    /// HTTP/1.1 (default).
    #[default]
    Http,
    /// HTTP/2 over plaintext with prior knowledge (gRPC without TLS).
    H2c,
    /// HTTP/1.1 over TLS, the certificate verified unless `backend-tls-verify: "false"`.
    Https,
}

/// Balancing of one route: the pool configuration, the hash key, retries and timeouts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoutePolicy {
    pub pool: PoolConfig,
    pub hash_key: HashKey,
    /// Extra attempts for idempotent requests, each to another endpoint (`retries`, 1).
    pub retries: u32,
    /// `connect-timeout` (2 s) and `read-timeout` (60 s).
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// `websocket-idle-timeout` (1 h): how long an upgraded connection may carry nothing
    /// before weir closes it (instead of the read timeout).
    pub websocket_idle_timeout: Duration,
    pub backend_protocol: BackendProtocol,
    /// `max-concurrency`: requests this route may have in flight at once; beyond that weir
    /// answers 503 at once (absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Longest an upstream may take to accept the next bytes of a request (ingress-nginx's
    /// `proxy-send-timeout`; absent: no limit of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_timeout: Option<Duration>,
    /// Largest request body the route takes, in bytes; a larger one is answered 413
    /// (ingress-nginx's `proxy-body-size`; absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_body: Option<u64>,
    /// `backend-tls-verify` (true): verify an https upstream's certificate chain and name.
    #[serde(skip_serializing_if = "is_true")]
    pub backend_tls_verify: bool,
    /// `backend-tls-server-name`: the name sent as SNI and verified for https upstreams
    /// (absent: `<service>.<namespace>.svc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_tls_server_name: Option<String>,
    /// `backend-weights`: Service name -> weight, for rules of this Ingress that send one
    /// host and path to several Services (absent: no split).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_weights: Option<BTreeMap<String, u32>>,
    /// Requests per client address this replica takes (ingress-nginx's `limit-rps`,
    /// `limit-rpm`; absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Requests the whole fleet takes per key (ingress-nginx's `global-rate-limit`; absent:
    /// no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_rate_limit: Option<GlobalRateLimit>,
    /// Which client addresses may use the route (ingress-nginx's source ranges; absent:
    /// every address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_access: Option<SourceAccess>,
    /// Which failed attempts are sent again (ingress-nginx's `proxy-next-upstream`); by
    /// default connection errors and timeouts before any response byte.
    #[serde(skip_serializing_if = "RetryOn::is_default")]
    pub retry_on: RetryOn,
    /// Session affinity by cookie (ingress-nginx's `affinity: cookie`; absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<SessionAffinity>,
    /// `weir.dev/warm-up-mirror`: while an endpoint is in slow start, this share of the
    /// route's idempotent requests without a body is also copied to it (the copy's answer
    /// discarded), so its caches and JIT warm before its weight grows (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_up_mirror: Option<f64>,
    /// Active checks an ejected endpoint must pass before it returns
    /// (`weir.dev/health-check-*`; absent: it returns when its ejection ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Who may use the route (ingress-nginx's `auth-*` annotations; absent: anyone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Authentication>,
}

/// Who may use a route: ingress-nginx's basic and external authentication.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Authentication {
    /// Each request must pass these checks, basic first.
    Required {
        #[serde(skip_serializing_if = "Option::is_none")]
        basic: Option<BasicAuth>,
        #[serde(skip_serializing_if = "Option::is_none")]
        external: Option<Box<ExternalAuth>>,
    },
    /// The annotations ask for authentication weir cannot set up (the reason: a missing or
    /// broken Secret, a bad value): every request is answered 503, never let through.
    Unusable(String),
}

/// `auth-type: basic`: a request must carry the credentials of a user of the Secret's
/// password file, else 401 with `WWW-Authenticate: Basic realm="<realm>"`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BasicAuth {
    pub realm: String,
    pub secret: ObjectRef,
    /// The users and their hashes (shown as a count: hashes are never printed).
    #[serde(serialize_with = "user_count")]
    pub users: Arc<crate::htpasswd::Htpasswd>,
}

fn user_count<S: serde::Serializer>(
    users: &Arc<crate::htpasswd::Htpasswd>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_u64(users.len() as u64)
}

/// `auth-url`: each request is first asked of an authentication service (a subrequest with
/// its method, URI and fields, no body); a 2xx lets it on, 401 and 403 go back to the
/// client, anything else (or no answer in time) is a 500.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalAuth {
    /// `http(s)://host[:port]/path[?query]`.
    pub url: String,
    /// `auth-method`: the subrequest's method (absent: the request's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `auth-signin`: where a 401 from the service redirects the client (302), with the
    /// URL it asked for in the query parameter `signin_redirect_param`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signin: Option<String>,
    pub signin_redirect_param: String,
    /// `auth-response-headers`: fields of the service's 2xx answer copied onto the upstream
    /// request (replacing any the client sent of the same name), lower case.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<String>,
    /// `auth-request-redirect`: the subrequest's `X-Auth-Request-Redirect` (absent: the
    /// request's URI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<String>,
}

/// A rule's per-replica limits by client address (the address weir trusts): a client may
/// send `rps` requests a second and `rpm` a minute on average, with bursts of the rate times
/// `burst_multiplier` at once (nginx's `limit_req ... burst nodelay`), and have `connections`
/// requests in flight; beyond them, 429.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Requests one client may have in flight at once (`limit-connections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    pub burst_multiplier: u32,
    /// Clients never limited (`limit-allowlist`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<crate::cidr::Cidr>,
}

/// A limit shared by every weir of the fleet (ingress-nginx's `global-rate-limit`): at most
/// `limit` requests per `window` for each value of `key`, counted in Redis over a sliding
/// window; beyond it, 429.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GlobalRateLimit {
    pub limit: u64,
    pub window: Duration,
    /// What requests are counted by: text with `$remote_addr` (the client weir trusts),
    /// `$host`, `$uri` and `$http_<field>` (a request field; `-` for `_`).
    pub key: String,
    /// Clients never limited (`global-rate-limit-ignored-cidrs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<crate::cidr::Cidr>,
}

/// Which client addresses may use a route; any other gets 403. The address is the client's
/// as weir trusts it (`--trusted-proxies`: the rightmost `X-Forwarded-For` entry that is not
/// a trusted proxy, else the peer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceAccess {
    /// `allowlist-source-range` (or `whitelist-source-range`): when not empty, only these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<crate::cidr::Cidr>,
    /// `denylist-source-range`: never these, whatever `allow` says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<crate::cidr::Cidr>,
}

impl SourceAccess {
    /// Whether `client` may use the route.
    pub fn admits(&self, client: std::net::IpAddr) -> bool {
        !self.deny.iter().any(|net| net.contains(client))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(client)))
    }
}

/// Which failed attempts of a request are sent again, to another endpoint, while
/// `RoutePolicy::retries` and the route's retry budget allow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    /// A connection refused, reset or closed, or a response head that is not HTTP, before
    /// any response byte reached the client.
    pub errors: bool,
    /// A connect or read timeout before any response byte.
    pub timeouts: bool,
    /// Responses with these statuses: discarded and sent again while attempts are left (the
    /// last attempt's response is relayed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
    /// Requests whose method is not idempotent too (when their body is still at hand).
    pub non_idempotent: bool,
    /// A retry may begin only this long after the request began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<Duration>,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            errors: true,
            timeouts: true,
            statuses: Vec::new(),
            non_idempotent: false,
            within: None,
        }
    }
}

impl RetryOn {
    pub fn is_default(&self) -> bool {
        *self == RetryOn::default()
    }
}

/// Session affinity by cookie: the requests of a session go to one endpoint while it can
/// take them (docs/balancing.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionAffinity {
    pub mode: AffinityMode,
    pub cookie: AffinityCookie,
    /// After a failed attempt the session moves to the endpoint that took the retry (a new
    /// cookie); without it the retry still goes to another endpoint, but the session keeps
    /// its own.
    pub change_on_failure: bool,
}

/// How a session cookie names its endpoint (`affinity-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AffinityMode {
    /// A random key, mapped onto the endpoints by rendezvous hashing: scaling up moves
    /// some sessions to the new endpoints.
    Balanced,
    /// The endpoint itself: a session leaves it only when it can no longer serve.
    Persistent,
}

/// The session cookie weir sets, and its attributes (`session-cookie-*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AffinityCookie {
    pub name: String,
    /// `Path`; absent: the rule's path (`/` for a regular expression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `Max-Age`, in seconds; absent (with `expires`): a cookie for the browser session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// `Expires`: this many seconds after the response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    /// `Secure` on every response; otherwise only on those sent over TLS.
    pub secure: bool,
}

/// A cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            pool: PoolConfig::default(),
            hash_key: HashKey::default(),
            retries: 1,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(60),
            websocket_idle_timeout: Duration::from_secs(3600),
            backend_protocol: BackendProtocol::Http,
            backend_weights: None,
            max_concurrency: None,
            max_request_body: None,
            write_timeout: None,
            backend_tls_verify: true,
            backend_tls_server_name: None,
            retry_on: RetryOn::default(),
            source_access: None,
            rate_limit: None,
            global_rate_limit: None,
            affinity: None,
            warm_up_mirror: None,
            health_check: None,
            auth: None,
        }
    }
}

/// An HTTP check of an ejected endpoint: `GET path` must answer 2xx or 3xx within `timeout`,
/// `healthy_threshold` times in a row, checked every `interval` (jittered).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A host served over TLS and the Secret whose certificate it presents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsHost {
    /// An exact name or a wildcard (`*.example.com`: one more label).
    pub host: HostMatch,
    pub secret: ObjectRef,
    /// The Ingress that listed it (the oldest one wins a host).
    pub ingress: ObjectRef,
}

/// A certificate and key ready to serve. Compared by certificate chain.
#[derive(Clone, Debug)]
pub struct ServedCertificate(pub Arc<CertifiedKey>);

impl PartialEq for ServedCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.0.cert == other.0.cert
    }
}

/// A usable `kubernetes.io/tls` Secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CertificateSnapshot {
    pub secret: ObjectRef,
    /// Expiry of the leaf certificate (Unix seconds).
    pub not_after_unix: i64,
    /// The leaf's DNS subject alternative names (what clients will accept it for).
    pub dns_names: Vec<String>,
    #[serde(skip)]
    pub certified: ServedCertificate,
}
