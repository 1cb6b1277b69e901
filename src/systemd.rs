//! Telling a service manager what the server is doing (systemd's
//! `Type=notify` protocol, `sd_notify(3)`): ready, reloading, stopping,
//! and which process is the main one after an upgrade.
//!
//! Every function is a no-op when `NOTIFY_SOCKET` is not set (started by
//! hand, or by a unit that is not `Type=notify`). A failed send is logged
//! and otherwise ignored: the manager being gone must not stop serving.
//!
//! `NOTIFY_SOCKET` stays in Elsinore's own environment, so the process an
//! upgrade starts can send its own messages; handlers never see it (the
//! supervisor removes it from their environment).

use sd_notify::NotifyState;

/// `READY=1`: the listeners are bound and the handlers ready.
pub fn ready() {
    send("READY=1", &[NotifyState::Ready]);
}

/// `RELOADING=1` with `MONOTONIC_USEC=` (what `Type=notify-reload` asks
/// for), before a SIGHUP reload; [`ready`] follows it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send("RELOADING=1", &[NotifyState::Reloading, now]),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read CLOCK_MONOTONIC for MONOTONIC_USEC");
            send("RELOADING=1", &[NotifyState::Reloading]);
        }
    }
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    send("STOPPING=1", &[NotifyState::Stopping]);
}

/// `MAINPID=pid` and `READY=1`: an upgrade handed the listeners to `pid`,
/// which is now the service's main process (sent by the old one, which
/// systemd still listens to under the default `NotifyAccess=main`).
pub fn handed_over(pid: u32) {
    send("MAINPID=", &[NotifyState::MainPid(pid), NotifyState::Ready]);
}

fn send(what: &str, states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(error = %err, message = what, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
