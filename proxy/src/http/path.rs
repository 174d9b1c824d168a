//! The request path weir routes on and forwards: one normal form, so that
//! `//`, `/./`, `/../`, `%2e%2e` and friends cannot route a request to a backend that the
//! plain path would not reach, while the backend resolves them to that plain path.
//!
//! Normal form (RFC 3986 §6.2.2): percent-encoded unreserved characters decoded (`%2e` ->
//! `.`, `%41` -> `A`), other escapes kept with upper-case hex; runs of `/` merged; `.` and
//! `..` segments removed (never above the root). Refused, because servers disagree on them:
//! encoded `/` and `\` (`%2F`, `%5C`) and a raw `\`, unless `--allow-encoded-slashes`
//! keeps encoded slashes as they are; a dot segment with parameters (`..;`, `.;`, which
//! Tomcat and Jetty resolve as `..`); a malformed escape; an encoded NUL.
//!
//! Must not: allocate when the path is already normal (the common case is one scan).

use std::borrow::Cow;

/// Why a path was refused (the reason label of `weir_requests_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    EncodedSlash,
    DotSegmentWithParameters,
    MalformedEscape,
}

impl PathRejection {
    pub fn reason(self) -> &'static str {
        match self {
            PathRejection::EncodedSlash => "encoded_slash_in_path",
            PathRejection::DotSegmentWithParameters => "dot_segment_with_parameters",
            PathRejection::MalformedEscape => "malformed_path_escape",
        }
    }
}

/// The normal form of an absolute path (`path` starts with `/`; anything else, such as
/// `*`, is returned unchanged).
pub fn normalize(path: &str, allow_encoded_slashes: bool) -> Result<Cow<'_, str>, PathRejection> {
    if !path.starts_with('/') || is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path, allow_encoded_slashes)?;
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s if s.starts_with(".;") || s.starts_with("..;") => {
                return Err(PathRejection::DotSegmentWithParameters)
            }
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || decoded == "/";
    let mut normal = String::with_capacity(decoded.len());
    for segment in &out {
        normal.push('/');
        normal.push_str(segment);
    }
    if trailing || normal.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Nothing to do: no `//`, no dot segment, no escape, no backslash.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    !bytes.iter().any(|b| matches!(b, b'%' | b'\\'))
        && !bytes.windows(2).any(|w| w == b"//")
        && !path
            .split('/')
            .any(|s| s == "." || s == ".." || s.starts_with(".;") || s.starts_with("..;"))
}

fn decode_unreserved(path: &str, allow_encoded_slashes: bool) -> Result<String, PathRejection> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathRejection::EncodedSlash),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .ok_or(PathRejection::MalformedEscape)?;
                let value = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathRejection::MalformedEscape)?;
                match value {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        out.push(char::from(value))
                    }
                    b'/' if allow_encoded_slashes => out.push_str("%2F"),
                    b'/' | b'\\' => return Err(PathRejection::EncodedSlash),
                    0 => return Err(PathRejection::MalformedEscape),
                    other => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(char::from(HEX[usize::from(other >> 4)]));
                        out.push(char::from(HEX[usize::from(other & 15)]));
                    }
                }
                i += 3;
            }
            _ => {
                // Copy the run up to the next special byte in one go (valid UTF-8: `path`
                // is a str and the run ends before an ASCII byte).
                let end = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b'%' | b'\\'))
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathRejection> {
        normalize(path, false).map(|p| p.into_owned())
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/api", "/api/v1/items", "/a.b/c..d/.e", "/x;y=z", "*"] {
            assert!(matches!(normalize(p, false), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_slashes_and_unreserved_escapes() {
        for (input, want) in [
            ("//api//x", "/api/x"),
            ("/./api/./x", "/api/x"),
            ("/web/../api/x", "/api/x"),
            ("/../../api", "/api"),
            ("/%2e%2e/api", "/api"),
            ("/web/%2E%2E/api/x", "/api/x"),
            ("/web/.%2e/api", "/api"),
            ("/%61pi/x", "/api/x"),
            ("/api/", "/api/"),
            ("/api/x/..", "/api/"),
            ("/api/.", "/api/"),
            ("/..", "/"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
        ] {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(norm("/web%2F..%2Fapi"), Err(PathRejection::EncodedSlash));
        assert_eq!(norm("/web%5c..%5capi"), Err(PathRejection::EncodedSlash));
        assert_eq!(norm("/web\\..\\api"), Err(PathRejection::EncodedSlash));
        assert_eq!(
            norm("/api/..;/admin"),
            Err(PathRejection::DotSegmentWithParameters)
        );
        assert_eq!(
            norm("/api/.;x/admin"),
            Err(PathRejection::DotSegmentWithParameters)
        );
        assert_eq!(norm("/a%2"), Err(PathRejection::MalformedEscape));
        assert_eq!(norm("/a%zz"), Err(PathRejection::MalformedEscape));
        assert_eq!(norm("/a%00b"), Err(PathRejection::MalformedEscape));
        // Opted in: encoded slashes stay encoded, so they never split a segment.
        assert_eq!(
            normalize("/repos/a%2fb/x", true).map(|p| p.into_owned()),
            Ok("/repos/a%2Fb/x".to_string())
        );
    }
}
