//! HPACK (RFC 7541): the header compression of HTTP/2.
//!
//! [`Decoder`] reads a client's header blocks, keeping the dynamic table the client's
//! encoder indexes into; [`Encoder`] writes weir's response header blocks. The encoder
//! never adds to the client's dynamic table: every field is a static-table index or a
//! literal "without indexing" (and the connection's first block sets the client's table
//! size to zero, [`TABLE_SIZE_ZERO`]), so one block can be encoded apart from the others.
//! Responses relay what the upstream said, so indexing would buy bytes on the wire, not
//! CPU, and a table of ours would be per-connection state to keep and bound.
//!
//! Must not: let one header block cost more memory than its field limit allows (the
//! decoder stops producing fields past it but keeps its table in step), or trust an index,
//! length or size a client sends.

pub mod huffman;
mod static_table;

use bytes::{BufMut, Bytes, BytesMut};
use static_table::{response_name_index, STATIC_TABLE};
use std::collections::VecDeque;

pub use huffman::InvalidHuffman;

/// What RFC 7541 counts for an entry besides its name and value (§4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// A header block could not be decoded: a connection error of type COMPRESSION_ERROR
/// (RFC 9113 §4.3), since the decoder's table can no longer follow the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The block ended inside a representation.
    Truncated,
    /// An integer beyond what any field can need.
    IntegerTooLarge,
    /// An index of zero, or past the end of the tables.
    InvalidIndex,
    /// A Huffman-coded string was malformed.
    Huffman,
    /// A table size update larger than the size weir allows, or after the first field.
    InvalidSizeUpdate,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "header block ends inside a field",
            DecodeError::IntegerTooLarge => "integer too large in header block",
            DecodeError::InvalidIndex => "header field index out of range",
            DecodeError::Huffman => "malformed Huffman string in header block",
            DecodeError::InvalidSizeUpdate => "invalid dynamic table size update",
        })
    }
}

impl std::error::Error for DecodeError {}

impl From<InvalidHuffman> for DecodeError {
    fn from(_: InvalidHuffman) -> Self {
        DecodeError::Huffman
    }
}

/// One decoded header field. Names and values from the static table, the dynamic table or
/// a plain literal share their bytes; only Huffman-coded strings are new allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Bytes,
    pub value: Bytes,
}

/// How a header block ended when it decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Every field was handed on.
    Complete,
    /// The fields passed the list size limit: those past it were decoded (to keep the
    /// dynamic table in step) but not handed on. The request must be refused (431).
    TooLarge,
}

/// The dynamic table the client's encoder fills (RFC 7541 §2.3.2), newest entry first.
#[derive(Debug)]
struct DynamicTable {
    entries: VecDeque<Field>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    fn get(&self, index: usize) -> Option<&Field> {
        self.entries.get(index)
    }

    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some(old) => self.size -= entry_size(&old),
                None => break,
            }
        }
    }

    /// Adds an entry: older ones make room; one larger than the table empties it and is
    /// not kept (§4.4). The entry's bytes are copied so that a small field does not keep
    /// a client's whole header block alive.
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.entries.push_front(Field {
            name: Bytes::copy_from_slice(name),
            value: Bytes::copy_from_slice(value),
        });
        self.size += size;
    }
}

fn entry_size(field: &Field) -> usize {
    field.name.len() + field.value.len() + ENTRY_OVERHEAD
}

/// Decodes a client's header blocks, in the order they came on the connection.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The largest table size the client may choose: what weir advertised in
    /// SETTINGS_HEADER_TABLE_SIZE.
    size_limit: usize,
    /// Scratch space for Huffman decoding, reused from block to block.
    scratch: Vec<u8>,
}

impl Decoder {
    /// Frees the Huffman scratch space and the table's unused room: an idle connection's
    /// decoder keeps only its table's entries.
    pub fn release_idle_memory(&mut self) {
        self.scratch = Vec::new();
        self.table.entries.shrink_to_fit();
    }

    /// A decoder whose table may grow to `size_limit` bytes (SETTINGS_HEADER_TABLE_SIZE,
    /// 4,096 by default).
    pub fn new(size_limit: usize) -> Self {
        Decoder {
            table: DynamicTable {
                entries: VecDeque::new(),
                size: 0,
                max_size: size_limit,
            },
            size_limit,
            scratch: Vec::new(),
        }
    }

    /// The size of the dynamic table now (RFC 7541 §4.1), never above its limit.
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Decodes one complete header block (HEADERS plus any CONTINUATION payloads), handing
    /// each field to `sink` until their size (RFC 9113 §6.5.2: name, value and 32 bytes
    /// each) passes `max_list_size`.
    pub fn decode(
        &mut self,
        block: &Bytes,
        max_list_size: usize,
        mut sink: impl FnMut(Field),
    ) -> Result<Decoded, DecodeError> {
        let mut at = 0;
        let mut list_size = 0usize;
        let mut too_large = false;
        let mut fields_seen = false;
        while at < block.len() {
            let first = block[at];
            let field = if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = read_int(block, &mut at, 7)?;
                self.indexed(index)?
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let field = self.literal(block, &mut at, 6)?;
                self.table.insert(&field.name, &field.value);
                field
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3): only before the first field.
                let size = read_int(block, &mut at, 5)?;
                if fields_seen || size > self.size_limit {
                    return Err(DecodeError::InvalidSizeUpdate);
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001) (§6.2.2, §6.2.3).
                self.literal(block, &mut at, 4)?
            };
            fields_seen = true;
            if too_large {
                continue;
            }
            list_size = list_size.saturating_add(entry_size(&field));
            if list_size > max_list_size {
                too_large = true;
                continue;
            }
            sink(field);
        }
        Ok(if too_large {
            Decoded::TooLarge
        } else {
            Decoded::Complete
        })
    }

    fn indexed(&self, index: usize) -> Result<Field, DecodeError> {
        match index {
            0 => Err(DecodeError::InvalidIndex),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok(Field {
                    name: Bytes::from_static(name.as_bytes()),
                    value: Bytes::from_static(value.as_bytes()),
                })
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or(DecodeError::InvalidIndex),
        }
    }

    /// A literal field whose name index has a `prefix`-bit prefix (0: a literal name).
    fn literal(&mut self, block: &Bytes, at: &mut usize, prefix: u8) -> Result<Field, DecodeError> {
        let name_index = read_int(block, at, prefix)?;
        let name = if name_index == 0 {
            self.string(block, at)?
        } else {
            self.indexed(name_index)?.name
        };
        let value = self.string(block, at)?;
        Ok(Field { name, value })
    }

    /// A string literal (§5.2): a slice of the block, or its Huffman decoding.
    fn string(&mut self, block: &Bytes, at: &mut usize) -> Result<Bytes, DecodeError> {
        let huffman = block.get(*at).ok_or(DecodeError::Truncated)? & 0x80 != 0;
        let len = read_int(block, at, 7)?;
        let end = at.checked_add(len).ok_or(DecodeError::Truncated)?;
        if end > block.len() {
            return Err(DecodeError::Truncated);
        }
        let raw = block.slice(*at..end);
        *at = end;
        if !huffman {
            return Ok(raw);
        }
        self.scratch.clear();
        huffman::decode(&raw, &mut self.scratch)?;
        Ok(Bytes::copy_from_slice(&self.scratch))
    }
}

/// Integers past this are refused: no length or index a header block needs comes near it,
/// and it keeps the arithmetic far from overflow.
const INT_LIMIT: usize = 1 << 24;

/// Reads an integer with an `prefix`-bit prefix (§5.1) at `at`, moving past it.
fn read_int(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, DecodeError> {
    let mask = (1usize << prefix) - 1;
    let first = *block.get(*at).ok_or(DecodeError::Truncated)? as usize & mask;
    *at += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0;
    loop {
        let byte = *block.get(*at).ok_or(DecodeError::Truncated)?;
        *at += 1;
        value += ((byte & 0x7f) as usize) << shift;
        if value > INT_LIMIT {
            return Err(DecodeError::IntegerTooLarge);
        }
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        // Zero-valued continuation bytes add nothing but would shift without end.
        if shift > 21 {
            return Err(DecodeError::IntegerTooLarge);
        }
    }
}

/// Writes `value` with an `prefix`-bit prefix whose other bits are `flags`.
pub(crate) fn write_int(out: &mut BytesMut, flags: u8, prefix: u8, value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.put_u8(flags | value as u8);
        return;
    }
    out.put_u8(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.put_u8((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

/// A dynamic table size update to zero: always within the client's limit, and it says
/// that nothing of weir's will ever be in the client's table. It leads the first header
/// block of a connection.
pub const TABLE_SIZE_ZERO: u8 = 0x20;

/// Writes weir's response header blocks. It keeps no state: each block stands alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct Encoder;

impl Encoder {
    /// Starts a response header block in `out` with its status.
    pub fn status(&self, status: u16, out: &mut BytesMut) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if index != 0 {
            out.put_u8(0x80 | index);
            return;
        }
        // Literal without indexing, name ":status" (8), three digits.
        out.put_u8(0x08);
        let status = status.clamp(100, 999);
        out.put_slice(&[
            3,
            b'0' + (status / 100) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ]);
    }

    /// Adds a field to the block `out` (after [`Self::status`]). `name` must be lowercase
    /// (HTTP/2 requires it; weir's HTTP/1 response parser lowers names).
    pub fn field(&self, name: &[u8], value: &[u8], out: &mut BytesMut) {
        // Credentials are sent "never indexed" so no later hop indexes them either.
        let flags = match name {
            b"set-cookie" | b"authorization" | b"proxy-authorization" | b"cookie" => 0x10,
            _ => 0x00,
        };
        match response_name_index(name) {
            Some(index) => write_int(out, flags, 4, index as usize),
            None => {
                out.put_u8(flags);
                write_int(out, 0, 7, name.len());
                out.put_slice(name);
            }
        }
        write_int(out, 0, 7, value.len());
        out.put_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        decoder: &mut Decoder,
        block: &[u8],
    ) -> Result<Vec<(String, String)>, DecodeError> {
        let mut out = Vec::new();
        let block = Bytes::copy_from_slice(block);
        let done = decoder.decode(&block, usize::MAX, |f| {
            out.push((
                String::from_utf8_lossy(&f.name).into_owned(),
                String::from_utf8_lossy(&f.value).into_owned(),
            ))
        })?;
        assert_eq!(done, Decoded::Complete);
        Ok(out)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn table(decoder: &Decoder) -> Vec<(String, String)> {
        decoder
            .table
            .entries
            .iter()
            .map(|f| {
                (
                    String::from_utf8_lossy(&f.name).into_owned(),
                    String::from_utf8_lossy(&f.value).into_owned(),
                )
            })
            .collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn integers_follow_the_rfc_examples() {
        // RFC 7541 C.1: 10 in a 5-bit prefix, 1337 in a 5-bit prefix, 42 in 8 bits.
        let mut out = BytesMut::new();
        write_int(&mut out, 0, 5, 10);
        write_int(&mut out, 0, 5, 1337);
        write_int(&mut out, 0, 8, 42);
        assert_eq!(&out[..], &[0x0a, 0x1f, 0x9a, 0x0a, 0x2a]);
        let mut at = 0;
        assert_eq!(read_int(&out, &mut at, 5), Ok(10));
        assert_eq!(read_int(&out, &mut at, 5), Ok(1337));
        assert_eq!(read_int(&out, &mut at, 8), Ok(42));
        assert_eq!(at, out.len());
        // Too large, and cut short.
        let mut at = 0;
        assert_eq!(
            read_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x0f], &mut at, 5),
            Err(DecodeError::IntegerTooLarge)
        );
        let mut at = 0;
        assert_eq!(
            read_int(&[0x1f, 0x9a], &mut at, 5),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn the_rfc_request_examples_without_huffman_decode() {
        // RFC 7541 C.3: three requests on one connection.
        let mut d = Decoder::new(4096);
        let first = decode_all(&mut d, &hex("828684410f7777772e6578616d706c652e636f6d")).unwrap();
        assert_eq!(
            first,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table.size, 57);
        let second = decode_all(&mut d, &hex("828684be58086e6f2d6361636865")).unwrap();
        assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
        assert_eq!(d.table.size, 110);
        let third = decode_all(
            &mut d,
            &hex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"),
        )
        .unwrap();
        assert_eq!(
            third,
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(
            table(&d),
            pairs(&[
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table.size, 164);
    }

    #[test]
    fn the_rfc_request_examples_with_huffman_decode() {
        // RFC 7541 C.4.
        let mut d = Decoder::new(4096);
        let first = decode_all(&mut d, &hex("828684418cf1e3c2e5f23a6ba0ab90f4ff")).unwrap();
        assert_eq!(first[3], (":authority".into(), "www.example.com".into()));
        let second = decode_all(&mut d, &hex("828684be5886a8eb10649cbf")).unwrap();
        assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
        let third = decode_all(
            &mut d,
            &hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"),
        )
        .unwrap();
        assert_eq!(third[4], ("custom-key".into(), "custom-value".into()));
        assert_eq!(d.table.size, 164);
    }

    #[test]
    fn eviction_follows_the_rfc_response_examples() {
        // RFC 7541 C.5 (a 256-byte table): the third response evicts entries.
        let mut d = Decoder::new(256);
        d.table.set_max_size(256);
        decode_all(
            &mut d,
            &hex(
                "4803333032580770726976617465611d4d6f6e2c203231204f637420323031\
                 332032303a31333a323120474d546e1768747470733a2f2f7777772e657861\
                 6d706c652e636f6d",
            ),
        )
        .unwrap();
        assert_eq!(d.table.size, 222);
        decode_all(&mut d, &hex("4803333037c1c0bf")).unwrap();
        assert_eq!(d.table.size, 222);
        assert_eq!(d.table.entries[0].value, "307");
        let third = decode_all(
            &mut d,
            &hex(
                "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54\
                 c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541\
                 585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
            ),
        )
        .unwrap();
        assert_eq!(third[0], (":status".into(), "200".into()));
        assert_eq!(third[4], ("content-encoding".into(), "gzip".into()));
        assert_eq!(d.table.size, 215);
        assert_eq!(
            table(&d)
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["set-cookie", "content-encoding", "date"]
        );
    }

    #[test]
    fn bad_blocks_are_errors_not_panics() {
        let mut d = Decoder::new(4096);
        for (block, error) in [
            (&[0x80][..], DecodeError::InvalidIndex),
            (&[0xbe][..], DecodeError::InvalidIndex), // 62: the dynamic table is empty
            (
                &[0xff, 0xff, 0xff, 0xff, 0x7f][..],
                DecodeError::IntegerTooLarge,
            ),
            (&[0x41, 0x05, b'a'][..], DecodeError::Truncated),
            (&[0x40][..], DecodeError::Truncated),
            (&[0x41, 0x81, 0x00][..], DecodeError::Huffman),
            (&[0x3f, 0xe2, 0x1f][..], DecodeError::InvalidSizeUpdate), // 4,097
            (&[0x82, 0x20][..], DecodeError::InvalidSizeUpdate),       // after a field
        ] {
            let block = Bytes::copy_from_slice(block);
            assert_eq!(
                d.decode(&block, usize::MAX, |_| {}),
                Err(error),
                "{block:?}"
            );
        }
    }

    #[test]
    fn a_list_past_its_limit_is_cut_but_the_table_keeps_up() {
        let mut d = Decoder::new(4096);
        // Two literals with incremental indexing, each 32 + 1 + 5 = 38 bytes.
        let block = Bytes::from_static(b"\x40\x01a\x05aaaaa\x40\x01b\x05bbbbb");
        let mut got = Vec::new();
        assert_eq!(
            d.decode(&block, 50, |f| got.push(f.name)),
            Ok(Decoded::TooLarge)
        );
        assert_eq!(got, vec![Bytes::from_static(b"a")]);
        assert_eq!(d.table.entries.len(), 2, "both entries are indexed");
        // A size update to zero empties the table.
        let block = Bytes::from_static(b"\x20\x82");
        assert_eq!(d.decode(&block, 100, |_| {}), Ok(Decoded::Complete));
        assert_eq!((d.table.entries.len(), d.table.size), (0, 0));
    }

    #[test]
    fn an_entry_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(40);
        d.table.insert(b"a", b"b");
        assert_eq!(d.table.size, 34);
        d.table.insert(b"name", b"value");
        assert_eq!((d.table.entries.len(), d.table.size), (0, 0));
    }

    #[test]
    fn encoded_responses_decode_to_what_was_written() {
        let e = Encoder;
        let mut out = BytesMut::new();
        out.put_u8(TABLE_SIZE_ZERO);
        e.status(200, &mut out);
        e.field(b"content-type", b"text/plain", &mut out);
        e.field(b"x-request-id", b"abc", &mut out);
        e.field(b"set-cookie", b"a=b", &mut out);
        e.field(b"x-long", &[b'v'; 300], &mut out);
        let mut d = Decoder::new(4096);
        let got = decode_all(&mut d, &out).unwrap();
        assert_eq!(
            got,
            pairs(&[
                (":status", "200"),
                ("content-type", "text/plain"),
                ("x-request-id", "abc"),
                ("set-cookie", "a=b"),
                ("x-long", &"v".repeat(300)),
            ])
        );
        assert_eq!(d.table.size, 0, "nothing was indexed");
        let mut out = BytesMut::new();
        e.status(503, &mut out);
        assert_eq!(&out[..], b"\x08\x03503");
        assert_eq!(
            decode_all(&mut d, &out).unwrap(),
            pairs(&[(":status", "503")])
        );
    }
}
