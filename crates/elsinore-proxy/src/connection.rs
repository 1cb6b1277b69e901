//! Per-connection bookkeeping: how many requests are in progress on a
//! connection and since when none is (for the idle timeout), and the set
//! of open connections graceful shutdown asks to finish.
//!
//! Both are checked on every wake-up of a connection's task, so they cost
//! a few atomic loads there: no timer is polled until it has fired, and no
//! channel is polled for shutdown (hyper-util's graceful watcher and a
//! re-polled `Sleep` were a measurable part of each request; see
//! docs/performance.md).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Requests in progress on one client connection.
#[derive(Debug, Clone)]
pub(crate) struct Activity(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    active: AtomicUsize,
    /// When the connection last became idle, in nanoseconds since `base`.
    idle_since: AtomicU64,
    base: Instant,
}

impl Inner {
    fn idle_since(&self) -> Instant {
        self.base + Duration::from_nanos(self.idle_since.load(Ordering::Acquire))
    }
}

/// One request in progress, until its response body is done or dropped.
#[derive(Debug)]
pub(crate) struct Active(Arc<Inner>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = u64::try_from(self.0.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.0.idle_since.store(since, Ordering::Release);
        }
    }
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Inner {
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            base: Instant::now(),
        }))
    }

    /// A request starts; it ends when the guard drops.
    pub(crate) fn begin(&self) -> Active {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        Active(self.0.clone())
    }

    /// The idle timer of this connection: fires once it has had no request
    /// in progress for `limit` in a row. Streaming responses (SSE) count
    /// as in progress.
    pub(crate) fn idle_timer(&self, limit: Duration) -> IdleTimer {
        IdleTimer {
            activity: self.0.clone(),
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }
}

/// See [`Activity::idle_timer`]. The timer is set for the earliest moment
/// the connection could have been idle long enough and looked at only when
/// it fires (it is then set again if a request came meanwhile), so a busy
/// connection costs one check of a flag per wake-up, not a timer per
/// request.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    activity: Arc<Inner>,
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Whether `sleep` has been polled since it was last set, which
    /// registers this task to be woken when it fires.
    armed: bool,
}

impl IdleTimer {
    /// Changes the limit. A larger one takes effect when the timer next
    /// fires (it is then set again for the new limit), a smaller one only
    /// then too: callers only ever raise it, before the first request.
    pub(crate) fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
    }

    /// Ready once the connection has been idle for the limit.
    pub(crate) fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.armed && !self.sleep.is_elapsed() {
                return Poll::Pending;
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                self.armed = true;
                return Poll::Pending;
            }
            let now = Instant::now();
            let deadline = if self.activity.active.load(Ordering::Acquire) > 0 {
                now + self.limit
            } else {
                self.activity.idle_since() + self.limit
            };
            if deadline <= now {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(deadline);
            self.armed = false;
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

/// The open connections of one accept loop: shutdown asks each to finish
/// its requests and close ([`Connections::shutdown`]), then waits for all
/// of them ([`Connections::closed`]).
#[derive(Debug, Default)]
pub(crate) struct Connections(Arc<Registry>);

#[derive(Debug, Default)]
struct Registry {
    stopping: AtomicBool,
    /// The task of each open connection, to wake it at shutdown.
    wakers: Mutex<HashMap<u64, Option<Waker>>>,
    next: AtomicU64,
    open: AtomicUsize,
    closed: Notify,
}

impl Registry {
    fn wakers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<Waker>>> {
        // Only wakers inside: still usable after a panic elsewhere.
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Connections {
    /// Counts a connection as open until the watcher is dropped.
    pub(crate) fn watcher(&self) -> Watcher {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.0.open.fetch_add(1, Ordering::AcqRel);
        self.0.wakers().insert(id, None);
        Watcher {
            registry: self.0.clone(),
            id,
            waker: None,
            told: false,
        }
    }

    /// Tells every open connection to finish its requests and close.
    pub(crate) fn shutdown(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = self.0.wakers().values().flatten().cloned().collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once no connection is open.
    pub(crate) async fn closed(&self) {
        loop {
            let closed = self.0.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.0.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// One open connection of [`Connections`].
#[derive(Debug)]
pub(crate) struct Watcher {
    registry: Arc<Registry>,
    id: u64,
    /// The waker last registered, to register again only when it changes.
    waker: Option<Waker>,
    /// Whether shutdown has been seen (and passed on) already.
    told: bool,
}

impl Watcher {
    /// True once, when shutdown has begun; registers the task to be woken
    /// for it before looking.
    pub(crate) fn poll_shutdown(&mut self, cx: &Context<'_>) -> bool {
        if self.told {
            return false;
        }
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            self.registry.wakers().insert(self.id, Some(waker.clone()));
            self.waker = Some(waker);
        }
        // After the registration: a shutdown that comes between the two
        // finds the waker and wakes us.
        if self.registry.stopping.load(Ordering::SeqCst) {
            self.told = true;
            return true;
        }
        false
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.registry.wakers().remove(&self.id);
        if self.registry.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.closed.notify_waiters();
        }
    }
}
