//! Operational webhooks: subscribed at `/api/v1/operational-webhook/endpoint` (as the SDKs
//! do), told about endpoint changes and failing deliveries by Svix's rules, each event a
//! signed message of the operational application appended in the same apply as its cause.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sluice::clock::Clock;

use crate::harness::{TOKEN, call, eventually_json, get, loopback_config, post, run_ok};
use crate::receiver::{Answer, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_webhooks_tell_the_platform_what_happens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_config(dir.path());
    // Five attempts (four retries), quickly; the first exhausted message disables.
    config.delivery.retry_schedule_ms = vec![10, 10, 10, 10];
    config.delivery.disable_after_ms = 0;
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start");
    let addr = sluice.addr;
    let ops = Receiver::start(|_| Answer::Status(200)).await;
    // Nothing is listed before the first subscriber, and app tokens may not subscribe.
    assert_eq!(
        get(addr, "/api/v1/operational-webhook/endpoint").await.json["data"],
        json!([])
    );
    // The platform subscribes with the official SDK, unchanged.
    let python = std::env::var("SLUICE_PYTHON").expect("SLUICE_PYTHON (scripts/test sets it)");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/subscribe_operational.py"
    );
    let mut subscribe = std::process::Command::new(&python);
    subscribe
        .arg(script)
        .env("SLUICE_URL", format!("http://{addr}"))
        .env("SLUICE_TOKEN", TOKEN)
        .env("OPS_URL", ops.url())
        .env("OPS_UID", "platform");
    let printed = tokio::task::spawn_blocking(move || run_ok(&mut subscribe))
        .await
        .expect("the SDK ran");
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    let mut lines = printed.lines();
    let (subscribed_id, secret) = (
        lines.next().expect("the endpoint's id").to_owned(),
        lines.next().expect("its secret").to_owned(),
    );
    let listed = get(addr, "/api/v1/operational-webhook/endpoint").await.json;
    assert_eq!(listed["data"][0]["id"], subscribed_id.as_str());
    assert_eq!(listed["data"][0]["uid"], "platform");
    // The operational application is no tenant.
    assert_eq!(get(addr, "/api/v1/app").await.json["data"], json!([]));

    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "t", "uid": "t"}))
            .await
            .status,
        201
    );
    let failing = Receiver::start(|_| Answer::Status(500)).await;
    let a = post(
        addr,
        "/api/v1/app/t/endpoint",
        &json!({"url": failing.url(), "uid": "a", "channels": ["a"]}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.json);
    let m1 = post(
        addr,
        "/api/v1/app/t/msg",
        &json!({"eventType": "e", "channels": ["a"], "eventId": "evt-1", "payload": {}}),
    )
    .await;
    assert_eq!(m1.status, 202);
    assert!(
        eventually_json(addr, "/api/v1/app/t/endpoint/a", |e| e["disabled"] == true).await,
        "the failure policy disables the endpoint"
    );
    let enabled = call(
        addr,
        "PATCH",
        "/api/v1/app/t/endpoint/a",
        Some(TOKEN),
        &[],
        br#"{"disabled": false}"#,
    )
    .await;
    assert_eq!(enabled.status, 200);
    // Fails four times, then succeeds: failing, then recovered.
    let recovering = Receiver::start(|n| Answer::Status(if n < 4 { 500 } else { 200 })).await;
    let b = post(
        addr,
        "/api/v1/app/t/endpoint",
        &json!({"url": recovering.url(), "uid": "b", "channels": ["b"]}),
    )
    .await;
    assert_eq!(b.status, 201);
    let m2 = post(
        addr,
        "/api/v1/app/t/msg",
        &json!({"eventType": "e", "channels": ["b"], "payload": {}}),
    )
    .await;
    recovering.wait_for(5).await;
    assert!(
        eventually_json(
            addr,
            "/api/v1/app/t/endpoint/b/msg",
            |d| d["data"][0]["status"] == 0
        )
        .await
    );
    let deleted = call(
        addr,
        "DELETE",
        "/api/v1/app/t/endpoint/b",
        Some(TOKEN),
        &[],
        b"",
    )
    .await;
    assert_eq!(deleted.status, 204);
    let since = sluice::clock::format_rfc3339(Clock::System.now_ms() - 3_600_000);
    let task = post(
        addr,
        "/api/v1/app/t/endpoint/a/recover",
        &json!({"since": since}),
    )
    .await;
    assert_eq!(task.status, 202, "{}", task.json);

    let got = ops.wait_for(11).await;
    // Every event verifies with the `standardwebhooks` library and the subscriber's secret,
    // and none with another secret.
    let deliveries: Vec<Value> = got
        .iter()
        .map(|r| json!({"body": String::from_utf8_lossy(&r.body), "headers": r.headers}))
        .collect();
    let cases = json!([
        {"deliveries": &deliveries, "secret": secret, "valid": true},
        {"deliveries": &deliveries, "secret": "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", "valid": false},
    ]);
    let file = dir.path().join("operational-cases.json");
    std::fs::write(&file, cases.to_string()).expect("write");
    let verify = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/verify_signatures.py"
    );
    let mut verifying = std::process::Command::new(&python);
    verifying.arg(verify).arg(&file);
    tokio::task::spawn_blocking(move || run_ok(&mut verifying))
        .await
        .expect("the library ran");
    let mut events: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for request in &got {
        crate::delivery::assert_signed(request, &secret);
        let body: Value = serde_json::from_slice(&request.body).expect("json");
        let kind = body["type"].as_str().expect("type").to_owned();
        events.entry(kind).or_default().push(body["data"].clone());
    }
    let count = |kind: &str| events.get(kind).map_or(0, Vec::len);
    let (a_id, b_id) = (a.json["id"].clone(), b.json["id"].clone());
    let app_id = get(addr, "/api/v1/app/t").await.json["id"].clone();
    assert_eq!(count("endpoint.created"), 2, "{events:?}");
    assert_eq!(
        events["endpoint.created"][0],
        json!({"appId": app_id, "appUid": "t", "endpointId": a_id, "endpointUid": "a"})
    );
    let disabled = &events["endpoint.disabled"];
    assert_eq!(disabled.len(), 1, "{events:?}");
    assert_eq!(
        (
            &disabled[0]["trigger"],
            &disabled[0]["endpointId"],
            &disabled[0]["endpointUid"]
        ),
        (&json!("automatic"), &a_id, &json!("a"))
    );
    assert!(disabled[0]["failSince"].is_string() && disabled[0]["reason"].is_string());
    assert_eq!(count("endpoint.enabled"), 1, "{events:?}");
    assert_eq!(count("endpoint.updated"), 1, "the PATCH: {events:?}");
    assert_eq!(events["endpoint.deleted"][0]["endpointId"], b_id);
    let exhausted = &events["message.attempt.exhausted"];
    assert_eq!(exhausted.len(), 1, "{events:?}");
    assert_eq!(
        (
            &exhausted[0]["msgId"],
            &exhausted[0]["msgEventId"],
            &exhausted[0]["endpointId"]
        ),
        (&m1.json["id"], &json!("evt-1"), &a_id)
    );
    assert_eq!(exhausted[0]["lastAttempt"]["responseStatusCode"], 500);
    assert!(exhausted[0]["lastAttempt"]["id"].is_string());
    let failing_for: Vec<&Value> = events["message.attempt.failing"]
        .iter()
        .map(|d| &d["msgId"])
        .collect();
    assert_eq!(
        failing_for.len(),
        2,
        "the fourth failure of each: {events:?}"
    );
    assert!(failing_for.contains(&&m1.json["id"]) && failing_for.contains(&&m2.json["id"]));
    let recovered = &events["message.attempt.recovered"];
    assert_eq!(
        (
            recovered.len(),
            &recovered[0]["msgId"],
            &recovered[0]["lastAttempt"]["responseStatusCode"]
        ),
        (1, &m2.json["id"], &json!(200))
    );
    let finished = &events["background_task.finished"];
    assert_eq!(
        (
            &finished[0]["taskId"],
            &finished[0]["task"],
            &finished[0]["status"]
        ),
        (
            &task.json["id"],
            &json!("endpoint.recover"),
            &json!("finished")
        ),
        "{events:?}"
    );
    assert_eq!(finished[0]["data"]["messagesSent"], 1, "m1 had failed");
    assert_eq!(got.len(), 11, "nothing else: {events:?}");
    sluice.stop().await;
}

/// An operational event is durable with its cause: killed (SIGKILL) right after the
/// failure policy disabled an endpoint, with the event's delivery held open by the
/// subscriber, the restarted Sluice still delivers `endpoint.disabled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operational_event_survives_a_kill_right_after_its_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[delivery]\nallow_http = true\nallowed_networks = [\"127.0.0.0/8\"]\n\
         retry_schedule_ms = []\ndisable_after_ms = 0\n",
    )
    .expect("config");
    // The first request (the event, sent by the Sluice about to be killed) hangs.
    let ops = Receiver::start(|n| {
        if n == 0 {
            Answer::Hang
        } else {
            Answer::Status(200)
        }
    })
    .await;
    let failing = Receiver::start(|_| Answer::Status(500)).await;
    let daemon = crate::harness::Daemon::spawn_with(&data, Some(&config));
    let addr = daemon.addr;
    let subscribed = post(
        addr,
        "/api/v1/operational-webhook/endpoint",
        &json!({"url": ops.url(), "eventTypes": ["endpoint.disabled"]}),
    )
    .await;
    assert_eq!(subscribed.status, 201, "{}", subscribed.json);
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "k", "uid": "k"}))
            .await
            .status,
        201
    );
    let ep = post(
        addr,
        "/api/v1/app/k/endpoint",
        &json!({"url": failing.url(), "uid": "dies"}),
    )
    .await;
    assert_eq!(ep.status, 201);
    let sent = post(
        addr,
        "/api/v1/app/k/msg",
        &json!({"eventType": "e", "payload": {}}),
    )
    .await;
    assert_eq!(sent.status, 202);
    assert!(
        eventually_json(addr, "/api/v1/app/k/endpoint/dies", |e| e["disabled"]
            == true)
        .await
    );
    // Killed while the event's first delivery is held open: it was never recorded.
    for _ in 0..500 {
        if ops.hanging.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        crate::harness::pause(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(ops.hanging.load(std::sync::atomic::Ordering::SeqCst), 1);
    daemon.kill9();

    let daemon = crate::harness::Daemon::spawn_with(&data, Some(&config));
    let got = ops.wait_for(2).await;
    let event: Value = serde_json::from_slice(&got[1].body).expect("json");
    assert_eq!(event["type"], "endpoint.disabled", "{event}");
    assert_eq!(event["data"]["endpointId"], ep.json["id"]);
    assert_eq!(event["data"]["trigger"], "automatic");
    assert_eq!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "the same event, again"
    );
    drop(daemon);
}
