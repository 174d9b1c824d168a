//! [`HashRing`]: the consistent-hash ring, placed exactly as Skipper places it
//! (docs/balancing.md), so traffic moved from Skipper keeps its cache locality.
//!
//! Endpoint E owns [`VIRTUAL_NODES`] points at `xxHash64("http://<ip>:<port>-<j>")`,
//! j = 0..99 (seed 0; IPv6 written `[ip]:port`). A key goes to the owner of the first
//! point whose hash is >= `xxHash64(key)`, wrapping to the first point. Adding or removing
//! one of N endpoints moves about 1/N of the keys, and only to or from that endpoint.
//!
//! Must not: know about load, health or weights; bounded load and fade-in are built on
//! [`HashRing::walk`].

use std::net::SocketAddr;
use xxhash_rust::xxh64::xxh64;

/// Points per endpoint (Skipper's `newConsistentHash`).
pub const VIRTUAL_NODES: usize = 100;

/// The hash of a request key, as Skipper computes it.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

#[derive(Debug, Clone, Default)]
pub struct HashRing {
    /// Point hashes, ascending (kept apart from owners so the binary search touches
    /// only this array).
    hashes: Vec<u64>,
    /// Index (into the endpoint slice the ring was built from) of each point's owner.
    owners: Vec<u32>,
    endpoints: usize,
}

impl HashRing {
    pub fn new(endpoints: &[SocketAddr]) -> Self {
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(endpoints.len() * VIRTUAL_NODES);
        let mut name = String::with_capacity(64);
        for (index, addr) in endpoints.iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            for j in 0..VIRTUAL_NODES {
                name.clear();
                use std::fmt::Write;
                let _ = write!(name, "http://{addr}-{j}");
                points.push((xxh64(name.as_bytes(), 0), index));
            }
        }
        // Ties (never seen in practice) are broken by owner so the ring is deterministic.
        points.sort_unstable();
        HashRing {
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.1).collect(),
            endpoints: endpoints.len(),
        }
    }

    /// Number of endpoints the ring was built from.
    pub fn endpoints(&self) -> usize {
        self.endpoints
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The point a key hash lands on: the first point >= `hash`, wrapping.
    pub fn position(&self, hash: u64) -> usize {
        let p = self.hashes.partition_point(|h| *h < hash);
        if p == self.hashes.len() {
            0
        } else {
            p
        }
    }

    /// The endpoint index owning `hash` (`None` on an empty ring).
    pub fn owner(&self, hash: u64) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        Some(self.owners[self.position(hash)] as usize)
    }

    /// Endpoint indices in ring order from point `start`, each endpoint once (the order
    /// bounded load walks in). Does not allocate for the first [`INLINE_SEEN`] endpoints.
    pub fn walk(&self, start: usize) -> RingWalk<'_> {
        RingWalk {
            ring: self,
            next: start,
            visited_points: 0,
            inline: [0; INLINE_SEEN],
            inline_len: 0,
            spill: Vec::new(),
        }
    }
}

/// Endpoints a walk remembers without allocating.
pub const INLINE_SEEN: usize = 16;

/// See [`HashRing::walk`].
#[derive(Debug)]
pub struct RingWalk<'a> {
    ring: &'a HashRing,
    next: usize,
    visited_points: usize,
    /// Endpoints already yielded: the first few inline, the rest in `spill`.
    inline: [u32; INLINE_SEEN],
    inline_len: usize,
    spill: Vec<u32>,
}

impl RingWalk<'_> {
    fn seen(&self, owner: u32) -> bool {
        self.inline[..self.inline_len].contains(&owner) || self.spill.contains(&owner)
    }

    fn remember(&mut self, owner: u32) {
        if self.inline_len < INLINE_SEEN {
            self.inline[self.inline_len] = owner;
            self.inline_len += 1;
        } else {
            self.spill.push(owner);
        }
    }
}

impl Iterator for RingWalk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let len = self.ring.owners.len();
        while self.visited_points < len && self.inline_len + self.spill.len() < self.ring.endpoints
        {
            let owner = self.ring.owners[self.next % len];
            self.next = (self.next + 1) % len;
            self.visited_points += 1;
            if !self.seen(owner) {
                self.remember(owner);
                return Some(owner as usize);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 8080)))
            .collect()
    }

    #[test]
    fn skipper_pins_node_names() {
        // Skipper's own test: key "<endpoint>-1" selects that endpoint.
        let eps = addrs(5);
        let ring = HashRing::new(&eps);
        for (i, ep) in eps.iter().enumerate() {
            let key = format!("http://{ep}-1");
            assert_eq!(ring.owner(key_hash(key.as_bytes())), Some(i));
        }
    }

    #[test]
    fn walk_visits_every_endpoint_once() {
        // 40 endpoints: more than the walk remembers inline.
        let ring = HashRing::new(&addrs(40));
        let mut seen: Vec<usize> = ring.walk(ring.position(key_hash(b"k"))).collect();
        assert_eq!(seen.len(), 40);
        assert_eq!(seen[0], ring.owner(key_hash(b"k")).unwrap_or(usize::MAX));
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn empty_ring_owns_nothing() {
        let ring = HashRing::new(&[]);
        assert_eq!(ring.owner(42), None);
        assert_eq!(ring.walk(0).count(), 0);
    }
}
