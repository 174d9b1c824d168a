//! End to end: WebSocket upgrades through weir to a real upstream, kept open while idle
//! for longer than the route's read timeout, closed after `websocket-idle-timeout`.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::net::TcpStream;
use std::time::Duration;
use support::{Echo, ManifestDir, Weir};
use tungstenite::{Message, WebSocket};

fn ingress(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: demo\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: {name}.example.com\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{name: http}}}}}}}}]}}\n---\n"
    )
}

fn connect(weir: &Weir, host: &str) -> WebSocket<TcpStream> {
    let url = weir.url("/chat").replace("http://", "ws://");
    let request = tungstenite::http::Request::builder()
        .uri(&url)
        .header("host", host)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .expect("request");
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("address")
        .to_string();
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (ws, response) = tungstenite::client(request, stream).expect("handshake");
    assert_eq!(response.status().as_u16(), 101);
    ws
}

fn echo(ws: &mut WebSocket<TcpStream>, text: &str) -> String {
    ws.send(Message::text(text)).expect("send");
    loop {
        match ws.read().expect("read") {
            Message::Text(reply) => return reply.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_websocket_echoes_and_outlives_the_read_timeout_while_idle() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(support::service_yaml("demo", "app", &[app.addr])
            + &ingress("chat", "weir.dev/read-timeout: 300ms")
            + &ingress(
                "short",
                "weir.dev/read-timeout: 300ms, weir.dev/websocket-idle-timeout: 600ms",
            )),
    );
    let weir = Weir::start(&dir.path(), &[]);

    let mut ws = connect(&weir, "chat.example.com");
    assert_eq!(echo(&mut ws, "hello"), "app-pod: hello");
    // Idle for four read timeouts: the connection stays up (default idle timeout 1 h).
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(echo(&mut ws, "still there?"), "app-pod: still there?");
    for i in 0..20 {
        assert_eq!(echo(&mut ws, &format!("m{i}")), format!("app-pod: m{i}"));
    }
    ws.close(None).expect("close");

    // With websocket-idle-timeout: 600ms, an idle socket is closed after that.
    let mut ws = connect(&weir, "short.example.com");
    assert_eq!(echo(&mut ws, "hello"), "app-pod: hello");
    std::thread::sleep(Duration::from_millis(1_500));
    // Sending may still succeed into the closing socket; reading cannot return an echo.
    let after = match ws.send(Message::text("late")) {
        Ok(()) => ws.read().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(
        !matches!(after, Ok(Message::Text(_))),
        "the idle WebSocket should have been closed: {after:?}"
    );

    // Both show up in the access log as 101s on the upstream.
    let log = weir.access_log_of(2);
    let upgrades = log.iter().filter(|l| l["status"] == 101).count();
    assert_eq!(upgrades, 2, "{log:?}");
}
