//! End to end: the real `weir` binary routing real requests to real echo upstreams.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use support::{client, service_yaml, Echo, ManifestDir, Weir};

const SHOP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: weir}
spec: {controller: weir.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: demo}
spec:
  ingressClassName: weir
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /api/health, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
  - host: "*.preview.example.com"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
  - host: empty.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: empty, port: {number: 80}}}}
      - {path: /dead, pathType: Prefix, backend: {service: {name: dead, port: {number: 80}}}}
      - {path: /missing, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
---
"#;

struct Setup {
    weir: Weir,
    _web: Echo,
    _api: Echo,
    _dir: ManifestDir,
}

fn setup(extra_manifest: &str) -> Setup {
    setup_with_flags(extra_manifest, &[])
}

fn setup_with_flags(extra_manifest: &str, flags: &[&str]) -> Setup {
    let web = Echo::start("web");
    let api = Echo::start("api");
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], weir_testsupport::process::free_port()));
    let dir = ManifestDir::new();
    dir.write(
        "routes.yaml",
        &(SHOP.to_string()
            + &service_yaml("demo", "web", &[web.addr])
            + &service_yaml("demo", "api", &[api.addr])
            + &service_yaml("demo", "empty", &[])
            + &service_yaml("demo", "dead", &[dead])
            + extra_manifest),
    );
    let weir = Weir::start(&dir.path(), flags);
    Setup {
        weir,
        _web: web,
        _api: api,
        _dir: dir,
    }
}

#[test]
fn hosts_and_paths_route_to_the_right_service() {
    let s = setup("");
    let c = client();
    let cases = [
        ("shop.example.com", "/", "web"),
        ("shop.example.com", "/cart/1", "web"),
        ("shop.example.com", "/api", "api"),
        ("shop.example.com", "/api/", "api"),
        ("shop.example.com", "/api/items?id=3", "api"),
        ("shop.example.com", "/api/health", "web"), // Exact beats the shorter Prefix
        ("shop.example.com", "/api/health/deep", "api"),
        ("shop.example.com", "/apix", "web"), // element-wise, not string prefix
        ("SHOP.example.com:8080", "/api", "api"), // host case and port ignored
        ("pr-7.preview.example.com", "/x", "api"), // wildcard: one label
    ];
    for (host, path, service) in cases {
        let echo = s.weir.echo(&c, host, path);
        assert_eq!(echo["service"], service, "{host}{path}");
        assert_eq!(echo["path"], path, "path forwarded unchanged");
    }
}

#[test]
fn unmatched_requests_get_404_without_a_default_backend() {
    let s = setup("");
    let c = client();
    for (host, path) in [
        ("unknown.example.org", "/"),
        ("a.b.preview.example.com", "/"), // wildcard does not match two labels
        ("preview.example.com", "/"),     // nor the bare suffix
    ] {
        let (status, body) = s.weir.get(&c, host, path);
        assert_eq!(status, 404, "{host}{path}: {body}");
        assert_eq!(body, "no route for this host and path\n");
    }
}

#[test]
fn default_backend_takes_unmatched_requests() {
    let extra = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback, namespace: demo}
spec:
  ingressClassName: weir
  defaultBackend: {service: {name: api, port: {name: http}}}
---
"#;
    let s = setup(extra);
    let c = client();
    assert_eq!(
        s.weir.echo(&c, "unknown.example.org", "/x")["service"],
        "api"
    );
    assert_eq!(s.weir.echo(&c, "shop.example.com", "/")["service"], "web");
}

#[test]
fn backend_failures_answer_503_and_502() {
    let s = setup("");
    let c = client();
    let (status, body) = s.weir.get(&c, "empty.example.com", "/");
    assert_eq!((status, body.as_str()), (503, "no endpoints available\n"));
    let (status, body) = s.weir.get(&c, "empty.example.com", "/missing");
    assert_eq!((status, body.as_str()), (503, "no endpoints available\n"));
    let (status, body) = s.weir.get(&c, "empty.example.com", "/dead");
    assert_eq!(
        (status, body.as_str()),
        (502, "upstream connection failed\n")
    );
    // The same keep-alive client goes on working after those errors.
    assert_eq!(
        s.weir.echo(&c, "shop.example.com", "/api")["service"],
        "api"
    );
    // The problems are visible to the operator.
    let (_, routes) = s.weir.admin_get("/debug/routes");
    assert!(
        routes.contains("Service demo/missing not found"),
        "{routes}"
    );
}

#[test]
fn an_upstream_that_never_answers_the_connect_gets_504() {
    let hole = weir_testsupport::process::unresponsive_port();
    let extra = service_yaml("demo", "slow", &[hole.addr])
        + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: slow, namespace: demo}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: slow.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: slow, port: {number: 80}}}}]}\n---\n";
    let s = setup(&extra);
    let started = std::time::Instant::now();
    let (status, body) = s.weir.get(&client(), "slow.example.com", "/");
    assert_eq!((status, body.as_str()), (504, "upstream timed out\n"));
    // The 2 s connect timeout (the default of `weir.dev/connect-timeout`) is what ended it.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn forwarded_headers_host_and_hop_by_hop() {
    let s = setup("");
    let c = client();
    let resp = c
        .get(s.weir.url("/api/x"))
        .header("host", "shop.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https") // spoofed: weir says what it saw
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("x-app", "kept")
        .send()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let echo: serde_json::Value = resp.json().expect("json");
    let h = &echo["headers"];
    assert_eq!(echo["host"], "shop.example.com", "Host preserved");
    // 127.0.0.1 is not a trusted proxy (no --trusted-proxies): its claim is replaced.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
    assert_eq!(h["x-app"], "kept");
    assert!(
        h.get("x-secret-hop").is_none(),
        "connection-nominated header leaked: {h}"
    );
    assert!(h.get("keep-alive").is_none(), "keep-alive leaked: {h}");
}

/// `--trusted-proxies`: a trusted peer's chain is kept and extended, and the client it names
/// is the consistent-hash client address; the same header from an untrusted peer is not.
#[test]
fn trusted_proxies_keep_the_forwarded_chain() {
    let s = setup_with_flags("", &["--trusted-proxies", "10.0.0.0/8,127.0.0.0/8"]);
    let c = client();
    let forwarded_for = |chain: &str| {
        let resp = c
            .get(s.weir.url("/api/x"))
            .header("host", "shop.example.com")
            .header("x-forwarded-for", chain)
            .send()
            .expect("request");
        assert_eq!(resp.status().as_u16(), 200);
        let echo: serde_json::Value = resp.json().expect("json");
        echo["headers"]["x-forwarded-for"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(forwarded_for("203.0.113.9"), "203.0.113.9, 127.0.0.1");
    assert_eq!(
        forwarded_for("198.51.100.7, 10.1.2.3"),
        "198.51.100.7, 10.1.2.3, 127.0.0.1"
    );
    // A bad CIDR is a start-up error, one line on stderr.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "--manifests",
            "/nonexistent",
            "--trusted-proxies",
            "10.0.0.0/33",
            "--check",
        ])
        .output()
        .expect("run weir");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prefix length"), "{stderr}");
}

#[test]
fn h2c_clients_are_served() {
    let s = setup("");
    // Prior-knowledge h2 over plaintext; the host name resolves to weir, so the request
    // carries it as :authority (with the port), as a real h2c client would.
    let c = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .resolve("shop.example.com", s.weir.http)
        .build()
        .expect("h2c client");
    let resp = c
        .get(format!(
            "http://shop.example.com:{}/api/h2",
            s.weir.http.port()
        ))
        .send()
        .expect("h2c request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let echo: serde_json::Value = resp.json().expect("json");
    assert_eq!(echo["service"], "api");
    assert_eq!(echo["path"], "/api/h2");
    let authority = format!("shop.example.com:{}", s.weir.http.port());
    assert_eq!(
        echo["host"],
        authority.as_str(),
        "h1 upstream gets Host from :authority"
    );
    assert_eq!(echo["headers"]["x-forwarded-host"], authority.as_str());
}

#[test]
fn upstream_connections_are_reused() {
    // One worker: with several, a request may start on one worker while another is still
    // returning the previous upstream connection to the shared pool.
    let s = setup_with_flags("", &["--threads", "1"]);
    let mut connections = HashSet::new();
    // A fresh client connection per request: only weir's upstream pool can keep the
    // upstream connection count low.
    for _ in 0..30 {
        let c = client();
        let echo = s.weir.echo(&c, "shop.example.com", "/api/reuse");
        connections.insert(echo["connection"].as_u64().expect("connection id"));
    }
    assert!(
        connections.len() <= 2,
        "30 sequential requests used {} upstream connections",
        connections.len()
    );
}

#[test]
fn admin_endpoints_and_request_metrics() {
    let s = setup("");
    let c = client();
    assert_eq!(s.weir.admin_get("/healthz").0, 200);
    assert_eq!(s.weir.admin_get("/readyz").0, 200);
    for _ in 0..3 {
        s.weir.echo(&c, "shop.example.com", "/api/m");
    }
    s.weir.get(&c, "nowhere.example.org", "/");
    let series = r#"weir_requests_total{code="200",ingress="shop",method="GET",namespace="demo",service="api"}"#;
    assert_eq!(s.weir.metric(series), Some(3.0));
    let not_found =
        r#"weir_requests_total{code="404",ingress="",method="GET",namespace="",service=""}"#;
    assert_eq!(s.weir.metric(not_found), Some(1.0));
    let histogram = r#"weir_request_duration_seconds_count{code_class="2xx",ingress="shop",method="GET",namespace="demo",service="api"}"#;
    assert_eq!(s.weir.metric(histogram), Some(3.0));
    assert_eq!(s.weir.metric("weir_routes"), Some(7.0));
    assert!(
        s.weir
            .metric(r#"weir_config_reloads_total{result="success"}"#)
            >= Some(1.0)
    );

    let (status, routes) = s.weir.admin_get("/debug/routes");
    assert_eq!(status, 200);
    let routes: serde_json::Value = serde_json::from_str(&routes).expect("json");
    assert_eq!(routes["routes"].as_array().map(Vec::len), Some(7));
    let (status, endpoints) = s.weir.admin_get("/debug/endpoints");
    assert_eq!(status, 200);
    let endpoints: serde_json::Value = serde_json::from_str(&endpoints).expect("json");
    assert!(endpoints["endpoints"]
        .as_array()
        .is_some_and(|e| e.len() == 3));
    assert!(endpoints["endpoints"][0].get("latency_ewma_ms").is_some());
    assert_eq!(s.weir.admin_get("/nope").0, 404);

    // One access-log line per request, with the balancer's reason and the upstream.
    let access = s.weir.access_log_of(4);
    assert_eq!(access.len(), 4, "3 proxied + 1 unrouted");
    let line = &access[0];
    assert_eq!(line["status"], 200);
    assert_eq!(line["host"], "shop.example.com");
    assert_eq!(line["path"], "/api/m");
    assert_eq!(line["pick_reason"], "primary");
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["namespace"], "demo");
    assert_eq!(line["ingress"], "shop");
    assert!(line["upstream"]
        .as_str()
        .is_some_and(|u| u.starts_with("127.0.0.1:")));
    assert_eq!(access[3]["status"], 404);
}

/// Sends one raw HTTP/1.1 GET (no client-side path cleanup, unlike URL libraries) and
/// returns the status and body.
fn raw_get(weir: std::net::SocketAddr, host: &str, target: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(weir).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// Path normalisation: `//`, dot segments and escaped dots reach exactly the route their
/// normal form reaches, and the upstream gets that normal form; shapes servers disagree on
/// (`..;`, encoded slashes, backslashes) are refused.
#[test]
fn paths_route_and_forward_in_normal_form() {
    let s = setup("");
    let host = "shop.example.com";
    for (target, service, forwarded) in [
        ("/web/../api/x", "api", "/api/x"),
        ("//api//x", "api", "/api/x"),
        ("/./api/./x", "api", "/api/x"),
        ("/static/%2e%2e/api/x", "api", "/api/x"),
        ("/%61pi/x?q=1", "api", "/api/x?q=1"),
        // Out of /api by dot segments: the api backend never sees it.
        ("/api/../admin", "web", "/admin"),
        ("/api/%2e%2e/admin", "web", "/admin"),
        ("/api/x/../../../../admin", "web", "/admin"),
        // Exact beats Prefix in normal form too.
        ("/api/./health", "web", "/api/health"),
    ] {
        let (status, body) = raw_get(s.weir.http, host, target);
        assert_eq!(status, 200, "{target}: {body}");
        let echo: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(echo["service"], service, "{target}");
        assert_eq!(echo["path"], forwarded, "{target}");
    }
    for target in [
        "/api/..;/admin",
        "/static%2F..%2Fapi/x",
        "/static%5c..%5capi",
        "/a%zz",
    ] {
        let (status, body) = raw_get(s.weir.http, host, target);
        assert_eq!(status, 400, "{target} must be refused: {body}");
    }
    assert!(
        s.weir
            .metric(r#"weir_requests_rejected_total{reason="encoded_slash_in_path"}"#)
            >= Some(2.0)
    );
}
