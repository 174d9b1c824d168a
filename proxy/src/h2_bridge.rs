//! Carries the requests of weir's own HTTP/2 server ([`crate::h2_server`]) that the direct
//! path does not take — bodies, gRPC, CONNECT, TLS or h2 upstreams — to Pingora's proxy,
//! over an HTTP/2 connection inside the process ([`Bridge`]).
//!
//! Why a connection: Pingora's HTTP/2 session can only be made from an `h2` server
//! connection, so these streams reach Pingora the way a client's would, through a
//! `tokio::io::duplex` pipe: weir's side is an `h2` client, Pingora's side is served by
//! [`crate::h2_streams`] exactly as a client connection is. The pipe carries the client
//! connection's socket and TLS digests, so Pingora sees the client's address and whether
//! it came over TLS. One pipe per client connection, opened for its first such request.
//!
//! Each request is relayed as it comes: the head, the body in both directions with each
//! side's flow control, trailers, and resets either way (the client resetting its stream
//! resets the bridged one, which ends Pingora's request).
//!
//! Must not: change what is relayed (Pingora's proxy does every phase), or buffer a body
//! beyond the windows of the two connections.

use crate::h2_server::{H2Stream, STREAM_HIGH_WATER};
use crate::h2_streams;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use pingora::apps::HttpServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::Mutex;
use weir_http2::conn::RequestHead;

/// The pipe's buffer each way.
const PIPE_BUFFER: usize = 256 * 1024;

/// What the client connection's bridge is made with.
pub(crate) struct BridgeSetup<A> {
    pub(crate) app: Arc<A>,
    pub(crate) digests: ConnectionDigests,
    pub(crate) shutdown: ShutdownWatch,
}

/// The digests of the client connection, which Pingora's side of the pipe reports.
#[derive(Clone, Default)]
pub(crate) struct ConnectionDigests {
    pub(crate) ssl: Option<Arc<SslDigest>>,
    pub(crate) socket: Option<Arc<SocketDigest>>,
    pub(crate) proxy: Option<Arc<ProxyDigest>>,
}

impl ConnectionDigests {
    pub(crate) fn client_addr(&self) -> Option<&SocketAddr> {
        self.socket.as_ref()?.peer_addr()
    }
}

/// One client connection's way to Pingora, opened for its first request that needs it.
pub(crate) struct Bridge<A> {
    setup: BridgeSetup<A>,
    /// The pipe's `h2` client, once opened. Async-locked: the first request opens it while
    /// the others wait.
    sender: Mutex<Option<h2::client::SendRequest<Bytes>>>,
}

impl<A: HttpServerApp + Send + Sync + 'static> Bridge<A> {
    pub(crate) fn new(setup: BridgeSetup<A>) -> Self {
        Bridge {
            setup,
            sender: Mutex::new(None),
        }
    }

    /// A client of the pipe that is ready for a request. A pipe that Pingora's side closed
    /// (its own budget of refused streams, say) is replaced, so one failure does not fail
    /// every later request of the connection.
    async fn ready_sender(&self) -> Result<h2::client::SendRequest<Bytes>, h2::Error> {
        let mut sender = self.sender.lock().await;
        if let Some(open) = sender.clone() {
            match open.ready().await {
                Ok(ready) => return Ok(ready),
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/2 bridge to the proxy closed; reopening")
                }
            }
        }
        let opened = self.open().await?;
        *sender = Some(opened.clone());
        opened.ready().await
    }

    /// Opens the pipe: Pingora serves one end as it serves a client connection, an `h2`
    /// client drives the other.
    async fn open(&self) -> Result<h2::client::SendRequest<Bytes>, h2::Error> {
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        let theirs: pingora::protocols::Stream = Box::new(PipeEnd {
            io: theirs,
            digests: self.setup.digests.clone(),
        });
        let app = Arc::clone(&self.setup.app);
        let shutdown = self.setup.shutdown.clone();
        tokio::spawn(async move {
            let options = app.h2_options();
            h2_streams::serve_connection(theirs, options, &shutdown, |session| {
                let app = Arc::clone(&app);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let session = ServerSession::new_http2(session);
                    app.process_new_http(session, &shutdown).await;
                });
                None::<std::future::Ready<()>>
            })
            .await;
        });
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_HIGH_WATER as u32)
            .initial_connection_window_size(PIPE_BUFFER as u32)
            .max_concurrent_reset_streams(1024)
            .handshake::<_, Bytes>(ours)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/2 bridge to the proxy ended");
            }
        });
        Ok(sender)
    }

    /// Relays one request and its response. Failures before the response started are
    /// answered (400 for a request the `http` crate refuses, 502 when the bridge fails);
    /// after, the stream is reset.
    pub(crate) async fn relay(&self, stream: H2Stream, head: RequestHead, end_stream: bool) {
        let request = match bridged_request(&head) {
            Ok(request) => request,
            Err(reason) => {
                tracing::debug!(reason, "HTTP/2 request not relayed");
                stream.answer(400, "bad request\n");
                return;
            }
        };
        let sent = async {
            let mut sender = self.ready_sender().await?;
            sender.send_request(request, end_stream)
        };
        let (response, body_out) = match sent.await {
            Ok(sent) => sent,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP/2 bridge to the proxy failed");
                stream.answer(502, "bad gateway\n");
                return;
            }
        };
        let upload = async {
            if !end_stream {
                upload_body(&stream, body_out).await;
            }
            // The response may still be coming: wait for it.
            std::future::pending::<()>().await;
        };
        let download = download_response(&stream, response);
        tokio::select! {
            () = upload => {}
            () = download => {}
        }
    }
}

/// The `http` request Pingora's side gets for `head` (without its body).
fn bridged_request(head: &RequestHead) -> Result<Request<()>, &'static str> {
    let authority = head
        .authority
        .clone()
        .or_else(|| head.field(b"host").cloned())
        .unwrap_or_else(|| Bytes::from_static(b"localhost"));
    let mut uri = Uri::builder().authority(authority.as_ref());
    if let Some(path) = &head.path {
        uri = uri
            .scheme(head.scheme.as_deref().unwrap_or(b"http"))
            .path_and_query(path.as_ref());
    }
    let uri = uri.build().map_err(|_| "invalid target")?;
    let mut headers = HeaderMap::with_capacity(head.fields.len());
    for f in &head.fields {
        let name = HeaderName::from_bytes(&f.name).map_err(|_| "invalid field name")?;
        let value =
            HeaderValue::from_maybe_shared(f.value.clone()).map_err(|_| "invalid field value")?;
        headers.append(name, value);
    }
    let mut request = Request::builder()
        .method(head.method.as_ref())
        .uri(uri)
        .version(http::Version::HTTP_2)
        .body(())
        .map_err(|_| "invalid method")?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Relays the client's request body (and trailers) to the bridged stream, as each side's
/// window allows. A client reset resets the bridged stream.
async fn upload_body(stream: &H2Stream, mut out: h2::SendStream<Bytes>) {
    loop {
        match stream.data().await {
            Ok(Some((mut chunk, last))) => {
                while !chunk.is_empty() {
                    out.reserve_capacity(chunk.len());
                    let granted = match std::future::poll_fn(|cx| out.poll_capacity(cx)).await {
                        Some(Ok(n)) if n > 0 => n,
                        Some(Ok(_)) => continue,
                        _ => return, // the bridged stream is gone; the response says why
                    };
                    let piece = chunk.split_to(granted.min(chunk.len()));
                    // The body's end rides on its last bytes when it is known by then
                    // (one frame fewer than an empty one of its own).
                    if out.send_data(piece, last && chunk.is_empty()).is_err() {
                        return;
                    }
                }
                if last {
                    return;
                }
            }
            Ok(None) => {
                let ended = match stream.trailers() {
                    Some(fields) => {
                        let mut map = HeaderMap::with_capacity(fields.len());
                        for f in fields {
                            if let (Ok(name), Ok(value)) = (
                                HeaderName::from_bytes(&f.name),
                                HeaderValue::from_maybe_shared(f.value),
                            ) {
                                map.append(name, value);
                            }
                        }
                        out.send_trailers(map)
                    }
                    None => out.send_data(Bytes::new(), true),
                };
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "bridged request body not ended");
                }
                return;
            }
            Err(code) => {
                out.send_reset(h2::Reason::from(code.0));
                return;
            }
        }
    }
}

/// Relays the bridged response to the client's stream: head, body as the client's window
/// allows, trailers. A client reset drops the bridged stream (which resets it).
async fn download_response(stream: &H2Stream, response: h2::client::ResponseFuture) {
    let response = match response.await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(error = %e, "bridged request failed");
            if !stream.is_reset() {
                stream.answer(502, "bad gateway\n");
            }
            return;
        }
    };
    let (parts, mut body) = response.into_parts();
    let end = body.is_end_stream();
    let head_sent = stream.send_headers(end, |e, out| {
        e.status(parts.status.as_u16(), out);
        for (name, value) in &parts.headers {
            e.field(name.as_str().as_bytes(), value.as_bytes(), out);
        }
    });
    if head_sent.is_err() || end {
        let _ = stream.writable(0).await;
        return;
    }
    while let Some(chunk) = body.data().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::debug!(error = %e, "bridged response body failed");
                return; // the stream is reset when it drops, unfinished
            }
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        let end = body.is_end_stream();
        if stream.send_data(chunk, end).is_err() {
            return;
        }
        if end {
            let _ = stream.writable(0).await;
            return;
        }
        if stream.writable(STREAM_HIGH_WATER).await.is_err() {
            return;
        }
    }
    match body.trailers().await {
        Ok(Some(trailers)) => {
            let _ = stream.send_trailers(|e, out| {
                for (name, value) in &trailers {
                    e.field(name.as_str().as_bytes(), value.as_bytes(), out);
                }
            });
        }
        Ok(None) => {
            let _ = stream.send_data(Bytes::new(), true);
        }
        Err(e) => {
            tracing::debug!(error = %e, "bridged response trailers failed");
            return;
        }
    }
    let _ = stream.writable(0).await;
}

/// Pingora's end of the pipe: the pipe, reporting the client connection's digests.
#[derive(Debug)]
struct PipeEnd {
    io: DuplexStream,
    digests: ConnectionDigests,
}

impl std::fmt::Debug for ConnectionDigests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionDigests")
            .field("tls", &self.ssl.is_some())
            .field("client", &self.client_addr())
            .finish()
    }
}

impl AsyncRead for PipeEnd {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[async_trait::async_trait]
impl Shutdown for PipeEnd {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.io).await;
    }
}

impl UniqueID for PipeEnd {
    fn id(&self) -> UniqueIDType {
        0
    }
}

impl Ssl for PipeEnd {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.digests.ssl.clone()
    }
}

impl GetTimingDigest for PipeEnd {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for PipeEnd {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.digests.proxy.clone()
    }
}

impl GetSocketDigest for PipeEnd {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.digests.socket.clone()
    }
}

impl Peek for PipeEnd {}
