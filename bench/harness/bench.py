"""weir's benchmark harness: fake upstreams, weir (and optionally LiteLLM) under load,
every scenario run DIRECT and THROUGH each gateway, interleaved, in one run.

Run through bench/run.sh, which builds the binaries first. Stdlib only.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import configs
import crosscheck
import procs
import report
from scenarios import HOLD, PACED, all_scenarios

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short runs (2 s, c=1 and 64)")
    p.add_argument("--duration", type=float, help="measured seconds per run (default 10)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per run (default 1)")
    p.add_argument("--levels", help="concurrency levels, default 1,16,64,256")
    p.add_argument("--hold-levels", help="held streams, default 100,250,500,1000")
    p.add_argument("--rate", type=float, default=1000, help="fixed-rate scenarios' req/s")
    p.add_argument("--scenarios", help="comma list (default all): " + ", ".join(
        s.name for s in all_scenarios([1], [1], 1)) + ", cold-start, crosscheck")
    p.add_argument("--peer", choices=["litellm"], help="also run a peer gateway")
    p.add_argument("--soak", type=float, default=0, help="soak seconds (RSS every 10 s)")
    p.add_argument("--soak-rate", type=float, default=1000)
    p.add_argument("--ledger-soak", type=float, default=0,
                   help="seconds of the ledger stack at --rate req/s (backlog every 5 s)")
    p.add_argument("--rounds", type=int, default=1,
                   help="alternate direct/weir/peer this many times per level; keep the median")
    p.add_argument("--settle", type=float, default=0.3, help="idle seconds before each run")
    p.add_argument("--litellm-workers", type=int, default=1)
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    p.add_argument("--cold-runs", type=int, help="cold starts per config (default 5)")
    p.add_argument("--bin-dir", required=True, help="where weir, fake-upstream, weir-load are")
    p.add_argument("--out-dir", default=os.path.join(BENCH, "results"))
    p.add_argument("--litellm", default=os.path.join(BENCH, ".venv-litellm", "bin", "litellm"))
    a = p.parse_args(argv)
    a.duration = a.duration or (2.0 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    a.levels = ints(a.levels) if a.levels else ([1, 64] if a.quick else [1, 16, 64, 256])
    a.hold_levels = ints(a.hold_levels) if a.hold_levels else (
        [100, 1000] if a.quick else [100, 250, 500, 1000])
    a.cold_runs = a.cold_runs or (3 if a.quick else 5)
    a.scenarios = set(a.scenarios.split(",")) if a.scenarios else None
    return a


def median_round(recs):
    """The round with the median p50 (latency, or TTFT for streams), the others summarised."""
    if len(recs) == 1:
        return recs[0]
    key = "ttft_us" if recs[0]["mode"] in ("stream", "hold") else "latency_us"
    p50 = lambda r: (r["load"].get(key) or {}).get("p50") or float("inf")  # noqa: E731
    ordered = sorted(recs, key=p50)
    pick = dict(ordered[(len(ordered) - 1) // 2])
    pick["rounds"] = [{"throughput_rps": r["load"].get("throughput_rps"),
                       "p50_us": (r["load"].get(key) or {}).get("p50"),
                       "p99_us": (r["load"].get(key) or {}).get("p99"),
                       "cpu_us_per_req": r.get("cpu_us_per_req")} for r in recs]
    return pick


def baseline_label(kind, scenario):
    """The instance a scenario's baseline of this kind runs on."""
    return f"{kind}@{scenario.name}"


# Scenarios that also run through tcp-relay (the floor of any proxy on this machine).
RELAY_SCENARIOS = ("bare", "stream")

class Bench:
    def __init__(self, args):
        self.a = args
        self.tmp = tempfile.mkdtemp(prefix="weir-bench-")
        self.bin = lambda name: os.path.join(args.bin_dir, name)
        self.ups = {}       # name -> (proc, port)
        self.gw = {}        # ("weir"|"litellm", instance) -> (proc, port)
        self.relays = {}    # upstream name -> (proc, port): tcp-relay in front of it
        self.stored_keys = {}  # weir instance -> the stored key its requests present
        self.results = {"runs": [], "skipped": {}}

    def want(self, name):
        return self.a.scenarios is None or name in self.a.scenarios

    # ---- processes -------------------------------------------------------------------------
    def start_upstreams(self):
        specs = {"instant": [], "paced": PACED, "hold": HOLD}
        for name, spec in specs.items():
            port = procs.free_port()
            cmd = [self.bin("fake-upstream"), "--listen", f"127.0.0.1:{port}"]
            if spec:
                cmd += ["--ttft-ms", str(spec[0]), "--chunks", str(spec[1]),
                        "--chunk-interval-ms", str(spec[2])]
            p = procs.start(cmd, os.path.join(self.tmp, f"upstream-{name}.log"))
            procs.wait_ready(p, port, "/health", 10)
            self.ups[name] = (p, port)
        log(f"fake upstreams: " + ", ".join(f"{k} :{v[1]}" for k, v in self.ups.items()))
        # A byte relay in front of the instant and paced upstreams: one more process and one
        # more loopback hop, no HTTP work. Its row is the least any proxy can add here.
        for name in ("instant", "paced"):
            port = procs.free_port()
            p = procs.start([self.bin("tcp-relay"), "--listen", f"127.0.0.1:{port}",
                             "--to", f"127.0.0.1:{self.ups[name][1]}"],
                            os.path.join(self.tmp, f"relay-{name}.log"))
            procs.wait_ready(p, port, "/health", 10)
            self.relays[name] = (p, port)

    def load(self, url, body, mode, level, headers=(), expect=None, duration=None, rate=None):
        d = self.a.duration if duration is None else duration
        cmd = [self.bin("weir-load"), "--url", url, "--mode", mode, "--duration", str(d),
               "--warmup", str(self.a.warmup)]
        if mode == "hold":
            cmd += ["--streams", str(level)]
        else:
            cmd += ["--concurrency", str(level)]
        if rate:
            cmd += ["--rate", str(rate)]
        if body:
            cmd += ["--body", body]
        if expect:
            cmd += ["--expect-chunks", str(expect)]
        for h in headers:
            cmd += ["--header", h]
        return procs.run_json(cmd, timeout=d + self.a.warmup + (600 if mode == "hold" else 120))

    def measure_ceiling(self):
        port = self.ups["instant"][1]
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        from scenarios import chat_body
        out = {}
        for c in (64, 256):
            r = self.load(url, chat_body("gpt-4o-mini"), "closed", c)
            out[f"c{c}"] = {"throughput_rps": r.get("throughput_rps"),
                            "p99_us": r.get("latency_us", {}).get("p99"),
                            "errors": r.get("errors"), "failed": r.get("failed")}
        self.results["fake_ceiling"] = out
        log("fake upstream ceiling (weir-load direct): " + ", ".join(
            f"{k}: {v['throughput_rps']} req/s (p99 {v['p99_us']} us)" for k, v in out.items()))

    def start_redis(self):
        exe = "redis-server"
        if subprocess.run(["sh", "-c", f"command -v {exe}"], capture_output=True).returncode:
            return None
        port = procs.free_port()
        p = procs.start([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", self.tmp],
                        os.path.join(self.tmp, "redis.log"))
        for _ in range(200):
            r = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                               text=True)
            if r.stdout.strip() == "PONG":
                return port
            time.sleep(0.05)
        return None

    def weir_cfg(self, kind, port):
        ups = {k: v[1] for k, v in self.ups.items()}
        if getattr(self, "redis_port", None):
            ups["redis"] = self.redis_port
        path = os.path.join(self.tmp, f"weir-{kind}-{port}.yaml")
        d = os.path.join(self.tmp, f"data-{kind}-{port}")
        os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            f.write(configs.weir_config(kind, port, ups, d))
        return path

    def weir_env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.endswith("_API_KEY") and not k.startswith(("WEIR_", "LLM_"))}
        env["WEIR_LOG"] = "warn"
        # The CLI adds a SQLite tier in the user's cache dir when a config names no L2: the
        # configs here say exactly which tiers each instance has, so turn that default off.
        env["WEIR_CACHE_DIR"] = "off"
        # Likewise the key store: without this, every instance would open one in the user's
        # data dir (polled four times a second, and any key stored there would lock the bench
        # out). Only the keyed config names a store.
        env["WEIR_DATA_DIR"] = "off"
        return env

    def start_weir(self, kind, label=None):
        """Start a weir instance of a config kind, known as `label` (default: the kind)."""
        label = label or kind
        port = procs.free_port()
        cfg = self.weir_cfg(kind, port)
        p = procs.start([self.bin("weir"), "--config", cfg, "serve"],
                        os.path.join(self.tmp, f"weir-{label}.log"), env=self.weir_env())
        procs.wait_ready(p, port, "/ready", 30)
        self.gw[("weir", label)] = (p, port)
        if configs.needs_stored_key(kind):
            self.stored_keys[label] = procs.create_key(port, configs.STORED_KEY_SPEC)
        rss, _ = procs.memory_kib(p.pid)
        self.results.setdefault("idle_rss_mib", {})[f"weir-{label}"] = round(rss / 1024, 1)
        log(f"weir {label} ready on :{port}, RSS {rss / 1024:.1f} MiB (config {cfg})")

    def cold_start(self):
        out = {}
        for kind in ("bare", "full"):
            times = []
            for _ in range(self.a.cold_runs):
                port = procs.free_port()
                cfg = self.weir_cfg(kind, port)
                t0 = time.perf_counter()
                p = procs.start([self.bin("weir"), "--config", cfg, "serve"],
                                os.path.join(self.tmp, "weir-cold.log"), env=self.weir_env())
                procs.wait_ready(p, port, "/ready", 30, interval=0.0005)
                times.append((time.perf_counter() - t0) * 1000)
                procs.stop(p)
            out[kind] = {"runs": len(times), "median_ms": round(statistics.median(times), 1),
                         "min_ms": round(min(times), 1), "max_ms": round(max(times), 1)}
            log(f"cold start {kind}: median {out[kind]['median_ms']} ms, max {out[kind]['max_ms']} ms")
        self.results["cold_start"] = out

    def start_litellm(self, kind):
        exe = self.a.litellm
        if not os.path.exists(exe):
            raise RuntimeError(f"{exe} missing (run.sh --peer litellm installs it)")
        port = procs.free_port()
        ups = {k: v[1] for k, v in self.ups.items()}
        cfg = os.path.join(self.tmp, f"litellm-{kind}.yaml")
        with open(cfg, "w") as f:
            f.write(configs.litellm_config(kind, ups))
        # Translate /v1/messages to chat/completions like weir does (LiteLLM's default for
        # OpenAI models is the Responses API, which the fake upstream does not serve).
        env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False",
                   LITELLM_LOCAL_MODEL_COST_MAP="True", NO_DOCS="True",
                   LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES="True")
        p = procs.start([exe, "--config", cfg, "--host", "127.0.0.1", "--port", str(port),
                         "--num_workers", str(self.a.litellm_workers)], os.path.join(self.tmp, f"litellm-{kind}.log"),
                        env=env, cwd=self.tmp)
        secs = procs.wait_ready(p, port, "/health/liveliness", 300, interval=0.1)
        self.gw[("litellm", kind)] = (p, port)
        rss, _ = procs.memory_kib(p.pid)
        self.results.setdefault("idle_rss_mib", {})[f"litellm-{kind}"] = round(rss / 1024, 1)
        log(f"litellm {kind} ready on :{port} after {secs:.1f} s")

    # ---- scenarios -------------------------------------------------------------------------
    def targets(self, s):
        up_proc, up_port = self.ups[s.upstream]
        yield "direct", up_proc, up_port, s.body(s.direct_model), []
        if s.name in RELAY_SCENARIOS and s.upstream in self.relays:
            rp, rport = self.relays[s.upstream]
            yield "relay", rp, rport, s.body(s.direct_model), []
        auth = [f"Authorization: Bearer {configs.GATEWAY_KEY}"]
        for kind in s.baselines:
            b = self.gw.get(("weir", baseline_label(kind, s)))
            if b:
                yield f"weir-{kind}", b[0], b[1], s.body(s.weir_model), configs.request_headers(
                    kind, self.stored_keys.get(baseline_label(kind, s)))
        w = self.gw.get(("weir", s.instance))
        if w:
            yield "weir", w[0], w[1], s.body(s.weir_model), configs.request_headers(
                s.instance, self.stored_keys.get(s.instance))
        if s.peer and ("litellm", s.peer[0]) in self.gw:
            p, port = self.gw[("litellm", s.peer[0])]
            yield "litellm", p, port, s.body(s.peer[1]), (auth if s.peer[0] == "full" else [])

    def prime(self, s, name, port, body, headers):
        h = dict(x.split(": ", 1) for x in headers)
        info = []
        for _ in range(2):
            st, hd, _ = procs.http_post(port, s.path, body, h)
            info.append({"status": st, "cache": hd.get("x-weir-cache")})
        return info

    def served(self, port):
        st, body = procs.http_get(port, "/__bench/stats")
        return json.loads(body)["served"] if st == 200 else None

    def run_one(self, s, level, name, proc, port, body, headers, prime):
        rec = {"scenario": s.name, "mode": s.mode, "level": level, "target": name}
        if prime:
            rec["prime"] = self.prime(s, name, port, body, headers)
        up_port = self.ups[s.upstream][1]
        time.sleep(self.a.settle)
        waited = procs.wait_idle([p.pid for p, _ in self.gw.values()])
        if waited > 2:
            log(f"  (waited {waited:.1f} s for the gateways to go idle)")
        served0, cpu0 = self.served(up_port), procs.cpu_seconds(proc.pid)
        noise = procs.Noise()
        r = self.load(f"http://127.0.0.1:{port}{s.path}", body, s.mode, level,
                      headers, s.expect_chunks, rate=s.rate)
        cpu = procs.cpu_seconds(proc.pid) - cpu0
        rec["noise"] = noise.done()
        served1 = self.served(up_port)
        rss, hwm = procs.memory_kib(proc.pid)
        total = r.get("requests_total") or 0
        rec.update({"load": r, "cpu_s": round(cpu, 3),
                    "cpu_us_per_req": round(cpu * 1e6 / total, 1) if total else None,
                    "rss_mib": round(rss / 1024, 1), "hwm_mib": round(hwm / 1024, 1),
                    "upstream_calls": (served1 - served0) if None not in (served0, served1) else None})
        if s.expect_chunks and total:
            rec["cpu_us_per_chunk"] = round(cpu * 1e6 / (total * s.expect_chunks), 2)
        log(report.one_line(rec))
        return rec

    def run_scenario(self, s):
        """Each level: every target in turn, `rounds` times; keep each target's median round."""
        not_clean = {}  # hold: a target that failed a level is not tried at higher ones
        for level in s.levels:
            got = {}
            rounds = 1 if s.mode == "hold" else max(1, self.a.rounds)
            for rnd in range(rounds):
                for name, proc, port, body, headers in self.targets(s):
                    if name in not_clean:
                        self.results["skipped"][f"{s.name} {level} {name}"] = (
                            f"not clean at {not_clean[name]} streams")
                        continue
                    rec = self.run_one(s, level, name, proc, port, body, headers,
                                       s.prime and rnd == 0)
                    got.setdefault(name, []).append(rec)
                    if s.mode == "hold" and rec["load"].get("streams_clean") != level:
                        not_clean[name] = level
            for recs in got.values():
                self.results["runs"].append(median_round(recs))

    def soak(self):
        p, port = self.gw[("weir", "full")]
        from scenarios import chat_body
        out_path = os.path.join(self.tmp, "soak.json")
        cmd = [self.bin("weir-load"), "--url", f"http://127.0.0.1:{port}/v1/chat/completions",
               "--mode", "rate", "--rate", str(self.a.soak_rate), "--concurrency", "64",
               "--duration", str(self.a.soak), "--warmup", "0",
               "--body", chat_body("bench-group", temperature=0),
               "--header", f"Authorization: Bearer {configs.GATEWAY_KEY}",
               "--header", "Cache-Control: no-store"]
        log(f"soak: {self.a.soak:g} s at {self.a.soak_rate:g} req/s on the full stack")
        with open(out_path, "w") as out:
            lp = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
            samples, t0 = [], time.monotonic()
            while lp.poll() is None:
                time.sleep(min(10.0, max(0.1, self.a.soak - (time.monotonic() - t0) + 0.5)))
                rss, hwm = procs.memory_kib(p.pid)
                samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_mib": round(rss / 1024, 2)})
            lp.wait()
        with open(out_path) as f:
            try:
                r = json.load(f)
            except ValueError:
                r = {"failed": "no JSON"}
        first = samples[0]["rss_mib"] if samples else None
        last = samples[-1]["rss_mib"] if samples else None
        self.results["soak"] = {
            "seconds": self.a.soak, "rate": self.a.soak_rate, "samples": samples,
            "first_mib": first, "last_mib": last,
            "growth_pct": round((last - first) * 100 / first, 2) if first else None,
            "load": r}
        log(f"soak: RSS {first} -> {last} MiB")

    def ledger_status(self, port):
        auth = {"Authorization": f"Bearer {configs.GATEWAY_KEY}"}
        st, body = procs.http_get(port, "/status", headers=auth)
        return (json.loads(body).get("ledger") or {}) if st == 200 else {}

    def ledger_soak(self):
        """The ledger stack at a fixed rate: the rate must hold, and the ledger's backlog must
        not grow (the writer keeps up) nor anything be dropped."""
        p, port = self.gw[("weir", "ledger")]
        from scenarios import chat_body
        out_path = os.path.join(self.tmp, "ledger-soak.json")
        seconds, rate = self.a.ledger_soak, self.a.rate
        cmd = [self.bin("weir-load"), "--url", f"http://127.0.0.1:{port}/v1/chat/completions",
               "--mode", "rate", "--rate", str(rate), "--concurrency", "64",
               "--duration", str(seconds), "--warmup", "0",
               "--body", chat_body("bench-group", temperature=0)]
        for h in configs.request_headers("ledger"):
            cmd += ["--header", h]
        log(f"ledger soak: {seconds:g} s at {rate:g} req/s on the ledger stack")
        before = self.ledger_status(port)
        cpu0 = procs.cpu_seconds(p.pid)
        with open(out_path, "w") as out:
            lp = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
            samples, t0 = [], time.monotonic()
            while lp.poll() is None:
                time.sleep(5.0)
                h = self.ledger_status(port)
                samples.append({"t_s": round(time.monotonic() - t0, 1),
                                "backlog_records": h.get("backlog_records_estimate")})
            lp.wait()
        cpu = procs.cpu_seconds(p.pid) - cpu0
        after = self.ledger_status(port)
        with open(out_path) as f:
            try:
                r = json.load(f)
            except ValueError:
                r = {"failed": "no JSON"}
        total = r.get("requests_total") or 0
        self.results["ledger_soak"] = {
            "seconds": seconds, "rate": rate, "samples": samples,
            "throughput_rps": r.get("throughput_rps"), "errors": r.get("errors"),
            "last_backlog_records": after.get("backlog_records_estimate"),
            "written": (after.get("written") or 0) - (before.get("written") or 0),
            "dropped": (after.get("dropped") or 0) - (before.get("dropped") or 0),
            "cpu_us_per_req": round(cpu * 1e6 / total, 1) if total else None, "load": r}
        log(f"ledger soak: {r.get('throughput_rps')} req/s, backlog "
            f"{[x['backlog_records'] for x in samples]}, dropped "
            f"{self.results['ledger_soak']['dropped']}")

    def idle_check(self):
        """Percent of a core other processes used over one second before anything started."""
        n = procs.Noise()
        time.sleep(1.0)
        return n.done()["other_cpu_pct"]

    def meta(self):
        def sh(cmd):
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            return r.stdout.strip()
        m = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
             "cpus": os.cpu_count(), "kernel": platform.release(),
             "other_cpu_at_start_pct": self.idle_check(),
             "git": sh(["git", "rev-parse", "--short", "HEAD"]),
             "git_dirty": bool(sh(["git", "status", "--porcelain", "--", "crates"])),
             "weir": sh([self.bin("weir"), "--version"]),
             "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(self.a).items()}}
        if self.a.peer == "litellm":
            pip = os.path.join(os.path.dirname(self.a.litellm), "pip")
            m["litellm"] = sh([pip, "show", "litellm"]).split("\n")[1:2]
        return m

    def run(self):
        self.results["meta"] = self.meta()
        if self.results["meta"]["other_cpu_at_start_pct"] > 10:
            log(f"warning: other processes use {self.results['meta']['other_cpu_at_start_pct']}% "
                "of a core before the run starts: the figures will show it")
        self.start_upstreams()
        self.measure_ceiling()
        if self.want("cold-start"):
            self.cold_start()
        scen = [s for s in all_scenarios(self.a.levels, self.a.hold_levels, self.a.rate)
                if self.want(s.name)]
        if any(s.instance == "redis" for s in scen):
            self.redis_port = self.start_redis()
            if not self.redis_port:
                self.results["skipped"]["cache-redis"] = "redis-server not installed"
                scen = [s for s in scen if s.instance != "redis"]
        kinds = {s.instance for s in scen} | ({"full"} if self.a.soak else set())
        kinds |= {"ledger"} if self.a.ledger_soak else set()
        for kind in sorted(kinds):
            self.start_weir(kind)
        # A baseline gets an instance of its own, started with the scenario's: shared with its
        # own scenario, it would come to the comparison with a cache the earlier runs filled
        # (evicting on every store) while the instance it is compared with starts empty.
        for s in scen:
            for kind in s.baselines:
                self.start_weir(kind, baseline_label(kind, s))
        if self.a.peer == "litellm":
            for kind in sorted({s.peer[0] for s in scen if s.peer}):
                try:
                    self.start_litellm(kind)
                except RuntimeError as e:
                    self.results["skipped"][f"litellm-{kind}"] = str(e)
                    log(f"litellm {kind}: {e}")
        self.results["scenarios"] = {s.name: {"title": s.title, "targets": s.targets}
                                     for s in scen}
        steps = [(s.name, lambda s=s: self.run_scenario(s)) for s in scen]
        if self.want("crosscheck"):
            steps.append(("crosscheck", lambda: self.results.__setitem__(
                "crosscheck", crosscheck.run(self, self.a))))
        if self.a.soak:
            steps.append(("soak", self.soak))
        if self.a.ledger_soak:
            steps.append(("ledger-soak", self.ledger_soak))
        for name, step in steps:
            log(f"== {name}: {self.results['scenarios'].get(name, {}).get('title', '')}")
            try:
                step()
            except Exception as e:  # record it and go on with the next scenario
                self.results["skipped"][name] = f"failed: {e!r}"
                log(f"{name} failed: {e!r}")
        return self.results


def main(argv):
    a = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    b = Bench(a)
    try:
        res = b.run()
    except Exception as e:
        res = b.results
        res["skipped"]["run"] = f"failed: {e!r}"
        log(f"run failed: {e!r}; writing what was measured")
    finally:
        for p, _ in list(b.gw.values()) + list(b.relays.values()) + list(b.ups.values()):
            procs.stop(p)
    os.makedirs(a.out_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suffix = "-quick" if a.quick else ""
    base = os.path.join(a.out_dir, stamp + suffix)
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(report.markdown(res))
    if a.keep_tmp:
        log(f"configs and logs kept in {b.tmp}")
    else:
        shutil.rmtree(b.tmp, ignore_errors=True)
    log(f"wrote {base}.md and {base}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
