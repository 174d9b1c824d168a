//! End to end: weir's HTTP/2 server against httpwg, the h2spec cases ported to Rust
//! (crates.io `httpwg-cli`, built into `.tools/bin` by `scripts/tools.sh httpwg`), over h2c.
//! A test binary of its own, so that no other test's load runs beside it.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;
use support::{default_backend_yaml, Echo, ManifestDir, Weir};

/// weir's HTTP/2 server passes httpwg, the h2spec cases ported to Rust (RFC 9113 and HPACK,
/// 107 cases), run against the binary over h2c: every malformed request is a stream error
/// after its answer, every stream-state rule holds.
#[test]
fn the_http2_server_passes_the_httpwg_conformance_suite() {
    // Every request goes to an upstream, as in use (the suite sends no Host weir routes).
    let app = Echo::start("app");
    let dir = ManifestDir::new();
    dir.write(
        "app.yaml",
        &default_backend_yaml("demo", "app", &[app.addr]),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let httpwg = weir_testsupport::process::tool("httpwg");
    let mut run = std::process::Command::new(httpwg)
        // One case at a time, each frame waited for up to 2 s: the suite's default runs all
        // 107 at once with 250 ms per frame, which a loaded CI machine does not always meet.
        .args([
            "-a",
            &weir.http.to_string(),
            "--frame-timeout",
            "2000",
            "--connect-timeout",
            "2000",
            "-v",
        ])
        .env("SEQUENTIAL", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run httpwg");
    // Bounded: the whole suite takes under a second; give it two minutes.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut timed_out = false;
    while run.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = run.kill();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
    // Without its colours.
    let mut plain = String::new();
    let mut escape = false;
    for c in text.chars() {
        match (escape, c) {
            (false, '\u{1b}') => escape = true,
            (true, 'm') => escape = false,
            (false, c) => plain.push(c),
            _ => {}
        }
    }
    assert!(!timed_out, "httpwg did not finish in 120 s:\n{plain}");
    let failed: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("Test failed"))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let passed = plain
        .lines()
        .find_map(|l| l.split("Passed ").nth(1)?.split(' ').next())
        .expect("a summary line");
    let (ok, all) = passed.split_once('/').expect("n/m");
    assert_eq!(ok, all, "{plain}");
    assert!(all.parse::<u32>().expect("count") >= 100, "{plain}");
    assert!(out.status.success(), "{plain}");
}
