//! Running under a service manager: systemd notifications (ready, reloading, stopping,
//! status) and the watchdog. Outside systemd (`NOTIFY_SOCKET` unset) every notification is
//! a no-op, so the same binary runs the same way in a terminal.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::app::Liveness;

/// Sends `states` to the service manager, if there is one; a failure is logged, not fatal.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "Cannot notify the service manager.");
    }
}

/// The log is open, the listener bound and the shards running.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Start-up work that may outlast `TimeoutStartSec` is under way (a log's migration): the
/// service manager waits `by` more from now, and shows `status`.
pub fn extend_start(by: Duration, status: &str) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    notify(&[
        NotifyState::ExtendTimeoutUsec(usec),
        NotifyState::Status(status),
    ]);
}

/// A SIGHUP is being handled; `ready` follows when it is done.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("Draining")]);
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog at half its interval, but only while every heartbeat is fresh: a
/// wedged writer thread or shard stops the pings, and systemd restarts the service.
pub async fn watchdog(interval: Duration, liveness: Liveness) {
    let mut tick = tokio::time::interval(interval / 2);
    let mut was_alive = true;
    loop {
        tick.tick().await;
        let alive = liveness.alive();
        if alive {
            notify(&[NotifyState::Watchdog]);
        } else if was_alive {
            tracing::error!("A writer or shard loop has stopped; no more watchdog pings.");
        }
        was_alive = alive;
    }
}
