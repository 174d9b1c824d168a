//! The echo upstream: answers every request with JSON describing it:
//! `{"service", "pod", "method", "path", "host", "headers", "proto", "connection"}`.
//!
//! `path` is the request target as received (path and query), `headers` maps each
//! lowercase header name to its values joined by ", ", `proto` is `HTTP/1.1` or `HTTP/2.0`,
//! and `connection` numbers the TCP connection the request came on (1 for the first one this
//! process accepted), so tests can see whether a proxy reuses upstream connections.
//! Query parameters `status=NNN` and `delay_ms=N` make it answer with that status or after
//! that delay. A WebSocket upgrade is accepted and every message echoed back as
//! `<pod>: <text>`. Speaks HTTP/1.1 and h2c on one port; with a TLS configuration, HTTPS (h2 or
//! http/1.1 by ALPN) instead, and the answer's `tls` is true and `sni` the server name the
//! client sent.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Who this echo server says it is.
#[derive(Debug, Clone)]
pub struct EchoIdentity {
    pub service: String,
    pub pod: String,
    /// Status of every answer unless the request asks for another (`?status=`).
    pub status: u16,
    /// Delay before every answer unless the request asks for another (`?delay_ms=`).
    pub delay: Duration,
    /// `Retry-After` seconds on 503 answers.
    pub retry_after: Option<u64>,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves until the listener fails. One task per connection.
pub async fn serve(listener: TcpListener, identity: EchoIdentity) -> std::io::Result<()> {
    let identity = Arc::new(identity);
    let connections = Arc::new(AtomicU64::new(0));
    let acceptor = identity.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let connection = connections.fetch_add(1, Ordering::Relaxed) + 1;
        let identity = Arc::clone(&identity);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, identity, connection, None).await,
                Some(acceptor) => {
                    // A failed handshake (e.g. a client that rejects the certificate) just
                    // ends the connection.
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let sni = tls.get_ref().1.server_name().map(str::to_string);
                        serve_connection(tls, identity, connection, Some(sni)).await;
                    }
                }
            }
        });
    }
}

/// Serves one connection; `tls` is `Some(server name sent)` for an HTTPS connection.
async fn serve_connection<S>(
    stream: S,
    identity: Arc<EchoIdentity>,
    connection: u64,
    tls: Option<Option<String>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tls = Arc::new(tls);
    let service = service_fn(move |req| {
        let (identity, tls) = (Arc::clone(&identity), Arc::clone(&tls));
        async move { Ok::<_, Infallible>(answer(req, &identity, connection, &tls).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}

/// The `Sec-WebSocket-Key` of a WebSocket upgrade request.
fn websocket_key(req: &Request<Incoming>) -> Option<String> {
    let upgrade = req.headers().get(http::header::UPGRADE)?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    let key = req.headers().get("sec-websocket-key")?.to_str().ok()?;
    Some(key.to_string())
}

/// Accepts a WebSocket (101) and echoes every text or binary message back prefixed with
/// `<pod>: `, until the client closes.
fn websocket(
    mut req: Request<Incoming>,
    key: &str,
    identity: &EchoIdentity,
) -> Response<Full<Bytes>> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::{Message, Role};
    let pod = identity.pod.clone();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = ws.next().await {
            let reply = match message {
                Message::Text(text) => Message::text(format!("{pod}: {text}")),
                Message::Binary(data) => Message::binary(data),
                Message::Close(_) => break,
                _ => continue, // pings are answered by tungstenite
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(accept) = http::HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", accept);
    }
    resp
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn answer(
    req: Request<Incoming>,
    identity: &EchoIdentity,
    connection: u64,
    tls: &Option<Option<String>>,
) -> Response<Full<Bytes>> {
    if let Some(key) = websocket_key(&req) {
        return websocket(req, &key, identity);
    }
    let (parts, body) = req.into_parts();
    // Drain the request body so the connection stays usable.
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let query = parts.uri.query();
    let delay = query_param(query, "delay_ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(identity.delay, |ms| Duration::from_millis(ms.min(60_000)));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = query_param(query, "status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .or_else(|| StatusCode::from_u16(identity.status).ok())
        .unwrap_or(StatusCode::OK);

    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<non-utf8>"))
            .collect();
        headers.insert(name.as_str().to_string(), Value::String(values.join(", ")));
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let body = json!({
        "service": identity.service,
        "pod": identity.pod,
        "method": parts.method.as_str(),
        "path": path,
        "host": host,
        "headers": headers,
        "proto": format!("{:?}", parts.version),
        "connection": connection,
        "body_bytes": body_bytes,
        "tls": tls.is_some(),
        "sni": tls.as_ref().and_then(|sni| sni.clone()),
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let (StatusCode::SERVICE_UNAVAILABLE, Some(seconds)) = (status, identity.retry_after) {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    resp
}
