//! `mcpgate pins`: the upstream tool definitions the gateway pinned, and
//! the operator's acceptance of a changed one (which the gateway hides
//! until then).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use mcpgate_resource::pins::{PinMode, PinRecord, ToolPins};

use crate::cmd::audit::{data_dir_of, open_existing_store};
use crate::config::RawConfig;
use crate::pins::StorePins;

/// `mcpgate pins`.
#[derive(Debug, Clone, Args)]
pub struct PinsArgs {
    /// What to do; `list` when absent.
    #[command(subcommand)]
    pub action: Option<PinsAction>,
    /// The store `serve` uses: `sqlite:PATH` (default: in the data
    /// directory) or `redis://HOST:PORT/DB`.
    #[arg(long, global = true, env = "MCPGATE_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "MCPGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory (where `serve` keeps its store).
    #[arg(long, global = true, env = "MCPGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// What `mcpgate pins` does.
#[derive(Debug, Clone, Subcommand)]
pub enum PinsAction {
    /// Every pinned tool, changed ones first.
    List {
        /// Only this upstream's tools.
        #[arg(long, value_name = "NAME")]
        upstream: Option<String>,
        /// Only tools whose definition changed and awaits acceptance.
        #[arg(long)]
        pending: bool,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows a changed tool's pinned and new definitions.
    Show {
        /// The upstream, as configured (`upstream` by default).
        upstream: String,
        /// The tool.
        tool: String,
    },
    /// Accepts a tool's changed definition: the gateway shows it again.
    Accept {
        /// The upstream, as configured.
        upstream: String,
        /// The tool.
        tool: String,
        /// Accept only if the pending definition still has this digest
        /// (the one `show` printed), so that a later change is not accepted
        /// unseen.
        #[arg(long, value_name = "SHA256")]
        digest: Option<String>,
    },
}

/// Runs the action.
pub async fn run(args: PinsArgs) -> anyhow::Result<ExitCode> {
    let raw = RawConfig::load(args.config.as_deref())?;
    let data_dir = data_dir_of(&raw, args.data_dir.clone());
    let store = open_existing_store(args.store.as_deref(), &raw, &data_dir, "pinned tool").await?;
    // The mode matters only to the gateway; here pins are read and accepted.
    let pins = ToolPins::new(Arc::new(StorePins(store)), PinMode::Enforce);
    match args.action.unwrap_or(PinsAction::List {
        upstream: None,
        pending: false,
        json: false,
    }) {
        PinsAction::List {
            upstream,
            pending,
            json,
        } => {
            let mut records = pins
                .list(upstream.as_deref())
                .await
                .context("reading the pins")?;
            records.retain(|r| !pending || r.pending.is_some());
            records.sort_by_key(|r| r.pending.is_none());
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&records)?));
            } else {
                out(&table(&records));
            }
        }
        PinsAction::Show { upstream, tool } => {
            let records = pins
                .list(Some(&upstream))
                .await
                .context("reading the pins")?;
            let Some(record) = records.into_iter().find(|r| r.tool == tool) else {
                bail!("no pin for tool {tool:?} of upstream {upstream:?}");
            };
            let mut text = format!(
                "pinned   {}\n{}\n",
                record.digest,
                pretty(&record.definition)
            );
            match &record.pending {
                Some(p) => text.push_str(&format!(
                    "\nchanged  {}\n{}\n\naccept with: mcpgate pins accept {upstream} {tool} --digest {}\n",
                    p.digest,
                    pretty(&p.definition),
                    p.digest
                )),
                None => text.push_str("\nno change awaits acceptance\n"),
            }
            out(&text);
        }
        PinsAction::Accept {
            upstream,
            tool,
            digest,
        } => {
            let accepted = pins
                .accept_digest(&upstream, &tool, digest.as_deref())
                .await
                .context("accepting the change")?;
            if !accepted {
                bail!(
                    "nothing accepted: {tool:?} of upstream {upstream:?} has no pending change{}",
                    if digest.is_some() {
                        " with that digest"
                    } else {
                        ""
                    }
                );
            }
            eprintln!(
                "accepted: the gateway shows {tool} of {upstream} again (within 10 s at other replicas)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

// Standard output may be a pipe its reader closed (`| head`): that is not
// an error worth a panic.
fn out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_owned())
}

fn table(records: &[PinRecord]) -> String {
    let mut out = String::new();
    let upstream_w = records
        .iter()
        .map(|r| r.upstream.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let tool_w = records
        .iter()
        .map(|r| r.tool.len())
        .max()
        .unwrap_or(0)
        .max(4);
    out.push_str(&format!(
        "{:<upstream_w$}  {:<tool_w$}  {:<8}  {:<12}  PENDING\n",
        "UPSTREAM", "TOOL", "STATE", "PINNED"
    ));
    for r in records {
        let (state, pending) = match &r.pending {
            Some(p) => ("changed", &p.digest[..p.digest.len().min(12)]),
            None => ("pinned", "-"),
        };
        out.push_str(&format!(
            "{:<upstream_w$}  {:<tool_w$}  {:<8}  {:<12}  {pending}\n",
            r.upstream,
            r.tool,
            state,
            &r.digest[..r.digest.len().min(12)],
        ));
    }
    out
}
