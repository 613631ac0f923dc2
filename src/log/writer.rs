//! The writer thread: the only place an LMDB write transaction exists.
//!
//! It takes operations from a bounded crossbeam queue, runs as many as are waiting (up to
//! `COMMIT_BATCH_OPS_MAX`) inside one transaction, commits with fsync, and then acks every
//! waiter. This is group commit: while one commit is on the disk, new operations queue up
//! and share the next fsync. A write transaction must begin and commit on one OS thread
//! (lmdb.h, heed#339), which is why this is a `std::thread` and not a task.
//!
//! If an operation returns `Err`, the transaction is aborted, the operations already run in
//! it are acked with that error (nothing of theirs was committed), the operations not yet
//! run are carried into the next batch, and `WriterState` is reloaded from the log, so that
//! the in-memory index and counters never describe uncommitted data.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use heed::{Env, RwTxn, WithoutTls};
use tokio::sync::oneshot;

use super::index::EndpointIndex;
use super::ops::{Envelope, Outcome, RenderReply};
use super::schema::{self, EndpointRecord, meta_key};
use super::{Dbs, LogError, apply};
use crate::heartbeat::Heartbeat;
use crate::limits::{
    COMMIT_BATCH_OPS_MAX, IDEMPOTENCY_REPLIES_MAX, IDLE_WAKE_INTERVAL,
    WRITE_FAILURE_REPORT_INTERVAL,
};
use crate::telemetry;

/// What applying an op sees: the batch transaction, the databases and the writer's state.
pub(in crate::log) struct WriteCtx<'a, 't> {
    pub(in crate::log) wtxn: &'a mut RwTxn<'t>,
    pub(in crate::log) dbs: &'a Dbs,
    pub(in crate::log) state: &'a mut WriterState,
    /// The op's time (ms): its `at_ms`, never less than the previous op's, so
    /// `created_ms` follows `seq` order.
    pub(in crate::log) now_ms: u64,
}

/// State owned by the writer thread, derived from the log and rebuilt from it on abort.
pub(in crate::log) struct WriterState {
    pub(in crate::log) next_seq: u64,
    pub(in crate::log) next_app_key: u64,
    pub(in crate::log) next_endpoint_key: u64,
    pub(in crate::log) next_attempt_key: u64,
    /// Deliveries committed by this batch, handed to the shards after the commit.
    pub(in crate::log) outbox: Vec<super::DueJob>,
    /// Which endpoints each application's messages fan out to.
    pub(in crate::log) endpoints: EndpointIndex,
    /// The most endpoints an application may have (as `meta` holds it).
    pub(in crate::log) endpoints_per_app_max: u32,
    /// Where the delivery index stands (counted from the tables on load).
    pub(in crate::log) unindexed: super::deliveries::Unindexed,
    counters_dirty: bool,
    /// The endpoint counts last set on the `sluice_endpoints` gauge.
    published_endpoint_counts: Option<(u64, u64)>,
    /// The time of the last op applied (stored in `meta`, so a restart goes on from it).
    last_now_ms: u64,
    /// Cluster mode: the stream sequence of the last op applied (stored in `meta` with
    /// the op's effects, so a restart resumes right after it). 0: none, or embedded.
    pub(in crate::log) applied_seq: u64,
    /// The part of the stream message at `applied_seq` applied last (a message carries a
    /// batch of ops, all applied in one transaction; `u32::MAX` once it is committed).
    applied_part: u32,
    /// The reply index's changes in the batch being applied (applied after its commit).
    pub(in crate::log) reply_changes: super::replies::Pending,
    /// The most replies `replies` keeps (`IDEMPOTENCY_REPLIES_MAX`; tests set fewer).
    pub(in crate::log) replies_max: u64,
}

impl WriterState {
    pub(super) fn load(env: &Env<WithoutTls>, dbs: &Dbs) -> Result<WriterState, LogError> {
        let rtxn = env.read_txn()?;
        let counter = |key: &[u8]| -> Result<u64, LogError> {
            Ok(dbs
                .meta
                .get(&rtxn, key)?
                .map(|v| schema::read_u64("meta", v, 0))
                .transpose()?
                .unwrap_or(1))
        };
        let mut endpoints = EndpointIndex::default();
        for row in dbs.endpoints.iter(&rtxn)? {
            let (_, value) = row?;
            let record: EndpointRecord = schema::decode_json(schema::db_name::ENDPOINTS, value)?;
            endpoints.upsert(&record);
        }
        // Logs written before the clock was stored go on from their newest message.
        let last_now_ms = match dbs.meta.get(&rtxn, meta_key::APPLIED_MS)? {
            Some(value) => schema::read_u64("meta", value, 0)?,
            None => match dbs.msgs.last(&rtxn)? {
                Some((_, value)) => schema::MessageRecord::decode(value)?.created_ms,
                None => 0,
            },
        };
        let applied_seq = match dbs.meta.get(&rtxn, meta_key::APPLIED_SEQ)? {
            Some(value) => schema::read_u64("meta", value, 0)?,
            None => 0,
        };
        let endpoints_per_app_max = super::tables::endpoints_per_app_max(&rtxn, dbs)?;
        let unindexed = super::deliveries::Unindexed::load(&rtxn, dbs)?;
        dbs.reply_index
            .rebuild(super::tables::reply_index_map(&rtxn, dbs)?);
        Ok(WriterState {
            applied_seq,
            // A stream message's ops commit together: the one at `applied_seq` is whole.
            applied_part: u32::MAX,
            endpoints_per_app_max,
            unindexed,
            next_seq: counter(meta_key::NEXT_SEQ)?,
            next_app_key: counter(meta_key::NEXT_APP_KEY)?,
            next_endpoint_key: counter(meta_key::NEXT_ENDPOINT_KEY)?,
            next_attempt_key: counter(meta_key::NEXT_ATTEMPT_KEY)?,
            outbox: Vec::new(),
            endpoints,
            counters_dirty: false,
            published_endpoint_counts: None,
            last_now_ms,
            reply_changes: super::replies::Pending::default(),
            replies_max: IDEMPOTENCY_REPLIES_MAX,
        })
    }

    /// Sets the `sluice_endpoints` gauge when the counts changed.
    fn publish_endpoint_counts(&mut self) {
        let counts = self.endpoints.counts();
        if self.published_endpoint_counts != Some(counts) {
            let (enabled, disabled) = counts;
            metrics::gauge!(telemetry::name::ENDPOINTS, "state" => "enabled").set(enabled as f64);
            metrics::gauge!(telemetry::name::ENDPOINTS, "state" => "disabled").set(disabled as f64);
            self.published_endpoint_counts = Some(counts);
        }
    }

    /// Hands out the next message sequence number.
    pub(in crate::log) fn take_seq(&mut self) -> u64 {
        self.counters_dirty = true;
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub(in crate::log) fn take_app_key(&mut self) -> u64 {
        self.counters_dirty = true;
        let key = self.next_app_key;
        self.next_app_key += 1;
        key
    }

    pub(in crate::log) fn take_endpoint_key(&mut self) -> u64 {
        self.counters_dirty = true;
        let key = self.next_endpoint_key;
        self.next_endpoint_key += 1;
        key
    }

    pub(in crate::log) fn take_attempt_key(&mut self) -> u64 {
        self.counters_dirty = true;
        let key = self.next_attempt_key;
        self.next_attempt_key += 1;
        key
    }

    fn flush_counters(&mut self, wtxn: &mut RwTxn<'_>, dbs: &Dbs) -> Result<(), LogError> {
        if self.counters_dirty {
            dbs.meta
                .put(wtxn, meta_key::NEXT_SEQ, &schema::u64_key(self.next_seq))?;
            dbs.meta.put(
                wtxn,
                meta_key::NEXT_APP_KEY,
                &schema::u64_key(self.next_app_key),
            )?;
            dbs.meta.put(
                wtxn,
                meta_key::NEXT_ENDPOINT_KEY,
                &schema::u64_key(self.next_endpoint_key),
            )?;
            dbs.meta.put(
                wtxn,
                meta_key::NEXT_ATTEMPT_KEY,
                &schema::u64_key(self.next_attempt_key),
            )?;
            dbs.meta.put(
                wtxn,
                meta_key::APPLIED_MS,
                &schema::u64_key(self.last_now_ms),
            )?;
            // Absent in the embedded mode, whose tables stay as they were.
            if self.applied_seq > 0 {
                dbs.meta.put(
                    wtxn,
                    meta_key::APPLIED_SEQ,
                    &schema::u64_key(self.applied_seq),
                )?;
            }
            self.counters_dirty = false;
        }
        Ok(())
    }
}

/// What the writer tells the rest of Sluice about its commits.
#[derive(Default)]
pub(super) struct WriterHealth {
    /// The last batch's failure (`None` once a batch commits again).
    failure: std::sync::Mutex<Option<String>>,
}

impl WriterHealth {
    pub(super) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, failure: Option<String>) {
        *self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = failure;
    }
}

/// Reports failing batches at most once per `WRITE_FAILURE_REPORT_INTERVAL`, with how
/// many failed since the last report, and once when writing works again: a full disk
/// makes one line every ten seconds, not one per request.
#[derive(Default)]
struct FailureReport {
    last_reported: Option<std::time::Instant>,
    unreported: u64,
    since_success: u64,
}

impl FailureReport {
    fn failed(&mut self, error: &LogError) {
        self.unreported += 1;
        self.since_success += 1;
        let due = self
            .last_reported
            .is_none_or(|at| at.elapsed() >= WRITE_FAILURE_REPORT_INTERVAL);
        if due {
            tracing::error!(
                %error,
                failed_batches = self.unreported,
                "Write batches are failing; their ops were answered with the error and the \
                 writer state was reloaded from the log. (Reported at most every 10 s.)"
            );
            self.last_reported = Some(std::time::Instant::now());
            self.unreported = 0;
        }
    }

    fn committed(&mut self) {
        if self.since_success > 0 {
            tracing::info!(
                failed_batches = self.since_success,
                "Write batches commit again."
            );
            *self = FailureReport::default();
        }
    }
}

/// One queued op and its waiter (none for an op another cluster node published).
pub(super) struct Job {
    pub(super) envelope: Envelope,
    pub(super) waiter: Option<oneshot::Sender<Result<Outcome, LogError>>>,
    /// Cluster mode: the op's sequence in the replicated stream (sequences start at 1;
    /// 0: an op of the embedded mode).
    pub(super) stream_seq: u64,
    /// Cluster mode: the op's place in its stream message's batch.
    pub(super) stream_part: u32,
}

type Waiter = Option<oneshot::Sender<Result<Outcome, LogError>>>;

fn answer(waiter: Waiter, result: Result<Outcome, LogError>) {
    // The waiter may have gone (client disconnected); the write stands.
    if let Some(waiter) = waiter {
        let _ = waiter.send(result);
    }
}

/// What the writer's intake carries.
pub(super) enum Intake {
    Apply(Job),
    /// Cluster mode: the ops of one stream message, in order. They are queued together
    /// and so applied in one transaction: `applied_seq` never falls inside a message.
    ApplyStream(Vec<Job>),
    /// Test hook (`SLUICE_TEST_HOOKS`, debug builds only): the writer parks for good, as
    /// a deadlock would.
    #[cfg(debug_assertions)]
    Wedge,
}

impl Intake {
    /// The jobs an `Apply` or `ApplyStream` carries (a full intake gives back what it
    /// could not take).
    pub(super) fn into_jobs(self) -> Vec<Job> {
        match self {
            Intake::Apply(job) => vec![job],
            Intake::ApplyStream(jobs) => jobs,
            #[cfg(debug_assertions)]
            Intake::Wedge => Vec::new(),
        }
    }
}

/// What the writer tells the rest of the process besides its waiters.
pub(super) struct Signals<'a> {
    /// Beaten on every turn of the loop (the watchdog's proof of progress).
    pub(super) heartbeat: &'a Heartbeat,
    /// Whether the last batch failed to commit, and why (for health).
    pub(super) health: &'a WriterHealth,
    /// Cluster mode: the stream sequence of the last op committed.
    pub(super) applied_seq: &'a AtomicU64,
    /// How many pages of the file LMDB has written, after each commit (for the reserve).
    pub(super) written_pages: &'a super::reserve::WrittenPages,
}

/// The writer thread's loop; returns when every `Log` handle has been dropped.
pub(super) fn run(
    env: &Env<WithoutTls>,
    dbs: Dbs,
    mut state: WriterState,
    intake: &Receiver<Intake>,
    render: Option<RenderReply>,
    publisher: Option<&super::Publisher>,
    signals: &Signals<'_>,
) {
    let Signals {
        heartbeat,
        health,
        applied_seq,
        written_pages,
    } = signals;
    let mut queued: VecDeque<Job> = VecDeque::new();
    let mut report = FailureReport::default();
    let take = |item: Intake, queued: &mut VecDeque<Job>| match item {
        Intake::Apply(job) => queued.push_back(job),
        Intake::ApplyStream(jobs) => queued.extend(jobs),
        #[cfg(debug_assertions)]
        Intake::Wedge => loop {
            std::thread::park();
        },
    };
    loop {
        heartbeat.beat();
        if queued.is_empty() {
            match intake.recv_timeout(IDLE_WAKE_INTERVAL) {
                Ok(item) => take(item, &mut queued),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        while queued.len() < COMMIT_BATCH_OPS_MAX {
            match intake.try_recv() {
                Ok(item) => take(item, &mut queued),
                Err(_) => break,
            }
        }
        let replicated = queued.iter().any(|job| job.stream_seq > 0);
        let result = run_batch(env, &dbs, &mut state, &mut queued, render, applied_seq);
        let committed = std::mem::take(&mut state.outbox);
        if let (Ok(()), Some(publisher)) = (&result, publisher) {
            publisher.publish(committed.into_iter());
        }
        match &result {
            Ok(()) => {
                written_pages.set(env.info().last_page_number as u64 + 1);
                if report.since_success > 0 {
                    health.set(None);
                }
                report.committed();
            }
            Err(error) => {
                if replicated {
                    // A node that skipped an op of the stream would diverge from the
                    // others for good. Stop instead: the restart resumes at the stored
                    // applied_seq and tries that op again (systemd restarts the process).
                    tracing::error!(%error, "An op of the cluster stream could not be applied; Sluice stops.");
                    std::process::abort();
                }
                report.failed(error);
                health.set(Some(error.to_string()));
            }
        }
        if result.is_err() {
            match WriterState::load(env, &dbs) {
                Ok(reloaded) => state = reloaded,
                Err(error) => {
                    // The log cannot be read back: continuing would acknowledge writes on
                    // top of an index we cannot trust, and fail every write until the
                    // watchdog noticed. Stop the process now; systemd restarts it and the
                    // start-up path reports the problem.
                    tracing::error!(%error, "Cannot reload writer state; Sluice stops.");
                    std::process::abort();
                }
            }
        }
    }
}

/// Applies the queued jobs in one write transaction and commits it; then, on success,
/// publishes the new `applied_seq` *before* answering any waiter, so a request answered
/// for a stream op always finds that op counted in `Log::applied_seq`.
fn run_batch(
    env: &Env<WithoutTls>,
    dbs: &Dbs,
    state: &mut WriterState,
    queued: &mut VecDeque<Job>,
    render: Option<RenderReply>,
    applied_seq: &AtomicU64,
) -> Result<(), LogError> {
    let mut wtxn = match env.write_txn() {
        Ok(wtxn) => wtxn,
        Err(error) => {
            let error = LogError::from(error);
            for job in queued.drain(..) {
                answer(job.waiter, Err(error.clone()));
            }
            return Err(error);
        }
    };
    let started = std::time::Instant::now();
    let mut applied: Vec<(Waiter, Outcome)> = Vec::with_capacity(queued.len());
    let mut failure = None;
    {
        let mut ctx = WriteCtx {
            wtxn: &mut wtxn,
            dbs,
            state,
            now_ms: 0,
        };
        while let Some(job) = queued.pop_front() {
            let Job {
                envelope,
                waiter,
                stream_seq,
                stream_part,
            } = job;
            if stream_seq > 0 {
                let applied = (ctx.state.applied_seq, ctx.state.applied_part);
                if (stream_seq, stream_part) <= applied {
                    // Already in the log (a consumer that re-read the stream): applying
                    // it twice would diverge; it changes nothing, and nobody here waits.
                    continue;
                }
                ctx.state.applied_seq = stream_seq;
                ctx.state.applied_part = stream_part;
                ctx.state.counters_dirty = true;
            }
            match apply_one(&mut ctx, envelope, render) {
                Ok(outcome) => applied.push((waiter, outcome)),
                Err(error) => {
                    answer(waiter, Err(error.clone()));
                    failure = Some(error);
                    break;
                }
            }
        }
    }
    let result = match failure {
        Some(error) => Err(error),
        None => state
            .flush_counters(&mut wtxn, dbs)
            .and_then(|()| wtxn.commit().map_err(LogError::from)),
    };
    if result.is_ok() {
        applied_seq.store(state.applied_seq, Ordering::Release);
        // Before any waiter hears of the commit: a retry of a request answered now finds
        // its remembered reply.
        dbs.reply_index.apply(&mut state.reply_changes);
        telemetry::committed(started.elapsed(), applied.len());
        state.publish_endpoint_counts();
    } else {
        state.reply_changes.clear();
        metrics::counter!(telemetry::name::COMMITS_FAILED).increment(1);
    }
    for (waiter, outcome) in applied {
        answer(waiter, result.clone().map(|()| outcome));
    }
    result
}

/// Applies one envelope at its (clamped) time and stores its remembered reply.
fn apply_one(
    ctx: &mut WriteCtx<'_, '_>,
    envelope: Envelope,
    render: Option<RenderReply>,
) -> Result<Outcome, LogError> {
    // The log's time never goes back: `created_ms` follows `seq`, whatever the clocks of
    // the nodes that built the ops.
    ctx.now_ms = envelope.at_ms.max(ctx.state.last_now_ms);
    if ctx.now_ms != ctx.state.last_now_ms {
        ctx.state.last_now_ms = ctx.now_ms;
        ctx.state.counters_dirty = true;
    }
    let outcome = apply::apply(ctx, envelope.op)?;
    if let (Some(key), Some(render)) = (envelope.remember, render)
        && let Some((status, body)) = render(&outcome)
    {
        apply::remember_reply(ctx, &key, status, body)?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_batches_are_reported_once_per_interval_with_a_count() {
        let mut report = FailureReport::default();
        report.failed(&LogError::DiskFull);
        assert_eq!(
            report.unreported, 0,
            "the first failure is reported at once"
        );
        let first = report.last_reported.expect("reported");
        for _ in 0..1_000 {
            report.failed(&LogError::DiskFull);
        }
        assert_eq!(
            report.last_reported,
            Some(first),
            "not again within the interval"
        );
        assert_eq!((report.unreported, report.since_success), (1_000, 1_001));
        report.committed();
        assert_eq!(report.since_success, 0);
        assert!(
            report.last_reported.is_none(),
            "the next episode is reported at once"
        );
    }
}
