//! HTTP as weir applies it, with no I/O and no engine: pure functions and types, each
//! tested on its own.
//!
//! Must not: read or write sockets, route, or depend on the request core or an engine.

pub mod chunked;
pub(crate) mod fields;
pub mod forwarded;
pub mod h1;
pub(crate) mod h2_request;
pub mod hardening;
pub mod path;
pub mod request_view;
pub mod rewrite;
