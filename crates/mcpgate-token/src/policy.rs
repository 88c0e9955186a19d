//! The validation policy: plain data with secure defaults, compiled once into
//! a form the validator checks quickly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::claims::{Principal, TokenKind};
use crate::error::{PolicyError, ValidationError};
use crate::issuer::IssuerPattern;

/// What a token must be to be accepted. Every field states its default.
#[derive(Debug, Clone)]
pub struct ValidationPolicy {
    /// Trusted issuers, exact strings or `{tenantid}` templates. Required.
    pub issuers: Vec<String>,
    /// Accepted `aud` values: for an Entra API both `api://<app-id>` and the
    /// bare `<app-id>`. Required.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms. Default: RS256 only. Symmetric
    /// algorithms and `none` are refused when the policy is compiled.
    pub algorithms: Vec<String>,
    /// Tolerance for `exp`, `nbf` and `iat`. Default: 60 s.
    pub clock_skew: Duration,
    /// Scopes every delegated token must carry, full (`api://app/mcp:tools`)
    /// or short (`mcp:tools`). Default: none.
    pub required_scopes: Vec<String>,
    /// Roles every token must carry. Default: none.
    pub required_roles: Vec<String>,
    /// A broader scope that implies narrower ones, e.g.
    /// `mcp:admin -> [mcp:tools]`. Default: none.
    pub scope_implies: BTreeMap<String, Vec<String>>,
    /// Accept app-only (client credentials) tokens. Default: false.
    pub allow_app_only: bool,
    /// Roles an app-only token must carry. Required when `allow_app_only`.
    pub app_only_roles: Vec<String>,
    /// Tenants (`tid`) allowed; empty allows every tenant the issuers admit.
    pub allowed_tenants: Vec<String>,
    /// Client applications (`azp`/`appid`) allowed; empty allows all.
    pub allowed_client_apps: Vec<String>,
    /// The longest token considered. Default: 16 KiB.
    pub max_token_bytes: usize,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            audiences: Vec::new(),
            algorithms: vec!["RS256".to_owned()],
            clock_skew: Duration::from_secs(60),
            required_scopes: Vec::new(),
            required_roles: Vec::new(),
            scope_implies: BTreeMap::new(),
            allow_app_only: false,
            app_only_roles: Vec::new(),
            allowed_tenants: Vec::new(),
            allowed_client_apps: Vec::new(),
            max_token_bytes: 16 * 1024,
        }
    }
}

/// The scopes and roles one operation needs; the policy's own requirement,
/// or a tool's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    /// Scopes a delegated token must carry.
    pub scopes: Vec<String>,
    /// Roles any token must carry.
    pub roles: Vec<String>,
}

/// A policy checked for consistency, ready to apply.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) issuers: Vec<IssuerPattern>,
    pub(crate) audiences: BTreeSet<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) clock_skew_secs: u64,
    pub(crate) requirement: Requirement,
    scope_implies: BTreeMap<String, Vec<String>>,
    pub(crate) allow_app_only: bool,
    app_only_roles: Vec<String>,
    pub(crate) allowed_tenants: BTreeSet<String>,
    pub(crate) allowed_client_apps: BTreeSet<String>,
    pub(crate) max_token_bytes: usize,
}

impl ValidationPolicy {
    /// Checks the policy and compiles it.
    pub fn compile(&self) -> Result<CompiledPolicy, PolicyError> {
        if self.issuers.is_empty() {
            return Err(PolicyError::NoIssuer);
        }
        if self.audiences.is_empty() {
            return Err(PolicyError::NoAudience);
        }
        if self.algorithms.is_empty() {
            return Err(PolicyError::NoAlgorithm);
        }
        if self.allow_app_only && self.app_only_roles.is_empty() && self.required_roles.is_empty() {
            return Err(PolicyError::AppOnlyWithoutRoles);
        }
        let issuers = self
            .issuers
            .iter()
            .map(|i| IssuerPattern::parse(i))
            .collect::<Result<Vec<_>, _>>()?;
        let algorithms = self
            .algorithms
            .iter()
            .map(|a| parse_algorithm(a))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledPolicy {
            issuers,
            audiences: self.audiences.iter().cloned().collect(),
            algorithms,
            clock_skew_secs: self.clock_skew.as_secs(),
            requirement: Requirement {
                scopes: self.required_scopes.clone(),
                roles: self.required_roles.clone(),
            },
            scope_implies: self.scope_implies.clone(),
            allow_app_only: self.allow_app_only,
            app_only_roles: self.app_only_roles.clone(),
            allowed_tenants: self.allowed_tenants.iter().cloned().collect(),
            allowed_client_apps: self.allowed_client_apps.iter().cloned().collect(),
            max_token_bytes: self.max_token_bytes,
        })
    }
}

/// Parses an algorithm name, refusing every one that a JWKS must never
/// unlock: `none` (no signature) and HMAC (the "public key as HMAC secret"
/// confusion attack).
pub fn parse_algorithm(name: &str) -> Result<Algorithm, PolicyError> {
    let alg = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "none" | "HS256" | "HS384" | "HS512" => {
            return Err(PolicyError::ForbiddenAlgorithm(name.to_owned()));
        }
        other => return Err(PolicyError::UnknownAlgorithm(other.to_owned())),
    };
    Ok(alg)
}

impl CompiledPolicy {
    /// The requirement the policy itself sets for every request.
    pub fn requirement(&self) -> &Requirement {
        &self.requirement
    }

    /// The accepted audiences.
    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        self.audiences.iter().map(String::as_str)
    }

    /// Checks that `principal` meets `need`, on top of the policy's own
    /// app-only roles. A failure is a 403, never a 401.
    pub fn authorize(
        &self,
        principal: &Principal,
        need: &Requirement,
    ) -> Result<(), ValidationError> {
        if principal.kind == TokenKind::Delegated {
            let missing: Vec<&str> = need
                .scopes
                .iter()
                .filter(|s| !self.holds_scope(&principal.scopes, self.short_scope(s)))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(ValidationError::InsufficientScope {
                    missing: format!("scope {}", missing.join(" ")),
                });
            }
        }
        let mut roles: Vec<&String> = need.roles.iter().collect();
        if principal.kind == TokenKind::AppOnly {
            roles.extend(&self.app_only_roles);
        }
        let missing: Vec<&str> = roles
            .into_iter()
            .filter(|r| !principal.roles.contains(r))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(ValidationError::InsufficientScope {
                missing: format!("role {}", missing.join(" ")),
            });
        }
        Ok(())
    }

    /// `api://app/mcp:tools` is the scope a client asks for; Entra writes
    /// `mcp:tools` in `scp`. A full scope whose resource is one of our
    /// audiences compares by its short name.
    fn short_scope<'a>(&self, scope: &'a str) -> &'a str {
        match scope.rsplit_once('/') {
            Some((resource, short)) if self.is_own_resource(resource) => short,
            _ => scope,
        }
    }

    fn is_own_resource(&self, resource: &str) -> bool {
        self.audiences.contains(resource)
            || resource
                .strip_prefix("api://")
                .is_some_and(|bare| self.audiences.contains(bare))
    }

    /// Whether `held` grants `wanted` (a short scope), directly or through
    /// `scope_implies`. Called on every request: no allocation.
    fn holds_scope(&self, held: &[String], wanted: &str) -> bool {
        let direct = |scope: &str| held.iter().any(|h| self.short_scope(h) == scope);
        direct(wanted)
            || self.scope_implies.iter().any(|(broad, narrower)| {
                narrower.iter().any(|n| self.short_scope(n) == wanted)
                    && direct(self.short_scope(broad))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Claims;
    use serde_json::json;

    fn policy() -> ValidationPolicy {
        ValidationPolicy {
            issuers: vec!["https://issuer.example/t/v2.0".into()],
            audiences: vec!["api://app".into(), "app".into()],
            required_scopes: vec!["api://app/mcp:tools".into()],
            ..Default::default()
        }
    }

    fn principal(v: serde_json::Value) -> Principal {
        let c: Claims = serde_json::from_value(v).expect("claims");
        Principal::from_claims(&c, "https://issuer.example/t/v2.0", 0)
    }

    #[test]
    fn forbidden_algorithms_never_compile() {
        for alg in ["none", "HS256", "HS384", "HS512"] {
            let p = ValidationPolicy {
                algorithms: vec![alg.into()],
                ..policy()
            };
            assert_eq!(
                p.compile().err(),
                Some(PolicyError::ForbiddenAlgorithm(alg.into()))
            );
        }
    }

    #[test]
    fn app_only_needs_roles() {
        let p = ValidationPolicy {
            allow_app_only: true,
            ..policy()
        };
        assert_eq!(p.compile().err(), Some(PolicyError::AppOnlyWithoutRoles));
    }

    #[test]
    fn full_and_short_scopes_are_the_same_scope() {
        let c = policy().compile().expect("compiles");
        let need = c.requirement().clone();
        assert!(
            c.authorize(&principal(json!({"scp": "mcp:tools"})), &need)
                .is_ok()
        );
        assert!(
            c.authorize(&principal(json!({"scp": "api://app/mcp:tools"})), &need)
                .is_ok()
        );
        let err = c
            .authorize(&principal(json!({"scp": "other"})), &need)
            .expect_err("missing scope");
        assert_eq!(
            err,
            ValidationError::InsufficientScope {
                missing: "scope api://app/mcp:tools".into()
            }
        );
        // A scope of another resource with the same short name does not count.
        assert!(
            c.authorize(&principal(json!({"scp": "api://other/mcp:tools"})), &need)
                .is_err()
        );
    }

    #[test]
    fn broader_scope_implies_narrower() {
        let mut p = policy();
        p.scope_implies
            .insert("mcp:admin".into(), vec!["mcp:tools".into()]);
        let c = p.compile().expect("compiles");
        assert!(
            c.authorize(&principal(json!({"scp": "mcp:admin"})), c.requirement())
                .is_ok()
        );
    }

    #[test]
    fn roles_are_required_of_app_only_tokens() {
        let p = ValidationPolicy {
            allow_app_only: true,
            app_only_roles: vec!["MCP.Tools.All".into()],
            ..policy()
        };
        let c = p.compile().expect("compiles");
        let ok = principal(json!({"roles": ["MCP.Tools.All"], "idtyp": "app"}));
        assert!(c.authorize(&ok, c.requirement()).is_ok());
        let err = c
            .authorize(&principal(json!({"idtyp": "app"})), c.requirement())
            .expect_err("no role");
        assert!(err.is_insufficient_scope());
    }
}
