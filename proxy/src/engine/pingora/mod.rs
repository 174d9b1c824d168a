//! Pingora's proxy as an engine: weir's `ProxyHttp` ([`proxy_http`]) and the HTTP/2 streams
//! weir's own server hands to Pingora as sessions of its own ([`h2_session`]), and the
//! HTTP/1 client stream Pingora reads one checked request from ([`one_request`]).
//!
//! Every reliance on Pingora internals is here, and Pingora is pinned to the exact version
//! they were written against (Cargo.toml): the custom server session trait, which is
//! `#[doc(hidden)]` in Pingora 0.9 ([`h2_session`]), and the `Debug` output of
//! `HttpPersistentSettings`, the one place Pingora shows the pipelined bytes it holds
//! ([`holds_pipelined_bytes`]).
//!
//! Must not: decide anything a phase of the request core decides.

use pingora::apps::HttpPersistentSettings;

pub(crate) mod h2_session;
pub(crate) mod one_request;
pub mod proxy_http;

/// Whether Pingora handed a connection back with bytes of the next request it had already
/// read. Pingora keeps them inside the settings with no accessor, only for the next session
/// it serves; its `Debug` output is the one place they show. Anything but an explicit `None`
/// counts as bytes held, so a change in that output sends requests to Pingora (slower),
/// never loses them.
pub(crate) fn holds_pipelined_bytes(settings: &HttpPersistentSettings) -> bool {
    !format!("{settings:?}").contains("pipelined_prefix: None")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use pingora::protocols::http::ServerSession;
    use pingora::protocols::Stream;

    /// `holds_pipelined_bytes` reads Pingora's `Debug` output; if that output changes, this
    /// fails instead of pipelined requests going to Pingora without anyone noticing.
    #[tokio::test]
    async fn pipelined_bytes_held_by_pingora_are_seen() -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (accepted, _) = listener.accept().await?;
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(accepted));
        let session = ServerSession::new_http1(stream);
        let mut settings = HttpPersistentSettings::for_session(&session);
        assert!(!holds_pipelined_bytes(&settings));
        settings.set_pipelined_prefix(BytesMut::from(&b"GET /next HTTP/1.1\r\n"[..]));
        assert!(holds_pipelined_bytes(&settings));
        Ok(())
    }
}
