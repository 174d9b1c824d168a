//! Supervision of background work: the manifest watcher and the Kubernetes
//! watches run as Pingora background services; if one panics or returns, Pingora does not
//! start it again and weir would serve its last routes forever without a word.
//! [`Supervised`] runs the service as a task of its own, and when that task ends before
//! shutdown — by a panic or otherwise — logs it, counts it in
//! `weir_background_restarts_total{task}` and starts it again after a backoff (1 s,
//! doubling to 30 s; back to 1 s after a minute of good running).
//!
//! Must not: restart anything after shutdown began.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntCounterVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long counts as healthy: the next failure starts from the first backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

pub struct Supervised<S> {
    task: &'static str,
    inner: Arc<S>,
    restarts: IntCounterVec,
    first_backoff: Duration,
}

impl<S> Supervised<S> {
    pub fn new(task: &'static str, inner: S, restarts: IntCounterVec) -> Self {
        Supervised {
            task,
            inner: Arc::new(inner),
            restarts,
            first_backoff: FIRST_BACKOFF,
        }
    }
}

#[async_trait]
impl<S: BackgroundService + Send + Sync + 'static> BackgroundService for Supervised<S> {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = self.first_backoff;
        loop {
            let started = Instant::now();
            let inner = Arc::clone(&self.inner);
            let watch = shutdown.clone();
            // A task of its own: a panic ends that task, not this loop.
            let ended = tokio::spawn(async move { inner.start(watch).await }).await;
            if *shutdown.borrow() {
                return;
            }
            match ended {
                Err(e) if e.is_panic() => {
                    tracing::error!(task = self.task, "background task panicked; restarting")
                }
                _ => tracing::warn!(task = self.task, "background task ended; restarting"),
            }
            self.restarts.with_label_values(&[self.task]).inc();
            if started.elapsed() >= HEALTHY_RUN {
                backoff = self.first_backoff;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Panics on its first two runs, returns on the third, then runs until shutdown.
    struct Flaky(AtomicUsize);

    #[async_trait]
    impl BackgroundService for Flaky {
        async fn start(&self, mut shutdown: ShutdownWatch) {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => panic!("injected failure"),
                2 => {}
                _ => {
                    let _ = shutdown.changed().await;
                }
            }
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn panics_and_early_ends_are_restarted_with_backoff_and_counted() {
        let restarts = IntCounterVec::new(prometheus::Opts::new("restarts", "test"), &["task"])
            .expect("counter");
        let mut supervised = Supervised::new("flaky", Flaky(AtomicUsize::new(0)), restarts.clone());
        supervised.first_backoff = Duration::from_millis(100);
        let supervised = Arc::new(supervised);
        let (stop, watch) = tokio::sync::watch::channel(false);
        let runner = {
            let supervised = Arc::clone(&supervised);
            tokio::spawn(async move { supervised.start(watch).await })
        };
        // Backoffs 100 + 200 + 400 ms: the fourth run starts by 700 ms (paused clock).
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(supervised.inner.0.load(Ordering::SeqCst), 4, "four runs");
        assert_eq!(restarts.with_label_values(&["flaky"]).get(), 3);
        // Shutdown ends the healthy fourth run and the loop, without another restart.
        stop.send(true).expect("send");
        runner.await.expect("supervisor ended");
        assert_eq!(restarts.with_label_values(&["flaky"]).get(), 3);
        assert_eq!(supervised.inner.0.load(Ordering::SeqCst), 4);
    }
}
