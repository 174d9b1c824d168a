//! The `weir` binary: wires the command line, the configuration source (manifests or
//! Kubernetes), the routing state, the Pingora data path and the admin listener together.
//! No logic of its own beyond startup order: check inputs (fail fast on bad ones), publish
//! the first snapshot where it is at hand (manifests), then serve; `/readyz` turns 200 once
//! a snapshot is live. `weir migrate` is a report of its own ([`weir_proxy::app::migrate`]).

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use weir_discovery::manifests::ManifestSource;
use weir_discovery::TranslateOptions;
use weir_proxy::app::supervise::Supervised;
use weir_proxy::app::{admin, allocator, cli, logging, metrics, shutdown};
use weir_proxy::request::{access_log, phases as dataplane};
use weir_proxy::routes::{config, routing};

// Pingora allocates and frees several buffers and boxed futures per request: jemalloc gives
// ~10 % more req/s than glibc's allocator and the least memory per idle connection of the
// three measured (glibc 23, jemalloc 15.5, mimalloc 81 KiB; docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One line on stderr and exit code 2: how weir reports bad input at start.
fn fail(message: impl std::fmt::Display) -> ! {
    // Some parsers add a source excerpt on further lines; the first line states the problem.
    let text = message.to_string();
    eprintln!("weir: {}", text.lines().next().unwrap_or("failed"));
    std::process::exit(2)
}

/// Pingora gives a second listener on an address it has already bound that same socket (its
/// table of sockets is keyed by address), which is then closed twice: a crash, or in a release
/// build another connection's descriptor closed under it. Two listeners on one port are an
/// error in the flags, so `--check` reports it too.
fn check_distinct_listeners(listeners: &[(&str, SocketAddr)]) {
    for (i, &(flag, addr)) in listeners.iter().enumerate() {
        let overlapped = listeners[..i].iter().find(|(_, earlier)| {
            earlier.port() == addr.port()
                && (earlier.ip() == addr.ip()
                    || earlier.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        if let Some((earlier_flag, earlier)) = overlapped {
            fail(format!(
                "{flag} {addr}: overlaps {earlier_flag} {earlier}; each listener needs a port of its own"
            ));
        }
    }
}

/// Binding is Pingora's job, but it reports a busy port with a panic deep in startup;
/// trying first gives the operator one clear line instead.
fn check_bindable(listeners: &[(&str, SocketAddr)]) {
    for &(flag, addr) in listeners {
        if let Err(e) = TcpListener::bind(addr) {
            fail(format!("{flag} {addr}: cannot listen: {e}"));
        }
    }
}

/// Whether `kube::Config::infer` has anything to find: in-cluster variables, `KUBECONFIG`
/// or `~/.kube/config`.
fn kubernetes_config_available() -> bool {
    let home_config = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".kube/config"))
        .is_some_and(|p| p.exists());
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some()
        || home_config
}

fn main() {
    // `weir migrate ...`: a report on Ingresses written for ingress-nginx, then exit.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "migrate")
    {
        std::process::exit(weir_proxy::app::migrate::run(std::env::args_os().skip(1)));
    }
    let cli = cli::parse();
    let log_format = logging::init(cli.log_format, cli.log_level.as_deref());
    allocator::return_freed_memory_when_idle();

    // kube and Pingora both use rustls: one process-wide crypto provider, installed before
    // either builds a TLS configuration (the first one would panic otherwise).
    let _ = rustls::crypto::ring::default_provider().install_default();

    // Manifests are read now so that bad files stop the start with one clear line.
    let source = if cli.manifests.is_empty() {
        match &cli.kubeconfig {
            Some(path) => {
                if let Err(e) = kube::config::Kubeconfig::read_from(path) {
                    fail(format!("--kubeconfig {}: {e}", path.display()));
                }
            }
            // --check validates flags, not the environment it will run in (the chart's
            // arguments are checked outside the cluster).
            None if !cli.check && !kubernetes_config_available() => fail(
                "no configuration source: give --manifests PATH, or --kubeconfig FILE, or run in a cluster",
            ),
            None => {}
        }
        None
    } else {
        Some(ManifestSource::open(cli.manifests.clone()).unwrap_or_else(|e| fail(e)))
    };
    let upstream_ca_file = cli.upstream_ca_file.as_deref().map(|path| {
        check_ca_file(path).unwrap_or_else(|e| fail(format!("--upstream-ca-file: {e}")));
        path.display().to_string()
    });
    if let Some(endpoint) = &cli.otlp_endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.parse::<http::Uri>().is_err()
        {
            fail(format!(
                "--otlp-endpoint {endpoint:?} is not an http:// or https:// URL"
            ));
        }
    }
    let mut listeners = vec![
        ("--http-listen", cli.http_listen),
        ("--admin-listen", cli.admin_listen),
    ];
    if let Some(addr) = cli.https_listen {
        listeners.push(("--https-listen", addr));
    }
    check_distinct_listeners(&listeners);
    // The fleet's address is a flag: checked with the others.
    if let Some(listen) = cli.fleet_listen {
        if cli
            .fleet_advertise
            .map_or(listen, |a| a.with_listen(listen))
            .ip()
            .is_unspecified()
        {
            fail(format!(
                "--fleet-listen {listen}: peers cannot reach an unspecified address; give --fleet-advertise"
            ));
        }
    }
    if cli.check {
        println!("weir: configuration is valid");
        return;
    }
    // The fleet (`--fleet-listen`): its key is read now, so a bad file stops the start.
    let fleet = cli.fleet_listen.map(|listen| {
        let path = cli
            .fleet_secret_file
            .as_deref()
            .unwrap_or_else(|| fail("--fleet-listen needs --fleet-secret-file".to_string()));
        let secret = std::fs::read(path)
            .unwrap_or_else(|e| fail(format!("--fleet-secret-file {}: {e}", path.display())));
        let secret = secret.trim_ascii().to_vec();
        if secret.len() < 16 {
            fail(format!(
                "--fleet-secret-file {}: the key must be at least 16 bytes",
                path.display()
            ));
        }
        weir_proxy::fleet::FleetConfig {
            listen,
            advertise: cli
                .fleet_advertise
                .map_or(listen, |a| a.with_listen(listen)),
            peers: cli.peers.clone(),
            secret,
            node_id: std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("weir-{}-{}", std::process::id(), listen.port())),
            cluster_id: "weir".to_string(),
            gossip_interval: cli.fleet_gossip_interval,
        }
    });

    check_bindable(&listeners);

    let metrics = metrics::Metrics::with_endpoint_metrics(cli.endpoint_metrics)
        .unwrap_or_else(|e| fail(format!("metrics: {e}")));
    // Built before any runtime starts: the exporter's blocking client runs on the SDK's
    // own thread.
    let telemetry = Arc::new(match &cli.otlp_endpoint {
        Some(endpoint) => weir_proxy::request::telemetry::Telemetry::otlp(endpoint)
            .unwrap_or_else(|e| fail(format!("--otlp-endpoint {endpoint}: {e}"))),
        None => weir_proxy::request::telemetry::Telemetry::disabled(),
    });
    let certificates = cli.https_listen.map(|_| {
        let default = weir_proxy::listener::tls::self_signed_default()
            .unwrap_or_else(|e| fail(format!("default certificate: {e}")));
        Arc::new(weir_proxy::listener::tls::CertificateStore::new(default))
    });
    // An empty zone (the chart's WEIR_ZONE from a pod label that is absent) means none.
    let zone = cli.zone.clone().filter(|z| !z.is_empty());
    let mut live = routing::LiveRouting::in_zone(zone);
    if let Some(store) = &certificates {
        live = live.with_certificates(Arc::clone(store), cli.default_certificate.clone());
    }
    let routing = Arc::new(live);
    let applier = Arc::new(config::ConfigApplier::new(
        Arc::clone(&routing),
        metrics.clone(),
        TranslateOptions {
            ingress_class: cli.ingress_class.clone(),
            controller: cli.ingress_controller.clone(),
            watch_namespace: cli.watch_namespace.clone(),
            now_unix: 0,
            default_certificate: cli.default_certificate.clone(),
            gateway_controller: cli.gateway_controller.clone(),
        },
    ));
    let manifests = source.map(|source| {
        let service = config::ManifestsService::new(
            source,
            Arc::clone(&applier),
            cli.reload_debounce.unwrap_or(Duration::from_millis(500)),
        );
        service.reload();
        service
    });

    let threads = cli
        .threads
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let conf = ServerConf {
        threads,
        // One current-thread runtime per worker (connections spread at random, as nginx's
        // workers): measured faster than one work-stealing runtime (docs/benchmarks.md).
        work_stealing: cli.work_stealing,
        // Pingora waits this long after closing listeners before stopping runtimes.
        grace_period_seconds: Some(cli.drain_timeout.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ca_file: upstream_ca_file,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let fleet_reports = fleet
        .as_ref()
        .map(|_| Arc::new(weir_proxy::fleet::LocalReports::default()));
    let fleet_status: Arc<arc_swap::ArcSwap<weir_proxy::fleet::FleetStatus>> = Arc::default();

    let access_log =
        access_log::AccessLog::stdout(log_format, metrics.access_log_dropped_total.clone())
            .unwrap_or_else(|e| fail(format!("access log: {e}")));
    let logic = dataplane::WeirProxy::new(
        Arc::clone(&routing),
        metrics.clone(),
        Arc::clone(&telemetry),
        dataplane::DataPlaneOptions {
            trusted_proxies: weir_proxy::http::forwarded::TrustedProxies::new(
                cli.trusted_proxies.clone(),
            ),
            limits: weir_proxy::http::hardening::RequestLimits {
                max_headers: cli.max_request_headers as usize,
                max_header_bytes: cli.max_request_header_bytes as usize,
                max_request_line_bytes: cli.max_request_line_bytes as usize,
            },
            allow_encoded_slashes: cli.allow_encoded_slashes,
            access_log: access_log.clone(),
            redis: cli.redis_url.as_deref().map(|url| {
                weir_proxy::redis_store::RedisStore::new(url).unwrap_or_else(|e| fail(e))
            }),
            fleet: fleet_reports.clone(),
        },
    );
    let in_flight = logic.in_flight();
    let core = logic.clone();
    let direct = (cli.http1_path == weir_proxy::app::cli::Http1Path::Direct).then(|| {
        weir_proxy::engine::own::direct::DirectPath::new(logic.clone(), Arc::clone(&routing))
    });
    let mut http = pingora::proxy::http_proxy(&server.configuration, logic);
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    http.server_options = Some(options);
    let gate_stats = Arc::new(weir_proxy::listener::gate::GateStats::new(&metrics));
    let restarts = metrics.background_restarts_total.clone();
    let mut proxy = Service::new(
        "weir proxy".to_string(),
        weir_proxy::listener::gate::ConnectionGate::new(
            http,
            core,
            direct,
            cli.max_connections as usize,
            cli.request_header_timeout,
            gate_stats,
        ),
    );
    // No buffers in Pingora's socket layer: weir's engines read into buffers of their own
    // and release them while a connection is idle (a 64 KiB read buffer per connection,
    // allocated for its whole life, would be 12 times what nginx needs per idle
    // connection); they write whole answers, which a write buffer would only copy.
    use pingora::listeners::{L4BufferSettings, ListenerConfig};
    proxy.add_listener(
        ListenerConfig::tcp(cli.http_listen.to_string()).l4_buffer(L4BufferSettings::unbuffered()),
    );
    if let (Some(addr), Some(store)) = (cli.https_listen, &certificates) {
        // Paths are ignored once a resolver is set: every certificate comes from `store`.
        let mut tls = pingora::listeners::tls::TlsSettings::intermediate("", "")
            .unwrap_or_else(|e| fail(format!("--https-listen: {e}")));
        tls.set_cert_resolver(Arc::clone(store) as Arc<dyn rustls::server::ResolvesServerCert>);
        tls.enable_h2();
        proxy.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .tls(tls)
                .l4_buffer(L4BufferSettings::unbuffered()),
        );
        // Handshakes of new connections wait their turn behind requests under way.
        proxy.endpoints().set_pre_tls_callback(Arc::new(
            weir_proxy::listener::handshake_turns::HandshakeTurns,
        ));
    }

    let shutdown_flag = Arc::new(admin::ShutdownFlag::default());
    // Health-check results: the checker's, and in a fleet every replica's.
    let checks = Arc::new(weir_proxy::health::CheckBoard::default());
    if let (Some(config), Some(reports)) = (fleet, &fleet_reports) {
        server.add_service(background_service(
            "weir fleet",
            weir_proxy::fleet::FleetService {
                config,
                reports: Arc::clone(reports),
                checks: Arc::clone(&checks),
                routing: Arc::clone(&routing),
                metrics: metrics.clone(),
                status: Arc::clone(&fleet_status),
            },
        ));
    }
    // Active health checks of ejected endpoints (routes with weir.dev/health-check-path).
    server.add_service(background_service(
        "weir health checks",
        weir_proxy::health::HealthChecker {
            routing: Arc::clone(&routing),
            board: checks,
            metrics: metrics.clone(),
        },
    ));
    let mut admin_app =
        admin::AdminApp::new(Arc::clone(&routing), metrics, Arc::clone(&shutdown_flag));
    if fleet_reports.is_some() {
        admin_app = admin_app.with_fleet(Arc::clone(&fleet_status));
    }
    let mut admin = Service::new("weir admin".to_string(), admin_app);
    admin.threads = Some(1);
    admin.add_tcp(&cli.admin_listen.to_string());

    server.add_service(proxy);
    server.add_service(admin);
    match manifests {
        Some(service) => {
            server.add_service(background_service(
                "weir manifests",
                Supervised::new("manifests", service, restarts),
            ));
        }
        None => {
            server.add_service(background_service(
                "weir kubernetes",
                Supervised::new(
                    "kubernetes",
                    config::KubernetesService::new(
                        cli.kubeconfig.clone(),
                        cli.watch_namespace.clone(),
                        Arc::clone(&applier),
                        cli.reload_debounce.unwrap_or(Duration::from_secs(1)),
                        config::StatusPublishing {
                            service: cli.publish_service.clone(),
                            election_namespace: cli.election_namespace.clone(),
                            election_id: cli.election_id.clone(),
                            identity: std::env::var("POD_NAME")
                                .unwrap_or_else(|_| format!("weir-{}", std::process::id())),
                            gateway_controller: cli.gateway_controller.clone(),
                        },
                    ),
                    restarts,
                ),
            ));
        }
    }

    tracing::info!(
        http = %cli.http_listen,
        admin = %cli.admin_listen,
        threads,
        "weir listening"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(
            shutdown::DelayedShutdownWatch::new(shutdown_flag, cli.shutdown_delay)
                .exit_when_drained(in_flight, {
                    let telemetry = Arc::clone(&telemetry);
                    let access_log = access_log.clone();
                    move || {
                        telemetry.shutdown();
                        access_log.flush();
                    }
                }),
        ),
    });
    telemetry.shutdown();
    access_log.flush();
}

/// A CA bundle Pingora can load: readable, at least one PEM certificate, each of them
/// parseable (checked here because Pingora's own loading would fail late and loudly).
fn check_ca_file(path: &std::path::Path) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable PEM certificate", path.display()));
    }
    Ok(())
}
