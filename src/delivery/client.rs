//! The delivery transport: one pooled HTTP client (HTTP/1.1 and HTTP/2 by ALPN, rustls
//! with ring) and `Transport::attempt`, which makes one bounded attempt and classifies it.
//!
//! Bounds: connect within `connect_timeout`; the whole attempt, connect to the last byte
//! read, within `attempt_timeout`; the response body read up to `RESPONSE_READ_BYTES_MAX`
//! (then the connection is dropped rather than drained) and kept up to
//! `RESPONSE_KEPT_BYTES_MAX`. Idle pooled connections close after `POOL_IDLE`, shorter
//! than the 5 s keep-alive of common servers, so a reused connection is rarely a dead one.

use std::error::Error as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::classify::{Outcome, TransportFailure, classify};
use super::policy::{DestinationPolicy, Refusal};
use crate::clock::Clock;
use crate::limits::{
    POOL_IDLE, POOL_IDLE_PER_HOST_MAX, RESPONSE_KEPT_BYTES_MAX, RESPONSE_READ_BYTES_MAX,
};
use crate::live::Live;

/// The result of one attempt.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// The start of the response body (lossy UTF-8), or why there was none.
    pub response: String,
}

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector<PolicyResolver>>;

/// The shared client and the bounds every attempt runs under.
pub struct Transport {
    client: Client<HttpsConnector, Full<Bytes>>,
    /// Replaceable by SIGHUP; the resolver reads the same value.
    policy: Live<DestinationPolicy>,
    clock: Clock,
}

impl Transport {
    pub fn new(
        policy: Live<DestinationPolicy>,
        resolver: Arc<dyn Resolve>,
        connect_timeout: Duration,
        clock: Clock,
    ) -> Transport {
        let mut http = HttpConnector::new_with_resolver(PolicyResolver {
            policy: policy.clone(),
            resolver,
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST_MAX)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Transport {
            client,
            policy,
            clock,
        }
    }

    /// Makes one attempt: policy check, send, read the response within `timeout`.
    pub async fn attempt(&self, request: Request<Full<Bytes>>, timeout: Duration) -> AttemptResult {
        let started = Instant::now();
        let finish = |outcome, response: String| AttemptResult {
            outcome,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            response,
        };
        if let Err(refusal) = self.check_literal(request.uri()) {
            return finish(Outcome::Failed(TransportFailure::Refused), refusal);
        }
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Err(_) => finish(
                Outcome::Failed(TransportFailure::Timeout),
                "the attempt timed out".to_owned(),
            ),
            Ok(Err((failure, detail))) => finish(Outcome::Failed(failure), detail),
            Ok(Ok((outcome, body))) => finish(outcome, body),
        }
    }

    /// The scheme and the host are checked here (an IP literal in any spelling, no
    /// credentials); a name is checked by the resolver on every address it resolves to.
    fn check_literal(&self, uri: &hyper::Uri) -> Result<(), String> {
        self.policy
            .get()
            .check_url(uri)
            .map(|_| ())
            .map_err(|r| r.to_string())
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Outcome, String), (TransportFailure, String)> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| (failure_of(&e), error_text(&e)))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let outcome = classify(status, retry_after.as_deref(), self.clock.now_ms());
        let mut body = response.into_body();
        let mut kept = Vec::new();
        let mut read = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| (TransportFailure::Io, e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                read += data.len();
                let room = RESPONSE_KEPT_BYTES_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..data.len().min(room)]);
                if read > RESPONSE_READ_BYTES_MAX {
                    break;
                }
            }
        }
        Ok((outcome, String::from_utf8_lossy(&kept).into_owned()))
    }
}

/// Sorts a client error into the failure kinds we record.
fn failure_of(error: &hyper_util::client::legacy::Error) -> TransportFailure {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return TransportFailure::Refused;
            }
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return TransportFailure::Tls;
            }
        }
        if e.is::<rustls::Error>() {
            return TransportFailure::Tls;
        }
        source = e.source();
    }
    if error.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Io
    }
}

fn error_text(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text.truncate(RESPONSE_KEPT_BYTES_MAX);
    text
}

/// Name resolution, replaceable so that tests can play a hostile DNS server.
pub trait Resolve: Send + Sync {
    /// The addresses `host` resolves to.
    fn resolve(&self, host: &str) -> Resolving<Vec<IpAddr>>;
}

/// A boxed future of a resolution.
pub type Resolving<T> = Pin<Box<dyn Future<Output = Result<T, std::io::Error>> + Send>>;

/// The operating system's resolver (`getaddrinfo`, off the runtime threads).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str) -> Resolving<Vec<IpAddr>> {
        let host = host.to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(found.map(|a| a.ip()).collect())
        })
    }
}

/// Resolves names and refuses any name with a refused address, so the connector only ever
/// dials vetted addresses. The connection is made to exactly the addresses vetted here
/// (no second lookup), and a pooled connection keeps its address: a DNS answer that
/// changes later (rebinding) can only affect new connections, which are vetted again.
#[derive(Clone)]
pub struct PolicyResolver {
    policy: Live<DestinationPolicy>,
    resolver: Arc<dyn Resolve>,
}

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving<std::vec::IntoIter<SocketAddr>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.get();
        let resolving = self.resolver.resolve(name.as_str());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolving.await?;
            if let Err(refusal) = policy.check_resolved(&addrs) {
                let kind = match refusal {
                    Refusal::Unresolved => std::io::ErrorKind::NotFound,
                    _ => std::io::ErrorKind::PermissionDenied,
                };
                return Err(std::io::Error::new(kind, format!("{host}: {refusal}")));
            }
            // The connector sets the port from the URL.
            let vetted: Vec<SocketAddr> =
                addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(vetted.into_iter())
        })
    }
}
