//! Idle upstream connections of the direct HTTP/1.1 path: one bounded pool per worker thread,
//! keyed by endpoint address.
//!
//! Why not Pingora's pool: handing a connection back to it starts a task that watches the
//! idle connection, after every response (~7,000 instructions per request, measured). Here a
//! connection is checked when it is taken instead — a close, an error or bytes nobody asked
//! for make it unusable, the same test Pingora's pool applies — and a sweeper task per thread
//! closes what has been idle too long every few seconds.
//!
//! Must not: be touched across an `.await` (every call is synchronous, so the thread-local
//! pool is never borrowed twice), or hand out a connection idle for longer than
//! [`UPSTREAM_IDLE_TIMEOUT`] (the upstream may be about to close it).

use crate::request::timeouts::UPSTREAM_IDLE_TIMEOUT;
use futures::FutureExt;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Idle connections kept per endpoint and thread (the most recently used are taken first,
/// the oldest dropped first). At least as many as requests in flight to one endpoint under a
/// steady load, or every response beyond it closes a connection the next request reopens:
/// at 32, 64 HTTP/2 streams in flight left ~12,000 upstream sockets in TIME_WAIT in 4 s.
const PER_ENDPOINT: usize = 256;
/// Idle connections kept per thread in all.
const PER_THREAD: usize = 1024;
/// How often a thread's sweeper closes connections idle for too long.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

thread_local! {
    static POOL: RefCell<IdlePool> = RefCell::new(IdlePool::default());
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

#[derive(Default)]
struct IdlePool {
    /// foldhash, not the default SipHash: the keys are endpoint addresses from the config,
    /// not chosen by clients, and SipHash was ~200 instructions per lookup (two a request).
    by_endpoint: HashMap<SocketAddr, VecDeque<Idle>, foldhash::fast::FixedState>,
    count: usize,
    sweeper_started: bool,
}

/// An idle connection to `addr` that is still usable, if this thread has one.
pub fn take(addr: SocketAddr) -> Option<TcpStream> {
    POOL.try_with(|pool| pool.borrow_mut().take(addr, Instant::now()))
        .ok()
        .flatten()
}

/// Keeps a connection to `addr` that finished a response and may be reused (dropped, and so
/// closed, when the pool is full).
pub fn put(addr: SocketAddr, stream: TcpStream) {
    let start_sweeper = POOL
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            pool.put(addr, stream, Instant::now());
            !std::mem::replace(&mut pool.sweeper_started, true)
        })
        .unwrap_or(false);
    if start_sweeper {
        // On this thread's runtime (one per worker thread): it sweeps this thread's pool.
        tokio::spawn(async {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let _ = POOL.try_with(|pool| pool.borrow_mut().sweep(Instant::now()));
            }
        });
    }
}

impl IdlePool {
    fn take(&mut self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        let idle = self.by_endpoint.get_mut(&addr)?;
        while let Some(mut connection) = idle.pop_back() {
            self.count -= 1;
            if usable(&mut connection, now) {
                return Some(connection.stream);
            }
        }
        None
    }

    fn put(&mut self, addr: SocketAddr, stream: TcpStream, now: Instant) {
        if self.count >= PER_THREAD {
            self.sweep(now);
            if self.count >= PER_THREAD {
                return; // full of live connections: this one is closed
            }
        }
        let idle = self.by_endpoint.entry(addr).or_default();
        if idle.len() >= PER_ENDPOINT {
            idle.pop_front();
            self.count -= 1;
        }
        idle.push_back(Idle { stream, since: now });
        self.count += 1;
    }

    /// Closes connections idle too long or no longer usable; forgets endpoints with none.
    fn sweep(&mut self, now: Instant) {
        let mut count = 0;
        self.by_endpoint.retain(|_, idle| {
            idle.retain_mut(|connection| usable(connection, now));
            count += idle.len();
            !idle.is_empty()
        });
        self.count = count;
    }
}

/// Not idle for too long, and nothing to read: not closed, not broken, no stray bytes (which
/// would be taken for the next response).
fn usable(connection: &mut Idle, now: Instant) -> bool {
    if now.duration_since(connection.since) >= UPSTREAM_IDLE_TIMEOUT {
        return false;
    }
    let mut byte = [0u8; 1];
    tokio::task::unconstrained(connection.stream.read(&mut byte))
        .now_or_never()
        .is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair: our end, and the other end.
    async fn pair(listener: &TcpListener) -> (TcpStream, std::net::TcpStream) {
        let addr = listener.local_addr().expect("addr");
        let ours = TcpStream::connect(addr).await.expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        (ours, theirs)
    }

    #[tokio::test]
    async fn a_pool_hands_back_live_connections_and_drops_closed_stale_and_surplus_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut pool = IdlePool::default();
        let now = Instant::now();
        assert!(pool.take(addr, now).is_none());

        let (live, _live_peer) = pair(&listener).await;
        pool.put(addr, live, now);
        assert_eq!(pool.count, 1);
        assert!(
            pool.take(addr, now).is_some(),
            "a live idle connection is reused"
        );
        assert_eq!(pool.count, 0);

        // Closed by the upstream while idle: never handed out.
        let (closed, closed_peer) = pair(&listener).await;
        pool.put(addr, closed, now);
        drop(closed_peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(addr, now).is_none());

        // Stray bytes from the upstream: never handed out.
        let (chatty, mut chatty_peer) = pair(&listener).await;
        pool.put(addr, chatty, now);
        std::io::Write::write_all(&mut chatty_peer, b"HTTP/1.1 408").expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(addr, now).is_none());

        // Idle longer than the idle timeout: never handed out; the sweep forgets it.
        let (old, _old_peer) = pair(&listener).await;
        pool.put(addr, old, now);
        let later = now + UPSTREAM_IDLE_TIMEOUT;
        pool.sweep(later);
        assert_eq!(pool.count, 0);
        assert!(pool.by_endpoint.is_empty());

        // At most PER_ENDPOINT per endpoint: the oldest go first.
        let mut peers = Vec::new();
        for _ in 0..PER_ENDPOINT + 3 {
            let (s, peer) = pair(&listener).await;
            pool.put(addr, s, now);
            peers.push(peer);
        }
        assert_eq!(pool.count, PER_ENDPOINT);
    }
}
