"""RQ peer for run.py: the no-op job, a worker pool, and the client side.

Worker (started by run.py, as many copies as the concurrency, through
procs.py: RQ 1.13 has no worker pool of its own):
    python3 rq_peer.py worker [simple|fork]
  an RQ worker on queue "bench": SimpleWorker by default (runs jobs
  in-process), "fork" = RQ's default Worker (forks a work horse per job).
Client:
    python3 rq_peer.py enqueue-one N [WARM] | enqueue-bulk N BATCH [WARM]
                     | latency M RATE
  WARM tasks (default 1) are enqueued, untimed, before the N timed ones (one
  batch of WARM for enqueue-bulk); all are counted in "enqueued".
Environment: BENCH_REDIS_URL, BENCH_STAMP_DIR (worker side).
Each client command prints one JSON line on stdout.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from redis import Redis  # noqa: E402
from rq import Queue, SimpleWorker, Worker  # noqa: E402

import stamp  # noqa: E402

QUEUE = "bench"
LAT_WARM = 20  # untimed tasks the latency client sends first
FUNC = "rq_peer.noop"  # by name, so the worker imports this module


def noop(t_enq=0.0):
    return stamp.record(t_enq)


def _conn():
    return Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


def _print(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker(kind):
    conn = _conn()
    cls = SimpleWorker if kind == "simple" else Worker
    cls([Queue(QUEUE, connection=conn)], connection=conn).work(logging_level="WARNING")


def main(argv):
    cmd = argv[1]
    if cmd == "worker":
        worker(argv[2] if len(argv) > 2 else "simple")
        return
    q = Queue(QUEUE, connection=_conn())
    if cmd == "enqueue-one":
        n = int(argv[2])
        warm = int(argv[3]) if len(argv) > 3 else 1
        for _ in range(warm):
            q.enqueue(FUNC, 0.0)
        t0 = time.monotonic()
        for _ in range(n):
            q.enqueue(FUNC, 0.0)
        dt = time.monotonic() - t0
        _print({"n": n, "seconds": dt, "enqueued": n + warm})
    elif cmd == "enqueue-bulk":
        n, batch = int(argv[2]), int(argv[3])
        warm = int(argv[4]) if len(argv) > 4 else 1
        q.enqueue_many([Queue.prepare_data(FUNC, (0.0,)) for _ in range(warm)])
        t0 = time.monotonic()
        done = 0
        while done < n:
            k = min(batch, n - done)
            q.enqueue_many([Queue.prepare_data(FUNC, (0.0,)) for _ in range(k)])
            done += k
        dt = time.monotonic() - t0
        _print({"n": n, "seconds": dt, "enqueued": n + warm, "batch": batch})
    elif cmd == "latency":
        m, rate = int(argv[2]), float(argv[3])
        for _ in range(LAT_WARM):
            q.enqueue(FUNC, 0.0)
        gap = 1.0 / rate
        nxt = time.monotonic()
        for _ in range(m):
            nxt += gap
            q.enqueue(FUNC, time.monotonic())
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
        _print({"n": m, "enqueued": m + LAT_WARM})
    else:
        raise SystemExit("unknown command %r" % cmd)


if __name__ == "__main__":
    main(sys.argv)
