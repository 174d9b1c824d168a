//! The Kubernetes objects weir reads, and their parsing from YAML manifests.
//!
//! Parsing is strict about what it keeps: a document that is not valid YAML fails the whole
//! file (the caller keeps that file's last good objects), while a well-formed document that
//! is not a valid object of a kind we read is rejected alone, naming `namespace/name`.

use crate::gateway::objects::{
    BackendLbPolicy, BalancerPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant,
};
use crate::snapshot::{ObjectRef, Rejection};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// Every object translation looks at. Objects are shared, not copied: the Kubernetes
/// stores and the manifests source hand out the objects they hold, so publishing a new
/// set costs a reference count per object instead of a deep copy of the cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterObjects {
    pub ingresses: Vec<Arc<Ingress>>,
    pub ingress_classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub secrets: Vec<Arc<Secret>>,
    /// Their labels select the routes a Gateway listener allows (`from: Selector`).
    pub namespaces: Vec<Arc<Namespace>>,
    /// Gateway API (`gateway.networking.k8s.io`).
    pub gateway_classes: Vec<Arc<GatewayClass>>,
    pub gateways: Vec<Arc<Gateway>>,
    pub http_routes: Vec<Arc<HttpRoute>>,
    pub grpc_routes: Vec<Arc<GrpcRoute>>,
    pub reference_grants: Vec<Arc<ReferenceGrant>>,
    pub backend_lb_policies: Vec<Arc<BackendLbPolicy>>,
    /// weir's own policy (`weir.dev/v1alpha1`).
    pub balancer_policies: Vec<Arc<BalancerPolicy>>,
}

impl ClusterObjects {
    pub fn extend(&mut self, other: ClusterObjects) {
        self.ingresses.extend(other.ingresses);
        self.ingress_classes.extend(other.ingress_classes);
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.secrets.extend(other.secrets);
        self.namespaces.extend(other.namespaces);
        self.gateway_classes.extend(other.gateway_classes);
        self.gateways.extend(other.gateways);
        self.http_routes.extend(other.http_routes);
        self.grpc_routes.extend(other.grpc_routes);
        self.reference_grants.extend(other.reference_grants);
        self.backend_lb_policies.extend(other.backend_lb_policies);
        self.balancer_policies.extend(other.balancer_policies);
    }

    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.namespaces.len()
            + self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.reference_grants.len()
            + self.backend_lb_policies.len()
            + self.balancer_policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";
const GATEWAY_V1BETA1: &str = "gateway.networking.k8s.io/v1beta1";
const GATEWAY_V1ALPHA2: &str = "gateway.networking.k8s.io/v1alpha2";
const WEIR_V1ALPHA1: &str = "weir.dev/v1alpha1";

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
/// Each document is decoded as soon as it is read: holding every document's generic tree
/// until the end made parsing peak at ~4x the decoded objects, and the allocator kept that
/// peak's pages (1,000 routes: 13.6 MB of trees for 3.4 MB of objects). A YAML error in a
/// later document still fails the whole file: the objects decoded so far are dropped.
pub fn parse_manifest(text: &str) -> Result<ParsedManifest, YamlError> {
    let mut parsed = ParsedManifest::default();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| YamlError(e.to_string()))?;
        add_value(value, &mut parsed);
    }
    Ok(parsed)
}

fn add_value(mut value: Value, parsed: &mut ParsedManifest) {
    if value.is_null() {
        return; // empty document, e.g. a trailing `---`
    }
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind.ends_with("List") {
        if let Some(Value::Array(items)) = value.get_mut("items").map(Value::take) {
            for item in items {
                add_value(item, parsed);
            }
        }
        return;
    }
    let objects = &mut parsed.objects;
    let rejected = &mut parsed.rejected;
    match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => {
            take(value, "Ingress", true, &mut objects.ingresses, rejected)
        }
        ("networking.k8s.io/v1", "IngressClass") => take(
            value,
            "IngressClass",
            false,
            &mut objects.ingress_classes,
            rejected,
        ),
        ("v1", "Service") => take(value, "Service", true, &mut objects.services, rejected),
        ("discovery.k8s.io/v1", "EndpointSlice") => take(
            value,
            "EndpointSlice",
            true,
            &mut objects.endpoint_slices,
            rejected,
        ),
        ("v1", "Secret") => take(value, "Secret", true, &mut objects.secrets, rejected),
        ("v1", "Namespace") => take(value, "Namespace", false, &mut objects.namespaces, rejected),
        // Gateway API: v1, and v1beta1 (the same fields; ReferenceGrant's only version).
        (GATEWAY_V1 | GATEWAY_V1BETA1, "GatewayClass") => take(
            value,
            "GatewayClass",
            false,
            &mut objects.gateway_classes,
            rejected,
        ),
        (GATEWAY_V1 | GATEWAY_V1BETA1, "Gateway") => {
            take(value, "Gateway", true, &mut objects.gateways, rejected)
        }
        (GATEWAY_V1 | GATEWAY_V1BETA1, "HTTPRoute") => {
            take(value, "HTTPRoute", true, &mut objects.http_routes, rejected)
        }
        (GATEWAY_V1ALPHA2, "BackendLBPolicy") => take(
            value,
            "BackendLBPolicy",
            true,
            &mut objects.backend_lb_policies,
            rejected,
        ),
        (WEIR_V1ALPHA1, "BalancerPolicy") => take(
            value,
            "BalancerPolicy",
            true,
            &mut objects.balancer_policies,
            rejected,
        ),
        (GATEWAY_V1, "GRPCRoute") => {
            take(value, "GRPCRoute", true, &mut objects.grpc_routes, rejected)
        }
        (GATEWAY_V1 | GATEWAY_V1BETA1, "ReferenceGrant") => take(
            value,
            "ReferenceGrant",
            true,
            &mut objects.reference_grants,
            rejected,
        ),
        (_, "Ingress") => unsupported_version("Ingress", &api_version, &value, rejected),
        (_, "IngressClass") => unsupported_version("IngressClass", &api_version, &value, rejected),
        (_, "EndpointSlice") => {
            unsupported_version("EndpointSlice", &api_version, &value, rejected)
        }
        ("", _) | (_, "") => rejected.push(Rejection {
            object: object_ref_of("document", &value),
            reason: "missing apiVersion or kind".to_string(),
        }),
        _ => parsed.ignored += 1,
    }
}

fn unsupported_version(
    kind: &'static str,
    api_version: &str,
    value: &Value,
    rejected: &mut Vec<Rejection>,
) {
    rejected.push(Rejection {
        object: object_ref_of(kind, value),
        reason: format!(
            "unsupported apiVersion {api_version:?} (weir reads networking.k8s.io/v1 and discovery.k8s.io/v1)"
        ),
    });
}

/// Decodes one object of a kind weir reads into `list`, or records why it is not one.
/// Namespaced objects without a namespace are in `default`, where `kubectl apply` would put them.
fn take<T>(
    value: Value,
    kind: &'static str,
    namespaced: bool,
    list: &mut Vec<Arc<T>>,
    rejected: &mut Vec<Rejection>,
) where
    T: DeserializeOwned + Metadata<Ty = ObjectMeta>,
{
    let object_ref = object_ref_of(kind, &value);
    match serde_json::from_value::<T>(value) {
        Ok(mut object) => {
            let meta = object.metadata_mut();
            if namespaced && meta.namespace.as_deref().is_none_or(str::is_empty) {
                meta.namespace = Some("default".to_string());
            }
            list.push(Arc::new(object));
        }
        Err(e) => rejected.push(Rejection {
            object: object_ref,
            reason: format!("not a valid object: {e}"),
        }),
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
        assert_eq!(parsed.rejected[1].object.to_string(), "Ingress old");
    }

    #[test]
    fn broken_yaml_fails_the_file() {
        let err = parse_manifest("kind: Ingress\n  bad: [indent\n").expect_err("broken");
        assert!(err.to_string().starts_with("invalid YAML"));
    }

    #[test]
    fn broken_yaml_after_good_documents_still_fails_the_whole_file() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\n\
                    ---\nkind: Service\n  bad: [indent\n";
        let err = parse_manifest(text).expect_err("second document is broken");
        assert!(err.to_string().starts_with("invalid YAML"), "{err}");
        let first_alone = parse_manifest(text.split("---").next().unwrap_or_default());
        assert_eq!(first_alone.map(|p| p.objects.services.len()).ok(), Some(1));
    }
}
