//! The command line: config checking (exit 64 before any socket), token creation, and the
//! `serve` flags that open the destination policy for local use.

use std::process::Command;

use serde_json::json;

use crate::harness::{Daemon, call, post, run_ok};

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn bad_config_exits_64_and_lists_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "colour = 1\n[api]\nlisten = \"nowhere\"\n").expect("write");
    let out = sluice()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("colour: unknown key") && stderr.contains("api.listen"),
        "{stderr}"
    );
    // `serve` refuses the same file before binding: the data directory is never created.
    let data = dir.path().join("data");
    let out = sluice()
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(!data.exists());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/sluice.toml");
    let out = sluice()
        .arg("check-config")
        .arg(example)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_tokens_work_and_app_tokens_are_scoped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::spawn(dir.path());
    assert_eq!(
        post(
            daemon.addr,
            "/api/v1/app",
            &json!({"name": "A", "uid": "a"})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        post(
            daemon.addr,
            "/api/v1/app",
            &json!({"name": "B", "uid": "b"})
        )
        .await
        .status,
        201
    );
    // The CLI writes next to the running daemon through LMDB's own locking.
    let token = |args: &[&str]| {
        let out = run_ok(
            sluice()
                .args(["token", "create", "--data-dir"])
                .arg(dir.path())
                .args(args),
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    };
    let org = token(&[]);
    let app_a = token(&["--app", "a"]);
    assert_eq!(
        call(daemon.addr, "GET", "/api/v1/app", Some(&org), &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(
        call(daemon.addr, "GET", "/api/v1/app/a", Some(&app_a), &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(
        call(daemon.addr, "GET", "/api/v1/app/b", Some(&app_a), &[], b"")
            .await
            .status,
        404
    );
    assert_eq!(
        call(daemon.addr, "GET", "/api/v1/app", Some(&app_a), &[], b"")
            .await
            .status,
        403
    );
    let out = sluice()
        .args(["token", "create", "--app", "nope", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
}

#[test]
fn first_start_without_tokens_keeps_one_admin_token_in_a_private_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = sluice()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("SLUICE_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().expect("a line").expect("read");
    // Stdout is a pipe here, as under systemd: the token is not printed, its file is.
    let file = dir.path().join("admin-token");
    assert!(
        first.contains("admin token") && first.contains(&file.display().to_string()),
        "{first}"
    );
    let token = std::fs::read_to_string(&file)
        .expect("token file")
        .trim()
        .to_owned();
    assert!(
        token.starts_with("sk_") && !first.contains(&token),
        "{first}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner reads the token file");
    let second = lines.next().expect("a line").expect("read");
    let addr: std::net::SocketAddr = second
        .rsplit("http://")
        .next()
        .expect("addr")
        .parse()
        .expect("addr");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let status = runtime
        .block_on(call(addr, "GET", "/api/v1/app", Some(&token), &[], b""))
        .status;
    assert_eq!(status, 200);
    let _ = child.kill();
    let _ = child.wait();
    // The database holds only the token's hash.
    let data = std::fs::read(dir.path().join("data.mdb")).expect("data file");
    assert!(
        !data.windows(token.len()).any(|w| w == token.as_bytes()),
        "token stored in clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_flags_open_the_destination_policy_for_local_use() {
    use crate::receiver::{Answer, Receiver};
    let hook = Receiver::start(|_| Answer::Status(200)).await;
    // The same loopback endpoint under the default policy (refused when it is created:
    // every delivery to it would be) and under the local-use flags (delivered).
    for (flags, open) in [
        (vec![], false),
        (vec!["--allow-http", "--allow-network", "127.0.0.0/8"], true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let args: Vec<std::ffi::OsString> = flags.iter().map(Into::into).collect();
        let daemon = Daemon::spawn_args(dir.path(), &args);
        let addr = daemon.addr;
        assert_eq!(
            post(addr, "/api/v1/app", &json!({"name": "p", "uid": "p"}))
                .await
                .status,
            201
        );
        let ep = post(
            addr,
            "/api/v1/app/p/endpoint",
            &json!({"url": hook.url(), "uid": "local"}),
        )
        .await;
        if !open {
            assert_eq!(
                (ep.status, &ep.json["detail"][0]["loc"]),
                (422, &json!(["body", "url"])),
                "refused by the default policy: {}",
                ep.json
            );
            continue;
        }
        assert_eq!(ep.status, 201, "{}", ep.json);
        let msg = post(
            addr,
            "/api/v1/app/p/msg",
            &json!({"eventType": "t", "payload": {}}),
        )
        .await;
        assert_eq!(msg.status, 202);
        let path = "/api/v1/app/p/attempt/endpoint/local";
        let attempted =
            crate::harness::eventually_json(addr, path, |a| a["data"][0]["status"].is_u64()).await;
        assert!(attempted, "an attempt is recorded");
        let attempt = crate::harness::get(addr, path).await.json["data"][0].clone();
        assert_eq!(attempt["status"].as_u64(), Some(0), "delivered: {attempt}");
    }
    assert_eq!(
        hook.received().len(),
        1,
        "only the flagged daemon reached it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_and_revoked_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::spawn(dir.path());
    let stdout = |out: std::process::Output| String::from_utf8(out.stdout).expect("utf8");
    let token = stdout(run_ok(
        sluice()
            .args(["token", "create", "--name", "deploy-bot", "--data-dir"])
            .arg(dir.path()),
    ))
    .trim()
    .to_owned();
    assert_eq!(
        call(daemon.addr, "GET", "/api/v1/app", Some(&token), &[], b"")
            .await
            .status,
        200
    );
    let list = stdout(run_ok(
        sluice()
            .args(["token", "list", "--data-dir"])
            .arg(dir.path()),
    ));
    let row = list
        .lines()
        .find(|l| l.contains("deploy-bot"))
        .unwrap_or_else(|| panic!("listed: {list}"));
    assert!(!list.contains(&token), "the list never shows a token");
    let id = row.split('\t').next().expect("id").to_owned();
    assert!(id.starts_with("tok_") && row.contains("\torg\t"), "{row}");
    // A unique prefix of the id is enough.
    run_ok(
        sluice()
            .args(["token", "revoke", &id[..10], "--data-dir"])
            .arg(dir.path()),
    );
    assert_eq!(
        call(daemon.addr, "GET", "/api/v1/app", Some(&token), &[], b"")
            .await
            .status,
        401,
        "revoked: refused by the running daemon at once"
    );
    let list = stdout(run_ok(
        sluice()
            .args(["token", "list", "--data-dir"])
            .arg(dir.path()),
    ));
    assert!(!list.contains(&id), "{list}");
    let out = sluice()
        .args(["token", "revoke", "tok_nope", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
}

/// The example config (`systemd/sluice.toml`) is complete: every key Sluice knows is in
/// it, set or commented out, and a value that is not the default says so; and it passes
/// `check-config`.
#[test]
fn the_example_config_holds_every_key_and_passes_check_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/sluice.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let mut section = String::new();
    let mut seen = std::collections::BTreeMap::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // A section may be shown commented out (`# [cluster]`: a mode, not a default).
        let header = trimmed.trim_start_matches('#').trim();
        if let Some(name) = header.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
            continue;
        }
        let setting = trimmed.trim_start_matches('#').trim();
        if let Some((key, value)) = setting.split_once(" = ") {
            let key = key.trim();
            if !key.contains(' ') {
                seen.insert(
                    format!("{section}{key}"),
                    (value.to_owned(), trimmed.starts_with('#')),
                );
            }
        }
    }
    for setting in sluice::config::SETTINGS {
        let key = setting.key;
        let (value, commented) = seen
            .get(key)
            .unwrap_or_else(|| panic!("{key} is missing from {path}"));
        let value = value.split(" #").next().unwrap_or_default().trim();
        let default = setting.default.unwrap_or("(none)");
        assert!(
            *commented || value == default || seen_says_default(&text, key),
            "{key} = {value} is not the default {default} and says nothing of it"
        );
    }
    run_ok(sluice().arg("check-config").arg(path));
}

/// Whether the line setting `key` mentions the default in its comment.
fn seen_says_default(text: &str, key: &str) -> bool {
    let name = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .any(|l| l.trim_start().starts_with(&format!("{name} =")) && l.contains("default"))
}
