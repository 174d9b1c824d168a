//! [`HandshakeTurns`]: new TLS connections take turns with requests already under way.
//!
//! A full TLS handshake is the most expensive step a worker takes (key exchange and a
//! signature, several times a proxied request's CPU). Pingora's accept loop takes every
//! pending connection at once, so after a burst of new connections a worker would run all
//! their handshakes back to back while requests on established connections, already read
//! and cheap to finish, wait behind them: their latency grows with the burst. nginx avoids
//! this by taking one new connection per turn of its event loop; weir lets at most
//! [`PER_TURN`] handshakes start per turn of a worker's scheduler (one poll of its I/O
//! driver). The others wait, in arrival order, for later turns. A request is never held
//! back: only the start of a handshake is.
//!
//! A turn is seen by `tokio::task::yield_now`, which wakes a task only after the worker next
//! polls its I/O driver. One ticker task per worker thread does that while handshakes wait
//! and admits the next ones each turn, so waiting costs O(1) per turn however many wait.
//!
//! Must not: read from or write to the connection (the handshake that follows does).

use async_trait::async_trait;
use futures::task::AtomicWaker;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

/// Handshakes that may start per scheduler turn of one worker. Measured with a new TLS
/// connection per request (docs/benchmarks.md): 1, 2 and 4 give the same throughput and
/// tail latency, all far better than no limit; 2 leaves room for a second connection
/// arriving in the same turn without waiting.
pub const PER_TURN: usize = 2;

/// Installed as the TLS listeners' pre-handshake step: waits for the connection's turn.
#[derive(Debug, Default)]
pub struct HandshakeTurns;

#[async_trait]
impl PreTlsProcess for HandshakeTurns {
    async fn process(&self, _stream: &mut L4Stream) -> pingora::Result<()> {
        wait_turn().await;
        Ok(())
    }
}

/// One waiting handshake: set admitted and woken by the ticker.
#[derive(Default)]
struct Slot {
    admitted: AtomicBool,
    waker: AtomicWaker,
}

#[derive(Default)]
struct Turns {
    /// Handshakes started in the current turn.
    started: usize,
    /// Handshakes waiting for a later turn, oldest first.
    waiting: VecDeque<Arc<Slot>>,
    /// Whether a ticker task is running for this worker.
    ticking: bool,
}

type SharedTurns = Arc<Mutex<Turns>>;

thread_local! {
    /// Per worker thread: each worker has its own scheduler and so its own turns.
    static TURNS: SharedTurns = SharedTurns::default();
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding it; a poisoned lock still holds consistent counts.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Returns when a handshake may start: at once if fewer than [`PER_TURN`] started this
/// turn and none is waiting, else in a later turn, in arrival order.
pub async fn wait_turn() {
    let turns = TURNS.with(Arc::clone);
    let slot = {
        let mut state = lock(&turns);
        if state.waiting.is_empty() && state.started < PER_TURN {
            state.started += 1;
            return;
        }
        let slot = Arc::new(Slot::default());
        state.waiting.push_back(Arc::clone(&slot));
        if !state.ticking {
            state.ticking = true;
            tokio::spawn(tick(Arc::clone(&turns)));
        }
        slot
    };
    Admitted(slot).await
}

/// Each turn, admits up to [`PER_TURN`] waiting handshakes; ends when none waits.
async fn tick(turns: SharedTurns) {
    loop {
        // Resumes after the worker's next poll of its I/O driver: a new turn.
        tokio::task::yield_now().await;
        let mut state = lock(&turns);
        state.started = 0;
        while state.started < PER_TURN {
            let Some(slot) = state.waiting.pop_front() else {
                break;
            };
            if Arc::strong_count(&slot) == 1 {
                continue; // its connection was dropped while it waited
            }
            slot.admitted.store(true, Ordering::Release);
            slot.waker.wake();
            state.started += 1;
        }
        if state.waiting.is_empty() {
            state.ticking = false;
            return;
        }
    }
}

/// Ready once the ticker admitted the slot.
struct Admitted(Arc<Slot>);

impl Future for Admitted {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Register before checking, so an admission between the two is not missed.
        self.0.waker.register(cx.waker());
        if self.0.admitted.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts the worker's turns: one increment per poll of its I/O driver, for a bounded
    /// number of turns.
    fn count_turns(turns: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            for _ in 0..1_000 {
                turns.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_most_per_turn_start_in_a_turn_and_all_start_in_arrival_order() {
        let turn = Arc::new(AtomicUsize::new(0));
        let counter = count_turns(Arc::clone(&turn));
        let started = Arc::new(Mutex::new(Vec::new()));
        let handshakes: Vec<_> = (0..10)
            .map(|i| {
                let started = Arc::clone(&started);
                let turn = Arc::clone(&turn);
                tokio::spawn(async move {
                    wait_turn().await;
                    lock(&started).push((i, turn.load(Ordering::SeqCst)));
                })
            })
            .collect();
        for handshake in handshakes {
            tokio::time::timeout(Duration::from_secs(5), handshake)
                .await
                .expect("every handshake gets a turn")
                .expect("handshake task");
        }
        counter.abort();
        let started = lock(&started).clone();
        let order: Vec<usize> = started.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>(), "arrival order");
        for t in started.iter().map(|(_, t)| *t) {
            let in_turn = started.iter().filter(|(_, u)| *u == t).count();
            assert!(
                in_turn <= PER_TURN,
                "{in_turn} started in turn {t}: {started:?}"
            );
        }
        let turns_spanned = started[9].1 - started[0].1;
        assert!(
            turns_spanned >= 10 / PER_TURN - 1,
            "10 handshakes in {turns_spanned} turns: {started:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_dropped_while_waiting_does_not_hold_up_the_others() {
        let turn = Arc::new(AtomicUsize::new(0));
        let counter = count_turns(Arc::clone(&turn));
        let done = Arc::new(AtomicUsize::new(0));
        let mut handshakes: Vec<_> = (0..8)
            .map(|_| {
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    wait_turn().await;
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Let all of them reach their wait, then drop three that are waiting.
        tokio::task::yield_now().await;
        for dropped in handshakes.drain(3..6) {
            dropped.abort();
        }
        for handshake in handshakes {
            tokio::time::timeout(Duration::from_secs(5), handshake)
                .await
                .expect("the others still get a turn")
                .expect("handshake task");
        }
        counter.abort();
        // An aborted task may have been admitted before its abort took effect.
        assert!(done.load(Ordering::SeqCst) >= 5);
        // The ticker stops once nothing waits, so it costs nothing between bursts.
        for _ in 0..10 {
            if !lock(&TURNS.with(Arc::clone)).ticking {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            !lock(&TURNS.with(Arc::clone)).ticking,
            "ticker still running"
        );
    }
}
