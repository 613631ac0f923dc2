//! Svix parity (issue 14): fields and filters an SDK user writes that Sluice must honour
//! rather than accept and ignore, each with the regression it fixes.

use serde_json::json;

use crate::harness::{TOKEN, call, get, post, start};

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
