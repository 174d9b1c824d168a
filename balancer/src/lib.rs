//! weir-balancer: the endpoint registry and the load-balancing algorithms.
//!
//! Owns: per-endpoint state shared by every route that uses an endpoint
//! ([`EndpointRegistry`], [`EndpointState`]), per-route pools ([`Pool`]) that pick an
//! endpoint and say why ([`Pick`], [`PickReason`]), the in-flight accounting guard
//! ([`InFlightGuard`]), and the retry budget ([`RetryBudget`]). The proxy and weir-client
//! balance with the same pieces.
//!
//! Must not: do I/O, know about Pingora or Kubernetes, read the wall clock on its own, or
//! take a lock on the pick path that a second core would wait on. Everything here is
//! deterministic given its inputs so it can be unit-tested and simulated.

pub mod affinity;
mod algorithms;
pub mod clock;
mod endpoint;
pub mod fade;
pub mod metric_names;
pub mod occupancy;
pub mod outlier;
mod pool;
mod registry;
pub mod retry_budget;
pub mod ring;
pub mod zone;

pub use affinity::Sticky;
pub use clock::Nanos;
pub use endpoint::{EndpointSpec, EndpointState, InFlightGuard};
pub use outlier::{Outcome, OutlierConfig, SlowStart};
pub use pool::{
    Algorithm, LoadSignal, Pick, PickReason, PickRequest, Pool, PoolConfig, BOUNDED_WALK,
};
pub use registry::EndpointRegistry;
pub use retry_budget::{BudgetGuard, RetryBudget};
