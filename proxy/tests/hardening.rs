//! End to end: malformed and smuggling-shaped requests over a raw TCP socket (issue #10).
//! Each shape must be refused by weir with the expected status, the connection closed after
//! the answer, and nothing of it must reach the upstream — in particular not the request
//! hidden in its body (`/smuggled`). The upstream is a raw socket that records every byte.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{service_yaml, ManifestDir, Weir};

const INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: raw, namespace: demo}
spec:
  ingressClassName: weir
  defaultBackend: {service: {name: raw, port: {name: http}}}
---
";

/// An upstream that answers every header block with a 200 and keeps all bytes it got.
fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = Arc::clone(&record);
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 65536];
                let mut pending = Vec::new();
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    record.lock().expect("lock").extend_from_slice(&buf[..n]);
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Sends `raw` on a fresh connection; the status of the answer and whether weir closed the
/// connection after it.
fn send_raw(weir: SocketAddr, raw: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(weir).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.write_all(raw).expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break, // still open after 3 s
        }
    }
    let status = std::str::from_utf8(&answer)
        .ok()
        .and_then(|a| a.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, closed)
}

#[test]
fn malformed_and_smuggling_shapes_are_refused_and_never_reach_the_upstream() {
    let (upstream, seen) = recording_upstream();
    let dir = ManifestDir::new();
    dir.write(
        "raw.yaml",
        &(INGRESS.to_string() + &service_yaml("demo", "raw", &[upstream])),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let host = "Host: raw.example\r\n";
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: raw.example\r\n\r\n";
    let cases: Vec<(&str, String, u16)> = vec![
        ("CL and TE", format!("POST / HTTP/1.1\r\n{host}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        ("TE and CL", format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        ("two different CL", format!("POST / HTTP/1.1\r\n{host}Content-Length: 0\r\nContent-Length: 48\r\n\r\n{smuggled}"), 400),
        ("two equal CL", format!("POST / HTTP/1.1\r\n{host}Content-Length: 0\r\nContent-Length: 0\r\n\r\n{smuggled}"), 400),
        ("CL list", format!("POST / HTTP/1.1\r\n{host}Content-Length: 0, 0\r\n\r\n{smuggled}"), 400),
        ("negative CL", format!("POST / HTTP/1.1\r\n{host}Content-Length: -1\r\n\r\n{smuggled}"), 400),
        ("signed CL", format!("POST / HTTP/1.1\r\n{host}Content-Length: +0\r\n\r\n{smuggled}"), 400),
        ("CL with letters", format!("POST / HTTP/1.1\r\n{host}Content-Length: 0x10\r\n\r\n{smuggled}"), 400),
        ("CL overflow", format!("POST / HTTP/1.1\r\n{host}Content-Length: 99999999999999999999999\r\n\r\n"), 400),
        ("two TE", format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        ("TE not chunked", format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        ("TE gzip, chunked", format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"), 501),
        ("TE with space before colon", format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        ("TE in HTTP/1.0", format!("POST / HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        ("bad chunk size", format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\nzz\r\n{smuggled}"), 400),
        ("chunk size bare LF", format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n2e\n{smuggled}\r\n0\r\n\r\n"), 400),
        ("obs-fold", format!("GET / HTTP/1.1\r\n{host}X-A: a\r\n b\r\n\r\n"), 400),
        ("NUL in value", format!("GET / HTTP/1.1\r\n{host}X-A: a\0b\r\n\r\n"), 400),
        ("bare CR in value", format!("GET / HTTP/1.1\r\n{host}X-A: a\rb\r\n\r\n"), 400),
        ("space in name", format!("GET / HTTP/1.1\r\n{host}X A: b\r\n\r\n"), 400),
        ("two Host", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n".to_string(), 400),
        ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n".to_string(), 400),
        ("unknown version", format!("GET / HTTP/1.2\r\n{host}\r\n"), 400),
        ("header over 32 KiB", format!("GET / HTTP/1.1\r\n{host}Cookie: {}\r\n\r\n", "c".repeat(40_000)), 431),
        ("150 header fields", format!("GET / HTTP/1.1\r\n{host}{}\r\n", (0..150).map(|i| format!("X-F{i}: v\r\n")).collect::<String>()), 431),
        ("request line over 8 KiB", format!("GET /{} HTTP/1.1\r\n{host}\r\n", "p".repeat(9_000)), 414),
    ];
    let mut wrong = Vec::new();
    for (name, raw, expected) in &cases {
        let before = seen.lock().expect("lock").len();
        let (status, closed) = send_raw(weir.http, raw.as_bytes());
        std::thread::sleep(Duration::from_millis(50));
        let reached = seen.lock().expect("lock")[before..].to_vec();
        let reached = String::from_utf8_lossy(&reached);
        if status != *expected || !closed || reached.contains("/smuggled") {
            wrong.push(format!(
                "{name}: status {status} (want {expected}), closed {closed}, upstream got {:?}",
                reached.chars().take(120).collect::<String>()
            ));
        }
        // Header-level shapes never open an upstream request at all; a malformed chunk is
        // found mid-body, after the header went out: that attempt is cut, never completed.
        if !name.contains("chunk") && !reached.is_empty() {
            wrong.push(format!("{name}: the upstream saw {} bytes", reached.len()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A well-formed request on the same weir still works, and the refusals are counted.
    let (status, _) = send_raw(
        weir.http,
        format!("GET /fine HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200);
    let refused = weir
        .metric(r#"weir_requests_rejected_total{reason="content_length_with_transfer_encoding"}"#)
        .unwrap_or(0.0);
    assert_eq!(refused, 2.0);
}
