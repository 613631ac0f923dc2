//! Polling endpoints: a durable consumer reads 10,000 messages across a SIGKILL with no
//! gap and no duplicate, the endpoint's filters hold, seek finds the right message,
//! iterators of other endpoints are refused, and a poller token reads its endpoint only.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::harness::{Daemon, TOKEN, call, get, post, start_clocked};
use sluice::clock::{Clock, format_rfc3339};

const MESSAGES: usize = 10_000;
const CLIENTS: usize = 16;
const PAGE: usize = 250;

async fn setup(addr: SocketAddr, app: &str) {
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": app, "uid": app}))
            .await
            .status,
        201
    );
    for name in ["keep", "drop"] {
        let created = post(
            addr,
            "/api/v1/event-type",
            &json!({"name": name, "description": name}),
        )
        .await;
        assert!(matches!(created.status, 201 | 409), "{}", created.json);
    }
    let endpoint = json!({"url": "https://poll.invalid/", "uid": "poll", "filterTypes": ["keep"], "pollingOnly": true});
    let created = post(addr, &format!("/api/v1/app/{app}/endpoint"), &endpoint).await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.json["pollingOnly"], true);
}

fn ids_of(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

fn consumer_path(iterator: Option<&str>) -> String {
    let mut path = format!("/api/v1/app/big/poller/poll/consumer/reader?limit={PAGE}");
    if let Some(it) = iterator {
        path.push_str("&iterator=");
        path.push_str(it);
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_ten_thousand_messages_across_a_sigkill_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::spawn(dir.path());
    let addr = daemon.addr;
    setup(addr, "big").await;

    // 10,000 messages the endpoint wants, interleaved with ones its filter drops.
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            for n in (client..MESSAGES).step_by(CLIENTS) {
                let body = json!({"eventType": "keep", "payload": {"n": n}});
                let created = post(addr, "/api/v1/app/big/msg", &body).await;
                assert_eq!(created.status, 202);
                kept.push(created.json["id"].as_str().expect("id").to_owned());
                if n % 10 == 0 {
                    let dropped = json!({"eventType": "drop", "payload": {"n": n}});
                    assert_eq!(
                        post(addr, "/api/v1/app/big/msg", &dropped).await.status,
                        202
                    );
                }
            }
            kept
        }));
    }
    let mut expected = BTreeSet::new();
    for task in tasks {
        expected.extend(task.await.expect("client"));
    }
    assert_eq!(expected.len(), MESSAGES);

    // Half the pages, then SIGKILL.
    let mut seen: Vec<String> = Vec::new();
    let mut iterator: Option<String> = None;
    let mut last_page = Vec::new();
    for _ in 0..(MESSAGES / PAGE / 2) {
        let page = get(addr, &consumer_path(iterator.as_deref())).await;
        assert_eq!(page.status, 200, "{}", page.json);
        last_page = ids_of(&page.json);
        seen.extend(last_page.iter().cloned());
        iterator = Some(page.json["iterator"].as_str().expect("iterator").to_owned());
    }
    assert_eq!(seen.len(), MESSAGES / 2);
    daemon.kill9();

    let daemon = Daemon::spawn(dir.path());
    let addr = daemon.addr;
    // A consumer that lost its iterator resumes at the last one it used: its last page
    // again (at-least-once), never past it.
    let resumed = get(addr, &consumer_path(None)).await;
    assert_eq!(resumed.status, 200, "{}", resumed.json);
    assert_eq!(ids_of(&resumed.json), last_page);
    // The client that kept its iterator goes on where it was.
    for _ in 0..=(MESSAGES / PAGE) {
        let page = get(addr, &consumer_path(iterator.as_deref())).await;
        assert_eq!(page.status, 200, "{}", page.json);
        seen.extend(ids_of(&page.json));
        iterator = Some(page.json["iterator"].as_str().expect("iterator").to_owned());
        if page.json["done"] == true {
            break;
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicate");
    assert_eq!(unique, expected, "no gap, and nothing the filter drops");
    // Caught up: an empty page that says so.
    let tail = get(addr, &consumer_path(iterator.as_deref())).await;
    assert_eq!(
        (ids_of(&tail.json).len(), &tail.json["done"]),
        (0, &json!(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_seek_iterators_and_poller_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = 1_700_000_000_000;
    let clock = Clock::manual(t0);
    let sluice = start_clocked(dir.path(), clock.clone()).await;
    let addr = sluice.addr;
    setup(addr, "small").await;
    let other = json!({"url": "https://other.invalid/", "uid": "other"});
    assert_eq!(
        post(addr, "/api/v1/app/small/endpoint", &other)
            .await
            .status,
        201
    );

    // The first poll: no messages and where to start.
    let first = get(addr, "/api/v1/app/small/poller/poll").await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.json["data"], json!([]));
    let start = first.json["iterator"]
        .as_str()
        .expect("iterator")
        .to_owned();

    let mut ids = Vec::new();
    for n in 0..6 {
        clock.advance_ms(1_000);
        let event_type = if n % 2 == 0 { "keep" } else { "drop" };
        let body = json!({"eventType": event_type, "payload": {"n": n}, "channels": ["c"]});
        let created = post(addr, "/api/v1/app/small/msg", &body).await;
        ids.push(created.json["id"].as_str().expect("id").to_owned());
    }
    let page = get(
        addr,
        &format!("/api/v1/app/small/poller/poll?iterator={start}"),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.json);
    assert_eq!(
        ids_of(&page.json),
        [ids[0].clone(), ids[2].clone(), ids[4].clone()]
    );
    assert_eq!(page.json["done"], true);
    assert_eq!(page.json["data"][0]["payload"], json!({"n": 0}));
    assert_eq!(page.json["data"][0]["eventType"], "keep");
    let limited = get(
        addr,
        &format!("/api/v1/app/small/poller/poll?iterator={start}&limit=2"),
    )
    .await;
    assert_eq!(ids_of(&limited.json).len(), 2);
    assert_eq!(limited.json["done"], false);
    let by_channel = get(
        addr,
        &format!("/api/v1/app/small/poller/poll?iterator={start}&channel=nope"),
    )
    .await;
    assert_eq!(ids_of(&by_channel.json).len(), 0);
    // `after` on the first call starts at that time.
    let after = format_rfc3339(t0 + 2_500);
    let from_time = get(
        addr,
        &format!("/api/v1/app/small/poller/poll?after={after}"),
    )
    .await;
    let it = from_time.json["iterator"].as_str().expect("iterator");
    let next = get(
        addr,
        &format!("/api/v1/app/small/poller/poll?iterator={it}"),
    )
    .await;
    assert_eq!(ids_of(&next.json), [ids[2].clone(), ids[4].clone()]);

    // Seek: the consumer's next message is the first one after the time.
    let seek = call(
        addr,
        "POST",
        "/api/v1/app/small/poller/poll/consumer/c1/seek",
        Some(TOKEN),
        &[],
        json!({"after": format_rfc3339(t0 + 1_000)})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(seek.status, 200, "{}", seek.json);
    let resumed = get(addr, "/api/v1/app/small/poller/poll/consumer/c1").await;
    assert_eq!(ids_of(&resumed.json), [ids[2].clone(), ids[4].clone()]);
    let sought = seek.json["iterator"].as_str().expect("iterator");
    let same = get(
        addr,
        &format!("/api/v1/app/small/poller/poll/consumer/c1?iterator={sought}"),
    )
    .await;
    assert_eq!(ids_of(&same.json), ids_of(&resumed.json));

    // Iterators: another endpoint's, or a corrupt one, is 400 invalid_iterator.
    let foreign = get(
        addr,
        &format!("/api/v1/app/small/poller/other?iterator={start}"),
    )
    .await;
    assert_eq!(
        (foreign.status, &foreign.json["code"]),
        (400, &json!("invalid_iterator"))
    );
    let mut corrupt = start.clone();
    corrupt.replace_range(3..4, if &start[3..4] == "A" { "B" } else { "A" });
    let bad = get(
        addr,
        &format!("/api/v1/app/small/poller/poll?iterator={corrupt}"),
    )
    .await;
    assert_eq!(
        (bad.status, &bad.json["code"]),
        (400, &json!("invalid_iterator"))
    );
    let garbage = get(addr, "/api/v1/app/small/poller/poll?iterator=%21%21").await;
    assert_eq!(garbage.status, 400);

    // A poller token: its endpoint's poller, nothing else.
    let token_path = "/api/v1/auth/app/small/poller/poll/token";
    let token = get(addr, token_path).await;
    assert_eq!(token.status, 200, "{}", token.json);
    let poll_token = token.json["token"].as_str().expect("token").to_owned();
    assert!(poll_token.starts_with("sk_poll_"));
    assert_eq!(
        get(addr, token_path).await.json["token"],
        token.json["token"],
        "GET shows the same token"
    );
    let with = |path: &'static str, token: String| async move {
        call(addr, "GET", path, Some(&token), &[], b"").await.status
    };
    assert_eq!(
        with("/api/v1/app/small/poller/poll", poll_token.clone()).await,
        200
    );
    assert_eq!(
        with(
            "/api/v1/app/small/poller/poll/consumer/t",
            poll_token.clone()
        )
        .await,
        200
    );
    assert_eq!(
        with("/api/v1/app/small/poller/other", poll_token.clone()).await,
        403
    );
    for path in [
        "/api/v1/app",
        "/api/v1/app/small",
        "/api/v1/app/small/msg",
        "/api/v1/app/small/endpoint/poll",
        "/api/v1/auth/app/small/poller/poll/token",
        "/ingest/api/v1/source",
    ] {
        let status = with(path, poll_token.clone()).await;
        assert!(matches!(status, 401 | 403), "{path}: {status}");
    }
    // Rotation: the old token works for its grace, then not.
    let rotated = call(
        addr,
        "POST",
        "/api/v1/auth/app/small/poller/poll/token/rotate",
        Some(TOKEN),
        &[],
        br#"{"oldTokenExpiry": 60}"#,
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.json);
    let new_token = rotated.json["token"].as_str().expect("token").to_owned();
    assert_ne!(new_token, poll_token);
    assert_eq!(
        with("/api/v1/app/small/poller/poll", new_token.clone()).await,
        200
    );
    assert_eq!(
        with("/api/v1/app/small/poller/poll", poll_token.clone()).await,
        200
    );
    clock.advance_ms(61_000);
    assert_eq!(
        with("/api/v1/app/small/poller/poll", poll_token.clone()).await,
        401
    );
    // Deleting the endpoint revokes its token.
    let deleted = call(
        addr,
        "DELETE",
        "/api/v1/app/small/endpoint/poll",
        Some(TOKEN),
        &[],
        b"",
    )
    .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(with("/api/v1/app/small/poller/poll", new_token).await, 401);
    sluice.stop().await;
}

/// A polling-only endpoint is read by its consumers: a resend, a recover and a
/// replay-missing aimed at it are refused (409 `endpoint_polling_only`), and no delivery
/// or attempt is ever made for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_pushed_to_a_polling_only_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = 1_700_000_000_000;
    let clock = Clock::manual(t0);
    let sluice = start_clocked(dir.path(), clock.clone()).await;
    let addr = sluice.addr;
    setup(addr, "push").await;
    clock.advance_ms(1_000);
    let created = post(
        addr,
        "/api/v1/app/push/msg",
        &json!({"eventType": "keep", "payload": {"n": 1}}),
    )
    .await;
    assert_eq!(created.status, 202, "{}", created.json);
    let id = created.json["id"].as_str().expect("id");

    let window = json!({"since": format_rfc3339(t0 - 60_000)});
    for (path, body) in [
        (
            format!("/api/v1/app/push/msg/{id}/endpoint/poll/resend"),
            json!({}),
        ),
        (
            "/api/v1/app/push/endpoint/poll/recover".to_owned(),
            window.clone(),
        ),
        (
            "/api/v1/app/push/endpoint/poll/replay-missing".to_owned(),
            window.clone(),
        ),
    ] {
        let refused = post(addr, &path, &body).await;
        assert_eq!(refused.status, 409, "{path}: {}", refused.json);
        assert_eq!(refused.json["code"], "endpoint_polling_only", "{path}");
    }
    let attempts = get(addr, &format!("/api/v1/app/push/attempt/msg/{id}")).await;
    assert_eq!(attempts.status, 200, "{}", attempts.json);
    assert_eq!(attempts.json["data"], json!([]), "no attempt was made");
    let destinations = get(addr, &format!("/api/v1/app/push/msg/{id}/endpoint")).await;
    assert_eq!(destinations.json["data"], json!([]), "no delivery was made");
    sluice.stop().await;
}
