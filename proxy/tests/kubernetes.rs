//! End to end: the real `weir` binary watching a fake Kubernetes API server (real HTTP,
//! real list/watch protocol) through the real kube client, routing to real echo upstreams.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;
use support::{client, kubeconfig_file, service_yaml, wait_until, Echo, Weir};
use weir_testsupport::fakeapi::FakeApiServer;

const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: weir}
spec: {controller: weir.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app, namespace: demo}
spec:
  ingressClassName: weir
  rules:
  - host: app.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}
"#;

fn served_by(weir: &Weir, service: &str) -> bool {
    let (status, body) = weir.get(&client(), "app.example.com", "/");
    status == 200 && body.contains(&format!("\"service\":\"{service}\""))
}

#[test]
fn routes_follow_the_api_server_and_survive_its_outages() {
    let blue = Echo::start("blue");
    let green = Echo::start("green");
    let api = FakeApiServer::start().expect("fake API server");
    api.apply_yaml(INGRESS).expect("ingress");
    api.apply_yaml(&service_yaml("demo", "app", &[blue.addr]))
        .expect("service");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());

    let weir = Weir::start_kubernetes(&kubeconfig, &["--reload-debounce", "200ms"]);
    assert!(served_by(&weir, "blue"), "routes from the initial list");

    // A deploy: the EndpointSlice moves to green.
    api.apply_yaml(&service_yaml("demo", "app", &[green.addr]))
        .expect("update");
    let took = wait_until(Duration::from_secs(5), || served_by(&weir, "green"))
        .expect("watch event applied");
    eprintln!("endpoint change live after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // History compacted and watches dropped: the client gets 410 Gone, relists, and goes on.
    api.compact();
    api.drop_watches();
    api.apply_yaml(&service_yaml("demo", "app", &[blue.addr]))
        .expect("update");
    wait_until(Duration::from_secs(15), || served_by(&weir, "blue")).expect("relisted after 410");

    // The API server goes away: the last good routes keep serving and weir stays ready.
    api.set_down(true);
    std::thread::sleep(Duration::from_secs(2));
    assert!(served_by(&weir, "blue"));
    assert_eq!(weir.admin_get("/readyz").0, 200);
    let watch_errors = weir
        .metric(r#"weir_config_errors_total{kind="watch"}"#)
        .unwrap_or(0.0);
    assert!(
        watch_errors >= 1.0,
        "outage not counted: {}",
        weir.log_text()
    );

    // Back: changes flow again.
    api.set_down(false);
    api.apply_yaml(&service_yaml("demo", "app", &[green.addr]))
        .expect("update");
    wait_until(Duration::from_secs(40), || served_by(&weir, "green"))
        .expect("watching again after the outage");

    // Deleting the Ingress removes the route.
    assert!(api.delete("Ingress", "demo", "app"));
    wait_until(Duration::from_secs(5), || {
        weir.get(&client(), "app.example.com", "/").0 == 404
    })
    .expect("route removed");
}

#[test]
fn readiness_waits_for_the_initial_sync() {
    let api = FakeApiServer::start().expect("fake API server");
    api.set_down(true);
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let http = weir_testsupport::process::free_port();
    let admin = weir_testsupport::process::free_port();
    let _weir = weir_testsupport::process::ChildGuard::spawn(
        "weir",
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["--kubeconfig", kubeconfig.to_str().expect("utf-8")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .stderr(std::process::Stdio::null()),
    );
    let admin_addr = format!("127.0.0.1:{admin}").parse().expect("addr");
    assert!(weir_testsupport::process::wait_for_listen(
        admin_addr,
        Duration::from_secs(15)
    ));
    let readyz = || {
        client()
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(readyz(), 503, "not ready before the first sync");
    api.set_down(false);
    wait_until(Duration::from_secs(40), || readyz() == 200)
        .expect("ready after the API server came up");
}

const PUBLISHED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: weir-lb, namespace: ingress}
spec: {type: LoadBalancer, ports: [{port: 80}]}
status: {loadBalancer: {ingress: [{ip: 203.0.113.7}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: not-ours, namespace: demo}
spec:
  ingressClassName: nginx
  defaultBackend: {service: {name: app, port: {number: 80}}}
"#;

fn status_ips(api: &FakeApiServer, name: &str) -> Vec<String> {
    api.get("Ingress", "demo", name)
        .and_then(|i| i.pointer("/status/loadBalancer/ingress").cloned())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.get("ip").and_then(|ip| ip.as_str()).map(str::to_string))
        .collect()
}

#[test]
fn one_elected_replica_writes_ingress_status_only_when_it_changes() {
    let app = Echo::start("app");
    let api = FakeApiServer::start().expect("fake API server");
    api.apply_yaml(INGRESS).expect("ingress");
    api.apply_yaml(PUBLISHED).expect("published service");
    api.apply_yaml(&service_yaml("demo", "app", &[app.addr]))
        .expect("service");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let args = [
        "--publish-service",
        "ingress/weir-lb",
        "--election-namespace",
        "ingress",
    ];
    let first = Weir::start_kubernetes(&kubeconfig, &args);
    let second = Weir::start_kubernetes(&kubeconfig, &args);

    wait_until(Duration::from_secs(15), || {
        status_ips(&api, "app") == ["203.0.113.7"]
    })
    .unwrap_or_else(|| {
        panic!(
            "status not written; logs:\n{}\n{}",
            first.log_text(),
            second.log_text()
        )
    });
    let lease = api.get("Lease", "ingress", "weir-leader").expect("lease");
    let holder = lease
        .pointer("/spec/holderIdentity")
        .and_then(|h| h.as_str())
        .expect("holder")
        .to_string();
    let pids = [first.process.pid(), second.process.pid()].map(|p| format!("weir-{p}"));
    assert!(pids.contains(&holder), "holder {holder} is one of {pids:?}");
    assert!(
        api.get("Ingress", "demo", "not-ours")
            .and_then(|i| i.get("status").cloned())
            .is_none(),
        "another class's Ingress was touched"
    );

    // Written once; rounds every 2 s write nothing more while nothing changes.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(api.status_writes("Ingress", "demo", "app"), 1);
    assert_eq!(api.status_writes("Ingress", "demo", "not-ours"), 0);

    // The leader dies; once its 15 s lease expires the other replica takes over and
    // publishes the new address.
    let (leader, follower) = if holder == pids[0] {
        (first, second)
    } else {
        (second, first)
    };
    drop(leader);
    api.apply_yaml(&PUBLISHED.replace("203.0.113.7", "203.0.113.8"))
        .expect("new address");
    wait_until(Duration::from_secs(30), || {
        status_ips(&api, "app") == ["203.0.113.8"]
    })
    .expect("the follower took over");
    let holder = api.get("Lease", "ingress", "weir-leader").and_then(|l| {
        l.pointer("/spec/holderIdentity")
            .and_then(|h| h.as_str())
            .map(str::to_string)
    });
    assert_eq!(holder, Some(format!("weir-{}", follower.process.pid())));
}

/// An annotation weir does not implement gets a Warning Event of its own
/// (`UnsupportedAnnotation`) on the Ingress, which is served without it; an ingress-nginx
/// annotation that a `weir.dev/*` one overrides gets one too (`AnnotationOverridden`).
#[test]
fn unsupported_and_overridden_annotations_get_events_and_the_ingress_serves() {
    let app = Echo::start("app");
    let api = FakeApiServer::start().expect("fake API server");
    api.apply_yaml(&INGRESS.replace(
        "metadata: {name: app, namespace: demo}",
        "metadata: {name: app, namespace: demo, annotations: {nginx.ingress.kubernetes.io/ssl-passthrough: \"true\", nginx.ingress.kubernetes.io/load-balance: ewma, weir.dev/load-balancer: round-robin}}",
    ))
    .expect("ingress");
    api.apply_yaml(&service_yaml("demo", "app", &[app.addr]))
        .expect("service");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let weir = Weir::start_kubernetes(&kubeconfig, &["--reload-debounce", "100ms"]);
    wait_until(Duration::from_secs(10), || api.list("Event").len() >= 2)
        .unwrap_or_else(|| panic!("no Events; log:\n{}", weir.log_text()));
    let events = api.list("Event");
    let event_of = |reason: &str| {
        events
            .iter()
            .find(|e| e.pointer("/reason").and_then(|v| v.as_str()) == Some(reason))
            .unwrap_or_else(|| panic!("no {reason} Event in {events:?}"))
    };
    let note = |event: &serde_json::Value| {
        assert_eq!(
            event.pointer("/regarding/name").and_then(|v| v.as_str()),
            Some("app")
        );
        event
            .pointer("/note")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let unsupported = note(event_of("UnsupportedAnnotation"));
    assert!(
        unsupported.contains("nginx.ingress.kubernetes.io/ssl-passthrough"),
        "{unsupported}"
    );
    let overridden = note(event_of("AnnotationOverridden"));
    assert!(
        overridden.contains("nginx.ingress.kubernetes.io/load-balance")
            && overridden.contains("weir.dev/load-balancer"),
        "{overridden}"
    );
    assert!(served_by(&weir, "app"));
    assert_eq!(
        weir.metric("weir_config_unsupported_annotations_total"),
        Some(1.0)
    );
    assert_eq!(
        weir.metric("weir_config_errors_total{kind=\"annotation_overridden\"}"),
        Some(1.0)
    );
    assert!(weir
        .log_text()
        .contains("is overridden by weir.dev/load-balancer"));
}

/// Basic auth from an Opaque Secret watched on the API server (written with `stringData`,
/// read back as `data`): the password works; the Secret edited, the new one works and the
/// old one stops; the Secret deleted, the route closes (503) with an `AuthProblem` Event.
#[test]
fn basic_auth_follows_its_secret_on_the_api_server() {
    let app = Echo::start("app");
    let api = FakeApiServer::start().expect("fake API server");
    let secret = |hash: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: demo}}\ntype: Opaque\nstringData: {{auth: \"alice:{hash}\"}}\n"
        )
    };
    // `{SHA}` of hunter2, then of "wonder land" (openssl sha1 | base64).
    api.apply_yaml(&secret("{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0="))
        .expect("secret");
    api.apply_yaml(&INGRESS.replace(
        "metadata: {name: app, namespace: demo}",
        "metadata: {name: app, namespace: demo, annotations: {nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: users}}",
    ))
    .expect("ingress");
    api.apply_yaml(&service_yaml("demo", "app", &[app.addr]))
        .expect("service");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let weir = Weir::start_kubernetes(&kubeconfig, &["--reload-debounce", "100ms"]);
    let status = |password: &str| {
        client()
            .get(weir.url("/"))
            .header("host", "app.example.com")
            .basic_auth("alice", Some(password))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(status("hunter2"), 200, "{}", weir.log_text());
    assert_eq!(status("wonder land"), 401);
    api.apply_yaml(&secret("{SHA}w24zq5KWQmx3ubdRSJwinHNdFYQ="))
        .expect("edited secret");
    let edited = wait_until(Duration::from_secs(10), || status("wonder land") == 200);
    assert!(edited.is_some(), "the edited Secret was not applied");
    assert_eq!(status("hunter2"), 401);
    assert!(api.delete("Secret", "demo", "users"));
    let closed = wait_until(Duration::from_secs(10), || status("wonder land") == 503);
    assert!(closed.is_some(), "a deleted Secret must close the route");
    let event = wait_until(Duration::from_secs(10), || {
        api.list("Event")
            .iter()
            .any(|e| e.pointer("/reason").and_then(|v| v.as_str()) == Some("AuthProblem"))
    });
    assert!(
        event.is_some(),
        "no AuthProblem Event: {:?}",
        api.list("Event")
    );
}

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: demo}
spec:
  gatewayClassName: weir
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.example.com]
  rules:
  - backendRefs: [{name: SERVICE, port: 80}]
"#;

/// Gateway API on the API server: an HTTPRoute is served beside an Ingress and followed
/// when it changes; a cluster without the Gateway API CRDs is served its Ingresses alone.
#[test]
fn httproutes_on_the_api_server_are_served_beside_ingresses() {
    let app = Echo::start("app");
    let v2 = Echo::start("v2");
    let api = FakeApiServer::start().expect("fake API server");
    api.apply_yaml(INGRESS).expect("ingress");
    api.apply_yaml(&service_yaml("demo", "app", &[app.addr]))
        .expect("service");
    api.apply_yaml(&service_yaml("demo", "v2", &[v2.addr]))
        .expect("service");
    api.apply_yaml(&GATEWAY.replace("SERVICE", "app"))
        .expect("gateway");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let weir = Weir::start_kubernetes(&kubeconfig, &["--reload-debounce", "100ms"]);
    let service_of = |weir: &Weir, host: &str| {
        let (status, body) = weir.get(&client(), host, "/");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (status, body["service"].as_str().unwrap_or("").to_string())
    };
    assert!(served_by(&weir, "app"), "the Ingress: {}", weir.log_text());
    assert_eq!(
        service_of(&weir, "shop.example.com"),
        (200, "app".to_string())
    );
    api.apply_yaml(&GATEWAY.replace("SERVICE", "v2"))
        .expect("changed route");
    let followed = wait_until(Duration::from_secs(10), || {
        service_of(&weir, "shop.example.com") == (200, "v2".to_string())
    });
    assert!(followed.is_some(), "the changed HTTPRoute was not applied");
    drop(weir);

    // Without the CRDs: ready, the Ingress served, the HTTPRoute (unreadable) not.
    api.set_gateway_api(false);
    let weir = Weir::start_kubernetes(&kubeconfig, &["--reload-debounce", "100ms"]);
    assert!(served_by(&weir, "app"));
    assert_eq!(service_of(&weir, "shop.example.com").0, 404);
    assert!(weir.log_text().contains("serves no Gateway API"));
}

const GATEWAY_STATUS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: demo}
spec:
  gatewayClassName: weir
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: demo}
spec:
  parentRefs: [{name: gw, sectionName: http}, {name: theirs}]
  hostnames: [shop.example.com]
  rules:
  - backendRefs: [{name: SERVICE, port: 80}]
status:
  parents:
  - parentRef: {name: theirs}
    controllerName: example.com/other
    conditions: []
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: demo}
spec:
  parentRefs: [{name: gw}, {name: gw, sectionName: nope}]
  hostnames: [broken.example.com]
  rules:
  - backendRefs: [{name: no-such-service, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: garbled, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: app, port: eighty}]}]
---
apiVersion: weir.dev/v1alpha1
kind: BalancerPolicy
metadata: {name: shop-balance, namespace: demo}
spec:
  targetRefs: [{group: "", kind: Service, name: SERVICE}, {group: "", kind: Service, name: gone}]
  settings: {load-balancer: round-robin}
"#;

/// The conditions of `value`'s `pointer` (a `conditions` list) as (type, status, reason,
/// observedGeneration).
fn conditions(value: &serde_json::Value, pointer: &str) -> Vec<(String, String, String, i64)> {
    value
        .pointer(pointer)
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let text = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let generation = c
                .get("observedGeneration")
                .and_then(|v| v.as_i64())
                .unwrap_or(-1);
            (text("type"), text("status"), text("reason"), generation)
        })
        .collect()
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    generation: i64,
) -> (String, String, String, i64) {
    (
        kind.to_string(),
        status.to_string(),
        reason.to_string(),
        generation,
    )
}

/// Gateway API status as the spec has it, written by the elected replica: the class
/// accepted, the Gateway's address (the publish Service's) and conditions, each listener's
/// (a TCP one is not weir's), each route parent's with the spec's reasons; other
/// controllers' entries kept; observedGeneration following spec changes; nothing rewritten
/// while nothing changes. A rule whose backend does not resolve is answered 500.
#[test]
fn gateway_api_status_is_written_as_the_spec_says() {
    let app = Echo::start("app");
    let v2 = Echo::start("v2");
    let api = FakeApiServer::start().expect("fake API server");
    api.apply_yaml(PUBLISHED).expect("published service");
    api.apply_yaml(&service_yaml("demo", "app", &[app.addr]))
        .expect("service");
    api.apply_yaml(&service_yaml("demo", "v2", &[v2.addr]))
        .expect("service");
    api.apply_yaml(&GATEWAY_STATUS.replace("SERVICE", "app"))
        .expect("gateway");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let weir = Weir::start_kubernetes(
        &kubeconfig,
        &[
            "--reload-debounce",
            "100ms",
            "--publish-service",
            "ingress/weir-lb",
            "--election-namespace",
            "ingress",
        ],
    );
    let route = |name: &str| api.get("HTTPRoute", "demo", name).unwrap_or_default();
    let ours = |name: &str| -> serde_json::Value {
        route(name)
            .pointer("/status/parents")
            .and_then(|p| p.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["controllerName"] == "weir.dev/gateway-controller")
            .collect()
    };
    wait_until(Duration::from_secs(15), || {
        ours("shop").as_array().is_some_and(|a| !a.is_empty())
            && ours("broken").as_array().is_some_and(|a| a.len() == 2)
            // Policies are written last in a round.
            && api
                .get("BalancerPolicy", "demo", "shop-balance")
                .is_some_and(|p| p.pointer("/status/ancestors/1").is_some())
    })
    .unwrap_or_else(|| panic!("no route status; log:\n{}", weir.log_text()));

    let class = api.get("GatewayClass", "", "weir").expect("class");
    assert_eq!(
        conditions(&class, "/status/conditions"),
        [condition("Accepted", "True", "Accepted", 1)]
    );
    let theirs = api.get("GatewayClass", "", "other").expect("class");
    assert!(
        theirs.get("status").is_none(),
        "another controller's class was touched"
    );

    let gateway = api.get("Gateway", "demo", "gw").expect("gateway");
    assert_eq!(
        gateway.pointer("/status/addresses"),
        Some(&serde_json::json!([{"type": "IPAddress", "value": "203.0.113.7"}]))
    );
    assert_eq!(
        conditions(&gateway, "/status/conditions"),
        [
            // Accepted, saying that a listener (the TCP one) is not.
            condition("Accepted", "True", "ListenersNotValid", 1),
            condition("Programmed", "True", "Programmed", 1)
        ]
    );
    assert_eq!(
        gateway.pointer("/status/listeners/0/attachedRoutes"),
        Some(&serde_json::json!(2))
    );
    assert_eq!(
        conditions(&gateway, "/status/listeners/0/conditions"),
        [
            condition("Accepted", "True", "Accepted", 1),
            condition("Programmed", "True", "Programmed", 1),
            condition("ResolvedRefs", "True", "ResolvedRefs", 1),
            condition("Conflicted", "False", "NoConflicts", 1),
        ]
    );
    assert_eq!(
        conditions(&gateway, "/status/listeners/1/conditions")[0],
        condition("Accepted", "False", "UnsupportedProtocol", 1)
    );

    // Another controller's entry is kept, first; weir's follows.
    let parents = route("shop")
        .pointer("/status/parents")
        .cloned()
        .unwrap_or_default();
    assert_eq!(parents[0]["controllerName"], "example.com/other");
    assert_eq!(
        conditions(&ours("shop"), "/0/conditions"),
        [
            condition("Accepted", "True", "Accepted", 1),
            condition("ResolvedRefs", "True", "ResolvedRefs", 1)
        ]
    );
    assert_eq!(
        ours("shop")[0]["parentRef"],
        serde_json::json!({"name": "gw", "sectionName": "http"})
    );
    assert_eq!(
        conditions(&ours("broken"), "/0/conditions"),
        [
            condition("Accepted", "True", "Accepted", 1),
            condition("ResolvedRefs", "False", "BackendNotFound", 1)
        ]
    );
    assert_eq!(
        conditions(&ours("broken"), "/1/conditions")[0],
        condition("Accepted", "False", "NoMatchingParent", 1)
    );
    // The policy's status: per target Service.
    let policy = api
        .get("BalancerPolicy", "demo", "shop-balance")
        .expect("policy");
    let ancestors = policy
        .pointer("/status/ancestors")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        ancestors[0]["ancestorRef"],
        serde_json::json!({"group": "", "kind": "Service", "name": "app"})
    );
    assert_eq!(
        conditions(&ancestors, "/0/conditions"),
        [condition("Accepted", "True", "Accepted", 1)]
    );
    assert_eq!(
        conditions(&ancestors, "/1/conditions"),
        [condition("Accepted", "False", "TargetNotFound", 1)]
    );
    // An HTTPRoute weir cannot decode (a port that is not a number, which CRDs without
    // validation let through) is rejected alone: the others are served.
    let garbled = wait_until(Duration::from_secs(10), || {
        api.list("Event")
            .iter()
            .any(|e| e.pointer("/regarding/name") == Some(&serde_json::json!("garbled")))
    });
    assert!(garbled.is_some(), "no Event on the undecodable HTTPRoute");
    // A Warning Event on the route that cannot be served in full.
    let event = wait_until(Duration::from_secs(10), || {
        api.list("Event")
            .iter()
            .any(|e| e.pointer("/regarding/name") == Some(&serde_json::json!("broken")))
    });
    assert!(
        event.is_some(),
        "no Event on the HTTPRoute: {:?}",
        api.list("Event")
    );
    let events = api.list("Event");
    let on_route = events
        .iter()
        .find(|e| e.pointer("/regarding/name") == Some(&serde_json::json!("broken")))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        on_route.pointer("/regarding/kind"),
        Some(&serde_json::json!("HTTPRoute"))
    );
    assert_eq!(
        on_route.pointer("/regarding/apiVersion"),
        Some(&serde_json::json!("gateway.networking.k8s.io/v1"))
    );
    // The spec's answer for a backend that does not resolve.
    assert_eq!(weir.get(&client(), "broken.example.com", "/").0, 500);
    assert_eq!(weir.get(&client(), "shop.example.com", "/").0, 200);

    // Written once while nothing changes.
    let accepted_since = ours("shop")[0]["conditions"][0]["lastTransitionTime"].clone();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(api.status_writes("HTTPRoute", "demo", "shop"), 1);
    assert_eq!(api.status_writes("Gateway", "demo", "gw"), 1);
    assert_eq!(api.status_writes("GatewayClass", "", "weir"), 1);

    // A spec change: generation 2, observed; the condition did not change, its time stays.
    // (Applied without the status block, as `kubectl apply` leaves status alone.)
    let theirs_status = "status:\n  parents:\n  - parentRef: {name: theirs}\n    controllerName: example.com/other\n    conditions: []\n";
    assert!(GATEWAY_STATUS.contains(theirs_status));
    api.apply_yaml(
        &GATEWAY_STATUS
            .replace("SERVICE", "v2")
            .replace(theirs_status, ""),
    )
    .expect("changed route");
    wait_until(Duration::from_secs(10), || {
        conditions(&ours("shop"), "/0/conditions").first()
            == Some(&condition("Accepted", "True", "Accepted", 2))
    })
    .unwrap_or_else(|| panic!("observedGeneration not followed: {}", route("shop")));
    assert_eq!(
        ours("shop")[0]["conditions"][0]["lastTransitionTime"],
        accepted_since
    );
    let body = weir.get(&client(), "shop.example.com", "/").1;
    assert!(body.contains("v2"), "{body}");
}

/// The same files in manifests mode, without a cluster: the routes serve as they do from the
/// API server (the rule whose backend does not resolve answers 500), and what the status
/// would say is in /debug/routes.
#[test]
fn the_same_gateway_api_files_serve_in_manifests_mode() {
    let app = Echo::start("app");
    let dir = support::ManifestDir::new();
    dir.write(
        "gateway.yaml",
        &(service_yaml("demo", "app", &[app.addr]) + &GATEWAY_STATUS.replace("SERVICE", "app")),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let (status, body) = weir.get(&client(), "shop.example.com", "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"service\":\"app\""), "{body}");
    assert_eq!(weir.get(&client(), "broken.example.com", "/").0, 500);
    let (_, routes) = weir.admin_get("/debug/routes");
    for reason in [
        "NoMatchingParent",
        "BackendNotFound",
        "TargetNotFound",
        "garbled",
    ] {
        assert!(routes.contains(reason), "{reason} not in {routes}");
    }
}

/// A Gateway API kind weir may not read (RBAC from an older chart: GRPCRoutes forbidden)
/// does not hold back the rest: after the grace period weir serves Ingresses and HTTPRoutes
/// and says what it serves without.
#[test]
fn a_gateway_api_kind_weir_may_not_read_does_not_hold_back_the_others() {
    let app = Echo::start("app");
    let api = FakeApiServer::start().expect("fake API server");
    api.forbid("grpcroutes");
    api.apply_yaml(INGRESS).expect("ingress");
    api.apply_yaml(&service_yaml("demo", "app", &[app.addr]))
        .expect("service");
    api.apply_yaml(&GATEWAY.replace("SERVICE", "app"))
        .expect("gateway");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let weir = Weir::start_kubernetes(&kubeconfig, &["--reload-debounce", "100ms"]);
    // Not ready while the grace lasts; ready and serving both kinds of route after it.
    let served = wait_until(Duration::from_secs(30), || served_by(&weir, "app"));
    assert!(
        served.is_some(),
        "the Ingress was never served: {}",
        weir.log_text()
    );
    assert_eq!(weir.get(&client(), "shop.example.com", "/").0, 200);
    let log = weir.log_text();
    assert!(log.contains("serving without GRPCRoute"), "{log}");
}

#[test]
fn a_rejected_ingress_gets_an_event_and_the_others_serve() {
    let app = Echo::start("app");
    let api = FakeApiServer::start().expect("fake API server");
    api.apply_yaml(INGRESS).expect("ingress");
    api.apply_yaml(&service_yaml("demo", "app", &[app.addr]))
        .expect("service");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let weir = Weir::start_kubernetes(&kubeconfig, &["--reload-debounce", "100ms"]);
    api.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad, namespace: demo}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: bad.example.com\n    http: {paths: [{path: /a//b, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}\n",
    )
    .expect("bad ingress");
    let event = wait_until(Duration::from_secs(10), || !api.list("Event").is_empty())
        .and_then(|_| api.list("Event").into_iter().next())
        .unwrap_or_else(|| panic!("no Event; log:\n{}", weir.log_text()));
    assert_eq!(
        event.pointer("/regarding/name").and_then(|v| v.as_str()),
        Some("bad")
    );
    assert_eq!(
        event.pointer("/type").and_then(|v| v.as_str()),
        Some("Warning")
    );
    assert_eq!(
        event.pointer("/reason").and_then(|v| v.as_str()),
        Some("Rejected")
    );
    let note = event
        .pointer("/note")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    assert!(note.contains("must not contain"), "{note}");
    assert!(served_by(&weir, "app"));
    // Reported once, not on every later snapshot.
    api.apply_yaml(&service_yaml("demo", "app", &[app.addr]))
        .expect("touch");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(api.list("Event").len(), 1);
}

#[test]
fn errors_and_a_stalled_api_server_are_ridden_out() {
    let blue = Echo::start("blue");
    let green = Echo::start("green");
    let api = FakeApiServer::start().expect("fake API server");
    api.apply_yaml(INGRESS).expect("ingress");
    api.apply_yaml(&service_yaml("demo", "app", &[blue.addr]))
        .expect("service");
    // The first requests fail with 500: the watchers back off and retry until they sync.
    api.fail_next(8);
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let weir = Weir::start_kubernetes(&kubeconfig, &["--reload-debounce", "100ms"]);
    assert!(served_by(&weir, "blue"));

    // Stalled: nothing answers, the last good routes keep serving.
    api.set_stalled(true);
    std::thread::sleep(Duration::from_secs(1));
    assert!(served_by(&weir, "blue"));
    assert_eq!(weir.admin_get("/readyz").0, 200);
    api.set_stalled(false);
    api.apply_yaml(&service_yaml("demo", "app", &[green.addr]))
        .expect("update");
    wait_until(Duration::from_secs(40), || served_by(&weir, "green"))
        .unwrap_or_else(|| panic!("not watching after the stall; log:\n{}", weir.log_text()));
}

/// EndpointSlice for Service demo/app with explicit conditions per endpoint.
fn slice(name: &str, endpoint: std::net::SocketAddr, ready: bool, terminating: bool) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: demo, labels: {{kubernetes.io/service-name: app}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: {ready}, serving: true, terminating: {terminating}}}}}]\n",
        endpoint.port(),
        endpoint.ip()
    )
}

#[test]
fn a_created_ingress_is_routable_within_two_seconds_and_terminating_endpoints_drain() {
    let blue = Echo::start("blue");
    let green = Echo::start("green");
    let api = FakeApiServer::start().expect("fake API server");
    api.apply_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: app, namespace: demo}\nspec: {ports: [{name: http, port: 80}]}\n")
        .expect("service");
    api.apply_yaml(&slice("app-green", green.addr, true, false))
        .expect("slice");
    let (_dir, kubeconfig) = kubeconfig_file(&api.kubeconfig());
    let weir = Weir::start_kubernetes(&kubeconfig, &[]);
    assert_eq!(weir.get(&client(), "app.example.com", "/").0, 404);

    // A new Ingress, with the default debounce: routable within 2 s.
    api.apply_yaml(INGRESS).expect("ingress");
    let took = wait_until(Duration::from_secs(5), || served_by(&weir, "green")).expect("routable");
    eprintln!("created Ingress routable after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A long request is in flight on green when green starts terminating and blue arrives.
    let url = weir.url("/?delay_ms=1500");
    let long = std::thread::spawn(move || {
        client()
            .get(url)
            .header("host", "app.example.com")
            .send()
            .and_then(|r| r.text())
    });
    std::thread::sleep(Duration::from_millis(200));
    api.apply_yaml(&slice("app-green", green.addr, false, true))
        .expect("terminating");
    api.apply_yaml(&slice("app-blue", blue.addr, true, false))
        .expect("blue");
    wait_until(Duration::from_secs(5), || served_by(&weir, "blue")).expect("blue serving");
    for _ in 0..20 {
        assert!(
            served_by(&weir, "blue"),
            "a terminating endpoint got a new request"
        );
    }
    let body = long
        .join()
        .expect("thread")
        .expect("the in-flight request completed");
    assert!(body.contains("\"service\":\"green\""), "{body}");
    // The access log agrees: the long request completed on green with 200; every request
    // after green started terminating went to blue.
    let is_long = |l: &&serde_json::Value| l["duration_ms"].as_f64().unwrap_or(0.0) >= 1_400.0;
    wait_until(Duration::from_secs(5), || {
        weir.access_log().iter().any(|l| is_long(&l))
    })
    .expect("the long request is logged");
    let log = weir.access_log();
    let long_line = log
        .iter()
        .find(is_long)
        .expect("the long request is logged");
    assert_eq!(long_line["upstream"], green.addr.to_string(), "{long_line}");
    assert_eq!(long_line["status"], 200, "{long_line}");
    let last_20: Vec<_> = log
        .iter()
        .rev()
        .filter(|l| l != &long_line)
        .take(20)
        .collect();
    assert!(
        last_20
            .iter()
            .all(|l| l["upstream"] == blue.addr.to_string() && l["pick_reason"] == "primary"),
        "{last_20:?}"
    );
}
