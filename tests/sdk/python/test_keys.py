"""Stored gateway keys through the official SDKs: a key made with the admin API works with the
openai and anthropic SDKs; a revoked key is each SDK's authentication error, a rate-limited
call its rate-limit error, and a model the key may not use its permission error."""

from __future__ import annotations

import os
from typing import Any, Iterator

import anthropic
import httpx
import openai
import pytest

from harness import Gateway

ADMIN_KEY = "admin-" + os.urandom(6).hex()
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config: dict[str, Any] = {
        "server": {"admin_key": ADMIN_KEY, "shutdown_grace": "2s"},
        "retry": {"max_retries": 0},
    }
    gw = Gateway(config, tmp_path_factory.mktemp("keyed"), name="weir-keys").start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def admin(keyed: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=keyed.url, timeout=TIMEOUT, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as c:
        yield c


def create_key(admin: httpx.Client, **fields: Any) -> dict[str, Any]:
    r = admin.post("/admin/keys", json={"name": "sdk-" + os.urandom(3).hex(), **fields})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["key"].startswith("wk-")
    return body


def oai(keyed: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=key, max_retries=0, timeout=TIMEOUT)


def ant(keyed: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=keyed.url, api_key=key, max_retries=0, timeout=TIMEOUT)


def chat(client: openai.OpenAI, model: str = "mock/echo") -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def message(client: anthropic.Anthropic) -> Any:
    return client.messages.create(model="mock/echo", max_tokens=16, messages=[{"role": "user", "content": "hi"}])


def test_a_stored_key_works_with_both_sdks(keyed: Gateway, admin: httpx.Client) -> None:
    key = create_key(admin, user="alice", team="search")["key"]
    assert chat(oai(keyed, key)).choices[0].message.content == "hi"
    assert message(ant(keyed, key)).content[0].text == "hi"
    streamed = oai(keyed, key).chat.completions.create(
        model="mock/echo", messages=[{"role": "user", "content": "hi there"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == "hi there"


def test_without_a_key_or_with_an_unknown_one_each_sdk_gets_its_authentication_error(keyed: Gateway, admin: httpx.Client) -> None:
    create_key(admin)  # the store has keys: every request needs one
    with pytest.raises(openai.AuthenticationError) as e:
        chat(oai(keyed, "wk-not-a-real-key"))
    assert "wk-not-a-real-key" not in str(e.value)
    with pytest.raises(anthropic.AuthenticationError):
        message(ant(keyed, "wk-not-a-real-key"))


def test_a_revoked_key_is_each_sdks_authentication_error(keyed: Gateway, admin: httpx.Client) -> None:
    created = create_key(admin)
    key = created["key"]
    assert chat(oai(keyed, key)).choices
    r = admin.post(f"/admin/keys/{created['id']}/revoke")
    assert r.status_code == 200 and r.json()["status"] == "revoked", r.text
    with pytest.raises(openai.AuthenticationError) as e:
        chat(oai(keyed, key))
    assert "revoked" in str(e.value) and key not in str(e.value)
    with pytest.raises(anthropic.AuthenticationError) as ae:
        message(ant(keyed, key))
    assert "revoked" in str(ae.value)


def test_a_rate_limited_call_is_each_sdks_rate_limit_error(keyed: Gateway, admin: httpx.Client) -> None:
    key = create_key(admin, limits={"rpm": 2})["key"]
    client = oai(keyed, key)
    first = client.chat.completions.with_raw_response.create(
        model="mock/echo", messages=[{"role": "user", "content": "hi"}]
    )
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert int(first.headers["x-ratelimit-reset"]) > 0
    chat(client)
    with pytest.raises(openai.RateLimitError) as e:
        chat(client)
    assert e.value.response.headers["x-ratelimit-remaining"] == "0"
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert "2 requests per minute" in str(e.value)

    one = create_key(admin, limits={"rpm": 1})["key"]
    message(ant(keyed, one))
    with pytest.raises(anthropic.RateLimitError) as ae:
        message(ant(keyed, one))
    assert "1 requests per minute" in str(ae.value) or "1 request per minute" in str(ae.value)


def test_a_model_the_key_may_not_use_is_a_permission_error(keyed: Gateway, admin: httpx.Client) -> None:
    key = create_key(admin, models=["mock/lorem"])["key"]
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(oai(keyed, key), model="mock/echo")
    assert "mock/echo" in str(e.value)
    assert chat(oai(keyed, key), model="mock/lorem").choices


def test_admin_routes_need_the_admin_key(keyed: Gateway) -> None:
    with httpx.Client(base_url=keyed.url, timeout=TIMEOUT) as anon:
        assert anon.get("/admin/keys").status_code == 401
        r = anon.get("/admin/keys", headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401 and "wrong" not in r.text
        assert anon.delete("/cache").status_code == 401
