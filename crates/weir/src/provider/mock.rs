//! The mock provider: deterministic, offline answers for development and tests.
//!
//! Models:
//! - `mock/echo` replies with the last user message;
//! - `mock/lorem` replies with N words of lorem ipsum (`max_tokens`, else `mock.lorem_tokens`).
//!
//! Both honour tools (the model calls the requested or first tool, with the last user message
//! as `{"input": ...}`, and answers a tool result by echoing it) and `response_format`
//! (`json_object` wraps the reply, `json_schema` gets a minimal instance of the schema).
//! Token usage is deterministic: one token per whitespace-separated word, plus 3 per message.
//!
//! Latency, time to first token, inter-token delay and faults (error rate and status,
//! Retry-After, hangs, streams cut mid-way) come from `mock:` in config, and can be overridden
//! per request with a `mock` object in the request body, e.g.
//! `{"mock": {"status": 429, "retry_after": 2}}` (the official SDKs send it via `extra_body`).
//! All waits use tokio's clock, so tests can pause time.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_types::chat::*;
use weir_types::embeddings::{
    Embedding, EmbeddingUsage, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse,
};
use weir_types::models::Model;

use super::{ChunkStream, Provider, Upstream, UpstreamContext, UpstreamMeta, unix_now};
use crate::config::MockConfig;
use crate::error::{Error, Result};

const LOREM: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet,",
    "consectetur",
    "adipiscing",
    "elit,",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua.",
];

/// Dimensions of mock embeddings when the request sets none.
const DEFAULT_DIMENSIONS: usize = 256;

#[derive(Debug, Clone)]
pub struct MockProvider {
    name: String,
    config: MockConfig,
}

/// Per-request overrides, read from the request's `mock` field.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Directive {
    status: Option<u16>,
    message: Option<String>,
    retry_after: Option<f64>,
    error_rate: Option<f64>,
    hang: Option<bool>,
    cut_after: Option<u32>,
    latency_ms: Option<u64>,
    ttft_ms: Option<u64>,
    inter_token_ms: Option<u64>,
    content: Option<String>,
    reasoning: Option<String>,
}

/// What one call will do, config and directive merged.
struct Plan {
    fail: Option<Error>,
    hang: bool,
    cut_after: Option<u32>,
    latency: Duration,
    ttft: Duration,
    inter_token: Duration,
}

/// The answer the mock computed, before it is shaped as a response or chunks.
struct Answer {
    content: Option<String>,
    reasoning: Option<String>,
    tool_call: Option<ToolCall>,
    prompt_tokens: u64,
    /// The answer reached the request's output cap, so it ends with `length`, as the real
    /// APIs report it.
    truncated: bool,
}

impl Answer {
    fn finish_reason(&self) -> FinishReason {
        if self.tool_call.is_some() {
            FinishReason::ToolCalls
        } else if self.truncated {
            FinishReason::Length
        } else {
            FinishReason::Stop
        }
    }
}

impl MockProvider {
    pub fn new(name: impl Into<String>, config: MockConfig) -> Self {
        Self {
            name: name.into(),
            config,
        }
    }

    fn directive(&self, req: &ChatRequest) -> Result<Directive> {
        match req.extra.get("mock") {
            None => Ok(Directive::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                Error::invalid_param("mock", format!("invalid `mock` directive: {e}"))
            }),
        }
    }

    fn plan(&self, d: &Directive) -> Plan {
        let faults = &self.config.faults;
        let rate = d.error_rate.unwrap_or(if d.status.is_some() {
            1.0
        } else {
            faults.error_rate
        });
        let fail = (rate > 0.0 && fastrand::f64() < rate).then(|| {
            let status = d.status.unwrap_or(faults.error_status);
            let retry_after = d
                .retry_after
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .or(faults.retry_after);
            let message = d
                .message
                .clone()
                .unwrap_or_else(|| format!("mock: injected HTTP {status}"));
            Error::from_upstream(&self.name, status, Some(message), b"", retry_after)
        });
        let ms = Duration::from_millis;
        Plan {
            fail,
            hang: d.hang.unwrap_or(faults.hang),
            cut_after: d.cut_after.or(faults.cut_stream_after),
            latency: d.latency_ms.map(ms).unwrap_or(self.config.latency),
            ttft: d.ttft_ms.map(ms).unwrap_or(self.config.time_to_first_token),
            inter_token: d
                .inter_token_ms
                .map(ms)
                .unwrap_or(self.config.inter_token_delay),
        }
    }

    fn answer(&self, req: &ChatRequest, model: &str, d: &Directive) -> Result<Answer> {
        let prompt_tokens = req
            .messages
            .iter()
            .map(|m| count_words(&m.text()) + 3)
            .sum::<u64>();
        let last = req.messages.last().ok_or_else(|| {
            Error::invalid_param("messages", "`messages` must contain at least one message")
        })?;
        let last_user = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(Message::text)
            .unwrap_or_default();

        // A tool result is answered in words; otherwise call a tool when tools are offered.
        if last.role != Role::Tool
            && let Some(tool) = chosen_tool(req)
        {
            let id = format!("call_{:016x}", hash(&last_user) ^ hash(&tool.function.name));
            return Ok(Answer {
                content: None,
                reasoning: d.reasoning.clone(),
                tool_call: Some(ToolCall {
                    id,
                    kind: "function".into(),
                    function: FunctionCall {
                        name: tool.function.name.clone(),
                        arguments: json!({ "input": last_user }).to_string(),
                    },
                }),
                prompt_tokens,
                truncated: false,
            });
        }

        let cap = req.max_output_tokens().map(|n| n as usize);
        let text = if let Some(c) = &d.content {
            c.clone()
        } else {
            match model {
                "echo" if last.role == Role::Tool => last.text(),
                "echo" => last_user,
                "lorem" => {
                    let n = req.max_output_tokens().unwrap_or(self.config.lorem_tokens) as usize;
                    lorem(n)
                }
                other => {
                    return Err(Error::ModelNotFound {
                        model: format!("{}/{other}", self.name),
                        hint: format!("the mock serves {0}/echo and {0}/lorem", self.name),
                    });
                }
            }
        };
        // One token a word: a longer answer is cut at the cap; lorem writes up to it.
        let words = text.split_whitespace().count();
        let truncated = cap.is_some_and(|cap| words >= cap && (model == "lorem" || words > cap));
        let text = match cap {
            Some(cap) if words > cap => text
                .split_whitespace()
                .take(cap)
                .collect::<Vec<_>>()
                .join(" "),
            _ => text,
        };
        let content = match &req.response_format {
            Some(ResponseFormat::JsonObject) => json!({ "response": text }).to_string(),
            Some(ResponseFormat::JsonSchema { json_schema }) => {
                let schema = json_schema
                    .schema
                    .clone()
                    .unwrap_or(json!({"type": "object"}));
                instance_of(&schema, &text, 0).to_string()
            }
            _ => text,
        };
        Ok(Answer {
            content: Some(content),
            reasoning: d.reasoning.clone(),
            tool_call: None,
            prompt_tokens,
            truncated,
        })
    }

    async fn delay(&self, plan: &Plan, d: Duration, ctx: &UpstreamContext) {
        if plan.hang {
            hang(ctx).await;
        }
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

/// Never return, or return at the deadline so the caller's timeout wins the race.
async fn hang(ctx: &UpstreamContext) {
    match ctx.deadline {
        Some(at) => tokio::time::sleep_until(at + Duration::from_secs(3600)).await,
        None => futures::future::pending::<()>().await,
    }
}

fn chosen_tool(req: &ChatRequest) -> Option<&Tool> {
    let tools = req.tools.as_ref()?;
    match &req.tool_choice {
        Some(ToolChoice::Mode(ToolChoiceMode::None)) => None,
        Some(ToolChoice::Named(n)) => tools.iter().find(|t| t.function.name == n.function.name),
        _ => tools.first(),
    }
}

fn count_words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

fn lorem(n: usize) -> String {
    (0..n)
        .map(|i| LOREM[i % LOREM.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// FNV-1a: stable across runs and platforms, unlike `DefaultHasher`.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A minimal value that satisfies common JSON Schemas: required properties filled,
/// strings carry the reply text, enums take their first value.
fn instance_of(schema: &Value, text: &str, depth: u32) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return first.clone();
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return instance_of(first, text, depth + 1);
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut obj = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    obj.insert(name.clone(), instance_of(sub, text, depth + 1));
                }
            }
            Value::Object(obj)
        }
        "array" => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let item = schema.get("items").cloned().unwrap_or(json!({}));
            Value::Array(
                (0..min.min(8))
                    .map(|_| instance_of(&item, text, depth + 1))
                    .collect(),
            )
        }
        "integer" | "number" => schema.get("minimum").cloned().unwrap_or(json!(0)),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => json!(text),
    }
}

fn usage(prompt_tokens: u64, answer: &Answer) -> Usage {
    let mut completion = answer.content.as_deref().map_or(0, count_words);
    if let Some(tc) = &answer.tool_call {
        completion += 1 + count_words(&tc.function.arguments);
    }
    let reasoning = answer.reasoning.as_deref().map_or(0, count_words);
    let mut u = Usage::new(prompt_tokens, completion + reasoning);
    if reasoning > 0 {
        u.completion_tokens_details = Some(CompletionTokensDetails {
            reasoning_tokens: Some(reasoning),
            ..Default::default()
        });
    }
    u
}

fn completion_id(ctx: &UpstreamContext) -> String {
    if ctx.request_id.is_empty() {
        format!("chatcmpl-mock{:016x}", fastrand::u64(..))
    } else {
        format!("chatcmpl-{}", ctx.request_id)
    }
}

#[async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<ChatResponse>> {
        let d = self.directive(req)?;
        let plan = self.plan(&d);
        let answer = self.answer(req, &ctx.upstream_model, &d)?;
        self.delay(&plan, plan.latency, ctx).await;
        if let Some(e) = plan.fail {
            return Err(e);
        }
        let usage = usage(answer.prompt_tokens, &answer);
        let finish = answer.finish_reason();
        let body = ChatResponse {
            id: completion_id(ctx),
            object: "chat.completion".into(),
            created: unix_now(),
            model: format!("{}/{}", self.name, ctx.upstream_model),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: Role::Assistant,
                    content: answer.content,
                    tool_calls: answer.tool_call.map(|t| vec![t]),
                    refusal: None,
                    reasoning_content: answer.reasoning,
                    extra: Default::default(),
                },
                finish_reason: Some(finish),
                logprobs: None,
            }],
            usage: Some(usage),
            system_fingerprint: None,
            service_tier: None,
            extra: Default::default(),
        };
        Ok(Upstream {
            body,
            meta: UpstreamMeta::default(),
        })
    }

    async fn chat_stream(&self, req: &ChatRequest, ctx: &UpstreamContext) -> Result<ChunkStream> {
        let d = self.directive(req)?;
        let plan = self.plan(&d);
        let answer = self.answer(req, &ctx.upstream_model, &d)?;
        self.delay(&plan, plan.ttft, ctx).await;
        if let Some(e) = plan.fail {
            return Err(e);
        }
        let usage = usage(answer.prompt_tokens, &answer);
        let base = ChatChunk::new(
            completion_id(ctx),
            unix_now(),
            format!("{}/{}", self.name, ctx.upstream_model),
        );

        let mut chunks: Vec<ChatChunk> = Vec::new();
        let first = Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..Default::default()
        };
        chunks.push(base.clone().with_delta(first, None));
        if let Some(r) = &answer.reasoning {
            for piece in split_words(r) {
                let delta = Delta {
                    reasoning_content: Some(piece),
                    ..Default::default()
                };
                chunks.push(base.clone().with_delta(delta, None));
            }
        }
        if let Some(text) = &answer.content {
            for piece in split_words(text) {
                let delta = Delta {
                    content: Some(piece),
                    ..Default::default()
                };
                chunks.push(base.clone().with_delta(delta, None));
            }
        }
        let finish = answer.finish_reason();
        if let Some(tc) = &answer.tool_call {
            let head = ToolCallDelta {
                index: 0,
                id: Some(tc.id.clone()),
                kind: Some("function".into()),
                function: Some(FunctionCallDelta {
                    name: Some(tc.function.name.clone()),
                    arguments: Some(String::new()),
                }),
            };
            chunks.push(base.clone().with_delta(
                Delta {
                    tool_calls: Some(vec![head]),
                    ..Default::default()
                },
                None,
            ));
            // Split the arguments into small fragments, as real upstreams do.
            let args: Vec<char> = tc.function.arguments.chars().collect();
            for piece in args.chunks(8) {
                let frag = ToolCallDelta {
                    index: 0,
                    id: None,
                    kind: None,
                    function: Some(FunctionCallDelta {
                        name: None,
                        arguments: Some(piece.iter().collect()),
                    }),
                };
                chunks.push(base.clone().with_delta(
                    Delta {
                        tool_calls: Some(vec![frag]),
                        ..Default::default()
                    },
                    None,
                ));
            }
        }
        chunks.push(base.clone().with_delta(Delta::default(), Some(finish)));
        let mut usage_chunk = base;
        usage_chunk.usage = Some(usage);
        chunks.push(usage_chunk);

        let provider = self.name.clone();
        let inter = plan.inter_token;
        let cut_after = plan.cut_after;
        let stream = futures::stream::iter(chunks.into_iter().enumerate())
            .then(move |(i, chunk)| {
                let provider = provider.clone();
                async move {
                    if let Some(n) = cut_after
                        && i as u64 >= u64::from(n)
                    {
                        return Err(Error::StreamInterrupted {
                            provider,
                            message: format!("mock: stream cut after {n} chunks"),
                        });
                    }
                    if i > 0 && !inter.is_zero() {
                        tokio::time::sleep(inter).await;
                    }
                    Ok(chunk)
                }
            })
            // Stop after the injected interruption: a broken stream yields nothing more.
            .scan(false, |failed, item| {
                if *failed {
                    return futures::future::ready(None);
                }
                *failed = item.is_err();
                futures::future::ready(Some(item))
            })
            .boxed();
        Ok(ChunkStream {
            stream,
            meta: UpstreamMeta::default(),
        })
    }

    async fn embed(
        &self,
        req: &EmbeddingsRequest,
        _ctx: &UpstreamContext,
    ) -> Result<Upstream<EmbeddingsResponse>> {
        let dims = req
            .dimensions
            .map_or(DEFAULT_DIMENSIONS, |d| d as usize)
            .clamp(1, 4096);
        let texts = req.input.texts();
        let tokens: u64 = texts.iter().map(|t| count_words(t)).sum();
        let data = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Embedding {
                object: "embedding".into(),
                index: i as u32,
                embedding: EmbeddingVector::Float(embed_text(t, dims)),
            })
            .collect();
        Ok(Upstream {
            body: EmbeddingsResponse {
                object: "list".into(),
                data,
                model: req.model.clone(),
                usage: EmbeddingUsage {
                    prompt_tokens: tokens,
                    total_tokens: tokens,
                },
            },
            meta: UpstreamMeta::default(),
        })
    }

    async fn models(&self, _ctx: &UpstreamContext) -> Result<Vec<Model>> {
        Ok(["echo", "lorem"]
            .iter()
            .map(|m| Model::new(format!("{}/{m}", self.name), "weir-mock"))
            .collect())
    }
}

/// Words with their following space, so the pieces concatenate back to the text exactly.
fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == ' ' {
            out.push(text[start..=i].to_owned());
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push(text[start..].to_owned());
    }
    out
}

/// A deterministic bag-of-words vector, L2-normalised: texts sharing words point the same way,
/// so similarity search behaves sensibly in tests.
pub fn embed_text(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0f32; dims];
    for word in text.split_whitespace() {
        let w: String = word
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        if w.is_empty() {
            continue;
        }
        let h = hash(&w);
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        v[((h >> 1) % dims as u64) as usize] += sign;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
    v
}

#[cfg(test)]
mod tests;
