//! `mcpgate explain TOKEN`: what a person debugging a 401 needs. Decodes
//! the token, runs the server's own validation with the same configuration,
//! and says why it would be accepted or refused, and what to do about it.
//! With `--json`, the same as one document (`verdict`, `reason.code`,
//! `caller`, the decoded `header` and `claims`), never the token itself.

use std::io::Read;
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgate_token::{Principal, ValidationError, ValidationPolicy};
use serde::Serialize;
use serde_json::Value;

use crate::cli::ExplainArgs;
use crate::cmd::entra_errors;
use crate::validator;

/// Prints the verdict; exit 0 when accepted, 1 when refused, 2 when the
/// token cannot be judged (the configuration is wrong).
pub async fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let token = if args.token == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.trim().to_owned()
    } else {
        args.token.trim().to_owned()
    };
    let token = token.strip_prefix("Bearer ").unwrap_or(&token).to_owned();
    let json = args.output.json;
    // An error text rather than a token: say what its AADSTS codes mean.
    if token.matches('.').count() < 2 {
        let codes = entra_errors::codes_in(&token);
        if !codes.is_empty() {
            return print_codes(&codes, json);
        }
    }

    let mut report = Report::decode(&token, unix_now());
    if !json {
        report.print_token();
    }

    let mut raw = match args.config.load() {
        Ok(raw) => raw,
        Err(e) if json => {
            report.cannot_validate(format!("{:#}", anyhow::Error::from(e)));
            return report.finish(json);
        }
        Err(e) => return Err(e.into()),
    };
    report.judged_as_dev_idp = !raw.has_issuer();
    let (policy, validator) = match validator::build_as_serve_would(&mut raw, &args.idp) {
        Ok(v) => v,
        Err(e) => {
            report.cannot_validate(format!("{e:#}"));
            return report.finish(json);
        }
    };
    report.trusted_issuers = policy.issuers.clone();
    match validator.explain(&token).await.verdict {
        Ok(p) => {
            report.verdict = Verdict::Accepted;
            report.caller = Some(Principal::clone(&p));
        }
        Err(e) => {
            report.verdict = Verdict::Rejected;
            report.reason = Some(Reason {
                code: e.code(),
                message: e.to_string(),
                fix: fix(&e, &policy, report.judged_as_dev_idp),
            });
        }
    }
    report.finish(json)
}

/// Explains Entra error codes; exit 0.
fn print_codes(codes: &[entra_errors::Known], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let doc: Vec<Value> = codes
            .iter()
            .map(|k| serde_json::json!({ "code": format!("AADSTS{}", k.code), "what": k.what, "fix": k.fix }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "aadsts": doc }))?
        );
    } else {
        for k in codes {
            println!("AADSTS{}: {}", k.code, k.what);
            println!("  fix: {}", k.fix);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `explain` found: the text output's content, and with `--json` its
/// document. The token itself, and its signature, are never part of it.
#[derive(Debug, Serialize)]
struct Report {
    /// The decoded header, or null.
    header: Value,
    /// The decoded claims, or null.
    claims: Value,
    /// `iat`, `nbf` and `exp`, those present, with their distance from now.
    times: serde_json::Map<String, Value>,
    /// Which Entra issuer form `iss` is, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer_form: Option<String>,
    /// No issuer is configured: judged as `serve` would, against its
    /// development IdP.
    judged_as_dev_idp: bool,
    /// The issuers the verdict trusts (empty when it could not be had).
    trusted_issuers: Vec<String>,
    /// `accepted`, `rejected` or `cannot_validate`.
    verdict: Verdict,
    /// Accepted: who the token stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    caller: Option<Principal>,
    /// Rejected: the stable code, the reason and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Reason>,
    /// Cannot validate: why (the configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Accepted,
    Rejected,
    CannotValidate,
}

#[derive(Debug, Serialize)]
struct Reason {
    /// [`ValidationError::code`]: stable, for scripts.
    code: &'static str,
    message: String,
    fix: String,
}

impl Report {
    /// Decodes the header and the claims; nothing is verified yet.
    fn decode(token: &str, now: i64) -> Self {
        let mut parts = token.split('.');
        let header = parts.next().and_then(decode).unwrap_or(Value::Null);
        let claims = parts.next().and_then(decode).unwrap_or(Value::Null);
        let mut times = serde_json::Map::new();
        for name in ["iat", "nbf", "exp"] {
            if let Some(t) = claims.get(name).and_then(Value::as_i64) {
                times.insert(
                    name.to_owned(),
                    serde_json::json!({ "at": t, "seconds_from_now": t - now }),
                );
            }
        }
        let issuer_form = claims
            .get("iss")
            .and_then(Value::as_str)
            .and_then(entra_errors::issuer_form);
        Self {
            header,
            claims,
            times,
            issuer_form,
            judged_as_dev_idp: false,
            trusted_issuers: Vec::new(),
            verdict: Verdict::CannotValidate,
            caller: None,
            reason: None,
            error: None,
        }
    }

    fn cannot_validate(&mut self, error: String) {
        self.verdict = Verdict::CannotValidate;
        self.error = Some(error);
    }

    fn exit_code(&self) -> ExitCode {
        match self.verdict {
            Verdict::Accepted => ExitCode::SUCCESS,
            Verdict::Rejected => ExitCode::FAILURE,
            Verdict::CannotValidate => ExitCode::from(2),
        }
    }

    /// Prints the verdict (the JSON document, or the text's second half)
    /// and gives the exit code.
    fn finish(self, json: bool) -> anyhow::Result<ExitCode> {
        if json {
            println!("{}", serde_json::to_string_pretty(&self)?);
        } else {
            self.print_verdict();
        }
        Ok(self.exit_code())
    }

    /// The text's first half: what the token says.
    fn print_token(&self) {
        println!("header: {}", pretty(&self.header));
        println!("claims: {}", pretty(&self.claims));
        for name in ["iat", "nbf", "exp"] {
            if let Some(delta) = self
                .times
                .get(name)
                .and_then(|t| t["seconds_from_now"].as_i64())
            {
                let when = if delta >= 0 {
                    format!("in {delta} s")
                } else {
                    format!("{} s ago", -delta)
                };
                println!("  {name}: {when}");
            }
        }
        if let Some(form) = &self.issuer_form {
            println!("  issuer: {form}");
        }
    }

    /// The text's second half: the verdict.
    fn print_verdict(&self) {
        if self.verdict == Verdict::CannotValidate {
            println!(
                "verdict: cannot validate: {}",
                self.error.as_deref().unwrap_or_default()
            );
            return;
        }
        if self.judged_as_dev_idp {
            println!(
                "judged as `mcpgate serve` with no issuer configured would: trusting its development IdP {}",
                self.trusted_issuers.join(", ")
            );
        }
        if let Some(p) = &self.caller {
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
        }
        if let Some(r) = &self.reason {
            println!("verdict: REJECTED ({})", r.code);
            println!("  reason: {}", r.message);
            println!("  fix:    {}", r.fix);
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn decode(part: &str) -> Option<Value> {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn pretty(v: &Value) -> String {
    if v.is_null() {
        return "(not decodable)".to_owned();
    }
    serde_json::to_string_pretty(v).unwrap_or_else(|_| "(not decodable)".to_owned())
}

/// What to do about a refusal; with no issuer configured, missing keys
/// mean the development IdP is not running.
fn fix(e: &ValidationError, policy: &ValidationPolicy, dev_idp: bool) -> String {
    match e {
        ValidationError::KeysUnavailable(_) if dev_idp => "start the development IdP (`mcpgate serve` or `mcpgate idp`) with the same settings, or configure the issuer this token came from".to_owned(),
        _ => hint(e, policy),
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
            "ask for a token for this server: scope {scope}. In Entra, v1.0 tokens carry aud <Application ID URI> (api://<app-id>, or the server's URL) and v2.0 tokens the bare app id; the [auth.entra] shorthand accepts both (identifier_uri names the URI)"
        ),
        ValidationError::UntrustedIssuer { iss } if iss.starts_with("https://sts.windows.net/") => {
            "this is an Entra v1.0 token: set accessTokenAcceptedVersion (requestedAccessTokenVersion) to 2 in the API's app manifest, or trust the v1 issuer too (the [auth.entra] shorthand does)".to_owned()
        }
        ValidationError::UntrustedIssuer { iss } if iss.contains(".ciamlogin.com/") => {
            "this is an External ID (CIAM) token: set [auth.entra] authority = \"https://<name>.ciamlogin.com\" (or external_id = true for a custom domain) with the tenant's id".to_owned()
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
