//! Per-connection bookkeeping for the idle timeout: how many requests are
//! in progress on a connection, and since when none is.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Requests in progress on one client connection.
#[derive(Debug, Clone)]
pub(crate) struct Activity(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
    idle: Notify,
}

/// One request in progress, until its response body is done or dropped.
#[derive(Debug)]
pub(crate) struct Active(Arc<Inner>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut since) = self.0.idle_since.lock() {
                *since = Instant::now();
            }
            self.0.idle.notify_waiters();
        }
    }
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Inner {
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            idle: Notify::new(),
        }))
    }

    /// A request starts; it ends when the guard drops.
    pub(crate) fn begin(&self) -> Active {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        Active(self.0.clone())
    }

    /// Resolves once the connection has had no request in progress for
    /// `limit` in a row. Streaming responses (SSE) count as in progress.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            let became_idle = self.0.idle.notified();
            tokio::pin!(became_idle);
            became_idle.as_mut().enable();
            if self.0.active.load(Ordering::Acquire) > 0 {
                became_idle.await;
                continue;
            }
            let since = match self.0.idle_since.lock() {
                Ok(since) => *since,
                Err(poisoned) => *poisoned.into_inner(),
            };
            let deadline = since + limit;
            if Instant::now() >= deadline {
                return;
            }
            // Wake at the deadline and look again: a request may have come
            // and gone meanwhile (which moved `idle_since`).
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A response body that marks its request as in progress until it is done.
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    inner: B,
    active: Option<Active>,
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, active: Active) -> Self {
        Self {
            inner,
            active: Some(active),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.active = None;
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
