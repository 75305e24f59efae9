"""The live dashboard (`/dashboard`) in a real browser: Debian's Chromium driven by Playwright.

A gateway of its own (the mock, plus a provider whose upstream is a closed port) takes a known
load; the page must show it (request counter, recent calls, spend, budgets, breaker states),
reset an open breaker from its button, clear the cache, and log no console errors. A screenshot
goes to target/test-output/dashboard.png.

Without Chromium (or Playwright) the tests skip, saying why; scripts/test.sh sets
WEIR_REQUIRE_CHROMIUM=1, which makes that a failure instead.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import TIMEOUT, _gateways
from harness import Gateway, GatewayError

CHROMIUM = os.environ.get("WEIR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[3]
OUTPUT = REPO / "target" / "test-output"
ADMIN_KEY = "admin-" + os.urandom(6).hex()


def _unavailable() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM}: install Debian's `chromium` package (scripts/test.sh does) or set WEIR_CHROMIUM"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -r tests/sdk/python/requirements.txt (never `playwright install`)"
    return None


def _require_browser() -> None:
    why = _unavailable()
    if why is None:
        return
    if os.environ.get("WEIR_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"WEIR_REQUIRE_CHROMIUM=1 but {why}")
    pytest.skip(why)


def _closed_port() -> int:
    """A loopback port nothing listens on: the `dead` provider's upstream."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(admin_key: str | None = None) -> dict[str, Any]:
    server: dict[str, Any] = {"shutdown_grace": "2s"}
    if admin_key:
        server["admin_key"] = admin_key
    return {
        "server": server,
        "retry": {"max_retries": 0},
        # Two failures in a row open the breaker, and it stays open for the test's length.
        "circuit_breaker": {"consecutive_failures": 2, "cooldown": "10m", "max_cooldown": "10m"},
        "providers": {
            "dead": {"kind": "openai", "base_url": f"http://127.0.0.1:{_closed_port()}/v1", "api_key": "sk-dead"},
        },
        "models": {"broken": "dead/gpt-dead"},
        "pricing": {"mock/echo": {"input": 1000, "output": 2000}},
        "budgets": [{"id": "all-daily", "scope": "global", "limit_usd": 100, "period": "daily"}],
    }


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, admin_key: str | None = None) -> Gateway:
    gw = Gateway(_config(admin_key), tmp_path_factory.mktemp(name), name=name)
    _gateways.append(gw)
    try:
        gw.start()
    except GatewayError as e:
        pytest.fail(f"cannot start the gateway: {e}")
    return gw


def _stop(gw: Gateway) -> None:
    """Stop a gateway of this module (no longer watched by conftest's liveness check)."""
    _gateways.remove(gw)
    gw.stop()


def _chat(http: httpx.Client, model: str, text: str, **extra: Any) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return http.post("/v1/chat/completions", json=body).status_code


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, dict[str, Any]]]:
    _require_browser()
    gw = _start(tmp_path_factory, "dashboard")
    sent: dict[str, Any] = {"statuses": []}
    with httpx.Client(base_url=gw.url, timeout=TIMEOUT) as http:
        for i in range(5):
            sent["statuses"].append(_chat(http, "mock/echo", f"hello {i}", temperature=0))
        for _ in range(3):  # the same prompt again: cache hits
            sent["statuses"].append(_chat(http, "mock/echo", "hello 0", temperature=0))
        for _ in range(2):
            sent["statuses"].append(_chat(http, "mock/lorem", "hi", stream=False))
        for _ in range(3):  # two refused connections open the breaker; the third fails fast
            sent["statuses"].append(_chat(http, "broken", "x"))
        status = http.get("/status").json()
    dead = next(d for d in status["deployments"] if d["id"] == "dead/gpt-dead")
    assert dead["breaker"]["state"] == "open", dead
    sent["requests"] = len(sent["statuses"])
    yield gw, sent
    _stop(gw)


class Browser:
    """Chromium with the page's console errors and uncaught exceptions collected."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 1800})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    _require_browser()
    b = Browser()
    yield b
    b.close()


def test_dashboard_shows_the_load_resets_a_breaker_and_clears_the_cache(
    loaded: tuple[Gateway, dict[str, Any]], browser: Browser
) -> None:
    from playwright.sync_api import expect

    gw, sent = loaded
    page = browser.page
    page.goto(gw.url + "/dashboard")
    expect(page.locator("#requests-total")).to_have_text(str(sent["requests"]), timeout=10_000)
    expect(page.locator("#errors-total")).to_have_text(str(sum(s >= 400 for s in sent["statuses"])))

    recent = page.locator("#recent tbody")
    expect(recent.locator("tr")).to_have_count(sent["requests"])
    models = recent.locator("td.model").all_inner_texts()
    assert sorted(set(models)) == ["broken", "mock/echo", "mock/lorem"], models
    statuses = sorted(set(recent.locator("td.status").all_inner_texts()))
    assert statuses == sorted({str(s) for s in sent["statuses"]}), statuses
    assert "hit" in recent.inner_text()

    # The charts drew the traffic: a request line with points.
    assert page.locator("#chart-rate polyline.req").get_attribute("points")

    # Spend by model and the budget, from the ledger.
    expect(page.locator("#spend-today tbody tr[data-model='mock/echo']")).to_be_visible()
    expect(page.locator("#budgets [data-budget='all-daily']")).to_contain_text("of $100.00")
    expect(page.locator("#cache [data-field='hit rate']")).not_to_have_text("0.0%")

    # The broken deployment's breaker is open; its button closes it.
    row = page.locator("#deployments tr[data-deployment='dead/gpt-dead']")
    expect(row.locator("td.breaker")).to_contain_text("open")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)
    row.locator("button.reset").click()
    expect(row.locator("td.breaker")).to_have_text("closed", timeout=5_000)
    expect(page.locator("#message")).to_contain_text("reset 1 breaker")
    status = httpx.get(gw.url + "/status", timeout=TIMEOUT).json()
    dead = next(d for d in status["deployments"] if d["id"] == "dead/gpt-dead")
    assert dead["breaker"]["state"] == "closed", dead

    # Clearing the cache from the page empties it.
    page.locator("#clear-cache").click()
    expect(page.locator("#message")).to_contain_text("cleared")
    stats = httpx.get(gw.url + "/cache/stats", timeout=TIMEOUT).json()
    assert sum(t["entries"] for t in stats["tiers"]) == 0, stats

    assert browser.errors == [], browser.errors


def test_dashboard_asks_for_the_admin_key_and_sends_it(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    from playwright.sync_api import expect

    gw = _start(tmp_path_factory, "dashboard-keyed", admin_key=ADMIN_KEY)
    try:
        # The figures need the key; the page's assets hold none and load without it.
        assert httpx.get(gw.url + "/admin/dashboard.json", timeout=TIMEOUT).status_code == 401
        page = browser.page
        page.goto(gw.url + "/dashboard")
        expect(page.locator("#key-form")).to_be_visible(timeout=10_000)
        expect(page.locator("#key-reason")).to_contain_text("admin key")
        page.fill("#key-input", "wrong-key")
        page.locator("#key-form button").click()
        expect(page.locator("#key-reason")).to_contain_text("invalid admin key")
        page.fill("#key-input", ADMIN_KEY)
        page.locator("#key-form button").click()
        expect(page.locator("#key-form")).to_be_hidden()
        expect(page.locator("#deployments tr[data-deployment='dead/gpt-dead']")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('weir.adminKey')") == ADMIN_KEY
        # The refusals logged as failed loads are expected here; the page itself threw nothing.
        assert [e for e in browser.errors if not e.startswith("console.error: Failed to load resource")] == []
        assert ADMIN_KEY not in gw.log_path.read_text(errors="replace")
    finally:
        _stop(gw)
