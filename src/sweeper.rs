//! The retention sweeper: applies the log's retention rules (`log::retention`) in bounded
//! batches — every `SWEEP_INTERVAL`, and batch after batch while there is more — so that
//! old data leaves the log continuously and no single write is long.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::limits::{RETENTION_SWEEP_BATCHES_MAX, RETENTION_SWEEP_ROWS_MAX};
use crate::log::{Log, retention};

/// How often the sweeper looks for data past its retention.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// The least time between the starts of two passes over the log for expired payloads:
/// a pass reads every message older than a day, so it is not repeated every tick, and a
/// payload outlives its retention by at most about this long.
pub const PAYLOAD_PASS_INTERVAL_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;

/// Starts the sweeper; it runs until the handle is aborted.
pub fn start(log: Log, clock: Clock, retention_days: u16) -> JoinHandle<()> {
    tokio::spawn(async move {
        let keep_ms = u64::from(retention_days) * DAY_MS;
        let mut cursor = None;
        let mut next_pass_ms = 0;
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            for _ in 0..RETENTION_SWEEP_BATCHES_MAX {
                let before = clock.now_ms().saturating_sub(keep_ms);
                let in_pass = cursor.is_some() || clock.now_ms() >= next_pass_ms;
                let from = in_pass.then_some(cursor);
                let batch =
                    log.write(move |w| retention::sweep(w, before, from, RETENTION_SWEEP_ROWS_MAX));
                match batch.await {
                    Ok(swept) => {
                        cursor = swept.payload_cursor;
                        if in_pass && swept.payload_pass_done {
                            next_pass_ms = clock.now_ms() + PAYLOAD_PASS_INTERVAL_MS;
                        }
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
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Retention sweep failed; will retry.");
                        break;
                    }
                }
            }
        }
    })
}
