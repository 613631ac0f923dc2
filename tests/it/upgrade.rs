//! Upgrades keep data: every fixture under `tests/fixtures/upgrade/` is a compacted data
//! directory an earlier build wrote (`scripts/make-upgrade-fixture`, with what it made in
//! `fixture.json`). The current build opens each one and serves every record it holds —
//! event types, applications, endpoints with their secrets and headers, messages,
//! attempts, a finished task, an org token, an incoming source — and delivers the retries
//! that were waiting when it was written, signed with the endpoint's secret.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sluice::clock::Clock;

use crate::harness::{TOKEN, call, get, pause, test_config};
use crate::receiver::{Answer, Receiver};

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures/upgrade")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.join("fixture.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upgrade_fixture_opens_serves_its_records_and_delivers_its_retries() {
    let fixtures = fixtures();
    assert!(!fixtures.is_empty(), "at least one fixture");
    for fixture in fixtures {
        opens_and_serves(&fixture).await;
    }
}

async fn opens_and_serves(fixture: &Path) {
    let name = fixture.display().to_string();
    let made: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("fixture.json")).expect("fixture.json"))
            .expect("fixture.json is JSON");
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture_name = fixture.file_name().and_then(|n| n.to_str()).expect("name");
    let (data, key) = crate::harness::copy_upgrade_fixture(fixture_name, dir.path());
    // An earlier migration's copy (of a log restored since) and the half copy of a start
    // that was interrupted: the first is kept, the second removed.
    std::fs::create_dir_all(data.join("before-schema-2")).expect("earlier copy");
    std::fs::create_dir_all(data.join("before-schema-2.partial")).expect("partial copy");
    std::fs::write(data.join("before-schema-2.partial/data.mdb"), b"half").expect("half");
    let mut config = test_config(&data);
    config.storage.secrets_key_file = Some(key);
    config.delivery.allow_http = true;
    config.delivery.allowed_networks = vec!["127.0.0.0/8".parse().expect("net")];
    // Its own time, just before the waiting retries are due: so that the test moves the
    // waiting endpoint to its receiver before they fire.
    let created_ms = made["created_ms"].as_u64().expect("created_ms");
    let clock = Clock::manual(created_ms + 30_000);
    let sluice = sluice::app::start(&config, Some(TOKEN), clock.clone())
        .await
        .unwrap_or_else(|e| panic!("{name}: the current build opens it: {e}"));
    let addr = sluice.addr;

    for et in made["event_types"].as_array().expect("event_types") {
        let got = get(
            addr,
            &format!("/api/v1/event-type/{}", et["name"].as_str().expect("name")),
        )
        .await;
        assert_eq!(got.status, 200, "{name}: {}", got.json);
        assert_eq!(got.json["description"], et["description"], "{name}");
        if let Some(schemas) = et.get("schemas") {
            assert_eq!(&got.json["schemas"], schemas, "{name}");
        }
    }
    for app in made["apps"].as_array().expect("apps") {
        let uid = app["uid"].as_str().expect("uid");
        let got = get(addr, &format!("/api/v1/app/{uid}")).await;
        assert_eq!(got.status, 200, "{name}: {}", got.json);
        assert_eq!(got.json["name"], app["name"], "{name}");
        let metadata = app.get("metadata").cloned().unwrap_or_else(|| json!({}));
        assert_eq!(got.json["metadata"], metadata, "{name}");
    }
    for ep in made["endpoints"].as_array().expect("endpoints") {
        let (app, uid) = (
            ep["app"].as_str().expect("app"),
            ep["uid"].as_str().expect("uid"),
        );
        let path = format!("/api/v1/app/{app}/endpoint/{uid}");
        let got = get(addr, &path).await;
        assert_eq!(got.status, 200, "{name} {uid}: {}", got.json);
        assert_eq!(got.json["url"], ep["url"], "{name} {uid}");
        for field in ["filterTypes", "channels", "description"] {
            if let Some(want) = ep.get(field) {
                assert_eq!(&got.json[field], want, "{name} {uid} {field}");
            }
        }
        let secret = get(addr, &format!("{path}/secret")).await;
        assert_eq!(secret.json["key"], made["secrets"][uid], "{name} {uid}");
        if let Some(headers) = made["headers"].get(uid) {
            let got = get(addr, &format!("{path}/headers")).await;
            for (header, value) in headers.as_object().expect("headers") {
                assert_eq!(&got.json["headers"][header], value, "{name} {uid}");
            }
        }
    }
    for msg in made["messages"].as_array().expect("messages") {
        let (app, event_id) = (msg["app"].as_str().expect("app"), &msg["eventId"]);
        let page = get(addr, &format!("/api/v1/app/{app}/msg?limit=50")).await;
        let found = page.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|m| &m["eventId"] == event_id)
            .unwrap_or_else(|| panic!("{name}: message {event_id} is served"))
            .clone();
        assert_eq!(found["payload"], msg["payload"], "{name} {event_id}");
        assert_eq!(found["eventType"], msg["eventType"], "{name} {event_id}");
        if let Some(tags) = msg.get("tags") {
            assert_eq!(&found["tags"], tags, "{name} {event_id}");
        }
    }
    let delivered = get(
        addr,
        "/api/v1/app/acme/attempt/endpoint/ep-ok?status=0&limit=50",
    )
    .await;
    assert_eq!(
        delivered.json["data"].as_array().expect("data").len(),
        5,
        "{name}"
    );
    // The endpoint's own list walks its deliveries in seq order (the layout the build
    // migrated them to); the log as it was went beside it first.
    let listed = get(addr, "/api/v1/app/acme/endpoint/ep-ok/msg?limit=50").await;
    assert_eq!(listed.status, 200, "{name}: {}", listed.json);
    assert_eq!(
        listed.json["data"].as_array().expect("data").len(),
        5,
        "{name}: {}",
        listed.json
    );
    let backup = data.join("before-schema-2.1").join("data.mdb");
    assert!(
        std::fs::metadata(&backup).is_ok_and(|m| m.len() > 4096),
        "{name}: the copy of the log before its migration, beside the earlier one, {}",
        backup.display()
    );
    assert!(
        !data.join("before-schema-2/data.mdb").exists(),
        "{name}: the earlier copy is left as it was"
    );
    assert!(
        !data.join("before-schema-2.partial").exists(),
        "{name}: the half copy is gone"
    );
    let task = &made["replay_task"];
    let got = get(
        addr,
        &format!(
            "/api/v1/background-task/{}",
            task["id"].as_str().expect("id")
        ),
    )
    .await;
    assert_eq!(got.json["status"], "finished", "{name}: {}", got.json);
    assert_eq!(
        got.json["data"]["messagesSent"], task["messagesSent"],
        "{name}"
    );
    let org_token = made["org_token"]["token"].as_str().expect("token");
    let with_it = call(addr, "GET", "/api/v1/app", Some(org_token), &[], b"").await;
    assert_eq!(with_it.status, 200, "{name}: the org token still works");
    let source = &made["source"];
    let got = get(
        addr,
        &format!(
            "/ingest/api/v1/source/{}",
            source["uid"].as_str().expect("uid")
        ),
    )
    .await;
    assert_eq!(got.status, 200, "{name}: {}", got.json);
    assert_eq!(got.json["type"], source["type"], "{name}");

    // The retries that were waiting: moved to a receiver, they arrive once due, signed
    // with the endpoint's secret, one per message.
    let pending = &made["pending"];
    let (app, uid) = (
        pending["app"].as_str().expect("app"),
        pending["endpoint"].as_str().expect("endpoint"),
    );
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    let moved = call(
        addr,
        "PATCH",
        &format!("/api/v1/app/{app}/endpoint/{uid}"),
        Some(TOKEN),
        &[],
        json!({"url": hook.url()}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(moved.status, 200, "{name}: {}", moved.json);
    clock.advance_ms(600_000);
    let count = usize::try_from(pending["messages"].as_u64().expect("messages")).expect("n");
    let got = hook.wait_for(count).await;
    let secret = made["secrets"][uid].as_str().expect("secret");
    let key = BASE64
        .decode(secret.trim_start_matches("whsec_"))
        .expect("base64 secret");
    let mut amounts = Vec::new();
    for received in &got {
        let expected = sluice::signing::signature_header(
            [key.as_slice()],
            received.header("webhook-id"),
            received
                .header("webhook-timestamp")
                .parse()
                .expect("timestamp"),
            &received.body,
        );
        assert_eq!(received.header("webhook-signature"), expected, "{name}");
        let body: Value = serde_json::from_slice(&received.body).expect("json");
        amounts.push(body["amount"].as_u64().expect("amount"));
    }
    amounts.sort_unstable();
    let mut waiting: Vec<u64> = made["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["app"] == app)
        .map(|m| m["payload"]["amount"].as_u64().expect("amount"))
        .collect();
    waiting.sort_unstable();
    assert_eq!(amounts, waiting, "{name}: every waiting message once");
    if let Some(idempotent) = made.get("idempotent") {
        let token = made["org_token"]["token"].as_str().expect("token");
        remembered_replies_are_served_then_expire(&sluice, &clock, idempotent, token, &name).await;
    }
    sluice.stop().await;
}

/// A reply remembered under an idempotency key (with the org token: a reply belongs to
/// the token that made it) by the earlier build is served again while its day lasts; then
/// the sweeper deletes it (the earlier layout's table, by its scan), and the key makes a
/// new message, remembered in `replies` and deleted from there a day later.
async fn remembered_replies_are_served_then_expire(
    sluice: &sluice::app::Running,
    clock: &Clock,
    idempotent: &Value,
    token: &str,
    name: &str,
) {
    let addr = sluice.addr;
    let app = idempotent["app"].as_str().expect("app");
    let key = idempotent["key"].as_str().expect("key");
    let body = idempotent["body"].to_string();
    let path = format!("/api/v1/app/{app}/msg");
    let headers = [("idempotency-key", key)];
    let post = || call(addr, "POST", &path, Some(token), &headers, body.as_bytes());
    let again = post().await;
    assert_eq!(
        (again.status, &again.json["id"]),
        (202, &idempotent["messageId"]),
        "{name}: the remembered reply"
    );
    let log = sluice.log();
    // Fixtures written before the `replies` layout hold it in the earlier table.
    let (replies, earlier) = log.idempotency_rows().expect("rows");
    assert_eq!(
        replies + earlier,
        1,
        "{name}: one reply, in one of the two layouts' tables"
    );
    a_day_later_none_remain(log, clock, name).await;
    // The key is free again: the same request is a new one now (its eventId, taken by
    // the first message, is refused), and another body under the key makes a message.
    let again = post().await;
    assert_eq!(again.status, 409, "{name}: {}", again.json);
    let mut other = idempotent["body"].clone();
    other.as_object_mut().expect("body").remove("eventId");
    let fresh = call(
        addr,
        "POST",
        &path,
        Some(token),
        &headers,
        other.to_string().as_bytes(),
    )
    .await;
    assert_eq!(fresh.status, 202, "{name}: {}", fresh.json);
    assert_ne!(
        fresh.json["id"], idempotent["messageId"],
        "{name}: a new message"
    );
    assert_eq!(
        log.idempotency_rows().expect("rows"),
        (1, 0),
        "{name}: in `replies`"
    );
    // A day later the sweeper deletes that one from the front of `replies`.
    a_day_later_none_remain(log, clock, name).await;
}

/// Moves the clock on by a day and waits (at most 30 s: the sweeper ticks every 2 s)
/// until the sweeper has deleted every remembered reply.
async fn a_day_later_none_remain(log: &sluice::log::Log, clock: &Clock, name: &str) {
    clock.advance_ms(sluice::limits::IDEMPOTENCY_TTL_MS);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while log.idempotency_rows().expect("rows") != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: the sweeper deletes every reply within 30 s; left: {:?}",
            log.idempotency_rows()
        );
        pause(std::time::Duration::from_millis(50)).await;
    }
}

/// A command-line tool of this release, run on a log of the schema before (it may run
/// beside a daemon of the release before, whose later writes a migration would strand),
/// refuses and says to start the service; it leaves the log as it was, uncopied.
#[test]
fn a_command_line_tool_refuses_to_migrate_an_earlier_log() {
    let fixture = fixtures().pop().expect("a fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(fixture.join("data.mdb"), dir.path().join("data.mdb")).expect("data.mdb");
    std::fs::copy(fixture.join("secrets.key"), dir.path().join("secrets.key")).expect("key");
    let before = std::fs::read(dir.path().join("data.mdb")).expect("read");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["token", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("schema version 1") && stderr.contains("sluice serve"),
        "says why and what to do: {stderr}"
    );
    assert!(!dir.path().join("before-schema-2").exists(), "no copy made");
    assert_eq!(
        std::fs::read(dir.path().join("data.mdb")).expect("read"),
        before,
        "the log is as it was"
    );
}
