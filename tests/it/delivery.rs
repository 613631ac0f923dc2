//! Delivery over real loopback HTTP: signatures, isolation, retries, throttling (the
//! receiver's `Retry-After` and the endpoint's `throttleRate`), 410, FIFO order, and the
//! attempt log.

use std::time::Duration;

use serde_json::{Value, json};
use sluice::app::Running;
use sluice::clock::Clock;

use crate::harness::{TOKEN, call, get, loopback_config, post, run_ok, test_config};
use crate::receiver::{Answer, Receiver};

/// Sluice with deliveries to loopback allowed and `schedule_ms` as the retry schedule.
pub(crate) async fn start_delivering(dir: &std::path::Path, schedule_ms: &[u64]) -> Running {
    start_delivering_clocked(dir, schedule_ms, Clock::System).await
}

/// The same, on a clock the test controls.
pub(crate) async fn start_delivering_clocked(
    dir: &std::path::Path,
    schedule_ms: &[u64],
    clock: Clock,
) -> Running {
    let mut config = loopback_config(dir);
    config.delivery.retry_schedule_ms = schedule_ms.to_vec();
    config.delivery.endpoint_in_flight_max = 4;
    sluice::app::start(&config, Some(TOKEN), clock)
        .await
        .expect("start")
}

pub(crate) async fn endpoint(addr: std::net::SocketAddr, app: &str, body: Value) -> Value {
    let resp = post(addr, &format!("/api/v1/app/{app}/endpoint"), &body).await;
    assert_eq!(resp.status, 201, "{}", resp.json);
    resp.json
}

pub(crate) async fn send(addr: std::net::SocketAddr, app: &str, n: usize) -> String {
    let body = json!({"eventType": "t.e", "payload": {"n": n}});
    let resp = post(addr, &format!("/api/v1/app/{app}/msg"), &body).await;
    assert_eq!(resp.status, 202);
    resp.json["id"].as_str().expect("id").to_owned()
}

fn n_of(r: &crate::receiver::Received) -> u64 {
    serde_json::from_slice::<Value>(&r.body).expect("json")["n"]
        .as_u64()
        .expect("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_does_not_hold_up_a_fast_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let fast = Receiver::start(|_| Answer::Status(200)).await;
    let hung = Receiver::start(|_| Answer::Hang).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "iso", "uid": "iso"}))
            .await
            .status,
        201
    );
    endpoint(addr, "iso", json!({"url": fast.url()})).await;
    endpoint(addr, "iso", json!({"url": hung.url()})).await;
    let senders: Vec<_> = (0..8)
        .map(|c| {
            tokio::spawn(async move {
                for n in (c..1000).step_by(8) {
                    send(addr, "iso", n).await;
                }
            })
        })
        .collect();
    for s in senders {
        s.await.expect("sender");
    }
    let got = fast.wait_for(1000).await;
    let first_hung = hung.wait_for(1).await[0].at;
    let last_fast = got.iter().map(|r| r.at).max().expect("arrivals");
    assert!(
        last_fast < first_hung + Duration::from_secs(5),
        "all 1000 reached the fast endpoint {:?} after the first hung attempt began",
        last_fast.saturating_duration_since(first_hung)
    );
    let unique: std::collections::BTreeSet<u64> = got.iter().map(n_of).collect();
    assert_eq!(unique.len(), 1000);
    let hanging = hung.hanging.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        hanging <= 4,
        "{hanging} attempts in flight to the hung endpoint; the limit is 4"
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_schedule_and_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[400, 800]).await;
    let addr = sluice.addr;
    let flaky = Receiver::start(|n| {
        if n < 2 {
            Answer::Status(500)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "r", "uid": "r"}))
            .await
            .status,
        201
    );
    let ep = endpoint(addr, "r", json!({"url": flaky.url(), "uid": "flaky"})).await;
    let msg = send(addr, "r", 1).await;
    let got = flaky.wait_for(3).await;
    let gaps: Vec<u128> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    // ±20 % jitter, plus a little for the commit that records each attempt.
    assert!(
        (320..=480 + 150).contains(&gaps[0]),
        "first retry after {} ms",
        gaps[0]
    );
    assert!(
        (640..=960 + 150).contains(&gaps[1]),
        "second retry after {} ms",
        gaps[1]
    );
    assert!(
        got.iter().all(|r| r.header("webhook-id") == msg),
        "one id for every attempt"
    );
    // The third attempt is recorded just after the receiver answers it.
    let path = format!("/api/v1/app/r/attempt/msg/{msg}");
    let recorded = crate::harness::eventually_json(addr, &path, |l| {
        l["data"].as_array().is_some_and(|d| d.len() == 3)
    });
    assert!(recorded.await, "three attempts recorded");
    let listed = get(addr, &path).await.json;
    let statuses: Vec<(u64, u64)> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|a| {
            (
                a["responseStatusCode"].as_u64().expect("code"),
                a["status"].as_u64().expect("status"),
            )
        })
        .collect();
    assert_eq!(statuses, [(200, 0), (500, 2), (500, 2)], "newest first");
    let by_endpoint = get(
        addr,
        &format!(
            "/api/v1/app/r/attempt/endpoint/{}?status=2",
            ep["id"].as_str().expect("id")
        ),
    )
    .await;
    assert_eq!(by_endpoint.json["data"].as_array().expect("data").len(), 2);
    let one = &listed["data"][0];
    let fetched = get(
        addr,
        &format!(
            "/api/v1/app/r/msg/{msg}/attempt/{}",
            one["id"].as_str().expect("id")
        ),
    )
    .await;
    assert_eq!(fetched.json["id"], one["id"]);
    // Nothing more arrives: the delivery is done (the next scan would have found it).
    assert_eq!(flaky.received().len(), 3);
    sluice.stop().await;
    assert_eq!(flaky.received().len(), 3, "exactly three attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_moves_the_next_attempt_and_410_disables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[10_000]).await;
    let addr = sluice.addr;
    let busy = Receiver::start(|n| {
        if n == 0 {
            Answer::StatusWithRetryAfter(503, "1")
        } else {
            Answer::Status(200)
        }
    })
    .await;
    let gone = Receiver::start(|_| Answer::Status(410)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "t", "uid": "t"}))
            .await
            .status,
        201
    );
    endpoint(addr, "t", json!({"url": busy.url()})).await;
    endpoint(addr, "t", json!({"url": gone.url(), "uid": "gone"})).await;
    send(addr, "t", 1).await;
    let got = busy.wait_for(2).await;
    let gap = (got[1].at - got[0].at).as_millis();
    assert!(
        (1_000..4_000).contains(&gap),
        "Retry-After: 1 moved the retry from 10 s to {gap} ms"
    );
    gone.wait_for(1).await;
    let disabled = crate::harness::eventually_json(addr, "/api/v1/app/t/endpoint/gone", |e| {
        e["disabled"] == json!(true)
    })
    .await;
    assert!(disabled, "410 disables the endpoint");
    let shown = get(addr, "/api/v1/app/t/endpoint/gone").await.json;
    assert!(
        shown["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "the reason is recorded: {shown}"
    );
    assert!(shown["disabledAt"].is_string(), "{shown}");
    send(addr, "t", 2).await;
    busy.wait_for(3).await;
    assert_eq!(gone.received().len(), 1, "a disabled endpoint gets nothing");
    sluice.stop().await;
}

/// Waits (at most 30 s) for the receiver to have seen `n` requests; returns them all.
async fn arrivals(receiver: &Receiver, n: usize) -> Vec<crate::receiver::Received> {
    tokio::time::timeout(Duration::from_secs(30), receiver.wait_for(n))
        .await
        .unwrap_or_else(|_| {
            let seen = receiver.received().len();
            panic!("{seen} of {n} requests arrived within 30 s")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_rate_paces_messages_posted_one_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "p", "uid": "p"}))
            .await
            .status,
        201
    );
    endpoint(addr, "p", json!({"url": hook.url(), "throttleRate": 5})).await;
    // Each message is committed (and usually delivered) before the next is posted, so
    // each finds its lane empty: the pacing must outlive the lane's queue.
    for n in 0..12 {
        send(addr, "p", n).await;
    }
    let mut at: Vec<std::time::Instant> = arrivals(&hook, 12).await.iter().map(|r| r.at).collect();
    at.sort();
    // 5 per second: attempts start at least 200 ms apart, so 12 span at least 2.2 s and
    // any 6 in a row at least 1 s. 200 ms of each is left for the receiver's view of
    // them to be uneven (a loaded machine).
    let span = at[11] - at[0];
    assert!(
        span >= Duration::from_secs(2),
        "12 messages at throttleRate 5 arrived within {span:?}"
    );
    for six in at.windows(6) {
        let within = six[5] - six[0];
        assert!(
            within >= Duration::from_millis(800),
            "6 arrivals within {within:?}"
        );
    }
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_holds_back_the_endpoint_s_next_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|n| {
        if n == 0 {
            Answer::StatusWithRetryAfter(429, "5")
        } else {
            Answer::Status(200)
        }
    })
    .await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "b", "uid": "b"}))
            .await
            .status,
        201
    );
    endpoint(addr, "b", json!({"url": hook.url()})).await;
    let first = send(addr, "b", 0).await;
    let throttled = arrivals(&hook, 1).await[0].at;
    // Once the 429 is recorded, its lane holds nothing: its queue is empty and its
    // attempt answered. The next message must still wait out the Retry-After.
    let path = format!("/api/v1/app/b/attempt/msg/{first}");
    let recorded = crate::harness::eventually_json(addr, &path, |l| {
        l["data"][0]["responseStatusCode"] == json!(429)
    });
    assert!(recorded.await, "the 429 is recorded");
    send(addr, "b", 1).await;
    let got = arrivals(&hook, 3).await;
    // The retry of the first message and the second message, in either order.
    for later in &got[1..] {
        let after = later.at.saturating_duration_since(throttled);
        // The pause runs from the answer's millisecond on the wall clock; 10 ms allow for
        // that clock and the receiver's monotonic one to disagree.
        assert!(
            after >= Duration::from_millis(4_990),
            "message {} arrived {after:?} after a 429 with Retry-After: 5",
            n_of(later)
        );
        assert!(
            after < Duration::from_secs(8),
            "message {} held {after:?}, long after the pause",
            n_of(later)
        );
    }
    let mut sent: Vec<u64> = got[1..].iter().map(n_of).collect();
    sent.sort_unstable();
    assert_eq!(sent, [0, 1], "the retry and the next message");
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_endpoints_receive_in_order_while_retrying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[300, 300, 300]).await;
    let addr = sluice.addr;
    let receiver = Receiver::start(|n| {
        if n == 0 || n == 1 {
            Answer::Status(500)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "f", "uid": "f"}))
            .await
            .status,
        201
    );
    endpoint(
        addr,
        "f",
        json!({"url": receiver.url(), "ordering": "fifo"}),
    )
    .await;
    for n in 0..20 {
        send(addr, "f", n).await;
    }
    let got = receiver.wait_for(22).await;
    let order: Vec<u64> = got.iter().map(n_of).collect();
    let mut expected = vec![0, 0, 0];
    expected.extend(1..20);
    assert_eq!(
        order, expected,
        "the failing head blocks its lane; order is kept"
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_verify_with_standard_webhooks_through_a_rotation() {
    let python = std::env::var("SLUICE_PYTHON").expect("SLUICE_PYTHON (scripts/test sets it)");
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let receiver = Receiver::start(|_| Answer::Status(204)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "s", "uid": "s"}))
            .await
            .status,
        201
    );
    endpoint(addr, "s", json!({"url": receiver.url(), "uid": "e"})).await;
    let secret = |addr| async move {
        get(addr, "/api/v1/app/s/endpoint/e/secret").await.json["key"]
            .as_str()
            .expect("key")
            .to_owned()
    };
    let first = secret(addr).await;
    for n in 0..3 {
        send(addr, "s", n).await;
    }
    receiver.wait_for(3).await;
    let rotate = |body: &'static [u8]| {
        call(
            addr,
            "POST",
            "/api/v1/app/s/endpoint/e/secret/rotate",
            Some(TOKEN),
            &[],
            body,
        )
    };
    assert_eq!(rotate(b"{}").await.status, 200);
    let second = secret(addr).await;
    for n in 3..6 {
        send(addr, "s", n).await;
    }
    receiver.wait_for(6).await;
    assert_eq!(rotate(br#"{"gracePeriodSeconds":0}"#).await.status, 200);
    let third = secret(addr).await;
    for n in 6..9 {
        send(addr, "s", n).await;
    }
    let got = receiver.wait_for(9).await;
    let mut deliveries: Vec<Value> = got
        .iter()
        .map(|r| json!({"n": n_of(r), "body": String::from_utf8_lossy(&r.body), "headers": r.headers}))
        .collect();
    deliveries.sort_by_key(|d| d["n"].as_u64());
    let cases = json!([
        {"deliveries": &deliveries[0..3], "secret": first, "valid": true},
        {"deliveries": &deliveries[3..6], "secret": first, "valid": true},
        {"deliveries": &deliveries[3..6], "secret": second, "valid": true},
        {"deliveries": &deliveries[6..9], "secret": third, "valid": true},
        {"deliveries": &deliveries[6..9], "secret": second, "valid": false},
    ]);
    let file = dir.path().join("cases.json");
    std::fs::write(&file, cases.to_string()).expect("write");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/verify_signatures.py"
    );
    run_ok(std::process::Command::new(python).arg(script).arg(&file));
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_loses_no_delivery() {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const MESSAGES: usize = 10_000;
    const SENDERS: usize = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sluice.toml");
    let text = "[delivery]\nallow_http = true\nallowed_networks = [\"127.0.0.0/8\"]\nretry_schedule_ms = [300, 600, 1200]\n";
    std::fs::write(&config, text).expect("config");
    let data = dir.path().join("data");
    let steady = Receiver::start(|_| Answer::Status(200)).await;
    // The flaky endpoint fails the first attempt of every message, so every message has
    // a retry pending at some point.
    let first_seen = std::sync::Mutex::new(BTreeSet::new());
    let flaky = Receiver::start_with(move |_, r| {
        let fresh = first_seen
            .lock()
            .expect("lock")
            .insert(r.header("webhook-id").to_owned());
        if fresh {
            Answer::Status(500)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    let daemon = crate::harness::Daemon::spawn_with(&data, Some(&config));
    let addr = daemon.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "k", "uid": "k"}))
            .await
            .status,
        201
    );
    endpoint(addr, "k", json!({"url": steady.url()})).await;
    endpoint(addr, "k", json!({"url": flaky.url()})).await;
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|c| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in (c..MESSAGES).step_by(SENDERS) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = json!({"eventType": "t.e", "payload": {"n": n}}).to_string();
                    match crate::harness::try_call(
                        addr,
                        "POST",
                        "/api/v1/app/k/msg",
                        Some(TOKEN),
                        &[],
                        body.as_bytes(),
                    )
                    .await
                    {
                        Ok(r) if r.status == 202 => {
                            acked.push(r.json["id"].as_str().expect("id").to_owned())
                        }
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    // Kill once a good part has been delivered, with more still queued or retrying.
    steady.wait_for(2_000).await;
    stop.store(true, Ordering::Relaxed);
    daemon.kill9();
    let mut acked = BTreeSet::new();
    for s in senders {
        acked.extend(s.await.expect("sender"));
    }
    // 2,000 were delivered, so they were committed; a sender's one request in flight may
    // have lost its 202 to the kill (the delivery can start before the reply is read).
    assert!(
        acked.len() + SENDERS >= 2_000,
        "{} acknowledged",
        acked.len()
    );

    let daemon = crate::harness::Daemon::spawn_with(&data, Some(&config));
    let ids = |r: &Receiver| -> BTreeSet<String> {
        r.received()
            .iter()
            .filter(|x| x.header("webhook-id").starts_with("msg_"))
            .map(|x| x.header("webhook-id").to_owned())
            .collect()
    };
    for receiver in [&steady, &flaky] {
        // Every acknowledged message reaches every endpoint at least once.
        let all_arrive = async {
            let mut seen = 0;
            while !acked.is_subset(&ids(receiver)) {
                seen = receiver.wait_for(seen + 1).await.len();
            }
        };
        let arrived = tokio::time::timeout(Duration::from_secs(120), all_arrive).await;
        let missing = acked.difference(&ids(receiver)).count();
        assert!(
            arrived.is_ok(),
            "{missing} acknowledged messages never arrived"
        );
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_signing_sends_the_token_and_never_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "st", "uid": "st"}))
            .await
            .status,
        201
    );
    let bad = post(
        addr,
        "/api/v1/app/st/endpoint",
        &json!({"url": hook.url(), "signing": {"mode": "static-token", "header": "content-type", "token": "x"}}),
    )
    .await;
    assert_eq!(
        (bad.status, bad.json["detail"][0]["loc"].clone()),
        (422, json!(["body", "signing", "header"]))
    );
    let signing =
        json!({"mode": "static-token", "header": "X-Hook-Token", "token": "s3cret-value"});
    let ep = endpoint(addr, "st", json!({"url": hook.url(), "signing": signing})).await;
    assert_eq!(
        ep["signing"],
        json!({"mode": "static-token", "header": "X-Hook-Token"})
    );
    assert_eq!(ep["ordering"], "unordered");
    assert!(!ep.to_string().contains("s3cret-value"), "{ep}");
    send(addr, "st", 1).await;
    let got = hook.wait_for(1).await;
    assert_eq!(got[0].header("x-hook-token"), "s3cret-value");
    assert_eq!(got[0].header("webhook-signature"), "");
    assert!(!got[0].header("webhook-id").is_empty());

    // Back to HMAC (and to FIFO order) with a PATCH.
    let path = format!("/api/v1/app/st/endpoint/{}", ep["id"].as_str().expect("id"));
    let body = serde_json::to_vec(&json!({"signing": {"mode": "hmac"}, "ordering": "fifo"}))
        .expect("json");
    let patched = call(addr, "PATCH", &path, Some(TOKEN), &[], &body).await;
    assert_eq!(
        (
            patched.json["signing"].clone(),
            patched.json["ordering"].clone()
        ),
        (json!({"mode": "hmac"}), json!("fifo"))
    );
    send(addr, "st", 2).await;
    let got = hook.wait_for(2).await;
    assert!(got[1].header("webhook-signature").starts_with("v1,"));
    assert_eq!(got[1].header("x-hook-token"), "");
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_retries_keep_their_schedule_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = 1_800_000_000_000;
    let clock = Clock::manual(t0);
    let hook = Receiver::start(|n| Answer::Status(if n == 0 { 500 } else { 200 })).await;
    let sluice = start_delivering_clocked(dir.path(), &[60_000], clock.clone()).await;
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "k", "uid": "k"}))
            .await
            .status,
        201
    );
    endpoint(addr, "k", json!({"url": hook.url()})).await;
    let msg = send(addr, "k", 1).await;
    hook.wait_for(1).await;
    let destinations = format!("/api/v1/app/k/msg/{msg}/endpoint");
    let waiting = |d: &Value| d["data"][0]["statusText"] == "sending";
    assert!(crate::harness::eventually_json(addr, &destinations, waiting).await);
    let next = get(addr, &destinations).await.json["data"][0]["nextAttempt"].clone();
    let next_ms = sluice::clock::parse_rfc3339(next.as_str().expect("nextAttempt")).expect("time");
    assert!(
        (t0 + 48_000..=t0 + 72_000).contains(&next_ms),
        "one minute ± 20 %: {next}"
    );
    sluice.stop().await;

    // Restarted ten seconds later: the retry is still due when it was, not now.
    clock.advance_ms(10_000);
    let sluice = start_delivering_clocked(dir.path(), &[60_000], clock.clone()).await;
    let addr = sluice.addr;
    let after = get(addr, &destinations).await.json;
    assert_eq!(after["data"][0]["nextAttempt"], next, "{after}");
    assert_eq!(after["data"][0]["statusText"], "sending");
    // Once its time comes, it fires.
    clock.advance_ms(next_ms - (t0 + 10_000) + 1);
    let got = hook.wait_for(2).await;
    assert_eq!(got[1].header("webhook-id"), msg);
    let done = |d: &Value| d["data"][0]["statusText"] == "success";
    assert!(crate::harness::eventually_json(addr, &destinations, done).await);
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_order_holds_when_the_lane_spills_to_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The head fails once and waits for its retry while more messages arrive than a lane
    // holds in memory (`LANE_QUEUE_MAX`), so the rest wait in the log; messages keep
    // arriving while the lane drains, and must not overtake the ones in the log.
    let sluice = start_delivering(dir.path(), &[1_500]).await;
    let addr = sluice.addr;
    let receiver = Receiver::start(|n| Answer::Status(if n == 0 { 500 } else { 200 })).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "q", "uid": "q"}))
            .await
            .status,
        201
    );
    endpoint(
        addr,
        "q",
        json!({"url": receiver.url(), "ordering": "fifo"}),
    )
    .await;
    let count = sluice::limits::LANE_QUEUE_MAX as u64 + 1_500;
    for n in 0..count {
        send(addr, "q", usize::try_from(n).expect("n")).await;
    }
    let got = receiver
        .wait_for(usize::try_from(count).expect("n") + 1)
        .await;
    let order: Vec<u64> = got.iter().map(n_of).collect();
    let mut expected = vec![0];
    expected.extend(0..count);
    assert_eq!(order.len(), expected.len());
    let first_difference = order.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "strict message order through the spill"
    );
    sluice.stop().await;
}

/// A DNS server that answers one address until told to answer another (rebinding).
struct Rebinding {
    rebound: std::sync::atomic::AtomicBool,
    lookups: std::sync::atomic::AtomicUsize,
}

impl sluice::delivery::client::Resolve for Rebinding {
    fn resolve(&self, _host: &str) -> sluice::delivery::client::Resolving<Vec<std::net::IpAddr>> {
        use std::sync::atomic::Ordering;
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer: std::net::IpAddr = if self.rebound.load(Ordering::SeqCst) {
            [127, 0, 0, 2].into()
        } else {
            [127, 0, 0, 1].into()
        };
        Box::pin(async move { Ok(vec![answer]) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_resolver_cannot_redirect_a_pooled_connection() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tempdir");
    // The vetted receiver closes the connection on its fourth request, forcing a new one.
    let vetted = Receiver::start(|n| {
        if n == 3 {
            Answer::Close(200)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    // What the attacker wants to reach: same port, an address the policy refuses.
    let internal_addr = std::net::SocketAddr::from(([127, 0, 0, 2], vetted.addr.port()));
    let internal = Receiver::start_at(internal_addr, |_, _| Answer::Status(200)).await;
    let mut config = test_config(dir.path());
    config.delivery.allow_http = true;
    config.delivery.allowed_networks = vec!["127.0.0.1/32".parse().expect("net")];
    config.delivery.retry_schedule_ms = vec![60_000];
    config.delivery.endpoint_in_flight_max = 1;
    let dns = Arc::new(Rebinding {
        rebound: std::sync::atomic::AtomicBool::new(false),
        lookups: std::sync::atomic::AtomicUsize::new(0),
    });
    let resolver: Arc<dyn sluice::delivery::client::Resolve> = dns.clone();
    let sluice = sluice::app::start_with_resolver(&config, Some(TOKEN), Clock::System, resolver)
        .await
        .expect("start");
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "r", "uid": "r"}))
            .await
            .status,
        201
    );
    let url = format!("http://hook.test:{}/hook", vetted.addr.port());
    endpoint(addr, "r", json!({"url": url, "uid": "hook"})).await;
    send(addr, "r", 0).await;
    vetted.wait_for(1).await;
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);

    // The name now points inside. The pooled connection keeps its vetted address.
    dns.rebound.store(true, Ordering::SeqCst);
    for n in 1..4 {
        send(addr, "r", n).await;
        vetted.wait_for(n + 1).await;
    }
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1, "no new lookup");
    // That connection is closed; the next one is vetted again, and refused.
    let msg = send(addr, "r", 4).await;
    let path = format!("/api/v1/app/r/attempt/msg/{msg}");
    let refused =
        crate::harness::eventually_json(addr, &path, |a| a["data"][0]["status"] == 2).await;
    assert!(refused, "the attempt after the rebinding is refused");
    let attempt = get(addr, &path).await.json["data"][0].clone();
    assert!(
        attempt["response"]
            .as_str()
            .is_some_and(|r| r.contains("127.0.0.2")),
        "recorded with its reason: {attempt}"
    );
    assert!(internal.received().is_empty(), "nothing reached 127.0.0.2");
    sluice.stop().await;
}

/// Asserts that `got` carries a valid Standard Webhooks signature by the endpoint secret
/// `whsec` (`whsec_<base64>`) over its exact body.
pub(crate) fn assert_signed(got: &crate::receiver::Received, whsec: &str) {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(whsec.trim_start_matches("whsec_"))
        .expect("base64 secret");
    let timestamp: u64 = got.header("webhook-timestamp").parse().expect("timestamp");
    let expected = sluice::signing::signature_header(
        [key.as_slice()],
        got.header("webhook-id"),
        timestamp,
        &got.body,
    );
    assert_eq!(
        got.header("webhook-signature"),
        expected,
        "a valid signature"
    );
}

/// With `disable_after_ms = 0` there is no failing period to wait for: the first message
/// that exhausts its schedule disables the endpoint (it took a second one before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_after_zero_disables_at_the_first_exhausted_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_config(dir.path());
    config.delivery.retry_schedule_ms = vec![];
    config.delivery.disable_after_ms = 0;
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start");
    let addr = sluice.addr;
    let failing = Receiver::start(|_| Answer::Status(500)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "z", "uid": "z"}))
            .await
            .status,
        201
    );
    endpoint(addr, "z", json!({"url": failing.url(), "uid": "f"})).await;
    send(addr, "z", 1).await;
    failing.wait_for(1).await;
    let disabled = crate::harness::eventually_json(addr, "/api/v1/app/z/endpoint/f", |e| {
        e["disabled"] == json!(true)
    })
    .await;
    assert!(
        disabled,
        "the first exhausted message disables the endpoint"
    );
    let shown = get(addr, "/api/v1/app/z/endpoint/f").await.json;
    assert!(
        shown["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("failing")),
        "{shown}"
    );
    sluice.stop().await;
}

/// Each `v1a,` signature of `got` (in order), checked against the `whpk_` public keys
/// given: whether each verifies over the exact `{id}.{timestamp}.{body}`.
fn asymmetric_signatures_verify(got: &crate::receiver::Received, whpks: &[&str]) -> Vec<bool> {
    use base64::Engine;
    use ring::signature::{ED25519, UnparsedPublicKey};
    let b64 = base64::engine::general_purpose::STANDARD;
    let content = [
        got.header("webhook-id").as_bytes(),
        b".",
        got.header("webhook-timestamp").as_bytes(),
        b".",
        &got.body,
    ]
    .concat();
    let signatures: Vec<&str> = got.header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), whpks.len(), "{signatures:?}");
    signatures
        .iter()
        .zip(whpks)
        .map(|(signature, whpk)| {
            let signature = b64
                .decode(signature.strip_prefix("v1a,").expect("a v1a signature"))
                .expect("base64");
            let public = b64
                .decode(whpk.strip_prefix("whpk_").expect("a whpk_ key"))
                .expect("base64");
            UnparsedPublicKey::new(&ED25519, public)
                .verify(&content, &signature)
                .is_ok()
        })
        .collect()
}

/// An endpoint given a `whsk_` key pair is signed with Ed25519 (`v1a,`), shows only its
/// public key (`whpk_`), and a rotation without a key makes a new pair that signs beside
/// the old one through the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asymmetric_endpoint_is_signed_with_ed25519_and_rotates_to_a_new_pair() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = loopback_config(dir.path());
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start");
    let addr = sluice.addr;
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    post(addr, "/api/v1/app", &json!({"name": "a", "uid": "a"})).await;
    // A key pair as Standard Webhooks gives it: base64 of the seed, then the public key.
    let seed = [42u8; 32];
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).expect("pair");
    let public = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    let b64 = base64::engine::general_purpose::STANDARD;
    let whsk = format!("whsk_{}", b64.encode([seed.as_slice(), &public].concat()));
    let whpk = format!("whpk_{}", b64.encode(&public));
    endpoint(
        addr,
        "a",
        json!({"url": receiver.url(), "uid": "ed", "secret": whsk}),
    )
    .await;
    let shown = get(addr, "/api/v1/app/a/endpoint/ed/secret").await;
    assert_eq!(
        shown.json["key"],
        json!(whpk),
        "only the public key is shown"
    );

    send(addr, "a", 1).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(asymmetric_signatures_verify(&got[0], &[&whpk]), [true]);

    // Rotated without a key: a new pair, shown as its public key; both sign meanwhile.
    let rotated = post(addr, "/api/v1/app/a/endpoint/ed/secret/rotate", &json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.json);
    let new_whpk = rotated.json["key"].as_str().expect("key").to_owned();
    assert!(
        new_whpk.starts_with("whpk_") && new_whpk != whpk,
        "{new_whpk}"
    );
    assert_eq!(
        get(addr, "/api/v1/app/a/endpoint/ed/secret").await.json["key"],
        json!(new_whpk)
    );
    send(addr, "a", 2).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(
        asymmetric_signatures_verify(&got[1], &[&new_whpk, &whpk]),
        [true, true]
    );
    // And a public key is not a secret.
    let refused = post(
        addr,
        "/api/v1/app/a/endpoint",
        &json!({"url": receiver.url(), "secret": whpk}),
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.json);
    sluice.stop().await;
}
