//! [`CertificateStore`]: which certificate a TLS connection gets, by SNI.
//!
//! Owns the served certificates as one atomically swapped index (exact names, wildcards,
//! the default), rebuilt from each [`RoutingSnapshot`] and read by rustls during every
//! handshake without a lock. Must not: validate Secrets (translation did) or do I/O.

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;
use weir_discovery::snapshot::HostMatch;
use weir_discovery::RoutingSnapshot;

#[derive(Debug, Default)]
struct CertificateIndex {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

/// SNI -> certificate, swapped whole on every configuration change.
#[derive(Debug)]
pub struct CertificateStore {
    index: ArcSwap<CertificateIndex>,
    /// For unknown or absent SNI and hosts whose Secret is unusable.
    default: ArcSwap<CertifiedKey>,
}

impl CertificateStore {
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        CertificateStore {
            index: ArcSwap::from_pointee(CertificateIndex::default()),
            default: ArcSwap::new(default),
        }
    }

    /// Serves the certificates of `snapshot` from now on: new handshakes see them, ones
    /// in progress finish with what they had.
    pub fn apply(&self, snapshot: &RoutingSnapshot) {
        let mut index = CertificateIndex::default();
        for tls in &snapshot.tls_hosts {
            let key = (tls.secret.namespace.clone(), tls.secret.name.clone());
            let Some(cert) = snapshot.certificates.get(&key) else {
                continue; // unusable Secret: rejected in the snapshot, default served
            };
            let served = Arc::clone(&cert.certified.0);
            match &tls.host {
                HostMatch::Exact(name) => {
                    index.exact.entry(name.clone()).or_insert(served);
                }
                // A certificate for `*.example.com` covers one label, whatever the route's
                // wildcard matches.
                HostMatch::Wildcard(suffix) | HostMatch::Suffix(suffix) => {
                    index.wildcard.entry(suffix.clone()).or_insert(served);
                }
                HostMatch::Any => {}
            }
        }
        self.index.store(Arc::new(index));
    }

    /// Replaces the default certificate (`--default-certificate` once its Secret loads).
    pub fn set_default(&self, default: Arc<CertifiedKey>) {
        self.default.store(default);
    }

    /// The certificate for `server_name` (case-insensitive): an exact entry, else a
    /// wildcard one label up, else the default.
    pub fn lookup(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            let index = self.index.load();
            if let Some(cert) = index.exact.get(&name) {
                return Arc::clone(cert);
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(cert) = index.wildcard.get(parent) {
                    return Arc::clone(cert);
                }
            }
        }
        self.default.load_full()
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(hello.server_name()))
    }
}

/// A self-signed certificate for when no `--default-certificate` is given (what clients
/// without SNI, or for unknown hosts, get — as ingress-nginx's "fake certificate").
pub fn self_signed_default() -> Result<Arc<CertifiedKey>, String> {
    let mut params = rcgen::CertificateParams::new(vec!["weir.invalid".to_string()])
        .map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "weir default certificate");
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let (certified, ..) =
        weir_discovery::tls::load_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), 0)?;
    Ok(certified)
}
