//! Parked connections: a plaintext HTTP/1 keep-alive connection that has waited
//! [`PARK_AFTER`] for its next request gives up its task and its socket wrapper and waits as
//! a file descriptor in its thread's epoll set ([`park`]), until bytes (or the peer's close)
//! arrive, its idle time runs out, or weir shuts down.
//!
//! Why: most of an ingress's connections are idle keep-alive connections. A waiting task,
//! tokio's registration and Pingora's stream cost about 2 KiB per connection however small
//! the task is made; a parked connection costs its entry here (under 100 bytes) and the
//! kernel's epoll item, as an idle connection costs nginx its connection structure and
//! nothing else. A busy connection never parks: its next request comes within
//! [`PARK_AFTER`], so the request path pays nothing for this.
//!
//! Each worker thread has one lot ([`Lot`]) and one task that waits on its epoll set: when a
//! parked descriptor is readable it leaves the set, becomes a Pingora stream again and goes
//! back to the gate that parked it (a new task of the connection's own); once a second,
//! parked connections whose idle time has run out are closed, and at shutdown all are.
//!
//! Must not: park a connection with state above its socket (TLS, a PROXY header's
//! addresses, unread or unwritten bytes): only a plaintext stream read to the end of its
//! last request, with everything written, is parked ([`parkable`]).

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::ShutdownWatch;
use prometheus::IntGauge;
use slab::Slab;
use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// How long a keep-alive connection waits for its next request on a task of its own before
/// it is parked. Long enough that a connection in use (a page's requests, a client's
/// request loop) never parks; short next to the idle timeout (60 s).
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(1);

/// How often a lot closes the parked connections whose idle time has run out: their idle
/// timeout is kept to within this.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A gate that parks connections: it gets each back when its bytes arrive, and is told when
/// the lot closes one (its `--max-connections` slot is free again).
pub(crate) trait Parker: Send + Sync {
    /// Serves `stream`, a parked connection whose next bytes have come, on a task of its own.
    fn resume(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch);
    /// A connection it parked was closed by the lot.
    fn closed(&self);
}

/// One parked connection: 12 bytes, as it is what 10,000 idle connections cost.
struct Parked {
    fd: OwnedFd,
    /// When its idle time runs out, in whole seconds of the lot's clock ([`Lot::secs`]).
    idle_until: u32,
    /// Its gate, in [`Lot::parkers`].
    parker: u32,
}

/// One worker thread's parked connections and the epoll set they wait in.
struct Lot {
    /// Registers and deregisters descriptors; the lot's task polls the set itself.
    registry: mio::Registry,
    state: Mutex<LotState>,
    /// False once the lot's task has ended (its runtime shut down): the next park on this
    /// thread starts a new lot.
    alive: AtomicBool,
    /// The server's shutdown signal (one for all its listeners).
    shutdown: ShutdownWatch,
    /// `weir_connections_parked`.
    gauge: IntGauge,
    /// Time zero of the lot's clock.
    epoch: Instant,
}

struct LotState {
    parked: Slab<Parked>,
    /// The gates that parked connections here (one per listener).
    parkers: Vec<Arc<dyn Parker>>,
}

thread_local! {
    static LOT: RefCell<Option<Arc<Lot>>> = const { RefCell::new(None) };
}

/// Whether `stream` holds nothing above its socket, so that its descriptor is the whole
/// connection: plaintext, without a PROXY header's addresses.
pub(crate) fn parkable(stream: &Stream) -> bool {
    stream.get_ssl_digest().is_none() && stream.get_proxy_digest().is_none()
}

/// Parks `stream`, which must be [`parkable`], read to the end of its last request and with
/// its answers written: `parker` gets it back when bytes arrive, or hears that it was closed
/// once its idle time runs out (at `idle_until`) or weir shuts down. `gauge` counts the
/// connections parked (the first park of a thread's lot sets it).
///
/// Returns false if the connection was closed instead (at shutdown, or if parking failed:
/// it is idle, nothing is lost); `parker` is then not told.
pub(crate) fn park(
    stream: Stream,
    shutdown: &ShutdownWatch,
    gauge: &IntGauge,
    idle_until: Instant,
    parker: Arc<dyn Parker>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let Ok(stream) = stream.into_any().downcast::<L4Stream>() else {
        tracing::debug!("an idle connection that is not a plain socket: closed");
        return false;
    };
    // Unsafe: Pingora's stream gives its descriptor only as a number.
    // SAFETY: the descriptor is open while `stream` lives, which is past this statement.
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned();
    // Dropping the stream closes its descriptor and tokio's registration; the duplicate
    // keeps the socket.
    drop(stream);
    let fd = match fd {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(error = %e, "parking an idle connection: closed");
            return false;
        }
    };
    let Some(lot) = Lot::of_this_thread(shutdown, gauge) else {
        return false;
    };
    let idle_until = lot.secs(idle_until, true);
    let raw = fd.as_raw_fd();
    let mut state = lot.state();
    let parker = state.index_of(parker);
    let entry = state.parked.vacant_entry();
    // Registered before it is stored, so that a failure leaves nothing behind; the lot's
    // task takes the entry only after this lock is released.
    let registered = lot.registry.register(
        &mut mio::unix::SourceFd(&raw),
        mio::Token(entry.key()),
        mio::Interest::READABLE,
    );
    match registered {
        Ok(()) => {
            entry.insert(Parked {
                fd,
                idle_until,
                parker,
            });
            lot.gauge.inc();
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "parking an idle connection: closed");
            false
        }
    }
}

/// How many connections are parked on this thread (for tests).
#[cfg(test)]
fn parked_here() -> usize {
    LOT.with(|lot| {
        lot.borrow()
            .as_ref()
            .map_or(0, |lot| lot.state().parked.len())
    })
}

impl LotState {
    /// `parker`'s index in the table, added if new.
    fn index_of(&mut self, parker: Arc<dyn Parker>) -> u32 {
        let known = self
            .parkers
            .iter()
            .position(|p| std::ptr::addr_eq(Arc::as_ptr(p), Arc::as_ptr(&parker)));
        let index = known.unwrap_or_else(|| {
            self.parkers.push(parker);
            self.parkers.len() - 1
        });
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    /// Closes the parked connection `entry`, telling its gate.
    fn closed(&self, entry: Parked) {
        drop(entry.fd);
        if let Some(parker) = self.parkers.get(entry.parker as usize) {
            parker.closed();
        }
    }
}

impl Lot {
    /// This thread's lot, started on the current runtime if there is none.
    fn of_this_thread(shutdown: &ShutdownWatch, gauge: &IntGauge) -> Option<Arc<Lot>> {
        LOT.with(|slot| {
            let mut slot = slot.borrow_mut();
            if let Some(lot) = slot.as_ref().filter(|lot| lot.alive.load(Ordering::Acquire)) {
                return Some(Arc::clone(lot));
            }
            let started = Lot::start(shutdown, gauge);
            if let Err(e) = &started {
                // Tried again at the next park (descriptors may have run out for a while).
                tracing::debug!(error = %e, "no epoll set for idle connections: closing them instead");
            }
            *slot = started.ok();
            slot.clone()
        })
    }

    fn start(shutdown: &ShutdownWatch, gauge: &IntGauge) -> std::io::Result<Arc<Lot>> {
        let poll = mio::Poll::new()?;
        let lot = Arc::new(Lot {
            registry: poll.registry().try_clone()?,
            state: Mutex::new(LotState {
                parked: Slab::new(),
                parkers: Vec::new(),
            }),
            alive: AtomicBool::new(true),
            shutdown: shutdown.clone(),
            gauge: gauge.clone(),
            epoch: Instant::now(),
        });
        // SAFETY: `poll` owns its epoll descriptor, open and the same for as long as it lives.
        #[allow(unsafe_code)]
        let set = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }?;
        tokio::spawn(Arc::clone(&lot).run(set));
        Ok(lot)
    }

    fn state(&self) -> MutexGuard<'_, LotState> {
        // Nothing panics while holding the lock; a poisoned lot is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `at` on the lot's clock in whole seconds, rounded up (`up`: a deadline, never early)
    /// or down (the present, so a deadline is reached only once it has passed).
    fn secs(&self, at: Instant, up: bool) -> u32 {
        let since = at.saturating_duration_since(self.epoch);
        let secs = since.as_secs() + u64::from(up && since.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// The lot's task: resumes connections whose bytes arrived, closes those whose idle
    /// time ran out, and all of them at shutdown.
    async fn run(self: Arc<Self>, mut set: AsyncFd<mio::Poll>) {
        struct Ended<'a>(&'a AtomicBool);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _ended = Ended(&self.alive);
        let mut events = mio::Events::with_capacity(256);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                ready = set.readable_mut() => {
                    let Ok(mut ready) = ready else { break };
                    loop {
                        match ready.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                            Ok(()) if events.is_empty() => break,
                            Ok(()) => self.resume_ready(&events),
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "polling idle connections");
                                break;
                            }
                        }
                    }
                    ready.clear_ready();
                }
                _ = sweep.tick() => self.close_idle(Instant::now()),
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        // Shut down (or the runtime is going): every parked connection is closed.
        let mut state = self.state();
        let closed: Vec<Parked> = state.parked.drain().collect();
        self.gauge.sub(closed.len() as i64);
        for entry in closed {
            state.closed(entry);
        }
    }

    /// Gives each connection of `events` back to its gate, as a Pingora stream again.
    fn resume_ready(&self, events: &mio::Events) {
        let woken: Vec<(Parked, Option<Arc<dyn Parker>>)> = {
            let mut state = self.state();
            let woken: Vec<Parked> = events
                .iter()
                .filter_map(|event| state.parked.try_remove(event.token().0))
                .collect();
            woken
                .into_iter()
                .map(|entry| {
                    let parker = state.parkers.get(entry.parker as usize).cloned();
                    (entry, parker)
                })
                .collect()
        };
        self.gauge.sub(woken.len() as i64);
        for (Parked { fd, .. }, parker) in woken {
            let Some(parker) = parker else { continue };
            let raw = fd.as_raw_fd();
            let _ = self.registry.deregister(&mut mio::unix::SourceFd(&raw));
            let stream = match tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "resuming an idle connection: closed");
                    parker.closed();
                    continue;
                }
            };
            let mut stream = L4Stream::from(stream);
            // Addresses are read from the descriptor when first asked for, as for a newly
            // accepted connection.
            stream.set_socket_digest(SocketDigest::from_raw_fd(raw));
            parker.resume(Box::new(stream), self.shutdown.clone());
        }
    }

    /// Closes the parked connections whose idle time has run out by `now`.
    fn close_idle(&self, now: Instant) {
        let now = self.secs(now, false);
        let mut state = self.state();
        let expired: Vec<usize> = state
            .parked
            .iter()
            .filter(|(_, entry)| entry.idle_until <= now)
            .map(|(key, _)| key)
            .collect();
        self.gauge.sub(expired.len() as i64);
        for key in expired {
            // Closing the descriptor, its only one, takes it out of the epoll set.
            if let Some(entry) = state.parked.try_remove(key) {
                state.closed(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::protocols::l4::socket::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    /// A gate for tests: sends resumed streams on, counts closed ones.
    struct TestGate {
        resumed: mpsc::UnboundedSender<Stream>,
        closed: AtomicUsize,
    }

    impl Parker for TestGate {
        fn resume(self: Arc<Self>, stream: Stream, _shutdown: ShutdownWatch) {
            let _ = self.resumed.send(stream);
        }
        fn closed(&self) {
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    struct Setup {
        gate: Arc<TestGate>,
        resumed: mpsc::UnboundedReceiver<Stream>,
        gauge: IntGauge,
        stop: tokio::sync::watch::Sender<bool>,
        shutdown: ShutdownWatch,
    }

    impl Setup {
        fn new() -> Setup {
            let (tx, resumed) = mpsc::unbounded_channel();
            let (stop, shutdown) = tokio::sync::watch::channel(false);
            Setup {
                gate: Arc::new(TestGate {
                    resumed: tx,
                    closed: AtomicUsize::new(0),
                }),
                resumed,
                gauge: IntGauge::new("parked", "parked").unwrap_or_else(|e| panic!("{e}")),
                stop,
                shutdown,
            }
        }

        /// Parks a new connection idle for `idle`; returns its client side.
        async fn park_one(&self, idle: Duration) -> std::io::Result<tokio::net::TcpStream> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
            let (accepted, _) = listener.accept().await?;
            let stream: Stream = Box::new(L4Stream::from(accepted));
            let until = Instant::now() + idle;
            let gate: Arc<dyn Parker> = self.gate.clone();
            assert!(park(stream, &self.shutdown, &self.gauge, until, gate));
            Ok(client)
        }

        /// (connections parked here, the gauge, closed ones the gate heard of)
        fn counts(&self) -> (usize, i64, usize) {
            let closed = self.gate.closed.load(Ordering::Relaxed);
            (parked_here(), self.gauge.get(), closed)
        }
    }

    /// Reads until the peer closes; fails after 5 s.
    async fn closed_by_peer(client: &mut tokio::net::TcpStream) -> std::io::Result<()> {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte))
            .await
            .map_err(std::io::Error::other)??;
        assert_eq!(read, 0, "closed");
        Ok(())
    }

    /// Parks, then resumes on the client's bytes: the resumed stream reads them and writes
    /// to the same client, and carries its peer's address.
    #[tokio::test]
    async fn a_parked_connection_comes_back_when_bytes_arrive() -> std::io::Result<()> {
        let mut setup = Setup::new();
        let mut client = setup.park_one(Duration::from_secs(60)).await?;
        assert_eq!(setup.counts(), (1, 1, 0));
        client.write_all(b"next").await?;
        let resumed = tokio::time::timeout(Duration::from_secs(5), setup.resumed.recv());
        let mut stream = resumed
            .await
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other("no stream"))?;
        assert_eq!(setup.counts(), (0, 0, 0));
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        assert_eq!(peer, Some(SocketAddr::Inet(client.local_addr()?)));
        let mut read = [0u8; 4];
        stream.read_exact(&mut read).await?;
        assert_eq!(&read, b"next");
        stream.write_all(b"answer").await?;
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).await?;
        assert_eq!(&answer, b"answer");
        Ok(())
    }

    /// A parked connection whose idle time runs out is closed (within the sweep period) and
    /// its gate told; one whose time has not stays parked.
    #[tokio::test]
    async fn idle_time_running_out_closes_a_parked_connection() -> std::io::Result<()> {
        let setup = Setup::new();
        let mut expiring = setup.park_one(Duration::from_millis(100)).await?;
        let _staying = setup.park_one(Duration::from_secs(60)).await?;
        assert_eq!(setup.counts(), (2, 2, 0));
        closed_by_peer(&mut expiring).await?;
        assert_eq!(setup.counts(), (1, 1, 1));
        Ok(())
    }

    /// At shutdown every parked connection is closed, and nothing parks after it.
    #[tokio::test]
    async fn shutdown_closes_parked_connections() -> std::io::Result<()> {
        let setup = Setup::new();
        let mut client = setup.park_one(Duration::from_secs(60)).await?;
        assert_eq!(setup.counts(), (1, 1, 0));
        setup.stop.send_replace(true);
        closed_by_peer(&mut client).await?;
        assert_eq!(setup.counts(), (0, 0, 1));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut late = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (accepted, _) = listener.accept().await?;
        let gate: Arc<dyn Parker> = setup.gate.clone();
        let until = Instant::now() + Duration::from_secs(60);
        let parked = park(
            Box::new(L4Stream::from(accepted)),
            &setup.shutdown,
            &setup.gauge,
            until,
            gate,
        );
        assert!(!parked);
        closed_by_peer(&mut late).await?;
        assert_eq!(setup.counts(), (0, 0, 1));
        Ok(())
    }
}
