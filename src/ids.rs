//! Resource ids and user-chosen uids.
//!
//! Ids follow Svix: a type prefix (`app_`, `ep_`, `msg_`, …) and a 27-character base62
//! KSUID whose first bytes are the creation time, so ids sort by time (to 4 ms). A uid is
//! the caller's own name for a resource; any path segment may be either.

use ring::rand::{SecureRandom, SystemRandom};

use crate::limits::UID_LEN_MAX;

/// The kinds of resources that carry a prefixed id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    App,
    Endpoint,
    Message,
    Attempt,
    Task,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::App => "app_",
            IdKind::Endpoint => "ep_",
            IdKind::Message => "msg_",
            IdKind::Attempt => "atmpt_",
            IdKind::Task => "qtask_",
        }
    }
}

/// KSUID epoch (2014-05-13T16:53:20Z), in seconds since the Unix epoch.
const KSUID_EPOCH_SECS: u64 = 1_400_000_000;
const KSUID_BYTES: usize = 20;
const KSUID_TEXT_LEN: usize = 27;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Builds an id from its time and 15 random bytes. Pure: the caller supplies both.
pub fn encode_id(kind: IdKind, now_ms: u64, random: &[u8; 15]) -> String {
    let secs = now_ms / 1000;
    let ksuid_secs = u32::try_from(secs.saturating_sub(KSUID_EPOCH_SECS)).unwrap_or(u32::MAX);
    let mut raw = [0u8; KSUID_BYTES];
    raw[..4].copy_from_slice(&ksuid_secs.to_be_bytes());
    // One payload byte carries the sub-second part in 4 ms steps (KsuidMs).
    raw[4] = u8::try_from((now_ms % 1000) / 4).unwrap_or(u8::MAX);
    raw[5..].copy_from_slice(random);
    let mut text = String::with_capacity(kind.prefix().len() + KSUID_TEXT_LEN);
    text.push_str(kind.prefix());
    text.push_str(&base62_encode(raw));
    text
}

/// Makes a new id for `kind` at `now_ms`, with fresh randomness from the OS.
pub fn new_id(kind: IdKind, now_ms: u64) -> String {
    let mut random = [0u8; 15];
    fill_random(&mut random);
    encode_id(kind, now_ms, &random)
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    // The OS generator failing is a broken machine, not an input: there is no way to
    // continue safely without randomness for secrets and tokens.
    SystemRandom::new()
        .fill(buf)
        .expect("the OS random generator failed");
}

fn base62_encode(mut num: [u8; KSUID_BYTES]) -> String {
    let mut out = [b'0'; KSUID_TEXT_LEN];
    let mut pos = KSUID_TEXT_LEN;
    while num.iter().any(|&b| b != 0) && pos > 0 {
        // Long division of the big-endian number by 62.
        let mut rem: u32 = 0;
        for byte in &mut num {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = u8::try_from(acc / 62).unwrap_or(0);
            rem = acc % 62;
        }
        pos -= 1;
        out[pos] = BASE62[rem as usize];
    }
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// Whether `text` looks like an id of `kind` (prefix and base62 body).
pub fn is_id(kind: IdKind, text: &str) -> bool {
    text.strip_prefix(kind.prefix()).is_some_and(|body| {
        body.len() == KSUID_TEXT_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Why a uid (or eventId, or name) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UidProblem {
    Empty,
    TooLong,
    BadCharacter,
    IdPrefix,
}

impl UidProblem {
    pub fn message(self) -> &'static str {
        match self {
            UidProblem::Empty => "must not be empty",
            UidProblem::TooLong => "must be at most 256 characters",
            UidProblem::BadCharacter => "may only contain a-z, A-Z, 0-9, '-', '_' and '.'",
            UidProblem::IdPrefix => "uids are not allowed to have the same prefix as the id",
        }
    }
}

/// Checks the uid syntax `^[a-zA-Z0-9\-_.]{1,256}$`, and that it does not start with the
/// id prefix of the resource it names (which would make id-or-uid lookups ambiguous).
pub fn check_uid(kind: Option<IdKind>, uid: &str) -> Result<(), UidProblem> {
    check_name(uid, UID_LEN_MAX)?;
    match kind {
        Some(kind) if uid.starts_with(kind.prefix()) => Err(UidProblem::IdPrefix),
        _ => Ok(()),
    }
}

/// Checks the name syntax shared by uids, event types and channels.
pub fn check_name(name: &str, len_max: usize) -> Result<(), UidProblem> {
    if name.is_empty() {
        return Err(UidProblem::Empty);
    }
    if name.len() > len_max {
        return Err(UidProblem::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(UidProblem::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_length_and_sort_by_time() {
        let a = encode_id(IdKind::Message, 1_700_000_000_000, &[0xff; 15]);
        let b = encode_id(IdKind::Message, 1_700_000_000_004, &[0x00; 15]);
        let c = encode_id(IdKind::Message, 1_700_000_001_000, &[0x00; 15]);
        assert!(is_id(IdKind::Message, &a), "{a}");
        assert_eq!(a.len(), 4 + 27);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(!is_id(IdKind::App, &a));
    }

    #[test]
    fn base62_matches_ksuid_extremes() {
        // The KSUID reference: the all-zero id is 27 zeros, the all-ones id is the maximum.
        assert_eq!(base62_encode([0; 20]), "000000000000000000000000000");
        assert_eq!(base62_encode([0xff; 20]), "aWgEPTl1tmebfsQzFP4bxwgy80V");
    }

    #[test]
    fn uid_rules() {
        let cases: [(&str, Result<(), UidProblem>); 6] = [
            ("my-app_1.v2", Ok(())),
            ("", Err(UidProblem::Empty)),
            ("has space", Err(UidProblem::BadCharacter)),
            ("ünïcode", Err(UidProblem::BadCharacter)),
            ("app_123", Err(UidProblem::IdPrefix)),
            ("ep_123", Ok(())),
        ];
        for (uid, want) in cases {
            assert_eq!(check_uid(Some(IdKind::App), uid), want, "{uid}");
        }
        assert_eq!(check_uid(None, &"a".repeat(257)), Err(UidProblem::TooLong));
    }
}
