//! Hostile input over real HTTP: each gets the right status and a JSON error, the server
//! keeps serving, and nothing is stored; per-token rate limits; the disk guard.

use serde_json::{Value, json};

use crate::harness::{TOKEN, call, get, post, start};

/// (what, path, body, token, expected status, field the JSON error must carry)
type Case<'a> = (&'a str, &'a str, String, Option<&'a str>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    assert_eq!(
        post(
            addr,
            "/api/v1/app",
            &json!({"name": "Target", "uid": "target"})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        post(
            addr,
            "/api/v1/app",
            &json!({"name": "Other", "uid": "other"})
        )
        .await
        .status,
        201
    );
    let msg = "/api/v1/app/target/msg";
    let long_uid = "u".repeat(257);
    let _oversized = format!(
        r#"{{"eventType":"a","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "endpoint URL with credentials",
            "/api/v1/app/target/endpoint",
            r#"{"url": "https://user:secret@example.com/hook"}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "endpoint URL that is not http(s)",
            "/api/v1/app/target/endpoint",
            r#"{"url": "file:///etc/passwd"}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "invalid JSON",
            msg,
            "{\"eventType\": ".into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "non-object payload",
            msg,
            r#"{"eventType":"a","payload":[1,2]}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "string payload",
            msg,
            r#"{"eventType":"a","payload":"{}"}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "wrong type: eventType",
            msg,
            r#"{"eventType":7,"payload":{}}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "wrong type: channels",
            msg,
            r#"{"eventType":"a","payload":{},"channels":"eu"}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "wrong type: app name",
            "/api/v1/app",
            r#"{"name":5}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "over-long uid",
            "/api/v1/app",
            format!(r#"{{"name":"n","uid":"{long_uid}"}}"#),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "ill-formed uid",
            "/api/v1/app",
            r#"{"name":"n","uid":"a b/c"}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "uid with id prefix",
            "/api/v1/app",
            r#"{"name":"n","uid":"app_123"}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "eventId with id prefix",
            msg,
            r#"{"eventType":"a","payload":{},"eventId":"msg_1"}"#.into(),
            Some(TOKEN),
            422,
            "detail",
        ),
        (
            "missing token",
            msg,
            r#"{"eventType":"a","payload":{}}"#.into(),
            None,
            401,
            "code",
        ),
        (
            "wrong token",
            msg,
            r#"{"eventType":"a","payload":{}}"#.into(),
            Some("nope"),
            401,
            "code",
        ),
        (
            "unknown route",
            "/api/v1/nowhere",
            "{}".into(),
            Some(TOKEN),
            404,
            "code",
        ),
        (
            "outside the API",
            "/admin",
            "{}".into(),
            Some(TOKEN),
            404,
            "code",
        ),
        (
            "wrong method",
            "/api/v1/app/target/msg/x/content",
            "{}".into(),
            Some(TOKEN),
            405,
            "code",
        ),
    ];
    for (what, path, body, token, status, field) in cases {
        let resp = call(addr, "POST", path, token, &[], body.as_bytes()).await;
        assert_eq!(resp.status, status, "{what}: {}", resp.json);
        assert!(
            resp.json.get(field).is_some(),
            "{what}: JSON error with `{field}`: {}",
            resp.json
        );
        assert_eq!(
            resp.headers
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("")),
            Some("application/json"),
            "{what}"
        );
    }
    // Oversized bodies, declared up front or streamed in chunks, are refused with 413.
    let oversized = format!(
        r#"{{"eventType":"a","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    for chunked in [false, true] {
        let (status, body) = raw_post(addr, msg, oversized.as_bytes(), chunked).await;
        assert_eq!(status, 413, "chunked={chunked}: {body}");
        assert_eq!(body["code"], json!("payload_too_large"));
    }
    // A 422 names the field.
    let resp = call(
        addr,
        "POST",
        msg,
        Some(TOKEN),
        &[],
        br#"{"eventType":"a","payload":[1]}"#,
    )
    .await;
    assert_eq!(resp.json["detail"][0]["loc"], json!(["body", "payload"]));

    // An app token used on another app.
    let app_token = crate::harness::app_token(&sluice, "other").await;
    let resp = call(
        addr,
        "GET",
        "/api/v1/app/target/msg",
        Some(&app_token),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (resp.status, &resp.json["code"]),
        (404, &json!("not_found"))
    );
    let resp = call(
        addr,
        "POST",
        msg,
        Some(&app_token),
        &[],
        br#"{"eventType":"a","payload":{}}"#,
    )
    .await;
    assert_eq!(resp.status, 403, "message create is org-only");

    // Still serving, and nothing was stored.
    assert_eq!(get(addr, "/api/v1/health").await.status, 200);
    let msgs = get(addr, "/api/v1/app/target/msg").await.json;
    assert_eq!(msgs["data"], Value::Array(vec![]));
    let apps = get(addr, "/api/v1/app").await.json;
    assert_eq!(apps["data"].as_array().expect("data").len(), 2);
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_does_not_take_the_server_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    for garbage in [
        &b"\x00\x01\x02 not http\r\n\r\n"[..],
        b"GET /api/v1/health HTTP/9.9\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(garbage).await.expect("write");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
    }
    let bad_utf8_path = call(addr, "GET", "/api/v1/app/%FF%FE", Some(TOKEN), &[], b"").await;
    assert_eq!(bad_utf8_path.status, 404);
    assert_eq!(get(addr, "/api/v1/health").await.status, 200);
    sluice.stop().await;
}

/// POSTs over a raw socket, writing the body from another task so that an early response
/// (413 before the body is read) is still read back. Returns the status and JSON body.
async fn raw_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &[u8],
    chunked: bool,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {}", body.len())
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    let body = body.to_vec();
    let write = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        if chunked {
            for chunk in body.chunks(64 * 1024) {
                writer
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                writer.write_all(chunk).await?;
                writer.write_all(b"\r\n").await?;
            }
            writer.write_all(b"0\r\n\r\n").await?;
        } else {
            writer.write_all(&body).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut response = Vec::new();
    let _ = reader.read_to_end(&mut response).await;
    write.abort();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let json_start = text.find("\r\n\r\n").expect("end of headers") + 4;
    let json = serde_json::from_str(&text[json_start..]).expect("JSON error body");
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_past_its_rate_gets_429_while_another_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::harness::test_config(dir.path());
    config.api.token_rate_per_second = 1;
    config.api.token_rate_burst = 20;
    let sluice = sluice::app::start(&config, Some(TOKEN), sluice::clock::Clock::System)
        .await
        .expect("start");
    let addr = sluice.addr;
    let other = sluice::app::create_token(
        sluice.log(),
        &sluice::clock::Clock::System,
        sluice::log::schema::TokenScope::Org,
    )
    .await
    .expect("token");
    let mut limited = None;
    for n in 0..40 {
        let resp = call(addr, "GET", "/api/v1/app", Some(TOKEN), &[], b"").await;
        if resp.status == 429 {
            limited = Some((n, resp));
            break;
        }
        assert_eq!(resp.status, 200);
    }
    let (n, resp) = limited.expect("the flood is limited");
    // The burst of 20, plus what the 1/s rate refills while the loop runs.
    assert!((20..25).contains(&n), "limited after {n} requests");
    assert_eq!(resp.json["code"], "rate_limited");
    let retry_after = resp.headers.get("retry-after").expect("Retry-After");
    assert_eq!(retry_after.to_str().expect("text"), "1");
    let served = call(addr, "GET", "/api/v1/app", Some(&other), &[], b"").await;
    assert_eq!(served.status, 200, "another token has its own bucket");
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_log_refuses_messages_with_507_and_delivers_what_it_took() {
    use crate::receiver::{Answer, Receiver};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::harness::test_config(dir.path());
    config.storage.map_size_bytes = 4 << 20;
    config.storage.ingest_guard_percent = 70;
    config.delivery.allow_http = true;
    config.delivery.allowed_networks = vec!["127.0.0.0/8".parse().expect("net")];
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    let sluice = sluice::app::start(&config, Some(TOKEN), sluice::clock::Clock::System)
        .await
        .expect("start");
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "f", "uid": "f"}))
            .await
            .status,
        201
    );
    let body = json!({"url": hook.url()});
    assert_eq!(
        post(addr, "/api/v1/app/f/endpoint", &body).await.status,
        201
    );
    let pad = "x".repeat(2_000);
    let mut accepted = std::collections::BTreeSet::new();
    let mut refused = None;
    for n in 0..10_000 {
        let body = json!({"eventType": "f", "payload": {"n": n, "pad": pad}});
        let resp = post(addr, "/api/v1/app/f/msg", &body).await;
        if resp.status == 507 {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status, 202, "{}", resp.json);
        accepted.insert(resp.json["id"].as_str().expect("id").to_owned());
    }
    let refused = refused.expect("the guard refuses before the map is full");
    assert_eq!(refused.json["code"], "storage_full");
    assert!(accepted.len() > 100, "{} accepted first", accepted.len());
    // Everything accepted is still delivered, and reads still work.
    let got = hook.wait_for(accepted.len()).await;
    let ids: std::collections::BTreeSet<String> = got
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert!(accepted.is_subset(&ids));
    let listed = get(addr, "/api/v1/app/f/msg?limit=1").await;
    assert_eq!(listed.status, 200);
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_cannot_grow_past_its_endpoint_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "e", "uid": "e"}))
            .await
            .status,
        201
    );
    let limit = sluice::limits::ENDPOINTS_PER_APP_MAX;
    let creates: Vec<_> = (0..4)
        .map(|c| {
            tokio::spawn(async move {
                for n in (c..limit).step_by(4) {
                    let body = json!({"url": format!("https://e{n}.example/hook")});
                    let resp = post(addr, "/api/v1/app/e/endpoint", &body).await;
                    assert_eq!(resp.status, 201);
                }
            })
        })
        .collect();
    for create in creates {
        create.await.expect("creates");
    }
    let over = post(
        addr,
        "/api/v1/app/e/endpoint",
        &json!({"url": "https://one-more.example/hook"}),
    )
    .await;
    assert_eq!(
        (over.status, over.json["code"].as_str()),
        (400, Some("limit_reached"))
    );
    sluice.stop().await;
}

/// A method a route does not serve answers 405 with the `Allow` header naming the ones it
/// does (RFC 9110), as JSON like every error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_answers_405_with_allow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = crate::harness::start(dir.path()).await;
    let cases = [
        ("DELETE", "/api/v1/app", "GET, POST"),
        ("POST", "/api/v1/app/x/endpoint/y/secret", "GET"),
        ("GET", "/api/v1/app/x/msg/y/content", "DELETE"),
    ];
    for (method, path, allow) in cases {
        let resp = crate::harness::call(
            sluice.addr,
            method,
            path,
            Some(crate::harness::TOKEN),
            &[],
            b"",
        )
        .await;
        assert_eq!(resp.status, 405, "{method} {path}");
        assert_eq!(resp.json["code"], "method_not_allowed");
        let header = resp.headers.get("allow").and_then(|v| v.to_str().ok());
        assert_eq!(header, Some(allow), "{method} {path}");
    }
    sluice.stop().await;
}
