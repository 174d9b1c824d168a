//! How a [`WeirClient`](crate::WeirClient) balances and reaches its endpoints: the balancer's
//! [`PoolConfig`], retries, timeouts and the upstream protocol. Built in code, or from the
//! `weir.dev/*` service settings that weir's Ingress annotations and `BalancerPolicy` take, read
//! by the same parser, so a Service is balanced alike at the edge and in-process.
//!
//! Must not: do I/O.

use std::collections::BTreeMap;
use std::time::Duration;
use weir_balancer::PoolConfig;
use weir_discovery::snapshot::RetryOn;
use weir_discovery::{BackendProtocol, HashKey};

/// Where a call's hash key comes from when the caller gives none ([`crate::HashKey`]):
/// consistent hash needs one (else each call is hashed at random).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFrom {
    /// A request header's value.
    Header(http::HeaderName),
    /// The request's path.
    Path,
}

/// The HTTP version spoken to the endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, a pool of connections per endpoint.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c, gRPC without TLS): one connection per endpoint,
    /// calls multiplexed on it.
    Http2,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The algorithm, consistent hash and bounded load, slow start, outlier ejection, zone
    /// awareness and the latency health factor: weir's pools, as the proxy's.
    pub pool: PoolConfig,
    /// This process's zone (zone-aware routing: `pool.zone_aware`).
    pub zone: Option<String>,
    /// The hash key of calls that carry no [`crate::HashKey`].
    pub key_from: Option<KeyFrom>,
    /// Extra attempts after a failed one, each to an endpoint not tried yet.
    pub retries: u32,
    /// Which failed attempts are sent again (by default connection errors and timeouts).
    pub retry_on: RetryOn,
    pub connect_timeout: Duration,
    /// How long one attempt may take until the response head.
    pub attempt_timeout: Duration,
    pub protocol: Protocol,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
}

impl Default for ClientConfig {
    /// The proxy's defaults: least request, 1 retry on connection errors and timeouts, 2 s
    /// to connect, 60 s to the response head.
    fn default() -> Self {
        let policy = weir_discovery::RoutePolicy::default();
        ClientConfig {
            pool: policy.pool,
            zone: None,
            key_from: None,
            retries: policy.retries,
            retry_on: policy.retry_on,
            connect_timeout: policy.connect_timeout,
            attempt_timeout: policy.read_timeout,
            protocol: Protocol::Http1,
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 32,
        }
    }
}

impl ClientConfig {
    /// The configuration `settings` say: `weir.dev/*` service settings without the prefix
    /// (`load-balancer`, `hash-balance-factor`, `slow-start`, `outlier-*`, `retries`,
    /// `connect-timeout`, `read-timeout`, `backend-protocol`, ...), as a `BalancerPolicy`
    /// takes them. An unknown setting, a bad value, or one the client cannot honour is an
    /// error.
    pub fn from_settings(settings: &BTreeMap<String, String>) -> Result<Self, String> {
        let policy = weir_discovery::gateway::policy::balancer_settings(settings)?;
        let protocol =
            match policy.backend_protocol {
                BackendProtocol::Http => Protocol::Http1,
                BackendProtocol::H2c => Protocol::Http2,
                BackendProtocol::Https => return Err(
                    "backend-protocol https: weir-client speaks plaintext HTTP/1.1 and h2c only"
                        .to_string(),
                ),
            };
        // Settings of the proxy's alone have no meaning in a client: refused, not ignored.
        const PROXY_ONLY: &[&str] = &[
            "backend-tls-server-name",
            "backend-tls-verify",
            "health-check-healthy-threshold",
            "health-check-interval",
            "health-check-path",
            "health-check-timeout",
            "max-concurrency",
            "warm-up-mirror",
            "websocket-idle-timeout",
        ];
        if let Some(name) = settings.keys().find(|k| PROXY_ONLY.contains(&k.as_str())) {
            return Err(format!(
                "setting {name:?} is the proxy's; weir-client does not take it"
            ));
        }
        let key_from = match (settings.contains_key("hash-key"), policy.hash_key) {
            (false, _) => None,
            (true, HashKey::Header(name)) => Some(KeyFrom::Header(
                http::HeaderName::try_from(name.as_str())
                    .map_err(|e| format!("hash-key header {name:?}: {e}"))?,
            )),
            (true, HashKey::Path) => Some(KeyFrom::Path),
            (true, other) => {
                return Err(format!(
                    "hash-key {other:?}: weir-client hashes a header or the path (or the key the caller gives)"
                ))
            }
        };
        Ok(ClientConfig {
            key_from,
            pool: policy.pool,
            retries: policy.retries,
            retry_on: policy.retry_on,
            connect_timeout: policy.connect_timeout,
            attempt_timeout: policy.read_timeout,
            protocol,
            ..ClientConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_balancer::Algorithm;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_mean_what_the_annotations_mean() {
        let config = ClientConfig::from_settings(&settings(&[
            ("load-balancer", "consistent-hash"),
            ("hash-balance-factor", "1.25"),
            ("retries", "3"),
            ("connect-timeout", "250ms"),
            ("backend-protocol", "h2c"),
            ("hash-key", "header:x-user"),
        ]))
        .expect("valid");
        assert_eq!(config.pool.algorithm, Algorithm::ConsistentHash);
        assert_eq!(config.pool.hash_balance_factor, Some(1.25));
        assert_eq!(config.retries, 3);
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.protocol, Protocol::Http2);
        assert_eq!(
            config.key_from,
            Some(KeyFrom::Header(http::HeaderName::from_static("x-user")))
        );
    }

    #[test]
    fn what_a_client_cannot_honour_is_refused() {
        for bad in [
            &[("load-balancer", "fastest")][..],
            &[("no-such-setting", "1")],
            &[("backend-protocol", "https")],
            &[("hash-key", "cookie:session")],
            &[("health-check-path", "/healthz")],
        ] {
            assert!(
                ClientConfig::from_settings(&settings(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
