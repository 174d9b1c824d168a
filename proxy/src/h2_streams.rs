//! weir's accept loop for HTTP/2 client connections (issue #9): drives one connection's
//! HTTP/2 codec and hands each new stream to a callback (the gate's, which gives simple
//! streams to the direct path and the rest to Pingora's proxy). The streams the callback
//! returns are served on the connection's own task, side by side; the connection itself is
//! polled only when its waker fired ([`ConnectionWake`]).
//!
//! Why weir runs it rather than Pingora: Pingora's loop passes every stream to pingora-proxy,
//! whose per-request cost (a ~90 KiB request future, its HTTP/1 client codec, a pool
//! round-trip per response) made h2c 0.70x nginx (docs/benchmarks.md). The loop keeps what
//! Pingora's does:
//! - streams Pingora's session refuses as malformed (answered 400 or reset there) count
//!   against a per-connection budget; at [`MAX_MALFORMED_STREAMS`] the connection ends
//!   (Pingora's public accept call starts a fresh count on every call, so weir counts);
//! - at shutdown, GOAWAY, then streams already opened are still served until the client is
//!   done;
//! - the codec's limits (header list size, concurrent streams) are the proxy's HTTP/2
//!   options, Pingora's bounded defaults unless set.
//!
//! Must not: read or answer requests (that is the callback's).

use crate::direct::H2Session;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::task::AtomicWaker;
use pingora::protocols::http::v2::server::{handshake, H2Accept, H2Options};
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Malformed streams a connection may open before it is closed (Pingora's own limit).
pub(crate) const MAX_MALFORMED_STREAMS: usize = 32;

/// Serves one HTTP/2 connection (the client preface not yet read) until the client closes it,
/// an error ends it, or after shutdown its streams are done. `on_stream` gets each stream and
/// returns the future that serves it on this connection's task, or `None` when it has
/// handed the stream on (spawned it). Streams still being served when the connection ends
/// are run to their end (they fail their writes, and are logged and counted as such).
pub(crate) async fn serve_connection<S: Future<Output = ()>>(
    stream: Stream,
    options: Option<H2Options>,
    shutdown: &ShutdownWatch,
    mut on_stream: impl FnMut(H2Session) -> Option<S>,
) {
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let mut conn = match handshake(stream, options).await {
        Ok(conn) => conn,
        Err(e) => {
            // Clients that are not HTTP/2 after all, or that went away: not weir's error.
            tracing::debug!(error = %e, "HTTP/2 handshake failed");
            return;
        }
    };
    // Served here rather than spawned: a task per stream cost ~2,000 instructions a request
    // (spawning, moving the future into the task, completing it), and the stream's writes
    // wake this task anyway, which alone moves them onto the socket (callgrind, h2c).
    let mut serving = FuturesUnordered::new();
    // The connection is polled only when it asked to be (its socket, or a stream's write):
    // polling it whenever a stream's upstream answered cost more than the tasks saved.
    let connection_wake = Arc::new(ConnectionWake::default());
    let connection_waker = Waker::from(Arc::clone(&connection_wake));
    let mut shutdown = shutdown.clone();
    let mut shutdown_signal = std::pin::pin!(shutdown.changed());
    let mut stopping = false;
    let mut malformed = 0usize;
    loop {
        // `None`: the shutdown signal.
        let event = std::future::poll_fn(|cx| {
            // The shutdown first, so that a stream and the signal arriving together end the
            // same way every time; accepting is cancel-safe.
            if !stopping && shutdown_signal.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            // The streams are driven while accepting waits: after GOAWAY, the connection
            // ends only when they are done.
            while let Poll::Ready(Some(())) = serving.poll_next_unpin(cx) {}
            connection_wake.task.register(cx.waker());
            if connection_wake.woken.swap(false, Ordering::AcqRel) {
                let accept =
                    std::pin::pin!(H2Session::from_h2_conn(&mut conn, Arc::clone(&digest)));
                if let Poll::Ready(accepted) =
                    accept.poll(&mut Context::from_waker(&connection_waker))
                {
                    return Poll::Ready(Some(accepted));
                }
            }
            Poll::Pending
        })
        .await;
        // Whatever came of it, the connection is polled again: it may hold more frames
        // already read, or a GOAWAY to send.
        connection_wake.woken.store(true, Ordering::Release);
        let Some(accepted) = event else {
            // GOAWAY; the loop goes on until the client's streams are done.
            conn.graceful_shutdown();
            stopping = true;
            continue;
        };
        match accepted {
            Ok(Some(H2Accept::Session(session))) => {
                if let Some(served) = on_stream(session) {
                    serving.push(served);
                }
            }
            Ok(Some(H2Accept::Rejected)) => {
                malformed += 1;
                if malformed >= MAX_MALFORMED_STREAMS {
                    tracing::warn!(
                        malformed,
                        "HTTP/2 connection closed after too many malformed requests"
                    );
                    break;
                }
            }
            // The client closed the connection (or GOAWAY was sent and it is done).
            Ok(None) => break,
            Err(e) => {
                // Mostly clients that drop the connection without closing HTTP/2.
                tracing::debug!(error = %e, "HTTP/2 connection ended");
                break;
            }
        }
    }
    // Without the connection, what is left of its streams fails at once: each is finished
    // (logged, counted) rather than dropped.
    drop(conn);
    while serving.next().await.is_some() {}
}

/// The waker the HTTP/2 connection is polled with: it notes that the connection asked to be
/// polled again, then wakes the task, which also serves the connection's streams.
struct ConnectionWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Default for ConnectionWake {
    fn default() -> Self {
        // Polled first without having been woken.
        ConnectionWake {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl Wake for ConnectionWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}
