//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte frame header, the payload layouts weir
//! reads, and the frames it writes.
//!
//! Must not: decide what a frame means for a connection or stream (that is the
//! connection's state machine); this module only checks what a frame's own bytes can say
//! is wrong: lengths, padding, reserved identifiers.

use bytes::{BufMut, BytesMut};
use std::ops::Range;

/// What a client sends first on a connection (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The length of a frame header.
pub const HEADER_LEN: usize = 9;

/// The smallest SETTINGS_MAX_FRAME_SIZE, and the default (RFC 9113 §6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE a peer may set.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The initial flow-control window of a connection and of each stream (§6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The largest flow-control window (§6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Frame types (§6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    #[cfg(test)]
    pub const UNKNOWN_FOR_TESTS: u8 = 0xfa;
}

/// Frame flags (§6); which apply depends on the type.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Setting identifiers (§6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes of RST_STREAM and GOAWAY (§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
}

/// The code's name in RFC 9113 §7, for logs.
impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            other => return write!(f, "unknown error code {other:#x}"),
        };
        f.write_str(name)
    }
}

/// A frame header (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Payload length.
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// The stream identifier, reserved bit cleared.
    pub stream: u32,
}

impl FrameHead {
    /// Reads a frame header from the first [`HEADER_LEN`] bytes of `buf` (`None` when
    /// fewer have arrived).
    pub fn parse(buf: &[u8]) -> Option<FrameHead> {
        let b: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(FrameHead {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn write(self, out: &mut BytesMut) {
        out.put_slice(&self.to_bytes());
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let len = self.len.to_be_bytes();
        let id = (self.stream & 0x7fff_ffff).to_be_bytes();
        [
            len[1], len[2], len[3], self.kind, self.flags, id[0], id[1], id[2], id[3],
        ]
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A frame's bytes contradict its header: a connection error of type PROTOCOL_ERROR
/// or FRAME_SIZE_ERROR, as the field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedFrame {
    pub code: ErrorCode,
    pub reason: &'static str,
}

fn malformed(code: ErrorCode, reason: &'static str) -> MalformedFrame {
    MalformedFrame { code, reason }
}

/// Where the data of a DATA or HEADERS payload is once its padding is removed (§6.1,
/// §6.2). For HEADERS with the PRIORITY flag the 5 priority bytes are skipped as well
/// (weir does not prioritise; RFC 9113 deprecates the scheme), but their dependency is
/// returned so that a stream depending on itself can be refused.
pub fn unpadded(
    head: &FrameHead,
    payload: &[u8],
) -> Result<(Range<usize>, Option<u32>), MalformedFrame> {
    let mut start = 0;
    let mut end = payload.len();
    if head.has(flag::PADDED) {
        let pad = *payload.first().ok_or(malformed(
            ErrorCode::FRAME_SIZE_ERROR,
            "padded frame without pad length",
        ))? as usize;
        start = 1;
        if pad >= end {
            return Err(malformed(
                ErrorCode::PROTOCOL_ERROR,
                "padding fills the frame",
            ));
        }
        end -= pad;
    }
    let mut depends_on = None;
    if head.kind == kind::HEADERS && head.has(flag::PRIORITY) {
        let p = payload
            .get(start..start + 5)
            .filter(|_| start + 5 <= end)
            .ok_or(malformed(
                ErrorCode::FRAME_SIZE_ERROR,
                "HEADERS priority cut short",
            ))?;
        depends_on = Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
        start += 5;
    }
    Ok((start..end, depends_on))
}

/// The settings in a SETTINGS payload, as (identifier, value).
pub fn settings(payload: &[u8]) -> Result<impl Iterator<Item = (u16, u32)> + '_, MalformedFrame> {
    if !payload.len().is_multiple_of(6) {
        return Err(malformed(
            ErrorCode::FRAME_SIZE_ERROR,
            "SETTINGS length not a multiple of 6",
        ));
    }
    Ok(payload.chunks_exact(6).map(|s| {
        (
            u16::from_be_bytes([s[0], s[1]]),
            u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
        )
    }))
}

/// The 31-bit value of a WINDOW_UPDATE, RST_STREAM (error code) or PRIORITY-sized payload
/// of exactly `len` bytes.
pub fn fixed_u32(payload: &[u8], len: usize) -> Result<u32, MalformedFrame> {
    if payload.len() != len {
        return Err(malformed(
            ErrorCode::FRAME_SIZE_ERROR,
            "fixed-size frame of the wrong length",
        ));
    }
    Ok(u32::from_be_bytes([
        payload[0], payload[1], payload[2], payload[3],
    ]))
}

/// Writes a SETTINGS frame.
pub fn write_settings(out: &mut BytesMut, values: &[(u16, u32)]) {
    head(kind::SETTINGS, 0, 0, values.len() * 6).write(out);
    for &(id, value) in values {
        out.put_u16(id);
        out.put_u32(value);
    }
}

pub fn write_settings_ack(out: &mut BytesMut) {
    head(kind::SETTINGS, flag::ACK, 0, 0).write(out);
}

pub fn write_ping_ack(out: &mut BytesMut, opaque: &[u8; 8]) {
    head(kind::PING, flag::ACK, 0, 8).write(out);
    out.put_slice(opaque);
}

pub fn write_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    head(kind::WINDOW_UPDATE, 0, stream, 4).write(out);
    out.put_u32(increment & 0x7fff_ffff);
}

pub fn write_rst_stream(out: &mut BytesMut, stream: u32, code: ErrorCode) {
    head(kind::RST_STREAM, 0, stream, 4).write(out);
    out.put_u32(code.0);
}

pub fn write_goaway(out: &mut BytesMut, last_stream: u32, code: ErrorCode, debug: &[u8]) {
    head(kind::GOAWAY, 0, 0, 8 + debug.len()).write(out);
    out.put_u32(last_stream & 0x7fff_ffff);
    out.put_u32(code.0);
    out.put_slice(debug);
}

/// Writes a header block as one HEADERS frame, followed by CONTINUATION frames when it
/// is larger than `max_frame_size`.
pub fn write_headers(
    out: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let max = max_frame_size.max(DEFAULT_MAX_FRAME_SIZE) as usize;
    let mut chunks = block.chunks(max).peekable();
    let mut first = true;
    // An empty block is still one HEADERS frame.
    let empty: &[u8] = &[];
    loop {
        let chunk = chunks.next().unwrap_or(empty);
        let last = chunks.peek().is_none();
        let mut flags = if last { flag::END_HEADERS } else { 0 };
        let kind = if first {
            if end_stream {
                flags |= flag::END_STREAM;
            }
            kind::HEADERS
        } else {
            kind::CONTINUATION
        };
        head(kind, flags, stream, chunk.len()).write(out);
        out.put_slice(chunk);
        first = false;
        if last {
            break;
        }
    }
}

/// Writes the header of a DATA frame of `len` bytes; the caller appends the bytes.
pub fn write_data_head(out: &mut BytesMut, stream: u32, len: usize, end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    head(kind::DATA, flags, stream, len).write(out);
}

fn head(kind: u8, flags: u8, stream: u32, len: usize) -> FrameHead {
    FrameHead {
        len: len as u32,
        kind,
        flags,
        stream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_header_round_trips_and_drops_the_reserved_bit() {
        let mut out = BytesMut::new();
        FrameHead {
            len: 0x01_02_03,
            kind: kind::HEADERS,
            flags: flag::END_HEADERS | flag::END_STREAM,
            stream: 7,
        }
        .write(&mut out);
        assert_eq!(&out[..], &[1, 2, 3, 1, 5, 0, 0, 0, 7]);
        out[5] |= 0x80; // reserved bit set by a peer
        let head = FrameHead::parse(&out).unwrap();
        assert_eq!(
            (head.len, head.kind, head.flags, head.stream),
            (0x010203, 1, 5, 7)
        );
        assert_eq!(FrameHead::parse(&out[..8]), None);
    }

    #[test]
    fn error_codes_print_their_rfc_names() {
        assert_eq!(ErrorCode::CANCEL.to_string(), "CANCEL");
        assert_eq!(ErrorCode(0xd).to_string(), "HTTP_1_1_REQUIRED");
        assert_eq!(ErrorCode(0x42).to_string(), "unknown error code 0x42");
    }

    #[test]
    fn padding_and_priority_are_removed() {
        let data = FrameHead {
            len: 0,
            kind: kind::DATA,
            flags: flag::PADDED,
            stream: 1,
        };
        assert_eq!(unpadded(&data, b"\x02abcXX"), Ok((1..4, None)));
        assert!(
            unpadded(&data, b"\x05abc").is_err(),
            "padding longer than the frame"
        );
        assert!(unpadded(&data, b"").is_err());
        let headers = FrameHead {
            len: 0,
            kind: kind::HEADERS,
            flags: flag::PADDED | flag::PRIORITY,
            stream: 3,
        };
        assert_eq!(
            unpadded(&headers, b"\x01\x00\x00\x00\x03\x10blockP"),
            Ok((6..11, Some(3)))
        );
        assert!(
            unpadded(&headers, b"\x01\x00\x00\x00P").is_err(),
            "priority cut short"
        );
    }

    #[test]
    fn settings_are_read_in_sixes() {
        let got: Vec<_> = settings(b"\x00\x03\x00\x00\x00\x64\x00\x04\x00\x01\x00\x00")
            .unwrap()
            .collect();
        assert_eq!(
            got,
            vec![
                (setting::MAX_CONCURRENT_STREAMS, 100),
                (setting::INITIAL_WINDOW_SIZE, 65_536)
            ]
        );
        assert!(settings(b"\x00\x03\x00").is_err());
    }

    #[test]
    fn a_large_header_block_is_split_into_continuations() {
        let block = vec![b'x'; 40_000];
        let mut out = BytesMut::new();
        write_headers(&mut out, 5, &block, true, DEFAULT_MAX_FRAME_SIZE);
        let mut frames = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let head = FrameHead::parse(&out[at..]).unwrap();
            frames.push((head.kind, head.flags, head.len));
            at += HEADER_LEN + head.len as usize;
        }
        assert_eq!(
            frames,
            vec![
                (kind::HEADERS, flag::END_STREAM, 16_384),
                (kind::CONTINUATION, 0, 16_384),
                (kind::CONTINUATION, flag::END_HEADERS, 7_232),
            ]
        );
        let mut out = BytesMut::new();
        write_headers(&mut out, 1, b"", false, DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(&out[..], &[0, 0, 0, 1, 4, 0, 0, 0, 1]);
    }
}
