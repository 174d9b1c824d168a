//! Rules and lookups from any bytes. Lines `+host path` insert a Prefix rule, `=host path`
//! an Exact rule, `%host path` a Prefix rule that takes only requests with an `x-tier: beta`
//! field, `?host path` look up (`*.suffix` hosts are wildcards, an empty host any host; the
//! request carries that field on every other line). Inserting and looking up must never
//! panic, whatever the strings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_discovery::{HostMatch, PathMatch, RequestConditions, StringMatch, ValueMatch};
use weir_proxy::routes::conditions::Conditions;
use weir_proxy::routes::router::Router;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut router = Router::new();
    let beta = RequestConditions {
        headers: vec![ValueMatch {
            name: "x-tier".to_string(),
            value: StringMatch::Exact("beta".to_string()),
        }],
        ..RequestConditions::default()
    };
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
            '%' => {
                if let Ok(conditions) = Conditions::new(&beta) {
                    let rule = PathMatch::Prefix(path.to_string());
                    let _ = router.insert_when(&host_match, &rule, conditions, i);
                }
            }
            _ => {
                let Ok(mut req) = pingora::http::RequestHeader::build("GET", b"/", None) else {
                    continue;
                };
                if i % 2 == 0 {
                    let _ = req.insert_header("x-tier", "beta");
                }
                let _ = router.lookup(host, path, &req);
                let _ = router.lookup_path(host, path);
            }
        }
    }
});
