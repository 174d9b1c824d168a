//! The product service the batches call: plain hyper servers on loopback, each an "endpoint",
//! answering `GET /products/<id>` with a small JSON body after a delay from the latency model.
//! Delays are kept by a delay line of their own (a thread waking at each deadline, to within
//! tens of microseconds), not tokio's timer, which rounds every sleep up to a whole
//! millisecond and would hide differences smaller than that.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use rand_distr::{Distribution, Exp};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The latency model of one product call: 1 ms of work plus an exponential wait of mean 0.5 ms,
/// and 1 call in 100 waits 10 ms more (a slow tail: GC, a cold cache).
pub fn delay(rng: &mut impl Rng) -> Duration {
    let exp = Exp::new(2_000.0).map_or(0.0, |e| e.sample(rng));
    let tail = if rng.random_range(0..100) == 0 {
        0.010
    } else {
        0.0
    };
    Duration::from_secs_f64(0.001 + exp + tail)
}

/// Wakes each waiter at its deadline.
#[derive(Clone)]
struct DelayLine {
    waiters: mpsc::Sender<(Instant, oneshot::Sender<()>)>,
}

impl DelayLine {
    fn start() -> Self {
        let (waiters, arrivals) = mpsc::channel::<(Instant, oneshot::Sender<()>)>();
        std::thread::spawn(move || {
            let mut due: BinaryHeap<(Reverse<Instant>, u64)> = BinaryHeap::new();
            let mut wakers = std::collections::HashMap::new();
            let mut seq = 0u64;
            loop {
                let now = Instant::now();
                while let Some((Reverse(at), id)) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    if let Some(waker) = wakers.remove(&id) {
                        let _: Result<(), ()> = oneshot::Sender::send(waker, ());
                    }
                }
                let wait = due
                    .peek()
                    .map_or(Duration::from_secs(1), |(Reverse(at), _)| {
                        at.saturating_duration_since(now)
                    });
                match arrivals.recv_timeout(wait) {
                    Ok((at, waker)) => {
                        seq += 1;
                        due.push((Reverse(at), seq));
                        wakers.insert(seq, waker);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        DelayLine { waiters }
    }

    async fn wait(&self, delay: Duration) {
        let (waker, woken) = oneshot::channel();
        if self.waiters.send((Instant::now() + delay, waker)).is_ok() {
            let _ = woken.await;
        }
    }
}

/// Starts `n` product endpoints; their addresses.
pub async fn start(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let delays = DelayLine::start();
    let mut addrs = Vec::with_capacity(n);
    for i in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        let delays = delays.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let delays = delays.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let delays = delays.clone();
                            async move {
                                let wait = delay(&mut rand::rng());
                                delays.wait(wait).await;
                                let body = format!(
                                    "{{\"id\":\"{}\",\"endpoint\":{i},\"price\":42}}",
                                    request.uri().path().trim_start_matches("/products/")
                                );
                                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                    body,
                                ))))
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    Ok(addrs)
}
