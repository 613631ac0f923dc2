//! The official Python `svix` SDK drives Sluice over real HTTP (tests/sdk/svix_sdk_test.py,
//! and tests/sdk/svix_ingest_poller_test.py for ingest sources and polling).
//!
//! `SLUICE_PYTHON` names a Python with `svix` installed; `scripts/test` (and so CI) makes
//! one in `.venv`. Without it this test fails and says how to get one.

use std::process::Command;

use crate::harness::{Daemon, TOKEN, run_ok};

#[test]
fn official_python_sdk_round_trips_every_call() {
    let python = std::env::var("SLUICE_PYTHON").expect(
        "set SLUICE_PYTHON to a Python with the svix SDK (scripts/test creates .venv for this)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // The script delivers to a receiver of its own on loopback (deliverAt).
    let daemon = Daemon::spawn_args(
        dir.path(),
        &[
            "--allow-http".into(),
            "--allow-network".into(),
            "127.0.0.0/8".into(),
        ],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/svix_sdk_test.py");
    let output = run_ok(
        Command::new(python)
            .arg(script)
            .env("SLUICE_URL", format!("http://{}", daemon.addr))
            .env("SLUICE_TOKEN", TOKEN),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ALL SDK CHECKS PASSED"),
        "stdout:\n{stdout}"
    );
}

#[test]
fn official_python_sdk_drives_ingest_sources_and_pollers() {
    let python = std::env::var("SLUICE_PYTHON").expect(
        "set SLUICE_PYTHON to a Python with the svix SDK (scripts/test creates .venv for this)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::spawn(dir.path());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/svix_ingest_poller_test.py"
    );
    let output = run_ok(
        Command::new(python)
            .arg(script)
            .env("SLUICE_URL", format!("http://{}", daemon.addr))
            .env("SLUICE_TOKEN", TOKEN),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ALL INGEST AND POLLER CHECKS PASSED"),
        "stdout:\n{stdout}"
    );
}
