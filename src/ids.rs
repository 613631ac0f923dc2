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
    Source,
    SourceError,
    PollerToken,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::App => "app_",
            IdKind::Endpoint => "ep_",
            IdKind::Message => "msg_",
            IdKind::Attempt => "atmpt_",
            IdKind::Task => "qtask_",
            IdKind::Source => "src_",
            IdKind::SourceError => "srcerr_",
            IdKind::PollerToken => "key_",
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
    for digit in base62_encode(raw) {
        text.push(char::from(digit));
    }
    text
}

/// Makes a new id for `kind` at `now_ms`, with fresh randomness from the OS.
pub fn new_id(kind: IdKind, now_ms: u64) -> String {
    let mut random = [0u8; 15];
    ID_RANDOMNESS.with_borrow_mut(|pool| pool.take(&mut random));
    encode_id(kind, now_ms, &random)
}

/// Bytes of OS randomness one thread draws at a time for ids.
const ID_RANDOMNESS_POOL_BYTES: usize = 4_080;

/// A thread's stock of OS randomness for ids: one `getrandom` per 272 ids instead of one
/// per id (which was a visible share of the ingest path). Secrets and tokens do not use
/// it; they call `fill_random` directly.
struct RandomPool {
    bytes: [u8; ID_RANDOMNESS_POOL_BYTES],
    used: usize,
}

impl RandomPool {
    fn take(&mut self, out: &mut [u8]) {
        if self.used + out.len() > self.bytes.len() {
            fill_random(&mut self.bytes);
            self.used = 0;
        }
        out.copy_from_slice(&self.bytes[self.used..self.used + out.len()]);
        // Never hand out the same bytes twice.
        self.bytes[self.used..self.used + out.len()].fill(0);
        self.used += out.len();
    }
}

thread_local! {
    static ID_RANDOMNESS: std::cell::RefCell<RandomPool> = const {
        std::cell::RefCell::new(RandomPool {
            bytes: [0; ID_RANDOMNESS_POOL_BYTES],
            used: ID_RANDOMNESS_POOL_BYTES,
        })
    };
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    // The OS generator failing is a broken machine, not an input: there is no way to
    // continue safely without randomness for secrets and tokens.
    SystemRandom::new()
        .fill(buf)
        .expect("the OS random generator failed");
}

/// The 160-bit big-endian number in 27 base62 digits. Long division by 62^5 over 32-bit
/// limbs, five digits per pass: six passes of five divisions, where dividing bytewise by
/// 62 took 27 passes of twenty (and was the largest symbol of the ingest profile).
fn base62_encode(num: [u8; KSUID_BYTES]) -> [u8; KSUID_TEXT_LEN] {
    const DIGITS_PER_PASS: usize = 5;
    const DIVISOR: u64 = 62u64.pow(DIGITS_PER_PASS as u32); // < 2^30
    let mut limbs = [0u32; KSUID_BYTES / 4];
    for (limb, bytes) in limbs.iter_mut().zip(num.chunks_exact(4)) {
        *limb = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let mut out = [b'0'; KSUID_TEXT_LEN];
    let mut pos = KSUID_TEXT_LEN;
    while pos > 0 {
        let mut rem: u64 = 0;
        for limb in &mut limbs {
            let acc = (rem << 32) | u64::from(*limb);
            *limb = u32::try_from(acc / DIVISOR).unwrap_or(u32::MAX);
            rem = acc % DIVISOR;
        }
        for _ in 0..DIGITS_PER_PASS.min(pos) {
            pos -= 1;
            out[pos] = BASE62[usize::try_from(rem % 62).unwrap_or(0)];
            rem /= 62;
        }
    }
    out
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
    /// `.` or `..`: a client or proxy normalises such a path segment away.
    DotSegment,
}

impl UidProblem {
    pub fn message(self) -> &'static str {
        match self {
            UidProblem::Empty => "must not be empty",
            UidProblem::TooLong => "must be at most 256 characters",
            UidProblem::BadCharacter => "may only contain a-z, A-Z, 0-9, '-', '_' and '.'",
            UidProblem::IdPrefix => "uids are not allowed to have the same prefix as the id",
            UidProblem::DotSegment => "must not be '.' or '..'",
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
    if name == "." || name == ".." {
        return Err(UidProblem::DotSegment);
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
        let text = |raw| String::from_utf8(base62_encode(raw).to_vec()).expect("ascii");
        assert_eq!(text([0; 20]), "000000000000000000000000000");
        assert_eq!(text([0xff; 20]), "aWgEPTl1tmebfsQzFP4bxwgy80V");
        let counting: [u8; 20] = std::array::from_fn(|i| i as u8 + 1);
        assert_eq!(text(counting), "08umpsRGMi9hXbwR6pXWz2Ckob6");
    }

    #[test]
    fn pooled_id_randomness_never_repeats_across_refills() {
        let ids: std::collections::HashSet<String> = (0..1_000)
            .map(|_| new_id(IdKind::Message, 1_700_000_000_000))
            .collect();
        assert_eq!(ids.len(), 1_000, "every id in one millisecond is distinct");
    }

    #[test]
    fn uid_rules() {
        let cases: [(&str, Result<(), UidProblem>); 9] = [
            (".", Err(UidProblem::DotSegment)),
            ("..", Err(UidProblem::DotSegment)),
            ("...", Ok(())),
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
