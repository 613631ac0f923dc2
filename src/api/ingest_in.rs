//! The receive route of ingest sources: `/ingest/in/{token}`, where providers post.
//!
//! In order: the token names a source (unknown tokens share one rate bucket, so guessing
//! is slow, and get 404); the source's rate bucket (429); the body, within
//! `api.body_bytes_max` and its read time; the source type's verification (`verify.rs`).
//! A rejected request gets a JSON error, appends nothing, and leaves a row in the
//! source's bounded error log (headers without secrets, the start of the body). An
//! accepted one becomes a message of the source's application, with its headers, and is
//! answered only after that append is durable. Zoom's `endpoint.url_validation` and
//! Meta's GET `hub.challenge` are answered as those providers require, and store nothing.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::value::RawValue;

use super::idempotency::submit;
use super::{ApiError, ApiState, Reply, hash_token, read_body, render};
use crate::ids::{self, IdKind};
use crate::limits::{
    HEADER_VALUE_LEN_MAX, RETENTION_DAYS_DEFAULT, SOURCE_ERROR_PAYLOAD_BYTES_MAX,
    SOURCE_HEADERS_KEPT_MAX,
};
use crate::log::ops::{NewMessage, Op};
use crate::log::schema::{SourceErrorRecord, SourceRecord};
use crate::log::tables;
use crate::verify::{self, Scheme};

/// Where providers post: `/ingest/in/{token}`.
pub(super) const RECEIVE_PREFIX: &str = "/ingest/in/";

/// Headers never kept (credentials of the request, cookies).
const SECRET_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
    "set-cookie",
];

/// The bucket every request with an unknown token shares.
const UNKNOWN_TOKEN_BUCKET: [u8; 32] = [0xAA; 32];

/// Serves one request on the receive route; never fails (errors are JSON).
pub(super) async fn handle(state: &ApiState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let result = receive(state, req).await;
    metrics::counter!(
        crate::telemetry::name::SOURCE_REQUESTS,
        "outcome" => outcome_label(&result)
    )
    .increment(1);
    match result {
        Ok(Answer::Accepted(reply) | Answer::Handshake(reply)) => render(&method, Ok(reply)),
        Ok(Answer::Text(text)) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response
        }
        Err(error) => render(&method, Err(error)),
    }
}

enum Answer {
    /// The request was appended: its message id.
    Accepted(Reply),
    /// Zoom's URL validation, answered in JSON; nothing appended.
    Handshake(Reply),
    /// Meta's handshake wants the challenge back as it came; nothing appended.
    Text(String),
}

/// The `outcome` label of `sluice_source_requests_total` for a receive's result.
fn outcome_label(result: &Result<Answer, ApiError>) -> &'static str {
    match result {
        Ok(Answer::Accepted(_)) => "accepted",
        Ok(Answer::Handshake(_) | Answer::Text(_)) => "handshake",
        Err(ApiError::RateLimited { .. }) => "throttled",
        Err(ApiError::NotFound(_)) => "unknown_url",
        Err(_) => "rejected",
    }
}

fn rate_key(source: &SourceRecord) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..7].copy_from_slice(b"source:");
    key[8..16].copy_from_slice(&source.key.to_be_bytes());
    key
}

/// The source `token` names, within its rate; unknown tokens share one bucket.
fn find_source(state: &ApiState, token: &str, now_ms: u64) -> Result<SourceRecord, ApiError> {
    let rate = state.config.get().source_rate_per_second;
    let source = if token.is_empty() || token.len() > 64 || token.contains('/') {
        None
    } else {
        let hash = hash_token(token);
        state
            .log
            .read(|rtxn, dbs| tables::source_by_token(rtxn, dbs, &hash, now_ms))?
    };
    let Some(source) = source else {
        state
            .rate_limiter
            .check(&UNKNOWN_TOKEN_BUCKET, now_ms, rate, rate)?;
        return Err(ApiError::NotFound("No source receives at this URL."));
    };
    state
        .rate_limiter
        .check(&rate_key(&source), now_ms, rate, rate)?;
    Ok(source)
}

async fn receive(state: &ApiState, req: Request<Incoming>) -> Result<Answer, ApiError> {
    let token = req
        .uri()
        .path()
        .strip_prefix(RECEIVE_PREFIX)
        .unwrap_or_default()
        .to_owned();
    let now_ms = state.clock.now_ms();
    let source = find_source(state, &token, now_ms)?;
    let scheme = Scheme::of(&source.kind)
        .ok_or_else(|| ApiError::Internal("a source of an unknown type".to_owned()))?;
    let config = opened_config(state, &source)?;
    let method = req.method().clone();
    if method == Method::GET && scheme == Scheme::Meta {
        return meta_handshake(&config, req.uri().query().unwrap_or(""));
    }
    if method != Method::POST {
        let allowed: &'static [Method] = if scheme == Scheme::Meta {
            &[Method::GET, Method::POST]
        } else {
            &[Method::POST]
        };
        return Err(ApiError::MethodNotAllowed(allowed));
    }
    let headers = req.headers().clone();
    let body = match read_body(state, req).await {
        Ok(body) => body,
        Err(error) => {
            reject(
                state,
                &source,
                &headers,
                b"",
                &error,
                "the body is too large or slow",
            )
            .await;
            return Err(error);
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(reason) = verify::verify(scheme, &config, header, &body, now_ms / 1000) {
        let error = ApiError::BadSignature(reason);
        reject(state, &source, &headers, &body, &error, reason).await;
        return Err(error);
    }
    if serde_json::from_slice::<&RawValue>(&body).is_err() {
        let error = ApiError::bad_request("invalid_payload", "The body is not JSON.");
        reject(
            state,
            &source,
            &headers,
            &body,
            &error,
            "the body is not JSON",
        )
        .await;
        return Err(error);
    }
    if scheme == Scheme::Zoom
        && let Some(answer) = zoom_validation(&config, &body)
    {
        return Ok(Answer::Handshake(Reply::json(StatusCode::OK, &answer)?));
    }
    accept(state, &source, &headers, body, now_ms).await
}

/// Appends an accepted request as a message of the source's application; answers once
/// the append is durable.
async fn accept(
    state: &ApiState,
    source: &SourceRecord,
    headers: &HeaderMap,
    body: Bytes,
    now_ms: u64,
) -> Result<Answer, ApiError> {
    state.ensure_room_for_messages()?;
    let op = Op::ReceiveMessage {
        source_key: source.key,
        message: Box::new(NewMessage {
            id: ids::new_id(IdKind::Message, now_ms),
            event_type: source.kind.clone(),
            event_id: None,
            channels: None,
            payload: body.to_vec(),
            retention_days: RETENTION_DAYS_DEFAULT,
            tags: None,
            deliver_at_ms: None,
        }),
        headers: kept_headers(headers),
    };
    let crate::log::ops::Outcome::Message { message, .. } = submit(state, None, op).await? else {
        return Err(ApiError::Internal("a receive op answered oddly".to_owned()));
    };
    Ok(Answer::Accepted(Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "id": message.id }),
    )?))
}

fn opened_config(
    state: &ApiState,
    source: &SourceRecord,
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    source
        .config
        .iter()
        .map(|(k, v)| Ok((k.clone(), state.log.open_text(v, source.sealed)?)))
        .collect()
}

/// Meta's subscription handshake: `hub.mode=subscribe`, the configured
/// `hub.verify_token`, and `hub.challenge` echoed as the body.
fn meta_handshake(
    config: &std::collections::BTreeMap<String, String>,
    query: &str,
) -> Result<Answer, ApiError> {
    let query = super::query::Query::parse(query)?;
    let expected = config.get("verifyToken").map(String::as_bytes);
    let given = query.get("hub.verify_token").map(str::as_bytes);
    // Digests are compared, not the tokens: the time taken says nothing of the token.
    let token_ok = match (expected, given) {
        (Some(e), Some(g)) => hash_bytes(e) == hash_bytes(g),
        _ => false,
    };
    match (query.get("hub.mode"), query.get("hub.challenge")) {
        (Some("subscribe"), Some(challenge)) if token_ok => Ok(Answer::Text(challenge.to_owned())),
        _ => Err(ApiError::Forbidden),
    }
}

fn hash_bytes(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Zoom's `endpoint.url_validation` answer, if the body is that event.
fn zoom_validation(
    config: &std::collections::BTreeMap<String, String>,
    body: &[u8],
) -> Option<serde_json::Value> {
    let event: serde_json::Value = serde_json::from_slice(body).ok()?;
    if event.get("event")?.as_str()? != "endpoint.url_validation" {
        return None;
    }
    let plain = event.get("payload")?.get("plainToken")?.as_str()?;
    Some(verify::zoom_challenge(config.get("secret")?, plain))
}

/// The request's headers as kept with a message or an error: no credentials, values
/// bounded, at most `SOURCE_HEADERS_KEPT_MAX`.
fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !SECRET_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            // `to_str` admits visible ASCII only: any cut is on a character boundary.
            let value = value.to_str().ok()?;
            let end = value.len().min(HEADER_VALUE_LEN_MAX);
            Some((name.as_str().to_owned(), value[..end].to_owned()))
        })
        .take(SOURCE_HEADERS_KEPT_MAX)
        .collect()
}

/// Records a rejected request in the source's error log (best effort: a full writer
/// must not turn a 401 into a 503).
async fn reject(
    state: &ApiState,
    source: &SourceRecord,
    headers: &HeaderMap,
    body: &[u8],
    error: &ApiError,
    reason: &str,
) {
    let kept = &body[..body.len().min(SOURCE_ERROR_PAYLOAD_BYTES_MAX)];
    let op = Op::RecordSourceError {
        source_key: source.key,
        error: Box::new(SourceErrorRecord {
            id: ids::new_id(IdKind::SourceError, state.clock.now_ms()),
            status: error.status().as_u16(),
            reason: reason.to_owned(),
            headers: kept_headers(headers),
            payload: String::from_utf8_lossy(kept).into_owned(),
            created_ms: 0,
        }),
    };
    if let Err(failure) = submit(state, None, op).await {
        tracing::warn!(%failure, "Could not record a source error.");
    }
}
