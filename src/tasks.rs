//! The background-task runner: advances every running task (recover, replay-missing) one
//! bounded batch at a time, round-robin, until each has finished or failed.
//!
//! The runner holds no task state of its own: which tasks run and how far each has come
//! are in the log (`log::tasks`), so a restart picks up exactly where the last committed
//! batch stopped. The API wakes the runner after it creates a task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::cluster::Ownership;
use crate::limits::TASK_RETRY_DELAY;
use crate::log::ops::{Envelope, Op, Outcome};
use crate::log::{Log, LogError, tasks};

/// The running task runner.
pub struct TaskRunner {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl TaskRunner {
    /// Starts the runner; `wake` is notified by whoever creates a task. In cluster mode
    /// it runs tasks only while this node holds the `singleton` lease, and also looks
    /// every `CLUSTER_TASK_POLL` (a task created on another node wakes nobody here).
    pub fn start(
        log: Log,
        clock: Clock,
        wake: Arc<Notify>,
        singleton: Option<Ownership>,
    ) -> TaskRunner {
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(run(log, clock, wake, singleton, stopped));
        TaskRunner { stop, handle }
    }

    /// Stops after the batch in progress (batches are single writes: none is cut short).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// How often a cluster node's runner looks for running tasks without being woken.
const CLUSTER_TASK_POLL: Duration = Duration::from_secs(1);

async fn run(
    log: Log,
    clock: Clock,
    wake: Arc<Notify>,
    mut singleton: Option<Ownership>,
    mut stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow() {
        if let Some(singleton) = singleton.as_mut().filter(|s| !s.owned()) {
            tokio::select! {
                () = singleton.changed() => {}
                () = tokio::time::sleep(CLUSTER_TASK_POLL) => {}
                _ = stopped.changed() => {}
            }
            continue;
        }
        let running = match log.read(|rtxn, dbs| tasks::running(rtxn, dbs)) {
            Ok(running) => running,
            Err(error) => {
                tracing::error!(%error, "Cannot list running background tasks.");
                Vec::new()
            }
        };
        if running.is_empty() {
            let poll = async {
                match singleton {
                    Some(_) => tokio::time::sleep(CLUSTER_TASK_POLL).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake.notified() => {}
                () = poll => {}
                _ = stopped.changed() => {}
            }
            continue;
        }
        for key in running {
            if *stopped.borrow() || singleton.as_ref().is_some_and(|s| !s.owned()) {
                break;
            }
            if let Err(error) = advance(&log, &clock, key).await {
                tracing::warn!(%error, task = key, "A background-task batch failed; retrying.");
                tokio::select! {
                    () = tokio::time::sleep(TASK_RETRY_DELAY) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
    }
}

async fn advance(log: &Log, clock: &Clock, key: u64) -> Result<(), LogError> {
    let op = Op::AdvanceTask { task_key: key };
    let Outcome::TaskAdvanced(task) = log.submit(Envelope::new(op, clock.now_ms())).await? else {
        return Ok(());
    };
    if let Some(task) = task.filter(|t| t.status != crate::log::schema::TaskStatus::Running) {
        tracing::info!(
            id = %task.id,
            status = ?task.status,
            messages_sent = task.messages_sent,
            "Background task ended."
        );
    }
    Ok(())
}
