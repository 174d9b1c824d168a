//! `bare-pingora LISTEN UPSTREAM [THREADS] [timeouts] [no-steal]`: a Pingora proxy that sends every
//! request to one upstream address — no routing, balancing, metrics or logs. With `timeouts`
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

/// Parses `LISTEN UPSTREAM [THREADS] [timeouts] [no-steal]` and runs the proxy until killed.
pub fn main_with_args() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream), threads) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM [THREADS] [timeouts] [no-steal]");
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
