//! Writing back to Kubernetes: leader election with a `coordination.k8s.io` Lease, the
//! `status.loadBalancer.ingress` of the Ingresses weir serves, the status of its Gateway API
//! objects (as [`crate::gateway::status`] computes it), and Events on the objects it
//! rejects.
//!
//! Exactly one replica writes status: the holder of the Lease. A replica takes a Lease that
//! is missing or expired (renew time + duration in the past) and renews its own; every
//! write carries the Lease's resourceVersion, so when two replicas race the API server's 409
//! decides and the loser stays a follower. Status is written only to Ingresses that weir
//! serves (the caller passes them) and only when it differs from what is there.
//!
//! Must not: decide which Ingresses are ours (translation does) or hold state beyond the
//! Lease's identity.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use std::sync::Arc;
use std::time::Duration;

/// One replica's side of leader election.
#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    fn spec(&self, now: Timestamp, acquire: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquire)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One election round: acquire or renew. `Ok(true)` while this replica leads.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = match self.api.get(&self.name).await {
            Ok(lease) => lease,
            Err(e) if is_not_found(&e) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, now, 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let spec = current.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(seconds)) => {
                let until = renewed.0.as_second().saturating_add(i64::from(seconds));
                until < now.as_second()
            }
            _ => true,
        };
        if !ours && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = match (ours, &spec.acquire_time) {
            (true, Some(t)) => t.0,
            _ => now,
        };
        let mut next = current;
        next.spec = Some(self.spec(now, acquired, transitions));
        // `next` carries the resourceVersion we read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The addresses Ingresses should show: the load-balancer ingress points of the publish
/// Service, its external IPs, else its cluster IP (as ingress-nginx does).
pub async fn published_addresses(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<IngressLoadBalancerIngress>, kube::Error> {
    let service = Api::<Service>::namespaced(client, namespace)
        .get(name)
        .await?;
    let mut out = Vec::new();
    if let Some(points) = service
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
    {
        for p in points {
            out.push(IngressLoadBalancerIngress {
                ip: p.ip,
                hostname: p.hostname,
                ..IngressLoadBalancerIngress::default()
            });
        }
    }
    let spec = service.spec.unwrap_or_default();
    for ip in spec.external_ips.unwrap_or_default() {
        out.push(IngressLoadBalancerIngress {
            ip: Some(ip),
            ..IngressLoadBalancerIngress::default()
        });
    }
    if out.is_empty() {
        if let Some(ip) = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None") {
            out.push(IngressLoadBalancerIngress {
                ip: Some(ip),
                ..IngressLoadBalancerIngress::default()
            });
        }
    }
    out.sort_by(|a, b| (&a.hostname, &a.ip).cmp(&(&b.hostname, &b.ip)));
    Ok(out)
}

/// Writes `addresses` into the status of each Ingress whose status differs. Returns how
/// many were written. A 409 (the Ingress changed meanwhile) is left for the next round.
pub async fn update_ingress_status(
    client: Client,
    ingresses: &[Arc<Ingress>],
    addresses: &[IngressLoadBalancerIngress],
) -> Result<usize, kube::Error> {
    let mut written = 0;
    for ingress in ingresses {
        let current = ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default();
        if current == addresses {
            continue;
        }
        let (Some(namespace), Some(name)) = (&ingress.metadata.namespace, &ingress.metadata.name)
        else {
            continue;
        };
        let mut next = Ingress::clone(ingress);
        next.status = Some(IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: Some(addresses.to_vec()),
            }),
        });
        let api = Api::<Ingress>::namespaced(client.clone(), namespace);
        match api
            .replace_status(name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => written += 1,
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// The publish Service's addresses as a Gateway's `status.addresses`.
pub fn gateway_addresses(
    points: &[IngressLoadBalancerIngress],
) -> Vec<crate::gateway::objects::GatewayStatusAddress> {
    use crate::gateway::objects::GatewayStatusAddress;
    points
        .iter()
        .filter_map(|p| match (&p.ip, &p.hostname) {
            (Some(ip), _) => Some(GatewayStatusAddress {
                kind: Some("IPAddress".to_string()),
                value: ip.clone(),
            }),
            (None, Some(host)) => Some(GatewayStatusAddress {
                kind: Some("Hostname".to_string()),
                value: host.clone(),
            }),
            (None, None) => None,
        })
        .collect()
}

/// Writes each update's status (`PUT .../status`, carrying the resourceVersion it was
/// computed from). Returns how many were written and the errors of the others, by object:
/// one refused write (a 403, a 422) does not hold back the rest. A 409 (the object changed
/// meanwhile) or 404 (deleted) is left for the next round, which computes anew.
pub async fn write_gateway_status(
    client: Client,
    updates: Vec<crate::gateway::status::StatusUpdate>,
) -> (usize, Vec<(String, kube::Error)>) {
    use crate::gateway::status::StatusUpdate;
    let mut written = 0;
    let mut failed = Vec::new();
    for update in updates {
        let result = match &update {
            StatusUpdate::GatewayClass(o) => {
                put_status(Api::all(client.clone()), o, &o.metadata).await
            }
            StatusUpdate::Gateway(o) => {
                put_status(namespaced(&client, &o.metadata), o, &o.metadata).await
            }
            StatusUpdate::HttpRoute(o) => {
                put_status(namespaced(&client, &o.metadata), o, &o.metadata).await
            }
            StatusUpdate::GrpcRoute(o) => {
                put_status(namespaced(&client, &o.metadata), o, &o.metadata).await
            }
            StatusUpdate::BalancerPolicy(o) => {
                put_status(namespaced(&client, &o.metadata), o, &o.metadata).await
            }
            StatusUpdate::BackendLbPolicy(o) => {
                put_status(namespaced(&client, &o.metadata), o, &o.metadata).await
            }
        };
        match result {
            Ok(()) => written += 1,
            Err(e) if is_conflict(&e) || is_not_found(&e) => {}
            Err(e) => failed.push((update.describe(), e)),
        }
    }
    (written, failed)
}

fn namespaced<K>(client: &Client, meta: &ObjectMeta) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::namespaced(
        client.clone(),
        meta.namespace.as_deref().unwrap_or("default"),
    )
}

async fn put_status<K>(api: Api<K>, object: &K, meta: &ObjectMeta) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = meta.name.as_deref().unwrap_or_default();
    api.replace_status(name, &PostParams::default(), object)
        .await
        .map(|_| ())
}

/// Posts a `Warning` Event (`events.k8s.io/v1`) on `object`: `reason` is the Event's
/// machine-readable reason (`Rejected`, `UnsupportedAnnotation`), `note` says why.
pub async fn report_warning(
    client: Client,
    object: &crate::snapshot::ObjectRef,
    reason: &str,
    note: &str,
    identity: &str,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event;
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", object.name)),
            namespace: Some(object.namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        type_: Some("Warning".to_string()),
        reason: Some(reason.to_string()),
        action: Some("Translate".to_string()),
        note: Some(note.chars().take(1000).collect()),
        reporting_controller: Some(crate::CONTROLLER_NAME.to_string()),
        reporting_instance: Some(identity.to_string()),
        regarding: Some(ObjectReference {
            api_version: Some(
                match object.kind {
                    "Secret" | "Service" => "v1",
                    "EndpointSlice" => "discovery.k8s.io/v1",
                    "ReferenceGrant" => "gateway.networking.k8s.io/v1beta1",
                    "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" => {
                        "gateway.networking.k8s.io/v1"
                    }
                    "BackendLBPolicy" => "gateway.networking.k8s.io/v1alpha2",
                    "BalancerPolicy" => "weir.dev/v1alpha1",
                    _ => "networking.k8s.io/v1",
                }
                .to_string(),
            ),
            kind: Some(object.kind.to_string()),
            namespace: Some(object.namespace.clone()),
            name: Some(object.name.clone()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    };
    Api::<Event>::namespaced(client, &object.namespace)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}
