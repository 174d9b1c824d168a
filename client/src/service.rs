//! [`WeirClient`]: a `tower::Service` that sends each call to one endpoint of a Service,
//! picked by weir's balancer, and sends it again to another endpoint when an attempt fails
//! and the call may be repeated. Each call, in order:
//!
//! 1. **pick**: the pool picks an endpoint not tried yet ([`Pool::pick`]), with the call's
//!    hash key for consistent hash;
//! 2. **start**: the endpoint's in-flight count takes the call (released when the response
//!    body ends), and the URI is pointed at the endpoint;
//! 3. **attempt**: hyper-util's pooled client sends it, within the attempt timeout, in a
//!    `tracing` span (`weir_client.attempt`);
//! 4. **feed back**: the outcome (success, failure, overloaded) and, on success, the latency
//!    go to the pool — what outlier ejection, the latency health factor and peak EWMA learn
//!    from;
//! 5. **retry or answer**: a failed attempt is sent to another endpoint while attempts,
//!    endpoints and the retry budget allow; else the response goes back with its
//!    [`Decision`].
//!
//! Must not: lock on the call path (the pool is lock-free to pick from), or retry a call
//! that may not be repeated (a method that is not idempotent, unless configured).

use crate::body::ResponseBody;
use crate::config::{ClientConfig, KeyFrom, Protocol};
use crate::decision::{Decision, HashKey};
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::metrics::ClientMetrics;
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tracing::Instrument;
use weir_balancer::{
    Algorithm, EndpointRegistry, EndpointSpec, EndpointState, Nanos, Outcome, PickRequest, Pool,
    RetryBudget,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Client-side load balancing of one Service's endpoints. Cheap to clone: clones share the
/// pool, the connections and the budget.
pub struct WeirClient<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for WeirClient<B> {
    fn clone(&self) -> Self {
        WeirClient {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B> std::fmt::Debug for WeirClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeirClient")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

struct Inner<B> {
    service: String,
    host: Option<HeaderValue>,
    config: ClientConfig,
    pool: Arc<Pool>,
    /// Each endpoint's URI authority and `Host`, made once per endpoint list rather than per
    /// call.
    addresses: Arc<ArcSwap<HashMap<SocketAddr, Address>>>,
    http: Client<HttpConnector, B>,
    budget: Arc<RetryBudget>,
    metrics: Option<ClientMetrics>,
    /// Dropped with the client: ends the task that applies endpoint updates.
    _updates: oneshot::Sender<()>,
}

/// Builds a [`WeirClient`].
#[derive(Debug)]
pub struct Builder {
    endpoints: Endpoints,
    config: ClientConfig,
    metrics: Option<ClientMetrics>,
}

impl Builder {
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Counts into `metrics` (registered once on the caller's registry).
    pub fn metrics(mut self, metrics: ClientMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The client. Needs a tokio runtime (it applies endpoint updates in a task).
    pub fn build<B>(self) -> WeirClient<B>
    where
        B: http_body::Body + Send + 'static + Unpin,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let Builder {
            endpoints,
            config,
            metrics,
        } = self;
        let pool = Arc::new(Pool::in_zone(config.pool, config.zone.as_deref()));
        let registry = EndpointRegistry::new();
        let updates = endpoints.updates;
        pool.update(&updates.borrow(), &registry, Nanos::now());
        let addresses = Arc::new(ArcSwap::from_pointee(addresses_of(&updates.borrow())));
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(apply_updates(
            Arc::downgrade(&pool),
            registry,
            Arc::clone(&addresses),
            updates,
            stopped,
        ));
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let mut http = Client::builder(TokioExecutor::new());
        http.pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_endpoint)
            // `Host` is the Service's, set per call; the URI's authority is the endpoint.
            .set_host(false)
            .pool_timer(hyper_util::rt::TokioTimer::new());
        if config.protocol == Protocol::Http2 {
            http.http2_only(true);
        }
        WeirClient {
            inner: Arc::new(Inner {
                host: endpoints
                    .authority
                    .and_then(|a| HeaderValue::from_str(&a).ok()),
                service: endpoints.name,
                config,
                pool,
                addresses,
                http: http.build(connector),
                budget: Arc::default(),
                metrics,
                _updates: stop,
            }),
        }
    }
}

/// An endpoint's address as a call names it: the URI's authority, and the `Host` sent when
/// the source names no Service.
#[derive(Clone, Debug)]
struct Address {
    authority: Authority,
    host: HeaderValue,
}

impl Address {
    fn of(addr: SocketAddr) -> Result<Self, Error> {
        let text = addr.to_string();
        Ok(Address {
            host: HeaderValue::from_str(&text).map_err(|e| Error::InvalidRequest(e.to_string()))?,
            authority: Authority::try_from(text)
                .map_err(|e| Error::InvalidRequest(e.to_string()))?,
        })
    }
}

/// The [`Address`] of each endpoint of `specs`.
fn addresses_of(specs: &[EndpointSpec]) -> HashMap<SocketAddr, Address> {
    specs
        .iter()
        .filter_map(|s| Some((s.addr, Address::of(s.addr).ok()?)))
        .collect()
}

/// Applies each new endpoint list to the pool until the client is gone.
async fn apply_updates(
    pool: std::sync::Weak<Pool>,
    registry: EndpointRegistry,
    addresses: Arc<ArcSwap<HashMap<SocketAddr, Address>>>,
    mut updates: watch::Receiver<Vec<EndpointSpec>>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            changed = updates.changed() => {
                if changed.is_err() {
                    // The source is gone (a fixed list): its last list stands.
                    return;
                }
            }
        }
        let Some(pool) = pool.upgrade() else { return };
        let specs = updates.borrow_and_update().clone();
        addresses.store(Arc::new(addresses_of(&specs)));
        pool.update(&specs, &registry, Nanos::now());
        registry.prune();
    }
}

impl WeirClient<()> {
    /// A client of `endpoints`, with [`ClientConfig::default`] unless configured.
    pub fn builder(endpoints: Endpoints) -> Builder {
        Builder {
            endpoints,
            config: ClientConfig::default(),
            metrics: None,
        }
    }
}

impl<B> WeirClient<B> {
    /// The endpoints the pool balances over now, with their live state.
    pub fn endpoints(&self) -> Vec<Arc<EndpointState>> {
        self.inner.pool.endpoints()
    }

    pub fn service(&self) -> &str {
        &self.inner.service
    }
}

impl<B> tower_service::Service<Request<B>> for WeirClient<B>
where
    B: http_body::Body + Clone + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Error>>;

    /// Always ready: the pool takes any number of calls (bounded load and ejection steer
    /// them, they do not queue them).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.send(request).await })
    }
}

/// What one attempt came to.
enum Attempt {
    Answered(Response<hyper::body::Incoming>),
    Failed {
        error: Error,
        kind: &'static str,
        /// Nothing reached the endpoint (refused, unreachable): a retry adds no load to it.
        sent_nothing: bool,
    },
}

impl<B> Inner<B>
where
    B: http_body::Body + Clone + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn send(&self, request: Request<B>) -> Result<Response<ResponseBody>, Error> {
        let (parts, body) = request.into_parts();
        let key_hash = self.key_hash(&parts);
        let repeatable = self.config.retry_on.non_idempotent || parts.method.is_idempotent();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let _active = self.budget.start();
        // Held while a retry is under way: what the budget counts.
        let mut _retry_slot = None;
        let mut tried: SmallVec<[SocketAddr; 4]> = SmallVec::new();
        // What the call comes to if no further attempt can be made.
        let mut last: Option<Result<Response<ResponseBody>, Error>> = None;
        let started = Instant::now();
        loop {
            let attempt = tried.len() as u32 + 1;
            let now = Nanos::now();
            let pick = self.pool.pick(
                &PickRequest {
                    tried: &tried,
                    key_hash,
                    now,
                },
                &mut rand::rng(),
            );
            if let Some(m) = &self.metrics {
                m.picks
                    .with_label_values(&[
                        self.service.as_str(),
                        self.pool.algorithm().name(),
                        pick.reason.as_str(),
                    ])
                    .inc();
            }
            let Some(endpoint) = pick.endpoint else {
                // Nothing left to send it to: the last attempt's answer or error stands.
                return last.unwrap_or_else(|| {
                    Err(Error::NoEndpoints {
                        service: self.service.clone(),
                        attempts: attempt - 1,
                    })
                });
            };
            let addr = endpoint.addr();
            let in_flight = self.pool.start_request(&endpoint);
            let span = tracing::debug_span!(
                "weir_client.attempt",
                service = %self.service,
                endpoint = %addr,
                attempt,
                reason = pick.reason.as_str(),
                status = tracing::field::Empty,
            );
            let mut outgoing = Request::from_parts(parts.clone(), body.clone());
            let address = match self.addresses.load().get(&addr) {
                Some(address) => address.clone(),
                None => Address::of(addr)?,
            };
            *outgoing.uri_mut() = endpoint_uri(address.authority, &path)?;
            // HTTP/1.1: `Host` names the Service. HTTP/2 carries the URI's authority (the
            // endpoint) as `:authority`, and a `Host` naming something else would make the
            // request malformed (RFC 9113 §8.3.1): none is sent.
            if self.config.protocol == Protocol::Http2 {
                outgoing.headers_mut().remove(http::header::HOST);
            } else if let Some(host) = &self.host {
                outgoing
                    .headers_mut()
                    .insert(http::header::HOST, host.clone());
            } else if !outgoing.headers().contains_key(http::header::HOST) {
                outgoing
                    .headers_mut()
                    .insert(http::header::HOST, address.host);
            }
            let sent = Instant::now();
            let result = self
                .attempt(outgoing, addr, attempt)
                .instrument(span.clone())
                .await;
            let now = Nanos::now();
            let outcome = match &result {
                Attempt::Answered(response) => outcome_of(response),
                Attempt::Failed { .. } => Outcome::Failure,
            };
            // Feed back: what ejection and the latency signals learn from.
            if let Attempt::Answered(response) = &result {
                span.record("status", response.status().as_u16());
                let latency = sent.elapsed();
                if let Some(m) = &self.metrics {
                    m.response_seconds
                        .with_label_values(&[self.service.as_str()])
                        .observe(latency.as_secs_f64());
                }
                if matches!(outcome, Outcome::Success) {
                    self.pool.observe_latency(&endpoint, latency, now);
                }
            }
            if let Some(until) = self.pool.record(&endpoint, outcome, now) {
                if let Some(m) = &self.metrics {
                    m.ejections
                        .with_label_values(&[self.service.as_str()])
                        .inc();
                }
                tracing::warn!(
                    service = %self.service,
                    endpoint = %addr,
                    ejected_for_secs = until.since(now).as_secs(),
                    "endpoint ejected after consecutive failures"
                );
            }
            tried.push(addr);
            let retry_on = &self.config.retry_on;
            let (wants_retry, sent_nothing) = match &result {
                Attempt::Answered(response) => (
                    retry_on.statuses.contains(&response.status().as_u16()),
                    false,
                ),
                Attempt::Failed {
                    kind, sent_nothing, ..
                } => {
                    if let Some(m) = &self.metrics {
                        m.upstream_errors
                            .with_label_values(&[self.service.as_str(), kind])
                            .inc();
                    }
                    let wanted = if *kind == "timeout" {
                        retry_on.timeouts
                    } else {
                        retry_on.errors
                    };
                    (wanted || *sent_nothing, *sent_nothing)
                }
            };
            let in_time = retry_on.within.is_none_or(|w| started.elapsed() <= w);
            let (routable, draining) = self.pool.counts();
            let mut may_retry = wants_retry
                && in_time
                && repeatable
                && attempt <= self.config.retries
                && routable.max(draining) > tried.len();
            // A connect that reached nobody adds no load: it needs no budget.
            if may_retry && !sent_nothing {
                _retry_slot = self.budget.try_retry();
                may_retry = _retry_slot.is_some();
            }
            let finished = match result {
                Attempt::Answered(response) => {
                    let decision = Decision {
                        endpoint: addr,
                        reason: pick.reason,
                        attempts: attempt,
                        tried_before: tried[..tried.len() - 1].to_vec(),
                    };
                    let (mut head, incoming) = response.into_parts();
                    head.extensions.insert(decision);
                    Ok(Response::from_parts(
                        head,
                        ResponseBody::new(incoming, in_flight),
                    ))
                }
                Attempt::Failed { error, .. } => Err(error),
            };
            if !may_retry {
                return finished;
            }
            if let Some(m) = &self.metrics {
                m.retries.with_label_values(&[self.service.as_str()]).inc();
            }
            tracing::debug!(service = %self.service, endpoint = %addr, attempt, "sending again to another endpoint");
            last = Some(finished);
        }
    }

    /// One attempt, within the attempt timeout.
    async fn attempt(&self, request: Request<B>, addr: SocketAddr, attempts: u32) -> Attempt {
        let after = self.config.attempt_timeout;
        match tokio::time::timeout(after, self.http.request(request)).await {
            Ok(Ok(response)) => Attempt::Answered(response),
            Ok(Err(e)) => {
                let connect = e.is_connect();
                let connect_timeout = connect && is_timeout(&e);
                let kind = if connect_timeout {
                    "timeout"
                } else if connect {
                    "connect"
                } else if is_reset(&e) {
                    "reset"
                } else {
                    "protocol"
                };
                Attempt::Failed {
                    error: Error::Upstream {
                        service: self.service.clone(),
                        endpoint: addr,
                        attempts,
                        source: e,
                    },
                    kind,
                    // A connect that failed before its timeout reached nobody: refused or
                    // unreachable. (One that timed out may have reached a slow endpoint.)
                    sent_nothing: connect && !connect_timeout,
                }
            }
            Err(_) => Attempt::Failed {
                error: Error::Timeout {
                    service: self.service.clone(),
                    endpoint: addr,
                    attempts,
                    after,
                },
                kind: "timeout",
                sent_nothing: false,
            },
        }
    }

    /// The call's hash key: the caller's, or from the configured header or path; random when
    /// the pool hashes and there is none (each call then lands anywhere, bounded load aside).
    fn key_hash(&self, parts: &http::request::Parts) -> u64 {
        if self.pool.algorithm() != Algorithm::ConsistentHash {
            return 0;
        }
        if let Some(key) = parts.extensions.get::<HashKey>() {
            return key.0;
        }
        let from_request = match &self.config.key_from {
            Some(KeyFrom::Header(name)) => {
                parts.headers.get(name).map(|v| HashKey::of(v.as_bytes()))
            }
            Some(KeyFrom::Path) => Some(HashKey::of(parts.uri.path())),
            None => None,
        };
        from_request.map_or_else(rand::random, |k| k.0)
    }
}

/// `http://<authority><path>`.
fn endpoint_uri(authority: Authority, path: &PathAndQuery) -> Result<Uri, Error> {
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path.clone())
        .build()
        .map_err(|e| Error::InvalidRequest(e.to_string()))
}

/// What a response tells the balancer (as the proxy judges it): `Retry-After` is read, in
/// whole seconds, on a 503 only.
fn outcome_of<T>(response: &Response<T>) -> Outcome {
    let status = response.status();
    let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE)
        .then(|| response.headers().get(http::header::RETRY_AFTER))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Outcome::of_response(status.as_u16(), retry_after)
}

/// Whether an error's cause chain holds an I/O error of the given kinds.
fn io_error_is(e: &hyper_util::client::legacy::Error, kinds: &[std::io::ErrorKind]) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if kinds.contains(&io.kind()) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    io_error_is(e, &[std::io::ErrorKind::TimedOut])
}

fn is_reset(e: &hyper_util::client::legacy::Error) -> bool {
    io_error_is(
        e,
        &[
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::ConnectionAborted,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::UnexpectedEof,
        ],
    )
}
