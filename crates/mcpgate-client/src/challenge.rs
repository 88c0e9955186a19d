//! Reading a `WWW-Authenticate: Bearer …` challenge (RFC 6750 §3, with
//! RFC 9728's `resource_metadata`): what the server says about where to
//! sign in and which scopes it needs, and, with
//! `error="insufficient_claims"`, the claims a new sign-in must satisfy
//! ([`crate::claims`]).
//!
//! Hand-written: the auth-param grammar (RFC 9110 §11.2) is small, and the
//! HTTP crates parse only the scheme.

/// A Bearer challenge's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// `resource_metadata`: the PRM URL.
    pub resource_metadata: Option<String>,
    /// `scope`: space-separated scopes needed.
    pub scope: Option<String>,
    /// `error`: `invalid_token`, `insufficient_scope`, …
    pub error: Option<String>,
    /// `error_description`.
    pub error_description: Option<String>,
    /// `claims`: base64 of a JSON claims request, as received (decoded by
    /// [`Self::claims`]).
    pub claims: Option<String>,
}

impl BearerChallenge {
    /// The scopes named, split.
    pub fn scopes(&self) -> Vec<String> {
        self.scope
            .as_deref()
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Whether the server asks for a sign-in satisfying more claims
    /// (`error="insufficient_claims"`).
    pub fn is_insufficient_claims(&self) -> bool {
        self.error.as_deref() == Some(INSUFFICIENT_CLAIMS)
    }

    /// The claims the challenge asks for, decoded: `None` without a
    /// `claims` parameter; an error when it is not base64 of a bounded
    /// JSON object.
    pub fn claims(&self) -> Option<Result<Claims, ClaimsError>> {
        self.claims.as_deref().map(Claims::from_base64)
    }
}

use crate::claims::{Claims, ClaimsError, INSUFFICIENT_CLAIMS};

/// Parses every `Bearer` challenge in the header values; the first wins.
pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<BearerChallenge> {
    values.into_iter().find_map(parse_one)
}

fn parse_one(value: &str) -> Option<BearerChallenge> {
    let mut rest = value.trim_start();
    // A header may carry several challenges; find the Bearer one.
    loop {
        let (scheme, after) = split_token(rest);
        if scheme.is_empty() {
            return None;
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(params(after));
        }
        rest = skip_params(after);
        rest = rest.trim_start_matches([',', ' ']);
    }
}

fn split_token(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| c.is_ascii_whitespace() || c == ',' || c == '=')
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Reads `name=value` pairs (value a token or quoted string) until the
/// next challenge.
fn params(mut s: &str) -> BearerChallenge {
    let mut out = BearerChallenge::default();
    loop {
        s = s.trim_start_matches([',', ' ', '\t']);
        let (name, after) = split_token(s);
        if name.is_empty() {
            break;
        }
        let after = after.trim_start();
        let Some(after) = after.strip_prefix('=') else {
            // A bare token: the next challenge's scheme.
            break;
        };
        let (value, after) = read_value(after.trim_start());
        match name.to_ascii_lowercase().as_str() {
            "resource_metadata" => out.resource_metadata = Some(value),
            "scope" => out.scope = Some(value),
            "error" => out.error = Some(value),
            "error_description" => out.error_description = Some(value),
            "claims" => out.claims = Some(value),
            _ => {}
        }
        s = after;
    }
    out
}

fn read_value(s: &str) -> (String, &str) {
    if let Some(body) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(next);
                    }
                }
                '"' => return (value, &body[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find([',', ' ']).unwrap_or(s.len());
        (s[..end].to_owned(), &s[end..])
    }
}

fn skip_params(s: &str) -> &str {
    let mut rest = s;
    loop {
        let trimmed = rest.trim_start_matches([',', ' ', '\t']);
        let (name, after) = split_token(trimmed);
        let after_ws = after.trim_start();
        match after_ws.strip_prefix('=') {
            Some(v) if !name.is_empty() => {
                let (_, next) = read_value(v.trim_start());
                rest = next;
            }
            _ => return trimmed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_parameters() {
        let c = parse([
            r#"Bearer resource_metadata="https://s.example/.well-known/oauth-protected-resource/mcp", scope="a b""#,
        ])
        .expect("bearer");
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("https://s.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(c.scopes(), ["a", "b"]);
    }

    #[test]
    fn finds_bearer_among_other_challenges_and_unescapes() {
        let c = parse([
            r#"Basic realm="x", Bearer error="insufficient_scope", scope="files:read", error_description="needs \"more\"""#,
        ])
        .expect("bearer");
        assert_eq!(c.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(c.scope.as_deref(), Some("files:read"));
        assert_eq!(c.error_description.as_deref(), Some("needs \"more\""));
        assert!(parse(["Basic realm=\"x\""]).is_none());
        assert_eq!(parse(["bearer"]).expect("bare"), BearerChallenge::default());
        let c = parse(["Bearer error=invalid_token"]).expect("token value");
        assert_eq!(c.error.as_deref(), Some("invalid_token"));
    }

    #[test]
    fn reads_a_claims_challenge_as_graph_and_mcpgate_send_it() {
        // Microsoft Graph's form (standard base64, padded).
        let c = parse([
            r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiYzEifX19""#,
        ])
        .expect("bearer");
        assert!(c.is_insufficient_claims());
        let claims = c.claims().expect("a claims parameter").expect("valid");
        assert_eq!(
            claims.as_json(),
            r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#
        );
        // mcpgate's form: the resource metadata first, a description last.
        let c = parse([
            r#"Bearer resource_metadata="https://s.example/.well-known/oauth-protected-resource/mcp", error="insufficient_claims", claims="eyJhIjoxfQ==", error_description="MFA needed""#,
        ])
        .expect("bearer");
        assert_eq!(c.claims, Some("eyJhIjoxfQ==".to_owned()));
        assert_eq!(
            c.claims().expect("claims"),
            Ok(Claims::from_json(r#"{"a":1}"#).expect("json"))
        );
        assert_eq!(c.error_description.as_deref(), Some("MFA needed"));
    }

    #[test]
    fn a_bad_claims_value_is_an_error_not_a_panic() {
        for value in ["%%%", "bm90IGpzb24=", "", "eyJhIjox"] {
            let c = parse([
                format!(r#"Bearer error="insufficient_claims", claims="{value}""#).as_str(),
            ])
            .expect("bearer");
            assert!(
                matches!(c.claims(), Some(Err(_))),
                "{value}: {:?}",
                c.claims()
            );
        }
        let huge = "A".repeat(8 * 1024);
        let c = parse([format!(r#"Bearer error="insufficient_claims", claims="{huge}""#).as_str()])
            .expect("bearer");
        assert!(matches!(
            c.claims(),
            Some(Err(ClaimsError::TooLarge { .. }))
        ));
        assert!(
            parse(["Bearer error=\"insufficient_claims\""])
                .expect("bearer")
                .claims()
                .is_none()
        );
    }
}
