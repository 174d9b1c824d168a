//! End to end: weir's own HTTP/2 server (`--http2-server weir`, the default) under what a
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
/// (through the bridge to Pingora's proxy, which serves requests with bodies); so does a
/// body whose client ends it with trailers.
#[test]
fn request_bodies_reach_the_upstream_whole() {
    let (weir, _app, _dir) = start();
    runtime().block_on(async {
        let client = connect(&weir, &h2::client::Builder::new()).await;
        for (size, trailers) in [(300_000usize, false), (70_000, true), (0, true)] {
            let request = http::Request::post("http://app.example.com/upload")
                .body(())
                .expect("request");
            let mut c = client.clone().ready().await.expect("ready");
            let (response, mut out) = c.send_request(request, false).expect("send");
            let mut body = Bytes::from(vec![7u8; size]);
            while !body.is_empty() {
                out.reserve_capacity(body.len().min(16_384));
                let granted = std::future::poll_fn(|cx| out.poll_capacity(cx))
                    .await
                    .expect("capacity")
                    .expect("capacity");
                let piece = body.split_to(granted.min(body.len()));
                out.send_data(piece, false).expect("data");
            }
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
            assert_eq!(response.status(), 200);
            let echoed: Value = serde_json::from_slice(&body_of(response).await).expect("json");
            assert_eq!(echoed["method"], "POST");
            assert_eq!(echoed["body_bytes"], size, "trailers: {trailers}");
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
