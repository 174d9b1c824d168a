//! End to end: weir's own HTTP/2 server (the default, `--http1-path direct`) under what a
//! client can do with the protocol: hold its flow-control window shut, upload bodies in
//! many frames, and open and reset streams faster than they can be served. The real weir
//! binary, real echo upstreams, the `h2` crate as the client.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;
use support::{service_yaml, Echo, ManifestDir, Weir};

const APP: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app, namespace: demo}
spec:
  ingressClassName: weir
  rules:
  - host: app.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}]}
---
";

fn start() -> (Weir, Echo, ManifestDir) {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write(
        "app.yaml",
        &(APP.to_string() + &service_yaml("demo", "app", &[app.addr])),
    );
    let weir = Weir::start(&dir.path(), &[]);
    (weir, app, dir)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://app.example.com{path}"))
        .body(())
        .expect("request")
}

/// Reads a whole body, giving its window back as it goes.
async fn body_of(response: http::Response<h2::RecvStream>) -> Vec<u8> {
    let mut stream = response.into_body();
    let mut body = Vec::new();
    while let Some(data) = stream.data().await {
        let data = data.expect("body");
        let _ = stream.flow_control().release_capacity(data.len());
        body.extend_from_slice(&data);
    }
    body
}

/// Sends `body` as the stream's windows allow, in frames of at most 16 KiB; `end`: the
/// last frame ends the stream (an empty body sends nothing).
async fn send_body(out: &mut h2::SendStream<Bytes>, mut body: Bytes, end: bool) {
    while !body.is_empty() {
        out.reserve_capacity(body.len().min(16_384));
        let granted = std::future::poll_fn(|cx| out.poll_capacity(cx))
            .await
            .expect("capacity")
            .expect("capacity");
        let piece = body.split_to(granted.min(body.len()));
        let last = end && body.is_empty();
        out.send_data(piece, last).expect("data");
    }
}

async fn connect(weir: &Weir, builder: &h2::client::Builder) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(weir.http)
        .await
        .expect("connect");
    let (client, connection) = builder.handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    client
}

/// A stream whose client does not give its window back stalls alone: the response waits
/// in weir (not in a buffer that grows) while another stream on the same connection is
/// answered, and it completes, intact, once the client reads.
#[test]
fn a_stream_with_a_shut_window_waits_without_holding_up_the_connection() {
    let (weir, _app, _dir) = start();
    runtime().block_on(async {
        let mut builder = h2::client::Builder::new();
        builder.initial_window_size(64);
        let client = connect(&weir, &builder).await;
        // The echo's answer describes the request: ~600 bytes with a long field.
        let long = "x".repeat(4000);
        let request = http::Request::get("http://app.example.com/stalled")
            .header("x-long", &long)
            .body(())
            .expect("request");
        let mut c = client.clone().ready().await.expect("ready");
        let (stalled, _) = c.send_request(request, true).expect("send");
        let stalled = stalled.await.expect("response head");
        let mut stalled = stalled.into_body();
        let first = stalled.data().await.expect("first piece").expect("data");
        assert!(
            first.len() <= 64,
            "{} bytes past a 64-byte window",
            first.len()
        );
        // Not given back: the stream stays stalled. Another stream is answered meanwhile.
        let mut c = client.clone().ready().await.expect("ready");
        let (other, _) = c.send_request(get("/other"), true).expect("send");
        let other = tokio::time::timeout(Duration::from_secs(10), other)
            .await
            .expect("the other stream was held up")
            .expect("other response");
        let other: Value = serde_json::from_slice(&body_of(other).await).expect("json");
        assert_eq!(other["path"], "/other");
        // Now the stalled stream is read to its end.
        let mut body = first.to_vec();
        let _ = stalled.flow_control().release_capacity(first.len());
        while let Some(data) = stalled.data().await {
            let data = data.expect("body");
            let _ = stalled.flow_control().release_capacity(data.len());
            body.extend_from_slice(&data);
        }
        let echoed: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(echoed["headers"]["x-long"], long.as_str());
    });
}

/// A request body sent in many frames, as the windows allow, reaches the upstream whole
/// (handed to Pingora's proxy, which serves requests with streamed bodies), with the
/// client's address in `X-Forwarded-For`; so does a body whose client ends it with
/// trailers.
#[test]
fn request_bodies_reach_the_upstream_whole() {
    let (weir, _app, _dir) = start();
    runtime().block_on(async {
        let client = connect(&weir, &h2::client::Builder::new()).await;
        // Three rounds: each body goes on an upstream connection the one before used, so a
        // copy that ended wrongly (Pingora once ended one twice, below) shows.
        let cases = [(300_000usize, false), (70_000, true), (0, true)];
        for (size, trailers) in std::iter::repeat_n(cases, 3).flatten() {
            let request = http::Request::post("http://app.example.com/upload")
                .body(())
                .expect("request");
            let mut c = client.clone().ready().await.expect("ready");
            let (response, mut out) = c.send_request(request, false).expect("send");
            send_body(&mut out, Bytes::from(vec![7u8; size]), false).await;
            if trailers {
                let mut map = http::HeaderMap::new();
                map.insert("x-checksum", http::HeaderValue::from_static("7"));
                out.send_trailers(map).expect("trailers");
            } else {
                out.send_data(Bytes::new(), true).expect("end");
            }
            let response = tokio::time::timeout(Duration::from_secs(10), response)
                .await
                .expect("answer in time")
                .expect("response");
            let status = response.status();
            let body = body_of(response).await;
            assert_eq!(
                status,
                200,
                "size {size}, trailers {trailers}: {}",
                String::from_utf8_lossy(&body)
            );
            let echoed: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(echoed["method"], "POST");
            assert_eq!(echoed["body_bytes"], size, "trailers: {trailers}");
            // Pingora's session reports the client connection.
            assert_eq!(echoed["headers"]["x-forwarded-for"], "127.0.0.1");
            assert_eq!(echoed["headers"]["x-forwarded-proto"], "http");
        }
    });
}

/// Streams opened and reset at once keep their slot until weir is done with them, so a
/// client cannot have more requests under way than the concurrency limit by resetting
/// them ("rapid reset"): while 100 reset requests still wait on their upstream, new
/// streams are refused; once they are done, the connection serves again.
#[test]
fn reset_streams_hold_their_slot_until_served() {
    let (weir, _app, _dir) = start();
    runtime().block_on(async {
        let client = connect(&weir, &h2::client::Builder::new()).await;
        for _ in 0..100 {
            let mut c = client.clone().ready().await.expect("ready");
            let (response, mut out) = c
                .send_request(get("/held?delay_ms=3000"), true)
                .expect("send");
            out.send_reset(h2::Reason::CANCEL);
            drop(response);
        }
        // Let weir read the resets, then try more streams on the same connection.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut refused = 0;
        for _ in 0..20 {
            let mut c = client.clone().ready().await.expect("ready");
            let (response, _) = c.send_request(get("/more"), true).expect("send");
            match tokio::time::timeout(Duration::from_secs(10), response).await {
                Ok(Err(e)) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => refused += 1,
                other => panic!("a stream past the limit was not refused: {other:?}"),
            }
        }
        assert_eq!(refused, 20);
        // The held requests end (their upstream answers after 3 s); the slots come back.
        let mut served = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut c = client.clone().ready().await.expect("ready");
            let (response, _) = c.send_request(get("/after"), true).expect("send");
            if let Ok(response) = response.await {
                served = Some(body_of(response).await);
                break;
            }
        }
        let served: Value = serde_json::from_slice(&served.expect("served again")).expect("json");
        assert_eq!(served["path"], "/after");
    });
    // Each held request reached its upstream once, and was logged.
    let log = weir.access_log_of(101);
    let held = log
        .iter()
        .filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/held")))
        .count();
    assert_eq!(held, 100, "{log:?}");
}

/// Frames as a client writes them, for the protocol-error cases.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Sends the preface, empty SETTINGS and `then` on a new connection; returns the frames
/// weir sent, as (type, flags, stream, payload), until it closed the connection (or 5 s).
fn raw_exchange(weir: &Weir, then: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(weir.http).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(4, 0, 0, &[]));
    hello.extend_from_slice(then);
    tcp.write_all(&hello).expect("send");
    let mut bytes = Vec::new();
    let _ = tcp.read_to_end(&mut bytes);
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let stream =
            u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
        let end = (at + 9 + len).min(bytes.len());
        frames.push((
            bytes[at + 3],
            bytes[at + 4],
            stream,
            bytes[at + 9..end].to_vec(),
        ));
        at += 9 + len;
    }
    frames
}

/// The error code of the GOAWAY among `frames`, if any.
fn goaway(frames: &[(u8, u8, u32, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.0 == 7)
        .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
}

/// A client that breaks the protocol gets GOAWAY with the error code RFC 9113 names, and
/// its connection is closed; every other connection is served as before.
#[test]
fn protocol_errors_end_only_their_connection_with_the_right_code() {
    let (weir, _app, _dir) = start();
    let too_long_continuations: Vec<u8> = std::iter::once(frame(1, 0, 1, &[0x82]))
        .chain((0..20).map(|_| frame(9, 0, 1, &[0u8; 16_000])))
        .flatten()
        .collect();
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "frame past SETTINGS_MAX_FRAME_SIZE",
            frame(0, 0, 1, &[0; 16_385]),
            0x6,
        ),
        (
            "HPACK index past the tables",
            frame(1, 5, 1, &[0xff, 0x10]),
            0x9,
        ),
        ("DATA on stream 0", frame(0, 0, 0, b"x"), 0x1),
        (
            "HEADERS on an even stream",
            frame(1, 5, 2, &[0x82, 0x86, 0x84]),
            0x1,
        ),
        (
            "connection window past 2^31-1",
            frame(8, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
            0x3,
        ),
        (
            "SETTINGS_ENABLE_PUSH of 2",
            frame(4, 0, 0, &[0, 2, 0, 0, 0, 2]),
            0x1,
        ),
        (
            "header block interrupted",
            [frame(1, 0, 1, &[0x82]), frame(6, 0, 0, &[0; 8])].concat(),
            0x1,
        ),
        ("CONTINUATION without end", too_long_continuations, 0xb),
        (
            "a stream opened below one already opened (RFC 9113 5.1.1)",
            [
                frame(1, 5, 5, &[0x82, 0x86, 0x84]),
                frame(1, 5, 3, &[0x82, 0x86, 0x84]),
            ]
            .concat(),
            0x1,
        ),
        // 3,000 frames: weir's answer to the stream (it goes out during the flood) starts
        // the count anew, at most twice.
        (
            "a flood of empty DATA frames",
            std::iter::once(frame(1, 4, 1, &[0x83, 0x86, 0x84]))
                .chain((0..3_000).map(|_| frame(0, 0, 1, &[])))
                .flatten()
                .collect(),
            0xb,
        ),
        (
            "a flood of PING frames",
            (0..3_000).flat_map(|_| frame(6, 0, 0, &[0; 8])).collect(),
            0xb,
        ),
        (
            "a flood of PRIORITY frames",
            (0..3_000)
                .flat_map(|_| frame(2, 0, 1, &[0, 0, 0, 0, 16]))
                .collect(),
            0xb,
        ),
    ];
    for (what, bytes, code) in cases {
        let frames = raw_exchange(&weir, &bytes);
        assert_eq!(goaway(&frames), Some(code), "{what}: {frames:?}");
    }
    // DATA on a stream the client reset is a stream error (RFC 9113 5.1, 6.1), not
    // silence and not the connection's end.
    let frames = raw_exchange(
        &weir,
        &[
            frame(1, 4, 1, &[0x83, 0x86, 0x84]),
            frame(3, 0, 1, &8u32.to_be_bytes()),
            frame(0, 0, 1, b"late"),
            frame(7, 0, 0, &[0; 8]),
        ]
        .concat(),
    );
    assert!(
        frames
            .iter()
            .any(|f| f.0 == 3 && f.2 == 1 && f.3 == 5u32.to_be_bytes()),
        "no RST_STREAM STREAM_CLOSED: {frames:?}"
    );
    assert!(
        goaway(&frames).is_none_or(|code| code == 0),
        "a connection error: {frames:?}"
    );
    // A PING is answered with its payload, and is no error.
    let frames = raw_exchange(
        &weir,
        &[frame(6, 0, 0, b"weir-pin"), frame(7, 0, 0, &[0; 8])].concat(),
    );
    assert!(
        frames
            .iter()
            .any(|f| f.0 == 6 && f.1 == 1 && f.3 == b"weir-pin"),
        "{frames:?}"
    );
    // weir serves as before.
    runtime().block_on(async {
        let client = connect(&weir, &h2::client::Builder::new()).await;
        let mut c = client.ready().await.expect("ready");
        let (response, _) = c.send_request(get("/still"), true).expect("send");
        let echoed: Value =
            serde_json::from_slice(&body_of(response.await.expect("response")).await)
                .expect("json");
        assert_eq!(echoed["path"], "/still");
    });
}

/// Reads one chunked body from `stream` (after its head), with `seen` holding bytes already
/// read; returns the body's length, leaving in `seen` what followed it.
fn read_chunked(stream: &mut std::net::TcpStream, seen: &mut Vec<u8>) -> Option<usize> {
    use std::io::Read;
    let mut fill = |seen: &mut Vec<u8>| -> Option<()> {
        let mut buf = [0u8; 65536];
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        seen.extend_from_slice(&buf[..n]);
        Some(())
    };
    let mut total = 0;
    loop {
        let line_end = loop {
            match seen.windows(2).position(|w| w == b"\r\n") {
                Some(end) => break end,
                None => fill(seen)?,
            }
        };
        let size = std::str::from_utf8(&seen[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        seen.drain(..line_end + 2);
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                match seen.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        seen.drain(..2);
                        return Some(total);
                    }
                    Some(end) => {
                        seen.drain(..end + 2);
                    }
                    None => fill(seen)?,
                }
            }
        }
        while seen.len() < size + 2 {
            fill(seen)?;
        }
        seen.drain(..size + 2);
        total += size;
    }
}

/// Request bodies whose end comes in a frame of its own reach an HTTP/1.1 upstream as one
/// chunked body each: the upstream, which checks every byte on its connection, sees each
/// request once and nothing between them. (Pingora wrote such an empty last piece as a
/// zero-size chunk, the last-chunk marker, then ended the body again; the upstream read
/// the second marker as a request. `WeirProxy::request_body_filter` drops the piece.)
#[test]
fn chunked_upstream_copies_of_bodies_end_once() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (report, reports) = std::sync::mpsc::channel::<Result<usize, String>>();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let report = report.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut seen = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end;
                        }
                        let mut buf = [0u8; 65536];
                        match std::io::Read::read(&mut stream, &mut buf) {
                            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    };
                    let head = String::from_utf8_lossy(&seen[..head_end]).to_string();
                    seen.drain(..head_end + 4);
                    if !head.starts_with("POST /upload HTTP/1.1\r\n") {
                        let _ = report.send(Err(head));
                        return;
                    }
                    let Some(len) = read_chunked(&mut stream, &mut seen) else {
                        let _ = report.send(Err("body cut short".into()));
                        return;
                    };
                    let _ = report.send(Ok(len));
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                }
            });
        }
    });
    let dir = ManifestDir::new();
    dir.write(
        "app.yaml",
        &(APP.to_string() + &service_yaml("demo", "app", &[addr])),
    );
    // weir's HTTP/2 server (handing Pingora the stream), and Pingora's alone: the double end
    // was Pingora's, so every path had it.
    let variants: [&[&str]; 2] = [&[], &["--http1-path", "pingora"]];
    for args in variants {
        let weir = Weir::start(&dir.path(), args);
        runtime().block_on(async {
            let client = connect(&weir, &h2::client::Builder::new()).await;
            for round in 0..6 {
                let request = http::Request::post("http://app.example.com/upload")
                    .body(())
                    .expect("request");
                let mut c = client.clone().ready().await.expect("ready");
                let (response, mut out) = c.send_request(request, false).expect("send");
                out.send_data(Bytes::from(vec![1u8; 1000]), false)
                    .expect("data");
                // The end alone, once the body has gone through.
                tokio::time::sleep(Duration::from_millis(50)).await;
                out.send_data(Bytes::new(), true).expect("end");
                let response = tokio::time::timeout(Duration::from_secs(10), response)
                    .await
                    .expect("answer in time")
                    .expect("response");
                assert_eq!(response.status(), 200, "{args:?}: round {round}");
                let _ = body_of(response).await;
            }
        });
        let seen: Vec<Result<usize, String>> = reports.try_iter().collect();
        assert_eq!(seen, vec![Ok(1000); 6], "{args:?}");
    }
}

/// Bodies that declare their length reach the upstream whole and with that length, whether
/// small enough for weir's own path (read whole first, at most 64 KiB) or not (streamed by
/// Pingora's), and whether their end comes with the last bytes or after them.
#[test]
fn bodies_with_a_declared_length_reach_the_upstream_whole() {
    let (weir, _app, _dir) = start();
    runtime().block_on(async {
        let client = connect(&weir, &h2::client::Builder::new()).await;
        for (size, end_apart) in [(5usize, false), (5, true), (65_536, false), (200_000, true)] {
            let request = http::Request::put("http://app.example.com/sized")
                .header("content-length", size.to_string())
                .body(())
                .expect("request");
            let mut c = client.clone().ready().await.expect("ready");
            let (response, mut out) = c.send_request(request, false).expect("send");
            send_body(&mut out, Bytes::from(vec![3u8; size]), !end_apart).await;
            if end_apart {
                out.send_data(Bytes::new(), true).expect("end");
            }
            let response = tokio::time::timeout(Duration::from_secs(10), response)
                .await
                .expect("answer in time")
                .expect("response");
            assert_eq!(response.status(), 200, "{size}");
            let echoed: Value = serde_json::from_slice(&body_of(response).await).expect("json");
            assert_eq!(echoed["method"], "PUT");
            assert_eq!(echoed["body_bytes"], size, "{size}");
            assert_eq!(echoed["headers"]["content-length"], size.to_string());
            assert_eq!(echoed["headers"]["x-forwarded-for"], "127.0.0.1");
        }
        // A body shorter than it said is malformed: the stream is reset, not forwarded.
        let request = http::Request::put("http://app.example.com/short")
            .header("content-length", "10")
            .body(())
            .expect("request");
        let mut c = client.clone().ready().await.expect("ready");
        let (response, mut out) = c.send_request(request, false).expect("send");
        out.send_data(Bytes::from_static(b"12345"), true)
            .expect("data");
        let answer = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("answer in time");
        assert!(
            answer
                .as_ref()
                .is_err_and(|e| e.reason() == Some(h2::Reason::PROTOCOL_ERROR)),
            "{answer:?}"
        );
        // A client that gives up part way through its body.
        let request = http::Request::put("http://app.example.com/cancelled")
            .header("content-length", "10")
            .body(())
            .expect("request");
        let mut c = client.clone().ready().await.expect("ready");
        let (_response, mut out) = c.send_request(request, false).expect("send");
        out.send_data(Bytes::from_static(b"123"), false)
            .expect("data");
        tokio::time::sleep(Duration::from_millis(100)).await;
        out.send_reset(h2::Reason::CANCEL);
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    // Neither reached the upstream, and each has its access-log line on its route, with what
    // ended it: no response (status 0), no upstream, the body bytes taken (none from the
    // frame that broke the declared length).
    let log = weir.access_log_of(6);
    for (path, reason, bytes_in) in [("/short", "PROTOCOL_ERROR", 0), ("/cancelled", "CANCEL", 3)] {
        let line = log
            .iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no access-log line for {path}: {log:?}"));
        assert_eq!(line["status"], 0, "{line}");
        assert_eq!(line["upstream"], "", "{path} reached the upstream: {line}");
        assert_eq!(line["service"], "app", "{line}");
        assert_eq!(line["bytes_in"], bytes_in, "{line}");
        let error = line["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{path}: {line}");
    }
}

/// An upstream that answers every request with a chunked 200 and closes after its first
/// chunk: a response cut short.
fn cutting_upstream() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut seen = Vec::new();
                let mut buf = [0u8; 16_384];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                );
                // Dropped: closed before the last chunk.
            });
        }
    });
    addr
}

/// A response its upstream cut short must reach the client as a failed one (the HTTP/1.1
/// connection closed without the last chunk, the HTTP/2 stream reset), never as a complete
/// response with an error text appended. weir once answered such an error after the head
/// had gone out, on every request Pingora served: the client got `hello` and
/// "upstream connection failed", ended as if whole.
#[test]
fn a_response_cut_by_its_upstream_never_arrives_complete() {
    let upstream = cutting_upstream();
    let dir = ManifestDir::new();
    dir.write(
        "app.yaml",
        &(APP.to_string() + &service_yaml("demo", "app", &[upstream])),
    );
    // weir's own paths (direct, and Pingora's proxy for streamed bodies) and Pingora's alone.
    let variants: [&[&str]; 2] = [&[], &["--http1-path", "pingora"]];
    for args in variants {
        let weir = Weir::start(&dir.path(), args);

        // HTTP/1.1: the connection ends without the last chunk.
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(weir.http).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        tcp.write_all(b"GET /cut HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
            .expect("request");
        let mut response = Vec::new();
        let _ = tcp.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200"), "{args:?}: {text}");
        assert!(
            !text.contains("\r\n0\r\n\r\n") && !text.contains("upstream connection failed"),
            "{args:?}: a cut response arrived complete over HTTP/1.1: {text:?}"
        );

        // HTTP/2: a GET, and a POST whose body has no declared length (which weir's own
        // server hands to Pingora's proxy): each stream ends in an error.
        runtime().block_on(async {
            let client = connect(&weir, &h2::client::Builder::new()).await;
            for post in [false, true] {
                let request = if post {
                    http::Request::post("http://app.example.com/cut")
                        .body(())
                        .expect("request")
                } else {
                    get("/cut")
                };
                let mut c = client.clone().ready().await.expect("ready");
                let (response, mut out) = c.send_request(request, !post).expect("send");
                if post {
                    out.send_data(Bytes::from_static(b"data"), true)
                        .expect("body");
                }
                let response = tokio::time::timeout(Duration::from_secs(10), response)
                    .await
                    .expect("answer in time")
                    .expect("response head");
                assert_eq!(response.status(), 200, "{args:?}");
                let mut body = response.into_body();
                let mut received = Vec::new();
                let ended = loop {
                    match tokio::time::timeout(Duration::from_secs(10), body.data()).await {
                        Ok(Some(Ok(data))) => {
                            let _ = body.flow_control().release_capacity(data.len());
                            received.extend_from_slice(&data);
                        }
                        Ok(Some(Err(e))) => break Err(e),
                        Ok(None) => break Ok(()),
                        Err(_) => {
                            panic!("{args:?}, post {post}: the stream neither ended nor failed")
                        }
                    }
                };
                assert!(
                    ended.is_err(),
                    "{args:?}, post {post}: a cut response arrived complete over HTTP/2: {:?}",
                    String::from_utf8_lossy(&received)
                );
            }
        });
    }
}
