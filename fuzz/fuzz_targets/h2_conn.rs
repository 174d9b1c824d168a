//! An HTTP/2 server connection fed any bytes after a valid preface and SETTINGS, in
//! pieces, with an application that answers every request at once: it never panics, its
//! output is whole frames, it keeps no more streams than its limit, and once it has failed
//! it reads nothing more.
#![no_main]
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use weir_http2::conn::{Event, ServerConnection, Settings};
use weir_http2::frame::{self, FrameHead, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let settings = Settings {
        max_concurrent_streams: 4,
        initial_window: 1000,
        max_header_list_size: 2048,
        max_refused_streams: 8,
        ..Settings::default()
    };
    let mut conn = ServerConnection::new(settings);
    let mut hello = BytesMut::from(&frame::PREFACE[..]);
    frame::write_settings(&mut hello, &[]);
    assert!(conn.recv(&mut hello).is_ok());
    // The first byte splits the input into pieces of that size, as reads would.
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let piece = piece.max(1) as usize;
    let mut buf = BytesMut::new();
    let mut failed = false;
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        let result = conn.recv(&mut buf);
        if failed {
            assert!(result.is_ok() && buf.is_empty(), "read after failing");
        }
        failed |= result.is_err();
        while let Some(event) = conn.next_event() {
            match event {
                Event::Request { stream, end_stream, .. } => {
                    let _ = conn.send_headers(stream, false, |e, out| e.status(200, out));
                    let _ = conn.send_data(stream, Bytes::from_static(b"hello"), true);
                    if end_stream {
                        conn.release(stream);
                    }
                }
                Event::RequestTooLarge { stream } | Event::Malformed { stream, .. } => {
                    let _ = conn.send_headers(stream, true, |e, out| e.status(431, out));
                    conn.release(stream);
                }
                Event::Data { stream, data, end_stream } => {
                    conn.consumed(stream, data.len());
                    if end_stream {
                        conn.release(stream);
                    }
                }
                Event::Trailers { stream, .. } | Event::Reset { stream, .. } => conn.release(stream),
                Event::WindowOpened => {}
            }
        }
        assert!(conn.open_streams() <= 4);
        // The output is whole frames.
        let out = conn.output().split();
        let mut at = 0;
        while at < out.len() {
            let head = FrameHead::parse(&out[at..]).expect("a whole frame header");
            at += HEADER_LEN + head.len as usize;
        }
        assert_eq!(at, out.len());
    }
});
