//! The body of a handler's response as relayed to the client, or of a
//! static file streamed from disk.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use elsinore_static::FileBody;
use elsinore_supervisor::InFlight;
use hyper::body::{Body, Frame, SizeHint};

use crate::access::Finish;
use crate::client::PooledBody;

/// A handler's streamed response body. It holds the handler's in-flight
/// guard, so a handler being replaced or removed is stopped only after the
/// last byte of its last response has been sent (or the client left).
/// It also counts the bytes sent and writes the access-log line when it
/// is dropped, which is when the response is complete.
///
/// A large static file streams through the same type (without a handler
/// guard), so its access line is also written when its last byte is sent.
#[derive(Debug)]
pub struct HandlerBody {
    inner: Source,
    _in_flight: Option<InFlight>,
    access: Option<Box<Finish>>,
}

#[derive(Debug)]
enum Source {
    Handler(PooledBody),
    /// Boxed: twice a handler body's size, and every response, proxied
    /// or not, is moved several times on its way to hyper.
    File(Box<FileBody>),
}

impl HandlerBody {
    pub(crate) fn new(inner: PooledBody, in_flight: InFlight) -> Self {
        Self {
            inner: Source::Handler(inner),
            _in_flight: Some(in_flight),
            access: None,
        }
    }

    /// A static file read from disk as the client takes it.
    pub(crate) fn file(file: FileBody) -> Self {
        Self {
            inner: Source::File(Box::new(file)),
            _in_flight: None,
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
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Frames pass through untouched: no buffering, so server-sent
        // events reach the client as the handler writes them.
        let polled: Poll<Option<Result<Frame<Bytes>, Self::Error>>> = match &mut self.inner {
            Source::Handler(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Source::File(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(access)) = (&polled, &mut self.access) {
            if let Some(data) = frame.data_ref() {
                access.sent(data.len());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Handler(body) => body.is_end_stream(),
            Source::File(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Handler(body) => body.size_hint(),
            Source::File(body) => body.size_hint(),
        }
    }
}
