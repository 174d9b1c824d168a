//! weir-proxy: the weir ingress router.
//!
//! Owns everything that touches the network or the process: the router compiled from a
//! snapshot ([`router`]), the live routing state ([`routing`]), the Pingora data path
//! ([`dataplane`]), the configuration pipeline ([`config`]), the admin listener
//! ([`admin`]), metrics, logging, signals and the command line. The binary `weir`
//! (`src/main.rs`) only wires these together.
//!
//! Must not: contain balancing algorithms (they live in `weir-balancer`) or translation of
//! Kubernetes objects (in `weir-discovery`).

pub mod access_log;
pub mod admin;
pub mod allocator;
pub mod cli;
pub mod concurrency;
pub mod config;
pub mod dataplane;
pub mod direct;
pub mod forwarded;
pub mod gate;
pub mod h1;
pub(crate) mod h2_request;
pub(crate) mod h2_server;
pub(crate) mod h2_session;
pub mod hardening;
pub(crate) mod header_deadline;
pub mod idle_upstreams;
pub mod logging;
pub mod metrics;
pub mod path;
pub(crate) mod read_deadline;
pub mod request_view;
pub mod retry;
pub mod router;
pub mod routing;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub(crate) mod timeouts;
pub mod tls;
