//! Authentication of a request, as its route's `auth-*` annotations ask: basic auth against
//! the route's password file ([`BasicCheck`], with a cache of verified passwords so that
//! bcrypt runs once per user and password, not per request), and the external check
//! ([`ExternalCheck`]: the subrequest's head, and what its answer means).
//!
//! Fails closed: a route whose authentication could not be set up answers 503, an external
//! check that fails or is not answered in time 500; nothing here lets a request on by
//! default.
//!
//! Must not: read or write sockets (the subrequest goes through [`crate::subrequest`]), or
//! log or keep a password (the cache keeps a keyed digest of it).

use crate::http::forwarded::UpstreamHeaders;
use crate::http::request_view::RequestView;
use crate::request::copies::{copy_head, escape, Described, Template};
use base64::Engine as _;
use foldhash::HashMap;
use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use subtle::ConstantTimeEq;
use weir_discovery::htpasswd::PasswordHash;
use weir_discovery::{Authentication, BasicAuth, ExternalAuth};

/// The longest `Authorization` value read; a longer one is refused unread.
const MAX_AUTHORIZATION: usize = 1024;

/// A route's authentication, compiled.
#[derive(Debug)]
pub enum RouteAuth {
    /// Each request passes these checks, basic first.
    Required {
        basic: Option<BasicCheck>,
        external: Option<Box<ExternalCheck>>,
    },
    /// The route's authentication could not be set up: 503 to every request.
    Unusable,
}

impl RouteAuth {
    pub fn new(auth: &Authentication) -> RouteAuth {
        match auth {
            Authentication::Required { basic, external } => {
                let external = match external.as_deref().map(ExternalCheck::new).transpose() {
                    Ok(external) => external,
                    Err(why) => {
                        tracing::error!(error = why, "external auth not usable");
                        return RouteAuth::Unusable;
                    }
                };
                RouteAuth::Required {
                    basic: basic.as_ref().map(BasicCheck::new),
                    external: external.map(Box::new),
                }
            }
            Authentication::Unusable(_) => RouteAuth::Unusable,
        }
    }
}

/// Basic auth of one route: its users, their hashes and each one's last verified password.
#[derive(Debug)]
pub struct BasicCheck {
    /// `WWW-Authenticate` of a 401.
    pub challenge: HeaderValue,
    users: HashMap<Box<str>, Arc<User>>,
}

#[derive(Debug)]
struct User {
    hash: PasswordHash,
    /// Keyed SHA-256 of the last password that verified (all zero: none yet). Only a
    /// verified password is ever stored, so a mix of two stores is no one's digest.
    verified: [AtomicU64; 4],
}

/// What [`BasicCheck::check`] found.
pub enum BasicOutcome {
    /// The credentials are a user's (from the cache, or a fast scheme).
    Allowed,
    /// No credentials, malformed ones, an unknown user or a wrong password.
    Denied,
    /// A known user whose password must go through their (slow) hash: run it off the
    /// request's thread.
    Verify(Verification),
}

/// A password to check against a user's slow hash; on success the user's cache learns it.
pub struct Verification {
    user: Arc<User>,
    password: Vec<u8>,
    digest: [u64; 4],
}

impl Verification {
    /// Checks the password (bcrypt: milliseconds): whether it is the user's.
    pub fn run(self) -> bool {
        let ok = self.user.hash.verify(&self.password);
        if ok {
            for (slot, word) in self.user.verified.iter().zip(self.digest) {
                slot.store(word, Ordering::Relaxed);
            }
        }
        ok
    }
}

/// The process's key for the digests of verified passwords (a digest found in memory says
/// nothing without it).
fn cache_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn keyed_digest(password: &[u8]) -> [u64; 4] {
    let digest = Sha256::new()
        .chain_update(cache_key())
        .chain_update(password)
        .finalize();
    let mut words = [0u64; 4];
    for (word, bytes) in words.iter_mut().zip(digest.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        *word = u64::from_le_bytes(b);
    }
    words
}

impl BasicCheck {
    pub fn new(basic: &BasicAuth) -> BasicCheck {
        // The realm was checked for quotes and control characters when read.
        let challenge = HeaderValue::try_from(format!("Basic realm=\"{}\"", basic.realm))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        let users = basic
            .users
            .users()
            .map(|(name, hash)| {
                let user = User {
                    hash: hash.clone(),
                    verified: Default::default(),
                };
                (Box::from(name), Arc::new(user))
            })
            .collect();
        BasicCheck { challenge, users }
    }

    /// Reads the request's `Authorization` value (`Basic base64(user:password)`).
    pub fn check(&self, authorization: Option<&[u8]>) -> BasicOutcome {
        let Some(value) = authorization.filter(|v| v.len() <= MAX_AUTHORIZATION) else {
            return BasicOutcome::Denied;
        };
        let Some(encoded) = value
            .get(..6)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"basic "))
            .map(|_| value[6..].trim_ascii())
        else {
            return BasicOutcome::Denied;
        };
        let mut decoded = [0u8; MAX_AUTHORIZATION];
        let Ok(len) = base64::engine::general_purpose::STANDARD.decode_slice(encoded, &mut decoded)
        else {
            return BasicOutcome::Denied;
        };
        let decoded = &decoded[..len];
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return BasicOutcome::Denied;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Some(user) = std::str::from_utf8(user)
            .ok()
            .and_then(|u| self.users.get(u))
        else {
            return BasicOutcome::Denied;
        };
        if !user.hash.is_slow() {
            return match user.hash.verify(password) {
                true => BasicOutcome::Allowed,
                false => BasicOutcome::Denied,
            };
        }
        let digest = keyed_digest(password);
        let cached = user.verified.each_ref().map(|w| w.load(Ordering::Relaxed));
        let same: bool = bytes_of(&cached).ct_eq(&bytes_of(&digest)).into();
        if same && cached != [0; 4] {
            return BasicOutcome::Allowed;
        }
        BasicOutcome::Verify(Verification {
            user: Arc::clone(user),
            password: password.to_vec(),
            digest,
        })
    }
}

fn bytes_of(words: &[u64; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// The external check of one route (`auth-url`).
#[derive(Debug)]
pub struct ExternalCheck {
    url: Template,
    method: Option<Method>,
    signin: Option<Template>,
    signin_param: Box<str>,
    /// Fields of a 2xx answer copied onto the upstream request.
    copy: Box<[HeaderName]>,
    request_redirect: Option<HeaderValue>,
}

/// What the external check's answer means for the request.
pub enum ExternalVerdict {
    /// Let it on, with these fields on its upstream copy (an empty value: the client's
    /// field of that name removed, none sent).
    Allowed(UpstreamHeaders),
    /// Answer the client with this head (401 with the service's challenge, 403, or a 302
    /// to the sign-in page).
    Denied(ResponseHeader),
    /// The service answered something else: 500.
    Failed(u16),
}

/// Fields of the client's request the check sets itself (a client's own are dropped).
const SET_BY_CHECK: &[&str] = &[
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-auth-request-redirect",
    "x-sent-from",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

impl ExternalCheck {
    pub fn new(ext: &ExternalAuth) -> Result<ExternalCheck, String> {
        let method = ext
            .method
            .as_deref()
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string()))
            .transpose()?;
        let copy = ext
            .response_headers
            .iter()
            .map(|n| HeaderName::try_from(n.as_str()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let request_redirect = ext
            .request_redirect
            .as_deref()
            .map(|r| HeaderValue::try_from(r).map_err(|e| e.to_string()))
            .transpose()?;
        Ok(ExternalCheck {
            url: Template::new(&ext.url),
            method,
            signin: ext.signin.as_deref().map(Template::new),
            signin_param: ext.signin_redirect_param.as_str().into(),
            copy,
            request_redirect,
        })
    }

    /// The subrequest for `req`: where it goes and its head (no body).
    pub fn subrequest(
        &self,
        req: &impl RequestView,
        about: &Described<'_>,
    ) -> Result<(crate::subrequest::Destination, RequestHeader), String> {
        let url: http::Uri = self
            .url
            .fill(about)
            .parse()
            .map_err(|e| format!("auth-url is not a URL for this request: {e}"))?;
        let method = self.method.clone().unwrap_or_else(|| req.method().clone());
        let (to, mut head) = copy_head(req, method, &url, SET_BY_CHECK)?;
        let failed = |e: pingora::BError| e.to_string();
        let original_url = format!("{}://{}{}", about.scheme, about.host, about.request_uri);
        head.insert_header("x-original-url", original_url)
            .map_err(failed)?;
        head.insert_header("x-original-uri", about.request_uri)
            .map_err(failed)?;
        head.insert_header("x-original-method", req.method().as_str())
            .map_err(failed)?;
        head.insert_header("x-forwarded-host", about.host)
            .map_err(failed)?;
        head.insert_header("x-forwarded-proto", about.scheme)
            .map_err(failed)?;
        head.insert_header("x-sent-from", "weir").map_err(failed)?;
        let redirect = match &self.request_redirect {
            Some(r) => r.clone(),
            None => HeaderValue::try_from(about.request_uri).map_err(|e| e.to_string())?,
        };
        head.insert_header("x-auth-request-redirect", redirect)
            .map_err(failed)?;
        if let Some(client) = about.client {
            head.insert_header("x-real-ip", client.to_string())
                .map_err(failed)?;
        }
        if let Some(chain) = &about.forwarded_for {
            head.insert_header("x-forwarded-for", chain.clone())
                .map_err(failed)?;
        }
        head.insert_header(http::header::CONTENT_LENGTH, "0")
            .map_err(failed)?;
        Ok((to, head))
    }

    /// What the service's answer means.
    pub fn verdict(&self, answer: &ResponseHeader, about: &Described<'_>) -> ExternalVerdict {
        let status = answer.status.as_u16();
        match status {
            200..=299 => {
                let mut fields = UpstreamHeaders::new();
                for name in self.copy.iter() {
                    let value = answer
                        .headers
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| HeaderValue::from_static(""));
                    fields.push((name.clone(), value));
                }
                ExternalVerdict::Allowed(fields)
            }
            401 => match &self.signin {
                Some(signin) => match self.signin_redirect(signin, about) {
                    Some(head) => ExternalVerdict::Denied(head),
                    None => ExternalVerdict::Failed(status),
                },
                None => {
                    let challenges = answer.headers.get_all(http::header::WWW_AUTHENTICATE);
                    match denied(401, challenges.iter()) {
                        Some(head) => ExternalVerdict::Denied(head),
                        None => ExternalVerdict::Failed(status),
                    }
                }
            },
            403 => match denied(403, std::iter::empty()) {
                Some(head) => ExternalVerdict::Denied(head),
                None => ExternalVerdict::Failed(status),
            },
            _ => ExternalVerdict::Failed(status),
        }
    }

    /// `302 Location: <auth-signin>?rd=<the URL the client asked for>` (the parameter left
    /// as it is when the sign-in URL has it already).
    fn signin_redirect(&self, signin: &Template, about: &Described<'_>) -> Option<ResponseHeader> {
        let mut location = signin.fill(about);
        let param = &*self.signin_param;
        let has_param = location
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv.split('=').next() == Some(param)));
        if !has_param {
            let original = format!("{}://{}{}", about.scheme, about.host, about.request_uri);
            let sep = if location.contains('?') { '&' } else { '?' };
            location = format!("{location}{sep}{param}={}", escape(&original));
        }
        let mut head = ResponseHeader::build(302, Some(2)).ok()?;
        head.insert_header(http::header::LOCATION, location).ok()?;
        head.insert_header(http::header::CONTENT_LENGTH, 0).ok()?;
        Some(head)
    }
}

/// A 401 or 403 head with these challenges and no body.
fn denied<'a>(
    status: u16,
    challenges: impl Iterator<Item = &'a HeaderValue>,
) -> Option<ResponseHeader> {
    let mut head = ResponseHeader::build(status, Some(3)).ok()?;
    for challenge in challenges {
        head.append_header(http::header::WWW_AUTHENTICATE, challenge.clone())
            .ok()?;
    }
    head.insert_header(http::header::CONTENT_LENGTH, 0).ok()?;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_discovery::htpasswd::Htpasswd;
    use weir_discovery::ObjectRef;

    const SHA1: &str = "{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0="; // hunter2
    const APR1: &str = "$apr1$Wn8cSTgH$v4YIIy8GDcWo/5uLUdO9V/"; // "s3cret pass"

    fn basic() -> BasicCheck {
        let (users, _) = Htpasswd::parse_file(&format!("alice:{SHA1}\nbob:{APR1}\n"));
        BasicCheck::new(&BasicAuth {
            realm: "Staff".into(),
            secret: ObjectRef {
                kind: "Secret",
                namespace: "ns".into(),
                name: "users".into(),
            },
            users: Arc::new(users),
        })
    }

    fn header(user_pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
        .into_bytes()
    }

    #[test]
    fn basic_auth_allows_only_a_users_password() {
        let check = basic();
        assert_eq!(check.challenge, "Basic realm=\"Staff\"");
        assert!(matches!(
            check.check(Some(&header("alice:hunter2"))),
            BasicOutcome::Allowed
        ));
        // The scheme's name is case-insensitive.
        let lower = header("alice:hunter2").to_ascii_lowercase();
        let mixed = [b"bAsIc ".as_slice(), &header("alice:hunter2")[6..]].concat();
        assert!(matches!(check.check(Some(&mixed)), BasicOutcome::Allowed));
        assert!(
            matches!(check.check(Some(&lower)), BasicOutcome::Denied),
            "base64 is not"
        );
        for bad in [
            None,
            Some(header("alice:hunter3")),
            Some(header("mallory:hunter2")),
            Some(header("alice")),
            Some(b"Bearer abc".to_vec()),
            Some(b"Basic !!!".to_vec()),
            Some(vec![b'a'; 2000]),
        ] {
            assert!(
                matches!(check.check(bad.as_deref()), BasicOutcome::Denied),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_slow_hash_is_verified_once_then_served_from_the_cache() {
        let check = basic();
        let good = header("bob:s3cret pass");
        let BasicOutcome::Verify(first) = check.check(Some(&good)) else {
            panic!("a slow hash goes to verification first");
        };
        assert!(first.run());
        assert!(matches!(check.check(Some(&good)), BasicOutcome::Allowed));
        // A wrong password is never served from the cache, and does not evict the right one.
        let BasicOutcome::Verify(wrong) = check.check(Some(&header("bob:s3cret pas"))) else {
            panic!("a different password is verified");
        };
        assert!(!wrong.run());
        assert!(matches!(check.check(Some(&good)), BasicOutcome::Allowed));
        assert!(matches!(
            check.check(Some(&header("bob:s3cret pas"))),
            BasicOutcome::Verify(_)
        ));
    }
}
