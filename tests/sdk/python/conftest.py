"""Session fixtures: a fake Anthropic upstream and one live `weir serve` in front of it.

The gateway binary is `target/debug/weir` (override with WEIR_BIN). Its log is printed in the
terminal summary whenever a test failed, and the session aborts at once if it cannot start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import anthropic
import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import (  # noqa: E402
    FAKE_ANTHROPIC_KEY,
    FAKE_ANTHROPIC_MODEL,
    FakeAnthropic,
    Gateway,
    GatewayError,
)

GATEWAY_KEY = "test-key-" + os.urandom(4).hex()
BODY_LIMIT = 64 * 1024  # server.body_limit below, in bytes
TIMEOUT = 30.0

_gateways: list[Gateway] = []


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def gateway(fake_anthropic: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config: dict[str, Any] = {
        "server": {"api_keys": [GATEWAY_KEY], "shutdown_grace": "2s", "body_limit": "64KiB"},
        # A 429 must reach the SDK at once, not be retried inside the gateway.
        "retry": {"max_retries": 0},
        "providers": {
            "fakeanthropic": {
                "kind": "anthropic",
                "base_url": f"{fake_anthropic.url}/v1",
                "api_key": FAKE_ANTHROPIC_KEY,
            },
        },
        "models": {"claude": f"fakeanthropic/{FAKE_ANTHROPIC_MODEL}"},
    }
    gw = Gateway(config, tmp_path_factory.mktemp("gateway"), name="weir")
    _gateways.append(gw)
    try:
        gw.start()
    except (GatewayError, RuntimeError) as e:
        pytest.exit(f"cannot start the gateway: {e}", returncode=3)
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def base_url(gateway: Gateway) -> str:
    return gateway.url


@pytest.fixture(scope="session")
def oai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=TIMEOUT)


@pytest.fixture(scope="session")
def ant(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=GATEWAY_KEY, max_retries=0, timeout=TIMEOUT)


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture
def fake(fake_anthropic: FakeAnthropic) -> FakeAnthropic:
    """The fake upstream with its request log cleared."""
    fake_anthropic.clear()
    return fake_anthropic


@pytest.fixture(autouse=True)
def _gateway_still_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for gw in _gateways:
        if gw.proc is not None and not gw.alive():
            pytest.fail(f"the gateway process exited (code {gw.proc.returncode}) during {request.node.nodeid}")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if exitstatus == 0 or not _gateways:
        return
    for gw in _gateways:
        terminalreporter.write_sep("=", f"{gw.name} log (gateway at {gw.url})")
        terminalreporter.write_line(gw.log_tail())
