//! The on-disk format: database names, key layouts and record codecs.
//!
//! Every value starts with a version byte (`RECORD_VERSION`); decoding checks it and every
//! length, and returns `LogError::Corrupt` instead of panicking. Keys are big-endian so
//! that LMDB's byte order is numeric order. Hot records (messages, deliveries, due rows)
//! use a compact binary layout; management records (apps, endpoints, event types, tokens)
//! are the version byte followed by JSON, because they are small, rare and evolve.
//!
//! | database       | key                                   | value                      |
//! |----------------|---------------------------------------|----------------------------|
//! | `meta`         | name                                  | u64 BE                     |
//! | `msgs`         | seq u64                               | `MessageRecord` (binary)   |
//! | `msg_ids`      | `i` id / `u` app_key u64 eventId      | seq u64                    |
//! | `app_msgs`     | app_key u64, seq u64                  | empty                      |
//! | `delivery_rows`| seq u64, endpoint_key u64             | `DeliveryRecord` (binary)  |
//! | `endpoint_deliveries` | endpoint_key u64, seq u64      | empty; rows of seqs below `meta`'s `deliveries_unindexed_from` only |
//! | `due`          | due_ms u64, endpoint_key u64, seq u64 | empty                      |
//! | `apps`         | app_key u64                           | `AppRecord` (JSON)         |
//! | `app_ids`      | `i` id / `u` uid                      | app_key u64                |
//! | `endpoints`    | endpoint_key u64                      | `EndpointRecord` (JSON)    |
//! | `endpoint_ids` | `i` id / `u` app_key u64 uid          | endpoint_key u64           |
//! | `app_endpoints`| app_key u64, endpoint_key u64         | empty                      |
//! | `event_types`  | name                                  | `EventTypeRecord` (JSON)   |
//! | `tokens`       | SHA-256 of the token                  | `TokenRecord` (JSON)       |
//! | `idempotency`  | SHA-256 of (token, key, URI)          | `IdempotencyRecord` (bin), written by layouts before `replies` only |
//! | `attempts`     | attempt_key u64                       | `AttemptRecord` (JSON)     |
//! | `attempt_ids`  | `i` id                                | attempt_key u64            |
//! | `msg_attempts` | seq u64, attempt_key u64              | empty                      |
//! | `endpoint_attempts` | endpoint_key u64, attempt_key u64 | empty                      |
//! | `tasks`        | task_key u64                          | `TaskRecord` (JSON)        |
//! | `task_ids`     | `i` id                                | task_key u64               |
//! | `running_tasks`| task_key u64                          | empty                      |
//! | `consumers`    | endpoint_key u64, consumer id         | position: seq u64 (binary) |
//! | `poller_tokens`| endpoint_key u64                      | `PollerTokenRecord` (JSON) |
//! | `sources`      | source key (its app's key) u64        | `SourceRecord` (JSON)      |
//! | `source_ids`   | `i` id / `u` uid                      | source key u64             |
//! | `source_tokens`| SHA-256 of the URL token              | `SourceTokenRecord` (JSON) |
//! | `source_errors`| source key u64, error number u64      | `SourceErrorRecord` (JSON) |
//! | `replies`      | created_ms u64, SHA-256 of (token, key, URI) | `IdempotencyRecord` (bin) |
//!
//! `seq` is the global message sequence: assigned by the writer, strictly increasing, never
//! reused. A message's delivery rows lie side by side at the end of `delivery_rows`;
//! `endpoint_deliveries` gives each endpoint's in seq order, written many rows at a time
//! (`log::deliveries`). Schema 1 kept the deliveries in one table keyed (endpoint, seq),
//! `deliveries`; opening such a log migrates it (`log::deliveries::migrate_from_schema_1`). `app_msgs` is each application's ordered log, so "messages of this application
//! after offset N" is one range read. `replies` files remembered idempotent replies by
//! time: remembering appends near its end, expiry deletes from its front, and a lookup by
//! key finds the time in `log::replies::ReplyIndex`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::LogError;

/// Version of the whole layout, stored in `meta` under `schema_version`.
pub const SCHEMA_VERSION: u64 = 2;
/// Version byte that starts every record written by this build.
pub const RECORD_VERSION: u8 = 1;

/// Names of the LMDB databases, in the order `Dbs` opens them.
pub mod db_name {
    pub const META: &str = "meta";
    pub const MSGS: &str = "msgs";
    pub const MSG_IDS: &str = "msg_ids";
    pub const APP_MSGS: &str = "app_msgs";
    pub const DELIVERY_ROWS: &str = "delivery_rows";
    pub const ENDPOINT_DELIVERIES: &str = "endpoint_deliveries";
    /// Schema 1's deliveries, keyed (endpoint, seq): read once, by the migration.
    pub const SCHEMA_1_DELIVERIES: &str = "deliveries";
    pub const DUE: &str = "due";
    pub const APPS: &str = "apps";
    pub const APP_IDS: &str = "app_ids";
    pub const ENDPOINTS: &str = "endpoints";
    pub const ENDPOINT_IDS: &str = "endpoint_ids";
    pub const APP_ENDPOINTS: &str = "app_endpoints";
    pub const EVENT_TYPES: &str = "event_types";
    pub const TOKENS: &str = "tokens";
    pub const IDEMPOTENCY: &str = "idempotency";
    pub const ATTEMPTS: &str = "attempts";
    pub const ATTEMPT_IDS: &str = "attempt_ids";
    pub const MSG_ATTEMPTS: &str = "msg_attempts";
    pub const ENDPOINT_ATTEMPTS: &str = "endpoint_attempts";
    pub const TASKS: &str = "tasks";
    pub const TASK_IDS: &str = "task_ids";
    pub const RUNNING_TASKS: &str = "running_tasks";
    pub const CONSUMERS: &str = "consumers";
    pub const POLLER_TOKENS: &str = "poller_tokens";
    pub const SOURCES: &str = "sources";
    pub const SOURCE_IDS: &str = "source_ids";
    pub const SOURCE_TOKENS: &str = "source_tokens";
    pub const SOURCE_ERRORS: &str = "source_errors";
    pub const REPLIES: &str = "replies";
    pub const ALL: [&str; 29] = [
        META,
        MSGS,
        MSG_IDS,
        APP_MSGS,
        DELIVERY_ROWS,
        ENDPOINT_DELIVERIES,
        DUE,
        APPS,
        APP_IDS,
        ENDPOINTS,
        ENDPOINT_IDS,
        APP_ENDPOINTS,
        EVENT_TYPES,
        TOKENS,
        IDEMPOTENCY,
        ATTEMPTS,
        ATTEMPT_IDS,
        MSG_ATTEMPTS,
        ENDPOINT_ATTEMPTS,
        TASKS,
        TASK_IDS,
        RUNNING_TASKS,
        CONSUMERS,
        POLLER_TOKENS,
        SOURCES,
        SOURCE_IDS,
        SOURCE_TOKENS,
        SOURCE_ERRORS,
        REPLIES,
    ];
}

/// Keys of the `meta` database.
pub mod meta_key {
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    pub const NEXT_SEQ: &[u8] = b"next_seq";
    pub const NEXT_APP_KEY: &[u8] = b"next_app_key";
    pub const NEXT_ENDPOINT_KEY: &[u8] = b"next_endpoint_key";
    pub const NEXT_ATTEMPT_KEY: &[u8] = b"next_attempt_key";
    /// The time of the last op applied (ms): ops' times are clamped to it.
    pub const APPLIED_MS: &[u8] = b"applied_ms";
    /// Identifies the secrets key the log's secrets are sealed with (absent: not sealed).
    pub const SECRETS_KEY_CHECK: &[u8] = b"secrets_key_check";
    /// Cluster mode: the op stream's sequence of the last op applied (absent in the
    /// embedded mode). Written in the same transaction as that op's effects.
    pub const APPLIED_SEQ: &[u8] = b"applied_seq";
    /// The most endpoints an application may have (`Op::SetEndpointsPerAppMax`; absent:
    /// `limits::ENDPOINTS_PER_APP_DEFAULT`).
    pub const ENDPOINTS_PER_APP_MAX: &[u8] = b"endpoints_per_app_max";
    /// The lowest seq whose delivery rows `endpoint_deliveries` may not hold yet (absent:
    /// 0, none indexed). Rows of lower seqs are all indexed.
    pub const DELIVERIES_UNINDEXED_FROM: &[u8] = b"deliveries_unindexed_from";
}

// === keys ===

pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

// The keys of the tables indexed by two numbers: each says which two, in which order, so
// that a message's seq can never be passed where an attempt's key belongs (or the other
// way round). They are built from the newtypes below; the tables themselves store the
// same big-endian bytes as ever.

/// A message's place in the log (`msgs`' key): given out by the writer, only grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

/// An endpoint's numeric key (`endpoints`' key), given out by the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey(pub u64);

/// An application's numeric key (`apps`' key), given out by the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppKey(pub u64);

/// An attempt's numeric key (`attempts`' key), given out by the writer; only grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptKey(pub u64);

/// A source's numeric key (`sources`' key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey(pub u64);

fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&a.to_be_bytes());
    key[8..].copy_from_slice(&b.to_be_bytes());
    key
}

/// `delivery_rows`: one row per (message, endpoint), a message's rows side by side. Only
/// `log::deliveries` builds it: the tables' layout is that module's alone.
pub(in crate::log) fn delivery_row_key(seq: Seq, endpoint: EndpointKey) -> [u8; 16] {
    pair(seq.0, endpoint.0)
}

/// `endpoint_deliveries` (and schema 1's `deliveries`): an endpoint's deliveries in seq
/// order.
pub(in crate::log) fn endpoint_delivery_key(endpoint: EndpointKey, seq: Seq) -> [u8; 16] {
    pair(endpoint.0, seq.0)
}

/// `app_msgs`: an application's messages in seq order.
pub fn app_message_key(app: AppKey, seq: Seq) -> [u8; 16] {
    pair(app.0, seq.0)
}

/// `msg_attempts`: a message's attempts in the order they were recorded.
pub fn message_attempt_key(seq: Seq, attempt: AttemptKey) -> [u8; 16] {
    pair(seq.0, attempt.0)
}

/// `endpoint_attempts`: an endpoint's attempts in the order they were recorded.
pub fn endpoint_attempt_key(endpoint: EndpointKey, attempt: AttemptKey) -> [u8; 16] {
    pair(endpoint.0, attempt.0)
}

/// `app_endpoints`: an application's endpoints in creation order.
pub fn app_endpoint_key(app: AppKey, endpoint: EndpointKey) -> [u8; 16] {
    pair(app.0, endpoint.0)
}

/// `source_errors`: a source's recent errors, numbered from 0.
pub fn source_error_key(source: SourceKey, n: u64) -> [u8; 16] {
    pair(source.0, n)
}

/// The key of `child` under `parent` in any of the tables above, for the generic walk
/// of a parent's rows (`tables::scan_children`), which knows only that the key is a pair.
pub fn child_key(parent: u64, child: u64) -> [u8; 16] {
    pair(parent, child)
}

/// `due`: pending deliveries in the order they come due.
pub fn due_key(due_ms: u64, endpoint: EndpointKey, seq: Seq) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&due_ms.to_be_bytes());
    key[8..16].copy_from_slice(&endpoint.0.to_be_bytes());
    key[16..].copy_from_slice(&seq.0.to_be_bytes());
    key
}

/// Key of an id in an id index: `i` then the id.
pub fn id_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(b'i');
    key.extend_from_slice(id.as_bytes());
    key
}

/// `replies`: a remembered reply (under its key, a SHA-256) filed by the time it was
/// made, so the oldest come first.
pub fn reply_key(created_ms: u64, key: &[u8; 32]) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&created_ms.to_be_bytes());
    out[8..].copy_from_slice(key);
    out
}

/// Key of a uid in an id index: `u`, the parent's key (0 for org-wide) and the uid.
pub fn uid_key(parent_key: u64, uid: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + uid.len());
    key.push(b'u');
    key.extend_from_slice(&parent_key.to_be_bytes());
    key.extend_from_slice(uid.as_bytes());
    key
}

/// Reads a big-endian u64 from the start of `bytes` (a key or a value).
pub fn read_u64(table: &'static str, bytes: &[u8], offset: usize) -> Result<u64, LogError> {
    bytes
        .get(offset..offset + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| LogError::corrupt(table, "short u64"))
}

// === management records (version byte + JSON) ===

/// An application (tenant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub key: u64,
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub throttle_rate: Option<u16>,
    pub metadata: BTreeMap<String, String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The application of an ingest source (its destinations are its endpoints): not
    /// listed by `GET /app`, and not changed through `/app/{id}`.
    #[serde(default)]
    pub internal: bool,
}

/// A signing key and, for an old key, when it stops signing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OldSecret {
    pub key: Vec<u8>,
    pub expires_ms: u64,
}

/// How deliveries to an endpoint show they come from Sluice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signing {
    /// Standard Webhooks HMAC signatures with the endpoint's secret (the default).
    #[default]
    Hmac,
    /// A fixed header the receiver compares with a shared token, for receivers that
    /// cannot verify signatures.
    StaticToken { header: String, token: String },
}

/// A subscriber endpoint of one application.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub key: u64,
    pub app_key: u64,
    pub id: String,
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub version: u16,
    pub disabled: bool,
    pub throttle_rate: Option<u16>,
    pub event_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    /// The current HMAC key (raw bytes, not the `whsec_` text).
    pub secret: Vec<u8>,
    pub old_secrets: Vec<OldSecret>,
    /// Custom headers in the caller's case; names are unique case-insensitively.
    pub headers: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// `fifo`: one delivery in flight at a time, strictly in message order.
    #[serde(default)]
    pub fifo: bool,
    /// Since when deliveries have been exhausting their schedule with no success between.
    #[serde(default)]
    pub failing_since_ms: Option<u64>,
    /// Why and when Sluice disabled the endpoint (not set when a client disabled it).
    #[serde(default)]
    pub disabled_reason: Option<String>,
    #[serde(default)]
    pub disabled_at_ms: Option<u64>,
    #[serde(default)]
    pub signing: Signing,
    /// The secrets above are sealed (`seal.rs`): as stored, never as used.
    #[serde(default)]
    pub sealed: bool,
    /// Polling only: consumers poll it (`/poller`), Sluice never pushes to its URL.
    #[serde(default)]
    pub polling_only: bool,
}

/// Why an attempt was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    Scheduled,
    Manual,
}

/// One delivery attempt, as recorded in `attempts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub id: String,
    pub msg_id: String,
    pub endpoint_id: String,
    pub seq: u64,
    pub endpoint_key: u64,
    pub app_key: u64,
    pub created_ms: u64,
    pub url: String,
    /// 0 when there was no HTTP response.
    pub status_code: u16,
    /// The outcome's label (`success`, `http_error`, `timeout`, …).
    pub outcome: String,
    pub success: bool,
    pub duration_ms: u64,
    /// The start of the response body, or why there was none.
    pub response: String,
    pub trigger: Trigger,
}

/// What a background task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// Re-send, as manual attempts, the endpoint's failed or skipped deliveries.
    Recover,
    /// Deliver to the endpoint the matching messages it never had a delivery for.
    ReplayMissing,
    /// Re-send, as manual attempts, the endpoint's deliveries that pass the task's
    /// `filter` (Svix's bulk-replay).
    BulkReplay,
}

/// Which deliveries a bulk-replay re-sends (every given part must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayFilter {
    /// Svix's message status of the delivery: 0 success, 1 pending, 2 fail, 3 sending.
    pub status: Option<u8>,
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub tag: Option<String>,
}

/// Where a background task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    Running,
    Finished,
    Failed,
}

/// A background task over one endpoint's messages in a time window, as stored in `tasks`.
/// The window is fixed as a seq range when the task is created (seq order is time order),
/// and `next_seq` moves forward in the same transaction as each batch's requeues, so a
/// restart resumes exactly where the last committed batch stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub key: u64,
    pub id: String,
    pub kind: TaskKind,
    pub status: TaskStatus,
    pub app_key: u64,
    pub endpoint_key: u64,
    pub since_ms: u64,
    pub until_ms: u64,
    /// The next message seq to examine.
    pub next_seq: u64,
    /// The first seq past the window.
    pub end_seq: u64,
    pub messages_sent: u64,
    pub error: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// A bulk-replay's filter (absent in records of the other kinds, and older ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<ReplayFilter>,
}

/// An event type (org-wide, keyed by name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventTypeRecord {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    pub schemas: Option<serde_json::Value>,
    pub feature_flag: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Svix's `groupName` (absent in records written before it existed).
    #[serde(default)]
    pub group_name: Option<String>,
}

/// What a token may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenScope {
    /// Every application and the org-wide resources.
    Org,
    /// One application, by its key.
    App(u64),
    /// Polls one endpoint (`/poller/...`) and nothing else.
    Poller { app: u64, endpoint: u64 },
}

/// A stored API token (only its hash is the key; the token itself is never stored).
/// The fields after `created_ms` came later: records written before them decode with
/// their defaults (no name, no expiry, no use recorded). A revoked token's record is
/// deleted: it is unknown from then on, and the table stays within `TOKENS_MAX`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub scope: TokenScope,
    pub created_ms: u64,
    /// The operator's label for it (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// When the token stops working (a rotated poller token's grace, or the expiry an
    /// API token was given), if ever.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// When it was last used, to `limits::TOKEN_USE_RECORD_INTERVAL_MS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_ms: Option<u64>,
    /// A tenant-portal credential (an access link's bearer token, login code or browser
    /// session): what it may do. Absent for API tokens made with `/auth/token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<PortalGrant>,
}

/// Which of an access link's three credentials a portal token row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortalKind {
    /// The `token` of `app-portal-access`: a bearer token for `/api/v1`.
    Bearer,
    /// The single-use login code in the link's fragment; only `/portal/session` takes it.
    LoginCode,
    /// A browser session (the portal's cookie); never accepted as a bearer token.
    Session,
}

/// What an access link grants, copied onto each credential made from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalGrant {
    pub kind: PortalKind,
    /// The link's id (`portal_…`): logout ends every credential of one link.
    pub link: String,
    /// `api::Capabilities` bits (`readOnly` already folded in: view only).
    pub capabilities: u8,
    /// Event types with these feature flags are visible; others with a flag are not.
    pub feature_flags: Vec<String>,
    /// Svix's `sessionId`, for `expire-all`'s `sessionIds`.
    pub session_id: Option<String>,
}

impl TokenRecord {
    /// Whether the token opens the API at `now_ms`.
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|expires| now_ms < expires)
    }

    /// Which portal credential this is, if it is one.
    pub fn portal_kind(&self) -> Option<PortalKind> {
        self.portal.as_ref().map(|g| g.kind)
    }
}

/// How the link of an operator session opened with the stored org token `hash` begins
/// (`operator_tok_…_`): revoking the token (`Op::RevokeApiToken`) ends those sessions.
pub fn operator_link_prefix(hash: &[u8; 32]) -> String {
    format!("operator_{}_", token_id(hash))
}

/// An operator's link id ending in `unique`: named after the stored org token it was
/// opened with, if any (`operator_link_prefix`), else `operator_<unique>`.
pub fn operator_link(opened_by: Option<&[u8; 32]>, unique: &str) -> String {
    match opened_by {
        Some(hash) => operator_link_prefix(hash) + unique,
        None => format!("operator_{unique}"),
    }
}

/// A token's public id: `tok_` and the first 8 bytes of its SHA-256 in hex. It names the
/// token in lists, revocations and diagnostics without revealing it.
pub fn token_id(hash: &[u8; 32]) -> String {
    let mut id = String::with_capacity(4 + 16);
    id.push_str("tok_");
    for byte in &hash[..8] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// An endpoint's poller token: shown again on `GET .../token`, so kept (sealed when the
/// log seals secrets) next to its hash in `tokens`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PollerTokenRecord {
    pub id: String,
    /// The token in its stored form (`Log::stored_text`).
    pub token: String,
    pub hash: [u8; 32],
    pub created_ms: u64,
    /// `token` is sealed.
    pub sealed: bool,
}

/// An ingest source: where incoming webhooks arrive (`/ingest/in/{token}`), how they are
/// verified, and the application (`key`) whose endpoints receive what it accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source's application's key.
    pub key: u64,
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    /// The source type (`github`, `stripe`, `svix`, …).
    pub kind: String,
    /// The type's settings; secret values in their stored form.
    pub config: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    /// The current URL token, in its stored form (the URL is shown on every read).
    pub token: String,
    pub token_hash: [u8; 32],
    /// Hashes of replaced tokens still accepted, and until when.
    pub old_tokens: Vec<([u8; 32], u64)>,
    /// The number the next source error gets.
    pub next_error: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The secrets above are sealed.
    pub sealed: bool,
}

/// A URL token of a source (current, or replaced and still in its grace).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceTokenRecord {
    pub source_key: u64,
    pub expires_ms: Option<u64>,
}

/// A request a source rejected, as its error log shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceErrorRecord {
    pub id: String,
    pub status: u16,
    pub reason: String,
    /// Request headers, secrets removed.
    pub headers: Vec<(String, String)>,
    /// The start of the body (`limits::SOURCE_ERROR_PAYLOAD_BYTES_MAX`), lossy UTF-8.
    pub payload: String,
    pub created_ms: u64,
}

pub fn encode_json<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Serialising these plain structs cannot fail: every map key is a string.
    serde_json::to_writer(&mut out, record).expect("records serialise");
    out
}

pub fn decode_json<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, LogError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => {
            serde_json::from_slice(body).map_err(|e| LogError::corrupt(table, &e.to_string()))
        }
        Some((v, _)) => Err(LogError::corrupt(
            table,
            &format!("unknown record version {v}"),
        )),
        None => Err(LogError::corrupt(table, "empty record")),
    }
}

// === message records (binary) ===

/// A message as stored in `msgs`. `payload` is the exact JSON text accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRecord {
    pub app_key: u64,
    pub created_ms: u64,
    /// Last day the payload is kept, as a time (ms).
    pub payload_expires_ms: u64,
    pub id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    pub channels: Option<Vec<String>>,
    /// `None` once expunged or expired.
    pub payload: Option<Vec<u8>>,
    /// A test message of send-example: for its one endpoint only, never replayed to others.
    pub example: bool,
    /// The request headers of a message an ingest source received (secrets removed).
    pub headers: Option<Vec<(String, String)>>,
    /// Svix's message `tags` (records before them have none).
    pub tags: Option<Vec<String>>,
    /// Svix's `deliverAt`, when the message was scheduled (ms).
    pub deliver_at_ms: Option<u64>,
}

const FLAG_EVENT_ID: u8 = 1;
const FLAG_CHANNELS: u8 = 2;
const FLAG_PAYLOAD: u8 = 4;
const FLAG_HEADERS: u8 = 8;
const FLAG_EXAMPLE: u8 = 16;
const FLAG_TAGS: u8 = 32;
const FLAG_DELIVER_AT: u8 = 64;

/// The fixed-size start of a message record.
struct MessageHeader {
    flags: u8,
    app_key: u64,
    created_ms: u64,
    payload_expires_ms: u64,
}

impl MessageHeader {
    /// Checks the version and reads the header; the cursor is left at the id.
    fn read(bytes: &[u8]) -> Result<(MessageHeader, Cursor<'_>), LogError> {
        let mut r = Cursor {
            table: db_name::MSGS,
            bytes,
            pos: 0,
        };
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(LogError::corrupt(
                db_name::MSGS,
                &format!("unknown record version {version}"),
            ));
        }
        let header = MessageHeader {
            flags: r.u8()?,
            app_key: r.u64()?,
            created_ms: r.u64()?,
            payload_expires_ms: r.u64()?,
        };
        Ok((header, r))
    }
}

/// A message's times and whether it still has its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionHeader {
    pub created_ms: u64,
    pub payload_expires_ms: u64,
    pub has_payload: bool,
}

impl MessageRecord {
    /// Which optional parts the record holds.
    fn flags(&self) -> u8 {
        [
            (self.event_id.is_some(), FLAG_EVENT_ID),
            (self.channels.is_some(), FLAG_CHANNELS),
            (self.payload.is_some(), FLAG_PAYLOAD),
            (self.example, FLAG_EXAMPLE),
            (self.headers.is_some(), FLAG_HEADERS),
            (self.tags.is_some(), FLAG_TAGS),
            (self.deliver_at_ms.is_some(), FLAG_DELIVER_AT),
        ]
        .iter()
        .filter(|(present, _)| *present)
        .fold(0, |flags, (_, flag)| flags | flag)
    }

    pub fn encode(&self) -> Vec<u8> {
        let payload_len = self.payload.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(64 + self.id.len() + self.event_type.len() + payload_len);
        out.push(RECORD_VERSION);
        let flags = self.flags();
        out.push(flags);
        out.extend_from_slice(&self.app_key.to_be_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.payload_expires_ms.to_be_bytes());
        put_str(&mut out, &self.id);
        put_str(&mut out, &self.event_type);
        if let Some(event_id) = &self.event_id {
            put_str(&mut out, event_id);
        }
        if let Some(channels) = &self.channels {
            assert!(
                channels.len() <= usize::from(u8::MAX),
                "channel count is validated at ingest"
            );
            out.push(u8::try_from(channels.len()).unwrap_or(u8::MAX));
            for channel in channels {
                put_str(&mut out, channel);
            }
        }
        if let Some(headers) = &self.headers {
            assert!(
                headers.len() <= usize::from(u8::MAX),
                "header count is bounded at receipt"
            );
            out.push(u8::try_from(headers.len()).unwrap_or(u8::MAX));
            for (name, value) in headers {
                put_str(&mut out, name);
                put_str(&mut out, value);
            }
        }
        // After the headers and before the payload (the rest), so a record written before
        // tags existed decodes unchanged.
        if let Some(tags) = &self.tags {
            assert!(
                tags.len() <= usize::from(u8::MAX),
                "tag count is validated at ingest"
            );
            out.push(u8::try_from(tags.len()).unwrap_or(u8::MAX));
            for tag in tags {
                put_str(&mut out, tag);
            }
        }
        // After the tags, for the same reason.
        if let Some(deliver_at_ms) = self.deliver_at_ms {
            out.extend_from_slice(&deliver_at_ms.to_be_bytes());
        }
        if let Some(payload) = &self.payload {
            out.extend_from_slice(payload);
        }
        out
    }

    /// The fields retention needs, read without decoding the rest of the record.
    pub fn retention_header(bytes: &[u8]) -> Result<RetentionHeader, LogError> {
        let (header, _) = MessageHeader::read(bytes)?;
        Ok(RetentionHeader {
            created_ms: header.created_ms,
            payload_expires_ms: header.payload_expires_ms,
            has_payload: header.flags & FLAG_PAYLOAD != 0,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<MessageRecord, LogError> {
        let (
            MessageHeader {
                flags,
                app_key,
                created_ms,
                payload_expires_ms,
            },
            mut r,
        ) = MessageHeader::read(bytes)?;
        let id = r.string()?;
        let event_type = r.string()?;
        let event_id = if flags & FLAG_EVENT_ID != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let channels = if flags & FLAG_CHANNELS != 0 {
            let n = r.u8()?;
            Some((0..n).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?)
        } else {
            None
        };
        let headers = if flags & FLAG_HEADERS != 0 {
            let n = r.u8()?;
            Some(
                (0..n)
                    .map(|_| Ok((r.string()?, r.string()?)))
                    .collect::<Result<Vec<_>, LogError>>()?,
            )
        } else {
            None
        };
        let tags = if flags & FLAG_TAGS != 0 {
            let n = r.u8()?;
            Some((0..n).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?)
        } else {
            None
        };
        let deliver_at_ms = if flags & FLAG_DELIVER_AT != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let payload = (flags & FLAG_PAYLOAD != 0).then(|| r.rest().to_vec());
        Ok(MessageRecord {
            app_key,
            created_ms,
            payload_expires_ms,
            id,
            event_type,
            event_id,
            channels,
            payload,
            example: flags & FLAG_EXAMPLE != 0,
            headers,
            tags,
            deliver_at_ms,
        })
    }
}

/// Where one message stands with one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    Pending = 0,
    Sending = 1,
    Succeeded = 2,
    Failed = 3,
    /// Not attempted: the endpoint was disabled when the message arrived.
    Skipped = 4,
}

/// A message's delivery to one endpoint, as stored in `deliveries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub state: DeliveryState,
    /// Queued by a person (resend, recover): attempted once, never retried.
    pub manual: bool,
    pub attempts: u16,
    /// When the next attempt is due (ms); meaningful while pending.
    pub next_due_ms: u64,
    pub updated_ms: u64,
}

/// The high bit of a delivery's state byte: the delivery is manual.
const MANUAL_BIT: u8 = 0x80;

impl DeliveryRecord {
    pub const ENCODED_LEN: usize = 1 + 1 + 2 + 8 + 8;

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0] = RECORD_VERSION;
        out[1] = self.state as u8 | if self.manual { MANUAL_BIT } else { 0 };
        out[2..4].copy_from_slice(&self.attempts.to_be_bytes());
        out[4..12].copy_from_slice(&self.next_due_ms.to_be_bytes());
        out[12..20].copy_from_slice(&self.updated_ms.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<DeliveryRecord, LogError> {
        let table = db_name::DELIVERY_ROWS;
        if bytes.len() != Self::ENCODED_LEN || bytes[0] != RECORD_VERSION {
            return Err(LogError::corrupt(table, "bad delivery record"));
        }
        let state = match bytes[1] & !MANUAL_BIT {
            0 => DeliveryState::Pending,
            1 => DeliveryState::Sending,
            2 => DeliveryState::Succeeded,
            3 => DeliveryState::Failed,
            4 => DeliveryState::Skipped,
            other => {
                return Err(LogError::corrupt(
                    table,
                    &format!("unknown delivery state {other}"),
                ));
            }
        };
        Ok(DeliveryRecord {
            state,
            manual: bytes[1] & MANUAL_BIT != 0,
            attempts: u16::from_be_bytes([bytes[2], bytes[3]]),
            next_due_ms: read_u64(table, bytes, 4)?,
            updated_ms: read_u64(table, bytes, 12)?,
        })
    }
}

/// A remembered response to an idempotent POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub created_ms: u64,
    pub status: u16,
    pub body: Vec<u8>,
}

impl IdempotencyRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(11 + self.body.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<IdempotencyRecord, LogError> {
        let mut r = Cursor {
            table: db_name::IDEMPOTENCY,
            bytes,
            pos: 0,
        };
        if r.u8()? != RECORD_VERSION {
            return Err(LogError::corrupt(
                db_name::IDEMPOTENCY,
                "unknown record version",
            ));
        }
        let created_ms = r.u64()?;
        let status = r.u16()?;
        Ok(IdempotencyRecord {
            created_ms,
            status,
            body: r.rest().to_vec(),
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Every string stored here is bounded by `limits` far below u16::MAX.
    let len = u16::try_from(s.len()).expect("stored strings are bounded by limits");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked reader over a record.
struct Cursor<'a> {
    table: &'static str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| LogError::corrupt(self.table, "record is truncated"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, LogError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, LogError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, LogError> {
        read_u64(self.table, self.take(8)?, 0)
    }

    fn string(&mut self) -> Result<String, LogError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| LogError::corrupt(self.table, "string is not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> MessageRecord {
        MessageRecord {
            app_key: 7,
            created_ms: 1_700_000_000_000,
            payload_expires_ms: 1_800_000_000_000,
            id: "msg_2bCmYSXH7E3zZ3rV8b3KqXhQ1oF".to_owned(),
            event_type: "user.created".to_owned(),
            event_id: Some("evt-1".to_owned()),
            channels: Some(vec!["a".to_owned(), "b".to_owned()]),
            payload: Some(br#"{"x": 1}"#.to_vec()),
            example: true,
            headers: Some(vec![(
                "user-agent".to_owned(),
                "GitHub-Hookshot/1".to_owned(),
            )]),
            tags: Some(vec!["project_1337".to_owned(), "beta".to_owned()]),
            deliver_at_ms: Some(1_700_000_360_000),
        }
    }

    #[test]
    fn message_round_trips_with_and_without_optionals() {
        let full = message();
        assert_eq!(
            MessageRecord::decode(&full.encode()).expect("decodes"),
            full
        );
        let bare = MessageRecord {
            event_id: None,
            channels: None,
            payload: None,
            headers: None,
            tags: None,
            deliver_at_ms: None,
            ..message()
        };
        assert_eq!(
            MessageRecord::decode(&bare.encode()).expect("decodes"),
            bare
        );
        for record in [&full, &bare] {
            let header = MessageRecord::retention_header(&record.encode()).expect("header");
            assert_eq!(
                header,
                RetentionHeader {
                    created_ms: record.created_ms,
                    payload_expires_ms: record.payload_expires_ms,
                    has_payload: record.payload.is_some(),
                }
            );
        }
        assert!(MessageRecord::retention_header(&full.encode()[..17]).is_err());
    }

    #[test]
    fn every_truncation_of_a_message_is_an_error_not_a_panic() {
        let bytes = MessageRecord {
            payload: None,
            ..message()
        }
        .encode();
        for len in 0..bytes.len() {
            assert!(
                MessageRecord::decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn delivery_and_idempotency_round_trip() {
        let d = DeliveryRecord {
            state: DeliveryState::Skipped,
            manual: true,
            attempts: 3,
            next_due_ms: 9,
            updated_ms: 10,
        };
        assert_eq!(DeliveryRecord::decode(&d.encode()).expect("decodes"), d);
        let mut bad = d.encode();
        bad[1] = 99;
        assert!(DeliveryRecord::decode(&bad).is_err());
        let i = IdempotencyRecord {
            created_ms: 5,
            status: 202,
            body: b"{}".to_vec(),
        };
        assert_eq!(IdempotencyRecord::decode(&i.encode()).expect("decodes"), i);
    }

    #[test]
    fn json_records_check_their_version() {
        let t = TokenRecord {
            scope: TokenScope::App(3),
            created_ms: 1,
            name: String::new(),
            expires_ms: None,
            last_used_ms: None,
            portal: None,
        };
        let mut bytes = encode_json(&t);
        assert_eq!(
            decode_json::<TokenRecord>("tokens", &bytes).expect("decodes"),
            t
        );
        bytes[0] = 9;
        assert!(decode_json::<TokenRecord>("tokens", &bytes).is_err());
        assert!(decode_json::<TokenRecord>("tokens", &[]).is_err());
    }

    #[test]
    fn token_records_written_before_names_and_expiry_still_decode() {
        let mut old = vec![RECORD_VERSION];
        old.extend_from_slice(br#"{"scope":"Org","created_ms":5}"#);
        let t: TokenRecord = decode_json("tokens", &old).expect("decodes");
        assert_eq!(
            (t.scope, t.created_ms, t.name.as_str()),
            (TokenScope::Org, 5, "")
        );
        assert_eq!((t.expires_ms, t.last_used_ms), (None, None));
        assert!(t.is_valid_at(u64::MAX));
        let again: TokenRecord = decode_json("tokens", &encode_json(&t)).expect("decodes");
        assert_eq!(again, t, "the new fields round-trip");
        let expiring = TokenRecord {
            expires_ms: Some(10),
            ..t
        };
        assert!(expiring.is_valid_at(9) && !expiring.is_valid_at(10));
        assert_eq!(token_id(&[0xab; 32]), "tok_abababababababab");
    }

    #[test]
    fn keys_sort_numerically() {
        assert!(child_key(1, u64::MAX) < child_key(2, 0));
        assert!(due_key(5, EndpointKey(9), Seq(9)) < due_key(6, EndpointKey(0), Seq(0)));
        assert!(uid_key(1, "z") < uid_key(2, "a"));
    }
}
