//! weir-client end to end: real hyper upstreams on loopback (weir's echo), real connections,
//! and for the Kubernetes source the real kube client against the fake API server.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use prometheus::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tower::ServiceExt;
use weir_client::{
    Algorithm, ClientConfig, ClientMetrics, Decision, EndpointSpec, Endpoints, HashKey, PickReason,
    Protocol, ServiceTarget, WeirClient,
};
mod support;

use support::{echo, echo_with, refused};

/// One call: the answer's JSON and the decision.
async fn get<B>(client: &WeirClient<B>, request: http::Request<B>) -> (serde_json::Value, Decision)
where
    B: http_body::Body + Clone + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let response = client.clone().oneshot(request).await.expect("an answer");
    let decision = response
        .extensions()
        .get::<Decision>()
        .cloned()
        .expect("a decision");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (serde_json::from_slice(&body).unwrap_or_default(), decision)
}

fn empty_get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path)
        .body(Empty::new())
        .expect("request")
}

fn config(algorithm: Algorithm) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.pool.algorithm = algorithm;
    config
}

fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| {
            if m.get_counter().get_value() != 0.0 {
                m.get_counter().get_value()
            } else {
                m.get_histogram().get_sample_count() as f64
            }
        })
        .sum()
}

#[tokio::test]
async fn calls_are_balanced_and_each_says_where_it_went() {
    let pods = [echo("a").await, echo("b").await, echo("c").await];
    let client = WeirClient::builder(Endpoints::fixed("shop/product", pods))
        .config(config(Algorithm::RoundRobin))
        .build();
    let mut per_pod: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let (answer, decision) = get(&client, empty_get("/products/42?x=1")).await;
        let pod = answer["pod"].as_str().unwrap_or_default().to_string();
        let index = (pod.as_bytes()[0] - b'a') as usize;
        assert_eq!(
            decision.endpoint, pods[index],
            "the decision names the endpoint that answered"
        );
        assert_eq!(decision.reason, PickReason::Primary);
        assert_eq!((decision.attempts, decision.tried_before.len()), (1, 0));
        assert_eq!(answer["path"], "/products/42?x=1");
        // Host is the endpoint's when the source names no Service.
        assert_eq!(answer["host"], decision.endpoint.to_string());
        *per_pod.entry(pod).or_default() += 1;
    }
    assert_eq!(
        per_pod.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10]
    );
    // Pooled: HTTP/1.1 connections are reused across calls.
    let (answer, _) = get(&client, empty_get("/")).await;
    assert!(answer["connection"].as_u64().unwrap_or(0) <= 2, "{answer}");
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_elsewhere_then_ejected() {
    let live = [echo("a").await, echo("b").await];
    let dead = refused();
    let registry = Registry::new();
    let metrics = ClientMetrics::register(&registry).expect("metrics");
    let client = WeirClient::builder(Endpoints::fixed("shop/product", [live[0], live[1], dead]))
        .config(config(Algorithm::RoundRobin))
        .metrics(metrics)
        .build();
    let mut retried = 0;
    for _ in 0..60 {
        let (_, decision) = get(&client, empty_get("/")).await;
        assert_ne!(decision.endpoint, dead);
        if !decision.tried_before.is_empty() {
            assert_eq!(decision.tried_before, vec![dead]);
            assert_eq!(decision.reason, PickReason::Retry);
            retried += 1;
        }
    }
    // Ejected after 5 failures in a row (the default): no call went to it after.
    assert_eq!(retried, 5, "calls that met the dead endpoint");
    assert_eq!(metric(&registry, "weir_outlier_ejections_total", &[]), 1.0);
    assert_eq!(
        metric(
            &registry,
            "weir_upstream_errors_total",
            &[("kind", "connect")]
        ),
        5.0
    );
    assert_eq!(metric(&registry, "weir_client_retries_total", &[]), 5.0);
    assert_eq!(
        metric(
            &registry,
            "weir_balancer_picks_total",
            &[
                ("service", "shop/product"),
                ("algorithm", "round-robin"),
                ("reason", "retry")
            ]
        ),
        5.0
    );
    assert_eq!(
        metric(&registry, "weir_upstream_response_seconds", &[]),
        60.0
    );
}

#[tokio::test]
async fn a_call_that_may_not_be_repeated_is_not_retried() {
    let live = echo("a").await;
    let dead = refused();
    let client = WeirClient::builder(Endpoints::fixed("shop/product", [live, dead]))
        .config(config(Algorithm::RoundRobin))
        .build::<Full<Bytes>>();
    let mut errors = 0;
    for _ in 0..4 {
        let post = http::Request::post("/orders")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        match client.clone().oneshot(post).await {
            Ok(response) => assert_eq!(
                response.extensions().get::<Decision>().map(|d| d.attempts),
                Some(1)
            ),
            Err(e) => {
                assert!(e.to_string().contains(&dead.to_string()), "{e}");
                errors += 1;
            }
        }
    }
    assert_eq!(
        errors, 2,
        "every other POST met the dead endpoint, and stayed failed"
    );
}

#[tokio::test]
async fn a_retried_status_goes_to_another_endpoint() {
    let ok = echo("ok").await;
    let failing = echo_with("failing", 503).await;
    let mut config = config(Algorithm::RoundRobin);
    config.retry_on.statuses = vec![503];
    let client = WeirClient::builder(Endpoints::fixed("shop/product", [ok, failing]))
        .config(config)
        .build();
    for _ in 0..6 {
        let response = client
            .clone()
            .oneshot(empty_get("/"))
            .await
            .expect("answer");
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn consistent_hash_keeps_each_key_on_one_endpoint() {
    let pods: Vec<SocketAddr> =
        futures::future::join_all(["a", "b", "c", "d"].iter().map(|p| echo(p))).await;
    let client = WeirClient::builder(Endpoints::fixed("shop/product", pods.clone()))
        .config(config(Algorithm::ConsistentHash))
        .build();
    let mut owners: BTreeMap<String, SocketAddr> = BTreeMap::new();
    let mut used = std::collections::BTreeSet::new();
    for round in 0..3 {
        for user in 0..20 {
            let key = format!("user-{user}");
            let mut request = empty_get("/cart");
            request.extensions_mut().insert(HashKey::of(&key));
            let (_, decision) = get(&client, request).await;
            used.insert(decision.endpoint);
            let owner = owners.entry(key.clone()).or_insert(decision.endpoint);
            assert_eq!(*owner, decision.endpoint, "{key} moved in round {round}");
        }
    }
    assert!(
        used.len() >= 3,
        "20 keys over 4 endpoints used {}",
        used.len()
    );
    // A key from a header, as `hash-key: header:x-user` says.
    let settings: BTreeMap<String, String> = [
        ("load-balancer", "consistent-hash"),
        ("hash-key", "header:x-user"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let by_header = WeirClient::builder(Endpoints::fixed("shop/product", pods))
        .config(ClientConfig::from_settings(&settings).expect("settings"))
        .build();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let request = http::Request::get("/")
            .header("x-user", "user-7")
            .body(Empty::<Bytes>::new())
            .expect("request");
        seen.insert(get(&by_header, request).await.1.endpoint);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![owners["user-7"]]);
}

#[tokio::test]
async fn http2_upstreams_take_every_call_on_one_connection() {
    let pod = echo("a").await;
    let config = ClientConfig {
        protocol: Protocol::Http2,
        ..ClientConfig::default()
    };
    let client = WeirClient::builder(Endpoints::fixed("shop/product", [pod]))
        .config(config)
        .build();
    let answers = futures::future::join_all((0..20).map(|_| get(&client, empty_get("/")))).await;
    for (answer, _) in &answers {
        assert_eq!(answer["proto"], "HTTP/2.0");
        assert_eq!(answer["connection"], 1, "multiplexed on one connection");
    }
}

#[tokio::test]
async fn zone_aware_calls_stay_in_their_zone() {
    let mut specs = Vec::new();
    for (i, zone) in ["a", "a", "a", "b", "b", "b"].iter().enumerate() {
        let mut spec = EndpointSpec::ready(echo(&format!("{zone}{i}")).await);
        spec.zone = Some(zone.to_string());
        specs.push(spec);
    }
    let mut config = ClientConfig::default();
    config.pool.zone_aware = true;
    config.zone = Some("b".to_string());
    let client = WeirClient::builder(Endpoints::specs("shop/product", specs))
        .config(config)
        .build();
    for _ in 0..30 {
        let (answer, _) = get(&client, empty_get("/")).await;
        assert!(
            answer["pod"].as_str().unwrap_or("").starts_with('b'),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn endpoints_follow_their_source() {
    let first = echo("first").await;
    let second = echo("second").await;
    let (endpoints, updates) = Endpoints::channel("shop/product", vec![EndpointSpec::ready(first)]);
    let client = WeirClient::builder(endpoints).build();
    assert_eq!(get(&client, empty_get("/")).await.1.endpoint, first);
    updates
        .send(vec![EndpointSpec::ready(second)])
        .expect("the client listens");
    let mut moved = false;
    for _ in 0..50 {
        if get(&client, empty_get("/")).await.1.endpoint == second {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(moved, "the client did not take the new list");
    // No endpoints: a clear error, not a hang.
    updates.send(Vec::new()).expect("the client listens");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = client
        .clone()
        .oneshot(empty_get("/"))
        .await
        .expect_err("no endpoints");
    assert!(e.to_string().contains("no available endpoints"), "{e}");
}

/// The Kubernetes source: the Service, its EndpointSlices and its Pods from the API server
/// (the fake, over the real wire protocol), the Pods' readiness times as slow-start ages.
#[test]
fn kubernetes_endpoints_come_from_the_services_slices_and_pods() {
    let fake = weir_testsupport::fakeapi::FakeApiServer::start().expect("fake API");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let a = echo("a").await;
        let b = echo("b").await;
        // One slice per endpoint: both on 127.0.0.1, so on different ports (a named
        // targetPort may differ between slices, as during a rollout).
        let slice = |name: &str, pod: &str, addr: SocketAddr| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: shop, labels: {{kubernetes.io/service-name: product}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n  - addresses: [\"{}\"]\n    conditions: {{ready: true}}\n    targetRef: {{kind: Pod, name: {pod}}}\n",
                addr.port(),
                addr.ip()
            )
        };
        // Another Service's slice in the namespace, which must not be taken.
        fake.apply_yaml(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: product, namespace: shop}}\nspec: {{selector: {{app: product}}, ports: [{{name: http, port: 80}}]}}\n---\n{}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: other-1, namespace: shop, labels: {{kubernetes.io/service-name: other}}}}\naddressType: IPv4\nports: [{{name: http, port: 1}}]\nendpoints:\n  - addresses: [\"127.0.0.9\"]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: product-0, namespace: shop, labels: {{app: product}}}}\nstatus: {{conditions: [{{type: Ready, status: \"True\", lastTransitionTime: \"2026-01-01T00:00:00Z\"}}]}}\n",
            slice("product-1", "product-0", a)
        ))
        .expect("objects");
        let config = kube::Config::new(format!("http://{}", fake.addr).parse().expect("url"));
        let kube = kube::Client::try_from(config).expect("client");
        let mut endpoints = Endpoints::kubernetes(
            kube,
            ServiceTarget::new("shop", "product", "http"),
            Duration::from_millis(50),
        );
        assert!(endpoints.ready(Duration::from_secs(10)).await, "no endpoints");
        let client = WeirClient::builder(endpoints).build();
        let (answer, decision) = get(&client, empty_get("/")).await;
        assert_eq!(decision.endpoint, a);
        assert_eq!(answer["host"], "product.shop.svc", "Host names the Service");
        // The Pod's readiness time is the endpoint's slow-start age (once the Pods are synced).
        let ready_2026 = 1_767_225_600u64 * 1_000_000_000;
        let mut aged = false;
        for _ in 0..100 {
            if client.endpoints().iter().any(|e| e.ready_since().0 == ready_2026) {
                aged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(aged, "the Pod's readiness time was not taken");
        // A second endpoint in the slice: calls reach it too.
        fake.apply_yaml(&slice("product-2", "product-1", b)).expect("slice");
        let mut reached_b = false;
        for _ in 0..100 {
            if get(&client, empty_get("/")).await.1.endpoint == b {
                reached_b = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reached_b, "the new endpoint never got a call");
        assert_eq!(client.endpoints().len(), 2, "the other Service's slice is not taken");
    });
}

/// A retry that finds no endpoint left (the other one ejected) does not turn the answer into
/// "no endpoints": the last attempt's answer stands.
#[tokio::test]
async fn with_no_endpoint_left_to_retry_the_last_answer_stands() {
    // 429 is retried here but is no failure of the endpoint: it is never ejected; the dead
    // one is, after its 5 failures.
    let busy = echo_with("busy", 429).await;
    let dead = refused();
    let mut config = config(Algorithm::RoundRobin);
    config.retry_on.statuses = vec![429];
    config.retries = 3;
    let client = WeirClient::builder(Endpoints::fixed("shop/product", [busy, dead]))
        .config(config)
        .build();
    for call in 0..30 {
        match client.clone().oneshot(empty_get("/")).await {
            Ok(response) => assert_eq!(response.status(), 429),
            Err(weir_client::Error::NoEndpoints { .. }) => {
                panic!("call {call}: the last answer was thrown away for 'no endpoints'")
            }
            // Until the dead endpoint is ejected, a call may end on it.
            Err(e) if call < 10 => assert!(e.to_string().contains(&dead.to_string()), "{e}"),
            Err(e) => panic!("call {call}, the dead endpoint ejected by now: {e}"),
        }
    }
}
