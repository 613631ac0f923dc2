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
    let limit = sluice::limits::ENDPOINTS_PER_APP_DEFAULT as usize;
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

/// `api.endpoints_per_app_max` is kept in the log from the start that sets it: raised,
/// more endpoints fit; lowered, an application past it keeps its endpoints and gets no
/// more, with the bound in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_limit_is_a_setting_the_log_keeps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = |max: u32| {
        let mut config = crate::harness::test_config(dir.path());
        config.api.endpoints_per_app_max = max;
        async move {
            sluice::app::start(&config, Some(TOKEN), sluice::clock::Clock::System)
                .await
                .expect("sluice starts")
        }
    };
    let create = |addr, n: u32| async move {
        let body = json!({"url": format!("https://e{n}.example/hook")});
        post(addr, "/api/v1/app/e/endpoint", &body).await
    };
    let refused = |resp: &crate::harness::Resp, max: u32| {
        assert_eq!(
            (resp.status, resp.json["code"].as_str()),
            (400, Some("limit_reached"))
        );
        let detail = resp.json["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(&format!("({max})")), "{detail}");
    };

    let sluice = started(3).await;
    let app = post(
        sluice.addr,
        "/api/v1/app",
        &json!({"name": "e", "uid": "e"}),
    )
    .await;
    assert_eq!(app.status, 201);
    for n in 0..3 {
        assert_eq!(create(sluice.addr, n).await.status, 201);
    }
    refused(&create(sluice.addr, 3).await, 3);
    sluice.stop().await;

    let sluice = started(5).await;
    for n in 3..5 {
        assert_eq!(create(sluice.addr, n).await.status, 201);
    }
    refused(&create(sluice.addr, 5).await, 5);
    sluice.stop().await;

    let sluice = started(2).await;
    refused(&create(sluice.addr, 5).await, 2);
    let listed = get(sluice.addr, "/api/v1/app/e/endpoint?limit=50").await;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(5));
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

/// A 422 whose first problem is at `loc` and mentions `needle`.
fn assert_422_at(what: &str, resp: &crate::harness::Resp, loc: &[&str], needle: &str) {
    assert_eq!(resp.status, 422, "{what}: {}", resp.json);
    assert_eq!(
        resp.json["detail"][0]["loc"],
        json!(loc),
        "{what}: {}",
        resp.json
    );
    let msg = resp.json["detail"][0]["msg"].as_str().unwrap_or("");
    assert!(msg.contains(needle), "{what}: {msg:?} mentions {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_dot_uids_and_long_uris_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    let raw = |path: &'static str, body: &'static str| async move {
        call(addr, "POST", path, Some(TOKEN), &[], body.as_bytes()).await
    };
    // Management bodies (serde): top level and nested.
    let resp = raw("/api/v1/app", r#"{"name":"a","uid":"x","name":"b"}"#).await;
    assert_422_at("app name twice", &resp, &["body", "name"], "more than once");
    let resp = raw(
        "/api/v1/app",
        r#"{"name":"a","metadata":{"k":"1","k":"2"}}"#,
    )
    .await;
    assert_422_at(
        "metadata key twice",
        &resp,
        &["body", "metadata", "k"],
        "more than once",
    );
    let resp = raw(
        "/api/v1/event-type",
        r#"{"name":"t","description":"d","schemas":{"1":{"a":1,"a":2}}}"#,
    )
    .await;
    assert_422_at(
        "schema key twice",
        &resp,
        &["body", "schemas", "1", "a"],
        "more than once",
    );
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "T", "uid": "t"}))
            .await
            .status,
        201
    );
    // The ingest parser (simd-json): the fields Svix reads, and the payload at any depth.
    let msg = "/api/v1/app/t/msg";
    let resp = raw(msg, r#"{"eventType":"a","payload":{},"eventType":"b"}"#).await;
    assert_422_at(
        "eventType twice",
        &resp,
        &["body", "eventType"],
        "eventType",
    );
    let resp = raw(
        msg,
        r#"{"eventId":"x","eventType":"a","payload":{},"eventId":"y"}"#,
    )
    .await;
    assert_422_at("eventId twice", &resp, &["body", "eventId"], "eventId");
    let resp = raw(msg, r#"{"eventType":"a","payload":{"l":[{"k":1,"k":2}]}}"#).await;
    assert_422_at("payload key twice", &resp, &["body", "payload"], "\"k\"");

    // Uids that clients normalise away.
    for uid in [".", ".."] {
        let resp = post(addr, "/api/v1/app", &json!({"name": "d", "uid": uid})).await;
        assert_422_at("app uid", &resp, &["body", "uid"], "'.'");
        let resp = post(
            addr,
            "/api/v1/app/t/endpoint",
            &json!({"url": "https://example.com/", "uid": uid}),
        )
        .await;
        assert_422_at("endpoint uid", &resp, &["body", "uid"], "'.'");
        let resp = post(
            addr,
            msg,
            &json!({"eventType": "a", "eventId": uid, "payload": {}}),
        )
        .await;
        assert_422_at("eventId", &resp, &["body", "eventId"], "'.'");
        let resp = post(
            addr,
            "/api/v1/event-type",
            &json!({"name": uid, "description": "d"}),
        )
        .await;
        assert_eq!(resp.status, 422, "event type {uid}: {}", resp.json);
    }

    // An over-long URI is 414, with a JSON body.
    let long = format!("/api/v1/app?x={}", "a".repeat(9 * 1024));
    let resp = call(addr, "GET", &long, Some(TOKEN), &[], b"").await;
    assert_eq!(resp.status, 414, "{}", resp.json);
    assert_eq!(resp.json["code"], json!("uri_too_long"));

    // Nothing was stored.
    let apps = get(addr, "/api/v1/app").await.json;
    assert_eq!(apps["data"].as_array().expect("data").len(), 1);
    assert_eq!(get(addr, msg).await.json["data"], json!([]));
    assert_eq!(
        get(addr, "/api/v1/event-type").await.json["data"],
        json!([])
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_cannot_set_host_hop_by_hop_or_framing_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "H", "uid": "h"}))
            .await
            .status,
        201
    );
    let app_token = crate::harness::app_token(&sluice, "h").await;
    let created = post(
        addr,
        "/api/v1/app/h/endpoint",
        &json!({"url": "https://example.com/", "uid": "e"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.json);
    let forbidden = [
        "Host",
        "host",
        "Connection",
        "Keep-Alive",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Expect",
        "Content-Length",
    ];
    for name in forbidden {
        let headers = json!({ name: "internal.example" });
        // On create, with an org token and with an app token.
        for token in [TOKEN, app_token.as_str()] {
            let body = json!({"url": "https://example.com/", "headers": headers});
            let resp = call(
                addr,
                "POST",
                "/api/v1/app/h/endpoint",
                Some(token),
                &[],
                body.to_string().as_bytes(),
            )
            .await;
            assert_422_at(name, &resp, &["body", "headers", name], name);
        }
        // Through the headers routes (replace and merge).
        for method in ["PUT", "PATCH"] {
            let body = json!({ "headers": headers });
            let resp = call(
                addr,
                method,
                "/api/v1/app/h/endpoint/e/headers",
                Some(TOKEN),
                &[],
                body.to_string().as_bytes(),
            )
            .await;
            assert_422_at(name, &resp, &["body", "headers", name], name);
        }
        // As the static-token header.
        let body = json!({
            "url": "https://example.com/",
            "signing": {"mode": "static-token", "header": name, "token": "t0k"},
        });
        let resp = post(addr, "/api/v1/app/h/endpoint", &body).await;
        assert_422_at(name, &resp, &["body", "signing", "header"], name);
    }
    // Nothing was stored: one endpoint, no headers.
    let list = get(addr, "/api/v1/app/h/endpoint").await.json;
    assert_eq!(list["data"].as_array().expect("data").len(), 1);
    let headers = get(addr, "/api/v1/app/h/endpoint/e/headers").await.json;
    assert_eq!(headers["headers"], json!({}), "{headers}");
    sluice.stop().await;
}

/// Every route a token opens (method, path), for "refused everywhere" checks.
const SOME_ROUTES: [(&str, &str); 9] = [
    ("GET", "/api/v1/app"),
    ("GET", "/api/v1/app/t"),
    ("POST", "/api/v1/app/t/msg"),
    ("GET", "/api/v1/app/t/msg"),
    ("GET", "/api/v1/app/t/endpoint"),
    ("GET", "/api/v1/event-type"),
    ("GET", "/api/v1/background-task"),
    ("GET", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/token"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_revoked_at_once_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = sluice::clock::Clock::manual(1_700_000_000_000);
    let sluice = crate::harness::start_clocked(dir.path(), clock.clone()).await;
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "T", "uid": "t"}))
            .await
            .status,
        201
    );
    let created = post(addr, "/api/v1/auth/token", &json!({"name": "ci"})).await;
    assert_eq!(created.status, 201, "{}", created.json);
    let token = created.json["token"].as_str().expect("token").to_owned();
    let id = created.json["id"].as_str().expect("id").to_owned();
    assert!(
        token.starts_with("sk_") && id.starts_with("tok_"),
        "{}",
        created.json
    );
    assert_eq!(created.json["scope"], json!("org"));

    // Its uses are recorded at most once a minute.
    let last_used = || async {
        let list = get(addr, "/api/v1/auth/token").await.json;
        let row = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|t| t["id"] == json!(id))
            .cloned()
            .expect("listed");
        assert!(row.get("token").is_none(), "a list never shows the token");
        row["lastUsedAt"].clone()
    };
    let use_it = || call(addr, "GET", "/api/v1/app", Some(&token), &[], b"");
    assert_eq!(use_it().await.status, 200);
    let mut first_use = Value::Null;
    for _ in 0..500 {
        first_use = last_used().await;
        if !first_use.is_null() {
            break;
        }
        crate::harness::pause(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(first_use, json!("2023-11-14T22:13:20.000Z"));
    clock.advance_ms(30_000);
    for _ in 0..20 {
        assert_eq!(use_it().await.status, 200);
    }
    // (Nothing was queued; had it been, the next read would see a later time.)
    assert_eq!(use_it().await.status, 200);
    assert_eq!(
        last_used().await,
        first_use,
        "within the minute: not recorded"
    );
    clock.advance_ms(31_000);
    assert_eq!(use_it().await.status, 200);
    let mut later = Value::Null;
    for _ in 0..500 {
        later = last_used().await;
        if later != first_use {
            break;
        }
        crate::harness::pause(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(later, json!("2023-11-14T22:14:21.000Z"));

    // Revoked: 401 on the very next request, on every route.
    let resp = call(
        addr,
        "DELETE",
        &format!("/api/v1/auth/token/{id}"),
        Some(TOKEN),
        &[],
        b"",
    )
    .await;
    assert_eq!(resp.status, 204, "{}", resp.json);
    for (method, path) in SOME_ROUTES {
        let resp = call(addr, method, path, Some(&token), &[], b"{}").await;
        assert_eq!(resp.status, 401, "{method} {path}: {}", resp.json);
        assert_eq!(resp.json["code"], json!("authentication_failed"));
    }
    let resp = call(
        addr,
        "DELETE",
        &format!("/api/v1/auth/token/{id}"),
        Some(TOKEN),
        &[],
        b"",
    )
    .await;
    assert_eq!(resp.status, 404, "gone: {}", resp.json);

    // Expiry: works until its time, then 401 everywhere.
    let expiring = post(
        addr,
        "/api/v1/auth/token",
        &json!({"name": "short", "appId": "t", "expiresAt": "2023-11-14T23:00:00Z"}),
    )
    .await;
    assert_eq!(expiring.status, 201, "{}", expiring.json);
    let app_scoped = expiring.json["token"].as_str().expect("token").to_owned();
    assert!(
        expiring.json["scope"]
            .as_str()
            .expect("scope")
            .starts_with("app_")
    );
    let resp = call(
        addr,
        "GET",
        "/api/v1/app/t/msg",
        Some(&app_scoped),
        &[],
        b"",
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.json);
    let resp = call(
        addr,
        "GET",
        "/api/v1/auth/token",
        Some(&app_scoped),
        &[],
        b"",
    )
    .await;
    assert_eq!(resp.status, 403, "tokens are org-only: {}", resp.json);
    clock.advance_ms(3_600_000);
    for (method, path) in SOME_ROUTES {
        let resp = call(addr, method, path, Some(&app_scoped), &[], b"{}").await;
        assert_eq!(resp.status, 401, "expired: {method} {path}: {}", resp.json);
    }
    // Bad input.
    for body in [
        json!({"expiresAt": "yesterday"}),
        json!({"expiresAt": "2020-01-01T00:00:00Z"}),
        json!({"nmae": "typo"}),
    ] {
        let resp = post(addr, "/api/v1/auth/token", &body).await;
        assert_eq!(resp.status, 422, "{body}: {}", resp.json);
    }
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_throttled_per_address_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = sluice::clock::Clock::manual(1_700_000_000_000);
    let sluice = crate::harness::start_clocked(dir.path(), clock.clone()).await;
    let addr = sluice.addr;
    let burst = sluice::limits::AUTH_FAILURES_BURST;
    for i in 0..burst {
        let resp = call(
            addr,
            "GET",
            "/api/v1/app",
            Some(&format!("sk_wrong{i}")),
            &[],
            b"",
        )
        .await;
        assert_eq!(resp.status, 401, "failure {i}");
    }
    // Past the burst: 429 with Retry-After before the token is looked at, even a good one.
    for token in ["sk_wrong", TOKEN] {
        let resp = call(addr, "GET", "/api/v1/app", Some(token), &[], b"").await;
        assert_eq!(resp.status, 429, "{}", resp.json);
        assert_eq!(resp.json["code"], json!("auth_throttled"));
        assert_eq!(
            resp.headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
    // Health and metrics need no token and stay open.
    assert_eq!(get(addr, "/api/v1/health").await.status, 200);
    let (_, metrics) = crate::harness::get_text(addr, "/metrics").await;
    let count = |outcome: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("sluice_api_auth_failures_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(count("refused") >= f64::from(burst), "{metrics}");
    assert!(count("throttled") >= 2.0, "{metrics}");
    // A second later one more try is allowed; a good token then works.
    clock.advance_ms(1_000);
    assert_eq!(get(addr, "/api/v1/app").await.status, 200);
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_admin_token_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::harness::test_config(dir.path());
    let error = sluice::app::start(&config, Some("a"), sluice::clock::Clock::System)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("at least 32"), "{error}");
    // The daemon says so and exits 64, before binding.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("d"))
        .env("SLUICE_ADMIN_TOKEN", "short-token")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SLUICE_ADMIN_TOKEN"), "{stderr}");
}

/// A small filesystem of its own, unmounted when dropped: a loop-mounted ext4 image where
/// the test may mount one, else a tmpfs of the same fixed size.
struct SmallFs {
    mount: std::path::PathBuf,
    kind: &'static str,
}

impl SmallFs {
    const SIZE: &'static str = "64M";

    fn make(dir: &std::path::Path) -> SmallFs {
        use std::process::Command;
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).expect("mount point");
        let image = dir.join("disk.img");
        let ok = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
        let ext4 = ok(Command::new("truncate")
            .args(["-s", Self::SIZE])
            .arg(&image))
            && ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))
            && ok(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mount));
        if ext4 {
            return SmallFs {
                mount,
                kind: "a loop-mounted 64 MiB ext4 image",
            };
        }
        let size = format!("size={}", Self::SIZE.to_lowercase());
        assert!(
            ok(Command::new("mount")
                .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
                .arg(&mount)),
            "cannot mount a loop image or a tmpfs (the test needs root)"
        );
        SmallFs {
            mount,
            kind: "a 64 MiB tmpfs",
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_recovers_when_an_application_is_deleted() {
    use crate::receiver::{Answer, Receiver};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = SmallFs::make(dir.path());
    eprintln!("the data directory is on {}", fs.kind);
    let data = fs.mount.join("data");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[storage]\nmap_size_bytes = 1073741824\ndisk_reserve_bytes = 8388608\n",
    )
    .expect("config");
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    let args: Vec<std::ffi::OsString> = vec![
        "--config".into(),
        config.into(),
        "--allow-http".into(),
        "--allow-network".into(),
        "127.0.0.0/8".into(),
    ];
    let daemon = crate::harness::Daemon::spawn_args(&data, &args);
    let addr = daemon.addr;
    for uid in ["big", "keep"] {
        let resp = post(addr, "/api/v1/app", &json!({"name": uid, "uid": uid})).await;
        assert_eq!(resp.status, 201, "{}", resp.json);
        let resp = post(
            addr,
            &format!("/api/v1/app/{uid}/endpoint"),
            &json!({"url": hook.url()}),
        )
        .await;
        assert_eq!(resp.status, 201, "{}", resp.json);
    }

    // Fill it through the API, 10 KB messages from 8 clients, until 507.
    let pad = "x".repeat(10_000);
    let full = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for client in 0..8 {
        let (full, pad) = (Arc::clone(&full), pad.clone());
        senders.push(tokio::spawn(async move {
            let (mut accepted, mut statuses) = (Vec::new(), std::collections::BTreeMap::new());
            let mut refused_after_full = 0;
            for n in 0..20_000 {
                let body =
                    json!({"eventType": "fill", "payload": {"c": client, "n": n, "pad": pad}});
                let resp = post(addr, "/api/v1/app/big/msg", &body).await;
                *statuses.entry(resp.status).or_insert(0) += 1;
                match resp.status {
                    202 => accepted.push(resp.json["id"].as_str().expect("id").to_owned()),
                    507 => {
                        assert_eq!(resp.json["code"], json!("storage_full"));
                        full.store(true, Ordering::Relaxed);
                    }
                    other => panic!("only 202 or 507, never {other}: {}", resp.json),
                }
                if full.load(Ordering::Relaxed) {
                    refused_after_full += 1;
                    if refused_after_full > 20 {
                        break;
                    }
                }
            }
            (accepted, statuses)
        }));
    }
    let mut accepted = Vec::new();
    for sender in senders {
        let (ids, statuses) = sender.await.expect("sender");
        assert!(
            statuses.keys().all(|s| *s == 202 || *s == 507),
            "{statuses:?}"
        );
        accepted.extend(ids);
    }
    assert!(
        full.load(Ordering::Relaxed),
        "the guard refused before the disk was full"
    );
    assert!(accepted.len() > 1_000, "{} accepted first", accepted.len());
    eprintln!("{} messages accepted before 507", accepted.len());

    // Health says why, and the gauge shows the free bytes.
    let health = get(addr, "/api/v1/health").await;
    assert_eq!(health.status, 200, "{}", health.json);
    assert_eq!(health.json["status"], json!("degraded"), "{}", health.json);
    assert_eq!(health.json["disk"]["status"], json!("degraded"));
    let reasons = health.json["reasons"].to_string();
    assert!(reasons.contains("disk_reserve_bytes"), "{reasons}");
    let (_, metrics) = crate::harness::get_text(addr, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_disk_free_bytes ")),
        "{metrics}"
    );

    // Every acknowledged message is readable.
    let ids = Arc::new(accepted);
    let mut readers = Vec::new();
    for part in 0..8 {
        let ids = Arc::clone(&ids);
        readers.push(tokio::spawn(async move {
            for id in ids.iter().skip(part).step_by(8) {
                let resp = get(addr, &format!("/api/v1/app/big/msg/{id}")).await;
                assert_eq!(resp.status, 200, "{id}: {}", resp.json);
            }
        }));
    }
    for reader in readers {
        reader.await.expect("reader");
    }

    // Deleting the application frees its space in the background; ingest resumes
    // without a restart.
    let resp = call(addr, "DELETE", "/api/v1/app/big", Some(TOKEN), &[], b"").await;
    assert_eq!(resp.status, 204, "{}", resp.json);
    let mut resumed = false;
    for _ in 0..1_000 {
        let body = json!({"eventType": "after", "payload": {"ok": true}});
        let resp = post(addr, "/api/v1/app/keep/msg", &body).await;
        assert!(
            matches!(resp.status, 202 | 507),
            "{}: {}",
            resp.status,
            resp.json
        );
        if resp.status == 202 {
            resumed = true;
            break;
        }
        crate::harness::pause(std::time::Duration::from_millis(20)).await;
    }
    assert!(resumed, "message create works again after the purge");
    let mut healthy = false;
    for _ in 0..500 {
        if get(addr, "/api/v1/health").await.json["status"] == json!("ok") {
            healthy = true;
            break;
        }
        crate::harness::pause(std::time::Duration::from_millis(20)).await;
    }
    assert!(healthy, "health is ok again");

    // The whole episode took few lines of diagnostics.
    let lines = daemon.log_lines();
    assert!(
        lines.len() < 100,
        "{} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
    drop(daemon);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_application_purges_its_messages_deliveries_and_attempts() {
    use crate::receiver::{Answer, Receiver};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::harness::loopback_config(dir.path());
    // Failing answers: deliveries stay pending (with due rows) and attempts pile up.
    let hook = Receiver::start(|_| Answer::Status(500)).await;
    let sluice = sluice::app::start(&config, Some(TOKEN), sluice::clock::Clock::System)
        .await
        .expect("start");
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "g", "uid": "g"}))
            .await
            .status,
        201
    );
    for n in 0..2 {
        let resp = post(
            addr,
            "/api/v1/app/g/endpoint",
            &json!({"url": format!("{}?e={n}", hook.url())}),
        )
        .await;
        assert_eq!(resp.status, 201, "{}", resp.json);
    }
    for n in 0..50 {
        let body = json!({"eventType": "g", "eventId": format!("e{n}"), "payload": {"n": n}});
        assert_eq!(post(addr, "/api/v1/app/g/msg", &body).await.status, 202);
    }
    hook.wait_for(100).await;
    let resp = call(addr, "DELETE", "/api/v1/app/g", Some(TOKEN), &[], b"").await;
    assert_eq!(resp.status, 204, "{}", resp.json);

    // The sweeper's purge batches empty every table the application's rows were in.
    let purged_tables = [
        "msgs",
        "msg_ids",
        "app_msgs",
        "delivery_rows",
        "endpoint_deliveries",
        "due",
        "attempts",
        "attempt_ids",
        "msg_attempts",
        "endpoint_attempts",
    ];
    let mut left = Vec::new();
    for _ in 0..500 {
        left = crate::harness::tables_with_rows(sluice.log(), &purged_tables);
        if left.is_empty() {
            break;
        }
        crate::harness::pause(std::time::Duration::from_millis(20)).await;
    }
    assert!(left.is_empty(), "rows left in {left:?}");
    sluice.stop().await;
}
