//! `bare-pingora LISTEN UPSTREAM [THREADS] [timeouts] [no-steal] [h1-loop]`: a Pingora proxy that
//! sends every request to one upstream address — no routing, balancing, metrics or logs. With
//! `h1-loop` it is not pingora-proxy but a loop on pingora-core's HTTP/1 codec (HTTP/1.1 only),
//! the floor of weir's direct HTTP/1.1 path. With `timeouts`
//! it sets the connect, read and idle timeouts weir sets on every upstream peer (to separate
//! Pingora's timer cost from weir's own); with `no-steal` it runs Pingora's current-thread
//! runtimes instead of one work-stealing runtime. The load harness
//! (`benches/load/run.sh`) measures weir against it to see what weir's own work costs.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;

struct Bare {
    upstream: SocketAddr,
    timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if self.timeouts {
            peer.options.connection_timeout = Some(std::time::Duration::from_secs(2));
            peer.options.read_timeout = Some(std::time::Duration::from_secs(60));
            peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }
}

/// `h1-loop`: one loop per client connection on pingora-core's HTTP/1 codec, the upstream
/// connection kept with it — the floor of weir's direct HTTP/1.1 path (the same codec calls,
/// without routing, balancing, checks, `X-Forwarded-*`, metrics or logs).
struct H1Loop {
    upstream: SocketAddr,
}

#[async_trait]
impl pingora::apps::ServerApp for H1Loop {
    async fn process_new(
        self: &std::sync::Arc<Self>,
        stream: pingora::protocols::Stream,
        _shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        use pingora::protocols::http::v1::client::HttpSession as Client;
        use pingora::protocols::http::v1::server::HttpSession as Server;
        let mut stream = stream;
        let mut prefix = None;
        let mut pinned: Option<pingora::protocols::Stream> = None;
        loop {
            let mut down = Server::new(stream);
            if let Some(p) = prefix.take() {
                down.set_pipelined_prefix(p);
            }
            down.set_server_keepalive(Some(60));
            match down.read_request().await {
                Ok(Some(_)) => {}
                _ => return None,
            }
            let up_stream = match pinned.take() {
                Some(s) => s,
                None => {
                    let tcp = tokio::net::TcpStream::connect(self.upstream).await.ok()?;
                    let _ = tcp.set_nodelay(true);
                    let s: pingora::protocols::l4::stream::Stream = tcp.into();
                    Box::new(s)
                }
            };
            let mut up = Client::new(up_stream);
            let req = Box::new(down.req_header().clone());
            up.write_request_header(req).await.ok()?;
            up.read_response().await.ok()?;
            let resp = Box::new(up.resp_header()?.clone());
            down.write_response_header(resp).await.ok()?;
            while let Some(b) = up.read_body_bytes().await.ok()? {
                down.write_body(&b).await.ok()?;
            }
            down.finish_body().await.ok()?;
            up.respect_keepalive();
            pinned = up.reuse().await;
            let (s, p) = down.reuse().await.ok()??.into_parts();
            stream = s;
            prefix = p;
        }
    }
}

/// Parses `LISTEN UPSTREAM [THREADS] [timeouts] [no-steal] [h1-loop]` and runs the proxy until killed.
pub fn main_with_args() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream), threads) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM [THREADS] [timeouts] [no-steal] [h1-loop]");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("bare-pingora: {upstream:?} is not IP:PORT");
        std::process::exit(2);
    };
    let threads = threads.and_then(|t| t.parse().ok()).unwrap_or(1);
    let options = &args[3.min(args.len())..];
    let timeouts = options.iter().any(|a| a == "timeouts");
    let conf = ServerConf {
        threads,
        work_stealing: !options.iter().any(|a| a == "no-steal"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    if options.iter().any(|a| a == "h1-loop") {
        let mut service =
            pingora::services::listening::Service::new("h1 loop".to_string(), H1Loop { upstream });
        service.add_tcp(listen);
        server.add_service(service);
        server.run_forever();
    }
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream, timeouts });
    if let Some(app) = proxy.app_logic_mut() {
        // h2c (prior knowledge) beside HTTP/1.1, as weir's listener does.
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
