//! Hostile input over real HTTP: each gets the right status and a JSON error, the server
//! keeps serving, and nothing is stored.

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
