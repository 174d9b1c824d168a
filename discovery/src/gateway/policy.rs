//! Policies attached to Services in Gateway API's style (GEP-713 `targetRefs`), read into
//! what a route to the Service uses (pure: no I/O):
//!
//! - weir's `BalancerPolicy` (`weir.dev/v1alpha1`): the balancer settings an Ingress gives
//!   with `weir.dev/*` annotations (`load-balancer`, `slow-start`, `outlier-*`, ...), read
//!   by the same parser, for Gateway API routes to the targeted Services;
//! - Gateway API's `BackendLBPolicy` (`v1alpha2`): `sessionPersistence` of type `Cookie`,
//!   as weir's cookie affinity.
//!
//! A Service has at most one of each: the oldest policy (then namespace/name) wins, a later
//! one targeting the same Service is `Conflicted`. Each target gets an `Accepted` verdict
//! for the policy's status (`Accepted`, `Invalid`, `TargetNotFound`, `Conflicted`).
//!
//! Must not: do I/O, or apply to Ingress routes (their annotations say how they balance).

use super::objects::{PolicyTargetReference, SessionPersistence};
use super::values::{parse_duration, Verdict};
use crate::objects::{meta_ref, ClusterObjects};
use crate::snapshot::{
    AffinityCookie, AffinityMode, ObjectRef, Rejection, RoutePolicy, SessionAffinity,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// What the policies say of one Service.
#[derive(Clone, Debug, Default)]
pub struct ServicePolicy {
    /// Its `BalancerPolicy`'s settings, and which settings it names.
    pub balancer: Option<(RoutePolicy, Vec<String>)>,
    /// Its `BackendLBPolicy`'s session persistence.
    pub affinity: Option<SessionAffinity>,
}

/// One policy's verdict for one of its targets.
#[derive(Clone, Debug)]
pub struct PolicyOutcome {
    /// Kind `BalancerPolicy` or `BackendLBPolicy`.
    pub policy: ObjectRef,
    pub target: PolicyTargetReference,
    pub accepted: Verdict,
}

/// Every policy read: by Service (namespace, name), the verdicts, and what was refused.
#[derive(Debug, Default)]
pub struct Policies {
    pub services: BTreeMap<(String, String), ServicePolicy>,
    pub outcomes: Vec<PolicyOutcome>,
    pub rejected: Vec<Rejection>,
}

/// A BalancerPolicy's settings as a route policy, every key and value checked.
pub fn balancer_settings(settings: &BTreeMap<String, String>) -> Result<RoutePolicy, String> {
    // The `weir.dev/*` annotations of how a Service is balanced and reached.
    if let Some(unknown) = settings
        .keys()
        .find(|k| !crate::annotations::is_service_setting(k))
    {
        return Err(format!(
            "setting {unknown:?} is not one weir reads (docs/gateway-api.md lists them)"
        ));
    }
    // The same parser as the annotations', so both mean the same.
    let annotations: BTreeMap<String, String> = settings
        .iter()
        .map(|(k, v)| (format!("weir.dev/{k}"), v.clone()))
        .collect();
    crate::annotations::route_policy(Some(&annotations))
        .map_err(|e| e.replace("annotation weir.dev/", "setting "))
}

/// Session persistence (a BackendLBPolicy's, or a route rule's) as weir's cookie affinity.
pub fn affinity(persistence: &SessionPersistence) -> Result<SessionAffinity, String> {
    if persistence.kind.as_deref().is_some_and(|k| k != "Cookie") {
        return Err(format!(
            "sessionPersistence type {:?}: weir keeps sessions by cookie",
            persistence.kind.as_deref().unwrap_or_default()
        ));
    }
    if persistence.idle_timeout.is_some() {
        return Err("sessionPersistence idleTimeout is not supported by weir".to_string());
    }
    let name = persistence
        .session_name
        .clone()
        .unwrap_or_else(|| "weir-session".to_string());
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("sessionName {name:?} is not a cookie name"));
    }
    let lifetime = persistence
        .absolute_timeout
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    let permanent = persistence
        .cookie_config
        .as_ref()
        .and_then(|c| c.lifetime_type.as_deref())
        == Some("Permanent");
    if permanent && lifetime.is_none() {
        return Err("a Permanent cookie needs absoluteTimeout".to_string());
    }
    Ok(SessionAffinity {
        mode: AffinityMode::Balanced,
        cookie: AffinityCookie {
            name,
            path: None,
            domain: None,
            // A session cookie (the default lifetime) has no Max-Age.
            max_age: lifetime.filter(|_| permanent).map(|d| d.as_secs()),
            expires: None,
            same_site: None,
            secure: false,
        },
        change_on_failure: false,
    })
}

/// Every BalancerPolicy and BackendLBPolicy of `objects`, read.
pub fn read_policies(objects: &ClusterObjects) -> Policies {
    let mut out = Policies::default();
    let mut balancers: Vec<_> = objects.balancer_policies.iter().collect();
    balancers.sort_by_key(|p| order(&p.metadata));
    for policy in balancers {
        let parsed = balancer_settings(&policy.spec.settings)
            .map(|p| (p, policy.spec.settings.keys().cloned().collect()));
        attach(
            objects,
            meta_ref("BalancerPolicy", &policy.metadata),
            &policy.metadata,
            &policy.spec.target_refs,
            parsed,
            &mut out,
            |service| &mut service.balancer,
        );
    }
    let mut lb: Vec<_> = objects.backend_lb_policies.iter().collect();
    lb.sort_by_key(|p| order(&p.metadata));
    for policy in lb {
        let parsed = match &policy.spec.session_persistence {
            Some(persistence) => affinity(persistence),
            None => Err("BackendLBPolicy without sessionPersistence".to_string()),
        };
        attach(
            objects,
            meta_ref("BackendLBPolicy", &policy.metadata),
            &policy.metadata,
            &policy.spec.target_refs,
            parsed,
            &mut out,
            |service| &mut service.affinity,
        );
    }
    out
}

fn order(
    meta: &ObjectMeta,
) -> (
    Option<k8s_openapi::jiff::Timestamp>,
    Option<String>,
    Option<String>,
) {
    (
        meta.creation_timestamp.clone().map(|t| t.0),
        meta.namespace.clone(),
        meta.name.clone(),
    )
}

/// Gives `parsed` to each target Service of a policy that has none of its kind yet, and
/// the verdict per target.
fn attach<T: Clone>(
    objects: &ClusterObjects,
    policy: ObjectRef,
    meta: &ObjectMeta,
    targets: &[PolicyTargetReference],
    parsed: Result<T, String>,
    out: &mut Policies,
    slot: impl Fn(&mut ServicePolicy) -> &mut Option<T>,
) {
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    if let Err(why) = &parsed {
        out.rejected.push(Rejection {
            object: policy.clone(),
            reason: format!("Invalid: {why}"),
        });
    }
    for (i, target) in targets.iter().enumerate() {
        // A target named twice is one target (its status has one entry).
        if targets[..i].contains(target) {
            continue;
        }
        let verdict = match &parsed {
            Err(why) => Verdict {
                status: false,
                reason: "Invalid",
                message: why.clone(),
            },
            Ok(_) if !target.group.is_empty() || target.kind != "Service" => Verdict {
                status: false,
                reason: "Invalid",
                message: format!(
                    "targets {}/{}: weir's policies attach to Services",
                    target.group, target.kind
                ),
            },
            Ok(value) => {
                let exists = objects.services.iter().any(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata.name.as_deref() == Some(target.name.as_str())
                });
                let key = (namespace.to_string(), target.name.clone());
                let taken = out
                    .services
                    .get_mut(&key)
                    .is_some_and(|s| slot(s).is_some());
                if !exists {
                    Verdict {
                        status: false,
                        reason: "TargetNotFound",
                        message: format!("Service {namespace}/{} not found", target.name),
                    }
                } else if taken {
                    Verdict {
                        status: false,
                        reason: "Conflicted",
                        message: format!(
                            "an older {} already applies to Service {namespace}/{}",
                            policy.kind, target.name
                        ),
                    }
                } else {
                    *slot(out.services.entry(key).or_default()) = Some(value.clone());
                    Verdict {
                        status: true,
                        reason: "Accepted",
                        message: "applied by weir".to_string(),
                    }
                }
            }
        };
        if !verdict.status && parsed.is_ok() {
            out.rejected.push(Rejection {
                object: policy.clone(),
                reason: format!(
                    "target {}: {}: {}",
                    target.name, verdict.reason, verdict.message
                ),
            });
        }
        out.outcomes.push(PolicyOutcome {
            policy: policy.clone(),
            target: target.clone(),
            accepted: verdict,
        });
    }
}
