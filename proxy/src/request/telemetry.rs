//! OpenTelemetry traces of the data path: one server span per request, one client span per
//! upstream attempt, W3C trace context honoured and forwarded, OTLP/HTTP export.
//!
//! Owns the tracer and the span lifecycle of one request ([`RequestTrace`]). Export runs on
//! the SDK's batch processor thread: a request never waits for it, its queue is bounded
//! (spans are dropped, not buffered without end, while the collector is down). Must not:
//! decide routing or touch the balancer. Without `--otlp-endpoint` nothing is recorded;
//! the trace id of an incoming `traceparent` still reaches the access log.

use crate::http::forwarded::UpstreamHeaders;
use crate::http::request_view::{visible_ascii, RequestView};
use http::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use std::time::Duration;

/// Spans waiting for export at most (then new ones are dropped).
const MAX_QUEUED_SPANS: usize = 4096;
/// The W3C trace context field (a name, not a string: a `&str` lookup parses the name first).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The tracer, or nothing when tracing is off.
#[derive(Debug)]
pub struct Telemetry {
    tracer: Option<SdkTracer>,
    provider: Option<SdkTracerProvider>,
    propagator: TraceContextPropagator,
}

impl Telemetry {
    pub fn disabled() -> Self {
        Telemetry {
            tracer: None,
            provider: None,
            propagator: TraceContextPropagator::new(),
        }
    }

    /// Exports to an OTLP/HTTP collector at `endpoint` (`http://host:4318`; spans go to
    /// `<endpoint>/v1/traces`). Call outside any async runtime: the exporter's blocking
    /// HTTP client lives on the batch processor's own thread.
    pub fn otlp(endpoint: &str) -> Result<Self, String> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(5))
            .with_headers(Default::default())
            .build()
            .map_err(|e| e.to_string())?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .with_scheduled_delay(Duration::from_millis(500))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("weir")
                    .build(),
            )
            .build();
        Ok(Telemetry {
            tracer: Some(provider.tracer("weir")),
            provider: Some(provider),
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Starts the server span of a request: child of the incoming `traceparent` if any,
    /// named `{method} {route}` (the matched rule's path; just `{method}` when none
    /// matched).
    pub fn start_request(
        &self,
        req: &impl RequestView,
        route: Option<&str>,
        host: &str,
    ) -> RequestTrace {
        // Tracing off and no incoming trace: nothing to parse or record.
        if self.tracer.is_none() && req.field(&TRACEPARENT).is_none() {
            return RequestTrace::default();
        }
        let parent = self.propagator.extract(&FieldExtractor(req));
        let incoming = parent.span().span_context().clone();
        let Some(tracer) = &self.tracer else {
            let trace_id = incoming.is_valid().then(|| incoming.trace_id().to_string());
            return RequestTrace {
                cx: None,
                attempt: None,
                trace_id,
            };
        };
        let method = req.method().as_str();
        let name = match route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.path", req.uri().path().to_string()),
            KeyValue::new("server.address", host.to_string()),
        ];
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route.to_string()));
        }
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        let trace_id = Some(span.span_context().trace_id().to_string());
        RequestTrace {
            cx: Some(parent.with_span(span)),
            attempt: None,
            trace_id,
        }
    }

    /// Flushes what is queued (at shutdown).
    pub fn shutdown(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.shutdown();
        }
    }

    fn tracer(&self) -> Option<&SdkTracer> {
        self.tracer.as_ref()
    }
}

/// The spans of one request.
#[derive(Debug, Default)]
pub struct RequestTrace {
    /// Context holding the server span (None when tracing is off).
    cx: Option<Context>,
    /// The current upstream attempt's client span.
    attempt: Option<Context>,
    /// For the access log: the trace this request belongs to.
    pub trace_id: Option<String>,
}

impl RequestTrace {
    /// Starts the client span of an upstream attempt (ending the previous attempt's).
    pub fn start_attempt(
        &mut self,
        telemetry: &Telemetry,
        endpoint: std::net::SocketAddr,
        attempt: usize,
        reason: &'static str,
        service: &str,
    ) {
        self.end_attempt(None);
        let (Some(tracer), Some(cx)) = (telemetry.tracer(), &self.cx) else {
            return;
        };
        let span = tracer
            .span_builder(format!("upstream {service}"))
            .with_kind(SpanKind::Client)
            .with_attributes(vec![
                KeyValue::new("server.address", endpoint.ip().to_string()),
                KeyValue::new("server.port", i64::from(endpoint.port())),
                KeyValue::new("weir.attempt", attempt as i64),
                KeyValue::new("weir.pick_reason", reason),
                KeyValue::new("weir.service", service.to_string()),
            ])
            .start_with_context(tracer, cx);
        self.attempt = Some(cx.with_span(span));
    }

    /// Writes `traceparent`/`tracestate` of the current attempt (else the server span)
    /// into the upstream request, so the upstream continues this trace.
    pub fn inject(&self, telemetry: &Telemetry, upstream: &mut UpstreamHeaders) {
        if let Some(cx) = self.attempt.as_ref().or(self.cx.as_ref()) {
            telemetry
                .propagator
                .inject_context(cx, &mut HeaderInjector(upstream));
        }
    }

    /// Ends the current attempt's span, with the upstream's status when it answered.
    pub fn end_attempt(&mut self, status: Option<u16>) {
        if let Some(cx) = self.attempt.take() {
            let span = cx.span();
            if let Some(code) = status {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
            } else {
                span.set_status(Status::error("no response from the upstream"));
            }
            span.end();
        }
    }

    /// Ends the request: the status weir answered with (0: none).
    pub fn finish(&mut self, status: u16, upstream_status: Option<u16>) {
        self.end_attempt(upstream_status);
        if let Some(cx) = self.cx.take() {
            let span = cx.span();
            if status != 0 {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
            }
            if status >= 500 || status == 0 {
                span.set_status(Status::error(""));
            }
            span.end();
        }
    }
}

/// The propagator's reading of a request's fields (names in any case; values that are not
/// visible ASCII read as absent, as `HeaderValue::to_str` has them).
struct FieldExtractor<'a, R>(&'a R);

impl<R: RequestView> Extractor for FieldExtractor<'_, R> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.field_named(key.as_bytes()).and_then(visible_ascii)
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for (name, _) in self.0.fields() {
            if let Ok(name) = std::str::from_utf8(name) {
                if !keys.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                    keys.push(name);
                }
            }
        }
        keys
    }
}

struct HeaderInjector<'a>(&'a mut UpstreamHeaders);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Header names from the propagator are static lowercase ASCII; a failure would
        // only lose trace continuity, never the request.
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.push((name, value));
        }
    }
}
