# Sourced by the bench scripts: a private redis-server and a Python virtualenv.
#
#   start_private_redis     starts redis-server on a free loopback port in a temp directory
#                           (no persistence); sets REDIS_PORT, REDIS_URL; stopped by
#                           stop_private_redis (the scripts call it from an EXIT trap).
#   amqp_up                 true when something answers at AMQP_URL's host and port.
#   ensure_venv DIR PKG...  makes DIR a virtualenv (python3 -m venv) and pip-installs PKG...
#                           from PyPI into it unless already there.

BENCH_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_private_redis() {
    command -v redis-server >/dev/null || { echo "redis-server not found on PATH" >&2; return 1; }
    REDIS_DIR="$(mktemp -d -t bench-redis-XXXXXX)"
    REDIS_PORT="$(free_port)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 500); do
        if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
            REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
            export REDIS_PORT REDIS_URL
            return 0
        fi
        sleep 0.02
    done
    echo "redis-server did not start; its log:" >&2
    cat "$REDIS_DIR/redis.log" >&2
    return 1
}

stop_private_redis() {
    if [ -n "${REDIS_PID:-}" ]; then
        redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$REDIS_PID" 2>/dev/null
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=
    fi
    if [ -n "${REDIS_DIR:-}" ]; then
        rm -rf "$REDIS_DIR"
        REDIS_DIR=
    fi
}

amqp_up() {
    local hp="${AMQP_URL#*://}"
    hp="${hp%%/*}"
    hp="${hp##*@}"
    [[ "$hp" == *:* ]] || hp="$hp:5672"
    (exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null
}

ensure_venv() {
    local dir="$1"
    shift
    if [ ! -x "$dir/bin/python" ]; then
        python3 -m venv "$dir"
        "$dir/bin/pip" install --quiet --upgrade pip
    fi
    "$dir/bin/pip" install --quiet "$@"
}
