//! The direct HTTP/1.1 path: plain HTTP/1.x requests with no body or a small one,
//! served in one loop per client connection on weir's own HTTP/1.1 wire format
//! ([`crate::http::h1`]), instead of through pingora-proxy.
//!
//! Why: pingora-proxy builds and boxes a ~90 KiB future for every request and returns the
//! upstream connection to its pool (starting an idle-watcher task) after every response, and
//! pingora-core's codec keeps every header twice and allocates a 64 KiB buffer per
//! response (docs/benchmarks.md). Here the request future is small, headers are relayed from
//! the bytes received, and idle upstream connections wait in a per-thread pool that checks
//! them when they are taken ([`crate::engine::own::idle_upstreams`]). Its timeouts are tokio's timers of
//! the thread's own runtime, not Pingora's `fast_timeout`, whose shared timer map cost
//! ~500 more instructions per request (two reads wait on a timer; docs/benchmarks.md).
//!
//! What it serves: on both listeners (plaintext and TLS), requests that [`DirectPath::takes`] accepts —
//! HTTP/1.0 or 1.1 in origin form, no body or a `Content-Length` body of at most 64 KiB that
//! arrived with the head, no upgrade, no `Expect`, no hop-by-hop header other than
//! `Connection: keep-alive|close`, and a route whose backends speak plain HTTP/1.1.
//! Everything else goes to Pingora's proxy with the bytes read so far (Pingora reads them
//! first), so one implementation handles streamed bodies, upgrades, and TLS or h2 upstreams.
//!
//! It also serves HTTP/2 requests of weir's own HTTP/2 server ([`crate::engine::own::h2_server`]) without
//! a body or with one of a declared length up to 64 KiB ([`DirectPath::takes_weir_h2`]):
//! same phases, same upstream exchange; only the client side differs ([`Downstream`]: bytes
//! on an HTTP/1 connection, frames of an HTTP/2 stream).
//!
//! The request's phases — checks, routing, picking, `X-Forwarded-*`, feedback, retries,
//! metrics, access log — are [`WeirProxy`]'s, shared with the Pingora path.
//!
//! Must not: take a request it cannot finish the way the Pingora path would, or parse bytes
//! itself (that is [`crate::http::h1`]'s, which is pure and tested on its own).

use crate::engine::own::h2_server::{self, H2Stream};
use crate::engine::own::idle_read::read_idle;
use crate::engine::own::idle_upstreams;
use crate::engine::own::read_deadline::{self, Elapsed, ReadDeadline};
use crate::http::fields::ResponseField;
use crate::http::forwarded::{client_ip, UpstreamHeaders};
use crate::http::h1::{
    self, classify, BodyFraming, ChunkedDecoder, Classified, ClientRequest, ClientSide,
    ClientVersion, HeadFields, HeadView, RequestFraming, LAST_CHUNK, MAX_HEAD, MAX_RESPONSE_HEAD,
};
use crate::http::h2_request::H2Request;
use crate::http::hardening::Rejection;
use crate::http::path::normalize;
use crate::http::request_view::RequestView;
use crate::request::answers::{
    error_answer, http1_answer, http2_answer_head, plain_response, quiet_error,
};
use crate::request::phases::{Admission, RequestCtx, WeirProxy};
use crate::request::retry;
use crate::request::timeouts::{CLIENT_IDLE_TIMEOUT, CLOSE_TIMEOUT};
use crate::routes::routing::LiveRouting;
use bytes::BytesMut;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Initial size of a connection's read buffer.
const HEAD_BUFFER: usize = 4096;
/// Room made for each read of an upstream response.
const UPSTREAM_READ_BUFFER: usize = 8192;

/// The direct path of one proxy: its phases and the routing it classifies by. Its upstream
/// connections are plain TCP streams ([`connect_upstream`]); idle ones wait in
/// [`crate::engine::own::idle_upstreams`].
pub struct DirectPath {
    proxy: WeirProxy,
    routing: Arc<LiveRouting>,
}

/// Whether `bytes` hold an empty line (`\n\n` or `\n\r\n`), the end of a head.
fn ends_a_head(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(at, b)| *b == b'\n' && matches!(&bytes[at + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// What reading the next request head found.
pub(crate) enum NextHead {
    /// A complete head this path may take (its host and target in the buffer), whatever
    /// its route says.
    Simple(HeadView),
    /// A well-framed head this path does not take (a large or chunked body, an upgrade,
    /// `Expect`, a huge head): for Pingora's proxy.
    Other(RequestFraming),
    /// A head weir refuses (answered, then the connection is closed).
    Malformed(Rejection),
    /// The client closed, idled out, or the server is shutting down, or a head was cut
    /// short by any of those.
    Closed,
    /// The first head was not complete by its deadline (`--request-header-timeout`).
    HeaderTimeout,
    /// No byte of a next request came within the `park_after` asked for: the connection
    /// is idle, and its buffers are empty.
    Idle,
}

impl DirectPath {
    pub fn new(proxy: WeirProxy, routing: Arc<LiveRouting>) -> Self {
        DirectPath { proxy, routing }
    }

    /// Reads into `buf` until it holds a complete request head, whose fields it notes in
    /// `fields`. Waits at most [`CLIENT_IDLE_TIMEOUT`] for each read (on the connection's
    /// `deadline`), and not past `head_by` (the first head's deadline) if given; stops
    /// waiting for a new request at shutdown. With `park_after`, waiting for the first byte
    /// of a request ends after that time instead, with [`NextHead::Idle`].
    pub(crate) async fn read_head(
        stream: &mut Stream,
        buf: &mut BytesMut,
        fields: &mut HeadFields,
        shutdown: &ShutdownWatch,
        deadline: &mut ReadDeadline<'_>,
        head_by: Option<tokio::time::Instant>,
        park_after: Option<Duration>,
    ) -> NextHead {
        // Out of time: the first-head deadline if it has come, else the idle timeout.
        let timed_out = || match read_deadline::reached(head_by) {
            true => NextHead::HeaderTimeout,
            false => NextHead::Closed,
        };
        // How far `buf` was searched for the empty line that ends a head: a head is parsed
        // only once that line is there (or the head is at its size limit), so one sent a
        // byte at a time costs one parse, not one per read.
        let mut searched = 0usize;
        let mut head_ended = false;
        loop {
            if buf.is_empty() {
                // Waiting for a request: an idle connection holds no buffer until bytes
                // arrive (10,000 idle keep-alive connections are a normal load).
                fields.release();
                let mut shutdown = shutdown.clone();
                if *shutdown.borrow() {
                    return NextHead::Closed;
                }
                let idle_for = park_after.unwrap_or(CLIENT_IDLE_TIMEOUT);
                let read = tokio::select! {
                    read = deadline.within_until(idle_for, head_by, read_idle(stream, buf, HEAD_BUFFER)) => read,
                    _ = shutdown.changed() => return NextHead::Closed,
                };
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    Err(Elapsed) if park_after.is_some() && !read_deadline::reached(head_by) => {
                        return NextHead::Idle
                    }
                    Err(Elapsed) => return timed_out(),
                    _ => return NextHead::Closed,
                }
            }
            if !head_ended {
                head_ended =
                    ends_a_head(&buf[searched.saturating_sub(2)..]) || buf.len() >= MAX_HEAD;
                searched = buf.len();
            }
            if head_ended {
                match classify(buf, fields) {
                    Classified::Simple(view) => return NextHead::Simple(view),
                    Classified::Other(framing) => return NextHead::Other(framing),
                    Classified::Malformed(rejection) => return NextHead::Malformed(rejection),
                    Classified::Partial | Classified::BodyPending => {}
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(HEAD_BUFFER);
            }
            // A head under way is read to its end even at shutdown.
            match deadline
                .within_until(CLIENT_IDLE_TIMEOUT, head_by, stream.read_buf(buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                // Timed out or closed inside a head (as nginx, no answer).
                Err(Elapsed) => return timed_out(),
                _ => return NextHead::Closed,
            }
        }
    }

    /// Whether this path serves the simple request `view` found in `head`: its route's
    /// backends must speak plain HTTP/1.1. False sends it to Pingora.
    pub(crate) fn takes(&self, head: &[u8], view: &HeadView) -> bool {
        let table = self.routing.load();
        if table.plain_http1_only {
            return true;
        }
        // Some route needs TLS or h2 upstream: look this one up (as `admit` will, on the
        // normal form of the path).
        let (Some(host), Some(target)) =
            (head.get(view.host.clone()), head.get(view.target.clone()))
        else {
            return false;
        };
        let host = std::str::from_utf8(host).unwrap_or("");
        let Ok(target) = std::str::from_utf8(target) else {
            return false;
        };
        self.route_is_plain_http1(host, target)
    }

    /// Whether the route of `host` and `target` (as received) goes to plain HTTP/1.1
    /// backends; true too when there is no such route (`admit` answers it either way).
    fn route_is_plain_http1(&self, host: &str, target: &str) -> bool {
        let table = self.routing.load();
        if table.plain_http1_only {
            return true;
        }
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        // Encoded slashes are kept here; where they are refused, `admit` refuses them on
        // either path.
        let path: Cow<'_, str> = match normalize(path, true) {
            Ok(path) => path,
            Err(_) => return true, // refused by `admit` with a 400
        };
        match table.router.lookup_path(host, &path) {
            Ok(Some(choice)) => choice.plain_http1(),
            Ok(None) => true, // answered by `admit` with a 404
            // The request's fields decide among routes: Pingora's proxy serves it, which
            // serves every route.
            Err(_) => false,
        }
    }

    /// Whether this path serves a request of weir's own HTTP/2 server: not a CONNECT, to a
    /// route whose backends speak plain HTTP/1.1, with no body or one that declares its
    /// length, of at most [`h1::MAX_BUFFERED_BODY`] bytes, without `expect` (the body is read
    /// whole first, as an HTTP/1 request's is, so a retry can resend it). False sends it to
    /// Pingora.
    pub(crate) fn takes_weir_h2(&self, req: &H2Request, end_stream: bool) -> bool {
        let body_ok = match req.head().content_length {
            None => end_stream,
            Some(len) => {
                len <= h1::MAX_BUFFERED_BODY as u64 && req.field(&http::header::EXPECT).is_none()
            }
        };
        if !body_ok || req.method() == http::Method::CONNECT {
            return false;
        }
        let Ok(target) = std::str::from_utf8(req.raw_path()) else {
            return false;
        };
        self.route_is_plain_http1(req.host(), target)
    }

    /// Serves one request of weir's own HTTP/2 server taken by [`Self::takes_weir_h2`]:
    /// the same phases as an HTTP/1 request, the response queued as HTTP/2 frames on the
    /// stream. `client_ip` and `tls`: the connection's.
    pub(crate) async fn serve_weir_h2(
        &self,
        stream: H2Stream,
        mut req: H2Request,
        client_ip: Option<IpAddr>,
        tls: bool,
    ) {
        let mut ctx = self.proxy.request_ctx();
        let admission = self.proxy.admit(&mut req, client_ip, tls, &mut ctx).await;
        if req.head().content_length.is_some_and(|len| len > 0) {
            // The body, whole (the connection holds the client to its declared length);
            // trailers are dropped, as an HTTP/1.1 copy with a length cannot carry them.
            // Admitted first, so a request that ends here is logged and counted on its route.
            let mut body = BytesMut::new();
            let read = tokio::time::timeout(CLIENT_IDLE_TIMEOUT, async {
                while let Some((data, _)) = stream.data().await? {
                    body.extend_from_slice(&data);
                }
                Ok::<(), weir_http2::frame::ErrorCode>(())
            });
            let failed = match read.await {
                Ok(Ok(())) => None,
                // Reset by the client, or by the connection for a body that broke its
                // declared length: nobody to answer.
                Ok(Err(code)) => Some((
                    0,
                    Error::create(
                        ErrorType::ConnectionClosed,
                        ErrorSource::Downstream,
                        Some(format!("stream reset during the request body: {code}").into()),
                        None,
                    ),
                )),
                Err(_) => {
                    stream.answer(408, "request timeout\n");
                    Some((
                        408,
                        Error::create(
                            ErrorType::ReadTimedout,
                            ErrorSource::Downstream,
                            Some("request body not complete in time".into()),
                            None,
                        ),
                    ))
                }
            };
            if let Some((status, error)) = failed {
                let received = body.len();
                self.proxy
                    .finish_request(&req, status, Some(&error), (received, 0), &mut ctx);
                return;
            }
            req.set_body(body.freeze());
        }
        let mut client = WeirH2Client {
            head_request: req.method() == http::Method::HEAD,
            stream,
            block: None,
            data: BytesMut::new(),
            end: false,
            ended: false,
            sent: Sent::default(),
        };
        let request = Served {
            request: &req,
            client_ip,
            tls,
        };
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut deadline = ReadDeadline::new(timer);
        let _ = self
            .respond(&mut client, admission, &request, &mut deadline, &mut ctx)
            .await;
        // An unfinished response is reset when the stream drops.
    }

    /// Carries an admitted request to its end on `client`, for both protocols: forwards it or
    /// answers it as `admission` says, logs a failure, then finishes it (feedback, metrics,
    /// access log). Upstream reads wait on `deadline`. `Err` when the response did not
    /// complete.
    async fn respond(
        &self,
        client: &mut impl Downstream,
        admission: Admission,
        request: &Served<'_, impl DirectRequest>,
        deadline: &mut ReadDeadline<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let req = request.request;
        let outcome = match admission {
            Admission::Forward => {
                // The body came whole with the request: its mirror copy can go.
                self.proxy.mirror_body(ctx, req.body(), true);
                self.forward(client, request, deadline, ctx).await
            }
            Admission::Refuse(rejection) => {
                // After a refusal the framing of what follows is in doubt.
                client.close_after();
                client.answer(rejection.status, rejection.body()).await
            }
            Admission::Head(resp) => client.answer_with(&resp, "").await,
            Admission::Answer(status, body) => client.answer(status, body).await,
        };
        if let Err(e) = &outcome {
            if !quiet_error(e) {
                tracing::error!(error = %e, "request failed");
            }
        }
        let body_in = req.body_len();
        let sent = client.sent();
        let sent = (sent.status, sent.body_bytes);
        self.proxy.finish_request(
            req,
            sent.0,
            outcome.as_ref().err().map(|e| e.as_ref()),
            (body_in, sent.1),
            ctx,
        );
        outcome
    }

    /// Serves one request, whose head and body are at the start of `buf` where `view` says
    /// (taken by [`Self::takes`]). Returns the connection and the bytes already read of what
    /// follows, or `None` when the connection cannot be reused.
    pub(crate) async fn serve(
        &self,
        stream: Stream,
        mut buf: BytesMut,
        view: HeadView,
        fields: &HeadFields,
        shutdown: &ShutdownWatch,
        deadline: &mut ReadDeadline<'_>,
    ) -> Option<(Stream, BytesMut)> {
        let received = buf.split_to(view.head_len + view.body_len).freeze();
        let mut client = Client {
            stream,
            keep_alive: true,
            http10: false,
            head_request: false,
            out: BytesMut::new(),
            chunked: false,
            sent: Sent::default(),
        };
        let mut request = match ClientRequest::parse(received, view, fields) {
            Ok(parsed) => parsed,
            Err(e) => {
                // The head parsed when classified; only values the header types refuse
                // end here: 400, close (as on Pingora's path).
                tracing::debug!(error = %e, "invalid request");
                client.keep_alive = false;
                let _ = client.answer(400, "bad request\n").await;
                return None;
            }
        };
        client.keep_alive = request.wants_keep_alive() && !*shutdown.borrow();
        client.http10 = request.is_http10();
        client.head_request = request.method() == http::Method::HEAD;
        let peer = client
            .stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        let client_ip = client_ip(peer.as_ref());
        let tls = client.stream.get_ssl_digest().is_some();
        let mut ctx = self.proxy.request_ctx();
        // No raw head for the checks: they need it only to see a `Content-Length` Pingora's
        // parser dropped beside `Transfer-Encoding`, and this request's fields are the ones
        // received (`classify` takes no `Transfer-Encoding` either).
        let admission = self
            .proxy
            .admit(&mut request, client_ip, tls, &mut ctx)
            .await;
        let served = Served {
            request: &request,
            client_ip,
            tls,
        };
        let outcome = self
            .respond(&mut client, admission, &served, deadline, &mut ctx)
            .await;
        drop(ctx);
        let mut stream = client.stream;
        if outcome.is_err() || !client.keep_alive {
            // The framing of what follows is in doubt, the client is gone, or either side
            // asked to close. Bounded: the shutdown flushes, and a client that stopped
            // reading would hold this task forever.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
            return None;
        }
        Some((stream, buf))
    }

    /// Sends the request upstream (again, on a retryable failure) and relays the response.
    async fn forward(
        &self,
        client: &mut impl Downstream,
        request: &Served<'_, impl DirectRequest>,
        deadline: &mut ReadDeadline<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The body came whole with the request: always at hand.
        loop {
            let picked = self
                .proxy
                .pick_endpoint(request.request, request.client_ip, ctx);
            let (target, addr) = match picked {
                Ok(picked) => picked,
                Err(e) => return client.answer_error(e).await,
            };
            // An idle connection to the picked endpoint from this thread's pool, else a new one.
            let (mut upstream, reused) = match idle_upstreams::take(addr) {
                Some(stream) => (stream, true),
                // Boxed: the connect future is most of this one's size, and with the idle pool
                // most requests never build it.
                None => {
                    match boxed_in_place(|| connect_upstream(addr, target.connect_timeout)).await {
                        Ok(stream) => (stream, false),
                        Err(mut e) => {
                            e.esource = ErrorSource::Upstream;
                            if self.proxy.connect_failed(&e, true, ctx) {
                                continue;
                            }
                            return client.answer_error(e).await;
                        }
                    }
                }
            };
            let attempt = Attempt {
                upstream: &mut upstream,
                status_check: target.replaces_statuses(),
                read_timeout: target.read_timeout,
                write_timeout: target.write_timeout,
                deadline: &mut *deadline,
            };
            match self.exchange(request, attempt, client, ctx).await {
                Ok(reusable) => {
                    if reusable {
                        idle_upstreams::put(addr, upstream);
                    }
                    return Ok(());
                }
                Err(Failure::Downstream(e)) => return Err(e),
                // The upstream connection goes with its unread response.
                Err(Failure::Replaced) => continue,
                Err(Failure::Upstream(mut e)) => {
                    e.esource = ErrorSource::Upstream;
                    if client.sent().status != 0 {
                        // Part of the response is out: nothing to retry or answer.
                        self.proxy.proxy_failed(&e, false, false, ctx);
                        return Err(e);
                    }
                    let stale = retry::is_stale(reused, ctx.has_upstream_response(), &e);
                    if self.proxy.proxy_failed(&e, stale, true, ctx) {
                        continue;
                    }
                    return client.answer_error(e).await;
                }
            }
        }
    }

    /// One attempt on one upstream connection: request out, response back. `Ok(true)` when
    /// the upstream connection is clean and may be reused.
    async fn exchange(
        &self,
        request: &Served<'_, impl DirectRequest>,
        attempt: Attempt<'_, '_>,
        client: &mut impl Downstream,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<bool, Failure> {
        let req = request.request;
        let Attempt {
            upstream,
            status_check,
            read_timeout,
            write_timeout,
            deadline,
        } = attempt;
        let set = self
            .proxy
            .forward_headers(req, request.client_ip, request.tls, ctx);
        // Room for the response from the start: growing it after the request is written
        // would copy the request for nothing.
        let mut buf = BytesMut::with_capacity(UPSTREAM_READ_BUFFER);
        req.write_upstream(&set, &mut buf);
        write_all(upstream, &buf, write_timeout)
            .await
            .map_err(Failure::Upstream)?;
        // The same buffer now takes the response.
        buf.clear();
        buf.reserve(UPSTREAM_READ_BUFFER);
        let added = self.proxy.response_fields(request.tls, ctx);
        // The route replaces some statuses (retried, or answered by its error backend): each
        // final status is looked at before its head is staged for the client.
        let mut status_unseen = status_check;
        let head = loop {
            if status_unseen {
                if let Some(status) = h1::response_status(&buf).filter(|s| *s >= 200) {
                    status_unseen = false;
                    if self.proxy.replaces_response(status, true, ctx) {
                        return Err(Failure::Replaced);
                    }
                }
            }
            // Nothing read yet: no head to look for (the first read is due either way).
            let parsed = match buf.is_empty() {
                true => None,
                false => client.stage_head(&buf, &added).map_err(|why| {
                    Failure::Upstream(Error::explain(ErrorType::InvalidHTTPHeader, why))
                })?,
            };
            match parsed {
                Some(head) if (100..200).contains(&head.status) => {
                    // 100 Continue and friends: relayed to an HTTP/1.1 client, then on.
                    let _ = buf.split_to(head.head_len);
                    status_unseen = status_check;
                    client.flush().await.map_err(Failure::Downstream)?;
                }
                Some(head) => break head,
                None if buf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(Failure::Upstream(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "response head too long",
                    )))
                }
                None => {
                    if read_upstream(upstream, &mut buf, read_timeout, deadline).await? == 0 {
                        return Err(Failure::Upstream(Error::explain(
                            ErrorType::ConnectionClosed,
                            "upstream closed before a response",
                        )));
                    }
                }
            }
        };
        let retry_after = head.retry_after.clone().and_then(|r| buf.get(r));
        self.proxy.note_response(head.status, retry_after, ctx);
        client.sent().status = head.status;
        let _ = buf.split_to(head.head_len);
        let clean_end = match head.framing {
            BodyFraming::Empty => {
                client.stage_end();
                client.flush().await.map_err(Failure::Downstream)?;
                buf.is_empty()
            }
            BodyFraming::Length(length) => {
                let mut remaining = length;
                loop {
                    let take = remaining.min(buf.len() as u64) as usize;
                    client.stage_body(&buf[..take]);
                    let _ = buf.split_to(take);
                    remaining -= take as u64;
                    if remaining == 0 {
                        client.stage_end();
                    }
                    client.flush().await.map_err(Failure::Downstream)?;
                    if remaining == 0 {
                        break buf.is_empty();
                    }
                    buf.clear();
                    if read_upstream(upstream, &mut buf, read_timeout, deadline).await? == 0 {
                        return Err(Failure::Upstream(body_cut_short()));
                    }
                }
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                loop {
                    let consumed = decoder
                        .decode(&buf, |data| client.stage_body(data))
                        .map_err(|why| {
                            Failure::Upstream(Error::explain(ErrorType::InvalidHTTPHeader, why))
                        })?;
                    let _ = buf.split_to(consumed);
                    if decoder.is_done() {
                        client.stage_end();
                    }
                    client.flush().await.map_err(Failure::Downstream)?;
                    if decoder.is_done() {
                        break buf.is_empty();
                    }
                    buf.clear();
                    if read_upstream(upstream, &mut buf, read_timeout, deadline).await? == 0 {
                        return Err(Failure::Upstream(body_cut_short()));
                    }
                }
            }
            BodyFraming::UntilClose => loop {
                client.stage_body(&buf);
                buf.clear();
                let closed = read_upstream(upstream, &mut buf, read_timeout, deadline).await? == 0;
                if closed {
                    client.stage_end();
                }
                client.flush().await.map_err(Failure::Downstream)?;
                if closed {
                    break false;
                }
            },
        };
        Ok(clean_end && head.upstream_keep_alive)
    }
}

/// A request the direct path serves: read by the phases, and written upstream as HTTP/1.1.
trait DirectRequest: RequestView {
    /// Writes the upstream copy of the request, with the fields in `set` replacing any of
    /// the same name.
    fn write_upstream(&self, set: &UpstreamHeaders, out: &mut BytesMut);
    /// Bytes of body that came with the request.
    fn body_len(&self) -> usize;
    /// The body that came with the request.
    fn body(&self) -> &[u8];
}

/// An HTTP/1 client's request: relayed from the bytes it sent (fields in their order and
/// spelling).
impl DirectRequest for ClientRequest<'_> {
    fn write_upstream(&self, set: &UpstreamHeaders, out: &mut BytesMut) {
        ClientRequest::write_upstream(self, set, out);
    }

    fn body_len(&self) -> usize {
        ClientRequest::body(self).len()
    }

    fn body(&self) -> &[u8] {
        ClientRequest::body(self)
    }
}

/// A request of weir's own HTTP/2 server ([`DirectPath::takes_weir_h2`]): its fields,
/// then its body, read whole.
impl DirectRequest for H2Request {
    fn write_upstream(&self, set: &UpstreamHeaders, out: &mut BytesMut) {
        h1::write_upstream_of_h2(self, set, out);
        out.extend_from_slice(H2Request::body(self));
    }

    fn body_len(&self) -> usize {
        H2Request::body(self).len()
    }

    fn body(&self) -> &[u8] {
        H2Request::body(self)
    }
}

/// The request being served, as its upstream attempts need it.
struct Served<'a, R> {
    request: &'a R,
    /// Where it came from.
    client_ip: Option<IpAddr>,
    tls: bool,
}

/// One upstream attempt: its connection, and how long each read of the response may wait
/// (on the connection's `deadline`).
struct Attempt<'a, 'd> {
    upstream: &'a mut TcpStream,
    /// The route replaces some response statuses ([`RouteTarget::replaces_statuses`]).
    status_check: bool,
    read_timeout: Duration,
    /// `proxy-send-timeout`: the request's write to the upstream.
    write_timeout: Option<Duration>,
    deadline: &'a mut ReadDeadline<'d>,
}

/// What a request's client was sent, for the access log and metrics.
#[derive(Default)]
struct Sent {
    /// The status of the response under way (0 until its head is sent).
    status: u16,
    /// Body bytes sent (without chunk framing).
    body_bytes: usize,
}

/// The client side of one request on the direct path: how a response is written back over
/// the client's protocol. The upstream exchange stages a head and body pieces, then flushes;
/// each protocol decides how they go out (HTTP/1.1 bytes in one write, HTTP/2 frames).
trait Downstream {
    /// Parses the upstream's response head at the start of `buf` (`Ok(None)` while it is
    /// incomplete) and stages the client's copy of it, with the fields weir `added`.
    fn stage_head(
        &mut self,
        buf: &[u8],
        added: &[ResponseField],
    ) -> std::result::Result<Option<h1::ResponseHead>, &'static str>;
    /// Stages a piece of the response body.
    fn stage_body(&mut self, data: &[u8]);
    /// Marks the end of the response body.
    fn stage_end(&mut self);
    /// Sends what is staged, waiting at most [`CLIENT_IDLE_TIMEOUT`] for a client that does
    /// not read.
    async fn flush(&mut self) -> Result<()>;
    /// Writes a response of weir's own: `resp` and `body`.
    async fn answer_with(&mut self, resp: &ResponseHeader, body: &str) -> Result<()>;
    fn sent(&mut self) -> &mut Sent;
    /// The client connection is closed after this request.
    fn close_after(&mut self);

    /// Writes one of weir's short plain-text answers.
    async fn answer(&mut self, status: u16, body: &'static str) -> Result<()> {
        let resp = plain_response(status, body)?;
        self.answer_with(&resp, body).await
    }

    /// Answers an error that ended the request before a response started (502/503/504, as
    /// the Pingora path does) and closes the connection after.
    async fn answer_error(&mut self, e: Box<Error>) -> Result<()> {
        let (code, body) = error_answer(&e);
        self.close_after();
        if code > 0 {
            if let Err(write_error) = self.answer(code, body).await {
                tracing::debug!(error = %write_error, "could not send error response");
            }
        }
        Err(e)
    }
}

/// An HTTP/1 client: the connection, and the response bytes staged for it.
struct Client {
    stream: Stream,
    /// The connection stays open after this request.
    keep_alive: bool,
    http10: bool,
    /// The request is a `HEAD`: no response body.
    head_request: bool,
    /// Staged response bytes, written by `flush`.
    out: BytesMut,
    /// The body goes out chunked.
    chunked: bool,
    sent: Sent,
}

impl Client {
    /// Writes (and flushes) bytes of the response, waiting at most
    /// [`CLIENT_IDLE_TIMEOUT`] for a client that does not read.
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        write_all(&mut self.stream, bytes, Some(CLIENT_IDLE_TIMEOUT)).await
    }
}

impl Downstream for Client {
    fn stage_head(
        &mut self,
        buf: &[u8],
        added: &[ResponseField],
    ) -> std::result::Result<Option<h1::ResponseHead>, &'static str> {
        let side = ClientSide {
            version: if self.http10 {
                ClientVersion::Http10
            } else {
                ClientVersion::Http11
            },
            keep_alive: self.keep_alive,
            head_request: self.head_request,
        };
        let head = h1::response_head(
            buf,
            side,
            get_cached_date().as_bytes(),
            added,
            &mut self.out,
        )?;
        if let Some(head) = head.as_ref().filter(|h| !(100..200).contains(&h.status)) {
            self.keep_alive = head.client_keep_alive;
            self.chunked = head.chunked_to_client;
        }
        Ok(head)
    }

    fn stage_body(&mut self, data: &[u8]) {
        self.sent.body_bytes += data.len();
        h1::put_body(&mut self.out, data, self.chunked);
    }

    fn stage_end(&mut self) {
        if self.chunked {
            self.out.extend_from_slice(LAST_CHUNK);
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = write_all(&mut self.stream, &self.out, Some(CLIENT_IDLE_TIMEOUT)).await;
        self.out.clear();
        written
    }

    fn sent(&mut self) -> &mut Sent {
        &mut self.sent
    }

    fn close_after(&mut self) {
        self.keep_alive = false;
    }

    async fn answer_with(&mut self, resp: &ResponseHeader, body: &str) -> Result<()> {
        let mut out = BytesMut::new();
        http1_answer(resp, body, self.head_request, self.keep_alive, &mut out);
        self.sent.status = resp.status.as_u16();
        self.sent.body_bytes = if self.head_request { 0 } else { body.len() };
        self.write(&out).await
    }
}

/// A client of weir's own HTTP/2 server: one stream of a connection that
/// [`crate::engine::own::h2_server`] drives. The response head goes out with the first body bytes (or
/// alone, ending the stream, when there are none).
struct WeirH2Client {
    stream: H2Stream,
    /// The request is a `HEAD`: no response body.
    head_request: bool,
    /// The response head's header block, staged.
    block: Option<BytesMut>,
    data: BytesMut,
    /// The body is complete: the next flush ends the stream.
    end: bool,
    /// The stream was ended.
    ended: bool,
    sent: Sent,
}

/// The client reset the stream, or its connection is gone.
fn stream_closed() -> Box<Error> {
    let mut e = Error::new_down(ErrorType::WriteError);
    e.set_context("HTTP/2 stream closed by the client");
    e
}

impl WeirH2Client {
    /// Waits (at most [`CLIENT_IDLE_TIMEOUT`]) until the stream's queued response is
    /// below [`h2_server::STREAM_HIGH_WATER`], or, at its end, all in the output.
    async fn wait_writable(&self) -> Result<()> {
        let limit = if self.ended {
            0
        } else {
            h2_server::STREAM_HIGH_WATER
        };
        write_within(CLIENT_IDLE_TIMEOUT, async {
            self.stream
                .writable(limit)
                .await
                .map_err(|_| stream_closed())
        })
        .await
    }
}

impl Downstream for WeirH2Client {
    fn stage_head(
        &mut self,
        buf: &[u8],
        added: &[ResponseField],
    ) -> std::result::Result<Option<h1::ResponseHead>, &'static str> {
        let side = ClientSide {
            version: ClientVersion::Http2,
            keep_alive: true,
            head_request: self.head_request,
        };
        let mut out = h1::HpackResponseHead::default();
        let head = h1::response_head(buf, side, get_cached_date().as_bytes(), added, &mut out)?;
        if out.done {
            self.block = Some(out.block);
        }
        Ok(head)
    }

    fn stage_body(&mut self, data: &[u8]) {
        self.sent.body_bytes += data.len();
        self.data.extend_from_slice(data);
    }

    fn stage_end(&mut self) {
        self.end = true;
    }

    async fn flush(&mut self) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        if let Some(block) = self.block.take() {
            let end = self.end && self.data.is_empty();
            self.stream
                .send_headers(end, |_, out| out.extend_from_slice(&block))
                .map_err(|_| stream_closed())?;
            if end {
                self.ended = true;
                return self.wait_writable().await;
            }
        }
        if self.data.is_empty() && !self.end {
            return Ok(());
        }
        let data = self.data.split().freeze();
        self.stream
            .send_data(data, self.end)
            .map_err(|_| stream_closed())?;
        self.ended = self.end;
        self.wait_writable().await
    }

    fn sent(&mut self) -> &mut Sent {
        &mut self.sent
    }

    /// The stream ends with its response; the connection carries on.
    fn close_after(&mut self) {}

    async fn answer_with(&mut self, resp: &ResponseHeader, body: &str) -> Result<()> {
        let body = if self.head_request { "" } else { body };
        self.sent.status = resp.status.as_u16();
        self.sent.body_bytes = body.len();
        self.ended = true;
        self.stream
            .send_headers(body.is_empty(), |e, out| http2_answer_head(resp, e, out))
            .map_err(|_| stream_closed())?;
        if !body.is_empty() {
            let body = bytes::Bytes::copy_from_slice(body.as_bytes());
            self.stream
                .send_data(body, true)
                .map_err(|_| stream_closed())?;
        }
        self.wait_writable().await
    }
}

/// Which side failed an exchange.
enum Failure {
    Upstream(Box<Error>),
    Downstream(Box<Error>),
    /// The response's status is one the route replaces: it was discarded, unsent, and the
    /// request goes on to another endpoint or the error backend
    /// ([`WeirProxy::replaces_response`]).
    Replaced,
}

fn body_cut_short() -> Box<Error> {
    Error::explain(
        ErrorType::ConnectionClosed,
        "upstream closed before the end of the body",
    )
}

/// A new connection to the plain HTTP/1.1 upstream `addr`, as Pingora's connector makes one
/// for such a peer (within `timeout`, `TCP_NODELAY` set), but a bare tokio stream: the direct
/// path reads and writes it without Pingora's buffering and timing layers. Errors have the
/// types Pingora's connector gives them.
async fn connect_upstream(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let etype = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                _ => ErrorType::ConnectError,
            };
            return Err(Error::because(etype, format!("connecting to {addr}"), e));
        }
        Err(_) => {
            return Error::e_explain(
                ErrorType::ConnectTimedout,
                format!("connecting to {addr} timed out"),
            )
        }
    };
    stream
        .set_nodelay(true)
        .or_err(ErrorType::SocketError, "setting TCP_NODELAY")?;
    Ok(stream)
}

/// Writes all of `bytes` and flushes (Pingora's client streams buffer writes), waiting at
/// most `timeout` when one is given. Like [`write_within`], the timer is armed only if the
/// write cannot finish at once; written out here because the extra future layer cost ~200
/// instructions on every request (callgrind).
async fn write_all<W: AsyncWrite + Unpin + ?Sized>(
    stream: &mut W,
    bytes: &[u8],
    timeout: Option<Duration>,
) -> Result<()> {
    let mut write = std::pin::pin!(async {
        stream.write_all(bytes).await?;
        stream.flush().await
    });
    let written = match futures::poll!(write.as_mut()) {
        Poll::Ready(written) => written,
        Poll::Pending => match timeout {
            Some(timeout) => match tokio::time::timeout(timeout, write).await {
                Ok(written) => written,
                Err(_) => return Error::e_explain(ErrorType::WriteTimedout, "writing timed out"),
            },
            None => write.await,
        },
    };
    written.or_err(ErrorType::WriteError, "writing")
}

/// Runs `write` to its end, giving up after `timeout` (a `WriteTimedout` error). The timer is
/// armed only if the write cannot finish at once (the socket buffer or the HTTP/2 stream's
/// window is full), which for most responses it can: arming and dropping one costs more than
/// a small write.
async fn write_within<T>(timeout: Duration, write: impl Future<Output = Result<T>>) -> Result<T> {
    let mut write = std::pin::pin!(write);
    match futures::poll!(write.as_mut()) {
        Poll::Ready(written) => written,
        Poll::Pending => match tokio::time::timeout(timeout, write).await {
            Ok(written) => written,
            Err(_) => Error::e_explain(ErrorType::WriteTimedout, "writing timed out"),
        },
    }
}

/// `make()`'s future on the heap, built there rather than on the stack and copied: the
/// direct path's request futures are ~3 KiB, and `Box::pin(future)` copied all of it on
/// every request (~350 instructions of `memcpy`, callgrind). Allocating first lets the
/// compiler write the future in place. Boxed at all so that an idle connection's future
/// does not hold a request's state.
#[inline(always)]
pub(crate) fn boxed_in_place<F: Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

/// Reads what the upstream sent next into `buf`, waiting at most `timeout` (on `deadline`);
/// `Ok(0)` when it closed the connection.
async fn read_upstream(
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    timeout: Duration,
    deadline: &mut ReadDeadline<'_>,
) -> std::result::Result<usize, Failure> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(UPSTREAM_READ_BUFFER);
    }
    match deadline.within(timeout, upstream.read_buf(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(Failure::Upstream(Error::because(
            ErrorType::ReadError,
            "reading the upstream response",
            e,
        ))),
        Err(_) => Err(Failure::Upstream(Error::explain(
            ErrorType::ReadTimedout,
            "upstream read timed out",
        ))),
    }
}
