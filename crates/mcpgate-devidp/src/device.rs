//! The device authorization grant (RFC 8628): `/{tenant}/oauth2/v2.0/devicecode`
//! issues the codes, `/devicelogin` is where a person enters one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::json;

use crate::authorize_error::AuthorizeError;
use crate::conditional_access::{self, AuthContext, ClaimsRequest};
use crate::error::AadError;
use crate::idp::Idp;
use crate::pages;
use crate::params::Params;
use crate::scope;
use crate::state::{DEVICE_TTL, DeviceRecord, DeviceStatus, PENDING_TTL};
use crate::util::{ct_eq, random_bytes, random_token, token_hash};

/// Letters and digits a person will not misread.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ23456789";

fn user_code() -> String {
    random_bytes::<9>()
        .iter()
        .map(|b| USER_CODE_ALPHABET[usize::from(*b) % USER_CODE_ALPHABET.len()] as char)
        .collect()
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
pub async fn start(
    State(idp): State<Arc<Idp>>,
    Path(tenant): Path<String>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    match crate::token::read_form(form).and_then(|p| begin(&idp, &tenant, &p)) {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn begin(idp: &Idp, tenant: &str, p: &Params) -> Result<serde_json::Value, AadError> {
    idp.tenant_segment_ok(tenant)?;
    let client_id = p.require("client_id")?;
    let client = idp
        .dir
        .app(client_id)
        .ok_or_else(|| AadError::unknown_client(client_id, tenant))?;
    let scope = scope::parse(p.get("scope"), p.get("resource"), &idp.dir, tenant)?;
    let device_code = random_token();
    let code = user_code();
    let now = idp.now();
    let verification_uri = format!("{}/devicelogin", idp.base);
    {
        let mut state = idp.state();
        if state.devices.len() >= idp.limits.max_devices {
            return Err(AadError::busy("device sign-ins"));
        }
        let hash = token_hash(&device_code);
        state.user_codes.insert(code.clone(), hash.clone());
        state.devices.insert(
            hash,
            DeviceRecord {
                client_id: client.client_id.clone(),
                tenant_segment: tenant.to_owned(),
                scope,
                user_code: code.clone(),
                expires: now + DEVICE_TTL,
                interval: idp.device_interval,
                last_poll: None,
                status: DeviceStatus::Pending,
                context: AuthContext::password(),
            },
        );
    }
    Ok(json!({
        "user_code": code,
        "device_code": device_code,
        "verification_uri": verification_uri,
        "expires_in": DEVICE_TTL,
        "interval": idp.device_interval,
        "message": format!("To sign in, use a web browser to open the page {verification_uri} and enter the code {code} to authenticate."),
    }))
}

/// The device page with a fresh CSRF value, under a cookie named for this
/// page load (its flow), so that two open pages do not break each other.
fn page(idp: &Idp, notice: Option<&str>) -> Response {
    let csrf = random_token();
    let flow = random_token();
    let mut resp = pages::device(&csrf, &flow, &idp.listed_users(), notice);
    pages::set_cookie(
        &mut resp,
        &pages::csrf_cookie(&flow),
        &csrf,
        idp.tls,
        PENDING_TTL,
    );
    resp
}

/// An error as the device page shows it: `AADSTS<code>: <text>`.
fn notice(e: AadError) -> String {
    format!("AADSTS{}: {}", e.code, e.message)
}

/// `GET /devicelogin`.
pub async fn login_page(State(idp): State<Arc<Idp>>) -> Response {
    page(&idp, None)
}

/// `POST /devicelogin`: approve or deny a code as a user.
pub async fn login_submit(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = match crate::token::read_form(form) {
        Ok(p) => p,
        Err(e) => return pages::error(&e),
    };
    let flow = form.get("flow").unwrap_or_default();
    let cookie = pages::cookie(&headers, &pages::csrf_cookie(flow)).unwrap_or_default();
    let field = form.get("csrf").unwrap_or_default();
    if flow.is_empty() || cookie.is_empty() || !ct_eq(cookie.as_bytes(), field.as_bytes()) {
        return pages::error(&AuthorizeError::CsrfFailed.into());
    }
    let code: String = form
        .get("user_code")
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let username = form.get("username").unwrap_or_default();
    let user = match idp.dir.user(username) {
        Some(u) if idp.one_click(u) && form.get("password").is_none() => u,
        Some(u) if form.get("password").is_some_and(|p| u.password_matches(p)) => u,
        Some(_) => {
            return page(&idp, Some(&notice(AuthorizeError::BadCredentials.into())));
        }
        None => {
            return page(
                &idp,
                Some(&notice(
                    AuthorizeError::UserUnknown(username.to_owned()).into(),
                )),
            );
        }
    };
    let now = idp.now();
    let approve = form.get("action") == Some("approve");
    // Consent comes before approval, as on Entra's device page: a client
    // that is neither pre-authorized nor consented shows what it asks.
    let pending = {
        let state = idp.state();
        state
            .user_codes
            .get(&code)
            .and_then(|h| state.devices.get(h))
            .filter(|d| d.expires > now && d.status == DeviceStatus::Pending)
            .map(|d| (d.client_id.clone(), d.scope.clone()))
    };
    // The second factor, when a rule asks for it for this user and the
    // code's resource: asked before consent, as Entra's sign-in does.
    let mut context = AuthContext::password();
    if approve
        && let Some((_, scope)) = &pending
        && conditional_access::second_factor_needed(
            &idp.dir.conditional_access,
            user,
            &scope.resource,
            &ClaimsRequest::default(),
        )
    {
        match form.get("otp") {
            Some(otp) if conditional_access::code_ok(otp) => {
                context = AuthContext::with_mfa(&ClaimsRequest::default());
            }
            given => {
                let wrong = given
                    .is_some()
                    .then(|| notice(AuthorizeError::SecondFactorWrong.into()));
                let csrf = random_token();
                let flow = random_token();
                let mut resp = pages::device_second_factor(
                    &csrf,
                    &flow,
                    &code,
                    user,
                    form.get("password"),
                    (idp.exposure == crate::Exposure::Loopback)
                        .then_some(conditional_access::DEV_MFA_CODE),
                    wrong.as_deref(),
                );
                pages::set_cookie(
                    &mut resp,
                    &pages::csrf_cookie(&flow),
                    &csrf,
                    idp.tls,
                    PENDING_TTL,
                );
                return resp;
            }
        }
    }
    // The consent given on this form, to store with the approval: the
    // client, what the user had consented to, and what they now have.
    let mut consent = None;
    if approve
        && let Some((client_id, scope)) = &pending
        && let Some(client) = idp.dir.app(client_id)
    {
        let before = match idp.consents(&user.oid, client).await {
            Ok(c) => c,
            Err(e) => return page(&idp, Some(&notice(e))),
        };
        let missing = idp.missing_consent(&before, client, scope);
        if form.get("consent") == Some("yes")
            && let Some(after) = idp.consent_to(&before, scope)
        {
            consent = Some((client, before, after));
        } else if !missing.is_empty() {
            let csrf = random_token();
            let flow = random_token();
            let mut resp = pages::device_consent(
                &csrf,
                &flow,
                &code,
                user,
                &client.name,
                &missing,
                form.get("password"),
                context.mfa.then_some(conditional_access::DEV_MFA_CODE),
            );
            pages::set_cookie(
                &mut resp,
                &pages::csrf_cookie(&flow),
                &csrf,
                idp.tls,
                PENDING_TTL,
            );
            return resp;
        }
    }
    if let Some((client, _, after)) = &consent
        && let Err(e) = idp.save_consents(&user.oid, client, after).await
    {
        return page(&idp, Some(&notice(e)));
    }

    // The approval, checked against the code as it is now (it may have
    // expired or been answered since the page was shown); a code not
    // approved takes its consent back.
    let outcome = {
        let mut state = idp.state();
        let hash = state.user_codes.get(&code).cloned();
        let found = hash.as_ref().and_then(|h| state.devices.get(h)).map(|d| {
            (
                d.clone(),
                d.expires > now && d.status == DeviceStatus::Pending,
            )
        });
        match (hash, found) {
            (Some(h), Some((d, true))) => {
                let decided = if approve {
                    idp.user_may_sign_in(user, &d.tenant_segment)
                        .map(|()| DeviceStatus::Approved(user.oid.clone()))
                        .map_err(notice)
                } else {
                    Ok(DeviceStatus::Denied)
                };
                if let Ok(status) = &decided
                    && let Some(rec) = state.devices.get_mut(&h)
                {
                    rec.status = status.clone();
                    rec.context = context.clone();
                }
                decided.map(|_| d.client_id)
            }
            (_, Some((d, false))) if d.expires <= now => {
                Err("AADSTS70020: This code has expired.".to_owned())
            }
            (_, Some(_)) => Err("This code was already used.".to_owned()),
            _ => Err("That code was not recognised. Check it and try again.".to_owned()),
        }
    };
    if outcome.is_err()
        && let Some((client, before, _)) = &consent
    {
        idp.restore_consents(&user.oid, client, before).await;
    }
    match outcome {
        Ok(client_id) => {
            let app = idp
                .dir
                .app(&client_id)
                .map_or(client_id.clone(), |a| a.name.clone());
            if approve {
                tracing::info!(user = %user.username, client = %client_id, "device code approved");
                pages::message(
                    "You're signed in",
                    &format!(
                        "{} is signed in to {app}. You can close this window.",
                        user.display_name
                    ),
                )
            } else {
                pages::message("Request denied", &format!("{app} will not be signed in."))
            }
        }
        Err(notice) => page(&idp, Some(&notice)),
    }
}
