//! Retention: what the log forgets, in bounded batches on the writer.
//!
//! Two rules. A message's payload is dropped once its own retention (`payloadRetention…`,
//! 1–90 days) has passed; the message's metadata and attempts stay. And a whole message —
//! its ids, its place in the application's log, its delivery rows and its attempts — is
//! deleted once it is older than `storage.retention_days`, unless a delivery of it is
//! still pending (then it waits: nothing pending is ever lost). Seq order is time order,
//! so the deletion walks from the oldest message and stops at the first one that is too
//! young.

use std::collections::BTreeMap;

use super::schema::{
    self, AppKey, AttemptKey, DeliveryState, EndpointKey, MessageRecord, Seq, app_message_key,
    db_name, endpoint_attempt_key, id_key, message_attempt_key, u64_key, uid_key,
};
use super::{LogError, WriteCtx, tables};
use crate::limits::{DAY_MS, RETENTION_DAYS_MIN, RETENTION_SWEEP_LOOKUPS_MAX};

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
    // A message's delivery rows lie side by side, keyed (seq, endpoint): each application's
    // span of the batch is one range of them, filtered to its endpoints. The batch is
    // bounded by its applications' endpoint counts too, not only by messages, which
    // bounds the rows a span holds per message.
    let mut spans: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut seeks = 0;
    let mut taken = 0;
    for (seq, message) in &doomed {
        if let Some(span) = spans.get_mut(&message.app_key) {
            span.1 = *seq;
        } else {
            let cost = ctx.state.endpoints.count_for_app(message.app_key).max(1);
            if seeks > 0 && seeks + cost > RETENTION_SWEEP_LOOKUPS_MAX {
                swept.more = true;
                break;
            }
            seeks += cost;
            spans.insert(message.app_key, (*seq, *seq));
        }
        taken += 1;
    }
    doomed.truncate(taken);
    let (rows, first_pending) = delivery_rows(ctx, &spans)?;
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
    super::deliveries::delete_all(
        ctx.wtxn,
        ctx.dbs,
        &mut ctx.state.unindexed,
        rows.into_iter()
            .filter(|&(_, seq)| seq < first_pending)
            .map(|(endpoint_key, seq)| (endpoint_key, Seq(seq))),
    )?;

    if let Some(cursor) = payload_cursor {
        drop_expired_payloads(ctx, cursor, rows_max, &mut swept)?;
    }
    Ok(swept)
}

/// The delivery rows of each application's messages in its seq span (first, last), and
/// the lowest seq among them with a pending delivery (`u64::MAX` if none).
fn delivery_rows(
    ctx: &WriteCtx<'_, '_>,
    spans: &BTreeMap<u64, (u64, u64)>,
) -> Result<(Vec<(EndpointKey, u64)>, u64), LogError> {
    let mut rows = Vec::new();
    let mut first_pending = u64::MAX;
    for (&app_key, &(first, last)) in spans {
        let of_app: std::collections::HashSet<u64> =
            ctx.state.endpoints.keys_of(app_key).into_iter().collect();
        super::deliveries::each_of_messages(
            ctx.wtxn,
            ctx.dbs,
            (Seq(first), Seq(last)),
            |seq, endpoint_key, delivery| {
                if of_app.contains(&endpoint_key.0) {
                    if delivery.state == DeliveryState::Pending {
                        first_pending = first_pending.min(seq.0);
                    }
                    rows.push((endpoint_key, seq.0));
                }
                Ok(false)
            },
        )?;
    }
    Ok((rows, first_pending))
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
