//! Time as the balancer sees it: [`Nanos`], passed in by the caller with every pick and
//! outcome (the injected clock). The proxy passes wall-clock Unix time, which is also what
//! Kubernetes readiness times are in; tests and the simulator pass whatever they like.

use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

    /// The current wall-clock time.
    pub fn now() -> Nanos {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Nanos(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn from_secs(secs: u64) -> Nanos {
        Nanos(secs.saturating_mul(1_000_000_000))
    }

    /// `self + d`, saturating.
    pub fn after(self, d: Duration) -> Nanos {
        Nanos(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}
