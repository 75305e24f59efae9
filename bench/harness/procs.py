"""Processes for the benchmark: start servers, wait until they answer, read /proc figures.

Every process started here is remembered and stopped by its own pid at exit (never by name).
"""

import atexit
import http.client
import json
import os
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
_STARTED = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, log_path, env=None, cwd=None):
    """Start cmd in its own process group, stdout/stderr to log_path."""
    log = open(log_path, "ab")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                         start_new_session=True)
    _STARTED.append(p)
    return p


def stop(p, timeout=10):
    """SIGTERM the process group of p (which start() made for it), then SIGKILL."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


@atexit.register
def _stop_all():
    for p in reversed(_STARTED):
        stop(p, timeout=3)


def http_get(port, path, timeout=2.0, headers=None):
    """(status, body) of GET http://127.0.0.1:port/path, or (None, error)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body
    except OSError as e:
        return None, str(e)


def http_post(port, path, body, headers=None, timeout=30.0):
    """(status, headers dict, body) of a POST."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"content-type": "application/json"}
    h.update(headers or {})
    c.request("POST", path, body=body.encode(), headers=h)
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    c.close()
    return out


def create_key(port, spec):
    """Create a stored gateway key through weir's admin API (loopback clients may, when no
    admin key is configured) and return its secret, which the API shows only once."""
    status, _, body = http_post(port, "/admin/keys", spec)
    if status != 201:
        raise RuntimeError(f"POST /admin/keys answered {status}: {body[:300]!r}")
    return json.loads(body)["key"]


def wait_ready(p, port, path, timeout, interval=0.002):
    """Seconds from now until GET path answers 200; raises if p dies or time runs out."""
    t0 = time.perf_counter()
    while True:
        status, _ = http_get(port, path, timeout=1.0)
        if status == 200:
            return time.perf_counter() - t0
        if p.poll() is not None:
            raise RuntimeError(f"process exited with {p.returncode} before {path} answered")
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{path} on port {port} not ready after {timeout}s")
        time.sleep(interval)


def tree(pid):
    """pid and all its descendants (LiteLLM's workers are children)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo.extend(children.get(q, []))
    return out


def cpu_seconds(pid):
    """utime + stime of pid and its descendants, in seconds."""
    total = 0
    for q in tree(pid):
        try:
            with open(f"/proc/{q}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def wait_idle(pids, limit=0.05, timeout=60.0, step=0.2):
    """Wait until the processes use under `limit` of a core together (a gateway may still be
    working off the last run's backlog), at most `timeout` seconds; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        c0 = sum(cpu_seconds(p) for p in pids)
        time.sleep(step)
        if (sum(cpu_seconds(p) for p in pids) - c0) / step < limit:
            break
    return time.monotonic() - t0


def machine_cpu():
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK, steal / CLK_TCK


def own_cpu():
    """CPU seconds of everything this harness runs: itself, its reaped children (the load
    tool) and the servers it started that are still alive."""
    import resource
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total + sum(cpu_seconds(p.pid) for p in _STARTED if p.poll() is None)


class Noise:
    """CPU that other processes (and the hypervisor's steal) took while a run went on."""

    def __init__(self):
        self.t0, (self.busy0, self.steal0), self.own0 = time.monotonic(), machine_cpu(), own_cpu()

    def done(self):
        wall = time.monotonic() - self.t0
        busy, steal = machine_cpu()
        other = (busy - self.busy0) - (own_cpu() - self.own0)
        return {"other_cpu_pct": round(max(0.0, other) * 100 / wall, 1),
                "steal_pct": round((steal - self.steal0) * 100 / wall, 1)}


def memory_kib(pid):
    """(VmRSS, VmHWM) in KiB, summed over pid and its descendants."""
    rss = hwm = 0
    for q in tree(pid):
        try:
            with open(f"/proc/{q}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return rss, hwm


def run_json(cmd, timeout):
    """Run a command that prints one JSON object; return it (or {'failed': ...})."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout}s"}
    if r.returncode != 0:
        return {"failed": (r.stderr or r.stdout).strip()[-500:]}
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {"failed": "no JSON: " + r.stdout[-300:]}
