//! Which errors a retry could fix, under a [`RetryPolicy`], and which ones call for a special
//! fallback instead (a model with a longer context window, or a different provider's content
//! policy).
//!
//! Owns the recognition of the providers' error texts: the codes and messages OpenAI (and the
//! servers that copy its API: Azure, vLLM, llama.cpp, Groq, OpenRouter...), Anthropic, Gemini
//! and Bedrock use for "the prompt does not fit" and "the content was refused". Matching is
//! ASCII case-insensitive and allocation-free; codes must match as whole words so that
//! `content_filter_results` (present in successful Azure bodies) is not read as a refusal.

use crate::error::Error;

use super::RetryPolicy;

/// Whether sending the request again could succeed, under `policy`.
///
/// - `Upstream` errors retry when their status is in `retry_on`, and `RateLimited` when 429 is;
/// - `Timeout`, `Connection`, `CircuitOpen` (another deployment may be healthy) and
///   `PoolExhausted` (a key frees up) retry;
/// - `StreamInterrupted` retries: the caller asks only while nothing has reached the client;
/// - `InvalidResponse` retries: a 2xx body that does not parse is almost always a truncated or
///   proxy-mangled answer, rarely a stable upstream bug, and `max_retries` plus the budget
///   bound the cost if it is one;
/// - the request's own faults (`InvalidRequest`, `Authentication`, `Permission`,
///   `ModelNotFound`, `Unsupported`, `BudgetExceeded`, `Config`) do not;
/// - neither do context-window and content-policy errors, whatever their status: the same
///   request will fail the same way, so the caller should route to a fallback instead.
pub fn is_retryable(policy: &RetryPolicy, err: &Error) -> bool {
    // Every variant is listed, so a new one forces a decision here.
    match err {
        Error::Upstream { status, .. } => {
            policy.retry_on.contains(status)
                && !is_context_window_error(err)
                && !is_content_policy_error(err)
        }
        Error::RateLimited { .. } => policy.retry_on.contains(&429),
        Error::Timeout { .. }
        | Error::Connection { .. }
        | Error::CircuitOpen { .. }
        | Error::PoolExhausted { .. } => true,
        Error::StreamInterrupted { .. } | Error::InvalidResponse { .. } => {
            !is_content_policy_error(err)
        }
        Error::InvalidRequest { .. }
        | Error::Authentication { .. }
        | Error::Permission { .. }
        | Error::ModelNotFound { .. }
        | Error::Unsupported { .. }
        | Error::BudgetExceeded { .. }
        | Error::Rejected { .. }
        | Error::Config(_) => false,
    }
}

/// Whether the upstream refused the request because the prompt (plus `max_tokens`) does not
/// fit the model's context window: a fallback to a longer-context model may succeed.
pub fn is_context_window_error(err: &Error) -> bool {
    match err {
        // Providers answer 400 (InvalidRequest), and some OpenAI-compatible servers 413 or 500.
        Error::InvalidRequest { message, .. } => mentions_context_window(message),
        Error::Upstream {
            message,
            body_excerpt,
            ..
        } => mentions_context_window(message) || mentions_context_window(body_excerpt),
        _ => false,
    }
}

/// Whether the upstream refused the content (a safety filter or policy refusal): retrying is
/// pointless, a fallback to another provider may be allowed by the operator's routing.
pub fn is_content_policy_error(err: &Error) -> bool {
    match err {
        Error::InvalidRequest { message, .. }
        | Error::InvalidResponse { message, .. }
        // A filter can cut a stream short (Azure, Anthropic's streaming classifiers).
        | Error::StreamInterrupted { message, .. } => mentions_content_policy(message),
        Error::Upstream {
            message,
            body_excerpt,
            ..
        } => mentions_content_policy(message) || mentions_content_policy(body_excerpt),
        _ => false,
    }
}

/// Error codes, matched as whole words.
const CONTEXT_CODES: &[&str] = &[
    // OpenAI, Azure, Groq, Mistral, OpenRouter.
    "context_length_exceeded",
    // Anthropic's stop reason when a response runs into the window.
    "model_context_window_exceeded",
    // llama.cpp server.
    "exceed_context_size_error",
];

/// Message fragments.
const CONTEXT_PHRASES: &[&str] = &[
    // OpenAI chat, vLLM, OpenRouter: "This model's maximum context length is 8192 tokens."
    "maximum context length",
    // OpenAI Responses API: "Your input exceeds the context window of this model."
    "exceeds the context window",
    "context window exceeded",
    "context length exceeded",
    // Anthropic: "prompt is too long: 208310 tokens > 200000 maximum".
    "prompt is too long",
    // Anthropic: "input length and `max_tokens` exceed context limit: 197602 + 8192 > 200000".
    "exceed context limit",
    // llama.cpp: "the request exceeds the available context size".
    "exceeds the available context size",
    // Gemini: "The input token count (1200000) exceeds the maximum number of tokens allowed".
    "exceeds the maximum number of tokens allowed",
    // Bedrock: "Input is too long for requested model."
    "input is too long",
];

const POLICY_CODES: &[&str] = &[
    // OpenAI images and moderation-gated endpoints.
    "content_policy_violation",
    // Azure OpenAI's error code, and its inner error code.
    "content_filter",
    "ResponsibleAIPolicyViolation",
];

const POLICY_PHRASES: &[&str] = &[
    // OpenAI: "Your request was rejected as a result of our safety system."
    "safety system",
    // OpenAI reasoning models: "your prompt was flagged as potentially violating our usage
    // policy".
    "flagged as potentially violating",
    // Azure: "...triggering Azure OpenAI's content management policy."
    "content management policy",
    // Anthropic: "Output blocked by content filtering policy"; Azure: "content filtering
    // policies".
    "content filtering polic",
];

fn mentions_context_window(text: &str) -> bool {
    CONTEXT_CODES.iter().any(|code| find(text, code, true))
        || CONTEXT_PHRASES
            .iter()
            .any(|phrase| find(text, phrase, false))
}

fn mentions_content_policy(text: &str) -> bool {
    POLICY_CODES.iter().any(|code| find(text, code, true))
        || POLICY_PHRASES.iter().any(|phrase| find(text, phrase, false))
        // Anthropic's refusal is a stop reason; seen in an error only when a layer surfaces
        // the raw event. Both words are required: OpenAI bodies carry a `"refusal"` field.
        || (find(text, "stop_reason", true) && find(text, "\"refusal\"", false))
}

/// Whether `needle` occurs in `hay`, ignoring ASCII case; with `whole_word`, only where it is
/// not part of a longer identifier.
fn find(hay: &str, needle: &str, whole_word: bool) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    if needle.is_empty() || hay.len() < needle.len() {
        return false;
    }
    let is_word = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    (0..=hay.len() - needle.len()).any(|start| {
        let end = start + needle.len();
        hay[start..end].eq_ignore_ascii_case(needle)
            && (!whole_word
                || (!is_word(start.checked_sub(1).and_then(|i| hay.get(i)))
                    && !is_word(hay.get(end))))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::error::TimeoutPhase;

    fn upstream(status: u16, message: &str) -> Error {
        Error::from_upstream("p", status, Some(message.to_owned()), b"", None)
    }

    /// An error as the provider layer builds it from a raw body it could not parse.
    fn raw(status: u16, body: &str) -> Error {
        Error::from_upstream("p", status, None, body.as_bytes(), None)
    }

    fn s(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn classification_table_under_the_default_policy() {
        let p = RetryPolicy::default();
        let config_err = Error::from(
            crate::Config::from_yaml("retry: [unclosed", &|_: &str| None)
                .err()
                .unwrap(),
        );
        let cases: Vec<(Error, bool)> = vec![
            (Error::invalid_request("messages must not be empty"), false),
            (
                Error::Authentication {
                    provider: s("p"),
                    message: s("bad key"),
                },
                false,
            ),
            (
                Error::Permission {
                    provider: s("p"),
                    message: s("no"),
                },
                false,
            ),
            (
                Error::ModelNotFound {
                    model: s("m"),
                    hint: s("h"),
                },
                false,
            ),
            (
                Error::Unsupported {
                    provider: s("p"),
                    operation: s("embeddings"),
                },
                false,
            ),
            (
                Error::BudgetExceeded {
                    scope: s("team"),
                    message: s("spent"),
                },
                false,
            ),
            (config_err, false),
            (
                Error::RateLimited {
                    provider: s("p"),
                    message: s("slow down"),
                    retry_after: Some(Duration::from_secs(1)),
                },
                true,
            ),
            (
                Error::Timeout {
                    provider: s("p"),
                    phase: TimeoutPhase::FirstByte,
                    after: Duration::from_secs(30),
                },
                true,
            ),
            (
                Error::Connection {
                    provider: s("p"),
                    message: s("connection refused"),
                },
                true,
            ),
            (
                Error::CircuitOpen {
                    deployment: s("d"),
                    retry_after: None,
                },
                true,
            ),
            (
                Error::PoolExhausted {
                    pool: s("keys"),
                    retry_after: None,
                },
                true,
            ),
            (
                Error::StreamInterrupted {
                    provider: s("p"),
                    message: s("connection reset"),
                },
                true,
            ),
            (
                Error::InvalidResponse {
                    provider: s("p"),
                    message: s("EOF while parsing an object at line 1 column 812"),
                },
                true,
            ),
        ];
        for (err, expected) in &cases {
            assert_eq!(is_retryable(&p, err), *expected, "{:?}", err.kind());
        }
        for (status, expected) in [
            (408, true),
            (409, false),
            (500, true),
            (501, false),
            (502, true),
            (503, true),
            (504, true),
            (529, true),
            (404, false),
            (418, false),
        ] {
            let err = upstream(status, "upstream trouble");
            assert_eq!(err.kind(), crate::ErrorKind::Upstream, "{status}");
            assert_eq!(is_retryable(&p, &err), expected, "{status}");
        }
        // The statuses the provider layer maps to other variants.
        assert!(!is_retryable(&p, &upstream(400, "bad")));
        assert!(!is_retryable(&p, &upstream(401, "bad key")));
        assert!(!is_retryable(&p, &upstream(403, "forbidden")));
        assert!(!is_retryable(&p, &upstream(422, "unprocessable")));
        assert!(is_retryable(&p, &upstream(429, "slow down")));
    }

    #[test]
    fn retry_on_decides_for_statuses_and_rate_limits() {
        let p = RetryPolicy {
            retry_on: vec![501, 503],
            ..RetryPolicy::default()
        };
        assert!(is_retryable(&p, &upstream(501, "not implemented yet")));
        assert!(is_retryable(&p, &upstream(503, "unavailable")));
        assert!(!is_retryable(&p, &upstream(500, "oops")));
        assert!(!is_retryable(&p, &upstream(529, "overloaded")));
        // Without 429 in the list, rate limits are passed on rather than retried.
        assert!(!is_retryable(&p, &upstream(429, "slow down")));
        // Transport failures do not depend on the status list.
        let none = RetryPolicy {
            retry_on: vec![],
            ..RetryPolicy::default()
        };
        assert!(is_retryable(
            &none,
            &Error::Connection {
                provider: s("p"),
                message: s("reset"),
            }
        ));
    }

    #[test]
    fn recognises_context_window_errors_in_provider_texts() {
        let openai_body = r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130532 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let hits = [
            // OpenAI, parsed message and raw body.
            upstream(
                400,
                "This model's maximum context length is 128000 tokens. However, your messages \
                 resulted in 130532 tokens. Please reduce the length of the messages.",
            ),
            raw(400, openai_body),
            // OpenAI Responses API.
            upstream(
                400,
                "Your input exceeds the context window of this model. Please adjust your input \
                 and try again.",
            ),
            // Anthropic.
            upstream(400, "prompt is too long: 208310 tokens > 200000 maximum"),
            upstream(
                400,
                "input length and `max_tokens` exceed context limit: 197602 + 8192 > 200000, \
                 decrease input length or `max_tokens` and try again",
            ),
            raw(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#,
            ),
            // vLLM answering 400, and an OpenAI-compatible server answering 500 and 413.
            upstream(
                400,
                "This model's maximum context length is 4096 tokens. However, you requested \
                 5000 tokens (4000 in the messages, 1000 in the completion).",
            ),
            raw(500, openai_body),
            raw(413, r#"{"error":{"code":"context_length_exceeded"}}"#),
            // llama.cpp.
            raw(
                400,
                r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#,
            ),
            // Gemini and Bedrock.
            upstream(
                400,
                "The input token count (1200000) exceeds the maximum number of tokens allowed \
                 (1048576).",
            ),
            upstream(400, "Input is too long for requested model."),
        ];
        let p = RetryPolicy::default();
        for err in &hits {
            assert!(is_context_window_error(err), "{err}");
            assert!(!is_content_policy_error(err), "{err}");
            assert!(!is_retryable(&p, err), "{err}");
        }

        let misses = [
            // A tokens-per-minute limit is a rate limit, not a context window.
            upstream(
                429,
                "Request too large for gpt-4o in organization org-abc on tokens per min (TPM): \
                 Limit 30000, Requested 45000.",
            ),
            upstream(
                400,
                "max_tokens is too large: 100000. This model supports at most 16384 completion \
                 tokens, whereas you provided 100000.",
            ),
            upstream(413, "Request exceeds the maximum allowed number of bytes."),
            upstream(400, "Invalid 'messages': empty array."),
            upstream(503, "The server is overloaded, please retry"),
            raw(400, r#"{"error":{"code":"my_context_length_exceeded_x"}}"#),
            Error::Connection {
                provider: s("p"),
                message: s("maximum context length"),
            },
        ];
        for err in &misses {
            assert!(!is_context_window_error(err), "{err}");
        }
    }

    #[test]
    fn recognises_content_policy_refusals_in_provider_texts() {
        let hits = [
            // OpenAI images.
            raw(
                400,
                r#"{"error":{"code":"content_policy_violation","message":"Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.","param":null,"type":"invalid_request_error"}}"#,
            ),
            upstream(
                400,
                "Your request was rejected as a result of our safety system.",
            ),
            // OpenAI reasoning models.
            upstream(
                400,
                "Invalid prompt: your prompt was flagged as potentially violating our usage \
                 policy. Please try again with a different prompt.",
            ),
            // Azure OpenAI, parsed message and raw body.
            upstream(
                400,
                "The response was filtered due to the prompt triggering Azure OpenAI's content \
                 management policy. Please modify your prompt and retry.",
            ),
            raw(
                400,
                r#"{"error":{"message":"The response was filtered","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#,
            ),
            // Azure answering 500 with the filter code: still not worth a retry.
            raw(
                500,
                r#"{"error":{"code":"content_filter","message":"filtered"}}"#,
            ),
            // Anthropic.
            upstream(400, "Output blocked by content filtering policy"),
            Error::StreamInterrupted {
                provider: s("anthropic"),
                message: s(r#"message_delta ended with {"stop_reason": "refusal"}"#),
            },
            Error::InvalidResponse {
                provider: s("azure"),
                message: s("stream ended by content_filter"),
            },
        ];
        let p = RetryPolicy::default();
        for err in &hits {
            assert!(is_content_policy_error(err), "{err}");
            assert!(!is_context_window_error(err), "{err}");
            assert!(!is_retryable(&p, err), "{err}");
        }

        let misses = [
            // Successful Azure bodies carry filter results; an error echoing one is not a refusal.
            raw(
                500,
                r#"{"prompt_filter_results":[{"content_filter_results":{"hate":{"filtered":false}}}]}"#,
            ),
            // OpenAI bodies carry a "refusal" field without a stop reason.
            raw(502, r#"{"message":{"content":"hi","refusal":null}}"#),
            upstream(503, "Service temporarily unavailable"),
            Error::Timeout {
                provider: s("p"),
                phase: TimeoutPhase::Total,
                after: Duration::from_secs(1),
            },
        ];
        for err in &misses {
            assert!(!is_content_policy_error(err), "{err}");
        }
        assert!(is_retryable(&p, &misses[0]));
        assert!(is_retryable(&p, &misses[1]));
    }

    #[test]
    fn word_matching_ignores_case_and_respects_boundaries() {
        assert!(find("Code: CONTEXT_FILTER", "context_filter", true));
        assert!(find("\"content_filter\"", "content_filter", true));
        assert!(!find("content_filter_results", "content_filter", true));
        assert!(!find("xcontent_filter", "content_filter", true));
        assert!(find("xcontent_filter_y", "content_filter", false));
        assert!(!find("short", "longer needle", false));
        assert!(!find("anything", "", false));
        assert!(find("é prompt IS too long é", "prompt is too long", false));
    }
}
