#!/usr/bin/env bash
# apalis beside machinist: the same add workload on a private redis-server, the same fields.
#
#   bench/apalis/run.sh [--tasks N] [--concurrency N] [--producers N] [--latency-tasks N]
#                       [--backlog-tasks N] [--scenario NAME]... [--json]
#
# Builds bench/apalis (its own Cargo package and workspace: apalis and apalis-redis at the
# versions its Cargo.lock pins) with `cargo build --release` into $CARGO_TARGET_DIR (default
# bench/.target-apalis); starts redis-server on a free loopback port (or uses $BENCH_REDIS_URL
# when set), runs the bench, and stops the server. Worker: one process (the same binary,
# `worker` mode) with apalis's Redis storage, concurrency 64 by default (--concurrency);
# 16 producers. apalis has no result backend: the worker SETs each result itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib/common.sh"

target="${CARGO_TARGET_DIR:-$here/../.target-apalis}"
CARGO_TARGET_DIR="$target" cargo build --release --quiet --manifest-path "$here/Cargo.toml"

trap stop_private_redis EXIT
if [ -z "${BENCH_REDIS_URL:-}" ]; then
    start_private_redis
    BENCH_REDIS_URL="$REDIS_URL"
fi
export BENCH_REDIS_URL
"$target/release/machinist-bench-apalis" "$@"
