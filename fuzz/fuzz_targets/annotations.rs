//! Annotation values from any bytes: one `key=value` per line (keys get the `weir.dev/`
//! prefix unless they have one). Parsing may reject, never panic; the unsupported ones
//! found are among them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use weir_discovery::annotations::{route_policy, unsupported};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut annotations = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = if key.contains('/') {
            key.to_string()
        } else {
            format!("weir.dev/{key}")
        };
        annotations.insert(key, value.to_string());
    }
    let _ = route_policy(Some(&annotations));
    // Every name it reports is one of the Ingress's, under weir's or ingress-nginx's prefix.
    for name in unsupported(Some(&annotations)) {
        assert!(annotations.contains_key(&name));
        assert!(name.starts_with("weir.dev/") || name.starts_with("nginx.ingress.kubernetes.io/"));
    }
});
