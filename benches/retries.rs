//! Memory held with a million pending retries. Messages fan out to endpoints whose
//! destination the policy refuses (a loopback URL without an allow-list), so every first
//! attempt fails at once and schedules its retry an hour later. Once every delivery is
//! waiting for its retry, the process's anonymous resident memory (heap, not the LMDB map)
//! is compared with what it was before the load. Also reports how fast the first attempts
//! were made and recorded, and how long a restart takes to be ready with all of them
//! still waiting (none lost, none fired early).
//!
//! Run: `cargo bench --bench retries` (env `SLUICE_BENCH_MESSAGES`, default 100000, times
//! `SLUICE_BENCH_ENDPOINTS`, default 10, is the number of pending retries).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TOKEN, connect, send};
use sluice::clock::Clock;
use sluice::config::Config;

const CLIENTS: usize = 64;
/// Bounds on the whole run, so a regression cannot make it run forever.
const INGEST_TIME_MAX: Duration = Duration::from_secs(600);
const SETTLE_TIME_MAX: Duration = Duration::from_secs(900);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (anonymous resident KiB, total resident KiB) of this process.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("VmRSS:"))
}

fn main() {
    let messages = env_usize("SLUICE_BENCH_MESSAGES", 100_000);
    let endpoints = env_usize("SLUICE_BENCH_ENDPOINTS", 10);
    let pending_wanted = messages * endpoints;
    std::fs::create_dir_all("target/bench-data").expect("dir");
    let dir = tempfile::tempdir_in("target/bench-data").expect("tempdir");

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let mut config = Config::embedded_default();
    config.data_dir = dir.path().join("data");
    config.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.storage.map_size_bytes = 32 << 30;
    config.delivery.allow_http = true;
    // First attempt at once, then one retry an hour later: far past the in-memory horizon.
    config.delivery.retry_schedule_ms = vec![3_600_000];
    let running = server_rt
        .block_on(sluice::app::start(&config, Some(TOKEN), Clock::System))
        .expect("start");
    let addr = running.addr;
    let baseline = memory_kib();

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let started = Instant::now();
    client_rt.block_on(setup(addr, endpoints));
    let accepted = client_rt.block_on(ingest(addr, messages));
    let ingested = started.elapsed();
    let settled = client_rt.block_on(wait_until_pending(addr, pending_wanted));
    let settle_time = started.elapsed();
    let loaded = memory_kib();
    let disk = dir_bytes(&config.data_dir);
    server_rt.block_on(running.stop());

    // Restart on the same data: time to ready, and every retry still waiting.
    let restart = Instant::now();
    let running = server_rt
        .block_on(sluice::app::start(&config, Some(TOKEN), Clock::System))
        .expect("restart");
    let ready = restart.elapsed();
    let kept = client_rt.block_on(wait_until_pending(running.addr, pending_wanted));
    server_rt.block_on(running.stop());

    let figures = Figures {
        accepted,
        endpoints,
        pending_wanted,
        ingested,
        settle_time,
        settled,
        baseline,
        loaded,
        disk,
        ready,
        kept,
    };
    if !report(&figures) {
        std::process::exit(1);
    }
}

/// What one run measured.
struct Figures {
    accepted: usize,
    endpoints: usize,
    pending_wanted: usize,
    ingested: Duration,
    settle_time: Duration,
    settled: u64,
    baseline: (u64, u64),
    loaded: (u64, u64),
    disk: u64,
    ready: Duration,
    kept: u64,
}

/// Prints the figures; `false` if some retry was not waiting when it should be.
fn report(f: &Figures) -> bool {
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "pending retries: {} messages x {} endpoints, every first attempt refused",
        f.accepted, f.endpoints
    );
    let _ = writeln!(
        out,
        "  ingest {:.1} s ({:.0} msg/s); all first attempts recorded by {:.1} s ({:.0} attempts/s)",
        f.ingested.as_secs_f64(),
        f.accepted as f64 / f.ingested.as_secs_f64(),
        f.settle_time.as_secs_f64(),
        f.settled as f64 / f.settle_time.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  waiting for their retry: {} (wanted {})",
        f.settled, f.pending_wanted
    );
    let _ = writeln!(
        out,
        "  anonymous RSS: {} MiB before, {} MiB with them pending (+{} MiB); total RSS {} MiB (includes mapped LMDB pages)",
        f.baseline.0 / 1024,
        f.loaded.0 / 1024,
        f.loaded.0.saturating_sub(f.baseline.0) / 1024,
        f.loaded.1 / 1024
    );
    let _ = writeln!(out, "  data directory: {} MiB", f.disk >> 20);
    let _ = writeln!(
        out,
        "  restart: ready in {:.1} ms; retries still waiting after it: {}",
        f.ready.as_secs_f64() * 1e3,
        f.kept
    );
    if f.settled < f.pending_wanted as u64 || f.kept < f.pending_wanted as u64 {
        let _ = writeln!(out, "REFUSED: not every delivery reached its retry in time");
        return false;
    }
    true
}

async fn setup(addr: SocketAddr, endpoints: usize) {
    let mut sender = connect(addr).await;
    let (status, _) = send(
        &mut sender,
        addr,
        "/api/v1/app",
        br#"{"name":"bench","uid":"bench"}"#,
    )
    .await;
    assert_eq!(status, 201, "app");
    for n in 0..endpoints {
        // Loopback without an allow-list: refused by the destination policy, no socket.
        let body = format!(r#"{{"url":"http://127.0.0.1:9/hook/{n}","uid":"e{n}"}}"#);
        let (status, _) = send(
            &mut sender,
            addr,
            "/api/v1/app/bench/endpoint",
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 201, "endpoint");
    }
}

async fn ingest(addr: SocketAddr, messages: usize) -> usize {
    let deadline = Instant::now() + INGEST_TIME_MAX;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                let mut accepted = 0;
                for n in (client..messages).step_by(CLIENTS) {
                    if Instant::now() > deadline {
                        break;
                    }
                    let body = format!(r#"{{"eventType":"bench.retry","payload":{{"n":{n}}}}}"#);
                    let (status, _) =
                        send(&mut sender, addr, "/api/v1/app/bench/msg", body.as_bytes()).await;
                    if status == 202 {
                        accepted += 1;
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.expect("client");
    }
    accepted
}

/// Polls the endpoints' stats until every delivery has made its first attempt and waits
/// for its retry (`sending`); returns how many do.
async fn wait_until_pending(addr: SocketAddr, wanted: usize) -> u64 {
    let deadline = Instant::now() + SETTLE_TIME_MAX;
    let mut sender = connect(addr).await;
    loop {
        let mut sending = 0;
        for n in 0.. {
            let path = format!("/api/v1/app/bench/endpoint/e{n}/stats");
            let (status, body) = get(&mut sender, addr, &path).await;
            if status == 404 {
                break;
            }
            let stats: serde_json::Value = serde_json::from_slice(&body).expect("stats");
            sending += stats["sending"].as_u64().unwrap_or(0);
        }
        if sending >= wanted as u64 || Instant::now() > deadline {
            return sending;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn get(sender: &mut common::Sender, addr: SocketAddr, path: &str) -> (u16, bytes::Bytes) {
    use http_body_util::{BodyExt, Full};
    sender.ready().await.expect("ready");
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().collect().await.expect("body").to_bytes(),
    )
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
