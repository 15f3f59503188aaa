"""The Celery side of the peer benchmark: Machinery's `add(int64, int64)` and a chord callback
that sums its group's results. Configured from the environment by bench_celery.py."""

import os

from celery import Celery
from celery.signals import worker_ready

URL = os.environ["BENCH_REDIS_URL"]

app = Celery("celery_tasks", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="add")
def add(a, b):
    return a + b


@app.task(name="xsum")
def xsum(values):
    return sum(values)


@worker_ready.connect
def _ready(**_):
    path = os.environ.get("BENCH_READY_FILE")
    if path:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
