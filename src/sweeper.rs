//! The sweeper: applies the log's retention rules (`log::retention`), purges what deleted
//! applications left (`log::purge`) and expires remembered idempotent replies, in bounded
//! batches — every `SWEEP_INTERVAL`, and batch after batch while there is more — so that
//! old data leaves the log continuously, under steady load as when idle, and no single
//! write is long. The three sweeps run side by side, each on its own tick
//! (`on_every_tick`): a long retention pass (a backlog of millions of old messages) does
//! not hold back the expiry of idempotent replies, which a platform posting through the
//! Svix SDKs makes one of per message. They take turns at the writer, one batch and the
//! pause after it at a time (`Pacer`), so that together they take at most a share of the
//! writer's time.

use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::cluster::Ownership;
use crate::limits::{
    DAY_MS, IDEMPOTENCY_SWEEP_ROWS_MAX, PAYLOAD_PASS_INTERVAL_MS, PURGE_BATCH_ROWS_MAX,
    RETENTION_SWEEP_ROWS_MAX, SWEEP_BATCHES_MAX, SWEEP_INTERVAL, SWEEP_WRITER_SHARE_PERCENT,
};
use crate::log::ops::{Envelope, Op, Outcome};
use crate::log::{Log, LogError};

/// Where the retention sweep's payload pass stands between ticks.
#[derive(Default)]
struct RetentionCursor {
    payload: Option<u64>,
    next_pass_ms: u64,
}

/// A loop that runs `$sweep` (a future, made anew each time) every `SWEEP_INTERVAL`
/// while `$owned()` holds; a failure is logged and the next tick tries again. A macro, not
/// a function taking a closure: the sweep borrows its cursor, so the closure would be an
/// async closure, whose future rustc cannot yet prove `Send` for `tokio::spawn`.
macro_rules! on_every_tick {
    ($owned:expr, $name:literal, $sweep:expr) => {
        async {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                if $owned()
                    && let Err(error) = $sweep.await
                {
                    tracing::warn!(%error, sweep = $name, "A sweep failed; the next tick tries again.");
                }
            }
        }
    };
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
        let owned = || singleton.as_ref().is_none_or(Ownership::owned);
        let mut cursor = RetentionCursor::default();
        let mut legacy_cursor = None;
        let pacer = Pacer::default();
        tokio::join!(
            on_every_tick!(
                owned,
                "retention",
                retention(&pacer, &log, &clock, keep_ms, &mut cursor)
            ),
            on_every_tick!(
                owned,
                "purge of deleted applications",
                purge_deleted_apps(&pacer, &log, &clock)
            ),
            on_every_tick!(
                owned,
                "idempotency expiry",
                expire_idempotency(&pacer, &log, &clock, &mut legacy_cursor)
            ),
        );
    })
}

/// The sweeps' turns at the writer: one batch (and the pause after it) at a time, first
/// come first served, so that the three sweeps *together* take at most
/// `SWEEP_WRITER_SHARE_PERCENT` of the writer's time, and a long retention pass still
/// lets the expiry of replies take its turn after each of its batches.
struct Pacer(tokio::sync::Semaphore);

impl Default for Pacer {
    fn default() -> Pacer {
        // One turn; a semaphore's waiters are served in the order they came.
        Pacer(tokio::sync::Semaphore::new(1))
    }
}

impl Pacer {
    /// Waits for the sweeps' turn, and starts a batch.
    async fn batch(&self) -> Batch<'_> {
        let turn = self
            .0
            .acquire()
            .await
            .expect("the pacer's semaphore is never closed");
        Batch {
            started: tokio::time::Instant::now(),
            _turn: turn,
        }
    }
}

/// A batch in progress, holding the sweeps' turn: every sweep runs at most
/// `SWEEP_BATCHES_MAX` batches a tick, each followed by `Batch::pause`. Dropped without
/// a pause (the sweep had nothing more), it gives the turn back at once.
struct Batch<'a> {
    started: tokio::time::Instant,
    _turn: tokio::sync::SemaphorePermit<'a>,
}

impl Batch<'_> {
    /// Waits, still holding the turn, so that the sweeps' batches take at most
    /// `SWEEP_WRITER_SHARE_PERCENT` of the writer's time.
    async fn pause(self) {
        tokio::time::sleep(pause_after_batch(self.started.elapsed())).await;
    }
}

/// How long the sweeps wait after a batch that took `took` (its submit to its commit), so
/// that their batches take at most `SWEEP_WRITER_SHARE_PERCENT` of the writer's time.
fn pause_after_batch(took: std::time::Duration) -> std::time::Duration {
    took * (100 - SWEEP_WRITER_SHARE_PERCENT) / SWEEP_WRITER_SHARE_PERCENT
}

async fn retention(
    pacer: &Pacer,
    log: &Log,
    clock: &Clock,
    keep_ms: u64,
    cursor: &mut RetentionCursor,
) -> Result<(), LogError> {
    for _ in 0..SWEEP_BATCHES_MAX {
        let batch = pacer.batch().await;
        let now_ms = clock.now_ms();
        let in_pass = cursor.payload.is_some() || now_ms >= cursor.next_pass_ms;
        let op = Op::RetentionSweep {
            delete_before_ms: now_ms.saturating_sub(keep_ms),
            payload_cursor: in_pass.then_some(cursor.payload),
            rows_max: RETENTION_SWEEP_ROWS_MAX as u32,
        };
        let Outcome::Swept(swept) = log.submit(Envelope::new(op, now_ms)).await? else {
            break;
        };
        cursor.payload = swept.payload_cursor;
        if in_pass && swept.payload_pass_done {
            cursor.next_pass_ms = clock.now_ms() + PAYLOAD_PASS_INTERVAL_MS;
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
        batch.pause().await;
    }
    Ok(())
}

/// Purges what deleted applications left, batch after batch while there is more.
async fn purge_deleted_apps(pacer: &Pacer, log: &Log, clock: &Clock) -> Result<(), LogError> {
    let (mut rows, mut apps) = (0, 0);
    for _ in 0..SWEEP_BATCHES_MAX {
        let batch = pacer.batch().await;
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
        batch.pause().await;
    }
    if rows + apps > 0 {
        tracing::info!(rows, apps, "Purged what deleted applications left.");
    }
    Ok(())
}

/// Deletes the remembered replies whose 24 h are up, oldest first, batch after batch while
/// there is more; then sets the `sluice_idempotency_replies` gauge. Replies an earlier
/// layout remembered are found by its scan of their table, one batch a tick, for as long
/// as some remain.
async fn expire_idempotency(
    pacer: &Pacer,
    log: &Log,
    clock: &Clock,
    legacy_cursor: &mut Option<Vec<u8>>,
) -> Result<(), LogError> {
    for _ in 0..SWEEP_BATCHES_MAX {
        let batch = pacer.batch().await;
        let op = Op::ExpireReplies {
            rows_max: IDEMPOTENCY_SWEEP_ROWS_MAX as u32,
        };
        let Outcome::RepliesExpired(expired) =
            log.submit(Envelope::new(op, clock.now_ms())).await?
        else {
            break;
        };
        metrics::counter!(crate::telemetry::name::IDEMPOTENCY_EXPIRED).increment(expired.deleted);
        if !expired.more {
            break;
        }
        batch.pause().await;
    }
    let (replies, mut legacy) = log.idempotency_rows()?;
    if legacy > 0 {
        let op = Op::ExpireIdempotency {
            after: legacy_cursor.take(),
            rows_max: IDEMPOTENCY_SWEEP_ROWS_MAX as u32,
        };
        if let Outcome::IdempotencyExpired { resume, deleted } =
            log.submit(Envelope::new(op, clock.now_ms())).await?
        {
            *legacy_cursor = resume;
            legacy = legacy.saturating_sub(deleted);
            metrics::counter!(crate::telemetry::name::IDEMPOTENCY_EXPIRED).increment(deleted);
        }
    }
    metrics::gauge!(crate::telemetry::name::IDEMPOTENCY_REPLIES).set((replies + legacy) as f64);
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
            (share - f64::from(SWEEP_WRITER_SHARE_PERCENT) / 100.0).abs() < 1e-9,
            "{share}"
        );
        assert_eq!(pause_after_batch(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn sweeps_take_turns_so_that_together_they_keep_to_the_share() {
        let pacer = Pacer::default();
        let first = pacer.batch().await;
        let started = first.started;
        // The first sweep's batch takes 8 ms of the writer.
        tokio::time::advance(Duration::from_millis(8)).await;
        let (_, second) = tokio::join!(first.pause(), pacer.batch());
        // The second sweep's batch starts only once the first's pause is over.
        assert_eq!(
            second.started - started,
            Duration::from_millis(8) + pause_after_batch(Duration::from_millis(8))
        );
        // A batch dropped without a pause (its sweep had nothing more) gives the turn
        // back at once.
        drop(second);
        let third = pacer.batch().await;
        assert_eq!(third.started - started, Duration::from_millis(32));
    }
}
