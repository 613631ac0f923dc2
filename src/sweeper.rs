//! The sweeper: applies the log's retention rules (`log::retention`), purges what deleted
//! applications left (`log::purge`) and expires remembered idempotent replies, in bounded
//! batches — every `SWEEP_INTERVAL`, and batch
//! after batch while there is more — so that old data leaves the log continuously, under
//! steady load as when idle, and no single write is long.

use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::cluster::Ownership;
use crate::limits::{
    DAY_MS, IDEMPOTENCY_SWEEP_ROWS_MAX, PAYLOAD_PASS_INTERVAL_MS, PURGE_BATCH_ROWS_MAX,
    RETENTION_SWEEP_BATCHES_MAX, RETENTION_SWEEP_ROWS_MAX, RETENTION_WRITER_SHARE_PERCENT,
    SWEEP_INTERVAL,
};
use crate::log::ops::{Envelope, Op, Outcome};
use crate::log::{Log, LogError};

/// Where the retention sweep and the idempotency sweep stand between ticks.
#[derive(Default)]
struct Cursors {
    payload: Option<u64>,
    next_pass_ms: u64,
    idempotency: Option<Vec<u8>>,
}

/// Starts the sweeper; it runs until the handle is aborted. In cluster mode it sweeps
/// only while this node holds the `singleton` lease (one sweeper for the cluster).
pub fn start(
    log: Log,
    clock: Clock,
    retention_days: u16,
    singleton: Option<Ownership>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let keep_ms = u64::from(retention_days) * DAY_MS;
        let mut cursors = Cursors::default();
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            if singleton.as_ref().is_some_and(|s| !s.owned()) {
                continue;
            }
            if let Err(error) = retention(&log, &clock, keep_ms, &mut cursors).await {
                tracing::warn!(%error, "Retention sweep failed; will retry.");
            }
            if let Err(error) = purge_deleted_apps(&log, &clock).await {
                tracing::warn!(%error, "Purge of deleted applications failed; will retry.");
            }
            if let Err(error) = expire_idempotency(&log, &clock, &mut cursors).await {
                tracing::warn!(%error, "Idempotency sweep failed; will retry.");
            }
        }
    })
}

async fn retention(
    log: &Log,
    clock: &Clock,
    keep_ms: u64,
    cursors: &mut Cursors,
) -> Result<(), LogError> {
    for _ in 0..RETENTION_SWEEP_BATCHES_MAX {
        let now_ms = clock.now_ms();
        let in_pass = cursors.payload.is_some() || now_ms >= cursors.next_pass_ms;
        let op = Op::RetentionSweep {
            delete_before_ms: now_ms.saturating_sub(keep_ms),
            payload_cursor: in_pass.then_some(cursors.payload),
            rows_max: RETENTION_SWEEP_ROWS_MAX as u32,
        };
        let started = tokio::time::Instant::now();
        let Outcome::Swept(swept) = log.submit(Envelope::new(op, now_ms)).await? else {
            return Ok(());
        };
        let took = started.elapsed();
        cursors.payload = swept.payload_cursor;
        if in_pass && swept.payload_pass_done {
            cursors.next_pass_ms = clock.now_ms() + PAYLOAD_PASS_INTERVAL_MS;
        }
        metrics::counter!(crate::telemetry::name::RETENTION_MESSAGES_DELETED)
            .increment(swept.messages_deleted);
        metrics::counter!(crate::telemetry::name::RETENTION_PAYLOADS_DROPPED)
            .increment(swept.payloads_dropped);
        if swept.messages_deleted + swept.payloads_dropped > 0 {
            tracing::info!(
                messages_deleted = swept.messages_deleted,
                payloads_dropped = swept.payloads_dropped,
                "Retention sweep."
            );
        }
        if !swept.more {
            break;
        }
        tokio::time::sleep(pause_after_batch(took)).await;
    }
    Ok(())
}

/// How long the sweep waits after a batch that took `took` (its submit to its commit),
/// so that its batches take at most `RETENTION_WRITER_SHARE_PERCENT` of the writer's time.
fn pause_after_batch(took: std::time::Duration) -> std::time::Duration {
    took * (100 - RETENTION_WRITER_SHARE_PERCENT) / RETENTION_WRITER_SHARE_PERCENT
}

/// Purges what deleted applications left, batch after batch while there is more (at most
/// `RETENTION_SWEEP_BATCHES_MAX` batches a tick).
async fn purge_deleted_apps(log: &Log, clock: &Clock) -> Result<(), LogError> {
    let (mut rows, mut apps) = (0, 0);
    for _ in 0..RETENTION_SWEEP_BATCHES_MAX {
        let op = Op::PurgeDeletedApps {
            rows_max: PURGE_BATCH_ROWS_MAX as u32,
        };
        let Outcome::Purged(purged) = log.submit(Envelope::new(op, clock.now_ms())).await? else {
            break;
        };
        rows += purged.rows;
        apps += purged.apps_done;
        if !purged.more {
            break;
        }
    }
    if rows + apps > 0 {
        tracing::info!(rows, apps, "Purged what deleted applications left.");
    }
    Ok(())
}

/// One bounded batch of expired idempotency rows per tick, resuming where the last
/// stopped: the table is cleaned continuously, never by one long transaction.
async fn expire_idempotency(
    log: &Log,
    clock: &Clock,
    cursors: &mut Cursors,
) -> Result<(), LogError> {
    let op = Op::ExpireIdempotency {
        after: cursors.idempotency.take(),
        rows_max: IDEMPOTENCY_SWEEP_ROWS_MAX as u32,
    };
    if let Outcome::IdempotencyExpired { resume, .. } =
        log.submit(Envelope::new(op, clock.now_ms())).await?
    {
        cursors.idempotency = resume;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_is_followed_by_a_pause_that_keeps_the_sweep_to_its_share() {
        let took = Duration::from_millis(8);
        let pause = pause_after_batch(took);
        let share = took.as_secs_f64() / (took + pause).as_secs_f64();
        assert!(
            (share - f64::from(RETENTION_WRITER_SHARE_PERCENT) / 100.0).abs() < 1e-9,
            "{share}"
        );
        assert_eq!(pause_after_batch(Duration::ZERO), Duration::ZERO);
    }
}
