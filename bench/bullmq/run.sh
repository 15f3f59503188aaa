#!/usr/bin/env bash
# BullMQ beside machinist: the same add workload on a private redis-server, the same fields.
#
#   bench/bullmq/run.sh [--tasks N] [--concurrency N] [--producers N] [--latency-tasks N]
#                       [--backlog-tasks N] [--scenario NAME]... [--json]
#
# Installs bullmq from npm ($BULLMQ_SPEC to pin, default "bullmq") with ioredis, its Redis
# client ($IOREDIS_SPEC, default "ioredis@5": an optional peer dependency since BullMQ 6, so
# npm does not bring it; 5 is the major BullMQ tests with), into bench/.node-bullmq (or
# $BENCH_NODE_DIR) unless already there (a given spec installs again); starts redis-server on a
# free loopback port (or uses $BENCH_REDIS_URL when set), runs bench_bullmq.cjs, and stops the
# server. Worker: one Node process, concurrency 64 by default (--concurrency); 16 producers.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib/common.sh"

command -v node >/dev/null && command -v npm >/dev/null \
    || { echo "bench/bullmq: node and npm must be on PATH" >&2; exit 2; }
dir="${BENCH_NODE_DIR:-$here/../.node-bullmq}"
if [ -n "${BULLMQ_SPEC:-}${IOREDIS_SPEC:-}" ] || [ ! -f "$dir/node_modules/bullmq/package.json" ] \
    || [ ! -f "$dir/node_modules/ioredis/package.json" ]; then
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent \
        "${BULLMQ_SPEC:-bullmq}" "${IOREDIS_SPEC:-ioredis@5}"
fi

trap stop_private_redis EXIT
if [ -z "${BENCH_REDIS_URL:-}" ]; then
    start_private_redis
    BENCH_REDIS_URL="$REDIS_URL"
fi
export BENCH_REDIS_URL
NODE_PATH="$dir/node_modules" node "$here/bench_bullmq.cjs" "$@"
