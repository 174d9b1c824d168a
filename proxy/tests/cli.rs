//! The `weir` command line: bad input gives one clear line on stderr and a non-zero exit;
//! every flag also reads its `WEIR_*` environment variable.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::Duration;
use support::{client, ManifestDir};
use weir_testsupport::process::{free_port, wait_for_listen, ChildGuard};

/// Runs weir expecting it to refuse to start: returns its stderr.
fn refuses(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {stderr}");
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "one line expected for {args:?}, got: {stderr}"
    );
    assert!(lines[0].starts_with("weir: "), "{stderr}");
    stderr
}

#[test]
fn bad_flags_and_files_are_one_line_errors() {
    let dir = ManifestDir::new();
    let good = dir.path();
    let good = good.to_str().expect("utf8 path");

    assert!(refuses(&[], &[]).contains("--manifests"));
    assert!(refuses(&["--manifests", good, "--bogus"], &[]).contains("--bogus"));
    assert!(refuses(&["--manifests", good, "--shutdown-delay", "soon"], &[]).contains("soon"));
    assert!(refuses(&["--manifests", good, "--http-listen", "nowhere"], &[]).contains("nowhere"));
    assert!(refuses(&["--manifests", good, "--threads", "0"], &[]).contains("0"));
    assert!(refuses(&["--manifests", good, "--log-format", "xml"], &[]).contains("xml"));
    assert!(
        refuses(&["--manifests", good, "--ingress-controller", "nginx"], &[])
            .contains("not a controller name")
    );
    assert!(
        refuses(&["--manifests", good, "--log-level", "info,=x=y"], &[]).contains("log filter")
    );

    // The fleet: a key is required and must be long enough; a replica listening on every
    // address must say which one its peers reach.
    assert!(refuses(
        &["--manifests", good, "--fleet-listen", "127.0.0.1:17946"],
        &[]
    )
    .contains("--fleet-secret-file"));
    let short_key = dir.root.path().join("short.key");
    std::fs::write(&short_key, "short\n").expect("write");
    let stderr = refuses(
        &[
            "--manifests",
            good,
            "--fleet-listen",
            "127.0.0.1:17946",
            "--fleet-secret-file",
            short_key.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(stderr.contains("at least 16 bytes"), "{stderr}");
    let key = dir.root.path().join("fleet.key");
    std::fs::write(&key, "a key long enough for the fleet\n").expect("write");
    let stderr = refuses(
        &[
            "--manifests",
            good,
            "--fleet-listen",
            "0.0.0.0:17946",
            "--fleet-secret-file",
            key.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(stderr.contains("--fleet-advertise"), "{stderr}");

    let missing = dir.root.path().join("missing.yaml");
    let stderr = refuses(&["--manifests", missing.to_str().expect("utf8")], &[]);
    assert!(
        stderr.contains("missing.yaml") && stderr.contains("cannot read"),
        "{stderr}"
    );

    let not_pem = dir.root.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let not_pem = not_pem.to_str().expect("utf8");
    let stderr = refuses(&["--manifests", good, "--upstream-ca-file", not_pem], &[]);
    assert!(
        stderr.contains("--upstream-ca-file") && stderr.contains("no usable PEM certificate"),
        "{stderr}"
    );
    let stderr = refuses(
        &[
            "--manifests",
            good,
            "--upstream-ca-file",
            "/nonexistent/ca.pem",
        ],
        &[],
    );
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");

    dir.write("broken.yaml", "kind: Ingress\nspec: [unclosed\n");
    let stderr = refuses(&["--manifests", good], &[]);
    assert!(
        stderr.contains("broken.yaml") && stderr.contains("invalid YAML"),
        "{stderr}"
    );
}

#[test]
fn a_busy_port_is_a_one_line_error() {
    let dir = ManifestDir::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let stderr = refuses(
        &[
            "--manifests",
            dir.path().to_str().expect("utf8"),
            "--http-listen",
            &addr,
        ],
        &[],
    );
    assert!(
        stderr.contains("--http-listen") && stderr.contains(&addr),
        "{stderr}"
    );
}

/// Pingora hands a second listener on an address it has bound the same socket, which is then
/// closed twice (a crash in a debug build): weir refuses two listeners on one address.
#[test]
fn two_listeners_on_one_address_are_a_one_line_error() {
    let dir = ManifestDir::new();
    let manifests = dir.path();
    let manifests = manifests.to_str().expect("utf8");
    let port = free_port();
    let same = format!("127.0.0.1:{port}");
    let other = format!("127.0.0.1:{}", free_port());
    let stderr = refuses(
        &[
            "--manifests",
            manifests,
            "--http-listen",
            &same,
            "--admin-listen",
            &other,
            "--https-listen",
            &same,
        ],
        &[],
    );
    assert!(
        stderr.contains("--https-listen") && stderr.contains("overlaps --http-listen"),
        "{stderr}"
    );
    // Any address overlaps the same port on every address.
    let stderr = refuses(
        &[
            "--manifests",
            manifests,
            "--http-listen",
            &format!("0.0.0.0:{port}"),
            "--admin-listen",
            &same,
        ],
        &[],
    );
    assert!(stderr.contains("overlaps --http-listen"), "{stderr}");
    // It is an error in the flags, so `--check` finds it without listening.
    let stderr = refuses(
        &[
            "--manifests",
            manifests,
            "--check",
            "--http-listen",
            &same,
            "--admin-listen",
            &same,
        ],
        &[],
    );
    assert!(stderr.contains("--admin-listen"), "{stderr}");
}

#[test]
fn flags_fall_back_to_environment_variables() {
    let dir = ManifestDir::new();
    let http = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let _weir = ChildGuard::spawn(
        "weir",
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .env("WEIR_MANIFESTS", dir.path())
            .env("WEIR_HTTP_LISTEN", &http)
            .env("WEIR_ADMIN_LISTEN", &admin)
            .env("WEIR_THREADS", "1")
            .stderr(std::process::Stdio::null()),
    );
    // The proxy's and the admin listeners start independently: wait for both.
    for addr in [&http, &admin] {
        assert!(wait_for_listen(
            addr.parse().expect("addr"),
            Duration::from_secs(15)
        ));
    }
    let resp = client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .expect("readyz");
    assert_eq!(resp.status().as_u16(), 200);
    // No Ingress at all: every request is a 404, and weir keeps running.
    let resp = client()
        .get(format!("http://{http}/"))
        .send()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 404);
}
