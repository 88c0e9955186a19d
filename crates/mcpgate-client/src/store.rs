//! What the client keeps between runs: client registrations per
//! authorization server, and tokens per server, authorization server and
//! client. Files readable by their owner only (0600, in a 0700 directory),
//! written atomically; refreshes are serialised across processes with a
//! lock file so that two processes never spend the same refresh token.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::oauth::TokenSet;

/// A client identity at one authorization server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// The authorization server's issuer: a registration is never used
    /// with another.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Client secret, when the server issued one.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Registered redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// How the server said this client authenticates at its token
    /// endpoint (from the registration response).
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
}

/// Tokens for one server through one authorization server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedTokens {
    /// The MCP server (its resource identifier).
    pub resource: String,
    /// Issuer.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Scopes asked.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Where to refresh without discovering again.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// The RFC 8707 `resource` to send on refresh (none for Entra v2).
    #[serde(default)]
    pub resource_indicator: Option<String>,
    /// The tokens.
    pub tokens: TokenSet,
}

/// The on-disk store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct Lock(std::fs::File);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

impl Store {
    /// A store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default directory: `$XDG_CACHE_HOME/mcpgate`, else
    /// `~/.cache/mcpgate`.
    pub fn default_dir() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("mcpgate");
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".cache/mcpgate"),
            None => PathBuf::from(".mcpgate-cache"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn registration_path(&self, issuer: &str) -> PathBuf {
        self.dir
            .join("clients")
            .join(format!("{}.json", key(&[issuer])))
    }

    fn tokens_path(&self, resource: &str, issuer: &str, client_id: &str) -> PathBuf {
        self.dir
            .join("tokens")
            .join(format!("{}.json", key(&[resource, issuer, client_id])))
    }

    fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// The registration kept for `issuer`.
    pub fn registration(&self, issuer: &str) -> Option<Registration> {
        Self::read::<Registration>(&self.registration_path(issuer)).filter(|r| r.issuer == issuer)
    }

    /// Keeps a registration.
    pub fn save_registration(&self, r: &Registration) -> std::io::Result<()> {
        private_dir(&self.dir)?;
        let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        write_private(&self.registration_path(&r.issuer), &json)
    }

    /// Tokens kept for this server, issuer and client.
    pub fn tokens(&self, resource: &str, issuer: &str, client_id: &str) -> Option<CachedTokens> {
        Self::read::<CachedTokens>(&self.tokens_path(resource, issuer, client_id))
            .filter(|t| t.resource == resource && t.issuer == issuer && t.client_id == client_id)
    }

    /// Keeps tokens.
    pub fn save_tokens(&self, t: &CachedTokens) -> std::io::Result<()> {
        private_dir(&self.dir)?;
        let json = serde_json::to_vec_pretty(t).map_err(std::io::Error::other)?;
        write_private(
            &self.tokens_path(&t.resource, &t.issuer, &t.client_id),
            &json,
        )
    }

    /// Every token file kept for `resource`, with its path and when it was
    /// written. Unreadable or foreign files are skipped.
    fn entries_for<'a>(
        &self,
        resource: &'a str,
    ) -> impl Iterator<Item = (PathBuf, std::time::SystemTime, CachedTokens)> + 'a {
        std::fs::read_dir(self.dir.join("tokens"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(move |e| {
                let path = e.path();
                let tokens =
                    Self::read::<CachedTokens>(&path).filter(|t| t.resource == resource)?;
                let modified = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((path, modified, tokens))
            })
    }

    /// The most recently written tokens for `resource` (and `client_id`,
    /// when given), whatever the issuer.
    pub fn latest_tokens(&self, resource: &str, client_id: Option<&str>) -> Option<CachedTokens> {
        self.entries_for(resource)
            .filter(|(_, _, t)| client_id.is_none_or(|id| id == t.client_id))
            .max_by_key(|(_, modified, _)| *modified)
            .map(|(_, _, t)| t)
    }

    /// Forgets every token kept for `resource`; returns how many.
    pub fn remove_tokens(&self, resource: &str) -> usize {
        self.entries_for(resource)
            .filter(|(path, _, _)| std::fs::remove_file(path).is_ok())
            .count()
    }

    /// Takes the exclusive lock for this server, issuer and client,
    /// waiting for another process that holds it.
    pub fn lock(&self, resource: &str, issuer: &str, client_id: &str) -> std::io::Result<Lock> {
        let dir = self.dir.join("locks");
        private_dir(&dir)?;
        let path = dir.join(format!("{}.lock", key(&[resource, issuer, client_id])));
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path)?;
        file.lock()?;
        Ok(Lock(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcpgate-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn files_are_private_and_keyed() {
        let dir = temp("private");
        let store = Store::new(&dir);
        let t = CachedTokens {
            resource: "https://s/mcp".into(),
            issuer: "https://as".into(),
            client_id: "c".into(),
            scopes: vec![],
            token_endpoint: None,
            resource_indicator: None,
            tokens: TokenSet {
                access_token: "at".into(),
                token_type: "Bearer".into(),
                refresh_token: None,
                scope: None,
                expires_at: None,
            },
        };
        store.save_tokens(&t).expect("save");
        assert!(store.tokens("https://s/mcp", "https://as", "c").is_some());
        assert!(
            store
                .tokens("https://s/mcp", "https://other", "c")
                .is_none()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = store.tokens_path("https://s/mcp", "https://as", "c");
            let mode = std::fs::metadata(path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(dir.join("tokens"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert_eq!(store.remove_tokens("https://s/mcp"), 1);
        assert!(store.tokens("https://s/mcp", "https://as", "c").is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn registrations_never_cross_issuers() {
        let dir = temp("reg");
        let store = Store::new(&dir);
        store
            .save_registration(&Registration {
                issuer: "https://a".into(),
                client_id: "ca".into(),
                client_secret: None,
                redirect_uris: vec![],
                token_endpoint_auth_method: None,
            })
            .expect("save");
        assert_eq!(
            store.registration("https://a").map(|r| r.client_id),
            Some("ca".into())
        );
        assert!(store.registration("https://b").is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
