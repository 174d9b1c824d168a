//! `weir migrate`: the report on Ingresses written for ingress-nginx, from manifests and from
//! a cluster (the real kube client against the fake API server), with its exit codes.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use support::{kubeconfig_file, ManifestDir};
use weir_testsupport::fakeapi::FakeApiServer;

const EXAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/examples/ingress-nginx.yaml"
);

/// Runs `weir migrate ARGS`: (exit code, stdout, stderr).
fn migrate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("migrate")
        .args(args)
        .output()
        .expect("run weir migrate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The report docs/migrating-from-ingress-nginx.md shows for docs/examples/ingress-nginx.yaml.
const EXPECTED: &str = "\
web/shop: served as ingress-nginx serves it
  nginx.ingress.kubernetes.io/rewrite-target: honoured
  nginx.ingress.kubernetes.io/x-forwarded-prefix: honoured
web/legacy: served, with changes
  nginx.ingress.kubernetes.io/configuration-snippet: not supported: never: raw nginx configuration (refused by design)
  nginx.ingress.kubernetes.io/proxy-buffering: not supported: not yet; the Ingress is served without it
  nginx.ingress.kubernetes.io/ssl-redirect: honoured
api/api-v2: served, with changes
  nginx.ingress.kubernetes.io/use-regex: differs: ingress-nginx would also match the paths of Ingress api/api (same host) as case-insensitive regular expressions; weir matches them as written (annotate them with use-regex)
api/api: served as ingress-nginx serves it
web/moved: skipped: annotation nginx.ingress.kubernetes.io/permanent-redirect: \"https://new.example.com$request_uri\" uses an nginx variable, which weir does not expand
  nginx.ingress.kubernetes.io/permanent-redirect: its value is refused (above)
5 Ingresses: 2 served as ingress-nginx serves them, 3 with changes (docs/migrating-from-ingress-nginx.md)
";

/// The documented example: each annotation judged, the Ingress weir would skip and why, and
/// exit code 1 (something would change). The same report from a cluster holding the same
/// objects.
#[test]
fn the_report_on_the_documented_examples() {
    let (code, stdout, stderr) = migrate(&["--manifests", EXAMPLES]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, EXPECTED);
    let doc = include_str!("../../docs/migrating-from-ingress-nginx.md");
    assert!(doc.contains(EXPECTED), "the guide shows another report");

    let api = FakeApiServer::start().expect("fake API server");
    let examples = std::fs::read_to_string(EXAMPLES).expect("examples");
    api.apply_yaml(&examples).expect("apply");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let (code, from_cluster, stderr) = migrate(&["--kubeconfig", kubeconfig]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(from_cluster, EXPECTED);
    // One namespace only.
    let (_, web_only, _) = migrate(&["--kubeconfig", kubeconfig, "--watch-namespace", "web"]);
    assert!(
        web_only.contains("web/shop") && !web_only.contains("api/"),
        "{web_only}"
    );
}

/// Nothing that would change: exit 0. Other classes are not reported. Sources that cannot be
/// read: one line on stderr, exit 2.
#[test]
fn exit_codes_say_whether_anything_would_change() {
    let dir = ManifestDir::new();
    dir.write(
        "ok.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ok\n  namespace: web\n  annotations: {nginx.ingress.kubernetes.io/app-root: /home}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: ok.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: theirs\n  namespace: web\n  annotations: {nginx.ingress.kubernetes.io/enable-cors: \"true\"}\nspec:\n  ingressClassName: other\n  rules:\n  - host: other.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n",
    );
    let path = dir.path();
    let path = path.to_str().expect("utf-8");
    let (code, stdout, stderr) = migrate(&["--manifests", path]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "web/ok: served as ingress-nginx serves it\n  nginx.ingress.kubernetes.io/app-root: honoured\n1 Ingresses: 1 served as ingress-nginx serves them, 0 with changes\n"
    );

    let (code, _, stderr) = migrate(&["--manifests", "/nonexistent/weir"]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("weir migrate: "), "{stderr}");
    let (code, _, stderr) = migrate(&["--bogus"]);
    assert_eq!(code, Some(2), "{stderr}");
}

/// Annotations weir reads but answers differently from ingress-nginx are differences: rate
/// limits (429 where ingress-nginx answers 503); source ranges and CORS as ingress-nginx.
#[test]
fn rate_limits_are_reported_as_a_difference() {
    let dir = ManifestDir::new();
    dir.write(
        "limited.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: limited\n  namespace: web\n  annotations: {nginx.ingress.kubernetes.io/limit-rps: \"5\", nginx.ingress.kubernetes.io/allowlist-source-range: 10.0.0.0/8, nginx.ingress.kubernetes.io/enable-cors: \"true\"}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: api.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n",
    );
    let path = dir.path();
    let (code, stdout, stderr) = migrate(&["--manifests", path.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stdout,
        "web/limited: served, with changes\n  nginx.ingress.kubernetes.io/allowlist-source-range: honoured\n  nginx.ingress.kubernetes.io/enable-cors: honoured\n  nginx.ingress.kubernetes.io/limit-rps: differs: a client over the limit gets 429 (with Retry-After for a rate), where ingress-nginx answers 503\n1 Ingresses: 0 served as ingress-nginx serves them, 1 with changes (docs/migrating-from-ingress-nginx.md)\n"
    );
}
