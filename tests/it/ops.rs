//! Operations: `/metrics` checked by `promtool` and scraped by a real Prometheus server,
//! systemd notifications, signals (drain, reload) and online backup.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Daemon, get_text, post};
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

/// Fast successes, fast failures, and slow successes beyond the 5 s budget; plus
/// rejected creates. Returns (accepted, per-endpoint attempts) once all were made.
async fn mixed_load(addr: SocketAddr, receivers: &[&Receiver; 3]) -> usize {
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

/// Runs a PromQL instant query until it yields one sample; returns its value.
async fn query(prometheus: SocketAddr, promql: &str) -> f64 {
    let path = format!(
        "/api/v1/query?query={}",
        percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC)
    );
    for _ in 0..300 {
        if let Ok(resp) = crate::harness::try_call(prometheus, "GET", &path, None, &[], b"").await {
            let value = resp.json["data"]["result"][0]["value"][1].clone();
            if let Some(v) = value.as_str().and_then(|v| v.parse::<f64>().ok())
                && v.is_finite()
            {
                return v;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Prometheus never answered {promql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_prometheus_reads_the_budget_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Attempts may take up to 10 s, so a 6 s answer is a slow success beyond the budget.
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
    let accepted = mixed_load(addr, &[&fast, &failing, &slow]).await;
    // Wait until every attempt is recorded (the slow ones finish 6 s after they began).
    let recorded = |t: &str| {
        sample(t, "sluice_delivery_attempt_duration_seconds_count")
            .is_some_and(|n| n >= (3 * accepted) as f64)
    };
    let mut text = String::new();
    for _ in 0..150 {
        text = get_text(addr, "/metrics").await.1;
        if recorded(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded(&text), "all attempts recorded:\n{text}");

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
    assert_eq!(sample(&text, success), Some(2.0 * n));
    assert_eq!(sample(&text, failed), Some(n));
    assert_eq!(
        sample(&text, "sluice_delivery_attempts_over_budget_total"),
        Some(n)
    );
    let within = "sluice_delivery_attempt_duration_seconds_bucket{le=\"5\"}";
    assert_eq!(sample(&text, within), Some(2.0 * n));
    assert_eq!(sample(&text, "sluice_retries_scheduled_total"), Some(n));
    assert_eq!(
        sample(&text, "sluice_endpoints{state=\"enabled\"}"),
        Some(3.0)
    );
    assert!(sample(&text, "sluice_lmdb_used_bytes").is_some_and(|b| b > 0.0));
    assert!(text.contains("sluice_build_info{version="));

    // A real Prometheus reads the share of attempts within the budget (here since the
    // start; the README's alert takes the same ratio over `rate(...[5m])`) and the rate
    // of accepted messages, once it has scraped the final counts.
    let share = "sum(sluice_delivery_attempt_duration_seconds_bucket{le=\"5\"}) \
                 / sum(sluice_delivery_attempt_duration_seconds_count)";
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = query(prometheus_addr, share).await;
        if (seen - 2.0 / 3.0).abs() < 1e-9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (seen - 2.0 / 3.0).abs() < 1e-9,
        "two thirds of the attempts were within 5 s; Prometheus says {seen}"
    );
    let rate = query(
        prometheus_addr,
        "sum(rate(sluice_messages_accepted_total[1m]))",
    )
    .await;
    assert!(rate > 0.0, "accepted-message rate {rate}");
    drop(prometheus);
    drop(daemon);
}
