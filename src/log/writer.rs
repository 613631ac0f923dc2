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
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use heed::{Env, RwTxn, WithoutTls};
use tokio::sync::oneshot;

use super::index::EndpointIndex;
use super::schema::{self, EndpointRecord, IdempotencyRecord, meta_key};
use super::{Dbs, LogError};
use crate::clock::Clock;
use crate::heartbeat::Heartbeat;
use crate::limits::{COMMIT_BATCH_OPS_MAX, IDEMPOTENCY_SWEEP_ROWS_MAX, IDEMPOTENCY_TTL_MS};
use crate::telemetry;

/// How long the writer waits for work before it does housekeeping.
const IDLE_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// What an operation sees: the batch transaction, the databases and the writer's state.
pub struct WriteCtx<'a, 't> {
    pub wtxn: &'a mut RwTxn<'t>,
    pub dbs: &'a Dbs,
    pub state: &'a mut WriterState,
    /// The batch's time (ms): one value for every operation of the batch, never decreasing
    /// from one batch to the next, so `created_ms` follows `seq` order.
    pub now_ms: u64,
}

/// State owned by the writer thread, derived from the log and rebuilt from it on abort.
pub struct WriterState {
    pub next_seq: u64,
    pub next_app_key: u64,
    pub next_endpoint_key: u64,
    pub next_attempt_key: u64,
    /// Deliveries committed by this batch, handed to the shards after the commit.
    pub outbox: Vec<super::DueJob>,
    /// Which endpoints each application's messages fan out to.
    pub endpoints: EndpointIndex,
    counters_dirty: bool,
    /// The endpoint counts last set on the `sluice_endpoints` gauge.
    published_endpoint_counts: Option<(u64, u64)>,
    last_now_ms: u64,
    sweep_from: Option<Vec<u8>>,
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
        let last_now_ms = match dbs.msgs.last(&rtxn)? {
            Some((_, value)) => schema::MessageRecord::decode(value)?.created_ms,
            None => 0,
        };
        Ok(WriterState {
            next_seq: counter(meta_key::NEXT_SEQ)?,
            next_app_key: counter(meta_key::NEXT_APP_KEY)?,
            next_endpoint_key: counter(meta_key::NEXT_ENDPOINT_KEY)?,
            next_attempt_key: counter(meta_key::NEXT_ATTEMPT_KEY)?,
            outbox: Vec::new(),
            endpoints,
            counters_dirty: false,
            published_endpoint_counts: None,
            last_now_ms,
            sweep_from: None,
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
    pub fn take_seq(&mut self) -> u64 {
        self.counters_dirty = true;
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub fn take_app_key(&mut self) -> u64 {
        self.counters_dirty = true;
        let key = self.next_app_key;
        self.next_app_key += 1;
        key
    }

    pub fn take_endpoint_key(&mut self) -> u64 {
        self.counters_dirty = true;
        let key = self.next_endpoint_key;
        self.next_endpoint_key += 1;
        key
    }

    pub fn take_attempt_key(&mut self) -> u64 {
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
            self.counters_dirty = false;
        }
        Ok(())
    }
}

type Completion = Box<dyn FnOnce(Result<(), LogError>) + Send>;

enum Ran {
    Applied(Completion),
    Failed(LogError),
}

/// One queued write: the closure to run in the batch transaction and its waiter.
pub(super) struct Op {
    run: Box<dyn FnOnce(&mut WriteCtx<'_, '_>) -> Ran + Send>,
}

impl Op {
    pub(super) fn new<R, F>(f: F, waiter: oneshot::Sender<Result<R, LogError>>) -> Op
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_, '_>) -> Result<R, LogError> + Send + 'static,
    {
        Op {
            run: Box::new(move |ctx| match f(ctx) {
                Ok(result) => Ran::Applied(Box::new(move |commit| {
                    // The waiter may have gone (client disconnected); the write stands.
                    let _ = waiter.send(commit.map(|()| result));
                })),
                Err(error) => {
                    let _ = waiter.send(Err(error.clone()));
                    Ran::Failed(error)
                }
            }),
        }
    }
}

/// The writer thread's loop; returns when every `Log` handle has been dropped.
pub(super) fn run(
    env: &Env<WithoutTls>,
    dbs: Dbs,
    mut state: WriterState,
    ops: &Receiver<Op>,
    clock: &Clock,
    publisher: Option<&super::Publisher>,
    heartbeat: &Heartbeat,
) {
    let mut queued: VecDeque<Op> = VecDeque::new();
    loop {
        heartbeat.beat();
        if queued.is_empty() {
            match ops.recv_timeout(IDLE_MAINTENANCE_INTERVAL) {
                Ok(op) => queued.push_back(op),
                Err(RecvTimeoutError::Timeout) => {
                    sweep_idempotency(env, &dbs, &mut state, clock.now_ms());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        while queued.len() < COMMIT_BATCH_OPS_MAX {
            match ops.try_recv() {
                Ok(op) => queued.push_back(op),
                Err(_) => break,
            }
        }
        let now_ms = clock.now_ms().max(state.last_now_ms);
        state.last_now_ms = now_ms;
        let result = run_batch(env, &dbs, &mut state, &mut queued, now_ms);
        let committed = std::mem::take(&mut state.outbox);
        if let (Ok(()), Some(publisher)) = (&result, publisher) {
            publisher.publish(committed.into_iter());
        }
        if let Err(error) = result {
            tracing::error!(%error, "Write batch aborted; reloading writer state from the log.");
            match WriterState::load(env, &dbs) {
                Ok(reloaded) => state = reloaded,
                Err(error) => {
                    // The log cannot be read back: continuing would acknowledge writes on
                    // top of an index we cannot trust. Stop; systemd restarts us and the
                    // start-up path reports the problem.
                    tracing::error!(%error, "Cannot reload writer state; the writer stops.");
                    return;
                }
            }
        }
    }
}

fn run_batch(
    env: &Env<WithoutTls>,
    dbs: &Dbs,
    state: &mut WriterState,
    queued: &mut VecDeque<Op>,
    now_ms: u64,
) -> Result<(), LogError> {
    let mut wtxn = match env.write_txn() {
        Ok(wtxn) => wtxn,
        Err(error) => {
            let error = LogError::from(error);
            for op in queued.drain(..) {
                drop(op); // Dropping the waiter's sender reports `WriterGone` to it.
            }
            return Err(error);
        }
    };
    let started = std::time::Instant::now();
    let mut applied: Vec<Completion> = Vec::with_capacity(queued.len());
    let mut failure = None;
    {
        let mut ctx = WriteCtx {
            wtxn: &mut wtxn,
            dbs,
            state,
            now_ms,
        };
        while let Some(op) = queued.pop_front() {
            match (op.run)(&mut ctx) {
                Ran::Applied(done) => applied.push(done),
                Ran::Failed(error) => {
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
        let elapsed = started.elapsed().as_secs_f64();
        metrics::histogram!(telemetry::name::COMMIT_DURATION).record(elapsed);
        metrics::histogram!(telemetry::name::COMMIT_OPERATIONS).record(applied.len() as f64);
        state.publish_endpoint_counts();
    } else {
        metrics::counter!(telemetry::name::COMMITS_FAILED).increment(1);
    }
    for done in applied {
        done(result.clone());
    }
    result
}

/// Deletes a bounded number of expired idempotency records, resuming where the last
/// sweep stopped, so the table is cleaned continuously without a long transaction.
fn sweep_idempotency(env: &Env<WithoutTls>, dbs: &Dbs, state: &mut WriterState, now_ms: u64) {
    let result = (|| -> Result<Option<Vec<u8>>, LogError> {
        let mut wtxn = env.write_txn()?;
        let mut expired = Vec::new();
        let mut last = None;
        {
            let start = match state.sweep_from.as_deref() {
                Some(key) => std::ops::Bound::Excluded(key),
                None => std::ops::Bound::Unbounded,
            };
            let range = (start, std::ops::Bound::Unbounded);
            for row in dbs
                .idempotency
                .range(&wtxn, &range)?
                .take(IDEMPOTENCY_SWEEP_ROWS_MAX)
            {
                let (key, value) = row?;
                last = Some(key.to_vec());
                let record = IdempotencyRecord::decode(value)?;
                if record.created_ms.saturating_add(IDEMPOTENCY_TTL_MS) <= now_ms {
                    expired.push(key.to_vec());
                }
            }
        }
        for key in &expired {
            dbs.idempotency.delete(&mut wtxn, key)?;
        }
        if expired.is_empty() {
            wtxn.abort();
        } else {
            wtxn.commit()?;
        }
        Ok(last)
    })();
    match result {
        Ok(next) => state.sweep_from = next,
        Err(error) => tracing::warn!(%error, "Idempotency sweep failed; will retry."),
    }
}
