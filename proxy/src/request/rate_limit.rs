//! Per-replica limits by client address (ingress-nginx's `limit-rps`, `limit-rpm`,
//! `limit-burst-multiplier`, `limit-connections`, `limit-allowlist`): [`RateLimiter`], one per
//! Ingress (its rules share it), kept across reloads like [`crate::request::concurrency::ConcurrencyLimit`].
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
use std::sync::Arc;
use std::time::Duration;
use weir_balancer::Nanos;
use weir_discovery::{Cidr, RateLimit};

/// Clients tracked per rate of an Ingress.
pub const SLOTS: usize = 4096;
/// Slots a client's hash may take, from its home slot on.
pub const PROBES: usize = 8;

/// One Ingress's limits by client.
#[derive(Debug)]
pub struct RateLimiter {
    /// Hashes client addresses to slots, seeded per limiter: where a client lands cannot be
    /// worked out from outside (to crowd its slots with addresses of one's own).
    hasher: foldhash::fast::RandomState,
    rates: Vec<Gcra>,
    /// `limit-connections`: requests one client may have in flight at once.
    concurrent: Option<ClientConcurrency>,
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
        let concurrent = limit
            .connections
            .filter(|max| *max > 0)
            .map(|max| ClientConcurrency {
                max: u64::from(max),
                slots: (0..SLOTS).map(|_| CountSlot::default()).collect(),
            });
        (!rates.is_empty() || concurrent.is_some()).then(|| RateLimiter {
            hasher: foldhash::fast::RandomState::default(),
            rates,
            concurrent,
            allowlist: limit.allowlist.clone(),
        })
    }

    /// Whether `client` may send a request at `now`, counted when it may: a slot among its
    /// requests in flight (`limit-connections`; `None` without such a limit, or for the
    /// allowlist), held until the permit drops. The slot comes first, so that a request it
    /// refuses is not counted against the client's rates; a request one rate refuses is
    /// given back to the others.
    pub fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        now: Nanos,
    ) -> Result<Option<ClientPermit>, Limited> {
        if self.allowlist.iter().any(|net| net.contains(client)) {
            return Ok(None);
        }
        let key = self.client_key(client);
        let permit = self.enter(key)?;
        self.take_rates(key, now.0)?;
        Ok(permit)
    }

    fn enter(self: &Arc<Self>, key: u64) -> Result<Option<ClientPermit>, Limited> {
        let Some(concurrent) = &self.concurrent else {
            return Ok(None);
        };
        // Twice at most: a slot re-keyed by another client between the claim and the count
        // is given back, and the client looks again.
        for _ in 0..2 {
            let index = concurrent.slot_of(key);
            let slot = &concurrent.slots[index];
            if slot
                .count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < concurrent.max).then_some(n + 1)
                })
                .is_err()
            {
                return Err(Limited::Concurrency);
            }
            if slot.key.load(Ordering::Acquire) == key {
                return Ok(Some(ClientPermit {
                    limiter: Arc::clone(self),
                    index,
                }));
            }
            slot.count.fetch_sub(1, Ordering::AcqRel);
        }
        Err(Limited::Concurrency)
    }

    fn take_rates(&self, key: u64, now: u64) -> Result<(), Limited> {
        let mut wait: Option<Duration> = None;
        let mut taken: smallvec::SmallVec<[(&Gcra, &Slot); 2]> = smallvec::SmallVec::new();
        for rate in &self.rates {
            match rate.take(key, now) {
                Ok(slot) => taken.push((rate, slot)),
                Err(w) => wait = Some(wait.map_or(w, |prev| prev.max(w))),
            }
        }
        match wait {
            None => Ok(()),
            Some(wait) => {
                // Refused by one rate: the others give back what they counted (as nginx,
                // which counts a request only once every limit passed).
                for (rate, slot) in taken {
                    slot.tat.fetch_sub(rate.interval, Ordering::Relaxed);
                }
                Err(Limited::Rate(wait))
            }
        }
    }

    /// A client address as a table key (never 0).
    fn client_key(&self, client: IpAddr) -> u64 {
        use std::hash::BuildHasher;
        self.hasher
            .hash_one(weir_discovery::cidr::canonical(client))
            .max(1)
    }
}

/// Requests in flight by client, in a fixed table like the rates' (a slot whose count is 0
/// is free for another client).
#[derive(Debug)]
struct ClientConcurrency {
    max: u64,
    slots: Box<[CountSlot]>,
}

#[derive(Debug, Default)]
struct CountSlot {
    key: AtomicU64,
    count: AtomicU64,
}

impl ClientConcurrency {
    fn slot_of(&self, key: u64) -> usize {
        let home = key as usize % SLOTS;
        let probed = (0..PROBES).map(|probe| (home + probe) % SLOTS);
        // The client's own slot first, wherever it is among the probes.
        if let Some(own) = probed
            .clone()
            .find(|i| self.slots[*i].key.load(Ordering::Relaxed) == key)
        {
            return own;
        }
        let mut last = home;
        for index in probed {
            let slot = &self.slots[index];
            let held = slot.key.load(Ordering::Relaxed);
            if held == key {
                // Taken by this client on another thread since the first look.
                return index;
            }
            if slot.count.load(Ordering::Acquire) == 0 {
                // Taken by this client just now from another thread counts as its own.
                match slot
                    .key
                    .compare_exchange(held, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return index,
                    Err(now_held) if now_held == key => return index,
                    Err(_) => {}
                }
            } else if slot.key.load(Ordering::Acquire) == key {
                // Claimed and counted by this client on another thread meanwhile (the count
                // was seen after the claim).
                return index;
            }
            last = index;
        }
        last
    }
}

/// Why a client's request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// It has its `limit-connections` requests in flight already.
    Concurrency,
    /// Over a rate: it may send again after this long.
    Rate(Duration),
}

/// A client's request in flight under `limit-connections`: released when dropped.
#[derive(Debug)]
pub struct ClientPermit {
    limiter: Arc<RateLimiter>,
    index: usize,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        if let Some(concurrent) = &self.limiter.concurrent {
            concurrent.slots[self.index]
                .count
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Gcra {
    /// Counts a request of `key` at `now` when its rate allows: its slot (to give it back),
    /// else how long until it may.
    fn take(&self, key: u64, now: u64) -> Result<&Slot, Duration> {
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
                Ok(_) => return Ok(slot),
                Err(seen) => tat = seen,
            }
        }
    }

    /// The client's slot: its own, else a free or lapsed one it takes, else the last probed.
    fn slot_of(&self, key: u64, now: u64) -> &Slot {
        let home = key as usize % SLOTS;
        let probed = (0..PROBES).map(|probe| &self.slots[(home + probe) % SLOTS]);
        // The client's own slot first, wherever it is among the probes: a fresh one taken
        // before it would give the client a second allowance.
        if let Some(own) = probed
            .clone()
            .find(|s| s.key.load(Ordering::Relaxed) == key)
        {
            return own;
        }
        let mut last = &self.slots[home];
        for slot in probed {
            let held = slot.key.load(Ordering::Relaxed);
            if held == key {
                // Taken by this client on another thread since the first look.
                return slot;
            }
            // Free, or its client is back within its limit: nothing to remember of it.
            let lapsed = held == 0 || slot.tat.load(Ordering::Relaxed) <= now;
            if lapsed {
                match slot
                    .key
                    .compare_exchange(held, key, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => {
                        slot.tat.fetch_max(now, Ordering::Relaxed);
                        return slot;
                    }
                    // Taken by this client just now from another thread counts as its own.
                    Err(now_held) if now_held == key => return slot,
                    Err(_) => {}
                }
            }
            last = slot;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: Option<u32>, rpm: Option<u32>, burst_multiplier: u32) -> Arc<RateLimiter> {
        let limiter = RateLimiter::new(&RateLimit {
            rps,
            rpm,
            connections: None,
            burst_multiplier,
            allowlist: vec!["10.9.0.0/16".parse().expect("cidr")],
        });
        Arc::new(limiter.expect("a rate"))
    }

    /// How long `client` waits after a refusal by a rate.
    fn rate_wait(l: &Arc<RateLimiter>, client: IpAddr, now: Nanos) -> Duration {
        match l.admit(client, now) {
            Err(Limited::Rate(wait)) => wait,
            other => panic!("not refused by a rate: {other:?}"),
        }
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
        let allowed = (0..40).filter(|_| l.admit(client, now).is_ok()).count();
        assert_eq!(allowed, 21);
        let wait = rate_wait(&l, client, now);
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // 100 ms later, one more; another client is not affected.
        assert!(l.admit(client, Nanos(now.0 + SECOND / 10)).is_ok());
        assert!(l.admit(client, Nanos(now.0 + SECOND / 10)).is_err());
        assert!(l.admit(ip("192.0.2.2"), now).is_ok());
        // The allowlist is never limited.
        assert!((0..100).all(|_| l.admit(ip("10.9.1.1"), now).is_ok()));
    }

    #[test]
    fn per_minute_rates_and_both_at_once() {
        let l = limiter(Some(100), Some(60), 1);
        let client = ip("2001:db8::1");
        let now = Nanos(SECOND);
        // The per-minute rate (60 + a burst of 60) binds before the per-second one.
        let allowed = (0..500).filter(|_| l.admit(client, now).is_ok()).count();
        assert_eq!(allowed, 61);
        let wait = rate_wait(&l, client, now);
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
            allowed += (0..5).filter(|_| l.admit(client, now).is_ok()).count();
        }
        // At most 2 each (1 + burst 1); clients sharing a slot get fewer.
        assert!(allowed <= SLOTS * 4 * 2, "{allowed}");
        assert!(allowed >= SLOTS, "{allowed}");
    }

    /// `limit-connections: 2`, the allowlist 10.9.0.0/16.
    fn two_at_once() -> Arc<RateLimiter> {
        let limit = RateLimit {
            rps: None,
            rpm: None,
            connections: Some(2),
            burst_multiplier: 5,
            allowlist: vec!["10.9.0.0/16".parse().expect("cidr")],
        };
        Arc::new(RateLimiter::new(&limit).expect("a limit"))
    }

    #[test]
    fn connections_count_requests_in_flight_per_client() {
        let l = two_at_once();
        let client = ip("192.0.2.1");
        let first = l.admit(client, Nanos(0)).expect("room").expect("a permit");
        let second = l.admit(client, Nanos(0)).expect("room").expect("a permit");
        assert!(l.admit(client, Nanos(0)).is_err(), "a third at once");
        assert!(l.admit(ip("192.0.2.2"), Nanos(0)).is_ok(), "another client");
        assert!(l
            .admit(ip("10.9.0.1"), Nanos(0))
            .expect("allowlisted")
            .is_none());
        drop(first);
        let third = l.admit(client, Nanos(0)).expect("room again");
        drop((second, third));
        // Every permit returned: the slot is free for anyone.
        assert!((0..2).all(|_| l.admit(client, Nanos(0)).is_ok_and(|p| p.is_some())));
    }

    /// Threads entering for one client at once share its slot: exactly the limit gets in.
    #[test]
    fn one_client_entering_from_many_threads_gets_its_limit() {
        for _ in 0..50 {
            let l = two_at_once();
            let start = Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (l, start) = (Arc::clone(&l), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        l.admit(ip("192.0.2.1"), Nanos(0)).ok().flatten()
                    })
                })
                .collect();
            let permits: Vec<_> = threads
                .into_iter()
                .filter_map(|t| t.join().expect("thread"))
                .collect();
            assert_eq!(permits.len(), 2);
        }
    }
}
