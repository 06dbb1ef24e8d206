"""Celery peer for run.py: the Celery app, its no-op task, and the client side.

Worker (started by run.py):
    python3 -m celery -A celery_peer worker -Q bench -c 2 -P prefork ...
Client:
    python3 celery_peer.py enqueue-one N [WARM] | enqueue-bulk N BATCH [WARM]
                         | latency M RATE
  WARM tasks (default 1) are enqueued, untimed, before the N timed ones, so
  that connections are open and the code is warm; all are in "enqueued".
Environment: BENCH_REDIS_URL (broker), BENCH_STAMP_DIR (worker side),
BENCH_CELERY_BACKEND (result backend URL; unset = Celery's default, none),
BENCH_CELERY_ACKS_LATE=1 (task_acks_late, for the one-task-per-fetch drain).
Each client command prints one JSON line on stdout.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from celery import Celery  # noqa: E402

import stamp  # noqa: E402

QUEUE = "bench"
LAT_WARM = 20  # untimed tasks the latency client sends first
app = Celery("celer_bench_peer", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if os.environ.get("BENCH_CELERY_ACKS_LATE"):  # run.py's one-task-per-fetch drain
    app.conf.task_acks_late = True
if os.environ.get("BENCH_CELERY_BACKEND"):
    app.conf.result_backend = os.environ["BENCH_CELERY_BACKEND"]


@app.task(name="bench.noop")
def noop(t_enq=0.0):
    return stamp.record(t_enq)


def _print(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv):
    cmd = argv[1]
    if cmd == "enqueue-one":
        n = int(argv[2])
        warm = int(argv[3]) if len(argv) > 3 else 1
        for _ in range(warm):
            noop.delay(0.0)
        t0 = time.monotonic()
        for _ in range(n):
            noop.delay(0.0)
        dt = time.monotonic() - t0
        _print({"n": n, "seconds": dt, "enqueued": n + warm})
    elif cmd == "enqueue-bulk":
        # Celery has no bulk enqueue: group().apply_async() and chunks() still
        # publish one message per task (chunks makes fewer, bigger tasks).
        _print({"bulk": None, "why": "Celery has no bulk enqueue API"})
    elif cmd == "latency":
        m, rate = int(argv[2]), float(argv[3])
        for _ in range(LAT_WARM):
            noop.delay(0.0)
        gap = 1.0 / rate
        nxt = time.monotonic()
        for _ in range(m):
            nxt += gap
            noop.delay(time.monotonic())
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
        _print({"n": m, "enqueued": m + LAT_WARM})
    else:
        raise SystemExit("unknown command %r" % cmd)


if __name__ == "__main__":
    main(sys.argv)
