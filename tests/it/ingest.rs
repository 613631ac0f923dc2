//! Ingest sources end to end: for every verified source type a correctly signed request
//! is accepted and reaches a destination that checks Sluice's Standard Webhooks
//! signature; tampered, wrongly keyed, stale and unsigned requests get 401 and land in
//! the source's error log; Zoom's and Meta's handshakes are answered; hostile requests
//! get JSON errors, store nothing and are rate limited.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use crate::harness::{TOKEN, call, call_raw, get, loopback_config, post};
use crate::receiver::{Answer, Receiver};
use sluice::clock::Clock;
use sluice::verify::hmac_sha256_hex;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Signs `body` as `kind`'s provider would at `ts` with `secret`: the headers to send.
fn sign(
    kind: &str,
    secret: &str,
    body: &[u8],
    ts: u64,
    pair: &Ed25519KeyPair,
) -> Vec<(String, String)> {
    let t = ts.to_string();
    let h = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect::<Vec<_>>()
    };
    match kind {
        "svix" => {
            let key = BASE64
                .decode(secret.trim_start_matches("whsec_"))
                .unwrap_or_default();
            let sig = sluice::signing::signature_header([key.as_slice()], "msg_in_1", ts, body);
            h(&[
                ("svix-id", "msg_in_1".to_owned()),
                ("svix-timestamp", t),
                ("svix-signature", sig),
            ])
        }
        "github" | "meta" => h(&[(
            "x-hub-signature-256",
            format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), &[body])),
        )]),
        "stripe" => h(&[(
            "stripe-signature",
            format!(
                "t={t},v1={}",
                hmac_sha256_hex(secret.as_bytes(), &[t.as_bytes(), b".", body])
            ),
        )]),
        "shopify" => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
            h(&[(
                "x-shopify-hmac-sha256",
                BASE64.encode(ring::hmac::sign(&key, body).as_ref()),
            )])
        }
        "slack" | "zoom" => {
            let sig = format!(
                "v0={}",
                hmac_sha256_hex(secret.as_bytes(), &[b"v0:", t.as_bytes(), b":", body])
            );
            if kind == "slack" {
                h(&[("x-slack-request-timestamp", t), ("x-slack-signature", sig)])
            } else {
                h(&[("x-zm-request-timestamp", t), ("x-zm-signature", sig)])
            }
        }
        "telnyx" => {
            let mut signed = t.clone().into_bytes();
            signed.push(b'|');
            signed.extend_from_slice(body);
            h(&[
                ("telnyx-timestamp", t),
                (
                    "telnyx-signature-ed25519",
                    BASE64.encode(pair.sign(&signed).as_ref()),
                ),
            ])
        }
        _ => Vec::new(),
    }
}

async fn send(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Value) {
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let resp = call(addr, "POST", path, None, &refs, body).await;
    (resp.status, resp.json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_type_verifies_forwards_logs_and_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_config(dir.path());
    config.api.source_rate_per_second = 30;
    // A clock that moves only when told: the rate buckets below refill when the test says
    // so, not with however fast the machine runs it (signatures still carry the real
    // time, well within every provider's tolerance of it).
    let clock = Clock::manual(Clock::System.now_ms());
    let sluice = sluice::app::start(&config, Some(TOKEN), clock.clone())
        .await
        .expect("start");
    let addr = sluice.addr;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    let pair = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).expect("key");
    let public = BASE64.encode(pair.public_key().as_ref());

    let kinds = [
        "generic-webhook",
        "svix",
        "github",
        "stripe",
        "shopify",
        "slack",
        "zoom",
        "meta",
        "telnyx",
    ];
    let mut paths = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for kind in kinds {
        let config = match kind {
            "generic-webhook" => json!({}),
            "meta" => json!({"secret": SECRET, "verifyToken": "verify-me"}),
            "telnyx" => json!({"publicKey": public}),
            _ => json!({"secret": SECRET}),
        };
        let created = post(
            addr,
            "/ingest/api/v1/source",
            &json!({"name": kind, "type": kind, "config": config}),
        )
        .await;
        assert_eq!(created.status, 201, "{kind}: {}", created.json);
        let url = created.json["ingestUrl"].as_str().expect("url");
        let path = &url[url.find("/ingest/in/").expect("receive path")..];
        assert!(
            path.len() > "/ingest/in/".len() + 40,
            "an unguessable token"
        );
        let id = created.json["id"].as_str().expect("id").to_owned();
        let dest = post(
            addr,
            &format!("/ingest/api/v1/source/{id}/endpoint"),
            &json!({"url": hook.url()}),
        )
        .await;
        assert_eq!(dest.status, 201, "{}", dest.json);
        let dest_id = dest.json["id"].as_str().expect("id");
        let secret = get(
            addr,
            &format!("/ingest/api/v1/source/{id}/endpoint/{dest_id}/secret"),
        )
        .await;
        let key = secret.json["key"]
            .as_str()
            .expect("key")
            .trim_start_matches("whsec_")
            .to_owned();
        keys.insert(kind, BASE64.decode(key).expect("key"));
        paths.insert(kind, (id, path.to_owned()));
    }
    // Sources' applications are not tenants.
    let apps = get(addr, "/api/v1/app").await;
    assert_eq!(apps.json["data"], json!([]));

    let now = Clock::System.now_ms() / 1000;
    for kind in kinds {
        let (_, path) = &paths[kind];
        let body = json!({"type": kind, "n": 1}).to_string().into_bytes();
        let headers = sign(kind, SECRET, &body, now, &pair);
        let (status, reply) = send(addr, path, &headers, &body).await;
        assert_eq!(status, 200, "{kind}: {reply}");
        if kind == "generic-webhook" {
            continue;
        }
        // Tampered body, wrong secret, stale timestamp, missing header: 401, logged.
        let mut rejected = 0;
        let tampered = json!({"type": kind, "n": 2}).to_string().into_bytes();
        assert_eq!(
            send(addr, path, &headers, &tampered).await.0,
            401,
            "{kind} tampered"
        );
        rejected += 1;
        if kind != "telnyx" {
            let wrong = sign(
                kind,
                "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
                &body,
                now,
                &pair,
            );
            assert_eq!(
                send(addr, path, &wrong, &body).await.0,
                401,
                "{kind} wrong secret"
            );
        } else {
            let other = Ed25519KeyPair::from_seed_unchecked(&[8; 32]).expect("key");
            let wrong = sign(kind, SECRET, &body, now, &other);
            assert_eq!(
                send(addr, path, &wrong, &body).await.0,
                401,
                "{kind} wrong key"
            );
        }
        rejected += 1;
        if ["svix", "stripe", "slack", "zoom", "telnyx"].contains(&kind) {
            let stale = sign(kind, SECRET, &body, now - 600, &pair);
            assert_eq!(send(addr, path, &stale, &body).await.0, 401, "{kind} stale");
            rejected += 1;
        }
        let (status, reply) = send(addr, path, &[], &body).await;
        assert_eq!(
            (status, &reply["code"]),
            (401, &json!("invalid_signature")),
            "{kind} unsigned"
        );
        rejected += 1;
        let log = get(
            addr,
            &format!("/ingest/api/v1/source/{}/log", paths[kind].0),
        )
        .await;
        let rows = log.json["data"].as_array().expect("data");
        assert_eq!(rows.len(), rejected, "{kind}: {}", log.json);
        assert!(
            rows.iter()
                .all(|r| r["statusCode"] == 401 && r["errorText"].is_string())
        );
    }

    // Every accepted request reaches its destination, signed by Sluice.
    let got = hook.wait_for(kinds.len()).await;
    for received in &got {
        let body: Value = serde_json::from_slice(&received.body).expect("json");
        let kind = body["type"].as_str().expect("type");
        let expected = sluice::signing::signature_header(
            [keys[kind].as_slice()],
            received.header("webhook-id"),
            received.header("webhook-timestamp").parse().expect("ts"),
            &received.body,
        );
        assert_eq!(received.header("webhook-signature"), expected, "{kind}");
    }

    // Zoom's URL validation is answered, not forwarded.
    let challenge = json!({"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}}).to_string().into_bytes();
    let headers = sign("zoom", SECRET, &challenge, now, &pair);
    let (status, reply) = send(addr, &paths["zoom"].1, &headers, &challenge).await;
    assert_eq!(status, 200);
    assert_eq!(reply["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(
        reply["encryptedToken"],
        hmac_sha256_hex(SECRET.as_bytes(), &[b"qgg8vlvZRS6UYooatFL8Aw"])
    );
    // Meta's GET handshake echoes the challenge with the right verify token only.
    let meta = &paths["meta"].1;
    let (status, _, bytes) = call_raw(
        addr,
        "GET",
        &format!("{meta}?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444"),
        None,
        &[],
        b"",
    )
    .await
    .expect("get");
    assert_eq!((status, &bytes[..]), (200, &b"1158201444"[..]));
    let refused = call(
        addr,
        "GET",
        &format!("{meta}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"),
        None,
        &[],
        b"",
    )
    .await;
    assert_eq!(refused.status, 403);

    // Hostile input: JSON errors, nothing stored.
    let generic = &paths["generic-webhook"].1;
    let huge = vec![b' '; (1 << 20) + 1];
    let resp = call(addr, "POST", generic, None, &[], &huge).await;
    assert_eq!(
        (resp.status, &resp.json["code"]),
        (413, &json!("payload_too_large"))
    );
    let resp = call(addr, "PUT", generic, None, &[], b"{}").await;
    assert_eq!(resp.status, 405);
    assert!(resp.json["code"].is_string());
    let garbage = [
        ("svix-id".to_owned(), "\"; DROP TABLE".to_owned()),
        ("svix-timestamp".to_owned(), "-1".to_owned()),
        ("svix-signature".to_owned(), "v1,%%%% v2,".repeat(50)),
    ];
    assert_eq!(send(addr, &paths["svix"].1, &garbage, b"{}").await.0, 401);
    let mut statuses = Vec::new();
    for n in 0..60 {
        let resp = call(
            addr,
            "POST",
            &format!("/ingest/in/guess{n:040}"),
            None,
            &[],
            b"{}",
        )
        .await;
        assert!(resp.json["code"].is_string());
        statuses.push(resp.status);
    }
    assert!(statuses.iter().all(|s| matches!(s, 404 | 429)));
    assert!(
        statuses.contains(&429),
        "token guessing is rate limited: {statuses:?}"
    );
    let mut limited = false;
    for _ in 0..60 {
        if call(addr, "POST", &paths["svix"].1, None, &[], b"{}")
            .await
            .status
            == 429
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "a source is rate limited");
    // Nothing hostile was stored: each source's application holds its one message.
    for kind in kinds {
        let id = &paths[kind].0;
        let app_id = sluice
            .log()
            .read(|rtxn, dbs| {
                let source = sluice::log::tables::source_by_ref(rtxn, dbs, id)?.expect("source");
                sluice::log::tables::app_by_key(rtxn, dbs, source.key)
            })
            .expect("read")
            .expect("app")
            .id;
        let msgs = get(addr, &format!("/api/v1/app/{app_id}/msg")).await;
        assert_eq!(
            msgs.json["data"].as_array().expect("data").len(),
            1,
            "{kind}"
        );
        assert!(msgs.json["data"][0]["payload"]["type"] == kind);
    }
    // Every outcome is counted (at least: the recorder is per process, and other tests
    // may share it under `cargo test`).
    let (_, metrics) = crate::harness::get_text(addr, "/metrics").await;
    let count = |outcome: &str| -> f64 {
        let series = format!("sluice_source_requests_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {series}in /metrics"))
    };
    assert!(count("accepted") >= kinds.len() as f64, "{metrics}");
    assert!(count("handshake") >= 2.0, "zoom and meta");
    assert!(count("rejected") >= 30.0, "the refusals above");
    assert!(count("throttled") >= 2.0, "guessing and one source");
    assert!(count("unknown_url") >= 1.0);

    // Rotation: the old URL works during its grace; deletion ends both.
    let (id, old_path) = &paths["generic-webhook"];
    let rotated = post(
        addr,
        &format!("/ingest/api/v1/source/{id}/token/rotate"),
        &json!({}),
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.json);
    let url = rotated.json["ingestUrl"].as_str().expect("url");
    let new_path = &url[url.find("/ingest/in/").expect("path")..];
    assert_ne!(new_path, old_path);
    assert_eq!(
        send(addr, new_path, &[], b"{\"type\":\"generic-webhook\"}")
            .await
            .0,
        200
    );
    assert_eq!(
        send(addr, old_path, &[], b"{\"type\":\"generic-webhook\"}")
            .await
            .0,
        200
    );
    let deleted = call(
        addr,
        "DELETE",
        &format!("/ingest/api/v1/source/{id}"),
        Some(TOKEN),
        &[],
        b"",
    )
    .await;
    assert_eq!(deleted.status, 204);
    // The guesses above emptied the bucket unknown URLs share: a second refills it.
    clock.advance_ms(1_000);
    assert_eq!(send(addr, new_path, &[], b"{}").await.0, 404);
    sluice.stop().await;
}
