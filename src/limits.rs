//! Every compile-time bound of Sluice in one place, named unit-last.
//!
//! Bounds that an operator may tune live in `config.rs` (with their defaults and ranges);
//! the ones here are fixed because the API contract or the on-disk format depends on them.
//! The `const _` assertions at the bottom state how the bounds relate.

use std::time::Duration;

/// Longest accepted `uid` of an application or endpoint, and `eventId` of a message.
pub const UID_LEN_MAX: usize = 256;
/// Longest event type or channel name.
pub const NAME_LEN_MAX: usize = 256;
/// Longest free text field (application name, descriptions).
pub const TEXT_LEN_MAX: usize = 1_024;
/// Longest endpoint URL.
pub const URL_LEN_MAX: usize = 2_048;
/// Largest serialised `metadata` map, in bytes (Svix's limit).
pub const METADATA_BYTES_MAX: usize = 4_096;
/// Most channels on one message (Svix: 1–5).
pub const MESSAGE_CHANNELS_MAX: usize = 5;
/// Most tags on one message (Svix: at most 5).
pub const MESSAGE_TAGS_MAX: usize = 5;
/// Farthest a message's `deliverAt` may ever be ahead, seconds (90 days, the longest payload
/// retention: a delivery scheduled later would find its payload gone). The horizon in force
/// is `api.deliver_at_horizon_seconds`, at most this.
pub const DELIVER_AT_HORIZON_SECONDS_MAX: u64 = 90 * 86_400;
/// Most channels an endpoint filters on (Svix: 1–10).
pub const ENDPOINT_CHANNELS_MAX: usize = 10;
/// Most event types an endpoint filters on.
pub const ENDPOINT_EVENT_TYPES_MAX: usize = 256;
/// Most custom headers on one endpoint.
pub const ENDPOINT_HEADERS_MAX: usize = 32;
/// Longest custom header value (Svix's limit).
pub const HEADER_VALUE_LEN_MAX: usize = 4_096;
/// Longest custom header name.
pub const HEADER_NAME_LEN_MAX: usize = 256;
/// Most unexpired previous signing keys an endpoint keeps (Svix's limit).
pub const OLD_SECRETS_MAX: usize = 10;
/// Longest rotation grace period, in seconds (7 days, Svix's limit).
pub const SECRET_GRACE_SECONDS_MAX: u64 = 604_800;
/// Default rotation grace period, in seconds (24 h).
pub const SECRET_GRACE_SECONDS_DEFAULT: u64 = 86_400;
/// Signing secret length bounds, in decoded bytes (Svix: 24–75).
pub const SECRET_BYTES_MIN: usize = 24;
pub const SECRET_BYTES_MAX: usize = 75;
/// Length of a generated signing secret, in bytes.
pub const SECRET_BYTES_GENERATED: usize = 24;
/// Largest `limit` of one list page, and the default.
pub const PAGE_LIMIT_MAX: usize = 250;
pub const PAGE_LIMIT_DEFAULT: usize = 50;
/// Most rows a filtered list scans for one page before it returns what it found
/// (with an iterator to continue), so a sparse filter cannot make one request unbounded.
pub const PAGE_SCAN_ROWS_MAX: usize = 10_000;
/// Longest `idempotency-key` header.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 256;
/// How long a successful POST is remembered under its idempotency key: 24 h (Svix: 12 h).
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 3_600_000;
/// Most idempotent replies remembered at once: past it the oldest leave before their day
/// is up. It bounds the reply index's memory (about 20 B a reply, 71 MiB at the bound)
/// and the `replies` table (about 0.3 KiB a reply). At 40 idempotent POSTs a second (the
/// Svix SDKs send a key with every POST) it holds the whole day; at 500 a second, the
/// last 1.9 hours (Svix keeps 12 hours).
pub const IDEMPOTENCY_REPLIES_MAX: u64 = 3_500_000;
/// Most remembered replies one expiry batch deletes (or, in the table of earlier layouts,
/// looks at), so a batch is one short write.
pub const IDEMPOTENCY_SWEEP_ROWS_MAX: usize = 1_000;
/// One day, in ms.
pub const DAY_MS: u64 = 86_400_000;
/// Message payload retention bounds, in days (Svix: 5–90, default 90).
pub const RETENTION_DAYS_MIN: u16 = 1;
pub const RETENTION_DAYS_MAX: u16 = 90;
pub const RETENTION_DAYS_DEFAULT: u16 = 90;
/// Most write operations committed in one LMDB transaction.
pub const COMMIT_BATCH_OPS_MAX: usize = 4_096;
/// Longest request path + query we route, in bytes.
pub const URI_LEN_MAX: usize = 8_192;
/// Most applications (tenants) one Sluice holds.
pub const APPS_MAX: u64 = 1_000_000;
/// Most endpoints one application may have unless `api.endpoints_per_app_max` says
/// otherwise.
pub const ENDPOINTS_PER_APP_DEFAULT: u32 = 1_000;
/// The highest `api.endpoints_per_app_max` may go. Matching a message costs its candidate
/// endpoints, not the application's (`log::index`); retention seeks each endpoint of
/// the application once per batch.
pub const ENDPOINTS_PER_APP_MAX: u32 = 100_000;
/// Most messages one retention-sweep batch deletes, and most it checks for an expired
/// payload: one batch is one short write.
pub const RETENTION_SWEEP_ROWS_MAX: usize = 500;
/// Most delivery rows one retention batch expects to read (each message counts one per
/// endpoint of its application; the first message is taken whatever it counts), so
/// applications with many endpoints cannot make a batch long.
pub const RETENTION_SWEEP_DELIVERY_ROWS_MAX: usize = 20_000;
/// Most batches one sweep (retention, purge, idempotency expiry) runs in a tick; the rest
/// waits for the next tick.
pub const SWEEP_BATCHES_MAX: usize = 1_000;
/// The share of the writer's time each sweep may take, in percent: after each batch it
/// waits long enough that its batches fill at most this share, so ingest keeps the rest
/// while an old log is deleted.
pub const SWEEP_WRITER_SHARE_PERCENT: u32 = 25;
/// Most rows (messages, deliveries, due rows, attempts) one purge batch of a deleted
/// application deletes, about: one batch is one short write.
pub const PURGE_BATCH_ROWS_MAX: usize = 2_000;
/// Most background tasks (recover, replay-missing) running at once.
pub const TASKS_RUNNING_MAX: usize = 16;
/// Most rows one background-task batch examines, and most deliveries it queues: one
/// batch is one short write, so tasks never hold up ingest.
pub const TASK_BATCH_ROWS_MAX: usize = 1_000;
pub const TASK_BATCH_REQUEUES_MAX: usize = 100;
/// Widest window of a recover or replay-missing task: 14 days and 5 minutes (Svix's).
pub const TASK_WINDOW_MAX_MS: u64 = 14 * 86_400_000 + 300_000;
/// Most deliveries an endpoint-stats request counts; a wider window is refused.
pub const STATS_ROWS_MAX: usize = 2_000_000;
/// Most spans an endpoint's stats may be split into (`buckets`): a week of hours.
pub const STATS_BUCKETS_MAX: usize = 168;
/// The window endpoint stats cover when the request names none: 28 days.
pub const STATS_WINDOW_DEFAULT_MS: u64 = 28 * 86_400_000;
/// Cluster mode: most ops of one node published and not yet applied here; beyond it a
/// submit is refused as busy (503), like a full writer queue.
pub const CLUSTER_IN_FLIGHT_MAX: usize = 16_384;
/// Cluster mode: most ops in one stream message (a batch of ops the node's requests
/// submitted while its earlier publishes were on their way).
pub const CLUSTER_BATCH_OPS_MAX: usize = 256;
/// Cluster mode: most bytes of ops in one stream message (the NATS servers' default
/// `max_payload` is 1 MB; an op larger than this goes alone).
pub const CLUSTER_BATCH_BYTES_MAX: usize = 512 * 1024;
/// Cluster mode: batches one node publishes at once; while they are on their way, the next
/// batch gathers the ops that arrive.
pub const CLUSTER_PUBLISHES_IN_FLIGHT: usize = 4;
/// Cluster mode: how long one op may take to be stored by the stream, retries included
/// (a NATS leader election stalls publishing about 5 s), ms.
pub const CLUSTER_PUBLISH_DEADLINE_MS: u64 = 15_000;
/// Cluster mode: the pause before an op is published again with the same id (a retry
/// without one spins on two cores during an election), ms.
pub const CLUSTER_PUBLISH_RETRY_PAUSE_MS: u64 = 250;
/// Cluster mode: how long a node waits for its own applier to apply an op the stream has
/// stored, ms.
pub const CLUSTER_APPLY_WAIT_MS: u64 = 30_000;
/// Cluster mode: how long a starting node waits to apply the stream up to its end before
/// it serves, ms.
pub const CLUSTER_CATCH_UP_MAX_MS: u64 = 120_000;
/// Cluster mode: how long JetStream API calls (stream and bucket management, KV) may
/// take; creating a consumer with a peer down took about 5.8 s, ms.
pub const CLUSTER_API_TIMEOUT_MS: u64 = 10_000;
/// How long a starting node waits for JetStream to answer (a NATS cluster starting at the
/// same time elects its meta leader first), and how long it pauses between tries.
pub const CLUSTER_START_WAIT_MS: u64 = 60_000;
pub const CLUSTER_START_RETRY_MS: u64 = 500;
/// How long a starting node (or a cluster tool) tries to reach a NATS server before it
/// gives up, ms.
pub const CLUSTER_CONNECT_WAIT_MS: u64 = 10_000;
/// How often a node waiting to catch up with the stream looks at its applied sequence.
pub const CLUSTER_APPLIED_POLL_MS: u64 = 5;
/// Cluster mode: one chunk of a snapshot in the object store (one NATS message, well under
/// the servers' 1 MB default `max_payload`); a snapshot is read and written one chunk at a
/// time, so this is what an upload holds in memory.
pub const CLUSTER_SNAPSHOT_CHUNK_BYTES: usize = 128 * 1024;
/// Cluster mode: chunks a restoring node asks for at once (what a download holds in
/// memory: this many chunks).
pub const CLUSTER_SNAPSHOT_FETCH_CHUNKS: i64 = 8;
/// Cluster mode: how long one chunk of a snapshot may take to arrive while restoring, ms.
pub const CLUSTER_SNAPSHOT_CHUNK_WAIT_MS: u64 = 30_000;
/// Cluster mode: how long `sluice cluster snapshot` waits for a node to write one, ms.
pub const CLUSTER_SNAPSHOT_REQUEST_MS: u64 = 600_000;
/// Cluster mode: how often each node looks at the newest snapshot (for its age metric and,
/// on the `singleton` holder, the schedule), at most, ms.
pub const CLUSTER_SNAPSHOT_CHECK_MS: u64 = 60_000;
/// Cluster mode: most snapshots listed from the object store (far above `snapshot_keep`'s
/// 100: older ones are deleted as each new one is written).
pub const CLUSTER_SNAPSHOTS_LISTED_MAX: usize = 1_000;

// === delivery engine ===

/// Capacity of each shard's hand-off queue from the writer.
pub const SHARD_INTAKE_MAX: usize = 16_384;
/// How far ahead a shard holds retries in memory, ms.
pub const HORIZON_MS: u64 = 60_000;
/// How often the scanner reads the `due` table for every shard.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Most `due` rows one scan reads (it resumes there next time).
pub const SCAN_ROWS_MAX: usize = 20_000;
/// The shortest gap between two reads of the `due` table when shards ask for reads sooner
/// than `SCAN_INTERVAL` (a full timer map left work due soon in the log): asking cannot
/// make the scanner spin.
pub const SCAN_SOON_GAP: Duration = Duration::from_millis(50);
/// Reads of the `due` table a shard may have waiting: the scanner skips a shard that has
/// not taken the last one (its rows stay in the log for the next round).
pub const SCAN_READS_WAITING_MAX: usize = 1;
/// Most retries a shard holds in its timer map.
pub const TIMERS_MAX: usize = 100_000;
/// Delivery rows that wait, side by side at the end of `delivery_rows`, before their
/// per-endpoint index rows are written together in one apply. Each endpoint's index leaf
/// is then copied once per this many rows instead of once per commit (BENCHMARKS.md,
/// "Where fan-out's commits go": 1.37x fan-out); a reader of an endpoint's deliveries
/// scans at most this many (plus one message's) unindexed rows.
pub const DELIVERY_INDEX_BATCH_ROWS: u64 = 16_384;
/// Most delivery rows one refill of a spilled lane reads.
pub const REFILL_ROWS_MAX: usize = 4_096;
/// Most attempts in flight in one shard (all its lanes together).
pub const SHARD_IN_FLIGHT_MAX: usize = 4_096;
/// Most answered attempts of one shard whose records are queued but not yet durable; at
/// this many, the shard starts no attempt until some commit (back-pressure from the disk).
pub const SHARD_RECORDING_MAX: usize = 4_096;
/// Most deliveries one lane holds in memory; more stay in the `due` table until the
/// shard's scan brings them back.
pub const LANE_QUEUE_MAX: usize = 1_024;
/// Most endpoints `EndpointCache` holds; past it, the cache starts over.
pub const ENDPOINT_CACHE_MAX: usize = 10_000;
/// How far a delivery's durable due time may lie ahead of this clock and still be
/// attempted (the writer's batch time can run a little ahead of a reader's clock).
pub const DUE_SLACK_MS: u64 = 1_000;
/// How long a lane pauses after 429/502/503/504 without `Retry-After`.
pub const THROTTLE_PAUSE_DEFAULT_MS: u64 = 5_000;

// === delivery transport ===

/// Most response bytes read before the connection is given up.
pub const RESPONSE_READ_BYTES_MAX: usize = 64 * 1024;
/// Most response bytes kept in the attempt record.
pub const RESPONSE_KEPT_BYTES_MAX: usize = 4 * 1024;
/// How long an idle pooled connection is kept.
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// Longest answer head an egress proxy may send to a CONNECT.
pub const PROXY_ANSWER_BYTES_MAX: usize = 8 * 1024;
/// Most idle connections kept per destination. Many endpoints often share one host (a
/// platform's tenants behind one receiver), and one commit hands their deliveries to the
/// shards at once: with 256, the fan-out bench (1,000 endpoints on one receiver) dialled
/// a new connection for one attempt in seven, and 1,024 cut that to its first thousand
/// (see BENCHMARKS.md). An idle connection costs a descriptor and a few KiB, and closes
/// after `POOL_IDLE`.
pub const POOL_IDLE_PER_HOST_MAX: usize = 1024;

/// The soft limit on open files Sluice raises itself to when the hard limit is
/// unlimited (Linux's own default ceiling, `fs.nr_open`); otherwise it raises it to the
/// hard limit.
pub const OPEN_FILES_SOFT_MAX: u64 = 1 << 20;

// === timing of the background loops ===

/// How long the task runner waits after a failed batch before it tries again.
pub const TASK_RETRY_DELAY: Duration = Duration::from_millis(200);
/// How often the sweeper looks for data past its retention.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// The least time between the starts of two passes over the log for expired payloads:
/// a pass reads every message older than a day, so it is not repeated every tick, and a
/// payload outlives its retention by at most about this long.
pub const PAYLOAD_PASS_INTERVAL_MS: u64 = 3_600_000;
/// A heartbeat older than this means its loop is stuck.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(3);
/// How long the writer waits for work before it beats its heartbeat again.
pub const IDLE_WAKE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a sample of the data directory's free space (statvfs and the log's reusable
/// pages) serves the disk guard before it is taken again.
pub const DISK_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// A failing write batch is reported at most once per this interval, with the count of
/// failures since the last report.
pub const WRITE_FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How often histograms are compacted and the log's gauges sampled.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

// === API ===

/// Most concurrent connections to the `[metrics] listen` listener (Prometheus needs one).
pub const METRICS_CONNECTIONS_MAX: usize = 16;

/// Largest serialised `schemas` object, in bytes.
pub const SCHEMAS_BYTES_MAX: usize = 64 * 1024;
/// Most token buckets kept. To make room, buckets that have refilled completely (idle
/// tokens) are forgotten, which loses nothing; if every one is in use, the fullest goes.
pub const RATE_BUCKETS_MAX: usize = 100_000;

/// Most tokens stored (API tokens, expired ones until revoked, and endpoints' poller
/// tokens): a token list is one bounded scan.
pub const TOKENS_MAX: u64 = 10_000;
/// An access link's life (`app-portal-access` `expiry`), s: Svix's 1 h to 7 d, default 7 d.
pub const PORTAL_EXPIRY_SECONDS_MIN: u64 = 3_600;
pub const PORTAL_EXPIRY_SECONDS_MAX: u64 = 7 * 86_400;
pub const PORTAL_EXPIRY_SECONDS_DEFAULT: u64 = PORTAL_EXPIRY_SECONDS_MAX;
/// Most feature flags one access link carries.
pub const PORTAL_FEATURE_FLAGS_MAX: usize = 64;
/// Most `sessionIds` one `expire-all` names.
pub const PORTAL_SESSION_IDS_MAX: usize = 1_000;
/// Most rows a portal list page shows (and asks the API for).
pub const PORTAL_PAGE_ROWS_MAX: usize = 50;
/// Most delivery rows one portal page reads for its 24-hour counts (the endpoints list's
/// rows, the operator's applications), split evenly among the page's rows; a count that
/// reaches its share stops there and shows as a lower bound.
pub const PORTAL_COUNTED_DELIVERIES_PER_PAGE_MAX: usize = 200_000;
/// Most bytes of a receiver's response body or a payload a portal page shows.
pub const PORTAL_BODY_SHOWN_BYTES_MAX: usize = 64 * 1024;
/// Largest form body a portal page accepts.
pub const PORTAL_FORM_BYTES_MAX: usize = 16 * 1024;
/// A token's last use is recorded at most once per this interval (one small write a
/// minute per busy token, never one per request).
pub const TOKEN_USE_RECORD_INTERVAL_MS: u64 = 60_000;
/// Failed authentications a client address may make at once, and how many more it earns
/// a second; past them it is answered 429 before its token is even looked at.
pub const AUTH_FAILURES_BURST: u32 = 20;
pub const AUTH_FAILURES_PER_SECOND: u32 = 1;
/// Most client addresses whose failed authentications are tracked (idle ones are
/// forgotten first, as with `RATE_BUCKETS_MAX`).
pub const AUTH_FAILURE_BUCKETS_MAX: usize = 10_000;
/// The shortest `SLUICE_ADMIN_TOKEN` accepted at start.
pub const ADMIN_TOKEN_LEN_MIN: usize = 32;

// === polling and ingest sources ===

/// Most durable poller consumers one endpoint has.
pub const POLLER_CONSUMERS_MAX: usize = 100;
/// Longest poller consumer id.
pub const CONSUMER_ID_LEN_MAX: usize = 256;
/// How long a rotated poller token keeps working when the rotation names no expiry,
/// and the longest it may (Svix: 300 s default, 86,400 s at most).
pub const POLLER_TOKEN_GRACE_SECONDS_DEFAULT: u64 = 300;
pub const POLLER_TOKEN_GRACE_SECONDS_MAX: u64 = 86_400;
/// Most rejected requests one source's error log keeps (the oldest go first).
pub const SOURCE_ERRORS_MAX: u64 = 100;
/// Most payload bytes a source error keeps.
pub const SOURCE_ERROR_PAYLOAD_BYTES_MAX: usize = 4_096;
/// Most request headers kept with a received message or a source error.
pub const SOURCE_HEADERS_KEPT_MAX: usize = 64;
/// Most replaced URL tokens a source accepts at once (their grace not over).
pub const SOURCE_OLD_TOKENS_MAX: usize = 3;
/// Most config entries of a source, and the longest config value.
pub const SOURCE_CONFIG_ENTRIES_MAX: usize = 16;
pub const SOURCE_CONFIG_VALUE_LEN_MAX: usize = 4_096;

const _: () = assert!(SOURCE_HEADERS_KEPT_MAX <= u8::MAX as usize);
const _: () = assert!(POLLER_TOKEN_GRACE_SECONDS_DEFAULT <= POLLER_TOKEN_GRACE_SECONDS_MAX);
const _: () = assert!(PORTAL_EXPIRY_SECONDS_MIN <= PORTAL_EXPIRY_SECONDS_DEFAULT);
const _: () = assert!(PORTAL_EXPIRY_SECONDS_DEFAULT <= PORTAL_EXPIRY_SECONDS_MAX);
const _: () = assert!(RESPONSE_KEPT_BYTES_MAX <= RESPONSE_READ_BYTES_MAX);
const _: () = assert!(CLUSTER_PUBLISH_RETRY_PAUSE_MS < CLUSTER_PUBLISH_DEADLINE_MS);
const _: () = assert!(CLUSTER_PUBLISH_DEADLINE_MS < CLUSTER_APPLY_WAIT_MS);
const _: () = assert!(PAGE_LIMIT_DEFAULT <= PAGE_LIMIT_MAX);
const _: () = assert!(PAGE_LIMIT_MAX <= PAGE_SCAN_ROWS_MAX);
const _: () = assert!(TASK_BATCH_REQUEUES_MAX <= TASK_BATCH_ROWS_MAX);
const _: () = assert!(SECRET_BYTES_MIN <= SECRET_BYTES_GENERATED);
const _: () = assert!(SECRET_BYTES_GENERATED <= SECRET_BYTES_MAX);
const _: () = assert!(SECRET_GRACE_SECONDS_DEFAULT <= SECRET_GRACE_SECONDS_MAX);
const _: () = assert!(SWEEP_WRITER_SHARE_PERCENT > 0 && SWEEP_WRITER_SHARE_PERCENT <= 100);
const _: () = assert!(RETENTION_DAYS_MIN <= RETENTION_DAYS_DEFAULT);
const _: () = assert!(RETENTION_DAYS_DEFAULT <= RETENTION_DAYS_MAX);
// Lengths are stored as u16 in message records.
const _: () = assert!(UID_LEN_MAX <= u16::MAX as usize && NAME_LEN_MAX <= u16::MAX as usize);
