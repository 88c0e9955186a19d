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
use crate::directory::{App, User};
use crate::error::AadError;
use crate::grants::{self, Consents, store_failed};
use crate::idp::Idp;
use crate::pages::{self, SESSION_COOKIE};
use crate::params::Params;
use crate::scope;
use crate::state::{AuthorizeRequest, CODE_RETENTION, PENDING_TTL, Pending, SESSION_TTL, Session};
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
    consent: Option<ConsentChange<'_>>,
) -> Result<String, AadError> {
    let now = idp.now();
    let Some(slot) = idp.state().reserve_code(now, idp.limits.max_codes) else {
        return Err(AadError::busy("authorization codes"));
    };
    let result = store_code(idp, client, req, user, consent.as_ref(), now).await;
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
    consent: Option<&ConsentChange<'_>>,
    now: u64,
) -> Result<String, AadError> {
    if let Some(c) = consent {
        idp.save_consents(&user.oid, client, &c.after).await?;
    }
    let code = grants::new_code(req.nonce.as_deref());
    let (resource, scopes) = grants::scope_to_grant(&req.scope);
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

fn session_user<'a>(idp: &'a Idp, headers: &HeaderMap) -> Option<&'a User> {
    let cookie = pages::cookie(headers, SESSION_COOKIE)?;
    let now = idp.now();
    let oid = {
        let state = idp.state();
        let s = state.sessions.get(&token_hash(&cookie))?;
        (s.expires > now).then(|| s.user_oid.clone())?
    };
    idp.dir.user_by_oid(&oid)
}

fn client_of<'a>(idp: &'a Idp, req: &AuthorizeRequest) -> Option<&'a App> {
    idp.dir.app(&req.client_id)
}

/// Starts a sign-in page: a pending request with its own CSRF value,
/// refused past the cap.
async fn show_sign_in(idp: &Idp, req: AuthorizeRequest, user_oid: Option<String>) -> Response {
    let id = random_token();
    let pending = Pending {
        request: req,
        csrf: random_token(),
        user_oid,
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

/// The page for a pending sign-in: the sign-in form, or consent once the
/// user is known. Its CSRF cookie is named for the flow, so that two
/// sign-ins open in one browser do not overwrite each other's.
async fn render(
    idp: &Idp,
    id: &str,
    pending: &Pending,
    error: Option<(&AadError, &str)>,
) -> Response {
    let req = &pending.request;
    let client = client_of(idp, req);
    let app_name = client.map_or(req.client_id.clone(), |a| a.name.clone());
    let consent_for = pending
        .user_oid
        .as_deref()
        .and_then(|oid| idp.dir.user_by_oid(oid));
    let mut resp = match consent_for {
        Some(user) => {
            let missing = match client {
                Some(c) => match idp.consents(&user.oid, c).await {
                    Ok(consents) => idp.missing_consent(&consents, c, &req.scope),
                    Err(e) => return pages::error(&e),
                },
                None => Vec::new(),
            };
            pages::consent(id, &pending.csrf, &app_name, user, &missing)
        }
        None => pages::sign_in(
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
        // Consent and code together: a refused code leaves no consent.
        let code = match idp.consents(&user.oid, client).await {
            Ok(before) => {
                let consent = idp
                    .consent_to(&before, &req.scope)
                    .map(|after| ConsentChange {
                        before: &before,
                        after,
                    });
                issue_code(&idp, client, &req, user, consent).await
            }
            Err(e) => Err(e),
        };
        tracing::info!(user = %user.username, client = %client.client_id, "authorize auto-approved");
        return send_code(&req, code);
    }

    let hint_ok = |u: &User| {
        req.login_hint
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(&u.username))
    };
    let current = session_user(&idp, &headers)
        .filter(|u| hint_ok(u) && idp.user_may_sign_in(u, &req.tenant_segment).is_ok());
    if silent {
        let Some(user) = current else {
            return redirect_err(AadError::from(AuthorizeError::InteractionRequired));
        };
        let code = match idp.consents(&user.oid, client).await {
            Ok(c) if idp.missing_consent(&c, client, &req.scope).is_empty() => {
                issue_code(&idp, client, &req, user, None).await
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
        Some(user) if !req.force_login => {
            let consents = match idp.consents(&user.oid, client).await {
                Ok(c) => c,
                Err(e) => return redirect_err(e),
            };
            if idp
                .missing_consent(&consents, client, &req.scope)
                .is_empty()
            {
                let code = issue_code(&idp, client, &req, user, None).await;
                send_code(&req, code)
            } else {
                let oid = user.oid.clone();
                show_sign_in(&idp, req, Some(oid)).await
            }
        }
        _ => show_sign_in(&idp, req, None).await,
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

/// `POST /{tenant}/oauth2/v2.0/authorize`: the sign-in and consent forms.
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
            let Some(user) = pending
                .user_oid
                .as_deref()
                .and_then(|o| idp.dir.user_by_oid(o))
            else {
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
                        issue_code(&idp, client, req, user, consent).await
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
            let session = random_token();
            let session_made = {
                let mut state = idp.state();
                // Taken under the lock, so that a form submitted twice is
                // answered once; put back below unless a code is issued.
                if state.pending.remove(pending_id).is_none() {
                    drop(state);
                    return pages::error(&AadError::from(AuthorizeError::PageExpired));
                }
                // Past the cap the sign-in still completes, without a
                // browser session (no single sign-on for the next one).
                let session_made = state.sessions.len() < idp.limits.max_sessions;
                if session_made {
                    state.sessions.insert(
                        token_hash(&session),
                        Session {
                            user_oid: user.oid.clone(),
                            expires: now + SESSION_TTL,
                        },
                    );
                }
                session_made
            };
            let consents = idp.consents(&user.oid, client).await;
            let (mut resp, done) = match consents {
                Ok(c) if idp.missing_consent(&c, client, &req.scope).is_empty() => {
                    let code = issue_code(&idp, client, req, user, None).await;
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
                    next.user_oid = Some(user.oid.clone());
                    idp.state()
                        .pending
                        .insert(pending_id.to_owned(), next.clone());
                    let mut resp = render(&idp, pending_id, &next, None).await;
                    if session_made {
                        pages::set_cookie(
                            &mut resp,
                            SESSION_COOKIE,
                            &session,
                            idp.tls,
                            SESSION_TTL,
                        );
                    }
                    return resp;
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
            if !done {
                // The page stays usable, with its CSRF cookie.
                return resp;
            }
            resp
        }
        _ => return pages::error(&AadError::missing("action")),
    };
    // The flow is over: its CSRF cookie goes.
    pages::set_cookie(&mut resp, &pages::csrf_cookie(pending_id), "", idp.tls, 0);
    resp
}
