//! The spool: where the request path leaves each call's [`LedgerRecord`] without waiting for a
//! database, and [`LedgerWriter`], which moves spooled records into a
//! [`LedgerStore`](super::LedgerStore) exactly once.
//!
//! # Files
//!
//! A spool is a directory holding:
//! - `spool.id`: the spool's identity (`sp-` and 32 hex digits), made once; the store records
//!   how far it has consumed each spool under this id, so a restart resumes where it stopped;
//! - `spool.lock`: locked (`flock`) while a process has the spool open, so two gateways never
//!   share one directory;
//! - `spool-NNNNNNNNNN.jsonl`: segments, one JSON record per line, written with `O_APPEND`.
//!   Each [`Spool::open`] starts a new segment, and a segment rolls to the next at about
//!   16 MiB. Segments the writer has consumed are deleted.
//!
//! # Offsets
//!
//! An offset names a byte in the spool as `segment << 32 | byte within the segment`, so it
//! grows across segments without knowing their sizes, and survives deleting the old ones.
//! Segments stay far below 4 GiB (they roll at 16 MiB; appends are refused past 3 GiB if a
//! roll keeps failing), and numbers below 2³¹, so every offset fits the store's `BIGINT`.
//!
//! # Durability and exactly once
//!
//! [`Spool::append`] serialises into a per-thread buffer and hands the whole line to the
//! kernel in one `write` call: once it returns, the line is in the page cache and survives the
//! process being killed (not a power cut). [`LedgerWriter`] reads lines after the offset the
//! store has recorded for the spool and appends them together with the new offset in one
//! transaction ([`LedgerStore::append`](super::LedgerStore::append)): whatever point a crash
//! hits, the next writer resumes from the last committed offset, so every line is stored
//! once.
//!
//! A line without its newline is either still being written (the writer waits for it) or was
//! torn by a crash mid-write; it is skipped only when nothing can extend it any more: it ends
//! a segment that is no longer written to (an older segment, and no append still in flight in
//! it). A complete line that is not a record is skipped and counted as rejected.
//!
//! # Bounds
//!
//! The spool holds at most about `max_bytes` not yet stored (concurrent appends may overshoot
//! by a line each): past that, [`Spool::append`] refuses at once with [`SpoolError::Full`] and
//! counts the drop, so a dead store costs the request path nothing but lost records.

mod reader;
mod writer;

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::LedgerRecord;
use crate::error::{StoreError, StoreResult, error_chain};

pub(crate) use reader::{Batch, Reader};
pub use writer::{LedgerHealth, LedgerWriter};

#[cfg(test)]
mod tests;

/// Roll to a new segment once the current one holds this much.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// After a failed roll, try again once this much more has been written.
const ROLL_RETRY_BYTES: u64 = 1 << 20;
/// Refuse appends to a segment this large (only reached when rolls keep failing), well
/// before its byte offsets would spill into the segment number.
const SEGMENT_HARD_LIMIT: u64 = 3 << 30;
/// The highest segment number, so offsets stay below 2⁶³.
const MAX_SEGMENT: u32 = (1 << 31) - 1;
/// A serialisation buffer kept per thread is shrunk back when a record made it larger.
const KEEP_BUFFER: usize = 64 << 10;

const ID_FILE: &str = "spool.id";
/// What to check when the spool's files cannot be made or read.
pub(crate) const FILES_HINT: &str =
    "check that weir may create, read and write files there, and that the disk has room";
const LOCK_FILE: &str = "spool.lock";

/// Why [`Spool::append`] did not keep a record (it was dropped, and counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// More than the spool's limit is waiting to be stored.
    #[error(
        "the usage spool holds {backlog_bytes} bytes not yet stored (limit {max_bytes}): the \
         record was dropped; check the ledger store's health in /status, or raise the limit"
    )]
    Full { backlog_bytes: u64, max_bytes: u64 },
    /// The line could not be written.
    #[error(
        "cannot write to the usage spool: {0}; the record was dropped: check the disk holding \
         the spool directory (space, permissions)"
    )]
    Write(String),
}

/// How a spool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// The most bytes waiting for the store before appends are refused.
    pub max_bytes: u64,
    /// Roll to a new segment once the current one holds this much ([`SEGMENT_BYTES`] unless
    /// a test wants many segments).
    pub segment_bytes: u64,
}

impl SpoolOptions {
    /// At most `max_bytes` waiting, segments of [`SEGMENT_BYTES`].
    pub fn new(max_bytes: u64) -> Self {
        SpoolOptions {
            max_bytes,
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// `segment << 32 | byte`.
pub(crate) fn join_offset(segment: u32, byte: u64) -> u64 {
    (u64::from(segment) << 32) | (byte & 0xffff_ffff)
}

/// The segment and byte an offset names.
pub(crate) fn split_offset(offset: u64) -> (u32, u64) {
    (
        u32::try_from(offset >> 32).unwrap_or(u32::MAX),
        offset & 0xffff_ffff,
    )
}

/// An append-only spool of ledger records in a directory. Cheap to clone: clones share the
/// files.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    id: String,
    max_bytes: u64,
    segment_bytes: u64,
    segments: Mutex<Segments>,
    /// Bytes in the spool's segments: those found at open plus those appended since.
    written: AtomicU64,
    /// Bytes the writer has moved into the store (or skipped), of those in `written`.
    consumed: AtomicU64,
    /// Records appended by this process.
    appended: AtomicU64,
    dropped: AtomicU64,
    has_error: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Holds the directory's lock for as long as the spool is open.
    _lock: File,
}

struct Segments {
    current: Arc<Segment>,
    /// Rolled segments of this process, until the writer has moved past them.
    retired: Vec<Arc<Segment>>,
}

struct Segment {
    number: u32,
    file: File,
    /// Bytes this process has written to it.
    len: AtomicU64,
    /// The length at which the next roll is tried.
    roll_at: AtomicU64,
    /// Appends in progress (between choosing this segment and their write returning).
    writers: AtomicUsize,
    /// Set (under the segments lock) when a newer segment replaced this one.
    sealed: AtomicBool,
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

impl Spool {
    /// Open the spool in `dir` (creating it owner-only if needed), keeping at most about
    /// `max_bytes` not yet stored. Fails with [`StoreError::Spool`] when the directory cannot
    /// be used, or when another process has it open.
    pub fn open(dir: impl AsRef<Path>, max_bytes: u64) -> StoreResult<Spool> {
        Spool::open_with(dir, SpoolOptions::new(max_bytes))
    }

    /// [`Spool::open`] with every option.
    pub fn open_with(dir: impl AsRef<Path>, options: SpoolOptions) -> StoreResult<Spool> {
        let SpoolOptions {
            max_bytes,
            segment_bytes,
        } = options;
        let segment_bytes = segment_bytes.clamp(1, SEGMENT_HARD_LIMIT / 2);
        let dir = dir.as_ref().to_path_buf();
        let fail = |cause: String| StoreError::Spool {
            dir: dir.display().to_string(),
            cause,
        };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(|e| fail(format!("cannot create it ({e}): {FILES_HINT}")))?;

        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| fail(format!("cannot open {LOCK_FILE} ({e}): {FILES_HINT}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(fail(
                    "another process has this spool open: give each gateway process its own \
                     spool directory"
                        .into(),
                ));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(fail(format!("cannot lock {LOCK_FILE} ({e}): {FILES_HINT}")));
            }
        }

        let id = read_or_create_id(&dir).map_err(&fail)?;
        let existing =
            list_segments(&dir).map_err(|e| fail(format!("cannot list it ({e}): {FILES_HINT}")))?;
        let on_disk: u64 = existing.iter().map(|(_, size)| size).sum();
        let next = existing.last().map_or(Some(1), |(n, _)| n.checked_add(1));
        let next = next.filter(|n| *n <= MAX_SEGMENT).ok_or_else(|| {
            fail("its segment numbers are exhausted: move the directory away once consumed".into())
        })?;
        let current = create_segment(&dir, next, segment_bytes)
            .map_err(|e| fail(format!("cannot create a segment ({e}): {FILES_HINT}")))?;
        Ok(Spool {
            inner: Arc::new(Inner {
                id,
                max_bytes,
                segment_bytes,
                segments: Mutex::new(Segments {
                    current: Arc::new(current),
                    retired: Vec::new(),
                }),
                written: AtomicU64::new(on_disk),
                consumed: AtomicU64::new(0),
                appended: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                has_error: AtomicBool::new(false),
                last_error: Mutex::new(None),
                _lock: lock,
                dir,
            }),
        })
    }

    /// Append one record as one line, with one `write` call. Never blocks on anything but
    /// the kernel's write to the page cache (and, once per segment, creating the next file).
    /// A refused record is counted in [`Spool::dropped`].
    pub fn append(&self, record: &LedgerRecord) -> Result<(), SpoolError> {
        let result = LINE
            .try_with(|line| match line.try_borrow_mut() {
                Ok(mut line) => {
                    let result = self.encode_and_write(&mut line, record);
                    if line.capacity() > KEEP_BUFFER {
                        line.clear();
                        line.shrink_to(KEEP_BUFFER);
                    }
                    result
                }
                // Only while the thread's storage is in use or being torn down.
                Err(_) => self.encode_and_write(&mut Vec::new(), record),
            })
            .unwrap_or_else(|_| self.encode_and_write(&mut Vec::new(), record));
        result.inspect_err(|e| {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            if let SpoolError::Write(cause) = e {
                self.set_error(cause.clone());
            }
        })
    }

    fn encode_and_write(
        &self,
        line: &mut Vec<u8>,
        record: &LedgerRecord,
    ) -> Result<(), SpoolError> {
        line.clear();
        // sonic-rs: a spooled line is written on every call's path; it reads and writes the
        // same JSON as serde_json (the tests and the spool's replay read it back), in about
        // half the instructions.
        sonic_rs::to_writer(&mut *line, record)
            .map_err(|e| SpoolError::Write(format!("cannot encode the record: {e}")))?;
        line.push(b'\n');
        self.write_line(line)
    }

    fn write_line(&self, line: &[u8]) -> Result<(), SpoolError> {
        let inner = &*self.inner;
        let n = line.len() as u64;
        let backlog = self.backlog_bytes();
        if backlog.saturating_add(n) > inner.max_bytes {
            return Err(SpoolError::Full {
                backlog_bytes: backlog,
                max_bytes: inner.max_bytes,
            });
        }
        loop {
            let segment = Arc::clone(&self.segments().current);
            segment.writers.fetch_add(1, Ordering::SeqCst);
            if segment.sealed.load(Ordering::SeqCst) {
                // Rolled since we looked: the new segment is already current.
                segment.writers.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            if segment.len.load(Ordering::Relaxed) >= SEGMENT_HARD_LIMIT {
                segment.writers.fetch_sub(1, Ordering::SeqCst);
                return Err(SpoolError::Write(
                    "the current segment cannot roll and is full".into(),
                ));
            }
            // One write: the kernel appends the whole line at the end of the file at once
            // (a signal before anything is written makes it start again).
            let result = loop {
                match (&segment.file).write(line) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let written = match &result {
                Ok(k) if *k < line.len() => {
                    // Only on a full disk: end the torn line so the next one stays whole (the
                    // writer skips the fragment as a rejected line).
                    let _ = (&segment.file).write(b"\n");
                    *k as u64 + 1
                }
                Ok(k) => *k as u64,
                Err(_) => 0,
            };
            let len = segment.len.fetch_add(written, Ordering::Relaxed) + written;
            inner.written.fetch_add(written, Ordering::Relaxed);
            segment.writers.fetch_sub(1, Ordering::SeqCst);
            if len >= segment.roll_at.load(Ordering::Relaxed) {
                self.roll(&segment);
            }
            return match result {
                Ok(k) if k == line.len() => {
                    inner.appended.fetch_add(1, Ordering::Relaxed);
                    if inner.has_error.load(Ordering::Relaxed) {
                        self.clear_error();
                    }
                    Ok(())
                }
                Ok(k) => Err(SpoolError::Write(format!(
                    "only {k} of {} bytes were written",
                    line.len()
                ))),
                Err(e) => Err(SpoolError::Write(e.to_string())),
            };
        }
    }

    /// Replace `segment` (if still current) by the next one.
    fn roll(&self, segment: &Arc<Segment>) {
        let mut segments = self.segments();
        if !Arc::ptr_eq(&segments.current, segment) {
            return;
        }
        let next = segment.number.checked_add(1).filter(|n| *n <= MAX_SEGMENT);
        let created = match next {
            Some(n) => create_segment(&self.inner.dir, n, self.inner.segment_bytes),
            None => Err(io::Error::other("segment numbers are exhausted")),
        };
        match created {
            Ok(new) => {
                let old = std::mem::replace(&mut segments.current, Arc::new(new));
                // Sealed under the lock, before anyone can see the new segment as current
                // and the old one as finished (see `is_finished`).
                old.sealed.store(true, Ordering::SeqCst);
                segments.retired.push(old);
            }
            Err(e) => {
                segment
                    .roll_at
                    .fetch_add(ROLL_RETRY_BYTES, Ordering::Relaxed);
                drop(segments);
                let cause = format!("cannot start a new spool segment: {e}");
                tracing::warn!(dir = %self.inner.dir.display(), "{cause}");
                self.set_error(cause);
            }
        }
    }

    fn segments(&self) -> MutexGuard<'_, Segments> {
        self.inner
            .segments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_error(&self, cause: String) {
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(cause);
        self.inner.has_error.store(true, Ordering::Relaxed);
    }

    fn clear_error(&self) {
        self.inner.has_error.store(false, Ordering::Relaxed);
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The spool's stable identity (kept in `spool.id` in its directory).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The most bytes [`Spool::append`] lets wait for the store.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Bytes spooled and not yet stored. Bytes left by an earlier process count until a
    /// [`LedgerWriter`] has started and learnt from the store how far they were consumed.
    pub fn backlog_bytes(&self) -> u64 {
        let written = self.inner.written.load(Ordering::Relaxed);
        written.saturating_sub(self.inner.consumed.load(Ordering::Relaxed))
    }

    /// Records this process appended.
    pub fn appended(&self) -> u64 {
        self.inner.appended.load(Ordering::Relaxed)
    }

    /// Records refused since the spool was opened (full, or a failed write).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The last write failure, until an append succeeds again.
    pub fn last_error(&self) -> Option<String> {
        if !self.inner.has_error.load(Ordering::Relaxed) {
            return None;
        }
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The number of the segment appends go to.
    pub(crate) fn current_segment(&self) -> u32 {
        self.segments().current.number
    }

    /// Whether segment `number` can grow no more: an older one than the current, with no
    /// append in flight. An append counts itself in `writers` before it checks `sealed`, and
    /// a roll seals before it makes the new segment current, so when this sees the segment
    /// sealed and idle, no append can still write to it.
    pub(crate) fn is_finished(&self, number: u32) -> bool {
        let segments = self.segments();
        number < segments.current.number
            && segments
                .retired
                .iter()
                .filter(|s| s.number == number)
                .all(|s| s.writers.load(Ordering::SeqCst) == 0)
    }

    /// Note that `bytes` more of the spool were stored or skipped.
    pub(crate) fn note_consumed(&self, bytes: u64) {
        self.inner.consumed.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The path of segment `number`.
    pub(crate) fn segment_path(&self, number: u32) -> PathBuf {
        segment_path(&self.inner.dir, number)
    }

    /// The segments on disk, oldest first, with their sizes.
    pub(crate) fn list_segments(&self) -> io::Result<Vec<(u32, u64)>> {
        list_segments(&self.inner.dir)
    }

    /// Delete the segments before `number` (all consumed) and forget the retired ones.
    pub(crate) fn remove_segments_before(&self, number: u32) -> io::Result<()> {
        self.segments().retired.retain(|s| s.number >= number);
        for (n, _) in self.list_segments()? {
            if n < number {
                match fs::remove_file(self.segment_path(n)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.dir)
            .field("id", &self.inner.id)
            .field("max_bytes", &self.inner.max_bytes)
            .field("backlog_bytes", &self.backlog_bytes())
            .finish_non_exhaustive()
    }
}

fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("spool-{number:010}.jsonl"))
}

fn create_segment(dir: &Path, number: u32, roll_at: u64) -> io::Result<Segment> {
    let mut options = OpenOptions::new();
    options.append(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(segment_path(dir, number))?;
    Ok(Segment {
        number,
        file,
        len: AtomicU64::new(0),
        roll_at: AtomicU64::new(roll_at),
        writers: AtomicUsize::new(0),
        sealed: AtomicBool::new(false),
    })
}

fn list_segments(dir: &Path) -> io::Result<Vec<(u32, u64)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("spool-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        segments.push((number, entry.metadata()?.len()));
    }
    segments.sort_unstable();
    Ok(segments)
}

/// The id in `spool.id`, or a new one written there (through a rename, so a crash never
/// leaves a half-written id).
fn read_or_create_id(dir: &Path) -> Result<String, String> {
    let path = dir.join(ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) if is_valid_id(text.trim()) => return Ok(text.trim().to_string()),
        Ok(_) => {
            return Err(format!(
                "{ID_FILE} is not a spool id: restore it, or remove it if no store has consumed \
                 this spool yet"
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {ID_FILE} ({e}): {FILES_HINT}")),
    }
    let mut random = [0u8; 16];
    crate::secret::fill_random(&mut random).map_err(|e| e.to_string())?;
    let mut id = String::from("sp-");
    for b in random {
        id.push_str(&format!("{b:02x}"));
    }
    let temp = dir.join(format!("{ID_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(id.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {ID_FILE} ({}): {FILES_HINT}", error_chain(&e)))?;
    Ok(id)
}

fn is_valid_id(id: &str) -> bool {
    id.strip_prefix("sp-")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}
