#!/usr/bin/env bash
# huey (SqliteHuey) beside machinist's SQLite: the same add workload, the same fields.
#
#   bench/huey/run.sh [--tasks N] [--concurrency N] [--producers N] [--latency-tasks N]
#                     [--backlog-tasks N] [--scenario NAME]... [--json]
#
# Makes a virtualenv (bench/.venv-huey, or $BENCH_VENV) with huey from PyPI ($HUEY_SPEC to pin,
# default "huey"), runs bench_huey.py on a fresh SQLite file in a temp directory (removed after).
# Consumer: process workers, -w 2 by default (--concurrency).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib/common.sh"

venv="${BENCH_VENV:-$here/../.venv-huey}"
ensure_venv "$venv" "${HUEY_SPEC:-huey}"

dir="$(mktemp -d -t bench-huey-XXXXXX)"
trap 'rm -rf "$dir"' EXIT
export BENCH_HUEY_DB="$dir/huey.db"
"$venv/bin/python" "$here/bench_huey.py" "$@"
