//! Applications (tenants): `/api/v1/app` and `/api/v1/app/{app_id}`.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::fields::{Patch, Problems};
use super::idempotency::submit_reply;
use super::query::Collector;
use super::{ApiError, ApiState, Ctx, Reply, parse_json};
use crate::clock::format_rfc3339;
use crate::ids::{self, IdKind};
use crate::limits::PAGE_SCAN_ROWS_MAX;
use crate::log::ops::{AppChanges, AppFields, Op};
use crate::log::schema::AppRecord;
use crate::log::tables::{self, Walk};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AppIn {
    name: String,
    #[serde(default, alias = "rateLimit")]
    throttle_rate: Option<u16>,
    #[serde(default)]
    pub(super) uid: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AppPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, alias = "rateLimit")]
    throttle_rate: Patch<u16>,
    #[serde(default)]
    uid: Patch<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AppOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<u16>,
    throttle_rate: Option<u16>,
    id: String,
    created_at: String,
    updated_at: String,
    metadata: BTreeMap<String, String>,
}

impl AppOut {
    pub(super) fn from(app: AppRecord) -> AppOut {
        AppOut {
            uid: app.uid,
            name: app.name,
            rate_limit: app.throttle_rate,
            throttle_rate: app.throttle_rate,
            id: app.id,
            created_at: format_rfc3339(app.created_ms),
            updated_at: format_rfc3339(app.updated_ms),
            metadata: app.metadata,
        }
    }
}

pub(super) fn validate(input: &AppIn) -> Result<(), ApiError> {
    let mut problems = Problems::default();
    problems.text("name", &input.name, true);
    problems.uid(IdKind::App, "uid", input.uid.as_deref());
    problems.throttle_rate(input.throttle_rate);
    problems.metadata(input.metadata.as_ref());
    problems.finish()
}

/// Finds an application the caller may see, by id or uid, in a read transaction.
pub(super) fn resolve(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<AppRecord, ApiError> {
    let app = state
        .log
        .read(|rtxn, dbs| tables::app_by_ref(rtxn, dbs, app_ref))?;
    ctx.auth
        .check_app(app.ok_or(ApiError::NotFound("Application not found."))?)
}

/// `resolve` for a caller that needs the application's key alone (message create, on
/// every request): the same lookups and scope check, without decoding the record.
pub(super) fn resolve_key(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<u64, ApiError> {
    let key = state
        .log
        .read(|rtxn, dbs| tables::app_key_by_ref(rtxn, dbs, app_ref))?
        .ok_or(ApiError::NotFound("Application not found."))?;
    ctx.auth.check_app_key(key).map(|()| key)
}

pub(super) fn list(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let limit = ctx.query.limit()?;
    let descending = ctx.query.descending(false)?;
    let iterator = ctx.query.iterator();
    let page = state.log.read(|rtxn, dbs| {
        let cursor = match iterator {
            Some((id, _)) => Some(tables::app_key_of_id(rtxn, dbs, id)?.unwrap_or(0)),
            None => None,
        };
        let backwards = iterator.is_some_and(|(_, b)| b);
        let mut page = Collector::new(limit);
        let walk = Walk {
            after: cursor,
            toward_lower: descending != backwards,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        // Ingest sources' applications are not tenants: not listed.
        let capped = tables::scan_apps(rtxn, dbs, walk, |app| {
            Ok(!app.internal && page.push(AppOut::from(app)))
        })?;
        Ok(page.into_page(capped, backwards, |a| a.id.clone()))
    })?;
    Reply::json(StatusCode::OK, &page)
}

pub(super) async fn create(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let input: AppIn = parse_json(&ctx.body)?;
    validate(&input)?;
    let get_if_exists = ctx.query.bool("get_if_exists", false)?;
    let op = Op::CreateApp {
        id: ids::new_id(IdKind::App, state.clock.now_ms()),
        fields: input.into_fields(),
        get_if_exists,
    };
    submit_reply(state, ctx.idempotency, op).await
}

impl AppIn {
    pub(super) fn into_fields(self) -> AppFields {
        AppFields {
            uid: self.uid,
            name: self.name,
            throttle_rate: self.throttle_rate,
            metadata: self.metadata.unwrap_or_default(),
        }
    }
}

pub(super) fn get(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    if app.internal {
        return Err(ApiError::NotFound("Application not found."));
    }
    Reply::json(StatusCode::OK, &AppOut::from(app))
}

pub(super) async fn upsert(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let mut input: AppIn = parse_json(&ctx.body)?;
    // Creating through PUT names the application by the path when the body gives no uid.
    if input.uid.is_none() && !ids::is_id(IdKind::App, app_ref) {
        input.uid = Some(app_ref.to_owned());
    }
    validate(&input)?;
    let op = Op::PutApp {
        reference: app_ref.to_owned(),
        id: ids::new_id(IdKind::App, state.clock.now_ms()),
        fields: input.into_fields(),
    };
    submit_reply(state, None, op).await
}

pub(super) async fn patch(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let input: AppPatch = parse_json(&ctx.body)?;
    let mut problems = Problems::default();
    if let Some(name) = &input.name {
        problems.text("name", name, true);
    }
    problems.uid(IdKind::App, "uid", input.uid.as_value().map(String::as_str));
    problems.throttle_rate(input.throttle_rate.as_value().copied());
    problems.metadata(input.metadata.as_ref());
    problems.finish()?;
    let op = Op::PatchApp {
        reference: app_ref.to_owned(),
        changes: AppChanges {
            name: input.name,
            throttle_rate: input.throttle_rate.into_change(),
            uid: input.uid.into_change(),
            metadata: input.metadata,
        },
    };
    submit_reply(state, None, op).await
}

pub(super) async fn delete(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let op = Op::DeleteApp {
        reference: app_ref.to_owned(),
    };
    submit_reply(state, None, op).await
}
