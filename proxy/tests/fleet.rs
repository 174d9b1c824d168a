//! End to end: three `weir` processes on loopback sharing a fleet (`--fleet-listen`,
//! `--peers`, one key). An upstream endpoint dies; the fleet ejects it after about one
//! replica's threshold of failed attempts in all, where replicas alone need one threshold
//! each. A fourth replica with another key is not let in: its gossip is dropped, it decides
//! alone, and still ejects on its own failures. And active checks before re-admission, their
//! results shared across the fleet.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;
use support::{client, demo_ingress, service_yaml, wait_until, Echo, ManifestDir, Weir};
use weir_testsupport::process::free_port;

/// Failed attempts on the dead endpoint, as a replica counted them.
fn connect_failures(weir: &Weir) -> f64 {
    weir.metric("weir_upstream_errors_total{kind=\"connect\",service=\"app\"}")
        .unwrap_or(0.0)
}

fn fleet_members(weir: &Weir) -> f64 {
    weir.metric("weir_fleet_members").unwrap_or(0.0)
}

/// Sends `rounds` requests to each replica in turn (spaced by `gap`), until every replica
/// has ejected the dead endpoint or the rounds end; returns the failed attempts in all.
fn drive(replicas: &[&Weir], rounds: usize, gap: Duration) -> f64 {
    let c = client();
    for _ in 0..rounds {
        for weir in replicas {
            let (status, _) = weir.get(&c, "app.example.com", "/");
            assert_eq!(status, 200, "a retry reaches the live endpoint");
            std::thread::sleep(gap);
        }
    }
    replicas.iter().map(|w| connect_failures(w)).sum()
}

/// What every test here starts from: a live and a dead upstream of one Service behind one
/// Ingress with `annotations`, and the fleet's key in a file.
struct Setup {
    live: Echo,
    dead: Echo,
    dir: ManifestDir,
    /// Holds the key file.
    secrets: tempfile::TempDir,
    key: std::path::PathBuf,
}

fn setup(annotations: &str) -> Setup {
    let live = Echo::start("live");
    let dead = Echo::start("dead");
    let dir = ManifestDir::new();
    dir.write(
        "app.yaml",
        &(service_yaml("demo", "app", &[live.addr, dead.addr])
            + &demo_ingress("app", "app.example.com", annotations)),
    );
    let secrets = tempfile::tempdir().expect("dir");
    let key = secrets.path().join("fleet.key");
    std::fs::write(&key, "a shared key of the test fleet\n").expect("key");
    Setup {
        live,
        dead,
        dir,
        secrets,
        key,
    }
}

#[test]
fn a_fleet_ejects_a_dead_endpoint_after_about_one_threshold_in_all() {
    // Round robin: each replica alternates between the two endpoints, so a replica alone
    // needs exactly the threshold (5) of failures on the dead one.
    let Setup {
        live: _live,
        mut dead,
        dir,
        secrets,
        key,
    } = setup("weir.dev/load-balancer: round-robin");
    let other_key = secrets.path().join("other.key");
    std::fs::write(&other_key, "somebody else's key, not the fleet's").expect("key");
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    // Gossip rounds of a whole second: the fleet's verdict within one comes from bulletins.
    let start = |i: usize, key: &std::path::Path| start_replica(&dir, &ports, i, key, "1s");
    let fleet: Vec<Weir> = (0..3).map(|i| start(i, &key)).collect();
    let outsider = start(3, &other_key);
    await_fleet(&fleet);
    let (_, view) = fleet[0].admin_get("/debug/fleet");
    assert!(view.contains("\"members\""), "{view}");
    // A steady fleet's gossip, per replica (bounded: a digest per round to a few peers).
    let sent = |w: &Weir| {
        w.metric("weir_fleet_gossip_bytes_total{direction=\"sent\"}")
            .unwrap_or(0.0)
    };
    let before = sent(&fleet[0]);
    std::thread::sleep(Duration::from_secs(3));
    let per_second = (sent(&fleet[0]) - before) / 3.0;
    eprintln!("gossip: {per_second} bytes/s sent by one of 3 replicas at 1 s rounds");
    assert!(
        per_second > 0.0 && per_second < 10_000.0,
        "{per_second} bytes/s"
    );

    dead.kill();
    let replicas: Vec<&Weir> = fleet.iter().collect();
    // 36 requests in about half a second, less than one gossip round.
    let failed = drive(&replicas, 12, Duration::from_millis(10));
    eprintln!("failed attempts across the fleet: {failed}");
    // One threshold is 5, told at once in bulletins. Alone, each of the three would need 5
    // (15 in all).
    assert!(
        (5.0..=7.0).contains(&failed),
        "{failed} failed attempts across the fleet"
    );
    let bulletins: f64 = fleet
        .iter()
        .map(|w| {
            w.metric("weir_fleet_bulletins_total{direction=\"received\"}")
                .unwrap_or(0.0)
        })
        .sum();
    assert!(bulletins >= 2.0, "{bulletins} bulletins received");
    let shared: f64 = fleet
        .iter()
        .map(|w| {
            w.metric("weir_fleet_ejections_total{source=\"fleet_failures\"}")
                .unwrap_or(0.0)
                + w.metric("weir_fleet_ejections_total{source=\"reported\"}")
                    .unwrap_or(0.0)
        })
        .sum();
    assert!(shared >= 1.0, "no replica ejected on the fleet's view");

    // The outsider: its gossip carries the wrong key, so it is dropped; it is a fleet of
    // one, and ejects on its own threshold.
    assert_eq!(fleet_members(&outsider), 1.0);
    let dropped: f64 = fleet
        .iter()
        .map(|w| {
            w.metric("weir_fleet_rejected_datagrams_total")
                .unwrap_or(0.0)
        })
        .sum();
    assert!(dropped >= 1.0, "the outsider's gossip was not refused");
    let alone = drive(&[&outsider], 12, Duration::from_millis(10));
    assert_eq!(
        alone, 5.0,
        "alone, a replica ejects after its own threshold"
    );
}

/// Replica `i` of a test fleet gossiping on `ports` (the first three are the fleet's).
fn start_replica(
    dir: &ManifestDir,
    ports: &[u16],
    i: usize,
    key: &std::path::Path,
    interval: &str,
) -> Weir {
    let gossip = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let peers: Vec<String> = (0..3).filter(|j| *j != i).map(gossip).collect();
    Weir::start(
        &dir.path(),
        &[
            "--fleet-listen",
            &gossip(i),
            "--peers",
            &peers.join(","),
            "--fleet-secret-file",
            key.to_str().expect("utf8"),
            "--fleet-gossip-interval",
            interval,
        ],
    )
}

/// Waits until every replica sees the whole fleet.
fn await_fleet(fleet: &[Weir]) {
    let n = fleet.len() as f64;
    let joined = wait_until(Duration::from_secs(20), || {
        fleet.iter().all(|w| fleet_members(w) == n)
    });
    assert!(
        joined.is_some(),
        "the fleet did not form: {:?}",
        fleet.iter().map(fleet_members).collect::<Vec<_>>()
    );
}

/// Active checks before re-admission (`weir.dev/health-check-path`): an endpoint ejected
/// after its failures stays out when its ejection ends, while its checks fail (without them
/// it would get traffic again after 1 s), and returns once two checks in a row pass.
#[test]
fn an_ejected_endpoint_returns_only_after_its_health_checks_pass() {
    let Setup {
        live: _live,
        mut dead,
        dir,
        secrets: _secrets,
        key: _,
    } = setup("weir.dev/load-balancer: round-robin, weir.dev/outlier-base-ejection: 1s, weir.dev/health-check-path: /healthz, weir.dev/health-check-interval: 300ms, weir.dev/health-check-healthy-threshold: \"2\"");
    let dead_addr = dead.addr;
    let weir = Weir::start(&dir.path(), &[]);
    dead.kill();
    let c = client();
    let pods = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let (status, body) = weir.get(&c, "app.example.com", "/");
                assert_eq!(status, 200);
                let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                body["pod"].as_str().unwrap_or("").to_string()
            })
            .collect()
    };
    pods(12);
    assert_eq!(connect_failures(&weir), 5.0, "ejected after 5 failures");
    // Its 1 s ejection ends; its checks fail (nothing listens): it stays out.
    std::thread::sleep(Duration::from_millis(1_500));
    pods(20);
    assert_eq!(
        connect_failures(&weir),
        5.0,
        "no request went to it while its checks failed"
    );
    // Back: two checks pass (about 0.6 s), then it takes traffic again.
    let _back = Echo::start_at(dead_addr, "dead", &[]);
    let returned = wait_until(Duration::from_secs(10), || {
        pods(4).iter().any(|p| p == "dead-pod")
    });
    assert!(
        returned.is_some(),
        "the endpoint did not return after its checks passed"
    );
    assert_eq!(connect_failures(&weir), 5.0);
}

/// Checks speak plain HTTP/1.1: on a backend reached over h2c (here through ingress-nginx's
/// `backend-protocol: GRPC`) they are not run, and an ejected endpoint returns when its
/// ejection ends, as without checks, rather than waiting for checks it could never pass.
#[test]
fn an_h2c_backend_is_not_held_for_checks_it_could_never_pass() {
    let Setup {
        live: _live,
        mut dead,
        dir,
        secrets: _secrets,
        key: _,
    } = setup("weir.dev/load-balancer: round-robin, weir.dev/outlier-base-ejection: 1s, weir.dev/health-check-path: /healthz, nginx.ingress.kubernetes.io/backend-protocol: GRPC");
    let weir = Weir::start(&dir.path(), &[]);
    dead.kill();
    let c = client();
    let send = |n: usize| {
        for _ in 0..n {
            let (status, _) = weir.get(&c, "app.example.com", "/");
            assert_eq!(status, 200, "a retry reaches the live endpoint");
        }
    };
    send(12);
    assert_eq!(connect_failures(&weir), 5.0, "ejected after 5 failures");
    // Its 1 s ejection ends; the checker lets go of it within about 5 s; it takes requests
    // again (and, still dead, is ejected again at its first failure).
    let returned = wait_until(Duration::from_secs(30), || {
        send(4);
        connect_failures(&weir) > 5.0
    });
    assert!(
        returned.is_some(),
        "the endpoint was held for checks that never run"
    );
}

/// Health-check results are shared: three replicas waiting for the same endpoint take each
/// other's fresh results instead of each checking it every interval, and all three let it
/// return once the fleet's checks pass.
#[test]
fn a_fleet_shares_its_health_check_results() {
    let Setup {
        live: _live,
        mut dead,
        dir,
        secrets: _secrets,
        key,
    } = setup("weir.dev/load-balancer: round-robin, weir.dev/outlier-base-ejection: 1s, weir.dev/health-check-path: /healthz, weir.dev/health-check-interval: 1s, weir.dev/health-check-healthy-threshold: \"3\"");
    let dead_addr = dead.addr;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let fleet: Vec<Weir> = (0..3)
        .map(|i| start_replica(&dir, &ports, i, &key, "200ms"))
        .collect();
    await_fleet(&fleet);
    dead.kill();
    let replicas: Vec<&Weir> = fleet.iter().collect();
    drive(&replicas, 12, Duration::from_millis(10));
    // Out for 1 s, then waiting for checks that fail (nothing listens) for a few seconds.
    std::thread::sleep(Duration::from_secs(4));
    let _back = Echo::start_at(dead_addr, "dead", &[]);
    let c = client();
    let returned = wait_until(Duration::from_secs(20), || {
        fleet.iter().all(|w| {
            (0..4).any(|_| {
                let (_, body) = w.get(&c, "app.example.com", "/");
                body.contains("dead-pod")
            })
        })
    });
    assert!(returned.is_some(), "the endpoint did not return everywhere");
    let checks = |checked_by: &str| -> f64 {
        fleet
            .iter()
            .map(|w| {
                ["healthy", "unhealthy"]
                    .iter()
                    .map(|result| {
                        w.metric(&format!(
                            "weir_health_checks_total{{checked_by=\"{checked_by}\",result=\"{result}\"}}"
                        ))
                        .unwrap_or(0.0)
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    let (here, taken) = (checks("this_replica"), checks("fleet"));
    eprintln!("checks made: {here}; results taken from another replica: {taken}");
    // Alone, each replica would check every interval: every result would be its own.
    assert!(taken >= 2.0, "{taken} shared results taken");
}

/// Cut off: once the other replicas are gone, a replica's fleet is itself alone, it keeps
/// serving, and it ejects a dead endpoint on its own threshold, as without a fleet.
#[test]
fn a_replica_cut_off_from_its_fleet_serves_and_decides_alone() {
    let Setup {
        live: _live,
        mut dead,
        dir,
        secrets: _secrets,
        key,
    } = setup("weir.dev/load-balancer: round-robin");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut fleet: Vec<Weir> = (0..3)
        .map(|i| start_replica(&dir, &ports, i, &key, "200ms"))
        .collect();
    await_fleet(&fleet);
    // The other two go (to this replica, the same as a partition).
    for mut gone in fleet.drain(1..) {
        let _ = gone.process.child.kill();
        let _ = gone.process.child.wait();
    }
    let alone = wait_until(Duration::from_secs(30), || fleet_members(&fleet[0]) == 1.0);
    assert!(
        alone.is_some(),
        "{} members after the others went",
        fleet_members(&fleet[0])
    );
    dead.kill();
    let failed = drive(&[&fleet[0]], 12, Duration::from_millis(10));
    assert_eq!(failed, 5.0, "alone, it ejects after its own threshold");
}
