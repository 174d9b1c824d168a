//! End to end: `weir.dev/backend-protocol: https` — TLS to real upstream processes with
//! certificates from a CA made for the test, verified by default (chain to
//! `--upstream-ca-file` and the Service's in-cluster name), with an explicit opt-out and a
//! server-name override.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use support::{client, Echo, ManifestDir, Weir};
use weir_testsupport::tls::TestCa;

/// An HTTPS echo serving a certificate for `names` signed by `ca`.
fn tls_echo(service: &str, ca: &TestCa, names: &[&str], dir: &Path) -> Echo {
    let leaf = ca.leaf(names).expect("leaf certificate");
    let (cert, key) = (
        dir.join(format!("{service}.crt")),
        dir.join(format!("{service}.key")),
    );
    std::fs::write(&cert, leaf.cert).expect("write cert");
    std::fs::write(&key, leaf.key).expect("write key");
    Echo::start_with(
        service,
        &[
            "--tls-cert",
            cert.to_str().expect("utf8"),
            "--tls-key",
            key.to_str().expect("utf8"),
        ],
    )
}

fn https_ingress(name: &str, host: &str, service: &str, extra: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: demo\n  annotations:\n    weir.dev/backend-protocol: https\n    weir.dev/retries: \"0\"\n{extra}spec:\n  ingressClassName: weir\n  rules:\n  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{name: http}}}}}}}}]}}\n---\n"
    )
}

#[test]
fn https_upstreams_are_verified_by_default_with_an_explicit_opt_out() {
    let ca = TestCa::new("weir test CA").expect("CA");
    let other_ca = TestCa::new("someone else's CA").expect("CA");
    let dir = ManifestDir::new();
    let certs = dir.root.path();
    let ca_file = certs.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");

    // A certificate for the Service's in-cluster name, one for another name, one from an
    // untrusted CA.
    let app = tls_echo("app", &ca, &["app.demo.svc"], certs);
    let misnamed = tls_echo("misnamed", &ca, &["app.demo.svc"], certs);
    let stranger = tls_echo("stranger", &other_ca, &["stranger.demo.svc"], certs);
    let plain = Echo::start("plain");
    let mut yaml = String::new();
    for (name, echo) in [
        ("app", &app),
        ("misnamed", &misnamed),
        ("stranger", &stranger),
        ("plain", &plain),
    ] {
        yaml += &support::service_yaml("demo", name, &[echo.addr]);
    }
    yaml += &https_ingress("app", "app.example.com", "app", "");
    yaml += &https_ingress("misnamed", "misnamed.example.com", "misnamed", "");
    yaml += &https_ingress(
        "unverified",
        "unverified.example.com",
        "misnamed",
        "    weir.dev/backend-tls-verify: \"false\"\n",
    );
    yaml += &https_ingress(
        "renamed",
        "renamed.example.com",
        "misnamed",
        "    weir.dev/backend-tls-server-name: app.demo.svc\n",
    );
    yaml += &https_ingress("stranger", "stranger.example.com", "stranger", "");
    yaml += &https_ingress("plain", "plain.example.com", "plain", "");
    dir.write("all.yaml", &yaml);
    let weir = Weir::start(
        &dir.path(),
        &["--upstream-ca-file", ca_file.to_str().expect("utf8")],
    );
    let c = client();

    // Trusted chain, right name: served over TLS with the Service's name as SNI.
    let body = weir.echo(&c, "app.example.com", "/");
    assert_eq!(body["tls"], true, "{body}");
    assert_eq!(body["sni"], "app.demo.svc", "{body}");
    assert_eq!(body["service"], "app");
    // ALPN: the upstream offers h2, so weir speaks HTTP/2 to it (what gRPC over TLS needs).
    assert_eq!(body["proto"], "HTTP/2.0", "{body}");

    // Right CA, wrong name: refused (502), unless verification is turned off or the name
    // to verify is given.
    assert_eq!(weir.get(&c, "misnamed.example.com", "/").0, 502);
    let body = weir.echo(&c, "unverified.example.com", "/");
    assert_eq!(
        (body["tls"].clone(), body["service"].clone()),
        (true.into(), "misnamed".into())
    );
    let body = weir.echo(&c, "renamed.example.com", "/");
    assert_eq!(body["sni"], "app.demo.svc", "{body}");

    // A CA weir does not trust: refused; a plain-HTTP upstream behind https: refused.
    assert_eq!(weir.get(&c, "stranger.example.com", "/").0, 502);
    assert_eq!(weir.get(&c, "plain.example.com", "/").0, 502);

    // Each refusal is counted as a TLS error of its Service and logged with the upstream.
    for service in ["misnamed", "stranger", "plain"] {
        let errors = weir
            .metric(&format!(
                r#"weir_upstream_errors_total{{kind="tls",service="{service}"}}"#
            ))
            .unwrap_or(0.0);
        assert!(errors >= 1.0, "{service}: {errors} TLS errors counted");
    }
    let log = weir.access_log_of(6);
    let refused = log
        .iter()
        .find(|l| l["host"] == "stranger.example.com")
        .expect("logged");
    assert_eq!(refused["status"], 502, "{refused}");
    assert_eq!(refused["upstream"], stranger.addr.to_string(), "{refused}");
}
