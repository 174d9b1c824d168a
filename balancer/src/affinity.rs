//! Session affinity: which endpoint a session cookie binds a request to (docs/balancing.md).
//!
//! Two ways a cookie can name an endpoint, as ingress-nginx's `affinity-mode` has them:
//! - **persistent**: the cookie carries the endpoint's [`endpoint_token`]. The session stays
//!   with that endpoint for as long as it can take requests, whatever else joins the pool.
//! - **balanced**: the cookie carries a random key, and the endpoint is the key's
//!   rendezvous (highest random weight) choice among the members that can take the request.
//!   When the pool grows from c to n endpoints, about (n - c) / n of the sessions move to
//!   the new ones; when an endpoint leaves, only its sessions move.
//!
//! Both hash with xxHash64 over the endpoint's address bytes, so every replica of weir (and
//! every version) reads a cookie another one wrote the same way.
//!
//! Must not: know about cookies' syntax or HTTP; the request core reads and writes them.

use std::net::{IpAddr, SocketAddr};
use xxhash_rust::xxh64::xxh64;

/// What a session cookie says about where its requests go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sticky {
    /// Persistent: the endpoint whose [`endpoint_token`] this is.
    Endpoint(u64),
    /// Balanced: the rendezvous choice of this key hash.
    Key(u64),
}

/// An address as bytes: the IP's octets, then the port (big-endian).
fn address_bytes(addr: SocketAddr, out: &mut [u8; 18]) -> &[u8] {
    let len = match addr.ip() {
        IpAddr::V4(ip) => {
            out[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            out[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    out[len..len + 2].copy_from_slice(&addr.port().to_be_bytes());
    &out[..len + 2]
}

/// The token of `addr` under a route's `salt`: what a persistent session cookie carries.
/// Salted per route, so a cookie names no address in the clear and means nothing to
/// another route.
pub fn endpoint_token(salt: u64, addr: SocketAddr) -> u64 {
    let mut buf = [0u8; 18];
    xxh64(address_bytes(addr, &mut buf), salt)
}

/// The weight of `addr` for a balanced session's key: the key goes to the endpoint with the
/// highest one among those that can take it.
pub fn rendezvous_weight(key_hash: u64, addr: SocketAddr) -> u64 {
    let mut buf = [0u8; 18];
    xxh64(address_bytes(addr, &mut buf), key_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, (i + 1) as u8], 8080)))
            .collect()
    }

    fn winner(key: u64, members: &[SocketAddr]) -> SocketAddr {
        *members
            .iter()
            .max_by_key(|a| rendezvous_weight(key, **a))
            .expect("members")
    }

    #[test]
    fn tokens_differ_by_endpoint_and_by_salt() {
        let [a, b] = [addrs(2)[0], addrs(2)[1]];
        assert_ne!(endpoint_token(1, a), endpoint_token(1, b));
        assert_ne!(endpoint_token(1, a), endpoint_token(2, a));
        assert_eq!(endpoint_token(7, a), endpoint_token(7, a));
        let v6: SocketAddr = "[fd00::1]:80".parse().expect("address");
        assert_ne!(endpoint_token(1, v6), endpoint_token(1, a));
    }

    /// Balanced keys spread evenly, and growing the pool from 4 to 5 moves only the keys
    /// the new member takes: about 1/5 of them (seeded; tolerance 3 points, > 4 sigma at
    /// 10,000 keys).
    #[test]
    fn balanced_keys_spread_and_move_only_to_a_new_member() {
        let mut rng = StdRng::seed_from_u64(26);
        let keys: Vec<u64> = (0..10_000).map(|_| rng.random()).collect();
        let four = addrs(4);
        let five = addrs(5);
        let mut share = [0usize; 4];
        let mut moved = 0;
        for &key in &keys {
            let before = winner(key, &four);
            let after = winner(key, &five);
            share[four.iter().position(|a| *a == before).expect("member")] += 1;
            if before != after {
                assert_eq!(after, five[4], "a key moved between old members");
                moved += 1;
            }
        }
        for n in share {
            assert!((2200..=2800).contains(&n), "uneven share {share:?}");
        }
        let moved = moved as f64 / keys.len() as f64;
        assert!((moved - 0.2).abs() < 0.03, "moved {moved}");
    }
}
