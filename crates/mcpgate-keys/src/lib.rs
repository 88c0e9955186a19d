//! `mcpgate-keys`: the RS256 keys mcpgate signs its tokens with, for every
//! part that issues tokens (the development IdP, the broker).
//!
//! A [`KeyRing`] lives in a directory: generated on first open, persisted
//! (PKCS#8, the file mode 0600, written atomically), rotated on command
//! ([`rotate_keys`]) with the old key published for a grace period, and
//! picked up by a running ring without a restart. Keys are generated with
//! aws-lc-rs; tokens are signed and verified with `jsonwebtoken`, which
//! reads PKCS#8 from PEM and writes the `kid`, `x5t` and Graph's `nonce`
//! header fields.
//!
//! # Security
//!
//! The key file holds private keys: keep the directory private. `Debug`
//! of a ring prints its path only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A key ring could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file or its directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not one.
    #[error("{path} is not a key file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (never key material).
        reason: String,
    },
    /// Generating or loading a key failed.
    #[error("signing key: {0}")]
    Crypto(String),
}

fn io(path: &Path, source: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes `data` to `path` atomically, mode 0600 (tempfile's default on
/// Unix), creating the directory.
fn write_private(path: &Path, data: &[u8]) -> Result<(), KeyError> {
    let file = temp_beside(path, data)?;
    file.persist(path).map_err(|e| io(path, e.error))?;
    Ok(())
}

/// Writes `data` to `path` unless the file exists: `Ok(false)` when another
/// process created it first.
fn create_private(path: &Path, data: &[u8]) -> Result<bool, KeyError> {
    let file = temp_beside(path, data)?;
    match file.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path, e.error)),
    }
}

// A private temporary file holding `data`, in `path`'s directory (so that a
// rename onto `path` is atomic).
fn temp_beside(path: &Path, data: &[u8]) -> Result<tempfile::NamedTempFile, KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(dir, e))?;
    file.write_all(data)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| io(file.path(), e))?;
    Ok(file)
}

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
    n: String,
    e: String,
    retire_at: Option<u64>,
    signing: EncodingKey,
    verifying: DecodingKey,
}

struct Loaded {
    stamp: Option<(SystemTime, u64, u64)>,
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

fn generate() -> Result<StoredKey, KeyError> {
    let pair = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| KeyError::Crypto("RSA key generation failed".into()))?;
    let der = pair
        .as_der()
        .map_err(|_| KeyError::Crypto("PKCS#8 encoding failed".into()))?;
    let kid = thumbprint(&pair);
    Ok(StoredKey {
        kid,
        pkcs8: STANDARD.encode(der.as_ref()),
        created: unix_now(),
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

fn read_file(path: &Path) -> Result<StoredKeys, KeyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeyError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoredKeys::default()),
        Err(e) => Err(io(path, e)),
    }
}

fn write_file(path: &Path, keys: &StoredKeys) -> Result<(), KeyError> {
    write_private(path, &serialize(path, keys)?)
}

fn serialize(path: &Path, keys: &StoredKeys) -> Result<Vec<u8>, KeyError> {
    serde_json::to_vec_pretty(keys).map_err(|e| KeyError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// What tells a rewritten file from the one loaded: every write is a new
/// file renamed into place, so a new inode, even when its time and length
/// look the same.
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

fn load(stored: &StoredKeys) -> Result<Vec<LoadedKey>, KeyError> {
    stored
        .keys
        .iter()
        .map(|k| {
            let der = STANDARD
                .decode(&k.pkcs8)
                .map_err(|_| KeyError::Crypto(format!("key {} is not base64", k.kid)))?;
            let pair = KeyPair::from_pkcs8(&der)
                .map_err(|e| KeyError::Crypto(format!("key {}: {e}", k.kid)))?;
            let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            // jsonwebtoken takes PKCS#8 as PEM.
            let signing = EncodingKey::from_rsa_pem(pkcs8_pem(&der).as_bytes())
                .map_err(|e| KeyError::Crypto(format!("key {}: {e}", k.kid)))?;
            Ok(LoadedKey {
                kid: k.kid.clone(),
                verifying: DecodingKey::from_rsa_raw_components(&components.n, &components.e),
                n: b64url(&components.n),
                e: b64url(&components.e),
                signing,
                retire_at: k.retire_at,
            })
        })
        .collect()
}

/// PKCS#8 DER as a PEM `PRIVATE KEY` block.
fn pkcs8_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Rotates the keys in `data_dir`: a new active key, the current one
/// published for `grace_secs` more, keys past their grace dropped.
/// Returns the new key's id.
pub fn rotate_keys(data_dir: &Path, grace_secs: u64, now: u64) -> Result<String, KeyError> {
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
    pub fn open(data_dir: &Path) -> Result<Self, KeyError> {
        let path = data_dir.join(KEYS_FILE);
        let mut stored = read_file(&path)?;
        if stored.keys.is_empty() && !path.exists() {
            // Replicas sharing the directory may start at once: the first
            // key file written wins, and the others use it rather than
            // replace it with keys of their own.
            stored.keys.push(generate()?);
            if !create_private(&path, &serialize(&path, &stored)?)? {
                stored = read_file(&path)?;
            }
        }
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

    /// Signs claims as a compact JWS (RS256) with the active key. `nonce`
    /// goes in the header, as Graph's tokens carry one.
    pub fn sign(&self, claims: &Value, nonce: Option<&str>) -> String {
        self.with_keys(|keys| {
            let key = keys
                .iter()
                .rev()
                .find(|k| k.retire_at.is_none())
                .or_else(|| keys.last())
                .expect("a key ring always holds an active key");
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(key.kid.clone());
            header.x5t = Some(key.kid.clone());
            header.nonce = nonce.map(str::to_owned);
            jsonwebtoken::encode(&header, claims, &key.signing)
                .expect("RS256 signing with a loaded key does not fail")
        })
    }

    /// Verifies one of our own tokens (RS256, a published key) and returns
    /// its claims; lifetime and audience are the caller's to check.
    pub fn verify(&self, token: &str, now: u64) -> Option<Value> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::RS256 {
            return None;
        }
        let kid = header.kid?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        self.with_keys(|keys| {
            let key = keys
                .iter()
                .filter(|k| k.retire_at.is_none_or(|t| t > now))
                .find(|k| k.kid == kid)?;
            jsonwebtoken::decode::<Value>(token, &key.verifying, &validation)
                .ok()
                .map(|data| data.claims)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    /// Two replicas starting at once on an empty shared directory: before,
    /// each could keep a key of its own, and one's tokens never verified
    /// at the other.
    #[test]
    fn replicas_starting_together_share_one_key() {
        for _ in 0..6 {
            let tmp = temp_dir();
            let dir = tmp.path().to_owned();
            let start = std::sync::Arc::new(std::sync::Barrier::new(2));
            let opened: Vec<String> = (0..2)
                .map(|_| {
                    let (dir, start) = (dir.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        let ring = KeyRing::open(&dir).expect("open");
                        // What it opened with, before any look at the file
                        // again could paper over a lost race.
                        let loaded = ring.loaded.lock().expect("lock");
                        loaded
                            .keys
                            .iter()
                            .map(|k| k.kid.clone())
                            .collect::<String>()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect();
            assert_eq!(opened[0], opened[1], "both sign with the same key");
            let stored = read_file(&dir.join(KEYS_FILE)).expect("read");
            assert_eq!(stored.keys.len(), 1);
            assert_eq!(stored.keys[0].kid, opened[0]);
        }
    }

    #[test]
    fn keys_persist_and_rotate_with_grace() {
        let tmp = temp_dir();
        let dir = tmp.path();
        let ring = KeyRing::open(dir).expect("open");
        let first = ring.active_kid();
        assert_eq!(KeyRing::open(dir).expect("reopen").active_kid(), first);
        let token = ring.sign(&json!({"sub": "x"}), None);
        assert_eq!(ring.verify(&token, 0).expect("verifies")["sub"], "x");

        let now = unix_now();
        let second = rotate_keys(dir, 100, now).expect("rotate");
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
    }

    #[test]
    fn tampered_tokens_do_not_verify() {
        let tmp = temp_dir();
        let ring = KeyRing::open(tmp.path()).expect("open");
        let token = ring.sign(&json!({"sub": "x"}), Some("n"));
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.nonce.as_deref(), Some("n"));
        assert_eq!(header.kid, header.x5t);
        assert!(ring.verify(&token, 0).is_some());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64url(json!({"sub": "y"}).to_string());
        parts[1] = &forged;
        assert!(ring.verify(&parts.join("."), 0).is_none());
        assert!(ring.verify("a.b", 0).is_none());
    }
}
