//! A canonical chat response as a Messages response, for clients of `POST /v1/messages`
//! served by a non-Anthropic provider.

use serde_json::{Map, Value};
use weir_types::Extra;
use weir_types::anthropic::{
    self as a, ContentBlock, MessagesResponse, StopReason, ThinkingBlock, ToolUseBlock,
};
use weir_types::chat::{ChatResponse, FinishReason, Usage};

use crate::provider::anthropic::convert::REASONING_SIGNATURE;

/// Key under which tool arguments that are not a JSON object are passed on (see
/// [`tool_input`]).
pub const RAW_ARGUMENTS: &str = "_raw_arguments";

/// A canonical response as a Messages response named `model` (the model the client asked
/// for). Blocks come in Anthropic's order: thinking, text, tool calls.
pub fn to_messages_response(resp: &ChatResponse, model: &str) -> MessagesResponse {
    let mut content = Vec::new();
    let choice = resp.choices.first();
    if let Some(m) = choice.map(|c| &c.message) {
        if let Some(reasoning) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            let signature = m.extra.get(REASONING_SIGNATURE).and_then(Value::as_str);
            content.push(thinking_block(reasoning, signature));
        }
        let text = m
            .content
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(m.refusal.as_deref().filter(|r| !r.is_empty()));
        if let Some(text) = text {
            content.push(ContentBlock::text(text));
        }
        for call in m.tool_calls.iter().flatten() {
            content.push(ContentBlock::ToolUse(ToolUseBlock {
                id: call.id.clone(),
                name: call.function.name.clone(),
                input: tool_input(&call.function.arguments),
                cache_control: None,
                extra: Extra::new(),
            }));
        }
    }
    let has_tool_use = content
        .iter()
        .any(|b| matches!(b, ContentBlock::ToolUse(_)));
    let usage = resp.usage.clone().unwrap_or_default();
    let mut out =
        MessagesResponse::empty(message_id(&resp.id), model, usage_from_canonical(&usage));
    out.content = content;
    out.stop_reason = Some(stop_reason(
        choice.and_then(|c| c.finish_reason.as_ref()),
        has_tool_use,
    ));
    out
}

/// Anthropic ids start with `msg_`; an upstream's id is kept after that prefix.
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

/// A thinking block. The signature is `""` when the upstream gave none: the SDKs expect the
/// field, and the block only ever returns to weir, which drops it for non-Anthropic models.
pub(crate) fn thinking_block(thinking: &str, signature: Option<&str>) -> ContentBlock {
    ContentBlock::Thinking(ThinkingBlock {
        thinking: thinking.to_owned(),
        signature: Some(signature.unwrap_or_default().to_owned()),
        extra: Extra::new(),
    })
}

/// Tool-call arguments as the JSON object Anthropic's `input` must be.
///
/// Empty arguments are `{}`. Arguments that are not a JSON object (a model's malformed or
/// truncated output) are passed as `{"_raw_arguments": "<the string>"}` rather than `{}`: the
/// client's schema validation then reports the problem to the model, instead of the tool
/// running with no arguments, and the text is not lost.
pub fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let mut m = Map::new();
            m.insert(RAW_ARGUMENTS.into(), Value::String(arguments.to_owned()));
            Value::Object(m)
        }
    }
}

/// The Anthropic stop reason for a canonical finish reason.
///
/// A message with tool calls stops with `tool_use` unless it was cut short: some
/// OpenAI-compatible servers report `stop` there, and Anthropic clients run tools only on
/// `tool_use`. Which stop sequence matched is unknown to OpenAI-style APIs, so `stop` is
/// `end_turn`.
pub fn stop_reason(finish: Option<&FinishReason>, has_tool_use: bool) -> StopReason {
    match finish {
        Some(FinishReason::Length) => StopReason::MaxTokens,
        Some(FinishReason::ContentFilter) => StopReason::Refusal,
        Some(FinishReason::ToolCalls | FinishReason::FunctionCall) => StopReason::ToolUse,
        _ if has_tool_use => StopReason::ToolUse,
        // `stop`, none, or a reason Anthropic has no word for (Anthropic SDKs match on the
        // documented set).
        _ => StopReason::EndTurn,
    }
}

/// Canonical usage as Anthropic usage: Anthropic's `input_tokens` excludes the cached tokens
/// that canonical `prompt_tokens` includes. The cache fields are always present, as
/// Anthropic sends them.
pub fn usage_from_canonical(u: &Usage) -> a::Usage {
    let cached = u.cached_tokens();
    let creation = u.cache_creation_tokens();
    a::Usage {
        input_tokens: u
            .prompt_tokens
            .saturating_sub(cached)
            .saturating_sub(creation),
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: Some(creation),
        cache_read_input_tokens: Some(cached),
        extra: Extra::new(),
    }
}
