//! Building SSE transcripts by hand: events, line-ending conversion.

use serde_json::Value;

/// One event: `event: NAME` (if any), then the data, one `data:` line per line, then a blank line.
pub fn event(name: Option<&str>, data: &str) -> String {
    let mut s = String::new();
    if let Some(n) = name {
        s.push_str("event: ");
        s.push_str(n);
        s.push('\n');
    }
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

/// A `data:` event holding this JSON (OpenAI style).
pub fn data(v: &Value) -> String {
    event(None, &v.to_string())
}

/// A named event holding this JSON (Anthropic style).
pub fn named(name: &str, v: &Value) -> String {
    event(Some(name), &v.to_string())
}

/// A comment line, as servers send for keep-alive.
pub fn comment(text: &str) -> String {
    format!(": {text}\n\n")
}

/// The same transcript with CRLF line endings.
pub fn crlf(transcript: &str) -> String {
    transcript.replace("\r\n", "\n").replace('\n', "\r\n")
}
