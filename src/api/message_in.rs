//! Parsing a message-create body: the ingest hot path.
//!
//! simd-json validates the whole document and gives typed access to the small fields; the
//! payload is kept as the exact bytes the client sent, because those bytes are what gets
//! stored, delivered and signed. simd-json unescapes strings in place, so it works on a
//! padded copy in a per-thread scratch buffer, never on the original. Its first stage
//! records the offset of every structural character, which are the same in the copy and
//! the original: the payload's span is found by walking those offsets, not the bytes.

use std::cell::RefCell;

use simd_json::prelude::*;
use simd_json::{Node, Tape};

use super::FieldError;
use crate::ids::{self, IdKind};
use crate::limits::{
    MESSAGE_CHANNELS_MAX, MESSAGE_TAGS_MAX, NAME_LEN_MAX, RETENTION_DAYS_MAX, RETENTION_DAYS_MIN,
};

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
    /// Svix's `tags`, when given.
    pub tags: Option<Vec<String>>,
    /// `deliverAt` (RFC 3339), as ms, when given.
    pub deliver_at_ms: Option<u64>,
    /// The body names an `application` to create if the path's does not exist (read
    /// by `messages::create` only then: it is rare, and off the hot path).
    pub has_application: bool,
}

/// A thread's reusable buffers: the body's padded copy simd-json parses in place, its
/// internal buffers (with the structural offsets of the last parse), and the tape's node
/// vector (kept empty between calls).
struct Scratch {
    copy: Vec<u8>,
    buffers: simd_json::Buffers,
    nodes: Vec<Node<'static>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        copy: Vec::new(),
        buffers: simd_json::Buffers::new(SCRATCH_INITIAL_BYTES),
        nodes: Vec::new(),
    });
}

/// Parses and validates a message-create body; on failure, every field problem found.
pub fn parse(body: &[u8]) -> Result<MessageIn, Vec<FieldError>> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Scratch {
            copy,
            buffers,
            nodes,
        } = &mut *scratch;
        // The padding lets simd-json read past the end with whole vectors; with it,
        // `fill_tape_padded` parses this copy directly instead of copying it once more.
        copy.clear();
        copy.extend_from_slice(body);
        copy.resize(body.len() + simd_json::INPUT_PADDING, b' ');
        // The tape borrows the copy; its vector comes back empty (`reset`) afterwards.
        let mut tape = Tape(std::mem::take(nodes)).reset();
        let result = match simd_json::fill_tape_padded(copy, body.len(), buffers, &mut tape) {
            Ok(()) => fields(&tape, body, buffers.structural_indexes()),
            Err(e) => Err(vec![FieldError::json_decode(
                vec!["body".to_owned()],
                format!("Invalid JSON: {e}"),
            )]),
        };
        let mut kept = tape.reset().0;
        if kept.capacity() > NODES_KEPT_MAX {
            kept = Vec::new();
        }
        *nodes = kept;
        // Keep the scratch buffers from staying large after one huge request (up to
        // `api.body_bytes_max`, 64 MiB): simd-json's own grow with the body too, its
        // structural offsets to four bytes for every byte of a body of brackets.
        if copy.capacity() > SCRATCH_KEPT_BYTES_MAX {
            *copy = Vec::new();
            *buffers = simd_json::Buffers::new(SCRATCH_INITIAL_BYTES);
        }
        result
    })
}

/// The body size a thread's simd-json buffers are first made for.
const SCRATCH_INITIAL_BYTES: usize = 4096;

/// Largest body copy a thread keeps allocated between requests; past it, the copy and
/// simd-json's buffers are dropped and made again.
const SCRATCH_KEPT_BYTES_MAX: usize = 1 << 20;

/// Most tape nodes a thread keeps allocated between requests.
const NODES_KEPT_MAX: usize = 1 << 16;

type Object<'t, 'i> = simd_json::tape::Object<'t, 'i>;
type Value<'t, 'i> = simd_json::tape::Value<'t, 'i>;

/// The fields of a body simd-json accepted; `structurals` are its stage-1 offsets.
fn fields(tape: &Tape<'_>, body: &[u8], structurals: &[u32]) -> Result<MessageIn, Vec<FieldError>> {
    let Some(object) = tape.as_value().as_object() else {
        return Err(vec![FieldError::json_decode(
            vec!["body".to_owned()],
            "The body must be a JSON object.",
        )]);
    };
    if let Some((field, key)) = duplicate_key(&tape.0) {
        let msg = if field == key {
            format!("the key {key:?} appears more than once")
        } else {
            format!("the key {key:?} appears more than once in one object")
        };
        return Err(vec![FieldError::value(&["body", field], msg)]);
    }
    let mut problems = Vec::new();
    let event_type = note(&mut problems, "eventType", event_type(&object));
    let event_id = note(&mut problems, "eventId", event_id(&object));
    let channels = note(&mut problems, "channels", channels(&object));
    let retention_days = note(
        &mut problems,
        "payloadRetentionPeriod",
        retention_days(&object),
    );
    let tags = note(&mut problems, "tags", tags(&object));
    let deliver_at_ms = note(&mut problems, "deliverAt", deliver_at(&object));
    let has_application = optional(&object, "application").is_some();
    let payload = note(&mut problems, "payload", payload(body, structurals));
    match (
        event_type,
        event_id,
        channels,
        retention_days,
        payload,
        tags,
        deliver_at_ms,
    ) {
        (
            Some(event_type),
            Some(event_id),
            Some(channels),
            Some(retention_days),
            Some(payload),
            Some(tags),
            Some(deliver_at_ms),
        ) if problems.is_empty() => Ok(MessageIn {
            event_type,
            event_id,
            channels,
            retention_days,
            payload,
            tags,
            deliver_at_ms,
            has_application,
        }),
        _ => Err(problems),
    }
}

/// Objects with at most this many keys are checked for duplicates pairwise (no
/// allocation); larger ones are sorted.
const PAIRWISE_KEYS_MAX: usize = 16;

/// How many tape nodes `node` and what it holds take.
fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => 1 + count,
        Node::String(_) | Node::Static(_) => 1,
    }
}

/// The first key that appears twice in one object of the body (`nodes`, a tape whose
/// first node is an object), top level or nested, as (the top-level field it is in, the
/// key). simd-json's values keep the first copy of a repeated key in small objects and
/// the last in large ones, and other parsers differ again: a body whose meaning depends on
/// the parser is refused. One linear pass over the tape, no recursion.
fn duplicate_key<'i>(nodes: &[Node<'i>]) -> Option<(&'i str, &'i str)> {
    if let Some(key) = duplicate_in(nodes) {
        return Some((key, key));
    }
    let Some(Node::Object { len, .. }) = nodes.first() else {
        return None;
    };
    let mut idx = 1;
    for _ in 0..*len {
        let field = match nodes.get(idx) {
            Some(Node::String(field)) => *field,
            _ => return None,
        };
        let start = idx + 1;
        let end = start + span(nodes.get(start)?);
        for at in start..end.min(nodes.len()) {
            if let Node::Object { len: 2.., .. } = nodes[at]
                && let Some(key) = duplicate_in(&nodes[at..])
            {
                return Some((field, key));
            }
        }
        idx = end;
    }
    None
}

/// A key the object at `nodes[0]` holds more than once.
fn duplicate_in<'i>(nodes: &[Node<'i>]) -> Option<&'i str> {
    let Some(&Node::Object { len, .. }) = nodes.first() else {
        return None;
    };
    let mut keys = object_keys(nodes, len);
    if len <= PAIRWISE_KEYS_MAX {
        let mut seen: [&str; PAIRWISE_KEYS_MAX] = [""; PAIRWISE_KEYS_MAX];
        for (i, key) in keys.enumerate() {
            if seen[..i].contains(&key) {
                return Some(key);
            }
            seen[i] = key;
        }
        return None;
    }
    let mut sorted: Vec<&str> = Vec::with_capacity(len);
    sorted.extend(&mut keys);
    sorted.sort_unstable();
    sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// The keys of the object at `nodes[0]`, which has `len` of them.
fn object_keys<'n, 'i>(nodes: &'n [Node<'i>], len: usize) -> impl Iterator<Item = &'i str> + 'n {
    let mut idx = 1;
    (0..len).map_while(move |_| {
        let Some(Node::String(key)) = nodes.get(idx) else {
            return None;
        };
        idx += 1 + nodes.get(idx + 1).map_or(1, span);
        Some(*key)
    })
}

/// Keeps a field's value, or records its problem.
fn note<T>(
    problems: &mut Vec<FieldError>,
    field: &str,
    result: Result<T, &'static str>,
) -> Option<T> {
    result
        .map_err(|msg| problems.push(FieldError::value(&["body", field], msg)))
        .ok()
}

/// A field that may be absent or `null`.
fn optional<'t, 'i>(object: &Object<'t, 'i>, name: &str) -> Option<Value<'t, 'i>> {
    object.get(name).filter(|v| !v.is_null())
}

fn event_type(object: &Object<'_, '_>) -> Result<String, &'static str> {
    let name = object
        .get("eventType")
        .ok_or("field required")?
        .into_string()
        .ok_or("must be a string")?;
    ids::check_name(name, NAME_LEN_MAX).map_err(|p| p.message())?;
    Ok(name.to_owned())
}

fn event_id(object: &Object<'_, '_>) -> Result<Option<String>, &'static str> {
    let Some(value) = optional(object, "eventId") else {
        return Ok(None);
    };
    let uid = value.as_str().ok_or("must be a string")?;
    ids::check_uid(Some(IdKind::Message), uid).map_err(|p| p.message())?;
    Ok(Some(uid.to_owned()))
}

fn channels(object: &Object<'_, '_>) -> Result<Option<Vec<String>>, &'static str> {
    names(
        object,
        "channels",
        1..=MESSAGE_CHANNELS_MAX,
        "must be a list of 1 to 5 channel names",
        "each channel must be a name of a-z, A-Z, 0-9, '-', '_', '.'",
    )
}

fn tags(object: &Object<'_, '_>) -> Result<Option<Vec<String>>, &'static str> {
    names(
        object,
        "tags",
        0..=MESSAGE_TAGS_MAX,
        "must be a list of at most 5 tags",
        "each tag must be a name of a-z, A-Z, 0-9, '-', '_', '.'",
    )
}

/// An optional list of names (`channels`, `tags`): its length within `count`, each a name.
fn names(
    object: &Object<'_, '_>,
    key: &str,
    count: std::ops::RangeInclusive<usize>,
    bad_list: &'static str,
    bad_name: &'static str,
) -> Result<Option<Vec<String>>, &'static str> {
    let Some(value) = optional(object, key) else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .filter(|items| count.contains(&items.len()))
        .ok_or(bad_list)?;
    let names: Option<Vec<String>> = items
        .iter()
        .map(|item| {
            item.into_string()
                .filter(|n| ids::check_name(n, NAME_LEN_MAX).is_ok())
                .map(str::to_owned)
        })
        .collect();
    names.map(Some).ok_or(bad_name)
}

fn deliver_at(object: &Object<'_, '_>) -> Result<Option<u64>, &'static str> {
    let Some(value) = optional(object, "deliverAt") else {
        return Ok(None);
    };
    let text = value
        .as_str()
        .ok_or("must be an RFC 3339 date-time string")?;
    crate::clock::parse_rfc3339(text)
        .map(Some)
        .ok_or("must be an RFC 3339 date-time such as 2030-01-01T00:00:00Z")
}

fn retention_days(object: &Object<'_, '_>) -> Result<Option<u16>, &'static str> {
    let Some(value) = optional(object, "payloadRetentionPeriod") else {
        return Ok(None);
    };
    let range = u64::from(RETENTION_DAYS_MIN)..=u64::from(RETENTION_DAYS_MAX);
    let days = value
        .as_u64()
        .filter(|d| range.contains(d))
        .and_then(|d| u16::try_from(d).ok());
    days.map(Some)
        .ok_or("must be an integer from 1 to 90 (days)")
}

/// The payload's exact bytes: the top-level `payload` (or `data`) value, which must be an
/// object and appear once. One walk of the structural offsets finds it, checks it and
/// cuts it out; the tape is not searched for it as well.
fn payload(body: &[u8], structurals: &[u32]) -> Result<Vec<u8>, &'static str> {
    match payload_span(body, structurals) {
        Ok(Some((start, end))) if body.get(start) == Some(&b'{') => Ok(body[start..end].to_vec()),
        Ok(Some(_)) => Err("Payload must be an object."),
        Ok(None) => Err("field required"),
        Err(SpanError::Duplicate) => Err("must appear exactly once (as payload or data)"),
        // simd-json accepted the body as an object, so its offsets always describe one.
        Err(SpanError::Malformed) => Err("could not be read from the body"),
    }
}

/// Why `payload_span` found no single payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanError {
    /// Not a JSON object, or offsets that do not describe `body`.
    Malformed,
    /// `payload`/`data` appears more than once.
    Duplicate,
}

/// The byte range of the top-level `payload` (or `data`) value in a JSON object that
/// simd-json has validated, from `structurals`: the offsets its first stage found of every
/// `{ } [ ] : ,` and of the first byte of every string, number and literal (strings'
/// contents hold none). One step per token of the top level and of the values skipped,
/// none per byte. `Err` if the key appears twice (which copy a parser keeps is not
/// something to leave to chance) or the offsets do not fit the body; never a range
/// outside it, whatever the offsets.
pub fn payload_span(body: &[u8], structurals: &[u32]) -> Result<Option<(usize, usize)>, SpanError> {
    // The `i`th structural: its offset and byte.
    let at = |i: usize| -> Result<(usize, u8), SpanError> {
        let pos = usize::try_from(*structurals.get(i).ok_or(SpanError::Malformed)?)
            .map_err(|_| SpanError::Malformed)?;
        Ok((pos, *body.get(pos).ok_or(SpanError::Malformed)?))
    };
    if at(0)?.1 != b'{' {
        return Err(SpanError::Malformed);
    }
    if at(1)?.1 == b'}' {
        return Ok(None);
    }
    let mut found = None;
    let mut i = 1;
    loop {
        // `"key"`, `:`, the value's first byte.
        let (key_start, quote) = at(i)?;
        let (colon, separator) = at(i + 1)?;
        let (value_start, first) = at(i + 2)?;
        if quote != b'"' || separator != b':' || colon < key_start {
            return Err(SpanError::Malformed);
        }
        let is_payload = key_is_payload(&body[key_start..trimmed_end(body, key_start, colon)]);
        // `next` is the structural after the value: `,` or `}`.
        let (value_end, next) = match first {
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i + 2;
                loop {
                    match at(j)? {
                        (_, b'{' | b'[') => depth += 1,
                        (pos, b'}' | b']') => {
                            depth = depth.checked_sub(1).ok_or(SpanError::Malformed)?;
                            if depth == 0 {
                                if pos < value_start {
                                    return Err(SpanError::Malformed);
                                }
                                break (pos + 1, j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            _ => {
                let (after, _) = at(i + 3)?;
                if after < value_start {
                    return Err(SpanError::Malformed);
                }
                (trimmed_end(body, value_start, after), i + 3)
            }
        };
        if is_payload {
            if found.is_some() {
                return Err(SpanError::Duplicate);
            }
            found = Some((value_start, value_end));
        }
        match at(next)? {
            (_, b',') => i = next + 1,
            (_, b'}') => return Ok(found),
            _ => return Err(SpanError::Malformed),
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

/// `end`, moved back over the whitespace before it, but not before `start`.
fn trimmed_end(body: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(body.get(end - 1), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        end -= 1;
    }
    end
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
    fn refuses_duplicate_keys_at_any_depth() {
        let loc = |body: &[u8]| -> Vec<String> {
            parse(body)
                .expect_err("a duplicate key")
                .into_iter()
                .map(|e| e.loc.join("."))
                .collect()
        };
        assert_eq!(
            loc(br#"{"eventType":"a","eventType":"b","payload":{}}"#),
            ["body.eventType"]
        );
        assert_eq!(
            loc(br#"{"eventType":"a","eventId":"x","payload":{},"eventId":"y"}"#),
            ["body.eventId"]
        );
        assert_eq!(
            loc(br#"{"eventType":"a","payload":{"k":1,"k":2}}"#),
            ["body.payload"]
        );
        assert_eq!(
            loc(br#"{"eventType":"a","payload":{"l":[{"x":{"k":1,"k":2}}]}}"#),
            ["body.payload"]
        );
        // An escaped spelling is the same key.
        assert_eq!(
            loc(br#"{"eventType":"a","payload":{"k":1,"\u006b":2}}"#),
            ["body.payload"]
        );
        // Past the pairwise size: sorted.
        let mut big = String::from(r#"{"eventType":"a","payload":{"#);
        for i in 0..40 {
            big.push_str(&format!(r#""k{i}":{i},"#));
        }
        big.push_str(r#""k7":0}}"#);
        assert_eq!(loc(big.as_bytes()), ["body.payload"]);
        // The same key in two different objects is fine.
        assert!(parse(br#"{"eventType":"a","payload":{"k":{"k":1},"j":{"k":2}}}"#).is_ok());
        let mut wide = String::from(r#"{"eventType":"a","payload":{"#);
        for i in 0..40 {
            wide.push_str(&format!(r#""k{i}":{{"k":{i}}},"#));
        }
        wide.push_str(r#""z":0}}"#);
        assert!(parse(wide.as_bytes()).is_ok());
    }

    /// `payload_span` of `body`, with the offsets simd-json's first stage finds in it.
    fn span_of(body: &[u8]) -> Result<Option<(usize, usize)>, SpanError> {
        let mut copy = body.to_vec();
        copy.resize(body.len() + simd_json::INPUT_PADDING, b' ');
        let mut buffers = simd_json::Buffers::new(body.len());
        let mut tape = Tape::null();
        simd_json::fill_tape_padded(&mut copy, body.len(), &mut buffers, &mut tape)
            .expect("valid JSON");
        payload_span(body, buffers.structural_indexes())
    }

    #[test]
    fn the_span_is_found_from_the_structural_offsets() {
        let body = br#"{"x":-1.5e3,"y":[{"z":"]"}],"payload":{}}"#;
        assert_eq!(span_of(body), Ok(Some((38, 40))));
        assert_eq!(span_of(br#"{"x":true}"#), Ok(None));
        assert_eq!(span_of(br#"{}"#), Ok(None));
        assert_eq!(span_of(b"[]"), Err(SpanError::Malformed));
        // Whitespace around keys and values, a scalar last, brackets inside strings.
        let body = b" {\n \"payload\" :\t{ \"a\": [\"{\", {\"b\": \"}]\"}] } ,\r\"n\" : 12 } ";
        let (start, end) = span_of(body).expect("an object").expect("a payload");
        assert_eq!(&body[start..end], br#"{ "a": ["{", {"b": "}]"}] }"#);
        // The alias, and both at once.
        let body = br#"{"eventType":"a","data":[1,[2]],"k":null}"#;
        let (start, end) = span_of(body).expect("an object").expect("data");
        assert_eq!(&body[start..end], b"[1,[2]]");
        assert_eq!(
            span_of(br#"{"payload":{},"data":{}}"#),
            Err(SpanError::Duplicate)
        );
    }

    #[test]
    fn a_huge_body_leaves_no_large_scratch_buffers_behind() {
        let items = vec!["[]"; SCRATCH_KEPT_BYTES_MAX / 2].join(",");
        let body = format!(r#"{{"eventType":"a","payload":{{"l":[{items}]}}}}"#);
        assert!(body.len() > SCRATCH_KEPT_BYTES_MAX);
        assert_eq!(
            parse(body.as_bytes()).expect("valid").payload.len(),
            body.len() - 28
        );
        SCRATCH.with(|scratch| {
            let scratch = scratch.borrow();
            assert_eq!(scratch.copy.capacity(), 0);
            assert!(scratch.buffers.structural_indexes().is_empty());
        });
        // A small body after it parses as before.
        assert!(parse(br#"{"eventType":"a","payload":{}}"#).is_ok());
    }

    #[test]
    fn offsets_that_do_not_fit_the_body_are_malformed_never_a_panic() {
        let body = br#"{"payload":{"a":1}}"#;
        for structurals in [
            &[][..],
            &[0][..],
            &[0, 1, 10, 11][..],
            &[0, 1, 10, 11, 3][..],
            &[0, 1, 10, 11, 99][..],
            &[0, 10, 1, 11, 18][..],
            &[0, 1, 10, 11, 17, 0][..],
            &[0, 1, 10, 11, 11, 11, 11][..],
        ] {
            let span = payload_span(body, structurals);
            assert!(
                matches!(span, Err(SpanError::Malformed)),
                "{structurals:?}: {span:?}"
            );
        }
    }
}
