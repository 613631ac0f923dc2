//! Secrets at rest: endpoint signing keys, static tokens and custom header values are
//! sealed (AES-256-GCM, ring) before they are written to LMDB, with a key that lives
//! outside the log (`storage.secrets_key_file`, the systemd credential `secrets-key`, or
//! by default `<data_dir>/secrets.key`, made on the first start with mode 0600). A copy
//! of `data.mdb` or a backup alone does not reveal them.
//!
//! The log remembers a check value of the key (`meta/secrets_key_check`), so opening it
//! with no key or the wrong key fails at start with a clear error instead of serving
//! garbage. A log first opened with a key seals every endpoint already in it.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;

use super::LogError;
use super::schema::{EndpointRecord, Signing};

/// Version byte of a sealed value: nonce and ciphertext with its tag follow.
const SEALED_VERSION: u8 = 1;
/// Additional data bound to every sealed value, so a value sealed for another purpose
/// with the same key does not open here.
const AAD: &[u8] = b"sluice endpoint secret v1";
/// Prefix of a sealed text value (header values, static tokens).
const SEALED_TEXT_PREFIX: &str = "sealed:v1:";

/// The secrets key, ready to seal and open.
pub struct Sealer {
    key: LessSafeKey,
    check: [u8; 16],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Reads a 32-byte key from `path`: raw, 64 hex digits, or base64.
    pub fn from_key_file(path: &Path) -> Result<Sealer, LogError> {
        let bytes = std::fs::read(path)
            .map_err(|e| LogError::Secrets(format!("cannot read {}: {e}", path.display())))?;
        let key = decode_key(&bytes).ok_or_else(|| {
            LogError::Secrets(format!(
                "{} must hold a 32-byte key: raw, 64 hex digits or base64",
                path.display()
            ))
        })?;
        Ok(Sealer::new(&key))
    }

    pub fn new(key: &[u8; 32]) -> Sealer {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is valid for AES-256-GCM"));
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, key),
            b"sluice secrets key check",
        );
        let mut check = [0u8; 16];
        check.copy_from_slice(&tag.as_ref()[..16]);
        Sealer {
            key: LessSafeKey::new(unbound),
            check,
        }
    }

    /// A value that identifies the key without revealing it (stored in `meta`).
    pub fn check_value(&self) -> [u8; 16] {
        self.check
    }

    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::ids::fill_random(&mut nonce);
        let mut buffer = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buffer,
            )
            .unwrap_or_else(|_| unreachable!("sealing fails only for inputs of gigabytes"));
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buffer.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buffer);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, LogError> {
        let corrupt = || LogError::corrupt("endpoints", "a sealed secret does not open");
        let (&version, rest) = sealed.split_first().ok_or_else(corrupt)?;
        if version != SEALED_VERSION || rest.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut buffer)
            .map_err(|_| corrupt())?;
        Ok(plain.to_vec())
    }

    pub fn seal_text(&self, plain: &str) -> String {
        format!(
            "{SEALED_TEXT_PREFIX}{}",
            BASE64.encode(self.seal(plain.as_bytes()))
        )
    }

    pub fn open_text(&self, sealed: &str) -> Result<String, LogError> {
        let corrupt = || LogError::corrupt("endpoints", "a sealed value does not open");
        let encoded = sealed
            .strip_prefix(SEALED_TEXT_PREFIX)
            .ok_or_else(corrupt)?;
        let bytes = BASE64.decode(encoded).map_err(|_| corrupt())?;
        String::from_utf8(self.open(&bytes)?).map_err(|_| corrupt())
    }

    /// The record as stored: every secret sealed.
    pub fn seal_endpoint(&self, endpoint: &EndpointRecord) -> EndpointRecord {
        let mut sealed = endpoint.clone();
        sealed.secret = self.seal(&endpoint.secret);
        for old in &mut sealed.old_secrets {
            old.key = self.seal(&old.key);
        }
        for value in sealed.headers.values_mut() {
            *value = self.seal_text(value);
        }
        if let Signing::StaticToken { token, .. } = &mut sealed.signing {
            *token = self.seal_text(token);
        }
        sealed.sealed = true;
        sealed
    }

    /// The record as used: every secret opened.
    pub fn open_endpoint(&self, mut endpoint: EndpointRecord) -> Result<EndpointRecord, LogError> {
        if !endpoint.sealed {
            return Ok(endpoint);
        }
        endpoint.secret = self.open(&endpoint.secret)?;
        for old in &mut endpoint.old_secrets {
            old.key = self.open(&old.key)?;
        }
        for value in endpoint.headers.values_mut() {
            *value = self.open_text(value)?;
        }
        if let Signing::StaticToken { token, .. } = &mut endpoint.signing {
            *token = self.open_text(token)?;
        }
        endpoint.sealed = false;
        Ok(endpoint)
    }
}

/// Writes a new random key to `path` (64 hex digits), readable by its owner only; refuses
/// to overwrite a file. The file and its directory are synced before the key is used.
pub fn write_new_key(path: &Path) -> Result<(), LogError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail =
        |e: std::io::Error| LogError::Secrets(format!("cannot make {}: {e}", path.display()));
    let mut key = [0u8; 32];
    crate::ids::fill_random(&mut key);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(hex.as_bytes()).map_err(fail)?;
    file.write_all(b"\n").map_err(fail)?;
    file.sync_all().map_err(fail)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
    }
    Ok(())
}

fn decode_key(bytes: &[u8]) -> Option<[u8; 32]> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Some(raw);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        BASE64.decode(text).ok()?
    };
    decoded.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal(b"whsec secret bytes");
        assert!(!sealed.windows(6).any(|w| w == b"secret"), "no plaintext");
        assert_eq!(sealer.open(&sealed).expect("opens"), b"whsec secret bytes");
        assert_ne!(
            sealer.seal(b"x"),
            sealer.seal(b"x"),
            "fresh nonce each time"
        );
        let other = Sealer::new(&[8; 32]);
        assert!(other.open(&sealed).is_err());
        assert_ne!(sealer.check_value(), other.check_value());
        let mut tampered = sealed.clone();
        *tampered.last_mut().expect("byte") ^= 1;
        assert!(sealer.open(&tampered).is_err());
        assert!(sealer.open(&[]).is_err());
    }

    #[test]
    fn a_made_key_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets.key");
        write_new_key(&path).expect("made");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = Sealer::from_key_file(&path).expect("reads back");
        assert!(write_new_key(&path).is_err(), "never overwrites a key");
        let again = Sealer::from_key_file(&path).expect("reads back");
        assert_eq!(first.check_value(), again.check_value());
    }

    #[test]
    fn keys_read_in_three_spellings() {
        let raw = [0xab_u8; 32];
        assert_eq!(decode_key(&raw), Some(raw));
        assert_eq!(decode_key("ab".repeat(32).as_bytes()), Some(raw));
        assert_eq!(
            decode_key(format!("{}\n", BASE64.encode(raw)).as_bytes()),
            Some(raw)
        );
        assert_eq!(decode_key(b"too short"), None);
    }
}
