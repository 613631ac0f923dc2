//! Ingest sources (`/ingest/api/v1/source…`, `svix.ingest.*`): where incoming webhooks
//! arrive, and their destinations.
//!
//! A source owns an application of its own (not listed by `GET /app`); its destinations
//! (`ingest.endpoint.*`) are that application's endpoints, served by the endpoint
//! handlers, so what a source accepts is delivered through the same lanes, retries,
//! attempt log and metrics as any message. A source's `ingestUrl` is Sluice's
//! `/ingest/in/{token}` with an unguessable token (`ingest_in.rs` receives there).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::fields::Problems;
use super::idempotency::submit;
use super::query::Collector;
use super::{ApiError, ApiState, Ctx, Reply, endpoints, parse_json};
use crate::clock::format_rfc3339;
use crate::ids::{self, IdKind};
use crate::limits::{PAGE_SCAN_ROWS_MAX, SOURCE_CONFIG_VALUE_LEN_MAX};
use crate::log::ops::{Op, Outcome, SourceFields};
use crate::log::schema::SourceRecord;
use crate::log::tables::{self, Walk};
use crate::verify::{Scheme, check_config_value};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SourceIn {
    name: String,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    config: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SourceOut {
    id: String,
    uid: Option<String>,
    name: String,
    ingest_url: String,
    created_at: String,
    updated_at: String,
    metadata: BTreeMap<String, String>,
    #[serde(rename = "type")]
    kind: String,
    /// Secrets are never shown: only a Telnyx source's public key.
    config: BTreeMap<String, String>,
}

/// Where incoming webhooks for the token arrive: this Sluice, as the request reached it.
fn ingest_url(state: &ApiState, ctx: &Ctx, token: &str) -> String {
    let scheme = if state.tls.get().is_some() {
        "https"
    } else {
        "http"
    };
    let host = ctx.host.as_deref().unwrap_or("localhost");
    format!("{scheme}://{host}/ingest/in/{token}")
}

fn source_out(state: &ApiState, ctx: &Ctx, s: SourceRecord) -> Result<SourceOut, ApiError> {
    let token = state.log.open_text(&s.token, s.sealed)?;
    let mut config = BTreeMap::new();
    if let Some(key) = s.config.get("publicKey") {
        config.insert("publicKey".to_owned(), state.log.open_text(key, s.sealed)?);
    }
    Ok(SourceOut {
        id: s.id,
        uid: s.uid,
        name: s.name,
        ingest_url: ingest_url(state, ctx, &token),
        created_at: format_rfc3339(s.created_ms),
        updated_at: format_rfc3339(s.updated_ms),
        metadata: s.metadata,
        kind: s.kind,
        config,
    })
}

fn not_found() -> ApiError {
    ApiError::NotFound("Source not found.")
}

pub(super) fn find(state: &ApiState, ctx: &Ctx, reference: &str) -> Result<SourceRecord, ApiError> {
    ctx.auth.require_org()?;
    state
        .log
        .read(|rtxn, dbs| tables::source_by_ref(rtxn, dbs, reference))?
        .ok_or_else(not_found)
}

/// A new URL token: its text and its hash.
fn new_token() -> (String, [u8; 32]) {
    let mut random = [0u8; 32];
    ids::fill_random(&mut random);
    let token = URL_SAFE_NO_PAD.encode(random);
    let hash = super::hash_token(&token);
    (token, hash)
}

/// Checks the input; returns the config as stored (values sealed).
fn validate(state: &ApiState, input: &SourceIn) -> Result<BTreeMap<String, String>, ApiError> {
    let mut problems = Problems::default();
    problems.text("name", &input.name, true);
    problems.uid(IdKind::Source, "uid", input.uid.as_deref());
    problems.metadata(input.metadata.as_ref());
    let scheme = Scheme::of(&input.kind);
    if scheme.is_none() {
        problems.add(
            &["body", "type"],
            "this source type is not supported by Sluice (see the README for the list)",
        );
    }
    let given = input.config.clone().unwrap_or_default();
    let mut config = BTreeMap::new();
    for field in scheme.map_or(&[][..], Scheme::fields) {
        let scheme = scheme.unwrap_or(Scheme::TokenOnly);
        match given.get(*field) {
            Some(serde_json::Value::String(value)) => {
                if value.len() > SOURCE_CONFIG_VALUE_LEN_MAX {
                    problems.add(&["body", "config", field], "is too long");
                } else if let Err(msg) = check_config_value(scheme, field, value) {
                    problems.add(&["body", "config", field], msg);
                } else {
                    config.insert((*field).to_owned(), state.log.stored_text(value));
                }
            }
            Some(serde_json::Value::Null) | None if !scheme.required().contains(field) => {}
            Some(_) => problems.add(&["body", "config", field], "must be a string"),
            None => problems.add(&["body", "config", field], "is required for this type"),
        }
    }
    problems.finish()?;
    Ok(config)
}

pub(super) fn list(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let limit = ctx.query.limit()?;
    let descending = ctx.query.descending(false)?;
    let iterator = ctx.query.iterator();
    let (rows, capped, backwards) = state.log.read(|rtxn, dbs| {
        let cursor = match iterator {
            Some((id, _)) => Some(tables::source_by_ref(rtxn, dbs, id)?.map_or(0, |s| s.key)),
            None => None,
        };
        let backwards = iterator.is_some_and(|(_, b)| b);
        let mut page = Vec::new();
        let walk = Walk {
            after: cursor,
            toward_lower: descending != backwards,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        let capped = tables::scan_sources(rtxn, dbs, walk, |source| {
            page.push(source);
            Ok(page.len() > limit)
        })?;
        Ok((page, capped, backwards))
    })?;
    let mut page = Collector::new(limit);
    for source in rows {
        page.push(source_out(state, ctx, source)?);
    }
    Reply::json(
        StatusCode::OK,
        &page.into_page(capped, backwards, |s| s.id.clone()),
    )
}

async fn put(state: &ApiState, ctx: &Ctx, reference: Option<&str>) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let mut input: SourceIn = parse_json(&ctx.body)?;
    // Creating through PUT names the source by the path when the body gives no uid.
    if let Some(reference) = reference
        && input.uid.is_none()
        && !ids::is_id(IdKind::Source, reference)
    {
        input.uid = Some(reference.to_owned());
    }
    let config = validate(state, &input)?;
    let now_ms = state.clock.now_ms();
    let (token, token_hash) = new_token();
    let op = Op::PutSource {
        reference: reference.map(str::to_owned),
        app_id: ids::new_id(IdKind::App, now_ms),
        source: Box::new(SourceFields {
            id: ids::new_id(IdKind::Source, now_ms),
            uid: input.uid,
            name: input.name,
            kind: input.kind,
            config,
            metadata: input.metadata.unwrap_or_default(),
            token: state.log.stored_text(&token),
            token_hash,
            sealed: state.log.seals(),
        }),
    };
    // Not remembered under an idempotency key: the reply's ingestUrl holds the token.
    let Outcome::Source { source, created } = submit(state, None, op).await? else {
        return Err(ApiError::Internal("a source op answered oddly".to_owned()));
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Reply::json(status, &source_out(state, ctx, *source)?)
}

pub(super) async fn create(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    put(state, ctx, None).await
}

pub(super) async fn upsert(
    state: &ApiState,
    ctx: &Ctx,
    reference: &str,
) -> Result<Reply, ApiError> {
    put(state, ctx, Some(reference)).await
}

pub(super) fn get(state: &ApiState, ctx: &Ctx, reference: &str) -> Result<Reply, ApiError> {
    let source = find(state, ctx, reference)?;
    Reply::json(StatusCode::OK, &source_out(state, ctx, source)?)
}

pub(super) async fn delete(
    state: &ApiState,
    ctx: &Ctx,
    reference: &str,
) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let op = Op::DeleteSource {
        reference: reference.to_owned(),
    };
    submit(state, None, op).await?;
    Ok(Reply::no_content())
}

/// POST …/token/rotate: a new URL; the old one works for `api.source_token_grace_seconds`.
pub(super) async fn rotate_token(
    state: &ApiState,
    ctx: &Ctx,
    reference: &str,
) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let (token, token_hash) = new_token();
    let op = Op::RotateSourceToken {
        reference: reference.to_owned(),
        token: Box::new((state.log.stored_text(&token), token_hash)),
        grace_ms: state.config.get().source_token_grace_seconds * 1000,
    };
    submit(state, None, op).await?;
    Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "ingestUrl": ingest_url(state, ctx, &token) }),
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SourceErrorOut {
    id: String,
    source_id: String,
    status_code: u16,
    error_text: String,
    headers: BTreeMap<String, String>,
    payload: String,
    created_at: String,
    updated_at: String,
}

/// GET …/log: the requests the source rejected, newest first (bounded per source).
pub(super) fn errors(state: &ApiState, ctx: &Ctx, reference: &str) -> Result<Reply, ApiError> {
    let source = find(state, ctx, reference)?;
    let limit = ctx.query.limit()?;
    let iterator = match ctx.query.iterator() {
        Some((n, _)) => Some(
            n.parse::<u64>()
                .map_err(|_| super::query::invalid("iterator", "is not an iterator of this log"))?,
        ),
        None => None,
    };
    let page = state.log.read(|rtxn, dbs| {
        let mut page = Collector::new(limit);
        let walk = Walk {
            after: iterator,
            toward_lower: true,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        let capped = tables::scan_source_errors(rtxn, dbs, source.key, walk, |n, e| {
            let out = SourceErrorOut {
                id: e.id,
                source_id: source.id.clone(),
                status_code: e.status,
                error_text: e.reason,
                headers: e.headers.into_iter().collect(),
                payload: e.payload,
                created_at: format_rfc3339(e.created_ms),
                updated_at: format_rfc3339(e.created_ms),
            };
            Ok(page.push((n, out)))
        })?;
        Ok(page.into_page(capped, false, |(n, _)| n.to_string()))
    })?;
    let page = super::query::Page {
        data: page.data.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        iterator: page.iterator,
        prev_iterator: None,
        done: page.done,
    };
    Reply::json(StatusCode::OK, &page)
}

// === destinations: the source's application's endpoints ===

/// What an `ingest.endpoint.*` call does, by the endpoint handler it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Destination {
    List,
    Create,
    Get,
    Upsert,
    Delete,
    Secret,
    RotateSecret,
    GetHeaders,
    SetHeaders { merge: bool },
}

pub(super) async fn destination(
    state: &ApiState,
    ctx: &Ctx,
    source_ref: &str,
    endpoint_ref: Option<&str>,
    what: Destination,
) -> Result<Reply, ApiError> {
    let source = find(state, ctx, source_ref)?;
    let app = state
        .log
        .read(|rtxn, dbs| tables::app_by_key(rtxn, dbs, source.key))?
        .ok_or_else(not_found)?;
    serve_as_endpoint(state, ctx, &app.id, endpoint_ref.unwrap_or_default(), what).await
}

/// Serves `what` as the endpoint route of application `app` would: an ingest source's
/// destinations and the operational-webhook endpoints are endpoints of an application of
/// their own.
pub(super) async fn serve_as_endpoint(
    state: &ApiState,
    ctx: &Ctx,
    app: &str,
    endpoint: &str,
    what: Destination,
) -> Result<Reply, ApiError> {
    let (a, e) = (app, endpoint);
    match what {
        Destination::List => endpoints::list(state, ctx, a),
        Destination::Create => endpoints::create(state, ctx, a).await,
        Destination::Get => endpoints::get(state, ctx, a, e),
        Destination::Upsert => endpoints::upsert(state, ctx, a, e).await,
        Destination::Delete => endpoints::delete(state, ctx, a, e).await,
        Destination::Secret => endpoints::get_secret(state, ctx, a, e),
        Destination::RotateSecret => endpoints::rotate_secret(state, ctx, a, e).await,
        Destination::GetHeaders => endpoints::get_headers(state, ctx, a, e),
        Destination::SetHeaders { merge } => endpoints::set_headers(state, ctx, a, e, merge).await,
    }
}
