//! CORS in the request core: a route's `Cors` filter, compiled. Which origins it allows, the
//! preflight weir answers for them, and the `Access-Control-*` fields of their responses
//! (docs/migrating-from-ingress-nginx.md, `enable-cors`).
//!
//! Must not: know which engine or protocol carries the request.

use crate::http::fields::{ResponseField, ResponseFields};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::Result;
use weir_discovery::Cors;

/// A route's CORS rules, ready for the request path.
#[derive(Debug)]
pub struct CorsRules {
    origins: Origins,
    /// `Access-Control-Allow-Credentials: true` goes with a reflected origin only.
    credentials: bool,
    /// The fields every allowed response carries besides the origin and credentials:
    /// methods, headers, exposed headers, max age.
    fixed: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug)]
enum Origins {
    /// `*`: any origin, answered `*`.
    Any,
    List(Vec<OriginMatch>),
}

/// One allowed origin, lowercase: exact, or a scheme and a host suffix (`https://*.a.com`
/// allows `https://x.a.com` and `https://x.y.a.com`, not `https://a.com`).
#[derive(Debug)]
enum OriginMatch {
    Exact(String),
    Subdomains { scheme: String, suffix: String },
}

const ALLOW_ORIGIN: HeaderName = HeaderName::from_static("access-control-allow-origin");
const ALLOW_CREDENTIALS: HeaderName = HeaderName::from_static("access-control-allow-credentials");

impl CorsRules {
    /// `None` when a value cannot be a field value (discovery checked them).
    pub fn new(cors: &Cors) -> Option<CorsRules> {
        let origins = if cors.allow_origins.iter().any(|o| o == "*") {
            Origins::Any
        } else {
            Origins::List(
                cors.allow_origins
                    .iter()
                    .map(|o| match o.split_once("://*.") {
                        Some((scheme, suffix)) => OriginMatch::Subdomains {
                            scheme: format!("{scheme}://"),
                            suffix: format!(".{suffix}"),
                        },
                        None => OriginMatch::Exact(o.clone()),
                    })
                    .collect(),
            )
        };
        let mut fixed = vec![
            (
                HeaderName::from_static("access-control-allow-methods"),
                HeaderValue::from_str(&cors.allow_methods).ok()?,
            ),
            (
                HeaderName::from_static("access-control-allow-headers"),
                HeaderValue::from_str(&cors.allow_headers).ok()?,
            ),
            (
                HeaderName::from_static("access-control-max-age"),
                HeaderValue::from(cors.max_age),
            ),
        ];
        if !cors.expose_headers.is_empty() {
            fixed.push((
                HeaderName::from_static("access-control-expose-headers"),
                HeaderValue::from_str(&cors.expose_headers).ok()?,
            ));
        }
        Some(CorsRules {
            origins,
            credentials: cors.allow_credentials,
            fixed,
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, when allowed:
    /// `*`, or the origin itself.
    pub fn allow_origin(&self, origin: &[u8]) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(list) => {
                // Bytes, not characters: an origin is ASCII, and slicing text at a byte
                // offset could split a character another client sent.
                let allowed = list.iter().any(|m| match m {
                    OriginMatch::Exact(exact) => origin.eq_ignore_ascii_case(exact.as_bytes()),
                    OriginMatch::Subdomains { scheme, suffix } => {
                        origin.len() > scheme.len() + suffix.len()
                            && origin[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
                            && origin[origin.len() - suffix.len()..]
                                .eq_ignore_ascii_case(suffix.as_bytes())
                    }
                });
                allowed
                    .then(|| HeaderValue::from_bytes(origin).ok())
                    .flatten()
            }
        }
    }

    /// The CORS fields of a response to an allowed origin (`allow_origin`'s value). A
    /// reflected origin adds `Vary: Origin`, so a cache keeps one answer per origin.
    pub fn fields(&self, allow_origin: &HeaderValue, out: &mut ResponseFields) {
        let any = allow_origin.as_bytes() == b"*";
        out.push(ResponseField::replacing(ALLOW_ORIGIN, allow_origin.clone()));
        if self.credentials && !any {
            out.push(ResponseField::replacing(
                ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        for (name, value) in &self.fixed {
            out.push(ResponseField::replacing(name.clone(), value.clone()));
        }
        if !any {
            out.push(ResponseField::appended(
                http::header::VARY,
                HeaderValue::from_static("Origin"),
            ));
        }
    }

    /// weir's answer to a preflight from an allowed origin: 204 with the CORS fields.
    pub fn preflight(&self, allow_origin: &HeaderValue) -> Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(204, Some(8))?;
        let mut fields = ResponseFields::new();
        self.fields(allow_origin, &mut fields);
        for field in fields {
            resp.append_header(field.name, field.value)?;
        }
        resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(origins: &[&str], credentials: bool) -> CorsRules {
        CorsRules::new(&Cors {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
            allow_credentials: credentials,
            allow_methods: "GET, POST".into(),
            allow_headers: "Content-Type".into(),
            expose_headers: String::new(),
            max_age: 600,
        })
        .expect("valid")
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_in_any_case() {
        let r = rules(&["https://app.example.com", "https://*.example.org"], true);
        let allowed = |o: &str| {
            r.allow_origin(o.as_bytes())
                .map(|v| v.to_str().unwrap_or("").to_string())
        };
        assert_eq!(
            allowed("https://app.example.com").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            allowed("HTTPS://App.Example.com").as_deref(),
            Some("HTTPS://App.Example.com")
        );
        assert_eq!(
            allowed("https://x.y.example.org").as_deref(),
            Some("https://x.y.example.org")
        );
        assert_eq!(
            allowed("https://example.org"),
            None,
            "a subdomain wildcard needs a label"
        );
        assert_eq!(allowed("http://app.example.com"), None, "the scheme counts");
        assert_eq!(allowed("https://app.example.com.evil.net"), None);
        assert_eq!(allowed("https://evilexample.org"), None);
        // Not ASCII where the scheme or the suffix would end: no match, no panic.
        assert_eq!(allowed("https:/\u{e9}.example.org"), None);
        assert_eq!(allowed("https://x.example.or\u{e9}"), None);
        let any = rules(&["*"], true);
        assert_eq!(
            any.allow_origin(b"https://anyone.net"),
            Some(HeaderValue::from_static("*"))
        );
    }

    #[test]
    fn credentials_go_only_with_a_reflected_origin() {
        let names = |r: &CorsRules, origin: &str| {
            let mut out = ResponseFields::new();
            let value = r.allow_origin(origin.as_bytes()).expect("allowed");
            r.fields(&value, &mut out);
            out.iter()
                .map(|f| f.name.as_str().to_string())
                .collect::<Vec<_>>()
        };
        let listed = names(&rules(&["https://a.com"], true), "https://a.com");
        assert!(listed.contains(&"access-control-allow-credentials".to_string()));
        assert!(listed.contains(&"vary".to_string()));
        let any = names(&rules(&["*"], true), "https://a.com");
        assert!(!any.contains(&"access-control-allow-credentials".to_string()));
        assert!(!any.contains(&"vary".to_string()));
    }
}
