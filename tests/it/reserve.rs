//! The data file's zeroed reserve (`log/reserve.rs`): while the log runs, zeros are
//! appended past the last page LMDB has written, and a file that ends in them opens again
//! with every record, and goes on growing over them (ARCHITECTURE invariant 27).

use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use sluice::log::ops::{AppFields, Envelope, MessageApp, NewMessage, Op, Outcome};
use sluice::log::reserve::RESERVE_AHEAD_MIN_BYTES;
use sluice::log::{Log, Seq, tables};

use crate::harness::{pause, test_config};

const MESSAGES: usize = 40;
/// Each message's payload: 40 of them are 2.5 MiB of data, past the first top-up.
const PAYLOAD_BYTES: usize = 64 << 10;

fn payload(n: usize) -> Vec<u8> {
    format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(PAYLOAD_BYTES)).into_bytes()
}

async fn append(log: &Log, app_key: u64, n: usize, now_ms: u64) -> u64 {
    let op = Op::CreateMessage {
        app: MessageApp::Existing(app_key),
        message: Box::new(NewMessage {
            id: sluice::ids::new_id(sluice::ids::IdKind::Message, now_ms),
            event_type: "reserve.test".to_owned(),
            event_id: None,
            channels: None,
            payload: payload(n),
            retention_days: 30,
            tags: None,
            deliver_at_ms: None,
        }),
        with_content: false,
    };
    match log.submit(Envelope::new(op, now_ms)).await.expect("append") {
        Outcome::Message { seq, .. } => seq,
        other => panic!("not appended: {other:?}"),
    }
}

/// The data file's length, and the bytes LMDB has written of it.
fn lengths(log: &Log, dir: &std::path::Path) -> (u64, u64) {
    let file = std::fs::metadata(dir.join("data.mdb"))
        .expect("data file")
        .len();
    (file, log.usage().1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_file_ending_in_its_zeroed_reserve_reopens_with_every_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let direct_appends = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(dir.path().join("probe"))
        .is_ok();
    let config = test_config(dir.path());
    let now_ms = sluice::clock::Clock::System.now_ms();
    let (log, writer) = crate::harness::open_log(dir.path(), &config.storage);
    let create = Op::CreateApp {
        id: sluice::ids::new_id(sluice::ids::IdKind::App, now_ms),
        fields: AppFields {
            uid: Some("reserve".to_owned()),
            name: "reserve".to_owned(),
            throttle_rate: None,
            metadata: std::collections::BTreeMap::new(),
        },
        get_if_exists: false,
    };
    let Outcome::App { app, .. } = log
        .submit(Envelope::new(create, now_ms))
        .await
        .expect("app")
    else {
        panic!("no app");
    };
    let mut seqs = Vec::new();
    for n in 0..MESSAGES {
        seqs.push(append(&log, app.key, n, now_ms).await);
    }
    let (_, used) = lengths(&log, dir.path());
    assert!(used > (2 << 20), "the messages are on disk: {used} bytes");
    if direct_appends {
        // The reserve tops up on its own tick, and no event reaches the test: poll the
        // file (bounded), as `eventually_json` polls state the delivery engine changes.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (file, used) = lengths(&log, dir.path());
            if file >= used + RESERVE_AHEAD_MIN_BYTES / 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no zeroed reserve past the data: file {file}, data {used}"
            );
            pause(Duration::from_millis(20)).await;
        }
    }
    drop(log);
    tokio::task::spawn_blocking(move || writer.wait())
        .await
        .expect("writer");

    let file_before = std::fs::metadata(dir.path().join("data.mdb"))
        .expect("data")
        .len();
    if direct_appends {
        assert!(file_before > used, "the file ends in zeros");
    }
    let (log, writer) = crate::harness::open_log(dir.path(), &config.storage);
    let read_back = |seq: u64| {
        log.read(|rtxn, dbs| tables::message_by_seq(rtxn, dbs, Seq(seq)))
            .expect("read")
            .and_then(|m| m.payload)
    };
    for (n, &seq) in seqs.iter().enumerate() {
        assert_eq!(read_back(seq), Some(payload(n)), "message {n}");
    }
    // LMDB goes on over the zeros: 5 MiB more, all readable.
    let mut more = Vec::new();
    for n in MESSAGES..3 * MESSAGES {
        more.push((n, append(&log, app.key, n, now_ms).await));
    }
    for (n, seq) in more {
        assert_eq!(
            read_back(seq),
            Some(payload(n)),
            "message {n} after the reopen"
        );
    }
    let (_, used_after) = lengths(&log, dir.path());
    assert!(
        used_after >= used + (4 << 20),
        "the new messages were written where the zeros were: {used} -> {used_after} (file was {file_before})"
    );
    drop(log);
    tokio::task::spawn_blocking(move || writer.wait())
        .await
        .expect("writer");
}
