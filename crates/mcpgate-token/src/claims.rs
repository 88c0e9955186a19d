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
}
