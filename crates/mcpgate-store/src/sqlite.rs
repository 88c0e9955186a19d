//! The SQLite backend: the embedded default, one file that survives kill -9.
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`.
//! A commit is then appended to the WAL with `write()` before the call
//! returns, so a process killed at any point (kill -9, a panic, an OOM kill)
//! loses no committed transaction: the data is in the operating system's
//! cache and the next open replays the WAL. What NORMAL gives up against
//! FULL is only the last commits on power loss or a kernel crash (never
//! consistency), in exchange for no fsync per commit, which matters because
//! session touches and refresh rotations are writes on the request path.
//!
//! Every operation is one `BEGIN IMMEDIATE` transaction, run in order on a
//! thread that owns the connection (so it never stalls the async workers,
//! and a burst of requests queues instead of parking a thread each); two
//! processes sharing the file serialise on SQLite's write lock.
//! The schema is one table of typed records keyed by kind and key; its
//! version lives in `PRAGMA user_version` and is migrated at open.

use std::fs::OpenOptions;
use std::future::Future;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::engine::{Engine, EngineStore, Entry, Txn, Visit};
use crate::error::{Kind, OpenError, StoreError};
use crate::options::{Clock, Options};
use crate::records::Timestamp;
use crate::store::Store;

/// The newest schema this build writes.
const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA_V1: &str = "
    CREATE TABLE entries (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;
    CREATE INDEX entries_expiry ON entries (kind, expires_at);
";

/// Opens (creating if missing, 0600) the database at `path`: WAL mode,
/// schema migrated. The directory must exist.
pub async fn open_sqlite(path: &Path, options: Options) -> Result<Arc<dyn Store>, OpenError> {
    let path = path.to_owned();
    let conn = tokio::task::spawn_blocking(move || open_connection(&path))
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))??;
    let (jobs, queue) = mpsc::channel();
    std::thread::Builder::new()
        .name("mcpgate-sqlite".into())
        .spawn(move || serve(conn, queue))
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    let engine = SqliteEngine {
        jobs,
        clock: options.clock,
    };
    Ok(Arc::new(EngineStore::new(engine, options.limits)))
}

fn open_connection(path: &PathBuf) -> Result<Connection, OpenError> {
    // Create the file ourselves so it is private from the start; SQLite
    // gives its -wal and -shm files the database file's permissions.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
    let mut conn = Connection::open(path).map_err(sql_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sql_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(
            format!("SQLite refused WAL mode (journal_mode = {mode})").into(),
        )
        .into());
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_error)?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), OpenError> {
    // Immediate: two processes opening a new file at once migrate it once.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql_error)?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found < 1 {
        tx.execute_batch(SCHEMA_V1).map_err(sql_error)?;
    }
    // Later versions migrate here, one step at a time.
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql_error)?;
    tx.commit().map_err(sql_error)?;
    Ok(())
}

fn sql_error(error: rusqlite::Error) -> StoreError {
    let unavailable = matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::PermissionDenied
                | ErrorCode::ReadOnly
        )
    );
    if unavailable {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

/// An operation for the connection's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

#[derive(Debug)]
struct SqliteEngine {
    /// To the thread that owns the connection.
    jobs: mpsc::Sender<Job>,
    clock: Clock,
}

struct SqliteTxn<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    now: Timestamp,
}

impl Txn for SqliteTxn<'_> {
    fn now(&self) -> Timestamp {
        self.now
    }

    fn get(&mut self, kind: Kind, key: &str) -> Result<Option<Entry>, StoreError> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT value, expires_at FROM entries
                 WHERE kind = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
            )
            .map_err(sql_error)?;
        stmt.query_row(params![kind.as_str(), key, millis(self.now)], |row| {
            let expires: Option<i64> = row.get(1)?;
            Ok(Entry {
                value: row.get(0)?,
                expires_at: expires
                    .map(|ms| Timestamp::from_millis(u64::try_from(ms).unwrap_or(0))),
            })
        })
        .optional()
        .map_err(sql_error)
    }

    fn put(
        &mut self,
        kind: Kind,
        key: &str,
        value: &[u8],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO entries (kind, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, key) DO UPDATE
                 SET value = excluded.value, expires_at = excluded.expires_at",
            )
            .map_err(sql_error)?;
        stmt.execute(params![kind.as_str(), key, value, expires_at.map(millis)])
            .map_err(sql_error)?;
        Ok(())
    }

    fn delete(&mut self, kind: Kind, key: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .tx
            .prepare_cached("DELETE FROM entries WHERE kind = ?1 AND key = ?2 RETURNING expires_at")
            .map_err(sql_error)?;
        let expires: Option<Option<i64>> = stmt
            .query_row(params![kind.as_str(), key], |row| row.get(0))
            .optional()
            .map_err(sql_error)?;
        let now = millis(self.now);
        Ok(expires.is_some_and(|at| at.is_none_or(|at| at > now)))
    }

    fn has_room(&mut self, kind: Kind, cap: u64) -> Result<bool, StoreError> {
        let count = |tx: &rusqlite::Transaction<'_>| -> Result<u64, StoreError> {
            let n: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM entries WHERE kind = ?1")
                .and_then(|mut stmt| stmt.query_row([kind.as_str()], |row| row.get(0)))
                .map_err(sql_error)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        if count(self.tx)? < cap {
            return Ok(true);
        }
        // Sweep this kind only at the cap: expired rows count until then,
        // so what an attacker leaves behind stays bounded too.
        self.tx
            .prepare_cached("DELETE FROM entries WHERE kind = ?1 AND expires_at <= ?2")
            .and_then(|mut stmt| stmt.execute(params![kind.as_str(), millis(self.now)]))
            .map_err(sql_error)?;
        Ok(count(self.tx)? < cap)
    }

    fn purge(&mut self) -> Result<u64, StoreError> {
        let mut stmt = self
            .tx
            .prepare_cached("DELETE FROM entries WHERE kind = ?1 AND expires_at <= ?2")
            .map_err(sql_error)?;
        let mut purged = 0;
        // Kind by kind, so that each delete walks the (kind, expires_at) index.
        for kind in Kind::ALL {
            purged += stmt
                .execute(params![kind.as_str(), millis(self.now)])
                .map_err(sql_error)?;
        }
        Ok(u64::try_from(purged).unwrap_or(u64::MAX))
    }

    fn scan(
        &mut self,
        kind: Kind,
        from: &str,
        to: Option<&str>,
        descending: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        // A range of the primary key (kind, key), an index walk either way;
        // each bound written out, since `(?3 IS NULL OR key < ?3)` would
        // not bound the walk and every scan would read to the kind's end.
        const COLUMNS: &str = "SELECT key, value FROM entries
            WHERE kind = ?1 AND (expires_at IS NULL OR expires_at > ?2) AND key >= ?3";
        let order = if descending { "DESC" } else { "ASC" };
        let sql = match to {
            Some(_) => format!("{COLUMNS} AND key < ?4 ORDER BY key {order}"),
            None => format!("{COLUMNS} ORDER BY key {order}"),
        };
        let mut stmt = self.tx.prepare_cached(&sql).map_err(sql_error)?;
        let now = millis(self.now);
        let mut rows = match to {
            Some(to) => stmt.query(params![kind.as_str(), now, from, to]),
            None => stmt.query(params![kind.as_str(), now, from]),
        }
        .map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let key = row
                .get_ref(0)
                .and_then(|v| Ok(v.as_str()?))
                .map_err(sql_error)?;
            let value = row
                .get_ref(1)
                .and_then(|v| Ok(v.as_blob()?))
                .map_err(sql_error)?;
            if !visit(key, value)? {
                break;
            }
        }
        Ok(())
    }
}

impl Engine for SqliteEngine {
    fn run<R, F>(&self, f: F) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Txn) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let clock = self.clock.clone();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(transaction(conn, clock.now(), f));
        });
        let sent = self
            .jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the SQLite thread has stopped".into()));
        async move {
            sent?;
            answer
                .await
                .map_err(|_| StoreError::Backend("the SQLite thread dropped an operation".into()))?
        }
    }
}

/// One operation as one `BEGIN IMMEDIATE` transaction; an error rolls back.
fn transaction<R>(
    conn: &mut Connection,
    now: Timestamp,
    f: impl FnOnce(&mut dyn Txn) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let mut txn = SqliteTxn { tx: &tx, now };
    let value = f(&mut txn)?;
    tx.commit().map_err(sql_error)?;
    Ok(value)
}

/// The connection's own thread: runs jobs in order until every sender is
/// gone, then closes the database. A panicking job fails alone.
fn serve(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        let run = std::panic::AssertUnwindSafe(|| job(&mut conn));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!("a SQLite store operation panicked; its caller gets an error");
        }
    }
}
