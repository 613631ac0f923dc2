//! Typed access to the tables: lookups by id or uid, writes that keep the id indexes in
//! step with the records, and the delivery engine's reads (due rows, an endpoint's
//! deliveries, stored endpoint rows), so no code outside the log knows a key layout.
//! Functions take the transaction first; writes take a `RwTxn` and so can only run on the
//! writer thread.

use heed::{RoTxn, RwTxn};

use super::schema::{
    self, AppKey, AppRecord, AttemptKey, EndpointKey, EndpointRecord, EventTypeRecord,
    MessageRecord, Seq, SourceKey, TokenRecord, app_endpoint_key, app_message_key, child_key,
    db_name, endpoint_attempt_key, id_key, message_attempt_key, source_error_key, u64_key, uid_key,
};
use super::{Dbs, LogError};
use crate::ids::IdKind;

/// Parent key used for org-wide uids (applications).
const ORG_PARENT: u64 = 0;

fn key_of(table: &'static str, value: Option<&[u8]>) -> Result<Option<u64>, LogError> {
    value.map(|v| schema::read_u64(table, v, 0)).transpose()
}

// === applications ===

pub fn app_by_key(txn: &RoTxn, dbs: &Dbs, key: u64) -> Result<Option<AppRecord>, LogError> {
    dbs.apps
        .get(txn, &u64_key(key))?
        .map(|v| schema::decode_json(db_name::APPS, v))
        .transpose()
}

/// Whether the application `key` exists (a key lookup, without decoding the record).
pub fn app_exists(txn: &RoTxn, dbs: &Dbs, key: u64) -> Result<bool, LogError> {
    Ok(dbs.apps.get(txn, &u64_key(key))?.is_some())
}

/// Finds an application by id or uid.
pub fn app_by_ref(txn: &RoTxn, dbs: &Dbs, reference: &str) -> Result<Option<AppRecord>, LogError> {
    app_key_of_ref(txn, dbs, reference)?
        .map(|k| app_by_key(txn, dbs, k))
        .transpose()
        .map(Option::flatten)
}

/// The key of the application with this id or uid, if it exists: `app_by_ref` without
/// decoding the record (message create needs the key alone, on every request).
pub fn app_key_by_ref(txn: &RoTxn, dbs: &Dbs, reference: &str) -> Result<Option<u64>, LogError> {
    match app_key_of_ref(txn, dbs, reference)? {
        Some(key) if app_exists(txn, dbs, key)? => Ok(Some(key)),
        _ => Ok(None),
    }
}

/// The key the id or uid index holds for `reference` (an id first, when it has the
/// application prefix; then a uid).
fn app_key_of_ref(txn: &RoTxn, dbs: &Dbs, reference: &str) -> Result<Option<u64>, LogError> {
    let by_id = if reference.starts_with(IdKind::App.prefix()) {
        key_of(db_name::APP_IDS, dbs.app_ids.get(txn, &id_key(reference))?)?
    } else {
        None
    };
    match by_id {
        Some(key) => Ok(Some(key)),
        None => key_of(
            db_name::APP_IDS,
            dbs.app_ids.get(txn, &uid_key(ORG_PARENT, reference))?,
        ),
    }
}

pub fn app_uid_taken(txn: &RoTxn, dbs: &Dbs, uid: &str) -> Result<Option<u64>, LogError> {
    key_of(
        db_name::APP_IDS,
        dbs.app_ids.get(txn, &uid_key(ORG_PARENT, uid))?,
    )
}

/// Writes `app`, moving its uid index entry if the uid changed from `previous`.
pub fn put_app(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    app: &AppRecord,
    previous: Option<&AppRecord>,
) -> Result<(), LogError> {
    let key = u64_key(app.key);
    if let Some(old_uid) = previous.and_then(|p| p.uid.as_deref())
        && app.uid.as_deref() != Some(old_uid)
    {
        dbs.app_ids.delete(wtxn, &uid_key(ORG_PARENT, old_uid))?;
    }
    if let Some(uid) = &app.uid {
        dbs.app_ids.put(wtxn, &uid_key(ORG_PARENT, uid), &key)?;
    }
    if previous.is_none() {
        dbs.app_ids.put(wtxn, &id_key(&app.id), &key)?;
    }
    dbs.apps.put(wtxn, &key, &schema::encode_json(app))?;
    Ok(())
}

/// Deletes an application and its endpoints. Its messages stay in the log until retention
/// removes them; without the application they are unreachable through the API.
pub fn delete_app(wtxn: &mut RwTxn, dbs: &Dbs, app: &AppRecord) -> Result<Vec<u64>, LogError> {
    let endpoint_keys = app_endpoint_keys(wtxn, dbs, app.key)?;
    for endpoint_key in &endpoint_keys {
        if let Some(endpoint) = endpoint_row_by_key(wtxn, dbs, *endpoint_key)? {
            delete_endpoint(wtxn, dbs, &endpoint)?;
        }
    }
    if let Some(uid) = &app.uid {
        dbs.app_ids.delete(wtxn, &uid_key(ORG_PARENT, uid))?;
    }
    dbs.app_ids.delete(wtxn, &id_key(&app.id))?;
    dbs.apps.delete(wtxn, &u64_key(app.key))?;
    Ok(endpoint_keys)
}

// === endpoints ===

/// The endpoint `key` as stored: secrets still sealed if the log seals them. The writer
/// works on this form (it never seals or opens).
pub fn endpoint_row_by_key(
    txn: &RoTxn,
    dbs: &Dbs,
    key: u64,
) -> Result<Option<EndpointRecord>, LogError> {
    dbs.endpoints
        .get(txn, &u64_key(key))?
        .map(|stored| schema::decode_json::<EndpointRecord>(db_name::ENDPOINTS, stored))
        .transpose()
}

/// The endpoint `key` with its secrets opened (for reads that use them).
pub fn endpoint_by_key(
    txn: &RoTxn,
    dbs: &Dbs,
    key: EndpointKey,
) -> Result<Option<EndpointRecord>, LogError> {
    dbs.endpoints
        .get(txn, &u64_key(key.0))?
        .map(|stored| decode_endpoint(dbs, stored))
        .transpose()
}

/// Decodes a stored endpoint row and opens its sealed secrets.
pub fn decode_endpoint(dbs: &Dbs, stored: &[u8]) -> Result<EndpointRecord, LogError> {
    let stored = schema::decode_json::<EndpointRecord>(db_name::ENDPOINTS, stored)?;
    open_endpoint(dbs, stored)
}

/// Opens the sealed secrets of a stored endpoint.
pub fn open_endpoint(dbs: &Dbs, stored: EndpointRecord) -> Result<EndpointRecord, LogError> {
    match &dbs.sealer {
        Some(sealer) => sealer.open_endpoint(stored),
        None if stored.sealed => Err(LogError::Secrets(
            "an endpoint's secrets are sealed and no key is configured".to_owned(),
        )),
        None => Ok(stored),
    }
}

/// The key of endpoint `reference` (id or uid) of `app_key`.
fn endpoint_key_by_ref(
    txn: &RoTxn,
    dbs: &Dbs,
    app_key: u64,
    reference: &str,
) -> Result<Option<u64>, LogError> {
    let by_id = if reference.starts_with(IdKind::Endpoint.prefix()) {
        key_of(
            db_name::ENDPOINT_IDS,
            dbs.endpoint_ids.get(txn, &id_key(reference))?,
        )?
    } else {
        None
    };
    match by_id {
        Some(key) => Ok(Some(key)),
        None => key_of(
            db_name::ENDPOINT_IDS,
            dbs.endpoint_ids.get(txn, &uid_key(app_key, reference))?,
        ),
    }
}

/// Finds an endpoint of `app_key` by id or uid, as stored.
pub fn endpoint_row_by_ref(
    txn: &RoTxn,
    dbs: &Dbs,
    app_key: u64,
    reference: &str,
) -> Result<Option<EndpointRecord>, LogError> {
    let endpoint = match endpoint_key_by_ref(txn, dbs, app_key, reference)? {
        Some(key) => endpoint_row_by_key(txn, dbs, key)?,
        None => None,
    };
    // An id of another application's endpoint is "not found" here.
    Ok(endpoint.filter(|e| e.app_key == app_key))
}

/// Finds an endpoint of `app_key` by id or uid, its secrets opened.
pub fn endpoint_by_ref(
    txn: &RoTxn,
    dbs: &Dbs,
    app_key: u64,
    reference: &str,
) -> Result<Option<EndpointRecord>, LogError> {
    endpoint_row_by_ref(txn, dbs, app_key, reference)?
        .map(|stored| open_endpoint(dbs, stored))
        .transpose()
}

pub fn endpoint_uid_taken(
    txn: &RoTxn,
    dbs: &Dbs,
    app_key: u64,
    uid: &str,
) -> Result<Option<u64>, LogError> {
    key_of(
        db_name::ENDPOINT_IDS,
        dbs.endpoint_ids.get(txn, &uid_key(app_key, uid))?,
    )
}

/// The most endpoints an application may have, as the log holds it.
pub fn endpoints_per_app_max(txn: &RoTxn, dbs: &Dbs) -> Result<u32, LogError> {
    let stored = key_of(
        "meta",
        dbs.meta.get(txn, schema::meta_key::ENDPOINTS_PER_APP_MAX)?,
    )?;
    // Stored only by `put_endpoints_per_app_max`, from a u32.
    Ok(
        stored.map_or(crate::limits::ENDPOINTS_PER_APP_DEFAULT, |max| {
            u32::try_from(max).unwrap_or(u32::MAX)
        }),
    )
}

pub(in crate::log) fn put_endpoints_per_app_max(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    max: u32,
) -> Result<(), LogError> {
    dbs.meta.put(
        wtxn,
        schema::meta_key::ENDPOINTS_PER_APP_MAX,
        &u64_key(u64::from(max)),
    )?;
    Ok(())
}

pub fn put_endpoint(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    endpoint: &EndpointRecord,
    previous: Option<&EndpointRecord>,
) -> Result<(), LogError> {
    let key = u64_key(endpoint.key);
    if let Some(old_uid) = previous.and_then(|p| p.uid.as_deref())
        && endpoint.uid.as_deref() != Some(old_uid)
    {
        dbs.endpoint_ids
            .delete(wtxn, &uid_key(endpoint.app_key, old_uid))?;
    }
    if let Some(uid) = &endpoint.uid {
        dbs.endpoint_ids
            .put(wtxn, &uid_key(endpoint.app_key, uid), &key)?;
    }
    if previous.is_none() {
        dbs.endpoint_ids.put(wtxn, &id_key(&endpoint.id), &key)?;
        dbs.app_endpoints.put(
            wtxn,
            &app_endpoint_key(AppKey(endpoint.app_key), EndpointKey(endpoint.key)),
            &[],
        )?;
    }
    // Written as given: secrets arrive in their stored form (sealed before the op).
    dbs.endpoints
        .put(wtxn, &key, &schema::encode_json(endpoint))?;
    Ok(())
}

/// Deletes an endpoint. Its delivery rows stay; the delivery engine drops rows whose
/// endpoint no longer exists.
pub fn delete_endpoint(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    endpoint: &EndpointRecord,
) -> Result<(), LogError> {
    if let Some(uid) = &endpoint.uid {
        dbs.endpoint_ids
            .delete(wtxn, &uid_key(endpoint.app_key, uid))?;
    }
    dbs.endpoint_ids.delete(wtxn, &id_key(&endpoint.id))?;
    dbs.app_endpoints.delete(
        wtxn,
        &app_endpoint_key(AppKey(endpoint.app_key), EndpointKey(endpoint.key)),
    )?;
    dbs.endpoints.delete(wtxn, &u64_key(endpoint.key))?;
    // Its poller consumers and poller token go with it (the token stops working).
    let endpoint_prefix = u64_key(endpoint.key);
    let consumers = keys_with_prefix(wtxn, &dbs.consumers, &endpoint_prefix)?;
    for key in consumers {
        dbs.consumers.delete(wtxn, &key)?;
    }
    if let Some(token) = poller_token(wtxn, dbs, endpoint.key)? {
        dbs.tokens.delete(wtxn, &token.hash)?;
        dbs.poller_tokens.delete(wtxn, &endpoint_prefix)?;
    }
    Ok(())
}

fn keys_with_prefix(
    txn: &RoTxn,
    table: &super::Table,
    prefix: &[u8],
) -> Result<Vec<Vec<u8>>, LogError> {
    let mut keys = Vec::new();
    for row in table.prefix_iter(txn, prefix)? {
        let (key, _) = row?;
        keys.push(key.to_vec());
    }
    Ok(keys)
}

/// Keys of every endpoint of `app_key`, in creation order.
pub fn app_endpoint_keys(txn: &RoTxn, dbs: &Dbs, app_key: u64) -> Result<Vec<u64>, LogError> {
    let mut keys = Vec::new();
    for row in dbs.app_endpoints.prefix_iter(txn, &u64_key(app_key))? {
        let (key, _) = row?;
        keys.push(schema::read_u64(db_name::APP_ENDPOINTS, key, 8)?);
    }
    Ok(keys)
}

// === event types ===

pub fn event_type(txn: &RoTxn, dbs: &Dbs, name: &str) -> Result<Option<EventTypeRecord>, LogError> {
    dbs.event_types
        .get(txn, name.as_bytes())?
        .map(|v| schema::decode_json(db_name::EVENT_TYPES, v))
        .transpose()
}

pub fn put_event_type(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    record: &EventTypeRecord,
) -> Result<(), LogError> {
    dbs.event_types
        .put(wtxn, record.name.as_bytes(), &schema::encode_json(record))?;
    Ok(())
}

// === messages ===

pub fn message_by_seq(txn: &RoTxn, dbs: &Dbs, seq: Seq) -> Result<Option<MessageRecord>, LogError> {
    dbs.msgs
        .get(txn, &u64_key(seq.0))?
        .map(MessageRecord::decode)
        .transpose()
}

/// Finds a message of `app_key` by id or eventId; returns its seq and record.
pub fn message_by_ref(
    txn: &RoTxn,
    dbs: &Dbs,
    app_key: u64,
    reference: &str,
) -> Result<Option<(u64, MessageRecord)>, LogError> {
    let by_id = if reference.starts_with(IdKind::Message.prefix()) {
        key_of(db_name::MSG_IDS, dbs.msg_ids.get(txn, &id_key(reference))?)?
    } else {
        None
    };
    let seq = match by_id {
        Some(seq) => Some(seq),
        None => message_seq_by_event_id(txn, dbs, app_key, reference)?,
    };
    let Some(seq) = seq else { return Ok(None) };
    Ok(message_by_seq(txn, dbs, Seq(seq))?
        .filter(|m| m.app_key == app_key)
        .map(|m| (seq, m)))
}

/// The seq the next message will get (one past the newest message).
pub fn next_seq(txn: &RoTxn, dbs: &Dbs) -> Result<u64, LogError> {
    match dbs.msgs.last(txn)? {
        Some((key, _)) => Ok(schema::read_u64(db_name::MSGS, key, 0)? + 1),
        None => Ok(1),
    }
}

pub fn message_seq_by_event_id(
    txn: &RoTxn,
    dbs: &Dbs,
    app_key: u64,
    event_id: &str,
) -> Result<Option<u64>, LogError> {
    key_of(
        db_name::MSG_IDS,
        dbs.msg_ids.get(txn, &uid_key(app_key, event_id))?,
    )
}

// === tokens ===

pub fn token(txn: &RoTxn, dbs: &Dbs, hash: &[u8; 32]) -> Result<Option<TokenRecord>, LogError> {
    dbs.tokens
        .get(txn, hash)?
        .map(|v| schema::decode_json(db_name::TOKENS, v))
        .transpose()
}

pub fn put_token(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    hash: &[u8; 32],
    record: &TokenRecord,
) -> Result<(), LogError> {
    dbs.tokens.put(wtxn, hash, &schema::encode_json(record))?;
    Ok(())
}

/// Every stored API token (org and app scopes; endpoints' poller tokens, managed by the
/// poller routes, are left out), with its hash, oldest first. At most
/// `limits::TOKENS_MAX` rows are read.
pub fn tokens(txn: &RoTxn, dbs: &Dbs) -> Result<Vec<([u8; 32], TokenRecord)>, LogError> {
    let mut out: Vec<([u8; 32], TokenRecord)> = Vec::new();
    for row in dbs.tokens.iter(txn)? {
        let (key, value) = row?;
        let hash: [u8; 32] = key
            .try_into()
            .map_err(|_| LogError::corrupt(db_name::TOKENS, "a key is not a SHA-256"))?;
        let record: TokenRecord = schema::decode_json(db_name::TOKENS, value)?;
        if !matches!(record.scope, schema::TokenScope::Poller { .. }) && record.portal.is_none() {
            out.push((hash, record));
        }
    }
    out.sort_by_key(|(hash, record)| (record.created_ms, *hash));
    Ok(out)
}

/// Every tenant-portal credential (bearer tokens, login codes, sessions) with its hash,
/// in hash order; at most `limits::TOKENS_MAX` rows are read.
pub fn portal_tokens(txn: &RoTxn, dbs: &Dbs) -> Result<Vec<([u8; 32], TokenRecord)>, LogError> {
    let mut out = Vec::new();
    for row in dbs.tokens.iter(txn)? {
        let (key, value) = row?;
        let hash: [u8; 32] = key
            .try_into()
            .map_err(|_| LogError::corrupt(db_name::TOKENS, "a key is not a SHA-256"))?;
        let record: TokenRecord = schema::decode_json(db_name::TOKENS, value)?;
        if record.portal.is_some() {
            out.push((hash, record));
        }
    }
    Ok(out)
}

pub fn delete_token(wtxn: &mut RwTxn, dbs: &Dbs, hash: &[u8; 32]) -> Result<(), LogError> {
    dbs.tokens.delete(wtxn, hash)?;
    Ok(())
}

/// The tokens whose public id (`schema::token_id`) starts with `prefix`.
pub fn tokens_by_id_prefix(
    txn: &RoTxn,
    dbs: &Dbs,
    prefix: &str,
) -> Result<Vec<([u8; 32], TokenRecord)>, LogError> {
    let mut all = tokens(txn, dbs)?;
    all.retain(|(hash, _)| schema::token_id(hash).starts_with(prefix));
    Ok(all)
}

pub fn has_tokens(txn: &RoTxn, dbs: &Dbs) -> Result<bool, LogError> {
    Ok(!dbs.tokens.is_empty(txn)?)
}

// === the message append (the ingest commit) ===

/// Which endpoints a new message goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fanout {
    /// Every endpoint of the application whose filters match (the normal case).
    Matching,
    /// This endpoint only, whatever its filters (`send-example`).
    Only(u64),
}

/// Appends a message, its id index entries, its place in the application's ordered log,
/// and one delivery row per endpoint of `fanout` (pending, or skipped while the endpoint
/// is disabled), with a due row for each pending one, handed to the shards after the
/// commit. A scheduled message (`deliver_at_ms` ahead) is due then: the shards hold it
/// like a retry, in a timer near its time and in the `due` table until then. All in the caller's batch transaction. Returns the message's seq and how many
/// deliveries were recorded.
pub(in crate::log) fn append_message(
    ctx: &mut super::WriteCtx<'_, '_>,
    record: &MessageRecord,
    fanout: Fanout,
) -> Result<(u64, usize), LogError> {
    use super::schema::{DeliveryRecord, DeliveryState, due_key};
    let seq = ctx.state.take_seq();
    let seq_key = u64_key(seq);
    let dbs = ctx.dbs;
    // Seqs only grow, so every append goes to the end of the B-tree (MDB_APPEND).
    dbs.msgs
        .put_with_flags(ctx.wtxn, heed::PutFlags::APPEND, &seq_key, &record.encode())?;
    dbs.msg_ids.put(ctx.wtxn, &id_key(&record.id), &seq_key)?;
    if let Some(event_id) = &record.event_id {
        dbs.msg_ids
            .put(ctx.wtxn, &uid_key(record.app_key, event_id), &seq_key)?;
    }
    dbs.app_msgs.put(
        ctx.wtxn,
        &app_message_key(AppKey(record.app_key), Seq(seq)),
        &[],
    )?;
    let targets: Vec<(u64, bool)> = match fanout {
        // Polling-only endpoints are read by their consumers, never pushed to (the index
        // leaves them out).
        Fanout::Matching => {
            let started = std::time::Instant::now();
            let targets = ctx.state.endpoints.matching(
                record.app_key,
                &record.event_type,
                record.channels.as_deref(),
            );
            crate::telemetry::fanout_matched(started.elapsed());
            targets
        }
        Fanout::Only(endpoint_key) => endpoint_row_by_key(ctx.wtxn, dbs, endpoint_key)?
            .map(|e| (e.key, e.disabled))
            .into_iter()
            .collect(),
    };
    let due_ms = record
        .deliver_at_ms
        .map_or(ctx.now_ms, |at| at.max(ctx.now_ms));
    let mut rows = Vec::with_capacity(targets.len());
    for &(endpoint_key, disabled) in &targets {
        let state = if disabled {
            DeliveryState::Skipped
        } else {
            DeliveryState::Pending
        };
        let row = DeliveryRecord {
            state,
            manual: false,
            attempts: 0,
            next_due_ms: due_ms,
            updated_ms: ctx.now_ms,
        };
        rows.push((EndpointKey(endpoint_key), row));
        if state == DeliveryState::Pending {
            let (endpoint_key, seq) = (EndpointKey(endpoint_key), Seq(seq));
            dbs.due
                .put(ctx.wtxn, &due_key(due_ms, endpoint_key, seq), &[])?;
            ctx.state.outbox.push(super::DueJob {
                endpoint_key,
                seq,
                due_ms,
            });
        }
    }
    super::deliveries::insert_new_message(ctx.wtxn, dbs, &mut ctx.state.unindexed, Seq(seq), rows)?;
    Ok((seq, targets.len()))
}

/// What `requeue` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Requeued {
    /// The delivery is due now.
    Queued,
    /// It was already pending (waiting for an attempt or a retry); left as it was.
    AlreadyPending,
}

/// Makes the delivery of message `seq` to `endpoint_key` due now, creating its row if
/// the message never had one for that endpoint. A `manual` delivery is attempted once
/// and not retried (resend, recover); otherwise it follows the retry schedule
/// (replay-missing). A delivery already pending keeps its place: it will be attempted.
pub(in crate::log) fn requeue(
    ctx: &mut super::WriteCtx<'_, '_>,
    endpoint_key: u64,
    seq: u64,
    manual: bool,
) -> Result<Requeued, LogError> {
    use super::schema::{DeliveryRecord, DeliveryState, due_key};
    let (endpoint_key, seq) = (EndpointKey(endpoint_key), Seq(seq));
    let previous = super::deliveries::get(ctx.wtxn, ctx.dbs, endpoint_key, seq)?;
    if previous.is_some_and(|p| p.state == DeliveryState::Pending) {
        return Ok(Requeued::AlreadyPending);
    }
    let row = DeliveryRecord {
        state: DeliveryState::Pending,
        manual,
        attempts: previous.map_or(0, |p| p.attempts),
        next_due_ms: ctx.now_ms,
        updated_ms: ctx.now_ms,
    };
    if previous.is_some() {
        super::deliveries::replace(ctx.wtxn, ctx.dbs, endpoint_key, seq, &row)?;
    } else {
        super::deliveries::insert(
            ctx.wtxn,
            ctx.dbs,
            &mut ctx.state.unindexed,
            endpoint_key,
            seq,
            &row,
        )?;
    }
    ctx.dbs
        .due
        .put(ctx.wtxn, &due_key(ctx.now_ms, endpoint_key, seq), &[])?;
    ctx.state.outbox.push(super::DueJob {
        endpoint_key,
        seq,
        due_ms: ctx.now_ms,
    });
    Ok(Requeued::Queued)
}

// === ordered scans for lists ===

/// The smallest key greater than every key that starts with `prefix` (`None`: no bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Visits rows of `table` whose key starts with `prefix`, strictly after `cursor` in the
/// direction of travel (toward lower or higher keys), until `visit` returns `true` or
/// `rows_max` rows were seen. Returns whether the scan stopped at the row cap, which
/// means a list page must say "not done" even if it is short.
fn scan(
    txn: &RoTxn,
    table: &super::Table,
    prefix: &[u8],
    cursor: Option<&[u8]>,
    toward_lower: bool,
    rows_max: usize,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    use std::ops::Bound;
    let end = prefix_end(prefix);
    // LMDB refuses empty keys, so an empty prefix is "unbounded", not `Included(&[])`.
    let lower = match cursor {
        Some(c) if !toward_lower => Bound::Excluded(c),
        _ if prefix.is_empty() => Bound::Unbounded,
        _ => Bound::Included(prefix),
    };
    let upper = match (cursor, &end) {
        (Some(c), _) if toward_lower => Bound::Excluded(c),
        (_, Some(end)) => Bound::Excluded(end.as_slice()),
        (_, None) => Bound::Unbounded,
    };
    let bounds = (lower, upper);
    let mut seen = 0;
    let mut step = |row: heed::Result<(&[u8], &[u8])>| -> Result<Option<bool>, LogError> {
        let (key, value) = row?;
        seen += 1;
        if visit(key, value)? {
            return Ok(Some(false));
        }
        Ok((seen >= rows_max).then_some(true))
    };
    if toward_lower {
        for row in table.rev_range(txn, &bounds)? {
            if let Some(capped) = step(row)? {
                return Ok(capped);
            }
        }
    } else {
        for row in table.range(txn, &bounds)? {
            if let Some(capped) = step(row)? {
                return Ok(capped);
            }
        }
    }
    Ok(false)
}

/// Walks a table keyed by one u64 whose values are versioned JSON records of type `T`.
fn scan_keyed<T: serde::de::DeserializeOwned>(
    txn: &RoTxn,
    table: &super::Table,
    name: &'static str,
    walk: Walk<u64>,
    mut visit: impl FnMut(T) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let cursor = walk.after.map(u64_key);
    scan(
        txn,
        table,
        &[],
        cursor.as_ref().map(|c| &c[..]),
        walk.toward_lower,
        walk.rows_max,
        |_, value| visit(schema::decode_json(name, value)?),
    )
}

/// Walks the rows of a table keyed (parent u64, child u64) under one parent: `visit`
/// gets each row's child key and value.
pub(in crate::log) fn scan_children(
    txn: &RoTxn,
    table: &super::Table,
    name: &'static str,
    parent: u64,
    walk: Walk<u64>,
    mut visit: impl FnMut(u64, &[u8]) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let cursor = walk.after.map(|child| child_key(parent, child));
    scan(
        txn,
        table,
        &u64_key(parent),
        cursor.as_ref().map(|c| &c[..]),
        walk.toward_lower,
        walk.rows_max,
        |key, value| visit(schema::read_u64(name, key, 8)?, value),
    )
}

/// How a list page walks an index: from the row after `after` (in the direction of
/// travel), toward lower keys or higher, reading at most `rows_max` rows. `visit` returns
/// `true` to stop (the page is full); the scan returns whether it stopped at the row cap.
#[derive(Clone, Copy, Debug)]
pub struct Walk<C> {
    pub after: Option<C>,
    pub toward_lower: bool,
    pub rows_max: usize,
}

/// Applications in key (creation) order.
pub fn scan_apps(
    txn: &RoTxn,
    dbs: &Dbs,
    walk: Walk<u64>,
    visit: impl FnMut(AppRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    scan_keyed(txn, &dbs.apps, db_name::APPS, walk, visit)
}

/// An application's messages in seq order (its ordered log).
pub fn scan_app_messages(
    txn: &RoTxn,
    dbs: &Dbs,
    app_key: u64,
    walk: Walk<u64>,
    mut visit: impl FnMut(u64, MessageRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    scan_children(
        txn,
        &dbs.app_msgs,
        db_name::APP_MSGS,
        app_key,
        walk,
        |seq, _| {
            let message = message_by_seq(txn, dbs, Seq(seq))?
                .ok_or_else(|| LogError::corrupt(db_name::APP_MSGS, "row for a missing message"))?;
            visit(seq, message)
        },
    )
}

/// An application's endpoints in key (creation) order, as stored (secrets not opened).
pub fn scan_app_endpoints(
    txn: &RoTxn,
    dbs: &Dbs,
    app_key: u64,
    walk: Walk<u64>,
    mut visit: impl FnMut(EndpointRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let name = db_name::APP_ENDPOINTS;
    scan_children(
        txn,
        &dbs.app_endpoints,
        name,
        app_key,
        walk,
        |endpoint_key, _| {
            let endpoint = endpoint_row_by_key(txn, dbs, endpoint_key)?
                .ok_or_else(|| LogError::corrupt(name, "row for a missing endpoint"))?;
            visit(endpoint)
        },
    )
}

/// Event types in name order.
pub fn scan_event_types(
    txn: &RoTxn,
    dbs: &Dbs,
    walk: Walk<&str>,
    mut visit: impl FnMut(EventTypeRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    scan(
        txn,
        &dbs.event_types,
        &[],
        walk.after.map(str::as_bytes),
        walk.toward_lower,
        walk.rows_max,
        |_, value| visit(schema::decode_json(db_name::EVENT_TYPES, value)?),
    )
}

/// Background tasks in key (creation) order.
pub fn scan_tasks(
    txn: &RoTxn,
    dbs: &Dbs,
    walk: Walk<u64>,
    visit: impl FnMut(schema::TaskRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    scan_keyed(txn, &dbs.tasks, db_name::TASKS, walk, visit)
}

/// An endpoint's deliveries in seq order.
pub fn scan_endpoint_deliveries(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint_key: u64,
    walk: Walk<u64>,
    visit: impl FnMut(u64, schema::DeliveryRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    super::deliveries::walk_endpoint(txn, dbs, EndpointKey(endpoint_key), walk, visit)
}

/// Which attempts an attempt list walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptsOf {
    /// Every attempt of one message (by seq).
    Message(u64),
    /// Every attempt at one endpoint (by key).
    Endpoint(u64),
}

/// Attempts of a message or an endpoint, in attempt-key (time) order.
pub fn scan_attempts(
    txn: &RoTxn,
    dbs: &Dbs,
    of: AttemptsOf,
    walk: Walk<u64>,
    mut visit: impl FnMut(schema::AttemptRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let (table, parent) = match of {
        AttemptsOf::Message(seq) => (&dbs.msg_attempts, seq),
        AttemptsOf::Endpoint(key) => (&dbs.endpoint_attempts, key),
    };
    scan_children(
        txn,
        table,
        db_name::ATTEMPTS,
        parent,
        walk,
        |attempt_key, _| {
            let attempt = attempt_by_key(txn, dbs, attempt_key)?.ok_or_else(|| {
                LogError::corrupt(db_name::ATTEMPTS, "index row for a missing attempt")
            })?;
            visit(attempt)
        },
    )
}

/// Visits an endpoint's deliveries of seqs in `[from_seq, to_seq)`, at most `rows_max`;
/// `false` if there were more (the window is too wide to count).
pub fn each_delivery_in(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint_key: u64,
    (from_seq, to_seq): (u64, u64),
    rows_max: usize,
    mut visit: impl FnMut(u64, schema::DeliveryRecord),
) -> Result<bool, LogError> {
    use std::ops::Bound;
    let (mut rows, mut complete) = (0, true);
    super::deliveries::each_of_endpoint(
        txn,
        dbs,
        EndpointKey(endpoint_key),
        (Bound::Included(from_seq), Bound::Excluded(to_seq)),
        |seq, row| {
            if rows >= rows_max {
                complete = false;
                return Ok(true);
            }
            rows += 1;
            visit(seq.0, row);
            Ok(false)
        },
    )?;
    Ok(complete)
}

/// Successes and failures among an endpoint's deliveries of seqs in `[from_seq, to_seq)`,
/// counting at most `rows_max` rows; `cut` when there were more (the counts are then
/// lower bounds). For the portal's per-row summaries: an index range,
/// never more than the caller's budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub success: u64,
    pub fail: u64,
    /// Rows read (pending ones too).
    pub rows: u64,
    pub cut: bool,
}

/// The seqs of the messages created at or after `at_ms`: `[from, next_seq)`.
pub fn seqs_created_since(txn: &RoTxn, dbs: &Dbs, at_ms: u64) -> Result<(u64, u64), LogError> {
    let next_seq = next_seq(txn, dbs)?;
    let from = super::tasks::first_seq_at(txn, dbs, at_ms, next_seq)?;
    Ok((from, next_seq))
}

/// The counts of each of `endpoint_keys` (in that order), each over at most
/// `rows_max_each` rows; the rows past the index's watermark are read once for them all.
pub fn delivery_counts(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint_keys: &[u64],
    (from_seq, to_seq): (u64, u64),
    rows_max_each: usize,
) -> Result<Vec<DeliveryCounts>, LogError> {
    use std::ops::Bound;
    let endpoints: Vec<EndpointKey> = endpoint_keys.iter().copied().map(EndpointKey).collect();
    let mut counts = vec![DeliveryCounts::default(); endpoints.len()];
    let complete = super::deliveries::each_of_endpoints(
        txn,
        dbs,
        &endpoints,
        (Bound::Included(from_seq), Bound::Excluded(to_seq)),
        rows_max_each,
        |place, _, row| {
            counts[place].count(&row);
            Ok(false)
        },
    )?;
    for (counts, complete) in counts.iter_mut().zip(complete) {
        counts.cut = !complete;
    }
    Ok(counts)
}

impl DeliveryCounts {
    fn count(&mut self, row: &schema::DeliveryRecord) {
        self.rows += 1;
        match row.state {
            schema::DeliveryState::Succeeded => self.success += 1,
            schema::DeliveryState::Failed | schema::DeliveryState::Skipped => self.fail += 1,
            schema::DeliveryState::Pending | schema::DeliveryState::Sending => {}
        }
    }
}

/// An application's endpoint health, for the operator's list of applications.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppHealth {
    pub endpoints: u64,
    pub disabled: u64,
    /// Endpoints whose deliveries have been exhausting their schedule with no success.
    pub failing: u64,
    /// Over all its endpoints, within the caller's row budget.
    pub deliveries: DeliveryCounts,
}

/// The health of application `app_key`: its endpoints (at most `ENDPOINTS_PER_APP_MAX`)
/// and their deliveries of seqs in `seqs`, counting at most `rows_max` delivery rows.
pub fn app_health(
    txn: &RoTxn,
    dbs: &Dbs,
    app_key: u64,
    seqs: (u64, u64),
    rows_max: usize,
) -> Result<AppHealth, LogError> {
    use std::ops::Bound;
    let mut health = AppHealth::default();
    let mut endpoints = Vec::new();
    for key in app_endpoint_keys(txn, dbs, app_key)? {
        let Some(endpoint) = endpoint_row_by_key(txn, dbs, key)? else {
            continue;
        };
        health.endpoints += 1;
        health.disabled += u64::from(endpoint.disabled);
        health.failing += u64::from(endpoint.failing_since_ms.is_some());
        endpoints.push(EndpointKey(key));
    }
    // One budget for all the endpoints' rows: the walk ends when it is spent.
    let deliveries = &mut health.deliveries;
    let complete = super::deliveries::each_of_endpoints(
        txn,
        dbs,
        &endpoints,
        (Bound::Included(seqs.0), Bound::Excluded(seqs.1)),
        rows_max,
        |_, _, row| {
            if deliveries.rows >= rows_max as u64 {
                deliveries.cut = true;
                return Ok(true);
            }
            deliveries.count(&row);
            Ok(false)
        },
    )?;
    deliveries.cut |= complete.contains(&false);
    Ok(health)
}

/// Whether the log answers a read at all (for health).
pub fn check_readable(txn: &RoTxn, dbs: &Dbs) -> Result<(), LogError> {
    dbs.meta.len(txn)?;
    Ok(())
}

/// Pending work at a glance, for metrics: the earliest due time, how many deliveries are
/// due or waiting, how many background tasks run.
pub fn pending_work(txn: &RoTxn, dbs: &Dbs) -> Result<(Option<u64>, u64, u64), LogError> {
    let earliest_due = match dbs.due.first(txn)? {
        Some((key, _)) => Some(schema::read_u64(db_name::DUE, key, 0)?),
        None => None,
    };
    Ok((earliest_due, dbs.due.len(txn)?, dbs.running_tasks.len(txn)?))
}

pub fn app_key_of_id(txn: &RoTxn, dbs: &Dbs, id: &str) -> Result<Option<u64>, LogError> {
    key_of(db_name::APP_IDS, dbs.app_ids.get(txn, &id_key(id))?)
}

// === attempts and delivery progress ===

/// What a delivery does after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Step {
    /// Delivered: the delivery is done.
    Succeeded,
    /// Failed; try again at this time (ms).
    RetryAt(u64),
    /// Failed and the schedule is used up.
    Exhausted,
    /// The receiver answered 410 Gone: the endpoint is disabled.
    Gone,
    /// A manual attempt failed; manual attempts are not retried.
    Failed,
}

/// Records one attempt and moves its delivery on, in the caller's batch: the attempt and
/// its two indexes, the delivery row, the due row (moved or removed), and the endpoint's
/// health (cleared by a success; disabled by 410 or by exhaustions that last longer than
/// `disable_after_ms` with no success between). Returns the attempt's key.
pub(in crate::log) fn record_attempt(
    ctx: &mut super::WriteCtx<'_, '_>,
    record: &super::ops::AttemptRow,
    step: Step,
    disable_after_ms: u64,
) -> Result<u64, LogError> {
    use super::schema::{DeliveryRecord, DeliveryState, due_key};
    let dbs = ctx.dbs;
    let attempt_key = ctx.state.take_attempt_key();
    let key = u64_key(attempt_key);
    // Attempt keys only grow, like seqs: the attempt log is appended to (MDB_APPEND),
    // which skips the search and fills each page before it starts the next.
    dbs.attempts
        .put_with_flags(ctx.wtxn, heed::PutFlags::APPEND, &key, &record.stored)?;
    dbs.attempt_ids.put(ctx.wtxn, &id_key(&record.id), &key)?;
    dbs.msg_attempts.put(
        ctx.wtxn,
        &message_attempt_key(Seq(record.seq), AttemptKey(attempt_key)),
        &[],
    )?;
    dbs.endpoint_attempts.put(
        ctx.wtxn,
        &endpoint_attempt_key(EndpointKey(record.endpoint_key), AttemptKey(attempt_key)),
        &[],
    )?;

    let (endpoint, seq) = (EndpointKey(record.endpoint_key), Seq(record.seq));
    let previous = super::deliveries::get(ctx.wtxn, dbs, endpoint, seq)?;
    let now_ms = ctx.now_ms;
    if let Some(previous) = previous.filter(|p| p.state == DeliveryState::Pending) {
        dbs.due.delete(
            ctx.wtxn,
            &due_key(
                previous.next_due_ms,
                EndpointKey(record.endpoint_key),
                Seq(record.seq),
            ),
        )?;
    }
    let (state, next_due_ms) = match step {
        Step::Succeeded => (DeliveryState::Succeeded, now_ms),
        Step::RetryAt(at) => {
            dbs.due.put(
                ctx.wtxn,
                &due_key(at, EndpointKey(record.endpoint_key), Seq(record.seq)),
                &[],
            )?;
            (DeliveryState::Pending, at)
        }
        Step::Exhausted | Step::Gone | Step::Failed => (DeliveryState::Failed, now_ms),
    };
    let attempts = previous.map_or(0, |p| p.attempts).saturating_add(1);
    let row = DeliveryRecord {
        state,
        manual: previous.is_some_and(|p| p.manual),
        attempts,
        next_due_ms,
        updated_ms: now_ms,
    };
    if previous.is_some() {
        super::deliveries::replace(ctx.wtxn, dbs, endpoint, seq, &row)?;
    } else {
        super::deliveries::insert(ctx.wtxn, dbs, &mut ctx.state.unindexed, endpoint, seq, &row)?;
    }
    // Operational events follow scheduled deliveries only (a manual attempt is a person's).
    let retry_left = matches!(step, Step::RetryAt(_));
    if !row.manual
        && let Some(event) = super::operational::attempt_event(attempts, record.success, retry_left)
    {
        let attempt: super::schema::AttemptRecord =
            super::schema::decode_json(db_name::ATTEMPTS, &record.stored)?;
        super::operational::attempt(ctx, event, &attempt)?;
    }
    update_health(ctx, record, step, disable_after_ms)?;
    Ok(attempt_key)
}

fn update_health(
    ctx: &mut super::WriteCtx<'_, '_>,
    record: &super::ops::AttemptRow,
    step: Step,
    disable_after_ms: u64,
) -> Result<(), LogError> {
    // The common case, a success at a healthy endpoint, changes nothing: answered from the
    // writer's index without reading and decoding the endpoint.
    if record.success && !ctx.state.endpoints.is_failing(record.endpoint_key) {
        return Ok(());
    }
    let Some(endpoint) = endpoint_row_by_key(ctx.wtxn, ctx.dbs, record.endpoint_key)? else {
        return Ok(());
    };
    let now_ms = ctx.now_ms;
    let mut next = endpoint.clone();
    match step {
        _ if record.success => next.failing_since_ms = None,
        Step::Gone => disable(
            &mut next,
            now_ms,
            "the endpoint answered 410 Gone".to_owned(),
        ),
        Step::Exhausted => match endpoint.failing_since_ms {
            // With `disable_after_ms = 0` the first exhaustion disables: there is no
            // failing period to wait for.
            None if disable_after_ms > 0 => next.failing_since_ms = Some(now_ms),
            None => disable(
                &mut next,
                now_ms,
                format!(
                    "deliveries kept failing since {}",
                    crate::clock::format_rfc3339(now_ms)
                ),
            ),
            Some(since) if now_ms.saturating_sub(since) >= disable_after_ms => {
                let reason = format!(
                    "deliveries kept failing since {}",
                    crate::clock::format_rfc3339(since)
                );
                disable(&mut next, now_ms, reason);
            }
            Some(_) => {}
        },
        _ => {}
    }
    if next != endpoint {
        put_endpoint(ctx.wtxn, ctx.dbs, &next, Some(&endpoint))?;
        ctx.state.endpoints.upsert(&next);
        if next.disabled && !endpoint.disabled {
            let fail_since = endpoint.failing_since_ms.unwrap_or(now_ms);
            super::operational::endpoint_disabled(ctx, &next, true, Some(fail_since))?;
        }
    }
    Ok(())
}

fn disable(endpoint: &mut EndpointRecord, now_ms: u64, reason: String) {
    if !endpoint.disabled {
        endpoint.disabled = true;
        endpoint.disabled_reason = Some(reason);
        endpoint.disabled_at_ms = Some(now_ms);
        endpoint.updated_ms = now_ms;
    }
}

/// Marks a delivery that will not be attempted (its endpoint is disabled or gone) as
/// skipped and removes its due row, so nothing vanishes silently and nothing loops.
pub(in crate::log) fn skip_delivery(
    ctx: &mut super::WriteCtx<'_, '_>,
    endpoint_key: u64,
    seq: u64,
) -> Result<(), LogError> {
    use super::schema::{DeliveryRecord, DeliveryState, due_key};
    let (endpoint, seq) = (EndpointKey(endpoint_key), Seq(seq));
    let Some(row) = super::deliveries::get(ctx.wtxn, ctx.dbs, endpoint, seq)? else {
        return Ok(());
    };
    if row.state != DeliveryState::Pending {
        return Ok(());
    }
    ctx.dbs
        .due
        .delete(ctx.wtxn, &due_key(row.next_due_ms, endpoint, seq))?;
    let skipped = DeliveryRecord {
        state: DeliveryState::Skipped,
        updated_ms: ctx.now_ms,
        ..row
    };
    super::deliveries::replace(ctx.wtxn, ctx.dbs, endpoint, seq, &skipped)
}

pub fn attempt_by_key(
    txn: &RoTxn,
    dbs: &Dbs,
    key: u64,
) -> Result<Option<schema::AttemptRecord>, LogError> {
    dbs.attempts
        .get(txn, &u64_key(key))?
        .map(|v| schema::decode_json(db_name::ATTEMPTS, v))
        .transpose()
}

pub fn attempt_key_of_id(txn: &RoTxn, dbs: &Dbs, id: &str) -> Result<Option<u64>, LogError> {
    key_of(db_name::ATTEMPT_IDS, dbs.attempt_ids.get(txn, &id_key(id))?)
}

// === idempotency ===

/// The reply remembered under `key` (expired or not: the caller judges its age): found
/// through the reply index in `replies`, else among the rows of earlier layouts.
pub fn idempotency(
    txn: &RoTxn,
    dbs: &Dbs,
    key: &[u8; 32],
) -> Result<Option<schema::IdempotencyRecord>, LogError> {
    if let Some(created_ms) = dbs.reply_index.created_ms(key)
        && let Some(value) = dbs.replies.get(txn, &schema::reply_key(created_ms, key))?
    {
        return schema::IdempotencyRecord::decode(value).map(Some);
    }
    dbs.idempotency
        .get(txn, key)?
        .map(schema::IdempotencyRecord::decode)
        .transpose()
}

/// Files the reply to the request under `key` in `replies`. A reply remembered under the
/// key before (its day was up: a live one is answered, never replaced) leaves. Past
/// `replies_max` remembered replies, the oldest leave: memory and disk stay bounded
/// whatever the rate of idempotent POSTs.
pub(in crate::log) fn remember_reply(
    ctx: &mut super::WriteCtx<'_, '_>,
    key: &[u8; 32],
    record: &schema::IdempotencyRecord,
) -> Result<(), LogError> {
    let dbs = ctx.dbs;
    let pending = &mut ctx.state.reply_changes;
    if let Some(old_ms) = pending.created_ms(&dbs.reply_index, key) {
        dbs.replies
            .delete(ctx.wtxn, &schema::reply_key(old_ms, key))?;
    }
    if !dbs.idempotency.is_empty(ctx.wtxn)? {
        dbs.idempotency.delete(ctx.wtxn, key)?;
    }
    // Replies come in time order, so a row goes at or near the end of `replies`.
    dbs.replies.put(
        ctx.wtxn,
        &schema::reply_key(record.created_ms, key),
        &record.encode(),
    )?;
    pending.filed(key, record.created_ms);
    while dbs.replies.len(ctx.wtxn)? > ctx.state.replies_max {
        let Some((oldest, _)) = dbs.replies.first(ctx.wtxn)? else {
            break;
        };
        let (created_ms, hash) = reply_of_key(oldest)?;
        dbs.replies
            .delete(ctx.wtxn, &schema::reply_key(created_ms, &hash))?;
        ctx.state
            .reply_changes
            .removed(&dbs.reply_index, &hash, created_ms);
    }
    Ok(())
}

/// The (created_ms, key hash) a key of `replies` holds.
fn reply_of_key(key: &[u8]) -> Result<(u64, [u8; 32]), LogError> {
    let created_ms = schema::read_u64(db_name::REPLIES, key, 0)?;
    let hash = key
        .get(8..)
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| LogError::Corrupt {
            table: db_name::REPLIES,
            detail: format!("a key of {} bytes", key.len()),
        })?;
    Ok((created_ms, hash))
}

/// The reply index's map, from the whole of `replies`: read oldest first, so the newest
/// reply wins a prefix two keys share.
pub(in crate::log) fn reply_index_map(
    txn: &RoTxn,
    dbs: &Dbs,
) -> Result<std::collections::HashMap<u64, u64>, LogError> {
    let mut by_prefix = std::collections::HashMap::new();
    for row in dbs.replies.iter(txn)? {
        let (key, _) = row?;
        let (created_ms, hash) = reply_of_key(key)?;
        by_prefix.insert(super::replies::prefix(&hash), created_ms);
    }
    Ok(by_prefix)
}

/// The expiry of earlier layouts' rows: reads up to `rows_max` rows of `idempotency`
/// after `after` in key order and deletes the expired ones. The sweeper runs it while
/// that table holds rows. Returns where the next batch resumes (`None`: from the start)
/// and how many rows were deleted.
pub(in crate::log) fn expire_idempotency_scan(
    ctx: &mut super::WriteCtx<'_, '_>,
    after: Option<&[u8]>,
    rows_max: usize,
) -> Result<(Option<Vec<u8>>, u64), LogError> {
    let mut expired = Vec::new();
    let mut last = None;
    {
        let start = match after {
            Some(key) => std::ops::Bound::Excluded(key),
            None => std::ops::Bound::Unbounded,
        };
        let range = (start, std::ops::Bound::Unbounded);
        for row in ctx.dbs.idempotency.range(ctx.wtxn, &range)?.take(rows_max) {
            let (key, value) = row?;
            last = Some(key.to_vec());
            let record = schema::IdempotencyRecord::decode(value)?;
            if record
                .created_ms
                .saturating_add(crate::limits::IDEMPOTENCY_TTL_MS)
                <= ctx.now_ms
            {
                expired.push(key.to_vec());
            }
        }
    }
    for key in &expired {
        ctx.dbs.idempotency.delete(ctx.wtxn, key)?;
    }
    Ok((last, expired.len() as u64))
}

/// What one `ExpireReplies` batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepliesExpired {
    /// Remembered replies deleted.
    pub deleted: u64,
    /// The batch stopped at its bound: more may have expired.
    pub more: bool,
}

/// Deletes up to `rows_max` remembered replies whose `IDEMPOTENCY_TTL_MS` is up, oldest
/// first: one range from the front of `replies`, so a batch costs the rows it deletes,
/// however many replies are remembered.
pub(in crate::log) fn expire_replies(
    ctx: &mut super::WriteCtx<'_, '_>,
    rows_max: usize,
) -> Result<RepliesExpired, LogError> {
    let mut expired: Vec<(u64, [u8; 32])> = Vec::new();
    for row in ctx.dbs.replies.iter(ctx.wtxn)?.take(rows_max) {
        let (key, _) = row?;
        let (created_ms, hash) = reply_of_key(key)?;
        if created_ms.saturating_add(crate::limits::IDEMPOTENCY_TTL_MS) > ctx.now_ms {
            break;
        }
        expired.push((created_ms, hash));
    }
    for (created_ms, hash) in &expired {
        ctx.dbs
            .replies
            .delete(ctx.wtxn, &schema::reply_key(*created_ms, hash))?;
        ctx.state
            .reply_changes
            .removed(&ctx.dbs.reply_index, hash, *created_ms);
    }
    Ok(RepliesExpired {
        deleted: expired.len() as u64,
        more: expired.len() == rows_max,
    })
}

/// How many idempotent replies are remembered: in `replies`, and in the table of
/// earlier layouts.
pub fn idempotency_rows(txn: &RoTxn, dbs: &Dbs) -> Result<(u64, u64), LogError> {
    Ok((dbs.replies.len(txn)?, dbs.idempotency.len(txn)?))
}

// === reads for the delivery engine ===

/// Up to `rows_max` delivery rows of `endpoint_key` from `from_seq` on, in seq order, and
/// whether they are all the endpoint has from there (`false`: more follow the last one).
/// A spilled lane refills from these.
pub fn endpoint_deliveries_from(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint_key: EndpointKey,
    from_seq: Seq,
    rows_max: usize,
) -> Result<(Vec<(Seq, schema::DeliveryRecord)>, bool), LogError> {
    use std::ops::Bound;
    let (mut rows, mut complete) = (Vec::new(), true);
    super::deliveries::each_of_endpoint(
        txn,
        dbs,
        endpoint_key,
        (Bound::Included(from_seq.0), Bound::Unbounded),
        |seq, row| {
            if rows.len() >= rows_max {
                complete = false;
                return Ok(true);
            }
            rows.push((seq, row));
            Ok(false)
        },
    )?;
    Ok((rows, complete))
}

/// Reads the `due` table in due order, strictly after the row `after` (`None`: from the
/// first row), until a row due after `until_ms` or the end (then the next read starts
/// over: `None`), or until `rows_max` rows were read (then the next read resumes after the
/// last one, returned).
pub fn due_rows(
    txn: &RoTxn,
    dbs: &Dbs,
    after: Option<super::DueJob>,
    until_ms: u64,
    rows_max: usize,
) -> Result<(Vec<super::DueJob>, Option<super::DueJob>), LogError> {
    use std::ops::Bound;
    let after = after.map(|job| schema::due_key(job.due_ms, job.endpoint_key, job.seq));
    let lower = match &after {
        Some(key) => Bound::Excluded(&key[..]),
        None => Bound::Unbounded,
    };
    let mut found = Vec::new();
    let mut rows = 0;
    for row in dbs.due.range(txn, &(lower, Bound::Unbounded))? {
        let (key, _) = row?;
        let job = super::DueJob {
            due_ms: schema::read_u64(db_name::DUE, key, 0)?,
            endpoint_key: EndpointKey(schema::read_u64(db_name::DUE, key, 8)?),
            seq: Seq(schema::read_u64(db_name::DUE, key, 16)?),
        };
        if job.due_ms > until_ms {
            return Ok((found, None));
        }
        found.push(job);
        rows += 1;
        if rows >= rows_max {
            return Ok((found, Some(job)));
        }
    }
    Ok((found, None))
}

/// The endpoint `key`'s row exactly as stored (secrets sealed if the log seals them),
/// borrowed from the transaction: for a cache that decodes (`decode_endpoint`) only
/// what changed.
pub fn endpoint_stored<'t>(
    txn: &'t RoTxn,
    dbs: &Dbs,
    key: EndpointKey,
) -> Result<Option<&'t [u8]>, LogError> {
    Ok(dbs.endpoints.get(txn, &u64_key(key.0))?)
}

// === polling ===

fn consumer_key(endpoint_key: u64, consumer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + consumer.len());
    key.extend_from_slice(&u64_key(endpoint_key));
    key.extend_from_slice(consumer.as_bytes());
    key
}

/// Where a poller consumer of an endpoint stands (after this seq), if it ever polled.
pub fn consumer_position(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint_key: u64,
    consumer: &str,
) -> Result<Option<u64>, LogError> {
    dbs.consumers
        .get(txn, &consumer_key(endpoint_key, consumer))?
        .map(|v| match v.split_first() {
            Some((&schema::RECORD_VERSION, rest)) => schema::read_u64(db_name::CONSUMERS, rest, 0),
            _ => Err(LogError::corrupt(db_name::CONSUMERS, "bad position")),
        })
        .transpose()
}

/// Stores a consumer's position; `false` (nothing written) when the endpoint already has
/// `limits::POLLER_CONSUMERS_MAX` other consumers.
pub(in crate::log) fn put_consumer(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    endpoint_key: u64,
    consumer: &str,
    seq: u64,
) -> Result<bool, LogError> {
    let key = consumer_key(endpoint_key, consumer);
    if dbs.consumers.get(wtxn, &key)?.is_none() {
        let mut count = 0;
        for row in dbs.consumers.prefix_iter(wtxn, &u64_key(endpoint_key))? {
            row?;
            count += 1;
            if count >= crate::limits::POLLER_CONSUMERS_MAX {
                return Ok(false);
            }
        }
    }
    let mut value = vec![schema::RECORD_VERSION];
    value.extend_from_slice(&u64_key(seq));
    dbs.consumers.put(wtxn, &key, &value)?;
    Ok(true)
}

/// The endpoint's poller token (stored form), if it has one.
pub fn poller_token(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint_key: u64,
) -> Result<Option<schema::PollerTokenRecord>, LogError> {
    dbs.poller_tokens
        .get(txn, &u64_key(endpoint_key))?
        .map(|v| schema::decode_json(db_name::POLLER_TOKENS, v))
        .transpose()
}

pub(in crate::log) fn put_poller_token(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    endpoint_key: u64,
    record: &schema::PollerTokenRecord,
) -> Result<(), LogError> {
    dbs.poller_tokens
        .put(wtxn, &u64_key(endpoint_key), &schema::encode_json(record))?;
    Ok(())
}

/// The position just before the first message created after `time_ms`: "after this seq"
/// starts there. Seq order is time order (invariant 6), so this is a binary search over
/// the `msgs` table, a few lookups whatever its size.
pub fn position_at_time(txn: &RoTxn, dbs: &Dbs, time_ms: u64) -> Result<u64, LogError> {
    let created_at_or_after = |seq: u64| -> Result<Option<(u64, u64)>, LogError> {
        let lower = u64_key(seq);
        let range = (
            std::ops::Bound::Included(&lower[..]),
            std::ops::Bound::Unbounded,
        );
        match dbs.msgs.range(txn, &range)?.next() {
            Some(row) => {
                let (key, value) = row?;
                let found = schema::read_u64(db_name::MSGS, key, 0)?;
                Ok(Some((
                    found,
                    MessageRecord::retention_header(value)?.created_ms,
                )))
            }
            None => Ok(None),
        }
    };
    let Some((first, first_ms)) = created_at_or_after(0)? else {
        return Ok(0);
    };
    if first_ms > time_ms {
        return Ok(first.saturating_sub(1));
    }
    let last = next_seq(txn, dbs)?.saturating_sub(1);
    // The message at `lo` was created by `time_ms`; none at or after `hi` was.
    let (mut lo, mut hi) = (first, last + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match created_at_or_after(mid)? {
            Some((seq, ms)) if ms <= time_ms && seq < hi => lo = seq,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

// === ingest sources ===

pub fn source_by_key(
    txn: &RoTxn,
    dbs: &Dbs,
    key: u64,
) -> Result<Option<schema::SourceRecord>, LogError> {
    dbs.sources
        .get(txn, &u64_key(key))?
        .map(|v| schema::decode_json(db_name::SOURCES, v))
        .transpose()
}

/// Finds a source by id or uid.
pub fn source_by_ref(
    txn: &RoTxn,
    dbs: &Dbs,
    reference: &str,
) -> Result<Option<schema::SourceRecord>, LogError> {
    let by_id = if reference.starts_with(IdKind::Source.prefix()) {
        key_of(
            db_name::SOURCE_IDS,
            dbs.source_ids.get(txn, &id_key(reference))?,
        )?
    } else {
        None
    };
    let key = match by_id {
        Some(key) => Some(key),
        None => source_uid_taken(txn, dbs, reference)?,
    };
    key.map(|k| source_by_key(txn, dbs, k))
        .transpose()
        .map(Option::flatten)
}

pub fn source_uid_taken(txn: &RoTxn, dbs: &Dbs, uid: &str) -> Result<Option<u64>, LogError> {
    key_of(
        db_name::SOURCE_IDS,
        dbs.source_ids.get(txn, &uid_key(ORG_PARENT, uid))?,
    )
}

/// The source a URL token (by hash) belongs to, if the token is current or in its grace
/// at `now_ms`.
pub fn source_by_token(
    txn: &RoTxn,
    dbs: &Dbs,
    hash: &[u8; 32],
    now_ms: u64,
) -> Result<Option<schema::SourceRecord>, LogError> {
    let Some(token) = dbs
        .source_tokens
        .get(txn, hash)?
        .map(|v| schema::decode_json::<schema::SourceTokenRecord>(db_name::SOURCE_TOKENS, v))
        .transpose()?
    else {
        return Ok(None);
    };
    if token.expires_ms.is_some_and(|at| at <= now_ms) {
        return Ok(None);
    }
    source_by_key(txn, dbs, token.source_key)
}

/// Writes a source, keeping its id index, uid index and token rows in step with
/// `previous`.
pub(in crate::log) fn put_source(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    source: &schema::SourceRecord,
    previous: Option<&schema::SourceRecord>,
) -> Result<(), LogError> {
    let key = u64_key(source.key);
    if let Some(old_uid) = previous.and_then(|p| p.uid.as_deref())
        && source.uid.as_deref() != Some(old_uid)
    {
        dbs.source_ids.delete(wtxn, &uid_key(ORG_PARENT, old_uid))?;
    }
    if let Some(uid) = &source.uid {
        dbs.source_ids.put(wtxn, &uid_key(ORG_PARENT, uid), &key)?;
    }
    if previous.is_none() {
        dbs.source_ids.put(wtxn, &id_key(&source.id), &key)?;
    }
    // Token rows: the current one without expiry, old ones until their grace ends;
    // tokens that are neither any more are removed.
    if let Some(previous) = previous {
        let kept = |hash: &[u8; 32]| {
            source.token_hash == *hash || source.old_tokens.iter().any(|(h, _)| h == hash)
        };
        let gone: Vec<[u8; 32]> = std::iter::once(previous.token_hash)
            .chain(previous.old_tokens.iter().map(|(h, _)| *h))
            .filter(|h| !kept(h))
            .collect();
        for hash in gone {
            dbs.source_tokens.delete(wtxn, &hash)?;
        }
    }
    let row = |expires_ms| {
        schema::encode_json(&schema::SourceTokenRecord {
            source_key: source.key,
            expires_ms,
        })
    };
    dbs.source_tokens
        .put(wtxn, &source.token_hash, &row(None))?;
    for (hash, until) in &source.old_tokens {
        dbs.source_tokens.put(wtxn, hash, &row(Some(*until)))?;
    }
    dbs.sources.put(wtxn, &key, &schema::encode_json(source))?;
    Ok(())
}

/// Deletes a source, its tokens and its error log (its application is deleted by the
/// caller).
pub(in crate::log) fn delete_source(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    source: &schema::SourceRecord,
) -> Result<(), LogError> {
    if let Some(uid) = &source.uid {
        dbs.source_ids.delete(wtxn, &uid_key(ORG_PARENT, uid))?;
    }
    dbs.source_ids.delete(wtxn, &id_key(&source.id))?;
    dbs.source_tokens.delete(wtxn, &source.token_hash)?;
    for (hash, _) in &source.old_tokens {
        dbs.source_tokens.delete(wtxn, hash)?;
    }
    for key in keys_with_prefix(wtxn, &dbs.source_errors, &u64_key(source.key))? {
        dbs.source_errors.delete(wtxn, &key)?;
    }
    dbs.sources.delete(wtxn, &u64_key(source.key))?;
    Ok(())
}

/// Appends a source error as number `n`, dropping the one `SOURCE_ERRORS_MAX` older.
pub(in crate::log) fn put_source_error(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    source_key: u64,
    n: u64,
    error: &schema::SourceErrorRecord,
) -> Result<(), LogError> {
    dbs.source_errors.put(
        wtxn,
        &source_error_key(SourceKey(source_key), n),
        &schema::encode_json(error),
    )?;
    if let Some(dropped) = n.checked_sub(crate::limits::SOURCE_ERRORS_MAX) {
        dbs.source_errors
            .delete(wtxn, &source_error_key(SourceKey(source_key), dropped))?;
    }
    Ok(())
}

/// Sources in key (creation) order.
pub fn scan_sources(
    txn: &RoTxn,
    dbs: &Dbs,
    walk: Walk<u64>,
    visit: impl FnMut(schema::SourceRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    scan_keyed(txn, &dbs.sources, db_name::SOURCES, walk, visit)
}

/// A source's error log in number order.
pub fn scan_source_errors(
    txn: &RoTxn,
    dbs: &Dbs,
    source_key: u64,
    walk: Walk<u64>,
    mut visit: impl FnMut(u64, schema::SourceErrorRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let name = db_name::SOURCE_ERRORS;
    scan_children(
        txn,
        &dbs.source_errors,
        name,
        source_key,
        walk,
        |n, value| visit(n, schema::decode_json(name, value)?),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::DueJob;
    use crate::log::schema::{DeliveryRecord, DeliveryState};

    /// A fresh log's tables in a temporary directory (no writer thread: the test writes).
    fn open() -> (tempfile::TempDir, heed::Env<heed::WithoutTls>, Dbs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = crate::config::Config::embedded_default().storage;
        storage.map_size_bytes = 16 << 20;
        let (env, dbs) =
            crate::log::open_env(dir.path(), &storage, crate::log::Upgrade::Refuse).expect("open");
        (dir, env, dbs)
    }

    fn pending(next_due_ms: u64) -> DeliveryRecord {
        DeliveryRecord {
            state: DeliveryState::Pending,
            manual: false,
            attempts: 0,
            next_due_ms,
            updated_ms: 0,
        }
    }

    #[test]
    fn past_the_bound_the_oldest_replies_leave_and_lookups_find_the_rest() {
        let (_dir, env, dbs) = open();
        let mut state = crate::log::writer::WriterState::load(&env, &dbs).expect("state");
        state.replies_max = 3;
        let key = |n: u8| [n; 32];
        let mut wtxn = env.write_txn().expect("wtxn");
        {
            let mut ctx = crate::log::WriteCtx {
                wtxn: &mut wtxn,
                dbs: &dbs,
                state: &mut state,
                now_ms: 0,
            };
            for n in 1..=5u8 {
                let record = schema::IdempotencyRecord {
                    created_ms: 1_000 * u64::from(n),
                    status: 202,
                    body: vec![n],
                };
                remember_reply(&mut ctx, &key(n), &record).expect("remembered");
            }
        }
        wtxn.commit().expect("commit");
        dbs.reply_index.apply(&mut state.reply_changes);
        let rtxn = env.read_txn().expect("rtxn");
        assert_eq!(idempotency_rows(&rtxn, &dbs), Ok((3, 0)));
        let body = |n: u8| {
            idempotency(&rtxn, &dbs, &key(n))
                .expect("read")
                .map(|r| r.body)
        };
        assert_eq!(
            (1..=5).map(body).collect::<Vec<_>>(),
            [None, None, Some(vec![3]), Some(vec![4]), Some(vec![5])]
        );
        assert_eq!(
            dbs.reply_index.len(),
            3,
            "the index holds what the table holds"
        );
        // Opening the log again builds the same index from the table.
        dbs.reply_index.rebuild(std::collections::HashMap::new());
        crate::log::writer::WriterState::load(&env, &dbs).expect("state");
        assert_eq!(body(4), Some(vec![4]));
        assert_eq!(dbs.reply_index.len(), 3);
    }

    #[test]
    fn endpoint_deliveries_stay_within_the_endpoint_and_the_row_cap() {
        let (_dir, env, dbs) = open();
        let mut wtxn = env.write_txn().expect("wtxn");
        let mut unindexed = crate::log::deliveries::Unindexed::load(&wtxn, &dbs).expect("load");
        for (endpoint_key, seq) in [(6, 1), (7, 1), (7, 2), (7, 3), (8, 4), (u64::MAX, 9)] {
            let row = pending(seq);
            crate::log::deliveries::insert(
                &mut wtxn,
                &dbs,
                &mut unindexed,
                EndpointKey(endpoint_key),
                Seq(seq),
                &row,
            )
            .expect("put");
        }
        wtxn.commit().expect("commit");
        let rtxn = env.read_txn().expect("rtxn");
        let seqs = |(rows, ended): (Vec<(Seq, DeliveryRecord)>, bool)| {
            (rows.iter().map(|(seq, _)| seq.0).collect::<Vec<_>>(), ended)
        };
        let read = |endpoint_key, from, max| {
            endpoint_deliveries_from(&rtxn, &dbs, EndpointKey(endpoint_key), Seq(from), max)
                .map(seqs)
        };
        assert_eq!(read(7, 0, 10), Ok((vec![1, 2, 3], true)));
        assert_eq!(read(7, 2, 10), Ok((vec![2, 3], true)));
        assert_eq!(
            read(7, 0, 2),
            Ok((vec![1, 2], false)),
            "capped, more follow"
        );
        assert_eq!(read(7, 0, 3), Ok((vec![1, 2, 3], true)), "exactly all");
        assert_eq!(read(7, 4, 10), Ok((vec![], true)));
        assert_eq!(
            read(u64::MAX, 0, 10),
            Ok((vec![9], true)),
            "the last key too"
        );
    }

    #[test]
    fn due_rows_resume_after_the_cap_and_start_over_at_the_horizon() {
        let (_dir, env, dbs) = open();
        let mut wtxn = env.write_txn().expect("wtxn");
        let rows = [
            (100, 1, 1),
            (100, 2, 2),
            (200, 1, 3),
            (300, 2, 4),
            (900, 1, 5),
        ];
        for (due_ms, endpoint_key, seq) in rows {
            dbs.due
                .put(
                    &mut wtxn,
                    &schema::due_key(due_ms, EndpointKey(endpoint_key), Seq(seq)),
                    &[],
                )
                .expect("put");
        }
        wtxn.commit().expect("commit");
        let rtxn = env.read_txn().expect("rtxn");
        let job = |due_ms, endpoint_key, seq| DueJob {
            endpoint_key: EndpointKey(endpoint_key),
            seq: Seq(seq),
            due_ms,
        };
        let (found, resume) = due_rows(&rtxn, &dbs, None, 500, 2).expect("read");
        assert_eq!(found, [job(100, 1, 1), job(100, 2, 2)]);
        assert_eq!(resume, Some(job(100, 2, 2)));
        let (found, resume) = due_rows(&rtxn, &dbs, resume, 500, 2).expect("read");
        assert_eq!(found, [job(200, 1, 3), job(300, 2, 4)]);
        assert_eq!(resume, Some(job(300, 2, 4)));
        let (found, resume) = due_rows(&rtxn, &dbs, resume, 500, 2).expect("read");
        assert_eq!(found, [], "the next row lies past the horizon");
        assert_eq!(resume, None, "start over");
        let (found, resume) = due_rows(&rtxn, &dbs, None, 1_000, 10).expect("read");
        assert_eq!(found.len(), 5);
        assert_eq!(resume, None, "the end: start over");
    }

    #[test]
    fn endpoint_stored_is_the_row_as_stored() {
        let (_dir, env, dbs) = open();
        let mut wtxn = env.write_txn().expect("wtxn");
        dbs.endpoints
            .put(&mut wtxn, &u64_key(3), b"\x01{}")
            .expect("put");
        wtxn.commit().expect("commit");
        let rtxn = env.read_txn().expect("rtxn");
        assert_eq!(
            endpoint_stored(&rtxn, &dbs, EndpointKey(3)),
            Ok(Some(&b"\x01{}"[..]))
        );
        assert_eq!(endpoint_stored(&rtxn, &dbs, EndpointKey(4)), Ok(None));
    }
}
