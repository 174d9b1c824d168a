//! Hands the requests of weir's own HTTP/2 server ([`crate::engine::own::h2_server`]) that the direct
//! path does not take — streamed or large bodies, gRPC, CONNECT, TLS or h2 upstreams — to
//! Pingora's proxy, as a session of Pingora's own: [`PingoraStream`] implements Pingora's
//! custom server session over an [`H2Stream`], so Pingora reads the request and writes the
//! response through weir's connection, with no second HTTP/2 hop.
//!
//! It does what Pingora's HTTP/2 server session does (`pingora-core`'s `v2::server`): the
//! request head as an `http` request, body reads counted and kept for retries (64 KiB),
//! response heads without HTTP/1.1's connection fields and with `date`, informational
//! responses dropped, bodies written as the client's window allows, trailers, and a reset
//! when Pingora gives up part-way. The session reports the client connection's digests, so
//! Pingora sees the client's address and whether it came over TLS.
//!
//! Must not: decide anything about the request (Pingora's proxy runs every phase), or queue
//! more than [`STREAM_HIGH_WATER`] of response body per stream.

use crate::engine::own::h2_server::{H2Stream, STREAM_HIGH_WATER};
use crate::http::fields::CONNECTION_SCOPED;
use crate::request::timeouts::CLIENT_IDLE_TIMEOUT;
use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Uri};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::body_buffer::FixedBuffer;
use pingora::protocols::http::custom::server::Session as CustomSession;
use pingora::protocols::http::custom::CustomMessageWrite;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::http::HttpTask;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{Digest, SocketDigest};
use pingora::{Error, ErrorType, Result};
use std::sync::Arc;
use std::time::Duration;
use weir_http2::conn::RequestHead;
use weir_http2::frame::ErrorCode;

/// Request body kept for a retry, as Pingora's own sessions keep it.
const RETRY_BUFFER_LIMIT: usize = 64 * 1024;

/// The digests of the client connection, which every session of it reports.
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

    fn digest(&self) -> Digest {
        Digest {
            ssl_digest: self.ssl.clone(),
            timing_digest: Vec::new(),
            proxy_digest: self.proxy.clone(),
            socket_digest: self.socket.clone(),
        }
    }
}

/// One stream of weir's HTTP/2 server as Pingora's proxy serves it.
pub(crate) struct PingoraStream {
    stream: H2Stream,
    request: RequestHeader,
    digest: Digest,
    /// No more request body: the client ended it (or sent none), or it was drained.
    body_done: bool,
    body_read: usize,
    retry_buffer: Option<FixedBuffer>,
    response: Option<Box<ResponseHeader>>,
    /// The response is complete (its end is queued).
    ended: bool,
    body_sent: usize,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    drain_timeout: Option<Duration>,
}

impl PingoraStream {
    /// The session for `stream` and its request head, or the reason the head cannot be an
    /// `http` request (answered 400 by the caller).
    pub(crate) fn new(
        stream: H2Stream,
        head: &RequestHead,
        end_stream: bool,
        digests: &ConnectionDigests,
    ) -> std::result::Result<Self, (H2Stream, &'static str)> {
        let request = match http_request(head) {
            Ok(request) => RequestHeader::from(request.into_parts().0),
            Err(reason) => return Err((stream, reason)),
        };
        Ok(PingoraStream {
            stream,
            request,
            digest: digests.digest(),
            body_done: end_stream,
            body_read: 0,
            retry_buffer: None,
            response: None,
            ended: false,
            body_sent: 0,
            read_timeout: None,
            write_timeout: None,
            drain_timeout: None,
        })
    }

    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.body_done {
                return Ok(None);
            }
            match self.stream.data().await {
                Ok(Some((data, last))) => {
                    self.body_done = last;
                    // The end alone comes as an empty piece: not a piece for Pingora.
                    if data.is_empty() {
                        continue;
                    }
                    self.body_read += data.len();
                    if let Some(buffer) = self.retry_buffer.as_mut() {
                        buffer.write_to_buffer(&data);
                    }
                    return Ok(Some(data));
                }
                // Complete; trailers, if any, are not forwarded (nor are they by Pingora's
                // own HTTP/2 session).
                Ok(None) => self.body_done = true,
                Err(code) => {
                    return Error::e_explain(
                        ErrorType::ReadError,
                        format!("client reset the stream during the request body: {code}"),
                    )
                    .map_err(|e| e.into_down())
                }
            }
        }
    }

    /// Waits until the queued response body is below `limit` (0: all of it out), within the
    /// write timeout; without one, as long as the direct path waits for a client that does not
    /// read ([`CLIENT_IDLE_TIMEOUT`]), so such a client cannot hold a stream and its upstream
    /// request for ever.
    async fn writable(&self, limit: usize) -> Result<()> {
        let t = self.write_timeout.unwrap_or(CLIENT_IDLE_TIMEOUT);
        match tokio::time::timeout(t, self.stream.writable(limit)).await {
            Ok(result) => result.map_err(|_| stream_reset()),
            Err(_) => Error::e_explain(
                ErrorType::WriteTimedout,
                format!("writing the HTTP/2 response, timeout: {t:?}"),
            )
            .map_err(|e| e.into_down()),
        }
    }

    fn write_head(&mut self, mut head: Box<ResponseHeader>, end: bool) -> Result<()> {
        if self.ended || head.status.is_informational() {
            // One final head per stream: 1xx heads are not relayed, as by Pingora's session.
            return Ok(());
        }
        if self.response.is_some() {
            tracing::warn!("response head already sent on this HTTP/2 stream");
            return Ok(());
        }
        head.insert_header(header::DATE, get_cached_date())?;
        // Connection-specific fields cannot be sent over HTTP/2 (RFC 9113 §8.2.2).
        for name in CONNECTION_SCOPED {
            head.remove_header(name);
        }
        self.stream
            .send_headers(end, |e, out| {
                e.status(head.status.as_u16(), out);
                for (name, value) in &head.headers {
                    e.field(name.as_str().as_bytes(), value.as_bytes(), out);
                }
            })
            .map_err(|_| stream_reset())?;
        self.response = Some(head);
        self.ended = end;
        Ok(())
    }

    async fn write_data(&mut self, data: Bytes, end: bool) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        if self.response.is_none() {
            return Error::e_explain(ErrorType::H2Error, "response body before its head");
        }
        if data.is_empty() && !end {
            return Ok(());
        }
        let len = data.len();
        self.stream
            .send_data(data, end)
            .map_err(|_| stream_reset())?;
        self.body_sent += len;
        self.ended = end;
        if !end {
            self.writable(STREAM_HIGH_WATER).await?;
        }
        Ok(())
    }

    fn write_trailer_fields(&mut self, trailers: &HeaderMap) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        if self.response.is_none() {
            return Error::e_explain(ErrorType::H2Error, "response trailers before the head");
        }
        self.stream
            .send_trailers(|e, out| {
                for (name, value) in trailers {
                    e.field(name.as_str().as_bytes(), value.as_bytes(), out);
                }
            })
            .map_err(|_| stream_reset())?;
        self.ended = true;
        Ok(())
    }
}

#[async_trait]
impl CustomSession for PingoraStream {
    fn req_header(&self) -> &RequestHeader {
        &self.request
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.request
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        match self.read_timeout {
            Some(t) => match tokio::time::timeout(t, self.read_body()).await {
                Ok(result) => result,
                Err(_) => Error::e_explain(
                    ErrorType::ReadTimedout,
                    format!("reading the HTTP/2 request body, timeout: {t:?}"),
                )
                .map_err(|e| e.into_down()),
            },
            None => self.read_body().await,
        }
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        let drain_timeout = self.drain_timeout;
        let drain = async {
            while self.read_body().await?.is_some() {}
            Ok(())
        };
        match drain_timeout {
            Some(t) => match tokio::time::timeout(t, drain).await {
                Ok(result) => result,
                Err(_) => Error::e_explain(
                    ErrorType::ReadTimedout,
                    format!("draining the HTTP/2 request body, timeout: {t:?}"),
                ),
            },
            None => drain.await,
        }
    }

    async fn write_response_header(&mut self, resp: Box<ResponseHeader>, end: bool) -> Result<()> {
        self.write_head(resp, end)
    }

    async fn write_response_header_ref(&mut self, resp: &ResponseHeader, end: bool) -> Result<()> {
        self.write_head(Box::new(resp.clone()), end)
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        self.write_data(data, end).await
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        self.write_trailer_fields(&trailers)
    }

    async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        let mut end_stream = false;
        for task in tasks {
            let end = match task {
                HttpTask::Header(head, end) => {
                    self.write_head(head, end)?;
                    end
                }
                HttpTask::Body(Some(data), end) => {
                    self.write_data(data, end).await?;
                    end
                }
                HttpTask::Body(None, end) => end,
                HttpTask::UpgradedBody(..) => {
                    // An HTTP/1.1 upstream switched protocols under an HTTP/2 request.
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "upgraded body on an HTTP/2 stream",
                    );
                }
                HttpTask::Trailer(Some(trailers)) => {
                    self.write_trailer_fields(&trailers)?;
                    true
                }
                HttpTask::Trailer(None) | HttpTask::Done => true,
                HttpTask::Failed(e) => return Err(e),
            };
            end_stream |= end;
        }
        if end_stream {
            self.finish().await?;
        }
        Ok(end_stream)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    fn get_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    fn get_write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    fn set_total_drain_timeout(&mut self, timeout: Option<Duration>) {
        self.drain_timeout = timeout;
    }

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        self.drain_timeout
    }

    fn request_summary(&self) -> String {
        format!(
            "{} {}, Host: {}",
            self.request.method,
            self.request.uri.path_and_query().map_or("", |p| p.as_str()),
            self.request.uri.authority().map_or("", |a| a.as_str())
        )
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_deref()
    }

    async fn shutdown(&mut self, code: u32, _ctx: &str) {
        if !self.ended {
            let code = if code == 0 {
                ErrorCode::INTERNAL_ERROR
            } else {
                ErrorCode(code)
            };
            self.stream.reset(code);
            self.ended = true;
        }
    }

    async fn abandon(&mut self, ctx: &str) {
        // An abandoned response must not read as a complete one.
        self.shutdown(ErrorCode::INTERNAL_ERROR.0, ctx).await;
    }

    fn is_body_done(&mut self) -> bool {
        self.body_done
    }

    async fn finish(&mut self) -> Result<()> {
        if !self.ended && self.response.is_some() {
            self.write_data(Bytes::new(), true).await?;
        }
        if self.ended && self.response.is_some() {
            // The stream keeps its slot until the client has the whole response.
            self.writable(0).await?;
        }
        Ok(())
    }

    fn is_body_empty(&mut self) -> bool {
        self.body_read == 0
            && (self.body_done
                || self
                    .request
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|len| len.as_bytes() == b"0"))
    }

    async fn read_body_or_idle(&mut self, no_body_expected: bool) -> Result<Option<Bytes>> {
        if no_body_expected || self.body_done {
            let code = self.stream.closed().await;
            return Error::e_explain(
                ErrorType::H2Error,
                format!("client closed the HTTP/2 stream: {code}"),
            )
            .map_err(|e| e.into_down());
        }
        self.read_body_bytes().await
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body_read
    }

    fn digest(&self) -> Option<&Digest> {
        Some(&self.digest)
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        Some(&mut self.digest)
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        self.digest.socket_digest.as_ref()?.peer_addr()
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        self.digest.socket_digest.as_ref()?.local_addr()
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        // For Pingora's subrequests, which weir does not make: the request line and fields
        // as HTTP/1.1 would carry them.
        let mut raw = format!(
            "{} {} HTTP/1.1\r\n",
            self.request.method,
            self.request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
        )
        .into_bytes();
        for (name, value) in &self.request.headers {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(value.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        Bytes::from(raw)
    }

    fn enable_retry_buffering(&mut self) {
        if self.retry_buffer.is_none() {
            self.retry_buffer = Some(FixedBuffer::new(RETRY_BUFFER_LIMIT));
        }
    }

    fn retry_buffer_truncated(&self) -> bool {
        self.retry_buffer
            .as_ref()
            .is_some_and(FixedBuffer::is_truncated)
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        self.retry_buffer
            .as_ref()
            .filter(|b| !b.is_truncated())
            .and_then(FixedBuffer::get_buffer)
    }

    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(
        &mut self,
    ) -> Option<Box<dyn Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>> {
        None
    }

    fn restore_custom_message_reader(
        &mut self,
        _reader: Box<dyn Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>,
    ) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(
        &mut self,
        _writer: Box<dyn CustomMessageWrite>,
    ) -> Result<()> {
        Ok(())
    }
}

/// The error for a write to a stream the client reset (or whose connection is gone).
fn stream_reset() -> pingora::BError {
    Error::explain(ErrorType::WriteError, "client reset the HTTP/2 stream").into_down()
}

/// The `http` request for `head` (without its body), as Pingora's HTTP/2 session makes it.
fn http_request(head: &RequestHead) -> std::result::Result<Request<()>, &'static str> {
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
