//! The `retention` scenario: ingest while retention deletes an old log. The harness writes
//! `--messages` messages dated two days ago straight into a fresh data directory (through
//! the log's own ops, with their time given, as the writer would have applied them), in
//! one application with `--endpoints` disabled endpoints. Each endpoint filters on one
//! event type so that a message matches `MATCHED_PER_MESSAGE` of them, as in the
//! `endpoints` scenario: each old message has a (skipped) delivery row per matched
//! endpoint, as a real log has, and the application has more endpoints than that. It then starts Sluice on that
//! directory with `storage.retention_days = 1`: the sweeper finds every old message
//! expired and deletes them in its bounded batches while `--clients` post new messages to
//! another application. Once a second the harness samples the messages accepted and the
//! messages deleted (`sluice_retention_messages_deleted_total`). It reports the ingest rate
//! while the sweep runs against the rate after it (the same process, the same log size
//! within a few percent), and the sweep's own rate.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice::clock::Clock;
use sluice::log::ops::{
    AppFields, EndpointFields, Envelope, EventTypeFields, MessageApp, NewMessage, Op, Outcome,
};
use sluice::log::{Log, Upgrade};

use super::endpoints::MATCHED_PER_MESSAGE;
use super::{RUNS, Sluice, Subject, chart, create_app, http_get, on_clients, post_while};

/// How old the written messages are: past the shortest retention (one day).
const OLD_BY_MS: u64 = 2 * 86_400_000;
/// Concurrent appends while the old log is written (group commit fills the batches).
const FILL_WRITERS: usize = 64;
/// The longest the load may run: the sweep, then `--secs` more.
const RUN_TIME_MAX: Duration = Duration::from_secs(1_800);
/// How often the run is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Most old messages one run writes, whatever `--messages` asks.
const OLD_MESSAGES_MAX: usize = 20_000_000;
/// Most endpoints the old application has: Sluice's own bound per application.
const OLD_ENDPOINTS_MAX: usize = sluice::limits::ENDPOINTS_PER_APP_MAX as usize;

/// One sample: seconds into the load, messages accepted and old messages deleted so far.
#[derive(Clone, Copy)]
struct Sample {
    at_s: f64,
    accepted: usize,
    deleted: usize,
}

/// What the run asks for.
pub(super) struct Shape {
    pub old_messages: usize,
    pub endpoints: usize,
    pub payload: usize,
    pub clients: usize,
    pub secs: u64,
}

/// Runs the scenario; prints the rates; writes JSON and SVG into `out` if given. Returns
/// false if it could not run (a `--target`, or the sweep did not finish in time).
pub(super) async fn retention(subject: &Subject, shape: &Shape, out: Option<&Path>) -> bool {
    if subject.target.is_some() {
        eprintln!("the retention scenario writes its own data directory: it cannot use --target");
        return false;
    }
    let old = shape.old_messages.min(OLD_MESSAGES_MAX);
    let endpoints = shape.endpoints.min(OLD_ENDPOINTS_MAX);
    let run_number = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sluice-bench-{}-{run_number}", std::process::id()));
    let fill_started = Instant::now();
    write_old_log(&dir.join("data"), old, endpoints, shape.payload).await;
    println!(
        "retention: wrote {old} messages two days old ({endpoints} disabled endpoints) in {:.1}s",
        fill_started.elapsed().as_secs_f64()
    );

    let config = format!(
        "[storage]\nmap_size_bytes = 68719476736\nretention_days = 1\n\
         [api]\nendpoints_per_app_max = {OLD_ENDPOINTS_MAX}\n"
    );
    let mut child = Sluice::spawn(&subject.binary, &dir, &config, true);
    let addr = child.addr;
    let app = format!("bench-{}-{run_number}", std::process::id());
    drop(create_app(addr, &app).await);
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + RUN_TIME_MAX;
    let after_sweep = Duration::from_secs(shape.secs.max(1));
    let sampler = tokio::spawn(sample_until_swept(
        addr,
        old,
        after_sweep,
        deadline,
        Arc::clone(&accepted),
        Arc::clone(&stop),
    ));
    let path = format!("/api/v1/app/{app}/msg?with_content=false");
    let go = {
        let stop = Arc::clone(&stop);
        Arc::new(move || !stop.load(Ordering::Relaxed) && Instant::now() < deadline)
    };
    let (clients, payload) = (shape.clients, shape.payload);
    post_while(
        addr,
        clients,
        &path,
        "bench.retention",
        payload,
        &accepted,
        go,
    )
    .await;
    let samples = sampler.await.unwrap_or_default();
    child.stop();
    let _ = std::fs::remove_dir_all(&dir);
    report(&samples, old, endpoints, out)
}

/// Samples the run once a second until `after_sweep` past the sample that saw all `old`
/// messages deleted (or `deadline`), then tells the clients to `stop`.
async fn sample_until_swept(
    addr: std::net::SocketAddr,
    old: usize,
    after_sweep: Duration,
    deadline: Instant,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut swept_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    while Instant::now() < deadline {
        tick.tick().await;
        let deleted = deleted_so_far(&http_get(addr, "/metrics").await);
        samples.push(Sample {
            at_s: started.elapsed().as_secs_f64(),
            accepted: accepted.load(Ordering::Relaxed),
            deleted,
        });
        if deleted >= old && swept_at.is_none() {
            swept_at = Some(Instant::now());
        }
        if swept_at.is_some_and(|at| at.elapsed() >= after_sweep) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    samples
}

/// Writes `old` messages dated `OLD_BY_MS` ago into a new log at `data_dir`, in an
/// application with `endpoints` disabled endpoints, each filtering on one of
/// `endpoints / MATCHED_PER_MESSAGE` event types (each message gets a skipped delivery
/// row per matched endpoint, which retention deletes with it).
async fn write_old_log(data_dir: &Path, old: usize, endpoints: usize, payload: usize) {
    let types = endpoints.div_ceil(MATCHED_PER_MESSAGE).max(1);
    let mut config = sluice::config::Config::embedded_default();
    config.storage.map_size_bytes = 1 << 36;
    let storage = config.storage.clone();
    let path = data_dir.to_path_buf();
    let (log, writer) = tokio::task::spawn_blocking(move || {
        Log::open(&path, &storage, None, None, Upgrade::Migrate)
    })
    .await
    .expect("open task")
    .expect("open the log");
    let then_ms = Clock::System.now_ms() - OLD_BY_MS;
    let app_key = create_old_app(&log, then_ms, endpoints, types).await;
    let next = Arc::new(AtomicUsize::new(0));
    let pad = "x".repeat(payload.saturating_sub(48).max(1));
    on_clients(FILL_WRITERS, |_| {
        let (log, next, pad) = (log.clone(), Arc::clone(&next), pad.clone());
        async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= old {
                    break;
                }
                let op = Op::CreateMessage {
                    app: MessageApp::Existing(app_key),
                    message: Box::new(NewMessage {
                        id: format!("msg_retention_old_{n}"),
                        event_type: format!("bench.old.{}", n % types),
                        event_id: None,
                        channels: None,
                        payload: format!(r#"{{"n":{n},"pad":"{pad}"}}"#).into_bytes(),
                        retention_days: 90,
                        tags: None,
                        deliver_at_ms: None,
                    }),
                    with_content: false,
                };
                // Dated as if written two days ago, a millisecond apart per thousand.
                let at_ms = then_ms + (n / 1_000) as u64;
                match log.submit(Envelope::new(op, at_ms)).await {
                    Ok(Outcome::Message { .. }) => {}
                    other => panic!("old message {n} not appended: {other:?}"),
                }
            }
        }
    })
    .await;
    drop(log);
    tokio::task::spawn_blocking(move || writer.wait())
        .await
        .expect("writer task");
}

/// Creates the old application dated `then_ms`: `types` event types and `endpoints`
/// disabled endpoints, endpoint e filtering on type `e % types`. Returns its key.
async fn create_old_app(log: &Log, then_ms: u64, endpoints: usize, types: usize) -> u64 {
    let bound = Op::SetEndpointsPerAppMax {
        max: sluice::limits::ENDPOINTS_PER_APP_MAX,
    };
    log.submit(Envelope::new(bound, then_ms))
        .await
        .expect("raise the endpoint bound");
    let create_app = Op::CreateApp {
        id: "app_retention_old".to_owned(),
        fields: AppFields {
            name: "retention-old".to_owned(),
            ..AppFields::default()
        },
        get_if_exists: false,
    };
    let app_key = match log.submit(Envelope::new(create_app, then_ms)).await {
        Ok(Outcome::App { app, .. }) => app.key,
        other => panic!("no application: {other:?}"),
    };
    for t in 0..types {
        let op = Op::CreateEventType {
            name: format!("bench.old.{t}"),
            fields: EventTypeFields::default(),
        };
        match log.submit(Envelope::new(op, then_ms)).await {
            Ok(Outcome::EventType { created: true, .. }) => {}
            other => panic!("event type {t} not created: {other:?}"),
        }
    }
    for e in 0..endpoints {
        let op = Op::CreateEndpoint {
            app_key,
            id: format!("ep_retention_old_{e}"),
            fields: Box::new(EndpointFields {
                uid: None,
                url: format!("https://example.invalid/hook/{e}"),
                description: String::new(),
                version: 1,
                disabled: true,
                throttle_rate: None,
                event_types: Some(vec![format!("bench.old.{}", e % types)]),
                channels: None,
                secret: vec![7; 32],
                headers: Default::default(),
                metadata: Default::default(),
                fifo: false,
                signing: Default::default(),
                sealed: false,
                polling_only: false,
            }),
        };
        match log.submit(Envelope::new(op, then_ms)).await {
            Ok(Outcome::Endpoint { created: true, .. }) => {}
            other => panic!("endpoint {e} not created: {other:?}"),
        }
    }
    app_key
}

/// `sluice_retention_messages_deleted_total` in a `/metrics` text (0 if absent).
fn deleted_so_far(metrics: &str) -> usize {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_retention_messages_deleted_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as usize)
}

/// Accepted per second between two samples.
fn rate(a: &Sample, b: &Sample, f: fn(&Sample) -> usize) -> f64 {
    (f(b) - f(a)) as f64 / (b.at_s - a.at_s).max(1e-9)
}

/// Prints the ingest rate during and after the sweep and the sweep's rate; writes the run.
fn report(samples: &[Sample], old: usize, endpoints: usize, out: Option<&Path>) -> bool {
    let Some(done) = samples.iter().position(|s| s.deleted >= old) else {
        println!(
            "retention REFUSED: the sweep deleted {} of {old} in the run's time",
            samples.last().map_or(0, |s| s.deleted)
        );
        return false;
    };
    // During: from the first sample to the one where the sweep was done. After: the rest.
    let first = Sample {
        at_s: 0.0,
        accepted: 0,
        deleted: 0,
    };
    let during = rate(&first, &samples[done], |s| s.accepted);
    let sweep = rate(&first, &samples[done], |s| s.deleted);
    let after = samples
        .last()
        .filter(|_| done + 1 < samples.len())
        .map_or(f64::NAN, |last| rate(&samples[done], last, |s| s.accepted));
    println!(
        "retention of {old} messages x {endpoints} endpoints: swept in {:.1}s ({sweep:.0} deleted/s); \
         ingest during the sweep {during:.0}/s, after it {after:.0}/s ({:.2} of after)",
        samples[done].at_s,
        during / after
    );
    if let Some(dir) = out {
        write(dir, samples);
    }
    true
}

/// Writes the run as `retention.json` and `retention.svg` into `dir`.
fn write(dir: &Path, samples: &[Sample]) {
    let per_second = |f: fn(&Sample) -> usize| -> Vec<(f64, f64)> {
        samples
            .windows(2)
            .map(|w| (w[1].at_s, rate(&w[0], &w[1], f)))
            .collect()
    };
    let (accepted, deleted) = (per_second(|s| s.accepted), per_second(|s| s.deleted));
    let panels = [chart::Panel {
        title: "ingest while retention deletes the old log",
        unit: "messages per second",
        lines: vec![
            chart::Line {
                name: "accepted",
                points: &accepted,
            },
            chart::Line {
                name: "deleted",
                points: &deleted,
            },
        ],
    }];
    let json = serde_json::json!({
        "name": "retention",
        "samples": samples
            .iter()
            .map(|s| serde_json::json!({"at_s": s.at_s, "accepted": s.accepted, "deleted": s.deleted}))
            .collect::<Vec<_>>(),
        "series": {"accepted_per_s": accepted, "deleted_per_s": deleted},
    });
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| {
            std::fs::write(
                dir.join("retention.json"),
                serde_json::to_vec_pretty(&json).unwrap_or_default(),
            )
        })
        .and_then(|()| std::fs::write(dir.join("retention.svg"), chart::svg("retention", &panels)));
    if let Err(error) = written {
        eprintln!("--out {}: {error}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deleted_count_is_read_from_the_metrics_text() {
        let metrics = "# TYPE sluice_retention_messages_deleted_total counter\n\
                       sluice_retention_messages_deleted_total 1234\n\
                       sluice_retention_payloads_dropped_total 5\n";
        assert_eq!(deleted_so_far(metrics), 1234);
        assert_eq!(deleted_so_far("other 1\n"), 0);
    }
}
