//! The endpoints of a Service port, from its EndpointSlices (pure): what the routing
//! translation resolves backends to, and what weir-client balances over.
//!
//! Must not: do I/O (the sources watch the objects).

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use weir_balancer::{EndpointSpec, Nanos};

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The port of `service` that `port` names: its number, or its name.
pub fn service_port<'a>(service: &'a Service, port: &str) -> Option<&'a ServicePort> {
    let ports = service.spec.as_ref()?.ports.as_deref()?;
    match port.parse::<i32>() {
        Ok(number) => ports.iter().find(|p| p.port == number),
        Err(_) => ports.iter().find(|p| p.name.as_deref() == Some(port)),
    }
}

/// When `pod` last turned ready, if it is ready (its `Ready` condition's transition time).
pub fn pod_ready_since(pod: &Pod) -> Option<Nanos> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    let at = condition.last_transition_time.as_ref()?.0;
    u64::try_from(at.as_nanosecond()).ok().map(Nanos)
}

/// The endpoints of one Service port across all its slices, deduplicated by address.
/// `ready_since` gives a Pod's readiness time by name (slow start counts from it), where the
/// caller knows the Pods; else an endpoint's slow start counts from when weir first saw it
/// routable.
pub fn endpoints_of(
    service_port: &ServicePort,
    slices: &[&EndpointSlice],
    ready_since: impl Fn(&str) -> Option<Nanos>,
) -> Vec<EndpointSpec> {
    let wanted_name = service_port.name.as_deref().unwrap_or("");
    let mut by_addr: BTreeMap<SocketAddr, EndpointSpec> = BTreeMap::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let slice_port = slice
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == wanted_name)
            .and_then(|p| p.port);
        let port = match slice_port {
            Some(p) => p,
            // A slice without ports: fall back to a numeric targetPort (ingress-nginx does).
            None if slice.ports.as_deref().unwrap_or_default().is_empty() => {
                match &service_port.target_port {
                    Some(IntOrString::Int(p)) => *p,
                    None => service_port.port,
                    Some(IntOrString::String(_)) => continue,
                }
            }
            None => continue,
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // Controller-made endpoints have exactly one address; extra ones are ignored, as
            // kube-proxy does.
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let ready = conditions.ready.unwrap_or(true);
            let spec = EndpointSpec {
                addr: SocketAddr::new(ip, port),
                ready,
                serving: conditions.serving.unwrap_or(ready),
                terminating: conditions.terminating.unwrap_or(false),
                zone: endpoint.zone.clone(),
                weight: 1,
                // EndpointSlices carry no readiness time: the Pod's Ready condition does.
                ready_since: endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.as_deref())
                    .and_then(&ready_since),
            };
            by_addr
                .entry(spec.addr)
                .and_modify(|existing| {
                    if spec.is_routable() && !existing.is_routable() {
                        *existing = spec.clone();
                    }
                })
                .or_insert(spec);
        }
    }
    by_addr.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml_ng::from_str(yaml).expect("slice")
    }

    #[test]
    fn endpoints_take_their_pods_readiness_time() {
        let port: ServicePort = serde_yaml_ng::from_str("{name: http, port: 80}").expect("port");
        let s = slice(
            r#"
metadata: {name: app-1, namespace: demo, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: [10.0.0.1]
    conditions: {ready: true}
    zone: a
    targetRef: {kind: Pod, name: app-1}
  - addresses: [10.0.0.2]
    conditions: {ready: false}
    targetRef: {kind: Pod, name: app-2}
"#,
        );
        let pod: Pod = serde_yaml_ng::from_str(
            r#"
metadata: {name: app-1}
status:
  conditions:
    - {type: Ready, status: "True", lastTransitionTime: "2026-12-05T10:00:00Z"}
"#,
        )
        .expect("pod");
        let since = pod_ready_since(&pod).expect("ready");
        assert_eq!(since.0, 1_796_464_800 * 1_000_000_000);
        let endpoints = endpoints_of(&port, &[&s], |name| (name == "app-1").then_some(since));
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[0].addr, "10.0.0.1:8080".parse().expect("addr"));
        assert_eq!(endpoints[0].ready_since, Some(since));
        assert_eq!(endpoints[0].zone.as_deref(), Some("a"));
        assert!(!endpoints[1].ready);
        assert_eq!(endpoints[1].ready_since, None);
    }

    #[test]
    fn a_port_is_found_by_number_or_name() {
        let service: Service = serde_yaml_ng::from_str(
            "{metadata: {name: app}, spec: {ports: [{name: http, port: 80}, {name: grpc, port: 9090}]}}",
        )
        .expect("service");
        assert_eq!(service_port(&service, "80").map(|p| p.port), Some(80));
        assert_eq!(service_port(&service, "grpc").map(|p| p.port), Some(9090));
        assert!(service_port(&service, "81").is_none());
        assert!(service_port(&service, "admin").is_none());
        let pod: Pod = serde_yaml_ng::from_str(
            "{metadata: {name: p}, status: {conditions: [{type: Ready, status: \"False\"}]}}",
        )
        .expect("pod");
        assert_eq!(pod_ready_since(&pod), None);
    }
}
