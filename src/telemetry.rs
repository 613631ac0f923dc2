//! Telemetry: every Prometheus metric Sluice exports (name, help, unit, buckets), the
//! process-wide recorder behind `GET /metrics`, and its upkeep.
//!
//! Conventions: names start `sluice_`, use base units (seconds, bytes) and counters end
//! `_total`; every histogram has explicit buckets (the attempt-duration histogram has an
//! edge at exactly 5 s, the delivery budget, so "share within budget" is one division).
//! Labels are bounded enums or shard numbers only — never an application, endpoint or
//! message id.
//!
//! The recorder is global (the `metrics` facade has one per process), so it is installed
//! once, by the first `start`; every later start in the same process shares it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::limits::UPKEEP_INTERVAL;
use crate::log::Log;

/// Metric names, final suffixes included.
pub mod name {
    pub const BUILD_INFO: &str = "sluice_build_info";
    pub const MESSAGES_ACCEPTED: &str = "sluice_messages_accepted_total";
    pub const MESSAGES_REJECTED: &str = "sluice_messages_rejected_total";
    pub const INGEST_DURATION: &str = "sluice_ingest_request_duration_seconds";
    pub const COMMIT_DURATION: &str = "sluice_log_commit_duration_seconds";
    pub const COMMIT_OPERATIONS: &str = "sluice_log_commit_operations";
    pub const FANOUT_MATCH_DURATION: &str = "sluice_fanout_match_duration_seconds";
    pub const COMMITS_FAILED: &str = "sluice_log_commits_failed_total";
    pub const LOG_RESERVE_BYTES: &str = "sluice_log_reserve_bytes";
    pub const ATTEMPTS: &str = "sluice_delivery_attempts_total";
    pub const ATTEMPT_DURATION: &str = "sluice_delivery_attempt_duration_seconds";
    pub const ATTEMPTS_OVER_BUDGET: &str = "sluice_delivery_attempts_over_budget_total";
    pub const CONNECTIONS_OPENED: &str = "sluice_delivery_connections_opened_total";
    pub const DELIVERY_LATENCY: &str = "sluice_delivery_latency_seconds";
    pub const RETRIES_SCHEDULED: &str = "sluice_retries_scheduled_total";
    pub const DELIVERIES_EXHAUSTED: &str = "sluice_deliveries_exhausted_total";
    pub const DELIVERIES_SKIPPED: &str = "sluice_deliveries_skipped_total";
    pub const RETENTION_MESSAGES_DELETED: &str = "sluice_retention_messages_deleted_total";
    pub const RETENTION_PAYLOADS_DROPPED: &str = "sluice_retention_payloads_dropped_total";
    pub const IDEMPOTENCY_EXPIRED: &str = "sluice_idempotency_expired_total";
    pub const IDEMPOTENCY_REPLIES: &str = "sluice_idempotency_replies";
    pub const DELIVERIES_PENDING: &str = "sluice_deliveries_pending";
    pub const BACKLOG_AGE: &str = "sluice_deliveries_overdue_seconds";
    pub const DELIVERIES_IN_FLIGHT: &str = "sluice_deliveries_in_flight";
    pub const SHARD_RETRIES_IN_MEMORY: &str = "sluice_shard_retries_in_memory";
    pub const SHARD_LANES: &str = "sluice_shard_lanes";
    pub const SHARD_LANES_THROTTLED: &str = "sluice_shard_lanes_throttled";
    pub const ENDPOINTS: &str = "sluice_endpoints";
    pub const TASKS_RUNNING: &str = "sluice_background_tasks_running";
    pub const LMDB_MAP_SIZE: &str = "sluice_lmdb_map_size_bytes";
    pub const LMDB_USED: &str = "sluice_lmdb_used_bytes";
    pub const LMDB_READERS: &str = "sluice_lmdb_readers";
    pub const AUTH_FAILURES: &str = "sluice_api_auth_failures_total";
    pub const DISK_FREE: &str = "sluice_disk_free_bytes";
    pub const LMDB_REUSABLE: &str = "sluice_lmdb_reusable_bytes";
    pub const SOURCE_REQUESTS: &str = "sluice_source_requests_total";
    // Cluster mode only (absent without `[cluster]`).
    pub const CLUSTER_APPLIED_SEQ: &str = "sluice_cluster_applied_seq";
    pub const CLUSTER_APPLIER_LAG: &str = "sluice_cluster_applier_lag";
    pub const CLUSTER_SHARDS_OWNED: &str = "sluice_cluster_shards_owned";
    pub const CLUSTER_LEASE_CHANGES: &str = "sluice_cluster_lease_changes_total";
    pub const CLUSTER_PUBLISH_DURATION: &str = "sluice_cluster_publish_duration_seconds";
    pub const CLUSTER_PUBLISH_RETRIES: &str = "sluice_cluster_publish_retries_total";
    pub const CLUSTER_PUBLISH_BATCH_OPS: &str = "sluice_cluster_publish_batch_ops";
    pub const CLUSTER_PUBLISH_TO_APPLY: &str = "sluice_cluster_publish_to_apply_seconds";
    pub const CLUSTER_SNAPSHOT_AGE: &str = "sluice_cluster_snapshot_age_seconds";
    pub const CLUSTER_SNAPSHOTS: &str = "sluice_cluster_snapshots_total";
}

/// The delivery budget: attempts longer than this are "over budget".
pub const ATTEMPT_BUDGET_SECONDS: f64 = 5.0;

const ATTEMPT_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0,
];
const LATENCY_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];
const FAST_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Matching one message to its endpoints: microseconds, 10 µs the design's bound.
const MATCH_BUCKETS: [f64; 10] = [
    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.001, 0.01, 0.1,
];
const BATCH_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Handles of the metrics recorded on every request, commit or attempt, registered once
/// when the recorder is installed. The macros look a name up in the recorder's registry
/// on every call (about 1.5 % of Sluice's CPU in the ingest and deliver profiles).
static HOT: OnceLock<Hot> = OnceLock::new();

struct Hot {
    ingest_duration: metrics::Histogram,
    messages_accepted: metrics::Counter,
    commit_duration: metrics::Histogram,
    commit_operations: metrics::Histogram,
    fanout_match: metrics::Histogram,
    attempt_duration: metrics::Histogram,
    delivery_latency: metrics::Histogram,
    /// `sluice_attempts_total{outcome="success",status_class="2xx"}`: nearly every attempt.
    attempts_succeeded: metrics::Counter,
    deliveries_in_flight: metrics::Gauge,
}

impl Hot {
    fn register() -> Hot {
        Hot {
            ingest_duration: metrics::histogram!(name::INGEST_DURATION),
            messages_accepted: counter!(name::MESSAGES_ACCEPTED),
            commit_duration: metrics::histogram!(name::COMMIT_DURATION),
            commit_operations: metrics::histogram!(name::COMMIT_OPERATIONS),
            fanout_match: metrics::histogram!(name::FANOUT_MATCH_DURATION),
            attempt_duration: metrics::histogram!(name::ATTEMPT_DURATION),
            delivery_latency: metrics::histogram!(name::DELIVERY_LATENCY),
            attempts_succeeded: counter!(
                name::ATTEMPTS,
                "outcome" => "success",
                "status_class" => "2xx",
            ),
            deliveries_in_flight: metrics::gauge!(name::DELIVERIES_IN_FLIGHT),
        }
    }
}

/// Runs `f` with the hot handles: the registered ones once the recorder is installed,
/// else fresh ones (a test process without `install`, where they record nowhere).
fn with_hot(f: impl FnOnce(&Hot)) {
    match HOT.get() {
        Some(hot) => f(hot),
        None => f(&Hot::register()),
    }
}

/// Installs the process-wide recorder on first use and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE.get_or_init(build).clone()
}

fn build() -> PrometheusHandle {
    let buckets = [
        (name::ATTEMPT_DURATION, &ATTEMPT_BUCKETS[..]),
        (name::DELIVERY_LATENCY, &LATENCY_BUCKETS[..]),
        (name::INGEST_DURATION, &FAST_BUCKETS[..]),
        (name::COMMIT_DURATION, &FAST_BUCKETS[..]),
        (name::CLUSTER_PUBLISH_DURATION, &FAST_BUCKETS[..]),
        (name::CLUSTER_PUBLISH_TO_APPLY, &FAST_BUCKETS[..]),
        (name::COMMIT_OPERATIONS, &BATCH_BUCKETS[..]),
        (name::CLUSTER_PUBLISH_BATCH_OPS, &BATCH_BUCKETS[..]),
        (name::FANOUT_MATCH_DURATION, &MATCH_BUCKETS[..]),
    ];
    let mut builder = PrometheusBuilder::new();
    for (metric, edges) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(metric.to_owned()), edges)
            .unwrap_or_else(|_| unreachable!("bucket lists are not empty"));
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Fails only if another recorder was installed first (an embedding program's); then
    // that one receives Sluice's metrics and this handle renders nothing.
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("A metrics recorder was already installed; /metrics will be empty.");
    }
    describe();
    describe_cluster();
    let _ = HOT.set(Hot::register());
    gauge!(name::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Counters exist from the start, at 0, so that `rate()` sees their first increase.
    for counter in [
        name::MESSAGES_ACCEPTED,
        name::ATTEMPTS_OVER_BUDGET,
        name::CONNECTIONS_OPENED,
        name::RETRIES_SCHEDULED,
        name::DELIVERIES_EXHAUSTED,
        name::DELIVERIES_SKIPPED,
        name::COMMITS_FAILED,
        name::RETENTION_MESSAGES_DELETED,
        name::RETENTION_PAYLOADS_DROPPED,
        name::IDEMPOTENCY_EXPIRED,
    ] {
        counter!(counter).absolute(0);
    }
    for outcome in ["refused", "throttled"] {
        counter!(name::AUTH_FAILURES, "outcome" => outcome).absolute(0);
    }
    for outcome in [
        "accepted",
        "handshake",
        "rejected",
        "throttled",
        "unknown_url",
    ] {
        counter!(name::SOURCE_REQUESTS, "outcome" => outcome).absolute(0);
    }
    handle
}

#[expect(
    clippy::too_many_lines,
    reason = "one description per metric: the list reads as the catalogue"
)]
fn describe() {
    use name::*;
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
    describe_gauge!(
        LOG_RESERVE_BYTES,
        Unit::Bytes,
        "Zeroed space kept past the data file's last written page, at the last top-up."
    );
    describe_counter!(
        MESSAGES_ACCEPTED,
        "Messages accepted (committed) by message create."
    );
    describe_counter!(
        MESSAGES_REJECTED,
        "Message create requests refused, by reason."
    );
    describe_histogram!(
        INGEST_DURATION,
        Unit::Seconds,
        "Message create requests, arrival to response."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Log batch commits, first operation to fsync."
    );
    describe_histogram!(COMMIT_OPERATIONS, "Operations per log commit.");
    describe_histogram!(
        FANOUT_MATCH_DURATION,
        Unit::Seconds,
        "Finding the endpoints a new message goes to (the writer's endpoint index)."
    );
    describe_counter!(COMMITS_FAILED, "Log batches aborted by a malfunction.");
    describe_counter!(ATTEMPTS, "Delivery attempts, by outcome and status class.");
    describe_histogram!(
        ATTEMPT_DURATION,
        Unit::Seconds,
        "Delivery attempts, connect to the last response byte (budget: 5 s)."
    );
    describe_counter!(ATTEMPTS_OVER_BUDGET, "Delivery attempts longer than 5 s.");
    describe_counter!(
        CONNECTIONS_OPENED,
        "Connections the delivery client opened (a pooled one reused is not counted)."
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Deliveries, message acceptance to the first successful attempt."
    );
    describe_counter!(RETRIES_SCHEDULED, "Failed attempts given a retry.");
    describe_counter!(
        DELIVERIES_EXHAUSTED,
        "Deliveries that used up their schedule."
    );
    describe_counter!(
        DELIVERIES_SKIPPED,
        "Deliveries not attempted: endpoint disabled or deleted."
    );
    describe_gauge!(
        DELIVERIES_PENDING,
        "Deliveries waiting for an attempt or a retry."
    );
    describe_gauge!(
        BACKLOG_AGE,
        Unit::Seconds,
        "How long the most overdue pending delivery has been due (0: none overdue)."
    );
    describe_gauge!(DELIVERIES_IN_FLIGHT, "Delivery attempts in flight.");
    describe_gauge!(
        SHARD_RETRIES_IN_MEMORY,
        "Retries due within the horizon held by a shard."
    );
    describe_gauge!(
        SHARD_LANES,
        "Endpoint lanes with work, or a pause or pacing still ahead, per shard."
    );
    describe_gauge!(
        SHARD_LANES_THROTTLED,
        "Lanes paused by 429/502/503/504 or a FIFO retry, per shard."
    );
    describe_gauge!(ENDPOINTS, "Endpoints, by state.");
    describe_gauge!(TASKS_RUNNING, "Background tasks (recover, replay) running.");
    describe_gauge!(LMDB_MAP_SIZE, Unit::Bytes, "Size of the LMDB map.");
    describe_gauge!(LMDB_USED, Unit::Bytes, "Bytes of the LMDB map in use.");
    describe_gauge!(LMDB_READERS, "LMDB reader slots in use.");
    describe_gauge!(
        DISK_FREE,
        Unit::Bytes,
        "Bytes free for Sluice on the data directory's filesystem."
    );
    describe_gauge!(
        LMDB_REUSABLE,
        Unit::Bytes,
        "Bytes of the data file freed by deletes, or zeroed past its data, filled before the file grows."
    );
    describe_counter!(
        SOURCE_REQUESTS,
        "Requests on incoming sources' receive routes, by outcome: accepted (appended), \
         handshake (a provider's URL validation, nothing appended), rejected (a bad signature, \
         a body too large or not JSON, or a wrong method; nothing appended), throttled \
         (429, the source's rate), unknown_url (no source at that URL)."
    );
    describe_counter!(
        RETENTION_MESSAGES_DELETED,
        "Messages the retention sweep deleted (older than storage.retention_days, none \
         of their deliveries pending)."
    );
    describe_counter!(
        RETENTION_PAYLOADS_DROPPED,
        "Message payloads the retention sweep dropped (their payloadRetentionPeriod passed)."
    );
    describe_counter!(
        IDEMPOTENCY_EXPIRED,
        "Remembered idempotent replies the sweeper deleted once their 24 h were up."
    );
    describe_gauge!(
        IDEMPOTENCY_REPLIES,
        "Idempotent replies the log remembers (set by the sweeper after each pass)."
    );
    describe_counter!(
        AUTH_FAILURES,
        "API requests with a missing, unknown, revoked or expired token (refused: 401), and \
         requests refused because their address failed too often (throttled: 429)."
    );
}

/// The metrics of cluster mode (never set without `[cluster]`).
fn describe_cluster() {
    use name::*;
    describe_gauge!(
        CLUSTER_APPLIED_SEQ,
        "Cluster: the op stream's sequence of the last op applied on this node."
    );
    describe_gauge!(
        CLUSTER_APPLIER_LAG,
        "Cluster: ops in the stream this node has not applied yet."
    );
    describe_gauge!(
        CLUSTER_SHARDS_OWNED,
        "Cluster: delivery shards whose lease this node holds."
    );
    describe_counter!(
        CLUSTER_LEASE_CHANGES,
        "Cluster: leases gained and lost by this node."
    );
    describe_histogram!(
        CLUSTER_PUBLISH_DURATION,
        Unit::Seconds,
        "Cluster: op publish to the stream's acknowledgement, retries included."
    );
    describe_counter!(
        CLUSTER_PUBLISH_RETRIES,
        "Cluster: op publishes sent again (same id) after a timeout or no leader."
    );
    describe_histogram!(
        CLUSTER_PUBLISH_BATCH_OPS,
        "Cluster: ops in each stream message this node published (one batch)."
    );
    describe_histogram!(
        CLUSTER_PUBLISH_TO_APPLY,
        Unit::Seconds,
        "Cluster: an op's publish to its apply on the publishing node (what a write waits)."
    );
    describe_gauge!(
        CLUSTER_SNAPSHOT_AGE,
        Unit::Seconds,
        "Cluster: age of the newest snapshot in the object store (as this node last looked)."
    );
    describe_counter!(
        CLUSTER_SNAPSHOTS,
        "Cluster: snapshots this node tried to write, by result (ok, error)."
    );
}

/// The status class label of an HTTP status (0: no response).
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        100..=199 => "1xx",
        _ => "none",
    }
}

/// Samples the log's gauges (map size and use, readers, pending deliveries and how
/// overdue the oldest is, tasks). `now_ms` is the wall clock (due times are wall-clock).
pub fn sample_log(log: &Log, now_ms: u64) {
    crate::api::sample_disk(log);
    let (map_size, used, readers) = log.usage();
    gauge!(name::LMDB_MAP_SIZE).set(map_size as f64);
    gauge!(name::LMDB_USED).set(used as f64);
    gauge!(name::LMDB_READERS).set(f64::from(readers));
    let counts = log.read(|rtxn, dbs| crate::log::tables::pending_work(rtxn, dbs));
    if let Ok((earliest_due, pending, tasks)) = counts {
        gauge!(name::DELIVERIES_PENDING).set(pending as f64);
        let overdue_ms = earliest_due.map_or(0, |due| now_ms.saturating_sub(due));
        gauge!(name::BACKLOG_AGE).set(overdue_ms as f64 / 1000.0);
        gauge!(name::TASKS_RUNNING).set(tasks as f64);
    }
}

/// Renders the exposition text, with the log's gauges sampled just before.
pub fn render(handle: &PrometheusHandle, log: &Log, now_ms: u64) -> String {
    sample_log(log, now_ms);
    handle.render()
}

/// Keeps histograms bounded between scrapes (the exporter does not do it by itself) and
/// the log's gauges fresh. Runs until the task is aborted.
pub async fn upkeep(handle: PrometheusHandle, log: Log, clock: crate::clock::Clock) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tick.tick().await;
        handle.run_upkeep();
        sample_log(&log, clock.now_ms());
    }
}

/// Counts one message create request's result.
pub fn ingest_finished(elapsed: Duration, rejected_reason: Option<&'static str>) {
    with_hot(|hot| {
        hot.ingest_duration.record(elapsed.as_secs_f64());
        match rejected_reason {
            None => hot.messages_accepted.increment(1),
            Some(reason) => counter!(name::MESSAGES_REJECTED, "reason" => reason).increment(1),
        }
    });
}

/// Records a committed batch: its time, first operation to fsync, and its operations.
pub fn committed(elapsed: Duration, operations: usize) {
    with_hot(|hot| {
        hot.commit_duration.record(elapsed.as_secs_f64());
        hot.commit_operations.record(operations as f64);
    });
}

/// Records how long finding a new message's endpoints took.
pub fn fanout_matched(elapsed: Duration) {
    with_hot(|hot| hot.fanout_match.record(elapsed.as_secs_f64()));
}

/// Counts one attempt by its outcome's label and its status class.
pub fn attempt_counted(outcome: &'static str, status_class: &'static str) {
    if (outcome, status_class) == ("success", "2xx") {
        with_hot(|hot| hot.attempts_succeeded.increment(1));
    } else {
        counter!(name::ATTEMPTS, "outcome" => outcome, "status_class" => status_class).increment(1);
    }
}

/// Moves the count of attempts in flight by `delta` (one started: 1; one answered: -1).
pub fn deliveries_in_flight(delta: f64) {
    with_hot(|hot| hot.deliveries_in_flight.increment(delta));
}

/// Records an attempt's duration, and the latency to its message's first success.
pub fn attempt_timed(seconds: f64, first_success_latency_seconds: Option<f64>) {
    with_hot(|hot| {
        hot.attempt_duration.record(seconds);
        if let Some(latency) = first_success_latency_seconds {
            hot.delivery_latency.record(latency);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_bucket_edge() {
        assert!(ATTEMPT_BUCKETS.contains(&ATTEMPT_BUDGET_SECONDS));
        assert!(ATTEMPT_BUCKETS.is_sorted() && LATENCY_BUCKETS.is_sorted());
    }

    #[test]
    fn status_classes() {
        let cases = [
            (0, "none"),
            (200, "2xx"),
            (204, "2xx"),
            (301, "3xx"),
            (410, "4xx"),
            (503, "5xx"),
        ];
        for (status, class) in cases {
            assert_eq!(status_class(status), class, "{status}");
        }
    }
}
