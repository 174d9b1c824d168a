//! Skipper ring parity: for the endpoint sets and keys of
//! `fixtures/skipper_ring_vectors.json` — produced by `fixtures/skipper_ring_vectors.py`, an
//! independent Python implementation of Skipper's placement using the `xxhash` package —
//! weir's ring picks the same endpoint for every key. Plus the consistent-hashing property:
//! adding or removing one of N endpoints moves about 1/N of the keys, all to or from it.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use weir_balancer::ring::{key_hash, HashRing, VIRTUAL_NODES};

#[derive(Deserialize)]
struct Vectors {
    vnodes: usize,
    keys: usize,
    sets: Vec<VectorSet>,
}

#[derive(Deserialize)]
struct VectorSet {
    endpoints: Vec<String>,
    expected: BTreeMap<String, Vec<usize>>,
}

/// Key i of a family, as the generator makes it.
fn key(prefix: &str, i: usize) -> String {
    if prefix == "10.2." {
        format!("10.2.{}.{}", i / 256, i % 256)
    } else {
        format!("{prefix}{i}")
    }
}

#[test]
fn same_endpoint_as_skipper_for_every_vector() {
    let text = include_str!("fixtures/skipper_ring_vectors.json");
    let vectors: Vectors = serde_json::from_str(text).expect("fixture parses");
    assert_eq!(vectors.vnodes, VIRTUAL_NODES);
    let mut checked = 0;
    for set in &vectors.sets {
        let endpoints: Vec<SocketAddr> = set
            .endpoints
            .iter()
            .map(|e| e.parse().expect("endpoint address"))
            .collect();
        let ring = HashRing::new(&endpoints);
        for (prefix, expected) in &set.expected {
            assert_eq!(expected.len(), vectors.keys);
            let mismatches: Vec<usize> = (0..vectors.keys)
                .filter(|&i| ring.owner(key_hash(key(prefix, i).as_bytes())) != Some(expected[i]))
                .collect();
            assert!(
                mismatches.is_empty(),
                "{} of {} keys {prefix}* differ from Skipper for {:?}; first: {:?}",
                mismatches.len(),
                vectors.keys,
                set.endpoints,
                mismatches.first().map(|&i| key(prefix, i))
            );
            checked += expected.len();
        }
    }
    assert_eq!(checked, 6 * 3 * 10_000);
}

fn endpoints(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250 + 1) as u8], 8080)))
        .collect()
}

/// Keys whose owner differs between two rings, by owner address.
fn moved(
    before: &[SocketAddr],
    after: &[SocketAddr],
    keys: usize,
) -> Vec<(SocketAddr, SocketAddr)> {
    let (a, b) = (HashRing::new(before), HashRing::new(after));
    (0..keys)
        .filter_map(|i| {
            let h = key_hash(format!("user-{i}").as_bytes());
            let from = before[a.owner(h)?];
            let to = after[b.owner(h)?];
            (from != to).then_some((from, to))
        })
        .collect()
}

/// Tolerance: with 100 virtual nodes an endpoint's arc deviates from 1/N by about
/// 1/sqrt(100) = 10 % relative (one sigma); we allow 40 % relative (4 sigma) around 1/N,
/// measured over 100,000 keys for N = 10, 20 and 50.
#[test]
fn adding_or_removing_one_endpoint_moves_about_one_nth_of_keys() {
    const KEYS: usize = 100_000;
    for n in [10, 20, 50] {
        let base = endpoints(n);
        let grown = endpoints(n + 1);
        let added = grown[n];
        let moves = moved(&base, &grown, KEYS);
        assert!(
            moves.iter().all(|(_, to)| *to == added),
            "keys only move to the new endpoint"
        );
        let share = moves.len() as f64 / KEYS as f64;
        let ideal = 1.0 / (n + 1) as f64;
        assert!(
            (share - ideal).abs() <= 0.4 * ideal,
            "adding 1 to {n}: {share:.4} of keys moved, ideal {ideal:.4}"
        );

        let removed = base[n / 2];
        let shrunk: Vec<_> = base.iter().copied().filter(|a| *a != removed).collect();
        let moves = moved(&base, &shrunk, KEYS);
        assert!(
            moves.iter().all(|(from, _)| *from == removed),
            "only the removed endpoint's keys move"
        );
        let share = moves.len() as f64 / KEYS as f64;
        let ideal = 1.0 / n as f64;
        assert!(
            (share - ideal).abs() <= 0.4 * ideal,
            "removing 1 of {n}: {share:.4} of keys moved, ideal {ideal:.4}"
        );
    }
}
