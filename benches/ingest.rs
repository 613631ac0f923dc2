//! Durable ingest over HTTP: 64 keep-alive clients post 1 KiB messages as fast as Sluice
//! acknowledges them (202 = committed with fsync), for a bounded time and count.
//!
//! Run: `cargo bench --bench ingest` (env `SLUICE_BENCH_SECS`, default 10;
//! `SLUICE_BENCH_CLIENTS`, default 64; `SLUICE_BENCH_DIR`, default a temp dir under ./target).
//! Reports accepted messages/s and accept latency p50/p99/p99.9, and, for scale, the
//! disk's fsyncs per second measured in the same data directory in the same run.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TOKEN, connect, send};
use sluice::clock::Clock;
use sluice::config::Config;
/// Hard cap on requests per client, whatever the duration.
const REQUESTS_PER_CLIENT_MAX: usize = 1_000_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = env_or("SLUICE_BENCH_SECS", 10);
    let clients = usize::try_from(env_or("SLUICE_BENCH_CLIENTS", 64)).unwrap_or(64);
    let base = std::env::var("SLUICE_BENCH_DIR").unwrap_or_else(|_| "target/bench-data".to_owned());
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");

    let fsyncs = fsyncs_per_second(dir.path(), Duration::from_secs(2));

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let mut config = Config::embedded_default();
    config.data_dir = dir.path().join("data");
    config.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let running = server_rt
        .block_on(sluice::app::start(&config, Some(TOKEN), Clock::System))
        .expect("start");
    let addr = running.addr;

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let (count, mut latencies, elapsed) =
        client_rt.block_on(load(addr, clients, Duration::from_secs(secs)));
    server_rt.block_on(running.stop());

    latencies.sort_unstable();
    let pct = |p: f64| {
        let idx = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let rate = count as f64 / elapsed.as_secs_f64();
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "durable ingest: {clients} clients, 1 KiB payloads, {:.1} s",
        elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "  accepted: {count} messages, {rate:.0} messages/s");
    let _ = writeln!(
        out,
        "  accept latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}",
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
    let _ = writeln!(
        out,
        "  disk: {fsyncs:.0} fsyncs/s (4 KiB append + fdatasync, same directory)"
    );
    let _ = writeln!(
        out,
        "  messages per fsync-equivalent: {:.1}",
        rate / fsyncs.max(1.0)
    );
}

async fn load(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
) -> (usize, Vec<Duration>, Duration) {
    let create_app = br#"{"name":"bench","uid":"bench"}"#;
    let mut setup = connect(addr).await;
    let (status, _) = send(&mut setup, addr, "/api/v1/app", create_app).await;
    assert_eq!(status, 201, "create app");
    let pad = "x".repeat(1024 - 40);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let pad = pad.clone();
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                let mut latencies = Vec::new();
                for n in 0..REQUESTS_PER_CLIENT_MAX {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let body = format!(r#"{{"eventType":"bench.event","payload":{{"c":{c},"n":{n},"pad":"{pad}"}}}}"#);
                    let sent = Instant::now();
                    let (status, _) = send(&mut sender, addr, "/api/v1/app/bench/msg?with_content=false", body.as_bytes()).await;
                    assert_eq!(status, 202, "accepted");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    (all.len(), all, start.elapsed())
}

/// 4 KiB appends, each followed by fdatasync, for `window`: the disk's durable-write rate.
fn fsyncs_per_second(dir: &std::path::Path, window: Duration) -> f64 {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let block = [0u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window && n < 1_000_000 {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    rate
}
