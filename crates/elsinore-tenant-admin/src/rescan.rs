//! How the admin API asks the control plane to rescan the projects' host
//! folders after it created or removed one.
//!
//! The admin API runs on a request thread's runtime; a reload starts and
//! supervises handlers, which must live on the main runtime and outlive
//! any request. So the API never reloads itself: it sends a request over
//! a channel ([`RescanRequests`]) that a task on the main runtime serves
//! ([`RescanQueue`]), and waits for the reply.

use tokio::sync::{mpsc, oneshot};

/// Rescan requests waiting at most; beyond it callers wait for room.
const QUEUE: usize = 64;

/// Creates the two ends: the API's and the control plane's.
pub fn rescan_channel() -> (RescanRequests, RescanQueue) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (RescanRequests { tx }, RescanQueue { rx })
}

/// The admin API's end: asks for a rescan and waits for it.
#[derive(Debug, Clone)]
pub struct RescanRequests {
    tx: mpsc::Sender<oneshot::Sender<()>>,
}

impl RescanRequests {
    /// Asks for a rescan; resolves once the control plane has done it (or
    /// handed it on). `false` when nobody serves the queue any more
    /// (shutting down).
    pub async fn rescan(&self) -> bool {
        let (reply, done) = oneshot::channel();
        if self.tx.send(reply).await.is_err() {
            return false;
        }
        done.await.is_ok()
    }
}

/// The control plane's end, served by one task on the main runtime.
#[derive(Debug)]
pub struct RescanQueue {
    rx: mpsc::Receiver<oneshot::Sender<()>>,
}

impl RescanQueue {
    /// Waits for the next request; every request already waiting joins
    /// it, since one rescan started now serves them all. `None` once every
    /// [`RescanRequests`] is gone.
    pub async fn next(&mut self) -> Option<RescanBatch> {
        let first = self.rx.recv().await?;
        let mut replies = vec![first];
        while let Ok(reply) = self.rx.try_recv() {
            replies.push(reply);
        }
        Some(RescanBatch { replies })
    }
}

/// Requests answered by one rescan: call [`done`](Self::done) once it
/// ran (dropping the batch answers them too, as "not done").
#[derive(Debug)]
pub struct RescanBatch {
    replies: Vec<oneshot::Sender<()>>,
}

impl RescanBatch {
    /// How many requests this rescan answers.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether it answers none (never true for a batch from
    /// [`RescanQueue::next`]).
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Tells every requester the rescan ran.
    pub fn done(self) {
        for reply in self.replies {
            // A requester that stopped waiting (its deadline passed) is fine.
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// A request thread asks; the rescan runs on the control plane's
    /// runtime (its own thread), never on the asking runtime, and the
    /// answer comes only after it ran.
    #[test]
    fn rescans_run_on_the_control_plane_not_the_asking_thread() {
        let (requests, mut queue) = rescan_channel();
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("control runtime");
        let seen = ran_on.clone();
        let control_thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                control.block_on(async move {
                    while let Some(batch) = queue.next().await {
                        // A reload takes a while; the answer waits for it.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let name = std::thread::current().name().map(str::to_owned);
                        seen.lock().expect("lock").push(name);
                        batch.done();
                    }
                });
            })
            .expect("control thread");

        let request_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("request runtime");
        let answered = request_thread.block_on(async {
            let answered = requests.rescan().await;
            let ran = ran_on.lock().expect("lock").len();
            (answered, ran)
        });
        assert_eq!(answered, (true, 1), "answered only after the rescan ran");
        drop(requests);
        control_thread
            .join()
            .expect("control thread ends with the senders");
        assert_eq!(
            *ran_on.lock().expect("lock"),
            [Some("control".to_owned())],
            "the rescan ran on the control plane's thread"
        );
    }

    #[tokio::test]
    async fn waiting_requests_share_one_rescan() {
        let (requests, mut queue) = rescan_channel();
        let asks: Vec<_> = (0..3)
            .map(|_| {
                let requests = requests.clone();
                tokio::spawn(async move { requests.rescan().await })
            })
            .collect();
        // Let all three queue up before the control plane looks.
        while requests.tx.capacity() > QUEUE - 3 {
            tokio::task::yield_now().await;
        }
        let batch = queue.next().await.expect("a batch");
        assert_eq!(batch.len(), 3);
        batch.done();
        for ask in asks {
            assert!(ask.await.expect("task"));
        }
    }

    #[tokio::test]
    async fn nobody_serving_means_no_rescan() {
        let (requests, queue) = rescan_channel();
        drop(queue);
        assert!(!requests.rescan().await);
    }
}
