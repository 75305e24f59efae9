//! Unit tests of the spool's files and reader, without a store: rolling under concurrent
//! appends, partial and torn lines, ids and locks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::reader::READ_CHUNK;
use super::*;

fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "weir-spool-unit-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn record(id: &str) -> LedgerRecord {
    LedgerRecord {
        at_ms: 1,
        request_id: id.into(),
        key_id: Some("k".into()),
        user: None,
        team: None,
        project: None,
        tags: vec![("a".into(), "b".into())],
        operation: "chat".into(),
        model: "m".into(),
        provider: None,
        upstream_model: None,
        status: 200,
        outcome: "success".into(),
        error_kind: None,
        attempts: 1,
        cache: "miss".into(),
        input_tokens: 1,
        output_tokens: 2,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        tokens_estimated: false,
        cost_usd: Some(rust_decimal::Decimal::new(75, 9)),
        saved_usd: None,
        latency_us: 10,
        upstream_us: None,
        first_token_us: None,
        prompt_fingerprint: None,
    }
}

/// Read everything readable, as the writer would, committing each batch at once.
fn read_all(reader: &mut Reader, batch: usize) -> Vec<LedgerRecord> {
    let mut out = Vec::new();
    loop {
        let b = reader.next_batch(batch).unwrap();
        if b.end == reader.position {
            return out;
        }
        reader.position = b.end;
        out.extend(b.records);
    }
}

#[test]
fn concurrent_appends_across_rolls_are_read_once_each() {
    let dir = temp_dir("rolls");
    let spool = Spool::open_with(
        &dir,
        SpoolOptions {
            max_bytes: u64::MAX,
            segment_bytes: 8 << 10,
        },
    )
    .unwrap();
    let mut reader = Reader::new(spool.clone(), 0);
    let mut seen = Vec::new();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let spool = spool.clone();
            scope.spawn(move || {
                for i in 0..500 {
                    spool.append(&record(&format!("{t}-{i}"))).unwrap();
                }
            });
        }
        // Read while the appends and rolls happen.
        for _ in 0..200 {
            seen.extend(read_all(&mut reader, 37));
            std::thread::yield_now();
        }
    });
    seen.extend(read_all(&mut reader, 37));
    let ids: HashSet<String> = seen.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(seen.len(), 2000, "every record once");
    assert_eq!(ids.len(), 2000);
    assert!(spool.current_segment() > 10, "rolled many times");
    assert_eq!(spool.appended(), 2000);
    assert_eq!(spool.dropped(), 0);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_partial_line_in_the_live_segment_is_waited_for() {
    let dir = temp_dir("partial");
    let spool = Spool::open(&dir, u64::MAX).unwrap();
    spool.append(&record("one")).unwrap();
    let mut line = serde_json::to_vec(&record("two")).unwrap();
    line.push(b'\n');
    let (head, tail) = line.split_at(line.len() / 2);
    let path = spool.segment_path(spool.current_segment());
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(head).unwrap();

    let mut reader = Reader::new(spool.clone(), 0);
    let first = reader.next_batch(10).unwrap();
    assert_eq!(first.records.len(), 1);
    assert_eq!((first.rejected, first.torn), (0, 0));
    reader.position = first.end;
    let waiting = reader.next_batch(10).unwrap();
    assert_eq!(
        waiting.end, reader.position,
        "nothing consumed while the line is partial"
    );

    file.write_all(tail).unwrap();
    let second = reader.next_batch(10).unwrap();
    assert_eq!(second.records, vec![record("two")]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_line_ending_an_old_segment_is_skipped() {
    let dir = temp_dir("torn");
    let spool = Spool::open(&dir, u64::MAX).unwrap();
    spool.append(&record("before")).unwrap();
    let old = spool.current_segment();
    let mut file = OpenOptions::new()
        .append(true)
        .open(spool.segment_path(old))
        .unwrap();
    file.write_all(br#"{"at_ms":1,"request_id":"torn"#).unwrap();
    drop(spool);

    // The next process starts a new segment: the torn line can grow no more.
    let spool = Spool::open(&dir, u64::MAX).unwrap();
    assert_eq!(spool.current_segment(), old + 1);
    spool.append(&record("after")).unwrap();
    let mut reader = Reader::new(spool.clone(), 0);
    let batch = reader.next_batch(10).unwrap();
    let ids: Vec<_> = batch
        .records
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(ids, ["before", "after"]);
    assert_eq!((batch.torn, batch.rejected), (1, 0));
    assert_eq!(split_offset(batch.end).0, old + 1);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lines_that_are_not_records_are_skipped_and_counted() {
    let dir = temp_dir("garbage");
    let spool = Spool::open(&dir, u64::MAX).unwrap();
    spool.append(&record("a")).unwrap();
    let mut file = OpenOptions::new()
        .append(true)
        .open(spool.segment_path(spool.current_segment()))
        .unwrap();
    file.write_all(b"not json\n\n{\"at_ms\":1}\n").unwrap();
    spool.append(&record("b")).unwrap();
    let mut reader = Reader::new(spool.clone(), 0);
    let batch = reader.next_batch(10).unwrap();
    assert_eq!(batch.records.len(), 2);
    assert_eq!(batch.rejected, 2, "the blank line is not counted");
    assert_eq!(batch.ends.last(), Some(&batch.end));
    // A batch stops at its size, and the next resumes after it.
    let mut reader = Reader::new(spool.clone(), 0);
    let first = reader.next_batch(1).unwrap();
    assert_eq!(first.records, vec![record("a")]);
    reader.position = first.end;
    let rest = reader.next_batch(1).unwrap();
    assert_eq!(rest.records, vec![record("b")]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_line_longer_than_a_read_is_read_whole() {
    let dir = temp_dir("long");
    let spool = Spool::open(&dir, u64::MAX).unwrap();
    let mut long = record("long");
    long.prompt_fingerprint = Some("x".repeat(3 * READ_CHUNK));
    spool.append(&long).unwrap();
    spool.append(&record("short")).unwrap();
    let mut reader = Reader::new(spool.clone(), 0);
    let batch = reader.next_batch(10).unwrap();
    assert_eq!(batch.records, vec![long, record("short")]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_id_is_stable_and_the_directory_locked() {
    let dir = temp_dir("id");
    let spool = Spool::open(&dir, 1 << 20).unwrap();
    let id = spool.id().to_string();
    assert!(is_valid_id(&id), "{id}");
    let err = Spool::open(&dir, 1 << 20).unwrap_err();
    assert!(
        err.to_string()
            .contains("another process has this spool open"),
        "{err}"
    );
    drop(spool);
    let again = Spool::open(&dir, 1 << 20).unwrap();
    assert_eq!(again.id(), id);
    drop(again);

    fs::write(dir.join(ID_FILE), "garbage").unwrap();
    let err = Spool::open(&dir, 1 << 20).unwrap_err();
    assert!(err.to_string().contains("is not a spool id"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn full_spools_refuse_and_count() {
    let dir = temp_dir("full");
    let line = serde_json::to_vec(&record("x")).unwrap().len() as u64 + 1;
    let spool = Spool::open(&dir, line * 3).unwrap();
    for i in 0..3 {
        spool
            .append(&record("x"))
            .unwrap_or_else(|e| panic!("{i}: {e}"));
    }
    let err = spool.append(&record("x")).unwrap_err();
    assert_eq!(
        err,
        SpoolError::Full {
            backlog_bytes: line * 3,
            max_bytes: line * 3
        }
    );
    assert!(err.to_string().contains("raise the limit"), "{err}");
    assert!(spool.append(&record("x")).is_err());
    assert_eq!((spool.appended(), spool.dropped()), (3, 2));
    assert_eq!(spool.backlog_bytes(), line * 3);
    spool.note_consumed(line);
    spool.append(&record("x")).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn consumed_segments_are_removed() {
    let dir = temp_dir("remove");
    let spool = Spool::open_with(
        &dir,
        SpoolOptions {
            max_bytes: u64::MAX,
            segment_bytes: 1,
        },
    )
    .unwrap();
    for i in 0..5 {
        spool.append(&record(&i.to_string())).unwrap();
    }
    let current = spool.current_segment();
    assert_eq!(
        spool.list_segments().unwrap().len(),
        6,
        "one record each, and the new one"
    );
    spool.remove_segments_before(current).unwrap();
    let left: Vec<u32> = spool
        .list_segments()
        .unwrap()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(left, vec![current]);
    fs::remove_dir_all(&dir).unwrap();
}
