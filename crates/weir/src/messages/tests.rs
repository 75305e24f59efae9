//! Request and response translation of the Messages ingress.
#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::{Value, json};
use weir_types::anthropic::{MessagesRequest, StopReason};
use weir_types::chat::{ChatResponse, FinishReason, PromptTokensDetails, Usage};

use super::*;
use crate::error::Error;
use crate::messages::response::RAW_ARGUMENTS;
use crate::messages::testutil::{anthropic_fixture, openai_fixture};
use crate::provider::anthropic::convert::REASONING_SIGNATURE;

fn request(v: Value) -> MessagesRequest {
    serde_json::from_value(v).unwrap()
}

fn chat_json(req: &MessagesRequest) -> Value {
    serde_json::to_value(to_chat_request(req).unwrap()).unwrap()
}

fn err_param(req: &MessagesRequest) -> Option<String> {
    match to_chat_request(req) {
        Err(Error::InvalidRequest { param, .. }) => param,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

#[test]
fn fixture_request_translates_exactly() {
    let mut req: MessagesRequest =
        serde_json::from_str(&anthropic_fixture("request_full.json")).unwrap();
    // The web search server tool cannot run on another provider.
    assert_eq!(err_param(&req).as_deref(), Some("tools[1]"));
    req.tools.as_mut().unwrap().truncate(1);
    assert_eq!(
        chat_json(&req),
        json!({
            "model": "claude-sonnet-4-5-20250929",
            "messages": [
                {"role": "system", "content":
                    "You are a helpful assistant for a weather service.\n\nAlways answer in the user's unit system."},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}},
                    {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}},
                    {"type": "text", "text": "What's the weather where these photos were taken? I'm in San Francisco."}
                ]},
                {"role": "assistant", "content": "Let me check the weather.",
                 "reasoning_content": "The user is in San Francisco. I should call get_weather.",
                 "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                                 "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees, foggy"},
                {"role": "user", "content": "And what should I wear?"}
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["location"]
                }
            }}],
            "tool_choice": "auto",
            "temperature": 1.0,
            "max_tokens": 16000,
            "stop": ["\n\nHuman:"],
            "user": "user_2f1d9a",
            "stream": true,
            "stream_options": {"include_usage": true},
            "reasoning_effort": "medium"
        })
    );
}

#[test]
fn tool_results_come_before_user_text_and_keep_their_images() {
    let req = request(json!({
        "model": "m", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "shoot"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": "ls", "input": {"path": "/"}}
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": "here you go"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "captured"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "permission denied", "is_error": true}
            ]}
        ]
    }));
    let out = chat_json(&req);
    assert_eq!(
        out["messages"][1],
        json!({"role": "assistant", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}},
            {"id": "toolu_2", "type": "function", "function": {"name": "ls", "arguments": "{\"path\":\"/\"}"}}
        ]})
    );
    assert_eq!(
        out["messages"].as_array().unwrap()[2..],
        [
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "captured"}),
            json!({"role": "tool", "tool_call_id": "toolu_2", "content": "Error: permission denied"}),
            json!({"role": "user", "content": [
                {"type": "text", "text": "here you go"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}),
        ]
    );
    assert!(out.get("stream_options").is_none());
}

#[test]
fn documents_and_unsupported_blocks() {
    let req = request(
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "document", "title": "Q3.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
            {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "buy milk"}}
        ]}]}),
    );
    assert_eq!(
        chat_json(&req)["messages"][0]["content"],
        json!([
            {"type": "file", "file": {"filename": "Q3.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
            {"type": "text", "text": "Notes\n\nbuy milk"}
        ])
    );
    let unsupported = [
        json!({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}),
        json!({"type": "image", "source": {"type": "file", "file_id": "file_1"}}),
        json!({"type": "search_result", "source": "s", "title": "t", "content": []}),
        json!({"type": "tool_use", "id": "t", "name": "n", "input": {}}),
    ];
    for block in unsupported {
        let req =
            request(json!({"model": "m", "messages": [{"role": "user", "content": [block]}]}));
        assert_eq!(err_param(&req).as_deref(), Some("messages[0].content[0]"));
    }
    let bad_assistant = request(json!({"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x"}]}
    ]}));
    assert_eq!(
        err_param(&bad_assistant).as_deref(),
        Some("messages[1].content[0]")
    );
}

#[test]
fn server_tool_blocks_and_redacted_thinking_are_dropped_from_history() {
    let req = request(json!({"model": "m", "messages": [
        {"role": "user", "content": "news?"},
        {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "news"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "Here is the news."}
        ]}
    ]}));
    assert_eq!(
        chat_json(&req)["messages"][1],
        json!({"role": "assistant", "content": "Here is the news."})
    );
}

#[test]
fn tool_choice_thinking_and_settings() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                      "tools": [{"name": "f", "input_schema": {"type": "object"}}]});
    let cases = [
        (json!({"type": "auto"}), json!("auto"), None),
        (
            json!({"type": "any", "disable_parallel_tool_use": true}),
            json!("required"),
            Some(false),
        ),
        (
            json!({"type": "tool", "name": "f"}),
            json!({"type": "function", "function": {"name": "f"}}),
            None,
        ),
        (json!({"type": "none"}), json!("none"), None),
    ];
    for (choice, expected, parallel) in cases {
        let mut v = base.clone();
        v["tool_choice"] = choice;
        let out = chat_json(&request(v));
        assert_eq!(out["tool_choice"], expected);
        assert_eq!(
            out.get("parallel_tool_calls").and_then(Value::as_bool),
            parallel
        );
    }
    for (budget, effort) in [
        (1024, "low"),
        (4096, "medium"),
        (16000, "medium"),
        (32000, "high"),
    ] {
        let mut v = base.clone();
        v["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
        assert_eq!(chat_json(&request(v))["reasoning_effort"], effort);
    }
    let mut v = base.clone();
    v["thinking"] = json!({"type": "disabled"});
    v["top_k"] = json!(3);
    v["stop_sequences"] = json!([]);
    v["service_tier"] = json!("auto");
    let out = chat_json(&request(v));
    for absent in [
        "reasoning_effort",
        "top_k",
        "stop",
        "service_tier",
        "max_tokens",
        "stream",
    ] {
        assert!(out.get(absent).is_none(), "{absent}");
    }
}

#[test]
fn openai_responses_translate_exactly() {
    let resp: ChatResponse =
        serde_json::from_str(&openai_fixture("openai_chat_response.json")).unwrap();
    assert_eq!(
        serde_json::to_value(to_messages_response(&resp, "claude-via-gpt")).unwrap(),
        json!({
            "id": "msg_chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello! How can I assist you today?"}],
            "model": "claude-via-gpt",
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 19, "output_tokens": 10,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        })
    );
    let resp: ChatResponse =
        serde_json::from_str(&openai_fixture("openai_chat_response_tool_calls.json")).unwrap();
    let out = serde_json::to_value(to_messages_response(&resp, "m")).unwrap();
    assert_eq!(
        out["content"],
        json!([{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                "input": {"location": "Boston, MA"}}])
    );
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 82 - 64, "output_tokens": 17,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64})
    );
}

fn response(message: Value, finish: Value) -> ChatResponse {
    serde_json::from_value(json!({
        "id": "msg_abc", "object": "chat.completion", "created": 1, "model": "x",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}]
    }))
    .unwrap()
}

#[test]
fn response_blocks_order_and_edge_cases() {
    let mut resp = response(
        json!({"role": "assistant", "content": "answer", "reasoning_content": "thoughts",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}},
            {"id": "c3", "type": "function", "function": {"name": "h", "arguments": "[1]"}}
        ]}),
        json!("stop"),
    );
    resp.choices[0]
        .message
        .extra
        .insert(REASONING_SIGNATURE.into(), json!("sig"));
    let out = serde_json::to_value(to_messages_response(&resp, "m")).unwrap();
    assert_eq!(out["id"], "msg_abc");
    assert_eq!(
        out["content"],
        json!([
            {"type": "thinking", "thinking": "thoughts", "signature": "sig"},
            {"type": "text", "text": "answer"},
            {"type": "tool_use", "id": "c1", "name": "f", "input": {RAW_ARGUMENTS: "{\"a\": 1"}},
            {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
            {"type": "tool_use", "id": "c3", "name": "h", "input": {RAW_ARGUMENTS: "[1]"}}
        ])
    );
    // "stop" with tool calls still means "run the tools".
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 0, "output_tokens": 0,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );

    let refused = response(
        json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
        json!("content_filter"),
    );
    let out = to_messages_response(&refused, "m");
    assert_eq!(out.text(), "I can't help with that.");
    assert_eq!(out.stop_reason, Some(StopReason::Refusal));

    let mut empty = response(
        json!({"role": "assistant", "content": "x"}),
        json!("length"),
    );
    empty.choices.clear();
    let out = to_messages_response(&empty, "m");
    assert!(out.content.is_empty());
    assert_eq!(out.stop_reason, Some(StopReason::EndTurn));
}

#[test]
fn stop_reason_table() {
    let cases = [
        (Some(FinishReason::Stop), false, StopReason::EndTurn),
        (Some(FinishReason::Stop), true, StopReason::ToolUse),
        (Some(FinishReason::Length), true, StopReason::MaxTokens),
        (Some(FinishReason::ToolCalls), false, StopReason::ToolUse),
        (Some(FinishReason::FunctionCall), false, StopReason::ToolUse),
        (
            Some(FinishReason::ContentFilter),
            false,
            StopReason::Refusal,
        ),
        (
            Some(FinishReason::Other("error".into())),
            false,
            StopReason::EndTurn,
        ),
        (None, false, StopReason::EndTurn),
    ];
    for (finish, tools, expected) in cases {
        assert_eq!(
            stop_reason(finish.as_ref(), tools),
            expected,
            "{finish:?} {tools}"
        );
    }
}

#[test]
fn usage_splits_cached_tokens_out_of_the_input() {
    let mut u = Usage::new(1000, 50);
    u.prompt_tokens_details = Some(PromptTokensDetails {
        cached_tokens: Some(600),
        cache_creation_tokens: Some(300),
        audio_tokens: None,
    });
    let a = usage_from_canonical(&u);
    assert_eq!(
        (
            a.input_tokens,
            a.cache_read_input_tokens,
            a.cache_creation_input_tokens,
            a.output_tokens
        ),
        (100, Some(600), Some(300), 50)
    );
    // Inconsistent counts from an upstream saturate rather than wrap.
    u.prompt_tokens = 10;
    assert_eq!(usage_from_canonical(&u).input_tokens, 0);
    // And back: Anthropic → canonical → Anthropic is the identity.
    let back =
        crate::provider::anthropic::convert::usage_to_canonical(&usage_from_canonical(&Usage {
            prompt_tokens: 1000,
            ..u.clone()
        }));
    assert_eq!(back.prompt_tokens, 1000);
    assert_eq!(back.cached_tokens(), 600);
}

#[test]
fn error_types_by_status() {
    let cases = [
        (400, "invalid_request_error"),
        (422, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ];
    for (status, kind) in cases {
        assert_eq!(error_type_for_status(status), kind, "{status}");
    }
}

#[test]
fn error_types_round_trip_through_their_statuses() {
    for (kind, status) in ERROR_TYPES {
        assert_eq!(error_type_for_status(status), kind, "{status}");
        assert_eq!(status_for_error_type(kind), Some(status), "{kind}");
    }
    assert_eq!(status_for_error_type("some_new_error"), None);
}

/// Structured output survives translation: `output_config.format` (and the older
/// `output_format`) become `response_format`; a format that cannot be expressed is a 400
/// naming its field, never silently dropped.
#[test]
fn structured_output_is_translated_or_refused() {
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    let base =
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let with = |field: &str, value: Value| {
        let mut v = base.clone();
        v[field] = value;
        request(v)
    };
    for req in [
        with(
            "output_config",
            json!({"format": {"type": "json_schema", "schema": schema}}),
        ),
        with(
            "output_format",
            json!({"type": "json_schema", "schema": schema}),
        ),
    ] {
        let chat = chat_json(&req);
        assert_eq!(chat["response_format"]["type"], "json_schema", "{chat}");
        assert_eq!(chat["response_format"]["json_schema"]["schema"], schema);
        assert_eq!(chat["response_format"]["json_schema"]["strict"], true);
        assert!(chat.get("output_config").is_none() && chat.get("output_format").is_none());
    }
    let odd = with("output_config", json!({"format": {"type": "yaml"}}));
    assert_eq!(
        err_param(&odd).as_deref(),
        Some("output_config.format.type")
    );
    let bare = with("output_format", json!({"type": "json_schema"}));
    assert_eq!(err_param(&bare).as_deref(), Some("output_format.schema"));
    let plain = with("output_config", json!({"effort": "high"}));
    assert!(chat_json(&plain).get("response_format").is_none());
}
