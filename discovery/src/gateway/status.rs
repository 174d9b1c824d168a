//! The status Gateway API objects should have (pure: no I/O): what translation found
//! ([`super::translate::Translated`]) as the spec's conditions, compared with what the
//! objects say now, so that only objects whose status changes are written.
//!
//! - GatewayClass (of weir's controller): `Accepted`.
//! - Gateway: `addresses` (the publish Service's), `Accepted`, `Programmed`, and per listener
//!   `supportedKinds`, `attachedRoutes`, `Accepted`, `Programmed`, `ResolvedRefs`,
//!   `Conflicted`.
//! - HTTPRoute and GRPCRoute: per parent of weir's, `Accepted` and `ResolvedRefs`; other
//!   controllers' entries are kept as they are.
//! - BalancerPolicy and BackendLBPolicy: per target Service (its ancestor), `Accepted`;
//!   other controllers' entries kept.
//!
//! Every condition carries the object's `metadata.generation` as `observedGeneration`; its
//! `lastTransitionTime` changes only when its status does.
//!
//! Must not: do I/O or decide the outcomes (translation does).

use super::objects::{
    BackendLbPolicy, BalancerPolicy, ConditionsStatus, Gateway, GatewayClass, GatewayStatus,
    GatewayStatusAddress, GrpcRoute, HttpRoute, ListenerStatus, ParentReference,
    PolicyAncestorStatus, PolicyStatus, RouteParentStatus, RouteStatus,
};
use super::translate::{translate, ParentOutcome, Translated, Verdict};
use crate::objects::ClusterObjects;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

/// An object whose status is to be written, carrying the new status.
#[derive(Clone, Debug)]
pub enum StatusUpdate {
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    BalancerPolicy(BalancerPolicy),
    BackendLbPolicy(BackendLbPolicy),
}

impl StatusUpdate {
    /// The new status as JSON (what is written).
    pub fn status_json(&self) -> serde_json::Value {
        let value = match self {
            StatusUpdate::GatewayClass(o) => serde_json::to_value(&o.status),
            StatusUpdate::Gateway(o) => serde_json::to_value(&o.status),
            StatusUpdate::HttpRoute(o) => serde_json::to_value(&o.status),
            StatusUpdate::GrpcRoute(o) => serde_json::to_value(&o.status),
            StatusUpdate::BalancerPolicy(o) => serde_json::to_value(&o.status),
            StatusUpdate::BackendLbPolicy(o) => serde_json::to_value(&o.status),
        };
        value.unwrap_or_default()
    }

    /// `Kind namespace/name`, for logs.
    pub fn describe(&self) -> String {
        let (kind, meta) = match self {
            StatusUpdate::GatewayClass(o) => ("GatewayClass", &o.metadata),
            StatusUpdate::Gateway(o) => ("Gateway", &o.metadata),
            StatusUpdate::HttpRoute(o) => ("HTTPRoute", &o.metadata),
            StatusUpdate::GrpcRoute(o) => ("GRPCRoute", &o.metadata),
            StatusUpdate::BalancerPolicy(o) => ("BalancerPolicy", &o.metadata),
            StatusUpdate::BackendLbPolicy(o) => ("BackendLBPolicy", &o.metadata),
        };
        format!(
            "{kind} {}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    }
}

/// The status writes that bring the Gateway API objects of `controller` to what translation
/// says; `addresses` are where the Gateways are reached, `now` stamps changed conditions.
pub fn status_updates(
    objects: &ClusterObjects,
    controller: &str,
    addresses: &[GatewayStatusAddress],
    now: Timestamp,
) -> Vec<StatusUpdate> {
    // Certificates are judged as the routes are (expired ones refused).
    let translated = translate(objects, controller, now.as_second());
    let mut updates = Vec::new();
    for class in &objects.gateway_classes {
        if !translated
            .classes
            .iter()
            .any(|c| Some(c) == class.metadata.name.as_ref())
        {
            continue;
        }
        let current = class.status.clone().unwrap_or_default();
        let wanted = ConditionsStatus {
            conditions: conditions(
                &current.conditions,
                &class.metadata,
                &[(
                    "Accepted",
                    Verdict {
                        status: true,
                        reason: "Accepted",
                        message: "weir serves this class".to_string(),
                    },
                )],
                now,
            ),
        };
        if wanted != current {
            let mut next = GatewayClass::clone(class);
            next.status = Some(wanted);
            updates.push(StatusUpdate::GatewayClass(next));
        }
    }
    for gateway in &objects.gateways {
        if let Some(wanted) = gateway_status(&translated, gateway, addresses, now) {
            if Some(&wanted) != gateway.status.as_ref() {
                let mut next = Gateway::clone(gateway);
                next.status = Some(wanted);
                updates.push(StatusUpdate::Gateway(next));
            }
        }
    }
    let ours = |kind: &str, meta: &ObjectMeta| -> Vec<&ParentOutcome> {
        translated
            .parents
            .iter()
            .filter(|p| {
                p.route.kind == kind
                    && Some(&p.route.namespace) == meta.namespace.as_ref()
                    && Some(&p.route.name) == meta.name.as_ref()
            })
            .collect()
    };
    for route in &objects.http_routes {
        let current = route.status.clone().unwrap_or_default();
        let wanted = route_status(
            &current,
            &route.metadata,
            &ours("HTTPRoute", &route.metadata),
            controller,
            now,
        );
        if wanted != current {
            let mut next = HttpRoute::clone(route);
            next.status = Some(wanted);
            updates.push(StatusUpdate::HttpRoute(next));
        }
    }
    for route in &objects.grpc_routes {
        let current = route.status.clone().unwrap_or_default();
        let wanted = route_status(
            &current,
            &route.metadata,
            &ours("GRPCRoute", &route.metadata),
            controller,
            now,
        );
        if wanted != current {
            let mut next = GrpcRoute::clone(route);
            next.status = Some(wanted);
            updates.push(StatusUpdate::GrpcRoute(next));
        }
    }
    for policy in &objects.balancer_policies {
        let current = policy.status.clone().unwrap_or_default();
        let wanted = policy_status(
            &current,
            &translated,
            "BalancerPolicy",
            &policy.metadata,
            controller,
            now,
        );
        if wanted != current {
            let mut next = BalancerPolicy::clone(policy);
            next.status = Some(wanted);
            updates.push(StatusUpdate::BalancerPolicy(next));
        }
    }
    for policy in &objects.backend_lb_policies {
        let current = policy.status.clone().unwrap_or_default();
        let wanted = policy_status(
            &current,
            &translated,
            "BackendLBPolicy",
            &policy.metadata,
            controller,
            now,
        );
        if wanted != current {
            let mut next = BackendLbPolicy::clone(policy);
            next.status = Some(wanted);
            updates.push(StatusUpdate::BackendLbPolicy(next));
        }
    }
    updates
}

/// A policy's status: other controllers' ancestors as they are, then weir's, one per
/// target Service.
fn policy_status(
    current: &PolicyStatus,
    translated: &Translated,
    kind: &str,
    meta: &ObjectMeta,
    controller: &str,
    now: Timestamp,
) -> PolicyStatus {
    let mut ancestors: Vec<PolicyAncestorStatus> = current
        .ancestors
        .iter()
        .filter(|a| a.controller_name != controller)
        .cloned()
        .collect();
    let outcomes = translated.policies.iter().filter(|p| {
        p.policy.kind == kind
            && Some(&p.policy.namespace) == meta.namespace.as_ref()
            && Some(&p.policy.name) == meta.name.as_ref()
    });
    for outcome in outcomes {
        let ancestor = ParentReference {
            group: Some(outcome.target.group.clone()),
            kind: Some(outcome.target.kind.clone()),
            namespace: None,
            name: outcome.target.name.clone(),
            section_name: None,
            port: None,
        };
        let before = current
            .ancestors
            .iter()
            .find(|a| a.controller_name == controller && a.ancestor_ref == ancestor)
            .map(|a| a.conditions.as_slice())
            .unwrap_or_default();
        ancestors.push(PolicyAncestorStatus {
            conditions: conditions(before, meta, &[("Accepted", outcome.accepted.clone())], now),
            ancestor_ref: ancestor,
            controller_name: controller.to_string(),
        });
    }
    PolicyStatus { ancestors }
}

/// A Gateway's status, when it is one of weir's.
fn gateway_status(
    translated: &Translated,
    gateway: &Gateway,
    addresses: &[GatewayStatusAddress],
    now: Timestamp,
) -> Option<GatewayStatus> {
    let outcome = translated.gateways.iter().find(|g| {
        Some(&g.gateway.namespace) == gateway.metadata.namespace.as_ref()
            && Some(&g.gateway.name) == gateway.metadata.name.as_ref()
    })?;
    let current = gateway.status.clone().unwrap_or_default();
    let meta = &gateway.metadata;
    let any_accepted = outcome.listeners.iter().any(|l| l.accepted.status);
    let any_programmed = outcome.listeners.iter().any(|l| l.programmed.status);
    let accepted = match any_accepted || outcome.listeners.is_empty() {
        true => Verdict {
            status: true,
            reason: "Accepted",
            message: "accepted by weir".to_string(),
        },
        false => Verdict {
            status: false,
            reason: "ListenersNotValid",
            message: "no listener of this Gateway is valid".to_string(),
        },
    };
    let programmed = if addresses.is_empty() {
        Verdict {
            status: false,
            reason: "AddressNotAssigned",
            message: "weir knows no address for it: its publish Service has none".to_string(),
        }
    } else if any_programmed {
        Verdict {
            status: true,
            reason: "Programmed",
            message: "served by weir".to_string(),
        }
    } else {
        Verdict {
            status: false,
            reason: "Invalid",
            message: "no listener of this Gateway is served".to_string(),
        }
    };
    let listeners = outcome
        .listeners
        .iter()
        .map(|l| {
            let before = current
                .listeners
                .iter()
                .find(|c| c.name == l.name)
                .map(|c| c.conditions.as_slice())
                .unwrap_or_default();
            ListenerStatus {
                name: l.name.clone(),
                supported_kinds: l.supported_kinds.clone(),
                attached_routes: l.attached_routes,
                conditions: conditions(
                    before,
                    meta,
                    &[
                        ("Accepted", l.accepted.clone()),
                        ("Programmed", l.programmed.clone()),
                        ("ResolvedRefs", l.resolved_refs.clone()),
                        ("Conflicted", l.conflicted.clone()),
                    ],
                    now,
                ),
            }
        })
        .collect();
    Some(GatewayStatus {
        addresses: addresses.to_vec(),
        conditions: conditions(
            &current.conditions,
            meta,
            &[("Accepted", accepted), ("Programmed", programmed)],
            now,
        ),
        listeners,
    })
}

/// A route's status: other controllers' entries as they are, then weir's, one per parent
/// of weir's in `parentRefs` order.
fn route_status(
    current: &RouteStatus,
    meta: &ObjectMeta,
    outcomes: &[&ParentOutcome],
    controller: &str,
    now: Timestamp,
) -> RouteStatus {
    let mut parents: Vec<RouteParentStatus> = current
        .parents
        .iter()
        .filter(|p| p.controller_name != controller)
        .cloned()
        .collect();
    for outcome in outcomes {
        let before = current
            .parents
            .iter()
            .find(|p| p.controller_name == controller && p.parent_ref == outcome.parent)
            .map(|p| p.conditions.as_slice())
            .unwrap_or_default();
        parents.push(RouteParentStatus {
            parent_ref: outcome.parent.clone(),
            controller_name: controller.to_string(),
            conditions: conditions(
                before,
                meta,
                &[
                    ("Accepted", outcome.accepted.clone()),
                    ("ResolvedRefs", outcome.resolved_refs.clone()),
                ],
                now,
            ),
        });
    }
    RouteStatus { parents }
}

/// Conditions as wanted, each keeping its `lastTransitionTime` from `before` when its
/// status is unchanged.
fn conditions(
    before: &[Condition],
    meta: &ObjectMeta,
    wanted: &[(&str, Verdict)],
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|(kind, verdict)| {
            let status = if verdict.status { "True" } else { "False" };
            let since = before
                .iter()
                .find(|c| c.type_ == *kind && c.status == status)
                .map_or(Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: kind.to_string(),
                status: status.to_string(),
                reason: verdict.reason.to_string(),
                message: verdict.message.clone(),
                observed_generation: meta.generation,
                last_transition_time: since,
            }
        })
        .collect()
}
