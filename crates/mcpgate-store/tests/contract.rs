//! The store's contract, run against every backend; then what only the
//! durable backends promise.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod suite;

use mcpgate_store::Options;
use suite::{Harness, ManualClock, test_limits};

async fn memory() -> Harness {
    let clock = ManualClock::new();
    let options = Options {
        limits: test_limits(),
        clock: clock.clock(),
        ..Options::default()
    };
    Harness {
        store: mcpgate_store::open("memory:", options).await.unwrap(),
        clock: Some(clock),
        keep: Box::new(()),
    }
}

mod memory {
    contract_tests!(super::memory);
}

async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let options = Options {
        limits: test_limits(),
        clock: clock.clock(),
        ..Options::default()
    };
    let url = format!("sqlite:{}", dir.path().join("store.db").display());
    Harness {
        store: mcpgate_store::open(&url, options).await.unwrap(),
        clock: Some(clock),
        keep: Box::new(dir),
    }
}

mod sqlite {
    contract_tests!(super::sqlite);
}

/// The Redis every test uses: 127.0.0.1:6379 unless `MCPGATE_TEST_REDIS_URL`
/// says otherwise. There is no skipping: CI runs one.
pub fn redis_url() -> String {
    std::env::var("MCPGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Deletes a test's keys when the test ends, however it ends.
struct RedisCleanup {
    prefix: String,
}

impl Harness {
    /// The Redis key prefix of a Redis harness.
    fn prefix(&self) -> &str {
        self.keep
            .downcast_ref::<RedisCleanup>()
            .map(|cleanup| cleanup.prefix.as_str())
            .unwrap_or_default()
    }
}

impl Drop for RedisCleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

async fn redis() -> Harness {
    let prefix = format!("mcpgate-test-{}", mcpgate_store::FamilyId::random());
    let options = Options {
        limits: test_limits(),
        key_prefix: prefix.clone(),
        ..Options::default()
    };
    Harness {
        store: mcpgate_store::open(&redis_url(), options).await.unwrap(),
        clock: None,
        keep: Box::new(RedisCleanup { prefix }),
    }
}

mod redis_backend {
    contract_tests!(super::redis);

    /// The test leaves no key behind.
    #[tokio::test]
    async fn a_test_prefix_is_cleaned_up() {
        let harness = super::redis().await;
        let ttl = std::time::Duration::from_secs(60);
        harness
            .store
            .bump_counter("left-behind", ttl)
            .await
            .unwrap();
        drop(harness);
        let client = redis::Client::open(super::redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("mcpgate-test-*:counter:left-behind")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(keys.is_empty(), "{keys:?}");
    }

    /// Two replicas (two connections, one prefix) racing on one code and
    /// one refresh token: one redemption, one rotation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_replicas_spend_a_code_and_a_refresh_token_once() {
        use mcpgate_store::{FamilyId, Redemption, Rotation, TokenHash};

        use crate::suite::{RACERS, code, refresh};

        let first = super::redis().await;
        let options = mcpgate_store::Options {
            key_prefix: first.prefix().to_owned(),
            ..mcpgate_store::Options::default()
        };
        let second = mcpgate_store::open(&super::redis_url(), options)
            .await
            .unwrap();
        let replicas = [first.store.clone(), second];
        let hour = std::time::Duration::from_secs(3600);
        let now = first.now();
        let (code_hash, old) = (TokenHash::of(b"replica-code"), TokenHash::of(b"replica-rt"));
        let family = FamilyId::random();
        replicas[0]
            .put_code(&code_hash, &code(now), hour)
            .await
            .unwrap();
        replicas[1]
            .put_refresh(&old, &refresh(&family, now, hour))
            .await
            .unwrap();

        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let store = replicas[i % 2].clone();
            let record = refresh(&family, now, hour);
            tasks.push(tokio::spawn(async move {
                let new = TokenHash::of(format!("replica-rt-{i}").as_bytes());
                let redeemed = store
                    .redeem_code(&code_hash, &FamilyId::new(format!("f{i}")))
                    .await
                    .unwrap();
                let rotated = store.rotate_refresh(&old, &new, &record).await.unwrap();
                (
                    redeemed == Redemption::Redeemed,
                    rotated == Rotation::Rotated,
                )
            }));
        }
        let outcomes: Vec<_> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            outcomes.iter().filter(|(r, _)| *r).count(),
            1,
            "one redemption"
        );
        assert_eq!(
            outcomes.iter().filter(|(_, r)| *r).count(),
            1,
            "one rotation"
        );
    }

    #[tokio::test]
    async fn a_malformed_url_is_named_without_repeating_it() {
        let err = mcpgate_store::open("redis://:hunter2@[::1", mcpgate_store::Options::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, mcpgate_store::OpenError::BadRedisUrl(_)),
            "{err:?}"
        );
        assert!(!err.to_string().contains("hunter2"));
    }
}

/// What only the SQLite backend promises: the file outlives the process.
mod sqlite_file {
    use std::io::{BufRead as _, BufReader};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    use mcpgate_store::{
        ClientId, FamilyId, IdentityKey, Kind, OpenError, Options, Redemption, Rotation, SessionId,
        Store, StoreError, TokenHash, UpstreamKey,
    };

    use crate::suite::{RACERS, client, code, refresh};

    const CHILD_ENV: &str = "MCPGATE_STORE_KILL9_DB";
    const HOUR: Duration = Duration::from_secs(3600);

    async fn open(path: &Path) -> Arc<dyn Store> {
        mcpgate_store::open(&format!("sqlite:{}", path.display()), Options::default())
            .await
            .unwrap()
    }

    fn h(label: &str) -> TokenHash {
        TokenHash::of(label.as_bytes())
    }

    /// Writes one of everything, spending a code and rotating a token.
    async fn write_everything(store: &dyn Store) {
        let now = mcpgate_store::Clock::system().now();
        store
            .put_client(&client("durable-client", now))
            .await
            .unwrap();
        store.put_code(&h("code"), &code(now), HOUR).await.unwrap();
        assert_eq!(
            store
                .redeem_code(&h("code"), &FamilyId::new("fam"))
                .await
                .unwrap(),
            Redemption::Redeemed
        );
        let family = FamilyId::new("fam");
        store
            .put_refresh(&h("rt-1"), &refresh(&family, now, HOUR))
            .await
            .unwrap();
        assert_eq!(
            store
                .rotate_refresh(&h("rt-1"), &h("rt-2"), &refresh(&family, now, HOUR))
                .await
                .unwrap(),
            Rotation::Rotated
        );
        store
            .put_session(&SessionId::new("sess"), &IdentityKey::new("user"), HOUR)
            .await
            .unwrap();
    }

    /// Reads it all back, as a restarted process would.
    async fn check_everything(store: &dyn Store) {
        assert!(
            store
                .get_client(&ClientId::new("durable-client"))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            store
                .redeem_code(&h("code"), &FamilyId::new("other"))
                .await
                .unwrap(),
            Redemption::AlreadyRedeemed {
                family: FamilyId::new("fam")
            },
            "a code spent before the restart stays spent"
        );
        let old = store.get_refresh(&h("rt-1")).await.unwrap().unwrap();
        assert!(old.used, "the rotation survived");
        let new = store.get_refresh(&h("rt-2")).await.unwrap().unwrap();
        assert!(
            !new.used && !new.family_revoked,
            "the new refresh token still works"
        );
        assert_eq!(
            store
                .touch_session(&SessionId::new("sess"), HOUR)
                .await
                .unwrap(),
            Some(IdentityKey::new("user"))
        );
    }

    #[tokio::test]
    async fn data_survives_closing_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = open(&path).await;
        write_everything(store.as_ref()).await;
        drop(store);
        let store = open(&path).await;
        check_everything(store.as_ref()).await;
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the database is private");
    }

    /// Not a test on its own: the child that `data_survives_kill_9` runs
    /// and kills. It writes, says so, then writes on until it is killed.
    #[test]
    fn kill_9_child_writer() {
        let Ok(path) = std::env::var(CHILD_ENV) else {
            return;
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = open(Path::new(&path)).await;
            write_everything(store.as_ref()).await;
            println!("WRITTEN");
            // Keep a transaction in flight when the signal lands.
            loop {
                store.bump_counter("busy", HOUR).await.unwrap();
            }
        });
    }

    #[tokio::test]
    async fn data_survives_kill_9() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sqlite_file::kill_9_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let written = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("WRITTEN"));
        assert!(written, "the child wrote its records");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let store = open(&path).await;
        check_everything(store.as_ref()).await;
        assert!(store.bump_counter("busy", HOUR).await.unwrap() >= 1);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_on_one_file_redeem_a_code_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let (a, b) = (open(&path).await, open(&path).await);
        let now = mcpgate_store::Clock::system().now();
        a.put_code(&h("shared"), &code(now), HOUR).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store
                    .redeem_code(&h("shared"), &FamilyId::new(format!("f{i}")))
                    .await
                    .unwrap()
            }));
        }
        let wins = futures::future::join_all(tasks)
            .await
            .into_iter()
            .filter(|o| *o.as_ref().unwrap() == Redemption::Redeemed)
            .count();
        assert_eq!(wins, 1, "two connections, one redemption");
    }

    #[tokio::test]
    async fn a_corrupt_record_is_named_without_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = open(&path).await;
        let key = UpstreamKey::new("grant");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO entries (kind, key, value, expires_at) VALUES ('upstream', 'grant', ?1, NULL)",
                [b"{\"sealed\": \"not-base64 secret-ish value\"}".as_slice()],
            )
            .unwrap();
        }
        let err = store.get_upstream(&key).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupt {
                    what: Kind::Upstream,
                    ..
                }
            ),
            "{err:?}"
        );
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("secret-ish"), "{shown}");
    }

    #[tokio::test]
    async fn a_newer_schema_and_bad_urls_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(open(&path).await);
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let url = format!("sqlite:{}", path.display());
        assert!(matches!(
            mcpgate_store::open(&url, Options::default()).await,
            Err(OpenError::NewerSchema {
                found: 99,
                known: 1
            })
        ));
        assert!(matches!(
            mcpgate_store::open("sqlite:", Options::default()).await,
            Err(OpenError::MissingPath)
        ));
        assert!(matches!(
            mcpgate_store::open("postgres://db/x", Options::default()).await,
            Err(OpenError::UnknownScheme)
        ));
    }
}

/// Not a check but a measurement: the audit trail on SQLite, appended in
/// the auditor's batches, then queried with a filter that matches little.
/// Run with `cargo test -p mcpgate-store --release --test contract --
/// --ignored --nocapture audit_measure`.
#[tokio::test]
#[ignore = "a measurement"]
async fn audit_measure_on_sqlite() {
    use mcpgate_audit::{AuditEvent, AuditQuery, AuditRecord, Decision, UtcTime};

    const N: u64 = 100_000;
    const BATCH: usize = 512;
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("AUDIT_MEASURE_URL")
        .unwrap_or_else(|_| format!("sqlite:{}", dir.path().join("store.db").display()));
    let store = mcpgate_store::open(&url, Options::default()).await.unwrap();
    let now = UtcTime::now();
    let records: Vec<_> = (0..N)
        .map(|i| {
            let mut r = AuditRecord::at(
                now.minus(std::time::Duration::from_millis(N - i)),
                AuditEvent::ToolCall,
                Decision::Allow,
            );
            r.user_oid = Some(format!("oid-{}", i % 50));
            r.user_upn = Some(format!("user{}@contoso.example", i % 50));
            r.client_app = Some("aebc6443-996d-45c2-90f0-388ff96faa56".into());
            r.tool = Some(format!("tool_{}", i % 20));
            r.reason = Some("allowed by the rule for Files.Read".into());
            r
        })
        .collect();
    let started = std::time::Instant::now();
    for batch in records.chunks(BATCH) {
        store.append_audit(batch).await.unwrap();
    }
    let appended = started.elapsed();
    let started = std::time::Instant::now();
    let newest = store.query_audit(&AuditQuery::default()).await.unwrap();
    let newest_took = started.elapsed();
    let started = std::time::Instant::now();
    let query = AuditQuery {
        user: Some("oid-7".into()),
        tool: Some("tool_7".into()),
        limit: 10_000,
        ..AuditQuery::default()
    };
    let rare = store.query_audit(&query).await.unwrap();
    let rare_took = started.elapsed();
    assert_eq!(newest.len(), 100);
    assert_eq!(rare.len() as u64, N / 100);
    println!(
        "append: {:.0} records/s in batches of {BATCH}; newest 100: {:?}; a filter over all {N}: {:?}",
        N as f64 / appended.as_secs_f64(),
        newest_took,
        rare_took
    );
}
