//! HPACK from any bytes: decoding never panics, the dynamic table stays within its limit,
//! no field list passes the list limit, and what the encoder writes decodes to what it was
//! given; Huffman coding round-trips.
#![no_main]
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use weir_http2::hpack::{huffman, Decoded, Decoder, Encoder, ENTRY_OVERHEAD};

fuzz_target!(|data: &[u8]| {
    // The input is a run of header blocks, each led by its length byte, on one connection.
    let mut decoder = Decoder::new(4096);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let block = Bytes::copy_from_slice(&tail[..len]);
        rest = &tail[len..];
        let mut list = 0;
        let result = decoder.decode(&block, 1024, |f| {
            list += f.name.len() + f.value.len() + ENTRY_OVERHEAD
        });
        assert!(list <= 1024, "{list} bytes of fields passed the limit");
        assert!(decoder.table_size() <= 4096);
        if result.is_err() {
            break; // a connection error: nothing more is decoded on it
        }
    }

    let mut coded = Vec::new();
    huffman::encode(data, &mut coded);
    assert_eq!(coded.len(), huffman::encoded_len(data));
    let mut back = Vec::new();
    assert_eq!(huffman::decode(&coded, &mut back), Ok(()));
    assert_eq!(back, data);

    // The encoder: the input split at 0 bytes into name/value pairs (names lowercased).
    let mut parts = data.split(|&b| b == 0);
    let mut fields = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        fields.push((name.to_ascii_lowercase(), value.to_vec()));
    }
    let encoder = Encoder;
    let mut out = BytesMut::new();
    encoder.status(200 + (data.len() % 400) as u16, &mut out);
    for (name, value) in &fields {
        encoder.field(name, value, &mut out);
    }
    let mut decoded = Vec::new();
    let done = Decoder::new(4096).decode(&out.freeze(), usize::MAX, |f| {
        decoded.push((f.name.to_vec(), f.value.to_vec()))
    });
    assert_eq!(done, Ok(Decoded::Complete));
    assert_eq!(&decoded[1..], &fields[..]);
});
