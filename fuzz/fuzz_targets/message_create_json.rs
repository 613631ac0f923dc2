//! Differential fuzzing of the message-create JSON path against serde_json.
//!
//! `sluice::api::message_in::parse` validates with simd-json and cuts the payload out of
//! the original bytes by walking simd-json's structural offsets (`payload_span`). What is
//! stored, signed and delivered is those bytes, so whenever `parse` accepts a body:
//!
//! * serde_json must accept the whole body too (except where serde_json alone gives up:
//!   its recursion limit, or a number out of f64 range);
//! * the payload bytes must be a JSON object on their own;
//! * that object must equal the top-level `payload` (or `data`) field as serde_json sees it,
//!   i.e. the scanner cut out the right value.
//!
//! And whenever serde_json sees a key twice in one object (top level or nested), `parse`
//! must refuse the body: parsers disagree on which copy counts, so Sluice takes neither.
//!
//! The converse (serde_json accepts, so `parse` must) is deliberately not asserted:
//! simd-json and serde_json legitimately differ at the edges (big integers, field
//! validation), and refusing a body is always safe.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sluice::api::message_in::{parse, payload_span};

fuzz_target!(|data: &[u8]| {
    // The span finder is public and runs on offsets simd-json found in the same bytes; it
    // must not panic on any offsets at all (here: the input's bytes in pairs, as offsets
    // into the input itself).
    let offsets: Vec<u32> = data
        .chunks(2)
        .map(|pair| u32::from(pair[0]) | u32::from(*pair.get(1).unwrap_or(&0)) << 8)
        .collect();
    if let Ok(Some((start, end))) = payload_span(data, &offsets) {
        assert!(start <= end && end <= data.len(), "span {start}..{end} outside the body");
    }

    if let Some(key) = duplicate_key(data) {
        assert!(
            parse(data).is_err(),
            "parse accepted a body with the key {key:?} twice in one object; body: {}",
            lossy(data)
        );
        return;
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

/// A key serde_json sees twice in one object of `data` (`None` for a body without one, or
/// one serde_json does not parse). Written against serde's visitor, independently of
/// Sluice's own checks.
fn duplicate_key(data: &[u8]) -> Option<String> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(data);
    let _ = Walk(&mut found).deserialize(&mut de);
    found
}

struct Walk<'a>(&'a mut Option<String>);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                *self.0 = Some(key);
                return Err(A::Error::custom("duplicate"));
            }
            map.next_value_seed(Walk(&mut *self.0))?;
        }
        Ok(())
    }
}
