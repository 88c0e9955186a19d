//! [`AuditSink`], what the request path records into, and [`Auditor`], the
//! real one: a bounded queue to one writer task that appends JSON lines to
//! a file and hands batches to an [`AuditStore`].
//!
//! Recording never blocks or awaits: a full queue drops the record, counts
//! it ([`Auditor::dropped`]) and says so in the log at error level. The
//! writer wakes at most about once per [`AuditorOptions::flush_interval`]
//! under load, so a busy server pays no task wake-up per call.
//!
//! The file comes first: the store gets each batch from a second task,
//! through a queue of [`STORE_QUEUE`] batches, so that a slow or absent
//! store (Redis down, retrying) never holds up the file. A batch the store
//! has no room for is counted ([`Auditor::not_stored`]) and logged; it is
//! in the file.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::record::AuditRecord;
use crate::scrub::{ArgumentPolicy, sanitize};

/// Where the request path hands its records. Implementations must return
/// at once: never block, never wait for I/O.
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Records one decision.
    fn record(&self, record: AuditRecord);

    /// Whether a call to `tool` should carry its arguments: a caller asks
    /// first so that it copies them only when they will be kept.
    fn wants_arguments(&self, tool: &str) -> bool {
        let _ = tool;
        false
    }
}

/// A boxed error from a store.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A future an [`AuditStore`] returns.
pub type AppendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

/// Durable storage for records (the mcpgate store), fed in batches by the
/// [`Auditor`]'s writer task, never by the request path.
pub trait AuditStore: Send + Sync + fmt::Debug {
    /// Appends `records`, all or none.
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> AppendFuture<'a>;
}

/// Batches waiting for the store at most.
pub const STORE_QUEUE: usize = 64;

/// The auditor could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The JSON-lines file could not be opened for appending.
    #[error("cannot open the audit file {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How an [`Auditor`] runs.
#[derive(Debug, Clone)]
pub struct AuditorOptions {
    /// The JSON-lines file to append to (created 0600). Default none.
    pub file: Option<PathBuf>,
    /// Tools whose arguments are recorded. Default none.
    pub arguments_for: ArgumentPolicy,
    /// Records waiting for the writer at most; past it they are dropped.
    /// Default 8192.
    pub queue: usize,
    /// Records written (and handed to the store) at most per batch.
    /// Default 512.
    pub batch: usize,
    /// How long the writer rests after a batch smaller than `batch`, so
    /// that a steady trickle is written in batches, not one wake-up per
    /// record. Default 50 ms.
    pub flush_interval: Duration,
}

impl Default for AuditorOptions {
    fn default() -> Self {
        Self {
            file: None,
            arguments_for: ArgumentPolicy::default(),
            queue: 8192,
            batch: 512,
            flush_interval: Duration::from_millis(50),
        }
    }
}

// Unboxed: an allocation per call costs more than the wider queue slots.
#[allow(clippy::large_enum_variant)]
enum Message {
    Record(AuditRecord),
    /// Write everything queued, answer, and stop.
    Shutdown(oneshot::Sender<()>),
}

/// The real [`AuditSink`]: a bounded queue to one writer task.
pub struct Auditor {
    queue: mpsc::Sender<Message>,
    arguments_for: ArgumentPolicy,
    dropped: AtomicU64,
    not_stored: Arc<AtomicU64>,
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auditor")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// Opens the file (if any) and starts the writer task on the current
    /// Tokio runtime. `store` (if any) gets every batch after the file.
    pub async fn start(
        options: AuditorOptions,
        store: Option<Arc<dyn AuditStore>>,
    ) -> Result<Arc<Self>, AuditError> {
        let file = match &options.file {
            Some(path) => Some(
                open_private(path)
                    .await
                    .map_err(|source| AuditError::Open {
                        path: path.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let (queue, receiver) = mpsc::channel(options.queue.max(1));
        let not_stored = Arc::new(AtomicU64::new(0));
        let (to_store, store_task) = match store {
            Some(store) => {
                let (to_store, batches) = mpsc::channel(STORE_QUEUE);
                (
                    Some(to_store),
                    Some(tokio::spawn(feed_store(store, batches))),
                )
            }
            None => (None, None),
        };
        let writer = Writer {
            file,
            path: options.file.clone(),
            to_store,
            store_task,
            not_stored: not_stored.clone(),
            arguments_for: options.arguments_for.clone(),
            batch: options.batch.max(1),
            rest: options.flush_interval,
        };
        tokio::spawn(writer.run(receiver));
        Ok(Arc::new(Self {
            queue,
            arguments_for: options.arguments_for,
            dropped: AtomicU64::new(0),
            not_stored,
        }))
    }

    /// Records dropped so far because the queue was full or the auditor
    /// had shut down.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written to the file but not handed to the store, because
    /// the store was too far behind.
    pub fn not_stored(&self) -> u64 {
        self.not_stored.load(Ordering::Relaxed)
    }

    /// Writes everything queued so far (to the file and the store), then
    /// stops the writer; later records are dropped. A second call returns
    /// at once.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    fn count_drop(&self, why: &'static str) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Loud, but not one line per record in a flood: the 1st, 2nd, 4th…
        if n.is_power_of_two() {
            tracing::error!(
                dropped_total = n,
                why,
                "audit: a record was DROPPED; the audit trail is incomplete"
            );
        }
    }
}

impl AuditSink for Auditor {
    fn record(&self, record: AuditRecord) {
        match self.queue.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.count_drop("the queue is full"),
            Err(mpsc::error::TrySendError::Closed(_)) => self.count_drop("the auditor has stopped"),
        }
    }

    fn wants_arguments(&self, tool: &str) -> bool {
        self.arguments_for.records(tool)
    }
}

/// Opens `path` for appending, created 0600; an existing file that others
/// could read is made private.
async fn open_private(path: &Path) -> std::io::Result<tokio::fs::File> {
    use std::os::unix::fs::PermissionsExt as _;

    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .await?;
    let mode = file.metadata().await?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "audit: the audit file was readable by others; it is now 0600");
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .await?;
    }
    Ok(file)
}

/// The store's side: appends batches in order until the writer is done.
async fn feed_store(store: Arc<dyn AuditStore>, mut batches: mpsc::Receiver<Vec<AuditRecord>>) {
    while let Some(batch) = batches.recv().await {
        if let Err(e) = store.append(&batch).await {
            tracing::error!(error = %e, records = batch.len(), "audit: could not append records to the store (they are in the file)");
        }
    }
}

struct Writer {
    file: Option<tokio::fs::File>,
    path: Option<PathBuf>,
    to_store: Option<mpsc::Sender<Vec<AuditRecord>>>,
    store_task: Option<JoinHandle<()>>,
    not_stored: Arc<AtomicU64>,
    arguments_for: ArgumentPolicy,
    batch: usize,
    rest: Duration,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        let mut messages = Vec::with_capacity(self.batch);
        let mut records = Vec::with_capacity(self.batch);
        loop {
            let received = receiver.recv_many(&mut messages, self.batch).await;
            if received == 0 {
                // The auditor is gone and the queue is empty.
                self.finish_store().await;
                return;
            }
            let mut done = Vec::new();
            for message in messages.drain(..) {
                match message {
                    Message::Record(record) => records.push(record),
                    Message::Shutdown(answer) => {
                        receiver.close();
                        done.push(answer);
                    }
                }
            }
            if !done.is_empty() {
                // Closed: take what was queued before the close, then stop.
                while let Some(message) = receiver.recv().await {
                    match message {
                        Message::Record(record) => records.push(record),
                        Message::Shutdown(answer) => done.push(answer),
                    }
                }
            }
            while !records.is_empty() {
                let rest = records.split_off(records.len().min(self.batch));
                let batch = std::mem::replace(&mut records, rest);
                self.write(batch).await;
            }
            if !done.is_empty() {
                self.finish_store().await;
                for answer in done {
                    let _ = answer.send(());
                }
                return;
            }
            if received < self.batch {
                tokio::time::sleep(self.rest).await;
            }
        }
    }

    /// Lets the store task take what is queued for it, and waits for it.
    async fn finish_store(&mut self) {
        self.to_store = None;
        if let Some(task) = self.store_task.take() {
            let _ = task.await;
        }
    }

    async fn write(&mut self, mut records: Vec<AuditRecord>) {
        for record in records.iter_mut() {
            sanitize(record, &self.arguments_for);
        }
        if let Some(file) = &mut self.file {
            let mut lines = Vec::with_capacity(records.len() * 256);
            for record in records.iter() {
                // A record serialises (no map keys that are not strings);
                // should one ever fail, the others are still written.
                if serde_json::to_writer(&mut lines, record).is_ok() {
                    lines.push(b'\n');
                }
            }
            let written = async {
                file.write_all(&lines).await?;
                file.flush().await
            }
            .await;
            if let Err(e) = written {
                let path = self.path.as_deref().unwrap_or(Path::new(""));
                tracing::error!(path = %path.display(), error = %e, records = records.len(), "audit: could not append to the audit file");
            }
        }
        if let Some(to_store) = &self.to_store
            && let Err(mpsc::error::TrySendError::Full(batch)) = to_store.try_send(records)
        {
            let n = batch.len() as u64;
            let before = self.not_stored.fetch_add(n, Ordering::Relaxed);
            // Loud, but once per doubling, not once per batch.
            if (before + n).ilog2() != before.checked_ilog2().unwrap_or(u32::MAX) {
                tracing::error!(
                    not_stored_total = before + n,
                    "audit: the store is behind; records were NOT stored (they are in the file)"
                );
            }
        }
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
