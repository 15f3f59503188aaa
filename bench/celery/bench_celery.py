"""Celery on Redis (broker and results), the add workload of `machinist bench`, the same
fields. Run by run.sh (which makes the virtualenv and the private redis-server); by hand:

    BENCH_REDIS_URL=redis://127.0.0.1:PORT/0 python bench_celery.py --tasks 20000 --json

The worker is `celery worker --pool prefork -c CONCURRENCY` with Celery's defaults otherwise
(early acknowledgement, prefetch multiplier 4, no STARTED state), started per scenario; its
memory and CPU are those of its whole process tree. Completion is seen by reading the result
keys (`celery-task-meta-<id>`) with redis-py: first the queue empties, then the last tasks sent
are polled until done, then every result is read back and checked (count, sum).
"""

import json
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
import celery  # noqa: E402
import redis  # noqa: E402
from celery import chord  # noqa: E402

import celery_tasks  # noqa: E402

URL = os.environ["BENCH_REDIS_URL"]
R = redis.Redis.from_url(URL)
RUN = uuid.uuid4().hex[:8]
ALL = ["enqueue", "drain", "end-to-end", "no-results", "latency", "chord", "backlog"]


def meta_key(task_id):
    return f"celery-task-meta-{task_id}"


def read_results(ids):
    """{id: (status, result)} for ids whose result is stored."""
    out = {}
    for k in range(0, len(ids), 1000):
        chunk = ids[k : k + 1000]
        for tid, raw in zip(chunk, R.mget([meta_key(t) for t in chunk])):
            if raw is not None:
                meta = json.loads(raw)
                out[tid] = (meta.get("status"), meta.get("result"))
    return out


class Worker:
    def __init__(self, queue, concurrency):
        self.ready_file = tempfile.mktemp(prefix="celery-ready-")
        env = dict(os.environ, BENCH_READY_FILE=self.ready_file, PYTHONPATH=HERE)
        self.proc = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "celery"),
                "-A", "celery_tasks", "worker",
                "--pool", "prefork", "-c", str(concurrency),
                "-Q", queue, "-n", f"bench-{queue}@%h",
                "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=HERE, env=env, stdout=subprocess.DEVNULL,
        )
        peer.wait_ready(self.ready_file, self.proc)
        # The pool processes fork right after `worker_ready`; give them a moment to exist.
        time.sleep(0.2)

    def stop(self):
        peer.stop_worker(self.proc)
        if os.path.exists(self.ready_file):
            os.remove(self.ready_file)


def produce(args, queue, n, record=False, start=0):
    """Sends add(i, 1) for i in start..start+n from --producers threads; ids in order."""
    ids = [None] * n
    took = []
    lock = threading.Lock()
    padding = {"bench_payload": "x" * args.payload} if args.payload else None

    def work(p):
        local = []
        for k in range(p, n, args.producers):
            i = start + k
            t = time.perf_counter()
            r = celery_tasks.add.apply_async((i, 1), queue=queue, headers=padding)
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


def wait_done(queue, ids, tail):
    """Until the queue is empty and the last `tail` tasks have results; returns that instant."""
    while R.llen(queue) > 0:
        time.sleep(0.002)
    watch = ids[-tail:]
    deadline = time.monotonic() + 120
    while True:
        done = read_results(watch)
        if len(done) == len(watch):
            return time.perf_counter()
        watch = [t for t in watch if t not in done]
        if time.monotonic() > deadline:
            sys.exit(f"{len(watch)} tasks never completed")
        time.sleep(0.001)


def verify(ids, start=0):
    results = read_results(ids)
    ok = sum(1 for s, _ in results.values() if s == "SUCCESS")
    total = sum(r for s, r in results.values() if s == "SUCCESS")
    expected = peer.expected_sum(start, start + len(ids))
    fields = {"succeeded": ok, "verified": ok == len(ids) and total == expected}
    if not fields["verified"]:
        fields["note"] = f"{ok} of {len(ids)} succeeded; sum {total}, expected {expected}"
    return fields


def cleanup(queue, ids):
    R.delete(queue)
    for k in range(0, len(ids), 1000):
        R.delete(*[meta_key(t) for t in ids[k : k + 1000] if t])


def base(args, scenario, tasks, seconds):
    return {
        "scenario": scenario,
        "peer": "celery",
        "peer_version": celery.__version__,
        "broker": "redis",
        "tasks": tasks,
        "seconds": round(seconds, 4),
        "tasks_per_sec": round(tasks / seconds, 1) if seconds > 0 else 0.0,
        "concurrency": args.concurrency,
        "producers": args.producers,
        "cpu_scope": "worker process tree",
    }


def scenario_enqueue(args, queue):
    n = args.tasks
    t0 = time.perf_counter()
    ids, took = produce(args, queue, n, record=True)
    seconds = time.perf_counter() - t0
    queued = R.llen(queue)
    out = base(args, "enqueue", n, seconds)
    out.update(peer.lat_fields(took))
    out.update({"succeeded": queued, "verified": queued == n, "cpu_scope": "producer"})
    cleanup(queue, ids)
    return out


def scenario_drain(args, queue, name, n):
    ids, _ = produce(args, queue, n)
    worker = Worker(queue, args.concurrency)
    meter = peer.TreeMeter(worker.proc.pid)
    rss_start = sum(peer.rss_mb(p) for p in peer.tree(worker.proc.pid))
    t0 = time.perf_counter()
    end = wait_done(queue, ids, min(n, 200))
    peak, cpu = meter.stop()
    worker.stop()
    out = base(args, name, n, end - t0)
    out.update({"peak_rss_mb": round(peak, 1), "_cpu_s": cpu})
    if name == "backlog":
        out["rss_start_mb"] = round(rss_start, 1)
    out.update(verify(ids))
    cleanup(queue, ids)
    return out


def scenario_end_to_end(args, queue):
    n = args.tasks
    worker = Worker(queue, args.concurrency)
    meter = peer.TreeMeter(worker.proc.pid)
    t0 = time.perf_counter()
    ids, _ = produce(args, queue, n)
    end = wait_done(queue, ids, min(n, 200))
    peak, cpu = meter.stop()
    worker.stop()
    out = base(args, "end-to-end", n, end - t0)
    out.update({"peak_rss_mb": round(peak, 1), "_cpu_s": cpu})
    out.update(verify(ids))
    cleanup(queue, ids)
    return out


def scenario_latency(args, queue):
    n = min(args.tasks, args.latency_tasks)
    worker = Worker(queue, args.concurrency)
    ids, samples = [], []
    warm = 10
    meter = None
    t0 = 0.0
    for k in range(n + warm):
        if k == warm:
            meter = peer.TreeMeter(worker.proc.pid)
            t0 = time.perf_counter()
        i = k - warm if k >= warm else n + k
        sent = time.perf_counter()
        r = celery_tasks.add.apply_async((i, 1), queue=queue)
        key = meta_key(r.id)
        while R.get(key) is None:
            time.sleep(0.00005)
        if k >= warm:
            samples.append(time.perf_counter() - sent)
            ids.append(r.id)
    seconds = time.perf_counter() - t0
    peak, cpu = meter.stop()
    worker.stop()
    out = base(args, "latency", n, seconds)
    out.update(peer.lat_fields(samples))
    out.update({"peak_rss_mb": round(peak, 1), "_cpu_s": cpu})
    out.update(verify(ids))
    cleanup(queue, ids)
    return out


def scenario_chord(args, queue):
    size = min(args.chord_size, args.tasks)
    groups = args.tasks // size
    members = groups * size
    worker = Worker(queue, args.concurrency)
    meter = peer.TreeMeter(worker.proc.pid)
    t0 = time.perf_counter()
    callbacks, member_ids, sent_at = [], [], []
    for g in range(groups):
        header = [celery_tasks.add.s(i, 1).set(queue=queue) for i in range(g * size, (g + 1) * size)]
        sent_at.append(time.perf_counter())
        res = chord(header)(celery_tasks.xsum.s().set(queue=queue))
        callbacks.append(res.id)
        member_ids.extend(c.id for c in res.parent.results)
    # Callbacks complete last: poll them all.
    pending = list(callbacks)
    done_at = {}
    deadline = time.monotonic() + 300
    while pending:
        got = read_results(pending)
        now = time.perf_counter()
        for tid in got:
            done_at[tid] = now
        pending = [t for t in pending if t not in got]
        if pending:
            if time.monotonic() > deadline:
                sys.exit(f"{len(pending)} chord callbacks never completed")
            time.sleep(0.001)
    end = max(done_at.values())
    peak, cpu = meter.stop()
    worker.stop()
    out = base(args, "chord", members, end - t0)
    out.update(peer.lat_fields([done_at[c] - s for c, s in zip(callbacks, sent_at)]))
    out.update({"peak_rss_mb": round(peak, 1), "_cpu_s": cpu, "chords": groups})
    out.update(verify(member_ids))
    cb = read_results(callbacks)
    wrong = sum(
        1
        for g, c in enumerate(callbacks)
        if cb.get(c, (None, None))[1] != peer.expected_sum(g * size, (g + 1) * size)
    )
    if wrong:
        out["verified"] = False
        out["note"] = f"{wrong} chord callbacks wrong or missing"
    cleanup(queue, member_ids + callbacks)
    for k in R.scan_iter("chord-unlock-*"):
        R.delete(k)
    return out


def main():
    args = peer.parser("Celery").parse_args()
    scenarios = args.scenario or ALL
    peer.table_header(args)
    failed = False
    for name in scenarios:
        queue = f"celery_bench_{RUN}_{name}"
        print(f"celery: {name} …", file=sys.stderr, flush=True)
        if name == "enqueue":
            out = scenario_enqueue(args, queue)
        elif name == "drain":
            out = scenario_drain(args, queue, "drain", args.tasks)
        elif name == "backlog":
            out = scenario_drain(args, queue, "backlog", args.backlog_tasks or args.tasks)
        elif name == "end-to-end":
            out = scenario_end_to_end(args, queue)
        elif name == "latency":
            out = scenario_latency(args, queue)
        elif name == "chord":
            out = scenario_chord(args, queue)
        elif name == "no-results":
            out = base(args, name, 0, 0)
            out["skipped"] = "completion cannot be observed without results"
        else:
            sys.exit(f"unknown scenario {name}")
        failed |= not out.get("verified", True)
        peer.emit(args, out)
    sys.stdout.flush()
    # Not sys.exit: Celery's pending AsyncResults unsubscribe from their pub/sub channels in
    # __del__ while the interpreter shuts down, printing a traceback that means nothing here.
    os._exit(1 if failed else 0)


if __name__ == "__main__":
    main()
