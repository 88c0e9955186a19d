//! The OAuth requests: PKCE, the authorization URL and its response, and
//! the token endpoint (code, refresh, device code, client credentials).
//!
//! Written over reqwest rather than the `oauth2` crate: the specification's
//! per-server decisions (send `resource` or not, check `iss`, union of
//! scopes on step-up, Entra's quirks) sit between every step, and the
//! requests themselves are small forms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use crate::claims::Claims;
use crate::discovery::AuthServer;
pub use crate::error::{FlowError, OAuthError};
use crate::secret::{
    AccessToken, ClientAssertion, ClientSecret, DeviceCode, PkceVerifier, RefreshToken,
};

/// 32 random bytes from the OS, base64url: `state` values and verifiers.
pub fn random_string() -> String {
    let mut bytes = [0u8; 32];
    // The OS RNG fails only when the kernel cannot give entropy; then no
    // secure flow can go on.
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A PKCE pair (RFC 7636, S256). Not `Clone`: the verifier is spent by
/// one token request.
#[derive(Debug)]
pub struct Pkce {
    /// The verifier, kept by the client.
    pub verifier: PkceVerifier,
    /// `BASE64URL(SHA256(verifier))`, sent on the authorize request.
    pub challenge: String,
}

impl Pkce {
    /// A fresh pair.
    pub fn new() -> Self {
        let verifier = random_string();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier: PkceVerifier::new(verifier),
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// What an authorization request asks for.
#[derive(Debug)]
pub struct AuthorizeRequest {
    /// Client id.
    pub client_id: String,
    /// Redirect URI.
    pub redirect_uri: String,
    /// Scopes (may be empty).
    pub scopes: Vec<String>,
    /// RFC 8707 resource, when it is to be sent.
    pub resource: Option<String>,
    /// CSRF `state`.
    pub state: String,
    /// PKCE.
    pub pkce: Pkce,
    /// What the sign-in must satisfy, after a claims challenge (sent as
    /// the `claims` parameter, OpenID Connect Core §5.5).
    pub claims: Option<Claims>,
}

impl AuthorizeRequest {
    /// The URL to open.
    pub fn url(&self, endpoint: &str) -> Result<Url, FlowError> {
        let mut url = Url::parse(endpoint).map_err(|e| FlowError::BadUrl {
            what: "authorization endpoint",
            url: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("state", &self.state)
                .append_pair("code_challenge", &self.pkce.challenge)
                .append_pair("code_challenge_method", "S256");
            if !self.scopes.is_empty() {
                q.append_pair("scope", &self.scopes.join(" "));
            }
            if let Some(r) = &self.resource {
                q.append_pair("resource", r);
            }
            if let Some(c) = &self.claims {
                q.append_pair("claims", c.as_json());
            }
        }
        Ok(url)
    }
}

/// Reads the authorization response from the redirect URL: checks `state`
/// and RFC 9207 `iss`, returns the code.
pub fn read_authorization_response(
    redirect: &Url,
    state: &str,
    server: &AuthServer,
) -> Result<String, FlowError> {
    let params: std::collections::HashMap<String, String> = redirect
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if params.get("state").map(String::as_str) != Some(state) {
        return Err(FlowError::StateMismatch);
    }
    match params.get("iss") {
        // Compared as strings, with no normalisation (RFC 9207 §2.4).
        Some(iss) if *iss != server.issuer => {
            return Err(FlowError::IssuerMismatch {
                got: iss.clone(),
                expected: server.issuer.clone(),
            });
        }
        None if server.authorization_response_iss_parameter_supported => {
            return Err(FlowError::IssuerMissing {
                issuer: server.issuer.clone(),
            });
        }
        _ => {}
    }
    if let Some(error) = params.get("error") {
        return Err(FlowError::Refused(OAuthError {
            error: error.clone(),
            description: params.get("error_description").cloned(),
            uri: params.get("error_uri").cloned(),
            status: None,
            // The parameters as received, but never a code.
            body: crate::error::truncate_body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(redirect.query_pairs().filter(|(k, _)| k != "code"))
                    .finish()
                    .as_bytes(),
            ),
        }));
    }
    params.get("code").cloned().ok_or(FlowError::NoCode)
}

/// A token endpoint answer. `Debug` shows no token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSet {
    /// The access token.
    pub access_token: AccessToken,
    /// `Bearer`.
    #[serde(default)]
    pub token_type: String,
    /// A refresh token, if issued.
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
    /// Granted scopes, if said.
    #[serde(default)]
    pub scope: Option<String>,
    /// Expiry, Unix seconds (computed from `expires_in`).
    #[serde(default)]
    pub expires_at: Option<u64>,
}

#[derive(Deserialize)]
struct RawToken {
    access_token: AccessToken,
    #[serde(default)]
    token_type: String,
    #[serde(default)]
    refresh_token: Option<RefreshToken>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How the client authenticates at the token endpoint. `Debug` shows no
/// secret.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// A public client: `client_id` only.
    None,
    /// `client_secret_basic` or `client_secret_post`.
    Secret {
        /// The secret.
        secret: ClientSecret,
        /// Use HTTP Basic rather than the form.
        basic: bool,
    },
    /// `private_key_jwt` with an assertion built by the caller.
    Assertion(ClientAssertion),
}

/// Sends a form to an OAuth endpoint; a non-2xx answer becomes the OAuth
/// error it carries, with its raw body.
async fn send_form(
    req: reqwest::RequestBuilder,
    url: &str,
    form: &[(&str, String)],
    endpoint: &'static str,
) -> Result<(u16, bytes::Bytes), FlowError> {
    let http_err = |source| FlowError::Http {
        url: url.to_owned(),
        source,
    };
    let resp = req.form(form).send().await.map_err(http_err)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(http_err)?;
    if !status.is_success() {
        return Err(match OAuthError::from_body(status.as_u16(), &body) {
            Some(e) => FlowError::Refused(e),
            None => FlowError::Malformed {
                endpoint,
                what: "OAuth error",
                status: status.as_u16(),
                detail: "no `error` member".into(),
                body: Some(crate::error::truncate_body(&body)),
            },
        });
    }
    Ok((status.as_u16(), body))
}

/// What is wrong with a JSON document, without quoting its values (the
/// document may hold tokens).
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "a member is missing or of the wrong type",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{kind} (line {}, column {})", e.line(), e.column())
}

/// Posts a form to the token endpoint and reads the answer.
pub async fn token_request(
    http: &reqwest::Client,
    endpoint: &str,
    client_id: &str,
    auth: &ClientAuth,
    mut form: Vec<(&str, String)>,
) -> Result<TokenSet, FlowError> {
    let mut req = http.post(endpoint).header("accept", "application/json");
    match auth {
        ClientAuth::None => form.push(("client_id", client_id.to_owned())),
        ClientAuth::Secret {
            secret,
            basic: true,
        } => {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(client_id), Some(enc(secret.secret())));
        }
        ClientAuth::Secret {
            secret,
            basic: false,
        } => {
            form.push(("client_id", client_id.to_owned()));
            form.push(("client_secret", secret.secret().to_owned()));
        }
        ClientAuth::Assertion(jwt) => {
            form.push(("client_id", client_id.to_owned()));
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ));
            form.push(("client_assertion", jwt.secret().to_owned()));
        }
    }
    let (status, body) = send_form(req, endpoint, &form, "token").await?;
    let raw: RawToken = serde_json::from_slice(&body).map_err(|e| FlowError::Malformed {
        endpoint: "token",
        what: "token response",
        status,
        detail: json_problem(&e),
        body: None,
    })?;
    let expires_in = raw.expires_in.and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    });
    Ok(TokenSet {
        access_token: raw.access_token,
        token_type: raw.token_type,
        refresh_token: raw.refresh_token,
        scope: raw.scope,
        expires_at: expires_in.map(|s| unix_now() + s),
    })
}

/// The device authorization response (RFC 8628 §3.2). `Debug` shows no
/// device code.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAuthorization {
    /// The device code.
    pub device_code: DeviceCode,
    /// The code a person types.
    pub user_code: String,
    /// Where to type it.
    #[serde(alias = "verification_url")]
    pub verification_uri: String,
    /// The same, with the code in it.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Lifetime.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Polling interval.
    #[serde(default)]
    pub interval: Option<u64>,
    /// A message to show (Entra sends one).
    #[serde(default)]
    pub message: Option<String>,
}

/// Starts a device authorization (with `claims`, after a claims
/// challenge, as Entra's device code endpoint takes them).
pub async fn device_authorization(
    http: &reqwest::Client,
    endpoint: &str,
    client_id: &str,
    scopes: &[String],
    resource: Option<&str>,
    claims: Option<&Claims>,
) -> Result<DeviceAuthorization, FlowError> {
    let mut form = vec![("client_id", client_id.to_owned())];
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    if let Some(r) = resource {
        form.push(("resource", r.to_owned()));
    }
    if let Some(c) = claims {
        form.push(("claims", c.as_json().to_owned()));
    }
    let (status, body) =
        send_form(http.post(endpoint), endpoint, &form, "device authorization").await?;
    serde_json::from_slice(&body).map_err(|e| FlowError::Malformed {
        endpoint: "device authorization",
        what: "device authorization response",
        status,
        detail: json_problem(&e),
        body: None,
    })
}

/// Polls the token endpoint for a device code until it is approved,
/// denied or expired, honouring `interval` and `slow_down`.
pub async fn poll_device(
    http: &reqwest::Client,
    endpoint: &str,
    client_id: &str,
    auth: &ClientAuth,
    device: &DeviceAuthorization,
) -> Result<TokenSet, FlowError> {
    let mut interval = Duration::from_secs(device.interval.unwrap_or(5).max(1));
    let deadline =
        std::time::Instant::now() + Duration::from_secs(device.expires_in.unwrap_or(900));
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(interval).await;
        }
        first = false;
        if std::time::Instant::now() > deadline {
            return Err(FlowError::DeviceCodeExpired);
        }
        let form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
            ),
            ("device_code", device.device_code.secret().to_owned()),
        ];
        match token_request(http, endpoint, client_id, auth, form).await {
            Ok(t) => return Ok(t),
            Err(FlowError::Refused(e)) if e.is("authorization_pending") => {}
            Err(FlowError::Refused(e)) if e.is("slow_down") => {
                interval += Duration::from_secs(5);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(iss_supported: bool) -> AuthServer {
        serde_json::from_value(serde_json::json!({
            "issuer": "https://as.example",
            "authorization_response_iss_parameter_supported": iss_supported,
        }))
        .expect("metadata")
    }

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let p = Pkce::new();
        assert_eq!(p.verifier.secret().len(), 43);
        assert_eq!(
            p.challenge,
            URL_SAFE_NO_PAD.encode(Sha256::digest(p.verifier.secret().as_bytes()))
        );
        assert_ne!(Pkce::new().verifier, p.verifier);
    }

    #[test]
    fn authorization_response_checks_state_and_iss() {
        let s = server(false);
        let ok = Url::parse("http://127.0.0.1:1/cb?code=c&state=s").expect("url");
        assert_eq!(
            read_authorization_response(&ok, "s", &s).expect("code"),
            "c"
        );
        assert!(read_authorization_response(&ok, "other", &s).is_err());
        let wrong_iss = Url::parse("http://127.0.0.1:1/cb?code=c&state=s&iss=https://evil.example")
            .expect("url");
        assert!(read_authorization_response(&wrong_iss, "s", &s).is_err());
        let right_iss =
            Url::parse("http://127.0.0.1:1/cb?code=c&state=s&iss=https://as.example").expect("url");
        assert!(read_authorization_response(&right_iss, "s", &server(true)).is_ok());
        assert!(
            read_authorization_response(&ok, "s", &server(true)).is_err(),
            "iss required when advertised"
        );
        let denied = Url::parse("http://127.0.0.1:1/cb?error=access_denied&state=s").expect("url");
        assert!(matches!(
            read_authorization_response(&denied, "s", &s),
            Err(FlowError::Refused(_))
        ));
    }

    #[test]
    fn authorize_url_carries_pkce_and_optional_resource() {
        let req = AuthorizeRequest {
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1:9/cb".into(),
            scopes: vec!["a".into(), "b".into()],
            resource: None,
            state: "s".into(),
            pkce: Pkce::new(),
            claims: None,
        };
        let url = req.url("https://as.example/authorize?x=1").expect("url");
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["scope"], "a b");
        assert_eq!(q["x"], "1");
        assert!(!q.contains_key("resource"));
        assert!(!q.contains_key("claims"));
    }

    #[test]
    fn authorize_url_carries_the_claims_json_url_encoded() {
        let json = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;
        let req = AuthorizeRequest {
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1:9/cb".into(),
            scopes: vec!["a".into()],
            resource: None,
            state: "s".into(),
            pkce: Pkce::new(),
            claims: Some(Claims::from_json(json).expect("claims")),
        };
        let url = req.url("https://as.example/authorize").expect("url");
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["claims"], json);
        assert!(
            url.query()
                .unwrap_or_default()
                .contains("claims=%7B%22access_token%22"),
            "{url}"
        );
    }
}
