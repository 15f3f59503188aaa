"""Shared by the peer benchmarks (Celery, huey): the same workload and the same fields as
`machinist bench --json`, measured the same way.

* Workload: `add(i, 1)` for task i, so every result is known and checked (count, sum).
* Worker memory: the peak, sampled every 20 ms, of the summed RSS of the worker's whole process
  tree (the parent and its pool processes), in MB.
* Worker CPU: user + system seconds of that tree over the timed part, per 1,000 tasks.
* Latency percentiles: nearest rank, in milliseconds.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()


def tree(pid):
    """`pid` and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def cpu_s(pids):
    total = 0
    for p in pids:
        try:
            fields = _stat_fields(p)
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / TICKS


class TreeMeter:
    """Samples the RSS of a process tree until stopped; measures its CPU over the window."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._pids = tree(pid)
        self._cpu0 = cpu_s(self._pids)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            pids = tree(self.pid)
            self._pids = pids
            self.peak = max(self.peak, sum(rss_mb(p) for p in pids))
            self._stop.wait(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join()
        cpu = cpu_s(tree(self.pid)) - self._cpu0
        return self.peak, cpu


def percentiles(samples_s):
    """p50, p99, max in ms, nearest rank."""
    if not samples_s:
        return None
    s = sorted(samples_s)
    n = len(s)

    def at(q):
        rank = max(1, min(n, int(-(-q * n // 1))))
        return s[rank - 1] * 1000.0

    return at(0.50), at(0.99), s[-1] * 1000.0


def stop_worker(proc, timeout=60):
    """Warm shutdown (SIGTERM), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            sys.exit(f"the worker exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            sys.exit("the worker did not become ready")
        time.sleep(0.01)


def expected_sum(start, end):
    return sum(i + 1 for i in range(start, end))


def parser(name):
    p = argparse.ArgumentParser(description=f"{name}: the add workload of machinist bench")
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--latency-tasks", type=int, default=1000)
    p.add_argument("--backlog-tasks", type=int, default=None)
    p.add_argument("--chord-size", type=int, default=100)
    p.add_argument("--payload", type=int, default=0)
    p.add_argument("--scenario", action="append", default=None)
    p.add_argument("--json", action="store_true")
    return p


def emit(args, fields):
    """One scenario's line: JSON (`--json`) or a table row, the same fields as machinist."""
    tasks = fields["tasks"]
    cpu = fields.pop("_cpu_s", None)
    fields["cpu_s_per_1000"] = round(cpu * 1000.0 / tasks, 4) if cpu is not None and tasks else None
    fields.setdefault("floor_tasks_per_sec", None)
    fields.setdefault("ratio", None)
    for k in ("p50_ms", "p99_ms", "max_ms", "start_p50_ms", "start_p99_ms", "peak_rss_mb"):
        fields.setdefault(k, None)
    if args.json:
        print(json.dumps(fields), flush=True)
        return

    def f(v, d):
        return "-" if v is None else f"{v:.{d}f}"

    if fields.get("skipped"):
        print(f"{fields['scenario']:<11} skipped: {fields['skipped']}", flush=True)
        return
    check = "ok" if fields.get("verified") else f"FAILED {fields.get('note', '')}"
    print(
        f"{fields['scenario']:<11} {tasks:>8} {fields['tasks_per_sec']:>10.0f} "
        f"{f(fields['p50_ms'], 3):>8} {f(fields['p99_ms'], 3):>8} {f(fields['max_ms'], 3):>8} "
        f"{f(fields['peak_rss_mb'], 1):>7} {f(fields['cpu_s_per_1000'], 3):>9}  {check}",
        flush=True,
    )


def table_header(args):
    if not args.json:
        print(
            f"{'scenario':<11} {'tasks':>8} {'tasks/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'max ms':>8} {'RSS MB':>7} {'CPU s/1k':>9}  check",
            flush=True,
        )


def lat_fields(samples_s, prefix=""):
    p = percentiles(samples_s)
    if p is None:
        return {}
    return {
        f"{prefix}p50_ms": round(p[0], 3),
        f"{prefix}p99_ms": round(p[1], 3),
        f"{prefix}max_ms": round(p[2], 3),
    }
