//! Objects -> [`RoutingSnapshot`]: a pure function, shared by every source.
//!
//! Order of work: select the Ingresses of our class, validate each one as a whole (an
//! invalid Ingress is rejected alone, with a reason), lay out their rules in precedence
//! order (oldest Ingress first, as ingress-nginx does), then resolve every referenced
//! Service port to endpoints through Service ports and EndpointSlices.

use crate::endpoints::{endpoints_of, SERVICE_NAME_LABEL};
use crate::objects::{meta_ref, ClusterObjects};
use crate::snapshot::{
    Authentication, BackendKey, BackendSnapshot, Canary, CanaryRule, ErrorPages, HeaderModifier,
    HostMatch, ObjectRef, OverriddenAnnotation, PathMatch, PathRewrite, Redirect, RedirectTo,
    Rejection, RequestConditions, RouteFilter, RouteSnapshot, RoutingSnapshot,
    UnsupportedAnnotation, UrlRewrite, WeightedBackend,
};
use crate::tls::TlsHost;
use crate::validate::{check_strict_path, parse_bool_annotation, parse_host};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use weir_balancer::EndpointSpec;

/// `IngressClass.spec.controller` value that designates weir.
pub const CONTROLLER_NAME: &str = "weir.dev/ingress-controller";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const PATH_REGEX_ANNOTATION: &str = "weir.dev/path-regex";
const SSL_REDIRECT_ANNOTATION: &str = "weir.dev/ssl-redirect";

#[derive(Clone, Debug)]
pub struct TranslateOptions {
    /// The class this instance serves (`--ingress-class`).
    pub ingress_class: String,
    /// The `spec.controller` an IngressClass of that name must have (`--ingress-controller`):
    /// [`CONTROLLER_NAME`] by default; `k8s.io/ingress-nginx` takes over ingress-nginx's
    /// `nginx` class as it is.
    pub controller: String,
    /// Only objects of this namespace (`--watch-namespace`); `None` = all.
    pub watch_namespace: Option<String>,
    /// The current time (Unix seconds) for rejecting expired certificates; 0 checks none
    /// (golden tests, whose certificates must not start failing one day).
    pub now_unix: i64,
    /// `--default-certificate` (namespace, name): loaded like the Secrets Ingresses name.
    pub default_certificate: Option<(String, String)>,
    /// The `controllerName` of the GatewayClasses this instance serves
    /// (`--gateway-controller`; [`crate::gateway::CONTROLLER_NAME`] by default).
    pub gateway_controller: String,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            ingress_class: "weir".to_string(),
            controller: CONTROLLER_NAME.to_string(),
            watch_namespace: None,
            now_unix: 0,
            default_certificate: None,
            gateway_controller: crate::gateway::CONTROLLER_NAME.to_string(),
        }
    }
}

/// Builds the snapshot for `objects`. Never fails: problems become [`Rejection`]s or
/// backend `problem`s, and everything else is still routed.
pub fn translate(objects: &ClusterObjects, opts: &TranslateOptions) -> RoutingSnapshot {
    let mut snapshot = RoutingSnapshot::default();
    let in_scope = |ns: Option<&str>| match &opts.watch_namespace {
        None => true,
        Some(watched) => ns == Some(watched.as_str()),
    };

    let mut ours: Vec<&Ingress> = objects
        .ingresses
        .iter()
        .map(|ing| &**ing)
        .filter(|ing| in_scope(ing.metadata.namespace.as_deref()))
        .filter(|ing| is_our_class(ing, &objects.ingress_classes, opts))
        .collect();
    ours.sort_by(|a, b| {
        let key = |i: &Ingress| {
            (
                i.metadata.creation_timestamp.clone().map(|t| t.0),
                i.metadata.namespace.clone(),
                i.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });

    let mut claimed: HashMap<(HostMatch, PathMatch, RequestConditions), ObjectRef> = HashMap::new();
    let mut canaries = Vec::new();
    let mut www_routes: Vec<RouteSnapshot> = Vec::new();
    let mut tls_claimed: HashSet<HostMatch> = HashSet::new();
    for ingress in ours {
        let ingress_ref = meta_ref("Ingress", &ingress.metadata);
        let (routes, default_backend, tls_hosts, canary, www, auth_problems) =
            match ingress_routes(ingress, &ingress_ref, objects) {
                Ok(r) => r,
                Err(reason) => {
                    snapshot.rejected.push(Rejection {
                        object: ingress_ref,
                        reason,
                    });
                    continue;
                }
            };
        for reason in auth_problems {
            snapshot.auth_problems.push(Rejection {
                object: ingress_ref.clone(),
                reason,
            });
        }
        for annotation in crate::annotations::unsupported(ingress.metadata.annotations.as_ref()) {
            snapshot.unsupported.push(UnsupportedAnnotation {
                object: ingress_ref.clone(),
                annotation,
            });
        }
        for (annotation, by) in crate::nginx::overridden(ingress.metadata.annotations.as_ref()) {
            snapshot.overridden.push(OverriddenAnnotation {
                object: ingress_ref.clone(),
                annotation,
                by: by.to_string(),
            });
        }
        if let Some(rule) = canary {
            // A canary takes part in other Ingresses' routes, once they are all known.
            canaries.push((ingress_ref.clone(), routes, rule));
            snapshot.ingresses.push(ingress_ref);
            continue;
        }
        for route in routes {
            let key = (
                route.host.clone(),
                route.path.clone(),
                route.conditions.clone(),
            );
            if let Some(owner) = claimed.get(&key) {
                snapshot.rejected.push(Rejection {
                    object: ingress_ref.clone(),
                    reason: format!(
                        "rule {:?} {:?} is already defined by {owner}, which is older; this rule is ignored",
                        route.host, route.path
                    ),
                });
                continue;
            }
            claimed.insert(key, ingress_ref.clone());
            snapshot.routes.push(route);
        }
        www_routes.extend(www);
        if let Some(default) = default_backend {
            if snapshot.default_backend.is_none() {
                snapshot.default_backend = Some(default);
            }
        }
        for (host, secret) in tls_hosts {
            if tls_claimed.insert(host.clone()) {
                snapshot.tls_hosts.push(TlsHost {
                    host,
                    secret: ObjectRef {
                        kind: "Secret",
                        namespace: ingress_ref.namespace.clone(),
                        name: secret,
                    },
                    ingress: ingress_ref.clone(),
                });
            }
        }
        snapshot.ingresses.push(ingress_ref);
    }
    attach_canaries(&mut snapshot, canaries);
    // Gateway API's HTTPRoutes, after the Ingresses (an Ingress's rule wins a tie: it was
    // there before Gateway API was served by weir).
    let gateway =
        crate::gateway::translate::translate(objects, &opts.gateway_controller, opts.now_unix);
    for route in gateway.routes {
        if !in_scope(Some(route.ingress.namespace.as_str())) {
            continue;
        }
        let key = (
            route.host.clone(),
            route.path.clone(),
            route.conditions.clone(),
        );
        if let Some(owner) = claimed.get(&key) {
            if *owner != route.ingress {
                snapshot.rejected.push(Rejection {
                    object: route.ingress.clone(),
                    reason: format!(
                        "rule {:?} {:?} is already defined by {owner}, which takes precedence; this rule is ignored",
                        route.host, route.path
                    ),
                });
            }
            continue;
        }
        claimed.insert(key, route.ingress.clone());
        snapshot.routes.push(route);
    }
    // HTTPS listeners' certificates, for names no Ingress's TLS claimed first.
    for tls in gateway.tls_hosts {
        if in_scope(Some(tls.ingress.namespace.as_str())) && tls_claimed.insert(tls.host.clone()) {
            snapshot.tls_hosts.push(tls);
        }
    }
    snapshot.rejected.extend(gateway.rejected);
    snapshot.ingresses.extend(
        gateway
            .served
            .into_iter()
            .filter(|r| in_scope(Some(r.namespace.as_str()))),
    );
    let default_backend = snapshot.default_backend.as_ref().map(|d| d.backend.clone());
    for route in &mut snapshot.routes {
        if let Some(pages) = route.error_pages.as_mut().filter(|p| p.backend.is_none()) {
            pages.backend = default_backend.clone();
        }
    }
    // `from-to-www-redirect` names only hosts nothing else serves.
    for route in www_routes {
        if !snapshot.routes.iter().any(|r| r.host == route.host) {
            snapshot.routes.push(route);
        }
    }
    load_certificates(objects, opts, &mut snapshot);

    let keys: BTreeSet<BackendKey> = snapshot
        .routes
        .iter()
        .chain(snapshot.default_backend.iter())
        .flat_map(|r| r.backends().cloned())
        .collect();
    let index = ObjectIndex::new(objects);
    snapshot.backends = keys
        .into_iter()
        .map(|key| {
            let backend = index.resolve(&key);
            (key, backend)
        })
        .collect::<BTreeMap<_, _>>();
    snapshot
}

/// ingress-nginx's canaries: each rule of a canary Ingress joins the route of another Ingress
/// with the same host and path (oldest canary first; one canary per route, as ingress-nginx
/// allows). A canary rule with no such route is left out, with a reason.
fn attach_canaries(
    snapshot: &mut RoutingSnapshot,
    canaries: Vec<(ObjectRef, Vec<RouteSnapshot>, CanaryRule)>,
) {
    for (ingress, rules, rule) in canaries {
        for canary in rules {
            let main = snapshot
                .routes
                .iter_mut()
                .find(|r| r.host == canary.host && r.path.as_written() == canary.path.as_written());
            let reason = match main {
                Some(main) if main.canary.is_none() => {
                    main.canary = Some(Canary {
                        backend: canary.backend,
                        ingress: ingress.clone(),
                        rule: rule.clone(),
                    });
                    continue;
                }
                Some(main) => format!(
                    "canary rule {:?} {:?}: the route already has a canary ({}); this one is ignored",
                    canary.host,
                    canary.path,
                    main.canary.as_ref().map_or_else(String::new, |c| c.ingress.to_string())
                ),
                None => format!(
                    "canary rule {:?} {:?}: no Ingress serves this host and path; it is ignored",
                    canary.host, canary.path
                ),
            };
            snapshot.rejected.push(Rejection {
                object: ingress.clone(),
                reason,
            });
        }
    }
}

/// Class selection (docs/configuration.md): `spec.ingressClassName` naming our class (whose
/// IngressClass, if present, must name our controller), else the legacy annotation, else —
/// for class-less Ingresses — our IngressClass marked as the cluster default.
fn is_our_class(ingress: &Ingress, classes: &[Arc<IngressClass>], opts: &TranslateOptions) -> bool {
    let ours = opts.ingress_class.as_str();
    let class_named = |name: &str| {
        classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
    };
    let our_controller = |class: &IngressClass| {
        class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(opts.controller.as_str())
    };
    let spec_class = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    if let Some(name) = spec_class {
        if name != ours {
            return false;
        }
        return class_named(name).is_none_or(|class| our_controller(class));
    }
    if let Some(annotation) = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
    {
        return annotation == ours;
    }
    class_named(ours).is_some_and(|class| {
        our_controller(class)
            && class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .map(String::as_str)
                == Some("true")
    })
}

/// The certificates of every Secret a TLS host names: usable ones into
/// `snapshot.certificates`, the others (missing, wrong type, bad PEM, key mismatch,
/// expired) into `snapshot.rejected` with the reason. Only Secrets an Ingress of ours
/// names are looked at.
fn load_certificates(
    objects: &ClusterObjects,
    opts: &TranslateOptions,
    snapshot: &mut RoutingSnapshot,
) {
    let now_unix = opts.now_unix;
    let named: BTreeSet<(String, String)> = snapshot
        .tls_hosts
        .iter()
        .map(|t| (t.secret.namespace.clone(), t.secret.name.clone()))
        .chain(opts.default_certificate.clone())
        .collect();
    for (namespace, name) in named {
        let secret = objects.secrets.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace.as_str())
                && s.metadata.name.as_deref() == Some(name.as_str())
        });
        let loaded = match secret {
            None => Err("not found; its hosts get the default certificate".to_string()),
            Some(secret) => crate::tls::load_secret(secret, now_unix)
                .map_err(|e| format!("{e}; its hosts get the default certificate")),
        };
        match loaded {
            Ok(certificate) => {
                snapshot.certificates.insert((namespace, name), certificate);
            }
            Err(reason) => snapshot.rejected.push(Rejection {
                object: ObjectRef {
                    kind: "Secret",
                    namespace,
                    name,
                },
                reason,
            }),
        }
    }
}

/// Rules, default backend and TLS hosts (with their Secret names) of one Ingress, its
/// canary rule when it is a canary (ingress-nginx's `canary: "true"`), and the routes of its
/// `from-to-www-redirect` (taken only where nothing else serves their host).
type IngressRoutes = (
    Vec<RouteSnapshot>,
    Option<RouteSnapshot>,
    Vec<(HostMatch, String)>,
    Option<CanaryRule>,
    Vec<RouteSnapshot>,
    Vec<String>,
);

/// Every rule of one Ingress, or the first reason it is invalid.
fn ingress_routes(
    ingress: &Ingress,
    ingress_ref: &ObjectRef,
    objects: &ClusterObjects,
) -> Result<IngressRoutes, String> {
    let namespace = ingress_ref.namespace.as_str();
    let spec = ingress.spec.as_ref().ok_or("spec is missing")?;
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() && spec.default_backend.is_none() {
        return Err("spec needs rules or a defaultBackend".to_string());
    }
    let annotations = ingress.metadata.annotations.as_ref();
    let nginx = crate::nginx::read(annotations)?;
    let mut policy = crate::annotations::route_policy(annotations)?;
    nginx.policy.apply_to(&mut policy, annotations);
    let (auth, mut auth_problems) = crate::auth::read(annotations, namespace, &objects.secrets);
    if let Some(Authentication::Unusable(reason)) = &auth {
        auth_problems.push(format!(
            "{reason}; its routes answer 503 until this is fixed"
        ));
    }
    policy.auth = auth;
    let tls_hosts = crate::tls::ingress_tls_hosts(spec.tls.as_deref().unwrap_or_default())?;
    // `weir.dev/ssl-redirect` wins over ingress-nginx's `ssl-redirect` and
    // `force-ssl-redirect`; both `ssl-redirect`s default to true.
    let weir_ssl_redirect = annotations
        .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION))
        .map(String::as_str);
    let ssl_redirect = parse_bool_annotation(
        SSL_REDIRECT_ANNOTATION,
        weir_ssl_redirect,
        nginx.ssl_redirect.unwrap_or(true),
    )?;
    let force_ssl_redirect = nginx.force_ssl_redirect && weir_ssl_redirect.is_none();
    let redirects_to_https = |host: &HostMatch| {
        force_ssl_redirect
            || (ssl_redirect
                && tls_hosts
                    .iter()
                    .any(|(tls, _)| crate::tls::covers(tls, host)))
    };
    // The filters of a rule whose path, as a regular expression, is `pattern` (`None`: the
    // default backend, whose path is not the Ingress's to rewrite).
    let filters_for = |pattern: Option<&str>| -> Vec<RouteFilter> {
        let mut filters = Vec::new();
        // First: a preflight is answered before any redirect (as ingress-nginx's CORS
        // block runs before its `return`s and its https redirect).
        if let Some(cors) = &nginx.cors {
            filters.push(RouteFilter::Cors(cors.clone()));
        }
        if let Some(redirect) = &nginx.redirect {
            filters.push(RouteFilter::RequestRedirect(redirect.clone()));
        }
        if let Some(mirror) = &nginx.mirror {
            filters.push(RouteFilter::RequestMirror(mirror.clone()));
        }
        // As ingress-nginx: no rewrite where the target is the rule's own path.
        let path = nginx
            .rewrite_target
            .as_ref()
            .zip(pattern)
            .filter(|(replacement, pattern)| replacement.as_str() != *pattern)
            .map(|(replacement, pattern)| PathRewrite::RegexReplace {
                pattern: pattern.to_string(),
                replacement: replacement.clone(),
            });
        // ingress-nginx sends `X-Forwarded-Prefix` only with a rewrite.
        let prefix = nginx.x_forwarded_prefix.as_ref().filter(|_| path.is_some());
        if path.is_some() || nginx.upstream_vhost.is_some() {
            filters.push(RouteFilter::UrlRewrite(UrlRewrite {
                hostname: nginx.upstream_vhost.clone(),
                path,
            }));
        }
        if let Some(prefix) = prefix {
            filters.push(RouteFilter::RequestHeaderModifier(HeaderModifier {
                set: vec![("x-forwarded-prefix".to_string(), prefix.clone())],
                ..HeaderModifier::default()
            }));
        }
        filters
    };
    let path_regex = parse_bool_annotation(
        PATH_REGEX_ANNOTATION,
        annotations
            .and_then(|a| a.get(PATH_REGEX_ANNOTATION))
            .map(String::as_str),
        false,
    )?;

    let mut routes = Vec::new();
    for rule in rules {
        let host = parse_host(rule.host.as_deref())?;
        let Some(http) = &rule.http else { continue };
        for path in &http.paths {
            let written = path.path.as_deref().unwrap_or("");
            let matcher = match path.path_type.as_str() {
                // ingress-nginx's regex mode: every path is a regular expression, `Exact` ones
                // too (weir's own `path-regex` wins for `ImplementationSpecific` ones).
                "Exact" | "Prefix" | "ImplementationSpecific"
                    if nginx.regex_paths
                        && !(path_regex && path.path_type == "ImplementationSpecific") =>
                {
                    nginx_regex(written)?
                }
                "Exact" => {
                    check_strict_path(written)?;
                    PathMatch::Exact(written.to_string())
                }
                "Prefix" => {
                    check_strict_path(written)?;
                    PathMatch::Prefix(written.to_string())
                }
                "ImplementationSpecific" => implementation_specific(written, path_regex)?,
                "" => return Err(format!("path {written:?}: pathType is required")),
                other => {
                    return Err(format!(
                        "path {written:?}: pathType {other:?} is not Exact, Prefix or ImplementationSpecific"
                    ))
                }
            };
            let backend = backend_key(namespace, &path.backend)
                .map_err(|e| format!("path {written:?}: {e}"))?;
            // `rewrite-target` applies the rule's path as a regular expression, whatever its
            // pathType (ingress-nginx's `rewrite` directive).
            let pattern = if written.is_empty() { "/" } else { written };
            if nginx.rewrite_target.is_some() {
                check_nginx_regex(pattern).map_err(|e| format!("path {written:?}: {e}"))?;
            }
            routes.push(RouteSnapshot {
                ssl_redirect: redirects_to_https(&host),
                host: host.clone(),
                path: matcher,
                conditions: Default::default(),
                backend,
                split: Vec::new(),
                filters: filters_for(Some(pattern)),
                canary: None,
                fallback: None,
                error_pages: None,
                ingress: ingress_ref.clone(),
                policy: policy.clone(),
            });
        }
    }
    if let Some(weights) = &policy.backend_weights {
        routes = split_by_weight(routes, weights)?;
    }
    if let Some(app_root) = &nginx.app_root {
        routes = with_app_root(routes, app_root);
    }
    if let Some(service) = &nginx.default_backend {
        let fallback = BackendKey {
            namespace: namespace.to_string(),
            service: service.clone(),
            port: first_port(objects, namespace, service),
            cluster_ip: false,
        };
        for route in &mut routes {
            route.fallback = Some(fallback.clone());
        }
    }
    if !nginx.custom_http_errors.is_empty() {
        // The error backend: the `default-backend` Service (each route's fallback), else
        // the default backend, filled in once every Ingress is read.
        for route in &mut routes {
            route.error_pages = Some(ErrorPages {
                statuses: nginx.custom_http_errors.clone(),
                backend: route.fallback.clone(),
            });
        }
    }
    if nginx.service_upstream {
        for route in &mut routes {
            route.backend.cluster_ip = true;
            for member in &mut route.split {
                member.backend.cluster_ip = true;
            }
        }
    }
    let default_backend = match &spec.default_backend {
        None => None,
        Some(b) => Some(RouteSnapshot {
            host: HostMatch::Any,
            path: PathMatch::Prefix("/".to_string()),
            conditions: Default::default(),
            backend: BackendKey {
                cluster_ip: nginx.service_upstream,
                ..backend_key(namespace, b).map_err(|e| format!("defaultBackend: {e}"))?
            },
            split: Vec::new(),
            ssl_redirect: false,
            filters: filters_for(None),
            canary: None,
            fallback: None,
            error_pages: None,
            ingress: ingress_ref.clone(),
            policy: policy.clone(),
        }),
    };
    let www = match nginx.from_to_www {
        true => www_redirects(&routes),
        false => Vec::new(),
    };
    Ok((
        routes,
        default_backend,
        tls_hosts,
        nginx.canary,
        www,
        auth_problems,
    ))
}

/// The first port of a Service, as ingress-nginx's `default-backend` annotation uses it (by
/// name if it has one); empty when the Service is not there (its backend then reports that).
fn first_port(objects: &ClusterObjects, namespace: &str, service: &str) -> String {
    objects
        .services
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(service)
        })
        .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().cloned())
        .map(|p| {
            p.name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| p.port.to_string())
        })
        .unwrap_or_default()
}

/// ingress-nginx's `from-to-www-redirect`: for each exact host of the Ingress, the same name
/// with `www.` added (or taken off) answers a 308 to it, keeping the path and query.
fn www_redirects(routes: &[RouteSnapshot]) -> Vec<RouteSnapshot> {
    let mut redirects: Vec<RouteSnapshot> = Vec::new();
    for route in routes {
        let HostMatch::Exact(host) = &route.host else {
            continue;
        };
        let from = match host.strip_prefix("www.") {
            Some(bare) => bare.to_string(),
            None => format!("www.{host}"),
        };
        if redirects
            .iter()
            .any(|r| r.host == HostMatch::Exact(from.clone()))
        {
            continue;
        }
        let mut redirect = route.clone();
        redirect.host = HostMatch::Exact(from);
        redirect.path = PathMatch::Prefix("/".to_string());
        redirect.split = Vec::new();
        redirect.canary = None;
        redirect.fallback = None;
        redirect.error_pages = None;
        redirect.filters = vec![RouteFilter::RequestRedirect(Redirect {
            status: 308,
            to: RedirectTo::Host(host.clone()),
        })];
        redirects.push(redirect);
    }
    redirects
}

/// ingress-nginx's `app-root`: on each host of the Ingress's rules, a request for exactly `/`
/// gets a 302 to `app_root` (on the request's scheme and host). ingress-nginx checks it before
/// any of the host's locations, so the Ingress's own `Exact` rules for `/` never match and
/// are left out.
fn with_app_root(routes: Vec<RouteSnapshot>, app_root: &str) -> Vec<RouteSnapshot> {
    let root = PathMatch::Exact("/".to_string());
    let mut roots: Vec<RouteSnapshot> = Vec::new();
    for route in &routes {
        if roots.iter().any(|root| root.host == route.host) {
            continue;
        }
        let mut redirect = route.clone();
        redirect.path = root.clone();
        redirect.filters = vec![RouteFilter::RequestRedirect(Redirect {
            status: 302,
            to: RedirectTo::Path(app_root.to_string()),
        })];
        roots.push(redirect);
    }
    roots.extend(routes.into_iter().filter(|route| route.path != root));
    roots
}

/// `weir.dev/backend-weights`: rules of one Ingress with the same host and path but
/// different Services become one route whose traffic is split by the weights. A Service
/// the annotation does not name gets weight 0 (no traffic); a name that no split rule uses
/// is an error, as is a split where every weight is 0.
fn split_by_weight(
    routes: Vec<RouteSnapshot>,
    weights: &BTreeMap<String, u32>,
) -> Result<Vec<RouteSnapshot>, String> {
    let mut merged: Vec<RouteSnapshot> = Vec::new();
    let mut members: Vec<Vec<BackendKey>> = Vec::new();
    for route in routes {
        match merged
            .iter()
            .position(|r| r.host == route.host && r.path == route.path)
        {
            Some(i) => {
                if !members[i].contains(&route.backend) {
                    members[i].push(route.backend);
                }
            }
            None => {
                members.push(vec![route.backend.clone()]);
                merged.push(route);
            }
        }
    }
    let mut used = BTreeSet::new();
    for (route, backends) in merged.iter_mut().zip(members) {
        if backends.len() < 2 {
            continue;
        }
        let split: Vec<WeightedBackend> = backends
            .into_iter()
            .map(|backend| {
                used.insert(backend.service.clone());
                let weight = weights.get(&backend.service).copied().unwrap_or(0);
                WeightedBackend { backend, weight }
            })
            .filter(|w| w.weight > 0)
            .collect();
        let Some(first) = split.first() else {
            return Err(format!(
                "annotation weir.dev/backend-weights gives every Service of {:?} {:?} weight 0",
                route.host, route.path
            ));
        };
        route.backend = first.backend.clone();
        route.split = if split.len() > 1 { split } else { Vec::new() };
    }
    if let Some(unused) = weights.keys().find(|name| !used.contains(*name)) {
        return Err(format!(
            "annotation weir.dev/backend-weights names Service {unused:?}, but no host and path of this Ingress is split between it and another Service"
        ));
    }
    Ok(merged)
}

/// weir's documented meaning of `ImplementationSpecific`: Prefix, or with
/// `weir.dev/path-regex: "true"` a regular expression anchored at the path's start.
/// A path of an Ingress in ingress-nginx's regex mode: a case-insensitive regular expression
/// matched at the start of the path (an empty path is `/`).
fn nginx_regex(written: &str) -> Result<PathMatch, String> {
    let written = if written.is_empty() { "/" } else { written };
    if !written.starts_with('/') {
        return Err(format!("path {written:?} must begin with '/'"));
    }
    check_nginx_regex(written).map_err(|e| format!("path {written:?}: {e}"))?;
    Ok(PathMatch::RegexIgnoreCase(written.to_string()))
}

/// Whether `pattern` compiles as weir matches ingress-nginx's regex paths and rewrites
/// (Rust's `regex` syntax: no look-around or back-references, which PCRE has).
fn check_nginx_regex(pattern: &str) -> Result<(), String> {
    regex::Regex::new(&format!("^(?i:{pattern})"))
        .map(drop)
        .map_err(|e| {
            // The parser's message draws the pattern over several lines; its last says why.
            let text = e.to_string();
            let why = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            format!("not a regular expression weir can run ({})", why.trim())
        })
}

fn implementation_specific(written: &str, regex: bool) -> Result<PathMatch, String> {
    if written.is_empty() {
        return Ok(PathMatch::Prefix("/".to_string()));
    }
    if !written.starts_with('/') {
        return Err(format!("path {written:?} must begin with '/'"));
    }
    if regex {
        regex::Regex::new(&format!("^(?:{written})"))
            .map_err(|e| format!("path {written:?} is not a valid regular expression: {e}"))?;
        return Ok(PathMatch::Regex(written.to_string()));
    }
    check_strict_path(written)?;
    Ok(PathMatch::Prefix(written.to_string()))
}

fn backend_key(namespace: &str, backend: &IngressBackend) -> Result<BackendKey, String> {
    if backend.resource.is_some() {
        return Err(
            "resource backends are not supported by weir; use a service backend".to_string(),
        );
    }
    let service = backend.service.as_ref().ok_or("backend needs a service")?;
    if service.name.is_empty() {
        return Err("backend service name is empty".to_string());
    }
    let port = service
        .port
        .as_ref()
        .ok_or("backend service port is required")?;
    let port = match (&port.name, port.number) {
        (Some(_), Some(_)) => return Err("cannot set both port name & port number".to_string()),
        (Some(name), None) if !name.is_empty() => name.clone(),
        (None, Some(n)) if (1..=65535).contains(&n) => n.to_string(),
        (None, Some(n)) => return Err(format!("port number {n} is out of range")),
        _ => return Err("port name or number is required".to_string()),
    };
    Ok(BackendKey {
        namespace: namespace.to_string(),
        service: service.name.clone(),
        port,
        cluster_ip: false,
    })
}

/// Services and EndpointSlices by namespace and Service name.
struct ObjectIndex<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> ObjectIndex<'a> {
    fn new(objects: &'a ClusterObjects) -> Self {
        let mut services = HashMap::new();
        for svc in &objects.services {
            if let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) {
                services.insert((ns.as_str(), name.as_str()), &**svc);
            }
        }
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &objects.endpoint_slices {
            let ns = slice.metadata.namespace.as_deref();
            let owner = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(owner)) = (ns, owner) {
                slices
                    .entry((ns, owner.as_str()))
                    .or_default()
                    .push(&**slice);
            }
        }
        ObjectIndex { services, slices }
    }

    /// Ingress backend -> Service port -> EndpointSlice ports -> endpoints.
    fn resolve(&self, key: &BackendKey) -> BackendSnapshot {
        let problem = |p: String| BackendSnapshot {
            endpoints: Vec::new(),
            problem: Some(p),
        };
        // A Gateway API rule that only redirects has no backend: nothing to resolve.
        if key.service.is_empty() {
            return BackendSnapshot {
                endpoints: Vec::new(),
                problem: None,
            };
        }
        let Some(service) = self
            .services
            .get(&(key.namespace.as_str(), key.service.as_str()))
        else {
            return problem(format!(
                "Service {}/{} not found",
                key.namespace, key.service
            ));
        };
        let spec = service.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            return problem(format!(
                "Service {}/{} is of type ExternalName, which weir does not route to",
                key.namespace, key.service
            ));
        }
        let ports = spec.ports.unwrap_or_default();
        let service_port = match key.port.parse::<i32>() {
            Ok(number) => ports.iter().find(|p| p.port == number),
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(key.port.as_str())),
        };
        let Some(service_port) = service_port else {
            return problem(format!(
                "Service {}/{} has no port {}",
                key.namespace, key.service, key.port
            ));
        };
        if key.cluster_ip {
            // `service-upstream`: the Service's own address; kube-proxy (or a mesh) balances.
            let ip = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
            return match (ip, u16::try_from(service_port.port)) {
                (Some(ip), Ok(port)) => BackendSnapshot {
                    endpoints: vec![EndpointSpec::ready(SocketAddr::new(ip, port))],
                    problem: None,
                },
                _ => problem(format!(
                    "Service {}/{} has no cluster IP (headless?), which service-upstream needs",
                    key.namespace, key.service
                )),
            };
        }
        let slices = self
            .slices
            .get(&(key.namespace.as_str(), key.service.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        BackendSnapshot {
            endpoints: endpoints_of(service_port, slices, |_| None),
            problem: None,
        }
    }
}
