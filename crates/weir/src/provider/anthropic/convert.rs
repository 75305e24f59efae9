//! Canonical chat ⇄ Anthropic Messages for the Anthropic provider: a canonical (OpenAI-shaped)
//! request becomes a Messages request, and a Messages response becomes a canonical response.
//! Pure functions, no I/O; the streaming half is in [`super::stream`].
//!
//! Where the two APIs differ:
//! - system and developer messages, wherever they are, become the top-level `system` blocks;
//! - tool results become `tool_result` blocks of a user turn, and consecutive turns of one role
//!   are merged, with the tool results first, as Anthropic requires;
//! - Anthropic has no `response_format`: a JSON mode or schema becomes an instruction appended
//!   to the system prompt (see [`response_format_instruction`]). Forcing a tool call would be
//!   stricter, but it changes the response's shape, and the response side cannot know;
//! - thinking needs its signature to be sent back: a response's thinking becomes
//!   `reasoning_content` plus the signature in the message's extra fields
//!   ([`REASONING_SIGNATURE`]), or, when there are several thinking or redacted blocks, the
//!   blocks themselves ([`THINKING_BLOCKS`]); a request replays them from there, and drops
//!   reasoning it cannot sign.

use serde_json::{Map, Value, json};
use weir_types::Extra;
use weir_types::anthropic::{
    self as a, CacheControl, ContentBlock, DocumentBlock, ImageBlock, ImageSource, InputMessage,
    MessageContent, MessagesRequest, MessagesResponse, Metadata, StopReason, SystemPrompt,
    ThinkingBlock, ThinkingConfig, ToolChoice, ToolResultBlock, ToolUseBlock,
};
use weir_types::chat::{
    ChatRequest, ChatResponse, Choice, ContentPart, FinishReason, FunctionCall, Message,
    MessageContent as ChatContent, PromptTokensDetails, ResponseFormat, ResponseMessage, Role,
    ToolCall, ToolChoice as ChatToolChoice, ToolChoiceMode, Usage,
};

use crate::error::{Error, Result};
use crate::provider::unix_now;

/// Extra field of a canonical assistant message: the signature of its one thinking block.
pub const REASONING_SIGNATURE: &str = "reasoning_signature";
/// Extra field of a canonical assistant message: its thinking and redacted-thinking blocks,
/// verbatim, when there is more than one (a single signature cannot cover them).
pub const THINKING_BLOCKS: &str = "thinking_blocks";
/// Extra field of a canonical message: an Anthropic `cache_control`, put on its last block.
const CACHE_CONTROL: &str = "cache_control";

/// Thinking budgets for OpenAI's `reasoning_effort` levels. Anthropic's minimum is 1024.
fn effort_budget(effort: &str) -> Option<u32> {
    Some(match effort {
        "minimal" => 1024,
        "low" => 2048,
        "medium" => 8192,
        "high" => 16384,
        "xhigh" => 32768,
        _ => return None,
    })
}

/// A canonical request as a Messages request for `upstream_model`.
///
/// `default_max_tokens` is used when the request sets no cap (Anthropic requires one).
/// Fails with [`Error::InvalidRequest`] for what Anthropic cannot do (`n` > 1, audio, non-
/// function tools) and for malformed input (unparsable tool arguments, bad data URIs).
pub fn to_anthropic_request(
    req: &ChatRequest,
    upstream_model: &str,
    default_max_tokens: u32,
) -> Result<MessagesRequest> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(Error::invalid_param(
            "n",
            "Anthropic returns one choice per request; `n` must be 1",
        ));
    }
    let mut system: Vec<ContentBlock> = Vec::new();
    let mut turns: Vec<(a::Role, Vec<ContentBlock>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, mut blocks) = match m.role {
            Role::System | Role::Developer => (None, system_blocks(m, i)?),
            Role::User => (Some(a::Role::User), user_blocks(m, i)?),
            Role::Assistant => (Some(a::Role::Assistant), assistant_blocks(m, i)?),
            Role::Tool => (Some(a::Role::User), vec![tool_result_block(m, i)?]),
        };
        apply_cache_control(m, &mut blocks);
        match role {
            None => system.extend(blocks),
            Some(role) => push_turn(&mut turns, role, blocks),
        }
    }
    if turns.is_empty() {
        return Err(Error::invalid_param(
            "messages",
            "Anthropic needs at least one user or assistant message with content",
        ));
    }
    // A final assistant turn is a prefill, which Anthropic rejects if it ends in whitespace.
    if let Some((a::Role::Assistant, blocks)) = turns.last_mut()
        && let Some(ContentBlock::Text(t)) = blocks.last_mut()
    {
        t.text.truncate(t.text.trim_end().len());
    }
    if let Some(text) = req
        .response_format
        .as_ref()
        .and_then(response_format_instruction)
    {
        system.push(ContentBlock::text(text));
    }
    let messages = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            if role == a::Role::User {
                // Anthropic rejects a user turn whose tool results do not come first.
                blocks.sort_by_key(|b| !matches!(b, ContentBlock::ToolResult(_)));
            }
            InputMessage {
                role,
                content: MessageContent::Blocks(blocks),
            }
        })
        .collect();

    let tools = match &req.tools {
        Some(tools) if !tools.is_empty() => Some(
            tools
                .iter()
                .enumerate()
                .map(|(i, t)| convert_tool(t, i))
                .collect::<Result<Vec<_>>>()?,
        ),
        _ => None,
    };
    let tool_choice = if tools.is_some() {
        convert_tool_choice(req.tool_choice.as_ref(), req.parallel_tool_calls)
    } else {
        None
    };

    let thinking = thinking_config(req)?;
    let mut max_tokens = req.max_output_tokens().unwrap_or(default_max_tokens);
    if let Some(ThinkingConfig::Enabled { budget_tokens }) = &thinking {
        // Anthropic counts thinking within max_tokens and needs room beyond the budget; the
        // client's cap was meant for the answer, so it is added on top.
        if max_tokens <= *budget_tokens {
            max_tokens = budget_tokens.saturating_add(max_tokens);
        }
    }

    let stop = req.stop_sequences();
    let mut out = MessagesRequest::new(upstream_model, messages);
    out.system = (!system.is_empty()).then_some(SystemPrompt::Blocks(system));
    out.max_tokens = Some(max_tokens);
    out.metadata = req.user.as_ref().map(|user| Metadata {
        user_id: Some(user.clone()),
        extra: Extra::new(),
    });
    out.stop_sequences = (!stop.is_empty()).then_some(stop);
    out.stream = req.stream;
    // Anthropic accepts temperature in 0..=1 only; out-of-range values are passed on for the
    // upstream to reject with its own message rather than silently changed.
    out.temperature = req.temperature;
    out.top_p = req.top_p;
    out.top_k = top_k(req)?;
    out.tools = tools;
    out.tool_choice = tool_choice;
    out.thinking = thinking;
    Ok(out)
}

/// Append blocks to the conversation, merging with the previous turn of the same role.
fn push_turn(
    turns: &mut Vec<(a::Role, Vec<ContentBlock>)>,
    role: a::Role,
    blocks: Vec<ContentBlock>,
) {
    if blocks.is_empty() {
        // Anthropic rejects empty turns; a message with no content adds nothing.
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// A `cache_control` on a canonical message (LiteLLM's convention) goes on its last block.
fn apply_cache_control(m: &Message, blocks: &mut [ContentBlock]) {
    let Some(cc) = m
        .extra
        .get(CACHE_CONTROL)
        .and_then(|v| serde_json::from_value::<CacheControl>(v.clone()).ok())
    else {
        return;
    };
    if let Some(slot) = blocks.last_mut().and_then(ContentBlock::cache_control_mut) {
        *slot = Some(cc);
    }
}

/// A text block, or nothing for whitespace-only text (which Anthropic rejects).
fn text_block(text: &str) -> Option<ContentBlock> {
    (!text.trim().is_empty()).then(|| ContentBlock::text(text))
}

fn system_blocks(m: &Message, i: usize) -> Result<Vec<ContentBlock>> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(ChatContent::Text(s)) => Ok(text_block(s).into_iter().collect()),
        Some(ChatContent::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => text_block(text).map(Ok),
                _ => Some(Err(Error::invalid_param(
                    &format!("messages[{i}].content"),
                    "system and developer messages may contain only text",
                ))),
            })
            .collect(),
    }
}

fn user_blocks(m: &Message, i: usize) -> Result<Vec<ContentBlock>> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(ChatContent::Text(s)) => Ok(text_block(s).into_iter().collect()),
        Some(ChatContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, p)| part_block(p, &format!("messages[{i}].content[{j}]")).transpose())
            .collect(),
    }
}

/// One content part as a block; `None` for empty text.
fn part_block(part: &ContentPart, param: &str) -> Result<Option<ContentBlock>> {
    match part {
        ContentPart::Text { text } => Ok(text_block(text)),
        ContentPart::ImageUrl { image_url } => Ok(Some(ContentBlock::Image(ImageBlock {
            source: image_source(&image_url.url, param)?,
            cache_control: None,
            extra: Extra::new(),
        }))),
        ContentPart::InputAudio { .. } => Err(Error::invalid_param(
            param,
            "Anthropic models do not accept audio input",
        )),
        ContentPart::File { file } => file_block(file, param).map(Some),
    }
}

/// `(media_type, base64 data)` of a base64 `data:` URI.
pub(crate) fn parse_data_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri
        .get(..5)
        .filter(|s| s.eq_ignore_ascii_case("data:"))
        .and(uri.get(5..))?;
    let (meta, data) = rest.split_once(',')?;
    let mut params = meta.split(';');
    let media_type = params.next().filter(|t| !t.is_empty())?;
    params
        .any(|p| p.eq_ignore_ascii_case("base64"))
        .then_some((media_type, data))
}

fn image_source(url: &str, param: &str) -> Result<ImageSource> {
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(ImageSource::Url {
            url: url.to_owned(),
        });
    }
    match parse_data_uri(url) {
        Some((media_type, data)) => Ok(ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        }),
        None => Err(Error::invalid_param(
            param,
            "an image must be an http(s) URL or a base64 `data:` URI (data:<type>;base64,<data>)",
        )),
    }
}

/// An OpenAI file part: only inline PDFs have an Anthropic equivalent (a document block).
fn file_block(file: &Value, param: &str) -> Result<ContentBlock> {
    let pdf = file
        .get("file_data")
        .and_then(Value::as_str)
        .and_then(parse_data_uri)
        .filter(|(media_type, _)| media_type.eq_ignore_ascii_case("application/pdf"));
    let Some((media_type, data)) = pdf else {
        return Err(Error::invalid_param(
            param,
            "Anthropic accepts files only as inline PDFs (`file_data` as a base64 data: URI); \
             file ids are not portable across providers",
        ));
    };
    Ok(ContentBlock::Document(DocumentBlock {
        source: json!({"type": "base64", "media_type": media_type, "data": data}),
        title: file
            .get("filename")
            .and_then(Value::as_str)
            .map(str::to_owned),
        context: None,
        citations: None,
        cache_control: None,
        extra: Extra::new(),
    }))
}

fn assistant_blocks(m: &Message, i: usize) -> Result<Vec<ContentBlock>> {
    // Thinking first: Anthropic requires it to open the assistant turn.
    let mut blocks = thinking_blocks(m, i)?;
    match &m.content {
        None => {}
        Some(ChatContent::Text(s)) => blocks.extend(text_block(s)),
        Some(ChatContent::Parts(parts)) => {
            for p in parts {
                match p {
                    ContentPart::Text { text } => blocks.extend(text_block(text)),
                    _ => {
                        return Err(Error::invalid_param(
                            &format!("messages[{i}].content"),
                            "assistant messages may contain only text",
                        ));
                    }
                }
            }
        }
    }
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        let args = call.function.arguments.trim();
        let input = if args.is_empty() {
            Value::Object(Map::new())
        } else {
            match serde_json::from_str::<Value>(args) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) | Err(_) => {
                    return Err(Error::invalid_param(
                        &format!("messages[{i}].tool_calls[{j}].function.arguments"),
                        format!(
                            "arguments of tool call `{}` must be a JSON object",
                            call.function.name
                        ),
                    ));
                }
            }
        };
        blocks.push(ContentBlock::ToolUse(ToolUseBlock {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input,
            cache_control: None,
            extra: Extra::new(),
        }));
    }
    Ok(blocks)
}

/// The thinking blocks to replay for an assistant message, from what
/// [`from_anthropic_response`] stored; reasoning without a signature is dropped, since
/// Anthropic rejects unsigned thinking.
fn thinking_blocks(m: &Message, i: usize) -> Result<Vec<ContentBlock>> {
    if let Some(stored) = m.extra.get(THINKING_BLOCKS) {
        let blocks: Vec<ContentBlock> = serde_json::from_value(stored.clone()).map_err(|e| {
            Error::invalid_param(
                &format!("messages[{i}].{THINKING_BLOCKS}"),
                format!("must be a list of Anthropic thinking blocks: {e}"),
            )
        })?;
        if let Some(bad) = blocks.iter().find(|b| {
            !matches!(
                b,
                ContentBlock::Thinking(_) | ContentBlock::RedactedThinking(_)
            )
        }) {
            return Err(Error::invalid_param(
                &format!("messages[{i}].{THINKING_BLOCKS}"),
                format!("may hold only thinking blocks, found `{}`", bad.kind()),
            ));
        }
        return Ok(blocks);
    }
    let reasoning = m.reasoning_content.as_deref().filter(|r| !r.is_empty());
    let signature = m
        .extra
        .get(REASONING_SIGNATURE)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    Ok(match (reasoning, signature) {
        (Some(thinking), Some(signature)) => vec![ContentBlock::Thinking(ThinkingBlock {
            thinking: thinking.to_owned(),
            signature: Some(signature.to_owned()),
            extra: Extra::new(),
        })],
        _ => Vec::new(),
    })
}

fn tool_result_block(m: &Message, i: usize) -> Result<ContentBlock> {
    let Some(id) = m.tool_call_id.as_ref() else {
        return Err(Error::invalid_param(
            &format!("messages[{i}].tool_call_id"),
            format!("messages[{i}] has role `tool` but no `tool_call_id`"),
        ));
    };
    let content = match &m.content {
        None => None,
        Some(ChatContent::Text(s)) if s.is_empty() => None,
        Some(ChatContent::Text(s)) => Some(MessageContent::Text(s.clone())),
        Some(ChatContent::Parts(parts)) => {
            let blocks = parts
                .iter()
                .enumerate()
                .filter_map(|(j, p)| {
                    part_block(p, &format!("messages[{i}].content[{j}]")).transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            (!blocks.is_empty()).then_some(MessageContent::Blocks(blocks))
        }
    };
    Ok(ContentBlock::ToolResult(ToolResultBlock {
        tool_use_id: id.clone(),
        content,
        is_error: m.extra.get("is_error").and_then(Value::as_bool),
        cache_control: None,
        extra: Extra::new(),
    }))
}

fn convert_tool(t: &weir_types::chat::Tool, i: usize) -> Result<a::Tool> {
    if t.kind != "function" {
        return Err(Error::invalid_param(
            &format!("tools[{i}].type"),
            format!("Anthropic supports only `function` tools, not `{}`", t.kind),
        ));
    }
    let input_schema = match &t.function.parameters {
        None | Some(Value::Null) => json!({"type": "object"}),
        Some(Value::Object(schema)) => {
            // Anthropic requires `"type": "object"`; OpenAI lets it be implied.
            let mut schema = schema.clone();
            schema.entry("type").or_insert_with(|| json!("object"));
            Value::Object(schema)
        }
        Some(_) => {
            return Err(Error::invalid_param(
                &format!("tools[{i}].function.parameters"),
                "must be a JSON Schema object",
            ));
        }
    };
    Ok(a::Tool {
        kind: None,
        name: t.function.name.clone(),
        description: t.function.description.clone(),
        input_schema: Some(input_schema),
        cache_control: t
            .extra
            .get(CACHE_CONTROL)
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
        extra: Extra::new(),
    })
}

fn convert_tool_choice(
    choice: Option<&ChatToolChoice>,
    parallel: Option<bool>,
) -> Option<ToolChoice> {
    // Only `false` changes anything: parallel calls are Anthropic's default too.
    let disable = (parallel == Some(false)).then_some(true);
    match choice {
        None => disable.map(|d| ToolChoice::Auto {
            disable_parallel_tool_use: Some(d),
        }),
        Some(ChatToolChoice::Mode(ToolChoiceMode::None)) => Some(ToolChoice::None),
        Some(ChatToolChoice::Mode(ToolChoiceMode::Auto)) => Some(ToolChoice::Auto {
            disable_parallel_tool_use: disable,
        }),
        Some(ChatToolChoice::Mode(ToolChoiceMode::Required)) => Some(ToolChoice::Any {
            disable_parallel_tool_use: disable,
        }),
        Some(ChatToolChoice::Named(named)) => Some(ToolChoice::Tool {
            name: named.function.name.clone(),
            disable_parallel_tool_use: disable,
        }),
    }
}

/// Anthropic `thinking` from the request's extra fields: a native `thinking` object wins,
/// else `reasoning_effort` is turned into a budget.
fn thinking_config(req: &ChatRequest) -> Result<Option<ThinkingConfig>> {
    match req.extra.get("thinking") {
        None | Some(Value::Null) => {}
        Some(v) => {
            // Thinking modes newer than weir pass through (ThinkingConfig::Other), but the
            // value must at least look like one.
            if v.get("type").and_then(Value::as_str).is_none() {
                return Err(Error::invalid_param(
                    "thinking",
                    "must be an Anthropic thinking object such as \
                     {\"type\": \"enabled\", \"budget_tokens\": 2048}",
                ));
            }
            return serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                Error::invalid_param("thinking", format!("not an Anthropic thinking object: {e}"))
            });
        }
    }
    match req.extra.get("reasoning_effort") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(effort)) if effort == "none" => Ok(None),
        Some(Value::String(effort)) => match effort_budget(effort) {
            Some(budget_tokens) => Ok(Some(ThinkingConfig::Enabled { budget_tokens })),
            None => Err(Error::invalid_param(
                "reasoning_effort",
                format!(
                    "unknown reasoning_effort `{effort}`; use none, minimal, low, medium or high"
                ),
            )),
        },
        Some(_) => Err(Error::invalid_param("reasoning_effort", "must be a string")),
    }
}

/// `top_k` is not an OpenAI field, but OpenAI-compatible clients send it for servers that
/// take it; Anthropic does.
fn top_k(req: &ChatRequest) -> Result<Option<u32>> {
    match req.extra.get("top_k") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|k| u32::try_from(k).ok())
            .map(Some)
            .ok_or_else(|| Error::invalid_param("top_k", "must be a non-negative integer")),
    }
}

/// The system-prompt instruction standing in for `response_format`, which Anthropic lacks.
/// `None` for plain text.
pub fn response_format_instruction(format: &ResponseFormat) -> Option<String> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(
            "Respond with a single valid JSON object and nothing else: no prose before or \
             after it, no Markdown code fences."
                .to_owned(),
        ),
        ResponseFormat::JsonSchema { json_schema } => {
            let mut text = format!(
                "Respond with a single JSON object that conforms to the JSON Schema `{}` below, \
                 and nothing else: no prose before or after it, no Markdown code fences.",
                json_schema.name
            );
            if let Some(description) = &json_schema.description {
                text.push_str("\nWhat the object is for: ");
                text.push_str(description);
            }
            if let Some(schema) = &json_schema.schema {
                text.push_str("\n\n");
                text.push_str(&schema.to_string());
            }
            Some(text)
        }
    }
}

/// A Messages response as a canonical chat response.
pub fn from_anthropic_response(resp: MessagesResponse) -> ChatResponse {
    let mut text: Option<String> = None;
    let mut reasoning = String::new();
    let mut reasoning_blocks: Vec<ContentBlock> = Vec::new();
    let mut tool_calls = Vec::new();
    for block in resp.content {
        match block {
            ContentBlock::Text(t) => text.get_or_insert_with(String::new).push_str(&t.text),
            ContentBlock::Thinking(t) => {
                reasoning.push_str(&t.thinking);
                reasoning_blocks.push(ContentBlock::Thinking(t));
            }
            b @ ContentBlock::RedactedThinking(_) => reasoning_blocks.push(b),
            ContentBlock::ToolUse(t) => tool_calls.push(ToolCall {
                id: t.id,
                kind: "function".into(),
                function: FunctionCall {
                    name: t.name,
                    arguments: t.input.to_string(),
                },
            }),
            // Server tool calls and their results, documents...: run and consumed by
            // Anthropic, with no canonical equivalent; the text blocks carry the answer.
            _ => {}
        }
    }
    let mut extra = Extra::new();
    match reasoning_blocks.as_slice() {
        [] => {}
        [
            ContentBlock::Thinking(ThinkingBlock {
                signature: Some(signature),
                ..
            }),
        ] => {
            extra.insert(REASONING_SIGNATURE.into(), Value::String(signature.clone()));
        }
        blocks => {
            if let Ok(v) = serde_json::to_value(blocks) {
                extra.insert(THINKING_BLOCKS.into(), v);
            }
        }
    }
    let content = match text {
        Some(t) => Some(t),
        // OpenAI sends `null` content when the model only called tools.
        None if !tool_calls.is_empty() => None,
        None => Some(String::new()),
    };
    ChatResponse {
        id: resp.id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: resp.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                refusal: None,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                extra,
            },
            finish_reason: resp.stop_reason.as_ref().map(finish_reason),
            logprobs: None,
        }],
        usage: Some(usage_to_canonical(&resp.usage)),
        system_fingerprint: None,
        service_tier: None,
        extra: Extra::new(),
    }
}

/// Anthropic's stop reason as a canonical finish reason.
pub fn finish_reason(reason: &StopReason) -> FinishReason {
    match reason {
        // pause_turn: a server-tool loop paused; the turn ended normally from the client's view.
        StopReason::EndTurn | StopReason::StopSequence | StopReason::PauseTurn => {
            FinishReason::Stop
        }
        StopReason::MaxTokens => FinishReason::Length,
        StopReason::ToolUse => FinishReason::ToolCalls,
        StopReason::Refusal => FinishReason::ContentFilter,
        StopReason::Other(s) if s == "model_context_window_exceeded" => FinishReason::Length,
        StopReason::Other(s) => FinishReason::Other(s.clone()),
    }
}

/// Anthropic usage as canonical usage: `prompt_tokens` counts every input token, cached or
/// not, and the details say how many were read from and written to the cache.
pub fn usage_to_canonical(u: &a::Usage) -> Usage {
    canonical_usage(
        u.input_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        u.output_tokens,
    )
}

/// The shared arithmetic of [`usage_to_canonical`], also used for stream usage.
pub(crate) fn canonical_usage(
    input: u64,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
    output: u64,
) -> Usage {
    let read = cache_read.unwrap_or(0);
    let creation = cache_creation.unwrap_or(0);
    let prompt = input.saturating_add(read).saturating_add(creation);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
        total_tokens: prompt.saturating_add(output),
        prompt_tokens_details: (cache_read.is_some() || cache_creation.is_some()).then_some(
            PromptTokensDetails {
                cached_tokens: Some(read),
                cache_creation_tokens: Some(creation),
                audio_tokens: None,
            },
        ),
        completion_tokens_details: None,
    }
}

#[cfg(test)]
mod tests;
