//! Reading the spool back: [`Reader`] turns complete lines after a position into a [`Batch`]
//! of records, skipping what can never become a record (see the rules in [`super`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

use super::{Spool, join_offset, split_offset};
use crate::ledger::LedgerRecord;

/// Records read from the spool: what the writer appends in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub records: Vec<LedgerRecord>,
    /// The offset after each record's line (after any skipped lines before the next).
    pub ends: Vec<u64>,
    /// Where reading resumes after this batch.
    pub end: u64,
    /// Bytes the batch covers (records and skipped lines).
    pub bytes: u64,
    /// Complete lines that were not records.
    pub rejected: u64,
    /// Torn lines at the end of finished segments.
    pub torn: u64,
}

/// Reads complete lines from a position on; the writer moves the position once a batch is
/// stored, so a failed batch is simply read again.
pub(crate) struct Reader {
    spool: Spool,
    pub position: u64,
    open: Option<(u32, File)>,
    buf: Vec<u8>,
}

/// How much a read takes at once (more when one line is longer).
pub(crate) const READ_CHUNK: usize = 256 << 10;

impl Reader {
    pub fn new(spool: Spool, position: u64) -> Self {
        Reader {
            spool,
            position,
            open: None,
            buf: Vec::new(),
        }
    }

    /// Up to `max_records` records from the position on (fewer when caught up).
    pub fn next_batch(&mut self, max_records: usize) -> io::Result<Batch> {
        let mut batch = Batch::default();
        let mut position = self.position;
        let mut chunk = READ_CHUNK;
        while batch.records.len() < max_records.max(1) {
            let (number, byte) = split_offset(position);
            // Before reading: if the segment is finished now, this read sees all of it.
            let finished = self.spool.is_finished(number);
            if !self.open_segment(number)? {
                match self.next_segment(number)? {
                    Some(next) => {
                        position = join_offset(next, 0);
                        continue;
                    }
                    None => break,
                }
            }
            let Some((_, file)) = &self.open else { break };
            self.buf.resize(chunk, 0);
            let read = read_full_at(file, &mut self.buf, byte)?;
            let data = &self.buf[..read];
            let mut used = 0usize;
            for line in data.split_inclusive(|b| *b == b'\n') {
                if line.last() != Some(&b'\n') || batch.records.len() >= max_records.max(1) {
                    break;
                }
                used += line.len();
                let end = join_offset(number, byte + used as u64);
                let body = line.trim_ascii();
                if body.is_empty() {
                    continue;
                }
                match sonic_rs::from_slice::<LedgerRecord>(body) {
                    Ok(record) => {
                        batch.records.push(record);
                        batch.ends.push(end);
                    }
                    Err(e) => {
                        batch.rejected += 1;
                        tracing::warn!(
                            spool = %self.spool.id(),
                            offset = end,
                            error = %e,
                            "skipping a spooled line that is not a usage record"
                        );
                        if let Some(last) = batch.ends.last_mut() {
                            *last = end;
                        }
                    }
                }
            }
            batch.bytes += used as u64;
            position = join_offset(number, byte + used as u64);
            if used > 0 {
                chunk = READ_CHUNK;
                continue;
            }
            if read == chunk {
                // One line longer than the buffer: read more at once.
                chunk = chunk.saturating_mul(2);
                continue;
            }
            // At the end of the segment, with at most a line without its newline.
            if !finished {
                break;
            }
            if read > 0 {
                batch.torn += 1;
                batch.bytes += read as u64;
                tracing::warn!(
                    spool = %self.spool.id(),
                    offset = position,
                    bytes = read,
                    "skipping a torn line at the end of a spool segment (a crash mid-write)"
                );
            }
            match self.next_segment(number)? {
                Some(next) => position = join_offset(next, 0),
                None => break,
            }
        }
        if let Some(last) = batch.ends.last_mut() {
            *last = position;
        }
        batch.end = position;
        self.shrink();
        Ok(batch)
    }

    /// Open segment `number` (unless it is open already): `false` when it does not exist.
    fn open_segment(&mut self, number: u32) -> io::Result<bool> {
        if self.open.as_ref().is_some_and(|(n, _)| *n == number) {
            return Ok(true);
        }
        self.open = None;
        match File::open(self.spool.segment_path(number)) {
            Ok(file) => {
                self.open = Some((number, file));
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The first segment after `number` on disk.
    fn next_segment(&self, number: u32) -> io::Result<Option<u32>> {
        if number.checked_add(1).is_some_and(|next| {
            next <= self.spool.current_segment() && self.spool.segment_path(next).exists()
        }) {
            return Ok(number.checked_add(1));
        }
        Ok(self
            .spool
            .list_segments()?
            .into_iter()
            .map(|(n, _)| n)
            .find(|n| *n > number))
    }

    fn shrink(&mut self) {
        if self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = Vec::new();
        }
    }
}

/// Read into `buf` from `offset` until it is full or the file ends.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
