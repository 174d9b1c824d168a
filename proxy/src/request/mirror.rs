//! Mirrors: copies of a request sent elsewhere while the request itself goes on, their
//! answers discarded. Two kinds: a route's mirrors ([`MirrorRules`]: ingress-nginx's
//! `mirror-target`, Gateway API's `RequestMirror` to a Service), and the warm-up copies
//! `weir.dev/warm-up-mirror` sends to an endpoint in slow start.
//!
//! A mirror never affects its client: it is sent from a task of its own once the request's
//! body is complete (or at once without the body), never waited for; at most
//! [`MAX_MIRRORS_IN_FLIGHT`] are in flight in the process and a body over
//! [`MAX_MIRRORED_BODY`] is not copied — the copy is dropped (counted) instead of holding
//! memory or tasks for a slow target.
//!
//! Must not: send on the request's own connection or delay it.

use crate::app::metrics::Metrics;
use crate::request::copies::{copy_head, Described, Template};
use crate::subrequest::{Deadlines, Destination, Subrequests};
use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora::http::RequestHeader;
use rand::Rng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Copies in flight at once in the process; more are dropped.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 512;

/// The largest body a copy carries; a larger request's copy is dropped.
pub const MAX_MIRRORED_BODY: usize = 1024 * 1024;

/// How long a copy may take: a mirror target slower than this is cut off.
const MIRROR_DEADLINES: Deadlines = Deadlines {
    connect: Duration::from_secs(2),
    read: Duration::from_secs(10),
};

/// Fields a copy sets itself.
const SET_BY_MIRROR: &[&str] = &["x-original-uri"];

/// A route's mirrors, compiled: ingress-nginx's `mirror-target`, or Gateway API's
/// `RequestMirror` filters (several may copy one request).
#[derive(Debug)]
pub struct MirrorRules {
    targets: Vec<MirrorTarget>,
    /// The copies carry the request's body (`mirror-request-body`; always for Gateway API).
    pub body: bool,
}

#[derive(Debug)]
enum MirrorTarget {
    /// A URL (with `$request_uri` filled in) and the copy's `Host`.
    Url {
        url: Template,
        host: Option<HeaderValue>,
    },
    /// An endpoint of a Service, chosen by its balancer, sent the request's own path and
    /// `Host`; only a share of requests (in millionths) is copied.
    Backend {
        pool: Arc<weir_balancer::Pool>,
        share_ppm: u32,
    },
}

impl MirrorRules {
    /// The rules of `mirrors`; `pool_of` finds a backend mirror's pool (one without a
    /// pool is left out, logged: discovery resolves every backend a route names).
    pub fn new<'a>(
        mirrors: impl IntoIterator<Item = &'a weir_discovery::RequestMirror>,
        pool_of: impl Fn(&weir_discovery::BackendKey) -> Option<Arc<weir_balancer::Pool>>,
    ) -> Option<MirrorRules> {
        let mut rules = MirrorRules {
            targets: Vec::new(),
            body: false,
        };
        for mirror in mirrors {
            rules.body |= mirror.body;
            let target = match &mirror.backend {
                Some(backend) => match pool_of(backend) {
                    Some(pool) => MirrorTarget::Backend {
                        pool,
                        share_ppm: mirror.share_ppm,
                    },
                    None => {
                        tracing::error!(%backend, "mirror backend has no pool: left out");
                        continue;
                    }
                },
                None => MirrorTarget::Url {
                    url: Template::new(&mirror.url),
                    host: mirror
                        .host
                        .as_deref()
                        .and_then(|h| HeaderValue::try_from(h).ok()),
                },
            };
            rules.targets.push(target);
        }
        (!rules.targets.is_empty()).then_some(rules)
    }

    /// The copies of `req` (its body to come): `Ok(None)` when no mirror takes this request
    /// (a share below all), `Err` when a copy cannot be made.
    pub fn copy(
        &self,
        req: &impl crate::http::request_view::RequestView,
        about: &Described<'_>,
    ) -> Result<Option<PendingCopy>, String> {
        let failed = |e: pingora::BError| e.to_string();
        let mut copies = smallvec::SmallVec::new();
        for target in &self.targets {
            match target {
                MirrorTarget::Url { url, host } => {
                    let url: http::Uri = url
                        .fill(about)
                        .parse()
                        .map_err(|e| format!("mirror-target is not a URL for this request: {e}"))?;
                    let (to, mut head) = copy_head(req, req.method().clone(), &url, SET_BY_MIRROR)?;
                    if let Some(host) = host {
                        head.insert_header(http::header::HOST, host.clone())
                            .map_err(failed)?;
                    }
                    head.insert_header("x-original-uri", about.request_uri)
                        .map_err(failed)?;
                    copies.push((to, head));
                }
                MirrorTarget::Backend { pool, share_ppm } => {
                    let mut rng = rand::rng();
                    if *share_ppm < 1_000_000 && rng.random_range(0..1_000_000) >= *share_ppm {
                        continue;
                    }
                    let pick = pool.pick(
                        &weir_balancer::PickRequest {
                            tried: &[],
                            key_hash: 0,
                            now: weir_balancer::Nanos::now(),
                        },
                        &mut rng,
                    );
                    // A mirror Service without an endpoint gets no copy; the others do.
                    if let Some(endpoint) = pick.endpoint {
                        copies.push(same_request_to(req, endpoint.addr())?);
                    }
                }
            }
        }
        if copies.is_empty() {
            return Ok(None);
        }
        Ok(Some(PendingCopy {
            kind: "mirror",
            copies,
            body: self.body.then(BytesMut::new),
        }))
    }
}

/// The head of a copy of `req` for the endpoint at `to`: the same method, path, query and
/// fields, and the `Host` the client asked for (the upstream sees the name it serves, as
/// with the request itself).
fn same_request_to(
    req: &impl crate::http::request_view::RequestView,
    to: std::net::SocketAddr,
) -> Result<(Destination, RequestHeader), String> {
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |p| p.as_str());
    let url: http::Uri = format!("http://{to}{path}")
        .parse()
        .map_err(|e| format!("copy to {to}: {e}"))?;
    let (dest, mut head) = copy_head(req, req.method().clone(), &url, &[])?;
    // HTTP/2 requests carry the name in `:authority`, not `Host`.
    let host = match req.field(&http::header::HOST) {
        Some(host) => HeaderValue::from_bytes(host).ok(),
        None => HeaderValue::from_str(req.authority()).ok(),
    };
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        head.insert_header(http::header::HOST, host)
            .map_err(|e| e.to_string())?;
    }
    Ok((dest, head))
}

/// Copies of one request waiting for its body (one per mirror that takes it).
pub struct PendingCopy {
    kind: &'static str,
    copies: smallvec::SmallVec<[(Destination, RequestHeader); 1]>,
    /// The body so far (`None`: the copies carry none).
    body: Option<BytesMut>,
}

impl PendingCopy {
    /// A warm-up copy of `req` for the endpoint at `to`: the same request, no body.
    pub fn warm_up(
        req: &impl crate::http::request_view::RequestView,
        to: std::net::SocketAddr,
    ) -> Result<PendingCopy, String> {
        Ok(PendingCopy {
            kind: "warm_up",
            copies: smallvec::smallvec![same_request_to(req, to)?],
            body: None,
        })
    }

    /// Whether the copy carries the request's body (and so waits for it).
    pub fn wants_body(&self) -> bool {
        self.body.is_some()
    }

    /// Adds a piece of the request's body; `false` when the copy has grown over
    /// [`MAX_MIRRORED_BODY`] and is to be dropped.
    pub fn add_body(&mut self, piece: &[u8]) -> bool {
        match &mut self.body {
            None => true,
            Some(body) if body.len() + piece.len() <= MAX_MIRRORED_BODY => {
                body.extend_from_slice(piece);
                true
            }
            Some(_) => false,
        }
    }
}

/// Sends copies, bounded in number, and counts them.
pub struct MirrorSender {
    subrequests: Arc<Subrequests>,
    in_flight: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl std::fmt::Debug for MirrorSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MirrorSender")
    }
}

impl MirrorSender {
    pub fn new(subrequests: Arc<Subrequests>, metrics: Metrics) -> MirrorSender {
        MirrorSender {
            subrequests,
            in_flight: Arc::default(),
            metrics,
        }
    }

    /// Counts a copy that will not be sent.
    pub fn dropped(&self, kind: &'static str) {
        self.count(kind, "dropped");
    }

    fn count(&self, kind: &'static str, result: &'static str) {
        self.metrics
            .mirror_requests_total
            .with_label_values(&[kind, result])
            .inc();
    }

    /// Sends each of `copy`'s copies from a task of its own (dropped when too many are in
    /// flight).
    pub fn send(&self, copy: PendingCopy) {
        let body = copy.body.map(BytesMut::freeze);
        for (to, mut head) in copy.copies {
            if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_MIRRORS_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                self.dropped(copy.kind);
                continue;
            }
            if let Some(body) = &body {
                if head
                    .insert_header(http::header::CONTENT_LENGTH, body.len())
                    .is_err()
                {
                    self.in_flight.fetch_sub(1, Ordering::Relaxed);
                    self.dropped(copy.kind);
                    continue;
                }
            }
            let subrequests = Arc::clone(&self.subrequests);
            let in_flight = Arc::clone(&self.in_flight);
            let metrics = self.metrics.clone();
            let kind = copy.kind;
            let body = body.clone().filter(|b: &Bytes| !b.is_empty());
            tokio::spawn(async move {
                let sent = subrequests.send(&to, head, body, MIRROR_DEADLINES).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let result = match &sent {
                    Ok(_) => "sent",
                    Err(e) => {
                        tracing::debug!(error = %e, kind, "mirror copy failed");
                        "failed"
                    }
                };
                metrics
                    .mirror_requests_total
                    .with_label_values(&[kind, result])
                    .inc();
            });
        }
    }
}
