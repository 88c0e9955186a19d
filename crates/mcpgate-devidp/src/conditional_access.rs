//! Conditional Access, as much of it as a development IdP needs to make
//! clients meet a claims challenge: rules that require multi-factor
//! authentication for some users and resources, what a sign-in earned
//! (Entra's `amr` and `acrs` claims), the `claims` request parameter, and
//! the challenge Entra answers with when a grant does not satisfy a rule.
//!
//! # Where the shapes come from
//!
//! - The challenge: Entra answers a token request that a policy blocks with
//!   `AADSTS50076`, `suberror: basic_action` and a `claims` member holding a
//!   JSON *string* such as
//!   `{"access_token":{"capolids":{"essential":true,"values":["<policy id>"]}}}`;
//!   On-Behalf-Of gets `interaction_required`. See
//!   <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow#error-response-example>
//!   and
//!   <https://learn.microsoft.com/entra/identity-platform/v2-conditional-access-dev-guide>.
//! - The request: OpenID Connect Core §5.5 (`claims`, each claim with
//!   `essential`, `value` or `values`); Entra reads `capolids` (policy ids)
//!   and `acrs` (authentication context ids, `c1`…`c99`) in it, and MSAL adds
//!   `xms_cc` (client capabilities), which needs nothing here. See
//!   <https://learn.microsoft.com/entra/identity-platform/developer-guide-conditional-access-authentication-context>.
//!   A `claims` value that is not a JSON object is `AADSTS50117` ("Failed to
//!   deserialize policy specified in the request's claim parameter").
//! - The token: `amr` lists how the user authenticated (`pwd`, then `mfa`);
//!   `acrs` the authentication contexts the sign-in satisfied. See
//!   <https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>.
//!
//! The second factor is a fixed development code, [`DEV_MFA_CODE`]: this
//! IdP proves that clients handle the challenge, not that a person holds
//! an authenticator.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::directory::User;
use crate::error::AadError;

/// The development second factor. Shown on the page as a hint on loopback.
pub const DEV_MFA_CODE: &str = "000000";

/// The longest `claims` value read (Entra bounds request parameters with
/// `AADSTS90015`).
pub const MAX_CLAIMS: usize = 2048;

/// Most authentication context ids one request may ask for.
const MAX_ACRS: usize = 16;
/// Most policy ids one request may name.
const MAX_CAPOLIDS: usize = 16;

/// What a rule requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    /// Multi-factor authentication.
    Mfa,
    /// No access at all (a policy that blocks, by location, device or
    /// risk): `AADSTS53003`, which no second sign-in can meet.
    Block,
}

/// `[[conditional_access]]`: one rule, as written in TOML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Display name.
    pub name: String,
    /// Policy id (a GUID). Default: derived from the name.
    #[serde(default)]
    pub id: Option<String>,
    /// Usernames it applies to; empty: every user.
    #[serde(default)]
    pub users: Vec<String>,
    /// Resources it applies to: app ids, identifier URIs, or `graph`;
    /// empty: every resource.
    #[serde(default)]
    pub resources: Vec<String>,
    /// What it requires.
    pub require: Requirement,
}

/// A rule, checked against the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Policy id (lower-case GUID): what `capolids` names.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Object ids of the users it applies to; empty: every user.
    pub users: BTreeSet<String>,
    /// Resource app ids it applies to; empty: every resource.
    pub resources: BTreeSet<String>,
    /// What it requires.
    pub require: Requirement,
}

impl Rule {
    /// Whether the rule applies to `user` getting a token for `resource`
    /// (an app id).
    pub fn covers(&self, user: &User, resource: &str) -> bool {
        (self.users.is_empty() || self.users.contains(&user.oid))
            && (self.resources.is_empty()
                || self
                    .resources
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(resource)))
    }

    /// Whether a grant with `context` satisfies the rule.
    pub fn satisfied_by(&self, context: &AuthContext) -> bool {
        match self.require {
            Requirement::Mfa => context.mfa,
            Requirement::Block => false,
        }
    }
}

/// How a sign-in authenticated the user, carried by its codes, refresh
/// tokens and device grants into every token they buy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthContext {
    /// The user completed the second factor.
    pub mfa: bool,
    /// Authentication context ids satisfied (only with `mfa`).
    pub acrs: BTreeSet<String>,
}

impl AuthContext {
    /// A sign-in with a password (or a one-click development user) only.
    pub fn password() -> Self {
        Self::default()
    }

    /// A sign-in that completed the second factor, satisfying the
    /// authentication contexts `claims` asked for.
    pub fn with_mfa(claims: &ClaimsRequest) -> Self {
        Self {
            mfa: true,
            acrs: claims.acrs.clone(),
        }
    }

    /// Entra's `amr`.
    pub fn amr(&self) -> Vec<&'static str> {
        if self.mfa {
            vec!["pwd", "mfa"]
        } else {
            vec!["pwd"]
        }
    }

    /// Reads the context of a token presented as an On-Behalf-Of assertion:
    /// `amr` containing `mfa`, and `acrs` when it has it.
    pub fn of_token(claims: &Value) -> Self {
        let strings = |name: &str| -> BTreeSet<String> {
            claims[name]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mfa = strings("amr").contains("mfa");
        Self {
            mfa,
            acrs: if mfa {
                strings("acrs")
            } else {
                BTreeSet::new()
            },
        }
    }

    /// This context, also satisfying what `claims` asks, once the second
    /// factor is done (the caller checked [`ClaimsRequest::needs_mfa`]).
    pub fn meeting(&self, claims: &ClaimsRequest) -> Self {
        let mut out = self.clone();
        if out.mfa {
            out.acrs.extend(claims.acrs.iter().cloned());
        }
        out
    }
}

/// What a `claims` request parameter asks of the access token, as far as
/// Conditional Access goes. Other claims (MSAL's `xms_cc`, `id_token`
/// members) are accepted and need nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimsRequest {
    /// Policy ids the token must satisfy (`capolids`).
    pub capolids: BTreeSet<String>,
    /// Authentication context ids (`acrs`).
    pub acrs: BTreeSet<String>,
}

/// Why a `claims` parameter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Longer than [`MAX_CLAIMS`].
    #[error("the claims parameter is too long")]
    TooLong,
    /// Not a JSON object of objects, or a value of the wrong type.
    #[error("the claims parameter is not a valid claims request")]
    Malformed,
}

impl From<ClaimsError> for AadError {
    fn from(e: ClaimsError) -> Self {
        match e {
            ClaimsError::TooLong => AadError::too_long("parameter 'claims'", MAX_CLAIMS),
            ClaimsError::Malformed => AadError::new(
                "invalid_request",
                50117,
                "Failed to deserialize policy specified in the request's claim parameter. It must be a JSON object such as {\"access_token\":{\"acrs\":{\"essential\":true,\"value\":\"c1\"}}}.",
            ),
        }
    }
}

/// The string values of one requested claim: `value` and/or `values`.
fn claim_values(claim: &Value) -> Result<Vec<String>, ClaimsError> {
    let Some(obj) = claim.as_object() else {
        // `"acrs": null` asks for the claim with no particular value.
        return if claim.is_null() {
            Ok(Vec::new())
        } else {
            Err(ClaimsError::Malformed)
        };
    };
    let mut out = Vec::new();
    if let Some(v) = obj.get("value") {
        out.push(v.as_str().ok_or(ClaimsError::Malformed)?.to_owned());
    }
    if let Some(vs) = obj.get("values") {
        for v in vs.as_array().ok_or(ClaimsError::Malformed)? {
            out.push(v.as_str().ok_or(ClaimsError::Malformed)?.to_owned());
        }
    }
    Ok(out)
}

/// An authentication context id as Entra defines them: `c1` to `c99`.
fn acr_id_ok(id: &str) -> bool {
    id.strip_prefix('c').is_some_and(|n| {
        (1..=2).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_digit())
            && n.parse::<u8>().is_ok_and(|n| (1..=99).contains(&n))
    })
}

impl ClaimsRequest {
    /// Parses a `claims` parameter (already URL-decoded).
    pub fn parse(raw: &str) -> Result<Self, ClaimsError> {
        if raw.len() > MAX_CLAIMS {
            return Err(ClaimsError::TooLong);
        }
        let value: Value = serde_json::from_str(raw).map_err(|_| ClaimsError::Malformed)?;
        let top = value.as_object().ok_or(ClaimsError::Malformed)?;
        let mut out = Self::default();
        for (member, claims) in top {
            let claims = claims.as_object().ok_or(ClaimsError::Malformed)?;
            if member != "access_token" {
                // `id_token`, `userinfo`: well-formed, nothing to enforce.
                continue;
            }
            if let Some(c) = claims.get("capolids") {
                out.capolids.extend(claim_values(c)?);
            }
            if let Some(c) = claims.get("acrs") {
                for id in claim_values(c)? {
                    if !acr_id_ok(&id) {
                        return Err(ClaimsError::Malformed);
                    }
                    out.acrs.insert(id);
                }
            }
        }
        if out.capolids.len() > MAX_CAPOLIDS || out.acrs.len() > MAX_ACRS {
            return Err(ClaimsError::Malformed);
        }
        Ok(out)
    }

    /// Parses an optional parameter; absent is an empty request.
    pub fn parse_opt(raw: Option<&str>) -> Result<Self, ClaimsError> {
        raw.map_or_else(|| Ok(Self::default()), Self::parse)
    }

    /// Whether it asks for anything only a second factor gives.
    pub fn needs_mfa(&self) -> bool {
        !self.capolids.is_empty() || !self.acrs.is_empty()
    }
}

/// What a grant still lacks: the policies a challenge names, or the
/// authentication contexts a `claims` request asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unmet {
    /// Policy ids of unsatisfied rules (or those the request named).
    pub capolids: BTreeSet<String>,
    /// Authentication context ids asked and not satisfied.
    pub acrs: BTreeSet<String>,
}

impl Unmet {
    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.capolids.is_empty() && self.acrs.is_empty()
    }

    /// The `claims` value of the challenge, a JSON string:
    /// `{"access_token":{"capolids":{"essential":true,"values":[…]}}}` for
    /// policies, `"acrs":{"essential":true,"value":"c1"}` for a context
    /// (Entra's two shapes).
    pub fn claims(&self) -> String {
        let mut at = serde_json::Map::new();
        if !self.capolids.is_empty() {
            at.insert(
                "capolids".into(),
                json!({"essential": true, "values": self.capolids}),
            );
        }
        match self.acrs.len() {
            0 => {}
            1 => {
                let only = self.acrs.iter().next().cloned().unwrap_or_default();
                at.insert("acrs".into(), json!({"essential": true, "value": only}));
            }
            _ => {
                at.insert(
                    "acrs".into(),
                    json!({"essential": true, "values": self.acrs}),
                );
            }
        }
        json!({ "access_token": at }).to_string()
    }
}

/// What a grant with `context` lacks for `user` to get a token for
/// `resource`, under `rules` and what the request's `claims` ask.
pub fn unmet(
    rules: &[Rule],
    user: &User,
    resource: &str,
    context: &AuthContext,
    claims: &ClaimsRequest,
) -> Unmet {
    let mut out = Unmet::default();
    for rule in rules {
        // A block is no challenge: nothing the user does meets it.
        if rule.require == Requirement::Mfa
            && rule.covers(user, resource)
            && !rule.satisfied_by(context)
        {
            out.capolids.insert(rule.id.clone());
        }
    }
    if claims.needs_mfa() && !context.mfa {
        out.capolids.extend(claims.capolids.iter().cloned());
        out.acrs.extend(claims.acrs.iter().cloned());
    }
    out
}

/// The rule that blocks `user` from any token for `resource`, if one does.
pub fn blocked_by<'a>(rules: &'a [Rule], user: &User, resource: &str) -> Option<&'a Rule> {
    rules
        .iter()
        .find(|r| r.require == Requirement::Block && r.covers(user, resource))
}

/// `AADSTS53003`, as Entra answers a sign-in or token request a blocking
/// policy covers.
pub fn blocked_error(error: &'static str) -> AadError {
    AadError::new(
        error,
        53003,
        "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
    )
}

/// Whether a sign-in for `user` and `resource` must ask for the second
/// factor (a rule covers them, or the request's `claims` asks for it).
pub fn second_factor_needed(
    rules: &[Rule],
    user: &User,
    resource: &str,
    claims: &ClaimsRequest,
) -> bool {
    claims.needs_mfa()
        || rules
            .iter()
            .any(|r| r.covers(user, resource) && r.require == Requirement::Mfa)
}

/// Whether `code` is the development second factor (constant time).
pub fn code_ok(code: &str) -> bool {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    crate::util::ct_eq(digits.as_bytes(), DEV_MFA_CODE.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn user(oid: &str) -> User {
        User {
            username: format!("{oid}@x.test"),
            display_name: oid.to_owned(),
            password_sha256: None,
            oid: oid.to_owned(),
            tenant: "t".to_owned(),
            roles: BTreeMap::new(),
            disabled: false,
            listed: true,
        }
    }

    fn rule(users: &[&str], resources: &[&str]) -> Rule {
        Rule {
            id: "c0a10000-0000-4000-8000-000000000001".to_owned(),
            name: "MFA".to_owned(),
            users: users.iter().map(|s| (*s).to_owned()).collect(),
            resources: resources.iter().map(|s| (*s).to_owned()).collect(),
            require: Requirement::Mfa,
        }
    }

    #[test]
    fn rules_match_users_and_resources_empty_meaning_all() {
        let (alice, bob) = (user("alice"), user("bob"));
        let r = rule(&["alice"], &["api"]);
        assert!(r.covers(&alice, "api"));
        assert!(
            r.covers(&alice, "API"),
            "app ids compare case-insensitively"
        );
        assert!(!r.covers(&bob, "api"));
        assert!(!r.covers(&alice, "graph-id"));
        let everyone = rule(&[], &["api"]);
        assert!(everyone.covers(&bob, "api"));
        let everything = rule(&["bob"], &[]);
        assert!(everything.covers(&bob, "anything"));
        assert!(!everything.covers(&alice, "anything"));
        assert!(r.satisfied_by(&AuthContext::with_mfa(&ClaimsRequest::default())));
        assert!(!r.satisfied_by(&AuthContext::password()));
    }

    #[test]
    fn unmet_names_the_policies_and_what_claims_asked() {
        let alice = user("alice");
        let rules = [rule(&["alice"], &["api"])];
        let none = ClaimsRequest::default();
        let pwd = AuthContext::password();
        let mfa = AuthContext::with_mfa(&none);
        let u = unmet(&rules, &alice, "api", &pwd, &none);
        assert_eq!(
            u.claims(),
            r#"{"access_token":{"capolids":{"essential":true,"values":["c0a10000-0000-4000-8000-000000000001"]}}}"#
        );
        assert!(unmet(&rules, &alice, "api", &mfa, &none).is_empty());
        assert!(unmet(&rules, &alice, "other", &pwd, &none).is_empty());
        let asks =
            ClaimsRequest::parse(r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#)
                .expect("claims");
        let u = unmet(&[], &alice, "other", &pwd, &asks);
        assert_eq!(
            u.claims(),
            r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#
        );
        assert!(unmet(&[], &alice, "other", &mfa, &asks).is_empty());
        assert!(second_factor_needed(&rules, &alice, "api", &none));
        assert!(!second_factor_needed(&rules, &alice, "other", &none));
        assert!(second_factor_needed(&[], &alice, "other", &asks));
    }

    #[test]
    fn claims_requests_parse_as_entra_and_msal_send_them() {
        let c = ClaimsRequest::parse(
            r#"{"access_token":{"capolids":{"essential":true,"values":["p1","p2"]},"xms_cc":{"values":["cp1"]}}}"#,
        )
        .expect("capolids");
        assert_eq!(c.capolids.len(), 2);
        assert!(c.needs_mfa());
        let c = ClaimsRequest::parse(
            r#"{"access_token":{"acrs":{"essential":true,"values":["c1","c25"]}},"id_token":{"auth_time":{"essential":true}}}"#,
        )
        .expect("acrs");
        assert_eq!(c.acrs, ["c1", "c25"].map(str::to_owned).into());
        let only_cc =
            ClaimsRequest::parse(r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#).expect("cc");
        assert!(!only_cc.needs_mfa());
        assert_eq!(ClaimsRequest::parse_opt(None), Ok(ClaimsRequest::default()));
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"access_token":[]}"#,
            r#"{"access_token":{"acrs":{"value":1}}}"#,
            r#"{"access_token":{"acrs":{"value":"c100"}}}"#,
            r#"{"access_token":{"acrs":{"value":"x1"}}}"#,
            r#"{"access_token":{"capolids":{"values":"p1"}}}"#,
        ] {
            assert_eq!(
                ClaimsRequest::parse(bad),
                Err(ClaimsError::Malformed),
                "{bad}"
            );
        }
        let long = format!(r#"{{"access_token":{{"x":"{}"}}}}"#, "a".repeat(MAX_CLAIMS));
        assert_eq!(ClaimsRequest::parse(&long), Err(ClaimsError::TooLong));
        let e = AadError::from(ClaimsError::Malformed);
        assert_eq!((e.error, e.code), ("invalid_request", 50117));
    }

    #[test]
    fn contexts_give_amr_and_keep_acrs_only_with_mfa() {
        assert_eq!(AuthContext::password().amr(), ["pwd"]);
        let asks =
            ClaimsRequest::parse(r#"{"access_token":{"acrs":{"value":"c2"}}}"#).expect("claims");
        let mfa = AuthContext::with_mfa(&asks);
        assert_eq!(mfa.amr(), ["pwd", "mfa"]);
        assert!(mfa.acrs.contains("c2"));
        let token = json!({"amr": ["pwd", "mfa"], "acrs": ["c2"]});
        assert_eq!(AuthContext::of_token(&token), mfa);
        let weak = json!({"amr": ["pwd"], "acrs": ["c2"]});
        assert_eq!(AuthContext::of_token(&weak), AuthContext::password());
        assert_eq!(AuthContext::of_token(&json!({})), AuthContext::password());
        assert!(AuthContext::password().meeting(&asks).acrs.is_empty());
        assert!(code_ok("000000") && code_ok(" 000 000 "));
        assert!(!code_ok("000001") && !code_ok("") && !code_ok("0000000"));
    }

    #[test]
    fn a_block_is_no_challenge_and_names_aadsts53003() {
        let alice = user("oid-a");
        let mut block = rule(&["oid-a"], &["api"]);
        block.require = Requirement::Block;
        let rules = [block];
        let mfa = AuthContext::with_mfa(&ClaimsRequest::default());
        assert!(blocked_by(&rules, &alice, "api").is_some());
        assert!(blocked_by(&rules, &alice, "graph-app").is_none());
        assert!(blocked_by(&rules, &user("oid-b"), "api").is_none());
        assert!(
            unmet(&rules, &alice, "api", &mfa, &ClaimsRequest::default()).is_empty(),
            "a block is not a claims challenge"
        );
        assert!(!second_factor_needed(
            &rules,
            &alice,
            "api",
            &ClaimsRequest::default()
        ));
        let e = blocked_error("invalid_grant");
        assert_eq!((e.error, e.code), ("invalid_grant", 53003));
    }
}
