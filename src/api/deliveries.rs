//! Deliveries seen from the API: where one message went (attempted destinations), what
//! one endpoint received (attempted messages), an endpoint's delivery counts (stats), and
//! resend (one manual attempt).

use hyper::StatusCode;
use serde::Serialize;

use super::apps::resolve;
use super::endpoints::{EndpointOut, find};
use super::idempotency::submit_reply;
use super::messages::MessageOut;
use super::query::{Collector, invalid};
use super::{ApiError, ApiState, Ctx, Reply};
use crate::clock::format_rfc3339;
use crate::limits::{
    PAGE_SCAN_ROWS_MAX, STATS_BUCKETS_MAX, STATS_ROWS_MAX, STATS_WINDOW_DEFAULT_MS,
};
use crate::log::ops::Op;
use crate::log::schema::{DeliveryRecord, DeliveryState};
use crate::log::tables::{self, Walk};
use crate::log::tasks;
use crate::log::{EndpointKey, Seq};

/// Svix's message status of a delivery: (code, text, next attempt). A skipped delivery
/// (its endpoint was disabled) reads as failed: the SDKs know no other status.
fn status_of(d: &DeliveryRecord) -> (u8, &'static str, Option<String>) {
    match d.state {
        DeliveryState::Succeeded => (0, "success", None),
        DeliveryState::Pending if d.attempts == 0 => {
            (1, "pending", Some(format_rfc3339(d.next_due_ms)))
        }
        DeliveryState::Pending | DeliveryState::Sending => {
            (3, "sending", Some(format_rfc3339(d.next_due_ms)))
        }
        DeliveryState::Failed | DeliveryState::Skipped => (2, "fail", None),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryStatus {
    status: u8,
    status_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt: Option<String>,
}

impl DeliveryStatus {
    fn of(d: &DeliveryRecord) -> DeliveryStatus {
        let (status, status_text, next_attempt) = status_of(d);
        DeliveryStatus {
            status,
            status_text,
            next_attempt,
        }
    }
}

#[derive(Serialize)]
struct WithStatus<T> {
    #[serde(flatten)]
    item: T,
    #[serde(flatten)]
    status: DeliveryStatus,
}

/// GET /app/{app}/msg/{msg}/endpoint: the endpoints this message has a delivery to, in
/// endpoint creation order.
pub(super) fn destinations(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    msg_ref: &str,
) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    let limit = ctx.query.limit()?;
    let iterator = ctx.query.iterator();
    let page = state.log.read(|rtxn, dbs| {
        let Some((seq, _)) = tables::message_by_ref(rtxn, dbs, app.key, msg_ref)? else {
            return Ok(Err(ApiError::NotFound("Message not found.")));
        };
        let cursor = match iterator {
            Some((id, _)) => match tables::endpoint_row_by_ref(rtxn, dbs, app.key, id)? {
                Some(e) => Some(e.key),
                None => return Ok(Err(invalid("iterator", "does not name an endpoint"))),
            },
            None => None,
        };
        let backwards = iterator.is_some_and(|(_, b)| b);
        let mut page = Collector::new(limit);
        let walk = Walk {
            after: cursor,
            toward_lower: backwards,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        let capped = tables::scan_app_endpoints(rtxn, dbs, app.key, walk, |endpoint| {
            let Some(delivery) =
                crate::log::deliveries::get(rtxn, dbs, EndpointKey(endpoint.key), Seq(seq))?
            else {
                return Ok(false);
            };
            Ok(page.push(WithStatus {
                item: EndpointOut::from(endpoint),
                status: DeliveryStatus::of(&delivery),
            }))
        })?;
        Ok(Ok(page.into_page(capped, backwards, |e| e.item.id.clone())))
    })??;
    Reply::json(StatusCode::OK, &page)
}

/// GET /app/{app}/endpoint/{endpoint}/msg: the messages delivered (or being delivered)
/// to this endpoint, newest first, with each delivery's status.
pub(super) fn messages(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let endpoint = find(state, ctx, app_ref, endpoint_ref)?;
    let limit = ctx.query.limit()?;
    let with_content = ctx.query.bool("with_content", true)?;
    let before = ctx.query.time("before")?;
    let after = ctx.query.time("after")?;
    let event_types = ctx.query.list("event_types");
    let channel = ctx.query.get("channel").map(str::to_owned);
    let status = match ctx.query.get("status") {
        None => None,
        Some(raw @ ("0" | "1" | "2" | "3")) => raw.parse::<u8>().ok(),
        Some(_) => return Err(invalid("status", "must be 0, 1, 2 or 3")),
    };
    let iterator = ctx.query.iterator();
    let page = state.log.read(|rtxn, dbs| {
        let cursor = match iterator {
            Some((id, _)) => match tables::message_by_ref(rtxn, dbs, endpoint.app_key, id)? {
                Some((seq, _)) => Some(seq),
                None => return Ok(Err(invalid("iterator", "does not name a message"))),
            },
            None => None,
        };
        let backwards = iterator.is_some_and(|(_, b)| b);
        let mut page = Collector::new(limit);
        let walk = Walk {
            after: cursor,
            toward_lower: !backwards,
            rows_max: PAGE_SCAN_ROWS_MAX,
        };
        let capped =
            tables::scan_endpoint_deliveries(rtxn, dbs, endpoint.key, walk, |seq, delivery| {
                let shown = DeliveryStatus::of(&delivery);
                if status.is_some_and(|s| s != shown.status) {
                    return Ok(false);
                }
                let Some(message) = tables::message_by_seq(rtxn, dbs, Seq(seq))? else {
                    return Ok(false); // Pruned by retention.
                };
                let in_window = before.is_none_or(|t| message.created_ms < t)
                    && after.is_none_or(|t| message.created_ms > t);
                let type_ok = event_types.is_empty() || event_types.contains(&message.event_type);
                let channel_ok = channel
                    .as_ref()
                    .is_none_or(|c| message.channels.as_ref().is_some_and(|cs| cs.contains(c)));
                if !(in_window && type_ok && channel_ok) {
                    return Ok(false);
                }
                Ok(page.push(WithStatus {
                    item: MessageOut::from(message, with_content),
                    status: shown,
                }))
            })?;
        Ok(Ok(page.into_page(capped, backwards, |m| m.item.id.clone())))
    })??;
    Reply::json(StatusCode::OK, &page)
}

#[derive(Serialize, Default)]
struct StatsOut {
    success: u64,
    pending: u64,
    sending: u64,
    fail: u64,
    canceled: u64,
    /// With `buckets=N` (a Sluice extension): the window cut in N equal spans, oldest
    /// first, each with its successes and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    buckets: Option<Vec<BucketOut>>,
}

#[derive(Serialize, Default, Clone, Copy)]
struct BucketOut {
    success: u64,
    fail: u64,
}

/// The `buckets` query parameter: absent, or 1–`STATS_BUCKETS_MAX`.
fn buckets_wanted(ctx: &Ctx) -> Result<Option<usize>, ApiError> {
    let Some(text) = ctx.query.get("buckets") else {
        return Ok(None);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=STATS_BUCKETS_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(
            "buckets",
            format!("must be a whole number from 1 to {STATS_BUCKETS_MAX}"),
        )),
    }
}

/// GET /app/{app}/endpoint/{endpoint}/stats: the endpoint's deliveries of messages created
/// in `[since, until)` (default: the last 28 days), counted by status; with `buckets=N`,
/// also per N equal spans of the window, in the same one scan.
pub(super) async fn stats(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let endpoint = find(state, ctx, app_ref, endpoint_ref)?;
    let now_ms = state.clock.now_ms();
    let until = ctx.query.time("until")?.unwrap_or(now_ms.saturating_add(1));
    let since = ctx
        .query
        .time("since")?
        .unwrap_or(until.saturating_sub(STATS_WINDOW_DEFAULT_MS));
    if since > until {
        return Err(invalid("since", "must not be after until"));
    }
    let buckets = buckets_wanted(ctx)?;
    // Up to `STATS_ROWS_MAX` rows: read on a blocking thread, not on a runtime worker
    // that serves other requests meanwhile.
    let (log, endpoint_key) = (state.log.clone(), endpoint.key);
    let count = move || {
        log.read(|rtxn, dbs| {
            let next_seq = tables::next_seq(rtxn, dbs)?;
            let from = tasks::first_seq_at(rtxn, dbs, since, next_seq)?;
            let to = tasks::first_seq_at(rtxn, dbs, until, next_seq)?;
            // Where each span after the first begins, as a sequence number.
            let mut starts = Vec::new();
            for i in 1..buckets.unwrap_or(1) {
                let at = since + (until - since) * i as u64 / buckets.unwrap_or(1) as u64;
                starts.push(tasks::first_seq_at(rtxn, dbs, at, next_seq)?);
            }
            let mut per_span = vec![BucketOut::default(); buckets.unwrap_or(0)];
            let mut stats = StatsOut::default();
            let whole = tables::each_delivery_in(
                rtxn,
                dbs,
                endpoint_key,
                (from, to),
                STATS_ROWS_MAX,
                |seq, d| {
                    let status = status_of(&d).0;
                    match status {
                        0 => stats.success += 1,
                        1 => stats.pending += 1,
                        3 => stats.sending += 1,
                        _ => stats.fail += 1,
                    }
                    if let Some(span) = per_span.get_mut(starts.partition_point(|&s| s <= seq)) {
                        span.success += u64::from(status == 0);
                        span.fail += u64::from(status == 2);
                    }
                },
            )?;
            stats.buckets = buckets.map(|_| per_span);
            Ok(whole.then_some(stats))
        })
    };
    let counted = tokio::task::spawn_blocking(count)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let stats = counted.ok_or_else(|| {
        ApiError::bad_request(
            "window_too_large",
            format!("The window holds more than {STATS_ROWS_MAX} deliveries; narrow it."),
        )
    })?;
    Reply::json(StatusCode::OK, &stats)
}

/// POST /app/{app}/msg/{msg}/endpoint/{endpoint}/resend: one manual attempt, not retried.
/// A delivery that is already pending is left to its schedule.
pub(super) async fn resend(
    state: &ApiState,
    ctx: &Ctx,
    app_ref: &str,
    msg_ref: &str,
    endpoint_ref: &str,
) -> Result<Reply, ApiError> {
    let app = resolve(state, ctx, app_ref)?;
    let op = Op::Resend {
        app_key: app.key,
        message: msg_ref.to_owned(),
        endpoint: endpoint_ref.to_owned(),
    };
    submit_reply(state, ctx.idempotency, op).await
}
