#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md in one go: builds machinist in release, starts a private
# redis-server, and runs `machinist bench` on memory, SQLite and Redis (in-process workers and
# worker processes) plus the peers (Celery, BullMQ and apalis on the same Redis, huey on
# SQLite), REPEAT times each; then the 1,000,000-task backlogs once. Results go to OUT
# (default bench/results/<UTC date-time>): one JSON line per scenario in <label>.<run>.jsonl,
# the machine description in machine.txt, the medians as markdown in summary.md.
#
#   bench/run-all.sh [OUT]
#
# Environment: TASKS (machinist tasks per scenario, 50000), PEER_TASKS (Celery and huey, 5000;
# they run about 500 tasks/s), RUST_NODE_TASKS (BullMQ and apalis, 20000: one worker process
# with concurrency CONCURRENCY and PRODUCERS producers, as machinist's), BACKLOG (1000000; 0
# skips the backlog runs), REPEAT (3), CONCURRENCY (64), PRODUCERS (16), PROCESSES (worker
# processes of the `-procs` runs, 2), PEER_CONCURRENCY (Celery prefork / huey process workers,
# 2), SKIP_PEERS=1, AMQP_URL (the RabbitMQ of the AMQP runs, default
# amqp://guest:guest@127.0.0.1:5672/; skipped when nothing answers; results go to the private
# Redis; the run's queues expire 10 minutes after use), ONLY (labels to run, peers' included,
# e.g. ONLY="memory redis amqp" or ONLY="redis-procs bullmq apalis"; the labels are the result
# files' names).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/bench/lib/common.sh"

out="${1:-$root/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
TASKS="${TASKS:-50000}"
PEER_TASKS="${PEER_TASKS:-5000}"
RUST_NODE_TASKS="${RUST_NODE_TASKS:-20000}"
BACKLOG="${BACKLOG:-1000000}"
REPEAT="${REPEAT:-3}"
CONCURRENCY="${CONCURRENCY:-64}"
PRODUCERS="${PRODUCERS:-16}"
PROCESSES="${PROCESSES:-2}"
PEER_CONCURRENCY="${PEER_CONCURRENCY:-2}"

echo "building machinist (release) …" >&2
(cd "$root" && cargo build --release --quiet -p machinist-cli)
machinist="${CARGO_TARGET_DIR:-$root/target}/release/machinist"

tmp="$(mktemp -d -t bench-all-XXXXXX)"
cleanup() {
    stop_private_redis
    rm -rf "$tmp"
}
trap cleanup EXIT
start_private_redis

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "ram: $(free -h | awk '/^Mem:/ {print $2}')"
    echo "kernel: $(uname -sr)"
    echo "redis-server: $(redis-server --version)"
    echo "rabbitmq: $(rabbitmqctl version 2>/dev/null || echo 'not found')"
    echo "rustc: $(rustc --version)"
    echo "sqlite (bundled by rusqlite): $(grep -A1 'name = "libsqlite3-sys"' "$root/Cargo.lock" | sed -n 's/version = "\(.*\)"/libsqlite3-sys \1/p')"
    echo "python: $(python3 --version 2>&1)"
    echo "machinist: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "settings: TASKS=$TASKS PEER_TASKS=$PEER_TASKS BACKLOG=$BACKLOG REPEAT=$REPEAT CONCURRENCY=$CONCURRENCY PRODUCERS=$PRODUCERS PROCESSES=$PROCESSES PEER_CONCURRENCY=$PEER_CONCURRENCY"
} > "$out/machine.txt"
cat "$out/machine.txt" >&2

# bench LABEL RUN ARGS...: one `machinist bench` run, its JSON lines to LABEL.RUN.jsonl, the
# command line to commands.txt.
bench() {
    local label="$1" run="$2"
    shift 2
    if [[ -n "${ONLY:-}" && " $ONLY " != *" $label "* ]]; then
        return 0
    fi
    local args=(--json --concurrency "$CONCURRENCY" --producers "$PRODUCERS" "$@")
    echo "machinist bench ${args[*]}" >> "$out/commands.txt"
    echo "== $label run $run" >&2
    "$machinist" bench "${args[@]}" > "$out/$label.$run.jsonl"
}

# A peer's script (relative to the repository), its JSON lines in <label>.<run>.jsonl; skipped
# like a machinist run when ONLY does not name it. BENCH_REDIS_URL, when set, is passed on.
peer() {
    local label="$1" run="$2" script="$3"
    shift 3
    if [[ -n "${ONLY:-}" && " $ONLY " != *" $label "* ]]; then
        return 0
    fi
    echo "${BENCH_REDIS_URL:+BENCH_REDIS_URL=$BENCH_REDIS_URL }$script $*" >> "$out/commands.txt"
    echo "== $label run $run" >&2
    "$root/$script" "$@" > "$out/$label.$run.jsonl"
}

AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"

: > "$out/commands.txt"
for run in $(seq 1 "$REPEAT"); do
    bench memory "$run" --broker memory --tasks "$TASKS"
    rm -f "$tmp"/sqlite.db*
    bench sqlite "$run" --broker "sqlite://$tmp/sqlite.db" --tasks "$TASKS"
    rm -f "$tmp"/sqlite.db*
    bench sqlite-procs "$run" --broker "sqlite://$tmp/sqlite.db" --tasks "$TASKS" \
        --worker-processes "$PROCESSES"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    bench redis "$run" --broker "$REDIS_URL" --tasks "$TASKS"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    bench redis-procs "$run" --broker "$REDIS_URL" --tasks "$TASKS" \
        --worker-processes "$PROCESSES"
    if amqp_up; then
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
        RESULTS_EXPIRE_IN=600 AMQP_QUEUE_DECLARE_ARGS=x-expires:600000 \
            bench amqp "$run" --broker "$AMQP_URL" --result-backend "$REDIS_URL" --tasks "$TASKS"
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
        RESULTS_EXPIRE_IN=600 AMQP_QUEUE_DECLARE_ARGS=x-expires:600000 \
            bench amqp-procs "$run" --broker "$AMQP_URL" --result-backend "$REDIS_URL" \
            --tasks "$TASKS" --worker-processes "$PROCESSES"
    fi
    if [ -z "${SKIP_PEERS:-}" ]; then
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
        BENCH_REDIS_URL="$REDIS_URL" peer celery "$run" bench/celery/run.sh \
            --tasks "$PEER_TASKS" --concurrency "$PEER_CONCURRENCY" --json
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
        if command -v npm >/dev/null; then
            BENCH_REDIS_URL="$REDIS_URL" peer bullmq "$run" bench/bullmq/run.sh \
                --tasks "$RUST_NODE_TASKS" --concurrency "$CONCURRENCY" --producers "$PRODUCERS" --json
        else
            echo "== bullmq skipped: no npm (Node.js) on PATH" >&2
        fi
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
        BENCH_REDIS_URL="$REDIS_URL" peer apalis "$run" bench/apalis/run.sh \
            --tasks "$RUST_NODE_TASKS" --concurrency "$CONCURRENCY" --producers "$PRODUCERS" --json
        peer huey "$run" bench/huey/run.sh --tasks "$PEER_TASKS" \
            --concurrency "$PEER_CONCURRENCY" --json
    fi
done

if [ "$BACKLOG" -gt 0 ]; then
    bench backlog-memory 1 --broker memory --scenario backlog --backlog-tasks "$BACKLOG"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    bench backlog-redis 1 --broker "$REDIS_URL" --scenario backlog --backlog-tasks "$BACKLOG" \
        --no-floor
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    bench backlog-redis-procs 1 --broker "$REDIS_URL" --scenario backlog \
        --backlog-tasks "$BACKLOG" --worker-processes 1 --no-floor
    rm -f "$tmp"/sqlite.db*
    bench backlog-sqlite-procs 1 --broker "sqlite://$tmp/sqlite.db" --scenario backlog \
        --backlog-tasks "$BACKLOG" --worker-processes 1
fi

python3 "$root/bench/summarize.py" "$out" > "$out/summary.md"
echo "results in $out (summary.md)" >&2
