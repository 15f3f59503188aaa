"""Medians of the JSON lines bench/run-all.sh wrote, as the markdown tables of BENCHMARKS.md.

    python3 bench/summarize.py bench/results/<run>
"""

import glob
import json
import os
import statistics
import sys
from collections import defaultdict

ORDER = ["enqueue", "drain", "end-to-end", "no-results", "latency", "chord", "backlog"]
BROKERS = {
    "memory": ["memory"],
    "redis": ["redis", "redis-procs", "bullmq", "apalis", "celery"],
    "sqlite": ["sqlite", "sqlite-procs", "huey"],
    "amqp": ["amqp", "amqp-procs"],
    "backlog": ["backlog-memory", "backlog-redis", "backlog-redis-procs", "backlog-sqlite-procs"],
}
TITLES = {
    "memory": "In-memory",
    "redis": "Redis",
    "sqlite": "SQLite",
    "amqp": "AMQP (RabbitMQ broker, Redis results)",
    "backlog": "Backlog",
}


def variant(label, line):
    if line.get("peer") == "celery":
        return f"Celery {line.get('peer_version', '')} (prefork -c {line.get('concurrency')})"
    if line.get("peer") == "bullmq":
        return f"BullMQ {line.get('peer_version', '')} (one Node worker, concurrency {line.get('concurrency')})"
    if line.get("peer") == "apalis":
        return f"apalis {line.get('peer_version', '')} (apalis-redis, one worker process, concurrency {line.get('concurrency')})"
    if line.get("peer") == "huey":
        return f"huey {line.get('peer_version', '')} (SqliteHuey, -k process -w {line.get('concurrency')})"
    procs = line.get("worker_processes", 0)
    where = f"{procs} worker process{'es' if procs != 1 else ''}" if procs else "in-process"
    prefix = f"{line.get('broker')}, " if label.startswith("backlog") else ""
    return f"machinist ({prefix}{where}, c={line.get('concurrency')})"


def med(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(v, digits):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def main(directory):
    rows = defaultdict(list)  # (label, scenario) -> lines
    for path in sorted(glob.glob(os.path.join(directory, "*.jsonl"))):
        label = os.path.basename(path).split(".")[0]
        with open(path) as f:
            for text in f:
                text = text.strip()
                if text:
                    line = json.loads(text)
                    rows[(label, line["scenario"])].append(line)
    print(f"Medians of the runs in `{os.path.basename(os.path.normpath(directory))}`.\n")
    for broker, labels in BROKERS.items():
        present = [(l, s) for (l, s) in rows if l in labels]
        if not present:
            continue
        print(f"### {TITLES[broker]}\n")
        print(
            "| scenario | who | runs | tasks | tasks/s | raw floor/s | ratio | p50 ms | p99 ms "
            "| max ms | start p50 ms | peak RSS MB | CPU s/1000 tasks | checked |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for scenario in ORDER:
            for label in labels:
                lines = rows.get((label, scenario))
                if not lines:
                    continue
                first = lines[0]
                if first.get("skipped"):
                    print(f"| {scenario} | {variant(label, first)} | – | – | skipped: {first['skipped']} "
                          "| | | | | | | | | |")
                    continue
                ok = all(l.get("verified") for l in lines)
                rss = med([l.get("peak_rss_mb") for l in lines])
                rss_text = fmt(rss, 1)
                start = med([l.get("rss_start_mb") for l in lines])
                if start is not None:
                    rss_text = f"{fmt(start, 1)} → {rss_text}"
                print(
                    "| " + " | ".join([
                        scenario,
                        variant(label, first),
                        str(len(lines)),
                        f"{first['tasks']:,}",
                        fmt(med([l["tasks_per_sec"] for l in lines]), 0),
                        fmt(med([l.get("floor_tasks_per_sec") for l in lines]), 0),
                        fmt(med([l.get("ratio") for l in lines]), 2),
                        fmt(med([l.get("p50_ms") for l in lines]), 3),
                        fmt(med([l.get("p99_ms") for l in lines]), 3),
                        fmt(med([l.get("max_ms") for l in lines]), 3),
                        fmt(med([l.get("start_p50_ms") for l in lines]), 3),
                        rss_text,
                        fmt(med([l.get("cpu_s_per_1000") for l in lines]), 3),
                        "all ok" if ok else "**FAILED**",
                    ]) + " |"
                )
        print()
        server_table(rows, labels)


def server_table(rows, labels):
    """The Redis server's own work per task, where the bench read it (Redis brokers)."""
    lines_with = [
        (scenario, label, rows[(label, scenario)])
        for scenario in ORDER
        for label in labels
        if any(l.get("server_commands_per_task") is not None for l in rows.get((label, scenario), []))
    ]
    if not lines_with:
        return
    print(
        "What the Redis server did per task (its `INFO`, same runs, medians; the floor's is its "
        "pipelined push, pop and result write):\n"
    )
    print("| scenario | who | commands | CPU µs | floor's commands | floor's CPU µs |")
    print("|---|---|---|---|---|---|")
    for scenario, label, lines in lines_with:
        floor_cpu = med([l.get("floor_server_cpu_us_per_task") for l in lines])
        print(
            "| " + " | ".join([
                scenario,
                variant(label, lines[0]),
                fmt(med([l.get("server_commands_per_task") for l in lines]), 2),
                fmt(med([l.get("server_cpu_us_per_task") for l in lines]), 1),
                "3" if floor_cpu is not None else "–",
                fmt(floor_cpu, 1),
            ]) + " |"
        )
    print()


if __name__ == "__main__":
    main(sys.argv[1])
