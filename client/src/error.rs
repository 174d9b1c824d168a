//! Why a call failed: no endpoint to send it to, or its last attempt's error.
//!
//! Must not: hide which endpoint failed (each error names it).

use std::net::SocketAddr;
use std::time::Duration;

/// An error of [`WeirClient`](crate::WeirClient).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Service has no endpoint the balancer may use (none ready, or every one tried).
    #[error("{service}: no available endpoints ({attempts} attempts)")]
    NoEndpoints { service: String, attempts: u32 },
    /// The last attempt failed before a response head.
    #[error("{service}: {endpoint} failed after {attempts} attempts: {source}")]
    Upstream {
        service: String,
        endpoint: SocketAddr,
        attempts: u32,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The last attempt had no response head in time.
    #[error("{service}: {endpoint} did not answer within {after:?} ({attempts} attempts)")]
    Timeout {
        service: String,
        endpoint: SocketAddr,
        attempts: u32,
        after: Duration,
    },
    /// The request cannot be sent as given (its URI cannot be rewritten to an endpoint).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}
