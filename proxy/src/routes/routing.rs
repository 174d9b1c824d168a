//! [`LiveRouting`]: the routing table the data path reads, and how a new
//! [`RoutingSnapshot`] becomes live.
//!
//! Applying a snapshot updates the balancer pools **in place** (an endpoint that survives
//! keeps its in-flight count and other state), compiles a new [`Router`], and publishes
//! both with one atomic swap. Requests in flight keep the table they started with.
//!
//! Must not: do I/O or decide what the snapshot contains.

use crate::http::request_view::RequestView;
use crate::http::rewrite::PathRewriter;
use crate::request::affinity::SessionCookie;
use crate::request::auth::RouteAuth;
use crate::request::concurrency::ConcurrencyLimit;
use crate::request::rate_limit::RateLimiter;
use crate::routes::conditions::Conditions;
use crate::routes::router::Router;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use weir_balancer::{EndpointRegistry, Nanos, Pool};
use weir_discovery::{
    Authentication, BackendKey, CanaryHeader, HashKey, PathRewrite, RateLimit, RouteFilter,
    RouteSnapshot, RoutingSnapshot, UrlRewrite,
};

/// A pool whose ejected endpoints return only after `check` passes.
#[derive(Clone, Debug)]
pub struct HealthChecked {
    pub pool: Arc<Pool>,
    pub check: weir_discovery::HealthCheck,
    pub service: String,
}

/// What a matched request is sent to, with its metric labels prepared once per reload.
#[derive(Debug)]
pub struct RouteTarget {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    /// The Service port as the rule names it (a number or a name).
    pub service_port: String,
    /// The matched rule's path as written (`http.route` of traces).
    pub route: String,
    pub pool: Arc<Pool>,
    /// Where the consistent-hash key comes from (used only by hashing pools).
    pub hash_key: HashKey,
    pub retries: u32,
    /// Which failed attempts are retried (`proxy-next-upstream`).
    pub retry_on: weir_discovery::RetryOn,
    pub connect_timeout: std::time::Duration,
    pub read_timeout: std::time::Duration,
    /// Replaces `read_timeout` once a connection is upgraded (WebSocket).
    pub websocket_idle_timeout: std::time::Duration,
    pub retry_budget: Arc<crate::request::retry::RetryBudget>,
    pub backend_protocol: weir_discovery::BackendProtocol,
    /// For `backend-protocol: https`: the server name sent and verified, and whether the
    /// certificate is verified at all.
    pub upstream_tls: Option<UpstreamTls>,
    /// Answer plain-HTTP requests with a 308 to https (the host has TLS and weir has an
    /// HTTPS listener).
    pub ssl_redirect: bool,
    /// Answer every request with this redirect instead of forwarding it (the route's
    /// `RequestRedirect` filter).
    pub redirect: Option<weir_discovery::Redirect>,
    /// The route's path rewrite (a `UrlRewrite` filter's path), compiled.
    pub rewrite: Option<PathRewriter>,
    /// Fields set on the upstream request, replacing any of the same name the client sent
    /// (a `UrlRewrite` filter's hostname as `host`, `RequestHeaderModifier`'s `set`).
    pub set_fields: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Fields added to the upstream request after any of the same name the client sent
    /// (`RequestHeaderModifier`'s `add`: `,value` appended to the client's).
    pub add_fields: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Fields weir sets on, adds to, or (an empty replacing value) removes from the
    /// response (`ResponseHeaderModifier`).
    pub response_fields: Vec<crate::http::fields::ResponseField>,
    /// Answer every request with this status, sending nothing upstream (a Gateway API rule
    /// whose backends do not resolve: 500).
    pub respond: Option<u16>,
    /// Longest the upstream may take to accept the next bytes of a request
    /// (`proxy-send-timeout`).
    pub write_timeout: Option<std::time::Duration>,
    /// Largest request body the route takes (`proxy-body-size`); larger: 413.
    pub max_request_body: Option<u64>,
    /// The route's CORS filter, compiled.
    pub cors: Option<crate::request::cors::CorsRules>,
    /// Which client addresses may use the route (ingress-nginx's source ranges).
    pub source_access: Option<weir_discovery::SourceAccess>,
    /// What replaces an upstream response with one of the statuses (`custom-http-errors`).
    pub error_pages: Option<ErrorPagesTarget>,
    /// The route's session cookie (`affinity: cookie`).
    pub session_cookie: Option<crate::request::affinity::SessionCookie>,
    /// The Ingress's limits by client (`limit-rps`, `limit-rpm`, `limit-connections`; shared by
    /// its rules and their targets).
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// The Ingress's fleet-wide limit (`global-rate-limit`).
    pub global_limit: Option<Arc<crate::request::global_limit::GlobalLimiter>>,
    /// The route's mirror (`mirror-target`).
    pub mirror: Option<Arc<crate::request::mirror::MirrorRules>>,
    /// `weir.dev/warm-up-mirror`: the share of idempotent requests copied to an endpoint in
    /// slow start.
    pub warm_up_mirror: Option<f64>,
    /// Who may use the route (`auth-*`; shared by the Ingress's rules).
    pub auth: Option<Arc<RouteAuth>>,
    /// `max-concurrency` of the rule (shared by the targets of a split).
    pub concurrency: Option<Arc<ConcurrencyLimit>>,
    /// This target's metric handles (filled by its first requests).
    pub series: crate::app::metrics::RouteSeries,
}

/// The error backend of a route with `custom-http-errors`, and the statuses it answers for.
#[derive(Debug)]
pub struct ErrorPagesTarget {
    pub statuses: Box<[u16]>,
    /// The error backend, reached with the route's timeouts and none of its filters.
    pub target: Arc<RouteTarget>,
}

impl RouteTarget {
    /// The upstreams speak plain HTTP/1.1 (no TLS, no h2c), the error backend's too.
    pub fn plain_http1(&self) -> bool {
        self.upstream_tls.is_none()
            && self.backend_protocol == weir_discovery::BackendProtocol::Http
            && self
                .error_pages
                .as_ref()
                .is_none_or(|pages| pages.target.plain_http1())
    }

    /// Some response statuses may be replaced (retried, or answered by the error backend):
    /// the engine looks at each status before relaying it.
    pub fn replaces_statuses(&self) -> bool {
        !self.retry_on.statuses.is_empty() || self.error_pages.is_some()
    }

    /// The labels of this target's series.
    pub fn labels(&self) -> crate::app::metrics::RouteLabels<'_> {
        crate::app::metrics::RouteLabels {
            namespace: &self.namespace,
            ingress: &self.ingress,
            service: &self.service,
            algorithm: self.pool.algorithm().name(),
        }
    }
}

/// A rule's limits, shared by its targets: `max-concurrency`, the rate limit.
type RuleLimits = (
    Option<Arc<ConcurrencyLimit>>,
    Option<Arc<RateLimiter>>,
    Option<Arc<RouteAuth>>,
);

/// TLS to `backend` of `route`, when its policy says https.
fn upstream_tls(route: &RouteSnapshot, backend: &BackendKey) -> Option<UpstreamTls> {
    (route.policy.backend_protocol == weir_discovery::BackendProtocol::Https).then(|| UpstreamTls {
        server_name: route
            .policy
            .backend_tls_server_name
            .clone()
            .unwrap_or_else(|| format!("{}.{}.svc", backend.service, backend.namespace)),
        verify: route.policy.backend_tls_verify,
    })
}

impl RouteTarget {
    /// The error backend of `route` (`custom-http-errors`): its timeouts and retries, none
    /// of its filters, redirects, limits or session.
    fn error_backend(route: &RouteSnapshot, backend: &BackendKey, pool: Arc<Pool>) -> Self {
        RouteTarget {
            namespace: route.ingress.namespace.clone(),
            ingress: route.ingress.name.clone(),
            service: backend.service.clone(),
            service_port: backend.port.clone(),
            route: route.path.as_written().to_string(),
            pool,
            hash_key: route.policy.hash_key.clone(),
            retries: route.policy.retries,
            retry_on: weir_discovery::RetryOn::default(),
            connect_timeout: route.policy.connect_timeout,
            read_timeout: route.policy.read_timeout,
            websocket_idle_timeout: route.policy.websocket_idle_timeout,
            retry_budget: Arc::default(),
            backend_protocol: route.policy.backend_protocol,
            upstream_tls: None,
            ssl_redirect: false,
            redirect: None,
            rewrite: None,
            set_fields: Vec::new(),
            add_fields: Vec::new(),
            response_fields: Vec::new(),
            respond: None,
            write_timeout: route.policy.write_timeout,
            max_request_body: None,
            error_pages: None,
            cors: None,
            source_access: None,
            session_cookie: None,
            concurrency: None,
            rate_limit: None,
            global_limit: None,
            mirror: None,
            warm_up_mirror: None,
            auth: None,
            series: Default::default(),
        }
    }
}

/// TLS to the upstream of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// SNI and the name the certificate must carry (`backend-tls-server-name`, else
    /// `<service>.<namespace>.svc`).
    pub server_name: String,
    /// `backend-tls-verify`: chain and name checked (true unless opted out).
    pub verify: bool,
}

/// The compiled path rewrite of a route's filters. Discovery checked the pattern with the
/// same compiler, so a failure here is a bug, logged; the route then forwards unrewritten.
fn path_rewrite(filters: &[RouteFilter]) -> Option<PathRewriter> {
    filters.iter().find_map(|filter| match filter {
        RouteFilter::UrlRewrite(UrlRewrite {
            path: Some(rewrite),
            ..
        }) => match rewrite {
            PathRewrite::RegexReplace {
                pattern,
                replacement,
            } => PathRewriter::new(pattern, replacement)
                .map_err(|e| tracing::error!(pattern, error = %e, "path rewrite does not compile"))
                .ok(),
            PathRewrite::FullPath { path } => Some(PathRewriter::FullPath(path.as_str().into())),
            PathRewrite::PrefixMatch {
                prefix,
                replacement,
            } => Some(PathRewriter::PrefixMatch {
                prefix: prefix.as_str().into(),
                replacement: replacement.as_str().into(),
            }),
        },
        _ => None,
    })
}

/// The fields a route's filters set on the upstream request. Names and values were checked
/// by discovery; one that is still not a valid field is left out and logged.
fn upstream_fields(filters: &[RouteFilter]) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut fields = Vec::new();
    let mut set = |name: &str, value: &str| fields.extend(field_of(name, value));
    for filter in filters {
        match filter {
            RouteFilter::UrlRewrite(UrlRewrite {
                hostname: Some(host),
                ..
            }) => set("host", host),
            RouteFilter::RequestHeaderModifier(modifier) => {
                for (name, value) in &modifier.set {
                    set(name, value);
                }
                // An empty value: the client's field goes, none replaces it.
                for name in &modifier.remove {
                    set(name, "");
                }
            }
            _ => {}
        }
    }
    fields
}

/// A field of a route filter as a name and value, when both are valid (discovery checked
/// them; one that is still not valid is left out and logged).
fn field_of(name: &str, value: &str) -> Option<(http::HeaderName, http::HeaderValue)> {
    match (
        http::HeaderName::from_bytes(name.as_bytes()),
        http::HeaderValue::from_str(value),
    ) {
        (Ok(name), Ok(value)) => Some((name, value)),
        _ => {
            tracing::error!(
                name,
                value,
                "route filter names a field that is not valid: left out"
            );
            None
        }
    }
}

/// The fields a route's `RequestHeaderModifier` adds to the upstream request.
fn added_upstream_fields(filters: &[RouteFilter]) -> Vec<(http::HeaderName, http::HeaderValue)> {
    filters
        .iter()
        .filter_map(|f| match f {
            RouteFilter::RequestHeaderModifier(m) => Some(&m.add),
            _ => None,
        })
        .flatten()
        .filter_map(|(name, value)| field_of(name, value))
        .collect()
}

/// What a route's `ResponseHeaderModifier` does to the response: `set` replaces, `add`
/// appends, `remove` replaces with nothing.
fn response_fields(filters: &[RouteFilter]) -> Vec<crate::http::fields::ResponseField> {
    use crate::http::fields::ResponseField;
    let mut fields = Vec::new();
    for m in filters.iter().filter_map(|f| match f {
        RouteFilter::ResponseHeaderModifier(m) => Some(m),
        _ => None,
    }) {
        let set = m.set.iter().filter_map(|(n, v)| field_of(n, v));
        fields.extend(set.map(|(n, v)| ResponseField::replacing(n, v)));
        let remove = m.remove.iter().filter_map(|n| field_of(n, ""));
        fields.extend(remove.map(|(n, v)| ResponseField::replacing(n, v)));
        let add = m.add.iter().filter_map(|(n, v)| field_of(n, v));
        fields.extend(add.map(|(n, v)| ResponseField::appended(n, v)));
    }
    fields
}

/// What one rule sends requests to: a single target, or several by weight
/// (`weir.dev/backend-weights`).
#[derive(Debug)]
pub struct RouteChoice {
    /// The target of an unsplit route; the first of a split.
    primary: Arc<RouteTarget>,
    /// A split's targets with cumulative weights (ascending; the last is the total).
    /// Empty for an unsplit route.
    split: Box<[(u64, Arc<RouteTarget>)]>,
    /// ingress-nginx's canary of the route, asked first.
    canary: Option<Box<CanaryChoice>>,
    /// Where requests go while the chosen target has no endpoint (`default-backend`).
    fallback: Option<Arc<RouteTarget>>,
    /// Every target's upstreams speak plain HTTP/1.1 (no TLS, no h2c).
    plain_http1: bool,
}

/// A route's canary, compiled: its target and the rule that sends a request there.
#[derive(Debug)]
struct CanaryChoice {
    target: Arc<RouteTarget>,
    header: Option<(http::HeaderName, HeaderDecides)>,
    cookie: Option<String>,
    weight: u32,
    weight_total: u32,
}

#[derive(Debug)]
enum HeaderDecides {
    AlwaysNever,
    Value(String),
    Pattern(regex::Regex),
}

impl CanaryChoice {
    /// `None` when the rule cannot be compiled (discovery checked it with the same
    /// compilers; logged).
    fn new(rule: &weir_discovery::CanaryRule, target: Arc<RouteTarget>) -> Option<CanaryChoice> {
        let header = match &rule.header {
            None => None,
            Some((name, decides)) => {
                let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
                let decides = match decides {
                    CanaryHeader::AlwaysNever => HeaderDecides::AlwaysNever,
                    CanaryHeader::Value(v) => HeaderDecides::Value(v.clone()),
                    CanaryHeader::Pattern(p) => HeaderDecides::Pattern(
                        regex::Regex::new(p)
                            .map_err(|e| tracing::error!(pattern = p, error = %e, "canary pattern does not compile"))
                            .ok()?,
                    ),
                };
                Some((name, decides))
            }
        };
        Some(CanaryChoice {
            target,
            header,
            cookie: rule.cookie.clone(),
            weight: rule.weight,
            weight_total: rule.weight_total,
        })
    }

    /// Whether `req` goes to the canary, as ingress-nginx decides it: the header (`always`,
    /// `never`, or the value or pattern), else the cookie (`always`, `never`), else the
    /// weight.
    fn takes<R: rand::Rng + ?Sized>(&self, req: &impl RequestView, rng: &mut R) -> bool {
        if let Some((name, decides)) = &self.header {
            if let Some(value) = req.field(name).and_then(|v| std::str::from_utf8(v).ok()) {
                match decides {
                    HeaderDecides::Value(wanted) if value == wanted => return true,
                    HeaderDecides::Pattern(pattern) if pattern.is_match(value) => return true,
                    HeaderDecides::AlwaysNever if value == "always" => return true,
                    HeaderDecides::AlwaysNever if value == "never" => return false,
                    _ => {}
                }
            }
        }
        if let Some(cookie) = self.cookie.as_deref().and_then(|name| req.cookie(name)) {
            match cookie {
                "always" => return true,
                "never" => return false,
                _ => {}
            }
        }
        self.weight > 0 && rng.random_range(0..self.weight_total) < self.weight
    }
}

impl RouteChoice {
    fn single(target: Arc<RouteTarget>) -> Self {
        RouteChoice {
            plain_http1: target.plain_http1(),
            primary: target,
            split: Box::new([]),
            canary: None,
            fallback: None,
        }
    }

    /// The route with `fallback` for a target without endpoints.
    fn with_fallback(mut self, fallback: Arc<RouteTarget>) -> Self {
        self.plain_http1 &= fallback.plain_http1();
        self.fallback = Some(fallback);
        self
    }

    /// The route with `canary` asked first.
    fn with_canary(mut self, canary: CanaryChoice) -> Self {
        self.plain_http1 &= canary.target.plain_http1();
        self.canary = Some(Box::new(canary));
        self
    }

    /// `None` when no target has a weight above 0.
    fn weighted(targets: Vec<(u32, Arc<RouteTarget>)>) -> Option<Self> {
        let mut total = 0u64;
        let split: Box<[(u64, Arc<RouteTarget>)]> = targets
            .into_iter()
            .filter(|(w, _)| *w > 0)
            .map(|(w, t)| {
                total += u64::from(w);
                (total, t)
            })
            .collect();
        let primary = Arc::clone(&split.first()?.1);
        let plain_http1 = split.iter().all(|(_, t)| t.plain_http1());
        Some(RouteChoice {
            primary,
            split,
            canary: None,
            fallback: None,
            plain_http1,
        })
    }

    /// Whether every target of the rule speaks plain HTTP/1.1 upstream (what the direct
    /// HTTP/1.1 path serves).
    pub fn plain_http1(&self) -> bool {
        self.plain_http1
    }

    /// The target for `req`: its canary's when the canary takes it, else [`Self::choose`].
    pub fn choose_for<R: rand::Rng + ?Sized>(
        &self,
        req: &impl RequestView,
        rng: &mut R,
    ) -> &Arc<RouteTarget> {
        let target = match &self.canary {
            Some(canary) if canary.takes(req, rng) => &canary.target,
            _ => self.choose(rng),
        };
        match &self.fallback {
            Some(fallback) if target.pool.counts() == (0, 0) => fallback,
            _ => target,
        }
    }

    /// The target for one request: a weighted draw when the route is split (no RNG
    /// otherwise).
    pub fn choose<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> &Arc<RouteTarget> {
        let Some((total, _)) = self.split.last() else {
            return &self.primary;
        };
        let ticket = rng.random_range(0..*total);
        self.split
            .iter()
            .find(|(cumulative, _)| ticket < *cumulative)
            .map_or(&self.primary, |(_, t)| t)
    }
}

/// One published generation of routing.
#[derive(Debug)]
pub struct RoutingTable {
    pub router: Router<Arc<RouteChoice>>,
    pub snapshot: Arc<RoutingSnapshot>,
    pub generation: u64,
    /// Every rule's upstreams speak plain HTTP/1.1: the direct path need not look a request
    /// up to know it can serve it.
    pub plain_http1_only: bool,
}

impl RoutingTable {
    fn empty() -> Self {
        RoutingTable {
            router: Router::new(),
            snapshot: Arc::new(RoutingSnapshot::default()),
            generation: 0,
            plain_http1_only: true,
        }
    }
}

#[derive(Debug)]
pub struct LiveRouting {
    table: ArcSwap<RoutingTable>,
    /// Pools by backend and balancing policy, kept across snapshots (two Ingresses that
    /// send one Service different annotations get two pools over the same endpoint states).
    /// Locked only while applying a snapshot.
    pools: Mutex<HashMap<(BackendKey, String), Arc<Pool>>>,
    /// The pools whose ejected endpoints return only after active checks, with the check
    /// (replaced by each snapshot; read by the health checker).
    health_checked: Mutex<Vec<HealthChecked>>,
    /// `max-concurrency` limits by rule (Ingress, host, path), kept across snapshots so
    /// requests in flight during a reload keep counting. Locked only while applying.
    limits: Mutex<HashMap<String, Arc<ConcurrencyLimit>>>,
    /// Rate limits by rule, kept across snapshots while their settings stay (the clients'
    /// state goes on counting). Locked only while applying.
    rate_limits: Mutex<HashMap<String, (RateLimit, Arc<RateLimiter>)>>,
    /// Authentication by Ingress, kept across snapshots while it stays the same (basic
    /// auth's verified passwords stay cached). Locked only while applying.
    auths: Mutex<HashMap<String, (Authentication, Arc<RouteAuth>)>>,
    /// This proxy's zone (`--zone`), for zone-aware pools.
    zone: Option<String>,
    registry: EndpointRegistry,
    ready: AtomicBool,
    /// Served certificates, when there is an HTTPS listener.
    certificates: Option<Arc<crate::listener::tls::CertificateStore>>,
    /// `--default-certificate` (namespace, name).
    default_certificate: Option<(String, String)>,
}

impl Default for LiveRouting {
    fn default() -> Self {
        LiveRouting {
            table: ArcSwap::from_pointee(RoutingTable::empty()),
            pools: Mutex::new(HashMap::new()),
            health_checked: Mutex::new(Vec::new()),
            limits: Mutex::new(HashMap::new()),
            rate_limits: Mutex::new(HashMap::new()),
            auths: Mutex::new(HashMap::new()),
            zone: None,
            registry: EndpointRegistry::new(),
            ready: AtomicBool::new(false),
            certificates: None,
            default_certificate: None,
        }
    }
}

impl LiveRouting {
    pub fn new() -> Self {
        Self::default()
    }

    /// Live routing for a proxy in `zone`.
    pub fn in_zone(zone: Option<String>) -> Self {
        LiveRouting {
            zone,
            ..Self::default()
        }
    }

    /// Keeps `store` in step with every snapshot applied (the HTTPS listener's
    /// certificates), with `default` (namespace, name) as the default certificate once its
    /// Secret loads. Also turns on `ssl-redirect` for routes whose host has TLS.
    pub fn with_certificates(
        mut self,
        store: Arc<crate::listener::tls::CertificateStore>,
        default: Option<(String, String)>,
    ) -> Self {
        self.certificates = Some(store);
        self.default_certificate = default;
        self
    }

    /// The current table; cheap, lock-free, safe to hold for a whole request.
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    pub fn load_full(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    pub fn registry(&self) -> &EndpointRegistry {
        &self.registry
    }

    /// Applies the fleet's view of the endpoint at `addr` to every live pool it is in
    /// ([`weir_balancer::Pool::apply_fleet_view`]); returns the ejections it made, by
    /// service, with their end and whether they were reported by another replica.
    pub fn apply_fleet_view(
        &self,
        addr: std::net::SocketAddr,
        fleet_failures: u32,
        reported_until: Option<Nanos>,
        now: Nanos,
    ) -> Vec<(String, Nanos, bool)> {
        let Some(endpoint) = self.registry.get(addr) else {
            return Vec::new();
        };
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .iter()
            .filter_map(|((backend, _), pool)| {
                let (until, reported) =
                    pool.apply_fleet_view(&endpoint, fleet_failures, reported_until, now)?;
                Some((backend.service.clone(), until, reported))
            })
            .collect()
    }

    /// The pools with active health checks, and their checks.
    pub fn health_checked(&self) -> Vec<HealthChecked> {
        self.health_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Endpoint counts per (service, state) over the live pools, for `weir_endpoints`.
    /// An endpoint counts once per pool it is in; states: ready, draining, ejected,
    /// slow_start (ready but younger than its pool's slow-start window).
    pub fn endpoint_states(&self) -> Vec<(String, &'static str, i64)> {
        let now = Nanos::now();
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts: std::collections::BTreeMap<(String, &'static str), i64> =
            Default::default();
        for ((backend, _), pool) in pools.iter() {
            let window = pool.config().slow_start.map(|s| s.window);
            for e in pool.endpoints() {
                let state = if e.is_draining() {
                    "draining"
                } else if e.ejected_until(now).is_some() {
                    "ejected"
                } else if window.is_some_and(|w| now.since(e.ready_since()) < w) {
                    "slow_start"
                } else {
                    "ready"
                };
                *counts.entry((backend.service.clone(), state)).or_default() += 1;
            }
        }
        counts.into_iter().map(|((s, st), n)| (s, st, n)).collect()
    }

    /// Every live pool with the backend it balances (for `/debug/endpoints`).
    pub fn pools(&self) -> Vec<(BackendKey, Arc<Pool>)> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = pools
            .iter()
            .map(|((backend, _), pool)| (backend.clone(), Arc::clone(pool)))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// True once a snapshot has been applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Makes `snapshot` live. Returns the number of routes compiled (rules plus a default
    /// backend, if any).
    pub fn apply(&self, snapshot: RoutingSnapshot) -> usize {
        let snapshot = Arc::new(snapshot);
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Nanos::now();
        // Each route's policy key, computed once (the routes of a snapshot are many); a
        // pool is keyed by backend and policy.
        let keyed: Vec<(&RouteSnapshot, String)> = snapshot
            .routes
            .iter()
            .chain(snapshot.default_backend.iter())
            .map(|route| {
                let policy = serde_json::to_string(&route.policy.pool).unwrap_or_default();
                (route, policy)
            })
            .collect();
        let mut live_keys = std::collections::HashSet::new();
        let mut checked = Vec::new();
        for (route, policy) in &keyed {
            for backend_key in route.backends() {
                let Some(backend) = snapshot.backends.get(backend_key) else {
                    continue;
                };
                let key = (backend_key.clone(), policy.clone());
                if live_keys.insert(key.clone()) {
                    let pool = pools.entry(key).or_insert_with(|| {
                        Arc::new(Pool::in_zone(route.policy.pool, self.zone.as_deref()))
                    });
                    pool.update(&backend.endpoints, &self.registry, now);
                    let plain_http =
                        route.policy.backend_protocol == weir_discovery::BackendProtocol::Http;
                    if let (Some(_), false) = (&route.policy.health_check, plain_http) {
                        // Checks speak plain HTTP/1.1, which this backend does not: its
                        // endpoints return when their ejection ends, as without checks
                        // (the checker lets go of endpoints no checked pool holds).
                        tracing::warn!(
                            service = %backend_key.service,
                            protocol = ?route.policy.backend_protocol,
                            "health checks are plain HTTP/1.1: not run for this backend"
                        );
                    } else if let Some(check) = &route.policy.health_check {
                        checked.push(HealthChecked {
                            pool: Arc::clone(pool),
                            check: check.clone(),
                            service: backend_key.service.clone(),
                        });
                    }
                }
            }
        }
        pools.retain(|key, _| live_keys.contains(key));
        *self
            .health_checked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = checked;

        // One limit per rule with max-concurrency, shared by the targets of a split.
        let mut limits = self
            .limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut live_limits = std::collections::HashSet::new();
        let mut limit_for = |route: &RouteSnapshot| -> Option<Arc<ConcurrencyLimit>> {
            let max = route.policy.max_concurrency?;
            let key = format!("{}|{:?}|{:?}", route.ingress, route.host, route.path);
            let limit = limits
                .entry(key.clone())
                .or_insert_with(|| Arc::new(ConcurrencyLimit::new(max)));
            limit.set_max(max);
            live_limits.insert(key);
            Some(Arc::clone(limit))
        };
        // One rate limiter per Ingress with limit-rps, limit-rpm or limit-connections, shared
        // by its rules and their targets (ingress-nginx's zones are the Ingress's).
        let mut rate_limits = self
            .rate_limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut live_rates = std::collections::HashSet::new();
        let mut rate_for = |route: &RouteSnapshot| -> Option<Arc<RateLimiter>> {
            let limit = route.policy.rate_limit.as_ref()?;
            let key = route.ingress.to_string();
            live_rates.insert(key.clone());
            match rate_limits.get(&key) {
                Some((kept, limiter)) if kept == limit => Some(Arc::clone(limiter)),
                _ => {
                    let limiter = Arc::new(RateLimiter::new(limit)?);
                    rate_limits.insert(key, (limit.clone(), Arc::clone(&limiter)));
                    Some(limiter)
                }
            }
        };
        let mut auths = self
            .auths
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut live_auths = std::collections::HashSet::new();
        let mut auth_for = |route: &RouteSnapshot| -> Option<Arc<RouteAuth>> {
            let auth = route.policy.auth.as_ref()?;
            let key = route.ingress.to_string();
            live_auths.insert(key.clone());
            match auths.get(&key) {
                Some((kept, compiled)) if kept == auth => Some(Arc::clone(compiled)),
                _ => {
                    let compiled = Arc::new(RouteAuth::new(auth));
                    auths.insert(key, (auth.clone(), Arc::clone(&compiled)));
                    Some(compiled)
                }
            }
        };
        let target_to = |route: &RouteSnapshot,
                         backend: &BackendKey,
                         policy: &str,
                         (concurrency, rate_limit, auth): &RuleLimits|
         -> Option<Arc<RouteTarget>> {
            let pool = pools.get(&(backend.clone(), policy.to_string()))?;
            // The error backend: the route's policy, none of its filters or its session.
            let error_pages = route.error_pages.as_ref().and_then(|pages| {
                let error_backend = pages.backend.as_ref()?;
                let error_pool = pools.get(&(error_backend.clone(), policy.to_string()))?;
                let mut plain =
                    RouteTarget::error_backend(route, error_backend, Arc::clone(error_pool));
                plain.upstream_tls = upstream_tls(route, error_backend);
                Some(ErrorPagesTarget {
                    statuses: pages.statuses.clone().into_boxed_slice(),
                    target: Arc::new(plain),
                })
            });
            Some(Arc::new(RouteTarget {
                namespace: route.ingress.namespace.clone(),
                ingress: route.ingress.name.clone(),
                service: backend.service.clone(),
                service_port: backend.port.clone(),
                source_access: route.policy.source_access.clone(),
                cors: route.filters.iter().find_map(|f| match f {
                    weir_discovery::RouteFilter::Cors(cors) => {
                        crate::request::cors::CorsRules::new(cors)
                    }
                    _ => None,
                }),
                error_pages,
                route: route.path.as_written().to_string(),
                pool: Arc::clone(pool),
                hash_key: route.policy.hash_key.clone(),
                retries: route.policy.retries,
                retry_on: route.policy.retry_on.clone(),
                connect_timeout: route.policy.connect_timeout,
                read_timeout: route.policy.read_timeout,
                websocket_idle_timeout: route.policy.websocket_idle_timeout,
                retry_budget: Arc::default(),
                backend_protocol: route.policy.backend_protocol,
                ssl_redirect: route.ssl_redirect && self.certificates.is_some(),
                redirect: route
                    .filters
                    .iter()
                    .find_map(weir_discovery::RouteFilter::as_redirect)
                    .cloned(),
                max_request_body: route.policy.max_request_body,
                write_timeout: route.policy.write_timeout,
                rewrite: path_rewrite(&route.filters),
                set_fields: upstream_fields(&route.filters),
                add_fields: added_upstream_fields(&route.filters),
                response_fields: response_fields(&route.filters),
                respond: route
                    .filters
                    .iter()
                    .find_map(|f| match f {
                        RouteFilter::Respond { status } => Some(*status),
                        _ => None,
                    })
                    // A split's share for a backendRef that does not resolve.
                    .or_else(|| {
                        (backend.is_unresolved() && !route.split.is_empty()).then_some(500)
                    }),
                session_cookie: route.policy.affinity.as_ref().map(|affinity| {
                    let backend =
                        format!("{}/{}:{}", backend.namespace, backend.service, backend.port);
                    SessionCookie::new(affinity, &backend, route.path.cookie_path())
                }),
                concurrency: concurrency.clone(),
                rate_limit: rate_limit.clone(),
                auth: auth.clone(),
                mirror: crate::request::mirror::MirrorRules::new(
                    route.filters.iter().filter_map(|f| match f {
                        RouteFilter::RequestMirror(mirror) => Some(mirror),
                        _ => None,
                    }),
                    |backend| pools.get(&(backend.clone(), policy.to_string())).cloned(),
                )
                .map(Arc::new),
                warm_up_mirror: route.policy.warm_up_mirror,
                global_limit: route.policy.global_rate_limit.as_ref().map(|limit| {
                    Arc::new(crate::request::global_limit::GlobalLimiter::new(
                        &format!("{}/{}", route.ingress.namespace, route.ingress.name),
                        limit,
                    ))
                }),
                series: Default::default(),
                upstream_tls: upstream_tls(route, backend),
            }))
        };
        let mut target_for = |route: &RouteSnapshot, policy: &str| -> Option<Arc<RouteChoice>> {
            let rule_limits: RuleLimits = (limit_for(route), rate_for(route), auth_for(route));
            let choice = if route.split.is_empty() {
                RouteChoice::single(target_to(route, &route.backend, policy, &rule_limits)?)
            } else {
                let targets = route
                    .split
                    .iter()
                    .filter_map(|w| {
                        Some((
                            w.weight,
                            target_to(route, &w.backend, policy, &rule_limits)?,
                        ))
                    })
                    .collect();
                RouteChoice::weighted(targets)?
            };
            // The canary's requests are counted as its Ingress's and Service's.
            let canary = route.canary.as_ref().and_then(|canary| {
                let mut owned = route.clone();
                owned.ingress = canary.ingress.clone();
                let target = target_to(&owned, &canary.backend, policy, &rule_limits)?;
                CanaryChoice::new(&canary.rule, target)
            });
            let choice = match canary {
                Some(canary) => choice.with_canary(canary),
                None => choice,
            };
            let fallback = route
                .fallback
                .as_ref()
                .and_then(|backend| target_to(route, backend, policy, &rule_limits));
            Some(Arc::new(match fallback {
                Some(fallback) => choice.with_fallback(fallback),
                None => choice,
            }))
        };
        let mut router = Router::new();
        let mut count = 0;
        let mut plain_http1_only = true;
        // `keyed` holds the rules in order, then the default backend if there is one.
        let (rules, default) = keyed.split_at(snapshot.routes.len());
        for (route, key) in rules {
            let Some(target) = target_for(route, key) else {
                continue;
            };
            plain_http1_only &= target.plain_http1();
            let inserted = Conditions::new(&route.conditions).and_then(|conditions| {
                router.insert_when(&route.host, &route.path, conditions, target)
            });
            match inserted {
                Ok(()) => count += 1,
                // Translation validated every rule already; this only guards against a
                // source that skipped it.
                Err(e) => tracing::warn!(ingress = %route.ingress, error = %e, "rule not compiled"),
            }
        }
        if let Some(target) = default
            .first()
            .and_then(|(route, key)| target_for(route, key))
        {
            plain_http1_only &= target.plain_http1();
            router.set_default(target);
            count += 1;
        }
        drop(pools);
        limits.retain(|key, _| live_limits.contains(key));
        drop(limits);
        rate_limits.retain(|key, _| live_rates.contains(key));
        auths.retain(|key, _| live_auths.contains(key));
        drop(rate_limits);
        if let Some(store) = &self.certificates {
            store.apply(&snapshot);
            if let Some(cert) = self
                .default_certificate
                .as_ref()
                .and_then(|key| snapshot.certificates.get(key))
            {
                store.set_default(Arc::clone(&cert.certified.0));
            }
        }

        let generation = self.table.load().generation + 1;
        self.table.store(Arc::new(RoutingTable {
            router,
            snapshot,
            generation,
            plain_http1_only,
        }));
        self.registry.prune();
        self.ready.store(true, Ordering::Release);
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use weir_balancer::EndpointSpec;
    use weir_discovery::{BackendSnapshot, HostMatch, ObjectRef, PathMatch};

    fn snapshot(ports: &[u16]) -> RoutingSnapshot {
        let key = BackendKey {
            namespace: "ns".into(),
            service: "svc".into(),
            port: "80".into(),
            cluster_ip: false,
        };
        let mut s = RoutingSnapshot::default();
        s.routes.push(RouteSnapshot {
            host: HostMatch::Any,
            path: PathMatch::Prefix("/".into()),
            conditions: Default::default(),
            backend: key.clone(),
            split: Vec::new(),
            ssl_redirect: false,
            filters: Vec::new(),
            canary: None,
            fallback: None,
            error_pages: None,
            ingress: ObjectRef {
                kind: "Ingress",
                namespace: "ns".into(),
                name: "ing".into(),
            },
            policy: Default::default(),
        });
        s.backends.insert(
            key,
            BackendSnapshot {
                endpoints: ports
                    .iter()
                    .map(|p| EndpointSpec::ready(SocketAddr::from(([127, 0, 0, 1], *p))))
                    .collect(),
                problem: None,
            },
        );
        s
    }

    #[test]
    fn apply_publishes_and_keeps_endpoint_state() {
        let live = LiveRouting::new();
        assert!(!live.is_ready());
        assert_eq!(live.apply(snapshot(&[1, 2])), 1);
        assert!(live.is_ready());
        let table = live.load_full();
        let mut rng = rand::rng();
        let target = table
            .router
            .lookup_path("any", "/x")
            .ok()
            .flatten()
            .expect("route")
            .choose(&mut rng);
        let ep = target
            .pool
            .pick(&weir_balancer::PickRequest::default(), &mut rand::rng())
            .endpoint
            .expect("endpoint");
        let guard = ep.start_request();

        live.apply(snapshot(&[1, 2, 3]));
        let table2 = live.load_full();
        assert_eq!(table2.generation, table.generation + 1);
        let target2 = table2
            .router
            .lookup_path("any", "/x")
            .ok()
            .flatten()
            .expect("route")
            .choose(&mut rng);
        assert!(
            Arc::ptr_eq(&target.pool, &target2.pool),
            "pool updated in place"
        );
        let same = target2
            .pool
            .endpoints()
            .into_iter()
            .find(|e| e.addr() == ep.addr())
            .expect("survivor");
        assert_eq!(same.in_flight(), 1);
        drop(guard);
        assert_eq!(same.in_flight(), 0);
        assert_eq!(target2.pool.counts(), (3, 0));
    }

    /// The route of `/` once `s` is applied.
    fn route_at_root(s: RoutingSnapshot) -> Arc<RouteChoice> {
        let live = LiveRouting::new();
        live.apply(s);
        let table = live.load_full();
        let choice = table.router.lookup_path("any", "/").ok().flatten();
        Arc::clone(choice.expect("route"))
    }

    /// Adds the Service `canary` (one endpoint) beside the route's backend.
    fn with_canary_backend(s: &mut RoutingSnapshot) -> BackendKey {
        let canary = BackendKey {
            service: "canary".into(),
            ..s.routes[0].backend.clone()
        };
        s.backends.insert(
            canary.clone(),
            BackendSnapshot {
                endpoints: vec![EndpointSpec::ready(SocketAddr::from(([127, 0, 0, 1], 9)))],
                problem: None,
            },
        );
        canary
    }

    #[test]
    fn a_split_route_shares_requests_by_weight() {
        use rand::SeedableRng;
        let mut s = snapshot(&[1]);
        let canary = with_canary_backend(&mut s);
        let main = s.routes[0].backend.clone();
        s.routes[0].split = vec![
            weir_discovery::WeightedBackend {
                backend: main,
                weight: 90,
            },
            weir_discovery::WeightedBackend {
                backend: canary,
                weight: 10,
            },
        ];
        let choice = route_at_root(s);
        // 100,000 seeded draws: one standard deviation of a 10 % share is 0.095 points, so
        // ±0.5 points is over 5 sigma.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
        let canary_picks = (0..100_000)
            .filter(|_| choice.choose(&mut rng).service == "canary")
            .count();
        let share = canary_picks as f64 / 1000.0;
        assert!((share - 10.0).abs() < 0.5, "canary got {share} %");
    }

    /// A canary's weight, seeded: 100,000 requests that neither header nor cookie decide,
    /// 20 of 1,000 (`canary-weight-total`) to the canary. One standard deviation of a 2 %
    /// share is 0.044 points: ±0.25 points is over 5 sigma.
    #[test]
    fn a_canary_takes_its_weight_of_the_undecided_requests() {
        use rand::SeedableRng;
        let mut s = snapshot(&[1]);
        let canary = with_canary_backend(&mut s);
        s.routes[0].canary = Some(weir_discovery::Canary {
            backend: canary,
            ingress: s.routes[0].ingress.clone(),
            rule: weir_discovery::CanaryRule {
                header: Some(("x-canary".into(), weir_discovery::CanaryHeader::AlwaysNever)),
                cookie: None,
                weight: 20,
                weight_total: 1000,
            },
        });
        let choice = route_at_root(s);
        let undecided = pingora::http::RequestHeader::build("GET", b"/", None).expect("request");
        let mut rng = rand::rngs::SmallRng::seed_from_u64(26);
        let canary_picks = (0..100_000)
            .filter(|_| choice.choose_for(&undecided, &mut rng).service == "canary")
            .count();
        let share = canary_picks as f64 / 1000.0;
        assert!((share - 2.0).abs() < 0.25, "canary got {share} %");
        // The header decides before the weight, whatever the draw.
        let mut always = pingora::http::RequestHeader::build("GET", b"/", None).expect("request");
        always.insert_header("x-canary", "always").expect("header");
        assert!((0..100).all(|_| choice.choose_for(&always, &mut rng).service == "canary"));
    }
}
