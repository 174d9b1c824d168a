//! Real processes for tests: start them, wait until they listen, kill them on drop.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago, and that this process has not been given
/// before: the kernel may hand a just-released port out again, and tests running side by side
/// (or one test asking for several ports) must not be given the same one twice.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"));
        if given.insert(port) {
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_listen(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A port on 127.0.0.1 that never answers a connection attempt: its listener's accept
/// queue is full, so the kernel drops further SYNs and a client's connect times out. The
/// port stays that way while the value lives.
#[derive(Debug)]
pub struct Unresponsive {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

pub fn unresponsive_port() -> Unresponsive {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("local address");
    let mut queued = Vec::new();
    for _ in 0..64 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => queued.push(stream),
            Err(_) => {
                return Unresponsive {
                    addr,
                    _listener: listener,
                    _queued: queued,
                }
            }
        }
    }
    panic!("the accept queue of {addr} never filled")
}

/// Resident memory of process `pid` in KiB (`VmRSS`), 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, command: &mut Command) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{name} {} failed", self.name);
    }

    /// Waits up to `timeout` for the process to exit; its exit code (None: still running or
    /// ended by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The target directory profile folder the running test binary lives in
/// (`target/debug` for `target/debug/deps/test-xxxx`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a binary of this workspace, built with the same profile as the running test.
/// Built (or found up to date) once per test process: `cargo test -p <one package>` does
/// not rebuild other packages' binaries, and a stale one would test old code.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let path = profile_dir().join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
        if profile_dir().ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
        assert!(status.success(), "building {name} failed");
        built.push(name.to_string());
    }
    path
}

/// Starts `weir-echo` on a free port and waits for it.
pub fn start_echo(service: &str, pod: &str) -> (ChildGuard, SocketAddr) {
    start_echo_with(service, pod, &[])
}

/// Like [`start_echo`], with more `weir-echo` flags (e.g. `--status 500`).
pub fn start_echo_with(service: &str, pod: &str, extra: &[&str]) -> (ChildGuard, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    (start_echo_at(addr, service, pod, extra), addr)
}

/// A `weir-echo` listening on `addr` (any loopback address, e.g. `127.0.55.1:28080`, for
/// tests whose expectations depend on the upstream's address).
pub fn start_echo_at(addr: SocketAddr, service: &str, pod: &str, extra: &[&str]) -> ChildGuard {
    let bin = workspace_binary("weir-testsupport", "weir-echo");
    let guard = ChildGuard::spawn(
        "weir-echo",
        Command::new(bin)
            .args([
                "--listen",
                &addr.to_string(),
                "--service",
                service,
                "--pod",
                pod,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_for_listen(addr, Duration::from_secs(10)),
        "weir-echo did not listen on {addr}"
    );
    guard
}

/// A tool from `scripts/tools.sh` (`kubectl`, `helm` or `httpwg`, fetched into `.tools/bin`
/// on first use). Panics with the script's error when it cannot be installed.
pub fn tool(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut script = Command::new("bash");
    script.arg(root.join("scripts/tools.sh"));
    if name == "httpwg" {
        script.arg("httpwg");
    }
    let out = script
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/tools.sh: {e}"));
    assert!(
        out.status.success(),
        "scripts/tools.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(name)
}
