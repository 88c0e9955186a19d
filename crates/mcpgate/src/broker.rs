//! Wiring of the broker into `mcpgate serve`: which mode, which store,
//! which upstream client and credential, and the `get_user_details` source
//! that acts for the user with the broker's upstream grant.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use mcpgate_broker::cimd::{CimdFetcher, CimdOptions};
use mcpgate_broker::consent_cookie::ConsentKey;
use mcpgate_broker::metadata::Issuer;
use mcpgate_broker::upstream::{Upstream, UpstreamConfig, UpstreamCredential};
use mcpgate_broker::{Broker, BrokerConfig};
use mcpgate_client::assertion::ClientKey;
use mcpgate_client::secret::ClientSecret;
use mcpgate_devidp::IdpInfo;
use mcpgate_keys::KeyRing;
use mcpgate_resource::ResourceSettings;
use mcpgate_resource::challenge::ClaimsChallenge;
use mcpgate_resource::downstream::{
    DownstreamError, DownstreamFuture, UserDetails, UserDetailsSource,
};
use mcpgate_resource::gateway::credential::{
    CallerToken, CredentialError, CredentialFuture, TokenSource, UpstreamToken,
};
use mcpgate_resource::session::{SessionFuture, SharedSessions};
use mcpgate_store::{IdentityKey, KeyBytes, SessionId, Store, TokenCipher};
use mcpgate_token::Principal;

use crate::config::{BrokerMode, RawBroker, RawConfig};
use crate::{devidp, outbound};

/// The environment variable a client secret may come from (never a flag:
/// `ps` would show it).
const SECRET_ENV: &str = "MCPGATE_BROKER_CLIENT_SECRET";
/// Where Azure workload identity puts its federated token.
const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// Whether `serve` runs the broker: by configuration, else whenever mcpgate
/// knows an upstream client for itself (the embedded IdP's, or a
/// configured one).
pub fn mode(raw: &RawConfig, embedded: bool) -> BrokerMode {
    raw.broker
        .mode
        .unwrap_or(if embedded || raw.broker.client_id.is_some() {
            BrokerMode::Broker
        } else {
            BrokerMode::Direct
        })
}

/// The store URL: `--store`, config, else SQLite in the data directory.
pub fn store_url(flag: Option<&str>, raw: &RawConfig, data_dir: &Path) -> String {
    flag.map(str::to_owned)
        .or_else(|| raw.store.clone())
        .unwrap_or_else(|| format!("sqlite:{}", data_dir.join("mcpgate.db").display()))
}

/// Opens the store, saying which one in the error.
pub async fn open_store(url: &str, raw: &RawConfig) -> anyhow::Result<Arc<dyn Store>> {
    // The URL may carry a Redis password: name the scheme only.
    let scheme = url.split(':').next().unwrap_or_default();
    if let Some(path) = url.strip_prefix("sqlite:").map(Path::new)
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        create_private_dir(dir)?;
    }
    mcpgate_store::open(url, store_options(raw))
        .await
        .with_context(|| format!("opening the {scheme} store"))
}

/// The store's options from the configuration: the Redis key prefix, and
/// how much of the audit trail it keeps.
fn store_options(raw: &RawConfig) -> mcpgate_store::Options {
    let mut options = mcpgate_store::Options::default();
    if let Some(prefix) = &raw.store_prefix {
        options.key_prefix = prefix.clone();
    }
    if let Some(max) = raw.audit.max_records {
        options.limits.max_audit_records = max.max(1);
    }
    if let Some(days) = raw.audit.max_age_days {
        options.limits.audit_max_age = std::time::Duration::from_secs(days.max(1) * 86_400);
    }
    options
}

/// Creates `dir` (and its parents) readable by its owner only: it will
/// hold grants and keys.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The broker's credential at the upstream: exactly one of a secret (file,
/// or `MCPGATE_BROKER_CLIENT_SECRET`), a certificate key, or a federated
/// token file (`AZURE_FEDERATED_TOKEN_FILE` by default); with the embedded
/// IdP and none configured, the secret it generated for `client_id`.
pub fn credential(
    raw: &RawBroker,
    embedded: Option<&IdpInfo>,
    client_id: &str,
) -> anyhow::Result<UpstreamCredential> {
    let federated = raw
        .federated_token_file
        .clone()
        .or_else(|| std::env::var_os(AZURE_FEDERATED_TOKEN_FILE).map(PathBuf::from));
    let secret_env = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty());
    let configured = [
        raw.client_secret_file.is_some() || secret_env.is_some(),
        raw.certificate_key_file.is_some(),
        federated.is_some(),
    ];
    if configured.iter().filter(|c| **c).count() > 1 {
        bail!(
            "[broker] takes one credential: a client secret (client_secret_file or {SECRET_ENV}), certificate_key_file, or federated_token_file"
        );
    }
    if let Some(path) = &raw.certificate_key_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the certificate key {}", path.display()))?;
        let key = ClientKey::from_pem(&pem, None, None)
            .with_context(|| format!("the certificate key {}", path.display()))?;
        return Ok(UpstreamCredential::Certificate(key));
    }
    if let Some(path) = federated {
        return Ok(UpstreamCredential::FederatedTokenFile(path));
    }
    if let Some(path) = &raw.client_secret_file {
        return Ok(UpstreamCredential::Secret(read_secret(path)?));
    }
    if let Some(secret) = secret_env {
        return Ok(UpstreamCredential::Secret(ClientSecret::new(secret)));
    }
    let generated = embedded
        .and_then(|info| info.clients.iter().find(|c| c.client_id == client_id))
        .and_then(|c| c.secret_file.as_deref());
    match generated {
        Some(path) => Ok(UpstreamCredential::Secret(read_secret(path)?)),
        None => bail!(
            "[broker] needs a credential for client {client_id}: client_secret_file, {SECRET_ENV}, certificate_key_file, or federated_token_file"
        ),
    }
}

fn read_secret(path: &Path) -> anyhow::Result<ClientSecret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the client secret file {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("the client secret file {} is empty", path.display());
    }
    Ok(ClientSecret::new(secret))
}

/// What `serve` hands the broker besides its configuration.
#[derive(Debug)]
pub struct Attach<'a> {
    /// The embedded IdP, when `serve` started one.
    pub idp: Option<&'a IdpInfo>,
    /// The embedded IdP's CA, trusted for the upstream calls.
    pub idp_ca: Option<&'a Path>,
    /// Where the broker keeps its keys.
    pub data_dir: &'a Path,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Development auto-approve (loopback only).
    pub auto_approve: Option<String>,
    /// Where sign-ins and token decisions are recorded.
    pub audit: Option<Arc<dyn mcpgate_audit::AuditSink>>,
}

/// Starts the broker and points the server at it: the metadata names it,
/// its tokens are trusted beside the upstream's (which stay accepted, as
/// they would be from Entra), and `get_user_details` acts through its
/// upstream grants.
pub async fn attach(
    raw: &mut RawConfig,
    settings: &mut ResourceSettings,
    with: Attach<'_>,
) -> anyhow::Result<Arc<Broker>> {
    let ca_files: Vec<PathBuf> = raw
        .ca_file
        .iter()
        .cloned()
        .chain(with.idp_ca.map(Path::to_path_buf))
        .collect();
    let http = outbound::http_client(ca_files.iter().map(PathBuf::as_path), raw.fetch_timeout())?;
    let issuer = settings
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let broker = start(Setup {
        raw,
        idp: with.idp,
        data_dir: with.data_dir,
        store: with.store,
        http: http.clone(),
        ca_files,
        issuer: &issuer,
        resource: settings.mcp_url(),
        auto_approve: with.auto_approve,
        audit: with.audit,
    })
    .await?;
    let broker_issuer = broker.config().issuer.as_str().to_owned();
    raw.auth.issuers.push(broker_issuer.clone());
    raw.auth.audiences.push(settings.mcp_url());
    raw.auth.authorization_servers = vec![broker_issuer];
    settings.user_details = Some(Arc::new(GraphProfile {
        broker: broker.clone(),
        me_url: graph_me_url(raw, with.idp),
        scopes: vec![GRAPH_USER_READ.to_owned()],
        http,
    }));
    Ok(broker)
}

/// What the broker needs from `serve`.
#[derive(Debug)]
pub struct Setup<'a> {
    /// The configuration.
    pub raw: &'a RawConfig,
    /// The embedded IdP, when `serve` started one.
    pub idp: Option<&'a IdpInfo>,
    /// Where the broker keeps its keys.
    pub data_dir: &'a Path,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The outbound HTTP client (trusting the configured and the IdP's CA).
    pub http: reqwest::Client,
    /// Extra CA files (for the CIMD fetcher's own client).
    pub ca_files: Vec<PathBuf>,
    /// The broker's issuer: the server's public base URL.
    pub issuer: &'a str,
    /// The protected resource tokens are for (`…/mcp`).
    pub resource: String,
    /// Development auto-approve (loopback only; the broker refuses it
    /// otherwise).
    pub auto_approve: Option<String>,
    /// Where sign-ins and token decisions are recorded.
    pub audit: Option<Arc<dyn mcpgate_audit::AuditSink>>,
}

/// Starts the broker: the upstream discovered, its keys and secrets opened
/// (created on first start, mode 0600), its configuration compiled.
/// mcpgate's upstream issuer and its client id there: `[broker]`, else the
/// embedded IdP's API, else `[auth.entra]`.
fn upstream_client_id(raw: &RawConfig, idp: Option<&IdpInfo>) -> anyhow::Result<(String, String)> {
    let api = idp.and_then(devidp::api_of);
    let issuer = raw
        .broker
        .issuer
        .clone()
        .or_else(|| idp.map(|i| i.issuer.clone()))
        .or_else(|| raw.entra_v2_issuer())
        .context("[broker] issuer is not set: name the upstream issuer (or use [auth.entra])")?;
    let client_id = raw
        .broker
        .client_id
        .clone()
        .or_else(|| api.map(|(id, _)| id))
        .or_else(|| raw.auth.entra.as_ref().map(|e| e.app_id.clone()))
        .context("[broker] client_id is not set: mcpgate's application (client) id upstream")?;
    Ok((issuer, client_id))
}

pub async fn start(setup: Setup<'_>) -> anyhow::Result<Arc<Broker>> {
    let raw = setup.raw;
    let api = setup.idp.and_then(devidp::api_of);
    let (upstream_issuer, client_id) = upstream_client_id(raw, setup.idp)?;
    // The upstream token must be for this API (On-Behalf-Of exchanges it):
    // by default, the API scope the server requires of tokens.
    let scopes: Vec<String> = if raw.broker.scopes.is_empty() {
        api.map(|(_, scope)| vec![scope])
            .or_else(|| raw.auth.entra.as_ref().map(|e| vec![e.api_scope()]))
            .unwrap_or_else(|| {
                raw.auth
                    .required_scopes
                    .iter()
                    .filter(|s| s.contains("://"))
                    .cloned()
                    .collect()
            })
    } else {
        raw.broker.scopes.clone()
    };
    if scopes.is_empty() {
        bail!(
            "[broker] scopes is not set: name the API scope to ask the upstream for (api://<app-id>/mcp:tools)"
        );
    }
    let credential = credential(&raw.broker, setup.idp, &client_id)?;
    let upstream = Upstream::discover(
        UpstreamConfig {
            issuer: upstream_issuer.clone(),
            client_id,
            credential,
            resource: mcpgate_client::scopes::names_every_api_scope(&setup.resource, &scopes)
                .then(|| setup.resource.clone()),
            scopes,
        },
        setup.http,
    )
    .await
    .with_context(|| format!("discovering the upstream identity provider {upstream_issuer}"))?;

    let dir = setup.data_dir.join("broker");
    let keys = KeyRing::open(&dir).context("the broker's signing keys")?;
    let cipher = TokenCipher::from_key_file(&dir.join("upstream-tokens.key"))
        .context("the key that seals upstream tokens")?;
    let consent_secret =
        KeyBytes::from_file(&dir.join("consent.key")).context("the consent key")?;
    let consent_key = ConsentKey::from_bytes(consent_secret.expose()).context("the consent key")?;

    let issuer = Issuer::new(setup.issuer).context("the broker's issuer")?;
    let mut config = BrokerConfig::new(issuer, setup.resource);
    config.pre_authorized_clients = raw.broker.pre_authorized.clone();
    config.dev_auto_approve = setup.auto_approve;
    config.audit = setup.audit;
    if let Some(secs) = raw.broker.access_token_lifetime_secs {
        config.access_token_lifetime = std::time::Duration::from_secs(secs);
    }
    if config.issuer.is_loopback() {
        // A server on loopback is a development machine: its MCP clients'
        // metadata documents are served from loopback too.
        config.cimd = CimdOptions::development();
    }
    let ca_files = setup.ca_files;
    let cimd = CimdFetcher::new(config.cimd.clone(), move || {
        outbound::client_builder(ca_files.iter().map(PathBuf::as_path), CIMD_TIMEOUT)
            .unwrap_or_else(|_| reqwest::Client::builder())
    })
    .context("the Client ID Metadata Document fetcher")?;
    Broker::new(
        config,
        setup.store,
        upstream,
        keys,
        consent_key,
        cipher,
        cimd,
    )
    .context("starting the broker")
}

/// The Graph permission `get_user_details` asks for.
pub const GRAPH_USER_READ: &str = "https://graph.microsoft.com/User.Read";

/// Graph's `/me`: configured, else the embedded IdP's, else Microsoft
/// Graph's.
pub fn graph_me_url(raw: &RawConfig, idp: Option<&IdpInfo>) -> String {
    if let Some(url) = &raw.broker.graph_url {
        return url.to_string();
    }
    match idp {
        Some(info) => format!("{}/v1.0/me", info.base_url),
        None => "https://graph.microsoft.com/v1.0/me".to_owned(),
    }
}

/// Expired records cost room until swept: SQLite has no TTLs of its own
/// (Redis does; sweeping there is cheap and harmless).
pub fn purge_periodically(store: Arc<dyn Store>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            every.tick().await;
            match store.purge_expired().await {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "expired records swept"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not sweep expired records"),
            }
        }
    });
}

/// How long one Client ID Metadata Document fetch may take at most (the
/// fetcher's own, shorter limit applies first).
const CIMD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `get_user_details` through the broker: the user's upstream grant,
/// exchanged On-Behalf-Of for Graph, then Graph's `/me`.
#[derive(Debug)]
pub struct GraphProfile {
    /// The broker holding the grants.
    pub broker: Arc<Broker>,
    /// Graph's `/me` (the dev IdP's when embedded).
    pub me_url: String,
    /// The scopes asked for Graph.
    pub scopes: Vec<String>,
    /// The outbound client.
    pub http: reqwest::Client,
}

impl UserDetailsSource for GraphProfile {
    fn user_details<'a>(&'a self, caller: &'a Principal) -> DownstreamFuture<'a> {
        Box::pin(async move {
            let token = grant_token(&self.broker, caller, &self.scopes)
                .await
                .map_err(|e| match e {
                    CredentialError::NoGrant => DownstreamError::NoGrant,
                    CredentialError::ClaimsChallenge(c) => DownstreamError::ClaimsChallenge(c),
                    CredentialError::Unavailable(e) => DownstreamError::Unavailable(e),
                })?;
            let resp = self
                .http
                .get(&self.me_url)
                .bearer_auth(token.secret())
                .send()
                .await
                .map_err(|e| DownstreamError::Unavailable(format!("{}: {e}", self.me_url)))?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                && let Some(claims) = graph_claims_challenge(resp.headers())
            {
                // Graph itself wants more of the sign-in (Continuous Access
                // Evaluation, an authentication context): relayed as is.
                return Err(DownstreamError::ClaimsChallenge(claims));
            }
            if !status.is_success() {
                return Err(DownstreamError::Refused(format!(
                    "{} answered HTTP {status}",
                    self.me_url
                )));
            }
            resp.json::<UserDetails>()
                .await
                .map_err(|e| DownstreamError::Unavailable(format!("{}: {e}", self.me_url)))
        })
    }
}

/// A token for `scopes` for the user `caller` stands for: On-Behalf-Of
/// with the user's upstream grant the broker holds.
async fn grant_token(
    broker: &Broker,
    caller: &Principal,
    scopes: &[String],
) -> Result<UpstreamToken, CredentialError> {
    let token = broker
        .upstream_token_for(caller, scopes)
        .await
        .map_err(|e| {
            if let Some(claims) = relayable(e.claims_challenge()) {
                return CredentialError::ClaimsChallenge(claims);
            }
            if e.needs_sign_in() {
                tracing::info!(target: "mcpgate::downstream", error = %e, "no usable grant");
                CredentialError::NoGrant
            } else {
                CredentialError::Unavailable(e.to_string())
            }
        })?;
    Ok(upstream_token(
        token.access_token.secret(),
        token.expires_at,
    ))
}

/// The claims of an identity provider's refusal, as the MCP endpoint
/// relays them; `None` (an ordinary failure) past the relayed size.
fn relayable(claims: Option<mcpgate_client::claims::Claims>) -> Option<ClaimsChallenge> {
    let claims = claims?;
    let relayed = ClaimsChallenge::new(claims.as_json());
    if relayed.is_none() {
        tracing::warn!(target: "mcpgate::downstream", len = claims.as_json().len(), "a claims challenge too large to relay: answered as a failure");
    }
    relayed
}

/// The claims of a downstream API's `WWW-Authenticate: Bearer
/// error="insufficient_claims", claims="…"` (Microsoft Graph's form).
fn graph_claims_challenge(headers: &reqwest::header::HeaderMap) -> Option<ClaimsChallenge> {
    let challenge = mcpgate_client::challenge::parse(
        headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )?;
    if !challenge.is_insufficient_claims() {
        return None;
    }
    relayable(challenge.claims()?.ok())
}

// A token for a gateway's upstream, expiring at `expires_at` (Unix seconds).
fn upstream_token(secret: &str, expires_at: Option<u64>) -> UpstreamToken {
    UpstreamToken::new(
        secret.to_owned(),
        expires_at.map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)),
    )
}

/// Tokens for a gateway's HTTP upstream, for the caller: On-Behalf-Of
/// with the user's upstream grant the broker holds.
#[derive(Debug)]
pub struct BrokerObo {
    /// The broker.
    pub broker: Arc<Broker>,
    /// The upstream API's scopes.
    pub scopes: Vec<String>,
}

impl TokenSource for BrokerObo {
    fn token_for<'a>(
        &'a self,
        caller: &'a Principal,
        _presented: Option<&'a CallerToken>,
    ) -> CredentialFuture<'a> {
        Box::pin(grant_token(&self.broker, caller, &self.scopes))
    }
}

/// Tokens for a gateway's HTTP upstream in direct mode: the caller's own
/// token, which the identity provider issued to mcpgate's API, exchanged
/// On-Behalf-Of by mcpgate as that API's confidential client.
#[derive(Debug)]
pub struct DirectObo {
    /// mcpgate's confidential client upstream.
    pub client: Arc<Upstream>,
    /// The upstream API's scopes.
    pub scopes: Vec<String>,
}

impl TokenSource for DirectObo {
    fn token_for<'a>(
        &'a self,
        caller: &'a Principal,
        presented: Option<&'a CallerToken>,
    ) -> CredentialFuture<'a> {
        Box::pin(async move {
            // Entra refuses it (AADSTS7000114); asking would only add a
            // round trip.
            if caller.kind == mcpgate_token::TokenKind::AppOnly {
                return Err(CredentialError::Unavailable(
                    "On-Behalf-Of acts for a user, and this caller is an application acting for itself (Entra would refuse it: AADSTS7000114); give the upstream an application token of its own instead".into(),
                ));
            }
            let Some(presented) = presented else {
                return Err(CredentialError::NoGrant);
            };
            let set = self
                .client
                .on_behalf_of(presented.secret(), &self.scopes)
                .await
                .map_err(|e| match relayable(e.claims_challenge()) {
                    // The caller's token does not satisfy a Conditional
                    // Access policy of the upstream API's (MFA): the client
                    // signs in again with the claims, and presents the
                    // new token. Nothing was issued, nothing is kept.
                    Some(claims) => CredentialError::ClaimsChallenge(claims),
                    None => CredentialError::Unavailable(e.to_string()),
                })?;
            Ok(upstream_token(set.access_token.secret(), set.expires_at))
        })
    }

    fn exchanges_caller_token(&self) -> bool {
        true
    }
}

/// mcpgate's confidential client at the upstream identity provider, for
/// On-Behalf-Of in direct mode: the same issuer, client id and credential
/// the broker would use.
pub async fn direct_client(
    raw: &RawConfig,
    idp: Option<&IdpInfo>,
    idp_ca: Option<&Path>,
) -> anyhow::Result<Arc<Upstream>> {
    let (issuer, client_id) = upstream_client_id(raw, idp)?;
    let credential = credential(&raw.broker, idp, &client_id)?;
    let ca_files: Vec<PathBuf> = raw
        .ca_file
        .iter()
        .cloned()
        .chain(idp_ca.map(Path::to_path_buf))
        .collect();
    let http = outbound::http_client(ca_files.iter().map(PathBuf::as_path), raw.fetch_timeout())?;
    let client = Upstream::discover(
        UpstreamConfig {
            issuer: issuer.clone(),
            client_id,
            credential,
            scopes: Vec::new(),
            resource: None,
        },
        http,
    )
    .await
    .with_context(|| format!("discovering the identity provider {issuer}"))?;
    Ok(Arc::new(client))
}

/// MCP sessions in the store, so that every replica (and this one after a
/// restart) can continue a session: its owner, and the revision it speaks.
#[derive(Debug)]
pub struct StoreSessions {
    /// The store.
    pub store: Arc<dyn Store>,
    /// How long an unused session is kept.
    pub idle: std::time::Duration,
}

impl SharedSessions for StoreSessions {
    fn owner<'a>(&'a self, id: &'a str) -> SessionFuture<'a, Option<String>> {
        Box::pin(async move {
            match self
                .store
                .touch_session(&SessionId::new(id), self.idle)
                .await
            {
                Ok(owner) => owner.map(|o| o.as_str().to_owned()),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read a session's owner from the store");
                    None
                }
            }
        })
    }

    fn record_owner<'a>(&'a self, id: &'a str, owner: &'a str) -> SessionFuture<'a, ()> {
        Box::pin(async move {
            let stored = self
                .store
                .put_session(&SessionId::new(id), &IdentityKey::new(owner), self.idle)
                .await;
            if let Err(e) = stored {
                // The session still works here; other replicas will not know it.
                tracing::warn!(error = %e, "could not record a session's owner in the store");
            }
        })
    }

    fn forget<'a>(&'a self, id: &'a str) -> SessionFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.store.delete_session(&SessionId::new(id)).await {
                tracing::warn!(error = %e, "could not end a session in the store");
            }
        })
    }

    fn load_state<'a>(&'a self, id: &'a str) -> SessionFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            self.store
                .get_session_state(&SessionId::new(id))
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn store_state<'a>(
        &'a self,
        id: &'a str,
        state: String,
    ) -> SessionFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.store
                .put_session_state(&SessionId::new(id), &state, self.idle)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_trail_keeps_what_the_configuration_says() {
        let defaults = store_options(&RawConfig::default());
        assert_eq!(
            defaults.limits.max_audit_records,
            mcpgate_store::Limits::default().max_audit_records
        );
        let mut raw = RawConfig::default();
        raw.audit.max_records = Some(5000);
        raw.audit.max_age_days = Some(30);
        raw.store_prefix = Some("team-a".into());
        let options = store_options(&raw);
        assert_eq!(options.limits.max_audit_records, 5000);
        assert_eq!(
            options.limits.audit_max_age,
            std::time::Duration::from_secs(30 * 86_400)
        );
        assert_eq!(options.key_prefix, "team-a");
    }
}
