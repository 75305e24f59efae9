"""The scenarios: what is sent, to which weir instance, and how it is compared.

Each scenario runs against every target (direct to the fake upstream, through weir, and
through the peer when one is asked for), interleaved at each concurrency level.
"""

import json
from dataclasses import dataclass, field

SYSTEM = "You are a concise assistant. Answer in one short paragraph."
# Paced upstreams: (ttft ms, content chunks, ms between chunks).
PACED = (20, 20, 5)
HOLD = (20, 100, 20)


def chat_body(model, unique=True, temperature=None, stream=False):
    text = "Summarise benchmark request {{n}} in one sentence." if unique \
        else "Summarise the benchmark in one sentence."
    b = {"model": model, "max_tokens": 256,
         "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]}
    if temperature is not None:
        b["temperature"] = temperature
    if stream:
        b["stream"] = True
    return json.dumps(b)


def messages_body(model, unique=True, temperature=None, stream=False):
    text = "Summarise benchmark request {{n}} in one sentence." if unique \
        else "Summarise the benchmark in one sentence."
    b = {"model": model, "max_tokens": 256, "system": SYSTEM,
         "messages": [{"role": "user", "content": text}]}
    if temperature is not None:
        b["temperature"] = temperature
    if stream:
        b["stream"] = True
    return json.dumps(b)


def long_chat_body(model):
    """A 40 KB conversation, unique per request, temperature 0 (a cache miss whose key covers
    all of it): eight turns of prose and a 20 KB data: image, the shape of an agent's or RAG
    request. Deterministic, so runs compare."""
    words = ("the gateway routes tokens across providers while budgets hold under load "
             "again and").split()
    state = [0]

    def prose(n):
        out = []
        for _ in range(n):
            state[0] = (state[0] * 7 + 3) % len(words)
            out.append(words[state[0]])
        return " ".join(out) + ' "quoted"\nnext line'

    messages = [{"role": "system", "content": prose(300)}]
    for _ in range(4):
        messages.append({"role": "user", "content": prose(400)})
        messages.append({"role": "assistant", "content": prose(300)})
    messages.append({"role": "user", "content": [
        {"type": "text", "text": "Request {{n}}: " + prose(200)},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 20000}},
    ]})
    return json.dumps({"model": model, "max_tokens": 256, "temperature": 0,
                       "messages": messages})


@dataclass
class Scenario:
    name: str
    title: str
    mode: str                       # closed | rate | stream | hold
    instance: str                   # weir instance (configs.py)
    weir_model: str
    body: object                    # function(model) -> body
    path: str = "/v1/chat/completions"
    upstream: str = "instant"       # instant | paced | hold
    direct_model: str = "gpt-4o-mini"
    peer: tuple = None              # (litellm instance, model) or None
    levels: list = field(default_factory=list)   # concurrencies, or stream counts for hold
    prime: bool = False             # send the body once first (cache hits)
    expect_chunks: int = None
    rate: float = None
    targets: str = ""               # weir's performance targets for this scenario
    # Config kinds run beside this one, same body, in the same rounds (rows named
    # weir-<kind>), each on a fresh instance of its own: a difference between two configs is
    # then measured on one machine state instead of minutes apart, from the same start.
    baselines: tuple = ()


def all_scenarios(levels, hold_levels, rate):
    """Every scenario, in run order."""
    chat = lambda **kw: (lambda m: chat_body(m, **kw))  # noqa: E731
    msgs = lambda **kw: (lambda m: messages_body(m, **kw))  # noqa: E731
    few = [c for c in levels if c in (1, 64)] or levels[:2]
    return [
        Scenario("bare", "Bare proxy (no auth, no retries, no breaker, no cache)", "closed",
                 "bare", "fake/gpt-4o-mini", chat(), peer=("bare", "gpt-4o-mini"),
                 levels=levels,
                 targets="added p99 <= 100 us at c=1, <= 1 ms at c=64; CPU <= 40 us/req; "
                         ">= 10,000 req/s at c=64"),
        Scenario("full", "Full default stack, cache miss (auth, 2-deployment group, retries, "
                 "breaker, key limits, memory cache; unique prompt, temperature 0)", "closed",
                 "full", "bench-group", chat(temperature=0), peer=("full", "bench-group"),
                 levels=levels,
                 targets="added p99 <= 100 us at c=1, <= 1 ms at c=64; CPU <= 40 us/req; "
                         ">= 10,000 req/s at c=64"),
        Scenario("ledger", "Full stack plus the usage ledger (embedded SQLite store) and one "
                 "global budget; cache miss, unique prompt, temperature 0", "closed", "ledger",
                 "bench-group", chat(temperature=0), levels=levels, baselines=("full",),
                 targets="CPU <= 10 us/req above the full stack (the weir-full row, same "
                         "rounds)"),
        Scenario("keyed", "Ledger stack plus a stored gateway key, its own rpm/tpm limits, a "
                 "per-user limit and attribution (x-weir-user); cache miss, unique prompt, "
                 "temperature 0", "closed", "keyed", "bench-group",
                 chat(temperature=0), levels=levels, baselines=("ledger",),
                 targets="CPU <= 10 us/req above the same stack without keys and limits (the "
                         "weir-ledger row, same rounds)"),
        Scenario("rate-bare", f"Bare proxy at a fixed {rate:g} req/s (coordinated-omission "
                 "corrected)", "rate", "bare", "fake/gpt-4o-mini", chat(),
                 peer=("bare", "gpt-4o-mini"), levels=[256], rate=rate),
        Scenario("rate-full", f"Full stack at a fixed {rate:g} req/s (coordinated-omission "
                 "corrected)", "rate", "full", "bench-group", chat(temperature=0),
                 peer=("full", "bench-group"), levels=[256], rate=rate),
        Scenario("cache-memory", "Cache hit, memory tier (same prompt, temperature 0)", "closed",
                 "full", "bench-group", chat(unique=False, temperature=0),
                 peer=("full", "bench-group"), levels=few, prime=True,
                 targets="hit p99 <= 200 us"),
        Scenario("cache-sqlite", "Cache hit, SQLite tier (memory tier off)", "closed",
                 "sqlite", "bench-group", chat(unique=False, temperature=0), levels=few,
                 prime=True, targets="hit p99 <= 1 ms"),
        Scenario("cache-redis", "Cache hit, Redis tier (memory tier off)", "closed",
                 "redis", "bench-group", chat(unique=False, temperature=0), levels=few,
                 prime=True, targets="hit p99 <= 1 ms"),
        Scenario("long", "Full stack, cache miss, a 40 KB conversation (eight turns and a "
                 "20 KB image; unique, temperature 0)", "closed", "full", "bench-group",
                 long_chat_body, peer=("full", "bench-group"), levels=few),
        Scenario("messages", "Anthropic /v1/messages translated to the OpenAI upstream "
                 "(full stack, cache miss)", "closed", "full", "bench-group",
                 msgs(temperature=0), path="/v1/messages", direct_model="claude-sonnet-4-5",
                 peer=("full", "bench-group"), levels=few),
        Scenario("stream", f"Streaming chat (paced upstream: TTFT {PACED[0]} ms, {PACED[1]} "
                 f"chunks {PACED[2]} ms apart; full stack)", "stream", "full",
                 "paced/gpt-4o-mini", chat(stream=True), upstream="paced",
                 peer=("full", "paced/gpt-4o-mini"), levels=few, expect_chunks=PACED[1],
                 targets="added TTFT p99 <= 1 ms; <= 5 us per chunk"),
        Scenario("messages-stream", "Streaming /v1/messages translated from the OpenAI "
                 "upstream (paced)", "stream", "full", "paced/gpt-4o-mini",
                 msgs(stream=True), path="/v1/messages", upstream="paced",
                 direct_model="claude-sonnet-4-5", peer=("full", "paced/gpt-4o-mini"),
                 levels=few, expect_chunks=PACED[1],
                 targets="added TTFT p99 <= 1 ms; <= 5 us per chunk"),
        Scenario("hold", f"Concurrent streams held open (TTFT {HOLD[0]} ms, {HOLD[1]} chunks "
                 f"{HOLD[2]} ms apart, stall = gap > 1 s)", "hold", "full",
                 "hold/gpt-4o-mini", chat(stream=True), upstream="hold",
                 peer=("full", "hold/gpt-4o-mini"), levels=hold_levels,
                 expect_chunks=HOLD[1], targets=">= 1,000 streams clean"),
    ]
