//! Message attempts: list by message and by endpoint (newest first), get one, expunge a
//! response body.

use hyper::StatusCode;
use serde::Serialize;

use super::apps::resolve;
use super::idempotency::submit_reply;
use super::query::{Collector, invalid};
use super::{ApiError, ApiState, Ctx, Reply};
use crate::clock::format_rfc3339;
use crate::limits::PAGE_SCAN_ROWS_MAX;
use crate::log::Seq;
use crate::log::ops::Op;
use crate::log::schema::{AttemptRecord, MessageRecord, Trigger};
use crate::log::tables::{self, AttemptsOf, Walk};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptOut {
    url: String,
    response: String,
    response_status_code: u16,
    response_duration_ms: u64,
    status: u8,
    status_text: &'static str,
    trigger_type: u8,
    msg_id: String,
    endpoint_id: String,
    id: String,
    timestamp: String,
}

impl AttemptOut {
    fn from(a: AttemptRecord, with_content: bool) -> AttemptOut {
        AttemptOut {
            url: a.url,
            response: if with_content {
                a.response
            } else {
                String::new()
            },
            response_status_code: a.status_code,
            response_duration_ms: a.duration_ms,
            status: if a.success { 0 } else { 2 },
            status_text: if a.success { "success" } else { "fail" },
            trigger_type: match a.trigger {
                Trigger::Scheduled => 0,
                Trigger::Manual => 1,
            },
            msg_id: a.msg_id,
            endpoint_id: a.endpoint_id,
            id: a.id,
            timestamp: format_rfc3339(a.created_ms),
        }
    }
}

/// Filters shared by both lists.
struct Filter {
    /// Svix's message status: 0 success, 1 pending, 2 fail, 3 sending, 4 canceled (the
    /// cloud's, in SDK 2.9.1). An attempt is finished and never canceled, so 1, 3 and 4
    /// keep none.
    status: Option<u8>,
    status_code_class: Option<u16>,
    endpoint_key: Option<u64>,
    before: Option<u64>,
    after: Option<u64>,
    event_types: Vec<String>,
    channel: Option<String>,
}

impl Filter {
    fn keeps(&self, a: &AttemptRecord) -> bool {
        let status_ok = match self.status {
            None => true,
            Some(0) => a.success,
            Some(2) => !a.success,
            Some(_) => false,
        };
        status_ok
            && self
                .status_code_class
                .is_none_or(|class| a.status_code / 100 * 100 == class)
            && self.endpoint_key.is_none_or(|k| a.endpoint_key == k)
            && self.before.is_none_or(|t| a.created_ms < t)
            && self.after.is_none_or(|t| a.created_ms > t)
    }

    /// The filters on the attempt's message need it read.
    fn needs_message(&self) -> bool {
        !self.event_types.is_empty() || self.channel.is_some()
    }

    fn keeps_message(&self, m: &MessageRecord) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&m.event_type))
            && self
                .channel
                .as_ref()
                .is_none_or(|c| m.channels.as_ref().is_some_and(|cs| cs.contains(c)))
    }
}

fn filter(ctx: &Ctx) -> Result<Filter, ApiError> {
    let status = match ctx.query.get("status") {
        None => None,
        Some(raw) => match raw.parse::<u8>() {
            Ok(s @ 0..=4) => Some(s),
            _ => {
                return Err(invalid(
                    "status",
                    "must be 0 (success), 1 (pending), 2 (fail), 3 (sending) or 4 (canceled)",
                ));
            }
        },
    };
    let status_code_class = match ctx.query.get("status_code_class") {
        None => None,
        Some(raw) => match raw.parse::<u16>() {
            Ok(class @ (0 | 100 | 200 | 300 | 400 | 500)) => Some(class),
            _ => {
                return Err(invalid(
                    "status_code_class",
                    "must be 0, 100, 200, 300, 400 or 500",
                ));
            }
        },
    };
    Ok(Filter {
        status,
        status_code_class,
        endpoint_key: None,
        before: ctx.query.time("before")?,
        after: ctx.query.time("after")?,
        event_types: ctx.query.list("event_types"),
        channel: ctx.query.get("channel").map(str::to_owned),
    })
}

/// Lists attempts from an index table (`prefix` = seq or endpoint key), newest first.
fn list_from(
    state: &ApiState,
    ctx: &Ctx,
    of: AttemptsOf,
    filter: &Filter,
) -> Result<Reply, ApiError> {
    let limit = ctx.query.limit()?;
    let with_content = ctx.query.bool("with_content", true)?;
    let iterator = ctx.query.iterator();
    let page = state.log.read(|rtxn, dbs| {
        let cursor = match iterator {
            Some((id, _)) => match tables::attempt_key_of_id(rtxn, dbs, id)? {
                Some(key) => Some(key),
                None => return Ok(Err(invalid("iterator", "does not name an attempt"))),
            },
            None => None,
        };
        let backwards = iterator.is_some_and(|(_, b)| b);
        let mut page = Collector::new(limit);
        let walk = Walk {
            after: cursor,
            toward_lower: !backwards,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        // The last message read for the message filters (attempts come grouped by message).
        let mut last: Option<(u64, bool)> = None;
        let capped = tables::scan_attempts(rtxn, dbs, of, walk, |attempt| {
            if !filter.keeps(&attempt) {
                return Ok(false);
            }
            if filter.needs_message() {
                let kept = match last {
                    Some((seq, kept)) if seq == attempt.seq => kept,
                    _ => {
                        let kept = tables::message_by_seq(rtxn, dbs, Seq(attempt.seq))?
                            .is_some_and(|m| filter.keeps_message(&m));
                        last = Some((attempt.seq, kept));
                        kept
                    }
                };
                if !kept {
                    return Ok(false);
                }
            }
            Ok(page.push(AttemptOut::from(attempt, with_content)))
        })?;
        Ok(Ok(page.into_page(capped, backwards, |a| a.id.clone())))
    })??;
    Reply::json(StatusCode::OK, &page)
}

/// GET /app/{app}/attempt/msg/{msg}
pub(super) fn list_by_message(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    msg_ref: &str,
) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    let mut filter = filter(ctx)?;
    let found = state.log.read(|rtxn, dbs| {
        let message = tables::message_by_ref(rtxn, dbs, app.key, msg_ref)?;
        let endpoint = match ctx.query.get("endpoint_id") {
            Some(e) => Some(tables::endpoint_by_ref(rtxn, dbs, app.key, e)?.map(|e| e.key)),
            None => None,
        };
        Ok((message, endpoint))
    })?;
    let (Some((seq, _)), endpoint) = found else {
        return Err(ApiError::NotFound("Message not found."));
    };
    if let Some(endpoint) = endpoint {
        filter.endpoint_key = Some(endpoint.ok_or(ApiError::NotFound("Endpoint not found."))?);
    }
    list_from(state, ctx, AttemptsOf::Message(seq), &filter)
}

/// GET /app/{app}/attempt/endpoint/{endpoint}
pub(super) fn list_by_endpoint(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    let filter = filter(ctx)?;
    let endpoint = state
        .log
        .read(|rtxn, dbs| tables::endpoint_by_ref(rtxn, dbs, app.key, endpoint_ref))?;
    let endpoint = endpoint.ok_or(ApiError::NotFound("Endpoint not found."))?;
    list_from(state, ctx, AttemptsOf::Endpoint(endpoint.key), &filter)
}

/// GET /app/{app}/msg/{msg}/attempt/{attempt}
pub(super) fn get(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    msg_ref: &str,
    attempt_id: &str,
) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    let attempt = state.log.read(|rtxn, dbs| {
        let Some((seq, _)) = tables::message_by_ref(rtxn, dbs, app.key, msg_ref)? else {
            return Ok(None);
        };
        let Some(key) = tables::attempt_key_of_id(rtxn, dbs, attempt_id)? else {
            return Ok(None);
        };
        Ok(tables::attempt_by_key(rtxn, dbs, key)?.filter(|a| a.seq == seq))
    })?;
    let attempt = attempt.ok_or(ApiError::NotFound("Attempt not found."))?;
    Reply::json(StatusCode::OK, &AttemptOut::from(attempt, true))
}

/// DELETE /app/{app}/msg/{msg}/attempt/{attempt}/content: the response body becomes
/// `EXPUNGED`, as in Svix; the attempt's other fields stay.
pub(super) async fn expunge_content(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    msg_ref: &str,
    attempt_id: &str,
) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let app = resolve(state, ctx, app_ref)?;
    let op = Op::ExpungeAttemptContent {
        app_key: app.key,
        message: msg_ref.to_owned(),
        attempt: attempt_id.to_owned(),
    };
    submit_reply(state, None, op).await
}
