//! The fleet: weir replicas that share what their balancers learn of upstream endpoints,
//! so that a failing endpoint is ejected after about one replica's threshold of failures
//! in all, not one threshold per replica.
//!
//! - Membership and gossip are chitchat's (Scuttlebutt anti-entropy, a phi-accrual failure
//!   detector) over [`transport`], UDP with every datagram authenticated by the fleet's
//!   shared key.
//! - The request path notes which endpoints changed ([`LocalReports`]: their failures in a
//!   row, an ejection) without waiting; the fleet task reads their state, publishes it as
//!   this replica's reports, reads every live replica's, and applies the fleet's view
//!   ([`verdict`]) to its pools: the fleet's streak of failures ejects at the pool's own
//!   threshold, and another replica's ejection is applied, both within max-ejection-percent.
//! - Changed reports also go at once to every live peer in a [`bulletin`], so the fleet hears
//!   of a failure in about one network hop, not after the rounds gossip takes to spread it.
//! - Health-check results of endpoints waiting to return are shared the same way
//!   ([`crate::health::CheckBoard`]).
//! - A replica cut off from the others sees no live peers and decides alone, as without a
//!   fleet.
//!
//! Must not: block or lock on the request path beyond [`LocalReports::note`], which only
//! failures, ejections and the first success after failures reach.

pub mod bulletin;
mod service;
pub mod transport;
pub mod verdict;

pub use service::{run, FleetConfig, FleetService, FleetStatus};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;

/// The endpoints whose failures or ejection changed since the fleet task last looked: the
/// task reads their state itself when it publishes (so concurrent requests cannot leave a
/// stale report behind).
#[derive(Debug, Default)]
pub struct LocalReports {
    changed: Mutex<HashSet<SocketAddr>>,
    wake: tokio::sync::Notify,
}

impl LocalReports {
    /// Notes that `addr` changed and wakes the fleet task.
    pub fn note(&self, addr: SocketAddr) {
        let fresh = self
            .changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr);
        if fresh {
            self.wake.notify_one();
        }
    }

    /// Everything noted since the last call.
    pub fn take(&self) -> HashSet<SocketAddr> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves once something is noted.
    pub async fn noted(&self) {
        self.wake.notified().await;
    }
}

/// Milliseconds of the Unix clock (what reports carry: replicas share no monotonic clock).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
