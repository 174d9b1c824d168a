//! The fleet's view of each endpoint, from what every live replica reports (pure): its
//! failures in a row across the fleet, and the latest ejection another replica made.
//! Deterministic: the same reports give the same view on every replica, whatever order they
//! arrived in.
//!
//! A report is one gossip key per endpoint, `ep:<addr>`, valued `<failures> <since-ms>
//! <ejected-until-ms>` (milliseconds of the Unix clock): the replica's failures in a row,
//! when that streak began (or, with no failures, when a success or an ejection ended the last
//! one), and the end of an ejection it made (0: none).
//!
//! Failures in a row are a fleet-wide streak only after the fleet's latest success: a
//! replica's streak counts when it began after the last success any replica reported. An
//! endpoint that fails now and then (every replica's streak short, some replica always just
//! succeeded) is not ejected on the sum of many replicas' short streaks; one that fails every
//! request (no success anywhere) is, once the streaks add up to the threshold.
//!
//! Health-check results are keys too, `hc:<addr>` valued `<1|0> <at-ms>`: the latest check
//! a replica made of an endpoint waiting to return, and whether it passed.
//!
//! Must not: do I/O or touch the balancer (the service applies the view).

use crate::health::CheckResult;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The gossip key prefix of endpoint reports.
pub const KEY_PREFIX: &str = "ep:";

/// The gossip key prefix of health-check results.
pub const CHECK_PREFIX: &str = "hc:";

/// How long a streak or a success counts: a replica that stopped sending to the endpoint
/// must not keep counting toward the next verdict.
pub const FRESH_FOR: Duration = Duration::from_secs(30);

/// Reports stamped further ahead than this are from a replica whose clock is wrong: ignored,
/// so that a skewed clock cannot keep a streak fresh or an ejection running.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(5);

/// One replica's report on one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Failures in a row it saw since its last success or ejection.
    pub failures: u32,
    /// With failures: when the streak began; without: when the last one ended.
    pub since_ms: u64,
    /// The end of an ejection it made (Unix ms; 0: none).
    pub ejected_until_ms: u64,
}

impl Report {
    pub fn key(addr: SocketAddr) -> String {
        format!("{KEY_PREFIX}{addr}")
    }

    pub fn value(&self) -> String {
        format!(
            "{} {} {}",
            self.failures, self.since_ms, self.ejected_until_ms
        )
    }

    /// The report a key and value say; `None` for anything else.
    pub fn parse(key: &str, value: &str) -> Option<(SocketAddr, Report)> {
        let addr = key.strip_prefix(KEY_PREFIX)?.parse().ok()?;
        let mut fields = value.split(' ').map(str::parse::<u64>);
        let failures = u32::try_from(fields.next()?.ok()?).ok()?;
        let since_ms = fields.next()?.ok()?;
        let ejected_until_ms = fields.next()?.ok()?;
        if fields.next().is_some() {
            return None;
        }
        Some((
            addr,
            Report {
                failures,
                since_ms,
                ejected_until_ms,
            },
        ))
    }

    /// Nothing worth telling any more at `now_ms`: no failures, no ejection running, and its
    /// last change older than `grace` (a success stays told that long, for the others'
    /// streaks).
    pub fn is_spent(&self, now_ms: u64, grace: Duration) -> bool {
        self.failures == 0
            && self.ejected_until_ms <= now_ms
            && now_ms.saturating_sub(self.since_ms) > grace.as_millis() as u64
    }

    /// Orders two reports of one replica on one endpoint by when they were made: a later
    /// streak (or its end) after an earlier one, a longer streak after a shorter.
    fn order(&self, other: &Report) -> Ordering {
        (self.since_ms, self.failures, self.ejected_until_ms).cmp(&(
            other.since_ms,
            other.failures,
            other.ejected_until_ms,
        ))
    }

    /// Its streak ended with a success (not with an ejection).
    fn ended_by_success(&self) -> bool {
        self.failures == 0 && self.ejected_until_ms <= self.since_ms
    }
}

/// The gossip key of a check of `addr`.
pub fn check_key(addr: SocketAddr) -> String {
    format!("{CHECK_PREFIX}{addr}")
}

/// The gossip value of a check result.
pub fn check_value(result: &CheckResult) -> String {
    format!("{} {}", u8::from(result.healthy), result.at_ms)
}

/// The check a key and value say; `None` for anything else.
pub fn parse_check(key: &str, value: &str) -> Option<(SocketAddr, CheckResult)> {
    let addr = key.strip_prefix(CHECK_PREFIX)?.parse().ok()?;
    let (healthy, at_ms) = value.split_once(' ')?;
    let healthy = match healthy {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    Some((
        addr,
        CheckResult {
            healthy,
            at_ms: at_ms.parse().ok()?,
        },
    ))
}

/// Of two values one replica gave `key` (from gossip and from a bulletin, which may arrive in
/// either order), the later; a value that does not parse loses.
pub fn later_value<'a>(key: &str, a: &'a str, b: &'a str) -> &'a str {
    let b_is_later = if key.starts_with(KEY_PREFIX) {
        match (Report::parse(key, a), Report::parse(key, b)) {
            (Some((_, ra)), Some((_, rb))) => rb.order(&ra) == Ordering::Greater,
            (None, Some(_)) => true,
            _ => false,
        }
    } else {
        match (parse_check(key, a), parse_check(key, b)) {
            (Some((_, ca)), Some((_, cb))) => cb.is_later_than(&ca),
            (None, Some(_)) => true,
            _ => false,
        }
    };
    if b_is_later {
        b
    } else {
        a
    }
}

/// What the fleet says of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointView {
    /// Failures in a row across the fleet: the streaks (this replica's included) that began
    /// after the latest success any replica reported.
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
    let fresh_after = now_ms.saturating_sub(FRESH_FOR.as_millis() as u64);
    let future_limit = now_ms.saturating_add(CLOCK_TOLERANCE.as_millis() as u64);
    // Two passes over the reports: the latest success first, then the streaks after it.
    let mut reports: BTreeMap<SocketAddr, Vec<(bool, Report)>> = BTreeMap::new();
    for (own, key_values) in nodes {
        for (key, value) in key_values {
            let Some((addr, report)) = Report::parse(key, value) else {
                continue;
            };
            if report.since_ms > future_limit {
                continue;
            }
            reports.entry(addr).or_default().push((own, report));
        }
    }
    reports
        .into_iter()
        .map(|(addr, reports)| {
            let last_success = reports
                .iter()
                .filter(|(_, r)| r.ended_by_success() && r.since_ms >= fresh_after)
                .map(|(_, r)| r.since_ms)
                .max()
                .unwrap_or(0);
            let failures = reports
                .iter()
                .filter(|(_, r)| r.failures > 0 && r.since_ms >= fresh_after)
                .filter(|(_, r)| r.since_ms >= last_success)
                .fold(0u32, |sum, (_, r)| sum.saturating_add(r.failures));
            let reported_until_ms = reports
                .iter()
                .filter(|(own, r)| !own && r.ejected_until_ms > now_ms)
                .map(|(_, r)| r.ejected_until_ms)
                .max();
            let view = EndpointView {
                failures,
                reported_until_ms,
                reporters: reports.len() as u32,
            };
            (addr, view)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn report(failures: u32, since_ms: u64, ejected_until_ms: u64) -> String {
        Report {
            failures,
            since_ms,
            ejected_until_ms,
        }
        .value()
    }

    fn view_of(
        nodes: &[(bool, Vec<(String, String)>)],
        now: u64,
    ) -> BTreeMap<SocketAddr, EndpointView> {
        let borrowed: Vec<(bool, Vec<(&str, &str)>)> = nodes
            .iter()
            .map(|(own, kv)| {
                (
                    *own,
                    kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                )
            })
            .collect();
        fleet_view(borrowed, now)
    }

    #[test]
    fn reports_round_trip_and_refuse_what_is_not_one() {
        let r = Report {
            failures: 3,
            since_ms: 900,
            ejected_until_ms: 1_000,
        };
        let key = Report::key(addr(80));
        assert_eq!(key, "ep:10.0.0.1:80");
        assert_eq!(Report::parse(&key, &r.value()), Some((addr(80), r)));
        for (key, value) in [
            ("ep:10.0.0.1:80", "3 900"),
            ("ep:10.0.0.1:80", "3 900 1000 1"),
            ("ep:10.0.0.1:80", "-3 900 1000"),
            ("ep:10.0.0.1:80", "99999999999 900 1000"),
            ("ep:not-an-address", "3 900 1000"),
            ("heartbeat", "3 900 1000"),
        ] {
            assert_eq!(Report::parse(key, value), None, "{key} {value}");
        }
    }

    #[test]
    fn streaks_add_up_after_the_fleets_latest_success_and_ejections_are_the_latest() {
        let now = 100_000;
        let a = Report::key(addr(1));
        let b = Report::key(addr(2));
        let nodes = vec![
            (
                true,
                vec![
                    (a.clone(), report(2, now - 500, 0)),
                    (b.clone(), report(0, now, now + 5_000)),
                ],
            ),
            (
                false,
                vec![
                    (a.clone(), report(2, now - 800, 0)),
                    (b.clone(), report(0, now, now + 9_000)),
                ],
            ),
            // A streak 40 s old, and an ejection that has ended: neither counts.
            (false, vec![(a.clone(), report(4, now - 40_000, now - 1))]),
        ];
        let view = view_of(&nodes, now);
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
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(view_of(&reversed, now), view);
    }

    #[test]
    fn a_success_anywhere_ends_the_fleets_streak() {
        let now = 100_000;
        let a = Report::key(addr(1));
        // Fifty replicas, each with one recent failure, one of which began before another
        // replica's success: an endpoint that fails now and then, not a dead one.
        let mut nodes: Vec<(bool, Vec<(String, String)>)> = (0..50)
            .map(|i| (i == 0, vec![(a.clone(), report(1, now - 1_000 + i, 0))]))
            .collect();
        nodes.push((false, vec![(a.clone(), report(0, now - 10, 0))]));
        assert_eq!(view_of(&nodes, now)[&addr(1)].failures, 0);
        // Without that success: fifty in a row.
        nodes.pop();
        assert_eq!(view_of(&nodes, now)[&addr(1)].failures, 50);
        // A streak ended by an ejection is not a success.
        nodes.push((false, vec![(a.clone(), report(0, now - 10, now + 30_000))]));
        assert_eq!(view_of(&nodes, now)[&addr(1)].failures, 50);
    }

    #[test]
    fn the_later_of_two_values_wins_whichever_arrives_first() {
        let key = Report::key(addr(1));
        let streak = report(3, 1_000, 0);
        let longer = report(4, 1_000, 0);
        let success = report(0, 2_000, 0);
        let next_streak = report(1, 3_000, 0);
        for (a, b, later) in [
            (&streak, &longer, &longer),
            (&longer, &success, &success),
            (&success, &next_streak, &next_streak),
            (&next_streak, &streak, &next_streak),
        ] {
            assert_eq!(later_value(&key, a, b), later.as_str());
            assert_eq!(later_value(&key, b, a), later.as_str());
        }
        assert_eq!(later_value(&key, "garbage", &streak), streak.as_str());
        assert_eq!(later_value(&key, &streak, "garbage"), streak.as_str());
        let check = check_key(addr(1));
        assert_eq!(check, "hc:10.0.0.1:1");
        let passed = check_value(&CheckResult {
            healthy: true,
            at_ms: 5_000,
        });
        let failed_same_time = check_value(&CheckResult {
            healthy: false,
            at_ms: 5_000,
        });
        let later_pass = check_value(&CheckResult {
            healthy: true,
            at_ms: 6_000,
        });
        assert_eq!(passed, "1 5000");
        assert_eq!(
            later_value(&check, &passed, &failed_same_time),
            failed_same_time
        );
        assert_eq!(later_value(&check, &later_pass, &passed), later_pass);
        for bad in ["2 5000", "1", "1 soon", "yes 5000"] {
            assert_eq!(parse_check(&check, bad), None, "{bad}");
        }
    }

    #[test]
    fn reports_from_a_clock_far_ahead_are_ignored() {
        let now = 100_000;
        let a = Report::key(addr(1));
        let nodes = vec![(
            false,
            vec![(a.clone(), report(9, now + 60_000, now + 600_000))],
        )];
        assert!(view_of(&nodes, now).is_empty());
    }
}
