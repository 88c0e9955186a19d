//! The claims mcpgate reads from an access token, and the [`Principal`] it
//! yields once a token is accepted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};

/// Claims of an access token, as Entra v1/v2 and other OIDC providers write
/// them. Unknown claims are ignored; every field is optional here so that the
/// validator, not serde, says which one is missing.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Claims {
    /// Issuer.
    #[serde(default)]
    pub iss: Option<String>,
    /// Audience: one string or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Issued at.
    #[serde(default)]
    pub iat: Option<i64>,
    /// Subject (pairwise per application in Entra).
    #[serde(default)]
    pub sub: Option<String>,
    /// Entra object id of the user or service principal.
    #[serde(default)]
    pub oid: Option<String>,
    /// Entra tenant id.
    #[serde(default)]
    pub tid: Option<String>,
    /// Delegated scopes: Entra writes a space-separated string, some
    /// providers a list.
    #[serde(default, deserialize_with = "space_or_list")]
    pub scp: Vec<String>,
    /// The OAuth `scope` claim (RFC 9068), space-separated.
    #[serde(default, deserialize_with = "space_or_list")]
    pub scope: Vec<String>,
    /// App roles.
    #[serde(default, deserialize_with = "one_or_many")]
    pub roles: Vec<String>,
    /// Entra's token-type hint: `app` for app-only tokens.
    #[serde(default)]
    pub idtyp: Option<String>,
    /// Client application (v2 tokens).
    #[serde(default)]
    pub azp: Option<String>,
    /// Client application (v1 tokens).
    #[serde(default)]
    pub appid: Option<String>,
    /// Token version: "1.0" or "2.0" in Entra.
    #[serde(default)]
    pub ver: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Sign-in name (v2).
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// Sign-in name (v1).
    #[serde(default)]
    pub upn: Option<String>,
    /// Group memberships (Entra: group object ids), when the app
    /// registration asks for them and they fit in the token.
    #[serde(default, deserialize_with = "one_or_many")]
    pub groups: Vec<String>,
    /// Entra's pointers to claims left out of the token: `groups` here means
    /// the user has more groups than fit (the overage case).
    #[serde(default, rename = "_claim_names")]
    pub claim_names: Option<ClaimNames>,
    /// Entra's overage marker in implicit-flow tokens.
    #[serde(default)]
    pub hasgroups: Option<bool>,
}

/// Entra's `_claim_names`: which claims live elsewhere (only `groups`
/// matters here; the source it names is never fetched).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ClaimNames {
    /// The source id of the groups left out, when there are too many.
    #[serde(default)]
    pub groups: Option<String>,
}

impl Claims {
    /// The client application that asked for the token: `azp` (v2) or
    /// `appid` (v1).
    pub fn client_app(&self) -> Option<&str> {
        self.azp.as_deref().or(self.appid.as_deref())
    }

    /// Delegated scopes from `scp`, else from `scope`.
    pub fn scopes(&self) -> &[String] {
        if self.scp.is_empty() {
            &self.scope
        } else {
            &self.scp
        }
    }

    /// Whether the token acts for a user (delegated) or for an application
    /// alone: delegated when it carries scopes and Entra did not mark it
    /// `idtyp=app`.
    pub fn kind(&self) -> TokenKind {
        let marked_app = self.idtyp.as_deref() == Some("app");
        if !marked_app && !self.scopes().is_empty() {
            TokenKind::Delegated
        } else {
            TokenKind::AppOnly
        }
    }

    /// Whether Entra left the groups out because there are too many: the
    /// `groups` claim then says nothing about membership.
    pub fn groups_overage(&self) -> bool {
        self.hasgroups == Some(true)
            || self
                .claim_names
                .as_ref()
                .is_some_and(|names| names.groups.is_some())
    }
}

/// Who a token acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A user, through a client application.
    Delegated,
    /// An application acting for itself (client credentials).
    AppOnly,
}

impl TokenKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Delegated => "delegated",
            TokenKind::AppOnly => "app_only",
        }
    }
}

/// The caller an accepted token stands for. This is what tool handlers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The token's issuer.
    pub issuer: String,
    /// Tenant id (`tid`), when the issuer has tenants.
    pub tenant_id: Option<String>,
    /// Subject.
    pub subject: String,
    /// Object id (`oid`), stable across applications in Entra.
    pub object_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Sign-in name.
    pub preferred_username: Option<String>,
    /// Delegated scopes, as the token lists them.
    pub scopes: Vec<String>,
    /// App roles.
    pub roles: Vec<String>,
    /// Group memberships (Entra: group object ids), as the token lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The token left its groups out because there are too many (Entra's
    /// overage): [`Self::groups`] is then incomplete and a rule on groups
    /// cannot be decided from the token.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub groups_overage: bool,
    /// The client application (`azp`/`appid`).
    pub client_app_id: Option<String>,
    /// Delegated or app-only.
    pub kind: TokenKind,
    /// When the token stops being valid.
    #[serde(serialize_with = "unix_secs")]
    pub expires_at: SystemTime,
    // Made once, when the token is first verified: sessions compare it on
    // every request.
    #[serde(skip)]
    identity_key: String,
}

impl Principal {
    /// A stable key for "the same caller": issuer, tenant and object id (or
    /// subject). Sessions are bound to it.
    /// The validator refuses tokens that carry neither, so `who` is never
    /// empty.
    pub fn identity_key(&self) -> &str {
        &self.identity_key
    }

    /// The principal for claims the caller has already verified (signature,
    /// issuer, audience, lifetime): the validator yields principals this way,
    /// and gateways and tests that hold verified claims may too. `exp` is
    /// the expiry in seconds since the epoch.
    pub fn from_verified_claims(claims: &Claims, issuer: &str, exp: u64) -> Self {
        Self::from_claims(claims, issuer, exp)
    }

    pub(crate) fn from_claims(claims: &Claims, issuer: &str, exp: u64) -> Self {
        let mut principal = Principal {
            issuer: issuer.to_owned(),
            tenant_id: claims.tid.clone(),
            subject: claims
                .sub
                .clone()
                .filter(|sub| !sub.is_empty())
                .or_else(|| claims.oid.clone())
                .unwrap_or_default(),
            object_id: claims.oid.clone(),
            name: claims.name.clone(),
            preferred_username: claims
                .preferred_username
                .clone()
                .or_else(|| claims.upn.clone()),
            scopes: claims.scopes().to_vec(),
            roles: claims.roles.clone(),
            groups: claims.groups.clone(),
            groups_overage: claims.groups_overage(),
            client_app_id: claims.client_app().map(str::to_owned),
            kind: claims.kind(),
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
            identity_key: String::new(),
        };
        let who = principal
            .object_id
            .as_deref()
            .filter(|oid| !oid.is_empty())
            .unwrap_or(&principal.subject);
        principal.identity_key = format!(
            "{}|{}|{}",
            principal.issuer,
            principal.tenant_id.as_deref().unwrap_or(""),
            who
        );
        principal
    }
}

fn unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    s.serialize_u64(secs)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

fn space_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(OneOrMany::Many(v)) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> Claims {
        serde_json::from_value(v).expect("test claims parse")
    }

    #[test]
    fn audience_and_scopes_accept_both_shapes() {
        let c = claims(json!({"aud": "a", "scp": "x y"}));
        assert_eq!(c.aud, ["a"]);
        assert_eq!(c.scopes(), ["x", "y"]);
        let c = claims(json!({"aud": ["a", "b"], "scp": ["x"]}));
        assert_eq!(c.aud, ["a", "b"]);
        assert_eq!(c.scopes(), ["x"]);
        let c = claims(json!({"scope": "read write"}));
        assert_eq!(c.scopes(), ["read", "write"]);
    }

    #[test]
    fn token_kind_follows_scp_and_idtyp() {
        assert_eq!(claims(json!({"scp": "a"})).kind(), TokenKind::Delegated);
        assert_eq!(
            claims(json!({"scp": "a", "idtyp": "app"})).kind(),
            TokenKind::AppOnly
        );
        assert_eq!(claims(json!({"roles": ["r"]})).kind(), TokenKind::AppOnly);
        assert_eq!(claims(json!({"scp": ""})).kind(), TokenKind::AppOnly);
    }

    #[test]
    fn identity_key_prefers_oid() {
        let c = claims(json!({"sub": "pairwise", "oid": "o-1", "tid": "t-1"}));
        let p = Principal::from_claims(&c, "https://iss", 10);
        assert_eq!(p.identity_key(), "https://iss|t-1|o-1");
        assert_eq!(p.client_app_id, None);
    }

    #[test]
    fn groups_are_read_and_overage_is_marked() {
        let c = claims(json!({"sub": "s", "groups": ["g-1", "g-2"]}));
        let p = Principal::from_claims(&c, "https://iss", 10);
        assert_eq!(p.groups, ["g-1", "g-2"]);
        assert!(!p.groups_overage);

        // Entra's access-token overage: the groups live behind a source.
        let c = claims(json!({
            "sub": "s",
            "_claim_names": {"groups": "src1"},
            "_claim_sources": {"src1": {"endpoint": "https://graph.example/x"}}
        }));
        let p = Principal::from_claims(&c, "https://iss", 10);
        assert!(p.groups.is_empty());
        assert!(p.groups_overage);

        // The implicit-flow marker.
        let c = claims(json!({"sub": "s", "hasgroups": true}));
        assert!(Principal::from_claims(&c, "https://iss", 10).groups_overage);
        let c = claims(json!({"sub": "s", "hasgroups": false, "_claim_names": {}}));
        assert!(!Principal::from_claims(&c, "https://iss", 10).groups_overage);
    }

    #[test]
    fn groups_stay_out_of_the_serialised_principal_when_absent() {
        let p = Principal::from_claims(&claims(json!({"sub": "s"})), "https://iss", 10);
        let v = serde_json::to_value(&p).expect("serialise");
        assert!(v.get("groups").is_none() && v.get("groups_overage").is_none());
        let c = claims(json!({"sub": "s", "groups": "g-1", "hasgroups": true}));
        let v = serde_json::to_value(Principal::from_verified_claims(&c, "https://iss", 10))
            .expect("serialise");
        assert_eq!(v["groups"], json!(["g-1"]));
        assert_eq!(v["groups_overage"], json!(true));
    }
}
