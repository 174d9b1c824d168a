//! Annotation values from any bytes: one `key=value` per line (keys get the `weir.dev/`
//! prefix unless they have one; `n:key`, ingress-nginx's). Parsing may reject, never panic;
//! the unsupported ones found are among them; redirect and rewrite targets and hosts read are
//! visible ASCII (they become fields and request targets); auth annotations give an
//! authentication, usable or not, exactly when they ask for one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use weir_discovery::annotations::{route_policy, unsupported};
use weir_discovery::RedirectTo;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut annotations = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = if let Some(name) = key.strip_prefix("n:") {
            format!("{}{name}", weir_discovery::nginx::PREFIX)
        } else if key.contains('/') {
            key.to_string()
        } else {
            format!("weir.dev/{key}")
        };
        annotations.insert(key, value.to_string());
    }
    let _ = route_policy(Some(&annotations));
    if let Ok(nginx) = weir_discovery::nginx::read(Some(&annotations)) {
        let location = match nginx.redirect.map(|r| r.to) {
            Some(RedirectTo::Url(url) | RedirectTo::Path(url) | RedirectTo::Host(url)) => url,
            // Gateway API's redirects; no ingress-nginx annotation makes one.
            Some(RedirectTo::Parts(_)) | None => String::new(),
        };
        let app_root = nginx.app_root.unwrap_or_default();
        let rewrite = nginx.rewrite_target.unwrap_or_default();
        let vhost = nginx.upstream_vhost.unwrap_or_default();
        let mirror = nginx.mirror.map(|m| m.url).unwrap_or_default();
        for target in [location, app_root, rewrite, vhost, mirror] {
            assert!(target.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{target:?}");
        }
    }
    // Authentication reads without a Secret: never panics, and what it asks for is either
    // set up or unusable (its routes then answer 503), never silently dropped.
    let (auth, _) = weir_discovery::auth::read(Some(&annotations), "ns", &[]);
    let asks = ["auth-type", "auth-url"]
        .iter()
        .any(|n| annotations.contains_key(&format!("{}{n}", weir_discovery::nginx::PREFIX)));
    assert_eq!(auth.is_some(), asks);
    // Every name it reports is one of the Ingress's, under weir's or ingress-nginx's prefix.
    for name in unsupported(Some(&annotations)) {
        assert!(annotations.contains_key(&name));
        assert!(name.starts_with("weir.dev/") || name.starts_with("nginx.ingress.kubernetes.io/"));
    }
});
