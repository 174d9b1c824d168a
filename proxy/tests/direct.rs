//! End to end: the direct HTTP/1.1 path (`--http1-path direct`, the default) and its handoff
//! to Pingora's proxy, with the real `weir` binary, real upstreams and raw client sockets (so
//! that several requests share one client connection in a known order).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{service_yaml, Echo, ManifestDir, Weir};

const INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: demo}
spec:
  ingressClassName: weir
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
---
";

/// One response read off a raw connection: status, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("echo JSON")
    }
}

/// Reads one response (Content-Length framed, or none for HEAD) from `stream`, keeping any
/// bytes of the next one in `pending`.
fn read_answer(stream: &mut TcpStream, pending: &mut Vec<u8>, head_request: bool) -> Answer {
    let mut buf = [0u8; 8192];
    let header_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).expect("read answer");
        assert!(n > 0, "connection closed before an answer");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = if head_request {
        0
    } else {
        headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .expect("content-length")
    };
    while pending.len() < header_end + length {
        let n = stream.read(&mut buf).expect("read body");
        assert!(n > 0, "connection closed inside a body");
        pending.extend_from_slice(&buf[..n]);
    }
    let body = pending[header_end..header_end + length].to_vec();
    pending.drain(..header_end + length);
    Answer {
        status,
        headers,
        body,
    }
}

fn connect(weir: &Weir) -> TcpStream {
    let s = TcpStream::connect(weir.http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// weir serving [`INGRESS`] from one echo upstream, its HTTP/1.1 requests on `http1_path`.
fn shop_weir(http1_path: &str) -> (Weir, Echo, ManifestDir) {
    let web = Echo::start("web");
    let dir = ManifestDir::new();
    dir.write(
        "routes.yaml",
        &(INGRESS.to_string() + &service_yaml("demo", "web", &[web.addr])),
    );
    let weir = Weir::start(&dir.path(), &["--http1-path", http1_path]);
    (weir, web, dir)
}

/// The requests of one keep-alive connection, in order: GETs and a small `Content-Length`
/// POST (served by the direct path), a chunked POST (handed to Pingora), a HEAD and one
/// without a route. Returns the answers; every request must be in the access log.
fn mixed_connection(path: &str) -> Vec<Answer> {
    let (weir, _web, _dir) = shop_weir(path);
    let mut s = connect(&weir);
    let mut pending = Vec::new();
    let mut answers = Vec::new();
    let requests: [(&[u8], bool); 6] = [
        (
            b"GET /a?x=1 HTTP/1.1\r\nHost: shop.example.com\r\nConnection: keep-alive\r\n\r\n",
            false,
        ),
        (
            b"POST /b HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 3\r\n\r\nxyz",
            false,
        ),
        (
            b"POST /b2 HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
            false,
        ),
        (b"GET /c HTTP/1.1\r\nHost: shop.example.com\r\n\r\n", false),
        (b"HEAD /d HTTP/1.1\r\nHost: shop.example.com\r\n\r\n", true),
        (b"GET /e HTTP/1.1\r\nHost: nowhere.example\r\n\r\n", false),
    ];
    for (request, head) in requests {
        s.write_all(request).expect("send");
        answers.push(read_answer(&mut s, &mut pending, head));
    }
    // Every request was logged with its status.
    let log = weir.access_log_of(6);
    let statuses: Vec<u64> = log.iter().filter_map(|l| l["status"].as_u64()).collect();
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 200, 404],
        "{path}: {log:?}"
    );
    // Both POST bodies were read and sent on.
    assert_eq!(log[1]["bytes_in"], 3, "{path}: {}", log[1]);
    assert_eq!(log[2]["bytes_in"], 3, "{path}: {}", log[2]);
    answers
}

/// A keep-alive connection idle for over a second is parked (it waits without a task of its
/// own, `weir_connections_parked`) and its next request, direct or handed to Pingora, is
/// served as before, with the client's address; a parked connection the client closes is
/// closed (no longer open or parked).
#[test]
fn an_idle_connection_is_parked_and_served_again() {
    for path in ["direct", "pingora"] {
        let (weir, _web, _dir) = shop_weir(path);
        let gauge = |name: &str| weir.metric(name).unwrap_or(-1.0);
        let mut s = connect(&weir);
        let mut pending = Vec::new();
        let requests: [&[u8]; 3] = [
            b"GET /a HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
            b"GET /b HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
            b"POST /c HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
        ];
        for (i, request) in requests.iter().enumerate() {
            if i > 0 {
                // Parked within a second of idling (and the scrape's own connection is
                // not, having just served it).
                let parked = (0..40).any(|_| {
                    std::thread::sleep(Duration::from_millis(100));
                    gauge("weir_connections_parked ") == 1.0
                });
                assert!(
                    parked,
                    "{path}: request {i}: the idle connection was not parked"
                );
            }
            s.write_all(request).expect("send");
            let answer = read_answer(&mut s, &mut pending, false);
            assert_eq!(answer.status, 200, "{path}: request {i}");
            let seen = answer.json();
            assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1", "{path}");
            assert_eq!(gauge("weir_connections_parked "), 0.0, "{path}: resumed");
        }
        let statuses: Vec<u64> = weir
            .access_log_of(3)
            .iter()
            .filter_map(|l| l["status"].as_u64())
            .collect();
        assert_eq!(statuses, [200, 200, 200], "{path}");
        // Parked again, then closed by the client: weir closes its side.
        let parked = (0..40).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            gauge("weir_connections_parked ") == 1.0
        });
        assert!(parked, "{path}: parked again");
        drop(s);
        let closed = (0..40).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            gauge("weir_connections_parked ") == 0.0 && gauge("weir_connections_open ") <= 1.0
        });
        assert!(
            closed,
            "{path}: a parked connection the client closed stays open"
        );
    }
}

#[test]
fn one_connection_mixes_direct_and_handed_off_requests_with_the_same_answers() {
    let direct = mixed_connection("direct");
    let pingora = mixed_connection("pingora");
    for answers in [&direct, &pingora] {
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        assert_eq!(statuses, vec![200, 200, 200, 200, 200, 404]);
        let get = answers[0].json();
        assert_eq!(get["method"], "GET");
        assert_eq!(get["path"], "/a?x=1");
        assert_eq!(get["proto"], "HTTP/1.1");
        let headers = &get["headers"];
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "shop.example.com");
        // The client's hop-by-hop `Connection` header is not forwarded.
        assert!(headers.get("connection").is_none(), "{headers}");
        let post = answers[1].json();
        assert_eq!(post["method"], "POST");
        assert_eq!(post["headers"]["content-length"], "3");
        let chunked = answers[2].json();
        assert_eq!(chunked["path"], "/b2");
        assert_eq!(chunked["headers"]["transfer-encoding"], "chunked");
        assert_eq!(answers[3].json()["path"], "/c");
        // HEAD: the upstream's length of the GET answer, no body (the next answer parsed).
        assert!(answers[4].header("content-length").is_some());
        assert_eq!(answers[5].body, b"no route for this host and path\n");
        // One upstream connection served the connection's requests on both paths.
        let connection = get["connection"].clone();
        assert_eq!(answers[1].json()["connection"], connection);
        assert_eq!(answers[3].json()["connection"], connection);
    }
    // The upstream saw the same request headers either way.
    let names = |a: &Answer| {
        let mut names: Vec<String> = a.json()["headers"]
            .as_object()
            .expect("headers")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&direct[0]), names(&pingora[0]));
    assert_eq!(
        direct[0].header("connection"),
        pingora[0].header("connection")
    );
}

#[test]
fn pipelined_requests_are_answered_in_order_on_the_direct_path() {
    let web = Echo::start("web");
    let dir = ManifestDir::new();
    dir.write(
        "routes.yaml",
        &(INGRESS.to_string() + &service_yaml("demo", "web", &[web.addr])),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let mut s = connect(&weir);
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: shop.example.com\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: shop.example.com\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    let mut pending = Vec::new();
    let paths: Vec<Value> = (0..3)
        .map(|_| read_answer(&mut s, &mut pending, false).json()["path"].clone())
        .collect();
    assert_eq!(paths, vec!["/1", "/2", "/3"]);
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest).map(|_| rest.is_empty());
    assert_eq!(closed.ok(), Some(true), "closed after Connection: close");
}

/// An upstream that answers `ok` and closes each connection 100 ms after its last answer
/// (as servers with a short keep-alive timeout do); counts the connections it accepted.
fn impatient_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return, // idle for 100 ms, or closed: close
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A kept upstream connection the upstream closed while the client was idle is noticed
/// (or retried over a fresh connection): no request fails.
#[test]
fn an_upstream_closing_idle_connections_fails_no_request() {
    let (upstream, accepted) = impatient_upstream();
    let dir = ManifestDir::new();
    dir.write(
        "routes.yaml",
        &(INGRESS.to_string() + &service_yaml("demo", "web", &[upstream])),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let mut s = connect(&weir);
    let mut pending = Vec::new();
    for i in 0..5 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
            .expect("send");
        let answer = read_answer(&mut s, &mut pending, false);
        assert_eq!(answer.status, 200, "request {i}");
        assert_eq!(answer.body, b"ok\n");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Each request after a pause needed a new upstream connection.
    assert!(accepted.load(Ordering::Relaxed) >= 5);
    let (_, metrics) = weir.admin_get("/metrics");
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("weir_upstream_errors_total{")),
        "a closed idle connection counted as an upstream error"
    );
}

/// An upstream with scripted answers by path, to show how the direct path relays each kind
/// of response framing (and refuses ambiguous ones).
fn scripted_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buf) {
                            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&seen[..end]).to_string();
                    seen.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let answer: Vec<u8> = match path.as_str() {
                        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
                        "/until-close" => b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close".to_vec(),
                        "/early-hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                        "/smuggle" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
                        // Connection-scoped fields, one listed in `Connection` and a framing
                        // field listed there too; the body is the request head as received.
                        "/hop" => {
                            let mut answer = format!(
                                "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop, Content-Length\r\n\
                                 X-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
                                 Upgrade: h2c\r\nTrailer: X-T\r\nX-Kept: yes\r\nContent-Length: {}\r\n\r\n",
                                head.len()
                            )
                            .into_bytes();
                            answer.extend_from_slice(head.as_bytes());
                            answer
                        }
                        // Answers after a second: a request that is still waiting.
                        "/slow" => {
                            std::thread::sleep(Duration::from_secs(1));
                            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow".to_vec()
                        }
                        "/big" => {
                            let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
                            answer.extend((0..1_048_576u32).map(|i| (i % 251) as u8));
                            answer
                        }
                        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                    };
                    // In pieces, so the proxy sees the answer arrive over several reads.
                    for piece in answer.chunks(7000) {
                        if stream.write_all(piece).is_err() {
                            return;
                        }
                    }
                    if path == "/until-close" {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Manifests routing `shop.example.com` to a new [`scripted_upstream`].
fn scripted_routes() -> ManifestDir {
    let upstream = scripted_upstream();
    let dir = ManifestDir::new();
    dir.write(
        "routes.yaml",
        &(INGRESS.to_string() + &service_yaml("demo", "web", &[upstream])),
    );
    dir
}

/// Sends `requests` on one connection (the last one should close it) and returns all bytes
/// the proxy answered.
fn exchange_all(weir: &Weir, requests: &str) -> Vec<u8> {
    let mut s = connect(weir);
    s.write_all(requests.as_bytes()).expect("send");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read to the close");
    answer
}

/// Decodes a chunked body at the start of `bytes`; returns it and what follows.
fn dechunk(bytes: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut body = Vec::new();
    let mut rest = bytes;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).expect("hex"), 16)
            .expect("chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            assert!(rest.starts_with(b"\r\n"), "no trailers are relayed");
            return (body, &rest[2..]);
        }
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n");
        rest = &rest[size + 2..];
    }
}

/// Splits one response head off `bytes`: the head's text and what follows it.
fn split_head(bytes: &[u8]) -> (String, &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    (
        String::from_utf8_lossy(&bytes[..end + 4]).to_string(),
        &bytes[end + 4..],
    )
}

#[test]
fn every_response_framing_is_relayed_and_ambiguous_ones_are_refused() {
    let dir = scripted_routes();
    let weir = Weir::start(&dir.path(), &[]);
    let host = "Host: shop.example.com\r\n";

    // HTTP/1.1: a chunked and a close-delimited body both reach the client chunked, and the
    // client connection stays usable after each.
    let answer = exchange_all(
        &weir,
        &format!(
            "GET /chunked HTTP/1.1\r\n{host}\r\nGET /until-close HTTP/1.1\r\n{host}\r\n\
             GET /early-hints HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
        ),
    );
    let (head, rest) = split_head(&answer);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert!(!head.contains("X-Trailer"), "{head}");
    let (body, rest) = dechunk(rest);
    assert_eq!(body, b"hello world");
    let (head, rest) = split_head(rest);
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
    let (body, rest) = dechunk(rest);
    assert_eq!(body, b"until close");
    let (head, rest) = split_head(rest);
    assert!(head.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{head}");
    assert!(head.contains("Link: </s.css>"), "{head}");
    let (head, rest) = split_head(rest);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert_eq!(rest, b"ok");

    // HTTP/1.0: the bare body, delimited by the close; no 1xx.
    let answer = exchange_all(&weir, &format!("GET /chunked HTTP/1.0\r\n{host}\r\n"));
    let (head, rest) = split_head(&answer);
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(!head.contains("Transfer-Encoding"), "{head}");
    assert_eq!(rest, b"hello world");

    // A 1 MiB body over many reads arrives whole.
    let answer = exchange_all(
        &weir,
        &format!("GET /big HTTP/1.1\r\n{host}Connection: close\r\n\r\n"),
    );
    let (head, rest) = split_head(&answer);
    assert!(head.contains("Content-Length: 1048576\r\n"), "{head}");
    assert_eq!(rest.len(), 1_048_576);
    assert!(rest.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));

    // Content-Length with Transfer-Encoding from the upstream: a 502, nothing of it relayed.
    let answer = exchange_all(&weir, &format!("GET /smuggle HTTP/1.1\r\n{host}\r\n"));
    let (head, rest) = split_head(&answer);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert_eq!(rest, b"upstream connection failed\n");
    let log = weir.access_log_of(6);
    let statuses: Vec<u64> = log.iter().filter_map(|l| l["status"].as_u64()).collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 502], "{log:?}");
    assert_eq!(log[4]["bytes_out"], 1_048_576);
}

/// Connection-scoped fields stay on their hop, on both `--http1-path` values, for requests the
/// direct path takes and for those it hands to Pingora: the upstream never sees the client's
/// (`Keep-Alive`, `TE`, `Proxy-Connection`, fields named in `Connection`), and the client never
/// sees the upstream's — while a framing field named in `Connection` is kept, so the response
/// still ends where it should and the connection stays usable. The three requests are
/// pipelined and the second one goes to Pingora (for its hop-by-hop fields): the third,
/// which Pingora may already have read, is answered too.
#[test]
fn connection_scoped_fields_stay_on_their_hop() {
    let dir = scripted_routes();
    for path in ["direct", "pingora"] {
        let weir = Weir::start(&dir.path(), &["--http1-path", path]);
        let host = "Host: shop.example.com\r\n";
        let hop_fields =
            "Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\n\
                          Proxy-Connection: keep-alive\r\nTE: trailers\r\n";
        let answer = exchange_all(
            &weir,
            &format!(
                "GET /hop HTTP/1.1\r\n{host}X-Mine: 1\r\n\r\n\
                 GET /hop HTTP/1.1\r\n{host}{hop_fields}X-Mine: 2\r\n\r\n\
                 GET /hop HTTP/1.1\r\n{host}X-Mine: 3\r\nConnection: close\r\n\r\n"
            ),
        );
        let mut rest = answer.as_slice();
        for mine in 1..=3 {
            let (head, after) = split_head(rest);
            let lower = head.to_ascii_lowercase();
            assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
            assert!(lower.contains("x-kept: yes\r\n"), "{path}: {head}");
            for hop in [
                "x-hop",
                "keep-alive:",
                "proxy-connection",
                "upgrade",
                "trailer",
            ] {
                assert!(
                    !lower.contains(hop),
                    "{path}: {hop} relayed to the client: {head}"
                );
            }
            let length: usize = lower
                .split("\r\n")
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{path}: no Content-Length in {head}"));
            let seen = String::from_utf8_lossy(&after[..length]).to_ascii_lowercase();
            assert!(seen.contains(&format!("x-mine: {mine}")), "{path}: {seen}");
            for hop in ["x-secret", "keep-alive:", "proxy-connection", "\r\nte:"] {
                assert!(
                    !seen.contains(hop),
                    "{path}: {hop} forwarded upstream: {seen}"
                );
            }
            rest = &after[length..];
        }
        assert!(rest.is_empty(), "{path}: bytes after the last answer");
    }
}

/// One HTTP/2 request of a test: method, path, extra fields, body.
struct H2Request {
    method: &'static str,
    path: &'static str,
    authority: &'static str,
    fields: Vec<(&'static str, &'static str)>,
    body: &'static [u8],
}

fn h2_get(path: &'static str) -> H2Request {
    H2Request {
        method: "GET",
        path,
        authority: "shop.example.com",
        fields: Vec::new(),
        body: b"",
    }
}

/// Sends `requests` one after another on one h2c connection; `None` for a request that got
/// no answer (the connection was gone).
fn h2_exchange(weir: &Weir, requests: Vec<H2Request>) -> Vec<Option<Answer>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(weir.http)
            .await
            .expect("connect");
        let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(connection);
        let mut answers = Vec::new();
        for request in requests {
            let answer = tokio::time::timeout(Duration::from_secs(10), async {
                let mut builder = http::Request::builder()
                    .method(request.method)
                    .uri(format!("http://{}{}", request.authority, request.path));
                for (name, value) in &request.fields {
                    builder = builder.header(*name, *value);
                }
                let sent = builder.body(()).expect("request");
                client = client.clone().ready().await.ok()?;
                let (response, mut body_out) =
                    client.send_request(sent, request.body.is_empty()).ok()?;
                if !request.body.is_empty() {
                    body_out
                        .send_data(bytes::Bytes::from_static(request.body), true)
                        .ok()?;
                }
                let response = response.await.ok()?;
                let status = response.status().as_u16();
                let headers = response
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).to_string(),
                        )
                    })
                    .collect();
                let mut stream = response.into_body();
                let mut body = Vec::new();
                while let Some(data) = stream.data().await {
                    let data = data.ok()?;
                    let _ = stream.flow_control().release_capacity(data.len());
                    body.extend_from_slice(&data);
                }
                Some(Answer {
                    status,
                    headers,
                    body,
                })
            })
            .await
            .ok()
            .flatten();
            answers.push(answer);
        }
        answers
    })
}

/// HTTP/2 streams get the same answers on both `--http1-path` values and both HTTP/2
/// servers (on `direct`, body-less streams are served by the direct path and the rest by
/// Pingora):
/// every framing of the upstream's body arrives whole and unframed, connection-scoped fields
/// stay on their hop, a split `cookie` reaches the HTTP/1.1 upstream as one field, `Host` and
/// `X-Forwarded-*` are set from the stream, an ambiguous upstream response is a 502 and
/// every request is logged.
#[test]
fn h2_streams_are_answered_like_http1_requests() {
    let dir = scripted_routes();
    // weir's HTTP/2 server with the direct path, and Pingora's.
    let variants: [(&str, &[&str]); 2] = [
        ("direct", &["--http1-path", "direct"]),
        ("pingora", &["--http1-path", "pingora"]),
    ];
    for (path, args) in variants {
        let direct = path.starts_with("direct");
        let weir = Weir::start(&dir.path(), args);
        let hop = H2Request {
            fields: vec![
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("te", "trailers"),
                ("x-mine", "h2"),
            ],
            ..h2_get("/hop")
        };
        let answers = h2_exchange(
            &weir,
            vec![
                h2_get("/chunked"),
                h2_get("/until-close"),
                h2_get("/early-hints"),
                h2_get("/big"),
                hop,
                H2Request {
                    method: "HEAD",
                    ..h2_get("/big")
                },
                h2_get("/smuggle"),
                H2Request {
                    method: "POST",
                    body: b"posted",
                    ..h2_get("/hop")
                },
                H2Request {
                    authority: "nowhere.example.com",
                    ..h2_get("/")
                },
                H2Request {
                    method: "HEAD",
                    authority: "nowhere.example.com",
                    ..h2_get("/")
                },
            ],
        );
        let answers: Vec<Answer> = answers
            .into_iter()
            .enumerate()
            .map(|(i, a)| a.unwrap_or_else(|| panic!("{path}: request {i} got no answer")))
            .collect();
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        // `Content-Length` with `Transfer-Encoding`: weir's own path refuses it, Pingora's
        // follows `Transfer-Encoding` (RFC 9112 §6.3 allows either); neither relays both.
        let ambiguous = if direct { 502 } else { 200 };
        assert_eq!(
            statuses,
            vec![200, 200, 200, 200, 200, 200, ambiguous, 200, 404, 404],
            "{path}"
        );
        assert_eq!(answers[0].body, b"hello world", "{path}");
        assert_eq!(answers[1].body, b"until close", "{path}");
        assert_eq!(answers[2].body, b"ok", "{path}");
        let big = &answers[3];
        assert_eq!(big.header("content-length"), Some("1048576"), "{path}");
        assert_eq!(big.body.len(), 1_048_576, "{path}");
        assert!(big
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8));
        for answer in &answers {
            for hop in [
                "transfer-encoding",
                "connection",
                "keep-alive",
                "x-hop",
                "upgrade",
            ] {
                assert!(answer.header(hop).is_none(), "{path}: {hop} relayed");
            }
        }
        let hop = &answers[4];
        assert_eq!(hop.header("x-kept"), Some("yes"), "{path}");
        let seen = String::from_utf8_lossy(&hop.body).to_ascii_lowercase();
        let fields: Vec<&str> = seen.split("\r\n").skip(1).collect();
        for expected in [
            "host: shop.example.com",
            "x-mine: h2",
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-proto: http",
            "x-forwarded-host: shop.example.com",
        ] {
            assert!(
                fields.contains(&expected),
                "{path}: no {expected:?} in {seen}"
            );
        }
        assert!(
            !fields.iter().any(|f| f.starts_with("te:")),
            "{path}: {seen}"
        );
        if direct {
            assert!(fields.contains(&"cookie: a=1; b=2"), "{path}: {seen}");
        }
        assert!(
            answers[5].body.is_empty(),
            "{path}: HEAD answered with a body"
        );
        assert_eq!(answers[5].header("content-length"), Some("1048576"));
        if direct {
            assert_eq!(answers[6].body, b"upstream connection failed\n");
        } else {
            assert!(answers[6].body.is_empty(), "{path}");
        }
        let posted = String::from_utf8_lossy(&answers[7].body).to_ascii_lowercase();
        assert!(posted.starts_with("post /hop http/1.1"), "{path}: {posted}");
        assert!(
            answers[9].body.is_empty(),
            "{path}: HEAD answered with a body"
        );
        assert_eq!(weir.access_log_of(10).len(), 10, "{path}");
    }
}

/// Streams the HTTP/2 layer refuses as malformed (here a `host` field that contradicts
/// `:authority`: a 400) are counted per connection on every path: the 31st still leaves the
/// connection serving, the 32nd ends it.
#[test]
fn malformed_h2_streams_end_their_connection_at_the_budget() {
    let dir = scripted_routes();
    let malformed = || H2Request {
        fields: vec![("host", "elsewhere.example.com")],
        ..h2_get("/chunked")
    };
    // weir's HTTP/2 server, and Pingora's.
    let variants: [(&str, &[&str]); 2] = [
        ("weir", &["--http1-path", "direct"]),
        ("pingora", &["--http1-path", "pingora"]),
    ];
    for (path, args) in variants {
        let weir = Weir::start(&dir.path(), args);
        let mut requests: Vec<H2Request> = (0..31).map(|_| malformed()).collect();
        requests.push(h2_get("/chunked"));
        requests.push(malformed());
        requests.push(h2_get("/chunked"));
        let answers = h2_exchange(&weir, requests);
        for (i, answer) in answers[..31].iter().enumerate() {
            let status = answer.as_ref().map(|a| a.status);
            assert_eq!(status, Some(400), "{path}: malformed request {i}");
        }
        let served = answers[31].as_ref().map(|a| a.body.as_slice());
        assert_eq!(served, Some(&b"hello world"[..]), "{path}");
        assert!(
            answers[33].is_none(),
            "{path}: the connection outlived its budget of malformed streams"
        );
    }
}

/// The streams of one HTTP/2 connection are served side by side: answers to quick requests
/// do not wait behind a slow one opened before them. A stream whose client left while its
/// upstream was still answering is finished all the same: it is counted once the upstream
/// answered, and the rest of the proxy is unaffected.
#[test]
fn h2_streams_of_one_connection_do_not_wait_for_each_other() {
    let dir = scripted_routes();
    let series = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("weir_requests_total{") && l.contains("service=\"web\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // weir's HTTP/2 server; Pingora's, under `--work-stealing` (where weir's server would
    // keep one connection's streams on one thread) and with `--http1-path pingora`.
    let variants: [(&str, &[&str]); 3] = [
        ("direct", &["--http1-path", "direct"]),
        (
            "direct, work-stealing",
            &["--http1-path", "direct", "--work-stealing"],
        ),
        ("pingora", &["--http1-path", "pingora"]),
    ];
    for (path, args) in variants {
        let weir = Weir::start(&dir.path(), args);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (quick_done_first, slow_body) = runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(weir.http)
                .await
                .expect("connect");
            let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
            tokio::spawn(connection);
            let get = |path: &str| {
                http::Request::get(format!("http://shop.example.com{path}"))
                    .body(())
                    .expect("request")
            };
            let body_of = |response: http::Response<h2::RecvStream>| async move {
                let mut stream = response.into_body();
                let mut body = Vec::new();
                while let Some(Ok(data)) = stream.data().await {
                    let _ = stream.flow_control().release_capacity(data.len());
                    body.extend_from_slice(&data);
                }
                body
            };
            let mut client = client.ready().await.expect("ready");
            let (slow, _) = client.send_request(get("/slow"), true).expect("send /slow");
            let mut slow = Box::pin(slow);
            let mut quick = Vec::new();
            for _ in 0..5 {
                let mut client = client.clone().ready().await.expect("ready");
                let (response, _) = client.send_request(get("/chunked"), true).expect("send");
                quick.push(response);
            }
            let all_quick = async {
                let mut bodies = Vec::new();
                for response in quick {
                    bodies.push(body_of(response.await.expect("quick answer")).await);
                }
                bodies
            };
            let timeout = Duration::from_secs(10);
            let quick_done_first = tokio::select! {
                bodies = tokio::time::timeout(timeout, all_quick) => {
                    let bodies = bodies.expect("quick answers in time");
                    assert!(bodies.iter().all(|b| b == b"hello world"), "{bodies:?}");
                    true
                }
                _ = &mut slow => false,
            };
            let slow = tokio::time::timeout(timeout, slow)
                .await
                .expect("slow answer in time")
                .expect("slow answer");
            (quick_done_first, body_of(slow).await)
        });
        assert!(
            quick_done_first,
            "{path}: quick streams waited for the slow one"
        );
        assert_eq!(slow_body, b"slow", "{path}");

        // A client that leaves while its stream waits for the upstream.
        let before = series(&weir.admin_get("/metrics").1);
        runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(weir.http)
                .await
                .expect("connect");
            let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
            let connection = tokio::spawn(connection);
            let mut client = client.ready().await.expect("ready");
            let request = http::Request::get("http://shop.example.com/slow")
                .body(())
                .expect("request");
            let (_response, _) = client.send_request(request, true).expect("send /slow");
            // Long enough for the stream to reach the upstream, short of its answer.
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The connection's task is dropped, and with it the socket.
            connection.abort();
            let _ = connection.await;
        });
        let mut counted = before;
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            counted = series(&weir.admin_get("/metrics").1);
            if counted > before {
                break;
            }
        }
        assert_eq!(
            counted,
            before + 1.0,
            "{path}: the abandoned stream was not counted"
        );
        let answers = h2_exchange(&weir, vec![h2_get("/chunked")]);
        let body = answers[0].as_ref().map(|a| a.body.as_slice());
        assert_eq!(
            body,
            Some(&b"hello world"[..]),
            "{path}: served after a client left"
        );
    }
}

/// weir's own answers (here a 404) to a `HEAD` carry the length of the body they do not
/// send, on both paths: a body after the head would be read as the start of the next answer.
#[test]
fn answers_of_weirs_own_to_head_requests_carry_no_body() {
    let dir = scripted_routes();
    for path in ["direct", "pingora"] {
        let weir = Weir::start(&dir.path(), &["--http1-path", path]);
        let answer = exchange_all(
            &weir,
            "HEAD / HTTP/1.1\r\nHost: nowhere.example.com\r\n\r\n\
             GET /chunked HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n",
        );
        let (head, rest) = split_head(&answer);
        assert!(head.starts_with("HTTP/1.1 404"), "{path}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("content-length: "),
            "{path}: {head}"
        );
        let (head, _) = split_head(rest);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    }
}
