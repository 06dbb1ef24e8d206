"""Run K copies of one worker command as a single worker for run.py.

    python3 procs.py K ARGV...

Every "{i}" in ARGV is replaced by the copy's index (0..K-1), e.g. for the
distinct node names Celery wants.  SIGTERM/SIGINT are passed on to every
copy; exits when all have exited.  With K = 1 it execs the command itself.
run.py leaves this launcher out of the worker's CPU and memory.
"""
import os
import signal
import subprocess
import sys


def main():
    k = int(sys.argv[1])
    argv = sys.argv[2:]
    if k == 1:  # nothing to supervise: become the worker
        os.execvp(argv[0], [a.replace("{i}", "0") for a in argv])
    procs = [subprocess.Popen([a.replace("{i}", str(i)) for a in argv]) for i in range(k)]

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = 0
    for p in procs:
        while True:
            try:
                rc = max(rc, p.wait())
                break
            except InterruptedError:
                continue
    sys.exit(rc)


if __name__ == "__main__":
    main()
