//! The log: Sluice's durable state in one LMDB environment.
//!
//! Vocabulary: "the log" is this LMDB store, never diagnostic output (that is "tracing").
//!
//! `Log` is a cheap handle. Reads open a short read transaction on the caller's thread
//! (`Log::read`) and never hold it across `.await`. Every write is a closure sent to the one
//! writer thread (`writer.rs`), which runs many of them in one transaction, commits with
//! fsync and only then acknowledges each (group commit). A caller that got `Ok` from
//! `Log::write` knows its change is on disk.
//!
//! The on-disk layout is in `schema.rs`; the in-memory endpoint index the writer uses to
//! fan a message out is in `index.rs`.

mod apply;
pub mod deliveries;
pub mod index;
pub mod operational;
pub mod ops;
pub mod purge;
pub mod replies;
pub mod reserve;
pub mod retention;
pub mod schema;
pub mod seal;
pub mod tables;
pub mod tasks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, RoTxn, WithoutTls};
use tokio::sync::oneshot;

use crate::config::StorageConfig;
use crate::heartbeat::Heartbeat;
use ops::{Envelope, Outcome, RenderReply};
pub use schema::{AppKey, AttemptKey, EndpointKey, Seq};
pub(in crate::log) use writer::{WriteCtx, WriterState};

/// LMDB's data file in a data directory (beside it, `lock.mdb`).
const DATA_FILE: &str = "data.mdb";

/// A database of raw byte keys and values; `schema.rs` gives the bytes their meaning.
pub(in crate::log) type Table = Database<'static, Bytes, Bytes>;

/// A malfunction of the log. Expected outcomes (a uid conflict, a missing record) are
/// values returned by the operations, never these.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("the LMDB map is full; raise storage.map_size_bytes")]
    MapFull,
    #[error("the data directory's filesystem is full")]
    DiskFull,
    #[error("the writer is busy; its intake queue is full")]
    Busy,
    #[error("the writer thread has stopped")]
    WriterGone,
    #[error("corrupt record in `{table}`: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("the data directory has schema version {found}; this build reads version {supported}")]
    SchemaMismatch { found: u64, supported: u64 },
    #[error(
        "the data directory has schema version {found}; this build migrates it to version \
         {supported} when `sluice serve` starts (after copying it beside itself), not from a \
         command-line tool, which could run beside a daemon of the release before: start the \
         service of this release first"
    )]
    MigrationRefused { found: u64, supported: u64 },
    #[error("LMDB error: {0}")]
    Lmdb(String),
    #[error("cannot use the data directory: {0}")]
    Io(String),
    #[error("secrets key: {0}")]
    Secrets(String),
    /// Cluster mode: the op could not be replicated (or applied here) in time. It may
    /// still be applied later; the caller cannot know.
    #[error("cluster: {0}")]
    Cluster(String),
}

impl LogError {
    pub fn corrupt(table: &'static str, detail: &str) -> LogError {
        LogError::Corrupt {
            table,
            detail: detail.to_owned(),
        }
    }
}

impl From<heed::Error> for LogError {
    fn from(error: heed::Error) -> LogError {
        match error {
            heed::Error::Mdb(heed::MdbError::MapFull) => LogError::MapFull,
            heed::Error::Mdb(heed::MdbError::Other(code)) if is_no_space(code) => {
                LogError::DiskFull
            }
            heed::Error::Io(e) if e.raw_os_error().is_some_and(is_no_space) => LogError::DiskFull,
            other => LogError::Lmdb(other.to_string()),
        }
    }
}

impl Dbs {
    /// Every table, in `schema::db_name::ALL` order.
    fn all_tables(&self) -> [&Table; 29] {
        [
            &self.meta,
            &self.msgs,
            &self.msg_ids,
            &self.app_msgs,
            &self.deliveries,
            &self.endpoint_deliveries,
            &self.due,
            &self.apps,
            &self.app_ids,
            &self.endpoints,
            &self.endpoint_ids,
            &self.app_endpoints,
            &self.event_types,
            &self.tokens,
            &self.idempotency,
            &self.attempts,
            &self.attempt_ids,
            &self.msg_attempts,
            &self.endpoint_attempts,
            &self.tasks,
            &self.task_ids,
            &self.running_tasks,
            &self.consumers,
            &self.poller_tokens,
            &self.sources,
            &self.source_ids,
            &self.source_tokens,
            &self.source_errors,
            &self.replies,
        ]
    }
}

/// ENOSPC (no space left on the device) or EDQUOT (quota exceeded), as LMDB passes them.
fn is_no_space(code: i32) -> bool {
    code == 28 || code == 122
}

/// The typed set of databases, opened once, and the secrets key (if any) that seals and
/// opens endpoint secrets on their way in and out.
#[derive(Clone)]
pub struct Dbs {
    pub(in crate::log) sealer: Option<Arc<seal::Sealer>>,
    /// Where the secrets key was read from (for the operator: backups need it too).
    pub(in crate::log) secrets_key_file: Option<PathBuf>,
    pub(in crate::log) meta: Table,
    pub(in crate::log) msgs: Table,
    pub(in crate::log) msg_ids: Table,
    pub(in crate::log) app_msgs: Table,
    /// `delivery_rows`: every delivery, keyed (seq, endpoint) (`log::deliveries` only).
    pub(in crate::log) deliveries: Table,
    /// Each endpoint's deliveries in seq order, up to a watermark (`log::deliveries` only).
    pub(in crate::log) endpoint_deliveries: Table,
    pub(in crate::log) due: Table,
    pub(in crate::log) apps: Table,
    pub(in crate::log) app_ids: Table,
    pub(in crate::log) endpoints: Table,
    pub(in crate::log) endpoint_ids: Table,
    pub(in crate::log) app_endpoints: Table,
    pub(in crate::log) event_types: Table,
    pub(in crate::log) tokens: Table,
    /// Remembered replies of layouts before `replies` (read until they expire).
    pub(in crate::log) idempotency: Table,
    /// Remembered replies by the time they were made (expiry reads it from the front).
    pub(in crate::log) replies: Table,
    /// Where each reply of `replies` is (built when the log opens, kept by the writer).
    pub(in crate::log) reply_index: Arc<replies::ReplyIndex>,
    pub(in crate::log) attempts: Table,
    pub(in crate::log) attempt_ids: Table,
    pub(in crate::log) msg_attempts: Table,
    pub(in crate::log) endpoint_attempts: Table,
    pub(in crate::log) tasks: Table,
    pub(in crate::log) task_ids: Table,
    pub(in crate::log) running_tasks: Table,
    pub(in crate::log) consumers: Table,
    pub(in crate::log) poller_tokens: Table,
    pub(in crate::log) sources: Table,
    pub(in crate::log) source_ids: Table,
    pub(in crate::log) source_tokens: Table,
    pub(in crate::log) source_errors: Table,
}

struct Shared {
    env: Env<WithoutTls>,
    dbs: Dbs,
    intake: crossbeam_channel::Sender<writer::Intake>,
    /// Beaten by the writer thread on every turn of its loop (at least once a second).
    writer_heartbeat: Arc<Heartbeat>,
    /// Whether the writer's last batch failed to commit, and why (for health).
    writer_health: Arc<writer::WriterHealth>,
    /// The data directory (its filesystem's free space guards ingest).
    dir: PathBuf,
    /// Cluster mode: the stream sequence of the last op committed (0: none, or embedded).
    applied_seq: Arc<AtomicU64>,
    /// Cluster mode: where `submit` sends ops (to the replicated stream) instead of the
    /// writer. Set once, before the API serves; never set in the embedded mode.
    replicator: OnceLock<Arc<dyn Replicate>>,
}

/// Where a cluster node's `Log::submit` sends an op: the replicated op log. `reply` is
/// answered with this node's own apply outcome once the op is in the stream and applied
/// here. `Err` if nothing was sent (too many ops in flight).
pub trait Replicate: Send + Sync {
    fn replicate(
        &self,
        envelope: Envelope,
        reply: oneshot::Sender<Result<Outcome, LogError>>,
    ) -> Result<(), LogError>;
}

/// A message read from the replicated stream, for this node's writer: its sequence and
/// its ops in order, each with the waiter of the request on this node that published it
/// (if any). Its ops are applied in one transaction.
pub struct StreamMessage {
    pub seq: u64,
    pub ops: Vec<(Envelope, Option<Waiter>)>,
}

/// Where a request waits for its op's outcome.
pub type Waiter = oneshot::Sender<Result<Outcome, LogError>>;

/// A pending delivery the writer has just committed, or one a scan found due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DueJob {
    pub endpoint_key: EndpointKey,
    pub seq: Seq,
    pub due_ms: u64,
}

/// Where the writer hands newly committed deliveries after each commit: one bounded queue
/// per delivery shard. A full queue drops the hand-off, never the delivery: it is in the
/// `due` table, and the shard's next scan finds it.
#[derive(Clone)]
pub struct Publisher {
    shards: Vec<tokio::sync::mpsc::Sender<DueJob>>,
}

impl Publisher {
    pub fn new(shards: Vec<tokio::sync::mpsc::Sender<DueJob>>) -> Publisher {
        assert!(!shards.is_empty(), "at least one shard");
        Publisher { shards }
    }

    /// Which shard owns `endpoint_key` (a fixed, well-mixed function of the key).
    pub fn shard_of(endpoint_key: EndpointKey, shards: usize) -> usize {
        let mixed = endpoint_key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        usize::try_from(mixed % shards as u64).unwrap_or(0)
    }

    fn publish(&self, jobs: impl Iterator<Item = DueJob>) {
        for job in jobs {
            let shard = &self.shards[Publisher::shard_of(job.endpoint_key, self.shards.len())];
            let _ = shard.try_send(job);
        }
    }
}

/// Handle to the log. Cloning it is cheap; the writer stops when the last handle drops.
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

/// An op the writer has queued; `durable` waits for its commit.
#[derive(Debug)]
pub struct QueuedWrite(oneshot::Receiver<Result<Outcome, LogError>>);

impl QueuedWrite {
    /// The op's outcome once its batch is committed (or why it is not).
    pub async fn durable(self) -> Result<Outcome, LogError> {
        self.0.await.map_err(|_| LogError::WriterGone)?
    }
}

/// Joins the writer thread (and the data file's reserve) once every `Log` handle is gone.
pub struct WriterJoin {
    writer: std::thread::JoinHandle<()>,
    reserve: Option<reserve::Reserve>,
}

impl WriterJoin {
    /// Waits for the writer to commit what it has and stop, then stops the reserve. Call
    /// after dropping every `Log`.
    pub fn wait(self) {
        // A panic in the writer already aborted the process (panic = "abort" in release);
        // in tests the panic message has been printed and there is nothing left to do.
        let _ = self.writer.join();
        if let Some(reserve) = self.reserve {
            reserve.join();
        }
    }
}

/// Whether opening a log written by an earlier schema may migrate it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// Migrate it (after copying it beside itself): the serving process, which owns the
    /// data directory.
    Migrate,
    /// Refuse with `LogError::MigrationRefused`: the command-line tools, which may run
    /// beside a daemon of the release before, whose writes a migration would strand.
    Refuse,
}

impl Log {
    /// Opens (or creates) the environment in `dir` and starts the writer thread.
    /// `render` gives the replies idempotent requests remember (the API's); `publisher`
    /// takes the deliveries each commit makes due.
    pub fn open(
        dir: &Path,
        storage: &StorageConfig,
        render: Option<RenderReply>,
        publisher: Option<Publisher>,
        upgrade: Upgrade,
    ) -> Result<(Log, WriterJoin), LogError> {
        let (env, dbs) = open_env(dir, storage, upgrade)?;
        let state = WriterState::load(&env, &dbs)?;
        let applied_seq = Arc::new(AtomicU64::new(state.applied_seq));
        let writer_applied = Arc::clone(&applied_seq);
        let (intake, ops) = crossbeam_channel::bounded(storage.intake_capacity);
        let thread_env = env.clone();
        let writer_heartbeat = Arc::new(Heartbeat::default());
        writer_heartbeat.beat();
        let beats = Arc::clone(&writer_heartbeat);
        let writer_dbs = dbs.clone();
        let writer_health = Arc::new(writer::WriterHealth::default());
        let health = Arc::clone(&writer_health);
        let written_pages = Arc::new(reserve::WrittenPages::default());
        written_pages.set(env.info().last_page_number as u64 + 1);
        let writer_written = Arc::clone(&written_pages);
        let reserve = reserve::Reserve::start(
            dir,
            u64::from(env.unnamed_database_stat().page_size),
            storage.map_size_bytes,
            storage.disk_reserve_bytes,
            written_pages,
        );
        let join = std::thread::Builder::new()
            .name("sluice-writer".to_owned())
            .spawn(move || {
                let publisher = publisher.as_ref();
                writer::run(
                    &thread_env,
                    writer_dbs,
                    state,
                    &ops,
                    render,
                    publisher,
                    &writer::Signals {
                        heartbeat: &beats,
                        health: &health,
                        applied_seq: &writer_applied,
                        written_pages: &writer_written,
                    },
                );
            })
            .map_err(|e| LogError::Io(format!("cannot start the writer thread: {e}")))?;
        let shared = Shared {
            env,
            dbs,
            intake,
            writer_heartbeat,
            applied_seq,
            replicator: OnceLock::new(),
            writer_health,
            dir: dir.to_path_buf(),
        };
        Ok((
            Log {
                shared: Arc::new(shared),
            },
            WriterJoin {
                writer: join,
                reserve,
            },
        ))
    }

    /// Runs `f` in a short read transaction on this thread. Never call across `.await`.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&RoTxn<'_, WithoutTls>, &Dbs) -> Result<R, LogError>,
    ) -> Result<R, LogError> {
        let rtxn = self.shared.env.read_txn()?;
        f(&rtxn, &self.shared.dbs)
    }

    /// Applies `envelope` on the writer thread inside a group-committed transaction and
    /// returns its outcome once the transaction is durable. `Err` is a malfunction (the
    /// writer's queue is full, the log cannot be written); refusals are outcomes.
    pub async fn submit(&self, envelope: Envelope) -> Result<Outcome, LogError> {
        self.submit_queued(envelope)?.durable().await
    }

    /// Queues `envelope` for the writer now and returns a handle that resolves once its
    /// batch is durable: for a caller that has more to do before it needs the outcome.
    /// `Err` if the writer's queue is full or the writer is gone (nothing was queued).
    ///
    /// In cluster mode the op goes to the replicated stream instead, and the handle
    /// resolves once this node's applier has applied it (with this node's outcome).
    pub fn submit_queued(&self, envelope: Envelope) -> Result<QueuedWrite, LogError> {
        let (waiter, rx) = oneshot::channel();
        if let Some(replicator) = self.shared.replicator.get() {
            replicator.replicate(envelope, waiter)?;
            return Ok(QueuedWrite(rx));
        }
        self.send(writer::Intake::Apply(writer::Job {
            envelope,
            waiter: Some(waiter),
            stream_seq: 0,
            stream_part: 0,
        }))?;
        Ok(QueuedWrite(rx))
    }

    /// Cluster mode: from now on, `submit` sends ops to `replicator`. Set once.
    pub fn replicate_through(&self, replicator: Arc<dyn Replicate>) -> Result<(), LogError> {
        self.shared
            .replicator
            .set(replicator)
            .map_err(|_| LogError::Cluster("the log already replicates".to_owned()))
    }

    /// Cluster mode: hands a message read from the stream to the writer, which applies its
    /// ops and stores its `seq` as `applied_seq` in the same transaction. The applier
    /// calls this in stream order; a full queue gives the message back (to retry, never to
    /// skip).
    pub fn feed(&self, message: StreamMessage) -> Result<(), Box<(StreamMessage, LogError)>> {
        let seq = message.seq;
        let jobs = message
            .ops
            .into_iter()
            .zip(0u32..)
            .map(|((envelope, waiter), part)| writer::Job {
                envelope,
                waiter,
                stream_seq: seq,
                stream_part: part,
            })
            .collect();
        self.shared
            .intake
            .try_send(writer::Intake::ApplyStream(jobs))
            .map_err(|e| {
                let error = match &e {
                    crossbeam_channel::TrySendError::Full(_) => LogError::Busy,
                    crossbeam_channel::TrySendError::Disconnected(_) => LogError::WriterGone,
                };
                let ops = e
                    .into_inner()
                    .into_jobs()
                    .into_iter()
                    .map(|job| (job.envelope, job.waiter))
                    .collect();
                Box::new((StreamMessage { seq, ops }, error))
            })
    }

    /// Cluster mode: the stream sequence of the last op this node has committed (0 in the
    /// embedded mode).
    pub fn applied_seq(&self) -> u64 {
        self.shared.applied_seq.load(Ordering::Acquire)
    }

    /// Test hook: parks the writer thread for good, as a deadlock would (the watchdog
    /// test watches the pings stop). Only `SLUICE_TEST_HOOKS=1` reaches it, and only in a
    /// debug build.
    #[cfg(debug_assertions)]
    pub fn wedge_writer(&self) -> Result<(), LogError> {
        self.send(writer::Intake::Wedge)
    }

    fn send(&self, item: writer::Intake) -> Result<(), LogError> {
        self.shared.intake.try_send(item).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => LogError::Busy,
            crossbeam_channel::TrySendError::Disconnected(_) => LogError::WriterGone,
        })
    }

    /// A secret in the form the log stores it: sealed when a secrets key is configured.
    /// Ops carry secrets only in this form.
    pub fn stored_secret(&self, plain: &[u8]) -> Vec<u8> {
        match &self.shared.dbs.sealer {
            Some(sealer) => sealer.seal(plain),
            None => plain.to_vec(),
        }
    }

    /// A secret text (header value, static token) in the form the log stores it.
    pub fn stored_text(&self, plain: &str) -> String {
        match &self.shared.dbs.sealer {
            Some(sealer) => sealer.seal_text(plain),
            None => plain.to_owned(),
        }
    }

    /// Opens a secret text stored by `stored_text` (a poller or source token, a source's
    /// secret), for a read that shows or uses it.
    pub fn open_text(&self, stored: &str, sealed: bool) -> Result<String, LogError> {
        match (&self.shared.dbs.sealer, sealed) {
            (_, false) => Ok(stored.to_owned()),
            (Some(sealer), true) => sealer.open_text(stored),
            (None, true) => Err(LogError::Secrets(
                "a secret is sealed and no key is configured".to_owned(),
            )),
        }
    }

    /// Whether the log seals secrets (a secrets key is configured).
    pub fn seals(&self) -> bool {
        self.shared.dbs.sealer.is_some()
    }

    /// The file of the key the log's secrets are sealed with (`None`: not sealed).
    pub fn secrets_key_file(&self) -> Option<&Path> {
        self.shared.dbs.secrets_key_file.as_deref()
    }

    /// Why the writer's last batch failed to commit, if it did (`None`: writing works).
    pub fn write_failure(&self) -> Option<String> {
        self.shared.writer_health.failure()
    }

    /// Bytes free for Sluice on the data directory's filesystem (`statvfs`: blocks
    /// available to unprivileged users); `None` if it cannot be asked.
    pub fn filesystem_free_bytes(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.shared.dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Bytes of the data file LMDB will fill before the file needs more disk: the pages
    /// deletes have freed (up to the last page written, less the pages the tables and
    /// LMDB's two meta pages hold; an estimate that counts the free list's own few pages
    /// as free), and the zeroed reserve past the last page (`reserve.rs`).
    pub fn reusable_bytes(&self) -> Result<u64, LogError> {
        let env = &self.shared.env;
        let info = env.info();
        let rtxn = env.read_txn()?;
        let dbs = &self.shared.dbs;
        let main = env.unnamed_database_stat();
        let page = u64::from(main.page_size);
        let pages =
            |s: heed::DatabaseStat| (s.branch_pages + s.leaf_pages + s.overflow_pages) as u64;
        let mut used = 2 + pages(main);
        for table in dbs.all_tables() {
            used += pages(table.stat(&rtxn)?);
        }
        let written = info.last_page_number as u64 + 1;
        let file_len = std::fs::metadata(self.shared.dir.join(DATA_FILE)).map_or(0, |m| m.len());
        let reserve = file_len.saturating_sub(written * page);
        Ok(written.saturating_sub(used) * page + reserve)
    }

    /// The writer thread's heartbeat (for the watchdog).
    pub fn writer_heartbeat(&self) -> Arc<Heartbeat> {
        Arc::clone(&self.shared.writer_heartbeat)
    }

    /// The data directory the log lives in.
    pub fn data_dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Copies the environment, compacted, into `dir` (created if missing) as a data
    /// directory `Log::open` can open. Runs in one read transaction: the copy is the state
    /// of one moment, and writers go on meanwhile. Returns the copy's size in bytes.
    pub fn backup_to(&self, dir: &Path) -> Result<u64, LogError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::Io(format!("{}: {e}", dir.display())))?;
        let target = dir.join(DATA_FILE);
        if target.exists() {
            return Err(LogError::Io(format!(
                "{} already holds a log; back up into a new directory",
                dir.display()
            )));
        }
        let file = self
            .shared
            .env
            .copy_to_path(&target, heed::CompactionOption::Enabled)?;
        file.sync_all()
            .map_err(|e| LogError::Io(format!("{}: {e}", target.display())))?;
        file.metadata()
            .map(|m| m.len())
            .map_err(|e| LogError::Io(format!("{}: {e}", target.display())))
    }

    /// A SHA-256 digest of every table's contents (each row's key and value, in key
    /// order), taken in one read transaction: two logs that applied the same ops hold the
    /// same digests. For the determinism tests and cluster verification.
    pub fn table_digests(&self) -> Result<Vec<(&'static str, [u8; 32])>, LogError> {
        let rtxn = self.shared.env.read_txn()?;
        let dbs = &self.shared.dbs;
        let tables = dbs.all_tables();
        let mut digests = Vec::with_capacity(tables.len());
        for (name, table) in schema::db_name::ALL.into_iter().zip(tables) {
            let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
            for row in table.iter(&rtxn)? {
                let (key, value) = row?;
                digest.update(&(key.len() as u64).to_be_bytes());
                digest.update(key);
                digest.update(&(value.len() as u64).to_be_bytes());
                digest.update(value);
            }
            let mut out = [0u8; 32];
            out.copy_from_slice(digest.finish().as_ref());
            digests.push((name, out));
        }
        Ok(digests)
    }

    /// How many idempotent replies are remembered: in `replies`, and in the table of
    /// earlier layouts (until they expire).
    pub fn idempotency_rows(&self) -> Result<(u64, u64), LogError> {
        let rtxn = self.shared.env.read_txn()?;
        tables::idempotency_rows(&rtxn, &self.shared.dbs)
    }

    /// Size facts for health and metrics: (map size, bytes in use, reader slots in use).
    pub fn usage(&self) -> (u64, u64, u32) {
        let info = self.shared.env.info();
        let page = 4096u64;
        (
            info.map_size as u64,
            (info.last_page_number as u64 + 1) * page,
            info.number_of_readers,
        )
    }
}

/// Opens the environment in `dir`, checks its schema and secrets key (sealing a clear log
/// when a key is configured). Runs before any writer thread exists: its write
/// transactions (the schema version, the sealing migration) are the start-up's own.
fn open_env(
    dir: &Path,
    storage: &StorageConfig,
    upgrade: Upgrade,
) -> Result<(Env<WithoutTls>, Dbs), LogError> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::Io(format!("{}: {e}", dir.display())))?;
    let map_size = usize::try_from(storage.map_size_bytes).unwrap_or(usize::MAX);
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(map_size).max_dbs(32).max_readers(512);
    #[expect(unsafe_code, reason = "opening an LMDB environment is unsafe in heed")]
    // SAFETY: heed requires that the same environment is not opened twice in one process
    // and that the file is not modified by other means while open. Sluice opens its data
    // directory once per process (`app::run` or one CLI command), and other processes
    // (the CLI next to a daemon) go through LMDB's own lock file, which is safe. The one
    // other writer of `data.mdb`, the zeroed reserve, only appends past every byte
    // written (`reserve.rs`, ARCHITECTURE invariant 27).
    let env = unsafe { options.open(dir) }?;
    env.clear_stale_readers()?;
    // Before anything is created: a log this build will not open stays as it was.
    let stored_version = vetted_schema_version(&env, upgrade)?;
    let mut dbs = create_databases(&env)?;
    check_schema(dir, &env, &dbs, stored_version)?;
    if let Some(path) = secrets_key_path(dir, storage, &env, &dbs)? {
        dbs.sealer = Some(Arc::new(seal::Sealer::from_key_file(&path)?));
        dbs.secrets_key_file = Some(path);
    }
    check_secrets_key(&env, &dbs)?;
    Ok((env, dbs))
}

/// The name of the secrets key Sluice makes in the data directory when none is configured.
pub const DEFAULT_SECRETS_KEY_FILE: &str = "secrets.key";

/// The file of the secrets key to seal with, if any: the configured one; else, unless
/// `seal_secrets` is off, `<dir>/secrets.key`, made (mode 0600) when the log has never been
/// sealed. A sealed log whose default key is missing is refused: a new key would not
/// open it. A backup (`backup_to`) copies `data.mdb` only, never the key.
fn secrets_key_path(
    dir: &Path,
    storage: &StorageConfig,
    env: &Env<WithoutTls>,
    dbs: &Dbs,
) -> Result<Option<PathBuf>, LogError> {
    if let Some(path) = &storage.secrets_key_file {
        return Ok(Some(path.clone()));
    }
    if !storage.seal_secrets {
        return Ok(None);
    }
    let path = dir.join(DEFAULT_SECRETS_KEY_FILE);
    if path.exists() {
        return Ok(Some(path));
    }
    let sealed = {
        let rtxn = env.read_txn()?;
        dbs.meta
            .get(&rtxn, schema::meta_key::SECRETS_KEY_CHECK)?
            .is_some()
    };
    if sealed {
        return Err(LogError::Secrets(format!(
            "the log's endpoint secrets are sealed and their key {} is missing; restore it \
             there, or set storage.secrets_key_file (or the systemd credential secrets-key) \
             to the key they were sealed with",
            path.display()
        )));
    }
    seal::write_new_key(&path)?;
    tracing::warn!(
        key = %path.display(),
        "Made a secrets key: endpoint secrets, header values and static tokens are sealed \
         with it. Keep a copy apart from the data: backups do not contain it, and a backup \
         cannot be opened without it."
    );
    Ok(Some(path))
}

/// Re-seals every endpoint's secrets with `new` (a key rotation) and records its check
/// value, in one transaction: afterwards the log opens only with the new key. Runs with
/// no writer thread (`sluice rekey`, Sluice stopped); LMDB's lock serialises it against
/// any other process. Returns how many endpoints were re-sealed.
pub fn reseal_secrets(
    dir: &Path,
    storage: &StorageConfig,
    new: &seal::Sealer,
) -> Result<usize, LogError> {
    let (env, dbs) = open_env(dir, storage, Upgrade::Refuse)?;
    let mut wtxn = env.write_txn()?;
    let mut endpoints = Vec::new();
    for row in dbs.endpoints.iter(&wtxn)? {
        let (_, value) = row?;
        // Opened with the key the log was opened with, sealed with the new one.
        endpoints.push(tables::decode_endpoint(&dbs, value)?);
    }
    for endpoint in &endpoints {
        let sealed = schema::encode_json(&new.seal_endpoint(endpoint));
        dbs.endpoints
            .put(&mut wtxn, &schema::u64_key(endpoint.key), &sealed)?;
    }
    reseal_source_secrets(&mut wtxn, &dbs, new)?;
    dbs.meta.put(
        &mut wtxn,
        schema::meta_key::SECRETS_KEY_CHECK,
        &new.check_value(),
    )?;
    wtxn.commit()?;
    Ok(endpoints.len())
}

/// Re-seals the ingest sources' secrets (config values, URL tokens) and the poller
/// tokens with `new`, each opened with the key the log was opened with (a clear one is
/// sealed now). Part of `reseal_secrets`' one transaction.
fn reseal_source_secrets(
    wtxn: &mut heed::RwTxn<'_>,
    dbs: &Dbs,
    new: &seal::Sealer,
) -> Result<(), LogError> {
    let open = |text: &str, sealed: bool| -> Result<String, LogError> {
        match (&dbs.sealer, sealed) {
            (_, false) => Ok(text.to_owned()),
            (Some(old), true) => old.open_text(text),
            (None, true) => Err(LogError::Secrets(
                "a secret is sealed and no key is configured".to_owned(),
            )),
        }
    };
    let mut sources = Vec::new();
    for row in dbs.sources.iter(wtxn)? {
        let (_, value) = row?;
        sources.push(schema::decode_json::<schema::SourceRecord>(
            schema::db_name::SOURCES,
            value,
        )?);
    }
    for mut source in sources {
        for value in source.config.values_mut() {
            *value = new.seal_text(&open(value, source.sealed)?);
        }
        source.token = new.seal_text(&open(&source.token, source.sealed)?);
        source.sealed = true;
        dbs.sources.put(
            wtxn,
            &schema::u64_key(source.key),
            &schema::encode_json(&source),
        )?;
    }
    let mut tokens = Vec::new();
    for row in dbs.poller_tokens.iter(wtxn)? {
        let (key, value) = row?;
        let token = schema::decode_json::<schema::PollerTokenRecord>(
            schema::db_name::POLLER_TOKENS,
            value,
        )?;
        tokens.push((key.to_vec(), token));
    }
    for (key, mut token) in tokens {
        token.token = new.seal_text(&open(&token.token, token.sealed)?);
        token.sealed = true;
        dbs.poller_tokens
            .put(wtxn, &key, &schema::encode_json(&token))?;
    }
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "one line per table, twice: the list of tables is the function"
)]
fn create_databases(env: &Env<WithoutTls>) -> Result<Dbs, LogError> {
    let wtxn = env.write_txn()?;
    let tables: [Table; 29] = env
        .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, heed::Error> {
            let mut tables = Vec::with_capacity(schema::db_name::ALL.len());
            for name in schema::db_name::ALL {
                tables.push(opener.create_database::<Bytes, Bytes>(wtxn, Some(name))?);
            }
            let tables: [Database<'_, Bytes, Bytes>; 29] = tables
                .try_into()
                .unwrap_or_else(|_| unreachable!("ALL has 29 names"));
            Ok(heed::CommitOrAbort::<_, ()>::Commit(tables))
        })?
        .unwrap_commit();
    let [
        meta,
        msgs,
        msg_ids,
        app_msgs,
        deliveries,
        endpoint_deliveries,
        due,
        apps,
        app_ids,
        endpoints,
        endpoint_ids,
        app_endpoints,
        event_types,
        tokens,
        idempotency,
        attempts,
        attempt_ids,
        msg_attempts,
        endpoint_attempts,
        tasks,
        task_ids,
        running_tasks,
        consumers,
        poller_tokens,
        sources,
        source_ids,
        source_tokens,
        source_errors,
        replies,
    ] = tables;
    Ok(Dbs {
        sealer: None,
        secrets_key_file: None,
        meta,
        msgs,
        msg_ids,
        app_msgs,
        deliveries,
        endpoint_deliveries,
        due,
        apps,
        app_ids,
        endpoints,
        endpoint_ids,
        app_endpoints,
        event_types,
        tokens,
        idempotency,
        attempts,
        attempt_ids,
        msg_attempts,
        endpoint_attempts,
        tasks,
        task_ids,
        running_tasks,
        consumers,
        poller_tokens,
        sources,
        source_ids,
        source_tokens,
        source_errors,
        replies,
        reply_index: Arc::default(),
    })
}

/// Refuses a log whose secrets are sealed when no key, or another key, is configured; with
/// a key and a log not sealed yet, seals every endpoint and records the key's check value.
fn check_secrets_key(env: &Env<WithoutTls>, dbs: &Dbs) -> Result<(), LogError> {
    let recorded = {
        let rtxn = env.read_txn()?;
        dbs.meta
            .get(&rtxn, schema::meta_key::SECRETS_KEY_CHECK)?
            .map(<[u8]>::to_vec)
    };
    match (&dbs.sealer, recorded) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(LogError::Secrets(
            "the log's endpoint secrets are sealed; set storage.secrets_key_file (or the \
             systemd credential secrets-key) to the key they were sealed with"
                .to_owned(),
        )),
        (Some(sealer), Some(check)) if check == sealer.check_value() => Ok(()),
        (Some(_), Some(_)) => Err(LogError::Secrets(
            "the configured key is not the one the log's secrets were sealed with".to_owned(),
        )),
        (Some(sealer), None) => {
            let mut wtxn = env.write_txn()?;
            let mut endpoints = Vec::new();
            for row in dbs.endpoints.iter(&wtxn)? {
                let (_, value) = row?;
                endpoints.push(schema::decode_json::<schema::EndpointRecord>(
                    schema::db_name::ENDPOINTS,
                    value,
                )?);
            }
            for endpoint in endpoints.iter().filter(|e| !e.sealed) {
                let sealed = sealer.seal_endpoint(endpoint);
                dbs.endpoints.put(
                    &mut wtxn,
                    &schema::u64_key(endpoint.key),
                    &schema::encode_json(&sealed),
                )?;
            }
            // The sources' secrets and URL tokens and the poller tokens too: nothing is
            // sealed yet, so each is opened as clear text and sealed with this key.
            reseal_source_secrets(&mut wtxn, dbs, sealer)?;
            dbs.meta.put(
                &mut wtxn,
                schema::meta_key::SECRETS_KEY_CHECK,
                &sealer.check_value(),
            )?;
            wtxn.commit()?;
            tracing::info!(
                endpoints = endpoints.len(),
                "Sealed the endpoint and source secrets with the configured key."
            );
            Ok(())
        }
    }
}

/// The table `name` if the environment has it, without creating it. Opened in a read
/// transaction of its own: heed makes a database handle lasting only at a commit.
fn existing_table(env: &Env<WithoutTls>, name: &str) -> Result<Option<Table>, LogError> {
    Ok(env
        .open_databases_and_commit(env.read_txn()?, |opener, rtxn| {
            let table = opener.open_database::<Bytes, Bytes>(rtxn, Some(name))?;
            Ok::<_, heed::Error>(heed::CommitOrAbort::<_, ()>::Commit(table))
        })?
        .unwrap_commit())
}

/// The stored schema version (`None`: a new log), read before anything is written:
/// another schema than this build's is refused, unless it is schema 1 and `upgrade` lets
/// this open migrate it.
fn vetted_schema_version(env: &Env<WithoutTls>, upgrade: Upgrade) -> Result<Option<u64>, LogError> {
    let Some(meta) = existing_table(env, schema::db_name::META)? else {
        return Ok(None);
    };
    let rtxn = env.read_txn()?;
    let found = meta
        .get(&rtxn, schema::meta_key::SCHEMA_VERSION)?
        .map(|v| schema::read_u64(schema::db_name::META, v, 0))
        .transpose()?;
    match found {
        None | Some(schema::SCHEMA_VERSION) => Ok(found),
        Some(1) if upgrade == Upgrade::Migrate => Ok(found),
        Some(1) => Err(LogError::MigrationRefused {
            found: 1,
            supported: schema::SCHEMA_VERSION,
        }),
        Some(found) => Err(LogError::SchemaMismatch {
            found,
            supported: schema::SCHEMA_VERSION,
        }),
    }
}

/// The directory, beside the data, that the copy of a log taken before its migration goes
/// to: `before-schema-<version>`, or with `.1`, `.2`, … after it if that is taken (an
/// earlier attempt, or an earlier migration of a log restored since).
fn migration_backup_dir(dir: &Path, version: u64) -> PathBuf {
    let base = format!("before-schema-{version}");
    let mut candidate = dir.join(&base);
    let mut n = 0u32;
    while candidate.exists() {
        n += 1;
        candidate = dir.join(format!("{base}.{n}"));
    }
    candidate
}

/// Schema 1 to 2 (the fan-out layout, `log::deliveries`): first a compacted copy of the
/// log as it is goes beside it (`before-schema-2/data.mdb`; it opens with the release
/// before, and with this one, which migrates it again), then one transaction moves the
/// deliveries and records the new version. A failure before the commit leaves the log as
/// it was, and Sluice refuses to start, saying why.
fn migrate_schema_1(dir: &Path, env: &Env<WithoutTls>, dbs: &Dbs) -> Result<(), LogError> {
    // Copying and migrating a large log can outlast the unit's start timeout: while it
    // runs, a thread keeps asking the service manager for more time (nothing outside
    // systemd), so that a migration is never killed and started over.
    // The first request goes before the migration begins, however short it turns out.
    let extend = || {
        crate::service::extend_start(
            MIGRATION_START_EXTENSION,
            "Migrating the log to a new schema",
        );
    };
    extend();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let extender = scope.spawn(|| {
            loop {
                std::thread::park_timeout(MIGRATION_START_EXTENSION / 3);
                if done.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                extend();
            }
        });
        let migrated = copy_and_migrate_schema_1(dir, env, dbs);
        done.store(true, std::sync::atomic::Ordering::Release);
        extender.thread().unpark();
        migrated
    })
}

/// How much more time each request to the service manager asks for during a migration
/// (it is asked again every third of it).
const MIGRATION_START_EXTENSION: std::time::Duration = std::time::Duration::from_secs(90);

fn copy_and_migrate_schema_1(dir: &Path, env: &Env<WithoutTls>, dbs: &Dbs) -> Result<(), LogError> {
    // The copy is made under a name of its own and renamed when it is whole, so that no
    // directory named `before-schema-*` ever holds half a log; a partial copy an earlier,
    // interrupted start left is removed first.
    let partial = dir.join(format!("before-schema-{}.partial", schema::SCHEMA_VERSION));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .map_err(|e| LogError::Io(format!("{}: {e}", partial.display())))?;
    }
    std::fs::create_dir_all(&partial)
        .map_err(|e| LogError::Io(format!("{}: {e}", partial.display())))?;
    let target = partial.join(DATA_FILE);
    let copied = env
        .copy_to_path(&target, heed::CompactionOption::Enabled)
        .map_err(LogError::from)
        .and_then(|file| {
            file.sync_all()
                .map_err(|e| LogError::Io(format!("{}: {e}", target.display())))
        });
    let backup = migration_backup_dir(dir, schema::SCHEMA_VERSION);
    if let Err(error) = copied.and_then(|()| {
        std::fs::rename(&partial, &backup)
            .map_err(|e| LogError::Io(format!("{}: {e}", backup.display())))
    }) {
        // A partial copy is no backup; the log itself is untouched.
        let _ = std::fs::remove_dir_all(&partial);
        return Err(LogError::Io(format!(
            "cannot copy the log to {} before migrating it to schema {}: {error}",
            backup.display(),
            schema::SCHEMA_VERSION
        )));
    }
    let schema_1 = existing_table(env, schema::db_name::SCHEMA_1_DELIVERIES)?;
    let mut wtxn = env.write_txn()?;
    let moved = match schema_1 {
        Some(table) => deliveries::migrate_from_schema_1(&mut wtxn, dbs, &table)?,
        None => 0,
    };
    put_schema_version(&mut wtxn, dbs)?;
    wtxn.commit()?;
    tracing::info!(
        deliveries = moved,
        backup = %backup.display(),
        "Migrated the log from schema 1 to {}; the log as it was is in the backup.",
        schema::SCHEMA_VERSION
    );
    Ok(())
}

/// Records this build's schema version.
fn put_schema_version(wtxn: &mut heed::RwTxn, dbs: &Dbs) -> Result<(), LogError> {
    dbs.meta.put(
        wtxn,
        schema::meta_key::SCHEMA_VERSION,
        &schema::u64_key(schema::SCHEMA_VERSION),
    )?;
    Ok(())
}

/// Records the schema version in a new environment, or migrates one of schema 1 (the
/// only older version `vetted_schema_version` lets through).
fn check_schema(
    dir: &Path,
    env: &Env<WithoutTls>,
    dbs: &Dbs,
    stored_version: Option<u64>,
) -> Result<(), LogError> {
    match stored_version {
        // `vetted_schema_version` lets an older log this far only to be migrated.
        Some(schema::SCHEMA_VERSION) => Ok(()),
        Some(_) => migrate_schema_1(dir, env, dbs),
        None => {
            let mut wtxn = env.write_txn()?;
            put_schema_version(&mut wtxn, dbs)?;
            wtxn.commit()?;
            Ok(())
        }
    }
}
