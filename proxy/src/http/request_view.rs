//! [`RequestView`]: what weir's request phases — checks, routing, picking, `X-Forwarded-*`,
//! tracing, logging — read of a request, whichever way a data path holds it.
//!
//! Why: Pingora's proxy path and HTTP/2 streams hold a [`RequestHeader`]; the direct HTTP/1
//! path holds the bytes it received ([`crate::http::h1::ClientRequest`]). Building a
//! `RequestHeader` from those bytes only for the phases to read a handful of fields cost
//! ~1,500 instructions per request (a header map with a hashed entry per field, callgrind);
//! the phases now read either through this trait.
//!
//! Must not: offer a way to change fields (the phases never do; what goes upstream is
//! written by each path), or answer differently for the same request held either way — the
//! unit tests of `h1` compare both views of the same heads.

use http::{HeaderName, Method, Uri, Version};
use pingora::http::RequestHeader;

/// A request as the phases read it (see the module docs).
pub trait RequestView {
    fn method(&self) -> &Method;
    /// The target as routed: the normal form of the path once [`Self::set_uri`] replaced it.
    fn uri(&self) -> &Uri;
    /// Replaces the target with its normal form, which the request is then routed and
    /// forwarded by.
    fn set_uri(&mut self, uri: Uri);
    fn version(&self) -> Version;
    /// The target as it goes upstream.
    fn raw_path(&self) -> &[u8];
    /// The value of the first field named `name`.
    fn field(&self, name: &HeaderName) -> Option<&[u8]>;
    /// Every field, in the order received: name (any case) and value.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// The value of the first field whose name is `name` in any case (for names that come
    /// as text: annotations, propagators).
    fn field_named(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The values of every field named `name`, in order (HTTP/2 may split `cookie`).
    fn field_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        let name = name.as_str().as_bytes();
        self.fields()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The value of the query parameter `name` (as written, not decoded), the first if
    /// several.
    fn query_param(&self, name: &str) -> Option<&str> {
        self.uri()
            .query()?
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The value of the cookie `name`, the first if several (HTTP/2 may split `cookie` into
    /// several fields; a field that is not visible ASCII is skipped).
    fn cookie(&self, name: &str) -> Option<&str> {
        self.field_values(&http::header::COOKIE)
            .filter_map(visible_ascii)
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The request's host: the `Host` field, else the target's authority (HTTP/2
    /// `:authority`); empty when neither is there or `Host` is not visible ASCII.
    fn host(&self) -> &str {
        match self.field(&http::header::HOST) {
            Some(host) => visible_ascii(host).unwrap_or_else(|| self.authority()),
            None => self.authority(),
        }
    }

    /// The target's authority, or empty.
    fn authority(&self) -> &str {
        self.uri().authority().map_or("", |a| a.as_str())
    }
}

/// `value` as text when it is visible ASCII (tabs and spaces allowed), as
/// `HeaderValue::to_str` reads field values.
pub fn visible_ascii(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
    {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

impl RequestView for RequestHeader {
    fn method(&self) -> &Method {
        &self.method
    }

    fn uri(&self) -> &Uri {
        &self.uri
    }

    fn set_uri(&mut self, uri: Uri) {
        RequestHeader::set_uri(self, uri);
    }

    fn version(&self) -> Version {
        self.version
    }

    fn raw_path(&self) -> &[u8] {
        RequestHeader::raw_path(self)
    }

    fn field(&self, name: &HeaderName) -> Option<&[u8]> {
        self.headers.get(name).map(|v| v.as_bytes())
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    }

    fn field_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.headers.get_all(name).iter().map(|v| v.as_bytes())
    }
}
