//! Purging deleted applications: an application's delete (`Op::DeleteApp`) removes it and
//! its endpoints at once and leaves a marker in `meta` (`purge_app/` + its key, holding
//! the keys of the endpoints it had); `Op::PurgeDeletedApps` then deletes what hung off it
//! — messages with their ids, delivery and due rows, attempts — in bounded batches that
//! the sweeper submits one after another, so the space is reused without one long write.

use super::schema::{
    self, AppKey, AttemptKey, DeliveryRecord, EndpointKey, MessageRecord, Seq, app_message_key,
    db_name, due_key, endpoint_attempt_key, id_key, message_attempt_key, u64_key, uid_key,
};
use super::{LogError, WriteCtx, tables};

/// The prefix of a purge marker's key in `meta`.
const MARKER_PREFIX: &[u8] = b"purge_app/";

fn marker_key(app_key: u64) -> Vec<u8> {
    let mut key = MARKER_PREFIX.to_vec();
    key.extend_from_slice(&u64_key(app_key));
    key
}

/// What one purge batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Rows deleted (messages, deliveries, due rows and attempts).
    pub rows: u64,
    /// Applications whose purge finished in this batch.
    pub apps_done: u64,
    /// More is left: submit another batch.
    pub more: bool,
}

/// Leaves the marker of a deleted application (with its endpoints' keys).
pub(in crate::log) fn mark(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    endpoint_keys: &[u64],
) -> Result<(), LogError> {
    let value: Vec<u8> = endpoint_keys.iter().flat_map(|k| k.to_be_bytes()).collect();
    w.dbs.meta.put(w.wtxn, &marker_key(app_key), &value)?;
    Ok(())
}

/// Deletes up to about `rows_max` rows of the first marked application; when none is left
/// of it, its marker goes.
pub(in crate::log) fn purge(w: &mut WriteCtx<'_, '_>, rows_max: usize) -> Result<Purged, LogError> {
    let mut purged = Purged::default();
    let first = w
        .dbs
        .meta
        .prefix_iter(w.wtxn, MARKER_PREFIX)?
        .next()
        .transpose()?;
    let Some((key, value)) = first else {
        return Ok(purged);
    };
    let app_key = schema::read_u64(db_name::META, key, MARKER_PREFIX.len())?;
    let endpoint_keys = value
        .chunks_exact(8)
        .map(|c| schema::read_u64(db_name::META, c, 0))
        .collect::<Result<Vec<u64>, _>>()?;
    // Messages first, each with its delivery rows and attempts.
    let mut seqs = Vec::new();
    for row in w.dbs.app_msgs.prefix_iter(w.wtxn, &u64_key(app_key))? {
        let (key, _) = row?;
        seqs.push(schema::read_u64(db_name::APP_MSGS, key, 8)?);
        if seqs.len() >= rows_max.div_ceil(endpoint_keys.len().max(1) + 1).max(1) {
            break;
        }
    }
    for seq in &seqs {
        purged.rows += delete_message(w, app_key, *seq)?;
    }
    if !seqs.is_empty() {
        purged.more = true;
        return Ok(purged);
    }
    if purge_leftovers(w, &endpoint_keys, rows_max, &mut purged)? {
        purged.more = true;
        return Ok(purged);
    }
    w.dbs.meta.delete(w.wtxn, &marker_key(app_key))?;
    purged.apps_done = 1;
    purged.more = w
        .dbs
        .meta
        .prefix_iter(w.wtxn, MARKER_PREFIX)?
        .next()
        .is_some();
    Ok(purged)
}

/// Deletes up to `rows_max` rows left under `endpoint_keys` (deliveries and attempts of
/// messages already gone): the deliveries of any of them first, then the attempts of
/// the first that has any; `false` when none has any.
fn purge_leftovers(
    w: &mut WriteCtx<'_, '_>,
    endpoint_keys: &[u64],
    rows_max: usize,
    purged: &mut Purged,
) -> Result<bool, LogError> {
    let endpoints: Vec<EndpointKey> = endpoint_keys.iter().copied().map(EndpointKey).collect();
    let rows = super::deliveries::first_of_endpoints(w.wtxn, w.dbs, &endpoints, rows_max)?;
    if !rows.is_empty() {
        for (endpoint, seq, delivery) in rows {
            delete_delivery(w, endpoint.0, seq.0, &delivery)?;
            purged.rows += 1;
        }
        return Ok(true);
    }
    for endpoint_key in endpoint_keys {
        let mut attempts = Vec::new();
        for row in w
            .dbs
            .endpoint_attempts
            .prefix_iter(w.wtxn, &u64_key(*endpoint_key))?
        {
            let (key, _) = row?;
            attempts.push(schema::read_u64(db_name::ENDPOINT_ATTEMPTS, key, 8)?);
            if attempts.len() >= rows_max {
                break;
            }
        }
        if attempts.is_empty() {
            continue;
        }
        for attempt_key in attempts {
            delete_attempt(w, attempt_key)?;
            purged.rows += 1;
        }
        return Ok(true);
    }
    Ok(false)
}

/// Deletes one message of a deleted application and what hangs off it; the rows deleted.
fn delete_message(w: &mut WriteCtx<'_, '_>, app_key: u64, seq: u64) -> Result<u64, LogError> {
    let dbs = w.dbs;
    let mut rows = 1;
    let mut deliveries = Vec::new();
    super::deliveries::each_of_messages(w.wtxn, dbs, (Seq(seq), Seq(seq)), |_, endpoint, row| {
        deliveries.push((endpoint, row));
        Ok(false)
    })?;
    for (endpoint_key, delivery) in deliveries {
        delete_delivery(w, endpoint_key.0, seq, &delivery)?;
        rows += 1;
    }
    let mut attempt_keys = Vec::new();
    for row in dbs.msg_attempts.prefix_iter(w.wtxn, &u64_key(seq))? {
        let (key, _) = row?;
        attempt_keys.push(schema::read_u64(db_name::MSG_ATTEMPTS, key, 8)?);
    }
    for attempt_key in attempt_keys {
        delete_attempt(w, attempt_key)?;
        rows += 1;
    }
    if let Some(value) = dbs.msgs.get(w.wtxn, &u64_key(seq))? {
        let message = MessageRecord::decode(value)?;
        dbs.msg_ids.delete(w.wtxn, &id_key(&message.id))?;
        if let Some(event_id) = &message.event_id {
            dbs.msg_ids.delete(w.wtxn, &uid_key(app_key, event_id))?;
        }
        dbs.msgs.delete(w.wtxn, &u64_key(seq))?;
    }
    dbs.app_msgs
        .delete(w.wtxn, &app_message_key(AppKey(app_key), Seq(seq)))?;
    Ok(rows)
}

fn delete_delivery(
    w: &mut WriteCtx<'_, '_>,
    endpoint_key: u64,
    seq: u64,
    delivery: &DeliveryRecord,
) -> Result<(), LogError> {
    w.dbs.due.delete(
        w.wtxn,
        &due_key(delivery.next_due_ms, EndpointKey(endpoint_key), Seq(seq)),
    )?;
    super::deliveries::delete(
        w.wtxn,
        w.dbs,
        &mut w.state.unindexed,
        EndpointKey(endpoint_key),
        Seq(seq),
    )
}

fn delete_attempt(w: &mut WriteCtx<'_, '_>, attempt_key: u64) -> Result<(), LogError> {
    let dbs = w.dbs;
    if let Some(attempt) = tables::attempt_by_key(w.wtxn, dbs, attempt_key)? {
        dbs.attempt_ids.delete(w.wtxn, &id_key(&attempt.id))?;
        dbs.endpoint_attempts.delete(
            w.wtxn,
            &endpoint_attempt_key(EndpointKey(attempt.endpoint_key), AttemptKey(attempt_key)),
        )?;
        dbs.msg_attempts.delete(
            w.wtxn,
            &message_attempt_key(Seq(attempt.seq), AttemptKey(attempt_key)),
        )?;
    }
    dbs.attempts.delete(w.wtxn, &u64_key(attempt_key))?;
    Ok(())
}
