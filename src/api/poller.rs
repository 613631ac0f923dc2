//! Polling endpoints (`message.poller.*`): consumers that pull an endpoint's messages
//! instead of receiving pushes, and the endpoint's poller token.
//!
//! A page is one range read of the application's ordered log (`app_msgs`) after a
//! position (a seq), filtered by the endpoint's event types and channels: never a scan
//! of other applications. The iterator is that position, encoded with a MAC bound to the
//! application and endpoint (`encode_iterator`), so a corrupt iterator or one of another
//! endpoint is refused with 400 `invalid_iterator`. The MAC key derives from the
//! endpoint's identity, not from a secret: an iterator authorises nothing (the token
//! does), and a forged one could only name a position `after` can name anyway.
//!
//! A durable consumer (`…/consumer/{id}`) remembers the last iterator it used: passing
//! one acknowledges everything before it; a call without one resumes there. So a client
//! that restarts without its iterator gets its last unacknowledged page again
//! (at-least-once), never a gap. `seek` moves the position to a time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::endpoints::find;
use super::idempotency::submit;
use super::{ApiError, ApiState, Ctx, Reply, parse_json};
use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::ids::{self, IdKind};
use crate::limits::{
    CONSUMER_ID_LEN_MAX, PAGE_SCAN_ROWS_MAX, POLLER_TOKEN_GRACE_SECONDS_DEFAULT,
    POLLER_TOKEN_GRACE_SECONDS_MAX,
};
use crate::log::index::{EndpointFilter, matches};
use crate::log::ops::{Op, Outcome};
use crate::log::schema::{EndpointRecord, MessageRecord, PollerTokenRecord, TokenScope};
use crate::log::tables::{self, Walk};

const ITERATOR_VERSION: u8 = 1;

fn iterator_key(endpoint: &EndpointRecord) -> hmac::Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"sluice poller iterator v1\0");
    ctx.update(&endpoint.app_key.to_be_bytes());
    ctx.update(&endpoint.key.to_be_bytes());
    ctx.update(&endpoint.created_ms.to_be_bytes());
    ctx.update(endpoint.id.as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, ctx.finish().as_ref())
}

/// The iterator naming "after `seq`" in `endpoint`'s poller: version, seq and a MAC.
pub(super) fn encode_iterator(endpoint: &EndpointRecord, seq: u64) -> String {
    let mut bytes = Vec::with_capacity(41);
    bytes.push(ITERATOR_VERSION);
    bytes.extend_from_slice(&seq.to_be_bytes());
    let tag = hmac::sign(&iterator_key(endpoint), &bytes);
    bytes.extend_from_slice(tag.as_ref());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn invalid_iterator() -> ApiError {
    ApiError::bad_request(
        "invalid_iterator",
        "The iterator is not one this endpoint's poller gave out; poll without it to resync.",
    )
}

/// The position an iterator names, if it is this endpoint's and intact.
fn decode_iterator(endpoint: &EndpointRecord, text: &str) -> Result<u64, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid_iterator())?;
    if bytes.len() != 41 || bytes[0] != ITERATOR_VERSION {
        return Err(invalid_iterator());
    }
    // Constant time: ring's verify compares the whole tag.
    hmac::verify(&iterator_key(endpoint), &bytes[..9], &bytes[9..])
        .map_err(|_| invalid_iterator())?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[1..9]);
    Ok(u64::from_be_bytes(seq))
}

/// A message as a poller shows it (`PollingEndpointMessageOut`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolledMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    event_type: String,
    payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<Vec<String>>,
    id: String,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<std::collections::BTreeMap<String, String>>,
}

impl PolledMessage {
    fn from(m: MessageRecord) -> PolledMessage {
        let payload = match &m.payload {
            None => r#"{"expired":true}"#.to_owned(),
            Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        };
        let payload = RawValue::from_string(payload).unwrap_or_else(|_| {
            RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
        });
        PolledMessage {
            event_id: m.event_id,
            event_type: m.event_type,
            payload,
            channels: m.channels,
            id: m.id,
            timestamp: format_rfc3339(m.created_ms),
            headers: m.headers.map(|h| h.into_iter().collect()),
        }
    }
}

/// `PollingEndpointOut`.
#[derive(Serialize)]
struct PollPage {
    data: Vec<PolledMessage>,
    iterator: String,
    done: bool,
}

/// Filters a poll applies beyond the endpoint's own.
struct Wanted {
    event_type: Option<String>,
    channel: Option<String>,
}

/// The endpoint, checked against a poller token's scope.
fn poller_endpoint(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<EndpointRecord, ApiError> {
    let endpoint = find(state, ctx, app_ref, endpoint_ref)?;
    match ctx.auth.scope {
        TokenScope::Poller { endpoint: key, .. } if key != endpoint.key => Err(ApiError::Forbidden),
        _ => Ok(endpoint),
    }
}

/// The position a poller starts from: messages created since the endpoint was (or since
/// `after_ms`, if later).
fn start_position(
    state: &ApiState,
    endpoint: &EndpointRecord,
    after_ms: Option<u64>,
) -> Result<u64, ApiError> {
    let since = endpoint.created_ms.saturating_sub(1);
    let time = after_ms.map_or(since, |t| t.max(since));
    Ok(state
        .log
        .read(|rtxn, dbs| tables::position_at_time(rtxn, dbs, time))?)
}

/// One page after `from`: up to `limit` matching messages, the position after the last
/// row read, and whether the log is read to its end.
fn page(
    state: &ApiState,
    endpoint: &EndpointRecord,
    from: u64,
    limit: usize,
    wanted: &Wanted,
) -> Result<PollPage, ApiError> {
    let filter = EndpointFilter {
        endpoint_key: endpoint.key,
        disabled: false,
        event_types: endpoint.event_types.clone(),
        channels: endpoint.channels.clone(),
        polling_only: endpoint.polling_only,
    };
    let (data, last, done) = state.log.read(|rtxn, dbs| {
        let mut data = Vec::new();
        let mut last = from;
        let walk = Walk {
            after: Some(from),
            toward_lower: false,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        let mut full = false;
        let capped = tables::scan_app_messages(rtxn, dbs, endpoint.app_key, walk, |seq, m| {
            last = seq;
            let wanted_type = wanted
                .event_type
                .as_ref()
                .is_none_or(|t| *t == m.event_type);
            let wanted_channel = wanted
                .channel
                .as_ref()
                .is_none_or(|c| m.channels.as_ref().is_some_and(|cs| cs.contains(c)));
            if m.created_ms >= endpoint.created_ms
                && wanted_type
                && wanted_channel
                && matches(&filter, &m.event_type, m.channels.as_deref())
            {
                data.push(PolledMessage::from(m));
                if data.len() >= limit {
                    full = true;
                    return Ok(true);
                }
            }
            Ok(false)
        })?;
        Ok((data, last, !capped && !full))
    })?;
    Ok(PollPage {
        data,
        iterator: encode_iterator(endpoint, last),
        done,
    })
}

fn wanted(ctx: &Ctx) -> Wanted {
    Wanted {
        event_type: ctx.query.get("event_type").map(str::to_owned),
        channel: ctx.query.get("channel").map(str::to_owned),
    }
}

/// GET /app/{app}/poller/{endpoint}: without an iterator, no messages and the iterator
/// to start from (the endpoint's creation, or `after`); with one, the next page.
pub(super) fn poll(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let limit = ctx.query.limit()?;
    let after = ctx.query.time("after")?;
    let endpoint = poller_endpoint(state, ctx, app_ref, endpoint_ref)?;
    let body = match ctx.query.get("iterator").filter(|s| !s.is_empty()) {
        Some(text) => {
            let from = decode_iterator(&endpoint, text)?;
            page(state, &endpoint, from, limit, &wanted(ctx))?
        }
        None => PollPage {
            data: Vec::new(),
            iterator: encode_iterator(&endpoint, start_position(state, &endpoint, after)?),
            done: false,
        },
    };
    Reply::json(StatusCode::OK, &body)
}

fn check_consumer(consumer: &str) -> Result<(), ApiError> {
    if consumer.is_empty()
        || consumer.len() > CONSUMER_ID_LEN_MAX
        || !consumer.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::field(
            &["path", "consumer_id"],
            format!("must be 1 to {CONSUMER_ID_LEN_MAX} printable ASCII characters"),
        ));
    }
    Ok(())
}

/// GET /app/{app}/poller/{endpoint}/consumer/{consumer}: the page after the iterator
/// given (which is remembered as the consumer's position once durable), or after the
/// consumer's remembered position.
pub(super) async fn consumer_poll(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
    consumer: &str,
) -> Result<Reply, ApiError> {
    check_consumer(consumer)?;
    let limit = ctx.query.limit()?;
    let endpoint = poller_endpoint(state, ctx, app_ref, endpoint_ref)?;
    let saved = state
        .log
        .read(|rtxn, dbs| tables::consumer_position(rtxn, dbs, endpoint.key, consumer))?;
    let from = match ctx.query.get("iterator").filter(|s| !s.is_empty()) {
        Some(text) => {
            let from = decode_iterator(&endpoint, text)?;
            if saved != Some(from) {
                let op = Op::SetConsumer {
                    app_key: endpoint.app_key,
                    endpoint: endpoint.id.clone(),
                    consumer: consumer.to_owned(),
                    seq: from,
                };
                submit(state, None, op).await?;
            }
            from
        }
        None => match saved {
            Some(from) => from,
            None => start_position(state, &endpoint, None)?,
        },
    };
    let body = page(state, &endpoint, from, limit, &wanted(ctx))?;
    Reply::json(StatusCode::OK, &body)
}

#[derive(Deserialize)]
struct SeekIn {
    after: String,
}

/// POST …/consumer/{consumer}/seek `{after}`: the consumer's position moves to the first
/// message created after that time; answers `{iterator}`.
pub(super) async fn consumer_seek(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
    consumer: &str,
) -> Result<Reply, ApiError> {
    check_consumer(consumer)?;
    let input: SeekIn = parse_json(&ctx.body)?;
    let after = parse_rfc3339(&input.after)
        .ok_or_else(|| ApiError::field(&["body", "after"], "must be an RFC 3339 date-time"))?;
    let endpoint = poller_endpoint(state, ctx, app_ref, endpoint_ref)?;
    let seq = start_position(state, &endpoint, Some(after))?;
    let op = Op::SetConsumer {
        app_key: endpoint.app_key,
        endpoint: endpoint.id.clone(),
        consumer: consumer.to_owned(),
        seq,
    };
    super::idempotency::submit_reply(state, ctx.idempotency, op).await
}

/// The reply of a stored consumer position (a seek's): `{iterator}`.
pub(super) fn seek_reply(endpoint: &EndpointRecord, seq: u64) -> Result<Reply, ApiError> {
    Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "iterator": encode_iterator(endpoint, seq) }),
    )
}

// === poller tokens ===

/// `ApiTokenOut`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenOut {
    token: String,
    id: String,
    created_at: String,
    scopes: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RotateIn {
    #[serde(default)]
    expiry: Option<u64>,
    #[serde(default)]
    old_token_expiry: Option<u64>,
}

/// GET (`rotate: false`: the endpoint's token, made on first use) or POST …/token/rotate
/// under `/auth/app/{app}/poller/{endpoint}`.
pub(super) async fn token(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
    rotate: bool,
) -> Result<Reply, ApiError> {
    if matches!(ctx.auth.scope, TokenScope::Poller { .. }) {
        return Err(ApiError::Forbidden);
    }
    let input: RotateIn = if rotate && !ctx.body.is_empty() {
        parse_json(&ctx.body)?
    } else {
        RotateIn::default()
    };
    if input.expiry.is_some() {
        return Err(ApiError::field(
            &["body", "expiry"],
            "poller tokens do not expire in Sluice; rotate to replace one",
        ));
    }
    let grace = input
        .old_token_expiry
        .unwrap_or(POLLER_TOKEN_GRACE_SECONDS_DEFAULT);
    if grace > POLLER_TOKEN_GRACE_SECONDS_MAX {
        return Err(ApiError::field(
            &["body", "oldTokenExpiry"],
            format!("must be at most {POLLER_TOKEN_GRACE_SECONDS_MAX}"),
        ));
    }
    let endpoint = find(state, ctx, app_ref, endpoint_ref)?;
    let mut random = [0u8; 32];
    ids::fill_random(&mut random);
    let plain = format!("sk_poll_{}", URL_SAFE_NO_PAD.encode(random));
    let now_ms = state.clock.now_ms();
    let op = Op::SetPollerToken {
        app_key: endpoint.app_key,
        endpoint: endpoint.id.clone(),
        token: Box::new(PollerTokenRecord {
            id: ids::new_id(IdKind::PollerToken, now_ms),
            token: state.log.stored_text(&plain),
            hash: super::hash_token(&plain),
            created_ms: now_ms,
            sealed: state.log.seals(),
        }),
        keep_existing: !rotate,
        old_grace_ms: grace * 1000,
    };
    // Never remembered under an idempotency key: the reply holds the token.
    let Outcome::PollerToken(record) = submit(state, None, op).await? else {
        return Err(ApiError::Internal(
            "a poller token op answered oddly".to_owned(),
        ));
    };
    Reply::json(
        StatusCode::OK,
        &TokenOut {
            token: state.log.open_text(&record.token, record.sealed)?,
            id: record.id,
            created_at: format_rfc3339(record.created_ms),
            scopes: vec![format!("poller:{}", endpoint.id)],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(key: u64, app_key: u64) -> EndpointRecord {
        serde_json::from_value(serde_json::json!({
            "key": key, "app_key": app_key, "id": format!("ep_{key}"), "uid": null,
            "url": "https://example.com", "description": "", "version": 1, "disabled": false,
            "throttle_rate": null, "event_types": null, "channels": null, "secret": [1, 2],
            "old_secrets": [], "headers": {}, "metadata": {}, "created_ms": 5, "updated_ms": 5
        }))
        .expect("endpoint")
    }

    #[test]
    fn iterators_round_trip_and_refuse_tampering_and_other_endpoints() {
        let (a, b) = (endpoint(1, 1), endpoint(2, 1));
        for seq in [0, 1, 9_999, u64::MAX] {
            assert_eq!(
                decode_iterator(&a, &encode_iterator(&a, seq)).ok(),
                Some(seq)
            );
        }
        let it = encode_iterator(&a, 42);
        assert!(decode_iterator(&b, &it).is_err(), "another endpoint's");
        assert!(
            decode_iterator(&endpoint(1, 2), &it).is_err(),
            "another app's"
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&it).expect("b64");
        bytes[8] ^= 1;
        assert!(decode_iterator(&a, &URL_SAFE_NO_PAD.encode(&bytes)).is_err());
        for garbage in ["", "x", "!!!", &it[..it.len() - 1]] {
            assert!(decode_iterator(&a, garbage).is_err(), "{garbage}");
        }
    }
}
