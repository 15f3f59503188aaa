"""The huey side of the peer benchmark: Machinery's `add(int64, int64)` on SqliteHuey.
Configured from the environment by bench_huey.py."""

import os

from huey import SqliteHuey

huey = SqliteHuey(
    name=os.environ.get("BENCH_HUEY_NAME", "bench"),
    filename=os.environ["BENCH_HUEY_DB"],
)


@huey.task()
def add(a, b):
    return a + b


@huey.on_startup()
def _ready():
    path = os.environ.get("BENCH_READY_FILE")
    if path:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
