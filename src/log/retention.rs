//! Retention: what the log forgets, in bounded batches on the writer.
//!
//! Two rules. A message's payload is dropped once its own retention (`payloadRetention…`,
//! 1–90 days) has passed; the message's metadata and attempts stay. And a whole message —
//! its ids, its place in the application's log, its delivery rows and its attempts — is
//! deleted once it is older than `storage.retention_days`, unless a delivery of it is
//! still pending (then it waits: nothing pending is ever lost). Seq order is time order,
//! so the deletion walks from the oldest message and stops at the first one that is too
//! young.

use std::collections::{HashMap, HashSet};

use super::schema::{
    self, AppKey, AttemptKey, DeliveryState, EndpointKey, MessageRecord, Seq, app_message_key,
    db_name, due_key, endpoint_attempt_key, id_key, message_attempt_key, u64_key, uid_key,
};
use super::{LogError, WriteCtx, tables};
use crate::limits::{DAY_MS, RETENTION_DAYS_MIN, RETENTION_SWEEP_DELIVERY_ROWS_MAX};

/// What one sweep batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub messages_deleted: u64,
    pub payloads_dropped: u64,
    /// The batch stopped at its bound: call again soon.
    pub more: bool,
    /// Where the next payload scan resumes (`None`: from the start).
    pub payload_cursor: Option<u64>,
    /// This batch's payload scan reached the end of what could have expired: one pass
    /// over the log is complete.
    pub payload_pass_done: bool,
}

/// Deletes up to `rows_max` messages created before `delete_before_ms` (oldest first,
/// stopping at a message with a pending delivery), then, if `payload_cursor` is given
/// (`Some(None)` starts a pass), drops the payloads of up to `rows_max` messages from
/// there on whose payload retention has passed.
pub(in crate::log) fn sweep(
    ctx: &mut WriteCtx<'_, '_>,
    delete_before_ms: u64,
    payload_cursor: Option<Option<u64>>,
    rows_max: usize,
) -> Result<Swept, LogError> {
    let mut swept = Swept::default();
    let mut doomed = Vec::new();
    for row in ctx.dbs.msgs.iter(ctx.wtxn)? {
        let (key, value) = row?;
        let seq = schema::read_u64(db_name::MSGS, key, 0)?;
        let message = MessageRecord::decode(value)?;
        if message.created_ms >= delete_before_ms || doomed.len() >= rows_max {
            swept.more = doomed.len() >= rows_max;
            break;
        }
        doomed.push((seq, message));
    }
    // The batch reads at most `RETENTION_SWEEP_DELIVERY_ROWS_MAX` delivery rows (and the
    // rest of the message it is in): the messages past them wait for the next batch.
    let rows = delivery_rows(ctx, &doomed)?;
    if let Some(unread_from) = rows.unread_from {
        doomed.retain(|(seq, _)| *seq < unread_from);
        swept.more = true;
    }
    let (mut rows, first_pending) = (rows.rows, rows.first_pending);
    for (seq, message) in doomed {
        if seq >= first_pending {
            // A pending delivery: it and everything younger wait, and there is nothing
            // to do until it is done.
            swept.more = false;
            break;
        }
        delete_message(ctx, seq, &message)?;
        swept.messages_deleted += 1;
    }
    // The rows of messages held back by a pending delivery stay with them.
    rows.retain(|row| row.seq < first_pending);
    for row in &rows {
        if let Some(due_ms) = row.orphan_due_ms {
            ctx.dbs
                .due
                .delete(ctx.wtxn, &due_key(due_ms, row.endpoint_key, Seq(row.seq)))?;
        }
    }
    super::deliveries::delete_all(
        ctx.wtxn,
        ctx.dbs,
        &mut ctx.state.unindexed,
        rows.iter().map(|row| (row.endpoint_key, Seq(row.seq))),
    )?;

    if let Some(cursor) = payload_cursor {
        drop_expired_payloads(ctx, cursor, rows_max, &mut swept)?;
    }
    Ok(swept)
}

/// A delivery row that goes with its message.
struct DoomedRow {
    endpoint_key: EndpointKey,
    seq: u64,
    /// The due row of a delivery still pending to an endpoint deleted since (such a
    /// delivery would only be skipped), which goes with it.
    orphan_due_ms: Option<u64>,
}

/// What a batch read of its messages' delivery rows.
struct BatchRows {
    rows: Vec<DoomedRow>,
    /// The lowest seq among them with a delivery pending to an endpoint that still exists
    /// (`u64::MAX` if none).
    first_pending: u64,
    /// The read stopped at its bound before this seq's rows.
    unread_from: Option<u64>,
}

/// The delivery rows of the batch's messages, up to `RETENTION_SWEEP_DELIVERY_ROWS_MAX`
/// and a message's. The batch is a prefix of the log and a message's rows lie side by
/// side, keyed (seq, endpoint), so they are one range of `delivery_rows`; every row in
/// it is a batch message's (or one left by a message already gone), whichever endpoint
/// it names, so the rows of endpoints deleted since go with their messages too.
fn delivery_rows(
    ctx: &WriteCtx<'_, '_>,
    doomed: &[(u64, MessageRecord)],
) -> Result<BatchRows, LogError> {
    let mut read = BatchRows {
        rows: Vec::new(),
        first_pending: u64::MAX,
        unread_from: None,
    };
    let (Some((first, _)), Some((last, _))) = (doomed.first(), doomed.last()) else {
        return Ok(read);
    };
    let app_of: HashMap<u64, u64> = doomed
        .iter()
        .map(|(seq, message)| (*seq, message.app_key))
        .collect();
    let mut endpoints_of: HashMap<u64, HashSet<u64>> = HashMap::new();
    for app_key in app_of.values() {
        endpoints_of
            .entry(*app_key)
            .or_insert_with(|| ctx.state.endpoints.keys_of(*app_key).into_iter().collect());
    }
    super::deliveries::each_of_messages(
        ctx.wtxn,
        ctx.dbs,
        (Seq(*first), Seq(*last)),
        |seq, endpoint_key, delivery| {
            let message_done = read.rows.last().is_some_and(|row| row.seq != seq.0);
            if message_done && read.rows.len() >= RETENTION_SWEEP_DELIVERY_ROWS_MAX {
                read.unread_from = Some(seq.0);
                return Ok(true);
            }
            let mut orphan_due_ms = None;
            if delivery.state == DeliveryState::Pending {
                let endpoint_exists = app_of
                    .get(&seq.0)
                    .and_then(|app_key| endpoints_of.get(app_key))
                    .is_some_and(|keys| keys.contains(&endpoint_key.0));
                if endpoint_exists {
                    read.first_pending = read.first_pending.min(seq.0);
                } else {
                    orphan_due_ms = Some(delivery.next_due_ms);
                }
            }
            read.rows.push(DoomedRow {
                endpoint_key,
                seq: seq.0,
                orphan_due_ms,
            });
            Ok(false)
        },
    )?;
    Ok(read)
}

/// One batch of a payload pass: reads up to `rows_max` messages after `cursor`, in seq
/// (time) order, and drops the payloads whose retention has passed. The pass ends at the
/// first message younger than the shortest payload retention: no later one can have
/// expired, so a young log costs one read, not a scan of every message.
fn drop_expired_payloads(
    ctx: &mut WriteCtx<'_, '_>,
    cursor: Option<u64>,
    rows_max: usize,
    swept: &mut Swept,
) -> Result<(), LogError> {
    let now_ms = ctx.now_ms;
    let young_after_ms = now_ms.saturating_sub(u64::from(RETENTION_DAYS_MIN) * DAY_MS);
    let lower = u64_key(cursor.map_or(0, |c| c + 1));
    let range = (
        std::ops::Bound::Included(&lower[..]),
        std::ops::Bound::Unbounded,
    );
    let mut expired = Vec::new();
    let (mut last, mut read, mut reached_young) = (None, 0, false);
    for row in ctx.dbs.msgs.range(ctx.wtxn, &range)?.take(rows_max) {
        let (key, value) = row?;
        let header = MessageRecord::retention_header(value)?;
        if header.created_ms > young_after_ms {
            reached_young = true;
            break;
        }
        let seq = schema::read_u64(db_name::MSGS, key, 0)?;
        last = Some(seq);
        read += 1;
        if header.has_payload && header.payload_expires_ms <= now_ms {
            expired.push((seq, MessageRecord::decode(value)?));
        }
    }
    for (seq, mut message) in expired {
        message.payload = None;
        ctx.dbs
            .msgs
            .put(ctx.wtxn, &u64_key(seq), &message.encode())?;
        swept.payloads_dropped += 1;
    }
    // A full batch that did not reach the young end means there is more to read.
    swept.payload_cursor = last.filter(|_| read >= rows_max && !reached_young);
    swept.payload_pass_done = swept.payload_cursor.is_none();
    swept.more |= swept.payload_cursor.is_some();
    Ok(())
}

/// Deletes one message and everything that hangs off it but its delivery rows (the
/// caller deletes those: `delivery_rows`).
fn delete_message(
    ctx: &mut WriteCtx<'_, '_>,
    seq: u64,
    message: &MessageRecord,
) -> Result<(), LogError> {
    let dbs = ctx.dbs;
    let mut attempt_keys = Vec::new();
    for row in dbs.msg_attempts.prefix_iter(ctx.wtxn, &u64_key(seq))? {
        let (key, _) = row?;
        attempt_keys.push(schema::read_u64(db_name::MSG_ATTEMPTS, key, 8)?);
    }
    for attempt_key in attempt_keys {
        if let Some(attempt) = tables::attempt_by_key(ctx.wtxn, dbs, attempt_key)? {
            dbs.attempt_ids.delete(ctx.wtxn, &id_key(&attempt.id))?;
            dbs.endpoint_attempts.delete(
                ctx.wtxn,
                &endpoint_attempt_key(EndpointKey(attempt.endpoint_key), AttemptKey(attempt_key)),
            )?;
        }
        dbs.attempts.delete(ctx.wtxn, &u64_key(attempt_key))?;
        dbs.msg_attempts.delete(
            ctx.wtxn,
            &message_attempt_key(Seq(seq), AttemptKey(attempt_key)),
        )?;
    }
    dbs.msg_ids.delete(ctx.wtxn, &id_key(&message.id))?;
    if let Some(event_id) = &message.event_id {
        dbs.msg_ids
            .delete(ctx.wtxn, &uid_key(message.app_key, event_id))?;
    }
    dbs.app_msgs.delete(
        ctx.wtxn,
        &app_message_key(AppKey(message.app_key), Seq(seq)),
    )?;
    dbs.msgs.delete(ctx.wtxn, &u64_key(seq))?;
    Ok(())
}
