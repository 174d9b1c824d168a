//! Requests weir sends itself on a client request's behalf: the external auth check
//! (`auth-url`) and mirror copies (`mirror-target`). Owns their connections (Pingora's
//! connector: pooled per address, TLS for `https`), the resolution of their hosts, and the
//! bound on what is read of an answer.
//!
//! Must not: decide what an answer means (the request core does), or touch the client's
//! connection.

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most of an answer's body read (to reuse its connection); beyond it the connection is
/// closed instead.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// How long an idle subrequest connection stays pooled.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a resolved host name is used before it is looked up again.
const RESOLVED_FOR: Duration = Duration::from_secs(10);

/// Where a subrequest goes: `http(s)://host[:port]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub tls: bool,
    /// The host as the URL names it (SNI and certificate name for `https`).
    pub host: String,
    pub port: u16,
}

impl Destination {
    /// The scheme and authority of `uri`, or why it cannot be one.
    pub fn of(uri: &http::Uri) -> Result<Destination, &'static str> {
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("not an http or https URL"),
        };
        let host = uri.host().ok_or("no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Destination {
            tls,
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        })
    }
}

/// The timeouts of one subrequest.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub connect: Duration,
    /// Each read of the answer, and the whole exchange once connected.
    pub read: Duration,
}

/// The sender of subrequests, shared by every request of the process.
pub struct Subrequests {
    connector: Connector,
    resolved: Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>,
}

impl std::fmt::Debug for Subrequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subrequests")
    }
}

impl Default for Subrequests {
    fn default() -> Self {
        Subrequests {
            connector: Connector::new(None),
            resolved: Mutex::new(HashMap::new()),
        }
    }
}

impl Subrequests {
    /// Sends `head` (and `body`, when given) to `to` and returns the answer's head; its body
    /// is read (up to [`MAX_DRAINED_BODY`]) and discarded. `Err` when there is no answer in
    /// time.
    pub async fn send(
        &self,
        to: &Destination,
        head: RequestHeader,
        body: Option<Bytes>,
        deadlines: Deadlines,
    ) -> Result<ResponseHeader> {
        let addr = self.resolve(to).await?;
        let mut peer = HttpPeer::new(addr, to.tls, to.host.clone());
        peer.options.connection_timeout = Some(deadlines.connect);
        peer.options.read_timeout = Some(deadlines.read);
        peer.options.write_timeout = Some(deadlines.read);
        // A pooled connection the other side closed meanwhile fails before any answer: the
        // request goes again, on another connection (a new one once the pool is spent).
        let mut pooled_failures = 0;
        loop {
            let (session, reused) = self.connector.get_http_session(&peer).await?;
            let exchange = exchange(session, head.clone(), body.clone(), deadlines.read);
            match tokio::time::timeout(deadlines.connect + deadlines.read, exchange).await {
                Ok(Ok((answer, session))) => {
                    if let Some(session) = session {
                        self.connector
                            .release_http_session(session, &peer, Some(IDLE_TIMEOUT))
                            .await;
                    }
                    return Ok(answer);
                }
                Ok(Err(e)) if reused && pooled_failures < 4 => {
                    tracing::debug!(error = %e, "pooled subrequest connection failed; trying another");
                    pooled_failures += 1;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Error::e_explain(
                        ErrorType::ReadTimedout,
                        "subrequest not answered in time",
                    )
                }
            }
        }
    }

    /// The address of `to`: an IP literal as it is, a name from the cache or the resolver.
    async fn resolve(&self, to: &Destination) -> Result<SocketAddr> {
        if let Ok(ip) = to.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, to.port));
        }
        let key = (to.host.clone(), to.port);
        let cached = self
            .resolved
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).copied())
            .filter(|(_, at)| at.elapsed() < RESOLVED_FOR);
        if let Some((addr, _)) = cached {
            return Ok(addr);
        }
        let addr = tokio::net::lookup_host((to.host.as_str(), to.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("subrequest host {:?} does not resolve", to.host),
                )
            })?;
        if let Ok(mut cache) = self.resolved.lock() {
            // Bounded: names come from configuration, but `$host` may vary per request.
            if cache.len() >= 1024 {
                cache.clear();
            }
            cache.insert(key, (addr, Instant::now()));
        }
        Ok(addr)
    }
}

/// One request and its answer on `session`; the session back when it can be reused.
async fn exchange(
    mut session: HttpSession,
    head: RequestHeader,
    body: Option<Bytes>,
    read_timeout: Duration,
) -> Result<(ResponseHeader, Option<HttpSession>)> {
    // The connector leaves a session's timeouts to its user (as Pingora's proxy sets them).
    session.set_read_timeout(Some(read_timeout));
    session.set_write_timeout(Some(read_timeout));
    session.write_request_header(Box::new(head)).await?;
    if let Some(body) = body {
        session.write_request_body(body, true).await?;
    }
    session.finish_request_body().await?;
    session.read_response_header().await?;
    let answer = session
        .response_header()
        .cloned()
        .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response head"))?;
    let mut drained = 0usize;
    while drained <= MAX_DRAINED_BODY {
        match session.read_response_body().await {
            Ok(Some(chunk)) => drained += chunk.len(),
            Ok(None) => break,
            // The head is what counts; a broken body only costs the connection.
            Err(_) => return Ok((answer, None)),
        }
    }
    let reusable = drained <= MAX_DRAINED_BODY && session.response_done();
    Ok((answer, reusable.then_some(session)))
}
