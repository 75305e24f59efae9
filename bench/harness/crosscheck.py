"""Cross-check of weir-load's plain (non-streaming) figures with a second load tool.

oha when it is on PATH, else wrk (Debian's package; run.sh installs it when it can). Both run
the bare proxy and the full stack at c=64 for the same duration, direct and through weir.
wrk varies the prompt per request with a Lua script; oha cannot, so its full-stack run sends
`Cache-Control: no-cache, no-store` (the lookup and the write are skipped: a lighter path).
"""

import json
import os
import re
import shutil
import subprocess

import configs
from scenarios import chat_body

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def _wrk(url, body, headers, c, secs, tmp):
    prefix, _, suffix = body.partition("{{n}}")
    lua = ["wrk.method = 'POST'", "wrk.headers['Content-Type'] = 'application/json'"]
    for h in headers:
        k, v = h.split(": ", 1)
        lua.append(f"wrk.headers['{k}'] = '{v}'")
    lua += ["local n = 0", f"local p, s = [==[{prefix}]==], [==[{suffix}]==]",
            "request = function() n = n + 1; return wrk.format(nil, nil, nil, "
            + ("p .. n .. s" if suffix or "{{n}}" in body else "p") + ") end"]
    script = os.path.join(tmp, "wrk.lua")
    with open(script, "w") as f:
        f.write("\n".join(lua) + "\n")
    r = subprocess.run(["wrk", "-t1", f"-c{c}", f"-d{int(max(1, secs))}s", "--latency",
                        "-s", script, url], capture_output=True, text=True, timeout=secs + 60)
    out = r.stdout
    res = {"raw_tail": out[-400:]}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["throughput_rps"] = float(m.group(1)) if m else None
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        res[f"p{pct}_us"] = round(float(m.group(1)) * UNITS[m.group(2)], 1) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["errors"] = int(m.group(1)) if m else 0
    return res


def _oha(url, body, headers, c, secs):
    body = body.replace("{{n}}", "0")
    cmd = ["oha", "--no-tui", "-z", f"{secs}s", "-c", str(c), "-m", "POST", "-d", body,
           "-H", "content-type: application/json"]
    for h in headers:
        cmd += ["-H", h]
    for fmt in (["--output-format", "json"], ["-j"]):
        r = subprocess.run(cmd + fmt + [url], capture_output=True, text=True,
                           timeout=secs + 60)
        if r.returncode == 0:
            break
    try:
        j = json.loads(r.stdout)
    except ValueError:
        return {"failed": (r.stderr or r.stdout)[-300:]}
    lp = j.get("latencyPercentiles", {})
    codes = j.get("statusCodeDistribution", {})
    us = lambda v: round(v * 1e6, 1) if isinstance(v, (int, float)) else None  # noqa: E731
    return {"throughput_rps": round(j.get("summary", {}).get("requestsPerSec", 0), 1),
            "p50_us": us(lp.get("p50")), "p90_us": us(lp.get("p90")), "p99_us": us(lp.get("p99")),
            "errors": sum(v for k, v in codes.items() if k != "200")}


def run(bench, args):
    tool = "oha" if shutil.which("oha") else ("wrk" if shutil.which("wrk") else None)
    if not tool:
        return {"tool": None, "note": "neither oha nor wrk is installed"}
    auth = f"Authorization: Bearer {configs.GATEWAY_KEY}"
    cases = [("bare", "direct", "gpt-4o-mini", [])]
    if ("weir", "bare") in bench.gw:
        cases.append(("bare", "weir", "fake/gpt-4o-mini", []))
    if ("weir", "full") in bench.gw:
        extra = ["Cache-Control: no-cache, no-store"] if tool == "oha" else []
        cases.append(("full", "weir", "bench-group", [auth] + extra))
    runs = []
    for scen, target, model, headers in cases:
        port = bench.ups["instant"][1] if target == "direct" else bench.gw[("weir", scen)][1]
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = chat_body(model, temperature=0 if scen == "full" else None)
        if tool == "wrk":
            r = _wrk(url, body, headers, 64, args.duration, bench.tmp)
        else:
            r = _oha(url, body, headers, 64, args.duration)
        r.update({"scenario": scen, "target": target, "level": 64})
        runs.append(r)
        print(f"crosscheck {tool} {scen} {target} c=64: {r.get('throughput_rps')} req/s, "
              f"p99 {r.get('p99_us')} us", flush=True, file=__import__("sys").stderr)
    return {"tool": tool, "runs": runs}
