//! Sealing upstream tokens: AES-256-GCM from aws-lc-rs.
//!
//! A sealed value is `version (1) ‖ key id (4) ‖ nonce (12) ‖ ciphertext ‖
//! tag (16)`. The nonce is random per seal (96 bits; at the broker's rate of
//! seals per key, far below the 2^32 bound for random GCM nonces). The
//! associated data binds the version, the key id and the *record key* the
//! caller names, so a ciphertext copied to another record does not open.
//! The key id (the first four bytes of a hash of the key) names the key in
//! each value, so keys rotate: seal with the new one, and keep opening old
//! values with [`TokenCipher::also_opening_with`] the retired one.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// The length of a sealing key.
pub const KEY_LEN: usize = 32;

/// A 256-bit sealing key; prints as `[redacted]`.
pub struct KeyBytes([u8; KEY_LEN]);

impl KeyBytes {
    /// Wraps key material (from configuration).
    pub const fn new(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh random key.
    pub fn random() -> Result<Self, SealError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SealError::Random)?;
        Ok(Self(bytes))
    }

    /// The key in `path`: 32 raw bytes. A missing file is created with a
    /// fresh random key, readable by its owner only (0600, through a
    /// temporary file so that no reader sees half a key and no planted
    /// symlink is followed). Other secrets kept as key files (the broker's
    /// consent key) use it too.
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let key_file_error = |source| SealError::KeyFile {
            path: path.to_owned(),
            source,
        };
        match fs::read(path) {
            Ok(bytes) => {
                warn_if_shared(path);
                return Self::try_from(bytes.as_slice());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_file_error(e)),
        }
        let key = Self::random()?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(key_file_error)?;
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(key_file_error)?;
        file.write_all(&key.0).map_err(key_file_error)?;
        file.as_file().sync_all().map_err(key_file_error)?;
        match file.persist_noclobber(path) {
            Ok(_) => Ok(key),
            // Another process created it first: use theirs.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                let bytes = fs::read(path).map_err(key_file_error)?;
                Self::try_from(bytes.as_slice())
            }
            Err(e) => Err(key_file_error(e.error)),
        }
    }

    /// The key material, for a keyed primitive other than the sealer.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl TryFrom<&[u8]> for KeyBytes {
    type Error = SealError;

    fn try_from(bytes: &[u8]) -> Result<Self, SealError> {
        let bytes: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| SealError::KeyLength { found: bytes.len() })?;
        Ok(Self(bytes))
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyBytes([redacted])")
    }
}

/// An opened secret; prints as `[redacted]`, and is not `Clone`.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// The secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret, owned.
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

/// A sealed value, as stored; serialized as base64.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(Vec<u8>);

impl Sealed {
    /// A sealed value as read from elsewhere.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The sealed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

impl Serialize for Sealed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&B64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        B64.decode(text.as_bytes())
            .map(Self)
            .map_err(|_| serde::de::Error::custom("a sealed value is base64"))
    }
}

/// Why sealing, opening or loading a key failed. No variant carries key
/// material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The key file could not be read or created.
    #[error("the sealing key file {path} could not be read or created")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The key is not 32 bytes.
    #[error("a sealing key is 32 bytes, not {found}")]
    KeyLength {
        /// The length found.
        found: usize,
    },
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// The value was sealed by another key (or is not a sealed value).
    #[error("the value was sealed with another key")]
    UnknownKey,
    /// The value does not open: tampered, truncated, or sealed to another record.
    #[error("the sealed value does not open (tampered, or sealed to another record)")]
    Open,
}

/// Seals and opens secrets with AES-256-GCM, binding each to its record.
/// Seals with one key; opens with it or any retired key added with
/// [`also_opening_with`](TokenCipher::also_opening_with), chosen by the key
/// id each sealed value carries.
pub struct TokenCipher {
    key: LessSafeKey,
    key_id: [u8; KEY_ID_LEN],
    retired: Vec<([u8; KEY_ID_LEN], LessSafeKey)>,
}

impl fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCipher")
            .field("key_id", &crate::records::hex(&self.key_id))
            .finish_non_exhaustive()
    }
}

impl TokenCipher {
    /// A cipher with the given key.
    pub fn new(key: &KeyBytes) -> Result<Self, SealError> {
        let (key_id, key) = Self::load(key)?;
        Ok(Self {
            key,
            key_id,
            retired: Vec::new(),
        })
    }

    /// The same cipher, also opening values sealed with a retired key.
    pub fn also_opening_with(mut self, retired: &KeyBytes) -> Result<Self, SealError> {
        self.retired.push(Self::load(retired)?);
        Ok(self)
    }

    fn load(key: &KeyBytes) -> Result<([u8; KEY_ID_LEN], LessSafeKey), SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, &key.0)
            .map_err(|_| SealError::KeyLength { found: key.0.len() })?;
        let digest = Sha256::new_with_prefix(b"mcpgate-store sealing key id\0")
            .chain_update(key.0)
            .finalize();
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Ok((key_id, LessSafeKey::new(unbound)))
    }

    /// A cipher with the key in `path` (see [`KeyBytes::from_file`]).
    pub fn from_key_file(path: &Path) -> Result<Self, SealError> {
        Self::new(&KeyBytes::from_file(path)?)
    }

    /// Seals `plaintext` to the record named `record_key` (for upstream
    /// tokens, the [`UpstreamKey`](crate::UpstreamKey)'s bytes).
    pub fn seal(&self, record_key: &[u8], plaintext: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        let aad = associated_data(&self.key_id, record_key);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut body,
            )
            .map_err(|_| SealError::Open)?;
        out.extend_from_slice(&body);
        Ok(Sealed(out))
    }

    /// Opens a value sealed to `record_key` by this key or a retired one.
    pub fn open(&self, record_key: &[u8], sealed: &Sealed) -> Result<SecretBytes, SealError> {
        let bytes = sealed.as_bytes();
        if bytes.len() < HEADER_LEN + TAG_LEN || bytes[0] != VERSION {
            return Err(SealError::Open);
        }
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&bytes[1..1 + KEY_ID_LEN]);
        let key = if key_id == self.key_id {
            &self.key
        } else {
            self.retired
                .iter()
                .find(|(id, _)| *id == key_id)
                .map(|(_, key)| key)
                .ok_or(SealError::UnknownKey)?
        };
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[1 + KEY_ID_LEN..HEADER_LEN]);
        let mut body = bytes[HEADER_LEN..].to_vec();
        let aad = associated_data(&key_id, record_key);
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut body,
            )
            .map_err(|_| SealError::Open)?;
        let len = plain.len();
        body.truncate(len);
        Ok(SecretBytes(body))
    }
}

fn associated_data(key_id: &[u8; KEY_ID_LEN], record_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + KEY_ID_LEN + record_key.len());
    aad.push(VERSION);
    aad.extend_from_slice(key_id);
    aad.extend_from_slice(record_key);
    aad
}

/// A key file others can read is used (a mounted secret often is 0644)
/// but said out loud.
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the sealing key file is readable by other users; chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> TokenCipher {
        TokenCipher::new(&KeyBytes::new([7; KEY_LEN])).expect("cipher")
    }

    #[test]
    fn opens_what_it_sealed_to_the_same_record() {
        let c = cipher();
        let sealed = c.seal(b"grant-1", b"entra refresh token").expect("seal");
        let opened = c.open(b"grant-1", &sealed).expect("open");
        assert_eq!(opened.expose(), b"entra refresh token");
        assert_eq!(format!("{opened:?}"), "SecretBytes([redacted])");
    }

    #[test]
    fn a_ciphertext_moved_to_another_record_does_not_open() {
        let c = cipher();
        let sealed = c.seal(b"grant-1", b"secret").expect("seal");
        assert!(matches!(c.open(b"grant-2", &sealed), Err(SealError::Open)));
    }

    #[test]
    fn nonces_differ_and_tampering_is_caught() {
        let c = cipher();
        let a = c.seal(b"k", b"same").expect("seal");
        let b = c.seal(b"k", b"same").expect("seal");
        assert_ne!(a, b, "a fresh nonce per seal");
        let mut bytes = a.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            c.open(b"k", &Sealed::from_bytes(bytes)),
            Err(SealError::Open)
        ));
        assert!(matches!(
            c.open(b"k", &Sealed::from_bytes(vec![1, 2])),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn another_key_is_named_as_such() {
        let sealed = cipher().seal(b"k", b"x").expect("seal");
        let other = TokenCipher::new(&KeyBytes::new([8; KEY_LEN])).expect("cipher");
        assert!(matches!(
            other.open(b"k", &sealed),
            Err(SealError::UnknownKey)
        ));
    }

    #[test]
    fn a_rotated_cipher_opens_what_the_retired_key_sealed() {
        let old = cipher().seal(b"k", b"before rotation").expect("seal");
        let rotated = TokenCipher::new(&KeyBytes::new([8; KEY_LEN]))
            .and_then(|c| c.also_opening_with(&KeyBytes::new([7; KEY_LEN])))
            .expect("cipher");
        assert_eq!(
            rotated.open(b"k", &old).expect("open").expose(),
            b"before rotation"
        );
        assert!(matches!(rotated.open(b"other", &old), Err(SealError::Open)));
        let new = rotated.seal(b"k", b"after").expect("seal");
        assert!(matches!(
            cipher().open(b"k", &new),
            Err(SealError::UnknownKey)
        ));
    }

    #[test]
    fn sealed_values_round_trip_through_serde_as_base64() {
        let sealed = cipher().seal(b"k", b"x").expect("seal");
        let json = serde_json::to_string(&sealed).expect("json");
        assert!(json.starts_with('"'));
        assert_eq!(serde_json::from_str::<Sealed>(&json).expect("back"), sealed);
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("seal.key");
        let first = TokenCipher::from_key_file(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read(&path).expect("read").len(), KEY_LEN);
        let sealed = first.seal(b"k", b"kept").expect("seal");
        let second = TokenCipher::from_key_file(&path).expect("reuse");
        assert_eq!(second.open(b"k", &sealed).expect("open").expose(), b"kept");
        assert_eq!(
            format!("{:?}", KeyBytes::new([7; KEY_LEN])),
            "KeyBytes([redacted])"
        );
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("short.key");
        fs::write(&path, [1u8; 16]).expect("write");
        assert!(matches!(
            TokenCipher::from_key_file(&path),
            Err(SealError::KeyLength { found: 16 })
        ));
    }
}
