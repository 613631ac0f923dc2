//! Snapshots and joining: a compacted copy of a node's LMDB (the online backup) labelled
//! with its `applied_seq`, stored in the JetStream object store `<stream>_SNAPSHOTS`. A node
//! that starts with an empty data directory restores the newest one and replays the op
//! stream from its sequence instead of from the first op, and the stream can be purged
//! below it, so neither the stream nor a join grows with the cluster's whole history.
//!
//! Written by the holder of the `singleton` lease every `snapshot_interval_ms` (when ops
//! were applied since the newest one), and by one node on `sluice cluster snapshot` (a
//! NATS request to `<stream>.snapshot`, answered by one member of a queue group). After
//! each, all but the `snapshot_keep` newest are deleted and the stream is purged below the
//! oldest kept one, never past what a live node has applied (its heartbeat says).
//!
//! Memory stays bounded whatever the log's size: the copy goes to a file next to the log,
//! is uploaded one chunk at a time and downloaded a few chunks at a time
//! (`limits::CLUSTER_SNAPSHOT_*`); the download's SHA-256 is checked against the one the
//! object store recorded before the file becomes the data directory's log.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::{self, kv, stream};
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{ClusterError, Ownership};
use crate::clock::Clock;
use crate::config::ClusterConfig;
use crate::limits::{
    CLUSTER_API_TIMEOUT_MS, CLUSTER_PUBLISH_DEADLINE_MS, CLUSTER_PUBLISH_RETRY_PAUSE_MS,
    CLUSTER_SNAPSHOT_CHECK_MS, CLUSTER_SNAPSHOT_CHUNK_BYTES, CLUSTER_SNAPSHOT_CHUNK_WAIT_MS,
    CLUSTER_SNAPSHOT_FETCH_CHUNKS, CLUSTER_SNAPSHOT_REQUEST_MS, CLUSTER_SNAPSHOTS_LISTED_MAX,
};
use crate::log::Log;
use crate::telemetry;

/// The object store bucket of a stream's snapshots.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_SNAPSHOTS")
}

/// The subject `sluice cluster snapshot` sends its request to (outside the op stream's).
pub fn request_subject(stream: &str) -> String {
    format!("{stream}.snapshot")
}

const NAME_PREFIX: &str = "snapshot-";
/// The directory (inside the data directory) a snapshot's copy is written to first.
const WORK_PREFIX: &str = "snapshot-work-";
/// The file a download goes to before it becomes `data.mdb`.
const RESTORING_FILE: &str = "data.mdb.restoring";
/// The queue group of the nodes answering snapshot requests (one answers each).
const QUEUE_GROUP: &str = "sluice-snapshot";

/// A snapshot's object name: its applied sequence, zero-padded so names sort by it, and
/// the node that wrote it.
pub fn object_name(applied_seq: u64, node_id: &str) -> String {
    format!("{NAME_PREFIX}{applied_seq:020}-{node_id}")
}

/// The applied sequence in a snapshot's object name.
pub fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix(NAME_PREFIX)?.get(..20)?.parse().ok()
}

/// One snapshot in the object store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    /// The copy holds every op up to this sequence (perhaps a few more).
    pub applied_seq: u64,
    /// When it was written (the writing node's clock), ms since the epoch.
    pub taken_ms: u64,
    pub bytes: u64,
}

/// What one snapshot's writing produced (also the reply to `sluice cluster snapshot`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Taken {
    pub name: String,
    pub applied_seq: u64,
    pub bytes: u64,
    pub node_id: String,
}

/// What retention does after a snapshot: the snapshots to delete, and the sequence
/// below which the op stream is purged.
#[derive(Debug, PartialEq, Eq)]
pub struct Retention {
    pub delete: Vec<String>,
    pub purge_below: Option<u64>,
}

/// Keeps the `keep` newest snapshots; the stream keeps every op after the oldest kept one
/// (a node restoring it replays from there) and every op a live node has not applied yet
/// (`live_applied`: each live node's applied sequence).
pub fn retention(stored: &[Stored], keep: usize, live_applied: &[u64]) -> Retention {
    let mut newest_first: Vec<&Stored> = stored.iter().collect();
    newest_first.sort_by(|a, b| {
        b.applied_seq
            .cmp(&a.applied_seq)
            .then_with(|| b.name.cmp(&a.name))
    });
    let keep = keep.max(1);
    let delete = newest_first
        .iter()
        .skip(keep)
        .map(|s| s.name.clone())
        .collect();
    let purge_below = newest_first
        .iter()
        .take(keep)
        .next_back()
        .map(|oldest_kept| {
            live_applied
                .iter()
                .copied()
                .fold(oldest_kept.applied_seq, u64::min)
                + 1
        });
    Retention {
        delete,
        purge_below,
    }
}

/// Whether the schedule calls for a snapshot now: a schedule is set, ops were applied
/// since the newest snapshot, and it is at least `interval_ms` old (or there is none).
pub fn due(newest: Option<&Stored>, applied_seq: u64, now_ms: u64, interval_ms: u64) -> bool {
    if interval_ms == 0 || applied_seq == 0 {
        return false;
    }
    newest.is_none_or(|s| {
        applied_seq > s.applied_seq && now_ms.saturating_sub(s.taken_ms) >= interval_ms
    })
}

/// The newest of `stored`.
pub fn newest(stored: &[Stored]) -> Option<&Stored> {
    stored
        .iter()
        .max_by(|a, b| (a.applied_seq, &a.name).cmp(&(b.applied_seq, &b.name)))
}

fn store_error(what: &str, error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Snapshot(format!("{what}: {error}"))
}

/// Gets the snapshot bucket, creating it when missing (file storage, like the stream).
pub async fn ensure_store(
    js: &jetstream::Context,
    stream: &str,
    replicas: usize,
) -> Result<ObjectStore, ClusterError> {
    let name = bucket_name(stream);
    if let Ok(store) = js.get_object_store(&name).await {
        return Ok(store);
    }
    let created = js
        .create_object_store(object_store::Config {
            bucket: name.clone(),
            description: Some("Sluice snapshots (compacted LMDB copies)".to_owned()),
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..object_store::Config::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another node created it meanwhile.
        Err(error) => js
            .get_object_store(&name)
            .await
            .map_err(|e| ClusterError::JetStream(format!("bucket {name}: {error}; {e}"))),
    }
}

/// Every snapshot in the store (at most `CLUSTER_SNAPSHOTS_LISTED_MAX`).
pub async fn list(store: &ObjectStore) -> Result<Vec<Stored>, ClusterError> {
    let listing = async {
        let mut listed = store
            .list()
            .await
            .map_err(|e| store_error("list snapshots", e))?;
        let mut out = Vec::new();
        while let Some(info) = listed.next().await {
            let info = info.map_err(|e| store_error("list snapshots", e))?;
            let Some(applied_seq) = seq_of(&info.name) else {
                continue;
            };
            let taken_ms = info
                .metadata
                .get("takenMs")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            out.push(Stored {
                name: info.name,
                applied_seq,
                taken_ms,
                bytes: info.size as u64,
            });
            if out.len() >= CLUSTER_SNAPSHOTS_LISTED_MAX {
                break;
            }
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_millis(CLUSTER_API_TIMEOUT_MS), listing)
        .await
        .map_err(|_| store_error("list snapshots", "no answer in time"))?
}

/// Writes snapshots of one node and applies retention after each. One task (`run`) owns
/// it: the schedule and the requests take their turns, one snapshot at a time.
pub struct Snapshotter {
    store: ObjectStore,
    ops: stream::Stream,
    leases: kv::Store,
    log: Log,
    node_id: String,
    keep: usize,
    interval_ms: u64,
    stream_name: String,
    clock: Clock,
}

impl Snapshotter {
    /// A snapshotter for `log`; removes the half-written copies a crash left behind.
    pub fn new(
        store: ObjectStore,
        ops: stream::Stream,
        leases: kv::Store,
        log: Log,
        config: &ClusterConfig,
        clock: Clock,
    ) -> Snapshotter {
        remove_leftovers(log.data_dir());
        Snapshotter {
            store,
            ops,
            leases,
            log,
            node_id: config.node_id.clone(),
            keep: config.snapshot_keep,
            interval_ms: config.snapshot_interval_ms,
            stream_name: config.stream.clone(),
            clock,
        }
    }

    /// Copies the log (compacted) to a file, uploads it, then deletes the snapshots beyond
    /// `snapshot_keep` and purges the stream below the oldest kept one.
    pub async fn take(&self) -> Result<Taken, ClusterError> {
        // Read before the copy starts: the copy holds at least the ops up to here, so
        // this is a safe label to purge below (the restored log's own `applied_seq`,
        // which replay starts from, may be a little higher).
        let applied_seq = self.log.applied_seq();
        if applied_seq == 0 {
            return Err(ClusterError::Snapshot(
                "this node has applied no op yet: nothing to snapshot".to_owned(),
            ));
        }
        let mut nonce = [0u8; 8];
        crate::ids::fill_random(&mut nonce);
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let work = self.log.data_dir().join(format!("{WORK_PREFIX}{nonce}"));
        let result = self.copy_and_upload(&work, applied_seq).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(telemetry::name::CLUSTER_SNAPSHOTS, "result" => outcome).increment(1);
        let taken = result?;
        metrics::gauge!(telemetry::name::CLUSTER_SNAPSHOT_AGE).set(0.0);
        // The snapshot is stored whatever retention does; a failed purge is tried again
        // after the next snapshot.
        if let Err(error) = self.prune().await {
            tracing::warn!(%error, "Snapshot retention failed; the stream keeps its ops for now.");
        }
        Ok(taken)
    }

    async fn copy_and_upload(&self, work: &Path, applied_seq: u64) -> Result<Taken, ClusterError> {
        let (log, dir) = (self.log.clone(), work.to_path_buf());
        let bytes = tokio::task::spawn_blocking(move || log.backup_to(&dir))
            .await
            .map_err(|e| store_error("copy the log", e))?
            .map_err(|e| store_error("copy the log", e))?;
        let name = object_name(applied_seq, &self.node_id);
        let meta = ObjectMetadata {
            name: name.clone(),
            description: Some(format!(
                "Sluice node {} at applied_seq {applied_seq}",
                self.node_id
            )),
            chunk_size: Some(CLUSTER_SNAPSHOT_CHUNK_BYTES),
            metadata: HashMap::from([
                ("appliedSeq".to_owned(), applied_seq.to_string()),
                ("takenMs".to_owned(), self.clock.now_ms().to_string()),
                ("nodeId".to_owned(), self.node_id.clone()),
            ]),
            headers: None,
        };
        // Like an op's publish, the upload is tried again until the publish deadline: a
        // bucket made moments ago (a cluster just started) has no stream behind its
        // subjects on every server yet, and its first chunk finds no responders.
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(CLUSTER_PUBLISH_DEADLINE_MS);
        let stored = loop {
            let mut file = tokio::fs::File::open(work.join("data.mdb"))
                .await
                .map_err(|e| store_error("open the copy", e))?;
            match self.store.put(meta.clone(), &mut file).await {
                Ok(stored) => break stored,
                Err(error)
                    if matches!(
                        error.kind(),
                        object_store::PutErrorKind::PublishChunks
                            | object_store::PutErrorKind::PublishMetadata
                            | object_store::PutErrorKind::TimedOut
                    ) && tokio::time::Instant::now() < deadline =>
                {
                    tracing::warn!(%error, "A snapshot upload failed; trying again.");
                    tokio::time::sleep(Duration::from_millis(CLUSTER_PUBLISH_RETRY_PAUSE_MS)).await;
                }
                Err(error) => return Err(store_error("upload the snapshot", error)),
            }
        };
        tracing::info!(
            %name,
            applied_seq,
            bytes,
            chunks = stored.chunks,
            "Snapshot written to the object store."
        );
        Ok(Taken {
            name,
            applied_seq,
            bytes,
            node_id: self.node_id.clone(),
        })
    }

    /// Deletes all but the `keep` newest snapshots and purges the op stream below the
    /// oldest kept one (never past what a live node has applied).
    async fn prune(&self) -> Result<(), ClusterError> {
        let stored = list(&self.store).await?;
        let live = live_applied(&self.leases).await?;
        let plan = retention(&stored, self.keep, &live);
        for name in &plan.delete {
            self.store
                .delete(name)
                .await
                .map_err(|e| store_error(&format!("delete snapshot {name}"), e))?;
        }
        let Some(below) = plan.purge_below else {
            return Ok(());
        };
        let first = self
            .ops
            .get_info()
            .await
            .map(|info| info.state.first_sequence)
            .map_err(|e| ClusterError::JetStream(format!("stream info: {e}")))?;
        if below > first {
            let purged = self
                .ops
                .purge()
                .sequence(below)
                .await
                .map_err(|e| ClusterError::JetStream(format!("purge the stream: {e}")))?;
            tracing::info!(
                below,
                purged = purged.purged,
                "Op stream purged below the oldest snapshot kept."
            );
        }
        Ok(())
    }

    /// One look at the store: the age metric, and on the `singleton` holder a snapshot
    /// when the schedule calls for one.
    async fn on_schedule(&self, interval_ms: u64, singleton: &Ownership) {
        let stored = match list(&self.store).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "Cannot look at the snapshots.");
                return;
            }
        };
        let newest = newest(&stored);
        let now = self.clock.now_ms();
        if let Some(newest) = newest {
            let age = now.saturating_sub(newest.taken_ms) as f64 / 1_000.0;
            metrics::gauge!(telemetry::name::CLUSTER_SNAPSHOT_AGE).set(age);
        }
        if singleton.owned()
            && due(newest, self.log.applied_seq(), now, interval_ms)
            && let Err(error) = self.take().await
        {
            tracing::warn!(%error, "The scheduled snapshot failed.");
        }
    }
}

/// Each live node's applied sequence, from the heartbeats in the lease bucket (a dead
/// node's heartbeat expires with the lease TTL).
async fn live_applied(leases: &kv::Store) -> Result<Vec<u64>, ClusterError> {
    let mut keys = leases
        .keys()
        .await
        .map_err(|e| ClusterError::JetStream(format!("lease keys: {e}")))?;
    let mut nodes = Vec::new();
    while let Some(key) = keys.next().await {
        if let Ok(key) = key
            && key.starts_with("node.")
        {
            nodes.push(key);
        }
        if nodes.len() >= 4_096 {
            break;
        }
    }
    let mut applied = Vec::with_capacity(nodes.len());
    for key in nodes {
        if let Ok(Some(value)) = leases.get(&key).await {
            let beat: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
            if let Some(seq) = beat["appliedSeq"].as_u64() {
                applied.push(seq);
            }
        }
    }
    Ok(applied)
}

/// Removes copies and downloads a crash interrupted.
fn remove_leftovers(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(WORK_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Snapshotter {
    /// Writes a snapshot on schedule (the `singleton` holder) and on request (one node of the
    /// queue group), until `stop` turns true.
    pub async fn run(
        self,
        client: async_nats::Client,
        singleton: Ownership,
        mut stop: watch::Receiver<bool>,
    ) {
        let (subject, interval_ms) = (request_subject(&self.stream_name), self.interval_ms);
        let snapshotter = &self;
        let mut requests = match client
            .queue_subscribe(subject.clone(), QUEUE_GROUP.to_owned())
            .await
        {
            Ok(requests) => Some(requests),
            Err(error) => {
                tracing::warn!(%error, %subject, "Cannot take snapshot requests.");
                None
            }
        };
        let check = match interval_ms {
            0 => CLUSTER_SNAPSHOT_CHECK_MS,
            n => n.min(CLUSTER_SNAPSHOT_CHECK_MS),
        };
        let mut tick = tokio::time::interval(Duration::from_millis(check));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let request = async {
                match requests.as_mut() {
                    Some(requests) => requests.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    tokio::select! {
                        () = snapshotter.on_schedule(interval_ms, &singleton) => {}
                        _ = stop.changed() => break,
                    }
                }
                Some(message) = request => {
                    let result = tokio::select! {
                        result = snapshotter.take() => result,
                        _ = stop.changed() => break,
                    };
                    let reply = match result {
                        Ok(taken) => serde_json::to_vec(&taken).unwrap_or_default(),
                        Err(error) => {
                            tracing::warn!(%error, "The requested snapshot failed.");
                            serde_json::to_vec(&serde_json::json!({"error": error.to_string()}))
                                .unwrap_or_default()
                        }
                    };
                    if let Some(to) = message.reply {
                        let _ = client.publish(to, Bytes::from(reply)).await;
                        let _ = client.flush().await;
                    }
                }
            }
        }
    }
}

/// `sluice cluster snapshot`: asks one running node to write a snapshot now.
pub async fn request(config: &ClusterConfig) -> Result<Taken, ClusterError> {
    let client = super::connect(config).await?;
    let asked = async_nats::Request::new()
        .payload(Bytes::new())
        .timeout(Some(Duration::from_millis(CLUSTER_SNAPSHOT_REQUEST_MS)));
    let reply = client
        .send_request(request_subject(&config.stream), asked)
        .await
        .map_err(|e| match e.kind() {
            async_nats::client::RequestErrorKind::NoResponders => ClusterError::Snapshot(
                "no Sluice node of this cluster is running to write it".to_owned(),
            ),
            _ => ClusterError::Snapshot(format!("the request failed: {e}")),
        })?;
    let value: serde_json::Value =
        serde_json::from_slice(&reply.payload).map_err(|e| store_error("the node's reply", e))?;
    if let Some(error) = value["error"].as_str() {
        return Err(ClusterError::Snapshot(error.to_owned()));
    }
    serde_json::from_value(value).map_err(|e| store_error("the node's reply", e))
}

/// A node with no log in `data_dir` (new, or wiped) restores the newest snapshot there,
/// so it replays the stream only from that snapshot's sequence. `None`: the directory
/// holds a log already, or no snapshot exists (the node replays the stream from its
/// start, which `Cluster::start` refuses if it was purged).
pub async fn restore_if_empty(
    config: &ClusterConfig,
    data_dir: &Path,
) -> Result<Option<Stored>, ClusterError> {
    let target = data_dir.join("data.mdb");
    if target.exists() {
        return Ok(None);
    }
    let client = super::connect(config).await?;
    let replicas = super::replicas(&client);
    let js = super::context(client);
    let store = super::until_jetstream_answers("the snapshot bucket", || {
        ensure_store(&js, &config.stream, replicas)
    })
    .await?;
    let stored = list(&store).await?;
    let Some(newest) = newest(&stored).cloned() else {
        return Ok(None);
    };
    tokio::fs::create_dir_all(data_dir)
        .await
        .map_err(|e| store_error(&data_dir.display().to_string(), e))?;
    let partial = data_dir.join(RESTORING_FILE);
    let downloaded = download(&js, &store, &config.stream, &newest.name, &partial).await;
    if let Err(error) = downloaded {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(error);
    }
    tokio::fs::rename(&partial, &target)
        .await
        .map_err(|e| store_error(&target.display().to_string(), e))?;
    tracing::info!(
        name = %newest.name,
        applied_seq = newest.applied_seq,
        bytes = newest.bytes,
        "Restored the newest snapshot into an empty data directory."
    );
    Ok(Some(newest))
}

/// Downloads one snapshot into `to`, a few chunks at a time, and checks its SHA-256.
async fn download(
    js: &jetstream::Context,
    store: &ObjectStore,
    stream_name: &str,
    name: &str,
    to: &Path,
) -> Result<u64, ClusterError> {
    let info = store
        .info(name)
        .await
        .map_err(|e| store_error(&format!("snapshot {name}"), e))?;
    let bucket = bucket_name(stream_name);
    let chunks = js
        .get_stream(format!("OBJ_{bucket}"))
        .await
        .map_err(|e| ClusterError::JetStream(format!("stream OBJ_{bucket}: {e}")))?;
    let consumer = chunks
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("$O.{bucket}.C.{}", info.nuid),
            max_batch: CLUSTER_SNAPSHOT_FETCH_CHUNKS,
            ..pull::OrderedConfig::default()
        })
        .await
        .map_err(|e| store_error("read the snapshot", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| store_error("read the snapshot", e))?;
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| store_error(&to.display().to_string(), e))?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut written = 0u64;
    let wait = Duration::from_millis(CLUSTER_SNAPSHOT_CHUNK_WAIT_MS);
    for _ in 0..info.chunks {
        let message = tokio::time::timeout(wait, messages.next())
            .await
            .map_err(|_| store_error("read the snapshot", "a chunk did not arrive in time"))?
            .ok_or_else(|| store_error("read the snapshot", "the chunks ended early"))?
            .map_err(|e| store_error("read the snapshot", e))?;
        digest.update(&message.payload);
        file.write_all(&message.payload)
            .await
            .map_err(|e| store_error(&to.display().to_string(), e))?;
        written += message.payload.len() as u64;
    }
    if written != info.size as u64 {
        return Err(store_error(
            "read the snapshot",
            format!("{written} bytes read, {} expected", info.size),
        ));
    }
    let actual = base64::engine::general_purpose::URL_SAFE.encode(digest.finish());
    let expected = info
        .digest
        .as_deref()
        .and_then(|d| d.strip_prefix("SHA-256="))
        .unwrap_or_default();
    if actual.trim_end_matches('=') != expected.trim_end_matches('=') {
        return Err(store_error(
            "read the snapshot",
            "its SHA-256 does not match the object store's",
        ));
    }
    file.sync_all()
        .await
        .map_err(|e| store_error(&to.display().to_string(), e))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64, taken_ms: u64) -> Stored {
        Stored {
            name: object_name(seq, "a"),
            applied_seq: seq,
            taken_ms,
            bytes: 1,
        }
    }

    #[test]
    fn names_carry_the_applied_sequence_and_sort_by_it() {
        assert_eq!(seq_of(&object_name(42, "node-1")), Some(42));
        assert!(object_name(9, "z") < object_name(10, "a"));
        assert_eq!(seq_of("other"), None);
        assert_eq!(seq_of("snapshot-12"), None);
    }

    #[test]
    fn retention_keeps_the_newest_and_purges_below_the_oldest_kept() {
        let all = [stored(10, 0), stored(30, 0), stored(20, 0)];
        let plan = retention(&all, 2, &[]);
        assert_eq!(plan.delete, vec![object_name(10, "a")]);
        assert_eq!(plan.purge_below, Some(21));
        // A live node behind the oldest kept snapshot keeps the ops it still needs.
        assert_eq!(retention(&all, 2, &[35, 15]).purge_below, Some(16));
        assert_eq!(retention(&all, 5, &[]).delete, Vec::<String>::new());
        assert_eq!(retention(&all, 5, &[]).purge_below, Some(11));
        assert_eq!(
            retention(&[], 2, &[3]),
            Retention {
                delete: vec![],
                purge_below: None
            }
        );
    }

    #[test]
    fn the_schedule_wants_new_ops_and_an_old_enough_snapshot() {
        let newest = stored(10, 1_000);
        assert!(due(None, 5, 0, 60_000));
        assert!(!due(None, 0, 0, 60_000), "nothing applied");
        assert!(!due(None, 5, 0, 0), "no schedule");
        assert!(!due(Some(&newest), 10, 1_000_000, 60_000), "no new op");
        assert!(!due(Some(&newest), 11, 60_999, 60_000), "too recent");
        assert!(due(Some(&newest), 11, 61_000, 60_000));
    }
}
