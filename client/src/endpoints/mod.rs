//! Where a client's endpoints come from: a fixed list (tests, local runs), a list the caller
//! changes, or a Kubernetes Service's EndpointSlices watched with kube-rs ([`kubernetes`]).
//! Each is a `watch` channel of the endpoints as they are now; the client applies every new
//! list to its pool (endpoints kept keep their state: in-flight counts, latency, ejections).
//!
//! Must not: balance, or block a call (calls read the pool, never the source).

pub mod kubernetes;

pub use kubernetes::ServiceTarget;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use weir_balancer::EndpointSpec;

/// A source of endpoints and the name they go by (in metrics, errors and `Host`).
#[derive(Debug)]
pub struct Endpoints {
    pub(crate) name: String,
    pub(crate) authority: Option<String>,
    pub(crate) updates: watch::Receiver<Vec<EndpointSpec>>,
}

impl Endpoints {
    /// A fixed list of ready endpoints.
    pub fn fixed(name: impl Into<String>, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Endpoints::specs(name, addrs.into_iter().map(EndpointSpec::ready).collect())
    }

    /// A fixed list of endpoints as given (readiness, zones, weights, readiness times).
    pub fn specs(name: impl Into<String>, specs: Vec<EndpointSpec>) -> Self {
        let (tx, updates) = watch::channel(specs);
        // The list never changes: the sender may go.
        drop(tx);
        Endpoints {
            name: name.into(),
            authority: None,
            updates,
        }
    }

    /// A list the caller changes through the returned sender.
    pub fn channel(
        name: impl Into<String>,
        initial: Vec<EndpointSpec>,
    ) -> (Self, watch::Sender<Vec<EndpointSpec>>) {
        let (tx, updates) = watch::channel(initial);
        let endpoints = Endpoints {
            name: name.into(),
            authority: None,
            updates,
        };
        (endpoints, tx)
    }

    /// The endpoints of a Kubernetes Service port, from its EndpointSlices, with each Pod's
    /// readiness time as its slow-start age; changes are applied after `debounce` of quiet
    /// (at most 4 x `debounce` after the first). Watches until every client of it is gone.
    /// Needs a tokio runtime; RBAC: get/list/watch `services`, `endpointslices` and `pods` in
    /// the namespace (without `pods`, slow start counts from when an endpoint is first seen).
    pub fn kubernetes(client: kube::Client, target: ServiceTarget, debounce: Duration) -> Self {
        let (tx, updates) = watch::channel(Vec::new());
        let name = target.to_string();
        let authority = Some(target.authority());
        tokio::spawn(kubernetes::watch(client, target, debounce, tx));
        Endpoints {
            name,
            authority,
            updates,
        }
    }

    /// Calls go to `Host: authority` (by default the Service's `name.namespace.svc:port` for
    /// a Kubernetes source, else the endpoint's address).
    pub fn with_authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Resolves once the source has published endpoints (a Kubernetes source: its first
    /// full sync; the others at once), or after `within`; whether it did.
    pub async fn ready(&mut self, within: Duration) -> bool {
        let first = async {
            loop {
                if !self.updates.borrow_and_update().is_empty() {
                    return true;
                }
                if self.updates.changed().await.is_err() {
                    return !self.updates.borrow().is_empty();
                }
            }
        };
        tokio::time::timeout(within, first).await.unwrap_or(false)
    }
}
