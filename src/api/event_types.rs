//! Event types (org-wide, keyed by name): list, create, get, PUT, PATCH, archive, expunge.

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::fields::{Patch, Problems};
use super::idempotency::submit_reply;
use super::query::Collector;
use super::{ApiError, ApiState, Ctx, Reply, parse_json};
use crate::clock::format_rfc3339;
use crate::limits::{PAGE_SCAN_ROWS_MAX, SCHEMAS_BYTES_MAX, TEXT_LEN_MAX};
use crate::log::ops::{Change, EventTypeChanges, EventTypeFields, Op};
use crate::log::schema::EventTypeRecord;
use crate::log::tables::{self, Walk};

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
    /// The newer SDKs' spelling (a list); Sluice keeps one flag per event type.
    #[serde(default)]
    feature_flags: Option<Vec<String>>,
    #[serde(default)]
    group_name: Option<String>,
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
    #[serde(default)]
    group_name: Patch<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventTypeOut {
    name: String,
    description: String,
    archived: bool,
    deprecated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    schemas: Option<serde_json::Value>,
    created_at: String,
    updated_at: String,
    feature_flag: Option<String>,
    group_name: Option<String>,
}

impl EventTypeOut {
    pub(super) fn from(t: EventTypeRecord, with_content: bool) -> EventTypeOut {
        EventTypeOut {
            name: t.name,
            description: t.description,
            archived: t.archived,
            deprecated: t.deprecated,
            schemas: if with_content { t.schemas } else { None },
            created_at: format_rfc3339(t.created_ms),
            updated_at: format_rfc3339(t.updated_ms),
            feature_flag: t.feature_flag,
            group_name: t.group_name,
        }
    }
}

fn check(
    problems: &mut Problems,
    description: Option<&str>,
    schemas: Option<&serde_json::Value>,
    flag: Option<&str>,
    group: Option<&str>,
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
        } else if !examples_are_objects(schemas) {
            problems.add(
                &["body", "schemas", "1", "examples"],
                "must be a list of JSON objects (each is a message payload for send-example)",
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
    if group.is_some_and(|g| g.len() > TEXT_LEN_MAX) {
        problems.add(
            &["body", "groupName"],
            format!("must be at most {TEXT_LEN_MAX} bytes"),
        );
    }
}

/// Send-example sends `schemas["1"].examples[i]` as a message payload, and a payload is a
/// JSON object: so the examples, when given, are a list of objects.
fn examples_are_objects(schemas: &serde_json::Value) -> bool {
    match schemas.get("1").and_then(|v| v.get("examples")) {
        None => true,
        Some(serde_json::Value::Array(examples)) => examples.iter().all(|e| e.is_object()),
        Some(_) => false,
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
        let mut page = Collector::new(limit);
        let walk = Walk {
            after: iterator.map(|(name, _)| name),
            toward_lower: backwards,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        let capped = tables::scan_event_types(rtxn, dbs, walk, |record| {
            if (record.archived && !include_archived)
                || !ctx.auth.sees_flag(record.feature_flag.as_deref())
            {
                return Ok(false);
            }
            Ok(page.push(EventTypeOut::from(record, with_content)))
        })?;
        Ok(page.into_page(capped, backwards, |t| t.name.clone()))
    })?;
    Reply::json(StatusCode::OK, &page)
}

pub(super) async fn create(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let mut input: EventTypeIn = parse_json(&ctx.body)?;
    let mut problems = Problems::default();
    input.merge_flags(&mut problems);
    let name = input.name.clone().unwrap_or_default();
    problems.name(&["body", "name"], &name);
    check(
        &mut problems,
        Some(&input.description),
        input.schemas.as_ref(),
        input.feature_flag.as_deref(),
        input.group_name.as_deref(),
    );
    problems.finish()?;
    let op = Op::CreateEventType {
        name,
        fields: input.into_fields()?,
    };
    submit_reply(state, ctx.idempotency, op).await
}

impl EventTypeIn {
    /// Folds `featureFlags` (at most one, or the same as `featureFlag`) into `feature_flag`.
    fn merge_flags(&mut self, problems: &mut Problems) {
        match self.feature_flags.take().as_deref() {
            None | Some([]) => {}
            Some([one]) if self.feature_flag.as_ref().is_none_or(|f| f == one) => {
                self.feature_flag = Some(one.clone());
            }
            Some(_) => problems.add(
                &["body", "featureFlags"],
                "Sluice keeps one feature flag per event type",
            ),
        }
    }

    fn into_fields(self) -> Result<EventTypeFields, ApiError> {
        Ok(EventTypeFields {
            description: self.description,
            archived: self.archived,
            deprecated: self.deprecated,
            schemas: self.schemas.as_ref().map(schemas_text).transpose()?,
            feature_flag: self.feature_flag,
            group_name: self.group_name,
        })
    }
}

/// Schemas travel in ops as JSON text.
fn schemas_text(schemas: &serde_json::Value) -> Result<String, ApiError> {
    serde_json::to_string(schemas).map_err(|e| ApiError::Internal(e.to_string()))
}

pub(super) fn get(state: &ApiState, ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    let record = state
        .log
        .read(|rtxn, dbs| tables::event_type(rtxn, dbs, name))?
        .filter(|r| ctx.auth.sees_flag(r.feature_flag.as_deref()))
        .ok_or_else(not_found)?;
    Reply::json(StatusCode::OK, &EventTypeOut::from(record, true))
}

pub(super) async fn upsert(state: &ApiState, ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let mut input: EventTypeIn = parse_json(&ctx.body)?;
    let mut problems = Problems::default();
    input.merge_flags(&mut problems);
    problems.name(&["path", "event_type_name"], name);
    check(
        &mut problems,
        Some(&input.description),
        input.schemas.as_ref(),
        input.feature_flag.as_deref(),
        input.group_name.as_deref(),
    );
    problems.finish()?;
    let op = Op::PutEventType {
        name: name.to_owned(),
        fields: input.into_fields()?,
    };
    submit_reply(state, None, op).await
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
        input.group_name.as_value().map(String::as_str),
    );
    problems.finish()?;
    let schemas = match input.schemas {
        Patch::Absent => Change::Keep,
        Patch::Null => Change::Clear,
        Patch::Value(v) => Change::Set(schemas_text(&v)?),
    };
    let op = Op::PatchEventType {
        name: name.to_owned(),
        changes: EventTypeChanges {
            description: input.description,
            archived: input.archived,
            deprecated: input.deprecated,
            schemas,
            feature_flag: input.feature_flag.into_change(),
            group_name: input.group_name.into_change(),
        },
    };
    submit_reply(state, None, op).await
}

/// Archives the event type, or deletes it for good with `?expunge=true`.
pub(super) async fn delete(state: &ApiState, ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let expunge = ctx.query.bool("expunge", false)?;
    let op = Op::DeleteEventType {
        name: name.to_owned(),
        expunge,
    };
    submit_reply(state, None, op).await
}
