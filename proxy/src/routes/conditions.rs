//! [`Conditions`]: what a request must carry besides its host and path to take a route
//! (the route model's `RequestConditions`: header, query parameter and method matches), and
//! [`Conditioned`], the routes of one host and path in the order they are tried.
//!
//! Must not: match hosts or paths (the [`crate::routes::router::Router`] does), or know what
//! a route's target is.

use crate::http::request_view::RequestView;
use regex::Regex;
use smallvec::SmallVec;
use weir_discovery::{RequestConditions, StringMatch};

/// A route's conditions, compiled.
#[derive(Debug, Default)]
pub struct Conditions {
    method: Option<http::Method>,
    headers: Vec<(http::HeaderName, Matcher)>,
    query: Vec<(Box<str>, Matcher)>,
}

#[derive(Debug)]
enum Matcher {
    Exact(Box<str>),
    /// Anchored at both ends: the whole value.
    Regex(Regex),
}

impl Matcher {
    fn new(value: &StringMatch) -> Result<Matcher, String> {
        Ok(match value {
            StringMatch::Exact(v) => Matcher::Exact(v.as_str().into()),
            StringMatch::Regex(r) => Matcher::Regex(
                Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("regex {r:?}: {e}"))?,
            ),
        })
    }

    fn matches(&self, value: &[u8]) -> bool {
        match self {
            Matcher::Exact(v) => v.as_bytes() == value,
            Matcher::Regex(r) => std::str::from_utf8(value).is_ok_and(|v| r.is_match(v)),
        }
    }
}

impl Conditions {
    pub fn new(conditions: &RequestConditions) -> Result<Conditions, String> {
        let method = match &conditions.method {
            Some(m) => {
                Some(http::Method::from_bytes(m.as_bytes()).map_err(|_| format!("method {m:?}"))?)
            }
            None => None,
        };
        let headers = conditions
            .headers
            .iter()
            .map(|h| {
                let name = http::HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| format!("header name {:?}", h.name))?;
                Ok((name, Matcher::new(&h.value)?))
            })
            .collect::<Result<_, String>>()?;
        let query = conditions
            .query
            .iter()
            .map(|q| Ok((q.name.as_str().into(), Matcher::new(&q.value)?)))
            .collect::<Result<_, String>>()?;
        Ok(Conditions {
            method,
            headers,
            query,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.method.is_none() && self.headers.is_empty() && self.query.is_empty()
    }

    /// Whether `req` meets every condition.
    pub fn hold_for(&self, req: &impl RequestView) -> bool {
        self.method.as_ref().is_none_or(|m| m == req.method())
            && self
                .headers
                .iter()
                .all(|(name, m)| req.field(name).is_some_and(|v| m.matches(v)))
            && self.query.iter().all(|(name, m)| {
                req.query_param(name)
                    .is_some_and(|v| m.matches(v.as_bytes()))
            })
    }

    /// Gateway API's order among routes of one host and path: a method match first, then
    /// more header matches, then more query parameter matches.
    fn precedence(&self) -> (bool, usize, usize) {
        (self.method.is_some(), self.headers.len(), self.query.len())
    }
}

/// The routes of one host and path: tried in precedence order, and in the order added
/// among equals. Almost always one route without conditions.
#[derive(Debug)]
pub struct Conditioned<T> {
    routes: SmallVec<[(Conditions, T); 1]>,
}

impl<T> Conditioned<T> {
    pub fn new(conditions: Conditions, target: T) -> Self {
        let mut routes = SmallVec::new();
        routes.push((conditions, target));
        Conditioned { routes }
    }

    /// Adds a route, after those that take precedence over it or equal it.
    pub fn add(&mut self, conditions: Conditions, target: T) {
        let at = self
            .routes
            .iter()
            .position(|(c, _)| c.precedence() < conditions.precedence())
            .unwrap_or(self.routes.len());
        self.routes.insert(at, (conditions, target));
    }

    /// The first route whose conditions `req` meets.
    pub fn first_for(&self, req: &impl RequestView) -> Option<&T> {
        self.routes
            .iter()
            .find(|(c, _)| c.is_empty() || c.hold_for(req))
            .map(|(_, t)| t)
    }

    /// The target when no route here has conditions (the request's other parts cannot
    /// change it).
    pub fn unconditional(&self) -> Option<&T> {
        match self.routes.as_slice() {
            [(c, t)] if c.is_empty() => Some(t),
            _ => None,
        }
    }
}
