#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::{Value, json};
use weir_types::anthropic::{MessagesResponse, StopReason, ThinkingConfig};
use weir_types::chat::{
    ChatRequest, ContentPart, FinishReason, FunctionCall, ImageUrl, Message, MessageContent,
    ResponseFormat, ToolCall,
};

use super::*;
use crate::error::ErrorKind;
use crate::messages::testutil::{anthropic_fixture, openai_fixture};

fn convert(req: &ChatRequest) -> Value {
    serde_json::to_value(to_anthropic_request(req, "claude-sonnet-4-5", 1024).unwrap()).unwrap()
}

fn err_param(req: &ChatRequest) -> Option<String> {
    match to_anthropic_request(req, "claude-sonnet-4-5", 1024) {
        Err(Error::InvalidRequest { param, .. }) => param,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

fn assistant_calling(arguments: &str) -> Message {
    let mut m = Message::assistant("");
    m.content = None;
    m.tool_calls = Some(vec![ToolCall {
        id: "call_1".into(),
        kind: "function".into(),
        function: FunctionCall {
            name: "get_weather".into(),
            arguments: arguments.into(),
        },
    }]);
    m
}

#[test]
fn openai_fixture_request_translates_exactly() {
    let req: ChatRequest =
        serde_json::from_str(&openai_fixture("openai_request_tools.json")).unwrap();
    let out = convert(&req);
    let schema_instruction = out["system"][1]["text"].as_str().unwrap().to_owned();
    assert!(schema_instruction.contains("`calendar_event`"));
    assert!(schema_instruction.contains(r#""participants""#));
    assert_eq!(
        out,
        json!({
            "model": "claude-sonnet-4-5",
            "system": [
                {"type": "text", "text": "You are a helpful assistant. Extract the event."},
                {"type": "text", "text": schema_instruction}
            ],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Alice and Bob are going to a science fair on Friday."},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/fair.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_62136354", "name": "lookup_date", "input": {"day": "Friday"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_62136354", "content": "2025-03-14"}
                ]}
            ],
            // reasoning_effort "low" → a 2048 budget, which the 512 cap cannot hold: raised.
            "max_tokens": 2048 + 512,
            "metadata": {"user_id": "user-1234"},
            "stop_sequences": ["END"],
            "stream": true,
            "temperature": 0.2,
            "tools": [{
                "name": "lookup_date",
                "description": "Resolve a weekday to a calendar date",
                "input_schema": {
                    "type": "object",
                    "properties": {"day": {"type": "string"}},
                    "required": ["day"],
                    "additionalProperties": false
                }
            }],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048}
        })
    );
}

#[test]
fn system_messages_are_hoisted_and_same_role_turns_merged() {
    let mut dev = Message::system("be terse");
    dev.role = Role::Developer;
    let req = ChatRequest::new(
        "m",
        vec![
            Message::system("you are weir"),
            Message::user("a"),
            Message::user("b"),
            dev,
            Message::assistant("c"),
            Message::user("   "),
            Message::user("d"),
        ],
    );
    let out = convert(&req);
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "you are weir"}, {"type": "text", "text": "be terse"}])
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
            {"role": "user", "content": [{"type": "text", "text": "d"}]}
        ])
    );
    assert_eq!(out["max_tokens"], 1024);
}

#[test]
fn parallel_tool_results_merge_into_one_user_turn_with_results_first() {
    let mut call = assistant_calling("{}");
    call.tool_calls.as_mut().unwrap().push(ToolCall {
        id: "call_2".into(),
        kind: "function".into(),
        function: FunctionCall {
            name: "get_time".into(),
            arguments: String::new(),
        },
    });
    let mut failed = Message::tool("call_2", "timeout");
    failed.extra.insert("is_error".into(), json!(true));
    let req = ChatRequest::new(
        "m",
        vec![
            Message::user("weather and time?"),
            call,
            Message::user("also, hurry"),
            Message::tool("call_1", "sunny"),
            failed,
        ],
    );
    let out = convert(&req);
    assert_eq!(
        out["messages"][1]["content"],
        json!([
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}
        ])
    );
    assert_eq!(
        out["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "timeout", "is_error": true},
            {"type": "text", "text": "also, hurry"}
        ]})
    );
}

#[test]
fn images_become_base64_or_url_sources() {
    let part = |url: &str| ContentPart::ImageUrl {
        image_url: ImageUrl {
            url: url.into(),
            detail: Some("high".into()),
        },
    };
    let mut user = Message::user("");
    user.content = Some(MessageContent::Parts(vec![
        part("data:image/jpeg;base64,/9j/4AAQSkZJRg=="),
        part("https://example.com/cat.png"),
        ContentPart::Text {
            text: "what are these?".into(),
        },
    ]));
    let out = convert(&ChatRequest::new("m", vec![user.clone()]));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "text", "text": "what are these?"}
        ])
    );

    for bad in [
        "data:image/png,rawbytes",
        "ftp://example.com/a.png",
        "data:;base64,AAAA",
        "data:",
    ] {
        user.content = Some(MessageContent::Parts(vec![part(bad)]));
        assert_eq!(
            err_param(&ChatRequest::new("m", vec![user.clone()])).as_deref(),
            Some("messages[0].content[0]"),
            "{bad}"
        );
    }
    user.content = Some(MessageContent::Parts(vec![ContentPart::InputAudio {
        input_audio: json!({"data": "AAAA", "format": "wav"}),
    }]));
    assert!(err_param(&ChatRequest::new("m", vec![user])).is_some());
}

#[test]
fn inline_pdfs_become_documents() {
    let mut user = Message::user("");
    user.content = Some(MessageContent::Parts(vec![ContentPart::File {
        file: json!({"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQ="}),
    }]));
    let out = convert(&ChatRequest::new("m", vec![user.clone()]));
    assert_eq!(
        out["messages"][0]["content"][0],
        json!({"type": "document", "title": "report.pdf",
               "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="}})
    );
    user.content = Some(MessageContent::Parts(vec![ContentPart::File {
        file: json!({"file_id": "file-abc123"}),
    }]));
    assert!(err_param(&ChatRequest::new("m", vec![user])).is_some());
}

#[test]
fn tool_call_arguments_must_be_a_json_object() {
    for bad in ["{\"location\": ", "[1,2]", "\"x\""] {
        let req = ChatRequest::new("m", vec![Message::user("hi"), assistant_calling(bad)]);
        assert_eq!(
            err_param(&req).as_deref(),
            Some("messages[1].tool_calls[0].function.arguments")
        );
    }
    let req = ChatRequest::new("m", vec![Message::user("hi"), Message::tool("", "x")]);
    let mut no_id = req.clone();
    no_id.messages[1].tool_call_id = None;
    assert_eq!(
        err_param(&no_id).as_deref(),
        Some("messages[1].tool_call_id")
    );
}

#[test]
fn reasoning_is_replayed_only_with_a_signature() {
    let mut signed = Message::assistant("the answer is 4");
    signed.reasoning_content = Some("2+2".into());
    signed
        .extra
        .insert(REASONING_SIGNATURE.into(), json!("sig=="));
    let mut unsigned = Message::assistant("ok");
    unsigned.reasoning_content = Some("hmm".into());
    let req = ChatRequest::new(
        "m",
        vec![
            Message::user("2+2?"),
            signed,
            Message::user("and?"),
            unsigned,
        ],
    );
    let out = convert(&req);
    assert_eq!(
        out["messages"][1]["content"],
        json!([
            {"type": "thinking", "thinking": "2+2", "signature": "sig=="},
            {"type": "text", "text": "the answer is 4"}
        ])
    );
    assert_eq!(
        out["messages"][3]["content"],
        json!([{"type": "text", "text": "ok"}])
    );
}

#[test]
fn several_thinking_blocks_survive_a_round_trip() {
    let resp: MessagesResponse = serde_json::from_value(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "first", "signature": "s1"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5}
    }))
    .unwrap();
    let chat = from_anthropic_response(resp);
    let message = &chat.choices[0].message;
    assert_eq!(message.reasoning_content.as_deref(), Some("first"));
    assert!(message.extra.get(REASONING_SIGNATURE).is_none());
    // The assistant message as a client would send it back.
    let mut replay = Message::assistant("");
    replay.content = None;
    replay.tool_calls = message.tool_calls.clone();
    replay.reasoning_content = message.reasoning_content.clone();
    replay.extra = message.extra.clone();
    let req = ChatRequest::new(
        "m",
        vec![
            Message::user("go"),
            replay,
            Message::tool("toolu_1", "done"),
        ],
    );
    assert_eq!(
        convert(&req)["messages"][1]["content"],
        json!([
            {"type": "thinking", "thinking": "first", "signature": "s1"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
        ])
    );
}

#[test]
fn tools_and_tool_choice() {
    let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
    let mut tool = weir_types::chat::Tool::function("f", "does f", json!({"properties": {}}));
    tool.extra
        .insert("cache_control".into(), json!({"type": "ephemeral"}));
    let mut bare = weir_types::chat::Tool::function("g", "does g", json!(null));
    bare.function.parameters = None;
    req.tools = Some(vec![tool, bare]);
    let out = convert(&req);
    assert_eq!(
        out["tools"],
        json!([
            {"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {}},
             "cache_control": {"type": "ephemeral"}},
            {"name": "g", "description": "does g", "input_schema": {"type": "object"}}
        ])
    );
    assert!(out.get("tool_choice").is_none());

    let cases = [
        (json!("auto"), None, json!({"type": "auto"})),
        (json!("none"), None, json!({"type": "none"})),
        (
            json!("required"),
            Some(false),
            json!({"type": "any", "disable_parallel_tool_use": true}),
        ),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            Some(true),
            json!({"type": "tool", "name": "f"}),
        ),
    ];
    for (choice, parallel, expected) in cases {
        req.tool_choice = Some(serde_json::from_value(choice).unwrap());
        req.parallel_tool_calls = parallel;
        assert_eq!(convert(&req)["tool_choice"], expected);
    }
    req.tool_choice = None;
    req.parallel_tool_calls = Some(false);
    assert_eq!(
        convert(&req)["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );

    // Without tools there is nothing to choose from.
    req.tools = None;
    req.tool_choice = Some(serde_json::from_value(json!("required")).unwrap());
    assert!(convert(&req).get("tool_choice").is_none());

    let mut custom = weir_types::chat::Tool::function("c", "", json!({}));
    custom.kind = "custom".into();
    req.tools = Some(vec![custom]);
    assert_eq!(err_param(&req).as_deref(), Some("tools[0].type"));
}

#[test]
fn generation_settings() {
    let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
    req.max_tokens = Some(100);
    req.max_completion_tokens = Some(200);
    req.temperature = Some(1.7);
    req.top_p = Some(0.9);
    req.stop = Some(weir_types::chat::Stop::One("###".into()));
    req.extra.insert("top_k".into(), json!(5));
    req.extra.insert("presence_penalty".into(), json!(0.1));
    let out = convert(&req);
    assert_eq!(out["max_tokens"], 200);
    // Out of Anthropic's range, passed on for the upstream to reject in its own words.
    assert_eq!(out["temperature"], 1.7);
    assert_eq!(out["top_p"], 0.9);
    assert_eq!(out["top_k"], 5);
    assert_eq!(out["stop_sequences"], json!(["###"]));
    assert!(out.get("presence_penalty").is_none());
    assert!(out.get("metadata").is_none());

    req.n = Some(2);
    assert_eq!(err_param(&req).as_deref(), Some("n"));
    req.n = Some(1);
    req.extra.insert("top_k".into(), json!(-1));
    assert_eq!(err_param(&req).as_deref(), Some("top_k"));
}

#[test]
fn thinking_from_extra_or_reasoning_effort() {
    let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
    req.max_tokens = Some(8000);
    req.extra.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": 4000}),
    );
    req.extra.insert("reasoning_effort".into(), json!("high"));
    let out = to_anthropic_request(&req, "m", 1024).unwrap();
    assert_eq!(
        out.thinking,
        Some(ThinkingConfig::Enabled {
            budget_tokens: 4000
        })
    );
    assert_eq!(out.max_tokens, Some(8000));

    req.extra.remove("thinking");
    let out = to_anthropic_request(&req, "m", 1024).unwrap();
    assert_eq!(
        out.thinking,
        Some(ThinkingConfig::Enabled {
            budget_tokens: 16384
        })
    );
    assert_eq!(out.max_tokens, Some(16384 + 8000));

    req.extra.insert("reasoning_effort".into(), json!("none"));
    assert_eq!(
        to_anthropic_request(&req, "m", 1024).unwrap().thinking,
        None
    );
    req.extra
        .insert("reasoning_effort".into(), json!("extreme"));
    assert_eq!(err_param(&req).as_deref(), Some("reasoning_effort"));
    for bad in [json!({"budget_tokens": 5}), json!("on")] {
        req.extra.insert("thinking".into(), bad);
        assert_eq!(err_param(&req).as_deref(), Some("thinking"));
    }
    req.extra
        .insert("thinking".into(), json!({"type": "adaptive"}));
    let out = to_anthropic_request(&req, "m", 1024).unwrap();
    assert_eq!(
        out.thinking,
        Some(ThinkingConfig::Other(json!({"type": "adaptive"})))
    );
}

#[test]
fn response_formats_become_system_instructions() {
    assert_eq!(response_format_instruction(&ResponseFormat::Text), None);
    let json_mode = response_format_instruction(&ResponseFormat::JsonObject).unwrap();
    assert!(json_mode.contains("JSON object"));
    let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
    req.response_format = Some(ResponseFormat::JsonObject);
    assert_eq!(
        convert(&req)["system"],
        json!([{"type": "text", "text": json_mode}])
    );
}

#[test]
fn cache_control_on_a_message_marks_its_last_block() {
    let mut sys = Message::system("long shared prefix");
    sys.extra.insert(
        "cache_control".into(),
        json!({"type": "ephemeral", "ttl": "1h"}),
    );
    let req = ChatRequest::new("m", vec![sys, Message::user("hi")]);
    assert_eq!(
        convert(&req)["system"],
        json!([{"type": "text", "text": "long shared prefix", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
    );
}

#[test]
fn a_prefill_loses_its_trailing_whitespace() {
    let req = ChatRequest::new(
        "m",
        vec![Message::user("json please"), Message::assistant("{\n  ")],
    );
    assert_eq!(
        convert(&req)["messages"][1]["content"],
        json!([{"type": "text", "text": "{"}])
    );
    // Earlier assistant turns are history, left as they were.
    let req = ChatRequest::new(
        "m",
        vec![
            Message::user("a"),
            Message::assistant("b "),
            Message::user("c"),
        ],
    );
    assert_eq!(convert(&req)["messages"][1]["content"][0]["text"], "b ");
}

#[test]
fn only_system_messages_is_an_error() {
    let req = ChatRequest::new("m", vec![Message::system("alone")]);
    assert_eq!(err_param(&req).as_deref(), Some("messages"));
}

#[test]
fn responses_translate_from_fixtures() {
    let text: MessagesResponse =
        serde_json::from_str(&anthropic_fixture("response_text.json")).unwrap();
    let chat = from_anthropic_response(text);
    assert_eq!(chat.id, "msg_01XFDUDYJgAACzvnptvVoYEL");
    assert_eq!(chat.model, "claude-sonnet-4-5-20250929");
    assert_eq!(chat.text(), "Hello! How can I help you today?");
    assert_eq!(chat.choices[0].finish_reason, Some(FinishReason::Stop));
    let usage = chat.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (12, 12, 24)
    );

    let tool: MessagesResponse =
        serde_json::from_str(&anthropic_fixture("response_tool_use.json")).unwrap();
    let chat = from_anthropic_response(tool);
    let m = &chat.choices[0].message;
    assert_eq!(
        m.content.as_deref(),
        Some("I'll check the current weather in San Francisco for you.")
    );
    let call = &m.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call.kind, "function");
    assert_eq!(
        serde_json::from_str::<Value>(&call.function.arguments).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(chat.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    let usage = chat.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 384 + 2048 + 1200);
    assert_eq!(usage.cached_tokens(), 2048);
    assert_eq!(usage.cache_creation_tokens(), 1200);
    assert_eq!(usage.completion_tokens, 87);
    assert_eq!(usage.total_tokens, 384 + 2048 + 1200 + 87);

    let thinking: MessagesResponse =
        serde_json::from_str(&anthropic_fixture("response_thinking.json")).unwrap();
    let chat = from_anthropic_response(thinking);
    let m = &chat.choices[0].message;
    assert!(
        m.reasoning_content
            .as_deref()
            .unwrap()
            .starts_with("Let me analyze")
    );
    assert_eq!(
        m.extra.get(REASONING_SIGNATURE).and_then(Value::as_str),
        Some(
            "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL...."
        )
    );
    assert_eq!(chat.text(), "27 multiplied by 453 equals 12,231.");
}

#[test]
fn tool_only_response_has_null_content() {
    let resp: MessagesResponse = serde_json::from_value(json!({
        "id": "msg_2", "type": "message", "role": "assistant", "model": "c",
        "content": [{"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 1, "output_tokens": 1}
    }))
    .unwrap();
    let chat = from_anthropic_response(resp);
    let v = serde_json::to_value(&chat.choices[0].message).unwrap();
    assert_eq!(v["content"], Value::Null);
    assert_eq!(v["tool_calls"][0]["function"]["arguments"], "{}");
    assert!(chat.usage.unwrap().prompt_tokens_details.is_none());
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    let cases = [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("pause_turn", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("model_context_window_exceeded", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
        ("something_new", FinishReason::Other("something_new".into())),
    ];
    for (reason, expected) in cases {
        assert_eq!(
            finish_reason(&StopReason::from(reason)),
            expected,
            "{reason}"
        );
    }
}

#[test]
fn usage_arithmetic_saturates() {
    let u = canonical_usage(u64::MAX, Some(5), None, 7);
    assert_eq!(u.prompt_tokens, u64::MAX);
    assert_eq!(u.total_tokens, u64::MAX);
    assert_eq!(u.cache_creation_tokens(), 0);
    assert_eq!(u.cached_tokens(), 5);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let err = to_anthropic_request(&ChatRequest::new("m", vec![]), "m", 10).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(parse_data_uri("data:image/png;base64").is_none());
    assert!(parse_data_uri("DATA:image/png;BASE64,AA").is_some());
    assert!(parse_data_uri("dat").is_none());
    assert!(parse_data_uri("data:é;base64,x").is_some());
}
