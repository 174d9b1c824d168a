//! [`Router`]: host + path matching compiled from a snapshot's rules.
//!
//! Host: the most specific group that has any rule decides — exact host, else wildcard
//! (`*.example.com` matches exactly one more label), else rules without host. Groups do not
//! fall through to each other (as with Envoy virtual hosts and nginx server blocks); a
//! request whose group has no matching path goes to the `defaultBackend`, else 404.
//!
//! Path, within a group: the longest matching rule path (as written) wins; on equal length
//! Exact beats Prefix beats Regex. Exact paths are one hash lookup, Prefix paths a walk
//! down a segment trie, so lookup cost grows with the request's segments, not with the
//! number of rules. Regex paths (`weir.dev/path-regex`) are tried in order of length and
//! cost one match each: keep them few.
//!
//! Conditions (header, query parameter and method matches, [`Conditions`]): the routes of
//! one host and path are tried in precedence order; when none of them takes the request,
//! the next most specific path of the host's group does.
//!
//! Must not: know about pools, Pingora or metrics. The target type is generic so matching
//! can be tested on its own.

use crate::http::request_view::RequestView;
use crate::routes::conditions::{Conditioned, Conditions};
use regex::Regex;
use smallvec::SmallVec;
use std::collections::HashMap;
use weir_discovery::{HostMatch, PathMatch};

#[derive(Debug)]
pub struct Router<T> {
    exact_hosts: HashMap<Box<str>, PathTable<T>>,
    wildcard_hosts: HashMap<Box<str>, PathTable<T>>,
    /// Gateway API wildcards: one or more labels before the suffix (empty for most tables).
    suffix_hosts: HashMap<Box<str>, PathTable<T>>,
    any_host: Option<PathTable<T>>,
    default: Option<T>,
}

/// Match quality: written length first, then kind (Exact > Prefix > Regex).
type Rank = (usize, u8);
const EXACT: u8 = 2;
const PREFIX: u8 = 1;
const REGEX: u8 = 0;

#[derive(Debug)]
struct PathTable<T> {
    exact: HashMap<Box<str>, Conditioned<T>>,
    prefixes: TrieNode<T>,
    /// Sorted longest first.
    regexes: Vec<(Regex, usize, Conditioned<T>)>,
}

#[derive(Debug)]
struct TrieNode<T> {
    children: HashMap<Box<str>, TrieNode<T>>,
    /// The Prefix rules ending at this node, with their written length.
    target: Option<(usize, Conditioned<T>)>,
}

impl<T> Default for TrieNode<T> {
    fn default() -> Self {
        TrieNode {
            children: HashMap::new(),
            target: None,
        }
    }
}

impl<T> Default for PathTable<T> {
    fn default() -> Self {
        PathTable {
            exact: HashMap::new(),
            prefixes: TrieNode::default(),
            regexes: Vec::new(),
        }
    }
}

/// Path elements as Kubernetes' Prefix matching sees them: split on `/`, empty elements
/// (leading, trailing and doubled slashes) ignored.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl<T> PathTable<T> {
    /// Adds a rule; for a given path and conditions, the first rule added keeps it.
    fn insert(
        &mut self,
        path: &PathMatch,
        conditions: Conditions,
        target: T,
    ) -> Result<(), String> {
        match path {
            PathMatch::Exact(p) => match self.exact.get_mut(p.as_str()) {
                Some(slot) => slot.add(conditions, target),
                None => {
                    self.exact
                        .insert(p.as_str().into(), Conditioned::new(conditions, target));
                }
            },
            PathMatch::Prefix(p) => {
                let mut node = &mut self.prefixes;
                for seg in segments(p) {
                    node = node.children.entry(seg.into()).or_default();
                }
                // `/foo` and `/foo/` land on one node; the longer written path outranks.
                match &mut node.target {
                    Some((len, slot)) if p.len() == *len => slot.add(conditions, target),
                    Some((len, _)) if p.len() < *len => {}
                    _ => node.target = Some((p.len(), Conditioned::new(conditions, target))),
                }
            }
            PathMatch::Regex(p) | PathMatch::RegexIgnoreCase(p) => {
                if let Some((_, _, slot)) = self
                    .regexes
                    .iter_mut()
                    .find(|(re, _, _)| re.as_str() == regex_source(path, p))
                {
                    slot.add(conditions, target);
                    return Ok(());
                }
                let re = Regex::new(&regex_source(path, p)).map_err(|e| e.to_string())?;
                self.regexes
                    .push((re, p.len(), Conditioned::new(conditions, target)));
                self.regexes.sort_by_key(|r| std::cmp::Reverse(r.1));
            }
        }
        Ok(())
    }

    /// The most specific path rule that matches `path`.
    fn best(&self, path: &str) -> Option<&Conditioned<T>> {
        let mut best: Option<(Rank, &Conditioned<T>)> =
            self.exact.get(path).map(|t| ((path.len(), EXACT), t));

        let mut node = &self.prefixes;
        let mut deepest = node.target.as_ref();
        for seg in segments(path) {
            match node.children.get(seg) {
                Some(child) => {
                    node = child;
                    if child.target.is_some() {
                        deepest = child.target.as_ref();
                    }
                }
                None => break,
            }
        }
        if let Some((len, t)) = deepest {
            let rank = (*len, PREFIX);
            if best.as_ref().is_none_or(|(b, _)| rank > *b) {
                best = Some((rank, t));
            }
        }

        for (re, len, t) in &self.regexes {
            let rank = (*len, REGEX);
            if best.as_ref().is_some_and(|(b, _)| *b > rank) {
                break; // sorted longest first: nothing later can win
            }
            if re.is_match(path) {
                best = Some((rank, t));
                break;
            }
        }
        best.map(|(_, t)| t)
    }

    /// Every path rule that matches `path`, most specific first (for a request the best
    /// one's conditions turned away).
    fn ranked(&self, path: &str) -> SmallVec<[(Rank, &Conditioned<T>); 4]> {
        let mut all: SmallVec<[(Rank, &Conditioned<T>); 4]> = SmallVec::new();
        if let Some(t) = self.exact.get(path) {
            all.push(((path.len(), EXACT), t));
        }
        let mut node = &self.prefixes;
        if let Some((len, t)) = &node.target {
            all.push(((*len, PREFIX), t));
        }
        for seg in segments(path) {
            match node.children.get(seg) {
                Some(child) => {
                    node = child;
                    if let Some((len, t)) = &child.target {
                        all.push(((*len, PREFIX), t));
                    }
                }
                None => break,
            }
        }
        for (re, len, t) in &self.regexes {
            if re.is_match(path) {
                all.push(((*len, REGEX), t));
            }
        }
        // Stable: among equal ranks the order above (regexes in their table order) stays.
        all.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
        all
    }

    /// The target of the most specific rule whose conditions `req` meets.
    fn lookup(&self, path: &str, req: &impl RequestView) -> Option<&T> {
        let best = self.best(path)?;
        if let Some(target) = best.first_for(req) {
            return Some(target);
        }
        self.ranked(path)
            .into_iter()
            .filter(|(_, slot)| !std::ptr::eq(*slot, best))
            .find_map(|(_, slot)| slot.first_for(req))
    }
}

/// The anchored source of a regex rule path.
fn regex_source(path: &PathMatch, written: &str) -> String {
    match path {
        PathMatch::RegexIgnoreCase(_) => format!("^(?i:{written})"),
        _ => format!("^(?:{written})"),
    }
}

impl<T> Router<T> {
    pub fn new() -> Self {
        Router {
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            suffix_hosts: HashMap::new(),
            any_host: None,
            default: None,
        }
    }

    /// Adds a rule. Rules added earlier win over later ones for the same host and path.
    pub fn insert(&mut self, host: &HostMatch, path: &PathMatch, target: T) -> Result<(), String> {
        self.insert_when(host, path, Conditions::default(), target)
    }

    /// Adds a rule that takes only requests meeting `conditions`.
    pub fn insert_when(
        &mut self,
        host: &HostMatch,
        path: &PathMatch,
        conditions: Conditions,
        target: T,
    ) -> Result<(), String> {
        let table = match host {
            HostMatch::Any => self.any_host.get_or_insert_with(PathTable::default),
            HostMatch::Exact(h) => self.exact_hosts.entry(h.as_str().into()).or_default(),
            HostMatch::Wildcard(suffix) => self
                .wildcard_hosts
                .entry(suffix.as_str().into())
                .or_default(),
            HostMatch::Suffix(suffix) => {
                self.suffix_hosts.entry(suffix.as_str().into()).or_default()
            }
        };
        table.insert(path, conditions, target)
    }

    pub fn set_default(&mut self, target: T) {
        self.default = Some(target);
    }

    /// The target for a request on `host` (which may carry a port and any letter case) and
    /// `path` (in normal form).
    pub fn lookup(&self, host: &str, path: &str, req: &impl RequestView) -> Option<&T> {
        let table = self.host_table(host);
        table
            .and_then(|t| t.lookup(path, req))
            .or(self.default.as_ref())
    }

    /// The target for `host` and `path` when no request could be routed elsewhere by its
    /// other parts; `Err` when conditions of the rules there decide.
    pub fn lookup_path(&self, host: &str, path: &str) -> Result<Option<&T>, Conditional> {
        let best = self.host_table(host).and_then(|t| t.best(path));
        match best {
            None => Ok(self.default.as_ref()),
            Some(slot) => slot.unconditional().map(Some).ok_or(Conditional),
        }
    }

    fn host_table(&self, raw_host: &str) -> Option<&PathTable<T>> {
        let mut buf = [0u8; 256];
        let host = normalize_host(raw_host, &mut buf);
        if let Some(host) = host {
            if let Some(t) = self.exact_hosts.get(host) {
                return Some(t);
            }
            if let Some((first, suffix)) = host.split_once('.') {
                if !first.is_empty() {
                    if let Some(t) = self.wildcard_hosts.get(suffix) {
                        return Some(t);
                    }
                }
            }
            // The longest suffix first: the most specific wildcard.
            if !self.suffix_hosts.is_empty() {
                let mut rest = host;
                while let Some((first, suffix)) = rest.split_once('.') {
                    if first.is_empty() {
                        break;
                    }
                    if let Some(t) = self.suffix_hosts.get(suffix) {
                        return Some(t);
                    }
                    rest = suffix;
                }
            }
        }
        self.any_host.as_ref()
    }
}

/// A route's conditions decide: the request's fields are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditional;

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Lowercases `host`, drops a port and a trailing dot, without allocating. `None` for
/// hosts too long to be DNS names (they can only match rules without host).
fn normalize_host<'a>(host: &str, buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let without_port = if host.starts_with('[') {
        // IPv6 literal: never matches a rule host (rules cannot be IPs).
        host.split(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    let bytes = trimmed.as_bytes();
    if bytes.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..bytes.len()];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;
    use weir_discovery::{RequestConditions, StringMatch, ValueMatch};

    /// The target of a plain `GET` on `host` and `path`.
    fn get<'a, T>(r: &'a Router<T>, host: &str, path: &str) -> Option<&'a T> {
        let req = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
        r.lookup(host, path, &req)
    }

    fn exact(p: &str) -> PathMatch {
        PathMatch::Exact(p.into())
    }
    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn router(rules: &[(HostMatch, PathMatch, &'static str)]) -> Router<&'static str> {
        let mut r = Router::new();
        for (h, p, t) in rules {
            r.insert(h, p, *t).expect("valid rule");
        }
        r
    }

    fn conditions(
        method: Option<&str>,
        headers: &[(&str, StringMatch)],
        query: &[(&str, StringMatch)],
    ) -> Conditions {
        let named = |pairs: &[(&str, StringMatch)]| {
            pairs
                .iter()
                .map(|(name, value)| ValueMatch {
                    name: name.to_string(),
                    value: value.clone(),
                })
                .collect()
        };
        Conditions::new(&RequestConditions {
            method: method.map(str::to_string),
            headers: named(headers),
            query: named(query),
        })
        .expect("valid conditions")
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).expect("request");
        for (name, value) in headers {
            req.insert_header(name.to_string(), *value).expect("header");
        }
        req
    }

    /// Among the routes of one host and path, conditions decide in Gateway API's order
    /// (method, then more headers, then more query parameters, then the order added); a
    /// request none of them takes falls to the next most specific path.
    #[test]
    fn conditions_choose_among_routes_of_one_path_and_fall_through() {
        let any = HostMatch::Any;
        let exact = |v: &str| StringMatch::Exact(v.to_string());
        let regex = |v: &str| StringMatch::Regex(v.to_string());
        let mut r = Router::new();
        r.insert(&any, &prefix("/"), "root").expect("valid");
        r.insert_when(
            &any,
            &prefix("/api"),
            conditions(None, &[("x-tier", exact("beta"))], &[]),
            "beta",
        )
        .expect("valid");
        r.insert_when(
            &any,
            &prefix("/api"),
            conditions(Some("POST"), &[("x-tier", exact("beta"))], &[]),
            "beta-post",
        )
        .expect("valid");
        r.insert_when(
            &any,
            &prefix("/api"),
            conditions(
                None,
                &[("x-tier", regex("b.*")), ("x-user", exact("ann"))],
                &[],
            ),
            "two-headers",
        )
        .expect("valid");
        r.insert_when(
            &any,
            &prefix("/api"),
            conditions(None, &[], &[("v", regex("[0-9]+"))]),
            "versioned",
        )
        .expect("valid");
        let route = |method: &str, target: &str, headers: &[(&str, &str)]| {
            let req = request(method, target, headers);
            let path = target.split('?').next().unwrap_or(target);
            r.lookup("h", path, &req).copied()
        };
        assert_eq!(route("GET", "/api/x", &[("x-tier", "beta")]), Some("beta"));
        assert_eq!(
            route("POST", "/api/x", &[("x-tier", "beta")]),
            Some("beta-post")
        );
        assert_eq!(
            route("POST", "/api/x", &[("x-tier", "bold"), ("x-user", "ann")]),
            Some("two-headers")
        );
        assert_eq!(
            route("GET", "/api/x", &[("x-tier", "Beta")]),
            Some("root"),
            "values are case-sensitive"
        );
        assert_eq!(route("GET", "/api/x?v=12", &[]), Some("versioned"));
        assert_eq!(
            route("GET", "/api/x?v=12a", &[]),
            Some("root"),
            "a regex matches the whole value"
        );
        // Nothing at /api takes it: the next most specific path does.
        assert_eq!(route("GET", "/api/x", &[]), Some("root"));
        assert_eq!(r.lookup_path("h", "/api/x"), Err(Conditional));
        assert_eq!(r.lookup_path("h", "/web"), Ok(Some(&"root")));
    }

    /// The examples table of the Kubernetes Ingress documentation, row by row.
    #[test]
    fn kubernetes_documentation_examples() {
        let any = HostMatch::Any;
        // (rules, request path, expected match)
        let cases: Vec<(Vec<PathMatch>, &str, Option<&str>)> = vec![
            (vec![prefix("/")], "/anything/at/all", Some("/")),
            (vec![exact("/foo")], "/foo", Some("/foo")),
            (vec![exact("/foo")], "/bar", None),
            (vec![exact("/foo")], "/foo/", None),
            (vec![exact("/foo/")], "/foo", None),
            (vec![prefix("/foo")], "/foo", Some("/foo")),
            (vec![prefix("/foo")], "/foo/", Some("/foo")),
            (vec![prefix("/foo/")], "/foo", Some("/foo/")),
            (vec![prefix("/foo/")], "/foo/", Some("/foo/")),
            (vec![prefix("/aaa/bb")], "/aaa/bbb", None),
            (vec![prefix("/aaa/bbb")], "/aaa/bbb", Some("/aaa/bbb")),
            (vec![prefix("/aaa/bbb/")], "/aaa/bbb", Some("/aaa/bbb/")),
            (vec![prefix("/aaa/bbb")], "/aaa/bbb/", Some("/aaa/bbb")),
            (vec![prefix("/aaa/bbb")], "/aaa/bbb/ccc", Some("/aaa/bbb")),
            (vec![prefix("/aaa/bbb")], "/aaa/bbbxyz", None),
            (vec![prefix("/"), prefix("/aaa")], "/aaa/ccc", Some("/aaa")),
            (
                vec![prefix("/"), prefix("/aaa"), prefix("/aaa/bbb")],
                "/aaa/bbb",
                Some("/aaa/bbb"),
            ),
            (
                vec![prefix("/"), prefix("/aaa"), prefix("/aaa/bbb")],
                "/ccc",
                Some("/"),
            ),
            (vec![prefix("/aaa")], "/ccc", None),
        ];
        for (rules, request, expected) in cases {
            let mut r: Router<String> = Router::new();
            for rule in &rules {
                r.insert(&any, rule, rule.as_written().to_string())
                    .expect("valid");
            }
            assert_eq!(
                get(&r, "h", request).map(String::as_str),
                expected,
                "rules {rules:?}, request {request}"
            );
        }
        // Mixed: Prefix /foo and Exact /foo; request /foo prefers Exact.
        let r = router(&[
            (any.clone(), prefix("/foo"), "prefix"),
            (any.clone(), exact("/foo"), "exact"),
        ]);
        assert_eq!(get(&r, "h", "/foo"), Some(&"exact"));
        assert_eq!(get(&r, "h", "/foo/x"), Some(&"prefix"));
    }

    #[test]
    fn case_sensitive_paths() {
        let r = router(&[(HostMatch::Any, prefix("/Foo"), "t")]);
        assert_eq!(get(&r, "h", "/Foo/bar"), Some(&"t"));
        assert_eq!(get(&r, "h", "/foo/bar"), None);
    }

    #[test]
    fn longest_written_prefix_wins() {
        let r = router(&[
            (HostMatch::Any, prefix("/foo"), "short"),
            (HostMatch::Any, prefix("/foo/"), "long"),
        ]);
        assert_eq!(get(&r, "h", "/foo/bar"), Some(&"long"));
        let r = router(&[
            (HostMatch::Any, prefix("/a"), "a"),
            (HostMatch::Any, exact("/a/b/c"), "exact"),
            (HostMatch::Any, prefix("/a/b"), "ab"),
        ]);
        assert_eq!(get(&r, "h", "/a/b/c"), Some(&"exact"));
        assert_eq!(get(&r, "h", "/a/b/c/d"), Some(&"ab"));
        assert_eq!(get(&r, "h", "/a/x"), Some(&"a"));
    }

    #[test]
    fn first_inserted_rule_keeps_a_path() {
        let r = router(&[
            (HostMatch::Any, exact("/x"), "older"),
            (HostMatch::Any, exact("/x"), "newer"),
        ]);
        assert_eq!(get(&r, "h", "/x"), Some(&"older"));
    }

    #[test]
    fn hosts_exact_wildcard_any() {
        let r = router(&[
            (
                HostMatch::Exact("foo.example.com".into()),
                prefix("/"),
                "foo",
            ),
            (
                HostMatch::Wildcard("example.com".into()),
                prefix("/"),
                "wild",
            ),
            (HostMatch::Any, prefix("/"), "any"),
        ]);
        assert_eq!(get(&r, "foo.example.com", "/"), Some(&"foo"));
        assert_eq!(
            get(&r, "FOO.Example.COM:8080", "/"),
            Some(&"foo"),
            "case and port ignored"
        );
        assert_eq!(
            get(&r, "foo.example.com.", "/"),
            Some(&"foo"),
            "trailing dot"
        );
        assert_eq!(get(&r, "bar.example.com", "/"), Some(&"wild"));
        // Wildcards match exactly one label: not deeper, not the bare suffix.
        assert_eq!(get(&r, "a.bar.example.com", "/"), Some(&"any"));
        assert_eq!(get(&r, "example.com", "/"), Some(&"any"));
        assert_eq!(get(&r, ".example.com", "/"), Some(&"any"));
        assert_eq!(get(&r, "other.org", "/"), Some(&"any"));
        assert_eq!(get(&r, "[::1]:8080", "/"), Some(&"any"));
    }

    #[test]
    fn host_groups_do_not_fall_through_but_default_applies() {
        let mut r = router(&[
            (
                HostMatch::Exact("foo.com".into()),
                prefix("/api"),
                "foo-api",
            ),
            (HostMatch::Any, prefix("/"), "any"),
        ]);
        assert_eq!(get(&r, "foo.com", "/api/x"), Some(&"foo-api"));
        assert_eq!(get(&r, "foo.com", "/web"), None);
        r.set_default("default");
        assert_eq!(get(&r, "foo.com", "/web"), Some(&"default"));
        assert_eq!(get(&r, "bar.com", "/web"), Some(&"any"));
    }

    #[test]
    fn regex_paths_rank_by_length() {
        let r = router(&[
            (HostMatch::Any, prefix("/api"), "prefix"),
            (
                HostMatch::Any,
                PathMatch::Regex("/api/v[0-9]+/users".into()),
                "regex",
            ),
        ]);
        assert_eq!(get(&r, "h", "/api/v2/users/7"), Some(&"regex"));
        assert_eq!(get(&r, "h", "/api/vx/users"), Some(&"prefix"));
        assert_eq!(get(&r, "h", "/x/api/v2/users"), None, "anchored at start");
    }

    #[test]
    fn many_rules_stay_correct() {
        let mut r = Router::new();
        for i in 0..10_000 {
            let host = HostMatch::Exact(format!("h{}.example.com", i % 100));
            r.insert(&host, &prefix(&format!("/svc{i}/api")), i)
                .expect("valid");
        }
        assert_eq!(get(&r, "h42.example.com", "/svc9942/api/x"), Some(&9942));
        assert_eq!(get(&r, "h42.example.com", "/svc9943/api/x"), None);
    }
}
