//! `mcpgate check`: validates the configuration and probes each issuer's
//! discovery and keys, saying what is wrong and how to fix it.

use std::process::ExitCode;

use mcpgate_token::jwks::KeysFrom;

use crate::cli::CheckArgs;
use crate::validator;

/// Prints one line per check; exit 0 when all pass.
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut raw = match args.config.load() {
        Ok(r) => r,
        Err(e) => {
            println!("FAIL config: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let embedded = !raw.has_issuer();
    let (policy, validator) = match validator::build_as_serve_would(&mut raw, &args.idp) {
        Ok(v) => v,
        Err(e) => {
            println!("FAIL config: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "ok   config: {} issuer(s), audiences {}",
        policy.issuers.len(),
        policy.audiences.join(", ")
    );
    if embedded {
        println!(
            "note config: no issuer is configured: checking the development IdP that `mcpgate serve` embeds ({})",
            policy.issuers.join(", ")
        );
    }
    if policy.required_scopes.is_empty() && policy.required_roles.is_empty() {
        println!("warn config: no required scope or role: any token for this audience gets in");
    }
    let mut failed = false;
    for (issuer, cache) in policy.issuers.iter().zip(validator.key_caches()) {
        let source = match cache.source() {
            KeysFrom::Discovery { url, .. } => format!("discovery {url}"),
            KeysFrom::Jwks(url) => format!("jwks {url}"),
        };
        match cache.refresh_now().await {
            Ok(0) => {
                failed = true;
                println!(
                    "FAIL {issuer}: {source} published no usable signing key (allowed algorithms: {})",
                    policy.algorithms.join(", ")
                );
            }
            Ok(n) => println!("ok   {issuer}: {n} signing key(s) from {source}"),
            Err(e) => {
                failed = true;
                println!("FAIL {issuer}: {e}");
                if embedded {
                    println!(
                        "     fix: start it with `mcpgate serve` (or `mcpgate idp`) on the same settings, or configure your issuer"
                    );
                } else {
                    println!(
                        "     fix: check the issuer URL and the network; for a private CA pass --ca-file; or give --jwks-uri"
                    );
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
