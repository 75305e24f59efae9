"""The official `openai` Python SDK against a live gateway: mock models and the Anthropic upstream."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import httpx
import openai
import pydantic
import pytest

from conftest import GATEWAY_KEY
from harness import FAKE_ANTHROPIC_KEY, FAKE_ANTHROPIC_MODEL, UPSTREAM_429, UPSTREAM_RETRY_AFTER, upstream_key

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "required": ["input"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Time in a city",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
    },
}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def collect_stream(stream: Any) -> dict[str, Any]:
    """Reassemble a chat stream the way a careful client does, and keep every chunk."""
    chunks = list(stream)
    text, reasoning, finish, usage = [], [], [], []
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        if c.usage is not None:
            usage.append(c.usage)
        for ch in c.choices:
            d = ch.delta
            if d.content:
                text.append(d.content)
            r = (d.model_extra or {}).get("reasoning_content")
            if r:
                reasoning.append(r)
            for tc in d.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "fragments": []})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["fragments"].append(tc.function.arguments)
            if ch.finish_reason:
                finish.append(ch.finish_reason)
    return {
        "chunks": chunks,
        "text": "".join(text),
        "text_pieces": text,
        "reasoning": "".join(reasoning),
        "calls": calls,
        "finish": finish,
        "usage": usage,
    }


# ------------------------------------------------------------------------------------------
# chat (mock)
# ------------------------------------------------------------------------------------------


def test_chat_echo(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="mock/echo", messages=user("hello there"))
    r = raw.parse()
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "mock/echo"
    assert len(r.choices) == 1
    assert r.choices[0].index == 0
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "hello there"
    assert r.choices[0].finish_reason == "stop"
    # The mock's documented usage: one token per word, plus 3 per message.
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 2, 7)
    assert raw.headers.get("x-request-id")
    assert raw.headers.get("x-weir-provider") == "mock"
    assert raw.headers.get("content-type", "").startswith("application/json")


def test_chat_echoes_last_user_message_only(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model="mock/echo",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ],
        temperature=0.2,
        max_tokens=50,
        user="sdk-test",
    )
    assert r.choices[0].message.content == "second question"


def test_chat_lorem_honours_max_tokens(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="mock/lorem", messages=user("anything"), max_tokens=7)
    words = r.choices[0].message.content.split()
    assert len(words) == 7
    assert words[:2] == ["lorem", "ipsum"]
    assert r.usage.completion_tokens == 7


def test_chat_content_and_reasoning_directives(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model="mock/echo",
        messages=user("ignored"),
        extra_body={"mock": {"content": "fixed answer", "reasoning": "step one, step two"}},
    )
    msg = r.choices[0].message
    assert msg.content == "fixed answer"
    assert (msg.model_extra or {}).get("reasoning_content") == "step one, step two"
    details = r.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 4


# ------------------------------------------------------------------------------------------
# streaming (mock)
# ------------------------------------------------------------------------------------------


def test_stream_text_reassembles(oai: openai.OpenAI) -> None:
    text = "the quick brown fox jumps over the lazy dog"
    got = collect_stream(oai.chat.completions.create(model="mock/echo", messages=user(text), stream=True))
    assert got["text"] == text
    assert len(got["text_pieces"]) > 1, "expected the answer in several deltas"
    first = got["chunks"][0]
    assert first.object == "chat.completion.chunk"
    assert first.choices[0].delta.role == "assistant"
    assert got["finish"] == ["stop"]
    assert len({c.id for c in got["chunks"]}) == 1, "every chunk of a completion shares one id"
    # Without stream_options.include_usage, OpenAI sends no usage chunk.
    assert got["usage"] == [], "usage was sent although include_usage was not requested"


def test_stream_include_usage(oai: openai.OpenAI) -> None:
    text = "count these five words"
    got = collect_stream(
        oai.chat.completions.create(
            model="mock/echo", messages=user(text), stream=True, stream_options={"include_usage": True}
        )
    )
    assert got["text"] == text
    last = got["chunks"][-1]
    assert last.usage is not None, "include_usage: the last chunk must carry usage"
    assert last.choices == [], "the usage chunk has an empty choices list"
    assert len(got["usage"]) == 1
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (7, 4, 11)


def test_stream_raw_sse_framing(http: httpx.Client) -> None:
    body = {"model": "mock/echo", "messages": user("raw framing"), "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events), raw
    assert events[-1] == "data: [DONE]"
    assert raw.endswith("\n\n")
    payloads = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"]) == "raw framing"


def test_stream_helper_final_completion(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model="mock/echo", messages=user("helper stream works")) as s:
        deltas = [e.delta for e in s if e.type == "content.delta"]
        final = s.get_final_completion()
    assert "".join(deltas) == "helper stream works"
    assert final.choices[0].message.content == "helper stream works"
    assert final.choices[0].finish_reason == "stop"


def test_stream_reasoning_deltas(oai: openai.OpenAI) -> None:
    got = collect_stream(
        oai.chat.completions.create(
            model="mock/echo",
            messages=user("answer text"),
            stream=True,
            extra_body={"mock": {"reasoning": "thinking hard about it"}},
        )
    )
    assert got["reasoning"] == "thinking hard about it"
    assert got["text"] == "answer text"


# ------------------------------------------------------------------------------------------
# tools
# ------------------------------------------------------------------------------------------


def test_tool_call(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model="mock/echo", messages=user("weather in Paris"), tools=[WEATHER_TOOL, TIME_TOOL]
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].id
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"input": "weather in Paris"}


def test_tool_choice_named(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model="mock/echo",
        messages=user("time in Tokyo"),
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments) == {"input": "time in Tokyo"}


def test_tool_choice_none_answers_in_words(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model="mock/echo", messages=user("no tools please"), tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert r.choices[0].message.tool_calls in (None, [])
    assert r.choices[0].message.content == "no tools please"
    assert r.choices[0].finish_reason == "stop"


def test_tool_call_streamed_deltas(oai: openai.OpenAI) -> None:
    text = "weather in Paris and in Lyon tomorrow morning"
    got = collect_stream(
        oai.chat.completions.create(model="mock/echo", messages=user(text), tools=[WEATHER_TOOL], stream=True)
    )
    assert list(got["calls"]) == [0]
    call = got["calls"][0]
    assert call["id"] and call["name"] == "get_weather"
    assert len(call["fragments"]) > 1, "the arguments should arrive in several fragments"
    args = "".join(call["fragments"])
    assert json.loads(args) == {"input": text}
    assert got["finish"] == ["tool_calls"]
    assert got["text"] == ""


def test_tool_call_stream_helper(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(
        model="mock/echo", messages=user("helper tools"), tools=[WEATHER_TOOL]
    ) as s:
        done = [e for e in s if e.type == "tool_calls.function.arguments.done"]
        final = s.get_final_completion()
    assert len(done) == 1 and done[0].name == "get_weather"
    assert json.loads(done[0].arguments) == {"input": "helper tools"}
    call = final.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"input": "helper tools"}


def test_tool_result_roundtrip(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model="mock/echo", messages=user("weather in Oslo"), tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    r = oai.chat.completions.create(
        model="mock/echo",
        tools=[WEATHER_TOOL],
        messages=[
            *user("weather in Oslo"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "snow, -3C"},
        ],
    )
    assert r.choices[0].message.content == "snow, -3C"
    assert r.choices[0].finish_reason == "stop"


# ------------------------------------------------------------------------------------------
# structured output
# ------------------------------------------------------------------------------------------


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]
    employed: bool


def test_json_schema_parse(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.parse(model="mock/echo", messages=user("Ada Lovelace"), response_format=Person)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Person)
    assert parsed.name == "Ada Lovelace"
    assert parsed.age == 0 and parsed.tags == [] and parsed.employed is False


def test_json_schema_plain_create(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "rating": {"type": "integer", "minimum": 1},
            "mood": {"type": "string", "enum": ["happy", "sad"]},
            "author": {
                "type": "object",
                "properties": {"first": {"type": "string"}, "last": {"type": "string"}},
                "required": ["first", "last"],
                "additionalProperties": False,
            },
            "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        },
        "required": ["title", "rating", "mood", "author", "keywords"],
        "additionalProperties": False,
    }
    r = oai.chat.completions.create(
        model="mock/echo",
        messages=user("a review"),
        response_format={"type": "json_schema", "json_schema": {"name": "review", "schema": schema, "strict": True}},
    )
    data = json.loads(r.choices[0].message.content)
    assert set(data) == set(schema["required"])
    assert data["title"] == "a review"
    assert data["rating"] == 1
    assert data["mood"] == "happy"
    assert data["author"] == {"first": "a review", "last": "a review"}
    assert data["keywords"] == ["a review", "a review"]


def test_json_object(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model="mock/echo", messages=user("wrap me"), response_format={"type": "json_object"}
    )
    assert json.loads(r.choices[0].message.content) == {"response": "wrap me"}


# ------------------------------------------------------------------------------------------
# embeddings and models
# ------------------------------------------------------------------------------------------


def test_embeddings(oai: openai.OpenAI) -> None:
    r = oai.embeddings.create(model="mock/echo", input=["red apple pie", "red apple", "quantum flux"])
    assert r.object == "list"
    assert [e.index for e in r.data] == [0, 1, 2]
    vecs = [e.embedding for e in r.data]
    assert all(len(v) == 256 for v in vecs)
    for v in vecs:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-3)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731 (unit vectors)
    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    assert r.usage.prompt_tokens == 7


def test_embeddings_float_and_dimensions(oai: openai.OpenAI) -> None:
    a = oai.embeddings.create(model="mock/echo", input="same text", encoding_format="float", dimensions=64)
    b = oai.embeddings.create(model="mock/echo", input="same text", dimensions=64)  # SDK default: base64
    assert len(a.data) == 1 and len(a.data[0].embedding) == 64
    assert a.data[0].embedding == pytest.approx(b.data[0].embedding, abs=1e-6)


def test_models_list_and_retrieve(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "mock/echo" in ids and "mock/lorem" in ids
    assert "claude" in ids, f"configured alias missing from /v1/models: {ids}"
    m = oai.models.retrieve("mock/echo")
    assert m.id == "mock/echo"
    assert m.object == "model"
    with pytest.raises(openai.NotFoundError) as e:
        oai.models.retrieve("mock/does-not-exist")
    assert e.value.code == "model_not_found"


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


def test_bad_gateway_key(base_url: str) -> None:
    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong-key", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="mock/echo", messages=user("hi"))
    assert e.value.status_code == 401
    assert e.value.type == "authentication_error"
    # A fresh client: the rejected POST's connection may be closed (see test_bad_input.py).
    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong-key", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_rate_limit_with_retry_after(oai: openai.OpenAI) -> None:
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(
            model="mock/echo", messages=user("hi"), extra_body={"mock": {"status": 429, "retry_after": 1}}
        )
    assert time.monotonic() - t0 < 5, "the 429 should come back at once (retry.max_retries: 0)"
    headers = e.value.response.headers
    assert headers.get("retry-after") == "1", dict(headers)
    assert headers.get("retry-after-ms") == "1000", dict(headers)
    assert e.value.status_code == 429
    assert e.value.type == "rate_limit_error"


def test_rate_limit_on_stream_start(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(
            model="mock/echo",
            messages=user("hi"),
            stream=True,
            extra_body={"mock": {"status": 429, "retry_after": 2}},
        )
    assert e.value.response.headers.get("retry-after") == "2"


@pytest.mark.parametrize(
    ("status", "exc"),
    [(400, openai.BadRequestError), (403, openai.PermissionDeniedError), (500, openai.InternalServerError),
     (503, openai.InternalServerError)],
)
def test_injected_status_maps_to_sdk_error(oai: openai.OpenAI, status: int, exc: type) -> None:
    with pytest.raises(exc) as e:
        oai.chat.completions.create(model="mock/echo", messages=user("hi"), extra_body={"mock": {"status": status}})
    assert e.value.status_code == status


@pytest.mark.parametrize("model", ["mock/nope", "nosuchprovider/model", "no-such-alias"])
def test_unknown_model(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model=model, messages=user("hi"))
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"


def test_invalid_mock_directive(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="mock/echo", messages=user("hi"), extra_body={"mock": {"bogus": 1}})
    assert e.value.param == "mock"


def test_stream_cut_mid_way_raises(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="mock/echo",
        messages=user("one two three four five six seven eight"),
        stream=True,
        extra_body={"mock": {"cut_after": 3}},
    )
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        for c in stream:
            for ch in c.choices:
                seen.append(ch.delta.content or "")
    assert "".join(seen) != "one two three four five six seven eight", "a cut stream must not look complete"


def test_hang_times_out_and_gateway_survives(base_url: str, http: httpx.Client) -> None:
    impatient = openai.OpenAI(base_url=f"{base_url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="mock/echo", messages=user("hi"), extra_body={"mock": {"hang": True}})
    assert time.monotonic() - t0 < 10
    assert http.get("/health").status_code == 200


# ------------------------------------------------------------------------------------------
# OpenAI SDK -> weir -> Anthropic upstream (translated both ways)
# ------------------------------------------------------------------------------------------


def test_chat_via_anthropic_upstream(oai: openai.OpenAI, fake: Any) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="claude",
        messages=[{"role": "system", "content": "You are terse."}, *user("hello claude")],
        max_tokens=100,
    )
    r = raw.parse()
    assert r.choices[0].message.content == "hello claude"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert raw.headers.get("x-weir-provider") == "fakeanthropic"
    sent = fake.last_request()
    assert sent["path"] == "/v1/messages"
    assert upstream_key(sent["headers"]) == FAKE_ANTHROPIC_KEY
    assert GATEWAY_KEY not in json.dumps(sent["headers"]), "the gateway key leaked upstream"
    assert sent["headers"].get("anthropic-version")
    body = sent["body"]
    assert body["model"] == FAKE_ANTHROPIC_MODEL
    assert body["max_tokens"] == 100
    system = body.get("system")
    system_text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system or [])
    assert system_text == "You are terse."
    assert all(m["role"] in ("user", "assistant") for m in body["messages"])


def test_stream_via_anthropic_upstream(oai: openai.OpenAI, fake: Any) -> None:
    text = "stream me from the upstream please"
    got = collect_stream(
        oai.chat.completions.create(
            model="claude", messages=user(text), stream=True, stream_options={"include_usage": True}
        )
    )
    assert got["text"] == text
    assert got["finish"] == ["stop"]
    assert got["usage"] and got["usage"][-1].completion_tokens > 0
    assert fake.last_request()["body"].get("stream") is True


def test_tool_stream_via_anthropic_upstream(oai: openai.OpenAI, fake: Any) -> None:
    text = "weather in Rome"
    got = collect_stream(
        oai.chat.completions.create(model="claude", messages=user(text), tools=[WEATHER_TOOL, TIME_TOOL], stream=True)
    )
    assert list(got["calls"]) == [0]
    call = got["calls"][0]
    assert call["name"] == "get_weather" and call["id"]
    assert json.loads("".join(call["fragments"])) == {"input": text}
    assert got["finish"] == ["tool_calls"]
    sent_tools = fake.last_request()["body"]["tools"]
    assert [t["name"] for t in sent_tools] == ["get_weather", "get_time"]
    assert sent_tools[0]["input_schema"]["properties"] == {"input": {"type": "string"}}


def test_upstream_429_reaches_openai_sdk(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model="claude", messages=user(UPSTREAM_429))
    assert e.value.response.headers.get("retry-after") == UPSTREAM_RETRY_AFTER


def test_cache_hit_is_visible_in_headers(oai: openai.OpenAI) -> None:
    messages = user(f"cache me {time.time_ns()}")
    first = oai.chat.completions.with_raw_response.create(model="mock/echo", messages=messages, temperature=0)
    second = oai.chat.completions.with_raw_response.create(model="mock/echo", messages=messages, temperature=0)
    assert first.headers["x-weir-cache"] == "miss"
    assert second.headers["x-weir-cache"] == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    fresh = oai.chat.completions.with_raw_response.create(
        model="mock/echo", messages=messages, temperature=0, extra_headers={"Cache-Control": "no-cache"}
    )
    assert fresh.headers["x-weir-cache"] == "bypass"
    sampled = oai.chat.completions.with_raw_response.create(model="mock/echo", messages=messages)
    assert sampled.headers["x-weir-cache"] == "bypass"


def test_cached_answer_replays_as_a_stream(oai: openai.OpenAI) -> None:
    messages = user(f"stream me later {time.time_ns()}")
    done = oai.chat.completions.create(model="mock/echo", messages=messages, temperature=0)
    raw = oai.chat.completions.with_raw_response.create(
        model="mock/echo", messages=messages, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-weir-cache"] == "hit"
    got = collect_stream(raw.parse())
    assert got["text"] == done.choices[0].message.content
    assert got["finish"] == ["stop"]
    assert got["usage"][-1].total_tokens == done.usage.total_tokens
