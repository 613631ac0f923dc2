//! Egress: deliveries through an HTTP proxy's CONNECT tunnels (Debian's tinyproxy on
//! loopback), with the destination policy judging every destination before the proxy is
//! asked; and trust: a receiver with a self-signed certificate is reached over HTTPS only
//! with `delivery.ca_file`, and without it the attempt fails with a TLS reason.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use sluice::clock::Clock;

use crate::harness::{TOKEN, get, make_certificates, pause, post, test_config};
use crate::receiver::{Answer, Receiver};

/// A tinyproxy child process, killed on drop.
struct Tinyproxy {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tinyproxy {
    /// Starts tinyproxy on a free loopback port and waits until it accepts connections.
    async fn start(dir: &Path) -> Tinyproxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.join("tinyproxy.log");
        let config = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT may reach any port (the receivers' are random).
        let text = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\n\
             MaxClients 50\nAllow 127.0.0.1\n",
            log.display()
        );
        std::fs::write(&config, text).expect("config");
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (Debian package `tinyproxy`, installed by scripts/test) runs");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Owned by its guard from here: a panic below still kills and reaps it.
        let proxy = Tinyproxy { child, addr, log };
        for _ in 0..250 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return proxy;
            }
            pause(std::time::Duration::from_millis(20)).await;
        }
        panic!("tinyproxy never listened on {addr}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Polls the endpoint's attempts until one is recorded; returns it.
async fn first_attempt(addr: SocketAddr, app: &str, endpoint: &str) -> Value {
    let path = format!("/api/v1/app/{app}/attempt/endpoint/{endpoint}");
    for _ in 0..500 {
        let attempts = get(addr, &path).await.json;
        if let Some(first) = attempts["data"].as_array().and_then(|d| d.first()) {
            return first.clone();
        }
        pause(std::time::Duration::from_millis(20)).await;
    }
    panic!("no attempt was recorded at {endpoint}");
}

async fn endpoint(addr: SocketAddr, app: &str, url: &str) -> String {
    let created = post(
        addr,
        &format!("/api/v1/app/{app}/endpoint"),
        &json!({"url": url}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.json);
    created.json["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_through_the_proxy_and_the_policy_judges_destinations_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Tinyproxy::start(dir.path()).await;
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    let mut config = test_config(&dir.path().join("data"));
    config.delivery.proxy = Some(proxy.addr.to_string());
    config.delivery.allow_http = true;
    // 10.255.255.1 is allowed while its endpoint is made, then the policy is narrowed (as
    // a SIGHUP would): the attempt, not only the endpoint create, judges the destination.
    config.delivery.allowed_networks = vec![
        "127.0.0.0/8".parse().expect("cidr"),
        "10.255.255.1/32".parse().expect("cidr"),
    ];
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start");
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "p", "uid": "p"}))
            .await
            .status,
        201
    );
    let good = endpoint(addr, "p", &hook.url()).await;
    let refused = endpoint(addr, "p", "http://10.255.255.1:9/hook").await;
    config.delivery.allowed_networks = vec!["127.0.0.0/8".parse().expect("cidr")];
    assert_eq!(sluice.reload(&config), Ok(Vec::new()));
    // Now a private address the policy does not allow: refused before any tunnel is asked
    // for.
    let sent = post(
        addr,
        "/api/v1/app/p/msg",
        &json!({"eventType": "t", "payload": {"n": 1}}),
    )
    .await;
    assert_eq!(sent.status, 202, "{}", sent.json);

    let arrived = hook.wait_for(1).await;
    let secret = get(addr, &format!("/api/v1/app/p/endpoint/{good}/secret")).await;
    crate::delivery::assert_signed(&arrived[0], secret.json["key"].as_str().expect("key"));
    let attempt = first_attempt(addr, "p", &refused).await;
    assert_eq!(attempt["responseStatusCode"], 0, "{attempt}");
    assert!(
        attempt["response"]
            .as_str()
            .is_some_and(|r| r.contains("10.255.255.1")),
        "the refusal names the destination: {attempt}"
    );
    let log = proxy.log();
    assert!(
        log.contains(&format!("127.0.0.1:{}", hook.addr.port())),
        "the delivery went through the proxy:\n{log}"
    );
    assert!(
        !log.contains("10.255.255.1"),
        "the proxy was asked for a refused destination:\n{log}"
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_lets_a_self_signed_receiver_be_reached_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certificates(dir.path());
    let hook = Receiver::start_tls(dir.path()).await;
    let url = format!("https://127.0.0.1:{}/hook", hook.addr.port());
    let data = dir.path().join("data");
    let mut config = test_config(&data);
    config.delivery.allowed_networks = vec!["127.0.0.0/8".parse().expect("cidr")];

    // Without the CA: the handshake fails and the attempt says why.
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start");
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "t", "uid": "t"}))
            .await
            .status,
        201
    );
    let ep = endpoint(addr, "t", &url).await;
    let sent = post(
        addr,
        "/api/v1/app/t/msg",
        &json!({"eventType": "t", "payload": {}}),
    )
    .await;
    assert_eq!(sent.status, 202);
    let attempt = first_attempt(addr, "t", &ep).await;
    let response = attempt["response"].as_str().unwrap_or_default().to_owned();
    assert!(
        response.contains("certificate") || response.contains("UnknownIssuer"),
        "a TLS reason: {attempt}"
    );
    assert!(hook.received().is_empty());
    sluice.stop().await;

    // With the CA file: the same receiver is reached.
    config.delivery.ca_file = Some(dir.path().join("ca.pem"));
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start");
    let sent = post(
        sluice.addr,
        "/api/v1/app/t/msg",
        &json!({"eventType": "t", "payload": {}}),
    )
    .await;
    assert_eq!(sent.status, 202);
    let arrived = hook.wait_for(1).await;
    assert_eq!(arrived.len(), 1);
    sluice.stop().await;

    // A CA file that holds no certificate stops the start with a clear error.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("junk");
    config.delivery.ca_file = Some(junk);
    let failed = sluice::app::start(&config, Some(TOKEN), Clock::System).await;
    let error = failed.err().expect("refused").to_string();
    assert!(error.contains("delivery.ca_file"), "{error}");
}
