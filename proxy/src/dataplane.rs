//! The request path: [`WeirProxy`], Pingora's `ProxyHttp` for weir.
//!
//! Phases used, in order: `request_filter` matches the route (404 here when none);
//! `upstream_peer` asks the route's pool for an endpoint (with the request's hash key for
//! hashing pools) and takes an in-flight slot (503 when the pool has nothing);
//! `fail_to_connect` reports a connect failure to the pool at once;
//! `upstream_request_filter` sets the `X-Forwarded-*` headers; `upstream_response_filter`
//! notes the status, `Retry-After` and time to headers; `fail_to_proxy` turns errors into
//! short 502/503/504 answers; `logging` feeds the outcome and latency back to the pool,
//! records metrics and releases the in-flight slot.
//!
//! Must not: block, do file or API I/O, or lock shared state; routing state is read through
//! one atomic load per request.

use crate::access_log::{AccessLine, AccessLog};
use crate::concurrency::ConcurrencyPermit;
use crate::forwarded::{client_ip, with_ip_text, TrustedProxies, UpstreamHeaders};
use crate::hardening::{check_request, Rejection, RequestLimits};
use crate::metrics::{code_class, method_label, upstream_error_kind, Metrics};
use crate::path::normalize;
use crate::request_view::{visible_ascii, RequestView};
use crate::routing::{LiveRouting, RouteTarget};
use crate::shutdown::{InFlightRequests, InFlightToken};
use crate::telemetry::{RequestTrace, Telemetry};
use crate::timeouts::UPSTREAM_IDLE_TIMEOUT;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;
use pingora::RetryType;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_balancer::ring::key_hash;
use weir_balancer::{Algorithm, InFlightGuard, Nanos, Outcome, PickReason, PickRequest};
use weir_discovery::{BackendProtocol, HashKey};

/// A name, not a string: looking a field up by `&str` parses and lowercases the name first.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Concurrent streams weir opens on one upstream h2 connection.
const H2_STREAMS_PER_CONNECTION: usize = 100;

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
}

impl WeirProxy {
    pub fn new(
        routing: Arc<LiveRouting>,
        metrics: Metrics,
        telemetry: Arc<Telemetry>,
        options: DataPlaneOptions,
    ) -> Self {
        WeirProxy {
            trusted_proxies: options.trusted_proxies,
            limits: options.limits,
            allow_encoded_slashes: options.allow_encoded_slashes,
            access_log: options.access_log,
            in_flight: Arc::default(),
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
    budget: SmallVec<[crate::retry::BudgetGuard; 2]>,
    /// The retry under way is for a stale pooled connection, not a failed endpoint.
    stale_connection_retry: bool,
    /// The request's spans (empty when tracing is off) and trace id.
    trace: RequestTrace,
    /// Slot in the route's `max-concurrency` limit, held until the request is logged.
    permit: Option<ConcurrencyPermit>,
    /// Counts the request for the shutdown drain until the context is dropped.
    _in_flight: InFlightToken,
}

impl RequestCtx {
    /// Whether the current attempt has its (final) response header from the upstream.
    pub(crate) fn has_upstream_response(&self) -> bool {
        self.upstream_headers.is_some()
    }
}

/// Whether the client connection is TLS (the HTTPS listener).
fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// A Host header without its port (`example.com:8080` -> `example.com`, `[::1]:80` ->
/// `[::1]`): redirects go to the default https port.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The 308 to the same host, path and query over https (`ssl-redirect`).
pub(crate) fn redirect_response(req: &impl RequestView) -> Result<ResponseHeader> {
    let location = format!(
        "https://{}{}",
        host_without_port(req.host()),
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let mut resp = ResponseHeader::build(308, Some(3))?;
    resp.insert_header(http::header::LOCATION, location)?;
    resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
    Ok(resp)
}

/// The header of a short plain-text answer generated by weir itself.
pub(crate) fn plain_response(status: u16, body: &'static str) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    Ok(resp)
}

/// Writes a short plain-text answer generated by weir itself.
async fn respond_plain(session: &mut Session, status: u16, body: &'static str) -> Result<()> {
    let resp = plain_response(status, body)?;
    // A HEAD answer has the length of the body it does not carry (an HTTP/2 client resets a
    // stream whose HEAD answer has DATA).
    let head_request = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_request)
        .await?;
    if head_request {
        return Ok(());
    }
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await
}

/// What [`WeirProxy::admit`] decided about a request before any upstream is involved.
pub(crate) enum Admission {
    /// Send it upstream: `ctx.target` is set.
    Forward,
    /// Refused (already counted and logged): answer it and close the connection.
    Refuse(Rejection),
    /// Answer with a 308 to https.
    RedirectToHttps,
    /// Answer with this status and body.
    Answer(u16, &'static str),
}

/// Status and body for an error that ended the request before a response started.
pub(crate) fn error_answer(e: &Error) -> (u16, &'static str) {
    match e.etype() {
        ErrorType::HTTPStatus(503) => (503, "no endpoints available\n"),
        ErrorType::HTTPStatus(code) => (*code, "error\n"),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            (504, "upstream timed out\n")
        }
        _ => match e.esource() {
            ErrorSource::Upstream => (502, "upstream connection failed\n"),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    (0, "") // the client is gone: nothing to answer
                }
                _ => (400, "bad request\n"),
            },
            ErrorSource::Internal | ErrorSource::Unset => (500, "internal error\n"),
        },
    }
}

/// The shared phases of a request, independent of which HTTP implementation carries it
/// (Pingora's proxy, or the direct HTTP/1.1 path in [`crate::direct`]): both call these, so a
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
            _in_flight: self.in_flight.enter(),
        }
    }

    /// Checks the request, normalises its path and matches its route (first phase).
    pub(crate) fn admit(
        &self,
        req: &mut impl RequestView,
        raw_header: impl FnOnce() -> Option<Bytes>,
        tls: bool,
        ctx: &mut RequestCtx,
    ) -> Admission {
        crate::header_deadline::header_complete();
        if let Err(rejection) = check_request(req, raw_header, &self.limits) {
            return self.refused(rejection);
        }
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
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = path_and_query.parse().ok();
            match http::Uri::from_parts(parts) {
                Ok(uri) => req.set_uri(uri),
                Err(_) => return self.refused(Rejection::bad_request("malformed_path_escape")),
            }
        }
        let host = req.host();
        let table = self.routing.load();
        let target = table
            .router
            .lookup(host, req.uri().path())
            .map(|choice| Arc::clone(choice.choose(&mut rand::rng())));
        drop(table);
        ctx.trace =
            self.telemetry
                .start_request(req, target.as_ref().map(|t| t.route.as_str()), host);
        let Some(target) = target else {
            return Admission::Answer(404, "no route for this host and path\n");
        };
        if target.ssl_redirect && !tls {
            ctx.target = Some(target);
            return Admission::RedirectToHttps;
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
        ctx.target = Some(target);
        Admission::Forward
    }

    /// Counts and logs a refused request.
    fn refused(&self, rejection: Rejection) -> Admission {
        self.metrics
            .requests_rejected_total
            .with_label_values(&[rejection.reason])
            .inc();
        tracing::info!(
            reason = rejection.reason,
            status = rejection.status,
            "request refused"
        );
        Admission::Refuse(rejection)
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
        let mut pick = target.pool.pick(&request, &mut rng);
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
        Ok((target, addr))
    }

    /// The headers weir sets on the upstream request, each replacing any of the same name the
    /// client sent: `X-Forwarded-For`/`-Proto`/`-Host` and the trace context.
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
                .forwarded_for(peer, downstream.field(&X_FORWARDED_FOR));
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

    /// After a failed connect: reports it to the pool at once (a retry replaces the guard)
    /// and says whether the request may go to another endpoint. Nothing was sent.
    pub(crate) fn connect_failed(&self, e: &Error, replayable: bool, ctx: &mut RequestCtx) -> bool {
        self.feed_back(ctx, Outcome::Failure);
        self.count_upstream_error(ctx, e);
        ctx.stale_connection_retry = false;
        self.may_retry(replayable, false, ctx)
    }

    /// After an error while proxying: whether to try again. `stale`: the error came from a
    /// reused pooled connection that turned out closed, which says nothing about the endpoint
    /// (sent again over a fresh connection when the request is replayable).
    pub(crate) fn proxy_failed(
        &self,
        e: &Error,
        stale: bool,
        replayable: bool,
        ctx: &mut RequestCtx,
    ) -> bool {
        ctx.stale_connection_retry = stale;
        if e.esource() == &ErrorSource::Upstream && !stale {
            self.feed_back(ctx, Outcome::Failure);
            self.count_upstream_error(ctx, e);
        }
        ctx.upstream_headers.is_none()
            && if stale {
                replayable
            } else {
                self.may_retry(replayable, true, ctx)
            }
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
            (_, Some((_, 503, Some(retry_after)))) => Outcome::Overloaded { retry_after },
            (_, Some((_, status, _))) if status >= 500 => Outcome::Failure,
            (_, Some(_)) => Outcome::Success,
            (Some(e), None) if e.esource() == &ErrorSource::Upstream => Outcome::Failure,
            _ => Outcome::ClientCancelled,
        };
        self.feed_back(ctx, outcome);
        ctx.guard = None;
        ctx.permit = None;
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
        // The access log: one line per request (crate::access_log), off the request path
        // but for its formatting, which is skipped when the log filter turns it off.
        if self.access_log.enabled() {
            let error = e.map(|e| e as &dyn std::fmt::Display);
            self.access_log.write(&AccessLine {
                method: method.as_str(),
                host: req.host(),
                path: req.uri().path(),
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

    /// Whether the request may be sent again: `replayable` (idempotent, its body still at
    /// hand), attempts left on its route, and, when the failed attempt `reached_upstream`,
    /// room in the route's retry budget (which then counts it). A connect that failed sent
    /// nothing: its retry adds no load to any backend beyond the request itself, and when an
    /// endpoint dies every request picked for it fails this way at once, more of them than
    /// the budget's floor of 3 (a `502` for clients of a dead pod while its peers are fine).
    fn may_retry(&self, replayable: bool, reached_upstream: bool, ctx: &mut RequestCtx) -> bool {
        let Some(target) = &ctx.target else {
            return false;
        };
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
        if let Some(until) = target.pool.record(endpoint, outcome, now) {
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

/// The Pingora peer for one attempt at `addr` on `target`'s route: timeouts, TLS and
/// protocol from the route. `upgrade`: the request asks for a protocol upgrade (WebSocket).
pub(crate) fn peer_for(target: &RouteTarget, addr: SocketAddr, upgrade: bool) -> HttpPeer {
    // A SocketAddr, never a name: `HttpPeer::new` would resolve names with blocking DNS
    // and panic on failure; a SocketAddr converts without either.
    let (tls, sni) = match &target.upstream_tls {
        Some(t) => (true, t.server_name.clone()),
        None => (false, String::new()),
    };
    let mut peer = HttpPeer::new(addr, tls, sni);
    if let Some(t) = &target.upstream_tls {
        // Pingora skips verification when there is no SNI; ours is never empty.
        peer.options.verify_cert = t.verify;
        peer.options.verify_hostname = t.verify;
        // HTTP/2 when the upstream offers it (gRPC over TLS needs it), else HTTP/1.1.
        peer.options.alpn = pingora::protocols::ALPN::H2H1;
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    peer.options.connection_timeout = Some(target.connect_timeout);
    // An upgrade (WebSocket) may sit idle for long: its own timeout, not the read
    // timeout of a request waiting for its response.
    peer.options.read_timeout = Some(if upgrade {
        target.websocket_idle_timeout
    } else {
        target.read_timeout
    });
    peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
    if target.backend_protocol == BackendProtocol::H2c {
        // Prior-knowledge h2 over plaintext; Pingora's default of 1 stream per connection
        // would open a connection per concurrent request.
        peer.options.alpn = pingora::protocols::ALPN::H2;
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    peer
}

/// Whether Pingora could send the request again: idempotent, its body still in the retry
/// buffer.
fn replayable(session: &Session) -> bool {
    session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated()
}

/// Pingora's `ProxyHttp` phases, each a thin call into the shared phases above.
#[async_trait]
impl ProxyHttp for WeirProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.request_ctx()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let tls = is_tls(session);
        let raw_header = session.as_http1().map(|h1| h1.get_headers_raw_bytes());
        match self.admit(session.req_header_mut(), || raw_header, tls, ctx) {
            Admission::Forward => Ok(false),
            Admission::Refuse(rejection) => {
                // After a refusal, the framing of what follows on the connection is in doubt.
                session.set_keepalive(None);
                respond_plain(session, rejection.status, rejection.body()).await?;
                Ok(true)
            }
            Admission::RedirectToHttps => {
                let resp = redirect_response(session.req_header())?;
                session.write_response_header(Box::new(resp), true).await?;
                Ok(true)
            }
            Admission::Answer(status, body) => {
                respond_plain(session, status, body).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (target, addr) =
            self.pick_endpoint(session.req_header(), client_ip(session.client_addr()), ctx)?;
        Ok(Box::new(peer_for(&target, addr, session.is_upgrade_req())))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = self.connect_failed(&e, replayable(session), ctx);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Pingora marks errors on a reused pooled connection `ReusedOnly`: the connection
        // was stale, which says nothing about the endpoint.
        let stale = client_reused && matches!(e.retry, RetryType::ReusedOnly);
        let retry = self.proxy_failed(&e, stale, replayable(session), ctx);
        if retry {
            e.retry.decide_reuse(client_reused);
            if !stale {
                e.set_retry(true);
            }
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let retry_after = upstream.headers.get(http::header::RETRY_AFTER);
        self.note_response(
            upstream.status.as_u16(),
            retry_after.map(HeaderValue::as_bytes),
            ctx,
        );
        crate::h1::remove_connection_scoped_fields(upstream);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let set = self.forward_headers(
            session.req_header(),
            client_ip(session.client_addr()),
            is_tls(session),
            ctx,
        );
        for (name, value) in set {
            // Named by its lowercase bytes, as the direct path writes it: a `HeaderName`
            // would be title-cased into a new string first (~900 instructions a field,
            // callgrind), for an upstream that reads names case-insensitively anyway.
            let spelled = Bytes::copy_from_slice(name.as_str().as_bytes());
            upstream.insert_header(spelled, value)?;
        }
        // Pingora strips every hop-by-hop field, `te` among them, from the requests of weir's
        // HTTP/2 server (custom sessions to it) on their way to an HTTP/2 upstream. There
        // `te: trailers` is end-to-end, and gRPC requires it: it goes on.
        if upstream.version == http::Version::HTTP_2
            && !upstream.headers.contains_key(http::header::TE)
            && session
                .req_header()
                .headers
                .get(http::header::TE)
                .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            upstream.insert_header(http::header::TE, "trailers")?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, body) = error_answer(e);
        // Pingora does not reuse the client connection after a failed proxy attempt; say so
        // (`Connection: close`), or a keep-alive client sends its next request into a
        // connection that is about to close.
        session.set_keepalive(None);
        // Once the response has begun, an answer would go on as its body and end it: a cut
        // response would arrive complete, with the error text appended. Nothing is written
        // then; the session is dropped unfinished, which closes an HTTP/1 connection and
        // resets an HTTP/2 stream, so the client sees the response failed.
        let started = session.response_written().is_some();
        if code > 0 && !started {
            if let Err(write_error) = respond_plain(session, code, body).await {
                tracing::debug!(error = %write_error, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// weir's own answers (503 for an empty pool) are decisions, not proxy failures, and a
    /// client that hangs up is the client's business: keep both out of Pingora's error log
    /// (the access log has every such request, with its error).
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        quiet_error(error)
    }

    /// Drops an empty last piece of a request body. HTTP/2 clients may end a body with an
    /// empty DATA frame of its own; Pingora writes that piece to an HTTP/1.1 upstream as a
    /// zero-size chunk, which is the last-chunk marker, and then ends the body again. The
    /// second `0\r\n\r\n` stays on the upstream connection, which reads it as the next
    /// request: a 400 answered to whoever sends one next (`proxy/tests/http2.rs`).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if end_of_stream && body.as_ref().is_some_and(|b| b.is_empty()) {
            *body = None;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let code = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let bytes = (session.body_bytes_read(), session.body_bytes_sent());
        self.finish_request(session.req_header(), code, e, bytes, ctx);
    }
}

/// Errors that are weir's decisions (503 for an empty pool) or the client hanging up: not
/// for the error log.
pub(crate) fn quiet_error(error: &Error) -> bool {
    matches!(error.etype(), ErrorType::HTTPStatus(_))
        || (error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed
                    | ErrorType::H2Error
                    | ErrorType::ReadError
                    | ErrorType::WriteError
            ))
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
        HashKey::Query(name) => req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_bytes())
        }),
        HashKey::Cookie(name) => req
            .field_values(&http::header::COOKIE)
            .filter_map(visible_ascii)
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_bytes()),
    };
    if let Some(bytes) = found {
        return key_hash(bytes);
    }
    match peer {
        Some(ip) => {
            let client = trusted_proxies.client_ip(ip, req.field(&X_FORWARDED_FOR));
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
        use crate::h1::{classify, Classified, ClientRequest, HeadFields};
        let raw: &'static [u8] = b"GET /cart?u=7&x=1 HTTP/1.1\r\nHost: shop\r\n\
            X-User: ann\r\nCookie: a=1; sid=s-42\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n";
        let mut fields = HeadFields::default();
        let Classified::Simple(view) = classify(raw, &mut fields) else {
            panic!("simple");
        };
        let direct = ClientRequest::parse(Bytes::from_static(raw), view, &fields).expect("parses");
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

    #[test]
    fn errors_map_to_short_answers() {
        let e = Error::explain(ErrorType::HTTPStatus(503), "x");
        assert_eq!(error_answer(&e).0, 503);
        let mut e = Error::new(ErrorType::ConnectRefused);
        e.esource = ErrorSource::Upstream;
        assert_eq!(error_answer(&e).0, 502);
        let mut e = Error::new(ErrorType::ConnectTimedout);
        e.esource = ErrorSource::Upstream;
        assert_eq!(error_answer(&e).0, 504);
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.esource = ErrorSource::Downstream;
        assert_eq!(error_answer(&e).0, 0);
    }
}
