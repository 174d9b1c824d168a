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
use support::{default_backend_yaml, raw_exchange, ManifestDir, Weir};
use weir_testsupport::process::rss_kib;

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

/// Sends `raw` on a fresh connection: the status of the first answer (0 for none) and
/// whether weir closed the connection.
fn send_raw(weir: SocketAddr, raw: &[u8]) -> (u16, bool) {
    let (statuses, closed, _) = raw_exchange(weir, raw);
    (statuses.first().copied().unwrap_or(0), closed)
}

#[test]
fn malformed_and_smuggling_shapes_are_refused_and_never_reach_the_upstream() {
    let (upstream, seen) = recording_upstream();
    let dir = ManifestDir::new();
    dir.write(
        "raw.yaml",
        &default_backend_yaml("demo", "raw", &[upstream]),
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
        ("TE not chunked", format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"), 501),
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

fn gated_weir(flags: &[&str]) -> (Weir, support::Echo, ManifestDir) {
    let app = support::Echo::start("raw");
    let dir = ManifestDir::new();
    dir.write(
        "raw.yaml",
        &default_backend_yaml("demo", "raw", &[app.addr]),
    );
    let weir = Weir::start(&dir.path(), flags);
    (weir, app, dir)
}

/// Slowloris: a connection that sends its header a byte at a time is closed when
/// `--request-header-timeout` runs out, while a normal client on another connection is
/// served and a kept-alive connection idle for longer than the timeout stays usable.
#[test]
fn a_slow_header_is_cut_off_at_the_header_timeout() {
    let (weir, _app, _dir) = gated_weir(&["--request-header-timeout", "1s"]);
    let mut kept = TcpStream::connect(weir.http).expect("connect");
    let ok = "GET / HTTP/1.1\r\nHost: raw.example\r\n\r\n";
    kept.write_all(ok.as_bytes()).expect("send");
    let mut buf = [0u8; 4096];
    kept.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let n = kept.read(&mut buf).expect("first answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let mut slow = TcpStream::connect(weir.http).expect("connect");
    slow.set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut cut_after = None;
    for byte in b"GET / HTTP/1.1\r\nHost: raw.example\r\nX-Slow: yes\r\nX-Slower: yes\r\n"
        .iter()
        .cycle()
        .take(300)
    {
        if slow.write_all(&[*byte]).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    // A write may still succeed right after the close; the read says it for sure.
    let closed = cut_after.is_some() || {
        slow.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        matches!(slow.read(&mut buf), Ok(0) | Err(_))
    };
    assert!(
        closed,
        "the slow connection is still open after {:?}",
        started.elapsed()
    );
    if let Some(after) = cut_after {
        assert!(
            after >= Duration::from_millis(900),
            "closed too early: {after:?}"
        );
    }
    assert_eq!(weir.metric("weir_request_header_timeouts_total"), Some(1.0));
    // A connection that sends nothing, and one that stops inside what could be the h2c
    // preface, are held to the same deadline.
    for sent in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut silent = TcpStream::connect(weir.http).expect("connect");
        silent.write_all(sent).expect("send");
        silent
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let started = std::time::Instant::now();
        let read = silent.read(&mut buf);
        assert!(
            matches!(read, Ok(0) | Err(_)) && started.elapsed() < Duration::from_millis(2500),
            "{sent:?}: not closed at the header deadline ({read:?} after {:?})",
            started.elapsed()
        );
    }
    assert_eq!(weir.metric("weir_request_header_timeouts_total"), Some(3.0));
    // The kept-alive connection, idle for longer than the header timeout, still works.
    kept.write_all(ok.as_bytes()).expect("send again");
    let n = kept.read(&mut buf).expect("second answer");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// `--max-connections 3`: with three connections open a fourth gets a 503 at once and is
/// closed; once one of the three goes, new connections are served again.
#[test]
fn max_connections_answers_503_beyond_the_limit() {
    let (weir, _app, _dir) = gated_weir(&["--max-connections", "3"]);
    let open: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(weir.http).expect("connect"))
        .collect();
    // Accepted by weir (a loaded machine may take longer than any fixed pause).
    let accepted = support::wait_until(Duration::from_secs(10), || {
        weir.metric("weir_connections_open ") == Some(3.0)
    });
    assert!(
        accepted.is_some(),
        "{:?}",
        weir.metric("weir_connections_open ")
    );
    let started = std::time::Instant::now();
    let (status, closed) = send_raw(weir.http, b"GET / HTTP/1.1\r\nHost: raw.example\r\n\r\n");
    assert_eq!((status, closed), (503, true));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(weir.metric("weir_connections_refused_total"), Some(1.0));
    drop(open);
    std::thread::sleep(Duration::from_millis(200));
    let (status, _) = send_raw(
        weir.http,
        b"GET / HTTP/1.1\r\nHost: raw.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
}

/// The frames of an h2c client that opens a connection and has one GET answered: the
/// preface, empty SETTINGS, and HEADERS for `/` of `host` (`:authority` indexed, as a
/// client's encoder does).
fn h2c_hello(host: &str) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut block = vec![0x82, 0x86, 0x84, 0x41, host.len() as u8];
    block.extend_from_slice(host.as_bytes());
    out.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    out
}

/// Reads frames until stream 1 ends (HEADERS or DATA with END_STREAM), acknowledging the
/// server's SETTINGS; the status is the answer's first HPACK field (0x88: 200).
fn h2c_answered(stream: &mut TcpStream) -> Result<u8, String> {
    let mut status = 0u8;
    loop {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).map_err(|e| e.to_string())?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).map_err(|e| e.to_string())?;
        let (kind, flags, id) = (
            head[3],
            head[4],
            u32::from_be_bytes([head[5], head[6], head[7], head[8]]),
        );
        match kind {
            4 if flags & 1 == 0 => {
                let ack = [0, 0, 0, 4, 1, 0, 0, 0, 0];
                stream.write_all(&ack).map_err(|e| e.to_string())?;
            }
            7 => return Err("GOAWAY".into()),
            1 if id == 1 => {
                // After any dynamic table size update (001xxxxx; weir sends one of 0).
                let block = payload.iter().skip_while(|b| (0x20..0x40).contains(*b));
                status = block.copied().next().unwrap_or(0);
            }
            _ => {}
        }
        if matches!(kind, 0 | 1) && id == 1 && flags & 1 == 1 {
            return Ok(status);
        }
    }
}

/// weir at its default `--max-connections` (10,000) holds that many idle connections,
/// 8,000 HTTP/1.1 keep-alive ones (each served one request) and 2,000 h2c ones (each
/// served one GET), within a stated memory limit: 64 MiB more than before them (6.5 KiB
/// each; measured in a release build: 2.6 KiB each for HTTP/1.1 and 4.5 for h2c,
/// docs/benchmarks.md). A connection beyond the limit gets the 503, and the idle ones are
/// all still usable.
#[test]
fn max_connections_worth_of_idle_connections_fit_the_memory_limit() {
    const HTTP1: usize = 8_000;
    const H2C: usize = 2_000;
    const LIMIT_KIB: u64 = 64 * 1024;
    // 10,000 sockets here and 10,000 in weir (which inherits the limit): raise this
    // process's soft limit of open files to its hard limit (util-linux `prlimit`).
    let me = std::process::id().to_string();
    let hard = std::process::Command::new("prlimit")
        .args(["--pid", &me, "--nofile", "--output", "HARD", "--noheadings"])
        .output()
        .expect("prlimit");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_string();
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &me, &format!("--nofile={hard}:{hard}")])
        .status()
        .expect("prlimit");
    assert!(raised.success());
    assert!(
        hard.parse::<u64>().unwrap_or(0) >= 10_500,
        "needs 10,500 open files per process, the hard limit is {hard}"
    );
    let (weir, _app, _dir) = gated_weir(&[]);
    let pid = weir.process.pid();
    let request = b"GET / HTTP/1.1\r\nHost: raw.example\r\n\r\n";
    let mut buf = [0u8; 4096];
    // Warm up (first request, pools, metrics), then measure from there.
    for _ in 0..10 {
        let (status, _) = send_raw(
            weir.http,
            b"GET / HTTP/1.1\r\nHost: raw.example\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200);
    }
    let before = rss_kib(pid);
    let connect = || {
        let s = TcpStream::connect(weir.http).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    };
    let mut idle = Vec::with_capacity(HTTP1);
    for i in 0..HTTP1 {
        let mut s = connect();
        s.write_all(request).expect("send");
        let n = s.read(&mut buf).expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "connection {i}");
        idle.push(s);
    }
    let hello = h2c_hello("raw.example");
    let mut idle_h2 = Vec::with_capacity(H2C);
    for i in 0..H2C {
        let mut s = connect();
        s.write_all(&hello).expect("send");
        assert_eq!(h2c_answered(&mut s), Ok(0x88), "h2c connection {i}");
        idle_h2.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss_kib(pid).saturating_sub(before);
    eprintln!(
        "{HTTP1} idle HTTP/1.1 and {H2C} idle h2c connections: +{} MiB",
        grown / 1024
    );
    assert!(
        grown <= LIMIT_KIB,
        "{} MiB for 10,000 idle connections, over the {} MiB limit",
        grown / 1024,
        LIMIT_KIB / 1024
    );
    let (status, closed) = send_raw(weir.http, request);
    assert_eq!(
        (status, closed),
        (503, true),
        "the connection past the limit"
    );
    for s in idle.iter_mut().step_by(100) {
        s.write_all(request).expect("send again");
        let n = s.read(&mut buf).expect("answer again");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
}
