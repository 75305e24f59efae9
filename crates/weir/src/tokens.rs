//! Token counting.
//!
//! [`count_tokens`] is exact for OpenAI's o200k models and a documented estimate for others:
//! Anthropic, Llama and most current tokenizers land within ~10-15% of o200k on English text.
//! The BPE tables ship inside `tiktoken-rs` (offline); the encoder is built once, on first use
//! or when [`warm_up`] is called at start. Without the `tokenizer` feature (on by default) there
//! is no encoder, and every count is the byte estimate below: about 4 bytes per token.
//!
//! [`estimate_prompt_tokens`] is the cheap estimate for hot paths (about 4 bytes per token plus
//! a few tokens of framing per message): it costs one pass over the bytes, no tokenizer.

use std::sync::OnceLock;

#[cfg(feature = "tokenizer")]
use tiktoken_rs::CoreBPE;
use weir_types::chat::ChatRequest;

/// Tokens of framing each chat message costs (role markers), as OpenAI's cookbook counts them.
const PER_MESSAGE_OVERHEAD: u64 = 3;

#[cfg(feature = "tokenizer")]
fn encoder() -> Option<&'static CoreBPE> {
    static ENCODER: OnceLock<Option<CoreBPE>> = OnceLock::new();
    ENCODER
        .get_or_init(|| tiktoken_rs::o200k_base().ok())
        .as_ref()
}

/// Build the encoder now, so the first request does not pay for it.
pub fn warm_up() {
    #[cfg(feature = "tokenizer")]
    let _ = encoder();
}

/// Tokens in `text` under o200k (or ~4 bytes per token without the encoder).
pub fn count_tokens(text: &str) -> u64 {
    #[cfg(feature = "tokenizer")]
    if let Some(bpe) = encoder() {
        return bpe.encode_ordinary(text).len() as u64;
    }
    (text.len() as u64).div_ceil(4)
}

/// Texts shorter than this are counted directly: hashing them would cost about as much.
const MEMO_MIN_BYTES: usize = 64;
/// Distinct long texts remembered (16 bytes of key and 8 of count each, plus moka's overhead).
const MEMO_ENTRIES: u64 = 16_384;

fn memo() -> &'static moka::sync::Cache<u128, u64> {
    static MEMO: OnceLock<moka::sync::Cache<u128, u64>> = OnceLock::new();
    MEMO.get_or_init(|| moka::sync::Cache::new(MEMO_ENTRIES))
}

/// [`count_tokens`], remembering the counts of long texts. Conversations resend their system
/// prompt, tool definitions and history on every turn, so most of a request's text was counted
/// before: a 128-bit hash of it (about 1 µs per KB) replaces a tokenizer pass (about 40 µs per
/// KB). A collision could only misstate a reservation, which settles to the real usage anyway.
pub fn count_tokens_memo(text: &str) -> u64 {
    // Without the tokenizer a count is one division, cheaper than the hash.
    if !cfg!(feature = "tokenizer") || text.len() < MEMO_MIN_BYTES {
        return count_tokens(text);
    }
    let digest = blake3::hash(text.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest.as_bytes()[..16]);
    let key = u128::from_le_bytes(key);
    if let Some(n) = memo().get(&key) {
        return n;
    }
    let n = count_tokens(text);
    memo().insert(key, n);
    n
}

/// Tokens a chat request's input will take, counted with the tokenizer: messages, tools and
/// response schema.
pub fn count_request_tokens(req: &ChatRequest) -> u64 {
    let mut n = 3; // every reply is primed with <|start|>assistant<|message|>
    for m in &req.messages {
        n += PER_MESSAGE_OVERHEAD + count_tokens_memo(&m.text());
        for tc in m.tool_calls.iter().flatten() {
            n += count_tokens(&tc.function.name) + count_tokens_memo(&tc.function.arguments);
        }
    }
    if let Some(tools) = &req.tools {
        for t in tools {
            n += count_tokens_memo(&serde_json::to_string(&t.function).unwrap_or_default());
        }
    }
    n
}

/// An upper bound on [`count_request_tokens`] that costs one pass over the lengths: every
/// o200k token is at least one byte of its text, so a text's byte length bounds its count.
pub fn request_tokens_upper_bound(req: &ChatRequest) -> u64 {
    let mut n = 3;
    for m in &req.messages {
        let text_bytes = match &m.content {
            Some(weir_types::chat::MessageContent::Text(t)) => t.len(),
            Some(_) => m.text().len(),
            None => 0,
        };
        n += PER_MESSAGE_OVERHEAD + text_bytes as u64;
        for tc in m.tool_calls.iter().flatten() {
            n += (tc.function.name.len() + tc.function.arguments.len()) as u64;
        }
    }
    if let Some(tools) = &req.tools {
        for t in tools {
            n += serde_json::to_string(&t.function).map_or(0, |s| s.len() as u64);
        }
    }
    n
}

/// A cheap estimate of a request's input tokens, for hot paths.
pub fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    req.messages
        .iter()
        .map(|m| {
            let bytes = match &m.content {
                Some(weir_types::chat::MessageContent::Text(t)) => t.len(),
                Some(c) => c.text().len(),
                None => 0,
            };
            PER_MESSAGE_OVERHEAD + (bytes as u64).div_ceil(4)
        })
        .sum::<u64>()
        + 3
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_bound_is_never_below_the_count() {
        use weir_types::chat::{Message, Tool};
        let texts = [
            "",
            "hi",
            "The quick brown fox jumps over the lazy dog.",
            "日本語のテキストとémojis 🎉🎉🎉 mixed in",
            "    indented\n\tcode { x: [1, 2, 3] }\n",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ];
        for text in texts {
            let mut req = ChatRequest::new("m", vec![Message::system(text), Message::user(text)]);
            req.tools = Some(vec![
                serde_json::from_value::<Tool>(serde_json::json!({
                    "type": "function",
                    "function": {"name": "lookup", "description": text,
                                 "parameters": {"type": "object"}}
                }))
                .unwrap(),
            ]);
            let exact = count_request_tokens(&req);
            let bound = request_tokens_upper_bound(&req);
            assert!(bound >= exact, "{text:?}: bound {bound} < exact {exact}");
        }
    }

    #[test]
    fn remembered_counts_match_fresh_ones() {
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let fresh = count_tokens(&long);
        assert_eq!(count_tokens_memo(&long), fresh);
        assert_eq!(
            count_tokens_memo(&long),
            fresh,
            "second call, from the memo"
        );
        let other = format!("{long} and one more sentence.");
        assert_eq!(count_tokens_memo(&other), count_tokens(&other));
        assert_eq!(count_tokens_memo("short"), count_tokens("short"));
    }

    #[cfg(feature = "tokenizer")]
    #[test]
    fn counts_with_o200k() {
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens(""), 0);
    }

    #[cfg(not(feature = "tokenizer"))]
    #[test]
    fn counts_four_bytes_per_token_without_the_tokenizer() {
        assert_eq!(count_tokens("hello world"), 3);
        assert_eq!(count_tokens(""), 0);
    }
}
