//! `mcpgate audit` as an operator runs it: records written through the
//! store `serve` uses, read back by the binary with filters, as a table
//! and as JSON.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mcpgate_audit::{AuditEvent, AuditRecord, Decision, UpstreamOutcome, UtcTime};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");
const MINUTE: Duration = Duration::from_secs(60);

/// Six records over the last hour: alice and bob, two tools, a sign-in.
fn trail(now: UtcTime) -> Vec<AuditRecord> {
    let call = |minutes: u32, upn: &str, tool: &str, decision: Decision| {
        let mut r = AuditRecord::at(now.minus(MINUTE * minutes), AuditEvent::ToolCall, decision);
        r.user_oid = Some(format!("oid-{}", &upn[..upn.find('@').unwrap_or(0)]));
        r.user_upn = Some(upn.to_owned());
        r.client_app = Some("vscode".into());
        r.tool = Some(tool.to_owned());
        r.request_id = Some(format!("{minutes}"));
        if decision == Decision::Deny {
            r.reason = Some(format!("{tool} needs the role Files.Admin"));
        } else {
            r.upstream_outcome = Some(UpstreamOutcome::Ok);
            r.latency_ms = Some(2.5);
        }
        r
    };
    let mut sign_in = AuditRecord::at(now.minus(MINUTE * 50), AuditEvent::SignIn, Decision::Allow);
    sign_in.user_upn = Some("alice@contoso.example".into());
    sign_in.request_id = Some("50".into());
    vec![
        call(1, "alice@contoso.example", "read_file", Decision::Allow),
        call(5, "bob@contoso.example", "delete_file", Decision::Deny),
        call(10, "alice@contoso.example", "delete_file", Decision::Deny),
        call(20, "bob@contoso.example", "read_file", Decision::Allow),
        call(40, "alice@contoso.example", "read_file", Decision::Allow),
        sign_in,
    ]
}

/// Runs `mcpgate audit ARGS` with nothing from the caller's environment.
fn audit(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("audit")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_clear()
        .output()
        .expect("run mcpgate audit");
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

fn json_ids(data_dir: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = audit(data_dir, &all);
    assert!(ok, "{err}");
    let records: Vec<Value> = serde_json::from_str(&out).expect("one JSON array");
    records
        .iter()
        .map(|r| r["request_id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn audit_reads_serves_store_with_filters_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path();
    // Where `serve` keeps its store on defaults: mcpgate.db in the data dir.
    let url = format!("sqlite:{}", data_dir.join("mcpgate.db").display());
    let store = mcpgate_store::open(&url, mcpgate_store::Options::default())
        .await
        .expect("store");
    let now = UtcTime::now();
    store.append_audit(&trail(now)).await.expect("append");
    drop(store);

    assert_eq!(json_ids(data_dir, &[]), ["1", "5", "10", "20", "40", "50"]);
    assert_eq!(
        json_ids(data_dir, &["--user", "Alice@Contoso.example"]),
        ["1", "10", "40", "50"]
    );
    assert_eq!(json_ids(data_dir, &["--user", "oid-bob"]), ["5", "20"]);
    assert_eq!(json_ids(data_dir, &["--tool", "delete_file"]), ["5", "10"]);
    assert_eq!(json_ids(data_dir, &["--decision", "deny"]), ["5", "10"]);
    assert_eq!(json_ids(data_dir, &["--limit", "2"]), ["1", "5"]);
    assert_eq!(json_ids(data_dir, &["--since", "15m"]), ["1", "5", "10"]);
    assert_eq!(
        json_ids(
            data_dir,
            &["--since", "30m", "--until", "3m", "--decision", "allow"]
        ),
        ["20"]
    );
    let since = now.minus(MINUTE * 45).to_string();
    assert_eq!(
        json_ids(data_dir, &["--since", &since, "--tool", "read_file"]),
        ["1", "20", "40"]
    );
    assert!(json_ids(data_dir, &["--user", "carol@contoso.example"]).is_empty());

    // The JSON is the records as written.
    let (ok, out, _) = audit(data_dir, &["--json", "--limit", "1"]);
    assert!(ok);
    let first: Vec<AuditRecord> = serde_json::from_str(&out).expect("records");
    assert_eq!(first, trail(now)[..1]);

    // The table: a header, one aligned line per record, newest first.
    let (ok, out, err) = audit(data_dir, &["--decision", "deny"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("TIME"), "{out}");
    let user = lines[0].find("USER").expect("USER column");
    assert_eq!(lines[1].find("bob@contoso.example"), Some(user), "{out}");
    assert_eq!(lines[2].find("alice@contoso.example"), Some(user), "{out}");
    assert!(
        lines[1].ends_with("delete_file needs the role Files.Admin"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&now.minus(MINUTE * 5).to_string()),
        "{out}"
    );

    // Bad input is named; a missing store is not created.
    let (ok, _, err) = audit(data_dir, &["--since", "yesterday"]);
    assert!(!ok && err.contains("--since"), "{err}");
    let (ok, _, err) = audit(data_dir, &["--decision", "maybe"]);
    assert!(!ok && err.contains("maybe"), "{err}");
    let empty = tempfile::tempdir().expect("dir");
    let (ok, _, err) = audit(empty.path(), &[]);
    assert!(!ok && err.contains("no audit trail yet"), "{err}");
    assert!(!empty.path().join("mcpgate.db").exists());
}

#[test]
fn without_the_store_audit_reads_the_json_lines_file() {
    let dir = tempfile::tempdir().expect("dir");
    let now = UtcTime::now();
    let lines: String = trail(now)
        .iter()
        .rev()
        .map(|r| serde_json::to_string(r).expect("json") + "\n")
        .collect();
    std::fs::write(dir.path().join("audit.jsonl"), lines).expect("write");
    let config = dir.path().join("mcpgate.toml");
    std::fs::write(&config, "[audit]\nstore = false\n").expect("config");
    let config = config.to_str().expect("path");
    assert_eq!(
        json_ids(dir.path(), &["--config", config, "--tool", "read_file"]),
        ["1", "20", "40"]
    );
}
