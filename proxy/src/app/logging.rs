//! Process-wide logging: `tracing` with text or JSON output; Pingora's `log` records are
//! bridged into it. Level from `--log-level`, else `RUST_LOG`, else `info`. Log lines go to
//! standard error; the access log ([`crate::request::access_log`]) to standard output.

use crate::app::cli::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Returns the format chosen (the access log, [`crate::request::access_log`], writes its lines in it).
pub fn init(format: Option<LogFormat>, level: Option<&str>) -> LogFormat {
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let filter = level
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("weir: logging already initialised: {e}");
    }
    format
}
