//! OpenAI Chat Completions: the request, the response and the streaming chunk.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::Extra;
use crate::extra::deserialize_keeping_extra;

/// A chat completion request, as `POST /v1/chat/completions` receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Extra>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Fields weir does not model (`logprobs`, `presence_penalty`, vendor extensions...),
    /// passed through to OpenAI-compatible upstreams untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_keeping_extra!(
    ChatRequest,
    "a chat completion request object",
    required { "model" => model, "messages" => messages },
    optional {
        "tools" => tools,
        "tool_choice" => tool_choice,
        "parallel_tool_calls" => parallel_tool_calls,
        "response_format" => response_format,
        "temperature" => temperature,
        "top_p" => top_p,
        "max_tokens" => max_tokens,
        "max_completion_tokens" => max_completion_tokens,
        "stop" => stop,
        "seed" => seed,
        "n" => n,
        "user" => user,
        "metadata" => metadata,
        "stream" => stream,
        "stream_options" => stream_options,
    },
);

impl ChatRequest {
    /// A minimal request: one model, these messages, everything else unset.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            messages,
            tools: None,
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: None,
            temperature: None,
            top_p: None,
            max_tokens: None,
            max_completion_tokens: None,
            stop: None,
            seed: None,
            n: None,
            user: None,
            metadata: None,
            stream: None,
            stream_options: None,
            extra: Extra::new(),
        }
    }

    /// The output-token cap, whichever of the two fields carries it
    /// (`max_completion_tokens` wins, as it does at OpenAI).
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether the client asked for a usage chunk at the end of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Stop sequences as a list, however they were given.
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of a conversation.
///
/// A flat struct rather than an enum per role: it parses in one pass, keeps unknown fields,
/// and role-specific rules (a tool message needs `tool_call_id`) are checked where they matter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: Role,
    /// Optional because an assistant message that only calls tools may have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Reasoning ("thinking") text of an assistant turn, as DeepSeek and others name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_keeping_extra!(
    Message,
    "a chat message object",
    required { "role" => role },
    optional {
        "content" => content,
        "name" => name,
        "tool_calls" => tool_calls,
        "tool_call_id" => tool_call_id,
        "refusal" => refusal,
        "reasoning_content" => reasoning_content,
    },
);

impl Message {
    fn with_text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(MessageContent::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            reasoning_content: None,
            extra: Extra::new(),
        }
    }
    pub fn system(text: impl Into<String>) -> Self {
        Self::with_text(Role::System, text)
    }
    pub fn user(text: impl Into<String>) -> Self {
        Self::with_text(Role::User, text)
    }
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::with_text(Role::Assistant, text)
    }
    /// The result of a tool call, answering the call with this id.
    pub fn tool(tool_call_id: impl Into<String>, text: impl Into<String>) -> Self {
        let mut m = Self::with_text(Role::Tool, text);
        m.tool_call_id = Some(tool_call_id.into());
        m
    }

    /// All the text of this message, parts joined without separator; images are skipped.
    pub fn text(&self) -> String {
        self.content
            .as_ref()
            .map(MessageContent::text)
            .unwrap_or_default()
    }
}

/// Message content: a plain string or a list of typed parts. Read by `content.rs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content, parts joined without separator; non-text parts are skipped.
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(s) => s.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// One part of multi-part content. Read by `content.rs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
    InputAudio { input_audio: Value },
    File { file: Value },
}

/// An image by URL or `data:` URI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tool {
    /// Always `"function"` today.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDefinition,
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_keeping_extra!(
    Tool,
    "a tool object",
    required { "type" => kind, "function" => function },
);

impl Tool {
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        Self {
            kind: "function".into(),
            function: FunctionDefinition {
                name: name.into(),
                description: Some(description.into()),
                parameters: Some(parameters),
                strict: None,
            },
            extra: Extra::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `"none"`, `"auto"`, `"required"`, or one named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// The requested output format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Stop sequences: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_keeping_extra!(
    StreamOptions,
    "a stream_options object",
    optional { "include_usage" => include_usage },
);

/// A call the model made to a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON-encoded string, exactly as the model produced them.
    pub arguments: String,
}

/// Why the model stopped. Unknown reasons from upstreams are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    FunctionCall,
    Other(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::FunctionCall => "function_call",
            FinishReason::Other(s) => s,
        }
    }
}

impl From<&str> for FinishReason {
    fn from(s: &str) -> Self {
        match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            "function_call" => FinishReason::FunctionCall,
            other => FinishReason::Other(other.to_owned()),
        }
    }
}

impl Serialize for FinishReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(FinishReason::from(s.as_ref()))
    }
}

/// A complete (non-streamed) chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatResponse {
    pub id: String,
    #[serde(default = "object_chat_completion")]
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_keeping_extra!(
    ChatResponse,
    "a chat completion object",
    required { "id" => id, "created" => created, "model" => model, "choices" => choices },
    optional {
        "usage" => usage,
        "system_fingerprint" => system_fingerprint,
        "service_tier" => service_tier,
    },
    or_else { "object" => object = object_chat_completion },
);

fn object_chat_completion() -> String {
    "chat.completion".into()
}
fn object_chat_completion_chunk() -> String {
    "chat.completion.chunk".into()
}

impl ChatResponse {
    /// The text of the first choice, or `""`.
    pub fn text(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.message.content.as_deref())
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

/// The assistant's message in a response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseMessage {
    pub role: Role,
    /// `null` (not absent) when the model only called tools, as OpenAI sends it.
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_keeping_extra!(
    ResponseMessage,
    "a chat completion message object",
    required { "role" => role },
    optional {
        "content" => content,
        "tool_calls" => tool_calls,
        "refusal" => refusal,
        "reasoning_content" => reasoning_content,
    },
);

/// Token counts of one call.
///
/// `prompt_tokens` counts every input token, cached or not (OpenAI's convention);
/// the details say how many of them were read from or written to a prompt cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }
    /// Input tokens read from a prompt cache.
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }
    /// Input tokens written to a prompt cache (Anthropic's cache creation).
    pub fn cache_creation_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cache_creation_tokens)
            .unwrap_or(0)
    }
    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Not an OpenAI field: Anthropic's `cache_creation_input_tokens`, kept so it can be priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_prediction_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_prediction_tokens: Option<u64>,
}

/// One streamed chunk of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk {
    pub id: String,
    #[serde(default = "object_chat_completion_chunk")]
    pub object: String,
    pub created: u64,
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Present only on the final usage chunk (`stream_options.include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Sent on every chunk by OpenAI; a named field rather than an extra because unknown
    /// fields cost a detour through serde's buffering on every chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
    /// This chunk's JSON exactly as an upstream sent it, kept so a gateway can forward the
    /// bytes instead of serialising the fields again. Set by whoever parsed the chunk, never
    /// serialised, and ignored by `==`. Whoever changes a received chunk's fields must
    /// [`clear`](ReceivedJson::clear) it, or the old bytes would be sent.
    #[serde(skip)]
    pub received: ReceivedJson,
}

/// The JSON text a value was parsed from, if it is known, shared rather than copied when the
/// value is cloned.
///
/// Always equal to any other: it is a copy of the fields next to it, not part of the value.
#[derive(Clone, Default)]
pub struct ReceivedJson(Option<std::sync::Arc<str>>);

impl ReceivedJson {
    /// Keep `json` as received; kept empty when it spans lines, which a single SSE `data:`
    /// line could not carry.
    pub fn new(json: &str) -> Self {
        // memchr: `str::contains` with a char set goes char by char, which cost more than
        // the serialisation this saves.
        let one_line = memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_none();
        Self(one_line.then(|| json.into()))
    }

    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Forget the text: the value no longer matches it.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl PartialEq for ReceivedJson {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for ReceivedJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text is the user's completion; its size is enough to debug with.
        match &self.0 {
            Some(json) => write!(f, "ReceivedJson({} bytes)", json.len()),
            None => f.write_str("ReceivedJson(None)"),
        }
    }
}

deserialize_keeping_extra!(
    ChatChunk,
    "a chat completion chunk object",
    required { "id" => id, "created" => created, "model" => model },
    optional {
        "choices" => choices,
        "usage" => usage,
        "system_fingerprint" => system_fingerprint,
        "service_tier" => service_tier,
    },
    or_else { "object" => object = object_chat_completion_chunk },
    not_read { received },
);

impl ChatChunk {
    /// An empty chunk with these identifiers, to be filled in.
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: object_chat_completion_chunk(),
            created,
            model: model.into(),
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
            service_tier: None,
            extra: Extra::new(),
            received: ReceivedJson::default(),
        }
    }

    /// A chunk with one choice carrying this delta.
    pub fn with_delta(mut self, delta: Delta, finish_reason: Option<FinishReason>) -> Self {
        self.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason,
            logprobs: None,
        });
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    /// `null` until the last content chunk, as OpenAI sends it.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

/// What one chunk adds to the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_keeping_extra!(
    Delta,
    "a chunk delta object",
    optional {
        "role" => role,
        "content" => content,
        "reasoning_content" => reasoning_content,
        "tool_calls" => tool_calls,
        "refusal" => refusal,
    },
);

/// A piece of a tool call: the first carries id and name, later ones argument fragments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}
