//! The broker's audit records, one per decision: a sign-in completed (or
//! refused), tokens issued, a token request refused. They carry who (the
//! user's oid, UPN and tenant), which client, which grant type and, for a
//! refusal, the OAuth error code; never a code, token, verifier or secret.
//! Nothing is recorded unless [`BrokerConfig::audit`](crate::BrokerConfig::audit)
//! names a sink.

use std::time::Duration;

use mcpgate_audit::{AuditEvent, AuditRecord, Decision};

use crate::grant::Identity;
use crate::server::Broker;
use crate::wire::OAuthError;

/// What a token request has revealed so far, filled in as the request is
/// checked, so that a refusal records as much as was known.
#[derive(Debug, Default)]
pub(crate) struct TokenFacts {
    /// `authorization_code` or `refresh_token`, once recognised.
    pub grant_type: Option<&'static str>,
    /// The client, once authenticated.
    pub client_id: Option<String>,
    /// The user's oid (the grant's subject), once the grant is read.
    pub oid: Option<String>,
    /// The user's UPN, once the sealed grant is opened.
    pub upn: Option<String>,
    /// The user's tenant, likewise.
    pub tenant: Option<String>,
}

impl TokenFacts {
    /// Takes the user from the opened grant.
    pub fn user(&mut self, identity: &Identity) {
        self.oid = Some(identity.oid.clone());
        self.upn.clone_from(&identity.preferred_username);
        self.tenant.clone_from(&identity.tid);
    }
}

fn decision(refused: Option<&OAuthError>) -> (Decision, Option<String>) {
    match refused {
        None => (Decision::Allow, None),
        Some(o) => (Decision::Deny, Some(o.code().to_owned())),
    }
}

/// Records the outcome of `/token`.
pub(crate) fn token(
    broker: &Broker,
    facts: TokenFacts,
    refused: Option<&OAuthError>,
    latency: Duration,
) {
    let Some(sink) = &broker.config.audit else {
        return;
    };
    let (decision, reason) = decision(refused);
    let event = match refused {
        None => AuditEvent::TokenIssued,
        Some(_) => AuditEvent::TokenRefused,
    };
    let mut r = AuditRecord::new(event, decision);
    r.reason = reason;
    r.grant_type = facts.grant_type.map(str::to_owned);
    r.client_app = facts.client_id;
    r.user_oid = facts.oid;
    r.user_upn = facts.upn;
    r.tenant = facts.tenant;
    r.set_latency(latency);
    sink.record(r);
}

/// Records a sign-in that ended: the client got its code (`refused` is
/// `None`), or the user was sent back with an error.
pub(crate) fn sign_in(
    broker: &Broker,
    client_id: &str,
    identity: Option<&Identity>,
    refused: Option<&OAuthError>,
) {
    let Some(sink) = &broker.config.audit else {
        return;
    };
    let (decision, reason) = decision(refused);
    let mut r = AuditRecord::new(AuditEvent::SignIn, decision);
    r.reason = reason;
    r.client_app = Some(client_id.to_owned());
    if let Some(identity) = identity {
        r.user_oid = Some(identity.oid.clone());
        r.user_upn.clone_from(&identity.preferred_username);
        r.tenant.clone_from(&identity.tid);
    }
    sink.record(r);
}
