//! Every timeout of a client or an upstream connection, in one place, so that each engine
//! (weir's own HTTP/1.1 and HTTP/2 paths, Pingora's proxy) holds clients and upstreams to
//! the same times. Per-route timeouts (connect, read) come from annotations instead
//! (docs/configuration.md).
//!
//! Must not: hold anything but durations.

use std::time::Duration;

/// How long a client connection may wait between requests (HTTP/1.1 keep-alive, or an
/// HTTP/2 connection with no request), between two reads of a request head or body, and how
/// long a response write may wait for a client that does not read. 60 s, as nginx's
/// `keepalive_timeout` default is close to and Pingora's keep-alive and read timeouts are.
pub(crate) const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long closing a client connection may wait to flush what is left of a response.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection weir ends (after a refused request head or an HTTP/2 connection
/// error) reads on before it closes, so that its last answer is not lost to a reset: the
/// close of a socket with unread input resets the connection, and the client may then lose
/// what it had not read yet (nginx's `lingering_close`).
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// How long an idle upstream connection stays pooled. Below the 60 s keep-alive timeout
/// common to nginx-, Go- and Java-based backends, so weir closes first.
pub(crate) const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(55);
