//! One attempt of one delivery, start to finish: read what it needs from the log, sign and
//! send, decide the next step (pure `schedule`), and record the attempt and the step in one
//! write. Runs as its own task: it tells its shard when the receiver has answered
//! (`Finished`, which frees the endpoint's slot), then waits for its record to be durable
//! and ends with the delivery the shard may then release.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::header::{HeaderName, HeaderValue};
use tokio::sync::mpsc;

use super::classify::{Outcome, TransportFailure};
use super::client::{AttemptResult, Transport};
use super::lane::LaneSettings;
use super::schedule::{Next, RetrySchedule};
use crate::clock::Clock;
use crate::config::HeaderStyle;
use crate::ids::{self, IdKind};
use crate::limits::{DUE_SLACK_MS, ENDPOINT_CACHE_MAX, THROTTLE_PAUSE_DEFAULT_MS};
use crate::live::Live;
use crate::log::ops::{AttemptRow, Envelope, Op};
use crate::log::schema::{
    AttemptRecord, DeliveryRecord, DeliveryState, EndpointRecord, MessageRecord, Signing, Trigger,
};
use crate::log::tables::{self, Step};
use crate::log::{DueJob, EndpointKey, Log, QueuedWrite, Seq};
use crate::signing;

const USER_AGENT: &str = concat!("Sluice/", env!("CARGO_PKG_VERSION"));
/// The id, timestamp and signature headers of each header style.
const WEBHOOK_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];
const SVIX_HEADERS: [&str; 3] = ["svix-id", "svix-timestamp", "svix-signature"];

/// What every attempt shares.
pub struct AttemptCtx {
    pub log: Log,
    pub transport: Transport,
    pub clock: Clock,
    /// Replaceable by SIGHUP; each attempt takes one snapshot.
    pub settings: Live<DeliverySettings>,
    pub endpoints: EndpointCache,
}

/// Decoded endpoints, each kept with the stored row it was decoded from. Every attempt
/// still reads the row, in its own read transaction, and reuses the decoded record only if
/// the row is byte for byte the same: an update, a rekey or a deletion is seen at once,
/// with no invalidation to get wrong. This spares each attempt a JSON decode (and the
/// opening of sealed secrets).
#[derive(Default)]
pub struct EndpointCache {
    entries: Mutex<HashMap<EndpointKey, CachedEndpoint>>,
}

/// The stored row and what it decoded to.
type CachedEndpoint = (Vec<u8>, Arc<EndpointRecord>);

impl EndpointCache {
    /// The endpoint `key` whose row, as stored, is `stored` (`None`: it is gone): the
    /// cached record if the row is unchanged, else `decode(stored)`, then cached.
    pub(super) fn get(
        &self,
        key: EndpointKey,
        stored: Option<&[u8]>,
        decode: impl FnOnce(&[u8]) -> Result<EndpointRecord, crate::log::LogError>,
    ) -> Result<Option<Arc<EndpointRecord>>, crate::log::LogError> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((bytes, record)) = entries.get(&key)
                && bytes.as_slice() == stored
            {
                return Ok(Some(Arc::clone(record)));
            }
        }
        // Decoded (and its secrets opened) outside the lock: the other attempts of every
        // shard look up their endpoints meanwhile. Two attempts that both miss decode
        // twice and the later insert wins; both records are the same.
        let record = Arc::new(decode(stored)?);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= ENDPOINT_CACHE_MAX {
            entries.clear();
        }
        entries.insert(key, (stored.to_vec(), Arc::clone(&record)));
        Ok(Some(record))
    }
}

/// The delivery settings a reload may change.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliverySettings {
    pub schedule: RetrySchedule,
    pub attempt_timeout: Duration,
    pub disable_after_ms: u64,
    pub header_style: HeaderStyle,
    pub in_flight_max: usize,
}

/// How an attempt ended, for the shard.
#[derive(Debug)]
pub struct Finished {
    /// The attempt's number in its shard.
    pub attempt: u64,
    pub job: DueJob,
    /// The step decided; `None` if nothing was attempted or its record could not be
    /// queued.
    pub step: Option<Step>,
    /// The receiver asked the whole lane to wait until this time.
    pub pause_until_ms: Option<u64>,
    /// The endpoint's current lane settings, if it still exists.
    pub settings: Option<LaneSettings>,
}

impl DeliverySettings {
    /// The lane settings of `endpoint` under these delivery settings.
    pub fn lane(&self, endpoint: &EndpointRecord) -> LaneSettings {
        LaneSettings {
            fifo: endpoint.fifo,
            in_flight_max: self.in_flight_max,
            rate_per_sec: endpoint.throttle_rate,
        }
    }
}

/// Runs attempt number `number` of `job` (`random` in [0, 1) is the retry jitter's draw),
/// reports it on `answered` as soon as the receiver has answered, then waits for the
/// attempt's record. Ends with the (endpoint, seq) the shard may then stop holding:
/// every delivery but one waiting for a retry, whose timer (or FIFO lane) holds it. A
/// FIFO lane's attempt waits for its record before it reports, so that its next delivery
/// never goes out before this one's outcome is durable.
pub async fn run(
    ctx: Arc<AttemptCtx>,
    number: u64,
    job: DueJob,
    random: f64,
    answered: mpsc::Sender<Finished>,
) -> Option<(EndpointKey, Seq)> {
    let (finished, recording) = attempt(ctx, number, job, random).await;
    let release =
        (!matches!(finished.step, Some(Step::RetryAt(_)))).then_some((job.endpoint_key, job.seq));
    // The shard outlives its attempts; if it is gone there is nobody left to tell.
    let _ = answered.send(finished).await;
    if let Some(recording) = recording
        && let Err(error) = recording.durable().await
    {
        report_unrecorded(&error);
    }
    release
}

/// The attempt itself: what to tell the shard, and the record still on its way to disk.
async fn attempt(
    ctx: Arc<AttemptCtx>,
    number: u64,
    job: DueJob,
    random: f64,
) -> (Finished, Option<QueuedWrite>) {
    let mut finished = Finished {
        attempt: number,
        job,
        step: None,
        pause_until_ms: None,
        settings: None,
    };
    let loaded = ctx.log.read(|rtxn, dbs| {
        let stored = tables::endpoint_stored(rtxn, dbs, job.endpoint_key)?;
        let endpoint = ctx.endpoints.get(job.endpoint_key, stored, |stored| {
            tables::decode_endpoint(dbs, stored)
        })?;
        let delivery = crate::log::deliveries::get(rtxn, dbs, job.endpoint_key, job.seq)?;
        let message = tables::message_by_seq(rtxn, dbs, job.seq)?;
        Ok((endpoint, delivery, message))
    });
    let (endpoint, delivery, message) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!(%error, "Cannot read a due delivery; it stays due.");
            return (finished, None);
        }
    };
    // One snapshot for the whole attempt: a reload never gives it half of each config.
    let settings = ctx.settings.get();
    let now_ms = ctx.clock.now_ms();
    // Settled already, or waiting for a later retry: a duplicate or stale hand-off.
    let Some(delivery) = delivery
        .filter(|d| d.state == DeliveryState::Pending && d.next_due_ms <= now_ms + DUE_SLACK_MS)
    else {
        return (finished, None);
    };
    finished.settings = endpoint.as_ref().map(|e| settings.lane(e));
    let (Some(endpoint), Some(mut message)) = (endpoint.filter(|e| !e.disabled), message) else {
        skip(&ctx, job).await;
        return (finished, None);
    };
    let Some(payload) = message.payload.take() else {
        skip(&ctx, job).await; // The payload was expunged before it could be delivered.
        return (finished, None);
    };
    let built = build_request(settings.header_style, &endpoint, &message, payload, now_ms);
    let result = match built {
        Ok(request) => {
            ctx.transport
                .attempt(request, settings.attempt_timeout)
                .await
        }
        Err(detail) => AttemptResult {
            outcome: Outcome::Failed(TransportFailure::Connect),
            duration_ms: 0,
            response: detail,
        },
    };
    let attempt = Attempt {
        delivery,
        result,
        now_ms,
        random,
    };
    record(&ctx, &settings, &endpoint, &message, attempt, finished).await
}

/// An attempt that was made: the delivery row it was made for, what came of it, when it
/// started, and the retry jitter's draw.
struct Attempt {
    delivery: DeliveryRecord,
    result: AttemptResult,
    now_ms: u64,
    random: f64,
}

/// Decides the next step of an attempt that was made and queues the record of both.
async fn record(
    ctx: &AttemptCtx,
    settings: &DeliverySettings,
    endpoint: &EndpointRecord,
    message: &MessageRecord,
    attempt: Attempt,
    mut finished: Finished,
) -> (Finished, Option<QueuedWrite>) {
    let Attempt {
        delivery,
        result,
        now_ms,
        random,
    } = attempt;
    let job = finished.job;
    let done_ms = ctx.clock.now_ms();
    let attempts_made = delivery.attempts.saturating_add(1);
    let step = match result.outcome {
        Outcome::Success { .. } => Step::Succeeded,
        Outcome::Gone => Step::Gone,
        _ if delivery.manual => Step::Failed,
        outcome => match settings
            .schedule
            .after_failure(attempts_made, outcome, done_ms, random)
        {
            Next::RetryAt(at) => Step::RetryAt(at),
            Next::Exhausted => Step::Exhausted,
        },
    };
    count_attempt(&result, step, delivery.manual, message, done_ms);
    if let Outcome::Throttled { retry_after_ms, .. } = result.outcome {
        let wait = retry_after_ms
            .unwrap_or(THROTTLE_PAUSE_DEFAULT_MS)
            .min(settings.schedule.retry_after_max_ms);
        finished.pause_until_ms = Some(done_ms + wait);
    }
    let record = AttemptRecord {
        id: ids::new_id(IdKind::Attempt, now_ms),
        msg_id: message.id.clone(),
        endpoint_id: endpoint.id.clone(),
        seq: job.seq.0,
        endpoint_key: endpoint.key,
        app_key: endpoint.app_key,
        created_ms: now_ms,
        url: endpoint.url.clone(),
        status_code: result.outcome.status_code(),
        outcome: result.outcome.label().to_owned(),
        success: result.outcome.is_success(),
        duration_ms: result.duration_ms,
        response: result.response,
        trigger: if delivery.manual {
            Trigger::Manual
        } else {
            Trigger::Scheduled
        },
    };
    let op = record_op(&record, step, settings.disable_after_ms);
    let queued = ctx.log.submit_queued(Envelope::new(op, done_ms));
    match queued {
        Ok(recording) if endpoint.fifo => match recording.durable().await {
            Ok(_) => finished.step = Some(step),
            Err(error) => report_unrecorded(&error),
        },
        Ok(recording) => {
            finished.step = Some(step);
            return (finished, Some(recording));
        }
        Err(error) => report_unrecorded(&error),
    }
    (finished, None)
}

/// The op that records an attempt, its record encoded here, not on the single writer
/// thread.
fn record_op(record: &AttemptRecord, step: Step, disable_after_ms: u64) -> Op {
    Op::RecordAttempt {
        attempt: AttemptRow {
            id: record.id.clone(),
            seq: record.seq,
            endpoint_key: record.endpoint_key,
            success: record.success,
            stored: crate::log::schema::encode_json(record),
        },
        step,
        disable_after_ms,
    }
}

/// An attempt whose record did not become durable: its delivery stays due in the log, and
/// a later scan attempts it again (at least once).
pub fn report_unrecorded(error: &crate::log::LogError) {
    tracing::error!(%error, "Cannot record an attempt; the delivery stays due.");
}

/// Exports one attempt: outcome, duration against the 5 s budget, the step it led to, and
/// for a scheduled delivery's success, its latency from acceptance.
fn count_attempt(
    result: &AttemptResult,
    step: Step,
    manual: bool,
    message: &MessageRecord,
    done_ms: u64,
) {
    use crate::telemetry::{self, name};
    let seconds = result.duration_ms as f64 / 1000.0;
    telemetry::attempt_counted(
        result.outcome.label(),
        telemetry::status_class(result.outcome.status_code()),
    );
    if seconds > telemetry::ATTEMPT_BUDGET_SECONDS {
        metrics::counter!(name::ATTEMPTS_OVER_BUDGET).increment(1);
    }
    let first_success_latency = match step {
        Step::Succeeded if !manual => {
            let latency_ms = done_ms.saturating_sub(message.created_ms);
            Some(latency_ms as f64 / 1000.0)
        }
        Step::RetryAt(_) => {
            metrics::counter!(name::RETRIES_SCHEDULED).increment(1);
            None
        }
        Step::Exhausted => {
            metrics::counter!(name::DELIVERIES_EXHAUSTED).increment(1);
            None
        }
        _ => None,
    };
    telemetry::attempt_timed(seconds, first_success_latency);
}

async fn skip(ctx: &AttemptCtx, job: DueJob) {
    let op = Op::SkipDelivery {
        endpoint_key: job.endpoint_key.0,
        seq: job.seq.0,
    };
    let result = ctx.log.submit(Envelope::new(op, ctx.clock.now_ms())).await;
    match result {
        Ok(_) => metrics::counter!(crate::telemetry::name::DELIVERIES_SKIPPED).increment(1),
        Err(error) => tracing::error!(%error, "Cannot record a skipped delivery; it stays due."),
    }
}

/// The signed POST: the exact stored payload, Standard Webhooks headers (per the
/// configured style), the endpoint's custom headers.
fn build_request(
    header_style: HeaderStyle,
    endpoint: &EndpointRecord,
    message: &MessageRecord,
    payload: Vec<u8>,
    now_ms: u64,
) -> Result<Request<Full<Bytes>>, String> {
    let timestamp = now_ms / 1000;
    let keys = std::iter::once(endpoint.secret.as_slice()).chain(
        endpoint
            .old_secrets
            .iter()
            .filter(|old| old.expires_ms > now_ms)
            .map(|old| old.key.as_slice()),
    );
    let signature = match &endpoint.signing {
        Signing::Hmac => Some(signing::signature_header(
            keys,
            &message.id,
            timestamp,
            &payload,
        )),
        Signing::StaticToken { .. } => None,
    };
    let mut builder = Request::post(endpoint.url.as_str())
        .header(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .header(
            hyper::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
    let styles: &[[&'static str; 3]] = match header_style {
        HeaderStyle::Webhook => &[WEBHOOK_HEADERS],
        HeaderStyle::Svix => &[SVIX_HEADERS],
        HeaderStyle::Both => &[WEBHOOK_HEADERS, SVIX_HEADERS],
    };
    for [id, time, signed] in styles {
        // `from_static`: names known at compile time are neither parsed nor copied.
        builder = builder
            .header(HeaderName::from_static(id), message.id.as_str())
            .header(HeaderName::from_static(time), timestamp);
        if let Some(signature) = &signature {
            builder = builder.header(HeaderName::from_static(signed), signature.as_str());
        }
    }
    if let Signing::StaticToken { header, token } = &endpoint.signing {
        builder = builder.header(header.as_str(), token.as_str());
    }
    for (name, value) in &endpoint.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| format!("cannot build the request: {e}"))
}
