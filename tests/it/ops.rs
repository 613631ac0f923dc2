//! Operations: `/metrics` checked by `promtool` and scraped by a real Prometheus server,
//! systemd notifications, signals (drain, reload) and online backup.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Daemon, get_text, post, run_ok};
use crate::receiver::{Answer, Receiver};

/// Writes a config that lets deliveries reach loopback receivers.
fn delivery_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("sluice.toml");
    let text = format!(
        "[delivery]\nallow_http = true\nallowed_networks = [\"127.0.0.0/8\"]\n\
         retry_schedule_ms = [60000]\nendpoint_in_flight_max = 8\n{extra}"
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// A free loopback port (bound, then released for the child process to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// The value of one sample line of exposition text (`name{labels} value`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Sends messages to an application whose endpoints are `receivers`, plus some rejected
/// creates; returns how many were accepted once every receiver has seen each of them.
async fn mixed_load(addr: SocketAddr, receivers: &[&Receiver]) -> usize {
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "o", "uid": "o"}))
            .await
            .status,
        201
    );
    for receiver in receivers {
        let body = json!({"url": receiver.url()});
        assert_eq!(
            post(addr, "/api/v1/app/o/endpoint", &body).await.status,
            201
        );
    }
    let accepted = 8;
    for n in 0..accepted {
        let body = json!({"eventType": "o.k", "payload": {"n": n}});
        assert_eq!(post(addr, "/api/v1/app/o/msg", &body).await.status, 202);
    }
    for _ in 0..3 {
        let bad = post(addr, "/api/v1/app/o/msg", &json!({"payload": {}})).await;
        assert_eq!(bad.status, 422);
    }
    for receiver in receivers {
        receiver.wait_for(accepted).await;
    }
    accepted
}

/// Waits until `count` attempts are recorded; returns the exposition text.
async fn metrics_with_attempts(addr: SocketAddr, count: usize) -> String {
    let recorded = |t: &str| {
        sample(t, "sluice_delivery_attempt_duration_seconds_count")
            .is_some_and(|n| n >= count as f64)
    };
    for _ in 0..200 {
        let text = get_text(addr, "/metrics").await.1;
        if recorded(&text) {
            return text;
        }
        crate::harness::pause(Duration::from_millis(100)).await;
    }
    panic!("{count} attempts were never recorded");
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a real Prometheus server scraping `target` every second.
fn start_prometheus(dir: &Path, target: SocketAddr) -> (Prometheus, SocketAddr) {
    let config = dir.join("prometheus.yml");
    let text = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(&config, text).expect("prometheus config");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package `prometheus`, installed by .ci/run) runs");
    (Prometheus(child), addr)
}

/// One PromQL instant query; the answer's JSON (None while Prometheus is not reachable).
/// A query Prometheus cannot parse fails the test at once.
async fn instant_query(prometheus: SocketAddr, promql: &str) -> Option<serde_json::Value> {
    let path = format!(
        "/api/v1/query?query={}",
        percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC)
    );
    // While it starts, Prometheus may answer 503 in plain text: not reachable yet.
    let (_, body) = crate::harness::try_get_text(prometheus, &path).await.ok()?;
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    assert_ne!(
        answer["errorType"],
        json!("bad_data"),
        "Prometheus refuses {promql}: {answer}"
    );
    Some(answer)
}

/// Runs a PromQL instant query until it yields one sample; returns its value.
async fn query(prometheus: SocketAddr, promql: &str) -> f64 {
    for _ in 0..300 {
        if let Some(answer) = instant_query(prometheus, promql).await {
            let value = answer["data"]["result"][0]["value"][1].clone();
            if let Some(v) = value.as_str().and_then(|v| v.parse::<f64>().ok())
                && v.is_finite()
            {
                return v;
            }
        }
        crate::harness::pause(Duration::from_millis(200)).await;
    }
    panic!("Prometheus never answered {promql}");
}

/// Runs a PromQL instant query until its result holds at least one series (of any value,
/// NaN included: the quantile of a histogram that did not move is still a series);
/// returns them.
async fn query_series(prometheus: SocketAddr, promql: &str) -> Vec<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        if let Some(answer) = instant_query(prometheus, promql).await {
            if let Some(series) = answer["data"]["result"].as_array()
                && !series.is_empty()
            {
                return series.clone();
            }
            last = answer;
        }
        crate::harness::pause(Duration::from_millis(200)).await;
    }
    panic!("Prometheus never returned a series for {promql}; last answer: {last}");
}

/// A file of this repository.
fn repo_file(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The `expr` of every target of every panel of the Grafana dashboard (a collapsed row
/// keeps its panels inside it), each with its panel's title, made runnable on a plain
/// Prometheus: Grafana's `$__rate_interval` becomes `1m` (this test's Prometheus scrapes
/// every second, so a minute holds many samples), and the dashboard's `$instance` picker
/// becomes `.*`, what its "All" option sends.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("a target has an expr");
                let runnable = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*");
                assert!(
                    !runnable.contains('$'),
                    "panel {title:?} uses a variable this test does not substitute: {expr}"
                );
                out.push((title.to_owned(), runnable));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Whether `text` selects the 5 s bucket by one spelling of its label only: Prometheus 2
/// stores `le="5"` as exposed, Prometheus 3 normalises it to `le="5.0"`, so each of these
/// matchers misses the bucket on one of them (`le=~"5|5\\.0"` reads both).
fn picks_one_bucket_spelling(text: &str) -> bool {
    ["le=\"5\"", "le=\"5.0\"", "le=\\\"5\\\"", "le=\\\"5.0\\\""]
        .iter()
        .any(|matcher| text.contains(matcher))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_prometheus_reads_the_budget_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Attempts may take up to 10 s: a 6 s answer is a slow success beyond the 5 s budget
    // (with room for a loaded machine to be late with it), and a receiver that never
    // answers times out beyond it.
    let config = delivery_config(dir.path(), "attempt_timeout_ms = 10000\n");
    let daemon = Daemon::spawn_with(&dir.path().join("data"), Some(&config));
    let addr = daemon.addr;
    let (prometheus, prometheus_addr) = start_prometheus(dir.path(), addr);
    // Load starts only once Prometheus has scraped Sluice, so it sees the counters rise.
    assert_eq!(
        query(prometheus_addr, "sluice_messages_accepted_total").await,
        0.0
    );
    let fast = Receiver::start(|_| Answer::Status(200)).await;
    let failing = Receiver::start(|_| Answer::Status(500)).await;
    let slow = Receiver::start(|_| Answer::After(Duration::from_secs(6), 200)).await;
    let hung = Receiver::start(|_| Answer::Hang).await;
    let accepted = mixed_load(addr, &[&fast, &failing, &slow, &hung]).await;
    let text = metrics_with_attempts(addr, 4 * accepted).await;

    // The exposition is valid.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`, installed by .ci/run) runs");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // The alert rules shipped with Sluice are valid rules, and their unit tests (every
    // alert fires on its synthetic series, and stays silent on a healthy case) pass.
    run_ok(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(repo_file("systemd/sluice.rules.yml")),
    );
    run_ok(
        Command::new("promtool")
            .args(["test", "rules"])
            .arg(repo_file("systemd/sluice.rules.test.yml")),
    );
    // No query for operators picks the 5 s bucket by one spelling of `le` only.
    let dashboard_text =
        std::fs::read_to_string(repo_file("contrib/grafana/sluice.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).expect("JSON");
    let panel_queries = dashboard_queries(&dashboard);
    assert!(panel_queries.len() >= 11, "the dashboard has its panels");
    for file in ["systemd/sluice.rules.yml", "README.md"] {
        let text = std::fs::read_to_string(repo_file(file)).expect("read");
        assert!(
            !picks_one_bucket_spelling(&text),
            "{file} selects a bucket by one spelling of le"
        );
    }
    assert!(
        !picks_one_bucket_spelling(&dashboard_text),
        "the dashboard selects a bucket by one spelling of le"
    );
    for (title, expr) in &panel_queries {
        assert!(
            !picks_one_bucket_spelling(expr),
            "panel {title:?} selects a bucket by one spelling of le: {expr}"
        );
    }

    // And it adds up.
    let n = accepted as f64;
    assert_eq!(sample(&text, "sluice_messages_accepted_total"), Some(n));
    assert_eq!(
        sample(
            &text,
            "sluice_messages_rejected_total{reason=\"validation\"}"
        ),
        Some(3.0)
    );
    let success = "sluice_delivery_attempts_total{outcome=\"success\",status_class=\"2xx\"}";
    let failed = "sluice_delivery_attempts_total{outcome=\"http_error\",status_class=\"5xx\"}";
    let timed_out = "sluice_delivery_attempts_total{outcome=\"timeout\",status_class=\"none\"}";
    assert_eq!(sample(&text, success), Some(2.0 * n));
    assert_eq!(sample(&text, failed), Some(n));
    assert_eq!(sample(&text, timed_out), Some(n));
    assert_eq!(
        sample(&text, "sluice_delivery_attempts_over_budget_total"),
        Some(2.0 * n)
    );
    // Each of the four receivers was dialled, and no attempt dialled twice.
    let opened = sample(&text, "sluice_delivery_connections_opened_total");
    assert!(
        opened.is_some_and(|o| (4.0..=4.0 * n).contains(&o)),
        "connections opened: {opened:?} for {} attempts",
        4.0 * n
    );
    let within = "sluice_delivery_attempt_duration_seconds_bucket{le=\"5\"}";
    assert_eq!(sample(&text, within), Some(2.0 * n));
    assert_eq!(
        sample(&text, "sluice_retries_scheduled_total"),
        Some(2.0 * n)
    );
    assert_eq!(
        sample(&text, "sluice_endpoints{state=\"enabled\"}"),
        Some(4.0)
    );
    assert!(sample(&text, "sluice_lmdb_used_bytes").is_some_and(|b| b > 0.0));
    assert!(text.contains("sluice_build_info{version="));

    // A real Prometheus reads the share of attempts within the budget (here since the
    // start; the README's alert takes the same ratio over `rate(...[5m])`) and the rate
    // of accepted messages, once it has scraped the final counts.
    let share = r#"sum(sluice_delivery_attempt_duration_seconds_bucket{le=~"5|5\\.0"})
                 / sum(sluice_delivery_attempt_duration_seconds_count)"#;
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = query(prometheus_addr, share).await;
        if (seen - 0.5).abs() < 1e-9 {
            break;
        }
        crate::harness::pause(Duration::from_millis(100)).await;
    }
    assert!(
        (seen - 0.5).abs() < 1e-9,
        "half the attempts were within 5 s; Prometheus says {seen}"
    );
    let rate = query(
        prometheus_addr,
        "sum(rate(sluice_messages_accepted_total[1m]))",
    )
    .await;
    assert!(rate > 0.0, "accepted-message rate {rate}");

    // Every panel of the Grafana dashboard shows something: each query runs on this
    // Prometheus and returns at least one series (a `rate(...[1m])` needs two scrapes
    // inside its window, so each is polled until it does).
    for (title, expr) in &panel_queries {
        if expr.contains("sluice_cluster_") {
            // Cluster-mode panels: this Sluice runs embedded, so they answer no series;
            // Prometheus must still accept the query.
            let answer = instant_query(prometheus_addr, expr).await;
            assert!(
                answer.as_ref().is_some_and(|a| a["status"] == "success"),
                "panel {title:?}: {expr}: {answer:?}"
            );
            continue;
        }
        let series = query_series(prometheus_addr, expr).await;
        assert!(
            series.iter().all(|s| s["value"][1].is_string()),
            "panel {title:?}: {expr} answers no instant vector: {series:?}"
        );
    }
    drop(prometheus);
    drop(daemon);
}

/// Reads the next notification datagram within `limit`.
async fn next_notification(socket: &tokio::net::UnixDatagram, limit: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let received = tokio::time::timeout(limit, socket.recv(&mut buf)).await;
    let n = received.ok()?.expect("recv");
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Reads notifications until one contains `wanted`; panics after `limit` without it.
async fn expect_notification(socket: &tokio::net::UnixDatagram, wanted: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_notification(socket, left).await {
            Some(text) if text.lines().any(|l| l == wanted) => return,
            Some(_) => {}
            None => panic!("no {wanted} within {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_sees_ready_then_health_gated_watchdog_pings_then_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind");
    let config = delivery_config(dir.path(), "");
    std::fs::write(
        &config,
        format!(
            "drain_timeout_ms = 2000\n{}",
            std::fs::read_to_string(&config).expect("read")
        ),
    )
    .expect("config");
    let args = ["--config".into(), config.clone().into_os_string()];
    let env = [
        ("NOTIFY_SOCKET", socket_path.as_os_str()),
        // 400 ms: a ping every 200 ms.
        ("WATCHDOG_USEC", std::ffi::OsStr::new("400000")),
        ("SLUICE_TEST_HOOKS", std::ffi::OsStr::new("1")),
    ];
    let mut daemon = Daemon::spawn_env(&dir.path().join("data"), &args, &env);
    let first = next_notification(&socket, Duration::from_secs(10)).await;
    assert!(
        first
            .as_deref()
            .is_some_and(|t| t.lines().any(|l| l == "READY=1")),
        "READY=1 comes first: {first:?}"
    );
    for _ in 0..3 {
        expect_notification(&socket, "WATCHDOG=1", Duration::from_secs(2)).await;
    }

    // Wedge the writer thread: the pings stop within the heartbeat's staleness bound.
    daemon.signal("USR2");
    daemon.wait_for_log("wedging the writer thread", 1).await;
    let wedged_at = tokio::time::Instant::now();
    let silence = Duration::from_secs(2);
    loop {
        match next_notification(&socket, silence).await {
            Some(text) if text.contains("WATCHDOG=1") => assert!(
                wedged_at.elapsed() < sluice::limits::HEARTBEAT_STALE + Duration::from_secs(1),
                "pings go on {:?} after the writer stopped",
                wedged_at.elapsed()
            ),
            Some(_) => {}
            None => break, // Two seconds without a ping.
        }
    }

    // SIGTERM: STOPPING=1, then the drain deadline (the writer cannot commit) ends it.
    daemon.signal("TERM");
    expect_notification(&socket, "STOPPING=1", Duration::from_secs(5)).await;
    let code = daemon.exit_code(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1), "a missed drain deadline is not a clean stop");
}

/// A start that migrates the log (a schema-1 fixture) asks the service manager for more
/// start time before it migrates, then says READY=1 once it serves; the log before the
/// migration is kept beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrating_start_asks_systemd_for_more_time_before_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, key) = crate::harness::copy_upgrade_fixture("v1-2026-12-01", dir.path());
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nsecrets_key_file = {:?}\n",
            key.display().to_string()
        ),
    )
    .expect("config");
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind");
    let args = ["--config".into(), config.into_os_string()];
    let env = [("NOTIFY_SOCKET", socket_path.as_os_str())];
    let mut daemon = Daemon::spawn_env(&data, &args, &env);
    let first = next_notification(&socket, Duration::from_secs(30)).await;
    assert!(
        first
            .as_deref()
            .is_some_and(|t| t.lines().any(|l| l == "EXTEND_TIMEOUT_USEC=90000000")),
        "the migration asks for 90 s more first: {first:?}"
    );
    expect_notification(&socket, "READY=1", Duration::from_secs(30)).await;
    assert!(
        data.join("before-schema-2/data.mdb").is_file(),
        "the copy is kept"
    );
    daemon.signal("TERM");
    let code = daemon.exit_code(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "a clean stop");
}

/// Counts every attempt listed at `path`, page by page.
async fn count_attempts(addr: SocketAddr, path: &str) -> usize {
    let mut attempts = 0;
    let mut iterator = String::new();
    loop {
        let page = crate::harness::get(addr, &format!("{path}?limit=250{iterator}"))
            .await
            .json;
        attempts += page["data"].as_array().expect("data").len();
        if page["done"] == json!(true) {
            return attempts;
        }
        iterator = format!("&iterator={}", page["iterator"].as_str().expect("iterator"));
    }
}

/// The handlers are installed before Sluice starts: a SIGTERM or SIGHUP while it is
/// still starting (a supervisor that stops or reloads it at once) is handled — TERM stops
/// it cleanly, HUP is a reload once it serves — never the default action, which ends the
/// process by the signal. The signal is sent on Sluice's first log line, tens of
/// milliseconds before it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_while_starting_are_handled() {
    use std::io::{BufRead, BufReader};
    for signal in ["TERM", "HUP"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("SLUICE_ADMIN_TOKEN", crate::harness::TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let first = lines.next().expect("a first line").expect("read");
        let kill = |signal: &str| {
            let sent = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .expect("kill runs");
            assert!(sent.success(), "kill -{signal}");
        };
        kill(signal);
        let mut seen = vec![first];
        if signal == "HUP" {
            // Still alive: it serves, then reloads (no config file: nothing to re-read).
            for line in lines.by_ref() {
                let line = line.expect("read");
                let reloaded = line.contains("no config file to re-read");
                seen.push(line);
                if reloaded {
                    break;
                }
            }
            kill("TERM");
        }
        seen.extend(lines.map_while(Result::ok));
        let status = child.wait().expect("wait");
        assert!(
            status.success(),
            "{signal} while starting: {status}\n{}",
            seen.join("\n")
        );
        assert!(
            seen.iter().any(|l| l.contains("Stopped")),
            "{}",
            seen.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_a_restart_finds_everything_once() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = delivery_config(dir.path(), "");
    let data = dir.path().join("data");
    // A slowish receiver, so attempts are in flight when the signal comes.
    let hook = Receiver::start(|_| Answer::After(Duration::from_millis(5), 200)).await;
    let mut daemon = Daemon::spawn_with(&data, Some(&config));
    let addr = daemon.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "d", "uid": "d"}))
            .await
            .status,
        201
    );
    let body = json!({"url": hook.url(), "uid": "hook"});
    assert_eq!(
        post(addr, "/api/v1/app/d/endpoint", &body).await.status,
        201
    );
    let senders: Vec<_> = (0..16)
        .map(|c| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..2_000 {
                    let body = json!({"eventType": "d", "payload": {"c": c, "n": n}});
                    let sent = crate::harness::try_call(
                        addr,
                        "POST",
                        "/api/v1/app/d/msg",
                        Some(crate::harness::TOKEN),
                        &[],
                        body.to_string().as_bytes(),
                    )
                    .await;
                    match sent {
                        Ok(resp) if resp.status == 202 => {
                            acked.push(resp.json["id"].as_str().expect("id").to_owned());
                        }
                        _ => break, // The server stopped accepting.
                    }
                }
                acked
            })
        })
        .collect();
    hook.wait_for(200).await;
    daemon.signal("TERM");
    let code = daemon.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "a clean stop within the drain deadline");
    let mut acked = Vec::new();
    for sender in senders {
        acked.extend(sender.await.expect("sender"));
    }
    assert!(acked.len() >= 200, "{} acknowledged", acked.len());

    let daemon = Daemon::spawn_with(&data, Some(&config));
    let addr = daemon.addr;
    let ids = |hook: &Receiver| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in hook.received() {
            *counts.entry(r.header("webhook-id").to_owned()).or_insert(0) += 1;
        }
        counts
    };
    // At least as many arrivals as acknowledgements (a request cut off by the stop may
    // have committed without its client seeing the 202), then every acknowledged id.
    let mut seen = acked.len();
    loop {
        tokio::time::timeout(Duration::from_secs(60), hook.wait_for(seen))
            .await
            .expect("every acknowledged message arrives");
        let arrived = ids(&hook);
        if acked.iter().all(|id| arrived.contains_key(id)) {
            break;
        }
        seen = hook.received().len() + 1;
    }
    let twice: Vec<_> = ids(&hook).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    // The attempt log agrees: one attempt per delivery made, none recorded twice (an
    // attempt is recorded just after its answer arrives, so wait for the last ones).
    let delivered = ids(&hook).len();
    let mut attempts = 0;
    for _ in 0..100 {
        attempts = count_attempts(addr, "/api/v1/app/d/attempt/endpoint/hook").await;
        if attempts >= delivered {
            break;
        }
        crate::harness::pause(Duration::from_millis(50)).await;
    }
    assert_eq!(attempts, delivered);
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_retry_schedule_and_ignores_an_invalid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = delivery_config(dir.path(), "");
    let failing = Receiver::start(|_| Answer::Status(500)).await;
    let daemon = Daemon::spawn_with(&dir.path().join("data"), Some(&config));
    let addr = daemon.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "h", "uid": "h"}))
            .await
            .status,
        201
    );
    let body = json!({"url": failing.url()});
    assert_eq!(
        post(addr, "/api/v1/app/h/endpoint", &body).await.status,
        201
    );
    let send = |n: u64| async move {
        let body = json!({"eventType": "h", "payload": {"n": n}});
        let resp = post(addr, "/api/v1/app/h/msg", &body).await;
        assert_eq!(resp.status, 202);
        resp.json["id"].as_str().expect("id").to_owned()
    };
    let attempts_of = |id: &str| {
        failing
            .received()
            .iter()
            .filter(|r| r.header("webhook-id") == id)
            .count()
    };

    // Under the first schedule a failed attempt waits a minute for its retry.
    let before = send(0).await;
    failing.wait_for(1).await;

    // The new file retries after 100 ms, twice.
    std::fs::write(
        &config,
        "[delivery]\nallow_http = true\nallowed_networks = [\"127.0.0.0/8\"]\n\
         retry_schedule_ms = [100, 100]\njitter_percent = 0\n",
    )
    .expect("config");
    daemon.signal("HUP");
    daemon.wait_for_log("config reloaded", 1).await;
    let after = send(1).await;
    failing.wait_for(4).await;
    assert_eq!(
        attempts_of(&after),
        3,
        "first attempt and two quick retries"
    );
    assert_eq!(
        attempts_of(&before),
        1,
        "a retry already scheduled keeps its time"
    );

    // An invalid file changes nothing: the quick schedule stays.
    std::fs::write(&config, "[delivery]\nretry_schedule_ms = \"soon\"\n").expect("config");
    daemon.signal("HUP");
    daemon.wait_for_log("was not reloaded", 1).await;
    let third = send(2).await;
    failing.wait_for(7).await;
    assert_eq!(attempts_of(&third), 3);
    let health = crate::harness::get(addr, "/api/v1/health").await;
    assert_eq!(health.status, 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_during_load_serves_every_message_accepted_before_it() {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let daemon = Daemon::spawn(&data);
    let addr = daemon.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "b", "uid": "b"}))
            .await
            .status,
        201
    );
    let running = Arc::new(AtomicBool::new(true));
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..8)
        .map(|c| {
            let (running, acked) = (Arc::clone(&running), Arc::clone(&acked));
            tokio::spawn(async move {
                for n in 0..100_000 {
                    if !running.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = json!({"eventType": "b", "payload": {"c": c, "n": n}});
                    let resp = post(addr, "/api/v1/app/b/msg", &body).await;
                    assert_eq!(resp.status, 202);
                    let id = resp.json["id"].as_str().expect("id").to_owned();
                    acked.lock().expect("lock").push(id);
                }
            })
        })
        .collect();
    while acked.lock().expect("lock").len() < 500 {
        tokio::task::yield_now().await;
    }
    // Everything acknowledged before the backup starts must be in the copy.
    let before: BTreeSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    let copy = dir.path().join("copy");
    let (from, to) = (data.clone(), copy.clone());
    tokio::task::spawn_blocking(move || {
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["backup", "--to"])
                .arg(&to)
                .arg("--data-dir")
                .arg(&from),
        )
    })
    .await
    .expect("backup");
    running.store(false, Ordering::Relaxed);
    for sender in senders {
        sender.await.expect("sender");
    }
    let total = acked.lock().expect("lock").len();
    assert!(total > before.len(), "the load went on during the backup");
    drop(daemon);

    // The copy is a data directory: with the secrets key beside it (never in a backup),
    // serve it and list every message.
    std::fs::copy(data.join("secrets.key"), copy.join("secrets.key")).expect("the key");
    let restored = Daemon::spawn(&copy);
    let mut listed = BTreeSet::new();
    let mut iterator = String::new();
    loop {
        let path = format!("/api/v1/app/b/msg?limit=250&with_content=false{iterator}");
        let page = crate::harness::get(restored.addr, &path).await.json;
        for m in page["data"].as_array().expect("data") {
            listed.insert(m["id"].as_str().expect("id").to_owned());
        }
        if page["done"] == json!(true) {
            break;
        }
        iterator = format!("&iterator={}", page["iterator"].as_str().expect("iterator"));
    }
    let missing = before.difference(&listed).count();
    assert_eq!(
        missing, 0,
        "messages accepted before the backup are in the copy"
    );
    // A second backup into the same directory is refused rather than mixed.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["backup", "--to"])
        .arg(&copy)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("sluice backup runs");
    assert!(!again.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_listener_with_a_token_and_not_on_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, "scrape-secret\n").expect("token file");
    let mut config = crate::harness::test_config(&dir.path().join("data"));
    config.metrics.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.metrics.token_file = Some(token_file);
    let sluice = sluice::app::start(
        &config,
        Some(crate::harness::TOKEN),
        sluice::clock::Clock::System,
    )
    .await
    .expect("starts");
    let metrics = sluice.metrics_addr.expect("a metrics listener");
    let bearer = [("authorization", "Bearer scrape-secret")];
    let (status, _, body) =
        crate::harness::call_raw(metrics, "GET", "/metrics", None, &bearer, b"")
            .await
            .expect("scrape");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("sluice_build_info"));
    // Without the token, or with another: 401. Anything but /metrics: 404.
    let (status, _) = get_text(metrics, "/metrics").await;
    assert_eq!(status, 401);
    let wrong = [("authorization", "Bearer guess")];
    let (status, _, _) = crate::harness::call_raw(metrics, "GET", "/metrics", None, &wrong, b"")
        .await
        .expect("scrape");
    assert_eq!(status, 401);
    let (status, _) = get_text(metrics, "/api/v1/health").await;
    assert_eq!(status, 404);
    // The API listener no longer serves /metrics, token or not.
    let (status, _, _) =
        crate::harness::call_raw(sluice.addr, "GET", "/metrics", None, &bearer, b"")
            .await
            .expect("api");
    assert_eq!(status, 404);
    let (status, _) = get_text(sluice.addr, "/api/v1/health").await;
    assert_eq!(status, 200);
    sluice.stop().await;
}

/// A second SIGTERM during the drain exits at once: the first waits for an attempt that
/// hangs (up to its 30 s budget), the second does not wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = delivery_config(dir.path(), "attempt_timeout_ms = 30000\n");
    let hung = Receiver::start(|_| Answer::Hang).await;
    let mut daemon = Daemon::spawn_with(&dir.path().join("data"), Some(&config));
    let addr = daemon.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "h", "uid": "h"}))
            .await
            .status,
        201
    );
    let body = json!({"url": hung.url()});
    assert_eq!(
        post(addr, "/api/v1/app/h/endpoint", &body).await.status,
        201
    );
    let msg = json!({"eventType": "h", "payload": {}});
    assert_eq!(post(addr, "/api/v1/app/h/msg", &msg).await.status, 202);
    // The attempt is in flight: the receiver holds it.
    hung.wait_for(1).await;
    daemon.signal("TERM");
    daemon.wait_for_log("Stopping", 1).await;
    let second = std::time::Instant::now();
    daemon.signal("TERM");
    let code = daemon.exit_code(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1), "exits as a failure: work was in flight");
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "exited {:?} after the second signal, not at the attempt's end",
        second.elapsed()
    );
}

/// The soft and hard "Max open files" of process `pid`, from `/proc`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().expect("soft").to_owned();
    let hard = fields.next().expect("hard").to_owned();
    (soft, hard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_soft_open_files_limit_is_raised_to_the_hard_one_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A shell's usual soft limit is 1,024; prlimit sets a lower one and execs Sluice.
    let mut prlimit = Command::new("prlimit");
    prlimit
        .arg("--nofile=256:4096")
        .arg(env!("CARGO_BIN_EXE_sluice"));
    let daemon = Daemon::spawn_via(prlimit, &dir.path().join("data"), &[], &[]);
    assert_eq!(
        open_files_limits(daemon.child.id()),
        ("4096".to_owned(), "4096".to_owned())
    );
    assert!(
        daemon
            .log_lines()
            .iter()
            .any(|l| l.contains("Raised the soft limit on open files")),
        "the raise is logged"
    );
    let health = get_text(daemon.addr, "/api/v1/health").await;
    assert_eq!(health.0, 200, "it serves: {health:?}");
}
