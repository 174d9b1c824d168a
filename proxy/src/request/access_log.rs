//! The access log: one line per request, on standard output.
//!
//! Why not through `tracing`: its JSON formatter builds a map of the fields and a `String`
//! per line, and writes each line to the stream under a lock, on the request path; on one
//! worker that cost about 30 % of weir's throughput (docs/benchmarks.md), where nginx's
//! `access_log` costs about 5 %. Here a line is formatted straight into a buffer of the worker
//! thread's own (no allocation once the buffer has grown), and a writer thread of its own
//! takes every buffer every [`FLUSH_INTERVAL`] (sooner when one fills up) and writes it in one
//! write. When standard output cannot keep up, a thread's buffer stops growing at
//! [`SHARD_LIMIT`] and further lines are dropped and counted
//! (`weir_access_log_dropped_total`): no request ever waits for the log.
//!
//! The access log stays a `tracing` target for the operator: it is written when the log
//! filter enables `weir::access` at `info` (`--log-level warn` or `info,weir::access=off`
//! turn it off), and its lines look like weir's other log lines in either `--log-format`.
//!
//! Must not: block or allocate per line on the request path, or lose lines on a clean exit
//! ([`AccessLog::flush`]).

use crate::app::cli::LogFormat;
use crate::http::forwarded::with_ip_text;
use prometheus::IntCounter;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a line may wait in a thread's buffer before the writer takes it.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// A thread's buffer past which the writer is woken at once.
const WAKE_AT: usize = 256 * 1024;
/// A thread's buffer past which lines are dropped (counted) until the writer takes it.
const SHARD_LIMIT: usize = 4 * 1024 * 1024;
/// How long [`AccessLog::flush`] waits for a writer that is stuck.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// One request's line.
pub struct AccessLine<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub upstream: Option<SocketAddr>,
    pub pick_reason: &'a str,
    pub attempts: usize,
    pub namespace: &'a str,
    pub ingress: &'a str,
    pub service: &'a str,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub trace_id: &'a str,
    pub error: Option<&'a dyn fmt::Display>,
}

/// The access log of one process (cheap to clone); [`AccessLog::disabled`] writes nothing.
#[derive(Clone, Default)]
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("enabled", &self.shared.is_some())
            .finish()
    }
}

struct Shared {
    format: LogFormat,
    /// Every thread's buffer, for the writer to take.
    shards: Mutex<Vec<Arc<Shard>>>,
    dropped: IntCounter,
    writer: std::thread::Thread,
    /// Held while a batch is written, so that [`AccessLog::flush`] waits for the writer's.
    output: Mutex<Box<dyn std::io::Write + Send>>,
}

#[derive(Default)]
struct Shard {
    lines: Mutex<Vec<u8>>,
}

thread_local! {
    /// This thread's buffer, registered with its log's writer on the first line (with the
    /// address of the log it belongs to: a thread that writes to another log gets another).
    static SHARD: RefCell<Option<(usize, Arc<Shard>)>> = const { RefCell::new(None) };
}

impl AccessLog {
    /// Writes nothing (unit tests, benchmarks of the phases).
    pub fn disabled() -> Self {
        AccessLog::default()
    }

    /// The access log on standard output, in `format`, counting dropped lines in `dropped`;
    /// starts the writer thread.
    pub fn stdout(format: LogFormat, dropped: IntCounter) -> std::io::Result<Self> {
        Self::to_writer(format, dropped, Box::new(std::io::stdout()))
    }

    fn to_writer(
        format: LogFormat,
        dropped: IntCounter,
        output: Box<dyn std::io::Write + Send>,
    ) -> std::io::Result<Self> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel::<Arc<Shared>>();
        let thread = std::thread::Builder::new()
            .name("weir-access-log".to_string())
            .spawn(move || {
                if let Ok(shared) = handle_rx.recv() {
                    let mut batch = Vec::new();
                    loop {
                        std::thread::park_timeout(FLUSH_INTERVAL);
                        shared.write_batch(&mut batch);
                    }
                }
            })?;
        let shared = Arc::new(Shared {
            format,
            shards: Mutex::new(Vec::new()),
            dropped,
            writer: thread.thread().clone(),
            output: Mutex::new(output),
        });
        let _ = handle_tx.send(Arc::clone(&shared));
        Ok(AccessLog {
            shared: Some(shared),
        })
    }

    /// Whether a line would be written: the log is on and the log filter enables
    /// `weir::access` at `info` (a cached answer per call site, no work per request).
    pub fn enabled(&self) -> bool {
        self.shared.is_some() && tracing::enabled!(target: "weir::access", tracing::Level::INFO)
    }

    /// Formats `line` into this thread's buffer, or counts it dropped when the buffer is full.
    pub fn write(&self, line: &AccessLine<'_>) {
        let Some(shared) = &self.shared else {
            return;
        };
        SHARD.with(|cell| {
            let mut cell = cell.borrow_mut();
            let owner = Arc::as_ptr(shared) as usize;
            if cell
                .as_ref()
                .is_none_or(|(registered, _)| *registered != owner)
            {
                *cell = Some((owner, shared.register()));
            }
            let Some((_, shard)) = cell.as_ref() else {
                return;
            };
            let mut lines = shard.lines.lock().unwrap_or_else(PoisonError::into_inner);
            if lines.len() >= SHARD_LIMIT {
                shared.dropped.inc();
                return;
            }
            let before = lines.len();
            match shared.format {
                LogFormat::Json => json_line(&mut lines, line),
                LogFormat::Text => text_line(&mut lines, line),
            }
            if before < WAKE_AT && lines.len() >= WAKE_AT {
                shared.writer.unpark();
            }
        });
    }

    /// Writes every line formatted so far (before the process exits). Waits at most
    /// [`FLUSH_WAIT`] for a writer stuck on a standard output nobody reads: exiting matters
    /// more than those lines.
    pub fn flush(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        loop {
            match shared.output.try_lock() {
                Ok(mut output) => {
                    shared.write_batch_to(&mut **output, &mut Vec::new());
                    return;
                }
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    shared.write_batch_to(&mut **poisoned.into_inner(), &mut Vec::new());
                    return;
                }
                Err(std::sync::TryLockError::WouldBlock)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::sync::TryLockError::WouldBlock) => return,
            }
        }
    }
}

impl Shared {
    fn register(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard::default());
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&shard));
        shard
    }

    /// Takes every thread's lines and writes them (the writer thread's turn).
    fn write_batch(&self, batch: &mut Vec<u8>) {
        let mut output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        self.write_batch_to(&mut **output, batch);
    }

    /// Takes every thread's lines (swapping in `batch`'s empty buffer, so that neither side
    /// allocates once both have grown) and writes them to `output`. A write that fails loses
    /// the rest of its batch, counted as dropped lines; a line it cut short is ended, so the
    /// next line starts on a line of its own.
    fn write_batch_to(&self, output: &mut dyn std::io::Write, batch: &mut Vec<u8>) {
        let shards: Vec<Arc<Shard>> = self
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for shard in shards {
            batch.clear();
            // A burst's buffer is not handed on to a thread for ever: it goes back smaller.
            if batch.capacity() > 2 * WAKE_AT {
                *batch = Vec::with_capacity(WAKE_AT);
            }
            {
                let mut lines = shard.lines.lock().unwrap_or_else(PoisonError::into_inner);
                if lines.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *lines, batch);
            }
            let mut written = 0;
            while written < batch.len() {
                match output.write(&batch[written..]) {
                    Ok(0) => break,
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            if written < batch.len() {
                let lost = batch[written..].iter().filter(|&&b| b == b'\n').count();
                self.dropped.inc_by(lost as u64);
                if written > 0 && batch[written - 1] != b'\n' {
                    let _ = output.write(b"\n");
                }
            }
        }
        let _ = output.flush();
    }
}

/// A field's name as each format writes it before the value, made at compile time: one copy
/// per field instead of three (~700 instructions a line, callgrind).
struct Key {
    json: &'static str,
    text: &'static str,
}

macro_rules! key {
    ($name:literal) => {
        Key {
            json: concat!(",\"", $name, "\":"),
            text: concat!(" ", $name, "="),
        }
    };
}

/// A line's fields, in the order every format writes them: the one list of them.
fn write_line<F: Format>(out: &mut Vec<u8>, line: &AccessLine<'_>) {
    F::start(out);
    F::str(out, key!("method"), line.method);
    F::str(out, key!("host"), line.host);
    F::str(out, key!("path"), line.path);
    F::num(out, key!("status"), line.status.into());
    F::millis(out, key!("duration_ms"), line.duration);
    F::addr(out, key!("upstream"), line.upstream);
    F::str(out, key!("pick_reason"), line.pick_reason);
    F::num(out, key!("attempts"), line.attempts as u64);
    F::str(out, key!("namespace"), line.namespace);
    F::str(out, key!("ingress"), line.ingress);
    F::str(out, key!("service"), line.service);
    F::num(out, key!("bytes_in"), line.bytes_in as u64);
    F::num(out, key!("bytes_out"), line.bytes_out as u64);
    F::str(out, key!("trace_id"), line.trace_id);
    F::text(out, key!("error"), line.error);
    F::end(out);
}

/// How a format writes a line's start, each kind of field, and its end. Generic rather than a
/// list of values matched at run time: that cost ~1,100 instructions a line (callgrind).
/// A `Key` holds both spellings of a field's name.
trait Format {
    fn start(out: &mut Vec<u8>);
    fn str(out: &mut Vec<u8>, name: Key, value: &str);
    fn num(out: &mut Vec<u8>, name: Key, value: u64);
    fn millis(out: &mut Vec<u8>, name: Key, value: Duration);
    fn addr(out: &mut Vec<u8>, name: Key, value: Option<SocketAddr>);
    fn text(out: &mut Vec<u8>, name: Key, value: Option<&dyn fmt::Display>);
    fn end(out: &mut Vec<u8>);
}

/// `{"timestamp":...,"level":"INFO","target":"weir::access","message":"request",...}`: the
/// fields `tracing`'s JSON lines have, so one parser reads every line weir writes.
struct Json;

impl Json {
    #[inline]
    fn key(out: &mut Vec<u8>, name: Key) {
        out.extend_from_slice(name.json.as_bytes());
    }
}

impl Format for Json {
    fn start(out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(out, SystemTime::now());
        out.extend_from_slice(
            b"\",\"level\":\"INFO\",\"target\":\"weir::access\",\"message\":\"request\"",
        );
    }
    #[inline]
    fn str(out: &mut Vec<u8>, name: Key, value: &str) {
        Self::key(out, name);
        out.push(b'"');
        json_str(out, value);
        out.push(b'"');
    }
    #[inline]
    fn num(out: &mut Vec<u8>, name: Key, value: u64) {
        Self::key(out, name);
        decimal(out, value);
    }
    #[inline]
    fn millis(out: &mut Vec<u8>, name: Key, value: Duration) {
        Self::key(out, name);
        millis(out, value);
    }
    #[inline]
    fn addr(out: &mut Vec<u8>, name: Key, value: Option<SocketAddr>) {
        Self::key(out, name);
        out.push(b'"');
        if let Some(addr) = value {
            socket_addr(out, addr);
        }
        out.push(b'"');
    }
    #[inline]
    fn text(out: &mut Vec<u8>, name: Key, value: Option<&dyn fmt::Display>) {
        Self::key(out, name);
        out.push(b'"');
        if let Some(text) = value {
            let _ = write!(JsonEscaped(out), "{text}");
        }
        out.push(b'"');
    }
    fn end(out: &mut Vec<u8>) {
        out.extend_from_slice(b"}\n");
    }
}

/// `2026-01-02T03:04:05.678901Z  INFO weir::access: request method=GET host=...`: as
/// `tracing`'s text lines read; values with spaces, quotes or controls are quoted.
struct Text;

impl Text {
    #[inline]
    fn key(out: &mut Vec<u8>, name: Key) {
        out.extend_from_slice(name.text.as_bytes());
    }
}

impl Format for Text {
    fn start(out: &mut Vec<u8>) {
        timestamp(out, SystemTime::now());
        out.extend_from_slice(b"  INFO weir::access: request");
    }
    #[inline]
    fn str(out: &mut Vec<u8>, name: Key, value: &str) {
        Self::key(out, name);
        text_value(out, value);
    }
    #[inline]
    fn num(out: &mut Vec<u8>, name: Key, value: u64) {
        Self::key(out, name);
        decimal(out, value);
    }
    #[inline]
    fn millis(out: &mut Vec<u8>, name: Key, value: Duration) {
        Self::key(out, name);
        millis(out, value);
    }
    #[inline]
    fn addr(out: &mut Vec<u8>, name: Key, value: Option<SocketAddr>) {
        Self::key(out, name);
        if let Some(addr) = value {
            socket_addr(out, addr);
        }
    }
    #[inline]
    fn text(out: &mut Vec<u8>, name: Key, value: Option<&dyn fmt::Display>) {
        Self::key(out, name);
        if let Some(text) = value {
            out.push(b'"');
            let _ = write!(JsonEscaped(out), "{text}");
            out.push(b'"');
        }
    }
    fn end(out: &mut Vec<u8>) {
        out.push(b'\n');
    }
}

/// One request's line as JSON.
fn json_line(out: &mut Vec<u8>, line: &AccessLine<'_>) {
    write_line::<Json>(out, line);
}

/// One request's line as text.
fn text_line(out: &mut Vec<u8>, line: &AccessLine<'_>) {
    write_line::<Text>(out, line);
}

/// A text value bare when it is one visible word, else quoted and escaped as JSON is.
fn text_value(out: &mut Vec<u8>, value: &str) {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        out.extend_from_slice(value.as_bytes());
    } else {
        out.push(b'"');
        json_str(out, value);
        out.push(b'"');
    }
}

/// `ip:port` or `[ip]:port`, the IP written by hand (`Display` through `fmt` cost ~1,800
/// instructions a line, callgrind).
fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let v6 = addr.is_ipv6();
    if v6 {
        out.push(b'[');
    }
    with_ip_text(addr.ip(), |text| out.extend_from_slice(text));
    if v6 {
        out.push(b']');
    }
    out.push(b':');
    decimal(out, addr.port().into());
}

/// `value` inside a JSON string: `"`, `\` and control characters escaped (RFC 8259 §7).
fn json_str(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    // Most values need no escape: one copy.
    if !bytes
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
    {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// A `Display` value written into a JSON string without a `String` in between.
struct JsonEscaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        json_str(self.0, s);
        Ok(())
    }
}

fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Milliseconds with three decimals (microsecond resolution).
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
    decimal(out, micros / 1000);
    out.push(b'.');
    let frac = micros % 1000;
    out.push(b'0' + (frac / 100) as u8);
    out.push(b'0' + (frac / 10 % 10) as u8);
    out.push(b'0' + (frac % 10) as u8);
}

/// RFC 3339 in UTC with microseconds: `2026-01-02T03:04:05.678901Z`.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let two = |out: &mut Vec<u8>, n: u64| {
        out.push(b'0' + (n / 10 % 10) as u8);
        out.push(b'0' + (n % 10) as u8);
    };
    decimal(out, year.max(0) as u64);
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, of_day / 3600);
    out.push(b':');
    two(out, of_day / 60 % 60);
    out.push(b':');
    two(out, of_day % 60);
    out.push(b'.');
    let micros = u64::from(since.subsec_micros());
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A standard output nobody reads: every write blocks until the test drops the sender.
    struct Stuck(std::sync::mpsc::Receiver<()>);

    impl std::io::Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn sample<'a>(error: Option<&'a dyn fmt::Display>) -> AccessLine<'a> {
        AccessLine {
            method: "GET",
            host: "shop.example.com",
            path: "/a\"b\\c\u{1}",
            status: 502,
            duration: Duration::from_micros(12_345),
            upstream: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            pick_reason: "retry",
            attempts: 2,
            namespace: "demo",
            ingress: "shop",
            service: "app",
            bytes_in: 7,
            bytes_out: 1_048_576,
            trace_id: "",
            error,
        }
    }

    #[test]
    fn a_json_line_is_json_with_every_field() -> Result<(), Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        let error = "upstream said \"no\"\nat once";
        json_line(&mut out, &sample(Some(&error)));
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out)?;
        assert_eq!(v["target"], "weir::access");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["path"], "/a\"b\\c\u{1}");
        assert_eq!(v["status"], 502);
        assert_eq!(v["duration_ms"], 12.345);
        assert_eq!(v["upstream"], "127.0.0.1:8080");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["bytes_out"], 1_048_576);
        assert_eq!(v["error"], error);
        let mut out = Vec::new();
        let v6 = AccessLine {
            upstream: Some("[fd00::1]:8443".parse()?),
            ..sample(None)
        };
        json_line(&mut out, &v6);
        let v: serde_json::Value = serde_json::from_slice(&out)?;
        assert_eq!(v["upstream"], "[fd00::1]:8443");
        assert_eq!(v["error"], "");
        Ok(())
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut out = Vec::new();
        // 2024-02-29T23:59:58.000042Z: a leap day, near midnight.
        timestamp(
            &mut out,
            UNIX_EPOCH + Duration::from_micros(1_709_251_198_000_042),
        );
        assert_eq!(out, b"2024-02-29T23:59:58.000042Z");
        out.clear();
        timestamp(&mut out, UNIX_EPOCH);
        assert_eq!(out, b"1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn text_values_with_spaces_are_quoted() {
        let mut out = Vec::new();
        text_line(&mut out, &sample(None));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(" INFO weir::access: request method=GET host=shop.example.com "));
        assert!(text.contains(" path=\"/a\\\"b\\\\c\\u0001\" status=502 duration_ms=12.345 "));
        assert!(text.contains(" trace_id=\"\" error=\n"), "{text}");
    }

    /// Lines from several threads all reach the output, whole; past a thread's limit lines
    /// are counted dropped instead of waiting.
    #[test]
    fn lines_from_many_threads_reach_the_writer_whole() -> Result<(), Box<dyn std::error::Error>> {
        let captured = Captured::default();
        let dropped = IntCounter::new("dropped", "dropped")?;
        let log =
            AccessLog::to_writer(LogFormat::Json, dropped.clone(), Box::new(captured.clone()))?;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        log.write(&sample(None));
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        log.flush();
        let out = captured
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut lines = 0;
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line)?;
            assert_eq!(v["host"], "shop.example.com");
            lines += 1;
        }
        assert_eq!(lines, 4000);
        assert_eq!(dropped.get(), 0);
        Ok(())
    }

    /// A write that fails part-way loses the rest of its batch as counted drops, and ends the
    /// line it cut so the next batch starts on a line of its own.
    #[test]
    fn a_failed_write_counts_what_it_lost_and_ends_the_cut_line(
    ) -> Result<(), Box<dyn std::error::Error>> {
        /// Takes `room` bytes, then fails every write but a lone newline.
        struct Full {
            taken: Vec<u8>,
            room: usize,
        }
        impl std::io::Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if buf == b"\n" {
                    self.taken.push(b'\n');
                    return Ok(1);
                }
                let n = buf.len().min(self.room);
                if n == 0 {
                    return Err(std::io::ErrorKind::StorageFull.into());
                }
                self.room -= n;
                self.taken.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let dropped = IntCounter::new("dropped", "dropped")?;
        let shared = Shared {
            format: LogFormat::Json,
            shards: Mutex::new(Vec::new()),
            dropped: dropped.clone(),
            writer: std::thread::current(),
            output: Mutex::new(Box::new(std::io::sink())),
        };
        let shard = shared.register();
        let mut one = Vec::new();
        json_line(&mut one, &sample(None));
        for _ in 0..10 {
            json_line(
                &mut shard.lines.lock().unwrap_or_else(PoisonError::into_inner),
                &sample(None),
            );
        }
        // Room for two lines and a half.
        let mut out = Full {
            taken: Vec::new(),
            room: one.len() * 5 / 2,
        };
        shared.write_batch_to(&mut out, &mut Vec::new());
        assert_eq!(dropped.get(), 8, "the cut line and the seven after it");
        let lines: Vec<&[u8]> = out.taken.split(|&b| b == b'\n').collect();
        assert_eq!(
            lines.len(),
            4,
            "two whole lines, the cut one ended, nothing after"
        );
        for whole in &lines[..2] {
            serde_json::from_slice::<serde_json::Value>(whole)?;
        }
        Ok(())
    }

    /// Exiting never waits for ever on a writer stuck on a standard output nobody reads.
    #[test]
    fn flush_gives_up_on_a_stuck_writer() -> Result<(), Box<dyn std::error::Error>> {
        let (release, stuck) = std::sync::mpsc::channel();
        let dropped = IntCounter::new("dropped", "dropped")?;
        let log = AccessLog::to_writer(LogFormat::Json, dropped, Box::new(Stuck(stuck)))?;
        // Enough for the writer to be woken and stuck in its write.
        for _ in 0..(2 * WAKE_AT / 300) {
            log.write(&sample(None));
        }
        std::thread::sleep(FLUSH_INTERVAL * 3);
        log.flush();
        drop(release);
        Ok(())
    }

    /// An output that blocks (a full pipe) never holds up the request path: the thread's
    /// buffer stops at its limit and the rest is counted dropped.
    #[test]
    fn a_stuck_output_drops_and_counts_lines() -> Result<(), Box<dyn std::error::Error>> {
        let (release, stuck) = std::sync::mpsc::channel();
        let dropped = IntCounter::new("dropped", "dropped")?;
        let log = AccessLog::to_writer(LogFormat::Json, dropped.clone(), Box::new(Stuck(stuck)))?;
        let line = sample(None);
        let mut one = Vec::new();
        json_line(&mut one, &line);
        // Enough lines to fill this thread's buffer twice over, in a bounded loop.
        let n = 2 * SHARD_LIMIT / one.len() + 10;
        for _ in 0..n {
            log.write(&line);
        }
        assert!(dropped.get() > 0, "nothing dropped after {n} lines");
        drop(release);
        Ok(())
    }
}
