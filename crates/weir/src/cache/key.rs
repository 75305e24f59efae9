//! Cache keys: which requests share an answer.
//!
//! A key is a blake3 digest over a canonical serialisation of only the fields that decide the
//! answer: the resolved model, the conversation, tools, sampling and output controls, and every
//! pass-through extra except a short deny list of fields known not to change the content
//! (`stream`, `user`, `metadata`, request ids...). Transport and bookkeeping fields never split
//! the cache; anything unknown does, because a false split costs one miss while a false merge
//! serves the wrong answer.
//!
//! The serialisation is canonical so keys are stable across processes, platforms and serde
//! feature flags: object keys are sorted explicitly (never map iteration order), numbers are
//! normalised (`1.0` and `1` agree, floats print as their shortest round-trip decimal), and
//! equivalent spellings collapse (`stop: "x"` and `stop: ["x"]`; `max_tokens` and
//! `max_completion_tokens`; `n: 1` and no `n`; a text-only content part and a plain string).
//!
//! Whether sampled requests (temperature above zero or unset) are cached at all is the
//! client's policy (`cache.cache_sampled`, off by default; see `client::cached`); [`is_sampled`]
//! tells them apart. Requests for several samples
//! (`n > 1`) are never cached: one stored answer cannot stand for several independent ones.

use serde_json::{Number, Value};
use weir_types::chat::{ChatRequest, ContentPart, Message, MessageContent, ResponseFormat};

use super::store::CacheKey;

/// Domain separation for the digest: bump the version whenever the canonical form changes,
/// together with the `v1` prefix of [`CacheKey::flat`], so old entries stop matching instead of
/// answering requests they were never computed for.
const KEY_CONTEXT: &str = "weir cache key v1";
const NAMESPACE_CONTEXT: &str = "weir cache namespace v1";
/// 16 hex characters (64 bits): collisions between tenants would share answers, and 2^32
/// tenants before a likely collision is far beyond any deployment.
const NAMESPACE_HEX_LEN: usize = 16;

/// Extras that reach the upstream but do not change the answer's content. Everything else in
/// `extra` is part of the key.
const NON_DECIDING_EXTRAS: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    // Latency/price class, not content.
    "service_tier",
    "request_id",
    // OpenAI's successor of `user` and its prompt-cache routing hint: bookkeeping only.
    "safety_identifier",
    "prompt_cache_key",
];

/// The cache key of `req` once its model resolved to `resolved_model`, in tenant `namespace`;
/// `None` when the request must not be cached (`n > 1`).
pub fn cache_key(req: &ChatRequest, resolved_model: &str, namespace: &str) -> Option<CacheKey> {
    // The hasher keyed by the context is derived once: deriving it hashes the context, which
    // cost about as much as hashing a short prompt. A clone gives the same digest.
    static KEYED: std::sync::LazyLock<blake3::Hasher> =
        std::sync::LazyLock::new(|| blake3::Hasher::new_derive_key(KEY_CONTEXT));
    // Written into a buffer the thread keeps: a fresh `String` grew by doubling, eight
    // reallocations and copies for a 40 KB conversation.
    let digest = CANONICAL_SCRATCH.with(|scratch| {
        let mut fresh = String::new();
        let mut kept = scratch.try_borrow_mut();
        let out = match kept.as_deref_mut() {
            Ok(buf) => buf,
            Err(_) => &mut fresh,
        };
        out.clear();
        let written = write_canonical_form(req, resolved_model, out);
        let digest = written.map(|()| KEYED.clone().update(out.as_bytes()).finalize());
        if out.capacity() > SCRATCH_KEPT_AT_MOST {
            *out = String::new();
        }
        digest
    })?;
    Some(CacheKey {
        namespace: namespace.to_owned(),
        model: resolved_model.to_owned(),
        digest: digest.to_hex().to_string(),
    })
}

/// Whether the answer is drawn at random: temperature above zero, or unset (the provider
/// default, 1.0 almost everywhere).
///
/// `top_p` does not enter: at temperature 0 decoding is greedy and the most likely token is
/// always inside the nucleus, so `top_p < 1` cannot add randomness; above 0 the request is
/// sampled already.
pub fn is_sampled(req: &ChatRequest) -> bool {
    req.temperature.is_none_or(|t| t > 0.0)
}

/// The tenant namespace for a gateway key: a short keyed hash, never the key itself, so cache
/// keys (which end up in Redis, SQLite files and logs) reveal nothing usable. An empty key (no
/// authentication) maps to `shared`.
pub fn namespace_for_gateway_key(key: &str) -> String {
    if key.is_empty() {
        return "shared".to_owned();
    }
    let hash = blake3::derive_key(NAMESPACE_CONTEXT, key.as_bytes());
    let mut hex = blake3::Hash::from_bytes(hash).to_hex().to_string();
    hex.truncate(NAMESPACE_HEX_LEN);
    hex
}

/// The canonical text the digest is taken over (sorted JSON), or `None` when the request must
/// not be cached. Public so tooling can show why two requests do or do not share an entry.
///
/// Written straight into the output, keys in sorted order, without building a JSON tree
/// first: the tree was a sixth of a cache hit. Only the parts with no fixed shape (tools,
/// tool choice, response format, extras, and messages that carry tool calls or extras) go
/// through a `Value`. A test checks the bytes against the tree-based form.
pub fn canonical_form(req: &ChatRequest, resolved_model: &str) -> Option<String> {
    let mut out = String::with_capacity(256);
    write_canonical_form(req, resolved_model, &mut out)?;
    Some(out)
}

/// The largest canonical-form buffer a thread keeps between requests.
const SCRATCH_KEPT_AT_MOST: usize = 1 << 20;

thread_local! {
    static CANONICAL_SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// [`canonical_form`], appended to `out`.
fn write_canonical_form(req: &ChatRequest, resolved_model: &str, out: &mut String) -> Option<()> {
    if req.n.is_some_and(|n| n > 1) {
        return None;
    }
    let mut doc = ObjectWriter::open(out);
    // Keys below are in byte order, as `write_canonical` would sort them.
    let extras = deciding_extras(req);
    if !extras.is_empty() {
        // Nested so a vendor extra can never collide with a modelled field's name.
        write_sorted_object(extras, doc.key("extra"));
    }
    if let Some(cap) = req.max_output_tokens() {
        doc.key("max_output_tokens")
            .push_str(itoa::Buffer::new().format(cap));
    }
    let messages = doc.key("messages");
    messages.push('[');
    for (i, message) in req.messages.iter().enumerate() {
        if i > 0 {
            messages.push(',');
        }
        write_message(message, messages)?;
    }
    messages.push(']');
    write_string(resolved_model, doc.key("model"));
    // `n: 1` is the default; only an explicit other value (0, which upstreams reject) is kept.
    if let Some(n) = req.n.filter(|&n| n != 1) {
        doc.key("n").push_str(itoa::Buffer::new().format(n));
    }
    if let Some(parallel) = req.parallel_tool_calls {
        doc.key("parallel_tool_calls")
            .push_str(if parallel { "true" } else { "false" });
    }
    // Plain text is the default format: asking for it explicitly is the same request.
    if let Some(format) = req
        .response_format
        .as_ref()
        .filter(|f| !matches!(f, ResponseFormat::Text))
    {
        write_canonical(
            &serde_json::to_value(format).ok()?,
            doc.key("response_format"),
        );
    }
    if let Some(seed) = req.seed {
        doc.key("seed").push_str(itoa::Buffer::new().format(seed));
    }
    let stop = req.stop_sequences();
    if !stop.is_empty() {
        // Order is kept: it is what the client sent, and normalising it buys almost nothing.
        write_array(&stop, doc.key("stop"), |s, out| write_string(s, out));
    }
    if let Some(t) = req.temperature {
        write_number(&Number::from_f64(t)?, doc.key("temperature"));
    }
    if let Some(choice) = &req.tool_choice {
        write_canonical(&serde_json::to_value(choice).ok()?, doc.key("tool_choice"));
    }
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        write_canonical(&serde_json::to_value(tools).ok()?, doc.key("tools"));
    }
    if let Some(p) = req.top_p {
        write_number(&Number::from_f64(p)?, doc.key("top_p"));
    }
    doc.close();
    Some(())
}

/// The pass-through extras that can change the answer, sorted by key.
fn deciding_extras(req: &ChatRequest) -> Vec<(&String, &Value)> {
    let mut extras: Vec<(&String, &Value)> = req
        .extra
        .iter()
        .filter(|(k, v)| !v.is_null() && !NON_DECIDING_EXTRAS.contains(&k.as_str()))
        .collect();
    extras.sort_unstable_by(|a, b| a.0.cmp(b.0));
    extras
}

/// The whole message, unknown fields included: everything in it reaches the model.
fn write_message(message: &Message, out: &mut String) -> Option<()> {
    if !message.extra.is_empty() || message.tool_calls.is_some() {
        // No fixed shape: through a tree, sorted by `write_canonical`.
        let mut value = serde_json::to_value(message).ok()?;
        if let (Some(content), Value::Object(obj)) = (&message.content, &mut value) {
            obj.insert("content".into(), content_value(content)?);
        }
        write_canonical(&value, out);
        return Some(());
    }
    let mut obj = ObjectWriter::open(out);
    if let Some(content) = &message.content {
        write_content(content, obj.key("content"))?;
    }
    let optional = [
        ("name", &message.name),
        ("reasoning_content", &message.reasoning_content),
        ("refusal", &message.refusal),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            write_string(v, obj.key(key));
        }
    }
    write_string(message.role.as_str(), obj.key("role"));
    if let Some(id) = &message.tool_call_id {
        write_string(id, obj.key("tool_call_id"));
    }
    obj.close();
    Some(())
}

/// Content as the model sees it: a single text part is the same prompt as a plain string.
fn write_content(content: &MessageContent, out: &mut String) -> Option<()> {
    match plain_text(content) {
        Some(text) => write_string(text, out),
        None => write_canonical(&content_value(content)?, out),
    }
    Some(())
}

/// Writes `{"k":v,...}` one key at a time; the caller gives keys in sorted order.
struct ObjectWriter<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, empty: true }
    }

    /// Write `key:` and hand back the output for its value.
    fn key(&mut self, key: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        write_string(key, self.out);
        self.out.push(':');
        self.out
    }

    fn close(self) {
        self.out.push('}');
    }
}

fn write_sorted_object(entries: Vec<(&String, &Value)>, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(k, out);
        out.push(':');
        write_canonical(v, out);
    }
    out.push('}');
}

/// The content's text when it is plain text: a string, or a single text part (the same
/// prompt as a plain string).
fn plain_text(content: &MessageContent) -> Option<&str> {
    match content {
        MessageContent::Text(text) => Some(text),
        MessageContent::Parts(parts) => match parts.as_slice() {
            [ContentPart::Text { text }] => Some(text),
            _ => None,
        },
    }
}

/// Content as the model sees it, as JSON (see [`plain_text`]).
fn content_value(content: &MessageContent) -> Option<Value> {
    match plain_text(content) {
        Some(text) => Some(Value::String(text.to_owned())),
        None => serde_json::to_value(content).ok(),
    }
}

/// `[a,b,...]`, each item written by `write`.
fn write_array<T>(
    items: impl IntoIterator<Item = T>,
    out: &mut String,
    mut write: impl FnMut(T, &mut String),
) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(item, out);
    }
    out.push(']');
}

/// Sorted-key, whitespace-free JSON with normalised numbers.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => write_array(items, out, write_canonical),
        Value::Object(map) => {
            // Sorted here rather than trusting `Map`: with serde_json's `preserve_order`
            // feature (which any crate in the build can switch on) it keeps insertion order.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            write_sorted_object(entries, out);
        }
    }
}

/// Integers print as integers; floats with an exact integer value (below 2^53, where f64
/// integers are exact) print as that integer, so `0` and `0.0` agree; other floats print as
/// Rust's shortest round-trip decimal, which is the same on every platform.
fn write_number(n: &Number, out: &mut String) {
    use std::fmt::Write as _;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    // itoa prints integers exactly as `Display` does, without the formatter.
    let mut digits = itoa::Buffer::new();
    if let Some(u) = n.as_u64() {
        out.push_str(digits.format(u));
    } else if let Some(i) = n.as_i64() {
        out.push_str(digits.format(i));
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < EXACT {
            // Exact by the bound above; -0.0 becomes 0.
            out.push_str(digits.format(f as i64));
        } else {
            let _ = write!(out, "{f}");
        }
    } else {
        // Only reachable with `arbitrary_precision` and a number outside f64: keep its text.
        let _ = write!(out, "{n}");
    }
}

/// A JSON string: `"`, `\\`, `\n`, `\r`, `\t` escaped by name, other control characters as
/// `\u00XX`, everything else as is. Runs without anything to escape are copied whole (prompts
/// are long and mostly plain), and found eight bytes at a time.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if let Some(word) = bytes
            .get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            && !may_need_escape(u64::from_le_bytes(word))
        {
            i += 8;
            continue;
        }
        i += 1;
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        // Every byte matched above is ASCII, so `i - 1` is on a char boundary.
        out.push_str(&s[start..i - 1]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escaped);
        }
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether any of the eight bytes in `word` is a control character, `"` or `\\` (no false
/// negatives; a false positive only sends that word down the byte-by-byte path). The classic
/// SWAR tests: a byte below 0x20, and a zero byte after XOR with each quote character.
fn may_need_escape(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
}

#[cfg(test)]
#[path = "tests/key_tests.rs"]
mod tests;
