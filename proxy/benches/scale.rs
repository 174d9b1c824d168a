//! Scale (issue #9): 10,000 Ingresses with 50,000 endpoints — translation (objects ->
//! snapshot), compilation (snapshot -> router and pools, what a reload costs) and route
//! lookup at that size. Before the timings it prints the resident memory each stage adds.
//! Run: `cargo bench -p weir-proxy --bench scale`.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;
use weir_discovery::objects::ClusterObjects;
use weir_discovery::{translate, TranslateOptions};
use weir_proxy::routes::routing::LiveRouting;

const INGRESSES: usize = 10_000;
const ENDPOINTS_PER_SERVICE: usize = 5;

/// One Ingress per Service, 100 namespaces, 1,000 hosts, two paths per Ingress (Prefix and
/// Exact), five ready endpoints per Service.
fn cluster(ingresses: usize) -> ClusterObjects {
    let mut objects = ClusterObjects::default();
    for i in 0..ingresses {
        let namespace = format!("team-{}", i % 100);
        let name = format!("svc-{i}");
        let host = format!("app-{}.example.com", i % 1_000);
        let ingress = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "spec": {"ingressClassName": "weir", "rules": [{"host": host, "http": {"paths": [
                {"path": format!("/{name}"), "pathType": "Prefix",
                 "backend": {"service": {"name": name, "port": {"number": 80}}}},
                {"path": format!("/{name}/health"), "pathType": "Exact",
                 "backend": {"service": {"name": name, "port": {"number": 80}}}}
            ]}}]}
        });
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        });
        let endpoints: Vec<_> = (0..ENDPOINTS_PER_SERVICE)
            .map(|e| {
                let n = i * ENDPOINTS_PER_SERVICE + e;
                json!({"addresses": [format!("10.{}.{}.{}", n / 65_536 % 256, n / 256 % 256, n % 256)],
                       "conditions": {"ready": true}})
            })
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints
        });
        let (Ok(ingress), Ok(service), Ok(slice)) = (
            serde_json::from_value(ingress),
            serde_json::from_value(service),
            serde_json::from_value(slice),
        ) else {
            unreachable!("the generated objects are valid");
        };
        objects.ingresses.push(Arc::new(ingress));
        objects.services.push(Arc::new(service));
        objects.endpoint_slices.push(Arc::new(slice));
    }
    objects
}

fn options() -> TranslateOptions {
    TranslateOptions {
        ingress_class: "weir".to_string(),
        watch_namespace: None,
        ..TranslateOptions::default()
    }
}

fn rss_kib() -> u64 {
    weir_testsupport::process::rss_kib(std::process::id())
}

fn scale(c: &mut Criterion) {
    let start = rss_kib();
    let objects = cluster(INGRESSES);
    let after_objects = rss_kib();
    let snapshot = translate(&objects, &options());
    let after_snapshot = rss_kib();
    let live = LiveRouting::default();
    let routes = live.apply(snapshot.clone());
    let after_apply = rss_kib();
    let endpoints: usize = live.pools().iter().map(|(_, p)| p.counts().0).sum();
    println!(
        "scale: {INGRESSES} Ingresses -> {routes} routes, {endpoints} endpoints; resident memory added: \
         objects {} MiB, snapshot {} MiB, router + pools {} MiB",
        (after_objects.saturating_sub(start)) / 1024,
        (after_snapshot.saturating_sub(after_objects)) / 1024,
        (after_apply.saturating_sub(after_snapshot)) / 1024,
    );

    let mut group = c.benchmark_group("scale_10k_ingresses");
    group.sample_size(10);
    group.bench_function("translate", |b| {
        b.iter(|| translate(black_box(&objects), &options()))
    });
    group.bench_function("apply_to_live_routing", |b| {
        b.iter_batched(
            || snapshot.clone(),
            |s| live.apply(s),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();

    let table = live.load_full();
    let host = "App-999.example.com:443";
    let path = "/svc-9999/api/items";
    let Ok(req) = pingora::http::RequestHeader::build("GET", path.as_bytes(), None) else {
        unreachable!("a GET of a valid path");
    };
    assert!(
        table.router.lookup(host, path, &req).is_some(),
        "the last route is found"
    );
    c.bench_function("scale_10k_ingresses/lookup", |b| {
        b.iter(|| {
            table
                .router
                .lookup(black_box(host), black_box(path), &req)
                .is_some()
        })
    });
}

criterion_group!(benches, scale);
criterion_main!(benches);
