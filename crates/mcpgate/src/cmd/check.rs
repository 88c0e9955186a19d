//! `mcpgate check`: validates the configuration and probes each issuer's
//! discovery and keys, saying what is wrong and how to fix it: one line per
//! finding, or with `--json` one document (`ok`, `findings`).

use std::process::ExitCode;

use mcpgate_token::jwks::KeysFrom;
use serde::Serialize;

use crate::cli::CheckArgs;
use crate::cmd::identifier::{self, Severity};
use crate::validator;

/// Prints the findings; exit 0 when none fails, 1 otherwise.
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report = check(&args).await;
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Everything `check` found.
#[derive(Debug, Serialize)]
struct Report {
    /// No finding failed.
    ok: bool,
    /// In the order they were made.
    findings: Vec<Finding>,
}

/// One finding about the configuration or one issuer.
#[derive(Debug, Serialize)]
struct Finding {
    level: Level,
    /// `config`, or the issuer's URL.
    subject: String,
    message: String,
    /// What to do, for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
    /// For an issuer whose keys were fetched: how many can verify tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_keys: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Level {
    Ok,
    Note,
    Warn,
    Fail,
}

impl Level {
    /// The text output's column.
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

impl Finding {
    fn new(level: Level, subject: &str, message: String) -> Self {
        Self {
            level,
            subject: subject.to_owned(),
            message,
            fix: None,
            signing_keys: None,
        }
    }
}

impl Report {
    fn push(&mut self, finding: Finding) {
        self.ok &= finding.level != Level::Fail;
        self.findings.push(finding);
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!(
                "{:<4} {}: {}\n",
                f.level.label(),
                f.subject,
                f.message
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("     fix: {fix}\n"));
            }
        }
        out
    }
}

async fn check(args: &CheckArgs) -> Report {
    let mut report = Report {
        ok: true,
        findings: Vec::new(),
    };
    let mut raw = match args.config.load() {
        Ok(r) => r,
        Err(e) => {
            report.push(Finding::new(Level::Fail, "config", e.to_string()));
            return report;
        }
    };
    let embedded = !raw.has_issuer();
    let (policy, validator) = match validator::build_as_serve_would(&mut raw, &args.idp) {
        Ok(v) => v,
        Err(e) => {
            report.push(Finding::new(Level::Fail, "config", format!("{e:#}")));
            return report;
        }
    };
    report.push(Finding::new(
        Level::Ok,
        "config",
        format!(
            "{} issuer(s), audiences {}",
            policy.issuers.len(),
            policy.audiences.join(", ")
        ),
    ));
    if embedded {
        report.push(Finding::new(
            Level::Note,
            "config",
            format!(
                "no issuer is configured: checking the development IdP that `mcpgate serve` embeds ({})",
                policy.issuers.join(", ")
            ),
        ));
    }
    if policy.required_scopes.is_empty() && policy.required_roles.is_empty() {
        report.push(Finding::new(
            Level::Warn,
            "config",
            "no required scope or role: any token for this audience gets in".to_owned(),
        ));
    }
    if let Some(entra) = &raw.auth.entra {
        let mcp_url = raw.public_url.as_ref().map(|u| {
            format!(
                "{}{}",
                u.as_str().trim_end_matches('/'),
                mcpgate_resource::MCP_PATH
            )
        });
        for f in identifier::findings(entra, mcp_url.as_deref()) {
            let level = match f.severity {
                Severity::Warn => Level::Warn,
                Severity::Note => Level::Note,
            };
            report.push(Finding {
                fix: Some(f.fix),
                ..Finding::new(level, "auth.entra", f.message)
            });
        }
    }
    for (issuer, cache) in policy.issuers.iter().zip(validator.key_caches()) {
        let source = match cache.source() {
            KeysFrom::Discovery { url, .. } => format!("discovery {url}"),
            KeysFrom::Jwks(url) => format!("jwks {url}"),
        };
        let finding = match cache.refresh_now().await {
            Ok(0) => Finding {
                signing_keys: Some(0),
                ..Finding::new(
                    Level::Fail,
                    issuer,
                    format!(
                        "{source} published no usable signing key (allowed algorithms: {})",
                        policy.algorithms.join(", ")
                    ),
                )
            },
            Ok(n) => Finding {
                signing_keys: Some(n),
                ..Finding::new(
                    Level::Ok,
                    issuer,
                    format!("{n} signing key(s) from {source}"),
                )
            },
            Err(e) => Finding {
                fix: Some(if embedded {
                    "start it with `mcpgate serve` (or `mcpgate idp`) on the same settings, or configure your issuer".to_owned()
                } else {
                    "check the issuer URL and the network; for a private CA pass --ca-file; or give --jwks-uri".to_owned()
                }),
                ..Finding::new(Level::Fail, issuer, e.to_string())
            },
        };
        report.push(finding);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_keeps_its_columns_and_a_failure_fails_the_report() {
        let mut report = Report {
            ok: true,
            findings: Vec::new(),
        };
        report.push(Finding::new(Level::Ok, "config", "1 issuer(s)".into()));
        report.push(Finding::new(Level::Warn, "config", "no scope".into()));
        assert!(report.ok, "a warning is not a failure");
        report.push(Finding {
            fix: Some("check the URL".into()),
            ..Finding::new(Level::Fail, "https://idp.example/v2.0", "HTTP 503".into())
        });
        assert!(!report.ok);
        assert_eq!(
            report.text(),
            "ok   config: 1 issuer(s)\n\
             warn config: no scope\n\
             FAIL https://idp.example/v2.0: HTTP 503\n     \
             fix: check the URL\n"
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["ok"], false);
        assert_eq!(json["findings"][2]["level"], "fail");
        assert_eq!(json["findings"][2]["fix"], "check the URL");
        assert!(json["findings"][0].get("fix").is_none());
    }
}
