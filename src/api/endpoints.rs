//! Endpoints of an application: CRUD, signing secret (get, rotate), custom headers.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::apps::resolve;
use super::fields::{Patch, Problems};
use super::idempotency::{submit, submit_reply};
use super::query::Collector;
use super::{ApiError, ApiState, Ctx, Reply, parse_json};
use crate::clock::format_rfc3339;
use crate::ids::{self, IdKind};
use crate::limits::{
    ENDPOINT_CHANNELS_MAX, ENDPOINT_EVENT_TYPES_MAX, ENDPOINT_HEADERS_MAX, HEADER_NAME_LEN_MAX,
    HEADER_VALUE_LEN_MAX, PAGE_SCAN_ROWS_MAX, SECRET_BYTES_GENERATED, SECRET_BYTES_MAX,
    SECRET_BYTES_MIN, SECRET_GRACE_SECONDS_DEFAULT, SECRET_GRACE_SECONDS_MAX, URL_LEN_MAX,
};
use crate::log::ops::{EndpointChanges, EndpointFields, Op, merge_header};
use crate::log::schema::{EndpointRecord, Signing};
use crate::log::tables::{self, Walk};
use crate::signing;

/// Header names an endpoint may not set: the request target (`host`), hop-by-hop and
/// framing headers (RFC 9110 §7.6.1, RFC 9112), and caching and content headers (Svix's
/// list). A custom `Host` would send the request to another virtual host than the URL the
/// destination policy checked; framing headers could split or smuggle requests.
const FORBIDDEN_HEADERS: [&str; 29] = [
    "host",
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
    "http2-settings",
    "alt-svc",
    "via",
    "forwarded",
    "max-forwards",
    "user-agent",
    "age",
    "cache-control",
    "clear-site-data",
    "expires",
    "pragma",
    "warning",
    "content-type",
    "content-encoding",
    "content-language",
    "content-location",
    "content-range",
    "date",
];
/// Header name prefixes an endpoint may not set (cloud infrastructure and our own).
const FORBIDDEN_HEADER_PREFIXES: [&str; 12] = [
    "proxy-",
    "x-amz-",
    "x-amzn-",
    "x-google",
    "x-goog-",
    "x-gfe",
    "x-azure-",
    "x-fd-",
    "x-svix-",
    "svix-",
    "webhook-",
    "x-sluice-",
];
/// Header names whose values are never shown back (Svix's list).
const SENSITIVE_HEADERS: [&str; 6] = [
    "x-auth-token",
    "x-api-key",
    "www-authenticate",
    "authorization",
    "proxy-authenticate",
    "proxy-authorization",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointIn {
    url: String,
    #[serde(default)]
    description: String,
    #[serde(default, alias = "rateLimit")]
    throttle_rate: Option<u16>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    version: Option<u16>,
    #[serde(default)]
    disabled: bool,
    #[serde(default, alias = "filterTypes")]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// Sluice extension: `fifo` delivers one message at a time, strictly in order.
    #[serde(default)]
    ordering: Option<Ordering>,
    /// Sluice extension: HMAC signatures (default) or a static token header.
    #[serde(default)]
    signing: Option<SigningIn>,
    /// Sluice extension: consumers poll the endpoint; Sluice never pushes to its URL.
    #[serde(default)]
    polling_only: Option<bool>,
}

/// How deliveries prove their origin (a Sluice extension), as a client sends it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
enum SigningIn {
    Hmac,
    /// Without `token`, Sluice generates one (read back at `GET …/secret`).
    StaticToken {
        header: String,
        #[serde(default)]
        token: Option<String>,
    },
}

impl SigningIn {
    /// The signing mode as stored: the token sealed when the log seals secrets.
    fn into_stored(self, log: &crate::log::Log) -> Signing {
        match self {
            SigningIn::Hmac => Signing::Hmac,
            SigningIn::StaticToken { header, token } => Signing::StaticToken {
                header,
                token: log.stored_text(&token.unwrap_or_else(generate_token)),
            },
        }
    }
}

/// The signing mode as shown back: the token never is.
#[derive(Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
enum SigningOut {
    Hmac,
    StaticToken { header: String },
}

/// Delivery order of an endpoint (a Sluice extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Ordering {
    Unordered,
    Fifo,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EndpointPatch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, alias = "rateLimit")]
    throttle_rate: Patch<u16>,
    #[serde(default)]
    uid: Patch<String>,
    #[serde(default)]
    version: Option<u16>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default, alias = "filterTypes")]
    event_types: Patch<Vec<String>>,
    #[serde(default)]
    channels: Patch<Vec<String>>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    ordering: Option<Ordering>,
    #[serde(default)]
    signing: Option<SigningIn>,
    #[serde(default)]
    polling_only: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EndpointOut {
    pub(super) id: String,
    uid: Option<String>,
    url: String,
    description: String,
    version: u16,
    disabled: bool,
    rate_limit: Option<u16>,
    throttle_rate: Option<u16>,
    event_types: Option<Vec<String>>,
    filter_types: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    created_at: String,
    updated_at: String,
    metadata: BTreeMap<String, String>,
    /// Sluice extensions: delivery order, and why and when Sluice disabled the endpoint.
    ordering: Ordering,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_at: Option<String>,
    signing: SigningOut,
    polling_only: bool,
}

impl EndpointOut {
    pub(super) fn from(e: EndpointRecord) -> EndpointOut {
        EndpointOut {
            id: e.id,
            uid: e.uid,
            url: e.url,
            description: e.description,
            version: e.version,
            disabled: e.disabled,
            rate_limit: e.throttle_rate,
            throttle_rate: e.throttle_rate,
            filter_types: e.event_types.clone(),
            event_types: e.event_types,
            channels: e.channels,
            created_at: format_rfc3339(e.created_ms),
            updated_at: format_rfc3339(e.updated_ms),
            metadata: e.metadata,
            ordering: if e.fifo {
                Ordering::Fifo
            } else {
                Ordering::Unordered
            },
            disabled_reason: e.disabled_reason,
            disabled_at: e.disabled_at_ms.map(format_rfc3339),
            signing: match e.signing {
                Signing::Hmac => SigningOut::Hmac,
                Signing::StaticToken { header, .. } => SigningOut::StaticToken { header },
            },
            polling_only: e.polling_only,
        }
    }
}

// === validation ===

fn check_url(problems: &mut Problems, url: &str) {
    if url.len() > URL_LEN_MAX {
        problems.add(
            &["body", "url"],
            format!("must be at most {URL_LEN_MAX} bytes"),
        );
        return;
    }
    match url.parse::<hyper::Uri>() {
        Ok(uri) if uri.authority().is_some_and(|a| a.as_str().contains('@')) => problems.add(
            &["body", "url"],
            "must not carry credentials (use endpoint headers)",
        ),
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some_and(|h| !h.is_empty()) => {}
        _ => problems.add(
            &["body", "url"],
            "must be an absolute http:// or https:// URL",
        ),
    }
}

/// Refuses (422) a URL every delivery to it would be refused for, by the destination
/// policy in force: an `http://` URL without `delivery.allow_http`, or an IP literal
/// outside the public internet and `delivery.allowed_networks`. A name passes here: what
/// it resolves to is checked at each attempt (it may change).
fn check_destination(state: &ApiState, url: &str) -> Result<(), ApiError> {
    // `check_url` (shape) ran first, so the URL parses.
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return Ok(());
    };
    match state.destinations.get().check_url(&uri) {
        Ok(_) => Ok(()),
        Err(refusal) => Err(ApiError::field(
            &["body", "url"],
            format!("deliveries would be refused: {refusal}"),
        )),
    }
}

fn check_filters(
    problems: &mut Problems,
    event_types: Option<&Vec<String>>,
    channels: Option<&Vec<String>>,
) {
    if let Some(types) = event_types {
        if types.len() > ENDPOINT_EVENT_TYPES_MAX {
            problems.add(
                &["body", "eventTypes"],
                format!("must list at most {ENDPOINT_EVENT_TYPES_MAX} event types"),
            );
        }
        for (i, name) in types.iter().enumerate() {
            problems.name(&["body", "eventTypes", &format!("[{i}]")], name);
        }
    }
    if let Some(channels) = channels {
        if channels.is_empty() || channels.len() > ENDPOINT_CHANNELS_MAX {
            problems.add(
                &["body", "channels"],
                format!("must list 1 to {ENDPOINT_CHANNELS_MAX} channels"),
            );
        }
        for (i, name) in channels.iter().enumerate() {
            problems.name(&["body", "channels", &format!("[{i}]")], name);
        }
    }
}

/// Decodes a secret into its stored form, or says why not: `whsec_<base64>` (or the
/// base64 alone: the SDK documents the prefix as optional), an HMAC key; or
/// `whsk_<base64>`, an Ed25519 key pair (seed ‖ public key) for asymmetric signatures.
fn parse_secret(text: &str) -> Result<Vec<u8>, String> {
    if let Some(encoded) = text.strip_prefix("whsk_") {
        let pair = BASE64
            .decode(encoded)
            .map_err(|_| "whsk_ must be followed by base64".to_owned())?;
        return signing::ed25519_stored(&pair).map_err(|why| format!("whsk_ {why}"));
    }
    if text.starts_with("whpk_") {
        return Err(
            "whpk_ is a public key: give the whsk_ secret key (seed and public key)".to_owned(),
        );
    }
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = BASE64
        .decode(encoded)
        .map_err(|_| "must be base64, with or without the whsec_ prefix".to_owned())?;
    if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&key.len()) {
        return Err(format!(
            "must decode to {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes"
        ));
    }
    Ok(key)
}

/// How a stored secret is shown: `whsec_` and the HMAC key; for an Ed25519 key pair only
/// its public key, `whpk_` (what a receiver verifies with; the seed is never shown).
fn format_secret(stored: &[u8]) -> String {
    match signing::signing_key(stored) {
        signing::SigningKey::Hmac(key) => format!("whsec_{}", BASE64.encode(key)),
        signing::SigningKey::Ed25519 { public, .. } => format!("whpk_{}", BASE64.encode(public)),
    }
}

/// A static token for an endpoint whose create or update named none: 32 random bytes,
/// base64url (safe as a header value).
fn generate_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    ids::fill_random(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn generate_secret() -> Vec<u8> {
    let mut key = vec![0u8; SECRET_BYTES_GENERATED];
    ids::fill_random(&mut key);
    key
}

/// A new secret of the same kind as `current` (a rotation without a key): an Ed25519 key
/// pair keeps signing asymmetrically.
fn generate_secret_like(current: &[u8]) -> Vec<u8> {
    match signing::signing_key(current) {
        signing::SigningKey::Hmac(_) => generate_secret(),
        signing::SigningKey::Ed25519 { .. } => {
            let mut seed = [0u8; 32];
            ids::fill_random(&mut seed);
            signing::ed25519_from_seed(&seed)
        }
    }
}

fn check_secret(problems: &mut Problems, field: &str, secret: Option<&String>) -> Option<Vec<u8>> {
    let text = secret?;
    match parse_secret(text) {
        Ok(key) => Some(key),
        Err(msg) => {
            problems.add(&["body", field], msg);
            None
        }
    }
}

fn check_header(problems: &mut Problems, name: &str, value: Option<&str>) {
    check_header_at(problems, &["body", "headers", name], name, value);
}

/// Checks a header an endpoint sets, reporting problems at `loc`.
fn check_header_at(problems: &mut Problems, loc: &[&str], name: &str, value: Option<&str>) {
    let lower = name.to_ascii_lowercase();
    if name.is_empty()
        || name.len() > HEADER_NAME_LEN_MAX
        || HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        problems.add(loc, "is not a valid HTTP header name");
    } else if FORBIDDEN_HEADERS.contains(&lower.as_str())
        || FORBIDDEN_HEADER_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p))
    {
        problems.add(
            loc,
            format!("the header {name:?} may not be set on an endpoint"),
        );
    }
    if let Some(value) = value
        && (value.len() > HEADER_VALUE_LEN_MAX || HeaderValue::from_str(value).is_err())
    {
        problems.add(
            loc,
            format!("value must be valid and at most {HEADER_VALUE_LEN_MAX} bytes"),
        );
    }
}

fn check_signing(problems: &mut Problems, signing: Option<&SigningIn>) {
    if let Some(SigningIn::StaticToken { header, token }) = signing {
        check_header_at(problems, &["body", "signing", "header"], header, None);
        match token.as_deref() {
            None => {} // Sluice generates one.
            Some("") => problems.add(&["body", "signing", "token"], "must not be empty"),
            Some(token) => {
                check_header_at(problems, &["body", "signing", "token"], "x", Some(token));
            }
        }
    }
}

fn check_headers(problems: &mut Problems, headers: &BTreeMap<String, String>) {
    if headers.len() > ENDPOINT_HEADERS_MAX {
        problems.add(
            &["body", "headers"],
            format!("at most {ENDPOINT_HEADERS_MAX} headers"),
        );
    }
    for (name, value) in headers {
        check_header(problems, name, Some(value));
    }
}

/// The 404 detail of a missing endpoint (the one `Refusal::EndpointNotFound` maps to).
const ENDPOINT_NOT_FOUND: &str = "Endpoint not found.";

fn not_found() -> ApiError {
    ApiError::NotFound(ENDPOINT_NOT_FOUND)
}

// === handlers ===

pub(super) fn find(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<EndpointRecord, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    state
        .log
        .read(|rtxn, dbs| tables::endpoint_by_ref(rtxn, dbs, app.key, endpoint_ref))?
        .ok_or_else(not_found)
}

pub(super) fn list(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    let limit = ctx.query.limit()?;
    let descending = ctx.query.descending(true)?;
    let iterator = ctx.query.iterator();
    let page = state.log.read(|rtxn, dbs| {
        let cursor = match iterator {
            Some((id, _)) => {
                Some(tables::endpoint_row_by_ref(rtxn, dbs, app.key, id)?.map_or(0, |e| e.key))
            }
            None => None,
        };
        let backwards = iterator.is_some_and(|(_, b)| b);
        let mut page = Collector::new(limit);
        let walk = Walk {
            after: cursor,
            toward_lower: descending != backwards,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        // Stored rows: the view shows no secret, so none is opened.
        let capped = tables::scan_app_endpoints(rtxn, dbs, app.key, walk, |endpoint| {
            Ok(page.push(EndpointOut::from(endpoint)))
        })?;
        Ok(page.into_page(capped, backwards, |e| e.id.clone()))
    })?;
    Reply::json(StatusCode::OK, &page)
}

/// Checks every field of a create; returns the signing key (given, or a new one).
fn validate_create(input: &EndpointIn) -> Result<Vec<u8>, ApiError> {
    let mut problems = Problems::default();
    check_url(&mut problems, &input.url);
    problems.text("description", &input.description, false);
    problems.uid(IdKind::Endpoint, "uid", input.uid.as_deref());
    problems.throttle_rate(input.throttle_rate);
    problems.metadata(input.metadata.as_ref());
    check_filters(
        &mut problems,
        input.event_types.as_ref(),
        input.channels.as_ref(),
    );
    let secret = check_secret(&mut problems, "secret", input.secret.as_ref());
    if let Some(headers) = &input.headers {
        check_headers(&mut problems, headers);
    }
    check_signing(&mut problems, input.signing.as_ref());
    problems.finish()?;
    Ok(secret.unwrap_or_else(generate_secret))
}

pub(super) async fn create(state: &ApiState, ctx: &Ctx, app_ref: &str) -> Result<Reply, ApiError> {
    let input: EndpointIn = parse_json(&ctx.body)?;
    create_from(state, ctx, app_ref, input).await
}

/// Creates the endpoint `input` describes (POST, or a PUT that found none).
async fn create_from(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    input: EndpointIn,
) -> Result<Reply, ApiError> {
    let secret = validate_create(&input)?;
    if !input.polling_only.unwrap_or(false) {
        check_destination(state, &input.url)?;
    }
    let app = resolve(state, ctx, app_ref)?;
    let op = Op::CreateEndpoint {
        app_key: app.key,
        id: ids::new_id(IdKind::Endpoint, state.clock.now_ms()),
        fields: Box::new(new_fields(state, input, &secret)),
    };
    submit_reply(state, ctx.idempotency, op).await
}

/// POST /operational-webhook/endpoint before the operational application exists: the
/// endpoint and (in the same op) its application.
pub(super) async fn create_operational(state: &ApiState, ctx: &Ctx) -> Result<Reply, ApiError> {
    let input: EndpointIn = parse_json(&ctx.body)?;
    let secret = validate_create(&input)?;
    check_destination(state, &input.url)?;
    let now_ms = state.clock.now_ms();
    let op = Op::CreateOperationalEndpoint {
        app_id: ids::new_id(IdKind::App, now_ms),
        id: ids::new_id(IdKind::Endpoint, now_ms),
        fields: Box::new(new_fields(state, input, &secret)),
    };
    submit_reply(state, ctx.idempotency, op).await
}

/// A new endpoint's fields, secrets in their stored form.
fn new_fields(state: &ApiState, input: EndpointIn, secret: &[u8]) -> EndpointFields {
    let mut headers = BTreeMap::new();
    for (name, value) in input.headers.unwrap_or_default() {
        merge_header(&mut headers, &name, Some(state.log.stored_text(&value)));
    }
    EndpointFields {
        uid: input.uid,
        url: input.url,
        description: input.description,
        version: input.version.unwrap_or(1),
        disabled: input.disabled,
        throttle_rate: input.throttle_rate,
        event_types: input.event_types,
        channels: input.channels,
        secret: state.log.stored_secret(secret),
        headers,
        metadata: input.metadata.unwrap_or_default(),
        fifo: input.ordering.is_some_and(|o| o == Ordering::Fifo),
        signing: input
            .signing
            .map_or(Signing::Hmac, |s| s.into_stored(&state.log)),
        sealed: state.log.seals(),
        polling_only: input.polling_only.unwrap_or(false),
    }
}

pub(super) fn get(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    Reply::json(
        StatusCode::OK,
        &EndpointOut::from(find(state, ctx, app_ref, endpoint_ref)?),
    )
}

pub(super) async fn upsert(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let input: EndpointIn = parse_json(&ctx.body)?;
    // Kept for a PUT that finds no endpoint: it creates one, named by the path (Svix).
    let mut to_create: EndpointIn = parse_json(&ctx.body)?;
    let as_patch = EndpointPatch {
        url: Some(input.url),
        description: Some(input.description),
        throttle_rate: input.throttle_rate.map_or(Patch::Null, Patch::Value),
        uid: input.uid.map_or(Patch::Null, Patch::Value),
        version: input.version,
        disabled: Some(input.disabled),
        event_types: input.event_types.map_or(Patch::Null, Patch::Value),
        channels: input.channels.map_or(Patch::Null, Patch::Value),
        secret: None,
        metadata: Some(input.metadata.unwrap_or_default()),
        ordering: Some(input.ordering.unwrap_or(Ordering::Unordered)),
        signing: Some(input.signing.unwrap_or(SigningIn::Hmac)),
        polling_only: Some(input.polling_only.unwrap_or(false)),
    };
    match update(state, ctx, app_ref, endpoint_ref, as_patch).await {
        Err(ApiError::NotFound(detail))
            if detail == ENDPOINT_NOT_FOUND && !ids::is_id(IdKind::Endpoint, endpoint_ref) =>
        {
            if to_create.uid.is_none() {
                to_create.uid = Some(endpoint_ref.to_owned());
            }
            create_from(state, ctx, app_ref, to_create).await
        }
        other => other,
    }
}

pub(super) async fn patch(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let input: EndpointPatch = parse_json(&ctx.body)?;
    update(state, ctx, app_ref, endpoint_ref, input).await
}

/// Checks every field a PATCH (or PUT) sets; returns the new secret's key, if one is given.
fn validate_patch(input: &EndpointPatch) -> Result<Option<Vec<u8>>, ApiError> {
    let mut problems = Problems::default();
    if let Some(url) = &input.url {
        check_url(&mut problems, url);
    }
    if let Some(description) = &input.description {
        problems.text("description", description, false);
    }
    problems.uid(
        IdKind::Endpoint,
        "uid",
        input.uid.as_value().map(String::as_str),
    );
    problems.throttle_rate(input.throttle_rate.as_value().copied());
    problems.metadata(input.metadata.as_ref());
    check_filters(
        &mut problems,
        input.event_types.as_value(),
        input.channels.as_value(),
    );
    let secret = check_secret(&mut problems, "secret", input.secret.as_ref());
    check_signing(&mut problems, input.signing.as_ref());
    problems.finish()?;
    Ok(secret)
}

async fn update(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
    input: EndpointPatch,
) -> Result<Reply, ApiError> {
    let secret = validate_patch(&input)?;
    if let Some(url) = &input.url
        && input.polling_only != Some(true)
    {
        check_destination(state, url)?;
    }
    let app = resolve(state, ctx, app_ref)?;
    let changes = EndpointChanges {
        url: input.url,
        description: input.description,
        throttle_rate: input.throttle_rate.into_change(),
        uid: input.uid.into_change(),
        version: input.version,
        disabled: input.disabled,
        event_types: input.event_types.into_change(),
        channels: input.channels.into_change(),
        secret: secret.map(|key| state.log.stored_secret(&key)),
        metadata: input.metadata,
        fifo: input.ordering.map(|o| o == Ordering::Fifo),
        signing: input.signing.map(|s| s.into_stored(&state.log)),
        polling_only: input.polling_only,
    };
    let op = Op::UpdateEndpoint {
        app_key: app.key,
        endpoint: endpoint_ref.to_owned(),
        changes: Box::new(changes),
    };
    submit_reply(state, None, op).await
}

pub(super) async fn delete(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    let op = Op::DeleteEndpoint {
        app_key: app.key,
        endpoint: endpoint_ref.to_owned(),
    };
    submit_reply(state, None, op).await
}

// === secret ===

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretOut {
    key: String,
    /// A static-token endpoint's header and token (a Sluice extension): what its
    /// receiver compares, shown to whoever may read the signing key.
    #[serde(skip_serializing_if = "Option::is_none")]
    static_token: Option<StaticTokenOut>,
}

#[derive(Serialize)]
struct StaticTokenOut {
    header: String,
    token: String,
}

pub(super) fn get_secret(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let endpoint = find(state, ctx, app_ref, endpoint_ref)?;
    let static_token = match endpoint.signing {
        Signing::StaticToken { header, token } => Some(StaticTokenOut { header, token }),
        Signing::Hmac => None,
    };
    Reply::json(
        StatusCode::OK,
        &SecretOut {
            key: format_secret(&endpoint.secret),
            static_token,
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RotateIn {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    grace_period_seconds: Option<u64>,
}

pub(super) async fn rotate_secret(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let input: RotateIn = if ctx.body.is_empty() {
        RotateIn::default()
    } else {
        parse_json(&ctx.body)?
    };
    let mut problems = Problems::default();
    let new_key = check_secret(&mut problems, "key", input.key.as_ref());
    let grace_secs = input
        .grace_period_seconds
        .unwrap_or(SECRET_GRACE_SECONDS_DEFAULT);
    if grace_secs > SECRET_GRACE_SECONDS_MAX {
        problems.add(
            &["body", "gracePeriodSeconds"],
            format!("must be at most {SECRET_GRACE_SECONDS_MAX}"),
        );
    }
    problems.finish()?;
    let app = resolve(state, ctx, app_ref)?;
    let new_key = match new_key {
        Some(key) => key,
        None => {
            let current = state
                .log
                .read(|rtxn, dbs| tables::endpoint_by_ref(rtxn, dbs, app.key, endpoint_ref))?
                .ok_or_else(not_found)?;
            generate_secret_like(&current.secret)
        }
    };
    let op = Op::RotateSecret {
        app_key: app.key,
        endpoint: endpoint_ref.to_owned(),
        new_key: state.log.stored_secret(&new_key),
        grace_ms: grace_secs * 1000,
    };
    // Not remembered under an idempotency key: the reply holds the new secret, and
    // remembered replies are stored unsealed.
    submit(state, None, op).await?;
    // SDK 2.x reads the new key from the response (Svix's server answered 204).
    Reply::json(
        StatusCode::OK,
        &SecretOut {
            key: format_secret(&new_key),
            static_token: None,
        },
    )
}

// === headers ===

#[derive(Serialize)]
struct HeadersOut {
    headers: BTreeMap<String, String>,
    sensitive: Vec<String>,
}

pub(super) fn get_headers(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let endpoint = find(state, ctx, app_ref, endpoint_ref)?;
    let (sensitive, shown): (BTreeMap<_, _>, BTreeMap<_, _>) = endpoint
        .headers
        .into_iter()
        .partition(|(name, _)| SENSITIVE_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
    Reply::json(
        StatusCode::OK,
        &HeadersOut {
            headers: shown,
            sensitive: sensitive.into_keys().collect(),
        },
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadersIn {
    headers: BTreeMap<String, Option<String>>,
    #[serde(default)]
    delete_headers: Vec<String>,
}

/// PUT replaces every header; PATCH merges (`null` or `deleteHeaders` remove).
pub(super) async fn set_headers(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
    merge: bool,
) -> Result<Reply, ApiError> {
    let input: HeadersIn = parse_json(&ctx.body)?;
    let mut problems = Problems::default();
    for (name, value) in &input.headers {
        if value.is_none() && !merge {
            problems.add(&["body", "headers", name], "must be a string");
        }
        check_header(&mut problems, name, value.as_deref());
    }
    problems.finish()?;
    let app = resolve(state, ctx, app_ref)?;
    let set = input
        .headers
        .into_iter()
        .map(|(name, value)| (name, value.map(|v| state.log.stored_text(&v))))
        .collect();
    let op = Op::SetHeaders {
        app_key: app.key,
        endpoint: endpoint_ref.to_owned(),
        replace: !merge,
        delete: input.delete_headers,
        set,
    };
    submit_reply(state, None, op).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ed25519_secret_is_taken_as_whsk_and_shown_as_its_public_key() {
        let stored = signing::ed25519_from_seed(&[3u8; 32]);
        let public = &stored[stored.len() - 32..];
        let mut pair = [3u8; 32].to_vec();
        pair.extend_from_slice(public);
        let whsk = format!("whsk_{}", BASE64.encode(&pair));
        assert_eq!(parse_secret(&whsk), Ok(stored.clone()));
        assert_eq!(
            format_secret(&stored),
            format!("whpk_{}", BASE64.encode(public))
        );
        // A public key is not a secret, and a pair that does not match is refused.
        assert!(parse_secret(&format_secret(&stored)).is_err());
        pair[0] ^= 1;
        let mismatched = parse_secret(&format!("whsk_{}", BASE64.encode(&pair)));
        assert!(mismatched.is_err_and(|why| why.contains("public key")));
        // A rotation without a key keeps the kind, with a fresh key.
        let next = generate_secret_like(&stored);
        assert!(matches!(
            signing::signing_key(&next),
            signing::SigningKey::Ed25519 { .. }
        ));
        assert_ne!(next, stored);
        let hmac = generate_secret_like(&generate_secret());
        assert!(matches!(
            signing::signing_key(&hmac),
            signing::SigningKey::Hmac(_)
        ));
    }

    #[test]
    fn secrets_round_trip_and_are_checked() {
        let key = generate_secret();
        assert_eq!(parse_secret(&format_secret(&key)), Ok(key));
        // The prefix is optional (the SDK documents it so, and the README says so).
        let bare = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(parse_secret(bare), parse_secret(&format!("whsec_{bare}")));
        assert_eq!(parse_secret(bare).map(|k| k.len()), Ok(24));
        assert!(parse_secret("whsec_short").is_err());
        assert!(parse_secret("whsec_!!!!").is_err());
        assert!(parse_secret(&format!("whsec_{}", BASE64.encode([1u8; 76]))).is_err());
    }

    #[test]
    fn header_rules() {
        let verdict = |name: &str, value: &str| {
            let mut p = Problems::default();
            check_header(&mut p, name, Some(value));
            p.finish().is_ok()
        };
        assert!(verdict("X-Custom", "yes"));
        assert!(verdict("Authorization", "Bearer x"));
        assert!(!verdict("Content-Type", "text/plain"));
        assert!(!verdict("x-amz-date", "1"));
        assert!(!verdict("webhook-id", "1"));
        assert!(!verdict("bad header", "1"));
        for name in [
            "Host",
            "HOST",
            "Connection",
            "Keep-Alive",
            "Proxy-Authorization",
            "Proxy-Anything",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Expect",
            "Content-Length",
        ] {
            assert!(!verdict(name, "1"), "{name} is refused");
            let mut p = Problems::default();
            check_header(&mut p, name, Some("1"));
            let Err(ApiError::Validation(errors)) = p.finish() else {
                panic!("{name}: a 422");
            };
            assert!(errors[0].msg.contains(name), "{name}: {}", errors[0].msg);
        }
        assert!(!verdict("X-Custom", "line\nbreak"));
        let mut headers = BTreeMap::from([("X-A".to_owned(), "1".to_owned())]);
        merge_header(&mut headers, "x-a", Some("2".to_owned()));
        assert_eq!(
            headers,
            BTreeMap::from([("x-a".to_owned(), "2".to_owned())])
        );
    }
}
