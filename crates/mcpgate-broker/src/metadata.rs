//! Authorization server metadata (RFC 8414), served at
//! `/.well-known/oauth-authorization-server` and, as the same document, at
//! OpenID discovery (`/.well-known/openid-configuration`) for hosts that
//! look there first. It advertises only what is served: S256 only, the
//! three client authentication methods registration accepts, the two
//! grants, `code`, Client ID Metadata Documents and `iss` in responses.

use serde::Serialize;
use url::Url;

use crate::registration::{GrantType, ResponseType, TokenEndpointAuthMethod};

/// The endpoint paths, relative to the issuer. The router uses these, so
/// that the document and the routes cannot disagree.
pub mod paths {
    /// The authorization endpoint.
    pub const AUTHORIZE: &str = "/authorize";
    /// The token endpoint.
    pub const TOKEN: &str = "/token";
    /// Dynamic client registration (RFC 7591).
    pub const REGISTER: &str = "/register";
    /// Token revocation (RFC 7009).
    pub const REVOKE: &str = "/revoke";
    /// The broker's signing keys.
    pub const JWKS: &str = "/.well-known/jwks.json";
    /// RFC 8414's well-known suffix.
    pub const OAUTH_METADATA: &str = "/.well-known/oauth-authorization-server";
    /// Where the upstream redirects back after sign-in.
    pub const CALLBACK: &str = "/auth/callback";
    /// Where the consent form posts.
    pub const CONSENT: &str = "/authorize/consent";
    /// Ends the broker's grant and the upstream session.
    pub const LOGOUT: &str = "/logout";
    /// OpenID Connect Discovery's well-known suffix.
    pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
}

/// Why a base URL cannot be an issuer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    /// Not an absolute URL.
    #[error("the issuer is not an absolute URL")]
    NotAbsolute,
    /// Neither https nor http on loopback.
    #[error("the issuer must be https (http only on 127.0.0.1, [::1] or localhost)")]
    NotHttps,
    /// Has a query, a fragment or userinfo (RFC 8414 §2).
    #[error("the issuer must not have a query, fragment or userinfo")]
    Decorated,
}

/// The broker's issuer identifier: an https URL (http on loopback) with no
/// query, fragment or trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Issuer(String);

impl Issuer {
    /// The issuer for a broker at `base` (e.g. `https://mcp.example.com`).
    pub fn new(base: &str) -> Result<Self, IssuerError> {
        let url = Url::parse(base).map_err(|_| IssuerError::NotAbsolute)?;
        let loopback = matches!(
            url.host(),
            Some(url::Host::Domain("localhost"))
                | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
                | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
        );
        match url.scheme() {
            "https" if url.host().is_some() => {}
            "http" if loopback => {}
            _ => return Err(IssuerError::NotHttps),
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(IssuerError::Decorated);
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// The issuer identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL of an endpoint at `path` (one of [`paths`]).
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    /// The issuer's path ("" or `/gate`), under which the endpoints are
    /// served.
    pub fn base_path(&self) -> String {
        Url::parse(&self.0)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// Whether the issuer's host is loopback (development).
    pub fn is_loopback(&self) -> bool {
        Url::parse(&self.0).is_ok_and(|u| {
            matches!(
                u.host(),
                Some(url::Host::Domain("localhost"))
                    | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
                    | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
            )
        })
    }

    /// Whether the issuer is https (so `Secure` cookies reach it).
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// The request paths at which the metadata is served: RFC 8414 §3.1
    /// inserts the well-known segment before the issuer's path; OpenID
    /// Discovery appends it; the MCP specification has hosts try both.
    pub fn metadata_paths(&self) -> Vec<String> {
        let path = Url::parse(&self.0)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let mut out = vec![
            format!("{}{path}", paths::OAUTH_METADATA),
            format!("{}{path}", paths::OPENID_CONFIGURATION),
        ];
        if !path.is_empty() {
            out.push(format!("{path}{}", paths::OPENID_CONFIGURATION));
        }
        out
    }
}

impl std::fmt::Display for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which PKCE methods are supported: S256 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CodeChallengeMethod {
    /// SHA-256.
    S256,
}

/// The RFC 8414 document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorizationServerMetadata {
    /// The issuer; equal to the `iss` of every response and token.
    pub issuer: Issuer,
    /// `/authorize`.
    pub authorization_endpoint: String,
    /// `/token`.
    pub token_endpoint: String,
    /// `/register`.
    pub registration_endpoint: String,
    /// `/revoke`.
    pub revocation_endpoint: String,
    /// The broker's signing keys.
    pub jwks_uri: String,
    /// `/logout`: ends the broker's grant and the upstream session.
    pub end_session_endpoint: String,
    /// The scopes a client may request.
    pub scopes_supported: Vec<String>,
    /// `["code"]`.
    pub response_types_supported: Vec<ResponseType>,
    /// `["query"]`: the only response mode served.
    pub response_modes_supported: Vec<&'static str>,
    /// `authorization_code` and `refresh_token`.
    pub grant_types_supported: Vec<GrantType>,
    /// `none`, `client_secret_basic`, `client_secret_post`.
    pub token_endpoint_auth_methods_supported: Vec<TokenEndpointAuthMethod>,
    /// The same methods, at the revocation endpoint.
    pub revocation_endpoint_auth_methods_supported: Vec<TokenEndpointAuthMethod>,
    /// `["S256"]`.
    pub code_challenge_methods_supported: Vec<CodeChallengeMethod>,
    /// Client ID Metadata Documents are accepted as client ids.
    pub client_id_metadata_document_supported: bool,
    /// RFC 9207: `iss` is in every authorization response.
    pub authorization_response_iss_parameter_supported: bool,
}

impl AuthorizationServerMetadata {
    /// The document for a broker at `issuer`, offering `scopes`.
    pub fn new(issuer: &Issuer, scopes: Vec<String>) -> Self {
        Self {
            issuer: issuer.clone(),
            authorization_endpoint: issuer.endpoint(paths::AUTHORIZE),
            token_endpoint: issuer.endpoint(paths::TOKEN),
            registration_endpoint: issuer.endpoint(paths::REGISTER),
            revocation_endpoint: issuer.endpoint(paths::REVOKE),
            jwks_uri: issuer.endpoint(paths::JWKS),
            end_session_endpoint: issuer.endpoint(paths::LOGOUT),
            scopes_supported: scopes,
            response_types_supported: vec![ResponseType::Code],
            response_modes_supported: vec!["query"],
            grant_types_supported: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            token_endpoint_auth_methods_supported: TokenEndpointAuthMethod::ALL.to_vec(),
            revocation_endpoint_auth_methods_supported: TokenEndpointAuthMethod::ALL.to_vec(),
            code_challenge_methods_supported: vec![CodeChallengeMethod::S256],
            client_id_metadata_document_supported: true,
            authorization_response_iss_parameter_supported: true,
        }
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        // Strings, booleans and unit enums always serialize.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_rules() {
        assert_eq!(
            Issuer::new("https://mcp.example.com/").map(|i| i.0),
            Ok("https://mcp.example.com".into())
        );
        assert_eq!(
            Issuer::new("http://127.0.0.1:8080").map(|i| i.0),
            Ok("http://127.0.0.1:8080".into())
        );
        assert!(Issuer::new("http://[::1]:8080").is_ok());
        assert!(Issuer::new("http://localhost:8080").is_ok());
        assert_eq!(
            Issuer::new("http://mcp.example.com"),
            Err(IssuerError::NotHttps)
        );
        assert_eq!(
            Issuer::new("https://mcp.example.com/?x=1"),
            Err(IssuerError::Decorated)
        );
        assert_eq!(
            Issuer::new("https://mcp.example.com/#x"),
            Err(IssuerError::Decorated)
        );
        assert_eq!(
            Issuer::new("https://u@mcp.example.com/"),
            Err(IssuerError::Decorated)
        );
        assert_eq!(
            Issuer::new("mcp.example.com"),
            Err(IssuerError::NotAbsolute)
        );
    }

    #[test]
    fn metadata_paths_per_rfc_8414_and_openid() -> Result<(), IssuerError> {
        assert_eq!(
            Issuer::new("https://a.example")?.metadata_paths(),
            [
                "/.well-known/oauth-authorization-server",
                "/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            Issuer::new("https://a.example/gate/")?.metadata_paths(),
            [
                "/.well-known/oauth-authorization-server/gate",
                "/.well-known/openid-configuration/gate",
                "/gate/.well-known/openid-configuration"
            ]
        );
        Ok(())
    }

    #[test]
    fn endpoints_hang_off_the_issuer() -> Result<(), IssuerError> {
        let m = AuthorizationServerMetadata::new(&Issuer::new("https://a.example/gate")?, vec![]);
        assert_eq!(m.authorization_endpoint, "https://a.example/gate/authorize");
        assert_eq!(m.jwks_uri, "https://a.example/gate/.well-known/jwks.json");
        Ok(())
    }
}
