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

type HttpsConnector = hyper_rustls::HttpsConnector<Dialer>;

/// How the transport reaches destinations, and whom it trusts there.
#[derive(Clone, Debug, Default)]
pub struct Egress {
    /// An HTTP proxy (`host:port`) whose CONNECT tunnels carry every delivery.
    pub proxy: Option<String>,
    /// PEM certificates trusted besides the system's roots and the bundled ones.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why the transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("delivery.ca_file {file}: {detail}")]
    CaFile { file: String, detail: String },
}

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
        egress: &Egress,
    ) -> Result<Transport, EgressError> {
        let vetting = PolicyResolver {
            policy: policy.clone(),
            resolver,
        };
        let dialer = match &egress.proxy {
            Some(proxy) => Dialer::Tunnel(Tunnel {
                proxy: proxy.clone(),
                vetting,
                connect_timeout,
            }),
            None => {
                let mut http = HttpConnector::new_with_resolver(vetting);
                http.enforce_http(false);
                http.set_nodelay(true);
                http.set_connect_timeout(Some(connect_timeout));
                Dialer::Direct(http)
            }
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(trusted_roots(egress.ca_file.as_deref())?)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(dialer);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST_MAX)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Transport {
            client,
            policy,
            clock,
        })
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

/// The roots deliveries trust: the system's store (so a corporate CA installed there
/// works), the bundled Mozilla roots as a fallback (a minimal image may have no store),
/// and the certificates of `delivery.ca_file`.
fn trusted_roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, EgressError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // Unreadable or unparsable system certificates are skipped: the bundled roots remain.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    if let Some(path) = ca_file {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let refuse = |detail: String| EgressError::CaFile {
            file: path.display().to_string(),
            detail,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| refuse(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(e.to_string()))?;
        if certs.is_empty() {
            return Err(refuse("holds no PEM certificate".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| refuse(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// A boxed connect error (the dialers' errors differ).
type DialError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the TCP connection of a delivery: directly to a vetted address, or through the
/// egress proxy's CONNECT tunnel to a vetted address. Either way the destination policy
/// judges the destination before any packet leaves for it.
#[derive(Clone)]
pub enum Dialer {
    Direct(HttpConnector<PolicyResolver>),
    Tunnel(Tunnel),
}

impl tower_service::Service<hyper::Uri> for Dialer {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Dialer::Direct(http) => http.poll_ready(cx).map_err(Into::into),
            Dialer::Tunnel(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, dst: hyper::Uri) -> Self::Future {
        // Each dial (a reused pooled connection never comes here): a rate near the
        // attempts' says the pool keeps too few idle connections for the destination.
        metrics::counter!(crate::telemetry::name::CONNECTIONS_OPENED).increment(1);
        match self {
            Dialer::Direct(http) => {
                let connecting = http.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Dialer::Tunnel(tunnel) => Box::pin(tunnel.clone().open(dst)),
        }
    }
}

/// The CONNECT tunnel through the egress proxy. The tunnel is asked for the vetted IP
/// address, never the name: a proxy that resolved the name itself could be pointed
/// elsewhere by DNS (rebinding) after the policy judged it. TLS then runs inside the
/// tunnel with the destination's name (SNI and certificate check), as without a proxy.
#[derive(Clone)]
pub struct Tunnel {
    /// `host:port` of the proxy (the operator's choice: not subject to the policy).
    proxy: String,
    vetting: PolicyResolver,
    connect_timeout: Duration,
}

impl Tunnel {
    async fn open(
        mut self,
        dst: hyper::Uri,
    ) -> Result<hyper_util::rt::TokioIo<tokio::net::TcpStream>, DialError> {
        let host = dst
            .host()
            .ok_or("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = dst
            .port_u16()
            .unwrap_or(if dst.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let ip = match host.parse::<IpAddr>() {
            // A literal was judged by `check_literal` before the attempt began.
            Ok(ip) => ip,
            Err(_) => {
                let name = host.parse::<Name>().map_err(|e| format!("{host}: {e}"))?;
                let vetted = tower_service::Service::call(&mut self.vetting, name).await?;
                vetted
                    .map(|addr| addr.ip())
                    .next()
                    .ok_or_else(|| format!("{host}: no address"))?
            }
        };
        let target = SocketAddr::new(ip, port);
        let opening = connect_through(&self.proxy, target);
        let stream = tokio::time::timeout(self.connect_timeout, opening)
            .await
            .map_err(|_| format!("the proxy did not open a tunnel to {target} in time"))??;
        Ok(hyper_util::rt::TokioIo::new(stream))
    }
}

/// Connects to `proxy` and asks it for a tunnel to `target`; the stream once it answered
/// 2xx. The answer's head is read up to `PROXY_ANSWER_BYTES_MAX`.
async fn connect_through(
    proxy: &str,
    target: SocketAddr,
) -> Result<tokio::net::TcpStream, DialError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("cannot reach the proxy {proxy}: {e}"))?;
    stream.set_nodelay(true)?;
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the head may be consumed (it belongs to the tunnel).
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= crate::limits::PROXY_ANSWER_BYTES_MAX {
            return Err("the proxy's answer is too long".into());
        }
        if stream.read(&mut byte).await? == 0 {
            return Err("the proxy closed the connection".into());
        }
        head.push(byte[0]);
    }
    let status_line =
        String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or(&[])).into_owned();
    let status = status_line.split(' ').nth(1).unwrap_or("");
    if !status.starts_with('2') {
        return Err(format!("the proxy refused the tunnel to {target}: {status_line}").into());
    }
    Ok(stream)
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
    // An error's text can carry names from the other side (a certificate's, a
    // resolver's): cut between characters.
    let kept = crate::text::prefix_within(&text, RESPONSE_KEPT_BYTES_MAX).len();
    text.truncate(kept);
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
