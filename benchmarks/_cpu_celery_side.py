"""Celery's prefork pool for ``bench_cpu.py``: the baseline Python users know for CPU-bound work.

``python _cpu_celery_side.py BROKER JOBS N CONCURRENCY TIMEOUT`` runs in a virtualenv of its own
with ``celery`` and ``redis`` (``bench_cpu.py`` says how to make it) and imports nothing from
bridge. It queues JOBS tasks that each run ``burn(N)``, then starts ``celery worker -P prefork
-c CONCURRENCY`` on them, waits until every task has run, stops the worker with SIGTERM (Celery's
warm shutdown) and prints one JSON line.

The figure is measured as bridge's is read from its rows: JOBS / (last task end - first task
start), each task noting its own start and end (wall clock) in a Redis list, so queueing and
worker start-up are not timed. Celery runs with its defaults (early acknowledgement, a prefetch
of 4 per child), what a user gets without tuning; early acks lose a running task when its child
dies, which an Oban job never is, so this is the kinder setting for Celery's throughput.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import celery  # type: ignore[import-not-found,unused-ignore]
import redis  # type: ignore[import-not-found,unused-ignore]
from celery import Celery  # type: ignore[import-not-found,unused-ignore]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _cpu_burn import burn  # noqa: E402

BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench_cpu")
DONE_KEY = f"{QUEUE}:done"

app = Celery("_cpu_celery_side", broker=BROKER)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="bench.burn")  # type: ignore[untyped-decorator,misc,unused-ignore]
def burn_task(n: int, i: int) -> None:
    """One job's body: the same burn as every other mode, timed by the task itself."""
    started = time.time()
    burn(n)
    redis.Redis.from_url(BROKER).rpush(DONE_KEY, f"{started} {time.time()}")


def main(broker: str, jobs: int, n: int, concurrency: int, timeout: float) -> dict[str, object]:
    store = redis.Redis.from_url(broker)
    store.delete(QUEUE, DONE_KEY)
    for i in range(jobs):
        burn_task.apply_async((n, i), queue=QUEUE)
    load_before = os.getloadavg()[0]
    env = dict(os.environ, BENCH_CELERY_BROKER=broker, BENCH_CELERY_QUEUE=QUEUE)
    env["PYTHONWARNINGS"] = "ignore"  # Celery warns when run as root, as benchmarks here are
    argv = [sys.executable, "-m", "celery", "-A", "_cpu_celery_side", "worker", "-P", "prefork"]
    argv += ["-c", str(concurrency), "-Q", QUEUE, "--loglevel", "WARNING"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = subprocess.Popen(argv, cwd=HERE, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while store.llen(DONE_KEY) < jobs and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    marks = [tuple(map(float, m.split())) for m in store.lrange(DONE_KEY, 0, -1)]
    store.delete(QUEUE, DONE_KEY)
    window = max(end for _, end in marks) - min(start for start, _ in marks) if marks else 0.0
    return {
        "completed": len(marks),
        "finished": len(marks) >= jobs,
        "window_s": round(window, 3),
        "jobs_per_s": round(jobs / window, 1) if window else 0.0,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "celery": celery.__version__,
    }


if __name__ == "__main__":
    broker_url, count, rounds, children, seconds = sys.argv[1:6]
    result = main(broker_url, int(count), int(rounds), int(children), float(seconds))
    print(json.dumps(result), flush=True)
