//! Upstreams of the client's tests: weir's echo served in-process on loopback.

// Test code: a failed setup is a failed test.
#![allow(clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use weir_testsupport::echo::{serve, EchoIdentity};

/// An echo upstream on loopback answering as `pod` (with `status`).
pub async fn echo_with(pod: &str, status: u16) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let identity = EchoIdentity {
        service: "product".to_string(),
        pod: pod.to_string(),
        status,
        delay: Duration::ZERO,
        retry_after: None,
        tls: None,
    };
    tokio::spawn(serve(listener, identity));
    addr
}

pub async fn echo(pod: &str) -> SocketAddr {
    echo_with(pod, 200).await
}

/// A loopback address nothing listens on (connections are refused).
pub fn refused() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}
