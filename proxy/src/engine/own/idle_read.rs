//! [`read_idle`]: the read of a connection that waits for its next request, holding no buffer
//! while it waits.
//!
//! Most of an ingress's connections are idle keep-alive connections, so what one holds
//! between requests decides the memory of the whole process. A read needs a buffer only
//! from the moment bytes arrive: this one reads into a scratch buffer of the worker thread,
//! lent for the duration of one poll, and copies what arrived into a buffer of the
//! connection's own only then (as nginx frees a connection's header buffers between
//! requests and takes them again when bytes arrive).
//!
//! Must not: hold the scratch buffer across a poll (another connection of the thread uses it
//! next), or read when the caller's buffer still holds unread bytes.

use bytes::BytesMut;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// The scratch buffer's size: a request head of usual size, or one TLS record's plaintext,
/// in one read.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Reads the next bytes of `stream` into `buf`, which must hold no unread bytes. While none
/// arrives `buf` is released (its capacity freed); once bytes arrive it gets room for at
/// least `capacity` bytes and holds them. Returns how many arrived (0: the peer closed).
pub(crate) async fn read_idle<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut BytesMut,
    capacity: usize,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_idle(Pin::new(&mut *stream), cx, buf, capacity)).await
}

/// [`read_idle`] as a poll, for a connection loop that polls its socket itself.
pub(crate) fn poll_read_idle<S: AsyncRead + ?Sized>(
    stream: Pin<&mut S>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    capacity: usize,
) -> Poll<io::Result<usize>> {
    debug_assert!(buf.is_empty());
    with_scratch(|scratch| {
        let mut read = ReadBuf::new(scratch);
        match stream.poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let arrived = read.filled();
                buf.reserve(capacity.max(arrived.len()));
                buf.extend_from_slice(arrived);
                Poll::Ready(Ok(arrived.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if buf.capacity() != 0 {
                    *buf = BytesMut::new();
                }
                Poll::Pending
            }
        }
    })
}

/// Lends the thread's scratch buffer to `read` for one call.
fn with_scratch<R>(read: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH_BUF.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => read(&mut scratch),
        // Lent already: only if a read re-entered this one, which no stream does; a buffer
        // of its own then, rather than a panic.
        Err(_) => read(&mut vec![0; SCRATCH]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWrite;

    /// While nothing arrives the connection's buffer is freed; bytes that arrive are all
    /// in it, with room for a head; a closed peer reads as 0.
    #[test]
    fn an_idle_read_holds_no_buffer_until_bytes_arrive() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut buf = BytesMut::with_capacity(4096);
        let waiting = poll_read_idle(Pin::new(&mut server), &mut cx, &mut buf, 4096);
        assert!(waiting.is_pending());
        assert_eq!(buf.capacity(), 0, "an idle connection's buffer is released");

        let head = b"GET / HTTP/1.1\r\n";
        let wrote = Pin::new(&mut client).poll_write(&mut cx, head);
        assert!(matches!(wrote, Poll::Ready(Ok(16))));
        let read = poll_read_idle(Pin::new(&mut server), &mut cx, &mut buf, 4096);
        assert!(matches!(read, Poll::Ready(Ok(16))), "{read:?}");
        assert_eq!(&buf[..], head);
        assert!(buf.capacity() >= 4096);

        drop(client);
        buf.clear();
        let closed = poll_read_idle(Pin::new(&mut server), &mut cx, &mut buf, 4096);
        assert!(matches!(closed, Poll::Ready(Ok(0))), "{closed:?}");
    }
}
