//! Gossip over UDP, authenticated: every datagram carries an HMAC-SHA256 of its chitchat
//! message under the fleet's shared key, and one without a valid tag is dropped unread, so
//! nothing outside the fleet can join it or report on (eject) its endpoints. Messages are
//! not encrypted: they hold endpoint addresses and failure counts, not secrets.
//!
//! Replays cannot roll state back: chitchat keeps, per node, only values with a higher
//! version than it has; a replayed bulletin is older than the sender's later ones, and the
//! fleet keeps the later of two reports (and ignores bulletins older than a few seconds).
//!
//! The same socket carries [`bulletin`](super::bulletin)s: verified like gossip, they go to
//! the fleet task's inbox instead of chitchat, and the fleet task sends its own through a
//! [`Postbox`].
//!
//! Must not: hold state beyond the socket and the byte counters.

use super::bulletin::{self, Bulletin};
use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use ring::hmac;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The largest datagram payload UDP carries (what chitchat sizes its messages to).
const MAX_DATAGRAM: usize = 65_507;

/// Bytes of the tag each datagram ends with.
const TAG_LEN: usize = 32;

/// What the transport counts, for metrics.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Datagrams dropped: a missing or wrong tag, or neither a chitchat message nor a
    /// bulletin.
    pub rejected: AtomicU64,
    pub bulletins_sent: AtomicU64,
    pub bulletins_received: AtomicU64,
}

/// UDP with an HMAC-SHA256 tag on every datagram.
pub struct AuthenticatedUdp {
    key: hmac::Key,
    traffic: Arc<Traffic>,
    /// The socket once open, shared with the [`Postbox`].
    socket: Arc<OnceLock<Arc<UdpSocket>>>,
    /// Where received bulletins go.
    inbox: mpsc::Sender<Bulletin>,
}

impl AuthenticatedUdp {
    pub fn new(secret: &[u8], traffic: Arc<Traffic>, inbox: mpsc::Sender<Bulletin>) -> Self {
        AuthenticatedUdp {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            traffic,
            socket: Arc::default(),
            inbox,
        }
    }

    /// Sends bulletins through the socket once chitchat has opened it.
    pub fn postbox(&self) -> Postbox {
        Postbox {
            socket: Arc::clone(&self.socket),
            key: self.key.clone(),
            traffic: Arc::clone(&self.traffic),
        }
    }
}

#[async_trait]
impl Transport for AuthenticatedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = Arc::new(UdpSocket::bind(listen_addr).await?);
        // The first socket opened is the one bulletins go out on (chitchat opens one).
        let _ = self.socket.set(Arc::clone(&socket));
        Ok(Box::new(AuthenticatedSocket {
            socket,
            key: self.key.clone(),
            traffic: Arc::clone(&self.traffic),
            inbox: self.inbox.clone(),
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            recv_buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

/// Sends bulletins, tagged like gossip, from the gossip socket.
#[derive(Clone)]
pub struct Postbox {
    socket: Arc<OnceLock<Arc<UdpSocket>>>,
    key: hmac::Key,
    traffic: Arc<Traffic>,
}

impl Postbox {
    /// Sends one bulletin body, tagged once, to each of `peers`, without waiting for room in
    /// the socket's buffer: a bulletin that cannot go now is left to gossip.
    pub fn send(&self, peers: &[SocketAddr], body: &[u8]) {
        let Some(socket) = self.socket.get() else {
            return;
        };
        let mut datagram = Vec::with_capacity(body.len() + TAG_LEN);
        datagram.extend_from_slice(body);
        datagram.extend_from_slice(hmac::sign(&self.key, body).as_ref());
        for to in peers {
            match socket.try_send_to(&datagram, *to) {
                Ok(sent) => {
                    self.traffic
                        .bytes_sent
                        .fetch_add(sent as u64, Ordering::Relaxed);
                    self.traffic.bulletins_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, %to, "bulletin not sent; gossip carries it")
                }
            }
        }
    }
}

struct AuthenticatedSocket {
    socket: Arc<UdpSocket>,
    key: hmac::Key,
    traffic: Arc<Traffic>,
    inbox: mpsc::Sender<Bulletin>,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
}

#[async_trait]
impl Socket for AuthenticatedSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        self.send_buf.clear();
        message.serialize(&mut self.send_buf);
        let tag = hmac::sign(&self.key, &self.send_buf);
        self.send_buf.extend_from_slice(tag.as_ref());
        // A peer that is down or unreachable is the failure detector's business: a send
        // error is not the transport breaking.
        match self.socket.send_to(&self.send_buf, to).await {
            Ok(sent) => {
                self.traffic
                    .bytes_sent
                    .fetch_add(sent as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, %to, bytes = self.send_buf.len(), "gossip send failed")
            }
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.recv_buf).await {
                Ok(received) => received,
                // ICMP errors of earlier sends surface here; the socket still works.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                // Anything else: logged, and the socket tried again shortly (an error here
                // would stop gossip for good).
                Err(e) => {
                    tracing::warn!(error = %e, "gossip receive failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.traffic
                .bytes_received
                .fetch_add(len as u64, Ordering::Relaxed);
            let datagram = &self.recv_buf[..len];
            let Some(split) = len.checked_sub(TAG_LEN) else {
                self.traffic.rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (body, tag) = datagram.split_at(split);
            if hmac::verify(&self.key, body, tag).is_err() {
                self.traffic.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "gossip datagram without a valid tag dropped");
                continue;
            }
            if body.starts_with(bulletin::PREFIX) {
                match bulletin::decode(body) {
                    // A full inbox (the fleet task behind) drops it: gossip carries it too.
                    Some(b) => {
                        if self.inbox.try_send(b).is_ok() {
                            self.traffic
                                .bulletins_received
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        self.traffic.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%from, "gossip datagram is not a bulletin");
                    }
                }
                continue;
            }
            let mut reader = body;
            match ChitchatMessage::deserialize(&mut reader) {
                Ok(message) => return Ok((from, message)),
                Err(e) => {
                    self.traffic.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, %from, "gossip datagram is not a message");
                }
            }
        }
    }
}
