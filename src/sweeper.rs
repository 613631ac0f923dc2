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
const DAY_MS: u64 = 86_400_000;

/// Starts the sweeper; it runs until the handle is aborted.
pub fn start(log: Log, clock: Clock, retention_days: u16) -> JoinHandle<()> {
    tokio::spawn(async move {
        let keep_ms = u64::from(retention_days) * DAY_MS;
        let mut cursor = None;
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            for _ in 0..RETENTION_SWEEP_BATCHES_MAX {
                let before = clock.now_ms().saturating_sub(keep_ms);
                let from = cursor;
                let batch =
                    log.write(move |w| retention::sweep(w, before, from, RETENTION_SWEEP_ROWS_MAX));
                match batch.await {
                    Ok(swept) => {
                        cursor = swept.payload_cursor;
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
