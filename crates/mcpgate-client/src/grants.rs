//! The grants that get a token: which one a sign-in uses, and each of
//! them. The authorization code grant is written as the states it goes
//! through, each named for what it expects next: [`ExpectCallback`] holds
//! the request (and the PKCE verifier) until the authorization response
//! arrives, [`ExpectToken`] holds the code until it is redeemed.

use std::time::Duration;

use url::Url;

use crate::claims::Claims;
use crate::discovery::AuthServer;
use crate::error::{ClientError, FlowError};
use crate::oauth::{
    self, AuthorizeRequest, ClientAuth, DeviceAuthorization, Pkce, TokenSet, random_string,
    token_request,
};
use crate::redirect::{self, Browser, Loopback};
use crate::secret::{PkceVerifier, RefreshToken};
use crate::store::Registration;

/// How long a browser sign-in may take.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

/// How a person (or a script) signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// Authorization code in the system browser, with a loopback redirect;
    /// a device code where no browser can be opened.
    Browser,
    /// Authorization code, following the redirect with an HTTP client
    /// (servers that approve without a page; scripts, conformance runs).
    NonInteractive,
    /// Device code: a code to enter on another device.
    DeviceCode,
    /// Client credentials (no user).
    ClientCredentials,
}

/// The grant a sign-in uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Authorization code, the browser bringing the response back.
    Browser,
    /// Authorization code, the redirect followed by the client itself.
    FollowRedirect,
    /// Device code.
    DeviceCode,
    /// Client credentials.
    ClientCredentials,
}

impl Grant {
    /// Whether a user signs in (and PKCE is needed for the code grants).
    pub fn has_user(self) -> bool {
        self != Self::ClientCredentials
    }

    /// Whether it is an authorization code grant.
    pub fn uses_pkce(self) -> bool {
        matches!(self, Self::Browser | Self::FollowRedirect)
    }
}

/// Chooses the grant: client credentials when the authorization server
/// offers nothing else and the client has credentials to use it; a device
/// code when a browser was asked for and none can be opened here (or an
/// error naming what works, before anything waits).
pub fn choose(
    sign_in: SignIn,
    meta: &AuthServer,
    issuer: &str,
    confidential: bool,
    browser: &dyn Browser,
    notify: &(dyn Fn(&str) + Sync),
) -> Result<Grant, ClientError> {
    if sign_in == SignIn::ClientCredentials || (confidential && meta.only_client_credentials()) {
        return Ok(Grant::ClientCredentials);
    }
    Ok(match sign_in {
        SignIn::ClientCredentials => Grant::ClientCredentials,
        SignIn::DeviceCode => Grant::DeviceCode,
        SignIn::NonInteractive => Grant::FollowRedirect,
        SignIn::Browser => match browser.available() {
            Ok(()) => Grant::Browser,
            Err(reason) => no_browser(meta, issuer, reason, notify)?,
        },
    })
}

/// Where no browser can be opened: the device code when the server offers
/// it, else an error naming what works.
fn no_browser(
    meta: &AuthServer,
    issuer: &str,
    reason: redirect::NoBrowser,
    notify: &(dyn Fn(&str) + Sync),
) -> Result<Grant, ClientError> {
    if meta.device_authorization_endpoint.is_some() {
        notify(&format!(
            "No browser can be opened here ({reason}): signing in with a device code instead (--device-code)."
        ));
        return Ok(Grant::DeviceCode);
    }
    Err(ClientError::NoBrowser {
        reason,
        issuer: issuer.to_owned(),
    })
}

/// What runs a user's grant: the HTTP client that follows no redirect (the
/// non-interactive mode), the browser, and where prompts go.
pub struct Runner<'a> {
    /// Follows no redirect.
    pub http_no_redirect: &'a reqwest::Client,
    /// Opens the sign-in page.
    pub browser: &'a std::sync::Arc<dyn Browser>,
    /// Where prompts go.
    pub notify: &'a (dyn Fn(&str) + Sync),
}

impl Runner<'_> {
    /// Runs `grant` to its tokens. A browser that cannot be opened falls
    /// back to a device code where the server offers one. `claims`, after
    /// a claims challenge, go on the authorization (or device) request, so
    /// that the identity provider asks for what they name (a second
    /// factor); the client credentials grant has no user to ask.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        grant: Grant,
        endpoint: &TokenEndpoint<'_>,
        identity: &crate::registration::Identity,
        meta: &AuthServer,
        issuer: &str,
        scopes: &[String],
        resource: Option<&str>,
        claims: Option<&Claims>,
    ) -> Result<TokenSet, ClientError> {
        let notify = self.notify;
        let device_endpoint = || {
            meta.device_authorization_endpoint
                .as_deref()
                .ok_or_else(|| ClientError::MissingEndpoint {
                    issuer: issuer.to_owned(),
                    endpoint: "device authorization endpoint",
                    hint: ": sign in with a browser instead",
                })
        };
        Ok(match grant {
            Grant::ClientCredentials => endpoint.client_credentials(scopes, resource).await?,
            Grant::DeviceCode => {
                endpoint
                    .device_code(device_endpoint()?, scopes, resource, claims, notify)
                    .await?
            }
            Grant::FollowRedirect => {
                let start = ExpectCallback::start(
                    &identity.registration,
                    meta,
                    issuer,
                    scopes,
                    resource,
                    claims,
                )
                .await?;
                start
                    .by_following(self.http_no_redirect, meta)
                    .await?
                    .redeem(endpoint, resource)
                    .await?
            }
            Grant::Browser => {
                let start = ExpectCallback::start(
                    &identity.registration,
                    meta,
                    issuer,
                    scopes,
                    resource,
                    claims,
                )
                .await?;
                notify(&format!("Sign in at: {}", start.url()));
                let browser = self.browser.clone();
                let url = start.url().clone();
                let opened = tokio::task::spawn_blocking(move || browser.open(&url))
                    .await
                    .map_err(ClientError::Task)?;
                if let Err(reason) = opened {
                    // Nothing would ever arrive: do not wait for it.
                    drop(start);
                    if meta.device_authorization_endpoint.is_none() {
                        return Err(ClientError::NoBrowser {
                            reason,
                            issuer: issuer.to_owned(),
                        });
                    }
                    notify(&format!(
                        "(could not open a browser: {reason}; signing in with a device code instead)"
                    ));
                    endpoint
                        .device_code(device_endpoint()?, scopes, resource, claims, notify)
                        .await?
                } else {
                    start
                        .by_browser(meta, BROWSER_TIMEOUT)
                        .await?
                        .redeem(endpoint, resource)
                        .await?
                }
            }
        })
    }
}

/// What every token request of one sign-in shares.
pub struct TokenEndpoint<'a> {
    /// The HTTP client.
    pub http: &'a reqwest::Client,
    /// The endpoint.
    pub url: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// How the client authenticates.
    pub auth: &'a ClientAuth,
}

impl TokenEndpoint<'_> {
    async fn request(&self, form: Vec<(&str, String)>) -> Result<TokenSet, FlowError> {
        token_request(self.http, self.url, self.client_id, self.auth, form).await
    }

    /// The client credentials grant.
    pub async fn client_credentials(
        &self,
        scopes: &[String],
        resource: Option<&str>,
    ) -> Result<TokenSet, FlowError> {
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        push_scope_and_resource(&mut form, scopes, resource);
        self.request(form).await
    }

    /// A refresh.
    pub async fn refresh(
        &self,
        refresh_token: &RefreshToken,
        scopes: &[String],
        resource: Option<&str>,
    ) -> Result<TokenSet, FlowError> {
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.secret().to_owned()),
        ];
        push_scope_and_resource(&mut form, scopes, resource);
        self.request(form).await
    }

    /// The device code grant: starts it, shows the code, polls until a
    /// person approves or the code expires.
    pub async fn device_code(
        &self,
        device_endpoint: &str,
        scopes: &[String],
        resource: Option<&str>,
        claims: Option<&Claims>,
        notify: &(dyn Fn(&str) + Sync),
    ) -> Result<TokenSet, FlowError> {
        let device: DeviceAuthorization = oauth::device_authorization(
            self.http,
            device_endpoint,
            self.client_id,
            scopes,
            resource,
            claims,
        )
        .await?;
        notify(&device.message.clone().unwrap_or_else(|| {
            format!(
                "To sign in, open {} and enter the code {}",
                device.verification_uri, device.user_code
            )
        }));
        oauth::poll_device(self.http, self.url, self.client_id, self.auth, &device).await
    }
}

fn push_scope_and_resource(
    form: &mut Vec<(&str, String)>,
    scopes: &[String],
    resource: Option<&str>,
) {
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    if let Some(r) = resource {
        form.push(("resource", r.to_owned()));
    }
}

/// An authorization code sign-in, its request made, waiting for the
/// authorization response.
#[derive(Debug)]
pub struct ExpectCallback {
    loopback: Loopback,
    request: AuthorizeRequest,
    url: Url,
}

impl ExpectCallback {
    /// Listens on loopback (on the registered port, if the registration
    /// has one) and builds the authorization URL.
    pub async fn start(
        registration: &Registration,
        meta: &AuthServer,
        issuer: &str,
        scopes: &[String],
        resource: Option<&str>,
        claims: Option<&Claims>,
    ) -> Result<Self, ClientError> {
        let port = registration
            .redirect_uris
            .iter()
            .filter_map(|u| Url::parse(u).ok())
            .find_map(|u| u.port());
        let loopback = Loopback::bind(port).await?;
        let endpoint =
            meta.authorization_endpoint
                .as_deref()
                .ok_or_else(|| ClientError::MissingEndpoint {
                    issuer: issuer.to_owned(),
                    endpoint: "authorization endpoint",
                    hint: "",
                })?;
        let request = AuthorizeRequest {
            client_id: registration.client_id.clone(),
            redirect_uri: loopback.redirect_uri.clone(),
            scopes: scopes.to_vec(),
            resource: resource.map(str::to_owned),
            state: random_string(),
            pkce: Pkce::new(),
            claims: claims.cloned(),
        };
        let url = request.url(endpoint)?;
        Ok(Self {
            loopback,
            request,
            url,
        })
    }

    /// The URL a person opens.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The browser brings the response to the loopback listener.
    pub async fn by_browser(
        self,
        meta: &AuthServer,
        timeout: Duration,
    ) -> Result<ExpectToken, FlowError> {
        let redirected = self.loopback.wait(&self.request.state, timeout).await?;
        self.into_token(&redirected, meta)
    }

    /// The client follows the authorization endpoint's redirect itself.
    pub async fn by_following(
        self,
        http_no_redirect: &reqwest::Client,
        meta: &AuthServer,
    ) -> Result<ExpectToken, FlowError> {
        let redirected =
            redirect::follow(http_no_redirect, &self.url, &self.request.redirect_uri).await?;
        self.into_token(&redirected, meta)
    }

    fn into_token(self, redirected: &Url, meta: &AuthServer) -> Result<ExpectToken, FlowError> {
        let code = oauth::read_authorization_response(redirected, &self.request.state, meta)?;
        Ok(ExpectToken {
            code,
            redirect_uri: self.request.redirect_uri,
            verifier: self.request.pkce.verifier,
        })
    }
}

/// An authorization code, waiting to be redeemed with its verifier.
pub struct ExpectToken {
    code: String,
    redirect_uri: String,
    verifier: PkceVerifier,
}

impl std::fmt::Debug for ExpectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpectToken")
            .field("code", &"[redacted]")
            .field("redirect_uri", &self.redirect_uri)
            .field("verifier", &self.verifier)
            .finish()
    }
}

impl ExpectToken {
    /// Redeems the code; the verifier is spent.
    pub async fn redeem(
        self,
        endpoint: &TokenEndpoint<'_>,
        resource: Option<&str>,
    ) -> Result<TokenSet, FlowError> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", self.code),
            ("redirect_uri", self.redirect_uri),
            ("code_verifier", self.verifier.secret().to_owned()),
        ];
        if let Some(r) = resource {
            form.push(("resource", r.to_owned()));
        }
        endpoint.request(form).await
    }
}
