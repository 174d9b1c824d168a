//! weir-client: weir's balancer in-process, for Rust services that call other services. A
//! batch that fans out to a hundred calls waits for the slowest of them; through a proxy each
//! call pays an extra hop, and nobody can tell which endpoint a spike came from. With
//! weir-client each call goes straight to an endpoint picked by the same pools the proxy uses:
//! every algorithm, consistent hash with N-ring fade-in and bounded load (in-flight or
//! occupancy), zone-aware routing with the latency health factor, slow start, outlier ejection,
//! and retries to another endpoint within a budget.
//!
//! Owns: [`WeirClient`] (a `tower::Service<http::Request<B>>` over hyper-util's pooled client,
//! HTTP/1.1 or h2c), where endpoints come from ([`Endpoints`]: a fixed list, a channel, or a
//! Service's EndpointSlices watched with kube-rs), what each response says of how it was
//! balanced ([`Decision`]), and optional metrics ([`ClientMetrics`]).
//!
//! Must not: depend on Pingora or the proxy; hold a lock while a call is under way; retry what
//! may not be repeated.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::{BodyExt, Empty};
//! use tower::ServiceExt;
//! use weir_client::{Endpoints, HashKey, ServiceTarget, WeirClient};
//!
//! let kube = kube::Client::try_default().await?;
//! let target = ServiceTarget::new("shop", "product", 8080);
//! let endpoints = Endpoints::kubernetes(kube, target, std::time::Duration::from_millis(100));
//! let client = WeirClient::builder(endpoints).build::<Empty<bytes::Bytes>>();
//!
//! let mut request = http::Request::get("/products/42").body(Empty::new())?;
//! request.extensions_mut().insert(HashKey::of("42"));
//! let response = client.clone().oneshot(request).await?;
//! let decision = response.extensions().get::<weir_client::Decision>().cloned();
//! let body = response.into_body().collect().await?.to_bytes();
//! # Ok(()) }
//! ```

mod body;
pub mod config;
mod decision;
pub mod endpoints;
mod error;
pub mod metrics;
mod service;

pub use body::ResponseBody;
pub use config::{ClientConfig, KeyFrom, Protocol};
pub use decision::{Decision, HashKey};
pub use endpoints::{Endpoints, ServiceTarget};
pub use error::Error;
pub use metrics::ClientMetrics;
pub use service::{Builder, WeirClient};
pub use weir_balancer::{Algorithm, EndpointSpec, PickReason, PoolConfig};
