//! Request shapes weir refuses before any routing or upstream work, whatever the protocol:
//! requests over the size limits, and `Host` values that are missing, repeated or not an
//! authority. HTTP/1 framing (the request line, `Content-Length`, `Transfer-Encoding`,
//! chunked bodies) is checked on the raw bytes before this, in [`crate::http::h1`] and
//! [`crate::http::chunked`]; docs/security.md lists every rejection.
//!
//! Must not: allocate, or look at anything but the parsed request header (one pass over the
//! headers per request).

use crate::http::request_view::RequestView;
use http::Version;

/// Size limits of a request header (`--max-request-headers`, `--max-request-header-bytes`,
/// `--max-request-line-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_request_line_bytes: usize,
}

impl Default for RequestLimits {
    /// Envoy's header count (100); nginx's 8 KiB buffer for the request line; 32 KiB of
    /// headers in all (cookies add up).
    fn default() -> Self {
        RequestLimits {
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            max_request_line_bytes: 8 * 1024,
        }
    }
}

/// Why a request was refused: the status to answer and a short label (metric and log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
}

impl Rejection {
    pub(crate) const fn new(status: u16, reason: &'static str) -> Self {
        Rejection { status, reason }
    }

    /// A 400 for `reason`.
    pub const fn bad_request(reason: &'static str) -> Self {
        Rejection::new(400, reason)
    }

    /// The body of the answer.
    pub fn body(&self) -> &'static str {
        match self.status {
            413 => "request body too large\n",
            414 => "request line too long\n",
            431 => "request header too large\n",
            501 => "transfer coding not implemented\n",
            _ => "bad request\n",
        }
    }
}

/// Checks one request header, of any protocol; `Err` says how to refuse it. HTTP/1 framing
/// (request line, `Content-Length`, `Transfer-Encoding`) was checked on the raw head before
/// ([`crate::http::h1`]'s `classify`); HTTP/2 streams frame themselves.
pub fn check_request(req: &impl RequestView, limits: &RequestLimits) -> Result<(), Rejection> {
    // Method, target, version and the separators.
    let line = req.method().as_str().len() + req.raw_path().len() + 10;
    if line > limits.max_request_line_bytes {
        return Err(Rejection::new(414, "request_line_too_long"));
    }
    let http2 = req.version() >= Version::HTTP_2;
    let mut count = 0usize;
    let mut bytes = 0usize;
    let mut hosts = 0usize;
    for (name, value) in req.fields() {
        count += 1;
        bytes += name.len() + value.len() + 4;
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            // HTTP/1 `Host` values were checked with the framing.
            if http2 && !is_authority(value) {
                return Err(Rejection::bad_request("invalid_host"));
            }
        }
    }
    if count > limits.max_headers || bytes > limits.max_header_bytes {
        return Err(Rejection::new(431, "header_too_large"));
    }
    if http2 {
        let authority = req.authority();
        if !authority.is_empty() && !is_authority(authority.as_bytes()) {
            return Err(Rejection::bad_request("invalid_host"));
        }
        return Ok(());
    }
    if hosts > 1 || (hosts == 0 && req.version() == Version::HTTP_11) {
        return Err(Rejection::new(400, "missing_or_duplicate_host"));
    }
    Ok(())
}

/// Whether `value` is a `Host` value RFC 9112 §3.2 allows: an RFC 3986 authority without
/// userinfo — a registered name (letters, digits, `-._~`, sub-delims, `%XX`), an IPv4
/// address or a bracketed IPv6 address — and an optional port of digits. What is not
/// (userinfo, a path, a space, a port that is not a number) would be read differently by
/// the router, the upstream and anything that builds a URL from it.
pub fn is_authority(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|b| *b == b']') else {
            return false;
        };
        let is_v6 = std::str::from_utf8(&value[1..end])
            .ok()
            .and_then(|text| text.parse::<std::net::Ipv6Addr>().ok())
            .is_some();
        if !is_v6 {
            return false;
        }
        match &value[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|b| *b == b':') {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &b""[..]),
        }
    };
    if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut at = 0;
    while at < host.len() {
        match host[at] {
            b'%' => {
                let hex = host.get(at + 1..at + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                at += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => {}
            _ => return false,
        }
        at += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn request(version: Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/upload", Some(8)).expect("request");
        req.set_version(version);
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    fn status(version: Version, headers: &[(&str, &str)]) -> Option<u16> {
        check_request(&request(version, headers), &RequestLimits::default())
            .err()
            .map(|r| r.status)
    }

    #[test]
    fn well_framed_requests_pass() {
        let v11 = Version::HTTP_11;
        assert_eq!(status(v11, &[("host", "a"), ("content-length", "5")]), None);
        assert_eq!(
            status(v11, &[("host", "a"), ("transfer-encoding", "Chunked")]),
            None
        );
        assert_eq!(status(v11, &[("host", "a")]), None);
        assert_eq!(status(v11, &[("host", "a"), ("host", "b")]), Some(400));
        assert_eq!(status(v11, &[]), Some(400), "HTTP/1.1 needs a Host");
        assert_eq!(
            status(Version::HTTP_10, &[]),
            None,
            "HTTP/1.0 needs no Host"
        );
        assert_eq!(
            status(Version::HTTP_2, &[]),
            None,
            ":authority replaces Host"
        );
    }

    #[test]
    fn http2_host_values_outside_the_authority_syntax_are_refused() {
        // HTTP/1 `Host` values are checked with the framing (`h1::classify`).
        let v11 = Version::HTTP_2;
        for host in [
            "a.example",
            "a.example:8080",
            "A-b_c~d.example",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "xn--bcher-kva.example",
            "a%2Db.example",
        ] {
            assert_eq!(status(v11, &[("host", host)]), None, "{host}");
        }
        for host in [
            "user@a.example",
            "a.example/path",
            "a example",
            "a.example:http",
            "a.example:123456",
            "[::1",
            "[not-v6]",
            "[::1]x",
            "a%zz.example",
            "a\\b",
            "a\"b",
        ] {
            assert_eq!(status(v11, &[("host", host)]), Some(400), "{host}");
        }
    }

    #[test]
    fn limits_answer_431_and_414() {
        let limits = RequestLimits {
            max_headers: 3,
            max_header_bytes: 100,
            max_request_line_bytes: 40,
        };
        let many = request(
            Version::HTTP_11,
            &[("host", "a"), ("a", "1"), ("b", "2"), ("c", "3")],
        );
        let check = |req: &RequestHeader| check_request(req, &limits).map_err(|r| r.status);
        assert_eq!(check(&many), Err(431));
        let big = request(
            Version::HTTP_11,
            &[("host", "a"), ("cookie", &"x".repeat(100))],
        );
        assert_eq!(check(&big), Err(431));
        let mut long = request(Version::HTTP_11, &[("host", "a")]);
        long.set_raw_path(format!("/{}", "p".repeat(40)).as_bytes())
            .expect("path");
        assert_eq!(check(&long), Err(414));
        let fine = request(Version::HTTP_11, &[("host", "a")]);
        assert_eq!(check(&fine), Ok(()));
    }
}
