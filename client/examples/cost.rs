//! What weir-client costs the application it runs in (docs/client.md): CPU time and heap
//! allocations per call, through weir-client and through hyper-util's pooled client straight
//! to one endpoint (the library's own cost is the difference), and heap per 1,000 endpoints.
//!
//! ```text
//! cargo run --release -p weir-client --example cost -- [--calls 20000]
//! ```
//!
//! Everything runs on one thread (a current-thread runtime: the callers, hyper's connection
//! tasks and the upstream), so the thread's CPU time (`/proc/thread-self/schedstat`, in ns)
//! covers all of it and nothing else; the upstream answers at once, so calls are CPU-bound.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;
use weir_client::{Endpoints, WeirClient};

/// The system allocator, counting.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// atomics that never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as `dealloc` and `alloc`: the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's CPU time so far, ns.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The value, or the end of the run with why there is none.
fn done<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("cost: {what}: {e}");
        std::process::exit(2)
    })
}

/// An upstream that answers `ok` at once.
async fn upstream() -> SocketAddr {
    let listener = done(tokio::net::TcpListener::bind("127.0.0.1:0").await, "bind");
    let addr = done(listener.local_addr(), "bind");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_: http::Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// CPU ns, allocations and bytes allocated per call of `call`, over `calls` calls.
async fn measure<F, Fut>(calls: u64, mut call: F) -> (f64, f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..1_000 {
        call().await;
    }
    let (cpu, allocations, bytes) = (
        cpu_ns(),
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED.load(Ordering::Relaxed),
    );
    for _ in 0..calls {
        call().await;
    }
    let n = calls as f64;
    (
        (cpu_ns() - cpu) as f64 / n,
        (ALLOCATIONS.load(Ordering::Relaxed) - allocations) as f64 / n,
        (ALLOCATED.load(Ordering::Relaxed) - bytes) as f64 / n,
    )
}

fn main() {
    let mut calls = 20_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next().map(|v| v.parse::<u64>())) {
            ("--calls", Some(Ok(n))) => calls = n.max(1),
            _ => {
                eprintln!("cost: usage: cost [--calls N]");
                std::process::exit(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = done(runtime, "runtime");
    runtime.block_on(async move {
        let one = upstream().await;
        let mut hundred = Vec::new();
        for _ in 0..100 {
            hundred.push(upstream().await);
        }
        let bare: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let uri: http::Uri = done(format!("http://{one}/products/42").parse(), "uri");
        let direct = measure(calls, || {
            let request = done(http::Request::get(uri.clone()).body(Empty::new()), "request");
            let bare = bare.clone();
            async move {
                let response = done(bare.request(request).await, "hyper-util's call");
                done(response.into_body().collect().await, "body");
            }
        })
        .await;
        let through = |client: WeirClient<Empty<Bytes>>| {
            move || {
                let request = done(http::Request::get("/products/42").body(Empty::new()), "request");
                let client = client.clone();
                async move {
                    let response = done(client.oneshot(request).await, "weir-client's call");
                    done(response.into_body().collect().await, "body");
                }
            }
        };
        let one_endpoint = WeirClient::builder(Endpoints::fixed("shop/product", [one])).build();
        let client_one = measure(calls, through(one_endpoint)).await;
        let hundred_endpoints =
            WeirClient::builder(Endpoints::fixed("shop/product", hundred)).build();
        let client_hundred = measure(calls, through(hundred_endpoints)).await;

        // Heap per endpoint: a client of 1,000 endpoints (state, pool and ring; no
        // connections, which come with calls), before and after.
        let before = LIVE.load(Ordering::Relaxed);
        let addrs = (0..1_000u32).map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 8080)));
        let big = WeirClient::builder(Endpoints::fixed("shop/product", addrs)).build::<Empty<Bytes>>();
        let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        let mut hashed = weir_client::ClientConfig::default();
        hashed.pool.algorithm = weir_client::Algorithm::ConsistentHash;
        let before_hash = LIVE.load(Ordering::Relaxed);
        let addrs = (0..1_000u32).map(|i| SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 8080)));
        let ring = WeirClient::builder(Endpoints::fixed("shop/product", addrs))
            .config(hashed)
            .build::<Empty<Bytes>>();
        let held_ring = LIVE.load(Ordering::Relaxed).saturating_sub(before_hash);
        drop((big, ring));

        println!("{calls} sequential calls each, one thread, upstream answering at once:\n");
        println!("| calls through | CPU per call | allocations per call | bytes allocated per call |");
        println!("|---|---:|---:|---:|");
        for (name, (cpu, allocations, bytes)) in [
            ("hyper-util's client, straight to one endpoint", direct),
            ("weir-client, 1 endpoint", client_one),
            ("weir-client, 100 endpoints (least request)", client_hundred),
        ] {
            println!("| {name} | {:.1} µs | {allocations:.1} | {bytes:.0} |", cpu / 1e3);
        }
        println!(
            "\nweir-client's own cost per call (1 endpoint, over hyper-util's): {:.1} µs CPU, {:.1} allocations, {:.0} bytes",
            (client_one.0 - direct.0) / 1e3,
            client_one.1 - direct.1,
            client_one.2 - direct.2
        );
        println!(
            "heap per 1,000 endpoints: {:.0} KiB (least request), {:.0} KiB (consistent hash, with its ring)",
            held as f64 / 1024.0,
            held_ring as f64 / 1024.0
        );
    });
}
