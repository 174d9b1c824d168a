//! The first-header deadline's flag (`--request-header-timeout`): the connection gate
//! ([`crate::listener::gate`]) arms the deadline for each connection and runs it inside [`scope`];
//! whichever engine parses the connection's first request head calls [`header_complete`].
//! A module of its own so that the engines and the gate both depend on it, not on each other.
//!
//! Must not: time anything itself (the gate does).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

tokio::task_local! {
    /// Set once the first request header of this connection is parsed.
    static HEADER_DONE: Arc<AtomicBool>;
}

/// Runs a connection's future with `done` as its flag.
pub(crate) fn scope<F: Future>(done: Arc<AtomicBool>, serve: F) -> impl Future<Output = F::Output> {
    HEADER_DONE.scope(done, serve)
}

/// Tells the gate that the current connection's request header has been read (called by
/// the data path at its first phase; a no-op outside a gated connection).
pub fn header_complete() {
    let _ = HEADER_DONE.try_with(|done| done.store(true, Ordering::Relaxed));
}
