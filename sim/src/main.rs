//! `weir-sim`: runs the balancer scenarios of `docs/balancing.md` and prints their tables;
//! plots go to `--out` (default `docs/sim`).
//!
//! Usage: `cargo run --release -p weir-sim -- [--out DIR] [a|b|c|d|e ...]` (all by default).

mod engine;
mod plot;
mod scenarios;

use std::path::PathBuf;

fn main() {
    let mut out = PathBuf::from("docs/sim");
    let mut chosen: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => match args.next() {
                Some(dir) => out = PathBuf::from(dir),
                None => fail("--out needs a directory"),
            },
            "a" | "b" | "c" | "d" | "e" => chosen.push(arg),
            other => fail(&format!(
                "unknown argument {other:?} (expected --out DIR and scenarios a, b, c, d, e)"
            )),
        }
    }
    if chosen.is_empty() {
        chosen = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        fail(&format!("{}: {e}", out.display()));
    }
    for scenario in chosen {
        let (title, result) = match scenario.as_str() {
            "a" => ("(a) one slow backend", scenarios::slow_backend(&out)),
            "b" => ("(b) scale-up with caches", scenarios::scale_up(&out)),
            "c" => ("(c) Zipf keys, bounded load", scenarios::zipf_bounded(&out)),
            "d" => ("(d) a failing backend", scenarios::failing_backend(&out)),
            _ => (
                "(e) a fleet sharing ejections",
                scenarios::fleet_sharing(&out),
            ),
        };
        match result {
            Ok(table) => println!("### {title}\n\n{table}"),
            Err(e) => fail(&format!("{title}: {e}")),
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("weir-sim: {message}");
    std::process::exit(2)
}
