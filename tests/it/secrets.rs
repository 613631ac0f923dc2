//! Secrets at rest: with a secrets key, endpoint signing keys, header values and incoming
//! sources' secrets never reach the data directory in clear (also after a rekey, and when
//! a log is sealed after the fact); the key is needed to start; a log sealed after the
//! fact is clean in a compacted backup; with the default config a key is made on the
//! first start, and a backup restores with it.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;
use sluice::clock::Clock;

use crate::harness::{TOKEN, call, get, post, run_ok, test_config};

const SECRET_BYTES: [u8; 32] = *b"0123456789abcdef-known-secret-!!";
const HEADER_VALUE: &str = "Bearer header-secret-value-42";
/// An incoming source's verification secret (a GitHub source's `config.secret`).
const SOURCE_SECRET: &str = "source-secret-value-for-github-77";

/// Whether any file under `dir` contains `needle`.
fn found_in(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).expect("dir").any(|entry| {
        let path = entry.expect("entry").path();
        path.is_file()
            && std::fs::read(&path)
                .expect("read")
                .windows(needle.len())
                .any(|w| w == needle)
    })
}

/// The secret as an unsealed record stores it (JSON array of its bytes).
fn as_stored() -> String {
    serde_json::to_string(&SECRET_BYTES.to_vec()).expect("json")
}

fn assert_clean(dir: &Path) {
    let encoded = BASE64.encode(SECRET_BYTES);
    let stored = as_stored();
    for needle in [
        &SECRET_BYTES[..],
        encoded.as_bytes(),
        stored.as_bytes(),
        HEADER_VALUE.as_bytes(),
        SOURCE_SECRET.as_bytes(),
    ] {
        assert!(
            !found_in(dir, needle),
            "{} holds {:?} in clear",
            dir.display(),
            String::from_utf8_lossy(needle)
        );
    }
}

/// The API serves the endpoint's secret as it was given, and the source made beside it
/// its secret and the same receive URL, which still accepts a request signed with it.
async fn assert_serves_the_secret(addr: std::net::SocketAddr, endpoint: &str) {
    let secret = get(addr, &format!("/api/v1/app/s/endpoint/{endpoint}/secret")).await;
    assert_eq!(
        secret.json["key"].as_str(),
        Some(format!("whsec_{}", BASE64.encode(SECRET_BYTES)).as_str())
    );
    let source = get(addr, "/ingest/api/v1/source/src-s").await;
    assert_eq!(source.status, 200, "{}", source.json);
    assert!(
        source.json["config"].get("secret").is_none(),
        "a source's secret is never served"
    );
    let url = source.json["ingestUrl"].as_str().expect("ingestUrl");
    let path = &url[url.find("/ingest/in/").expect("receive path")..];
    let body = br#"{"action":"opened"}"#;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SOURCE_SECRET.as_bytes());
    let signature: String = ring::hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let accepted = call(
        addr,
        "POST",
        path,
        None,
        &[("x-hub-signature-256", &format!("sha256={signature}"))],
        body,
    )
    .await;
    assert_eq!(
        accepted.status, 200,
        "the source's URL and secret survived: {}",
        accepted.json
    );
}

/// Starts Sluice on `data` (with the key file; with none, secrets in clear:
/// `seal_secrets = false`), creates an endpoint with the known secret and header, and
/// stops.
async fn make_endpoint(data: &Path, key: Option<&Path>) -> String {
    let mut config = test_config(data);
    config.storage.secrets_key_file = key.map(Path::to_path_buf);
    config.storage.seal_secrets = key.is_some();
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start");
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "s", "uid": "s"}))
            .await
            .status,
        201
    );
    let body = json!({
        "url": "https://hooks.example.com/",
        "secret": format!("whsec_{}", BASE64.encode(SECRET_BYTES)),
        "headers": {"Authorization": HEADER_VALUE},
    });
    let created = post(addr, "/api/v1/app/s/endpoint", &body).await;
    assert_eq!(created.status, 201, "{}", created.json);
    let source = json!({
        "name": "s", "uid": "src-s", "type": "github", "config": {"secret": SOURCE_SECRET},
    });
    let source = post(addr, "/ingest/api/v1/source", &source).await;
    assert_eq!(source.status, 201, "{}", source.json);
    sluice.stop().await;
    created.json["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_secrets_are_sealed_and_the_key_is_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, "5a".repeat(32)).expect("key");
    let data = dir.path().join("data");
    let endpoint = make_endpoint(&data, Some(&key)).await;
    assert_clean(&data);

    // With the key, the secret is served as it was given.
    let mut config = test_config(&data);
    config.storage.secrets_key_file = Some(key.clone());
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start with the key");
    assert_serves_the_secret(sluice.addr, &endpoint).await;
    sluice.stop().await;

    // Without it, or with another key, Sluice refuses to start and says why.
    config.storage.secrets_key_file = None;
    let error = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .err()
        .expect("refused without the key")
        .to_string();
    assert!(error.contains("secrets_key_file"), "{error}");
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, "a5".repeat(32)).expect("key");
    config.storage.secrets_key_file = Some(wrong);
    let error = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .err()
        .expect("refused with another key")
        .to_string();
    assert!(error.contains("not the one"), "{error}");

    // Rotation: `sluice rekey` re-seals under a new key; then only the new key opens it.
    let old_config = dir.path().join("old.toml");
    std::fs::write(
        &old_config,
        format!("[storage]\nsecrets_key_file = \"{}\"\n", key.display()),
    )
    .expect("config");
    let new_key = dir.path().join("new.key");
    std::fs::write(&new_key, "c3".repeat(32)).expect("key");
    run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["rekey", "--new-key-file"])
            .arg(&new_key)
            .arg("--config")
            .arg(&old_config)
            .arg("--data-dir")
            .arg(&data),
    );
    config.storage.secrets_key_file = Some(key);
    assert!(
        sluice::app::start(&config, Some(TOKEN), Clock::System)
            .await
            .is_err(),
        "the old key no longer opens the log"
    );
    config.storage.secrets_key_file = Some(new_key);
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start with the new key");
    assert_serves_the_secret(sluice.addr, &endpoint).await;
    sluice.stop().await;
    assert_clean(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_sealed_after_the_fact_backs_up_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let endpoint = make_endpoint(&data, None).await;
    assert!(
        found_in(&data, as_stored().as_bytes()),
        "not sealed yet: in clear"
    );
    assert!(found_in(&data, HEADER_VALUE.as_bytes()));
    // The first start with a key seals what is there.
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, BASE64.encode([9u8; 32])).expect("key");
    let mut config = test_config(&data);
    config.storage.secrets_key_file = Some(key);
    let sluice = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("start with a new key");
    assert_serves_the_secret(sluice.addr, &endpoint).await;
    // Freed LMDB pages may still hold the old clear text; a compacted copy holds only
    // live data, which is sealed.
    let copy = dir.path().join("copy");
    sluice.log().backup_to(&copy).expect("backup");
    sluice.stop().await;
    assert_clean(&copy);
}

/// The README's operator story: the config names the key file; `sluice backup` and
/// `sluice token create --config …` work on the sealed log from a shell (no systemd
/// credential), and without the key both refuse, naming the setting to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_opens_a_sealed_log_with_the_key_the_config_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, "5a".repeat(32)).expect("key");
    let data = dir.path().join("data");
    make_endpoint(&data, Some(&key)).await;
    let write_config = |name: &str, key_line: &str| {
        let file = dir.path().join(name);
        let text = format!(
            "data_dir = {:?}\n[storage]\n{key_line}",
            data.display().to_string()
        );
        std::fs::write(&file, text).expect("config");
        file
    };
    let with_key = write_config(
        "sluice.toml",
        &format!("secrets_key_file = {:?}\n", key.display().to_string()),
    );
    let sluice = || Command::new(env!("CARGO_BIN_EXE_sluice"));
    let backup = dir.path().join("backup");
    run_ok(
        sluice()
            .arg("backup")
            .arg("--to")
            .arg(&backup)
            .arg("--config")
            .arg(&with_key),
    );
    assert_clean(&backup);
    let out = run_ok(
        sluice()
            .args(["token", "create", "--config"])
            .arg(&with_key),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .starts_with("sk_")
    );

    // Without the key: both refuse and say which setting to set.
    let without_key = write_config("nokey.toml", "");
    for args in [
        vec!["backup", "--to", "/nonexistent/never"],
        vec!["token", "create"],
    ] {
        let out = sluice()
            .args(&args)
            .arg("--config")
            .arg(&without_key)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("storage.secrets_key_file"),
            "{args:?}: {stderr}"
        );
    }
}

const STATIC_TOKEN: &str = "static-token-value-for-the-receiver-77";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_seals_every_secret_and_backups_restore_with_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The real binary with its embedded default config.
    let mut daemon = crate::harness::Daemon::spawn(&data);
    daemon.wait_for_log("Made a secrets key", 1).await;
    let key = data.join("secrets.key");
    let mode = std::fs::metadata(&key)
        .expect("key made")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    let addr = daemon.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "s", "uid": "s"}))
            .await
            .status,
        201
    );
    let body = json!({
        "url": "https://hooks.example.com/",
        "secret": format!("whsec_{}", BASE64.encode(SECRET_BYTES)),
        "headers": {"Authorization": HEADER_VALUE},
    });
    let created = post(addr, "/api/v1/app/s/endpoint", &body).await;
    assert_eq!(created.status, 201, "{}", created.json);
    let endpoint = created.json["id"].as_str().expect("id").to_owned();
    let body = json!({
        "url": "https://hooks.example.com/static",
        "signing": {"mode": "static-token", "header": "X-Hook-Token", "token": STATIC_TOKEN},
    });
    let created = post(addr, "/api/v1/app/s/endpoint", &body).await;
    assert_eq!(created.status, 201, "{}", created.json);
    // A rotation leaves the old key in the endpoint's old keys: sealed too.
    let rotated = post(
        addr,
        &format!("/api/v1/app/s/endpoint/{endpoint}/secret/rotate"),
        &json!({"key": format!("whsec_{}", BASE64.encode([0x42u8; 32]))}),
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.json);

    // data.mdb holds none of them, in any spelling.
    let mdb = std::fs::read(data.join("data.mdb")).expect("data.mdb");
    let encoded = BASE64.encode(SECRET_BYTES);
    let stored = as_stored();
    for needle in [
        &SECRET_BYTES[..],
        encoded.as_bytes(),
        stored.as_bytes(),
        HEADER_VALUE.as_bytes(),
        STATIC_TOKEN.as_bytes(),
        crate::harness::TOKEN.as_bytes(),
    ] {
        assert!(
            !mdb.windows(needle.len()).any(|w| w == needle),
            "data.mdb holds {:?} in clear",
            String::from_utf8_lossy(needle)
        );
    }

    // A backup holds the log only, and says the key is needed.
    let backup = dir.path().join("backup");
    let out = run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["backup", "--to"])
            .arg(&backup)
            .arg("--data-dir")
            .arg(&data),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("does not contain") && said.contains(&key.display().to_string()),
        "{said}"
    );
    let files: Vec<String> = std::fs::read_dir(&backup)
        .expect("backup")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["data.mdb"], "the key is never in a backup");
    daemon.signal("TERM");
    assert_eq!(
        daemon.exit_code(std::time::Duration::from_secs(10)).await,
        Some(0)
    );

    // Restoring without the key is refused (no new key is made over a sealed log)…
    let config = test_config(&backup);
    let error = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .err()
        .expect("refused without the key")
        .to_string();
    assert!(
        error.contains("secrets.key") && error.contains("missing"),
        "{error}"
    );
    assert!(!backup.join("secrets.key").exists());
    // …and works with it.
    std::fs::copy(&key, backup.join("secrets.key")).expect("copy the key");
    let restored = sluice::app::start(&config, Some(TOKEN), Clock::System)
        .await
        .expect("restored with the key");
    let secret = get(
        restored.addr,
        &format!("/api/v1/app/s/endpoint/{endpoint}/secret"),
    )
    .await;
    assert_eq!(
        secret.json["key"].as_str(),
        Some(format!("whsec_{}", BASE64.encode([0x42u8; 32])).as_str()),
        "{}",
        secret.json
    );
    let headers = get(
        restored.addr,
        &format!("/api/v1/app/s/endpoint/{endpoint}/headers"),
    )
    .await;
    // Reading them opens the sealed header values: the restored key opens them.
    assert_eq!(headers.status, 200, "{}", headers.json);
    restored.stop().await;
}
