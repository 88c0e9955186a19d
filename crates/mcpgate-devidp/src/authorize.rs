//! `/{tenant}/oauth2/v2.0/authorize`: the authorization request, sign-in,
//! consent, and the redirect back with a code.
//!
//! Errors before the redirect URI is known to be registered are shown as a
//! page (never redirected, or the IdP would be an open redirector); later
//! ones go back to the client, as Entra does.

use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use mcpgate_store::{ClientId, CodeRecord};

use crate::authorize_error::AuthorizeError;
use crate::conditional_access::{self, AuthContext, ClaimsRequest};
use crate::directory::{App, User};
use crate::error::AadError;
use crate::grants::{self, Consents, store_failed};
use crate::idp::Idp;
use crate::pages::{self, SESSION_COOKIE};
use crate::params::Params;
use crate::scope;
use crate::state::{
    AuthorizeRequest, CODE_RETENTION, Next, PENDING_TTL, Pending, SESSION_TTL, Session,
};
use crate::util::{ct_eq, random_token, token_hash};

/// Why an authorize request stops.
enum Failure {
    /// Shown to the user.
    Page(AadError),
    /// Sent back to the client's redirect URI.
    Redirect(AadError, Box<AuthorizeRequestTarget>),
}

/// Where an error redirect goes.
struct AuthorizeRequestTarget {
    redirect_uri: String,
    state: Option<String>,
    response_mode: String,
}

impl From<&AuthorizeRequest> for AuthorizeRequestTarget {
    fn from(r: &AuthorizeRequest) -> Self {
        Self {
            redirect_uri: r.redirect_uri.clone(),
            state: r.state.clone(),
            response_mode: r.response_mode.clone(),
        }
    }
}

fn respond(failure: Failure) -> Response {
    match failure {
        Failure::Page(e) => pages::error(&e),
        Failure::Redirect(e, target) => {
            let body = e.body();
            let mut params = vec![
                ("error", e.error.to_owned()),
                (
                    "error_description",
                    body["error_description"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                ),
            ];
            if let Some(s) = e.suberror {
                params.push(("suberror", s.to_owned()));
            }
            if let Some(c) = &e.claims {
                params.push(("claims", c.clone()));
            }
            if let Some(s) = &target.state {
                params.push(("state", s.clone()));
            }
            send_to_client(&target.redirect_uri, &target.response_mode, &params)
        }
    }
}

/// Delivers response parameters to the client's redirect URI.
fn send_to_client(redirect_uri: &str, mode: &str, params: &[(&str, String)]) -> Response {
    if mode == "form_post" {
        return pages::form_post(redirect_uri, params);
    }
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return pages::error(&AadError::from(AuthorizeError::RedirectInvalid));
    };
    if mode == "fragment" {
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        url.set_fragment(Some(&encoded));
    } else {
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
    }
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = url.as_str().parse() {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    resp
}

/// Checks an authorize request, in Entra's order.
fn validate(idp: &Idp, tenant: &str, p: &Params) -> Result<(AuthorizeRequest, bool), Failure> {
    idp.tenant_segment_ok(tenant).map_err(Failure::Page)?;
    let client_id = p.require("client_id").map_err(Failure::Page)?;
    let client = idp
        .dir
        .app(client_id)
        .ok_or_else(|| Failure::Page(AadError::unknown_client(client_id, tenant)))?;
    let redirect_uri = p.require("redirect_uri").map_err(Failure::Page)?;
    if !client.redirect_allowed(redirect_uri) {
        return Err(Failure::Page(AadError::from(
            AuthorizeError::RedirectNotRegistered {
                redirect_uri: redirect_uri.to_owned(),
                client_id: client.client_id.clone(),
            },
        )));
    }
    let response_mode = match p.get("response_mode") {
        None | Some("query") => "query",
        Some("fragment") => "fragment",
        Some("form_post") => "form_post",
        Some(other) => {
            return Err(Failure::Page(AadError::from(
                AuthorizeError::ResponseModeUnsupported(other.to_owned()),
            )));
        }
    };
    let target = || {
        Box::new(AuthorizeRequestTarget {
            redirect_uri: redirect_uri.to_owned(),
            state: p.get("state").map(str::to_owned),
            response_mode: response_mode.to_owned(),
        })
    };
    let redirect = |e: AadError| Failure::Redirect(e, target());

    match p.get("response_type") {
        Some("code") => {}
        None => return Err(redirect(AadError::missing("response_type"))),
        Some(other) => {
            return Err(redirect(AadError::from(
                AuthorizeError::ResponseTypeUnsupported(other.to_owned()),
            )));
        }
    }
    let scope =
        scope::parse(p.get("scope"), p.get("resource"), &idp.dir, tenant).map_err(redirect)?;

    let challenge = p.get("code_challenge");
    let method = p.get("code_challenge_method");
    match (challenge, method) {
        (None, _) if client.public_client => {
            return Err(redirect(AadError::from(AuthorizeError::PkceRequired)));
        }
        (None, _) => {}
        (Some(_), Some("S256")) => {}
        (Some(_), None | Some("plain")) => {
            return Err(redirect(AadError::from(AuthorizeError::PkcePlain)));
        }
        (Some(_), Some(other)) => {
            return Err(redirect(AadError::from(
                AuthorizeError::PkceMethodUnsupported(other.to_owned()),
            )));
        }
    }
    if let Some(c) = challenge
        && (c.len() != 43
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(redirect(AadError::from(AuthorizeError::ChallengeSize)));
    }

    // `claims` (OpenID Connect Core §5.5), as MSAL and mcpgate send it to
    // step up after a claims challenge.
    let claims = ClaimsRequest::parse_opt(p.get("claims")).map_err(|e| redirect(e.into()))?;

    let prompt = p.get("prompt");
    let silent = prompt == Some("none");
    let request = AuthorizeRequest {
        tenant_segment: tenant.to_owned(),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope,
        state: p.get("state").map(str::to_owned),
        nonce: p.get("nonce").map(str::to_owned),
        code_challenge: challenge.map(str::to_owned),
        response_mode: response_mode.to_owned(),
        login_hint: p.get("login_hint").map(str::to_owned),
        force_login: matches!(prompt, Some("login" | "select_account")),
        claims,
    };
    Ok((request, silent))
}

/// The consent a code carries: what the user had consented to before, and
/// what to store with the code.
struct ConsentChange<'a> {
    before: &'a Consents,
    after: Consents,
}

/// Issues a code for `req`, storing `consent` first (a code is redeemed
/// only with its consent in place); refused when this process has as many
/// codes in the store as it may. A code that cannot be stored leaves no
/// consent.
async fn issue_code(
    idp: &Idp,
    client: &App,
    req: &AuthorizeRequest,
    user: &User,
    context: &AuthContext,
    consent: Option<ConsentChange<'_>>,
) -> Result<String, AadError> {
    // A blocking policy ends the sign-in before any code exists.
    if conditional_access::blocked_by(&idp.dir.conditional_access, user, &req.scope.resource)
        .is_some()
    {
        return Err(conditional_access::blocked_error("access_denied"));
    }
    let now = idp.now();
    let Some(slot) = idp.state().reserve_code(now, idp.limits.max_codes) else {
        return Err(AadError::busy("authorization codes"));
    };
    let result = store_code(idp, client, req, user, context, consent.as_ref(), now).await;
    if result.is_err() {
        idp.state().release_code(slot);
    }
    result
}

async fn store_code(
    idp: &Idp,
    client: &App,
    req: &AuthorizeRequest,
    user: &User,
    context: &AuthContext,
    consent: Option<&ConsentChange<'_>>,
    now: u64,
) -> Result<String, AadError> {
    if let Some(c) = consent {
        idp.save_consents(&user.oid, client, &c.after).await?;
    }
    let code = grants::new_code(req.nonce.as_deref());
    let (resource, scopes) = grants::scope_to_grant(&req.scope);
    let scopes = grants::context_to_grant(scopes, context);
    let record = CodeRecord {
        client_id: ClientId::new(req.client_id.clone()),
        redirect_uri: req.redirect_uri.clone(),
        code_challenge: req.code_challenge.clone().unwrap_or_default(),
        scopes,
        resource,
        subject: grants::subject(&user.oid),
        upstream: None,
        issued_at: grants::timestamp(now),
    };
    let stored = idp
        .store
        .put_code(
            &grants::grant_hash(&code),
            &record,
            Duration::from_secs(CODE_RETENTION),
        )
        .await;
    if let Err(e) = stored {
        if let Some(c) = consent {
            idp.restore_consents(&user.oid, client, c.before).await;
        }
        return Err(store_failed(e));
    }
    Ok(code)
}

/// Sends the code back, or the error that stopped it.
fn send_code(req: &AuthorizeRequest, code: Result<String, AadError>) -> Response {
    match code {
        Ok(code) => {
            let mut params = vec![("code", code)];
            if let Some(s) = &req.state {
                params.push(("state", s.clone()));
            }
            params.push(("session_state", crate::util::new_guid()));
            send_to_client(&req.redirect_uri, &req.response_mode, &params)
        }
        Err(e) => respond(Failure::Redirect(e, Box::new(req.into()))),
    }
}

/// The browser session's user, and whether its sign-in did the second
/// factor.
fn session_user<'a>(idp: &'a Idp, headers: &HeaderMap) -> Option<(&'a User, bool)> {
    let cookie = pages::cookie(headers, SESSION_COOKIE)?;
    let now = idp.now();
    let (oid, mfa) = {
        let state = idp.state();
        let s = state.sessions.get(&token_hash(&cookie))?;
        (s.expires > now).then(|| (s.user_oid.clone(), s.mfa))?
    };
    idp.dir.user_by_oid(&oid).map(|u| (u, mfa))
}

/// Whether this sign-in must ask `user` for the second factor: a rule
/// covers them and the resource, or the request's `claims` asks for it.
fn second_factor_needed(idp: &Idp, user: &User, req: &AuthorizeRequest) -> bool {
    conditional_access::second_factor_needed(
        &idp.dir.conditional_access,
        user,
        &req.scope.resource,
        &req.claims,
    )
}

/// How many wrong second-factor codes a sign-in page takes before it ends.
const MAX_FAILED_CODES: u8 = 5;

fn client_of<'a>(idp: &'a Idp, req: &AuthorizeRequest) -> Option<&'a App> {
    idp.dir.app(&req.client_id)
}

/// Starts a sign-in page: a pending request with its own CSRF value,
/// refused past the cap.
async fn show_sign_in(idp: &Idp, req: AuthorizeRequest, next: Next) -> Response {
    let id = random_token();
    let pending = Pending {
        request: req,
        csrf: random_token(),
        next,
        failed_codes: 0,
        created: idp.now(),
    };
    {
        let mut state = idp.state();
        if state.pending.len() >= idp.limits.max_pending {
            drop(state);
            return pages::error(&AadError::busy("sign-ins"));
        }
        state.pending.insert(id.clone(), pending.clone());
    }
    render(idp, &id, &pending, None).await
}

/// The page for a pending sign-in: the sign-in form, the second factor, or
/// consent, as the flow stands. Its CSRF cookie is named for the flow, so
/// that two sign-ins open in one browser do not overwrite each other's.
async fn render(
    idp: &Idp,
    id: &str,
    pending: &Pending,
    error: Option<(&AadError, &str)>,
) -> Response {
    let req = &pending.request;
    let client = client_of(idp, req);
    let app_name = client.map_or(req.client_id.clone(), |a| a.name.clone());
    let user = pending
        .next
        .user_oid()
        .and_then(|oid| idp.dir.user_by_oid(oid));
    let mut resp = match (&pending.next, user) {
        (Next::SecondFactor { .. }, Some(user)) => pages::second_factor(
            id,
            &pending.csrf,
            &app_name,
            user,
            // The development code is shown only where the listed users are.
            (idp.exposure == crate::Exposure::Loopback).then_some(conditional_access::DEV_MFA_CODE),
            error.map(|(e, _)| e),
        ),
        (Next::Consent { .. }, Some(user)) => {
            let missing = match client {
                Some(c) => match idp.consents(&user.oid, c).await {
                    Ok(consents) => idp.missing_consent(&consents, c, &req.scope),
                    Err(e) => return pages::error(&e),
                },
                None => Vec::new(),
            };
            pages::consent(id, &pending.csrf, &app_name, user, &missing)
        }
        _ => pages::sign_in(
            id,
            &pending.csrf,
            &app_name,
            &idp.listed_users(),
            // After a failed attempt, the name the person typed.
            error.map(|(_, typed)| typed).or(req.login_hint.as_deref()),
            error.map(|(e, _)| e),
        ),
    };
    pages::set_cookie(
        &mut resp,
        &pages::csrf_cookie(id),
        &pending.csrf,
        idp.tls,
        PENDING_TTL,
    );
    resp
}

/// `GET /{tenant}/oauth2/v2.0/authorize`.
pub async fn get(
    State(idp): State<Arc<Idp>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let params = match Params::new(query) {
        Ok(p) => p,
        Err(e) => return pages::error(&e),
    };
    let (req, silent) = match validate(&idp, &tenant, &params) {
        Ok(r) => r,
        Err(f) => return respond(f),
    };
    let Some(client) = client_of(&idp, &req) else {
        return pages::error(&AadError::unknown_client(&req.client_id, &tenant));
    };
    let redirect_err = |e: AadError| respond(Failure::Redirect(e, Box::new((&req).into())));

    if let Some(name) = &idp.auto_approve {
        let Some(user) = idp.dir.user(name) else {
            return redirect_err(AadError::from(AuthorizeError::AutoApproveUserMissing(
                name.clone(),
            )));
        };
        if let Err(e) = idp.user_may_sign_in(user, &req.tenant_segment) {
            return redirect_err(e);
        }
        // Auto-approval completes the second factor too, when a rule or
        // the request's `claims` asks for it, so that unattended tests
        // still sign in: a development shortcut, and said so.
        let mfa = second_factor_needed(&idp, user, &req);
        let context = if mfa {
            AuthContext::with_mfa(&req.claims)
        } else {
            AuthContext::password()
        };
        // Consent and code together: a refused code leaves no consent.
        let code = match idp.consents(&user.oid, client).await {
            Ok(before) => {
                let consent = idp
                    .consent_to(&before, &req.scope)
                    .map(|after| ConsentChange {
                        before: &before,
                        after,
                    });
                issue_code(&idp, client, &req, user, &context, consent).await
            }
            Err(e) => Err(e),
        };
        if mfa {
            tracing::warn!(
                user = %user.username,
                client = %client.client_id,
                "authorize auto-approved, and the second factor (MFA) completed without asking: development shortcut (auto_approve)"
            );
        } else {
            tracing::info!(user = %user.username, client = %client.client_id, "authorize auto-approved");
        }
        return send_code(&req, code);
    }

    let hint_ok = |u: &User| {
        req.login_hint
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(&u.username))
    };
    let current = session_user(&idp, &headers)
        .filter(|(u, _)| hint_ok(u) && idp.user_may_sign_in(u, &req.tenant_segment).is_ok());
    if silent {
        let Some((user, mfa)) = current else {
            return redirect_err(AadError::from(AuthorizeError::InteractionRequired));
        };
        if !mfa && second_factor_needed(&idp, user, &req) {
            // A silent request cannot ask for the second factor.
            return redirect_err(AadError::from(AuthorizeError::SecondFactorRequired {
                resource: req.scope.resource.clone(),
            }));
        }
        let context = session_context(mfa, &req.claims);
        let code = match idp.consents(&user.oid, client).await {
            Ok(c) if idp.missing_consent(&c, client, &req.scope).is_empty() => {
                issue_code(&idp, client, &req, user, &context, None).await
            }
            Ok(_) => Err(AuthorizeError::ConsentRequired {
                client_id: client.client_id.clone(),
                resource: req.scope.resource.clone(),
            }
            .into()),
            Err(e) => Err(e),
        };
        return send_code(&req, code);
    }
    match current {
        Some((user, mfa)) if !req.force_login => {
            if !mfa && second_factor_needed(&idp, user, &req) {
                // Signed in before without the second factor: ask for it
                // now, not for the password again.
                let user_oid = user.oid.clone();
                return show_sign_in(&idp, req, Next::SecondFactor { user_oid }).await;
            }
            let context = session_context(mfa, &req.claims);
            let consents = match idp.consents(&user.oid, client).await {
                Ok(c) => c,
                Err(e) => return redirect_err(e),
            };
            if idp
                .missing_consent(&consents, client, &req.scope)
                .is_empty()
            {
                let code = issue_code(&idp, client, &req, user, &context, None).await;
                send_code(&req, code)
            } else {
                let user_oid = user.oid.clone();
                show_sign_in(&idp, req, Next::Consent { user_oid, context }).await
            }
        }
        _ => show_sign_in(&idp, req, Next::SignIn).await,
    }
}

/// What a browser session's sign-in gives a new request: the second
/// factor (and the authentication contexts this request asks) if that
/// sign-in did it.
fn session_context(mfa: bool, claims: &ClaimsRequest) -> AuthContext {
    if mfa {
        AuthContext::with_mfa(claims)
    } else {
        AuthContext::password()
    }
}

/// The user a sign-in form names, checked: a password always when the IdP
/// is exposed beyond loopback; one click for a listed user on loopback.
fn form_user<'a>(idp: &'a Idp, form: &Params) -> Result<&'a User, AadError> {
    let action = form.get("action").unwrap_or_default();
    let username = form.get("username").unwrap_or_default();
    let Some(user) = idp.dir.user(username) else {
        return Err(AadError::from(AuthorizeError::UserUnknown(
            username.to_owned(),
        )));
    };
    match action {
        "pick" if idp.one_click(user) => Ok(user),
        "password" if user.password_matches(form.get("password").unwrap_or_default()) => Ok(user),
        _ => Err(AadError::from(AuthorizeError::BadCredentials)),
    }
}

/// `POST /{tenant}/oauth2/v2.0/authorize`: the sign-in, second-factor and
/// consent forms.
pub async fn post(
    State(idp): State<Arc<Idp>>,
    Path(_tenant): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = match crate::token::read_form(form) {
        Ok(p) => p,
        Err(e) => return pages::error(&e),
    };
    let Some(pending_id) = form.get("pending") else {
        return pages::error(&AadError::missing("pending"));
    };
    let now = idp.now();
    let found = idp
        .state()
        .pending
        .get(pending_id)
        .filter(|p| p.created + PENDING_TTL > now)
        .cloned();
    let Some(pending) = found else {
        return pages::error(&AadError::from(AuthorizeError::PageExpired));
    };
    let cookie = pages::cookie(&headers, &pages::csrf_cookie(pending_id)).unwrap_or_default();
    let field = form.get("csrf").unwrap_or_default();
    if !(ct_eq(field.as_bytes(), pending.csrf.as_bytes())
        && ct_eq(cookie.as_bytes(), pending.csrf.as_bytes()))
    {
        return pages::error(&AuthorizeError::CsrfFailed.into());
    }
    let req = &pending.request;
    let Some(client) = client_of(&idp, req) else {
        return pages::error(&AadError::unknown_client(
            &req.client_id,
            &req.tenant_segment,
        ));
    };

    let mut resp = match form.get("action") {
        Some(action @ ("consent" | "decline")) => {
            let Next::Consent { user_oid, context } = &pending.next else {
                return pages::error(&AadError::missing("username"));
            };
            let Some(user) = idp.dir.user_by_oid(user_oid) else {
                return pages::error(&AadError::missing("username"));
            };
            // The page ends here, whatever the answer: taken under the lock,
            // so that a form submitted twice is answered once.
            if idp.state().pending.remove(pending_id).is_none() {
                return pages::error(&AadError::from(AuthorizeError::PageExpired));
            }
            if action == "decline" {
                let e = AadError::from(AuthorizeError::Declined);
                respond(Failure::Redirect(e, Box::new(req.into())))
            } else {
                // Consent and code together: a code not issued leaves no
                // consent, and the page usable again.
                let code = match idp.consents(&user.oid, client).await {
                    Ok(before) => {
                        let consent =
                            idp.consent_to(&before, &req.scope)
                                .map(|after| ConsentChange {
                                    before: &before,
                                    after,
                                });
                        issue_code(&idp, client, req, user, context, consent).await
                    }
                    Err(e) => Err(e),
                };
                if code.is_err() {
                    idp.state()
                        .pending
                        .insert(pending_id.to_owned(), pending.clone());
                }
                send_code(req, code)
            }
        }
        Some("pick" | "password") => {
            let user = match form_user(&idp, &form)
                .and_then(|u| idp.user_may_sign_in(u, &req.tenant_segment).map(|()| u))
            {
                Ok(u) => u,
                // The same page again, with the error: a failed attempt
                // changes nothing.
                Err(e) => {
                    let typed = form.get("username").unwrap_or_default();
                    return render(&idp, pending_id, &pending, Some((&e, typed))).await;
                }
            };
            if second_factor_needed(&idp, user, req) {
                // The first factor is done; the second is next, on the same
                // flow. No session yet: it is made once both are done.
                let mut next = pending.clone();
                next.next = Next::SecondFactor {
                    user_oid: user.oid.clone(),
                };
                next.failed_codes = 0;
                if !replace_pending(&idp, pending_id, &next) {
                    return pages::error(&AadError::from(AuthorizeError::PageExpired));
                }
                return render(&idp, pending_id, &next, None).await;
            }
            match signed_in(&idp, pending_id, &pending, user, AuthContext::password()).await {
                SignedIn::Done(resp) => resp,
                SignedIn::Continues(resp) => return resp,
            }
        }
        Some("second_factor") => {
            let Next::SecondFactor { user_oid } = &pending.next else {
                return pages::error(&AadError::from(AuthorizeError::PageExpired));
            };
            let Some(user) = idp.dir.user_by_oid(user_oid) else {
                return pages::error(&AadError::missing("username"));
            };
            if !conditional_access::code_ok(form.get("otp").unwrap_or_default()) {
                // Nothing is issued; the step again with the error, until
                // too many wrong codes end the sign-in.
                let mut next = pending.clone();
                next.failed_codes = next.failed_codes.saturating_add(1);
                tracing::info!(user = %user.username, attempts = next.failed_codes, "wrong second-factor code");
                if next.failed_codes >= MAX_FAILED_CODES {
                    idp.state().pending.remove(pending_id);
                    return pages::error(&AuthorizeError::SecondFactorLocked.into());
                }
                if !replace_pending(&idp, pending_id, &next) {
                    return pages::error(&AadError::from(AuthorizeError::PageExpired));
                }
                let e = AadError::from(AuthorizeError::SecondFactorWrong);
                return render(&idp, pending_id, &next, Some((&e, ""))).await;
            }
            let context = AuthContext::with_mfa(&req.claims);
            match signed_in(&idp, pending_id, &pending, user, context).await {
                SignedIn::Done(resp) => resp,
                SignedIn::Continues(resp) => return resp,
            }
        }
        _ => return pages::error(&AadError::missing("action")),
    };
    // The flow is over: its CSRF cookie goes.
    pages::set_cookie(&mut resp, &pages::csrf_cookie(pending_id), "", idp.tls, 0);
    resp
}

/// Replaces a pending sign-in that is still there (a form submitted twice
/// is answered once); `false` if it ended meanwhile.
fn replace_pending(idp: &Idp, pending_id: &str, next: &Pending) -> bool {
    let mut state = idp.state();
    match state.pending.get_mut(pending_id) {
        Some(p) => {
            *p = next.clone();
            true
        }
        None => false,
    }
}

/// Where a completed sign-in leaves the flow.
enum SignedIn {
    /// A code went back (or an error page was shown): the flow is over.
    Done(Response),
    /// The page continues (consent, or the same step after a failure): its
    /// CSRF cookie stays.
    Continues(Response),
}

/// The user is signed in on this flow, with `context`: a browser session
/// (single sign-on for the next request), then the code, or consent first
/// when some is missing.
async fn signed_in(
    idp: &Idp,
    pending_id: &str,
    pending: &Pending,
    user: &User,
    context: AuthContext,
) -> SignedIn {
    let req = &pending.request;
    let Some(client) = client_of(idp, req) else {
        return SignedIn::Done(pages::error(&AadError::unknown_client(
            &req.client_id,
            &req.tenant_segment,
        )));
    };
    let now = idp.now();
    let session = random_token();
    let session_made = {
        let mut state = idp.state();
        // Taken under the lock, so that a form submitted twice is
        // answered once; put back below unless a code is issued.
        if state.pending.remove(pending_id).is_none() {
            drop(state);
            return SignedIn::Continues(pages::error(&AadError::from(AuthorizeError::PageExpired)));
        }
        // Past the cap the sign-in still completes, without a
        // browser session (no single sign-on for the next one).
        let session_made = state.sessions.len() < idp.limits.max_sessions;
        if session_made {
            state.sessions.insert(
                token_hash(&session),
                Session {
                    user_oid: user.oid.clone(),
                    mfa: context.mfa,
                    expires: now + SESSION_TTL,
                },
            );
        }
        session_made
    };
    let consents = idp.consents(&user.oid, client).await;
    let (mut resp, done) = match consents {
        Ok(c) if idp.missing_consent(&c, client, &req.scope).is_empty() => {
            let code = issue_code(idp, client, req, user, &context, None).await;
            let done = code.is_ok();
            if !done {
                idp.state()
                    .pending
                    .insert(pending_id.to_owned(), pending.clone());
            }
            (send_code(req, code), done)
        }
        Ok(_) => {
            // Consent is next, on the same flow.
            let mut next = pending.clone();
            next.next = Next::Consent {
                user_oid: user.oid.clone(),
                context,
            };
            idp.state()
                .pending
                .insert(pending_id.to_owned(), next.clone());
            let mut resp = render(idp, pending_id, &next, None).await;
            if session_made {
                pages::set_cookie(&mut resp, SESSION_COOKIE, &session, idp.tls, SESSION_TTL);
            }
            return SignedIn::Continues(resp);
        }
        Err(e) => {
            idp.state()
                .pending
                .insert(pending_id.to_owned(), pending.clone());
            (pages::error(&e), false)
        }
    };
    if session_made {
        pages::set_cookie(&mut resp, SESSION_COOKIE, &session, idp.tls, SESSION_TTL);
    }
    if done {
        SignedIn::Done(resp)
    } else {
        // The page stays usable, with its CSRF cookie.
        SignedIn::Continues(resp)
    }
}
