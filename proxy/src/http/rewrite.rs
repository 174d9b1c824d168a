//! Path rewrites: [`PathRewriter`], ingress-nginx's `rewrite-target` as nginx's
//! `rewrite <pattern> <replacement> break` applies it to a request's path and query, and
//! Gateway API's `ReplaceFullPath` and `ReplacePrefixMatch` ([`replace_prefix`], which
//! redirects use too).
//!
//! Must not: route, or touch anything but the path and query it is given.

use regex::Regex;

/// A route's path rewrite, compiled.
#[derive(Debug)]
pub enum PathRewriter {
    Regex(RegexRewriter),
    /// The whole path becomes this.
    FullPath(Box<str>),
    /// The route's matched prefix is replaced.
    PrefixMatch {
        prefix: Box<str>,
        replacement: Box<str>,
    },
}

impl PathRewriter {
    /// A `RegexReplace` rewrite.
    pub fn new(pattern: &str, replacement: &str) -> Result<PathRewriter, regex::Error> {
        RegexRewriter::new(pattern, replacement).map(PathRewriter::Regex)
    }

    /// The new path and query of a request with `path` and `query`; `None` when the
    /// rewrite does not apply (a regex that does not match).
    pub fn rewrite(&self, path: &str, query: Option<&str>) -> Option<String> {
        let new_path = match self {
            PathRewriter::Regex(regex) => return regex.rewrite(path, query),
            PathRewriter::FullPath(full) => full.to_string(),
            PathRewriter::PrefixMatch {
                prefix,
                replacement,
            } => replace_prefix(path, prefix, replacement),
        };
        Some(match query.filter(|q| !q.is_empty()) {
            Some(query) => format!("{new_path}?{query}"),
            None => new_path,
        })
    }
}

/// `path` (which the route's `prefix` matched, element by element) with that prefix
/// replaced by `replacement`: `/foo/x` with `/foo` -> `/bar` is `/bar/x`, -> `/` is `/x`;
/// never an empty path.
pub fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.get(prefix.len()..).unwrap_or("");
    let replacement = replacement.trim_end_matches('/');
    let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
    // A leading `/` unless the replacement has one, or is empty before a rest that has.
    let leading = replacement.starts_with('/') || (replacement.is_empty() && rest.starts_with('/'));
    if !leading {
        out.push('/');
    }
    out.push_str(replacement);
    if !rest.is_empty() && !rest.starts_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// A compiled `RegexReplace` path rewrite (docs/migrating-from-ingress-nginx.md).
#[derive(Debug)]
pub struct RegexRewriter {
    /// The rule's path, matched at the start of the request's path, case-insensitive.
    pattern: Regex,
    /// The new path (and query): literal text and the pattern's captures, in order; read
    /// once here so a request only copies.
    pieces: Box<[Piece]>,
    /// Some piece is a capture (else a match is all it takes: cheaper than capturing).
    captures: bool,
    /// The replacement has a query of its own: the request's follows it after `&`.
    own_query: bool,
    /// The replacement ends in `?`: the request's query is dropped.
    drops_query: bool,
}

/// A piece of a replacement.
#[derive(Debug)]
enum Piece {
    Text(Box<str>),
    /// `$1`..`$9`.
    Capture(usize),
}

impl RegexRewriter {
    pub fn new(pattern: &str, replacement: &str) -> Result<RegexRewriter, regex::Error> {
        let drops_query = replacement.ends_with('?');
        let written = replacement.strip_suffix('?').unwrap_or(replacement);
        let mut text = String::new();
        let mut pieces = Vec::new();
        let mut rest = written;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            let group = rest[at + 1..].chars().next().and_then(|c| c.to_digit(10));
            match group {
                Some(group) if group > 0 => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text).into()));
                    }
                    pieces.push(Piece::Capture(group as usize));
                    rest = &rest[at + 2..];
                }
                // Not a capture reference (the annotation's check refuses these): as written.
                _ => {
                    text.push('$');
                    rest = &rest[at + 1..];
                }
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text.into()));
        }
        Ok(RegexRewriter {
            pattern: Regex::new(&format!("^(?i:{pattern})"))?,
            captures: pieces.iter().any(|p| matches!(p, Piece::Capture(_))),
            own_query: written.contains('?'),
            drops_query,
            pieces: pieces.into(),
        })
    }

    /// The path and query that `path` (with `query`) is rewritten to, or `None` when the
    /// pattern does not match `path`. As nginx: the whole path becomes the replacement with
    /// its captures filled in; the request's query follows it, after `&` when the
    /// replacement has a query of its own, and is dropped when the replacement ends in `?`.
    /// A result that does not start with `/` gets one.
    pub fn rewrite(&self, path: &str, query: Option<&str>) -> Option<String> {
        let captures = match self.captures {
            true => Some(self.pattern.captures(path)?),
            false if self.pattern.is_match(path) => None,
            false => return None,
        };
        let query = query.filter(|q| !q.is_empty() && !self.drops_query);
        let mut out = String::with_capacity(path.len() + query.map_or(0, str::len) + 32);
        for piece in self.pieces.iter() {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Capture(group) => {
                    let captured = captures.as_ref().and_then(|c| c.get(*group));
                    out.push_str(captured.map_or("", |m| m.as_str()));
                }
            }
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        if let Some(query) = query {
            out.push(if self.own_query { '&' } else { '?' });
            out.push_str(query);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(
        pattern: &str,
        replacement: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<String> {
        PathRewriter::new(pattern, replacement)
            .unwrap_or_else(|e| panic!("{e}"))
            .rewrite(path, query)
    }

    #[test]
    fn a_prefix_is_replaced_element_wise_and_never_leaves_an_empty_path() {
        for (path, prefix, replacement, expected) in [
            ("/foo/x", "/foo", "/bar", "/bar/x"),
            ("/foo", "/foo", "/bar", "/bar"),
            ("/foo/", "/foo", "/bar", "/bar/"),
            ("/foo/x", "/foo", "/", "/x"),
            ("/foo", "/foo", "/", "/"),
            ("/foo/x", "/foo/", "/bar/", "/bar/x"),
            ("/x", "/", "/bar", "/bar/x"),
            ("/", "/", "/bar", "/bar/"),
        ] {
            assert_eq!(
                replace_prefix(path, prefix, replacement),
                expected,
                "{path} {prefix} {replacement}"
            );
        }
        let full = PathRewriter::FullPath("/new".into());
        assert_eq!(
            full.rewrite("/old/x", Some("a=1")).as_deref(),
            Some("/new?a=1")
        );
    }

    #[test]
    fn captures_fill_the_replacement_and_the_query_follows() {
        let p = "/something(/|$)(.*)";
        assert_eq!(
            rewrite(p, "/$2", "/something/new/x", None).as_deref(),
            Some("/new/x")
        );
        assert_eq!(
            rewrite(p, "/$2", "/something", Some("a=1")).as_deref(),
            Some("/?a=1")
        );
        // Case-insensitive, as ingress-nginx's regex locations.
        assert_eq!(
            rewrite(p, "/$2", "/SomeThing/Up", None).as_deref(),
            Some("/Up")
        );
        // The whole path is replaced: a replacement without captures drops the rest.
        assert_eq!(
            rewrite("/api", "/", "/api/users/7", Some("q=x")).as_deref(),
            Some("/?q=x")
        );
        // A group that took no part is empty; `$` not before 1-9 stays as written.
        assert_eq!(
            rewrite("/a(b)?", "/x$1$", "/a", None).as_deref(),
            Some("/x$")
        );
        // Anchored at the start of the path.
        assert_eq!(rewrite("/api", "/", "/v1/api", None), None);
    }

    #[test]
    fn the_replacement_s_own_query_comes_first_and_a_final_question_mark_drops_the_request_s() {
        let p = "/shop/(.*)";
        assert_eq!(
            rewrite(p, "/store?item=$1", "/shop/42", Some("ref=mail")).as_deref(),
            Some("/store?item=42&ref=mail")
        );
        assert_eq!(
            rewrite(p, "/store/$1?", "/shop/42", Some("ref=mail")).as_deref(),
            Some("/store/42")
        );
        // A replacement that starts with a capture still makes an absolute path.
        assert_eq!(
            rewrite("/(app)/(.*)", "$2", "/app/x", None).as_deref(),
            Some("/x")
        );
        // A capture that starts with `/` is the path's start; an empty replacement is `/`.
        assert_eq!(
            rewrite("(/app)(.*)", "$1$2", "/app/x", None).as_deref(),
            Some("/app/x")
        );
        assert_eq!(
            rewrite("/app", "", "/app", Some("q=1")).as_deref(),
            Some("/?q=1")
        );
    }
}
