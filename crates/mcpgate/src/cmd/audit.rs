//! `mcpgate audit`: the audit trail read back from the store `serve` uses
//! (or, with `[audit] store = false`, from its JSON-lines file), newest
//! first, as a table or as JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use clap::builder::PossibleValuesParser;
use mcpgate_audit::{AuditQuery, AuditRecord, Decision, UtcTime};

use crate::cli::IdpPlace;
use crate::config::RawConfig;
use crate::{broker, devidp};

/// `mcpgate audit`.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Only this user: their object id or UPN (case-insensitive).
    #[arg(long, value_name = "OID|UPN")]
    pub user: Option<String>,
    /// Only calls of this tool (or reads of this resource, gets of this prompt).
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    /// Only allowed or only denied decisions.
    #[arg(long, value_parser = PossibleValuesParser::new(["allow", "deny"]))]
    pub decision: Option<String>,
    /// Records at or after TIME: RFC 3339 (`2026-12-04T09:00:00Z`) or an age
    /// (`30s`, `15m`, `2h`, `7d`, `1w`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Records before TIME (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many records (the newest).
    #[arg(long, value_name = "N", default_value_t = AuditQuery::DEFAULT_LIMIT)]
    pub limit: usize,
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The store to read: `sqlite:PATH` (default: the one `serve` uses in the
    /// data directory) or `redis://HOST:PORT/DB`.
    #[arg(long, env = "MCPGATE_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Configuration file (TOML): the store, the data directory, `[audit]`.
    #[arg(long, env = "MCPGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory (where `serve` keeps its store and audit file).
    #[arg(long, env = "MCPGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The store `serve` uses, for a command that reads what it wrote: a
/// SQLite file that does not exist yet is named, not created. `what` names
/// what would be missing ("audit trail").
pub async fn open_existing_store(
    flag: Option<&str>,
    raw: &RawConfig,
    data_dir: &Path,
    what: &str,
) -> anyhow::Result<std::sync::Arc<dyn mcpgate_store::Store>> {
    let url = broker::store_url(flag, raw, data_dir);
    if let Some(path) = url.strip_prefix("sqlite:")
        && !Path::new(path.strip_prefix("//").unwrap_or(path)).exists()
    {
        bail!("no {what} yet: the store {path} does not exist (give --store or --data-dir?)");
    }
    broker::open_store(&url, raw).await
}

/// The data directory exactly as `serve` finds it.
pub fn data_dir_of(raw: &RawConfig, data_dir: Option<PathBuf>) -> PathBuf {
    let place = IdpPlace {
        data_dir,
        idp_bind: None,
        idp_directory: None,
    };
    devidp::data_dir(&place, raw)
}

/// Prints the records asked for.
pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let raw = RawConfig::load(args.config.as_deref())?;
    let now = UtcTime::now();
    let query = AuditQuery {
        user: args.user.clone(),
        tool: args.tool.clone(),
        decision: args
            .decision
            .as_deref()
            .map(str::parse::<Decision>)
            .transpose()?,
        since: args
            .since
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()
            .context("--since")?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()
            .context("--until")?,
        limit: args.limit,
    };
    let data_dir = data_dir_of(&raw, args.data_dir.clone());
    let records = if raw.audit.to_store() || args.store.is_some() {
        let store =
            open_existing_store(args.store.as_deref(), &raw, &data_dir, "audit trail").await?;
        store
            .query_audit(&query)
            .await
            .context("reading the audit trail")?
    } else {
        read_file(&raw.audit.file(&data_dir), &query)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        print!("{}", table(&records));
    }
    Ok(ExitCode::SUCCESS)
}

/// RFC 3339, or an age before `now`: a number and one of s, m, h, d, w.
fn parse_time(text: &str, now: UtcTime) -> anyhow::Result<UtcTime> {
    if let Ok(t) = UtcTime::parse_rfc3339(text) {
        return Ok(t);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if seconds > 0 && !number.is_empty() => {
            Ok(now.minus(Duration::from_secs(n.saturating_mul(seconds))))
        }
        _ => bail!(
            "{text:?} is neither an RFC 3339 time (2026-12-04T09:00:00Z) nor an age (15m, 2h, 7d)"
        ),
    }
}

/// The records of a JSON-lines file `query` selects, newest first (for a
/// deployment that keeps the trail out of the store).
fn read_file(path: &Path, query: &AuditQuery) -> anyhow::Result<Vec<AuditRecord>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the audit file {}", path.display()))?;
    let mut records = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let record: AuditRecord = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an audit record", path.display(), n + 1))?;
        if query.matches(&record) {
            records.push(record);
        }
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.at));
    records.truncate(query.effective_limit());
    Ok(records)
}

/// Aligned columns, one record a line; the reason last, unpadded.
fn table(records: &[AuditRecord]) -> String {
    const HEAD: [&str; 9] = [
        "TIME", "EVENT", "DECISION", "USER", "CLIENT", "TOOL", "LATENCY", "OUTCOME", "REASON",
    ];
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let rows: Vec<[String; 9]> = records
        .iter()
        .map(|r| {
            [
                r.at.to_string(),
                r.event.as_str().to_owned(),
                r.decision.as_str().to_owned(),
                text(&r.user_upn.clone().or_else(|| r.user_oid.clone())),
                text(&r.client_app),
                text(&r.tool.clone().or_else(|| r.grant_type.clone())),
                r.latency_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}ms")),
                r.upstream_outcome
                    .map_or_else(|| "-".to_owned(), |o| o.to_string()),
                text(&r.reason),
            ]
        })
        .collect();
    let mut widths = HEAD.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let heads = HEAD.map(str::to_owned);
    for row in std::iter::once(&heads).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use mcpgate_audit::{AuditEvent, UpstreamOutcome};

    use super::*;

    #[test]
    fn times_are_rfc3339_or_an_age() {
        let now = UtcTime::parse_rfc3339("2026-12-04T12:00:00Z").expect("now");
        let at = |t: &str| parse_time(t, now).map(|t| t.to_string());
        assert_eq!(at("15m").expect("m"), "2026-12-04T11:45:00.000Z");
        assert_eq!(at("2h").expect("h"), "2026-12-04T10:00:00.000Z");
        assert_eq!(at("7d").expect("d"), "2026-11-27T12:00:00.000Z");
        assert_eq!(at("1w").expect("w"), "2026-11-27T12:00:00.000Z");
        assert_eq!(at("30s").expect("s"), "2026-12-04T11:59:30.000Z");
        assert_eq!(
            at("2026-12-01T08:00:00+01:00").expect("rfc3339"),
            "2026-12-01T07:00:00.000Z"
        );
        for bad in ["", "m", "15", "15min", "-5m", "yesterday", "2026-12-01"] {
            assert!(parse_time(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let mut a = AuditRecord::at(
            UtcTime::from_unix_millis(0),
            AuditEvent::ToolCall,
            Decision::Deny,
        );
        a.user_upn = Some("alice@contoso.example".into());
        a.tool = Some("delete_file".into());
        a.reason = Some("needs Files.Admin".into());
        let mut b = AuditRecord::at(
            UtcTime::from_unix_millis(1),
            AuditEvent::ToolCall,
            Decision::Allow,
        );
        b.user_oid = Some("oid-b".into());
        b.upstream_outcome = Some(UpstreamOutcome::RpcError { code: -32601 });
        b.latency_ms = Some(1.25);
        let out = table(&[a, b]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str, name: &str| l.find(name);
        let user = col(lines[0], "USER").expect("USER");
        assert_eq!(col(lines[1], "alice@"), Some(user));
        assert_eq!(col(lines[2], "oid-b"), Some(user));
        let outcome = col(lines[0], "OUTCOME").expect("OUTCOME");
        assert_eq!(col(lines[2], "rpc_error -32601"), Some(outcome));
        assert!(lines[1].ends_with("needs Files.Admin"));
        assert!(lines[2].contains("1.2ms") || lines[2].contains("1.3ms"));
    }
}
