//! The direct HTTP/1.1 path (issue #9): plain HTTP/1.x requests with no body or a small one
//! served in one loop per client connection on pingora-core's HTTP/1 codec, instead of
//! through pingora-proxy.
//!
//! Why: pingora-proxy builds and boxes a ~90 KiB future for every request and returns the
//! upstream connection to its pool (starting an idle-watcher task) after every response;
//! together about a third of a proxied request's instructions (docs/benchmarks.md). Here the
//! request future is small, and idle upstream connections wait in a per-thread pool that
//! checks them when they are taken ([`crate::idle_upstreams`]) instead of watching each one.
//!
//! What it serves: on the plaintext listener, requests that [`DirectPath::takes`] accepts —
//! HTTP/1.0 or 1.1 in origin form, no body or a `Content-Length` body of at most 64 KiB that
//! arrived with the head, no upgrade, no `Expect`, no hop-by-hop header other than
//! `Connection: keep-alive|close`, and a route whose backends speak plain HTTP/1.1. Everything else goes to Pingora's proxy with the bytes read so far (Pingora
//! reads them first), so one implementation handles bodies, upgrades, TLS and h2.
//!
//! The request's phases — checks, routing, picking, `X-Forwarded-*`, feedback, retries,
//! metrics, access log — are [`WeirProxy`]'s, shared with the Pingora path.
//!
//! Must not: parse HTTP itself beyond classifying a request head (pingora-core's codec does
//! the framing), or take a request it cannot finish the way the Pingora path would.

use crate::dataplane::{
    client_ip, error_answer, peer_for, plain_response, quiet_error, redirect_response, Admission,
    RequestCtx, WeirProxy,
};
use crate::idle_upstreams;
use crate::path::normalize;
use crate::routing::LiveRouting;
use bytes::{Bytes, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::v1::server::HttpSession as DownstreamSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long a client connection may wait between requests, or between two reads of a request
/// head (Pingora's keep-alive and read timeouts are 60 s too).
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request head longer than this is left to Pingora (which reads on up to its own limit and
/// answers 400 beyond it; weir's header limits apply after).
const MAX_CLASSIFIED_HEAD: usize = 64 * 1024;
/// Headers classified; a request with more is left to Pingora.
const MAX_CLASSIFIED_HEADERS: usize = 128;
/// Largest request body this path takes: it must have arrived with the head (or right after
/// it) and is kept until the response, so that a retry can send it again. Larger bodies,
/// chunked ones and `Expect: 100-continue` go to Pingora, which streams them.
const MAX_BUFFERED_BODY: usize = 64 * 1024;
/// Initial size of a connection's read buffer.
const HEAD_BUFFER: usize = 4096;
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

    /// Serves one request whose head is at the start of `head` (taken by [`Self::takes`]);
    /// `None` when the client connection cannot be reused.
    pub(crate) async fn serve(
        &self,
        stream: Stream,
        head: BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, BytesMut)> {
        let mut down = DownstreamSession::new(stream);
        down.set_pipelining_enabled(true);
        down.set_pipelined_prefix(head);
        match down.read_request().await {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                // The head parsed when classified; only the codec's own checks (a bad
                // Content-Length, say) end here, as in Pingora's path: 400, close.
                tracing::debug!(error = %e, "invalid request");
                down.set_server_keepalive(None);
                let _ = respond(&mut down, 400, "bad request\n").await;
                return None;
            }
        }
        if *shutdown.borrow() {
            down.set_server_keepalive(None);
        }
        let client_ip = client_ip(down.client_addr());
        let mut ctx = self.proxy.request_ctx();
        let raw_header = down.get_headers_raw_bytes();
        let admission =
            self.proxy
                .admit(down.req_header_mut(), || Some(raw_header), false, &mut ctx);
        let outcome = match admission {
            Admission::Forward => match read_buffered_body(&mut down).await {
                Ok(body) => self.forward(&mut down, &body, client_ip, &mut ctx).await,
                Err(e) => Err(e),
            },
            Admission::Refuse(rejection) => {
                down.set_server_keepalive(None);
                respond(&mut down, rejection.status, rejection.body()).await
            }
            Admission::RedirectToHttps => match redirect_response(down.req_header()) {
                Ok(resp) => match down.write_response_header(Box::new(resp)).await {
                    Ok(()) => down.finish_body().await.map(|_| ()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Admission::Answer(status, body) => respond(&mut down, status, body).await,
        };
        let code = down.response_written().map_or(0, |r| r.status.as_u16());
        if let Err(e) = &outcome {
            if !quiet_error(e) {
                tracing::error!(error = %e, "request failed");
            }
        }
        let bytes = (down.body_bytes_read(), down.body_bytes_sent());
        self.proxy.finish_request(
            down.req_header(),
            code,
            outcome.as_ref().err().map(|e| e.as_ref()),
            bytes,
            &mut ctx,
        );
        drop(ctx);
        if outcome.is_err() {
            // The framing of what follows is in doubt, or the client is gone.
            down.shutdown().await;
            return None;
        }
        // Reusable: the stream and the bytes already read of what follows.
        let (stream, prefix) = down.reuse().await.ok().flatten()?.into_parts();
        Some((stream, prefix.unwrap_or_default()))
    }

    /// Sends the request upstream (again, on a retryable failure) and relays the response.
    async fn forward(
        &self,
        down: &mut DownstreamSession,
        body: &[u8],
        client_ip: Option<IpAddr>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let replayable = down.req_header().method.is_idempotent();
        loop {
            let (target, addr) = match self.proxy.pick_endpoint(down.req_header(), client_ip, ctx) {
                Ok(picked) => picked,
                Err(e) => return answer_error(down, e).await,
            };
            // An idle connection to the picked endpoint from this thread's pool, else a new one.
            let (stream, reused) = match idle_upstreams::take(addr) {
                Some(stream) => (stream, true),
                None => match self
                    .connector
                    .new_stream(&peer_for(&target, addr, false))
                    .await
                {
                    Ok(stream) => (stream, false),
                    Err(mut e) => {
                        e.esource = ErrorSource::Upstream;
                        if self.proxy.connect_failed(&e, replayable, ctx) {
                            continue;
                        }
                        return answer_error(down, e).await;
                    }
                },
            };
            let mut up = UpstreamSession::new(stream);
            up.read_timeout = Some(target.read_timeout);
            match self.exchange(down, body, &mut up, client_ip, ctx).await {
                Ok(()) => {
                    up.respect_keepalive();
                    if let Some(stream) = up.reuse().await {
                        idle_upstreams::put(addr, stream);
                    }
                    return Ok(());
                }
                Err(Failure::Downstream(e)) => return Err(e),
                Err(Failure::Upstream(mut e)) => {
                    e.esource = ErrorSource::Upstream;
                    if down.response_written().is_some() {
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
                    return answer_error(down, e).await;
                }
            }
        }
    }

    /// One attempt on one upstream connection: request out, response back.
    async fn exchange(
        &self,
        down: &mut DownstreamSession,
        body: &[u8],
        up: &mut UpstreamSession,
        client_ip: Option<IpAddr>,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), Failure> {
        let mut req = down.req_header().clone();
        upstream_request(&mut req).map_err(Failure::Upstream)?;
        self.proxy
            .forward_headers(down.req_header(), client_ip, false, &mut req, ctx)
            .map_err(Failure::Upstream)?;
        up.write_request_header(Box::new(req))
            .await
            .map_err(Failure::Upstream)?;
        if !body.is_empty() {
            up.write_body(body).await.map_err(Failure::Upstream)?;
        }
        up.finish_body().await.map_err(Failure::Upstream)?;
        let resp = loop {
            up.read_response().await.map_err(Failure::Upstream)?;
            let Some(resp) = up.resp_header() else {
                return Err(Failure::Upstream(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "no response header",
                )));
            };
            if resp.status == 101 {
                // Nobody asked for an upgrade.
                return Err(Failure::Upstream(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "101 to a request without upgrade",
                )));
            }
            if !resp.status.is_informational() {
                break resp.clone();
            }
            let info = Box::new(resp.clone());
            down.write_response_header(info)
                .await
                .map_err(Failure::Downstream)?;
        };
        self.proxy.note_response(&resp, ctx);
        down.write_response_header(Box::new(resp))
            .await
            .map_err(Failure::Downstream)?;
        while let Some(chunk) = up.read_body_bytes().await.map_err(Failure::Upstream)? {
            down.write_body(&chunk).await.map_err(Failure::Downstream)?;
        }
        down.finish_body().await.map_err(Failure::Downstream)?;
        Ok(())
    }
}

/// Where a simple head's Host value and request target are in the buffer (byte ranges, so
/// the buffer can move on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeadView {
    host: std::ops::Range<usize>,
    target: std::ops::Range<usize>,
}

/// What the bytes at the start of a connection's buffer are.
#[derive(Debug, PartialEq, Eq)]
enum Classified {
    /// Not a complete head yet.
    Partial,
    /// A complete head with a small `Content-Length` body not all read yet.
    BodyPending,
    /// A complete request this path can serve whatever its route: HTTP/1.x in origin form,
    /// no body or a `Content-Length` body of at most [`MAX_BUFFERED_BODY`] bytes that is all
    /// in the buffer, no upgrade, no `Expect`, no hop-by-hop header but
    /// `Connection: keep-alive|close`.
    Simple(HeadView),
    /// A complete head for Pingora, or bytes that are no head at all (Pingora answers them).
    Other,
}

fn classify(head: &[u8]) -> Classified {
    let mut headers = [httparse::EMPTY_HEADER; MAX_CLASSIFIED_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Classified::Partial,
        Err(_) => return Classified::Other,
    };
    let Some(target) = req.path.filter(|p| p.starts_with('/')) else {
        return Classified::Other;
    };
    let base = head.as_ptr() as usize;
    // httparse's slices point into `head`.
    let range = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let mut host = 0..0;
    let mut body_len = None;
    for header in req.headers.iter() {
        let (name, value) = (header.name, header.value);
        if name.eq_ignore_ascii_case("host") {
            host = range(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            // One plain decimal length; anything else (a list, a sign, a second field) is
            // for Pingora's path and weir's framing checks there.
            let len = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|len| *len <= MAX_BUFFERED_BODY);
            match (len, body_len) {
                (Some(len), None) => body_len = Some(len),
                _ => return Classified::Other,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if !(value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close"))
            {
                return Classified::Other;
            }
        } else if HANDED_OFF_HEADERS
            .iter()
            .any(|hop| name.eq_ignore_ascii_case(hop))
        {
            return Classified::Other;
        }
    }
    if head.len() < head_len + body_len.unwrap_or(0) {
        return Classified::BodyPending;
    }
    Classified::Simple(HeadView {
        host,
        target: range(target.as_bytes()),
    })
}

/// Headers that send a request to Pingora: a chunked body, an upgrade, `Expect`, and
/// hop-by-hop headers Pingora's request policy knows how to strip.
const HANDED_OFF_HEADERS: [&str; 8] = [
    "transfer-encoding",
    "upgrade",
    "expect",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
];

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

/// The upstream copy of a request this path takes: HTTP/1.1, without the client's
/// `Connection` header (the only hop-by-hop header such a request carries).
fn upstream_request(req: &mut RequestHeader) -> Result<()> {
    req.set_version(http::Version::HTTP_11);
    if req.headers.contains_key(http::header::CONNECTION) {
        req.remove_header(&http::header::CONNECTION);
    }
    Ok(())
}

/// The request body, all of it already read with the head (see [`classify`]): kept whole so
/// that a retry can send it again.
async fn read_buffered_body(down: &mut DownstreamSession) -> Result<Bytes> {
    let mut body = BytesMut::new();
    while let Some(chunk) = down.read_body_bytes().await? {
        if body.is_empty() && down.is_body_done() {
            return Ok(chunk); // the usual case: one piece, no copy
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Writes one of weir's short plain-text answers.
async fn respond(down: &mut DownstreamSession, status: u16, body: &'static str) -> Result<()> {
    let resp = plain_response(status, body)?;
    down.write_response_header(Box::new(resp)).await?;
    down.write_body(body.as_bytes()).await?;
    down.finish_body().await?;
    Ok(())
}

/// Answers an error that ended the request before a response started (502/503/504, as the
/// Pingora path does) and closes the connection after.
async fn answer_error(down: &mut DownstreamSession, e: Box<Error>) -> Result<()> {
    let (code, body) = error_answer(&e);
    down.set_server_keepalive(None);
    if code > 0 {
        if let Err(write_error) = respond(down, code, body).await {
            tracing::debug!(error = %write_error, "could not send error response");
        }
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::{classify, Classified};

    #[allow(clippy::panic)]
    #[test]
    fn simple_heads_are_origin_form_http1_with_small_bodies_and_no_hop_by_hop_headers() {
        let taken: [&[u8]; 7] = [
            b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz",
            b"PUT /p HTTP/1.1\r\nHost: a\r\ncontent-length: 2\r\n\r\nokGET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"GET /x?y=1 HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\n",
            b"DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: Close\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: a\r\nX-Anything: 1\r\n\r\nGET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ];
        for head in taken {
            let simple = matches!(classify(head), Classified::Simple(_));
            assert!(simple, "{}", String::from_utf8_lossy(head));
        }
        let head = b"GET /p?q HTTP/1.1\r\nhOsT: a.example:8080\r\n\r\n";
        let Classified::Simple(view) = classify(head) else {
            panic!("not simple");
        };
        assert_eq!(&head[view.host], b"a.example:8080");
        assert_eq!(&head[view.target], b"/p?q");
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Classified::Partial
        );
        assert_eq!(
            classify(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxy"),
            Classified::BodyPending
        );
        let handed_off: [&[u8]; 15] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-secret\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ];
        for head in handed_off {
            let other = classify(head) == Classified::Other;
            assert!(other, "{}", String::from_utf8_lossy(head));
        }
    }
}
