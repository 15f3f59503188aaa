#!/usr/bin/env bash
# Celery beside machinist: the same add workload on a private redis-server, the same fields.
#
#   bench/celery/run.sh [--tasks N] [--concurrency N] [--producers N] [--latency-tasks N]
#                       [--backlog-tasks N] [--chord-size N] [--scenario NAME]... [--json]
#
# Makes a virtualenv (bench/.venv-celery, or $BENCH_VENV) with celery[redis] from PyPI
# ($CELERY_SPEC to pin, default "celery[redis]"), starts redis-server on a free loopback port
# (or uses $BENCH_REDIS_URL when set), runs bench_celery.py, and stops the server.
# Worker: prefork pool, -c 2 by default (--concurrency).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib/common.sh"

venv="${BENCH_VENV:-$here/../.venv-celery}"
ensure_venv "$venv" "${CELERY_SPEC:-celery[redis]}"

trap stop_private_redis EXIT
if [ -z "${BENCH_REDIS_URL:-}" ]; then
    start_private_redis
    BENCH_REDIS_URL="$REDIS_URL"
fi
export BENCH_REDIS_URL
"$venv/bin/python" "$here/bench_celery.py" "$@"
