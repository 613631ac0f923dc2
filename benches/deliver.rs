//! End-to-end delivery: 64 keep-alive clients ingest 1 KiB messages for a bounded time;
//! Sluice delivers each to one endpoint on a local receiver, which checks every signature
//! and counts unique `webhook-id`s. Reports ingest and delivered messages/s and end-to-end
//! latency (acceptance to arrival). Refuses to report a rate if any accepted message was
//! not delivered or any signature failed.
//!
//! Run: `cargo bench --bench deliver` (env `SLUICE_BENCH_SECS`, default 10).

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::{TOKEN, connect, send};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sluice::clock::Clock;
use sluice::config::Config;

const REQUESTS_PER_CLIENT_MAX: usize = 1_000_000;

/// What the receiver saw: arrival time per message id, and bad signatures.
#[derive(Default)]
struct Seen {
    first_arrival: HashMap<String, Instant>,
    duplicates: usize,
    bad_signatures: usize,
}

fn main() {
    let secs: u64 = std::env::var("SLUICE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    std::fs::create_dir_all("target/bench-data").expect("dir");
    let dir = tempfile::tempdir_in("target/bench-data").expect("tempdir");
    let key = [7u8; 24];
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );

    let sink_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = sink_rt.block_on(start_sink(Arc::clone(&seen), key.to_vec()));

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let mut config = Config::embedded_default();
    config.data_dir = dir.path().join("data");
    config.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.delivery.allow_http = true;
    config.delivery.allowed_networks = vec!["127.0.0.0/8".parse().expect("net")];
    config.delivery.endpoint_in_flight_max = 64;
    let running = server_rt
        .block_on(sluice::app::start(&config, Some(TOKEN), Clock::System))
        .expect("start");
    let addr = running.addr;

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let (accepted, started, ingest_elapsed) =
        client_rt.block_on(load(addr, sink, &secret, Duration::from_secs(secs)));
    // Wait (bounded) for the deliveries to catch up.
    let deadline = Instant::now() + Duration::from_secs(120);
    client_rt.block_on(async {
        while seen.lock().expect("lock").first_arrival.len() < accepted.len()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let delivered_at = Instant::now();
    server_rt.block_on(running.stop());
    report(
        &seen.lock().expect("lock"),
        &accepted,
        started,
        ingest_elapsed,
        delivered_at,
    );
}

fn report(
    seen: &Seen,
    accepted: &HashMap<String, Instant>,
    started: Instant,
    ingest: Duration,
    done: Instant,
) {
    let mut out = std::io::stderr().lock();
    let missing = accepted
        .keys()
        .filter(|id| !seen.first_arrival.contains_key(*id))
        .count();
    if missing > 0 || seen.bad_signatures > 0 {
        let _ = writeln!(
            out,
            "REFUSED: {missing} accepted messages undelivered, {} bad signatures",
            seen.bad_signatures
        );
        std::process::exit(1);
    }
    let last = seen.first_arrival.values().max().copied().unwrap_or(done);
    let mut latencies: Vec<Duration> = accepted
        .iter()
        .filter_map(|(id, acked)| {
            seen.first_arrival
                .get(id)
                .map(|at| at.saturating_duration_since(*acked))
        })
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len() - 1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let total = last.duration_since(started).as_secs_f64();
    let _ = writeln!(
        out,
        "end-to-end: 64 clients, 1 KiB payloads, one endpoint, signatures verified"
    );
    let _ = writeln!(
        out,
        "  accepted {} in {:.1} s: {:.0} msg/s",
        accepted.len(),
        ingest.as_secs_f64(),
        accepted.len() as f64 / ingest.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  delivered {} by {:.1} s: {:.0} msg/s (first accept to last arrival)",
        seen.first_arrival.len(),
        total,
        seen.first_arrival.len() as f64 / total
    );
    let _ = writeln!(out, "  duplicates {}", seen.duplicates);
    let _ = writeln!(
        out,
        "  latency accept→arrival ms: p50 {:.1}  p99 {:.1}  p99.9 {:.1}",
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
}

async fn load(
    addr: SocketAddr,
    sink: SocketAddr,
    secret: &str,
    duration: Duration,
) -> (HashMap<String, Instant>, Instant, Duration) {
    let mut setup = connect(addr).await;
    assert_eq!(
        send(
            &mut setup,
            addr,
            "/api/v1/app",
            br#"{"name":"bench","uid":"bench"}"#
        )
        .await
        .0,
        201
    );
    let endpoint = format!(r#"{{"url":"http://{sink}/hook","secret":"{secret}"}}"#);
    assert_eq!(
        send(
            &mut setup,
            addr,
            "/api/v1/app/bench/endpoint",
            endpoint.as_bytes()
        )
        .await
        .0,
        201
    );
    let pad = "x".repeat(1024 - 40);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..64)
        .map(|c| {
            let pad = pad.clone();
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                let mut accepted = Vec::new();
                for n in 0..REQUESTS_PER_CLIENT_MAX {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let body = format!(r#"{{"eventType":"bench.event","payload":{{"c":{c},"n":{n},"pad":"{pad}"}}}}"#);
                    let (status, id) = send_for_id(&mut sender, addr, body.into_bytes()).await;
                    assert_eq!(status, 202);
                    accepted.push((id, Instant::now()));
                }
                accepted
            })
        })
        .collect();
    let mut all = HashMap::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    (all, started, started.elapsed())
}

async fn send_for_id(
    sender: &mut common::Sender,
    addr: SocketAddr,
    body: Vec<u8>,
) -> (u16, String) {
    let (status, bytes) = send(
        sender,
        addr,
        "/api/v1/app/bench/msg?with_content=false",
        &body,
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    (status, json["id"].as_str().unwrap_or_default().to_owned())
}

/// A minimal receiver: verifies each signature with the endpoint key, records arrivals.
async fn start_sink(seen: Arc<Mutex<Seen>>, key: Vec<u8>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let key = Arc::new(key);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, key) = (Arc::clone(&seen), Arc::clone(&key));
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (seen, key) = (Arc::clone(&seen), Arc::clone(&key));
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let (id, ts, sig) = (
                            header("webhook-id"),
                            header("webhook-timestamp"),
                            header("webhook-signature"),
                        );
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let expected = sluice::signing::signature_header(
                            [key.as_slice()],
                            &id,
                            ts.parse().unwrap_or(0),
                            &body,
                        );
                        let mut seen = seen.lock().expect("lock");
                        if sig != expected {
                            seen.bad_signatures += 1;
                        }
                        if seen.first_arrival.insert(id, Instant::now()).is_some() {
                            seen.duplicates += 1;
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}
