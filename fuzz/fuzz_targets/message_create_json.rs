//! Differential fuzzing of the message-create JSON path against serde_json.
//!
//! `sluice::api::message_in::parse` validates with simd-json and cuts the payload out of
//! the original bytes with a hand-written scanner (`payload_span`). What is stored, signed
//! and delivered is those bytes, so whenever `parse` accepts a body:
//!
//! * serde_json must accept the whole body too (except where serde_json alone gives up:
//!   its recursion limit, or a number out of f64 range);
//! * the payload bytes must be a JSON object on their own;
//! * that object must equal the top-level `payload` (or `data`) field as serde_json sees it,
//!   i.e. the scanner cut out the right value.
//!
//! The converse (serde_json accepts, so `parse` must) is deliberately not asserted:
//! simd-json and serde_json legitimately differ at the edges (big integers, duplicate keys,
//! field validation), and refusing a body is always safe.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice::api::message_in::{parse, payload_span};

fuzz_target!(|data: &[u8]| {
    // The scanner is public and runs on bodies simd-json validated; it must not panic on
    // anything at all.
    if let Ok(Some((start, end))) = payload_span(data) {
        assert!(start <= end && end <= data.len(), "span {start}..{end} outside the body");
    }

    let Ok(message) = parse(data) else {
        return;
    };
    let body = lossy(data);

    let reference: Value = match serde_json::from_slice(data) {
        Ok(value) => value,
        Err(e) => {
            let why = e.to_string();
            if why.contains("recursion limit") || why.contains("number out of range") {
                return;
            }
            panic!("parse accepted a body serde_json rejects ({why}); body: {body}");
        }
    };
    let Some(object) = reference.as_object() else {
        panic!("parse accepted a body that is not an object; body: {body}");
    };
    let Some(expected) = object.get("payload").or_else(|| object.get("data")) else {
        panic!("parse accepted a body with no payload or data field; body: {body}");
    };

    let payload: Value = match serde_json::from_slice(&message.payload) {
        Ok(value) => value,
        Err(e) => panic!(
            "payload bytes are not JSON ({e}); payload: {}; body: {body}",
            lossy(&message.payload)
        ),
    };
    assert!(
        payload.is_object(),
        "payload bytes are not an object; payload: {}; body: {body}",
        lossy(&message.payload)
    );
    assert_eq!(
        &payload,
        expected,
        "payload bytes differ from the body's payload field; payload: {}; body: {body}",
        lossy(&message.payload)
    );
});

fn lossy(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}
