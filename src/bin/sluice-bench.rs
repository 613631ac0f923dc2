//! `sluice-bench`: the load harness. It runs the real `sluice` binary as a child process on
//! a fresh data directory, starts receivers on loopback (verifying every signature with
//! ring, counting duplicates), drives the API with keep-alive clients at full speed or a
//! fixed rate, and reports accepted and delivered messages per second, end-to-end latency
//! (acceptance to arrival) percentiles, attempt-duration percentiles (from `/metrics`),
//! and Sluice's CPU seconds and peak RSS (from `/proc`). In the same run it measures a
//! minimal hyper responder's request rate on this machine and prints every rate as a
//! ratio to it. It refuses to report a throughput if any accepted message was not
//! delivered or any signature failed. Every loop is bounded in count and time.
//!
//! ```sh
//! cargo build --release && target/release/sluice-bench --scenario all
//! ```
//!
//! `--scenario cluster` (not part of `all`) starts three nats-servers (`--nats-server`, or
//! `SLUICE_NATS_SERVER`) and three Sluice nodes in cluster mode on this machine, loads
//! them round-robin and reports the whole cluster's accepted and delivered rates with
//! node A's publish latency (op to the stream's acknowledgement).

#![expect(clippy::print_stdout, reason = "the report is the program's output")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "bench/chart.rs"]
mod chart;
#[path = "bench/endpoints.rs"]
mod endpoints;
#[path = "bench/growth.rs"]
mod growth;
#[path = "bench/portal.rs"]
mod portal;
#[path = "bench/retention.rs"]
mod retention;
#[path = "bench/rounds.rs"]
mod rounds;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// The same allocator as Sluice, so that neither side of a ratio pays glibc malloc alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The admin token of a Sluice the harness starts.
const TOKEN: &str = "bench-token-0123456789abcdef-0123456789";
/// The token the clients present: `TOKEN`, or `--token` with `--target`.
static TOKEN_IN_USE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn token() -> &'static str {
    TOKEN_IN_USE.get().map_or(TOKEN, String::as_str)
}

/// `--idempotency-keys`: every message POST carries a key of its own, as the Svix SDKs
/// send one (`auto_` and a UUID) on every POST.
static IDEMPOTENCY_KEYS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The number in the next `--idempotency-keys` key (unique within the run).
static NEXT_IDEMPOTENCY_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const KEY: [u8; 24] = [7; 24];
/// Most requests one client makes, whatever the duration.
const REQUESTS_PER_CLIENT_MAX: usize = 2_000_000;
/// How long the harness waits for deliveries to catch up after the load.
const DRAIN_TIME_MAX: Duration = Duration::from_secs(120);
/// The scenarios that run their own Sluice their own way (`scenarios_of_their_own`),
/// once per invocation whatever `--rounds` says.
const SCENARIOS_OF_THEIR_OWN: [&str; 6] = [
    "retries",
    "idle",
    "growth",
    "portal",
    "endpoints",
    "retention",
];
/// Most rounds one invocation runs (`--rounds`).
const ROUNDS_MAX: usize = 50;
/// Numbers the runs of this process (their data directories).
static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[derive(Parser)]
#[command(name = "sluice-bench", about = "Load harness for Sluice")]
struct Args {
    /// raw, ingest, deliver, fanout, ingest-source, isolation, latency, payloads, mix,
    /// retries, idle, or all; growth (it writes `--messages`), portal (100,000 messages,
    /// then every portal page), endpoints (`--endpoints` in `--apps` applications: memory
    /// per endpoint, match time, fan-out), retention (ingest while the sweep deletes
    /// `--messages` old messages with `--endpoints` endpoints) and cluster (three
    /// nats-servers and three Sluice nodes on this machine) are not in `all`. With
    /// `--rate 500`, deliver gives the CPU per message at a fixed rate.
    /// Several, separated by commas, run in that order (`ingest,deliver,fanout`).
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Runs the scenarios this many times (at most `ROUNDS_MAX`), measuring the raw
    /// responder again before each round, then prints each run's mean and range of
    /// ratios over the rounds. Those that run their own way (growth, idle, retries, …)
    /// run once.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// A second sluice binary: each round runs every scenario with `--sluice` and with
    /// this one, alternating which goes first, and the summary adds this one's mean over
    /// the first's.
    #[arg(long)]
    versus: Option<PathBuf>,
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Payload bytes of each message (the deliver and fan-out scenarios).
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// The sluice binary (default: next to this one).
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// `delivery.endpoint_in_flight_max` for the runs (Sluice's default is 16).
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// A fixed total rate of messages per second for every scenario (default: full speed,
    /// except the latency scenario's 2,000/s).
    #[arg(long)]
    rate: Option<u64>,
    /// The receivers' behaviour mix of the `mix` scenario, in percent of its endpoints:
    /// fast (200 at once), slow (200 after `--slow-ms`), fail (`--fail-status`), close
    /// (the connection is closed without an answer), hang (never answers).
    #[arg(long, default_value = "fast=70,slow=10,fail=10,close=5,hang=5")]
    mix: String,
    /// Endpoints of the `mix` scenario (each message goes to all of them), and of the
    /// `endpoints` scenario (each message goes to 10 of its application's).
    #[arg(long, default_value_t = 100)]
    endpoints: usize,
    /// Applications the `endpoints` scenario spreads its endpoints over.
    #[arg(long, default_value_t = 1)]
    apps: usize,
    /// How long a slow receiver waits before it answers, ms.
    #[arg(long, default_value_t = 50)]
    slow_ms: u64,
    /// The status a failing receiver answers.
    #[arg(long, default_value_t = 500)]
    fail_status: u16,
    /// A Sluice already running at this address, instead of starting one per run. It
    /// must allow deliveries to loopback (`--allow-http --allow-network 127.0.0.0/8`);
    /// each run creates its own application. The retries scenario needs its own process
    /// and is skipped.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// The token for `--target` (an organisation token).
    #[arg(long, default_value = TOKEN)]
    token: String,
    /// The process id of the `--target` Sluice, for its CPU and memory figures.
    #[arg(long)]
    pid: Option<u32>,
    /// Messages the `growth` scenario accepts before it stops (at most an hour), and the
    /// old messages the `retention` scenario writes for its sweep.
    #[arg(long, default_value_t = 10_000_000)]
    messages: usize,
    /// Messages the `portal` scenario fills its application with.
    #[arg(long, default_value_t = 100_000)]
    portal_messages: usize,
    /// Endpoints of the `portal` scenario's application: each message goes to all of
    /// them, and the endpoints page counts each one's day of deliveries.
    #[arg(long, default_value_t = 1)]
    portal_endpoints: usize,
    /// Every message POST carries an `idempotency-key` of its own, as the official Svix
    /// SDKs send on every POST: the cost of the remembered replies.
    #[arg(long)]
    idempotency_keys: bool,
    /// Also write each run as JSON and as an SVG chart (accepted and delivered per second,
    /// end-to-end latency, resident memory, over the run) into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The nats-server (2.10 or newer) of the cluster scenario (default:
    /// `SLUICE_NATS_SERVER`, else `nats-server` on the PATH).
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// The cluster scenario: kill -9 the op stream's leader (a nats-server) halfway through
    /// the load, and report the longest gap between two acceptances (the ingest stall).
    #[arg(long)]
    kill_leader: bool,
    /// Internal: serve the minimal responder in this process, print `addr=`, and exit when
    /// standard input closes (the harness runs itself this way for the raw rate).
    #[arg(long, hide = true)]
    serve_raw: bool,
}

/// A message id in a fixed-size key (`msg_` and 27 characters), so that recording an
/// arrival or an acceptance allocates nothing.
type MsgKey = [u8; 32];

fn msg_key(id: &str) -> MsgKey {
    let mut key = [0u8; 32];
    let len = id.len().min(key.len());
    key[..len].copy_from_slice(&id.as_bytes()[..len]);
    key
}

/// The `"id"` of a message-create reply, found without parsing the whole reply: the
/// load generator's own cost is part of what a run measures.
fn message_id(reply: &[u8]) -> Option<&str> {
    let start = memchr::memmem::find(reply, br#""id":"msg_"#)? + r#""id":""#.len();
    let len = memchr::memchr(b'"', &reply[start..])?;
    std::str::from_utf8(&reply[start..start + len]).ok()
}

/// What the receivers saw.
#[derive(Default)]
struct Seen {
    /// First arrival of each (message id, endpoint number from `/hook/{n}`).
    first: HashMap<(MsgKey, u32), Instant>,
    duplicates: usize,
    bad_signatures: usize,
    /// Attempts answered with the failing status, and connections closed unanswered.
    failed: usize,
    closed: usize,
}

/// One scenario's figures.
struct Report {
    name: String,
    accepted: usize,
    accepted_per_s: f64,
    delivered_per_s: Option<f64>,
    latency_ms: Option<[f64; 3]>,
    attempt_ms: Option<[f64; 2]>,
    /// Log commits, and operations per commit (group commit's batch size).
    commits: Option<(f64, f64)>,
    cpu_s: f64,
    peak_rss_mib: f64,
    refused: Option<String>,
    /// How the run went second by second.
    series: Series,
}

impl Report {
    /// Sluice's CPU per accepted message, ms.
    fn cpu_ms_per_message(&self) -> f64 {
        self.cpu_s * 1e3 / self.accepted.max(1) as f64
    }
}

/// A run over time: per-second buckets from the start of the load, and memory samples.
#[derive(Default)]
struct Series {
    /// (second, messages accepted in it).
    accepted: Vec<(f64, f64)>,
    /// (second, first arrivals in it).
    delivered: Vec<(f64, f64)>,
    /// (second of acceptance, end-to-end ms) percentiles of the messages accepted in it.
    latency_p50: Vec<(f64, f64)>,
    latency_p99: Vec<(f64, f64)>,
    /// (second, MiB) resident, and of it anonymous (heap), sampled.
    rss: Vec<(f64, f64)>,
    rss_anon: Vec<(f64, f64)>,
}

/// How often the memory of the Sluice under test is sampled, and at most how many times.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
const RSS_SAMPLES_MAX: usize = 100_000;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.serve_raw {
        serve_raw_until_stdin_closes();
        return ExitCode::SUCCESS;
    }
    let _ = TOKEN_IN_USE.set(args.token.clone());
    IDEMPOTENCY_KEYS.store(args.idempotency_keys, std::sync::atomic::Ordering::Relaxed);
    let sluice = args.sluice.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("exe")
            .with_file_name("sluice")
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let raw = runtime.block_on(measure_machine(&args));
    let names: Vec<&str> = args
        .scenario
        .split(',')
        .flat_map(|name| match name.trim() {
            "all" => vec![
                "idle",
                "retries",
                "ingest",
                "deliver",
                "fanout",
                "ingest-source",
                "isolation",
                "latency",
                "payloads",
                "mix",
            ],
            "raw" => vec![],
            one => vec![one],
        })
        .collect();
    let subject = Subject {
        binary: sluice.clone(),
        target: args.target,
        pid: args.pid,
        in_flight: args.in_flight,
    };
    let versus = args.versus.clone().map(|binary| Subject {
        binary,
        ..subject.clone()
    });
    let mut refused = runtime.block_on(scenarios_of_their_own(&args, &names, &subject));
    refused |= rounds_of_scenarios(&runtime, &args, &names, raw, &subject, versus.as_ref());
    if refused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs the scenarios that share the harness's way (all but those of
/// `scenarios_of_their_own`) for `--rounds`, each round with a fresh raw rate (`raw` is the
/// first round's) and with both builds if `versus` is given; prints every run, then the
/// summary over the rounds. Returns whether any run refused its figures.
fn rounds_of_scenarios(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    names: &[&str],
    mut raw: f64,
    subject: &Subject,
    versus: Option<&Subject>,
) -> bool {
    let mut refused = false;
    let round_count = args.rounds.clamp(1, ROUNDS_MAX);
    let mut samples = Vec::new();
    for round in 0..round_count {
        if round > 0 {
            raw = runtime.block_on(measure_machine(args));
        }
        if round_count > 1 {
            println!("round {} of {round_count}", round + 1);
        }
        for &name in names.iter().filter(|n| !SCENARIOS_OF_THEIR_OWN.contains(n)) {
            for &build in rounds::order(round, versus.is_some()) {
                let (subject, tag) = match (build, versus) {
                    (rounds::Build::Second, Some(second)) => (second, " (versus)"),
                    _ => (subject, ""),
                };
                for mut report in runtime.block_on(scenario(name, args, subject)) {
                    refused |= report.refused.is_some();
                    if report.refused.is_none() {
                        samples.push(rounds::Sample {
                            run: report.name.clone(),
                            build,
                            accepted_of_raw: report.accepted_per_s / raw,
                            delivered_of_raw: report.delivered_per_s.map(|d| d / raw),
                            cpu_ms_per_message: report.cpu_ms_per_message(),
                        });
                    }
                    report.name.push_str(tag);
                    print_report(&report, raw);
                    if let Some(dir) = &args.out {
                        if round_count > 1 {
                            report.name.push_str(&format!(" round {}", round + 1));
                        }
                        write_run(dir, &report, raw);
                    }
                }
            }
        }
    }
    if round_count > 1 || versus.is_some() {
        println!("summary of {round_count} rounds (ratios to each round's raw rate)");
        for line in rounds::render(&rounds::summarise(&samples)) {
            println!("{line}");
        }
    }
    refused
}

/// The scenarios of `SCENARIOS_OF_THEIR_OWN` among `names`; returns whether any refused
/// its figures.
async fn scenarios_of_their_own(args: &Args, names: &[&str], subject: &Subject) -> bool {
    let asked = |name: &str| names.contains(&name);
    let mut refused = false;
    if asked("growth") {
        let (messages, payload) = (args.messages, args.payload);
        let out = args.out.as_deref();
        refused |= !growth::growth(subject, messages, payload, args.clients, out).await;
    }
    if asked("endpoints") {
        let shape = endpoints::Shape {
            endpoints: args.endpoints,
            apps: args.apps,
            clients: args.clients,
            secs: args.secs,
            in_flight: args.in_flight,
            payload: args.payload,
        };
        refused |= !endpoints::endpoints(subject, &shape).await;
    }
    if asked("retention") {
        let shape = retention::Shape {
            old_messages: args.messages,
            endpoints: args.endpoints,
            payload: args.payload,
            clients: args.clients,
            secs: args.secs,
        };
        refused |= !retention::retention(subject, &shape, args.out.as_deref()).await;
    }
    if asked("portal") {
        let shape = portal::Shape {
            messages: args.portal_messages,
            endpoints: args.portal_endpoints,
        };
        refused |= !portal::portal(subject, args.clients, shape).await;
    }
    if asked("idle") {
        match (args.target, args.pid) {
            (Some(_), None) => eprintln!("the idle scenario needs --pid with --target"),
            _ => idle(subject, Duration::from_secs(args.secs)).await,
        }
    }
    if args.target.is_some() && asked("retries") {
        eprintln!("the retries scenario restarts Sluice: it cannot run against --target");
    } else if args.target.is_none() && asked("retries") {
        refused |= !retries(&subject.binary, args.clients).await;
    }
    refused
}

/// Prints the machine's line (the raw responder's rate in a child process and in this
/// runtime, the disk's fsync rate) and returns the raw rate, every ratio's base.
async fn measure_machine(args: &Args) -> f64 {
    let raw_secs = Duration::from_secs(args.secs.min(5));
    let raw = raw_rate_child(args.clients, raw_secs).await;
    let raw_in_process = raw_rate_in_process(args.clients, raw_secs).await;
    let fsyncs = fsyncs_per_second(&std::env::temp_dir(), Duration::from_secs(2));
    println!(
        "machine: {} CPUs; minimal hyper responder, {} clients: {raw:.0} req/s in its own \
         process (the ratios' base), {raw_in_process:.0} req/s inside the harness's runtime; \
         disk: {fsyncs:.0} fsyncs/s (4 KiB append + fdatasync where the runs keep their data)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.clients
    );
    raw
}

fn print_report(r: &Report, raw: f64) {
    if let Some(why) = &r.refused {
        println!("{:<22} REFUSED: {why}", r.name);
        return;
    }
    let mut line = format!(
        "{:<22} accepted {:>8.0}/s ({:.2} of raw)",
        r.name,
        r.accepted_per_s,
        r.accepted_per_s / raw
    );
    if let Some(d) = r.delivered_per_s {
        line.push_str(&format!("  delivered {d:>8.0}/s ({:.2} of raw)", d / raw));
    }
    if let Some([p50, p99, p999]) = r.latency_ms {
        line.push_str(&format!(
            "  e2e ms p50 {p50:.1} p99 {p99:.1} p99.9 {p999:.1}"
        ));
    }
    if let Some([p50, p99]) = r.attempt_ms {
        line.push_str(&format!("  attempt ms p50<={p50} p99<={p99}"));
    }
    if let Some((commits, per_commit)) = r.commits {
        line.push_str(&format!(
            "  commits {commits:.0} ({per_commit:.1} ops each)"
        ));
    }
    let cpu_ms_per_message = r.cpu_ms_per_message();
    line.push_str(&format!(
        "  n={} cpu {:.1}s ({cpu_ms_per_message:.3} ms/msg) peak-rss {:.0}MiB",
        r.accepted, r.cpu_s, r.peak_rss_mib
    ));
    println!("{line}");
}

/// How much CPU Sluice uses doing nothing: one application with one endpoint, no load,
/// measured over `duration` after a second to settle. Prints the share of one core.
async fn idle(subject: &Subject, duration: Duration) {
    let run_number = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sluice-bench-{}-{run_number}", std::process::id()));
    let app = format!("bench-{}-{run_number}", std::process::id());
    let mut child = match subject.target {
        Some(addr) => Sluice::running(addr, subject.pid),
        None => Sluice::spawn(&subject.binary, &dir, "", true),
    };
    let mut sender = create_app(child.addr, &app).await;
    let secret = format!("whsec_{}", BASE64.encode(KEY));
    let body = format!(r#"{{"url":"http://127.0.0.1:9/idle","secret":"{secret}"}}"#);
    create_endpoint(&mut sender, child.addr, &app, body).await;
    drop(sender);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = child.usage().0;
    tokio::time::sleep(duration).await;
    let used = child.usage().0 - before;
    child.stop();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{:<22} cpu {used:.2}s in {:.0}s = {:.2} % of one core",
        "idle",
        duration.as_secs_f64(),
        used / duration.as_secs_f64() * 100.0
    );
}

/// Writes `report` as `<dir>/<label>.json` and `<dir>/<label>.svg`.
fn write_run(dir: &Path, report: &Report, raw: f64) {
    let slug = slug(&report.name);
    let json = run_json(report, raw);
    let series = &report.series;
    let panels = [
        chart::Panel {
            title: "throughput",
            unit: "messages per second",
            lines: vec![
                chart::Line {
                    name: "accepted",
                    points: &series.accepted,
                },
                chart::Line {
                    name: "delivered",
                    points: &series.delivered,
                },
            ],
        },
        chart::Panel {
            title: "end-to-end latency by second of acceptance",
            unit: "ms",
            lines: vec![
                chart::Line {
                    name: "p50",
                    points: &series.latency_p50,
                },
                chart::Line {
                    name: "p99",
                    points: &series.latency_p99,
                },
            ],
        },
        chart::Panel {
            title: "Sluice's resident memory",
            unit: "MiB",
            lines: vec![
                chart::Line {
                    name: "resident",
                    points: &series.rss,
                },
                chart::Line {
                    name: "anonymous (heap)",
                    points: &series.rss_anon,
                },
            ],
        },
    ];
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| {
            std::fs::write(
                dir.join(format!("{slug}.json")),
                serde_json::to_vec_pretty(&json).unwrap_or_default(),
            )
        })
        .and_then(|()| {
            std::fs::write(
                dir.join(format!("{slug}.svg")),
                chart::svg(&report.name, &panels),
            )
        });
    if let Err(error) = written {
        eprintln!("--out {}: {error}", dir.display());
    }
}

/// A run's label as a file name: lower-case letters and digits between single dashes.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// A run's figures and series as JSON.
fn run_json(report: &Report, raw: f64) -> serde_json::Value {
    let series = &report.series;
    serde_json::json!({
        "name": report.name,
        "raw_responder_per_s": raw,
        "accepted": report.accepted,
        "accepted_per_s": report.accepted_per_s,
        "accepted_ratio_to_raw": report.accepted_per_s / raw,
        "delivered_per_s": report.delivered_per_s,
        "delivered_ratio_to_raw": report.delivered_per_s.map(|d| d / raw),
        "latency_ms": report.latency_ms.map(|[p50, p99, p999]| serde_json::json!({"p50": p50, "p99": p99, "p99.9": p999})),
        "attempt_ms_at_most": report.attempt_ms.map(|[p50, p99]| serde_json::json!({"p50": p50, "p99": p99})),
        "commits": report.commits.map(|(commits, per)| serde_json::json!({"commits": commits, "ops_per_commit": per})),
        "cpu_s": report.cpu_s,
        "cpu_ms_per_message": report.cpu_ms_per_message(),
        "peak_rss_mib": report.peak_rss_mib,
        "refused": report.refused,
        "series": {
            "accepted_per_s": series.accepted,
            "delivered_per_s": series.delivered,
            "latency_p50_ms": series.latency_p50,
            "latency_p99_ms": series.latency_p99,
            "rss_mib": series.rss,
            "rss_anon_mib": series.rss_anon,
        },
    })
}

/// Counts `times` (offsets from the start) per whole second; the last second, which the
/// run ended inside, is left out (a partial count would read as a fall).
fn per_second(times: impl Iterator<Item = Duration>) -> Vec<(f64, f64)> {
    let mut buckets: Vec<f64> = Vec::new();
    for at in times {
        let second = usize::try_from(at.as_secs())
            .unwrap_or(usize::MAX)
            .min(86_400);
        if buckets.len() <= second {
            buckets.resize(second + 1, 0.0);
        }
        buckets[second] += 1.0;
    }
    buckets.pop();
    buckets
        .into_iter()
        .enumerate()
        .map(|(second, count)| (second as f64 + 0.5, count))
        .collect()
}

/// The run's per-second series from what was accepted and what arrived.
fn series_of(seen: &Seen, accepted: &HashMap<MsgKey, Instant>, started: Instant) -> Series {
    let since = |at: &Instant| at.saturating_duration_since(started);
    let mut by_second: Vec<Vec<f64>> = Vec::new();
    for ((id, _), arrived) in &seen.first {
        if let Some(acked) = accepted.get(id) {
            let second = usize::try_from(since(acked).as_secs())
                .unwrap_or(0)
                .min(86_400);
            if by_second.len() <= second {
                by_second.resize_with(second + 1, Vec::new);
            }
            by_second[second].push(arrived.saturating_duration_since(*acked).as_secs_f64() * 1e3);
        }
    }
    let (mut latency_p50, mut latency_p99) = (Vec::new(), Vec::new());
    for (second, latencies) in by_second.iter_mut().enumerate() {
        if latencies.is_empty() {
            continue;
        }
        latencies.sort_by(f64::total_cmp);
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        latency_p50.push((second as f64 + 0.5, pct(0.5)));
        latency_p99.push((second as f64 + 0.5, pct(0.99)));
    }
    Series {
        accepted: per_second(accepted.values().map(since)),
        delivered: per_second(seen.first.values().map(since)),
        latency_p50,
        latency_p99,
        rss: Vec::new(),
        rss_anon: Vec::new(),
    }
}

/// Samples the resident memory of `sluice` every `RSS_SAMPLE_INTERVAL` until `stop` fires;
/// returns (second, resident MiB, anonymous MiB) samples.
async fn sample_memory(
    pid: Option<u32>,
    started: Instant,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<(f64, f64, f64)> {
    let mut samples = Vec::new();
    let Some(pid) = pid else { return samples };
    let mut tick = tokio::time::interval(RSS_SAMPLE_INTERVAL);
    while samples.len() < RSS_SAMPLES_MAX {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let [total, anon, _] = resident_mib_of(pid);
                samples.push((started.elapsed().as_secs_f64(), total, anon));
            }
        }
    }
    samples
}

/// Runs one named scenario (some run several variants).
async fn scenario(name: &str, args: &Args, subject: &Subject) -> Vec<Report> {
    if name == "cluster" {
        return vec![cluster::run(args, subject).await];
    }
    let base = Plan {
        endpoints: 1,
        slow: 0,
        failing: 0,
        closing: 0,
        hanging: 0,
        fanout: 1,
        via_source: false,
        payload: args.payload,
        clients: args.clients,
        secs: Duration::from_secs(args.secs),
        rate: args.rate,
    };
    let runs = if name == "mix" {
        match parse_mix(&args.mix, args.endpoints) {
            Ok(mix) => vec![(
                format!("mix {} of {}", args.mix, args.endpoints),
                Plan {
                    payload: base.payload,
                    clients: base.clients,
                    secs: base.secs,
                    rate: base.rate,
                    ..mix
                },
            )],
            Err(error) => {
                eprintln!("--mix: {error}");
                Vec::new()
            }
        }
    } else {
        plans(name, base)
    };
    let mut reports = Vec::new();
    for (label, plan) in runs {
        let receivers = Receivers {
            plan,
            slow: Duration::from_millis(args.slow_ms),
            fail_status: args.fail_status,
        };
        reports.push(run(subject, &label, receivers).await);
    }
    reports
}

/// The runs of a scenario, labelled.
fn plans(name: &str, base: Plan) -> Vec<(String, Plan)> {
    match name {
        "ingest" => vec![(
            "ingest".into(),
            Plan {
                endpoints: 0,
                payload: 1024,
                ..base
            },
        )],
        "deliver" => vec![("deliver 1 endpoint".into(), base)],
        // The same one-endpoint delivery, but every message arrives as a GitHub-signed
        // request on a source's receive route: verification and the source's own
        // bookkeeping are what this adds to `deliver`.
        "ingest-source" => vec![(
            "ingest-source 1 dest".into(),
            Plan {
                via_source: true,
                ..base
            },
        )],
        "fanout" => vec![(
            "fanout 1000 eps x10".into(),
            Plan {
                endpoints: 1000,
                fanout: 10,
                ..base
            },
        )],
        "isolation" => vec![
            // The same 90 healthy endpoints without and with 10 hanging ones, so that both
            // runs do the same healthy work per message.
            (
                "90 healthy eps".into(),
                Plan {
                    endpoints: 90,
                    fanout: 100,
                    payload: 256,
                    ..base
                },
            ),
            (
                "90 healthy + 10 hung".into(),
                Plan {
                    endpoints: 90,
                    hanging: 10,
                    fanout: 100,
                    payload: 256,
                    ..base
                },
            ),
        ],
        "latency" => vec![(
            "deliver at 2000/s".into(),
            Plan {
                payload: 1024,
                clients: 16,
                rate: Some(2_000),
                ..base
            },
        )],
        "payloads" => [256, 4096, 65_536]
            .into_iter()
            .map(|payload| (format!("deliver {payload} B"), Plan { payload, ..base }))
            .collect(),
        other => {
            eprintln!("unknown scenario {other}");
            Vec::new()
        }
    }
}

/// One run: endpoints (some hanging), how many endpoints each message reaches, load.
#[derive(Clone, Copy)]
struct Plan {
    /// Fast endpoints: the verifying receiver answers 200 at once. They come first, then
    /// slow, failing, closing and hanging ones, in that order of endpoint number.
    endpoints: usize,
    /// Answer 200 after `Receivers::slow`.
    slow: usize,
    /// Answer `Receivers::fail_status`.
    failing: usize,
    /// Close the connection without an answer.
    closing: usize,
    /// Never answer (a listener that accepts and holds the connection).
    hanging: usize,
    fanout: usize,
    /// Messages arrive as signed requests on an incoming source's receive route, which
    /// feeds one destination (endpoint 0), instead of as message creates.
    via_source: bool,
    payload: usize,
    clients: usize,
    secs: Duration,
    rate: Option<u64>,
}

impl Plan {
    /// Channel groups: with more endpoints than one message reaches, endpoint `i` listens
    /// on channel `c{i % groups}` and each message picks one channel.
    fn groups(self) -> usize {
        (self.total() / self.fanout.max(1)).max(1)
    }

    fn total(self) -> usize {
        self.endpoints + self.slow + self.failing + self.closing + self.hanging
    }

    /// Deliveries one message makes to endpoints that answer 2xx (with channel groups,
    /// every endpoint is a fast one).
    fn healthy_per_message(self) -> usize {
        if self.groups() == 1 {
            self.endpoints + self.slow
        } else {
            self.fanout
        }
    }

    /// How endpoint `i` answers.
    fn behaviour(self, i: usize) -> Behaviour {
        let bounds = [
            (self.endpoints, Behaviour::Fast),
            (self.slow, Behaviour::Slow),
            (self.failing, Behaviour::Fail),
            (self.closing, Behaviour::Close),
        ];
        let mut end = 0;
        for (count, behaviour) in bounds {
            end += count;
            if i < end {
                return behaviour;
            }
        }
        Behaviour::Hang
    }
}

/// How a receiver answers one endpoint's deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Fast,
    Slow,
    Fail,
    Close,
    Hang,
}

/// What the verifying receiver needs to know about the endpoints of a run.
#[derive(Clone, Copy)]
struct Receivers {
    plan: Plan,
    slow: Duration,
    fail_status: u16,
}

/// Parses `fast=70,slow=10,...` into counts of `total` endpoints (the remainder of the
/// rounding goes to fast).
fn parse_mix(text: &str, total: usize) -> Result<Plan, String> {
    let mut percent = HashMap::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or(format!("{part}: want name=percent"))?;
        let value: usize = value
            .parse()
            .map_err(|_| format!("{part}: not a whole percent"))?;
        if !["fast", "slow", "fail", "close", "hang"].contains(&name) {
            return Err(format!("{name}: not one of fast, slow, fail, close, hang"));
        }
        percent.insert(name.to_owned(), value);
    }
    if percent.values().sum::<usize>() != 100 {
        return Err("the percentages must add up to 100".to_owned());
    }
    let count = |name: &str| total * percent.get(name).copied().unwrap_or(0) / 100;
    let (slow, failing, closing, hanging) =
        (count("slow"), count("fail"), count("close"), count("hang"));
    Ok(Plan {
        endpoints: total - slow - failing - closing - hanging,
        slow,
        failing,
        closing,
        hanging,
        fanout: total,
        via_source: false,
        payload: 1024,
        clients: 64,
        secs: Duration::from_secs(10),
        rate: None,
    })
}

/// What a run measures: a Sluice binary to start per run, or a running one.
#[derive(Clone)]
struct Subject {
    binary: PathBuf,
    target: Option<SocketAddr>,
    pid: Option<u32>,
    in_flight: usize,
}

async fn run(subject: &Subject, name: &str, receivers: Receivers) -> Report {
    let plan = receivers.plan;
    let run_number = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sluice-bench-{}-{run_number}", std::process::id()));
    // Its own application, so that runs against one `--target` do not meet.
    let app = format!("bench-{}-{run_number}", std::process::id());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = start_sink(Arc::clone(&seen), receivers).await;
    let hung = start_hanging_sink().await;
    let mut child = match subject.target {
        Some(addr) => Sluice::running(addr, subject.pid),
        None => {
            // The per-source rate limit is off: the ingest-source scenario measures the
            // receive route, not its limiter. (Only there: builds from before sources
            // would refuse the key.)
            let sources = if plan.via_source {
                "[api]\nsource_rate_per_second = 0\n"
            } else {
                ""
            };
            let config = format!(
                "{sources}[delivery]\nendpoint_in_flight_max = {}\n",
                subject.in_flight
            );
            Sluice::spawn(&subject.binary, &dir, &config, true)
        }
    };
    let addr = child.addr;
    let path = setup(addr, &app, sink, hung, plan).await;
    let started = Instant::now();
    let cpu_before = child.usage().0;
    let (stop_sampling, sampling) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(sample_memory(child.pid, started, sampling));
    let accepted = load(addr, &path, plan).await;
    let ingest = started.elapsed();
    let expected = accepted.len() * plan.healthy_per_message();
    let deadline = Instant::now() + DRAIN_TIME_MAX;
    while seen.lock().expect("lock").first.len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = http_get(addr, "/metrics").await;
    let _ = stop_sampling.send(());
    let memory = sampler.await.unwrap_or_default();
    let (cpu_after, peak_rss_mib) = child.usage();
    // The load and the drain only: start-up and set-up are not the messages' cost.
    let cpu_s = cpu_after - cpu_before;
    child.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let seen = seen.lock().expect("lock");
    let report = Report {
        name: name.to_owned(),
        accepted: accepted.len(),
        accepted_per_s: accepted.len() as f64 / ingest.as_secs_f64(),
        delivered_per_s: None,
        latency_ms: None,
        attempt_ms: histogram_percentiles(&metrics, "sluice_delivery_attempt_duration_seconds"),
        commits: commit_batches(&metrics),
        cpu_s,
        peak_rss_mib,
        refused: None,
        series: Series {
            rss: memory.iter().map(|&(t, total, _)| (t, total)).collect(),
            rss_anon: memory.iter().map(|&(t, _, anon)| (t, anon)).collect(),
            ..series_of(&seen, &accepted, started)
        },
    };
    deliveries(report, &seen, &accepted, expected, started)
}

/// Adds the delivery figures to `report`, or refuses them if anything is missing or any
/// signature failed.
fn deliveries(
    mut report: Report,
    seen: &Seen,
    accepted: &HashMap<MsgKey, Instant>,
    expected: usize,
    started: Instant,
) -> Report {
    if expected == 0 {
        return report;
    }
    // Only arrivals of accepted messages count: anything else cannot stand in for one.
    let arrived = seen
        .first
        .keys()
        .filter(|(id, _)| accepted.contains_key(id))
        .count();
    let missing = expected.saturating_sub(arrived);
    if missing > 0 || seen.bad_signatures > 0 {
        report.refused = Some(format!(
            "{missing} deliveries missing, {} bad signatures",
            seen.bad_signatures
        ));
        return report;
    }
    let last = seen.first.values().max().copied().unwrap_or(started);
    report.delivered_per_s =
        Some(seen.first.len() as f64 / last.duration_since(started).as_secs_f64());
    let mut latencies: Vec<f64> = seen
        .first
        .iter()
        .filter_map(|((id, _), at)| {
            accepted
                .get(id)
                .map(|acked| at.saturating_duration_since(*acked).as_secs_f64() * 1e3)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    report.latency_ms = Some([pct(0.5), pct(0.99), pct(0.999)]);
    if seen.duplicates > 0 {
        report
            .name
            .push_str(&format!(" ({} duplicates)", seen.duplicates));
    }
    if seen.failed + seen.closed > 0 {
        report.name.push_str(&format!(
            " [failing answered {}, connections closed {}]",
            seen.failed, seen.closed
        ));
    }
    report
}

/// (total, anonymous, file-backed) resident MiB of process `pid` now, from /proc.
fn resident_mib_of(pid: u32) -> [f64; 3] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    ["VmRSS:", "RssAnon:", "RssFile:"].map(|field| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    })
}

/// The Sluice child process.
struct Sluice {
    /// The process this harness started, if it started one.
    child: Option<Child>,
    /// Its process id, or `--pid` for a `--target`.
    pid: Option<u32>,
    addr: SocketAddr,
}

impl Sluice {
    /// Starts Sluice on `dir` with `config` (TOML) and returns once it logs that it is
    /// serving. `loopback` lets it deliver to the harness's receivers; without it the
    /// destination policy refuses loopback URLs.
    fn spawn(binary: &Path, dir: &Path, config: &str, loopback: bool) -> Sluice {
        std::fs::create_dir_all(dir).expect("dir");
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config).expect("config");
        let mut command = Command::new(binary);
        command.args(["serve", "--listen", "127.0.0.1:0", "--allow-http"]);
        if loopback {
            command.args(["--allow-network", "127.0.0.0/8"]);
        }
        let mut child = command
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("SLUICE_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); build it with cargo build --release",
                    binary.display()
                )
            });
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("sluice exited before serving")
                .expect("stderr");
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .expect("addr")
                    .parse()
                    .expect("address");
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Sluice {
            pid: Some(child.id()),
            child: Some(child),
            addr,
        }
    }

    /// A Sluice this harness did not start (`--target`).
    fn running(addr: SocketAddr, pid: Option<u32>) -> Sluice {
        Sluice {
            child: None,
            pid,
            addr,
        }
    }

    /// (CPU seconds, peak RSS MiB) so far, from /proc.
    fn usage(&self) -> (f64, f64) {
        let Some(pid) = self.pid else {
            return (f64::NAN, f64::NAN);
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name: utime and stime are the 12th and 13th.
        let after = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let cpu_s = (ticks(11) + ticks(12)) / 100.0; // USER_HZ is 100 on Linux
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        (cpu_s, hwm_kib / 1024.0)
    }

    /// (total, anonymous, file-backed) resident MiB now, from /proc.
    fn resident_mib(&self) -> [f64; 3] {
        self.pid.map_or([f64::NAN; 3], resident_mib_of)
    }

    /// Stops the process this harness started (a `--target` keeps running).
    fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

/// Messages of the retries scenario, each fanned out to `RETRY_ENDPOINTS` endpoints.
const RETRY_MESSAGES: usize = 100_000;
const RETRY_ENDPOINTS: usize = 10;
/// How long the retries scenario waits for every first attempt to be recorded.
const RETRY_SETTLE_TIME_MAX: Duration = Duration::from_secs(900);

/// One million pending retries: every delivery's first attempt is refused by the
/// destination policy (a loopback URL without an allow-list) and its retry waits an hour.
/// Reports resident memory with them all pending, the time a restart on the same data
/// takes to serve, and checks that every retry is still pending after it. `false` if any
/// was lost.
async fn retries(sluice: &Path, clients: usize) -> bool {
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}-retries", std::process::id()));
    let config = "[delivery]\nretry_schedule_ms = [3600000]\n";
    let mut first = Sluice::spawn(sluice, &dir, config, false);
    let addr = first.addr;
    let mut sender = create_app(addr, "bench").await;
    for n in 0..RETRY_ENDPOINTS {
        let body = format!(r#"{{"url":"http://127.0.0.1:9/hook/{n}","uid":"e{n}"}}"#);
        create_endpoint(&mut sender, addr, "bench", body).await;
    }
    let started = Instant::now();
    let accepted = ingest_numbered(addr, clients, RETRY_MESSAGES).await;
    let ingested = started.elapsed();
    let wanted = (accepted * RETRY_ENDPOINTS) as u64;
    let pending = pending_retries(addr, wanted).await;
    let settled = started.elapsed();
    let loaded = first.resident_mib();
    first.stop();
    let restarted_at = Instant::now();
    let mut second = Sluice::spawn(sluice, &dir, config, false);
    let ready = restarted_at.elapsed();
    // Memory once the shards have made a few scans, and before the check below reads
    // every delivery row (which maps the whole log into the process).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = second.resident_mib();
    let kept = pending_retries(second.addr, wanted).await;
    second.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let [total, anon, file] = loaded;
    println!(
        "retries                {accepted} messages x {RETRY_ENDPOINTS} endpoints accepted in {:.1} s; \
         {pending} retries pending after {:.1} s (first attempts {:.0}/s)",
        ingested.as_secs_f64(),
        settled.as_secs_f64(),
        pending as f64 / settled.as_secs_f64()
    );
    println!(
        "                       with them pending: RSS {total:.0} MiB (heap {anon:.0}, mapped log pages {file:.0}); \
         restart serving in {:.0} ms with {kept} still pending, RSS 2 s after it {:.0} MiB (heap {:.0})",
        ready.as_secs_f64() * 1e3,
        restarted[0],
        restarted[1]
    );
    if pending < wanted || kept < wanted {
        println!(
            "retries                REFUSED: {wanted} wanted pending, {pending} before and {kept} after the restart"
        );
        return false;
    }
    true
}

/// `clients` keep-alive clients post `total` small numbered messages; how many were accepted.
async fn ingest_numbered(addr: SocketAddr, clients: usize, total: usize) -> usize {
    let accepted = on_clients(clients, |client| async move {
        let mut sender = connect(addr).await;
        let mut accepted = 0;
        for n in (client..total).step_by(clients) {
            let body = format!(r#"{{"eventType":"bench.retry","payload":{{"n":{n}}}}}"#);
            let path = "/api/v1/app/bench/msg";
            let (status, _) = post(&mut sender, addr, path, body.into_bytes()).await;
            accepted += usize::from(status == 202);
        }
        accepted
    });
    accepted.await.into_iter().sum()
}

/// Polls the endpoints' stats once a second until `wanted` deliveries have made their
/// first attempt and wait for their retry (`sending`), or the time is up; how many do.
async fn pending_retries(addr: SocketAddr, wanted: u64) -> u64 {
    let deadline = Instant::now() + RETRY_SETTLE_TIME_MAX;
    loop {
        let mut sending = 0;
        for n in 0..RETRY_ENDPOINTS {
            let stats = http_get(addr, &format!("/api/v1/app/bench/endpoint/e{n}/stats")).await;
            let stats: serde_json::Value = serde_json::from_str(&stats).unwrap_or_default();
            sending += stats["sending"].as_u64().unwrap_or(0);
        }
        if sending >= wanted || Instant::now() > deadline {
            return sending;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Creates application `app` (its uid); returns the connection, for its endpoints.
async fn create_app(addr: SocketAddr, app: &str) -> Sender {
    let mut sender = connect(addr).await;
    let body = format!(r#"{{"name":"bench","uid":"{app}"}}"#);
    let (status, _) = post(&mut sender, addr, "/api/v1/app", body.into_bytes()).await;
    assert_eq!(status, 201, "app");
    sender
}

async fn create_endpoint(sender: &mut Sender, addr: SocketAddr, app: &str, body: String) {
    let path = format!("/api/v1/app/{app}/endpoint");
    let (status, _) = post(sender, addr, &path, body.into_bytes()).await;
    assert_eq!(status, 201, "endpoint");
}

/// Runs `client(0..clients)` as concurrent tasks and collects what each returns.
async fn on_clients<T, F>(clients: usize, client: impl Fn(usize) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..clients).map(|c| tokio::spawn(client(c))).collect();
    let mut results = Vec::with_capacity(clients);
    for task in tasks {
        results.push(task.await.expect("client"));
    }
    results
}

/// `clients` keep-alive clients post messages of about `payload` bytes, of event type
/// `event_type`, to `path` while `go()` holds, counting the accepted (202) in `accepted`.
async fn post_while(
    addr: SocketAddr,
    clients: usize,
    path: &str,
    event_type: &'static str,
    payload: usize,
    accepted: &Arc<std::sync::atomic::AtomicUsize>,
    go: Arc<dyn Fn() -> bool + Send + Sync>,
) {
    let pad = "x".repeat(payload.saturating_sub(48).max(1));
    on_clients(clients, |c| {
        let (accepted, path, pad, go) = (
            Arc::clone(accepted),
            path.to_owned(),
            pad.clone(),
            Arc::clone(&go),
        );
        async move {
            let mut sender = connect(addr).await;
            let mut n = 0u64;
            while go() {
                let body = format!(
                    r#"{{"eventType":"{event_type}","payload":{{"c":{c},"n":{n},"pad":"{pad}"}}}}"#
                );
                n += 1;
                let (status, _) = post(&mut sender, addr, &path, body.into_bytes()).await;
                if status == 202 {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    })
    .await;
}

/// Creates the application and its endpoints: endpoint i listens on channel `c{i % g}`
/// where `g` groups make each message (on one channel) reach `fanout` endpoints. Returns
/// the path the load posts to: the application's message create, or (`via_source`) the
/// receive route of a GitHub source whose one destination is endpoint 0.
async fn setup(
    addr: SocketAddr,
    app: &str,
    sink: SocketAddr,
    hung: SocketAddr,
    plan: Plan,
) -> String {
    if plan.via_source {
        return setup_source(addr, sink).await;
    }
    let mut sender = create_app(addr, app).await;
    let groups = plan.groups();
    let secret = format!("whsec_{}", BASE64.encode(KEY));
    for i in 0..plan.total() {
        let target = if plan.behaviour(i) == Behaviour::Hang {
            hung
        } else {
            sink
        };
        let channels = if groups > 1 {
            format!(r#","channels":["c{}"]"#, i % groups)
        } else {
            String::new()
        };
        let body = format!(r#"{{"url":"http://{target}/hook/{i}","secret":"{secret}"{channels}}}"#);
        create_endpoint(&mut sender, addr, app, body).await;
    }
    format!("/api/v1/app/{app}/msg?with_content=false")
}

/// The secret incoming requests of the `ingest-source` scenario are signed with.
const SOURCE_SECRET: &str = "bench-source-secret";

/// Creates a GitHub source with one destination (the verifying receiver's endpoint 0)
/// and returns the path of its receive route.
async fn setup_source(addr: SocketAddr, sink: SocketAddr) -> String {
    let mut sender = connect(addr).await;
    let body =
        format!(r#"{{"name":"bench","type":"github","config":{{"secret":"{SOURCE_SECRET}"}}}}"#);
    let (status, reply) = post(
        &mut sender,
        addr,
        "/ingest/api/v1/source",
        body.into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "source");
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("source reply");
    let (id, url) = (
        reply["id"].as_str().expect("source id"),
        reply["ingestUrl"].as_str().expect("ingestUrl"),
    );
    let path = url[url.find("/ingest/in/").expect("receive path")..].to_owned();
    let secret = format!("whsec_{}", BASE64.encode(KEY));
    let body = format!(r#"{{"url":"http://{sink}/hook/0","secret":"{secret}"}}"#);
    let (status, _) = post(
        &mut sender,
        addr,
        &format!("/ingest/api/v1/source/{id}/endpoint"),
        body.into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "destination");
    path
}

/// GitHub's `X-Hub-Signature-256` value for `body`.
fn github_signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    let tag = ring::hmac::sign(key, body);
    let mut value = String::with_capacity(7 + 64);
    value.push_str("sha256=");
    for byte in tag.as_ref() {
        value.push_str(&format!("{byte:02x}"));
    }
    value
}

/// K clients post messages until the time is up (or at a fixed total rate); returns the
/// acceptance time of each accepted message id.
async fn load(addr: SocketAddr, path: &str, plan: Plan) -> HashMap<MsgKey, Instant> {
    let path = path.to_owned();
    let source_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SOURCE_SECRET.as_bytes());
    let groups = plan.groups();
    let pad = "x".repeat(plan.payload.saturating_sub(48).max(1));
    let deadline = Instant::now() + plan.secs;
    let accepted = on_clients(plan.clients, |c| {
        let (pad, path, source_key) = (pad.clone(), path.clone(), source_key.clone());
        async move {
            let mut sender = connect(addr).await;
            let mut accepted = Vec::new();
            let mut tick = plan.rate.map(|rate| {
                let per_client = (rate as f64 / plan.clients as f64).max(0.001);
                tokio::time::interval(Duration::from_secs_f64(1.0 / per_client))
            });
            for n in 0..REQUESTS_PER_CLIENT_MAX {
                if Instant::now() >= deadline {
                    break;
                }
                if let Some(tick) = tick.as_mut() {
                    tick.tick().await;
                }
                let channels = if groups > 1 {
                    format!(r#","channels":["c{}"]"#, (c + n) % groups)
                } else {
                    String::new()
                };
                let (status, bytes) = if plan.via_source {
                    let body = format!(r#"{{"c":{c},"n":{n},"pad":"{pad}"}}"#).into_bytes();
                    let signature = github_signature(&source_key, &body);
                    let header = ("x-hub-signature-256", signature.as_str());
                    post_with(&mut sender, addr, &path, body, Some(header)).await
                } else {
                    let body = format!(
                        r#"{{"eventType":"bench.event","payload":{{"c":{c},"n":{n},"pad":"{pad}"}}{channels}}}"#
                    );
                    post(&mut sender, addr, &path, body.into_bytes()).await
                };
                // A message create answers 202; a source's receive route 200.
                if status != 202 && status != 200 {
                    continue;
                }
                if let Some(id) = message_id(&bytes) {
                    accepted.push((msg_key(id), Instant::now()));
                }
            }
            accepted
        }
    });
    accepted.await.into_iter().flatten().collect()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn post(sender: &mut Sender, addr: SocketAddr, path: &str, body: Vec<u8>) -> (u16, Bytes) {
    post_with(sender, addr, path, body, None).await
}

/// `post` with one more header (a source's signature).
async fn post_with(
    sender: &mut Sender,
    addr: SocketAddr,
    path: &str,
    body: Vec<u8>,
    extra: Option<(&str, &str)>,
) -> (u16, Bytes) {
    sender.ready().await.expect("ready");
    let mut req = hyper::Request::post(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {}", token()))
        .header("content-type", "application/json");
    if let Some((name, value)) = extra {
        req = req.header(name, value);
    }
    if path
        .split('?')
        .next()
        .is_some_and(|route| route.ends_with("/msg"))
        && IDEMPOTENCY_KEYS.load(std::sync::atomic::Ordering::Relaxed)
    {
        let n = NEXT_IDEMPOTENCY_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // As random as the SDKs' UUIDs: the key is hashed before it is stored.
        req = req.header(
            "idempotency-key",
            format!(
                "auto_{:032x}",
                u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            ),
        );
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().collect().await.expect("body").to_bytes(),
    )
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut sender = connect(addr).await;
    sender.ready().await.expect("ready");
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {}", token()))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    String::from_utf8_lossy(&resp.into_body().collect().await.expect("body").to_bytes())
        .into_owned()
}

/// How many log commits there were and their mean operations, from the batch histogram.
fn commit_batches(metrics: &str) -> Option<(f64, f64)> {
    let value = |name: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let commits = value("sluice_log_commit_operations_count")?;
    let operations = value("sluice_log_commit_operations_sum")?;
    (commits > 0.0).then(|| (commits, operations / commits))
}

/// p50 and p99 of a histogram in seconds, as its bucket upper bounds (ms).
fn histogram_percentiles(metrics: &str, name: &str) -> Option<[f64; 2]> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let at = |p: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= total * p)
            .map_or(f64::INFINITY, |(le, _)| le * 1000.0)
    };
    Some([at(0.5), at(0.99)])
}

/// A receiver whose endpoints all answer 200 at once (`plan` has only fast ones).
async fn start_fast_sink(seen: Arc<Mutex<Seen>>, plan: Plan) -> SocketAddr {
    let receivers = Receivers {
        plan,
        slow: Duration::ZERO,
        fail_status: 500,
    };
    start_sink(seen, receivers).await
}

/// The receiver: answers each endpoint as its behaviour says (fast, slow, failing, or
/// closing the connection), verifies every signature it reads with ring against the
/// endpoint key, and records the first arrival of each (message, endpoint) it accepted.
async fn start_sink(seen: Arc<Mutex<Seen>>, receivers: Receivers) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &KEY);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, key) = (Arc::clone(&seen), key.clone());
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (seen, key) = (Arc::clone(&seen), key.clone());
                    receive(req, seen, key, receivers)
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// One delivery at the receiver. An `Err` makes hyper close the connection unanswered.
async fn receive(
    req: hyper::Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Seen>>,
    key: ring::hmac::Key,
    receivers: Receivers,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
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
    let endpoint = req
        .uri()
        .path()
        .strip_prefix("/hook/")
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(u32::MAX);
    let behaviour = receivers.plan.behaviour(endpoint as usize);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", &body].concat();
    let valid = sig
        .strip_prefix("v1,")
        .and_then(|s| BASE64.decode(s).ok())
        .is_some_and(|tag| ring::hmac::verify(&key, &signed, &tag).is_ok());
    if behaviour == Behaviour::Slow {
        tokio::time::sleep(receivers.slow).await;
    }
    let mut seen = seen.lock().expect("lock");
    if !valid {
        seen.bad_signatures += 1;
    }
    match behaviour {
        Behaviour::Close => {
            seen.closed += 1;
            Err(std::io::Error::other(
                "the mix closes this endpoint's connections",
            ))
        }
        Behaviour::Fail => {
            seen.failed += 1;
            let mut response = hyper::Response::new(Full::new(Bytes::new()));
            *response.status_mut() = hyper::StatusCode::from_u16(receivers.fail_status)
                .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
            Ok(response)
        }
        Behaviour::Fast | Behaviour::Slow | Behaviour::Hang => {
            if seen
                .first
                .insert((msg_key(&id), endpoint), Instant::now())
                .is_some()
            {
                seen.duplicates += 1;
            }
            Ok(hyper::Response::new(Full::new(Bytes::new())))
        }
    }
}

/// A receiver that accepts and never answers.
async fn start_hanging_sink() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            if held.len() < 10_000 {
                held.push(stream);
            }
        }
    });
    addr
}

/// Most appends the disk probe makes, whatever the window.
const FSYNC_PROBES_MAX: u64 = 1_000_000;

/// 4 KiB appends, each followed by `fdatasync`, for `window`: the disk's durable-write
/// rate, the physical bound a design that synced every message would meet.
fn fsyncs_per_second(dir: &Path, window: Duration) -> f64 {
    use std::io::Write;
    let path = dir.join(format!("sluice-bench-{}-fsync-probe", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("probe file");
    let block = [0u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window && n < FSYNC_PROBES_MAX {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    rate
}

/// The minimal responder: reads each request's body and answers `{}`.
async fn serve_minimal(listener: tokio::net::TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let service =
            hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"{}"))))
            });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service),
        );
    }
}

/// The child side of `raw_rate_child`: a default multi-threaded runtime (as Sluice's),
/// serving until the parent closes our standard input.
fn serve_raw_until_stdin_closes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("addr={}", listener.local_addr().expect("addr"));
        tokio::spawn(serve_minimal(listener));
        let _ = tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
        })
        .await;
    });
}

/// The minimal responder's rate in its own process, as Sluice runs: the base of every
/// ratio, so that both sides pay the same cross-process costs.
async fn raw_rate_child(clients: usize, duration: Duration) -> f64 {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--serve-raw")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the raw responder");
    let stdout = child.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("the raw responder exited")
        .expect("stdout");
    let addr: SocketAddr = line
        .strip_prefix("addr=")
        .expect("addr= line")
        .parse()
        .expect("address");
    let rate = drive(addr, clients, duration).await;
    drop(child.stdin.take()); // The child exits when its input closes.
    let _ = child.wait();
    rate
}

/// The minimal responder's rate on this harness's own runtime (printed for reference).
async fn raw_rate_in_process(clients: usize, duration: Duration) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve_minimal(listener));
    let rate = drive(addr, clients, duration).await;
    server.abort();
    rate
}

/// `clients` keep-alive clients post 1 KiB bodies to `addr` for `duration`; requests/s.
async fn drive(addr: SocketAddr, clients: usize, duration: Duration) -> f64 {
    let body = vec![b'x'; 1024];
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let done = on_clients(clients, |_| {
        let body = body.clone();
        async move {
            let mut sender = connect(addr).await;
            let mut done = 0usize;
            while Instant::now() < deadline && done < REQUESTS_PER_CLIENT_MAX {
                post(&mut sender, addr, "/", body.clone()).await;
                done += 1;
            }
            done
        }
    });
    done.await.into_iter().sum::<usize>() as f64 / started.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            name: "t".to_owned(),
            accepted: 2,
            accepted_per_s: 1.0,
            delivered_per_s: None,
            latency_ms: None,
            attempt_ms: None,
            commits: None,
            cpu_s: 0.0,
            peak_rss_mib: 0.0,
            refused: None,
            series: Series::default(),
        }
    }

    #[test]
    fn the_series_count_each_second_and_take_latency_by_second_of_acceptance() {
        let started = Instant::now();
        let accepted: HashMap<MsgKey, Instant> = [
            ("msg_a", Duration::from_millis(100)),
            ("msg_b", Duration::from_millis(900)),
            ("msg_c", Duration::from_millis(1_500)),
            ("msg_d", Duration::from_millis(2_100)),
        ]
        .into_iter()
        .map(|(id, at)| (msg_key(id), started + at))
        .collect();
        let mut seen = Seen::default();
        for (id, at) in &accepted {
            seen.first.insert((*id, 0), *at + Duration::from_millis(10));
        }
        let series = series_of(&seen, &accepted, started);
        assert_eq!(series.accepted, [(0.5, 2.0), (1.5, 1.0)]);
        assert_eq!(series.delivered, [(0.5, 2.0), (1.5, 1.0)]);
        assert_eq!(series.latency_p50.len(), 3, "every second of acceptance");
        assert!(
            series
                .latency_p99
                .iter()
                .all(|&(_, ms)| (9.0..11.0).contains(&ms))
        );
    }

    /// Two accepted messages for one endpoint, both arrived once with good signatures.
    fn complete(started: Instant) -> (Seen, HashMap<MsgKey, Instant>) {
        let accepted: HashMap<MsgKey, Instant> = ["msg_a", "msg_b"]
            .into_iter()
            .map(|id| (msg_key(id), started))
            .collect();
        let mut seen = Seen::default();
        for id in accepted.keys() {
            seen.first
                .insert((*id, 0), started + Duration::from_millis(5));
        }
        (seen, accepted)
    }

    #[test]
    fn a_complete_run_reports_its_rates() {
        let started = Instant::now();
        let (seen, accepted) = complete(started);
        let r = deliveries(report(), &seen, &accepted, 2, started);
        assert!(r.refused.is_none());
        assert!(r.delivered_per_s.is_some_and(|rate| rate > 0.0));
        assert!(r.latency_ms.is_some());
    }

    #[test]
    fn a_missing_delivery_or_a_bad_signature_refuses_the_figures() {
        let started = Instant::now();
        let (mut seen, accepted) = complete(started);
        seen.first.remove(&(msg_key("msg_b"), 0));
        let r = deliveries(report(), &seen, &accepted, 2, started);
        assert!(
            r.refused
                .as_deref()
                .is_some_and(|why| why.contains("1 deliveries missing"))
        );
        assert!(r.delivered_per_s.is_none());

        // An arrival of a message that was never accepted cannot stand in for it.
        seen.first.insert((msg_key("msg_x"), 0), started);
        let r = deliveries(report(), &seen, &accepted, 2, started);
        assert!(r.refused.is_some());

        let (mut seen, accepted) = complete(started);
        seen.bad_signatures = 1;
        let r = deliveries(report(), &seen, &accepted, 2, started);
        assert!(
            r.refused
                .as_deref()
                .is_some_and(|why| why.contains("1 bad signatures"))
        );
        assert!(r.delivered_per_s.is_none());
    }

    #[test]
    fn the_mix_divides_endpoints_and_refuses_bad_specs() {
        let plan = parse_mix("fast=70,slow=10,fail=10,close=5,hang=5", 100).expect("mix");
        assert_eq!(
            (
                plan.endpoints,
                plan.slow,
                plan.failing,
                plan.closing,
                plan.hanging
            ),
            (70, 10, 10, 5, 5)
        );
        assert_eq!(plan.healthy_per_message(), 80);
        let at = |i| plan.behaviour(i);
        assert_eq!(
            [at(0), at(70), at(80), at(90), at(95), at(99)],
            [
                Behaviour::Fast,
                Behaviour::Slow,
                Behaviour::Fail,
                Behaviour::Close,
                Behaviour::Hang,
                Behaviour::Hang
            ]
        );
        assert!(parse_mix("fast=50", 10).is_err(), "must add up to 100");
        assert!(parse_mix("fast=90,slow=5,weird=5", 10).is_err());
        assert!(parse_mix("fast=x", 10).is_err());
    }

    #[test]
    fn the_message_id_is_found_in_a_reply() {
        let reply = br#"{"eventType":"e","payload":{},"id":"msg_2bCmYSXH7E3zZ3rV8b3KqXhQ1oF","timestamp":"t"}"#;
        assert_eq!(message_id(reply), Some("msg_2bCmYSXH7E3zZ3rV8b3KqXhQ1oF"));
        assert_eq!(message_id(br#"{"code":"x"}"#), None);
    }
}

/// The `cluster` scenario: three nats-servers (one JetStream cluster, an R3 op stream)
/// and three Sluice nodes on this machine, loaded round-robin; accepted and delivered
/// messages per second over the whole cluster, with the publish latency (op to the
/// stream's acknowledgement) of node A.
mod cluster {
    use super::*;

    /// Messages of a run are spread over this many endpoints (one per message, by
    /// channel), so that every delivery shard, and so every node, delivers.
    const ENDPOINTS: usize = 8;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    }

    /// The nats-servers; killed when dropped.
    struct Nats {
        children: Vec<Child>,
        urls: Vec<String>,
    }

    impl Drop for Nats {
        fn drop(&mut self) {
            for child in &mut self.children {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts three routed nats-servers under `dir` and waits until each is healthy and
    /// routed to the two others.
    async fn start_nats(binary: &Path, dir: &Path) -> Nats {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut nats = Nats {
            children: Vec::new(),
            urls: Vec::new(),
        };
        for (i, (client, route, http)) in ports.iter().enumerate() {
            let conf = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                 max_payload: 8MB\n\
                 jetstream {{\n  store_dir: \"{}\"\n}}\n\
                 cluster {{\n  name: sluice\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                dir.join(format!("n{i}")).display(),
                routes.join(", ")
            );
            let path = dir.join(format!("n{i}.conf"));
            std::fs::write(&path, conf).expect("nats config");
            let child = Command::new(binary)
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {} ({e})", binary.display()));
            nats.children.push(child);
            nats.urls.push(format!("nats://127.0.0.1:{client}"));
        }
        for (_, _, http) in &ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], *http));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let routed = try_get(addr, "/routez").await.is_some_and(|body| {
                    serde_json::from_str::<serde_json::Value>(&body)
                        .is_ok_and(|v| v["num_routes"].as_u64().unwrap_or(0) >= 2)
                });
                if routed && try_get(addr, "/healthz").await.is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "nats-server never became ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        nats
    }

    /// A GET that tolerates a server still starting; the body of a 200.
    async fn try_get(addr: SocketAddr, path: &str) -> Option<String> {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", addr.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        if resp.status() != 200 {
            return None;
        }
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned())
    }

    /// A node's applied sequence, from its health.
    async fn applied_seq(addr: SocketAddr) -> u64 {
        let health = http_get(addr, "/api/v1/health").await;
        serde_json::from_str::<serde_json::Value>(&health).unwrap_or_default()["cluster"]
            ["appliedSeq"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits (at most 30 s) until the node at `addr` has applied the stream up to `seq`.
    async fn wait_applied(addr: SocketAddr, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while applied_seq(addr).await < seq && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts Sluice nodes a, b and c on `nats`, each with its own data directory under
    /// `dir` and the same secrets key.
    fn start_nodes(subject: &Subject, dir: &Path, nats: &Nats) -> Vec<Sluice> {
        let key = dir.join("secrets.key");
        std::fs::write(&key, "5a".repeat(32)).expect("key");
        let urls: Vec<String> = nats.urls.iter().map(|u| format!("\"{u}\"")).collect();
        ["a", "b", "c"]
            .iter()
            .map(|id| {
                let config = format!(
                    "[storage]\nsecrets_key_file = \"{}\"\n\n\
                     [delivery]\nendpoint_in_flight_max = {}\n\n\
                     [cluster]\nnats_urls = [{}]\nnode_id = \"{id}\"\n",
                    key.display(),
                    subject.in_flight,
                    urls.join(", ")
                );
                Sluice::spawn(&subject.binary, &dir.join(id), &config, true)
            })
            .collect()
    }

    pub(super) async fn run(args: &Args, subject: &Subject) -> Report {
        let binary = args
            .nats_server
            .clone()
            .or_else(|| std::env::var_os("SLUICE_NATS_SERVER").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let dir = std::env::temp_dir().join(format!("sluice-bench-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut nats = start_nats(&binary, &dir).await;
        let mut nodes = start_nodes(subject, &dir, &nats);
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let plan = plan(args, addrs.len());
        let receivers = Receivers {
            plan,
            slow: Duration::from_millis(args.slow_ms),
            fail_status: args.fail_status,
        };
        let sink = start_sink(Arc::clone(&seen), receivers).await;
        let hung = start_hanging_sink().await;
        let app = format!("bench-cluster-{}", std::process::id());
        let path = setup(addrs[0], &app, sink, hung, plan).await;
        // The other nodes serve the app once they applied its ops.
        let set_up = applied_seq(addrs[0]).await;
        for &addr in &addrs[1..] {
            wait_applied(addr, set_up).await;
        }
        let started = Instant::now();
        let loads: Vec<_> = addrs
            .iter()
            .map(|&addr| {
                let path = path.clone();
                tokio::spawn(async move { load(addr, &path, plan).await })
            })
            .collect();
        let killed = if args.kill_leader {
            tokio::time::sleep(plan.secs / 2).await;
            Some(kill_leader(&mut nats).await)
        } else {
            None
        };
        let mut accepted = HashMap::new();
        for one in loads {
            accepted.extend(one.await.expect("load"));
        }
        let ingest = started.elapsed();
        let expected = accepted.len() * plan.healthy_per_message();
        let deadline = Instant::now() + DRAIN_TIME_MAX;
        while seen.lock().expect("lock").first.len() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let metrics = http_get(addrs[0], "/metrics").await;
        let usages: Vec<(f64, f64)> = nodes.iter().map(Sluice::usage).collect();
        for node in &mut nodes {
            node.stop();
        }
        drop(nats);
        let _ = std::fs::remove_dir_all(&dir);
        let seen = seen.lock().expect("lock");
        let mut report = report(&metrics, &usages, accepted.len(), ingest);
        if let Some(leader) = killed {
            report.name.push_str(&format!(
                " [killed leader n{leader}: longest ingest gap {:.0} ms]",
                longest_gap(&accepted).as_secs_f64() * 1e3
            ));
        }
        deliveries(report, &seen, &accepted, expected, started)
    }

    /// Kills (SIGKILL) the nats-server that leads the op stream; its number.
    async fn kill_leader(nats: &mut Nats) -> usize {
        let addrs: Vec<async_nats::ServerAddr> = nats
            .urls
            .iter()
            .map(|u| u.parse().expect("NATS URL"))
            .collect();
        let client = async_nats::connect(addrs).await.expect("connect to NATS");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("SLUICE_OPS").await.expect("the op stream");
        let info = stream.info().await.expect("stream info");
        let leader: usize = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.as_deref())
            .and_then(|name| name.trim_start_matches('n').parse().ok())
            .expect("the stream's leader");
        let _ = nats.children[leader].kill();
        leader
    }

    /// The longest time between two consecutive acceptances.
    fn longest_gap(accepted: &HashMap<MsgKey, Instant>) -> Duration {
        let mut times: Vec<Instant> = accepted.values().copied().collect();
        times.sort_unstable();
        times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default()
    }

    /// The run's figures before the deliveries are counted: CPU summed over the nodes,
    /// the largest node's peak RSS, and node A's publish and attempt latencies.
    fn report(metrics: &str, usages: &[(f64, f64)], accepted: usize, ingest: Duration) -> Report {
        let publish = histogram_percentiles(metrics, "sluice_cluster_publish_duration_seconds");
        let applied = histogram_percentiles(metrics, "sluice_cluster_publish_to_apply_seconds");
        Report {
            name: format!(
                "cluster 3 nodes, {ENDPOINTS} eps (publish ms p50<={} p99<={}, \
                 publish-to-apply ms p50<={} p99<={})",
                publish.map_or(f64::NAN, |p| p[0]),
                publish.map_or(f64::NAN, |p| p[1]),
                applied.map_or(f64::NAN, |p| p[0]),
                applied.map_or(f64::NAN, |p| p[1])
            ),
            accepted,
            accepted_per_s: accepted as f64 / ingest.as_secs_f64(),
            delivered_per_s: None,
            latency_ms: None,
            attempt_ms: histogram_percentiles(metrics, "sluice_delivery_attempt_duration_seconds"),
            commits: None,
            cpu_s: usages.iter().map(|u| u.0).sum(),
            peak_rss_mib: usages.iter().map(|u| u.1).fold(0.0, f64::max),
            refused: None,
            series: Series::default(),
        }
    }

    /// The load of one node: a third of the clients and of the rate; one endpoint per
    /// message, by channel.
    fn plan(args: &Args, nodes: usize) -> Plan {
        Plan {
            endpoints: ENDPOINTS,
            slow: 0,
            failing: 0,
            closing: 0,
            hanging: 0,
            fanout: 1,
            via_source: false,
            payload: args.payload,
            clients: (args.clients / nodes).max(1),
            secs: Duration::from_secs(args.secs),
            rate: args.rate.map(|r| r / nodes as u64),
        }
    }
}
