//! `Config::parse` on arbitrary text: a config file is operator input, and a bad one must
//! be reported (every problem, with its key), never crash `serve` or `check-config`.
//! Whatever parses must be within the documented ranges.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => {
            assert!((1_000..=30_000).contains(&config.delivery.attempt_timeout_ms));
            assert!((1..=64).contains(&config.delivery.shards));
            assert!(config.delivery.retry_schedule_ms.len() <= 20);
            assert!((50..=99).contains(&config.storage.ingest_guard_percent));
        }
        Err(problems) => assert!(!problems.is_empty(), "an error names its problems"),
    }
});
