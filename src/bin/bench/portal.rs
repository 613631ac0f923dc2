//! The `portal` scenario: how fast the tenant portal's pages render with a large log.
//! It fills one application with `--portal-messages` messages (default 100,000) delivered
//! to each of its `--portal-endpoints` endpoints (default 1),
//! opens a portal session the way a browser does (an access link, its login code posted
//! to `/portal/session`, the cookie), then fetches every page kind `PAGE_FETCHES` times
//! in turn on one keep-alive connection and reports each page's p50 and p99.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::{
    Behaviour, KEY, Plan, RUNS, Seen, Sender, Sluice, Subject, connect, create_app,
    create_endpoint, http_get, on_clients, post, start_fast_sink,
};

/// Fetches of each page.
const PAGE_FETCHES: usize = 200;
/// The longest the fill and its deliveries may take.
const FILL_TIME_MAX: Duration = Duration::from_secs(900);

/// The log a run fills.
pub(super) struct Shape {
    pub(super) messages: usize,
    pub(super) endpoints: usize,
}

/// Runs the scenario; returns false if a page failed or the fill did not finish.
pub(super) async fn portal(subject: &Subject, clients: usize, shape: Shape) -> bool {
    let Shape {
        messages,
        endpoints,
    } = shape;
    let endpoints = endpoints.max(1);
    let run_number = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sluice-bench-{}-{run_number}", std::process::id()));
    let app = format!("bench-{}-{run_number}", std::process::id());
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let plan = Plan {
        endpoints,
        slow: 0,
        failing: 0,
        closing: 0,
        hanging: 0,
        fanout: 1,
        via_source: false,
        payload: 256,
        clients,
        secs: FILL_TIME_MAX,
        rate: None,
    };
    debug_assert!(plan.behaviour(0) == Behaviour::Fast);
    let sink = start_fast_sink(Arc::clone(&seen), plan).await;
    let mut child = match subject.target {
        Some(addr) => Sluice::running(addr, subject.pid),
        None => Sluice::spawn(&subject.binary, &dir, "", true),
    };
    let addr = child.addr;
    let mut sender = create_app(addr, &app).await;
    let secret = format!("whsec_{}", base64::Engine::encode(&super::BASE64, KEY));
    for n in 0..endpoints {
        let body = format!(r#"{{"url":"http://{sink}/hook/{n}","secret":"{secret}"}}"#);
        create_endpoint(&mut sender, addr, &app, body).await;
    }
    let started = Instant::now();
    let filled = fill(addr, &app, clients, messages).await;
    let deadline = started + FILL_TIME_MAX;
    while seen.lock().expect("lock").first.len() < filled * endpoints && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "portal: {filled} messages accepted and delivered to {endpoints} endpoints in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    drop(sender);
    let ok = filled >= messages && pages(addr, &app, messages).await;
    child.stop();
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

/// Posts messages until `messages` are accepted (or the time is up); returns how many
/// were.
async fn fill(addr: std::net::SocketAddr, app: &str, clients: usize, messages: usize) -> usize {
    let accepted = Arc::new(AtomicUsize::new(0));
    let path = format!("/api/v1/app/{app}/msg?with_content=false");
    let deadline = Instant::now() + FILL_TIME_MAX;
    on_clients(clients, |c| {
        let (accepted, path) = (Arc::clone(&accepted), path.clone());
        async move {
            let mut sender = connect(addr).await;
            let mut n = 0u64;
            while accepted.load(Ordering::Relaxed) < messages && Instant::now() < deadline {
                let event_type = if n.is_multiple_of(2) { "invoice.paid" } else { "user.created" };
                let body = format!(
                    r#"{{"eventType":"{event_type}","payload":{{"c":{c},"n":{n},"note":"a portal bench message"}}}}"#
                );
                n += 1;
                if post(&mut sender, addr, &path, body.into_bytes()).await.0 == 202 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    accepted.load(Ordering::Relaxed)
}

/// Opens a session and measures every page; false if any answered other than 200.
async fn pages(addr: std::net::SocketAddr, app: &str, messages: usize) -> bool {
    let Some((cookie, [endpoint, message, attempt])) = open_portal(addr, app).await else {
        return false;
    };
    let pages = [
        ("endpoints", "/portal/".to_owned()),
        ("endpoint overview", format!("/portal/endpoints/{endpoint}")),
        (
            "endpoint settings",
            format!("/portal/endpoints/{endpoint}/edit"),
        ),
        (
            "signing secret",
            format!("/portal/endpoints/{endpoint}/secret"),
        ),
        ("testing", format!("/portal/endpoints/{endpoint}/test")),
        ("message log", "/portal/messages".to_owned()),
        ("message", format!("/portal/messages/{message}")),
        (
            "attempt",
            format!("/portal/messages/{message}/attempts/{attempt}"),
        ),
        ("event catalogue", "/portal/event-types".to_owned()),
    ];
    let mut page_sender = connect(addr).await;
    let mut slowest = 0.0f64;
    for (name, path) in &pages {
        let mut times = Vec::with_capacity(PAGE_FETCHES);
        for _ in 0..PAGE_FETCHES {
            let begun = Instant::now();
            let status = get_page(&mut page_sender, addr, path, &cookie).await;
            times.push(begun.elapsed().as_secs_f64() * 1e3);
            if status != 200 {
                println!("portal REFUSED: {name} ({path}) answered {status}");
                return false;
            }
        }
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        slowest = slowest.max(pct(0.99));
        println!(
            "portal {name:<20} p50 {:>6.2} ms  p99 {:>6.2} ms  (n={PAGE_FETCHES}, {messages} messages)",
            pct(0.5),
            pct(0.99)
        );
    }
    println!("portal: the slowest page's p99 is {slowest:.2} ms");
    true
}

/// A session cookie from an access link, and the ids of an endpoint, a message and one
/// of its attempts for the pages' paths.
async fn open_portal(addr: std::net::SocketAddr, app: &str) -> Option<(String, [String; 3])> {
    let first = |text: &str, name: &str| -> String {
        serde_json::from_str::<serde_json::Value>(text).unwrap_or_default()["data"][0][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let endpoint = first(
        &http_get(addr, &format!("/api/v1/app/{app}/endpoint")).await,
        "id",
    );
    // The newest recorded attempt, and its message.
    let attempts = format!("/api/v1/app/{app}/attempt/endpoint/{endpoint}?limit=1");
    let attempts = http_get(addr, &attempts).await;
    let (attempt, message) = (first(&attempts, "id"), first(&attempts, "msgId"));
    // A fresh connection: the fill's has been idle past the server's keep-alive.
    let mut sender = connect(addr).await;
    let (status, link) = post(
        &mut sender,
        addr,
        &format!("/api/v1/auth/app-portal-access/{app}"),
        b"{}".to_vec(),
    )
    .await;
    let url = serde_json::from_slice::<serde_json::Value>(&link).unwrap_or_default()["url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let Some(key) = url.split_once("#key=").map(|(_, key)| key.to_owned()) else {
        println!("portal REFUSED: no access link ({status}: {url})");
        return None;
    };
    let Some(cookie) = session(addr, &key).await else {
        println!("portal REFUSED: the login code opened no session");
        return None;
    };
    Some((cookie, [endpoint, message, attempt]))
}

/// Posts a login code to `/portal/session` as the login page's script does; returns the
/// session cookie (`name=value`) it sets.
async fn session(addr: std::net::SocketAddr, key: &str) -> Option<String> {
    let mut sender = connect(addr).await;
    sender.ready().await.ok()?;
    let req = hyper::Request::post("/portal/session")
        .header("host", addr.to_string())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!("key={key}"))))
        .ok()?;
    let response = sender.send_request(req).await.ok()?;
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| !c.contains("_theme="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}

/// GETs a portal page with the session cookie; returns its status (the body is read).
async fn get_page(
    sender: &mut Sender,
    addr: std::net::SocketAddr,
    path: &str,
    cookie: &str,
) -> u16 {
    if sender.ready().await.is_err() {
        *sender = connect(addr).await;
    }
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .header("cookie", cookie)
        .body(Full::new(Bytes::new()))
        .expect("request");
    match sender.send_request(req).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}
