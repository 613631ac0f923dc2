//! The HTTP API: the Svix-v1-compatible REST surface under `/api/v1`.
//!
//! This file is the plumbing every request passes through, in order: connection cap and
//! header timeout (hyper), path and method routing (404/405 before anything else), bearer
//! authentication, a bounded body read (size and time), POST idempotency, then the
//! resource handler. Handlers return `Reply` or `ApiError`; `ApiError::body` is the only
//! place an error becomes HTTP, so every error is JSON.

mod apps;
mod attempts;
mod auth;
mod deliveries;
mod endpoints;
mod error;
mod event_types;
mod fields;
mod idempotency;
mod ingest_in;
pub mod message_in;
mod messages;
mod openapi;
mod operational;
mod poller;
pub(crate) mod portal_access;
mod query;
mod rate;
mod sources;
mod tasks;
pub mod tls;
mod tokens;
mod unsupported;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use crate::clock::Clock;
use crate::config::ApiConfig;
use crate::limits::{DISK_SAMPLE_INTERVAL, METRICS_CONNECTIONS_MAX, URI_LEN_MAX};
use crate::live::Live;
use crate::log::Log;
use crate::log::ops::{MessageView, Outcome};
use crate::log::schema::TaskKind;
pub use auth::{Auth, capability, hash_token, new_token, portal_session};
pub use error::{ApiError, FieldError};
use query::Query;

/// What every handler can reach.
pub struct ApiState {
    pub log: Log,
    pub clock: Clock,
    /// Replaceable by SIGHUP (`listen` and `connections_max` need a restart).
    pub config: Live<ApiConfig>,
    /// SHA-256 of `SLUICE_ADMIN_TOKEN`, accepted as an org-wide token when set.
    pub admin_token_hash: Option<[u8; 32]>,
    /// Wakes the background-task runner after a task is created.
    pub task_wake: Arc<Notify>,
    /// Renders `GET /metrics`.
    pub metrics: PrometheusHandle,
    /// Per-token request buckets.
    rate_limiter: rate::RateLimiter,
    /// Failed authentications per client address.
    auth_throttle: rate::AuthThrottle,
    /// When each token's last use was last queued for recording (coalescing).
    tokens_touched: Mutex<HashMap<[u8; 32], u64>>,
    /// The listener's TLS acceptor, if `api.tls_*` are set; replaced on SIGHUP.
    pub tls: Live<Option<tokio_rustls::TlsAcceptor>>,
    /// `storage.ingest_guard_percent`: new messages are refused above this share of the map.
    pub ingest_guard_percent: u8,
    /// `storage.disk_reserve_bytes`: new messages are refused with less room than this on
    /// the data directory's filesystem.
    pub disk_reserve_bytes: u64,
    /// The last sample of that room, and when it was taken (`DISK_SAMPLE_INTERVAL`).
    disk: Mutex<Option<(std::time::Instant, DiskRoom)>>,
    /// Whether the API listener serves `/metrics` (no `[metrics] listen` of its own).
    pub metrics_on_api: bool,
    /// SHA-256 of the bearer token `/metrics` requires (`metrics.token_file`), if any.
    pub metrics_token_hash: Option<[u8; 32]>,
    /// Cluster mode: this node's replication status, for `/api/v1/health`.
    pub cluster: Option<crate::cluster::StatusReader>,
    /// The delivery engine's destination policy (replaced on SIGHUP with it): an endpoint
    /// URL it refuses outright (scheme, IP literal) is a 422 at create and update.
    pub destinations: Live<crate::delivery::policy::DestinationPolicy>,
    /// Idempotent POSTs being served now, by key hash; later duplicates wait on the
    /// receiver. A std mutex: the critical sections are a map lookup and never `.await`.
    in_flight: Mutex<HashMap<[u8; 32], watch::Receiver<()>>>,
    /// `[portal]`: the tenant portal's settings.
    pub portal: crate::config::PortalConfig,
}

impl ApiState {
    pub fn new(
        log: Log,
        clock: Clock,
        config: Live<ApiConfig>,
        admin_token_hash: Option<[u8; 32]>,
        task_wake: Arc<Notify>,
        metrics: PrometheusHandle,
    ) -> ApiState {
        ApiState {
            log,
            clock,
            config,
            admin_token_hash,
            task_wake,
            metrics,
            rate_limiter: rate::RateLimiter::default(),
            auth_throttle: rate::AuthThrottle::default(),
            tokens_touched: Mutex::new(HashMap::new()),
            tls: Live::new(None),
            ingest_guard_percent: 90,
            disk_reserve_bytes: 0,
            disk: Mutex::new(None),
            metrics_on_api: true,
            metrics_token_hash: None,
            cluster: None,
            destinations: Live::new(crate::delivery::policy::DestinationPolicy::default()),
            in_flight: Mutex::new(HashMap::new()),
            portal: crate::config::PortalConfig::default(),
        }
    }
}

/// Room for the log to grow on its filesystem.
#[derive(Clone, Copy, Debug)]
pub struct DiskRoom {
    /// Free on the filesystem (`None`: statvfs failed; the guard then trusts the map).
    pub filesystem_free_bytes: Option<u64>,
    /// Freed pages inside the data file that LMDB reuses before growing it.
    pub reusable_bytes: u64,
}

impl DiskRoom {
    /// Everything the log can still write into.
    pub fn room_bytes(&self) -> Option<u64> {
        self.filesystem_free_bytes
            .map(|free| free.saturating_add(self.reusable_bytes))
    }
}

impl ApiState {
    /// Refuses new messages (507) once the log has used `ingest_guard_percent` of its map,
    /// or its filesystem has less room than `disk_reserve_bytes`: the rest is kept for
    /// recording the deliveries of what was already accepted.
    pub fn ensure_room_for_messages(&self) -> Result<(), ApiError> {
        if self.map_nearly_full() || self.disk_low().is_some() {
            return Err(ApiError::StorageFull);
        }
        Ok(())
    }

    fn map_nearly_full(&self) -> bool {
        let (map_size, used, _) = self.log.usage();
        u128::from(used) * 100 >= u128::from(map_size) * u128::from(self.ingest_guard_percent)
    }

    /// The room sample when it is below the reserve.
    fn disk_low(&self) -> Option<DiskRoom> {
        let room = self.disk_room();
        room.room_bytes()
            .is_some_and(|bytes| bytes < self.disk_reserve_bytes)
            .then_some(room)
    }

    /// The room on the data directory's filesystem, sampled at most once per
    /// `DISK_SAMPLE_INTERVAL` (a statvfs and the tables' page counts) while there is
    /// plenty, on every call once within twice the reserve; published as gauges.
    pub fn disk_room(&self) -> DiskRoom {
        let mut cached = self.disk.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, room)) = *cached
            && at.elapsed() < DISK_SAMPLE_INTERVAL
            && room
                .room_bytes()
                .is_none_or(|bytes| bytes / 2 >= self.disk_reserve_bytes)
        {
            return room;
        }
        let room = sample_disk(&self.log);
        *cached = Some((std::time::Instant::now(), room));
        room
    }
}

/// Takes a sample of the log's room and sets the disk gauges.
pub fn sample_disk(log: &Log) -> DiskRoom {
    let room = DiskRoom {
        filesystem_free_bytes: log.filesystem_free_bytes(),
        reusable_bytes: log.reusable_bytes().unwrap_or(0),
    };
    if let Some(free) = room.filesystem_free_bytes {
        metrics::gauge!(crate::telemetry::name::DISK_FREE).set(free as f64);
    }
    metrics::gauge!(crate::telemetry::name::LMDB_REUSABLE).set(room.reusable_bytes as f64);
    room
}

/// A successful response: a status and a JSON body (empty for 204).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Reply, ApiError> {
        let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Reply { status, body })
    }

    pub fn no_content() -> Reply {
        Reply {
            status: StatusCode::NO_CONTENT,
            body: Vec::new(),
        }
    }
}

/// One request after routing, authentication and the body read.
pub struct Ctx {
    pub auth: Auth,
    pub query: Query,
    pub body: Bytes,
    /// Hash of (token, idempotency key, URI) for a POST that carried a key.
    pub idempotency: Option<[u8; 32]>,
    /// The `Host` the request came to (ingest URLs are built on it).
    pub host: Option<String>,
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// The REST API (and `/metrics` unless it has a listener of its own).
    Api,
    /// `/metrics` only (`[metrics] listen`), plain HTTP.
    Metrics,
}

/// Accepts connections until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    surface: Surface,
    shutdown: impl Future<Output = ()>,
) {
    let connections_max = match surface {
        Surface::Api => state.config.get().connections_max,
        Surface::Metrics => METRICS_CONNECTIONS_MAX,
    };
    let permits = Arc::new(Semaphore::new(connections_max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Take a permit before accepting: over the cap, connections wait in the backlog.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small JSON replies must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let header_timeout = Duration::from_millis(state.config.get().header_read_timeout_ms);
        let tls = match surface {
            Surface::Api => state.tls.get(),
            Surface::Metrics => Arc::new(None),
        };
        let watcher = graceful.watcher();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            match tls.as_ref() {
                None => {
                    serve_connection(stream, peer, state, surface, header_timeout, watcher).await
                }
                Some(acceptor) => {
                    // The handshake is bounded like the headers: a silent client cannot
                    // hold a connection slot.
                    let handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream));
                    if let Ok(Ok(stream)) = handshake.await {
                        serve_connection(stream, peer, state, surface, header_timeout, watcher)
                            .await;
                    }
                }
            }
            drop(permit);
        });
    }
    graceful.shutdown().await;
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it closes or the server drains.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    state: Arc<ApiState>,
    surface: Surface,
    header_timeout: Duration,
    watcher: Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move {
            Ok::<_, Infallible>(match surface {
                Surface::Api => handle(&state, req, peer.ip()).await,
                Surface::Metrics => handle_metrics(&state, &req),
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let _ = watcher.watch(conn).await;
}

/// Serves one request; never fails (errors become JSON responses).
/// `peer` is the client's address (failed authentications are throttled per address).
pub async fn handle(
    state: &ApiState,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    if state.metrics_on_api && req.uri().path() == METRICS_PATH {
        return handle_metrics(state, &req);
    }
    if req.uri().path().starts_with(ingest_in::RECEIVE_PREFIX) {
        return ingest_in::handle(state, req).await;
    }
    if crate::portal::serves(req.uri().path()) {
        return crate::portal::handle(state, req, peer).await;
    }
    let result = route_and_serve(state, req, peer).await;
    render(&method, result)
}

/// Serves `/metrics` (GET or HEAD), with the bearer token when one is configured.
fn handle_metrics<B>(state: &ApiState, req: &Request<B>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let result = if req.uri().path() != METRICS_PATH {
        Err(ApiError::NotFound("Route not found."))
    } else if !matches!(method, Method::GET | Method::HEAD) {
        Err(ApiError::MethodNotAllowed(&[Method::GET, Method::HEAD]))
    } else if !metrics_token_ok(state, req.headers()) {
        Err(ApiError::Unauthorized)
    } else {
        return metrics_response(state, &method);
    };
    render(&method, result)
}

/// Whether the request carries the metrics token (always, when none is configured).
fn metrics_token_ok(state: &ApiState, headers: &hyper::HeaderMap) -> bool {
    let Some(wanted) = state.metrics_token_hash else {
        return true;
    };
    let given = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .map(|token| hash_token(token.trim()));
    // Hashes are compared, not tokens: how long a comparison takes can at most tell a
    // prober about the SHA-256 of its own guess, which says nothing about the token.
    given == Some(wanted)
}

/// The HTTP response of a reply or an error.
fn render(method: &Method, result: Result<Reply, ApiError>) -> Response<Full<Bytes>> {
    let (status, body, retry_after, allow) = match result {
        Ok(reply) => (reply.status, reply.body, None, None),
        Err(error) => {
            if let ApiError::Internal(detail) = &error {
                tracing::error!(%detail, "Request failed.");
            }
            let (retry_after, allow) = (error.retry_after_secs(), error.allow());
            (error.status(), error.body(), retry_after, allow)
        }
    };
    let has_body = !body.is_empty();
    let mut response = Response::new(Full::new(if *method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(body)
    }));
    *response.status_mut() = status;
    if has_body {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
        response.headers_mut().insert(hyper::header::ALLOW, allow);
    }
    response
}

/// Where Prometheus scrapes (outside `/api/v1`, no token, like `/api/v1/health`).
const METRICS_PATH: &str = "/metrics";

fn metrics_response(state: &ApiState, method: &Method) -> Response<Full<Bytes>> {
    let text = crate::telemetry::render(&state.metrics, &state.log, state.clock.now_ms());
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(text)
    };
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The routes, with path parameters still as given (id or uid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Health,
    HealthPing,
    OpenApi,
    Apps,
    App(&'a str),
    Endpoints(&'a str),
    Endpoint(&'a str, &'a str),
    EndpointSecret(&'a str, &'a str),
    EndpointSecretRotate(&'a str, &'a str),
    EndpointHeaders(&'a str, &'a str),
    EventTypes,
    EventType(&'a str),
    Messages(&'a str),
    Message(&'a str, &'a str),
    MessageContent(&'a str, &'a str),
    AttemptContent(&'a str, &'a str, &'a str),
    AttemptsByMessage(&'a str, &'a str),
    AttemptsByEndpoint(&'a str, &'a str),
    Attempt(&'a str, &'a str, &'a str),
    Destinations(&'a str, &'a str),
    Resend(&'a str, &'a str, &'a str),
    EndpointMessages(&'a str, &'a str),
    EndpointStats(&'a str, &'a str),
    SendExample(&'a str, &'a str),
    Recover(&'a str, &'a str),
    ReplayMissing(&'a str, &'a str),
    BulkReplay(&'a str, &'a str),
    OperationalEndpoints,
    OperationalEndpoint(&'a str),
    OperationalSecret(&'a str),
    OperationalSecretRotate(&'a str),
    OperationalHeaders(&'a str),
    BackgroundTasks,
    BackgroundTask(&'a str),
    Poller(&'a str, &'a str),
    PollerConsumer(&'a str, &'a str, &'a str),
    PollerSeek(&'a str, &'a str, &'a str),
    PollerToken(&'a str, &'a str),
    PollerTokenRotate(&'a str, &'a str),
    Sources,
    Source(&'a str),
    SourceTokenRotate(&'a str),
    SourceLog(&'a str),
    SourceEndpoints(&'a str),
    SourceEndpoint(&'a str, &'a str),
    SourceEndpointSecret(&'a str, &'a str),
    SourceEndpointSecretRotate(&'a str, &'a str),
    SourceEndpointHeaders(&'a str, &'a str),
    Tokens,
    Token(&'a str),
    PortalAccess(&'a str),
    PortalExpireAll(&'a str),
    Logout,
}

impl<'a> Route<'a> {
    fn parse(segments: &'a [String]) -> Option<Route<'a>> {
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match s.as_slice() {
            ["health"] => Route::Health,
            ["health", "ping"] => Route::HealthPing,
            ["openapi.json"] => Route::OpenApi,
            ["app"] => Route::Apps,
            ["app", a] => Route::App(a),
            ["app", a, "endpoint"] => Route::Endpoints(a),
            ["app", a, "endpoint", e] => Route::Endpoint(a, e),
            ["app", a, "endpoint", e, "secret"] => Route::EndpointSecret(a, e),
            ["app", a, "endpoint", e, "secret", "rotate"] => Route::EndpointSecretRotate(a, e),
            ["app", a, "endpoint", e, "headers"] => Route::EndpointHeaders(a, e),
            ["event-type"] => Route::EventTypes,
            ["event-type", name] => Route::EventType(name),
            ["app", a, "msg"] => Route::Messages(a),
            ["app", a, "msg", m] => Route::Message(a, m),
            ["app", a, "msg", m, "content"] => Route::MessageContent(a, m),
            ["app", a, "attempt", "msg", m] => Route::AttemptsByMessage(a, m),
            ["app", a, "attempt", "endpoint", e] => Route::AttemptsByEndpoint(a, e),
            ["app", a, "msg", m, "attempt", t] => Route::Attempt(a, m, t),
            ["app", a, "msg", m, "attempt", t, "content"] => Route::AttemptContent(a, m, t),
            ["app", a, "msg", m, "endpoint"] => Route::Destinations(a, m),
            ["app", a, "msg", m, "endpoint", e, "resend"] => Route::Resend(a, m, e),
            ["app", a, "endpoint", e, "msg"] => Route::EndpointMessages(a, e),
            ["app", a, "endpoint", e, "stats"] => Route::EndpointStats(a, e),
            ["app", a, "endpoint", e, "send-example"] => Route::SendExample(a, e),
            ["app", a, "endpoint", e, "recover"] => Route::Recover(a, e),
            ["app", a, "endpoint", e, "replay-missing"] => Route::ReplayMissing(a, e),
            ["app", a, "endpoint", e, "bulk-replay"] => Route::BulkReplay(a, e),
            ["operational-webhook", "endpoint"] => Route::OperationalEndpoints,
            ["operational-webhook", "endpoint", e] => Route::OperationalEndpoint(e),
            ["operational-webhook", "endpoint", e, "secret"] => Route::OperationalSecret(e),
            ["operational-webhook", "endpoint", e, "secret", "rotate"] => {
                Route::OperationalSecretRotate(e)
            }
            ["operational-webhook", "endpoint", e, "headers"] => Route::OperationalHeaders(e),
            ["background-task"] => Route::BackgroundTasks,
            ["background-task", t] => Route::BackgroundTask(t),
            ["app", a, "poller", e] => Route::Poller(a, e),
            ["app", a, "poller", e, "consumer", c] => Route::PollerConsumer(a, e, c),
            ["app", a, "poller", e, "consumer", c, "seek"] => Route::PollerSeek(a, e, c),
            ["auth", "app", a, "poller", e, "token"] => Route::PollerToken(a, e),
            ["auth", "app", a, "poller", e, "token", "rotate"] => Route::PollerTokenRotate(a, e),
            ["auth", "app-portal-access", a] => Route::PortalAccess(a),
            ["auth", "app", a, "expire-all"] => Route::PortalExpireAll(a),
            ["auth", "logout"] => Route::Logout,
            ["auth", "token"] => Route::Tokens,
            ["auth", "token", t] => Route::Token(t),
            _ => return None,
        })
    }

    /// The routes under `/ingest/api/v1` (Svix Ingest's prefix).
    fn parse_ingest(segments: &'a [String]) -> Option<Route<'a>> {
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match s.as_slice() {
            ["source"] => Route::Sources,
            ["source", x] => Route::Source(x),
            ["source", x, "token", "rotate"] => Route::SourceTokenRotate(x),
            ["source", x, "log"] => Route::SourceLog(x),
            ["source", x, "endpoint"] => Route::SourceEndpoints(x),
            ["source", x, "endpoint", e] => Route::SourceEndpoint(x, e),
            ["source", x, "endpoint", e, "secret"] => Route::SourceEndpointSecret(x, e),
            ["source", x, "endpoint", e, "secret", "rotate"] => {
                Route::SourceEndpointSecretRotate(x, e)
            }
            ["source", x, "endpoint", e, "headers"] => Route::SourceEndpointHeaders(x, e),
            _ => return None,
        })
    }

    fn methods(self) -> &'static [Method] {
        use Method as M;
        match self {
            Route::Health | Route::HealthPing => &[M::GET, M::HEAD],
            Route::OpenApi => &[M::GET],
            Route::Apps
            | Route::Endpoints(..)
            | Route::EventTypes
            | Route::Messages(..)
            | Route::Tokens => &[M::GET, M::POST],
            Route::Token(..) => &[M::DELETE],
            Route::App(..) | Route::Endpoint(..) | Route::EventType(..) => {
                &[M::GET, M::PUT, M::PATCH, M::DELETE]
            }
            Route::EndpointSecret(..)
            | Route::Message(..)
            | Route::AttemptsByMessage(..)
            | Route::AttemptsByEndpoint(..)
            | Route::Attempt(..)
            | Route::Destinations(..)
            | Route::EndpointMessages(..)
            | Route::EndpointStats(..)
            | Route::BackgroundTasks
            | Route::BackgroundTask(..)
            | Route::Poller(..)
            | Route::PollerConsumer(..)
            | Route::PollerToken(..) => &[M::GET],
            Route::PollerSeek(..)
            | Route::PollerTokenRotate(..)
            | Route::PortalAccess(..)
            | Route::PortalExpireAll(..)
            | Route::Logout => &[M::POST],
            Route::Sources | Route::SourceEndpoints(..) | Route::OperationalEndpoints => {
                &[M::GET, M::POST]
            }
            Route::OperationalEndpoint(..) => &[M::GET, M::PUT, M::DELETE],
            Route::OperationalSecret(..) => &[M::GET],
            Route::OperationalSecretRotate(..) => &[M::POST],
            Route::OperationalHeaders(..) => &[M::GET, M::PUT],
            Route::Source(..) | Route::SourceEndpoint(..) => &[M::GET, M::PUT, M::DELETE],
            Route::SourceLog(..) | Route::SourceEndpointSecret(..) => &[M::GET],
            Route::SourceTokenRotate(..) | Route::SourceEndpointSecretRotate(..) => &[M::POST],
            Route::SourceEndpointHeaders(..) => &[M::GET, M::PUT, M::PATCH],
            Route::EndpointSecretRotate(..)
            | Route::Resend(..)
            | Route::SendExample(..)
            | Route::Recover(..)
            | Route::ReplayMissing(..)
            | Route::BulkReplay(..) => &[M::POST],
            Route::EndpointHeaders(..) => &[M::GET, M::PUT, M::PATCH],
            Route::MessageContent(..) | Route::AttemptContent(..) => &[M::DELETE],
        }
    }
}

/// Splits `/api/v1/...` into decoded segments; trailing and doubled slashes are ignored.
fn path_segments(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("/api/v1")?;
    split_segments(rest)
}

fn split_segments(rest: &str) -> Option<Vec<String>> {
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    rest.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        })
        .collect()
}

async fn route_and_serve(
    state: &ApiState,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Result<Reply, ApiError> {
    let uri = req.uri().clone();
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    if path_and_query.len() > URI_LEN_MAX {
        return Err(ApiError::UriTooLong {
            limit_bytes: URI_LEN_MAX,
        });
    }
    let ingest = uri.path().strip_prefix("/ingest/api/v1");
    let segments = match ingest {
        Some(rest) => split_segments(rest),
        None => path_segments(uri.path()),
    }
    .ok_or(ApiError::NotFound("Route not found."))?;
    if let Some(feature) = unsupported::feature(ingest.is_some(), req.method().as_str(), &segments)
    {
        return Err(ApiError::NotSupported(feature));
    }
    let route = match ingest {
        Some(_) => Route::parse_ingest(&segments),
        None => Route::parse(&segments),
    }
    .ok_or(ApiError::NotFound("Route not found."))?;
    let method = req.method().clone();
    if !route.methods().contains(&method) {
        return Err(ApiError::MethodNotAllowed(route.methods()));
    }
    if matches!(route, Route::Messages(_)) && method == Method::POST {
        let started = std::time::Instant::now();
        let result = serve_route(state, req, route, path_and_query, peer).await;
        let rejected = result.as_ref().err().map(ApiError::reason);
        crate::telemetry::ingest_finished(started.elapsed(), rejected);
        return result;
    }
    serve_route(state, req, route, path_and_query, peer).await
}

/// Authenticates, reads the body, applies idempotency and runs the route's handler.
/// The request's token, checked, unless its address failed too often; both kinds of
/// failure are counted.
fn authenticated(
    state: &ApiState,
    headers: &hyper::HeaderMap,
    peer: IpAddr,
) -> Result<auth::Auth, ApiError> {
    let now_ms = state.clock.now_ms();
    if let Err(error) = state.auth_throttle.check(peer, now_ms) {
        metrics::counter!(crate::telemetry::name::AUTH_FAILURES, "outcome" => "throttled")
            .increment(1);
        return Err(error);
    }
    match auth::authenticate(state, headers, now_ms) {
        Err(ApiError::Unauthorized) => {
            state.auth_throttle.failed(peer, now_ms);
            metrics::counter!(crate::telemetry::name::AUTH_FAILURES, "outcome" => "refused")
                .increment(1);
            Err(ApiError::Unauthorized)
        }
        other => other,
    }
}

async fn serve_route(
    state: &ApiState,
    req: Request<Incoming>,
    route: Route<'_>,
    path_and_query: &str,
    peer: IpAddr,
) -> Result<Reply, ApiError> {
    let method = req.method().clone();
    if let Route::Health | Route::HealthPing = route {
        return health(state, route);
    }
    if route == Route::OpenApi {
        return Reply::json(StatusCode::OK, &openapi::document());
    }
    let auth = authenticated(state, req.headers(), peer)?;
    // A poller token polls its endpoint and does nothing else.
    if matches!(auth.scope, crate::log::schema::TokenScope::Poller { .. })
        && !matches!(
            route,
            Route::Poller(..) | Route::PollerConsumer(..) | Route::PollerSeek(..)
        )
    {
        return Err(ApiError::Forbidden);
    }
    if !portal_may(&auth, route, &method) {
        return Err(ApiError::Forbidden);
    }
    let limits = state.config.get();
    state.rate_limiter.check(
        &auth.token_hash,
        state.clock.now_ms(),
        limits.token_rate_per_second,
        limits.token_rate_burst,
    )?;
    let query = Query::parse(req.uri().query().unwrap_or(""))?;
    let idempotency = if method == Method::POST {
        idempotency::key_hash(&auth, req.headers(), path_and_query)?
    } else {
        None
    };
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.len() <= 255 && !h.contains(['/', ' ']))
        .map(str::to_owned);
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        read_body(state, req).await?
    } else {
        Bytes::new()
    };
    let ctx = Ctx {
        auth,
        query,
        body,
        idempotency,
        host,
    };
    match ctx.idempotency {
        Some(key) => {
            idempotency::serve_once(state, key, dispatch(state, route, &method, &ctx)).await
        }
        None => dispatch(state, route, &method, &ctx).await,
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per route and method: the dispatch reads as the list of routes"
)]
async fn dispatch(
    state: &ApiState,
    route: Route<'_>,
    method: &Method,
    ctx: &Ctx,
) -> Result<Reply, ApiError> {
    use Method as M;
    use sources::{Destination as Dest, destination};
    match (route, method.clone()) {
        (Route::Apps, M::GET) => apps::list(state, ctx),
        (Route::Apps, _) => apps::create(state, ctx).await,
        (Route::App(a), M::GET) => apps::get(state, ctx, a),
        (Route::App(a), M::PUT) => apps::upsert(state, ctx, a).await,
        (Route::App(a), M::PATCH) => apps::patch(state, ctx, a).await,
        (Route::App(a), _) => apps::delete(state, ctx, a).await,
        (Route::Endpoints(a), M::GET) => endpoints::list(state, ctx, a),
        (Route::Endpoints(a), _) => endpoints::create(state, ctx, a).await,
        (Route::Endpoint(a, e), M::GET) => endpoints::get(state, ctx, a, e),
        (Route::Endpoint(a, e), M::PUT) => endpoints::upsert(state, ctx, a, e).await,
        (Route::Endpoint(a, e), M::PATCH) => endpoints::patch(state, ctx, a, e).await,
        (Route::Endpoint(a, e), _) => endpoints::delete(state, ctx, a, e).await,
        (Route::EndpointSecret(a, e), _) => endpoints::get_secret(state, ctx, a, e),
        (Route::EndpointSecretRotate(a, e), _) => endpoints::rotate_secret(state, ctx, a, e).await,
        (Route::EndpointHeaders(a, e), M::GET) => endpoints::get_headers(state, ctx, a, e),
        (Route::EndpointHeaders(a, e), M::PUT) => {
            endpoints::set_headers(state, ctx, a, e, false).await
        }
        (Route::EndpointHeaders(a, e), _) => endpoints::set_headers(state, ctx, a, e, true).await,
        (Route::EventTypes, M::GET) => event_types::list(state, ctx),
        (Route::EventTypes, _) => event_types::create(state, ctx).await,
        (Route::EventType(n), M::GET) => event_types::get(state, ctx, n),
        (Route::EventType(n), M::PUT) => event_types::upsert(state, ctx, n).await,
        (Route::EventType(n), M::PATCH) => event_types::patch(state, ctx, n).await,
        (Route::EventType(n), _) => event_types::delete(state, ctx, n).await,
        (Route::Messages(a), M::GET) => messages::list(state, ctx, a),
        (Route::Messages(a), _) => messages::create(state, ctx, a).await,
        (Route::Message(a, m), _) => messages::get(state, ctx, a, m),
        (Route::MessageContent(a, m), _) => messages::expunge_content(state, ctx, a, m).await,
        (Route::AttemptsByMessage(a, m), _) => attempts::list_by_message(state, ctx, a, m),
        (Route::AttemptsByEndpoint(a, e), _) => attempts::list_by_endpoint(state, ctx, a, e),
        (Route::Attempt(a, m, t), _) => attempts::get(state, ctx, a, m, t),
        (Route::AttemptContent(a, m, t), _) => attempts::expunge_content(state, ctx, a, m, t).await,
        (Route::Destinations(a, m), _) => deliveries::destinations(state, ctx, a, m),
        (Route::Resend(a, m, e), _) => deliveries::resend(state, ctx, a, m, e).await,
        (Route::EndpointMessages(a, e), _) => deliveries::messages(state, ctx, a, e),
        (Route::EndpointStats(a, e), _) => deliveries::stats(state, ctx, a, e).await,
        (Route::SendExample(a, e), _) => messages::send_example(state, ctx, a, e).await,
        (Route::Recover(a, e), _) => tasks::start(state, ctx, a, e, TaskKind::Recover).await,
        (Route::BulkReplay(a, e), _) => tasks::bulk_replay(state, ctx, a, e).await,
        (Route::ReplayMissing(a, e), _) => {
            tasks::start(state, ctx, a, e, TaskKind::ReplayMissing).await
        }
        (Route::OperationalEndpoints, M::GET) => {
            operational::route(state, ctx, None, Dest::List).await
        }
        (Route::OperationalEndpoints, _) => {
            operational::route(state, ctx, None, Dest::Create).await
        }
        (Route::OperationalEndpoint(e), M::GET) => {
            operational::route(state, ctx, Some(e), Dest::Get).await
        }
        (Route::OperationalEndpoint(e), M::PUT) => {
            operational::route(state, ctx, Some(e), Dest::Upsert).await
        }
        (Route::OperationalEndpoint(e), _) => {
            operational::route(state, ctx, Some(e), Dest::Delete).await
        }
        (Route::OperationalSecret(e), _) => {
            operational::route(state, ctx, Some(e), Dest::Secret).await
        }
        (Route::OperationalSecretRotate(e), _) => {
            operational::route(state, ctx, Some(e), Dest::RotateSecret).await
        }
        (Route::OperationalHeaders(e), M::GET) => {
            operational::route(state, ctx, Some(e), Dest::GetHeaders).await
        }
        (Route::OperationalHeaders(e), _) => {
            let merge = false;
            operational::route(state, ctx, Some(e), Dest::SetHeaders { merge }).await
        }
        (Route::BackgroundTasks, _) => tasks::list(state, ctx),
        (Route::BackgroundTask(t), _) => tasks::get(state, ctx, t),
        (Route::Poller(a, e), _) => poller::poll(state, ctx, a, e),
        (Route::PollerConsumer(a, e, c), _) => poller::consumer_poll(state, ctx, a, e, c).await,
        (Route::PollerSeek(a, e, c), _) => poller::consumer_seek(state, ctx, a, e, c).await,
        (Route::PollerToken(a, e), _) => poller::token(state, ctx, a, e, false).await,
        (Route::PollerTokenRotate(a, e), _) => poller::token(state, ctx, a, e, true).await,
        (Route::Sources, M::GET) => sources::list(state, ctx),
        (Route::Sources, _) => sources::create(state, ctx).await,
        (Route::Source(x), M::GET) => sources::get(state, ctx, x),
        (Route::Source(x), M::PUT) => sources::upsert(state, ctx, x).await,
        (Route::Source(x), _) => sources::delete(state, ctx, x).await,
        (Route::SourceTokenRotate(x), _) => sources::rotate_token(state, ctx, x).await,
        (Route::SourceLog(x), _) => sources::errors(state, ctx, x),
        (Route::SourceEndpoints(x), M::GET) => destination(state, ctx, x, None, Dest::List).await,
        (Route::SourceEndpoints(x), _) => destination(state, ctx, x, None, Dest::Create).await,
        (Route::SourceEndpoint(x, e), M::GET) => {
            destination(state, ctx, x, Some(e), Dest::Get).await
        }
        (Route::SourceEndpoint(x, e), M::PUT) => {
            destination(state, ctx, x, Some(e), Dest::Upsert).await
        }
        (Route::SourceEndpoint(x, e), _) => destination(state, ctx, x, Some(e), Dest::Delete).await,
        (Route::SourceEndpointSecret(x, e), _) => {
            destination(state, ctx, x, Some(e), Dest::Secret).await
        }
        (Route::SourceEndpointSecretRotate(x, e), _) => {
            destination(state, ctx, x, Some(e), Dest::RotateSecret).await
        }
        (Route::SourceEndpointHeaders(x, e), M::GET) => {
            destination(state, ctx, x, Some(e), Dest::GetHeaders).await
        }
        (Route::SourceEndpointHeaders(x, e), m) => {
            let what = Dest::SetHeaders {
                merge: m == M::PATCH,
            };
            destination(state, ctx, x, Some(e), what).await
        }
        (Route::Tokens, M::GET) => tokens::list(state, ctx),
        (Route::Tokens, _) => tokens::create(state, ctx).await,
        (Route::Token(t), _) => tokens::revoke(state, ctx, t).await,
        (Route::PortalAccess(a), _) => portal_access::create(state, ctx, a).await,
        (Route::PortalExpireAll(a), _) => portal_access::expire_all(state, ctx, a).await,
        (Route::Logout, _) => portal_access::logout(state, ctx).await,
        (Route::Health | Route::HealthPing, _) => health(state, route),
        (Route::OpenApi, _) => Reply::json(StatusCode::OK, &openapi::document()),
    }
}

/// Whether a portal credential's capabilities allow this route and method (§ the
/// tenant portal's capability table); other callers pass (their scope is checked by the
/// handlers). `readOnly` links hold `ViewBase` only, so every write fails here.
fn portal_may(auth: &Auth, route: Route<'_>, method: &Method) -> bool {
    use capability as c;
    let Some(grant) = &auth.portal else {
        return true;
    };
    let has = |bits: u8| grant.capabilities & bits != 0;
    let read = matches!(*method, Method::GET | Method::HEAD);
    match route {
        Route::Logout => true,
        Route::EndpointSecret(..) => {
            has(c::VIEW_ENDPOINT_SECRET | c::MANAGE_ENDPOINT_SECRET | c::MANAGE_ENDPOINT)
        }
        Route::EndpointSecretRotate(..) => has(c::MANAGE_ENDPOINT_SECRET | c::MANAGE_ENDPOINT),
        Route::Endpoints(..) | Route::Endpoint(..) | Route::EndpointHeaders(..) => has(if read {
            c::VIEW_BASE
        } else {
            c::MANAGE_ENDPOINT
        }),
        Route::Resend(..)
        | Route::SendExample(..)
        | Route::Recover(..)
        | Route::ReplayMissing(..) => has(c::CREATE_ATTEMPTS),
        Route::App(..)
        | Route::EventTypes
        | Route::EventType(..)
        | Route::Messages(..)
        | Route::Message(..)
        | Route::AttemptsByMessage(..)
        | Route::AttemptsByEndpoint(..)
        | Route::Attempt(..)
        | Route::Destinations(..)
        | Route::EndpointMessages(..)
        | Route::EndpointStats(..)
        | Route::BackgroundTasks
        | Route::BackgroundTask(..) => read && has(c::VIEW_BASE),
        // Creating messages, expunging, pollers, sources, tokens and applications are
        // the platform's, not its tenants'.
        _ => false,
    }
}

/// Serves an `/api/v1` call on behalf of `auth` from inside Sluice (the portal's pages):
/// the same routing, capability check and handlers as a request, without the HTTP.
/// `path` is relative to `/api/v1`; `query` is a raw query string.
pub(crate) async fn call_as(
    state: &ApiState,
    auth: &Auth,
    method: Method,
    path: &str,
    query: &str,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let segments =
        split_segments(&format!("/{path}")).ok_or(ApiError::NotFound("Route not found."))?;
    let route = Route::parse(&segments).ok_or(ApiError::NotFound("Route not found."))?;
    if !route.methods().contains(&method) {
        return Err(ApiError::MethodNotAllowed(route.methods()));
    }
    if !portal_may(auth, route, &method) {
        return Err(ApiError::Forbidden);
    }
    let ctx = Ctx {
        auth: auth.clone(),
        query: Query::parse(query)?,
        body,
        idempotency: None,
        host: None,
    };
    dispatch(state, route, &method, &ctx).await
}

/// `/api/v1/health`: 200 while the log reads (`status` `ok`, or `degraded` with the
/// reasons: the disk or the map nearly full, commits failing), 500 when it does not.
fn health(state: &ApiState, route: Route<'_>) -> Result<Reply, ApiError> {
    if route == Route::HealthPing {
        return Ok(Reply::no_content());
    }
    let database = match state
        .log
        .read(|rtxn, dbs| crate::log::tables::check_readable(rtxn, dbs))
    {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    let mut reasons = Vec::new();
    let room = state.disk_room();
    let disk_low = room
        .room_bytes()
        .is_some_and(|bytes| bytes < state.disk_reserve_bytes);
    if disk_low {
        reasons.push(format!(
            "the data directory's filesystem has {} bytes of room, less than \
             storage.disk_reserve_bytes ({}): message create answers 507",
            room.room_bytes().unwrap_or(0),
            state.disk_reserve_bytes
        ));
    }
    if state.map_nearly_full() {
        reasons.push(format!(
            "the log uses storage.ingest_guard_percent ({} %) of its map: message create \
             answers 507",
            state.ingest_guard_percent
        ));
    }
    if let Some(failure) = state.log.write_failure() {
        reasons.push(format!("writes are failing: {failure}"));
    }
    let part = |bad: bool| if bad { "degraded" } else { "ok" };
    let mut body = serde_json::json!({
        "status": if database != "ok" { "error" } else { part(!reasons.is_empty()) },
        "reasons": reasons,
        "database": {"status": database},
        "queue": {"status": "ok"},
        "cache": {"status": "ok"},
        "disk": {
            "status": part(disk_low),
            "freeBytes": room.filesystem_free_bytes,
            "reusableBytes": room.reusable_bytes,
            "reserveBytes": state.disk_reserve_bytes,
        },
    });
    // Cluster mode: this node's applied sequence, lag and leases (reads here are that
    // far behind the stream).
    if let Some(cluster) = &state.cluster {
        body["cluster"] = cluster.json();
    }
    let status = if database == "ok" {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Reply::json(status, &body)
}

/// Reads the body within `body_bytes_max` and `body_read_timeout_ms`.
async fn read_body(state: &ApiState, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let config = state.config.get();
    let limit = config.body_bytes_max;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit_bytes: limit });
    }
    let timeout = Duration::from_millis(config.body_read_timeout_ms);
    let collected =
        tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect()).await;
    match collected {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit_bytes: limit })
        }
        Ok(Err(error)) => Err(ApiError::bad_request(
            "bad_body",
            format!("The request body could not be read: {error}"),
        )),
    }
}

/// The reply of a committed op's outcome: one mapping, used for fresh replies and for
/// the ones remembered under an idempotency key.
///
/// It borrows the outcome: the writer renders a remembered reply from the outcome it then
/// hands to the request, and an accepted message's payload is written, never copied first.
/// The other records are small and their routes are not hot, so they are cloned.
pub(crate) fn reply_of(outcome: &Outcome) -> Result<Reply, ApiError> {
    let status = |created: bool| {
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        }
    };
    match outcome {
        Outcome::App { app, created } => {
            Reply::json(status(*created), &apps::AppOut::from(app.clone()))
        }
        Outcome::EventType {
            event_type,
            created,
        } => Reply::json(
            status(*created),
            &event_types::EventTypeOut::from(event_type.clone(), true),
        ),
        Outcome::Endpoint { endpoint, created } => Reply::json(
            status(*created),
            &endpoints::EndpointOut::from((**endpoint).clone()),
        ),
        Outcome::Done => Ok(Reply::no_content()),
        Outcome::Message { message, view, .. } => match view {
            MessageView::Accepted { with_content } => Ok(Reply {
                status: StatusCode::ACCEPTED,
                body: messages::accepted_body(message, *with_content)?,
            }),
            MessageView::Example => Reply::json(
                StatusCode::OK,
                &messages::MessageOut::from((**message).clone(), false),
            ),
        },
        Outcome::Requeued(_) => Reply::json(StatusCode::ACCEPTED, &serde_json::json!({})),
        Outcome::TaskCreated(task) => {
            Reply::json(StatusCode::ACCEPTED, &tasks::TaskStarted::from(task))
        }
        Outcome::ConsumerSet { endpoint, seq } => poller::seek_reply(endpoint, *seq),
        Outcome::Refused(refusal) => Err(ApiError::from(refusal.clone())),
        Outcome::SecretRotated
        | Outcome::PollerToken(_)
        | Outcome::Source { .. }
        | Outcome::TaskAdvanced(_)
        | Outcome::AttemptRecorded { .. }
        | Outcome::Swept(_)
        | Outcome::Purged(_)
        | Outcome::IdempotencyExpired { .. }
        | Outcome::RepliesExpired(_) => Err(ApiError::Internal(
            "an outcome with no reply of its own".to_owned(),
        )),
    }
}

/// The reply an idempotent request remembers, as (status, body); `None` for outcomes
/// that are never remembered (refusals, and a rotated secret, a poller token or a source
/// (its `ingestUrl` holds its token), whose replies hold a secret in clear). Given to
/// `Log::open`.
pub fn render_reply(outcome: &Outcome) -> Option<(u16, Vec<u8>)> {
    if matches!(
        outcome,
        Outcome::SecretRotated
            | Outcome::Refused(_)
            | Outcome::PollerToken(_)
            | Outcome::Source { .. }
    ) {
        return None;
    }
    reply_of(outcome)
        .ok()
        .map(|reply| (reply.status.as_u16(), reply.body))
}

/// Parses a management request body into `T`; problems become a 422 naming the field.
/// A key repeated in one object (anywhere in the body) is a 422 too: which copy counts
/// would depend on the parser.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    check_no_duplicate_keys(body)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = parsed.map_err(|e| {
        let mut loc = vec!["body".to_owned()];
        loc.extend(e.path().iter().filter_map(|seg| match seg {
            serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
            serde_path_to_error::Segment::Unknown => None,
            other => Some(other.to_string()),
        }));
        ApiError::Validation(vec![FieldError::json_decode(loc, e.inner().to_string())])
    })?;
    de.end().map_err(|e| {
        ApiError::Validation(vec![FieldError::json_decode(
            vec!["body".to_owned()],
            e.to_string(),
        )])
    })?;
    Ok(value)
}

/// A 422 naming the first key that appears twice in one object of `body`. A body that is
/// not JSON passes (the typed parse reports it). serde_json's recursion limit bounds the
/// walk.
fn check_no_duplicate_keys(body: &[u8]) -> Result<(), ApiError> {
    use serde::de::DeserializeSeed;
    let mut path = vec!["body".to_owned()];
    let mut de = serde_json::Deserializer::from_slice(body);
    match (UniqueKeys { path: &mut path }).deserialize(&mut de) {
        Err(e) if e.to_string().starts_with(DUPLICATE_KEY) => {
            Err(ApiError::Validation(vec![FieldError::json_decode(
                path,
                "this key appears more than once in its object",
            )]))
        }
        _ => Ok(()),
    }
}

/// How `UniqueKeys` starts its error's message.
const DUPLICATE_KEY: &str = "duplicate key";

/// Walks any JSON value and fails at the first duplicate key; `path` is then its location.
struct UniqueKeys<'p> {
    path: &'p mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            self.path.push(format!("[{index}]"));
            if seq
                .next_element_seed(UniqueKeys { path: self.path })?
                .is_none()
            {
                self.path.pop();
                return Ok(());
            }
            self.path.pop();
            index += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let key = key.into_owned();
            self.path.push(key.clone());
            if !seen.insert(key) {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
            map.next_value_seed(UniqueKeys { path: self.path })?;
            self.path.pop();
        }
        Ok(())
    }
}
