//! The body of a response: hyper's, holding the call's place in its endpoint's in-flight
//! count until the body ends or is dropped, so that least request and bounded load see a
//! streaming response as the load it is.
//!
//! Must not: buffer or change the bytes.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use weir_balancer::InFlightGuard;

/// A response body from [`WeirClient`](crate::WeirClient).
#[derive(Debug)]
pub struct ResponseBody {
    inner: Incoming,
    in_flight: Option<InFlightGuard>,
}

impl ResponseBody {
    pub(crate) fn new(inner: Incoming, in_flight: InFlightGuard) -> Self {
        ResponseBody {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // The call is over for the endpoint.
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
