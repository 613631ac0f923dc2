//! Background tasks from the API: start `recover` and `replay-missing` on an endpoint, and
//! follow any task at `/api/v1/background-task`. The work itself is done by the task
//! runner (`crate::tasks`) in bounded batches; the task is in the log from the moment the
//! 202 is sent, so it survives a restart.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::idempotency::submit_reply;
use super::query::{Collector, invalid};
use super::{ApiError, ApiState, Ctx, Reply, parse_json};
use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::ids::{self, IdKind};
use crate::limits::{PAGE_SCAN_ROWS_MAX, TASK_WINDOW_MAX_MS};
use crate::log::ops::Op;
use crate::log::schema::{ReplayFilter, TaskKind, TaskRecord, TaskStatus, TokenScope};
use crate::log::tables::{self, Walk};
use crate::log::tasks;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowIn {
    since: String,
    #[serde(default)]
    until: Option<String>,
}

fn kind_name(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Recover => "endpoint.recover",
        TaskKind::ReplayMissing => "endpoint.replay",
        TaskKind::BulkReplay => "endpoint.bulk-replay",
    }
}

fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Running => "running",
        TaskStatus::Finished => "finished",
        TaskStatus::Failed => "failed",
    }
}

/// RecoverOut / ReplayOut.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TaskStarted {
    id: String,
    status: &'static str,
    task: &'static str,
    updated_at: String,
}

/// BackgroundTaskOut.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskOut {
    id: String,
    status: &'static str,
    task: &'static str,
    data: BTreeMap<&'static str, serde_json::Value>,
    updated_at: String,
}

impl TaskOut {
    fn from(t: TaskRecord, app_id: Option<String>, endpoint_id: Option<String>) -> TaskOut {
        let mut data = BTreeMap::new();
        data.insert("appId", serde_json::json!(app_id));
        data.insert("endpointId", serde_json::json!(endpoint_id));
        data.insert("since", serde_json::json!(format_rfc3339(t.since_ms)));
        data.insert("until", serde_json::json!(format_rfc3339(t.until_ms)));
        data.insert("messagesSent", serde_json::json!(t.messages_sent));
        if let Some(error) = t.error {
            data.insert("error", serde_json::json!(error));
        }
        TaskOut {
            id: t.id,
            status: status_name(t.status),
            task: kind_name(t.kind),
            data,
            updated_at: format_rfc3339(t.updated_ms),
        }
    }
}

/// Parses `{since, until?}`: RFC 3339 times, `since` not after `until` (default now),
/// and a window of at most `TASK_WINDOW_MAX_MS`.
fn window(body: &[u8], now_ms: u64) -> Result<(u64, u64), ApiError> {
    let input: WindowIn = parse_json(body)?;
    window_of(&input, now_ms)
}

fn window_of(input: &WindowIn, now_ms: u64) -> Result<(u64, u64), ApiError> {
    let since = parse_rfc3339(&input.since)
        .ok_or_else(|| ApiError::field(&["body", "since"], "must be an RFC 3339 time"))?;
    let until = match &input.until {
        Some(text) => parse_rfc3339(text)
            .ok_or_else(|| ApiError::field(&["body", "until"], "must be an RFC 3339 time"))?,
        None => now_ms,
    };
    if since > until {
        return Err(ApiError::field(
            &["body", "since"],
            "must not be after until",
        ));
    }
    if until - since > TASK_WINDOW_MAX_MS {
        return Err(ApiError::field(
            &["body", "since"],
            format!(
                "the window may be at most {} minutes",
                TASK_WINDOW_MAX_MS / 60_000
            ),
        ));
    }
    Ok((since, until))
}

/// POST /app/{app}/endpoint/{endpoint}/recover and …/replay-missing: 202 with the task.
pub(super) async fn start(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
    kind: TaskKind,
) -> Result<Reply, ApiError> {
    let now_ms = state.clock.now_ms();
    let (since_ms, until_ms) = window(&ctx.body, now_ms)?;
    let id = ids::new_id(IdKind::Task, now_ms);
    let app = super::apps::resolve(state, ctx, app_ref)?;
    let op = Op::CreateTask {
        app_key: app.key,
        endpoint: endpoint_ref.to_owned(),
        id,
        kind,
        since_ms,
        until_ms,
    };
    let reply = submit_reply(state, ctx.idempotency, op).await?;
    state.task_wake.notify_one();
    Ok(reply)
}

/// BulkReplayIn.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BulkReplayIn {
    since: String,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    status: Option<u8>,
    #[serde(default)]
    status_code_class: Option<u16>,
}

/// POST /app/{app}/endpoint/{endpoint}/bulk-replay: 202 with the task, which re-sends (as
/// manual attempts) the endpoint's deliveries of the window that pass the filters.
pub(super) async fn bulk_replay(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let now_ms = state.clock.now_ms();
    let input: BulkReplayIn = parse_json(&ctx.body)?;
    let (since_ms, until_ms) = window_of(
        &WindowIn {
            since: input.since,
            until: input.until,
        },
        now_ms,
    )?;
    if input.status.is_some_and(|s| s > 4) {
        return Err(ApiError::field(
            &["body", "status"],
            "must be a message status, 0 to 4",
        ));
    }
    if input.status_code_class.is_some() {
        // Deliveries keep their state, not each attempt's status code: refused rather
        // than ignored, so a replay never re-sends more than was asked for.
        return Err(ApiError::field(
            &["body", "statusCodeClass"],
            "is not supported by Sluice's bulk-replay (filter on status instead)",
        ));
    }
    let mut problems = super::fields::Problems::default();
    for name in input.event_types.iter().flatten() {
        if ids::check_name(name, crate::limits::NAME_LEN_MAX).is_err() {
            problems.add(&["body", "eventTypes"], "each must be an event type name");
        }
    }
    for (field, value) in [("channel", &input.channel), ("tag", &input.tag)] {
        if value
            .as_deref()
            .is_some_and(|v| ids::check_name(v, crate::limits::NAME_LEN_MAX).is_err())
        {
            problems.add(&["body", field], "must be a name");
        }
    }
    problems.finish()?;
    let app = super::apps::resolve(state, ctx, app_ref)?;
    let op = Op::CreateBulkReplay {
        app_key: app.key,
        endpoint: endpoint_ref.to_owned(),
        id: ids::new_id(IdKind::Task, now_ms),
        since_ms,
        until_ms,
        filter: Box::new(ReplayFilter {
            // 4 (canceled) matches no delivery: Sluice cancels none.
            status: input.status,
            event_types: input.event_types.filter(|types| !types.is_empty()),
            channel: input.channel,
            tag: input.tag,
        }),
    };
    let reply = submit_reply(state, ctx.idempotency, op).await?;
    state.task_wake.notify_one();
    Ok(reply)
}

impl TaskStarted {
    pub(super) fn from(task: &TaskRecord) -> TaskStarted {
        TaskStarted {
            id: task.id.clone(),
            status: status_name(task.status),
            task: kind_name(task.kind),
            updated_at: format_rfc3339(task.updated_ms),
        }
    }
}

fn visible(scope: TokenScope, task: &TaskRecord) -> bool {
    match scope {
        TokenScope::Org => true,
        TokenScope::App(key) => key == task.app_key,
        TokenScope::Poller { .. } => false,
    }
}

/// GET /background-task/{id}
pub(super) fn get(state: &ApiState, ctx: &Ctx, id: &str) -> Result<Reply, ApiError> {
    let scope = ctx.auth.scope;
    let task = state.log.read(|rtxn, dbs| {
        match tasks::by_id(rtxn, dbs, id)?.filter(|t| visible(scope, t)) {
            Some(task) => {
                let (app_id, endpoint_id) = tasks::ids_of(rtxn, dbs, &task)?;
                Ok(Some(TaskOut::from(task, app_id, endpoint_id)))
            }
            None => Ok(None),
        }
    })?;
    let task = task.ok_or(ApiError::NotFound("Background task not found."))?;
    Reply::json(StatusCode::OK, &task)
}

/// GET /background-task: newest first, filtered by `status` and `task`.
pub(super) fn list(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    let scope = ctx.auth.scope;
    let limit = ctx.query.limit()?;
    let descending = ctx.query.descending(true)?;
    let status = match ctx.query.get("status") {
        None => None,
        Some("running") => Some(TaskStatus::Running),
        Some("finished") => Some(TaskStatus::Finished),
        Some("failed") => Some(TaskStatus::Failed),
        Some(_) => return Err(invalid("status", "must be running, finished or failed")),
    };
    let kind = match ctx.query.get("task") {
        None => None,
        Some("endpoint.recover") => Some(TaskKind::Recover),
        Some("endpoint.replay") => Some(TaskKind::ReplayMissing),
        Some("endpoint.bulk-replay") => Some(TaskKind::BulkReplay),
        Some(_) => {
            return Err(invalid(
                "task",
                "must be endpoint.recover, endpoint.replay or endpoint.bulk-replay",
            ));
        }
    };
    let iterator = ctx.query.iterator();
    let page = state.log.read(|rtxn, dbs| {
        let cursor = match iterator {
            Some((id, _)) => match tasks::by_id(rtxn, dbs, id)? {
                Some(task) => Some(task.key),
                None => return Ok(Err(invalid("iterator", "does not name a task"))),
            },
            None => None,
        };
        let backwards = iterator.is_some_and(|(_, b)| b);
        let mut page = Collector::new(limit);
        let walk = Walk {
            after: cursor,
            toward_lower: descending != backwards,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        let capped = tables::scan_tasks(rtxn, dbs, walk, |task| {
            let keep = visible(scope, &task)
                && status.is_none_or(|s| s == task.status)
                && kind.is_none_or(|k| k == task.kind);
            if keep {
                let (app_id, endpoint_id) = tasks::ids_of(rtxn, dbs, &task)?;
                return Ok(page.push(TaskOut::from(task, app_id, endpoint_id)));
            }
            Ok(false)
        })?;
        Ok(Ok(page.into_page(capped, backwards, |t| t.id.clone())))
    })??;
    Reply::json(StatusCode::OK, &page)
}
