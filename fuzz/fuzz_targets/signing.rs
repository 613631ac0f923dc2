//! Standard Webhooks signing on arbitrary keys, ids, timestamps and bodies: the header is
//! one signature per key, space-separated, `v1,<base64>` for an HMAC key and
//! `v1a,<base64>` for an Ed25519 one, and each verifies (ring) against its own key over
//! `id.timestamp.body` — whatever bytes the body holds.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use ring::hmac;
use ring::signature::{ED25519, UnparsedPublicKey};
use sluice::signing::{SigningKey, ed25519_from_seed, signature_header, signing_key};

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    // Layout: key count (1–3) and which keys are Ed25519 (bits 5–7), key length, timestamp
    // (8 bytes), then keys (an Ed25519 key's bytes, padded, are its seed), id, body.
    let keys_count = usize::from(data[0] % 3) + 1;
    let ed25519_keys = data[0] >> 5;
    let key_len = usize::from(data[1] % 64) + 1;
    let timestamp = u64::from_le_bytes(data[2..10].try_into().expect("8 bytes"));
    let rest = &data[10..];
    if rest.len() < keys_count * key_len {
        return;
    }
    let (key_bytes, rest) = rest.split_at(keys_count * key_len);
    let keys: Vec<Vec<u8>> = key_bytes
        .chunks(key_len)
        .enumerate()
        .map(|(i, key)| {
            if ed25519_keys & (1 << i) == 0 {
                return key.to_vec();
            }
            let mut seed = [0u8; 32];
            for (slot, byte) in seed.iter_mut().zip(key.iter().cycle()) {
                *slot = *byte;
            }
            ed25519_from_seed(&seed)
        })
        .collect();
    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let Ok(id) = std::str::from_utf8(&rest[..split]) else {
        return;
    };
    let body = rest.get(split + 1..).unwrap_or_default();
    let header = signature_header(keys.iter().map(Vec::as_slice), id, timestamp, body);
    let signatures: Vec<&str> = header.split(' ').collect();
    assert_eq!(
        signatures.len(),
        keys.len(),
        "one signature per key: {header}"
    );
    let signed = [
        id.as_bytes(),
        b".",
        timestamp.to_string().as_bytes(),
        b".",
        body,
    ]
    .concat();
    for (signature, key) in signatures.iter().zip(&keys) {
        match signing_key(key) {
            SigningKey::Hmac(key) => {
                let encoded = signature.strip_prefix("v1,").expect("v1 prefix");
                let tag = BASE64.decode(encoded).expect("base64");
                let key = hmac::Key::new(hmac::HMAC_SHA256, key);
                assert!(
                    hmac::verify(&key, &signed, &tag).is_ok(),
                    "signature verifies"
                );
            }
            SigningKey::Ed25519 { public, .. } => {
                let encoded = signature.strip_prefix("v1a,").expect("v1a prefix");
                let sig = BASE64.decode(encoded).expect("base64");
                let verifier = UnparsedPublicKey::new(&ED25519, public);
                assert!(verifier.verify(&signed, &sig).is_ok(), "signature verifies");
            }
        }
    }
});
