//! Any text as a manifests file: parsing, translation and the Gateway API status weir would
//! write must never panic, whatever the YAML, the kinds, the fields or the annotations.
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
        if let Ok(now) = "2027-01-01T00:00:00Z".parse() {
            let _ = weir_discovery::gateway::status::status_updates(
                &parsed.objects,
                weir_discovery::gateway::CONTROLLER_NAME,
                &[],
                now,
            );
        }
        let live = weir_proxy::routes::routing::LiveRouting::default();
        live.apply(snapshot);
    }
});
