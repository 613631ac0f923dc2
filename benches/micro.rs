//! Micro-benchmarks of the hot paths, each a bounded timing loop: signing by payload size,
//! message-create validation (simd-json, Sluice's parser) against serde_json on the same
//! bytes, endpoint matching (10,000 endpoints; 100,000 in one application and across
//! 10,000 applications, with the endpoint index's heap per endpoint), and the group-commit
//! append (many concurrent writers sharing fsyncs) against one writer at a time. Each also
//! reports the heap allocations one call makes (a counting wrapper around the system
//! allocator).
//!
//! Run: `cargo bench --bench micro`.

#![expect(clippy::print_stdout, reason = "the figures are the program's output")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice::clock::Clock;
use sluice::log::Log;
use sluice::log::index::EndpointIndex;
use sluice::log::ops::{AppFields, Envelope, MessageApp, NewMessage, Op, Outcome};
use sluice::log::schema::{EndpointRecord, Signing};

/// Heap allocations made by every thread of this process so far.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Heap bytes allocated and not yet freed.
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting allocations.
struct Counting;

#[expect(unsafe_code, reason = "a global allocator is an unsafe trait")]
// SAFETY: every call is passed unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout; the contract is the same.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap allocations (and reallocations) per call of `f`, over `calls` calls.
fn allocations_per_call(calls: u64, mut f: impl FnMut()) -> f64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..calls {
        f();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / calls as f64
}

/// Runs `f` repeatedly for about `budget` (at most `max` times); returns ns per call.
fn time_per_call(budget: Duration, max: u64, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut calls = 0u64;
    while calls < max && started.elapsed() < budget {
        f();
        calls += 1;
    }
    started.elapsed().as_nanos() as f64 / calls.max(1) as f64
}

fn main() {
    let budget = Duration::from_secs(1);
    signing(budget);
    validation(budget);
    matching(budget);
    group_commit();
}

fn signing(budget: Duration) {
    let hmac_key = [7u8; 24].to_vec();
    // An endpoint secret given as `whsk_` (Ed25519, `v1a,` signatures).
    let ed25519_key = sluice::signing::ed25519_from_seed(&[7u8; 32]);
    for (kind, key) in [("hmac", &hmac_key), ("ed25519", &ed25519_key)] {
        for size in [256usize, 4096, 65_536] {
            let body = vec![b'x'; size];
            let mut sign = || {
                black_box(sluice::signing::signature_header(
                    [key.as_slice()],
                    "msg_2bCmYSXH7E3zZ3rV8b3KqXhQ1oF",
                    1_800_000_000,
                    black_box(&body),
                ));
            };
            let ns = time_per_call(budget, 10_000_000, &mut sign);
            let allocations = allocations_per_call(1_000, &mut sign);
            println!(
                "sign {kind:<7} {size:>6} B: {ns:>9.0} ns ({:.0} MB/s), {allocations:.1} allocations",
                size as f64 / ns * 1e3
            );
        }
    }
}

/// What a serde_json-based validator would parse to keep the payload's exact bytes: the
/// small fields typed, the payload borrowed as raw text.
#[derive(serde::Deserialize)]
#[expect(
    dead_code,
    reason = "the fields are parsed for the comparison, not read"
)]
struct SerdeMessageIn<'a> {
    #[serde(rename = "eventType")]
    event_type: &'a str,
    #[serde(rename = "eventId")]
    event_id: Option<&'a str>,
    channels: Option<Vec<&'a str>>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// A message-create body of about `size` bytes whose payload is `shape`: one long string,
/// or many small fields (records of ids, amounts, names and flags), as most events are.
fn message_body(size: usize, shape: &str) -> Vec<u8> {
    let payload = if shape == "string" {
        format!(
            r#"{{"id":"in_1","amount":100,"pad":"{}","nested":{{"a":[1,2,3],"b":true}}}}"#,
            "x".repeat(size)
        )
    } else {
        let mut lines = Vec::new();
        let mut len = 0;
        let mut n = 0u64;
        while len < size {
            let line = format!(
                r#"{{"id":"li_{n:06}","amount":{},"currency":"eur","description":"Line item {n}","taxable":{},"discount":null,"tags":["a","b"]}}"#,
                n * 137 % 100_000,
                n.is_multiple_of(2)
            );
            len += line.len() + 1;
            lines.push(line);
            n += 1;
        }
        format!(
            r#"{{"id":"in_1","customer":"cus_9","lines":[{}]}}"#,
            lines.join(",")
        )
    };
    format!(
        r#"{{"eventType":"invoice.paid","eventId":"evt-1","channels":["eu"],"payload":{payload}}}"#
    )
    .into_bytes()
}

fn validation(budget: Duration) {
    for shape in ["string", "fields"] {
        for size in [1024usize, 65_536] {
            let body = message_body(size, shape);
            let mut sluice_parse = || {
                black_box(sluice::api::message_in::parse(black_box(&body)).is_ok());
            };
            let mut value_parse = || {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).is_ok());
            };
            let mut typed_parse = || {
                black_box(serde_json::from_slice::<SerdeMessageIn<'_>>(black_box(&body)).is_ok());
            };
            let sluice_ns = time_per_call(budget, 10_000_000, &mut sluice_parse);
            let value_ns = time_per_call(budget, 10_000_000, &mut value_parse);
            let typed_ns = time_per_call(budget, 10_000_000, &mut typed_parse);
            let sluice_allocations = allocations_per_call(1_000, &mut sluice_parse);
            println!(
                "validate {:>6} B body ({shape:<6}): sluice (simd-json) {sluice_ns:>8.0} ns, {sluice_allocations:.0} allocations; \
                 serde_json Value {value_ns:>8.0} ns ({:.2}x); serde_json typed, raw payload {typed_ns:>8.0} ns ({:.2}x)",
                body.len(),
                value_ns / sluice_ns,
                typed_ns / sluice_ns
            );
        }
    }
}

fn endpoint(key: u64, app_key: u64, event_types: Option<Vec<String>>) -> EndpointRecord {
    EndpointRecord {
        key,
        app_key,
        id: format!("ep_{key}"),
        uid: None,
        url: "https://example.com/hook".to_owned(),
        description: String::new(),
        version: 1,
        disabled: false,
        throttle_rate: None,
        event_types,
        channels: None,
        secret: vec![0; 24],
        old_secrets: Vec::new(),
        headers: BTreeMap::new(),
        metadata: BTreeMap::new(),
        created_ms: 0,
        updated_ms: 0,
        fifo: false,
        failing_since_ms: None,
        disabled_reason: None,
        disabled_at_ms: None,
        signing: Signing::Hmac,
        sealed: false,
        polling_only: false,
    }
}

fn matching(budget: Duration) {
    // Each endpoint filters on one event type; a message's type is named by `per_app / types`
    // endpoints of its application.
    let cases: [(&str, u64, u64, u64); 3] = [
        (
            "10,000 endpoints (100 in its app, 10 match)",
            10_000,
            100,
            10,
        ),
        (
            "100,000 endpoints in one app (100 match)",
            100_000,
            100_000,
            1_000,
        ),
        (
            "100,000 endpoints across 10,000 apps (1 match)",
            100_000,
            10,
            10,
        ),
    ];
    for (name, endpoints, per_app, types) in cases {
        let heap_before = LIVE_BYTES.load(Ordering::Relaxed);
        let mut index = EndpointIndex::default();
        // Records made one at a time: only the index stays on the heap.
        for key in 0..endpoints {
            let types = Some(vec![format!("type.{}", key % types)]);
            index.upsert(&endpoint(key, key / per_app, types));
        }
        let heap = LIVE_BYTES
            .load(Ordering::Relaxed)
            .saturating_sub(heap_before);
        let app = black_box(endpoints / per_app / 2);
        let mut find = || {
            black_box(index.matching(app, black_box("type.3"), None).len());
        };
        let ns = time_per_call(budget, 10_000_000, &mut find);
        let allocations = allocations_per_call(1_000, &mut find);
        let matched = index.matching(app, "type.3", None).len();
        println!(
            "match a message among {name}: {ns:.0} ns, {allocations:.0} allocations, {matched} matched; \
             index heap {:.1} MiB = {:.0} B per endpoint",
            heap as f64 / (1 << 20) as f64,
            heap as f64 / endpoints as f64
        );
    }
}

/// Durable appends: 1 writer at a time (one fsync each) against 64 concurrent writers
/// (group commit), on a temporary data directory.
fn group_commit() {
    std::fs::create_dir_all("target/bench-data").expect("dir");
    let dir = tempfile::tempdir_in("target/bench-data").expect("tempdir");
    let mut config = sluice::config::Config::embedded_default();
    config.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (log, writer) = Log::open(
        dir.path(),
        &config.storage,
        None,
        None,
        sluice::log::Upgrade::Refuse,
    )
    .expect("log");
    let app = Op::CreateApp {
        id: "app_bench".to_owned(),
        fields: AppFields {
            name: "bench".to_owned(),
            ..AppFields::default()
        },
        get_if_exists: false,
    };
    let app_key = match runtime
        .block_on(log.submit(Envelope::new(app, Clock::System.now_ms())))
        .expect("app")
    {
        Outcome::App { app, .. } => app.key,
        other => panic!("no application: {other:?}"),
    };
    for concurrency in [1usize, 64] {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let appended = runtime.block_on(append_for(
            &log,
            app_key,
            concurrency,
            Duration::from_secs(2),
        ));
        let allocations = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / appended as f64;
        println!(
            "durable append, {concurrency:>2} concurrent writers: {:.0} messages/s, \
             {allocations:.1} allocations per message (caller, writer and runtime)",
            appended as f64 / 2.0
        );
    }
    drop(log);
    writer.wait();
}

async fn append_for(log: &Log, app_key: u64, concurrency: usize, duration: Duration) -> usize {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while Instant::now() < deadline && done < 1_000_000 {
                    let op = Op::CreateMessage {
                        app: MessageApp::Existing(app_key),
                        message: Box::new(NewMessage {
                            id: format!("msg_bench_{c}_{done}"),
                            event_type: "bench".to_owned(),
                            event_id: None,
                            channels: None,
                            payload: vec![b'x'; 1024],
                            retention_days: 90,
                            tags: None,
                            deliver_at_ms: None,
                        }),
                        with_content: false,
                    };
                    log.submit(Envelope::new(op, Clock::System.now_ms()))
                        .await
                        .expect("append");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("writer");
    }
    total
}
