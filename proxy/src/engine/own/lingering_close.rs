//! [`lingering_close`]: how weir ends a client connection it chose to end while the client
//! may still be sending.
//!
//! Closing a socket with unread input makes the kernel reset the connection, and a reset can
//! make the client lose the answer it had not read yet (the 400 for a refused head, the
//! GOAWAY of an HTTP/2 connection error). So weir first ends its side (FIN, or TLS
//! `close_notify`), then reads and discards what the client still sends, for at most
//! [`LINGER`] or until the client closes.
//!
//! Must not: wait longer than [`LINGER`], or read more than a bounded amount.

use crate::request::timeouts::LINGER;
use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most bytes read and discarded while lingering.
const MAX_DISCARDED: usize = 256 * 1024;

/// Ends weir's side of `stream`, then reads and discards until the client closes, for at
/// most [`LINGER`].
pub(crate) async fn lingering_close(stream: &mut Stream) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = stream.shutdown().await;
        let mut sink = vec![0u8; 16 * 1024];
        let mut discarded = 0;
        while discarded < MAX_DISCARDED {
            match stream.read(&mut sink).await {
                Ok(n) if n > 0 => discarded += n,
                _ => break,
            }
        }
    })
    .await;
}
