//! weir's HTTP/2 server loop: drives one client connection with weir's own
//! codec ([`weir_http2`]) and hands each request to a callback, which returns the future
//! that serves it ([`H2Stream`] is its side of the stream).
//!
//! Why not the `h2` crate: under h2c load `h2` and the `http` maps it builds were ~25,000
//! of the ~43,800 instructions weir spent on a request (docs/benchmarks.md). This loop
//! reads into one buffer, lets the state machine turn it into requests, runs the streams'
//! futures on the connection's own task (a task each cost ~2,000 instructions a request),
//! and writes what they queued in one write.
//!
//! Like Pingora's own loop:
//! - at shutdown, GOAWAY, then the streams already opened are served until they are done;
//! - streams still running when the connection ends (the client went away, or a write
//!   failed) are run to their end: their writes fail, and they are logged and counted;
//! - reading stops while more than [`OUTPUT_HIGH_WATER`] bytes wait to be written, and
//!   streams with more body to send wait while the connection's output is that full, so a
//!   client that sends but does not read (PING or SETTINGS floods, large responses behind
//!   windows it opened) is held to about twice that much memory;
//! - a connection without a request for its idle timeout (the caller's: the client idle
//!   timeout of [`crate::request::timeouts`]) is sent GOAWAY and closed (also one that never sends its
//!   preface), so idle clients cannot hold connections forever. It is checked once per
//!   period, so an idle connection goes after one to two periods.
//!
//! Must not: read or answer requests (the callback's), or hold the stream table's lock
//! across an await.

use crate::engine::own::idle_read::poll_read_idle;
use crate::engine::own::lingering_close::lingering_close;
use crate::request::answers::{http2_answer_head, plain_response};
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use weir_http2::conn::{Event, RequestHead, ServerConnection, Settings, StreamClosed};
use weir_http2::frame::ErrorCode;
use weir_http2::hpack::{Encoder, Field};

/// Output bytes past which the loop stops reading from the client.
pub(crate) const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Room made for each read from the client: a request's frames are small, and an idle
/// connection keeps its buffer (uploads grow it as they need).
const READ_BUFFER: usize = 4096;
/// A stream's queued response bytes past which its sender waits ([`H2Stream::send_data`]
/// callers await [`H2Stream::writable`]).
pub(crate) const STREAM_HIGH_WATER: usize = 64 * 1024;

/// What a request needs to be served: its side of the stream and its head.
pub(crate) struct NewRequest {
    pub(crate) stream: H2Stream,
    pub(crate) head: RequestHead,
    /// No body follows.
    pub(crate) end_stream: bool,
}

/// The connection and what its streams wait on, shared by the loop and the streams.
struct Shared {
    conn: ServerConnection,
    slots: Vec<Slot>,
    /// Wakes the loop when a stream served elsewhere (another task) queued output.
    loop_waker: Option<Waker>,
    /// The loop is running (it will write what streams queue, so they need not wake it).
    in_loop: bool,
    /// The socket is gone: nothing queued now will be written.
    closed: bool,
    /// A stream waits for the connection's output to fall below [`OUTPUT_HIGH_WATER`].
    output_waiters: bool,
}

/// What one stream's server is told by the connection.
struct Slot {
    id: u32,
    body: std::collections::VecDeque<Bytes>,
    /// The request body ended (END_STREAM or trailers).
    body_done: bool,
    trailers: Option<Vec<Field>>,
    reset: Option<ErrorCode>,
    waker: Option<Waker>,
    /// The server waits for response data to go out ([`H2Stream::writable`]).
    wants_window: bool,
}

impl Shared {
    fn slot(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == id)
    }

    fn wake_stream(&mut self, id: u32) {
        if let Some(waker) = self.slot(id).and_then(|s| s.waker.take()) {
            waker.wake();
        }
    }

    /// A stream queued output: the loop writes it (woken if it is not running).
    fn output_queued(&mut self) {
        if !self.in_loop {
            if let Some(waker) = self.loop_waker.take() {
                waker.wake();
            }
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves the state as it was: every update under it is
    // complete before anything that can panic.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One stream, as the future serving it sees it. Dropping it releases the stream: a
/// response not finished by then is reset.
pub(crate) struct H2Stream {
    id: u32,
    shared: Arc<Mutex<Shared>>,
}

impl H2Stream {
    /// Queues the response head; `encode` writes the block, status first.
    pub(crate) fn send_headers(
        &self,
        end_stream: bool,
        encode: impl FnOnce(&Encoder, &mut BytesMut),
    ) -> Result<(), StreamClosed> {
        let mut shared = lock(&self.shared);
        if shared.closed {
            return Err(StreamClosed);
        }
        shared.conn.send_headers(self.id, end_stream, encode)?;
        shared.output_queued();
        Ok(())
    }

    /// Queues response body bytes; they go out as the client's windows allow.
    pub(crate) fn send_data(&self, data: Bytes, end_stream: bool) -> Result<(), StreamClosed> {
        let mut shared = lock(&self.shared);
        if shared.closed {
            return Err(StreamClosed);
        }
        shared.conn.send_data(self.id, data, end_stream)?;
        shared.output_queued();
        Ok(())
    }

    /// Queues response trailers, which end the stream.
    pub(crate) fn send_trailers(
        &self,
        encode: impl FnOnce(&Encoder, &mut BytesMut),
    ) -> Result<(), StreamClosed> {
        let mut shared = lock(&self.shared);
        if shared.closed {
            return Err(StreamClosed);
        }
        shared.conn.send_trailers(self.id, encode)?;
        shared.output_queued();
        Ok(())
    }

    /// Waits until fewer than `limit` response bytes wait for the client's window: 0 waits
    /// until the whole response is in the output. `Err` when the stream was reset or the
    /// connection is gone.
    pub(crate) async fn writable(&self, limit: usize) -> Result<(), StreamClosed> {
        std::future::poll_fn(|cx| {
            let mut shared = lock(&self.shared);
            if shared.closed {
                return Poll::Ready(Err(StreamClosed));
            }
            if shared.slot(self.id).is_some_and(|s| s.reset.is_some()) {
                return Poll::Ready(Err(StreamClosed));
            }
            let waiting = shared.conn.queued(self.id);
            // More body to come also waits while the connection's output is full: a client
            // that opens its windows but does not read would otherwise have it grow without
            // end.
            let output_full = limit != 0 && shared.conn.output().len() >= OUTPUT_HIGH_WATER;
            let done = if limit == 0 {
                shared.conn.response_sent(self.id)
            } else {
                waiting < limit && !output_full
            };
            if done {
                return Poll::Ready(Ok(()));
            }
            shared.output_waiters |= output_full;
            if let Some(slot) = shared.slot(self.id) {
                slot.waker = Some(cx.waker().clone());
                slot.wants_window = true;
            }
            Poll::Pending
        })
        .await
    }

    /// The next piece of the request body, and whether it is the last one (the body is
    /// complete with it and no trailers follow): `None` once the body is complete (trailers,
    /// if any, then come from [`Self::trailers`]), `Err` when the stream was reset.
    pub(crate) async fn data(&self) -> Result<Option<(Bytes, bool)>, ErrorCode> {
        std::future::poll_fn(|cx| {
            let mut shared = lock(&self.shared);
            let closed = shared.closed;
            let Some(slot) = shared.slot(self.id) else {
                return Poll::Ready(Err(ErrorCode::CANCEL));
            };
            if let Some(data) = slot.body.pop_front() {
                let last = slot.body_done && slot.body.is_empty() && slot.trailers.is_none();
                let n = data.len();
                shared.conn.consumed(self.id, n);
                shared.output_queued();
                return Poll::Ready(Ok(Some((data, last))));
            }
            if let Some(code) = slot.reset {
                return Poll::Ready(Err(code));
            }
            if slot.body_done {
                return Poll::Ready(Ok(None));
            }
            if closed {
                return Poll::Ready(Err(ErrorCode::CANCEL));
            }
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Answers with a short plain-text response of weir's own (a failure before any
    /// response began).
    pub(crate) fn answer(&self, status: u16, body: &'static str) {
        let mut shared = lock(&self.shared);
        if !shared.closed {
            queue_answer(&mut shared.conn, self.id, status, body);
            shared.output_queued();
        }
    }

    /// Gives up on the response part-way: RST_STREAM with `code` (nothing when the response
    /// is complete).
    pub(crate) fn reset(&self, code: ErrorCode) {
        let mut shared = lock(&self.shared);
        if !shared.closed {
            shared.conn.reset(self.id, code);
            shared.output_queued();
        }
    }

    /// Waits until the client resets the stream or the connection is gone, with the reset's
    /// code (CANCEL for a lost connection).
    pub(crate) async fn closed(&self) -> ErrorCode {
        std::future::poll_fn(|cx| {
            let mut shared = lock(&self.shared);
            if shared.closed {
                return Poll::Ready(ErrorCode::CANCEL);
            }
            let Some(slot) = shared.slot(self.id) else {
                return Poll::Ready(ErrorCode::CANCEL);
            };
            if let Some(code) = slot.reset {
                return Poll::Ready(code);
            }
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        shared.slots.retain(|s| s.id != self.id);
        shared.conn.release(self.id);
        shared.output_queued();
    }
}

/// Serves one HTTP/2 connection whose client preface has not been read, until the client
/// closes it, an error ends it, it stays without a request for `idle_timeout` (one to two
/// of them), or after shutdown its streams are done. `on_request` gets
/// each request and returns the future that serves it on this task, or `None` when it
/// handed the request on (spawned it).
pub(crate) async fn serve_connection<S: Future<Output = ()>>(
    mut io: Stream,
    settings: Settings,
    idle_timeout: Duration,
    shutdown: &ShutdownWatch,
    mut on_request: impl FnMut(NewRequest) -> Option<S>,
) {
    let shared = Arc::new(Mutex::new(Shared {
        conn: ServerConnection::new(settings),
        slots: Vec::new(),
        loop_waker: None,
        in_loop: false,
        closed: false,
        output_waiters: false,
    }));
    let mut serving = FuturesUnordered::new();
    let mut read_buf = BytesMut::new();
    let mut write_buf = BytesMut::new();
    let mut shutdown = shutdown.clone();
    let mut shutdown_signal = std::pin::pin!(shutdown.changed());
    let mut stopping = false;
    // The socket can still be read and written.
    let mut open = true;
    // weir ended the connection (GOAWAY) while the client may still be sending.
    let mut ended_here = false;
    // Requests so far, and as many when the idle timer was last armed: a timer that fires
    // with no new request and none under way closes the connection. Counting keeps the
    // timer off the request path (it is re-armed at most once a period).
    let mut requests = 0u64;
    let mut requests_when_armed = 0u64;
    let mut idle = std::pin::pin!(tokio::time::sleep(idle_timeout));
    // The connection's output as the last read left it (not yet handed to the socket).
    let mut output_after_read = 0usize;
    std::future::poll_fn(|cx| {
        lock(&shared).in_loop = true;
        loop {
            let mut progress = false;
            if !stopping && shutdown_signal.as_mut().poll(cx).is_ready() {
                stopping = true;
                lock(&shared).conn.go_away();
            }
            // The streams first: what they queue is written below in the same pass.
            while let Poll::Ready(Some(())) = serving.poll_next_unpin(cx) {}
            if open {
                if write_buf.is_empty() {
                    // `write_out` takes all of the connection's output.
                    output_after_read = 0;
                }
                match write_out(&mut io, &shared, &mut write_buf, cx) {
                    Ok(wrote) => progress |= wrote,
                    Err(e) => {
                        tracing::debug!(error = %e, "HTTP/2 client write failed");
                        open = false;
                        close(&shared);
                        continue;
                    }
                }
            }
            let finished = {
                let mut shared = lock(&shared);
                shared.conn.is_finished() && shared.conn.output().is_empty()
            };
            if open && finished && write_buf.is_empty() {
                open = false;
                ended_here = true;
                close(&shared);
                continue;
            }
            // What streams queue is held to the mark by `H2Stream::writable`; what reading
            // queues (acknowledgements, answers of weir's own) is counted here.
            if open && write_buf.len() + output_after_read < OUTPUT_HIGH_WATER {
                match read_in(&mut io, &mut read_buf, cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        open = false;
                        close(&shared);
                        continue;
                    }
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        {
                            let mut guard = lock(&shared);
                            if let Err(e) = guard.conn.recv(&mut read_buf) {
                                tracing::debug!(error = %e, "HTTP/2 connection error");
                            }
                            output_after_read = guard.conn.output().len();
                        }
                        requests += dispatch(&shared, &mut serving, &mut on_request);
                    }
                    Poll::Pending => {}
                }
            }
            if !open && serving.is_empty() {
                return Poll::Ready(());
            }
            if !progress {
                let mut guard = lock(&shared);
                // A stream served on this task may have queued output after the write
                // above; another pass writes it rather than wait for a wake.
                if open && !guard.conn.output().is_empty() && write_buf.is_empty() {
                    continue;
                }
                // The idle timer is looked at only when the loop is about to wait: once a
                // poll rather than once a pass.
                if open && idle.as_mut().poll(cx).is_ready() {
                    if requests == requests_when_armed && guard.conn.open_streams() == 0 {
                        tracing::debug!("idle HTTP/2 connection closed");
                        guard.conn.go_away();
                    } else {
                        requests_when_armed = requests;
                    }
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + idle_timeout);
                    continue;
                }
                if serving.is_empty() && guard.conn.open_streams() == 0 && write_buf.is_empty() {
                    // Nothing under way: the connection waits holding only its state.
                    write_buf = BytesMut::new();
                    guard.conn.release_idle_memory();
                    if guard.slots.is_empty() {
                        guard.slots = Vec::new();
                    }
                }
                guard.in_loop = false;
                guard.loop_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
    })
    .await;
    if ended_here {
        lingering_close(&mut io).await;
    }
    // The socket is closed by dropping it (Pingora's shutdown would wait on the peer).
    drop(io);
}

/// Wakes the streams that wait for the output to shrink.
fn wake_output_waiters(guard: &mut MutexGuard<'_, Shared>) {
    guard.output_waiters = false;
    for slot in guard.slots.iter_mut().filter(|s| s.wants_window) {
        slot.wants_window = false;
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    }
}

/// The socket is gone: every stream still served is told so.
fn close(shared: &Mutex<Shared>) {
    let mut guard = lock(shared);
    guard.closed = true;
    let ids: Vec<u32> = guard.slots.iter().map(|s| s.id).collect();
    for id in ids {
        guard.wake_stream(id);
    }
}

/// Hands the connection's events to the streams: new requests to `on_request` (called
/// without the lock: it may drop the stream, which takes it), bodies and resets to their
/// stream's slot. Returns how many requests it handed on.
fn dispatch<S: Future<Output = ()>>(
    shared: &Arc<Mutex<Shared>>,
    serving: &mut FuturesUnordered<S>,
    on_request: &mut impl FnMut(NewRequest) -> Option<S>,
) -> u64 {
    let mut window_moved = false;
    let mut requests = 0;
    loop {
        let mut guard = lock(shared);
        let Some(event) = guard.conn.next_event() else {
            break;
        };
        match event {
            Event::Request {
                stream,
                head,
                end_stream,
            } => {
                guard.slots.push(Slot {
                    id: stream,
                    body: Default::default(),
                    body_done: end_stream,
                    trailers: None,
                    reset: None,
                    waker: None,
                    wants_window: false,
                });
                drop(guard);
                requests += 1;
                let request = NewRequest {
                    stream: H2Stream {
                        id: stream,
                        shared: Arc::clone(shared),
                    },
                    head,
                    end_stream,
                };
                if let Some(serve) = on_request(request) {
                    serving.push(serve);
                }
            }
            Event::RequestTooLarge { stream } => {
                // Answered here: the head was never read.
                queue_answer(
                    &mut guard.conn,
                    stream,
                    431,
                    "request header fields too large\n",
                );
                guard.conn.release(stream);
            }
            Event::Malformed { stream, reason } => {
                tracing::debug!(stream, reason, "malformed HTTP/2 request");
                queue_answer(&mut guard.conn, stream, 400, "bad request\n");
                guard.conn.release(stream);
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                if let Some(slot) = guard.slot(stream) {
                    if !data.is_empty() {
                        slot.body.push_back(data);
                    }
                    slot.body_done |= end_stream;
                    guard.wake_stream(stream);
                } else {
                    guard.conn.consumed(stream, data.len());
                }
            }
            Event::Trailers { stream, fields } => {
                if let Some(slot) = guard.slot(stream) {
                    slot.trailers = Some(fields);
                    slot.body_done = true;
                    guard.wake_stream(stream);
                }
            }
            Event::Reset { stream, code } => {
                if let Some(slot) = guard.slot(stream) {
                    slot.reset = Some(code);
                    guard.wake_stream(stream);
                }
            }
            Event::WindowOpened => window_moved = true,
        }
    }
    if window_moved {
        // Queued data may have gone out: its senders may go on.
        let mut guard = lock(shared);
        for slot in guard.slots.iter_mut().filter(|s| s.wants_window) {
            slot.wants_window = false;
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }
    requests
}

/// Queues a short plain-text answer of weir's own on `stream`, which ends it.
fn queue_answer(conn: &mut ServerConnection, stream: u32, status: u16, body: &'static str) {
    // Only weir's own statuses come here; one that is not a status leaves the stream
    // unanswered (the caller resets or closes it).
    let Ok(resp) = plain_response(status, body) else {
        return;
    };
    let _ = conn.send_headers(stream, false, |e, out| http2_answer_head(&resp, e, out));
    let _ = conn.send_data(stream, Bytes::from_static(body.as_bytes()), true);
}

/// Writes what the connection queued; `Ok(true)` if anything was written.
fn write_out(
    io: &mut Stream,
    shared: &Mutex<Shared>,
    write_buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> std::io::Result<bool> {
    if write_buf.is_empty() {
        let mut guard = lock(shared);
        let out = guard.conn.output();
        if out.is_empty() {
            return Ok(false);
        }
        std::mem::swap(write_buf, out);
        // The output is empty again: streams that waited for it to shrink may go on.
        if guard.output_waiters {
            wake_output_waiters(&mut guard);
        }
    }
    let mut wrote = false;
    while !write_buf.is_empty() {
        match Pin::new(&mut *io).poll_write(cx, write_buf) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                write_buf.advance(n);
                wrote = true;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(wrote),
        }
    }
    // TLS buffers: the bytes must reach the socket.
    match Pin::new(&mut *io).poll_flush(cx) {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(wrote),
    }
}

/// Reads what the client sent. An idle connection holds no read buffer: with nothing
/// unread, the read borrows the thread's scratch buffer and a buffer is taken only once
/// bytes arrive ([`poll_read_idle`]).
fn read_in(
    io: &mut Stream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.is_empty() {
        return poll_read_idle(Pin::new(&mut *io), cx, buf, READ_BUFFER);
    }
    if buf.capacity() - buf.len() < READ_BUFFER / 4 {
        buf.reserve(READ_BUFFER);
    }
    let io: Pin<&mut (dyn AsyncRead + Unpin + Send)> = Pin::new(&mut *io);
    tokio_util::io::poll_read_buf(io, cx, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

    /// The error codes of the GOAWAY frames in `bytes` (whole frames from the server).
    fn goaways(bytes: &[u8]) -> Vec<u32> {
        let mut codes = Vec::new();
        let mut at = 0;
        while at + 9 <= bytes.len() {
            let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
            if bytes[at + 3] == 0x7 {
                let p = &bytes[at + 9..at + 9 + len];
                codes.push(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            at += 9 + len;
        }
        codes
    }

    /// Serves one in-memory connection; the returned stream is the client's end.
    fn serve(
        on_request: impl FnMut(NewRequest) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>>
            + Send
            + 'static,
    ) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let (_stop, shutdown) = tokio::sync::watch::channel(false);
            let idle = Duration::from_secs(60);
            serve_connection(
                Box::new(server),
                Settings::default(),
                idle,
                &shutdown,
                on_request,
            )
            .await;
        });
        (client, task)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_sent_goaway_and_closed() {
        let (mut client, task) = serve(|_| None);
        client.write_all(PREFACE_AND_SETTINGS).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        let waited = started.elapsed();
        assert!(
            (Duration::from_secs(60)..=Duration::from_secs(121)).contains(&waited),
            "closed after {waited:?}"
        );
        assert_eq!(goaways(&received), vec![0], "GOAWAY with NO_ERROR");
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_a_request_under_way_is_not_idle() {
        // The request takes 200 s (three idle periods) to answer.
        let (mut client, task) = serve(|request| {
            Some(Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(200)).await;
                let _ = request
                    .stream
                    .send_headers(true, |e, out| e.status(204, out));
            }))
        });
        client.write_all(PREFACE_AND_SETTINGS).await.unwrap();
        // HEADERS, END_STREAM | END_HEADERS, stream 1: GET http / (static indexes).
        client
            .write_all(b"\0\0\x03\x01\x05\0\0\0\x01\x82\x86\x84")
            .await
            .unwrap();
        let mut answer = vec![0; 4096];
        let mut received = Vec::new();
        // Until the answer's HEADERS frame (type 1 on stream 1) arrives.
        let started = tokio::time::Instant::now();
        while !received
            .windows(6)
            .any(|w| w == [0x01, 0x05, 0, 0, 0, 0x01])
        {
            let n = client.read(&mut answer).await.unwrap();
            assert!(n > 0, "closed before the answer");
            received.extend_from_slice(&answer[..n]);
        }
        assert!(started.elapsed() >= Duration::from_secs(200));
        assert!(
            goaways(&received).is_empty(),
            "GOAWAY while a request was under way"
        );
        // Idle from now on: closed within two periods.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(goaways(&rest), vec![0]);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_opens_its_windows_but_does_not_read_holds_the_output() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let most_queued = Arc::new(AtomicUsize::new(0));
        let produced = Arc::new(AtomicUsize::new(0));
        let (most, made) = (Arc::clone(&most_queued), Arc::clone(&produced));
        // A response of up to 100 MiB, written as the direct path writes one.
        let (mut client, _task) = serve(move |request| {
            let (most, made) = (Arc::clone(&most), Arc::clone(&made));
            Some(Box::pin(async move {
                let stream = request.stream;
                let _ = stream.send_headers(false, |e, out| e.status(200, out));
                for _ in 0..6400 {
                    let piece = Bytes::from(vec![0u8; 16 * 1024]);
                    if stream.send_data(piece, false).is_err() {
                        return;
                    }
                    made.fetch_add(16 * 1024, Ordering::Relaxed);
                    let queued = lock(&stream.shared).conn.output().len();
                    most.fetch_max(queued, Ordering::Relaxed);
                    if stream.writable(STREAM_HIGH_WATER).await.is_err() {
                        return;
                    }
                }
            }))
        });
        // SETTINGS_INITIAL_WINDOW_SIZE 2^31-1, the connection window opened as far, then a
        // request; the client never reads.
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(b"\0\0\x06\x04\0\0\0\0\0\0\x04\x7f\xff\xff\xff");
        hello.extend_from_slice(b"\0\0\x04\x08\0\0\0\0\0\x7f\xff\0\0");
        hello.extend_from_slice(b"\0\0\x03\x01\x05\0\0\0\x01\x82\x86\x84");
        client.write_all(&hello).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let most = most_queued.load(Ordering::Relaxed);
        let made = produced.load(Ordering::Relaxed);
        assert!(
            most <= 2 * OUTPUT_HIGH_WATER,
            "{most} bytes queued for a client that reads nothing"
        );
        // The pipe (64 KiB) and the two buffers: a few hundred KiB, not 100 MiB.
        assert!(
            made < 1024 * 1024,
            "{made} bytes produced for a client that reads nothing"
        );
        drop(client);
    }
}
