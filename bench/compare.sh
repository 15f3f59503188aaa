#!/usr/bin/env bash
# Before → after: two `machinist` binaries (say, release builds of two commits) run the same
# scenarios alternately, ROUNDS times, on one private redis-server and the local RabbitMQ, so
# that both see the same machine in the same minutes. Prints one line per run: label, binary,
# tasks/s, the floor and the ratio, CPU seconds per 1,000 tasks, peak RSS.
#
#   bench/compare.sh BEFORE_BINARY AFTER_BINARY
#
# Environment: TASKS (30000), ROUNDS (2), CONCURRENCY (64), PRODUCERS (16), AMQP_URL (default
# amqp://guest:guest@127.0.0.1:5672/; the AMQP runs are skipped when nothing answers),
# ONLY (labels to run: memory, redis, redis-procs, sqlite, amqp, amqp-procs; default all).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/bench/lib/common.sh"

before="${1:?usage: bench/compare.sh BEFORE_BINARY AFTER_BINARY}"
after="${2:?usage: bench/compare.sh BEFORE_BINARY AFTER_BINARY}"
TASKS="${TASKS:-30000}"
ROUNDS="${ROUNDS:-2}"
CONCURRENCY="${CONCURRENCY:-64}"
PRODUCERS="${PRODUCERS:-16}"
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"

tmp="$(mktemp -d -t bench-compare-XXXXXX)"
cleanup() {
    stop_private_redis
    rm -rf "$tmp"
}
trap cleanup EXIT
start_private_redis

# run LABEL BINARY ARGS...: one end-to-end run, summarised on one line (named by $which).
run() {
    local label="$1" bin="$2"
    shift 2
    if [[ -n "${ONLY:-}" && " $ONLY " != *" $label "* ]]; then
        return 0
    fi
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    rm -f "$tmp"/sqlite.db*
    "$bin" bench --json --scenario end-to-end --tasks "$TASKS" --concurrency "$CONCURRENCY" \
        --producers "$PRODUCERS" "$@" |
        python3 -c '
import json, sys
label, name = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    d = json.loads(line)
    tps = d.get("tasks_per_sec") or 0
    floor = d.get("floor_tasks_per_sec")
    floor = "-" if floor is None else format(floor, ",.0f")
    ratio = d.get("ratio")
    ratio = "-" if ratio is None else format(ratio, ".2f")
    cpu = d.get("cpu_s_per_1000") or 0
    rss = d.get("peak_rss_mb") or 0
    print(f"{label:12} {name:7} {tps:>10,.0f} tasks/s  floor {floor:>9}  ratio {ratio:>5}"
          f"  cpu/1000 {cpu:.3f} s  rss {rss:.1f} MB")
' "$label" "$which"
}

for round in $(seq 1 "$ROUNDS"); do
    for which in before after; do
        bin="$before"
        [[ $which == after ]] && bin="$after"
        run memory "$bin" --broker memory
        run sqlite "$bin" --broker "sqlite://$tmp/sqlite.db"
        run redis "$bin" --broker "$REDIS_URL"
        run redis-procs "$bin" --broker "$REDIS_URL" --worker-processes 2
        if amqp_up; then
            RESULTS_EXPIRE_IN=600 AMQP_QUEUE_DECLARE_ARGS=x-expires:600000 \
                run amqp "$bin" --broker "$AMQP_URL" --result-backend "$REDIS_URL"
            RESULTS_EXPIRE_IN=600 AMQP_QUEUE_DECLARE_ARGS=x-expires:600000 \
                run amqp-procs "$bin" --broker "$AMQP_URL" --result-backend "$REDIS_URL" \
                --worker-processes 2
        fi
    done
done
