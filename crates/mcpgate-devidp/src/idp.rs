//! The IdP's shared core: directory, keys, clock, the grant store and the
//! in-memory state, and the rules every grant shares (consent, token
//! responses).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use mcpgate_store::{ClientId, FamilyId, RefreshRecord, Store, TokenHash};
use mcpgate_token::clock::Clock;
use serde_json::{Value, json};

use crate::Exposure;
use crate::conditional_access::AuthContext;
use crate::directory::{App, Directory, GRAPH_APP_ID, SecretHash, User};
use crate::error::AadError;
use crate::grants::{self, Consents, store_failed};
use crate::keys::KeyRing;
use crate::mint::{AccessGrant, ClientAuth, Minter, client_info};
use crate::scope::ScopeRequest;
use crate::state::{CONSENT_TTL, Limits, REFRESH_TTL, State};
use crate::util::random_token;

/// The running IdP's shared state.
#[derive(Debug)]
pub struct Idp {
    /// The directory.
    pub dir: Directory,
    /// Signing keys.
    pub keys: KeyRing,
    /// The base URL, `https://127.0.0.1:port`.
    pub base: String,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The user to sign in without a page, if any.
    pub auto_approve: Option<String>,
    /// Access token lifetime.
    pub token_lifetime: u64,
    /// Device-code poll interval.
    pub device_interval: u64,
    /// SHA-256 of generated client secrets, by client id.
    pub generated_secrets: BTreeMap<String, SecretHash>,
    /// Whether the listener speaks TLS (cookies get `Secure`).
    pub tls: bool,
    /// Who can reach the IdP: one-click sign-in only on loopback.
    pub exposure: Exposure,
    /// Caps on what unauthenticated callers can make it hold.
    pub limits: Limits,
    /// Where codes, refresh-token families and consents live.
    pub store: Arc<dyn Store>,
    state: Mutex<State>,
}

/// A token response body, ready to send.
pub type TokenResponse = Value;

/// What a delegated grant issues tokens for.
#[derive(Debug, Clone, Copy)]
pub struct Delegated<'a> {
    /// The client.
    pub client: &'a App,
    /// How it authenticated.
    pub auth: ClientAuth,
    /// The signed-in user.
    pub user: &'a User,
    /// How the sign-in authenticated the user (`amr`, `acrs`); a refresh
    /// token minted here remembers it.
    pub context: &'a AuthContext,
    /// The concrete tenant.
    pub tenant: &'a str,
    /// What is asked.
    pub req: &'a ScopeRequest,
    /// The ID token's `nonce`.
    pub nonce: Option<&'a str>,
    /// The refresh-token family the tokens belong to, and the scope its
    /// grant started with (what a refresh that names none asks again).
    pub family: (&'a FamilyId, &'a ScopeRequest),
    /// Whether `client_info` was asked.
    pub want_client_info: bool,
}

/// Tokens minted for a delegated grant and not handed out yet: the caller
/// stores the refresh token (one atomic store operation) and only then
/// sends the body.
pub struct Issued {
    /// The token response.
    pub body: TokenResponse,
    /// The refresh token's key and record, when one was minted.
    pub refresh: Option<(TokenHash, RefreshRecord)>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body holds the tokens themselves.
        f.debug_struct("Issued")
            .field("body", &"[redacted]")
            .field("refresh", &self.refresh)
            .finish()
    }
}

impl Idp {
    /// Assembles the core.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: Directory,
        keys: KeyRing,
        base: String,
        clock: Arc<dyn Clock>,
        auto_approve: Option<String>,
        token_lifetime: u64,
        device_interval: u64,
        generated_secrets: BTreeMap<String, SecretHash>,
        tls: bool,
        exposure: Exposure,
        limits: Limits,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            dir,
            keys,
            base,
            clock,
            auto_approve,
            token_lifetime,
            device_interval,
            generated_secrets,
            tls,
            exposure,
            limits,
            store,
            state: Mutex::new(State::default()),
        }
    }

    /// The users a page offers for one click: the listed ones on loopback,
    /// none when the IdP is reachable from elsewhere.
    pub fn listed_users(&self) -> Vec<&User> {
        self.dir
            .users
            .iter()
            .filter(|u| self.one_click(u))
            .collect()
    }

    /// Whether `user` may sign in without a password.
    pub fn one_click(&self, user: &User) -> bool {
        user.listed && self.exposure == Exposure::Loopback
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> u64 {
        self.clock.unix_now()
    }

    /// The state, locked. A poisoned lock is taken over: every update keeps
    /// the state consistent before it can panic.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenant a URL segment names: a known GUID, or `common` and
    /// `organizations` (resolved later from the user or client).
    pub fn tenant_segment_ok(&self, segment: &str) -> Result<(), AadError> {
        if segment.eq_ignore_ascii_case("common")
            || segment.eq_ignore_ascii_case("organizations")
            || self.dir.tenant(segment).is_some()
        {
            Ok(())
        } else {
            Err(AadError::unknown_tenant(segment))
        }
    }

    /// The concrete tenant for a request: the segment's, else `fallback`'s.
    pub fn resolve_tenant(&self, segment: &str, fallback: &str) -> String {
        self.dir
            .tenant(segment)
            .map_or_else(|| fallback.to_owned(), |t| t.id.clone())
    }

    /// Checks that `user` may sign in to `segment`'s tenant.
    pub fn user_may_sign_in(&self, user: &User, segment: &str) -> Result<(), AadError> {
        if user.disabled {
            return Err(AadError::new(
                "invalid_grant",
                50057,
                "The user account is disabled.",
            ));
        }
        if let Some(t) = self.dir.tenant(segment)
            && t.id != user.tenant
        {
            return Err(AadError::new(
                "invalid_grant",
                50020,
                format!(
                    "User account '{}' from identity provider does not exist in tenant '{}' and cannot access the application in that tenant.",
                    user.username, t.name
                ),
            ));
        }
        Ok(())
    }

    /// The user's consents to a client, from the store.
    pub async fn consents(&self, user_oid: &str, client: &App) -> Result<Consents, AadError> {
        let found = self
            .store
            .get_consent(
                &grants::subject(user_oid),
                &grants::consent_client(&client.client_id),
            )
            .await
            .map_err(store_failed)?;
        Ok(found
            .as_ref()
            .map(Consents::from_record)
            .unwrap_or_default())
    }

    /// Stores the user's consents to a client (replacing what was there).
    pub async fn save_consents(
        &self,
        user_oid: &str,
        client: &App,
        consents: &Consents,
    ) -> Result<(), AadError> {
        let (subject, client) = (
            grants::subject(user_oid),
            grants::consent_client(&client.client_id),
        );
        let result = if consents.is_empty() {
            self.store.delete_consent(&subject, &client).await.map(drop)
        } else {
            let record = consents.to_record(self.now(), CONSENT_TTL);
            self.store.put_consent(&subject, &client, &record).await
        };
        result.map_err(store_failed)
    }

    /// Puts back the consents a grant found, after storing more for it
    /// and then failing: a grant that is not given leaves no consent.
    /// Best effort: a store that just failed may fail again (logged).
    pub async fn restore_consents(&self, user_oid: &str, client: &App, before: &Consents) {
        if self.save_consents(user_oid, client, before).await.is_err() {
            tracing::warn!(client = %client.client_id, "a consent could not be taken back");
        }
    }

    /// The scopes of `resource` this client may use for this user without
    /// asking: pre-authorization, admin consent, then the user's consent.
    fn available_scopes(
        &self,
        consents: &Consents,
        client: &App,
        resource: &str,
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(api) = self.dir.app(resource)
            && api.pre_authorized.contains(&client.client_id)
        {
            out.extend(api.scopes.iter().cloned());
        }
        if let Some(g) = client.granted.get(resource) {
            out.extend(g.iter().cloned());
        }
        out.extend(consents.of_resource(resource).map(str::to_owned));
        out
    }

    /// Every scope `resource` exposes.
    fn exposed_scopes(&self, resource: &str) -> BTreeSet<String> {
        if resource == GRAPH_APP_ID {
            crate::directory::GRAPH_SCOPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        } else {
            self.dir
                .app(resource)
                .map(|a| a.scopes.iter().cloned().collect())
                .unwrap_or_default()
        }
    }

    /// The scopes a request still needs consent for (empty: none), given
    /// the user's `consents` to the client.
    pub fn missing_consent(
        &self,
        consents: &Consents,
        client: &App,
        req: &ScopeRequest,
    ) -> Vec<String> {
        if !req.explicit_resource {
            return Vec::new();
        }
        let available = self.available_scopes(consents, client, &req.resource);
        if req.default {
            if available.is_empty() {
                self.exposed_scopes(&req.resource).into_iter().collect()
            } else {
                Vec::new()
            }
        } else {
            req.scopes.difference(&available).cloned().collect()
        }
    }

    /// `consents` with the user's consent to what `req` asks added;
    /// `None` when that adds nothing. Nothing is stored here: the caller
    /// stores it with the grant it is part of.
    pub fn consent_to(&self, consents: &Consents, req: &ScopeRequest) -> Option<Consents> {
        if !req.explicit_resource {
            return None;
        }
        let scopes = if req.default {
            self.exposed_scopes(&req.resource)
        } else {
            req.scopes.clone()
        };
        consents.adding(&req.resource, &scopes)
    }

    /// The delegated scopes a token for `req` carries, or consent_required.
    fn granted_scopes(
        &self,
        consents: &Consents,
        client: &App,
        req: &ScopeRequest,
    ) -> Result<BTreeSet<String>, AadError> {
        if !req.explicit_resource {
            // Only OpenID scopes: Entra issues a Graph token carrying them.
            return Ok(req
                .oidc
                .iter()
                .filter(|s| *s != "offline_access")
                .cloned()
                .collect());
        }
        let available = self.available_scopes(consents, client, &req.resource);
        let granted: BTreeSet<String> = if req.default {
            available
        } else {
            if !req.scopes.is_subset(&available) {
                return Err(AadError::consent_required(&client.client_id, &req.resource));
            }
            req.scopes.clone()
        };
        if granted.is_empty() {
            return Err(AadError::consent_required(&client.client_id, &req.resource));
        }
        Ok(granted)
    }

    fn minter(&self) -> Minter<'_> {
        Minter {
            keys: &self.keys,
            dir: &self.dir,
            base: &self.base,
            lifetime: self.token_lifetime,
            now: self.now(),
        }
    }

    /// The `scope` value of a response: full names, as Entra writes them.
    fn response_scope(&self, req: &ScopeRequest, granted: &BTreeSet<String>) -> String {
        let mut out: Vec<String> = if !req.explicit_resource || req.resource == GRAPH_APP_ID {
            granted.iter().cloned().collect()
        } else {
            let prefix = self
                .dir
                .app(&req.resource)
                .and_then(|a| a.identifier_uris.first().cloned())
                .unwrap_or_else(|| req.resource.clone());
            granted.iter().map(|s| format!("{prefix}/{s}")).collect()
        };
        if req.explicit_resource && req.resource == GRAPH_APP_ID {
            for o in ["openid", "profile", "email"] {
                if req.oidc.contains(o) {
                    out.push(o.to_owned());
                }
            }
        }
        out.join(" ")
    }

    /// Mints the tokens of a delegated grant, given the user's `consents`
    /// to the client: an access token, a refresh token in the grant's
    /// family when `offline_access` was asked, an ID token for `openid`,
    /// and `client_info` when asked.
    ///
    /// It changes nothing: it fails (consent) or returns what the caller
    /// then stores in one atomic operation, after its own checks.
    pub fn issue_delegated(
        &self,
        consents: &Consents,
        grant: &Delegated<'_>,
    ) -> Result<Issued, AadError> {
        let Delegated {
            client,
            auth,
            user,
            context,
            tenant,
            req,
            nonce,
            family,
            want_client_info,
        } = *grant;
        let granted = self.granted_scopes(consents, client, req)?;
        let roles = if req.explicit_resource {
            user.roles.get(&req.resource).cloned().unwrap_or_default()
        } else {
            BTreeSet::new()
        };
        let minter = self.minter();
        let (access_token, expires_in) = minter.access_token(&AccessGrant {
            resource: &req.resource,
            scopes: &granted,
            roles,
            client,
            client_auth: auth,
            user: Some((user, context)),
            tenant,
        });
        let mut body = json!({
            "token_type": "Bearer",
            "scope": self.response_scope(req, &granted),
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
        });
        let mut stored = None;
        if req.offline() {
            let now = self.now();
            let refresh = random_token();
            let (family, grant_scope) = family;
            let (resource, scopes) = grants::scope_to_grant(grant_scope);
            let scopes = grants::context_to_grant(scopes, context);
            let record = RefreshRecord {
                family: family.clone(),
                client_id: ClientId::new(client.client_id.clone()),
                subject: grants::subject(&user.oid),
                scopes,
                resource,
                upstream: None,
                issued_at: grants::timestamp(now),
                expires_at: grants::timestamp(now.saturating_add(REFRESH_TTL)),
            };
            stored = Some((grants::grant_hash(&refresh), record));
            body["refresh_token"] = json!(refresh);
        }
        if req.openid() {
            body["id_token"] =
                json!(minter.id_token(user, context, client, tenant, nonce, &req.oidc));
        }
        if want_client_info {
            body["client_info"] = json!(client_info(user));
        }
        Ok(Issued {
            body,
            refresh: stored,
        })
    }

    /// Stores the first refresh token of a new family, if one was minted.
    pub async fn store_new_family(&self, issued: &Issued) -> Result<(), AadError> {
        match &issued.refresh {
            Some((hash, record)) => self
                .store
                .put_refresh(hash, record)
                .await
                .map_err(store_failed),
            None => Ok(()),
        }
    }

    /// Issues an app-only token (client credentials) to a client that
    /// authenticated with `client_auth`.
    pub fn issue_app_only(
        &self,
        client: &App,
        client_auth: ClientAuth,
        tenant: &str,
        req: &ScopeRequest,
    ) -> TokenResponse {
        let roles = client
            .app_roles
            .get(&req.resource)
            .cloned()
            .unwrap_or_default();
        let none = BTreeSet::new();
        let (access_token, expires_in) = self.minter().access_token(&AccessGrant {
            resource: &req.resource,
            scopes: &none,
            roles,
            client,
            client_auth,
            user: None,
            tenant,
        });
        json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
        })
    }

    /// Refuses a delegated grant that Conditional Access (or the request's
    /// `claims`) blocks: the sign-in behind it, `context`, did not do the
    /// second factor that a rule for `user` and `req`'s resource requires.
    /// Checked before anything is spent, rotated or stored.
    pub fn conditional_access(
        &self,
        user: &User,
        req: &ScopeRequest,
        context: &AuthContext,
        claims: &crate::conditional_access::ClaimsRequest,
        on_behalf_of: bool,
    ) -> Result<(), AadError> {
        if let Some(rule) =
            crate::conditional_access::blocked_by(&self.dir.conditional_access, user, &req.resource)
        {
            tracing::info!(
                user = %user.username,
                resource = %req.resource,
                policy = %rule.id,
                "conditional access: blocked"
            );
            return Err(crate::conditional_access::blocked_error("invalid_grant"));
        }
        let unmet = crate::conditional_access::unmet(
            &self.dir.conditional_access,
            user,
            &req.resource,
            context,
            claims,
        );
        if unmet.is_empty() {
            return Ok(());
        }
        tracing::info!(
            user = %user.username,
            resource = %req.resource,
            policies = ?unmet.capolids,
            "conditional access: a second factor is required"
        );
        Err(AadError::from(
            crate::token_error::TokenError::MfaRequired {
                resource: req.resource.clone(),
                unmet,
                on_behalf_of,
            },
        ))
    }

    /// Revokes a refresh-token family: none of its tokens rotates again.
    pub async fn revoke_family(&self, family: &FamilyId) -> Result<(), AadError> {
        self.store.revoke_family(family).await.map_err(store_failed)
    }
}
