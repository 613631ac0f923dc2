//! Verifying incoming webhooks: each ingest source type's signature scheme, as pure
//! functions over the request's headers, body and the time (ring HMAC and Ed25519).
//!
//! Every comparison of a signature is constant-time: the presented signature is decoded
//! and checked with `ring::hmac::verify` (or Ed25519 verification), never compared as
//! text. Schemes with a timestamp refuse requests outside `TOLERANCE_SECS` of now, so a
//! captured request cannot be replayed later.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{hmac, signature};

/// How far a signed timestamp may be from now, either way (the providers' 5 minutes).
pub const TOLERANCE_SECS: u64 = 300;

/// How a source type proves where a request comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `generic-webhook`: no signature; the unguessable URL token is the secret.
    TokenOnly,
    /// Standard Webhooks (`svix-*` or `webhook-*` headers), used by `svix` and the types
    /// that share its scheme.
    StandardWebhooks,
    /// `X-Hub-Signature-256: sha256=<hex>` over the body (`github`; no check without a
    /// secret, which GitHub makes optional).
    Github,
    /// `Stripe-Signature: t=<ts>,v1=<hex>[,v1=…]` over `ts.body`.
    Stripe,
    /// `X-Shopify-Hmac-Sha256: <base64>` over the body.
    Shopify,
    /// `X-Slack-Signature: v0=<hex>` over `v0:ts:body`, `X-Slack-Request-Timestamp`.
    Slack,
    /// `x-zm-signature: v0=<hex>` over `v0:ts:body`, `x-zm-request-timestamp`, and the
    /// `endpoint.url_validation` challenge.
    Zoom,
    /// `X-Hub-Signature-256` with the app secret, and the GET `hub.challenge` handshake.
    Meta,
    /// Ed25519 over `ts|body`: `telnyx-signature-ed25519`, `telnyx-timestamp`.
    Telnyx,
}

/// Source types that sign with Standard Webhooks (Svix's list).
const STANDARD_WEBHOOKS_TYPES: [&str; 17] = [
    "svix",
    "beehiiv",
    "brex",
    "clerk",
    "guesty",
    "incident-io",
    "lithic",
    "nash",
    "pleo",
    "psi-fi",
    "replicate",
    "resend",
    "safebase",
    "sardine",
    "stych",
    "open-ai",
    "render",
];

impl Scheme {
    /// The scheme of a source type, or `None` for a type Sluice does not verify.
    pub fn of(kind: &str) -> Option<Scheme> {
        Some(match kind {
            "generic-webhook" => Scheme::TokenOnly,
            "github" => Scheme::Github,
            "stripe" => Scheme::Stripe,
            "shopify" => Scheme::Shopify,
            "slack" => Scheme::Slack,
            "zoom" => Scheme::Zoom,
            "meta" => Scheme::Meta,
            "telnyx" => Scheme::Telnyx,
            k if STANDARD_WEBHOOKS_TYPES.contains(&k) => Scheme::StandardWebhooks,
            _ => return None,
        })
    }

    /// The config fields this scheme needs (camelCase, as the API takes them).
    pub fn required(self) -> &'static [&'static str] {
        match self {
            Scheme::TokenOnly | Scheme::Github => &[],
            Scheme::Meta => &["secret", "verifyToken"],
            Scheme::Telnyx => &["publicKey"],
            _ => &["secret"],
        }
    }

    /// Every config field this scheme reads.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Scheme::TokenOnly => &[],
            Scheme::Github => &["secret"],
            other => other.required(),
        }
    }
}

/// What a source needs to verify: its config values, opened.
pub trait Config {
    fn get(&self, field: &str) -> Option<&str>;
}

impl Config for std::collections::BTreeMap<String, String> {
    fn get(&self, field: &str) -> Option<&str> {
        std::collections::BTreeMap::get(self, field).map(String::as_str)
    }
}

/// Why a request was not accepted (shown in the source's error log).
pub type Rejection = &'static str;

/// Checks a config value a scheme needs; `Err` says what is wrong with it.
pub fn check_config_value(scheme: Scheme, field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    match (scheme, field) {
        (Scheme::StandardWebhooks, "secret") => standard_key(value)
            .map(|_| ())
            .ok_or_else(|| "must be whsec_ followed by base64".to_owned()),
        (Scheme::Telnyx, "publicKey") => match BASE64.decode(value) {
            Ok(key) if key.len() == 32 => Ok(()),
            _ => Err("must be a base64 Ed25519 public key (32 bytes)".to_owned()),
        },
        _ => Ok(()),
    }
}

/// Verifies a request of `scheme`. `header` looks a header up by lower-case name.
pub fn verify<'h>(
    scheme: Scheme,
    config: &impl Config,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_secs: u64,
) -> Result<(), Rejection> {
    let secret = || config.get("secret").ok_or("the source has no secret");
    match scheme {
        Scheme::TokenOnly => Ok(()),
        Scheme::StandardWebhooks => standard_webhooks(secret()?, &header, body, now_secs),
        Scheme::Github | Scheme::Meta => match config.get("secret") {
            // GitHub's secret is optional: without one, the URL token is the check.
            None if scheme == Scheme::Github => Ok(()),
            None => Err("the source has no secret"),
            Some(secret) => {
                let given = header("x-hub-signature-256").ok_or("missing X-Hub-Signature-256")?;
                let hex = given
                    .strip_prefix("sha256=")
                    .ok_or("X-Hub-Signature-256 is not sha256=<hex>")?;
                hmac_hex(secret.as_bytes(), &[body], hex)
            }
        },
        Scheme::Stripe => stripe(secret()?, &header, body, now_secs),
        Scheme::Shopify => {
            let given = header("x-shopify-hmac-sha256").ok_or("missing X-Shopify-Hmac-Sha256")?;
            let tag = BASE64
                .decode(given.trim())
                .map_err(|_| "X-Shopify-Hmac-Sha256 is not base64")?;
            hmac_verify(secret()?.as_bytes(), &[body], &tag)
        }
        Scheme::Slack => v0_scheme(
            secret()?,
            header("x-slack-request-timestamp").ok_or("missing X-Slack-Request-Timestamp")?,
            header("x-slack-signature").ok_or("missing X-Slack-Signature")?,
            body,
            now_secs,
        ),
        Scheme::Zoom => v0_scheme(
            secret()?,
            header("x-zm-request-timestamp").ok_or("missing x-zm-request-timestamp")?,
            header("x-zm-signature").ok_or("missing x-zm-signature")?,
            body,
            now_secs,
        ),
        Scheme::Telnyx => {
            let key = config
                .get("publicKey")
                .ok_or("the source has no public key")?;
            let key = BASE64
                .decode(key)
                .map_err(|_| "the public key is not base64")?;
            let timestamp = header("telnyx-timestamp").ok_or("missing telnyx-timestamp")?;
            check_time(timestamp, now_secs)?;
            let sig =
                header("telnyx-signature-ed25519").ok_or("missing telnyx-signature-ed25519")?;
            let sig = BASE64
                .decode(sig.trim())
                .map_err(|_| "telnyx-signature-ed25519 is not base64")?;
            let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
            signed.extend_from_slice(timestamp.as_bytes());
            signed.push(b'|');
            signed.extend_from_slice(body);
            signature::UnparsedPublicKey::new(&signature::ED25519, key)
                .verify(&signed, &sig)
                .map_err(|_| "the signature does not match")
        }
    }
}

/// A Standard Webhooks key: `whsec_<base64>` (or bare base64).
fn standard_key(secret: &str) -> Option<Vec<u8>> {
    BASE64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()
        .filter(|k| !k.is_empty())
}

fn check_time(timestamp: &str, now_secs: u64) -> Result<u64, Rejection> {
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| "the timestamp is not a number")?;
    if ts.abs_diff(now_secs) > TOLERANCE_SECS {
        return Err("the timestamp is outside the tolerance (5 minutes)");
    }
    Ok(ts)
}

fn hmac_verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> Result<(), Rejection> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    // ring recomputes the tag and compares it in constant time.
    hmac::verify(&key, &parts.concat(), tag).map_err(|_| "the signature does not match")
}

fn hmac_hex(key: &[u8], parts: &[&[u8]], hex_tag: &str) -> Result<(), Rejection> {
    let tag = hex_decode(hex_tag.trim()).ok_or("the signature is not hex")?;
    hmac_verify(key, parts, &tag)
}

fn standard_webhooks<'h>(
    secret: &str,
    header: &impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_secs: u64,
) -> Result<(), Rejection> {
    let key = standard_key(secret).ok_or("the source's secret is not base64")?;
    let pick =
        |name: &str| header(&format!("svix-{name}")).or_else(|| header(&format!("webhook-{name}")));
    let id = pick("id").ok_or("missing svix-id (or webhook-id)")?;
    let timestamp = pick("timestamp").ok_or("missing svix-timestamp (or webhook-timestamp)")?;
    let signatures = pick("signature").ok_or("missing svix-signature (or webhook-signature)")?;
    check_time(timestamp, now_secs)?;
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.trim().as_bytes(), b".", body];
    let any = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .any(|tag| hmac_verify(&key, &parts, &tag).is_ok());
    if any {
        Ok(())
    } else {
        Err("no signature matches")
    }
}

fn stripe<'h>(
    secret: &str,
    header: &impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_secs: u64,
) -> Result<(), Rejection> {
    let value = header("stripe-signature").ok_or("missing Stripe-Signature")?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", sig)) => signatures.push(sig),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("Stripe-Signature has no t=")?;
    if signatures.is_empty() {
        return Err("Stripe-Signature has no v1= signature");
    }
    check_time(timestamp, now_secs)?;
    // Stripe's key is the whole `whsec_…` text, used as bytes.
    let parts: [&[u8]; 3] = [timestamp.as_bytes(), b".", body];
    if signatures
        .iter()
        .any(|sig| hmac_hex(secret.as_bytes(), &parts, sig).is_ok())
    {
        Ok(())
    } else {
        Err("no signature matches")
    }
}

fn v0_scheme(
    secret: &str,
    timestamp: &str,
    given: &str,
    body: &[u8],
    now_secs: u64,
) -> Result<(), Rejection> {
    check_time(timestamp, now_secs)?;
    let hex = given
        .strip_prefix("v0=")
        .ok_or("the signature is not v0=<hex>")?;
    let parts: [&[u8]; 4] = [b"v0:", timestamp.trim().as_bytes(), b":", body];
    hmac_hex(secret.as_bytes(), &parts, hex)
}

/// Zoom's `endpoint.url_validation` answer: `{plainToken, encryptedToken}` where the
/// encrypted token is the hex HMAC-SHA256 of the plain token with the secret token.
pub fn zoom_challenge(secret: &str, plain_token: &str) -> serde_json::Value {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, plain_token.as_bytes());
    serde_json::json!({
        "plainToken": plain_token,
        "encryptedToken": hex_encode(tag.as_ref()),
    })
}

/// The hex HMAC-SHA256 of `parts` with `key` (for tests and the benchmark's signers).
pub fn hmac_sha256_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for part in parts {
        ctx.update(part);
    }
    hex_encode(ctx.sign().as_ref())
}

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn github_documentation_vector() {
        // From GitHub's "Validating webhook deliveries" documentation: secret
        // "It's a Secret to Everybody", payload "Hello, World!".
        let c = config(&[("secret", "It's a Secret to Everybody")]);
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let ok = [("x-hub-signature-256", sig)];
        assert_eq!(
            verify(Scheme::Github, &c, headers(&ok), b"Hello, World!", 0),
            Ok(())
        );
        assert!(verify(Scheme::Github, &c, headers(&ok), b"Hello, World?", 0).is_err());
        assert!(verify(Scheme::Github, &c, headers(&[]), b"Hello, World!", 0).is_err());
        let wrong = config(&[("secret", "another")]);
        assert!(verify(Scheme::Github, &wrong, headers(&ok), b"Hello, World!", 0).is_err());
        // Without a secret GitHub sends no signature: the URL token is the check.
        assert_eq!(
            verify(Scheme::Github, &config(&[]), headers(&[]), b"x", 0),
            Ok(())
        );
    }

    #[test]
    fn slack_documentation_vector() {
        // From Slack's "Verifying requests from Slack" documentation (its worked example).
        let c = config(&[("secret", "8f742231b10e8888abcd99yyyzzz85a5")]);
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let h = [
            ("x-slack-request-timestamp", "1531420618"),
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ];
        assert_eq!(
            verify(Scheme::Slack, &c, headers(&h), body, 1_531_420_618),
            Ok(())
        );
        assert!(
            verify(Scheme::Slack, &c, headers(&h), body, 1_531_420_618 + 301).is_err(),
            "stale"
        );
    }

    #[test]
    fn standard_webhooks_documentation_vector() {
        // From Svix's documentation and worker tests (also `signing::tests`).
        let c = config(&[("secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]);
        let body = br#"{"test": 2432232314}"#;
        let h = [
            ("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("svix-timestamp", "1614265330"),
            (
                "svix-signature",
                "v1,bad v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                &c,
                headers(&h),
                body,
                1_614_265_330
            ),
            Ok(())
        );
        let webhook = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                &c,
                headers(&webhook),
                body,
                1_614_265_330
            ),
            Ok(())
        );
        assert!(
            verify(
                Scheme::StandardWebhooks,
                &c,
                headers(&h),
                body,
                1_614_265_330 + 301
            )
            .is_err()
        );
        assert!(
            verify(
                Scheme::StandardWebhooks,
                &c,
                headers(&h),
                b"{}",
                1_614_265_330
            )
            .is_err()
        );
    }

    #[test]
    fn stripe_several_v1_and_tolerance() {
        // Stripe publishes no complete vector; computed from its definition:
        // hex HMAC-SHA256 of "t.body" keyed with the whole whsec_ secret.
        let secret = "whsec_test_secret";
        let c = config(&[("secret", secret)]);
        let body = br#"{"id":"evt_1"}"#;
        let good = hmac_sha256_hex(secret.as_bytes(), &[b"1700000000", b".", body]);
        let value = format!("t=1700000000,v1={},v1={good},v0=ignored", "00".repeat(32));
        let h = [("stripe-signature", value.as_str())];
        assert_eq!(
            verify(Scheme::Stripe, &c, headers(&h), body, 1_700_000_100),
            Ok(())
        );
        assert!(verify(Scheme::Stripe, &c, headers(&h), body, 1_700_000_301).is_err());
        let garbage = [("stripe-signature", "t=x,v1=zz")];
        assert!(verify(Scheme::Stripe, &c, headers(&garbage), body, 1_700_000_000).is_err());
    }

    #[test]
    fn shopify_zoom_meta_and_telnyx() {
        // Computed from each scheme's definition (no published vector checked here).
        let body = br#"{"a":1}"#;
        let c = config(&[("secret", "s3cret"), ("verifyToken", "v")]);
        let tag =
            BASE64.encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"s3cret"), body).as_ref());
        let h = [("x-shopify-hmac-sha256", tag.as_str())];
        assert_eq!(verify(Scheme::Shopify, &c, headers(&h), body, 0), Ok(()));
        assert!(verify(Scheme::Shopify, &c, headers(&h), b"{}", 0).is_err());

        let zoom = format!(
            "v0={}",
            hmac_sha256_hex(b"s3cret", &[b"v0:", b"1700000000", b":", body])
        );
        let h = [
            ("x-zm-request-timestamp", "1700000000"),
            ("x-zm-signature", zoom.as_str()),
        ];
        assert_eq!(
            verify(Scheme::Zoom, &c, headers(&h), body, 1_700_000_000),
            Ok(())
        );
        assert_eq!(
            zoom_challenge("s3cret", "abc")["encryptedToken"],
            hmac_sha256_hex(b"s3cret", &[b"abc"])
        );

        let meta = format!("sha256={}", hmac_sha256_hex(b"s3cret", &[body]));
        let h = [("x-hub-signature-256", meta.as_str())];
        assert_eq!(verify(Scheme::Meta, &c, headers(&h), body, 0), Ok(()));

        let pair = signature::Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("key");
        use signature::KeyPair;
        let public = BASE64.encode(pair.public_key().as_ref());
        let c = config(&[("publicKey", &public)]);
        let sig = BASE64.encode(pair.sign(b"1700000000|{\"a\":1}").as_ref());
        let h = [
            ("telnyx-timestamp", "1700000000"),
            ("telnyx-signature-ed25519", sig.as_str()),
        ];
        assert_eq!(
            verify(Scheme::Telnyx, &c, headers(&h), body, 1_700_000_000),
            Ok(())
        );
        assert!(verify(Scheme::Telnyx, &c, headers(&h), b"{}", 1_700_000_000).is_err());
        assert!(verify(Scheme::Telnyx, &c, headers(&h), body, 1_700_000_400).is_err());
    }

    #[test]
    fn types_and_hex() {
        assert_eq!(Scheme::of("clerk"), Some(Scheme::StandardWebhooks));
        assert_eq!(Scheme::of("cron"), None);
        assert_eq!(
            hex_decode(&hex_encode(&[0, 255, 16])),
            Some(vec![0, 255, 16])
        );
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }
}
