//! Tenant-portal access, Svix's contract: `POST /api/v1/auth/app-portal-access/{app}`
//! makes an access link (`{url, token}`), `POST /api/v1/auth/app/{app}/expire-all` and
//! `POST /api/v1/auth/logout` end links; and the exchange of a link's login code for a
//! browser session (`open_session`, called by `/portal/session`).
//!
//! One link is three credentials in the `tokens` table, each stored as its SHA-256 with
//! the link's grant (app, capabilities, feature flags, session id): the bearer `token`
//! (for `/api/v1`, that application only), the login code (in the URL's fragment, so it
//! reaches no server log or `Referer`; single use, short-lived), and the sessions made
//! from the code. Every change is an op (`CreatePortalAccess`, `OpenPortalSession`,
//! `ExpirePortalAccess`, and `RevokeToken` for a browser logout), so single use holds
//! across a cluster: the code's row is consumed in log order.

use base64::Engine;
use hyper::StatusCode;
use serde::Deserialize;

use super::auth::capability;
use super::fields::Problems;
use super::idempotency::submit;
use super::{ApiError, ApiState, Ctx, Reply, apps, parse_json};
use crate::ids::fill_random;
use crate::limits::{
    PORTAL_EXPIRY_SECONDS_DEFAULT, PORTAL_EXPIRY_SECONDS_MAX, PORTAL_EXPIRY_SECONDS_MIN,
    PORTAL_FEATURE_FLAGS_MAX, PORTAL_SESSION_IDS_MAX,
};
use crate::log::ops::Op;
use crate::log::schema::{PortalGrant, PortalKind};

/// Svix's `AppPortalAccessIn`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccessIn {
    /// Seconds; 1 h to 7 d, default 7 d.
    #[serde(default)]
    expiry: Option<u64>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    read_only: Option<bool>,
    #[serde(default)]
    feature_flags: Option<Vec<String>>,
    #[serde(default)]
    session_id: Option<String>,
    /// Svix's `ApplicationIn`: the application is made with it when the path names none
    /// (ignored when it exists).
    #[serde(default)]
    application: Option<serde_json::Value>,
}

/// `{expiry?, sessionIds?}` of `expire-all`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExpireAllIn {
    #[serde(default)]
    expiry: Option<u64>,
    #[serde(default)]
    session_ids: Option<Vec<String>>,
}

/// A fresh random secret (256 bits), base64url.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The capability bits of a request: every capability without a list, `ViewBase` only
/// with `readOnly`; unknown names are problems.
fn capability_bits(input: &AccessIn, problems: &mut Problems) -> u8 {
    let mut bits = match &input.capabilities {
        None => capability::ALL,
        Some(names) => {
            let mut bits = 0;
            for name in names {
                match capability::NAMES.iter().find(|(n, _)| n == name) {
                    Some((_, bit)) => bits |= bit,
                    None => problems.add(
                        &["body", "capabilities"],
                        format!("unknown capability {name:?}"),
                    ),
                }
            }
            bits
        }
    };
    if input.read_only == Some(true) {
        bits = capability::VIEW_BASE;
    }
    // Svix requires ViewBase; every other capability implies seeing the basics.
    bits | capability::VIEW_BASE
}

/// The request's `application` (null is none); a malformed one is a problem.
fn application_of(input: &AccessIn, problems: &mut Problems) -> Option<apps::AppIn> {
    let value = input.application.clone().filter(|a| !a.is_null())?;
    serde_json::from_value::<apps::AppIn>(value)
        .map_err(|error| problems.add(&["body", "application"], error.to_string()))
        .ok()
}

/// Where this Sluice is reached: `[portal] public_url`, else this listener's scheme and
/// the request's `Host`.
pub(crate) fn public_base(state: &ApiState, host: Option<&str>) -> String {
    if let Some(url) = &state.portal.public_url {
        return url.clone();
    }
    let scheme = if state.tls.get().is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", host.unwrap_or("localhost"))
}

/// POST /auth/app-portal-access/{app}: a link into the portal and an app-scoped token.
pub(super) async fn create(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let input: AccessIn = parse_json(&ctx.body)?;
    let mut problems = Problems::default();
    let expiry = input.expiry.unwrap_or(PORTAL_EXPIRY_SECONDS_DEFAULT);
    if !(PORTAL_EXPIRY_SECONDS_MIN..=PORTAL_EXPIRY_SECONDS_MAX).contains(&expiry) {
        problems.add(
            &["body", "expiry"],
            format!(
                "must be between {PORTAL_EXPIRY_SECONDS_MIN} and {PORTAL_EXPIRY_SECONDS_MAX} \
                 seconds"
            ),
        );
    }
    let capabilities = capability_bits(&input, &mut problems);
    let feature_flags = input.feature_flags.clone().unwrap_or_default();
    if feature_flags.len() > PORTAL_FEATURE_FLAGS_MAX {
        problems.add(
            &["body", "featureFlags"],
            format!("at most {PORTAL_FEATURE_FLAGS_MAX}"),
        );
    }
    for flag in &feature_flags {
        problems.name(&["body", "featureFlags"], flag);
    }
    if let Some(session) = &input.session_id {
        problems.text("sessionId", session, true);
    }
    let application = application_of(&input, &mut problems);
    problems.finish()?;
    let app = match (apps::resolve(state, ctx, app_ref), application) {
        (Err(ApiError::NotFound(_)), Some(application)) => {
            inline_app(state, ctx, app_ref, application).await?
        }
        (found, _) => found?,
    };
    let now_ms = state.clock.now_ms();
    let link = format!("portal_{}", &new_secret()[..22]);
    let (token, code) = (format!("appsk_{}", new_secret()), new_secret());
    let token_expires_ms = now_ms + expiry * 1_000;
    let op = Op::CreatePortalAccess {
        app_key: app.key,
        grant: Box::new(PortalGrant {
            kind: PortalKind::Bearer,
            link,
            capabilities,
            feature_flags,
            session_id: input.session_id,
        }),
        token_hash: super::hash_token(&token),
        token_expires_ms,
        code_hash: super::hash_token(&code),
        code_expires_ms: now_ms + state.portal.login_code_lifetime_seconds * 1_000,
    };
    // Not remembered: the reply holds credentials in clear.
    submit(state, None, op).await?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::json!({"appId": app.id, "code": code}).to_string());
    let url = format!(
        "{}/portal/login#key={key}",
        public_base(state, ctx.host.as_deref())
    );
    Reply::json(
        StatusCode::OK,
        &serde_json::json!({"url": url, "token": token}),
    )
}

/// Makes the access request's `application` (the path names none yet), as message
/// create's inline `application` does: its uid is the path's (taken from the path when
/// absent), and it is one `CreateApp` op with `get_if_exists`, so two requests racing to
/// make it both get the one application.
async fn inline_app(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    mut application: apps::AppIn,
) -> Result<crate::log::schema::AppRecord, ApiError> {
    match application.uid.as_deref() {
        None => application.uid = Some(app_ref.to_owned()),
        Some(uid) if uid != app_ref => {
            return Err(ApiError::field(
                &["body", "application", "uid"],
                "application_uid_mismatch: must equal the application named by the path",
            ));
        }
        Some(_) => {}
    }
    apps::validate(&application)?;
    let op = Op::CreateApp {
        id: crate::ids::new_id(crate::ids::IdKind::App, state.clock.now_ms()),
        fields: application.into_fields(),
        get_if_exists: true,
    };
    super::reply_of(&submit(state, None, op).await?)?;
    apps::resolve(state, ctx, app_ref)
}

/// POST /auth/app/{app}/expire-all: ends the application's links (all, or those of
/// `sessionIds`), now or in `expiry` seconds.
pub(super) async fn expire_all(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let input: ExpireAllIn = if ctx.body.iter().all(u8::is_ascii_whitespace) {
        ExpireAllIn::default()
    } else {
        parse_json(&ctx.body)?
    };
    let mut problems = Problems::default();
    if input.expiry.is_some_and(|e| e > PORTAL_EXPIRY_SECONDS_MAX) {
        problems.add(
            &["body", "expiry"],
            format!("at most {PORTAL_EXPIRY_SECONDS_MAX} seconds"),
        );
    }
    if input
        .session_ids
        .as_ref()
        .is_some_and(|ids| ids.len() > PORTAL_SESSION_IDS_MAX)
    {
        problems.add(
            &["body", "sessionIds"],
            format!("at most {PORTAL_SESSION_IDS_MAX}"),
        );
    }
    problems.finish()?;
    let app = apps::resolve(state, ctx, app_ref)?;
    let op = Op::ExpirePortalAccess {
        app_key: app.key,
        link: None,
        session_ids: input.session_ids,
        expires_ms: state.clock.now_ms() + input.expiry.unwrap_or(0) * 1_000,
    };
    submit(state, ctx.idempotency, op).await?;
    Ok(Reply::no_content())
}

/// POST /auth/logout: ends the calling portal token's link (its token and sessions).
pub(super) async fn logout(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    let (Some(grant), crate::log::schema::TokenScope::App(app_key)) =
        (&ctx.auth.portal, ctx.auth.scope)
    else {
        return Err(ApiError::bad_request(
            "not_a_portal_token",
            "Only a token from app-portal-access logs out; revoke API tokens with \
             DELETE /api/v1/auth/token/{id}.",
        ));
    };
    let op = Op::ExpirePortalAccess {
        app_key,
        link: Some(grant.link.clone()),
        session_ids: None,
        expires_ms: 0,
    };
    submit(state, None, op).await?;
    Ok(Reply::no_content())
}

/// Exchanges a login code for a new browser session; returns the session token and how
/// long the cookie may live (s). `Unauthorized` when the code is unknown, used or expired.
pub(crate) async fn open_session(state: &ApiState, code: &str) -> Result<String, ApiError> {
    open_session_until(state, code, None).await
}

/// `open_session`, the session ending by `not_after_ms` if that comes before its
/// lifetime is up (an operator's session opened with an org token that expires).
async fn open_session_until(
    state: &ApiState,
    code: &str,
    not_after_ms: Option<u64>,
) -> Result<String, ApiError> {
    let session = new_secret();
    let now_ms = state.clock.now_ms();
    let lifetime_end_ms = now_ms + state.portal.session_lifetime_seconds * 1_000;
    let op = Op::OpenPortalSession {
        code_hash: super::hash_token(code),
        session_hash: super::hash_token(&session),
        session_expires_ms: not_after_ms.map_or(lifetime_end_ms, |n| n.min(lifetime_end_ms)),
    };
    submit(state, None, op).await?;
    Ok(session)
}

/// Ends one browser session (the portal's logout button).
pub(crate) async fn close_session(state: &ApiState, session_hash: [u8; 32]) {
    let _ = submit(state, None, Op::RevokeToken { hash: session_hash }).await;
}

/// An operator's access: a new login code and the op that stores it (org-scoped, every
/// capability, alive `code_lifetime_seconds`). `sluice portal-link` submits the op from
/// the CLI and prints `operator_link`; the portal's operator form submits it and
/// exchanges the code at once. `opened_by`: the stored org token given on the form,
/// named in the link so that revoking the token ends the session
/// (`Op::RevokeApiToken`); `None` for the CLI and the admin token (which is not stored).
pub(crate) fn operator_access(
    now_ms: u64,
    code_lifetime_seconds: u64,
    opened_by: Option<&[u8; 32]>,
) -> (String, Op) {
    let code = new_secret();
    let op = Op::CreateOperatorAccess {
        grant: Box::new(PortalGrant {
            kind: PortalKind::LoginCode,
            link: crate::log::schema::operator_link(opened_by, &new_secret()[..22]),
            capabilities: capability::ALL,
            feature_flags: Vec::new(),
            session_id: None,
        }),
        code_hash: super::hash_token(&code),
        code_expires_ms: now_ms + code_lifetime_seconds * 1_000,
    };
    (code, op)
}

/// The portal link of an operator's login code, under `base` (where Sluice is reached).
pub(crate) fn operator_link(base: &str, code: &str) -> String {
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::json!({"code": code}).to_string());
    format!("{}/portal/login#key={key}", base.trim_end_matches('/'))
}

/// An operator session for an org-wide API token (the portal's operator form): the
/// session token, or `Unauthorized` unless `org_token` is the admin token or a valid
/// org-scoped API token (not a portal credential, not an application's).
pub(crate) async fn operator_session(
    state: &ApiState,
    org_token: &str,
    peer: std::net::IpAddr,
) -> Result<String, ApiError> {
    let now_ms = state.clock.now_ms();
    // Guessing tokens here is throttled like guessing them on `/api/v1`.
    state.auth_throttle.check(peer, now_ms)?;
    let hash = super::hash_token(org_token.trim());
    // (the stored token's hash, when it ends the session: its revocation or expiry)
    let (opened_by, not_after_ms) = if state.admin_token_hash == Some(hash) {
        (None, None)
    } else {
        let stored = state
            .log
            .read(|rtxn, dbs| crate::log::tables::token(rtxn, dbs, &hash))?
            .filter(|r| {
                r.is_valid_at(now_ms)
                    && r.portal.is_none()
                    && r.scope == crate::log::schema::TokenScope::Org
            });
        let Some(stored) = stored else {
            state.auth_throttle.failed(peer, now_ms);
            return Err(ApiError::Unauthorized);
        };
        (Some(hash), stored.expires_ms)
    };
    let (code, op) = operator_access(
        now_ms,
        state.portal.login_code_lifetime_seconds,
        opened_by.as_ref(),
    );
    submit(state, None, op).await?;
    open_session_until(state, &code, not_after_ms).await
}
