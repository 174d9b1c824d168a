//! weir's own engine: the HTTP/1.1 loop and exchange ([`direct`]), the HTTP/2 server
//! ([`h2_server`], on the `weir-http2` codec), the per-thread pool of idle upstream
//! connections ([`idle_upstreams`]), the read of a connection waiting for its next request
//! ([`idle_read`]), the connection's read timer ([`read_deadline`]) and the close of a
//! connection weir ends ([`lingering_close`]).
//!
//! Must not: decide anything about a request beyond whether it takes it (the request core
//! does), or parse bytes itself ([`crate::http::h1`] and `weir-http2` do).

pub mod direct;
pub(crate) mod h2_server;
pub(crate) mod idle_read;
pub mod idle_upstreams;
pub(crate) mod lingering_close;
pub(crate) mod read_deadline;
