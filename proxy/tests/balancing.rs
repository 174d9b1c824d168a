//! End to end: `weir.dev/*` annotations choose how a route balances, and real outcomes feed
//! the balancer (outlier ejection).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use support::{client, Echo, ManifestDir, Weir};

fn ingress(annotations: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app\n  namespace: demo\n  annotations:\n{annotations}spec:\n  ingressClassName: weir\n  rules:\n  - host: app.example.com\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{name: http}}}}}}}}]}}\n---\n"
    )
}

/// One Service over several echoes (each its own slice: they differ by port).
fn service(echoes: &[&Echo]) -> String {
    let addrs: Vec<_> = echoes.iter().map(|e| e.addr).collect();
    support::service_yaml("demo", "app", &addrs)
}

fn pod_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["pod"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn consistent_hash_on_a_header_keeps_each_user_on_one_backend() {
    let echoes: Vec<Echo> = (0..4).map(|i| Echo::start(&format!("app{i}"))).collect();
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(service(&echoes.iter().collect::<Vec<_>>())
            + &ingress("    weir.dev/load-balancer: consistent-hash\n    weir.dev/hash-key: header:X-User\n")),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let c = client();
    let mut homes: HashMap<String, String> = HashMap::new();
    for round in 0..5 {
        for user in 0..20 {
            let body = c
                .get(weir.url("/"))
                .header("host", "app.example.com")
                .header("x-user", format!("user-{user}"))
                .send()
                .and_then(|r| r.text())
                .expect("request");
            let pod = pod_of(&body);
            let home = homes
                .entry(format!("user-{user}"))
                .or_insert_with(|| pod.clone());
            assert_eq!(*home, pod, "user-{user} moved in round {round}");
        }
    }
    let distinct: std::collections::HashSet<_> = homes.values().collect();
    assert!(
        distinct.len() >= 3,
        "20 users should spread over the 4 backends: {distinct:?}"
    );
    let picks = weir.metric(
        r#"weir_balancer_picks_total{algorithm="consistent-hash",reason="primary",service="app"}"#,
    );
    assert_eq!(picks, Some(100.0));
}

#[test]
fn a_failing_backend_is_ejected_after_consecutive_failures() {
    let good = Echo::start("good");
    let bad = Echo::start_with("bad", &["--status", "500"]);
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(service(&[&good, &bad])
            + &ingress("    weir.dev/outlier-consecutive-failures: \"3\"\n    weir.dev/outlier-max-ejection-percent: \"50\"\n")),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let c = client();
    let mut failures = 0;
    for _ in 0..60 {
        let (status, _) = weir.get(&c, "app.example.com", "/");
        if status == 500 {
            failures += 1;
        } else {
            assert_eq!(status, 200);
        }
    }
    // Exactly the three consecutive failures that trigger the ejection; then 30 s out.
    assert_eq!(failures, 3, "routes: {}", weir.admin_get("/debug/routes").1);
    assert_eq!(
        weir.metric(r#"weir_outlier_ejections_total{service="app"}"#),
        Some(1.0)
    );
    let log = weir.log_text();
    assert!(
        log.contains("endpoint ejected after consecutive failures")
            && log.contains(&bad.addr.to_string()),
        "{log}"
    );
}

#[test]
fn a_bad_annotation_rejects_only_its_ingress() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(service(&[&app])
            + &ingress("    weir.dev/load-balancer: fastest\n")
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: fine, namespace: demo}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: fine.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}\n"),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let c = client();
    assert_eq!(weir.get(&c, "app.example.com", "/").0, 404);
    assert_eq!(weir.echo(&c, "fine.example.com", "/")["service"], "app");
    let log = weir.log_text();
    assert!(
        log.lines().any(|l| l.contains("Ingress demo/app skipped") && l.contains("weir.dev/load-balancer")),
        "{log}"
    );
}
