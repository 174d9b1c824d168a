//! The Kubernetes objects weir reads, and their parsing from YAML manifests.
//!
//! Parsing is strict about what it keeps: a document that is not valid YAML fails the whole
//! file (the caller keeps that file's last good objects), while a well-formed document that
//! is not a valid object of a kind we read is rejected alone, naming `namespace/name`.

use crate::snapshot::{ObjectRef, Rejection};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

/// Every object translation looks at.
#[derive(Clone, Debug, Default)]
pub struct ClusterObjects {
    pub ingresses: Vec<Ingress>,
    pub ingress_classes: Vec<IngressClass>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub secrets: Vec<Secret>,
}

impl ClusterObjects {
    pub fn extend(&mut self, other: ClusterObjects) {
        self.ingresses.extend(other.ingresses);
        self.ingress_classes.extend(other.ingress_classes);
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.secrets.extend(other.secrets);
    }

    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The objects of one manifest file, plus the documents that were rejected.
#[derive(Clone, Debug, Default)]
pub struct ParsedManifest {
    pub objects: ClusterObjects,
    pub rejected: Vec<Rejection>,
    /// Documents of kinds weir does not read (Deployments, ConfigMaps, …).
    pub ignored: usize,
}

/// A file that is not valid YAML.
#[derive(Debug, thiserror::Error)]
#[error("invalid YAML: {0}")]
pub struct YamlError(String);

/// Parses a multi-document YAML (or JSON) text. `kind: List` documents are expanded.
pub fn parse_manifest(text: &str) -> Result<ParsedManifest, YamlError> {
    let mut values = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| YamlError(e.to_string()))?;
        values.push(value);
    }
    let mut parsed = ParsedManifest::default();
    for value in values {
        add_value(value, &mut parsed);
    }
    Ok(parsed)
}

fn add_value(value: Value, parsed: &mut ParsedManifest) {
    if value.is_null() {
        return; // empty document, e.g. a trailing `---`
    }
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
        if let Some(Value::Array(items)) = value.get("items") {
            for item in items.clone() {
                add_value(item, parsed);
            }
        }
        return;
    }
    let reject = |parsed: &mut ParsedManifest, kind: &'static str, reason: String| {
        parsed.rejected.push(Rejection {
            object: object_ref_of(kind, &value),
            reason,
        });
    };
    match (api_version, kind) {
        ("networking.k8s.io/v1", "Ingress") => match decode::<Ingress>(&value) {
            Ok(mut o) => {
                default_namespace(&mut o.metadata);
                parsed.objects.ingresses.push(o)
            }
            Err(e) => reject(parsed, "Ingress", e),
        },
        ("networking.k8s.io/v1", "IngressClass") => match decode::<IngressClass>(&value) {
            Ok(o) => parsed.objects.ingress_classes.push(o),
            Err(e) => reject(parsed, "IngressClass", e),
        },
        ("v1", "Service") => match decode::<Service>(&value) {
            Ok(mut o) => {
                default_namespace(&mut o.metadata);
                parsed.objects.services.push(o)
            }
            Err(e) => reject(parsed, "Service", e),
        },
        ("discovery.k8s.io/v1", "EndpointSlice") => match decode::<EndpointSlice>(&value) {
            Ok(mut o) => {
                default_namespace(&mut o.metadata);
                parsed.objects.endpoint_slices.push(o)
            }
            Err(e) => reject(parsed, "EndpointSlice", e),
        },
        ("v1", "Secret") => match decode::<Secret>(&value) {
            Ok(mut o) => {
                default_namespace(&mut o.metadata);
                parsed.objects.secrets.push(o)
            }
            Err(e) => reject(parsed, "Secret", e),
        },
        (_, "Ingress") | (_, "IngressClass") | (_, "EndpointSlice") => {
            let kind = match kind {
                "Ingress" => "Ingress",
                "IngressClass" => "IngressClass",
                _ => "EndpointSlice",
            };
            reject(
                parsed,
                kind,
                format!("unsupported apiVersion {api_version:?} (weir reads networking.k8s.io/v1 and discovery.k8s.io/v1)"),
            )
        }
        ("", _) | (_, "") => reject(parsed, "document", "missing apiVersion or kind".to_string()),
        _ => parsed.ignored += 1,
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("not a valid object: {e}"))
}

fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".to_string());
    }
}

fn object_ref_of(kind: &'static str, value: &Value) -> ObjectRef {
    let meta = value.get("metadata");
    let field = |name: &str| {
        meta.and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let name = field("name");
    ObjectRef {
        kind,
        namespace: field("namespace"),
        name: if name.is_empty() {
            "<unnamed>".to_string()
        } else {
            name
        },
    }
}

/// `namespace/name` of a namespaced object's metadata.
pub fn meta_ref(kind: &'static str, meta: &ObjectMeta) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_lists_and_unknown_kinds() {
        let text = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a}
spec: {defaultBackend: {service: {name: s, port: {number: 80}}}}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: s, namespace: team}
  spec: {ports: [{port: 80}]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: d}
---
"#;
        let parsed = parse_manifest(text).expect("valid yaml");
        assert_eq!(parsed.objects.ingresses.len(), 1);
        assert_eq!(
            parsed.objects.ingresses[0].metadata.namespace.as_deref(),
            Some("default")
        );
        assert_eq!(parsed.objects.services.len(), 1);
        assert_eq!(
            parsed.objects.services[0].metadata.namespace.as_deref(),
            Some("team")
        );
        assert_eq!(parsed.ignored, 1);
        assert!(parsed.rejected.is_empty());
    }

    #[test]
    fn invalid_object_is_rejected_alone() {
        let text = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad, namespace: ns}
spec: {rules: "not a list"}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: good}
spec: {}
---
apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: old}
"#;
        let parsed = parse_manifest(text).expect("valid yaml");
        assert_eq!(parsed.objects.ingresses.len(), 1);
        assert_eq!(parsed.rejected.len(), 2);
        assert_eq!(parsed.rejected[0].object.to_string(), "Ingress ns/bad");
        assert!(parsed.rejected[1].reason.contains("unsupported apiVersion"));
    }

    #[test]
    fn broken_yaml_fails_the_file() {
        let err = parse_manifest("kind: Ingress\n  bad: [indent\n").expect_err("broken");
        assert!(err.to_string().starts_with("invalid YAML"));
    }
}
