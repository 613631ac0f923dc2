//! Standard Webhooks signatures: functions over bytes (ring HMAC-SHA256, and Ed25519
//! for endpoints whose secret is a `whsk_` key pair, whose expanded key pairs each thread
//! keeps in a bounded cache: the only state here, and it never changes a result).
//!
//! The signed content is `{msg_id}.{timestamp}.{body}` with `body` the exact bytes sent.
//! During a rotation's grace period every valid key signs, and the signatures are joined
//! by single spaces, current key first, so any Standard Webhooks verifier accepts either.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// How an endpoint secret that is an Ed25519 key pair is stored: this prefix, the 32-byte
/// seed, then the 32-byte public key (79 bytes). Longer than any HMAC secret
/// (`limits::SECRET_BYTES_MAX`, 75 bytes), so the two kinds cannot be taken for each other,
/// and an endpoint row keeps its shape (its secret stays one byte string, sealed alike).
const ED25519_STORED_PREFIX: &[u8; 15] = b"sluice-ed25519:";
const ED25519_STORED_LEN: usize = ED25519_STORED_PREFIX.len() + 64;
const _: () = assert!(ED25519_STORED_LEN > crate::limits::SECRET_BYTES_MAX);

/// An endpoint secret as it signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey<'a> {
    /// HMAC-SHA256 with these bytes (`whsec_`), signatures `v1,…`.
    Hmac(&'a [u8]),
    /// Ed25519 (`whsk_`), signatures `v1a,…`: the 32-byte seed and public key.
    Ed25519 { seed: &'a [u8], public: &'a [u8] },
}

/// What the stored secret `stored` is.
pub fn signing_key(stored: &[u8]) -> SigningKey<'_> {
    match stored.strip_prefix(ED25519_STORED_PREFIX.as_slice()) {
        Some(pair) if stored.len() == ED25519_STORED_LEN => SigningKey::Ed25519 {
            seed: &pair[..32],
            public: &pair[32..],
        },
        _ => SigningKey::Hmac(stored),
    }
}

/// The stored form of an Ed25519 key pair (`seed` ‖ `public`, 64 bytes, as `whsk_` holds
/// it), or why it is not one: the public key must be the seed's.
pub fn ed25519_stored(pair: &[u8]) -> Result<Vec<u8>, &'static str> {
    if pair.len() != 64 {
        return Err("must decode to 64 bytes: an Ed25519 seed and its public key");
    }
    let (seed, public) = pair.split_at(32);
    Ed25519KeyPair::from_seed_and_public_key(seed, public)
        .map_err(|_| "the public key (the last 32 bytes) is not the seed's")?;
    Ok(ed25519_stored_form(seed, public))
}

/// The stored form of a new Ed25519 key pair made from `seed` (32 random bytes).
pub fn ed25519_from_seed(seed: &[u8; 32]) -> Vec<u8> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed)
        .unwrap_or_else(|_| unreachable!("a 32-byte seed is always a key"));
    ed25519_stored_form(seed, pair.public_key().as_ref())
}

/// `ED25519_STORED_PREFIX` ‖ `seed` ‖ `public`, of a pair already known to match.
fn ed25519_stored_form(seed: &[u8], public: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(ED25519_STORED_LEN);
    stored.extend_from_slice(ED25519_STORED_PREFIX);
    stored.extend_from_slice(seed);
    stored.extend_from_slice(public);
    stored
}

/// Signs `body` for message `msg_id` at `timestamp_secs` with each stored key, as the
/// value of the `webhook-signature` header: `v1,<base64>` for an HMAC secret and
/// `v1a,<base64>` for an Ed25519 one, joined by spaces.
pub fn signature_header<'k>(
    keys: impl IntoIterator<Item = &'k [u8]>,
    msg_id: &str,
    timestamp_secs: u64,
    body: &[u8],
) -> String {
    let mut digits = [0u8; 20];
    let timestamp = decimal(timestamp_secs, &mut digits);
    // One allocation per signature: the header itself (one key's `v1,` and 44 base64
    // characters fit the initial capacity).
    let mut header = String::with_capacity(SIGNATURE_LEN);
    for key in keys {
        if !header.is_empty() {
            header.push(' ');
        }
        match signing_key(key) {
            SigningKey::Hmac(key) => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, key);
                let mut ctx = hmac::Context::with_key(&key);
                ctx.update(msg_id.as_bytes());
                ctx.update(b".");
                ctx.update(timestamp);
                ctx.update(b".");
                ctx.update(body);
                header.push_str("v1,");
                BASE64.encode_string(ctx.sign().as_ref(), &mut header);
            }
            SigningKey::Ed25519 { seed, .. } => {
                // Ed25519 signs the whole content at once (no streaming in ring).
                let mut content =
                    Vec::with_capacity(msg_id.len() + timestamp.len() + body.len() + 2);
                content.extend_from_slice(msg_id.as_bytes());
                content.push(b'.');
                content.extend_from_slice(timestamp);
                content.push(b'.');
                content.extend_from_slice(body);
                let signature = with_key_pair(seed, |pair| pair.sign(&content));
                header.push_str("v1a,");
                BASE64.encode_string(signature.as_ref(), &mut header);
            }
        }
    }
    header
}

/// Most Ed25519 key pairs each thread keeps expanded (`with_key_pair`).
const KEY_PAIRS_KEPT_MAX: usize = 256;

thread_local! {
    /// Expanded key pairs by seed: expanding one (a SHA-512 and a scalar multiplication)
    /// costs as much as the signature itself, and the same endpoints sign again and
    /// again. Per thread, so no lock; cleared when full.
    static KEY_PAIRS: std::cell::RefCell<std::collections::HashMap<[u8; 32], Ed25519KeyPair>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Runs `f` with the key pair of the 32-byte `seed`, expanded once per thread.
fn with_key_pair<T>(seed: &[u8], f: impl FnOnce(&Ed25519KeyPair) -> T) -> T {
    let seed: [u8; 32] = seed
        .try_into()
        .unwrap_or_else(|_| unreachable!("stored seeds are 32 bytes"));
    KEY_PAIRS.with_borrow_mut(|pairs| {
        if !pairs.contains_key(&seed) && pairs.len() >= KEY_PAIRS_KEPT_MAX {
            pairs.clear();
        }
        let pair = pairs.entry(seed).or_insert_with(|| {
            Ed25519KeyPair::from_seed_unchecked(&seed)
                .unwrap_or_else(|_| unreachable!("a 32-byte seed is always a key"))
        });
        f(pair)
    })
}

/// Length of one `v1,<base64 of a SHA-256 tag>` signature.
const SIGNATURE_LEN: usize = 3 + 44;

/// `n` in decimal ASCII, written into `buf` (20 digits hold any u64).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_matches_display() {
        for n in [0, 7, 10, 1_800_000_000, u64::MAX] {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn svix_test_vector() {
        // From Svix's worker tests and the Standard Webhooks documentation.
        let key = BASE64
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let header = signature_header(
            [key.as_slice()],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn an_ed25519_secret_signs_v1a_and_verifies_with_its_public_key() {
        use ring::signature::{ED25519, UnparsedPublicKey};
        let stored = ed25519_from_seed(&[7u8; 32]);
        let SigningKey::Ed25519 { public, .. } = signing_key(&stored) else {
            panic!("an Ed25519 key");
        };
        let hmac_key = b"new-key-new-key-new-key!".as_slice();
        // A rotation from HMAC to Ed25519: the new key first, then the old one.
        let header = signature_header([stored.as_slice(), hmac_key], "msg_1", 9, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert_eq!(parts[1], signature_header([hmac_key], "msg_1", 9, b"{}"));
        let signature = BASE64
            .decode(parts[0].strip_prefix("v1a,").expect("v1a,"))
            .expect("base64");
        let verifier = UnparsedPublicKey::new(&ED25519, public);
        assert!(verifier.verify(b"msg_1.9.{}", &signature).is_ok());
        assert!(verifier.verify(b"msg_1.9.{ }", &signature).is_err());
        // The same pair given as `whsk_` holds (seed ‖ public) is stored alike.
        let mut pair = [7u8; 32].to_vec();
        pair.extend_from_slice(public);
        assert_eq!(ed25519_stored(&pair), Ok(stored.clone()));
    }

    #[test]
    fn the_key_pair_cache_stays_bounded_and_signs_as_a_fresh_expansion() {
        for n in 0..(KEY_PAIRS_KEPT_MAX + 10) {
            let seed = [
                u8::try_from(n % 251).expect("byte"),
                1 + u8::try_from(n / 251).expect("byte"),
            ]
            .repeat(16);
            let seed: [u8; 32] = seed.try_into().expect("32 bytes");
            let fresh = Ed25519KeyPair::from_seed_unchecked(&seed).expect("pair");
            let cached = with_key_pair(&seed, |pair| pair.sign(b"m").as_ref().to_vec());
            assert_eq!(cached, fresh.sign(b"m").as_ref());
            assert!(KEY_PAIRS.with_borrow(|pairs| pairs.len()) <= KEY_PAIRS_KEPT_MAX);
        }
    }

    #[test]
    fn only_a_matching_key_pair_is_an_ed25519_secret() {
        let stored = ed25519_from_seed(&[1u8; 32]);
        let mut wrong = [2u8; 32].to_vec();
        wrong.extend_from_slice(&stored[stored.len() - 32..]);
        assert!(ed25519_stored(&wrong).is_err(), "another seed's public key");
        assert!(ed25519_stored(&[1u8; 63]).is_err());
        // Any HMAC secret (at most 75 bytes) is an HMAC secret, whatever its bytes.
        let mut lookalike = ED25519_STORED_PREFIX.to_vec();
        lookalike.extend_from_slice(&[0u8; 60]);
        assert_eq!(signing_key(&lookalike), SigningKey::Hmac(&lookalike));
    }

    #[test]
    fn every_key_signs_current_first() {
        let (new, old) = (
            b"new-key-new-key-new-key!".as_slice(),
            b"old-key-old-key-old-key!".as_slice(),
        );
        let both = signature_header([new, old], "msg_1", 1, b"{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(
            parts,
            [
                signature_header([new], "msg_1", 1, b"{}"),
                signature_header([old], "msg_1", 1, b"{}")
            ]
        );
        assert_ne!(
            signature_header([new], "msg_1", 2, b"{}"),
            parts[0],
            "the timestamp is signed"
        );
        assert_ne!(
            signature_header([new], "msg_1", 1, b"{ }"),
            parts[0],
            "the exact body is signed"
        );
    }
}
