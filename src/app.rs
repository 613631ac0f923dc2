//! Wiring and lifecycle: the only module that knows every other one.
//!
//! `start` opens the log, makes sure some token can reach the API, binds the listener and
//! starts serving; `Running::stop` stops accepting, lets requests in progress finish,
//! then lets the writer commit and stop. Start-up after a crash is the same path.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use std::time::Duration;

use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::{ApiConfig, Config};
use crate::delivery::attempt::{AttemptCtx, DeliverySettings, EndpointCache};
use crate::delivery::client::{Egress, Resolve, SystemResolver, Transport};
use crate::delivery::engine::{self, Engine};
use crate::delivery::policy::DestinationPolicy;
use crate::delivery::schedule::RetrySchedule;
use crate::heartbeat::Heartbeat;
use crate::limits::ADMIN_TOKEN_LEN_MIN;
use crate::live::Live;
use crate::log::ops::{Envelope, Op, Outcome, Refusal};
use crate::log::schema::TokenScope;
use crate::log::{Log, LogError, WriterJoin, tables};
use crate::tasks::TaskRunner;

/// Why Sluice could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the log in {dir}: {source}")]
    Log { dir: String, source: LogError },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up TLS for the API: {0}")]
    Tls(String),
    #[error(
        "SLUICE_ADMIN_TOKEN is {len} characters long; it must have at least {ADMIN_TOKEN_LEN_MIN} \
         (make one with `openssl rand -base64 32`)"
    )]
    AdminTokenTooShort { len: usize },
    #[error("cannot set up deliveries: {0}")]
    Egress(String),
    #[error("cannot read metrics.token_file {file}: {detail}")]
    MetricsToken { file: String, detail: String },
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Whether the loops that must never stop (the writer thread, the shards) still turn.
#[derive(Clone)]
pub struct Liveness {
    heartbeats: Vec<Arc<Heartbeat>>,
}

impl Liveness {
    pub fn alive(&self) -> bool {
        self.heartbeats.iter().all(|h| h.is_fresh())
    }
}

/// The settings a reload can replace, and the config they came from.
struct LiveSettings {
    started_with: Config,
    api: Live<ApiConfig>,
    delivery: Live<DeliverySettings>,
    policy: Live<DestinationPolicy>,
    tls: Live<Option<tokio_rustls::TlsAcceptor>>,
}

/// A serving Sluice.
pub struct Running {
    /// Where the API listens (useful when the config asked for port 0).
    pub addr: SocketAddr,
    /// Where `/metrics` has a listener of its own (`[metrics] listen`), if it has one.
    pub metrics_addr: Option<SocketAddr>,
    /// A token created on this first start, and the file (mode 0600, in the data
    /// directory) that keeps it for the operator.
    pub first_admin_token: Option<(String, std::path::PathBuf)>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    metrics_server: Option<JoinHandle<()>>,
    engine: Engine,
    tasks: TaskRunner,
    upkeep: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    /// Cluster mode: the applier and the leases. `None`: embedded.
    cluster: Option<Cluster>,
    live: LiveSettings,
    log: Log,
    writer: WriterJoin,
}

/// Binds the API listener; returns it and the address it got (for port 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Opens everything and starts serving. `admin_token` is `SLUICE_ADMIN_TOKEN`.
pub async fn start(
    config: &Config,
    admin_token: Option<&str>,
    clock: Clock,
) -> Result<Running, StartError> {
    start_with_resolver(config, admin_token, clock, Arc::new(SystemResolver)).await
}

/// The listener of `metrics.listen`, if the config has one.
async fn bind_metrics(config: &Config) -> Result<Option<(TcpListener, SocketAddr)>, StartError> {
    match config.metrics.listen {
        Some(listen) => Ok(Some(bind(listen).await?)),
        None => Ok(None),
    }
}

/// `start`, resolving delivery hosts with `resolver` (tests play hostile DNS with it).
pub async fn start_with_resolver(
    config: &Config,
    admin_token: Option<&str>,
    clock: Clock,
    resolver: Arc<dyn Resolve>,
) -> Result<Running, StartError> {
    check_admin_token(admin_token)?;
    let dir = config.data_dir.display().to_string();
    let log_error = |source| StartError::Log {
        dir: dir.clone(),
        source,
    };
    let (publisher, intakes) = engine::channels(config.delivery.shards);
    restore_snapshot(config).await?;
    let (log, writer) = open_log(config, publisher).await.map_err(log_error)?;
    // Before anything submits: in cluster mode every op goes through the stream.
    let (cluster, shard_leases, singleton) = start_cluster(config, &log, &clock).await?;
    record_log_settings(config, &log, &clock)
        .await
        .map_err(log_error)?;
    let first_admin_token = first_admin_token(config, admin_token, &log, &clock)
        .await
        .map_err(log_error)?;
    let (listener, addr) = bind(config.api.listen).await?;
    let metrics_listener = bind_metrics(config).await?;
    let (ctx, policy) = attempt_ctx(config, &log, &clock, resolver)?;
    let delivery_settings = ctx.settings.clone();
    let engine = Engine::start(Arc::new(ctx), intakes, shard_leases);
    let metrics = crate::telemetry::install();
    let upkeep = tokio::spawn(crate::telemetry::upkeep(
        metrics.clone(),
        log.clone(),
        clock.clone(),
    ));
    let (sweeper, tasks, task_wake) = start_once_work(config, &log, &clock, singleton);
    let mut state = api_state(config, &log, clock, admin_token, task_wake, metrics)?;
    state.cluster = cluster.as_ref().map(Cluster::view);
    state.destinations = policy.clone();
    state.metrics_on_api = metrics_listener.is_none();
    state.metrics_token_hash = metrics_token(config)?;
    let (api_config, tls) = (state.config.clone(), state.tls.clone());
    let state = Arc::new(state);
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(api::serve(
        listener,
        Arc::clone(&state),
        api::Surface::Api,
        until_stopped(stopped.clone()),
    ));
    let (metrics_addr, metrics_server) = serve_metrics(metrics_listener, state, stopped);
    tracing::info!(%addr, ?metrics_addr, data_dir = %dir, "Sluice is serving.");
    Ok(Running {
        addr,
        metrics_addr,
        first_admin_token,
        stop,
        server,
        metrics_server,
        engine,
        tasks,
        upkeep,
        sweeper,
        cluster,
        log,
        writer,
        live: LiveSettings {
            started_with: config.clone(),
            api: api_config,
            delivery: delivery_settings,
            policy,
            tls,
        },
    })
}

/// What a cluster node runs besides the embedded mode's: the cluster, one lease signal
/// per shard, and the `singleton` lease's signal (all `None` without `[cluster]`).
type ClusterParts = (
    Option<Cluster>,
    Option<Vec<crate::cluster::Ownership>>,
    Option<crate::cluster::Ownership>,
);

/// Cluster mode: joins the cluster.
async fn start_cluster(
    config: &Config,
    log: &Log,
    clock: &Clock,
) -> Result<ClusterParts, StartError> {
    let Some(cluster) = &config.cluster else {
        return Ok((None, None, None));
    };
    if let Some(problem) = config.cluster_problem() {
        return Err(StartError::Cluster(problem.to_string()));
    }
    let cluster = Cluster::start(cluster, log, config.delivery.shards, clock.clone())
        .await
        .map_err(|e| StartError::Cluster(e.to_string()))?;
    let (shards, singleton) = (cluster.shards.clone(), cluster.singleton.clone());
    Ok((Some(cluster), Some(shards), Some(singleton)))
}

/// Cluster mode: a node whose data directory holds no log yet restores the newest
/// snapshot into it before opening it (it then replays the stream from there).
async fn restore_snapshot(config: &Config) -> Result<(), StartError> {
    let Some(cluster) = &config.cluster else {
        return Ok(());
    };
    if let Some(problem) = config.cluster_problem() {
        return Err(StartError::Cluster(problem.to_string()));
    }
    crate::cluster::snapshot::restore_if_empty(cluster, &config.data_dir)
        .await
        .map(|_| ())
        .map_err(|e| StartError::Cluster(e.to_string()))
}

/// The sweeper and the background-task runner (in cluster mode, gated on `singleton`).
fn start_once_work(
    config: &Config,
    log: &Log,
    clock: &Clock,
    singleton: Option<crate::cluster::Ownership>,
) -> (JoinHandle<()>, TaskRunner, Arc<Notify>) {
    let sweeper = crate::sweeper::start(
        log.clone(),
        clock.clone(),
        config.storage.retention_days,
        singleton.clone(),
    );
    let task_wake = Arc::new(Notify::new());
    let tasks = TaskRunner::start(
        log.clone(),
        clock.clone(),
        Arc::clone(&task_wake),
        singleton,
    );
    (sweeper, tasks, task_wake)
}

/// Refuses an admin token shorter than `ADMIN_TOKEN_LEN_MIN` (guessable).
fn check_admin_token(admin_token: Option<&str>) -> Result<(), StartError> {
    match admin_token.map(|t| t.chars().count()) {
        Some(len) if len < ADMIN_TOKEN_LEN_MIN => Err(StartError::AdminTokenTooShort { len }),
        _ => Ok(()),
    }
}

/// What the API's handlers share.
fn api_state(
    config: &Config,
    log: &Log,
    clock: Clock,
    admin_token: Option<&str>,
    task_wake: Arc<Notify>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<ApiState, StartError> {
    let mut state = ApiState::new(
        log.clone(),
        clock,
        Live::new(config.api.clone()),
        admin_token.map(api::hash_token),
        task_wake,
        metrics,
    );
    state.ingest_guard_percent = config.storage.ingest_guard_percent;
    state.disk_reserve_bytes = config.storage.disk_reserve_bytes;
    state.portal = config.portal.clone();
    state
        .tls
        .set(tls_acceptor(config).map_err(StartError::Tls)?);
    Ok(state)
}

/// Opens the log on a blocking thread: opening may seal a clear log or rebuild the
/// endpoint index from a large one, which is no work for a runtime worker.
async fn open_log(
    config: &Config,
    publisher: crate::log::Publisher,
) -> Result<(Log, WriterJoin), LogError> {
    let (data_dir, storage) = (config.data_dir.clone(), config.storage.clone());
    tokio::task::spawn_blocking(move || {
        Log::open(
            &data_dir,
            &storage,
            Some(api::render_reply),
            Some(publisher),
            crate::log::Upgrade::Migrate,
        )
    })
    .await
    .map_err(|e| LogError::Io(format!("the log's opening failed: {e}")))?
}

/// Starts `/metrics`' own listener, if there is one: its address and its server task.
fn serve_metrics(
    listener: Option<(TcpListener, SocketAddr)>,
    state: Arc<ApiState>,
    stopped: watch::Receiver<bool>,
) -> (Option<SocketAddr>, Option<JoinHandle<()>>) {
    let Some((listener, addr)) = listener else {
        return (None, None);
    };
    let serving = api::serve(
        listener,
        state,
        api::Surface::Metrics,
        until_stopped(stopped),
    );
    (Some(addr), Some(tokio::spawn(serving)))
}

/// Resolves once `stop` turns true (or its sender is gone): a server's shutdown signal.
async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Without an admin token given, and with no token at all, creates an org token and keeps
/// it in a 0600 file for the operator; returns it and the file.
async fn first_admin_token(
    config: &Config,
    admin_token: Option<&str>,
    log: &Log,
    clock: &Clock,
) -> Result<Option<(String, std::path::PathBuf)>, LogError> {
    if admin_token.is_some() {
        return Ok(None);
    }
    let Some(token) = ensure_some_token(log, clock).await? else {
        return Ok(None);
    };
    let file = write_token_file(&config.data_dir, &token)
        .map_err(|e| LogError::Io(format!("cannot keep the first admin token: {e}")))?;
    Ok(Some((token, file)))
}

/// Records the settings apply decides by (`api.endpoints_per_app_max`) in the log when it
/// holds other values: bounds are decided at apply time, from the log, so that every node
/// agrees on them.
async fn record_log_settings(config: &Config, log: &Log, clock: &Clock) -> Result<(), LogError> {
    let max = config.api.endpoints_per_app_max;
    if log.read(|txn, dbs| tables::endpoints_per_app_max(txn, dbs))? != max {
        log.submit(Envelope::new(
            Op::SetEndpointsPerAppMax { max },
            clock.now_ms(),
        ))
        .await?;
    }
    Ok(())
}

/// SHA-256 of the token in `metrics.token_file`, if one is configured.
fn metrics_token(config: &Config) -> Result<Option<[u8; 32]>, StartError> {
    let Some(path) = &config.metrics.token_file else {
        return Ok(None);
    };
    let refuse = |detail: String| StartError::MetricsToken {
        file: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(refuse("the file is empty".to_owned()));
    }
    Ok(Some(api::hash_token(token)))
}

/// The API's TLS acceptor, if the config names a certificate and key.
fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    match (&config.api.tls_cert_file, &config.api.tls_key_file) {
        (Some(cert), Some(key)) => api::tls::acceptor(cert, key).map(Some),
        _ => Ok(None),
    }
}

fn attempt_ctx(
    config: &Config,
    log: &Log,
    clock: &Clock,
    resolver: Arc<dyn Resolve>,
) -> Result<(AttemptCtx, Live<DestinationPolicy>), StartError> {
    let policy = Live::new(destination_policy(config));
    let egress = Egress {
        proxy: config.delivery.proxy.clone(),
        ca_file: config.delivery.ca_file.clone(),
    };
    let transport = Transport::new(
        policy.clone(),
        resolver,
        Duration::from_millis(config.delivery.connect_timeout_ms),
        clock.clone(),
        &egress,
    )
    .map_err(|e| StartError::Egress(e.to_string()))?;
    let ctx = AttemptCtx {
        log: log.clone(),
        transport,
        clock: clock.clone(),
        settings: Live::new(delivery_settings(config)),
        endpoints: EndpointCache::default(),
    };
    Ok((ctx, policy))
}

fn destination_policy(config: &Config) -> DestinationPolicy {
    DestinationPolicy {
        allow_http: config.delivery.allow_http,
        allowed_networks: config.delivery.allowed_networks.clone(),
    }
}

fn delivery_settings(config: &Config) -> DeliverySettings {
    let d = &config.delivery;
    DeliverySettings {
        schedule: RetrySchedule {
            delays_ms: d.retry_schedule_ms.clone(),
            jitter_percent: d.jitter_percent,
            retry_after_max_ms: d.retry_after_max_ms,
        },
        attempt_timeout: Duration::from_millis(d.attempt_timeout_ms),
        disable_after_ms: d.disable_after_ms,
        header_style: d.header_style,
        in_flight_max: d.endpoint_in_flight_max,
    }
}

/// The file the first admin token is written to, in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Writes the first admin token to `ADMIN_TOKEN_FILE` with mode 0600 (never over an
/// existing file): under systemd stdout is the journal, which is no place for a secret.
fn write_token_file(
    data_dir: &std::path::Path,
    token: &str,
) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(path)
}

/// With no token at all, creates an org token so the API is reachable, and returns it.
async fn ensure_some_token(log: &Log, clock: &Clock) -> Result<Option<String>, LogError> {
    if log.read(|rtxn, dbs| tables::has_tokens(rtxn, dbs))? {
        return Ok(None);
    }
    let token = create_token(log, clock, TokenScope::Org).await?;
    Ok(Some(token))
}

/// Creates and stores (hashed) a new token of `scope`, unnamed and without expiry;
/// returns the token text.
pub async fn create_token(log: &Log, clock: &Clock, scope: TokenScope) -> Result<String, LogError> {
    match create_token_with(log, clock, scope, String::new(), None).await? {
        Ok(token) => Ok(token),
        Err(refusal) => Err(LogError::Io(format!("cannot create a token: {refusal:?}"))),
    }
}

/// Creates and stores (hashed) a new token; returns the token text, or why the log
/// refused it (`TokensLimit`).
pub async fn create_token_with(
    log: &Log,
    clock: &Clock,
    scope: TokenScope,
    name: String,
    expires_ms: Option<u64>,
) -> Result<Result<String, Refusal>, LogError> {
    let token = api::new_token();
    let op = Op::CreateToken {
        hash: api::hash_token(&token),
        scope,
        name,
        expires_ms,
    };
    match log.submit(Envelope::new(op, clock.now_ms())).await? {
        Outcome::Refused(refusal) => Ok(Err(refusal)),
        _ => Ok(Ok(token)),
    }
}

impl Running {
    /// A handle to the log, for tests and tools that run beside the server.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Applies what `config` changes that can change while running (API limits and
    /// timeouts, the TLS certificate, retry schedule, attempt bounds, destination policy,
    /// header style), and returns the keys whose change needs a restart (left as they
    /// are). Nothing changes if the TLS files do not load. The log level is the caller's
    /// (it owns tracing).
    pub fn reload(&self, config: &Config) -> Result<Vec<&'static str>, String> {
        let old = &self.live.started_with;
        let tls = tls_acceptor(config)?;
        let mut api = config.api.clone();
        let restart = crate::config::restart_needed(old, config);
        // What only a restart applies keeps its running value.
        api.listen = old.api.listen;
        api.connections_max = old.api.connections_max;
        self.live.api.set(api);
        self.live.delivery.set(delivery_settings(config));
        self.live.policy.set(destination_policy(config));
        self.live.tls.set(tls);
        Ok(restart)
    }

    /// The heartbeats of the writer thread and every delivery shard, for the watchdog.
    pub fn liveness(&self) -> Liveness {
        let mut heartbeats = self.engine.heartbeats();
        heartbeats.push(self.log.writer_heartbeat());
        Liveness { heartbeats }
    }

    /// Stops accepting, finishes requests in progress, commits and joins the writer.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        if let Some(metrics_server) = self.metrics_server {
            let _ = metrics_server.await;
        }
        self.tasks.stop().await;
        self.engine.stop().await;
        self.upkeep.abort();
        let _ = self.upkeep.await;
        self.sweeper.abort();
        let _ = self.sweeper.await;
        // After the engine and the tasks, whose last records go through the stream.
        if let Some(cluster) = self.cluster {
            cluster.stop().await;
        }
        drop(self.log);
        // The writer finishes its current batch once every handle is gone; joining a
        // thread blocks, so do it off the runtime's worker threads.
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.wait()).await;
    }
}
