//! Operational webhooks: Svix's events about the state itself (`endpoint.created`,
//! `endpoint.disabled`, `message.attempt.exhausted`, …), told to the platform that runs
//! Sluice.
//!
//! Subscribers are the endpoints of one internal application (its key in `meta` under
//! `operational_app`), managed through `/api/v1/operational-webhook/endpoint` as the SDKs
//! do. An event is a message of that application, appended by `emit` in the same apply as
//! the change that causes it — never fire-and-forget — so it is durable with the change,
//! replicated with the op in cluster mode, and delivered, signed, retried and logged like
//! any message. Its id is derived from the op's time and the message's seq, so every node
//! that applies the op writes the same bytes. Nothing is written while there is no
//! subscriber. Changes to the subscribers themselves emit nothing (a failing subscriber
//! must not feed itself events about its own failures).

use heed::RoTxn;
use serde_json::{Value, json};

use super::schema::{self, AttemptRecord, EndpointRecord, MessageRecord, db_name};
use super::{Dbs, LogError, Seq, WriteCtx, tables};
use crate::ids::{self, IdKind};
use crate::limits::{DAY_MS, RETENTION_DAYS_DEFAULT};

/// The `meta` key holding the operational application's key.
const APP_META_KEY: &[u8] = b"operational_app";

/// Scheduled attempts failed (counted from 1) at which `message.attempt.failing` is sent:
/// Svix's fourth.
const FAILING_AT_ATTEMPT: u16 = 4;

/// The operational application's key, once an operational endpoint was ever created.
pub fn app_key(txn: &RoTxn, dbs: &Dbs) -> Result<Option<u64>, LogError> {
    dbs.meta
        .get(txn, APP_META_KEY)?
        .map(|v| schema::read_u64(db_name::META, v, 0))
        .transpose()
}

/// Remembers `key` as the operational application (once, when it is made).
pub(in crate::log) fn set_app_key(w: &mut WriteCtx<'_, '_>, key: u64) -> Result<(), LogError> {
    w.dbs.meta.put(w.wtxn, APP_META_KEY, &key.to_be_bytes())?;
    Ok(())
}

/// Whether `app_key` is the operational application.
pub(in crate::log) fn is_operational(w: &WriteCtx<'_, '_>, app_key: u64) -> Result<bool, LogError> {
    Ok(self::app_key(w.wtxn, w.dbs)? == Some(app_key))
}

/// `appId`, `appUid`, `endpointId`, `endpointUid`: the fields of every endpoint event.
fn endpoint_data(w: &WriteCtx<'_, '_>, endpoint: &EndpointRecord) -> Result<Value, LogError> {
    let app = tables::app_by_key(w.wtxn, w.dbs, endpoint.app_key)?;
    Ok(json!({
        "appId": app.as_ref().map(|a| a.id.clone()),
        "appUid": app.and_then(|a| a.uid),
        "endpointId": endpoint.id,
        "endpointUid": endpoint.uid,
    }))
}

/// `endpoint.created`, `.updated`, `.deleted` or `.enabled` about `endpoint`.
pub(in crate::log) fn endpoint_event(
    w: &mut WriteCtx<'_, '_>,
    event: &str,
    endpoint: &EndpointRecord,
) -> Result<(), LogError> {
    let data = endpoint_data(w, endpoint)?;
    emit(w, endpoint.app_key, event, data)
}

/// `endpoint.disabled`: by the API (`manual`) or by the failure policy (`automatic`, with
/// when the failures began and why).
pub(in crate::log) fn endpoint_disabled(
    w: &mut WriteCtx<'_, '_>,
    endpoint: &EndpointRecord,
    automatic: bool,
    fail_since_ms: Option<u64>,
) -> Result<(), LogError> {
    let mut data = endpoint_data(w, endpoint)?;
    data["trigger"] = json!(if automatic { "automatic" } else { "manual" });
    if let Some(since) = fail_since_ms {
        data["failSince"] = json!(crate::clock::format_rfc3339(since));
    }
    if let Some(reason) = &endpoint.disabled_reason {
        data["reason"] = json!(reason);
    }
    emit(w, endpoint.app_key, "endpoint.disabled", data)
}

/// What an attempt of a scheduled (not manual) delivery means to the operator, by
/// Svix's rules: `failing` on the fourth failed attempt with retries left, `exhausted`
/// when none are left, `recovered` on a success after `failing` was sent.
pub fn attempt_event(attempts: u16, success: bool, retry_left: bool) -> Option<&'static str> {
    match (success, retry_left) {
        (true, _) if attempts > FAILING_AT_ATTEMPT => Some("message.attempt.recovered"),
        (true, _) => None,
        (false, true) if attempts == FAILING_AT_ATTEMPT => Some("message.attempt.failing"),
        (false, true) => None,
        (false, false) => Some("message.attempt.exhausted"),
    }
}

/// `message.attempt.failing`, `.exhausted` or `.recovered` about an attempt.
pub(in crate::log) fn attempt(
    w: &mut WriteCtx<'_, '_>,
    event: &str,
    attempt: &AttemptRecord,
) -> Result<(), LogError> {
    let app = tables::app_by_key(w.wtxn, w.dbs, attempt.app_key)?;
    let message = tables::message_by_seq(w.wtxn, w.dbs, Seq(attempt.seq))?;
    let data = json!({
        "appId": app.as_ref().map(|a| a.id.clone()),
        "appUid": app.and_then(|a| a.uid),
        "msgId": attempt.msg_id,
        "msgEventId": message.and_then(|m| m.event_id),
        "endpointId": attempt.endpoint_id,
        "lastAttempt": {
            "id": attempt.id,
            "responseStatusCode": attempt.status_code,
            "timestamp": crate::clock::format_rfc3339(attempt.created_ms),
        },
    });
    emit(w, attempt.app_key, event, data)
}

/// `background_task.finished`: a task ended (finished or failed), with what it did.
pub(in crate::log) fn task_finished(
    w: &mut WriteCtx<'_, '_>,
    task: &schema::TaskRecord,
) -> Result<(), LogError> {
    use schema::{TaskKind, TaskStatus};
    let kind = match task.kind {
        TaskKind::Recover => "endpoint.recover",
        TaskKind::ReplayMissing => "endpoint.replay",
        TaskKind::BulkReplay => "endpoint.bulk-replay",
    };
    let status = match task.status {
        TaskStatus::Running => "running",
        TaskStatus::Finished => "finished",
        TaskStatus::Failed => "failed",
    };
    let mut inner = json!({"messagesSent": task.messages_sent});
    if let Some(error) = &task.error {
        inner["error"] = json!(error);
    }
    let data = json!({"taskId": task.id, "task": kind, "status": status, "data": inner});
    emit(w, task.app_key, "background_task.finished", data)
}

/// Appends `{"type": event, "data": data}` as a message of the operational application,
/// delivered to its endpoints whose filters match `event`. Nothing when there is no
/// subscriber, or when the change is about the operational application itself.
fn emit(
    w: &mut WriteCtx<'_, '_>,
    about_app: u64,
    event: &str,
    data: Value,
) -> Result<(), LogError> {
    let Some(app_key) = app_key(w.wtxn, w.dbs)? else {
        return Ok(());
    };
    if about_app == app_key || w.state.endpoints.count_for_app(app_key) == 0 {
        return Ok(());
    }
    let payload = json!({"type": event, "data": data})
        .to_string()
        .into_bytes();
    // Derived, not drawn: applying is deterministic. The seq it will get is unique.
    let seed = ring::digest::digest(
        &ring::digest::SHA256,
        &[&w.state.next_seq.to_be_bytes()[..], event.as_bytes()].concat(),
    );
    let mut random = [0u8; 15];
    random.copy_from_slice(&seed.as_ref()[..15]);
    let record = MessageRecord {
        app_key,
        created_ms: w.now_ms,
        payload_expires_ms: w.now_ms + u64::from(RETENTION_DAYS_DEFAULT) * DAY_MS,
        id: ids::encode_id(IdKind::Message, w.now_ms, &random),
        event_type: event.to_owned(),
        event_id: None,
        channels: None,
        payload: Some(payload),
        example: false,
        headers: None,
        tags: None,
        deliver_at_ms: None,
    };
    tables::append_message(w, &record, tables::Fanout::Matching)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::attempt_event;

    #[test]
    fn failing_on_the_fourth_exhausted_at_the_end_recovered_after_failing() {
        assert_eq!(attempt_event(3, false, true), None);
        assert_eq!(
            attempt_event(4, false, true),
            Some("message.attempt.failing")
        );
        assert_eq!(attempt_event(5, false, true), None);
        assert_eq!(
            attempt_event(2, false, false),
            Some("message.attempt.exhausted")
        );
        assert_eq!(attempt_event(4, true, false), None);
        assert_eq!(
            attempt_event(5, true, false),
            Some("message.attempt.recovered")
        );
    }
}
