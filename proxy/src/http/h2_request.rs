//! [`H2Request`]: a request that came on weir's own HTTP/2 server ([`crate::engine::own::h2_server`]), as
//! the request phases read it ([`RequestView`]).
//!
//! Its fields stay the list the HPACK decoder produced, names already lowercase (HTTP/2
//! requires it), so reading one is a short scan rather than a hashed map built for every
//! request. Only the method and the target are parsed, once, because the phases read them
//! as `http` types.
//!
//! Must not: change fields (the upstream copy is written by [`crate::http::h1`]), or accept a
//! target the `http` crate would not.

use crate::http::request_view::{visible_ascii, RequestView};
use bytes::Bytes;
use http::{HeaderName, Method, Uri, Version};
use weir_http2::conn::RequestHead;

pub(crate) struct H2Request {
    method: Method,
    uri: Uri,
    /// The target as it goes upstream: as received, or its normal form once set.
    path: Bytes,
    head: RequestHead,
    /// The request body, when it was read whole before the request was served.
    body: Bytes,
}

impl H2Request {
    /// The view of `head`, or `head` back when the `http` crate refuses its method or
    /// target (for a server that reads it otherwise).
    // Not an error to propagate: the request itself comes back, moved rather than boxed.
    #[allow(clippy::result_large_err)]
    pub(crate) fn new(head: RequestHead) -> Result<H2Request, RequestHead> {
        let Ok(method) = Method::from_bytes(&head.method) else {
            return Err(head);
        };
        let path = head.path.clone().unwrap_or_default();
        let uri = if path.is_empty() {
            Uri::default()
        } else {
            match Uri::from_maybe_shared(path.clone()) {
                Ok(uri) => uri,
                Err(_) => return Err(head),
            }
        };
        Ok(H2Request {
            method,
            uri,
            path,
            head,
            body: Bytes::new(),
        })
    }

    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }

    pub(crate) fn set_body(&mut self, body: Bytes) {
        self.body = body;
    }

    pub(crate) fn head(&self) -> &RequestHead {
        &self.head
    }

    /// The head as received (the target as the client sent it, whatever `set_uri` did).
    pub(crate) fn into_head(self) -> RequestHead {
        self.head
    }
}

impl RequestView for H2Request {
    fn method(&self) -> &Method {
        &self.method
    }

    fn uri(&self) -> &Uri {
        &self.uri
    }

    fn set_uri(&mut self, uri: Uri) {
        self.path = match uri.path_and_query() {
            Some(pq) => Bytes::copy_from_slice(pq.as_str().as_bytes()),
            None => Bytes::from_static(b"/"),
        };
        self.uri = uri;
    }

    fn version(&self) -> Version {
        Version::HTTP_2
    }

    fn raw_path(&self) -> &[u8] {
        &self.path
    }

    fn field(&self, name: &HeaderName) -> Option<&[u8]> {
        let name = name.as_str().as_bytes();
        self.head
            .fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value[..])
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.head.fields.iter().map(|f| (&f.name[..], &f.value[..]))
    }

    fn field_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        let name = name.as_str().as_bytes();
        self.head
            .fields
            .iter()
            .filter(move |f| f.name == name)
            .map(|f| &f.value[..])
    }

    fn authority(&self) -> &str {
        self.head
            .authority
            .as_deref()
            .and_then(visible_ascii)
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_http2::hpack::Field;

    fn head(path: &str, fields: &[(&'static str, &'static str)]) -> RequestHead {
        RequestHead {
            method: Bytes::from_static(b"GET"),
            scheme: Some(Bytes::from_static(b"http")),
            authority: Some(Bytes::from_static(b"web.example")),
            path: Some(Bytes::copy_from_slice(path.as_bytes())),
            fields: fields
                .iter()
                .map(|(n, v)| Field {
                    name: Bytes::from_static(n.as_bytes()),
                    value: Bytes::from_static(v.as_bytes()),
                })
                .collect(),
            content_length: None,
        }
    }

    #[test]
    fn the_view_reads_what_the_client_sent() {
        let mut req = H2Request::new(head(
            "/a/../b?x=1",
            &[("cookie", "a=1"), ("user-agent", "t"), ("cookie", "b=2")],
        ))
        .unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.raw_path(), b"/a/../b?x=1");
        assert_eq!(req.uri().path(), "/a/../b");
        assert_eq!(req.host(), "web.example", ":authority without host");
        assert_eq!(req.field(&http::header::USER_AGENT), Some(&b"t"[..]));
        let cookies: Vec<_> = req.field_values(&http::header::COOKIE).collect();
        assert_eq!(cookies, vec![&b"a=1"[..], &b"b=2"[..]]);
        assert_eq!(req.fields().count(), 3);
        req.set_uri(Uri::from_static("/b?x=1"));
        assert_eq!(req.raw_path(), b"/b?x=1");

        let req = H2Request::new(head("/", &[("host", "other.example")])).unwrap();
        assert_eq!(
            req.host(),
            "other.example",
            "a host field wins, as for HTTP/1"
        );
        assert!(H2Request::new(head("/a b", &[])).is_err());
    }
}
