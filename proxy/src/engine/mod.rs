//! The engines that carry requests between clients and upstreams. Each is an adapter onto
//! the request core ([`crate::request`]): it reads requests off the wire and calls the
//! phases; it decides nothing a phase decides.
//!
//! - [`own`]: weir's own HTTP/1.1 and HTTP/2 engine, for requests to plain HTTP/1.1
//!   upstreams with no body or a small one (most requests);
//! - [`pingora`]: Pingora's proxy, for streamed bodies, upgrades, gRPC and TLS or h2
//!   upstreams.

pub mod own;
pub mod pingora;
