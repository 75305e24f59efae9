//! Which request fields split the cache, which do not, and that keys never drift.

use serde_json::{Map, json};
use weir_types::chat::{
    ChatRequest, Message, Role, Stop, StreamOptions, Tool, ToolChoice, ToolChoiceMode,
};

use super::*;

const MODEL: &str = "openai/gpt-4o-mini";

fn base() -> ChatRequest {
    let mut req = ChatRequest::new(
        "fast",
        vec![
            Message::system("You are terse."),
            Message::user("What is 2+2?"),
        ],
    );
    req.temperature = Some(0.0);
    req
}

fn parse(v: serde_json::Value) -> ChatRequest {
    serde_json::from_value(v).expect("valid test request")
}

fn digest(req: &ChatRequest) -> String {
    cache_key(req, MODEL, "shared").expect("cacheable").digest
}

type Edit = fn(&mut ChatRequest);

#[test]
fn non_deciding_fields_share_a_key() {
    let cases: &[(&str, Edit)] = &[
        ("stream", |r| r.stream = Some(true)),
        ("stream_options", |r| {
            r.stream_options = Some(StreamOptions {
                include_usage: Some(true),
                extra: Default::default(),
            })
        }),
        ("user", |r| r.user = Some("alice".into())),
        ("metadata", |r| {
            r.metadata = json!({"trace": "x"}).as_object().cloned()
        }),
        ("request_id extra", |r| {
            r.extra.insert("request_id".into(), json!("req-123"));
        }),
        ("store extra", |r| {
            r.extra.insert("store".into(), json!(true));
        }),
        ("service_tier extra", |r| {
            r.extra.insert("service_tier".into(), json!("flex"));
        }),
        ("null extra", |r| {
            r.extra.insert("presence_penalty".into(), json!(null));
        }),
        ("alias before resolution", |r| {
            r.model = "other-alias".into()
        }),
        ("n = 1", |r| r.n = Some(1)),
        ("max_completion_tokens for max_tokens", |r| {
            r.max_tokens = Some(100);
        }),
        ("text response_format", |r| {
            r.response_format = Some(ResponseFormat::Text)
        }),
        ("empty stop list", |r| r.stop = Some(Stop::Many(vec![]))),
        ("single text part", |r| {
            r.messages[1].content = Some(MessageContent::Parts(vec![ContentPart::Text {
                text: "What is 2+2?".into(),
            }]))
        }),
    ];
    let mut reference = base();
    reference.max_completion_tokens = Some(100);
    let want = digest(&reference);
    for (name, edit) in cases {
        let mut req = base();
        req.max_completion_tokens = Some(100);
        edit(&mut req);
        // The cap case swaps which field carries it.
        if *name == "max_completion_tokens for max_tokens" {
            req.max_completion_tokens = None;
        }
        assert_eq!(digest(&req), want, "{name} should not change the key");
    }
}

#[test]
fn deciding_fields_change_the_key() {
    let cases: &[(&str, Edit)] = &[
        ("message text", |r| {
            r.messages[1] = Message::user("What is 3+3?")
        }),
        ("message role", |r| r.messages[0].role = Role::Developer),
        ("extra message", |r| {
            r.messages.push(Message::assistant("4"))
        }),
        ("message name", |r| r.messages[1].name = Some("bob".into())),
        ("temperature", |r| r.temperature = Some(0.7)),
        ("temperature unset", |r| r.temperature = None),
        ("top_p", |r| r.top_p = Some(0.9)),
        ("seed", |r| r.seed = Some(42)),
        ("max tokens", |r| r.max_tokens = Some(10)),
        ("tools", |r| {
            r.tools = Some(vec![Tool::function(
                "add",
                "adds",
                json!({"type": "object"}),
            )])
        }),
        ("tool_choice", |r| {
            r.tool_choice = Some(ToolChoice::Mode(ToolChoiceMode::Required))
        }),
        ("parallel_tool_calls", |r| {
            r.parallel_tool_calls = Some(false)
        }),
        ("response_format", |r| {
            r.response_format = Some(ResponseFormat::JsonObject)
        }),
        ("stop", |r| r.stop = Some(Stop::One("\n".into()))),
        ("presence_penalty", |r| {
            r.extra.insert("presence_penalty".into(), json!(0.5));
        }),
        ("logit_bias", |r| {
            r.extra.insert("logit_bias".into(), json!({"50256": -100}));
        }),
        ("reasoning_effort", |r| {
            r.extra.insert("reasoning_effort".into(), json!("high"));
        }),
        ("mock", |r| {
            r.extra.insert("mock".into(), json!({"reply": "5"}));
        }),
        ("unknown vendor extra", |r| {
            r.extra.insert("top_k".into(), json!(5));
        }),
    ];
    let want = digest(&base());
    for (name, edit) in cases {
        let mut req = base();
        edit(&mut req);
        assert_ne!(digest(&req), want, "{name} should change the key");
    }
    // The resolved model is part of the key (and of its flat form).
    assert_ne!(
        cache_key(&base(), "openai/gpt-4o", "shared").map(|k| k.digest),
        Some(want)
    );
}

#[test]
fn stop_order_matters_but_spelling_does_not() {
    let with_stop = |s: Stop| {
        let mut r = base();
        r.stop = Some(s);
        digest(&r)
    };
    assert_eq!(
        with_stop(Stop::One("END".into())),
        with_stop(Stop::Many(vec!["END".into()]))
    );
    assert_ne!(
        with_stop(Stop::Many(vec!["a".into(), "b".into()])),
        with_stop(Stop::Many(vec!["b".into(), "a".into()]))
    );
}

#[test]
fn json_spelling_does_not_change_the_key() {
    // Key order, `1` versus `1.0`, and `0` versus `0.0` in extras are the same request.
    let a = parse(json!({
        "model": "fast", "messages": [{"role": "user", "content": "hi"}],
        "temperature": 1, "presence_penalty": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}}}}
    }));
    let b = parse(json!({
        "response_format": {"json_schema": {"schema": {"properties": {"b": {"type": "number"}, "a": {"type": "string"}}, "type": "object"}, "name": "x"}, "type": "json_schema"},
        "presence_penalty": 0.0, "temperature": 1.0,
        "messages": [{"content": "hi", "role": "user"}], "model": "fast"
    }));
    assert_eq!(digest(&a), digest(&b));
}

#[test]
fn several_samples_are_not_cached() {
    let mut req = base();
    req.n = Some(2);
    assert_eq!(cache_key(&req, MODEL, "shared"), None);
    assert_eq!(canonical_form(&req, MODEL), None);
}

#[test]
fn golden_digest() {
    // A change here means every deployed cache entry stops matching: bump the key version
    // (KEY_CONTEXT and the `v1` of `CacheKey::flat`) when that is intended.
    let mut req = base();
    req.max_tokens = Some(64);
    req.seed = Some(7);
    req.top_p = Some(0.95);
    req.stop = Some(Stop::Many(vec!["\n\n".into(), "END".into()]));
    req.tools = Some(vec![Tool::function(
        "add",
        "Add two numbers",
        json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
    )]);
    req.extra.insert("presence_penalty".into(), json!(0.25));
    req.extra.insert("logit_bias".into(), json!({"1734": -5}));
    req.user = Some("not-in-key".into());
    assert_eq!(
        canonical_form(&req, MODEL).as_deref(),
        Some(concat!(
            r#"{"extra":{"logit_bias":{"1734":-5},"presence_penalty":0.25},"#,
            r#""max_output_tokens":64,"messages":[{"content":"You are terse.","role":"system"},"#,
            r#"{"content":"What is 2+2?","role":"user"}],"model":"openai/gpt-4o-mini","#,
            r#""seed":7,"stop":["\n\n","END"],"temperature":0,"#,
            r#""tools":[{"function":{"description":"Add two numbers","name":"add","#,
            r#""parameters":{"properties":{"a":{"type":"number"},"b":{"type":"number"}},"#,
            r#""type":"object"}},"type":"function"}],"top_p":0.95}"#
        ))
    );
    let key = cache_key(&req, MODEL, "shared");
    assert_eq!(key.as_ref().map(|k| k.digest.as_str()), Some(GOLDEN_DIGEST));
    assert_eq!(
        key.map(|k| k.flat()),
        Some(format!("v1:shared:{MODEL}:{GOLDEN_DIGEST}"))
    );
}

const GOLDEN_DIGEST: &str = "7c0a3ce288740a6b47eb192fd0188fe5833f84164e889e1827202f3c55e5ed5e";

#[test]
fn namespaces_separate_tenants_without_revealing_keys() {
    let a = namespace_for_gateway_key("sk-weir-alice-0123456789");
    let b = namespace_for_gateway_key("sk-weir-bob-0123456789");
    assert_ne!(a, b);
    assert_eq!(a, namespace_for_gateway_key("sk-weir-alice-0123456789"));
    assert_eq!(a.len(), 16);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!a.contains("alice"));
    assert_eq!(namespace_for_gateway_key(""), "shared");

    let req = base();
    let ka = cache_key(&req, MODEL, &a);
    let kb = cache_key(&req, MODEL, &b);
    // Same request, same digest, but different entries.
    assert_eq!(
        ka.as_ref().map(|k| &k.digest),
        kb.as_ref().map(|k| &k.digest)
    );
    assert_ne!(ka.map(|k| k.flat()), kb.map(|k| k.flat()));
}

#[test]
fn sampled_requests_are_told_apart() {
    let with_temp = |t: Option<f64>, top_p: Option<f64>| {
        let mut r = base();
        r.temperature = t;
        r.top_p = top_p;
        is_sampled(&r)
    };
    assert!(!with_temp(Some(0.0), None));
    assert!(!with_temp(Some(0.0), Some(0.5)), "greedy whatever top_p");
    assert!(with_temp(Some(0.2), None));
    assert!(with_temp(None, None), "provider default is sampled");
    // Sampled requests still get a key: caching them is the caller's choice.
    let mut r = base();
    r.temperature = Some(0.9);
    assert!(cache_key(&r, MODEL, "shared").is_some());
}

#[test]
fn strings_are_escaped_unambiguously() {
    let with_text = |t: &str| {
        let mut r = base();
        r.messages[1] = Message::user(t);
        digest(&r)
    };
    assert_ne!(with_text("a\"b"), with_text("a\\\"b"));
    assert_ne!(with_text("a\u{1}"), with_text("a\\u0001"));
    let mut r = base();
    r.messages[1] = Message::user("tab\there \u{7} \"q\"");
    assert!(canonical_form(&r, MODEL).is_some_and(|c| c.contains(r#""tab\there \u0007 \"q\"""#)));
}

/// The escaping written before strings were copied in runs: keys must not drift from it.
fn write_string_char_by_char(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[test]
fn strings_are_escaped_as_before() {
    for s in [
        "",
        "plain",
        "quote \" backslash \\ newline \n cr \r tab \t",
        "\u{0}\u{1}\u{1f}\u{7f} controls",
        "日本語 émoji 🎉 mixed \"in\"",
        "\\\\\"\"\n\n",
    ] {
        let (mut new, mut old) = (String::new(), String::new());
        write_string(s, &mut new);
        write_string_char_by_char(s, &mut old);
        assert_eq!(new, old, "{s:?}");
    }
}

/// The form as it was computed before it was written directly: through a `serde_json::Value`
/// tree, sorted by `write_canonical`. The direct writer must give the same bytes.
fn canonical_form_via_tree(req: &ChatRequest, resolved_model: &str) -> Option<String> {
    if req.n.is_some_and(|n| n > 1) {
        return None;
    }
    let mut doc = Map::new();
    doc.insert("model".into(), Value::String(resolved_model.to_owned()));

    let mut messages = Vec::with_capacity(req.messages.len());
    for message in &req.messages {
        // The whole message, unknown fields included: everything in it reaches the model.
        let mut value = serde_json::to_value(message).ok()?;
        if let (Some(content), Value::Object(obj)) = (&message.content, &mut value) {
            obj.insert("content".into(), content_value(content)?);
        }
        messages.push(value);
    }
    doc.insert("messages".into(), Value::Array(messages));

    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        doc.insert("tools".into(), serde_json::to_value(tools).ok()?);
    }
    if let Some(choice) = &req.tool_choice {
        doc.insert("tool_choice".into(), serde_json::to_value(choice).ok()?);
    }
    if let Some(parallel) = req.parallel_tool_calls {
        doc.insert("parallel_tool_calls".into(), Value::Bool(parallel));
    }
    // Plain text is the default format: asking for it explicitly is the same request.
    if let Some(format) = req
        .response_format
        .as_ref()
        .filter(|f| !matches!(f, ResponseFormat::Text))
    {
        doc.insert("response_format".into(), serde_json::to_value(format).ok()?);
    }
    if let Some(t) = req.temperature {
        doc.insert("temperature".into(), Value::Number(Number::from_f64(t)?));
    }
    if let Some(p) = req.top_p {
        doc.insert("top_p".into(), Value::Number(Number::from_f64(p)?));
    }
    if let Some(cap) = req.max_output_tokens() {
        doc.insert("max_output_tokens".into(), Value::from(cap));
    }
    let stop = req.stop_sequences();
    if !stop.is_empty() {
        // Order is kept: it is what the client sent, and normalising it buys almost nothing.
        doc.insert(
            "stop".into(),
            Value::Array(stop.into_iter().map(Value::String).collect()),
        );
    }
    if let Some(seed) = req.seed {
        doc.insert("seed".into(), Value::from(seed));
    }
    // `n: 1` is the default; only an explicit other value (0, which upstreams reject) is kept.
    if let Some(n) = req.n.filter(|&n| n != 1) {
        doc.insert("n".into(), Value::from(n));
    }

    let extras: Map<String, Value> = req
        .extra
        .iter()
        .filter(|(k, v)| !v.is_null() && !NON_DECIDING_EXTRAS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !extras.is_empty() {
        // Nested so a vendor extra can never collide with a modelled field's name.
        doc.insert("extra".into(), Value::Object(extras));
    }

    let mut out = String::with_capacity(256);
    write_canonical(&Value::Object(doc), &mut out);
    Some(out)
}

#[test]
fn direct_canonical_form_matches_the_tree_form() {
    let cases = [
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "m", "messages": [
            {"role": "system", "content": "be \"terse\"\n", "name": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "one part"}]},
            {"role": "user", "content": [{"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
            {"role": "assistant", "content": "x", "refusal": "no", "reasoning_content": "hmm"},
            {"role": "user", "content": "y", "vendor_field": {"b": 2, "a": [1.0, 2.5]}}
        ],
        "temperature": 0.7, "top_p": 1.0, "max_tokens": 64, "seed": -3, "n": 1,
        "stop": ["b", "a"], "parallel_tool_calls": false,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "logprobs": true, "top_logprobs": 2, "user": "u", "zeta": null, "alpha": {"z": 1, "a": 0}}),
        json!({"model": "m", "messages": [], "max_completion_tokens": 7, "stop": "x", "n": 0,
            "temperature": 0, "response_format": {"type": "text"}, "tools": []}),
    ];
    for case in cases {
        let req = parse(case);
        let direct = canonical_form(&req, MODEL).unwrap();
        assert_eq!(direct, canonical_form_via_tree(&req, MODEL).unwrap());
        let _: Value = serde_json::from_str(&direct).expect("the form is JSON");
    }
}

proptest::proptest! {
    #[test]
    fn any_string_is_escaped_as_before(
        s in "\\PC*|[\\x00-\\x20\"\\\\]*|.*|([a-zé漢 ]{0,11}[\\x00-\\x1f\"\\\\\\x7f]?){0,6}"
    ) {
        let (mut new, mut old) = (String::new(), String::new());
        write_string(&s, &mut new);
        write_string_char_by_char(&s, &mut old);
        proptest::prop_assert_eq!(new, old);
    }
}

#[test]
fn the_word_test_finds_every_byte_that_needs_escaping_wherever_it_sits() {
    for b in 0..=u8::MAX {
        let must = b < 0x20 || b == b'"' || b == b'\\';
        for pos in 0..8 {
            let mut word = [b'a'; 8];
            word[pos] = b;
            let flagged = may_need_escape(u64::from_le_bytes(word));
            assert!(flagged || !must, "byte {b:#04x} at {pos} missed");
        }
    }
    // Plain text, ASCII or not, goes the fast way.
    for plain in [
        *b"abcdefgh",
        *b"The fox ",
        [0xe6, 0xbc, 0xa2, 0xe5, 0xad, 0x97, b' ', b'~'],
    ] {
        assert!(!may_need_escape(u64::from_le_bytes(plain)));
    }
}

#[test]
fn keys_of_long_and_short_requests_in_turn_are_the_digest_of_their_canonical_form() {
    let long = "a long prompt, \"quoted\"\n ".repeat(80_000);
    for content in [long.as_str(), "short", long.as_str(), "hi"] {
        let req = parse(
            json!({"model": "m", "messages": [{"role": "user", "content": content}],
            "temperature": 0}),
        );
        let canonical = canonical_form(&req, MODEL).unwrap();
        let want = blake3::Hasher::new_derive_key(KEY_CONTEXT)
            .update(canonical.as_bytes())
            .finalize();
        let key = cache_key(&req, MODEL, "ns").unwrap();
        assert_eq!(key.digest, want.to_hex().to_string());
    }
    CANONICAL_SCRATCH.with(|s| assert!(s.borrow().capacity() <= SCRATCH_KEPT_AT_MOST));
}
