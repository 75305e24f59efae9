"""Markdown tables from a results dict (bench.py writes the same dict as JSON beside them)."""

MB40_MIB = 40e6 / 2**20  # the RSS target, 40 MB, in MiB


def _lat(rec, key="latency_us"):
    return (rec or {}).get("load", {}).get(key) or {}


def _f(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        return f"{v:,.{nd}f}"
    return str(v)


def one_line(rec):
    l = rec["load"]
    if "failed" in l:
        return f"  {rec['scenario']} {rec['level']} {rec['target']}: FAILED {l['failed']}"
    if rec["mode"] in ("stream", "hold"):
        t = l.get("ttft_us", {})
        return (f"  {rec['scenario']} {rec['mode']}={rec['level']} {rec['target']:8}"
                f" clean {l.get('streams_clean')}/{l.get('requests')} ttft p50 {t.get('p50')}"
                f" p99 {t.get('p99')} us, chunk p50 {l.get('chunk_latency_us', {}).get('p50')} us,"
                f" errors {l.get('errors')}, cpu {rec.get('cpu_us_per_chunk')} us/chunk")
    t = l.get("latency_us", {})
    return (f"  {rec['scenario']} c={rec['level']} {rec['target']:8} {l.get('throughput_rps')} req/s"
            f" p50 {t.get('p50')} p99 {t.get('p99')} us, errors {l.get('errors')},"
            f" cpu {rec.get('cpu_us_per_req')} us/req, rss {rec.get('hwm_mib')} MiB")


def _find(res, scen, level, target):
    for r in res["runs"]:
        if r["scenario"] == scen and r["level"] == level and r["target"] == target:
            return r
    return None


def _added(res, scen, level, target, key, stat):
    a = _lat(_find(res, scen, level, target), key)
    d = _lat(_find(res, scen, level, "direct"), key)
    if not a.get("count") or not d.get("count"):
        return None
    return round(a[stat] - d[stat], 1)


def max_clean(res, target):
    best = None
    for r in res["runs"]:
        if r["scenario"] == "hold" and r["target"] == target:
            l = r["load"]
            if l.get("streams_clean") == r["level"] and not l.get("errors"):
                best = max(best or 0, r["level"])
    return best


def _paired_cpu(rec, base):
    """CPU µs per request of rec above base, run in the same rounds: the median of each
    round's difference, so that a busy moment, which lifts both sides of its round, cancels
    (the rows' own figures come from each side's median round, which may be different ones)."""
    if not rec or not base:
        return None
    pairs = list(zip(rec.get("rounds") or [rec], base.get("rounds") or [base]))
    diffs = sorted(a["cpu_us_per_req"] - b["cpu_us_per_req"] for a, b in pairs
                   if a.get("cpu_us_per_req") is not None and b.get("cpu_us_per_req") is not None)
    return round(diffs[(len(diffs) - 1) // 2], 1) if diffs else None


def _targets(res):
    """(label, weir figure, litellm figure, unit, ok(v)) rows."""
    rows = []
    le = lambda lim: (lambda v: v is not None and v <= lim)  # noqa: E731
    ge = lambda lim: (lambda v: v is not None and v >= lim)  # noqa: E731
    for scen in ("bare", "full"):
        for c, lim in ((1, 100), (64, 1000)):
            rows.append((f"{scen}: added p99 at c={c} ≤ {lim:,} µs",
                         _added(res, scen, c, "weir", "latency_us", "p99"),
                         _added(res, scen, c, "litellm", "latency_us", "p99"), "µs", le(lim)))
        w, p = _find(res, scen, 64, "weir"), _find(res, scen, 64, "litellm")
        rows.append((f"{scen}: CPU per request at c=64 ≤ 40 µs", (w or {}).get("cpu_us_per_req"),
                     (p or {}).get("cpu_us_per_req"), "µs", le(40)))
        rows.append((f"{scen}: throughput at c=64 ≥ 10,000 req/s",
                     (w or {}).get("load", {}).get("throughput_rps"),
                     (p or {}).get("load", {}).get("throughput_rps"), "req/s", ge(10000)))
    for scen, base in (("ledger", "full"), ("keyed", "ledger")):
        for c in (1, 64):
            d = _paired_cpu(_find(res, scen, c, "weir"), _find(res, scen, c, f"weir-{base}"))
            if d is not None:
                rows.append((f"{scen}: CPU per request above {base} (same rounds) at c={c} "
                             "≤ 10 µs", d, None, "µs", le(10)))
    ls = res.get("ledger_soak")
    if ls:
        rows.append((f"ledger: throughput held at {ls['rate']:g} req/s for {ls['seconds']:g} s "
                     "(≥ 99% of the rate, no errors)", ls.get("throughput_rps"), None, "req/s",
                     lambda v, ls=ls: v is not None and v >= 0.99 * ls["rate"]
                     and not ls.get("errors")))
        rows.append(("ledger: backlog at the end of the run ≤ 1,000 records, none dropped",
                     ls.get("last_backlog_records"), None, "records",
                     lambda v, ls=ls: v is not None and v <= 1000 and ls.get("dropped") == 0))
    rows.append(("streams held clean ≥ 1,000", max_clean(res, "weir"), max_clean(res, "litellm"),
                 "streams", ge(1000)))
    for scen in ("stream", "messages-stream"):
        for c in (1, 64):
            if _find(res, scen, c, "weir"):
                rows.append((f"{scen}: added TTFT p99 at c={c} ≤ 1,000 µs",
                             _added(res, scen, c, "weir", "ttft_us", "p99"),
                             _added(res, scen, c, "litellm", "ttft_us", "p99"), "µs", le(1000)))
                rows.append((f"{scen}: added latency per chunk (p50) at c={c} ≤ 5 µs",
                             _added(res, scen, c, "weir", "chunk_latency_us", "p50"),
                             _added(res, scen, c, "litellm", "chunk_latency_us", "p50"), "µs",
                             le(5)))
        top = max([r["level"] for r in res["runs"] if r["scenario"] == scen] or [0])
        w, p = _find(res, scen, top, "weir"), _find(res, scen, top, "litellm")
        if w:
            rows.append((f"{scen}: CPU per chunk at c={top} ≤ 5 µs", w.get("cpu_us_per_chunk"),
                         (p or {}).get("cpu_us_per_chunk"), "µs", le(5)))
    for scen, lim in (("cache-memory", 200), ("cache-sqlite", 1000), ("cache-redis", 1000)):
        w, p = _find(res, scen, 1, "weir"), _find(res, scen, 1, "litellm")
        if w:
            rows.append((f"{scen}: hit p99 at c=1 ≤ {lim:,} µs", _lat(w).get("p99"),
                         _lat(p).get("p99") if p else None, "µs", le(lim)))
    def peak(target, scens):
        v = [r.get("hwm_mib") or 0 for r in res["runs"]
             if r["target"] == target and r["scenario"] in scens]
        return max(v) if v else None
    plain_full = ("full", "rate-full", "cache-memory", "messages", "stream", "messages-stream")
    for label, scens in (("bare proxy: peak RSS ≤ 40 MB (38.1 MiB)", ("bare", "rate-bare")),
                         ("full stack: peak RSS ≤ 40 MB (38.1 MiB), before the held streams",
                          plain_full),
                         ("full stack: peak RSS with the held streams (up to the largest level)",
                          plain_full + ("hold",))):
        rows.append((label, peak("weir", scens), peak("litellm", scens), "MiB", le(MB40_MIB)))
    idle = res.get("idle_rss_mib", {})
    for kind in ("bare", "full"):
        if f"weir-{kind}" in idle:
            rows.append((f"{kind}: RSS once ready, before any request ≤ 40 MB (38.1 MiB)",
                         idle[f"weir-{kind}"], idle.get(f"litellm-{kind}"), "MiB", le(MB40_MIB)))
    if res.get("soak"):
        rows.append((f"RSS growth over the {res['soak']['seconds']:g} s soak ≤ 5%",
                     res["soak"].get("growth_pct"), None, "%", le(5)))
    if res.get("cold_start"):
        for k, v in res["cold_start"].items():
            rows.append((f"cold start to /ready ({k} config, median) ≤ 100 ms", v["median_ms"],
                         None, "ms", le(100)))
    return rows


def _targets_table(res):
    peer = any(r["target"] == "litellm" for r in res["runs"])
    out = ["| target | weir | " + ("LiteLLM | " if peer else "") + "met (weir) |",
           "|---|---:|" + ("---:|" if peer else "") + ":---:|"]
    for label, w, p, unit, ok in _targets(res):
        cells = [label, f"{_f(w, 1)} {unit}" if w is not None else "–"]
        if peer:
            cells.append(f"{_f(p, 1)} {unit}" if p is not None else "–")
        cells.append("–" if w is None else ("yes" if ok(w) else "**no**"))
        out.append("| " + " | ".join(cells) + " |")
    return out


def _plain(res, scen):
    runs = [r for r in res["runs"] if r["scenario"] == scen]
    out = ["| c | target | req/s | p50 µs | p90 µs | p99 µs | added p50 µs | added p99 µs | "
           "errors | CPU µs/req | peak RSS MiB | upstream calls |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        l, t = r["load"], _lat(r)
        if "failed" in l:
            out.append(f"| {r['level']} | {r['target']} | failed: {l['failed'][:80]} |")
            continue
        direct = r["target"] == "direct"
        if not t.get("count"):
            t = {}  # nothing answered in the window: no latency to show
        out.append("| " + " | ".join([
            str(r["level"]) if r["mode"] != "rate" else f"{l.get('target_rps', 0):g}/s",
            r["target"], _f(l.get("throughput_rps")), _f(t.get("p50"), 1), _f(t.get("p90"), 1),
            _f(t.get("p99"), 1),
            "" if direct else _f(_added(res, scen, r["level"], r["target"], "latency_us", "p50"), 1),
            "" if direct else _f(_added(res, scen, r["level"], r["target"], "latency_us", "p99"), 1),
            _f(l.get("errors")), _f(r.get("cpu_us_per_req"), 1), _f(r.get("hwm_mib"), 1),
            _f(r.get("upstream_calls"))]) + " |")
    return out


def _streams(res, scen):
    out = ["| c | target | streams/s | TTFB p50 µs | TTFT p50 µs | TTFT p99 µs | added TTFT p50 | "
           "added TTFT p99 | chunk latency p50 µs | p99 | added per chunk p50 | p99 | gap p99 µs | "
           "errors | CPU µs/stream | CPU µs/chunk | peak RSS MiB |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in (r for r in res["runs"] if r["scenario"] == scen):
        l = r["load"]
        if "failed" in l:
            out.append(f"| {r['level']} | {r['target']} | failed: {l['failed'][:80]} |")
            continue
        d = r["target"] == "direct"
        add = lambda k, s: "" if d else _f(_added(res, scen, r["level"], r["target"], k, s), 1)  # noqa: E731
        out.append("| " + " | ".join([
            str(r["level"]), r["target"], _f(l.get("throughput_rps"), 1),
            _f(_lat(r, "ttfb_us").get("p50"), 1), _f(_lat(r, "ttft_us").get("p50"), 1),
            _f(_lat(r, "ttft_us").get("p99"), 1), add("ttft_us", "p50"), add("ttft_us", "p99"),
            _f(_lat(r, "chunk_latency_us").get("p50"), 1),
            _f(_lat(r, "chunk_latency_us").get("p99"), 1),
            add("chunk_latency_us", "p50"), add("chunk_latency_us", "p99"),
            _f(_lat(r, "gap_us").get("p99"), 1), _f(l.get("errors")),
            _f(r.get("cpu_us_per_req"), 1), _f(r.get("cpu_us_per_chunk"), 2),
            _f(r.get("hwm_mib"), 1)]) + " |")
    return out


def _hold(res):
    out = ["| streams | target | clean | stalled | errors | peak open | TTFT p50 ms | TTFT p99 ms | "
           "chunk latency p50 ms | p99 ms | max silence ms | CPU µs/chunk | peak RSS MiB |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in (r for r in res["runs"] if r["scenario"] == "hold"):
        l = r["load"]
        if "failed" in l:
            out.append(f"| {r['level']} | {r['target']} | failed: {l['failed'][:80]} |")
            continue
        t = _lat(r, "ttft_us")
        ms = lambda v: None if v is None else v / 1000  # noqa: E731
        out.append("| " + " | ".join([
            str(r["level"]), r["target"], _f(l.get("streams_clean")), _f(l.get("stalled")),
            _f(l.get("errors")), _f(l.get("peak_active")), _f(ms(t.get("p50")), 1),
            _f(ms(t.get("p99")), 1), _f(ms(_lat(r, "chunk_latency_us").get("p50")), 2),
            _f(ms(_lat(r, "chunk_latency_us").get("p99")), 2), _f(ms(l.get("max_silence_us")), 1),
            _f(r.get("cpu_us_per_chunk"), 1), _f(r.get("hwm_mib"), 1)]) + " |")
    best = {t: max_clean(res, t) for t in ("direct", "weir", "litellm")}
    out += ["", "Most streams held clean (every one complete, no gap over 1 s): " + ", ".join(
        f"{k} {_f(v)}" for k, v in best.items() if v is not None or k == "weir")]
    return out


def _noise_line(res):
    """How busy the machine was with other work (and hypervisor steal) during the runs."""
    n = [r["noise"] for r in res["runs"] if r.get("noise")]
    start = res.get("meta", {}).get("other_cpu_at_start_pct")
    out = f" Other processes before the run: {start}% of a core." if start is not None else ""
    if n:
        other = sorted(x["other_cpu_pct"] for x in n)
        steal = max(x["steal_pct"] for x in n)
        out += (f" During the runs other processes used {other[len(other) // 2]}% of a core "
                f"(median run), {other[-1]}% at most; hypervisor steal at most {steal}%.")
    return out


def markdown(res):
    m = res.get("meta", {})
    a = m.get("args", {})
    lines = [f"# weir benchmark, {m.get('date', '')}", "",
             f"weir `{m.get('weir')}` at `{m.get('git')}`"
             + (" (uncommitted changes in crates/)" if m.get("git_dirty") else "")
             + f"; {m.get('cpus')} CPUs, Linux {m.get('kernel')}; {a.get('duration')} s measured"
             f" + {a.get('warmup')} s warm-up per run; load tool `weir-load`, 1 thread."
             + (f" LiteLLM {m['litellm'][0].split(': ')[-1]}." if m.get("litellm") else "")
             + _noise_line(res), ""]
    ceil = res.get("fake_ceiling", {})
    if ceil:
        lines += ["Fake upstream's own ceiling (weir-load straight at it): " + ", ".join(
            f"{k.replace('c', 'c=')}: {_f(v.get('throughput_rps'))} req/s, p99 {_f(v.get('p99_us'), 1)} µs"
            for k, v in ceil.items()) + ".", ""]
    lines += ["## Targets", ""] + _targets_table(res) + [""]
    for scen, info in res.get("scenarios", {}).items():
        runs = [r for r in res["runs"] if r["scenario"] == scen]
        if not runs:
            continue
        lines += [f"## {scen}: {info['title']}", ""]
        if info.get("targets"):
            lines += [f"Targets: {info['targets']}.", ""]
        mode = runs[0]["mode"]
        table = _hold(res) if mode == "hold" else (
            _streams(res, scen) if mode == "stream" else _plain(res, scen))
        lines += table + [""]
    if res.get("cold_start"):
        lines += ["## Cold start (spawn to /ready 200; target ≤ 100 ms)", "",
                  "| config | runs | median ms | min ms | max ms |", "|---|---:|---:|---:|---:|"]
        for k, v in res["cold_start"].items():
            lines.append(f"| {k} | {v['runs']} | {v['median_ms']} | {v['min_ms']} | {v['max_ms']} |")
        lines.append("")
    cc = res.get("crosscheck")
    if cc and cc.get("runs"):
        lines += [f"## Cross-check with {cc['tool']} (c=64)", "",
                  "| scenario | target | req/s | p50 µs | p90 µs | p99 µs | errors |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in cc["runs"]:
            lines.append(f"| {r['scenario']} | {r['target']} | {_f(r.get('throughput_rps'))} | "
                         f"{_f(r.get('p50_us'), 1)} | {_f(r.get('p90_us'), 1)} | "
                         f"{_f(r.get('p99_us'), 1)} | {_f(r.get('errors'))} |")
        lines.append("")
    s = res.get("soak")
    if s:
        lines += [f"## Soak: {s['seconds']:g} s at {s['rate']:g} req/s, full stack "
                  "(target: RSS growth ≤ 5%)", "",
                  "RSS every 10 s (MiB): " + ", ".join(f"{x['rss_mib']}" for x in s["samples"]),
                  "", f"Growth first → last sample: {_f(s.get('growth_pct'), 2)}%; errors "
                  f"{s.get('load', {}).get('errors')}; p99 {_lat({'load': s.get('load', {})}).get('p99')} µs.", ""]
    ls = res.get("ledger_soak")
    if ls:
        lines += [f"## Ledger soak: {ls['seconds']:g} s at {ls['rate']:g} req/s, ledger stack "
                  "(targets: the rate held, the ledger's backlog not growing, nothing dropped)",
                  "", "Backlog every 5 s (records): " + ", ".join(
                      str(x["backlog_records"]) for x in ls["samples"]), "",
                  f"Throughput {_f(ls.get('throughput_rps'))} req/s; errors {ls.get('errors')}; "
                  f"written to the store {ls.get('written')}; dropped {ls.get('dropped')}; "
                  f"CPU {_f(ls.get('cpu_us_per_req'), 1)} µs/req.", ""]
    if res.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in res["skipped"].items()] + [""]
    return "\n".join(lines)
