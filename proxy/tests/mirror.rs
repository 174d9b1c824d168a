//! End to end: ingress-nginx's `mirror-target` and weir's `weir.dev/warm-up-mirror`,
//! served by the real `weir` binary to real clients, on weir's own HTTP/1.1 path, Pingora's
//! and HTTP/2, with mirror targets that record, stall or are down.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http_body_util::Full;
use reqwest::blocking::Client;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{demo_ingress, service_yaml, Echo, ManifestDir, Weir};

const HOSTS: [&str; 4] = [
    "shop.example.com",
    "nobody.example.com",
    "slow.example.com",
    "down.example.com",
];

/// What a recording server received: method, path and query, `Host`, `X-Original-URI`,
/// body.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    host: String,
    original_uri: String,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A server that records every request and answers `{"pod": "<name>"}` after `delay`.
fn start_recorder(name: &'static str, delay: Duration) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let record = Arc::clone(&log);
    let addr = support::http1_server(move |parts: http::request::Parts, body: Bytes| {
        let record = Arc::clone(&record);
        async move {
            let field = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            record.lock().expect("lock").push(Received {
                method: parts.method.to_string(),
                target: parts.uri.to_string(),
                host: field("host"),
                original_uri: field("x-original-uri"),
                body: body.to_vec(),
            });
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            http::Response::new(Full::new(Bytes::from(format!("{{\"pod\": \"{name}\"}}"))))
        }
    });
    (addr, log)
}

fn client_to(weir: &Weir, http2: bool) -> Client {
    support::client_for_hosts(weir.http, &HOSTS, http2)
}

/// `mirror-target` with `$request_uri`: the copy has the client's method, path, query and
/// body (`X-Original-URI` too, `Host` the mirror's or `mirror-host`), also for a chunked
/// body; `mirror-request-body: off` leaves the body out; a mirror that stalls or is down
/// never slows or fails the client, and is counted.
#[test]
fn mirrors_get_a_copy_and_never_hold_the_client() {
    let app = Echo::start("app");
    let (mirror, copies) = start_recorder("mirror", Duration::ZERO);
    let (slow, _slow_copies) = start_recorder("slow", Duration::from_secs(5));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let down = closed.local_addr().expect("addr");
    drop(closed);
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(service_yaml("demo", "app", &[app.addr])
            + &demo_ingress(
                "shop",
                "shop.example.com",
                &format!("nginx.ingress.kubernetes.io/mirror-target: \"http://{mirror}$request_uri\""),
            )
            + &demo_ingress(
                "nobody",
                "nobody.example.com",
                &format!("nginx.ingress.kubernetes.io/mirror-target: \"http://{mirror}/copies$request_uri\", nginx.ingress.kubernetes.io/mirror-request-body: \"off\", nginx.ingress.kubernetes.io/mirror-host: shadow.example.com"),
            )
            + &demo_ingress(
                "slow",
                "slow.example.com",
                &format!("nginx.ingress.kubernetes.io/mirror-target: \"http://{slow}$request_uri\""),
            )
            + &demo_ingress(
                "down",
                "down.example.com",
                &format!("nginx.ingress.kubernetes.io/mirror-target: \"http://{down}$request_uri\""),
            )),
    );
    for path in ["direct", "pingora"] {
        let weir = Weir::start(&dir.path(), &["--http1-path", path]);
        let port = weir.http.port();
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = client_to(&weir, http2);
            copies.lock().expect("lock").clear();
            let resp = c
                .post(format!("http://shop.example.com:{port}/orders?id=7"))
                .body("an order")
                .send()
                .expect("request");
            assert_eq!(resp.status().as_u16(), 200, "{case}");
            let echoed: serde_json::Value = resp.json().expect("echo");
            assert_eq!(
                echoed["service"], "app",
                "{case}: the client gets the upstream's answer"
            );
            // A chunked body (no length): the copy waits for its end.
            let chunked =
                reqwest::blocking::Body::new(std::io::Cursor::new(b"chunked order".to_vec()));
            let resp = c
                .put(format!("http://shop.example.com:{port}/orders/8"))
                .body(chunked)
                .send()
                .expect("request");
            assert_eq!(resp.status().as_u16(), 200, "{case}");
            let resp = c
                .post(format!("http://nobody.example.com:{port}/a%20b?q=1"))
                .body("not copied")
                .send()
                .expect("request");
            assert_eq!(resp.status().as_u16(), 200, "{case}");
            let all_three = support::wait_until(Duration::from_secs(5), || {
                copies.lock().expect("lock").len() >= 3
            });
            assert!(
                all_three.is_some(),
                "{case}: {:?}",
                copies.lock().expect("lock")
            );
            let mut got = copies.lock().expect("lock").clone();
            got.sort_by(|a, b| a.target.cmp(&b.target));
            assert_eq!(got.len(), 3, "{case}: one copy each: {got:?}");
            let (nobody, chunked, order) = (&got[0], &got[1], &got[2]);
            assert_eq!(
                (order.method.as_str(), order.target.as_str()),
                ("POST", "/orders?id=7"),
                "{case}"
            );
            assert_eq!(order.body, b"an order", "{case}");
            assert_eq!(order.host, mirror.to_string(), "{case}");
            assert_eq!(order.original_uri, "/orders?id=7", "{case}");
            assert_eq!(
                (chunked.method.as_str(), chunked.target.as_str()),
                ("PUT", "/orders/8"),
                "{case}"
            );
            assert_eq!(chunked.body, b"chunked order", "{case}");
            assert_eq!(nobody.target, "/copies/a%20b?q=1", "{case}");
            assert_eq!(nobody.host, "shadow.example.com", "{case}");
            assert!(nobody.body.is_empty(), "{case}: mirror-request-body off");
            // A mirror that takes 5 s, and one that is down: the client never waits.
            for host in ["slow.example.com", "down.example.com"] {
                for _ in 0..3 {
                    let started = Instant::now();
                    let resp = c
                        .post(format!("http://{host}:{port}/pay"))
                        .body("x")
                        .send()
                        .expect("request");
                    assert_eq!(resp.status().as_u16(), 200, "{case} {host}");
                    assert!(
                        started.elapsed() < Duration::from_secs(1),
                        "{case} {host}: {:?}",
                        started.elapsed()
                    );
                }
            }
        }
        // Two protocols: 3 copies each to the recorder, 3 to the mirror that is down.
        let failed = support::wait_until(Duration::from_secs(5), || {
            weir.metric("weir_mirror_requests_total{kind=\"mirror\",result=\"failed\"}")
                >= Some(6.0)
        });
        assert!(
            failed.is_some(),
            "{:?}",
            weir.metric("weir_mirror_requests_total{kind=\"mirror\",result=\"failed\"}")
        );
        assert!(
            weir.metric("weir_mirror_requests_total{kind=\"mirror\",result=\"sent\"}") >= Some(6.0)
        );
    }
}

/// `weir.dev/warm-up-mirror`: while an endpoint that joined a pool of older ones is in slow
/// start, every idempotent request (share 1) is also copied to it; once its window ends,
/// none is; at startup (every endpoint new) none is.
#[test]
fn warm_up_copies_go_to_an_endpoint_in_slow_start_only() {
    let (old, _old_log) = start_recorder("old", Duration::ZERO);
    let (young, young_log) = start_recorder("young", Duration::ZERO);
    let window = Duration::from_secs(4);
    let manifests = |addrs: &[SocketAddr]| {
        service_yaml("demo", "app", addrs)
            + &demo_ingress(
                "shop",
                "shop.example.com",
                "weir.dev/slow-start: 4s, weir.dev/warm-up-mirror: \"1\"",
            )
    };
    let dir = ManifestDir::new();
    dir.write("all.yaml", &manifests(&[old]));
    let started = Instant::now();
    let weir = Weir::start(&dir.path(), &[]);
    let c = client_to(&weir, false);
    let url = format!("http://shop.example.com:{}/item", weir.http.port());
    let warm_ups = || {
        weir.metric("weir_mirror_requests_total{kind=\"warm_up\",result=\"sent\"}")
            .unwrap_or(0.0)
    };
    let pods = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let body: serde_json::Value =
                    c.get(&url).send().expect("request").json().expect("json");
                body["pod"].as_str().expect("pod").to_string()
            })
            .collect()
    };
    assert!(pods(10).iter().all(|p| p == "old"));
    assert_eq!(
        warm_ups(),
        0.0,
        "the only endpoint is new, but nothing is older"
    );
    // The first endpoint has finished its slow start; a second joins.
    std::thread::sleep((window + Duration::from_millis(300)).saturating_sub(started.elapsed()));
    dir.write("all.yaml", &manifests(&[old, young]));
    let joined = support::wait_until(Duration::from_secs(3), || {
        pods(1);
        !young_log.lock().expect("lock").is_empty()
    });
    assert!(joined.is_some(), "the new endpoint never got a request");
    let joined_at = Instant::now();
    support::wait_until(Duration::from_secs(2), || warm_ups() >= 1.0);
    let before = warm_ups();
    let received_before = young_log.lock().expect("lock").len();
    let answered = pods(20);
    assert!(
        joined_at.elapsed() < window / 2,
        "the 20 requests ran inside the window"
    );
    let live_young = answered.iter().filter(|p| *p == "young").count();
    let settled = support::wait_until(Duration::from_secs(3), || warm_ups() - before >= 20.0);
    assert!(settled.is_some(), "copies: {}", warm_ups() - before);
    assert_eq!(warm_ups() - before, 20.0, "one copy per request (share 1)");
    let received = young_log.lock().expect("lock").len() - received_before;
    assert_eq!(
        received,
        20 + live_young,
        "the young endpoint got each copy and its live share"
    );
    // Its window over, no more copies.
    std::thread::sleep(window.saturating_sub(joined_at.elapsed()) + Duration::from_millis(300));
    let after_window = warm_ups();
    pods(20);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(warm_ups(), after_window);
}
