//! The direct HTTP/1.1 path (issue #9): plain HTTP/1.x requests with no body or a small one,
//! served in one loop per client connection on weir's own HTTP/1.1 wire format
//! ([`crate::h1`]), instead of through pingora-proxy.
//!
//! Why: pingora-proxy builds and boxes a ~90 KiB future for every request and returns the
//! upstream connection to its pool (starting an idle-watcher task) after every response, and
//! pingora-core's codec keeps every header twice and allocates a 64 KiB buffer per
//! response (docs/benchmarks.md). Here the request future is small, headers are relayed from
//! the bytes received, and idle upstream connections wait in a per-thread pool that checks
//! them when they are taken ([`crate::idle_upstreams`]).
//!
//! What it serves: on the plaintext listener, requests that [`DirectPath::takes`] accepts —
//! HTTP/1.0 or 1.1 in origin form, no body or a `Content-Length` body of at most 64 KiB that
//! arrived with the head, no upgrade, no `Expect`, no hop-by-hop header other than
//! `Connection: keep-alive|close`, and a route whose backends speak plain HTTP/1.1.
//! Everything else goes to Pingora's proxy with the bytes read so far (Pingora reads them
//! first), so one implementation handles streamed bodies, upgrades, TLS and h2.
//!
//! The request's phases — checks, routing, picking, `X-Forwarded-*`, feedback, retries,
//! metrics, access log — are [`WeirProxy`]'s, shared with the Pingora path.
//!
//! Must not: take a request it cannot finish the way the Pingora path would, or parse bytes
//! itself (that is [`crate::h1`]'s, which is pure and tested on its own).

use crate::dataplane::{
    client_ip, error_answer, peer_for, plain_response, quiet_error, redirect_response, Admission,
    RequestCtx, WeirProxy,
};
use crate::h1::{
    self, classify, BodyFraming, ChunkedDecoder, Classified, ClientRequest, ClientSide, HeadView,
    LAST_CHUNK, MAX_CLASSIFIED_HEAD, MAX_RESPONSE_HEAD,
};
use crate::idle_upstreams;
use crate::path::normalize;
use crate::routing::LiveRouting;
use bytes::{BufMut, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a client connection may wait between requests, or between two reads of a request
/// head (Pingora's keep-alive and read timeouts are 60 s too); also how long a response
/// write may wait for a client that does not read.
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long closing a client connection may wait to flush what is left of a response.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Initial size of a connection's read buffer.
const HEAD_BUFFER: usize = 4096;
/// Room made for each read of an upstream response.
const UPSTREAM_READ_BUFFER: usize = 8192;

/// The direct path of one proxy: its phases, the routing it classifies by and the connector
/// for new upstream connections (idle ones wait in [`crate::idle_upstreams`]).
pub struct DirectPath {
    proxy: WeirProxy,
    routing: Arc<LiveRouting>,
    connector: TransportConnector,
}

/// What reading the next request head found.
pub(crate) enum NextHead {
    /// A complete head this path may take (its host and target in the buffer), whatever
    /// its route says.
    Simple(HeadView),
    /// Bytes that are not a head this path takes (a body, an upgrade, an error, a huge
    /// head): for Pingora.
    Other,
    /// The client closed, idled out, or the server is shutting down.
    Closed,
}

impl DirectPath {
    pub fn new(proxy: WeirProxy, routing: Arc<LiveRouting>) -> Self {
        DirectPath {
            proxy,
            routing,
            connector: TransportConnector::new(None),
        }
    }

    /// Reads into `buf` until it holds a complete request head. Waits at most
    /// [`CLIENT_IDLE_TIMEOUT`] for each read; stops waiting for a new request at shutdown.
    pub(crate) async fn read_head(
        stream: &mut Stream,
        buf: &mut BytesMut,
        shutdown: &ShutdownWatch,
    ) -> NextHead {
        loop {
            if buf.is_empty() {
                // Waiting for a request: no buffer held by an idle connection until bytes
                // arrive (10,000 idle keep-alive connections are a normal load).
                let mut first = [0u8; 1024];
                let mut shutdown = shutdown.clone();
                if *shutdown.borrow() {
                    return NextHead::Closed;
                }
                let read = tokio::select! {
                    read = fast_timeout::fast_timeout(CLIENT_IDLE_TIMEOUT, stream.read(&mut first)) => read,
                    _ = shutdown.changed() => return NextHead::Closed,
                };
                match read {
                    Ok(Ok(n)) if n > 0 => {
                        buf.reserve(HEAD_BUFFER.max(n));
                        buf.extend_from_slice(&first[..n]);
                    }
                    _ => return NextHead::Closed,
                }
            }
            match classify(buf) {
                Classified::Simple(view) => return NextHead::Simple(view),
                Classified::Partial if buf.len() < MAX_CLASSIFIED_HEAD => {}
                Classified::BodyPending => {}
                _ => return NextHead::Other,
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(HEAD_BUFFER);
            }
            // A head under way is read to its end even at shutdown.
            match fast_timeout::fast_timeout(CLIENT_IDLE_TIMEOUT, stream.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // Closed or timed out inside a head: Pingora reads on and answers it.
                _ => return NextHead::Other,
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
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        // Encoded slashes are kept here; where they are refused, `admit` refuses them on
        // either path.
        let path: Cow<'_, str> = match normalize(path, true) {
            Ok(path) => path,
            Err(_) => return true, // refused by `admit` with a 400
        };
        match table.router.lookup(host, &path) {
            Some(choice) => choice.plain_http1(),
            None => true, // answered by `admit` with a 404
        }
    }

    /// Serves one request, whose head and body are at the start of `buf` where `view` says
    /// (taken by [`Self::takes`]). Returns the connection and the bytes already read of what
    /// follows, or `None` when the connection cannot be reused.
    pub(crate) async fn serve(
        &self,
        stream: Stream,
        mut buf: BytesMut,
        view: HeadView,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, BytesMut)> {
        let received = buf.split_to(view.head_len + view.body_len).freeze();
        let mut client = Client {
            stream,
            keep_alive: true,
            status: 0,
            body_bytes: 0,
        };
        let (request, mut req) = match ClientRequest::parse(received) {
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
        let peer = client
            .stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        let client_ip = client_ip(peer.as_ref());
        let mut ctx = self.proxy.request_ctx();
        let admission = self
            .proxy
            .admit(&mut req, || Some(request.head()), false, &mut ctx);
        let outcome = match admission {
            Admission::Forward => {
                self.forward(&mut client, &request, &req, client_ip, &mut ctx)
                    .await
            }
            Admission::Refuse(rejection) => {
                client.keep_alive = false;
                client.answer(rejection.status, rejection.body()).await
            }
            Admission::RedirectToHttps => match redirect_response(&req) {
                Ok(resp) => client.answer_with(&resp, "").await,
                Err(e) => Err(e),
            },
            Admission::Answer(status, body) => client.answer(status, body).await,
        };
        if let Err(e) = &outcome {
            if !quiet_error(e) {
                tracing::error!(error = %e, "request failed");
            }
        }
        self.proxy.finish_request(
            &req,
            client.status,
            outcome.as_ref().err().map(|e| e.as_ref()),
            (request.body().len(), client.body_bytes),
            &mut ctx,
        );
        drop(ctx);
        let mut stream = client.stream;
        if outcome.is_err() || !client.keep_alive {
            // The framing of what follows is in doubt, the client is gone, or either side
            // asked to close. Bounded: the shutdown flushes, and a client that stopped
            // reading would hold this task forever.
            let _ = fast_timeout::fast_timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
            return None;
        }
        Some((stream, buf))
    }

    /// Sends the request upstream (again, on a retryable failure) and relays the response.
    async fn forward(
        &self,
        client: &mut Client,
        request: &ClientRequest,
        req: &RequestHeader,
        client_ip: Option<IpAddr>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let replayable = req.method.is_idempotent();
        loop {
            let (target, addr) = match self.proxy.pick_endpoint(req, client_ip, ctx) {
                Ok(picked) => picked,
                Err(e) => return client.answer_error(e).await,
            };
            // An idle connection to the picked endpoint from this thread's pool, else a new one.
            let (mut upstream, reused) = match idle_upstreams::take(addr) {
                Some(stream) => (stream, true),
                // Boxed: the connect future is most of this one's size, and with the idle pool
                // most requests never build it.
                None => match Box::pin(self.connector.new_stream(&peer_for(&target, addr, false)))
                    .await
                {
                    Ok(stream) => (stream, false),
                    Err(mut e) => {
                        e.esource = ErrorSource::Upstream;
                        if self.proxy.connect_failed(&e, replayable, ctx) {
                            continue;
                        }
                        return client.answer_error(e).await;
                    }
                },
            };
            let exchange = Exchange {
                request,
                req,
                read_timeout: target.read_timeout,
            };
            match self
                .exchange(&exchange, client, &mut upstream, client_ip, ctx)
                .await
            {
                Ok(reusable) => {
                    if reusable {
                        idle_upstreams::put(addr, upstream);
                    }
                    return Ok(());
                }
                Err(Failure::Downstream(e)) => return Err(e),
                Err(Failure::Upstream(mut e)) => {
                    e.esource = ErrorSource::Upstream;
                    if client.status != 0 {
                        // Part of the response is out: nothing to retry or answer.
                        self.proxy.proxy_failed(&e, false, false, ctx);
                        return Err(e);
                    }
                    // A reused connection that failed before any response byte was stale
                    // (closed by the upstream while idle), not a failing endpoint.
                    let stale = reused && !ctx.has_upstream_response() && is_stale_error(&e);
                    if self.proxy.proxy_failed(&e, stale, replayable, ctx) {
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
        exchange: &Exchange<'_>,
        client: &mut Client,
        upstream: &mut Stream,
        client_ip: Option<IpAddr>,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<bool, Failure> {
        let (request, req) = (exchange.request, exchange.req);
        let set = self.proxy.forward_headers(req, client_ip, false, ctx);
        let mut buf = BytesMut::new();
        request.write_upstream(req.method.as_str(), req.raw_path(), &set, &mut buf);
        write_all(upstream, &buf, None)
            .await
            .map_err(Failure::Upstream)?;
        // The same buffer now takes the response.
        buf.clear();
        buf.reserve(UPSTREAM_READ_BUFFER);
        let side = ClientSide {
            http10: request.is_http10(),
            keep_alive: client.keep_alive,
            head_request: req.method == http::Method::HEAD,
        };
        let date = get_cached_date();
        let mut out = BytesMut::new();
        let head = loop {
            let parsed =
                h1::response_head(&buf, side, date.as_bytes(), &mut out).map_err(|why| {
                    Failure::Upstream(Error::explain(ErrorType::InvalidHTTPHeader, why))
                })?;
            match parsed {
                Some(head) if (100..200).contains(&head.status) => {
                    // 100 Continue and friends: relayed to an HTTP/1.1 client, then on.
                    let _ = buf.split_to(head.head_len);
                    if !out.is_empty() {
                        client.write(&out).await.map_err(Failure::Downstream)?;
                        out.clear();
                    }
                }
                Some(head) => break head,
                None if buf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(Failure::Upstream(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "response head too long",
                    )))
                }
                None => {
                    if read_upstream(upstream, &mut buf, exchange.read_timeout).await? == 0 {
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
        client.status = head.status;
        client.keep_alive = head.client_keep_alive;
        let _ = buf.split_to(head.head_len);
        let chunked = head.chunked_to_client;
        let clean_end = match head.framing {
            BodyFraming::Empty => {
                client.write(&out).await.map_err(Failure::Downstream)?;
                buf.is_empty()
            }
            BodyFraming::Length(length) => {
                let mut remaining = length;
                loop {
                    let take = remaining.min(buf.len() as u64) as usize;
                    out.extend_from_slice(&buf[..take]);
                    let _ = buf.split_to(take);
                    remaining -= take as u64;
                    client.body_bytes += take;
                    client.write(&out).await.map_err(Failure::Downstream)?;
                    out.clear();
                    if remaining == 0 {
                        break buf.is_empty();
                    }
                    buf.clear();
                    if read_upstream(upstream, &mut buf, exchange.read_timeout).await? == 0 {
                        return Err(Failure::Upstream(body_cut_short()));
                    }
                }
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                loop {
                    let mut sent = 0;
                    let consumed = decoder
                        .decode(&buf, |data| {
                            sent += data.len();
                            h1::put_body(&mut out, data, chunked);
                        })
                        .map_err(|why| {
                            Failure::Upstream(Error::explain(ErrorType::InvalidHTTPHeader, why))
                        })?;
                    let _ = buf.split_to(consumed);
                    client.body_bytes += sent;
                    if decoder.is_done() && chunked {
                        out.extend_from_slice(LAST_CHUNK);
                    }
                    if !out.is_empty() {
                        client.write(&out).await.map_err(Failure::Downstream)?;
                        out.clear();
                    }
                    if decoder.is_done() {
                        break buf.is_empty();
                    }
                    buf.clear();
                    if read_upstream(upstream, &mut buf, exchange.read_timeout).await? == 0 {
                        return Err(Failure::Upstream(body_cut_short()));
                    }
                }
            }
            BodyFraming::UntilClose => loop {
                client.body_bytes += buf.len();
                h1::put_body(&mut out, &buf, chunked);
                buf.clear();
                let closed = read_upstream(upstream, &mut buf, exchange.read_timeout).await? == 0;
                if closed && chunked {
                    out.extend_from_slice(LAST_CHUNK);
                }
                if !out.is_empty() {
                    client.write(&out).await.map_err(Failure::Downstream)?;
                    out.clear();
                }
                if closed {
                    break false;
                }
            },
        };
        Ok(clean_end && head.upstream_keep_alive)
    }
}

/// What one upstream attempt sends.
struct Exchange<'a> {
    request: &'a ClientRequest,
    req: &'a RequestHeader,
    read_timeout: Duration,
}

/// The client side of one request: the connection, and what was sent on it.
struct Client {
    stream: Stream,
    /// The connection stays open after this request.
    keep_alive: bool,
    /// The status of the response under way (0 until its head is sent).
    status: u16,
    /// Body bytes sent (without chunk framing).
    body_bytes: usize,
}

impl Client {
    /// Writes (and flushes) bytes of the response, waiting at most
    /// [`CLIENT_IDLE_TIMEOUT`] for a client that does not read.
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        write_all(&mut self.stream, bytes, Some(CLIENT_IDLE_TIMEOUT)).await
    }

    /// Writes one of weir's short plain-text answers.
    async fn answer(&mut self, status: u16, body: &'static str) -> Result<()> {
        let resp = plain_response(status, body)?;
        self.answer_with(&resp, body).await
    }

    /// Writes a response of weir's own: `resp` and `body`.
    async fn answer_with(&mut self, resp: &ResponseHeader, body: &str) -> Result<()> {
        let mut out = BytesMut::with_capacity(256 + body.len());
        let status = resp.status.as_u16();
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(resp.status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(resp.status.canonical_reason().unwrap_or("").as_bytes());
        out.put_slice(b"\r\n");
        for (name, value) in resp.headers.iter() {
            h1::put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
        h1::put_own_fields(&mut out, get_cached_date().as_bytes(), self.keep_alive);
        out.put_slice(b"\r\n");
        out.put_slice(body.as_bytes());
        self.status = status;
        self.body_bytes = body.len();
        self.write(&out).await
    }

    /// Answers an error that ended the request before a response started (502/503/504, as
    /// the Pingora path does) and closes the connection after.
    async fn answer_error(&mut self, e: Box<Error>) -> Result<()> {
        let (code, body) = error_answer(&e);
        self.keep_alive = false;
        if code > 0 {
            if let Err(write_error) = self.answer(code, body).await {
                tracing::debug!(error = %write_error, "could not send error response");
            }
        }
        Err(e)
    }
}

/// Which side failed an exchange.
enum Failure {
    Upstream(Box<Error>),
    Downstream(Box<Error>),
}

/// Errors that on a reused connection mean it was closed while idle: the upstream reset or
/// closed it before answering (not a timeout, which is the endpoint's).
fn is_stale_error(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    )
}

fn body_cut_short() -> Box<Error> {
    Error::explain(
        ErrorType::ConnectionClosed,
        "upstream closed before the end of the body",
    )
}

/// Writes all of `bytes` and flushes (Pingora's streams buffer writes), waiting at most
/// `timeout` when one is given. The timer is armed only if the write cannot finish at once
/// (the socket buffer is full), which for most responses it can.
async fn write_all(stream: &mut Stream, bytes: &[u8], timeout: Option<Duration>) -> Result<()> {
    let mut write = std::pin::pin!(async {
        stream.write_all(bytes).await?;
        stream.flush().await
    });
    let written = match futures::poll!(write.as_mut()) {
        Poll::Ready(written) => written,
        Poll::Pending => match timeout {
            Some(timeout) => match fast_timeout::fast_timeout(timeout, write).await {
                Ok(written) => written,
                Err(_) => return Error::e_explain(ErrorType::WriteTimedout, "writing timed out"),
            },
            None => write.await,
        },
    };
    written.or_err(ErrorType::WriteError, "writing")
}

/// Reads what the upstream sent next into `buf`, waiting at most `timeout`; `Ok(0)` when it
/// closed the connection.
async fn read_upstream(
    upstream: &mut Stream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> std::result::Result<usize, Failure> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(UPSTREAM_READ_BUFFER);
    }
    match fast_timeout::fast_timeout(timeout, upstream.read_buf(buf)).await {
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
