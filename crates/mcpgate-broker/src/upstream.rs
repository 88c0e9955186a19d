//! The broker's side of federation: mcpgate as a confidential client of the
//! upstream identity provider (Entra ID, or the development IdP). It sends
//! the user to the upstream `/authorize`, redeems the code it gets back at
//! `/auth/callback`, refreshes, and exchanges the user's token On-Behalf-Of
//! for downstream APIs (Graph). The MCP client's own token never goes
//! upstream, and no upstream token ever goes to the MCP client.
//!
//! The token endpoint's form, client authentication and error handling are
//! the desktop client's ([`mcpgate_client::oauth`]): one implementation of
//! the wire. What is the broker's own is which credential it proves itself
//! with, and the Entra rules of a confidential client.

use std::path::PathBuf;

use mcpgate_client::assertion::{ClientKey, KeyError};
use mcpgate_client::claims::Claims;
use mcpgate_client::discovery::{self, AuthServer, DiscoveryError};
use mcpgate_client::error::FlowError;
use mcpgate_client::oauth::{ClientAuth, TokenSet, token_request};
use mcpgate_client::secret::{ClientAssertion, ClientSecret};
use url::Url;

/// The grant type of an On-Behalf-Of exchange (RFC 7523 §2.1 as Entra uses
/// it).
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Scopes asked of the upstream besides the API's: who the user is, and a
/// refresh token so that the broker can keep its upstream grant fresh.
const SIGN_IN_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// How the broker proves itself to the upstream token endpoint.
#[derive(Debug, Clone)]
pub enum UpstreamCredential {
    /// A client secret, read from a file or the environment at start.
    Secret(ClientSecret),
    /// A certificate's private key: a fresh RFC 7523 assertion per request,
    /// so that no secret need exist.
    Certificate(ClientKey),
    /// A federated assertion (Azure workload or managed identity:
    /// `AZURE_FEDERATED_TOKEN_FILE`), read anew for every request because
    /// the platform rotates the file.
    FederatedTokenFile(PathBuf),
}

/// What the broker needs to know of its upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The upstream's issuer (e.g. `https://login.microsoftonline.com/<tenant>/v2.0`).
    pub issuer: String,
    /// The broker's client id there.
    pub client_id: String,
    /// Its credential.
    pub credential: UpstreamCredential,
    /// The scopes the broker asks for the user, besides sign-in's
    /// (`api://<app>/mcp:tools` for a token it can exchange On-Behalf-Of).
    pub scopes: Vec<String>,
    /// RFC 8707 `resource` for the sign-in: the MCP server's URL when it is
    /// the API's Application ID URI (the scopes are `<it>/<name>`), else
    /// none. Entra v2 refuses any other value next to scopes
    /// (AADSTS9010010).
    pub resource: Option<String>,
}

/// The upstream could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Its discovery document is missing, unreachable, or names another
    /// issuer.
    #[error("upstream discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    /// Its document names no authorization or token endpoint.
    #[error("the upstream {issuer} names no {what} endpoint")]
    MissingEndpoint {
        /// The issuer.
        issuer: String,
        /// Which endpoint.
        what: &'static str,
    },
    /// The exchange failed; an OAuth refusal keeps the upstream's body
    /// (Entra's AADSTS code, trace and correlation ids).
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// The certificate key could not sign an assertion.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The federated token file could not be read.
    #[error("cannot read the federated token file {path}: {source}")]
    FederatedToken {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl UpstreamError {
    /// The claims a new, interactive sign-in of the user must satisfy,
    /// when the upstream refused for want of them (Entra's AADSTS50076:
    /// `interaction_required` on On-Behalf-Of, `invalid_grant` on a
    /// refresh). Nothing is to be revoked then: the grant stands.
    pub fn claims_challenge(&self) -> Option<Claims> {
        match self {
            UpstreamError::Flow(FlowError::Refused(e)) => e.claims_challenge(),
            UpstreamError::Discovery(_)
            | UpstreamError::MissingEndpoint { .. }
            | UpstreamError::Flow(_)
            | UpstreamError::Key(_)
            | UpstreamError::FederatedToken { .. } => None,
        }
    }
}

/// A discovered upstream, ready to sign users in.
#[derive(Debug, Clone)]
pub struct Upstream {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: String,
    end_session_endpoint: Option<String>,
    client_id: String,
    credential: UpstreamCredential,
    scopes: Vec<String>,
    resource: Option<String>,
    http: reqwest::Client,
}

/// What the broker sends the user to the upstream with.
#[derive(Debug, Clone)]
pub struct UpstreamAuthorization<'a> {
    /// The broker's callback (`…/auth/callback`).
    pub redirect_uri: &'a str,
    /// Random, single-use, short-lived; it keys the pending sign-in.
    pub state: &'a str,
    /// The S256 challenge of the broker's own PKCE verifier.
    pub code_challenge: &'a str,
    /// Binds the ID token to this sign-in.
    pub nonce: &'a str,
    /// A hint of who signs in, when known.
    pub login_hint: Option<&'a str>,
    /// Claims the sign-in must satisfy, passed on from the MCP client's
    /// request after a claims challenge (a second factor, say).
    pub claims: Option<&'a Claims>,
}

impl Upstream {
    /// Reads the upstream's OpenID configuration (its `issuer` must be the
    /// one configured; every endpoint https, or http on loopback).
    pub async fn discover(
        config: UpstreamConfig,
        http: reqwest::Client,
    ) -> Result<Self, UpstreamError> {
        let meta: AuthServer = discovery::auth_server(&http, &config.issuer).await?;
        let endpoint = |value: Option<String>, what| {
            value.ok_or_else(|| UpstreamError::MissingEndpoint {
                issuer: config.issuer.clone(),
                what,
            })
        };
        let authorization = endpoint(meta.authorization_endpoint.clone(), "authorization")?;
        let authorization_endpoint = Url::parse(&authorization).map_err(|e| FlowError::BadUrl {
            what: "authorization endpoint",
            url: authorization.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            token_endpoint: endpoint(meta.token_endpoint.clone(), "token")?,
            end_session_endpoint: meta.end_session_endpoint.clone(),
            authorization_endpoint,
            issuer: meta.issuer,
            client_id: config.client_id,
            credential: config.credential,
            scopes: config.scopes,
            resource: config.resource,
            http,
        })
    }

    /// The issuer, as its document names it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The broker's client id upstream.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Where to send the user. RFC 8707 `resource` only when it is the
    /// API's identifier URI: Entra's v2 endpoint refuses any other value
    /// next to scopes (AADSTS9010010).
    pub fn authorization_url(&self, request: &UpstreamAuthorization<'_>) -> Url {
        let mut url = self.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.client_id)
                .append_pair("response_type", "code")
                .append_pair("response_mode", "query")
                .append_pair("redirect_uri", request.redirect_uri)
                .append_pair("scope", &self.scope())
                .append_pair("state", request.state)
                .append_pair("nonce", request.nonce)
                .append_pair("code_challenge", request.code_challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(hint) = request.login_hint {
                q.append_pair("login_hint", hint);
            }
            if let Some(resource) = &self.resource {
                q.append_pair("resource", resource);
            }
            if let Some(claims) = request.claims {
                q.append_pair("claims", claims.as_json());
            }
        }
        url
    }

    /// Redeems the code the upstream sent to the callback, proving the
    /// broker's identity and its PKCE verifier.
    pub async fn redeem(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<TokenSet, UpstreamError> {
        self.token_for_api(vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", verifier.to_owned()),
            ("scope", self.scope()),
        ])
        .await
    }

    /// Refreshes the broker's upstream grant for a user.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, UpstreamError> {
        self.token_for_api(vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.to_owned()),
            ("scope", self.scope()),
        ])
        .await
    }

    /// Exchanges the user's upstream access token (whose audience is the
    /// broker's own API) for a token to a downstream API, On-Behalf-Of the
    /// user. Never called with an MCP client's token: that one is
    /// mcpgate's, and is never forwarded anywhere.
    pub async fn on_behalf_of(
        &self,
        user_token: &str,
        scopes: &[String],
    ) -> Result<TokenSet, UpstreamError> {
        self.token(vec![
            ("grant_type", JWT_BEARER_GRANT.to_owned()),
            ("assertion", user_token.to_owned()),
            ("requested_token_use", "on_behalf_of".to_owned()),
            ("scope", scopes.join(" ")),
        ])
        .await
    }

    /// Where to end the user's upstream session too, when the upstream
    /// publishes an end-session endpoint.
    pub fn logout_url(&self, post_logout_redirect_uri: Option<&str>) -> Option<Url> {
        let mut url = Url::parse(self.end_session_endpoint.as_deref()?).ok()?;
        if let Some(back) = post_logout_redirect_uri {
            url.query_pairs_mut()
                .append_pair("post_logout_redirect_uri", back);
        }
        Some(url)
    }

    fn scope(&self) -> String {
        self.scopes
            .iter()
            .map(String::as_str)
            .chain(SIGN_IN_SCOPES)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A token request for the API the broker signs users in to: with its
    /// `resource`, when it has one.
    async fn token_for_api(
        &self,
        mut form: Vec<(&str, String)>,
    ) -> Result<TokenSet, UpstreamError> {
        if let Some(resource) = &self.resource {
            form.push(("resource", resource.clone()));
        }
        self.token(form).await
    }

    async fn token(&self, form: Vec<(&str, String)>) -> Result<TokenSet, UpstreamError> {
        let auth = self.client_auth()?;
        Ok(token_request(
            &self.http,
            &self.token_endpoint,
            &self.client_id,
            &auth,
            form,
        )
        .await?)
    }

    /// The credential for one request: assertions are made (or read) fresh
    /// each time, as they are short-lived.
    fn client_auth(&self) -> Result<ClientAuth, UpstreamError> {
        Ok(match &self.credential {
            UpstreamCredential::Secret(secret) => ClientAuth::Secret {
                secret: secret.clone(),
                basic: false,
            },
            UpstreamCredential::Certificate(key) => ClientAuth::Assertion(ClientAssertion::new(
                key.assertion(&self.client_id, &self.token_endpoint)?,
            )),
            UpstreamCredential::FederatedTokenFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    UpstreamError::FederatedToken {
                        path: path.clone(),
                        source,
                    }
                })?;
                ClientAuth::Assertion(ClientAssertion::new(text.trim()))
            }
        })
    }
}
