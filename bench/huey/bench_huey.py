"""huey with SqliteHuey (queue and results in one SQLite file): the SQLite peer, the add
workload of `machinist bench`, the same fields. Run by run.sh (which makes the virtualenv);
by hand:

    BENCH_HUEY_DB=/tmp/huey.db python bench_huey.py --tasks 20000 --json

The consumer is `huey_consumer -k process -w CONCURRENCY` polling every 20 ms (`-d 0.02
-m 0.02 -b 1`: the poll interval machinist-sqlite uses across processes; huey's default backs
off from 100 ms to 10 s), started per scenario; its memory and CPU are those of its whole
process tree. Completion: the queue empties, then the last tasks sent are polled until their
results are stored, then every result is read back and checked (count, sum). huey has no
chords, and without results completion cannot be observed: those scenarios are skipped.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)

import peer  # noqa: E402

RUN = uuid.uuid4().hex[:8]
ALL = ["enqueue", "drain", "end-to-end", "no-results", "latency", "chord", "backlog"]
POLL = ["-d", "0.02", "-m", "0.02", "-b", "1"]


def tasks_module():
    import importlib

    import huey_tasks

    return importlib.reload(huey_tasks)


class Consumer:
    def __init__(self, concurrency):
        self.ready_file = tempfile.mktemp(prefix="huey-ready-")
        env = dict(os.environ, BENCH_READY_FILE=self.ready_file, PYTHONPATH=HERE)
        self.proc = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "huey_consumer"),
                "huey_tasks.huey", "-k", "process", "-w", str(concurrency), "-n", "-C",
                *POLL,
            ],
            cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        peer.wait_ready(self.ready_file, self.proc)

    def stop(self):
        # huey's consumer stops gracefully on SIGINT (SIGTERM stops at once).
        self.proc.send_signal(2)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.ready_file):
            os.remove(self.ready_file)


def produce(args, mod, n, start=0):
    ids = [None] * n
    took = []
    lock = threading.Lock()

    def work(p):
        local = []
        for k in range(p, n, args.producers):
            t = time.perf_counter()
            r = mod.add(start + k, 1)
            local.append(time.perf_counter() - t)
            ids[k] = r.id
        with lock:
            took.extend(local)

    threads = [threading.Thread(target=work, args=(p,)) for p in range(args.producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids, took


def result(mod, tid):
    return mod.huey.result(tid, preserve=True)


def wait_done(mod, ids, tail):
    while mod.huey.pending_count() > 0:
        time.sleep(0.002)
    watch = ids[-tail:]
    deadline = time.monotonic() + 120
    while watch:
        watch = [t for t in watch if result(mod, t) is None]
        if watch:
            if time.monotonic() > deadline:
                sys.exit(f"{len(watch)} tasks never completed")
            time.sleep(0.001)
    return time.perf_counter()


def verify(mod, ids, start=0):
    values = [result(mod, t) for t in ids]
    ok = sum(1 for v in values if v is not None)
    total = sum(v for v in values if v is not None)
    expected = peer.expected_sum(start, start + len(ids))
    fields = {"succeeded": ok, "verified": ok == len(ids) and total == expected}
    if not fields["verified"]:
        fields["note"] = f"{ok} of {len(ids)} succeeded; sum {total}, expected {expected}"
    return fields


def base(args, scenario, tasks, seconds):
    import huey

    return {
        "scenario": scenario,
        "peer": "huey",
        "peer_version": huey.__version__,
        "broker": "sqlite",
        "tasks": tasks,
        "seconds": round(seconds, 4),
        "tasks_per_sec": round(tasks / seconds, 1) if seconds > 0 else 0.0,
        "concurrency": args.concurrency,
        "producers": args.producers,
        "cpu_scope": "worker process tree",
    }


def scenario_enqueue(args, mod):
    n = args.tasks
    t0 = time.perf_counter()
    ids, took = produce(args, mod, n)
    seconds = time.perf_counter() - t0
    queued = mod.huey.pending_count()
    out = base(args, "enqueue", n, seconds)
    out.update(peer.lat_fields(took))
    out.update({"succeeded": queued, "verified": queued == n, "cpu_scope": "producer"})
    return out


def scenario_drain(args, mod, name, n):
    ids, _ = produce(args, mod, n)
    consumer = Consumer(args.concurrency)
    meter = peer.TreeMeter(consumer.proc.pid)
    rss_start = sum(peer.rss_mb(p) for p in peer.tree(consumer.proc.pid))
    t0 = time.perf_counter()
    end = wait_done(mod, ids, min(n, 200))
    peak, cpu = meter.stop()
    consumer.stop()
    out = base(args, name, n, end - t0)
    out.update({"peak_rss_mb": round(peak, 1), "_cpu_s": cpu})
    if name == "backlog":
        out["rss_start_mb"] = round(rss_start, 1)
    out.update(verify(mod, ids))
    return out


def scenario_end_to_end(args, mod):
    n = args.tasks
    consumer = Consumer(args.concurrency)
    meter = peer.TreeMeter(consumer.proc.pid)
    t0 = time.perf_counter()
    ids, _ = produce(args, mod, n)
    end = wait_done(mod, ids, min(n, 200))
    peak, cpu = meter.stop()
    consumer.stop()
    out = base(args, "end-to-end", n, end - t0)
    out.update({"peak_rss_mb": round(peak, 1), "_cpu_s": cpu})
    out.update(verify(mod, ids))
    return out


def scenario_latency(args, mod):
    n = min(args.tasks, args.latency_tasks)
    consumer = Consumer(args.concurrency)
    ids, samples = [], []
    warm = 10
    meter = None
    t0 = 0.0
    for k in range(n + warm):
        if k == warm:
            meter = peer.TreeMeter(consumer.proc.pid)
            t0 = time.perf_counter()
        i = k - warm if k >= warm else n + k
        sent = time.perf_counter()
        r = mod.add(i, 1)
        while result(mod, r.id) is None:
            time.sleep(0.00005)
        if k >= warm:
            samples.append(time.perf_counter() - sent)
            ids.append(r.id)
    seconds = time.perf_counter() - t0
    peak, cpu = meter.stop()
    consumer.stop()
    out = base(args, "latency", n, seconds)
    out.update(peer.lat_fields(samples))
    out.update({"peak_rss_mb": round(peak, 1), "_cpu_s": cpu})
    out.update(verify(mod, ids))
    return out


def main():
    args = peer.parser("huey (SqliteHuey)").parse_args()
    scenarios = args.scenario or ALL
    peer.table_header(args)
    failed = False
    for name in scenarios:
        os.environ["BENCH_HUEY_NAME"] = f"huey_bench_{RUN}_{name}"
        mod = tasks_module()
        print(f"huey: {name} …", file=sys.stderr, flush=True)
        if name == "enqueue":
            out = scenario_enqueue(args, mod)
        elif name == "drain":
            out = scenario_drain(args, mod, "drain", args.tasks)
        elif name == "backlog":
            out = scenario_drain(args, mod, "backlog", args.backlog_tasks or args.tasks)
        elif name == "end-to-end":
            out = scenario_end_to_end(args, mod)
        elif name == "latency":
            out = scenario_latency(args, mod)
        elif name in ("no-results", "chord"):
            why = {
                "no-results": "completion cannot be observed without results",
                "chord": "huey has no chords",
            }[name]
            out = base(args, name, 0, 0)
            out["skipped"] = why
        else:
            sys.exit(f"unknown scenario {name}")
        mod.huey.flush()
        failed |= not out.get("verified", True)
        peer.emit(args, out)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
