//! The body of a native Messages request as it goes to Anthropic: the client's request, by
//! reference, with the upstream model and the stream flag weir needs.
//!
//! Borrowed rather than cloned: a `/v1/messages` request is mostly its conversation, and a
//! clone copied every message on every attempt only to change two fields.

use serde::Serialize;
use weir_types::Extra;
use weir_types::anthropic::{
    InputMessage, MessagesRequest, Metadata, SystemPrompt, ThinkingConfig, Tool, ToolChoice,
};

/// `req` as sent to the upstream: `model` replaced, `stream` as weir sets it (`None` leaves it
/// out), everything else, unknown fields included, as the client sent it.
#[derive(Debug, Serialize)]
pub struct OutgoingMessages<'a> {
    model: &'a str,
    messages: &'a [InputMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a SystemPrompt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a ThinkingConfig>,
    #[serde(flatten)]
    extra: &'a Extra,
}

impl<'a> OutgoingMessages<'a> {
    pub fn new(req: &'a MessagesRequest, upstream_model: &'a str, stream: Option<bool>) -> Self {
        // Every field by name, so a field added to `MessagesRequest` fails to compile here
        // until it is sent upstream too.
        let MessagesRequest {
            model: _,
            messages,
            system,
            max_tokens,
            metadata,
            stop_sequences,
            stream: _,
            temperature,
            top_p,
            top_k,
            tools,
            tool_choice,
            thinking,
            extra,
        } = req;
        Self {
            model: upstream_model,
            messages,
            system: system.as_ref(),
            max_tokens: *max_tokens,
            metadata: metadata.as_ref(),
            stop_sequences: stop_sequences.as_ref(),
            stream,
            temperature: *temperature,
            top_p: *top_p,
            top_k: *top_k,
            tools: tools.as_ref(),
            tool_choice: tool_choice.as_ref(),
            thinking: thinking.as_ref(),
            extra,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn borrowed_bodies_serialise_as_the_changed_request_would() {
        let cases = [
            serde_json::json!({"model": "claude", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}),
            serde_json::json!({"model": "claude", "max_tokens": 64, "stream": true,
                "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "look"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]}
                ],
                "metadata": {"user_id": "u"}, "stop_sequences": ["x"], "temperature": 0.5,
                "top_p": 0.9, "top_k": 5,
                "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "auto"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
                "service_tier": "auto", "vendor": {"z": [1, 2.5]}}),
        ];
        for case in cases {
            let req: MessagesRequest = serde_json::from_value(case).unwrap();
            for stream in [None, Some(true)] {
                let mut cloned = req.clone();
                cloned.model = "claude-upstream".into();
                cloned.stream = stream;
                let borrowed = OutgoingMessages::new(&req, "claude-upstream", stream);
                assert_eq!(
                    crate::json::to_vec(&borrowed).unwrap(),
                    crate::json::to_vec(&cloned).unwrap()
                );
            }
        }
    }
}
