//! Event types (org-wide, keyed by name): list, create, get, PUT, PATCH, archive, expunge.

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::fields::{Patch, Problems};
use super::idempotency::write_reply;
use super::query::Collector;
use super::{ApiError, ApiState, Ctx, Reply, parse_json};
use crate::clock::format_rfc3339;
use crate::limits::{PAGE_SCAN_ROWS_MAX, TEXT_LEN_MAX};
use crate::log::schema::{self, EventTypeRecord, db_name};
use crate::log::tables;

/// Largest serialised `schemas` object, in bytes.
const SCHEMAS_BYTES_MAX: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventTypeIn {
    #[serde(default)]
    name: Option<String>,
    description: String,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    deprecated: bool,
    #[serde(default)]
    schemas: Option<serde_json::Value>,
    #[serde(default)]
    feature_flag: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EventTypePatch {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    archived: Option<bool>,
    #[serde(default)]
    deprecated: Option<bool>,
    #[serde(default)]
    schemas: Patch<serde_json::Value>,
    #[serde(default)]
    feature_flag: Patch<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventTypeOut {
    name: String,
    description: String,
    archived: bool,
    deprecated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    schemas: Option<serde_json::Value>,
    created_at: String,
    updated_at: String,
    feature_flag: Option<String>,
}

impl EventTypeOut {
    fn from(t: EventTypeRecord, with_content: bool) -> EventTypeOut {
        EventTypeOut {
            name: t.name,
            description: t.description,
            archived: t.archived,
            deprecated: t.deprecated,
            schemas: if with_content { t.schemas } else { None },
            created_at: format_rfc3339(t.created_ms),
            updated_at: format_rfc3339(t.updated_ms),
            feature_flag: t.feature_flag,
        }
    }
}

fn check(
    problems: &mut Problems,
    description: Option<&str>,
    schemas: Option<&serde_json::Value>,
    flag: Option<&str>,
) {
    if let Some(description) = description {
        problems.text("description", description, false);
    }
    if let Some(schemas) = schemas {
        if !schemas.is_object() {
            problems.add(
                &["body", "schemas"],
                "must be an object of version to JSON Schema",
            );
        } else if serde_json::to_vec(schemas).map_or(usize::MAX, |v| v.len()) > SCHEMAS_BYTES_MAX {
            problems.add(
                &["body", "schemas"],
                format!("must serialise to at most {SCHEMAS_BYTES_MAX} bytes"),
            );
        }
    }
    if flag.is_some_and(|f| f.len() > TEXT_LEN_MAX) {
        problems.add(
            &["body", "featureFlag"],
            format!("must be at most {TEXT_LEN_MAX} bytes"),
        );
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("Event type not found.")
}

pub(super) fn list(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    let limit = ctx.query.limit()?;
    let include_archived = ctx.query.bool("include_archived", false)?;
    let with_content = ctx.query.bool("with_content", false)?;
    let iterator = ctx.query.iterator();
    let page = state.log.read(|rtxn, dbs| {
        let backwards = iterator.is_some_and(|(_, b)| b);
        let cursor = iterator.map(|(name, _)| name.as_bytes());
        let mut page = Collector::new(limit);
        let capped = tables::scan(
            rtxn,
            &dbs.event_types,
            &[],
            cursor,
            backwards,
            PAGE_SCAN_ROWS_MAX,
            |_, value| {
                let record: EventTypeRecord = schema::decode_json(db_name::EVENT_TYPES, value)?;
                if record.archived && !include_archived {
                    return Ok(false);
                }
                Ok(page.push(EventTypeOut::from(record, with_content)))
            },
        )?;
        Ok(page.into_page(capped, backwards, |t| t.name.clone()))
    })?;
    Reply::json(StatusCode::OK, &page)
}

pub(super) async fn create(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let input: EventTypeIn = parse_json(&ctx.body)?;
    let mut problems = Problems::default();
    let name = input.name.clone().unwrap_or_default();
    problems.name(&["body", "name"], &name);
    check(
        &mut problems,
        Some(&input.description),
        input.schemas.as_ref(),
        input.feature_flag.as_deref(),
    );
    problems.finish()?;
    write_reply(state, ctx.idempotency, move |w| {
        let existing = tables::event_type(w.wtxn, w.dbs, &name)?;
        if existing.as_ref().is_some_and(|t| !t.archived) {
            let detail = "An event_type with this name already exists".to_owned();
            return Ok(Err(ApiError::Conflict {
                code: "event_type_exists",
                detail,
            }));
        }
        // Creating an archived name un-archives it and overwrites its fields (Svix).
        let record = EventTypeRecord {
            name,
            description: input.description,
            archived: input.archived,
            deprecated: input.deprecated,
            schemas: input.schemas,
            feature_flag: input.feature_flag,
            created_ms: existing.map_or(w.now_ms, |t| t.created_ms),
            updated_ms: w.now_ms,
        };
        tables::put_event_type(w.wtxn, w.dbs, &record)?;
        Ok(Ok((StatusCode::CREATED, EventTypeOut::from(record, true))))
    })
    .await
}

pub(super) fn get(state: &ApiState, _ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    let record = state
        .log
        .read(|rtxn, dbs| tables::event_type(rtxn, dbs, name))?
        .ok_or_else(not_found)?;
    Reply::json(StatusCode::OK, &EventTypeOut::from(record, true))
}

pub(super) async fn upsert(state: &ApiState, ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let input: EventTypeIn = parse_json(&ctx.body)?;
    let mut problems = Problems::default();
    problems.name(&["path", "event_type_name"], name);
    check(
        &mut problems,
        Some(&input.description),
        input.schemas.as_ref(),
        input.feature_flag.as_deref(),
    );
    problems.finish()?;
    let name = name.to_owned();
    write_reply(state, None, move |w| {
        let existing = tables::event_type(w.wtxn, w.dbs, &name)?;
        let status = if existing.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let record = EventTypeRecord {
            name,
            description: input.description,
            archived: input.archived,
            deprecated: input.deprecated,
            schemas: input.schemas,
            feature_flag: input.feature_flag,
            created_ms: existing.map_or(w.now_ms, |t| t.created_ms),
            updated_ms: w.now_ms,
        };
        tables::put_event_type(w.wtxn, w.dbs, &record)?;
        Ok(Ok((status, EventTypeOut::from(record, true))))
    })
    .await
}

pub(super) async fn patch(state: &ApiState, ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let input: EventTypePatch = parse_json(&ctx.body)?;
    let mut problems = Problems::default();
    check(
        &mut problems,
        input.description.as_deref(),
        input.schemas.as_value(),
        input.feature_flag.as_value().map(String::as_str),
    );
    problems.finish()?;
    let name = name.to_owned();
    write_reply(state, None, move |w| {
        let Some(mut record) = tables::event_type(w.wtxn, w.dbs, &name)? else {
            return Ok(Err(not_found()));
        };
        if let Some(description) = input.description {
            record.description = description;
        }
        if let Some(archived) = input.archived {
            record.archived = archived;
        }
        if let Some(deprecated) = input.deprecated {
            record.deprecated = deprecated;
        }
        input.schemas.apply_to(&mut record.schemas);
        input.feature_flag.apply_to(&mut record.feature_flag);
        record.updated_ms = w.now_ms;
        tables::put_event_type(w.wtxn, w.dbs, &record)?;
        Ok(Ok((StatusCode::OK, EventTypeOut::from(record, true))))
    })
    .await
}

/// Archives the event type, or deletes it for good with `?expunge=true`.
pub(super) async fn delete(state: &ApiState, ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let expunge = ctx.query.bool("expunge", false)?;
    let name = name.to_owned();
    write_reply(state, None, move |w| {
        let Some(mut record) = tables::event_type(w.wtxn, w.dbs, &name)? else {
            return Ok(Err(not_found()));
        };
        if expunge {
            w.dbs.event_types.delete(w.wtxn, name.as_bytes())?;
        } else {
            record.archived = true;
            record.updated_ms = w.now_ms;
            tables::put_event_type(w.wtxn, w.dbs, &record)?;
        }
        Ok(Ok((StatusCode::NO_CONTENT, ())))
    })
    .await
}
