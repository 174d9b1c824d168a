//! [`OneRequest`]: an HTTP/1 client connection as Pingora's proxy reads it — exactly one
//! request, its body checked before Pingora sees a byte of it.
//!
//! The gate reads every HTTP/1 request head itself and frames it strictly
//! ([`crate::http::h1::classify`]). A request it hands to Pingora is read through this
//! stream, which passes on the head and then exactly the body the head frames:
//! `Content-Length` bytes, or a chunked body checked by weir's strict decoder
//! ([`crate::http::chunked`]) as it arrives. Pingora's own chunked reader is lenient (it takes
//! an empty size line for the last chunk, and reads the bytes after it as the next request),
//! so it never sees body bytes weir has not checked, and never reads past the request: the
//! next request's bytes stay here, and the gate reads and checks that head itself when
//! Pingora hands the connection back ([`OneRequest::into_parts`]).
//!
//! A body that breaks the framing ends the stream with an `InvalidData` error where it
//! breaks: Pingora fails the request (400 before any response), the upstream connection is
//! not reused, and the client connection is closed.
//!
//! Must not: change a byte (Pingora frames what it forwards from what it reads).

use crate::http::chunked::{BrokenBody, ChunkedDecoder};
use crate::http::h1::{RequestBody, RequestFraming};
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes of the next request read while Pingora still serves this one (it reads the client
/// while it waits for the upstream, to notice a close): beyond this, reading pauses.
const MAX_HELD_AHEAD: usize = 64 * 1024;
/// Read size from the client.
const READ_SIZE: usize = 16 * 1024;

/// What of the request is still to be passed on.
#[derive(Debug)]
enum Rest {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// After an upgrade request's head: whatever the protocols exchange.
    Tunnel,
    Done,
}

/// The client stream for one request served by Pingora (see the module doc).
#[derive(Debug)]
pub(crate) struct OneRequest {
    inner: Stream,
    /// Bytes read from the client and not yet passed on, starting with the head.
    held: BytesMut,
    /// How many bytes at the front of `held` are checked and may be passed on.
    cleared: usize,
    /// Head bytes not yet cleared.
    head_left: usize,
    rest: Rest,
    /// Why the body broke its framing, once it did.
    broken: Option<&'static str>,
    /// The client closed its sending side (after this request).
    client_sent_all: bool,
}

impl OneRequest {
    /// `received` holds what was read of the connection so far, from the request's first
    /// byte; `framing` is its head's.
    pub(crate) fn new(inner: Stream, received: BytesMut, framing: RequestFraming) -> Self {
        let rest = match framing.body {
            RequestBody::None => Rest::Done,
            RequestBody::Length(len) => Rest::Length(len),
            RequestBody::Chunked => Rest::Chunked(ChunkedDecoder::default()),
            RequestBody::Tunnel => Rest::Tunnel,
        };
        let mut one = OneRequest {
            inner,
            held: received,
            cleared: 0,
            head_left: framing.head_len,
            rest,
            broken: None,
            client_sent_all: false,
        };
        one.clear();
        one
    }

    /// Whether the whole request was read (so the connection may carry another).
    pub(crate) fn request_done(&self) -> bool {
        matches!(self.rest, Rest::Done) && self.head_left == 0 && self.cleared == 0
    }

    /// The client connection and the bytes read past this request (the next one's start).
    pub(crate) fn into_parts(self) -> (Stream, BytesMut) {
        (self.inner, self.held)
    }

    /// Checks the held bytes that are not cleared yet, as far as the framing allows.
    fn clear(&mut self) {
        while self.cleared < self.held.len() && self.broken.is_none() {
            let unchecked = &self.held[self.cleared..];
            if self.head_left > 0 {
                let n = self.head_left.min(unchecked.len());
                self.head_left -= n;
                self.cleared += n;
                continue;
            }
            match &mut self.rest {
                Rest::Length(left) => {
                    let n = (*left).min(unchecked.len() as u64);
                    *left -= n;
                    self.cleared += n as usize;
                    if *left == 0 {
                        self.rest = Rest::Done;
                    }
                }
                Rest::Chunked(decoder) => match decoder.decode(unchecked, |_| {}) {
                    Ok(n) => {
                        self.cleared += n;
                        if decoder.is_done() {
                            self.rest = Rest::Done;
                        }
                    }
                    Err(reason) => self.broken = Some(reason),
                },
                Rest::Tunnel => self.cleared = self.held.len(),
                Rest::Done => return,
            }
        }
    }

    /// Reads more of the client into `held`; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.held.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.held)
    }
}

impl AsyncRead for OneRequest {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.cleared > 0 {
                let n = this.cleared.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.advance(n);
                this.cleared -= n;
                return Poll::Ready(Ok(()));
            }
            if let Some(reason) = this.broken {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    BrokenBody(reason),
                )));
            }
            if matches!(this.rest, Rest::Done) && this.head_left == 0 {
                // The request is through: what follows is the next one's, for the gate.
                // Pingora reads on beside its wait for the upstream, to learn of the client
                // going away: a reset (an error) is passed on, but not the end of the
                // client's sending side, which only says it sends no more requests, not that
                // it wants no answer (weir's own engine answers it too). That read then just
                // never completes.
                if this.held.len() >= MAX_HELD_AHEAD || this.client_sent_all {
                    return Poll::Pending;
                }
                if ready!(this.poll_fill(cx))? == 0 {
                    this.client_sent_all = true;
                    return Poll::Pending;
                }
                continue;
            }
            if ready!(this.poll_fill(cx))? == 0 {
                return Poll::Ready(Ok(())); // closed inside the request: Pingora's error
            }
            this.clear();
        }
    }
}

impl AsyncWrite for OneRequest {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// What Pingora asks of a connection, answered by the client connection underneath.

#[async_trait]
impl Shutdown for OneRequest {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for OneRequest {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for OneRequest {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for OneRequest {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for OneRequest {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for OneRequest {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

/// Peeking would show bytes past the checked ones: not offered (Pingora then reads).
#[async_trait]
impl Peek for OneRequest {}
