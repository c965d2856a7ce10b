//! Secrets at rest: connector passwords and webhook signing secrets are kept sealed (ChaCha20-Poly1305 under a key
//! derived from the server's secret), never as given. A sealed value reads `sealed:v1:` and hex (nonce, then the
//! ciphertext and tag); a value without that mark is one written before secrets were sealed, read as it is and
//! sealed at the next start ([`crate::WebhookStore::reseal_secrets`]).
//!
//! The key is the process's: [`install`] it once at start, before the store is used. Without one, values are
//! kept as given (tests that do not care); with one, every write seals.

use std::sync::OnceLock;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::schema::corrupt;
use crate::{Result, StoreError};

const MARK: &str = "sealed:v1:";

static KEY: OnceLock<LessSafeKey> = OnceLock::new();

/// Derives the sealing key from the server's secret and puts it in force for the process; false if one was in
/// force already (it stays).
pub fn install(server_secret: &[u8]) -> bool {
    let derived =
        ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, server_secret), b"smsgate secrets at rest v1");
    let Ok(unbound) = UnboundKey::new(&CHACHA20_POLY1305, derived.as_ref()) else { return false };
    KEY.set(LessSafeKey::new(unbound)).is_ok()
}

/// Whether a sealing key is in force.
pub fn installed() -> bool {
    KEY.get().is_some()
}

/// Whether a stored value is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(MARK)
}

/// `plain` sealed (as given when no key is in force, or when it is sealed already).
pub fn seal(plain: &str) -> Result<String> {
    let Some(key) = KEY.get() else { return Ok(plain.to_string()) };
    if is_sealed(plain) {
        return Ok(plain.to_string());
    }
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| StoreError::Stopped("no randomness for a nonce".into()))?;
    let mut sealed = plain.as_bytes().to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut sealed)
        .map_err(|_| StoreError::Stopped("sealing a secret failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(format!("{MARK}{}", hex::encode(out)))
}

/// A stored value opened: a sealed one decrypted (an error if it was sealed under another key, or altered), one
/// from before sealing as it is.
pub fn open(stored: &str) -> Result<String> {
    let Some(hexed) = stored.strip_prefix(MARK) else { return Ok(stored.to_string()) };
    let key = KEY.get().ok_or_else(|| corrupt("a sealed secret, and no key to open it (SMSGATE_SECRET_KEY)"))?;
    let bytes = hex::decode(hexed).map_err(|_| corrupt("a sealed secret that is not hex"))?;
    if bytes.len() < NONCE_LEN {
        return Err(corrupt("a sealed secret too short"));
    }
    let (nonce, rest) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt("a sealed secret's nonce"))?;
    let mut rest = rest.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::empty(), &mut rest)
        .map_err(|_| corrupt("a sealed secret that does not open: another server secret, or altered"))?;
    String::from_utf8(plain.to_vec()).map_err(|_| corrupt("a sealed secret that is not text"))
}

/// A stored secret opened, or empty when it does not open (sealed under a server secret since lost): for the
/// paths where one account's unreadable secret must not stop the others' work. Logged.
pub fn open_or_empty(stored: &str) -> String {
    open(stored).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a sealed secret does not open (another server secret?); it reads empty");
        String::new()
    })
}

/// Whether a setting's name says it holds a secret.
pub fn secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token"].iter().any(|s| name.contains(s))
}

/// Whether a connector's settings hold a secret field not sealed.
pub fn settings_have_plain_secret(json: &str) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json) else { return false };
    map.iter().any(|(k, v)| secret_field(k) && v.as_str().is_some_and(|s| !s.is_empty() && !is_sealed(s)))
}

/// A connector's settings (a JSON object) with each secret field sealed (`seal`) or opened (`open`).
pub fn settings(json: &str, each: fn(&str) -> Result<String>) -> Result<String> {
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str::<serde_json::Value>(json) else {
        return Ok(json.to_string());
    };
    for (k, v) in map.iter_mut() {
        if let serde_json::Value::String(s) = v
            && secret_field(k)
        {
            *s = each(s)?;
        }
    }
    Ok(serde_json::Value::Object(map).to_string())
}
