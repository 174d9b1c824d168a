//! End to end: Gateway API HTTPRoutes in manifests mode, served by the real `weir` binary to
//! real clients over HTTP/1.1 (weir's own path and Pingora's) and HTTP/2: matching by path,
//! header, query and method, hostnames shared with listeners (wildcards of any depth),
//! weighted backends, redirects, rewrites and header modifiers, as the conformance suite's
//! HTTPRoute tests expect them.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use reqwest::blocking::Client;
use support::{service_yaml, Echo, ManifestDir, Weir};

const HOSTS: [&str; 5] = [
    "plain.example.org",
    "filters.example.org",
    "a.example.com",
    "a.b.example.com",
    "example.net",
];

fn manifests(v1: &Echo, v2: &Echo) -> String {
    let gateway = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: wildcard, port: 80, protocol: HTTP, hostname: "*.example.com"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: infra, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [plain.example.org]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: v1, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /}
      headers: [{name: version, value: two}]
    - path: {type: Exact, value: /exact}
      method: POST
    - path: {type: PathPrefix, value: /q}
      queryParams: [{name: animal, value: whale}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs:
    - {name: v1, port: 80, weight: 1}
    - {name: v2, port: 80, weight: 1}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: infra, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [filters.example.org]
  rules:
  - matches: [{path: {type: PathPrefix, value: /redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: secure.example.org
        statusCode: 301
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8443}
  - matches: [{path: {type: PathPrefix, value: /prefix}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: internal.example.org
        path: {type: ReplaceFullPath, replaceFullPath: /one}
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        remove: [X-Header-Remove]
    backendRefs: [{name: v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wildcard, namespace: infra, creationTimestamp: "2026-01-03T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: wildcard}]
  rules:
  - backendRefs: [{name: v2, port: 80}]
---
"#;
    gateway.to_string()
        + &service_yaml("infra", "v1", &[v1.addr])
        + &service_yaml("infra", "v2", &[v2.addr])
}

fn client_to(weir: &Weir, http2: bool) -> Client {
    support::client_for_hosts(weir.http, &HOSTS, http2)
}

#[test]
fn httproutes_route_redirect_rewrite_and_split_as_the_spec_says() {
    let v1 = Echo::start("v1");
    let v2 = Echo::start("v2");
    let dir = ManifestDir::new();
    dir.write("gateway.yaml", &manifests(&v1, &v2));
    for path in ["direct", "pingora"] {
        let weir = Weir::start(&dir.path(), &["--http1-path", path]);
        let port = weir.http.port();
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = client_to(&weir, http2);
            let send = |method: &str, host: &str, target: &str, fields: &[(&str, &str)]| {
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                let mut request = c.request(method, format!("http://{host}:{port}{target}"));
                for (name, value) in fields {
                    request = request.header(*name, *value);
                }
                request.send().expect("request")
            };
            let service = |method: &str, host: &str, target: &str, fields: &[(&str, &str)]| {
                let resp = send(method, host, target, fields);
                assert_eq!(
                    resp.status().as_u16(),
                    200,
                    "{case}: {method} {host}{target}"
                );
                let body: serde_json::Value = resp.json().expect("echo");
                body["service"].as_str().expect("service").to_string()
            };
            let plain = "plain.example.org";
            assert_eq!(service("GET", plain, "/", &[]), "v1", "{case}");
            assert_eq!(
                service("GET", plain, "/", &[("version", "two")]),
                "v2",
                "{case}"
            );
            assert_eq!(service("POST", plain, "/exact", &[]), "v2", "{case}");
            assert_eq!(service("GET", plain, "/exact", &[]), "v1", "{case}: method");
            assert_eq!(
                service("GET", plain, "/q?animal=whale", &[]),
                "v2",
                "{case}"
            );
            assert_eq!(
                service("GET", plain, "/q?animal=dolphin", &[]),
                "v1",
                "{case}"
            );
            // Equal weights: both take a share (200 requests, each side at least 50).
            let mut v1_share = 0;
            for _ in 0..200 {
                if service("GET", plain, "/split", &[]) == "v1" {
                    v1_share += 1;
                }
            }
            assert!(
                (50..=150).contains(&v1_share),
                "{case}: v1 took {v1_share} of 200"
            );
            // Wildcard listener: any depth below it; the bare domain and others are not.
            assert_eq!(service("GET", "a.example.com", "/", &[]), "v2", "{case}");
            assert_eq!(service("GET", "a.b.example.com", "/", &[]), "v2", "{case}");
            assert_eq!(
                send("GET", "example.net", "/", &[]).status().as_u16(),
                404,
                "{case}"
            );
            // Redirects.
            let filters = "filters.example.org";
            let moved = send("GET", filters, "/redirect/page?x=1", &[]);
            assert_eq!(
                support::status_and_location(&moved),
                (301, "https://secure.example.org/new/page?x=1".to_string()),
                "{case}"
            );
            let ported = send("GET", filters, "/port", &[]);
            assert_eq!(
                support::status_and_location(&ported),
                (302, format!("http://{filters}:8443/port")),
                "{case}"
            );
            // Rewrites and header modifiers: what the upstream received.
            let echoed: serde_json::Value = send("GET", filters, "/prefix/two?y=2", &[])
                .json()
                .expect("echo");
            assert_eq!(echoed["path"], "/one/two?y=2", "{case}");
            let echoed: serde_json::Value = send(
                "GET",
                filters,
                "/full/anything",
                &[
                    ("x-header-set", "client"),
                    ("x-header-remove", "gone"),
                    ("x-kept", "kept"),
                ],
            )
            .json()
            .expect("echo");
            assert_eq!(echoed["path"], "/one", "{case}");
            assert_eq!(echoed["host"], "internal.example.org", "{case}");
            let headers = &echoed["headers"];
            assert_eq!(headers["x-header-set"], "set-overwrites-values", "{case}");
            assert!(
                headers.get("x-header-remove").is_none(),
                "{case}: {headers}"
            );
            assert_eq!(headers["x-kept"], "kept", "{case}");
        }
    }
}

/// What a counting server received: (target, `Host`, body length) per request.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, usize)>>>;

/// A server that records the requests it receives and answers 200.
fn start_counter() -> (std::net::SocketAddr, Seen) {
    let seen: Seen = Default::default();
    let record = std::sync::Arc::clone(&seen);
    let addr = support::http1_server(move |parts: http::request::Parts, body: bytes::Bytes| {
        let record = std::sync::Arc::clone(&record);
        async move {
            let host = parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            if let Ok(mut seen) = record.lock() {
                seen.push((parts.uri.to_string(), host, body.len()));
            }
            http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        }
    });
    (addr, seen)
}

/// The Extended filters and the rest of a rule, end to end: `RequestHeaderModifier` `add`,
/// `ResponseHeaderModifier` (`set`, `add`, `remove`), `RequestMirror` to a Service (every
/// request, and a 50 % share), `timeouts.backendRequest` (504 from a backend slower than
/// it), and the 500 the spec answers for a rule whose backend does not resolve.
#[test]
fn httproute_filters_mirrors_timeouts_and_unresolved_backends() {
    let web = Echo::start("web");
    let (shadow, copies) = start_counter();
    let (half, half_copies) = start_counter();
    let dir = ManifestDir::new();
    dir.write(
        "gateway.yaml",
        &(service_yaml("infra", "web", &[web.addr])
            + &service_yaml("infra", "shadow", &[shadow])
            + &service_yaml("infra", "half", &[half])
            + &support::weir_gateway("infra", "[{name: http, port: 80, protocol: HTTP}]")
            + r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: features, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [features.example.org]
  rules:
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: X-Header-Add, value: add-appends-values}]}
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: add-appends-values}]
        remove: [Content-Type]
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: half, port: 80}, percent: 50}}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 10s, backendRequest: 500ms}
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /unresolved}}]
    backendRefs: [{name: no-such-service, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /half-unresolved}}]
    backendRefs: [{name: web, port: 80}, {name: no-such-service, port: 80}]
"#),
    );
    let host = "features.example.org";
    // HTTP/1.1 on both engines, and HTTP/2.
    for (engine, http2) in [("direct", false), ("pingora", false), ("direct", true)] {
        let path = format!("{engine}, http2 {http2}");
        copies.lock().expect("lock").clear();
        half_copies.lock().expect("lock").clear();
        let weir = Weir::start(&dir.path(), &["--http1-path", engine]);
        let port = weir.http.port();
        let c = support::client_for_hosts(weir.http, &[host], http2);
        let url = |target: &str| format!("http://{host}:{port}{target}");

        let resp = c
            .get(url("/headers"))
            .header("x-header-add", "client")
            .send()
            .expect("request");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let fields = resp.headers().clone();
        assert_eq!(
            fields.get("x-header-set").map(|v| v.as_bytes()),
            Some(&b"set-overwrites-values"[..]),
            "{path}"
        );
        assert_eq!(
            fields.get("x-header-add").map(|v| v.as_bytes()),
            Some(&b"add-appends-values"[..]),
            "{path}"
        );
        assert!(fields.get("content-type").is_none(), "{path}: {fields:?}");
        let echoed: serde_json::Value = resp.json().expect("echo");
        assert_eq!(
            echoed["headers"]["x-header-add"], "client,add-appends-values",
            "{path}"
        );
        let echoed: serde_json::Value = c
            .get(url("/headers"))
            .send()
            .expect("request")
            .json()
            .expect("echo");
        assert_eq!(
            echoed["headers"]["x-header-add"], "add-appends-values",
            "{path}"
        );

        // Mirrors: every request to one Service, half of them to the other.
        for i in 0..100 {
            let resp = c
                .post(url(&format!("/mirror/{i}")))
                .body("copy me")
                .send()
                .expect("request");
            let echoed: serde_json::Value = resp.json().expect("echo");
            assert_eq!(echoed["service"], "web", "{path}");
        }
        let all = support::wait_until(std::time::Duration::from_secs(10), || {
            copies.lock().map(|c| c.len()).unwrap_or(0) >= 100
        });
        assert!(
            all.is_some(),
            "{path}: {} copies",
            copies.lock().map(|c| c.len()).unwrap_or(0)
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        let seen = copies.lock().expect("lock").clone();
        assert_eq!(seen.len(), 100, "{path}");
        assert!(
            seen.iter()
                .all(|(target, h, body)| target.starts_with("/mirror/")
                    && h.starts_with(host)
                    && *body == 7),
            "{path}: {seen:?}"
        );
        // 100 requests at 50 %: between 25 and 75 copies (5 standard deviations).
        let halved = half_copies.lock().expect("lock").len();
        assert!(
            (25..=75).contains(&halved),
            "{path}: {halved} of 100 copies at 50 %"
        );

        // backendRequest 500ms: a backend that takes 1.5 s gets a 504 in well under that.
        let started = std::time::Instant::now();
        let slow = c.get(url("/slow?delay_ms=1500")).send().expect("request");
        assert_eq!(slow.status().as_u16(), 504, "{path}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1400),
            "{path}: {:?}",
            started.elapsed()
        );
        let quick = c.get(url("/slow?delay_ms=50")).send().expect("request");
        assert_eq!(quick.status().as_u16(), 200, "{path}");

        let unresolved = c.get(url("/unresolved")).send().expect("request");
        assert_eq!(unresolved.status().as_u16(), 500, "{path}");
        // Half the weight on a backend that does not resolve: that share is answered 500
        // (100 requests: between 25 and 75, 5 standard deviations), the rest served.
        let mut failed = 0;
        for _ in 0..100 {
            match c
                .get(url("/half-unresolved"))
                .send()
                .expect("request")
                .status()
                .as_u16()
            {
                500 => failed += 1,
                200 => {}
                other => panic!("{path}: status {other}"),
            }
        }
        assert!(
            (25..=75).contains(&failed),
            "{path}: {failed} of 100 answered 500"
        );
    }
}

/// Policies attached to Services: a BackendLBPolicy's cookie keeps a client on one pod, a
/// BalancerPolicy's consistent hash by a header sends each user to one pod; without the
/// cookie or header requests spread over both pods.
#[test]
fn balancer_and_session_policies_attach_to_services() {
    // Two pods each (named apart: the echo answers with its pod's name).
    let web = [Echo::start("web-a"), Echo::start("web-b")];
    let api = [Echo::start("api-a"), Echo::start("api-b")];
    let dir = ManifestDir::new();
    dir.write(
        "gateway.yaml",
        &(service_yaml("infra", "web", &[web[0].addr, web[1].addr])
            + &service_yaml("infra", "api", &[api[0].addr, api[1].addr])
            + &support::weir_gateway("infra", "[{name: http, port: 80, protocol: HTTP}]")
            + r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.example.org]
  rules:
  - matches: [{path: {type: PathPrefix, value: /web}}]
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: api, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: BackendLBPolicy
metadata: {name: web-sessions, namespace: infra}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  sessionPersistence: {sessionName: shop-session}
---
apiVersion: weir.dev/v1alpha1
kind: BalancerPolicy
metadata: {name: api-by-user, namespace: infra}
spec:
  targetRefs: [{group: "", kind: Service, name: api}]
  settings: {load-balancer: consistent-hash, hash-key: "header:x-user"}
"#),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let host = "shop.example.org";
    let port = weir.http.port();
    let c = support::client_for_hosts(weir.http, &[host], false);
    let pod_of = |resp: reqwest::blocking::Response| -> String {
        let body: serde_json::Value = resp.json().expect("echo");
        body["pod"].as_str().unwrap_or("").to_string()
    };
    let url = |path: &str| format!("http://{host}:{port}{path}");

    // The session cookie: set on the first answer, then every request with it stays.
    let first = c.get(url("/web")).send().expect("request");
    let cookie = first
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(cookie.starts_with("shop-session="), "{cookie:?}");
    let first_pod = pod_of(first);
    let pair = cookie.split(';').next().unwrap_or("").to_string();
    for _ in 0..20 {
        let pod = pod_of(
            c.get(url("/web"))
                .header("cookie", &pair)
                .send()
                .expect("request"),
        );
        assert_eq!(pod, first_pod);
    }

    // Consistent hash by x-user: each user always to one pod; 20 users use both pods.
    let mut pods = std::collections::BTreeSet::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        let pod = pod_of(
            c.get(url("/api"))
                .header("x-user", &user)
                .send()
                .expect("request"),
        );
        for _ in 0..3 {
            let again = pod_of(
                c.get(url("/api"))
                    .header("x-user", &user)
                    .send()
                    .expect("request"),
            );
            assert_eq!(again, pod, "{user}");
        }
        pods.insert(pod);
    }
    assert_eq!(pods.len(), 2, "20 users all hashed to one pod: {pods:?}");
}
