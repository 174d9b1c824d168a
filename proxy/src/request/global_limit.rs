//! Fleet-wide rate limits (ingress-nginx's `global-rate-limit`): what a request is counted
//! by (its key, from `global-rate-limit-key`), and under which name in the store
//! ([`crate::redis_store`], shared by every weir of the fleet).
//!
//! Must not: talk to Redis itself, or limit a request whose key cannot be made (an
//! ignored client, a key field the request lacks): those go on uncounted, as in
//! ingress-nginx.

use crate::http::request_view::RequestView;
use http::HeaderName;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;
use weir_balancer::ring::key_hash;
use weir_discovery::{Cidr, GlobalRateLimit};

/// One Ingress's fleet-wide limit, compiled.
#[derive(Debug)]
pub struct GlobalLimiter {
    /// The Ingress (`namespace/name`): limits of two Ingresses never share a count.
    scope: Box<str>,
    pub limit: u64,
    pub window: Duration,
    key: Box<[KeyPart]>,
    ignored: Box<[Cidr]>,
}

#[derive(Debug)]
enum KeyPart {
    Text(Box<str>),
    RemoteAddr,
    Host,
    Uri,
    /// `$http_x_api_client`: the field `x-api-client`.
    Field(HeaderName),
}

impl GlobalLimiter {
    pub fn new(scope: &str, limit: &GlobalRateLimit) -> GlobalLimiter {
        GlobalLimiter {
            scope: scope.into(),
            limit: limit.limit,
            window: limit.window,
            key: parse_key(&limit.key).into_boxed_slice(),
            ignored: limit.ignored.clone().into_boxed_slice(),
        }
    }

    /// The store's name for the count `req` belongs to, or `None` when the request is not
    /// counted (its client is ignored, or its key is empty).
    pub fn store_key(&self, req: &impl RequestView, client: Option<IpAddr>) -> Option<String> {
        if client.is_some_and(|ip| self.ignored.iter().any(|net| net.contains(ip))) {
            return None;
        }
        let mut key = String::new();
        let mut filled = false;
        for part in self.key.iter() {
            match part {
                KeyPart::Text(text) => key.push_str(text),
                KeyPart::RemoteAddr => {
                    let _ = write!(key, "{}", client?);
                    filled = true;
                }
                KeyPart::Host => {
                    key.push_str(req.host());
                    filled = true;
                }
                KeyPart::Uri => {
                    key.push_str(req.uri().path());
                    filled = true;
                }
                KeyPart::Field(name) => {
                    if let Some(value) = req.field(name) {
                        key.push_str(&String::from_utf8_lossy(value));
                        filled = true;
                    }
                }
            }
        }
        if key.is_empty() || (!filled && self.key.iter().any(|p| !matches!(p, KeyPart::Text(_)))) {
            return None;
        }
        // Hashed: a client's key (a field it sends) never makes the store's names long.
        Some(format!(
            "weir:grl:{}:{:016x}",
            self.scope,
            key_hash(key.as_bytes())
        ))
    }
}

/// `global-rate-limit-key` as parts (checked when read: every `$name` is one weir fills).
fn parse_key(text: &str) -> Vec<KeyPart> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        if at > 0 {
            parts.push(KeyPart::Text(rest[..at].into()));
        }
        rest = &rest[at + 1..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..len];
        let part = match name {
            "remote_addr" | "binary_remote_addr" => Some(KeyPart::RemoteAddr),
            "host" => Some(KeyPart::Host),
            "uri" => Some(KeyPart::Uri),
            _ => name
                .strip_prefix("http_")
                .and_then(|field| HeaderName::try_from(field.replace('_', "-")).ok())
                .map(KeyPart::Field),
        };
        parts.push(part.unwrap_or_else(|| KeyPart::Text(format!("${name}").into())));
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        parts.push(KeyPart::Text(rest.into()));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn limiter(key: &str, ignored: &[&str]) -> GlobalLimiter {
        GlobalLimiter::new(
            "demo/api",
            &GlobalRateLimit {
                limit: 10,
                window: Duration::from_secs(60),
                key: key.into(),
                ignored: ignored.iter().map(|c| c.parse().expect("cidr")).collect(),
            },
        )
    }

    fn request(fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/orders?x=1", None).expect("head");
        for (name, value) in fields {
            req.append_header(name.to_string(), *value).expect("field");
        }
        req
    }

    #[test]
    fn keys_are_made_of_the_request_and_scoped_to_the_ingress() {
        let client = Some("192.0.2.7".parse().expect("ip"));
        let by_client = limiter("$remote_addr", &[]);
        let a = by_client.store_key(&request(&[]), client).expect("key");
        assert!(a.starts_with("weir:grl:demo/api:"), "{a}");
        let other = by_client.store_key(&request(&[]), Some("192.0.2.8".parse().expect("ip")));
        assert_ne!(Some(a.clone()), other);
        // By a field: requests without it are not counted.
        let by_field = limiter("$http_x_api_client", &[]);
        let k1 = by_field.store_key(&request(&[("x-api-client", "team-a")]), client);
        let k2 = by_field.store_key(
            &request(&[("x-api-client", "team-a")]),
            Some("10.0.0.1".parse().expect("ip")),
        );
        assert!(k1.is_some());
        assert_eq!(k1, k2, "the same client field, whatever the address");
        assert_eq!(by_field.store_key(&request(&[]), client), None);
        // Text and variables together; the path without its query.
        let mixed = limiter("api:$uri:$remote_addr", &[]);
        assert!(mixed.store_key(&request(&[]), client).is_some());
        // Ignored clients are never counted.
        let ignoring = limiter("$remote_addr", &["192.0.2.0/24"]);
        assert_eq!(ignoring.store_key(&request(&[]), client), None);
        assert!(ignoring
            .store_key(&request(&[]), Some("198.51.100.1".parse().expect("ip")))
            .is_some());
    }
}
