//! Shared harness of weir's end-to-end tests: the real `weir` binary, real `weir-echo`
//! upstream processes, manifests written to a temporary directory, real HTTP clients.

// Each test file uses a different part of the harness; helpers fail the calling test by
// panicking with a message.
#![allow(dead_code, clippy::expect_used, clippy::panic)]

use reqwest::blocking::Client;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use weir_testsupport::process::{free_port, wait_for_listen, ChildGuard};

/// A running echo upstream.
pub struct Echo {
    pub addr: SocketAddr,
    _process: ChildGuard,
}

impl Echo {
    /// Kills the upstream process (the port then refuses connections).
    pub fn kill(&mut self) {
        let _ = self._process.child.kill();
        let _ = self._process.child.wait();
    }

    pub fn start(service: &str) -> Echo {
        Echo::start_with(service, &[])
    }

    /// An echo upstream on a given address (pod name `<service>-pod`).
    pub fn start_at(addr: SocketAddr, service: &str, extra: &[&str]) -> Echo {
        let process = weir_testsupport::process::start_echo_at(
            addr,
            service,
            &format!("{service}-pod"),
            extra,
        );
        Echo {
            addr,
            _process: process,
        }
    }

    /// An echo upstream with more `weir-echo` flags (e.g. `--status 500`).
    pub fn start_with(service: &str, extra: &[&str]) -> Echo {
        let (process, addr) =
            weir_testsupport::process::start_echo_with(service, &format!("{service}-pod"), extra);
        Echo {
            addr,
            _process: process,
        }
    }
}

/// A running weir.
pub struct Weir {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub process: ChildGuard,
    pub log: PathBuf,
}

impl Weir {
    /// Starts weir on `manifests` with free ports and waits for `/readyz`.
    pub fn start(manifests: &Path, extra: &[&str]) -> Weir {
        let log_dir = manifests.parent().unwrap_or(manifests);
        let mut args = vec!["--manifests", manifests.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Weir::launch(log_dir, &args)
    }

    /// Starts weir watching the API server of `kubeconfig` and waits for `/readyz`.
    pub fn start_kubernetes(kubeconfig: &Path, extra: &[&str]) -> Weir {
        let log_dir = kubeconfig.parent().unwrap_or(kubeconfig);
        let mut args = vec!["--kubeconfig", kubeconfig.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Weir::launch(log_dir, &args)
    }

    fn launch(log_dir: &Path, source_args: &[&str]) -> Weir {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = log_dir.join(format!("weir-{}.log", http.port()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let process = ChildGuard::spawn(
            "weir",
            Command::new(env!("CARGO_BIN_EXE_weir"))
                .args(source_args)
                .args(["--http-listen", &http.to_string()])
                .args(["--admin-listen", &admin.to_string()])
                .args(if source_args.contains(&"--threads") {
                    &[][..]
                } else {
                    &["--threads", "2"][..]
                })
                .args(["--log-format", "json"])
                // The access log (stdout) and the other log lines (stderr) in one file.
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file),
        );
        let weir = Weir {
            http,
            admin,
            process,
            log,
        };
        assert!(
            wait_for_listen(http, Duration::from_secs(15)),
            "weir did not listen; log:\n{}",
            weir.log_text()
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while weir.admin_get("/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "weir never became ready; log:\n{}",
                weir.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        weir
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The access log so far: one JSON object per request (target `weir::access`), in the
    /// order the requests ended (worker threads' lines reach the log in batches, so the file's
    /// order is by thread within each batch).
    pub fn access_log(&self) -> Vec<Value> {
        let mut lines: Vec<Value> = self
            .log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v["target"] == "weir::access")
            .collect();
        lines.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
        lines
    }

    /// The access log once it holds at least `n` lines (a request is logged just after
    /// its response went out, so the client can be a little ahead); panics after 5 s.
    pub fn access_log_of(&self, n: usize) -> Vec<Value> {
        let mut lines = Vec::new();
        let ready = wait_until(Duration::from_secs(5), || {
            lines = self.access_log();
            lines.len() >= n
        });
        assert!(
            ready.is_some(),
            "access log has {} lines, expected {n}",
            lines.len()
        );
        lines
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// GET through the proxy with a Host header: (status, body).
    /// A plain-HTTP GET of `path` on `host` that does not follow a redirect: its status and
    /// `Location` (empty without one).
    pub fn redirect_of(&self, host: &str, path: &str) -> (u16, String) {
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let resp = client
            .get(self.url(path))
            .header("host", host)
            .send()
            .expect("request");
        status_and_location(&resp)
    }

    pub fn get(&self, client: &Client, host: &str, path: &str) -> (u16, String) {
        match client.get(self.url(path)).header("host", host).send() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.text().unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    /// GET through the proxy, expecting an echo answer.
    pub fn echo(&self, client: &Client, host: &str, path: &str) -> Value {
        let (status, body) = self.get(client, host, path);
        assert_eq!(status, 200, "GET {host}{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not echo JSON ({e}): {body}"))
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        match client().get(self.admin_url(path)).send() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.text().unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    /// The value of one Prometheus sample, by its exact `name{labels}` text.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.admin_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }
}

/// A response's status and `Location` (empty without one).
pub fn status_and_location(resp: &reqwest::blocking::Response) -> (u16, String) {
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (resp.status().as_u16(), location.to_string())
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Manifests of a Service `name` (port 80 named `http`, in `namespace`) and one
/// EndpointSlice per address in `addrs` (local echoes differ by port, and a slice has one
/// port per name). With no addresses, the Service has no endpoints.
pub fn service_yaml(namespace: &str, name: &str, addrs: &[SocketAddr]) -> String {
    let mut out = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
"
    );
    for (i, a) in addrs.iter().enumerate() {
        out.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]
---
",
            port = a.port(),
            ip = a.ip()
        ));
    }
    out
}

/// Manifests that send every request, whatever its host, to the Service `name` at `addrs`:
/// an Ingress with only a `defaultBackend`, and the Service.
pub fn default_backend_yaml(namespace: &str, name: &str, addrs: &[SocketAddr]) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ingressClassName: weir
  defaultBackend: {{service: {{name: {name}, port: {{name: http}}}}}}
---
"
    ) + &service_yaml(namespace, name, addrs)
}

/// Sends `raw` on a fresh connection and reads until weir closes it or 3 s pass: every
/// status answered, in order, whether the connection was closed, and the answer's text.
pub fn raw_exchange(weir: SocketAddr, raw: &[u8]) -> (Vec<u16>, bool, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(weir).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.write_all(raw).expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break, // still open after 3 s
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let statuses = text
        .split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|part| part.get(..3)?.parse().ok())
        .collect();
    (statuses, closed, text)
}

/// A temporary manifests directory (plus room for logs beside it).
pub struct ManifestDir {
    pub root: tempfile::TempDir,
}

impl ManifestDir {
    pub fn new() -> ManifestDir {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("manifests")).expect("mkdir");
        ManifestDir { root }
    }

    pub fn path(&self) -> PathBuf {
        self.root.path().join("manifests")
    }

    /// Writes a file atomically (write + rename), as editors and ConfigMap updates do.
    pub fn write(&self, name: &str, content: &str) {
        let tmp = self.root.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write manifest");
        std::fs::rename(&tmp, self.path().join(name)).expect("rename manifest");
    }
}

/// Polls `check` every 20 ms until it holds; how long that took, or `None` after `limit`.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A kubeconfig file for the fake API server at `server` (keep the directory alive).
pub fn kubeconfig_file(kubeconfig: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).expect("kubeconfig");
    (dir, path)
}

/// Runs `serve(stream)` for every connection accepted on `listener`, on a runtime in a
/// thread of its own: for servers the tests write with tokio/hyper (a gRPC server, an OTLP
/// receiver) while the test itself blocks.
pub fn serve_connections<F, Fut>(listener: std::net::TcpListener, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream));
                }
            }
        });
    });
}

/// An Ingress of class `weir` in namespace `demo` with one rule for `host`, `/` to the
/// Service `app` (port `http`), and `annotations` (YAML flow-map entries).
pub fn demo_ingress(name: &str, host: &str, annotations: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: demo\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: \"{host}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{name: http}}}}}}}}]}}\n---\n"
    )
}

/// A GatewayClass of weir's controller (`weir`) and a Gateway `gw` of it in `namespace`
/// with `listeners` (a YAML list), as the start of a manifest.
pub fn weir_gateway(namespace: &str, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: weir}}\nspec: {{controllerName: weir.dev/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {namespace}}}\nspec:\n  gatewayClassName: weir\n  listeners: {listeners}\n---\n"
    )
}

/// A client that reaches weir at `addr` for every name of `hosts` (so that `Host`, or
/// `:authority` over HTTP/2 with prior knowledge, is that name) and follows no redirect.
pub fn client_for_hosts(addr: SocketAddr, hosts: &[&str], http2: bool) -> Client {
    let mut builder = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    for host in hosts {
        builder = builder.resolve(host, addr);
    }
    if http2 {
        builder = builder.http2_prior_knowledge();
    }
    builder.build().expect("client")
}

/// An HTTP/1.1 server on a free loopback port whose answers `answer` makes from each
/// request's head and whole body: the upstreams and services tests write themselves (an
/// authentication service, a mirror target).
pub fn http1_server<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(http::request::Parts, bytes::Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>>
        + Send
        + 'static,
{
    use http_body_util::BodyExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    serve_connections(listener, move |stream| {
        let answer = answer.clone();
        async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(answer(parts, body).await)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        }
    });
    addr
}
