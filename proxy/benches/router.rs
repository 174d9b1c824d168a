//! Route lookup cost as the number of Ingress rules grows: 10, 1,000 and 10,000 rules spread
//! over 100 hosts, looked up by host + a 4-segment path. Flat lines = cost independent of
//! the number of rules. Run: `cargo bench -p weir-proxy --bench router`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use weir_discovery::{HostMatch, PathMatch};
use weir_proxy::routes::router::Router;

fn build(rules: usize) -> Router<usize> {
    let mut router = Router::new();
    for i in 0..rules {
        let host = HostMatch::Exact(format!("h{}.example.com", i % 100));
        let path = PathMatch::Prefix(format!("/svc{i}/api"));
        if router.insert(&host, &path, i).is_err() {
            unreachable!("valid rule");
        }
        if i % 10 == 0 {
            let exact = PathMatch::Exact(format!("/svc{i}/health"));
            let _ = router.insert(&host, &exact, i);
        }
    }
    router
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("router_lookup");
    for rules in [10usize, 1_000, 10_000] {
        let router = build(rules);
        let last = rules - 1;
        let host = format!("H{}.Example.com:8080", last % 100);
        let path = format!("/svc{last}/api/v1/items");
        // A plain GET: no route has conditions, so none of its fields are read.
        let Ok(req) = pingora::http::RequestHeader::build("GET", path.as_bytes(), None) else {
            unreachable!("a GET of a valid path");
        };
        assert_eq!(router.lookup(&host, &path, &req), Some(&last));
        group.bench_with_input(BenchmarkId::new("prefix_hit", rules), &rules, |b, _| {
            b.iter(|| router.lookup(black_box(&host), black_box(&path), &req))
        });
        let miss = "/nothing/here/at/all".to_string();
        group.bench_with_input(BenchmarkId::new("miss", rules), &rules, |b, _| {
            b.iter(|| router.lookup(black_box(&host), black_box(&miss), &req))
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
