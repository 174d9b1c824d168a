//! The product service the batches call: plain hyper servers on loopback, each an "endpoint",
//! answering `GET /products/<id>` with a small JSON body after a delay from the latency model.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use rand_distr::{Distribution, Exp};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

/// The latency model of one product call: 1 ms of work plus an exponential wait of mean 0.5 ms,
/// and 1 call in 100 waits 10 ms more (a slow tail: GC, a cold cache). Sleeps go through
/// tokio's timer, which rounds them up to whole milliseconds.
pub fn delay(rng: &mut impl Rng) -> Duration {
    let exp = Exp::new(2_000.0).map_or(0.0, |e| e.sample(rng));
    let tail = if rng.random_range(0..100) == 0 {
        0.010
    } else {
        0.0
    };
    Duration::from_secs_f64(0.001 + exp + tail)
}

/// Starts `n` product endpoints; their addresses.
pub async fn start(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::with_capacity(n);
    for i in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(
                        move |request: http::Request<hyper::body::Incoming>| async move {
                            let wait = delay(&mut rand::rng());
                            tokio::time::sleep(wait).await;
                            let body = format!(
                                "{{\"id\":\"{}\",\"endpoint\":{i},\"price\":42}}",
                                request.uri().path().trim_start_matches("/products/")
                            );
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    Ok(addrs)
}
