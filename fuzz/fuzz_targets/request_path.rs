//! Request paths from any bytes: normalisation never panics, and what it returns is in
//! normal form — normalising it again changes nothing, no `//`, no `.` or `..` segment.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_proxy::http::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = format!("/{text}");
    for allow in [false, true] {
        if let Ok(normal) = normalize(&path, allow) {
            assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
            assert!(!normal.contains("//"), "{path:?} -> {normal:?}");
            assert!(
                !normal.split('/').any(|s| s == "." || s == ".."),
                "{path:?} -> {normal:?}"
            );
            let again = normalize(&normal, allow).map(|p| p.into_owned());
            assert_eq!(
                again.as_deref(),
                Ok(&*normal),
                "not idempotent for {path:?}"
            );
        }
    }
});
