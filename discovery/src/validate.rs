//! Validation of Ingress fields, mirroring the API server's own checks
//! (`validateHTTPIngressPath`, DNS-1123 hosts), because manifests on disk never went
//! through an API server and a fake or old API server may not have enforced them.

use crate::snapshot::HostMatch;
use std::net::IpAddr;

/// A rule's `host` as a [`HostMatch`], or why it is invalid.
pub fn parse_host(host: Option<&str>) -> Result<HostMatch, String> {
    let host = match host {
        None | Some("") => return Ok(HostMatch::Any),
        Some(h) => h,
    };
    if host.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "host {host:?} must be a DNS name, not an IP address"
        ));
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        check_dns_subdomain(suffix).map_err(|e| format!("wildcard host {host:?}: {e}"))?;
        return Ok(HostMatch::Wildcard(suffix.to_string()));
    }
    check_dns_subdomain(host).map_err(|e| format!("host {host:?}: {e}"))?;
    Ok(HostMatch::Exact(host.to_string()))
}

pub(crate) fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters".to_string());
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let valid_chars = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        let alnum_ends = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
        if label.is_empty() || label.len() > 63 || !valid_chars || !alnum_ends {
            return Err(
                "must be a lowercase RFC 1123 subdomain (labels of a-z, 0-9 and '-', starting and ending alphanumeric)"
                    .to_string(),
            );
        }
    }
    Ok(())
}

/// Checks an `Exact` or `Prefix` path the way the API server does.
pub fn check_strict_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must begin with '/'"));
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(bad) {
            return Err(format!("path {path:?} must not contain {bad:?}"));
        }
    }
    for bad in ["/..", "/."] {
        if path.ends_with(bad) {
            return Err(format!("path {path:?} must not end with {bad:?}"));
        }
    }
    Ok(())
}

/// Reads a boolean annotation: absent = `default`, otherwise exactly "true" or "false".
pub fn parse_bool_annotation(
    name: &str,
    value: Option<&str>,
    default: bool,
) -> Result<bool, String> {
    match value {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "annotation {name}: {other:?} is not \"true\" or \"false\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(parse_host(None), Ok(HostMatch::Any));
        assert_eq!(
            parse_host(Some("foo.example.com")),
            Ok(HostMatch::Exact("foo.example.com".into()))
        );
        assert_eq!(
            parse_host(Some("*.example.com")),
            Ok(HostMatch::Wildcard("example.com".into()))
        );
        for bad in [
            "*",
            "10.0.0.1",
            "::1",
            "Foo.com",
            "foo..com",
            "-foo.com",
            "foo.*.com",
            "foo.com:80",
            "*.*.com",
        ] {
            assert!(parse_host(Some(bad)).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn strict_paths() {
        for good in ["/", "/foo", "/foo/", "/a.b/c..d", "/.well-known/x"] {
            assert!(check_strict_path(good).is_ok(), "{good}");
        }
        for bad in [
            "foo", "", "/a//b", "/a/./b", "/a/../b", "/a%2fb", "/a%2Fb", "/a/..", "/a/.",
        ] {
            assert!(check_strict_path(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn bool_annotations() {
        assert_eq!(parse_bool_annotation("x", None, false), Ok(false));
        assert_eq!(parse_bool_annotation("x", Some("true"), false), Ok(true));
        assert!(parse_bool_annotation("x", Some("yes"), false).is_err());
    }
}
