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
use std::task::Poll;
use tokio::io::{AsyncRead, ReadBuf};

/// The scratch buffer's size: a request head of usual size, or one TLS record's plaintext,
/// in one read.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Reads the next bytes of `stream` into `buf`, which must be empty and is released (its
/// capacity freed) while no byte has arrived. Once bytes arrive `buf` gets room for at least
/// `capacity` bytes and holds them. Returns how many arrived (0: the peer closed).
pub(crate) async fn read_idle<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut BytesMut,
    capacity: usize,
) -> io::Result<usize> {
    debug_assert!(buf.is_empty());
    *buf = BytesMut::new();
    std::future::poll_fn(|cx| {
        with_scratch(|scratch| {
            let mut read = ReadBuf::new(scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let arrived = read.filled();
                    buf.reserve(capacity.max(arrived.len()));
                    buf.extend_from_slice(arrived);
                    Poll::Ready(Ok(arrived.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
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
