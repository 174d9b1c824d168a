//! [`ChunkedDecoder`]: the chunked transfer coding (RFC 9112 §7.1), read strictly, for
//! request bodies a client sends and response bodies an upstream sends.
//!
//! Strict because a chunked body two parsers read differently is a request (or response)
//! smuggled past one of them: an empty size line taken for the last chunk, a bare LF that
//! ends a line for one parser and not the other, an extension that hides a CRLF. So: sizes
//! are 1-16 hex digits; extensions are `;name[=value]` with token names and token or
//! quoted-string values, optional whitespace around `;` and `=`; every line ends in CRLF;
//! a size line (with its extensions) and the trailer section have a length limit. Anything
//! else is an error, never a guess.
//!
//! Must not: do I/O, or keep extensions or trailers (they are checked, then dropped by
//! whoever re-frames the body, or passed on unchanged by whoever validates in place).

/// A body that broke its framing, carried inside an `io::Error` by a stream that checks
/// the body as it is read, so that the reader's error handling can tell it from a network
/// failure (and answer 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BrokenBody(pub(crate) &'static str);

impl std::fmt::Display for BrokenBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

impl std::error::Error for BrokenBody {}

impl BrokenBody {
    /// The `BrokenBody` inside `error`, if that is what it is.
    pub(crate) fn within(error: &(dyn std::error::Error + 'static)) -> Option<BrokenBody> {
        let io = error.downcast_ref::<std::io::Error>()?;
        io.get_ref()?.downcast_ref::<BrokenBody>().copied()
    }
}

/// Longest chunk-size line, extensions included (nginx and HAProxy allow a few KiB too).
const MAX_SIZE_LINE: usize = 4 * 1024;
/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Where a [`ChunkedDecoder`] is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    /// In the hex size of a chunk.
    #[default]
    Size,
    /// Whitespace after the size or an extension, before `;` or CR.
    ExtSpace,
    /// After `;` (and whitespace): an extension name next.
    ExtNameStart,
    /// In an extension's name.
    ExtName,
    /// Whitespace after a name: `=`, `;` or CR next.
    ExtAfterName,
    /// After `=` (and whitespace): a token or a quoted string next.
    ExtValueStart,
    /// In a token value.
    ExtToken,
    /// In a quoted-string value; after a backslash.
    ExtQuoted,
    ExtQuotedEscape,
    /// CR read after the size line; LF next.
    SizeLf,
    /// In a chunk's data.
    Data,
    /// CR then LF after a chunk's data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// In a trailer line, up to CR; then LF.
    Trailer,
    TrailerLf,
    /// CR of the final empty line read; LF next.
    EndLf,
    Done,
}

/// Decodes a chunked body incrementally and strictly (see the module doc).
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    digits: u8,
    remaining: u64,
    line_bytes: usize,
    trailer_bytes: usize,
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// RFC 9110 §5.6.4 `qdtext` (and `obs-text`).
fn is_qdtext(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

impl ChunkedDecoder {
    /// Whether the last chunk and the trailer section are through.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, passing each piece of body data to `data`. Returns how many
    /// bytes it consumed: all of `input`, or fewer when the body ended inside it.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, &'static str> {
        use ChunkState::*;
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            if matches!(
                self.state,
                Size | ExtSpace
                    | ExtNameStart
                    | ExtName
                    | ExtAfterName
                    | ExtValueStart
                    | ExtToken
                    | ExtQuoted
                    | ExtQuotedEscape
            ) {
                self.line_bytes += 1;
                if self.line_bytes > MAX_SIZE_LINE {
                    return Err("chunk size line too long");
                }
            }
            let space = byte == b' ' || byte == b'\t';
            match self.state {
                Size => {
                    if let Some(digit) = (byte as char).to_digit(16) {
                        if self.digits == 16 {
                            return Err("chunk size too long");
                        }
                        self.digits += 1;
                        self.remaining = self.remaining << 4 | u64::from(digit);
                    } else if self.digits == 0 {
                        return Err("chunk without a size");
                    } else if byte == b'\r' {
                        self.state = SizeLf;
                    } else if byte == b';' {
                        self.state = ExtNameStart;
                    } else if space {
                        self.state = ExtSpace;
                    } else {
                        return Err("invalid chunk size");
                    }
                }
                ExtSpace | ExtAfterName if byte == b';' => self.state = ExtNameStart,
                ExtSpace | ExtAfterName if byte == b'\r' => self.state = SizeLf,
                ExtSpace | ExtAfterName | ExtNameStart | ExtValueStart if space => {}
                ExtAfterName if byte == b'=' => self.state = ExtValueStart,
                ExtNameStart | ExtName if is_tchar(byte) => self.state = ExtName,
                ExtName if byte == b';' => self.state = ExtNameStart,
                ExtName if byte == b'=' => self.state = ExtValueStart,
                ExtName if byte == b'\r' => self.state = SizeLf,
                ExtName if space => self.state = ExtAfterName,
                ExtValueStart | ExtToken if is_tchar(byte) => self.state = ExtToken,
                ExtValueStart if byte == b'"' => self.state = ExtQuoted,
                ExtToken if byte == b';' => self.state = ExtNameStart,
                ExtToken if byte == b'\r' => self.state = SizeLf,
                ExtToken if space => self.state = ExtSpace,
                ExtQuoted if byte == b'"' => self.state = ExtSpace,
                ExtQuoted if byte == b'\\' => self.state = ExtQuotedEscape,
                ExtQuoted if is_qdtext(byte) => {}
                ExtQuotedEscape if byte == b'\t' || byte == b' ' || !byte.is_ascii_control() => {
                    self.state = ExtQuoted;
                }
                ExtSpace | ExtNameStart | ExtName | ExtAfterName | ExtValueStart | ExtToken
                | ExtQuoted | ExtQuotedEscape => return Err("invalid chunk extension"),
                SizeLf => {
                    if byte != b'\n' {
                        return Err("chunk size line without CRLF");
                    }
                    self.line_bytes = 0;
                    self.state = if self.remaining == 0 {
                        TrailerStart
                    } else {
                        Data
                    };
                }
                Data => {
                    let available = (input.len() - at) as u64;
                    let take = self.remaining.min(available) as usize;
                    data(&input[at..at + take]);
                    self.remaining -= take as u64;
                    at += take;
                    if self.remaining == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => {
                    if byte != b'\r' {
                        return Err("chunk data longer than its size");
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if byte != b'\n' {
                        return Err("chunk data without CRLF");
                    }
                    self.state = Size;
                    self.digits = 0;
                }
                TrailerStart | Trailer => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err("trailer section too long");
                    }
                    if byte == b'\r' {
                        self.state = if self.state == TrailerStart {
                            EndLf
                        } else {
                            TrailerLf
                        };
                    } else if byte.is_ascii_control() && !(byte == b'\t' && self.state == Trailer) {
                        return Err("control character in trailer");
                    } else {
                        self.state = Trailer;
                    }
                }
                TrailerLf => {
                    if byte != b'\n' {
                        return Err("trailer line without CRLF");
                    }
                    self.state = TrailerStart;
                }
                EndLf => {
                    if byte != b'\n' {
                        return Err("chunked body without final CRLF");
                    }
                    self.state = Done;
                    return Ok(at + 1);
                }
                Done => return Ok(at),
            }
            at += 1;
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), &'static str> {
        let mut decoder = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut at = 0;
        while at < input.len() && !decoder.is_done() {
            let end = (at + step).min(input.len());
            at += decoder.decode(&input[at..end], |d| body.extend_from_slice(d))?;
        }
        assert!(decoder.is_done(), "body not finished");
        Ok((body, at))
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces_and_stop_at_their_end() {
        let input = b"5\r\nhello\r\n7;ext=\"x\"\r\n, world\r\nA \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nHTTP/1.1 200";
        let end = input.len() - b"HTTP/1.1 200".len();
        for step in [1, 2, 3, 7, input.len()] {
            let (body, consumed) = decode_all(input, step).expect("valid");
            assert_eq!(body, b"hello, world0123456789", "step {step}");
            assert_eq!(consumed, end, "step {step}");
        }
        let (body, _) = decode_all(b"0\r\n\r\n", 1).expect("valid");
        assert!(body.is_empty());
    }

    #[test]
    fn extensions_of_tokens_and_quoted_strings_pass() {
        for ext in [
            ";a",
            ";a=b",
            "; a = b ",
            ";a=\"b c\";d",
            ";a=\"q\\\"uote\"",
            ";a;b=1;c=\"\"",
            "\t;name=value",
        ] {
            let input = format!("3{ext}\r\nabc\r\n0{ext}\r\n\r\n");
            let (body, _) =
                decode_all(input.as_bytes(), 1).unwrap_or_else(|e| panic!("{ext:?}: {e}"));
            assert_eq!(body, b"abc", "{ext:?}");
        }
    }

    #[test]
    fn every_ambiguous_shape_is_refused() {
        let refused: [&[u8]; 18] = [
            // An empty size line: "the last chunk" to a lax parser, the rest a new request.
            b"\r\n",
            b"\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            // A bare LF inside an extension, which some parsers take as the line's end.
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"unterminated\r\nhello\r\n0\r\n\r\n",
            b"5;a=b c\r\nhello\r\n0\r\n\r\n",
            b"5;=b\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n\n",
        ];
        for input in refused {
            let mut decoder = ChunkedDecoder::default();
            let result = decoder.decode(input, |_| {});
            assert!(result.is_err(), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn long_size_lines_and_trailers_are_refused() {
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "a".repeat(MAX_SIZE_LINE));
        assert!(ChunkedDecoder::default()
            .decode(long_ext.as_bytes(), |_| {})
            .is_err());
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_TRAILER_BYTES));
        assert!(ChunkedDecoder::default()
            .decode(long_trailer.as_bytes(), |_| {})
            .is_err());
    }
}
