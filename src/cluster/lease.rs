//! Shard leases: which node delivers on which shard, and which node runs the work that
//! runs once (`singleton`), through a JetStream key-value bucket.
//!
//! Keys: `shard.<n>` and `singleton` hold the owner's node id; `node.<id>` is each node's
//! heartbeat. The bucket's `max_age` is the lease TTL, so a key nobody renews disappears
//! by itself. Every change is a compare-and-set on the key's revision (`create` for a free
//! key, `update` with the revision read), so two nodes never both win one lease. Each
//! node renews every TTL/3 and balances toward shards/live nodes (`plan`, pure).
//!
//! A node uses a lease only while it is sure to hold it: each signal (`Ownership`) carries
//! a deadline, the renewal's send time plus 2/3 of the TTL, before the key can expire
//! anywhere. A new lease is signalled only after this node applied the stream up to its
//! end at the takeover, so it never re-sends an attempt whose outcome is already logged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ClusterError, ClusterView};
use crate::config::ClusterConfig;
use crate::log::Log;
use crate::telemetry;

/// The key of the lease that runs background tasks and retention.
pub const SINGLETON: &str = "singleton";

/// Whether this node may use one lease now: the lease's deadline, if held.
#[derive(Clone, Debug)]
pub struct Ownership(watch::Receiver<Option<Instant>>);

impl Ownership {
    /// Held, and its deadline not passed.
    pub fn owned(&self) -> bool {
        self.0.borrow().is_some_and(|until| Instant::now() < until)
    }

    /// Waits until the signal changes (forever once the lease loop is gone).
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// A signal for tests and tools: `owned()` until the sender drops or sends.
    pub fn channel() -> (watch::Sender<Option<Instant>>, Ownership) {
        let (tx, rx) = watch::channel(None);
        (tx, Ownership(rx))
    }
}

/// What one round does to one lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Renew(usize),
    Acquire(usize),
    Release(usize),
}

/// The round's plan for the shard leases: renew what `me` holds, take free shards up to
/// its share, and give one back when it holds more than its share while a live node has
/// less. `owners[n]` is shard n's holder; `live` are the nodes heard from (with `me`).
/// Shares: every node at least ⌊shards/live⌋, none more than ⌈shards/live⌉.
pub fn plan(me: &str, owners: &[Option<&str>], live: &[&str]) -> Vec<Action> {
    let nodes = live.len().max(1);
    let floor = owners.len() / nodes;
    let ceil = owners.len().div_ceil(nodes);
    let mut held: BTreeMap<&str, usize> = live.iter().map(|n| (*n, 0)).collect();
    for owner in owners.iter().flatten() {
        if let Some(count) = held.get_mut(owner) {
            *count += 1;
        }
    }
    let mine: Vec<usize> = (0..owners.len())
        .filter(|&n| owners[n] == Some(me))
        .collect();
    let someone_short = held
        .iter()
        .any(|(node, &count)| *node != me && count < floor);
    let mut actions = Vec::new();
    let mut count = mine.len();
    let release = (count > floor && someone_short).then(|| mine[mine.len() - 1]);
    for &n in &mine {
        if Some(n) == release {
            actions.push(Action::Release(n));
            count -= 1;
        } else {
            actions.push(Action::Renew(n));
        }
    }
    let want = if someone_short { floor } else { ceil };
    for (n, owner) in owners.iter().enumerate() {
        if count >= want {
            break;
        }
        if owner.is_none() {
            actions.push(Action::Acquire(n));
            count += 1;
        }
    }
    actions
}

/// Gets the lease bucket, creating it when missing (TTL = `lease_ttl_ms`).
pub async fn ensure_bucket(
    js: &jetstream::Context,
    config: &ClusterConfig,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    let name = super::lease_bucket(&config.stream);
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: name.clone(),
            history: 1,
            max_age: Duration::from_millis(config.lease_ttl_ms),
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..kv::Config::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another node created it meanwhile.
        Err(error) => js
            .get_key_value(&name)
            .await
            .map_err(|e| ClusterError::JetStream(format!("bucket {name}: {error}; {e}"))),
    }
}

/// One lease as this node sees it.
struct Held {
    key: String,
    signal: watch::Sender<Option<Instant>>,
    /// This node holds the key in the bucket.
    held: bool,
    /// Caught up since taking it: the signal may say owned.
    ready: bool,
}

impl Held {
    fn new(key: String) -> (Held, Ownership) {
        let (signal, ownership) = Ownership::channel();
        let held = Held {
            key,
            signal,
            held: false,
            ready: false,
        };
        (held, ownership)
    }

    fn lose(&mut self) {
        if self.held && self.ready {
            metrics::counter!(telemetry::name::CLUSTER_LEASE_CHANGES, "change" => "lost")
                .increment(1);
            tracing::info!(lease = %self.key, "Lease lost.");
        }
        self.signal.send_replace(None);
        self.held = false;
        self.ready = false;
    }
}

struct Leases {
    bucket: kv::Store,
    stream: stream::Stream,
    log: Log,
    me: String,
    ttl: Duration,
    shards: Vec<Held>,
    singleton: Held,
    /// Node id → when its heartbeat was last seen (by the watcher).
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    view: Arc<Mutex<ClusterView>>,
}

/// Starts the lease loop; returns it, one signal per shard, and the singleton's.
pub fn start(
    bucket: kv::Store,
    stream: stream::Stream,
    log: Log,
    config: &ClusterConfig,
    shards: usize,
    view: Arc<Mutex<ClusterView>>,
    stop: watch::Receiver<bool>,
) -> (JoinHandle<()>, Vec<Ownership>, Ownership) {
    let (held, signals): (Vec<Held>, Vec<Ownership>) =
        (0..shards).map(|n| Held::new(format!("shard.{n}"))).unzip();
    let (singleton, singleton_signal) = Held::new(SINGLETON.to_owned());
    let leases = Leases {
        bucket,
        stream,
        log,
        me: config.node_id.clone(),
        ttl: Duration::from_millis(config.lease_ttl_ms),
        shards: held,
        singleton,
        seen: Arc::default(),
        view,
    };
    (tokio::spawn(leases.run(stop)), signals, singleton_signal)
}

impl Leases {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let watcher = tokio::spawn(watch_nodes(
            self.bucket.clone(),
            Arc::clone(&self.seen),
            stop.clone(),
        ));
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            if tokio::time::timeout(self.ttl / 3, self.round())
                .await
                .is_err()
            {
                tracing::warn!("A lease round did not finish in a third of the TTL.");
            }
            self.publish_view().await;
        }
        self.release_all().await;
        watcher.abort();
        let _ = watcher.await;
    }

    /// Heartbeat, read every lease, then renew, acquire and release as `plan` says.
    async fn round(&mut self) {
        self.beat().await;
        self.seen
            .lock()
            .map(|mut seen| seen.insert(self.me.clone(), Instant::now()))
            .ok();
        let live = self.live();
        let mut entries = Vec::with_capacity(self.shards.len());
        for n in 0..self.shards.len() {
            match self.bucket.entry(self.shards[n].key.clone()).await {
                Ok(entry) => entries.push(owner_of(entry)),
                Err(error) => {
                    tracing::warn!(%error, "Cannot read the shard leases.");
                    return;
                }
            }
        }
        // A lease this node thinks it holds but someone else does (it expired): lost.
        for (n, entry) in entries.iter().enumerate() {
            let other = entry.as_ref().is_none_or(|(owner, _)| *owner != self.me);
            if other && self.shards[n].held {
                self.shards[n].lose();
            }
        }
        let owners: Vec<Option<&str>> = entries
            .iter()
            .map(|e| e.as_ref().map(|(o, _)| o.as_str()))
            .collect();
        let live_refs: Vec<&str> = live.iter().map(String::as_str).collect();
        let actions = plan(&self.me, &owners, &live_refs);
        let revisions: Vec<Option<u64>> = entries.iter().map(|e| e.as_ref().map(|e| e.1)).collect();
        for action in actions {
            match action {
                Action::Renew(n) => {
                    let revision = revisions[n].unwrap_or(0);
                    let sent = Instant::now();
                    let value = Bytes::from(self.me.clone());
                    let result = self
                        .bucket
                        .update(&self.shards[n].key, value, revision)
                        .await;
                    self.renewed(n, result.is_ok(), sent).await;
                }
                Action::Acquire(n) => {
                    let sent = Instant::now();
                    let value = Bytes::from(self.me.clone());
                    let result = self.bucket.create(&self.shards[n].key, value).await;
                    self.renewed(n, result.is_ok(), sent).await;
                }
                Action::Release(n) => {
                    self.shards[n].lose();
                    let key = self.shards[n].key.clone();
                    let _ = self.bucket.delete_expect_revision(&key, revisions[n]).await;
                    tracing::info!(lease = %key, "Lease given back to balance the shards.");
                }
            }
        }
        self.singleton_round().await;
    }

    /// Writes this node's heartbeat: what `sluice cluster status` shows of it.
    async fn beat(&self) {
        let heartbeat = format!("node.{}", self.me);
        let beat = serde_json::json!({
            "node": self.me,
            "appliedSeq": self.log.applied_seq(),
            "shards": (0..self.shards.len())
                .filter(|&n| self.shards[n].held && self.shards[n].ready)
                .collect::<Vec<_>>(),
            "singleton": self.singleton.held && self.singleton.ready,
        });
        if let Err(error) = self
            .bucket
            .put(&heartbeat, Bytes::from(beat.to_string()))
            .await
        {
            tracing::warn!(%error, "Cannot write this node's heartbeat.");
        }
    }

    /// The singleton lease: renewed by its holder, taken by anyone when free.
    async fn singleton_round(&mut self) {
        let entry = match self.bucket.entry(SINGLETON).await {
            Ok(entry) => owner_of(entry),
            Err(_) => return,
        };
        let sent = Instant::now();
        let value = Bytes::from(self.me.clone());
        let result = match &entry {
            Some((owner, revision)) if *owner == self.me => self
                .bucket
                .update(SINGLETON, value, *revision)
                .await
                .is_ok(),
            Some(_) => false,
            None => self.bucket.create(SINGLETON, value).await.is_ok(),
        };
        let (log, stream, ttl) = (self.log.clone(), self.stream.clone(), self.ttl);
        confirm(&mut self.singleton, result, sent, ttl, &log, &stream).await;
    }

    async fn renewed(&mut self, n: usize, ok: bool, sent: Instant) {
        let (log, stream, ttl) = (self.log.clone(), self.stream.clone(), self.ttl);
        confirm(&mut self.shards[n], ok, sent, ttl, &log, &stream).await;
    }

    /// Nodes heard from within the TTL, this one included, sorted.
    fn live(&self) -> Vec<String> {
        let now = Instant::now();
        let mut live: Vec<String> = self
            .seen
            .lock()
            .map(|seen| {
                seen.iter()
                    .filter(|(_, at)| now.duration_since(**at) < self.ttl)
                    .map(|(node, _)| node.clone())
                    .collect()
            })
            .unwrap_or_default();
        if !live.contains(&self.me) {
            live.push(self.me.clone());
        }
        live.sort();
        live
    }

    async fn publish_view(&mut self) {
        let owned: Vec<usize> = (0..self.shards.len())
            .filter(|&n| self.shards[n].held && self.shards[n].ready)
            .collect();
        let last = super::last_seq(&self.stream).await.ok();
        let applied = self.log.applied_seq();
        metrics::gauge!(telemetry::name::CLUSTER_SHARDS_OWNED).set(owned.len() as f64);
        metrics::gauge!(telemetry::name::CLUSTER_APPLIED_SEQ).set(applied as f64);
        let live = self.live();
        if let Ok(mut view) = self.view.lock() {
            if let Some(last) = last {
                view.stream_last_seq = last;
                metrics::gauge!(telemetry::name::CLUSTER_APPLIER_LAG)
                    .set(last.saturating_sub(applied) as f64);
            }
            view.shards_owned = owned;
            view.singleton = self.singleton.held && self.singleton.ready;
            view.live_nodes = live;
        }
    }

    /// On stop: stop using every lease, then delete the keys, so the others take the
    /// shards at their next round instead of after the TTL.
    async fn release_all(&mut self) {
        let mut keys = Vec::new();
        for lease in self
            .shards
            .iter_mut()
            .chain(std::iter::once(&mut self.singleton))
        {
            if lease.held {
                keys.push(lease.key.clone());
            }
            lease.lose();
        }
        for key in keys {
            if let Ok(Some((owner, revision))) = self.bucket.entry(key.clone()).await.map(owner_of)
                && owner == self.me
            {
                let _ = self
                    .bucket
                    .delete_expect_revision(&key, Some(revision))
                    .await;
            }
        }
    }
}

/// Records the result of renewing or taking `lease` (a renewal sent at `sent`). A lease
/// newly held is signalled only once the applier reached the stream's end as it was now.
async fn confirm(
    lease: &mut Held,
    ok: bool,
    sent: Instant,
    ttl: Duration,
    log: &Log,
    stream: &stream::Stream,
) {
    if !ok {
        lease.lose();
        return;
    }
    lease.held = true;
    if !lease.ready {
        let Ok(last) = super::last_seq(stream).await else {
            return;
        };
        if !super::caught_up(log, last, ttl / 6).await {
            // Still applying: hold the lease, signal at a later round.
            return;
        }
        lease.ready = true;
        metrics::counter!(telemetry::name::CLUSTER_LEASE_CHANGES, "change" => "gained")
            .increment(1);
        tracing::info!(lease = %lease.key, applied_seq = log.applied_seq(), "Lease gained.");
    }
    lease.signal.send_replace(Some(sent + ttl * 2 / 3));
}

/// The holder and revision of a lease entry (`None`: free).
fn owner_of(entry: Option<kv::Entry>) -> Option<(String, u64)> {
    let entry = entry?;
    (entry.operation == Operation::Put).then(|| {
        (
            String::from_utf8_lossy(&entry.value).into_owned(),
            entry.revision,
        )
    })
}

/// Keeps `seen` current from the nodes' heartbeat keys (a watch on `node.>`).
async fn watch_nodes(
    bucket: kv::Store,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let mut updates = match bucket.watch("node.>").await {
            Ok(updates) => updates,
            Err(error) => {
                tracing::warn!(%error, "Cannot watch the node heartbeats; retrying.");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        loop {
            let update = tokio::select! {
                update = updates.next() => update,
                _ = stop.changed() => return,
            };
            match update {
                Some(Ok(entry)) if entry.operation == Operation::Put => {
                    let node = entry.key.trim_start_matches("node.").to_owned();
                    if let Ok(mut seen) = seen.lock() {
                        seen.insert(node, Instant::now());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners<'a>(spec: &[&'a str]) -> Vec<Option<&'a str>> {
        spec.iter().map(|o| (!o.is_empty()).then_some(*o)).collect()
    }

    #[test]
    fn a_lone_node_takes_every_shard() {
        let actions = plan("a", &owners(&["", "", "", ""]), &["a"]);
        assert_eq!(
            actions,
            (0..4).map(Action::Acquire).collect::<Vec<_>>(),
            "{actions:?}"
        );
    }

    #[test]
    fn a_node_that_holds_too_many_gives_one_back_while_another_is_short() {
        let plan_a = plan("a", &owners(&["a", "a", "a", "a"]), &["a", "b", "c"]);
        assert_eq!(
            plan_a,
            vec![
                Action::Renew(0),
                Action::Renew(1),
                Action::Renew(2),
                Action::Release(3)
            ]
        );
        // b takes what is free, up to its floor while someone else is short.
        let plan_b = plan("b", &owners(&["a", "a", "a", ""]), &["a", "b", "c"]);
        assert_eq!(plan_b, vec![Action::Acquire(3)]);
    }

    #[test]
    fn balanced_holdings_are_only_renewed() {
        let spread = owners(&["a", "b", "c", "a"]);
        for me in ["a", "b", "c"] {
            let actions = plan(me, &spread, &["a", "b", "c"]);
            assert!(
                actions.iter().all(|a| matches!(a, Action::Renew(_))),
                "{me}: {actions:?}"
            );
        }
    }

    #[test]
    fn the_shards_of_a_dead_node_are_taken_by_the_living() {
        // c died: its key expired (free); a and b each end within ceil(4/2) = 2.
        let free = owners(&["a", "b", "", ""]);
        let plan_a = plan("a", &free, &["a", "b"]);
        assert_eq!(plan_a, vec![Action::Renew(0), Action::Acquire(2)]);
        let plan_b = plan("b", &owners(&["a", "b", "a", ""]), &["a", "b"]);
        assert_eq!(plan_b, vec![Action::Renew(1), Action::Acquire(3)]);
    }

    #[test]
    fn a_signal_is_owned_until_its_deadline() {
        let (tx, ownership) = Ownership::channel();
        assert!(!ownership.owned());
        tx.send_replace(Some(Instant::now() + Duration::from_secs(60)));
        assert!(ownership.owned());
        tx.send_replace(Some(Instant::now()));
        assert!(!ownership.owned());
    }
}
