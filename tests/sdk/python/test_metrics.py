"""`GET /metrics` read the way Prometheus reads it: the whole scrape parses with the official
Python client's parser, every family has the type its name promises, histograms are
consistent, and two calls through the OpenAI SDK move the counters by exactly two."""

from __future__ import annotations

from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from conftest import GATEWAY_KEY
from harness import FAKE_ANTHROPIC_KEY, Gateway


def scrape(gateway: Gateway) -> tuple[str, dict[str, Any]]:
    r = httpx.get(f"{gateway.url}/metrics", timeout=10.0)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    return r.text, families


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    f = families.get(family)
    if f is None:
        return 0.0
    return sum(
        s.value
        for s in f.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_the_whole_scrape_parses_and_counts_calls(gateway: Gateway, oai: openai.OpenAI) -> None:
    _, before = scrape(gateway)
    oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "metrics one"}])
    chunks = list(
        oai.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "metrics two"}], stream=True
        )
    )
    assert chunks
    text, after = scrape(gateway)

    # The parser strips `_total` from counter family names.
    for name, kind in {
        "weir_requests": "counter",
        "weir_tokens": "counter",
        "weir_cost_dollars": "counter",
        "gen_ai_client_operation_duration_seconds": "histogram",
        "gen_ai_client_token_usage": "histogram",
        "gen_ai_server_time_to_first_token_seconds": "histogram",
        "weir_overhead_seconds": "histogram",
        "weir_upstream_attempts": "counter",
        "weir_breaker_state": "gauge",
        "weir_upstream_key_in_flight": "gauge",
        "weir_streams_open": "gauge",
        "weir_uptime_seconds": "gauge",
    }.items():
        assert name in after, f"{name} missing"
        assert after[name].type == kind, f"{name} is {after[name].type}, not {kind}"

    # Counter and histogram names follow Prometheus conventions.
    for f in after.values():
        if f.type == "histogram":
            assert f.name.endswith("_seconds") or f.name == "gen_ai_client_token_usage", f.name

    def calls(families: dict[str, Any], operation: str) -> float:
        return value(
            families,
            "weir_requests",
            "weir_requests_total",
            model="claude",
            provider="fakeanthropic",
            operation=operation,
            status_class="2xx",
        )

    assert calls(after, "chat") - calls(before, "chat") == 1
    assert calls(after, "chat_stream") - calls(before, "chat_stream") == 1

    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "fakeanthropic",
        "gen_ai_request_model": "claude",
    }
    duration = "gen_ai_client_operation_duration_seconds"
    count = value(after, duration, duration + "_count", **labels)
    assert count - value(before, duration, duration + "_count", **labels) == 2
    # Buckets are cumulative and end at the count.
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for s in after[duration].samples
        if s.name == duration + "_bucket" and all(s.labels.get(k) == v for k, v in labels.items())
    )
    assert buckets[-1] == (float("inf"), count)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    ttft = "gen_ai_server_time_to_first_token_seconds"
    assert value(after, ttft, ttft + "_count", **labels) - value(before, ttft, ttft + "_count", **labels) == 1

    tokens_in = value(after, "weir_tokens", "weir_tokens_total", model="claude", type="input")
    assert tokens_in > value(before, "weir_tokens", "weir_tokens_total", model="claude", type="input")
    assert value(after, "weir_streams_open", "weir_streams_open") >= 0

    for secret in (GATEWAY_KEY, FAKE_ANTHROPIC_KEY):
        assert secret not in text


def test_without_an_admin_key_loopback_clients_may_scrape(gateway: Gateway) -> None:
    # This gateway has no admin key: loopback clients may scrape, whatever they send.
    r = httpx.get(f"{gateway.url}/metrics", headers={"authorization": "Bearer nope"}, timeout=10.0)
    assert r.status_code == 200
