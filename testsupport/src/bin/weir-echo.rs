//! `weir-echo`: the echo upstream as a process (see `weir_testsupport::echo`).

use clap::Parser;
use weir_testsupport::echo::{serve, EchoIdentity};

#[derive(Debug, Parser)]
#[command(
    name = "weir-echo",
    about = "HTTP echo upstream for weir's tests, quickstart and benchmarks"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: std::net::SocketAddr,
    /// Value of the `service` field.
    #[arg(long, default_value = "echo")]
    service: String,
    /// Value of the `pod` field (default: service-port).
    #[arg(long)]
    pod: Option<String>,
    /// Answer every request with this status (a failing backend); `?status=` still wins.
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Add `Retry-After: N` to 503 answers.
    #[arg(long)]
    retry_after: Option<u64>,
    /// Wait this long before every answer (a slow backend); `?delay_ms=` still wins.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    let pod = args
        .pod
        .clone()
        .unwrap_or_else(|| format!("{}-{}", args.service, args.listen.port()));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
            };
            match read(cert)
                .and_then(|c| Ok((c, read(key)?)))
                .and_then(|(c, k)| weir_testsupport::tls::server_config(&c, &k))
            {
                Ok(config) => Some(config),
                Err(e) => {
                    eprintln!("weir-echo: TLS: {e}");
                    std::process::exit(2);
                }
            }
        }
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir-echo: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        eprintln!(
            "weir-echo: {} ({}) listening on {}",
            args.service, pod, args.listen
        );
        serve(
            listener,
            EchoIdentity {
                service: args.service,
                pod,
                status: args.status,
                delay: std::time::Duration::from_millis(args.delay_ms),
                retry_after: args.retry_after,
                tls,
            },
        )
        .await
    });
    if let Err(e) = result {
        eprintln!("weir-echo: {}: {e}", args.listen);
        std::process::exit(1);
    }
}
