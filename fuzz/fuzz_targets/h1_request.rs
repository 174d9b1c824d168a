//! HTTP/1 requests from any bytes, read by weir's framing check (`h1::classify`) and strict
//! chunked decoder, and differentially against the reading of the parsers behind it:
//! - classifying never panics, and a head classified in pieces is classified the same once
//!   all of it is there;
//! - a head weir accepts reads the same to httparse with the lenient options HTTP/1 parsers
//!   have (several spaces between the parts of the request line): the same length, method,
//!   target and fields — so Pingora's parser and the upstream's see the head weir checked;
//! - a chunked body weir's decoder accepts is read the same by the chunk-size reader
//!   Pingora uses (`httparse::parse_chunk_size`): the same data, ending at the same byte,
//!   so no byte of it can be read as a request of its own;
//! - the decoder gives the same result whether the body comes whole or in two pieces;
//! - what the direct path forwards of a request it takes reads, to the upstream, as exactly
//!   one request: the same method, target, fields (but `Connection`) and body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_proxy::http::chunked::ChunkedDecoder;
use bytes::Bytes;
use weir_proxy::http::h1::{classify, upstream_copy, Classified, HeadFields, RequestBody};

/// A chunked body as Pingora's reader reads it (chunk sizes by `httparse`, the trailer
/// section up to the first empty line): its data and where it ends.
fn lenient_dechunk(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (index, size) = match httparse::parse_chunk_size(&input[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            _ => return None,
        };
        at += index;
        if size == 0 {
            if input.get(at..at + 2)? == b"\r\n" {
                return Some((body, at + 2));
            }
            let trailers = at.checked_sub(2)?;
            let end = input[trailers..].windows(4).position(|w| w == b"\r\n\r\n")?;
            return Some((body, trailers + end + 4));
        }
        let size = usize::try_from(size).ok()?;
        body.extend_from_slice(input.get(at..at.checked_add(size)?)?);
        at += size + 2;
    }
}

/// A chunked body as weir's decoder reads it, fed in pieces at `cut`.
fn strict_dechunk(input: &[u8], cut: usize) -> Result<(Vec<u8>, usize), &'static str> {
    let mut decoder = ChunkedDecoder::default();
    let mut body = Vec::new();
    let cut = cut.min(input.len());
    let mut at = decoder.decode(&input[..cut], |d| body.extend_from_slice(d))?;
    if !decoder.is_done() {
        at += decoder.decode(&input[cut..], |d| body.extend_from_slice(d))?;
    }
    if decoder.is_done() {
        Ok((body, at))
    } else {
        Err("unfinished")
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let mut fields = HeadFields::default();
    let whole = classify(data, &mut fields);
    // In pieces: a prefix is either still partial or classified the same way.
    let prefix = &data[..(cut as usize).min(data.len())];
    let early = classify(prefix, &mut HeadFields::default());
    if !matches!(early, Classified::Partial | Classified::BodyPending) {
        let same = match (&early, &whole) {
            (Classified::Simple(a), Classified::Simple(b)) => a.head_len == b.head_len,
            (Classified::Other(a), Classified::Other(b)) => a.head_len == b.head_len,
            (Classified::Malformed(a), Classified::Malformed(b)) => a == b,
            _ => false,
        };
        assert!(same, "{early:?} on a prefix, {whole:?} on all");
    }
    let framing = match &whole {
        Classified::Simple(view) => view.framing(),
        Classified::Other(framing) => *framing,
        _ => return,
    };
    // The same head to a lenient parser.
    let mut headers = vec![httparse::EMPTY_HEADER; 10_001];
    let mut req = httparse::Request::new(&mut headers);
    let lenient = httparse::ParserConfig::default()
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .parse_request(&mut req, data);
    assert_eq!(
        lenient,
        Ok(httparse::Status::Complete(framing.head_len)),
        "a head weir accepts reads differently to a lenient parser"
    );
    let mut strict_headers = vec![httparse::EMPTY_HEADER; 10_001];
    let mut strict = httparse::Request::new(&mut strict_headers);
    assert!(strict.parse(data).is_ok());
    assert_eq!(strict.method, req.method);
    assert_eq!(strict.path, req.path);
    assert_eq!(strict.headers.len(), req.headers.len());
    if let Classified::Simple(view) = &whole {
        if let Some(copy) = upstream_copy(&Bytes::copy_from_slice(data)) {
            let mut up_headers = vec![httparse::EMPTY_HEADER; 10_001];
            let mut up = httparse::Request::new(&mut up_headers);
            let Ok(httparse::Status::Complete(up_head)) = up.parse(&copy) else {
                panic!("the upstream copy does not parse: {copy:?}");
            };
            assert_eq!(up.method, strict.method);
            if !strict.path.is_some_and(|p| p.contains('#')) {
                assert_eq!(up.path, strict.path);
            }
            let body = &copy[up_head..];
            assert_eq!(body, &data[view.head_len..view.head_len + view.body_len]);
            let lengths: Vec<&[u8]> = up
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| h.value)
                .collect();
            match lengths.as_slice() {
                [] => assert!(body.is_empty(), "a body without its length"),
                [len] => assert_eq!(*len, body.len().to_string().as_bytes()),
                _ => panic!("two lengths forwarded"),
            }
            assert!(!up
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")));
            let sent: Vec<(&str, &[u8])> = strict
                .headers
                .iter()
                .filter(|h| !h.name.eq_ignore_ascii_case("connection"))
                .map(|h| (h.name, h.value))
                .collect();
            let forwarded: Vec<(&str, &[u8])> =
                up.headers.iter().map(|h| (h.name, h.value)).collect();
            assert_eq!(sent, forwarded, "fields changed on the way");
        }
    }
    if framing.body == RequestBody::Chunked {
        let body = &data[framing.head_len..];
        if let Ok((decoded, end)) = strict_dechunk(body, cut as usize) {
            // Weir accepted it: the lenient reader reads the same data and stops at the
            // same byte.
            assert_eq!(
                lenient_dechunk(body),
                Some((decoded.clone(), end)),
                "a chunked body weir accepts reads differently to the lenient reader"
            );
            // Whole or in pieces, the same.
            assert_eq!(strict_dechunk(body, body.len()), Ok((decoded, end)));
        }
    }
});
