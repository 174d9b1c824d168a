//! End to end: Ingresses written for ingress-nginx, with its annotations, served by the real
//! `weir` binary to real clients, on every engine and protocol (weir's own HTTP/1.1 path,
//! Pingora's, and HTTP/2).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use reqwest::blocking::Client;
use support::{service_yaml, Echo, ManifestDir, Weir};

/// An Ingress of class `nginx` (served by weir as `--ingress-class nginx`) with one rule
/// for `host`, `/` to the Service `app`, and `annotations` (YAML flow-map entries).
fn nginx_ingress(name: &str, host: &str, annotations: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: demo\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: \"{host}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{name: http}}}}}}}}]}}\n---\n"
    )
}

const NGINX_CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}\n---\n";

const HOSTS: [&str; 8] = [
    "moved.example.com",
    "coded.example.com",
    "both.example.com",
    "app.example.com",
    "rewrite.example.com",
    "vhost.example.com",
    "dots.example.com",
    "upload.example.com",
];

/// A client that follows no redirect and reaches `weir` for every name of [`HOSTS`] (so that
/// `Host`, or `:authority` over HTTP/2, is that name).
/// weir serving ingress-nginx's class as it stands, its HTTP/1.1 requests on `http1_path`.
/// A manifests directory with ingress-nginx's IngressClass and `objects` (YAML documents).
fn nginx_manifests(objects: &str) -> ManifestDir {
    let dir = ManifestDir::new();
    dir.write("all.yaml", &(NGINX_CLASS.to_string() + objects));
    dir
}

/// How many annotations weir counted as not read (`weir_config_unsupported_annotations_total`).
fn unread_annotations(weir: &Weir) -> f64 {
    weir.metric("weir_config_unsupported_annotations_total ")
        .unwrap_or(0.0)
}

fn nginx_class_weir(dir: &ManifestDir, http1_path: &str) -> Weir {
    nginx_class_weir_with(dir, http1_path, &[])
}

/// [`nginx_class_weir`] with more flags.
fn nginx_class_weir_with(dir: &ManifestDir, http1_path: &str, extra: &[&str]) -> Weir {
    let mut args = vec![
        "--http1-path",
        http1_path,
        "--ingress-class",
        "nginx",
        "--ingress-controller",
        "k8s.io/ingress-nginx",
    ];
    args.extend_from_slice(extra);
    Weir::start(&dir.path(), &args)
}

fn no_redirects(weir: &Weir, http2: bool) -> Client {
    no_redirects_to(weir.http, http2)
}

/// [`no_redirects`] for weir at `addr`.
fn no_redirects_to(addr: std::net::SocketAddr, http2: bool) -> Client {
    let mut builder = Client::builder().redirect(reqwest::redirect::Policy::none());
    for host in HOSTS {
        builder = builder.resolve(host, addr);
    }
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder
    };
    builder.build().expect("client")
}

/// (status, Location) of a request for `path` on `host` (at weir's port).
fn redirect_of(c: &Client, weir: &Weir, method: &str, host: &str, path: &str) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let url = format!("http://{host}:{}{path}", weir.http.port());
    support::status_and_location(&c.request(method, url).send().expect("request"))
}

/// An Ingress of class `nginx` for `host` with the given `paths` (YAML flow-map entries of
/// `path`, `pathType`; backend: Service `app`).
fn nginx_ingress_paths(
    name: &str,
    host: &str,
    annotations: &str,
    paths: &[(&str, &str)],
) -> String {
    let paths: Vec<String> = paths
        .iter()
        .map(|(path, kind)| {
            format!("{{path: \"{path}\", pathType: {kind}, backend: {{service: {{name: app, port: {{name: http}}}}}}}}")
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: demo\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: \"{host}\"\n    http: {{paths: [{}]}}\n---\n",
        paths.join(", ")
    )
}

/// `rewrite-target` with captures of a regex path (regex mode: case-insensitive, matched at
/// the start), the request's query kept; a rewrite without captures replaces the whole path;
/// `upstream-vhost` sets the upstream `Host` (the client's stays in `X-Forwarded-Host`) and
/// `x-forwarded-prefix` adds its field. What the upstream received, on weir's own HTTP/1.1
/// path, Pingora's, and over h2c.
#[test]
fn rewrites_and_upstream_fields_reach_the_upstream_as_ingress_nginx_sends_them() {
    let app = Echo::start("app");
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &nginx_ingress_paths(
                "rewrite",
                "rewrite.example.com",
                "nginx.ingress.kubernetes.io/rewrite-target: /$2, nginx.ingress.kubernetes.io/x-forwarded-prefix: /something",
                &[("/something(/|$)(.*)", "ImplementationSpecific")],
            )
            + &nginx_ingress_paths(
                "vhost",
                "vhost.example.com",
                "nginx.ingress.kubernetes.io/rewrite-target: /, nginx.ingress.kubernetes.io/upstream-vhost: internal.example",
                &[("/api", "Prefix")],
            )
            + &nginx_ingress_paths(
                "dots",
                "dots.example.com",
                "nginx.ingress.kubernetes.io/rewrite-target: /base/$1",
                &[("/app-(.*)", "ImplementationSpecific")],
            )),
    );
    for path in ["direct", "pingora"] {
        let weir = nginx_class_weir(&dir, path);
        let port = weir.http.port();
        for http2 in [false, true] {
            let c = no_redirects(&weir, http2);
            let case = format!("{path}, http2 {http2}");
            let seen = |host: &str, target: &str| -> serde_json::Value {
                let url = format!("http://{host}:{port}{target}");
                let resp = c.get(url).send().expect("request");
                assert_eq!(resp.status().as_u16(), 200, "{case} {host}{target}");
                resp.json().expect("echo JSON")
            };
            let new = seen("rewrite.example.com", "/something/new/page?x=1");
            assert_eq!(new["path"], "/new/page?x=1", "{case}");
            assert_eq!(new["headers"]["x-forwarded-prefix"], "/something", "{case}");
            assert_eq!(
                new["headers"]["host"],
                format!("rewrite.example.com:{port}"),
                "{case}"
            );
            assert_eq!(
                seen("rewrite.example.com", "/SOMETHING")["path"],
                "/",
                "{case}"
            );
            let api = seen("vhost.example.com", "/API/users/7?q=a");
            assert_eq!(api["path"], "/?q=a", "{case}");
            assert_eq!(api["headers"]["host"], "internal.example", "{case}");
            assert_eq!(
                api["headers"]["x-forwarded-host"],
                format!("vhost.example.com:{port}"),
                "{case}"
            );
            // A dot segment put together by the rewrite is resolved before it goes upstream.
            assert_eq!(seen("dots.example.com", "/app-..")["path"], "/", "{case}");
            assert_eq!(
                seen("dots.example.com", "/app-x/y")["path"],
                "/base/x/y",
                "{case}"
            );
            // Outside the regex: no route.
            let other = c
                .get(format!("http://rewrite.example.com:{port}/other"))
                .send()
                .expect("request");
            assert_eq!(other.status().as_u16(), 404, "{case}");
        }
        // The access log shows the paths the clients asked for.
        let paths: Vec<String> = weir
            .access_log_of(12)
            .iter()
            .filter_map(|l| l["path"].as_str().map(str::to_string))
            .collect();
        assert_eq!(
            paths[..6],
            [
                "/something/new/page",
                "/SOMETHING",
                "/API/users/7",
                "/app-..",
                "/app-x/y",
                "/other"
            ],
            "{path}"
        );
        assert_eq!(unread_annotations(&weir), 0.0, "{path}");
    }
}

/// `permanent-redirect` (301, or `permanent-redirect-code`), `temporal-redirect` (302, and
/// it wins over a permanent one) and `app-root` (302 for `/` only, on the request's own
/// host) answer as ingress-nginx does: the Location exactly the annotation's URL, the
/// request's path and query dropped; the app's other paths still reach it. The same on
/// weir's own HTTP/1.1 path, on Pingora's, and over h2c, for GET and HEAD.
#[test]
fn redirect_annotations_answer_as_ingress_nginx_does() {
    let app = Echo::start("app");
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &nginx_ingress(
                "moved",
                "moved.example.com",
                "nginx.ingress.kubernetes.io/permanent-redirect: \"https://new.example.com/landing\"",
            )
            + &nginx_ingress(
                "coded",
                "coded.example.com",
                "nginx.ingress.kubernetes.io/permanent-redirect: \"https://new.example.com\", nginx.ingress.kubernetes.io/permanent-redirect-code: \"308\"",
            )
            + &nginx_ingress(
                "both",
                "both.example.com",
                "nginx.ingress.kubernetes.io/permanent-redirect: \"https://a.example.com/\", nginx.ingress.kubernetes.io/temporal-redirect: \"http://b.example.com/sale?from=both\"",
            )
            + &nginx_ingress(
                "app",
                "app.example.com",
                "nginx.ingress.kubernetes.io/app-root: /dashboard",
            )),
    );
    for path in ["direct", "pingora"] {
        let weir = nginx_class_weir(&dir, path);
        for http2 in [false, true] {
            let c = no_redirects(&weir, http2);
            let case = format!("{path}, http2 {http2}");
            for method in ["GET", "HEAD"] {
                assert_eq!(
                    redirect_of(&c, &weir, method, "moved.example.com", "/old/page?x=1"),
                    (301, "https://new.example.com/landing".to_string()),
                    "{case} {method}"
                );
            }
            assert_eq!(
                redirect_of(&c, &weir, "POST", "coded.example.com", "/"),
                (308, "https://new.example.com".to_string()),
                "{case}"
            );
            assert_eq!(
                redirect_of(&c, &weir, "GET", "both.example.com", "/x"),
                (302, "http://b.example.com/sale?from=both".to_string()),
                "{case}"
            );
            let port = weir.http.port();
            assert_eq!(
                redirect_of(&c, &weir, "GET", "app.example.com", "/"),
                (302, format!("http://app.example.com:{port}/dashboard")),
                "{case}"
            );
            // Only `/` itself: the app's paths, `/dashboard` too, reach the app.
            for other in ["/dashboard", "/?a=1/", "/x"] {
                let (status, location) = redirect_of(&c, &weir, "GET", "app.example.com", other);
                let expect = if other.starts_with("/?") { 302 } else { 200 };
                assert_eq!(status, expect, "{case} {other}: {location}");
            }
        }
        // Every request is in the access log with the status it got.
        let log = weir.access_log_of(2 * 8);
        let redirects = log
            .iter()
            .filter(|l| matches!(l["status"].as_u64(), Some(301 | 302 | 308)))
            .count();
        assert_eq!(redirects, 2 * 6, "{path}: {log:?}");
        // Read, so not reported as unsupported.
        assert_eq!(unread_annotations(&weir), 0.0, "{path}");
    }
}

/// `upstream-hash-by: $arg_user` sends each user to one pod of three, every time, and spreads
/// users over the pods; `proxy-read-timeout` (seconds) answers 504 when the upstream is
/// slower, with `proxy-next-upstream-tries: "1"` trying once.
#[test]
fn balancing_and_timeout_annotations_steer_requests_as_ingress_nginx_does() {
    let pods: Vec<_> = (0..3)
        .map(|i| weir_testsupport::process::start_echo("app", &format!("app-{i}")))
        .collect();
    let addrs: Vec<_> = pods.iter().map(|(_, addr)| *addr).collect();
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &addrs)
            + &nginx_ingress(
                "hashed",
                "hashed.example.com",
                "nginx.ingress.kubernetes.io/upstream-hash-by: $arg_user",
            )
            + &nginx_ingress(
                "slow",
                "slow.example.com",
                "nginx.ingress.kubernetes.io/proxy-read-timeout: \"1\", nginx.ingress.kubernetes.io/proxy-next-upstream-tries: \"1\"",
            )),
    );
    let weir = nginx_class_weir(&dir, "direct");
    let c = support::client();
    let mut pods_of_users = std::collections::BTreeMap::new();
    for round in 0..3 {
        for user in 0..12 {
            let seen = weir.echo(&c, "hashed.example.com", &format!("/?user=u{user}"));
            let pod = seen["pod"].as_str().expect("pod").to_string();
            let first = pods_of_users.entry(user).or_insert_with(|| pod.clone());
            assert_eq!(*first, pod, "user {user}, round {round}");
        }
    }
    let used: std::collections::BTreeSet<_> = pods_of_users.values().collect();
    assert!(used.len() >= 2, "12 users all on {used:?}");

    let started = std::time::Instant::now();
    let (status, _) = weir.get(&c, "slow.example.com", "/?delay_ms=2500");
    let took = started.elapsed();
    assert_eq!(status, 504);
    assert!(
        took >= std::time::Duration::from_millis(900)
            && took < std::time::Duration::from_millis(2400),
        "504 after {took:?}"
    );
    assert_eq!(weir.get(&c, "slow.example.com", "/?delay_ms=100").0, 200);
}

/// `proxy-body-size`: a body over it is answered 413 — at once when its length is declared
/// (HTTP/1.1 on both engines, h2c), and as it streams when it is chunked — and counted; a body
/// within it reaches the upstream whole.
#[test]
fn proxy_body_size_answers_413_for_larger_bodies() {
    let app = Echo::start("app");
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &nginx_ingress(
                "upload",
                "upload.example.com",
                "nginx.ingress.kubernetes.io/proxy-body-size: 1k",
            )),
    );
    for path in ["direct", "pingora"] {
        let weir = nginx_class_weir(&dir, path);
        let url = format!("http://upload.example.com:{}/upload", weir.http.port());
        for http2 in [false, true] {
            let c = no_redirects(&weir, http2);
            let case = format!("{path}, http2 {http2}");
            let small = c.post(&url).body(vec![b'a'; 1000]).send().expect("small");
            assert_eq!(small.status().as_u16(), 200, "{case}");
            let seen: serde_json::Value = small.json().expect("echo JSON");
            assert_eq!(seen["headers"]["content-length"], "1000", "{case}");
            let large = c.post(&url).body(vec![b'a'; 2000]).send().expect("large");
            assert_eq!(large.status().as_u16(), 413, "{case}");
            assert_eq!(large.text().unwrap_or_default(), "request body too large\n");
        }
        // Chunked (no declared length): counted as it streams.
        let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(vec![b'a'; 3000]));
        let c = no_redirects(&weir, false);
        let streamed = c.post(&url).body(chunked).send().expect("chunked");
        assert_eq!(streamed.status().as_u16(), 413, "{path}");
        assert_eq!(
            weir.metric(r#"weir_requests_rejected_total{reason="request_body_too_large"}"#),
            Some(3.0),
            "{path}"
        );
    }
}

/// A canary Ingress takes a share of its main Ingress's route as ingress-nginx decides it:
/// `canary-by-header` (`always`, `never`, or `canary-by-header-value`) first, then
/// `canary-by-cookie`, then `canary-weight`. The weight's share is checked over 1,000
/// requests: 20 % expected, binomial standard deviation 1.3 points, tolerance ±5 points
/// (about 4 deviations).
#[test]
fn canary_ingresses_take_their_share_by_header_cookie_and_weight() {
    let stable = Echo::start("stable");
    let canary = Echo::start("canary");
    let canary_ingress = |name: &str, host: &str, annotations: &str| {
        nginx_ingress(name, host, annotations).replace("name: app,", "name: canary,")
    };
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[stable.addr])
            + &service_yaml("demo", "canary", &[canary.addr])
            + &nginx_ingress("main", "app.example.com", "")
            + &canary_ingress(
                "main-canary",
                "app.example.com",
                "nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-by-header: X-Canary, nginx.ingress.kubernetes.io/canary-by-cookie: canary, nginx.ingress.kubernetes.io/canary-weight: \"20\"",
            )
            + &nginx_ingress("valued", "moved.example.com", "")
            + &canary_ingress(
                "valued-canary",
                "moved.example.com",
                "nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-by-header: X-Tier, nginx.ingress.kubernetes.io/canary-by-header-value: beta",
            )),
    );
    let weir = nginx_class_weir(&dir, "direct");
    let c = no_redirects(&weir, false);
    let port = weir.http.port();
    let service = |host: &str, headers: &[(&str, &str)]| -> String {
        let mut request = c.get(format!("http://{host}:{port}/"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let resp = request.send().expect("request");
        assert_eq!(resp.status().as_u16(), 200);
        let seen: serde_json::Value = resp.json().expect("echo JSON");
        seen["service"].as_str().unwrap_or("").to_string()
    };
    let app = "app.example.com";
    for _ in 0..20 {
        assert_eq!(service(app, &[("x-canary", "always")]), "canary");
        // The header decides before the cookie.
        assert_eq!(
            service(app, &[("x-canary", "never"), ("cookie", "canary=always")]),
            "stable"
        );
        assert_eq!(service(app, &[("cookie", "a=b; canary=always")]), "canary");
        assert_eq!(service(app, &[("cookie", "canary=never")]), "stable");
        assert_eq!(
            service("moved.example.com", &[("x-tier", "beta")]),
            "canary"
        );
        // A value that does not match leaves it to the weight: 0 here.
        assert_eq!(
            service("moved.example.com", &[("x-tier", "always")]),
            "stable"
        );
        assert_eq!(service("moved.example.com", &[]), "stable");
    }
    let to_canary = (0..1000)
        .filter(|_| service(app, &[("x-canary", "other")]) == "canary")
        .count();
    assert!(
        (150..=250).contains(&to_canary),
        "{to_canary} of 1000 requests went to the canary, 200 expected"
    );
    // Each request is logged under the Ingress and Service that served it.
    let log = weir.access_log();
    let canary_lines = log
        .iter()
        .filter(|l| l["ingress"] == "main-canary" && l["service"] == "canary")
        .count();
    assert!(canary_lines >= 40, "{canary_lines}");
}

/// `service-upstream`: the Service's cluster IP and port are the upstream, not its endpoints.
/// Here the cluster IP reaches the app and the one endpoint listed is a closed port, so the
/// Ingress with the annotation is served and the one without is not.
#[test]
fn service_upstream_sends_to_the_cluster_ip() {
    let app = Echo::start("app");
    let dead = weir_testsupport::process::free_port();
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: demo}}\nspec: {{clusterIP: 127.0.0.1, ports: [{{name: http, port: {}, targetPort: 8080}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: app-1, namespace: demo, labels: {{kubernetes.io/service-name: app}}}}\naddressType: IPv4\nports: [{{name: http, port: {dead}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n---\n",
        app.addr.port()
    );
    let dir = nginx_manifests(
        &(service
            + &nginx_ingress(
                "meshed",
                "moved.example.com",
                "nginx.ingress.kubernetes.io/service-upstream: \"true\"",
            )
            + &nginx_ingress("direct-to-pods", "coded.example.com", "")),
    );
    let weir = nginx_class_weir(&dir, "direct");
    let c = support::client();
    let seen = weir.echo(&c, "moved.example.com", "/x");
    assert_eq!(seen["path"], "/x");
    let (status, _) = weir.get(&c, "coded.example.com", "/x");
    assert_eq!(status, 502, "the pods' endpoint is a closed port");
    assert_eq!(unread_annotations(&weir), 0.0);
}

/// `from-to-www-redirect`: `www.` + the host answers a 308 to the host with the path and
/// query kept, and the host itself is served.
#[test]
fn from_to_www_redirect_sends_www_to_the_host() {
    let app = Echo::start("app");
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &nginx_ingress(
                "shop",
                "shop.example.com",
                "nginx.ingress.kubernetes.io/from-to-www-redirect: \"true\"",
            )),
    );
    let weir = nginx_class_weir(&dir, "direct");
    assert_eq!(
        weir.redirect_of("www.shop.example.com", "/cart?id=7"),
        (308, "http://shop.example.com/cart?id=7".to_string())
    );
    assert_eq!(
        weir.echo(&support::client(), "shop.example.com", "/cart")["path"],
        "/cart"
    );
    assert_eq!(unread_annotations(&weir), 0.0);
}

/// `default-backend`: while the rule's Service has no endpoint, the annotation's Service
/// (at its first port) answers its requests; a rule whose Service has endpoints keeps them.
#[test]
fn default_backend_takes_requests_while_the_service_has_no_endpoint() {
    let app = Echo::start("app");
    let fallback = Echo::start("fallback");
    let empty = "apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: demo}\nspec: {ports: [{name: http, port: 80}]}\n---\n";
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &service_yaml("demo", "fallback", &[fallback.addr])
            + empty
            + &nginx_ingress(
                "with-fallback",
                "moved.example.com",
                "nginx.ingress.kubernetes.io/default-backend: fallback",
            )
            .replace("name: app,", "name: empty,")
            + &nginx_ingress(
                "served",
                "coded.example.com",
                "nginx.ingress.kubernetes.io/default-backend: fallback",
            )),
    );
    let weir = nginx_class_weir(&dir, "direct");
    let c = support::client();
    assert_eq!(
        weir.echo(&c, "moved.example.com", "/")["service"],
        "fallback"
    );
    assert_eq!(weir.echo(&c, "coded.example.com", "/")["service"], "app");
    assert_eq!(unread_annotations(&weir), 0.0);
}

/// `affinity: cookie`: a session's requests stay on the endpoint its cookie names, on every
/// engine and protocol, with ingress-nginx's cookie attributes; a session whose endpoint
/// fails is retried elsewhere (keeping its cookie, or moving with `change-on-failure`), and
/// one whose endpoint is gone gets a new endpoint and a new cookie.
#[test]
fn affinity_cookie_keeps_a_session_on_its_endpoint() {
    let mut pods: Vec<Echo> = ["pod-a", "pod-b", "pod-c"]
        .into_iter()
        .map(Echo::start)
        .collect();
    let addrs: Vec<_> = pods.iter().map(|p| p.addr).collect();
    let ingresses = nginx_ingress(
        "persistent",
        "app.example.com",
        "nginx.ingress.kubernetes.io/affinity: cookie, nginx.ingress.kubernetes.io/affinity-mode: persistent, nginx.ingress.kubernetes.io/session-cookie-name: route, nginx.ingress.kubernetes.io/session-cookie-max-age: \"3600\", nginx.ingress.kubernetes.io/session-cookie-samesite: Lax",
    ) + &nginx_ingress(
        "balanced",
        "coded.example.com",
        "nginx.ingress.kubernetes.io/affinity: cookie, nginx.ingress.kubernetes.io/session-cookie-change-on-failure: \"true\", nginx.ingress.kubernetes.io/session-cookie-secure: \"true\"",
    );
    let dir = nginx_manifests(&(service_yaml("demo", "app", &addrs) + &ingresses));
    // (pod, Set-Cookie) of a request to `host` with `cookie`.
    let visit = |c: &Client, weir: &Weir, host: &str, cookie: Option<&str>| {
        let mut request = c.get(format!("http://{host}:{}/", weir.http.port()));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let resp = request.send().expect("request");
        assert_eq!(resp.status().as_u16(), 200);
        let set = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().expect("text").to_string());
        let seen: serde_json::Value = resp.json().expect("echo JSON");
        (seen["service"].as_str().unwrap_or("").to_string(), set)
    };
    let pair = |set: &str| set.split(';').next().unwrap_or("").to_string();
    let mut first_cookie: Option<(String, String)> = None;
    for path in ["direct", "pingora"] {
        let weir = nginx_class_weir(&dir, path);
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = no_redirects(&weir, http2);
            // A new session: an endpoint, and the cookie that names it.
            let (pod, set) = visit(&c, &weir, "app.example.com", None);
            let set = set.unwrap_or_else(|| panic!("{case}: no session cookie"));
            let (name_value, attributes) = set.split_once(';').expect("attributes");
            let value = name_value.strip_prefix("route=").expect("cookie name");
            assert!(
                value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
                "{case}: {set}"
            );
            assert_eq!(
                attributes, " Path=/; Max-Age=3600; SameSite=Lax; HttpOnly",
                "{case}"
            );
            // The session stays, and is not told again.
            for _ in 0..20 {
                let (again, set) = visit(&c, &weir, "app.example.com", Some(name_value));
                assert_eq!((again.as_str(), set), (pod.as_str(), None), "{case}");
            }
            // The same cookie means the same endpoint to every weir (replicas agree).
            match &first_cookie {
                None => first_cookie = Some((name_value.to_string(), pod.clone())),
                Some((cookie, owner)) => {
                    let (at, _) = visit(&c, &weir, "app.example.com", Some(cookie));
                    assert_eq!(&at, owner, "{case}: another weir's cookie");
                }
            }
            // A cookie that names nothing starts a new session.
            let (_, set) = visit(&c, &weir, "app.example.com", Some("route=zz"));
            assert!(set.is_some(), "{case}: a bad cookie is replaced");
            // Balanced: a random key, `Secure` asked for even over plain HTTP.
            let (pod, set) = visit(&c, &weir, "coded.example.com", None);
            let set = set.unwrap_or_else(|| panic!("{case}: no balanced cookie"));
            assert!(set.starts_with("INGRESSCOOKIE="), "{case}: {set}");
            assert!(set.ends_with("; Path=/; HttpOnly; Secure"), "{case}: {set}");
            for _ in 0..20 {
                let (again, set) = visit(&c, &weir, "coded.example.com", Some(&pair(&set)));
                assert_eq!((again.as_str(), set), (pod.as_str(), None), "{case}");
            }
        }
    }

    // Failures, on weir's own engine.
    let weir = nginx_class_weir(&dir, "direct");
    let c = no_redirects(&weir, false);
    let (pod, set) = visit(&c, &weir, "app.example.com", None);
    let persistent = pair(&set.expect("cookie"));
    // A balanced session on the same endpoint (a new one lands there 1 time in 3).
    let balanced = (0..60)
        .find_map(|_| match visit(&c, &weir, "coded.example.com", None) {
            (at, Some(set)) if at == pod => Some(pair(&set)),
            _ => None,
        })
        .expect("a balanced session on the endpoint");
    let index = |name: &str| ["pod-a", "pod-b", "pod-c"].iter().position(|p| *p == name);
    pods[index(&pod).expect("pod")].kill();
    // Persistent without change-on-failure: the retry goes to another endpoint, the session
    // keeps its cookie.
    let (other, set) = visit(&c, &weir, "app.example.com", Some(&persistent));
    assert_ne!(other, pod);
    assert_eq!(set, None, "the session keeps its endpoint");
    // Balanced with change-on-failure: the session moves to the endpoint that answered.
    let (moved, set) = visit(&c, &weir, "coded.example.com", Some(&balanced));
    assert_ne!(moved, pod);
    let set = pair(&set.expect("a new cookie after the failure"));
    let (again, none) = visit(&c, &weir, "coded.example.com", Some(&set));
    assert_eq!((again, none), (moved, None));
    // The endpoint leaves the Service: the session gets a new endpoint and cookie.
    let left: Vec<_> = addrs
        .iter()
        .zip(["pod-a", "pod-b", "pod-c"])
        .filter(|(_, name)| *name != pod)
        .map(|(addr, _)| *addr)
        .collect();
    dir.write(
        "all.yaml",
        &(NGINX_CLASS.to_string() + &service_yaml("demo", "app", &left) + &ingresses),
    );
    let mut moved = None;
    support::wait_until(std::time::Duration::from_secs(10), || {
        let (at, set) = visit(&c, &weir, "app.example.com", Some(&persistent));
        moved = set.map(|set| (at, pair(&set)));
        moved.is_some()
    })
    .expect("a new cookie once the endpoint is gone");
    let (at, cookie) = moved.expect("moved");
    assert_ne!(at, pod);
    for _ in 0..10 {
        assert_eq!(
            visit(&c, &weir, "app.example.com", Some(&cookie)),
            (at.clone(), None)
        );
    }
    assert_eq!(unread_annotations(&weir), 0.0);
}

/// `proxy-next-upstream`: a response whose status is listed goes unseen by the client while
/// another endpoint can answer; non-idempotent requests are retried only with
/// `non_idempotent`; `off` retries nothing, not even a refused connection.
#[test]
fn proxy_next_upstream_retries_the_listed_failures_only() {
    let good = Echo::start("good");
    // A 404 is no failure to outlier detection: the endpoint stays in the pool throughout.
    let failing = Echo::start_with("failing", &["--status", "404"]);
    let mut dead = Echo::start("dead");
    dead.kill();
    let round_robin = "nginx.ingress.kubernetes.io/load-balance: round_robin";
    let to = |service: &str, ingress: String| {
        ingress.replace("name: app,", &format!("name: {service},"))
    };
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[good.addr, failing.addr])
            + &service_yaml("demo", "gone", &[good.addr, dead.addr])
            + &nginx_ingress(
                "statuses",
                "moved.example.com",
                &format!("{round_robin}, nginx.ingress.kubernetes.io/proxy-next-upstream: \"error timeout http_404\", nginx.ingress.kubernetes.io/proxy-next-upstream-tries: \"3\""),
            )
            + &nginx_ingress(
                "any-method",
                "coded.example.com",
                &format!("{round_robin}, nginx.ingress.kubernetes.io/proxy-next-upstream: \"http_404 non_idempotent\""),
            )
            + &nginx_ingress("default", "app.example.com", round_robin)
            + &to(
                "gone",
                nginx_ingress(
                    "off",
                    "both.example.com",
                    &format!("{round_robin}, nginx.ingress.kubernetes.io/proxy-next-upstream: \"off\""),
                ),
            )
            + &to("gone", nginx_ingress("retried", "upload.example.com", round_robin))),
    );
    for path in ["direct", "pingora"] {
        let weir = nginx_class_weir(&dir, path);
        let port = weir.http.port();
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = no_redirects(&weir, http2);
            // Statuses of `n` requests with `method` to `host`.
            let statuses = |method: &str, host: &str, n: usize| -> Vec<u16> {
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                (0..n)
                    .map(|_| {
                        c.request(method.clone(), format!("http://{host}:{port}/"))
                            .body("x")
                            .send()
                            .expect("request")
                            .status()
                            .as_u16()
                    })
                    .collect()
            };
            let count = |codes: &[u16], code: u16| codes.iter().filter(|c| **c == code).count();
            let listed = statuses("GET", "moved.example.com", 20);
            assert_eq!(count(&listed, 200), 20, "{case}: {listed:?}");
            // POST is not idempotent: half of them meet the failing endpoint and its 404.
            let posts = statuses("POST", "moved.example.com", 20);
            assert!(count(&posts, 404) >= 5, "{case}: {posts:?}");
            let any = statuses("POST", "coded.example.com", 20);
            assert_eq!(count(&any, 200), 20, "{case}: {any:?}");
            // Without the annotation a status is relayed, never retried.
            let relayed = statuses("GET", "app.example.com", 20);
            assert!(count(&relayed, 404) >= 5, "{case}: {relayed:?}");
            // A refused connection: answered 502 with `off`, retried by default. (First:
            // after five failures the dead endpoint is ejected, for every route that has it.)
            if !http2 {
                let off = statuses("GET", "both.example.com", 6);
                assert!(count(&off, 502) >= 1, "{case}: {off:?}");
            }
            let retried = statuses("GET", "upload.example.com", 20);
            assert_eq!(count(&retried, 200), 20, "{case}: {retried:?}");
        }
        assert_eq!(unread_annotations(&weir), 0.0);
    }
}

/// `custom-http-errors`: an upstream response with a listed status is replaced by the error
/// backend's answer to the same request, told what happened in ingress-nginx's fields; the
/// error backend is the Ingress's `default-backend`, else the default backend.
#[test]
fn custom_http_errors_are_answered_by_the_error_backend() {
    let app = Echo::start("app");
    let errors = Echo::start("errors");
    let catch_all = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: catch-all, namespace: demo}\nspec:\n  ingressClassName: nginx\n  defaultBackend: {service: {name: errors, port: {name: http}}}\n---\n";
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &service_yaml("demo", "errors", &[errors.addr])
            + catch_all
            + &nginx_ingress(
                "own-backend",
                "moved.example.com",
                "nginx.ingress.kubernetes.io/custom-http-errors: \"404,503\", nginx.ingress.kubernetes.io/default-backend: errors",
            )
            + &nginx_ingress(
                "default-backend",
                "coded.example.com",
                "nginx.ingress.kubernetes.io/custom-http-errors: \"404\"",
            )),
    );
    for path in ["direct", "pingora"] {
        let weir = nginx_class_weir(&dir, path);
        let port = weir.http.port();
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = no_redirects(&weir, http2);
            let get = |host: &str, target: &str| -> (u16, serde_json::Value) {
                let resp = c
                    .get(format!("http://{host}:{port}{target}"))
                    .header("accept", "application/json")
                    .send()
                    .expect("request");
                let status = resp.status().as_u16();
                (status, resp.json().expect("echo JSON"))
            };
            let (status, seen) = get("moved.example.com", "/shop?status=404");
            // The error backend answered (the echo takes its status from the query too).
            assert_eq!(
                (status, seen["service"].as_str()),
                (404, Some("errors")),
                "{case}"
            );
            let field = |name: &str| seen["headers"][name].as_str().unwrap_or("").to_string();
            assert_eq!(field("x-code"), "404", "{case}");
            assert_eq!(field("x-original-uri"), "/shop?status=404", "{case}");
            assert_eq!(field("x-namespace"), "demo", "{case}");
            assert_eq!(field("x-ingress-name"), "own-backend", "{case}");
            assert_eq!(field("x-service-name"), "app", "{case}");
            assert_eq!(field("x-service-port"), "http", "{case}");
            assert_eq!(field("x-format"), "application/json", "{case}");
            // A status not listed is the upstream's own.
            let (status, seen) = get("moved.example.com", "/?status=500");
            assert_eq!(
                (status, seen["service"].as_str()),
                (500, Some("app")),
                "{case}"
            );
            let (status, seen) = get("moved.example.com", "/");
            assert_eq!(
                (status, seen["service"].as_str()),
                (200, Some("app")),
                "{case}"
            );
            // Without its own default-backend the Ingress's errors go to the default backend.
            let (status, seen) = get("coded.example.com", "/?status=404");
            assert_eq!(
                (status, seen["service"].as_str()),
                (404, Some("errors")),
                "{case}"
            );
            let (status, seen) = get("coded.example.com", "/?status=503");
            assert_eq!(
                (status, seen["service"].as_str()),
                (503, Some("app")),
                "{case}"
            );
        }
        assert_eq!(unread_annotations(&weir), 0.0);
    }
}

/// `proxy-send-timeout`: an upstream that stops taking a request's body gets it for at most
/// that long. The body streams through Pingora's proxy (it is longer than weir's own engine
/// takes whole), which after the failed write still waits for an answer the upstream may
/// have sent, up to the read timeout: the client gets its 504 then
/// (docs/migrating-from-ingress-nginx.md).
#[test]
fn proxy_send_timeout_ends_a_stalled_upload() {
    use std::io::{Read, Write};
    // An upstream that accepts and never reads: once the socket buffers are full, weir's
    // writes wait.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let stalled_addr = stalled.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in stalled.incoming().take(4).flatten() {
            held.push(conn);
            std::thread::sleep(std::time::Duration::from_secs(20));
        }
    });
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[stalled_addr])
            + &nginx_ingress(
                "send",
                "upload.example.com",
                "nginx.ingress.kubernetes.io/proxy-send-timeout: \"1\", nginx.ingress.kubernetes.io/proxy-read-timeout: \"3\"",
            )),
    );
    let weir = nginx_class_weir(&dir, "direct");
    let mut client = std::net::TcpStream::connect(weir.http).expect("connect");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .expect("timeout");
    const BODY: usize = 256 << 20;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: upload.example.com\r\nContent-Length: {BODY}\r\n\r\n"
    );
    client.write_all(head.as_bytes()).expect("head");
    // The body streams from a thread of its own until weir stops taking it (bounded: 256 MiB
    // at most); the answer is read meanwhile.
    let mut writer = client.try_clone().expect("clone");
    std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 << 10];
        let mut sent = 0;
        while sent < BODY && writer.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
    });
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    let log = weir.log_text();
    assert!(
        text.starts_with("HTTP/1.1 504"),
        "after {took:?}: {text:?}; log:\n{log}"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "504 after {took:?}"
    );
    // The write gave up after the send timeout, before the read timeout ran out.
    assert!(log.contains("WriteTimedout"), "{log}");
}

/// `backend-protocol: GRPCS`: TLS to the upstream (its certificate not verified, as
/// ingress-nginx's default), HTTP/2 by ALPN, which a gRPC server offers.
#[test]
fn grpcs_backends_are_reached_over_tls_and_http2() {
    let ca = weir_testsupport::tls::TestCa::new("weir test CA").expect("test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = ca.leaf(&["somewhere.else"]).expect("leaf certificate");
    let (cert, key) = (dir.path().join("grpc.crt"), dir.path().join("grpc.key"));
    std::fs::write(&cert, leaf.cert).expect("write cert");
    std::fs::write(&key, leaf.key).expect("write key");
    let upstream = Echo::start_with(
        "grpc",
        &[
            "--tls-cert",
            cert.to_str().expect("utf8"),
            "--tls-key",
            key.to_str().expect("utf8"),
        ],
    );
    let manifests = nginx_manifests(
        &(service_yaml("demo", "app", &[upstream.addr])
            + &nginx_ingress(
                "grpcs",
                "app.example.com",
                "nginx.ingress.kubernetes.io/backend-protocol: GRPCS",
            )),
    );
    let weir = nginx_class_weir(&manifests, "direct");
    let seen = weir.echo(&support::client(), "app.example.com", "/");
    assert_eq!(seen["tls"], true, "{seen}");
    assert_eq!(seen["proto"], "HTTP/2.0", "{seen}");
    assert_eq!(unread_annotations(&weir), 0.0);
}

/// Source ranges: `allowlist-source-range` (and its older name `whitelist-source-range`)
/// admits only the networks listed, `denylist-source-range` refuses its own, both on the
/// client address weir trusts (`--trusted-proxies`); anyone else gets 403, counted.
#[test]
fn source_ranges_admit_and_refuse_clients_by_address() {
    let app = Echo::start("app");
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &nginx_ingress(
                "loopback-only",
                "app.example.com",
                "nginx.ingress.kubernetes.io/allowlist-source-range: \"127.0.0.1/32, ::1\"",
            )
            + &nginx_ingress(
                "office-only",
                "moved.example.com",
                "nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8",
            )
            + &nginx_ingress(
                "no-loopback",
                "coded.example.com",
                "nginx.ingress.kubernetes.io/denylist-source-range: 127.0.0.0/8, nginx.ingress.kubernetes.io/allowlist-source-range: 0.0.0.0/0",
            )),
    );
    for path in ["direct", "pingora"] {
        let weir = nginx_class_weir_with(&dir, path, &["--trusted-proxies", "127.0.0.1/32"]);
        let port = weir.http.port();
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = no_redirects(&weir, http2);
            let status = |host: &str, forwarded_for: Option<&str>| {
                let mut request = c.get(format!("http://{host}:{port}/"));
                if let Some(chain) = forwarded_for {
                    request = request.header("x-forwarded-for", chain);
                }
                request.send().expect("request").status().as_u16()
            };
            assert_eq!(status("app.example.com", None), 200, "{case}");
            assert_eq!(status("moved.example.com", None), 403, "{case}");
            assert_eq!(status("coded.example.com", None), 403, "{case}");
            // Through a trusted proxy (the loopback peer), the client is the one it names.
            assert_eq!(status("moved.example.com", Some("10.1.2.3")), 200, "{case}");
            assert_eq!(status("coded.example.com", Some("10.1.2.3")), 200, "{case}");
            assert_eq!(status("app.example.com", Some("10.1.2.3")), 403, "{case}");
            // A chain whose rightmost untrusted entry is outside the list stays outside.
            assert_eq!(
                status("moved.example.com", Some("10.1.2.3, 192.0.2.9")),
                403,
                "{case}"
            );
            // So does one split over two fields, the client's first (as a proxy that adds
            // a field of its own sends it): the fields are one chain.
            let split = c
                .get(format!("http://moved.example.com:{port}/"))
                .header("x-forwarded-for", "10.1.2.3")
                .header("x-forwarded-for", "192.0.2.9")
                .send()
                .expect("request");
            assert_eq!(split.status().as_u16(), 403, "{case}");
        }
        // Five refusals a protocol.
        assert_eq!(
            weir.metric("weir_requests_rejected_total{reason=\"source_denied\"}"),
            Some(10.0)
        );
        assert_eq!(unread_annotations(&weir), 0.0);
    }
}

/// `enable-cors`: a preflight from an allowed origin is answered 204 by weir with the CORS
/// fields; other requests from it get them on the upstream's response; an origin not
/// allowed gets none and its preflight goes upstream; with `*`, credentials are not allowed
/// (browsers refuse `*` with them).
#[test]
fn cors_preflights_are_answered_and_responses_carry_the_fields() {
    let app = Echo::start("app");
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &nginx_ingress(
                "listed",
                "app.example.com",
                "nginx.ingress.kubernetes.io/enable-cors: \"true\", nginx.ingress.kubernetes.io/cors-allow-origin: \"https://shop.example.com, https://*.example.org\", nginx.ingress.kubernetes.io/cors-expose-headers: X-Total, nginx.ingress.kubernetes.io/cors-max-age: \"600\"",
            )
            + &nginx_ingress(
                "anyone",
                "moved.example.com",
                "nginx.ingress.kubernetes.io/enable-cors: \"true\"",
            )),
    );
    for path in ["direct", "pingora"] {
        let weir = nginx_class_weir(&dir, path);
        let port = weir.http.port();
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = no_redirects(&weir, http2);
            let send = |method: &str, host: &str, origin: Option<&str>| {
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                let mut request = c.request(method, format!("http://{host}:{port}/"));
                if let Some(origin) = origin {
                    request = request.header("origin", origin);
                }
                let resp = request.send().expect("request");
                let field = |name: &str| {
                    resp.headers()
                        .get(name)
                        .map(|v| v.to_str().unwrap_or("").to_string())
                };
                let fields = (
                    field("access-control-allow-origin"),
                    field("access-control-allow-credentials"),
                    field("access-control-allow-methods"),
                    field("access-control-expose-headers"),
                    field("access-control-max-age"),
                );
                (resp.status().as_u16(), fields)
            };
            let shop = Some("https://shop.example.com");
            let (status, fields) = send("OPTIONS", "app.example.com", shop);
            assert_eq!(status, 204, "{case}: the preflight is weir's");
            assert_eq!(fields.0.as_deref(), shop, "{case}");
            assert_eq!(fields.1.as_deref(), Some("true"), "{case}");
            assert_eq!(
                fields.2.as_deref(),
                Some("GET, PUT, POST, DELETE, PATCH, OPTIONS"),
                "{case}"
            );
            assert_eq!(fields.3.as_deref(), Some("X-Total"), "{case}");
            assert_eq!(fields.4.as_deref(), Some("600"), "{case}");
            // A request from an allowed origin: the upstream's answer, with the fields.
            let (status, fields) = send("GET", "app.example.com", Some("https://a.b.example.org"));
            assert_eq!(status, 200, "{case}");
            assert_eq!(
                fields.0.as_deref(),
                Some("https://a.b.example.org"),
                "{case}"
            );
            // Not allowed: no fields; its OPTIONS is the upstream's to answer.
            let (status, fields) = send("GET", "app.example.com", Some("https://evil.net"));
            assert_eq!((status, fields.0), (200, None), "{case}");
            let (status, fields) = send("OPTIONS", "app.example.com", Some("https://evil.net"));
            assert_eq!((status, fields.0), (200, None), "{case}");
            let (status, fields) = send("GET", "app.example.com", None);
            assert_eq!((status, fields.0), (200, None), "{case}");
            // `*`: any origin, and never with credentials.
            let (status, fields) = send("OPTIONS", "moved.example.com", Some("https://any.net"));
            assert_eq!(status, 204, "{case}");
            assert_eq!((fields.0.as_deref(), fields.1), (Some("*"), None), "{case}");
        }
        assert_eq!(unread_annotations(&weir), 0.0);
    }
}

/// `limit-rps` with `limit-burst-multiplier`: each client (the address weir trusts) gets
/// the rate's burst at once, then 429 with `Retry-After`; other clients and those of
/// `limit-allowlist` are not affected; refusals are counted.
#[test]
fn rate_limits_hold_each_client_to_its_rate() {
    let app = Echo::start("app");
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &nginx_ingress(
                "limited",
                "app.example.com",
                "nginx.ingress.kubernetes.io/limit-rps: \"1\", nginx.ingress.kubernetes.io/limit-burst-multiplier: \"2\", nginx.ingress.kubernetes.io/limit-allowlist: 10.0.0.0/8",
            )),
    );
    let mut refused = 0;
    for (n, path) in ["direct", "pingora"].into_iter().enumerate() {
        let weir = nginx_class_weir_with(&dir, path, &["--trusted-proxies", "127.0.0.1/32"]);
        let port = weir.http.port();
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = no_redirects(&weir, http2);
            // A client of its own per case: 192.0.2.<case>.
            let client = format!("192.0.2.{}", n * 2 + usize::from(http2) + 1);
            let send = |from: &str| {
                let resp = c
                    .get(format!("http://app.example.com:{port}/"))
                    .header("x-forwarded-for", from)
                    .send()
                    .expect("request");
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                (resp.status().as_u16(), retry_after)
            };
            let answers: Vec<_> = (0..10).map(|_| send(&client)).collect();
            let allowed = answers.iter().filter(|(s, _)| *s == 200).count();
            // 1 + a burst of 2 at once; a fourth if a second passed meanwhile.
            assert!((3..=4).contains(&allowed), "{case}: {answers:?}");
            assert_eq!(answers[0].0, 200, "{case}");
            let limited = answers.iter().find(|(s, _)| *s == 429).expect("limited");
            assert_eq!(limited.1.as_deref(), Some("1"), "{case}");
            refused += 10 - allowed;
            // Another client has its own allowance; the allowlist has no limit.
            assert_eq!(send("198.51.100.7").0, 200, "{case}");
            assert!((0..10).all(|_| send("10.1.2.3").0 == 200), "{case}");
        }
        let counted = weir
            .metric("weir_requests_rejected_total{reason=\"rate_limited\"}")
            .unwrap_or(0.0);
        assert_eq!(counted as usize, refused, "{path}");
        refused = 0;
        assert_eq!(unread_annotations(&weir), 0.0);
    }
}

/// `limit-connections`: a client may have that many requests in flight on the rule; one more
/// at the same time gets 429, and its slots return as its requests end.
#[test]
fn limit_connections_caps_a_clients_requests_in_flight() {
    let app = Echo::start("app");
    let dir = nginx_manifests(
        &(service_yaml("demo", "app", &[app.addr])
            + &nginx_ingress(
                "capped",
                "app.example.com",
                "nginx.ingress.kubernetes.io/limit-connections: \"2\"",
            )),
    );
    for path in ["direct", "pingora"] {
        let weir = nginx_class_weir(&dir, path);
        let (addr, port) = (weir.http, weir.http.port());
        let get = move |target: &str| {
            no_redirects_to(addr, false)
                .get(format!("http://app.example.com:{port}{target}"))
                .send()
                .expect("request")
                .status()
                .as_u16()
        };
        // Two slow requests hold both slots; a third at the same time is refused.
        let slow: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || get("/?delay_ms=1500")))
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(get("/"), 429, "{path}");
        for request in slow {
            assert_eq!(request.join().expect("thread"), 200, "{path}");
        }
        // Both slots are back.
        assert_eq!(get("/"), 200, "{path}");
        assert_eq!(
            weir.metric("weir_requests_rejected_total{reason=\"client_concurrency\"}"),
            Some(1.0),
            "{path}"
        );
    }
}
