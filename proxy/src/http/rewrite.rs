//! Path rewrites: [`PathRewriter`], ingress-nginx's `rewrite-target` as nginx's
//! `rewrite <pattern> <replacement> break` applies it to a request's path and query.
//!
//! Must not: route, or touch anything but the path and query it is given.

use regex::Regex;

/// A compiled `RegexReplace` path rewrite (docs/migrating-from-ingress-nginx.md).
#[derive(Debug)]
pub struct PathRewriter {
    /// The rule's path, matched at the start of the request's path, case-insensitive.
    pattern: Regex,
    /// The new path (and query), `$1`..`$9` standing for the pattern's captures.
    replacement: String,
}

impl PathRewriter {
    pub fn new(pattern: &str, replacement: &str) -> Result<PathRewriter, regex::Error> {
        Ok(PathRewriter {
            pattern: Regex::new(&format!("^(?i:{pattern})"))?,
            replacement: replacement.to_string(),
        })
    }

    /// The path and query that `path` (with `query`) is rewritten to, or `None` when the
    /// pattern does not match `path`. As nginx: the whole path becomes the replacement with
    /// its captures filled in; the request's query follows it, after `&` when the
    /// replacement has a query of its own, and is dropped when the replacement ends in `?`.
    /// A result that does not start with `/` gets one.
    pub fn rewrite(&self, path: &str, query: Option<&str>) -> Option<String> {
        let mut out = String::with_capacity(self.replacement.len() + path.len() + 8);
        if !self.replacement.contains('$') {
            // Nothing to fill in: a match is all it takes (cheaper than capturing).
            if !self.pattern.is_match(path) {
                return None;
            }
            out.push_str(&self.replacement);
            return Some(Self::finish(out, query));
        }
        let captures = self.pattern.captures(path)?;
        let mut rest = self.replacement.as_str();
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let group = rest[at + 1..].chars().next().and_then(|c| c.to_digit(10));
            match group {
                Some(group) if group > 0 => {
                    let captured = captures.get(group as usize).map_or("", |m| m.as_str());
                    out.push_str(captured);
                    rest = &rest[at + 2..];
                }
                // Not a capture reference (the annotation's check refuses these): as written.
                _ => {
                    out.push('$');
                    rest = &rest[at + 1..];
                }
            }
        }
        out.push_str(rest);
        Some(Self::finish(out, query))
    }

    /// The filled-in replacement `out` made absolute, with the request's `query` after it
    /// as nginx keeps it.
    fn finish(mut out: String, query: Option<&str>) -> String {
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        if let Some(kept) = out.strip_suffix('?') {
            out.truncate(kept.len());
            return out;
        }
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(query);
        }
        out
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
    }
}
