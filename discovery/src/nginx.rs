//! ingress-nginx's annotations (`nginx.ingress.kubernetes.io/*`) -> the route model, with
//! ingress-nginx's semantics (docs/migrating-from-ingress-nginx.md lists each one, and where
//! weir knowingly differs).
//!
//! What is read here: the redirects (`permanent-redirect` with `permanent-redirect-code`,
//! `temporal-redirect`, `app-root`), the https redirects (`ssl-redirect`,
//! `force-ssl-redirect`), regex paths and rewrites (`use-regex`, `rewrite-target`) and the
//! upstream request's fields (`upstream-vhost`, `x-forwarded-prefix`). Every other `nginx.ingress.kubernetes.io/*` annotation is reported
//! as unsupported ([`crate::annotations::unsupported`]), never silently ignored.
//!
//! Must not: read `weir.dev/*` annotations (those are [`crate::annotations`]'s; the
//! translation decides which wins), or do I/O.

use crate::snapshot::{Redirect, RedirectTo};
use std::collections::BTreeMap;

pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The annotations read here (names without [`PREFIX`]).
pub const KNOWN: &[&str] = &[
    "app-root",
    "force-ssl-redirect",
    "permanent-redirect",
    "permanent-redirect-code",
    "rewrite-target",
    "ssl-redirect",
    "temporal-redirect",
    "upstream-vhost",
    "use-regex",
    "x-forwarded-prefix",
];

/// What an Ingress's ingress-nginx annotations ask for.
#[derive(Debug, Default, PartialEq, Eq)]
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
    Ok(read)
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
