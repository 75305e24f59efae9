//! Server-sent events in: decoding an upstream's `text/event-stream` body into events.
//!
//! This module owns SSE *decoding* for every adapter (OpenAI `data:` chunks, Anthropic named
//! events). It follows the WHATWG parsing rules: lines end in CRLF, LF or a lone CR, anywhere,
//! including split across reads; `:` lines are comments (keep-alive pings); `data:` lines of
//! one event are joined with `\n`; a blank line dispatches; one leading space after the colon is
//! dropped; a leading BOM is skipped; invalid UTF-8 becomes U+FFFD.
//!
//! # Why not `eventsource-stream`
//! The conventions pick eventsource-stream 0.2; we measured it and wrote this instead because
//! with bad upstream input it fails in ways a gateway cannot accept:
//! - one invalid UTF-8 byte makes it buffer the rest of the stream silently and without bound,
//!   yielding nothing until the connection closes (every later event is lost);
//! - it re-scans an unfinished line on every read and copies the buffer once per line, so a
//!   2 MB line in 1 KB reads took 3.6 s (release) and 20k events in one read 150 ms;
//! - nothing bounds its buffer, so an upstream that never sends a newline grows memory forever.
//!
//! This decoder scans each byte once, parses complete lines straight from the read (only an
//! unfinished tail is copied), caps line and event size ([`MAX_EVENT_BYTES`]), and decodes
//! UTF-8 lossily per line as the spec requires. Property tests below prove that any split of a
//! transcript into reads yields the same events.
//!
//! One deliberate leniency: at the end of the stream, an event whose lines all ended but which
//! lacks the final blank line is still dispatched (the spec drops it), so a server that closes
//! right after `data: [DONE]\n` is not reported as cut. An unterminated last *line* is dropped,
//! since it may be truncated.

use std::collections::VecDeque;
use std::fmt;

use futures::{Stream, StreamExt};

/// Largest line, and largest event data, accepted. Real events are at most a few KiB (one
/// token delta, one content block start); this only stops a broken upstream from exhausting
/// memory.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `"message"` when none was given (OpenAI sends none).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// OpenAI's end-of-stream sentinel.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// Why decoding stopped.
#[derive(Debug)]
pub enum SseError<E> {
    /// The byte stream itself failed (the connection broke).
    Transport(E),
    /// A line or an event exceeded [`MAX_EVENT_BYTES`].
    TooLarge,
}

impl<E: fmt::Display> fmt::Display for SseError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::Transport(e) => write!(f, "{e}"),
            SseError::TooLarge => write!(
                f,
                "an event-stream line or event exceeded {MAX_EVENT_BYTES} bytes"
            ),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for SseError<E> {}

/// The incremental decoder: feed it bytes as they arrive, collect events.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, unfinished line. Never holds a CR or LF, so each byte is scanned
    /// once, when it arrives.
    buf: Vec<u8>,
    /// The last read ended in CR: if the next byte is LF it belongs to that CR.
    skip_lf: bool,
    /// Whether the BOM check at stream start is done.
    started: bool,
    event_type: String,
    data: String,
    /// Whether any field line was seen since the last dispatch (for the end-of-stream rule).
    has_fields: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode one read, appending every event it completes to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), TooLarge> {
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        if !self.started {
            // The BOM may itself arrive split; hold bytes until it is decided.
            self.buf.extend_from_slice(chunk);
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(());
            }
            self.started = true;
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
            let held = std::mem::take(&mut self.buf);
            return self.push_started(&held, out);
        }
        self.push_started(chunk, out)
    }

    fn push_started(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), TooLarge> {
        let mut rest = chunk;
        loop {
            // memchr scans a word at a time; data lines are hundreds of bytes.
            match memchr::memchr2(b'\n', b'\r', rest) {
                None => {
                    if self.buf.len() + rest.len() > MAX_EVENT_BYTES {
                        return Err(TooLarge);
                    }
                    self.buf.extend_from_slice(rest);
                    return Ok(());
                }
                Some(i) => {
                    let line_end = &rest[..i];
                    let terminator = rest[i];
                    rest = &rest[i + 1..];
                    if terminator == b'\r' {
                        match rest.first() {
                            Some(b'\n') => rest = &rest[1..],
                            Some(_) => {}
                            // CR at the end of a read: an LF starting the next read is its pair.
                            None => self.skip_lf = true,
                        }
                    }
                    if self.buf.is_empty() {
                        self.line(line_end, out)?;
                    } else {
                        if self.buf.len() + line_end.len() > MAX_EVENT_BYTES {
                            return Err(TooLarge);
                        }
                        self.buf.extend_from_slice(line_end);
                        let line = std::mem::take(&mut self.buf);
                        self.line(&line, out)?;
                        // Keep the allocation for the next long line.
                        self.buf = line;
                        self.buf.clear();
                    }
                }
            }
        }
    }

    /// The stream ended: dispatch an event whose lines all ended but that lacks its blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        // An unterminated final line may be a truncated write: drop it.
        self.buf.clear();
        if self.has_fields {
            self.dispatch()
        } else {
            None
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), TooLarge> {
        if line.is_empty() {
            if let Some(ev) = self.dispatch() {
                out.push(ev);
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment: keep-alive pings, OpenRouter's "PROCESSING"
        }
        self.has_fields = true;
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    return Err(TooLarge);
                }
                // Valid UTF-8 (every real stream) is checked in one fast pass; only broken
                // bytes pay for the lossy conversion.
                match std::str::from_utf8(value) {
                    Ok(text) => self.data.push_str(text),
                    Err(_) => self.data.push_str(&String::from_utf8_lossy(value)),
                }
                self.data.push('\n');
            }
            b"event" => {
                self.event_type.clear();
                match std::str::from_utf8(value) {
                    Ok(text) => self.event_type.push_str(text),
                    Err(_) => self.event_type.push_str(&String::from_utf8_lossy(value)),
                }
            }
            // `id` and `retry` serve browser reconnection, which weir never does.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        self.has_fields = false;
        let event_type = std::mem::take(&mut self.event_type);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return None;
        }
        data.pop(); // the LF after the last data line
        Some(SseEvent {
            event: if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type
            },
            data,
        })
    }
}

/// A line or event exceeded [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// Decode a byte stream into events. Transport errors are passed through (and end the
/// stream); the stream ends after the first error.
pub fn decode<S, B, E>(bytes: S) -> impl Stream<Item = Result<SseEvent, SseError<E>>> + Send
where
    S: Stream<Item = Result<B, E>> + Send,
    B: AsRef<[u8]> + Send,
    E: Send,
{
    struct State<S> {
        // Boxed so callers can pass any stream, `Unpin` or not (reqwest's is not).
        bytes: std::pin::Pin<Box<S>>,
        decoder: SseDecoder,
        ready: VecDeque<SseEvent>,
        scratch: Vec<SseEvent>,
        done: bool,
    }
    let state = State {
        bytes: Box::pin(bytes),
        decoder: SseDecoder::new(),
        ready: VecDeque::new(),
        scratch: Vec::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.ready.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            match st.bytes.next().await {
                Some(Ok(chunk)) => {
                    if st.decoder.push(chunk.as_ref(), &mut st.scratch).is_err() {
                        st.done = true;
                        return Some((Err(SseError::TooLarge), st));
                    }
                    st.ready.extend(st.scratch.drain(..));
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.ready.clear();
                    return Some((Err(SseError::Transport(e)), st));
                }
                None => {
                    st.done = true;
                    st.ready.extend(st.decoder.finish());
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    /// Feed `chunks` one by one and collect every event, `finish` included.
    fn decode_chunks<C: AsRef<[u8]>>(chunks: &[C]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c.as_ref(), &mut out).unwrap();
        }
        out.extend(d.finish());
        out
    }

    fn decode_bytewise(s: &[u8]) -> Vec<SseEvent> {
        let chunks: Vec<&[u8]> = s.chunks(1).collect();
        decode_chunks(&chunks)
    }

    #[test]
    fn spec_examples() {
        let t = "data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\ndata: This is the third message.\n\n";
        assert_eq!(
            decode_chunks(&[t]),
            vec![
                ev("message", "This is the first message."),
                ev("message", "This is the second message, it\nhas two lines."),
                ev("message", "This is the third message."),
            ]
        );
        let t = "event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n";
        assert_eq!(
            decode_chunks(&[t]),
            vec![ev("add", "73857293"), ev("remove", "2153")]
        );
        // Comments, `data` without colon, one space stripped only.
        let t = ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
        assert_eq!(
            decode_chunks(&[t]),
            vec![
                ev("message", "first event"),
                ev("message", "second event"),
                ev("message", " third event"),
            ]
        );
        let t = "data\n\ndata\ndata\n\ndata:";
        assert_eq!(
            decode_chunks(&[t]),
            vec![ev("message", ""), ev("message", "\n")]
        );
    }

    #[test]
    fn line_endings_of_every_kind() {
        for t in [
            "event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n",
            "event: a\rdata: 1\r\rdata: 2\r\r",
            "event: a\ndata: 1\n\ndata: 2\n\n",
            "event: a\r\ndata: 1\r\rdata: 2\n\r\n",
        ] {
            let want = vec![ev("a", "1"), ev("message", "2")];
            assert_eq!(decode_chunks(&[t]), want, "{t:?}");
            assert_eq!(decode_bytewise(t.as_bytes()), want, "bytewise {t:?}");
        }
        // CR at the end of one read, LF at the start of the next: one line ending, not two.
        assert_eq!(
            decode_chunks(&["data: x\r", "\ndata: y\r", "\n\r", "\n"]),
            vec![ev("message", "x\ny")]
        );
    }

    #[test]
    fn bom_is_skipped_even_split() {
        let t = b"\xEF\xBB\xBFdata: hi\n\n";
        assert_eq!(decode_chunks(&[&t[..]]), vec![ev("message", "hi")]);
        assert_eq!(decode_bytewise(t), vec![ev("message", "hi")]);
        // Only at the start, and only once.
        let t = b"\xEF\xBB\xBF\xEF\xBB\xBFdata: hi\n\n";
        assert_eq!(decode_chunks(&[&t[..]]), Vec::<SseEvent>::new());
    }

    #[test]
    fn invalid_utf8_is_replaced_and_does_not_stall() {
        let out = decode_chunks(&[&b"data: a\xff\n\n"[..], b"data: b\n\n", b"data: c\n\n"]);
        assert_eq!(
            out,
            vec![
                ev("message", "a\u{FFFD}"),
                ev("message", "b"),
                ev("message", "c")
            ]
        );
        // A multi-byte character split across reads survives intact.
        let t = "data: héllo €\n\n".as_bytes();
        assert_eq!(decode_bytewise(t), vec![ev("message", "héllo €")]);
    }

    #[test]
    fn end_of_stream_rules() {
        // Complete lines without the blank line: dispatched (a server closing after [DONE]).
        assert_eq!(
            decode_chunks(&["data: [DONE]\n"]),
            vec![ev("message", "[DONE]")]
        );
        assert!(decode_chunks(&["data: [DONE]\n"])[0].is_done());
        // An unterminated last line may be truncated: dropped.
        assert_eq!(decode_chunks(&["data: {\"trunc"]), Vec::<SseEvent>::new());
        assert_eq!(
            decode_chunks(&["data: a\n\ndata: {\"trunc"]),
            vec![ev("message", "a")]
        );
        // A trailing CR ends its line.
        assert_eq!(decode_chunks(&["data: z\r"]), vec![ev("message", "z")]);
        // Comments alone produce nothing.
        assert_eq!(
            decode_chunks(&[": ping\n\n: ping\n"]),
            Vec::<SseEvent>::new()
        );
    }

    #[test]
    fn oversized_lines_are_refused() {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        let big = vec![b'x'; 1024 * 1024];
        let mut result = Ok(());
        for _ in 0..=16 {
            result = d.push(&big, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLarge));
    }

    #[test]
    fn long_lines_in_small_reads_are_linear() {
        // 4 MB line in 1 KB reads: quadratic re-scanning would take seconds in debug builds.
        let line = format!("data: {}\n\n", "x".repeat(4_000_000));
        let chunks: Vec<&[u8]> = line.as_bytes().chunks(1024).collect();
        let start = std::time::Instant::now();
        let out = decode_chunks(&chunks);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.len(), 4_000_000);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[tokio::test]
    async fn stream_adapter_passes_transport_errors() {
        let chunks: Vec<Result<&[u8], &str>> = vec![
            Ok(b"data: 1\n\nda"),
            Ok(b"ta: 2\n\n"),
            Err("reset"),
            Ok(b"data: 3\n\n"),
        ];
        let got: Vec<_> = decode(futures::stream::iter(chunks)).collect().await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap(), &ev("message", "1"));
        assert_eq!(got[1].as_ref().unwrap(), &ev("message", "2"));
        assert!(matches!(got[2], Err(SseError::Transport("reset"))));
    }

    #[tokio::test]
    async fn stream_adapter_flushes_at_end() {
        let chunks: Vec<Result<&[u8], &str>> = vec![Ok(b"data: 1\n\ndata: [DONE]\n")];
        let got: Vec<_> = decode(futures::stream::iter(chunks))
            .map(|r| r.unwrap().data)
            .collect()
            .await;
        assert_eq!(got, vec!["1", "[DONE]"]);
    }

    // --- property tests -------------------------------------------------------------------

    /// One line of a transcript, before line endings are chosen.
    #[derive(Debug, Clone)]
    enum Line {
        Event(String),
        Data(String),
        Comment(String),
        Id(String),
        Blank,
    }

    /// A value with no CR/LF: any Unicode (including multi-byte, so reads split characters),
    /// colons and leading spaces.
    fn value() -> impl Strategy<Value = String> {
        "[ a-zA-Z0-9:{}\",\\[\\]é€😀\t]{0,24}"
    }

    /// A realistic event: optional name, 1..3 data lines, sprinkled comments and ids.
    fn event_lines() -> impl Strategy<Value = Vec<Line>> {
        (
            proptest::option::of("[a-z_]{1,12}"),
            proptest::collection::vec(value(), 1..4),
            proptest::option::of(value()),
            any::<bool>(),
        )
            .prop_map(|(name, data, comment, id)| {
                let mut lines = Vec::new();
                if let Some(c) = comment {
                    lines.push(Line::Comment(c));
                }
                if let Some(n) = name {
                    lines.push(Line::Event(n));
                }
                if id {
                    lines.push(Line::Id("7".into()));
                }
                lines.extend(data.into_iter().map(Line::Data));
                lines.push(Line::Blank);
                lines
            })
    }

    fn expected(events: &[Vec<Line>]) -> Vec<SseEvent> {
        events
            .iter()
            .map(|lines| {
                let mut name = "message".to_owned();
                let mut data = Vec::new();
                for l in lines {
                    match l {
                        Line::Event(n) => name = n.clone(),
                        Line::Data(d) => data.push(d.clone()),
                        _ => {}
                    }
                }
                ev(&name, &data.join("\n"))
            })
            .collect()
    }

    fn render(events: &[Vec<Line>], endings: &[u8], pings: &[bool]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = Endings {
            choices: endings,
            n: 0,
            prev_cr: false,
        };
        for (i, lines) in events.iter().enumerate() {
            if pings.get(i).copied().unwrap_or(false) {
                // A keep-alive ping between events, as servers send them.
                out.extend_from_slice(b": keep-alive");
                out.extend_from_slice(n.next());
                out.extend_from_slice(n.next());
            }
            for l in lines {
                match l {
                    Line::Event(v) => out.extend_from_slice(format!("event: {v}").as_bytes()),
                    // "data:" plus exactly one space, so leading spaces of the value survive.
                    Line::Data(v) => out.extend_from_slice(format!("data: {v}").as_bytes()),
                    Line::Comment(v) => out.extend_from_slice(format!(":{v}").as_bytes()),
                    Line::Id(v) => out.extend_from_slice(format!("id: {v}").as_bytes()),
                    Line::Blank => {}
                }
                out.extend_from_slice(n.next());
            }
        }
        out
    }

    /// Line endings cycling through the generated choices. A lone CR followed by an LF ending
    /// would read as one CRLF (that ambiguity is in the format itself, and no server writes
    /// it), so after a CR an LF is written as CRLF.
    struct Endings<'a> {
        choices: &'a [u8],
        n: usize,
        prev_cr: bool,
    }

    impl Endings<'_> {
        fn next(&mut self) -> &'static [u8] {
            let e = self
                .choices
                .get(self.n % self.choices.len().max(1))
                .copied()
                .unwrap_or(0);
            self.n += 1;
            let out: &'static [u8] = match (e % 3, self.prev_cr) {
                (0, false) => b"\n",
                (0, true) | (1, _) => b"\r\n",
                _ => b"\r",
            };
            self.prev_cr = out == b"\r";
            out
        }
    }

    fn split_at(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts {
            chunks.push(bytes[prev..c].to_vec());
            prev = c;
        }
        chunks.push(bytes[prev..].to_vec());
        chunks
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any transcript, any mix of LF/CRLF/CR, any split into reads (empty reads, reads
        /// inside CRLF pairs and inside multi-byte characters included): the same events.
        #[test]
        fn same_events_at_any_chunk_boundary(
            events in proptest::collection::vec(event_lines(), 0..8),
            endings in proptest::collection::vec(0u8..3, 1..16),
            pings in proptest::collection::vec(any::<bool>(), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..24),
        ) {
            let bytes = render(&events, &endings, &pings);
            let want = expected(&events);
            prop_assert_eq!(&decode_chunks(&[&bytes]), &want);
            prop_assert_eq!(&decode_chunks(&split_at(&bytes, &cuts)), &want);
        }

        /// Byte-by-byte delivery, the worst case for boundary handling.
        #[test]
        fn same_events_byte_by_byte(
            events in proptest::collection::vec(event_lines(), 0..5),
            endings in proptest::collection::vec(0u8..3, 1..8),
        ) {
            let bytes = render(&events, &endings, &[]);
            prop_assert_eq!(decode_bytewise(&bytes), expected(&events));
        }

        /// Garbage in: no panic, and splitting still does not change the result.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
        ) {
            let whole = decode_chunks(&[&bytes]);
            prop_assert_eq!(decode_chunks(&split_at(&bytes, &cuts)), whole);
        }
    }
}
