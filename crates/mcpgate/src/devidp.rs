//! Wiring of the development identity provider into the binary: where its
//! state lives, which directory it serves, how it listens, and what
//! `mcpgate serve` trusts when it embeds it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use mcpgate_devidp::store::Store;
use mcpgate_devidp::{Directory, Exposure, IdpConfig, IdpInfo, IdpOptions, RunningIdp, TlsMode};

use crate::cli::{IdpFlags, IdpPlace};
use crate::config::{RawConfig, RawIdp};

/// The embedded IdP's usual port; a server on port 0 gets one on port 0.
const DEFAULT_IDP_PORT: u16 = 8443;

/// The state directory: flag or `MCPGATE_DATA_DIR`, config, then the
/// platform's data directory (`$XDG_DATA_HOME`, else `~/.local/share`, on
/// Linux).
pub fn data_dir(flags: &IdpPlace, raw: &RawConfig) -> PathBuf {
    if let Some(d) = flags.data_dir.clone().or_else(|| raw.data_dir.clone()) {
        return d;
    }
    match directories::BaseDirs::new() {
        Some(dirs) => dirs.data_dir().join("mcpgate"),
        None => PathBuf::from(".mcpgate"),
    }
}

/// The directory to serve: a file, or the built-in one.
fn directory(flags: &IdpPlace, raw: &RawIdp) -> anyhow::Result<IdpConfig> {
    match flags.idp_directory.as_ref().or(raw.directory.as_ref()) {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the IdP directory {}", path.display()))?;
            IdpConfig::from_toml_str(&text).with_context(|| path.display().to_string())
        }
        None => Ok(IdpConfig::builtin()),
    }
}

/// Where the IdP listens: the address given explicitly (`mcpgate idp
/// --bind`, `--idp-bind`, `[idp] bind`), else loopback, whatever the MCP
/// server's `--bind` says: a server opened to the network must not take a
/// password-less IdP with it. A server on port 0 (tests, scripts) gets an
/// IdP on a free port too.
fn idp_bind(explicit: Option<SocketAddr>, server_bind: Option<SocketAddr>) -> SocketAddr {
    explicit.unwrap_or_else(|| {
        let port = match server_bind {
            Some(b) if b.port() == 0 => 0,
            _ => DEFAULT_IDP_PORT,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    })
}

/// Starts the IdP with its grants in SQLite in its data directory (see
/// [`start_with_store`]).
pub async fn start(
    flags: &IdpFlags,
    raw: &RawConfig,
    bind: Option<SocketAddr>,
    server_bind: Option<SocketAddr>,
) -> anyhow::Result<RunningIdp> {
    start_with_store(flags, raw, bind, server_bind, None).await
}

/// The file the IdP keeps its grants in when it is given no store.
fn grants_file(idp_dir: &Path) -> PathBuf {
    idp_dir.join("grants.db")
}

/// Opens `<idp_dir>/grants.db`, creating the directory.
async fn open_grants(idp_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    std::fs::create_dir_all(idp_dir).with_context(|| format!("creating {}", idp_dir.display()))?;
    let path = grants_file(idp_dir);
    mcpgate_devidp::store::open(
        &format!("sqlite:{}", path.display()),
        mcpgate_devidp::store::Options::default(),
    )
    .await
    .with_context(|| format!("opening the IdP's grant store {}", path.display()))
}

/// Starts the IdP. `server_bind` is the MCP server's address when it
/// embeds the IdP. Its authorization codes, refresh tokens and consents
/// live in `store` (`serve` passes its own), else in SQLite at
/// `<data_dir>/idp/grants.db`: either way a restart signs nobody out.
pub async fn start_with_store(
    flags: &IdpFlags,
    raw: &RawConfig,
    bind: Option<SocketAddr>,
    server_bind: Option<SocketAddr>,
    store: Option<Arc<dyn Store>>,
) -> anyhow::Result<RunningIdp> {
    let settings = &raw.idp;
    let explicit = bind.or(flags.place.idp_bind).or(settings.bind);
    let bind = idp_bind(explicit, server_bind);
    if explicit.is_none()
        && let Some(server) = server_bind.filter(|b| !b.ip().is_loopback())
    {
        eprintln!(
            "note: the embedded development IdP listens on {bind} (loopback only), although the server listens on {server}; to expose it, set --idp-bind or [idp] bind (then every sign-in needs a password)"
        );
    }
    let tls = match (&settings.tls_cert, &settings.tls_key, settings.plain_http) {
        (_, _, true) => TlsMode::PlainHttp,
        (Some(cert), Some(key), false) => TlsMode::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None, false) => TlsMode::Generate,
        _ => anyhow::bail!("[idp] tls_cert and tls_key go together"),
    };
    let idp_dir = data_dir(&flags.place, raw).join("idp");
    let store = match store {
        Some(s) => s,
        None => open_grants(&idp_dir).await?,
    };
    let mut options = IdpOptions::new(idp_dir.clone());
    options.store = Some(store);
    options.bind = bind;
    options.tls = tls;
    options.auto_approve = flags.auto_approve(settings);
    let config = directory(&flags.place, settings)?;
    let running = mcpgate_devidp::start(config, options)
        .await
        .context("starting the development identity provider")?;
    announce(&idp_dir, running.info());
    Ok(running)
}

/// Where a running IdP says where it is, for `mcpgate stdio` started with
/// no configuration on the same machine.
pub const RUNNING_FILE: &str = "running.json";

/// What a running IdP tells local tools: its authority, CA and public
/// client. No secret.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Running {
    /// The authority, as MSAL takes it.
    pub authority: String,
    /// Its TLS certificate's CA.
    pub ca_file: Option<PathBuf>,
    /// The public client's id.
    pub client_id: String,
    /// The process serving it.
    pub pid: u32,
}

fn announce(idp_dir: &Path, info: &IdpInfo) {
    let Some(client) = public_client(info) else {
        return;
    };
    let running = Running {
        authority: info.authority.clone(),
        ca_file: info.ca_file.clone(),
        client_id: client.client_id.clone(),
        pid: std::process::id(),
    };
    let written = serde_json::to_vec_pretty(&running)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(idp_dir.join(RUNNING_FILE), json));
    if let Err(e) = written {
        tracing::debug!(error = %e, "could not record where the development IdP runs");
    }
}

/// The development IdP running on this machine, if its data directory says
/// one is (and its process is alive).
pub fn running_here(data_dir: &Path) -> Option<Running> {
    let text = std::fs::read(data_dir.join("idp").join(RUNNING_FILE)).ok()?;
    let running: Running = serde_json::from_slice(&text).ok()?;
    let alive = Path::new(&format!("/proc/{}", running.pid)).exists();
    let local =
        url::Url::parse(&running.authority).is_ok_and(|u| mcpgate_resource::is_loopback_host(&u));
    (alive && local).then_some(running)
}

/// The first API the directory exposes, as `(audience id, full scope)`.
pub fn api_of(info: &IdpInfo) -> Option<(String, String)> {
    info.clients
        .iter()
        .find(|c| !c.scopes.is_empty())
        .map(|c| (c.client_id.clone(), c.scopes[0].clone()))
}

/// Points `raw` at the embedded IdP: its issuer, the API's audiences and
/// scope, and the IdP as the authorization server.
pub fn trust(raw: &mut RawConfig, info: &IdpInfo) -> anyhow::Result<()> {
    let (app_id, scope) =
        api_of(info).context("the IdP directory exposes no API scope for the MCP server")?;
    trust_issuer(raw, &info.issuer, app_id, scope);
    Ok(())
}

/// What `serve` would trust on this configuration, without starting the
/// IdP: `explain` and `check` with no issuer configured use it, so that a
/// token from the quick start explains itself. Returns the IdP's CA file,
/// when it has made one, for fetching its keys.
pub fn trust_as_serve_would(
    flags: &IdpPlace,
    raw: &mut RawConfig,
) -> anyhow::Result<Option<PathBuf>> {
    let dir = Directory::from_config(&directory(flags, &raw.idp)?)?;
    let api = dir
        .apps
        .iter()
        .find(|a| !a.scopes.is_empty())
        .context("the IdP directory exposes no API scope for the MCP server")?;
    let scope = api.full_scopes().swap_remove(0);
    let bind = idp_bind(flags.idp_bind.or(raw.idp.bind), None);
    let tls = !raw.idp.plain_http;
    let issuer = format!(
        "{}/{}/v2.0",
        mcpgate_devidp::base_url(bind, tls),
        dir.default_tenant().id
    );
    trust_issuer(raw, &issuer, api.client_id.clone(), scope);
    let ca = data_dir(flags, raw).join("idp/tls/ca.pem");
    Ok((tls && raw.idp.tls_cert.is_none() && ca.exists()).then_some(ca))
}

fn trust_issuer(raw: &mut RawConfig, issuer: &str, app_id: String, scope: String) {
    raw.auth.issuers = vec![issuer.to_owned()];
    // The scope is `<identifier URI>/<name>`: v1.0 tokens carry that URI,
    // v2.0 tokens the app id.
    let identifier = scope
        .rsplit_once('/')
        .map_or_else(|| format!("api://{app_id}"), |(uri, _)| uri.to_owned());
    raw.auth.audiences = vec![identifier, app_id];
    raw.auth.required_scopes = vec![scope];
    raw.auth.authorization_servers = vec![issuer.to_owned()];
}

/// A public client a person can sign in with.
pub fn public_client(info: &IdpInfo) -> Option<&mcpgate_devidp::ClientInfo> {
    info.clients.iter().find(|c| c.public)
}

/// What to print at start so that a person can sign in.
pub fn print_summary(info: &IdpInfo) {
    if info.exposure == Exposure::Network {
        eprintln!(
            "WARNING: the development identity provider listens on {} and is reachable beyond this machine.\n\
             WARNING: no user is listed, every sign-in needs a password, auto-approve is refused.\n\
             WARNING: it is a development IdP: do not use it for anything that matters.",
            info.bind
        );
    }
    eprintln!("development identity provider (Entra ID v2 compatible):");
    eprintln!("  authority: {}", info.authority);
    eprintln!("  issuer:    {}", info.issuer);
    if let Some(ca) = &info.ca_file {
        eprintln!(
            "  CA file:   {}   (trust it: --ca-file / MCPGATE_CA_FILE / REQUESTS_CA_BUNDLE)",
            ca.display()
        );
    }
    for c in &info.clients {
        let kind = if c.public { "public" } else { "confidential" };
        let scopes = if c.scopes.is_empty() {
            String::new()
        } else {
            format!(", exposes {}", c.scopes.join(" "))
        };
        let secret = c
            .secret_file
            .as_ref()
            .map(|p| format!(", secret in {}", p.display()))
            .unwrap_or_default();
        eprintln!(
            "  client:    {} {} ({kind}{scopes}{secret})",
            c.client_id, c.name
        );
    }
    if !info.users.is_empty() {
        let users: Vec<&str> = info.users.iter().map(|u| u.username.as_str()).collect();
        eprintln!(
            "  users:     {} (password {}; or pick one on the sign-in page)",
            users.join(", "),
            mcpgate_devidp::directory::DEFAULT_PASSWORD
        );
    }
    eprintln!("  device code sign-in page: {}", info.device_login_url);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_idp_stays_on_loopback_whatever_the_server_binds() {
        let open: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(
            idp_bind(None, Some(open)),
            "127.0.0.1:8443".parse().expect("addr")
        );
        let tests: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        assert_eq!(
            idp_bind(None, Some(tests)),
            "127.0.0.1:0".parse().expect("addr")
        );
        let v6: SocketAddr = "[::]:8080".parse().expect("addr");
        assert!(idp_bind(None, Some(v6)).ip().is_loopback());
        // Only an explicit IdP address takes it elsewhere.
        let explicit: SocketAddr = "0.0.0.0:9443".parse().expect("addr");
        assert_eq!(idp_bind(Some(explicit), Some(open)), explicit);
    }

    #[tokio::test]
    async fn the_idp_alone_keeps_its_grants_in_sqlite_in_its_data_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let flags = IdpFlags {
            place: IdpPlace {
                data_dir: Some(dir.path().to_owned()),
                idp_bind: None,
                idp_directory: None,
            },
            idp_auto_approve: None,
        };
        let bind = Some("127.0.0.1:0".parse().expect("addr"));
        let idp = start(&flags, &RawConfig::default(), bind, None)
            .await
            .expect("IdP starts");
        idp.shutdown().await;
        let file = grants_file(&dir.path().join("idp"));
        assert!(file.is_file(), "{} was not created", file.display());
    }
}
