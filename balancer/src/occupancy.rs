//! [`Occupancy`]: seconds of work per second over the last 150 ms, in five 30 ms buckets
//! (the `occupancy` load signal of bounded load, docs/balancing.md). 2.0 means the endpoint spent
//! as much time serving as two requests running back to back for the whole window.
//!
//! A finished request adds its duration (clipped to the window) to the bucket of its end.
//! Lock-free; a bucket that rolls over while another thread adds to it may lose that one
//! sample (a benign race on an estimate).

use crate::clock::Nanos;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const BUCKET: Duration = Duration::from_millis(30);
pub const BUCKETS: usize = 5;
/// The window the signal covers: 150 ms.
pub const WINDOW: Duration = Duration::from_millis(30 * BUCKETS as u64);

#[derive(Debug, Default)]
pub struct Occupancy {
    busy_ns: [AtomicU64; BUCKETS],
    /// Which 30 ms interval (since the epoch) each bucket holds.
    interval: [AtomicU64; BUCKETS],
}

fn interval_of(now: Nanos) -> u64 {
    now.0 / BUCKET.as_nanos() as u64
}

impl Occupancy {
    /// Adds a finished request of `duration` ending at `now`.
    pub fn add(&self, duration: Duration, now: Nanos) {
        let current = interval_of(now);
        let i = (current % BUCKETS as u64) as usize;
        if self.interval[i].swap(current, Ordering::Relaxed) != current {
            self.busy_ns[i].store(0, Ordering::Relaxed);
        }
        let busy = duration.min(WINDOW).as_nanos() as u64;
        self.busy_ns[i].fetch_add(busy, Ordering::Relaxed);
    }

    /// Seconds of work per second over the window ending at `now`.
    pub fn value(&self, now: Nanos) -> f64 {
        let current = interval_of(now);
        let mut busy = 0u64;
        for i in 0..BUCKETS {
            let interval = self.interval[i].load(Ordering::Relaxed);
            if current.saturating_sub(interval) < BUCKETS as u64 && interval <= current {
                busy += self.busy_ns[i].load(Ordering::Relaxed);
            }
        }
        busy as f64 / WINDOW.as_nanos() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_per_second_over_a_sliding_150_ms() {
        let o = Occupancy::default();
        let t = Nanos::from_secs(1_000);
        assert_eq!(o.value(t), 0.0);
        // 300 ms of work finishing now (clipped to the 150 ms window) = 1.0.
        o.add(Duration::from_millis(300), t);
        assert!((o.value(t) - 1.0).abs() < 1e-9);
        // Three 50 ms requests in later buckets: + 1.0.
        for k in 1..=3u64 {
            o.add(Duration::from_millis(50), t.after(BUCKET * k as u32));
        }
        let later = t.after(BUCKET * 3);
        assert!((o.value(later) - 2.0).abs() < 1e-9, "{}", o.value(later));
        // Five buckets on, the first sample has left the window.
        let much_later = t.after(BUCKET * 5);
        assert!(
            (o.value(much_later) - 1.0).abs() < 1e-9,
            "{}",
            o.value(much_later)
        );
        // Long after: empty.
        assert_eq!(o.value(t.after(Duration::from_secs(10))), 0.0);
    }
}
