//! ingress-nginx's annotations (`nginx.ingress.kubernetes.io/*`) -> the route model, with
//! ingress-nginx's semantics (docs/migrating-from-ingress-nginx.md lists each one, and where
//! weir knowingly differs).
//!
//! What is read here: the redirects (`permanent-redirect` with `permanent-redirect-code`,
//! `temporal-redirect`, `app-root`), the https redirects (`ssl-redirect`,
//! `force-ssl-redirect`), regex paths and rewrites (`use-regex`, `rewrite-target`) and the
//! upstream request's fields (`upstream-vhost`, `x-forwarded-prefix`), the canaries
//! (`canary-*`), session affinity (`affinity`, `session-cookie-*`), source ranges
//! (`allowlist-source-range`, `denylist-source-range`), and the balancing,
//! timeout and upstream settings ([`NginxPolicy`]). Every other `nginx.ingress.kubernetes.io/*` annotation is reported
//! as unsupported ([`crate::annotations::unsupported`]), never silently ignored.
//!
//! Must not: read `weir.dev/*` annotations (those are [`crate::annotations`]'s; the
//! translation decides which wins), or do I/O.

use crate::snapshot::{
    is_cookie_attribute, AffinityCookie, AffinityMode, BackendProtocol, CanaryHeader, CanaryRule,
    Cors, GlobalRateLimit, HashKey, RateLimit, Redirect, RedirectTo, RequestMirror, RetryOn,
    RoutePolicy, SameSite, SessionAffinity, SourceAccess,
};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_balancer::Algorithm;

pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The annotations read here (names without [`PREFIX`]).
pub const KNOWN: &[&str] = &[
    "affinity",
    "allowlist-source-range",
    "affinity-mode",
    "app-root",
    "backend-protocol",
    "canary",
    "canary-by-cookie",
    "canary-by-header",
    "canary-by-header-pattern",
    "canary-by-header-value",
    "canary-weight",
    "canary-weight-total",
    "cors-allow-credentials",
    "cors-allow-headers",
    "cors-allow-methods",
    "cors-allow-origin",
    "cors-expose-headers",
    "cors-max-age",
    "custom-http-errors",
    "default-backend",
    "denylist-source-range",
    "enable-cors",
    "force-ssl-redirect",
    "from-to-www-redirect",
    "limit-allowlist",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-rpm",
    "limit-rps",
    "limit-whitelist",
    "global-rate-limit",
    "global-rate-limit-ignored-cidrs",
    "global-rate-limit-key",
    "global-rate-limit-window",
    "load-balance",
    "mirror-host",
    "mirror-request-body",
    "mirror-target",
    "mirror-uri",
    "permanent-redirect",
    "permanent-redirect-code",
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-next-upstream",
    "proxy-next-upstream-timeout",
    "proxy-next-upstream-tries",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "rewrite-target",
    "service-upstream",
    "session-cookie-change-on-failure",
    "session-cookie-domain",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-samesite",
    "session-cookie-secure",
    "ssl-redirect",
    "temporal-redirect",
    "upstream-hash-by",
    "upstream-vhost",
    "use-regex",
    "whitelist-source-range",
    "x-forwarded-prefix",
];

/// What an Ingress's ingress-nginx annotations ask for.
#[derive(Debug, Default, PartialEq)]
pub struct NginxAnnotations {
    /// `temporal-redirect` (302), else `permanent-redirect` (301 or
    /// `permanent-redirect-code`): every request of the Ingress's rules is answered with it.
    pub redirect: Option<Redirect>,
    /// `app-root`: a request for exactly `/` on one of the Ingress's hosts gets a 302 to
    /// this path.
    pub app_root: Option<String>,
    /// `ssl-redirect` (ingress-nginx's default: true).
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`: redirect plain-HTTP requests to https even for hosts the
    /// Ingress lists no TLS for.
    pub force_ssl_redirect: bool,
    /// `rewrite-target`: the upstream request's path and query, with `$1`..`$9` standing for
    /// the captures of the rule's path (see [`crate::snapshot::PathRewrite`]).
    pub rewrite_target: Option<String>,
    /// `use-regex`, or implied by `rewrite-target`: the Ingress's `Prefix` and
    /// `ImplementationSpecific` paths are case-insensitive regular expressions matched at the
    /// start of the path.
    pub regex_paths: bool,
    /// `upstream-vhost`: the `Host` of the upstream request.
    pub upstream_vhost: Option<String>,
    /// `x-forwarded-prefix`: an `X-Forwarded-Prefix` field with this value on the upstream
    /// request.
    pub x_forwarded_prefix: Option<String>,
    /// How the route balances and reaches its upstreams.
    pub policy: NginxPolicy,
    /// `default-backend`: a Service of the Ingress's namespace that takes the requests of
    /// its rules while their backends have no endpoint.
    pub default_backend: Option<String>,
    /// `enable-cors` with the `cors-*` annotations.
    pub cors: Option<Cors>,
    /// `mirror-target` (or `mirror-uri`) with `mirror-host` and `mirror-request-body`.
    pub mirror: Option<RequestMirror>,
    /// `custom-http-errors`: upstream statuses whose responses the error backend replaces.
    pub custom_http_errors: Vec<u16>,
    /// `service-upstream`: the Ingress's Services are reached at their cluster IPs.
    pub service_upstream: bool,
    /// `from-to-www-redirect`: `www.` + each host redirects to the host (and the host without
    /// `www.` to a `www.` host), where nothing else serves that name.
    pub from_to_www: bool,
    /// `canary: "true"`: the Ingress is a canary of the Ingresses with its hosts and paths,
    /// taking the requests this rule sends it.
    pub canary: Option<CanaryRule>,
}

/// The balancing and upstream settings of ingress-nginx's annotations; `None`: not set.
#[derive(Debug, Default, PartialEq)]
pub struct NginxPolicy {
    /// `load-balance` (`round_robin`, `ewma`), or consistent hashing for `upstream-hash-by`.
    pub algorithm: Option<Algorithm>,
    /// `upstream-hash-by`: where the hash key comes from.
    pub hash_key: Option<HashKey>,
    /// `proxy-connect-timeout`, `proxy-read-timeout`, `proxy-send-timeout` (seconds).
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    /// `proxy-next-upstream-tries`: tries in all, so retries are one fewer.
    pub retries: Option<u32>,
    /// `backend-protocol`: `HTTP`, `HTTPS` and `GRPCS` (TLS; HTTP/2 by ALPN when the upstream
    /// offers it), `GRPC` (HTTP/2 without TLS).
    pub backend_protocol: Option<BackendProtocol>,
    /// `proxy-body-size`: the largest request body, `Some(None)` for no limit (`0`).
    pub max_request_body: Option<Option<u64>>,
    /// `affinity: cookie` with `affinity-mode` and the `session-cookie-*` annotations.
    pub affinity: Option<SessionAffinity>,
    /// `proxy-next-upstream` and `proxy-next-upstream-timeout`.
    pub retry_on: Option<RetryOn>,
    /// `allowlist-source-range` (or `whitelist-source-range`) and `denylist-source-range`.
    pub source_access: Option<SourceAccess>,
    /// `limit-rps`, `limit-rpm`, `limit-connections`, `limit-burst-multiplier`,
    /// `limit-allowlist`.
    pub rate_limit: Option<RateLimit>,
    /// `global-rate-limit`, `-window`, `-key`, `-ignored-cidrs`.
    pub global_rate_limit: Option<GlobalRateLimit>,
}

impl NginxPolicy {
    /// Applies what is set to `policy`, except the settings whose `weir.dev/*` annotation
    /// the Ingress has (weir's own wins).
    pub fn apply_to(
        &self,
        policy: &mut RoutePolicy,
        annotations: Option<&BTreeMap<String, String>>,
    ) {
        let weir_sets =
            |name: &str| annotations.is_some_and(|a| a.contains_key(&format!("weir.dev/{name}")));
        if let Some(algorithm) = self.algorithm.filter(|_| !weir_sets("load-balancer")) {
            policy.pool.algorithm = algorithm;
        }
        if let Some(key) = self.hash_key.clone().filter(|_| !weir_sets("hash-key")) {
            policy.hash_key = key;
        }
        if let Some(t) = self
            .connect_timeout
            .filter(|_| !weir_sets("connect-timeout"))
        {
            policy.connect_timeout = t;
        }
        if let Some(t) = self.read_timeout.filter(|_| !weir_sets("read-timeout")) {
            policy.read_timeout = t;
        }
        if let Some(retries) = self.retries.filter(|_| !weir_sets("retries")) {
            policy.retries = retries;
        }
        if let Some(t) = self.write_timeout {
            policy.write_timeout = Some(t);
        }
        if let Some(max) = self.max_request_body {
            policy.max_request_body = max;
        }
        if let Some(affinity) = &self.affinity {
            policy.affinity = Some(affinity.clone());
        }
        if let Some(retry_on) = &self.retry_on {
            policy.retry_on = retry_on.clone();
        }
        if let Some(access) = &self.source_access {
            policy.source_access = Some(access.clone());
        }
        if let Some(limit) = &self.rate_limit {
            policy.rate_limit = Some(limit.clone());
        }
        if let Some(limit) = &self.global_rate_limit {
            policy.global_rate_limit = Some(limit.clone());
        }
        if let Some(protocol) = self
            .backend_protocol
            .filter(|_| !weir_sets("backend-protocol"))
        {
            policy.backend_protocol = protocol;
            // ingress-nginx does not verify an HTTPS backend's certificate unless asked
            // (`proxy-ssl-verify`, which weir does not read); weir's own annotation can.
            if protocol == BackendProtocol::Https && !weir_sets("backend-tls-verify") {
                policy.backend_tls_verify = false;
            }
        }
    }
}

/// The `weir.dev/*` annotation for the same setting as an ingress-nginx one, where there is
/// one (`weir migrate` says which wins).
pub fn weir_equivalent(name: &str) -> Option<&'static str> {
    Some(match name {
        "load-balance" => "weir.dev/load-balancer",
        "upstream-hash-by" => "weir.dev/hash-key",
        "proxy-connect-timeout" => "weir.dev/connect-timeout",
        "proxy-read-timeout" => "weir.dev/read-timeout",
        "proxy-next-upstream-tries" => "weir.dev/retries",
        "backend-protocol" => "weir.dev/backend-protocol",
        "ssl-redirect" | "force-ssl-redirect" => "weir.dev/ssl-redirect",
        _ => return None,
    })
}

/// The ingress-nginx annotations of an Ingress that its `weir.dev/*` ones override: each
/// with the one that wins ([`weir_equivalent`]).
pub fn overridden(annotations: Option<&BTreeMap<String, String>>) -> Vec<(String, &'static str)> {
    let Some(annotations) = annotations else {
        return Vec::new();
    };
    annotations
        .keys()
        .filter_map(|name| {
            let weir = weir_equivalent(name.strip_prefix(PREFIX)?)?;
            annotations.contains_key(weir).then(|| (name.clone(), weir))
        })
        .collect()
}

/// Reads an Ingress's ingress-nginx annotations; the first invalid one is the error, naming
/// it.
pub fn read(annotations: Option<&BTreeMap<String, String>>) -> Result<NginxAnnotations, String> {
    let get = |name: &str| {
        annotations
            .and_then(|a| a.get(&format!("{PREFIX}{name}")))
            .map(String::as_str)
    };
    let mut read = NginxAnnotations::default();
    // ingress-nginx applies the temporal redirect when both are set.
    if let Some(url) = get("temporal-redirect") {
        read.redirect = Some(Redirect {
            status: 302,
            to: RedirectTo::Url(redirect_url("temporal-redirect", url)?),
        });
    } else if let Some(url) = get("permanent-redirect") {
        let status = match get("permanent-redirect-code") {
            None => 301,
            Some(code) => redirect_code(code)?,
        };
        read.redirect = Some(Redirect {
            status,
            to: RedirectTo::Url(redirect_url("permanent-redirect", url)?),
        });
    }
    if let Some(path) = get("app-root") {
        read.app_root = Some(app_root(path)?);
    }
    if let Some(value) = get("ssl-redirect") {
        read.ssl_redirect = Some(boolean("ssl-redirect", value)?);
    }
    if let Some(value) = get("force-ssl-redirect") {
        read.force_ssl_redirect = boolean("force-ssl-redirect", value)?;
    }
    if let Some(target) = get("rewrite-target") {
        read.rewrite_target = Some(rewrite_target(target)?);
    }
    read.regex_paths = read.rewrite_target.is_some();
    if let Some(value) = get("use-regex") {
        read.regex_paths |= boolean("use-regex", value)?;
    }
    if let Some(host) = get("upstream-vhost") {
        read.upstream_vhost = Some(upstream_vhost(host)?);
    }
    if let Some(prefix) = get("x-forwarded-prefix") {
        read.x_forwarded_prefix = Some(field_value("x-forwarded-prefix", prefix)?);
    }
    if let Some(value) = get("from-to-www-redirect") {
        read.from_to_www = boolean("from-to-www-redirect", value)?;
    }
    if let Some(name) = get("default-backend") {
        crate::validate::check_dns_subdomain(name).map_err(|e| {
            format!("annotation {PREFIX}default-backend: {name:?} is not a Service name: {e}")
        })?;
        read.default_backend = Some(name.to_string());
    }
    if let Some(value) = get("enable-cors") {
        if boolean("enable-cors", value)? {
            read.cors = Some(cors(&get)?);
        }
    }
    if let Some(target) = get("mirror-target").or_else(|| get("mirror-uri")) {
        read.mirror = Some(mirror(target, &get)?);
    }
    if let Some(value) = get("custom-http-errors") {
        read.custom_http_errors = status_list("custom-http-errors", value)?;
    }
    if let Some(value) = get("service-upstream") {
        read.service_upstream = boolean("service-upstream", value)?;
    }
    if let Some(value) = get("canary") {
        if boolean("canary", value)? {
            read.canary = Some(canary_rule(&get)?);
        }
    }
    let policy = &mut read.policy;
    if let Some(value) = get("load-balance") {
        policy.algorithm = Some(match value.trim() {
            "round_robin" => Algorithm::RoundRobin,
            "ewma" => Algorithm::PeakEwma,
            _ => {
                return Err(format!(
                    "annotation {PREFIX}load-balance: {value:?} is not round_robin or ewma"
                ))
            }
        });
    }
    if let Some(value) = get("upstream-hash-by") {
        policy.hash_key = Some(hash_key(value)?);
        policy.algorithm = Some(Algorithm::ConsistentHash);
    }
    if let Some(value) = get("proxy-connect-timeout") {
        policy.connect_timeout = Some(seconds("proxy-connect-timeout", value)?);
    }
    if let Some(value) = get("proxy-read-timeout") {
        policy.read_timeout = Some(seconds("proxy-read-timeout", value)?);
    }
    if let Some(value) = get("proxy-send-timeout") {
        policy.write_timeout = Some(seconds("proxy-send-timeout", value)?);
    }
    if let Some(value) = get("proxy-next-upstream-tries") {
        let tries: u32 = value.trim().parse().map_err(|_| {
            format!("annotation {PREFIX}proxy-next-upstream-tries: {value:?} is not a whole number")
        })?;
        // 0 is "no limit" to nginx; weir retries at most 10 times.
        policy.retries = Some(if tries == 0 { 10 } else { (tries - 1).min(10) });
    }
    if let Some(value) = get("proxy-body-size") {
        let size = body_size(value)?;
        policy.max_request_body = Some((size > 0).then_some(size));
    }
    if let Some(value) = get("affinity") {
        policy.affinity = Some(affinity(value, &get)?);
    }
    // A list that does not parse rejects the Ingress: its routes are not served at all
    // rather than open to everyone.
    let ranges = |name: &str| -> Result<Vec<crate::cidr::Cidr>, String> {
        get(name).map_or(Ok(Vec::new()), |list| {
            crate::cidr::parse_list(list).map_err(|e| format!("annotation {PREFIX}{name}: {e}"))
        })
    };
    let allow = match get("allowlist-source-range") {
        Some(_) => ranges("allowlist-source-range")?,
        None => ranges("whitelist-source-range")?,
    };
    let deny = ranges("denylist-source-range")?;
    if !allow.is_empty() || !deny.is_empty() {
        policy.source_access = Some(SourceAccess { allow, deny });
    }
    let count = |name: &str| -> Result<Option<u32>, String> {
        get(name)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        format!("annotation {PREFIX}{name}: {v:?} is not a whole number above 0")
                    })
            })
            .transpose()
    };
    let (rps, rpm) = (count("limit-rps")?, count("limit-rpm")?);
    let connections = count("limit-connections")?;
    if rps.is_some() || rpm.is_some() || connections.is_some() {
        policy.rate_limit = Some(RateLimit {
            rps,
            rpm,
            connections,
            burst_multiplier: count("limit-burst-multiplier")?.unwrap_or(5),
            allowlist: match get("limit-allowlist") {
                Some(_) => ranges("limit-allowlist")?,
                None => ranges("limit-whitelist")?,
            },
        });
    }
    if let Some(value) = get("global-rate-limit") {
        let limit = value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!(
                    "annotation {PREFIX}global-rate-limit: {value:?} is not a whole number above 0"
                )
            })?;
        let window = get("global-rate-limit-window").ok_or_else(|| {
            format!("annotation {PREFIX}global-rate-limit needs {PREFIX}global-rate-limit-window (such as 1m)")
        })?;
        policy.global_rate_limit = Some(GlobalRateLimit {
            limit,
            window: nginx_duration("global-rate-limit-window", window)?,
            key: global_key(get("global-rate-limit-key").unwrap_or("$remote_addr"))?,
            ignored: ranges("global-rate-limit-ignored-cidrs")?,
        });
    }
    let next_timeout = get("proxy-next-upstream-timeout");
    if get("proxy-next-upstream").is_some() || next_timeout.is_some() {
        let mut retry_on = match get("proxy-next-upstream") {
            Some(value) => next_upstream(value)?,
            None => RetryOn::default(),
        };
        if let Some(value) = next_timeout {
            // 0: no limit, as nginx reads it.
            retry_on.within = match value.trim().trim_end_matches('s') {
                "0" => None,
                _ => Some(seconds("proxy-next-upstream-timeout", value)?),
            };
        }
        policy.retry_on = Some(retry_on);
    }
    if let Some(value) = get("backend-protocol") {
        policy.backend_protocol = Some(match value.trim().to_ascii_uppercase().as_str() {
            "HTTP" => BackendProtocol::Http,
            // TLS, HTTP/2 when the upstream offers it (a gRPC server does) by ALPN.
            "HTTPS" | "GRPCS" => BackendProtocol::Https,
            "GRPC" | "H2C" => BackendProtocol::H2c,
            _ => {
                return Err(format!(
                    "annotation {PREFIX}backend-protocol: {value:?} is not HTTP, HTTPS, GRPC or GRPCS (FCGI and AUTO_HTTP are not supported by weir)"
                ))
            }
        });
    }
    Ok(read)
}

/// `mirror-target` (or `mirror-uri`, which ingress-nginx also takes as a URL) with
/// `mirror-host` and `mirror-request-body`.
fn mirror<'a>(
    target: &str,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<RequestMirror, String> {
    let target = target.trim();
    let bad = |why: &str| format!("annotation {PREFIX}mirror-target: {target:?} {why}");
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .ok_or_else(|| {
            bad("is not an http:// or https:// URL (a path names an nginx location, which weir has not)")
        })?;
    let authority = rest.split(['/', '?', '$']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("has no host (or has user information)"));
    }
    if !target.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        return Err(bad(
            "is not visible ASCII without quotes (a URL escapes the rest)",
        ));
    }
    // `$request_uri` is the one variable, and only at the end (as ingress-nginx documents).
    let without = target.strip_suffix("$request_uri").unwrap_or(target);
    if without.contains('$') {
        return Err(bad("uses a variable other than a final $request_uri"));
    }
    let host = match get("mirror-host") {
        Some(host) => {
            Some(upstream_vhost(host).map_err(|e| e.replace("upstream-vhost", "mirror-host"))?)
        }
        None => None,
    };
    let body = match get("mirror-request-body").map(str::trim) {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return Err(format!(
                "annotation {PREFIX}mirror-request-body: {other:?} is not on or off"
            ))
        }
    };
    Ok(RequestMirror {
        url: target.to_string(),
        host,
        body,
        backend: None,
        share_ppm: 1_000_000,
    })
}

/// `affinity` (only `cookie`) with `affinity-mode` and the `session-cookie-*` annotations,
/// which mean nothing without it (as in ingress-nginx).
fn affinity<'a>(
    value: &str,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<SessionAffinity, String> {
    if !value.trim().eq_ignore_ascii_case("cookie") {
        return Err(format!(
            "annotation {PREFIX}affinity: {value:?} is not cookie (the only affinity ingress-nginx and weir have)"
        ));
    }
    let mode = match get("affinity-mode").map(str::trim) {
        None | Some("balanced") => AffinityMode::Balanced,
        Some("persistent") => AffinityMode::Persistent,
        Some(other) => {
            return Err(format!(
                "annotation {PREFIX}affinity-mode: {other:?} is not balanced or persistent"
            ))
        }
    };
    let attribute = |name: &str, value: &str| match is_cookie_attribute(value) {
        true => Ok(value.to_string()),
        false => Err(format!(
            "annotation {PREFIX}{name}: {value:?} is not a cookie attribute value"
        )),
    };
    let name = match get("session-cookie-name") {
        None => "INGRESSCOOKIE".to_string(),
        Some(name) => token("session-cookie-name", name)?,
    };
    let path = match get("session-cookie-path") {
        Some(path) if !path.starts_with('/') => {
            return Err(format!(
                "annotation {PREFIX}session-cookie-path: {path:?} does not start with /"
            ))
        }
        Some(path) => Some(attribute("session-cookie-path", path)?),
        None => None,
    };
    let domain = match get("session-cookie-domain") {
        Some(domain) => Some(attribute("session-cookie-domain", domain)?),
        None => None,
    };
    // At most ten years: a cookie date must stay one an HTTP date can write.
    let whole = |name: &str| -> Result<Option<u64>, String> {
        get(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s <= 10 * 365 * 86_400)
                    .ok_or_else(|| {
                        format!(
                            "annotation {PREFIX}{name}: {v:?} is not a whole number of seconds up to ten years"
                        )
                    })
            })
            .transpose()
    };
    let same_site = match get("session-cookie-samesite").map(str::trim) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("strict") => Some(SameSite::Strict),
        Some(v) if v.eq_ignore_ascii_case("lax") => Some(SameSite::Lax),
        Some(v) if v.eq_ignore_ascii_case("none") => Some(SameSite::None),
        Some(v) => {
            return Err(format!(
                "annotation {PREFIX}session-cookie-samesite: {v:?} is not None, Lax or Strict"
            ))
        }
    };
    let flag = |name: &str| get(name).map_or(Ok(false), |v| boolean(name, v));
    Ok(SessionAffinity {
        mode,
        cookie: AffinityCookie {
            name,
            path,
            domain,
            max_age: whole("session-cookie-max-age")?,
            expires: whole("session-cookie-expires")?,
            same_site,
            secure: flag("session-cookie-secure")?,
        },
        change_on_failure: flag("session-cookie-change-on-failure")?,
    })
}

/// `proxy-next-upstream`: nginx's `proxy_next_upstream` conditions, separated by spaces.
fn next_upstream(value: &str) -> Result<RetryOn, String> {
    let mut retry_on = RetryOn {
        errors: false,
        timeouts: false,
        ..RetryOn::default()
    };
    for token in value.split_whitespace() {
        match token {
            "error" | "invalid_header" => retry_on.errors = true,
            "timeout" => retry_on.timeouts = true,
            "non_idempotent" => retry_on.non_idempotent = true,
            "off" => {}
            _ => {
                let status = token
                    .strip_prefix("http_")
                    .and_then(|code| code.parse::<u16>().ok())
                    .filter(|code| [500, 502, 503, 504, 403, 404, 429].contains(code))
                    .ok_or_else(|| {
                        format!(
                            "annotation {PREFIX}proxy-next-upstream: {token:?} is not one of error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent, off"
                        )
                    })?;
                if !retry_on.statuses.contains(&status) {
                    retry_on.statuses.push(status);
                }
            }
        }
    }
    if value.split_whitespace().any(|t| t == "off") {
        // nginx: `off` turns every condition off, whatever else is listed.
        retry_on = RetryOn {
            errors: false,
            timeouts: false,
            ..RetryOn::default()
        };
    }
    retry_on.statuses.sort_unstable();
    Ok(retry_on)
}

/// The `canary-*` annotations of a canary Ingress.
fn canary_rule<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<CanaryRule, String> {
    let number = |name: &str, value: &str| {
        value
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("annotation {PREFIX}{name}: {value:?} is not a whole number"))
    };
    let weight_total = match get("canary-weight-total") {
        Some(v) => number("canary-weight-total", v)?,
        None => 100,
    };
    if weight_total == 0 {
        return Err(format!(
            "annotation {PREFIX}canary-weight-total: must be above 0"
        ));
    }
    let weight = match get("canary-weight") {
        Some(v) => number("canary-weight", v)?,
        None => 0,
    };
    if weight > weight_total {
        return Err(format!(
            "annotation {PREFIX}canary-weight: {weight} is over canary-weight-total ({weight_total})"
        ));
    }
    let header = match get("canary-by-header") {
        None => None,
        Some(name) => {
            let name = token("canary-by-header", name)?.to_ascii_lowercase();
            // As ingress-nginx: a value wins over a pattern; either replaces always/never.
            let decides = if let Some(value) =
                get("canary-by-header-value").filter(|v| !v.is_empty())
            {
                CanaryHeader::Value(value.to_string())
            } else if let Some(pattern) = get("canary-by-header-pattern").filter(|v| !v.is_empty())
            {
                regex::Regex::new(pattern).map_err(|e| {
                    let text = e.to_string();
                    let why = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
                    format!(
                        "annotation {PREFIX}canary-by-header-pattern: {pattern:?} is not a regular expression weir can run ({})",
                        why.trim()
                    )
                })?;
                CanaryHeader::Pattern(pattern.to_string())
            } else {
                CanaryHeader::AlwaysNever
            };
            Some((name, decides))
        }
    };
    let cookie = match get("canary-by-cookie") {
        Some(name) => Some(token("canary-by-cookie", name)?),
        None => None,
    };
    Ok(CanaryRule {
        header,
        cookie,
        weight,
        weight_total,
    })
}

/// The `cors-*` annotations, with ingress-nginx's defaults.
fn cors<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Cors, String> {
    // A list of tokens (methods, field names) or `*`, as it goes into a response field.
    let list = |name: &str, default: &str| -> Result<String, String> {
        let value = get(name).unwrap_or(default).trim();
        let ok = value.split(',').map(str::trim).all(|item| {
            item == "*"
                || (!item.is_empty()
                    && item
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'+^`|~".contains(&b)))
        });
        match ok || (value.is_empty() && name == "cors-expose-headers") {
            true => Ok(value.to_string()),
            false => Err(format!(
                "annotation {PREFIX}{name}: {value:?} is not a comma-separated list of names"
            )),
        }
    };
    let mut allow_origins = Vec::new();
    for origin in get("cors-allow-origin")
        .unwrap_or("*")
        .split(',')
        .map(str::trim)
    {
        if origin.is_empty() {
            continue;
        }
        allow_origins.push(cors_origin(origin)?);
    }
    if allow_origins.is_empty() {
        allow_origins.push("*".to_string());
    }
    let max_age = match get("cors-max-age") {
        None => 1_728_000,
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            format!("annotation {PREFIX}cors-max-age: {v:?} is not a whole number of seconds")
        })?,
    };
    Ok(Cors {
        allow_credentials: match get("cors-allow-credentials") {
            None => true,
            Some(v) => boolean("cors-allow-credentials", v)?,
        },
        allow_methods: list("cors-allow-methods", "GET, PUT, POST, DELETE, PATCH, OPTIONS")?,
        allow_headers: list(
            "cors-allow-headers",
            "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization",
        )?,
        expose_headers: list("cors-expose-headers", "")?,
        max_age,
        allow_origins,
    })
}

/// One origin of `cors-allow-origin`: `*`, or `http(s)://host[:port]` whose host may begin
/// with `*.`; lowercase.
fn cors_origin(origin: &str) -> Result<String, String> {
    let lower = origin.to_ascii_lowercase();
    if lower == "*" {
        return Ok(lower);
    }
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let ok = rest.is_some_and(|host_port| {
        let host = host_port.strip_prefix("*.").unwrap_or(host_port);
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    match ok {
        true => Ok(lower),
        false => Err(format!(
            "annotation {PREFIX}cors-allow-origin: {origin:?} is not *, or an origin like https://app.example.com or https://*.example.com"
        )),
    }
}

/// `value` as a token (RFC 9110 §5.6.2): what a field or cookie name may be.
fn token(name: &str, value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b));
    match ok {
        true => Ok(value.to_string()),
        false => Err(format!(
            "annotation {PREFIX}{name}: {value:?} is not a field or cookie name"
        )),
    }
}

/// A comma-separated list of HTTP statuses from 400 to 599, sorted, without repeats.
fn status_list(name: &str, value: &str) -> Result<Vec<u16>, String> {
    let mut statuses = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u16>()
                .ok()
                .filter(|code| (400..=599).contains(code))
                .ok_or_else(|| {
                    format!(
                        "annotation {PREFIX}{name}: {s:?} is not an HTTP status from 400 to 599"
                    )
                })
        })
        .collect::<Result<Vec<u16>, String>>()?;
    statuses.sort_unstable();
    statuses.dedup();
    Ok(statuses)
}

/// `proxy-body-size` as nginx's `client_max_body_size` reads it: bytes, or a number with `k`,
/// `m` or `g` (powers of 1024); `0` is no limit.
fn body_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (digits, unit) = match value.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&value[..at], c.to_ascii_lowercase()),
        _ => (value, 'b'),
    };
    let scale: u64 = match unit {
        'b' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| {
            format!(
                "annotation {PREFIX}proxy-body-size: {value:?} is not a size like 8m, 512k or 0"
            )
        })
}

/// A timeout as ingress-nginx takes it: whole seconds (`"30"`), or with the unit `s`.
fn seconds(name: &str, value: &str) -> Result<Duration, String> {
    let digits = value.trim().trim_end_matches('s');
    match digits.parse::<u64>() {
        Ok(n) if n > 0 && n <= 86_400 => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "annotation {PREFIX}{name}: {value:?} is not a number of seconds from 1 to 86400"
        )),
    }
}

/// A duration as nginx writes one: a number with `s`, `m`, `h` or `d` (seconds without),
/// from 1 s to a day.
fn nginx_duration(name: &str, value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let (digits, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => v.split_at(at),
        None => (v, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if scale > 0 && n > 0 && n * scale <= 86_400 => Ok(Duration::from_secs(n * scale)),
        _ => Err(format!(
            "annotation {PREFIX}{name}: {value:?} is not a duration like 30s, 1m or 1h (at most a day)"
        )),
    }
}

/// `global-rate-limit-key`: text with the nginx variables weir fills.
fn global_key(value: &str) -> Result<String, String> {
    let value = value.trim();
    let bad = |why: &str| format!("annotation {PREFIX}global-rate-limit-key: {value:?} {why}");
    if value.is_empty() || value.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("is empty or has a control character"));
    }
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        let known = matches!(name, "remote_addr" | "binary_remote_addr" | "host" | "uri")
            || name.strip_prefix("http_").is_some_and(|f| !f.is_empty());
        if !known {
            return Err(bad(&format!(
                "uses ${name}; weir fills $remote_addr, $host, $uri and $http_<field>"
            )));
        }
        rest = &rest[name_len..];
    }
    Ok(value.to_string())
}

/// `upstream-hash-by`: the one nginx variable weir's consistent hash can take the key from.
fn hash_key(value: &str) -> Result<HashKey, String> {
    let bad = || {
        format!(
            "annotation {PREFIX}upstream-hash-by: {value:?} is not one of $request_uri, $uri, $remote_addr, $binary_remote_addr, $http_NAME, $cookie_NAME, $arg_NAME"
        )
    };
    let variable = value.trim().strip_prefix('$').ok_or_else(bad)?;
    let named = |prefix: &str| {
        variable.strip_prefix(prefix).filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
    };
    Ok(match variable {
        "request_uri" | "uri" => HashKey::Path,
        "remote_addr" | "binary_remote_addr" => HashKey::ClientIp,
        _ => {
            if let Some(header) = named("http_") {
                HashKey::Header(header.replace('_', "-").to_ascii_lowercase())
            } else if let Some(cookie) = named("cookie_") {
                HashKey::Cookie(cookie.to_string())
            } else if let Some(arg) = named("arg_") {
                HashKey::Query(arg.to_string())
            } else {
                return Err(bad());
            }
        }
    })
}

/// `rewrite-target`: a path (and query) of visible ASCII, where `$1`..`$9` stand for the
/// captures of the rule's path. Other nginx variables (`$host`, `$request_uri`) are not
/// expanded by weir and are refused.
fn rewrite_target(value: &str) -> Result<String, String> {
    let bad = |why: &str| format!("annotation {PREFIX}rewrite-target: {value:?} {why}");
    if value.is_empty() || value.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(bad("must be a path of visible ASCII"));
    }
    if !value.starts_with(['/', '$']) {
        return Err(bad("must start with / or a capture ($1)"));
    }
    // What a request target may hold as written (RFC 3986's unreserved, sub-delims, `:@/?%`).
    let target_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
    if let Some(b) = value.bytes().find(|b| !target_byte(*b)) {
        return Err(bad(&format!(
            "holds a byte a request target cannot carry ({:?})",
            b as char
        )));
    }
    let bytes = value.as_bytes();
    for (at, b) in bytes.iter().enumerate() {
        if *b == b'$' && !bytes.get(at + 1).is_some_and(|d| (b'1'..=b'9').contains(d)) {
            return Err(bad(
                "uses an nginx variable other than $1-$9, which weir does not expand",
            ));
        }
    }
    Ok(value.to_string())
}

/// `upstream-vhost`: a host name, or address, with an optional port.
fn upstream_vhost(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !ok {
        return Err(format!(
            "annotation {PREFIX}upstream-vhost: {value:?} is not a host name (nginx variables are not expanded by weir)"
        ));
    }
    Ok(value.to_string())
}

/// A value that becomes a request field as written: visible ASCII and spaces, no nginx
/// variables.
fn field_value(name: &str, value: &str) -> Result<String, String> {
    if value.trim().is_empty()
        || value.bytes().any(|b| !(0x20..=0x7e).contains(&b))
        || value.contains('$')
    {
        return Err(format!(
            "annotation {PREFIX}{name}: {value:?} must be visible ASCII without nginx variables"
        ));
    }
    Ok(value.trim().to_string())
}

/// A boolean as ingress-nginx reads one (Go's `strconv.ParseBool`).
fn boolean(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(false),
        _ => Err(format!(
            "annotation {PREFIX}{name}: {value:?} is not \"true\" or \"false\""
        )),
    }
}

/// `permanent-redirect-code`: a redirect status, 300 to 308. ingress-nginx silently uses
/// 301 for a number outside that range; weir refuses it (docs/migrating-from-ingress-nginx.md).
fn redirect_code(value: &str) -> Result<u16, String> {
    let name = "permanent-redirect-code";
    let code: u16 = value
        .trim()
        .parse()
        .map_err(|_| format!("annotation {PREFIX}{name}: {value:?} is not a number"))?;
    if !(300..=308).contains(&code) || code == 306 {
        return Err(format!(
            "annotation {PREFIX}{name}: {code} is not a redirect status (300-305, 307, 308)"
        ));
    }
    Ok(code)
}

/// A redirect's target as ingress-nginx accepts it: an absolute `http` or `https` URL with a
/// host. It becomes a `Location` field as written, so it must be visible ASCII; nginx
/// variables (`$request_uri`) are not expanded by weir and are refused rather than sent
/// literally.
fn redirect_url(name: &str, value: &str) -> Result<String, String> {
    let bad = |why: &str| format!("annotation {PREFIX}{name}: {value:?} {why}");
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| bad("is not an http:// or https:// URL"))?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if host_end == 0 {
        return Err(bad("has no host"));
    }
    if let Some(b) = value.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(bad(&format!(
            "holds a byte a Location field cannot carry ({b:#04x})"
        )));
    }
    if value.contains('$') {
        return Err(bad("uses an nginx variable, which weir does not expand"));
    }
    Ok(value.to_string())
}

/// `app-root`: an absolute path (ingress-nginx's own check), visible ASCII, no nginx
/// variables.
fn app_root(value: &str) -> Result<String, String> {
    let bad = |why: &str| format!("annotation {PREFIX}app-root: {value:?} {why}");
    if !value.starts_with('/') || value.starts_with("//") {
        return Err(bad("is not a path starting with /"));
    }
    if value.bytes().any(|b| !(0x21..=0x7e).contains(&b)) || value.contains(['$', '#']) {
        return Err(bad("must be a plain path (visible ASCII, no $ or #)"));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(pairs: &[(&str, &str)]) -> Result<NginxAnnotations, String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), (*v).to_string()))
            .collect();
        read(Some(&map))
    }

    fn url(status: u16, url: &str) -> Option<Redirect> {
        Some(Redirect {
            status,
            to: RedirectTo::Url(url.to_string()),
        })
    }

    #[test]
    fn nothing_set_reads_as_defaults() {
        assert_eq!(read(None), Ok(NginxAnnotations::default()));
    }

    #[test]
    fn redirects_with_their_codes_and_temporal_first() {
        let permanent = of(&[("permanent-redirect", "https://new.example.com/x?y=1")]);
        assert_eq!(
            permanent.map(|r| r.redirect),
            Ok(url(301, "https://new.example.com/x?y=1"))
        );
        let coded = of(&[
            ("permanent-redirect", "http://new.example.com"),
            ("permanent-redirect-code", "308"),
        ]);
        assert_eq!(
            coded.map(|r| r.redirect),
            Ok(url(308, "http://new.example.com"))
        );
        let both = of(&[
            ("permanent-redirect", "https://a.example.com"),
            ("temporal-redirect", "https://b.example.com/"),
        ]);
        assert_eq!(
            both.map(|r| r.redirect),
            Ok(url(302, "https://b.example.com/"))
        );
        // A code alone redirects nothing.
        assert_eq!(
            of(&[("permanent-redirect-code", "308")]).map(|r| r.redirect),
            Ok(None)
        );
    }

    #[test]
    fn affinity_reads_the_cookie_and_refuses_what_could_break_it() {
        let affinity = |pairs: &[(&str, &str)]| of(pairs).map(|r| r.policy.affinity);
        let plain = affinity(&[("affinity", "cookie")]).expect("valid");
        assert_eq!(
            plain,
            Some(SessionAffinity {
                mode: AffinityMode::Balanced,
                cookie: AffinityCookie {
                    name: "INGRESSCOOKIE".into(),
                    path: None,
                    domain: None,
                    max_age: None,
                    expires: None,
                    same_site: None,
                    secure: false,
                },
                change_on_failure: false,
            })
        );
        // Without `affinity` the cookie's annotations do nothing.
        assert_eq!(affinity(&[("session-cookie-name", "x")]), Ok(None));
        for (name, value) in [
            ("affinity", "ip"),
            ("affinity-mode", "sticky"),
            ("session-cookie-name", "a=b"),
            ("session-cookie-name", "a b"),
            ("session-cookie-path", "shop"),
            ("session-cookie-path", "/a; Domain=evil.example"),
            ("session-cookie-domain", "a.example\r\nX: y"),
            ("session-cookie-max-age", "-1"),
            ("session-cookie-expires", "1d"),
            ("session-cookie-expires", "300000000000"),
            ("session-cookie-samesite", "sometimes"),
            ("session-cookie-secure", "yes"),
        ] {
            let mut pairs = vec![("affinity", "cookie")];
            if name != "affinity" {
                pairs.push((name, value));
            } else {
                pairs[0].1 = value;
            }
            let err = affinity(&pairs).expect_err(value);
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn weir_annotations_override_their_nginx_equivalents() {
        let map: BTreeMap<String, String> = [
            ("nginx.ingress.kubernetes.io/load-balance", "ewma"),
            ("weir.dev/load-balancer", "round-robin"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "30"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("weir.dev/ssl-redirect", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            overridden(Some(&map)),
            vec![
                (
                    "nginx.ingress.kubernetes.io/load-balance".to_string(),
                    "weir.dev/load-balancer"
                ),
                (
                    "nginx.ingress.kubernetes.io/ssl-redirect".to_string(),
                    "weir.dev/ssl-redirect"
                ),
            ]
        );
        assert!(overridden(None).is_empty());
    }

    #[test]
    fn proxy_next_upstream_reads_nginx_conditions() {
        let retry_on = |pairs: &[(&str, &str)]| of(pairs).map(|r| r.policy.retry_on);
        assert_eq!(retry_on(&[]), Ok(None));
        let listed = retry_on(&[
            (
                "proxy-next-upstream",
                "error  http_503 http_502 non_idempotent http_502",
            ),
            ("proxy-next-upstream-timeout", "10"),
        ]);
        assert_eq!(
            listed,
            Ok(Some(RetryOn {
                errors: true,
                timeouts: false,
                statuses: vec![502, 503],
                non_idempotent: true,
                within: Some(Duration::from_secs(10)),
            }))
        );
        let off = retry_on(&[("proxy-next-upstream", "error off")]).expect("valid");
        assert_eq!(
            off.map(|r| (r.errors, r.timeouts, r.statuses.len())),
            Some((false, false, 0))
        );
        let unlimited = retry_on(&[("proxy-next-upstream-timeout", "0")]).expect("valid");
        assert_eq!(unlimited, Some(RetryOn::default()));
        for (name, value) in [
            ("proxy-next-upstream", "http_418"),
            ("proxy-next-upstream", "sometimes"),
            ("proxy-next-upstream-timeout", "soon"),
        ] {
            let err = of(&[(name, value)]).expect_err(value);
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn custom_http_errors_are_error_statuses() {
        let read = of(&[("custom-http-errors", " 503,404, 404 ,")]).expect("valid");
        assert_eq!(read.custom_http_errors, vec![404, 503]);
        for value in ["302", "600", "x", "404;503"] {
            let err = of(&[("custom-http-errors", value)]).expect_err(value);
            assert!(err.contains("custom-http-errors"), "{err}");
        }
    }

    #[test]
    fn source_ranges_read_as_networks_and_a_bad_one_refuses() {
        let access = |pairs: &[(&str, &str)]| of(pairs).map(|r| r.policy.source_access);
        assert_eq!(access(&[]), Ok(None));
        let read = access(&[
            ("whitelist-source-range", "0.0.0.0/0"),
            ("allowlist-source-range", "10.0.0.0/8, ::1"),
            ("denylist-source-range", "10.9.0.0/16"),
        ])
        .expect("valid")
        .expect("ranges");
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert!(read.admits(ip("10.1.2.3")) && read.admits(ip("::1")));
        assert!(!read.admits(ip("10.9.1.1")), "deny wins");
        assert!(
            !read.admits(ip("192.0.2.1")),
            "allowlist wins over whitelist"
        );
        for (name, value) in [
            ("allowlist-source-range", "10.0.0.0/8,nope"),
            ("whitelist-source-range", "10.0.0.0/40"),
            ("denylist-source-range", "1.2.3"),
        ] {
            let err = of(&[(name, value)]).expect_err(value);
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn bad_redirects_are_refused_naming_the_annotation() {
        for (name, value, why) in [
            ("permanent-redirect", "ftp://x.example.com", "http://"),
            ("permanent-redirect", "/relative", "http://"),
            ("permanent-redirect", "https:///path", "no host"),
            ("temporal-redirect", "https://x.example.com/a b", "byte"),
            (
                "temporal-redirect",
                "https://x.example.com/\r\nSet-Cookie: a=b",
                "byte",
            ),
            (
                "permanent-redirect",
                "https://x.example.com$request_uri",
                "variable",
            ),
        ] {
            let err = of(&[(name, value)]).expect_err(value);
            assert!(err.contains(name) && err.contains(why), "{err}");
        }
        for code in ["299", "309", "306", "x", ""] {
            let err = of(&[
                ("permanent-redirect", "https://x.example.com"),
                ("permanent-redirect-code", code),
            ])
            .expect_err(code);
            assert!(err.contains("permanent-redirect-code"), "{err}");
        }
    }

    #[test]
    fn rewrites_regex_paths_and_upstream_fields() {
        let read = of(&[
            ("rewrite-target", "/$2?from=$1"),
            ("upstream-vhost", "internal.example.com:8080"),
            ("x-forwarded-prefix", "/shop"),
        ])
        .expect("valid");
        assert_eq!(read.rewrite_target.as_deref(), Some("/$2?from=$1"));
        assert!(read.regex_paths, "rewrite-target implies regex paths");
        assert_eq!(
            read.upstream_vhost.as_deref(),
            Some("internal.example.com:8080")
        );
        assert_eq!(read.x_forwarded_prefix.as_deref(), Some("/shop"));
        assert!(of(&[("use-regex", "true")]).expect("valid").regex_paths);
        assert!(!of(&[("use-regex", "false")]).expect("valid").regex_paths);
        for (name, bad) in [
            ("rewrite-target", "/$host/x"),
            ("rewrite-target", "/${1}"),
            ("rewrite-target", "/a b"),
            ("rewrite-target", "x/y"),
            ("rewrite-target", "/end$"),
            ("rewrite-target", "/a#frag"),
            ("rewrite-target", "/<x>"),
            ("upstream-vhost", "$host"),
            ("upstream-vhost", "a b"),
            ("x-forwarded-prefix", "/$1"),
            ("x-forwarded-prefix", "/a\r\nx: y"),
            ("use-regex", "yes"),
        ] {
            let err = of(&[(name, bad)]).expect_err(bad);
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn balancing_and_upstream_settings() {
        let read = of(&[
            ("upstream-hash-by", "$http_x_user_id"),
            ("proxy-connect-timeout", "5"),
            ("proxy-read-timeout", "120s"),
            ("proxy-send-timeout", "30"),
            ("proxy-next-upstream-tries", "3"),
            ("backend-protocol", "GRPC"),
        ])
        .expect("valid");
        assert_eq!(
            read.policy,
            NginxPolicy {
                algorithm: Some(Algorithm::ConsistentHash),
                hash_key: Some(HashKey::Header("x-user-id".to_string())),
                connect_timeout: Some(Duration::from_secs(5)),
                read_timeout: Some(Duration::from_secs(120)),
                retries: Some(2),
                backend_protocol: Some(BackendProtocol::H2c),
                max_request_body: None,
                write_timeout: Some(Duration::from_secs(30)),
                affinity: None,
                retry_on: None,
                source_access: None,
                rate_limit: None,
                global_rate_limit: None,
            }
        );
        for (value, key) in [
            ("$request_uri", HashKey::Path),
            ("$remote_addr", HashKey::ClientIp),
            ("$cookie_session", HashKey::Cookie("session".to_string())),
            ("$arg_user", HashKey::Query("user".to_string())),
        ] {
            let read = of(&[("upstream-hash-by", value)]).expect(value);
            assert_eq!(read.policy.hash_key, Some(key), "{value}");
        }
        let ewma = of(&[("load-balance", "ewma")]).expect("valid");
        assert_eq!(ewma.policy.algorithm, Some(Algorithm::PeakEwma));
        for (value, size) in [
            ("8m", Some(8 << 20)),
            ("512K", Some(512 << 10)),
            ("100", Some(100)),
            ("0", None),
        ] {
            let read = of(&[("proxy-body-size", value)]).expect(value);
            assert_eq!(read.policy.max_request_body, Some(size), "{value}");
        }
        for bad in ["1t", "m", "-1", "1.5m", "99999999999999g"] {
            assert!(of(&[("proxy-body-size", bad)]).is_err(), "{bad}");
        }
        let unlimited = of(&[("proxy-next-upstream-tries", "0")]).expect("valid");
        assert_eq!(unlimited.policy.retries, Some(10));
        for (name, bad) in [
            ("load-balance", "least_conn"),
            ("upstream-hash-by", "$request_uri$host"),
            ("upstream-hash-by", "request_uri"),
            ("upstream-hash-by", "$http_"),
            ("proxy-connect-timeout", "0"),
            ("proxy-read-timeout", "1m"),
            ("proxy-next-upstream-tries", "-1"),
            ("backend-protocol", "FCGI"),
        ] {
            let err = of(&[(name, bad)]).expect_err(bad);
            assert!(err.contains(name), "{err}");
        }
        // weir's own annotation for a setting wins.
        let mut policy = RoutePolicy::default();
        let annotations: BTreeMap<String, String> =
            [("weir.dev/read-timeout".to_string(), "9s".to_string())].into();
        read.policy.apply_to(&mut policy, Some(&annotations));
        assert_eq!(policy.read_timeout, RoutePolicy::default().read_timeout);
        assert_eq!(policy.connect_timeout, Duration::from_secs(5));
        assert_eq!(policy.pool.algorithm, Algorithm::ConsistentHash);
    }

    #[test]
    fn global_rate_limits_and_mirrors_read_as_ingress_nginx_writes_them() {
        let read = of(&[
            ("global-rate-limit", "100"),
            ("global-rate-limit-window", "2m"),
            ("global-rate-limit-key", "api:$http_x_api_client"),
            ("global-rate-limit-ignored-cidrs", "10.0.0.0/8"),
            ("mirror-target", "https://shadow.example.com$request_uri"),
            ("mirror-request-body", "off"),
        ])
        .expect("valid");
        let limit = read.policy.global_rate_limit.expect("limit");
        assert_eq!((limit.limit, limit.window), (100, Duration::from_secs(120)));
        assert_eq!(limit.key, "api:$http_x_api_client");
        assert_eq!(limit.ignored.len(), 1);
        let mirror = read.mirror.expect("mirror");
        assert_eq!(mirror.url, "https://shadow.example.com$request_uri");
        assert!(!mirror.body);
        for (pairs, why) in [
            (vec![("global-rate-limit", "100")], "needs"),
            (
                vec![
                    ("global-rate-limit", "0"),
                    ("global-rate-limit-window", "1m"),
                ],
                "above 0",
            ),
            (
                vec![
                    ("global-rate-limit", "5"),
                    ("global-rate-limit-window", "2w"),
                ],
                "duration",
            ),
            (
                vec![
                    ("global-rate-limit", "5"),
                    ("global-rate-limit-window", "1m"),
                    ("global-rate-limit-key", "$cookie_id"),
                ],
                "$cookie_id",
            ),
            (vec![("mirror-target", "/mirror")], "location"),
            // Found by fuzzing: a URL is ASCII.
            (
                vec![("mirror-target", "http://s\u{fffd}hadow$request_uri")],
                "visible ASCII",
            ),
            (vec![("mirror-target", "http://a/$host")], "variable"),
            (
                vec![
                    ("mirror-target", "http://a"),
                    ("mirror-request-body", "yes"),
                ],
                "on or off",
            ),
        ] {
            let err = of(&pairs).expect_err(why);
            assert!(err.contains(why), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn canary_rules() {
        assert_eq!(of(&[("canary-weight", "10")]).map(|r| r.canary), Ok(None));
        let rule = of(&[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "yes"),
            ("canary-by-header-pattern", "ignored"),
            ("canary-by-cookie", "canary"),
            ("canary-weight", "5"),
            ("canary-weight-total", "1000"),
        ])
        .map(|r| r.canary);
        assert_eq!(
            rule,
            Ok(Some(CanaryRule {
                header: Some((
                    "x-canary".to_string(),
                    CanaryHeader::Value("yes".to_string())
                )),
                cookie: Some("canary".to_string()),
                weight: 5,
                weight_total: 1000,
            }))
        );
        let pattern = of(&[
            ("canary", "true"),
            ("canary-by-header", "x-user"),
            ("canary-by-header-pattern", "^(alice|bob)$"),
        ])
        .map(|r| r.canary.and_then(|c| c.header));
        assert_eq!(
            pattern,
            Ok(Some((
                "x-user".to_string(),
                CanaryHeader::Pattern("^(alice|bob)$".to_string())
            )))
        );
        let plain = of(&[("canary", "true")]).map(|r| r.canary);
        assert_eq!(
            plain,
            Ok(Some(CanaryRule {
                header: None,
                cookie: None,
                weight: 0,
                weight_total: 100
            }))
        );
        for (name, bad) in [
            ("canary-weight", "101"),
            ("canary-weight", "-1"),
            ("canary-weight-total", "0"),
            ("canary-by-header", "X Canary"),
            ("canary-by-cookie", "a;b"),
            ("canary-by-header-pattern", "(?<=x)y"),
        ] {
            let mut pairs = vec![("canary", "true"), (name, bad)];
            if name == "canary-by-header-pattern" {
                pairs.push(("canary-by-header", "x-user"));
            }
            let err = of(&pairs).expect_err(bad);
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn app_root_and_the_https_redirects() {
        let read = of(&[
            ("app-root", "/app/start?x=1"),
            ("ssl-redirect", "False"),
            ("force-ssl-redirect", "1"),
        ]);
        assert_eq!(
            read,
            Ok(NginxAnnotations {
                app_root: Some("/app/start?x=1".to_string()),
                ssl_redirect: Some(false),
                force_ssl_redirect: true,
                ..NginxAnnotations::default()
            })
        );
        for bad in ["app", "//evil.example.com", "/a b", "/$uri"] {
            assert!(of(&[("app-root", bad)]).is_err(), "{bad}");
        }
        assert!(of(&[("ssl-redirect", "yes")]).is_err());
    }
}
