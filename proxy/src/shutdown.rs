//! Signal handling (DESIGN §6). SIGTERM: `/readyz` fails at once, listeners keep accepting
//! for `--shutdown-delay` (so load balancers and kube-proxy stop sending), then Pingora
//! closes them and in-flight requests get up to `--drain-timeout`. SIGINT: fast exit.
//!
//! Pingora's own watcher closes listeners the moment SIGTERM arrives, which drops the
//! requests that peers still send during their endpoint propagation delay; hence this one.

use crate::admin::ShutdownFlag;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

pub struct DelayedShutdownWatch {
    flag: Arc<ShutdownFlag>,
    delay: Duration,
}

impl DelayedShutdownWatch {
    pub fn new(flag: Arc<ShutdownFlag>, delay: Duration) -> Self {
        DelayedShutdownWatch { flag, delay }
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
            (Ok(t), Ok(i), Ok(q)) => (t, i, q),
            _ => {
                tracing::error!("cannot install signal handlers; stopping");
                return ShutdownSignal::FastShutdown;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = quit.recv() => {}
            _ = int.recv() => {
                tracing::info!("SIGINT: fast shutdown");
                return ShutdownSignal::FastShutdown;
            }
        }
        self.flag.begin();
        tracing::info!(delay = ?self.delay, "SIGTERM: /readyz now fails; still serving until the shutdown delay ends");
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => {
                tracing::info!("shutdown delay over: closing listeners and draining");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
