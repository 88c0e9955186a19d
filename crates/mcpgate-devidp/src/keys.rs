//! Signing keys: generated on first start, persisted in the data directory,
//! rotated on command with the old key published for a grace period.
//!
//! Tokens are signed with aws-lc-rs directly: the keys live as PKCS#8,
//! which `jsonwebtoken`'s encoder does not take for RSA, and RS256 over
//! `header.payload` is one call.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::IdpError;
use crate::util::{b64url, write_private};

const KEYS_FILE: &str = "signing-keys.json";

/// One key as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// PKCS#8 DER, base64.
    pkcs8: String,
    created: u64,
    /// Published until this time, then dropped; `None` while active.
    retire_at: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredKeys {
    keys: Vec<StoredKey>,
}

struct LoadedKey {
    kid: String,
    pair: KeyPair,
    n: String,
    e: String,
    retire_at: Option<u64>,
}

struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    keys: Vec<LoadedKey>,
}

/// The key ring of a running IdP. It re-reads the file when it changes, so
/// that `mcpgate idp rotate-keys` takes effect without a restart.
pub struct KeyRing {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("path", &self.path).finish()
    }
}

fn generate() -> Result<StoredKey, IdpError> {
    let pair = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| IdpError::Crypto("RSA key generation failed".into()))?;
    let der = pair
        .as_der()
        .map_err(|_| IdpError::Crypto("PKCS#8 encoding failed".into()))?;
    let kid = thumbprint(&pair);
    Ok(StoredKey {
        kid,
        pkcs8: STANDARD.encode(der.as_ref()),
        created: crate::util::unix_now_system(),
        retire_at: None,
    })
}

/// Entra's `kid` and `x5t` are the SHA-1 thumbprint of the key's
/// certificate; with no certificate, the thumbprint of the public key
/// gives an identifier of the same shape (27 base64url characters).
fn thumbprint(pair: &KeyPair) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        pair.public_key().as_ref(),
    );
    b64url(digest.as_ref())
}

fn read_file(path: &Path) -> Result<StoredKeys, IdpError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| IdpError::Config(format!("{} is not a key file: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoredKeys::default()),
        Err(e) => Err(IdpError::io(path, e)),
    }
}

fn write_file(path: &Path, keys: &StoredKeys) -> Result<(), IdpError> {
    let json = serde_json::to_vec_pretty(keys).map_err(|e| IdpError::Config(e.to_string()))?;
    write_private(path, &json)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn load(stored: &StoredKeys) -> Result<Vec<LoadedKey>, IdpError> {
    stored
        .keys
        .iter()
        .map(|k| {
            let der = STANDARD
                .decode(&k.pkcs8)
                .map_err(|_| IdpError::Crypto(format!("key {} is not base64", k.kid)))?;
            let pair = KeyPair::from_pkcs8(&der)
                .map_err(|e| IdpError::Crypto(format!("key {}: {e}", k.kid)))?;
            let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            Ok(LoadedKey {
                kid: k.kid.clone(),
                n: b64url(&components.n),
                e: b64url(&components.e),
                pair,
                retire_at: k.retire_at,
            })
        })
        .collect()
}

/// Rotates the keys in `data_dir`: a new active key, the current one
/// published for `grace_secs` more, keys past their grace dropped.
/// Returns the new key's id.
pub fn rotate_keys(data_dir: &Path, grace_secs: u64, now: u64) -> Result<String, IdpError> {
    let path = data_dir.join(KEYS_FILE);
    let mut stored = read_file(&path)?;
    stored.keys.retain(|k| k.retire_at.is_none_or(|t| t > now));
    for k in &mut stored.keys {
        if k.retire_at.is_none() {
            k.retire_at = Some(now + grace_secs);
        }
    }
    let new = generate()?;
    let kid = new.kid.clone();
    stored.keys.push(new);
    write_file(&path, &stored)?;
    Ok(kid)
}

impl KeyRing {
    /// Opens the key ring in `data_dir`, generating a key on first start.
    pub fn open(data_dir: &Path) -> Result<Self, IdpError> {
        let path = data_dir.join(KEYS_FILE);
        let mut stored = read_file(&path)?;
        if !stored.keys.iter().any(|k| k.retire_at.is_none()) {
            stored.keys.push(generate()?);
            write_file(&path, &stored)?;
        }
        let keys = load(&stored)?;
        Ok(Self {
            loaded: Mutex::new(Loaded {
                stamp: stamp(&path),
                keys,
            }),
            path,
        })
    }

    /// Re-reads the file if it changed since the last look. A file that
    /// turns unreadable leaves the keys in memory in place.
    fn with_keys<T>(&self, f: impl FnOnce(&[LoadedKey]) -> T) -> T {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now_stamp = stamp(&self.path);
        if now_stamp != loaded.stamp {
            match read_file(&self.path).and_then(|s| load(&s)) {
                Ok(keys) if keys.iter().any(|k| k.retire_at.is_none()) => {
                    tracing::info!(file = %self.path.display(), "signing keys reloaded");
                    loaded.keys = keys;
                }
                Ok(_) => tracing::warn!("key file has no active key; keeping the keys in memory"),
                Err(e) => {
                    tracing::warn!(error = %e, "key file unreadable; keeping the keys in memory")
                }
            }
            loaded.stamp = now_stamp;
        }
        f(&loaded.keys)
    }

    /// The active key's id.
    pub fn active_kid(&self) -> String {
        self.with_keys(|keys| {
            keys.iter()
                .rev()
                .find(|k| k.retire_at.is_none())
                .map(|k| k.kid.clone())
                .unwrap_or_default()
        })
    }

    /// The published key set (Entra's shape: `kty`, `use`, `kid`, `x5t`,
    /// `n`, `e`, `issuer`).
    pub fn jwks(&self, issuer: &str, now: u64) -> Value {
        self.with_keys(|keys| {
            let keys: Vec<Value> = keys
                .iter()
                .filter(|k| k.retire_at.is_none_or(|t| t > now))
                .map(|k| {
                    json!({
                        "kty": "RSA",
                        "use": "sig",
                        "kid": k.kid,
                        "x5t": k.kid,
                        "n": k.n,
                        "e": k.e,
                        "issuer": issuer,
                    })
                })
                .collect();
            json!({ "keys": keys })
        })
    }

    /// Signs claims as a compact JWS with the active key. `extra_header`
    /// adds header fields (Graph tokens carry a `nonce`).
    pub fn sign(&self, claims: &Value, extra_header: Option<(&str, &str)>) -> String {
        self.with_keys(|keys| {
            let key = keys
                .iter()
                .rev()
                .find(|k| k.retire_at.is_none())
                .or_else(|| keys.last())
                .expect("a key ring always holds an active key");
            let mut header =
                json!({ "typ": "JWT", "alg": "RS256", "kid": key.kid, "x5t": key.kid });
            if let Some((k, v)) = extra_header {
                header[k] = json!(v);
            }
            let signing_input = format!(
                "{}.{}",
                b64url(header.to_string()),
                b64url(claims.to_string())
            );
            let mut sig = vec![0u8; key.pair.public_modulus_len()];
            key.pair
                .sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    signing_input.as_bytes(),
                    &mut sig,
                )
                .expect("RSA signing with a valid key does not fail");
            format!("{signing_input}.{}", b64url(sig))
        })
    }

    /// Verifies one of our own tokens (RS256, a published key) and returns
    /// its claims; lifetime and audience are the caller's to check.
    pub fn verify(&self, token: &str, now: u64) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&crate::util::b64url_decode(h)?).ok()?;
        if header["alg"] != "RS256" {
            return None;
        }
        let kid = header["kid"].as_str()?;
        let sig = crate::util::b64url_decode(s)?;
        let ok = self.with_keys(|keys| {
            keys.iter()
                .filter(|k| k.retire_at.is_none_or(|t| t > now))
                .find(|k| k.kid == kid)
                .is_some_and(|k| {
                    let public = aws_lc_rs::signature::UnparsedPublicKey::new(
                        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                        k.pair.public_key().as_ref(),
                    );
                    public.verify(format!("{h}.{p}").as_bytes(), &sig).is_ok()
                })
        });
        if !ok {
            return None;
        }
        serde_json::from_slice(&crate::util::b64url_decode(p)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mcpgate-devidp-keys-{name}-{}",
            crate::util::random_token()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn keys_persist_and_rotate_with_grace() {
        let dir = temp_dir("rotate");
        let ring = KeyRing::open(&dir).expect("open");
        let first = ring.active_kid();
        assert_eq!(KeyRing::open(&dir).expect("reopen").active_kid(), first);
        let token = ring.sign(&json!({"sub": "x"}), None);
        assert_eq!(ring.verify(&token, 0).expect("verifies")["sub"], "x");

        let now = crate::util::unix_now_system();
        let second = rotate_keys(&dir, 100, now).expect("rotate");
        assert_ne!(first, second);
        // The running ring sees the new file without a restart.
        assert_eq!(ring.active_kid(), second);
        let published: Vec<String> = ring.jwks("iss", now)["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(published, vec![first.clone(), second.clone()]);
        assert!(ring.verify(&token, now).is_some(), "old key in grace");
        // After the grace period the old key is gone.
        assert_eq!(
            ring.jwks("iss", now + 101)["keys"].as_array().map(Vec::len),
            Some(1)
        );
        assert!(ring.verify(&token, now + 101).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tampered_tokens_do_not_verify() {
        let dir = temp_dir("tamper");
        let ring = KeyRing::open(&dir).expect("open");
        let token = ring.sign(&json!({"sub": "x"}), Some(("nonce", "n")));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64url(json!({"sub": "y"}).to_string());
        parts[1] = &forged;
        assert!(ring.verify(&parts.join("."), 0).is_none());
        assert!(ring.verify("a.b", 0).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
