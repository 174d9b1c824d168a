//! The fan-out example: a batch endpoint that answers each `GET /batch` by calling a product
//! service 100 times at once, through weir-client in-process or through a weir proxy (the extra
//! hop), and the load that measures both side by side (docs/client.md).
//!
//! ```text
//! scripts/fanout.sh [FLAGS]     # builds target/release/weir and runs this with FLAGS, or:
//! cargo run --release -p weir-client --example fanout -- [--via both|client|proxy]
//!     [--rounds 3] [--batches 200] [--concurrency 2] [--products 10] [--weir PATH]
//!     [--serve ADDR]
//! ```
//!
//! Everything runs on loopback: 10 product endpoints (the latency model is in `product.rs`),
//! the batch endpoint, and for `proxy` a `weir` process with default flags routing the host
//! `product.shop` to them. The load sends `--concurrency` batches at a time, `--batches` per
//! round, rounds alternating between client and proxy so that both see the same machine.
//! `--serve ADDR` keeps the batch endpoint up instead (`curl ADDR/batch?via=client`).

mod product;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use weir_client::{Endpoints, WeirClient};

/// Calls per batch.
const FAN_OUT: usize = 100;

struct Options {
    via: Vec<String>,
    rounds: usize,
    batches: usize,
    concurrency: usize,
    products: usize,
    weir: PathBuf,
    serve: Option<SocketAddr>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        via: vec!["client".into(), "proxy".into()],
        rounds: 3,
        batches: 200,
        concurrency: 2,
        products: 10,
        weir: PathBuf::from("target/release/weir"),
        serve: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--via" => {
                o.via = match value()?.as_str() {
                    "both" => vec!["client".into(), "proxy".into()],
                    one @ ("client" | "proxy") => vec![one.to_string()],
                    other => return Err(format!("--via {other}: client, proxy or both")),
                }
            }
            "--rounds" => o.rounds = number(value()?)?,
            "--batches" => o.batches = number(value()?)?,
            "--concurrency" => o.concurrency = number(value()?)?.max(1),
            "--products" => o.products = number(value()?)?.max(1),
            "--weir" => o.weir = PathBuf::from(value()?),
            "--serve" => o.serve = Some(value()?.parse().map_err(|e| format!("--serve: {e}"))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

/// How the batch endpoint reaches the product service.
struct Routes {
    client: WeirClient<Empty<Bytes>>,
    /// A plain pooled client to the weir proxy, and the proxy's address.
    proxy: Option<(Client<HttpConnector, Empty<Bytes>>, SocketAddr)>,
}

impl Routes {
    /// One batch: `FAN_OUT` product calls at once; the time until the last answered.
    async fn batch(&self, via: &str) -> Result<Duration, String> {
        let started = Instant::now();
        let calls = (0..FAN_OUT).map(|i| async move {
            let path = format!("/products/{i}");
            let status = match (via, &self.proxy) {
                ("proxy", Some((http, addr))) => {
                    let request = http::Request::get(format!("http://{addr}{path}"))
                        .header(http::header::HOST, "product.shop")
                        .body(Empty::new())
                        .map_err(|e| e.to_string())?;
                    drain(http.request(request).await.map_err(|e| e.to_string())?).await?
                }
                _ => {
                    let request = http::Request::get(path)
                        .body(Empty::new())
                        .map_err(|e| e.to_string())?;
                    let response = self.client.clone().oneshot(request).await;
                    drain(response.map_err(|e| e.to_string())?).await?
                }
            };
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("a product call answered {status}"))
            }
        });
        for result in futures::future::join_all(calls).await {
            result?;
        }
        Ok(started.elapsed())
    }
}

/// A response's status, once its body is read to the end (as a caller would).
async fn drain<B>(response: http::Response<B>) -> Result<http::StatusCode, String>
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

/// The batch endpoint: `GET /batch?via=client|proxy` answers how long its batch took.
async fn serve_batches(routes: Arc<Routes>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let routes = Arc::clone(&routes);
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let routes = Arc::clone(&routes);
                async move {
                    let via = if request.uri().query() == Some("via=proxy") {
                        "proxy"
                    } else {
                        "client"
                    };
                    let (status, body) = match routes.batch(via).await {
                        Ok(took) => (
                            200,
                            format!(
                                "{{\"via\":\"{via}\",\"calls\":{FAN_OUT},\"ms\":{:.3}}}\n",
                                took.as_secs_f64() * 1e3
                            ),
                        ),
                        Err(e) => (502, format!("{{\"via\":\"{via}\",\"error\":{e:?}}}\n")),
                    };
                    let mut response =
                        http::Response::new(http_body_util::Full::new(Bytes::from(body)));
                    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Manifests routing `product.shop` to the product endpoints (one EndpointSlice each: they
/// share 127.0.0.1 on different ports).
fn manifests(products: &[SocketAddr]) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: product, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: product, namespace: shop}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: product.shop\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: product, port: {name: http}}}}]}\n---\n",
    );
    for (i, addr) in products.iter().enumerate() {
        out.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: product-{i}, namespace: shop, labels: {{kubernetes.io/service-name: product}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}}}]\n---\n",
            addr.port(),
            addr.ip()
        ));
    }
    out
}

/// A free loopback port.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the weir proxy on the product manifests; its process and HTTP address.
async fn start_weir(
    weir: &PathBuf,
    products: &[SocketAddr],
    dir: &std::path::Path,
) -> Result<(std::process::Child, SocketAddr), String> {
    std::fs::write(dir.join("product.yaml"), manifests(products)).map_err(|e| e.to_string())?;
    let http = SocketAddr::from(([127, 0, 0, 1], free_port().map_err(|e| e.to_string())?));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port().map_err(|e| e.to_string())?));
    let child = std::process::Command::new(weir)
        .arg("--manifests")
        .arg(dir)
        .args([
            "--http-listen",
            &http.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "{}: {e} (build it: cargo build --release -p weir-proxy)",
                weir.display()
            )
        })?;
    let http_client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..200 {
        let request = http::Request::get(format!("http://{http}/products/0"))
            .header(http::header::HOST, "product.shop")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        if let Ok(response) = http_client.request(request).await {
            if response.status().is_success() {
                return Ok((child, http));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("weir did not serve the product routes within 10 s".to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// One `GET /batch` as a caller sends it: how long it took, or why it failed.
async fn call_batch(
    caller: &Client<HttpConnector, Empty<Bytes>>,
    batch_addr: SocketAddr,
    via: &str,
) -> Result<Duration, String> {
    let request = http::Request::get(format!("http://{batch_addr}/batch?via={via}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let response = caller
        .request(request)
        .await
        .map_err(|e| format!("batch endpoint: {e}"))?;
    let ok = response.status().is_success();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("batch endpoint: {e}"))?
        .to_bytes();
    if !ok {
        return Err(String::from_utf8_lossy(&body).into_owned());
    }
    Ok(started.elapsed())
}

/// Ends the run with why.
fn fail(why: &str) -> ! {
    eprintln!("fanout: {why}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let o = options().unwrap_or_else(|e| fail(&e));
    let products = product::start(o.products)
        .await
        .unwrap_or_else(|e| fail(&format!("product endpoints: {e}")));
    let client = WeirClient::builder(Endpoints::fixed("shop/product", products.clone()))
        .build::<Empty<Bytes>>();
    let dir = std::env::temp_dir().join(format!("weir-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    let mut weir = None;
    let proxy = if o.via.iter().any(|v| v == "proxy") {
        match start_weir(&o.weir, &products, &dir).await {
            Ok((child, addr)) => {
                weir = Some(child);
                let http: Client<HttpConnector, Empty<Bytes>> =
                    Client::builder(TokioExecutor::new())
                        .pool_max_idle_per_host(FAN_OUT * o.concurrency)
                        .build_http();
                Some((http, addr))
            }
            Err(e) => fail(&e),
        }
    } else {
        None
    };
    let routes = Arc::new(Routes { client, proxy });
    let listener =
        tokio::net::TcpListener::bind(o.serve.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))))
            .await
            .and_then(|l| Ok((l.local_addr()?, l)))
            .unwrap_or_else(|e| fail(&format!("batch endpoint: {e}")));
    let (batch_addr, listener) = listener;
    tokio::spawn(serve_batches(Arc::clone(&routes), listener));
    if o.serve.is_some() {
        println!("batch endpoint on http://{batch_addr}/batch?via=client (or via=proxy)");
        std::future::pending::<()>().await;
    }
    // The load: batches through the batch endpoint, as its callers would send them.
    let caller: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut results: Vec<(String, Vec<Duration>)> =
        o.via.iter().map(|v| (v.clone(), Vec::new())).collect();
    // Warm-up: connections opened, caches of both paths filled.
    for (via, _) in &results {
        for _ in 0..20 {
            let _ = routes.batch(via).await;
        }
    }
    for _ in 0..o.rounds {
        for (via, latencies) in results.iter_mut() {
            let per_worker = o.batches / o.concurrency;
            let workers = (0..o.concurrency).map(|_| {
                let caller = caller.clone();
                let via = via.clone();
                async move {
                    let mut took = Vec::with_capacity(per_worker);
                    for _ in 0..per_worker {
                        took.push(call_batch(&caller, batch_addr, &via).await?);
                    }
                    Ok::<_, String>(took)
                }
            });
            for took in futures::future::join_all(workers).await {
                latencies.extend(took.unwrap_or_else(|e| fail(&e)));
            }
        }
    }
    println!(
        "batch of {FAN_OUT} calls to {} product endpoints, {} batches at a time, {} per path ({} rounds alternating):\n",
        o.products,
        o.concurrency,
        o.rounds * (o.batches / o.concurrency) * o.concurrency,
        o.rounds
    );
    println!("| path | batch p50 | batch p90 | batch p99 | mean |");
    println!("|---|---:|---:|---:|---:|");
    for (via, latencies) in results.iter_mut() {
        latencies.sort();
        let mean = latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32;
        let name = if via == "client" {
            "weir-client, in-process"
        } else {
            "weir proxy (one extra hop)"
        };
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(percentile(latencies, 0.50)),
            ms(percentile(latencies, 0.90)),
            ms(percentile(latencies, 0.99)),
            ms(mean)
        );
    }
    if let Some(mut child) = weir {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
