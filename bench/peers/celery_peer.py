"""Celery peer for run.py: the Celery app, its no-op task, and the client side.

Worker (started by run.py):
    python3 -m celery -A celery_peer worker -Q bench -c 2 -P prefork ...
Client:
    python3 celery_peer.py enqueue-one N | enqueue-bulk N BATCH | latency M RATE
Environment: BENCH_REDIS_URL (broker), BENCH_STAMP_DIR (worker side),
BENCH_CELERY_BACKEND (result backend URL; unset = Celery's default, none).
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
app = Celery("celer_bench_peer", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
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
        noop.delay(0.0)  # warm-up: opens the producer connection; counted in "enqueued"
        t0 = time.monotonic()
        for _ in range(n):
            noop.delay(0.0)
        dt = time.monotonic() - t0
        _print({"n": n, "seconds": dt, "enqueued": n + 1})
    elif cmd == "enqueue-bulk":
        # Celery has no bulk enqueue: group().apply_async() and chunks() still
        # publish one message per task (chunks makes fewer, bigger tasks).
        _print({"bulk": None, "why": "Celery has no bulk enqueue API"})
    elif cmd == "latency":
        m, rate = int(argv[2]), float(argv[3])
        noop.delay(0.0)
        gap = 1.0 / rate
        nxt = time.monotonic()
        for _ in range(m):
            nxt += gap
            noop.delay(time.monotonic())
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
        _print({"n": m, "enqueued": m + 1})
    else:
        raise SystemExit("unknown command %r" % cmd)


if __name__ == "__main__":
    main(sys.argv)
