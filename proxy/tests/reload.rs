//! End to end: manifests change under a running weir while requests flow.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{client, service_yaml, wait_until, Echo, ManifestDir, Weir};

fn ingress(name: &str, paths: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: app.example.com\n    http:\n      paths:\n"
    );
    for (path, service) in paths {
        out.push_str(&format!(
            "      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{name: http}}}}}}}}\n"
        ));
    }
    out + "---\n"
}

/// Requests sent by background clients, and how many did not get a 200 from `service`.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Traffic {
    /// Two clients hammering `path` until stopped (at most 30 s or 20,000 requests each).
    fn start(weir: &Weir, path: &'static str, services: &'static [&'static str]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|_| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let url = weir.url(path);
                std::thread::spawn(move || {
                    let c = client();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut errors = Vec::new();
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        let outcome = c.get(&url).header("host", "app.example.com").send();
                        let ok = match outcome {
                            Ok(r) if r.status() == 200 => {
                                let body = r.text().unwrap_or_default();
                                services
                                    .iter()
                                    .any(|s| body.contains(&format!("\"service\":\"{s}\"")))
                            }
                            Ok(r) => {
                                errors.push(format!("status {}", r.status()));
                                false
                            }
                            Err(e) => {
                                errors.push(e.to_string());
                                false
                            }
                        };
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    errors
                })
            })
            .collect();
        Traffic {
            stop,
            sent,
            failed,
            threads,
        }
    }

    /// Stops the clients: (sent, failed, first errors).
    fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.threads {
            errors.extend(t.join().unwrap_or_default());
        }
        errors.truncate(5);
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[test]
fn manifest_edits_go_live_within_two_seconds_without_failing_requests() {
    let blue = Echo::start("blue");
    let green = Echo::start("green");
    let other = Echo::start("other");
    let dir = ManifestDir::new();
    let services =
        service_yaml("demo", "app", &[blue.addr]) + &service_yaml("demo", "other", &[other.addr]);
    dir.write("services.yaml", &services);
    dir.write("ingress.yaml", &ingress("app", &[("/", "app")]));
    // Default debounce (500 ms): the 2 s promise holds with what operators get.
    let weir = Weir::start(&dir.path(), &[]);
    let c = client();
    assert_eq!(
        weir.get(&c, "app.example.com", "/new").0,
        200,
        "served by / for now"
    );

    let traffic = Traffic::start(&weir, "/", &["blue", "green"]);
    std::thread::sleep(Duration::from_millis(300));

    // 1. A new route.
    dir.write(
        "ingress.yaml",
        &ingress("app", &[("/", "app"), ("/new", "other")]),
    );
    let took = wait_until(Duration::from_secs(5), || {
        weir.get(&c, "app.example.com", "/new")
            .1
            .contains("\"service\":\"other\"")
    })
    .expect("new route never went live");
    assert!(took < Duration::from_secs(2), "new route took {took:?}");
    eprintln!("new route live after {took:?}");

    // 2. The backend's endpoints move from blue to green (a deploy).
    dir.write(
        "services.yaml",
        &(service_yaml("demo", "app", &[green.addr])
            + &service_yaml("demo", "other", &[other.addr])),
    );
    let took = wait_until(Duration::from_secs(5), || {
        (0..3).all(|_| {
            weir.get(&c, "app.example.com", "/")
                .1
                .contains("\"service\":\"green\"")
        })
    })
    .expect("endpoint change never went live");
    assert!(
        took < Duration::from_secs(2),
        "endpoint change took {took:?}"
    );
    eprintln!("endpoint change live after {took:?}");
    std::thread::sleep(Duration::from_millis(300));

    let (sent, failed, errors) = traffic.finish();
    eprintln!("{sent} requests during the reloads, {failed} failed");
    assert!(sent > 50, "too little traffic to prove anything: {sent}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during reloads: {errors:?}"
    );
    assert!(weir.metric(r#"weir_config_reloads_total{result="success"}"#) >= Some(3.0));
}

/// Endpoints change 20 times a second (a rolling deploy, an autoscaler) while two clients
/// send requests: every request gets a 200 from one of the Service's pods; nothing is
/// lost to a reload. The pods that leave the set keep running, as a terminating pod does.
#[test]
fn endpoints_changing_20_times_a_second_fail_no_request() {
    let pods: Vec<Echo> = ["pod-a", "pod-b", "pod-c"]
        .iter()
        .map(|p| Echo::start(p))
        .collect();
    let dir = ManifestDir::new();
    dir.write("ingress.yaml", &ingress("app", &[("/", "app")]));
    dir.write(
        "services.yaml",
        &service_yaml("demo", "app", &[pods[0].addr, pods[1].addr]),
    );
    let weir = Weir::start(&dir.path(), &["--reload-debounce", "10ms"]);
    let reloads_before = weir
        .metric(r#"weir_config_reloads_total{result="success"}"#)
        .unwrap_or(0.0);
    let traffic = Traffic::start(&weir, "/", &["pod-a", "pod-b", "pod-c"]);
    // 60 changes, one every 50 ms: each drops one pod and brings another back.
    for i in 0..60 {
        let set = [pods[i % 3].addr, pods[(i + 1) % 3].addr];
        dir.write("services.yaml", &service_yaml("demo", "app", &set));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (sent, failed, errors) = traffic.finish();
    let reloads = weir
        .metric(r#"weir_config_reloads_total{result="success"}"#)
        .unwrap_or(0.0)
        - reloads_before;
    eprintln!("{sent} requests during {reloads} reloads, {failed} failed");
    assert!(sent > 100, "too little traffic to prove anything: {sent}");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed: {errors:?}");
    // The churn really reached the router (debounce may merge a few writes).
    assert!(reloads >= 30.0, "only {reloads} reloads for 60 changes");
}

#[test]
fn a_broken_manifest_keeps_the_previous_routes() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write("services.yaml", &service_yaml("demo", "app", &[app.addr]));
    dir.write("ingress.yaml", &ingress("app", &[("/", "app")]));
    let weir = Weir::start(&dir.path(), &["--reload-debounce", "100ms"]);
    let c = client();
    let traffic = Traffic::start(&weir, "/", &["app"]);

    dir.write(
        "ingress.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nspec: [unclosed\n",
    );
    let errors = r#"weir_config_reloads_total{result="error"}"#;
    wait_until(Duration::from_secs(5), || weir.metric(errors) >= Some(1.0))
        .expect("the broken file was never noticed");
    assert_eq!(weir.echo(&c, "app.example.com", "/x")["service"], "app");
    assert_eq!(
        weir.metric(r#"weir_config_errors_total{kind="yaml"}"#),
        Some(1.0)
    );
    let log = weir.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("invalid YAML"))
        .unwrap_or_else(|| panic!("no log line for the broken file:\n{log}"));
    assert!(
        line.contains("ingress.yaml") && line.contains("keeping its last good content"),
        "{line}"
    );

    // Fixing the file applies the fix.
    dir.write(
        "ingress.yaml",
        &ingress("app", &[("/", "app"), ("/fixed", "app")]),
    );
    wait_until(Duration::from_secs(5), || {
        weir.metric("weir_routes") == Some(2.0)
    })
    .expect("the fixed file was never applied");

    let (sent, failed, errors) = traffic.finish();
    assert_eq!(failed, 0, "{failed} of {sent} failed: {errors:?}");
}

#[test]
fn an_invalid_ingress_is_skipped_and_the_others_serve() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    let bad = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: broken, namespace: demo}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: app.example.com\n    http: {paths: [{path: /x/../admin, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}\n---\n";
    let not_an_object = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: garbled, namespace: demo}\nspec: {rules: 42}\n---\n";
    dir.write(
        "all.yaml",
        &(service_yaml("demo", "app", &[app.addr])
            + &ingress("app", &[("/", "app")])
            + bad
            + not_an_object),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let c = client();
    assert_eq!(weir.echo(&c, "app.example.com", "/")["service"], "app");
    assert_eq!(
        weir.metric(r#"weir_config_errors_total{kind="invalid_object"}"#),
        Some(2.0)
    );
    let log = weir.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("Ingress demo/broken skipped") && l.contains("must not contain")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("Ingress demo/garbled skipped")),
        "{log}"
    );
    let (_, routes) = weir.admin_get("/debug/routes");
    assert!(
        routes.contains("demo") && routes.contains("broken"),
        "{routes}"
    );
}

/// Annotations weir does not implement (an unknown `weir.dev/*` name, ingress-nginx's) leave
/// the Ingress served without them; each is logged once, counted, and listed on
/// /debug/routes, and the annotations weir knows still apply.
#[test]
fn unsupported_annotations_are_reported_and_the_ingress_is_served() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    let annotated = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: migrated\n  namespace: demo\n  annotations:\n    nginx.ingress.kubernetes.io/proxy-buffering: \"on\"\n    nginx.ingress.kubernetes.io/configuration-snippet: 'more_set_headers \"X: y\";'\n    weir.dev/load-balancr: random\n    weir.dev/retries: \"0\"\n    kubectl.kubernetes.io/last-applied-configuration: '{}'\nspec:\n  ingressClassName: weir\n  rules:\n  - host: app.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}\n---\n";
    dir.write(
        "all.yaml",
        &(service_yaml("demo", "app", &[app.addr]) + annotated),
    );
    let weir = Weir::start(&dir.path(), &[]);
    assert_eq!(
        weir.echo(&client(), "app.example.com", "/")["service"],
        "app"
    );
    assert_eq!(
        weir.metric("weir_config_unsupported_annotations_total"),
        Some(3.0)
    );
    assert_eq!(
        weir.metric(r#"weir_config_errors_total{kind="invalid_object"}"#),
        None
    );
    let log = weir.log_text();
    for annotation in [
        "nginx.ingress.kubernetes.io/proxy-buffering",
        "nginx.ingress.kubernetes.io/configuration-snippet",
        "weir.dev/load-balancr",
    ] {
        assert!(
            log.lines().any(|l| l.contains("Ingress demo/migrated")
                && l.contains(&format!("annotation {annotation} is not supported"))),
            "{annotation}: {log}"
        );
    }
    assert!(!log.contains("weir.dev/retries is not"), "{log}");
    assert!(!log.contains("kubectl.kubernetes.io"), "{log}");
    let (_, routes) = weir.admin_get("/debug/routes");
    let routes: serde_json::Value = serde_json::from_str(&routes).expect("JSON");
    assert_eq!(
        routes["unsupported_annotations"]
            .as_array()
            .map(|a| a.len()),
        Some(3),
        "{routes}"
    );
    // Once each: a reload with the same objects logs and counts nothing new.
    let reloads = weir
        .metric(r#"weir_config_reloads_total{result="success"}"#)
        .unwrap_or(0.0);
    dir.write(
        "all.yaml",
        &(service_yaml("demo", "app", &[app.addr]) + annotated + "# touched\n"),
    );
    wait_until(Duration::from_secs(10), || {
        weir.metric(r#"weir_config_reloads_total{result="success"}"#) > Some(reloads)
    })
    .expect("the touched file was reloaded");
    assert_eq!(
        weir.metric("weir_config_unsupported_annotations_total"),
        Some(3.0)
    );
}
