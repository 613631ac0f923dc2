//! The one reader of the `due` table. Every `SCAN_INTERVAL` (sooner when a shard asks,
//! never more often than `SCAN_SOON_GAP`) it reads the next rows due within `HORIZON_MS`,
//! round robin from where its last read stopped, and hands each shard its own rows. That
//! is how start-up recovers, how dropped hand-offs are picked up and how far-off retries
//! come back. One read serves every shard: before, each shard read the same rows and kept
//! its share of them.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::attempt::AttemptCtx;
use crate::heartbeat::Heartbeat;
use crate::limits::{HORIZON_MS, SCAN_INTERVAL, SCAN_ROWS_MAX, SCAN_SOON_GAP};
use crate::log::tables;
use crate::log::{DueJob, Publisher};

/// Where the scanner's next read starts, and how a read's rows are split among shards.
#[derive(Debug, Default)]
pub struct DueScan {
    /// The row after which the next read resumes; `None`: from the earliest.
    resume: Option<DueJob>,
}

impl DueScan {
    /// The next read at `now_ms`: after which row, and due by when.
    pub fn next_read(&self, now_ms: u64) -> (Option<DueJob>, u64) {
        (self.resume, now_ms + HORIZON_MS)
    }

    /// What a read found, split by shard (index: shard); the next read resumes after
    /// `resume` (`None`: the read reached the horizon, the next starts from the earliest).
    pub fn found(
        &mut self,
        jobs: Vec<DueJob>,
        resume: Option<DueJob>,
        shards: usize,
    ) -> Vec<Vec<DueJob>> {
        self.resume = resume;
        let mut split = vec![Vec::new(); shards];
        for job in jobs {
            split[Publisher::shard_of(job.endpoint_key, shards)].push(job);
        }
        split
    }
}

/// The scanner's task: reads at each interval or when `soon` is notified, until `stop`.
/// A shard still busy with the previous rows misses this read's (they stay in the log,
/// and the next round brings them).
pub async fn run(
    ctx: Arc<AttemptCtx>,
    shards: Vec<mpsc::Sender<Vec<DueJob>>>,
    soon: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    heartbeat: Arc<Heartbeat>,
) {
    let mut scan = DueScan::default();
    let mut last_read = Instant::now();
    let mut next_read = last_read; // At once: start-up recovery.
    loop {
        heartbeat.beat();
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep_until(next_read) => {}
            () = soon.notified() => tokio::time::sleep_until(last_read + SCAN_SOON_GAP).await,
        }
        let (after, until_ms) = scan.next_read(ctx.clock.now_ms());
        let read = ctx
            .log
            .read(|rtxn, dbs| tables::due_rows(rtxn, dbs, after, until_ms, SCAN_ROWS_MAX));
        match read {
            Ok((jobs, resume)) => {
                let split = scan.found(jobs, resume, shards.len());
                for (shard, jobs) in shards.iter().zip(split) {
                    if !jobs.is_empty() {
                        let _ = shard.try_send(jobs);
                    }
                }
            }
            Err(error) => tracing::error!(%error, "Scan of due deliveries failed."),
        }
        last_read = Instant::now();
        next_read = last_read + SCAN_INTERVAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{EndpointKey, Seq};

    fn job(endpoint_key: u64, seq: u64, due_ms: u64) -> DueJob {
        DueJob {
            endpoint_key: EndpointKey(endpoint_key),
            seq: Seq(seq),
            due_ms,
        }
    }

    #[test]
    fn a_read_resumes_where_the_last_one_stopped_and_starts_over_at_the_horizon() {
        let mut scan = DueScan::default();
        assert_eq!(scan.next_read(0), (None, HORIZON_MS));
        let resume = Some(job(7, 3, 50));
        scan.found(Vec::new(), resume, 4);
        assert_eq!(scan.next_read(10), (resume, 10 + HORIZON_MS));
        scan.found(Vec::new(), None, 4);
        assert_eq!(scan.next_read(20), (None, 20 + HORIZON_MS));
    }

    #[test]
    fn each_shard_gets_exactly_its_own_rows_in_read_order() {
        let shards = 4;
        let jobs: Vec<DueJob> = (1..=200).map(|n| job(n % 37, n, n * 10)).collect();
        let split = DueScan::default().found(jobs.clone(), None, shards);
        assert_eq!(split.len(), shards);
        for (shard, rows) in split.iter().enumerate() {
            let expected: Vec<DueJob> = jobs
                .iter()
                .copied()
                .filter(|j| Publisher::shard_of(j.endpoint_key, shards) == shard)
                .collect();
            assert_eq!(rows, &expected);
        }
        assert_eq!(split.iter().map(Vec::len).sum::<usize>(), jobs.len());
    }
}
