//! Session affinity in the request core: reads a route's session cookie, binds the request
//! to the endpoint the cookie names while it can serve, and says which cookie the response
//! sets when the session is new or moves (docs/balancing.md, "Session affinity").
//!
//! The endpoint choice itself is the balancer's ([`weir_balancer::affinity`]); this module
//! owns the cookie: its value, its attributes, and when one is sent.
//!
//! Must not: know which engine or protocol carries the request.

use crate::http::request_view::RequestView;
use http::HeaderValue;
use rand::Rng;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};
use weir_balancer::affinity::endpoint_token;
use weir_balancer::ring::key_hash;
use weir_balancer::{Pick, PickReason, PickRequest, Pool, Sticky};
use weir_discovery::{AffinityMode, SessionAffinity};

/// A balanced session that needs an endpoint other than the ones tried gets a new random
/// key: at most this many are drawn (with 2 endpoints, one failed, all miss with
/// probability 2^-20).
const NEW_KEY_DRAWS: usize = 20;

/// Cookie dates stop before the year 9999 (what an HTTP date can write).
const MAX_COOKIE_DATE: Duration = Duration::from_secs(253_402_300_799);

/// A route's session cookie, ready for the request path.
#[derive(Debug)]
pub struct SessionCookie {
    mode: AffinityMode,
    name: String,
    /// Salts the endpoint tokens of persistent cookies: the route's backend.
    salt: u64,
    /// `; Path=..` and every other attribute that is the same on each response.
    attributes: String,
    /// `Expires` is this long after the response.
    expires: Option<Duration>,
    /// `Secure` on plain-HTTP responses too.
    always_secure: bool,
    change_on_failure: bool,
}

/// The cookie a response sets, decided at the pick: its value (16 hex digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewSession(u64);

impl SessionCookie {
    /// `backend`: what the cookie's endpoints belong to (salts persistent tokens, so a
    /// cookie means the same endpoint on every route to that backend and on every replica);
    /// `rule_path`: the cookie's path when the route names none.
    pub fn new(affinity: &SessionAffinity, backend: &str, rule_path: &str) -> Self {
        let cookie = &affinity.cookie;
        let mut attributes = String::new();
        let path = cookie.path.as_deref().unwrap_or(rule_path);
        let _ = write!(attributes, "; Path={path}");
        if let Some(domain) = &cookie.domain {
            let _ = write!(attributes, "; Domain={domain}");
        }
        if let Some(max_age) = cookie.max_age {
            let _ = write!(attributes, "; Max-Age={max_age}");
        }
        if let Some(same_site) = cookie.same_site {
            let _ = write!(attributes, "; SameSite={}", same_site.as_str());
        }
        attributes.push_str("; HttpOnly");
        SessionCookie {
            mode: affinity.mode,
            name: cookie.name.clone(),
            salt: key_hash(backend.as_bytes()),
            attributes,
            expires: cookie.expires.map(Duration::from_secs),
            always_secure: cookie.secure,
            change_on_failure: affinity.change_on_failure,
        }
    }

    /// What the request's cookie says, if it has a readable one.
    fn session_of(&self, req: &impl RequestView) -> Option<Sticky> {
        let value = req.cookie(&self.name)?;
        match self.mode {
            AffinityMode::Persistent => (value.len() == 16)
                .then(|| u64::from_str_radix(value, 16).ok())
                .flatten()
                .map(Sticky::Endpoint),
            // Any value is a key: sessions of another proxy's cookie stay together too.
            AffinityMode::Balanced => {
                (!value.is_empty()).then(|| Sticky::Key(key_hash(value.as_bytes())))
            }
        }
    }

    /// Picks the endpoint of an attempt for the session: the one its cookie names while it
    /// can serve; otherwise a new one, with the cookie that names it. A retry of an
    /// established session goes elsewhere but keeps its cookie unless `change-on-failure`.
    pub fn pick<R: Rng + ?Sized>(
        &self,
        req: &impl RequestView,
        pool: &Pool,
        request: &PickRequest<'_>,
        rng: &mut R,
    ) -> (Pick, Option<NewSession>) {
        let session = self.session_of(req);
        let retry = !request.tried.is_empty();
        // After a failure with `change-on-failure`, the session moves: a balanced key's next
        // choice would leave its cookie naming the failed endpoint.
        let moves = retry && self.change_on_failure;
        if let Some(sticky) = session.filter(|_| !moves) {
            if let Some(endpoint) = pool.pick_sticky(sticky, self.salt, request) {
                return (
                    Pick {
                        endpoint: Some(endpoint),
                        reason: PickReason::Affinity,
                    },
                    None,
                );
            }
        }
        let keeps_session = session.is_some() && retry && !moves;
        if self.mode == AffinityMode::Balanced && !keeps_session {
            // A new key whose endpoint (among all that serve) is not one already tried.
            for _ in 0..NEW_KEY_DRAWS {
                let key: u64 = rng.random();
                let sticky = Sticky::Key(key_hash(hex(key).as_bytes()));
                let anywhere = PickRequest {
                    tried: &[],
                    ..*request
                };
                match pool.pick_sticky(sticky, self.salt, &anywhere) {
                    Some(endpoint) if !request.tried.contains(&endpoint.addr()) => {
                        let reason = if retry {
                            PickReason::Retry
                        } else {
                            PickReason::Primary
                        };
                        let pick = Pick {
                            endpoint: Some(endpoint),
                            reason,
                        };
                        return (pick, Some(NewSession(key)));
                    }
                    Some(_) => continue,
                    None => break,
                }
            }
        }
        let pick = pool.pick(request, rng);
        let new = match (&pick.endpoint, self.mode) {
            (Some(endpoint), AffinityMode::Persistent) if !keeps_session => {
                Some(NewSession(endpoint_token(self.salt, endpoint.addr())))
            }
            _ => None,
        };
        (pick, new)
    }

    /// The `Set-Cookie` value of a new session; `tls`: the response goes over TLS.
    pub fn set_cookie(&self, session: NewSession, tls: bool) -> Option<HeaderValue> {
        let mut value = String::with_capacity(self.name.len() + 17 + self.attributes.len() + 48);
        let _ = write!(value, "{}={}{}", self.name, hex(session.0), self.attributes);
        // Discovery bounds `expires` to ten years; a date out of range is left out rather
        // than written wrong.
        let when = self
            .expires
            .and_then(|after| SystemTime::now().checked_add(after));
        if let Some(when) = when.filter(|w| *w < SystemTime::UNIX_EPOCH + MAX_COOKIE_DATE) {
            let _ = write!(value, "; Expires={}", httpdate::fmt_http_date(when));
        }
        if tls || self.always_secure {
            value.push_str("; Secure");
        }
        HeaderValue::try_from(value).ok()
    }
}

/// A cookie value: 16 lowercase hex digits.
fn hex(value: u64) -> String {
    format!("{value:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_discovery::{AffinityCookie, SameSite};

    fn cookie(expires: Option<u64>, secure: bool) -> SessionCookie {
        let affinity = SessionAffinity {
            mode: AffinityMode::Persistent,
            cookie: AffinityCookie {
                name: "route".into(),
                path: None,
                domain: Some("example.com".into()),
                max_age: Some(60),
                expires,
                same_site: Some(SameSite::None),
                secure,
            },
            change_on_failure: false,
        };
        SessionCookie::new(&affinity, "demo/web:http", "/shop")
    }

    #[test]
    fn set_cookie_carries_the_attributes_ingress_nginx_sets() {
        let value = |c: &SessionCookie, tls| {
            let v = c.set_cookie(NewSession(0xab), tls).expect("valid");
            v.to_str().expect("text").to_string()
        };
        let plain = cookie(None, false);
        assert_eq!(
            value(&plain, false),
            "route=00000000000000ab; Path=/shop; Domain=example.com; Max-Age=60; SameSite=None; HttpOnly"
        );
        assert!(value(&plain, true).ends_with("; HttpOnly; Secure"));
        assert!(value(&cookie(None, true), false).ends_with("; Secure"));
        let expiring = value(&cookie(Some(3600), false), false);
        let expires = expiring
            .split("; Expires=")
            .nth(1)
            .expect("Expires")
            .to_string();
        let when = httpdate::parse_http_date(&expires).expect("an HTTP date");
        let ahead = when
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        assert!((3590..=3600).contains(&ahead), "{ahead}");
    }
}
