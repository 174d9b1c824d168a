//! End to end: OpenTelemetry traces. A small OTLP/HTTP receiver in the test decodes what
//! weir exports (the protobuf messages of opentelemetry-proto, declared here with the
//! fields the test reads); the echo upstream shows the `traceparent` weir forwards.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use prost::Message;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{client, Echo, ManifestDir, Weir};
use weir_testsupport::process::free_port;

/// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest` (the fields read).
#[derive(Clone, PartialEq, Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
}

#[derive(Clone, PartialEq, Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    /// 2 = server, 3 = client.
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(string, optional, tag = "1")]
    string_value: Option<String>,
    #[prost(int64, optional, tag = "3")]
    int_value: Option<i64>,
}

impl Span {
    fn attribute(&self, key: &str) -> Option<String> {
        let value = self
            .attributes
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?;
        value
            .string_value
            .clone()
            .or(value.int_value.map(|i| i.to_string()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver: collects every span posted to `/v1/traces`.
fn start_receiver(port: u16) -> Arc<Mutex<Vec<Span>>> {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&spans);
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    support::serve_connections(listener, move |stream| {
        let collected = Arc::clone(&collected);
        async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let collected = Arc::clone(&collected);
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if path == "/v1/traces" {
                            if let Ok(export) = ExportTraceServiceRequest::decode(body) {
                                let mut spans = collected.lock().expect("lock");
                                for rs in export.resource_spans {
                                    for ss in rs.scope_spans {
                                        spans.extend(ss.spans);
                                    }
                                }
                            }
                        }
                        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::new(),
                        )))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    spans
}

fn manifests(app: &Echo) -> String {
    support::service_yaml("demo", "app", &[app.addr])
        + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: app, namespace: demo}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: app.example.com\n    http: {paths: [{path: /api, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}]}\n"
}

/// The echo's JSON answer to a GET of `path` on app.example.com, with `traceparent` if given.
fn echo_json(weir: &Weir, path: &str, traceparent: Option<&str>) -> serde_json::Value {
    let mut request = client()
        .get(weir.url(path))
        .header("host", "app.example.com");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.send().and_then(|r| r.json()).expect("request")
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn spans_continue_the_incoming_trace_and_reach_the_upstream() {
    let receiver_port = free_port();
    let spans = start_receiver(receiver_port);
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write("all.yaml", &manifests(&app));
    let weir = Weir::start(
        &dir.path(),
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{receiver_port}"),
        ],
    );

    // A request that carries a trace.
    let body = echo_json(
        &weir,
        "/api/items",
        Some(&format!("00-{TRACE}-{CALLER_SPAN}-01")),
    );
    let forwarded = body["headers"]["traceparent"]
        .as_str()
        .expect("the upstream got a traceparent")
        .to_string();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts[1], TRACE, "same trace: {forwarded}");
    assert_ne!(
        parts[2], CALLER_SPAN,
        "a new parent (weir's span): {forwarded}"
    );

    // A request without one starts a trace.
    let body = echo_json(&weir, "/api/other", None);
    let started = body["headers"]["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_string();
    assert_ne!(started.split('-').nth(1), Some(TRACE));

    // The exported spans: server span named after the route, child of the caller; client
    // span child of it, whose id the upstream received as parent.
    let exported = support::wait_until(Duration::from_secs(10), || {
        spans.lock().expect("lock").len() >= 4
    });
    assert!(
        exported.is_some(),
        "spans: {:?}",
        spans.lock().expect("lock")
    );
    let spans = spans.lock().expect("lock").clone();
    let of_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == TRACE).collect();
    let server = of_trace.iter().find(|s| s.kind == 2).expect("server span");
    assert_eq!(server.name, "GET /api");
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(server.attribute("http.route").as_deref(), Some("/api"));
    assert_eq!(
        server.attribute("http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        server.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    let upstream = of_trace.iter().find(|s| s.kind == 3).expect("client span");
    assert_eq!(upstream.parent_span_id, server.span_id);
    assert_eq!(hex(&upstream.span_id), parts[2]);
    assert_eq!(upstream.attribute("weir.attempt").as_deref(), Some("1"));
    assert_eq!(
        upstream.attribute("weir.pick_reason").as_deref(),
        Some("primary")
    );
    assert_eq!(
        upstream.attribute("server.port").as_deref(),
        Some(app.addr.port().to_string().as_str())
    );

    // The access log carries the trace id.
    let log = weir.access_log_of(2);
    assert_eq!(log[0]["trace_id"], TRACE, "{:?}", log[0]);
}

#[test]
fn requests_are_unaffected_when_the_collector_is_down() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write("all.yaml", &manifests(&app));
    // Nothing listens on the collector port.
    let weir = Weir::start(
        &dir.path(),
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", free_port()),
        ],
    );
    let c = client();
    let started = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(weir.get(&c, "app.example.com", "/api").0, 200);
    }
    eprintln!(
        "300 requests with the collector down: {:?}",
        started.elapsed()
    );
    // Spans the exporter could not send are dropped, not retried without end: the
    // process keeps serving and answering its admin port.
    assert_eq!(weir.admin_get("/healthz").0, 200);
}

#[test]
fn without_a_collector_the_incoming_trace_id_still_reaches_the_access_log() {
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write("all.yaml", &manifests(&app));
    let weir = Weir::start(&dir.path(), &[]);
    let c = client();
    let body = echo_json(&weir, "/api", Some(&format!("00-{TRACE}-{CALLER_SPAN}-01")));
    // No spans of its own: the caller's traceparent passes through unchanged.
    assert_eq!(
        body["headers"]["traceparent"],
        format!("00-{TRACE}-{CALLER_SPAN}-01")
    );
    assert_eq!(weir.get(&c, "app.example.com", "/api").0, 200);
    let log = weir.access_log_of(2);
    assert_eq!(log[0]["trace_id"], TRACE, "{:?}", log[0]);
    assert_eq!(log[1]["trace_id"], "", "{:?}", log[1]);
}
