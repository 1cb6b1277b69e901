//! HTTP/1.1 `Upgrade` (WebSocket): relay the handler's 101, then pipe bytes
//! both ways until either side closes.
//!
//! An open tunnel keeps its handler's in-flight guard, so live reload does
//! not stop a replaced handler under it, and a table swap never touches it
//! (it no longer looks at the table). Shutdown waits for tunnels like for
//! requests and closes those still open when the grace period ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use elsinore_supervisor::InFlight;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::{watch, Notify};

use crate::headers::connection_lists;
use crate::service::ConnectionSlot;

/// What the client asked to switch to (`Upgrade`), when the request is an
/// HTTP/1.1 upgrade: `Upgrade` present and `Connection` naming `upgrade`.
pub(crate) fn requested<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = request.headers().get(UPGRADE)?;
    connection_lists(request.headers(), "upgrade").then(|| upgrade.clone())
}

/// Puts back the two headers hop-by-hop removal took out, so the next hop
/// sees the upgrade too.
pub(crate) fn restore_headers(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(UPGRADE, upgrade);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Every open tunnel (upgraded connection: WebSockets) of a service, so
/// shutdown can wait for them and then close them.
#[derive(Debug)]
pub struct Tunnels {
    open: AtomicUsize,
    idle: Notify,
    closing: watch::Sender<bool>,
}

/// Counts one open tunnel until dropped.
struct Open(Arc<Tunnels>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Tunnels {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: watch::channel(false).0,
        })
    }

    /// Pipes `client` ⇄ `handler` once both upgrades complete. `keep` is
    /// held until the tunnel ends (the handler's in-flight guard and the
    /// client connection's slot).
    pub(crate) fn spawn(
        self: &Arc<Self>,
        client: OnUpgrade,
        handler: OnUpgrade,
        in_flight: InFlight,
        keep: Option<ConnectionSlot>,
    ) {
        self.open.fetch_add(1, Ordering::AcqRel);
        let open = Open(self.clone());
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            let _open = open;
            let _in_flight = in_flight;
            let _keep = keep;
            let (client, handler) = match tokio::try_join!(client, handler) {
                Ok(both) => both,
                Err(err) => {
                    tracing::debug!(error = %err, "upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut handler = TokioIo::new(handler);
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut handler) => match copied {
                    Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
                    Err(err) => tracing::debug!(error = %err, "upgraded connection ended with an error"),
                },
                _ = closing.wait_for(|closing| *closing) => {
                    tracing::debug!("closing upgraded connection: shutdown grace period over");
                }
            }
        });
    }

    /// Tunnels open right now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no tunnel is open.
    pub(crate) async fn closed(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Ends every open tunnel (the grace period is over).
    pub(crate) fn close_all(&self) {
        self.closing.send_replace(true);
    }
}
