//! The Redis counters of fleet-wide rate limits (`--redis-url`): one multiplexed connection
//! per process, made and remade in the background, and a sliding-window count that checks
//! and takes a request in one atomic script, so weirs sharing a limit never overshoot it
//! together.
//!
//! Fails open: while Redis cannot be reached or answers late, [`RedisStore::take`] says so
//! at once (no request waits for a connection that is being remade), the caller lets the
//! request through, and the outage is logged once and counted.
//!
//! Must not: decide what a request is counted by, or answer it (the request core does).

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir_balancer::Nanos;

/// How long one check may take before the request goes on without it.
const CHECK_TIMEOUT: Duration = Duration::from_millis(100);

/// After a failure, how long requests go on unchecked before Redis is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Counts a request against the sliding window of KEYS[1] (this window) and KEYS[2] (the
/// previous one): the previous window's count weighs `ARGV[1]` (the share of it the sliding
/// window still covers, in millionths). Over `ARGV[2]`, nothing is counted and 0 is
/// returned; else the request is counted (the key kept for `ARGV[3]` ms) and 1 returned.
const SLIDING_WINDOW: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if previous * tonumber(ARGV[1]) / 1000000 + current + 1 > tonumber(ARGV[2]) then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// What the store says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted: under the limit.
    Allowed,
    /// Over the limit.
    Limited,
    /// Not checked: Redis could not be reached or answered late (fail open).
    Unavailable,
}

/// The process's connection to Redis.
pub struct RedisStore {
    client: redis::Client,
    url: String,
    connection: ArcSwapOption<ConnectionManager>,
    /// A connection is being made (by one task; the others do not wait for it).
    connecting: Arc<AtomicBool>,
    /// Until when (process nanos) requests go unchecked after a failure.
    resting_until: AtomicU64,
    /// Redis is failing (its outage was logged; the recovery will be).
    failing: AtomicBool,
    script: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish()
    }
}

impl RedisStore {
    /// The store at `url` (`redis://host:port[/db]`); no connection is made yet.
    pub fn new(url: &str) -> Result<Arc<RedisStore>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis-url {url:?}: {e}"))?;
        Ok(Arc::new(RedisStore {
            client,
            url: url.to_string(),
            connection: ArcSwapOption::empty(),
            connecting: Arc::default(),
            resting_until: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            script: redis::Script::new(SLIDING_WINDOW),
        }))
    }

    /// Counts one request of `key` against `limit` per `window`, with the wall clock
    /// `unix` deciding the window (every weir of the fleet agrees on it).
    pub async fn take(
        self: &Arc<Self>,
        key: &str,
        limit: u64,
        window: Duration,
        unix: Duration,
    ) -> Verdict {
        let now = Nanos::now();
        if now.0 < self.resting_until.load(Ordering::Relaxed) {
            return Verdict::Unavailable;
        }
        let Some(connection) = self.connection.load_full() else {
            self.connect();
            return Verdict::Unavailable;
        };
        let window_ms = window.as_millis().max(1);
        let index = unix.as_millis() / window_ms;
        let into = unix.as_millis() % window_ms;
        // The previous window's share the sliding window still covers, in millionths.
        let previous_weight = 1_000_000 - (into * 1_000_000 / window_ms);
        let mut conn = (*connection).clone();
        let mut invocation = self.script.key(format!("{key}:{index}"));
        invocation
            .key(format!("{key}:{}", index.saturating_sub(1)))
            .arg(previous_weight as u64)
            .arg(limit)
            .arg((window_ms * 2) as u64);
        let answer =
            tokio::time::timeout(CHECK_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await;
        match answer {
            Ok(Ok(taken)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(url = %self.url, "Redis answers again; fleet-wide rate limits apply");
                }
                if taken == 1 {
                    Verdict::Allowed
                } else {
                    Verdict::Limited
                }
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                Verdict::Unavailable
            }
            Err(_) => {
                self.failed("no answer in time");
                Verdict::Unavailable
            }
        }
    }

    /// Starts making the connection (once at a time) in the background.
    fn connect(self: &Arc<Self>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(1))
                .set_response_timeout(CHECK_TIMEOUT)
                .set_number_of_retries(1);
            match ConnectionManager::new_with_config(store.client.clone(), config).await {
                Ok(connection) => {
                    store.connection.store(Some(Arc::new(connection)));
                    if store.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(url = %store.url, "Redis reachable again; fleet-wide rate limits apply");
                    }
                }
                Err(e) => store.failed(&e.to_string()),
            }
            store.connecting.store(false, Ordering::Release);
        });
    }

    /// Rests the store for a while; the first failure of an outage is logged.
    fn failed(&self, why: &str) {
        let until = Nanos::now().0 + RETRY_AFTER_FAILURE.as_nanos() as u64;
        self.resting_until.store(until, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(url = %self.url, error = why, "Redis unreachable: fleet-wide rate limits are not applied (requests go on) until it answers");
        }
    }
}
