//! weir-client's `tracing` spans, in a test binary of their own: a subscriber set for one
//! thread misses callsites that another test's thread registered first.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tower::ServiceExt;
use weir_client::{Algorithm, ClientConfig, Endpoints, WeirClient};
mod support;

use support::{echo, refused};

async fn get(client: &WeirClient<Empty<Bytes>>) {
    let request = http::Request::get("/").body(Empty::new()).expect("request");
    let response = client.clone().oneshot(request).await.expect("an answer");
    response.into_body().collect().await.expect("body");
}

fn config(algorithm: Algorithm) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.pool.algorithm = algorithm;
    config
}

/// Each attempt is a `tracing` span with the service, the endpoint, the attempt number, the
/// pick reason and the status.
#[tokio::test]
async fn each_attempt_is_a_tracing_span() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let live = echo("a").await;
    let dead = refused();
    let client = WeirClient::builder(Endpoints::fixed("shop/product", [dead, live]))
        .config(config(Algorithm::RoundRobin))
        .build();
    for _ in 0..2 {
        get(&client).await;
    }
    let log = String::from_utf8_lossy(&captured.0.lock().expect("lock")).to_string();
    let spans: Vec<&str> = log
        .lines()
        // A span's close line: one per attempt.
        .filter(|l| l.contains("weir_client.attempt{") && l.contains(": close "))
        .collect();
    assert_eq!(spans.len(), 3, "two calls, one retried: {log}");
    assert!(
        spans.iter().any(|l| l.contains(&format!("endpoint={dead}"))
            && l.contains("attempt=1")
            && l.contains("reason=\"primary\"")),
        "{log}"
    );
    assert!(
        spans.iter().any(|l| l.contains(&format!("endpoint={live}"))
            && l.contains("attempt=2")
            && l.contains("reason=\"retry\"")
            && l.contains("status=200")),
        "{log}"
    );
}
