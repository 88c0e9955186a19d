//! Discovery in the order the MCP authorization specification gives:
//! Protected Resource Metadata (RFC 9728) from the challenge's
//! `resource_metadata`, else the path-suffixed well-known URL, else the
//! root one; then the authorization server's metadata by RFC 8414 and
//! OpenID Connect Discovery, in the specification's order, with the
//! document's `issuer` checked against the URL it was built from. Every
//! URL discovery hands on (metadata, authorize, token, device,
//! registration) is https, or http on a loopback address.

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::challenge::BearerChallenge;

/// Discovery failed: the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A request could not be made.
    #[error("cannot reach {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// No metadata document was found where the specification says.
    #[error("no {what} found (tried {tried})")]
    NotFound {
        /// Which document.
        what: &'static str,
        /// The URLs tried.
        tried: String,
    },
    /// A document does not parse as what it must be.
    #[error("the {what} at {url} is malformed: {reason}")]
    Malformed {
        /// Which document.
        what: &'static str,
        /// Where it was.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The resource metadata describes another resource (RFC 9728 §3.3).
    #[error(
        "the protected resource metadata at {url} describes {described}, not {server}: refusing to sign in for another resource"
    )]
    ResourceMismatch {
        /// Where it was.
        url: String,
        /// The resource it names.
        described: String,
        /// The server asked.
        server: String,
    },
    /// The metadata names another issuer (RFC 8414 §3.3).
    #[error("the metadata at {url} names issuer {named}, not {asked}: refusing it (RFC 8414 §3.3)")]
    IssuerMismatch {
        /// Where it was.
        url: String,
        /// The issuer it names.
        named: String,
        /// The issuer asked.
        asked: String,
    },
    /// A discovered URL is plain http on a host that is not loopback (or
    /// not http(s) at all): nothing is sent there.
    #[error("refusing the {what} {url}: it must be https (plain http only on loopback)")]
    Insecure {
        /// Which URL.
        what: &'static str,
        /// The URL.
        url: String,
    },
    /// The resource metadata names no authorization server.
    #[error("{resource} names no authorization server in its metadata")]
    NoAuthorizationServer {
        /// The server.
        resource: String,
    },
}

/// Whether `host` is a loopback name or address.
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Refuses a URL that is neither https nor http on loopback.
pub fn require_secure(what: &'static str, url: &str) -> Result<Url, DiscoveryError> {
    let insecure = || DiscoveryError::Insecure {
        what,
        url: url.to_owned(),
    };
    let parsed = Url::parse(url).map_err(|_| insecure())?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if parsed.host().is_some_and(|h| is_loopback_host(&h)) => Ok(parsed),
        _ => Err(insecure()),
    }
}

/// RFC 9728 Protected Resource Metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct ProtectedResource {
    /// The resource identifier.
    pub resource: String,
    /// Authorization servers (issuer URLs).
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes the resource knows.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// RFC 8414 / OpenID Connect authorization server metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthServer {
    /// Issuer.
    pub issuer: String,
    /// Authorization endpoint.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Token endpoint.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// Dynamic client registration (RFC 7591).
    #[serde(default)]
    pub registration_endpoint: Option<String>,
    /// Device authorization (RFC 8628).
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    /// PKCE methods.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// RFC 9207: the authorization response carries `iss`.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// Client ID Metadata Documents.
    #[serde(default)]
    pub client_id_metadata_document_supported: bool,
    /// Token endpoint client authentication methods.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Grant types.
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// OpenID Connect RP-initiated logout: where a relying party ends the
    /// user's session.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// Entra publishes these in its OpenID document; used to recognise it.
    #[serde(default)]
    cloud_instance_name: Option<String>,
    #[serde(default)]
    msgraph_host: Option<String>,
}

impl AuthServer {
    /// Whether this is Microsoft Entra ID's v2.0 endpoint (or one that
    /// behaves like it). Entra does not advertise PKCE methods though it
    /// supports S256, and rejects RFC 8707 `resource` next to v2 scopes
    /// (AADSTS9010010).
    pub fn is_entra_v2(&self) -> bool {
        (self.cloud_instance_name.is_some() || self.msgraph_host.is_some())
            && self.issuer.trim_end_matches('/').ends_with("/v2.0")
    }

    /// Refuses metadata whose endpoints are not https (or loopback http).
    pub fn check_endpoints(&self) -> Result<(), DiscoveryError> {
        for (what, url) in [
            ("authorization endpoint", &self.authorization_endpoint),
            ("token endpoint", &self.token_endpoint),
            (
                "device authorization endpoint",
                &self.device_authorization_endpoint,
            ),
            ("registration endpoint", &self.registration_endpoint),
            ("end-session endpoint", &self.end_session_endpoint),
        ] {
            if let Some(url) = url {
                require_secure(what, url)?;
            }
        }
        Ok(())
    }

    /// Whether the server offers the grant `grant` (RFC 8414: an absent
    /// list means `authorization_code` and `implicit`).
    pub fn supports_grant(&self, grant: &str) -> bool {
        if self.grant_types_supported.is_empty() {
            return matches!(grant, "authorization_code" | "implicit");
        }
        self.grant_types_supported.iter().any(|g| g == grant)
    }

    /// Whether client credentials is the only grant for a client to get a
    /// token with (refresh aside).
    pub fn only_client_credentials(&self) -> bool {
        self.supports_grant("client_credentials")
            && !self.supports_grant("authorization_code")
            && !self.supports_grant("urn:ietf:params:oauth:grant-type:device_code")
    }

    /// Whether PKCE with S256 can be used.
    pub fn supports_s256(&self) -> bool {
        self.code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
            || self.is_entra_v2()
    }
}

/// Whether a PRM `resource` names the server at `server`: same origin, and
/// the server's path at or under the resource's (as RFC 9728 §3.3 and the
/// MCP specification's canonical URI rules allow).
pub fn resource_matches(resource: &str, server: &Url) -> bool {
    let Ok(resource) = Url::parse(resource) else {
        return false;
    };
    if resource.scheme() != server.scheme()
        || resource.host_str().map(str::to_ascii_lowercase)
            != server.host_str().map(str::to_ascii_lowercase)
        || resource.port_or_known_default() != server.port_or_known_default()
    {
        return false;
    }
    let want = resource.path().trim_end_matches('/');
    let have = server.path().trim_end_matches('/');
    have == want || have.starts_with(&format!("{want}/")) || want.is_empty()
}

/// The well-known PRM URLs for `server`, in the specification's order.
pub fn prm_urls(server: &Url, challenge: Option<&BearerChallenge>) -> Vec<Url> {
    if let Some(url) = challenge
        .and_then(|c| c.resource_metadata.as_deref())
        .and_then(|u| Url::parse(u).ok())
    {
        return vec![url];
    }
    let mut out = Vec::new();
    let path = server.path().trim_end_matches('/');
    let mut root = server.clone();
    root.set_query(None);
    root.set_fragment(None);
    if !path.is_empty() {
        let mut u = root.clone();
        u.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
        out.push(u);
    }
    root.set_path("/.well-known/oauth-protected-resource");
    out.push(root);
    out
}

/// The authorization server metadata URLs for `issuer`, in order: RFC 8414
/// path insertion, OpenID path insertion, OpenID path appending.
pub fn as_metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut base = issuer.clone();
    base.set_query(None);
    base.set_fragment(None);
    let at = |p: String| {
        let mut u = base.clone();
        u.set_path(&p);
        u
    };
    if path.is_empty() {
        vec![
            at("/.well-known/oauth-authorization-server".into()),
            at("/.well-known/openid-configuration".into()),
        ]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    }
}

async fn get_json(http: &reqwest::Client, url: &Url) -> Result<Option<Value>, DiscoveryError> {
    let resp = http
        .get(url.clone())
        .header("accept", "application/json")
        .header("mcp-protocol-version", crate::PROTOCOL_VERSION)
        .send()
        .await
        .map_err(|source| DiscoveryError::Http {
            url: url.to_string(),
            source,
        })?;
    if !resp.status().is_success() {
        return Ok(None);
    }
    Ok(resp.json::<Value>().await.ok())
}

/// Fetches the PRM for `server` and checks that it describes it.
pub async fn protected_resource(
    http: &reqwest::Client,
    server: &Url,
    challenge: Option<&BearerChallenge>,
) -> Result<ProtectedResource, DiscoveryError> {
    let urls = prm_urls(server, challenge);
    for url in &urls {
        require_secure("protected resource metadata URL", url.as_str())?;
        let Some(doc) = get_json(http, url).await? else {
            continue;
        };
        let prm: ProtectedResource =
            serde_json::from_value(doc).map_err(|e| DiscoveryError::Malformed {
                what: "protected resource metadata",
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        if !resource_matches(&prm.resource, server) {
            return Err(DiscoveryError::ResourceMismatch {
                url: url.to_string(),
                described: prm.resource,
                server: server.to_string(),
            });
        }
        return Ok(prm);
    }
    Err(DiscoveryError::NotFound {
        what: "protected resource metadata",
        tried: urls.iter().map(Url::as_str).collect::<Vec<_>>().join(", "),
    })
}

/// Whether a document's `issuer` is the one the URL was built from: the
/// same string, with no normalisation (RFC 8414 §3.3; a trailing slash is a
/// different issuer). Entra's multi-tenant endpoints publish a `{tenantid}`
/// template, which stands for the segment asked.
fn issuer_matches(doc_issuer: &str, asked: &str) -> bool {
    if doc_issuer == asked {
        return true;
    }
    doc_issuer.contains("{tenantid}")
        && ["organizations", "common", "consumers"]
            .iter()
            .any(|multi| doc_issuer.replace("{tenantid}", multi) == asked)
}

/// Fetches an authorization server's metadata and checks its issuer.
pub async fn auth_server(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<AuthServer, DiscoveryError> {
    let url = require_secure("authorization server", issuer)?;
    let urls = as_metadata_urls(&url);
    for candidate in &urls {
        let Some(doc) = get_json(http, candidate).await? else {
            continue;
        };
        let meta: AuthServer =
            serde_json::from_value(doc).map_err(|e| DiscoveryError::Malformed {
                what: "authorization server metadata",
                url: candidate.to_string(),
                reason: e.to_string(),
            })?;
        if !issuer_matches(&meta.issuer, issuer) {
            return Err(DiscoveryError::IssuerMismatch {
                url: candidate.to_string(),
                named: meta.issuer,
                asked: issuer.to_owned(),
            });
        }
        meta.check_endpoints()?;
        return Ok(meta);
    }
    Err(DiscoveryError::NotFound {
        what: "authorization server metadata",
        tried: urls.iter().map(Url::as_str).collect::<Vec<_>>().join(", "),
    })
}

/// The 2025-03-26 discovery, for servers without Protected Resource
/// Metadata: the authorization server is the MCP server's origin; its RFC
/// 8414 document at the root, else the default endpoints `/authorize`,
/// `/token` and `/register`. That revision did not tie the document's
/// `issuer` to anything, so it is not checked here (and the client knows
/// this authorization server by its origin, not by what it claims).
pub async fn legacy_auth_server(
    http: &reqwest::Client,
    server: &Url,
) -> Result<AuthServer, DiscoveryError> {
    require_secure("MCP server", server.as_str())?;
    let origin = server.origin().ascii_serialization();
    let mut url = server.clone();
    url.set_path("/.well-known/oauth-authorization-server");
    url.set_query(None);
    if let Some(doc) = get_json(http, &url).await?
        && let Ok(meta) = serde_json::from_value::<AuthServer>(doc)
    {
        meta.check_endpoints()?;
        return Ok(meta);
    }
    Ok(AuthServer {
        issuer: origin.clone(),
        authorization_endpoint: Some(format!("{origin}/authorize")),
        token_endpoint: Some(format!("{origin}/token")),
        registration_endpoint: Some(format!("{origin}/register")),
        device_authorization_endpoint: None,
        code_challenge_methods_supported: vec!["S256".into()],
        authorization_response_iss_parameter_supported: false,
        client_id_metadata_document_supported: false,
        token_endpoint_auth_methods_supported: vec![],
        grant_types_supported: vec![],
        scopes_supported: vec![],
        end_session_endpoint: None,
        cloud_instance_name: None,
        msgraph_host: None,
    })
}

/// What discovery found for a server.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The resource metadata (none for a 2025-03-26 server).
    pub prm: Option<ProtectedResource>,
    /// The authorization server as the client knows it: the issuer the
    /// resource metadata names (and its metadata confirms), or, for a
    /// 2025-03-26 server, the server's origin.
    pub issuer: String,
    /// Its metadata.
    pub meta: AuthServer,
}

/// The specification's discovery for `server`: the resource metadata, then
/// its first authorization server's metadata; for a server of the
/// 2025-03-26 revision (no resource metadata), its origin's.
pub async fn discover(
    http: &reqwest::Client,
    server: &Url,
    challenge: Option<&BearerChallenge>,
) -> Result<Discovered, DiscoveryError> {
    match protected_resource(http, server, challenge).await {
        Ok(prm) => {
            let Some(issuer) = prm.authorization_servers.first().cloned() else {
                return Err(DiscoveryError::NoAuthorizationServer {
                    resource: server.to_string(),
                });
            };
            let meta = auth_server(http, &issuer).await?;
            Ok(Discovered {
                prm: Some(prm),
                issuer,
                meta,
            })
        }
        Err(DiscoveryError::NotFound { .. }) => {
            let meta = legacy_auth_server(http, server).await?;
            Ok(Discovered {
                prm: None,
                issuer: server.origin().ascii_serialization(),
                meta,
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn prm_urls_follow_the_spec_order() {
        let server = url("https://s.example/api/mcp?x=1");
        let got: Vec<String> = prm_urls(&server, None)
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "https://s.example/.well-known/oauth-protected-resource/api/mcp",
                "https://s.example/.well-known/oauth-protected-resource"
            ]
        );
        let c = BearerChallenge {
            resource_metadata: Some("https://s.example/prm".into()),
            ..Default::default()
        };
        assert_eq!(prm_urls(&server, Some(&c)), [url("https://s.example/prm")]);
    }

    #[test]
    fn as_metadata_urls_follow_the_spec_order() {
        let got: Vec<String> = as_metadata_urls(&url("https://login.example/tenant/v2.0"))
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "https://login.example/.well-known/oauth-authorization-server/tenant/v2.0",
                "https://login.example/.well-known/openid-configuration/tenant/v2.0",
                "https://login.example/tenant/v2.0/.well-known/openid-configuration"
            ]
        );
        assert_eq!(as_metadata_urls(&url("https://as.example")).len(), 2);
    }

    #[test]
    fn resource_must_be_this_server() {
        let server = url("https://s.example/mcp");
        assert!(resource_matches("https://s.example/mcp", &server));
        assert!(resource_matches("https://s.example/mcp/", &server));
        assert!(resource_matches("https://s.example", &server));
        assert!(!resource_matches("https://s.example/other", &server));
        assert!(!resource_matches("https://s.example/mc", &server));
        assert!(!resource_matches("https://evil.example/mcp", &server));
        assert!(!resource_matches("http://s.example/mcp", &server));
    }

    #[test]
    fn only_https_or_loopback_http() {
        assert!(require_secure("x", "https://as.example/token").is_ok());
        assert!(require_secure("x", "http://127.0.0.1:8080/token").is_ok());
        assert!(require_secure("x", "http://[::1]:8080/token").is_ok());
        assert!(require_secure("x", "http://localhost/token").is_ok());
        assert!(require_secure("x", "http://as.example/token").is_err());
        assert!(require_secure("x", "http://127.0.0.1.evil.example/token").is_err());
        assert!(require_secure("x", "ftp://as.example/token").is_err());
        assert!(require_secure("x", "not a url").is_err());
    }

    #[test]
    fn entra_template_issuer_matches_multi_tenant_urls() {
        assert!(issuer_matches(
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            "https://login.microsoftonline.com/organizations/v2.0"
        ));
        assert!(!issuer_matches("https://a.example", "https://b.example"));
        assert!(
            !issuer_matches("https://a.example/", "https://a.example"),
            "no normalisation"
        );
    }
}
