//! `/{tenant}/oauth2/v2.0/token`: client authentication and the grants
//! (authorization code with PKCE, refresh with rotation and reuse
//! detection, client credentials, device code, On-Behalf-Of).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha2::{Digest, Sha256};

use mcpgate_store::{FamilyId, Redemption, Rotation};

use crate::client_assertion;
use crate::conditional_access::{AuthContext, ClaimsRequest};
use crate::directory::App;
use crate::error::AadError;
use crate::grants::{self, Consents, store_failed};
use crate::idp::{Delegated, Idp};
use crate::mint::ClientAuth;
use crate::params::Params;
use crate::scope;
use crate::state::{CODE_TTL, DeviceStatus};
use crate::token_error::TokenError;
use crate::util::{b64url, ct_eq, token_hash};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1: form-urlencoded
/// inside the base64).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// Identifies and authenticates the client.
fn authenticate<'a>(
    idp: &'a Idp,
    tenant: &str,
    p: &Params,
    headers: &HeaderMap,
) -> Result<(&'a App, ClientAuth), AadError> {
    let basic = basic_credentials(headers);
    let client_id = match (p.get("client_id"), &basic) {
        (Some(id), Some((basic_id, _))) if !id.eq_ignore_ascii_case(basic_id) => {
            return Err(AadError::from(TokenError::ClientIdMismatch));
        }
        (Some(id), _) => id.to_owned(),
        (None, Some((id, _))) => id.clone(),
        (None, None) => return Err(AadError::missing("client_id")),
    };
    let client = idp
        .dir
        .app(&client_id)
        .ok_or_else(|| AadError::unknown_client(&client_id, tenant))?;
    if let Some(t) = idp.dir.tenant(tenant)
        && t.id != client.tenant
    {
        return Err(AadError::unknown_client(&client_id, tenant));
    }
    let secret = p
        .get("client_secret")
        .map(str::to_owned)
        .or_else(|| basic.map(|(_, s)| s));
    let assertion = p.get("client_assertion");
    if client.public_client {
        if secret.is_some() || assertion.is_some() {
            return Err(AadError::from(TokenError::PublicClientWithCredential));
        }
        return Ok((client, ClientAuth::Public));
    }
    if let Some(assertion) = assertion {
        if secret.is_some() {
            return Err(AadError::from(TokenError::TwoCredentials));
        }
        if p.get("client_assertion_type") != Some(client_assertion::JWT_BEARER_ASSERTION) {
            return Err(AadError::from(TokenError::ClientAssertionType));
        }
        let endpoints: Vec<String> = [tenant, client.tenant.as_str()]
            .iter()
            .flat_map(|t| {
                [
                    format!("{}/{t}/oauth2/v2.0/token", idp.base),
                    format!("{}/{t}/oauth2/token", idp.base),
                ]
            })
            .collect();
        client_assertion::verify(
            &client.client_id,
            &client.certificates,
            assertion,
            &endpoints,
            idp.now(),
        )
        .map_err(AadError::from)?;
        return Ok((client, ClientAuth::Certificate));
    }
    let Some(secret) = secret else {
        return Err(AadError::from(TokenError::CredentialMissing));
    };
    let generated = idp.generated_secrets.get(&client.client_id);
    if !client.secret_matches(&secret, generated) {
        return Err(AadError::from(TokenError::SecretWrong {
            client_id: client.client_id.clone(),
        }));
    }
    Ok((client, ClientAuth::Secret))
}

/// The user a grant was made to, if still in the directory.
fn grant_user<'a>(idp: &'a Idp, oid: &str) -> Result<&'a crate::directory::User, AadError> {
    idp.dir
        .user_by_oid(oid)
        .ok_or_else(|| AadError::from(TokenError::UserGone))
}

fn ok(body: Value) -> Response {
    let mut resp = (StatusCode::OK, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    resp.headers_mut()
        .insert(header::PRAGMA, "no-cache".parse().expect("static"));
    resp
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub async fn post(
    State(idp): State<Arc<Idp>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let result = match read_form(form) {
        Ok(p) => grant(&idp, &tenant, &p, &headers).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(body) => ok(body),
        Err(e) => {
            tracing::info!(error = e.error, code = e.code, "token request refused");
            e.into_response()
        }
    }
}

/// The form body; a body that is not a form (or too large) is refused in
/// Entra's words rather than axum's.
pub(crate) fn read_form(
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Result<Params, AadError> {
    match form {
        Ok(Form(pairs)) => Params::new(pairs),
        Err(rejection) => Err(AadError::new(
            "invalid_request",
            9002313,
            format!("Invalid request. Request is malformed or invalid: {rejection}"),
        )
        .with_status(rejection.status())),
    }
}

/// The grants the token endpoint knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    /// `authorization_code`.
    AuthorizationCode,
    /// `refresh_token`.
    RefreshToken,
    /// `client_credentials`.
    ClientCredentials,
    /// RFC 8628's URN, or `device_code` as MSAL (Node, .NET) sends it and
    /// Entra accepts.
    DeviceCode,
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer` (On-Behalf-Of).
    JwtBearer,
}

impl GrantType {
    /// Parses a `grant_type` value; `None` for one the IdP does not know.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "authorization_code" => Self::AuthorizationCode,
            "refresh_token" => Self::RefreshToken,
            "client_credentials" => Self::ClientCredentials,
            DEVICE_GRANT | "device_code" => Self::DeviceCode,
            JWT_BEARER => Self::JwtBearer,
            _ => return None,
        })
    }
}

async fn grant(
    idp: &Idp,
    tenant: &str,
    p: &Params,
    headers: &HeaderMap,
) -> Result<Value, AadError> {
    idp.tenant_segment_ok(tenant)?;
    let raw = p.require("grant_type")?;
    let grant_type = GrantType::parse(raw)
        .ok_or_else(|| AadError::from(TokenError::UnsupportedGrantType(raw.to_owned())))?;
    let (client, auth) = authenticate(idp, tenant, p, headers)?;
    let want_client_info = p.get("client_info") == Some("1");
    match grant_type {
        GrantType::AuthorizationCode => {
            authorization_code(idp, client, auth, p, want_client_info).await
        }
        GrantType::RefreshToken => refresh(idp, tenant, client, auth, p, want_client_info).await,
        GrantType::ClientCredentials => client_credentials(idp, tenant, client, auth, p),
        GrantType::DeviceCode => device_code(idp, client, auth, p, want_client_info).await,
        GrantType::JwtBearer => on_behalf_of(idp, tenant, client, auth, p, want_client_info).await,
    }
}

/// Checks a PKCE verifier against the code's challenge (RFC 7636 S256).
fn pkce_ok(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), AadError> {
    match (challenge, verifier) {
        (Some(challenge), Some(verifier)) => {
            let computed = b64url(Sha256::digest(verifier.as_bytes()));
            if (43..=128).contains(&verifier.len())
                && ct_eq(computed.as_bytes(), challenge.as_bytes())
            {
                Ok(())
            } else {
                Err(AadError::from(TokenError::VerifierMismatch))
            }
        }
        (Some(_), None) => Err(AadError::missing("code_verifier")),
        (None, Some(_)) => Err(AadError::from(TokenError::VerifierWithoutChallenge)),
        (None, None) => Ok(()),
    }
}

/// The user's consents to the client, read only when the request names a
/// resource (OpenID scopes need none).
async fn consents_for(
    idp: &Idp,
    user_oid: &str,
    client: &App,
    req: &scope::ScopeRequest,
) -> Result<Consents, AadError> {
    if req.explicit_resource {
        idp.consents(user_oid, client).await
    } else {
        Ok(Consents::default())
    }
}

/// The authorization code grant. Everything is checked against the code as
/// read from the store, and only then is it spent (`redeem_code`, which
/// one caller wins): a redemption refused for its redirect URI or verifier
/// leaves the code to its rightful holder, as Entra does.
async fn authorization_code(
    idp: &Idp,
    client: &App,
    auth: ClientAuth,
    p: &Params,
    want_client_info: bool,
) -> Result<Value, AadError> {
    let code = p.require("code")?;
    let redirect_uri = p.require("redirect_uri")?;
    let now = idp.now();
    let hash = grants::grant_hash(code);
    let found = idp.store.get_code(&hash).await.map_err(store_failed)?;
    let Some(found) = found else {
        return Err(AadError::from(TokenError::CodeUnknown));
    };
    let record = &found.record;
    if record.client_id.as_str() != client.client_id {
        return Err(AadError::from(TokenError::CodeOtherClient));
    }
    if let Some(family) = &found.redeemed_by {
        // A code presented twice was stolen or replayed: what it bought is
        // revoked as well (RFC 6749 §4.1.2).
        idp.revoke_family(family).await?;
        return Err(AadError::from(TokenError::CodeRedeemed));
    }
    if now >= grants::unix_secs(record.issued_at).saturating_add(CODE_TTL) {
        return Err(AadError::from(TokenError::CodeExpired));
    }
    if redirect_uri != record.redirect_uri {
        return Err(AadError::from(TokenError::RedirectMismatch {
            given: redirect_uri.to_owned(),
            expected: record.redirect_uri.clone(),
        }));
    }
    let challenge = Some(record.code_challenge.as_str()).filter(|c| !c.is_empty());
    pkce_ok(challenge, p.get("code_verifier"))?;
    let claims = ClaimsRequest::parse_opt(p.get("claims"))?;
    let (context, scopes) = grants::context_from_grant(&record.scopes);
    let (Some(req), Ok(nonce)) = (
        grants::scope_from_grant(record.resource.as_deref(), &scopes),
        grants::nonce_of(code),
    ) else {
        // Not a record this IdP wrote.
        return Err(AadError::from(TokenError::CodeUnknown));
    };
    let user = grant_user(idp, record.subject.as_str())?;
    idp.user_may_sign_in(user, &user.tenant)?;
    // A code from a sign-in without the second factor that a rule asks
    // for (the sign-in page asks for it, so this is a rule added since, or
    // `claims` sent only now) is refused and left unspent.
    idp.conditional_access(user, &req, &context, &claims, false)?;
    let context = context.meeting(&claims);
    let consents = consents_for(idp, &user.oid, client, &req).await?;
    let family = FamilyId::random();
    let issued = idp.issue_delegated(
        &consents,
        &Delegated {
            client,
            auth,
            user,
            context: &context,
            tenant: &user.tenant,
            req: &req,
            nonce: nonce.as_deref(),
            family: (&family, &req),
            want_client_info,
        },
    )?;
    // Everything is checked: spend the code, then store what it bought.
    match idp
        .store
        .redeem_code(&hash, &family)
        .await
        .map_err(store_failed)?
    {
        Redemption::Redeemed => {}
        Redemption::AlreadyRedeemed { family: bought } => {
            // Lost a race to another redemption: a replay all the same.
            idp.revoke_family(&bought).await?;
            return Err(AadError::from(TokenError::CodeRedeemed));
        }
        Redemption::Unknown => return Err(AadError::from(TokenError::CodeExpired)),
    }
    idp.store_new_family(&issued).await?;
    Ok(issued.body)
}

/// The refresh grant. A refresh refused for its scope, consent or user
/// leaves the token and its family as they were; only a successful
/// exchange rotates it (`rotate_refresh`, which one caller wins).
async fn refresh(
    idp: &Idp,
    tenant: &str,
    client: &App,
    auth: ClientAuth,
    p: &Params,
    want_client_info: bool,
) -> Result<Value, AadError> {
    let token = p.require("refresh_token")?;
    // The scope is parsed before the token is even looked at: it depends
    // on the directory alone.
    let asked = match p.get("scope") {
        Some(s) => Some(scope::parse(Some(s), p.get("resource"), &idp.dir, tenant)?),
        None => None,
    };
    let now = idp.now();
    let hash = grants::grant_hash(token);
    let found = idp.store.get_refresh(&hash).await.map_err(store_failed)?;
    let Some(found) = found else {
        return Err(AadError::from(TokenError::RefreshUnknown));
    };
    let record = &found.record;
    if record.client_id.as_str() != client.client_id {
        return Err(AadError::from(TokenError::RefreshOtherClient));
    }
    if found.family_revoked {
        return Err(AadError::from(TokenError::RefreshRevoked));
    }
    if found.used {
        // Reuse of a rotated token: someone else holds the family.
        idp.revoke_family(&record.family).await?;
        tracing::warn!(client = %client.client_id, "refresh token reused; family revoked");
        return Err(AadError::from(TokenError::RefreshReused));
    }
    if now >= grants::unix_secs(record.expires_at) {
        return Err(AadError::from(TokenError::RefreshExpired));
    }
    let (context, scopes) = grants::context_from_grant(&record.scopes);
    let Some(grant_scope) = grants::scope_from_grant(record.resource.as_deref(), &scopes) else {
        // Not a record this IdP wrote.
        return Err(AadError::from(TokenError::RefreshUnknown));
    };
    let user = grant_user(idp, record.subject.as_str())?;
    idp.user_may_sign_in(user, tenant)?;
    let mut req = asked.unwrap_or_else(|| grant_scope.clone());
    // A refresh token keeps working for as long as offline access was
    // granted, whether or not this request repeats `offline_access`.
    req.oidc.insert("offline_access".to_owned());
    // Conditional Access applies to the resource asked now: a refresh token
    // from a sign-in without the second factor gets no token for a resource
    // a rule covers (Entra: AADSTS50076), and stays as it was.
    let claims = ClaimsRequest::parse_opt(p.get("claims"))?;
    idp.conditional_access(user, &req, &context, &claims, false)?;
    let context = context.meeting(&claims);
    let consents = consents_for(idp, &user.oid, client, &req).await?;
    let issued = idp.issue_delegated(
        &consents,
        &Delegated {
            client,
            auth,
            user,
            context: &context,
            tenant: &user.tenant,
            req: &req,
            nonce: None,
            family: (&record.family, &grant_scope),
            want_client_info,
        },
    )?;
    let Some((new_hash, new_record)) = &issued.refresh else {
        // `offline_access` is always asked here, so a token was minted.
        return Err(AadError::from(TokenError::RefreshUnknown));
    };
    // Everything is checked: rotate, atomically.
    match idp
        .store
        .rotate_refresh(&hash, new_hash, new_record)
        .await
        .map_err(store_failed)?
    {
        Rotation::Rotated => Ok(issued.body),
        Rotation::Reuse { .. } => {
            tracing::warn!(client = %client.client_id, "refresh token reused; family revoked");
            Err(AadError::from(TokenError::RefreshReused))
        }
        Rotation::Revoked { .. } => Err(AadError::from(TokenError::RefreshRevoked)),
        Rotation::Unknown => Err(AadError::from(TokenError::RefreshExpired)),
    }
}

fn client_credentials(
    idp: &Idp,
    tenant: &str,
    client: &App,
    auth: ClientAuth,
    p: &Params,
) -> Result<Value, AadError> {
    if auth == ClientAuth::Public {
        return Err(AadError::from(TokenError::CredentialMissing));
    }
    let req = scope::parse(p.get("scope"), p.get("resource"), &idp.dir, tenant)?;
    if !req.default || !req.explicit_resource || !req.oidc.is_empty() {
        return Err(AadError::from(TokenError::ClientCredentialsScope(
            p.get("scope").unwrap_or_default().to_owned(),
        )));
    }
    let tenant = idp.resolve_tenant(tenant, &client.tenant);
    Ok(idp.issue_app_only(client, auth, &tenant, &req))
}

/// The device code grant. A poll that is answered with an error changes
/// only what RFC 8628 says a poll changes (its time, `slow_down`'s
/// interval); the code is spent only when tokens are issued.
async fn device_code(
    idp: &Idp,
    client: &App,
    auth: ClientAuth,
    p: &Params,
    want_client_info: bool,
) -> Result<Value, AadError> {
    let code = p
        .get("device_code")
        .or_else(|| p.get("code"))
        .ok_or_else(|| AadError::missing("device_code"))?;
    let now = idp.now();
    let hash = token_hash(code);
    let (record, user_oid, auto) = {
        let mut state = idp.state();
        let Some(record) = state.devices.get(&hash).cloned() else {
            return Err(AadError::from(TokenError::DeviceUnknown));
        };
        if record.client_id != client.client_id {
            return Err(AadError::from(TokenError::DeviceOtherClient));
        }
        if now >= record.expires {
            return Err(AadError::from(TokenError::DeviceExpired));
        }
        let auto_user = match (&record.status, &idp.auto_approve) {
            (DeviceStatus::Pending, Some(name)) => idp.dir.user(name),
            _ => None,
        };
        let too_fast = record
            .last_poll
            .is_some_and(|last| now < last + record.interval);
        let user_oid = match (&record.status, auto_user) {
            (DeviceStatus::Pending, Some(user)) => user.oid.clone(),
            (DeviceStatus::Pending, None) => {
                let slow_down = too_fast;
                if let Some(d) = state.devices.get_mut(&hash) {
                    d.last_poll = Some(now);
                    // RFC 8628 §3.5: every slow_down adds five seconds.
                    if slow_down {
                        d.interval += 5;
                    }
                }
                return Err(if slow_down {
                    AadError::from(TokenError::SlowDown)
                } else {
                    AadError::from(TokenError::AuthorizationPending)
                });
            }
            // RFC 8628 §3.5 names this `access_denied`; Entra's documentation
            // calls it `authorization_declined`. MCP clients follow the RFC.
            (DeviceStatus::Denied, _) => {
                return Err(AadError::from(TokenError::DeviceDeclined));
            }
            (DeviceStatus::Redeemed, _) => {
                return Err(AadError::from(TokenError::DeviceRedeemed));
            }
            (DeviceStatus::Approved(oid), _) => oid.clone(),
        };
        (record, user_oid, auto_user.is_some())
    };
    let user = grant_user(idp, &user_oid)?;
    idp.user_may_sign_in(user, &record.tenant_segment)?;
    // Auto-approval completes the second factor when a rule asks for it
    // (a development shortcut, logged by the IdP at start).
    let context = if auto {
        let needed = crate::conditional_access::second_factor_needed(
            &idp.dir.conditional_access,
            user,
            &record.scope.resource,
            &ClaimsRequest::default(),
        );
        if needed {
            tracing::warn!(
                user = %user.username,
                "device code auto-approved: second factor completed as a development shortcut"
            );
        }
        AuthContext {
            mfa: needed,
            ..AuthContext::password()
        }
    } else {
        record.context.clone()
    };
    idp.conditional_access(
        user,
        &record.scope,
        &context,
        &ClaimsRequest::default(),
        false,
    )?;
    let tenant = idp.resolve_tenant(&record.tenant_segment, &user.tenant);
    let consents = consents_for(idp, &user.oid, client, &record.scope).await?;
    // Auto-approval consents as well (a person consented on the page); the
    // consent is stored only with the tokens it leads to.
    let added = auto
        .then(|| idp.consent_to(&consents, &record.scope))
        .flatten();
    let family = FamilyId::random();
    let issued = idp.issue_delegated(
        added.as_ref().unwrap_or(&consents),
        &Delegated {
            client,
            auth,
            user,
            context: &context,
            tenant: &tenant,
            req: &record.scope,
            nonce: None,
            family: (&family, &record.scope),
            want_client_info,
        },
    )?;
    // Everything is checked: spend the device code (in memory, under the
    // lock), then store what it bought; a store failure gives it back.
    let before = {
        let mut state = idp.state();
        let Some(d) = state.devices.get_mut(&hash) else {
            return Err(AadError::from(TokenError::DeviceUnknown));
        };
        if d.status != record.status {
            // Another poll answered it in the meantime.
            return Err(AadError::from(TokenError::DeviceRedeemed));
        }
        d.last_poll = Some(now);
        std::mem::replace(&mut d.status, DeviceStatus::Redeemed)
    };
    let stored = async {
        if let Some(added) = &added {
            idp.save_consents(&user.oid, client, added).await?;
        }
        if let Err(e) = idp.store_new_family(&issued).await {
            if added.is_some() {
                idp.restore_consents(&user.oid, client, &consents).await;
            }
            return Err(e);
        }
        Ok(())
    }
    .await;
    if let Err(e) = stored {
        if let Some(d) = idp.state().devices.get_mut(&hash) {
            d.status = before;
        }
        return Err(e);
    }
    Ok(issued.body)
}

async fn on_behalf_of(
    idp: &Idp,
    tenant: &str,
    client: &App,
    auth: ClientAuth,
    p: &Params,
    want_client_info: bool,
) -> Result<Value, AadError> {
    if p.get("requested_token_use") != Some("on_behalf_of") {
        return Err(AadError::from(TokenError::OboNotRequested));
    }
    if auth == ClientAuth::Public {
        return Err(AadError::from(TokenError::CredentialMissing));
    }
    let assertion = p.require("assertion")?;
    let now = idp.now();
    let claims = idp
        .keys
        .verify(assertion, now)
        .ok_or_else(|| AadError::from(TokenError::AssertionSignature))?;
    let iss = claims["iss"].as_str().unwrap_or_default();
    let tid = claims["tid"].as_str().unwrap_or_default();
    let ours = idp.dir.tenant(tid).is_some()
        && (iss == format!("{}/{tid}/v2.0", idp.base) || iss == format!("{}/{tid}/", idp.base));
    if !ours {
        return Err(AadError::from(TokenError::AssertionIssuer));
    }
    let exp = claims["exp"].as_u64().unwrap_or(0);
    let nbf = claims["nbf"].as_u64().unwrap_or(0);
    if now >= exp || now + 300 < nbf {
        return Err(AadError::from(TokenError::AssertionTime));
    }
    let aud = claims["aud"].as_str().unwrap_or_default();
    if !client.is_named_by(aud) {
        return Err(AadError::from(TokenError::AssertionAudience {
            aud: aud.to_owned(),
            client_id: client.client_id.clone(),
        }));
    }
    if claims["idtyp"] == "app" || claims.get("scp").is_none() {
        return Err(AadError::from(TokenError::AssertionAppOnly {
            client_id: client.client_id.clone(),
        }));
    }
    let user = claims["oid"]
        .as_str()
        .and_then(|o| idp.dir.user_by_oid(o))
        .ok_or_else(|| AadError::from(TokenError::AssertionUserGone))?;
    idp.user_may_sign_in(user, tid)?;
    let req = scope::parse(p.get("scope"), p.get("resource"), &idp.dir, tenant)?;
    if req.resource == client.client_id {
        return Err(AadError::from(TokenError::OboForItself));
    }
    // The downstream token is as strong as the assertion's sign-in: its
    // `amr` (and `acrs`) carry over, and a rule for the downstream
    // resource that the sign-in did not satisfy is `interaction_required`
    // with the claims for the client to step up with.
    let context = AuthContext::of_token(&claims);
    let asked = ClaimsRequest::parse_opt(p.get("claims"))?;
    idp.conditional_access(user, &req, &context, &asked, true)?;
    let context = context.meeting(&asked);
    let consents = consents_for(idp, &user.oid, client, &req).await?;
    let family = FamilyId::random();
    let issued = idp.issue_delegated(
        &consents,
        &Delegated {
            client,
            auth,
            user,
            context: &context,
            tenant: tid,
            req: &req,
            nonce: None,
            family: (&family, &req),
            want_client_info,
        },
    )?;
    idp.store_new_family(&issued).await?;
    Ok(issued.body)
}
