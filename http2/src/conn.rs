//! One HTTP/2 server connection as a state machine (RFC 9113 §5, §6): bytes from the
//! client go in ([`ServerConnection::recv`]), requests and their bodies come out as
//! [`Event`]s, responses go in by stream, and the bytes to send collect in
//! [`ServerConnection::output`].
//!
//! It owns the protocol's rules: the preface and settings exchange, stream states and
//! identifiers, header blocks split over CONTINUATION, flow control both ways, PING,
//! GOAWAY, and the checks that make a request well-formed (§8.1–8.3). It keeps the
//! bounds that make a connection cheap to defend:
//! - a stream holds its slot against SETTINGS_MAX_CONCURRENT_STREAMS until the application
//!   releases it, not until the client resets it, so opening and resetting streams
//!   ("rapid reset") cannot start more work than the limit allows;
//! - a client that keeps opening streams past the limit is sent GOAWAY;
//! - a header block may not grow past twice the header list limit, and a list past the
//!   limit is reported as too large while its block is still decoded.
//!
//! Must not: do I/O or keep time. Output is not bounded here: the caller stops reading
//! while [`ServerConnection::output`] holds more than it is willing to buffer, which bounds
//! what PING and SETTINGS acknowledgements can pile up.

use crate::frame::{self, flag, kind, setting, ErrorCode, FrameHead, HEADER_LEN};
use crate::hpack::{Decoded, Decoder, Encoder, Field, TABLE_SIZE_ZERO};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::VecDeque;

/// What weir advertises, and the limits it holds clients to.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_concurrent_streams: u32,
    /// Each stream's receive window (request bodies).
    pub initial_window: u32,
    /// The connection's receive window, all request bodies together.
    pub connection_window: u32,
    pub max_header_list_size: u32,
    /// Streams refused past the concurrency limit before the connection is closed.
    pub max_refused_streams: u32,
    /// Malformed requests (each answered 400) at which the connection is closed: a client
    /// this broken is not worth the work (Pingora's budget is the same).
    pub max_malformed_streams: u32,
    /// Frames in a row that do no work (empty DATA without END_STREAM, empty CONTINUATION,
    /// PRIORITY, SETTINGS, PING, DATA for a closed stream, unknown types) at which the
    /// connection is sent GOAWAY ENHANCE_YOUR_CALM: each costs a little and answers nothing
    /// (CVE-2019-9518, CVE-2019-9512's class). A request or body data from the client, or
    /// response headers or data from weir, start the count anew: a client reading a long
    /// response may PING every round trip (gRPC's bandwidth estimation does).
    pub max_idle_frames: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_concurrent_streams: 100,
            initial_window: 256 * 1024,
            connection_window: 1024 * 1024,
            max_header_list_size: 64 * 1024,
            max_refused_streams: 1000,
            max_malformed_streams: 32,
            max_idle_frames: 1000,
        }
    }
}

/// A request's head: its pseudo-header fields, and the others in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Bytes,
    pub scheme: Option<Bytes>,
    pub authority: Option<Bytes>,
    pub path: Option<Bytes>,
    /// Regular fields, lowercase names, values as sent.
    pub fields: Vec<Field>,
    /// The request's content-length, when it gave one.
    pub content_length: Option<u64>,
}

impl RequestHead {
    /// The first value of the field `name` (lowercase).
    pub fn field(&self, name: &[u8]) -> Option<&Bytes> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }
}

/// What the application learns from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new stream. `end_stream`: no body follows.
    Request {
        stream: u32,
        head: RequestHead,
        end_stream: bool,
    },
    /// A header list past the limit: the stream is open, and should be answered 431.
    RequestTooLarge { stream: u32 },
    /// A malformed request (RFC 9113 §8.1.1; `reason` says how): the stream is open, and
    /// should be answered 400 rather than forwarded.
    Malformed { stream: u32, reason: &'static str },
    /// Request body bytes. The application calls [`ServerConnection::consumed`] as it
    /// takes them, which opens the client's window again.
    Data {
        stream: u32,
        data: Bytes,
        end_stream: bool,
    },
    /// Request trailers: the body is complete.
    Trailers { stream: u32, fields: Vec<Field> },
    /// The stream ended without its request completing: the client reset it, sent a
    /// malformed body, or the connection failed. Its response is not wanted.
    Reset { stream: u32, code: ErrorCode },
    /// A window grew (WINDOW_UPDATE or SETTINGS) while response data was queued: some of
    /// it went out, and its senders may queue more.
    WindowOpened,
}

/// A connection error (RFC 9113 §5.4.1): GOAWAY has been written to the output, and the
/// connection is done once the output is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionError {
    pub code: ErrorCode,
    pub reason: &'static str,
}

impl std::fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP/2 connection error {}: {}",
            self.code.0, self.reason
        )
    }
}

impl std::error::Error for ConnectionError {}

/// The stream cannot take the response part: it was reset or its response is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClosed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 24-byte client preface.
    Preface,
    /// The preface came; the client's first frame must be SETTINGS.
    FirstSettings,
    Open,
    /// A connection error was sent: nothing more is read.
    Failed,
}

#[derive(Debug)]
struct Stream {
    id: u32,
    /// The client ended its side (END_STREAM), or the stream was reset.
    recv_closed: bool,
    /// Headers of the response were queued.
    headers_sent: bool,
    /// END_STREAM was queued (by data, trailers or headers) or the stream was reset.
    send_closed: bool,
    /// The stream was reset by either side.
    reset: bool,
    /// The request was malformed (§8.1.1): once its answer is out, the stream is reset
    /// with PROTOCOL_ERROR, as the stream error the RFC requires.
    malformed: bool,
    /// The client closed its side itself (END_STREAM or RST_STREAM), so it knows the stream
    /// is closed: a later header block on it is a connection error (§5.1).
    client_closed: bool,
    /// The application is done with it.
    released: bool,
    send_window: i64,
    /// Body bytes the client may still send before the next WINDOW_UPDATE.
    recv_window: i64,
    /// Body bytes consumed since the last stream WINDOW_UPDATE.
    recv_unacked: u32,
    /// Response body waiting for flow-control window.
    queued: VecDeque<Bytes>,
    queued_len: usize,
    /// END_STREAM goes out with the last queued byte.
    end_queued: bool,
    /// A trailers block to send once `queued` is empty.
    trailers: Option<Bytes>,
    /// Content-length of the request, and body bytes received so far.
    content_length: Option<u64>,
    received: u64,
    /// Body bytes handed to the application that it has not yet consumed: the connection
    /// window they hold is given back when the stream goes.
    unconsumed: u64,
}

impl Stream {
    /// Nothing more will be sent or read for it: the application released it and its
    /// response is in the output (or it was reset).
    fn done(&self) -> bool {
        self.released
            && (self.reset || (self.send_closed && self.queued_len == 0 && !self.end_queued))
    }
}

/// A header block being collected from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    /// The stream depends on itself (§5.3.1): decoded, then reset.
    refuse: bool,
    block: BytesMut,
}

/// How many closed streams a connection remembers (see `closed_recently`): more than a
/// client can have open at once, so a late frame on any stream it could still think open
/// is recognised.
const CLOSED_REMEMBERED: usize = 256;

/// One HTTP/2 server connection.
#[derive(Debug)]
pub struct ServerConnection {
    settings: Settings,
    phase: Phase,
    decoder: Decoder,
    /// The client was told its table is not used ([`TABLE_SIZE_ZERO`]).
    table_dropped: bool,
    streams: Vec<Stream>,
    /// The highest stream identifier the client opened.
    last_stream: u32,
    pending_block: Option<PendingBlock>,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE.
    peer_initial_window: u32,
    peer_max_frame_size: u32,
    send_window: i64,
    recv_window: i64,
    recv_unacked: u32,
    /// Streams with queued data, in the order they will be served.
    ready: VecDeque<u32>,
    events: VecDeque<Event>,
    out: BytesMut,
    refused: u32,
    malformed: u32,
    /// Frames in a row that did no work ([`Settings::max_idle_frames`]).
    idle_frames: u32,
    /// The streams closed most recently, and whether the client closed its side itself: a
    /// late frame on a stream weir reset is answered (§5.1: the client may not have seen
    /// the reset yet); a header block on a stream the client itself closed, or on one it
    /// never opened, is a connection error (§5.1, §5.1.1).
    closed_recently: VecDeque<(u32, bool)>,
    /// The last stream served after GOAWAY was sent.
    goaway_sent: Option<u32>,
}

impl ServerConnection {
    /// A connection that has not yet read the client preface. weir's SETTINGS and the
    /// connection window's first WINDOW_UPDATE are already in the output.
    pub fn new(settings: Settings) -> Self {
        // Small: it grows with what is queued, and an idle connection keeps it.
        let mut out = BytesMut::with_capacity(1024);
        frame::write_settings(
            &mut out,
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    settings.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, settings.initial_window),
                (setting::MAX_HEADER_LIST_SIZE, settings.max_header_list_size),
            ],
        );
        let connection_window = settings
            .connection_window
            .clamp(frame::DEFAULT_WINDOW, frame::MAX_WINDOW);
        if connection_window > frame::DEFAULT_WINDOW {
            frame::write_window_update(&mut out, 0, connection_window - frame::DEFAULT_WINDOW);
        }
        ServerConnection {
            decoder: Decoder::new(4096),
            table_dropped: false,
            phase: Phase::Preface,
            streams: Vec::new(),
            last_stream: 0,
            pending_block: None,
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            send_window: frame::DEFAULT_WINDOW as i64,
            recv_window: connection_window as i64,
            recv_unacked: 0,
            ready: VecDeque::new(),
            events: VecDeque::new(),
            out,
            refused: 0,
            malformed: 0,
            idle_frames: 0,
            closed_recently: VecDeque::new(),
            goaway_sent: None,
            settings,
        }
    }

    /// Bytes to write to the client. The caller writes them and removes what it wrote.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Frees the capacity of the buffers and queues that are empty, and the decoder's
    /// scratch space and unused table room: for a connection with nothing under way, which
    /// would otherwise keep what its busiest moment needed for as long as it stays open.
    pub fn release_idle_memory(&mut self) {
        if self.out.is_empty() {
            self.out = BytesMut::new();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.ready.is_empty() {
            self.ready = VecDeque::new();
        }
        if self.streams.is_empty() {
            self.streams = Vec::new();
        }
        self.decoder.release_idle_memory();
    }

    /// Streams open for the application (not yet released).
    pub fn open_streams(&self) -> usize {
        self.streams.iter().filter(|s| !s.released).count()
    }

    /// The connection has nothing more to do: it failed, or weir sent GOAWAY and every
    /// stream is done. The caller flushes the output and closes.
    pub fn is_finished(&self) -> bool {
        // A client's GOAWAY does not end the connection: the client closes it when it is
        // done, and until then it may still send PING (RFC 9113 §6.8); an abandoned one
        // idles out.
        self.phase == Phase::Failed || (self.goaway_sent.is_some() && self.streams.is_empty())
    }

    /// Reads every complete frame at the start of `buf`, removing it.
    pub fn recv(&mut self, buf: &mut BytesMut) -> Result<(), ConnectionError> {
        match self.recv_frames(buf) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fail(e);
                buf.clear();
                Err(e)
            }
        }
    }

    fn fail(&mut self, e: ConnectionError) {
        if self.phase == Phase::Failed {
            return;
        }
        frame::write_goaway(&mut self.out, self.last_stream, e.code, e.reason.as_bytes());
        self.phase = Phase::Failed;
        for s in &mut self.streams {
            if !(s.reset || s.recv_closed && s.send_closed) {
                s.reset = true;
                self.events.push_back(Event::Reset {
                    stream: s.id,
                    code: e.code,
                });
            }
        }
    }

    fn recv_frames(&mut self, buf: &mut BytesMut) -> Result<(), ConnectionError> {
        loop {
            match self.phase {
                Phase::Failed => {
                    buf.clear();
                    return Ok(());
                }
                Phase::Preface => {
                    let n = buf.len().min(frame::PREFACE.len());
                    if buf[..n] != frame::PREFACE[..n] {
                        return Err(conn_err(
                            ErrorCode::PROTOCOL_ERROR,
                            "not the HTTP/2 preface",
                        ));
                    }
                    if n < frame::PREFACE.len() {
                        return Ok(());
                    }
                    buf.advance(n);
                    self.phase = Phase::FirstSettings;
                }
                Phase::FirstSettings | Phase::Open => {
                    let Some(head) = FrameHead::parse(buf) else {
                        return Ok(());
                    };
                    if head.len > frame::DEFAULT_MAX_FRAME_SIZE {
                        return Err(conn_err(
                            ErrorCode::FRAME_SIZE_ERROR,
                            "frame larger than SETTINGS_MAX_FRAME_SIZE",
                        ));
                    }
                    let total = HEADER_LEN + head.len as usize;
                    if buf.len() < total {
                        buf.reserve(total - buf.len());
                        return Ok(());
                    }
                    if self.phase == Phase::FirstSettings {
                        if head.kind != kind::SETTINGS || head.has(flag::ACK) {
                            return Err(conn_err(
                                ErrorCode::PROTOCOL_ERROR,
                                "first frame is not SETTINGS",
                            ));
                        }
                        self.phase = Phase::Open;
                    }
                    let mut frame_bytes = buf.split_to(total);
                    frame_bytes.advance(HEADER_LEN);
                    self.frame(head, frame_bytes.freeze())?;
                }
            }
        }
    }

    fn frame(&mut self, head: FrameHead, payload: Bytes) -> Result<(), ConnectionError> {
        if let Some(pending) = &self.pending_block {
            if head.kind != kind::CONTINUATION || head.stream != pending.stream {
                return Err(conn_err(
                    ErrorCode::PROTOCOL_ERROR,
                    "header block interrupted",
                ));
            }
        }
        self.count_work(&head, &payload)?;
        match head.kind {
            kind::DATA => self.data(head, payload),
            kind::HEADERS => self.headers(head, payload),
            kind::PRIORITY => self.priority(head, &payload),
            kind::RST_STREAM => self.rst_stream(head, &payload),
            kind::SETTINGS => self.peer_settings(head, &payload),
            kind::PUSH_PROMISE => Err(conn_err(
                ErrorCode::PROTOCOL_ERROR,
                "PUSH_PROMISE from a client",
            )),
            kind::PING => self.ping(head, &payload),
            kind::GOAWAY => {
                if head.stream != 0 {
                    return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "GOAWAY on a stream"));
                }
                if payload.len() < 8 {
                    return Err(conn_err(ErrorCode::FRAME_SIZE_ERROR, "GOAWAY too short"));
                }
                Ok(())
            }
            kind::WINDOW_UPDATE => self.window_update(head, &payload),
            kind::CONTINUATION => self.continuation(head, payload),
            // Unknown types are ignored (§5.5).
            _ => Ok(()),
        }
    }

    /// Counts frames that do no work ([`Settings::max_idle_frames`]); a frame that asks for
    /// work (a header block, body data, the end of a body) starts the count anew.
    fn count_work(&mut self, head: &FrameHead, payload: &[u8]) -> Result<(), ConnectionError> {
        let ack = head.has(flag::ACK);
        // Body and trailers count as work only on a stream still open to the client: on a
        // closed one they are answered with a reset and nothing else (a reset flood).
        let open = |id: u32| {
            self.stream_index(id)
                .is_some_and(|i| !self.streams[i].recv_closed)
        };
        let work = match head.kind {
            kind::HEADERS => head.stream > self.last_stream || open(head.stream),
            kind::DATA => {
                open(head.stream)
                    && (head.has(flag::END_STREAM)
                        || frame::unpadded(head, payload)
                            .map_or(true, |(range, _)| !range.is_empty()))
            }
            kind::CONTINUATION => !payload.is_empty() || head.has(flag::END_HEADERS),
            kind::PRIORITY | kind::PING | kind::SETTINGS => false,
            // Neither: these answer or end what is under way.
            kind::RST_STREAM | kind::WINDOW_UPDATE | kind::GOAWAY | kind::PUSH_PROMISE => {
                return Ok(())
            }
            _ => false, // unknown types are ignored (§5.5)
        };
        if work {
            self.idle_frames = 0;
            return Ok(());
        }
        if ack && matches!(head.kind, kind::PING | kind::SETTINGS) {
            return Ok(()); // answers to weir's own
        }
        self.idle_frames += 1;
        if self.idle_frames > self.settings.max_idle_frames {
            return Err(conn_err(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many frames that do no work",
            ));
        }
        Ok(())
    }

    /// Notes that stream `id` closed (see `closed_recently`); `client_ended`: the client
    /// closed its side itself (END_STREAM or RST_STREAM).
    fn note_closed(&mut self, id: u32, client_ended: bool) {
        if self.closed_recently.len() == CLOSED_REMEMBERED {
            self.closed_recently.pop_front();
        }
        self.closed_recently.push_back((id, client_ended));
    }

    fn stream_index(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    /// A frame for a stream the client has not opened (§5.1: PROTOCOL_ERROR).
    fn idle(&self, id: u32) -> bool {
        id > self.last_stream
    }

    fn data(&mut self, head: FrameHead, payload: Bytes) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        if self.idle(head.stream) {
            return Err(conn_err(
                ErrorCode::PROTOCOL_ERROR,
                "DATA on an idle stream",
            ));
        }
        // The whole frame, padding included, counts against the windows (§6.9.1).
        let len = payload.len() as i64;
        if len > self.recv_window {
            return Err(conn_err(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA past the connection window",
            ));
        }
        self.recv_window -= len;
        let (range, _) = frame::unpadded(&head, &payload).map_err(from_malformed)?;
        let data_len = range.len();
        let Some(i) = self.stream_index(head.stream) else {
            // A stream that is gone: its bytes are still the connection's to give back.
            self.credit_connection(len as u32);
            self.reset_stream_frame(head.stream, ErrorCode::STREAM_CLOSED);
            return Ok(());
        };
        let end_stream = head.has(flag::END_STREAM);
        if self.streams[i].recv_closed {
            self.credit_connection(len as u32);
            if self.streams[i].reset {
                // On a stream the client (or weir) reset: a stream error (§5.1, §6.1), and
                // a frame that does no work.
                self.reset_stream_frame(head.stream, ErrorCode::STREAM_CLOSED);
            } else {
                // Data after END_STREAM (§5.1, half-closed remote).
                self.reset_stream(i, ErrorCode::STREAM_CLOSED);
            }
            return Ok(());
        }
        if len > self.streams[i].recv_window {
            self.reset_stream(i, ErrorCode::FLOW_CONTROL_ERROR);
            self.credit_connection(len as u32);
            return Ok(());
        }
        let s = &mut self.streams[i];
        s.recv_window -= len;
        s.received += data_len as u64;
        let over = s.content_length.is_some_and(|cl| s.received > cl);
        let under = end_stream && s.content_length.is_some_and(|cl| s.received != cl);
        if over || under {
            // Malformed (§8.1.1): the body does not match its content-length.
            self.reset_stream(i, ErrorCode::PROTOCOL_ERROR);
            self.credit_connection(len as u32);
            return Ok(());
        }
        s.recv_closed = end_stream;
        s.client_closed = end_stream;
        // Padding is credited at once; the data when the application takes it.
        let padding = len as u32 - data_len as u32;
        if padding > 0 {
            self.credit(i, padding);
        }
        self.streams[i].unconsumed += data_len as u64;
        if data_len > 0 || end_stream {
            self.events.push_back(Event::Data {
                stream: head.stream,
                data: payload.slice(range),
                end_stream,
            });
        }
        Ok(())
    }

    fn headers(&mut self, head: FrameHead, payload: Bytes) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let (range, depends_on) = frame::unpadded(&head, &payload).map_err(from_malformed)?;
        // A stream depending on itself is a stream error, but its block must still be
        // decoded to keep the table in step.
        let refuse = depends_on == Some(head.stream);
        self.collect_block(head, payload.slice(range), refuse)
    }

    fn continuation(&mut self, head: FrameHead, payload: Bytes) -> Result<(), ConnectionError> {
        let limit = self.block_limit();
        let Some(pending) = &mut self.pending_block else {
            return Err(conn_err(
                ErrorCode::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        if pending.block.len() + payload.len() > limit {
            return Err(conn_err(
                ErrorCode::ENHANCE_YOUR_CALM,
                "header block too large",
            ));
        }
        pending.block.extend_from_slice(&payload);
        if head.has(flag::END_HEADERS) {
            if let Some(done) = self.pending_block.take() {
                self.header_block(
                    done.stream,
                    done.end_stream,
                    done.block.freeze(),
                    done.refuse,
                )?;
            }
        }
        Ok(())
    }

    fn block_limit(&self) -> usize {
        2 * self.settings.max_header_list_size as usize
    }

    fn collect_block(
        &mut self,
        head: FrameHead,
        fragment: Bytes,
        refuse: bool,
    ) -> Result<(), ConnectionError> {
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            return self.header_block(head.stream, end_stream, fragment, refuse);
        }
        if fragment.len() > self.block_limit() {
            return Err(conn_err(
                ErrorCode::ENHANCE_YOUR_CALM,
                "header block too large",
            ));
        }
        let mut block = BytesMut::with_capacity(fragment.len() * 2);
        block.extend_from_slice(&fragment);
        self.pending_block = Some(PendingBlock {
            stream: head.stream,
            end_stream,
            refuse,
            block,
        });
        Ok(())
    }

    /// A complete header block for `id`: a new request, or trailers.
    fn header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: Bytes,
        refuse: bool,
    ) -> Result<(), ConnectionError> {
        let mut fields = Vec::with_capacity(12);
        let decoded = self
            .decoder
            .decode(&block, self.settings.max_header_list_size as usize, |f| {
                fields.push(f)
            })
            .map_err(|_| conn_err(ErrorCode::COMPRESSION_ERROR, "header block does not decode"))?;
        if let Some(i) = self.stream_index(id) {
            return self.trailers(i, end_stream, fields, decoded);
        }
        if id <= self.last_stream {
            match self
                .closed_recently
                .iter()
                .find(|(closed, _)| *closed == id)
            {
                // A new stream must have a higher identifier than every one before (§5.1.1).
                None => {
                    return Err(conn_err(
                        ErrorCode::PROTOCOL_ERROR,
                        "stream identifier lower than one already opened",
                    ))
                }
                // The client ended this stream itself and knows it is closed (§5.1).
                Some((_, true)) => {
                    return Err(conn_err(
                        ErrorCode::STREAM_CLOSED,
                        "header block on a stream the client closed",
                    ))
                }
                Some((_, false)) => {}
            }
            // A stream weir has finished with (its response sent, or refused): the client
            // may not have seen that yet.
            self.reset_stream_frame(id, ErrorCode::STREAM_CLOSED);
            return Ok(());
        }
        if id.is_multiple_of(2) {
            return Err(conn_err(
                ErrorCode::PROTOCOL_ERROR,
                "even stream identifier from a client",
            ));
        }
        self.last_stream = id;
        if self.goaway_sent.is_some() {
            // Streams opened after GOAWAY are ignored (§6.8).
            self.note_closed(id, false);
            return Ok(());
        }
        if refuse {
            self.note_closed(id, false);
            self.reset_stream_frame(id, ErrorCode::PROTOCOL_ERROR);
            return Ok(());
        }
        if self.streams.len() >= self.settings.max_concurrent_streams as usize {
            self.refused += 1;
            if self.refused > self.settings.max_refused_streams {
                return Err(conn_err(
                    ErrorCode::ENHANCE_YOUR_CALM,
                    "too many streams past the limit",
                ));
            }
            self.note_closed(id, false);
            self.reset_stream_frame(id, ErrorCode::REFUSED_STREAM);
            return Ok(());
        }
        // What reaches the application: a request, a list too large to read, or a
        // malformed request (to answer, never to forward).
        let event = if decoded == Decoded::TooLarge {
            Event::RequestTooLarge { stream: id }
        } else {
            let head = request_head(fields).and_then(|head| {
                if end_stream && head.content_length.is_some_and(|cl| cl > 0) {
                    Err(MalformedRequest("content-length without a body"))
                } else {
                    Ok(head)
                }
            });
            match head {
                Ok(head) => Event::Request {
                    stream: id,
                    head,
                    end_stream,
                },
                Err(MalformedRequest(reason)) => {
                    self.malformed += 1;
                    if self.malformed >= self.settings.max_malformed_streams {
                        return Err(conn_err(
                            ErrorCode::PROTOCOL_ERROR,
                            "too many malformed requests",
                        ));
                    }
                    Event::Malformed { stream: id, reason }
                }
            }
        };
        let content_length = match &event {
            Event::Request { head, .. } => head.content_length,
            _ => None,
        };
        self.streams.push(Stream {
            id,
            recv_closed: end_stream,
            headers_sent: false,
            send_closed: false,
            reset: false,
            malformed: matches!(event, Event::Malformed { .. }),
            client_closed: end_stream,
            released: false,
            send_window: self.peer_initial_window as i64,
            recv_window: self.settings.initial_window as i64,
            recv_unacked: 0,
            queued: VecDeque::new(),
            queued_len: 0,
            end_queued: false,
            trailers: None,
            content_length,
            received: 0,
            unconsumed: 0,
        });
        self.events.push_back(event);
        Ok(())
    }

    fn trailers(
        &mut self,
        i: usize,
        end_stream: bool,
        fields: Vec<Field>,
        decoded: Decoded,
    ) -> Result<(), ConnectionError> {
        let s = &self.streams[i];
        if s.client_closed {
            // The client knows it closed this stream (§5.1).
            return Err(conn_err(
                ErrorCode::STREAM_CLOSED,
                "header block on a stream the client closed",
            ));
        }
        if s.recv_closed {
            if !s.reset {
                self.reset_stream(i, ErrorCode::STREAM_CLOSED);
            }
            return Ok(());
        }
        let malformed = !end_stream
            || decoded == Decoded::TooLarge
            || fields
                .iter()
                .any(|f| f.name.first() == Some(&b':') || !valid_field(f))
            || s.content_length.is_some_and(|cl| cl != s.received);
        if malformed {
            self.reset_stream(i, ErrorCode::PROTOCOL_ERROR);
            return Ok(());
        }
        let stream = s.id;
        self.streams[i].recv_closed = true;
        self.streams[i].client_closed = true;
        self.events.push_back(Event::Trailers { stream, fields });
        Ok(())
    }

    fn priority(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            self.reset_known(head.stream, ErrorCode::FRAME_SIZE_ERROR);
            return Ok(());
        }
        let depends_on =
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
        if depends_on == head.stream {
            self.reset_known(head.stream, ErrorCode::PROTOCOL_ERROR);
        }
        Ok(())
    }

    /// Resets a stream the client named in a frame that does not open it.
    fn reset_known(&mut self, id: u32, code: ErrorCode) {
        match self.stream_index(id) {
            Some(i) => self.reset_stream(i, code),
            None => self.reset_stream_frame(id, code),
        }
    }

    fn rst_stream(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(conn_err(
                ErrorCode::PROTOCOL_ERROR,
                "RST_STREAM on stream 0",
            ));
        }
        let code = frame::fixed_u32(payload, 4).map_err(from_malformed)?;
        if self.idle(head.stream) {
            return Err(conn_err(
                ErrorCode::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        if let Some(i) = self.stream_index(head.stream) {
            let s = &mut self.streams[i];
            if !s.reset {
                s.reset = true;
                s.recv_closed = true;
                s.client_closed = true;
                s.send_closed = true;
                s.queued.clear();
                s.queued_len = 0;
                self.events.push_back(Event::Reset {
                    stream: head.stream,
                    code: ErrorCode(code),
                });
                self.remove_if_done(i);
            }
        }
        Ok(())
    }

    fn peer_settings(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream != 0 {
            return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(conn_err(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "SETTINGS ACK with a payload",
                ));
            }
            return Ok(());
        }
        for (id, value) in frame::settings(payload).map_err(from_malformed)? {
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(conn_err(
                        ErrorCode::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH not 0 or 1",
                    ));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    if value > frame::MAX_WINDOW {
                        return Err(conn_err(
                            ErrorCode::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    // Every stream's window moves by the difference (§6.9.2).
                    let delta = value as i64 - self.peer_initial_window as i64;
                    for s in &mut self.streams {
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW as i64 {
                            return Err(conn_err(
                                ErrorCode::FLOW_CONTROL_ERROR,
                                "stream window past 2^31-1",
                            ));
                        }
                    }
                    self.peer_initial_window = value;
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&value)
                    {
                        return Err(conn_err(
                            ErrorCode::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame_size = value;
                }
                // The table size concerns an encoder that indexes (weir's does not); the
                // rest concern what a server does not send.
                _ => {}
            }
        }
        frame::write_settings_ack(&mut self.out);
        self.flush_queued();
        Ok(())
    }

    fn ping(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream != 0 {
            return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "PING on a stream"));
        }
        let opaque: &[u8; 8] = payload
            .try_into()
            .map_err(|_| conn_err(ErrorCode::FRAME_SIZE_ERROR, "PING not 8 bytes"))?;
        if !head.has(flag::ACK) {
            frame::write_ping_ack(&mut self.out, opaque);
        }
        Ok(())
    }

    fn window_update(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnectionError> {
        let increment = frame::fixed_u32(payload, 4).map_err(from_malformed)? & 0x7fff_ffff;
        if head.stream == 0 {
            if increment == 0 {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
            }
            self.send_window += increment as i64;
            if self.send_window > frame::MAX_WINDOW as i64 {
                return Err(conn_err(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "connection window past 2^31-1",
                ));
            }
        } else {
            if self.idle(head.stream) {
                return Err(conn_err(
                    ErrorCode::PROTOCOL_ERROR,
                    "WINDOW_UPDATE on an idle stream",
                ));
            }
            let Some(i) = self.stream_index(head.stream) else {
                return Ok(()); // closed: ignored (§6.9)
            };
            if increment == 0 {
                self.reset_stream(i, ErrorCode::PROTOCOL_ERROR);
                return Ok(());
            }
            let s = &mut self.streams[i];
            s.send_window += increment as i64;
            if s.send_window > frame::MAX_WINDOW as i64 {
                self.reset_stream(i, ErrorCode::FLOW_CONTROL_ERROR);
                return Ok(());
            }
        }
        self.flush_queued();
        Ok(())
    }

    /// Resets stream `i` from weir's side: RST_STREAM out, a Reset event for the
    /// application if it knew the stream.
    fn reset_stream(&mut self, i: usize, code: ErrorCode) {
        let s = &mut self.streams[i];
        if s.reset {
            return;
        }
        s.reset = true;
        s.recv_closed = true;
        s.send_closed = true;
        s.queued.clear();
        s.queued_len = 0;
        let id = s.id;
        let tell = !s.released;
        frame::write_rst_stream(&mut self.out, id, code);
        if tell {
            self.events.push_back(Event::Reset { stream: id, code });
        }
        self.remove_if_done(i);
    }

    /// RST_STREAM for a stream weir keeps no state for.
    fn reset_stream_frame(&mut self, id: u32, code: ErrorCode) {
        frame::write_rst_stream(&mut self.out, id, code);
    }

    fn remove_if_done(&mut self, i: usize) {
        if !self.streams[i].done() {
            return;
        }
        let s = self.streams.swap_remove(i);
        self.note_closed(s.id, s.client_closed);
        if s.malformed && !s.reset {
            // Answered (§8.1.1 allows a response first), then the stream error.
            frame::write_rst_stream(&mut self.out, s.id, ErrorCode::PROTOCOL_ERROR);
        } else if !s.recv_closed {
            // The response is complete while the client is still sending: it may stop
            // (§8.1).
            frame::write_rst_stream(&mut self.out, s.id, ErrorCode::NO_ERROR);
        }
        // The connection window held by body bytes nobody will consume.
        if s.unconsumed > 0 {
            self.credit_connection(s.unconsumed.min(u32::MAX as u64) as u32);
        }
    }

    /// Gives `n` bytes of stream `i`'s and the connection's window back to the client.
    fn credit(&mut self, i: usize, n: u32) {
        self.credit_connection(n);
        let half = self.settings.initial_window / 2;
        let s = &mut self.streams[i];
        if s.recv_closed {
            return;
        }
        s.recv_unacked += n;
        if s.recv_unacked >= half {
            frame::write_window_update(&mut self.out, s.id, s.recv_unacked);
            s.recv_window += s.recv_unacked as i64;
            s.recv_unacked = 0;
        }
    }

    fn credit_connection(&mut self, n: u32) {
        self.recv_unacked += n;
        let half = self.settings.connection_window.max(frame::DEFAULT_WINDOW) / 2;
        if self.recv_unacked >= half {
            frame::write_window_update(&mut self.out, 0, self.recv_unacked);
            self.recv_window += self.recv_unacked as i64;
            self.recv_unacked = 0;
        }
    }

    /// The application took `n` body bytes of `stream`: the client may send as many more.
    pub fn consumed(&mut self, stream: u32, n: usize) {
        // A stream that is gone gave its window back when it went.
        if let Some(i) = self.stream_index(stream) {
            let s = &mut self.streams[i];
            let n = (n as u64).min(s.unconsumed);
            s.unconsumed -= n;
            self.credit(i, n as u32);
        }
    }

    /// Queues the response head of `stream`: `encode` writes the header block (the status
    /// first) with the connection's encoder. `end_stream`: there is no body.
    pub fn send_headers(
        &mut self,
        stream: u32,
        end_stream: bool,
        encode: impl FnOnce(&Encoder, &mut BytesMut),
    ) -> Result<(), StreamClosed> {
        let i = self.stream_index(stream).ok_or(StreamClosed)?;
        // weir is sending: the client's PINGs and window updates are not idle chatter.
        self.idle_frames = 0;
        let s = &mut self.streams[i];
        if s.send_closed || s.headers_sent {
            return Err(StreamClosed);
        }
        s.headers_sent = true;
        s.send_closed = end_stream;
        let start = self.out.len();
        // The frame header goes first, its length filled in once the block is written.
        self.out.put_slice(&[0; HEADER_LEN]);
        if !self.table_dropped {
            self.out.put_u8(TABLE_SIZE_ZERO);
            self.table_dropped = true;
        }
        encode(&Encoder, &mut self.out);
        let block_len = self.out.len() - start - HEADER_LEN;
        if block_len <= self.peer_max_frame_size as usize {
            let mut flags = flag::END_HEADERS;
            if end_stream {
                flags |= flag::END_STREAM;
            }
            let head = FrameHead {
                len: block_len as u32,
                kind: kind::HEADERS,
                flags,
                stream,
            };
            self.out[start..start + HEADER_LEN].copy_from_slice(&head.to_bytes());
        } else {
            let block = self.out.split_off(start + HEADER_LEN);
            self.out.truncate(start);
            frame::write_headers(
                &mut self.out,
                stream,
                &block,
                end_stream,
                self.peer_max_frame_size,
            );
        }
        if end_stream {
            self.remove_if_done(i);
        }
        Ok(())
    }

    /// Queues body bytes of `stream` (after its headers); they go out as the client's
    /// windows allow. `end_stream`: the body is complete.
    pub fn send_data(
        &mut self,
        stream: u32,
        data: Bytes,
        end_stream: bool,
    ) -> Result<(), StreamClosed> {
        let i = self.stream_index(stream).ok_or(StreamClosed)?;
        // weir is sending: the client's PINGs and window updates are not idle chatter.
        self.idle_frames = 0;
        let s = &mut self.streams[i];
        if s.send_closed || !s.headers_sent {
            return Err(StreamClosed);
        }
        let was_waiting = s.queued_len > 0 || s.end_queued;
        if !data.is_empty() {
            s.queued_len += data.len();
            s.queued.push_back(data);
        }
        s.end_queued = end_stream;
        s.send_closed = end_stream;
        if !was_waiting {
            self.ready.push_back(stream);
        }
        self.flush_queued();
        Ok(())
    }

    /// Queues trailers of `stream` (`encode` writes the block, no pseudo-fields); they end
    /// it once its queued body has gone out.
    pub fn send_trailers(
        &mut self,
        stream: u32,
        encode: impl FnOnce(&Encoder, &mut BytesMut),
    ) -> Result<(), StreamClosed> {
        let i = self.stream_index(stream).ok_or(StreamClosed)?;
        let s = &mut self.streams[i];
        if s.send_closed || !s.headers_sent {
            return Err(StreamClosed);
        }
        let mut block = BytesMut::new();
        encode(&Encoder, &mut block);
        let was_waiting = s.queued_len > 0 || s.end_queued;
        s.trailers = Some(block.freeze());
        s.end_queued = true;
        s.send_closed = true;
        if !was_waiting {
            self.ready.push_back(stream);
        }
        self.flush_queued();
        Ok(())
    }

    /// Response body bytes of `stream` still waiting for window (for back-pressure).
    pub fn queued(&self, stream: u32) -> usize {
        self.stream_index(stream)
            .map_or(0, |i| self.streams[i].queued_len)
    }

    /// Whether the response of `stream` has entirely gone into the output (`false` while
    /// it waits for window, or the stream was reset).
    pub fn response_sent(&self, stream: u32) -> bool {
        match self.stream_index(stream) {
            Some(i) => {
                let s = &self.streams[i];
                !s.reset && s.send_closed && s.queued_len == 0 && !s.end_queued
            }
            None => true,
        }
    }

    /// The application is done with `stream`. A response it did not finish is cut short
    /// with RST_STREAM (CANCEL when it never began, INTERNAL_ERROR part-way), so the
    /// client can tell it from a complete one.
    pub fn release(&mut self, stream: u32) {
        let Some(i) = self.stream_index(stream) else {
            return;
        };
        let s = &mut self.streams[i];
        s.released = true;
        if !s.send_closed && !s.reset {
            let code = if s.headers_sent {
                ErrorCode::INTERNAL_ERROR
            } else {
                ErrorCode::CANCEL
            };
            self.reset_stream(i, code);
            return;
        }
        self.remove_if_done(i);
    }

    /// The application gives up on `stream` part-way: RST_STREAM with `code`, unless its
    /// response is already complete or the stream was reset.
    pub fn reset(&mut self, stream: u32, code: ErrorCode) {
        if let Some(i) = self.stream_index(stream) {
            if !self.streams[i].send_closed {
                self.reset_stream(i, code);
            }
        }
    }

    /// Sends GOAWAY (NO_ERROR): streams already open are served, new ones are ignored.
    pub fn go_away(&mut self) {
        if self.goaway_sent.is_none() && self.phase != Phase::Failed {
            frame::write_goaway(&mut self.out, self.last_stream, ErrorCode::NO_ERROR, b"");
            self.goaway_sent = Some(self.last_stream);
        }
    }

    /// Moves queued body bytes into the output as far as the windows allow.
    fn flush_queued(&mut self) {
        if !self.ready.is_empty() {
            self.events.push_back(Event::WindowOpened);
        }
        let mut rounds = self.ready.len();
        while rounds > 0 {
            rounds -= 1;
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(i) = self.stream_index(id) else {
                continue;
            };
            let max_frame = self.peer_max_frame_size as usize;
            let s = &mut self.streams[i];
            if s.reset {
                continue;
            }
            while let Some(front) = s.queued.front_mut() {
                let allowed = s.send_window.min(self.send_window).min(max_frame as i64);
                if allowed <= 0 {
                    break;
                }
                let n = front.len().min(allowed as usize);
                let chunk = front.split_to(n);
                if front.is_empty() {
                    s.queued.pop_front();
                }
                s.queued_len -= n;
                s.send_window -= n as i64;
                self.send_window -= n as i64;
                let last = s.queued_len == 0 && s.end_queued && s.trailers.is_none();
                frame::write_data_head(&mut self.out, id, n, last);
                self.out.put_slice(&chunk);
                if last {
                    s.end_queued = false;
                }
            }
            if s.queued_len == 0 && s.end_queued {
                s.end_queued = false;
                match s.trailers.take() {
                    Some(block) => frame::write_headers(
                        &mut self.out,
                        id,
                        &block,
                        true,
                        self.peer_max_frame_size,
                    ),
                    // An empty end (the body ended with no bytes left to send).
                    None => frame::write_data_head(&mut self.out, id, 0, true),
                }
            }
            if s.queued_len > 0 || s.end_queued {
                self.ready.push_back(id);
            } else {
                self.remove_if_done(i);
            }
            if self.send_window <= 0 && self.ready.iter().all(|&id| self.queued(id) > 0) {
                break;
            }
        }
    }
}

fn conn_err(code: ErrorCode, reason: &'static str) -> ConnectionError {
    ConnectionError { code, reason }
}

fn from_malformed(m: frame::MalformedFrame) -> ConnectionError {
    conn_err(m.code, m.reason)
}

/// Why a request's fields do not make a request (§8.3): the stream is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedRequest(pub &'static str);

/// A field name and value HTTP/2 allows (§8.2.1): names lowercase tokens, values without
/// NUL, CR or LF, nor whitespace at either end.
fn valid_field(f: &Field) -> bool {
    let name_ok = !f.name.is_empty()
        && f.name
            .iter()
            .all(|&c| c.is_ascii_graphic() && !c.is_ascii_uppercase() && c != b':');
    let value_ok = !f.value.iter().any(|&c| c == 0 || c == b'\r' || c == b'\n')
        && !f.value.first().is_some_and(|&c| c == b' ' || c == b'\t')
        && !f.value.last().is_some_and(|&c| c == b' ' || c == b'\t');
    name_ok && value_ok
}

/// The request head of a decoded field list, or why it is malformed. The list becomes the
/// head's regular fields (no copy: the pseudo-header fields lead it and are taken off).
pub fn request_head(mut fields: Vec<Field>) -> Result<RequestHead, MalformedRequest> {
    let pseudo = fields
        .iter()
        .position(|f| f.name.first() != Some(&b':'))
        .unwrap_or(fields.len());
    let mut head = RequestHead::default();
    let mut method = None;
    for f in fields.drain(..pseudo) {
        let slot = match &f.name[..] {
            b":method" => &mut method,
            b":scheme" => &mut head.scheme,
            b":authority" => &mut head.authority,
            b":path" => &mut head.path,
            _ => return Err(MalformedRequest("unknown pseudo-header")),
        };
        if slot.is_some() {
            return Err(MalformedRequest("repeated pseudo-header"));
        }
        *slot = Some(f.value);
    }
    for f in &fields {
        if f.name.first() == Some(&b':') {
            return Err(MalformedRequest("pseudo-header after a regular field"));
        }
        if !valid_field(f) {
            return Err(MalformedRequest("invalid field name or value"));
        }
        match &f.name[..] {
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding"
            | b"upgrade" => {
                return Err(MalformedRequest("connection-specific field"));
            }
            b"te" if !f.value.eq_ignore_ascii_case(b"trailers") => {
                return Err(MalformedRequest("te other than trailers"));
            }
            b"content-length" => {
                let value = std::str::from_utf8(&f.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(MalformedRequest("invalid content-length"))?;
                if head.content_length.is_some_and(|cl| cl != value) {
                    return Err(MalformedRequest("conflicting content-length"));
                }
                head.content_length = Some(value);
            }
            b"host"
                if head
                    .authority
                    .as_ref()
                    .is_some_and(|a| !a.eq_ignore_ascii_case(&f.value)) =>
            {
                return Err(MalformedRequest("host differs from :authority"));
            }
            _ => {}
        }
    }
    head.fields = fields;
    if let Some(authority) = &head.authority {
        // No userinfo (§8.3.1), and nothing a Host field could not carry.
        if authority
            .iter()
            .any(|&c| c == b'@' || !c.is_ascii_graphic())
        {
            return Err(MalformedRequest("invalid :authority"));
        }
    }
    head.method = method.ok_or(MalformedRequest("no :method"))?;
    if head.method.is_empty() || !head.method.iter().all(|c| c.is_ascii_graphic()) {
        return Err(MalformedRequest("invalid :method"));
    }
    if head.method == "CONNECT" {
        if head.scheme.is_some() || head.path.is_some() || head.authority.is_none() {
            return Err(MalformedRequest(
                "CONNECT with :scheme or :path, or no :authority",
            ));
        }
        return Ok(head);
    }
    let path = head.path.as_ref().ok_or(MalformedRequest("no :path"))?;
    let path_ok = path.first() == Some(&b'/') || (&path[..] == b"*" && head.method == "OPTIONS");
    if !path_ok || path.iter().any(|c| !c.is_ascii_graphic()) {
        return Err(MalformedRequest("invalid :path"));
    }
    if head.scheme.is_none() {
        return Err(MalformedRequest("no :scheme"));
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side of the wire, for driving a connection in tests.
    struct Client {
        conn: ServerConnection,
        decoder: Decoder,
    }

    /// A frame the server sent, its header block decoded.
    #[derive(Debug, Clone, PartialEq)]
    struct Sent {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Bytes,
        fields: Vec<(String, String)>,
    }

    fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        // Literal without indexing, literal name: enough for any request a test needs.
        let mut out = BytesMut::new();
        for (name, value) in fields {
            out.put_u8(0);
            crate::hpack::write_int(&mut out, 0, 7, name.len());
            out.extend_from_slice(name.as_bytes());
            crate::hpack::write_int(&mut out, 0, 7, value.len());
            out.extend_from_slice(value.as_bytes());
        }
        out.to_vec()
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameHead {
            len: payload.len() as u32,
            kind,
            flags,
            stream,
        }
        .write(&mut out);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn get(path: &str) -> Vec<(&'static str, String)> {
        vec![
            (":method", "GET".into()),
            (":scheme", "http".into()),
            (":authority", "example.com".into()),
            (":path", path.into()),
        ]
    }

    impl Client {
        fn with(settings: Settings, peer: &[(u16, u32)]) -> Client {
            let mut c = Client {
                conn: ServerConnection::new(settings),
                decoder: Decoder::new(4096),
            };
            let mut hello = frame::PREFACE.to_vec();
            let mut s = BytesMut::new();
            frame::write_settings(&mut s, peer);
            hello.extend_from_slice(&s);
            c.send(&hello).unwrap();
            let sent = c.sent();
            assert_eq!(sent[0].kind, kind::SETTINGS);
            assert!(sent
                .iter()
                .any(|f| f.kind == kind::SETTINGS && f.flags == flag::ACK));
            c
        }

        fn new() -> Client {
            Client::with(Settings::default(), &[])
        }

        fn send(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
            let mut buf = BytesMut::from(bytes);
            self.conn.recv(&mut buf)
        }

        fn request(&mut self, stream: u32, fields: &[(&str, String)], end_stream: bool) {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
            self.send(&frame(kind::HEADERS, flags, stream, &block(&fields)))
                .unwrap();
        }

        fn events(&mut self) -> Vec<Event> {
            std::iter::from_fn(|| self.conn.next_event()).collect()
        }

        /// Takes the output and splits it into frames.
        fn sent(&mut self) -> Vec<Sent> {
            let mut out = self.conn.output().split().freeze();
            let mut frames = Vec::new();
            while let Some(head) = FrameHead::parse(&out) {
                let mut bytes = out.split_to(HEADER_LEN + head.len as usize);
                bytes.advance(HEADER_LEN);
                let mut fields = Vec::new();
                if head.kind == kind::HEADERS {
                    self.decoder
                        .decode(&bytes, usize::MAX, |f| {
                            fields.push((
                                String::from_utf8_lossy(&f.name).into_owned(),
                                String::from_utf8_lossy(&f.value).into_owned(),
                            ))
                        })
                        .unwrap();
                }
                frames.push(Sent {
                    kind: head.kind,
                    flags: head.flags,
                    stream: head.stream,
                    payload: bytes,
                    fields,
                });
            }
            assert!(out.is_empty(), "a partial frame in the output");
            frames
        }

        fn respond(&mut self, stream: u32, body: &'static [u8]) {
            self.conn
                .send_headers(stream, body.is_empty(), |e, out| {
                    e.status(200, out);
                    e.field(b"content-type", b"text/plain", out);
                })
                .unwrap();
            if !body.is_empty() {
                self.conn
                    .send_data(stream, Bytes::from_static(body), true)
                    .unwrap();
            }
        }
    }

    fn rst(sent: &[Sent]) -> Vec<(u32, u32)> {
        sent.iter()
            .filter(|f| f.kind == kind::RST_STREAM)
            .map(|f| {
                (
                    f.stream,
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]),
                )
            })
            .collect()
    }

    fn goaway_code(sent: &[Sent]) -> Option<u32> {
        sent.iter()
            .find(|f| f.kind == kind::GOAWAY)
            .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
    }

    #[test]
    fn a_request_and_its_response() {
        let mut c = Client::new();
        let mut fields = get("/a?b=c");
        fields.push(("user-agent", "test".into()));
        fields.push(("cookie", "a=1".into()));
        fields.push(("cookie", "b=2".into()));
        c.request(1, &fields, true);
        let events = c.events();
        let [Event::Request {
            stream: 1,
            head,
            end_stream: true,
        }] = &events[..]
        else {
            panic!("{events:?}");
        };
        assert_eq!(head.method, "GET");
        assert_eq!(head.path.as_deref(), Some(&b"/a?b=c"[..]));
        assert_eq!(head.authority.as_deref(), Some(&b"example.com"[..]));
        assert_eq!(
            head.fields.len(),
            3,
            "regular fields, pseudo-fields taken off"
        );
        assert_eq!(head.field(b"cookie").map(|v| &v[..]), Some(&b"a=1"[..]));
        c.respond(1, b"hello");
        c.conn.release(1);
        let sent = c.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(
            (sent[0].kind, sent[0].flags),
            (kind::HEADERS, flag::END_HEADERS)
        );
        assert_eq!(
            sent[0].fields,
            vec![
                (":status".into(), "200".into()),
                ("content-type".into(), "text/plain".into())
            ]
        );
        assert_eq!(
            (sent[1].kind, sent[1].flags, &sent[1].payload[..]),
            (kind::DATA, flag::END_STREAM, &b"hello"[..])
        );
        assert_eq!(c.conn.open_streams(), 0);
        assert!(
            c.conn.streams.is_empty(),
            "a finished stream leaves no state"
        );
    }

    #[test]
    fn the_preface_and_first_settings_are_required() {
        let mut conn = ServerConnection::new(Settings::default());
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert_eq!(
            conn.recv(&mut buf).map_err(|e| e.code),
            Err(ErrorCode::PROTOCOL_ERROR)
        );
        assert!(conn.is_finished());

        let mut conn = ServerConnection::new(Settings::default());
        let mut bytes = frame::PREFACE[..10].to_vec();
        let mut buf = BytesMut::from(&bytes[..]);
        conn.recv(&mut buf).unwrap();
        assert_eq!(buf.len(), 10, "a partial preface waits");
        bytes = frame::PREFACE.to_vec();
        bytes.extend(frame(kind::PING, 0, 0, &[0; 8]));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            conn.recv(&mut buf).map_err(|e| e.code),
            Err(ErrorCode::PROTOCOL_ERROR)
        );
    }

    #[test]
    fn response_data_waits_for_the_clients_windows() {
        let mut c = Client::with(Settings::default(), &[(setting::INITIAL_WINDOW_SIZE, 10)]);
        c.request(1, &get("/"), true);
        c.events();
        c.respond(1, b"0123456789abcdefghijklmno");
        c.conn.release(1);
        let sent = c.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(
            (&sent[1].payload[..], sent[1].flags),
            (&b"0123456789"[..], 0)
        );
        assert_eq!(c.conn.queued(1), 15);
        assert!(!c.conn.response_sent(1));
        c.send(&frame(kind::WINDOW_UPDATE, 0, 1, &100u32.to_be_bytes()))
            .unwrap();
        let sent = c.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            (&sent[0].payload[..], sent[0].flags),
            (&b"abcdefghijklmno"[..], flag::END_STREAM)
        );
        assert!(c.conn.response_sent(1));
        assert!(c.conn.streams.is_empty());

        // The connection window: 65,535 bytes, then a WINDOW_UPDATE for more.
        let mut c = Client::new();
        c.request(1, &get("/"), true);
        c.events();
        static BIG: [u8; 70_000] = [7; 70_000];
        c.respond(1, &BIG);
        let sent: usize = c
            .sent()
            .iter()
            .filter(|f| f.kind == kind::DATA)
            .map(|f| f.payload.len())
            .sum();
        assert_eq!(sent, 65_535);
        c.send(&frame(kind::WINDOW_UPDATE, 0, 0, &10_000u32.to_be_bytes()))
            .unwrap();
        assert_eq!(c.sent(), vec![], "the stream's own window is spent too");
        c.send(&frame(kind::WINDOW_UPDATE, 0, 1, &10_000u32.to_be_bytes()))
            .unwrap();
        let sent = c.sent();
        assert_eq!(
            (sent[0].payload.len(), sent[0].flags),
            (70_000 - 65_535, flag::END_STREAM)
        );
    }

    #[test]
    fn a_smaller_initial_window_can_make_a_stream_window_negative() {
        let mut c = Client::new();
        c.request(1, &get("/"), true);
        c.events();
        static BODY: [u8; 1000] = [1; 1000];
        c.respond(1, &BODY);
        assert_eq!(c.sent().len(), 2);
        // The client lowers the initial window below what the stream has used (§6.9.2).
        let mut s = BytesMut::new();
        frame::write_settings(&mut s, &[(setting::INITIAL_WINDOW_SIZE, 0)]);
        c.send(&s).unwrap();
        assert_eq!(c.conn.streams[0].send_window, -1000);
    }

    #[test]
    fn a_reset_stream_holds_its_slot_until_released() {
        let settings = Settings {
            max_concurrent_streams: 2,
            max_refused_streams: 3,
            ..Settings::default()
        };
        let mut c = Client::with(settings, &[]);
        for id in [1, 3] {
            c.request(id, &get("/"), true);
            c.send(&frame(
                kind::RST_STREAM,
                0,
                id,
                &ErrorCode::CANCEL.0.to_be_bytes(),
            ))
            .unwrap();
        }
        let events = c.events();
        assert_eq!(events.len(), 4, "two requests, two resets: {events:?}");
        assert!(matches!(
            events[1],
            Event::Reset {
                stream: 1,
                code: ErrorCode::CANCEL
            }
        ));
        // The application has not let go of either: a third stream is refused.
        c.request(5, &get("/"), true);
        assert_eq!(rst(&c.sent()), vec![(5, ErrorCode::REFUSED_STREAM.0)]);
        assert!(c.events().is_empty());
        c.conn.release(1);
        c.request(7, &get("/"), true);
        assert!(matches!(c.events()[..], [Event::Request { stream: 7, .. }]));
        // Streams keep coming past the limit: the connection is closed.
        let b = block(&[(":method", "GET"), (":scheme", "http"), (":path", "/")]);
        for id in [9, 11, 13] {
            let _ = c.send(&frame(
                kind::HEADERS,
                flag::END_HEADERS | flag::END_STREAM,
                id,
                &b,
            ));
        }
        assert_eq!(goaway_code(&c.sent()), Some(ErrorCode::ENHANCE_YOUR_CALM.0));
        assert!(c.conn.is_finished());
    }

    #[test]
    fn header_blocks_may_continue_but_not_be_interrupted_or_grow_without_end() {
        let mut c = Client::new();
        let fields: Vec<(&str, &str)> = vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/x"),
            ("x-a", "b"),
        ];
        let b = block(&fields);
        c.send(&frame(kind::HEADERS, flag::END_STREAM, 1, &b[..5]))
            .unwrap();
        c.send(&frame(kind::CONTINUATION, 0, 1, &b[5..12])).unwrap();
        assert!(c.events().is_empty());
        c.send(&frame(kind::CONTINUATION, flag::END_HEADERS, 1, &b[12..]))
            .unwrap();
        let events = c.events();
        let [Event::Request {
            stream: 1,
            head,
            end_stream: true,
        }] = &events[..]
        else {
            panic!("{events:?}");
        };
        assert_eq!(head.field(b"x-a").map(|v| &v[..]), Some(&b"b"[..]));

        c.send(&frame(kind::HEADERS, 0, 3, &b[..5])).unwrap();
        let e = c.send(&frame(kind::PING, 0, 0, &[0; 8])).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);

        let mut c = Client::with(
            Settings {
                max_header_list_size: 1000,
                ..Settings::default()
            },
            &[],
        );
        c.send(&frame(kind::HEADERS, 0, 1, &[0; 1000])).unwrap();
        let e = c
            .send(&frame(kind::CONTINUATION, 0, 1, &[0; 1001]))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn a_header_list_past_the_limit_is_reported_for_a_431() {
        let mut c = Client::with(
            Settings {
                max_header_list_size: 200,
                ..Settings::default()
            },
            &[],
        );
        let mut fields = get("/");
        fields.push(("x-big", "v".repeat(200)));
        c.request(1, &fields, true);
        assert_eq!(c.events(), vec![Event::RequestTooLarge { stream: 1 }]);
        c.conn
            .send_headers(1, true, |e, out| e.status(431, out))
            .unwrap();
        c.conn.release(1);
        let sent = c.sent();
        assert_eq!(sent[0].fields, vec![(":status".into(), "431".into())]);
        assert!(c.conn.streams.is_empty());
    }

    #[test]
    fn malformed_requests_are_reported_to_answer_never_as_requests() {
        let cases: Vec<(&str, Vec<(&'static str, String)>)> = vec![
            (
                "uppercase name",
                [get("/"), vec![("X-A", "b".into())]].concat(),
            ),
            (
                "connection field",
                [get("/"), vec![("connection", "close".into())]].concat(),
            ),
            ("te", [get("/"), vec![("te", "gzip".into())]].concat()),
            (
                "no path",
                get("/")
                    .into_iter()
                    .filter(|(n, _)| *n != ":path")
                    .collect(),
            ),
            (
                "no scheme",
                get("/")
                    .into_iter()
                    .filter(|(n, _)| *n != ":scheme")
                    .collect(),
            ),
            ("relative path", get("a")),
            (
                "host differs",
                [get("/"), vec![("host", "evil.example".into())]].concat(),
            ),
            (
                "userinfo",
                vec![
                    (":method", "GET".into()),
                    (":scheme", "http".into()),
                    (":authority", "u@h".into()),
                    (":path", "/".into()),
                ],
            ),
            (
                "pseudo after regular",
                [vec![("x-a", "b".into())], get("/")].concat(),
            ),
            (
                "unknown pseudo",
                [get("/"), vec![(":status", "200".into())]].concat(),
            ),
            ("repeated pseudo", [get("/"), get("/")].concat()),
            (
                "value with LF",
                [get("/"), vec![("x-a", "b\nc".into())]].concat(),
            ),
            (
                "value with trailing space",
                [get("/"), vec![("x-a", "b ".into())]].concat(),
            ),
            (
                "bad content-length",
                [get("/"), vec![("content-length", "1x".into())]].concat(),
            ),
        ];
        for (what, fields) in cases {
            let mut c = Client::new();
            c.request(1, &fields, true);
            let events = c.events();
            assert!(
                matches!(events[..], [Event::Malformed { stream: 1, .. }]),
                "{what}: {events:?}"
            );
            c.conn
                .send_headers(1, true, |e, out| e.status(400, out))
                .unwrap();
            c.conn.release(1);
            assert_eq!(
                c.sent()[0].fields,
                vec![(":status".into(), "400".into())],
                "{what}"
            );
            // The connection carries on.
            c.request(3, &get("/"), true);
            assert!(
                matches!(c.events()[..], [Event::Request { stream: 3, .. }]),
                "{what}"
            );
        }
        // A client that keeps sending them is cut off.
        let mut c = Client::with(
            Settings {
                max_malformed_streams: 2,
                ..Settings::default()
            },
            &[],
        );
        let bad = [get("/"), vec![("connection", "close".into())]].concat();
        let bad: Vec<(&str, &str)> = bad.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let flags = flag::END_HEADERS | flag::END_STREAM;
        c.send(&frame(kind::HEADERS, flags, 1, &block(&bad)))
            .unwrap();
        let e = c
            .send(&frame(kind::HEADERS, flags, 3, &block(&bad)))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
        // A host field equal to :authority, in any case, is fine.
        let mut c = Client::new();
        c.request(
            1,
            &[get("/"), vec![("host", "Example.COM".into())]].concat(),
            true,
        );
        assert!(matches!(c.events()[..], [Event::Request { .. }]));
    }

    #[test]
    fn request_bodies_flow_and_open_the_window_as_consumed() {
        let settings = Settings {
            initial_window: 100,
            ..Settings::default()
        };
        let mut c = Client::with(settings, &[]);
        c.request(
            1,
            &[get("/up"), vec![("content-length", "150".into())]].concat(),
            false,
        );
        assert!(matches!(
            c.events()[..],
            [Event::Request {
                stream: 1,
                end_stream: false,
                ..
            }]
        ));
        c.send(&frame(kind::DATA, 0, 1, &[1; 60])).unwrap();
        let events = c.events();
        assert!(
            matches!(&events[..], [Event::Data { stream: 1, end_stream: false, data }] if data.len() == 60)
        );
        c.conn.consumed(1, 60);
        let sent = c.sent();
        let updates: Vec<_> = sent
            .iter()
            .filter(|f| f.kind == kind::WINDOW_UPDATE)
            .map(|f| f.stream)
            .collect();
        assert_eq!(updates, vec![1], "the stream's window reopens at half used");
        // 40 + 60 = 100 fits the window again; then the body is complete.
        c.send(&frame(kind::DATA, 0, 1, &[2; 90])).unwrap();
        c.send(&frame(kind::DATA, flag::END_STREAM, 1, &[]))
            .unwrap();
        let events = c.events();
        assert!(
            matches!(
                events.last(),
                Some(Event::Data {
                    end_stream: true,
                    ..
                })
            ),
            "{events:?}"
        );

        // More than the window: the stream is reset, the connection carries on.
        let mut c = Client::with(
            Settings {
                initial_window: 100,
                ..Settings::default()
            },
            &[],
        );
        c.request(1, &get("/up"), false);
        c.events();
        c.send(&frame(kind::DATA, 0, 1, &[1; 101])).unwrap();
        assert_eq!(rst(&c.sent()), vec![(1, ErrorCode::FLOW_CONTROL_ERROR.0)]);

        // A body that does not match its content-length is malformed.
        let mut c = Client::new();
        c.request(
            1,
            &[get("/up"), vec![("content-length", "3".into())]].concat(),
            false,
        );
        c.events();
        c.send(&frame(kind::DATA, flag::END_STREAM, 1, b"ab"))
            .unwrap();
        assert_eq!(rst(&c.sent()), vec![(1, ErrorCode::PROTOCOL_ERROR.0)]);
        assert!(matches!(c.events()[..], [Event::Reset { stream: 1, .. }]));
    }

    #[test]
    fn data_past_the_connection_window_ends_the_connection() {
        let mut c = Client::with(
            Settings {
                initial_window: 1 << 20,
                connection_window: 65_535,
                ..Settings::default()
            },
            &[],
        );
        c.request(1, &get("/up"), false);
        c.events();
        let mut err = None;
        for _ in 0..5 {
            if let Err(e) = c.send(&frame(kind::DATA, 0, 1, &[0; 16_000])) {
                err = Some(e.code);
                break;
            }
        }
        assert_eq!(err, Some(ErrorCode::FLOW_CONTROL_ERROR));
    }

    #[test]
    fn ping_settings_and_goaway() {
        let mut c = Client::new();
        c.send(&frame(kind::PING, 0, 0, b"12345678")).unwrap();
        let sent = c.sent();
        assert_eq!(
            (sent[0].kind, sent[0].flags, &sent[0].payload[..]),
            (kind::PING, flag::ACK, &b"12345678"[..])
        );
        c.send(&frame(kind::PING, flag::ACK, 0, b"12345678"))
            .unwrap();
        assert!(c.sent().is_empty(), "an ACK is not answered");
        let e = c.send(&frame(kind::PING, 0, 0, b"1234")).unwrap_err();
        assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);

        let mut c = Client::new();
        for (setting, value, code) in [
            (setting::MAX_FRAME_SIZE, 100, ErrorCode::PROTOCOL_ERROR),
            (setting::ENABLE_PUSH, 2, ErrorCode::PROTOCOL_ERROR),
            (
                setting::INITIAL_WINDOW_SIZE,
                1 << 31,
                ErrorCode::FLOW_CONTROL_ERROR,
            ),
        ] {
            let mut s = BytesMut::new();
            frame::write_settings(&mut s, &[(setting, value)]);
            let mut fresh = Client::new();
            assert_eq!(fresh.send(&s).map_err(|e| e.code), Err(code));
        }
        c.send(&frame(kind::UNKNOWN_FOR_TESTS, 0, 0, b"ignored"))
            .unwrap();

        // GOAWAY from weir: the open stream is served, later ones are ignored.
        c.request(1, &get("/"), true);
        c.events();
        c.conn.go_away();
        c.request(3, &get("/"), true);
        assert!(c.events().is_empty());
        assert!(!c.conn.is_finished());
        c.respond(1, b"ok");
        c.conn.release(1);
        assert!(c.conn.is_finished());
    }

    #[test]
    fn trailers_both_ways() {
        let mut c = Client::new();
        c.request(1, &get("/grpc"), false);
        c.send(&frame(kind::DATA, 0, 1, b"msg")).unwrap();
        let t = block(&[("grpc-timeout", "1S")]);
        c.send(&frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &t,
        ))
        .unwrap();
        let events = c.events();
        assert!(
            matches!(&events[2], Event::Trailers { stream: 1, fields } if fields[0].name == "grpc-timeout")
        );
        c.conn
            .send_headers(1, false, |e, out| e.status(200, out))
            .unwrap();
        c.conn
            .send_data(1, Bytes::from_static(b"reply"), false)
            .unwrap();
        c.conn
            .send_trailers(1, |e, out| e.field(b"grpc-status", b"0", out))
            .unwrap();
        c.conn.release(1);
        let sent = c.sent();
        let kinds: Vec<_> = sent.iter().map(|f| (f.kind, f.flags)).collect();
        assert_eq!(
            kinds,
            vec![
                (kind::HEADERS, flag::END_HEADERS),
                (kind::DATA, 0),
                (kind::HEADERS, flag::END_HEADERS | flag::END_STREAM)
            ]
        );
        assert_eq!(sent[2].fields, vec![("grpc-status".into(), "0".into())]);
    }

    #[test]
    fn an_unfinished_response_is_reset_when_released() {
        let mut c = Client::new();
        c.request(1, &get("/"), true);
        c.request(3, &get("/"), true);
        c.events();
        c.conn.release(1);
        c.conn
            .send_headers(3, false, |e, out| e.status(200, out))
            .unwrap();
        c.conn.release(3);
        let sent = c.sent();
        assert_eq!(
            rst(&sent),
            vec![(1, ErrorCode::CANCEL.0), (3, ErrorCode::INTERNAL_ERROR.0)]
        );
        assert!(c.conn.streams.is_empty());
        assert!(
            c.events().is_empty(),
            "no Reset for a stream the application let go"
        );
    }

    #[test]
    fn the_application_resets_an_unfinished_response_with_its_code() {
        let mut c = Client::new();
        c.request(1, &get("/"), true);
        c.request(3, &get("/"), true);
        c.events();
        c.conn
            .send_headers(1, false, |e, out| e.status(200, out))
            .unwrap();
        c.conn.reset(1, ErrorCode::INTERNAL_ERROR);
        // A complete response is not reset.
        c.conn
            .send_headers(3, true, |e, out| e.status(204, out))
            .unwrap();
        c.conn.reset(3, ErrorCode::INTERNAL_ERROR);
        let sent = c.sent();
        assert_eq!(rst(&sent), vec![(1, ErrorCode::INTERNAL_ERROR.0)]);
        assert!(
            matches!(c.events()[..], [Event::Reset { stream: 1, code }] if code == ErrorCode::INTERNAL_ERROR),
            "the stream's server hears of it"
        );
        assert!(c.conn.send_data(1, Bytes::from_static(b"x"), true).is_err());
    }

    #[test]
    fn a_response_head_larger_than_a_frame_is_continued() {
        let mut c = Client::new();
        c.request(1, &get("/"), true);
        c.events();
        let big = vec![b'v'; 20_000];
        c.conn
            .send_headers(1, true, |e, out| {
                e.status(200, out);
                e.field(b"x-big", &big, out);
            })
            .unwrap();
        let mut out = c.conn.output().split();
        let first = FrameHead::parse(&out).unwrap();
        assert_eq!(
            (first.kind, first.flags, first.len),
            (kind::HEADERS, flag::END_STREAM, 16_384)
        );
        out.advance(HEADER_LEN + 16_384);
        let second = FrameHead::parse(&out).unwrap();
        assert_eq!(
            (second.kind, second.flags),
            (kind::CONTINUATION, flag::END_HEADERS)
        );
    }

    #[test]
    fn frames_for_streams_weir_is_done_with_are_answered_not_fatal() {
        let mut c = Client::new();
        c.request(1, &get("/"), false);
        c.events();
        c.respond(1, b"done early");
        c.conn.release(1);
        let sent = c.sent();
        assert_eq!(
            rst(&sent),
            vec![(1, ErrorCode::NO_ERROR.0)],
            "the client may stop sending"
        );
        c.send(&frame(kind::DATA, 0, 1, b"late")).unwrap();
        c.send(&frame(kind::WINDOW_UPDATE, 0, 1, &5u32.to_be_bytes()))
            .unwrap();
        c.send(&frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block(&[("x", "y")]),
        ))
        .unwrap();
        assert_eq!(
            rst(&c.sent()),
            vec![
                (1, ErrorCode::STREAM_CLOSED.0),
                (1, ErrorCode::STREAM_CLOSED.0)
            ]
        );
        // Frames for streams never opened are connection errors.
        let e = c
            .send(&frame(kind::WINDOW_UPDATE, 0, 9, &5u32.to_be_bytes()))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn a_stream_opened_below_one_already_opened_is_a_connection_error() {
        let mut c = Client::new();
        c.request(5, &get("/"), true);
        c.events();
        // Stream 3 was never opened; opening it after 5 breaks §5.1.1.
        let fields = get("/");
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let e = c
            .send(&frame(
                kind::HEADERS,
                flag::END_HEADERS | flag::END_STREAM,
                3,
                &block(&fields),
            ))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
        assert_eq!(goaway_code(&c.sent()), Some(ErrorCode::PROTOCOL_ERROR.0));
    }

    #[test]
    fn data_on_a_stream_the_client_reset_is_a_stream_closed_error() {
        let mut c = Client::new();
        let post = vec![
            (":method", "POST".to_string()),
            (":scheme", "http".into()),
            (":authority", "example.com".into()),
            (":path", "/".into()),
        ];
        c.request(1, &post, false);
        c.events();
        c.send(&frame(
            kind::RST_STREAM,
            0,
            1,
            &ErrorCode::CANCEL.0.to_be_bytes(),
        ))
        .unwrap();
        assert!(c.events().contains(&Event::Reset {
            stream: 1,
            code: ErrorCode::CANCEL
        }));
        c.sent();
        c.send(&frame(kind::DATA, 0, 1, b"late")).unwrap();
        assert_eq!(rst(&c.sent()), vec![(1, ErrorCode::STREAM_CLOSED.0)]);
    }

    #[test]
    fn frames_that_do_no_work_end_the_connection_past_the_budget() {
        let settings = Settings {
            max_idle_frames: 10,
            ..Settings::default()
        };
        let post = vec![
            (":method", "POST".to_string()),
            (":scheme", "http".into()),
            (":authority", "example.com".into()),
            (":path", "/".into()),
        ];
        let idle_frames: [Vec<u8>; 5] = [
            frame(kind::DATA, 0, 1, b""),
            frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 16]),
            frame(kind::PING, 0, 0, &[0; 8]),
            frame(kind::SETTINGS, 0, 0, b""),
            frame(0x20, 0, 0, b"unknown type"),
        ];
        for idle in &idle_frames {
            let mut c = Client::with(settings.clone(), &[]);
            c.request(1, &post, false);
            // Work in between starts the count anew: 10 idle, data, 10 idle is fine.
            for _ in 0..10 {
                c.send(idle).unwrap();
            }
            c.send(&frame(kind::DATA, 0, 1, b"body")).unwrap();
            for _ in 0..10 {
                c.send(idle).unwrap();
            }
            // The 11th in a row is one too many.
            let e = c.send(idle).unwrap_err();
            assert_eq!(e.code, ErrorCode::ENHANCE_YOUR_CALM, "{idle:?}");
            assert_eq!(goaway_code(&c.sent()), Some(ErrorCode::ENHANCE_YOUR_CALM.0));
        }
        // Empty CONTINUATION frames in a header block count too.
        let mut c = Client::with(settings, &[]);
        let fields = get("/");
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        c.send(&frame(kind::HEADERS, flag::END_STREAM, 1, &block(&fields)))
            .unwrap();
        for _ in 0..10 {
            c.send(&frame(kind::CONTINUATION, 0, 1, b"")).unwrap();
        }
        let e = c.send(&frame(kind::CONTINUATION, 0, 1, b"")).unwrap_err();
        assert_eq!(e.code, ErrorCode::ENHANCE_YOUR_CALM);
        // Acknowledgements of weir's own PING and SETTINGS are not idle.
        let mut c = Client::with(
            Settings {
                max_idle_frames: 2,
                ..Settings::default()
            },
            &[],
        );
        for _ in 0..10 {
            c.send(&frame(kind::PING, flag::ACK, 0, &[0; 8])).unwrap();
            c.send(&frame(kind::SETTINGS, flag::ACK, 0, b"")).unwrap();
        }
    }

    #[test]
    fn weir_sending_resets_the_idle_budget_and_a_reset_flood_does_not() {
        let settings = Settings {
            max_idle_frames: 10,
            ..Settings::default()
        };
        // A client reading a response may PING every round trip.
        let mut c = Client::with(settings.clone(), &[]);
        c.request(1, &get("/"), true);
        for _ in 0..9 {
            c.send(&frame(kind::PING, 0, 0, &[0; 8])).unwrap();
        }
        c.respond(1, b"a response");
        for _ in 0..10 {
            c.send(&frame(kind::PING, 0, 0, &[0; 8])).unwrap();
        }
        let e = c.send(&frame(kind::PING, 0, 0, &[0; 8])).unwrap_err();
        assert_eq!(e.code, ErrorCode::ENHANCE_YOUR_CALM);
        // DATA on a stream the client reset is answered with a reset each time, and counts.
        let post = vec![
            (":method", "POST".to_string()),
            (":scheme", "http".into()),
            (":authority", "example.com".into()),
            (":path", "/".into()),
        ];
        let mut c = Client::with(settings, &[]);
        c.request(1, &post, false);
        c.send(&frame(
            kind::RST_STREAM,
            0,
            1,
            &ErrorCode::CANCEL.0.to_be_bytes(),
        ))
        .unwrap();
        for _ in 0..10 {
            c.send(&frame(kind::DATA, 0, 1, b"x")).unwrap();
        }
        let e = c.send(&frame(kind::DATA, 0, 1, b"x")).unwrap_err();
        assert_eq!(e.code, ErrorCode::ENHANCE_YOUR_CALM);
    }
}
