//! Any text as a manifests file: parsing and translation must never panic, whatever the
//! YAML, the kinds, the fields or the annotations.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_discovery::objects::parse_manifest;
use weir_discovery::{translate, TranslateOptions};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = parse_manifest(&text) {
        let opts = TranslateOptions {
            ingress_class: "weir".to_string(),
            watch_namespace: None,
            ..TranslateOptions::default()
        };
        let snapshot = translate(&parsed.objects, &opts);
        let live = weir_proxy::routes::routing::LiveRouting::default();
        live.apply(snapshot);
    }
});
