"""The official `anthropic` Python SDK against weir's /v1/messages.

Two backends answer the same requests: `claude` (a native pass-through to the fake Anthropic
upstream) and `mock/echo` (translated from chat completions). The fake upstream behaves like
mock/echo, so the SDK must assemble the same final message from either stream.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import pytest

from conftest import GATEWAY_KEY
from harness import (
    FAKE_ANTHROPIC_KEY,
    FAKE_ANTHROPIC_MODEL,
    UPSTREAM_429,
    UPSTREAM_529,
    UPSTREAM_MIDSTREAM_ERROR,
    UPSTREAM_RETRY_AFTER,
    thinking_text_for,
    upstream_key,
)

NATIVE = "claude"
TRANSLATED = "mock/echo"
BACKENDS = [NATIVE, TRANSLATED]

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
}
CLOCK = {
    "name": "get_time",
    "description": "Time in a city",
    "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
}
THINKING = {"type": "enabled", "budget_tokens": 1024}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def request(model: str, text: str, *, tools: list[dict[str, Any]] | None = None, thinking: bool = False) -> dict[str, Any]:
    """The same request for either backend; mock/echo is told what to 'think' via `mock`."""
    kw: dict[str, Any] = {"model": model, "max_tokens": 2048, "messages": user(text)}
    if tools:
        kw["tools"] = tools
    if thinking:
        kw["thinking"] = THINKING
        if model == TRANSLATED:
            kw["extra_body"] = {"mock": {"reasoning": thinking_text_for(text)}}
    return kw


def normalize(msg: Any) -> dict[str, Any]:
    """What must agree between backends: block types, texts, tool names and inputs; not ids."""
    blocks: list[tuple[Any, ...]] = []
    for b in msg.content:
        if b.type == "text":
            blocks.append(("text", b.text))
        elif b.type == "thinking":
            blocks.append(("thinking", b.thinking, isinstance(getattr(b, "signature", None), str)))
        elif b.type == "tool_use":
            blocks.append(("tool_use", b.name, b.input, bool(getattr(b, "id", None))))
        else:
            blocks.append((b.type,))
    return {
        "type": msg.type,
        "role": msg.role,
        "stop_reason": msg.stop_reason,
        "stop_sequence": msg.stop_sequence,
        "blocks": blocks,
    }


def expected(text: str, *, tools: bool, thinking: bool) -> dict[str, Any]:
    blocks: list[tuple[Any, ...]] = []
    if thinking:
        blocks.append(("thinking", thinking_text_for(text), True))
    if tools:
        blocks.append(("tool_use", "get_weather", {"input": text}, True))
    else:
        blocks.append(("text", text))
    return {
        "type": "message",
        "role": "assistant",
        "stop_reason": "tool_use" if tools else "end_turn",
        "stop_sequence": None,
        "blocks": blocks,
    }


# ------------------------------------------------------------------------------------------
# raw SSE: Anthropic's event grammar
# ------------------------------------------------------------------------------------------


def parse_sse(raw: str) -> list[tuple[str | None, dict[str, Any]]]:
    events: list[tuple[str | None, dict[str, Any]]] = []
    name: str | None = None
    data: list[str] = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        if line == "":
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].lstrip(" "))
    assert not data, f"stream ended inside an event: {data}"
    return events


ALLOWED_DELTAS = {
    "text": {"text_delta", "citations_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
}


def check_grammar(events: list[tuple[str | None, dict[str, Any]]]) -> list[tuple[str, ...]]:
    """Assert Anthropic's stream grammar; return the stream's shape (for comparison)."""
    for name, data in events:
        assert name is not None, f"an event without an `event:` line (the SDK drops those): {data}"
        assert name == data.get("type"), f"event name {name!r} != data.type {data.get('type')!r}"
    evs = [(n, d) for n, d in events if n != "ping"]
    assert evs, "empty stream"
    assert evs[0][0] == "message_start", evs[0]
    start = evs[0][1]["message"]
    assert start["type"] == "message" and start["role"] == "assistant"
    assert start["content"] == []
    assert isinstance(start["id"], str) and start["id"]
    assert isinstance(start["usage"]["input_tokens"], int)
    assert evs[-1][0] == "message_stop", evs[-1]
    assert evs[-2][0] == "message_delta", evs[-2]
    md = evs[-2][1]
    assert md["delta"]["stop_reason"] in ("end_turn", "tool_use", "max_tokens", "stop_sequence"), md
    assert isinstance(md["usage"]["output_tokens"], int) and md["usage"]["output_tokens"] > 0, md

    shape: list[tuple[str, ...]] = []
    body = evs[1:-2]
    j, index = 0, 0
    while j < len(body):
        name, data = body[j]
        assert name == "content_block_start", f"expected content_block_start, got {name}: {data}"
        assert data["index"] == index, f"block index {data['index']} != expected {index}"
        block = data["content_block"]
        kind = block["type"]
        assert kind in ALLOWED_DELTAS, block
        if kind == "text":
            assert block.get("text") == "", block
        elif kind == "thinking":
            assert block.get("thinking") == "", block
        else:
            assert block.get("input") == {}, block
            assert block.get("id") and block.get("name"), block
        shape.append(("start", kind))
        j += 1
        n_deltas = 0
        while j < len(body) and body[j][0] == "content_block_delta":
            d = body[j][1]
            assert d["index"] == index, d
            dtype = d["delta"]["type"]
            assert dtype in ALLOWED_DELTAS[kind], f"{dtype} inside a {kind} block"
            if dtype != "signature_delta" and shape[-1] != ("delta", dtype):
                shape.append(("delta", dtype))
            n_deltas += 1
            j += 1
        assert n_deltas > 0, f"{kind} block {index} has no delta"
        assert j < len(body), "stream ended inside a content block"
        name, data = body[j]
        assert name == "content_block_stop" and data["index"] == index, f"expected content_block_stop {index}: {data}"
        shape.append(("stop", kind))
        j += 1
        index += 1
    assert index > 0, "no content block"
    return shape


def raw_stream(http: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, list[tuple[str | None, dict[str, Any]]]]:
    headers = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}
    with http.stream("POST", "/v1/messages", json=dict(body, stream=True), headers=headers) as r:
        raw = r.read().decode()
    assert r.status_code == 200, raw
    assert r.headers["content-type"].startswith("text/event-stream"), r.headers
    return r, parse_sse(raw)


# ------------------------------------------------------------------------------------------
# messages.create
# ------------------------------------------------------------------------------------------


def test_create_translated(ant: anthropic.Anthropic) -> None:
    m = ant.messages.create(model=TRANSLATED, max_tokens=100, messages=user("hello there"))
    assert m.type == "message" and m.role == "assistant"
    assert m.id.startswith("msg_")
    assert m.model == TRANSLATED
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "hello there"
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (5, 2)


def test_create_native_pass_through(ant: anthropic.Anthropic, fake: Any) -> None:
    m = ant.messages.create(
        model=NATIVE,
        max_tokens=321,
        system="Be brief.",
        messages=user("hello native"),
        extra_body={"temperature": 0.5},
    )
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "hello native"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    sent = fake.last_request()
    assert sent["path"] == "/v1/messages"
    assert upstream_key(sent["headers"]) == FAKE_ANTHROPIC_KEY
    assert GATEWAY_KEY not in json.dumps(sent["headers"]), "the gateway key leaked upstream"
    assert sent["headers"].get("anthropic-version")
    body = sent["body"]
    assert body["model"] == FAKE_ANTHROPIC_MODEL
    assert body["max_tokens"] == 321
    assert body["system"] == "Be brief."
    assert body["temperature"] == 0.5
    assert body["messages"] == user("hello native")
    assert not body.get("stream")


def test_create_with_system_translated(ant: anthropic.Anthropic) -> None:
    m = ant.messages.create(
        model=TRANSLATED,
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ],
    )
    assert m.content[0].text == "second"


@pytest.mark.parametrize("model", BACKENDS)
def test_tool_use_and_result_roundtrip(ant: anthropic.Anthropic, model: str) -> None:
    first = ant.messages.create(model=model, max_tokens=200, messages=user("weather in Oslo"), tools=[WEATHER, CLOCK])
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].name == "get_weather" and uses[0].input == {"input": "weather in Oslo"} and uses[0].id
    second = ant.messages.create(
        model=model,
        max_tokens=200,
        tools=[WEATHER, CLOCK],
        messages=[
            *user("weather in Oslo"),
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "snow, -3C"}],
            },
        ],
    )
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == "snow, -3C"
    assert second.stop_reason == "end_turn"


@pytest.mark.parametrize("model", BACKENDS)
def test_tool_choice_named(ant: anthropic.Anthropic, model: str) -> None:
    m = ant.messages.create(
        model=model,
        max_tokens=200,
        messages=user("time in Tokyo"),
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    uses = [b for b in m.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_time", {"input": "time in Tokyo"})]


# ------------------------------------------------------------------------------------------
# streaming
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", BACKENDS)
def test_stream_helper_text(ant: anthropic.Anthropic, model: str) -> None:
    text = "the quick brown fox jumps over the lazy dog"
    with ant.messages.stream(model=model, max_tokens=200, messages=user(text)) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(pieces) == text
    assert len(pieces) > 1, "expected the text in several deltas"
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


SCENARIOS = {
    "text": {"text": "hello from the other side", "tools": False, "thinking": False},
    "thinking+text": {"text": "why is the sky blue", "tools": False, "thinking": True},
    "tool_use": {"text": "weather in Paris and Lyon", "tools": True, "thinking": False},
    "thinking+tool_use": {"text": "weather in Berlin", "tools": True, "thinking": True},
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_translated_stream_assembles_like_native(ant: anthropic.Anthropic, scenario: str) -> None:
    """THE key test: the SDK's stream helper builds the same message from either stream."""
    sc = SCENARIOS[scenario]
    want = expected(sc["text"], tools=sc["tools"], thinking=sc["thinking"])
    tools = [WEATHER, CLOCK] if sc["tools"] else None
    finals: dict[str, dict[str, Any]] = {}
    for model in BACKENDS:
        with ant.messages.stream(**request(model, sc["text"], tools=tools, thinking=sc["thinking"])) as s:
            final = s.get_final_message()
        finals[model] = normalize(final)
        assert final.usage.output_tokens > 0, f"{model}: no output usage"
        assert final.usage.input_tokens > 0, f"{model}: no input usage in the assembled message"
        # The streamed message must equal the complete one from the same backend.
        whole = ant.messages.create(**request(model, sc["text"], tools=tools, thinking=sc["thinking"]))
        assert normalize(whole) == finals[model], f"{model}: streamed and complete answers differ"
    assert finals[NATIVE] == want, "native pass-through does not match the fake upstream's answer"
    assert finals[TRANSLATED] == finals[NATIVE], "translated stream assembles differently from the native one"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_translated_stream_follows_anthropic_event_grammar(http: httpx.Client, scenario: str) -> None:
    sc = SCENARIOS[scenario]
    tools = [WEATHER, CLOCK] if sc["tools"] else None
    shapes = {}
    for model in BACKENDS:
        kw = request(model, sc["text"], tools=tools, thinking=sc["thinking"])
        body = {k: v for k, v in kw.items() if k != "extra_body"}
        body.update(kw.get("extra_body", {}))
        _, events = raw_stream(http, body)
        shapes[model] = check_grammar(events)
        if sc["tools"]:
            fragments = [
                d["delta"]["partial_json"]
                for n, d in events
                if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
            ]
            assert len([f for f in fragments if f]) > 1, f"{model}: tool input not streamed in pieces"
            assert json.loads("".join(fragments)) == {"input": sc["text"]}
    assert shapes[TRANSLATED] == shapes[NATIVE]


def test_stream_native_request_sent_upstream(ant: anthropic.Anthropic, fake: Any) -> None:
    with ant.messages.stream(**request(NATIVE, "stream upstream", thinking=True)) as s:
        s.get_final_message()
    body = fake.last_request()["body"]
    assert body["stream"] is True
    assert body["model"] == FAKE_ANTHROPIC_MODEL
    assert body["thinking"] == THINKING


@pytest.mark.parametrize("model", BACKENDS)
def test_stream_signature_survives_for_native_thinking(ant: anthropic.Anthropic, model: str) -> None:
    with ant.messages.stream(**request(model, "sig check", thinking=True)) as s:
        final = s.get_final_message()
    block = final.content[0]
    assert block.type == "thinking"
    if model == NATIVE:
        assert block.signature.startswith("EqQBCkYIBhgCKkBfakesignature"), block


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


def test_bad_gateway_key(base_url: str) -> None:
    bad = anthropic.Anthropic(base_url=base_url, api_key="wrong-key", max_retries=0, timeout=10)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=TRANSLATED, max_tokens=10, messages=user("hi"))
    assert e.value.status_code == 401
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "authentication_error"
    bad = anthropic.Anthropic(base_url=base_url, api_key="wrong-key", max_retries=0, timeout=10)
    with pytest.raises(anthropic.AuthenticationError):
        with bad.messages.stream(model=NATIVE, max_tokens=10, messages=user("hi")) as s:
            s.get_final_message()


@pytest.mark.parametrize("model", ["mock/nope", "nosuchprovider/model"])
def test_unknown_model(ant: anthropic.Anthropic, model: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as e:
        ant.messages.create(model=model, max_tokens=10, messages=user("hi"))
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error"


def test_mock_rate_limit(ant: anthropic.Anthropic) -> None:
    t0 = time.monotonic()
    with pytest.raises(anthropic.RateLimitError) as e:
        ant.messages.create(
            model=TRANSLATED, max_tokens=10, messages=user("hi"), extra_body={"mock": {"status": 429, "retry_after": 1}}
        )
    assert time.monotonic() - t0 < 5
    assert e.value.response.headers.get("retry-after") == "1"
    assert e.value.body["error"]["type"] == "rate_limit_error"


def test_mock_rate_limit_on_stream(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError):
        with ant.messages.stream(
            model=TRANSLATED, max_tokens=10, messages=user("hi"), extra_body={"mock": {"status": 429}}
        ) as s:
            s.get_final_message()


def test_upstream_rate_limit_passes_through(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as e:
        ant.messages.create(model=NATIVE, max_tokens=10, messages=user(UPSTREAM_429))
    assert e.value.response.headers.get("retry-after") == UPSTREAM_RETRY_AFTER
    assert e.value.body["error"]["type"] == "rate_limit_error"


def test_upstream_overloaded_passes_through(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.OverloadedError) as e:
        ant.messages.create(model=NATIVE, max_tokens=10, messages=user(UPSTREAM_529))
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"


def test_translated_stream_cut_raises(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIError):
        with ant.messages.stream(
            model=TRANSLATED,
            max_tokens=100,
            messages=user("one two three four five six seven eight"),
            extra_body={"mock": {"cut_after": 3}},
        ) as s:
            s.get_final_message()


def test_native_midstream_error_raises(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIError) as e:
        with ant.messages.stream(
            model=NATIVE, max_tokens=100, messages=user(f"{UPSTREAM_MIDSTREAM_ERROR} with words")
        ) as s:
            s.get_final_message()
    assert "overloaded" in str(e.value)


# ------------------------------------------------------------------------------------------
# count_tokens
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", BACKENDS)
def test_count_tokens(ant: anthropic.Anthropic, model: str) -> None:
    short = ant.messages.count_tokens(model=model, messages=user("hi"))
    long = ant.messages.count_tokens(
        model=model, system="You are a helpful assistant.", messages=user("hi " * 200), tools=[WEATHER]
    )
    assert short.input_tokens > 0
    assert long.input_tokens > short.input_tokens + 150


def test_count_tokens_unknown_model(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.count_tokens(model="mock/nope", messages=user("hi"))
