"""What a no-op benchmark task records, for the Python peers (Celery, RQ).

Every task calls record(t_enq).  Per worker process this keeps, in a 24-byte
file mapped into memory under $BENCH_STAMP_DIR, the number of tasks run, the
CLOCK_MONOTONIC time the first one started and the time the last one ended.
Writing the mapping costs no system call, so the task stays a no-op as far as
the measured CPU goes; run.py reads the files to see progress.  When t_enq is
non-zero (latency workload) the enqueue->start delay is also appended, one
line per task, to lat-<pid>.txt in the same directory.

The layout (little-endian int64 count, double first, double last) is shared
with the Ruby and Node recorders in sidekiq_peer.rb and bullmq_peer.js.
"""
import mmap
import os
import struct
import time

_LAYOUT = struct.Struct("<qdd")
_state = None


def _reset_after_fork():
    global _state
    _state = None


os.register_at_fork(after_in_child=_reset_after_fork)


def _open():
    d = os.environ.get("BENCH_STAMP_DIR")
    if not d:
        return False
    pid = os.getpid()
    fd = os.open(os.path.join(d, "stamp-%d" % pid), os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, _LAYOUT.size)
    m = mmap.mmap(fd, _LAYOUT.size)
    os.close(fd)
    return [m, 0, 0.0, None, os.path.join(d, "lat-%d.txt" % pid)]


def record(t_enq=0.0):
    global _state
    start = time.monotonic()
    st = _state
    if st is None:
        st = _state = _open()
    if not st:
        return None
    if t_enq:
        if st[3] is None:
            st[3] = open(st[4], "a", buffering=1)
        st[3].write("%.9f\n" % (start - t_enq))
    if st[1] == 0:
        st[2] = start
    st[1] += 1
    # last = "now": the task body is empty, so it ends where it starts.
    _LAYOUT.pack_into(st[0], 0, st[1], st[2], time.monotonic())
    return None
