//! Background tasks in the log: creating one, and advancing one by a bounded batch.
//!
//! A task is a cursor over a fixed seq range (its time window, resolved at creation).
//! `advance` examines at most `TASK_BATCH_ROWS_MAX` rows and requeues at most
//! `TASK_BATCH_REQUEUES_MAX` deliveries, and moves the cursor in the same transaction as
//! the requeues: a task is never half-applied, and after a restart it resumes at the
//! first row its last committed batch did not reach. The task runner (`crate::tasks`)
//! decides when to call `advance`; everything it changes happens here, on the writer.

use heed::RoTxn;

use super::index::{EndpointFilter, matches};
use super::schema::{
    self, AppKey, EndpointKey, ReplayFilter, Seq, TaskKind, TaskRecord, TaskStatus,
    app_message_key, db_name, id_key, u64_key,
};
use super::tables::{self, Requeued};
use super::{Dbs, LogError, WriteCtx};
use crate::limits::{TASK_BATCH_REQUEUES_MAX, TASK_BATCH_ROWS_MAX, TASKS_RUNNING_MAX};

/// What a new task covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub kind: TaskKind,
    pub app_key: u64,
    pub endpoint_key: u64,
    pub since_ms: u64,
    pub until_ms: u64,
    /// A bulk-replay's filter.
    pub filter: Option<ReplayFilter>,
}

/// Why a task could not be created (outcomes, not malfunctions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotCreated {
    /// `TASKS_RUNNING_MAX` tasks are running already.
    TooManyRunning,
}

/// The first seq whose message was created at or after `at_ms`, or `next_seq` if none.
/// Seq order is time order, so this is a binary search over the `msgs` table.
pub fn first_seq_at(txn: &RoTxn, dbs: &Dbs, at_ms: u64, next_seq: u64) -> Result<u64, LogError> {
    let (mut low, mut high) = (0u64, next_seq);
    while low < high {
        let mid = low + (high - low) / 2;
        // The first message at or after `mid` (seqs may have gaps once retention prunes).
        let found = dbs.msgs.get_greater_than_or_equal_to(txn, &u64_key(mid))?;
        match found {
            Some((key, value)) => {
                let seq = schema::read_u64(db_name::MSGS, key, 0)?;
                let message = schema::MessageRecord::decode(value)?;
                if message.created_ms >= at_ms {
                    high = mid;
                } else {
                    low = seq + 1;
                }
            }
            None => high = mid,
        }
    }
    Ok(low)
}

/// Creates a running task over `spec`'s window; the caller wakes the runner after the
/// commit.
pub(in crate::log) fn create(
    ctx: &mut WriteCtx<'_, '_>,
    spec: TaskSpec,
    id: String,
) -> Result<Result<TaskRecord, NotCreated>, LogError> {
    let dbs = ctx.dbs;
    if dbs.running_tasks.len(ctx.wtxn)? >= TASKS_RUNNING_MAX as u64 {
        return Ok(Err(NotCreated::TooManyRunning));
    }
    let key = match dbs.tasks.last(ctx.wtxn)? {
        Some((key, _)) => schema::read_u64(db_name::TASKS, key, 0)? + 1,
        None => 1,
    };
    let next_seq = ctx.state.next_seq;
    let record = TaskRecord {
        key,
        id,
        kind: spec.kind,
        status: TaskStatus::Running,
        app_key: spec.app_key,
        endpoint_key: spec.endpoint_key,
        since_ms: spec.since_ms,
        until_ms: spec.until_ms,
        next_seq: first_seq_at(ctx.wtxn, dbs, spec.since_ms, next_seq)?,
        // The window includes messages created at `until_ms`.
        end_seq: first_seq_at(ctx.wtxn, dbs, spec.until_ms.saturating_add(1), next_seq)?,
        messages_sent: 0,
        error: None,
        created_ms: ctx.now_ms,
        updated_ms: ctx.now_ms,
        filter: spec.filter,
    };
    put(ctx, &record)?;
    dbs.task_ids
        .put(ctx.wtxn, &id_key(&record.id), &u64_key(key))?;
    Ok(Ok(record))
}

fn put(ctx: &mut WriteCtx<'_, '_>, record: &TaskRecord) -> Result<(), LogError> {
    let key = u64_key(record.key);
    ctx.dbs
        .tasks
        .put(ctx.wtxn, &key, &schema::encode_json(record))?;
    if record.status == TaskStatus::Running {
        ctx.dbs.running_tasks.put(ctx.wtxn, &key, &[])?;
    } else {
        ctx.dbs.running_tasks.delete(ctx.wtxn, &key)?;
    }
    Ok(())
}

pub fn by_key(txn: &RoTxn, dbs: &Dbs, key: u64) -> Result<Option<TaskRecord>, LogError> {
    dbs.tasks
        .get(txn, &u64_key(key))?
        .map(|v| schema::decode_json(db_name::TASKS, v))
        .transpose()
}

pub fn by_id(txn: &RoTxn, dbs: &Dbs, id: &str) -> Result<Option<TaskRecord>, LogError> {
    match dbs.task_ids.get(txn, &id_key(id))? {
        Some(key) => by_key(txn, dbs, schema::read_u64(db_name::TASK_IDS, key, 0)?),
        None => Ok(None),
    }
}

/// The public ids of a task's application and endpoint, if they still exist.
pub fn ids_of(
    txn: &RoTxn,
    dbs: &Dbs,
    task: &TaskRecord,
) -> Result<(Option<String>, Option<String>), LogError> {
    let app_id = tables::app_by_key(txn, dbs, task.app_key)?.map(|a| a.id);
    let endpoint_id = tables::endpoint_row_by_key(txn, dbs, task.endpoint_key)?.map(|e| e.id);
    Ok((app_id, endpoint_id))
}

/// Keys of the running tasks, oldest first (at most `TASKS_RUNNING_MAX`).
pub fn running(txn: &RoTxn, dbs: &Dbs) -> Result<Vec<u64>, LogError> {
    let mut keys = Vec::new();
    for row in dbs.running_tasks.iter(txn)? {
        let (key, _) = row?;
        keys.push(schema::read_u64(db_name::RUNNING_TASKS, key, 0)?);
    }
    Ok(keys)
}

/// Advances a running task by one bounded batch. Returns the task as it now stands
/// (`None` if there is no such task).
pub(in crate::log) fn advance(
    ctx: &mut WriteCtx<'_, '_>,
    key: u64,
) -> Result<Option<TaskRecord>, LogError> {
    let Some(mut task) = by_key(ctx.wtxn, ctx.dbs, key)? else {
        return Ok(None);
    };
    if task.status != TaskStatus::Running {
        return Ok(Some(task));
    }
    let endpoint = tables::endpoint_row_by_key(ctx.wtxn, ctx.dbs, task.endpoint_key)?
        .filter(|e| e.app_key == task.app_key);
    let batch = match endpoint {
        None => Err("the endpoint was deleted"),
        Some(e) if e.disabled => Err("the endpoint was disabled"),
        Some(e) if e.polling_only => Err("the endpoint became polling-only"),
        Some(e) => {
            let filter = EndpointFilter {
                endpoint_key: e.key,
                disabled: false,
                event_types: e.event_types,
                channels: e.channels,
                polling_only: e.polling_only,
            };
            Ok(match task.kind {
                TaskKind::Recover => recover_batch(ctx, &task, None)?,
                TaskKind::BulkReplay => {
                    let filter = task.filter.clone().unwrap_or_default();
                    recover_batch(ctx, &task, Some(&filter))?
                }
                TaskKind::ReplayMissing => replay_batch(ctx, &task, &filter)?,
            })
        }
    };
    match batch {
        Ok(Batch { next_seq, sent }) => {
            task.next_seq = next_seq;
            task.messages_sent += sent;
            if next_seq >= task.end_seq {
                task.status = TaskStatus::Finished;
            }
        }
        Err(reason) => {
            task.status = TaskStatus::Failed;
            task.error = Some(reason.to_owned());
        }
    }
    task.updated_ms = ctx.now_ms;
    put(ctx, &task)?;
    if task.status != TaskStatus::Running {
        super::operational::task_finished(ctx, &task)?;
    }
    Ok(Some(task))
}

/// What one batch did: where the next one starts and how many deliveries it queued.
struct Batch {
    next_seq: u64,
    sent: u64,
}

/// Requeues, as manual deliveries, the endpoint's deliveries in range: the failed and
/// skipped ones (recover), or the ones `replay` lets through (bulk-replay).
fn recover_batch(
    ctx: &mut WriteCtx<'_, '_>,
    task: &TaskRecord,
    replay: Option<&ReplayFilter>,
) -> Result<Batch, LogError> {
    use super::schema::DeliveryState;
    let mut candidates = Vec::new();
    let mut next_seq = task.end_seq;
    {
        let mut rows = 0;
        super::deliveries::each_of_endpoint(
            ctx.wtxn,
            ctx.dbs,
            EndpointKey(task.endpoint_key),
            (
                std::ops::Bound::Included(task.next_seq),
                std::ops::Bound::Excluded(task.end_seq),
            ),
            |seq, delivery| {
                if rows >= TASK_BATCH_ROWS_MAX || candidates.len() >= TASK_BATCH_REQUEUES_MAX {
                    next_seq = seq.0;
                    return Ok(true);
                }
                rows += 1;
                let wanted = match replay {
                    None => matches!(
                        delivery.state,
                        DeliveryState::Failed | DeliveryState::Skipped
                    ),
                    Some(filter) => filter
                        .status
                        .is_none_or(|status| status == svix_status(&delivery)),
                };
                if wanted {
                    candidates.push(seq.0);
                }
                Ok(false)
            },
        )?;
    }
    let mut sent = 0;
    for seq in candidates {
        if let Some(filter) = replay
            && !replay_matches(ctx, filter, seq)?
        {
            continue;
        }
        if message_has_payload(ctx, seq)?
            && tables::requeue(ctx, task.endpoint_key, seq, true)? == Requeued::Queued
        {
            sent += 1;
        }
    }
    Ok(Batch { next_seq, sent })
}

/// Queues, as new scheduled deliveries, the application's messages in range that match
/// the endpoint's filters and never had a delivery row for it.
fn replay_batch(
    ctx: &mut WriteCtx<'_, '_>,
    task: &TaskRecord,
    filter: &EndpointFilter,
) -> Result<Batch, LogError> {
    let mut candidates = Vec::new();
    let mut next_seq = task.end_seq;
    {
        let lower = app_message_key(AppKey(task.app_key), Seq(task.next_seq));
        let upper = app_message_key(AppKey(task.app_key), Seq(task.end_seq));
        let range = (
            std::ops::Bound::Included(&lower[..]),
            std::ops::Bound::Excluded(&upper[..]),
        );
        for (rows, row) in ctx.dbs.app_msgs.range(ctx.wtxn, &range)?.enumerate() {
            let (key, _) = row?;
            let seq = schema::read_u64(db_name::APP_MSGS, key, 8)?;
            if rows >= TASK_BATCH_ROWS_MAX || candidates.len() >= TASK_BATCH_REQUEUES_MAX {
                next_seq = seq;
                break;
            }
            if super::deliveries::get(
                ctx.wtxn,
                ctx.dbs,
                EndpointKey(filter.endpoint_key),
                Seq(seq),
            )?
            .is_some()
            {
                continue;
            }
            let Some(message) = tables::message_by_seq(ctx.wtxn, ctx.dbs, Seq(seq))? else {
                continue;
            };
            // A send-example message was for its one endpoint: never replayed to others.
            if message.payload.is_some()
                && !message.example
                && matches(filter, &message.event_type, message.channels.as_deref())
            {
                candidates.push(seq);
            }
        }
    }
    for &seq in &candidates {
        tables::requeue(ctx, filter.endpoint_key, seq, false)?;
    }
    Ok(Batch {
        next_seq,
        sent: candidates.len() as u64,
    })
}

/// Svix's message status of a delivery (as the delivery views show it): 0 success,
/// 1 pending (never attempted), 2 fail (skipped included), 3 sending.
pub fn svix_status(delivery: &schema::DeliveryRecord) -> u8 {
    use schema::DeliveryState;
    match delivery.state {
        DeliveryState::Succeeded => 0,
        DeliveryState::Pending if delivery.attempts == 0 => 1,
        DeliveryState::Pending | DeliveryState::Sending => 3,
        DeliveryState::Failed | DeliveryState::Skipped => 2,
    }
}

/// Whether message `seq` passes a bulk-replay's message filters.
fn replay_matches(
    ctx: &WriteCtx<'_, '_>,
    filter: &ReplayFilter,
    seq: u64,
) -> Result<bool, LogError> {
    let Some(message) = tables::message_by_seq(ctx.wtxn, ctx.dbs, Seq(seq))? else {
        return Ok(false);
    };
    let type_ok = filter
        .event_types
        .as_ref()
        .is_none_or(|types| types.contains(&message.event_type));
    let channel_ok = filter.channel.as_ref().is_none_or(|channel| {
        message
            .channels
            .as_ref()
            .is_some_and(|channels| channels.contains(channel))
    });
    let tag_ok = filter
        .tag
        .as_ref()
        .is_none_or(|tag| message.tags.as_ref().is_some_and(|tags| tags.contains(tag)));
    Ok(type_ok && channel_ok && tag_ok)
}

fn message_has_payload(ctx: &WriteCtx<'_, '_>, seq: u64) -> Result<bool, LogError> {
    Ok(tables::message_by_seq(ctx.wtxn, ctx.dbs, Seq(seq))?.is_some_and(|m| m.payload.is_some()))
}
