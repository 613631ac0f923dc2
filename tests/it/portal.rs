//! The tenant portal end to end: Debian's Chromium driven by Python Playwright
//! (tests/portal/portal_e2e.py) against a real Sluice and real receivers on loopback, and
//! the links the unmodified Python and JavaScript SDKs mint opening the portal
//! (portal_sdk_link.py, portal_js_link.mjs), and the capability matrix over plain HTTP.
//!
//! `SLUICE_PYTHON` names a Python with `svix`, `standardwebhooks` and `playwright`
//! (scripts/test makes `.venv`); `SLUICE_CHROMIUM` the browser (default
//! `/usr/bin/chromium`, Debian's `chromium`, which scripts/test installs); `SVIX_JS` a
//! node_modules holding the npm `svix` SDK (scripts/test installs it). Playwright never
//! downloads a browser here: the scripts launch this executable.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};
use sluice::clock::Clock;

use crate::harness::{TOKEN, call, call_raw, get, loopback_config, post, run_ok, test_config};

/// The page a platform would put the portal in: it frames `?src=` and sizes the frame
/// by the portal's `svix.iframe-resizer-height` messages, as svix-react's `AppPortal`.
const HOST_PAGE: &str = r#"<!doctype html><html><head><title>Platform</title></head><body>
<h1>Platform settings</h1>
<iframe title="Webhooks portal" style="width:100%;border:0;height:150px"></iframe>
<script>
const frame = document.querySelector("iframe");
window.addEventListener("message", (e) => {
  if (e.source === frame.contentWindow && e.data && e.data.type === "svix.iframe-resizer-height") {
    frame.style.height = e.data.payload.height + "px";
    window.portalHeight = e.data.payload.height;
  }
});
frame.src = new URLSearchParams(location.search).get("src");
</script></body></html>"#;

/// Serves `HOST_PAGE` to every request, on a thread, for as long as the test runs.
fn serve_host_page() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind host page");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{HOST_PAGE}",
                HOST_PAGE.len()
            );
        }
    });
    addr
}

fn python() -> String {
    std::env::var("SLUICE_PYTHON").expect(
        "set SLUICE_PYTHON to a Python with svix and playwright (scripts/test creates .venv)",
    )
}

fn chromium() -> String {
    let path = std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium (scripts/test does, as root)"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_works_end_to_end_in_chromium() {
    let (python, chromium) = (python(), chromium());
    let host = serve_host_page();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_config(dir.path());
    // A failed attempt fails the delivery at once: recover has something to recover.
    config.delivery.retry_schedule_ms = Vec::new();
    config.portal.frame_ancestors = vec![format!("http://{host}")];
    config.portal.refresh_url = Some(format!("http://{host}/new-link"));
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("sluice starts");
    // The README's screenshots are rewritten only when asked (`SLUICE_UPDATE_SCREENSHOTS=1`
    // scripts/test): each run's differ in ids and times, and a test run should leave the
    // tree as it found it. Otherwise they go to the temporary directory, and are checked.
    let shots = if std::env::var("SLUICE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/portal"))
    } else {
        dir.path().join("screenshots")
    };
    std::fs::create_dir_all(&shots).expect("screenshots directory");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/portal/portal_e2e.py");
    let mut command = Command::new(python);
    command
        .arg(script)
        .env("SLUICE_URL", format!("http://{}", sluice.addr))
        .env("SLUICE_TOKEN", TOKEN)
        .env("HOST_URL", format!("http://{host}"))
        // The same page on another origin (and site): not in frame_ancestors.
        .env(
            "OTHER_HOST_URL",
            format!("http://localhost:{}", host.port()),
        )
        .env("CHROMIUM", chromium)
        .env("SCREENSHOTS", &shots);
    let output = tokio::task::spawn_blocking(move || run_ok(&mut command))
        .await
        .expect("script ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ALL PORTAL CHECKS PASSED"),
        "stdout:\n{stdout}"
    );
    // Every screenshot the README shows was taken.
    let readme = include_str!("../../README.md");
    for shown in readme.split("docs/portal/").skip(1) {
        let name = shown.split(')').next().unwrap_or_default();
        let png = std::fs::metadata(shots.join(name))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(
            png > 1_000,
            "{name}: the README shows it and the suite took it"
        );
    }
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_js_sdks_portal_links_open_the_portal() {
    let (python, chromium) = (python(), chromium());
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = sluice::app::start(&test_config(dir.path()), Some(TOKEN), Clock::System)
        .await
        .expect("sluice starts");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/portal/portal_sdk_link.py"
    );
    let svix_js = std::env::var("SVIX_JS").expect(
        "set SVIX_JS to a node_modules holding the npm svix SDK (scripts/test installs it)",
    );
    let mut node = Command::new("node");
    node.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/portal/portal_js_link.mjs"
    ))
    .env("SLUICE_URL", format!("http://{}", sluice.addr))
    .env("SLUICE_TOKEN", TOKEN)
    .env("SVIX_JS", svix_js);
    let js = tokio::task::spawn_blocking(move || run_ok(&mut node))
        .await
        .expect("node ran");
    let js_link = String::from_utf8_lossy(&js.stdout).trim().to_owned();
    let mut command = Command::new(python);
    command
        .arg(script)
        .env("SLUICE_URL", format!("http://{}", sluice.addr))
        .env("SLUICE_TOKEN", TOKEN)
        .env("CHROMIUM", chromium)
        .env("JS_LINK", js_link);
    let output = tokio::task::spawn_blocking(move || run_ok(&mut command))
        .await
        .expect("script ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("SDK LINK CHECKS PASSED"),
        "stdout:\n{stdout}"
    );
    sluice.stop().await;
}

/// Posts a form with no session yet (the login code's exchange, the operator's sign-in):
/// the status and the headers.
async fn post_form(addr: SocketAddr, path: &str, body: &str) -> (u16, hyper::HeaderMap) {
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, headers, _) = call_raw(addr, "POST", path, None, &form, body.as_bytes())
        .await
        .expect(path);
    (status, headers)
}

/// A portal session for an access link: the cookie header and the form token.
async fn sign_in(addr: SocketAddr, url: &str) -> (String, String) {
    let key = url.split("#key=").nth(1).expect("key in the fragment");
    let (status, headers) = post_form(addr, "/portal/session", &format!("key={key}")).await;
    assert_eq!(status, 303, "the login code opens a session");
    let cookie = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let (status, _, page) = call_raw(addr, "GET", "/portal/", None, &[("cookie", &cookie)], b"")
        .await
        .expect("home");
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page);
    let csrf = page
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form token")
        .to_owned();
    (cookie, csrf)
}

/// A portal form POST as the session; the status.
async fn portal_post(addr: SocketAddr, session: &(String, String), path: &str, form: &str) -> u16 {
    let body = format!("_csrf={}&{form}", session.1);
    call_raw(
        addr,
        "POST",
        path,
        None,
        &[
            ("cookie", &session.0),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    )
    .await
    .expect("portal post")
    .0
}

/// Every capability allows its actions and only those, on the portal's routes and on
/// `/api/v1` alike; `readOnly` is view-only whatever the list says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capability_is_enforced_on_the_portal_and_on_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = loopback_config(dir.path());
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("sluice starts");
    let addr = sluice.addr;
    let app = post(addr, "/api/v1/app", &json!({"name": "Caps", "uid": "caps"})).await;
    let app_id = app.json["id"].as_str().expect("app id").to_owned();
    // Port 9 (discard) refuses on loopback: deliveries fail without leaving the machine.
    let ep = post(
        addr,
        "/api/v1/app/caps/endpoint",
        &json!({"url": "http://127.0.0.1:9/hook"}),
    )
    .await;
    let ep_id = ep.json["id"].as_str().expect("endpoint id").to_owned();
    let msg = post(
        addr,
        "/api/v1/app/caps/msg",
        &json!({"eventType": "user.created", "payload": {"a": 1}}),
    )
    .await;
    let msg_id = msg.json["id"].as_str().expect("message id").to_owned();
    let secret_of = || async {
        get(addr, &format!("/api/v1/app/caps/endpoint/{ep_id}/secret"))
            .await
            .json["key"]
            .as_str()
            .expect("key")
            .to_owned()
    };

    let all = json!([
        "ViewBase",
        "ViewEndpointSecret",
        "ManageEndpointSecret",
        "CreateAttempts",
        "ManageEndpoint"
    ]);
    // (capabilities, readOnly, may view the secret, may rotate, may manage, may attempt)
    let cases = [
        (json!(["ViewBase"]), false, [false, false, false, false]),
        (
            json!(["ViewBase", "ViewEndpointSecret"]),
            false,
            [true, false, false, false],
        ),
        (
            json!(["ViewBase", "ManageEndpointSecret"]),
            false,
            [true, true, false, false],
        ),
        (
            json!(["ViewBase", "ManageEndpoint"]),
            false,
            [true, true, true, false],
        ),
        (
            json!(["ViewBase", "CreateAttempts"]),
            false,
            [false, false, false, true],
        ),
        (all.clone(), true, [false, false, false, false]),
        (all, false, [true, true, true, true]),
    ];
    for (capabilities, read_only, [view, rotate, manage, attempt]) in cases {
        let what = format!("{capabilities} readOnly={read_only}");
        let access = post(
            addr,
            "/api/v1/auth/app-portal-access/caps",
            &json!({"capabilities": capabilities, "readOnly": read_only}),
        )
        .await;
        assert_eq!(access.status, 200, "{what}: {:?}", access.json);
        let token = access.json["token"].as_str().expect("token").to_owned();
        let session = sign_in(addr, access.json["url"].as_str().expect("url")).await;
        let rest = |method: &'static str, path: String, body: Value| {
            let token = token.clone();
            async move {
                call(
                    addr,
                    method,
                    &path,
                    Some(&token),
                    &[],
                    body.to_string().as_bytes(),
                )
                .await
                .status
            }
        };
        let ok = |allowed: bool, status: u16| if allowed { status < 400 } else { status == 403 };
        let endpoint = format!("/api/v1/app/{app_id}/endpoint/{ep_id}");

        // ViewBase: everyone reads.
        assert_eq!(
            rest("GET", format!("/api/v1/app/{app_id}/endpoint"), Value::Null).await,
            200,
            "{what}"
        );
        let home = call_raw(
            addr,
            "GET",
            "/portal/",
            None,
            &[("cookie", &session.0)],
            b"",
        )
        .await
        .expect("home");
        assert_eq!(home.0, 200, "{what}: the portal's home");

        // Viewing the secret.
        let status = call(
            addr,
            "GET",
            &format!("{endpoint}/secret"),
            Some(&token),
            &[],
            b"",
        )
        .await
        .status;
        assert!(ok(view, status), "{what}: REST secret read {status}");
        let key = secret_of().await;
        let page = call_raw(
            addr,
            "GET",
            &format!("/portal/endpoints/{ep_id}/secret?reveal=1"),
            None,
            &[("cookie", &session.0)],
            b"",
        )
        .await
        .expect("secret page");
        assert_eq!(
            String::from_utf8_lossy(&page.2).contains(&key),
            view,
            "{what}: portal reveal"
        );

        // Rotating it.
        let status = rest("POST", format!("{endpoint}/secret/rotate"), json!({})).await;
        assert!(ok(rotate, status), "{what}: REST rotate {status}");
        let path = format!("/portal/endpoints/{ep_id}/secret/rotate");
        let status = portal_post(addr, &session, &path, "grace=0").await;
        assert!(ok(rotate, status), "{what}: portal rotate {status}");

        // Managing the endpoint.
        let status = rest("PATCH", endpoint.clone(), json!({"description": "x"})).await;
        assert!(ok(manage, status), "{what}: REST patch {status}");
        let status = portal_post(
            addr,
            &session,
            &format!("/portal/endpoints/{ep_id}/enable"),
            "",
        )
        .await;
        assert!(ok(manage, status), "{what}: portal enable {status}");
        let path = format!("/portal/endpoints/{ep_id}/edit");
        let form = "url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&description=d";
        let status = portal_post(addr, &session, &path, form).await;
        assert!(ok(manage, status), "{what}: portal settings {status}");
        let path = format!("/portal/endpoints/{ep_id}/headers");
        let status = portal_post(addr, &session, &path, "name=X-A&value=1").await;
        assert!(ok(manage, status), "{what}: portal header {status}");
        let status = rest(
            "POST",
            format!("/api/v1/app/{app_id}/endpoint"),
            json!({"url": "http://127.0.0.1:9/b"}),
        )
        .await;
        assert!(ok(manage, status), "{what}: REST create {status}");
        let status = portal_post(
            addr,
            &session,
            "/portal/endpoints/new",
            "url=http%3A%2F%2F127.0.0.1%3A9%2Fc",
        )
        .await;
        assert!(ok(manage, status), "{what}: portal create {status}");

        // Creating attempts.
        let status = rest(
            "POST",
            format!("{endpoint}/send-example"),
            json!({"eventType": "svix.ping"}),
        )
        .await;
        assert!(ok(attempt, status), "{what}: REST send-example {status}");
        let status = portal_post(
            addr,
            &session,
            &format!("/portal/endpoints/{ep_id}/test"),
            "eventType=svix.ping",
        )
        .await;
        assert!(ok(attempt, status), "{what}: portal send-example {status}");
        let resend = format!("/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{ep_id}/resend");
        let status = rest("POST", resend, Value::Null).await;
        assert!(ok(attempt, status), "{what}: REST resend {status}");
        let path = format!("/portal/messages/{msg_id}/resend/{ep_id}");
        let status = portal_post(addr, &session, &path, "").await;
        assert!(ok(attempt, status), "{what}: portal resend {status}");

        // Never: the platform's own operations.
        let status = rest(
            "POST",
            format!("/api/v1/app/{app_id}/msg"),
            json!({"eventType": "a", "payload": {}}),
        )
        .await;
        assert_eq!(status, 403, "{what}: a portal token creates no message");
        let status = rest(
            "POST",
            "/api/v1/auth/app-portal-access/caps".to_owned(),
            json!({}),
        )
        .await;
        assert_eq!(status, 403, "{what}: a portal token mints no link");
    }
    sluice.stop().await;
}

/// A request and the status it must get: method, path, headers, body, status.
type GarbageCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8], u16);

/// Garbage at the portal gets a page, never a crash: unknown or forged sessions, broken
/// keys, oversized forms, odd paths; and the headers every page carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_answers_garbage_with_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = sluice::app::start(&test_config(dir.path()), Some(TOKEN), Clock::System)
        .await
        .expect("sluice starts");
    let addr = sluice.addr;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let big = vec![b'a'; 64 * 1024];
    let cases: [GarbageCase; 9] = [
        ("GET", "/portal/", &[], b"", 401),
        (
            "GET",
            "/portal/",
            &[("cookie", "sluice_portal=forged")],
            b"",
            401,
        ),
        ("GET", "/portal/endpoints/%ff%fe/secret", &[], b"", 401),
        ("POST", "/portal/session", &form, b"key=%%%", 401),
        ("POST", "/portal/session", &form, b"key=bm90IGpzb24", 401),
        ("POST", "/portal/session", &form, b"", 401),
        ("POST", "/portal/session", &form, &big, 413),
        (
            "POST",
            "/portal/session",
            &[("sec-fetch-site", "cross-site")],
            b"key=x",
            403,
        ),
        ("GET", "/portal/assets/nothing.js", &[], b"", 401),
    ];
    for (method, path, headers, body, want) in cases {
        let (status, headers, page) = call_raw(addr, method, path, None, headers, body)
            .await
            .expect("an answer");
        assert_eq!(status, want, "{method} {path}");
        let csp = headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
            "{method} {path}: {csp}"
        );
        assert!(String::from_utf8_lossy(&page).starts_with("<!doctype html>"));
    }
    // The server still serves.
    let (status, _, _) = call_raw(addr, "GET", "/portal/login", None, &[], b"")
        .await
        .expect("login page");
    assert_eq!(status, 200);
    sluice.stop().await;
}

/// A login code works for `portal.login_code_lifetime_seconds` and once; a session ends
/// with its link's `expiry` (the log's clock decides, so every node of a cluster agrees).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_codes_and_sessions_expire_on_the_logs_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(1_700_000_000_000);
    let sluice = sluice::app::start(&test_config(dir.path()), Some(TOKEN), clock.clone())
        .await
        .expect("sluice starts");
    let addr = sluice.addr;
    post(
        addr,
        "/api/v1/app",
        &json!({"name": "Clocked", "uid": "clocked"}),
    )
    .await;
    let mint = || async {
        let out = post(
            addr,
            "/api/v1/auth/app-portal-access/clocked",
            &json!({"expiry": 3600}),
        )
        .await;
        assert_eq!(out.status, 200, "{:?}", out.json);
        out.json
    };
    let exchange = |url: String| async move {
        let key = url.split("#key=").nth(1).expect("key").to_owned();
        post_form(addr, "/portal/session", &format!("key={key}"))
            .await
            .0
    };
    // A code past its ten minutes is refused.
    let late = mint().await;
    clock.advance_ms(600_001);
    assert_eq!(
        exchange(late["url"].as_str().expect("url").to_owned()).await,
        401
    );
    // A fresh one works once.
    let fresh = mint().await;
    let url = fresh["url"].as_str().expect("url").to_owned();
    assert_eq!(exchange(url.clone()).await, 303);
    assert_eq!(exchange(url.clone()).await, 401, "a code works once");
    let session = sign_in_after(addr, &mint().await).await;
    let home = |cookie: String| async move {
        call_raw(addr, "GET", "/portal/", None, &[("cookie", &cookie)], b"")
            .await
            .expect("home")
            .0
    };
    assert_eq!(home(session.clone()).await, 200);
    // A session's value and a login code are no bearer tokens.
    let cookie_value = session.split_once('=').expect("name=value").1.to_owned();
    let code_link = mint().await;
    let key = code_link["url"]
        .as_str()
        .expect("url")
        .split("#key=")
        .nth(1)
        .expect("key");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key)
        .expect("base64url");
    let code: Value = serde_json::from_slice(&decoded).expect("json");
    let code = code["code"].as_str().expect("code").to_owned();
    for credential in [cookie_value, code] {
        let status = call(
            addr,
            "GET",
            "/api/v1/app/clocked",
            Some(&credential),
            &[],
            b"",
        )
        .await
        .status;
        assert_eq!(
            status, 401,
            "a portal session or login code opens no API call"
        );
    }
    let token = fresh["token"].as_str().expect("token").to_owned();
    let app_status = |token: String| async move {
        call(addr, "GET", "/api/v1/app/clocked", Some(&token), &[], b"")
            .await
            .status
    };
    assert_eq!(app_status(token.clone()).await, 200);
    // An hour on, the link's expiry ends its token and its session.
    clock.advance_ms(3_600_000);
    assert_eq!(home(session).await, 401, "the session ended with the link");
    assert_eq!(
        app_status(token).await,
        401,
        "the token ended with the link"
    );
    sluice.stop().await;
}

/// The cookie of a new session for an access link (`app-portal-access`'s reply).
async fn sign_in_after(addr: SocketAddr, access: &Value) -> String {
    sign_in(addr, access["url"].as_str().expect("url")).await.0
}

/// The `name=value` of the cookie `name` among a response's `Set-Cookie` headers.
fn set_cookie(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|c| c.split_once('=').is_some_and(|(n, _)| n == name))
        .map(str::to_owned)
}

/// A portal GET with these cookies: status, headers, page.
async fn portal_get(
    addr: SocketAddr,
    path: &str,
    cookies: &str,
) -> (u16, hyper::HeaderMap, String) {
    let (status, headers, body) = call_raw(addr, "GET", path, None, &[("cookie", cookies)], b"")
        .await
        .expect("portal get");
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Signs in on the operator form with `token`: the status and the session cookie.
async fn operator_sign_in(addr: SocketAddr, token: &str) -> (u16, Option<String>) {
    let (status, headers) = post_form(addr, "/portal/operator", &format!("token={token}")).await;
    (status, set_cookie(&headers, "sluice_portal"))
}

/// An operator signs in with an org-wide token, sees every application with its endpoints'
/// health a page at a time, opens one with every capability, and logs out; tenants'
/// sessions and other tokens get no such view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_with_an_org_token_and_see_every_application() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = loopback_config(dir.path());
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("sluice starts");
    let addr = sluice.addr;
    post(addr, "/api/v1/app", &json!({"name": "Acme", "uid": "acme"})).await;
    post(
        addr,
        "/api/v1/app",
        &json!({"name": "Globex", "uid": "globex"}),
    )
    .await;
    for url in ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"] {
        post(addr, "/api/v1/app/acme/endpoint", &json!({"url": url})).await;
    }
    let disabled = post(
        addr,
        "/api/v1/app/globex/endpoint",
        &json!({"url": "http://127.0.0.1:9/g", "disabled": true}),
    )
    .await;
    assert_eq!(disabled.status, 201, "{:?}", disabled.json);
    // More applications than a page holds.
    for i in 0..50 {
        post(
            addr,
            "/api/v1/app",
            &json!({"name": format!("Filler {i:02}")}),
        )
        .await;
    }

    // Tokens that are not org-wide API tokens are refused, on a page.
    let app_token = crate::harness::app_token(&sluice, "acme").await;
    for bad in ["nope", app_token.as_str()] {
        let (status, cookie) = operator_sign_in(addr, bad).await;
        assert_eq!((status, cookie), (401, None), "{bad}");
    }
    let (status, cookie) = operator_sign_in(addr, TOKEN).await;
    assert_eq!(status, 303);
    let session = cookie.expect("an operator session cookie");

    // Nothing chosen yet: the portal is the list of applications.
    let (status, headers, _) = portal_get(addr, "/portal/", &session).await;
    assert_eq!(status, 303);
    assert_eq!(headers.get("location").expect("location"), "/portal/apps");
    let (status, _, list) = portal_get(addr, "/portal/apps", &session).await;
    assert_eq!(status, 200, "{list}");
    assert!(list.contains("Acme") && list.contains("Globex"), "{list}");
    assert_eq!(list.matches("<tr><td>").count(), 50, "a page holds 50 rows");
    // Acme: two endpoints, none failing or disabled; Globex: one, disabled.
    let row = |page: &str, name: &str| {
        page.split("<tr><td>")
            .find(|r| r.contains(name))
            .unwrap_or_else(|| panic!("{name} in {page}"))
            .split("</tr>")
            .next()
            .expect("row")
            .to_owned()
    };
    let acme = row(&list, "Acme");
    assert!(
        acme.contains("</code></td><td>2</td><td>0</td><td>0</td>"),
        "{acme}"
    );
    let globex = row(&list, "Globex");
    assert!(
        globex.contains("</code></td><td>1</td><td>0</td><td class=\"warn\">1</td>"),
        "{globex}"
    );
    let next = list
        .split("href=\"/portal/apps?iterator=")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a next page link")
        .to_owned();
    let (status, _, second) =
        portal_get(addr, &format!("/portal/apps?iterator={next}"), &session).await;
    assert_eq!(status, 200);
    assert_eq!(second.matches("<tr><td>").count(), 2, "{second}");

    // Opening an application: its pages, with every capability.
    let acme_id = get(addr, "/api/v1/app/acme").await.json["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, headers, _) = portal_get(addr, &format!("/portal/apps/{acme_id}"), &session).await;
    assert_eq!(status, 303);
    let chosen = set_cookie(&headers, "sluice_portal_app").expect("the chosen application");
    let both = format!("{session}; {chosen}");
    let (status, _, home) = portal_get(addr, "/portal/", &both).await;
    assert_eq!(status, 200);
    assert!(
        home.contains("http://127.0.0.1:9/a") && home.contains("Add endpoint"),
        "{home}"
    );
    let csrf = home
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form token")
        .to_owned();
    let operator = (both.clone(), csrf);
    assert_eq!(
        portal_post(
            addr,
            &operator,
            "/portal/endpoints/new",
            "url=http%3A%2F%2F127.0.0.1%3A9%2Fc"
        )
        .await,
        303,
        "the operator manages endpoints"
    );
    assert_eq!(
        get(addr, "/api/v1/app/acme/endpoint").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    // An application that is not there.
    let (status, _, _) = portal_get(addr, "/portal/apps/app_nope", &session).await;
    assert_eq!(status, 404);

    // A tenant's session sees no list and no other application, whatever its cookies say.
    let access = post(addr, "/api/v1/auth/app-portal-access/globex", &json!({})).await;
    let tenant = sign_in_after(addr, &access.json).await;
    let (status, _, page) = portal_get(addr, "/portal/apps", &tenant).await;
    assert_eq!(status, 404, "{page}");
    assert!(!page.contains("Acme"));
    let (status, headers, _) = portal_get(addr, &format!("/portal/apps/{acme_id}"), &tenant).await;
    assert_eq!(status, 404);
    assert!(set_cookie(&headers, "sluice_portal_app").is_none());
    let (status, _, home) = portal_get(addr, "/portal/", &format!("{tenant}; {chosen}")).await;
    assert_eq!(status, 200);
    assert!(
        home.contains("http://127.0.0.1:9/g") && !home.contains("http://127.0.0.1:9/a"),
        "a tenant sees its own application only: {home}"
    );

    // Logging out ends the operator's session.
    assert_eq!(
        portal_post(addr, &operator, "/portal/logout", "").await,
        200
    );
    let (status, _, _) = portal_get(addr, "/portal/apps", &session).await;
    assert_eq!(status, 401);
    sluice.stop().await;
}

/// `sluice portal-link` prints an operator's link that works once, next to a running
/// daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_portal_link_prints_a_single_use_operator_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = crate::harness::Daemon::spawn(dir.path());
    let addr = daemon.addr;
    post(
        addr,
        "/api/v1/app",
        &json!({"name": "Initech", "uid": "initech"}),
    )
    .await;
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["portal-link", "--data-dir"])
            .arg(dir.path()),
    );
    let link = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(link.contains("/portal/login#key="), "{link}");
    let key = link.split("#key=").nth(1).expect("key");
    let exchange = || async {
        let (status, headers) = post_form(addr, "/portal/session", &format!("key={key}")).await;
        (status, set_cookie(&headers, "sluice_portal"))
    };
    let (status, session) = exchange().await;
    assert_eq!(status, 303);
    let session = session.expect("an operator session cookie");
    let (status, _, list) = portal_get(addr, "/portal/apps", &session).await;
    assert_eq!(status, 200);
    assert!(list.contains("Initech"), "{list}");
    assert_eq!(exchange().await, (401, None), "the link works once");
}

/// Svix's `application` in an access request makes the application when the path names
/// none (its uid the path's), and is ignored when it exists; a bad one is a 422 and makes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_request_with_an_application_makes_it_when_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = sluice::app::start(&test_config(dir.path()), Some(TOKEN), Clock::System)
        .await
        .expect("sluice starts");
    let addr = sluice.addr;
    for (path, body) in [
        (
            "newco",
            json!({"application": {"name": "NewCo", "uid": "other"}}),
        ),
        ("newco", json!({"application": {"uid": "newco"}})),
        (
            "newco",
            json!({"application": {"name": "NewCo", "throttleRate": "fast"}}),
        ),
        ("bad uid!", json!({"application": {"name": "Bad"}})),
    ] {
        let out = post(
            addr,
            &format!(
                "/api/v1/auth/app-portal-access/{}",
                path.replace(' ', "%20")
            ),
            &body,
        )
        .await;
        assert!(
            matches!(out.status, 404 | 422),
            "{path} {body}: {} {:?}",
            out.status,
            out.json
        );
    }
    assert_eq!(
        get(addr, "/api/v1/app/newco").await.status,
        404,
        "nothing made"
    );
    let out = post(
        addr,
        "/api/v1/auth/app-portal-access/newco",
        &json!({"application": {"name": "NewCo", "metadata": {"plan": "pro"}}}),
    )
    .await;
    assert_eq!(out.status, 200, "{:?}", out.json);
    let app = get(addr, "/api/v1/app/newco").await;
    assert_eq!(app.status, 200);
    assert_eq!(app.json["name"], "NewCo");
    assert_eq!(app.json["metadata"]["plan"], "pro");
    // The link opens the new application's portal.
    let (session, _) = sign_in(addr, out.json["url"].as_str().expect("url")).await;
    let (status, _, home) = portal_get(addr, "/portal/", &session).await;
    assert_eq!(status, 200);
    assert!(home.contains("NewCo"), "{home}");
    // It exists now: the field is ignored, and no second application is made.
    let again = post(
        addr,
        "/api/v1/auth/app-portal-access/newco",
        &json!({"application": {"name": "Renamed", "uid": "newco"}}),
    )
    .await;
    assert_eq!(again.status, 200, "{:?}", again.json);
    assert_eq!(get(addr, "/api/v1/app/newco").await.json["name"], "NewCo");
    let apps = get(addr, "/api/v1/app").await;
    assert_eq!(apps.json["data"].as_array().map(Vec::len), Some(1));
    sluice.stop().await;
}

/// The endpoints list shows each endpoint's last 24 hours, and the message page recovers
/// an endpoint's failed messages from that message on ("replay from here") with
/// `CreateAttempts` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_rows_count_the_day_and_a_message_recovers_from_here() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_config(dir.path());
    // A failed attempt fails the delivery at once.
    config.delivery.retry_schedule_ms = Vec::new();
    // "From here" is from the message's time, to the millisecond: the clock moves a
    // millisecond between messages, which a fast machine would otherwise post within one.
    let clock = Clock::manual(Clock::System.now_ms());
    let sluice = sluice::app::start(&config, Some(TOKEN), clock.clone())
        .await
        .expect("sluice starts");
    let addr = sluice.addr;
    post(addr, "/api/v1/app", &json!({"name": "Day", "uid": "day"})).await;
    // Port 9 (discard) refuses on loopback: every delivery fails.
    let ep = post(
        addr,
        "/api/v1/app/day/endpoint",
        &json!({"url": "http://127.0.0.1:9/day"}),
    )
    .await;
    let ep_id = ep.json["id"].as_str().expect("endpoint id").to_owned();
    let mut msgs = Vec::new();
    for i in 0..3 {
        clock.advance_ms(1);
        let m = post(
            addr,
            "/api/v1/app/day/msg",
            &json!({"eventType": "user.created", "payload": {"i": i}}),
        )
        .await;
        msgs.push(m.json["id"].as_str().expect("message id").to_owned());
    }
    let attempts = format!("/api/v1/app/day/attempt/endpoint/{ep_id}");
    assert!(
        crate::harness::eventually_json(addr, &attempts, |j| {
            j["data"].as_array().is_some_and(|a| a.len() == 3)
        })
        .await,
        "three failed attempts"
    );
    let full = post(addr, "/api/v1/auth/app-portal-access/day", &json!({})).await;
    let session = sign_in(addr, full.json["url"].as_str().expect("url")).await;
    let (status, _, home) = portal_get(addr, "/portal/", &session.0).await;
    assert_eq!(status, 200);
    assert!(home.contains("0 succeeded · 3 failed"), "{home}");

    // Replay from the second message: the second and third are sent again.
    let (_, _, page) = portal_get(addr, &format!("/portal/messages/{}", msgs[1]), &session.0).await;
    assert!(page.contains("Recover failed from here"), "{page}");
    let form = format!("/portal/messages/{}/recover/{ep_id}", msgs[1]);
    let body = format!("_csrf={}", session.1);
    let (status, headers, _) = call_raw(
        addr,
        "POST",
        &form,
        None,
        &[
            ("cookie", &session.0),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    )
    .await
    .expect("recover");
    assert_eq!(status, 303);
    let to = headers
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("location")
        .to_owned();
    assert!(
        to.starts_with(&format!("/portal/endpoints/{ep_id}?task=")),
        "{to}"
    );
    let attempted_again = crate::harness::eventually_json(addr, &attempts, |j| {
        j["data"].as_array().is_some_and(|a| a.len() == 5)
    })
    .await;
    if !attempted_again {
        let task = to.split("task=").nth(1).unwrap_or_default();
        let task = get(addr, &format!("/api/v1/background-task/{task}"))
            .await
            .json;
        let mut rows = Vec::new();
        for m in &msgs {
            rows.push(
                get(addr, &format!("/api/v1/app/day/msg/{m}/endpoint"))
                    .await
                    .json,
            );
        }
        let seen = get(addr, &attempts).await.json;
        panic!(
            "the second and third message were attempted again, the first was not: \
             task {task}, deliveries {rows:?}, attempts {seen}"
        );
    }
    let first = get(addr, &format!("/api/v1/app/day/attempt/msg/{}", msgs[0])).await;
    assert_eq!(first.json["data"].as_array().map(Vec::len), Some(1));

    // Without CreateAttempts: no button, and the forged POST is refused.
    let view = post(
        addr,
        "/api/v1/auth/app-portal-access/day",
        &json!({"capabilities": ["ViewBase", "ManageEndpoint"]}),
    )
    .await;
    let viewer = sign_in(addr, view.json["url"].as_str().expect("url")).await;
    let (_, _, page) = portal_get(addr, &format!("/portal/messages/{}", msgs[1]), &viewer.0).await;
    assert!(!page.contains("Recover failed from here"), "{page}");
    assert_eq!(portal_post(addr, &viewer, &form, "").await, 403);
    sluice.stop().await;
}

/// `[portal] logo_url` and a link's `icon` show in the header, escaped, and only their
/// origins join the CSP's `img-src`; an icon that is not `https://` is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logo_shows_in_the_header_and_the_csp_allows_its_origin_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.portal.logo_url = Some("https://cdn.example.com/logo.svg?a=1&b=2".to_owned());
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("sluice starts");
    let addr = sluice.addr;
    post(addr, "/api/v1/app", &json!({"name": "Logo", "uid": "logo"})).await;
    let session_with = |theme: &'static str| async move {
        let access = post(addr, "/api/v1/auth/app-portal-access/logo", &json!({})).await;
        let url = access.json["url"].as_str().expect("url").to_owned();
        let key = url.split("#key=").nth(1).expect("key").to_owned();
        let form = format!(
            "key={key}&theme={}",
            percent_encoding::utf8_percent_encode(theme, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, headers) = post_form(addr, "/portal/session", &form).await;
        assert_eq!(status, 303);
        let cookies: Vec<String> = ["sluice_portal", "sluice_portal_theme"]
            .iter()
            .filter_map(|name| set_cookie(&headers, name))
            .collect();
        let (status, headers, page) = portal_get(addr, "/portal/", &cookies.join("; ")).await;
        assert_eq!(status, 200);
        let csp = headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .expect("csp")
            .to_owned();
        (page, csp)
    };
    let (page, csp) = session_with("").await;
    assert!(
        page.contains(
            "<img class=\"logo\" alt=\"\" src=\"https://cdn.example.com/logo.svg?a=1&amp;b=2\">"
        ),
        "{page}"
    );
    assert!(
        csp.contains("img-src 'self' data: https://cdn.example.com;"),
        "{csp}"
    );
    let (page, csp) = session_with("icon=https://icons.example.org/i.png").await;
    assert!(
        page.contains("src=\"https://icons.example.org/i.png\""),
        "{page}"
    );
    assert!(
        csp.contains("img-src 'self' data: https://cdn.example.com https://icons.example.org;"),
        "{csp}"
    );
    for bad in [
        "icon=javascript:alert(1)",
        "icon=http://icons.example.org/i.png",
    ] {
        let (page, csp) = session_with(bad).await;
        assert!(
            page.contains("src=\"https://cdn.example.com/logo.svg"),
            "{bad}: {page}"
        );
        assert!(!csp.contains("icons.example.org"), "{bad}: {csp}");
    }
    sluice.stop().await;
}

/// An operator's session opened with a stored org token ends when the token is revoked,
/// and no later than the token's expiry; sessions opened otherwise are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_session_ends_with_the_org_token_that_opened_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(1_700_000_000_000);
    let sluice = crate::harness::start_clocked(dir.path(), clock.clone()).await;
    let addr = sluice.addr;
    post(addr, "/api/v1/app", &json!({"name": "Acme", "uid": "acme"})).await;
    let token = |body: Value| async move {
        let created = post(addr, "/api/v1/auth/token", &body).await;
        assert_eq!(created.status, 201, "{}", created.json);
        let field = |name: &str| created.json[name].as_str().expect(name).to_owned();
        (field("token"), field("id"))
    };
    let (revoked, revoked_id) = token(json!({"name": "revoked"})).await;
    // A minute from the manual clock's start.
    let (expiring, _) = token(json!({"name": "short", "expiresAt": "2023-11-14T22:14:20Z"})).await;
    let (kept, _) = token(json!({"name": "kept"})).await;
    let mut sessions = Vec::new();
    for given in [revoked.as_str(), expiring.as_str(), kept.as_str(), TOKEN] {
        let (status, cookie) = operator_sign_in(addr, given).await;
        assert_eq!(status, 303, "{given}");
        sessions.push(cookie.expect("a session cookie"));
    }
    let open = |session: String| async move {
        let (status, _, page) = portal_get(addr, "/portal/apps", &session).await;
        status == 200 && page.contains("Acme")
    };
    for session in &sessions {
        assert!(open(session.clone()).await, "{session}");
    }

    let resp = call(
        addr,
        "DELETE",
        &format!("/api/v1/auth/token/{revoked_id}"),
        Some(TOKEN),
        &[],
        b"",
    )
    .await;
    assert_eq!(resp.status, 204, "{}", resp.json);
    let still_open = |from: usize| {
        let sessions = sessions.clone();
        async move {
            let mut out = Vec::new();
            for session in &sessions[from..] {
                out.push(open(session.clone()).await);
            }
            out
        }
    };
    assert_eq!(
        still_open(0).await,
        [false, true, true, true],
        "the revoked token's session ended, and only it"
    );

    // Past the expiring token's end (and well within a session's lifetime).
    clock.advance_ms(61_000);
    assert_eq!(
        still_open(0).await,
        [false, false, true, true],
        "the expired token's session ended with it"
    );
}
