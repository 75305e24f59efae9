//! A Messages request as a canonical chat request, for providers that do not speak the
//! Messages API.
//!
//! Anthropic puts tool results inside user turns and tool calls inside assistant turns, as
//! blocks; OpenAI has separate `tool` messages and `tool_calls`. A user turn becomes its tool
//! messages first, in block order, then one user message with the rest, since OpenAI requires
//! tool messages to follow the assistant message that called them.
//!
//! What has no OpenAI equivalent is translated where a faithful form exists and refused
//! otherwise: Anthropic server tools (web search...) cannot run elsewhere, so they are an
//! `InvalidRequest`; `cache_control` is dropped (OpenAI-style providers cache on their own);
//! thinking signatures and redacted thinking are dropped (only Anthropic can read them).

use serde_json::{Value, json};
use weir_types::Extra;
use weir_types::anthropic::{
    ContentBlock, ImageSource, InputMessage, MessageContent, MessagesRequest, Role, ThinkingConfig,
    ToolChoice, ToolResultBlock,
};
use weir_types::chat::{
    ChatRequest, ContentPart, FunctionCall, FunctionDefinition, ImageUrl, JsonSchemaFormat,
    Message, MessageContent as ChatContent, NamedFunction, NamedToolChoice, ResponseFormat, Stop,
    StreamOptions, Tool, ToolCall, ToolChoice as ChatToolChoice, ToolChoiceMode,
};

use crate::error::{Error, Result};

/// A Messages request as a canonical chat request.
///
/// `thinking` becomes `reasoning_effort` (the field OpenAI-style reasoning models take):
/// an unknown `thinking` field would make OpenAI reject the request. Fails with
/// [`Error::InvalidRequest`] for content a non-Anthropic model cannot receive.
pub fn to_chat_request(req: &MessagesRequest) -> Result<ChatRequest> {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        let text = system.text();
        if !text.is_empty() {
            messages.push(Message::system(text));
        }
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::User => user_messages(m, i, &mut messages)?,
            Role::Assistant => messages.push(assistant_message(m, i)?),
        }
    }

    let mut chat = ChatRequest::new(req.model.clone(), messages);
    chat.max_tokens = req.max_tokens;
    chat.temperature = req.temperature;
    chat.top_p = req.top_p;
    chat.stop = req
        .stop_sequences
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(|s| Stop::Many(s.clone()));
    chat.user = req.metadata.as_ref().and_then(|m| m.user_id.clone());
    chat.stream = req.stream;
    if req.stream == Some(true) {
        // message_delta needs the final usage, which OpenAI sends only on request.
        chat.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            extra: Extra::new(),
        });
    }
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        chat.tools = Some(
            tools
                .iter()
                .enumerate()
                .map(|(i, t)| convert_tool(t, i))
                .collect::<Result<_>>()?,
        );
    }
    if let Some(choice) = &req.tool_choice {
        let (choice, disable_parallel) = convert_tool_choice(choice);
        chat.tool_choice = Some(choice);
        if disable_parallel == Some(true) {
            chat.parallel_tool_calls = Some(false);
        }
    }
    if let Some(effort) = req.thinking.as_ref().and_then(reasoning_effort) {
        chat.extra.insert("reasoning_effort".into(), json!(effort));
    }
    chat.response_format = output_format(req)?;
    // top_k and Anthropic-only fields (service_tier, container...) are not sent: OpenAI
    // rejects fields it does not know.
    Ok(chat)
}

/// Anthropic's structured output (`output_config.format`, or the older `output_format`) as
/// the canonical `response_format`, so a translated call keeps its schema. A format weir
/// cannot express is refused, never dropped: the caller would get plain text with a 200.
fn output_format(req: &MessagesRequest) -> Result<Option<ResponseFormat>> {
    let (path, format) = match (
        req.extra.get("output_config"),
        req.extra.get("output_format"),
    ) {
        (Some(config), _) => match config.get("format") {
            Some(f) if !f.is_null() => ("output_config.format", f),
            _ => return Ok(None),
        },
        (None, Some(f)) if !f.is_null() => ("output_format", f),
        _ => return Ok(None),
    };
    match format.get("type").and_then(|t| t.as_str()) {
        Some("json_schema") => {
            let Some(schema) = format.get("schema").filter(|s| s.is_object()) else {
                return Err(Error::invalid_param(
                    &format!("{path}.schema"),
                    format!("`{path}` of type json_schema needs a `schema` object"),
                ));
            };
            Ok(Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: "output".into(),
                    description: None,
                    schema: Some(schema.clone()),
                    strict: Some(true),
                },
            }))
        }
        other => Err(Error::invalid_param(
            &format!("{path}.type"),
            format!(
                "`{path}` type {} cannot be translated for this model: use `json_schema`",
                other.map_or_else(|| "(missing)".to_owned(), |t| format!("`{t}`"))
            ),
        )),
    }
}

/// The closest `reasoning_effort` for a thinking budget (the inverse of the provider's
/// effort → budget table, by ranges). `None` when thinking is off.
fn reasoning_effort(thinking: &ThinkingConfig) -> Option<&'static str> {
    match thinking {
        ThinkingConfig::Enabled { budget_tokens } => Some(match budget_tokens {
            0..4096 => "low",
            4096..16384 => "medium",
            _ => "high",
        }),
        // Disabled, or a mode added later whose meaning is unknown here: leave the default.
        ThinkingConfig::Disabled | ThinkingConfig::Other(_) => None,
    }
}

/// The canonical messages for one user turn: its tool results as tool messages, then the
/// rest as one user message.
fn user_messages(m: &InputMessage, i: usize, out: &mut Vec<Message>) -> Result<()> {
    let blocks = match &m.content {
        MessageContent::Text(s) => {
            out.push(Message::user(s.clone()));
            return Ok(());
        }
        MessageContent::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        match block {
            ContentBlock::ToolResult(result) => out.push(tool_message(result, &param, &mut parts)?),
            other => parts.push(user_part(other, &param)?),
        }
    }
    match parts.as_slice() {
        [] => {}
        [ContentPart::Text { text }] => out.push(Message::user(text.clone())),
        _ => {
            let mut msg = Message::user(String::new());
            msg.content = Some(ChatContent::Parts(parts));
            out.push(msg);
        }
    }
    Ok(())
}

/// A tool result as a tool message. OpenAI tool messages hold text only, so images in the
/// result go to `images`, which become part of the user message that follows.
fn tool_message(
    result: &ToolResultBlock,
    param: &str,
    images: &mut Vec<ContentPart>,
) -> Result<Message> {
    let mut texts = Vec::new();
    match &result.content {
        None => {}
        Some(MessageContent::Text(s)) => texts.push(s.clone()),
        Some(MessageContent::Blocks(blocks)) => {
            for block in blocks {
                match user_part(block, param)? {
                    ContentPart::Text { text } => texts.push(text),
                    other => images.push(other),
                }
            }
        }
    }
    let mut text = texts.join("\n");
    if result.is_error == Some(true) {
        // OpenAI has no error flag on tool results; the model still needs to know.
        text = if text.is_empty() {
            "Error".to_owned()
        } else {
            format!("Error: {text}")
        };
    }
    Ok(Message::tool(result.tool_use_id.clone(), text))
}

/// A block of a user turn as a content part.
fn user_part(block: &ContentBlock, param: &str) -> Result<ContentPart> {
    match block {
        ContentBlock::Text(t) => Ok(ContentPart::Text {
            text: t.text.clone(),
        }),
        ContentBlock::Image(img) => {
            let url = match &img.source {
                ImageSource::Base64 { media_type, data } => {
                    format!("data:{media_type};base64,{data}")
                }
                ImageSource::Url { url } => url.clone(),
                ImageSource::Other(v) => {
                    return Err(unsupported(
                        param,
                        &format!(
                            "image source `{}`",
                            v.get("type").and_then(Value::as_str).unwrap_or("?")
                        ),
                    ));
                }
            };
            Ok(ContentPart::ImageUrl {
                image_url: ImageUrl { url, detail: None },
            })
        }
        ContentBlock::Document(doc) => document_part(&doc.source, doc.title.as_deref(), param),
        other => Err(unsupported(
            param,
            &format!("`{}` blocks in a user message", other.kind()),
        )),
    }
}

/// Documents: inline PDFs become OpenAI file parts, plain-text documents text parts.
fn document_part(source: &Value, title: Option<&str>, param: &str) -> Result<ContentPart> {
    let field = |k: &str| source.get(k).and_then(Value::as_str);
    match (field("type"), field("media_type"), field("data")) {
        (Some("base64"), Some(media_type), Some(data)) if media_type == "application/pdf" => {
            Ok(ContentPart::File {
                file: json!({
                    "filename": title.unwrap_or("document.pdf"),
                    "file_data": format!("data:{media_type};base64,{data}"),
                }),
            })
        }
        (Some("text"), _, Some(data)) => Ok(ContentPart::Text {
            text: match title {
                Some(title) => format!("{title}\n\n{data}"),
                None => data.to_owned(),
            },
        }),
        (kind, _, _) => Err(unsupported(
            param,
            &format!("documents with a `{}` source", kind.unwrap_or("?")),
        )),
    }
}

fn unsupported(param: &str, what: &str) -> Error {
    Error::invalid_param(
        param,
        format!("{what} cannot be sent to a non-Anthropic model"),
    )
}

fn assistant_message(m: &InputMessage, i: usize) -> Result<Message> {
    let blocks = match &m.content {
        MessageContent::Text(s) => return Ok(Message::assistant(s.clone())),
        MessageContent::Blocks(blocks) => blocks,
    };
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match block {
            ContentBlock::Text(t) => text.get_or_insert_with(String::new).push_str(&t.text),
            ContentBlock::Thinking(t) => reasoning
                .get_or_insert_with(String::new)
                .push_str(&t.thinking),
            ContentBlock::ToolUse(t) => tool_calls.push(ToolCall {
                id: t.id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: t.name.clone(),
                    arguments: t.input.to_string(),
                },
            }),
            // Only Anthropic can read redacted thinking.
            ContentBlock::RedactedThinking(_) => {}
            b if b.is_malformed() => {
                return Err(Error::invalid_param(
                    &format!("messages[{i}].content[{j}]"),
                    format!("malformed `{}` block", b.kind()),
                ));
            }
            // Server tool calls and results (web search...) were run by Anthropic; the
            // assistant's text around them carries what the conversation needs.
            ContentBlock::Other(_) => {}
            other => {
                return Err(Error::invalid_param(
                    &format!("messages[{i}].content[{j}]"),
                    format!(
                        "`{}` blocks are not allowed in an assistant message",
                        other.kind()
                    ),
                ));
            }
        }
    }
    let mut msg = Message::assistant(String::new());
    msg.content = match text {
        Some(t) => Some(ChatContent::Text(t)),
        None if !tool_calls.is_empty() => None,
        None => Some(ChatContent::Text(String::new())),
    };
    msg.reasoning_content = reasoning;
    msg.tool_calls = (!tool_calls.is_empty()).then_some(tool_calls);
    Ok(msg)
}

fn convert_tool(t: &weir_types::anthropic::Tool, i: usize) -> Result<Tool> {
    if !t.is_client_tool() {
        return Err(Error::invalid_param(
            &format!("tools[{i}]"),
            format!(
                "`{}` is an Anthropic server tool; only Anthropic models can run it",
                t.kind.as_deref().unwrap_or("?")
            ),
        ));
    }
    Ok(Tool {
        kind: "function".into(),
        function: FunctionDefinition {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters: Some(
                t.input_schema
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object"})),
            ),
            strict: None,
        },
        extra: Extra::new(),
    })
}

/// The canonical tool choice, and whether parallel tool use was disabled.
fn convert_tool_choice(choice: &ToolChoice) -> (ChatToolChoice, Option<bool>) {
    match choice {
        ToolChoice::Auto {
            disable_parallel_tool_use,
        } => (
            ChatToolChoice::Mode(ToolChoiceMode::Auto),
            *disable_parallel_tool_use,
        ),
        ToolChoice::Any {
            disable_parallel_tool_use,
        } => (
            ChatToolChoice::Mode(ToolChoiceMode::Required),
            *disable_parallel_tool_use,
        ),
        ToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        } => (
            ChatToolChoice::Named(NamedToolChoice {
                kind: "function".into(),
                function: NamedFunction { name: name.clone() },
            }),
            *disable_parallel_tool_use,
        ),
        ToolChoice::None => (ChatToolChoice::Mode(ToolChoiceMode::None), None),
    }
}
