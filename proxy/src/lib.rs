//! weir-proxy: the weir ingress router.
//!
//! Layers, each depending only on those listed before it:
//! - [`http`]: HTTP's rules as weir applies them, with no I/O and no engine: the HTTP/1.1
//!   wire format, request checks, the path's normal form, `X-Forwarded-*`, a request read
//!   the same way whatever carried it.
//! - [`subrequest`], [`redis_store`]: what weir itself sends on a request's behalf (auth
//!   checks, mirror copies) and the fleet's shared rate-limit counters in Redis.
//! - [`routes`]: the router compiled from a snapshot, the live routing state swapped in by
//!   each reload, and the configuration pipeline that feeds it.
//! - [`fleet`]: the replicas of one fleet sharing what their balancers learn (gossip,
//!   shared ejection), fed by the request core and applied to the live routes.
//! - [`health`]: active checks an ejected endpoint must pass before it returns.
//! - [`request`]: the request core: the phases of a request (admit, route, pick, forward,
//!   finish) written once, with what they share (retries, limits, timeouts, the access log,
//!   traces). Every engine calls it; none of it knows which engine carries the request.
//! - [`engine`]: what carries requests: weir's own HTTP/1.1 and HTTP/2 engine
//!   ([`engine::own`]), and Pingora's proxy for what it does not take ([`engine::pingora`]).
//! - [`listener`]: the door of each listener (connection limits, the first-header deadline,
//!   which engine gets a connection) and TLS certificates.
//! - [`app`]: the process: command line, logging, metrics registry, admin listener, signals.
//!
//! The binary `weir` (`src/main.rs`) only wires these together.
//!
//! Must not: contain balancing algorithms (they live in `weir-balancer`) or translation of
//! Kubernetes objects (in `weir-discovery`).

pub mod app;
pub mod engine;
pub mod fleet;
pub mod health;
pub mod http;
pub mod listener;
pub mod redis_store;
pub mod request;
pub mod routes;
pub mod subrequest;
