//! Mirrors: copies of a request sent elsewhere while the request itself goes on, their
//! answers discarded. Two kinds: a route's `mirror-target` ([`MirrorRules`]), and the
//! warm-up copies `weir.dev/warm-up-mirror` sends to an endpoint in slow start.
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

/// A route's `mirror-target`, compiled.
#[derive(Debug)]
pub struct MirrorRules {
    url: Template,
    host: Option<HeaderValue>,
    /// The copy carries the request's body (`mirror-request-body`).
    pub body: bool,
}

impl MirrorRules {
    pub fn new(mirror: &weir_discovery::RequestMirror) -> MirrorRules {
        MirrorRules {
            url: Template::new(&mirror.url),
            host: mirror
                .host
                .as_deref()
                .and_then(|h| HeaderValue::try_from(h).ok()),
            body: mirror.body,
        }
    }

    /// The copy of `req` (its body to come), or why none can be made for it.
    pub fn copy(
        &self,
        req: &impl crate::http::request_view::RequestView,
        about: &Described<'_>,
    ) -> Result<PendingCopy, String> {
        let url: http::Uri = self
            .url
            .fill(about)
            .parse()
            .map_err(|e| format!("mirror-target is not a URL for this request: {e}"))?;
        let (to, mut head) = copy_head(req, req.method().clone(), &url, SET_BY_MIRROR)?;
        let failed = |e: pingora::BError| e.to_string();
        if let Some(host) = &self.host {
            head.insert_header(http::header::HOST, host.clone())
                .map_err(failed)?;
        }
        head.insert_header("x-original-uri", about.request_uri)
            .map_err(failed)?;
        Ok(PendingCopy {
            kind: "mirror",
            to,
            head,
            body: self.body.then(BytesMut::new),
        })
    }
}

/// A copy waiting for its request's body.
pub struct PendingCopy {
    kind: &'static str,
    to: Destination,
    head: RequestHeader,
    /// The body so far (`None`: the copy carries none).
    body: Option<BytesMut>,
}

impl PendingCopy {
    /// A warm-up copy of `req` for the endpoint at `to`: the same request, no body.
    pub fn warm_up(
        req: &impl crate::http::request_view::RequestView,
        to: std::net::SocketAddr,
    ) -> Result<PendingCopy, String> {
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path(), |p| p.as_str());
        let url: http::Uri = format!("http://{to}{path}")
            .parse()
            .map_err(|e| format!("warm-up copy: {e}"))?;
        let (dest, mut head) = copy_head(req, req.method().clone(), &url, &[])?;
        // The upstream sees the name it serves, as with the request itself.
        if let Some(host) = req
            .field(&http::header::HOST)
            .and_then(|h| HeaderValue::from_bytes(h).ok())
        {
            head.insert_header(http::header::HOST, host)
                .map_err(|e| e.to_string())?;
        }
        Ok(PendingCopy {
            kind: "warm_up",
            to: dest,
            head,
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

    /// Sends `copy` from a task of its own (dropped when too many are in flight).
    pub fn send(&self, mut copy: PendingCopy) {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_MIRRORS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.dropped(copy.kind);
            return;
        }
        let body = copy.body.take().map(BytesMut::freeze);
        if let Some(body) = &body {
            if copy
                .head
                .insert_header(http::header::CONTENT_LENGTH, body.len())
                .is_err()
            {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                self.dropped(copy.kind);
                return;
            }
        }
        let subrequests = Arc::clone(&self.subrequests);
        let in_flight = Arc::clone(&self.in_flight);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let body = body.filter(|b: &Bytes| !b.is_empty());
            let sent = subrequests
                .send(&copy.to, copy.head, body, MIRROR_DEADLINES)
                .await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let result = match &sent {
                Ok(_) => "sent",
                Err(e) => {
                    tracing::debug!(error = %e, kind = copy.kind, "mirror copy failed");
                    "failed"
                }
            };
            metrics
                .mirror_requests_total
                .with_label_values(&[copy.kind, result])
                .inc();
        });
    }
}
