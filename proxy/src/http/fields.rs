//! Which fields describe a connection rather than the message: one table for every engine
//! and protocol (RFC 9110 §7.6.1; RFC 9113 §8.2.2 refuses them in HTTP/2, `te: trailers`
//! aside). They are never forwarded to the next hop and never relayed to a client over
//! another connection; each place that meets them says what it does with them instead.
//! And [`ResponseField`]: a field weir adds to a response it relays.
//!
//! Must not: hold state.

/// The connection-scoped fields, lowercase.
pub(crate) const CONNECTION_SCOPED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Whether `name` (any case) is one of [`CONNECTION_SCOPED`].
pub(crate) fn is_connection_scoped(name: &[u8]) -> bool {
    CONNECTION_SCOPED
        .iter()
        .any(|scoped| name.eq_ignore_ascii_case(scoped.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_scoped_fields_match_in_any_case() {
        for name in [
            "Connection",
            "KEEP-ALIVE",
            "te",
            "Transfer-Encoding",
            "HTTP2-Settings",
        ] {
            assert!(is_connection_scoped(name.as_bytes()), "{name}");
        }
        for name in ["content-length", "tee", "trailers", "x-upgrade", ""] {
            assert!(!is_connection_scoped(name.as_bytes()), "{name}");
        }
    }
}

/// A field weir adds to a response it relays (a route's response filters): it replaces the
/// upstream's fields of the same name (`Access-Control-*`), or goes beside them
/// (`Set-Cookie`, `Vary`). A replacing field with an empty value removes the upstream's and
/// adds none (`ResponseHeaderModifier`'s `remove`).
#[derive(Debug, Clone)]
pub struct ResponseField {
    pub name: http::HeaderName,
    pub value: http::HeaderValue,
    pub replaces: bool,
}

impl ResponseField {
    pub fn replacing(name: http::HeaderName, value: http::HeaderValue) -> Self {
        ResponseField {
            name,
            value,
            replaces: true,
        }
    }

    pub fn appended(name: http::HeaderName, value: http::HeaderValue) -> Self {
        ResponseField {
            name,
            value,
            replaces: false,
        }
    }
}

/// The fields weir adds to one response; usually none.
pub type ResponseFields = smallvec::SmallVec<[ResponseField; 2]>;
