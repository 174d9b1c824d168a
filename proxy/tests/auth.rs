//! End to end: ingress-nginx's basic and external authentication, served by the real
//! `weir` binary to real clients on weir's own HTTP/1.1 path, Pingora's and HTTP/2, with a
//! real authentication service (a hyper server in the test) for `auth-url`.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http_body_util::Full;
use reqwest::blocking::Client;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{demo_ingress, service_yaml, Echo, ManifestDir, Weir};

const HOSTS: [&str; 5] = [
    "staff.example.com",
    "broken.example.com",
    "api.example.com",
    "login.example.com",
    "down.example.com",
];

// Hashes made by `htpasswd` and `openssl passwd`, not by weir.
const BCRYPT_WONDER_LAND: &str = "$2y$05$lWv2jNyPSj9xG3ZuTEhyGu./3seiniFabWPh8UDFYJpneAZrig/xG";
const APR1_S3CRET_PASS: &str = "$apr1$Wn8cSTgH$v4YIIy8GDcWo/5uLUdO9V/";
const SHA512_HUNTER2: &str = "$6$8charsal$x22Su7ing8UtiDeYtIvKj6jM6UfU4YgUF9iK9o9jGS8Iy3P5Y2TTPcMlO6Od7A7dEOFghsNfAmGMiAWsDapLT1";
const SHA1_HUNTER2: &str = "{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=";

/// An Opaque Secret of namespace `demo` with `entries` as its `stringData`.
fn secret(name: &str, entries: &[(&str, &str)]) -> String {
    let data: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("  {k}: {}\n", serde_json::Value::String(v.to_string())))
        .collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: demo}}\ntype: Opaque\nstringData:\n{}---\n",
        data.concat()
    )
}

fn client_to(weir: &Weir, http2: bool) -> Client {
    support::client_for_hosts(weir.http, &HOSTS, http2)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn basic_manifests(app: &Echo, staff_file: &str) -> String {
    service_yaml("demo", "app", &[app.addr])
        + &secret("staff", &[("auth", staff_file)])
        + &secret(
            "map",
            &[("carol", SHA1_HUNTER2), ("dave", "not a hash")],
        )
        + &demo_ingress(
            "staff",
            "staff.example.com",
            "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: staff, nginx.ingress.kubernetes.io/auth-realm: Staff only",
        )
        + &demo_ingress(
            "mapped",
            "api.example.com",
            "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: demo/map, nginx.ingress.kubernetes.io/auth-secret-type: auth-map",
        )
        // Its Secret does not exist: closed, never open.
        + &demo_ingress(
            "broken",
            "broken.example.com",
            "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: nobody",
        )
}

/// `auth-type: basic`: 401 with the realm's challenge without credentials or with wrong
/// ones, the upstream reached with a user's; every scheme htpasswd writes; an auth map;
/// the Secret swapped while weir runs (the old password stops working, the new one works);
/// a missing or broken Secret answers 503 to everyone, with a warning and a metric.
#[test]
fn basic_auth_admits_the_users_of_the_secret_only() {
    let app = Echo::start("app");
    let file = format!(
        "alice:{BCRYPT_WONDER_LAND}\nbob:{APR1_S3CRET_PASS}\neve:{SHA512_HUNTER2}\nfrank:{SHA1_HUNTER2}\n"
    );
    let dir = ManifestDir::new();
    dir.write("all.yaml", &basic_manifests(&app, &file));
    for path in ["direct", "pingora"] {
        let weir = Weir::start(&dir.path(), &["--http1-path", path]);
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = client_to(&weir, http2);
            let port = weir.http.port();
            let status = |host: &str, authorization: Option<&str>| {
                let mut request = c.get(format!("http://{host}:{port}/"));
                if let Some(value) = authorization {
                    request = request.header("authorization", value);
                }
                let resp = request.send().expect("request");
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().expect("ascii").to_string());
                (resp.status().as_u16(), challenge)
            };
            let staff = "staff.example.com";
            let challenge = Some("Basic realm=\"Staff only\"".to_string());
            assert_eq!(status(staff, None), (401, challenge.clone()), "{case}");
            for (user, password) in [
                ("alice", "wonder land"),
                ("bob", "s3cret pass"),
                ("eve", "hunter2"),
                ("frank", "hunter2"),
            ] {
                // Twice: the second from the cache of verified passwords.
                for _ in 0..2 {
                    assert_eq!(
                        status(staff, Some(&basic(user, password))).0,
                        200,
                        "{case} {user}"
                    );
                }
                assert_eq!(
                    status(staff, Some(&basic(user, "wrong"))),
                    (401, challenge.clone()),
                    "{case} {user}"
                );
            }
            assert_eq!(
                status(staff, Some(&basic("mallory", "hunter2"))).0,
                401,
                "{case}"
            );
            assert_eq!(status(staff, Some("Basic !!notbase64")).0, 401, "{case}");
            assert_eq!(status(staff, Some("Bearer token")).0, 401, "{case}");
            // The upstream gets the request with its credentials (as nginx passes them).
            let echoed: serde_json::Value = c
                .get(format!("http://{staff}:{port}/who"))
                .header("authorization", basic("alice", "wonder land"))
                .send()
                .expect("request")
                .json()
                .expect("echo");
            assert_eq!(echoed["path"], "/who", "{case}");
            // An auth map: each key a user; a key with no usable hash cannot log in.
            assert_eq!(
                status("api.example.com", Some(&basic("carol", "hunter2"))).0,
                200,
                "{case}"
            );
            assert_eq!(
                status("api.example.com", Some(&basic("dave", "not a hash"))).0,
                401,
                "{case}"
            );
            // No Secret: closed to everyone, with or without credentials.
            assert_eq!(status("broken.example.com", None).0, 503, "{case}");
            assert_eq!(
                status("broken.example.com", Some(&basic("alice", "wonder land"))).0,
                503,
                "{case}"
            );
        }
        // Per protocol: none, four wrong passwords, an unknown user, two malformed, dave.
        assert_eq!(
            weir.metric("weir_requests_rejected_total{reason=\"auth_required\"}"),
            Some(2.0 * 9.0)
        );
        assert_eq!(
            weir.metric("weir_requests_rejected_total{reason=\"auth_unusable\"}"),
            Some(4.0)
        );
        assert!(
            weir.metric("weir_auth_duration_seconds_count{kind=\"basic\",result=\"allowed\"}")
                .unwrap_or(0.0)
                >= 2.0 * 10.0
        );
        // The missing Secret and the unusable auth-map entry are reported.
        assert_eq!(
            weir.metric("weir_config_errors_total{kind=\"auth\"}"),
            Some(2.0)
        );
        let log = weir.log_text();
        assert!(log.contains("Secret demo/nobody not found"), "{log}");
        assert!(!log.contains("not a hash\""), "a hash is never logged");
    }

    // The Secret changes while weir runs: alice's new password works, the old one stops.
    let weir = Weir::start(&dir.path(), &[]);
    let c = client_to(&weir, false);
    let url = format!("http://staff.example.com:{}/", weir.http.port());
    let status_with = |user: &str, password: &str| {
        c.get(&url)
            .header("authorization", basic(user, password))
            .send()
            .expect("request")
            .status()
            .as_u16()
    };
    assert_eq!(status_with("alice", "wonder land"), 200);
    dir.write(
        "all.yaml",
        &basic_manifests(&app, &format!("alice:{SHA1_HUNTER2}\n")),
    );
    let swapped = support::wait_until(Duration::from_secs(10), || {
        status_with("alice", "wonder land") == 401
    });
    assert!(swapped.is_some(), "the new Secret was not applied");
    assert_eq!(status_with("alice", "hunter2"), 200);
    assert_eq!(
        status_with("bob", "s3cret pass"),
        401,
        "bob is no longer listed"
    );
    // A Secret broken by an edit closes the route; it does not open it.
    dir.write("all.yaml", &basic_manifests(&app, "# nobody\n"));
    let closed = support::wait_until(Duration::from_secs(10), || {
        status_with("alice", "hunter2") == 503
    });
    assert!(
        closed.is_some(),
        "a Secret with no user must close the route"
    );
}

/// What the authentication service saw of each check.
type Seen = Arc<Mutex<Vec<http::request::Parts>>>;

/// An authentication service: `Bearer good` -> 200 with `X-Auth-Request-User: alice`,
/// `Bearer bad` -> 401 with a Bearer challenge, `Bearer forbidden` -> 403, `Bearer broken`
/// -> 502, `Bearer slow` -> 200 after 3 s; anything else 401 without a challenge.
fn start_auth_service() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let addr = support::http1_server(move |parts: http::request::Parts, _body: Bytes| {
        let record = Arc::clone(&record);
        async move {
            let token = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            record.lock().expect("lock").push(parts);
            let mut resp =
                http::Response::new(Full::new(Bytes::from_static(b"auth service body\n")));
            match token.as_str() {
                "Bearer good" => {
                    resp.headers_mut()
                        .insert("x-auth-request-user", "alice".parse().expect("value"));
                    resp.headers_mut()
                        .insert("x-not-copied", "secret".parse().expect("value"));
                }
                "Bearer slow" => tokio::time::sleep(Duration::from_secs(3)).await,
                "Bearer bad" => {
                    *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                    resp.headers_mut().insert(
                        "www-authenticate",
                        "Bearer realm=\"shop\"".parse().expect("value"),
                    );
                }
                "Bearer forbidden" => *resp.status_mut() = http::StatusCode::FORBIDDEN,
                "Bearer broken" => *resp.status_mut() = http::StatusCode::BAD_GATEWAY,
                _ => *resp.status_mut() = http::StatusCode::UNAUTHORIZED,
            }
            resp
        }
    });
    (addr, seen)
}

/// `auth-url`: the service is asked with the request's method, URI and fields (no body);
/// a 2xx lets the request on with the `auth-response-headers` fields copied (a client's
/// own copy of such a field never reaches the upstream); 401 and 403 go back to the client
/// (401 with the service's challenge, or a redirect to `auth-signin`); a service that fails,
/// answers another status, is down or too slow gives 500 and never lets the request on.
#[test]
fn external_auth_follows_the_services_answer_and_fails_closed() {
    let app = Echo::start("app");
    let (auth, seen) = start_auth_service();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let check = format!("http://127.0.0.1:{}/check?src=weir", auth.port());
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(service_yaml("demo", "app", &[app.addr])
            + &demo_ingress(
                "api",
                "api.example.com",
                &format!("nginx.ingress.kubernetes.io/auth-url: \"{check}\", nginx.ingress.kubernetes.io/auth-response-headers: X-Auth-Request-User, nginx.ingress.kubernetes.io/proxy-read-timeout: \"1\""),
            )
            + &demo_ingress(
                "login",
                "login.example.com",
                &format!("nginx.ingress.kubernetes.io/auth-url: \"{check}\", nginx.ingress.kubernetes.io/auth-signin: \"https://sso.example.com/start\""),
            )
            + &demo_ingress(
                "down",
                "down.example.com",
                &format!("nginx.ingress.kubernetes.io/auth-url: \"http://{closed_addr}/check\""),
            )
            + &demo_ingress(
                "snippet",
                "staff.example.com",
                &format!("nginx.ingress.kubernetes.io/auth-url: \"{check}\", nginx.ingress.kubernetes.io/auth-snippet: \"proxy_set_header X-A b;\""),
            )),
    );
    for path in ["direct", "pingora"] {
        let weir = Weir::start(&dir.path(), &["--http1-path", path]);
        for http2 in [false, true] {
            let case = format!("{path}, http2 {http2}");
            let c = client_to(&weir, http2);
            let port = weir.http.port();
            let send = |method: &str, host: &str, path: &str, token: &str| {
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                c.request(method, format!("http://{host}:{port}{path}"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("x-auth-request-user", "mallory")
                    .body("the body")
                    .send()
                    .expect("request")
            };
            seen.lock().expect("lock").clear();
            let ok = send("POST", "api.example.com", "/orders?id=7", "good");
            assert_eq!(ok.status().as_u16(), 200, "{case}");
            let echoed: serde_json::Value = ok.json().expect("echo");
            assert_eq!(echoed["method"], "POST", "{case}");
            assert_eq!(
                echoed["headers"]["x-auth-request-user"], "alice",
                "{case}: {echoed}"
            );
            assert!(echoed["headers"].get("x-not-copied").is_none(), "{case}");
            {
                let seen = seen.lock().expect("lock");
                let asked = seen.last().expect("the service was asked");
                assert_eq!(asked.method, http::Method::POST, "{case}");
                assert_eq!(
                    asked.uri.path_and_query().map(|p| p.as_str()),
                    Some("/check?src=weir")
                );
                let field = |name: &str| {
                    asked
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                assert_eq!(
                    field("x-original-url"),
                    format!("http://api.example.com:{port}/orders?id=7"),
                    "{case}"
                );
                assert_eq!(field("x-original-method"), "POST");
                assert_eq!(field("x-auth-request-redirect"), "/orders?id=7");
                assert_eq!(field("authorization"), "Bearer good");
                assert_eq!(field("host"), format!("127.0.0.1:{}", auth.port()));
                assert_eq!(field("content-length"), "0", "no body goes to the service");
                assert_eq!(field("x-real-ip"), "127.0.0.1");
            }
            // The service's own answers.
            let bad = send("GET", "api.example.com", "/", "bad");
            assert_eq!(bad.status().as_u16(), 401, "{case}");
            assert_eq!(
                bad.headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().expect("ascii")),
                Some("Bearer realm=\"shop\"")
            );
            assert_eq!(
                send("GET", "api.example.com", "/", "forbidden")
                    .status()
                    .as_u16(),
                403,
                "{case}"
            );
            assert_eq!(
                send("GET", "api.example.com", "/", "broken")
                    .status()
                    .as_u16(),
                500,
                "{case}"
            );
            let started = std::time::Instant::now();
            assert_eq!(
                send("GET", "api.example.com", "/", "slow")
                    .status()
                    .as_u16(),
                500,
                "{case}"
            );
            assert!(
                started.elapsed() < Duration::from_millis(2800),
                "{case}: the read timeout (1 s) ends the check"
            );
            // auth-signin: the service's 401 becomes a redirect carrying where the client was.
            let signin = send("GET", "login.example.com", "/cart?x=1", "bad");
            let (status, location) = support::status_and_location(&signin);
            assert_eq!(status, 302, "{case}");
            assert_eq!(
                location,
                format!("https://sso.example.com/start?rd=http%3A%2F%2Flogin.example.com%3A{port}%2Fcart%3Fx%3D1"),
                "{case}"
            );
            assert_eq!(
                send("GET", "login.example.com", "/", "good")
                    .status()
                    .as_u16(),
                200,
                "{case}"
            );
            // A service that is down, and an auth-snippet weir will not run: never open.
            assert_eq!(
                send("GET", "down.example.com", "/", "good")
                    .status()
                    .as_u16(),
                500,
                "{case}"
            );
            assert_eq!(
                send("GET", "staff.example.com", "/", "good")
                    .status()
                    .as_u16(),
                503,
                "{case}"
            );
        }
        // Two protocols: denied (401, 403, sign-in) three times each, failed (502, slow, down) three.
        assert_eq!(
            weir.metric("weir_requests_rejected_total{reason=\"auth_denied\"}"),
            Some(6.0)
        );
        assert_eq!(
            weir.metric("weir_requests_rejected_total{reason=\"auth_failed\"}"),
            Some(6.0)
        );
        assert_eq!(
            weir.metric("weir_auth_duration_seconds_count{kind=\"external\",result=\"allowed\"}"),
            Some(4.0)
        );
        assert_eq!(
            weir.metric("weir_auth_duration_seconds_count{kind=\"external\",result=\"error\"}"),
            Some(6.0)
        );
    }
}
