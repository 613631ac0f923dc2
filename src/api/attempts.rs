//! Message attempts: list by message and by endpoint (newest first), get one.

use hyper::StatusCode;
use serde::Serialize;

use super::apps::resolve;
use super::query::{Collector, invalid};
use super::{ApiError, ApiState, Ctx, Reply};
use crate::clock::format_rfc3339;
use crate::limits::PAGE_SCAN_ROWS_MAX;
use crate::log::schema::{AttemptRecord, Trigger};
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
    status: Option<bool>,
    status_code_class: Option<u16>,
    endpoint_key: Option<u64>,
}

impl Filter {
    fn keeps(&self, a: &AttemptRecord) -> bool {
        self.status.is_none_or(|success| a.success == success)
            && self
                .status_code_class
                .is_none_or(|class| a.status_code / 100 * 100 == class)
            && self.endpoint_key.is_none_or(|k| a.endpoint_key == k)
    }
}

fn filter(ctx: &Ctx) -> Result<Filter, ApiError> {
    let status = match ctx.query.get("status") {
        None => None,
        Some("0") => Some(true),
        Some("2") => Some(false),
        Some(_) => return Err(invalid("status", "must be 0 (success) or 2 (fail)")),
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
        let capped = tables::scan_attempts(rtxn, dbs, of, walk, |attempt| {
            if filter.keeps(&attempt) {
                return Ok(page.push(AttemptOut::from(attempt, with_content)));
            }
            Ok(false)
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
