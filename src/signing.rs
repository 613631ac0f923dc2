//! Standard Webhooks signatures: pure functions over bytes (ring HMAC-SHA256).
//!
//! The signed content is `{msg_id}.{timestamp}.{body}` with `body` the exact bytes sent.
//! During a rotation's grace period every valid key signs, and the signatures are joined
//! by single spaces, current key first, so any Standard Webhooks verifier accepts either.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

/// Signs `body` for message `msg_id` at `timestamp_secs` with each key, as the value of
/// the `webhook-signature` header: `v1,<base64> v1,<base64> …`.
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
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(msg_id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp);
        ctx.update(b".");
        ctx.update(body);
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        BASE64.encode_string(ctx.sign().as_ref(), &mut header);
    }
    header
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
