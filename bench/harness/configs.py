"""Configuration files for the gateways under test: weir's instances and LiteLLM's.

weir instances:
  bare   - one openai-kind provider at the fake upstream; no gateway keys, no retries, no
           breaker, no cache: the proxy path alone.
  full   - the default stack: gateway key, a group of two deployments, retries armed,
           breakers, key limits (far above the load, so they count but never bind), and a
           memory cache (16 MiB).
  sqlite - the full stack with the memory tier off and SQLite as the only cache tier.
  redis  - the full stack with the memory tier off and Redis as the only cache tier.
  ledger - the full stack plus the embedded SQLite store: every call spooled and written to
           the usage ledger, and one global daily budget (far above the load, so it counts
           every call and never binds). Requests present the static key, as in full.
  keyed  - the ledger stack plus stored gateway keys: a key created through the admin API
           once weir is up (with its own rpm/tpm limits and attribution), requests naming
           their end user (x-weir-user) and a per-user limit, so each call checks a key cell
           and a user cell. The static key stays configured; the requests present the
           stored key. Compared with ledger, the difference is the keys and limits alone.
"""

import json

GATEWAY_KEY = "sk-bench-gateway-key"
LIMITS = ("{ requests_per_minute: 100000000, input_tokens_per_minute: 100000000000, "
          "output_tokens_per_minute: 100000000000 }")


# The stored key the keyed instance's requests present: limits far above the load (checked on
# every call, never binding) and attribution, with the caller allowed to name its end user.
STORED_KEY_SPEC = json.dumps({
    "name": "bench", "limits": {"rpm": 100000000, "tpm": 100000000000},
    "allow_user_override": True, "team": "bench-team", "project": "bench-project",
    "user": "bench-user"})
BENCH_USER = "alice"


def needs_stored_key(kind):
    """Whether the instance's requests present a key created through its admin API."""
    return kind == "keyed"


def request_headers(kind, stored_key=None):
    """The headers every request to a weir instance carries."""
    if kind == "bare":
        return []
    if needs_stored_key(kind):
        if not stored_key:
            raise ValueError(f"the {kind} instance needs a stored key")
        return [f"Authorization: Bearer {stored_key}", f"x-weir-user: {BENCH_USER}"]
    return [f"Authorization: Bearer {GATEWAY_KEY}"]


def _provider(name, port, keys=1):
    lines = [f"  {name}:", "    kind: openai", f"    base_url: http://127.0.0.1:{port}/v1",
             "    api_keys:"]
    for i in range(keys):
        lines.append(f"      - {{ key: sk-fake-{name}-{i}, name: k{i}, limits: {LIMITS} }}")
    lines.append("    timeouts: { connect: 5s, first_byte: 60s, total: 120s }")
    return "\n".join(lines)


def weir_config(kind, port, ups, tmp):
    """YAML for one weir instance; ups maps 'instant', 'paced', 'hold' to upstream ports."""
    if kind == "bare":
        return "\n".join([
            "server:", f"  listen: 127.0.0.1:{port}", "  shutdown_grace: 1s",
            "providers:",
            "  fake:", "    kind: openai", f"    base_url: http://127.0.0.1:{ups['instant']}/v1",
            "    api_key: sk-fake",
            "retry: { max_retries: 0 }",
            "circuit_breaker: { enabled: false }",
            "cache: { enabled: false }", ""])
    memory = "  memory: { enabled: true, max_bytes: 16MiB }"
    cache = {
        "full": memory,
        "ledger": memory,
        "keyed": memory,
        "sqlite": f"  memory: {{ enabled: false }}\n  sqlite: {{ path: {tmp}/cache.sqlite3, max_bytes: 256MiB }}",
        "redis": f"  memory: {{ enabled: false }}\n  redis: {{ url: \"redis://127.0.0.1:{ups.get('redis', 6379)}\", prefix: weirbench }}",
    }[kind]
    return "\n".join([
        "server:", f"  listen: 127.0.0.1:{port}", f"  api_keys: [\"{GATEWAY_KEY}\"]",
        "  shutdown_grace: 1s",
        "providers:",
        _provider("fake", ups["instant"], keys=2),
        _provider("fake2", ups["instant"], keys=2),
        _provider("paced", ups["paced"]),
        _provider("hold", ups["hold"]),
        "models:",
        "  bench-group:",
        "    strategy: weighted",
        "    deployments: [fake/gpt-4o-mini, fake2/gpt-4o-mini]",
        "retry: { max_retries: 2, base_delay: 50ms, max_delay: 1s }",
        "circuit_breaker: { consecutive_failures: 5, failure_ratio: 0.5, window: 30s, cooldown: 5s }",
        "cache:", "  enabled: true", "  ttl: 1h", cache]
        + ([f"store: {{ sqlite: {{ path: {tmp}/store-{port}.sqlite3 }} }}",
            "budgets:",
            "  - { id: bench-daily, scope: global, limit_usd: 1000000, period: daily }"]
           if kind in ("ledger", "keyed") else [])
        + (["limits: { per_user: { rpm: 100000000 } }"] if kind == "keyed" else [])
        + [""])


def litellm_config(kind, ups):
    """LiteLLM proxy config: 'bare' (no key, no cache) or 'full' (master key, two deployments
    in a group, retries, cooldowns, rpm/tpm per deployment, local in-memory cache)."""
    def entry(name, port, key, limits=False):
        s = (f"  - model_name: {name}\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
             f"      api_base: http://127.0.0.1:{port}/v1\n      api_key: {key}\n")
        if limits:
            s += "      rpm: 100000000\n      tpm: 100000000000\n"
        return s
    if kind == "bare":
        return ("model_list:\n" + entry("gpt-4o-mini", ups["instant"], "sk-fake")
                + "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
                + "general_settings:\n  dangerously_permit_weak_or_unset_master_key: true\n")
    return ("model_list:\n"
            + entry("bench-group", ups["instant"], "sk-fake-0", True)
            + entry("bench-group", ups["instant"], "sk-fake-1", True)
            + entry("paced/gpt-4o-mini", ups["paced"], "sk-fake-p", True)
            + entry("hold/gpt-4o-mini", ups["hold"], "sk-fake-h", True)
            + "router_settings:\n  num_retries: 2\n  allowed_fails: 5\n  cooldown_time: 5\n"
            + "litellm_settings:\n  drop_params: true\n  telemetry: false\n  num_retries: 2\n"
            + "  cache: true\n  cache_params:\n    type: local\n    ttl: 3600\n"
            + f"general_settings:\n  master_key: {GATEWAY_KEY}\n")
