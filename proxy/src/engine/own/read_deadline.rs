//! [`ReadDeadline`]: one tokio timer that bounds every timed read of a connection in turn —
//! the wait for a client's next request (for the first one, also the first-head deadline of
//! `--request-header-timeout`), then the wait for the upstream's response.
//!
//! Why: a `tokio::time::timeout` per read registers a timer with the runtime's timer wheel
//! on its first poll and takes it out again when dropped, each under the wheel's lock. The
//! direct path waits twice per request, and a timer for each wait cost ~600 instructions per
//! request in all (callgrind). A timer that stays registered is moved to a later
//! deadline with one atomic update instead; the wheel finds the new deadline when the old one
//! comes round and files the timer again, once per timeout period at most.
//!
//! Must not: be shared between waits that run at the same time (one timer, one deadline), or
//! change what a timeout means: each wait still gets its full duration from its start.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A reusable deadline for one wait at a time (see the module docs).
pub(crate) struct ReadDeadline<'a> {
    timer: Pin<&'a mut Sleep>,
}

/// The wait ran out of time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Whether a deadline given to [`ReadDeadline::within_until`] has come: after [`Elapsed`], it
/// tells that deadline from the wait's own timeout.
pub(crate) fn reached(until: Option<Instant>) -> bool {
    until.is_some_and(|until| Instant::now() >= until)
}

impl<'a> ReadDeadline<'a> {
    /// Uses `timer` (any `Sleep`; its deadline is replaced before every wait), pinned where
    /// the connection's state lives, e.g. with `std::pin::pin!`.
    pub(crate) fn new(timer: Pin<&'a mut Sleep>) -> Self {
        ReadDeadline { timer }
    }

    /// Runs `wait` to its end, or gives up `timeout` after now. `wait` is polled before the
    /// timer, so a wait that is ready when the deadline is reached still completes.
    pub(crate) async fn within<F: Future>(
        &mut self,
        timeout: Duration,
        wait: F,
    ) -> Result<F::Output, Elapsed> {
        self.within_until(timeout, None, wait).await
    }

    /// [`Self::within`], but giving up at `until` if that comes first (a deadline that
    /// spans several waits, such as the first request head's).
    pub(crate) async fn within_until<F: Future>(
        &mut self,
        timeout: Duration,
        until: Option<Instant>,
        wait: F,
    ) -> Result<F::Output, Elapsed> {
        let mut at = Instant::now() + timeout;
        if let Some(until) = until {
            at = at.min(until);
        }
        // Later than the last deadline (the usual case: equal timeouts, time moves on):
        // an atomic update. Earlier: tokio files the timer again.
        self.timer.as_mut().reset(at);
        let mut wait = std::pin::pin!(wait);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = wait.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tokio's timers count whole milliseconds, rounded up.
    fn within_a_tick(waited: Duration, timeout: Duration) {
        assert!(
            waited >= timeout && waited <= timeout + Duration::from_millis(1),
            "waited {waited:?} for a {timeout:?} timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_wait_gets_its_own_full_timeout() {
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut deadline = ReadDeadline::new(timer);
        // Done in time: the value comes back.
        let quick = deadline
            .within(Duration::from_secs(2), async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                7
            })
            .await;
        assert_eq!(quick, Ok(7));
        // The next wait starts a new 2 s from now; 1.5 s is within it, though 2.5 s have
        // passed since the first wait began.
        let second = deadline
            .within(
                Duration::from_secs(2),
                tokio::time::sleep(Duration::from_millis(1500)),
            )
            .await;
        assert_eq!(second, Ok(()));
        // Too slow: given up at the deadline, not when the wait would have ended.
        let started = Instant::now();
        let slow = deadline
            .within(
                Duration::from_secs(2),
                tokio::time::sleep(Duration::from_secs(30)),
            )
            .await;
        assert_eq!(slow, Err(Elapsed));
        within_a_tick(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_timeout_after_a_longer_one_still_fires_on_time() {
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut deadline = ReadDeadline::new(timer);
        let long = deadline.within(Duration::from_secs(60), async { 1 }).await;
        assert_eq!(long, Ok(1));
        // The timer is filed for 60 s; this wait must end after 1 s, not 60.
        let started = Instant::now();
        let short = deadline
            .within(
                Duration::from_secs(1),
                tokio::time::sleep(Duration::from_secs(10)),
            )
            .await;
        assert_eq!(short, Err(Elapsed));
        within_a_tick(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ready_at_the_deadline_completes() {
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut deadline = ReadDeadline::new(timer);
        let at_deadline = deadline
            .within(
                Duration::from_secs(1),
                tokio::time::sleep(Duration::from_secs(1)),
            )
            .await;
        assert_eq!(at_deadline, Ok(()));
    }
}
