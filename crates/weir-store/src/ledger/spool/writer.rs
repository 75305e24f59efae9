//! [`LedgerWriter`]: the task moving spooled records into the store, and [`LedgerHealth`], what
//! it reports for the gateway's status.
//!
//! Each round reads complete lines after the writer's position and appends them, with the
//! offset after the last one, in one store transaction. The position moves only once the
//! store has said yes; after any failure the writer asks the store where the spool stands
//! before reading again, so a commit that succeeded but was reported lost, or a batch stored
//! record by record up to a failure, is never stored twice. Failures are retried with an
//! exponential backoff (100 ms doubling to 30 s); the spool keeps the records meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Batch, FILES_HINT, Reader, Spool, join_offset, split_offset};
use crate::error::{StoreError, StoreResult, error_chain};
use crate::ledger::{LedgerStore, SpoolRange};

/// The first retry delay after a failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Conflicts with the store's offset tolerated in a row before a drain gives up (each makes
/// the writer ask the store where the spool stands and read again).
const MAX_CONFLICTS: usize = 3;
/// The record size assumed for the backlog estimate before any was stored.
const ASSUMED_RECORD_BYTES: u64 = 512;

/// The ledger's state for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerHealth {
    /// Bytes spooled and not yet stored.
    pub backlog_bytes: u64,
    /// Records spooled and not yet stored, estimated from the average record size.
    pub backlog_records_estimate: u64,
    /// Records the spool refused (full, or a failed write) since it was opened.
    pub dropped: u64,
    /// Records this writer has stored.
    pub written: u64,
    /// Spooled lines skipped: not records, torn by a crash, or refused by the store.
    pub rejected: u64,
    /// The current failure (storing, or writing the spool), cleared once it works again.
    pub last_error: Option<String>,
    /// The store: `sqlite /path` or `postgres host:port/db`.
    pub store: String,
}

enum Command {
    Flush(oneshot::Sender<StoreResult<()>>),
}

struct Shared {
    spool: Spool,
    store: String,
    written: AtomicU64,
    /// Bytes of the records counted in `written`, for the average record size.
    written_bytes: AtomicU64,
    rejected: AtomicU64,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, error: &StoreError) {
        tracing::warn!(spool = %self.spool.id(), store = %self.store, %error, "usage ledger write failed");
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
    }

    fn recover(&self) {
        let mut error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if error.take().is_some() {
            tracing::info!(spool = %self.spool.id(), store = %self.store, "usage ledger writes work again");
        }
    }
}

/// The handle of the task moving a [`Spool`]'s records into a [`LedgerStore`].
///
/// Dropping the handle lets the task drain what is readable once more and stop;
/// [`LedgerWriter::shutdown`] does the same and waits for it.
pub struct LedgerWriter {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl LedgerWriter {
    /// Start moving `spool`'s records into `store`, up to `batch` per transaction, looking for
    /// new ones every `every` (and at once on [`flush`](Self::flush)). Resumes from the offset
    /// the store has recorded for [`Spool::id`], replaying whatever a crash left. Must be
    /// called inside a tokio runtime.
    pub fn start(
        spool: Spool,
        store: Arc<dyn LedgerStore>,
        batch: usize,
        every: Duration,
    ) -> StoreResult<LedgerWriter> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| StoreError::Spool {
            dir: spool.dir().display().to_string(),
            cause: format!(
                "the ledger writer needs a tokio runtime to run in ({e}): start it from inside \
                 the gateway's runtime"
            ),
        })?;
        let shared = Arc::new(Shared {
            store: store.describe(),
            spool,
            written: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            error: Mutex::new(None),
        });
        let (commands, receiver) = mpsc::channel(16);
        let task = Task {
            shared: Arc::clone(&shared),
            store,
            batch: batch.max(1),
            reader: None,
            resync: false,
        };
        // At least a millisecond between looks, so a zero never spins.
        let every = every.max(Duration::from_millis(1));
        let task = runtime.spawn(task.run(every, receiver));
        Ok(LedgerWriter {
            shared,
            commands,
            task,
        })
    }

    /// Store everything spooled before this call (what a concurrent append adds may or may
    /// not be included). Fails with the store's error when the store refuses; the records
    /// stay spooled and the writer keeps retrying.
    pub async fn flush(&self) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Spool {
            dir: self.shared.spool.dir().display().to_string(),
            cause: "the ledger writer's task has stopped unexpectedly; the records stay \
                    spooled: restart weir to store them"
                .into(),
        };
        self.commands
            .send(Command::Flush(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Flush, then stop the task and wait for it.
    pub async fn shutdown(self) -> StoreResult<()> {
        let flushed = self.flush().await;
        drop(self.commands);
        let _ = self.task.await;
        flushed
    }

    /// Stop the task at once, as a crash would (mid-batch, or even mid-commit), and wait until
    /// it is gone: what is spooled and not yet committed stays for the next writer on the
    /// same spool.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// The ledger's state for `/status`.
    pub fn health(&self) -> LedgerHealth {
        let spool = &self.shared.spool;
        let backlog_bytes = spool.backlog_bytes();
        let written = self.shared.written.load(Ordering::Relaxed);
        let average = self
            .shared
            .written_bytes
            .load(Ordering::Relaxed)
            .checked_div(written)
            .filter(|a| *a > 0)
            .unwrap_or(ASSUMED_RECORD_BYTES);
        let error = self
            .shared
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        LedgerHealth {
            backlog_bytes,
            backlog_records_estimate: backlog_bytes.div_ceil(average),
            dropped: spool.dropped(),
            written,
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            last_error: error.or_else(|| spool.last_error()),
            store: self.shared.store.clone(),
        }
    }

    /// The spool this writer drains.
    pub fn spool(&self) -> &Spool {
        &self.shared.spool
    }
}

impl std::fmt::Debug for LedgerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter")
            .field("spool", &self.shared.spool)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

/// The writer's task state.
struct Task {
    shared: Arc<Shared>,
    store: Arc<dyn LedgerStore>,
    batch: usize,
    /// Set once the store has said where the spool stands.
    reader: Option<Arc<Mutex<Reader>>>,
    /// Ask the store where the spool stands before reading again (after a failure).
    resync: bool,
}

impl Task {
    async fn run(mut self, every: Duration, mut commands: mpsc::Receiver<Command>) {
        let mut backoff = BACKOFF_START;
        let mut delay = Duration::ZERO;
        loop {
            let result = tokio::select! {
                () = tokio::time::sleep(delay) => self.drain().await,
                command = commands.recv() => match command {
                    Some(Command::Flush(reply)) => {
                        let result = self.drain().await;
                        let _ = reply.send(result.clone());
                        result
                    }
                    None => {
                        let _ = self.drain().await;
                        return;
                    }
                },
            };
            delay = match result {
                Ok(()) => {
                    self.shared.recover();
                    backoff = BACKOFF_START;
                    every
                }
                Err(e) => {
                    self.shared.fail(&e);
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    wait
                }
            };
        }
    }

    /// Store what is readable now, batch by batch, stopping once caught up or past what was
    /// spooled when it began (so a steady stream of appends cannot keep a flush waiting).
    async fn drain(&mut self) -> StoreResult<()> {
        let spool = self.shared.spool.clone();
        let target = spool.inner.written.load(Ordering::Relaxed);
        let mut conflicts = 0;
        loop {
            let reader = self.reader().await?;
            let batch_size = self.batch;
            let shared_reader = Arc::clone(&reader);
            let batch = self
                .blocking(move || {
                    shared_reader
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .next_batch(batch_size)
                })
                .await?;
            let start = lock(&reader).position;
            if batch.end == start {
                return Ok(());
            }
            let full = batch.records.len() >= self.batch;
            match self.commit(&batch, start).await {
                Ok(()) => {}
                // Out of step with the store (another writer, or a commit reported lost
                // after part of a batch went in): ask it where the spool stands, read again.
                Err(StoreError::Conflict(cause)) if conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    tracing::debug!(spool = %spool.id(), %cause, "usage spool out of step with the store: reading again");
                    continue;
                }
                Err(e) => return Err(e),
            }
            conflicts = 0;
            self.moved(&reader, start, batch.end, batch.bytes).await;
            if !full || spool.inner.consumed.load(Ordering::Relaxed) >= target {
                return Ok(());
            }
        }
    }

    /// Append one batch with its end offset; a batch the store refuses as invalid is stored
    /// record by record, skipping the records it refuses.
    async fn commit(&mut self, batch: &Batch, start: u64) -> StoreResult<()> {
        let id = self.shared.spool.id().to_string();
        let skipped = batch.rejected + batch.torn;
        let range = SpoolRange::new(&id, start, batch.end);
        match self.store.append(&batch.records, Some(range)).await {
            Ok(()) => {
                let shared = &self.shared;
                shared
                    .written
                    .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                shared
                    .written_bytes
                    .fetch_add(batch.bytes, Ordering::Relaxed);
                shared.rejected.fetch_add(skipped, Ordering::Relaxed);
                return Ok(());
            }
            Err(StoreError::InvalidData(_)) => {}
            Err(e) => {
                self.resync = true;
                return Err(e);
            }
        }
        let mut stored = 0;
        let mut refused = 0;
        let mut from = start;
        for (record, end) in batch.records.iter().zip(&batch.ends) {
            let single = std::slice::from_ref(record);
            let range = SpoolRange::new(&id, from, *end);
            from = *end;
            let result = match self.store.append(single, Some(range)).await {
                Ok(()) => {
                    stored += 1;
                    Ok(())
                }
                Err(StoreError::InvalidData(cause)) => {
                    refused += 1;
                    tracing::warn!(
                        spool = %id,
                        request_id = %record.request_id,
                        %cause,
                        "the store refused a usage record: skipping it"
                    );
                    self.store.append(&[], Some(range)).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                self.resync = true;
                self.shared.written.fetch_add(stored, Ordering::Relaxed);
                return Err(e);
            }
        }
        if from < batch.end {
            let rest = SpoolRange::new(&id, from, batch.end);
            if let Err(e) = self.store.append(&[], Some(rest)).await {
                self.resync = true;
                self.shared.written.fetch_add(stored, Ordering::Relaxed);
                return Err(e);
            }
        }
        let shared = &self.shared;
        shared.written.fetch_add(stored, Ordering::Relaxed);
        shared
            .rejected
            .fetch_add(skipped + refused, Ordering::Relaxed);
        Ok(())
    }

    /// The position moved from `start` to `end` over `bytes` of the spool: note it, and
    /// delete the segments left behind.
    async fn moved(&mut self, reader: &Arc<Mutex<Reader>>, start: u64, end: u64, bytes: u64) {
        lock(reader).position = end;
        self.shared.spool.note_consumed(bytes);
        let (from, to) = (split_offset(start).0, split_offset(end).0);
        if to > from {
            let spool = self.shared.spool.clone();
            let removed = self
                .blocking(move || spool.remove_segments_before(to))
                .await;
            if let Err(e) = removed {
                tracing::warn!(spool = %self.shared.spool.id(), error = %e, "cannot delete consumed spool segments");
            }
        }
    }

    /// The reader, after asking the store where the spool stands if that is not known (at
    /// start, and after a failure).
    async fn reader(&mut self) -> StoreResult<Arc<Mutex<Reader>>> {
        let spool = self.shared.spool.clone();
        if let Some(reader) = &self.reader
            && !self.resync
        {
            return Ok(Arc::clone(reader));
        }
        let stored = self.store.spool_offset(spool.id()).await?;
        // The segment appends go to was made by this process's open: no store can have read
        // it before this writer first starts.
        if self.reader.is_none() && split_offset(stored).0 >= spool.current_segment() {
            return Err(StoreError::Conflict(format!(
                "the store has consumed the spool {} past the files in {}: the directory was \
                 restored from an older copy or copied from another gateway; stop weir, and \
                 either move the directory away or delete its spool.id (its records are then \
                 stored again under a new id)",
                spool.id(),
                spool.dir().display()
            )));
        }
        match self.reader.clone() {
            Some(reader) => {
                let position = lock(&reader).position;
                if stored != position {
                    let between = self
                        .blocking({
                            let spool = spool.clone();
                            move || bytes_between(&spool, position, stored)
                        })
                        .await?;
                    self.moved(&reader, position, stored, between).await;
                }
                self.resync = false;
                Ok(reader)
            }
            None => {
                let before = self
                    .blocking({
                        let spool = spool.clone();
                        move || bytes_between(&spool, 0, stored)
                    })
                    .await?;
                let reader = Arc::new(Mutex::new(Reader::new(spool, 0)));
                self.moved(&reader, 0, stored, before).await;
                self.reader = Some(Arc::clone(&reader));
                self.resync = false;
                Ok(reader)
            }
        }
    }

    /// Run spool file work on the blocking pool, as a store result.
    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> std::io::Result<T> + Send + 'static,
    {
        let dir = || self.shared.spool.dir().display().to_string();
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Spool {
                dir: dir(),
                cause: format!(
                    "reading it stopped unexpectedly ({}); the records stay spooled and the \
                     writer tries again",
                    error_chain(&e)
                ),
            })?
            .map_err(|e| StoreError::Spool {
                dir: dir(),
                cause: format!("cannot read it ({}): {FILES_HINT}", error_chain(&e)),
            })
    }
}

fn lock(reader: &Mutex<Reader>) -> std::sync::MutexGuard<'_, Reader> {
    reader.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes on disk in `[from, to)` (deleted segments count nothing).
fn bytes_between(spool: &Spool, from: u64, to: u64) -> std::io::Result<u64> {
    Ok(spool
        .list_segments()?
        .into_iter()
        .map(|(number, size)| {
            let lo = from.max(join_offset(number, 0));
            let hi = to.min(join_offset(number, size));
            hi.saturating_sub(lo)
        })
        .sum())
}
