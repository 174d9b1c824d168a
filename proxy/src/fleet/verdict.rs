//! The fleet's view of each endpoint, from what every live replica reports (pure): its
//! failures in a row, summed over the replicas whose reports are fresh, and the latest
//! ejection another replica made. Deterministic: the same reports give the same view on
//! every replica, whatever order they arrived in.
//!
//! A report is one gossip key per endpoint, `ep:<addr>`, valued
//! `<failures> <ejected-until-ms> <updated-ms>` (milliseconds of the Unix clock).
//!
//! Must not: do I/O or touch the balancer (the service applies the view).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The gossip key prefix of endpoint reports.
pub const KEY_PREFIX: &str = "ep:";

/// How long a replica's failure count stands without an update: a replica that stopped
/// sending to the endpoint must not keep counting toward the next verdict.
pub const FAILURES_FRESH_FOR: Duration = Duration::from_secs(30);

/// One replica's report on one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Failures in a row it saw since its last success or ejection.
    pub failures: u32,
    /// The end of an ejection it made (Unix ms; 0: none).
    pub ejected_until_ms: u64,
    /// When it last changed (Unix ms).
    pub updated_ms: u64,
}

impl Report {
    pub fn key(addr: SocketAddr) -> String {
        format!("{KEY_PREFIX}{addr}")
    }

    pub fn value(&self) -> String {
        format!(
            "{} {} {}",
            self.failures, self.ejected_until_ms, self.updated_ms
        )
    }

    /// The report a key and value say; `None` for anything else.
    pub fn parse(key: &str, value: &str) -> Option<(SocketAddr, Report)> {
        let addr = key.strip_prefix(KEY_PREFIX)?.parse().ok()?;
        let mut fields = value.split(' ').map(str::parse::<u64>);
        let failures = u32::try_from(fields.next()?.ok()?).ok()?;
        let ejected_until_ms = fields.next()?.ok()?;
        let updated_ms = fields.next()?.ok()?;
        if fields.next().is_some() {
            return None;
        }
        Some((
            addr,
            Report {
                failures,
                ejected_until_ms,
                updated_ms,
            },
        ))
    }

    /// Nothing worth telling: no failures, no ejection still running at `now_ms`.
    pub fn is_quiet(&self, now_ms: u64) -> bool {
        self.failures == 0 && self.ejected_until_ms <= now_ms
    }
}

/// What the fleet says of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointView {
    /// Failures in a row, summed over the replicas with fresh reports (this one included).
    pub failures: u32,
    /// The latest end of an ejection another replica made that has not ended (Unix ms).
    pub reported_until_ms: Option<u64>,
    /// Replicas reporting on it.
    pub reporters: u32,
}

/// The view of every endpoint some live replica reports on. `nodes` are the live replicas'
/// key-values, `own` marks this replica's (its ejections are its own, not reports).
pub fn fleet_view<'a, N, K>(nodes: N, now_ms: u64) -> BTreeMap<SocketAddr, EndpointView>
where
    N: IntoIterator<Item = (bool, K)>,
    K: IntoIterator<Item = (&'a str, &'a str)>,
{
    let fresh_after = now_ms.saturating_sub(FAILURES_FRESH_FOR.as_millis() as u64);
    let mut view: BTreeMap<SocketAddr, EndpointView> = BTreeMap::new();
    for (own, key_values) in nodes {
        for (key, value) in key_values {
            let Some((addr, report)) = Report::parse(key, value) else {
                continue;
            };
            let entry = view.entry(addr).or_default();
            entry.reporters += 1;
            if report.updated_ms >= fresh_after {
                entry.failures = entry.failures.saturating_add(report.failures);
            }
            if !own && report.ejected_until_ms > now_ms {
                entry.reported_until_ms = Some(
                    entry
                        .reported_until_ms
                        .map_or(report.ejected_until_ms, |u| u.max(report.ejected_until_ms)),
                );
            }
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn reports_round_trip_and_refuse_what_is_not_one() {
        let report = Report {
            failures: 3,
            ejected_until_ms: 1_000,
            updated_ms: 900,
        };
        let key = Report::key(addr(80));
        assert_eq!(key, "ep:10.0.0.1:80");
        assert_eq!(
            Report::parse(&key, &report.value()),
            Some((addr(80), report))
        );
        for (key, value) in [
            ("ep:10.0.0.1:80", "3 1000"),
            ("ep:10.0.0.1:80", "3 1000 900 1"),
            ("ep:10.0.0.1:80", "-3 1000 900"),
            ("ep:10.0.0.1:80", "99999999999 1000 900"),
            ("ep:not-an-address", "3 1000 900"),
            ("heartbeat", "3 1000 900"),
        ] {
            assert_eq!(Report::parse(key, value), None, "{key} {value}");
        }
    }

    #[test]
    fn the_fleet_sums_fresh_failures_and_takes_the_latest_reported_ejection() {
        let now = 100_000;
        let r = |failures: u32, until: u64, updated: u64| {
            Report {
                failures,
                ejected_until_ms: until,
                updated_ms: updated,
            }
            .value()
        };
        let a = Report::key(addr(1));
        let b = Report::key(addr(2));
        let own = [
            (a.clone(), r(2, 0, now)),
            (b.clone(), r(0, now + 5_000, now)),
        ];
        let peer1 = [
            (a.clone(), r(2, 0, now - 1_000)),
            (b.clone(), r(0, now + 9_000, now)),
        ];
        // A stale count (40 s old) and an ejection that has ended.
        let peer2 = [(a.clone(), r(4, now - 1, now - 40_000))];
        let as_pairs = |kv: &[(String, String)]| -> Vec<(String, String)> { kv.to_vec() };
        let nodes = [
            (true, as_pairs(&own)),
            (false, as_pairs(&peer1)),
            (false, as_pairs(&peer2)),
        ];
        let borrowed: Vec<(bool, Vec<(&str, &str)>)> = nodes
            .iter()
            .map(|(own, kv)| {
                (
                    *own,
                    kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                )
            })
            .collect();
        let view = fleet_view(borrowed.clone(), now);
        assert_eq!(
            view[&addr(1)],
            EndpointView {
                failures: 4,
                reported_until_ms: None,
                reporters: 3
            }
        );
        // Its own ejection is not a report; the peer's later one is.
        assert_eq!(view[&addr(2)].reported_until_ms, Some(now + 9_000));
        // The same reports in another order: the same view.
        let mut reversed = borrowed;
        reversed.reverse();
        assert_eq!(fleet_view(reversed, now), view);
    }
}
