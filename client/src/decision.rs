//! What a call carries in and out besides HTTP: the hash key a caller gives a request, and the
//! [`Decision`] on each response (which endpoint answered, and why it was picked), so that a
//! spike can be traced to the endpoint that caused it.
//!
//! Must not: hold anything but plain values (both travel in `http::Extensions`).

use std::net::SocketAddr;
use weir_balancer::PickReason;

/// The hash key of a call, for consistent hash (a user, a cart, a product id): put it in the
/// request's extensions. Hashed as weir's proxy hashes its keys (xxh64, Skipper's), so the
/// same key maps to the same endpoint in-process and at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKey(pub u64);

impl HashKey {
    pub fn of(key: impl AsRef<[u8]>) -> Self {
        HashKey(weir_balancer::ring::key_hash(key.as_ref()))
    }
}

/// How a call was balanced: in the extensions of every response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The endpoint that answered.
    pub endpoint: SocketAddr,
    /// Why the balancer picked it (`primary`, `bounded_load_spill`, `fade_in_ring`,
    /// `zone_spill`, `retry`, `panic`, ...).
    pub reason: PickReason,
    /// Attempts the call took, this one included.
    pub attempts: u32,
    /// The endpoints tried before, in order (failed or answered with a retried status).
    pub tried_before: Vec<SocketAddr>,
}
