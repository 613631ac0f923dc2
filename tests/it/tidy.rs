//! House rules checked by `cargo test`: every source file says what it owns.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_opens_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found the sources");
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).expect("read").starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:?}"
    );
}

#[test]
fn no_ignored_tests_or_stubs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let banned = [
        concat!("#[", "ignore]"),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    ];
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for word in banned {
            assert!(!text.contains(word), "{} contains {word}", file.display());
        }
    }
}

/// Lines of `text` with `needle`, as `path:line: text` for a failure message.
fn lines_with(path: &Path, text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(n, line)| format!("{}:{}: {}", path.display(), n + 1, line.trim()))
        .collect()
}

/// The log's boundary (ARCHITECTURE invariant 1): outside `src/log/`, no code opens a
/// write transaction, names the write context or the table handles, or reaches a table;
/// it submits ops and calls `log::tables` readers.
#[test]
fn only_the_log_touches_tables() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    let log_dir = root.join("src").join("log");
    let this_file = root.join("tests").join("it").join("tidy.rs");
    let mut banned: Vec<String> = [
        "write_txn(",
        "wtxn",
        "RwTxn",
        "WriteCtx",
        "Dbs",
        "db_name::",
        "pair_key(",
        "due_key(",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for table in sluice::log::schema::db_name::ALL {
        banned.push(format!("dbs.{table}"));
    }
    let mut found = Vec::new();
    for file in files
        .iter()
        .filter(|f| !f.starts_with(&log_dir) && **f != this_file)
    {
        let text = std::fs::read_to_string(file).expect("read");
        for needle in &banned {
            found.extend(lines_with(file, &text, needle));
        }
    }
    assert!(
        found.is_empty(),
        "table access outside src/log:\n{}",
        found.join("\n")
    );
}

/// No test is switched off in any spelling, and the tests wait on the clock only through
/// `harness::pause` (polling, a receiver's simulated answer time): everything else waits
/// on an event.
#[test]
fn no_ignored_tests_and_no_stray_sleeps() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let this_file = root.join("tests").join("it").join("tidy.rs");
    let harness = root.join("tests").join("it").join("harness.rs");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let ignores = [
        concat!("#[", "ignore"),
        concat!("ignore", "]"),
        concat!(", ", "ignore)"),
    ];
    let sleeps = [concat!("thread::", "sleep("), concat!("time::", "sleep(")];
    let mut found = Vec::new();
    let mut harness_sleeps = 0;
    for file in files.iter().filter(|f| **f != this_file) {
        let text = std::fs::read_to_string(file).expect("read");
        for needle in ignores {
            found.extend(lines_with(file, &text, needle));
        }
        if !file.starts_with(root.join("tests")) {
            continue;
        }
        for needle in sleeps {
            let hits = lines_with(file, &text, needle);
            if *file == harness {
                harness_sleeps += hits.len();
            } else {
                found.extend(hits);
            }
        }
    }
    assert!(found.is_empty(), "banned in tests:\n{}", found.join("\n"));
    assert_eq!(harness_sleeps, 1, "the harness sleeps in `pause` only");
}
