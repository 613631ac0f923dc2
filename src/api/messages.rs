//! Messages of an application: create (the durable ingest), get, list, expunge content,
//! and an endpoint's `send-example`.

use hyper::StatusCode;
use serde::Serialize;
use serde_json::value::RawValue;

use super::apps::{AppIn, resolve, resolve_key};
use super::idempotency::submit_reply;
use super::query::{Collector, invalid};
use super::{ApiError, ApiState, Ctx, Reply, message_in};
use crate::clock::format_rfc3339;
use crate::ids::{self, IdKind};
use crate::limits::{DAY_MS, PAGE_SCAN_ROWS_MAX, RETENTION_DAYS_DEFAULT};
use crate::log::ops::{MessageApp, NewMessage, Op};
use crate::log::schema::MessageRecord;
use crate::log::tables::{self, Walk};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MessageOut {
    event_id: Option<String>,
    event_type: String,
    payload: Box<RawValue>,
    channels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at: Option<String>,
    pub(super) id: String,
    timestamp: String,
}

impl MessageOut {
    pub(super) fn from(m: MessageRecord, with_content: bool) -> MessageOut {
        let payload = match (&m.payload, with_content) {
            (_, false) => "{}".to_owned(),
            (None, true) => r#"{"expired":true}"#.to_owned(),
            (Some(bytes), true) => String::from_utf8_lossy(bytes).into_owned(),
        };
        // Stored payloads were validated at ingest; the fallback only guards a corrupt log.
        let payload = RawValue::from_string(payload).unwrap_or_else(|_| empty_object());
        MessageOut {
            event_id: m.event_id,
            event_type: m.event_type,
            payload,
            channels: m.channels,
            tags: m.tags,
            deliver_at: m.deliver_at_ms.map(format_rfc3339),
            id: m.id,
            timestamp: format_rfc3339(m.created_ms),
        }
    }
}

/// The reply to a message just accepted: the same JSON as its `MessageOut`, written around
/// the payload bytes that `message_in::parse` validated moments ago, so the hot path does
/// not parse them a second time (as `RawValue::from_string` would) and fills one buffer.
pub(super) fn accepted_body(m: &MessageRecord, with_content: bool) -> Result<Vec<u8>, ApiError> {
    let payload: &[u8] = match (&m.payload, with_content) {
        (Some(bytes), true) => bytes,
        (None, true) => br#"{"expired":true}"#,
        (_, false) => b"{}",
    };
    let mut body = Vec::with_capacity(payload.len() + ACCEPTED_BODY_OVERHEAD);
    write_field(&mut body, "{\"eventId\":", &m.event_id)?;
    write_field(&mut body, ",\"eventType\":", &m.event_type)?;
    body.extend_from_slice(b",\"payload\":");
    body.extend_from_slice(payload);
    write_field(&mut body, ",\"channels\":", &m.channels)?;
    if let Some(tags) = &m.tags {
        write_field(&mut body, ",\"tags\":", tags)?;
    }
    if let Some(at) = m.deliver_at_ms {
        write_field(&mut body, ",\"deliverAt\":", &format_rfc3339(at))?;
    }
    // Sluice's own id and time need no escaping: written as they are, without a
    // serializer (the reply is on every accepted message's path).
    if m.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        body.extend_from_slice(b",\"id\":\"");
        body.extend_from_slice(m.id.as_bytes());
        body.push(b'"');
    } else {
        write_field(&mut body, ",\"id\":", &m.id)?;
    }
    match crate::clock::rfc3339_text(m.created_ms) {
        Some(text) => {
            body.extend_from_slice(b",\"timestamp\":\"");
            body.extend_from_slice(&text);
            body.push(b'"');
        }
        None => write_field(&mut body, ",\"timestamp\":", &format_rfc3339(m.created_ms))?,
    }
    body.push(b'}');
    Ok(body)
}

/// Room for the fields around the payload in an accepted message's reply.
const ACCEPTED_BODY_OVERHEAD: usize = 256;

/// Appends `prefix` (punctuation and a quoted name) and `value` as JSON.
fn write_field<T: Serialize + ?Sized>(
    body: &mut Vec<u8>,
    prefix: &str,
    value: &T,
) -> Result<(), ApiError> {
    body.extend_from_slice(prefix.as_bytes());
    serde_json::to_writer(body, value).map_err(|e| ApiError::Internal(e.to_string()))
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

fn not_found() -> ApiError {
    ApiError::NotFound("Message not found.")
}

/// POST /app/{app}/msg: 202 only once the message and its deliveries are committed.
pub(super) async fn create(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let with_content = ctx.query.bool("with_content", true)?;
    let input = message_in::parse(&ctx.body).map_err(ApiError::Validation)?;
    let now_ms = state.clock.now_ms();
    let retention_days = input.retention_days.unwrap_or(RETENTION_DAYS_DEFAULT);
    let deliver_at_ms = scheduled(state, input.deliver_at_ms, now_ms, retention_days)?;
    state.ensure_room_for_messages()?;
    // Resolved here, in a read transaction, to keep the single writer's work short; the
    // writer only checks that the application was not deleted in between.
    let app = match resolve_key(state, ctx, app_ref) {
        Ok(key) => MessageApp::Existing(key),
        Err(ApiError::NotFound(_)) if input.has_application => inline_app(state, ctx, app_ref)?,
        Err(e) => return Err(e),
    };
    let op = Op::CreateMessage {
        app,
        message: Box::new(NewMessage {
            id: ids::new_id(IdKind::Message, now_ms),
            event_type: input.event_type,
            event_id: input.event_id,
            channels: input.channels,
            payload: input.payload,
            retention_days,
            tags: input.tags,
            deliver_at_ms,
        }),
        with_content,
    };
    submit_reply(state, ctx.idempotency, op).await
}

/// `deliverAt` checked against the horizon (`api.deliver_at_horizon_seconds`) and the
/// payload's own retention (a delivery after it would find no payload); a time already
/// past means now (`None`).
fn scheduled(
    state: &ApiState,
    deliver_at_ms: Option<u64>,
    now_ms: u64,
    retention_days: u16,
) -> Result<Option<u64>, ApiError> {
    let Some(at) = deliver_at_ms.filter(|&at| at > now_ms) else {
        return Ok(None);
    };
    let horizon_ms = state
        .config
        .get()
        .deliver_at_horizon_seconds
        .saturating_mul(1000);
    if at - now_ms > horizon_ms {
        return Err(ApiError::field(
            &["body", "deliverAt"],
            format!(
                "must be at most {} s ahead (api.deliver_at_horizon_seconds)",
                horizon_ms / 1000
            ),
        ));
    }
    if at - now_ms >= u64::from(retention_days) * DAY_MS {
        return Err(ApiError::field(
            &["body", "deliverAt"],
            "must be within the payload's retention (payloadRetentionPeriod)",
        ));
    }
    Ok(Some(at))
}

#[derive(serde::Deserialize)]
struct WithApplication {
    application: AppIn,
}

/// Svix's inline `application`: created with the message when the path names none. Its
/// uid must be the path's (Svix: `application_uid_missing`, `application_uid_mismatch`).
fn inline_app(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<MessageApp, ApiError> {
    let input: WithApplication = super::parse_json(&ctx.body)?;
    let application = input.application;
    match application.uid.as_deref() {
        None => {
            return Err(ApiError::field(
                &["body", "application", "uid"],
                "application_uid_missing: an inline application needs the uid of the path",
            ));
        }
        Some(uid) if uid != app_ref => {
            return Err(ApiError::field(
                &["body", "application", "uid"],
                "application_uid_mismatch: must equal the application named by the path",
            ));
        }
        Some(_) => {}
    }
    super::apps::validate(&application)?;
    Ok(MessageApp::Inline {
        id: ids::new_id(IdKind::App, state.clock.now_ms()),
        fields: application.into_fields(),
    })
}

pub(super) fn get(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    msg_ref: &str,
) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    let with_content = ctx.query.bool("with_content", true)?;
    let (_, message) = state
        .log
        .read(|rtxn, dbs| tables::message_by_ref(rtxn, dbs, app.key, msg_ref))?
        .ok_or_else(not_found)?;
    Reply::json(StatusCode::OK, &MessageOut::from(message, with_content))
}

/// GET /app/{app}/msg: newest first; `-iterator` pages toward newer messages.
pub(super) fn list(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    let limit = ctx.query.limit()?;
    let with_content = ctx.query.bool("with_content", true)?;
    let before = ctx.query.time("before")?;
    let after = ctx.query.time("after")?;
    let event_types = ctx.query.list("event_types");
    let channel = ctx.query.get("channel").map(str::to_owned);
    let tag = ctx.query.get("tag").map(str::to_owned);
    let iterator = ctx.query.iterator();
    let page = state.log.read(|rtxn, dbs| {
        let cursor_seq = match iterator {
            Some((id, _)) => match tables::message_by_ref(rtxn, dbs, app.key, id)? {
                Some((seq, _)) => Some(seq),
                None => {
                    return Ok(Err(invalid(
                        "iterator",
                        "does not name a message of this application",
                    )));
                }
            },
            None => None,
        };
        let backwards = iterator.is_some_and(|(_, b)| b);
        let mut page = Collector::new(limit);
        let walk = Walk {
            after: cursor_seq,
            toward_lower: !backwards,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        let capped = tables::scan_app_messages(rtxn, dbs, app.key, walk, |_, message| {
            // Seq order is time order, so a time bound passed means the scan is over.
            if !backwards && after.is_some_and(|t| message.created_ms <= t) {
                return Ok(true);
            }
            if backwards && before.is_some_and(|t| message.created_ms >= t) {
                return Ok(true);
            }
            let in_window = before.is_none_or(|t| message.created_ms < t)
                && after.is_none_or(|t| message.created_ms > t);
            let type_ok = event_types.is_empty() || event_types.contains(&message.event_type);
            let channel_ok = channel
                .as_ref()
                .is_none_or(|c| message.channels.as_ref().is_some_and(|cs| cs.contains(c)));
            let tag_ok = tag
                .as_ref()
                .is_none_or(|t| message.tags.as_ref().is_some_and(|ts| ts.contains(t)));
            if in_window && type_ok && channel_ok && tag_ok {
                return Ok(page.push(MessageOut::from(message, with_content)));
            }
            Ok(false)
        })?;
        Ok(Ok(page.into_page(capped, backwards, |m| m.id.clone())))
    })??;
    Reply::json(StatusCode::OK, &page)
}

/// DELETE /app/{app}/msg/{msg}/content: drops the payload, keeps the message's metadata.
pub(super) async fn expunge_content(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    msg_ref: &str,
) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let app = resolve(state, ctx, app_ref)?;
    let op = Op::ExpungeContent {
        app_key: app.key,
        message: msg_ref.to_owned(),
    };
    submit_reply(state, None, op).await
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExampleIn {
    event_type: String,
    #[serde(default)]
    example_index: usize,
}

/// POST /app/{app}/endpoint/{endpoint}/send-example: creates a message of the example
/// payload (`svix.ping`, or the event type's schema example) delivered to this endpoint
/// only, whatever its filters.
pub(super) async fn send_example(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    // Org tokens, and portal credentials with CreateAttempts (checked by the router).
    if ctx.auth.portal.is_none() {
        ctx.auth.require_org()?;
    }
    let input: ExampleIn = super::parse_json(&ctx.body)?;
    // A portal credential cannot send an event type its link's feature flags hide.
    if ctx.auth.portal.is_some() {
        let flag = state
            .log
            .read(|rtxn, dbs| tables::event_type(rtxn, dbs, &input.event_type))?
            .and_then(|t| t.feature_flag);
        if !ctx.auth.sees_flag(flag.as_deref()) {
            return Err(ApiError::NotFound("Event type not found."));
        }
    }
    state.ensure_room_for_messages()?;
    let app = resolve(state, ctx, app_ref)?;
    let op = Op::SendExample {
        app_key: app.key,
        endpoint: endpoint_ref.to_owned(),
        id: ids::new_id(IdKind::Message, state.clock.now_ms()),
        event_type: input.event_type,
        example_index: u32::try_from(input.example_index).unwrap_or(u32::MAX),
    };
    submit_reply(state, ctx.idempotency, op).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: Option<&str>) -> MessageRecord {
        MessageRecord {
            app_key: 1,
            created_ms: 1_764_500_000_123,
            payload_expires_ms: 1_765_000_000_000,
            id: "msg_2abc".to_owned(),
            event_type: "invoice.paid".to_owned(),
            event_id: None,
            channels: None,
            payload: payload.map(|p| p.as_bytes().to_vec()),
            example: false,
            headers: None,
            tags: None,
            deliver_at_ms: None,
        }
    }

    #[test]
    fn the_accepted_reply_is_the_json_of_its_message_out() {
        let mut full = record(Some(r#"{"a": [1, 2, {"b": "\u00e9\n"}], "c": null}"#));
        full.event_id = Some("evt \"quoted\"".to_owned());
        full.channels = Some(vec!["ch1".to_owned(), "ch/2".to_owned()]);
        full.tags = Some(vec!["t1".to_owned()]);
        full.deliver_at_ms = Some(1_764_500_060_000);
        let expired = record(None);
        let plain = record(Some("{}"));
        // An id Sluice would not make still comes out as valid JSON.
        let mut odd = record(Some("{}"));
        odd.id = "msg_\"odd\"\\".to_owned();
        for (message, with_content) in [
            (&odd, true),
            (&full, true),
            (&full, false),
            (&expired, true),
            (&expired, false),
            (&plain, true),
        ] {
            let written = accepted_body(message, with_content).expect("writes");
            let serialized =
                serde_json::to_vec(&MessageOut::from(message.clone(), with_content)).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(serialized).unwrap(),
                "with_content {with_content}"
            );
        }
    }
}
