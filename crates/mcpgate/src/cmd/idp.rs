//! `mcpgate idp`: the development identity provider alone, and its key
//! rotation.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::cli::{IdpAction, IdpArgs};
use crate::config::RawConfig;
use crate::{devidp, ready};

/// Runs the IdP until interrupted, or rotates its keys.
pub async fn run(args: IdpArgs) -> anyhow::Result<ExitCode> {
    let raw = RawConfig::load(args.config.as_deref())?;
    let data_dir = devidp::data_dir(&args.idp.place, &raw).join("idp");
    if let Some(IdpAction::RotateKeys { grace_secs }) = args.action {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let kid = mcpgate_devidp::rotate_keys(&data_dir, grace_secs, now)
            .with_context(|| format!("rotating the keys in {}", data_dir.display()))?;
        println!(
            "new signing key {kid} in {}; the previous key stays published for {grace_secs} s",
            data_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let idp = devidp::start(&args.idp, &raw, args.bind, None).await?;
    devidp::print_summary(idp.info());
    if let Some(path) = &args.ready_file {
        ready::write(path, &json!(idp.info()))?;
    }
    crate::cmd::serve::shutdown_signal().await;
    idp.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
