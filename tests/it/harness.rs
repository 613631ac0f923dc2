//! Test harness: Sluice in-process or as a real child process, and a small HTTP client.
//!
//! Everything talks real HTTP over loopback to a real LMDB in a temporary directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sluice::app::Running;
use sluice::clock::Clock;
use sluice::config::Config;

/// The admin token of the tests (`SLUICE_ADMIN_TOKEN` must have at least 32 characters).
pub(crate) const TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A config for tests: data in `dir`, API on an ephemeral loopback port.
/// Runs `command` to completion and asserts that it succeeded, showing its output if not.
pub(crate) fn run_ok(command: &mut Command) -> std::process::Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} cannot run: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn test_config(dir: &Path) -> Config {
    let mut config = Config::embedded_default();
    config.data_dir = dir.to_path_buf();
    config.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.storage.map_size_bytes = 256 << 20;
    config
}

/// The log of `dir` on its own (no API, no delivery), as a command-line tool opens it.
pub(crate) fn open_log(
    dir: &Path,
    storage: &sluice::config::StorageConfig,
) -> (sluice::log::Log, sluice::log::WriterJoin) {
    sluice::log::Log::open(dir, storage, None, None, sluice::log::Upgrade::Refuse)
        .expect("open the log")
}

/// Which of `tables` hold rows in `log` (by their digests); panics if the log has no
/// table of one of the names, so that a renamed table cannot pass unseen.
pub(crate) fn tables_with_rows<'a>(log: &sluice::log::Log, tables: &[&'a str]) -> Vec<&'a str> {
    let empty = ring::digest::digest(&ring::digest::SHA256, b"");
    let digests = log.table_digests().expect("digests");
    tables
        .iter()
        .copied()
        .filter(|table| {
            let (_, digest) = digests
                .iter()
                .find(|(name, _)| name == table)
                .unwrap_or_else(|| panic!("the log has no table {table}"));
            digest[..] != *empty.as_ref()
        })
        .collect()
}

/// Copies the upgrade fixture `name` (its `data.mdb` and `secrets.key`) under `dir`;
/// returns the data directory and the key's path.
pub(crate) fn copy_upgrade_fixture(name: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upgrade")
        .join(name);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::copy(fixture.join("data.mdb"), data.join("data.mdb")).expect("data.mdb");
    let key = dir.join("secrets.key");
    std::fs::copy(fixture.join("secrets.key"), &key).expect("secrets.key");
    (data, key)
}

/// `test_config` that may deliver to plain-HTTP receivers on loopback (the tests'
/// receivers).
pub(crate) fn loopback_config(dir: &Path) -> Config {
    let mut config = test_config(dir);
    config.delivery.allow_http = true;
    config.delivery.allowed_networks = vec!["127.0.0.0/8".parse().expect("net")];
    config
}

/// Starts Sluice in this process with `TOKEN` as the admin token.
pub(crate) async fn start(dir: &Path) -> Running {
    start_clocked(dir, Clock::System).await
}

/// Starts Sluice with a clock the test controls.
pub(crate) async fn start_clocked(dir: &Path, clock: Clock) -> Running {
    sluice::app::start(&test_config(dir), Some(TOKEN), clock)
        .await
        .expect("sluice starts")
}

/// A response: status, parsed JSON body (`Null` when empty), headers.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub json: Value,
    pub headers: hyper::HeaderMap,
}

/// One HTTP/1.1 request on a fresh connection; panics on a transport error.
pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_call(addr, method, path, token, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One HTTP/1.1 request on a fresh connection; transport errors are returned.
pub(crate) async fn try_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let (status, headers, bytes) = call_raw(addr, method, path, token, headers, body).await?;
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    Ok(Resp {
        status,
        json,
        headers,
    })
}

/// A GET whose answer is text (`/metrics`, Prometheus): status and body.
pub(crate) async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, bytes) = call_raw(addr, "GET", path, None, &[], b"")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A GET whose answer may be any text, from a server that may still be starting:
/// status and body, or why there is none (never a panic).
pub(crate) async fn try_get_text(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let (status, _, bytes) = call_raw(addr, "GET", path, None, &[], b"").await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// One request; the body as bytes.
pub(crate) async fn call_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, bytes))
}

/// Shorthands with the admin token.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Resp {
    call(addr, "GET", path, Some(TOKEN), &[], b"").await
}

pub(crate) async fn post(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    call(
        addr,
        "POST",
        path,
        Some(TOKEN),
        &[],
        body.to_string().as_bytes(),
    )
    .await
}

/// Sluice as a child process (for kill -9, signals and SDK tests).
pub(crate) struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the daemon wrote to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `sluice serve` on `dir` and waits until it logs its address.
    pub(crate) fn spawn(dir: &Path) -> Daemon {
        Daemon::spawn_with(dir, None)
    }

    /// Starts `sluice serve` with a config file (data dir and listen still from flags).
    pub(crate) fn spawn_with(dir: &Path, config: Option<&Path>) -> Daemon {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(config) = config {
            args.push("--config".into());
            args.push(config.into());
        }
        Daemon::spawn_args(dir, &args)
    }

    /// Starts `sluice serve` with extra command-line arguments.
    pub(crate) fn spawn_args(dir: &Path, extra: &[std::ffi::OsString]) -> Daemon {
        Daemon::spawn_env(dir, extra, &[])
    }

    /// Starts `sluice serve` with extra arguments and environment variables.
    pub(crate) fn spawn_env(
        dir: &Path,
        extra: &[std::ffi::OsString],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        Daemon::spawn_via(Command::new(env!("CARGO_BIN_EXE_sluice")), dir, extra, env)
    }

    /// Starts `sluice serve` through `command`: Sluice itself, or a program that execs it
    /// with the arguments that follow (`prlimit … sluice`), so the pid is Sluice's.
    pub(crate) fn spawn_via(
        mut command: Command,
        dir: &Path,
        extra: &[std::ffi::OsString],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .env("SLUICE_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut before = Vec::new();
        let addr = loop {
            let Some(line) = lines.next() else {
                panic!(
                    "sluice exited before serving; it said:\n{}",
                    before.join("\n")
                )
            };
            let line = line.expect("read stderr");
            before.push(line.clone());
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .expect("addr")
                    .parse()
                    .expect("socket address");
            }
        };
        // Keep draining stderr (so the child never blocks on a full pipe), and keep it.
        let log = std::sync::Arc::new(std::sync::Mutex::new(before));
        let kept = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().expect("lock").push(line);
            }
        });
        Daemon { child, addr, log }
    }

    /// Every line the daemon wrote to stderr so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }

    /// Sends `signal` (`TERM`, `HUP`, …) with kill(1).
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits (at most 10 s) until the daemon has logged a line containing `text`
    /// `times` times in all.
    pub(crate) async fn wait_for_log(&self, text: &str, times: usize) {
        for _ in 0..500 {
            let seen = self
                .log
                .lock()
                .expect("lock")
                .iter()
                .filter(|l| l.contains(text))
                .count();
            if seen >= times {
                return;
            }
            pause(std::time::Duration::from_millis(20)).await;
        }
        panic!(
            "the daemon never logged {text:?} {times} times:\n{}",
            self.log.lock().expect("lock").join("\n")
        );
    }

    /// Waits (at most `limit`) for the process to exit; its exit code.
    pub(crate) async fn exit_code(&mut self, limit: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            pause(std::time::Duration::from_millis(20)).await;
        }
        panic!("the daemon did not exit within {limit:?}");
    }

    /// Every line the daemon wrote to stderr so far (for a failing test's report).
    pub(crate) fn log_text(&self) -> String {
        self.log.lock().expect("lock").join("\n")
    }

    /// SIGKILL: no chance to flush or drain.
    pub(crate) fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one place the tests wait on the clock: between two polls of state that no event
/// announces, and as a receiver's simulated answer time. Everything else waits on events.
/// (`tidy.rs` allows a sleep nowhere else in the tests.)
pub(crate) async fn pause(duration: std::time::Duration) {
    tokio::time::sleep(duration).await;
}

/// Polls `path` (every 20 ms, at most 10 s) until `cond` holds on its JSON. For state
/// that changes through the delivery engine, where no event reaches the test.
pub(crate) async fn eventually_json(
    addr: SocketAddr,
    path: &str,
    cond: impl Fn(&Value) -> bool,
) -> bool {
    for _ in 0..500 {
        if cond(&get(addr, path).await.json) {
            return true;
        }
        pause(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// Creates a token scoped to the application `app` (id or uid).
pub(crate) async fn app_token(sluice: &sluice::app::Running, app: &str) -> String {
    use sluice::log::schema::TokenScope;
    let key = sluice
        .log()
        .read(|rtxn, dbs| sluice::log::tables::app_by_ref(rtxn, dbs, app))
        .expect("read")
        .expect("app")
        .key;
    sluice::app::create_token(
        sluice.log(),
        &sluice::clock::Clock::System,
        TokenScope::App(key),
    )
    .await
    .expect("token")
}

/// Runs openssl (the Debian package of that name, installed by .ci/run) in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").args(args).current_dir(dir));
}

/// The arguments of a new P-256 key, unencrypted.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it, in `dir`.
pub(crate) fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &EC_KEY,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Sluice test CA",
            ],
        ]
        .concat(),
    );
    issue_leaf(
        dir,
        "leaf",
        "key.pem",
        "cert.pem",
        "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
}

/// A client certificate (`client.pem`, key `client.key`, CN `sluice-node`) signed by the
/// CA that `make_certificates` wrote in `dir`, for servers that verify their clients.
pub(crate) fn make_client_certificate(dir: &Path) {
    issue_leaf(
        dir,
        "client",
        "client.key",
        "client.pem",
        "/CN=sluice-node",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
}

/// A new key (`key`) and its certificate (`cert`) for `subject`, with the extensions
/// `extensions`, signed by `dir`'s CA (`ca.pem`, `ca.key`); `name` names the request.
fn issue_leaf(dir: &Path, name: &str, key: &str, cert: &str, subject: &str, extensions: &str) {
    let (csr, ext) = (format!("{name}.csr"), format!("{name}.ext"));
    openssl(
        dir,
        &[
            &["req"][..],
            &EC_KEY,
            &["-keyout", key, "-out", &csr, "-subj", subject],
        ]
        .concat(),
    );
    std::fs::write(dir.join(&ext), extensions).expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}
