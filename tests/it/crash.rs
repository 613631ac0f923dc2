//! Accepted means durable: SIGKILL during concurrent ingest loses no acknowledged message,
//! duplicates none, and idempotent retries after the restart return the original ids.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tokio::sync::Notify;

use crate::harness::{Daemon, TOKEN, call, get, post, try_call};

const CLIENTS: usize = 32;
/// Acknowledgements to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 1_500;
/// Hard bound on each client's loop.
const REQUESTS_PER_CLIENT_MAX: usize = 2_000;

/// What one client saw: acknowledged ids by request number, and the request in flight
/// when the server died (if any).
#[derive(Default)]
struct ClientLog {
    acked: BTreeMap<usize, String>,
    in_flight: Option<usize>,
}

fn body(client: usize, n: usize) -> Vec<u8> {
    json!({"eventType": "crash.test", "payload": {"client": client, "n": n, "pad": "x".repeat(200)}}).to_string().into_bytes()
}

fn key(client: usize, n: usize) -> String {
    format!("crash-{client}-{n}")
}

async fn client(
    addr: std::net::SocketAddr,
    client: usize,
    acks: Arc<AtomicUsize>,
    enough: Arc<Notify>,
) -> ClientLog {
    let mut log = ClientLog::default();
    for n in 0..REQUESTS_PER_CLIENT_MAX {
        let key = key(client, n);
        match try_call(
            addr,
            "POST",
            "/api/v1/app/crash/msg",
            Some(TOKEN),
            &[("idempotency-key", &key)],
            &body(client, n),
        )
        .await
        {
            Ok(resp) if resp.status == 202 => {
                log.acked
                    .insert(n, resp.json["id"].as_str().expect("id").to_owned());
                if acks.fetch_add(1, Ordering::Relaxed) + 1 == ACKS_BEFORE_KILL {
                    enough.notify_one();
                }
            }
            Ok(resp) => panic!(
                "unexpected status {} before the kill: {}",
                resp.status, resp.json
            ),
            Err(_) => {
                log.in_flight = Some(n);
                break;
            }
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::spawn(dir.path());
    let addr = daemon.addr;
    assert_eq!(
        post(
            addr,
            "/api/v1/app",
            &json!({"name": "Crash", "uid": "crash"})
        )
        .await
        .status,
        201
    );
    let acks = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(addr, c, Arc::clone(&acks), Arc::clone(&enough))))
        .collect();
    enough.notified().await;
    daemon.kill9();
    let mut logs = Vec::new();
    for handle in clients {
        logs.push(handle.await.expect("client"));
    }
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    assert!(acked >= ACKS_BEFORE_KILL, "{acked} acknowledged");

    let daemon = Daemon::spawn(dir.path());
    let addr = daemon.addr;
    // Every acknowledged message is there, with its payload.
    for (c, log) in logs.iter().enumerate() {
        for (n, id) in &log.acked {
            let got = get(addr, &format!("/api/v1/app/crash/msg/{id}")).await;
            assert_eq!(got.status, 200, "acknowledged {id} lost");
            assert_eq!(
                (
                    got.json["payload"]["client"].as_u64(),
                    got.json["payload"]["n"].as_u64()
                ),
                (Some(c as u64), Some(*n as u64))
            );
        }
    }
    // Retrying with the same key returns the original id, or creates the message once.
    let mut expected: BTreeSet<(u64, u64)> = BTreeSet::new();
    for (c, log) in logs.iter().enumerate() {
        expected.extend(log.acked.keys().map(|n| (c as u64, *n as u64)));
        if let Some((n, id)) = log.acked.iter().next_back() {
            let retry = call(
                addr,
                "POST",
                "/api/v1/app/crash/msg",
                Some(TOKEN),
                &[("idempotency-key", &key(c, *n))],
                &body(c, *n),
            )
            .await;
            assert_eq!(
                (retry.status, retry.json["id"].as_str()),
                (202, Some(id.as_str()))
            );
        }
        if let Some(n) = log.in_flight {
            let retry = call(
                addr,
                "POST",
                "/api/v1/app/crash/msg",
                Some(TOKEN),
                &[("idempotency-key", &key(c, n))],
                &body(c, n),
            )
            .await;
            assert_eq!(retry.status, 202);
            expected.insert((c as u64, n as u64));
        }
    }
    // And nothing is there twice.
    let mut seen = Vec::new();
    let mut path = "/api/v1/app/crash/msg?limit=250".to_owned();
    loop {
        let page = get(addr, &path).await.json;
        for m in page["data"].as_array().expect("data") {
            seen.push((
                m["payload"]["client"].as_u64().expect("client"),
                m["payload"]["n"].as_u64().expect("n"),
            ));
        }
        if page["done"] == json!(true) {
            break;
        }
        path = format!(
            "/api/v1/app/crash/msg?limit=250&iterator={}",
            page["iterator"].as_str().expect("iterator")
        );
    }
    let unique: BTreeSet<_> = seen.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "duplicated messages after restart"
    );
    assert_eq!(unique, expected);
}
