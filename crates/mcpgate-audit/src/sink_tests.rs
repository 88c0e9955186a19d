//! The auditor end to end: a real file, a store in memory.

use std::sync::Mutex;

use super::*;
use crate::record::{AuditEvent, Decision};

/// A store that keeps what it is given, batch by batch.
#[derive(Debug, Default)]
struct Kept(Mutex<Vec<Vec<AuditRecord>>>);

impl AuditStore for Kept {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> AppendFuture<'a> {
        Box::pin(async move {
            self.0.lock().expect("lock").push(records.to_vec());
            Ok(())
        })
    }
}

impl Kept {
    fn records(&self) -> Vec<AuditRecord> {
        self.0.lock().expect("lock").concat()
    }
}

fn call(i: usize) -> AuditRecord {
    let mut r = AuditRecord::new(AuditEvent::ToolCall, Decision::Allow);
    r.request_id = Some(i.to_string());
    r.tool = Some(
        if i.is_multiple_of(2) {
            "echo"
        } else {
            "write_file"
        }
        .into(),
    );
    r.arguments = Some(serde_json::json!({"n": i}));
    r
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test]
async fn shutdown_drains_every_record_to_the_file_and_the_store() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.jsonl");
    let store = Arc::new(Kept::default());
    let options = AuditorOptions {
        file: Some(path.clone()),
        arguments_for: ArgumentPolicy::new(["write_*"]),
        batch: 64,
        ..AuditorOptions::default()
    };
    let auditor = Auditor::start(options, Some(store.clone()))
        .await
        .expect("start");
    for i in 0..1000 {
        auditor.record(call(i));
        if i.is_multiple_of(100) {
            tokio::task::yield_now().await; // let the writer take some
        }
    }
    auditor.shutdown().await;
    assert_eq!(auditor.dropped(), 0);

    let written = lines(&path);
    assert_eq!(written.len(), 1000, "one line per record");
    let ids: std::collections::BTreeSet<_> = written
        .iter()
        .map(|l| l["request_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 1000, "each record once");
    for line in &written {
        let opted_in = line["tool"] == "write_file";
        assert_eq!(line.get("arguments").is_some(), opted_in, "{line}");
    }
    let stored = store.records();
    assert_eq!(stored.len(), 1000);
    assert!(store.0.lock().expect("lock").iter().all(|b| b.len() <= 64));

    // After shutdown: dropped and counted, never written.
    auditor.record(call(1000));
    assert_eq!(auditor.dropped(), 1);
    auditor.shutdown().await;
    assert_eq!(lines(&path).len(), 1000);
}

#[tokio::test]
async fn the_file_is_private_and_appended_to() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.jsonl");
    for round in 1..=2 {
        let options = AuditorOptions {
            file: Some(path.clone()),
            ..AuditorOptions::default()
        };
        let auditor = Auditor::start(options, None).await.expect("start");
        auditor.record(call(round));
        auditor.shutdown().await;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(lines(&path).len(), round, "appended, not truncated");
    }
    // A file someone left world-readable is made private.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let options = AuditorOptions {
        file: Some(path.clone()),
        ..AuditorOptions::default()
    };
    let auditor = Auditor::start(options, None).await.expect("start");
    auditor.shutdown().await;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let store = Arc::new(Kept::default());
    let options = AuditorOptions {
        queue: 4,
        ..AuditorOptions::default()
    };
    let auditor = Auditor::start(options, Some(store.clone()))
        .await
        .expect("start");
    // A current-thread runtime: the writer cannot run until this awaits.
    for i in 0..10 {
        auditor.record(call(i));
    }
    assert_eq!(auditor.dropped(), 6);
    auditor.shutdown().await;
    assert_eq!(store.records().len(), 4);
}

/// A store that waits at a gate before keeping each batch.
#[derive(Debug)]
struct Gated {
    gate: tokio::sync::Semaphore,
    kept: Kept,
}

impl AuditStore for Gated {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> AppendFuture<'a> {
        Box::pin(async move {
            self.gate.acquire().await?.forget();
            self.kept.append(records).await
        })
    }
}

#[tokio::test]
async fn a_stuck_store_holds_up_neither_the_file_nor_the_callers() {
    const N: usize = 200;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.jsonl");
    let store = Arc::new(Gated {
        gate: tokio::sync::Semaphore::new(0),
        kept: Kept::default(),
    });
    let options = AuditorOptions {
        file: Some(path.clone()),
        batch: 1,
        ..AuditorOptions::default()
    };
    let auditor = Auditor::start(options, Some(store.clone()))
        .await
        .expect("start");
    for i in 0..N {
        auditor.record(call(i));
    }
    let stopping = tokio::spawn({
        let auditor = auditor.clone();
        async move { auditor.shutdown().await }
    });
    // Every record reaches the file while the store is stuck.
    for _ in 0..500 {
        if std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count()
            == N
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines(&path).len(), N);
    assert_eq!(auditor.dropped(), 0);
    store.gate.add_permits(N);
    stopping.await.expect("shutdown");
    let stored = store.kept.records().len() as u64;
    assert!(auditor.not_stored() > 0, "the store's queue overflowed");
    assert!(stored >= STORE_QUEUE as u64, "{stored}");
    assert_eq!(stored + auditor.not_stored(), N as u64);
}

#[tokio::test]
async fn an_unopenable_file_is_an_error_naming_it() {
    let options = AuditorOptions {
        file: Some(PathBuf::from("/nonexistent-dir/audit.jsonl")),
        ..AuditorOptions::default()
    };
    let err = Auditor::start(options, None).await.expect_err("no dir");
    assert!(err.to_string().contains("/nonexistent-dir/audit.jsonl"));
}

/// Not a check but a measurement: what `record` costs a caller, and how
/// fast the writer drains to a file and a store. Run with
/// `cargo test -p mcpgate-audit --release -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn throughput() {
    const N: usize = 200_000;
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Kept::default());
    let options = AuditorOptions {
        file: Some(dir.path().join("audit.jsonl")),
        queue: N,
        ..AuditorOptions::default()
    };
    let auditor = Auditor::start(options, Some(store.clone()))
        .await
        .expect("start");
    let records: Vec<_> = (0..N)
        .map(|i| {
            let mut r = call(i);
            r.user_oid = Some("00000000-0000-0000-0000-0000000000a1".into());
            r.user_upn = Some("alice@contoso.example".into());
            r.client_app = Some("aebc6443-996d-45c2-90f0-388ff96faa56".into());
            r.reason = Some("allowed by the rule for Files.Read".into());
            r
        })
        .collect();
    let started = std::time::Instant::now();
    for r in records {
        auditor.record(r);
    }
    let recorded = started.elapsed();
    auditor.shutdown().await;
    let drained = started.elapsed();
    assert_eq!(store.records().len(), N);
    println!(
        "record(): {:.0} ns each; written to file and store: {:.0} records/s",
        recorded.as_nanos() as f64 / N as f64,
        N as f64 / drained.as_secs_f64()
    );
}
