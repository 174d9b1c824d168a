//! Objects -> RoutingSnapshot: class selection, validation, precedence, port resolution,
//! endpoint conditions. Matching itself (which rule a request hits) is tested with the
//! router in weir-proxy.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use weir_discovery::objects::parse_manifest;
use weir_discovery::{
    translate, BackendKey, ClusterObjects, HostMatch, PathMatch, RoutingSnapshot, TranslateOptions,
};

fn objects(yaml: &str) -> ClusterObjects {
    let parsed = parse_manifest(yaml).expect("fixture is valid YAML");
    assert!(
        parsed.rejected.is_empty(),
        "fixture documents: {:?}",
        parsed.rejected
    );
    parsed.objects
}

fn snapshot(yaml: &str) -> RoutingSnapshot {
    translate(&objects(yaml), &TranslateOptions::default())
}

fn ingress(name: &str, class_line: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: ns\n{class_line}spec:\n{body}\n---\n"
    )
}

const WEIR_CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: weir}\nspec: {controller: weir.dev/ingress-controller}\n---\n";

const SIMPLE_SPEC: &str =
    "  ingressClassName: weir\n  defaultBackend: {service: {name: s, port: {number: 80}}}";

fn key(service: &str, port: &str) -> BackendKey {
    BackendKey {
        namespace: "ns".into(),
        service: service.into(),
        port: port.into(),
        cluster_ip: false,
    }
}

fn accepted_names(s: &RoutingSnapshot) -> Vec<String> {
    s.ingresses.iter().map(|r| r.name.clone()).collect()
}

#[test]
fn class_by_spec_name_resolved_through_ingress_class() {
    // Our class with our controller: served.
    let s = snapshot(&(WEIR_CLASS.to_string() + &ingress("a", "", SIMPLE_SPEC)));
    assert_eq!(accepted_names(&s), ["a"]);

    // A class named like ours but owned by another controller: not ours.
    let other = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: weir}\nspec: {controller: k8s.io/ingress-nginx}\n---\n";
    let s = snapshot(&(other.to_string() + &ingress("a", "", SIMPLE_SPEC)));
    assert!(s.ingresses.is_empty());

    // Another class name: not ours.
    let s = snapshot(&ingress(
        "a",
        "",
        "  ingressClassName: nginx\n  defaultBackend: {service: {name: s, port: {number: 80}}}",
    ));
    assert!(s.ingresses.is_empty());

    // Our class name without an IngressClass object (manifests without one): served.
    let s = snapshot(&ingress("a", "", SIMPLE_SPEC));
    assert_eq!(accepted_names(&s), ["a"]);
}

#[test]
fn class_by_legacy_annotation_and_flag() {
    let spec = "  defaultBackend: {service: {name: s, port: {number: 80}}}";
    let ours = "  annotations: {kubernetes.io/ingress.class: weir}\n";
    let theirs = "  annotations: {kubernetes.io/ingress.class: nginx}\n";
    let yaml = ingress("ours", ours, spec) + &ingress("theirs", theirs, spec);
    let s = snapshot(&yaml);
    assert_eq!(accepted_names(&s), ["ours"]);

    // --ingress-class decides which class is ours.
    let s = translate(
        &objects(&yaml),
        &TranslateOptions {
            ingress_class: "nginx".into(),
            watch_namespace: None,
            ..TranslateOptions::default()
        },
    );
    assert_eq!(accepted_names(&s), ["theirs"]);
}

/// ingress-nginx's class as it stands (`IngressClass nginx` with controller
/// `k8s.io/ingress-nginx`): not weir's by class name alone, weir's with
/// `--ingress-controller k8s.io/ingress-nginx`, and then also its classless Ingresses when
/// that class is the default.
#[test]
fn ingress_nginx_class_is_taken_over_with_its_controller_name() {
    let nginx_class = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: nginx\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: k8s.io/ingress-nginx}\n---\n";
    let classless = "  defaultBackend: {service: {name: s, port: {number: 80}}}";
    let named =
        "  ingressClassName: nginx\n  defaultBackend: {service: {name: s, port: {number: 80}}}";
    let yaml = nginx_class.to_string()
        + &ingress("named", "", named)
        + &ingress("classless", "", classless);
    let class_only = TranslateOptions {
        ingress_class: "nginx".into(),
        ..TranslateOptions::default()
    };
    let s = translate(&objects(&yaml), &class_only);
    assert!(
        s.ingresses.is_empty(),
        "another controller's class: {:?}",
        s.ingresses
    );
    let taken_over = TranslateOptions {
        ingress_class: "nginx".into(),
        controller: "k8s.io/ingress-nginx".into(),
        ..TranslateOptions::default()
    };
    let s = translate(&objects(&yaml), &taken_over);
    assert_eq!(accepted_names(&s), ["classless", "named"]);
}

#[test]
fn classless_ingresses_only_with_a_default_class() {
    let spec = "  defaultBackend: {service: {name: s, port: {number: 80}}}";
    let s = snapshot(&(WEIR_CLASS.to_string() + &ingress("a", "", spec)));
    assert!(s.ingresses.is_empty(), "no default class: not ours");

    let default_class = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: weir\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: weir.dev/ingress-controller}\n---\n";
    let s = snapshot(&(default_class.to_string() + &ingress("a", "", spec)));
    assert_eq!(accepted_names(&s), ["a"]);
}

#[test]
fn watch_namespace_restricts() {
    let yaml = ingress("a", "", SIMPLE_SPEC)
        + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: b, namespace: other}\nspec:\n  ingressClassName: weir\n  defaultBackend: {service: {name: s, port: {number: 80}}}\n";
    let s = translate(
        &objects(&yaml),
        &TranslateOptions {
            ingress_class: "weir".into(),
            watch_namespace: Some("other".into()),
            ..TranslateOptions::default()
        },
    );
    assert_eq!(accepted_names(&s), ["b"]);
}

#[test]
fn rules_hosts_and_path_types() {
    let s = snapshot(&ingress(
        "a",
        "",
        r#"  ingressClassName: weir
  rules:
  - host: foo.example.com
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: s, port: {number: 80}}}}
      - {path: /prefix, pathType: Prefix, backend: {service: {name: s, port: {name: http}}}}
      - {path: /impl, pathType: ImplementationSpecific, backend: {service: {name: s, port: {number: 80}}}}
      - {pathType: ImplementationSpecific, backend: {service: {name: s, port: {number: 80}}}}
  - host: "*.example.com"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: w, port: {number: 8080}}}}
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: any, port: {number: 80}}}}
  - host: nohttp.example.com"#,
    ));
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    let rules: Vec<_> = s
        .routes
        .iter()
        .map(|r| (r.host.clone(), r.path.clone(), r.backend.clone()))
        .collect();
    let foo = HostMatch::Exact("foo.example.com".into());
    assert_eq!(
        rules,
        vec![
            (
                foo.clone(),
                PathMatch::Exact("/exact".into()),
                key("s", "80")
            ),
            (
                foo.clone(),
                PathMatch::Prefix("/prefix".into()),
                key("s", "http")
            ),
            (
                foo.clone(),
                PathMatch::Prefix("/impl".into()),
                key("s", "80")
            ),
            (foo, PathMatch::Prefix("/".into()), key("s", "80")),
            (
                HostMatch::Wildcard("example.com".into()),
                PathMatch::Prefix("/".into()),
                key("w", "8080")
            ),
            (
                HostMatch::Any,
                PathMatch::Prefix("/".into()),
                key("any", "80")
            ),
        ]
    );
}

#[test]
fn regex_paths_need_the_annotation_and_must_compile() {
    let body = r#"  ingressClassName: weir
  rules:
  - http:
      paths:
      - {path: "/api/v[0-9]+", pathType: ImplementationSpecific, backend: {service: {name: s, port: {number: 80}}}}"#;
    let regex_on = "  annotations: {weir.dev/path-regex: \"true\"}\n";
    let s = snapshot(&ingress("a", regex_on, body));
    assert_eq!(s.routes[0].path, PathMatch::Regex("/api/v[0-9]+".into()));

    let broken = body.replace("[0-9]+", "[0-9");
    let s = snapshot(&ingress("a", regex_on, &broken));
    assert!(s.routes.is_empty());
    assert!(
        s.rejected[0].reason.contains("regular expression"),
        "{:?}",
        s.rejected
    );

    let s = snapshot(&ingress(
        "a",
        "  annotations: {weir.dev/path-regex: \"yes\"}\n",
        body,
    ));
    assert!(
        s.rejected[0].reason.contains("weir.dev/path-regex"),
        "{:?}",
        s.rejected
    );
}

#[test]
fn invalid_ingresses_are_rejected_alone_with_reasons() {
    let good = ingress("good", "", SIMPLE_SPEC);
    let cases = [
        ("  ingressClassName: weir", "rules or a defaultBackend"),
        (
            "  ingressClassName: weir\n  rules:\n  - host: 10.0.0.1\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}]}",
            "not an IP address",
        ),
        (
            "  ingressClassName: weir\n  rules:\n  - host: \"*\"\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}]}",
            "host",
        ),
        (
            "  ingressClassName: weir\n  rules:\n  - http: {paths: [{path: foo, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}]}",
            "must begin with '/'",
        ),
        (
            "  ingressClassName: weir\n  rules:\n  - http: {paths: [{path: /a/../b, pathType: Exact, backend: {service: {name: s, port: {number: 80}}}}]}",
            "must not contain",
        ),
        (
            "  ingressClassName: weir\n  rules:\n  - http: {paths: [{path: /a%2Fb, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}]}",
            "must not contain",
        ),
        (
            "  ingressClassName: weir\n  rules:\n  - http: {paths: [{path: /a, pathType: Regex, backend: {service: {name: s, port: {number: 80}}}}]}",
            "pathType \"Regex\"",
        ),
        (
            "  ingressClassName: weir\n  rules:\n  - http: {paths: [{path: /a, pathType: Prefix, backend: {service: {name: s, port: {number: 80, name: http}}}}]}",
            "cannot set both port name & port number",
        ),
        (
            "  ingressClassName: weir\n  rules:\n  - http: {paths: [{path: /a, pathType: Prefix, backend: {service: {name: s, port: {}}}}]}",
            "port name or number is required",
        ),
        (
            "  ingressClassName: weir\n  rules:\n  - http: {paths: [{path: /a, pathType: Prefix, backend: {resource: {kind: Bucket, name: b}}}]}",
            "resource backends are not supported",
        ),
    ];
    for (spec, reason) in cases {
        let s = snapshot(&(good.clone() + &ingress("bad", "", spec)));
        assert_eq!(
            accepted_names(&s),
            ["good"],
            "the valid Ingress stays ({spec})"
        );
        assert_eq!(s.rejected.len(), 1, "{spec}");
        assert_eq!(s.rejected[0].object.to_string(), "Ingress ns/bad");
        assert!(
            s.rejected[0].reason.contains(reason),
            "expected {reason:?} in {:?}",
            s.rejected[0].reason
        );
    }
}

#[test]
fn oldest_ingress_wins_conflicts_and_default_backend() {
    let older = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: zzz-older, namespace: ns, creationTimestamp: \"2024-01-01T00:00:00Z\"}\nspec:\n  ingressClassName: weir\n  defaultBackend: {service: {name: old, port: {number: 80}}}\n  rules:\n  - host: a.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: old, port: {number: 80}}}}]}\n---\n";
    let newer = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: aaa-newer, namespace: ns, creationTimestamp: \"2025-01-01T00:00:00Z\"}\nspec:\n  ingressClassName: weir\n  defaultBackend: {service: {name: new, port: {number: 80}}}\n  rules:\n  - host: a.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: new, port: {number: 80}}}}, {path: /x, pathType: Prefix, backend: {service: {name: new, port: {number: 80}}}}]}\n";
    let s = snapshot(&(newer.to_string() + "---\n" + older));
    let root: Vec<_> = s
        .routes
        .iter()
        .filter(|r| r.path == PathMatch::Prefix("/".into()))
        .collect();
    assert_eq!(root.len(), 1);
    assert_eq!(root[0].backend.service, "old");
    assert!(s
        .routes
        .iter()
        .any(|r| r.path == PathMatch::Prefix("/x".into()) && r.backend.service == "new"));
    assert_eq!(
        s.default_backend
            .as_ref()
            .map(|d| d.backend.service.as_str()),
        Some("old")
    );
    assert_eq!(s.rejected.len(), 1);
    assert!(s.rejected[0]
        .reason
        .contains("already defined by Ingress ns/zzz-older"));
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec:
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: admin, port: 9000, targetPort: 9100}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: admin, port: 9100}]
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
  zone: zone-a
- addresses: [10.0.0.2]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.0.0.3]
  conditions: {ready: false, serving: false}
- addresses: [10.0.0.4]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-2, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
- addresses: ["fd00::5"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other-svc, namespace: ns, labels: {kubernetes.io/service-name: t}}
addressType: IPv4
ports: [{name: http, port: 1}]
endpoints: [{addresses: [10.9.9.9]}]
---
apiVersion: v1
kind: Service
metadata: {name: bare, namespace: ns}
spec: {ports: [{port: 80, targetPort: 3000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bare-1, namespace: ns, labels: {kubernetes.io/service-name: bare}}
addressType: IPv4
endpoints: [{addresses: [10.1.1.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: ns}
spec: {type: ExternalName, externalName: example.com}
"#;

fn backend_of(service: &str, port: &str) -> (Vec<String>, Option<String>) {
    let spec = format!(
        "  ingressClassName: weir\n  defaultBackend: {{service: {{name: {service}, port: {}}}}}",
        match port.parse::<u16>() {
            Ok(n) => format!("{{number: {n}}}"),
            Err(_) => format!("{{name: {port}}}"),
        }
    );
    let s = snapshot(&(SERVICES.to_string() + "---\n" + &ingress("a", "", &spec)));
    let backend = s
        .backends
        .get(&key(service, port))
        .expect("backend resolved");
    let endpoints = backend
        .endpoints
        .iter()
        .map(|e| {
            let state = if e.is_routable() {
                "ready"
            } else if e.is_draining() {
                "draining"
            } else {
                "unusable"
            };
            format!("{} {state}", e.addr)
        })
        .collect();
    (endpoints, backend.problem.clone())
}

#[test]
fn service_port_by_name_and_number_resolves_to_slice_ports() {
    let expected_http = vec![
        "10.0.0.1:8080 ready".to_string(),
        "10.0.0.2:8080 draining".to_string(),
        "10.0.0.3:8080 unusable".to_string(),
        "10.0.0.4:8080 ready".to_string(),
        "[fd00::5]:8080 ready".to_string(),
    ];
    assert_eq!(backend_of("s", "http"), (expected_http.clone(), None));
    assert_eq!(
        backend_of("s", "80"),
        (expected_http, None),
        "port number = same port"
    );
    let (admin, _) = backend_of("s", "admin");
    assert_eq!(
        admin,
        vec![
            "10.0.0.1:9100 ready",
            "10.0.0.2:9100 draining",
            "10.0.0.3:9100 unusable",
            "10.0.0.4:9100 ready"
        ]
    );
}

#[test]
fn endpoint_conditions_and_zone_are_carried() {
    let spec =
        "  ingressClassName: weir\n  defaultBackend: {service: {name: s, port: {name: http}}}";
    let s = snapshot(&(SERVICES.to_string() + "---\n" + &ingress("a", "", spec)));
    let eps = &s.backends[&key("s", "http")].endpoints;
    let first = eps
        .iter()
        .find(|e| e.addr == "10.0.0.1:8080".parse::<SocketAddr>().expect("addr"))
        .expect("deduplicated endpoint present");
    assert_eq!(first.zone.as_deref(), Some("zone-a"));
    let draining = eps
        .iter()
        .find(|e| e.addr.ip().to_string() == "10.0.0.2")
        .expect("draining endpoint");
    assert!(draining.terminating && draining.serving && !draining.ready);
}

#[test]
fn slice_without_ports_falls_back_to_numeric_target_port() {
    assert_eq!(
        backend_of("bare", "80"),
        (vec!["10.1.1.1:3000 ready".to_string()], None)
    );
}

#[test]
fn unresolvable_backends_have_problems_but_keep_their_route() {
    let (eps, problem) = backend_of("missing", "80");
    assert!(eps.is_empty());
    assert_eq!(problem.as_deref(), Some("Service ns/missing not found"));
    let (eps, problem) = backend_of("s", "81");
    assert!(eps.is_empty());
    assert_eq!(problem.as_deref(), Some("Service ns/s has no port 81"));
    let (_, problem) = backend_of("ext", "80");
    assert!(problem.unwrap_or_default().contains("ExternalName"));
}

#[test]
fn quickstart_example_translates_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart");
    let source = weir_discovery::manifests::ManifestSource::open(vec![dir.into()])
        .expect("quickstart loads");
    assert!(source.rejected().is_empty());
    let s = translate(&source.objects(), &TranslateOptions::default());
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    assert_eq!(s.ingresses.len(), 2);
    assert!(s.default_backend.is_some());
    assert!(s
        .backends
        .values()
        .all(|b| b.problem.is_none() && !b.endpoints.is_empty()));
}
