//! Signal handling (docs/operations.md). SIGTERM: `/readyz` fails at once, listeners keep accepting
//! for `--shutdown-delay` (so load balancers and kube-proxy stop sending), then Pingora
//! closes them and in-flight requests get up to `--drain-timeout`. SIGINT: exit at once.
//!
//! Pingora's own watcher closes listeners the moment SIGTERM arrives, which drops the
//! requests that peers still send during their endpoint propagation delay; hence this one.
//! Pingora also sleeps its whole grace period after closing listeners, however soon the
//! last request finishes; [`InFlightRequests`] lets weir exit as soon as nothing is left.

use crate::app::admin::ShutdownFlag;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// Requests between their first header and their last log line, across all workers.
#[derive(Debug, Default)]
pub struct InFlightRequests(AtomicUsize);

impl InFlightRequests {
    /// Counts one request until the returned token is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightToken {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightToken(Arc::clone(self))
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One request in flight; dropping it (with the request's context) ends the count.
#[derive(Debug)]
pub struct InFlightToken(Arc<InFlightRequests>);

impl Drop for InFlightToken {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long the count must stay at zero after the listeners close before weir exits: a
/// connection accepted just before the close may still be reading its request header, which
/// is not counted yet.
const DRAINED_FOR: Duration = Duration::from_millis(300);

pub struct DelayedShutdownWatch {
    flag: Arc<ShutdownFlag>,
    delay: Duration,
    drain: Option<EarlyExit>,
}

/// Exit as soon as the last request is done instead of after all of `--drain-timeout`.
#[derive(Clone)]
struct EarlyExit {
    in_flight: Arc<InFlightRequests>,
    before_exit: Arc<dyn Fn() + Send + Sync>,
}

impl DelayedShutdownWatch {
    pub fn new(flag: Arc<ShutdownFlag>, delay: Duration) -> Self {
        DelayedShutdownWatch {
            flag,
            delay,
            drain: None,
        }
    }

    /// Once the listeners are closed, exit(0) when `in_flight` has stayed at zero for a
    /// moment, after running `before_exit` (flushing what must not be lost).
    pub fn exit_when_drained(
        mut self,
        in_flight: Arc<InFlightRequests>,
        before_exit: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        self.drain = Some(EarlyExit {
            in_flight,
            before_exit: Arc::new(before_exit),
        });
        self
    }

    /// SIGINT: flush what must not be lost and exit at once. Not through Pingora's fast
    /// shutdown: it stops the worker runtimes while their accept loops still run, and an
    /// accept loop whose listener was registered on a runtime stopped before its own fails
    /// every accept at once, never yields, and its thread is never joined — weir then spun
    /// at 100 % CPU instead of exiting (about one SIGINT in eight with connections arriving).
    fn exit_now(&self) -> ! {
        tracing::info!("SIGINT: exiting now");
        if let Some(exit) = &self.drain {
            (exit.before_exit)();
        }
        std::process::exit(0)
    }
}

/// Watches the count from a thread of its own (Pingora's main thread is asleep in its grace
/// period, its runtimes are serving the last requests).
fn spawn_drain_watch(exit: EarlyExit) {
    let spawned = std::thread::Builder::new()
        .name("weir-drain".to_string())
        .spawn(move || {
            let mut zero_since: Option<Instant> = None;
            loop {
                std::thread::sleep(Duration::from_millis(20));
                if exit.in_flight.count() > 0 {
                    zero_since = None;
                    continue;
                }
                let since = *zero_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= DRAINED_FOR {
                    tracing::info!("all requests finished: exiting");
                    (exit.before_exit)();
                    std::process::exit(0);
                }
            }
        });
    if let Err(e) = spawned {
        // Not fatal: Pingora still ends the process after the drain timeout.
        tracing::warn!(error = %e, "cannot watch the drain; waiting for the whole drain timeout");
    }
}

#[async_trait]
impl ShutdownSignalWatch for DelayedShutdownWatch {
    async fn recv(&self) -> ShutdownSignal {
        let (mut term, mut int, mut quit) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) {
            (Ok(t), Ok(i), Ok(q)) => {
                self.flag.handlers_installed();
                (t, i, q)
            }
            _ => {
                tracing::error!("cannot install signal handlers; stopping");
                std::process::exit(1);
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = quit.recv() => {}
            _ = int.recv() => self.exit_now(),
        }
        self.flag.begin();
        tracing::info!(delay = ?self.delay, "SIGTERM: /readyz now fails; still serving until the shutdown delay ends");
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => {
                tracing::info!(in_flight = self.drain.as_ref().map(|d| d.in_flight.count()), "shutdown delay over: closing listeners and draining");
                if let Some(exit) = &self.drain {
                    spawn_drain_watch(exit.clone());
                }
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => self.exit_now(),
        }
    }
}
