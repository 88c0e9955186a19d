//! What the client keeps between runs: client registrations per
//! authorization server, the authorization server each configured client
//! credential is bound to, and tokens per server, authorization server and
//! client. Everything lives in a private subdirectory `mcpgate` (0700) of
//! the cache directory it is given, whose own mode is left alone; files are
//! readable by their owner only (0600) and written atomically. Refreshes
//! are serialised across processes with a lock file so that two processes
//! never spend the same refresh token.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::oauth::TokenSet;
use crate::secret::ClientSecret;

/// The store's subdirectory in the cache directory.
const SUBDIR: &str = "mcpgate";

/// A client identity at one authorization server. `Debug` shows no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// The authorization server's issuer: a registration is never used
    /// with another.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Client secret, when the server issued one.
    #[serde(default)]
    pub client_secret: Option<ClientSecret>,
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

/// Which authorization server a configured client credential (secret or
/// key) belongs to, recorded the first time it is used.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Binding {
    client_id: String,
    issuer: String,
}

/// The on-disk store.
#[derive(Debug, Clone)]
pub struct Store {
    /// The private subdirectory.
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

/// Creates `dir` (mode 0700 from the start) or makes an existing one
/// private. Only for directories the store owns, never the one a user
/// named.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `data` to `path` atomically: a uniquely named temporary file
/// (0600, created by `tempfile`) in the same directory, synced, renamed.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl Store {
    /// A store in the cache directory `cache_dir`: its files go in the
    /// private subdirectory `mcpgate` there, and `cache_dir` itself keeps
    /// its mode (it is created if missing).
    pub fn new(cache_dir: impl AsRef<Path>) -> Self {
        Self {
            dir: cache_dir.as_ref().join(SUBDIR),
        }
    }

    /// The platform's cache directory (`$XDG_CACHE_HOME`, else `~/.cache`
    /// on Linux; `~/Library/Caches` on macOS; the local app data folder on
    /// Windows), so that the store is `~/.cache/mcpgate` on Linux.
    pub fn default_dir() -> PathBuf {
        directories::BaseDirs::new()
            .map(|d| d.cache_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from(".cache"))
    }

    /// The store's own (private) directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn binding_path(&self, client_id: &str) -> PathBuf {
        self.dir
            .join("bindings")
            .join(format!("{}.json", key(&[client_id])))
    }

    /// The authorization server that the configured credentials of
    /// `client_id` were bound to, if they were.
    pub fn credential_issuer(&self, client_id: &str) -> Option<String> {
        Self::read::<Binding>(&self.binding_path(client_id))
            .filter(|b| b.client_id == client_id)
            .map(|b| b.issuer)
    }

    /// Binds the configured credentials of `client_id` to `issuer`.
    pub fn bind_credentials(&self, client_id: &str, issuer: &str) -> std::io::Result<()> {
        private_dir(&self.dir)?;
        let json = serde_json::to_vec_pretty(&Binding {
            client_id: client_id.to_owned(),
            issuer: issuer.to_owned(),
        })
        .map_err(std::io::Error::other)?;
        write_private(&self.binding_path(client_id), &json)
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
        private_dir(&self.dir)?;
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
        std::fs::create_dir_all(&dir).expect("mkdir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let store = Store::new(&dir);
        let t = CachedTokens {
            resource: "https://s/mcp".into(),
            issuer: "https://as".into(),
            client_id: "c".into(),
            scopes: vec![],
            token_endpoint: None,
            resource_indicator: None,
            tokens: TokenSet {
                access_token: crate::secret::AccessToken::new("at"),
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
            let mode_of =
                |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(
                mode_of(&dir.join("mcpgate")),
                0o700,
                "the store's own directory is private"
            );
            assert_eq!(mode_of(&dir.join("mcpgate/tokens")), 0o700);
            assert_eq!(mode_of(&dir), 0o755, "the named directory keeps its mode");
            let leftovers: Vec<_> = std::fs::read_dir(dir.join("mcpgate/tokens"))
                .expect("dir")
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
                .collect();
            assert!(leftovers.is_empty(), "no temporary files are left");
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

    #[test]
    fn credentials_stay_bound_to_their_issuer() {
        let dir = temp("binding");
        let store = Store::new(&dir);
        assert_eq!(store.credential_issuer("c"), None);
        store.bind_credentials("c", "https://a").expect("bind");
        assert_eq!(store.credential_issuer("c").as_deref(), Some("https://a"));
        assert_eq!(store.credential_issuer("other"), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
