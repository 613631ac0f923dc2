//! Applying ops: the only code that changes the tables, run by the writer thread.
//!
//! `apply` is a pure function of the state in the transaction and the op: it reads, checks
//! everything that can make the op refuse (returning `Outcome::Refused` before its first
//! put), then writes. An `Err(LogError)` is a malfunction and aborts the whole batch.
//! Secrets arrive in their stored form and are written as they are, so applying never
//! seals (sealing draws a random nonce) and never opens.

use super::ops::{
    AppChanges, AppFields, EndpointChanges, EndpointFields, EventTypeChanges, EventTypeFields,
    MessageApp, MessageView, NewMessage, Op, Outcome, Refusal, SourceFields, merge_header,
};
use super::schema::{
    self, AppRecord, EndpointRecord, EventTypeRecord, MessageRecord, OldSecret, PollerTokenRecord,
    PortalGrant, PortalKind, ReplayFilter, SourceErrorRecord, SourceRecord, TaskKind, TokenRecord,
    TokenScope,
};
use super::tasks::{self as task_log, NotCreated, TaskSpec};
use super::{LogError, WriteCtx, operational, purge, retention, tables};
use crate::limits::{
    APPS_MAX, DAY_MS, ENDPOINT_HEADERS_MAX, ENDPOINTS_PER_APP_MAX, OLD_SECRETS_MAX,
    RETENTION_DAYS_DEFAULT, SOURCE_OLD_TOKENS_MAX, TOKENS_MAX,
};

/// The event type every endpoint can be sent an example of, and its payload.
const PING_EVENT_TYPE: &str = "svix.ping";
const PING_PAYLOAD: &[u8] = br#"{"success":true}"#;

fn refused(refusal: Refusal) -> Result<Outcome, LogError> {
    Ok(Outcome::Refused(refusal))
}

/// Applies one op in the writer's transaction.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per op: the dispatch reads as the list of every op"
)]
pub(super) fn apply(w: &mut WriteCtx<'_, '_>, op: Op) -> Result<Outcome, LogError> {
    match op {
        Op::CreateApp {
            id,
            fields,
            get_if_exists,
        } => create_app(w, id, fields, get_if_exists),
        Op::PutApp {
            reference,
            id,
            fields,
        } => put_app(w, &reference, id, fields),
        Op::PatchApp { reference, changes } => patch_app(w, &reference, changes),
        Op::DeleteApp { reference } => delete_app(w, &reference),
        Op::CreateEventType { name, fields } => create_event_type(w, name, fields),
        Op::PutEventType { name, fields } => put_event_type(w, name, fields),
        Op::PatchEventType { name, changes } => patch_event_type(w, &name, changes),
        Op::DeleteEventType { name, expunge } => delete_event_type(w, &name, expunge),
        Op::CreateEndpoint {
            app_key,
            id,
            fields,
        } => create_endpoint(w, app_key, id, *fields),
        Op::CreateOperationalEndpoint { app_id, id, fields } => {
            let app_key = match operational::app_key(w.wtxn, w.dbs)? {
                Some(key) => key,
                None => {
                    if !room_for_an_app(w)? {
                        return refused(Refusal::AppsLimit);
                    }
                    // A new application: the endpoint create below cannot refuse.
                    let mut app = new_app(
                        w,
                        app_id,
                        AppFields {
                            uid: None,
                            name: "operational webhooks".to_owned(),
                            throttle_rate: None,
                            metadata: std::collections::BTreeMap::new(),
                        },
                    );
                    app.internal = true;
                    tables::put_app(w.wtxn, w.dbs, &app, None)?;
                    operational::set_app_key(w, app.key)?;
                    app.key
                }
            };
            create_endpoint(w, app_key, id, *fields)
        }
        Op::UpdateEndpoint {
            app_key,
            endpoint,
            changes,
        } => update_endpoint(w, app_key, &endpoint, *changes),
        Op::DeleteEndpoint { app_key, endpoint } => delete_endpoint(w, app_key, &endpoint),
        Op::RotateSecret {
            app_key,
            endpoint,
            new_key,
            grace_ms,
        } => rotate_secret(w, app_key, &endpoint, new_key, grace_ms),
        Op::SetHeaders {
            app_key,
            endpoint,
            replace,
            delete,
            set,
        } => set_headers(w, app_key, &endpoint, replace, &delete, set),
        Op::CreateMessage {
            app,
            message,
            with_content,
        } => create_message(w, app, *message, with_content),
        Op::SendExample {
            app_key,
            endpoint,
            id,
            event_type,
            example_index,
        } => send_example(w, app_key, &endpoint, id, event_type, example_index),
        Op::ExpungeContent { app_key, message } => expunge_content(w, app_key, &message),
        Op::ExpungeAttemptContent {
            app_key,
            message,
            attempt,
        } => expunge_attempt_content(w, app_key, &message, &attempt),
        Op::Resend {
            app_key,
            message,
            endpoint,
        } => resend(w, app_key, &message, &endpoint),
        Op::CreateTask {
            app_key,
            endpoint,
            id,
            kind,
            since_ms,
            until_ms,
        } => {
            let window = (since_ms, until_ms);
            create_task(w, app_key, &endpoint, id, kind, window, None)
        }
        Op::CreateBulkReplay {
            app_key,
            endpoint,
            id,
            since_ms,
            until_ms,
            filter,
        } => {
            let (kind, window) = (TaskKind::BulkReplay, (since_ms, until_ms));
            create_task(w, app_key, &endpoint, id, kind, window, Some(*filter))
        }
        Op::AdvanceTask { task_key } => Ok(Outcome::TaskAdvanced(
            task_log::advance(w, task_key)?.map(Box::new),
        )),
        Op::RecordAttempt {
            attempt,
            step,
            disable_after_ms,
        } => Ok(Outcome::AttemptRecorded {
            attempt_key: tables::record_attempt(w, &attempt, step, disable_after_ms)?,
        }),
        Op::SkipDelivery { endpoint_key, seq } => {
            tables::skip_delivery(w, endpoint_key, seq)?;
            Ok(Outcome::Done)
        }
        Op::CreateToken {
            hash,
            scope,
            name,
            expires_ms,
        } => create_token(w, hash, scope, name, expires_ms),
        Op::RevokeToken { hash } => revoke_token(w, hash, false),
        Op::TouchToken { hash } => {
            if let Some(mut record) = tables::token(w.wtxn, w.dbs, &hash)?
                && record.last_used_ms.is_none_or(|last| last < w.now_ms)
            {
                record.last_used_ms = Some(w.now_ms);
                tables::put_token(w.wtxn, w.dbs, &hash, &record)?;
            }
            Ok(Outcome::Done)
        }
        Op::RetentionSweep {
            delete_before_ms,
            payload_cursor,
            rows_max,
        } => Ok(Outcome::Swept(retention::sweep(
            w,
            delete_before_ms,
            payload_cursor,
            rows_max as usize,
        )?)),
        Op::CreatePortalAccess {
            app_key,
            grant,
            token_hash,
            token_expires_ms,
            code_hash,
            code_expires_ms,
        } => create_portal_access(
            w,
            app_key,
            *grant,
            (token_hash, token_expires_ms),
            (code_hash, code_expires_ms),
        ),
        Op::OpenPortalSession {
            code_hash,
            session_hash,
            session_expires_ms,
        } => open_portal_session(w, code_hash, session_hash, session_expires_ms),
        Op::CreateOperatorAccess {
            grant,
            code_hash,
            code_expires_ms,
        } => create_operator_access(w, *grant, code_hash, code_expires_ms),
        Op::ExpirePortalAccess {
            app_key,
            link,
            session_ids,
            expires_ms,
        } => {
            for (hash, mut record) in tables::portal_tokens(w.wtxn, w.dbs)? {
                let Some(grant) = &record.portal else {
                    continue;
                };
                let chosen = record.scope == TokenScope::App(app_key)
                    && link.as_ref().is_none_or(|l| *l == grant.link)
                    && session_ids.as_ref().is_none_or(|ids| {
                        grant.session_id.as_ref().is_some_and(|s| ids.contains(s))
                    });
                if !chosen {
                    continue;
                }
                if expires_ms <= w.now_ms {
                    tables::delete_token(w.wtxn, w.dbs, &hash)?;
                } else if record.expires_ms.is_none_or(|e| e > expires_ms) {
                    record.expires_ms = Some(expires_ms);
                    tables::put_token(w.wtxn, w.dbs, &hash, &record)?;
                }
            }
            Ok(Outcome::Done)
        }
        Op::SetEndpointsPerAppMax { max } => {
            // The config's range, again: the op may come from another node's stream.
            let max = max.clamp(1, ENDPOINTS_PER_APP_MAX);
            tables::put_endpoints_per_app_max(w.wtxn, w.dbs, max)?;
            w.state.endpoints_per_app_max = max;
            Ok(Outcome::Done)
        }
        Op::PurgeDeletedApps { rows_max } => {
            Ok(Outcome::Purged(purge::purge(w, rows_max as usize)?))
        }
        Op::ExpireIdempotency { after, rows_max } => {
            let (resume, deleted) =
                tables::expire_idempotency_scan(w, after.as_deref(), rows_max as usize)?;
            Ok(Outcome::IdempotencyExpired { resume, deleted })
        }
        Op::ExpireReplies { rows_max } => Ok(Outcome::RepliesExpired(tables::expire_replies(
            w,
            rows_max as usize,
        )?)),
        Op::RevokeApiToken { hash } => revoke_token(w, hash, true),
        Op::SetConsumer {
            app_key,
            endpoint,
            consumer,
            seq,
        } => {
            let endpoint = match find_endpoint(w, app_key, &endpoint)? {
                Ok(found) => found,
                Err(refusal) => return refused(refusal),
            };
            if tables::put_consumer(w.wtxn, w.dbs, endpoint.key, &consumer, seq)? {
                Ok(Outcome::ConsumerSet {
                    endpoint: Box::new(endpoint),
                    seq,
                })
            } else {
                refused(Refusal::ConsumersLimit)
            }
        }
        Op::SetPollerToken {
            app_key,
            endpoint,
            token,
            keep_existing,
            old_grace_ms,
        } => set_poller_token(w, app_key, &endpoint, *token, keep_existing, old_grace_ms),
        Op::PutSource {
            reference,
            app_id,
            source,
        } => put_source(w, reference.as_deref(), app_id, *source),
        Op::DeleteSource { reference } => {
            let Some(source) = tables::source_by_ref(w.wtxn, w.dbs, &reference)? else {
                return refused(Refusal::SourceNotFound);
            };
            tables::delete_source(w.wtxn, w.dbs, &source)?;
            if let Some(app) = tables::app_by_key(w.wtxn, w.dbs, source.key)? {
                tables::delete_app(w.wtxn, w.dbs, &app)?;
                w.state.endpoints.remove_app(app.key);
            }
            Ok(Outcome::Done)
        }
        Op::RotateSourceToken {
            reference,
            token,
            grace_ms,
        } => {
            let (token, token_hash) = *token;
            let Some(previous) = tables::source_by_ref(w.wtxn, w.dbs, &reference)? else {
                return refused(Refusal::SourceNotFound);
            };
            let now_ms = w.now_ms;
            let mut source = previous.clone();
            source.old_tokens.retain(|(_, until)| *until > now_ms);
            if grace_ms > 0 {
                source
                    .old_tokens
                    .push((previous.token_hash, now_ms + grace_ms));
            }
            // The oldest replaced tokens stop first when too many are in their grace.
            while source.old_tokens.len() > SOURCE_OLD_TOKENS_MAX {
                source.old_tokens.remove(0);
            }
            source.token = token;
            source.token_hash = token_hash;
            source.updated_ms = now_ms;
            tables::put_source(w.wtxn, w.dbs, &source, Some(&previous))?;
            Ok(Outcome::Source {
                source: Box::new(source),
                created: false,
            })
        }
        Op::RecordSourceError { source_key, error } => record_source_error(w, source_key, *error),
        Op::ReceiveMessage {
            source_key,
            message,
            headers,
        } => {
            if tables::source_by_key(w.wtxn, w.dbs, source_key)?.is_none()
                || !tables::app_exists(w.wtxn, w.dbs, source_key)?
            {
                return refused(Refusal::SourceNotFound);
            }
            let record = MessageRecord {
                app_key: source_key,
                created_ms: w.now_ms,
                payload_expires_ms: w.now_ms + u64::from(message.retention_days) * DAY_MS,
                id: message.id,
                event_type: message.event_type,
                event_id: None,
                channels: None,
                payload: Some(message.payload),
                headers: Some(headers),
                example: false,
                tags: None,
                deliver_at_ms: None,
            };
            let (seq, _) = tables::append_message(w, &record, tables::Fanout::Matching)?;
            Ok(Outcome::Message {
                message: Box::new(record),
                seq,
                view: MessageView::Accepted {
                    with_content: false,
                },
            })
        }
    }
}

/// `Done`; `AppNotFound`; `TokensLimit` when the table is full even after dropping the
/// expired portal credentials (which nothing else removes).
fn create_portal_access(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    grant: PortalGrant,
    (token_hash, token_expires_ms): ([u8; 32], u64),
    (code_hash, code_expires_ms): ([u8; 32], u64),
) -> Result<Outcome, LogError> {
    if tables::app_by_key(w.wtxn, w.dbs, app_key)?.is_none() {
        return refused(Refusal::AppNotFound);
    }
    if !room_for_tokens(w, 2)? {
        return refused(Refusal::TokensLimit);
    }
    for (hash, expires_ms, kind) in [
        (token_hash, token_expires_ms, PortalKind::Bearer),
        (
            code_hash,
            code_expires_ms.min(token_expires_ms),
            PortalKind::LoginCode,
        ),
    ] {
        let record = TokenRecord {
            scope: TokenScope::App(app_key),
            created_ms: w.now_ms,
            name: String::new(),
            expires_ms: Some(expires_ms),
            last_used_ms: None,
            portal: Some(PortalGrant {
                kind,
                ..grant.clone()
            }),
        };
        tables::put_token(w.wtxn, w.dbs, &hash, &record)?;
    }
    Ok(Outcome::Done)
}

/// Whether `rows` more token rows fit in the table, once expired portal rows are gone.
fn room_for_tokens(w: &mut WriteCtx<'_, '_>, rows: u64) -> Result<bool, LogError> {
    if w.dbs.tokens.len(w.wtxn)? + rows > TOKENS_MAX {
        for (hash, record) in tables::portal_tokens(w.wtxn, w.dbs)? {
            if !record.is_valid_at(w.now_ms) {
                tables::delete_token(w.wtxn, w.dbs, &hash)?;
            }
        }
    }
    Ok(w.dbs.tokens.len(w.wtxn)? + rows <= TOKENS_MAX)
}

/// An operator's login code: org-scoped, every capability. `Done`, or `TokensLimit`.
fn create_operator_access(
    w: &mut WriteCtx<'_, '_>,
    grant: PortalGrant,
    code_hash: [u8; 32],
    code_expires_ms: u64,
) -> Result<Outcome, LogError> {
    if !room_for_tokens(w, 1)? {
        return refused(Refusal::TokensLimit);
    }
    let record = TokenRecord {
        scope: TokenScope::Org,
        created_ms: w.now_ms,
        name: String::new(),
        expires_ms: Some(code_expires_ms),
        last_used_ms: None,
        portal: Some(PortalGrant {
            kind: PortalKind::LoginCode,
            ..grant
        }),
    };
    tables::put_token(w.wtxn, w.dbs, &code_hash, &record)?;
    Ok(Outcome::Done)
}

/// Deletes the token `hash` (`TokenNotFound` if there is none) and, with
/// `with_operator_sessions` and an org API token, the operator sessions and login codes
/// opened with it (their link begins with `schema::operator_link_prefix`).
fn revoke_token(
    w: &mut WriteCtx<'_, '_>,
    hash: [u8; 32],
    with_operator_sessions: bool,
) -> Result<Outcome, LogError> {
    let Some(record) = tables::token(w.wtxn, w.dbs, &hash)? else {
        return refused(Refusal::TokenNotFound);
    };
    tables::delete_token(w.wtxn, w.dbs, &hash)?;
    if with_operator_sessions && record.scope == TokenScope::Org && record.portal.is_none() {
        let opened_by = schema::operator_link_prefix(&hash);
        // At most `TOKENS_MAX` rows, and only on a revocation.
        for (credential, row) in tables::portal_tokens(w.wtxn, w.dbs)? {
            if row.portal.is_some_and(|g| g.link.starts_with(&opened_by)) {
                tables::delete_token(w.wtxn, w.dbs, &credential)?;
            }
        }
    }
    Ok(Outcome::Done)
}

/// Consumes a login code into a session: `Done`, or `LoginCodeInvalid`.
fn open_portal_session(
    w: &mut WriteCtx<'_, '_>,
    code_hash: [u8; 32],
    session_hash: [u8; 32],
    session_expires_ms: u64,
) -> Result<Outcome, LogError> {
    let Some(code) = tables::token(w.wtxn, w.dbs, &code_hash)? else {
        return refused(Refusal::LoginCodeInvalid);
    };
    let Some(grant) = code
        .portal
        .clone()
        .filter(|g| g.kind == PortalKind::LoginCode)
    else {
        return refused(Refusal::LoginCodeInvalid);
    };
    tables::delete_token(w.wtxn, w.dbs, &code_hash)?;
    if !code.is_valid_at(w.now_ms) {
        // An expired code goes too; it was never going to work again.
        return refused(Refusal::LoginCodeInvalid);
    }
    // The session ends no later than the link's bearer token (a code's expiry is capped
    // by it when the link is made, and the token's is the grant's outer bound). An
    // operator's link has no bearer token: its session lives its own lifetime.
    let token_bound = if code.scope == TokenScope::Org {
        Some(session_expires_ms)
    } else {
        tables::portal_tokens(w.wtxn, w.dbs)?
            .into_iter()
            .filter_map(|(_, r)| {
                r.portal
                    .as_ref()
                    .filter(|g| g.kind == PortalKind::Bearer && g.link == grant.link)
                    .and(r.expires_ms)
            })
            .next()
    };
    let Some(token_bound) = token_bound else {
        // The link was expired (expire-all, logout) after the code was made.
        return refused(Refusal::LoginCodeInvalid);
    };
    let record = TokenRecord {
        scope: code.scope,
        created_ms: w.now_ms,
        name: String::new(),
        expires_ms: Some(session_expires_ms.min(token_bound)),
        last_used_ms: None,
        portal: Some(PortalGrant {
            kind: PortalKind::Session,
            ..grant
        }),
    };
    tables::put_token(w.wtxn, w.dbs, &session_hash, &record)?;
    Ok(Outcome::Done)
}

/// `Done`, or `TokensLimit`.
fn create_token(
    w: &mut WriteCtx<'_, '_>,
    hash: [u8; 32],
    scope: TokenScope,
    name: String,
    expires_ms: Option<u64>,
) -> Result<Outcome, LogError> {
    if tables::token(w.wtxn, w.dbs, &hash)?.is_none() && w.dbs.tokens.len(w.wtxn)? >= TOKENS_MAX {
        return refused(Refusal::TokensLimit);
    }
    let record = TokenRecord {
        scope,
        created_ms: w.now_ms,
        name,
        expires_ms,
        last_used_ms: None,
        portal: None,
    };
    tables::put_token(w.wtxn, w.dbs, &hash, &record)?;
    Ok(Outcome::Done)
}

// === polling ===

fn set_poller_token(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    reference: &str,
    token: PollerTokenRecord,
    keep_existing: bool,
    old_grace_ms: u64,
) -> Result<Outcome, LogError> {
    let endpoint = match find_endpoint(w, app_key, reference)? {
        Ok(found) => found,
        Err(refusal) => return refused(refusal),
    };
    let previous = tables::poller_token(w.wtxn, w.dbs, endpoint.key)?;
    if let Some(previous) = previous {
        if keep_existing {
            return Ok(Outcome::PollerToken(previous));
        }
        if old_grace_ms == 0 {
            w.dbs.tokens.delete(w.wtxn, &previous.hash)?;
        } else {
            let old = TokenRecord {
                scope: TokenScope::Poller {
                    app: app_key,
                    endpoint: endpoint.key,
                },
                created_ms: previous.created_ms,
                name: String::new(),
                expires_ms: Some(w.now_ms + old_grace_ms),
                last_used_ms: None,
                portal: None,
            };
            tables::put_token(w.wtxn, w.dbs, &previous.hash, &old)?;
        }
    }
    let token = PollerTokenRecord {
        created_ms: w.now_ms,
        ..token
    };
    let record = TokenRecord {
        scope: TokenScope::Poller {
            app: app_key,
            endpoint: endpoint.key,
        },
        created_ms: w.now_ms,
        name: String::new(),
        expires_ms: None,
        last_used_ms: None,
        portal: None,
    };
    tables::put_token(w.wtxn, w.dbs, &token.hash, &record)?;
    tables::put_poller_token(w.wtxn, w.dbs, endpoint.key, &token)?;
    Ok(Outcome::PollerToken(token))
}

// === ingest sources ===

/// Creates (no `reference`, or a PUT of a source that does not exist) or replaces a source.
fn put_source(
    w: &mut WriteCtx<'_, '_>,
    reference: Option<&str>,
    app_id: String,
    fields: SourceFields,
) -> Result<Outcome, LogError> {
    let existing = match reference {
        Some(reference) => tables::source_by_ref(w.wtxn, w.dbs, reference)?,
        None => None,
    };
    if let Some(uid) = &fields.uid {
        let holder = tables::source_uid_taken(w.wtxn, w.dbs, uid)?;
        if holder.is_some_and(|k| Some(k) != existing.as_ref().map(|e| e.key)) {
            return refused(Refusal::SourceUidTaken);
        }
    }
    if let Some(previous) = existing {
        let source = SourceRecord {
            uid: fields.uid,
            name: fields.name,
            kind: fields.kind,
            config: fields.config,
            metadata: fields.metadata,
            updated_ms: w.now_ms,
            sealed: fields.sealed,
            ..previous.clone()
        };
        tables::put_source(w.wtxn, w.dbs, &source, Some(&previous))?;
        return Ok(Outcome::Source {
            source: Box::new(source),
            created: false,
        });
    }
    if !room_for_an_app(w)? {
        return refused(Refusal::AppsLimit);
    }
    let mut app = new_app(
        w,
        app_id,
        AppFields {
            uid: None,
            name: format!("ingest source {}", fields.id),
            throttle_rate: None,
            metadata: std::collections::BTreeMap::new(),
        },
    );
    app.internal = true;
    tables::put_app(w.wtxn, w.dbs, &app, None)?;
    let source = SourceRecord {
        key: app.key,
        id: fields.id,
        uid: fields.uid,
        name: fields.name,
        kind: fields.kind,
        config: fields.config,
        metadata: fields.metadata,
        token: fields.token,
        token_hash: fields.token_hash,
        old_tokens: Vec::new(),
        next_error: 0,
        created_ms: w.now_ms,
        updated_ms: w.now_ms,
        sealed: fields.sealed,
    };
    tables::put_source(w.wtxn, w.dbs, &source, None)?;
    Ok(Outcome::Source {
        source: Box::new(source),
        created: true,
    })
}

fn record_source_error(
    w: &mut WriteCtx<'_, '_>,
    source_key: u64,
    error: SourceErrorRecord,
) -> Result<Outcome, LogError> {
    let Some(previous) = tables::source_by_key(w.wtxn, w.dbs, source_key)? else {
        return refused(Refusal::SourceNotFound);
    };
    let mut source = previous.clone();
    let n = source.next_error;
    source.next_error += 1;
    let error = SourceErrorRecord {
        created_ms: w.now_ms,
        ..error
    };
    tables::put_source_error(w.wtxn, w.dbs, source_key, n, &error)?;
    tables::put_source(w.wtxn, w.dbs, &source, Some(&previous))?;
    Ok(Outcome::Done)
}

/// Stores a remembered reply with the change it describes.
pub(super) fn remember_reply(
    w: &mut WriteCtx<'_, '_>,
    key: &[u8; 32],
    status: u16,
    body: Vec<u8>,
) -> Result<(), LogError> {
    let record = schema::IdempotencyRecord {
        created_ms: w.now_ms,
        status,
        body,
    };
    tables::remember_reply(w, key, &record)
}

// === applications ===

fn new_app(w: &mut WriteCtx<'_, '_>, id: String, fields: AppFields) -> AppRecord {
    AppRecord {
        key: w.state.take_app_key(),
        id,
        uid: fields.uid,
        name: fields.name,
        throttle_rate: fields.throttle_rate,
        metadata: fields.metadata,
        created_ms: w.now_ms,
        updated_ms: w.now_ms,
        internal: false,
    }
}

fn room_for_an_app(w: &WriteCtx<'_, '_>) -> Result<bool, LogError> {
    Ok(w.dbs.apps.len(w.wtxn)? < APPS_MAX)
}

/// `App` (created, or the existing one with `get_if_exists`) or a refusal.
fn create_app(
    w: &mut WriteCtx<'_, '_>,
    id: String,
    fields: AppFields,
    get_if_exists: bool,
) -> Result<Outcome, LogError> {
    if let Some(uid) = &fields.uid
        && let Some(key) = tables::app_uid_taken(w.wtxn, w.dbs, uid)?
    {
        if !get_if_exists {
            return refused(Refusal::AppUidTaken);
        }
        let existing = tables::app_by_key(w.wtxn, w.dbs, key)?
            .ok_or_else(|| LogError::corrupt("app_ids", "uid points at a missing application"))?;
        return Ok(Outcome::App {
            app: existing,
            created: false,
        });
    }
    if !room_for_an_app(w)? {
        return refused(Refusal::AppsLimit);
    }
    let app = new_app(w, id, fields);
    tables::put_app(w.wtxn, w.dbs, &app, None)?;
    Ok(Outcome::App { app, created: true })
}

fn put_app(
    w: &mut WriteCtx<'_, '_>,
    reference: &str,
    id: String,
    fields: AppFields,
) -> Result<Outcome, LogError> {
    let existing = tables::app_by_ref(w.wtxn, w.dbs, reference)?;
    if existing.as_ref().is_some_and(|a| a.internal) {
        return refused(Refusal::AppNotFound);
    }
    if let Some(uid) = &fields.uid {
        let holder = tables::app_uid_taken(w.wtxn, w.dbs, uid)?;
        if holder.is_some_and(|k| Some(k) != existing.as_ref().map(|e| e.key)) {
            return refused(Refusal::AppUidTaken);
        }
    }
    let Some(previous) = existing else {
        if !room_for_an_app(w)? {
            return refused(Refusal::AppsLimit);
        }
        let app = new_app(w, id, fields);
        tables::put_app(w.wtxn, w.dbs, &app, None)?;
        return Ok(Outcome::App { app, created: true });
    };
    let app = AppRecord {
        uid: fields.uid,
        name: fields.name,
        throttle_rate: fields.throttle_rate,
        metadata: fields.metadata,
        updated_ms: w.now_ms,
        ..previous.clone()
    };
    tables::put_app(w.wtxn, w.dbs, &app, Some(&previous))?;
    Ok(Outcome::App {
        app,
        created: false,
    })
}

fn patch_app(
    w: &mut WriteCtx<'_, '_>,
    reference: &str,
    changes: AppChanges,
) -> Result<Outcome, LogError> {
    let Some(previous) = tables::app_by_ref(w.wtxn, w.dbs, reference)?.filter(|a| !a.internal)
    else {
        return refused(Refusal::AppNotFound);
    };
    if let Some(uid) = changes.uid.as_set() {
        let holder = tables::app_uid_taken(w.wtxn, w.dbs, uid)?;
        if holder.is_some_and(|k| k != previous.key) {
            return refused(Refusal::AppUidTaken);
        }
    }
    let mut app = previous.clone();
    if let Some(name) = changes.name {
        app.name = name;
    }
    changes.uid.apply_to(&mut app.uid);
    changes.throttle_rate.apply_to(&mut app.throttle_rate);
    if let Some(metadata) = changes.metadata {
        app.metadata = metadata;
    }
    app.updated_ms = w.now_ms;
    tables::put_app(w.wtxn, w.dbs, &app, Some(&previous))?;
    Ok(Outcome::App {
        app,
        created: false,
    })
}

fn delete_app(w: &mut WriteCtx<'_, '_>, reference: &str) -> Result<Outcome, LogError> {
    // A source's application goes only with its source (`DeleteSource`).
    let Some(app) = tables::app_by_ref(w.wtxn, w.dbs, reference)?.filter(|a| !a.internal) else {
        return refused(Refusal::AppNotFound);
    };
    let endpoint_keys = tables::delete_app(w.wtxn, w.dbs, &app)?;
    w.state.endpoints.remove_app(app.key);
    // Its messages, deliveries and attempts go in bounded batches (`PurgeDeletedApps`).
    purge::mark(w, app.key, &endpoint_keys)?;
    Ok(Outcome::Done)
}

// === event types ===

fn event_type_record(
    name: String,
    fields: EventTypeFields,
    existing: Option<&EventTypeRecord>,
    now_ms: u64,
) -> Result<EventTypeRecord, LogError> {
    Ok(EventTypeRecord {
        name,
        description: fields.description,
        archived: fields.archived,
        deprecated: fields.deprecated,
        schemas: parse_schemas(fields.schemas.as_deref())?,
        feature_flag: fields.feature_flag,
        created_ms: existing.map_or(now_ms, |t| t.created_ms),
        updated_ms: now_ms,
        group_name: fields.group_name,
    })
}

/// Schemas travel as JSON text; the API checked it is an object.
fn parse_schemas(text: Option<&str>) -> Result<Option<serde_json::Value>, LogError> {
    text.map(|t| {
        serde_json::from_str(t).map_err(|e| LogError::corrupt("ops", &format!("schemas: {e}")))
    })
    .transpose()
}

fn create_event_type(
    w: &mut WriteCtx<'_, '_>,
    name: String,
    fields: EventTypeFields,
) -> Result<Outcome, LogError> {
    let existing = tables::event_type(w.wtxn, w.dbs, &name)?;
    if existing.as_ref().is_some_and(|t| !t.archived) {
        return refused(Refusal::EventTypeExists);
    }
    // Creating an archived name un-archives it and overwrites its fields (Svix).
    let record = event_type_record(name, fields, existing.as_ref(), w.now_ms)?;
    tables::put_event_type(w.wtxn, w.dbs, &record)?;
    Ok(Outcome::EventType {
        event_type: record,
        created: true,
    })
}

fn put_event_type(
    w: &mut WriteCtx<'_, '_>,
    name: String,
    fields: EventTypeFields,
) -> Result<Outcome, LogError> {
    let existing = tables::event_type(w.wtxn, w.dbs, &name)?;
    let record = event_type_record(name, fields, existing.as_ref(), w.now_ms)?;
    tables::put_event_type(w.wtxn, w.dbs, &record)?;
    Ok(Outcome::EventType {
        event_type: record,
        created: existing.is_none(),
    })
}

fn patch_event_type(
    w: &mut WriteCtx<'_, '_>,
    name: &str,
    changes: EventTypeChanges,
) -> Result<Outcome, LogError> {
    let Some(mut record) = tables::event_type(w.wtxn, w.dbs, name)? else {
        return refused(Refusal::EventTypeNotFound);
    };
    if let Some(description) = changes.description {
        record.description = description;
    }
    if let Some(archived) = changes.archived {
        record.archived = archived;
    }
    if let Some(deprecated) = changes.deprecated {
        record.deprecated = deprecated;
    }
    match changes.schemas {
        super::ops::Change::Keep => {}
        super::ops::Change::Clear => record.schemas = None,
        super::ops::Change::Set(text) => record.schemas = parse_schemas(Some(&text))?,
    }
    changes.feature_flag.apply_to(&mut record.feature_flag);
    changes.group_name.apply_to(&mut record.group_name);
    record.updated_ms = w.now_ms;
    tables::put_event_type(w.wtxn, w.dbs, &record)?;
    Ok(Outcome::EventType {
        event_type: record,
        created: false,
    })
}

fn delete_event_type(
    w: &mut WriteCtx<'_, '_>,
    name: &str,
    expunge: bool,
) -> Result<Outcome, LogError> {
    let Some(mut record) = tables::event_type(w.wtxn, w.dbs, name)? else {
        return refused(Refusal::EventTypeNotFound);
    };
    if expunge {
        w.dbs.event_types.delete(w.wtxn, name.as_bytes())?;
    } else {
        record.archived = true;
        record.updated_ms = w.now_ms;
        tables::put_event_type(w.wtxn, w.dbs, &record)?;
    }
    Ok(Outcome::Done)
}

// === endpoints ===

/// Why an endpoint of `app_key` was not found: its application is gone, or it is.
fn endpoint_or_app_missing(w: &WriteCtx<'_, '_>, app_key: u64) -> Result<Refusal, LogError> {
    Ok(if tables::app_exists(w.wtxn, w.dbs, app_key)? {
        Refusal::EndpointNotFound
    } else {
        Refusal::AppNotFound
    })
}

/// The endpoint `reference` of `app_key` as stored, or the refusal to answer with.
fn find_endpoint(
    w: &WriteCtx<'_, '_>,
    app_key: u64,
    reference: &str,
) -> Result<Result<EndpointRecord, Refusal>, LogError> {
    match tables::endpoint_row_by_ref(w.wtxn, w.dbs, app_key, reference)? {
        Some(endpoint) => Ok(Ok(endpoint)),
        None => Ok(Err(endpoint_or_app_missing(w, app_key)?)),
    }
}

/// A refusal unless every filtered event type exists and is not archived (Svix's rule).
fn unknown_event_types(
    w: &WriteCtx<'_, '_>,
    types: Option<&Vec<String>>,
) -> Result<Option<Refusal>, LogError> {
    let mut missing = Vec::new();
    for name in types.into_iter().flatten() {
        if tables::event_type(w.wtxn, w.dbs, name)?.is_none_or(|t| t.archived) {
            missing.push(name.clone());
        }
    }
    Ok((!missing.is_empty()).then_some(Refusal::UnknownEventTypes(missing)))
}

fn create_endpoint(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    id: String,
    fields: EndpointFields,
) -> Result<Outcome, LogError> {
    if !tables::app_exists(w.wtxn, w.dbs, app_key)? {
        return refused(Refusal::AppNotFound);
    }
    let max = w.state.endpoints_per_app_max;
    if w.state.endpoints.count_for_app(app_key) >= max as usize {
        return refused(Refusal::EndpointsLimit { max });
    }
    let event_types = fields.event_types.filter(|l| !l.is_empty());
    // Operational endpoints filter on Sluice's own events, not the org's event types.
    if !operational::is_operational(w, app_key)?
        && let Some(refusal) = unknown_event_types(w, event_types.as_ref())?
    {
        return refused(refusal);
    }
    if let Some(uid) = &fields.uid
        && tables::endpoint_uid_taken(w.wtxn, w.dbs, app_key, uid)?.is_some()
    {
        return refused(Refusal::EndpointUidTaken);
    }
    let endpoint = EndpointRecord {
        key: w.state.take_endpoint_key(),
        app_key,
        id,
        uid: fields.uid,
        url: fields.url,
        description: fields.description,
        version: fields.version.max(1),
        disabled: fields.disabled,
        throttle_rate: fields.throttle_rate,
        event_types,
        channels: fields.channels,
        secret: fields.secret,
        old_secrets: Vec::new(),
        headers: fields.headers,
        metadata: fields.metadata,
        created_ms: w.now_ms,
        updated_ms: w.now_ms,
        fifo: fields.fifo,
        failing_since_ms: None,
        disabled_reason: None,
        disabled_at_ms: None,
        signing: fields.signing,
        sealed: fields.sealed,
        polling_only: fields.polling_only,
    };
    tables::put_endpoint(w.wtxn, w.dbs, &endpoint, None)?;
    w.state.endpoints.upsert(&endpoint);
    operational::endpoint_event(w, "endpoint.created", &endpoint)?;
    Ok(Outcome::Endpoint {
        endpoint: Box::new(endpoint),
        created: true,
    })
}

impl EndpointChanges {
    /// Applies every field these changes set (`event_types` already normalised).
    fn apply(self, endpoint: &mut EndpointRecord) {
        if let Some(url) = self.url {
            endpoint.url = url;
        }
        if let Some(description) = self.description {
            endpoint.description = description;
        }
        self.throttle_rate.apply_to(&mut endpoint.throttle_rate);
        self.uid.apply_to(&mut endpoint.uid);
        if let Some(version) = self.version {
            endpoint.version = version.max(1);
        }
        if let Some(disabled) = self.disabled {
            endpoint.disabled = disabled;
            if !disabled {
                // Re-enabled: the failure history that disabled it starts over.
                endpoint.disabled_reason = None;
                endpoint.disabled_at_ms = None;
                endpoint.failing_since_ms = None;
            }
        }
        if let Some(fifo) = self.fifo {
            endpoint.fifo = fifo;
        }
        if let Some(signing) = self.signing {
            endpoint.signing = signing;
        }
        if let Some(polling_only) = self.polling_only {
            endpoint.polling_only = polling_only;
        }
        self.event_types.apply_to(&mut endpoint.event_types);
        self.channels.apply_to(&mut endpoint.channels);
        if let Some(secret) = self.secret {
            endpoint.secret = secret;
        }
        if let Some(metadata) = self.metadata {
            endpoint.metadata = metadata;
        }
    }
}

fn update_endpoint(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    reference: &str,
    mut changes: EndpointChanges,
) -> Result<Outcome, LogError> {
    let previous = match find_endpoint(w, app_key, reference)? {
        Ok(found) => found,
        Err(refusal) => return refused(refusal),
    };
    // An empty filter list means "no filter" (the portal widgets send `[]`).
    if changes.event_types.as_set().is_some_and(Vec::is_empty) {
        changes.event_types = super::ops::Change::Clear;
    }
    if !operational::is_operational(w, app_key)?
        && let Some(refusal) = unknown_event_types(w, changes.event_types.as_set())?
    {
        return refused(refusal);
    }
    if let Some(uid) = changes.uid.as_set()
        && tables::endpoint_uid_taken(w.wtxn, w.dbs, app_key, uid)?
            .is_some_and(|k| k != previous.key)
    {
        return refused(Refusal::EndpointUidTaken);
    }
    let mut endpoint = previous.clone();
    changes.apply(&mut endpoint);
    endpoint.updated_ms = w.now_ms;
    tables::put_endpoint(w.wtxn, w.dbs, &endpoint, Some(&previous))?;
    w.state.endpoints.upsert(&endpoint);
    operational::endpoint_event(w, "endpoint.updated", &endpoint)?;
    match (previous.disabled, endpoint.disabled) {
        (true, false) => operational::endpoint_event(w, "endpoint.enabled", &endpoint)?,
        (false, true) => operational::endpoint_disabled(w, &endpoint, false, None)?,
        _ => {}
    }
    Ok(Outcome::Endpoint {
        endpoint: Box::new(endpoint),
        created: false,
    })
}

fn delete_endpoint(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    reference: &str,
) -> Result<Outcome, LogError> {
    let endpoint = match find_endpoint(w, app_key, reference)? {
        Ok(found) => found,
        Err(refusal) => return refused(refusal),
    };
    tables::delete_endpoint(w.wtxn, w.dbs, &endpoint)?;
    w.state.endpoints.remove(app_key, endpoint.key);
    operational::endpoint_event(w, "endpoint.deleted", &endpoint)?;
    Ok(Outcome::Done)
}

fn rotate_secret(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    reference: &str,
    new_key: Vec<u8>,
    grace_ms: u64,
) -> Result<Outcome, LogError> {
    let previous = match find_endpoint(w, app_key, reference)? {
        Ok(found) => found,
        Err(refusal) => return refused(refusal),
    };
    let now_ms = w.now_ms;
    let mut endpoint = previous.clone();
    endpoint.old_secrets.retain(|old| old.expires_ms > now_ms);
    if endpoint.old_secrets.len() >= OLD_SECRETS_MAX {
        return refused(Refusal::OldSecretsLimit);
    }
    let old = std::mem::replace(&mut endpoint.secret, new_key);
    if grace_ms > 0 {
        endpoint.old_secrets.push(OldSecret {
            key: old,
            expires_ms: now_ms + grace_ms,
        });
    }
    endpoint.updated_ms = now_ms;
    tables::put_endpoint(w.wtxn, w.dbs, &endpoint, Some(&previous))?;
    operational::endpoint_event(w, "endpoint.updated", &endpoint)?;
    Ok(Outcome::SecretRotated)
}

fn set_headers(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    reference: &str,
    replace: bool,
    delete: &[String],
    set: Vec<(String, Option<String>)>,
) -> Result<Outcome, LogError> {
    let previous = match find_endpoint(w, app_key, reference)? {
        Ok(found) => found,
        Err(refusal) => return refused(refusal),
    };
    let mut endpoint = previous.clone();
    if replace {
        endpoint.headers.clear();
    }
    for name in delete {
        merge_header(&mut endpoint.headers, name, None);
    }
    for (name, value) in set {
        merge_header(&mut endpoint.headers, &name, value);
    }
    if endpoint.headers.len() > ENDPOINT_HEADERS_MAX {
        return refused(Refusal::HeadersLimit);
    }
    endpoint.updated_ms = w.now_ms;
    tables::put_endpoint(w.wtxn, w.dbs, &endpoint, Some(&previous))?;
    Ok(Outcome::Done)
}

// === background tasks ===

/// A background task over `endpoint`'s messages created in `window` (since, until ms).
fn create_task(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    endpoint: &str,
    id: String,
    kind: TaskKind,
    window: (u64, u64),
    filter: Option<ReplayFilter>,
) -> Result<Outcome, LogError> {
    let Some(endpoint) = tables::endpoint_row_by_ref(w.wtxn, w.dbs, app_key, endpoint)? else {
        return refused(endpoint_or_app_missing(w, app_key)?);
    };
    if endpoint.disabled {
        return refused(Refusal::EndpointDisabled);
    }
    if endpoint.polling_only {
        return refused(Refusal::EndpointPollingOnly);
    }
    let spec = TaskSpec {
        kind,
        app_key,
        endpoint_key: endpoint.key,
        since_ms: window.0,
        until_ms: window.1,
        filter,
    };
    Ok(match task_log::create(w, spec, id)? {
        Ok(task) => Outcome::TaskCreated(Box::new(task)),
        Err(NotCreated::TooManyRunning) => Outcome::Refused(Refusal::TasksLimit),
    })
}

// === messages ===

/// Where a new message goes: an application that exists, or one to create first.
enum MessageTarget {
    Existing(u64),
    New { id: String, fields: AppFields },
}

/// Resolves a message's application without writing: an inline one is the application
/// its uid names if there is one now, else one to create.
fn message_target(
    w: &WriteCtx<'_, '_>,
    app: MessageApp,
) -> Result<Result<MessageTarget, Refusal>, LogError> {
    match app {
        MessageApp::Existing(app_key) => Ok(if tables::app_exists(w.wtxn, w.dbs, app_key)? {
            Ok(MessageTarget::Existing(app_key))
        } else {
            Err(Refusal::AppNotFound)
        }),
        MessageApp::Inline { id, fields } => {
            if let Some(uid) = &fields.uid
                && let Some(key) = tables::app_uid_taken(w.wtxn, w.dbs, uid)?
            {
                let internal = tables::app_by_key(w.wtxn, w.dbs, key)?.is_none_or(|a| a.internal);
                return Ok(if internal {
                    Err(Refusal::AppNotFound)
                } else {
                    Ok(MessageTarget::Existing(key))
                });
            }
            Ok(if room_for_an_app(w)? {
                Ok(MessageTarget::New { id, fields })
            } else {
                Err(Refusal::AppsLimit)
            })
        }
    }
}

fn create_message(
    w: &mut WriteCtx<'_, '_>,
    app: MessageApp,
    message: NewMessage,
    with_content: bool,
) -> Result<Outcome, LogError> {
    let app_key = match message_target(w, app)? {
        Err(refusal) => return refused(refusal),
        Ok(MessageTarget::Existing(app_key)) => {
            if let Some(event_id) = &message.event_id
                && tables::message_seq_by_event_id(w.wtxn, w.dbs, app_key, event_id)?.is_some()
            {
                return refused(Refusal::EventIdTaken);
            }
            app_key
        }
        // A new application has no messages: nothing can refuse the message now.
        Ok(MessageTarget::New { id, fields }) => {
            let record = new_app(w, id, fields);
            tables::put_app(w.wtxn, w.dbs, &record, None)?;
            record.key
        }
    };
    let record = MessageRecord {
        app_key,
        created_ms: w.now_ms,
        payload_expires_ms: w.now_ms + u64::from(message.retention_days) * DAY_MS,
        id: message.id,
        event_type: message.event_type,
        event_id: message.event_id,
        channels: message.channels,
        payload: Some(message.payload),
        example: false,
        headers: None,
        tags: message.tags,
        deliver_at_ms: message.deliver_at_ms,
    };
    let (seq, _) = tables::append_message(w, &record, tables::Fanout::Matching)?;
    Ok(Outcome::Message {
        message: Box::new(record),
        seq,
        view: MessageView::Accepted { with_content },
    })
}

fn send_example(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    reference: &str,
    id: String,
    event_type: String,
    example_index: u32,
) -> Result<Outcome, LogError> {
    let endpoint = match find_endpoint(w, app_key, reference)? {
        Ok(found) => found,
        Err(refusal) => return refused(refusal),
    };
    let payload = if event_type == PING_EVENT_TYPE {
        PING_PAYLOAD.to_vec()
    } else {
        let example = tables::event_type(w.wtxn, w.dbs, &event_type)?
            .and_then(|t| t.schemas)
            .and_then(|s| {
                s.get("1")?
                    .get("examples")?
                    .get(usize::try_from(example_index).ok()?)
                    .filter(|e| e.is_object())
                    .cloned()
            });
        match example.map(|e| serde_json::to_vec(&e)) {
            Some(Ok(bytes)) => bytes,
            _ => return refused(Refusal::NoExample),
        }
    };
    let record = MessageRecord {
        app_key,
        created_ms: w.now_ms,
        payload_expires_ms: w.now_ms + u64::from(RETENTION_DAYS_DEFAULT) * DAY_MS,
        id,
        event_type,
        event_id: None,
        channels: None,
        payload: Some(payload),
        example: true,
        headers: None,
        tags: None,
        deliver_at_ms: None,
    };
    let (seq, _) = tables::append_message(w, &record, tables::Fanout::Only(endpoint.key))?;
    Ok(Outcome::Message {
        message: Box::new(record),
        seq,
        view: MessageView::Example,
    })
}

/// The message `reference` names in application `app_key` (with its seq), or the refusal
/// that says which of the two is missing.
fn message_in_app(
    w: &WriteCtx<'_, '_>,
    app_key: u64,
    reference: &str,
) -> Result<Result<(u64, MessageRecord), Refusal>, LogError> {
    if !tables::app_exists(w.wtxn, w.dbs, app_key)? {
        return Ok(Err(Refusal::AppNotFound));
    }
    Ok(tables::message_by_ref(w.wtxn, w.dbs, app_key, reference)?.ok_or(Refusal::MessageNotFound))
}

fn expunge_content(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    reference: &str,
) -> Result<Outcome, LogError> {
    let (seq, mut message) = match message_in_app(w, app_key, reference)? {
        Ok(found) => found,
        Err(refusal) => return refused(refusal),
    };
    message.payload = None;
    w.dbs
        .msgs
        .put(w.wtxn, &schema::u64_key(seq), &message.encode())?;
    Ok(Outcome::Done)
}

/// The response body Svix leaves on an attempt whose content was expunged.
const EXPUNGED_RESPONSE: &str = "EXPUNGED";

fn expunge_attempt_content(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    message_ref: &str,
    attempt_id: &str,
) -> Result<Outcome, LogError> {
    let seq = match message_in_app(w, app_key, message_ref)? {
        Ok((seq, _)) => seq,
        Err(refusal) => return refused(refusal),
    };
    let Some(key) = tables::attempt_key_of_id(w.wtxn, w.dbs, attempt_id)? else {
        return refused(Refusal::AttemptNotFound);
    };
    let Some(mut attempt) = tables::attempt_by_key(w.wtxn, w.dbs, key)?.filter(|a| a.seq == seq)
    else {
        return refused(Refusal::AttemptNotFound);
    };
    attempt.response = EXPUNGED_RESPONSE.to_owned();
    w.dbs.attempts.put(
        w.wtxn,
        &schema::u64_key(key),
        &schema::encode_json(&attempt),
    )?;
    Ok(Outcome::Done)
}

fn resend(
    w: &mut WriteCtx<'_, '_>,
    app_key: u64,
    message_ref: &str,
    endpoint_ref: &str,
) -> Result<Outcome, LogError> {
    let (seq, message) = match message_in_app(w, app_key, message_ref)? {
        Ok(found) => found,
        Err(refusal) => return refused(refusal),
    };
    let Some(endpoint) = tables::endpoint_row_by_ref(w.wtxn, w.dbs, app_key, endpoint_ref)? else {
        return refused(Refusal::EndpointNotFound);
    };
    if endpoint.polling_only {
        return refused(Refusal::EndpointPollingOnly);
    }
    if message.payload.is_none() {
        return refused(Refusal::PayloadGone);
    }
    Ok(Outcome::Requeued(tables::requeue(
        w,
        endpoint.key,
        seq,
        true,
    )?))
}
