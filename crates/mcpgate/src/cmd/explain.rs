//! `mcpgate explain TOKEN`: what a person debugging a 401 needs. Decodes
//! the token, runs the server's own validation with the same configuration,
//! and says why it would be accepted or refused, and what to do about it.

use std::io::Read;
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgate_token::{ValidationError, ValidationPolicy};
use serde_json::Value;

use crate::cli::ExplainArgs;
use crate::validator;

/// Prints the verdict; exit 0 when accepted, 1 when refused.
pub async fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let token = if args.token == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.trim().to_owned()
    } else {
        args.token.trim().to_owned()
    };
    let token = token.strip_prefix("Bearer ").unwrap_or(&token).to_owned();

    let mut parts = token.split('.');
    let header = parts.next().and_then(decode);
    let claims = parts.next().and_then(decode);
    println!("header: {}", pretty(header.as_ref()));
    println!("claims: {}", pretty(claims.as_ref()));
    if let Some(c) = &claims {
        print_times(c);
    }

    let mut raw = args.config.load()?;
    let embedded = !raw.has_issuer();
    let (policy, validator) = match validator::build_as_serve_would(&mut raw, &args.idp) {
        Ok(v) => v,
        Err(e) => {
            println!("verdict: cannot validate: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if embedded {
        println!(
            "judged as `mcpgate serve` with no issuer configured would: trusting its development IdP {}",
            policy.issuers.join(", ")
        );
    }
    let explanation = validator.explain(&token).await;
    match explanation.verdict {
        Ok(p) => {
            println!("verdict: ACCEPTED");
            println!(
                "  caller: {} ({}), {} token from client app {}",
                p.preferred_username
                    .as_deref()
                    .or(p.name.as_deref())
                    .unwrap_or(&p.subject),
                p.object_id.as_deref().unwrap_or("no oid"),
                p.kind.as_str(),
                p.client_app_id.as_deref().unwrap_or("unknown")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("verdict: REJECTED ({})", e.code());
            println!("  reason: {e}");
            match &e {
                ValidationError::KeysUnavailable(_) if embedded => println!(
                    "  fix:    start the development IdP (`mcpgate serve` or `mcpgate idp`) with the same settings, or configure the issuer this token came from"
                ),
                _ => println!("  fix:    {}", hint(&e, &policy)),
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn decode(part: &str) -> Option<Value> {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn pretty(v: Option<&Value>) -> String {
    v.and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_else(|| "(not decodable)".to_owned())
}

fn print_times(claims: &Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for name in ["iat", "nbf", "exp"] {
        if let Some(t) = claims.get(name).and_then(Value::as_i64) {
            let delta = t - now;
            let when = if delta >= 0 {
                format!("in {delta} s")
            } else {
                format!("{} s ago", -delta)
            };
            println!("  {name}: {when}");
        }
    }
}

/// What to do about each refusal, in the configuration's own terms.
fn hint(e: &ValidationError, policy: &ValidationPolicy) -> String {
    let scope = policy
        .required_scopes
        .first()
        .cloned()
        .unwrap_or_else(|| "this server's scope".to_owned());
    match e {
        ValidationError::GraphToken { .. } => format!(
            "this token is for Microsoft Graph (you asked for User.Read or https://graph.microsoft.com/.default). Ask for scope {scope} instead"
        ),
        ValidationError::WrongAudience { .. } => format!(
            "ask for a token for this server: scope {scope}. In Entra, v1.0 tokens carry aud api://<app-id> and v2.0 tokens the bare app id; configure both as audiences"
        ),
        ValidationError::UntrustedIssuer { iss } if iss.starts_with("https://sts.windows.net/") => {
            "this is an Entra v1.0 token: set accessTokenAcceptedVersion (requestedAccessTokenVersion) to 2 in the API's app manifest, or trust the v1 issuer too (the [auth.entra] shorthand does)".to_owned()
        }
        ValidationError::UntrustedIssuer { .. } => format!(
            "trust the issuer with --issuer or [auth] issuers; trusted now: {}",
            policy.issuers.join(", ")
        ),
        ValidationError::IssuerTenantMismatch { .. } => {
            "the issuer names another tenant than tid: the token was not issued by that tenant".to_owned()
        }
        ValidationError::TenantNotAllowed { .. } => "add the tenant to [auth] allowed_tenants, or sign in with an account of an allowed tenant".to_owned(),
        ValidationError::UnknownKey { .. } => "the issuer does not publish the key that signed this token: it came from another issuer or environment, or the keys rotated; get a new token".to_owned(),
        ValidationError::KeysUnavailable(_) => "the issuer's discovery or JWKS could not be fetched: check the network, the issuer URL, and --ca-file for a private CA; `mcpgate check` probes them".to_owned(),
        ValidationError::BadSignature => "the signature does not verify: the token was altered, or signed by someone else".to_owned(),
        ValidationError::AlgorithmNotAllowed { .. } => "tokens must be signed with an allowed asymmetric algorithm; none and HMAC are never accepted".to_owned(),
        ValidationError::Expired { .. } => "get a new token (a client refreshes it silently with its refresh token)".to_owned(),
        ValidationError::NotYetValid { .. } | ValidationError::IssuedInFuture { .. } => {
            "the clocks disagree: check this machine's time, or raise [auth] clock_skew_secs".to_owned()
        }
        ValidationError::AppOnlyNotAllowed => "sign in as a user (delegated token), or allow app-only tokens with [auth] allow_app_only = true and app_only_roles".to_owned(),
        ValidationError::ClientAppNotAllowed(_) => "use an allowed client application, or add it to [auth] allowed_client_apps".to_owned(),
        ValidationError::InsufficientScope { .. } => format!(
            "ask for scope {scope}; the client app needs the API permission and consent for it"
        ),
        ValidationError::MissingClaim(_) | ValidationError::Malformed(_) | ValidationError::TooLarge { .. } => {
            "this is not an access token this server can read: pass the access token (not an ID token or a refresh token)".to_owned()
        }
    }
}
