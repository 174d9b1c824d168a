//! `weir.dev/*` annotations (docs/configuration.md) -> how a route balances ([`RoutePolicy`]).
//!
//! Every value is validated; the first bad one rejects the whole Ingress with a reason that
//! names the annotation. Absent annotations take the defaults docs/configuration.md lists.

pub use crate::snapshot::{BackendProtocol, HashKey, RoutePolicy};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_balancer::{Algorithm, LoadSignal, OutlierConfig, SlowStart};

const PREFIX: &str = "weir.dev/";

fn duration(name: &str, value: &str) -> Result<Duration, String> {
    humantime_like(value).ok_or_else(|| {
        format!("annotation {PREFIX}{name}: {value:?} is not a duration like 30s or 500ms")
    })
}

/// Durations as `500ms`, `30s`, `5m`, `1h` (one unit, as Kubernetes annotations usually are).
fn humantime_like(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    // `try_`: a huge value (`3333…3s`) is an invalid annotation, not a panic (found by the
    // `annotations` fuzz target).
    Duration::try_from_secs_f64(seconds).ok()
}

/// A `"true"`/`"false"` annotation (absent: `default`).
fn flag(name: &str, value: Option<&str>, default: bool) -> Result<bool, String> {
    crate::validate::parse_bool_annotation(&format!("{PREFIX}{name}"), value, default)
}

fn number<T: std::str::FromStr>(name: &str, value: &str, what: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("annotation {PREFIX}{name}: {value:?} is not {what}"))
}

/// Largest weight `backend-weights` accepts (weights are relative; this keeps sums far from
/// overflow).
const MAX_BACKEND_WEIGHT: u64 = 1_000_000;

/// `backend-weights`: a JSON object of Service name -> whole number (e.g.
/// `{"shop": 90, "shop-canary": 10}`), at least one weight above zero.
fn backend_weights(value: &str) -> Result<BTreeMap<String, u32>, String> {
    let bad = |why: &str| format!("annotation {PREFIX}backend-weights: {why}");
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|e| bad(&format!("{value:?} is not JSON ({e})")))?;
    let object = parsed
        .as_object()
        .ok_or_else(|| bad("must be a JSON object of service name -> weight"))?;
    let mut weights = BTreeMap::new();
    for (service, weight) in object {
        let weight = weight
            .as_u64()
            .filter(|w| *w <= MAX_BACKEND_WEIGHT)
            .ok_or_else(|| {
                bad(&format!(
                    "weight of {service:?} must be a whole number from 0 to {MAX_BACKEND_WEIGHT}"
                ))
            })?;
        weights.insert(service.clone(), weight as u32);
    }
    if weights.values().all(|w| *w == 0) {
        return Err(bad("needs at least one weight above 0"));
    }
    Ok(weights)
}

/// The policy an Ingress's annotations ask for.
pub fn route_policy(annotations: Option<&BTreeMap<String, String>>) -> Result<RoutePolicy, String> {
    let get = |name: &str| {
        annotations
            .and_then(|a| a.get(&format!("{PREFIX}{name}")))
            .map(String::as_str)
    };
    let mut policy = RoutePolicy::default();
    let pool = &mut policy.pool;
    if let Some(v) = get("load-balancer") {
        pool.algorithm = v
            .parse::<Algorithm>()
            .map_err(|e| format!("annotation {PREFIX}load-balancer: {e}"))?;
    }
    if let Some(v) = get("hash-key") {
        policy.hash_key = match v.split_once(':') {
            None if v == "client-ip" => HashKey::ClientIp,
            None if v == "path" => HashKey::Path,
            Some(("header", n)) if !n.is_empty() => HashKey::Header(n.to_ascii_lowercase()),
            Some(("cookie", n)) if !n.is_empty() => HashKey::Cookie(n.to_string()),
            Some(("query", n)) if !n.is_empty() => HashKey::Query(n.to_string()),
            _ => {
                return Err(format!(
                    "annotation {PREFIX}hash-key: {v:?} is not client-ip, path, header:NAME, cookie:NAME or query:NAME"
                ))
            }
        };
    }
    if let Some(v) = get("hash-balance-factor") {
        let f: f64 = number("hash-balance-factor", v, "a number")?;
        if !(f >= 1.0 && f.is_finite()) {
            return Err(format!(
                "annotation {PREFIX}hash-balance-factor: {v:?} must be at least 1.0"
            ));
        }
        pool.hash_balance_factor = Some(f);
    }
    if let Some(v) = get("hash-load-signal") {
        pool.hash_load_signal = match v {
            "in-flight" => LoadSignal::InFlight,
            "occupancy" => LoadSignal::Occupancy,
            _ => {
                return Err(format!(
                    "annotation {PREFIX}hash-load-signal: {v:?} is not in-flight or occupancy"
                ))
            }
        };
    }
    if let Some(v) = get("slow-start") {
        let mut slow = SlowStart::new(duration("slow-start", v)?);
        if let Some(a) = get("slow-start-aggression") {
            slow.aggression = number("slow-start-aggression", a, "a number")?;
            if !(slow.aggression > 0.0 && slow.aggression.is_finite()) {
                return Err(format!(
                    "annotation {PREFIX}slow-start-aggression: {a:?} must be above 0"
                ));
            }
        }
        if let Some(m) = get("slow-start-min-weight") {
            slow.min_weight = number("slow-start-min-weight", m, "a number")?;
            if !(0.0..=1.0).contains(&slow.min_weight) {
                return Err(format!(
                    "annotation {PREFIX}slow-start-min-weight: {m:?} must be between 0 and 1"
                ));
            }
        }
        pool.slow_start = Some(slow);
    }
    let mut outlier = OutlierConfig::default();
    if let Some(v) = get("outlier-consecutive-failures") {
        outlier.consecutive_failures = number("outlier-consecutive-failures", v, "a whole number")?;
        if outlier.consecutive_failures == 0 {
            return Err(format!(
                "annotation {PREFIX}outlier-consecutive-failures: must be at least 1"
            ));
        }
    }
    if let Some(v) = get("outlier-base-ejection") {
        outlier.base_ejection = duration("outlier-base-ejection", v)?;
    }
    if let Some(v) = get("outlier-max-ejection") {
        outlier.max_ejection = duration("outlier-max-ejection", v)?;
    }
    if let Some(v) = get("outlier-max-ejection-percent") {
        outlier.max_ejection_percent = number("outlier-max-ejection-percent", v, "a whole number")?;
        if outlier.max_ejection_percent > 100 {
            return Err(format!(
                "annotation {PREFIX}outlier-max-ejection-percent: {v:?} is over 100"
            ));
        }
    }
    if let Some(path) = get("health-check-path") {
        if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(format!(
                "annotation {PREFIX}health-check-path: {path:?} is not a path (it starts with / and has no spaces or control characters)"
            ));
        }
        let interval = get("health-check-interval")
            .map(|v| duration("health-check-interval", v))
            .transpose()?
            .unwrap_or(Duration::from_secs(5));
        let timeout = get("health-check-timeout")
            .map(|v| duration("health-check-timeout", v))
            .transpose()?
            .unwrap_or(Duration::from_secs(2));
        if interval < Duration::from_millis(100) || timeout.is_zero() {
            return Err(format!(
                "annotation {PREFIX}health-check-interval must be at least 100ms and -timeout above 0"
            ));
        }
        let healthy_threshold: u32 = get("health-check-healthy-threshold")
            .map(|v| number("health-check-healthy-threshold", v, "a whole number"))
            .transpose()?
            .unwrap_or(2);
        if !(1..=10).contains(&healthy_threshold) {
            return Err(format!(
                "annotation {PREFIX}health-check-healthy-threshold: must be 1 to 10"
            ));
        }
        outlier.readmit_on_check = true;
        policy.health_check = Some(crate::snapshot::HealthCheck {
            path: path.to_string(),
            interval,
            timeout,
            healthy_threshold,
        });
    } else if let Some(other) = [
        "health-check-interval",
        "health-check-timeout",
        "health-check-healthy-threshold",
    ]
    .into_iter()
    .find(|k| get(k).is_some())
    {
        return Err(format!(
            "annotation {PREFIX}{other} needs {PREFIX}health-check-path"
        ));
    }
    pool.outlier = outlier;
    if let Some(v) = get("max-concurrency") {
        let max: u32 = number("max-concurrency", v, "a whole number")?;
        if max == 0 {
            return Err(format!(
                "annotation {PREFIX}max-concurrency: must be at least 1"
            ));
        }
        policy.max_concurrency = Some(max);
    }
    if let Some(v) = get("retries") {
        policy.retries = number("retries", v, "a whole number")?;
        if policy.retries > 10 {
            return Err(format!("annotation {PREFIX}retries: {v:?} is over 10"));
        }
    }
    for (name, slot) in [
        ("connect-timeout", &mut policy.connect_timeout),
        ("read-timeout", &mut policy.read_timeout),
        ("websocket-idle-timeout", &mut policy.websocket_idle_timeout),
    ] {
        if let Some(v) = get(name) {
            let d = duration(name, v)?;
            if d.is_zero() {
                return Err(format!("annotation {PREFIX}{name}: must be above 0"));
            }
            *slot = d;
        }
    }
    if let Some(v) = get("backend-protocol") {
        policy.backend_protocol = match v {
            "http" => BackendProtocol::Http,
            "h2c" => BackendProtocol::H2c,
            "https" => BackendProtocol::Https,
            _ => {
                return Err(format!(
                    "annotation {PREFIX}backend-protocol: {v:?} is not http, h2c or https"
                ))
            }
        };
    }
    // Checks speak plain HTTP/1.1: an h2c or https endpoint would never pass them and, once
    // ejected, never return. Refused rather than failing that way later.
    if policy.health_check.is_some() && policy.backend_protocol != BackendProtocol::Http {
        return Err(format!(
            "annotation {PREFIX}health-check-path: active checks speak plain HTTP/1.1, not backend-protocol {:?}",
            get("backend-protocol").unwrap_or_default()
        ));
    }
    policy.backend_tls_verify = flag(
        "backend-tls-verify",
        get("backend-tls-verify"),
        policy.backend_tls_verify,
    )?;
    if let Some(v) = get("backend-tls-server-name") {
        let name = v.to_ascii_lowercase();
        crate::validate::check_dns_subdomain(&name).map_err(|e| {
            format!("annotation {PREFIX}backend-tls-server-name: {v:?} is not a DNS name: {e}")
        })?;
        policy.backend_tls_server_name = Some(name);
    }
    if let Some(v) = get("backend-weights") {
        policy.backend_weights = Some(backend_weights(v)?);
    }
    pool.latency_health_factor = flag(
        "latency-health-factor",
        get("latency-health-factor"),
        pool.latency_health_factor,
    )?;
    pool.zone_aware = flag("zone-aware", get("zone-aware"), pool.zone_aware)?;
    if let Some(v) = get("warm-up-mirror") {
        let share: f64 = number("warm-up-mirror", v, "a number")?;
        if !(share > 0.0 && share <= 1.0) {
            return Err(format!(
                "annotation {PREFIX}warm-up-mirror: {v:?} must be a share above 0 and at most 1"
            ));
        }
        if pool.slow_start.is_none() {
            return Err(format!(
                "annotation {PREFIX}warm-up-mirror needs {PREFIX}slow-start: it warms endpoints while they are in slow start"
            ));
        }
        policy.warm_up_mirror = Some(share);
    }
    Ok(policy)
}

/// Every `weir.dev/*` annotation weir reads on an Ingress (docs/configuration.md).
const KNOWN: &[&str] = &[
    "backend-protocol",
    "backend-tls-server-name",
    "backend-tls-verify",
    "backend-weights",
    "connect-timeout",
    "hash-balance-factor",
    "hash-key",
    "hash-load-signal",
    "health-check-healthy-threshold",
    "health-check-interval",
    "health-check-path",
    "health-check-timeout",
    "latency-health-factor",
    "load-balancer",
    "max-concurrency",
    "outlier-base-ejection",
    "outlier-consecutive-failures",
    "outlier-max-ejection",
    "outlier-max-ejection-percent",
    "path-regex",
    "read-timeout",
    "retries",
    "slow-start",
    "slow-start-aggression",
    "slow-start-min-weight",
    "ssl-redirect",
    "warm-up-mirror",
    "websocket-idle-timeout",
    "zone-aware",
];

/// Whether `name` (without the prefix) is a `weir.dev/*` annotation of how a Service is
/// balanced and reached, not of a rule (`backend-weights`, `path-regex`, `ssl-redirect`):
/// what a BalancerPolicy may set (`crate::gateway::policy`).
pub fn is_service_setting(name: &str) -> bool {
    KNOWN.contains(&name) && !matches!(name, "backend-weights" | "path-regex" | "ssl-redirect")
}

/// Whether weir reads the ingress-nginx annotation `name` (without its prefix): with the
/// others in [`crate::nginx`], or with the authentication ones in [`crate::auth`].
pub fn nginx_is_read(name: &str) -> bool {
    crate::nginx::KNOWN.contains(&name) || crate::auth::KNOWN.contains(&name)
}

/// The annotations of an Ingress that ask weir, or ingress-nginx, for something weir does
/// not do: a `weir.dev/*` name weir does not know (a typo is not silently a default) and
/// every `nginx.ingress.kubernetes.io/*` one weir does not read ([`crate::nginx`]). The Ingress is served without them and they
/// are reported. Annotations of other tools (`kubectl.kubernetes.io/*`, `cert-manager.io/*`,
/// ...) are not weir's to judge.
pub fn unsupported(annotations: Option<&BTreeMap<String, String>>) -> Vec<String> {
    let Some(annotations) = annotations else {
        return Vec::new();
    };
    annotations
        .keys()
        .filter(|key| match key.strip_prefix(PREFIX) {
            Some(name) => !KNOWN.contains(&name),
            None => key
                .strip_prefix(crate::nginx::PREFIX)
                .is_some_and(|name| !nginx_is_read(name)),
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checks_are_refused_where_they_could_never_pass() {
        for protocol in ["h2c", "https"] {
            let mut a = BTreeMap::new();
            a.insert(format!("{PREFIX}health-check-path"), "/healthz".to_string());
            a.insert(format!("{PREFIX}backend-protocol"), protocol.to_string());
            let e = route_policy(Some(&a)).expect_err(protocol);
            assert!(e.contains("HTTP/1.1"), "{e}");
        }
    }

    #[test]
    fn unknown_weir_and_unread_nginx_annotations_are_unsupported() {
        let map: BTreeMap<String, String> = [
            "weir.dev/load-balancer",
            "weir.dev/path-regex",
            "weir.dev/load-balancr",
            "nginx.ingress.kubernetes.io/rewrite-target",
            "nginx.ingress.kubernetes.io/proxy-buffering",
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "kubectl.kubernetes.io/last-applied-configuration",
            "cert-manager.io/cluster-issuer",
        ]
        .iter()
        .map(|k| (k.to_string(), String::new()))
        .collect();
        assert_eq!(
            unsupported(Some(&map)),
            [
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "nginx.ingress.kubernetes.io/proxy-buffering",
                "weir.dev/load-balancr",
            ]
        );
        assert!(unsupported(None).is_empty());
    }

    /// Every annotation docs/configuration.md lists for an Ingress is known.
    #[test]
    fn every_documented_annotation_is_known() {
        let docs = include_str!("../../docs/configuration.md");
        let documented: std::collections::BTreeSet<&str> = docs
            .split('`')
            .filter_map(|word| word.strip_prefix(PREFIX))
            .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .filter(|name| *name != "ingress-controller")
            .collect();
        assert!(documented.len() >= 20, "{documented:?}");
        for name in documented {
            assert!(
                KNOWN.contains(&name),
                "weir.dev/{name} is documented but not known"
            );
        }
    }

    fn of(pairs: &[(&str, &str)]) -> Result<RoutePolicy, String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), (*v).to_string()))
            .collect();
        route_policy(Some(&map))
    }

    /// Regression (fuzz target `annotations`, 2026-11-23): a duration too large for
    /// `Duration` panicked the translation; now it rejects that Ingress like any bad value.
    #[test]
    fn an_overflowing_duration_is_rejected_not_a_panic() {
        let huge = format!("{}s", "3".repeat(60));
        for name in ["slow-start", "read-timeout", "connect-timeout"] {
            let err = of(&[(name, huge.as_str())]).expect_err("rejected");
            assert!(err.contains(name), "{err}");
        }
        assert!(of(&[("read-timeout", "1e400s")]).is_err());
        assert!(of(&[("read-timeout", "2h")]).is_ok());
    }

    #[test]
    fn defaults_without_annotations() {
        let p = route_policy(None).expect("valid");
        assert_eq!(p.pool.algorithm, Algorithm::LeastRequest);
        assert_eq!(p.hash_key, HashKey::ClientIp);
        assert_eq!(p.pool.outlier, OutlierConfig::default());
        assert!(p.pool.latency_health_factor);
    }

    #[test]
    fn every_annotation_is_read() {
        let p = of(&[
            ("load-balancer", "consistent-hash"),
            ("hash-key", "header:X-User"),
            ("hash-balance-factor", "1.25"),
            ("hash-load-signal", "occupancy"),
            ("slow-start", "30s"),
            ("slow-start-aggression", "2"),
            ("slow-start-min-weight", "0.05"),
            ("outlier-consecutive-failures", "3"),
            ("outlier-base-ejection", "10s"),
            ("outlier-max-ejection", "2m"),
            ("outlier-max-ejection-percent", "50"),
            ("zone-aware", "true"),
            ("latency-health-factor", "false"),
            ("backend-protocol", "https"),
            ("backend-tls-verify", "false"),
            ("backend-tls-server-name", "Shop.Internal"),
            ("backend-weights", "{\"shop\": 90, \"shop-canary\": 10}"),
            ("retries", "2"),
            ("max-concurrency", "100"),
            ("connect-timeout", "500ms"),
            ("read-timeout", "5s"),
            ("websocket-idle-timeout", "10m"),
        ])
        .expect("valid");
        assert_eq!(p.retries, 2);
        assert_eq!(p.max_concurrency, Some(100));
        assert_eq!(p.connect_timeout, Duration::from_millis(500));
        assert_eq!(p.read_timeout, Duration::from_secs(5));
        assert_eq!(p.websocket_idle_timeout, Duration::from_secs(600));
        assert_eq!(p.pool.algorithm, Algorithm::ConsistentHash);
        assert_eq!(p.hash_key, HashKey::Header("x-user".into()));
        assert_eq!(p.pool.hash_balance_factor, Some(1.25));
        assert_eq!(p.pool.hash_load_signal, LoadSignal::Occupancy);
        let slow = p.pool.slow_start.expect("slow start");
        assert_eq!(
            (slow.window, slow.aggression, slow.min_weight),
            (Duration::from_secs(30), 2.0, 0.05)
        );
        assert_eq!(p.pool.outlier.consecutive_failures, 3);
        assert_eq!(p.pool.outlier.base_ejection, Duration::from_secs(10));
        assert_eq!(p.pool.outlier.max_ejection, Duration::from_secs(120));
        assert_eq!(p.pool.outlier.max_ejection_percent, 50);
        assert!(p.pool.zone_aware);
        assert!(!p.pool.latency_health_factor);
        assert_eq!(p.backend_protocol, BackendProtocol::Https);
        assert!(!p.backend_tls_verify);
        assert_eq!(p.backend_tls_server_name.as_deref(), Some("shop.internal"));
        let weights = p.backend_weights.expect("weights");
        assert_eq!(weights.get("shop"), Some(&90));
        assert_eq!(weights.get("shop-canary"), Some(&10));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (name, value) in [
            ("load-balancer", "fastest"),
            ("hash-key", "header:"),
            ("hash-key", "ip"),
            ("hash-balance-factor", "0.9"),
            ("hash-balance-factor", "lots"),
            ("hash-load-signal", "cpu"),
            ("slow-start", "soon"),
            ("outlier-consecutive-failures", "0"),
            ("outlier-base-ejection", "-1s"),
            ("outlier-max-ejection-percent", "150"),
            ("zone-aware", "yes"),
            ("latency-health-factor", "1"),
            ("backend-weights", "[1, 2]"),
            ("backend-weights", "{\"a\": -1}"),
            ("backend-weights", "{\"a\": 1.5}"),
            ("backend-weights", "{\"a\": 0}"),
            ("backend-weights", "{\"a\": 10"),
            ("backend-protocol", "grpc"),
            ("backend-tls-verify", "no"),
            ("backend-tls-server-name", "bad name"),
            ("backend-tls-server-name", "-x.example"),
            ("backend-tls-server-name", "a..b"),
            ("max-concurrency", "0"),
            ("max-concurrency", "lots"),
            ("retries", "-1"),
            ("retries", "11"),
            ("read-timeout", "0s"),
            ("connect-timeout", "fast"),
        ] {
            let err = of(&[(name, value)]).expect_err("invalid");
            assert!(err.contains(&format!("{PREFIX}{name}")), "{err}");
        }
    }
}
