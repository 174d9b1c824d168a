//! End to end: HTTP/1 framing, on every engine. Raw requests go to the real binary, once
//! with weir's own engine (the default) and once with `--http1-path pingora`; behind it an
//! upstream parses what it receives strictly and records each request. A malformed or
//! ambiguous request must be answered with its status and the connection closed, and must
//! never reach the upstream as a request of its own (`/smuggled`); a well-framed one must
//! reach it framed exactly one way.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{default_backend_yaml, raw_exchange, ManifestDir, Weir};

const ENGINES: [(&str, &[&str]); 2] = [("direct", &[]), ("pingora", &["--http1-path", "pingora"])];

/// One request as the upstream read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    method: String,
    path: String,
    /// Lowercase name, value.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the upstream saw: the requests it parsed, and anything it could not frame.
#[derive(Debug, Default)]
struct Seen {
    requests: Vec<Received>,
    unframed: Vec<String>,
}

/// Reads one chunked body strictly from `input`; the body and the bytes consumed.
fn dechunk(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + input[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&input[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // No trailers from weir: the body ends with an empty line.
            return (input.get(at..at + 2)? == b"\r\n").then_some((body, at + 2));
        }
        body.extend_from_slice(input.get(at..at + size)?);
        at += size;
        if input.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
}

/// An upstream that parses each request strictly (httparse, then the body by its length or
/// chunks), answers it with a 200 naming its path, and records it; bytes it cannot frame
/// are recorded as such and end the connection.
fn strict_upstream() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = Arc::clone(&record);
            std::thread::spawn(move || serve_strictly(stream, &record));
        }
    });
    (addr, seen)
}

fn serve_strictly(mut stream: TcpStream, record: &Mutex<Seen>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut pending = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        // Parse every complete request in `pending`.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            let head_len = match req.parse(&pending) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => break,
                Err(e) => {
                    let text = String::from_utf8_lossy(&pending).into_owned();
                    record
                        .lock()
                        .expect("lock")
                        .unframed
                        .push(format!("{e}: {text:?}"));
                    return;
                }
            };
            let received_headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let get = |name: &str| {
                received_headers
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .collect::<Vec<_>>()
            };
            let (lengths, codings) = (get("content-length"), get("transfer-encoding"));
            let rest = &pending[head_len..];
            let (body, used) = match (lengths.as_slice(), codings.as_slice()) {
                ([], []) => (Vec::new(), 0),
                ([len], []) if len.bytes().all(|b| b.is_ascii_digit()) && !len.is_empty() => {
                    let len: usize = len.parse().expect("digits");
                    if rest.len() < len {
                        break;
                    }
                    (rest[..len].to_vec(), len)
                }
                ([], [coding]) if coding == "chunked" => match dechunk(rest) {
                    Some(found) => found,
                    None if rest.len() < 65536 => break, // not all here yet
                    None => (Vec::new(), usize::MAX),
                },
                _ => (Vec::new(), usize::MAX),
            };
            if used == usize::MAX {
                let text = String::from_utf8_lossy(&pending).into_owned();
                record
                    .lock()
                    .expect("lock")
                    .unframed
                    .push(format!("ambiguous: {text:?}"));
                return;
            }
            let path = req.path.unwrap_or("").to_string();
            record.lock().expect("lock").requests.push(Received {
                method: req.method.unwrap_or("").to_string(),
                path: path.clone(),
                headers: received_headers.clone(),
                body,
            });
            pending.drain(..head_len + used);
            let answer =
                format!("HTTP/1.1 200 OK\r\nX-Path: {path}\r\nContent-Length: 2\r\n\r\nok");
            if stream.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => {
                if !pending.is_empty() {
                    let text = String::from_utf8_lossy(&pending).into_owned();
                    record
                        .lock()
                        .expect("lock")
                        .unframed
                        .push(format!("cut short: {text:?}"));
                }
                return;
            }
        }
    }
}

fn weir_before(upstream: SocketAddr, flags: &[&str]) -> (Weir, ManifestDir) {
    let dir = ManifestDir::new();
    dir.write(
        "raw.yaml",
        &default_backend_yaml("demo", "raw", &[upstream]),
    );
    let weir = Weir::start(&dir.path(), flags);
    (weir, dir)
}

#[test]
fn malformed_and_ambiguous_requests_are_refused_on_every_engine() {
    let host = "Host: raw.example\r\n";
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: raw.example\r\n\r\n";
    let te = "Transfer-Encoding: chunked\r\n";
    // (name, request, status)
    let cases: Vec<(&str, String, u16)> = vec![
        ("empty chunk-size line", format!("POST / HTTP/1.1\r\n{host}{te}\r\n3\r\nabc\r\n\r\n\r\n{smuggled}"), 400),
        ("empty first chunk-size line", format!("POST / HTTP/1.1\r\n{host}{te}\r\n\r\n{smuggled}"), 400),
        ("bare LF in a chunk extension", format!("POST / HTTP/1.1\r\n{host}{te}\r\n3;a\nx\r\nabc\r\n0\r\n\r\n{smuggled}"), 400),
        ("chunk extension not a token", format!("POST / HTTP/1.1\r\n{host}{te}\r\n3;a b\r\nabc\r\n0\r\n\r\n{smuggled}"), 400),
        ("chunk size with 0x", format!("POST / HTTP/1.1\r\n{host}{te}\r\n0x3\r\nabc\r\n0\r\n\r\n{smuggled}"), 400),
        ("chunk longer than its size", format!("POST / HTTP/1.1\r\n{host}{te}\r\n2\r\nabc\r\n0\r\n\r\n{smuggled}"), 400),
        ("last chunk without CRLF", format!("POST / HTTP/1.1\r\n{host}{te}\r\n0\r\n\n{smuggled}"), 400),
        ("doubled method", format!("GET GET /b HTTP/1.1\r\n{host}\r\n"), 400),
        // Shorter than the HTTP/2 preface: answered, not left waiting for more bytes.
        ("short doubled method", "GET GET / HTTP/1.1\r\n\r\n".to_string(), 400),
        ("space in the target", format!("GET /a b HTTP/1.1\r\n{host}\r\n"), 400),
        ("two spaces after the method", format!("GET  /a HTTP/1.1\r\n{host}\r\n"), 400),
        ("tab between the parts", format!("GET\t/a HTTP/1.1\r\n{host}\r\n"), 400),
        ("target not a path", format!("GET a/b HTTP/1.1\r\n{host}\r\n"), 400),
        ("asterisk target for GET", format!("GET * HTTP/1.1\r\n{host}\r\n"), 400),
        ("CONNECT", format!("CONNECT raw.example:443 HTTP/1.1\r\n{host}\r\n"), 400),
        ("HTTP/2.0 request line", format!("GET / HTTP/2.0\r\n{host}\r\n"), 400),
        ("control character in the target", format!("GET /a\x01b HTTP/1.1\r\n{host}\r\n"), 400),
        ("Host with userinfo", "GET / HTTP/1.1\r\nHost: user@raw.example\r\n\r\n".to_string(), 400),
        ("Host with a path", "GET / HTTP/1.1\r\nHost: raw.example/x\r\n\r\n".to_string(), 400),
        ("Host with a space", "GET / HTTP/1.1\r\nHost: raw example\r\n\r\n".to_string(), 400),
        ("Host port not a number", "GET / HTTP/1.1\r\nHost: raw.example:http\r\n\r\n".to_string(), 400),
        ("Transfer_Encoding", format!("POST / HTTP/1.1\r\n{host}Transfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        ("Content_Length", format!("POST / HTTP/1.1\r\n{host}Content_Length: 48\r\n\r\n{smuggled}"), 400),
        ("X_Forwarded_For", format!("GET / HTTP/1.1\r\n{host}X_Forwarded_For: 10.0.0.1\r\n\r\n"), 400),
        ("CL and TE", format!("POST / HTTP/1.1\r\n{host}Content-Length: 4\r\n{te}\r\n0\r\n\r\n{smuggled}"), 400),
        ("TE in HTTP/1.0", format!("POST / HTTP/1.0\r\n{host}{te}\r\n0\r\n\r\n{smuggled}"), 400),
        ("TE list", format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n{smuggled}"), 501),
        ("CL with a sign", format!("POST / HTTP/1.1\r\n{host}Content-Length: +0\r\n\r\n{smuggled}"), 400),
        ("obs-fold", format!("GET / HTTP/1.1\r\n{host}X-A: a\r\n b\r\n\r\n"), 400),
    ];
    for (engine, flags) in ENGINES {
        let (upstream, seen) = strict_upstream();
        let (weir, _dir) = weir_before(upstream, flags);
        let mut wrong = Vec::new();
        for (name, raw, expected) in &cases {
            let before = seen.lock().expect("lock").requests.len();
            let (statuses, closed, text) = raw_exchange(weir.http, raw.as_bytes());
            std::thread::sleep(Duration::from_millis(30));
            let seen = seen.lock().expect("lock");
            let reached = &seen.requests[before..];
            if statuses != [*expected] || !closed {
                wrong.push(format!(
                    "{engine} / {name}: answered {statuses:?} (want [{expected}]), closed {closed}: {:?}",
                    text.chars().take(80).collect::<String>()
                ));
            }
            if reached.iter().any(|r| r.path.contains("smuggled")) {
                wrong.push(format!(
                    "{engine} / {name}: the smuggled request reached the upstream"
                ));
            }
            // A refused head never opens an upstream request; a chunked body is checked as
            // it streams, so its head may have gone out (the upstream sees it cut short),
            // but never a complete request.
            if !reached.is_empty() {
                wrong.push(format!("{engine} / {name}: the upstream got {reached:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        let unframed = seen.lock().expect("lock").unframed.clone();
        assert!(
            unframed.iter().all(|u| u.starts_with("cut short")),
            "{engine}: the upstream got bytes it could not frame: {unframed:?}"
        );
        // Refusals are counted by reason and logged; weir still serves.
        let metric = |reason: &str| {
            weir.metric(&format!(
                r#"weir_requests_rejected_total{{reason="{reason}"}}"#
            ))
            .unwrap_or(0.0)
        };
        assert_eq!(metric("malformed_chunked_body"), 7.0, "{engine}");
        assert_eq!(metric("invalid_host"), 4.0, "{engine}");
        assert_eq!(metric("underscore_in_guarded_field"), 3.0, "{engine}");
        let log = weir.access_log();
        let refused_lines = log.iter().filter(|line| line["status"] == 400).count();
        assert!(
            refused_lines >= 20,
            "{engine}: {refused_lines} access log lines with 400"
        );
        let (statuses, _, _) = raw_exchange(
            weir.http,
            format!("GET /fine HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(statuses, [200], "{engine}");
    }
}

#[test]
fn well_framed_requests_reach_the_upstream_framed_one_way_on_every_engine() {
    let host = "Host: raw.example\r\n";
    for (engine, flags) in ENGINES {
        let (upstream, seen) = strict_upstream();
        let (weir, _dir) = weir_before(upstream, flags);
        // A chunked body with extensions and a trailer, a pipelined request after it, an
        // `Expect: 100-continue` body and a pipelined request after that, a length with
        // leading zeros: every request answered in order, on one connection.
        let raw = format!(
            "POST /chunked HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n\
             3;name=value\r\nabc\r\n4;q=\"a b\"\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n\
             GET /after-chunked HTTP/1.1\r\n{host}\r\n\
             PUT /expect HTTP/1.1\r\n{host}Expect: 100-continue\r\nContent-Length: 3\r\n\r\nxyz\
             GET /after-expect HTTP/1.1\r\n{host}\r\n\
             POST /zeros HTTP/1.1\r\n{host}Content-Length: 003\r\nConnection: close\r\n\r\nabc"
        );
        let (statuses, closed, text) = raw_exchange(weir.http, raw.as_bytes());
        let finals: Vec<u16> = statuses.iter().copied().filter(|s| *s != 100).collect();
        assert_eq!(finals, [200; 5], "{engine}: {text}");
        assert!(closed, "{engine}: Connection: close was not honoured");
        let got = seen.lock().expect("lock");
        assert!(got.unframed.is_empty(), "{engine}: {:?}", got.unframed);
        let paths: Vec<&str> = got.requests.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/chunked",
                "/after-chunked",
                "/expect",
                "/after-expect",
                "/zeros"
            ],
            "{engine}"
        );
        assert_eq!(got.requests[0].body, b"abcdefg", "{engine}");
        assert_eq!(got.requests[2].body, b"xyz", "{engine}");
        assert_eq!(got.requests[4].body, b"abc", "{engine}");
        assert_eq!(
            got.requests[4].header("content-length"),
            Some("3"),
            "{engine}: the length goes on in its normal form"
        );
        drop(got);
        // A request shorter than the HTTP/2 preface is served at once.
        let (statuses, closed, _) = raw_exchange(weir.http, b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(
            (statuses.as_slice(), closed),
            (&[200][..], true),
            "{engine}"
        );
        // Underscores in other names are the backend's business: forwarded as sent.
        let (statuses, _, _) = raw_exchange(
            weir.http,
            format!("GET /underscore HTTP/1.1\r\n{host}X_Custom: 1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(statuses, [200], "{engine}");
        let got = seen.lock().expect("lock");
        let last = got.requests.last().expect("a request");
        assert_eq!(
            (last.path.as_str(), last.header("x_custom")),
            ("/underscore", Some("1")),
            "{engine}"
        );
    }
}

/// A client that pipelines requests and then closes its sending side still gets every
/// answer, on both engines (the first request, with a chunked body, goes to Pingora's proxy
/// on either); a target with UTF-8 in it is served, not a reason to drop the connection.
#[test]
fn pipelined_requests_before_a_half_close_are_all_answered() {
    let host = "Host: raw.example\r\n";
    for (engine, flags) in ENGINES {
        let (upstream, seen) = strict_upstream();
        let (weir, _dir) = weir_before(upstream, flags);
        let raw = format!(
            "POST /first HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
             GET /caf\u{e9}-\u{e9}\u{e9} HTTP/1.1\r\n{host}\r\n"
        );
        let mut s = TcpStream::connect(weir.http).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        s.write_all(raw.as_bytes()).expect("send");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{engine}: {text}");
        let paths: Vec<String> = seen
            .lock()
            .expect("lock")
            .requests
            .iter()
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(paths, ["/first", "/caf\u{e9}-\u{e9}\u{e9}"], "{engine}");
    }
}
