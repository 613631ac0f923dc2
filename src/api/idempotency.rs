//! POST idempotency: the same `idempotency-key` from the same token on the same URI gets
//! the first successful response again, for `IDEMPOTENCY_TTL_MS`.
//!
//! Successful responses are stored by the writer with the op they describe, in the same
//! transaction (see `submit`), so a crash can never leave a change without its
//! remembered response or the reverse. Concurrent duplicates are serialised
//! here: the first claims the key, later ones wait for it to finish and then read what it
//! stored (or, if it failed, try themselves).

use std::future::Future;

use hyper::{HeaderMap, StatusCode};
use tokio::sync::watch;

use super::{ApiError, ApiState, Auth, Reply};
use crate::limits::{IDEMPOTENCY_KEY_LEN_MAX, IDEMPOTENCY_TTL_MS};
use crate::log::ops::{Envelope, Op, Outcome};

/// Hash of (token, key, URI), or `None` when the request carries no key.
pub(super) fn key_hash(
    auth: &Auth,
    headers: &HeaderMap,
    uri: &str,
) -> Result<Option<[u8; 32]>, ApiError> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = key.as_bytes();
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("The idempotency-key header must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} bytes."),
        ));
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&auth.token_hash);
    ctx.update(&(key.len() as u64).to_be_bytes());
    ctx.update(key);
    ctx.update(uri.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(Some(out))
}

/// Removes the in-flight claim when the owner finishes or is cancelled.
struct Claim<'a> {
    state: &'a ApiState,
    key: [u8; 32],
    _done: watch::Sender<()>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .state
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        in_flight.remove(&self.key);
        // `_done` drops after this, waking every waiter.
    }
}

/// Serves `handler` at most once per key: returns the remembered reply if there is one.
pub(super) async fn serve_once(
    state: &ApiState,
    key: [u8; 32],
    handler: impl Future<Output = Result<Reply, ApiError>>,
) -> Result<Reply, ApiError> {
    loop {
        // Claim first, then look: a previous owner releases the key only after its reply
        // is committed (and findable), so one look under the claim sees it. A new key,
        // the common case, costs one look, not two.
        let claimed = {
            let mut in_flight = state
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match in_flight.get(&key) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(());
                    in_flight.insert(key, rx);
                    Ok(tx)
                }
            }
        };
        match claimed {
            Ok(done) => {
                let _claim = Claim {
                    state,
                    key,
                    _done: done,
                };
                if let Some(reply) = remembered(state, &key)? {
                    return Ok(reply);
                }
                return handler.await;
            }
            // Returns once the owner's sender is dropped; then claim and look again.
            Err(mut rx) => while rx.changed().await.is_ok() {},
        }
    }
}

fn remembered(state: &ApiState, key: &[u8; 32]) -> Result<Option<Reply>, ApiError> {
    let now_ms = state.clock.now_ms();
    let record = state
        .log
        .read(|rtxn, dbs| crate::log::tables::idempotency(rtxn, dbs, key))?;
    Ok(record
        .filter(|r| r.created_ms.saturating_add(IDEMPOTENCY_TTL_MS) > now_ms)
        .map(|r| Reply {
            status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
            body: r.body,
        }))
}

/// Submits `op` built now, remembering its reply under the request's idempotency key
/// (stored by the writer in the same transaction as the change), and turns a refusal into
/// its HTTP error.
pub(super) async fn submit(
    state: &ApiState,
    idempotency: Option<[u8; 32]>,
    op: Op,
) -> Result<Outcome, ApiError> {
    let envelope = Envelope::new(op, state.clock.now_ms()).remembered(idempotency);
    match state.log.submit(envelope).await? {
        Outcome::Refused(refusal) => Err(ApiError::from(refusal)),
        outcome => Ok(outcome),
    }
}

/// `submit`, then the outcome's reply.
pub(super) async fn submit_reply(
    state: &ApiState,
    idempotency: Option<[u8; 32]>,
    op: Op,
) -> Result<Reply, ApiError> {
    super::reply_of(&submit(state, idempotency, op).await?)
}
