//! API tokens: `/api/v1/auth/token` (list, create) and `/api/v1/auth/token/{id}`
//! (revoke), org tokens only. A Sluice extension; the CLI (`sluice token …`) does the same
//! on a stopped or running Sluice.
//!
//! A token is shown once, in the reply that creates it (never remembered under an
//! idempotency key); afterwards it is named by its public id (`tok_` and 16 hex digits of
//! its SHA-256). Revoking deletes it: the next request that carries it gets 401.

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::fields::Problems;
use super::idempotency::submit;
use super::{ApiError, ApiState, Ctx, Reply, parse_json};
use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::log::ops::Op;
use crate::log::schema::{TokenRecord, TokenScope, token_id};
use crate::log::tables;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenIn {
    #[serde(default)]
    name: String,
    /// Scope the token to this application (id or uid); absent: org-wide.
    #[serde(default)]
    app_id: Option<String>,
    /// RFC 3339; absent: the token does not expire.
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenOut {
    id: String,
    name: String,
    /// `org`, or the application's id.
    scope: String,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    /// Only in the reply that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// How a token's scope is shown: `org`, or the application's id (`app_…`).
fn scope_text(state: &ApiState, scope: TokenScope) -> Result<String, ApiError> {
    Ok(match scope {
        TokenScope::Org => "org".to_owned(),
        TokenScope::Poller { .. } => "poller".to_owned(),
        TokenScope::App(key) => state
            .log
            .read(|rtxn, dbs| tables::app_by_key(rtxn, dbs, key))?
            .map_or_else(|| "deleted-app".to_owned(), |app| app.id),
    })
}

fn out(state: &ApiState, hash: &[u8; 32], record: TokenRecord) -> Result<TokenOut, ApiError> {
    Ok(TokenOut {
        id: token_id(hash),
        name: record.name,
        scope: scope_text(state, record.scope)?,
        created_at: format_rfc3339(record.created_ms),
        expires_at: record.expires_ms.map(format_rfc3339),
        last_used_at: record.last_used_ms.map(format_rfc3339),
        token: None,
    })
}

pub(super) fn list(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let all = state.log.read(|rtxn, dbs| tables::tokens(rtxn, dbs))?;
    let data = all
        .into_iter()
        .map(|(hash, record)| out(state, &hash, record))
        .collect::<Result<Vec<_>, _>>()?;
    Reply::json(
        StatusCode::OK,
        &serde_json::json!({"data": data, "done": true, "iterator": null, "prevIterator": null}),
    )
}

pub(super) async fn create(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let input: TokenIn = parse_json(&ctx.body)?;
    let mut problems = Problems::default();
    problems.text("name", &input.name, false);
    let now_ms = state.clock.now_ms();
    let expires_ms = match input.expires_at.as_deref().map(parse_rfc3339) {
        None => None,
        Some(Some(at)) if at > now_ms => Some(at),
        Some(Some(_)) => {
            problems.add(&["body", "expiresAt"], "must be in the future");
            None
        }
        Some(None) => {
            problems.add(&["body", "expiresAt"], "must be an RFC 3339 time");
            None
        }
    };
    problems.finish()?;
    let scope = match &input.app_id {
        None => TokenScope::Org,
        Some(reference) => TokenScope::App(
            state
                .log
                .read(|rtxn, dbs| tables::app_by_ref(rtxn, dbs, reference))?
                .ok_or(ApiError::NotFound("Application not found."))?
                .key,
        ),
    };
    let token = super::new_token();
    let hash = super::hash_token(&token);
    let op = Op::CreateToken {
        hash,
        scope,
        name: input.name.clone(),
        expires_ms,
    };
    // Not remembered: the reply holds the token in clear.
    submit(state, None, op).await?;
    let mut shown = out(
        state,
        &hash,
        TokenRecord {
            scope,
            created_ms: now_ms,
            name: input.name,
            expires_ms,
            last_used_ms: None,
            portal: None,
        },
    )?;
    shown.token = Some(token);
    Reply::json(StatusCode::CREATED, &shown)
}

pub(super) async fn revoke(state: &ApiState, ctx: &Ctx, id: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let found = state
        .log
        .read(|rtxn, dbs| tables::tokens_by_id_prefix(rtxn, dbs, id))?;
    let hash = match found.as_slice() {
        [(hash, _)] if token_id(hash) == id => *hash,
        _ => return Err(ApiError::NotFound("Token not found.")),
    };
    submit(state, ctx.idempotency, Op::RevokeApiToken { hash }).await?;
    Ok(Reply::no_content())
}
