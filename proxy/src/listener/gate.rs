//! The door of the proxy listeners: [`ConnectionGate`] wraps Pingora's HTTP
//! application and decides, per connection, before any HTTP is parsed:
//! - `--max-connections`: beyond it a new connection gets a one-line 503 and is closed
//!   (a fast, explicit answer instead of a queue the client cannot see);
//! - `--request-header-timeout`: the first request header must be complete within this time
//!   of the connection's start, or the connection is closed (slowloris). Pingora only times
//!   each read (60 s), so a client sending a byte a minute would hold a connection forever;
//! - each connection it admits continues on a task of its own ([`ConnectionGate::connection`]),
//!   sized for what a connection holds while it waits for its next request: the task
//!   Pingora gave it is sized for a TLS handshake and ends.
//!
//! HTTP/2 connections (TLS with ALPN h2, or the h2c preface) are not held to the header
//! deadline: each stream is a request of its own. With the direct path on they are read by
//! weir's own HTTP/2 server ([`h2_server`]), which gives each stream to the direct path or to
//! Pingora's proxy (as a session of its own, [`PingoraStream`]); without, Pingora serves
//! them whole.
//!
//! HTTP/1 connections, plaintext or TLS, run one loop whichever engine serves them: each
//! request head is read here and framed by weir's one strict check
//! ([`crate::http::h1::classify`]); a malformed head is answered and the connection closed;
//! the rest go to [`DirectPath`] (`--http1-path direct`, when it takes them) or to Pingora,
//! which reads exactly that request through [`OneRequest`].
//!
//! Must not: interpret requests beyond framing them and choosing an engine (checks, routing
//! and proxying are the request core's business).

use crate::app::metrics::Metrics;
use crate::engine::own::direct::{boxed_in_place, DirectPath, NextHead};
use crate::engine::own::h2_server::{self, NewRequest};
use crate::engine::own::lingering_close::lingering_close;
use crate::engine::own::read_deadline::{self, ReadDeadline};
use crate::engine::pingora::h2_session::{ConnectionDigests, PingoraStream};
use crate::engine::pingora::holds_pipelined_bytes;
use crate::engine::pingora::one_request::OneRequest;
use crate::http::forwarded::client_ip;
use crate::http::h1::HeadFields;
use crate::http::h2_request::H2Request;
use crate::http::hardening::Rejection;
use crate::listener::parked::{self, Parker, PARK_AFTER};
use crate::request::answers::{http1_answer, plain_response};
use crate::request::phases::WeirProxy;
use crate::request::timeouts::CLIENT_IDLE_TIMEOUT;
use async_trait::async_trait;
use bytes::BytesMut;
use futures::future::Either;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use weir_http2::conn::Settings;

/// What the gate counts: the open-connection count it decides on, and its metrics.
#[derive(Debug)]
pub struct GateStats {
    open: AtomicUsize,
    open_gauge: IntGauge,
    parked: IntGauge,
    refused: IntCounter,
    header_timeouts: IntCounter,
}

impl GateStats {
    pub fn new(metrics: &Metrics) -> Self {
        GateStats {
            open: AtomicUsize::new(0),
            open_gauge: metrics.connections_open.clone(),
            parked: metrics.connections_parked.clone(),
            refused: metrics.connections_refused_total.clone(),
            header_timeouts: metrics.request_header_timeouts_total.clone(),
        }
    }
}

pub struct ConnectionGate<A> {
    inner: Arc<A>,
    /// The request core, for the heads the gate refuses.
    core: WeirProxy,
    /// weir's own HTTP/1.1 path (`None`: Pingora serves all).
    direct: Option<DirectPath>,
    max_connections: usize,
    header_timeout: Duration,
    stats: Arc<GateStats>,
}

impl<A> ConnectionGate<A> {
    pub fn new(
        inner: A,
        core: WeirProxy,
        direct: Option<DirectPath>,
        max_connections: usize,
        header_timeout: Duration,
        stats: Arc<GateStats>,
    ) -> Self {
        ConnectionGate {
            inner: Arc::new(inner),
            core,
            direct,
            max_connections,
            header_timeout,
            stats,
        }
    }
}

/// One slot of `--max-connections`, given back when the connection ends (also when its
/// task unwinds from a panic). A parked connection holds its slot without this value
/// ([`Slot::keep_counted`]).
struct Slot(Option<Arc<GateStats>>);

impl Slot {
    /// Takes a slot: `open` is the connection count with it.
    fn take(stats: &Arc<GateStats>) -> (Slot, usize) {
        let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        stats.open_gauge.set(open as i64);
        (Slot(Some(Arc::clone(stats))), open)
    }

    /// The slot a connection already counted holds (one that was parked).
    fn counted(stats: &Arc<GateStats>) -> Slot {
        Slot(Some(Arc::clone(stats)))
    }

    /// Leaves the slot taken without holding it (the connection is parked).
    fn keep_counted(mut self) {
        self.0 = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(stats) = self.0.take() {
            let open = stats.open.fetch_sub(1, Ordering::Relaxed) - 1;
            stats.open_gauge.set(open as i64);
        }
    }
}

/// How a connection's serving ended.
enum After {
    /// Closed, or to be closed.
    Closed,
    /// Idle: a plaintext HTTP/1 connection to park.
    Idle(Stream),
    /// Handed back by Pingora, which serves it again.
    Reuse(Stream),
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FULL: &str = "too many connections\n";

impl<A: HttpServerApp + ServerApp + Send + Sync + 'static> ConnectionGate<A> {
    /// The task of one admitted connection, to its end or until it is parked. Pingora's task
    /// for it is sized by the largest thing it awaits, the TLS handshake (8.6 KiB,
    /// heaptrack); this one by what a connection holds while it waits for a request.
    /// Everything large a request needs is boxed for that request only. A plaintext HTTP/1
    /// connection idle for [`PARK_AFTER`] is parked ([`parked`]): it gives up this task, and
    /// a new one of this kind (`resumed`) serves it when its next request comes.
    async fn connection(
        self: Arc<Self>,
        stream: Stream,
        shutdown: ShutdownWatch,
        slot: Slot,
        resumed: bool,
    ) {
        let after = if resumed {
            self.serve_resumed(stream, &shutdown).await
        } else {
            Arc::clone(&self).serve(stream, &shutdown).await
        };
        match after {
            After::Closed => {}
            After::Idle(stream) => {
                // Its idle time started when it began waiting for this request.
                let idle_until = Instant::now() + CLIENT_IDLE_TIMEOUT.saturating_sub(PARK_AFTER);
                let gauge = self.stats.parked.clone();
                if parked::park(stream, &shutdown, &gauge, idle_until, self) {
                    // Still open: the slot is given back by `Parker::closed` or held
                    // again by `Parker::resume`.
                    slot.keep_counted();
                }
            }
            // What Pingora serves whole (HTTP/2 under `--work-stealing`) it may hand back for
            // another turn, as its own connection loop would.
            After::Reuse(stream) => {
                let mut reused = Some(stream);
                while let Some(stream) = reused {
                    reused = self.inner.process_new(stream, &shutdown).await;
                }
            }
        }
    }

    /// A parked HTTP/1 connection whose next request has come.
    async fn serve_resumed(&self, stream: Stream, shutdown: &ShutdownWatch) -> After {
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut deadline = ReadDeadline::new(timer);
        self.serve_http1(stream, shutdown, &mut deadline, None)
            .await
    }

    /// One connection, HTTP/2 or HTTP/1. The HTTP/2 server's state is boxed: inline, it
    /// would size every connection's task, HTTP/1 ones too.
    ///
    /// One timer bounds every timed read of the connection ([`ReadDeadline`]), and with it
    /// the first-head deadline (`--request-header-timeout`, from now): the first request
    /// head, and before it the bytes that tell HTTP/1 from the h2c preface, must be in by
    /// then. HTTP/2 connections are not held to it once known: each stream is a request of
    /// its own.
    async fn serve(self: Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> After {
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            return Box::pin(self.serve_h2(stream, shutdown)).await;
        }
        let head_by =
            (!self.header_timeout.is_zero()).then(|| Instant::now() + self.header_timeout);
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut deadline = ReadDeadline::new(timer);
        // The h2c preface. A peek waits until it has all the bytes it asks for, so the whole
        // preface is asked for only when its first three bytes are there: an HTTP/1 request
        // shorter than the preface (`GET / HTTP/1.0` and an empty line) must not wait for
        // bytes that never come.
        let mut start = [0u8; 3];
        let peeked = deadline
            .within_until(CLIENT_IDLE_TIMEOUT, head_by, stream.try_peek(&mut start))
            .await;
        if peeked.is_err() {
            return self.ran_out(head_by);
        }
        if matches!(peeked, Ok(Ok(true))) && start == H2_PREFACE[..3] {
            let mut head = [0u8; 24];
            let peeked = deadline
                .within_until(CLIENT_IDLE_TIMEOUT, head_by, stream.try_peek(&mut head))
                .await;
            if peeked.is_err() {
                return self.ran_out(head_by);
            }
            if matches!(peeked, Ok(Ok(true))) && head == H2_PREFACE {
                return Box::pin(self.serve_h2(stream, shutdown)).await;
            }
        }
        self.serve_http1(stream, shutdown, &mut deadline, head_by)
            .await
    }

    /// A connection that did not send in time is closed; counted when the first-head
    /// deadline (`head_by`) had come rather than the idle timeout.
    fn ran_out(&self, head_by: Option<Instant>) -> After {
        if read_deadline::reached(head_by) {
            self.stats.header_timeouts.inc();
            tracing::debug!("request header not complete in time: connection closed");
        }
        After::Closed
    }

    /// An HTTP/2 connection: weir's own server ([`h2_server`]) reads it when the direct path
    /// is on and each thread has a runtime of its own (the default), and serves every stream
    /// on the connection's task; otherwise Pingora serves the connection whole. Under
    /// `--work-stealing` the streams of one busy connection must be able to spread over the
    /// threads, which serving them on the connection's task would prevent.
    async fn serve_h2(self: Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> After {
        let spread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        match self.direct.as_ref() {
            Some(direct) if !spread => {
                self.serve_weir_h2(direct, stream, shutdown).await;
                After::Closed
            }
            _ => match self.inner.process_new(stream, shutdown).await {
                Some(stream) => After::Reuse(stream),
                None => After::Closed,
            },
        }
    }

    /// An HTTP/2 connection on weir's own server ([`h2_server`]): requests the direct path
    /// takes are served by it, the rest by Pingora's proxy as sessions of its own
    /// ([`PingoraStream`]); all on the connection's task.
    async fn serve_weir_h2(&self, direct: &DirectPath, stream: Stream, shutdown: &ShutdownWatch) {
        let digests = ConnectionDigests {
            ssl: stream.get_ssl_digest(),
            socket: stream.get_socket_digest(),
            proxy: stream.get_proxy_digest(),
        };
        let tls = digests.ssl.is_some();
        let client_ip = client_ip(digests.client_addr());
        let digests = &digests;
        let idle = CLIENT_IDLE_TIMEOUT;
        h2_server::serve_connection(stream, Settings::default(), idle, shutdown, |request| {
            let NewRequest {
                stream,
                head,
                end_stream,
            } = request;
            // The direct path takes what it can read as an `http` request; Pingora answers
            // the rest, and 400 goes to what `http` refuses.
            let head = match H2Request::new(head) {
                Ok(req) if direct.takes_weir_h2(&req, end_stream) => {
                    return Some(Either::Left(boxed_in_place(|| {
                        direct.serve_weir_h2(stream, req, client_ip, tls)
                    })));
                }
                Ok(req) => req.into_head(),
                Err(head) => head,
            };
            let session = match PingoraStream::new(stream, &head, end_stream, digests) {
                Ok(session) => ServerSession::new_custom(Box::new(session)),
                Err((stream, reason)) => {
                    tracing::debug!(reason, "HTTP/2 request refused");
                    stream.answer(400, "bad request\n");
                    return None;
                }
            };
            Some(Either::Right(Box::pin(async move {
                let _ = self.inner.process_new_http(session, shutdown).await;
            })))
        })
        .await;
    }

    /// An HTTP/1 connection (plaintext or TLS): each request head is read and classified
    /// here, whatever engine serves it, so every request is framed by weir's one strict
    /// reading ([`crate::http::h1::classify`]). The direct path serves what it takes;
    /// Pingora's proxy the rest, one request at a time, read through [`OneRequest`] so it
    /// sees only that request's checked bytes; a malformed head is answered and the
    /// connection closed. The connection comes back here after each request.
    async fn serve_http1(
        &self,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
        deadline: &mut ReadDeadline<'_>,
        mut head_by: Option<Instant>,
    ) -> After {
        let mut buf = BytesMut::new();
        let mut fields = HeadFields::default();
        let parks = parked::parkable(&stream);
        loop {
            // A connection waiting for its first request is held to the header deadline
            // instead.
            let park_after = (parks && head_by.is_none()).then_some(PARK_AFTER);
            let next = DirectPath::read_head(
                &mut stream,
                &mut buf,
                &mut fields,
                shutdown,
                deadline,
                head_by,
                park_after,
            )
            .await;
            // Only the first head has a deadline of its own.
            let first_head_by = head_by.take();
            let framing = match next {
                NextHead::Closed => return After::Closed,
                NextHead::Idle => return After::Idle(stream),
                NextHead::HeaderTimeout => return self.ran_out(first_head_by),
                NextHead::Malformed(rejection) => {
                    // Boxed: its buffer and timer would otherwise be in every connection's
                    // future, idle ones too.
                    Box::pin(self.refuse_head(&mut stream, rejection)).await;
                    return After::Closed;
                }
                NextHead::Simple(view) => match &self.direct {
                    Some(direct) if direct.takes(&buf, &view) => {
                        let received = std::mem::take(&mut buf);
                        let serving = boxed_in_place(|| {
                            direct.serve(stream, received, view, &fields, shutdown, deadline)
                        });
                        let Some(served) = serving.await else {
                            return After::Closed;
                        };
                        (stream, buf) = served;
                        continue;
                    }
                    _ => view.framing(),
                },
                NextHead::Other(framing) => framing,
            };
            // Pingora's proxy serves this one request, read through `OneRequest`.
            let one = OneRequest::new(stream, std::mem::take(&mut buf), framing);
            let session = self.http1_session(Box::new(one), shutdown);
            let Some(reused) = self.inner.process_new_http(session, shutdown).await else {
                return After::Closed;
            };
            let (back, settings) = reused.consume();
            if settings.as_ref().is_some_and(holds_pipelined_bytes) {
                // Pingora read past the request (it cannot through `OneRequest`): those
                // bytes were not checked here, so the connection ends.
                return After::Closed;
            }
            let Ok(one) = back.into_any().downcast::<OneRequest>() else {
                return After::Closed;
            };
            if !one.request_done() {
                return After::Closed; // the body was not read to its end: its framing is lost
            }
            (stream, buf) = one.into_parts();
        }
    }

    /// Answers a head weir refuses (counted and logged by the request core) and closes.
    async fn refuse_head(&self, stream: &mut Stream, rejection: Rejection) {
        self.core.refused_head(rejection);
        let mut answer = BytesMut::new();
        if let Ok(resp) = plain_response(rejection.status, rejection.body()) {
            http1_answer(&resp, rejection.body(), false, false, &mut answer);
            let _ = stream.write_all(&answer).await;
            let _ = stream.flush().await;
        }
        lingering_close(stream).await;
    }

    /// A Pingora HTTP/1 session on `stream`, set up as Pingora's own loop does it (keep-alive
    /// 60 s, request limit).
    fn http1_session(&self, stream: Stream, shutdown: &ShutdownWatch) -> ServerSession {
        let mut session = ServerSession::new_http1(stream);
        // Without this Pingora closes a connection whose client sent the next request before
        // the answer to this one, and that request is lost (RFC 9112 §9.3.2 allows it, but
        // weir's own loop answers pipelined requests in order, and so does nginx).
        session.set_pipelining_enabled(true);
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(CLIENT_IDLE_TIMEOUT.as_secs()));
        }
        session.set_keepalive_reuses_remaining(
            self.inner
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        session
    }
}

impl<A: HttpServerApp + ServerApp + Send + Sync + 'static> Parker for ConnectionGate<A> {
    fn resume(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let slot = Slot::counted(&self.stats);
        tokio::spawn(self.connection(stream, shutdown, slot, true));
    }

    fn closed(&self) {
        drop(Slot::counted(&self.stats));
    }
}

#[async_trait]
impl<A: HttpServerApp + ServerApp + Send + Sync + 'static> ServerApp for ConnectionGate<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Called once per connection, on the task Pingora spawned for its handshake.
        let (slot, open) = Slot::take(&self.stats);
        if open > self.max_connections {
            self.stats.refused.inc();
            let mut answer = BytesMut::new();
            if let Ok(resp) = plain_response(503, FULL) {
                http1_answer(&resp, FULL, false, false, &mut answer);
            }
            let _ = stream.write_all(&answer).await;
            let _ = stream.shutdown().await;
            return None;
        }
        tokio::spawn(Arc::clone(self).connection(stream, shutdown.clone(), slot, false));
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::apps::ReusedHttpStream;
    use tokio::io::AsyncReadExt;

    async fn accepted_connection() -> std::io::Result<(tokio::net::TcpStream, Stream)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (accepted, _) = listener.accept().await?;
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(accepted));
        Ok((client, stream))
    }

    /// Handles every request by panicking (a bug in the request path), counting them.
    #[derive(Default)]
    struct PanickingApp(AtomicUsize);

    #[async_trait]
    impl HttpServerApp for PanickingApp {
        #[allow(clippy::panic)]
        async fn process_new_http(
            self: &Arc<Self>,
            _session: ServerSession,
            _shutdown: &ShutdownWatch,
        ) -> Option<ReusedHttpStream> {
            self.0.fetch_add(1, Ordering::Relaxed);
            panic!("injected panic while handling a request")
        }
    }

    /// A panic while serving a request ends that connection's task only (each connection
    /// runs in a task of its own and weir unwinds; Cargo.toml): the connection's
    /// `--max-connections` slot is given back, so the next connection is served, not refused.
    #[tokio::test]
    async fn a_panic_while_serving_a_request_gives_its_connection_slot_back(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let metrics = Metrics::new()?;
        let stats = Arc::new(GateStats::new(&metrics));
        let core = WeirProxy::new(
            Arc::new(crate::routes::routing::LiveRouting::new()),
            metrics.clone(),
            Arc::new(crate::request::telemetry::Telemetry::disabled()),
            Default::default(),
        );
        let gate = Arc::new(ConnectionGate::new(
            PanickingApp::default(),
            core,
            None,
            1,
            Duration::ZERO,
            Arc::clone(&stats),
        ));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        for connection in 1..=3 {
            let (mut client, stream) = accepted_connection().await?;
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
                .await?;
            assert!(gate.process_new(stream, &shutdown).await.is_none());
            // The connection's task reaches the handler, panics and ends (bounded wait).
            let mut closed = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut closed)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "connection {connection} was not closed by its task's end: {read:?}"
            );
            assert_eq!(
                gate.inner.0.load(Ordering::Relaxed),
                connection,
                "reached the handler"
            );
            assert_eq!(stats.open.load(Ordering::Relaxed), 0);
            assert_eq!(stats.refused.get(), 0);
        }
        Ok(())
    }
}
