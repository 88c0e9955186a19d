//! Who the client is at an authorization server, in the specification's
//! order: a pre-registered client id, a registration kept from before, a
//! Client ID Metadata Document, dynamic client registration (RFC 7591).
//!
//! A configured client secret or key is sent to one authorization server
//! only: the one named with `issuer`, else the one it was first used at
//! (recorded in the store), never another that some server's metadata
//! names. A secret issued by dynamic registration is kept with the issuer
//! that issued it and used nowhere else.

use serde_json::{Value, json};

use crate::assertion::ClientKey;
use crate::discovery::AuthServer;
use crate::error::{ClientError, FlowError, OAuthError, truncate_body};
use crate::grants::Grant;
use crate::oauth::{ClientAuth, json_problem};
use crate::redirect::Loopback;
use crate::secret::{ClientAssertion, ClientSecret};
use crate::store::{Registration, Store};

/// What the client was configured with to identify itself.
#[derive(Clone, Default)]
pub struct Credentials {
    /// A pre-registered client id.
    pub client_id: Option<String>,
    /// Its secret.
    pub secret: Option<ClientSecret>,
    /// Its key, for `private_key_jwt` when there is no secret.
    pub key: Option<ClientKey>,
    /// The authorization server they belong to.
    pub issuer: Option<String>,
    /// A Client ID Metadata Document URL, where the server supports them.
    pub metadata_url: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret)
            .field("key", &self.key)
            .field("issuer", &self.issuer)
            .field("metadata_url", &self.metadata_url)
            .finish()
    }
}

impl Credentials {
    /// Whether a secret or key is configured.
    pub fn confidential(&self) -> bool {
        self.secret.is_some() || self.key.is_some()
    }
}

/// Issuers compared as a person types them: a trailing slash aside.
fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The client's identity at one authorization server.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Client id, secret, redirect URIs.
    pub registration: Registration,
    /// The configured key, when these are the configured credentials.
    key: Option<ClientKey>,
    /// The configured credentials, used here for the first time: recorded
    /// as bound to this issuer once a sign-in succeeds.
    bind_on_success: bool,
    /// A pre-registered client id to keep for later runs (without any
    /// secret) once a sign-in succeeds.
    keep_on_success: bool,
}

impl Identity {
    /// A public client `client_id` at `issuer`: no secret, no key.
    pub fn public(issuer: &str, client_id: &str) -> Self {
        Self {
            registration: Registration {
                issuer: issuer.to_owned(),
                client_id: client_id.to_owned(),
                client_secret: None,
                redirect_uris: vec![],
                token_endpoint_auth_method: Some("none".into()),
            },
            key: None,
            bind_on_success: false,
            keep_on_success: false,
        }
    }

    /// Whether the client can authenticate (client credentials needs it).
    pub fn confidential(&self) -> bool {
        self.registration.client_secret.is_some() || self.key.is_some()
    }

    /// How to authenticate at the token endpoint: the secret as the
    /// registration said, else Basic when the server takes it (RFC 6749's
    /// default), else post; a key's assertion when there is no secret.
    pub fn client_auth(
        &self,
        meta: Option<&AuthServer>,
        issuer: &str,
        token_endpoint: &str,
    ) -> Result<ClientAuth, ClientError> {
        let reg = &self.registration;
        let Some(secret) = reg.client_secret.clone() else {
            if let Some(key) = &self.key {
                // RFC 7523's audience is the issuer; Entra wants its token
                // endpoint.
                let audience = if meta.is_some_and(AuthServer::is_entra_v2) {
                    token_endpoint
                } else {
                    issuer
                };
                return Ok(ClientAuth::Assertion(ClientAssertion::new(
                    key.assertion(&reg.client_id, audience)?,
                )));
            }
            return Ok(ClientAuth::None);
        };
        let basic = match reg.token_endpoint_auth_method.as_deref() {
            Some("none") => return Ok(ClientAuth::None),
            Some("client_secret_post") => false,
            Some("client_secret_basic") => true,
            _ => meta.is_none_or(|m| {
                m.token_endpoint_auth_methods_supported.is_empty()
                    || m.token_endpoint_auth_methods_supported
                        .iter()
                        .any(|a| a == "client_secret_basic")
            }),
        };
        Ok(ClientAuth::Secret { secret, basic })
    }

    /// Records what a successful sign-in settles: the credentials' issuer,
    /// the pre-registered client id. Returns whether the credentials were
    /// bound just now.
    pub fn commit(&mut self, store: &Store) -> std::io::Result<bool> {
        let reg = &self.registration;
        let bound_now = self.bind_on_success;
        if self.bind_on_success {
            store.bind_credentials(&reg.client_id, &reg.issuer)?;
            self.bind_on_success = false;
        }
        if self.keep_on_success {
            if store
                .registration(&reg.issuer)
                .is_none_or(|r| r.client_id != reg.client_id)
            {
                store.save_registration(&Registration {
                    client_secret: None,
                    ..reg.clone()
                })?;
            }
            self.keep_on_success = false;
        }
        Ok(bound_now)
    }
}

/// Refuses an authorization server other than the configured one.
pub fn check_issuer(creds: &Credentials, server: &str, issuer: &str) -> Result<(), ClientError> {
    match &creds.issuer {
        Some(configured) if !same_issuer(configured, issuer) => {
            Err(ClientError::WrongAuthorizationServer {
                server: server.to_owned(),
                configured: configured.clone(),
                named: issuer.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// The configured credentials, if they may be used at `issuer`: with the
/// configured client id, at the issuer they are bound to. `Ok(None)` when
/// none are configured; an error when they belong elsewhere.
fn configured_at(
    creds: &Credentials,
    store: &Store,
    server: &str,
    issuer: &str,
) -> Result<Option<Identity>, ClientError> {
    let Some(client_id) = &creds.client_id else {
        if creds.confidential() {
            return Err(ClientError::CredentialsWithoutClientId);
        }
        return Ok(None);
    };
    check_issuer(creds, server, issuer)?;
    let mut bind_on_success = false;
    if creds.confidential() {
        let bound = creds
            .issuer
            .clone()
            .or_else(|| store.credential_issuer(client_id));
        match bound {
            Some(bound) if !same_issuer(&bound, issuer) => {
                return Err(ClientError::CredentialsBoundElsewhere {
                    client_id: client_id.clone(),
                    bound,
                    server: server.to_owned(),
                    named: issuer.to_owned(),
                });
            }
            Some(_) => {}
            None => bind_on_success = true,
        }
    }
    Ok(Some(Identity {
        registration: Registration {
            issuer: issuer.to_owned(),
            client_id: client_id.clone(),
            client_secret: creds.secret.clone(),
            redirect_uris: vec![],
            token_endpoint_auth_method: None,
        },
        key: creds.key.clone(),
        bind_on_success,
        keep_on_success: true,
    }))
}

/// The identity for tokens kept in the store (a refresh): the configured
/// credentials when they are this client's and belong to this issuer, else
/// the registration kept for the issuer, else a public client. `None` when
/// the configured credentials belong elsewhere: then a full sign-in says
/// why.
pub fn for_cached(
    creds: &Credentials,
    store: &Store,
    server: &str,
    issuer: &str,
    client_id: &str,
) -> Option<Identity> {
    if creds.client_id.as_deref() == Some(client_id) {
        return configured_at(creds, store, server, issuer).ok().flatten();
    }
    if creds.issuer.is_some() && check_issuer(creds, server, issuer).is_err() {
        return None;
    }
    let registration = store
        .registration(issuer)
        .filter(|r| r.client_id == client_id)
        .unwrap_or(Registration {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: None,
            redirect_uris: vec![],
            token_endpoint_auth_method: None,
        });
    Some(Identity {
        registration,
        key: None,
        bind_on_success: false,
        keep_on_success: false,
    })
}

/// The identity at `issuer`, registering if that is the way.
pub async fn identify(
    http: &reqwest::Client,
    creds: &Credentials,
    store: &Store,
    server: &str,
    meta: &AuthServer,
    issuer: &str,
    grant: Grant,
) -> Result<Identity, ClientError> {
    if let Some(identity) = configured_at(creds, store, server, issuer)? {
        return Ok(identity);
    }
    check_issuer(creds, server, issuer)?;
    let kept = |registration| Identity {
        registration,
        key: None,
        bind_on_success: false,
        keep_on_success: false,
    };
    if let Some(r) = store.registration(issuer) {
        return Ok(kept(r));
    }
    if meta.client_id_metadata_document_supported
        && let Some(url) = &creds.metadata_url
    {
        return Ok(kept(Registration {
            issuer: issuer.to_owned(),
            client_id: url.clone(),
            client_secret: None,
            redirect_uris: vec![],
            token_endpoint_auth_method: Some("none".into()),
        }));
    }
    let Some(endpoint) = &meta.registration_endpoint else {
        return Err(ClientError::NoClientIdentity {
            issuer: issuer.to_owned(),
            entra: meta.is_entra_v2(),
        });
    };
    let registration = register(http, endpoint, issuer, grant).await?;
    store.save_registration(&registration)?;
    Ok(kept(registration))
}

/// RFC 7591 dynamic registration: a native public client with a loopback
/// redirect URI for the grant it will use, or a confidential one for
/// client credentials.
async fn register(
    http: &reqwest::Client,
    endpoint: &str,
    issuer: &str,
    grant: Grant,
) -> Result<Registration, ClientError> {
    let loopback = Loopback::bind(None).await?;
    let redirect_uri = loopback.redirect_uri.clone();
    drop(loopback);
    let (grant_types, response_types, auth_method) = match grant {
        Grant::ClientCredentials => (
            json!(["client_credentials"]),
            json!([]),
            "client_secret_basic",
        ),
        Grant::DeviceCode => (
            json!([
                "urn:ietf:params:oauth:grant-type:device_code",
                "refresh_token"
            ]),
            json!([]),
            "none",
        ),
        Grant::Browser | Grant::FollowRedirect => (
            json!(["authorization_code", "refresh_token"]),
            json!(["code"]),
            "none",
        ),
    };
    let body = json!({
        "client_name": "mcpgate",
        "redirect_uris": [redirect_uri],
        "grant_types": grant_types,
        "response_types": response_types,
        "token_endpoint_auth_method": auth_method,
        "application_type": "native",
    });
    let http_err = |source| FlowError::Http {
        url: endpoint.to_owned(),
        source,
    };
    let resp = http
        .post(endpoint)
        .json(&body)
        .send()
        .await
        .map_err(http_err)?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(http_err)?;
    if !(200..300).contains(&status) {
        return Err(ClientError::Flow(
            match OAuthError::from_body(status, &bytes) {
                Some(e) => FlowError::Refused(e),
                None => FlowError::Malformed {
                    endpoint: "registration",
                    what: "OAuth error",
                    status,
                    detail: "no `error` member".into(),
                    body: Some(truncate_body(&bytes)),
                },
            },
        ));
    }
    let malformed = |detail: String| FlowError::Malformed {
        endpoint: "registration",
        what: "client information response",
        status,
        detail,
        body: None,
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| malformed(json_problem(&e)))?;
    let Some(client_id) = value["client_id"].as_str() else {
        return Err(malformed("no client_id".into()).into());
    };
    Ok(Registration {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        client_secret: value["client_secret"].as_str().map(ClientSecret::new),
        redirect_uris: value["redirect_uris"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_else(|| vec![redirect_uri]),
        token_endpoint_auth_method: value["token_endpoint_auth_method"]
            .as_str()
            .map(str::to_owned),
    })
}
