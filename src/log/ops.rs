//! Operations: every change to Sluice's state, as a value.
//!
//! A handler (or the delivery engine, the task runner, the sweeper) builds an `Op`, wraps
//! it in an `Envelope` with the time it was built, and submits it (`Log::submit`). The
//! writer thread applies it (`apply.rs`), and only there does LMDB change. Applying is a
//! pure function of the state and the op: every non-deterministic input — ids, times,
//! drawn jitter, sealed secrets (sealed before the op is built, so an op never carries a
//! plaintext secret) — is in the op. Two logs that apply the same ops in the same order
//! hold the same bytes, which is what lets cluster mode replicate the op log instead of
//! the tables.
//!
//! Refusals that depend on the state (a uid taken, a limit reached) are decided at apply
//! time and returned as values (`Outcome::Refused`), so every node that applies an op
//! agrees on them. Each envelope has a versioned binary encoding (`encode`/`decode`,
//! postcard after a version byte); decoding garbage is a typed error, never a panic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::purge::Purged;
use super::retention::Swept;
use super::schema::{
    AppRecord, EndpointRecord, EventTypeRecord, MessageRecord, PollerTokenRecord, PortalGrant,
    ReplayFilter, Signing, SourceErrorRecord, SourceRecord, TaskKind, TaskRecord, TokenScope,
};
use super::tables::{RepliesExpired, Requeued, Step};

/// Version byte that starts every encoded envelope written by this build.
pub const OP_VERSION: u8 = 1;

/// An op and what surrounds it: when it was built and whether its reply is remembered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// When the op was built (ms, the building node's clock). Apply clamps it to the last
    /// applied time, so the log's time never goes back and `created_ms` follows `seq`.
    pub at_ms: u64,
    /// The idempotency key (hash of token, key and URI) whose reply is stored with the
    /// change, in the same transaction.
    pub remember: Option<[u8; 32]>,
    pub op: Op,
}

impl Envelope {
    pub fn new(op: Op, at_ms: u64) -> Envelope {
        Envelope {
            at_ms,
            remember: None,
            op,
        }
    }

    /// Remembers the reply under `key` (an idempotent POST), if given.
    pub fn remembered(mut self, key: Option<[u8; 32]>) -> Envelope {
        self.remember = key;
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let out = vec![OP_VERSION];
        // Serialising plain data into a Vec cannot fail.
        postcard::to_extend(self, out).expect("ops serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, OpDecodeError> {
        let (&version, body) = bytes.split_first().ok_or(OpDecodeError::Empty)?;
        if version != OP_VERSION {
            return Err(OpDecodeError::UnknownVersion(version));
        }
        let (envelope, rest) = postcard::take_from_bytes::<Envelope>(body)
            .map_err(|e| OpDecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(OpDecodeError::TrailingBytes(rest.len()));
        }
        Ok(envelope)
    }
}

/// Why bytes are not an op.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpDecodeError {
    #[error("an op cannot be empty")]
    Empty,
    #[error("unknown op version {0}")]
    UnknownVersion(u8),
    #[error("malformed op: {0}")]
    Malformed(String),
    #[error("{0} bytes after the op")]
    TrailingBytes(usize),
}

/// A change to a nullable field: keep it, clear it, or set it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Change<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Change<T> {
    pub fn apply_to(self, field: &mut Option<T>) {
        match self {
            Change::Keep => {}
            Change::Clear => *field = None,
            Change::Set(v) => *field = Some(v),
        }
    }

    pub fn as_set(&self) -> Option<&T> {
        match self {
            Change::Set(v) => Some(v),
            _ => None,
        }
    }
}

/// Every change to Sluice's state. Secrets (`secret`, header values, static tokens) are
/// in their stored form: sealed when a secrets key is configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    CreateApp {
        id: String,
        fields: AppFields,
        /// With a taken uid, answer with the existing application instead of refusing.
        get_if_exists: bool,
    },
    /// PUT: update the application named by `reference`, or create it (with `id`).
    PutApp {
        reference: String,
        id: String,
        fields: AppFields,
    },
    PatchApp {
        reference: String,
        changes: AppChanges,
    },
    DeleteApp {
        reference: String,
    },
    CreateEventType {
        name: String,
        fields: EventTypeFields,
    },
    PutEventType {
        name: String,
        fields: EventTypeFields,
    },
    PatchEventType {
        name: String,
        changes: EventTypeChanges,
    },
    /// Archives the event type, or deletes it for good with `expunge`.
    DeleteEventType {
        name: String,
        expunge: bool,
    },
    CreateEndpoint {
        app_key: u64,
        id: String,
        fields: Box<EndpointFields>,
    },
    UpdateEndpoint {
        app_key: u64,
        endpoint: String,
        changes: Box<EndpointChanges>,
    },
    DeleteEndpoint {
        app_key: u64,
        endpoint: String,
    },
    /// Makes `new_key` the signing key; the old one signs on for `grace_ms`.
    RotateSecret {
        app_key: u64,
        endpoint: String,
        new_key: Vec<u8>,
        grace_ms: u64,
    },
    /// Replaces (`replace`) or merges custom headers: `delete` first, then `set`
    /// (a `None` value removes).
    SetHeaders {
        app_key: u64,
        endpoint: String,
        replace: bool,
        delete: Vec<String>,
        set: Vec<(String, Option<String>)>,
    },
    /// The durable ingest: the message and one delivery per matching endpoint (and, with
    /// an inline application, that application first when its uid names none).
    CreateMessage {
        app: MessageApp,
        message: Box<NewMessage>,
        /// The reply shows the payload.
        with_content: bool,
    },
    /// A message of `svix.ping` or an event type's schema example, to one endpoint only.
    SendExample {
        app_key: u64,
        endpoint: String,
        id: String,
        event_type: String,
        example_index: u32,
    },
    ExpungeContent {
        app_key: u64,
        message: String,
    },
    /// Replaces an attempt's stored response body with `EXPUNGED` (Svix).
    ExpungeAttemptContent {
        app_key: u64,
        message: String,
        attempt: String,
    },
    /// One manual attempt of a message to an endpoint.
    Resend {
        app_key: u64,
        message: String,
        endpoint: String,
    },
    CreateTask {
        app_key: u64,
        endpoint: String,
        id: String,
        kind: TaskKind,
        since_ms: u64,
        until_ms: u64,
    },
    /// One bounded batch of a running background task.
    AdvanceTask {
        task_key: u64,
    },
    /// An attempt and the step its delivery takes (decided, jitter drawn, by the engine).
    RecordAttempt {
        attempt: AttemptRow,
        step: Step,
        disable_after_ms: u64,
    },
    /// A delivery that will not be attempted (endpoint disabled or gone, payload gone).
    SkipDelivery {
        endpoint_key: u64,
        seq: u64,
    },
    CreateToken {
        hash: [u8; 32],
        scope: TokenScope,
        name: String,
        expires_ms: Option<u64>,
    },
    /// One bounded retention batch (see `retention::sweep`).
    RetentionSweep {
        delete_before_ms: u64,
        payload_cursor: Option<Option<u64>>,
        rows_max: u32,
    },
    /// Deletes up to `rows_max` expired idempotency rows after `after`.
    ExpireIdempotency {
        after: Option<Vec<u8>>,
        rows_max: u32,
    },
    /// Remembers where a poller consumer of an endpoint stands: after message `seq`.
    SetConsumer {
        app_key: u64,
        endpoint: String,
        consumer: String,
        seq: u64,
    },
    /// Gives an endpoint a poller token (`token` in its stored form), or, with
    /// `keep_existing` and a token already there, keeps that one. A replaced token keeps
    /// working for `old_grace_ms`.
    SetPollerToken {
        app_key: u64,
        endpoint: String,
        token: Box<PollerTokenRecord>,
        keep_existing: bool,
        old_grace_ms: u64,
    },
    /// Creates an ingest source and its application (`app_id`); with `reference`, a PUT:
    /// replaces that source's fields if it exists (keeping its token), else creates it.
    PutSource {
        reference: Option<String>,
        app_id: String,
        source: Box<SourceFields>,
    },
    DeleteSource {
        reference: String,
    },
    /// Makes `token` the source's URL token; the old one is accepted for `grace_ms`.
    RotateSourceToken {
        reference: String,
        token: Box<(String, [u8; 32])>,
        grace_ms: u64,
    },
    /// A request a source rejected, for its error log (oldest dropped past the cap).
    RecordSourceError {
        source_key: u64,
        error: Box<SourceErrorRecord>,
    },
    /// A request a source accepted: a message of its application, with the request's
    /// headers, to its destinations.
    ReceiveMessage {
        source_key: u64,
        message: Box<NewMessage>,
        headers: Vec<(String, String)>,
    },
    /// Revokes the token with this hash: its record goes, so it opens nothing from the
    /// commit on.
    RevokeToken {
        hash: [u8; 32],
    },
    /// Records that the token was used at the op's time (at most once a
    /// `limits::TOKEN_USE_RECORD_INTERVAL_MS` per token; the API coalesces).
    TouchToken {
        hash: [u8; 32],
    },
    /// One bounded batch of purging deleted applications' messages, deliveries and
    /// attempts (see `purge::purge`).
    PurgeDeletedApps {
        rows_max: u32,
    },
    /// Svix's bulk-replay: a background task re-sending, as manual attempts, the
    /// endpoint's deliveries of the window that pass `filter`.
    CreateBulkReplay {
        app_key: u64,
        endpoint: String,
        id: String,
        since_ms: u64,
        until_ms: u64,
        filter: Box<ReplayFilter>,
    },
    /// An operational-webhook endpoint: an endpoint of the operational application, which
    /// is made (internal, with `app_id`) with the first one.
    CreateOperationalEndpoint {
        app_id: String,
        id: String,
        fields: Box<EndpointFields>,
    },
    /// A tenant-portal access link (`app-portal-access`): its bearer token and its
    /// single-use login code, both hashed, with the grant (`kind` is set per row).
    /// Refused when the application is gone or the token table is full (expired portal
    /// rows are dropped first to make room).
    CreatePortalAccess {
        app_key: u64,
        grant: Box<PortalGrant>,
        token_hash: [u8; 32],
        token_expires_ms: u64,
        code_hash: [u8; 32],
        code_expires_ms: u64,
    },
    /// Exchanges a login code for a browser session: the code's row goes (single use, in
    /// log order, so on every node of a cluster alike) and the session's comes, ending
    /// at `session_expires_ms` or with the link's token, whichever is first. Refused
    /// (`LoginCodeInvalid`) when the code is unknown, used or expired.
    OpenPortalSession {
        code_hash: [u8; 32],
        session_hash: [u8; 32],
        session_expires_ms: u64,
    },
    /// Ends an application's portal credentials (`expire-all`, logout): all of them, or
    /// those of one link, or those minted with one of `session_ids`; at `expires_ms`
    /// (rows are deleted when that is not after the op's time).
    ExpirePortalAccess {
        app_key: u64,
        link: Option<String>,
        session_ids: Option<Vec<String>>,
        expires_ms: u64,
    },
    /// Makes `max` the most endpoints an application may have (`api.endpoints_per_app_max`,
    /// submitted at start when the log holds another value), so that every node refuses
    /// the same creates. Applications already past it keep their endpoints.
    SetEndpointsPerAppMax {
        max: u32,
    },
    /// An operator's single-use login code (`sluice portal-link`, or an org token given
    /// to the portal's operator form): org-scoped, every capability, no bearer token.
    /// Exchanged by `OpenPortalSession` like a tenant's. Refused when the token table
    /// is full (expired portal rows are dropped first to make room).
    CreateOperatorAccess {
        grant: Box<PortalGrant>,
        code_hash: [u8; 32],
        code_expires_ms: u64,
    },
    /// Deletes up to `rows_max` idempotency rows whose time is up, oldest first (read
    /// from the front of `replies`).
    ExpireReplies {
        rows_max: u32,
    },
    /// Revokes an API token (`DELETE /auth/token/{id}`, `sluice token revoke`) and, for
    /// an org token, every operator session and login code opened with it (their link
    /// names it: `schema::operator_link_prefix`). A portal logout uses `RevokeToken`.
    RevokeApiToken {
        hash: [u8; 32],
    },
}

/// An ingest source as created or replaced (secrets in their stored form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceFields {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub kind: String,
    pub config: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    /// The URL token for a new source (stored form) and its hash.
    pub token: String,
    pub token_hash: [u8; 32],
    pub sealed: bool,
}

impl Op {
    /// Every op's name, one per variant (`name`), in declaration order.
    pub const NAMES: [&'static str; 44] = [
        "create_app",
        "put_app",
        "patch_app",
        "delete_app",
        "create_event_type",
        "put_event_type",
        "patch_event_type",
        "delete_event_type",
        "create_endpoint",
        "update_endpoint",
        "delete_endpoint",
        "rotate_secret",
        "set_headers",
        "create_message",
        "send_example",
        "expunge_content",
        "resend",
        "create_task",
        "advance_task",
        "record_attempt",
        "skip_delivery",
        "create_token",
        "retention_sweep",
        "expire_idempotency",
        "set_consumer",
        "set_poller_token",
        "put_source",
        "delete_source",
        "rotate_source_token",
        "record_source_error",
        "receive_message",
        "revoke_token",
        "touch_token",
        "purge_deleted_apps",
        "expunge_attempt_content",
        "create_bulk_replay",
        "create_operational_endpoint",
        "create_portal_access",
        "open_portal_session",
        "expire_portal_access",
        "set_endpoints_per_app_max",
        "create_operator_access",
        "expire_replies",
        "revoke_api_token",
    ];

    /// The op's name, for diagnostics and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateApp { .. } => "create_app",
            Op::PutApp { .. } => "put_app",
            Op::PatchApp { .. } => "patch_app",
            Op::DeleteApp { .. } => "delete_app",
            Op::CreateEventType { .. } => "create_event_type",
            Op::PutEventType { .. } => "put_event_type",
            Op::PatchEventType { .. } => "patch_event_type",
            Op::DeleteEventType { .. } => "delete_event_type",
            Op::CreateEndpoint { .. } => "create_endpoint",
            Op::UpdateEndpoint { .. } => "update_endpoint",
            Op::DeleteEndpoint { .. } => "delete_endpoint",
            Op::RotateSecret { .. } => "rotate_secret",
            Op::SetHeaders { .. } => "set_headers",
            Op::CreateMessage { .. } => "create_message",
            Op::SendExample { .. } => "send_example",
            Op::ExpungeContent { .. } => "expunge_content",
            Op::Resend { .. } => "resend",
            Op::CreateTask { .. } => "create_task",
            Op::AdvanceTask { .. } => "advance_task",
            Op::RecordAttempt { .. } => "record_attempt",
            Op::SkipDelivery { .. } => "skip_delivery",
            Op::CreateToken { .. } => "create_token",
            Op::RetentionSweep { .. } => "retention_sweep",
            Op::ExpireIdempotency { .. } => "expire_idempotency",
            Op::SetConsumer { .. } => "set_consumer",
            Op::SetPollerToken { .. } => "set_poller_token",
            Op::PutSource { .. } => "put_source",
            Op::DeleteSource { .. } => "delete_source",
            Op::RotateSourceToken { .. } => "rotate_source_token",
            Op::RecordSourceError { .. } => "record_source_error",
            Op::ReceiveMessage { .. } => "receive_message",
            Op::RevokeToken { .. } => "revoke_token",
            Op::TouchToken { .. } => "touch_token",
            Op::PurgeDeletedApps { .. } => "purge_deleted_apps",
            Op::ExpungeAttemptContent { .. } => "expunge_attempt_content",
            Op::CreateOperationalEndpoint { .. } => "create_operational_endpoint",
            Op::CreateBulkReplay { .. } => "create_bulk_replay",
            Op::CreatePortalAccess { .. } => "create_portal_access",
            Op::OpenPortalSession { .. } => "open_portal_session",
            Op::ExpirePortalAccess { .. } => "expire_portal_access",
            Op::SetEndpointsPerAppMax { .. } => "set_endpoints_per_app_max",
            Op::CreateOperatorAccess { .. } => "create_operator_access",
            Op::ExpireReplies { .. } => "expire_replies",
            Op::RevokeApiToken { .. } => "revoke_api_token",
        }
    }
}

/// An application's fields, as created or replaced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppFields {
    pub uid: Option<String>,
    pub name: String,
    pub throttle_rate: Option<u16>,
    pub metadata: BTreeMap<String, String>,
}

/// What a PATCH of an application changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppChanges {
    pub name: Option<String>,
    pub throttle_rate: Change<u16>,
    pub uid: Change<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// An event type's fields. `schemas` is JSON text (ops carry no untyped values).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventTypeFields {
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    pub schemas: Option<String>,
    pub feature_flag: Option<String>,
    pub group_name: Option<String>,
}

/// What a PATCH of an event type changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventTypeChanges {
    pub description: Option<String>,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    pub schemas: Change<String>,
    pub feature_flag: Change<String>,
    pub group_name: Change<String>,
}

/// A new endpoint's fields, secrets in their stored form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointFields {
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub version: u16,
    pub disabled: bool,
    pub throttle_rate: Option<u16>,
    pub event_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub secret: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub fifo: bool,
    pub signing: Signing,
    /// The secrets above are sealed.
    pub sealed: bool,
    /// Consumers poll it; Sluice never pushes to its URL.
    pub polling_only: bool,
}

/// What a PUT or PATCH of an endpoint changes (secrets in their stored form).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub throttle_rate: Change<u16>,
    pub uid: Change<String>,
    pub version: Option<u16>,
    pub disabled: Option<bool>,
    pub event_types: Change<Vec<String>>,
    pub channels: Change<Vec<String>>,
    pub secret: Option<Vec<u8>>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub fifo: Option<bool>,
    pub signing: Option<Signing>,
    pub polling_only: Option<bool>,
}

/// A message as the API accepted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    pub id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    pub channels: Option<Vec<String>>,
    /// The exact JSON text accepted.
    pub payload: Vec<u8>,
    pub retention_days: u16,
    pub tags: Option<Vec<String>>,
    /// Svix's `deliverAt`: the deliveries wait until then (ms; `None`, or a time already
    /// past when applied: at once).
    pub deliver_at_ms: Option<u64>,
}

/// Which application a new message goes to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MessageApp {
    /// One that existed when the request was read (the writer checks it still does).
    Existing(u64),
    /// Svix's inline `application`: the one whose uid is `fields.uid` if there is one by
    /// apply time, else a new one with `id` and `fields`, in the same op as the message.
    Inline { id: String, fields: AppFields },
}

/// An attempt's record, encoded by the engine (off the writer), with the fields the apply
/// needs to file it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRow {
    pub id: String,
    pub seq: u64,
    pub endpoint_key: u64,
    pub success: bool,
    /// The `AttemptRecord` as stored (`schema::encode_json`).
    pub stored: Vec<u8>,
}

/// How a message op's reply shows the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageView {
    /// A created message (202), with or without its payload.
    Accepted { with_content: bool },
    /// A send-example message (200, without payload).
    Example,
}

/// What applying an op did. Every op answers with one of these; the ones it can answer
/// with are named at each `apply` function.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `created`: a new application (else it existed, or was updated).
    App {
        app: AppRecord,
        created: bool,
    },
    EventType {
        event_type: EventTypeRecord,
        created: bool,
    },
    /// The endpoint as stored (secrets possibly sealed: never shown).
    Endpoint {
        endpoint: Box<EndpointRecord>,
        created: bool,
    },
    SecretRotated,
    /// Done, with nothing to show (a delete, an expunge, a header change, a token).
    Done,
    Message {
        message: Box<MessageRecord>,
        seq: u64,
        view: MessageView,
    },
    Requeued(Requeued),
    TaskCreated(Box<TaskRecord>),
    /// The task as it now stands (`None`: no such task).
    TaskAdvanced(Option<Box<TaskRecord>>),
    AttemptRecorded {
        attempt_key: u64,
    },
    Swept(Swept),
    Purged(Purged),
    IdempotencyExpired {
        /// Where the next sweep resumes (`None`: from the start).
        resume: Option<Vec<u8>>,
        deleted: u64,
    },
    RepliesExpired(RepliesExpired),
    /// A consumer's position was stored: after `seq` of `endpoint`'s application.
    ConsumerSet {
        endpoint: Box<EndpointRecord>,
        seq: u64,
    },
    /// The endpoint's poller token as it now stands (stored form).
    PollerToken(PollerTokenRecord),
    Source {
        source: Box<SourceRecord>,
        created: bool,
    },
    Refused(Refusal),
}

/// Why an op changed nothing: decided by the state at apply time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    AppNotFound,
    EndpointNotFound,
    MessageNotFound,
    AttemptNotFound,
    EventTypeNotFound,
    AppUidTaken,
    EndpointUidTaken,
    EventIdTaken,
    EventTypeExists,
    /// `limits::APPS_MAX` applications exist.
    AppsLimit,
    /// The application has the most endpoints allowed (`max`, the log's
    /// `api.endpoints_per_app_max`).
    EndpointsLimit {
        max: u32,
    },
    /// These filtered event types do not exist or are archived.
    UnknownEventTypes(Vec<String>),
    /// `limits::OLD_SECRETS_MAX` previous keys are still within their grace.
    OldSecretsLimit,
    /// The change would leave more than `limits::ENDPOINT_HEADERS_MAX` headers.
    HeadersLimit,
    /// `limits::TASKS_RUNNING_MAX` background tasks are running.
    TasksLimit,
    /// `limits::TOKENS_MAX` tokens exist.
    TokensLimit,
    TokenNotFound,
    EndpointDisabled,
    /// The message's payload expired or was expunged.
    PayloadGone,
    /// The event type has no schema example at that index.
    NoExample,
    SourceNotFound,
    SourceUidTaken,
    /// The endpoint has `limits::POLLER_CONSUMERS_MAX` consumers.
    ConsumersLimit,
    /// The endpoint is polling-only: its consumers pull; nothing is pushed to it, so a
    /// resend, recover or replay has nothing to do.
    EndpointPollingOnly,
    /// A portal login code that is unknown, already used or expired.
    LoginCodeInvalid,
}

/// Inserts or replaces a header, matching names case-insensitively.
pub fn merge_header(headers: &mut BTreeMap<String, String>, name: &str, value: Option<String>) {
    headers.retain(|existing, _| !existing.eq_ignore_ascii_case(name));
    if let Some(value) = value {
        headers.insert(name.to_owned(), value);
    }
}

/// Renders the reply an idempotent request remembers, from its outcome: (status, body),
/// or `None` for an outcome that is not remembered (a refusal, a rotated secret). The API
/// supplies it (`Log::open`), so the log stores replies without knowing their shapes;
/// being a plain function of the outcome, it renders the same bytes on every node.
pub type RenderReply = fn(&Outcome) -> Option<(u16, Vec<u8>)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_typed_error() {
        assert_eq!(Envelope::decode(&[]), Err(OpDecodeError::Empty));
        assert_eq!(
            Envelope::decode(&[9, 0]),
            Err(OpDecodeError::UnknownVersion(9))
        );
        assert!(matches!(
            Envelope::decode(&[OP_VERSION, 0xff, 0xff]),
            Err(OpDecodeError::Malformed(_))
        ));
        let mut bytes = Envelope::new(Op::AdvanceTask { task_key: 3 }, 5).encode();
        bytes.push(0);
        assert_eq!(
            Envelope::decode(&bytes),
            Err(OpDecodeError::TrailingBytes(1))
        );
    }
}
