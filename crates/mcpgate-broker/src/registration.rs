//! Dynamic client registration (RFC 7591): a registration request is
//! validated into a [`ClientMetadata`], which is valid by construction, and
//! answered with a [`RegistrationResponse`]. Client ID Metadata Documents
//! (see [`crate::cimd`]) go through the same rules.
//!
//! Everything an unauthenticated caller sends is bounded: the body
//! ([`MAX_REGISTRATION_BODY`]), the number of redirect URIs, every string.
//! Only what this server will honour is accepted: `token_endpoint_auth_method`
//! `none`, `client_secret_basic` or `client_secret_post` (no
//! `private_key_jwt`: there is no client key handling yet, so claiming it
//! would be a lie); grants `authorization_code` and `refresh_token`;
//! response type `code`. Unknown fields are ignored and not echoed, as RFC
//! 7591 §2 allows; `logo_uri` is never kept, since showing it would make
//! every consent page fetch a third party's image.

use serde::{Deserialize, Serialize};

use crate::redirect::{ApplicationType, RedirectUri, RedirectUriError};
use crate::secret::{ClientSecret, ClientSecretHash, RandomUnavailable, random_token};
use crate::wire::{ErrorCode, OAuthError};

/// The largest registration body read.
pub const MAX_REGISTRATION_BODY: usize = 16 * 1024;
/// The most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 10;
/// The longest `client_name` accepted, in bytes, before sanitising.
pub const MAX_CLIENT_NAME_INPUT: usize = 512;
/// The longest `client_name` kept, in characters, after sanitising.
pub const MAX_CLIENT_NAME_CHARS: usize = 80;
/// The longest of any other string field.
pub const MAX_FIELD_LEN: usize = 1024;

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    /// A public client: no secret, PKCE only.
    None,
    /// HTTP Basic with the client secret.
    ClientSecretBasic,
    /// The client secret in the form body.
    ClientSecretPost,
}

impl TokenEndpointAuthMethod {
    /// Every method served, as the metadata advertises them.
    pub const ALL: [TokenEndpointAuthMethod; 3] = [
        TokenEndpointAuthMethod::None,
        TokenEndpointAuthMethod::ClientSecretBasic,
        TokenEndpointAuthMethod::ClientSecretPost,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenEndpointAuthMethod::None => "none",
            TokenEndpointAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenEndpointAuthMethod::ClientSecretPost => "client_secret_post",
        }
    }

    /// Whether the client holds a secret.
    pub fn is_confidential(self) -> bool {
        self != TokenEndpointAuthMethod::None
    }
}

/// A grant type a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// The authorization code grant (with PKCE).
    AuthorizationCode,
    /// The refresh token grant.
    RefreshToken,
}

/// A response type a client may use: only `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseType {
    /// The authorization code.
    Code,
}

/// A client identifier: random for registered clients, an https URL for
/// Client ID Metadata Documents.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    /// Wraps an identifier received from a client.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A fresh identifier for a registration: 16 random bytes.
    pub fn generate() -> Result<Self, RandomUnavailable> {
        random_token(16).map(Self)
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's name, made safe to show: no control characters, no
/// direction overrides or invisible characters that could make one name
/// look like another, whitespace collapsed, at most
/// [`MAX_CLIENT_NAME_CHARS`] characters. Still plain text: HTML-escape it
/// when rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ClientName(String);

impl ClientName {
    /// Sanitises a name; `None` when nothing printable is left.
    pub fn sanitize(raw: &str) -> Option<Self> {
        let mut out = String::new();
        let mut space = false;
        for c in raw.chars() {
            if c.is_whitespace() {
                space = !out.is_empty();
                continue;
            }
            if c.is_control() || is_invisible_or_bidi(c) {
                continue;
            }
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
        let out: String = out.chars().take(MAX_CLIENT_NAME_CHARS).collect();
        let out = out.trim_end().to_owned();
        (!out.is_empty()).then_some(Self(out))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Why a registration (or a metadata document) was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The body is larger than [`MAX_REGISTRATION_BODY`].
    #[error("the registration request is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body is not a JSON object of the expected shape.
    #[error("the client metadata is not valid JSON of the expected shape: {0}")]
    NotJson(#[source] serde_json::Error),
    /// No `redirect_uris`.
    #[error("redirect_uris is required")]
    MissingRedirectUris,
    /// More than [`MAX_REDIRECT_URIS`] redirect URIs.
    #[error("at most {limit} redirect_uris may be registered")]
    TooManyRedirectUris {
        /// The limit.
        limit: usize,
    },
    /// A redirect URI broke the rules.
    #[error("redirect_uris[{index}]: {source}")]
    RedirectUri {
        /// Its position in the list.
        index: usize,
        /// The rule it broke.
        #[source]
        source: RedirectUriError,
    },
    /// `application_type` is neither `web` nor `native`.
    #[error("application_type {0:?} is not supported; use web or native")]
    UnknownApplicationType(String),
    /// An authentication method this server does not serve.
    #[error(
        "token_endpoint_auth_method {0:?} is not supported; use none, client_secret_basic or client_secret_post"
    )]
    UnsupportedAuthMethod(String),
    /// A grant type this server does not serve.
    #[error("grant_type {0:?} is not supported; use authorization_code and refresh_token")]
    UnsupportedGrantType(String),
    /// A response type other than `code`.
    #[error("response_type {0:?} is not supported; use code")]
    UnsupportedResponseType(String),
    /// `grant_types` lacks `authorization_code`, the only way to start.
    #[error("grant_types must include authorization_code")]
    NoAuthorizationCodeGrant,
    /// A string field is too long.
    #[error("{field} is longer than {limit} bytes")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// The limit.
        limit: usize,
    },
    /// `scope` is not a space-separated list of RFC 6749 scope tokens.
    #[error("scope must be space-separated scope tokens")]
    InvalidScope,
    /// A Client ID Metadata Document names a shared-secret method, or holds
    /// a secret: there is no way to share one with a document.
    #[error("a client metadata document cannot use a client secret")]
    SecretInDocument,
}

impl RegistrationError {
    /// The RFC 7591 §3.2.2 error: `invalid_redirect_uri` for redirect URI
    /// problems, `invalid_client_metadata` for everything else.
    pub fn to_oauth(&self) -> OAuthError {
        let code = match self {
            RegistrationError::MissingRedirectUris
            | RegistrationError::TooManyRedirectUris { .. }
            | RegistrationError::RedirectUri { .. } => ErrorCode::InvalidRedirectUri,
            RegistrationError::BodyTooLarge { .. }
            | RegistrationError::NotJson(_)
            | RegistrationError::UnknownApplicationType(_)
            | RegistrationError::UnsupportedAuthMethod(_)
            | RegistrationError::UnsupportedGrantType(_)
            | RegistrationError::UnsupportedResponseType(_)
            | RegistrationError::NoAuthorizationCodeGrant
            | RegistrationError::FieldTooLong { .. }
            | RegistrationError::InvalidScope
            | RegistrationError::SecretInDocument => ErrorCode::InvalidClientMetadata,
        };
        OAuthError::new(code, self.to_string())
    }
}

/// The fields read from a registration request or metadata document.
/// Types are checked by serde; everything else by [`ClientMetadata`].
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawClientMetadata {
    client_secret: Option<serde_json::Value>,
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    application_type: Option<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    scope: Option<String>,
    software_id: Option<String>,
    software_version: Option<String>,
}

/// Where client metadata came from; the rules differ slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// RFC 7591: absent `token_endpoint_auth_method` means
    /// `client_secret_basic`.
    Registration,
    /// A Client ID Metadata Document: no shared secrets, so absent means
    /// `none`.
    Document,
}

/// Validated client metadata: every field within its bounds, every
/// redirect URI allowed for the application type, grant and response types
/// consistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientMetadata {
    redirect_uris: Vec<RedirectUri>,
    token_endpoint_auth_method: TokenEndpointAuthMethod,
    grant_types: Vec<GrantType>,
    response_types: Vec<ResponseType>,
    application_type: ApplicationType,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_name: Option<ClientName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    software_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    software_version: Option<String>,
}

impl ClientMetadata {
    /// Validates an RFC 7591 registration request body. Also how a stored
    /// registration is read back, so that it passes today's rules.
    pub fn from_registration(body: &[u8]) -> Result<Self, RegistrationError> {
        if body.len() > MAX_REGISTRATION_BODY {
            return Err(RegistrationError::BodyTooLarge {
                limit: MAX_REGISTRATION_BODY,
            });
        }
        let raw: RawClientMetadata =
            serde_json::from_slice(body).map_err(RegistrationError::NotJson)?;
        Self::validate(raw, Source::Registration)
    }

    pub(crate) fn validate(
        raw: RawClientMetadata,
        source: Source,
    ) -> Result<Self, RegistrationError> {
        let application_type = match raw.application_type.as_deref() {
            None | Some("web") => ApplicationType::Web,
            Some("native") => ApplicationType::Native,
            Some(other) => return Err(RegistrationError::UnknownApplicationType(shown(other))),
        };

        let uris = raw
            .redirect_uris
            .filter(|u| !u.is_empty())
            .ok_or(RegistrationError::MissingRedirectUris)?;
        if uris.len() > MAX_REDIRECT_URIS {
            return Err(RegistrationError::TooManyRedirectUris {
                limit: MAX_REDIRECT_URIS,
            });
        }
        let mut redirect_uris = Vec::with_capacity(uris.len());
        for (index, uri) in uris.iter().enumerate() {
            let parsed = RedirectUri::parse(uri, application_type)
                .map_err(|source| RegistrationError::RedirectUri { index, source })?;
            if !redirect_uris.contains(&parsed) {
                redirect_uris.push(parsed);
            }
        }

        let token_endpoint_auth_method = match (raw.token_endpoint_auth_method.as_deref(), source) {
            (None, Source::Registration) => TokenEndpointAuthMethod::ClientSecretBasic,
            (None, Source::Document) | (Some("none"), _) => TokenEndpointAuthMethod::None,
            (Some("client_secret_basic"), _) => TokenEndpointAuthMethod::ClientSecretBasic,
            (Some("client_secret_post"), _) => TokenEndpointAuthMethod::ClientSecretPost,
            (Some(other), _) => return Err(RegistrationError::UnsupportedAuthMethod(shown(other))),
        };
        if source == Source::Document
            && (token_endpoint_auth_method.is_confidential() || raw.client_secret.is_some())
        {
            return Err(RegistrationError::SecretInDocument);
        }

        let mut grant_types = Vec::new();
        for g in raw
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".into()])
        {
            let grant = match g.as_str() {
                "authorization_code" => GrantType::AuthorizationCode,
                "refresh_token" => GrantType::RefreshToken,
                other => return Err(RegistrationError::UnsupportedGrantType(shown(other))),
            };
            if !grant_types.contains(&grant) {
                grant_types.push(grant);
            }
        }
        if !grant_types.contains(&GrantType::AuthorizationCode) {
            return Err(RegistrationError::NoAuthorizationCodeGrant);
        }
        // With authorization_code required above, RFC 7591 §2.1 makes
        // `code` the one consistent response type.
        for r in raw.response_types.unwrap_or_else(|| vec!["code".into()]) {
            if r != "code" {
                return Err(RegistrationError::UnsupportedResponseType(shown(&r)));
            }
        }

        let client_name = match raw.client_name {
            Some(n) if n.len() > MAX_CLIENT_NAME_INPUT => {
                return Err(RegistrationError::FieldTooLong {
                    field: "client_name",
                    limit: MAX_CLIENT_NAME_INPUT,
                });
            }
            Some(n) => ClientName::sanitize(&n),
            None => None,
        };
        let client_uri = bounded("client_uri", raw.client_uri)?.filter(|u| is_https_url(u));
        let scope = bounded("scope", raw.scope)?;
        if let Some(s) = &scope
            && !is_scope(s)
        {
            return Err(RegistrationError::InvalidScope);
        }
        Ok(Self {
            redirect_uris,
            token_endpoint_auth_method,
            grant_types,
            response_types: vec![ResponseType::Code],
            application_type,
            client_name,
            client_uri,
            scope,
            software_id: bounded("software_id", raw.software_id)?,
            software_version: bounded("software_version", raw.software_version)?,
        })
    }

    /// The registered redirect URIs (at least one).
    pub fn redirect_uris(&self) -> &[RedirectUri] {
        &self.redirect_uris
    }

    /// How the client authenticates at the token endpoint.
    pub fn token_endpoint_auth_method(&self) -> TokenEndpointAuthMethod {
        self.token_endpoint_auth_method
    }

    /// The grants it may use (always including `authorization_code`).
    pub fn grant_types(&self) -> &[GrantType] {
        &self.grant_types
    }

    /// `web` or `native`.
    pub fn application_type(&self) -> ApplicationType {
        self.application_type
    }

    /// Its display name, sanitised.
    pub fn client_name(&self) -> Option<&ClientName> {
        self.client_name.as_ref()
    }

    /// Its home page, when an https URL.
    pub fn client_uri(&self) -> Option<&str> {
        self.client_uri.as_deref()
    }

    /// The scopes it registered for, space separated.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
}

/// A registered client, as the store keeps it: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredClient {
    /// Its identifier.
    pub client_id: ClientId,
    /// When it registered, in seconds since the Unix epoch.
    pub client_id_issued_at: u64,
    /// Its validated metadata.
    pub metadata: ClientMetadata,
    /// The hash of its secret, for confidential clients.
    pub secret_hash: Option<ClientSecretHash>,
}

/// The RFC 7591 §3.2.1 response: the identifier, the secret once (for
/// confidential clients), and the metadata as registered.
#[derive(Debug, Serialize)]
pub struct RegistrationResponse {
    /// The new identifier.
    pub client_id: ClientId,
    /// When it was issued, in seconds since the Unix epoch.
    pub client_id_issued_at: u64,
    /// The secret, for confidential clients only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<ClientSecret>,
    /// `0` (never expires), present exactly when a secret is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<u64>,
    /// The metadata as registered.
    #[serde(flatten)]
    pub metadata: ClientMetadata,
}

/// Registers validated metadata: a fresh client id, and a secret when the
/// client authenticates with one.
pub fn register(
    metadata: ClientMetadata,
    now_unix: u64,
) -> Result<(RegisteredClient, RegistrationResponse), RandomUnavailable> {
    let client_id = ClientId::generate()?;
    let secret = if metadata.token_endpoint_auth_method.is_confidential() {
        Some(ClientSecret::generate()?)
    } else {
        None
    };
    let client = RegisteredClient {
        client_id: client_id.clone(),
        client_id_issued_at: now_unix,
        metadata: metadata.clone(),
        secret_hash: secret.as_ref().map(ClientSecret::hash),
    };
    let response = RegistrationResponse {
        client_id,
        client_id_issued_at: now_unix,
        client_secret_expires_at: secret.as_ref().map(|_| 0),
        client_secret: secret,
        metadata,
    };
    Ok((client, response))
}

fn bounded(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<String>, RegistrationError> {
    match value {
        Some(v) if v.len() > MAX_FIELD_LEN => Err(RegistrationError::FieldTooLong {
            field,
            limit: MAX_FIELD_LEN,
        }),
        v => Ok(v),
    }
}

/// A value echoed in an error, cut short.
fn shown(value: &str) -> String {
    value.chars().take(40).collect()
}

fn is_https_url(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some())
}

/// RFC 6749 §3.3: `scope-token *( SP scope-token )`, each token
/// `%x21 / %x23-5B / %x5D-7E`.
pub(crate) fn is_scope(value: &str) -> bool {
    !value.is_empty()
        && value.split(' ').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        })
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;
