//! Small helpers: randomness, identifiers, hashes, timestamps, private files.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::IdpError;

/// `n` random bytes from the system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The system RNG fails only when the kernel cannot give entropy, and
    // then nothing secure can go on.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random number generator failed");
    buf
}

/// An unguessable opaque token (256 bits, base64url).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// base64url without padding.
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256, base64url: how opaque tokens are keyed in memory, so that the
/// state never holds a usable token.
pub fn token_hash(token: &str) -> String {
    b64url(Sha256::digest(token.as_bytes()))
}

/// SHA-256, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Formats 16 bytes as a GUID with the version-4 and variant bits set.
fn guid_from(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random GUID.
pub fn new_guid() -> String {
    guid_from(random_bytes::<16>())
}

/// A GUID derived from `parts`, stable across restarts (user and service
/// principal object ids).
pub fn stable_guid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    guid_from(b)
}

/// Seconds since the epoch by the system clock.
pub fn unix_now_system() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Entra's error timestamp: `2024-05-01 10:20:30Z`.
pub fn entra_timestamp(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Writes `data` to `path` atomically, readable by the owner only: the
/// data directory holds private keys and secrets. The temporary file has
/// an unpredictable name, is created 0600 with `O_EXCL` (never through a
/// planted symlink) in the same directory, and is renamed over `path`.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), IdpError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| IdpError::io(dir, e))?;
    // tempfile creates its files 0600 on Unix.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| IdpError::io(dir, e))?;
    file.write_all(data)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| IdpError::io(file.path(), e))?;
    file.persist(path)
        .map_err(|e| IdpError::io(path, e.error))?;
    Ok(())
}

/// Constant-time equality for secrets and hashes.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_well_formed_and_stable() {
        let g = stable_guid(&["tenant", "alice"]);
        assert_eq!(g, stable_guid(&["tenant", "alice"]));
        assert_ne!(g, stable_guid(&["tenant", "bob"]));
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
        assert_ne!(new_guid(), new_guid());
    }

    #[test]
    fn timestamp_has_entra_shape() {
        assert_eq!(entra_timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(entra_timestamp(1_700_000_000), "2023-11-14 22:13:20Z");
    }

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("secret");
        write_private(&path, b"one").expect("write");
        write_private(&path, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
