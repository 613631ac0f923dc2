//! Cluster mode: several Sluice nodes over one replicated op log (a NATS JetStream stream).
//!
//! Every node applies every op of the stream, in stream order, with the same apply code as
//! the embedded writer (`applier.rs`), so every node's LMDB holds the same state at the
//! same `applied_seq`. A node's `Log::submit` publishes the op to the stream instead of
//! giving it to its writer (`Replicator`), and answers once the stream has stored it and
//! its own applier has applied it, with its own apply outcome. Delivery is divided by
//! shard leases in a JetStream key-value bucket (`lease.rs`); work that must run once in
//! the cluster (background tasks, retention, scheduled snapshots) runs on the holder of the
//! `singleton` lease. Snapshots (`snapshot.rs`) let a node join with an empty data
//! directory and let the stream be purged.
//!
//! Nothing here runs without a `[cluster]` section.

pub mod applier;
pub mod batch;
pub mod lease;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{ClusterConfig, NatsAuth};
use crate::limits::{
    CLUSTER_API_TIMEOUT_MS, CLUSTER_APPLY_WAIT_MS, CLUSTER_BATCH_BYTES_MAX, CLUSTER_BATCH_OPS_MAX,
    CLUSTER_CATCH_UP_MAX_MS, CLUSTER_IN_FLIGHT_MAX, CLUSTER_PUBLISH_DEADLINE_MS,
    CLUSTER_PUBLISH_RETRY_PAUSE_MS, CLUSTER_PUBLISHES_IN_FLIGHT,
};
use crate::log::ops::{Envelope, Outcome};
use crate::log::{Log, LogError, Replicate, Waiter};
use crate::telemetry;

pub use lease::Ownership;

/// Why a cluster node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to NATS ({urls}): {detail}")]
    Connect { urls: String, detail: String },
    #[error("NATS credentials: {0}")]
    Credentials(String),
    #[error("NATS TLS: {0}")]
    Tls(String),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("the applier did not reach the end of the stream within {0:?}")]
    CatchUp(Duration),
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error(
        "this node's log has applied the op stream up to {applied}, but the stream now \
         starts at {first} (the ops between were purged after a snapshot): stop the node, \
         empty its data directory and start it again to restore the newest snapshot"
    )]
    Behind { applied: u64, first: u64 },
}

/// Whether a nats-server version (`2.10.4`, `2.11.0-RC.1`) is 2.10 or newer.
pub fn supported_server(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// The stream's subject (one subject: one total order).
pub fn subject(stream: &str) -> String {
    format!("{stream}.ops")
}

/// The lease bucket of a stream.
pub fn lease_bucket(stream: &str) -> String {
    format!("{stream}_LEASES")
}

/// Requests that wait for their op to be applied here, by op id.
pub type Waiters = Arc<Mutex<HashMap<batch::OpId, Waiter>>>;

/// What a cluster node knows about itself, for health, metrics and status.
#[derive(Debug, Default, Clone)]
pub struct ClusterView {
    pub node_id: String,
    /// The stream's last sequence when last looked at (by the lease loop).
    pub stream_last_seq: u64,
    /// Shards whose lease this node holds and may deliver on.
    pub shards_owned: Vec<usize>,
    pub singleton: bool,
    /// Nodes whose heartbeat was seen within the lease TTL (this one included).
    pub live_nodes: Vec<String>,
}

/// A running cluster node's replication: applier, leases, and what they share.
pub struct Cluster {
    view: Arc<Mutex<ClusterView>>,
    log: Log,
    stop: watch::Sender<bool>,
    applier: JoinHandle<()>,
    leases: JoinHandle<()>,
    snapshots: JoinHandle<()>,
    /// One signal per delivery shard: whether this node may start attempts on it.
    pub shards: Vec<Ownership>,
    /// Whether this node runs the work that runs once (tasks, retention).
    pub singleton: Ownership,
}

impl Cluster {
    /// Connects, makes sure the stream and the lease bucket exist, starts the applier,
    /// routes `log`'s submits through the stream, waits until the applier has reached the
    /// stream's end (reads are then current), and starts the lease loop for `shards`.
    pub async fn start(
        config: &ClusterConfig,
        log: &Log,
        shards: usize,
        clock: crate::clock::Clock,
    ) -> Result<Cluster, ClusterError> {
        let client = connect(config).await?;
        let info = client.server_info();
        if !supported_server(&info.version) {
            return Err(ClusterError::JetStream(format!(
                "nats-server {} is too old: cluster mode needs 2.10 or newer (2.9 cannot \
                 host the lease bucket)",
                info.version
            )));
        }
        let replicas = replicas(&client);
        let js = context(client.clone());
        let (stream, bucket, store) = jetstream_parts(&js, config, replicas).await?;
        not_behind(&stream, log).await?;
        let waiters: Waiters = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let applier = tokio::spawn(applier::run(
            stream.clone(),
            log.clone(),
            Arc::clone(&waiters),
            stopped.clone(),
        ));
        let replicator = Replicator::start(js.clone(), subject(&config.stream), waiters);
        log.replicate_through(Arc::new(replicator))
            .map_err(|e| ClusterError::JetStream(e.to_string()))?;
        let limit = Duration::from_millis(CLUSTER_CATCH_UP_MAX_MS);
        let last = last_seq(&stream).await?;
        if !caught_up(log, last, limit).await {
            return Err(ClusterError::CatchUp(limit));
        }
        let view = Arc::new(Mutex::new(ClusterView {
            node_id: config.node_id.clone(),
            stream_last_seq: last,
            ..ClusterView::default()
        }));
        let (leases, shard_signals, singleton) = lease::start(
            bucket.clone(),
            stream.clone(),
            log.clone(),
            config,
            shards,
            Arc::clone(&view),
            stopped.clone(),
        );
        let snapshotter =
            snapshot::Snapshotter::new(store, stream, bucket, log.clone(), config, clock);
        let snapshots = tokio::spawn(snapshotter.run(client, singleton.clone(), stopped));
        tracing::info!(
            node_id = %config.node_id,
            stream = %config.stream,
            replicas,
            applied_seq = log.applied_seq(),
            "Cluster node joined: applied the op stream to its end."
        );
        Ok(Cluster {
            view,
            log: log.clone(),
            stop,
            applier,
            leases,
            snapshots,
            shards: shard_signals,
            singleton,
        })
    }

    /// A snapshot of what this node knows, with its applied sequence and lag.
    pub fn status(&self) -> (ClusterView, u64, u64) {
        let view = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        let applied = self.log.applied_seq();
        let lag = view.stream_last_seq.saturating_sub(applied);
        (view, applied, lag)
    }

    /// A shareable reader of `status` for the API.
    pub fn view(&self) -> StatusReader {
        StatusReader {
            view: Arc::clone(&self.view),
            log: self.log.clone(),
        }
    }

    /// Stops the lease loop (its leases expire: the others take the shards) and the
    /// applier.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.leases.await;
        let _ = self.snapshots.await;
        let _ = self.applier.await;
    }
}

/// Refuses a log whose `applied_seq` the stream was purged past: the ops it lacks are
/// gone (it must restore a snapshot instead).
async fn not_behind(stream: &stream::Stream, log: &Log) -> Result<(), ClusterError> {
    let (first, _) = stream_bounds(stream).await?;
    let applied = log.applied_seq();
    if first > applied + 1 {
        return Err(ClusterError::Behind { applied, first });
    }
    Ok(())
}

/// Reads a cluster node's status (for `/api/v1/health`).
#[derive(Clone)]
pub struct StatusReader {
    view: Arc<Mutex<ClusterView>>,
    log: Log,
}

impl StatusReader {
    pub fn json(&self) -> serde_json::Value {
        let view = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        let applied = self.log.applied_seq();
        serde_json::json!({
            "nodeId": view.node_id,
            "appliedSeq": applied,
            "streamLastSeq": view.stream_last_seq.max(applied),
            "applierLag": view.stream_last_seq.saturating_sub(applied),
            "shardsOwned": view.shards_owned,
            "singleton": view.singleton,
            "liveNodes": view.live_nodes,
        })
    }
}

/// The op stream's replicas: one per NATS server the client knows of, at most three.
fn replicas(client: &async_nats::Client) -> usize {
    client.server_info().connect_urls.len().clamp(1, 3)
}

/// A JetStream context whose API calls wait at most `CLUSTER_API_TIMEOUT_MS`.
fn context(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(CLUSTER_API_TIMEOUT_MS))
        .build(client)
}

/// Connects to NATS, trying again (bounded: `CLUSTER_CONNECT_WAIT_MS`) while no server
/// answers, so a node may start with its NATS servers. Refused credentials and a failed
/// TLS handshake are reported at once, naming the settings to look at.
async fn connect(config: &ClusterConfig) -> Result<async_nats::Client, ClusterError> {
    let urls = config.nats_urls.join(",");
    let addrs: Vec<async_nats::ServerAddr> = config
        .nats_urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| ClusterError::Connect {
            urls: urls.clone(),
            detail: e.to_string(),
        })?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(crate::limits::CLUSTER_CONNECT_WAIT_MS);
    loop {
        let error = match connect_options(config).await?.connect(addrs.clone()).await {
            Ok(client) => return Ok(client),
            Err(error) => error,
        };
        match error.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation
            | async_nats::ConnectErrorKind::Authentication => {
                return Err(ClusterError::Credentials(format!(
                    "NATS refused this node's credentials ({}): {error}",
                    credentials_setting(&config.auth)
                )));
            }
            _ if tls_failure(&error) => {
                return Err(ClusterError::Tls(format!(
                    "TLS to NATS failed ({}): {error}",
                    tls_hint(
                        config.tls_ca_file.as_deref(),
                        config.tls_cert_file.as_deref(),
                        &error.to_string()
                    )
                )));
            }
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(crate::limits::CLUSTER_START_RETRY_MS))
                    .await;
            }
            _ => {
                return Err(ClusterError::Connect {
                    urls,
                    detail: error.to_string(),
                });
            }
        }
    }
}

/// Whether a connection failed in the TLS handshake. A certificate the client does not
/// trust, and an alert the server sends (it refused this node's certificate, or wanted
/// one), come back as I/O errors (rustls' own, as text), not as the TLS kind.
fn tls_failure(error: &async_nats::ConnectError) -> bool {
    let text = error.to_string();
    error.kind() == async_nats::ConnectErrorKind::Tls
        || text.contains("certificate")
        || text.contains("handshake")
        || text.contains("received fatal alert")
}

/// Which settings to look at for a failed TLS connection whose error reads `text`. An
/// alert *received* is the server refusing this node's side (no client certificate, or
/// one it does not trust); otherwise this node did not trust the server's.
fn tls_hint(
    tls_ca_file: Option<&std::path::Path>,
    tls_cert_file: Option<&std::path::Path>,
    text: &str,
) -> String {
    if text.contains("received fatal alert") {
        return match tls_cert_file {
            None => "the servers verify their clients: set cluster.tls_cert_file and \
                     cluster.tls_key_file to this node's certificate and key"
                .to_owned(),
            Some(path) => format!(
                "the servers did not accept cluster.tls_cert_file, {}: is it signed by a CA \
                 they trust, and for client authentication?",
                path.display()
            ),
        };
    }
    match tls_ca_file {
        Some(path) => format!(
            "does cluster.tls_ca_file, {}, hold the CA of the servers' certificates?",
            path.display()
        ),
        None => "the servers' certificates are not trusted by the system's roots: set \
                 cluster.tls_ca_file"
            .to_owned(),
    }
}

/// The settings that hold this node's NATS credentials (for an error message).
fn credentials_setting(auth: &NatsAuth) -> &'static str {
    match auth {
        NatsAuth::None => {
            "none configured: set cluster.user and cluster.password, cluster.nkey_seed_file \
             or cluster.creds_file"
        }
        NatsAuth::UserPassword { .. } => "check cluster.user and cluster.password",
        NatsAuth::NkeySeedFile(_) => "check cluster.nkey_seed_file",
        NatsAuth::CredsFile(_) => "check cluster.creds_file",
    }
}

/// The client's options: name, timeouts, credentials and TLS of `[cluster]`.
async fn connect_options(
    config: &ClusterConfig,
) -> Result<async_nats::ConnectOptions, ClusterError> {
    let options = async_nats::ConnectOptions::new()
        .name(format!("sluice-{}", config.node_id))
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_millis(CLUSTER_API_TIMEOUT_MS)));
    let options = match &config.tls_ca_file {
        Some(path) => {
            if !path.is_file() {
                return Err(ClusterError::Tls(format!(
                    "cluster.tls_ca_file: {} is not a readable file",
                    path.display()
                )));
            }
            options
                .add_root_certificates(path.clone())
                .require_tls(true)
        }
        None => options,
    };
    let options = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => {
            for (setting, path) in [
                ("cluster.tls_cert_file", cert),
                ("cluster.tls_key_file", key),
            ] {
                if !path.is_file() {
                    return Err(ClusterError::Tls(format!(
                        "{setting}: {} is not a readable file",
                        path.display()
                    )));
                }
            }
            options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true)
        }
        // The settings check keeps them in pairs.
        _ => options,
    };
    Ok(match &config.auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::NkeySeedFile(path) => {
            let seed = std::fs::read_to_string(path).map_err(|e| {
                ClusterError::Credentials(format!("cluster.nkey_seed_file {}: {e}", path.display()))
            })?;
            options.nkey(seed.trim().to_owned())
        }
        NatsAuth::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
            ClusterError::Credentials(format!("cluster.creds_file {}: {e}", path.display()))
        })?,
    })
}

/// The op stream, the lease bucket and the snapshot bucket, created when missing. A NATS cluster that is
/// starting too (the usual boot, or a whole-site restart) answers JetStream calls only
/// once it has elected a meta leader: wait for it.
async fn jetstream_parts(
    js: &jetstream::Context,
    config: &ClusterConfig,
    replicas: usize,
) -> Result<
    (
        stream::Stream,
        jetstream::kv::Store,
        jetstream::object_store::ObjectStore,
    ),
    ClusterError,
> {
    let stream = until_jetstream_answers("the op stream", || {
        ensure_stream(js, &config.stream, replicas)
    })
    .await?;
    let bucket = until_jetstream_answers("the lease bucket", || {
        lease::ensure_bucket(js, config, replicas)
    })
    .await?;
    let store = until_jetstream_answers("the snapshot bucket", || {
        snapshot::ensure_store(js, &config.stream, replicas)
    })
    .await?;
    Ok((stream, bucket, store))
}

/// Runs `attempt` until it succeeds or `CLUSTER_START_WAIT_MS` has passed, pausing
/// `CLUSTER_START_RETRY_MS` between tries; the last error if it never succeeds.
async fn until_jetstream_answers<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(crate::limits::CLUSTER_START_WAIT_MS);
    loop {
        match attempt().await {
            Ok(found) => return Ok(found),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "JetStream does not answer for {what} yet; retrying.");
                tokio::time::sleep(Duration::from_millis(crate::limits::CLUSTER_START_RETRY_MS))
                    .await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Gets the op stream, creating it when missing: one subject, file storage, up to three
/// replicas, nothing ever discarded by a limit (an op lost is a node diverged).
async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<stream::Stream, ClusterError> {
    let config = stream::Config {
        name: name.to_owned(),
        subjects: vec![subject(name)],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        ..stream::Config::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| ClusterError::JetStream(format!("stream {name}: {e}")))
}

/// With the node stopped (no API, no leases): applies the stream to its end into `log`
/// and returns the sequence applied (`sluice cluster verify`).
pub async fn catch_up(config: &ClusterConfig, log: &Log) -> Result<u64, ClusterError> {
    let client = connect(config).await?;
    let js = context(client);
    let stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| ClusterError::JetStream(format!("stream {}: {e}", config.stream)))?;
    let (stop, stopped) = watch::channel(false);
    let applier = tokio::spawn(applier::run(
        stream.clone(),
        log.clone(),
        Waiters::default(),
        stopped,
    ));
    let last = last_seq(&stream).await?;
    let limit = Duration::from_millis(CLUSTER_CATCH_UP_MAX_MS);
    let done = caught_up(log, last, limit).await;
    let _ = stop.send(true);
    let _ = applier.await;
    if done {
        Ok(log.applied_seq())
    } else {
        Err(ClusterError::CatchUp(limit))
    }
}

/// `sluice cluster status`: the stream, its snapshots, every live node (from its heartbeat:
/// applied sequence, lag, shards) and every lease, as lines of text.
pub async fn status(config: &ClusterConfig) -> Result<Vec<String>, ClusterError> {
    let client = connect(config).await?;
    let js = context(client);
    let stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| ClusterError::JetStream(format!("stream {}: {e}", config.stream)))?;
    let info = stream
        .get_info()
        .await
        .map_err(|e| ClusterError::JetStream(format!("stream info: {e}")))?;
    let last = info.state.last_sequence;
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap_or_else(|| "none".to_owned());
    let mut lines = vec![format!(
        "stream {}: first_seq {}, last_seq {last}, replicas {}, leader {leader}",
        config.stream, info.state.first_sequence, info.config.num_replicas
    )];
    lines.extend(snapshot_lines(&js, config).await?);
    let name = lease_bucket(&config.stream);
    let bucket = js
        .get_key_value(&name)
        .await
        .map_err(|e| ClusterError::JetStream(format!("bucket {name}: {e}")))?;
    let mut keys: Vec<String> = Vec::new();
    let mut listed = bucket
        .keys()
        .await
        .map_err(|e| ClusterError::JetStream(format!("lease keys: {e}")))?;
    while let Some(key) = futures_util::StreamExt::next(&mut listed).await {
        if keys.len() >= 4_096 {
            break;
        }
        if let Ok(key) = key {
            keys.push(key);
        }
    }
    keys.sort();
    for key in keys {
        let Ok(Some(value)) = bucket.get(&key).await else {
            continue;
        };
        if let Some(node) = key.strip_prefix("node.") {
            let beat: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
            let applied = beat["appliedSeq"].as_u64().unwrap_or(0);
            lines.push(format!(
                "node {node}: applied_seq {applied}, lag {}, shards {}, singleton {}",
                last.saturating_sub(applied),
                beat["shards"],
                beat["singleton"].as_bool().unwrap_or(false)
            ));
        } else {
            lines.push(format!("lease {key}: {}", String::from_utf8_lossy(&value)));
        }
    }
    Ok(lines)
}

/// One line per snapshot in the object store, oldest first (none if it has no bucket).
async fn snapshot_lines(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<Vec<String>, ClusterError> {
    let Ok(store) = js
        .get_object_store(snapshot::bucket_name(&config.stream))
        .await
    else {
        return Ok(Vec::new());
    };
    let mut stored = snapshot::list(&store).await?;
    stored.sort_by_key(|s| s.applied_seq);
    Ok(stored
        .into_iter()
        .map(|s| {
            format!(
                "snapshot {}: applied_seq {}, {} bytes, taken_ms {}",
                s.name, s.applied_seq, s.bytes, s.taken_ms
            )
        })
        .collect())
}

/// The stream's last sequence (0 when empty).
pub async fn last_seq(stream: &stream::Stream) -> Result<u64, ClusterError> {
    stream_bounds(stream).await.map(|(_, last)| last)
}

/// The stream's first and last sequences (the first is past the last once every op was
/// purged; both 0 for a stream never written).
pub async fn stream_bounds(stream: &stream::Stream) -> Result<(u64, u64), ClusterError> {
    stream
        .get_info()
        .await
        .map(|info| (info.state.first_sequence, info.state.last_sequence))
        .map_err(|e| ClusterError::JetStream(format!("stream info: {e}")))
}

/// Waits (at most `limit`) until this node has applied the stream up to `seq`.
pub async fn caught_up(log: &Log, seq: u64, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while log.applied_seq() < seq {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(
            crate::limits::CLUSTER_APPLIED_POLL_MS,
        ))
        .await;
    }
    true
}

/// Hands this node's ops to its batch publisher (`publish_batches`) and each request its
/// own node's apply outcome.
struct Replicator {
    /// As long as `in_flight` allows: each op holds one of its permits until answered.
    queue: mpsc::Sender<Queued>,
    waiters: Waiters,
    in_flight: Arc<Semaphore>,
}

impl Replicator {
    /// A replicator publishing to `subject`, with its batch publisher started.
    fn start(js: jetstream::Context, subject: String, waiters: Waiters) -> Replicator {
        let (queue, queued) = mpsc::channel(CLUSTER_IN_FLIGHT_MAX);
        tokio::spawn(publish_batches(js, subject, queued, Arc::clone(&waiters)));
        Replicator {
            queue,
            waiters,
            in_flight: Arc::new(Semaphore::new(CLUSTER_IN_FLIGHT_MAX)),
        }
    }
}

/// An op waiting for its batch to be published.
struct Queued {
    op: batch::BatchedOp,
    /// Its outcome, once applied here (registered in `Waiters` under its id).
    applied: oneshot::Receiver<Result<Outcome, LogError>>,
    reply: oneshot::Sender<Result<Outcome, LogError>>,
    /// One of `CLUSTER_IN_FLIGHT_MAX`, held until the request is answered.
    permit: OwnedSemaphorePermit,
}

impl Replicate for Replicator {
    fn replicate(
        &self,
        envelope: Envelope,
        reply: oneshot::Sender<Result<Outcome, LogError>>,
    ) -> Result<(), LogError> {
        let permit = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| LogError::Busy)?;
        let mut id = batch::OpId::default();
        crate::ids::fill_random(&mut id);
        // Registered before the publish: the applier may apply the op before the
        // publish's acknowledgement arrives here.
        let (applied_tx, applied) = oneshot::channel();
        self.waiters
            .lock()
            .map_err(|_| LogError::Cluster("waiters poisoned".to_owned()))?
            .insert(id, applied_tx);
        let queued = Queued {
            // Encoded here, on the request's task, not on the publisher's.
            op: batch::BatchedOp {
                id,
                op: envelope.encode(),
            },
            applied,
            reply,
            permit,
        };
        // Never full: it holds as many as `in_flight` has permits.
        self.queue.try_send(queued).map_err(|_| {
            if let Ok(mut waiters) = self.waiters.lock() {
                waiters.remove(&id);
            }
            LogError::Cluster("the op publisher has stopped".to_owned())
        })
    }
}

/// Publishes the queued ops in batches: at most `CLUSTER_PUBLISHES_IN_FLIGHT` batches on
/// their way at once, each with what was queued when a slot came free (at most
/// `CLUSTER_BATCH_OPS_MAX` ops and `CLUSTER_BATCH_BYTES_MAX` bytes, or one larger op).
/// Under load the batches grow; alone, an op goes at once. Ends when the node's log and
/// its replicator are gone.
async fn publish_batches(
    js: jetstream::Context,
    subject: String,
    mut queue: mpsc::Receiver<Queued>,
    waiters: Waiters,
) {
    let slots = Arc::new(Semaphore::new(CLUSTER_PUBLISHES_IN_FLIGHT));
    let mut carried: Option<Queued> = None;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut bytes = first.op.op.len();
        let mut batch = vec![first];
        while batch.len() < CLUSTER_BATCH_OPS_MAX {
            let Ok(next) = queue.try_recv() else { break };
            if bytes + next.op.op.len() > CLUSTER_BATCH_BYTES_MAX {
                carried = Some(next); // The first of the next batch.
                break;
            }
            bytes += next.op.op.len();
            batch.push(next);
        }
        let (js, subject, waiters) = (js.clone(), subject.clone(), Arc::clone(&waiters));
        tokio::spawn(async move {
            publish_batch(&js, &subject, batch, &waiters, slot).await;
        });
    }
}

/// Publishes one batch, frees its slot once the stream has stored it (or gave up), then
/// answers each op's request with its outcome here.
async fn publish_batch(
    js: &jetstream::Context,
    subject: &str,
    batch: Vec<Queued>,
    waiters: &Waiters,
    slot: OwnedSemaphorePermit,
) {
    let started = tokio::time::Instant::now();
    let (ops, waiting): (Vec<batch::BatchedOp>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.op, (queued.applied, queued.reply, queued.permit)))
        .unzip();
    metrics::histogram!(telemetry::name::CLUSTER_PUBLISH_BATCH_OPS).record(ops.len() as f64);
    let mut batch_id = batch::OpId::default();
    crate::ids::fill_random(&mut batch_id);
    let payload = Bytes::from(batch::encode(&ops));
    let published = publish(js, subject, &batch::id_hex(&batch_id), payload).await;
    drop(slot);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CLUSTER_APPLY_WAIT_MS);
    for (op, (applied, reply, permit)) in ops.iter().zip(waiting) {
        let result = match &published {
            Ok(_) => match tokio::time::timeout_at(deadline, applied).await {
                Ok(Ok(result)) => {
                    metrics::histogram!(telemetry::name::CLUSTER_PUBLISH_TO_APPLY)
                        .record(started.elapsed().as_secs_f64());
                    result
                }
                Ok(Err(_)) => Err(LogError::WriterGone),
                Err(_) => Err(LogError::Cluster(
                    "the op is in the stream but was not applied here in time".to_owned(),
                )),
            },
            Err(error) => Err(error.clone()),
        };
        if result.is_err()
            && let Ok(mut waiters) = waiters.lock()
        {
            waiters.remove(&op.id);
        }
        let _ = reply.send(result);
        drop(permit);
    }
}

/// Publishes one stream message (a batch of ops) with `Nats-Msg-Id` = `id` and waits
/// for the stream's acknowledgement (stored by a quorum). During an election the publish times out or finds no stream: it
/// is sent again with the same id after a pause (the stream drops a duplicate id), until
/// `CLUSTER_PUBLISH_DEADLINE_MS`. Returns the op's stream sequence.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    payload: Bytes,
) -> Result<u64, LogError> {
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(CLUSTER_PUBLISH_DEADLINE_MS);
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        let attempt = async {
            js.publish_with_headers(subject.to_owned(), headers, payload.clone())
                .await?
                .await
        };
        match attempt.await {
            Ok(ack) => {
                metrics::histogram!(telemetry::name::CLUSTER_PUBLISH_DURATION)
                    .record(started.elapsed().as_secs_f64());
                return Ok(ack.sequence);
            }
            Err(error)
                if error.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded =>
            {
                return Err(LogError::Cluster(format!(
                    "the op ({} bytes) exceeds the NATS servers' max_payload",
                    payload.len()
                )));
            }
            Err(error) => {
                metrics::counter!(telemetry::name::CLUSTER_PUBLISH_RETRIES).increment(1);
                last_error = error.to_string();
                tokio::time::sleep(Duration::from_millis(CLUSTER_PUBLISH_RETRY_PAUSE_MS)).await;
            }
        }
    }
    tracing::warn!(error = %last_error, "An op could not be stored in the stream in time.");
    Err(LogError::Cluster(format!(
        "the stream did not store the op within {CLUSTER_PUBLISH_DEADLINE_MS} ms: {last_error}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_2_10_are_refused() {
        for (version, ok) in [
            ("2.9.10", false),
            ("2.10.0", true),
            ("2.15.1", true),
            ("2.11.0-RC.1", true),
            ("3.0.0", true),
            ("1.4.1", false),
            ("", false),
        ] {
            assert_eq!(supported_server(version), ok, "{version}");
        }
    }

    #[test]
    fn a_tls_failure_names_the_side_that_refused() {
        let (ca, cert) = (
            std::path::Path::new("/etc/ca.pem"),
            std::path::Path::new("/etc/node.pem"),
        );
        let alert = "IO error: received fatal alert: CertificateRequired";
        let untrusted = "IO error: invalid peer certificate: UnknownIssuer";
        // The server refused this node: its client certificate is what to look at.
        assert!(tls_hint(Some(ca), None, alert).contains("set cluster.tls_cert_file"));
        assert!(tls_hint(Some(ca), Some(cert), alert).contains("/etc/node.pem"));
        // This node refused the server: the CA is.
        assert!(
            tls_hint(Some(ca), Some(cert), untrusted).contains("cluster.tls_ca_file, /etc/ca.pem")
        );
        assert!(tls_hint(None, None, untrusted).contains("set cluster.tls_ca_file"));
    }
}
