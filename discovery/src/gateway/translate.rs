//! Gateway API objects -> routes of weir's model (pure: no I/O), as the spec has them:
//! the GatewayClasses of weir's controller, their Gateways' HTTP and HTTPS listeners, and
//! the HTTPRoutes those listeners allow, with the hostnames each route and listener share.
//!
//! A route rule becomes one [`RouteSnapshot`] per hostname and match: its path (`Exact`,
//! `PathPrefix`, `RegularExpression`), header, query parameter and method conditions, its
//! `backendRefs` as weighted Services (another namespace's only with a ReferenceGrant), and its
//! filters: `RequestHeaderModifier` (`set`, `remove`), `RequestRedirect` (scheme, hostname,
//! port, path, status) and `URLRewrite` (hostname, path).
//!
//! What a route or parent cannot have is reported with the spec's reason names
//! (`NotAllowedByListeners`, `NoMatchingListenerHostname`, `BackendNotFound`,
//! `RefNotPermitted`, `InvalidKind`, `UnsupportedValue`) as a [`Rejection`] of the HTTPRoute;
//! its other parents and rules are still served.
//!
//! Must not: do I/O, or read Ingresses.

use super::objects::{
    Gateway, HttpBackendRef, HttpPathModifier, HttpRoute, HttpRouteFilter, HttpRouteMatch,
    Listener, ParentReference,
};
use crate::objects::{meta_ref, ClusterObjects};
use crate::snapshot::{
    BackendKey, HeaderModifier, HostMatch, ObjectRef, PathMatch, PathRewrite, Redirect,
    RedirectParts, RedirectTo, Rejection, RequestConditions, RouteFilter, RoutePolicy,
    RouteSnapshot, StringMatch, UrlRewrite, ValueMatch, WeightedBackend,
};
use std::collections::BTreeSet;

const GROUP: &str = "gateway.networking.k8s.io";

/// What the Gateway API objects make.
#[derive(Debug, Default)]
pub struct Translated {
    /// In precedence order (the oldest HTTPRoute first, then namespace/name).
    pub routes: Vec<RouteSnapshot>,
    /// HTTPRoutes with at least one accepted parent.
    pub served: Vec<ObjectRef>,
    /// What could not be served, by object, with the spec's reason first.
    pub rejected: Vec<Rejection>,
}

/// The routes of `objects`' HTTPRoutes on the Gateways of classes whose `controllerName`
/// is `controller`.
pub fn translate(objects: &ClusterObjects, controller: &str) -> Translated {
    let mut out = Translated::default();
    let classes: BTreeSet<&str> = objects
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == controller)
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    let gateways: Vec<&Gateway> = objects
        .gateways
        .iter()
        .map(|g| &**g)
        .filter(|g| classes.contains(g.spec.gateway_class_name.as_str()))
        .collect();
    if gateways.is_empty() {
        return out;
    }
    let mut routes: Vec<&HttpRoute> = objects.http_routes.iter().map(|r| &**r).collect();
    routes.sort_by_key(|r| {
        (
            r.metadata.creation_timestamp.clone().map(|t| t.0),
            r.metadata.namespace.clone(),
            r.metadata.name.clone(),
        )
    });
    for route in routes {
        let route_ref = meta_ref("HTTPRoute", &route.metadata);
        let mut reject = |reason: String| {
            out.rejected.push(Rejection {
                object: route_ref.clone(),
                reason,
            })
        };
        let mut hostnames: Vec<HostMatch> = Vec::new();
        let mut attached = false;
        for parent in &route.spec.parent_refs {
            match attach(route, parent, &gateways) {
                Ok(Some(hosts)) => {
                    attached = true;
                    for host in hosts {
                        if !hostnames.contains(&host) {
                            hostnames.push(host);
                        }
                    }
                }
                // Not one of weir's Gateways: another controller's business.
                Ok(None) => {}
                Err(reason) => reject(format!("parent {}: {reason}", parent.name)),
            }
        }
        if !attached {
            continue;
        }
        out.served.push(route_ref.clone());
        for (n, rule) in route.spec.rules.iter().enumerate() {
            let redirects = rule.filters.iter().any(|f| f.kind == "RequestRedirect");
            let found = match (redirects, rule.backend_refs.is_empty()) {
                // Answered by the redirect: no backend (an empty name resolves to nothing).
                (true, true) => Ok((
                    BackendKey {
                        namespace: route_ref.namespace.clone(),
                        service: String::new(),
                        port: String::new(),
                        cluster_ip: false,
                    },
                    Vec::new(),
                )),
                _ => backends(objects, route, &rule.backend_refs),
            };
            let (backend, split) = match found {
                Ok(found) => found,
                Err(reason) => {
                    reject(format!("rule {n}: {reason}"));
                    continue;
                }
            };
            let default_match = [HttpRouteMatch::default()];
            let matches = match rule.matches.is_empty() {
                true => &default_match[..],
                false => &rule.matches[..],
            };
            for m in matches {
                let (path, conditions) = match route_match(m) {
                    Ok(found) => found,
                    Err(reason) => {
                        reject(format!("rule {n}: UnsupportedValue: {reason}"));
                        continue;
                    }
                };
                let filters = match filters(&rule.filters, &path) {
                    Ok(filters) => filters,
                    Err(reason) => {
                        reject(format!("rule {n}: UnsupportedValue: {reason}"));
                        continue;
                    }
                };
                for host in &hostnames {
                    out.routes.push(RouteSnapshot {
                        host: host.clone(),
                        path: path.clone(),
                        conditions: conditions.clone(),
                        backend: backend.clone(),
                        split: split.clone(),
                        ssl_redirect: false,
                        filters: filters.clone(),
                        canary: None,
                        fallback: None,
                        error_pages: None,
                        ingress: route_ref.clone(),
                        policy: RoutePolicy::default(),
                    });
                }
            }
        }
    }
    out
}

/// The hostnames `route` gets through `parent`: `Ok(None)` when the parent is not one of
/// weir's Gateways, `Err` (the spec's reason) when no listener of it takes the route.
fn attach(
    route: &HttpRoute,
    parent: &ParentReference,
    gateways: &[&Gateway],
) -> Result<Option<Vec<HostMatch>>, String> {
    let route_ns = route.metadata.namespace.as_deref().unwrap_or("default");
    if parent.group.as_deref().is_some_and(|g| g != GROUP)
        || parent.kind.as_deref().is_some_and(|k| k != "Gateway")
    {
        return Ok(None);
    }
    let gateway_ns = parent.namespace.as_deref().unwrap_or(route_ns);
    let Some(gateway) = gateways.iter().find(|g| {
        g.metadata.name.as_deref() == Some(parent.name.as_str())
            && g.metadata.namespace.as_deref().unwrap_or("default") == gateway_ns
    }) else {
        return Ok(None);
    };
    let listeners: Vec<&Listener> = gateway
        .spec
        .listeners
        .iter()
        .filter(|l| parent.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|l| parent.port.is_none_or(|p| p == l.port))
        .filter(|l| matches!(l.protocol.as_str(), "HTTP" | "HTTPS"))
        .collect();
    let allowed: Vec<&&Listener> = listeners
        .iter()
        .filter(|l| allows(l, route_ns, gateway_ns))
        .collect();
    if allowed.is_empty() {
        return Err(format!(
            "NotAllowedByListeners: no HTTP or HTTPS listener of Gateway {gateway_ns}/{} {}takes HTTPRoutes of namespace {route_ns:?}",
            parent.name,
            parent.section_name.as_deref().map_or(String::new(), |s| format!("named {s:?} ")),
        ));
    }
    let mut hosts = Vec::new();
    for listener in allowed {
        for host in shared_hostnames(listener.hostname.as_deref(), &route.spec.hostnames) {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    if hosts.is_empty() {
        return Err(format!(
            "NoMatchingListenerHostname: none of the route's hostnames {:?} is one its listeners of Gateway {gateway_ns}/{} serve",
            route.spec.hostnames, parent.name
        ));
    }
    Ok(Some(hosts))
}

/// Whether `listener` (of a Gateway in `gateway_ns`) takes HTTPRoutes of `route_ns`.
fn allows(listener: &Listener, route_ns: &str, gateway_ns: &str) -> bool {
    let allowed = listener.allowed_routes.as_ref();
    let kinds_ok = allowed.and_then(|a| a.kinds.as_ref()).is_none_or(|kinds| {
        kinds
            .iter()
            .any(|k| k.kind == "HTTPRoute" && k.group.as_deref().is_none_or(|g| g == GROUP))
    });
    let from = allowed
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_deref())
        .unwrap_or("Same");
    // `Selector` needs the Namespaces' labels, which weir does not watch: refused (closed).
    let namespace_ok = match from {
        "All" => true,
        "Same" => route_ns == gateway_ns,
        _ => false,
    };
    kinds_ok && namespace_ok
}

/// The hostnames a listener and a route share (the spec's intersection): the route's that
/// the listener's covers, the listener's where a route wildcard covers it; every host when
/// neither names one.
pub fn shared_hostnames(listener: Option<&str>, route: &[String]) -> Vec<HostMatch> {
    let as_match = |name: &str| -> HostMatch {
        match name.strip_prefix("*.") {
            Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
            None => HostMatch::Exact(name.to_ascii_lowercase()),
        }
    };
    let listener = listener.filter(|l| !l.is_empty());
    if route.is_empty() {
        return vec![listener.map_or(HostMatch::Any, as_match)];
    }
    let Some(listener) = listener else {
        return route.iter().map(|h| as_match(h)).collect();
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
        let host = as_match(name);
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

/// A rule's backends: the first, and all with their weights when there are several. A
/// reference weir cannot follow is an error (the rule is left out, its requests 404 or go
/// to a less specific route).
fn backends(
    objects: &ClusterObjects,
    route: &HttpRoute,
    refs: &[HttpBackendRef],
) -> Result<(BackendKey, Vec<WeightedBackend>), String> {
    let route_ns = route.metadata.namespace.as_deref().unwrap_or("default");
    let mut weighted = Vec::new();
    for r in refs {
        if r.group.as_deref().is_some_and(|g| !g.is_empty())
            || r.kind.as_deref().is_some_and(|k| k != "Service")
        {
            return Err(format!(
                "InvalidKind: backendRef {:?} is a {}/{}, not a Service",
                r.name,
                r.group.as_deref().unwrap_or(""),
                r.kind.as_deref().unwrap_or("")
            ));
        }
        let ns = r.namespace.as_deref().unwrap_or(route_ns);
        if ns != route_ns && !granted(objects, route_ns, ns, &r.name) {
            return Err(format!(
                "RefNotPermitted: backendRef Service {ns}/{} is in another namespace and no ReferenceGrant there allows HTTPRoutes of {route_ns:?} to refer to it",
                r.name
            ));
        }
        let Some(port) = r.port else {
            return Err(format!(
                "UnsupportedValue: backendRef Service {:?} needs a port",
                r.name
            ));
        };
        let exists = objects.services.iter().any(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata.name.as_deref() == Some(r.name.as_str())
        });
        if !exists {
            return Err(format!(
                "BackendNotFound: Service {ns}/{} not found",
                r.name
            ));
        }
        let weight = r.weight.unwrap_or(1);
        if weight == 0 {
            continue;
        }
        weighted.push(WeightedBackend {
            backend: BackendKey {
                namespace: ns.to_string(),
                service: r.name.clone(),
                port: port.to_string(),
                cluster_ip: false,
            },
            weight,
        });
    }
    let first = weighted
        .first()
        .map(|w| w.backend.clone())
        .ok_or("UnsupportedValue: no backendRef with a weight above 0")?;
    if weighted.len() == 1 {
        weighted.clear();
    }
    Ok((first, weighted))
}

/// Whether a ReferenceGrant in `target_ns` lets HTTPRoutes of `from_ns` refer to Service
/// `name`.
fn granted(objects: &ClusterObjects, from_ns: &str, target_ns: &str, name: &str) -> bool {
    objects.reference_grants.iter().any(|grant| {
        grant.metadata.namespace.as_deref() == Some(target_ns)
            && grant
                .spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == "HTTPRoute" && f.namespace == from_ns)
            && grant.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
    })
}

/// A rule's filters in the route model; `path` is the match's (a prefix replacement needs it).
fn filters(filters: &[HttpRouteFilter], path: &PathMatch) -> Result<Vec<RouteFilter>, String> {
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
    for filter in filters {
        match filter.kind.as_str() {
            "RequestHeaderModifier" => {
                let m = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or("RequestHeaderModifier without its settings")?;
                if !m.add.is_empty() {
                    return Err("RequestHeaderModifier add is not supported by weir yet (set and remove are)".to_string());
                }
                let field = |name: &str| -> Result<String, String> {
                    let ok = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                    ok.then(|| name.to_ascii_lowercase())
                        .ok_or_else(|| format!("{name:?} is not a field name"))
                };
                let mut set = Vec::new();
                for h in &m.set {
                    if h.value.bytes().any(|b| b.is_ascii_control()) {
                        return Err(format!("the value of {:?} has a control character", h.name));
                    }
                    set.push((field(&h.name)?, h.value.clone()));
                }
                let remove = m
                    .remove
                    .iter()
                    .map(|n| field(n))
                    .collect::<Result<_, _>>()?;
                out.push(RouteFilter::RequestHeaderModifier(HeaderModifier {
                    set,
                    remove,
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
            other => return Err(format!("filter {other:?} is not supported by weir yet")),
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
}
