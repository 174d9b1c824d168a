//! Rules and lookups from any bytes. Lines `+host path` insert a Prefix rule, `=host path`
//! an Exact rule, `?host path` look up (`*.suffix` hosts are wildcards, an empty host any
//! host). Inserting and looking up must never panic, whatever the strings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_discovery::{HostMatch, PathMatch};
use weir_proxy::routes::router::Router;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut router = Router::new();
    for (i, line) in text.lines().enumerate().take(256) {
        let mut chars = line.chars();
        let op = chars.next().unwrap_or('?');
        let rest = chars.as_str();
        let (host, path) = rest.split_once(' ').unwrap_or((rest, "/"));
        let host_match = match host.strip_prefix("*.") {
            Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
            None if host.is_empty() => HostMatch::Any,
            None => HostMatch::Exact(host.to_string()),
        };
        match op {
            '+' | '=' => {
                let rule = if op == '+' {
                    PathMatch::Prefix(path.to_string())
                } else {
                    PathMatch::Exact(path.to_string())
                };
                let _ = router.insert(&host_match, &rule, i);
            }
            _ => {
                let _ = router.lookup(host, path);
            }
        }
    }
});
