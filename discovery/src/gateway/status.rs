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
use std::sync::Arc;

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
    changed(
        &objects.gateway_classes,
        |class| class.status.clone(),
        |class, current| {
            let ours = translated
                .classes
                .iter()
                .any(|c| Some(c) == class.metadata.name.as_ref());
            ours.then(|| ConditionsStatus {
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
            })
        },
        |mut class, status| {
            class.status = Some(status);
            StatusUpdate::GatewayClass(class)
        },
        &mut updates,
    );
    changed(
        &objects.gateways,
        |gateway| gateway.status.clone(),
        |gateway, _| gateway_status(&translated, gateway, addresses, now),
        |mut gateway, status| {
            gateway.status = Some(status);
            StatusUpdate::Gateway(gateway)
        },
        &mut updates,
    );
    let route_status_of = |kind: &str, meta: &ObjectMeta, current: &RouteStatus| {
        let outcomes: Vec<&ParentOutcome> = translated
            .parents
            .iter()
            .filter(|p| p.route.kind == kind && is(&p.route, meta))
            .collect();
        Some(route_status(current, meta, &outcomes, controller, now))
    };
    changed(
        &objects.http_routes,
        |route| route.status.clone(),
        |route, current| route_status_of("HTTPRoute", &route.metadata, current),
        |mut route, status| {
            route.status = Some(status);
            StatusUpdate::HttpRoute(route)
        },
        &mut updates,
    );
    changed(
        &objects.grpc_routes,
        |route| route.status.clone(),
        |route, current| route_status_of("GRPCRoute", &route.metadata, current),
        |mut route, status| {
            route.status = Some(status);
            StatusUpdate::GrpcRoute(route)
        },
        &mut updates,
    );
    changed(
        &objects.balancer_policies,
        |policy| policy.status.clone(),
        |policy, current| {
            Some(policy_status(
                current,
                &translated,
                "BalancerPolicy",
                &policy.metadata,
                controller,
                now,
            ))
        },
        |mut policy, status| {
            policy.status = Some(status);
            StatusUpdate::BalancerPolicy(policy)
        },
        &mut updates,
    );
    changed(
        &objects.backend_lb_policies,
        |policy| policy.status.clone(),
        |policy, current| {
            Some(policy_status(
                current,
                &translated,
                "BackendLBPolicy",
                &policy.metadata,
                controller,
                now,
            ))
        },
        |mut policy, status| {
            policy.status = Some(status);
            StatusUpdate::BackendLbPolicy(policy)
        },
        &mut updates,
    );
    updates
}

/// Adds an update for each object whose wanted status (`None`: not weir's to write)
/// differs from its current one (absent counts as empty).
fn changed<K: Clone, S: Clone + Default + PartialEq>(
    objects: &[Arc<K>],
    current: impl Fn(&K) -> Option<S>,
    wanted: impl Fn(&K, &S) -> Option<S>,
    update: impl Fn(K, S) -> StatusUpdate,
    updates: &mut Vec<StatusUpdate>,
) {
    for object in objects {
        let now = current(object).unwrap_or_default();
        if let Some(wanted) = wanted(object, &now).filter(|w| *w != now) {
            updates.push(update(K::clone(object), wanted));
        }
    }
}

/// Whether `object` is the object of `meta`.
fn is(object: &crate::snapshot::ObjectRef, meta: &ObjectMeta) -> bool {
    Some(&object.namespace) == meta.namespace.as_ref() && Some(&object.name) == meta.name.as_ref()
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
    let outcomes = translated
        .policies
        .iter()
        .filter(|p| p.policy.kind == kind && is(&p.policy, meta));
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
    let outcome = translated
        .gateways
        .iter()
        .find(|g| is(&g.gateway, &gateway.metadata))?;
    let current = gateway.status.clone().unwrap_or_default();
    let meta = &gateway.metadata;
    let accepted_listeners = outcome
        .listeners
        .iter()
        .filter(|l| l.accepted.status)
        .count();
    let any_programmed = outcome.listeners.iter().any(|l| l.programmed.status);
    // Accepted while any listener is; the reason says when some are not.
    let accepted = if accepted_listeners == outcome.listeners.len() {
        Verdict {
            status: true,
            reason: "Accepted",
            message: "accepted by weir".to_string(),
        }
    } else if accepted_listeners > 0 {
        Verdict {
            status: true,
            reason: "ListenersNotValid",
            message: "some listeners are not valid (their status says why); the others are served"
                .to_string(),
        }
    } else {
        Verdict {
            status: false,
            reason: "ListenersNotValid",
            message: "no listener of this Gateway is valid".to_string(),
        }
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
        .enumerate()
        .map(|(i, l)| {
            // By position and name: two listeners of one name keep their own conditions.
            let before = current
                .listeners
                .get(i)
                .filter(|c| c.name == l.name)
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
