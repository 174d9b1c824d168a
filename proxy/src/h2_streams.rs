//! weir's accept loop for HTTP/2 client connections (issue #9): drives one connection's
//! HTTP/2 codec and hands each new stream to a callback (the gate's, which gives simple
//! streams to the direct path and the rest to Pingora's proxy).
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
use pingora::protocols::http::v2::server::{handshake, H2Accept, H2Options};
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use std::sync::Arc;

/// Malformed streams a connection may open before it is closed (Pingora's own limit).
pub(crate) const MAX_MALFORMED_STREAMS: usize = 32;

/// Serves one HTTP/2 connection (the client preface not yet read) until the client closes it,
/// an error ends it, or after shutdown its streams are done. `on_stream` gets each stream;
/// it must not block (it spawns).
pub(crate) async fn serve_connection(
    stream: Stream,
    options: Option<H2Options>,
    shutdown: &ShutdownWatch,
    mut on_stream: impl FnMut(H2Session),
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
    let mut shutdown = shutdown.clone();
    let mut stopping = false;
    let mut malformed = 0usize;
    loop {
        let accepted = if stopping {
            H2Session::from_h2_conn(&mut conn, Arc::clone(&digest)).await
        } else {
            tokio::select! {
                // The shutdown first, so that a stream and the signal arriving together end
                // the same way every time; accepting is cancel-safe.
                biased;
                _ = shutdown.changed() => {
                    // GOAWAY; the loop goes on until the client's streams are done.
                    conn.graceful_shutdown();
                    stopping = true;
                    continue;
                }
                accepted = H2Session::from_h2_conn(&mut conn, Arc::clone(&digest)) => accepted,
            }
        };
        match accepted {
            Ok(Some(H2Accept::Session(session))) => on_stream(session),
            Ok(Some(H2Accept::Rejected)) => {
                malformed += 1;
                if malformed >= MAX_MALFORMED_STREAMS {
                    tracing::warn!(
                        malformed,
                        "HTTP/2 connection closed after too many malformed requests"
                    );
                    return;
                }
            }
            // The client closed the connection (or GOAWAY was sent and it is done).
            Ok(None) => return,
            Err(e) => {
                // Mostly clients that drop the connection without closing HTTP/2.
                tracing::debug!(error = %e, "HTTP/2 connection ended");
                return;
            }
        }
    }
}
