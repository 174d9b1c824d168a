//! Command line of the `weir` binary (README.md lists the flags). Every flag also reads `WEIR_<FLAG>`.
//!
//! Only flags whose feature exists are accepted: an operator never sets a flag that silently
//! does nothing.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which implementation serves plaintext HTTP/1 requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Http1Path {
    /// weir's direct path for requests with no body or a small one, no upgrade and no TLS/h2
    /// upstream; Pingora's proxy for the rest.
    Direct,
    /// Pingora's proxy for every request.
    Pingora,
}

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "weir: a Kubernetes ingress router on Pingora"
)]
pub struct Cli {
    /// Ingress/IngressClass/Service/EndpointSlice/Secret YAML files or directories
    /// (multi-document); reloaded when they change. Repeatable; comma-separated in the
    /// environment variable. Without it, weir watches Kubernetes.
    #[arg(long = "manifests", env = "WEIR_MANIFESTS", value_delimiter = ',')]
    pub manifests: Vec<PathBuf>,

    /// Kubeconfig for the API server (default: the in-cluster service account, then
    /// KUBECONFIG or ~/.kube/config).
    #[arg(long, env = "WEIR_KUBECONFIG", conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,

    /// Service whose load-balancer address is written to the status of the Ingresses weir
    /// serves (Kubernetes mode; one elected replica writes).
    #[arg(long, env = "WEIR_PUBLISH_SERVICE", value_parser = parse_namespaced_name)]
    pub publish_service: Option<(String, String)>,

    /// Name of the Lease that elects the replica writing Ingress and Gateway API status.
    #[arg(long, env = "WEIR_ELECTION_ID", default_value = "weir-leader")]
    pub election_id: String,

    /// Namespace of that Lease (in a pod: its own namespace, from the downward API).
    #[arg(long, env = "WEIR_ELECTION_NAMESPACE", default_value = "default")]
    pub election_namespace: String,

    /// The Ingress class this instance serves.
    #[arg(long, env = "WEIR_INGRESS_CLASS", default_value = "weir")]
    pub ingress_class: String,

    /// The `spec.controller` an IngressClass of that name must have. With `--ingress-class
    /// nginx --ingress-controller k8s.io/ingress-nginx`, weir serves ingress-nginx's class as
    /// it stands (docs/configuration.md).
    #[arg(long, env = "WEIR_INGRESS_CONTROLLER", default_value = weir_discovery::CONTROLLER_NAME, value_parser = parse_controller_name)]
    pub ingress_controller: String,

    /// The `controllerName` of the Gateway API GatewayClasses weir serves.
    #[arg(long, env = "WEIR_GATEWAY_CONTROLLER", default_value = weir_discovery::gateway::CONTROLLER_NAME, value_parser = parse_controller_name)]
    pub gateway_controller: String,

    /// Only read objects of this namespace (default: all).
    #[arg(long, env = "WEIR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Plaintext listener (HTTP/1.1 and h2c).
    #[arg(long, env = "WEIR_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,

    /// Admin listener: /healthz, /readyz, /metrics, /debug/routes, /debug/endpoints.
    #[arg(long, env = "WEIR_ADMIN_LISTEN", default_value = "0.0.0.0:9911")]
    pub admin_listen: SocketAddr,

    /// HTTPS listener (certificates from the Secrets Ingresses name in `spec.tls`, chosen
    /// by SNI; HTTP/2 and HTTP/1.1 by ALPN). Absent: no HTTPS.
    #[arg(long, env = "WEIR_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,

    /// `kubernetes.io/tls` Secret served for unknown or absent SNI (default: a self-signed
    /// certificate made at start).
    #[arg(long, env = "WEIR_DEFAULT_CERTIFICATE", value_parser = parse_namespaced_name)]
    pub default_certificate: Option<(String, String)>,

    /// PEM bundle of the CAs that `backend-protocol: https` upstreams' certificates must
    /// chain to, instead of the system roots (which honour SSL_CERT_FILE / SSL_CERT_DIR).
    #[arg(long, env = "WEIR_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<std::path::PathBuf>,

    /// Export traces over OTLP/HTTP to this collector (`http://HOST:4318`; spans go to
    /// `/v1/traces`). Absent: no spans (incoming trace ids still reach the access log).
    #[arg(long, env = "WEIR_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// This instance's topology zone (for `weir.dev/zone-aware` routes).
    #[arg(long, env = "WEIR_ZONE")]
    pub zone: Option<String>,

    /// Worker threads of the proxy (default: number of CPUs).
    #[arg(long, env = "WEIR_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Networks (CIDR, comma-separated) whose `X-Forwarded-For` is believed and extended;
    /// from any other peer the header is replaced by the peer's address.
    #[arg(long, env = "WEIR_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::http::forwarded::Cidr>,

    /// Redis of the fleet-wide rate limits (`global-rate-limit` annotations), as
    /// `redis://host:port[/db]`; unset, those limits are not applied (and reported).
    #[arg(long, env = "WEIR_REDIS_URL")]
    pub redis_url: Option<String>,

    /// UDP address this replica gossips with its fleet on (off when unset): the replicas
    /// share what their balancers learn of endpoints (docs/operations.md).
    #[arg(long, env = "WEIR_FLEET_LISTEN", requires = "fleet_secret_file")]
    pub fleet_listen: Option<SocketAddr>,

    /// The gossip address peers reach this replica on, when --fleet-listen is not it
    /// (listening on 0.0.0.0 in a pod: the pod's IP): `ip:port`, `[ipv6]:port`, or an IP
    /// alone (IPv4 or IPv6), which takes --fleet-listen's port.
    #[arg(long, env = "WEIR_FLEET_ADVERTISE", requires = "fleet_listen", value_parser = parse_advertise)]
    pub fleet_advertise: Option<FleetAdvertise>,

    /// Replicas to join the fleet through, as `host:port` of their --fleet-listen
    /// (comma-separated); any one that answers is enough.
    #[arg(
        long,
        env = "WEIR_PEERS",
        value_delimiter = ',',
        requires = "fleet_listen"
    )]
    pub peers: Vec<String>,

    /// File holding the fleet's shared key (at least 16 bytes): gossip without it is
    /// dropped, so nothing outside the fleet can report on its endpoints.
    #[arg(long, env = "WEIR_FLEET_SECRET_FILE", requires = "fleet_listen")]
    pub fleet_secret_file: Option<PathBuf>,

    /// How often the fleet gossips.
    #[arg(long, env = "WEIR_FLEET_GOSSIP_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub fleet_gossip_interval: Duration,

    /// Most header fields a request may have (more: 431).
    #[arg(long, env = "WEIR_MAX_REQUEST_HEADERS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_request_headers: u32,

    /// Most bytes of header fields a request may have (more: 431).
    #[arg(long, env = "WEIR_MAX_REQUEST_HEADER_BYTES", default_value_t = 32 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1_000_000))]
    pub max_request_header_bytes: u32,

    /// Longest request line (method, target, version) in bytes (longer: 414).
    #[arg(long, env = "WEIR_MAX_REQUEST_LINE_BYTES", default_value_t = 8 * 1024, value_parser = clap::value_parser!(u32).range(256..=1_000_000))]
    pub max_request_line_bytes: u32,

    /// Keep encoded slashes (`%2F`) in request paths, encoded, instead of refusing such
    /// requests with 400 (for applications that put them in paths on purpose).
    #[arg(long, env = "WEIR_ALLOW_ENCODED_SLASHES")]
    pub allow_encoded_slashes: bool,

    /// Most client connections with a request being read or served; beyond it a new
    /// connection gets a 503 and is closed.
    #[arg(long, env = "WEIR_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Time a new connection has to send its first complete request header (slowloris);
    /// 0s turns the limit off.
    #[arg(long, env = "WEIR_REQUEST_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_header_timeout: Duration,

    /// Run the workers as one work-stealing runtime instead of one runtime per thread
    /// (evens out connections of very unequal cost, at some cost per request).
    #[arg(long, env = "WEIR_WORK_STEALING")]
    pub work_stealing: bool,

    /// Which implementation serves simple requests: `direct` (weir's own HTTP/1.1 and
    /// HTTP/2 server and its exchange with plain HTTP/1.1 upstreams, for requests without an
    /// upgrade and with no body or a small one, plaintext or TLS; Pingora's proxy for
    /// everything else) or `pingora` (Pingora's proxy for all).
    #[arg(long, env = "WEIR_HTTP1_PATH", value_enum, default_value = "direct")]
    pub http1_path: Http1Path,

    /// After SIGTERM: fail /readyz and keep serving this long before closing listeners.
    #[arg(long, env = "WEIR_SHUTDOWN_DELAY", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// Upper bound for in-flight requests after the listeners close.
    #[arg(long, env = "WEIR_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long manifest files or Kubernetes objects must be quiet before a change is
    /// applied (default: 500ms for manifests, 1s for Kubernetes, where changes come in
    /// bursts from many controllers).
    #[arg(long, env = "WEIR_RELOAD_DEBOUNCE", value_parser = parse_duration)]
    pub reload_debounce: Option<Duration>,

    /// Per-endpoint metrics (`weir_endpoint_requests_total`, `weir_endpoint_in_flight`):
    /// one series per upstream pod, so off by default.
    #[arg(long, env = "WEIR_ENDPOINT_METRICS")]
    pub endpoint_metrics: bool,

    /// Log level or filter (`info`, `debug`, `info,weir::access=off`, ...); overrides
    /// RUST_LOG. Default: RUST_LOG, else `info`.
    #[arg(long, env = "WEIR_LOG_LEVEL", value_parser = parse_log_filter)]
    pub log_level: Option<String>,

    /// Check the flags and the files they name (manifests, kubeconfig, CA file), print
    /// "configuration is valid" and exit 0 without listening or watching anything.
    #[arg(long)]
    pub check: bool,

    /// Log format (default: text on a terminal, JSON otherwise).
    #[arg(long, env = "WEIR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

fn parse_namespaced_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

/// An IngressClass `spec.controller`: a domain-prefixed path such as `acme.io/foo`, at most
/// 250 characters (as the API server validates it).
fn parse_controller_name(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not a controller name like example.com/ingress-controller");
    let (domain, path) = s.split_once('/').ok_or_else(bad)?;
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let path_ok = !path.is_empty() && path.bytes().all(|b| b.is_ascii_graphic());
    if s.len() > 250 || !domain_ok || !path_ok {
        return Err(bad());
    }
    Ok(s.to_string())
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not a log filter like info or debug,weir::access=off ({e})"))
}

/// `--fleet-advertise`: an address, or an IP whose port is the listen port's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetAdvertise {
    Addr(SocketAddr),
    Ip(std::net::IpAddr),
}

impl FleetAdvertise {
    /// The address peers reach this replica on, listening on `listen`.
    pub fn with_listen(self, listen: SocketAddr) -> SocketAddr {
        match self {
            FleetAdvertise::Addr(addr) => addr,
            FleetAdvertise::Ip(ip) => SocketAddr::new(ip, listen.port()),
        }
    }
}

fn parse_advertise(s: &str) -> Result<FleetAdvertise, String> {
    s.parse()
        .map(FleetAdvertise::Addr)
        .or_else(|_| s.parse().map(FleetAdvertise::Ip))
        .map_err(|_| format!("{s:?} is neither ip:port, [ipv6]:port nor an IP"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 500ms or 10s ({e})"))
}

/// Parses the command line. On bad input: one line on stderr and exit code 2.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            // clap's message may continue on indented lines ("...not provided:\n  --manifests");
            // keep all of it, on one line, and drop the usage block and tips after it.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("tip:")
                        && !l.starts_with("For more information")
                })
                .collect();
            let line = message.join(" ");
            let line = line.trim_start_matches("error: ");
            eprintln!("weir: {line} (see weir --help)");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_is_advertised_by_address_or_by_ip_alone() {
        let listen: SocketAddr = "0.0.0.0:7946".parse().expect("addr");
        for (given, advertised) in [
            ("10.1.2.3:9000", "10.1.2.3:9000"),
            ("10.1.2.3", "10.1.2.3:7946"),
            ("fd00::1", "[fd00::1]:7946"),
            ("[fd00::1]:9000", "[fd00::1]:9000"),
        ] {
            let parsed = parse_advertise(given).expect(given);
            assert_eq!(parsed.with_listen(listen).to_string(), advertised);
        }
        for bad in ["pod-ip", "10.1.2.3:port", "fd00::1:7946:x", ""] {
            assert!(parse_advertise(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let cli = Cli::try_parse_from(["weir", "--manifests", "a.yaml", "--manifests", "dir"])
            .expect("valid");
        assert_eq!(cli.manifests.len(), 2);
        assert_eq!(cli.ingress_class, "weir");
        assert_eq!(cli.ingress_controller, "weir.dev/ingress-controller");
        let nginx = Cli::try_parse_from([
            "weir",
            "--manifests",
            "a",
            "--ingress-controller",
            "k8s.io/ingress-nginx",
        ])
        .expect("valid");
        assert_eq!(nginx.ingress_controller, "k8s.io/ingress-nginx");
        assert_eq!(cli.http_listen, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(cli.shutdown_delay, Duration::from_secs(10));
        assert_eq!(cli.reload_debounce, None);
    }

    #[test]
    fn bad_input_is_an_error() {
        for args in [
            vec!["weir", "--manifests", "a", "--kubeconfig", "k"],
            vec!["weir", "--manifests", "a", "--shutdown-delay", "soon"],
            vec!["weir", "--manifests", "a", "--http-listen", "nowhere"],
            vec!["weir", "--manifests", "a", "--threads", "0"],
            vec!["weir", "--manifests", "a", "--publish-service", "no-slash"],
            vec!["weir", "--manifests", "a", "--bogus"],
            vec![
                "weir",
                "--manifests",
                "a",
                "--ingress-controller",
                "no-slash",
            ],
            vec![
                "weir",
                "--manifests",
                "a",
                "--ingress-controller",
                "Upper.io/x",
            ],
            vec!["weir", "--manifests", "a", "--ingress-controller", "a.io/"],
            vec![
                "weir",
                "--manifests",
                "a",
                "--ingress-controller",
                "a.io/with space",
            ],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}
