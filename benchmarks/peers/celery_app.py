"""The Celery app of the Celery peer (the worker subprocess imports it by name)."""

from __future__ import annotations

import os

from celery import Celery

_URL = os.environ.get("BENCH_CELERY_URL", "redis://127.0.0.1:6379/1")

app = Celery("durable_bench", broker=_URL, backend=_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue="bench-celery",
)


@app.task(name="bench.hop")
def hop(x: int) -> int:
    return x + 1
