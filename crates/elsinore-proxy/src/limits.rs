//! Request body limits: the declared `Content-Length` is checked before the
//! handler is contacted, and a streamed (chunked) body is counted as it goes
//! and cut when it passes the limit.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The `Content-Length` the client declared, when it declared a valid one.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// Reading from the client failed.
    #[error("client body: {0}")]
    Client(#[from] hyper::Error),
    /// The body passed the limit.
    #[error("request body over {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
}

/// A client's request body on its way to the handler: counted for the
/// access log and cut at `limit` bytes.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: u64,
    seen: u64,
    /// Shared with the request path; none for a request without a body
    /// (most of them), which has nothing to count and saves allocating it.
    progress: Option<Arc<BodyProgress>>,
}

/// What a request body's passage tells the request path: how much of it
/// reached the handler (for the access log) and whether it was cut.
#[derive(Debug, Default)]
pub(crate) struct BodyProgress {
    sent: AtomicU64,
    over: AtomicBool,
}

impl BodyProgress {
    /// Bytes passed to the handler so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Whether the body went over its limit (and was cut there).
    pub(crate) fn over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }
}

impl RequestBody {
    /// `inner`, cut after `limit` bytes; `progress` counts what is passed
    /// on and says when the body was cut.
    pub(crate) fn new(inner: Incoming, limit: u64, progress: Option<Arc<BodyProgress>>) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            progress,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        if self.seen > self.limit {
            return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit: self.limit })));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            self.seen = self.seen.saturating_add(data.len() as u64);
            if self.seen > self.limit {
                // Nothing past the limit reaches the handler.
                if let Some(progress) = &self.progress {
                    progress.over.store(true, Ordering::Release);
                }
                return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit: self.limit })));
            }
            if let Some(progress) = &self.progress {
                progress
                    .sent
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
