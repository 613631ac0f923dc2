//! Svix parity (issue 14): fields and filters an SDK user writes that Sluice must honour
//! rather than accept and ignore, each with the regression it fixes.

use serde_json::json;

use crate::delivery::start_delivering;
use crate::harness::{TOKEN, call, eventually_json, get, post, start};
use crate::receiver::{Answer, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_type_group_name_round_trips_and_examples_must_be_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    let created = post(
        addr,
        "/api/v1/event-type",
        &json!({"name": "g.one", "description": "G", "groupName": "billing",
                "schemas": {"1": {"examples": [{"n": 1}]}}}),
    )
    .await;
    assert_eq!(
        (created.status, &created.json["groupName"]),
        (201, &json!("billing"))
    );
    let got = get(addr, "/api/v1/event-type/g.one").await.json;
    assert_eq!(got["groupName"], json!("billing"));
    let patched = call(
        addr,
        "PATCH",
        "/api/v1/event-type/g.one",
        Some(TOKEN),
        &[],
        br#"{"groupName":null}"#,
    )
    .await;
    assert_eq!(
        (patched.status, &patched.json["groupName"]),
        (200, &json!(null))
    );

    // A string example used to be stored, sent by send-example, and then break every
    // `message.get/list(with_content=True)` of the application in the SDK.
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/event-type",
            json!({"name": "g.two", "description": "G", "schemas": {"1": {"examples": ["text"]}}}),
        ),
        (
            "PUT",
            "/api/v1/event-type/g.one",
            json!({"description": "G", "schemas": {"1": {"examples": [{"ok": 1}, 3]}}}),
        ),
        (
            "PATCH",
            "/api/v1/event-type/g.one",
            json!({"schemas": {"1": {"examples": {"n": 1}}}}),
        ),
    ] {
        let answer = call(
            addr,
            method,
            path,
            Some(TOKEN),
            &[],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(
            (answer.status, &answer.json["detail"][0]["loc"]),
            (422, &json!(["body", "schemas", "1", "examples"])),
            "{method} {path}: {}",
            answer.json
        );
    }
    let kept = get(addr, "/api/v1/event-type/g.one").await.json;
    assert_eq!(kept["schemas"], json!({"1": {"examples": [{"n": 1}]}}));
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_lists_take_every_svix_filter_and_a_response_body_can_be_expunged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "a", "uid": "a"}))
            .await
            .status,
        201
    );
    let ep = post(addr, "/api/v1/app/a/endpoint", &json!({"url": hook.url()})).await;
    assert_eq!(ep.status, 201, "{}", ep.json);
    let mut ids = Vec::new();
    for (event_type, channel) in [("t.one", "eu"), ("t.two", "us")] {
        let m = post(
            addr,
            "/api/v1/app/a/msg",
            &json!({"eventType": event_type, "channels": [channel], "payload": {"k": 1}}),
        )
        .await;
        assert_eq!(m.status, 202, "{}", m.json);
        ids.push(m.json["id"].as_str().expect("id").to_owned());
    }
    let by_endpoint = format!(
        "/api/v1/app/a/attempt/endpoint/{}",
        ep.json["id"].as_str().expect("id")
    );
    assert!(
        eventually_json(addr, &by_endpoint, |j| j["data"]
            .as_array()
            .is_some_and(|d| d.len() == 2))
        .await,
        "both attempts recorded"
    );
    let msg_ids = |path: String| async move {
        let answer = get(addr, &path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.json);
        answer.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|a| a["msgId"].as_str().expect("msgId").to_owned())
            .collect::<Vec<_>>()
    };
    let (one, two) = (ids[0].clone(), ids[1].clone());
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!("{by_endpoint}?event_types=t.one"),
            vec![one.clone()],
        ),
        (format!("{by_endpoint}?channel=us"), vec![two.clone()]),
        (
            format!("{by_endpoint}?status=0"),
            vec![two.clone(), one.clone()],
        ),
        (format!("{by_endpoint}?status=1"), vec![]),
        (format!("{by_endpoint}?status=3"), vec![]),
        (format!("{by_endpoint}?status=4"), vec![]),
        (format!("{by_endpoint}?after=2999-01-01T00:00:00Z"), vec![]),
        (format!("{by_endpoint}?before=2000-01-01T00:00:00Z"), vec![]),
        (
            format!("{by_endpoint}?before=2999-01-01T00:00:00Z&event_types=t.two"),
            vec![two.clone()],
        ),
        (
            format!("/api/v1/app/a/attempt/msg/{one}?event_types=t.two"),
            vec![],
        ),
        (
            format!("/api/v1/app/a/attempt/msg/{one}?event_types=t.one&channel=eu"),
            vec![one.clone()],
        ),
        (
            format!("/api/v1/app/a/attempt/msg/{one}?channel=us"),
            vec![],
        ),
        (
            format!("/api/v1/app/a/attempt/msg/{one}?after=2999-01-01T00:00:00Z"),
            vec![],
        ),
        (format!("/api/v1/app/a/attempt/msg/{one}?status=1"), vec![]),
    ];
    // Which attempts each filter passes, not their order: the two messages are delivered
    // concurrently, so which attempt is newer varies.
    for (path, mut want) in cases {
        let mut got = msg_ids(path.clone()).await;
        got.sort();
        want.sort();
        assert_eq!(got, want, "{path}");
    }
    assert_eq!(
        get(addr, &format!("{by_endpoint}?status=5")).await.status,
        422
    );

    // Expunging an attempt's response body.
    let listed = get(addr, &format!("/api/v1/app/a/attempt/msg/{one}"))
        .await
        .json;
    let attempt = listed["data"][0]["id"]
        .as_str()
        .expect("attempt id")
        .to_owned();
    let delete = |path: String| async move {
        call(addr, "DELETE", &path, Some(TOKEN), &[], b"")
            .await
            .status
    };
    assert_eq!(
        delete(format!("/api/v1/app/a/msg/{two}/attempt/{attempt}/content")).await,
        404,
        "an attempt of another message"
    );
    assert_eq!(
        delete(format!(
            "/api/v1/app/a/msg/{one}/attempt/atmpt_missing/content"
        ))
        .await,
        404
    );
    assert_eq!(
        delete(format!("/api/v1/app/a/msg/{one}/attempt/{attempt}/content")).await,
        204
    );
    let got = get(addr, &format!("/api/v1/app/a/msg/{one}/attempt/{attempt}")).await;
    assert_eq!(
        (
            got.status,
            &got.json["response"],
            &got.json["responseStatusCode"]
        ),
        (200, &json!("EXPUNGED"), &json!(200))
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_tags_are_stored_shown_and_filter_the_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "t", "uid": "t"}))
            .await
            .status,
        201
    );
    let tagged = post(
        addr,
        "/api/v1/app/t/msg",
        &json!({"eventType": "e", "payload": {}, "tags": ["project_1", "beta"]}),
    )
    .await;
    assert_eq!(
        (tagged.status, &tagged.json["tags"]),
        (202, &json!(["project_1", "beta"]))
    );
    let id = tagged.json["id"].as_str().expect("id").to_owned();
    let plain = post(
        addr,
        "/api/v1/app/t/msg",
        &json!({"eventType": "e", "payload": {}}),
    )
    .await;
    assert_eq!(plain.status, 202);
    assert!(plain.json.get("tags").is_none());
    let got = get(addr, &format!("/api/v1/app/t/msg/{id}")).await.json;
    assert_eq!(got["tags"], json!(["project_1", "beta"]));
    let listed = get(addr, "/api/v1/app/t/msg?tag=beta").await.json;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let none = get(addr, "/api/v1/app/t/msg?tag=gamma").await.json;
    assert_eq!(none["data"], json!([]));
    for tags in [
        json!("beta"),
        json!(["a", "b", "c", "d", "e", "f"]),
        json!(["no spaces"]),
    ] {
        let bad = post(
            addr,
            "/api/v1/app/t/msg",
            &json!({"eventType": "e", "payload": {}, "tags": tags}),
        )
        .await;
        assert_eq!(
            (bad.status, &bad.json["detail"][0]["loc"]),
            (422, &json!(["body", "tags"])),
            "{tags}"
        );
    }
    sluice.stop().await;
}

/// `PUT …/endpoint/{uid}` creates the endpoint when none has that uid (201, named by the
/// path), as Svix does; a second PUT updates it (200). An id that names nothing stays 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_creates_an_endpoint_that_does_not_exist_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "u", "uid": "u"}))
            .await
            .status,
        201
    );
    let put = |body: serde_json::Value, path: &'static str| async move {
        call(
            addr,
            "PUT",
            path,
            Some(TOKEN),
            &[],
            body.to_string().as_bytes(),
        )
        .await
    };
    let created = put(
        json!({"url": "https://hooks.example.com/a"}),
        "/api/v1/app/u/endpoint/billing",
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.json["uid"], "billing");
    let updated = put(
        json!({"url": "https://hooks.example.com/b"}),
        "/api/v1/app/u/endpoint/billing",
    )
    .await;
    assert_eq!(
        (updated.status, &updated.json["id"]),
        (200, &created.json["id"])
    );
    assert_eq!(updated.json["url"], "https://hooks.example.com/b");
    let by_id = put(
        json!({"url": "https://hooks.example.com/c"}),
        "/api/v1/app/u/endpoint/ep_2bCmYSXH7E3zZ3rV8b3KqXhQ1oF",
    )
    .await;
    assert_eq!(by_id.status, 404, "an id is never created by a PUT");
    sluice.stop().await;
}

/// `deliverAt`: the deliveries wait in the `due` table until then (here on a clock the
/// test moves, past the shards' in-memory horizon, so the due-table scan must bring them
/// back), the message shows it, a past time means now, and beyond the horizon (or the
/// payload's retention) is a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_at_holds_deliveries_until_then() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = 1_800_000_000_000;
    let clock = sluice::clock::Clock::manual(t0);
    let sluice =
        crate::delivery::start_delivering_clocked(dir.path(), &[60_000], clock.clone()).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "s", "uid": "s"}))
            .await
            .status,
        201
    );
    let ep = post(addr, "/api/v1/app/s/endpoint", &json!({"url": hook.url()})).await;
    assert_eq!(ep.status, 201, "{}", ep.json);
    let at = |ms: u64| sluice::clock::format_rfc3339(ms);
    // Two hours ahead: beyond the shards' timers (`HORIZON_MS`), so it waits in the log.
    let later_ms = t0 + 2 * 3_600_000;
    let scheduled = post(
        addr,
        "/api/v1/app/s/msg",
        &json!({"eventType": "e", "payload": {"n": "later"}, "deliverAt": at(later_ms)}),
    )
    .await;
    assert_eq!(scheduled.status, 202, "{}", scheduled.json);
    assert_eq!(scheduled.json["deliverAt"], json!(at(later_ms)));
    let id = scheduled.json["id"].as_str().expect("id").to_owned();
    assert_eq!(
        get(addr, &format!("/api/v1/app/s/msg/{id}")).await.json["deliverAt"],
        json!(at(later_ms))
    );
    // A time already past is now; it arrives, and the scheduled one did not come with it.
    let past = post(
        addr,
        "/api/v1/app/s/msg",
        &json!({"eventType": "e", "payload": {"n": "past"}, "deliverAt": at(t0 - 60_000)}),
    )
    .await;
    assert_eq!(past.status, 202, "{}", past.json);
    let first = hook.wait_for(1).await;
    assert_eq!(
        first[0].header("webhook-id"),
        past.json["id"].as_str().expect("id")
    );
    let destinations = format!("/api/v1/app/s/msg/{id}/endpoint");
    let waiting = get(addr, &destinations).await.json;
    assert_eq!(
        waiting["data"][0]["nextAttempt"],
        json!(at(later_ms)),
        "{waiting}"
    );
    assert_eq!(hook.received().len(), 1, "not before its time");

    // A minute before its time, still nothing; once the time comes, it is sent.
    clock.advance_ms(later_ms - t0 - 60_000);
    let other = post(
        addr,
        "/api/v1/app/s/msg",
        &json!({"eventType": "e", "payload": {"n": "marker"}}),
    )
    .await;
    let got = hook.wait_for(2).await;
    assert_eq!(
        got[1].header("webhook-id"),
        other.json["id"].as_str().expect("id")
    );
    assert_eq!(hook.received().len(), 2, "not a minute early");
    clock.advance_ms(60_000);
    let got = hook.wait_for(3).await;
    assert_eq!(got[2].header("webhook-id"), id);

    // The horizon (7 days by default), the payload's retention, and the syntax.
    let now_ms = clock.now_ms();
    for (deliver_at, retention) in [
        (json!(at(now_ms + 8 * 86_400_000)), json!(null)),
        (json!(at(now_ms + 2 * 86_400_000)), json!(1)),
        (json!("tomorrow"), json!(null)),
        (json!(12), json!(null)),
    ] {
        let refused = post(
            addr,
            "/api/v1/app/s/msg",
            &json!({"eventType": "e", "payload": {}, "deliverAt": deliver_at,
                    "payloadRetentionPeriod": retention}),
        )
        .await;
        assert_eq!(
            (refused.status, &refused.json["detail"][0]["loc"]),
            (422, &json!(["body", "deliverAt"])),
            "{deliver_at}: {}",
            refused.json
        );
    }
    sluice.stop().await;
}

/// Svix's inline `application` on message create: made with the message when the path's
/// uid names none, used as it is when it does; its uid must be the path's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_application_is_created_with_its_message_or_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    let send = |path: &'static str, application: serde_json::Value| async move {
        post(
            addr,
            path,
            &json!({"eventType": "e", "payload": {"k": 1}, "application": application}),
        )
        .await
    };
    let missing = send("/api/v1/app/fresh/msg", json!(null)).await;
    assert_eq!(missing.status, 404, "without application: {}", missing.json);
    let first = send(
        "/api/v1/app/fresh/msg",
        json!({"name": "Fresh", "uid": "fresh", "metadata": {"tier": "gold"}}),
    )
    .await;
    assert_eq!(first.status, 202, "{}", first.json);
    let app = get(addr, "/api/v1/app/fresh").await;
    assert_eq!(
        (app.status, &app.json["name"], &app.json["metadata"]),
        (200, &json!("Fresh"), &json!({"tier": "gold"}))
    );
    let second = send(
        "/api/v1/app/fresh/msg",
        json!({"name": "Renamed", "uid": "fresh"}),
    )
    .await;
    assert_eq!(second.status, 202, "{}", second.json);
    let after = get(addr, "/api/v1/app/fresh").await.json;
    assert_eq!(
        (&after["id"], &after["name"]),
        (&app.json["id"], &json!("Fresh")),
        "an existing application is used, not changed"
    );
    let listed = get(addr, "/api/v1/app/fresh/msg").await.json;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2));
    for (application, want) in [
        (json!({"name": "X"}), "application_uid_missing"),
        (
            json!({"name": "X", "uid": "other"}),
            "application_uid_mismatch",
        ),
    ] {
        let refused = send("/api/v1/app/brand-new/msg", application).await;
        assert_eq!(
            (refused.status, &refused.json["detail"][0]["loc"]),
            (422, &json!(["body", "application", "uid"])),
            "{}",
            refused.json
        );
        assert!(
            refused.json["detail"][0]["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with(want)),
            "{}",
            refused.json
        );
    }
    let bad_name = send(
        "/api/v1/app/brand-new/msg",
        json!({"name": "", "uid": "brand-new"}),
    )
    .await;
    assert_eq!(bad_name.status, 422, "{}", bad_name.json);
    assert_eq!(get(addr, "/api/v1/app/brand-new").await.status, 404);
    sluice.stop().await;
}

/// With `allow_http` off, an `http://` URL is a 422 at create and update, and so is an IP
/// literal the destination policy refuses (it used to be stored and fail every attempt).
/// A name passes (what it resolves to is judged at each attempt); a polling-only
/// endpoint's URL is never delivered to, so it is not judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_the_destination_policy_refuses_are_422() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "d", "uid": "d"}))
            .await
            .status,
        201
    );
    for url in [
        "http://hooks.example.com/a",
        "https://10.1.2.3/a",
        "https://127.0.0.1:8443/a",
        "https://[::1]/a",
        "https://2130706433/a",
        "https://169.254.169.254/latest",
    ] {
        let refused = post(addr, "/api/v1/app/d/endpoint", &json!({"url": url})).await;
        assert_eq!(
            (refused.status, &refused.json["detail"][0]["loc"]),
            (422, &json!(["body", "url"])),
            "{url}: {}",
            refused.json
        );
    }
    let ok = post(
        addr,
        "/api/v1/app/d/endpoint",
        &json!({"url": "https://hooks.example.com/a", "uid": "ok"}),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    let public = post(
        addr,
        "/api/v1/app/d/endpoint",
        &json!({"url": "https://93.184.215.14/a"}),
    )
    .await;
    assert_eq!(public.status, 201, "a public literal: {}", public.json);
    for (method, body) in [
        ("PATCH", json!({"url": "http://hooks.example.com/b"})),
        ("PUT", json!({"url": "https://192.168.1.1/b"})),
    ] {
        let refused = call(
            addr,
            method,
            "/api/v1/app/d/endpoint/ok",
            Some(TOKEN),
            &[],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(refused.status, 422, "{method}: {}", refused.json);
    }
    assert_eq!(
        get(addr, "/api/v1/app/d/endpoint/ok").await.json["url"],
        "https://hooks.example.com/a"
    );
    let polling = post(
        addr,
        "/api/v1/app/d/endpoint",
        &json!({"url": "http://127.0.0.1/unused", "pollingOnly": true}),
    )
    .await;
    assert_eq!(polling.status, 201, "{}", polling.json);
    sluice.stop().await;
}

/// `POST …/endpoint/{ep}/bulk-replay`: a background task that re-sends, as manual
/// attempts, the endpoint's deliveries of the window that pass `status`, `eventTypes`,
/// `channel` and `tag`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_re_sends_the_deliveries_its_filters_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "b", "uid": "b"}))
            .await
            .status,
        201
    );
    let ep = post(
        addr,
        "/api/v1/app/b/endpoint",
        &json!({"url": hook.url(), "uid": "r"}),
    )
    .await;
    assert_eq!(ep.status, 201, "{}", ep.json);
    let mut ids = Vec::new();
    for (event_type, channel, tag) in [("t.a", "eu", "x"), ("t.b", "eu", "y"), ("t.a", "us", "y")] {
        let m = post(
            addr,
            "/api/v1/app/b/msg",
            &json!({"eventType": event_type, "channels": [channel], "tags": [tag],
                    "payload": {"k": 1}}),
        )
        .await;
        assert_eq!(m.status, 202, "{}", m.json);
        ids.push(m.json["id"].as_str().expect("id").to_owned());
    }
    hook.wait_for(3).await;
    let all_succeeded = |j: &serde_json::Value| {
        j["data"]
            .as_array()
            .is_some_and(|d| d.len() == 3 && d.iter().all(|m| m["status"] == 0))
    };
    assert!(eventually_json(addr, "/api/v1/app/b/endpoint/r/msg", all_succeeded).await);
    let mut received = 3;
    for (filters, want) in [
        (
            json!({"eventTypes": ["t.a"], "channel": "eu"}),
            vec![ids[0].clone()],
        ),
        (json!({"status": 2}), vec![]),
        (
            json!({"status": 0, "tag": "y"}),
            vec![ids[1].clone(), ids[2].clone()],
        ),
        (json!({}), ids.clone()),
    ] {
        let mut body = filters.clone();
        body["until"] = json!(sluice::clock::format_rfc3339(
            sluice::clock::Clock::System.now_ms() + 60_000
        ));
        // The window may be at most 14 days: start it a day back.
        body["since"] = json!(sluice::clock::format_rfc3339(
            sluice::clock::Clock::System.now_ms() - 86_400_000
        ));
        let started = post(addr, "/api/v1/app/b/endpoint/r/bulk-replay", &body).await;
        assert_eq!(started.status, 202, "{filters}: {}", started.json);
        assert_eq!(started.json["task"], "endpoint.bulk-replay");
        let task = format!(
            "/api/v1/background-task/{}",
            started.json["id"].as_str().expect("id")
        );
        assert!(
            eventually_json(addr, &task, |t| t["status"] == "finished").await,
            "{filters}: the task finishes"
        );
        let done = get(addr, &task).await.json;
        assert_eq!(
            done["data"]["messagesSent"],
            json!(want.len()),
            "{filters}: {done}"
        );
        received += want.len();
        let got = hook.wait_for(received).await;
        let mut resent: Vec<String> = got[received - want.len()..]
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        resent.sort();
        let mut want = want;
        want.sort();
        assert_eq!(resent, want, "{filters}");
    }
    let listed = get(addr, "/api/v1/background-task?task=endpoint.bulk-replay").await;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(4));
    for bad in [
        json!({"since": "2026-01-01T00:00:00Z", "statusCodeClass": 500}),
        json!({"since": "2026-01-01T00:00:00Z", "status": 5}),
        json!({"since": "yesterday"}),
        json!({"since": "2026-01-01T00:00:00Z", "channel": "no spaces"}),
    ] {
        let refused = post(addr, "/api/v1/app/b/endpoint/r/bulk-replay", &bad).await;
        assert_eq!(refused.status, 422, "{bad}: {}", refused.json);
    }
    sluice.stop().await;
}

/// Every (method, path) the Python SDK 2.9.1 can call, read from the installed package:
/// each is served (documented in `/api/v1/openapi.json`, and routed: never "Route not
/// found" nor 405) or answers 501 `not_supported` naming the feature. The document is
/// OpenAPI 3.1 by a real validator (openapi-spec-validator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_route_is_served_or_answers_not_supported() {
    let python = std::env::var("SLUICE_PYTHON").expect(
        "set SLUICE_PYTHON to a Python with the svix SDK (scripts/test creates .venv for this)",
    );
    let listing = crate::harness::run_ok(std::process::Command::new(&python).args([
        "-c",
        r#"
import glob, json, os, re, svix
routes = set()
for f in glob.glob(os.path.join(os.path.dirname(svix.__file__), "api", "*.py")):
    for m in re.finditer(r'method="(\w+)",\s*path="([^"]+)"', open(f).read()):
        routes.add((m.group(1).upper(), m.group(2)))
print(json.dumps(sorted(routes)))
"#,
    ]));
    let routes: Vec<(String, String)> =
        serde_json::from_slice(&listing.stdout).expect("the SDK's routes");
    assert!(routes.len() >= 141, "the SDK lists {} routes", routes.len());
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    let doc = call(addr, "GET", "/api/v1/openapi.json", None, &[], b"").await;
    assert_eq!(doc.status, 200);
    let (mut served, mut unsupported) = (0, 0);
    for (method, template) in &routes {
        let path = template
            .split('/')
            .map(|s| if s.starts_with('{') { "x1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let answer = call(addr, method, &path, Some(TOKEN), &[], b"{}").await;
        let documented =
            doc.json["paths"][template.as_str()][method.to_ascii_lowercase()].is_object();
        if documented {
            served += 1;
            assert!(
                answer.status != 501
                    && answer.status != 405
                    && answer.json["detail"] != "Route not found.",
                "{method} {template} is documented but answers {} {}",
                answer.status,
                answer.json
            );
        } else {
            unsupported += 1;
            assert_eq!(
                (answer.status, &answer.json["code"]),
                (501, &json!("not_supported")),
                "{method} {template}: {}",
                answer.json
            );
            assert!(
                answer.json["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("not supported"))
            );
        }
    }
    assert!(
        served >= 60 && unsupported > 0,
        "{served} served, {unsupported} not"
    );
    let mut validate = std::process::Command::new(&python);
    validate.args([
        "-c",
        "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.loads(sys.argv[1]))\nprint('valid')",
        &doc.json.to_string(),
    ]);
    let out = crate::harness::run_ok(&mut validate);
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    sluice.stop().await;
}

/// A static-token endpoint may leave its token to Sluice, which generates one; the token
/// (given or generated) is read back at `GET …/secret`, as the subscriber must be told it,
/// and is what deliveries carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_is_generated_and_read_back_through_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start_delivering(dir.path(), &[60_000]).await;
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "s", "uid": "s"}))
            .await
            .status,
        201
    );
    let ep = post(
        addr,
        "/api/v1/app/s/endpoint",
        &json!({"url": hook.url(), "uid": "st",
                "signing": {"mode": "static-token", "header": "X-Hook-Token"}}),
    )
    .await;
    assert_eq!(ep.status, 201, "{}", ep.json);
    assert!(
        ep.json["signing"].get("token").is_none(),
        "never shown on the endpoint"
    );
    let secret = get(addr, "/api/v1/app/s/endpoint/st/secret").await.json;
    assert_eq!(secret["staticToken"]["header"], "X-Hook-Token");
    let token = secret["staticToken"]["token"]
        .as_str()
        .expect("a generated token")
        .to_owned();
    assert!(token.len() >= 40, "{token}");
    let sent = post(
        addr,
        "/api/v1/app/s/msg",
        &json!({"eventType": "e", "payload": {}}),
    )
    .await;
    assert_eq!(sent.status, 202);
    let got = hook.wait_for(1).await;
    assert_eq!(got[0].header("x-hook-token"), token);
    // A given token is read back as given; an HMAC endpoint has none.
    let patched = call(
        addr,
        "PATCH",
        "/api/v1/app/s/endpoint/st",
        Some(TOKEN),
        &[],
        br#"{"signing": {"mode": "static-token", "header": "X-Hook-Token", "token": "given-1"}}"#,
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.json);
    let secret = get(addr, "/api/v1/app/s/endpoint/st/secret").await.json;
    assert_eq!(secret["staticToken"]["token"], "given-1");
    let hmac = post(
        addr,
        "/api/v1/app/s/endpoint",
        &json!({"url": hook.url(), "uid": "h"}),
    )
    .await;
    assert_eq!(hmac.status, 201);
    let secret = get(addr, "/api/v1/app/s/endpoint/h/secret").await.json;
    assert!(secret.get("staticToken").is_none() && secret["key"].is_string());
    sluice.stop().await;
}

/// An endpoint's stats split into spans (`buckets`, a Sluice extension the portal's chart
/// reads): each span counts the successes and failures of the messages created in it, in
/// the same scan as the totals; a bucket count out of range is a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_stats_split_into_spans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = 1_800_000_000_000;
    let clock = sluice::clock::Clock::manual(t0);
    // No retries: a failed attempt fails its delivery at once.
    let sluice = crate::delivery::start_delivering_clocked(dir.path(), &[], clock.clone()).await;
    let addr = sluice.addr;
    // Succeeds, fails, succeeds: one message an hour.
    let hook = Receiver::start(|n| Answer::Status(if n == 1 { 500 } else { 200 })).await;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "s", "uid": "s"}))
            .await
            .status,
        201
    );
    let ep = post(
        addr,
        "/api/v1/app/s/endpoint",
        &json!({"url": hook.url(), "uid": "e"}),
    )
    .await;
    assert_eq!(ep.status, 201, "{}", ep.json);
    for n in 0..3 {
        let sent = post(
            addr,
            "/api/v1/app/s/msg",
            &json!({"eventType": "t", "payload": {"n": n}}),
        )
        .await;
        assert_eq!(sent.status, 202, "{}", sent.json);
        hook.wait_for(n + 1).await;
        clock.advance_ms(3_600_000);
    }
    let window = format!(
        "since={}&until={}",
        sluice::clock::format_rfc3339(t0),
        sluice::clock::format_rfc3339(t0 + 3 * 3_600_000)
    );
    let path = format!("/api/v1/app/s/endpoint/e/stats?{window}&buckets=3");
    let settled = |s: &serde_json::Value| s["success"] == 2 && s["fail"] == 1;
    assert!(
        eventually_json(addr, &path, settled).await,
        "every attempt recorded"
    );
    let stats = get(addr, &path).await.json;
    assert_eq!(
        stats["buckets"],
        json!([{"success": 1, "fail": 0}, {"success": 0, "fail": 1}, {"success": 1, "fail": 0}])
    );
    let whole = get(addr, &format!("/api/v1/app/s/endpoint/e/stats?{window}")).await;
    assert!(whole.json.get("buckets").is_none(), "only when asked");
    for bad in ["0", "169", "x"] {
        let refused = get(
            addr,
            &format!("/api/v1/app/s/endpoint/e/stats?{window}&buckets={bad}"),
        )
        .await;
        assert_eq!(refused.status, 422, "buckets={bad}: {}", refused.json);
    }
    sluice.stop().await;
}
