//! The time parsers fed by the outside world: `Retry-After` (from receivers), RFC 3339
//! (query strings and request bodies) and HTTP dates. None may panic; an RFC 3339 time
//! Sluice reads must format and read back to the same instant.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::clock::{format_rfc3339, parse_http_date, parse_rfc3339};
use sluice::delivery::classify::parse_retry_after;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now_ms = 1_800_000_000_000;
    let _ = parse_retry_after(text, now_ms);
    let _ = parse_http_date(text);
    if let Some(ms) = parse_rfc3339(text) {
        assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms), "{text}");
    }
});
