//! Cached answers as streams, and finished streams as cacheable answers.
//!
//! - [`chunks_from_response`] turns a complete [`ChatResponse`] into the chunks an OpenAI
//!   upstream would have streamed for it, so a cache hit on a streaming request looks like a
//!   live answer: a role chunk, small word-sized pieces of reasoning, content and refusal, tool
//!   calls as a head delta (index, id, type, name, empty arguments) then argument fragments, a
//!   finish chunk, then optionally the usage chunk with no choices.
//! - [`replay`] serves those chunks as a stream, optionally paced with tokio's clock.
//! - [`response_from_chunks`] is the inverse: it assembles a finished stream into the complete
//!   response, so a streamed answer can be stored once it is complete.
//!
//! Round trip: `response_from_chunks(&chunks_from_response(r, true)) == Some(r)` for responses
//! whose choices all have a finish reason and whose unmodelled fields (`extra`) are empty.
//! Unmodelled message fields are not streamed or assembled: their streamed shapes differ by
//! provider (some are fragments to concatenate, some are repeated whole), and caching a wrong
//! guess would be worse than leaving them out.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use weir_types::Extra;
use weir_types::chat::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Delta, FinishReason, FunctionCall,
    FunctionCallDelta, ResponseMessage, Role, ToolCall, ToolCallDelta,
};

use crate::error::Error;

/// Longest text piece, in chars: bounds the pieces of text without spaces (CJK, long URLs),
/// which a tokenizer would also split.
const MAX_PIECE_CHARS: usize = 16;

/// Size of a tool-call argument fragment, in chars (upstreams send a few tokens at a time).
const ARGUMENT_FRAGMENT_CHARS: usize = 8;

/// The chunks an OpenAI upstream would stream for `resp`.
///
/// Every chunk has the response's id, created and model (and system fingerprint and service
/// tier). With several choices (`n`), their chunks are interleaved, one choice per chunk,
/// each with its own index, as OpenAI sends them. The usage chunk comes last and only when
/// `include_usage` is set (the request's `stream_options.include_usage`) and usage is known.
pub fn chunks_from_response(resp: &ChatResponse, include_usage: bool) -> Vec<ChatChunk> {
    let mut base = ChatChunk::new(resp.id.clone(), resp.created, resp.model.clone());
    base.system_fingerprint = resp.system_fingerprint.clone();
    base.service_tier = resp.service_tier.clone();

    let lanes: Vec<Vec<ChunkChoice>> = resp.choices.iter().map(choice_deltas).collect();
    let total = lanes.iter().map(Vec::len).sum::<usize>() + 1;
    let mut lanes: Vec<_> = lanes.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(total);
    // Round-robin over the choices: every choice advances at the same pace.
    loop {
        let before = out.len();
        for lane in &mut lanes {
            if let Some(choice) = lane.next() {
                let mut chunk = base.clone();
                chunk.choices.push(choice);
                out.push(chunk);
            }
        }
        if out.len() == before {
            break;
        }
    }
    if include_usage && let Some(usage) = &resp.usage {
        let mut chunk = base;
        chunk.usage = Some(usage.clone());
        out.push(chunk);
    }
    out
}

/// The deltas of one choice, in streaming order.
fn choice_deltas(choice: &Choice) -> Vec<ChunkChoice> {
    let msg = &choice.message;
    let item = |delta: Delta| ChunkChoice {
        index: choice.index,
        delta,
        finish_reason: None,
        logprobs: None,
    };
    let mut out = Vec::new();
    // OpenAI opens with the role and `content: ""`, or `content: null` when the model only
    // calls tools; keeping that distinction lets the assembler restore `content` exactly.
    out.push(item(Delta {
        role: Some(msg.role),
        content: msg.content.as_ref().map(|_| String::new()),
        ..Delta::default()
    }));
    // Reasoning comes before the answer, as reasoning models stream it.
    if let Some(text) = &msg.reasoning_content {
        out.extend(present_pieces(text).into_iter().map(|p| {
            item(Delta {
                reasoning_content: Some(p.to_owned()),
                ..Delta::default()
            })
        }));
    }
    if let Some(text) = &msg.content {
        out.extend(pieces(text, MAX_PIECE_CHARS).into_iter().map(|p| {
            item(Delta {
                content: Some(p.to_owned()),
                ..Delta::default()
            })
        }));
    }
    if let Some(text) = &msg.refusal {
        out.extend(present_pieces(text).into_iter().map(|p| {
            item(Delta {
                refusal: Some(p.to_owned()),
                ..Delta::default()
            })
        }));
    }
    for (index, call) in msg.tool_calls.iter().flatten().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let tool_delta = |d: ToolCallDelta| {
            item(Delta {
                tool_calls: Some(vec![d]),
                ..Delta::default()
            })
        };
        out.push(tool_delta(ToolCallDelta {
            index,
            id: Some(call.id.clone()),
            kind: Some(call.kind.clone()),
            function: Some(FunctionCallDelta {
                name: Some(call.function.name.clone()),
                arguments: Some(String::new()),
            }),
        }));
        let args: Vec<char> = call.function.arguments.chars().collect();
        for fragment in args.chunks(ARGUMENT_FRAGMENT_CHARS) {
            out.push(tool_delta(ToolCallDelta {
                index,
                id: None,
                kind: None,
                function: Some(FunctionCallDelta {
                    name: None,
                    arguments: Some(fragment.iter().collect()),
                }),
            }));
        }
    }
    if choice.finish_reason.is_some() || choice.logprobs.is_some() {
        out.push(ChunkChoice {
            index: choice.index,
            delta: Delta::default(),
            finish_reason: choice.finish_reason.clone(),
            // Per-token logprobs cannot be split to match our pieces; they ride whole on the
            // last chunk, which the assembler (and clients) merge like any other.
            logprobs: choice.logprobs.clone(),
        });
    }
    out
}

/// Word-ish pieces of `text`: each word with the whitespace after it, and no piece longer than
/// `max_chars` chars. Concatenated, they are exactly `text`; splits fall on char boundaries.
fn pieces(text: &str, max_chars: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = 0;
    let mut after_space = false;
    for (i, c) in text.char_indices() {
        let word_starts = after_space && !c.is_whitespace();
        if (word_starts || chars >= max_chars) && i > start {
            out.push(&text[start..i]);
            start = i;
            chars = 0;
        }
        after_space = c.is_whitespace();
        chars += 1;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Like [`pieces`], but an empty text still yields one (empty) piece, so that a field which is
/// present but empty survives the round trip as `Some("")`.
fn present_pieces(text: &str) -> Vec<&str> {
    let out = pieces(text, MAX_PIECE_CHARS);
    if out.is_empty() { vec![""] } else { out }
}

/// Serves `chunks` as a stream. With `pace`, waits that long (on tokio's clock, so tests can
/// pause time) between consecutive chunks; the first chunk is immediate.
pub fn replay(
    chunks: Vec<ChatChunk>,
    pace: Option<Duration>,
) -> BoxStream<'static, Result<ChatChunk, Error>> {
    let Some(pace) = pace.filter(|p| !p.is_zero()) else {
        return futures::stream::iter(chunks.into_iter().map(Ok)).boxed();
    };
    futures::stream::iter(chunks.into_iter().enumerate())
        .then(move |(i, chunk)| async move {
            if i > 0 {
                tokio::time::sleep(pace).await;
            }
            Ok(chunk)
        })
        .boxed()
}

/// Assembles a finished stream into the complete response.
///
/// Id, created and model come from the first chunk; per choice (by index), content, reasoning
/// and refusal are concatenated, tool calls are gathered by their index with their argument
/// fragments concatenated (the first id, type and name seen win), and the last finish reason
/// counts; usage is the last one seen. `None` when there is nothing to assemble or any choice
/// lacks a finish reason: a stream cut short must never be cached as if it were complete.
pub fn response_from_chunks(chunks: &[ChatChunk]) -> Option<ChatResponse> {
    let first = chunks.first()?;
    let mut choices: BTreeMap<u32, ChoiceBuilder> = BTreeMap::new();
    let mut usage = None;
    let mut system_fingerprint = None;
    let mut service_tier = None;
    for chunk in chunks {
        if chunk.usage.is_some() {
            usage.clone_from(&chunk.usage);
        }
        if system_fingerprint.is_none() {
            system_fingerprint.clone_from(&chunk.system_fingerprint);
        }
        if service_tier.is_none() {
            service_tier.clone_from(&chunk.service_tier);
        }
        for choice in &chunk.choices {
            choices.entry(choice.index).or_default().add(choice);
        }
    }
    if choices.is_empty() {
        return None;
    }
    let choices = choices
        .into_iter()
        .map(|(index, b)| b.build(index))
        .collect::<Option<Vec<_>>>()?;
    Some(ChatResponse {
        id: first.id.clone(),
        object: "chat.completion".into(),
        created: first.created,
        model: first.model.clone(),
        choices,
        usage,
        system_fingerprint,
        service_tier,
        extra: Extra::new(),
    })
}

/// One choice being assembled.
#[derive(Default)]
struct ChoiceBuilder {
    role: Option<Role>,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u32, ToolCallBuilder>,
    finish_reason: Option<FinishReason>,
    logprobs: Option<Value>,
}

#[derive(Default)]
struct ToolCallBuilder {
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

impl ChoiceBuilder {
    fn add(&mut self, choice: &ChunkChoice) {
        let d = &choice.delta;
        self.role = self.role.or(d.role);
        append(&mut self.content, d.content.as_deref());
        append(&mut self.reasoning, d.reasoning_content.as_deref());
        append(&mut self.refusal, d.refusal.as_deref());
        for call in d.tool_calls.iter().flatten() {
            let b = self.tool_calls.entry(call.index).or_default();
            // Upstreams send id, type and name once, on the first delta of a call; some repeat
            // them later, which must not duplicate them.
            first_non_empty(&mut b.id, call.id.as_deref());
            first_non_empty(&mut b.kind, call.kind.as_deref());
            if let Some(f) = &call.function {
                first_non_empty(&mut b.name, f.name.as_deref());
                if let Some(args) = &f.arguments {
                    b.arguments.push_str(args);
                }
            }
        }
        if choice.finish_reason.is_some() {
            self.finish_reason.clone_from(&choice.finish_reason);
        }
        if let Some(lp) = &choice.logprobs {
            merge_logprobs(&mut self.logprobs, lp);
        }
    }

    fn build(self, index: u32) -> Option<Choice> {
        let finish_reason = Some(self.finish_reason?);
        let tool_calls: Vec<ToolCall> = self
            .tool_calls
            .into_values()
            .map(|b| ToolCall {
                id: b.id.unwrap_or_default(),
                kind: b.kind.unwrap_or_else(|| "function".into()),
                function: FunctionCall {
                    name: b.name.unwrap_or_default(),
                    arguments: b.arguments,
                },
            })
            .collect();
        Some(Choice {
            index,
            message: ResponseMessage {
                role: self.role.unwrap_or(Role::Assistant),
                content: self.content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                refusal: self.refusal,
                reasoning_content: self.reasoning,
                extra: Extra::new(),
            },
            finish_reason,
            logprobs: self.logprobs,
        })
    }
}

/// Appends a piece; a present piece (even empty) makes the field present.
fn append(acc: &mut Option<String>, piece: Option<&str>) {
    if let Some(piece) = piece {
        acc.get_or_insert_default().push_str(piece);
    }
}

fn first_non_empty(slot: &mut Option<String>, value: Option<&str>) {
    if slot.is_none()
        && let Some(v) = value.filter(|v| !v.is_empty())
    {
        *slot = Some(v.to_owned());
    }
}

/// Merges streamed logprobs: OpenAI sends `{"content": [...], "refusal": [...]}` per chunk,
/// whose arrays concatenate; anything else is replaced by the newer value.
fn merge_logprobs(acc: &mut Option<Value>, new: &Value) {
    match (acc.as_mut(), new) {
        (Some(Value::Object(have)), Value::Object(more)) => {
            for (key, value) in more {
                match (have.get_mut(key), value) {
                    (Some(Value::Array(a)), Value::Array(b)) => a.extend(b.iter().cloned()),
                    // A chunk without refusal tokens says `"refusal": null`: nothing to add.
                    (Some(_), Value::Null) => {}
                    _ => {
                        have.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        _ => *acc = Some(new.clone()),
    }
}

#[cfg(test)]
mod tests;
