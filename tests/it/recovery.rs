//! Bringing deliveries back: skipped deliveries and `recover`, `replay-missing`, resend
//! (one manual attempt), send-example, the delivery-status views (attempted destinations,
//! attempted messages, stats), background tasks that resume after a restart, and
//! retention (payloads, then whole messages, never pending work).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sluice::clock::{Clock, format_rfc3339};

use crate::delivery::{endpoint, send, start_delivering};
use crate::harness::{TOKEN, call, eventually_json, get, post, test_config};
use crate::receiver::{Answer, Receiver};

async fn patch(addr: std::net::SocketAddr, path: &str, body: &Value) -> crate::harness::Resp {
    let bytes = serde_json::to_vec(body).expect("json");
    call(addr, "PATCH", path, Some(TOKEN), &[], &bytes).await
}

fn an_hour_ago() -> String {
    format_rfc3339(Clock::System.now_ms() - 3_600_000)
}

fn webhook_ids(received: &[crate::receiver::Received]) -> BTreeSet<String> {
    received
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

/// Waits until the background task `id` has ended; returns it.
async fn task_ended(addr: std::net::SocketAddr, id: &str) -> Value {
    let path = format!("/api/v1/background-task/{id}");
    assert!(
        eventually_json(addr, &path, |t| t["status"] != "running").await,
        "the task ends"
    );
    get(addr, &path).await.json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_skipped_while_disabled_come_back_with_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "r", "uid": "r"}))
            .await
            .status,
        201
    );
    let ep = endpoint(addr, "r", json!({"url": hook.url(), "disabled": true})).await;
    let ep_path = format!("/api/v1/app/r/endpoint/{}", ep["id"].as_str().expect("id"));
    let mut sent = BTreeSet::new();
    for n in 0..5 {
        sent.insert(send(addr, "r", n).await);
    }

    // Recorded as skipped: listed as failed deliveries, never attempted.
    let listed = get(addr, &format!("{ep_path}/msg")).await.json;
    let statuses: Vec<&Value> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| &m["status"])
        .collect();
    assert_eq!(statuses, vec![&json!(2); 5], "{listed}");
    let stats = get(addr, &format!("{ep_path}/stats")).await.json;
    assert_eq!(
        (stats["fail"].as_u64(), stats["success"].as_u64()),
        (Some(5), Some(0))
    );
    let attempts = get(
        addr,
        &format!(
            "/api/v1/app/r/attempt/endpoint/{}",
            ep["id"].as_str().expect("id")
        ),
    )
    .await
    .json;
    assert_eq!(attempts["data"], json!([]));
    assert!(hook.received().is_empty());

    // Recover refuses a disabled endpoint and changes nothing.
    let window = json!({"since": an_hour_ago()});
    let refused = post(addr, &format!("{ep_path}/recover"), &window).await;
    assert_eq!(
        (refused.status, refused.json["code"].as_str()),
        (409, Some("endpoint_disabled"))
    );

    assert_eq!(
        patch(addr, &ep_path, &json!({"disabled": false}))
            .await
            .status,
        200
    );
    let started = post(addr, &format!("{ep_path}/recover"), &window).await;
    assert_eq!(started.status, 202, "{}", started.json);
    assert_eq!(
        (
            started.json["status"].as_str(),
            started.json["task"].as_str()
        ),
        (Some("running"), Some("endpoint.recover"))
    );
    let id = started.json["id"].as_str().expect("id");
    assert!(id.starts_with("qtask_"));
    let task = task_ended(addr, id).await;
    assert_eq!(
        (
            task["status"].as_str(),
            task["data"]["messagesSent"].as_u64()
        ),
        (Some("finished"), Some(5)),
        "{task}"
    );

    assert_eq!(webhook_ids(&hook.wait_for(5).await), sent);
    // Recovered deliveries are manual attempts (trigger 1), and now succeeded.
    let attempts_path = format!(
        "/api/v1/app/r/attempt/endpoint/{}",
        ep["id"].as_str().expect("id")
    );
    assert!(
        eventually_json(addr, &attempts_path, |a| a["data"]
            .as_array()
            .is_some_and(|d| d.len() == 5))
        .await
    );
    let attempts = get(addr, &attempts_path).await.json;
    for attempt in attempts["data"].as_array().expect("data") {
        assert_eq!(
            (attempt["triggerType"].as_u64(), attempt["status"].as_u64()),
            (Some(1), Some(0)),
            "{attempt}"
        );
    }
    let stats = get(addr, &format!("{ep_path}/stats")).await.json;
    assert_eq!(
        (stats["fail"].as_u64(), stats["success"].as_u64()),
        (Some(0), Some(5)),
        "{stats}"
    );

    // The task is listed, and filters work.
    let tasks = get(
        addr,
        "/api/v1/background-task?status=finished&task=endpoint.recover",
    )
    .await
    .json;
    assert_eq!(tasks["data"][0]["id"].as_str(), Some(id));
    let none = get(addr, "/api/v1/background-task?task=endpoint.replay")
        .await
        .json;
    assert_eq!(none["data"], json!([]));
    let bad = post(
        addr,
        &format!("{ep_path}/recover"),
        &json!({"since": "yesterday"}),
    )
    .await;
    assert_eq!(
        (bad.status, bad.json["detail"][0]["loc"].clone()),
        (422, json!(["body", "since"]))
    );
    let too_wide = json!({"since": format_rfc3339(Clock::System.now_ms() - 15 * 86_400_000)});
    assert_eq!(
        post(addr, &format!("{ep_path}/recover"), &too_wide)
            .await
            .status,
        422
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_missing_delivers_messages_that_had_no_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "m", "uid": "m"}))
            .await
            .status,
        201
    );
    let mut wanted = BTreeSet::new();
    for (n, channel) in ["c1", "c2", "c1", "c1"].iter().enumerate() {
        let body = json!({"eventType": "t.e", "payload": {"n": n}, "channels": [channel]});
        let resp = post(addr, "/api/v1/app/m/msg", &body).await;
        assert_eq!(resp.status, 202);
        if *channel == "c1" {
            wanted.insert(resp.json["id"].as_str().expect("id").to_owned());
        }
    }
    let ep = endpoint(addr, "m", json!({"url": hook.url(), "channels": ["c1"]})).await;
    let ep_path = format!("/api/v1/app/m/endpoint/{}", ep["id"].as_str().expect("id"));
    let window = json!({"since": an_hour_ago()});
    let started = post(addr, &format!("{ep_path}/replay-missing"), &window).await;
    assert_eq!(
        (started.status, started.json["task"].as_str()),
        (202, Some("endpoint.replay"))
    );
    let task = task_ended(addr, started.json["id"].as_str().expect("id")).await;
    assert_eq!(task["data"]["messagesSent"].as_u64(), Some(3), "{task}");
    assert_eq!(webhook_ids(&hook.wait_for(3).await), wanted);

    // Nothing is missing any more: a second replay sends nothing.
    let again = post(addr, &format!("{ep_path}/replay-missing"), &window).await;
    let task = task_ended(addr, again.json["id"].as_str().expect("id")).await;
    assert_eq!(task["data"]["messagesSent"].as_u64(), Some(0), "{task}");
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_is_one_manual_attempt_that_is_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A fast schedule: a resend that were retried would show up at once.
    let sluice = start_delivering(dir.path(), &[20, 20, 20]).await;
    let addr = sluice.addr;
    // The first delivery succeeds; everything after fails.
    let hook = Receiver::start(|n| Answer::Status(if n == 0 { 200 } else { 500 })).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "s", "uid": "s"}))
            .await
            .status,
        201
    );
    let ep = endpoint(addr, "s", json!({"url": hook.url()})).await;
    let ep_id = ep["id"].as_str().expect("id");
    let msg = send(addr, "s", 1).await;
    hook.wait_for(1).await;
    let destinations = format!("/api/v1/app/s/msg/{msg}/endpoint");
    assert!(
        eventually_json(addr, &destinations, |d| d["data"][0]["statusText"]
            == "success")
        .await
    );
    let listed = get(addr, &destinations).await.json;
    assert_eq!(
        (listed["data"][0]["id"].as_str(), listed["done"].as_bool()),
        (Some(ep_id), Some(true))
    );

    let resend_path = format!("/api/v1/app/s/msg/{msg}/endpoint/{ep_id}/resend");
    let resent = post(addr, &resend_path, &json!({})).await;
    assert_eq!((resent.status, resent.json.clone()), (202, json!({})));
    let got = hook.wait_for(2).await;
    assert_eq!(got[1].header("webhook-id"), msg);
    // The manual attempt failed, and the delivery is final: failed, no next attempt.
    assert!(eventually_json(addr, &destinations, |d| d["data"][0]["status"] == 2).await);
    let listed = get(addr, &destinations).await.json;
    assert!(listed["data"][0].get("nextAttempt").is_none(), "{listed}");
    let attempts = get(addr, &format!("/api/v1/app/s/attempt/msg/{msg}"))
        .await
        .json;
    let triggers: Vec<(u64, u64)> = attempts["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|a| {
            (
                a["triggerType"].as_u64().expect("t"),
                a["status"].as_u64().expect("s"),
            )
        })
        .collect();
    assert_eq!(
        triggers,
        vec![(1, 2), (0, 0)],
        "newest first: the failed manual one"
    );
    let by_endpoint = get(
        addr,
        &format!("/api/v1/app/s/endpoint/{ep_id}/msg?status=2"),
    )
    .await
    .json;
    assert_eq!(by_endpoint["data"][0]["id"].as_str(), Some(msg.as_str()));

    // Unknown endpoint: 404. Expunged payload: 400 missing_payload.
    let missing = post(
        addr,
        &format!("/api/v1/app/s/msg/{msg}/endpoint/ep_nope/resend"),
        &json!({}),
    )
    .await;
    assert_eq!(missing.status, 404);
    let expunge = call(
        addr,
        "DELETE",
        &format!("/api/v1/app/s/msg/{msg}/content"),
        Some(TOKEN),
        &[],
        b"",
    )
    .await;
    assert_eq!(expunge.status, 204);
    let gone = post(addr, &resend_path, &json!({})).await;
    assert_eq!(
        (gone.status, gone.json["code"].as_str()),
        (400, Some("missing_payload"))
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_example_reaches_only_its_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    let other = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "x", "uid": "x"}))
            .await
            .status,
        201
    );
    // A channel filter that a ping does not match: send-example ignores filters.
    let ep = endpoint(addr, "x", json!({"url": hook.url(), "channels": ["only"]})).await;
    endpoint(addr, "x", json!({"url": other.url()})).await;
    let ep_id = ep["id"].as_str().expect("id");
    let path = format!("/api/v1/app/x/endpoint/{ep_id}/send-example");
    let sent = post(addr, &path, &json!({"eventType": "svix.ping"})).await;
    assert_eq!(
        (sent.status, sent.json["eventType"].as_str()),
        (200, Some("svix.ping")),
        "{}",
        sent.json
    );
    let got = hook.wait_for(1).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).expect("json"),
        json!({"success": true})
    );
    let msg = sent.json["id"].as_str().expect("id");
    let destinations = get(addr, &format!("/api/v1/app/x/msg/{msg}/endpoint"))
        .await
        .json;
    let ids: Vec<&str> = destinations["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, vec![ep_id]);
    let unknown = post(addr, &path, &json!({"eventType": "no.such.type"})).await;
    assert_eq!(
        (unknown.status, unknown.json["code"].as_str()),
        (400, Some("invalid_scheme"))
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_task_resumes_after_a_restart() {
    use sluice::log::ops::{Envelope, Op, Outcome};
    use sluice::log::schema::{TaskKind, TaskStatus};
    use sluice::log::tables;
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "b", "uid": "b"}))
            .await
            .status,
        201
    );
    let ep = endpoint(addr, "b", json!({"url": hook.url(), "disabled": true})).await;
    let ep_path = format!("/api/v1/app/b/endpoint/{}", ep["id"].as_str().expect("id"));
    let senders: Vec<_> = (0..8)
        .map(|c| {
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in (c..250).step_by(8) {
                    ids.push(send(addr, "b", n).await);
                }
                ids
            })
        })
        .collect();
    let mut sent = BTreeSet::new();
    for s in senders {
        sent.extend(s.await.expect("sender"));
    }
    assert_eq!(
        patch(addr, &ep_path, &json!({"disabled": false}))
            .await
            .status,
        200
    );
    sluice.stop().await;

    // While Sluice is down, a recover task is created and runs exactly one batch: as if
    // the process had stopped in the middle of the task.
    let config = test_config(dir.path());
    let (log, writer) = crate::harness::open_log(dir.path(), &config.storage);
    let app_key = log
        .read(|rtxn, dbs| Ok(tables::app_by_ref(rtxn, dbs, "b")?.expect("app").key))
        .expect("read");
    let now_ms = Clock::System.now_ms();
    let create = Op::CreateTask {
        app_key,
        endpoint: ep["id"].as_str().expect("id").to_owned(),
        id: sluice::ids::new_id(sluice::ids::IdKind::Task, now_ms),
        kind: TaskKind::Recover,
        since_ms: 0,
        until_ms: now_ms,
    };
    let Outcome::TaskCreated(task) = log
        .submit(Envelope::new(create, now_ms))
        .await
        .expect("write")
    else {
        panic!("task not created");
    };
    let advance = Op::AdvanceTask { task_key: task.key };
    let Outcome::TaskAdvanced(Some(task)) = log
        .submit(Envelope::new(advance, now_ms))
        .await
        .expect("write")
    else {
        panic!("task not advanced");
    };
    assert_eq!(
        (task.status, task.messages_sent),
        (TaskStatus::Running, 100)
    );
    drop(log);
    tokio::task::spawn_blocking(move || writer.wait())
        .await
        .expect("writer");

    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let ended = task_ended(addr, &task.id).await;
    assert_eq!(
        (
            ended["status"].as_str(),
            ended["data"]["messagesSent"].as_u64()
        ),
        (Some("finished"), Some(250)),
        "{ended}"
    );
    assert_eq!(webhook_ids(&hook.wait_for(250).await), sent);
    let stats_path = format!("{ep_path}/stats");
    assert!(eventually_json(addr, &stats_path, |s| s["success"] == 250).await);
    assert_eq!(
        hook.received().len(),
        250,
        "each recovered delivery was made once"
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_payloads_then_messages_but_never_pending_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = 1_800_000_000_000;
    let clock = Clock::manual(t0);
    let mut config = crate::harness::loopback_config(dir.path());
    config.delivery.retry_schedule_ms = vec![60_000];
    config.storage.retention_days = 2;
    let sluice = sluice::app::start(&config, Some(crate::harness::TOKEN), clock.clone())
        .await
        .expect("start");
    let addr = sluice.addr;
    let fast = Receiver::start(|_| Answer::Status(200)).await;
    let hung = Receiver::start(|_| Answer::Hang).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "t", "uid": "t"}))
            .await
            .status,
        201
    );
    endpoint(addr, "t", json!({"url": fast.url()})).await;
    endpoint(addr, "t", json!({"url": hung.url(), "channels": ["slow"]})).await;
    let create = |body: Value| async move {
        let resp = post(addr, "/api/v1/app/t/msg", &body).await;
        assert_eq!(resp.status, 202);
        resp.json["id"].as_str().expect("id").to_owned()
    };
    let short =
        create(json!({"eventType": "t", "payload": {"n": 1}, "payloadRetentionPeriod": 1})).await;
    let pending =
        create(json!({"eventType": "t", "payload": {"n": 2}, "channels": ["slow"]})).await;
    let young = create(json!({"eventType": "t", "payload": {"n": 3}})).await;
    fast.wait_for(3).await;
    hung.wait_for(1).await;

    // A day and an hour later: the short message's payload is gone, its record is not.
    clock.advance_ms(25 * 3_600_000);
    let path = format!("/api/v1/app/t/msg/{short}");
    assert!(eventually_json(addr, &path, |m| m["payload"] == json!({"expired": true})).await);
    let kept = get(addr, &format!("/api/v1/app/t/msg/{young}")).await.json;
    assert_eq!(kept["payload"], json!({"n": 3}));

    // Past the two-day retention: the delivered oldest message goes with its attempts;
    // the one still pending stays, and so does everything younger than it.
    clock.advance_ms(2 * 86_400_000);
    assert!(eventually_json(addr, &path, |m| m["code"] == "not_found").await);
    let attempts = get(addr, &format!("/api/v1/app/t/attempt/msg/{short}")).await;
    assert_eq!(attempts.status, 404);
    for id in [&pending, &young] {
        let resp = get(addr, &format!("/api/v1/app/t/msg/{id}")).await;
        assert_eq!(resp.status, 200, "{id} is kept");
    }
    sluice.stop().await;
}

/// An endpoint deleted after its messages leaves its delivery rows behind (one still
/// pending, due long after the retention): retention takes them with their messages,
/// and the log ends with no row of either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_takes_a_deleted_endpoints_rows_with_their_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = 1_800_000_000_000;
    let clock = Clock::manual(t0);
    let mut config = crate::harness::loopback_config(dir.path());
    // A failed attempt waits ten days for its retry.
    config.delivery.retry_schedule_ms = vec![10 * 86_400_000];
    config.storage.retention_days = 2;
    let sluice = sluice::app::start(&config, Some(crate::harness::TOKEN), clock.clone())
        .await
        .expect("start");
    let addr = sluice.addr;
    let kept = Receiver::start(|_| Answer::Status(200)).await;
    let failing = Receiver::start(|_| Answer::Status(500)).await;
    let created = post(addr, "/api/v1/app", &json!({"name": "r", "uid": "r"})).await;
    assert_eq!(created.status, 201);
    endpoint(addr, "r", json!({"url": kept.url()})).await;
    let doomed = endpoint(addr, "r", json!({"url": failing.url()})).await;
    let doomed_id = doomed["id"].as_str().expect("id");
    let mut ids = Vec::new();
    for n in 0..3 {
        let resp = post(
            addr,
            "/api/v1/app/r/msg",
            &json!({"eventType": "t", "payload": {"n": n}}),
        )
        .await;
        assert_eq!(resp.status, 202);
        ids.push(resp.json["id"].as_str().expect("id").to_owned());
    }
    kept.wait_for(3).await;
    failing.wait_for(3).await;
    // Each failed attempt is recorded, its retry ten days away: three pending rows.
    let attempts = format!("/api/v1/app/r/attempt/endpoint/{doomed_id}");
    assert!(
        eventually_json(addr, &attempts, |page| page["data"]
            .as_array()
            .is_some_and(|a| a.len() == 3))
        .await
    );
    let path = format!("/api/v1/app/r/endpoint/{doomed_id}");
    let deleted = call(addr, "DELETE", &path, Some(TOKEN), &[], b"").await;
    assert_eq!(deleted.status, 204, "{}", deleted.json);

    clock.advance_ms(3 * 86_400_000);
    for id in &ids {
        let path = format!("/api/v1/app/r/msg/{id}");
        assert!(
            eventually_json(addr, &path, |m| m["code"] == "not_found").await,
            "{id} is swept"
        );
    }
    let swept_tables = [
        "msgs",
        "delivery_rows",
        "endpoint_deliveries",
        "due",
        "attempts",
        "msg_attempts",
        "endpoint_attempts",
    ];
    let left = crate::harness::tables_with_rows(sluice.log(), &swept_tables);
    assert!(left.is_empty(), "rows left in {left:?}");
    sluice.stop().await;
}

/// A send-example test message was for its one endpoint: replay-missing on another
/// endpoint does not deliver it there (it did before), while real messages it missed
/// are replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_missing_leaves_out_send_example_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    let late = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "e", "uid": "e"}))
            .await
            .status,
        201
    );
    let ep = endpoint(addr, "e", json!({"url": hook.url()})).await;
    let ep_id = ep["id"].as_str().expect("id");
    let since = format_rfc3339(Clock::System.now_ms() - 1_000);
    let path = format!("/api/v1/app/e/endpoint/{ep_id}/send-example");
    assert_eq!(
        post(addr, &path, &json!({"eventType": "svix.ping"}))
            .await
            .status,
        200
    );
    send(addr, "e", 1).await;
    hook.wait_for(2).await;
    // An endpoint created afterwards replays what it missed: the real message only.
    let other = endpoint(addr, "e", json!({"url": late.url()})).await;
    let other_id = other["id"].as_str().expect("id");
    let replay = format!("/api/v1/app/e/endpoint/{other_id}/replay-missing");
    let task = post(addr, &replay, &json!({"since": since})).await;
    assert_eq!(task.status, 202, "{}", task.json);
    let task_path = format!(
        "/api/v1/background-task/{}",
        task.json["id"].as_str().expect("id")
    );
    let finished = eventually_json(addr, &task_path, |t| t["status"] == "finished").await;
    assert!(finished, "the replay finished");
    let got = late.wait_for(1).await;
    let task = get(addr, &task_path).await.json;
    assert_eq!(task["data"]["messagesSent"], 1, "{task}");
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_slice(&got[0].body).expect("json");
    assert_eq!(body["n"], 1, "the real message, not the ping");
    sluice.stop().await;
}
