//! End to end: the HTTPS listener. Certificates come from `kubernetes.io/tls` Secrets named
//! in Ingress `spec.tls`, chosen by SNI (exact and wildcard), swapped when a Secret changes
//! without a restart or a failed in-flight request; bad Secrets are rejected alone; HTTP/2
//! by ALPN; plain HTTP to a TLS host is redirected. Clients: a rustls client (to see the
//! certificate served), curl (verifying it), h2load.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;
use support::{client, Echo, ManifestDir, Weir};
use weir_testsupport::process::free_port;
use weir_testsupport::tls::{LeafPem, TestCa};

/// Accepts any certificate: these tests look at *which* certificate is served; curl checks
/// that it verifies.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One HTTP/1.1 GET over TLS with `sni` (Host header too): the leaf certificate served
/// and the whole response.
fn tls_get(port: u16, sni: &str, path: &str) -> (Vec<u8>, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    // A peer closing without close_notify ends the read with an error after the body.
    let _ = tls.read_to_string(&mut response);
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a certificate was served");
    (leaf, response)
}

fn der(leaf: &LeafPem) -> Vec<u8> {
    CertificateDer::from_pem_slice(leaf.cert.as_bytes())
        .expect("PEM")
        .to_vec()
}

fn tls_secret(name: &str, leaf: &LeafPem) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: demo}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(&leaf.cert),
        indent(&leaf.key)
    )
}

fn tls_ingress(name: &str, host: &str, secret: &str, extra_annotations: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: demo\n  annotations: {{{extra_annotations}}}\nspec:\n  ingressClassName: weir\n  tls: [{{hosts: [\"{host}\"], secretName: {secret}}}]\n  rules:\n  - host: \"{host}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{name: http}}}}}}}}]}}\n---\n"
    )
}

struct Site {
    ca: TestCa,
    shop: LeafPem,
    wild: LeafPem,
    broken: LeafPem,
    expired: LeafPem,
}

impl Site {
    fn new() -> Site {
        let ca = TestCa::new("weir test CA").expect("CA");
        let shop = ca.leaf(&["shop.example.com"]).expect("leaf");
        let wild = ca.leaf(&["*.apps.example.com"]).expect("leaf");
        // A certificate with somebody else's key.
        let other = ca.leaf(&["broken.example.com"]).expect("leaf");
        let broken = LeafPem {
            cert: other.cert,
            key: shop.key.clone(),
        };
        let expired = ca.expired_leaf(&["old.example.com"]).expect("leaf");
        Site {
            ca,
            shop,
            wild,
            broken,
            expired,
        }
    }

    fn manifests(&self, app: &Echo, shop: &LeafPem) -> String {
        support::service_yaml("demo", "app", &[app.addr])
            + &tls_secret("shop-tls", shop)
            + &tls_secret("wild-tls", &self.wild)
            + &tls_secret("broken-tls", &self.broken)
            + &tls_secret("old-tls", &self.expired)
            + &tls_ingress("shop", "shop.example.com", "shop-tls", "")
            + &tls_ingress("apps", "*.apps.example.com", "wild-tls", "")
            + &tls_ingress("broken", "broken.example.com", "broken-tls", "")
            + &tls_ingress("old", "old.example.com", "old-tls", "")
            + &tls_ingress(
                "open",
                "open.example.com",
                "shop-tls",
                "weir.dev/ssl-redirect: \"false\"",
            )
            + &tls_ingress(
                "nginx-open",
                "nginx-open.example.com",
                "shop-tls",
                "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"",
            )
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: forced\n  namespace: demo\n  annotations: {nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: forced.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}]}\n---\n"
    }
}

fn start(dir: &ManifestDir) -> (Weir, u16) {
    let port = free_port();
    let weir = Weir::start(
        &dir.path(),
        &[
            "--https-listen",
            &format!("127.0.0.1:{port}"),
            "--reload-debounce",
            "100ms",
        ],
    );
    (weir, port)
}

#[test]
fn certificates_follow_sni_and_secrets_change_without_a_restart() {
    let site = Site::new();
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write("all.yaml", &site.manifests(&app, &site.shop));
    let (weir, port) = start(&dir);

    // Exact and wildcard names get their Secret's certificate.
    let (served, response) = tls_get(port, "shop.example.com", "/");
    assert_eq!(served, der(&site.shop));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\"x-forwarded-proto\":\"https\""),
        "{response}"
    );
    assert_eq!(tls_get(port, "x.apps.example.com", "/").0, der(&site.wild));
    // Unknown names, a Secret with a foreign key and an expired one: the default
    // certificate; the hosts still answer.
    let (default, _) = tls_get(port, "unknown.example.com", "/");
    assert_ne!(default, der(&site.shop));
    for host in ["broken.example.com", "old.example.com"] {
        let (served, response) = tls_get(port, host, "/");
        assert_eq!(served, default, "{host}");
        assert!(response.starts_with("HTTP/1.1 200"), "{host}: {response}");
    }
    // ...and the bad Secrets are reported, each alone, with the reason.
    let log = weir.log_text();
    assert!(
        log.contains("Secret demo/broken-tls") && log.contains("does not belong"),
        "{log}"
    );
    assert!(
        log.contains("Secret demo/old-tls") && log.contains("expired"),
        "{log}"
    );
    assert_eq!(
        weir.metric(r#"weir_config_errors_total{kind="invalid_object"}"#),
        Some(2.0)
    );

    // curl verifies the chain and name, over HTTP/2 and HTTP/1.1.
    let ca_file = dir.root.path().join("ca.pem");
    std::fs::write(&ca_file, site.ca.cert_pem()).expect("write CA");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                flag,
                "--cacert",
                ca_file.to_str().expect("utf8"),
                "--resolve",
                &format!("shop.example.com:{port}:127.0.0.1"),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                &format!("https://shop.example.com:{port}/"),
            ])
            .output()
            .expect("curl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout,
            format!("200 {version}"),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A body of no declared length (streamed: over HTTP/2 weir's server hands it to
    // Pingora) reaches the upstream marked as having come over TLS, from the client.
    let mut upload = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--cacert",
            ca_file.to_str().expect("utf8"),
            "--resolve",
            &format!("shop.example.com:{port}:127.0.0.1"),
            "-X",
            "POST",
            "-T",
            "-",
            &format!("https://shop.example.com:{port}/upload"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    {
        use std::io::Write;
        let mut stdin = upload.stdin.take().expect("stdin");
        stdin.write_all(b"hello").expect("write body");
    }
    let out = upload.wait_with_output().expect("curl");
    let echoed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("echo json");
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["body_bytes"], 5);
    assert!(
        echoed["headers"].get("content-length").is_none(),
        "{echoed}"
    );
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https", "{echoed}");
    assert_eq!(
        echoed["headers"]["x-forwarded-for"], "127.0.0.1",
        "{echoed}"
    );

    // A long request is in flight when the Secret changes: it completes, and new
    // handshakes get the new certificate.
    let long = std::thread::spawn(move || tls_get(port, "shop.example.com", "/?delay_ms=1500"));
    std::thread::sleep(Duration::from_millis(300));
    let renewed = site.ca.leaf(&["shop.example.com"]).expect("leaf");
    dir.write("all.yaml", &site.manifests(&app, &renewed));
    let swapped = support::wait_until(Duration::from_secs(5), || {
        tls_get(port, "shop.example.com", "/").0 == der(&renewed)
    });
    assert!(
        swapped.is_some(),
        "the renewed certificate was never served"
    );
    let (_, response) = long.join().expect("long request");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn plain_http_to_a_tls_host_is_redirected_with_path_and_query() {
    let site = Site::new();
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write("all.yaml", &site.manifests(&app, &site.shop));
    let (weir, _) = start(&dir);
    assert_eq!(
        weir.redirect_of("shop.example.com:8080", "/cart/items?id=7&x=y"),
        (
            308,
            "https://shop.example.com/cart/items?id=7&x=y".to_string()
        )
    );
    // ssl-redirect "false" (weir's or ingress-nginx's) serves plain HTTP; hosts without TLS
    // are not redirected unless ingress-nginx's force-ssl-redirect is "true".
    assert_eq!(weir.get(&client(), "open.example.com", "/").0, 200);
    assert_eq!(weir.get(&client(), "nginx-open.example.com", "/").0, 200);
    assert_eq!(
        weir.redirect_of("forced.example.com", "/a?b=c"),
        (308, "https://forced.example.com/a?b=c".to_string())
    );
}

#[test]
fn h2load_against_the_tls_listener_completes_without_errors() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(support::service_yaml("demo", "app", &[app.addr])
            + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: all, namespace: demo}\nspec:\n  ingressClassName: weir\n  defaultBackend: {service: {name: app, port: {name: http}}}\n"),
    );
    let (_weir, port) = start(&dir);
    // 2,000 requests on 8 connections, 4 streams each, over TLS with ALPN h2 (the default
    // certificate: h2load does not verify).
    let out = std::process::Command::new("h2load")
        .args([
            "-n",
            "2000",
            "-c",
            "8",
            "-m",
            "4",
            &format!("https://127.0.0.1:{port}/"),
        ])
        .output()
        .expect("h2load (apt-get install nghttp2-client; scripts/prereqs.sh does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{}",
        stdout
            .lines()
            .filter(|l| l.starts_with("finished in") || l.starts_with("requests:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains("Application protocol: h2"), "{stdout}");
    assert!(
        stdout.contains(
            "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"
        ),
        "{stdout}"
    );
}

#[test]
fn the_default_certificate_can_come_from_a_secret() {
    let site = Site::new();
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write("all.yaml", &site.manifests(&app, &site.shop));
    let port = free_port();
    let _weir = Weir::start(
        &dir.path(),
        &[
            "--https-listen",
            &format!("127.0.0.1:{port}"),
            "--default-certificate",
            "demo/wild-tls",
        ],
    );
    // Unknown names, no SNI-matching Secret and unusable Secrets all get demo/wild-tls.
    for host in ["unknown.example.com", "broken.example.com"] {
        assert_eq!(tls_get(port, host, "/").0, der(&site.wild), "{host}");
    }
    assert_eq!(tls_get(port, "shop.example.com", "/").0, der(&site.shop));
}

/// Gateway API HTTPS listeners: a listener with a hostname serves its `certificateRefs`
/// Secret for that name; one without a hostname serves it for the names of the routes
/// attached to it; the routes are reached over TLS.
#[test]
fn gateway_https_listeners_serve_their_certificate_secrets() {
    let ca = TestCa::new("weir test CA").expect("CA");
    let named = ca.leaf(&["gw.example.com"]).expect("leaf");
    let unnamed = ca.leaf(&["routes.example.com"]).expect("leaf");
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(support::service_yaml("demo", "app", &[app.addr])
            + &tls_secret("gw-tls", &named)
            + &tls_secret("routes-tls", &unnamed)
            + &support::weir_gateway(
                "demo",
                "[{name: named, port: 443, protocol: HTTPS, hostname: gw.example.com, tls: {certificateRefs: [{name: gw-tls}]}}, {name: unnamed, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: routes-tls}]}}]",
            )
            + r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: demo}
spec:
  parentRefs: [{name: gw, sectionName: named}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: routes, namespace: demo}
spec:
  parentRefs: [{name: gw, sectionName: unnamed}]
  hostnames: [routes.example.com]
  rules: [{backendRefs: [{name: app, port: 80}]}]
"#),
    );
    let (weir, port) = start(&dir);
    let (served, response) = tls_get(port, "gw.example.com", "/");
    assert_eq!(served, der(&named));
    // Attached only through HTTPS listeners: plain HTTP is redirected, not served.
    let mut plain = TcpStream::connect(weir.http).expect("connect");
    write!(
        plain,
        "GET /page HTTP/1.1\r\nHost: gw.example.com\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = plain.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("location: https://gw.example.com"),
        "{answer}"
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (served, response) = tls_get(port, "routes.example.com", "/");
    assert_eq!(served, der(&unnamed));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
