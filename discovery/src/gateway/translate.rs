//! Gateway API objects -> routes of weir's model (pure: no I/O), as the spec has them:
//! the GatewayClasses of weir's controller, their Gateways' HTTP and HTTPS listeners, and
//! the HTTPRoutes and GRPCRoutes those listeners allow, with the hostnames each route and
//! listener share.
//!
//! A route rule becomes one [`RouteSnapshot`] per hostname and match: its path (`Exact`,
//! `PathPrefix`, `RegularExpression`; a GRPCRoute's service and method), header, query
//! parameter and method conditions, its `backendRefs` as weighted Services (another
//! namespace's only with a ReferenceGrant), its timeouts, and its filters:
//! `RequestHeaderModifier` and `ResponseHeaderModifier` (`set`, `add`, `remove`),
//! `RequestRedirect` (scheme, hostname, port, path, status), `URLRewrite` (hostname, path)
//! and `RequestMirror`.
//!
//! Besides the routes, translation says what each object's status should say: which
//! classes are accepted, each listener's conditions and attached routes
//! ([`GatewayOutcome`]), and each route parent's `Accepted` and `ResolvedRefs`
//! ([`ParentOutcome`]), with the spec's reasons. [`super::status`] turns them into status.
//! What a route cannot have is also reported as a [`Rejection`] (log, metric, debug
//! endpoint); its other parents and rules are still served.
//!
//! Must not: do I/O, or read Ingresses.

use super::objects::{
    Gateway, GrpcRoute, GrpcRouteMatch, HttpBackendRef, HttpHeaderFilter, HttpPathMatch,
    HttpPathModifier, HttpRoute, HttpRouteFilter, HttpRouteMatch, HttpRouteRule, Listener,
    ParentReference, RouteGroupKind,
};
pub use super::values::{parse_duration, Verdict};
use crate::objects::{meta_ref, ClusterObjects};
use crate::snapshot::{
    BackendKey, BackendProtocol, HeaderModifier, HostMatch, ObjectRef, PathMatch, PathRewrite,
    Redirect, RedirectParts, RedirectTo, Rejection, RequestConditions, RequestMirror, RouteFilter,
    RoutePolicy, RouteSnapshot, StringMatch, TlsHost, UrlRewrite, ValueMatch, WeightedBackend,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

const GROUP: &str = "gateway.networking.k8s.io";

/// The route kinds weir serves, as a listener's `supportedKinds` names them.
const ROUTE_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// What one listener of a Gateway is, for its status.
#[derive(Clone, Debug)]
pub struct ListenerOutcome {
    pub name: String,
    pub supported_kinds: Vec<RouteGroupKind>,
    /// Routes attached through this listener.
    pub attached_routes: i32,
    pub accepted: Verdict,
    pub resolved_refs: Verdict,
    /// `True` with the conflict's reason, `False` (`NoConflicts`) otherwise.
    pub conflicted: Verdict,
    pub programmed: Verdict,
}

/// A Gateway of one of weir's classes, its listeners in order.
#[derive(Clone, Debug)]
pub struct GatewayOutcome {
    pub gateway: ObjectRef,
    pub listeners: Vec<ListenerOutcome>,
}

/// A route's standing with one of its parents (a Gateway of weir's).
#[derive(Clone, Debug)]
pub struct ParentOutcome {
    /// Kind `HTTPRoute` or `GRPCRoute`.
    pub route: ObjectRef,
    pub parent: ParentReference,
    pub accepted: Verdict,
    pub resolved_refs: Verdict,
}

/// What the Gateway API objects make.
#[derive(Debug, Default)]
pub struct Translated {
    /// In precedence order (the oldest route first, then namespace/name).
    pub routes: Vec<RouteSnapshot>,
    /// Routes with at least one accepted parent.
    pub served: Vec<ObjectRef>,
    /// What could not be served, by object, with the spec's reason first.
    pub rejected: Vec<Rejection>,
    /// HTTPS listeners' hostnames and the Secrets that serve them.
    pub tls_hosts: Vec<TlsHost>,
    /// The GatewayClasses weir's controller accepts, by name.
    pub classes: Vec<String>,
    pub gateways: Vec<GatewayOutcome>,
    pub parents: Vec<ParentOutcome>,
    /// Each policy's verdict per target ([`super::policy`]).
    pub policies: Vec<super::policy::PolicyOutcome>,
}

/// A listener as routes see it: may it take them, of which kinds.
struct ListenerView<'a> {
    listener: &'a Listener,
    /// Accepted and not in conflict: it takes routes.
    usable: bool,
    kinds: Vec<RouteGroupKind>,
}

/// A Gateway of weir's with its listeners judged.
struct GatewayView<'a> {
    gateway: &'a Gateway,
    namespace: &'a str,
    listeners: Vec<ListenerView<'a>>,
}

/// HTTPRoutes and GRPCRoutes in the one shape translation walks (a GRPCRoute's matches
/// become paths).
struct RouteObject<'a> {
    kind: &'static str,
    meta: &'a ObjectMeta,
    parent_refs: &'a [ParentReference],
    hostnames: &'a [String],
    /// Each rule, or why it cannot be expressed.
    rules: Vec<Result<HttpRouteRule, String>>,
    grpc: bool,
}

impl<'a> RouteObject<'a> {
    fn http(route: &'a HttpRoute) -> Self {
        RouteObject {
            kind: "HTTPRoute",
            meta: &route.metadata,
            parent_refs: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            rules: route.spec.rules.iter().cloned().map(Ok).collect(),
            grpc: false,
        }
    }

    fn grpc(route: &'a GrpcRoute) -> Self {
        let rules = route
            .spec
            .rules
            .iter()
            .map(|rule| {
                Ok(HttpRouteRule {
                    matches: rule
                        .matches
                        .iter()
                        .map(grpc_match)
                        .collect::<Result<_, _>>()?,
                    filters: rule.filters.clone(),
                    backend_refs: rule.backend_refs.clone(),
                    timeouts: None,
                    session_persistence: rule.session_persistence.clone(),
                    retry: None,
                })
            })
            .collect();
        RouteObject {
            kind: "GRPCRoute",
            meta: &route.metadata,
            parent_refs: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            rules,
            grpc: true,
        }
    }

    fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or("default")
    }
}

/// A GRPCRoute match as an HTTP one: gRPC calls are `POST /{service}/{method}`.
fn grpc_match(m: &GrpcRouteMatch) -> Result<HttpRouteMatch, String> {
    let path = match &m.method {
        None => None,
        Some(method) => {
            let service = method.service.as_deref().filter(|s| !s.is_empty());
            let name = method.method.as_deref().filter(|s| !s.is_empty());
            let (kind, value) = match (method.kind.as_deref().unwrap_or("Exact"), service, name) {
                (_, None, None) => {
                    return Err(
                        "UnsupportedValue: a method match names neither service nor method"
                            .to_string(),
                    )
                }
                ("Exact", Some(s), Some(m)) => ("Exact", format!("/{s}/{m}")),
                ("Exact", Some(s), None) => ("PathPrefix", format!("/{s}/")),
                ("Exact", None, Some(m)) => {
                    ("RegularExpression", format!("/[^/]+/{}$", regex::escape(m)))
                }
                ("RegularExpression", s, m) => {
                    // Each part must be a whole expression of its own, so that neither can
                    // reach out of its group.
                    for part in [s, m].into_iter().flatten() {
                        regex::Regex::new(part).map_err(|e| {
                            format!("UnsupportedValue: method match expression {part:?}: {e}")
                        })?;
                    }
                    (
                        "RegularExpression",
                        format!(
                            "/(?:{})/(?:{})$",
                            s.unwrap_or("[^/]+"),
                            m.unwrap_or("[^/]+")
                        ),
                    )
                }
                (other, _, _) => {
                    return Err(format!("UnsupportedValue: method match type {other:?}"))
                }
            };
            Some(HttpPathMatch {
                kind: Some(kind.to_string()),
                value: Some(value),
            })
        }
    };
    Ok(HttpRouteMatch {
        path,
        headers: m.headers.clone(),
        query_params: Vec::new(),
        method: None,
    })
}

/// The routes of `objects`' HTTPRoutes and GRPCRoutes on the Gateways of classes whose
/// `controllerName` is `controller`, and what their status should say. `now_unix` judges
/// listener certificates (0: expiry is not checked).
pub fn translate(objects: &ClusterObjects, controller: &str, now_unix: i64) -> Translated {
    let mut out = Translated {
        classes: objects
            .gateway_classes
            .iter()
            .filter(|c| c.spec.controller_name == controller)
            .filter_map(|c| c.metadata.name.clone())
            .collect(),
        ..Translated::default()
    };
    let views: Vec<GatewayView> = objects
        .gateways
        .iter()
        .filter(|g| out.classes.contains(&g.spec.gateway_class_name))
        .map(|g| judge_gateway(g))
        .collect();
    let mut outcomes: Vec<GatewayOutcome> = views
        .iter()
        .map(|view| listener_outcomes(objects, view, now_unix, &mut out.tls_hosts))
        .collect();
    // Policies have status of their own, with or without Gateways.
    let policies = super::policy::read_policies(objects);
    if views.is_empty() {
        out.rejected.extend(policies.rejected);
        out.policies = policies.outcomes;
        return out;
    }
    let mut routes: Vec<RouteObject> = objects
        .http_routes
        .iter()
        .map(|r| RouteObject::http(r))
        .chain(objects.grpc_routes.iter().map(|r| RouteObject::grpc(r)))
        .collect();
    routes.sort_by_key(|r| {
        (
            r.meta.creation_timestamp.clone().map(|t| t.0),
            r.meta.namespace.clone(),
            r.meta.name.clone(),
        )
    });
    for route in &routes {
        translate_route(objects, &policies, route, &views, &mut outcomes, &mut out);
    }
    out.gateways = outcomes;
    out.rejected.extend(policies.rejected);
    out.policies = policies.outcomes;
    out
}

/// One route: its parents' outcomes, and its rules' routes when a parent took it.
fn translate_route(
    objects: &ClusterObjects,
    policies: &super::policy::Policies,
    route: &RouteObject,
    views: &[GatewayView],
    outcomes: &mut [GatewayOutcome],
    out: &mut Translated,
) {
    let route_ref = meta_ref(route.kind, route.meta);
    let reject = |out: &mut Translated, reason: String| {
        out.rejected.push(Rejection {
            object: route_ref.clone(),
            reason,
        })
    };
    // The rules first: whether their references resolve is part of every parent's status.
    let mut rules = Vec::new();
    let mut resolved = Verdict::yes("ResolvedRefs", "every reference is resolved");
    let mut unsupported: Option<String> = None;
    for (n, rule) in route.rules.iter().enumerate() {
        let rule = match rule {
            Ok(rule) => rule,
            Err(reason) => {
                reject(out, format!("rule {n}: {reason}"));
                unsupported.get_or_insert_with(|| reason.clone());
                continue;
            }
        };
        match translate_rule(objects, policies, route, rule) {
            Ok((made, problem)) => {
                if let Some((reason, message)) = problem {
                    reject(out, format!("rule {n}: {reason}: {message}"));
                    if resolved.status {
                        resolved = Verdict::no(reason, message);
                    }
                }
                rules.extend(made);
            }
            Err(reason) => {
                reject(out, format!("rule {n}: UnsupportedValue: {reason}"));
                unsupported.get_or_insert(reason);
            }
        }
    }
    let mut hostnames: Vec<HostMatch> = Vec::new();
    // The hostnames an HTTP listener gave: the others came only through HTTPS listeners,
    // and plain HTTP requests for them are redirected to https rather than served.
    let mut plain: Vec<HostMatch> = Vec::new();
    let mut attached = false;
    for parent in route.parent_refs {
        let Some(g) = parent_gateway(route, parent, views) else {
            // Not one of weir's Gateways: another controller's business.
            continue;
        };
        let accepted = match attach(objects, route, parent, &views[g]) {
            Ok(taken) => {
                attached = true;
                for (listener, hosts) in taken {
                    outcomes[g].listeners[listener].attached_routes += 1;
                    let listener_ok = outcomes[g].listeners[listener].resolved_refs.status;
                    if views[g].listeners[listener].listener.protocol == "HTTPS" && listener_ok {
                        tls_for_route_hosts(&views[g], listener, &hosts, out);
                    }
                    let http = views[g].listeners[listener].listener.protocol == "HTTP";
                    for host in hosts {
                        if http && !plain.contains(&host) {
                            plain.push(host.clone());
                        }
                        if !hostnames.contains(&host) {
                            hostnames.push(host);
                        }
                    }
                }
                match (&unsupported, rules.is_empty() && !route.rules.is_empty()) {
                    (Some(reason), true) => Verdict::no("UnsupportedValue", reason.clone()),
                    _ => Verdict::yes("Accepted", "accepted by weir"),
                }
            }
            Err((reason, message)) => {
                reject(out, format!("parent {}: {reason}: {message}", parent.name));
                Verdict::no(reason, message)
            }
        };
        out.parents.push(ParentOutcome {
            route: route_ref.clone(),
            parent: parent.clone(),
            accepted,
            resolved_refs: resolved.clone(),
        });
    }
    if !attached {
        return;
    }
    out.served.push(route_ref.clone());
    for (path, conditions, backend, split, filters, policy) in rules {
        for host in &hostnames {
            out.routes.push(RouteSnapshot {
                host: host.clone(),
                path: path.clone(),
                conditions: conditions.clone(),
                backend: backend.clone(),
                split: split.clone(),
                ssl_redirect: !plain.contains(host),
                filters: filters.clone(),
                canary: None,
                fallback: None,
                error_pages: None,
                ingress: route_ref.clone(),
                policy: policy.clone(),
            });
        }
    }
}

/// One match of a rule in the route model, before its hostnames.
type RuleRoute = (
    PathMatch,
    RequestConditions,
    BackendKey,
    Vec<WeightedBackend>,
    Vec<RouteFilter>,
    RoutePolicy,
);

/// A rule's routes (one per match), and the first reference that did not resolve (its share
/// of requests is answered 500). `Err`: the rule cannot be served (a match or filter weir
/// does not implement, or a value the spec does not allow).
#[allow(clippy::type_complexity)]
fn translate_rule(
    objects: &ClusterObjects,
    policies: &super::policy::Policies,
    route: &RouteObject,
    rule: &HttpRouteRule,
) -> Result<(Vec<RuleRoute>, Option<(&'static str, String)>), String> {
    // What weir does not implement is refused, never ignored.
    if rule.retry.is_some() {
        return Err("retry is not supported by weir's Gateway API routes".to_string());
    }
    if rule.backend_refs.iter().any(|b| !b.filters.is_empty()) {
        return Err(
            "filters on a backendRef are not supported by weir (a rule's filters are)".to_string(),
        );
    }
    let redirects = rule.filters.iter().any(|f| f.kind == "RequestRedirect");
    let nowhere = BackendKey::unresolved(route.namespace());
    let mut problem = None;
    let mut respond = None;
    let (backend, split, protocol) = if redirects && rule.backend_refs.is_empty() {
        // Answered by the redirect: no backend (an empty name resolves to nothing).
        (nowhere, Vec::new(), BackendProtocol::Http)
    } else {
        let found = backends(objects, route, &rule.backend_refs);
        problem = found.problem;
        match found.first {
            Some(first) => (first, found.split, found.protocol),
            None => {
                // Nothing to send to: the spec's answer is 500 (also for a rule with no
                // backendRefs, which has nowhere to go).
                respond = Some(500);
                (nowhere, Vec::new(), BackendProtocol::Http)
            }
        }
    };
    // The first backend's Service says how the rule balances (its BalancerPolicy and
    // BackendLBPolicy); a split's other Services are balanced alike.
    let attached = policies
        .services
        .get(&(backend.namespace.clone(), backend.service.clone()));
    let (mut policy, protocol_set) = match attached.and_then(|a| a.balancer.as_ref()) {
        Some((policy, keys)) => (policy.clone(), keys.iter().any(|k| k == "backend-protocol")),
        None => (RoutePolicy::default(), false),
    };
    if !protocol_set {
        policy.backend_protocol = if route.grpc {
            BackendProtocol::H2c
        } else {
            protocol
        };
    }
    if let Some(affinity) = attached.and_then(|a| a.affinity.clone()) {
        policy.affinity = Some(affinity);
    }
    // The rule's own session persistence comes before its Service's policy.
    if let Some(persistence) = &rule.session_persistence {
        policy.affinity = Some(super::policy::affinity(persistence)?);
    }
    if let Some(timeouts) = &rule.timeouts {
        apply_timeouts(timeouts, &mut policy)?;
    }
    let default_match = [HttpRouteMatch::default()];
    let matches = match rule.matches.is_empty() {
        true => &default_match[..],
        false => &rule.matches[..],
    };
    let mut made = Vec::new();
    for m in matches {
        let (path, conditions) = route_match(m)?;
        let mut filters = filters(objects, route, &rule.filters, &path)?;
        if let Some(status) = respond {
            filters.retain(|f| !matches!(f, RouteFilter::RequestMirror(_)));
            filters.push(RouteFilter::Respond { status });
        }
        made.push((
            path,
            conditions,
            backend.clone(),
            split.clone(),
            filters,
            policy.clone(),
        ));
    }
    Ok((made, problem))
}

/// A rule's `timeouts` in the route's policy: `backendRequest` bounds each attempt's wait
/// for the backend, `request` the wait for the response as a whole (weir holds both to the
/// wait for the next bytes from the backend, and the connect).
fn apply_timeouts(
    timeouts: &super::objects::HttpRouteTimeouts,
    policy: &mut RoutePolicy,
) -> Result<(), String> {
    let request = timeouts
        .request
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    let backend = timeouts
        .backend_request
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    if let (Some(request), Some(backend)) = (request, backend) {
        if !request.is_zero() && backend > request {
            return Err(format!(
                "timeouts: backendRequest {backend:?} is longer than request {request:?}"
            ));
        }
    }
    // `0s` turns the timeout off: weir's longest read wait stands.
    for limit in [request, backend].into_iter().flatten() {
        if !limit.is_zero() {
            policy.read_timeout = policy.read_timeout.min(limit);
            policy.connect_timeout = policy.connect_timeout.min(limit);
        }
    }
    Ok(())
}

/// The Gateway (index into `views`) `parent` names, when it is one of weir's.
fn parent_gateway(
    route: &RouteObject,
    parent: &ParentReference,
    views: &[GatewayView],
) -> Option<usize> {
    if parent.group.as_deref().is_some_and(|g| g != GROUP)
        || parent.kind.as_deref().is_some_and(|k| k != "Gateway")
    {
        return None;
    }
    let gateway_ns = parent.namespace.as_deref().unwrap_or(route.namespace());
    views.iter().position(|v| {
        v.gateway.metadata.name.as_deref() == Some(parent.name.as_str())
            && v.namespace == gateway_ns
    })
}

/// The listeners (by index) that take `route` through `parent`, each with the hostnames the
/// two share; `Err` with the spec's reason when none does.
#[allow(clippy::type_complexity)]
fn attach(
    objects: &ClusterObjects,
    route: &RouteObject,
    parent: &ParentReference,
    view: &GatewayView,
) -> Result<Vec<(usize, Vec<HostMatch>)>, (&'static str, String)> {
    let route_ns = route.namespace();
    let gateway_name = format!(
        "Gateway {}/{}",
        view.namespace,
        view.gateway.metadata.name.as_deref().unwrap_or_default()
    );
    let named: Vec<(usize, &ListenerView)> = view
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            parent
                .section_name
                .as_deref()
                .is_none_or(|s| s == l.listener.name)
        })
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.listener.port))
        .collect();
    if named.is_empty() {
        return Err((
            "NoMatchingParent",
            format!(
                "{gateway_name} has no listener{}{}",
                parent
                    .section_name
                    .as_deref()
                    .map_or(String::new(), |s| format!(" named {s:?}")),
                parent
                    .port
                    .map_or(String::new(), |p| format!(" on port {p}")),
            ),
        ));
    }
    let allowed: Vec<&(usize, &ListenerView)> = named
        .iter()
        .filter(|(_, l)| {
            l.usable
                && l.kinds.iter().any(|k| k.kind == route.kind)
                && allows(objects, l.listener, route_ns, view.namespace)
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            "NotAllowedByListeners",
            format!(
                "no listener of {gateway_name}{} takes {}s of namespace {route_ns:?}",
                parent
                    .section_name
                    .as_deref()
                    .map_or(String::new(), |s| format!(" named {s:?}")),
                route.kind
            ),
        ));
    }
    let mut taken = Vec::new();
    for (index, listener) in allowed {
        let hosts = shared_hostnames(listener.listener.hostname.as_deref(), route.hostnames);
        if !hosts.is_empty() {
            taken.push((*index, hosts));
        }
    }
    if taken.is_empty() {
        return Err((
            "NoMatchingListenerHostname",
            format!(
                "none of the route's hostnames {:?} is one the listeners of {gateway_name} serve",
                route.hostnames
            ),
        ));
    }
    Ok(taken)
}

/// Whether `listener` (of a Gateway in `gateway_ns`) takes routes of `route_ns`.
fn allows(objects: &ClusterObjects, listener: &Listener, route_ns: &str, gateway_ns: &str) -> bool {
    let namespaces = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Same" => route_ns == gateway_ns,
        // No selector selects nothing (closed), as an unknown `from` does.
        "Selector" => namespaces
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|selector| selects(selector, &namespace_labels(objects, route_ns))),
        _ => false,
    }
}

/// A namespace's labels, with the `kubernetes.io/metadata.name` label the API server gives
/// every namespace (also for one the manifests do not declare).
fn namespace_labels(objects: &ClusterObjects, name: &str) -> BTreeMap<String, String> {
    let mut labels = objects
        .namespaces
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".to_string(), name.to_string());
    labels
}

/// Whether a Kubernetes label selector selects `labels`: every `matchLabels` pair, every
/// `matchExpressions` requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`; an unknown
/// operator selects nothing).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let listed = |v: &String| e.values.iter().flatten().any(|x| x == v);
        match e.operator.as_str() {
            "In" => value.is_some_and(listed),
            "NotIn" => !value.is_some_and(listed),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    pairs && expressions
}

/// A Gateway's listeners judged on their own (protocol, kinds, conflicts).
fn judge_gateway(gateway: &Gateway) -> GatewayView<'_> {
    let listeners = gateway
        .spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            // weir terminates TLS; it does not pass it through.
            let terminates = listener.protocol == "HTTP"
                || listener
                    .tls
                    .as_ref()
                    .is_none_or(|t| t.mode.as_deref().is_none_or(|m| m == "Terminate"));
            ListenerView {
                listener,
                usable: matches!(listener.protocol.as_str(), "HTTP" | "HTTPS")
                    && conflict(gateway, i).is_none()
                    && terminates,
                kinds: route_kinds(listener).0,
            }
        })
        .collect();
    GatewayView {
        gateway,
        namespace: gateway.metadata.namespace.as_deref().unwrap_or("default"),
        listeners,
    }
}

/// The route kinds `listener` takes, and the kinds it names that weir does not serve.
fn route_kinds(listener: &Listener) -> (Vec<RouteGroupKind>, Vec<String>) {
    let kind = |k: &str| RouteGroupKind {
        group: Some(GROUP.to_string()),
        kind: k.to_string(),
    };
    match listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.as_ref())
    {
        None => (ROUTE_KINDS.iter().map(|k| kind(k)).collect(), Vec::new()),
        Some(named) => {
            let mut supported = Vec::new();
            let mut invalid = Vec::new();
            for k in named {
                let ours = k.group.as_deref().is_none_or(|g| g == GROUP)
                    && ROUTE_KINDS.contains(&k.kind.as_str());
                if ours {
                    supported.push(kind(&k.kind));
                } else {
                    invalid.push(format!(
                        "{}/{}",
                        k.group.as_deref().unwrap_or(GROUP),
                        k.kind
                    ));
                }
            }
            (supported, invalid)
        }
    }
}

/// The conflict listener `i` of `gateway` is in, by the spec's reason: another listener on
/// its port with another protocol, or with its protocol and hostname.
fn conflict(gateway: &Gateway, i: usize) -> Option<&'static str> {
    let listeners = &gateway.spec.listeners;
    let this = listeners.get(i)?;
    let host = |l: &Listener| {
        l.hostname
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let others = listeners
        .iter()
        .enumerate()
        .filter(|(j, l)| *j != i && l.port == this.port);
    let mut reason = None;
    // HTTPS and TLS may share a port (told apart by the TLS server name).
    fn family(protocol: &str) -> &str {
        match protocol {
            "TLS" => "HTTPS",
            other => other,
        }
    }
    for (_, other) in others {
        if family(&other.protocol) != family(&this.protocol) {
            return Some("ProtocolConflict");
        }
        if host(other) == host(this) {
            reason = Some("HostnameConflict");
        }
    }
    reason
}

/// The status of each listener of `view`, and the TLS hosts of its HTTPS listeners with
/// hostnames (into `tls_hosts`).
fn listener_outcomes(
    objects: &ClusterObjects,
    view: &GatewayView,
    now_unix: i64,
    tls_hosts: &mut Vec<TlsHost>,
) -> GatewayOutcome {
    let gateway_ref = meta_ref("Gateway", &view.gateway.metadata);
    let mut listeners = Vec::new();
    for (i, lv) in view.listeners.iter().enumerate() {
        let listener = lv.listener;
        let (mut supported_kinds, invalid_kinds) = route_kinds(listener);
        if !matches!(listener.protocol.as_str(), "HTTP" | "HTTPS") {
            // A listener weir does not serve takes no route kind.
            supported_kinds.clear();
        }
        let conflicted = match conflict(view.gateway, i) {
            Some(reason) => Verdict::yes(
                reason,
                format!(
                    "another listener on port {} conflicts with this one",
                    listener.port
                ),
            ),
            None => Verdict::no("NoConflicts", "no conflicts"),
        };
        let accepted = if !matches!(listener.protocol.as_str(), "HTTP" | "HTTPS") {
            Verdict::no(
                "UnsupportedProtocol",
                format!(
                    "weir serves HTTP and HTTPS listeners, not {}",
                    listener.protocol
                ),
            )
        } else if conflicted.status {
            Verdict::no(conflicted.reason, conflicted.message.clone())
        } else if !lv.usable {
            Verdict::no(
                "UnsupportedValue",
                "weir terminates TLS; Passthrough is not served",
            )
        } else {
            Verdict::yes("Accepted", "accepted by weir")
        };
        let mut resolved = match invalid_kinds.is_empty() {
            true => Verdict::yes("ResolvedRefs", "every reference is resolved"),
            false => Verdict::no(
                "InvalidRouteKinds",
                format!(
                    "weir serves HTTPRoute and GRPCRoute, not {}",
                    invalid_kinds.join(", ")
                ),
            ),
        };
        let mut certificate_ok = true;
        if listener.protocol == "HTTPS" && lv.usable {
            match certificate(objects, view, listener, now_unix) {
                Ok(secret) => {
                    if let Some(host) = listener.hostname.as_deref().filter(|h| !h.is_empty()) {
                        tls_hosts.push(TlsHost {
                            host: host_match(host),
                            secret,
                            ingress: gateway_ref.clone(),
                        });
                    }
                }
                Err((reason, message)) => {
                    certificate_ok = false;
                    // The certificate's problem is the one that stops the listener.
                    resolved = Verdict::no(reason, message);
                }
            }
        }
        // Served when accepted, with a certificate if it needs one, for some route kind
        // (kinds weir does not serve only narrow `supportedKinds`).
        let programmed = match accepted.status && certificate_ok && !supported_kinds.is_empty() {
            true => Verdict::yes("Programmed", "served by weir"),
            false => Verdict::no("Invalid", "the listener is not valid"),
        };
        listeners.push(ListenerOutcome {
            name: listener.name.clone(),
            supported_kinds,
            attached_routes: 0,
            accepted,
            resolved_refs: resolved,
            conflicted,
            programmed,
        });
    }
    GatewayOutcome {
        gateway: gateway_ref,
        listeners,
    }
}

/// The Secret an HTTPS listener serves (its first `certificateRef`), checked: a Secret,
/// in the Gateway's namespace or granted by a ReferenceGrant there, holding a usable
/// certificate and key.
fn certificate(
    objects: &ClusterObjects,
    view: &GatewayView,
    listener: &Listener,
    now_unix: i64,
) -> Result<ObjectRef, (&'static str, String)> {
    let refs = listener
        .tls
        .as_ref()
        .map(|t| t.certificate_refs.as_slice())
        .unwrap_or_default();
    let Some(first) = refs.first() else {
        return Err((
            "InvalidCertificateRef",
            "an HTTPS listener needs tls.certificateRefs".to_string(),
        ));
    };
    if first.group.as_deref().is_some_and(|g| !g.is_empty())
        || first.kind.as_deref().is_some_and(|k| k != "Secret")
    {
        return Err((
            "InvalidCertificateRef",
            format!("certificateRef {:?} is not a Secret", first.name),
        ));
    }
    let namespace = first.namespace.as_deref().unwrap_or(view.namespace);
    if namespace != view.namespace
        && !granted(
            objects,
            "Gateway",
            view.namespace,
            namespace,
            "Secret",
            &first.name,
        )
    {
        return Err((
            "RefNotPermitted",
            format!(
                "Secret {namespace}/{} is in another namespace and no ReferenceGrant there allows Gateways of {:?} to refer to it",
                first.name, view.namespace
            ),
        ));
    }
    let secret = objects.secrets.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata.name.as_deref() == Some(first.name.as_str())
    });
    let Some(secret) = secret else {
        return Err((
            "InvalidCertificateRef",
            format!("Secret {namespace}/{} not found", first.name),
        ));
    };
    crate::tls::load_secret(secret, now_unix).map_err(|e| {
        (
            "InvalidCertificateRef",
            format!("Secret {namespace}/{}: {e}", first.name),
        )
    })?;
    Ok(ObjectRef {
        kind: "Secret",
        namespace: namespace.to_string(),
        name: first.name.clone(),
    })
}

/// An HTTPS listener without a hostname serves its certificate for the names its routes
/// got through it.
fn tls_for_route_hosts(
    view: &GatewayView,
    listener: usize,
    hosts: &[HostMatch],
    out: &mut Translated,
) {
    let Some(lv) = view.listeners.get(listener) else {
        return;
    };
    if lv
        .listener
        .hostname
        .as_deref()
        .is_some_and(|h| !h.is_empty())
    {
        return;
    }
    let Some(first) = lv
        .listener
        .tls
        .as_ref()
        .and_then(|t| t.certificate_refs.first())
    else {
        return;
    };
    let secret = ObjectRef {
        kind: "Secret",
        namespace: first
            .namespace
            .clone()
            .unwrap_or_else(|| view.namespace.to_string()),
        name: first.name.clone(),
    };
    for host in hosts {
        if matches!(host, HostMatch::Any) {
            continue;
        }
        out.tls_hosts.push(TlsHost {
            host: host.clone(),
            secret: secret.clone(),
            ingress: meta_ref("Gateway", &view.gateway.metadata),
        });
    }
}

fn host_match(name: &str) -> HostMatch {
    match name.strip_prefix("*.") {
        Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
        None => HostMatch::Exact(name.to_ascii_lowercase()),
    }
}

/// The hostnames a listener and a route share (the spec's intersection): the route's that
/// the listener's covers, the listener's where a route wildcard covers it; every host when
/// neither names one.
pub fn shared_hostnames(listener: Option<&str>, route: &[String]) -> Vec<HostMatch> {
    let listener = listener.filter(|l| !l.is_empty());
    if route.is_empty() {
        return vec![listener.map_or(HostMatch::Any, host_match)];
    }
    let Some(listener) = listener else {
        return route.iter().map(|h| host_match(h)).collect();
    };
    // `a` covers `b`: equal, or `a` a wildcard whose suffix `b` ends in below a label.
    let covers = |a: &str, b: &str| {
        a.eq_ignore_ascii_case(b)
            || a.strip_prefix('*').is_some_and(|suffix| {
                b.len() > suffix.len()
                    && b.to_ascii_lowercase()
                        .ends_with(&suffix.to_ascii_lowercase())
                    && !b.starts_with('.')
            })
    };
    let mut shared = Vec::new();
    for host in route {
        let name = if covers(listener, host) {
            host.as_str()
        } else if covers(host, listener) {
            listener
        } else {
            continue;
        };
        let host = host_match(name);
        if !shared.contains(&host) {
            shared.push(host);
        }
    }
    shared
}

/// A match's path and other conditions.
fn route_match(m: &HttpRouteMatch) -> Result<(PathMatch, RequestConditions), String> {
    let path = match &m.path {
        None => PathMatch::Prefix("/".to_string()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".to_string());
            if !value.starts_with('/') && p.kind.as_deref() != Some("RegularExpression") {
                return Err(format!("path {value:?} does not begin with /"));
            }
            match p.kind.as_deref().unwrap_or("PathPrefix") {
                "PathPrefix" => PathMatch::Prefix(value),
                "Exact" => PathMatch::Exact(value),
                "RegularExpression" => {
                    regex::Regex::new(&value)
                        .map_err(|e| format!("path regular expression {value:?}: {e}"))?;
                    PathMatch::Regex(value)
                }
                other => return Err(format!("path match type {other:?}")),
            }
        }
    };
    let value_match = |kind: Option<&str>, value: &str| -> Result<StringMatch, String> {
        match kind.unwrap_or("Exact") {
            "Exact" => Ok(StringMatch::Exact(value.to_string())),
            "RegularExpression" => {
                regex::Regex::new(value)
                    .map_err(|e| format!("regular expression {value:?}: {e}"))?;
                Ok(StringMatch::Regex(value.to_string()))
            }
            other => Err(format!("match type {other:?}")),
        }
    };
    let mut conditions = RequestConditions::default();
    for header in &m.headers {
        conditions.headers.push(ValueMatch {
            name: header.name.to_ascii_lowercase(),
            value: value_match(header.kind.as_deref(), &header.value)?,
        });
    }
    for query in &m.query_params {
        conditions.query.push(ValueMatch {
            name: query.name.clone(),
            value: value_match(query.kind.as_deref(), &query.value)?,
        });
    }
    conditions.method = m.method.clone();
    Ok((path, conditions))
}

/// A rule's backends, as far as they resolve.
struct Backends {
    /// The first usable backend (`None`: none is).
    first: Option<BackendKey>,
    /// All with their weights, when there are several (unresolved ones too).
    split: Vec<WeightedBackend>,
    /// The first one's protocol (its Service port's `appProtocol`).
    protocol: BackendProtocol,
    /// The first reference that did not resolve, by the spec's reason.
    problem: Option<(&'static str, String)>,
}

/// A rule's `backendRefs` resolved: Services of the route's namespace, or another's with a
/// ReferenceGrant. One that does not resolve is named in `problem` and keeps its weight in
/// the split as an unresolved backend (its share is answered 500).
fn backends(objects: &ClusterObjects, route: &RouteObject, refs: &[HttpBackendRef]) -> Backends {
    let mut out = Backends {
        first: None,
        split: Vec::new(),
        protocol: BackendProtocol::Http,
        problem: None,
    };
    for r in refs {
        let weight = r.weight.unwrap_or(1);
        match backend(objects, route, r) {
            Ok((key, protocol)) => {
                if weight == 0 {
                    continue;
                }
                if out.first.is_none() {
                    out.first = Some(key.clone());
                    out.protocol = protocol;
                }
                out.split.push(WeightedBackend {
                    backend: key,
                    weight,
                });
            }
            Err(problem) => {
                out.problem.get_or_insert(problem);
                // Its share of the requests is answered 500.
                if weight > 0 {
                    out.split.push(WeightedBackend {
                        backend: BackendKey::unresolved(route.namespace()),
                        weight,
                    });
                }
            }
        }
    }
    // One backend (or none resolved: the rule answers 500 itself) needs no split.
    if out.split.len() == 1 || out.first.is_none() {
        out.split.clear();
    }
    out
}

/// One `backendRef` as a backend of weir's model, with its protocol.
fn backend(
    objects: &ClusterObjects,
    route: &RouteObject,
    r: &HttpBackendRef,
) -> Result<(BackendKey, BackendProtocol), (&'static str, String)> {
    let route_ns = route.namespace();
    if r.group.as_deref().is_some_and(|g| !g.is_empty())
        || r.kind.as_deref().is_some_and(|k| k != "Service")
    {
        return Err((
            "InvalidKind",
            format!(
                "backendRef {:?} is a {}/{}, not a Service",
                r.name,
                r.group.as_deref().unwrap_or(""),
                r.kind.as_deref().unwrap_or("")
            ),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(route_ns);
    if ns != route_ns && !granted(objects, route.kind, route_ns, ns, "Service", &r.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "backendRef Service {ns}/{} is in another namespace and no ReferenceGrant there allows {}s of {route_ns:?} to refer to it",
                r.name, route.kind
            ),
        ));
    }
    let Some(port) = r.port else {
        return Err((
            "UnsupportedValue",
            format!("backendRef Service {:?} needs a port", r.name),
        ));
    };
    let service = objects.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(ns)
            && s.metadata.name.as_deref() == Some(r.name.as_str())
    });
    let Some(service) = service else {
        return Err((
            "BackendNotFound",
            format!("Service {ns}/{} not found", r.name),
        ));
    };
    // `appProtocol: kubernetes.io/h2c`: HTTP/2 without TLS (Gateway API's backend protocol).
    let h2c = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == i32::from(port)))
        .and_then(|p| p.app_protocol.as_deref())
        .is_some_and(|a| a == "kubernetes.io/h2c");
    Ok((
        BackendKey {
            namespace: ns.to_string(),
            service: r.name.clone(),
            port: port.to_string(),
            cluster_ip: false,
        },
        if h2c {
            BackendProtocol::H2c
        } else {
            BackendProtocol::Http
        },
    ))
}

/// Whether a ReferenceGrant in `target_ns` lets objects of `from_kind` in `from_ns` refer
/// to the `to_kind` (a core kind) named `name`.
fn granted(
    objects: &ClusterObjects,
    from_kind: &str,
    from_ns: &str,
    target_ns: &str,
    to_kind: &str,
    name: &str,
) -> bool {
    objects.reference_grants.iter().any(|grant| {
        grant.metadata.namespace.as_deref() == Some(target_ns)
            && grant
                .spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
            && grant.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
    })
}

/// Fields that frame a message or belong to one connection: a route may not set, add or
/// remove them (a changed `Content-Length` would let one request's body become another's).
const FRAMING_FIELDS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A header modifier's settings, checked: field names (not the framing ones), and values of
/// visible ASCII, spaces and tabs.
fn header_modifier(m: &HttpHeaderFilter) -> Result<HeaderModifier, String> {
    let field = |name: &str| -> Result<String, String> {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        let name = ok
            .then(|| name.to_ascii_lowercase())
            .ok_or_else(|| format!("{name:?} is not a field name"))?;
        match FRAMING_FIELDS.contains(&name.as_str()) {
            true => Err(format!(
                "{name:?} frames the message; a route may not change it"
            )),
            false => Ok(name),
        }
    };
    let pairs = |list: &[super::objects::HttpHeader]| -> Result<Vec<(String, String)>, String> {
        list.iter()
            .map(|h| {
                let printable = h
                    .value
                    .bytes()
                    .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
                if !printable {
                    return Err(format!(
                        "the value of {:?} has a control character or a byte outside ASCII",
                        h.name
                    ));
                }
                Ok((field(&h.name)?, h.value.clone()))
            })
            .collect()
    };
    Ok(HeaderModifier {
        set: pairs(&m.set)?,
        add: pairs(&m.add)?,
        remove: m
            .remove
            .iter()
            .map(|n| field(n))
            .collect::<Result<_, _>>()?,
    })
}

/// A rule's filters in the route model; `path` is the match's (a prefix replacement needs it).
fn filters(
    objects: &ClusterObjects,
    route: &RouteObject,
    filters: &[HttpRouteFilter],
    path: &PathMatch,
) -> Result<Vec<RouteFilter>, String> {
    let mut out = Vec::new();
    let path_modifier = |m: &HttpPathModifier| -> Result<PathRewrite, String> {
        match m.kind.as_str() {
            "ReplaceFullPath" => Ok(PathRewrite::FullPath {
                path: m
                    .replace_full_path
                    .clone()
                    .unwrap_or_else(|| "/".to_string()),
            }),
            "ReplacePrefixMatch" => match path {
                PathMatch::Prefix(prefix) => Ok(PathRewrite::PrefixMatch {
                    prefix: prefix.clone(),
                    replacement: m
                        .replace_prefix_match
                        .clone()
                        .unwrap_or_else(|| "/".to_string()),
                }),
                _ => Err("ReplacePrefixMatch needs a PathPrefix match".to_string()),
            },
            other => Err(format!("path modifier {other:?}")),
        }
    };
    let grpc_allows = |kind: &str| {
        matches!(
            kind,
            "RequestHeaderModifier" | "ResponseHeaderModifier" | "RequestMirror"
        )
    };
    for filter in filters {
        if route.grpc && !grpc_allows(&filter.kind) {
            return Err(format!(
                "filter {:?} is not one a GRPCRoute has",
                filter.kind
            ));
        }
        match filter.kind.as_str() {
            "RequestHeaderModifier" => {
                let m = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or("RequestHeaderModifier without its settings")?;
                out.push(RouteFilter::RequestHeaderModifier(header_modifier(m)?));
            }
            "ResponseHeaderModifier" => {
                let m = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or("ResponseHeaderModifier without its settings")?;
                out.push(RouteFilter::ResponseHeaderModifier(header_modifier(m)?));
            }
            "RequestMirror" => {
                let m = filter
                    .request_mirror
                    .as_ref()
                    .ok_or("RequestMirror without its settings")?;
                let (key, protocol) = backend(objects, route, &m.backend_ref)
                    .map_err(|(reason, message)| format!("RequestMirror: {reason}: {message}"))?;
                // Copies go over HTTP/1.1: a gRPC (h2c) server could not take them.
                if route.grpc || protocol == BackendProtocol::H2c {
                    return Err(format!(
                        "RequestMirror to {:?}: weir sends copies over HTTP/1.1, which an h2c (gRPC) backend does not take",
                        m.backend_ref.name
                    ));
                }
                let share_ppm = match (&m.percent, &m.fraction) {
                    (Some(percent), _) if *percent <= 100 => percent * 10_000,
                    (None, Some(f)) => {
                        let denominator = u64::from(f.denominator.unwrap_or(100));
                        if denominator == 0 || u64::from(f.numerator) > denominator {
                            return Err("RequestMirror fraction above 1".to_string());
                        }
                        u32::try_from(u64::from(f.numerator) * 1_000_000 / denominator)
                            .map_err(|_| "RequestMirror fraction")?
                    }
                    (None, None) => 1_000_000,
                    _ => return Err("RequestMirror percent above 100".to_string()),
                };
                out.push(RouteFilter::RequestMirror(RequestMirror {
                    url: String::new(),
                    host: None,
                    body: true,
                    backend: Some(key),
                    share_ppm,
                }));
            }
            "RequestRedirect" => {
                let r = filter
                    .request_redirect
                    .as_ref()
                    .ok_or("RequestRedirect without its settings")?;
                let status = r.status_code.unwrap_or(302);
                if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                    return Err(format!("redirect status {status}"));
                }
                if let Some(scheme) = r
                    .scheme
                    .as_deref()
                    .filter(|s| !matches!(*s, "http" | "https"))
                {
                    return Err(format!("redirect scheme {scheme:?}"));
                }
                if let Some(host) = &r.hostname {
                    crate::validate::parse_host(Some(host))?;
                }
                out.push(RouteFilter::RequestRedirect(Redirect {
                    status,
                    to: RedirectTo::Parts(RedirectParts {
                        scheme: r.scheme.clone(),
                        hostname: r.hostname.clone(),
                        port: r.port,
                        path: r.path.as_ref().map(path_modifier).transpose()?,
                    }),
                }));
            }
            "URLRewrite" => {
                let r = filter
                    .url_rewrite
                    .as_ref()
                    .ok_or("URLRewrite without its settings")?;
                if let Some(host) = &r.hostname {
                    crate::validate::parse_host(Some(host))?;
                }
                out.push(RouteFilter::UrlRewrite(UrlRewrite {
                    hostname: r.hostname.clone(),
                    path: r.path.as_ref().map(path_modifier).transpose()?,
                }));
            }
            other => return Err(format!("filter {other:?} is not supported by weir")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listener: Option<&str>, route: &[&str]) -> Vec<HostMatch> {
        let route: Vec<String> = route.iter().map(|s| s.to_string()).collect();
        shared_hostnames(listener, &route)
    }

    #[test]
    fn listener_and_route_hostnames_intersect_as_the_spec_says() {
        let exact = |h: &str| HostMatch::Exact(h.into());
        let suffix = |h: &str| HostMatch::Suffix(h.into());
        assert_eq!(hosts(None, &[]), [HostMatch::Any]);
        assert_eq!(hosts(Some("*.example.com"), &[]), [suffix("example.com")]);
        assert_eq!(hosts(None, &["a.example.com"]), [exact("a.example.com")]);
        // A wildcard listener takes the route's names below it, any depth.
        assert_eq!(
            hosts(
                Some("*.example.com"),
                &[
                    "a.example.com",
                    "b.c.example.com",
                    "example.com",
                    "other.org"
                ]
            ),
            [exact("a.example.com"), exact("b.c.example.com")]
        );
        // A wildcard route narrows to the listener's name.
        assert_eq!(
            hosts(Some("a.example.com"), &["*.example.com"]),
            [exact("a.example.com")]
        );
        assert_eq!(
            hosts(Some("a.example.com"), &["b.example.com"]),
            Vec::<HostMatch>::new()
        );
        // Two wildcards: the more specific.
        assert_eq!(
            hosts(Some("*.example.com"), &["*.foo.example.com"]),
            [suffix("foo.example.com")]
        );
    }

    #[test]
    fn label_selectors_select_as_kubernetes_does() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let labels: BTreeMap<String, String> = [("team", "shop"), ("tier", "web")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let requirement = |key: &str, operator: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        let with =
            |pairs: &[(&str, &str)], expressions: Vec<LabelSelectorRequirement>| LabelSelector {
                match_labels: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                match_expressions: Some(expressions),
            };
        assert!(
            selects(&with(&[], vec![]), &labels),
            "the empty selector selects all"
        );
        assert!(selects(&with(&[("team", "shop")], vec![]), &labels));
        assert!(!selects(&with(&[("team", "ads")], vec![]), &labels));
        assert!(selects(
            &with(&[], vec![requirement("tier", "In", &["web", "api"])]),
            &labels
        ));
        assert!(!selects(
            &with(&[], vec![requirement("tier", "NotIn", &["web"])]),
            &labels
        ));
        assert!(selects(
            &with(&[], vec![requirement("zone", "NotIn", &["a"])]),
            &labels
        ));
        assert!(selects(
            &with(&[], vec![requirement("team", "Exists", &[])]),
            &labels
        ));
        assert!(!selects(
            &with(&[], vec![requirement("team", "DoesNotExist", &[])]),
            &labels
        ));
        assert!(!selects(
            &with(&[], vec![requirement("team", "Matches", &["shop"])]),
            &labels
        ));
    }

    #[test]
    fn grpc_method_matches_become_paths() {
        let m = |kind: &str, service: Option<&str>, method: Option<&str>| {
            grpc_match(&GrpcRouteMatch {
                method: Some(super::super::objects::GrpcMethodMatch {
                    kind: Some(kind.to_string()),
                    service: service.map(str::to_string),
                    method: method.map(str::to_string),
                }),
                headers: Vec::new(),
            })
            .map(|m| {
                m.path
                    .map(|p| (p.kind.unwrap_or_default(), p.value.unwrap_or_default()))
            })
        };
        let path = |kind: &str, value: &str| Ok(Some((kind.to_string(), value.to_string())));
        assert_eq!(m("Exact", Some("a.B"), Some("C")), path("Exact", "/a.B/C"));
        assert_eq!(m("Exact", Some("a.B"), None), path("PathPrefix", "/a.B/"));
        assert_eq!(
            m("Exact", None, Some("C")),
            path("RegularExpression", "/[^/]+/C$")
        );
        assert_eq!(
            m("RegularExpression", Some("a\\..*"), None),
            path("RegularExpression", "/(?:a\\..*)/(?:[^/]+)$")
        );
        assert!(m("Exact", None, None).is_err());
    }
}
