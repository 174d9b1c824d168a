//! End to end: ingress-nginx's `global-rate-limit` shared by three real `weir` processes
//! through a real `redis-server`, and what weir does when Redis goes away (fails open,
//! logs once, counts) and comes back.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use reqwest::blocking::Client;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use support::{demo_ingress, service_yaml, Echo, ManifestDir, Weir};
use weir_testsupport::process::{free_port, wait_for_listen, ChildGuard};

/// A `redis-server` on loopback with nothing saved to disk.
fn start_redis(port: u16) -> ChildGuard {
    let redis = ChildGuard::spawn(
        "redis-server",
        Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null()),
    );
    assert!(
        wait_for_listen(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10)
        ),
        "redis-server did not listen"
    );
    redis
}

fn client_to(weirs: &[&Weir]) -> Vec<Client> {
    weirs
        .iter()
        .map(|weir| {
            support::client_for_hosts(weir.http, &["shop.example.com", "api.example.com"], false)
        })
        .collect()
}

/// Sends `n` requests round-robin over the clients (one per weir); the statuses.
fn spread(
    clients: &[Client],
    weirs: &[&Weir],
    host: &str,
    n: usize,
    field: Option<&str>,
) -> Vec<u16> {
    (0..n)
        .map(|i| {
            let which = i % clients.len();
            let mut request =
                clients[which].get(format!("http://{host}:{}/", weirs[which].http.port()));
            if let Some(value) = field {
                request = request.header("x-api-client", value);
            }
            request.send().expect("request").status().as_u16()
        })
        .collect()
}

/// Three weirs share one limit of 30 requests an hour per client: of 90 requests spread
/// over them, 30 pass (tolerance: one, should the hour turn mid-test) and the rest get 429
/// with `Retry-After`; keys by a field count apart; with Redis gone every request passes
/// (fail open), the outage logged once and counted; Redis back, the limit holds again.
#[test]
fn three_weirs_share_one_limit_and_fail_open_without_redis() {
    let app = Echo::start("app");
    let redis_port = free_port();
    let mut redis = start_redis(redis_port);
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(service_yaml("demo", "app", &[app.addr])
            + &demo_ingress(
                "shop",
                "shop.example.com",
                "nginx.ingress.kubernetes.io/global-rate-limit: \"30\", nginx.ingress.kubernetes.io/global-rate-limit-window: 1h",
            )
            + &demo_ingress(
                "api",
                "api.example.com",
                "nginx.ingress.kubernetes.io/global-rate-limit: \"5\", nginx.ingress.kubernetes.io/global-rate-limit-window: 1h, nginx.ingress.kubernetes.io/global-rate-limit-key: $http_x_api_client",
            )),
    );
    let url = format!("redis://127.0.0.1:{redis_port}");
    let paths = ["direct", "pingora", "direct"];
    let fleet: Vec<Weir> = paths
        .iter()
        .map(|path| Weir::start(&dir.path(), &["--redis-url", &url, "--http1-path", path]))
        .collect();
    let weirs: Vec<&Weir> = fleet.iter().collect();
    let clients = client_to(&weirs);
    // Each weir connects to Redis on its first such request (which goes on unchecked):
    // probe until a request is checked.
    for weir in &weirs {
        let c = &client_to(&[weir])[0];
        let unchecked = || {
            weir.metric("weir_global_rate_limit_unchecked_total{reason=\"unreachable\"}")
                .unwrap_or(0.0)
        };
        let checked = support::wait_until(Duration::from_secs(10), || {
            let before = unchecked();
            c.get(format!("http://api.example.com:{}/", weir.http.port()))
                .header("x-api-client", format!("probe-{}", weir.http.port()))
                .send()
                .expect("probe");
            unchecked() == before
        });
        assert!(
            checked.is_some(),
            "weir never reached Redis: {}",
            weir.log_text()
        );
    }
    let statuses = spread(&clients, &weirs, "shop.example.com", 90, None);
    let passed = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        (30..=31).contains(&passed),
        "passed {passed} of 90: {statuses:?}"
    );
    assert_eq!(passed + limited, 90, "{statuses:?}");
    // Each weir refused some: the count is the fleet's, not each one's.
    for weir in &weirs {
        let refused = weir
            .metric("weir_requests_rejected_total{reason=\"global_rate_limited\"}")
            .unwrap_or(0.0);
        assert!(refused >= 15.0, "{refused}");
    }
    let over = clients[0]
        .get(format!("http://shop.example.com:{}/", weirs[0].http.port()))
        .send()
        .expect("request");
    assert_eq!(over.status().as_u16(), 429);
    let retry_after: u64 = over.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    // By a field: each client's own budget of 5, whichever weir it reaches.
    for team in ["team-a", "team-b"] {
        let statuses = spread(&clients, &weirs, "api.example.com", 9, Some(team));
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            5,
            "{team}: {statuses:?}"
        );
    }

    // Redis goes away: every request passes, each weir logs it once and counts them.
    redis.child.kill().expect("kill redis");
    let _ = redis.child.wait();
    let statuses = spread(&clients, &weirs, "shop.example.com", 30, None);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "fail open: {statuses:?}"
    );
    for weir in &weirs {
        let unchecked = weir
            .metric("weir_global_rate_limit_unchecked_total{reason=\"unreachable\"}")
            .unwrap_or(0.0);
        assert!(unchecked >= 10.0, "{unchecked}");
        let log = weir.log_text();
        assert_eq!(
            log.matches("Redis unreachable").count(),
            1,
            "logged once: {log}"
        );
    }
    // Redis back (empty): the limit holds again once the weirs reconnect.
    let _redis = start_redis(redis_port);
    let limited_again = support::wait_until(Duration::from_secs(15), || {
        spread(&clients, &weirs, "shop.example.com", 6, None).contains(&429)
    });
    assert!(
        limited_again.is_some(),
        "the limit did not come back with Redis"
    );

    // A weir without --redis-url serves such routes unlimited, and says so.
    let alone = Weir::start(&dir.path(), &[]);
    let statuses = spread(
        &client_to(&[&alone]),
        &[&alone],
        "shop.example.com",
        40,
        None,
    );
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(
        alone.metric("weir_global_rate_limit_unchecked_total{reason=\"not_configured\"}"),
        Some(40.0)
    );
    assert!(alone.log_text().contains("no --redis-url"));
}
