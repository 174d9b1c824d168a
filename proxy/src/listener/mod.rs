//! The listeners' side of a connection, before any request: the gate that admits it and
//! hands it to an engine ([`gate`]), the certificates TLS connections are served
//! ([`tls`]), and the order in which TLS handshakes start ([`handshake_turns`]).
//!
//! Must not: read requests beyond telling HTTP/2 from HTTP/1.

pub mod gate;
pub mod handshake_turns;
pub(crate) mod parked;
pub mod tls;
