//! Bearer-token authentication and scopes.
//!
//! Tokens are random strings (`sk_` + 43 base64url characters); only their SHA-256 is
//! stored (`tokens` table), so a copy of the data directory does not reveal them. An org
//! token sees everything; an app token sees its one application (others are 404, org-only
//! routes 403). A revoked or expired token is refused like an unknown one, on the next
//! request: every request reads its token's record. A token's last use is recorded at
//! most once a `TOKEN_USE_RECORD_INTERVAL_MS` (an `Op::TouchToken` the request does not
//! wait for), never once per request.

use base64::Engine;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

use super::{ApiError, ApiState};
use crate::limits::{TOKEN_USE_RECORD_INTERVAL_MS, TOKENS_MAX};
use crate::log::ops::{Envelope, Op};
use std::sync::Arc;

use crate::log::schema::{AppRecord, PortalGrant, PortalKind, TokenScope};
use crate::log::tables;

/// Who is asking.
#[derive(Clone, Debug)]
pub struct Auth {
    pub scope: TokenScope,
    pub token_hash: [u8; 32],
    /// A tenant-portal credential's grant (bearer token or browser session): what it may
    /// do is checked per route (`api::portal_may`) before any handler runs.
    pub portal: Option<Arc<PortalGrant>>,
}

/// The tenant portal's capabilities (Svix's `AppPortalCapability`), as bits of
/// `PortalGrant::capabilities`.
pub mod capability {
    pub const VIEW_BASE: u8 = 1;
    pub const VIEW_ENDPOINT_SECRET: u8 = 1 << 1;
    pub const MANAGE_ENDPOINT_SECRET: u8 = 1 << 2;
    /// Accepted and ignored: Sluice has no transformations.
    pub const MANAGE_TRANSFORMATIONS: u8 = 1 << 3;
    pub const CREATE_ATTEMPTS: u8 = 1 << 4;
    pub const MANAGE_ENDPOINT: u8 = 1 << 5;
    /// Every capability: what a link made without a list gets.
    pub const ALL: u8 = (1 << 6) - 1;
    /// Svix's names, as the access request spells them.
    pub const NAMES: [(&str, u8); 6] = [
        ("ViewBase", VIEW_BASE),
        ("ViewEndpointSecret", VIEW_ENDPOINT_SECRET),
        ("ManageEndpointSecret", MANAGE_ENDPOINT_SECRET),
        ("ManageTransformations", MANAGE_TRANSFORMATIONS),
        ("CreateAttempts", CREATE_ATTEMPTS),
        ("ManageEndpoint", MANAGE_ENDPOINT),
    ];
}

impl Auth {
    /// Whether this caller holds any of `bits` (callers that are not portal credentials
    /// hold every capability).
    pub fn can(&self, bits: u8) -> bool {
        self.portal
            .as_ref()
            .is_none_or(|grant| grant.capabilities & bits != 0)
    }

    /// Whether an event type with this feature flag is visible to the caller: portal
    /// credentials see flagged types only with the flag in their link.
    pub fn sees_flag(&self, flag: Option<&str>) -> bool {
        match (flag, &self.portal) {
            (Some(flag), Some(grant)) => grant.feature_flags.iter().any(|f| f == flag),
            _ => true,
        }
    }

    /// Refuses app-scoped tokens on org-wide operations.
    pub fn require_org(&self) -> Result<(), ApiError> {
        match self.scope {
            TokenScope::Org => Ok(()),
            TokenScope::App(_) | TokenScope::Poller { .. } => Err(ApiError::Forbidden),
        }
    }

    /// Whether this token may see `app`; a token of another app gets "not found".
    pub fn check_app(&self, app: AppRecord) -> Result<AppRecord, ApiError> {
        self.check_app_key(app.key).map(|()| app)
    }

    /// `check_app` for an application known by its key alone.
    pub fn check_app_key(&self, app_key: u64) -> Result<(), ApiError> {
        match self.scope {
            TokenScope::App(key) | TokenScope::Poller { app: key, .. } if key != app_key => {
                Err(ApiError::NotFound("Application not found."))
            }
            _ => Ok(()),
        }
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A new random token. The caller stores `hash_token` of it and shows it once.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    crate::ids::fill_random(&mut bytes);
    format!(
        "sk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub(super) fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    now_ms: u64,
) -> Result<Auth, ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or(ApiError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized);
    }
    let token_hash = hash_token(token.trim());
    if state.admin_token_hash == Some(token_hash) {
        return Ok(Auth {
            scope: TokenScope::Org,
            token_hash,
            portal: None,
        });
    }
    // A portal login code or browser session is no bearer token.
    let record = state
        .log
        .read(|rtxn, dbs| tables::token(rtxn, dbs, &token_hash))?
        .filter(|r| r.is_valid_at(now_ms))
        .filter(|r| r.portal_kind().is_none_or(|k| k == PortalKind::Bearer))
        .ok_or(ApiError::Unauthorized)?;
    if record
        .last_used_ms
        .is_none_or(|last| now_ms >= last.saturating_add(TOKEN_USE_RECORD_INTERVAL_MS))
    {
        record_use(state, token_hash, now_ms);
    }
    Ok(Auth {
        scope: record.scope,
        token_hash,
        portal: record.portal.map(Arc::new),
    })
}

/// The caller behind a portal session token (the cookie's value): `None` when it is
/// unknown, expired, revoked or not a session.
pub fn portal_session(state: &ApiState, token: &str, now_ms: u64) -> Option<Auth> {
    let token_hash = hash_token(token);
    let record = state
        .log
        .read(|rtxn, dbs| tables::token(rtxn, dbs, &token_hash))
        .ok()
        .flatten()
        .filter(|r| r.is_valid_at(now_ms) && r.portal_kind() == Some(PortalKind::Session))?;
    Some(Auth {
        scope: record.scope,
        token_hash,
        portal: record.portal.map(Arc::new),
    })
}

/// Queues an `Op::TouchToken` unless one went for this token within the interval (the
/// stored time lags the queued op by a commit, so concurrent requests check memory too).
/// Nothing waits for it; if the writer is busy, the next request after it tries again.
fn record_use(state: &ApiState, token_hash: [u8; 32], now_ms: u64) {
    {
        let mut touched = state
            .tokens_touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if touched
            .get(&token_hash)
            .is_some_and(|&at| now_ms < at.saturating_add(TOKEN_USE_RECORD_INTERVAL_MS))
        {
            return;
        }
        if touched.len() as u64 >= TOKENS_MAX {
            touched.retain(|_, at| now_ms < at.saturating_add(TOKEN_USE_RECORD_INTERVAL_MS));
        }
        touched.insert(token_hash, now_ms);
    }
    let op = Op::TouchToken { hash: token_hash };
    if state.log.submit_queued(Envelope::new(op, now_ms)).is_err() {
        state
            .tokens_touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&token_hash);
    }
}
