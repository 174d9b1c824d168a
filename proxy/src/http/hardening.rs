//! Request shapes weir refuses before any routing or upstream work: framing that
//! two HTTP parsers could read differently (request smuggling) and requests over the size
//! limits. Pingora's parser already rejects obsolete line folding, NUL/CR in values, invalid
//! header names, negative or non-numeric Content-Length and unknown versions; what it lets
//! through (Content-Length beside Transfer-Encoding, repeated framing headers, `5, 5`,
//! codings other than `chunked`, HTTP/1.1 without Host, oversized headers) is checked here.
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
    const fn new(status: u16, reason: &'static str) -> Self {
        Rejection { status, reason }
    }

    /// A 400 for `reason`.
    pub const fn bad_request(reason: &'static str) -> Self {
        Rejection::new(400, reason)
    }

    /// The body of the answer.
    pub fn body(&self) -> &'static str {
        match self.status {
            414 => "request line too long\n",
            431 => "request header too large\n",
            501 => "transfer coding not implemented\n",
            _ => "bad request\n",
        }
    }
}

/// Checks one request header; `Err` says how to refuse it. HTTP/2 requests have no
/// message framing headers of their own (the stream frames them) and skip those checks.
///
/// `raw_header` is the header block as received (HTTP/1): Pingora drops Content-Length when
/// Transfer-Encoding is present (RFC 9112 §6.3), so only the raw bytes still show that a
/// client sent both — the classic smuggling shape, refused here as nginx does.
pub fn check_request(
    req: &impl RequestView,
    raw_header: impl FnOnce() -> Option<bytes::Bytes>,
    limits: &RequestLimits,
) -> Result<(), Rejection> {
    // Method, target, version and the separators.
    let line = req.method().as_str().len() + req.raw_path().len() + 10;
    if line > limits.max_request_line_bytes {
        return Err(Rejection::new(414, "request_line_too_long"));
    }
    let mut count = 0usize;
    let mut bytes = 0usize;
    let mut content_lengths = 0usize;
    let mut transfer_encodings = 0usize;
    let mut hosts = 0usize;
    for (name, value) in req.fields() {
        count += 1;
        bytes += name.len() + value.len() + 4;
        if name.eq_ignore_ascii_case(b"content-length") {
            content_lengths += 1;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Rejection::new(400, "invalid_content_length"));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encodings += 1;
            if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Rejection::new(501, "unsupported_transfer_encoding"));
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
    }
    if count > limits.max_headers || bytes > limits.max_header_bytes {
        return Err(Rejection::new(431, "header_too_large"));
    }
    if req.version() >= Version::HTTP_2 {
        return Ok(());
    }
    let content_length_dropped =
        || raw_header().is_some_and(|raw| has_field(&raw, b"content-length"));
    if transfer_encodings > 0 && (content_lengths > 0 || content_length_dropped()) {
        return Err(Rejection::new(400, "content_length_with_transfer_encoding"));
    }
    if content_lengths > 1 {
        return Err(Rejection::new(400, "duplicate_content_length"));
    }
    if transfer_encodings > 1 {
        return Err(Rejection::new(400, "duplicate_transfer_encoding"));
    }
    if hosts > 1 || (hosts == 0 && req.version() == Version::HTTP_11) {
        return Err(Rejection::new(400, "missing_or_duplicate_host"));
    }
    Ok(())
}

/// Whether a raw header block has a field `name` (lowercase), at the start of a line.
fn has_field(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()..].trim_ascii_start().first() == Some(&b':')
    })
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
        check_request(
            &request(version, headers),
            || None,
            &RequestLimits::default(),
        )
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
    fn ambiguous_framing_is_refused() {
        let v11 = Version::HTTP_11;
        let host = ("host", "a");
        for (headers, expected) in [
            (
                vec![
                    host,
                    ("content-length", "5"),
                    ("transfer-encoding", "chunked"),
                ],
                400,
            ),
            (
                vec![host, ("content-length", "5"), ("content-length", "5")],
                400,
            ),
            (vec![host, ("content-length", "5, 5")], 400),
            (vec![host, ("content-length", "")], 400),
            (
                vec![
                    host,
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                400,
            ),
            (vec![host, ("transfer-encoding", "gzip, chunked")], 501),
            (vec![host, ("transfer-encoding", "chunked, identity")], 501),
            (vec![host, ("host", "b")], 400),
            (vec![], 400),
        ] {
            assert_eq!(status(v11, &headers), Some(expected), "{headers:?}");
        }
    }

    #[test]
    fn content_length_dropped_by_the_parser_is_still_seen() {
        // What Pingora hands over for `Content-Length` + `Transfer-Encoding`: CL removed.
        let req = request(
            Version::HTTP_11,
            &[("host", "a"), ("transfer-encoding", "chunked")],
        );
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let verdict = check_request(
            &req,
            || Some(bytes::Bytes::from(raw)),
            &RequestLimits::default(),
        );
        assert_eq!(verdict.map_err(|r| r.status), Err(400));
        let clean = "POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let verdict = check_request(
            &req,
            || Some(bytes::Bytes::from(clean)),
            &RequestLimits::default(),
        );
        assert_eq!(verdict, Ok(()));
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
        let check =
            |req: &RequestHeader| check_request(req, || None, &limits).map_err(|r| r.status);
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
