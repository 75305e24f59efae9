//! An incremental scanner for the server-sent events the load tool receives: it counts content
//! chunks, reads the fake upstream's send-time stamps and notices the end of a stream
//! (`data: [DONE]` or Anthropic's `message_stop`) and error events. It never parses JSON.

use crate::{STAMP_DIGITS, STAMP_MARK, find};

/// What the events completed by one read contained.
#[derive(Debug, Default)]
pub struct Seen {
    /// Content chunks (text deltas).
    pub content: usize,
    /// Send times (ns since the epoch) stamped in those chunks.
    pub stamps: Vec<u64>,
    pub done: bool,
    pub error: bool,
}

/// Buffers partial events between reads.
#[derive(Debug, Default)]
pub struct Scanner {
    buf: Vec<u8>,
}

fn boundary(b: &[u8]) -> Option<(usize, usize)> {
    let lf = find(b, b"\n\n").map(|i| (i, 2));
    let crlf = find(b, b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(c)) => Some(if a.0 <= c.0 { a } else { c }),
        (a, c) => a.or(c),
    }
}

/// Whether `"key"` is followed by `: "` and a non-empty string.
fn nonempty_string(ev: &[u8], key: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = find(&ev[from..], key) {
        from += at + key.len();
        let rest = ev[from..].trim_ascii_start();
        if let Some(v) = rest.strip_prefix(b":") {
            let v = v.trim_ascii_start();
            if v.starts_with(b"\"") && !v.starts_with(b"\"\"") {
                return true;
            }
        }
    }
    false
}

fn scan_event(ev: &[u8], seen: &mut Seen) {
    if find(ev, b"data: [DONE]").is_some() || find(ev, b"message_stop").is_some() {
        seen.done = true;
    }
    if ev.starts_with(b"event: error") || find(ev, b"data: {\"error\"").is_some() {
        seen.error = true;
    }
    let mut stamped = 0;
    let mut from = 0;
    while let Some(at) = find(&ev[from..], STAMP_MARK) {
        let start = from + at + STAMP_MARK.len();
        let digits = ev.get(start..start + STAMP_DIGITS);
        if let Some(d) = digits.filter(|d| d.iter().all(u8::is_ascii_digit)) {
            let ns = d
                .iter()
                .fold(0u64, |n, c| n.wrapping_mul(10) + u64::from(c - b'0'));
            if ns > 0 {
                seen.stamps.push(ns);
            }
            stamped += 1;
        }
        from = start;
    }
    if stamped > 0 {
        seen.content += stamped;
    } else if nonempty_string(ev, b"\"content\"") || find(ev, b"text_delta").is_some() {
        seen.content += 1;
    }
}

impl Scanner {
    /// Feed the bytes of one read; report on every event they complete.
    pub fn push(&mut self, data: &[u8], seen: &mut Seen) {
        self.buf.extend_from_slice(data);
        let mut from = 0;
        while let Some((at, len)) = boundary(&self.buf[from..]) {
            scan_event(&self.buf[from..from + at], seen);
            from += at + len;
        }
        self.buf.drain(..from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_reads() {
        let mut s = Scanner::default();
        let mut seen = Seen::default();
        s.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\ndata: {\"content\": \"hi@@00000000", &mut seen);
        assert_eq!(seen.content, 0);
        s.push(b"00000000042\"}\n\ndata: [DONE]\n\n", &mut seen);
        assert_eq!(seen.content, 1);
        assert_eq!(seen.stamps, vec![42]);
        assert!(seen.done && !seen.error);
        let mut seen = Seen::default();
        s.push(b"event: content_block_delta\ndata: {\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\nevent: error\ndata: {}\n\n", &mut seen);
        assert_eq!(seen.content, 1);
        assert!(seen.error);
    }
}
