//! TLS from Ingress `spec.tls` and `kubernetes.io/tls` Secrets (pure: no I/O).
//!
//! Owns: which hosts are served over TLS with which Secret, and whether a Secret's
//! certificate can be served (PEM chain and key parse, the key belongs to the certificate,
//! the certificate has not expired). Must not: hold sockets or decide which certificate a
//! connection gets (the proxy's resolver does, from what this module produced).

use crate::snapshot::HostMatch;
pub use crate::snapshot::{CertificateSnapshot, ServedCertificate, TlsHost};
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// The Secret type Ingress TLS uses.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// The hosts one Ingress lists under `spec.tls`, with their Secret names; an Ingress whose
/// `spec.tls` has a bad host or no `secretName` is invalid (as a bad rule would be).
pub fn ingress_tls_hosts(
    tls: &[k8s_openapi::api::networking::v1::IngressTLS],
) -> Result<Vec<(HostMatch, String)>, String> {
    let mut hosts = Vec::new();
    for entry in tls {
        let secret = entry
            .secret_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or("spec.tls entry needs a secretName")?;
        for host in entry.hosts.as_deref().unwrap_or_default() {
            let matcher =
                crate::validate::parse_host(Some(host)).map_err(|e| format!("spec.tls: {e}"))?;
            if matcher == HostMatch::Any {
                return Err("spec.tls: empty host".to_string());
            }
            hosts.push((matcher, secret.to_string()));
        }
    }
    Ok(hosts)
}

/// Whether a TLS host entry covers a rule's host: the same name, or a wildcard covering an
/// exact name one label below it.
pub fn covers(tls_host: &HostMatch, rule_host: &HostMatch) -> bool {
    match (tls_host, rule_host) {
        (a, b) if a == b => true,
        (HostMatch::Wildcard(suffix), HostMatch::Exact(name)) => name
            .split_once('.')
            .is_some_and(|(_, parent)| parent == suffix),
        (HostMatch::Wildcard(suffix), HostMatch::Suffix(rule)) => rule == suffix,
        _ => false,
    }
}

/// Checks a Secret and loads its certificate. `now_unix` (seconds) rejects an expired
/// certificate; the reason names what is wrong.
pub fn load_secret(secret: &Secret, now_unix: i64) -> Result<CertificateSnapshot, String> {
    let object = crate::objects::meta_ref("Secret", &secret.metadata);
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(format!(
            "type is {:?}, not {TLS_SECRET_TYPE}",
            secret.type_.as_deref().unwrap_or("")
        ));
    }
    let field = |name: &str| -> Result<Vec<u8>, String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(name))
                    .map(|s| s.as_bytes().to_vec())
            })
            .filter(|b| !b.is_empty())
            .ok_or_else(|| format!("{name} is missing or empty"))
    };
    let (chain_pem, key_pem) = (field("tls.crt")?, field("tls.key")?);
    let (certified, not_after_unix, dns_names) = load_pem(&chain_pem, &key_pem, now_unix)?;
    Ok(CertificateSnapshot {
        secret: object,
        not_after_unix,
        dns_names,
        certified: ServedCertificate(certified),
    })
}

/// A PEM certificate chain (leaf first) and private key as a servable key, with the leaf's
/// expiry and DNS names. Used for Secrets and for certificates weir makes itself.
pub fn load_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
    now_unix: i64,
) -> Result<(Arc<CertifiedKey>, i64, Vec<String>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM certificates: {e}"))?;
    let leaf = chain.first().ok_or("tls.crt holds no certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("tls.crt: certificate does not parse: {e}"))?;
    let validity = parsed.validity();
    let not_after = validity.not_after.timestamp();
    if not_after < now_unix {
        return Err(format!(
            "the certificate expired at {} (Unix {not_after})",
            validity.not_after
        ));
    }
    let dns_names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "tls.key does not belong to the certificate in tls.crt".to_string()
        }
        other => format!("tls.key cannot be used: {other}"),
    })?;
    Ok((Arc::new(certified), not_after, dns_names))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;
    use weir_testsupport::tls::TestCa;

    /// 2026-11-22 in Unix seconds: the certificates below are valid for years after.
    const NOW: i64 = 1_795_305_600;

    fn secret(type_: &str, crt: &str, key: &str) -> Secret {
        let mut data = BTreeMap::new();
        data.insert("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec()));
        data.insert("tls.key".to_string(), ByteString(key.as_bytes().to_vec()));
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("s".into()),
                namespace: Some("demo".into()),
                ..Default::default()
            },
            type_: Some(type_.to_string()),
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_secret_loads_with_its_names_and_expiry() {
        let ca = TestCa::new("ca").expect("ca");
        let leaf = ca
            .leaf(&["shop.example.com", "*.shop.example.com"])
            .expect("leaf");
        let loaded =
            load_secret(&secret(TLS_SECRET_TYPE, &leaf.cert, &leaf.key), NOW).expect("loads");
        assert_eq!(loaded.dns_names, ["shop.example.com", "*.shop.example.com"]);
        assert!(loaded.not_after_unix > NOW);
    }

    #[test]
    fn bad_secrets_are_refused_with_the_reason() {
        let ca = TestCa::new("ca").expect("ca");
        let (a, b) = (
            ca.leaf(&["a.example.com"]).expect("leaf"),
            ca.leaf(&["b.example.com"]).expect("leaf"),
        );
        let expired = ca.expired_leaf(&["old.example.com"]).expect("leaf");
        for (s, why) in [
            (secret("Opaque", &a.cert, &a.key), "not kubernetes.io/tls"),
            (secret(TLS_SECRET_TYPE, &a.cert, &b.key), "does not belong"),
            (secret(TLS_SECRET_TYPE, "garbage", &a.key), "tls.crt"),
            (secret(TLS_SECRET_TYPE, &a.cert, "garbage"), "tls.key"),
            (secret(TLS_SECRET_TYPE, "", &a.key), "tls.crt is missing"),
            (
                secret(TLS_SECRET_TYPE, &expired.cert, &expired.key),
                "expired",
            ),
        ] {
            let err = load_secret(&s, NOW).expect_err(why);
            assert!(err.contains(why), "{err:?} should say {why:?}");
        }
        // Expiry is only checked against a given time.
        assert!(load_secret(&secret(TLS_SECRET_TYPE, &expired.cert, &expired.key), 0).is_ok());
    }

    #[test]
    fn wildcards_cover_one_label() {
        let wild = HostMatch::Wildcard("example.com".into());
        assert!(covers(&wild, &HostMatch::Exact("a.example.com".into())));
        assert!(!covers(&wild, &HostMatch::Exact("a.b.example.com".into())));
        assert!(!covers(&wild, &HostMatch::Exact("example.com".into())));
        assert!(covers(&wild, &wild));
        let exact = HostMatch::Exact("a.example.com".into());
        assert!(covers(&exact, &exact));
        assert!(!covers(&exact, &HostMatch::Exact("b.example.com".into())));
    }
}
