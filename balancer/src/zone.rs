//! Zone-aware routing (docs/balancing.md), Envoy's rule.
//!
//! With a local zone, zone awareness on, the pool spread over at least 2 zones and at least
//! [`MIN_ENDPOINTS`] endpoints (all with a zone): traffic stays in the local zone as long as
//! the local zone's share of the pool's endpoints covers this proxy's share of the traffic;
//! otherwise the local zone takes what it can (`upstream share / proxy share`) and the rest
//! spills to the other zones in proportion to their residual capacity
//! (`upstream share - proxy share`, when positive).
//!
//! Envoy knows where its fellow proxies run; weir assumes its replicas are spread evenly
//! over the zones (the pool's zones and its own), which is what topology spread
//! constraints give. Ejected endpoints do not shift the shares (the plan is built with the
//! members); within a chosen zone they are skipped, and a pool in panic ignores zones.

use crate::endpoint::EndpointState;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Fewer endpoints than this: zone awareness is not worth its imbalance.
pub const MIN_ENDPOINTS: usize = 6;

#[derive(Debug)]
pub struct ZonePlan {
    local: Vec<Arc<EndpointState>>,
    /// Probability of staying local.
    local_share: f64,
    /// Other zones with residual capacity: (cumulative probability within the spill, members).
    spill: Vec<(f64, Vec<Arc<EndpointState>>)>,
}

impl ZonePlan {
    /// The plan for `routable`, or `None` when zone awareness does not apply.
    pub fn build(routable: &[Arc<EndpointState>], local_zone: &str) -> Option<ZonePlan> {
        if routable.len() < MIN_ENDPOINTS {
            return None;
        }
        let mut by_zone: BTreeMap<&str, Vec<Arc<EndpointState>>> = BTreeMap::new();
        for e in routable {
            by_zone.entry(e.zone()?).or_default().push(Arc::clone(e));
        }
        if by_zone.len() < 2 {
            return None;
        }
        let total = routable.len() as f64;
        let proxy_zones = by_zone.len() + usize::from(!by_zone.contains_key(local_zone));
        let proxy_share = 1.0 / proxy_zones as f64;
        let local = by_zone.remove(local_zone).unwrap_or_default();
        let upstream_local = local.len() as f64 / total;
        if upstream_local >= proxy_share {
            return Some(ZonePlan {
                local,
                local_share: 1.0,
                spill: Vec::new(),
            });
        }
        let residual: Vec<(f64, Vec<Arc<EndpointState>>)> = by_zone
            .into_values()
            .map(|members| {
                (
                    (members.len() as f64 / total - proxy_share).max(0.0),
                    members,
                )
            })
            .filter(|(r, _)| *r > 0.0)
            .collect();
        let sum: f64 = residual.iter().map(|(r, _)| r).sum();
        let mut cumulative = 0.0;
        let spill = residual
            .into_iter()
            .map(|(r, members)| {
                cumulative += r / sum;
                (cumulative, members)
            })
            .collect();
        Some(ZonePlan {
            local,
            local_share: upstream_local / proxy_share,
            spill,
        })
    }

    /// The zone's members a request goes to, and whether it spilled out of the local zone.
    pub fn choose<R: Rng + ?Sized>(&self, rng: &mut R) -> (&[Arc<EndpointState>], bool) {
        if self.local_share >= 1.0 || rng.random::<f64>() < self.local_share {
            return (&self.local, false);
        }
        let draw: f64 = rng.random();
        let zone = self
            .spill
            .iter()
            .find(|(cumulative, _)| draw < *cumulative)
            .or(self.spill.last());
        match zone {
            Some((_, members)) => (members, true),
            None => (&self.local, false),
        }
    }

    /// Probability of staying in the local zone.
    pub fn local_share(&self) -> f64 {
        self.local_share
    }
}
