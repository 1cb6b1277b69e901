//! The body of a handler's response as relayed to the client.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use elsinore_supervisor::InFlight;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A handler's streamed response body. It holds the handler's in-flight
/// guard, so a handler being replaced or removed is stopped only after the
/// last byte of its last response has been sent (or the client left).
#[derive(Debug)]
pub struct HandlerBody {
    inner: Incoming,
    _in_flight: InFlight,
}

impl HandlerBody {
    pub(crate) fn new(inner: Incoming, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl Body for HandlerBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Frames pass through untouched: no buffering, so server-sent
        // events reach the client as the handler writes them.
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
