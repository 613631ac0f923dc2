//! Bearer-token authentication and scopes.
//!
//! Tokens are random strings (`sk_` + 43 base64url characters); only their SHA-256 is
//! stored (`tokens` table), so a copy of the data directory does not reveal them. An org
//! token sees everything; an app token sees its one application (others are 404, org-only
//! routes 403).

use base64::Engine;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

use super::{ApiError, ApiState};
use crate::log::schema::{AppRecord, TokenScope};
use crate::log::tables;

/// Who is asking.
#[derive(Clone, Copy, Debug)]
pub struct Auth {
    pub scope: TokenScope,
    pub token_hash: [u8; 32],
}

impl Auth {
    /// Refuses app-scoped tokens on org-wide operations.
    pub fn require_org(&self) -> Result<(), ApiError> {
        match self.scope {
            TokenScope::Org => Ok(()),
            TokenScope::App(_) | TokenScope::Poller { .. } => Err(ApiError::Forbidden),
        }
    }

    /// Whether this token may see `app`; a token of another app gets "not found".
    pub fn check_app(&self, app: AppRecord) -> Result<AppRecord, ApiError> {
        match self.scope {
            TokenScope::App(key) | TokenScope::Poller { app: key, .. } if key != app.key => {
                Err(ApiError::NotFound("Application not found."))
            }
            _ => Ok(app),
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

pub(super) fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<Auth, ApiError> {
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
        });
    }
    let record = state
        .log
        .read(|rtxn, dbs| tables::token(rtxn, dbs, &token_hash))?;
    record
        // A rotated poller token works until its grace ends.
        .filter(|r| r.expires_ms.is_none_or(|at| at > state.clock.now_ms()))
        .map(|r| Auth {
            scope: r.scope,
            token_hash,
        })
        .ok_or(ApiError::Unauthorized)
}
