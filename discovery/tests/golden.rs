//! Golden tests: every `tests/golden/<case>/objects.yaml` translates to exactly
//! `tests/golden/<case>/expected.json` (the `/debug/routes` view, plus documents rejected at
//! parse time). Regenerate after an intended change with `WEIR_UPDATE_GOLDEN=1 cargo test -p
//! weir-discovery --test golden`, and review the diff: the expectations are the spec.
//!
//! A case with Gateway API objects also has `status.json`: the status weir writes on them
//! (its Gateways reached at 192.0.2.10), which the spec's conditions are checked against.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use weir_discovery::gateway::objects::GatewayStatusAddress;
use weir_discovery::gateway::status::status_updates;
use weir_discovery::manifests::ManifestSource;
use weir_discovery::{translate, TranslateOptions};

/// The status writes of a case, as JSON: kind, namespace/name and the new status.
fn statuses(objects: &weir_discovery::ClusterObjects) -> serde_json::Value {
    let addresses = [GatewayStatusAddress {
        kind: Some("IPAddress".to_string()),
        value: "192.0.2.10".to_string(),
    }];
    let now = "2026-01-01T00:00:00Z".parse().expect("time");
    let updates = status_updates(
        objects,
        weir_discovery::gateway::CONTROLLER_NAME,
        &addresses,
        now,
    );
    serde_json::Value::Array(
        updates
            .iter()
            .map(|u| serde_json::json!({"object": u.describe(), "status": u.status_json()}))
            .collect(),
    )
}

#[test]
fn every_fixture_translates_to_its_expected_routes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("WEIR_UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("golden directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "only {} golden cases", cases.len());
    let mut mismatches = Vec::new();
    for case in &cases {
        let source = ManifestSource::open(vec![case.join("objects.yaml")])
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let mut snapshot = translate(&source.objects(), &TranslateOptions::default());
        snapshot.rejected.splice(0..0, source.rejected());
        let actual = serde_json::to_string_pretty(&snapshot.to_json()).expect("json") + "\n";
        let expected_path = case.join("expected.json");
        if update {
            std::fs::write(&expected_path, &actual).expect("write expected.json");
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!("{}:\n{actual}", case.display()));
        }
        let objects = source.objects();
        if !objects.gateway_classes.is_empty() {
            let actual = serde_json::to_string_pretty(&statuses(&objects)).expect("json") + "\n";
            let status_path = case.join("status.json");
            if update {
                std::fs::write(&status_path, &actual).expect("write status.json");
            }
            let expected = std::fs::read_to_string(&status_path).unwrap_or_default();
            if expected != actual {
                mismatches.push(format!("{} (status):\n{actual}", case.display()));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} case(s) differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
