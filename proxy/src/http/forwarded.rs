//! Who the client is, and what weir tells the upstream about it (`X-Forwarded-For`).
//!
//! `--trusted-proxies` lists the networks whose `X-Forwarded-For` weir believes (a load
//! balancer in front of weir). From anyone else the header is a claim the client made about
//! itself, so weir replaces it with the peer address; from a trusted peer weir appends the
//! peer to the chain. The client address used for consistent hashing follows the same rule:
//! the rightmost address in the chain that is not a trusted proxy.
//!
//! Must not: allocate for the common case of an untrusted peer (one header value written
//! from a stack buffer), or do I/O.

use crate::http::request_view::visible_ascii;
use http::HeaderValue;
use std::io::Write;
use std::net::IpAddr;
pub use weir_discovery::cidr::{canonical, Cidr};

/// Fields weir sets on an upstream request (`X-Forwarded-*`, trace context), replacing any
/// of the same name the client sent; an empty value removes the client's and sends none.
pub(crate) type UpstreamHeaders = smallvec::SmallVec<[(http::HeaderName, http::HeaderValue); 5]>;

/// The client's address (the TCP peer) as an IP, when it is an inet socket; `peer` is the
/// connection's `client_addr()` on every engine.
pub(crate) fn client_ip(
    peer: Option<&pingora::protocols::l4::socket::SocketAddr>,
) -> Option<std::net::IpAddr> {
    peer.and_then(|a| a.as_inet()).map(|a| a.ip())
}

/// The `--trusted-proxies` list.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<Cidr>,
}

impl TrustedProxies {
    pub fn new(networks: Vec<Cidr>) -> Self {
        TrustedProxies { networks }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The `X-Forwarded-For` value for the upstream: the incoming chain plus the peer when
    /// the peer is trusted, else the peer alone. `incoming`: the value received, if any.
    pub fn forwarded_for(&self, peer: IpAddr, incoming: Option<&[u8]>) -> HeaderValue {
        let peer = canonical(peer);
        let prior = incoming
            .filter(|_| self.contains(peer))
            .and_then(visible_ascii)
            .map(str::trim)
            .filter(|v| !v.is_empty());
        match prior {
            Some(prior) => HeaderValue::from_str(&format!("{prior}, {peer}"))
                .unwrap_or_else(|_| ip_header_value(peer)),
            None => ip_header_value(peer),
        }
    }

    /// The client's address: walking the chain from the right, the first address that is
    /// not a trusted proxy (the peer itself when it is untrusted or sent no chain).
    pub fn client_ip(&self, peer: IpAddr, incoming: Option<&[u8]>) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(client) {
            return client;
        }
        let Some(chain) = incoming.and_then(visible_ascii) else {
            return client;
        };
        for hop in chain.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.contains(client) {
                        break;
                    }
                }
                // Garbage in the chain: stop at the last address that was believable.
                Err(_) => break,
            }
        }
        client
    }
}

/// An address as a header value, formatted on the stack.
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    with_ip_text(ip, |text| HeaderValue::from_bytes(text).ok())
        .unwrap_or_else(|| HeaderValue::from_static("unknown"))
}

/// Formats an address on the stack and hands the text to `f` (for hashing without a String).
/// IPv4, the common case, is written digit by digit: `Display` through `io::Write` cost
/// ~1,300 instructions per request (callgrind), this ~60.
pub fn with_ip_text<R>(ip: IpAddr, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; 48];
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // 48 bytes hold the longest IPv6 text (45 characters).
            write!(cursor, "{v6}").map_or(0, |_| cursor.position() as usize)
        }
    };
    f(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().expect("cidr")).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn addresses_format_as_display_does() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "100.200.255.9",
            "255.255.255.255",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            let parsed = ip(text);
            assert_eq!(
                with_ip_text(parsed, |b| b.to_vec()),
                parsed.to_string().into_bytes()
            );
            assert_eq!(ip_header_value(parsed), parsed.to_string().as_str());
        }
    }

    #[test]
    fn untrusted_peer_replaces_the_chain() {
        let t = trusted(&["10.0.0.0/8"]);
        let spoofed: &[u8] = b"1.2.3.4";
        assert_eq!(
            t.forwarded_for(ip("203.0.113.9"), Some(spoofed)),
            "203.0.113.9"
        );
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), Some(spoofed)),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().forwarded_for(ip("::1"), None),
            "::1"
        );
    }

    #[test]
    fn trusted_peer_extends_the_chain_and_names_the_client() {
        let t = trusted(&["10.0.0.0/8", "192.168.0.0/16"]);
        let chain: &[u8] = b"198.51.100.1, 203.0.113.9, 192.168.1.1";
        assert_eq!(
            t.forwarded_for(ip("10.0.0.5"), Some(chain)),
            "198.51.100.1, 203.0.113.9, 192.168.1.1, 10.0.0.5"
        );
        // Rightmost untrusted: 192.168.1.1 is a trusted hop, 203.0.113.9 is the client
        // (198.51.100.1 could have been written by that client).
        assert_eq!(t.client_ip(ip("10.0.0.5"), Some(chain)), ip("203.0.113.9"));
        assert_eq!(t.client_ip(ip("10.0.0.5"), None), ip("10.0.0.5"));
        let garbage: &[u8] = b"not-an-ip, 192.168.1.1";
        assert_eq!(
            t.client_ip(ip("10.0.0.5"), Some(garbage)),
            ip("192.168.1.1")
        );
    }
}
