//! Copies of a client's request that weir sends elsewhere: the external auth check and
//! mirrors. What they share: the request as they describe it ([`Described`]), the URLs
//! with request variables that name where they go ([`Template`]), and the copy's head
//! ([`copy_head`]: the client's fields without those of its own connection).
//!
//! Must not: send anything (that is [`crate::subrequest`]), or decide what an answer means.

use crate::http::fields::is_connection_scoped;
use crate::http::request_view::RequestView;
use crate::subrequest::Destination;
use http::{HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;

/// Fields of the client's request that never go on a copy besides the connection-scoped
/// ones ([`is_connection_scoped`]): its framing, and the `Host` (the copy's is its
/// destination's).
const NOT_COPIED: &[&str] = &["content-length", "expect", "host"];

/// The request as its copies describe it.
pub struct Described<'a> {
    pub scheme: &'static str,
    /// The client's `Host` (or authority).
    pub host: &'a str,
    /// Path and query as the client sent them (normal form).
    pub request_uri: &'a str,
    /// The client as weir trusts it, and the `X-Forwarded-For` chain weir sends.
    pub client: Option<std::net::IpAddr>,
    pub forwarded_for: Option<HeaderValue>,
}

/// The head of a copy of `req` to `url` with `method`: the client's fields except its
/// connection's and `also_skip`, `Host` the URL's authority.
pub fn copy_head(
    req: &impl RequestView,
    method: Method,
    url: &http::Uri,
    also_skip: &[&str],
) -> Result<(Destination, RequestHeader), String> {
    let to = Destination::of(url)?;
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let failed = |e: pingora::BError| e.to_string();
    let mut head = RequestHeader::build(method, path.as_bytes(), Some(16)).map_err(failed)?;
    for (name, value) in req.fields() {
        let skip = is_connection_scoped(name)
            || NOT_COPIED
                .iter()
                .chain(also_skip)
                .any(|n| name.eq_ignore_ascii_case(n.as_bytes()));
        if skip {
            continue;
        }
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            head.append_header(name, value).map_err(failed)?;
        }
    }
    let authority = url.authority().map_or("", |a| a.as_str()).to_string();
    head.insert_header(http::header::HOST, authority)
        .map_err(failed)?;
    Ok((to, head))
}

/// A URL with request variables, as ingress-nginx users write them: `$host`, `$scheme`,
/// `$request_uri`, `$escaped_request_uri` (`weir_discovery::auth::URL_VARIABLES`).
#[derive(Debug)]
pub struct Template(Box<str>);

impl Template {
    pub fn new(url: &str) -> Template {
        Template(url.into())
    }

    /// The URL for one request: one pass over the template, so nothing the request brings
    /// is read as a variable.
    pub fn fill(&self, about: &Described<'_>) -> String {
        let mut out = String::with_capacity(self.0.len() + about.request_uri.len());
        let mut rest = &*self.0;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            // Longest name first: `$escaped_request_uri` is not `$e...`.
            let name = ["$escaped_request_uri", "$request_uri", "$scheme", "$host"]
                .into_iter()
                .find(|name| rest.starts_with(name));
            match name {
                Some("$escaped_request_uri") => out.push_str(&escape(about.request_uri)),
                Some("$request_uri") => out.push_str(about.request_uri),
                Some("$scheme") => out.push_str(about.scheme),
                Some(_) => out.push_str(about.host),
                // Checked when read; kept as written.
                None => out.push('$'),
            }
            rest = &rest[name.map_or(1, str::len)..];
        }
        out.push_str(rest);
        out
    }
}

/// Percent-encodes everything but unreserved characters (as a query parameter's value).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_the_request_once_and_escape_it() {
        let about = Described {
            scheme: "https",
            host: "shop.example",
            request_uri: "/cart?id=1&x=a b&$host",
            client: None,
            forwarded_for: None,
        };
        let t = Template::new("https://$host/oauth2/start?rd=$escaped_request_uri&u=$request_uri");
        assert_eq!(
            t.fill(&about),
            "https://shop.example/oauth2/start?rd=%2Fcart%3Fid%3D1%26x%3Da%20b%26%24host&u=/cart?id=1&x=a b&$host"
        );
    }

    #[test]
    fn a_copy_drops_the_clients_connection_fields() {
        let mut req = RequestHeader::build("POST", b"/orders", None).expect("head");
        for (name, value) in [
            ("host", "shop.example"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("x-request-id", "r1"),
            ("x-original-url", "forged"),
        ] {
            req.append_header(name, value).expect("field");
        }
        let url: http::Uri = "http://10.0.0.9:8080/check?a=1".parse().expect("url");
        let (to, head) = copy_head(&req, Method::GET, &url, &["x-original-url"]).expect("copy");
        assert_eq!(
            (to.host.as_str(), to.port, to.tls),
            ("10.0.0.9", 8080, false)
        );
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.to_string(), "/check?a=1");
        assert_eq!(head.headers.get("host").expect("host"), "10.0.0.9:8080");
        assert_eq!(head.headers.get("x-request-id").expect("kept"), "r1");
        for gone in ["connection", "transfer-encoding", "x-original-url"] {
            assert!(head.headers.get(gone).is_none(), "{gone}");
        }
    }
}
