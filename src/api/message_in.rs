//! Parsing a message-create body: the ingest hot path.
//!
//! simd-json validates the whole document and gives typed access to the small fields; the
//! payload is kept as the exact bytes the client sent (found by a scanner over the original
//! body), because those bytes are what gets stored, delivered and signed. simd-json parses
//! in place, so it works on a copy in a per-thread scratch buffer, never on the original.

use std::cell::RefCell;

use simd_json::prelude::*;

use super::FieldError;
use crate::ids::{self, IdKind};
use crate::limits::{MESSAGE_CHANNELS_MAX, NAME_LEN_MAX, RETENTION_DAYS_MAX, RETENTION_DAYS_MIN};

/// A validated message-create request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageIn {
    pub event_type: String,
    pub event_id: Option<String>,
    pub channels: Option<Vec<String>>,
    /// `payloadRetentionPeriod`, in days, when given.
    pub retention_days: Option<u16>,
    /// The payload object exactly as sent.
    pub payload: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<(Vec<u8>, simd_json::Buffers)> = RefCell::new((Vec::new(), simd_json::Buffers::new(4096)));
}

/// Parses and validates a message-create body; on failure, every field problem found.
pub fn parse(body: &[u8]) -> Result<MessageIn, Vec<FieldError>> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let (copy, buffers) = &mut *scratch;
        copy.clear();
        copy.extend_from_slice(body);
        let result = match simd_json::borrowed::to_value_with_buffers(copy, buffers) {
            Ok(value) => fields(&value, body),
            Err(e) => Err(vec![FieldError::json_decode(
                vec!["body".to_owned()],
                format!("Invalid JSON: {e}"),
            )]),
        };
        // Keep the scratch buffer from staying large after one huge request.
        if copy.capacity() > 1 << 20 {
            *copy = Vec::new();
        }
        result
    })
}

fn fields(value: &simd_json::BorrowedValue<'_>, body: &[u8]) -> Result<MessageIn, Vec<FieldError>> {
    let mut problems = Vec::new();
    let mut add = |field: &str, msg: &str| problems.push(FieldError::value(&["body", field], msg));
    let Some(object) = value.as_object() else {
        return Err(vec![FieldError::json_decode(
            vec!["body".to_owned()],
            "The body must be a JSON object.",
        )]);
    };
    let event_type = match object.get("eventType") {
        Some(v) => match v.as_str() {
            Some(name) => {
                if let Err(p) = ids::check_name(name, NAME_LEN_MAX) {
                    add("eventType", p.message());
                }
                name.to_owned()
            }
            None => {
                add("eventType", "must be a string");
                String::new()
            }
        },
        None => {
            add("eventType", "field required");
            String::new()
        }
    };
    let event_id = match object.get("eventId") {
        None => None,
        Some(v) if v.is_null() => None,
        Some(v) => match v.as_str() {
            Some(uid) => {
                if let Err(p) = ids::check_uid(Some(IdKind::Message), uid) {
                    add("eventId", p.message());
                }
                Some(uid.to_owned())
            }
            None => {
                add("eventId", "must be a string");
                None
            }
        },
    };
    let channels = match object.get("channels") {
        None => None,
        Some(v) if v.is_null() => None,
        Some(v) => match v.as_array() {
            Some(items) if (1..=MESSAGE_CHANNELS_MAX).contains(&items.len()) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_str() {
                        Some(name) if ids::check_name(name, NAME_LEN_MAX).is_ok() => {
                            out.push(name.to_owned())
                        }
                        _ => add(
                            "channels",
                            "each channel must be a name of a-z, A-Z, 0-9, '-', '_', '.'",
                        ),
                    }
                }
                Some(out)
            }
            _ => {
                add("channels", "must be a list of 1 to 5 channel names");
                None
            }
        },
    };
    let retention_days = match object.get("payloadRetentionPeriod") {
        None => None,
        Some(v) if v.is_null() => None,
        Some(v) => match v.as_u64() {
            Some(days)
                if (u64::from(RETENTION_DAYS_MIN)..=u64::from(RETENTION_DAYS_MAX))
                    .contains(&days) =>
            {
                u16::try_from(days).ok()
            }
            _ => {
                add(
                    "payloadRetentionPeriod",
                    "must be an integer from 1 to 90 (days)",
                );
                None
            }
        },
    };
    let payload_value = object.get("payload").or_else(|| object.get("data"));
    let payload = match payload_value {
        None => {
            add("payload", "field required");
            Vec::new()
        }
        Some(v) if !v.is_object() => {
            add("payload", "Payload must be an object.");
            Vec::new()
        }
        Some(_) => match payload_span(body) {
            Ok(Some((start, end))) => body[start..end].to_vec(),
            Ok(None) | Err(_) => {
                add("payload", "must appear exactly once (as payload or data)");
                Vec::new()
            }
        },
    };
    if problems.is_empty() {
        Ok(MessageIn {
            event_type,
            event_id,
            channels,
            retention_days,
            payload,
        })
    } else {
        Err(problems)
    }
}

/// The byte range of the top-level `payload` (or `data`) value in a JSON object that
/// simd-json has already validated. `Err` if the key appears twice (which copy a parser
/// keeps is not something to leave to chance) or the text is not an object.
pub fn payload_span(body: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    let mut pos = skip_ws(body, 0);
    if body.get(pos) != Some(&b'{') {
        return Err(());
    }
    pos += 1;
    let mut found = None;
    loop {
        pos = skip_ws(body, pos);
        match body.get(pos) {
            Some(b'}') => return Ok(found),
            Some(b'"') => {}
            _ => return Err(()),
        }
        let key_end = skip_string(body, pos)?;
        let is_payload = key_is_payload(&body[pos..key_end]);
        pos = skip_ws(body, key_end);
        if body.get(pos) != Some(&b':') {
            return Err(());
        }
        let value_start = skip_ws(body, pos + 1);
        let value_end = skip_value(body, value_start)?;
        if is_payload {
            if found.is_some() {
                return Err(());
            }
            found = Some((value_start, value_end));
        }
        pos = skip_ws(body, value_end);
        match body.get(pos) {
            Some(b',') => pos += 1,
            Some(b'}') => return Ok(found),
            _ => return Err(()),
        }
    }
}

fn key_is_payload(quoted: &[u8]) -> bool {
    let plain = |k: &[u8]| k == b"\"payload\"" || k == b"\"data\"";
    if !quoted.contains(&b'\\') {
        return plain(quoted);
    }
    // An escaped key ("pay\u006coad") is rare: decode it properly.
    serde_json::from_slice::<String>(quoted).is_ok_and(|k| k == "payload" || k == "data")
}

fn skip_ws(body: &[u8], mut pos: usize) -> usize {
    while matches!(body.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        pos += 1;
    }
    pos
}

/// `pos` is at an opening quote; returns the index after the closing quote.
fn skip_string(body: &[u8], mut pos: usize) -> Result<usize, ()> {
    pos += 1;
    loop {
        match body.get(pos) {
            Some(b'"') => return Ok(pos + 1),
            Some(b'\\') => pos += 2,
            Some(_) => pos += 1,
            None => return Err(()),
        }
    }
}

fn skip_value(body: &[u8], pos: usize) -> Result<usize, ()> {
    match body.get(pos) {
        Some(b'"') => skip_string(body, pos),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = pos;
            loop {
                match body.get(i) {
                    Some(b'"') => i = skip_string(body, i)?,
                    Some(b'{' | b'[') => {
                        depth += 1;
                        i += 1;
                    }
                    Some(b'}' | b']') => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            return Ok(i);
                        }
                    }
                    Some(_) => i += 1,
                    None => return Err(()),
                }
            }
        }
        Some(_) => {
            let mut i = pos;
            while !matches!(
                body.get(i),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                i += 1;
            }
            Ok(i)
        }
        None => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_payload_bytes_exactly() {
        let body = br#" { "eventType" : "user.created", "payload" : { "b": [1, "}"], "a" : "x\"y" } , "eventId":"e1" }"#;
        let parsed = parse(body).expect("valid");
        assert_eq!(parsed.payload, br#"{ "b": [1, "}"], "a" : "x\"y" }"#);
        assert_eq!(parsed.event_type, "user.created");
        assert_eq!(parsed.event_id.as_deref(), Some("e1"));
    }

    #[test]
    fn accepts_data_alias_and_escaped_keys() {
        let parsed = parse(br#"{"eventType":"a","data":{"k":1}}"#).expect("valid");
        assert_eq!(parsed.payload, br#"{"k":1}"#);
        let parsed = parse(br#"{"eventType":"a","pay\u006coad":{"k":2}}"#).expect("valid");
        assert_eq!(parsed.payload, br#"{"k":2}"#);
    }

    #[test]
    fn refuses_bad_bodies_with_field_locations() {
        let loc = |body: &[u8]| -> Vec<String> {
            parse(body)
                .expect_err("invalid")
                .into_iter()
                .map(|e| e.loc.join("."))
                .collect()
        };
        assert_eq!(loc(b"{not json"), ["body"]);
        assert_eq!(loc(b"[1,2]"), ["body"]);
        assert_eq!(loc(br#"{"eventType":"a","payload":[1]}"#), ["body.payload"]);
        assert_eq!(loc(br#"{"eventType":"a","payload":"s"}"#), ["body.payload"]);
        assert_eq!(loc(br#"{"payload":{}}"#), ["body.eventType"]);
        assert_eq!(loc(br#"{"eventType":1,"payload":{}}"#), ["body.eventType"]);
        assert_eq!(
            loc(br#"{"eventType":"a b","payload":{}}"#),
            ["body.eventType"]
        );
        assert_eq!(
            loc(br#"{"eventType":"a","payload":{},"eventId":"msg_x"}"#),
            ["body.eventId"]
        );
        assert_eq!(
            loc(br#"{"eventType":"a","payload":{},"channels":[]}"#),
            ["body.channels"]
        );
        assert_eq!(
            loc(br#"{"eventType":"a","payload":{},"payloadRetentionPeriod":0}"#),
            ["body.payloadRetentionPeriod"]
        );
        assert_eq!(
            loc(br#"{"eventType":"a","payload":{},"payload":{}}"#),
            ["body.payload"]
        );
    }

    #[test]
    fn span_scanner_handles_scalars_and_nesting() {
        let body = br#"{"x":-1.5e3,"y":[{"z":"]"}],"payload":{}}"#;
        assert_eq!(payload_span(body), Ok(Some((38, 40))));
        assert_eq!(payload_span(br#"{"x":true}"#), Ok(None));
        assert_eq!(payload_span(b"[]"), Err(()));
    }
}
