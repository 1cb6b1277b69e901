//! The body of a handler's response as relayed to the client.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use elsinore_supervisor::InFlight;
use hyper::body::{Body, Frame, SizeHint};

use crate::access::Finish;
use crate::client::PooledBody;

/// A handler's streamed response body. It holds the handler's in-flight
/// guard, so a handler being replaced or removed is stopped only after the
/// last byte of its last response has been sent (or the client left).
/// It also counts the bytes sent and writes the access-log line when it
/// is dropped, which is when the response is complete.
#[derive(Debug)]
pub struct HandlerBody {
    inner: PooledBody,
    _in_flight: InFlight,
    access: Option<Box<Finish>>,
}

impl HandlerBody {
    pub(crate) fn new(inner: PooledBody, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
            access: None,
        }
    }

    pub(crate) fn attach(&mut self, access: Box<Finish>) {
        self.access = Some(access);
    }
}

impl Drop for HandlerBody {
    fn drop(&mut self) {
        if let Some(access) = self.access.take() {
            access.done();
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
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(access)) = (&polled, &mut self.access) {
            if let Some(data) = frame.data_ref() {
                access.sent(data.len());
            }
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
