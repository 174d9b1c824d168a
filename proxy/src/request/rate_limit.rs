//! Per-replica rate limits by client address (ingress-nginx's `limit-rps`, `limit-rpm`,
//! `limit-burst-multiplier`, `limit-allowlist`): [`RateLimiter`], one per rule, kept across
//! reloads like [`crate::request::concurrency::ConcurrencyLimit`].
//!
//! Each rate is a generic cell rate algorithm (GCRA) per client: a client may send one request
//! per interval (1 s / rps), and `burst` more at once (nginx's `limit_req ... burst=N nodelay`,
//! which ingress-nginx writes with burst = rate x multiplier). A client's state is one
//! "theoretical arrival time".
//!
//! Memory is bounded: clients live in a fixed table of [`SLOTS`] entries (a hash of the
//! address and its arrival time, 16 bytes each), probed [`PROBES`] deep. A slot whose time has
//! passed belongs to a client within its limit and is taken over by a new one. When every
//! probed slot holds a client still over its rate (many distinct clients at once, such as a
//! flood from a botnet), the new client shares the last probed one: it is limited with them,
//! never let through unlimited.
//!
//! Must not: lock, allocate per request, or answer requests.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use weir_balancer::Nanos;
use weir_discovery::{Cidr, RateLimit};

/// Clients tracked per rate of a rule.
pub const SLOTS: usize = 4096;
/// Slots a client's hash may take, from its home slot on.
pub const PROBES: usize = 8;

/// One rule's rate limits.
#[derive(Debug)]
pub struct RateLimiter {
    rates: Vec<Gcra>,
    /// Clients never limited (`limit-allowlist`).
    allowlist: Vec<Cidr>,
}

/// One rate: its interval and burst tolerance, and the clients' table.
#[derive(Debug)]
struct Gcra {
    interval: u64,
    tolerance: u64,
    slots: Box<[Slot]>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Hash of the client's address (never 0: 0 marks a free slot).
    key: AtomicU64,
    /// The client's theoretical arrival time (ns on the balancer's clock).
    tat: AtomicU64,
}

impl RateLimiter {
    /// `None` when the rule sets no rate.
    pub fn new(limit: &RateLimit) -> Option<RateLimiter> {
        let per = |count: Option<u32>, period: Duration| {
            let count = u64::from(count.filter(|c| *c > 0)?);
            let interval = (period.as_nanos() as u64 / count).max(1);
            let burst = count * u64::from(limit.burst_multiplier);
            Some(Gcra {
                interval,
                tolerance: interval.saturating_mul(burst),
                slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            })
        };
        let rates: Vec<Gcra> = [
            per(limit.rps, Duration::from_secs(1)),
            per(limit.rpm, Duration::from_secs(60)),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!rates.is_empty()).then(|| RateLimiter {
            rates,
            allowlist: limit.allowlist.clone(),
        })
    }

    /// Whether `client` may send a request at `now`; `Err` with how long until it may.
    /// Counts the request when it may.
    pub fn check(&self, client: IpAddr, now: Nanos) -> Result<(), Duration> {
        if self.allowlist.iter().any(|net| net.contains(client)) {
            return Ok(());
        }
        let key = client_key(client);
        let mut wait = None;
        for rate in &self.rates {
            if let Err(w) = rate.check(key, now.0) {
                wait = Some(wait.map_or(w, |prev: Duration| prev.max(w)));
            }
        }
        wait.map_or(Ok(()), Err)
    }
}

impl Gcra {
    fn check(&self, key: u64, now: u64) -> Result<(), Duration> {
        let slot = self.slot_of(key, now);
        let mut tat = slot.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance {
                return Err(Duration::from_nanos(start - now - self.tolerance));
            }
            match slot.tat.compare_exchange_weak(
                tat,
                start + self.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }

    /// The client's slot: its own, else a free or lapsed one it takes, else the last probed.
    fn slot_of(&self, key: u64, now: u64) -> &Slot {
        let home = key as usize % SLOTS;
        let mut last = &self.slots[home];
        for probe in 0..PROBES {
            let slot = &self.slots[(home + probe) % SLOTS];
            let held = slot.key.load(Ordering::Relaxed);
            if held == key {
                return slot;
            }
            // Free, or its client is back within its limit: nothing to remember of it.
            let lapsed = held == 0 || slot.tat.load(Ordering::Relaxed) <= now;
            if lapsed
                && slot
                    .key
                    .compare_exchange(held, key, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                slot.tat.store(now, Ordering::Relaxed);
                return slot;
            }
            last = slot;
        }
        last
    }
}

/// A client address as a table key (never 0).
fn client_key(client: IpAddr) -> u64 {
    let client = weir_discovery::cidr::canonical(client);
    let key = match client {
        IpAddr::V4(v4) => weir_balancer::ring::key_hash(&v4.octets()),
        IpAddr::V6(v6) => weir_balancer::ring::key_hash(&v6.octets()),
    };
    key.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: Option<u32>, rpm: Option<u32>, burst_multiplier: u32) -> RateLimiter {
        RateLimiter::new(&RateLimit {
            rps,
            rpm,
            burst_multiplier,
            allowlist: vec!["10.9.0.0/16".parse().expect("cidr")],
        })
        .expect("a rate")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    const SECOND: u64 = 1_000_000_000;

    /// nginx's `limit_req rate=10r/s burst=20 nodelay`: 21 at once, then one each 100 ms.
    #[test]
    fn a_burst_then_the_rate() {
        let l = limiter(Some(10), None, 2);
        let client = ip("192.0.2.1");
        let now = Nanos(100 * SECOND);
        let allowed = (0..40).filter(|_| l.check(client, now).is_ok()).count();
        assert_eq!(allowed, 21);
        let wait = l.check(client, now).expect_err("limited");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // 100 ms later, one more; another client is not affected.
        assert!(l.check(client, Nanos(now.0 + SECOND / 10)).is_ok());
        assert!(l.check(client, Nanos(now.0 + SECOND / 10)).is_err());
        assert!(l.check(ip("192.0.2.2"), now).is_ok());
        // The allowlist is never limited.
        assert!((0..100).all(|_| l.check(ip("10.9.1.1"), now).is_ok()));
    }

    #[test]
    fn per_minute_rates_and_both_at_once() {
        let l = limiter(Some(100), Some(60), 1);
        let client = ip("2001:db8::1");
        let now = Nanos(SECOND);
        // The per-minute rate (60 + a burst of 60) binds before the per-second one.
        let allowed = (0..500).filter(|_| l.check(client, now).is_ok()).count();
        assert_eq!(allowed, 61);
        let wait = l.check(client, now).expect_err("limited");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }

    /// Many more clients than slots, each over its limit: none gets more than its burst,
    /// memory stays the table's.
    #[test]
    fn a_flood_of_clients_stays_limited() {
        let l = limiter(Some(1), None, 1);
        let now = Nanos(SECOND);
        let mut allowed = 0;
        for n in 0..(SLOTS as u32 * 4) {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            allowed += (0..5).filter(|_| l.check(client, now).is_ok()).count();
        }
        // At most 2 each (1 + burst 1); clients sharing a slot get fewer.
        assert!(allowed <= SLOTS * 4 * 2, "{allowed}");
        assert!(allowed >= SLOTS, "{allowed}");
    }
}
