//! The audit trail and tool pins: read back in order and by filter,
//! bounded by count and age, a refused batch writing nothing.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mcpgate_audit::{AuditEvent, AuditQuery, AuditRecord, Decision, UtcTime};
use mcpgate_store::{Kind, PendingPin, PinRecord, StoreError, Timestamp};

use super::{Harness, test_limits};

const MINUTE: Duration = Duration::from_secs(60);

fn at(h: &Harness, ago: Duration) -> UtcTime {
    UtcTime::from_unix_millis(h.now().as_millis()).minus(ago)
}

/// Record `i` of a small trail: alternating users, tools and decisions,
/// `i` minutes ago.
fn call(base: UtcTime, i: u64) -> AuditRecord {
    let decision = if i.is_multiple_of(3) {
        Decision::Deny
    } else {
        Decision::Allow
    };
    let mut r = AuditRecord::at(
        base.minus(MINUTE * u32::try_from(i).unwrap()),
        AuditEvent::ToolCall,
        decision,
    );
    r.request_id = Some(format!("req-{i}"));
    let (oid, upn) = if i.is_multiple_of(2) {
        ("oid-alice", "Alice@Contoso.example")
    } else {
        ("oid-bob", "bob@contoso.example")
    };
    r.user_oid = Some(oid.into());
    r.user_upn = Some(upn.into());
    r.tool = Some(if i < 4 { "read_file" } else { "write_file" }.into());
    r
}

fn ids(records: &[AuditRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.request_id.clone().unwrap_or_default())
        .collect()
}

async fn query(h: &Harness, f: impl FnOnce(&mut AuditQuery)) -> Vec<String> {
    let mut q = AuditQuery::default();
    f(&mut q);
    ids(&h.store.query_audit(&q).await.unwrap())
}

pub async fn audit_reads_back_newest_first_by_filter(h: &Harness) {
    let base = at(h, Duration::ZERO);
    h.store.append_audit(&[]).await.unwrap();
    // Appended out of order, in two batches: the store orders by time.
    let records: Vec<_> = [3, 0, 5, 1, 4, 2]
        .into_iter()
        .map(|i| call(base, i))
        .collect();
    h.store.append_audit(&records[..3]).await.unwrap();
    h.store.append_audit(&records[3..]).await.unwrap();

    let all = query(h, |_| {}).await;
    assert_eq!(all, ["req-0", "req-1", "req-2", "req-3", "req-4", "req-5"]);
    let back = h.store.query_audit(&AuditQuery::default()).await.unwrap();
    let written = records
        .iter()
        .find(|r| r.request_id.as_deref() == Some("req-0"));
    assert_eq!(Some(&back[0]), written, "a record reads back as written");

    assert_eq!(
        query(h, |q| q.user = Some("alice@contoso.example".into())).await,
        ["req-0", "req-2", "req-4"]
    );
    assert_eq!(
        query(h, |q| q.user = Some("oid-bob".into())).await,
        ["req-1", "req-3", "req-5"]
    );
    assert_eq!(
        query(h, |q| q.tool = Some("write_file".into())).await,
        ["req-4", "req-5"]
    );
    assert_eq!(
        query(h, |q| q.decision = Some(Decision::Deny)).await,
        ["req-0", "req-3"]
    );
    assert_eq!(query(h, |q| q.limit = 2).await, ["req-0", "req-1"]);
    // [since, until): 4 minutes ago is in, 1 minute ago is out.
    assert_eq!(
        query(h, |q| {
            q.since = Some(base.minus(MINUTE * 4));
            q.until = Some(base.minus(MINUTE));
        })
        .await,
        ["req-2", "req-3", "req-4"]
    );
    assert_eq!(
        query(h, |q| {
            q.user = Some("oid-alice".into());
            q.decision = Some(Decision::Allow);
            q.since = Some(base.minus(MINUTE * 5));
        })
        .await,
        ["req-2", "req-4"]
    );
    assert!(
        query(h, |q| q.user = Some("nobody".into()))
            .await
            .is_empty()
    );
}

pub async fn audit_retention_drops_the_oldest(h: &Harness) {
    let base = at(h, Duration::ZERO);
    let cap = test_limits().max_audit_records;
    let first: Vec<_> = (0..cap).map(|i| call(base, i + 4)).collect();
    h.store.append_audit(&first).await.unwrap();
    let newer: Vec<_> = (0..4).map(|i| call(base, i)).collect();
    h.store.append_audit(&newer).await.unwrap();
    let kept = query(h, |q| q.limit = 100).await;
    let expected: Vec<String> = (0..cap).map(|i| format!("req-{i}")).collect();
    assert_eq!(kept, expected, "the cap holds, the oldest went first");

    // Older than the retention age: not kept.
    let max_age = test_limits().audit_max_age;
    let mut stale = call(base, 0);
    stale.at = at(h, max_age + MINUTE);
    stale.request_id = Some("stale".into());
    h.store.append_audit(&[stale]).await.unwrap();
    assert!(
        !query(h, |q| q.limit = 100)
            .await
            .contains(&"stale".to_owned())
    );

    // Time passes: what aged out goes with the next append.
    if h.clock.is_some() {
        // req-2 is then a second past the age, req-1 a minute short of it.
        h.pass(max_age - MINUTE * 2 + Duration::from_secs(1)).await;
        let mut fresh = AuditRecord::at(at(h, Duration::ZERO), AuditEvent::SignIn, Decision::Allow);
        fresh.request_id = Some("fresh".into());
        h.store.append_audit(&[fresh]).await.unwrap();
        assert_eq!(
            query(h, |q| q.limit = 100).await,
            ["fresh", "req-0", "req-1"]
        );
    }
}

pub async fn a_refused_audit_batch_writes_nothing(h: &Harness) {
    let base = at(h, Duration::ZERO);
    let mut huge = call(base, 1);
    huge.arguments = Some(serde_json::json!({"data": "x".repeat(test_limits().max_record_bytes)}));
    let err = h
        .store
        .append_audit(&[call(base, 0), huge])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                what: Kind::Audit,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(query(h, |_| {}).await.is_empty());
}

fn pin(upstream: &str, tool: &str, now: Timestamp) -> PinRecord {
    PinRecord {
        upstream: upstream.into(),
        tool: tool.into(),
        digest: format!("sha256:{upstream}/{tool}"),
        definition: format!(r#"{{"name":"{tool}"}}"#),
        pending: None,
        first_seen: now,
        changed_at: now,
    }
}

pub async fn pins_round_trip_and_are_capped(h: &Harness) {
    let now = h.now();
    let pin = |upstream: &str, tool: &str, _: &Harness| pin(upstream, tool, now);
    assert_eq!(h.store.get_pin("files", "read").await.unwrap(), None);
    // "files" and "file" + "sread" must not meet under one key.
    for (upstream, tool) in [
        ("files", "read"),
        ("files", "write"),
        ("file", "sread"),
        ("git", "log"),
    ] {
        h.store.put_pin(&pin(upstream, tool, h)).await.unwrap();
    }
    assert_eq!(
        h.store.get_pin("files", "read").await.unwrap(),
        Some(pin("files", "read", h))
    );
    assert_eq!(
        h.store.get_pin("file", "sread").await.unwrap(),
        Some(pin("file", "sread", h))
    );
    let names = |pins: Vec<PinRecord>| {
        pins.into_iter()
            .map(|p| format!("{}/{}", p.upstream, p.tool))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(h.store.list_pins(None).await.unwrap()),
        ["file/sread", "files/read", "files/write", "git/log"]
    );
    assert_eq!(
        names(h.store.list_pins(Some("files")).await.unwrap()),
        ["files/read", "files/write"]
    );
    assert!(h.store.list_pins(Some("nope")).await.unwrap().is_empty());

    // A changed definition waits beside the pin; replacing is no new record.
    let mut changed = pin("files", "write", h);
    changed.pending = Some(PendingPin {
        digest: "sha256:new".into(),
        definition: r#"{"name":"write","description":"now also deletes"}"#.into(),
    });
    h.store.put_pin(&changed).await.unwrap();
    assert_eq!(
        h.store.get_pin("files", "write").await.unwrap(),
        Some(changed)
    );

    assert_eq!(test_limits().max_pins, 4);
    let err = h.store.put_pin(&pin("git", "push", h)).await.unwrap_err();
    assert!(matches!(err, StoreError::Full(Kind::Pin)), "{err:?}");
    assert_eq!(h.store.get_pin("git", "push").await.unwrap(), None);

    let mut too_big = pin("git", "log", h);
    too_big.definition = "x".repeat(test_limits().max_record_bytes);
    assert!(matches!(
        h.store.put_pin(&too_big).await,
        Err(StoreError::TooLarge {
            what: Kind::Pin,
            ..
        })
    ));
    assert_eq!(
        h.store.get_pin("git", "log").await.unwrap(),
        Some(pin("git", "log", h))
    );
}
