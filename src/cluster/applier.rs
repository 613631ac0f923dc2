//! The applier: reads the op stream in order, from just after this node's `applied_seq`,
//! and feeds every message (a batch of ops, `batch.rs`) to the node's writer thread,
//! which applies its ops and stores its sequence as `applied_seq` in the same
//! transaction.
//!
//! Order is everything: the applier never skips a sequence. A gap (a consumer that lost
//! messages) or a consumer error makes it start a new consumer right after the last op it
//! fed; a full writer queue makes it wait. An op this build cannot decode stops applying
//! (the node falls behind and says so) rather than diverging from the others.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::Waiters;
use super::batch;
use crate::log::{Log, LogError, StreamMessage};
use crate::telemetry;

/// The pause before a new consumer after an error (a NATS election takes about 5 s).
const RESTART_PAUSE: Duration = Duration::from_millis(250);
/// How long the consumer may be silent before the applier compares it with the stream.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// The pause before the writer's full queue is tried again.
const FEED_PAUSE: Duration = Duration::from_millis(1);

/// Applies the stream until `stop` turns true.
pub async fn run(stream: Stream, log: Log, waiters: Waiters, mut stop: watch::Receiver<bool>) {
    let mut last_fed = log.applied_seq();
    while !*stop.borrow() {
        let result = tokio::select! {
            result = consume(&stream, &log, &waiters, &mut last_fed) => result,
            _ = stop.changed() => break,
        };
        if let Err(error) = result {
            tracing::warn!(%error, last_fed, "The applier's consumer stopped; starting a new one.");
        }
        tokio::select! {
            () = tokio::time::sleep(RESTART_PAUSE) => {}
            _ = stop.changed() => break,
        }
    }
}

/// One ordered consumer from `last_fed + 1`, fed until it fails or skips.
async fn consume(
    stream: &Stream,
    log: &Log,
    waiters: &Waiters,
    last_fed: &mut u64,
) -> Result<(), String> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: *last_fed + 1,
            },
            ..pull::OrderedConfig::default()
        })
        .await
        .map_err(|e| format!("create consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("consume: {e}"))?;
    loop {
        let next = match tokio::time::timeout(IDLE_CHECK, messages.next()).await {
            Ok(next) => next,
            Err(_) => {
                // Quiet for a while. If the stream holds more than this node has fed,
                // the consumer is stuck (its server died: an ordered consumer lives on
                // one server) and would notice only after missed heartbeats: start a
                // new one now. Measured: without this, ~30 s after a leader's kill.
                let info = tokio::time::timeout(IDLE_CHECK * 2, stream.get_info()).await;
                match info {
                    Ok(Ok(info)) if info.state.last_sequence > *last_fed => {
                        return Err("the consumer fell silent behind the stream".to_owned());
                    }
                    _ => continue,
                }
            }
        };
        let Some(message) = next else { break };
        let message = message.map_err(|e| format!("read: {e}"))?;
        let info = message.info().map_err(|e| format!("message info: {e}"))?;
        let seq = info.stream_sequence;
        if seq <= *last_fed {
            continue;
        }
        if seq != *last_fed + 1 {
            return Err(format!("gap: expected {}, got {seq}", *last_fed + 1));
        }
        let message_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .and_then(|id| batch::id_from_hex(id.as_str()));
        let ops = match batch::decode(&message.payload, message_id) {
            Ok(ops) => ops,
            Err(error) => {
                // Skipping it would diverge this node; applying is impossible. Stay
                // here (the lag shows it) until a build that reads it runs.
                tracing::error!(%error, seq, "An op of the stream cannot be decoded; applying stops here.");
                return Err(format!("undecodable op at {seq}"));
            }
        };
        let ops = {
            let mut waiting = waiters.lock().map_err(|_| "waiters poisoned".to_owned())?;
            ops.into_iter()
                .map(|op| (op.envelope, waiting.remove(&op.id)))
                .collect()
        };
        feed(log, StreamMessage { seq, ops }).await?;
        *last_fed = seq;
        metrics::gauge!(telemetry::name::CLUSTER_APPLIER_LAG).set(info.pending as f64);
    }
    Err("the consumer ended".to_owned())
}

/// Hands `message` to the writer, waiting while its queue is full: never skipped.
async fn feed(log: &Log, mut message: StreamMessage) -> Result<(), String> {
    loop {
        match log.feed(message) {
            Ok(()) => return Ok(()),
            Err(refused) => match *refused {
                (back, LogError::Busy) => {
                    message = back;
                    tokio::time::sleep(FEED_PAUSE).await;
                }
                (_, error) => return Err(format!("writer: {error}")),
            },
        }
    }
}
