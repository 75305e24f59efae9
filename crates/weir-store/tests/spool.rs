//! The spool and its writer against real stores: concurrent appends stored exactly once,
//! crashes (the writer aborted mid-way, a commit reported lost) replayed exactly once, torn
//! and foreign lines skipped, records the store refuses skipped alone, a full spool refusing,
//! and what the writer reports for `/status`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use weir_store::ledger::spool::SEGMENT_BYTES;
use weir_store::{
    LedgerRecord, LedgerStore, LedgerWriter, Spend, SpendFilter, Spool, SpoolError, SpoolOptions,
    SpoolRange, StoreError, StoreLocation, StoreResult, UsageQuery, UsageRow,
};
use weir_test_support::postgres::PostgresServer;

/// A temporary directory (a spool and a SQLite file), removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weir-spool-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Temp(dir)
    }

    fn spool_dir(&self) -> PathBuf {
        self.0.join("spool")
    }

    fn sqlite(&self) -> StoreLocation {
        StoreLocation::Sqlite(self.0.join("weir.db"))
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn postgres(name: &str) -> Option<StoreLocation> {
    let server = PostgresServer::shared().expect("start the shared postgres server")?;
    Some(StoreLocation::Postgres(
        server.create_unique_database(name).expect("fresh database"),
    ))
}

async fn ledger(location: &StoreLocation) -> Arc<dyn LedgerStore> {
    weir_store::open_store(location).await.expect("open").ledger
}

fn record(request_id: &str) -> LedgerRecord {
    LedgerRecord {
        at_ms: 1_793_836_800_000,
        request_id: request_id.into(),
        key_id: Some("wk_1".into()),
        user: Some("alice".into()),
        team: None,
        project: None,
        tags: vec![("env".into(), "test".into())],
        operation: "chat".into(),
        model: "gpt-4o".into(),
        provider: Some("openai".into()),
        upstream_model: Some("gpt-4o-2024-08-06".into()),
        status: 200,
        outcome: "success".into(),
        error_kind: None,
        attempts: 1,
        cache: "miss".into(),
        input_tokens: 120,
        output_tokens: 30,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        tokens_estimated: false,
        cost_usd: Some(Decimal::new(75, 9)),
        saved_usd: None,
        latency_us: 250_000,
        upstream_us: Some(240_000),
        first_token_us: None,
        prompt_fingerprint: Some("fp".into()),
    }
}

/// Open a spool, waiting while a just-aborted writer's blocking read still holds the old one
/// (as a new process would wait for the old one to be gone).
async fn reopen(dir: &Path, options: SpoolOptions) -> Spool {
    for _ in 0..100 {
        match Spool::open_with(dir, options) {
            Ok(spool) => return spool,
            Err(e) if e.to_string().contains("another process") => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the spool stayed locked");
}

fn options(max_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        max_bytes,
        segment_bytes: SEGMENT_BYTES,
    }
}

/// How many times each request id is stored.
async fn stored_ids(store: &dyn LedgerStore) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for r in store.records(i64::MIN, i64::MAX, usize::MAX).await.unwrap() {
        *ids.entry(r.request_id).or_insert(0) += 1;
    }
    ids
}

fn assert_each_once(ids: &HashMap<String, usize>, expected: impl IntoIterator<Item = String>) {
    let mut n = 0;
    for id in expected {
        assert_eq!(ids.get(&id), Some(&1), "{id}");
        n += 1;
    }
    assert_eq!(ids.len(), n, "nothing else stored");
}

async fn eight_threads_once_each(location: StoreLocation, temp: &Temp) {
    let store = ledger(&location).await;
    // Small segments: many rolls while eight threads append.
    let spool = Spool::open_with(
        temp.spool_dir(),
        SpoolOptions {
            max_bytes: u64::MAX,
            segment_bytes: 256 << 10,
        },
    )
    .unwrap();
    let writer = LedgerWriter::start(
        spool.clone(),
        Arc::clone(&store),
        500,
        Duration::from_millis(5),
    )
    .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    spool.append(&record(&format!("t{t}-{i}"))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    writer.flush().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 8000);
    let ids = stored_ids(&*store).await;
    assert_each_once(
        &ids,
        (0..8).flat_map(|t| (0..1000).map(move |i| format!("t{t}-{i}"))),
    );
    let health = writer.health();
    assert_eq!(health.backlog_bytes, 0, "{health:?}");
    assert_eq!(health.backlog_records_estimate, 0);
    assert_eq!(
        (health.written, health.dropped, health.rejected),
        (8000, 0, 0)
    );
    assert_eq!(health.last_error, None);
    assert_eq!(health.store, store.describe());
    // Consumed segments are gone: only the one being written remains.
    let segments = std::fs::read_dir(temp.spool_dir())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".jsonl")
        })
        .count();
    assert_eq!(segments, 1);
    writer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_eight_threads_once_each() {
    let temp = Temp::new("threads");
    eight_threads_once_each(temp.sqlite(), &temp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_eight_threads_once_each() {
    let Some(location) = postgres("spool_threads") else {
        eprintln!("postgres not installed: skipping");
        return;
    };
    let temp = Temp::new("threads-pg");
    eight_threads_once_each(location, &temp).await;
}

async fn resume_after_a_crash(location: StoreLocation, temp: &Temp) {
    let store = ledger(&location).await;
    let dir = temp.spool_dir();
    let spool = Spool::open_with(&dir, options(u64::MAX)).unwrap();
    let id = spool.id().to_string();
    for i in 0..300 {
        spool.append(&record(&format!("a{i}"))).unwrap();
    }
    // Stored up to here...
    let writer = LedgerWriter::start(
        spool.clone(),
        Arc::clone(&store),
        64,
        Duration::from_secs(3600),
    )
    .unwrap();
    writer.flush().await.unwrap();
    // ... then more is spooled, and the process dies before the writer looks again.
    for i in 0..300 {
        spool.append(&record(&format!("b{i}"))).unwrap();
    }
    writer.abort().await;
    drop(spool);
    assert_eq!(store.count().await.unwrap(), 300);

    let spool = reopen(&dir, options(u64::MAX)).await;
    assert_eq!(spool.id(), id, "the same spool");
    assert!(
        spool.backlog_bytes() > 0,
        "left-over bytes count until the writer starts"
    );
    for i in 0..10 {
        spool.append(&record(&format!("c{i}"))).unwrap();
    }
    let writer =
        LedgerWriter::start(spool, Arc::clone(&store), 64, Duration::from_secs(3600)).unwrap();
    writer.flush().await.unwrap();
    let ids = stored_ids(&*store).await;
    assert_each_once(
        &ids,
        (0..300)
            .map(|i| format!("a{i}"))
            .chain((0..300).map(|i| format!("b{i}")))
            .chain((0..10).map(|i| format!("c{i}"))),
    );
    assert_eq!(writer.health().backlog_bytes, 0);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn sqlite_resume_after_a_crash() {
    let temp = Temp::new("crash");
    resume_after_a_crash(temp.sqlite(), &temp).await;
}

#[tokio::test]
async fn postgres_resume_after_a_crash() {
    let Some(location) = postgres("spool_crash") else {
        eprintln!("postgres not installed: skipping");
        return;
    };
    let temp = Temp::new("crash-pg");
    resume_after_a_crash(location, &temp).await;
}

/// Aborts writers at arbitrary points (mid-read, mid-commit) while appends go on; a last
/// writer then stores everything, each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_writers_never_lose_or_repeat() {
    let temp = Temp::new("aborts");
    let store = ledger(&temp.sqlite()).await;
    let dir = temp.spool_dir();
    let small = SpoolOptions {
        max_bytes: u64::MAX,
        segment_bytes: 16 << 10,
    };
    let mut spool = Spool::open_with(&dir, small).unwrap();
    let mut expected = Vec::new();
    for round in 0..8u64 {
        let writer = LedgerWriter::start(
            spool.clone(),
            Arc::clone(&store),
            7,
            Duration::from_millis(1),
        )
        .unwrap();
        for i in 0..200 {
            let id = format!("r{round}-{i}");
            spool.append(&record(&id)).unwrap();
            expected.push(id);
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        writer.abort().await;
        drop(spool);
        spool = reopen(&dir, small).await;
    }
    let writer =
        LedgerWriter::start(spool, Arc::clone(&store), 100, Duration::from_secs(3600)).unwrap();
    writer.flush().await.unwrap();
    assert_each_once(&stored_ids(&*store).await, expected);
    writer.shutdown().await.unwrap();
}

/// A store that fails on demand: before committing, or after (the commit happened but the
/// writer is told it failed, as when a connection drops on the way back).
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn LedgerStore>,
    fail_before: AtomicBool,
    fail_after: AtomicBool,
}

impl Flaky {
    fn new(inner: Arc<dyn LedgerStore>) -> Arc<Self> {
        Arc::new(Flaky {
            inner,
            fail_before: AtomicBool::new(false),
            fail_after: AtomicBool::new(false),
        })
    }

    fn lost() -> StoreError {
        StoreError::Query {
            operation: "appending usage records",
            cause: "connection reset".into(),
        }
    }
}

#[async_trait]
impl LedgerStore for Flaky {
    async fn append(
        &self,
        records: &[LedgerRecord],
        spool: Option<SpoolRange<'_>>,
    ) -> StoreResult<()> {
        if self.fail_before.load(Ordering::Relaxed) {
            return Err(Flaky::lost());
        }
        self.inner.append(records, spool).await?;
        if self.fail_after.load(Ordering::Relaxed) {
            return Err(Flaky::lost());
        }
        Ok(())
    }
    async fn spool_offset(&self, spool_id: &str) -> StoreResult<u64> {
        self.inner.spool_offset(spool_id).await
    }
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        self.inner.usage(query).await
    }
    async fn spend(&self, filter: &SpendFilter, from_ms: i64, to_ms: i64) -> StoreResult<Spend> {
        self.inner.spend(filter, from_ms, to_ms).await
    }
    async fn savings(&self, from_ms: i64, to_ms: i64) -> StoreResult<weir_store::Savings> {
        self.inner.savings(from_ms, to_ms).await
    }
    async fn records(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<LedgerRecord>> {
        self.inner.records(from_ms, to_ms, limit).await
    }
    async fn delete_before(&self, ms: i64) -> StoreResult<u64> {
        self.inner.delete_before(ms).await
    }
    async fn roll_up_days_before(&self, ms: i64) -> StoreResult<u64> {
        self.inner.roll_up_days_before(ms).await
    }
    async fn count(&self) -> StoreResult<u64> {
        self.inner.count().await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test]
async fn failed_and_lost_commits_are_retried_once() {
    let temp = Temp::new("flaky");
    let real = ledger(&temp.sqlite()).await;
    let flaky = Flaky::new(Arc::clone(&real));
    let spool = Spool::open(temp.spool_dir(), u64::MAX).unwrap();
    let writer = LedgerWriter::start(
        spool.clone(),
        flaky.clone() as Arc<dyn LedgerStore>,
        10,
        Duration::from_secs(3600),
    )
    .unwrap();
    for i in 0..25 {
        spool.append(&record(&format!("a{i}"))).unwrap();
    }

    // The store is down: nothing stored, the error shown, the records kept.
    flaky.fail_before.store(true, Ordering::Relaxed);
    let err = writer.flush().await.unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let health = writer.health();
    assert!(
        health
            .last_error
            .as_deref()
            .unwrap()
            .contains("connection reset")
    );
    assert!(health.backlog_bytes > 0 && health.backlog_records_estimate > 0);
    assert_eq!(real.count().await.unwrap(), 0);

    // The store commits but the answer is lost: the writer asks where the spool stands
    // before trying again, and stores nothing twice.
    flaky.fail_before.store(false, Ordering::Relaxed);
    flaky.fail_after.store(true, Ordering::Relaxed);
    assert!(writer.flush().await.is_err());
    assert_eq!(real.count().await.unwrap(), 10, "the first batch went in");
    flaky.fail_after.store(false, Ordering::Relaxed);
    writer.flush().await.unwrap();
    assert_each_once(&stored_ids(&*real).await, (0..25).map(|i| format!("a{i}")));
    let health = writer.health();
    assert_eq!(health.last_error, None, "cleared once it works again");
    assert_eq!(health.backlog_bytes, 0);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn records_the_store_refuses_are_skipped_alone() {
    let temp = Temp::new("refused");
    let store = ledger(&temp.sqlite()).await;
    let spool = Spool::open(temp.spool_dir(), u64::MAX).unwrap();
    for i in 0..5 {
        let mut r = record(&format!("r{i}"));
        if i == 2 {
            // Beyond what SQLite's picodollars hold.
            r.cost_usd = Some(Decimal::new(10_000_000, 0));
        }
        spool.append(&r).unwrap();
    }
    let writer = LedgerWriter::start(
        spool.clone(),
        Arc::clone(&store),
        100,
        Duration::from_secs(3600),
    )
    .unwrap();
    writer.flush().await.unwrap();
    let ids = stored_ids(&*store).await;
    assert_each_once(&ids, ["r0", "r1", "r3", "r4"].map(String::from));
    let health = writer.health();
    assert_eq!(
        (health.written, health.rejected, health.backlog_bytes),
        (4, 1, 0)
    );
    // Appending more later goes on from after the refused record.
    spool.append(&record("r5")).unwrap();
    writer.flush().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 5);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn torn_and_foreign_lines_are_skipped_and_counted() {
    let temp = Temp::new("torn");
    let store = ledger(&temp.sqlite()).await;
    let dir = temp.spool_dir();
    let spool = Spool::open(&dir, u64::MAX).unwrap();
    spool.append(&record("first")).unwrap();
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(b"{\"not\": \"a record\"}\n").unwrap();
    spool.append(&record("second")).unwrap();
    // The process dies halfway through writing a line.
    file.write_all(br#"{"at_ms":1793836800000,"request_id":"tor"#)
        .unwrap();
    drop(file);
    drop(spool);

    let spool = Spool::open(&dir, u64::MAX).unwrap();
    spool.append(&record("third")).unwrap();
    let writer =
        LedgerWriter::start(spool, Arc::clone(&store), 100, Duration::from_secs(3600)).unwrap();
    writer.flush().await.unwrap();
    assert_each_once(
        &stored_ids(&*store).await,
        ["first", "second", "third"].map(String::from),
    );
    let health = writer.health();
    assert_eq!((health.written, health.rejected), (3, 2));
    assert!(!segment.exists(), "the old segment is consumed and deleted");
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_spool_refuses_until_the_writer_catches_up() {
    let temp = Temp::new("full");
    let store = ledger(&temp.sqlite()).await;
    let line = serde_json::to_vec(&record("x0")).unwrap().len() as u64 + 1;
    let spool = Spool::open(temp.spool_dir(), line * 10).unwrap();
    let writer = LedgerWriter::start(
        spool.clone(),
        Arc::clone(&store),
        100,
        Duration::from_secs(3600),
    )
    .unwrap();
    let mut refused = 0;
    for i in 0..15 {
        match spool.append(&record(&format!("x{i}"))) {
            Ok(()) => {}
            Err(SpoolError::Full { max_bytes, .. }) => {
                assert_eq!(max_bytes, line * 10);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 5);
    assert_eq!(writer.health().dropped, 5);
    writer.flush().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 10);
    spool.append(&record("after")).unwrap();
    writer.flush().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 11);
    assert_eq!(writer.health().dropped, 5);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restored_spool_directory_is_reported_not_skipped() {
    let temp = Temp::new("restored");
    let store = ledger(&temp.sqlite()).await;
    let spool = Spool::open(temp.spool_dir(), u64::MAX).unwrap();
    spool.append(&record("kept")).unwrap();
    // The store has consumed this spool far past its files.
    let far = SpoolRange::new(spool.id(), 0, 1 << 40);
    store.append(&[], Some(far)).await.unwrap();
    let writer = LedgerWriter::start(
        spool.clone(),
        Arc::clone(&store),
        100,
        Duration::from_secs(3600),
    )
    .unwrap();
    let err = writer.flush().await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("spool.id"), "{err}");
    assert!(writer.health().last_error.is_some());
    assert_eq!(store.count().await.unwrap(), 0);
    assert!(spool.backlog_bytes() > 0, "the record is still spooled");
    writer.abort().await;
}

#[tokio::test]
async fn dropping_the_writer_drains_once_more() {
    let temp = Temp::new("drop");
    let store = ledger(&temp.sqlite()).await;
    let spool = Spool::open(temp.spool_dir(), u64::MAX).unwrap();
    let writer = LedgerWriter::start(
        spool.clone(),
        Arc::clone(&store),
        100,
        Duration::from_secs(3600),
    )
    .unwrap();
    writer.flush().await.unwrap();
    spool.append(&record("last")).unwrap();
    drop(writer);
    for _ in 0..200 {
        if store.count().await.unwrap() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the dropped writer did not store the last record");
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let temp = Temp::new("no-runtime");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(ledger(&temp.sqlite()));
    let spool = Spool::open(temp.spool_dir(), 1 << 20).unwrap();
    let err = LedgerWriter::start(spool, store, 10, Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
