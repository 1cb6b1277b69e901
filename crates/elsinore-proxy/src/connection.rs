//! Per-connection bookkeeping: how many requests are in progress on a
//! connection and since when none is, the one timer that keeps its idle,
//! header read and (HTTP/1.1) response timeouts, and the set of open
//! connections graceful shutdown asks to finish.
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
    /// Whether the connection's [`ConnectionTimer`] also keeps the response
    /// deadline of its request (HTTP/1.1: one request at a time, its
    /// service polled by the connection's own task). See
    /// [`Activity::within`].
    keeps_deadlines: AtomicBool,
    /// The request's response deadline in nanoseconds since `base`, or
    /// [`NO_DEADLINE`].
    response_deadline: AtomicU64,
    /// Set by the timer when that deadline has passed.
    response_expired: AtomicBool,
}

/// `response_deadline` when no request waits for its response head.
const NO_DEADLINE: u64 = u64::MAX;

impl Inner {
    fn idle_since(&self) -> Instant {
        self.base + Duration::from_nanos(self.idle_since.load(Ordering::Acquire))
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn response_deadline(&self) -> Option<Instant> {
        match self.response_deadline.load(Ordering::Acquire) {
            NO_DEADLINE => None,
            nanos => Some(self.base + Duration::from_nanos(nanos)),
        }
    }
}

/// The wait for a response head ran out (see [`Activity::within`]).
#[derive(Debug)]
pub(crate) struct TimedOut;

/// Clears the response deadline when its wait ends, however it ends.
#[derive(Debug)]
struct DeadlineGuard<'a>(&'a Inner);

pin_project_lite::pin_project! {
    /// See [`Activity::within`].
    #[derive(Debug)]
    pub(crate) struct Within<'a, F> {
        #[pin]
        response: F,
        // Dropped after `response`.
        #[pin]
        deadline: Deadline<'a>,
    }
}

pin_project_lite::pin_project! {
    /// Who watches a [`Within`]'s deadline.
    #[project = DeadlineProj]
    #[derive(Debug)]
    enum Deadline<'a> {
        // The request's own timer, where the connection's does not keep
        // the deadline.
        Own { #[pin] sleep: Sleep },
        // The connection's timer, told through its `Inner`.
        Connection { guard: DeadlineGuard<'a> },
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // An answer that is there wins over a deadline just passed.
        if let Poll::Ready(output) = this.response.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let expired = match this.deadline.project() {
            DeadlineProj::Own { sleep } => sleep.poll(cx).is_ready(),
            DeadlineProj::Connection { guard } => {
                guard.0.response_expired.swap(false, Ordering::AcqRel)
            }
        };
        if expired {
            Poll::Ready(Err(TimedOut))
        } else {
            Poll::Pending
        }
    }
}

impl Drop for DeadlineGuard<'_> {
    fn drop(&mut self) {
        self.0
            .response_deadline
            .store(NO_DEADLINE, Ordering::Release);
    }
}

/// One request in progress, until its response body is done or dropped.
#[derive(Debug)]
pub(crate) struct Active(Arc<Inner>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = self.0.nanos(Instant::now());
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
            keeps_deadlines: AtomicBool::new(false),
            response_deadline: AtomicU64::new(NO_DEADLINE),
            response_expired: AtomicBool::new(false),
        }))
    }

    /// From now on the connection's idle timer keeps response deadlines
    /// too: for HTTP/1.1 served by the connection's own task.
    pub(crate) fn keep_response_deadlines(&self) {
        self.0.keeps_deadlines.store(true, Ordering::Release);
    }

    /// Waits for `response` (a handler's response head) until `deadline`.
    /// On a connection whose timer keeps response deadlines, that timer
    /// watches it: when it fires past the deadline it flags the wait and
    /// its task polls this future again, so the request registers no
    /// timer of its own (a tokio timer was registered in the wheel and
    /// cancelled for every request; docs/performance.md). Elsewhere
    /// (HTTP/2 streams, each a task of its own) a tokio timer does.
    ///
    /// A future written out rather than an `async fn`: one of those keeps
    /// its argument twice (as passed and as moved into its body), and this
    /// one's argument is the whole handler exchange.
    pub(crate) fn within<F: Future>(
        activity: Option<&Activity>,
        deadline: Instant,
        response: F,
    ) -> Within<'_, F> {
        let inner = activity
            .map(|activity| &*activity.0)
            .filter(|inner| inner.keeps_deadlines.load(Ordering::Acquire));
        let deadline = match inner {
            Some(inner) => {
                inner.response_expired.store(false, Ordering::Release);
                inner
                    .response_deadline
                    .store(inner.nanos(deadline), Ordering::Release);
                Deadline::Connection {
                    guard: DeadlineGuard(inner),
                }
            }
            None => Deadline::Own {
                sleep: tokio::time::sleep_until(deadline),
            },
        };
        Within { response, deadline }
    }

    /// Whether no request has started on this connection yet (the first
    /// one's end records when the connection became idle).
    pub(crate) fn never_asked(&self) -> bool {
        self.0.active.load(Ordering::Acquire) == 0 && self.0.idle_since.load(Ordering::Acquire) == 0
    }

    /// A request starts; it ends when the guard drops.
    pub(crate) fn begin(&self) -> Active {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        Active(self.0.clone())
    }

    /// The timer of this connection: fires once it has had no request in
    /// progress for `limit` in a row (streaming responses, SSE, count as
    /// in progress), and, once [`Activity::keep_response_deadlines`] is
    /// called, when the request's response deadline passes.
    pub(crate) fn timer(&self, limit: Duration) -> ConnectionTimer {
        ConnectionTimer {
            activity: self.0.clone(),
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }
}

/// See [`Activity::timer`]. The timer is set for the earliest moment
/// the connection could have been idle long enough and looked at only when
/// it fires (it is then set again if a request came meanwhile), so a busy
/// connection costs one check of a flag per wake-up, not a timer per
/// request.
#[derive(Debug)]
pub(crate) struct ConnectionTimer {
    activity: Arc<Inner>,
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Whether `sleep` has been polled since it was last set, which
    /// registers this task to be woken when it fires.
    armed: bool,
}

impl ConnectionTimer {
    /// Changes the limit. A larger one takes effect when the timer next
    /// fires (it is then set again for the new limit), a smaller one only
    /// then too: callers only ever raise it, before the first request.
    pub(crate) fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
    }

    /// Ready once the connection has been idle for the limit, or when the
    /// response deadline of its request has passed (see
    /// [`Activity::within`]; the caller then polls the connection again,
    /// which lets that request answer 504).
    pub(crate) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<Fired> {
        loop {
            let response_deadline = self.activity.response_deadline();
            // A request's deadline set since the timer was: the timer
            // moves only when that comes before it. Looked at whether or
            // not the timer has been polled yet: a request whose bytes
            // were there at the connection's first poll sets its deadline
            // before the timer was ever armed.
            if let Some(at) = response_deadline {
                if at < self.sleep.deadline() {
                    self.sleep.as_mut().reset(at);
                    self.armed = false;
                }
            }
            if self.armed && !self.sleep.is_elapsed() {
                return Poll::Pending;
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                self.armed = true;
                return Poll::Pending;
            }
            let now = Instant::now();
            let active = self.activity.active.load(Ordering::Acquire) > 0;
            let deadline = if active {
                match response_deadline {
                    Some(at) if at <= now => {
                        self.activity
                            .response_deadline
                            .store(NO_DEADLINE, Ordering::Release);
                        self.activity
                            .response_expired
                            .store(true, Ordering::Release);
                        self.sleep.as_mut().reset(now + self.limit);
                        self.armed = false;
                        return Poll::Ready(Fired::ResponseDeadline);
                    }
                    Some(at) => at.min(now + self.limit),
                    None => now + self.limit,
                }
            } else {
                self.activity.idle_since() + self.limit
            };
            if deadline <= now {
                return Poll::Ready(Fired::Idle);
            }
            self.sleep.as_mut().reset(deadline);
            self.armed = false;
        }
    }
}

/// Why [`ConnectionTimer::poll_fired`] is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fired {
    /// No request in progress for the limit: close the connection.
    Idle,
    /// The request's response deadline passed: poll it again.
    ResponseDeadline,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/1.1 connection's activity and its timer (30 s limit).
    fn http1_connection() -> (Activity, ConnectionTimer) {
        let activity = Activity::new();
        activity.keep_response_deadlines();
        let timer = activity.timer(Duration::from_secs(30));
        (activity, timer)
    }

    /// Polls the timer once: true if it did not fire.
    async fn timer_pending(timer: &mut ConnectionTimer) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(timer.poll_fired(cx).is_pending())).await
    }

    /// Starts waiting (one poll) for a response that never comes, with a
    /// deadline 50 ms from now, then checks that the timer is set for it,
    /// fires, and the wait ends timed out.
    async fn wait_times_out(activity: &Activity, timer: &mut ConnectionTimer) {
        let deadline = Instant::now() + Duration::from_millis(50);
        let mut waiting = Box::pin(Activity::within(
            Some(activity),
            deadline,
            std::future::pending::<()>(),
        ));
        let pending =
            std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx).is_pending())).await;
        assert!(pending);
        // The timer's next poll sets it for the deadline, not the limit
        // (only a later wake-up would have corrected it).
        assert!(timer_pending(timer).await);
        assert_eq!(timer.sleep.deadline(), deadline);
        let fired = tokio::time::timeout(
            Duration::from_secs(10),
            std::future::poll_fn(|cx| timer.poll_fired(cx)),
        )
        .await
        .expect("the timer did not fire at the response deadline");
        assert_eq!(fired, Fired::ResponseDeadline);
        assert!(matches!(waiting.await, Err(TimedOut)));
    }

    #[tokio::test]
    async fn a_response_deadline_set_before_the_timer_was_ever_polled_still_fires() {
        let (activity, mut timer) = http1_connection();
        let _active = activity.begin();
        // The request sets its deadline before the connection's timer is
        // first polled, as when its bytes were there at the first poll.
        wait_times_out(&activity, &mut timer).await;
    }

    #[tokio::test]
    async fn a_response_deadline_set_while_the_timer_waits_moves_it() {
        let (activity, mut timer) = http1_connection();
        // Armed for the 30 s limit first.
        assert!(timer_pending(&mut timer).await);
        let _active = activity.begin();
        wait_times_out(&activity, &mut timer).await;
        // And the next request on the connection gets its own.
        wait_times_out(&activity, &mut timer).await;
    }

    #[tokio::test]
    async fn a_wait_the_connection_timer_does_not_keep_times_out_on_its_own() {
        // HTTP/2 streams: no activity keeping deadlines, the wait's own timer.
        let not_kept = Activity::new();
        for activity in [None, Some(&not_kept)] {
            let deadline = Instant::now() + Duration::from_millis(20);
            let waited = tokio::time::timeout(
                Duration::from_secs(10),
                Activity::within(activity, deadline, std::future::pending::<()>()),
            )
            .await
            .expect("the wait did not end at its deadline");
            assert!(matches!(waited, Err(TimedOut)));
            assert!(Instant::now() >= deadline);
        }
        assert_eq!(
            not_kept.0.response_deadline.load(Ordering::Acquire),
            NO_DEADLINE
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_there_wins_over_a_deadline_already_passed() {
        let (activity, _timer) = http1_connection();
        let past = Instant::now() - Duration::from_millis(1);
        for activity in [None, Some(&activity)] {
            let answer = Activity::within(activity, past, std::future::ready(7)).await;
            assert!(matches!(answer, Ok(7)));
        }
    }

    #[tokio::test]
    async fn the_response_deadline_is_cleared_when_its_wait_ends_or_is_dropped() {
        let (activity, _timer) = http1_connection();
        let deadline = Instant::now() + Duration::from_secs(60);
        let waiting = Activity::within(Some(&activity), deadline, std::future::pending::<()>());
        assert_ne!(
            activity.0.response_deadline.load(Ordering::Acquire),
            NO_DEADLINE,
            "the connection's timer is told the deadline"
        );
        // A client that goes away drops the request's future mid-wait.
        drop(waiting);
        assert_eq!(
            activity.0.response_deadline.load(Ordering::Acquire),
            NO_DEADLINE
        );
        let answered = Activity::within(Some(&activity), deadline, std::future::ready(())).await;
        assert!(answered.is_ok());
        assert_eq!(
            activity.0.response_deadline.load(Ordering::Acquire),
            NO_DEADLINE
        );
    }
}
