//! The `endpoints` scenario: what many endpoints cost. It creates `--endpoints` endpoints
//! in one application, or spread evenly over `--apps` applications, through the API
//! (`--clients` at once, bounded in time). Each endpoint filters on one event type, so
//! that a message matches `MATCHED_PER_MESSAGE` endpoints of its application. It reports
//! Sluice's resident and anonymous (heap) memory before and after the creates and the
//! difference per endpoint, how long the creates took, the writer's time to match a
//! message among the endpoints (`sluice_fanout_match_duration_seconds`: mean, and the
//! p50 and p99 bucket), and the fan-out rate to the matched endpoints while messages
//! arrive for `--secs`, every delivery verified as in the other scenarios.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;

use super::{
    BASE64, Behaviour, DRAIN_TIME_MAX, KEY, MsgKey, Plan, RUNS, Seen, Sluice, Subject, connect,
    deliveries, histogram_percentiles, http_get, message_id, msg_key, on_clients, post,
    start_fast_sink,
};

/// Endpoints of its application each message matches (its event type's endpoints).
pub(super) const MATCHED_PER_MESSAGE: usize = 10;
/// The longest the creates (event types, applications, endpoints) may take together.
const CREATE_TIME_MAX: Duration = Duration::from_secs(1_800);
/// Most endpoints one run creates, whatever `--endpoints` asks.
const ENDPOINTS_MAX: usize = 1_000_000;
/// The most endpoints Sluice lets one application have (`api.endpoints_per_app_max`).
const PER_APP_MAX: usize = sluice::limits::ENDPOINTS_PER_APP_MAX as usize;
/// Most messages one client posts in the load, whatever the duration.
const MESSAGES_PER_CLIENT_MAX: usize = 1_000_000;

/// What the run asks for: how many endpoints, over how many applications, with how many
/// clients, and how long the messages arrive.
pub(super) struct Shape {
    pub endpoints: usize,
    pub apps: usize,
    pub clients: usize,
    pub secs: u64,
    pub in_flight: usize,
    pub payload: usize,
}

/// Where the endpoints go: `total` over `apps` applications named `{prefix}-a{j}`,
/// `per_app` in each, filtering on one of `types` event types.
struct Layout {
    total: usize,
    apps: usize,
    per_app: usize,
    types: usize,
    prefix: String,
}

impl Layout {
    fn place(&self) -> String {
        if self.apps == 1 {
            "in one app".to_owned()
        } else {
            format!("across {} apps", self.apps)
        }
    }
}

/// Runs the scenario and prints its figures; returns false if it could not create every
/// endpoint in time or a delivery was missing or badly signed.
pub(super) async fn endpoints(subject: &Subject, shape: &Shape) -> bool {
    let total = shape.endpoints.clamp(1, ENDPOINTS_MAX);
    let apps = shape.apps.clamp(1, total);
    let per_app = total.div_ceil(apps);
    if per_app > PER_APP_MAX {
        eprintln!("--endpoints / --apps: at most {PER_APP_MAX} endpoints per application");
        return false;
    }
    let run_number = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sluice-bench-{}-{run_number}", std::process::id()));
    let layout = Layout {
        total,
        apps,
        per_app,
        // Event types per application: each names `MATCHED_PER_MESSAGE` of its endpoints.
        types: (per_app / MATCHED_PER_MESSAGE).max(1),
        prefix: format!("bench-{}-{run_number}", std::process::id()),
    };
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let plan = Plan {
        endpoints: total,
        slow: 0,
        failing: 0,
        closing: 0,
        hanging: 0,
        fanout: MATCHED_PER_MESSAGE,
        via_source: false,
        payload: shape.payload,
        clients: shape.clients,
        secs: Duration::from_secs(shape.secs),
        rate: None,
    };
    debug_assert_eq!(plan.behaviour(total - 1), Behaviour::Fast);
    let sink = start_fast_sink(Arc::clone(&seen), plan).await;
    let mut child = match subject.target {
        Some(addr) => Sluice::running(addr, subject.pid),
        None => {
            let config = format!(
                "[api]\nendpoints_per_app_max = {}\n[delivery]\nendpoint_in_flight_max = {}\n",
                per_app.max(1_000),
                shape.in_flight
            );
            Sluice::spawn(&subject.binary, &dir, &config, true)
        }
    };
    let complete = create(&child, shape.clients, &layout, sink).await;
    let delivered = complete && fan_out(&child, shape, &layout, &seen).await;
    child.stop();
    let _ = std::fs::remove_dir_all(&dir);
    delivered
}

/// Creates the event types, the applications and then (measured) the endpoints; prints
/// the time and the memory they took. Returns whether all were created in time.
async fn create(child: &Sluice, clients: usize, layout: &Layout, sink: SocketAddr) -> bool {
    let addr = child.addr;
    let deadline = Instant::now() + CREATE_TIME_MAX;
    let started = Instant::now();
    let made_types = create_all(addr, clients, layout.types, deadline, move |k| {
        (
            "/api/v1/event-type".to_owned(),
            format!(r#"{{"name":"bench.t{k}","description":"bench"}}"#),
        )
    })
    .await;
    let prefix = layout.prefix.clone();
    let made_apps = create_all(addr, clients, layout.apps, deadline, move |j| {
        (
            "/api/v1/app".to_owned(),
            format!(r#"{{"name":"bench","uid":"{prefix}-a{j}"}}"#),
        )
    })
    .await;
    let set_up = started.elapsed();
    let before = child.resident_mib();

    let started = Instant::now();
    let secret = format!("whsec_{}", BASE64.encode(KEY));
    let (prefix, per_app, types) = (layout.prefix.clone(), layout.per_app, layout.types);
    let made = create_all(addr, clients, layout.total, deadline, move |i| {
        let (app, k) = (i / per_app, (i % per_app) % types);
        (
            format!("/api/v1/app/{prefix}-a{app}/endpoint"),
            format!(
                r#"{{"url":"http://{sink}/hook/{i}","secret":"{secret}","filterTypes":["bench.t{k}"]}}"#
            ),
        )
    })
    .await;
    let creating = started.elapsed();
    // Let the allocator settle what the requests left before reading the heap again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = child.resident_mib();
    println!(
        "endpoints {made} {} ({made_types} event types, {made_apps} apps in {:.1}s): \
         created in {:.1}s = {:.0}/s; rss {:.0} -> {:.0} MiB, heap {:.0} -> {:.0} MiB = \
         {:.2} KiB heap per endpoint",
        layout.place(),
        set_up.as_secs_f64(),
        creating.as_secs_f64(),
        made as f64 / creating.as_secs_f64().max(1e-9),
        before[0],
        after[0],
        before[1],
        after[1],
        (after[1] - before[1]) * 1024.0 / made.max(1) as f64
    );
    let complete = made == layout.total && made_apps == layout.apps && made_types == layout.types;
    if !complete {
        println!(
            "endpoints REFUSED: created {made} of {} endpoints in the time allowed",
            layout.total
        );
    }
    complete
}

/// Messages for `--secs`, each to one application and one of its event types (round
/// robin); prints the match time and the fan-out rate. Returns false if a delivery was
/// missing or badly signed.
async fn fan_out(
    child: &Sluice,
    shape: &Shape,
    layout: &Layout,
    seen: &std::sync::Mutex<Seen>,
) -> bool {
    let addr = child.addr;
    let cpu_before = child.usage().0;
    let started = Instant::now();
    let until = started + Duration::from_secs(shape.secs);
    let accepted = load(addr, shape, layout, until).await;
    let ingest = started.elapsed();
    let expected = accepted.len() * MATCHED_PER_MESSAGE;
    let drain_until = Instant::now() + DRAIN_TIME_MAX;
    while seen.lock().expect("lock").first.len() < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = http_get(addr, "/metrics").await;
    let (cpu_after, peak_rss_mib) = child.usage();
    let report = super::Report {
        name: format!(
            "endpoints fan-out {} {}, x{MATCHED_PER_MESSAGE}",
            layout.total,
            layout.place()
        ),
        accepted: accepted.len(),
        accepted_per_s: accepted.len() as f64 / ingest.as_secs_f64(),
        delivered_per_s: None,
        latency_ms: None,
        attempt_ms: None,
        commits: None,
        cpu_s: cpu_after - cpu_before,
        peak_rss_mib,
        refused: None,
        series: super::Series::default(),
    };
    let seen = seen.lock().expect("lock");
    let report = deliveries(report, &seen, &accepted, expected, started);
    println!("{}", match_line(&metrics, &layout.place(), layout.total));
    match (&report.refused, report.delivered_per_s) {
        (Some(why), _) => println!("{:<22} REFUSED: {why}", report.name),
        (None, delivered) => println!(
            "{}: accepted {:.0}/s, delivered {:.0}/s, cpu {:.3} ms/msg, peak-rss {:.0} MiB",
            report.name,
            report.accepted_per_s,
            delivered.unwrap_or(0.0),
            report.cpu_ms_per_message(),
            report.peak_rss_mib
        ),
    }
    report.refused.is_none()
}

/// The writer's match time per message, from its histogram: mean, and the p50 and p99
/// bucket (an upper bound).
fn match_line(metrics: &str, where_: &str, endpoints: usize) -> String {
    let name = "sluice_fanout_match_duration_seconds";
    let value = |suffix: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(suffix)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let (Some(sum), Some(count)) = (value("_sum"), value("_count")) else {
        return format!("match among {endpoints} {where_}: no {name} in /metrics");
    };
    let [p50, p99] = histogram_percentiles(metrics, name).unwrap_or([f64::NAN; 2]);
    format!(
        "match among {endpoints} endpoints {where_}: mean {:.2} µs over {count:.0} messages, \
         p50 <= {:.0} µs, p99 <= {:.0} µs",
        sum / count.max(1.0) * 1e6,
        p50 * 1e3,
        p99 * 1e3
    )
}

/// Creates `count` things, `what(n)` giving each one's path and body, with `clients`
/// connections at once until `deadline`; returns how many were created (201).
async fn create_all(
    addr: SocketAddr,
    clients: usize,
    count: usize,
    deadline: Instant,
    what: impl Fn(usize) -> (String, String) + Send + Sync + 'static,
) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let what = Arc::new(what);
    let made = on_clients(clients.max(1), |_| {
        let (next, what) = (Arc::clone(&next), Arc::clone(&what));
        async move {
            let mut sender = connect(addr).await;
            let mut made = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count || Instant::now() >= deadline {
                    break;
                }
                let (path, body) = what(n);
                let (status, reply) = post(&mut sender, addr, &path, body.into_bytes()).await;
                if status == 201 {
                    made += 1;
                } else {
                    eprintln!("POST {path}: {status} {}", String::from_utf8_lossy(&reply));
                }
            }
            made
        }
    })
    .await;
    made.into_iter().sum()
}

/// Clients post messages until `until`, message `n` of client `c` to application
/// `(c + n * clients) % apps` with event type `bench.t{(c + n) % types}`; returns the
/// acceptance time of each accepted message.
async fn load(
    addr: SocketAddr,
    shape: &Shape,
    layout: &Layout,
    until: Instant,
) -> HashMap<MsgKey, Instant> {
    let pad = "x".repeat(shape.payload.saturating_sub(48).max(1));
    let clients = shape.clients.max(1);
    let (apps, types) = (layout.apps, layout.types);
    let prefix = layout.prefix.clone();
    let accepted = on_clients(clients, |c| {
        let (pad, prefix) = (pad.clone(), prefix.clone());
        async move {
            let mut sender = connect(addr).await;
            let mut accepted = Vec::new();
            for n in 0..MESSAGES_PER_CLIENT_MAX {
                if Instant::now() >= until {
                    break;
                }
                let app = (c + n * clients) % apps;
                let path = format!("/api/v1/app/{prefix}-a{app}/msg?with_content=false");
                let body = format!(
                    r#"{{"eventType":"bench.t{}","payload":{{"c":{c},"n":{n},"pad":"{pad}"}}}}"#,
                    (c + n) % types
                );
                let (status, bytes) = post(&mut sender, addr, &path, body.into_bytes()).await;
                if status == 202
                    && let Some(id) = message_id(&bytes)
                {
                    accepted.push((msg_key(id), Instant::now()));
                }
            }
            accepted
        }
    })
    .await;
    accepted.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::match_line;

    #[test]
    fn the_match_time_is_read_from_the_histogram() {
        let metrics = "\
sluice_fanout_match_duration_seconds_bucket{le=\"0.000001\"} 10
sluice_fanout_match_duration_seconds_bucket{le=\"0.000002\"} 60
sluice_fanout_match_duration_seconds_bucket{le=\"0.00001\"} 99
sluice_fanout_match_duration_seconds_bucket{le=\"0.0001\"} 100
sluice_fanout_match_duration_seconds_bucket{le=\"+Inf\"} 100
sluice_fanout_match_duration_seconds_sum 0.0002
sluice_fanout_match_duration_seconds_count 100
";
        assert_eq!(
            match_line(metrics, "in one app", 1_000),
            "match among 1000 endpoints in one app: mean 2.00 µs over 100 messages, \
             p50 <= 2 µs, p99 <= 10 µs"
        );
        assert!(match_line("", "in one app", 1).contains("no sluice_fanout_match"));
    }
}
