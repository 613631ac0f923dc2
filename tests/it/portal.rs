//! The tenant portal end to end: Debian's Chromium driven by Python Playwright
//! (tests/portal/portal_e2e.py) against a real Sluice and real receivers on loopback, and
//! the link the unmodified Python SDK mints opening the portal (portal_sdk_link.py).
//!
//! `SLUICE_PYTHON` names a Python with `svix`, `standardwebhooks` and `playwright`
//! (scripts/test makes `.venv`); `SLUICE_CHROMIUM` the browser (default
//! `/usr/bin/chromium`, Debian's `chromium`, which scripts/test installs). Playwright never
//! downloads a browser here: the scripts launch this executable.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;

use sluice::clock::Clock;

use crate::harness::{TOKEN, run_ok, test_config};

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
    let mut config = test_config(dir.path());
    config.delivery.allow_http = true;
    config.delivery.allowed_networks = vec!["127.0.0.0/8".parse().expect("net")];
    // A failed attempt fails the delivery at once: recover has something to recover.
    config.delivery.retry_schedule_ms = Vec::new();
    config.portal.frame_ancestors = vec![format!("http://{host}")];
    config.portal.refresh_url = Some(format!("http://{host}/new-link"));
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("sluice starts");
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/portal");
    std::fs::create_dir_all(shots).expect("docs/portal");
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
        .env("SCREENSHOTS", shots);
    let output = tokio::task::spawn_blocking(move || run_ok(&mut command))
        .await
        .expect("script ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ALL PORTAL CHECKS PASSED"),
        "stdout:\n{stdout}"
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdks_portal_link_opens_the_portal() {
    let (python, chromium) = (python(), chromium());
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = sluice::app::start(&test_config(dir.path()), Some(TOKEN), Clock::System)
        .await
        .expect("sluice starts");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/portal/portal_sdk_link.py"
    );
    let mut command = Command::new(python);
    command
        .arg(script)
        .env("SLUICE_URL", format!("http://{}", sluice.addr))
        .env("SLUICE_TOKEN", TOKEN)
        .env("CHROMIUM", chromium);
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
