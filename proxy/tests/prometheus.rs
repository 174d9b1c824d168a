//! End to end: weir's `/metrics` passes `promtool check metrics`, and a real Prometheus
//! server scraping weir while requests flow answers queries with the numbers sent.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{client, Echo, ManifestDir, Weir};
use weir_testsupport::process::{free_port, wait_for_listen, ChildGuard};

fn app_manifests(app: &Echo) -> String {
    support::service_yaml("demo", "app", &[app.addr])
        + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: app, namespace: demo}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: app.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}]}\n"
}

#[test]
fn promtool_accepts_the_metrics() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    // Every family with samples: requests, picks, reloads; a route to a dead endpoint
    // (upstream errors, an ejection) and an invalid Ingress (configuration errors).
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    dir.write(
        "all.yaml",
        &(app_manifests(&app)
            + "---\n"
            + &support::service_yaml("demo", "dead", &[dead])
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: dead\n  namespace: demo\n  annotations: {weir.dev/outlier-consecutive-failures: \"1\"}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: dead.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: dead, port: {name: http}}}}]}\n---\n"
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad, namespace: demo, annotations: {weir.dev/retries: many}}\nspec:\n  ingressClassName: weir\n  defaultBackend: {service: {name: app, port: {number: 80}}}\n"),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let c = client();
    for _ in 0..5 {
        weir.get(&c, "app.example.com", "/");
    }
    weir.get(&c, "nowhere.example.com", "/");
    assert_eq!(weir.get(&c, "dead.example.com", "/").0, 502);
    let (status, text) = weir.admin_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        !text.contains("weir_endpoint_"),
        "per-endpoint series only with --endpoint-metrics"
    );
    for family in [
        "weir_requests_total",
        "weir_request_duration_seconds_bucket",
        "weir_upstream_response_seconds_bucket",
        "weir_balancer_picks_total",
        "weir_endpoints",
        "weir_config_reloads_total",
        "weir_routes",
        "weir_upstream_errors_total",
        "weir_outlier_ejections_total",
        "weir_config_errors_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    // The binary's allocator is jemalloc: its own accounting is exported and consistent.
    let allocator = |state: &str| -> f64 {
        let series = format!("weir_allocator_bytes{{state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    let (allocated, active, resident) = (
        allocator("allocated"),
        allocator("active"),
        allocator("resident"),
    );
    assert!(allocated > 100_000.0, "allocated {allocated}");
    assert!(
        allocated <= active && active <= resident,
        "{allocated} {active} {resident}"
    );
    // Every metric the Grafana dashboard queries exists.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../charts/weir/dashboards/weir.json"))
            .expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let name = regex::Regex::new(r"\b(?:weir|process)_[a-z_]+").expect("regex");
    for expr in &exprs {
        for m in name.find_iter(expr) {
            let metric = m.as_str();
            assert!(
                text.lines().any(|l| l.starts_with(metric)),
                "dashboard queries {metric}, which /metrics does not have ({expr})"
            );
        }
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; scripts/prereqs.sh does)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One instant query against Prometheus' HTTP API: the first result's value.
fn query(prometheus: &str, expr: &str) -> Option<f64> {
    let v: serde_json::Value = client()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .ok()?
        .json()
        .ok()?;
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

#[test]
fn a_real_prometheus_scrapes_weir_while_requests_flow() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write("all.yaml", &app_manifests(&app));
    let weir = Weir::start(&dir.path(), &[]);
    let admin = weir.admin_url("").trim_start_matches("http://").to_string();

    let port = free_port();
    let config = dir.root.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 500ms, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: weir\n    static_configs: [{{targets: [\"{admin}\"]}}]\n"
        ),
    )
    .expect("config");
    let _prometheus = ChildGuard::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.root.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_for_listen(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(20)
        ),
        "prometheus did not start"
    );
    let prometheus = format!("http://127.0.0.1:{port}");

    // Requests flow while Prometheus scrapes every 500 ms.
    let c = client();
    const SENT: usize = 60;
    for i in 0..SENT {
        assert_eq!(weir.get(&c, "app.example.com", "/").0, 200);
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    let requests =
        r#"sum(weir_requests_total{namespace="demo",ingress="app",service="app",code="200"})"#;
    let seen = support::wait_until(Duration::from_secs(20), || {
        query(&prometheus, requests) == Some(SENT as f64)
    });
    assert!(
        seen.is_some(),
        "Prometheus reports {:?} requests, {SENT} sent",
        query(&prometheus, requests)
    );
    let p99 = query(
        &prometheus,
        r#"histogram_quantile(0.99, sum by (le) (weir_request_duration_seconds_bucket{ingress="app"}))"#,
    )
    .expect("a p99 from the duration histogram");
    assert!(p99 > 0.0 && p99 <= 10.0, "p99 {p99}");
    let upstream = query(
        &prometheus,
        r#"sum(weir_upstream_response_seconds_count{service="app"})"#,
    );
    assert_eq!(upstream, Some(SENT as f64));
}

#[test]
fn endpoint_metrics_and_the_log_filter_are_opt_in() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write("all.yaml", &app_manifests(&app));
    let weir = Weir::start(
        &dir.path(),
        &["--endpoint-metrics", "--log-level", "info,weir::access=off"],
    );
    let c = client();
    for _ in 0..7 {
        assert_eq!(weir.get(&c, "app.example.com", "/").0, 200);
    }
    let series = format!(
        r#"weir_endpoint_requests_total{{code_class="2xx",endpoint="{}",service="app"}}"#,
        app.addr
    );
    let counted = support::wait_until(Duration::from_secs(5), || weir.metric(&series) == Some(7.0));
    assert!(counted.is_some(), "{series}: {:?}", weir.metric(&series));
    assert_eq!(
        weir.metric(&format!(
            r#"weir_endpoint_in_flight{{endpoint="{}",service="app"}}"#,
            app.addr
        )),
        Some(0.0)
    );
    // The access log is filtered out; other logs are not.
    assert!(weir.access_log().is_empty());
    assert!(weir.log_text().contains("weir listening"));
}
