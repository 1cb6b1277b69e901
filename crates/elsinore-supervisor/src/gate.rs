//! A handler's concurrency limit: at most `max_concurrent` requests run,
//! at most `queue` more wait (each up to `queue_timeout`), the rest are
//! refused at once.
//!
//! Waiting is fair across tenants: each host has its own FIFO inside the
//! gate, and a freed turn goes to the next host in a rotation over the
//! hosts that have someone waiting, so one host with 500 waiting requests
//! delays another host's single request by one turn, not 500. One host
//! may hold at most its share of the queue (half of it, at least 1), so a
//! flood cannot fill the places another host would queue in either.
//!
//! The state is one short `std::sync::Mutex`, never held across an await;
//! a turn is handed from the request giving it back straight to the
//! waiter chosen, so nobody can overtake a waiter between the two.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use elsinore_config::{HandlerSpec, DEFAULT_MAX_CONCURRENT};
use tokio::sync::oneshot;

/// Why a request was not let through to a busy handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `max_concurrent` requests run and `queue` more already wait.
    QueueFull {
        /// The handler's `max_concurrent`.
        max_concurrent: usize,
        /// The handler's `queue`.
        queue: usize,
    },
    /// `max_concurrent` requests run and the request's host already has
    /// its share of the queue waiting.
    HostShareFull {
        /// The handler's `max_concurrent`.
        max_concurrent: usize,
        /// Places in the queue one host may hold.
        per_host: usize,
    },
    /// The request waited `queue_timeout` without a turn.
    QueueTimeout {
        /// How long it waited.
        waited: Duration,
    },
}

/// The share of a handler's `queue` one host may hold: half of it, at
/// least 1 (0 only when there is no queue at all).
pub fn per_host_share(queue: usize) -> usize {
    if queue == 0 {
        0
    } else {
        (queue / 2).max(1)
    }
}

/// The limit of one handler: its `max_concurrent`, or
/// [`DEFAULT_MAX_CONCURRENT`] when not set, so that no flood of clients
/// makes Elsinore open connections to one handler without bound.
#[derive(Debug)]
pub(crate) struct Gate {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_concurrent: usize,
    queue: usize,
    per_host: usize,
    queue_timeout: Duration,
    state: Mutex<State>,
}

/// Who runs and who waits.
#[derive(Debug, Default)]
struct State {
    /// Turns held (at most `max_concurrent`).
    running: usize,
    /// Requests in all the hosts' queues.
    waiting: usize,
    /// Each host's waiters, oldest first; a host is here only while it has
    /// at least one.
    by_host: HashMap<Arc<str>, VecDeque<Waiter>>,
    /// The hosts with waiters, the one whose turn is next in front.
    rotation: VecDeque<Arc<str>>,
    /// Tells waiters apart, so a leaving one removes itself and no other.
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    /// Sending on it hands the waiter a turn already counted in `running`.
    wake: oneshot::Sender<()>,
}

/// One request's turn; dropping it gives the turn to the next waiter (or
/// frees it).
#[derive(Debug)]
pub struct Turn {
    shared: Arc<Shared>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.shared.lock().pass_on();
    }
}

/// A place in a host's queue; removes itself however the wait ends
/// (timeout, or the client leaving), and gives back a turn that was
/// handed to it but never taken.
struct Place {
    shared: Arc<Shared>,
    host: Arc<str>,
    id: u64,
    granted: oneshot::Receiver<()>,
    taken: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut state = self.shared.lock();
        if !state.remove(&self.host, self.id) && self.granted.try_recv().is_ok() {
            // Handed a turn (under this same lock) after we stopped
            // waiting: hand it on rather than leak it.
            state.pass_on();
        }
    }
}

impl State {
    /// Gives a turn being released to the next waiter in the rotation, or
    /// frees it when nobody waits.
    fn pass_on(&mut self) {
        while let Some(host) = self.rotation.pop_front() {
            let Some(queue) = self.by_host.get_mut(&host) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                self.by_host.remove(&host);
            } else {
                self.rotation.push_back(host);
            }
            if let Some(waiter) = next {
                self.waiting -= 1;
                if waiter.wake.send(()).is_ok() {
                    return;
                }
            }
        }
        self.running -= 1;
    }

    /// Takes waiter `id` out of `host`'s queue; false when it is no longer
    /// there (it was handed a turn).
    fn remove(&mut self, host: &Arc<str>, id: u64) -> bool {
        let Some(queue) = self.by_host.get_mut(host) else {
            return false;
        };
        let Some(at) = queue.iter().position(|waiter| waiter.id == id) else {
            return false;
        };
        queue.remove(at);
        self.waiting -= 1;
        if queue.is_empty() {
            self.by_host.remove(host);
            self.rotation.retain(|other| other != host);
        }
        true
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement that can panic
        // (none do while it is held), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Gate {
    pub(crate) fn for_spec(spec: &HandlerSpec) -> Self {
        let max_concurrent = spec.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
        Self {
            shared: Arc::new(Shared {
                max_concurrent,
                queue: spec.queue,
                per_host: per_host_share(spec.queue),
                queue_timeout: spec.queue_timeout,
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub(crate) fn max_concurrent(&self) -> usize {
        self.shared.max_concurrent
    }

    /// Requests waiting for a turn, all hosts together.
    pub(crate) fn waiting(&self) -> usize {
        self.shared.lock().waiting
    }

    /// A turn for a request to `host`: at once when a slot is free, else
    /// after queueing behind `host`'s earlier requests, taking turns with
    /// the other hosts that wait.
    pub(crate) async fn enter(&self, host: &str) -> Result<Turn, Busy> {
        let shared = &self.shared;
        let mut place = {
            let mut state = shared.lock();
            if state.running < shared.max_concurrent {
                state.running += 1;
                return Ok(Turn {
                    shared: shared.clone(),
                });
            }
            if state.waiting >= shared.queue {
                return Err(Busy::QueueFull {
                    max_concurrent: shared.max_concurrent,
                    queue: shared.queue,
                });
            }
            let (key, queued) = match state.by_host.get_key_value(host) {
                Some((key, queue)) => (key.clone(), queue.len()),
                None => (Arc::<str>::from(host), 0),
            };
            if queued >= shared.per_host {
                return Err(Busy::HostShareFull {
                    max_concurrent: shared.max_concurrent,
                    per_host: shared.per_host,
                });
            }
            let id = state.next_id;
            state.next_id += 1;
            let (wake, granted) = oneshot::channel();
            if queued == 0 {
                state.rotation.push_back(key.clone());
            }
            state
                .by_host
                .entry(key.clone())
                .or_default()
                .push_back(Waiter { id, wake });
            state.waiting += 1;
            Place {
                shared: shared.clone(),
                host: key,
                id,
                granted,
                taken: false,
            }
        };
        match tokio::time::timeout(shared.queue_timeout, &mut place.granted).await {
            Ok(Ok(())) => {
                place.taken = true;
                Ok(Turn {
                    shared: shared.clone(),
                })
            }
            // The sender is dropped only with its turn passed on; treat it
            // like a timeout anyway. `place` gives back a turn that came
            // just too late.
            Ok(Err(_)) | Err(_) => Err(Busy::QueueTimeout {
                waited: shared.queue_timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use elsinore_config::HandlerKind;

    use super::*;

    fn gate(max_concurrent: usize, queue: usize, queue_timeout: Duration) -> Arc<Gate> {
        let spec = HandlerSpec {
            name: "web".into(),
            kind: HandlerKind::Command {
                argv: vec!["true".into()],
            },
            routes: vec!["/".into()],
            ready: None,
            env: BTreeMap::new(),
            start_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            max_concurrent: Some(max_concurrent),
            queue,
            queue_timeout,
            reuse_after_body: false,
            socket: false,
            idle_stop: None,
            start: elsinore_config::StartPolicy::Always,
            listen_fd: false,
            generated: None,
            run_as: None,
            key_env: None,
        };
        Arc::new(Gate::for_spec(&spec))
    }

    fn waiting(gate: &Gate) -> usize {
        gate.shared.lock().waiting
    }

    fn running(gate: &Gate) -> usize {
        gate.shared.lock().running
    }

    async fn until_waiting(gate: &Gate, n: usize) {
        while waiting(gate) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn without_a_queue_the_next_request_is_refused_at_once() {
        let gate = gate(1, 0, Duration::from_secs(60));
        let _running = gate.enter("a").await.expect("first");
        assert_eq!(
            gate.enter("a").await.err(),
            Some(Busy::QueueFull {
                max_concurrent: 1,
                queue: 0
            })
        );
    }

    #[tokio::test]
    async fn a_queued_request_gets_the_turn_given_back() {
        let gate = gate(1, 1, Duration::from_secs(60));
        let first = gate.enter("a").await.expect("first");
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter("a").await.map(drop) }
        });
        until_waiting(&gate, 1).await;
        assert!(matches!(gate.enter("b").await, Err(Busy::QueueFull { .. })));
        drop(first);
        assert_eq!(queued.await.expect("join"), Ok(()));
        assert_eq!(waiting(&gate), 0);
        assert_eq!(running(&gate), 0, "the turn is free again");
    }

    #[tokio::test]
    async fn a_queued_request_waits_queue_timeout_at_most() {
        let gate = gate(1, 5, Duration::from_millis(300));
        let _running = gate.enter("a").await.expect("first");
        assert_eq!(
            gate.enter("a").await.err(),
            Some(Busy::QueueTimeout {
                waited: Duration::from_millis(300)
            })
        );
        assert_eq!(waiting(&gate), 0, "the place is freed");
    }

    #[tokio::test]
    async fn one_host_holds_at_most_its_share_of_the_queue() {
        let gate = gate(1, 4, Duration::from_secs(60));
        let _running = gate.enter("a").await.expect("first");
        let mut queued = Vec::new();
        for n in 1..=2 {
            queued.push(tokio::spawn({
                let gate = gate.clone();
                async move { gate.enter("a").await.map(drop) }
            }));
            until_waiting(&gate, n).await;
        }
        assert_eq!(
            gate.enter("a").await.err(),
            Some(Busy::HostShareFull {
                max_concurrent: 1,
                per_host: 2
            })
        );
        // Another host still finds a place.
        let other = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter("b").await.map(drop) }
        });
        until_waiting(&gate, 3).await;
        other.abort();
        for task in queued {
            task.abort();
        }
    }

    /// Host a queues 50, then host b 1: b gets one of the next 2 turns.
    #[tokio::test]
    async fn turns_rotate_across_hosts() {
        let gate = gate(1, 200, Duration::from_secs(60));
        let first = gate.enter("a").await.expect("first");
        let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        let spawn = |host: &'static str, n: usize| {
            let gate = gate.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let turn = gate.enter(host).await.expect("a turn");
                done.send((host, n)).expect("send");
                drop(turn);
            })
        };
        for n in 0..50 {
            tasks.push(spawn("a", n));
            until_waiting(&gate, n + 1).await;
        }
        tasks.push(spawn("b", 0));
        until_waiting(&gate, 51).await;
        drop(first);
        let mut served = Vec::new();
        while let Some(entry) = order.recv().await {
            served.push(entry);
            if served.len() == 51 {
                break;
            }
        }
        let b_at = served
            .iter()
            .position(|(host, _)| *host == "b")
            .expect("b served");
        assert!(b_at < 2, "b served at turn {b_at}: {served:?}");
        let a: Vec<usize> = served
            .iter()
            .filter(|(host, _)| *host == "a")
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            a,
            (0..50).collect::<Vec<_>>(),
            "one host's requests in order"
        );
        assert_eq!(running(&gate), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_gives_back_its_place_and_leaks_no_turn() {
        let gate = gate(1, 10, Duration::from_secs(60));
        let running_turn = gate.enter("a").await.expect("first");
        let leaving = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter("a").await.map(drop) }
        });
        until_waiting(&gate, 1).await;
        leaving.abort();
        let _ = leaving.await;
        assert_eq!(waiting(&gate), 0, "the place is freed");
        drop(running_turn);
        assert_eq!(running(&gate), 0, "the turn is free");
        let _again = gate.enter("b").await.expect("a free turn");
    }

    #[tokio::test]
    async fn a_turn_handed_to_a_waiter_that_left_is_passed_on() {
        let gate = gate(1, 10, Duration::from_secs(60));
        let first = gate.enter("a").await.expect("first");
        // Poll a waiter once, so it is queued, then hand it the turn and
        // drop it before it runs again.
        let mut leaving = Box::pin(gate.enter("a"));
        assert!(futures_poll_once(leaving.as_mut()).await.is_none());
        let next = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter("b").await.map(drop) }
        });
        until_waiting(&gate, 2).await;
        drop(first); // handed to `leaving` (a is first in the rotation)
        drop(leaving); // never took it: b must get it
        assert_eq!(next.await.expect("join"), Ok(()));
        assert_eq!(running(&gate), 0);
        assert_eq!(waiting(&gate), 0);
    }

    /// Polls `future` once; `Some` when it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }
}
