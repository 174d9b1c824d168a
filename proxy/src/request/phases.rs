//! The phases of a request (see [`crate::request`] for their order): [`WeirProxy`]'s
//! methods, called by every engine — weir's own ([`crate::engine::own`]) and Pingora's proxy
//! ([`crate::engine::pingora::proxy_http`]) — so that a request is checked, routed, balanced,
//! retried, fed back and logged the same way whatever carries it. [`RequestCtx`] is the state
//! one request carries through them.
//!
//! Must not: block, do file or API I/O, or lock shared state; routing state is read through
//! one atomic load per request.

use crate::app::metrics::{code_class, method_label, upstream_error_kind, Metrics};
use crate::app::shutdown::{InFlightRequests, InFlightToken};
use crate::http::fields::{ResponseField, ResponseFields};
use crate::http::forwarded::{with_ip_text, TrustedProxies, UpstreamHeaders};
use crate::http::hardening::{check_request, Rejection, RequestLimits};
use crate::http::path::normalize;
use crate::http::request_view::RequestView;
use crate::redis_store::{RedisStore, Verdict};
use crate::request::access_log::{AccessLine, AccessLog};
use crate::request::affinity::NewSession;
use crate::request::answers::{https_location, redirect_location, redirect_response};
use crate::request::auth::{BasicOutcome, ExternalVerdict, RouteAuth};
use crate::request::concurrency::ConcurrencyPermit;
use crate::request::copies::Described;
use crate::request::global_limit::GlobalLimiter;
use crate::request::mirror::{MirrorSender, PendingCopy};
use crate::request::rate_limit::Limited;
use crate::request::retry;
use crate::request::telemetry::{RequestTrace, Telemetry};
use crate::routes::routing::{LiveRouting, RouteTarget};
use crate::subrequest::{Deadlines, Subrequests};
use http::{HeaderName, HeaderValue};
use pingora::prelude::*;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_balancer::ring::key_hash;
use weir_balancer::{Algorithm, InFlightGuard, Nanos, Outcome, PickReason, PickRequest};
use weir_discovery::HashKey;

/// A client address outside its route's source ranges.
const SOURCE_DENIED: Rejection = Rejection::new(403, "source_denied");

/// A client over its rule's rate limit.
const RATE_LIMITED: Rejection = Rejection::new(429, "rate_limited");

/// A key over its fleet-wide limit (`global-rate-limit`).
const GLOBAL_RATE_LIMITED: Rejection = Rejection::new(429, "global_rate_limited");

/// A client with its rule's `limit-connections` requests in flight already.
const CLIENT_CONCURRENCY: Rejection = Rejection::new(429, "client_concurrency");

/// A request without the credentials of a user of its route's password file (basic auth).
const AUTH_REQUIRED: Rejection = Rejection::new(401, "auth_required");

/// A request its route's authentication service answered 401 or 403.
const AUTH_DENIED: Rejection = Rejection::new(401, "auth_denied");

/// A request whose authentication service failed, answered another status or not in time.
const AUTH_FAILED: Rejection = Rejection::new(500, "auth_failed");

/// A request of a route whose authentication could not be set up (a broken Secret).
const AUTH_UNUSABLE: Rejection = Rejection::new(503, "auth_unusable");

/// A request body over its route's `proxy-body-size`.
const BODY_TOO_LARGE: Rejection = Rejection::new(413, "request_body_too_large");

/// A name, not a string: looking a field up by `&str` parses and lowercases the name first.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client of a request from `peer`, as weir trusts it: the rightmost `X-Forwarded-For`
/// entry that is not a trusted proxy, else the peer (what source ranges, rate limits and
/// the consistent hash's client key read).
fn trusted_client(trusted: &TrustedProxies, peer: IpAddr, req: &impl RequestView) -> IpAddr {
    trusted.client_ip(peer, forwarded_chain(req).as_deref())
}

/// The request's `X-Forwarded-For` chain: its one field, or all of them joined in order (a
/// proxy may add a field of its own after one the client wrote; reading only the first would
/// take the client's word for who it is).
fn forwarded_chain(req: &impl RequestView) -> Option<Cow<'_, [u8]>> {
    // Most requests carry none: one lookup by name, no scan of every field.
    let first = req.field(&X_FORWARDED_FOR)?;
    // A name that lives as long as the request's fields are borrowed.
    static NAME: HeaderName = HeaderName::from_static("x-forwarded-for");
    let mut values = req.field_values(&NAME).skip(1);
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = first.to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value);
    }
    Some(Cow::Owned(joined))
}

#[derive(Clone)]
pub struct WeirProxy {
    routing: Arc<LiveRouting>,
    metrics: Metrics,
    telemetry: Arc<Telemetry>,
    trusted_proxies: TrustedProxies,
    limits: RequestLimits,
    allow_encoded_slashes: bool,
    access_log: AccessLog,
    in_flight: Arc<InFlightRequests>,
    /// Sends the external auth checks.
    subrequests: Arc<Subrequests>,
    /// Sends mirror and warm-up copies.
    mirrors: Arc<MirrorSender>,
    redis: Option<Arc<RedisStore>>,
    /// What the balancer learns, for the fleet (`--fleet-listen`).
    fleet: Option<Arc<crate::fleet::LocalReports>>,
}

/// What the command line decides about the request path.
#[derive(Debug, Clone, Default)]
pub struct DataPlaneOptions {
    pub trusted_proxies: TrustedProxies,
    pub limits: RequestLimits,
    /// Keep `%2F` in paths (encoded) instead of refusing the request.
    pub allow_encoded_slashes: bool,
    /// Where each request's line goes (off when disabled).
    pub access_log: AccessLog,
    /// The fleet's rate-limit counters (`--redis-url`).
    pub redis: Option<Arc<RedisStore>>,
    /// Where the balancer's failures and ejections go for the fleet (`--fleet-listen`).
    pub fleet: Option<Arc<crate::fleet::LocalReports>>,
}

impl WeirProxy {
    pub fn new(
        routing: Arc<LiveRouting>,
        metrics: Metrics,
        telemetry: Arc<Telemetry>,
        options: DataPlaneOptions,
    ) -> Self {
        let subrequests = Arc::new(Subrequests::default());
        WeirProxy {
            trusted_proxies: options.trusted_proxies,
            limits: options.limits,
            allow_encoded_slashes: options.allow_encoded_slashes,
            access_log: options.access_log,
            redis: options.redis,
            fleet: options.fleet,
            in_flight: Arc::default(),
            subrequests: Arc::clone(&subrequests),
            mirrors: Arc::new(MirrorSender::new(subrequests, metrics.clone())),
            routing,
            metrics,
            telemetry,
        }
    }

    /// The count of requests in flight (for the shutdown drain).
    pub fn in_flight(&self) -> Arc<InFlightRequests> {
        Arc::clone(&self.in_flight)
    }
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    target: Option<Arc<RouteTarget>>,
    /// Endpoints this request was sent to, in order.
    tried: SmallVec<[SocketAddr; 2]>,
    reason: Option<PickReason>,
    /// In-flight slot on the current endpoint; released when the request ends.
    guard: Option<InFlightGuard>,
    /// When the current attempt started, and when its response headers arrived.
    attempt_start: Option<Instant>,
    upstream_headers: Option<(Instant, u16, Option<Duration>)>,
    /// The current attempt's outcome was already fed back (connect failure).
    outcome_recorded: bool,
    /// Counts this request (and its retry, if any) against the route's retry budget.
    budget: SmallVec<[crate::request::retry::BudgetGuard; 2]>,
    /// The retry under way is for a stale pooled connection, not a failed endpoint.
    stale_connection_retry: bool,
    /// The request's spans (empty when tracing is off) and trace id.
    trace: RequestTrace,
    /// Slot in the route's `max-concurrency` limit, held until the request is logged.
    permit: Option<ConcurrencyPermit>,
    /// Slot among the client's requests in flight (`limit-connections`), held as `permit`.
    client_permit: Option<crate::request::rate_limit::ClientPermit>,
    /// The path the client asked for, when the route rewrote it (the access log shows it).
    client_path: Option<Box<str>>,
    /// Request body bytes the route still takes (`proxy-body-size`; `None`: no limit).
    body_left: Option<u64>,
    /// The cookie of a session the pick began or moved: the response sets it.
    new_session: Option<NewSession>,
    /// `Access-Control-Allow-Origin` of a request from an origin the route's CORS allows.
    cors_origin: Option<HeaderValue>,
    /// The request's method is idempotent (it may be sent again after a failure).
    idempotent: bool,
    /// The current attempt's response was discarded for another attempt (its status is one
    /// the route retries, or its error backend answers): the engine's failure report that
    /// follows is that attempt.
    status_retry: bool,
    /// Fields its external auth check's answer puts on the upstream request
    /// (`auth-response-headers`).
    auth_fields: Option<Box<UpstreamHeaders>>,
    /// The route's mirror copy of the request, waiting for its body.
    mirror: Option<Box<PendingCopy>>,
    /// The request went on to its route's error backend after an upstream answered with
    /// this status (`custom-http-errors`), and the target it was diverted from.
    diverted: Option<(u16, Arc<RouteTarget>)>,
    /// Counts the request for the shutdown drain until the context is dropped.
    _in_flight: InFlightToken,
}

impl RequestCtx {
    /// Whether a mirror copy of the request waits for its body.
    pub(crate) fn mirror_waits(&self) -> bool {
        self.mirror.is_some()
    }

    /// Whether the current attempt has its (final) response header from the upstream.
    pub(crate) fn has_upstream_response(&self) -> bool {
        self.upstream_headers.is_some()
    }
}

/// `uri` with another path and query (taken, not copied); `None` if that is not a valid
/// target.
fn with_path_and_query(uri: &http::Uri, path_and_query: String) -> Option<http::Uri> {
    let mut parts = uri.clone().into_parts();
    let bytes = bytes::Bytes::from(path_and_query);
    parts.path_and_query = Some(http::uri::PathAndQuery::from_maybe_shared(bytes).ok()?);
    http::Uri::from_parts(parts).ok()
}

/// An answer's head, or a 500 when it cannot be built (a field value weir made is not one).
fn head_or_500(head: Result<pingora::http::ResponseHeader>) -> Admission {
    match head {
        Ok(head) => Admission::Head(Box::new(head)),
        Err(e) => {
            tracing::error!(error = %e, "answer head not valid");
            Admission::Answer(500, "answer not valid\n")
        }
    }
}

/// The answer to a client over its limits: 429, with `Retry-After` in whole seconds (at
/// least 1) when its rate says when it may send again.
fn rate_limited(wait: Option<Duration>) -> Result<pingora::http::ResponseHeader> {
    let mut resp = pingora::http::ResponseHeader::build(RATE_LIMITED.status, Some(2))?;
    if let Some(wait) = wait {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.insert_header(http::header::RETRY_AFTER, seconds.max(1))?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
    Ok(resp)
}

/// The answer to a request without a user's credentials: 401 with the route's challenge.
fn unauthorized(challenge: &HeaderValue) -> Result<pingora::http::ResponseHeader> {
    let mut resp = pingora::http::ResponseHeader::build(AUTH_REQUIRED.status, Some(2))?;
    resp.insert_header(http::header::WWW_AUTHENTICATE, challenge.clone())?;
    resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
    Ok(resp)
}

/// What [`WeirProxy::admit`] decided about a request before any upstream is involved.
pub(crate) enum Admission {
    /// Send it upstream: `ctx.target` is set.
    Forward,
    /// Refused (already counted and logged): answer it and close the connection.
    Refuse(Rejection),
    /// Answer with this head and no body: a redirect, a CORS preflight (`ctx.target` is
    /// set).
    Head(Box<pingora::http::ResponseHeader>),
    /// Answer with this status and body.
    Answer(u16, &'static str),
}

/// The shared phases of a request, independent of which HTTP implementation carries it
/// (Pingora's proxy, or the direct HTTP/1.1 path in [`crate::engine::own::direct`]): both call these, so a
/// request is routed, balanced, fed back and logged the same way on either.
impl WeirProxy {
    /// A fresh per-request context (counts the request for the shutdown drain).
    pub(crate) fn request_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            target: None,
            tried: SmallVec::new(),
            reason: None,
            guard: None,
            attempt_start: None,
            upstream_headers: None,
            outcome_recorded: false,
            budget: SmallVec::new(),
            stale_connection_retry: false,
            trace: RequestTrace::default(),
            permit: None,
            client_permit: None,
            client_path: None,
            body_left: None,
            new_session: None,
            cors_origin: None,
            idempotent: false,
            status_retry: false,
            diverted: None,
            auth_fields: None,
            mirror: None,
            _in_flight: self.in_flight.enter(),
        }
    }

    /// Checks the request, normalises its path and matches its route (first phase).
    /// `client_ip`: the connection's peer; `tls`: the connection is TLS.
    pub(crate) async fn admit(
        &self,
        req: &mut impl RequestView,
        client_ip: Option<IpAddr>,
        tls: bool,
        ctx: &mut RequestCtx,
    ) -> Admission {
        if let Err(rejection) = check_request(req, &self.limits) {
            return self.refused(rejection);
        }
        ctx.idempotent = req.method().is_idempotent();
        // Route and forward the normal form of the path, so the upstream's reading of it
        // cannot differ from the route it was sent by.
        let normalized = match normalize(req.uri().path(), self.allow_encoded_slashes) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(path)) => Some(path),
            Err(e) => return self.refused(Rejection::bad_request(e.reason())),
        };
        if let Some(path) = normalized {
            let path_and_query = match req.uri().query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            match with_path_and_query(req.uri(), path_and_query) {
                Some(uri) => req.set_uri(uri),
                None => return self.refused(Rejection::bad_request("malformed_path_escape")),
            }
        }
        let host = req.host();
        let table = self.routing.load();
        let target = table
            .router
            .lookup(host, req.uri().path(), &*req)
            .map(|choice| Arc::clone(choice.choose_for(&*req, &mut rand::rng())));
        drop(table);
        ctx.trace =
            self.telemetry
                .start_request(req, target.as_ref().map(|t| t.route.as_str()), host);
        let Some(target) = target else {
            return Admission::Answer(404, "no route for this host and path\n");
        };
        // The route's source ranges, before anything else the route does: a client outside
        // them learns nothing of it, not even where it redirects.
        if let Some(access) = &target.source_access {
            let client = client_ip.map(|peer| trusted_client(&self.trusted_proxies, peer, &*req));
            if !client.is_some_and(|ip| access.admits(ip)) {
                self.count_refused(SOURCE_DENIED);
                ctx.target = Some(target);
                return Admission::Answer(SOURCE_DENIED.status, "forbidden\n");
            }
        }
        // CORS: a preflight from an allowed origin is answered here, before any redirect;
        // other requests from it get the CORS fields on their response.
        if let Some(cors) = &target.cors {
            let allowed = req
                .field(&http::header::ORIGIN)
                .and_then(|origin| cors.allow_origin(origin));
            if let Some(allowed) = allowed {
                if req.method() == http::Method::OPTIONS {
                    let answer = cors.preflight(&allowed);
                    ctx.target = Some(target);
                    return head_or_500(answer);
                }
                ctx.cors_origin = Some(allowed);
            }
        }
        if target.ssl_redirect && !tls {
            let location = https_location(req);
            ctx.target = Some(target);
            return head_or_500(redirect_response(308, &location));
        }
        if let Some(redirect) = &target.redirect {
            let location = redirect_location(&redirect.to, req, tls);
            let status = redirect.status;
            ctx.target = Some(target);
            return head_or_500(redirect_response(status, &location));
        }
        if let Some(status) = target.respond {
            ctx.target = Some(target);
            return Admission::Answer(status, "no backend of this route can be reached\n");
        }
        // The rule's rate limit by client (after redirects, as nginx's `limit_req`): 429
        // with when to come back.
        if let (Some(limiter), Some(peer)) = (&target.rate_limit, client_ip) {
            let client = trusted_client(&self.trusted_proxies, peer, &*req);
            match limiter.admit(client, Nanos::now()) {
                Ok(permit) => ctx.client_permit = permit,
                Err(limited) => {
                    let (rejection, wait) = match limited {
                        Limited::Concurrency => (CLIENT_CONCURRENCY, None),
                        Limited::Rate(wait) => (RATE_LIMITED, Some(wait)),
                    };
                    self.count_refused(rejection);
                    ctx.target = Some(target);
                    return head_or_500(rate_limited(wait));
                }
            }
        }
        // The fleet-wide limit, after this replica's own (which costs no round trip).
        if let Some(global) = &target.global_limit {
            let client = client_ip.map(|peer| trusted_client(&self.trusted_proxies, peer, &*req));
            if let Some(wait) = self.global_limit(global, &*req, client).await {
                self.count_refused(GLOBAL_RATE_LIMITED);
                ctx.target = Some(target);
                return head_or_500(rate_limited(Some(wait)));
            }
        }
        // The route's authentication (after the rate limit, as nginx's access phase follows
        // `limit_req`; before the rewrite, so the check sees what the client asked for).
        if let Some(auth) = &target.auth {
            if let Some(answer) = self
                .authenticate(auth, &*req, client_ip, tls, &target, ctx)
                .await
            {
                ctx.target = Some(target);
                return answer;
            }
        }
        // The route's mirror: a copy of the request as the client sent it.
        if let Some(mirror) = &target.mirror {
            let about = self.described(&*req, client_ip, tls);
            match mirror.copy(&*req, &about) {
                Ok(copy) => ctx.mirror = copy.map(Box::new),
                Err(why) => {
                    tracing::debug!(error = why, route = %target.route, "no mirror copy");
                    self.mirrors.dropped("mirror");
                }
            }
        }
        // The route's path rewrite: what goes upstream from here on (routing is done). Its
        // path is put in normal form again, as the client's was: captures are the client's
        // bytes, and the upstream must not read `..` the rewrite put together.
        if let Some(rewrite) = &target.rewrite {
            let uri = req.uri();
            if let Some(rewritten) = rewrite.rewrite(uri.path(), uri.query()) {
                let (path, query) = match rewritten.split_once('?') {
                    Some((path, query)) => (path, Some(query)),
                    None => (rewritten.as_str(), None),
                };
                let rewritten = match normalize(path, self.allow_encoded_slashes) {
                    Ok(Cow::Borrowed(_)) => rewritten,
                    Ok(Cow::Owned(path)) => match query {
                        Some(query) => format!("{path}?{query}"),
                        None => path,
                    },
                    Err(e) => {
                        ctx.target = Some(target);
                        return self.refused(Rejection::bad_request(e.reason()));
                    }
                };
                match with_path_and_query(uri, rewritten) {
                    Some(rewritten) => {
                        ctx.client_path = Some(uri.path().into());
                        req.set_uri(rewritten);
                    }
                    None => {
                        ctx.target = Some(target);
                        return Admission::Answer(500, "rewritten request target is not valid\n");
                    }
                }
            }
        }
        // `proxy-body-size`: a declared length over it is answered now; a body of unknown
        // length is counted as it streams ([`WeirProxy::body_chunk`]).
        if let Some(max) = target.max_request_body {
            let declared = req
                .field(&http::header::CONTENT_LENGTH)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|len| len > max) {
                ctx.target = Some(target);
                return self.refused(BODY_TOO_LARGE);
            }
            ctx.body_left = Some(max);
        }
        if let Some(limit) = &target.concurrency {
            match limit.try_acquire() {
                Some(permit) => ctx.permit = Some(permit),
                None => {
                    // Full: fail fast rather than queue more work on the upstreams.
                    ctx.target = Some(target);
                    return Admission::Answer(503, "route at its concurrency limit\n");
                }
            }
        }
        // Copies of the request that go elsewhere too: a mirror's now if it carries no
        // body (else once the body is complete, [`WeirProxy::mirror_body`]); a warm-up copy
        // for an endpoint in slow start, of the request as the upstream gets it.
        if ctx.mirror.as_ref().is_some_and(|copy| !copy.wants_body()) {
            self.mirror_body(ctx, &[], true);
        }
        if let Some(share) = target.warm_up_mirror {
            let bodiless = req
                .field(&http::header::CONTENT_LENGTH)
                .is_none_or(|l| l == b"0")
                && req.field(&http::header::TRANSFER_ENCODING).is_none();
            let mut rng = rand::rng();
            if ctx.idempotent && bodiless && rand::Rng::random_bool(&mut rng, share) {
                if let Some(addr) = target.pool.warming_endpoint(Nanos::now(), &mut rng) {
                    match PendingCopy::warm_up(&*req, addr) {
                        Ok(copy) => self.mirrors.send(copy),
                        Err(why) => {
                            tracing::debug!(error = why, "no warm-up copy");
                            self.mirrors.dropped("warm_up");
                        }
                    }
                }
            }
        }
        ctx.target = Some(target);
        Admission::Forward
    }

    /// A piece of the request's body for its mirror copy (`end`: the body is complete, and
    /// the copy goes). A copy whose body grows too large is dropped.
    pub(crate) fn mirror_body(&self, ctx: &mut RequestCtx, piece: &[u8], end: bool) {
        let Some(copy) = ctx.mirror.as_mut() else {
            return;
        };
        if !copy.add_body(piece) {
            ctx.mirror = None;
            self.mirrors.dropped("mirror");
            return;
        }
        if end {
            if let Some(copy) = ctx.mirror.take() {
                self.mirrors.send(*copy);
            }
        }
    }

    /// The route's authentication of `req`: `None` lets it on; otherwise the answer (401,
    /// 403, a sign-in redirect, 500 for a failed check, 503 for a route whose
    /// authentication could not be set up), counted.
    async fn authenticate(
        &self,
        auth: &RouteAuth,
        req: &impl RequestView,
        client_ip: Option<IpAddr>,
        tls: bool,
        target: &RouteTarget,
        ctx: &mut RequestCtx,
    ) -> Option<Admission> {
        let (basic, external) = match auth {
            RouteAuth::Required { basic, external } => (basic, external),
            RouteAuth::Unusable => {
                self.count_refused(AUTH_UNUSABLE);
                return Some(Admission::Answer(
                    AUTH_UNUSABLE.status,
                    "authentication of this route is not configured\n",
                ));
            }
        };
        if let Some(basic) = basic {
            let started = Instant::now();
            let allowed = match basic.check(req.field(&http::header::AUTHORIZATION)) {
                BasicOutcome::Allowed => true,
                BasicOutcome::Denied => false,
                // bcrypt takes milliseconds by design: off this thread, whose other
                // connections would wait for it.
                BasicOutcome::Verify(check) => tokio::task::spawn_blocking(move || check.run())
                    .await
                    .unwrap_or(false),
            };
            let result = if allowed { "allowed" } else { "denied" };
            self.metrics
                .auth_duration
                .with_label_values(&["basic", result])
                .observe(started.elapsed().as_secs_f64());
            if !allowed {
                self.count_refused(AUTH_REQUIRED);
                return Some(head_or_500(unauthorized(&basic.challenge)));
            }
        }
        if let Some(external) = external {
            let started = Instant::now();
            let about = self.described(req, client_ip, tls);
            let deadlines = Deadlines {
                connect: target.connect_timeout,
                read: target.read_timeout,
            };
            let verdict = match external.subrequest(req, &about) {
                Ok((to, head)) => {
                    // Boxed: the connector's future is large, and most requests never make it.
                    match Box::pin(self.subrequests.send(&to, head, None, deadlines)).await {
                        Ok(answer) => external.verdict(&answer, &about),
                        Err(e) => {
                            tracing::warn!(error = %e, route = %target.route, "external auth check failed");
                            ExternalVerdict::Failed(0)
                        }
                    }
                }
                Err(why) => {
                    tracing::warn!(error = why, route = %target.route, "external auth check not sent");
                    ExternalVerdict::Failed(0)
                }
            };
            let result = match &verdict {
                ExternalVerdict::Allowed(_) => "allowed",
                ExternalVerdict::Denied(_) => "denied",
                ExternalVerdict::Failed(_) => "error",
            };
            self.metrics
                .auth_duration
                .with_label_values(&["external", result])
                .observe(started.elapsed().as_secs_f64());
            match verdict {
                ExternalVerdict::Allowed(fields) => {
                    if !fields.is_empty() {
                        ctx.auth_fields = Some(Box::new(fields));
                    }
                }
                ExternalVerdict::Denied(head) => {
                    self.count_refused(AUTH_DENIED);
                    return Some(Admission::Head(Box::new(head)));
                }
                ExternalVerdict::Failed(status) => {
                    if status != 0 {
                        tracing::warn!(status, route = %target.route, "external auth service answered neither 2xx, 401 nor 403");
                    }
                    self.count_refused(AUTH_FAILED);
                    return Some(Admission::Answer(
                        AUTH_FAILED.status,
                        "authentication service failed\n",
                    ));
                }
            }
        }
        None
    }

    /// The fleet-wide limit of `req`: `Some(until the window ends)` when it is over it.
    /// Without an answer from Redis (or without `--redis-url`) the request goes on: a
    /// limit is not worth an outage, and the gap is counted.
    async fn global_limit(
        &self,
        global: &GlobalLimiter,
        req: &impl RequestView,
        client: Option<IpAddr>,
    ) -> Option<Duration> {
        let key = global.store_key(req, client)?;
        let Some(store) = &self.redis else {
            static REPORTED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!("a route has global-rate-limit but weir has no --redis-url: the limit is not applied");
            }
            self.metrics
                .global_rate_limit_unchecked_total
                .with_label_values(&["not_configured"])
                .inc();
            return None;
        };
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        match store.take(&key, global.limit, global.window, unix).await {
            Verdict::Allowed => None,
            Verdict::Limited => {
                let window = global.window.as_millis().max(1);
                let left = window - unix.as_millis() % window;
                Some(Duration::from_millis(left as u64))
            }
            Verdict::Unavailable => {
                self.metrics
                    .global_rate_limit_unchecked_total
                    .with_label_values(&["unreachable"])
                    .inc();
                None
            }
        }
    }

    /// `req` as the copies weir sends elsewhere describe it.
    fn described<'r>(
        &self,
        req: &'r impl RequestView,
        client_ip: Option<IpAddr>,
        tls: bool,
    ) -> Described<'r> {
        let request_uri = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path(), |p| p.as_str());
        Described {
            scheme: if tls { "https" } else { "http" },
            host: req.host(),
            request_uri,
            client: client_ip.map(|peer| trusted_client(&self.trusted_proxies, peer, req)),
            forwarded_for: client_ip.map(|peer| {
                self.trusted_proxies
                    .forwarded_for(peer, forwarded_chain(req).as_deref())
            }),
        }
    }

    /// Counts and logs a refused request.
    fn refused(&self, rejection: Rejection) -> Admission {
        self.count_refused(rejection);
        Admission::Refuse(rejection)
    }

    /// A chunk of a request body streaming upstream: `Err` (413, counted) once the body is
    /// over the route's `proxy-body-size`.
    pub(crate) fn body_chunk(&self, len: usize, ctx: &mut RequestCtx) -> Result<()> {
        let Some(left) = ctx.body_left.as_mut() else {
            return Ok(());
        };
        match left.checked_sub(len as u64) {
            Some(rest) => {
                *left = rest;
                Ok(())
            }
            None => {
                self.count_refused(BODY_TOO_LARGE);
                Err(
                    Error::explain(ErrorType::HTTPStatus(413), "request body too large")
                        .into_down(),
                )
            }
        }
    }

    /// Counts a refusal in `weir_requests_rejected_total` by its reason, and logs it.
    pub(crate) fn count_refused(&self, rejection: Rejection) {
        self.metrics
            .requests_rejected_total
            .with_label_values(&[rejection.reason])
            .inc();
        tracing::info!(
            reason = rejection.reason,
            status = rejection.status,
            "request refused"
        );
    }

    /// A request head refused before it could be read as a request (the HTTP/1 framing
    /// check, [`crate::http::h1::classify`]): counted, logged, and given an access log line
    /// with what is known (no method, host or path).
    pub(crate) fn refused_head(&self, rejection: Rejection) {
        self.count_refused(rejection);
        if self.access_log.enabled() {
            self.access_log.write(&AccessLine {
                method: "",
                host: "",
                path: "",
                status: rejection.status,
                duration: Duration::ZERO,
                upstream: None,
                pick_reason: "",
                attempts: 0,
                namespace: "",
                ingress: "",
                service: "",
                bytes_in: 0,
                bytes_out: rejection.body().len(),
                trace_id: "",
                error: Some(&rejection.reason),
            });
        }
    }

    /// Picks the endpoint of the next attempt and takes its in-flight slot; an `HTTPStatus(503)`
    /// error when the route has nothing to offer.
    pub(crate) fn pick_endpoint(
        &self,
        req: &impl RequestView,
        client_ip: Option<IpAddr>,
        ctx: &mut RequestCtx,
    ) -> Result<(Arc<RouteTarget>, SocketAddr)> {
        let Some(target) = ctx.target.clone() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no route selected",
            ));
        };
        let mut rng = rand::rng();
        let key_hash = if target.pool.algorithm() == Algorithm::ConsistentHash {
            hash_key(req, client_ip, &target.hash_key, &self.trusted_proxies)
        } else {
            0
        };
        let request = PickRequest {
            tried: &ctx.tried,
            key_hash,
            now: Nanos::now(),
        };
        let mut pick = match &target.session_cookie {
            Some(cookie) => {
                let (pick, new_session) = cookie.pick(req, &target.pool, &request, &mut rng);
                if new_session.is_some() {
                    ctx.new_session = new_session;
                }
                pick
            }
            None => target.pool.pick(&request, &mut rng),
        };
        if pick.endpoint.is_none() && ctx.stale_connection_retry {
            // A pooled connection turned out stale (the endpoint itself is fine): with every
            // endpoint tried, the same one over a fresh connection is the right call.
            pick = target.pool.pick(
                &PickRequest {
                    key_hash,
                    now: request.now,
                    ..PickRequest::default()
                },
                &mut rng,
            );
            pick.reason = PickReason::Retry;
        }
        ctx.reason = Some(pick.reason);
        target
            .series
            .count_pick(&self.metrics, &target.labels(), pick.reason);
        let Some(endpoint) = pick.endpoint else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "route has no available endpoints",
            ));
        };
        let addr = endpoint.addr();
        if ctx.tried.is_empty() {
            ctx.budget.push(target.retry_budget.start());
        }
        // Replacing the guard releases the slot of a previous attempt.
        ctx.guard = Some(target.pool.start_request(&endpoint));
        ctx.tried.push(addr);
        ctx.trace.start_attempt(
            &self.telemetry,
            addr,
            ctx.tried.len(),
            pick.reason.as_str(),
            &target.service,
        );
        ctx.attempt_start = Some(Instant::now());
        ctx.upstream_headers = None;
        ctx.outcome_recorded = false;
        ctx.status_retry = false;
        Ok((target, addr))
    }

    /// The headers weir sets on the upstream request, each replacing any of the same name the
    /// client sent: `X-Forwarded-For`/`-Proto`/`-Host`, the trace context, and those of the
    /// route's filters.
    pub(crate) fn forward_headers(
        &self,
        downstream: &impl RequestView,
        client_ip: Option<IpAddr>,
        tls: bool,
        ctx: &mut RequestCtx,
    ) -> UpstreamHeaders {
        let mut set = UpstreamHeaders::new();
        ctx.trace.inject(&self.telemetry, &mut set);
        if let Some(peer) = client_ip {
            // Extends a trusted proxy's chain; replaces a claim from anyone else.
            let forwarded_for = self
                .trusted_proxies
                .forwarded_for(peer, forwarded_chain(downstream).as_deref());
            set.push((X_FORWARDED_FOR, forwarded_for));
        }
        let proto = if tls { "https" } else { "http" };
        set.push((
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(proto),
        ));
        // The client's Host value as it came (any value a header may carry), else the
        // target's authority.
        let host = match downstream.field(&http::header::HOST) {
            Some(host) => HeaderValue::from_bytes(host).ok(),
            None => HeaderValue::from_str(downstream.authority()).ok(),
        };
        if let Some(host) = host.filter(|h| !h.is_empty()) {
            set.push((HeaderName::from_static("x-forwarded-host"), host));
        }
        // The route's filters' fields (`upstream-vhost`, `x-forwarded-prefix`, ...).
        if let Some(target) = &ctx.target {
            set.extend(target.set_fields.iter().cloned());
            // Added fields go after what the client sent: one field, values joined by
            // commas (the same field to an HTTP reader).
            for (name, value) in &target.add_fields {
                let mut joined: Vec<u8> = Vec::new();
                for sent in downstream.field_values(name) {
                    joined.extend_from_slice(sent);
                    joined.push(b',');
                }
                joined.extend_from_slice(value.as_bytes());
                if let Ok(value) = HeaderValue::from_bytes(&joined) {
                    set.push((name.clone(), value));
                }
            }
        }
        // What the route's authentication service said of the client.
        if let Some(fields) = &ctx.auth_fields {
            set.extend(fields.iter().cloned());
        }
        // To an error backend: what it is to answer for, as ingress-nginx tells it.
        if let Some((status, from)) = &ctx.diverted {
            let path = ctx
                .client_path
                .as_deref()
                .unwrap_or(downstream.uri().path());
            let original_uri = match downstream.uri().query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_string(),
            };
            let fields = [
                ("x-code", status.to_string()),
                ("x-original-uri", original_uri),
                ("x-namespace", from.namespace.clone()),
                ("x-ingress-name", from.ingress.clone()),
                ("x-service-name", from.service.clone()),
                ("x-service-port", from.service_port.clone()),
            ];
            for (name, value) in fields {
                if let Ok(value) = HeaderValue::try_from(value) {
                    set.push((HeaderName::from_static(name), value));
                }
            }
            if let Some(accept) = downstream
                .field(&http::header::ACCEPT)
                .and_then(|v| HeaderValue::from_bytes(v).ok())
            {
                set.push((HeaderName::from_static("x-format"), accept));
            }
        }
        set
    }

    /// Notes the upstream's status, its `Retry-After` (delay in seconds) and the time to
    /// response headers.
    pub(crate) fn note_response(
        &self,
        status: u16,
        retry_after: Option<&[u8]>,
        ctx: &mut RequestCtx,
    ) {
        let retry_after = (status == 503)
            .then_some(retry_after)
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if ctx.upstream_headers.is_none() && !(100..200).contains(&status) {
            ctx.upstream_headers = Some((Instant::now(), status, retry_after));
        }
    }

    /// The fields weir adds to the upstream's response (its response filters): the CORS
    /// fields of an allowed origin, the cookie of a session this request began or moved.
    /// `tls`: the response goes over TLS.
    pub(crate) fn response_fields(&self, tls: bool, ctx: &RequestCtx) -> ResponseFields {
        let mut fields = ResponseFields::new();
        // The route's CORS, also on its error backend's answer (`custom-http-errors`).
        let route = ctx
            .diverted
            .as_ref()
            .map(|(_, from)| from)
            .or(ctx.target.as_ref());
        if let (Some(origin), Some(cors)) = (&ctx.cors_origin, route.and_then(|t| t.cors.as_ref()))
        {
            cors.fields(origin, &mut fields);
        }
        // The route's `ResponseHeaderModifier` (not on an error backend's answer).
        if let (Some(target), None) = (&ctx.target, &ctx.diverted) {
            fields.extend(target.response_fields.iter().cloned());
        }
        if let (Some(session), Some(target)) = (ctx.new_session, &ctx.target) {
            if let Some(cookie) = target.session_cookie.as_ref() {
                if let Some(value) = cookie.set_cookie(session, tls) {
                    fields.push(ResponseField::appended(http::header::SET_COOKIE, value));
                }
            }
        }
        fields
    }

    /// After a failed connect: reports it to the pool at once (a retry replaces the guard)
    /// and says whether the request may go to another endpoint. Nothing was sent.
    /// `body_at_hand`: the engine can send the request's whole body again.
    pub(crate) fn connect_failed(
        &self,
        e: &Error,
        body_at_hand: bool,
        ctx: &mut RequestCtx,
    ) -> bool {
        self.feed_back(ctx, Outcome::Failure);
        self.count_upstream_error(ctx, e);
        ctx.stale_connection_retry = false;
        let replayable = self.replayable(body_at_hand, ctx);
        self.may_retry(replayable, !retry::sent_nothing(e), Some(e), ctx)
    }

    /// After an error while proxying: whether to try again. `stale`: the error came from a
    /// reused pooled connection that turned out closed, which says nothing about the endpoint
    /// (sent again over a fresh connection when the request is replayable).
    pub(crate) fn proxy_failed(
        &self,
        e: &Error,
        stale: bool,
        body_at_hand: bool,
        ctx: &mut RequestCtx,
    ) -> bool {
        if std::mem::take(&mut ctx.status_retry) {
            // The response was discarded for a retry ([`WeirProxy::retry_on_status`]),
            // already decided and counted.
            return true;
        }
        ctx.stale_connection_retry = stale;
        if e.esource() != &ErrorSource::Upstream {
            // The client went away or broke its request: nobody to retry for.
            return false;
        }
        if !stale {
            self.feed_back(ctx, Outcome::Failure);
            self.count_upstream_error(ctx, e);
        }
        let replayable = self.replayable(body_at_hand, ctx);
        ctx.upstream_headers.is_none()
            && if stale {
                replayable
            } else {
                self.may_retry(replayable, true, Some(e), ctx)
            }
    }

    /// After the head of an upstream response: whether to discard it, unsent, for another
    /// attempt. A status the route retries (`proxy-next-upstream: http_502 ...`) goes to
    /// another endpoint while attempts, budget and replay allow; else a status the route's
    /// error backend answers for (`custom-http-errors`) goes there, once. An engine that
    /// turns a `true` into an error for its retry loop reports that error through
    /// [`WeirProxy::proxy_failed`] as usual.
    pub(crate) fn replaces_response(
        &self,
        status: u16,
        body_at_hand: bool,
        ctx: &mut RequestCtx,
    ) -> bool {
        let Some(target) = ctx.target.clone() else {
            return false;
        };
        // As `finish_request` would judge it: a 503 with `Retry-After` is overload.
        let retry_after = ctx
            .upstream_headers
            .and_then(|(_, _, retry_after)| retry_after);
        let outcome = Outcome::of_response(status, retry_after);
        let replayable = self.replayable(body_at_hand, ctx);
        let retry = target.retry_on.statuses.contains(&status)
            && self.may_retry(replayable, true, None, ctx);
        let error_backend = match &target.error_pages {
            Some(pages) if !retry && ctx.diverted.is_none() && body_at_hand => pages
                .statuses
                .contains(&status)
                .then(|| Arc::clone(&pages.target)),
            _ => None,
        };
        if !retry && error_backend.is_none() {
            return false;
        }
        self.feed_back(ctx, outcome);
        ctx.upstream_headers = None;
        ctx.status_retry = true;
        if let Some(error_backend) = error_backend {
            // A new target: its own endpoints, attempts and session.
            ctx.diverted = ctx.target.replace(error_backend).map(|from| (status, from));
            ctx.tried.clear();
            ctx.new_session = None;
        }
        true
    }

    /// Whether the request may be sent again: its method is idempotent (or its route retries
    /// any method) and its whole body is at hand.
    fn replayable(&self, body_at_hand: bool, ctx: &RequestCtx) -> bool {
        let any_method = ctx
            .target
            .as_ref()
            .is_some_and(|t| t.retry_on.non_idempotent);
        retry::replayable(ctx.idempotent || any_method, body_at_hand)
    }

    /// The last phase: feeds the outcome back to the pool, releases the request's slots,
    /// records metrics and writes the access log line. `code` is the status sent to the
    /// client (0 when none was).
    pub(crate) fn finish_request(
        &self,
        req: &impl RequestView,
        code: u16,
        e: Option<&Error>,
        bytes: (usize, usize),
        ctx: &mut RequestCtx,
    ) {
        let outcome = match (e, ctx.upstream_headers) {
            (_, Some((_, status, retry_after))) => Outcome::of_response(status, retry_after),
            (Some(e), None) if e.esource() == &ErrorSource::Upstream => Outcome::Failure,
            _ => Outcome::ClientCancelled,
        };
        self.feed_back(ctx, outcome);
        ctx.guard = None;
        ctx.permit = None;
        ctx.client_permit = None;
        ctx.trace
            .finish(code, ctx.upstream_headers.map(|(_, status, _)| status));
        if let (Some(counter), Some(target), Some(endpoint)) = (
            &self.metrics.endpoint_requests_total,
            &ctx.target,
            ctx.tried.last(),
        ) {
            counter
                .with_label_values(&[&target.service, &endpoint.to_string(), code_class(code)])
                .inc();
        }
        let method = req.method();
        let (namespace, ingress, service) = match &ctx.target {
            Some(t) => (t.namespace.as_str(), t.ingress.as_str(), t.service.as_str()),
            None => ("", "", ""),
        };
        let duration = ctx.start.elapsed();
        match &ctx.target {
            Some(t) => t.series.count_request(
                &self.metrics,
                &t.labels(),
                method,
                code,
                duration.as_secs_f64(),
            ),
            None => {
                // No route (404): one shared, rarely hit series.
                let code_label = code.to_string();
                let method = method_label(method);
                self.metrics
                    .requests_total
                    .with_label_values(&["", "", "", method, &code_label])
                    .inc();
                self.metrics
                    .request_duration
                    .with_label_values(&["", "", "", method, code_class(code)])
                    .observe(duration.as_secs_f64());
            }
        }
        // The access log: one line per request (crate::request::access_log), off the request path
        // but for its formatting, which is skipped when the log filter turns it off.
        if self.access_log.enabled() {
            let error = e.map(|e| e as &dyn std::fmt::Display);
            self.access_log.write(&AccessLine {
                method: method.as_str(),
                host: req.host(),
                path: ctx.client_path.as_deref().unwrap_or(req.uri().path()),
                status: code,
                duration,
                upstream: ctx.tried.last().copied(),
                pick_reason: ctx.reason.map_or("", PickReason::as_str),
                attempts: ctx.tried.len(),
                namespace,
                ingress,
                service,
                bytes_in: bytes.0,
                bytes_out: bytes.1,
                trace_id: ctx.trace.trace_id.as_deref().unwrap_or(""),
                error,
            });
        }
    }

    fn count_upstream_error(&self, ctx: &RequestCtx, e: &Error) {
        if let Some(target) = &ctx.target {
            self.metrics
                .upstream_errors_total
                .with_label_values(&[&target.service, upstream_error_kind(e)])
                .inc();
        }
    }

    /// Whether the request may be sent again: `replayable`, the route retries after this
    /// kind of failure (`failure`: the error, `None` for a status it retries), attempts and
    /// time left on its route, and, when the failed attempt `reached_upstream`, room in the
    /// route's retry budget (which then counts it). A connect refused, unrouted or timed out
    /// sent nothing ([`retry::sent_nothing`]): its retry adds no load to any backend beyond
    /// the request itself, and when an endpoint dies every request picked for it fails this
    /// way at once, more of them than the budget's floor of 3 (a `502` for clients of a dead
    /// pod while its peers are fine). A failed TLS handshake did reach the backend.
    fn may_retry(
        &self,
        replayable: bool,
        reached_upstream: bool,
        failure: Option<&Error>,
        ctx: &mut RequestCtx,
    ) -> bool {
        let Some(target) = &ctx.target else {
            return false;
        };
        let retry_on = &target.retry_on;
        let condition = match failure {
            Some(e) if upstream_error_kind(e) == "timeout" => retry_on.timeouts,
            Some(_) => retry_on.errors,
            None => true,
        };
        if !condition || retry_on.within.is_some_and(|t| ctx.start.elapsed() >= t) {
            return false;
        }
        let attempts = ctx.tried.len();
        // Nothing left to try: answer with this failure (502/504), not "no endpoints".
        let (routable, draining) = target.pool.counts();
        if routable.max(draining) <= attempts {
            return false;
        }
        if attempts > target.retries as usize || !replayable {
            return false;
        }
        if !reached_upstream {
            return true;
        }
        match target.retry_budget.try_retry() {
            Some(slot) => {
                ctx.budget.push(slot);
                true
            }
            None => false,
        }
    }

    /// Tells the pool how the current attempt went (once per attempt): outcome for outlier
    /// ejection, time to response headers for peak EWMA and occupancy.
    fn feed_back(&self, ctx: &mut RequestCtx, outcome: Outcome) {
        if ctx.outcome_recorded {
            return;
        }
        let (Some(target), Some(guard)) = (&ctx.target, &ctx.guard) else {
            return;
        };
        ctx.outcome_recorded = true;
        let now = Nanos::now();
        let endpoint = guard.endpoint();
        if let (Some(start), Some((headers_at, ..))) = (ctx.attempt_start, ctx.upstream_headers) {
            let latency = headers_at.duration_since(start);
            target.series.observe_upstream_response(
                &self.metrics,
                &target.labels(),
                latency.as_secs_f64(),
            );
            // Failures are the outlier detector's business; a fast 500 fed in as latency
            // would make a broken endpoint look like the fastest one.
            if outcome == Outcome::Success {
                target.pool.observe_latency(endpoint, latency, now);
            }
        }
        let failures_before = endpoint.consecutive_failures();
        let ejected = target.pool.record(endpoint, outcome, now);
        // The fleet hears of every change of the count and of ejections; the plain path
        // (a success after a success) costs it one atomic load.
        if let Some(fleet) = &self.fleet {
            if endpoint.consecutive_failures() != failures_before || ejected.is_some() {
                fleet.note(endpoint.addr());
            }
        }
        if let Some(until) = ejected {
            self.metrics
                .outlier_ejections_total
                .with_label_values(&[&target.service])
                .inc();
            tracing::warn!(
                endpoint = %endpoint.addr(),
                service = %target.service,
                ejected_for_secs = until.since(now).as_secs(),
                "endpoint ejected after consecutive failures"
            );
        }
    }
}

/// The request's consistent-hash key, hashed (`weir.dev/hash-key`, docs/configuration.md). A missing header,
/// cookie or query parameter falls back to the client address, as Skipper does — the one
/// `X-Forwarded-For` names when the peer is a trusted proxy, else the peer's.
fn hash_key(
    req: &impl RequestView,
    peer: Option<IpAddr>,
    key: &HashKey,
    trusted_proxies: &TrustedProxies,
) -> u64 {
    let found: Option<&[u8]> = match key {
        HashKey::ClientIp => None,
        HashKey::Path => Some(req.uri().path().as_bytes()),
        HashKey::Header(name) => req.field_named(name.as_bytes()),
        HashKey::Query(name) => req.query_param(name).map(str::as_bytes),
        HashKey::Cookie(name) => req.cookie(name).map(str::as_bytes),
    };
    if let Some(bytes) = found {
        return key_hash(bytes);
    }
    match peer {
        Some(ip) => {
            let client = trusted_client(trusted_proxies, ip, req);
            with_ip_text(client, key_hash)
        }
        None => key_hash(b""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_read_the_same_from_either_view_of_a_request() {
        use crate::http::h1::{classify, Classified, ClientRequest, HeadFields};
        let raw: &'static [u8] = b"GET /cart?u=7&x=1 HTTP/1.1\r\nHost: shop\r\n\
            X-User: ann\r\nCookie: a=1; sid=s-42\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n";
        let mut fields = HeadFields::default();
        let Classified::Simple(view) = classify(raw, &mut fields) else {
            panic!("simple");
        };
        let direct =
            ClientRequest::parse(bytes::Bytes::from_static(raw), view, &fields).expect("parses");
        let mut pingora = RequestHeader::build("GET", b"/cart?u=7&x=1", None).expect("builds");
        for (name, value) in [
            ("Host", "shop"),
            ("X-User", "ann"),
            ("Cookie", "a=1; sid=s-42"),
            ("X-Forwarded-For", "198.51.100.1"),
        ] {
            pingora.append_header(name, value).expect("appends");
        }
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]);
        let peer = Some(IpAddr::from([10, 0, 0, 9]));
        let keys = [
            (HashKey::Header("x-user".into()), Some(&b"ann"[..])),
            (HashKey::Cookie("sid".into()), Some(b"s-42")),
            (HashKey::Query("u".into()), Some(b"7")),
            (HashKey::Path, Some(b"/cart")),
            // Missing: the client the trusted proxy names.
            (HashKey::Header("x-absent".into()), None),
            (HashKey::ClientIp, None),
        ];
        let client = key_hash(b"198.51.100.1");
        for (key, value) in keys {
            let expected = value.map_or(client, key_hash);
            assert_eq!(hash_key(&direct, peer, &key, &trusted), expected, "{key:?}");
            assert_eq!(
                hash_key(&pingora, peer, &key, &trusted),
                expected,
                "{key:?}"
            );
        }
    }
}
