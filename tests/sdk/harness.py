"""Shared harness for weir's SDK tests: a fake Anthropic upstream and a gateway launcher.

Used by the pytest suite (``tests/sdk/python/conftest.py``) and, from the command line, by
``scripts/test.sh`` to run the Node suite against a live gateway::

    python tests/sdk/harness.py with-gateway -- node --test test/

which starts ``weir serve`` on a free loopback port, exports ``WEIR_URL`` (``http://127.0.0.1:PORT``)
and ``WEIR_KEY`` to the command, and stops the gateway afterwards (printing its log when the
command fails).

Standard library only, so it runs before (or without) the test venv.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "weir"

# Upstream credentials the gateway must send to the fake Anthropic (never the gateway key).
FAKE_ANTHROPIC_KEY = "sk-ant-fake"
# The upstream model the `claude` alias points at.
FAKE_ANTHROPIC_MODEL = "claude-sonnet-4-5"

# Trigger phrases for the fake upstream's failure scenarios (the last user message).
UPSTREAM_429 = "__upstream_429__"
UPSTREAM_529 = "__upstream_529__"
UPSTREAM_500 = "__upstream_500__"
UPSTREAM_MIDSTREAM_ERROR = "__upstream_midstream_error__"
UPSTREAM_RETRY_AFTER = "7"


def thinking_text_for(user_text: str) -> str:
    """What the fake upstream 'thinks' when extended thinking is on."""
    return f"Let me think about: {user_text}"


# --------------------------------------------------------------------------------------------
# Fake Anthropic upstream
# --------------------------------------------------------------------------------------------


def _block_text(content: Any) -> str:
    """Text of a message's content: a string, or the text (and tool results) of its blocks."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_block_text(block.get("content", "")))
    return "".join(parts)


def upstream_key(headers: Any) -> str | None:
    """The key a client presented, as Anthropic takes it: `x-api-key` or a Bearer token."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization") or ""
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def _words(s: str) -> int:
    return len(s.split())


def _pieces(s: str, size: int) -> list[str]:
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


def _word_pieces(s: str) -> list[str]:
    """Words with their trailing space, so the pieces concatenate back exactly."""
    out, start = [], 0
    for i, c in enumerate(s):
        if c == " ":
            out.append(s[start : i + 1])
            start = i + 1
    if start < len(s):
        out.append(s[start:])
    return out or [""]


class FakeAnthropic:
    """A threaded HTTP server speaking just enough of the Anthropic Messages API.

    It behaves like ``mock/echo`` so that native and translated answers can be compared:
    - the answer text is the last user message (or, after a tool result, the result's text);
    - with ``tools`` (and tool_choice not ``none``) it calls the named or first tool with
      ``{"input": <last user text>}``, streamed as several ``input_json_delta`` fragments;
    - with ``thinking: {"type": "enabled"}`` a thinking block (``thinking_text_for``) comes
      first, closed by a ``signature_delta``.
    Trigger phrases in the last user message produce 429 / 529 / 500 errors or a mid-stream
    ``error`` event. Every request is recorded (path, headers, JSON body) in ``requests``.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                fake._send_json(self, 404, _anthropic_error("not_found_error", f"no route {self.path}"))

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-anthropic", daemon=True)

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def last_request(self) -> dict[str, Any]:
        with self._lock:
            if not self.requests:
                raise AssertionError("the fake Anthropic upstream received no request")
            return self.requests[-1]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- request handling ---------------------------------------------------------------

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(
                {"path": h.path, "headers": {k.lower(): v for k, v in h.headers.items()}, "body": body}
            )
        if not h.path.rstrip("/").endswith("/messages"):
            return self._send_json(h, 404, _anthropic_error("not_found_error", f"no route {h.path}"))
        if upstream_key(h.headers) != FAKE_ANTHROPIC_KEY:
            return self._send_json(h, 401, _anthropic_error("authentication_error", "invalid x-api-key"))
        if not h.headers.get("anthropic-version"):
            return self._send_json(
                h, 400, _anthropic_error("invalid_request_error", "anthropic-version: header is required")
            )
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._send_json(h, 400, _anthropic_error("invalid_request_error", "messages: field required"))
        if not isinstance(body.get("max_tokens"), int):
            return self._send_json(h, 400, _anthropic_error("invalid_request_error", "max_tokens: field required"))

        messages = body["messages"]
        last_user = next((_block_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        if UPSTREAM_429 in last_user:
            return self._send_json(
                h,
                429,
                _anthropic_error("rate_limit_error", "fake upstream: rate limited"),
                {"retry-after": UPSTREAM_RETRY_AFTER},
            )
        if UPSTREAM_529 in last_user:
            return self._send_json(h, 529, _anthropic_error("overloaded_error", "fake upstream: overloaded"))
        if UPSTREAM_500 in last_user:
            return self._send_json(h, 500, _anthropic_error("api_error", "fake upstream: internal error"))

        blocks, stop_reason = self._answer(body, last_user)
        input_tokens = sum(_words(_block_text(m.get("content"))) + 3 for m in messages)
        output_tokens = max(1, sum(_words(json.dumps(b)) for b in blocks))
        msg_id = "msg_fake" + hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]
        message = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": output_tokens,
                "service_tier": "standard",
            },
        }
        if body.get("stream"):
            return self._stream(h, message, midstream_error=UPSTREAM_MIDSTREAM_ERROR in last_user)
        return self._send_json(h, 200, message, {"request-id": "req_fake" + msg_id[8:]})

    @staticmethod
    def _answer(body: dict[str, Any], last_user: str) -> tuple[list[dict[str, Any]], str]:
        messages = body["messages"]
        last = messages[-1]
        blocks: list[dict[str, Any]] = []
        thinking = body.get("thinking") or {}
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": thinking_text_for(last_user),
                    "signature": "EqQBCkYIBhgCKkBfakesignature" + hashlib.sha1(last_user.encode()).hexdigest(),
                }
            )
        content = last.get("content")
        is_tool_result = isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        )
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        if tools and not is_tool_result and choice.get("type") != "none":
            tool = tools[0]
            if choice.get("type") == "tool":
                tool = next((t for t in tools if t.get("name") == choice.get("name")), tool)
            tool_id = "toolu_fake" + hashlib.sha1((last_user + tool["name"]).encode()).hexdigest()[:16]
            blocks.append({"type": "tool_use", "id": tool_id, "name": tool["name"], "input": {"input": last_user}})
            return blocks, "tool_use"
        text = _block_text(content) if is_tool_result else last_user
        blocks.append({"type": "text", "text": text})
        return blocks, "end_turn"

    def _stream(self, h: http.server.BaseHTTPRequestHandler, message: dict[str, Any], midstream_error: bool) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream; charset=utf-8")
        h.send_header("cache-control", "no-cache")
        h.send_header("transfer-encoding", "chunked")
        h.send_header("request-id", "req_fakestream")
        h.end_headers()

        def send(event: str, data: dict[str, Any]) -> None:
            frame = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
            # Two transfer chunks per event, split mid-frame: the gateway's SSE parser must
            # reassemble events across reads, as it must with real upstreams.
            cut = len(frame) // 2
            for part in (frame[:cut], frame[cut:]):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            h.wfile.flush()

        start = dict(message, content=[], stop_reason=None, stop_sequence=None)
        start["usage"] = dict(message["usage"], output_tokens=1)
        send("message_start", {"type": "message_start", "message": start})
        send("ping", {"type": "ping"})
        for i, block in enumerate(message["content"]):
            kind = block["type"]
            if kind == "text":
                head = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in _word_pieces(block["text"])]
            elif kind == "thinking":
                head = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [{"type": "thinking_delta", "thinking": p} for p in _word_pieces(block["thinking"])]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            else:
                head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                deltas = [{"type": "input_json_delta", "partial_json": ""}]
                deltas += [
                    {"type": "input_json_delta", "partial_json": p} for p in _pieces(json.dumps(block["input"]), 5)
                ]
            send("content_block_start", {"type": "content_block_start", "index": i, "content_block": head})
            for n, d in enumerate(deltas):
                send("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
                if midstream_error and n == 1:
                    send("error", _anthropic_error("overloaded_error", "fake upstream: overloaded mid-stream"))
                    h.wfile.write(b"0\r\n\r\n")
                    h.wfile.flush()
                    return
            send("content_block_stop", {"type": "content_block_stop", "index": i})
        send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
        send("message_stop", {"type": "message_stop"})
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    @staticmethod
    def _send_json(
        h: http.server.BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()


def _anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


# --------------------------------------------------------------------------------------------
# Gateway launcher
# --------------------------------------------------------------------------------------------

# Variables that would change what the gateway serves; the child gets none of the caller's.
_SCRUBBED_PREFIXES = ("WEIR_", "LLM_", "OPENAI_", "ANTHROPIC_", "OPENROUTER_")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when the test process dies, so a killed
    test run leaves no gateway behind."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def weir_bin() -> Path:
    path = Path(os.environ.get("WEIR_BIN") or DEFAULT_BIN)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"weir binary not found at {path}: build it with `cargo build -p weir-cli` "
            "(or point WEIR_BIN at one)"
        )
    return path


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (strings double-quoted, JSON-escaped)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{json.dumps(str(k))}:\n{to_yaml(v, indent + 1)}")
            else:
                out.append(f"{pad}{json.dumps(str(k))}: {_scalar(v)}\n")
        return "".join(out)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = []
        for v in value:
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}-\n{to_yaml(v, indent + 1)}")
            else:
                out.append(f"{pad}- {_scalar(v)}\n")
        return "".join(out)
    return pad + _scalar(value) + "\n"


def _scalar(v: Any) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(str(v))


class GatewayError(RuntimeError):
    pass


class Gateway:
    """One `weir serve` process on a free loopback port, with its log in a file."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str = "weir") -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.name = name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""

    def start(self, timeout: float = 30.0) -> Gateway:
        self.config_path.write_text(to_yaml(self.config))
        binary = weir_bin()
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
        env.setdefault("RUST_BACKTRACE", "1")
        env["NO_COLOR"] = "1"  # the log goes to a file
        # The CLI's default persistent cache tier lives in the user's cache dir: keep test
        # runs out of it (and out of each other's way).
        env.setdefault("WEIR_CACHE_DIR", str(self.workdir / "cache"))
        # Likewise its default key store, in the user's data dir.
        env.setdefault("WEIR_DATA_DIR", str(self.workdir / "data"))
        last_error = ""
        for _attempt in range(3):  # a freshly picked port can be taken before weir binds it
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with open(self.log_path, "ab") as log:
                log.write(f"--- {binary} serve on {self.url}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [str(binary), "-v", "serve", "--config", str(self.config_path), "--listen", f"127.0.0.1:{self.port}"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    cwd=self.workdir,
                    preexec_fn=_die_with_parent,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                        if r.status == 200:
                            return self
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(0.05)
            code = self.proc.poll()
            if code is None:
                self.stop()
                raise GatewayError(f"{self.name}: /health did not answer within {timeout}s\n{self.log_tail()}")
            last_error = self.log_tail()
            if "cannot listen" not in last_error:
                break
        raise GatewayError(f"{self.name}: `weir serve` exited at start-up\n{last_error}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def log_tail(self, max_bytes: int = 20000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no gateway log)"
        text = data[-max_bytes:].decode("utf-8", "replace")
        return f"==== {self.name} log ({self.log_path}) ====\n{text}"


def node_gateway_config(key: str) -> dict[str, Any]:
    return {
        "server": {"api_keys": [key], "shutdown_grace": "2s"},
        "retry": {"max_retries": 0},
    }


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _with_gateway(cmd: list[str]) -> int:
    if not cmd:
        print("harness: with-gateway needs a command after --", file=sys.stderr)
        return 2
    key = "weir-test-" + os.urandom(6).hex()
    workdir = Path(tempfile.mkdtemp(prefix="weir-sdk-"))
    gw = Gateway(node_gateway_config(key), workdir, name="weir-node")
    try:
        gw.start()
    except (GatewayError, RuntimeError) as e:
        print(f"harness: {e}", file=sys.stderr)
        return 1
    env = dict(os.environ, WEIR_URL=gw.url, WEIR_KEY=key)
    # SIGTERM unwinds like Ctrl-C, so the gateway is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = subprocess.call(cmd, env=env)
    finally:
        exited = not gw.alive()
        gw.stop()
    if code != 0 or exited:
        print(gw.log_tail(), file=sys.stderr)
        if exited:
            print("harness: the gateway died during the tests", file=sys.stderr)
            return code or 1
    return code


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("with-gateway", help="run a command with WEIR_URL/WEIR_KEY of a fresh gateway")
    w.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("fake-anthropic", help="serve the fake Anthropic upstream until interrupted")
    args = p.parse_args(argv)
    if args.cmd == "with-gateway":
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        try:
            return _with_gateway(cmd)
        except KeyboardInterrupt:
            print("harness: interrupted; the gateway was stopped", file=sys.stderr)
            return 130
    fake = FakeAnthropic().start()
    print(f"fake Anthropic upstream at {fake.url}/v1 (x-api-key: {FAKE_ANTHROPIC_KEY})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
