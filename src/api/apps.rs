//! Applications (tenants): `/api/v1/app` and `/api/v1/app/{app_id}`.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::fields::{Patch, Problems};
use super::idempotency::write_reply;
use super::query::Collector;
use super::{ApiError, ApiState, Ctx, Reply, parse_json};
use crate::clock::format_rfc3339;
use crate::ids::{self, IdKind};
use crate::limits::{APPS_MAX, PAGE_SCAN_ROWS_MAX};
use crate::log::schema::{self, AppRecord, db_name};
use crate::log::{LogError, WriteCtx, tables};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppIn {
    name: String,
    #[serde(default, alias = "rateLimit")]
    throttle_rate: Option<u16>,
    #[serde(default)]
    uid: Option<String>,
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
    fn from(app: AppRecord) -> AppOut {
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

fn validate(input: &AppIn) -> Result<(), ApiError> {
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

/// The same, inside a write (the application may have changed since the request began).
pub(super) fn resolve_in(
    wctx: &mut WriteCtx<'_, '_>,
    ctx_auth: super::Auth,
    app_ref: &str,
) -> Result<Result<AppRecord, ApiError>, LogError> {
    let app = tables::app_by_ref(wctx.wtxn, wctx.dbs, app_ref)?;
    Ok(app
        .ok_or(ApiError::NotFound("Application not found."))
        .and_then(|a| ctx_auth.check_app(a)))
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
        let cursor = cursor.map(schema::u64_key);
        let mut page = Collector::new(limit);
        let capped = tables::scan(
            rtxn,
            &dbs.apps,
            &[],
            cursor.as_ref().map(|c| &c[..]),
            descending != backwards,
            PAGE_SCAN_ROWS_MAX,
            |_, value| Ok(page.push(AppOut::from(schema::decode_json(db_name::APPS, value)?))),
        )?;
        Ok(page.into_page(capped, backwards, |a| a.id.clone()))
    })?;
    Reply::json(StatusCode::OK, &page)
}

pub(super) async fn create(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let input: AppIn = parse_json(&ctx.body)?;
    validate(&input)?;
    let get_if_exists = ctx.query.bool("get_if_exists", false)?;
    let id = ids::new_id(IdKind::App, state.clock.now_ms());
    write_reply(state, ctx.idempotency, move |w| {
        if let Some(uid) = &input.uid
            && let Some(key) = tables::app_uid_taken(w.wtxn, w.dbs, uid)?
        {
            if !get_if_exists {
                return Ok(Err(conflict()));
            }
            let existing = tables::app_by_key(w.wtxn, w.dbs, key)?.ok_or_else(|| {
                LogError::corrupt("app_ids", "uid points at a missing application")
            })?;
            return Ok(Ok((StatusCode::OK, AppOut::from(existing))));
        }
        if let Err(e) = room_for_an_app(w)? {
            return Ok(Err(e));
        }
        let app = new_record(w, id, input);
        tables::put_app(w.wtxn, w.dbs, &app, None)?;
        Ok(Ok((StatusCode::CREATED, AppOut::from(app))))
    })
    .await
}

/// 400 `limit_reached` once `APPS_MAX` applications exist.
fn room_for_an_app(w: &mut WriteCtx<'_, '_>) -> Result<Result<(), ApiError>, LogError> {
    if w.dbs.apps.len(w.wtxn)? >= APPS_MAX {
        return Ok(Err(ApiError::bad_request(
            "limit_reached",
            format!("Sluice holds the most applications it allows ({APPS_MAX})."),
        )));
    }
    Ok(Ok(()))
}

fn new_record(w: &mut WriteCtx<'_, '_>, id: String, input: AppIn) -> AppRecord {
    AppRecord {
        key: w.state.take_app_key(),
        id,
        uid: input.uid,
        name: input.name,
        throttle_rate: input.throttle_rate,
        metadata: input.metadata.unwrap_or_default(),
        created_ms: w.now_ms,
        updated_ms: w.now_ms,
    }
}

fn conflict() -> ApiError {
    ApiError::Conflict {
        code: "conflict",
        detail: "An application with that id or uid already exists".to_owned(),
    }
}

pub(super) fn get(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
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
    let id = ids::new_id(IdKind::App, state.clock.now_ms());
    let app_ref = app_ref.to_owned();
    write_reply(state, None, move |w| {
        let existing = tables::app_by_ref(w.wtxn, w.dbs, &app_ref)?;
        if let Some(uid) = &input.uid {
            let holder = tables::app_uid_taken(w.wtxn, w.dbs, uid)?;
            if holder.is_some_and(|k| Some(k) != existing.as_ref().map(|e| e.key)) {
                return Ok(Err(conflict()));
            }
        }
        let Some(previous) = existing else {
            if let Err(e) = room_for_an_app(w)? {
                return Ok(Err(e));
            }
            let app = new_record(w, id, input);
            tables::put_app(w.wtxn, w.dbs, &app, None)?;
            return Ok(Ok((StatusCode::CREATED, AppOut::from(app))));
        };
        let app = AppRecord {
            uid: input.uid,
            name: input.name,
            throttle_rate: input.throttle_rate,
            metadata: input.metadata.unwrap_or_default(),
            updated_ms: w.now_ms,
            ..previous.clone()
        };
        tables::put_app(w.wtxn, w.dbs, &app, Some(&previous))?;
        Ok(Ok((StatusCode::OK, AppOut::from(app))))
    })
    .await
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
    let app_ref = app_ref.to_owned();
    write_reply(state, None, move |w| {
        let Some(previous) = tables::app_by_ref(w.wtxn, w.dbs, &app_ref)? else {
            return Ok(Err(ApiError::NotFound("Application not found.")));
        };
        if let Patch::Value(uid) = &input.uid {
            let holder = tables::app_uid_taken(w.wtxn, w.dbs, uid)?;
            if holder.is_some_and(|k| k != previous.key) {
                return Ok(Err(conflict()));
            }
        }
        let mut app = previous.clone();
        if let Some(name) = input.name {
            app.name = name;
        }
        input.uid.apply_to(&mut app.uid);
        input.throttle_rate.apply_to(&mut app.throttle_rate);
        if let Some(metadata) = input.metadata {
            app.metadata = metadata;
        }
        app.updated_ms = w.now_ms;
        tables::put_app(w.wtxn, w.dbs, &app, Some(&previous))?;
        Ok(Ok((StatusCode::OK, AppOut::from(app))))
    })
    .await
}

pub(super) async fn delete(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let app_ref = app_ref.to_owned();
    write_reply(state, None, move |w| {
        let Some(app) = tables::app_by_ref(w.wtxn, w.dbs, &app_ref)? else {
            return Ok(Err(ApiError::NotFound("Application not found.")));
        };
        tables::delete_app(w.wtxn, w.dbs, &app)?;
        w.state.endpoints.remove_app(app.key);
        Ok(Ok((StatusCode::NO_CONTENT, ())))
    })
    .await
}
