//! Reading a `WWW-Authenticate: Bearer …` challenge (RFC 6750 §3, with
//! RFC 9728's `resource_metadata`): what the server says about where to
//! sign in and which scopes it needs.
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
}

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
}
