#!/usr/bin/python3
"""Celer's peers side by side: Celery, RQ, Sidekiq and BullMQ on one Redis.

HOW TO RUN
    make bench-peers
        builds, runs `build/bin/celer-bench all --json build/bench/celer.json`,
        then this runner (build/bench/peers.json), then the comparison table
        (compare.py).  CELER_BENCH_ARGS=... and BENCH_PEERS_ARGS=... pass
        options to each, e.g. make bench-peers BENCH_PEERS_ARGS="--n 2000 --reps 1"
    /usr/bin/python3 bench/peers/run.py [--n 10000] [--reps 3]
        [--peers celery,rq,sidekiq,bullmq] [--out FILE.json]
        [--celer CELER.json]    # also print the comparison with Celer
        [--no-install] [--tcp] [--keep-tmp] [peer options, see --help]
    /usr/bin/python3 bench/peers/compare.py PEERS.json CELER.json
        the comparison table alone, from two reports

    Use Debian's /usr/bin/python3: python3-celery and python3-rq are Debian
    packages and only that interpreter sees them.  Any working directory.
    The default run (4 peers, N 10000, 3 repetitions) takes about 3 minutes
    on 2 cores.  Exit status 0 when every peer ran, 1 when one failed (the
    others are still measured and reported), 2 on a set-up error.

WHAT IT INSTALLS (unless --no-install), as root or through sudo, on Debian
12: the missing ones of python3-celery (+ python3-redis, which it only
suggests), python3-rq, ruby-sidekiq and redis-server (nodejs and npm too
when `node`/`npm` are not on PATH) with apt-get update, then apt-get
install -y; and BullMQ (with ioredis, its driver) by `npm ci` into
bench/peers/node_modules from the committed package.json and
package-lock.json.  A peer that cannot be installed is
reported as failed with what the package manager said.

WHAT IT MEASURES
    It starts its own redis-server in a temporary directory, on a Unix socket
    there like celer-bench's (--tcp: 127.0.0.1 on a free port), and stops it
    by PID at the end, also on failure, SIGTERM or Ctrl-C.  For each peer and
    each repetition, with a FLUSHALL between steps:
      enqueue_bulk   N tasks through the peer's bulk API in batches of --batch
                     (RQ enqueue_many, Sidekiq push_bulk, BullMQ addBulk;
                     Celery has none: "none").  tasks/s.
      enqueue_one    N tasks, one API call each (Celery delay, RQ enqueue,
                     Sidekiq perform_async, BullMQ add awaited one by one).
                     Each client first sends --warmup untimed tasks so its
                     connection is open and its runtime warm.
      drain          the N + warm-up tasks enqueue_one left queued; then the
                     worker is started; tasks/s from the first task's start to
                     the last task's end (times the tasks record themselves).
      drain_fair     --fair-n tasks (enqueued untimed, in bulk where the peer
                     can) drained by the peer's one-task-per-fetch
                     configuration: Celery 1 prefork
                     worker -c 2 with prefetch multiplier 1 and task_acks_late,
                     BullMQ concurrency 2; RQ and Sidekiq always fetch one task
                     at a time, so theirs is the drain above.  A fair drain
                     not done within --fair-limit seconds is reported as the
                     rate over that window and marked "*" (stalled): Celery's
                     does that now and then (celery/celery#4378, #7718).
      redis_cpu      Redis CPU (INFO cpu used_cpu_user + used_cpu_sys deltas)
                     over enqueue_one plus the drain (worker spawn to last
                     task), per task; the enqueue part is reported apart.
      worker_cpu     CPU of the worker's process tree (run time of all its
                     threads, /proc/PID/task/TID/schedstat, ns; plus children
                     it reaped) from the first task's start to the last task's
                     end, per task: the worker's start-up is left out.
      worker_rss     peak of the summed VmRSS of the worker's processes during
                     the drain, sampled every 50 ms; PSS (shared pages split
                     among the processes) beside it.
      latency        a fresh worker, warmed with 20 tasks, then idle;
                     --latency-n tasks enqueued one at a time at
                     --latency-rate/s, each carrying its enqueue time
                     (CLOCK_MONOTONIC, read just before the API call); the task
                     records its start; p50/p99 of start - enqueue, in ms.
    The task is a no-op that records its count and first-start/last-end
    times into a memory-mapped file (Python, stamp.py) or into a file a 5 ms
    timer rewrites (Ruby, Node).  Results are stored where each system stores
    them by default: Celery has no result backend unless configured (none);
    RQ keeps the return value in the job hash (result_ttl 500 s); Sidekiq
    stores none; BullMQ keeps completed jobs with their return value.
    Workers are run as children in their own process group and stopped by
    PID (SIGTERM; SIGKILL to the group after 15 s).

PEER CONFIG: the best found on this 2-core machine at concurrency 2 (see
--help for the options that change each):
    celery   2 worker processes with the solo pool (tasks run in the consumer
             process), prefetch multiplier 16, -O fair, --without-gossip
             --without-mingle --without-heartbeat, log level WARNING.
             (Measured: 1 prefork worker -c 2 drains ~1,400/s, its single
             consumer process being the bottleneck; 2 solo ~3,400-4,400/s;
             prefetch 4..64 alike, 256 slower.)
    rq       2 SimpleWorker processes (jobs run in-process), log WARNING.
             (RQ's default Worker forks a work horse per job: ~170/s.)
    sidekiq  1 process, -c 2 threads, logger WARN, RUBYOPT "--yjit
             --yjit-exec-mem-size=16" (YJIT: ~22k/s against ~19k without;
             Ruby 3.1 commits its whole code area, 256 MiB by default, hence
             the 16 MiB cap; -c 4 or 10 no faster).
    bullmq   1 Node process, Worker concurrency 16 (jobs in flight in its one
             event loop: ~5,300/s at 2, ~10,900/s at 16-64; a second process
             is slower on 2 cores).
    Every peer logs at WARNING: per-task log lines are not what is compared.

OUTPUT
    A table on stdout, and JSON in --out (default build/bench/peers.json):
      {"schema": "celer-bench-peers/1", "machine": {...}, "params": {...},
       "seconds": S, "peers": {"celery": {"version", "config", "ok",
       "errors": [...], "seconds", "metrics": {NAME: {"median", "min",
       "max", "runs": [...], "unit"}}}, ...}}
    Metric names: enqueue_one_tps, enqueue_bulk_tps (median null = no bulk
    API), drain_tps, drain_fair_tps (+ drain_fair_stalled: {"runs": [text]}
    when it stalled), redis_cpu_us_per_task, redis_cpu_enqueue_us_per_task,
    redis_cpu_drain_us_per_task, worker_cpu_us_per_task, latency_p50_ms,
    latency_p99_ms, worker_rss_mib, worker_pss_mib, keys_after_drain.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
PEERS = ["celery", "rq", "sidekiq", "bullmq"]
# python3-redis: Celery's Redis transport needs it and python3-celery only suggests it.
APT_PACKAGES = {"celery": ["python3-celery", "python3-redis"], "rq": ["python3-rq"],
                "sidekiq": ["ruby-sidekiq"], "bullmq": ["nodejs", "npm"]}
STAMP = struct.Struct("<qdd")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    sys.stderr.write("[bench-peers] %s\n" % msg)
    sys.stderr.flush()


class BenchError(Exception):
    pass


# --------------------------------------------------------------- install --

def _sudo():
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo"]
    raise BenchError("not root and no sudo: cannot install packages")


def _installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                       capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


_apt_updated = []


def apt_install(pkgs):
    """apt-get install -y the PKGS that are missing, after one apt-get update
    per run.  Returns (ok, what apt said when it failed)."""
    missing = [p for p in pkgs if not _installed(p)]
    if not missing:
        return True, ""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        log("apt-get update")
        u = subprocess.run(_sudo() + ["apt-get", "update", "-q"], env=env,
                           capture_output=True, text=True)
        _apt_updated.append(u.returncode)
    log("apt-get install -y %s" % " ".join(missing))
    r = subprocess.run(_sudo() + ["apt-get", "install", "-y", "-q"] + missing,
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        said = (r.stderr.strip() or r.stdout.strip()).splitlines()[-5:]
        return False, "apt-get install %s: %s" % (" ".join(missing), " | ".join(said))
    return True, ""


def npm_install():
    def version(path, key=None):
        try:
            with open(os.path.join(HERE, path)) as f:
                d = json.load(f)
            return d["packages"][key]["version"] if key else d["version"]
        except (OSError, ValueError, KeyError):
            return None
    want = [version("package-lock.json", "node_modules/" + m) for m in ("bullmq", "ioredis")]
    have = [version(os.path.join("node_modules", m, "package.json")) for m in ("bullmq", "ioredis")]
    if None not in have and have == want:
        return True, ""
    if not shutil.which("npm"):
        return False, "npm not found"
    log("npm ci in %s" % HERE)
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE,
                       capture_output=True, text=True)
    if r.returncode != 0:
        said = (r.stderr.strip() or r.stdout.strip()).splitlines()[-5:]
        return False, "npm ci: %s" % " | ".join(said)
    return True, ""


def install(peers):
    """Returns {peer: error string} for peers that could not be installed."""
    failed = {}
    ok, why = apt_install(["redis-server"])
    if not ok:
        raise BenchError(why)
    for p in peers:
        if p == "bullmq" and shutil.which("node") and shutil.which("npm"):
            ok, why = True, ""  # any Node.js with npm will do (Debian's or another)
        else:
            ok, why = apt_install(APT_PACKAGES[p])
        if ok and p == "bullmq":
            ok, why = npm_install()
        if not ok:
            failed[p] = why
    return failed


# ----------------------------------------------------------------- redis --

class Resp:
    """The few Redis commands the runner needs, over a plain socket."""

    def __init__(self, addr):
        if isinstance(addr, str):
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.settimeout(30)
        self.s.connect(addr)
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise BenchError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise BenchError("redis: " + rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode(errors="replace")
        if t == b"*":
            return [self._read() for _ in range(int(rest))]
        raise BenchError("redis: bad reply %r" % line)

    def info(self, section):
        d = {}
        for ln in self.cmd("INFO", section).splitlines():
            if ":" in ln and not ln.startswith("#"):
                k, v = ln.split(":", 1)
                d[k] = v
        return d

    def cpu(self):
        """Redis's own CPU time (user + sys, all its threads), seconds."""
        i = self.info("cpu")
        return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class RedisServer:
    def __init__(self, tmp, unix, binary):
        self.tmp = tmp
        self.proc = None
        self.unix = unix
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.sock = os.path.join(tmp, "redis.sock")
        self.port = 0 if unix else free_port()

    def start(self):
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.tmp,
                "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--logfile", os.path.join(self.tmp, "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                c = self.client()
                c.cmd("PING")
                self.version = c.info("server")["redis_version"]
                c.close()
                return
            except (OSError, BenchError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("redis-server did not start: %s" % _tail(
                        os.path.join(self.tmp, "redis.log")))
                time.sleep(0.05)

    @property
    def url(self):
        return "unix://%s" % self.sock if self.unix else "redis://127.0.0.1:%d/0" % self.port

    @property
    def celery_url(self):
        return "redis+socket://%s" % self.sock if self.unix else self.url

    def client(self):
        return Resp(self.sock if self.unix else ("127.0.0.1", self.port))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------- process trees --

def _ppid_map():
    m = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    s = f.read()
                m[int(d)] = int(s[s.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return m


def tree(root):
    kids = {}
    for pid, pp in _ppid_map().items():
        kids.setdefault(pp, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def tree_cpu_ns(pids):
    """Run time of every live thread of the processes, ns (schedstat)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        try:  # children it has reaped (RQ's forking Worker): clock ticks
            with open("/proc/%d/stat" % pid) as f:
                s = f.read()
            fields = s[s.rindex(")") + 2:].split()
            total += (int(fields[13]) + int(fields[14])) * 1000000000 // CLK_TCK
        except (OSError, ValueError, IndexError):
            pass
    return total


def tree_mem_kib(pids):
    """Summed VmRSS and Pss of the processes, KiB."""
    rss = pss = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for ln in f:
                    if ln.startswith("VmRSS:"):
                        rss += int(ln.split()[1])
                        break
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for ln in f:
                    if ln.startswith("Pss:"):
                        pss += int(ln.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return rss, pss


def _tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-n:])
    except OSError:
        return "(no log)"


# ------------------------------------------------------------ the peers --

class Peer:
    name = ""
    has_fair = False  # True: a one-task-per-fetch configuration differs from the best

    def __init__(self, args, redis, tmp):
        self.a = args
        self.redis = redis
        self.tmp = tmp
        self.fair = False  # run the one-task-per-fetch configuration

    def env(self, **extra):
        e = dict(os.environ)
        e["BENCH_REDIS_URL"] = self.redis.url
        e.update(extra)
        return e

    def client_argv(self, *args):
        raise NotImplementedError

    def worker_argv(self):
        raise NotImplementedError

    def version(self):
        raise NotImplementedError

    def config(self):
        raise NotImplementedError

    def worker_cwd(self):
        return HERE


class Celery(Peer):
    name = "celery"
    has_fair = True

    def env(self, **extra):
        e = Peer.env(self, **extra)
        e["BENCH_REDIS_URL"] = self.redis.celery_url
        e["PYTHONPATH"] = HERE + os.pathsep + e.get("PYTHONPATH", "")
        if self.a.celery_backend:
            e["BENCH_CELERY_BACKEND"] = self.a.celery_backend
        if self.fair:
            e["BENCH_CELERY_ACKS_LATE"] = "1"
        return e

    def client_argv(self, *args):
        return [PY, os.path.join(HERE, "celery_peer.py")] + list(args)

    def per_proc(self):
        return max(1, self.a.concurrency // self.a.celery_procs)

    def worker_argv(self):
        # Fair: Celery's documented one-task-at-a-time set-up, one prefork
        # worker with prefetch multiplier 1 and task_acks_late.  (Two solo
        # workers with multiplier 1 stall here: ~30 tasks in 120 s.)
        procs = 1 if self.fair else self.a.celery_procs
        argv = [PY, "-m", "celery", "-A", "celery_peer", "worker", "-Q", "bench",
                "-P", "prefork" if self.fair else self.a.celery_pool,
                "-c", str(self.a.concurrency if self.fair else self.per_proc()),
                "--prefetch-multiplier", str(1 if self.fair else self.a.celery_prefetch),
                "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-n", "bench{i}@%h"]
        if self.a.celery_optimization:
            argv += ["-O", self.a.celery_optimization]
        return [PY, os.path.join(HERE, "procs.py"), str(procs)] + argv

    def version(self):
        return _py_version("celery")

    def config(self):
        return ("%d worker process(es), pool %s, -c %d, prefetch multiplier %d, -O %s, "
                "without gossip/mingle/heartbeat, result backend %s" % (
                    self.a.celery_procs, self.a.celery_pool,
                    1 if self.a.celery_pool == "solo" else self.per_proc(), self.a.celery_prefetch,
                    self.a.celery_optimization or "default",
                    self.a.celery_backend or "none (Celery's default)")) + (
                        "; fair: 1 prefork worker -c %d, prefetch multiplier 1, "
                        "task_acks_late (slow over Redis: celery/celery#4378, #7718)"
                        % self.a.concurrency)


class RQ(Peer):
    name = "rq"

    def client_argv(self, *args):
        return [PY, os.path.join(HERE, "rq_peer.py")] + list(args)

    def worker_argv(self):
        return [PY, os.path.join(HERE, "procs.py"), str(self.a.concurrency),
                PY, os.path.join(HERE, "rq_peer.py"), "worker", self.a.rq_worker]

    def version(self):
        return _py_version("rq")

    def config(self):
        return ("%d %s worker processes, results in the job hash (result_ttl 500 s); "
                "fair = best (one job per fetch)" % (
            self.a.concurrency,
            "SimpleWorker (no fork per job)" if self.a.rq_worker == "simple"
            else "forking Worker (one work horse per job)"))


class Sidekiq(Peer):
    name = "sidekiq"

    def env(self, **extra):
        e = Peer.env(self, **extra)
        if self.a.sidekiq_rubyopt:
            e["RUBYOPT"] = (e.get("RUBYOPT", "") + " " + self.a.sidekiq_rubyopt).strip()
        return e

    def client_argv(self, *args):
        return ["ruby", os.path.join(HERE, "sidekiq_peer.rb")] + list(args)

    def worker_argv(self):
        return [PY, os.path.join(HERE, "procs.py"), str(self.a.sidekiq_procs),
                shutil.which("sidekiq") or "/usr/bin/sidekiq", "-r",
                os.path.join(HERE, "sidekiq_peer.rb"), "-q", "bench",
                "-c", str(self.a.sidekiq_threads or self.a.concurrency), "-t", "2"]

    def version(self):
        r = subprocess.run(["ruby", "-e", 'require "sidekiq"; print Sidekiq::VERSION, " ruby ", RUBY_VERSION'],
                           capture_output=True, text=True)
        return r.stdout.strip() or None

    def config(self):
        return ("%d process(es), %d threads each (-c), RUBYOPT %r, logger WARN, results not "
                "stored; fair = best (one job per BRPOP)") % (
            self.a.sidekiq_procs, self.a.sidekiq_threads or self.a.concurrency, self.a.sidekiq_rubyopt)


class BullMQ(Peer):
    name = "bullmq"
    has_fair = True

    def client_argv(self, *args):
        return ["node", os.path.join(HERE, "bullmq_peer.js")] + list(args)

    def worker_argv(self):
        return ["node", os.path.join(HERE, "bullmq_peer.js"), "worker",
                str(self.a.concurrency if self.fair else self.a.bullmq_concurrency or self.a.concurrency),
                str(self.a.bullmq_procs)]

    def version(self):
        try:
            with open(os.path.join(HERE, "node_modules", "bullmq", "package.json")) as f:
                v = json.load(f)["version"]
            node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
            return "%s node %s" % (v, node)
        except (OSError, ValueError, KeyError):
            return None

    def config(self):
        return ("%d Node process(es), Worker concurrency %d, completed jobs kept "
                "(BullMQ's default); fair: concurrency %d" % (
                    self.a.bullmq_procs, self.a.bullmq_concurrency or self.a.concurrency,
                    self.a.concurrency))


PEER_CLASSES = {c.name: c for c in (Celery, RQ, Sidekiq, BullMQ)}


def _py_version(mod):
    r = subprocess.run([PY, "-c", "import %s; print(%s.__version__)" % (mod, mod)],
                       capture_output=True, text=True)
    return r.stdout.strip() or None


# ------------------------------------------------------------ measuring --

class Worker:
    """One worker run: a child in its own process group, watched through the
    stamp files its tasks write."""

    def __init__(self, peer, tag):
        self.peer = peer
        self.dir = tempfile.mkdtemp(prefix="stamps-%s-" % tag, dir=peer.tmp)
        self.logpath = os.path.join(peer.tmp, "%s-%s.log" % (peer.name, tag))
        self.log = open(self.logpath, "wb")
        self.proc = subprocess.Popen(peer.worker_argv(), cwd=peer.worker_cwd(),
                                     env=peer.env(BENCH_STAMP_DIR=self.dir),
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        argv = peer.worker_argv()
        # procs.py with K > 1 stays as a launcher: harness, not peer.
        self.launcher = argv[1].endswith("procs.py") and argv[2] != "1"

    def pids(self):
        t = tree(self.pid)
        return t[1:] if self.launcher else t

    def stamps(self):
        count, first, last = 0, None, None
        for fn in os.listdir(self.dir):
            if not fn.startswith("stamp-"):
                continue
            try:
                with open(os.path.join(self.dir, fn), "rb") as f:
                    data = f.read(STAMP.size)
            except OSError:
                continue
            if len(data) < STAMP.size:
                continue
            c, fst, lst = STAMP.unpack(data)
            if c <= 0:
                continue
            count += c
            first = fst if first is None else min(first, fst)
            last = lst if last is None else max(last, lst)
        return count, first, last

    def latencies(self):
        out = []
        for fn in os.listdir(self.dir):
            if fn.startswith("lat-"):
                with open(os.path.join(self.dir, fn)) as f:
                    out += [float(x) for x in f.read().split()]
        return out

    def check_alive(self):
        if self.proc.poll() is not None:
            self.log.flush()
            raise BenchError("%s worker exited with %s: %s" % (
                self.peer.name, self.proc.returncode, _tail(self.logpath)))

    def wait_count(self, target, timeout, on_poll=None, interval=0.01):
        deadline = time.monotonic() + timeout
        while True:
            c, _, _ = self.stamps()
            if c >= target:
                return c
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError("%s: %d of %d tasks ran in %.0f s; worker log: %s" % (
                    self.peer.name, c, target, timeout, _tail(self.logpath)))
            if on_poll:
                on_poll()
            time.sleep(interval)

    def stop(self):
        """SIGTERM to the worker's PID, then SIGKILL to its process group."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                log("%s worker %d did not stop in 15 s: SIGKILL" % (self.peer.name, self.pid))
        try:
            os.killpg(self.pid, signal.SIGKILL)  # leftovers of its own group
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        self.log.close()


def run_client(peer, *args, timeout=600):
    r = subprocess.run(peer.client_argv(*args), cwd=HERE, env=peer.env(),
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError("%s %s failed (exit %d): %s" % (
            peer.name, args[0], r.returncode,
            " | ".join((r.stderr.strip() or r.stdout.strip()).splitlines()[-8:])))
    for ln in reversed(r.stdout.strip().splitlines()):
        if ln.startswith("{"):
            return json.loads(ln)
    raise BenchError("%s %s printed no JSON: %r" % (peer.name, args[0], r.stdout[-500:]))


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_rep(peer, a, rc, m):
    """One repetition of every workload; appends to the metric lists in m."""
    n = a.n
    # enqueue, bulk
    rc.cmd("FLUSHALL")
    r = run_client(peer, "enqueue-bulk", str(n), str(a.batch), str(a.batch))
    m.setdefault("enqueue_bulk_tps", []).append(
        None if r.get("bulk", 0) is None else n / r["seconds"])
    # enqueue, one call per task; these tasks are then drained
    rc.cmd("FLUSHALL")
    r0 = rc.cpu()
    r = run_client(peer, "enqueue-one", str(n), str(a.warmup))
    r1 = rc.cpu()
    queued = int(r["enqueued"])
    m.setdefault("enqueue_one_tps", []).append(n / r["seconds"])
    d = drain(peer, a, rc, queued, "drain")
    m.setdefault("drain_tps", []).append(d["tps"])
    m.setdefault("worker_cpu_us_per_task", []).append(d["worker_us"])
    m.setdefault("redis_cpu_enqueue_us_per_task", []).append((r1 - r0) * 1e6 / queued)
    m.setdefault("redis_cpu_drain_us_per_task", []).append(d["redis_us"])
    m.setdefault("redis_cpu_us_per_task", []).append((r1 - r0) * 1e6 / queued + d["redis_us"])
    m.setdefault("worker_rss_mib", []).append(d["rss_mib"])
    m.setdefault("worker_pss_mib", []).append(d["pss_mib"])
    m.setdefault("keys_after_drain", []).append(d["keys"])
    # drain, one task per fetch: RQ and Sidekiq always fetch one at a time
    if peer.has_fair:
        rc.cmd("FLUSHALL")
        bulk = m["enqueue_bulk_tps"][-1] is not None
        fn = min(n, a.fair_n)
        r = run_client(peer, *(["enqueue-bulk", str(fn), str(a.batch), "1"] if bulk
                               else ["enqueue-one", str(fn), "0"]))
        peer.fair = True
        try:
            d = drain(peer, a, rc, int(r["enqueued"]), "fair", limit=a.fair_limit)
        finally:
            peer.fair = False
        m.setdefault("drain_fair_tps", []).append(d["tps"])
        if d["stalled"]:
            m.setdefault("drain_fair_stalled", []).append(d["stalled"])
    else:
        m.setdefault("drain_fair_tps", []).append(m["drain_tps"][-1])
    # latency, idle worker
    rc.cmd("FLUSHALL")
    w = Worker(peer, "latency")
    try:
        warm = run_client(peer, "enqueue-one", "20")["enqueued"]
        w.wait_count(warm, 120.0)
        time.sleep(0.3)
        r = run_client(peer, "latency", str(a.latency_n), str(a.latency_rate))
        w.wait_count(warm + r["enqueued"], 120.0)
        lat = w.latencies()
    finally:
        w.stop()
    if len(lat) != a.latency_n:
        raise BenchError("%s: %d latency samples, expected %d" % (peer.name, len(lat), a.latency_n))
    m.setdefault("latency_p50_ms", []).append(percentile(lat, 50) * 1e3)
    m.setdefault("latency_p99_ms", []).append(percentile(lat, 99) * 1e3)


class Stalled(Exception):
    pass


def drain(peer, a, rc, queued, tag, limit=None):
    """Starts a worker on `queued` waiting tasks and measures it draining them.
    With `limit` (seconds), a drain still unfinished then is not an error:
    the result is the rate over that window, with "stalled" set."""
    r1 = rc.cpu()
    stalled = None
    w = Worker(peer, tag)
    try:
        peak = [0, 0]
        nextmem = [0.0]

        def sample_mem():
            t = time.monotonic()
            if t >= nextmem[0]:
                rss, _ = tree_mem_kib(w.pids())
                peak[0] = max(peak[0], rss)
                nextmem[0] = t + 0.05
        timeout = max(120.0, queued / 50.0)
        w.wait_count(1, 120.0, interval=0.002)
        c0, cpu0 = w.stamps()[0], tree_cpu_ns(w.pids())
        if limit is None:
            w.wait_count(queued, timeout, on_poll=sample_mem)
        else:
            end = time.monotonic() + limit

            def poll():
                sample_mem()
                if time.monotonic() > end:
                    raise Stalled()
            try:
                w.wait_count(queued, limit + 1.0, on_poll=poll)
            except Stalled:
                stalled = time.monotonic()
        cpu1, r2 = tree_cpu_ns(w.pids()), rc.cpu()
        rss, pss = tree_mem_kib(w.pids())
        peak[0] = max(peak[0], rss)
        time.sleep(0.05)  # let a last 5 ms stamp rewrite land
        c, first, last = w.stamps()
        keys = rc.cmd("DBSIZE")
    finally:
        w.stop()
    if stalled is not None:
        last = stalled
        log("%s %s drain: %d of %d tasks in %.1f s; rate over that window" % (
            peer.name, tag, c, queued, limit))
    return {"tps": c / (last - first), "worker_us": (cpu1 - cpu0) / 1e3 / max(1, c - c0),
            "redis_us": (r2 - r1) * 1e6 / c, "rss_mib": peak[0] / 1024.0,
            "pss_mib": pss / 1024.0, "keys": keys,
            "stalled": None if stalled is None else "%d of %d tasks in %.1f s" % (c, queued, limit)}


UNITS = {
    "enqueue_one_tps": "tasks/s", "enqueue_bulk_tps": "tasks/s", "drain_tps": "tasks/s",
    "drain_fair_tps": "tasks/s",
    "redis_cpu_us_per_task": "us", "redis_cpu_enqueue_us_per_task": "us",
    "redis_cpu_drain_us_per_task": "us", "worker_cpu_us_per_task": "us",
    "latency_p50_ms": "ms", "latency_p99_ms": "ms", "worker_rss_mib": "MiB",
    "worker_pss_mib": "MiB", "keys_after_drain": "keys",
}


def summarize(m):
    out = {}
    for k, runs in m.items():
        if k.endswith("_stalled"):
            out[k] = {"runs": runs}
            continue
        vals = [v for v in runs if v is not None]
        if not vals:
            out[k] = {"median": None, "min": None, "max": None, "runs": runs, "unit": UNITS.get(k)}
        else:
            out[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                      "runs": runs, "unit": UNITS.get(k)}
    return out


def run_peer(name, a, redis, tmp):
    peer = PEER_CLASSES[name](a, redis, tmp)
    res = {"version": None, "config": peer.config(), "ok": False, "errors": [], "metrics": {}}
    try:
        res["version"] = peer.version()
        if not res["version"]:
            raise BenchError("%s is not importable/runnable here" % name)
        rc = redis.client()
        m = {}
        try:
            for i in range(a.reps):
                t0 = time.monotonic()
                one_rep(peer, a, rc, m)
                log("%s rep %d/%d: %.1f s" % (name, i + 1, a.reps, time.monotonic() - t0))
            rc.cmd("FLUSHALL")
        finally:
            rc.close()
            res["metrics"] = summarize(m)
        res["ok"] = True
    except (BenchError, subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
        res["errors"].append(str(e))
        log("%s FAILED: %s" % (name, e))
    return res


# ---------------------------------------------------------------- output --

ROWS = [
    ("enqueue, one call per task (tasks/s)", "enqueue_one_tps", "{:,.0f}"),
    ("enqueue, bulk API (tasks/s)", "enqueue_bulk_tps", "{:,.0f}"),
    ("drain N queued tasks, best config (tasks/s)", "drain_tps", "{:,.0f}"),
    ("drain, one task per fetch (fair, tasks/s)", "drain_fair_tps", "{:,.0f}"),
    ("Redis CPU per task, enqueue + drain (µs)", "redis_cpu_us_per_task", "{:,.1f}"),
    ("  of which enqueue, one call per task (µs)", "redis_cpu_enqueue_us_per_task", "{:,.1f}"),
    ("worker CPU per task (µs)", "worker_cpu_us_per_task", "{:,.1f}"),
    ("enqueue → start latency p50 (ms, idle worker)", "latency_p50_ms", "{:,.2f}"),
    ("enqueue → start latency p99 (ms, idle worker)", "latency_p99_ms", "{:,.2f}"),
    ("worker resident memory, whole worker (MiB RSS)", "worker_rss_mib", "{:,.1f}"),
    ("worker memory, whole worker (MiB PSS)", "worker_pss_mib", "{:,.1f}"),
    ("keys left in Redis after the drain", "keys_after_drain", "{:,.0f}"),
]


def fmt(v, f):
    return "-" if v is None else f.format(v)


def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["| " + " | ".join(str(h).ljust(widths[i]) for i, h in enumerate(header)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(
            str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
            for i, c in enumerate(r)) + " |")
    return "\n".join(lines)


def peers_table(report):
    names = [p for p in PEERS if p in report["peers"]]
    header = ["workload"] + ["%s %s" % (p, (report["peers"][p]["version"] or "?").split()[0])
                             for p in names]
    rows = []
    for label, key, f in ROWS:
        row = [label]
        for p in names:
            pr = report["peers"][p]
            if key not in pr["metrics"]:
                row.append("failed" if pr["errors"] else "-")
            elif key == "enqueue_bulk_tps" and pr["metrics"][key]["median"] is None:
                row.append("none")
            else:
                star = "*" if key == "drain_fair_tps" and "drain_fair_stalled" in pr["metrics"] else ""
                row.append(fmt(pr["metrics"][key]["median"], f) + star)
        rows.append(row)
    return table(rows, header)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of %s" % PEERS)
    ap.add_argument("--n", type=int, default=10000, help="tasks per enqueue/drain run (10000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; medians are reported (3)")
    ap.add_argument("--fair-n", type=int, default=1000,
                    help="tasks in the one-task-per-fetch drain (1000: Celery's takes ~30 s)")
    ap.add_argument("--fair-limit", type=float, default=30.0,
                    help="seconds the fair drain may take; past that its rate is taken over "
                         "those seconds and the run is marked stalled (30)")
    ap.add_argument("--batch", type=int, default=1000, help="bulk enqueue batch size (1000)")
    ap.add_argument("--warmup", type=int, default=200,
                    help="untimed tasks each enqueue_one client sends first (200; enqueue_bulk "
                         "sends one untimed batch); they are drained with the N")
    ap.add_argument("--concurrency", type=int, default=2, help="worker concurrency (2)")
    ap.add_argument("--latency-n", type=int, default=1000, help="tasks in the latency run (1000)")
    ap.add_argument("--latency-rate", type=float, default=500.0,
                    help="latency enqueue rate, tasks/s (500, celer-bench's default)")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench", "peers.json"))
    ap.add_argument("--celer", help="Celer's celer-bench JSON report: print the comparison too")
    ap.add_argument("--no-install", action="store_true", help="install nothing, use what is there")
    ap.add_argument("--tcp", action="store_true",
                    help="Redis on 127.0.0.1:free port instead of a Unix socket (celer-bench's "
                         "default is a Unix socket; give it --broker to match)")
    ap.add_argument("--redis-server", help="redis-server binary (default: from PATH)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs)")
    g = ap.add_argument_group("peer configuration")
    g.add_argument("--celery-procs", type=int, default=2, help="Celery worker processes (2)")
    g.add_argument("--celery-pool", default="solo", help="Celery pool per process (solo)")
    g.add_argument("--celery-prefetch", type=int, default=16, help="worker prefetch multiplier (16)")
    g.add_argument("--celery-optimization", default="fair", help="-O profile (fair)")
    g.add_argument("--celery-backend", default="", help="result backend URL (default none, Celery's default)")
    g.add_argument("--rq-worker", choices=["simple", "fork"], default="simple")
    g.add_argument("--sidekiq-procs", type=int, default=1, help="Sidekiq processes (1)")
    g.add_argument("--sidekiq-threads", type=int, default=0, help="-c (default --concurrency)")
    g.add_argument("--sidekiq-rubyopt", default="--yjit --yjit-exec-mem-size=16",
                   help="RUBYOPT for Sidekiq's worker and client ('--yjit --yjit-exec-mem-size=16'; "
                        "Ruby 3.1's YJIT commits its whole code area, 256 MiB by default)")
    g.add_argument("--bullmq-concurrency", type=int, default=16,
                   help="Worker concurrency: jobs in flight in the one event loop (16)")
    g.add_argument("--bullmq-procs", type=int, default=1, help="Node worker processes (1)")
    a = ap.parse_args()

    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    for p in peers:
        if p not in PEER_CLASSES:
            ap.error("unknown peer %r" % p)

    tmp = tempfile.mkdtemp(prefix="celer-bench-peers-")
    redis = None

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    report = {"schema": "celer-bench-peers/1", "peers": {}}
    try:
        not_installed = {} if a.no_install else install(peers)
        redis = RedisServer(tmp, not a.tcp, a.redis_server)
        redis.start()
        report["machine"] = {
            "cpus": os.cpu_count(), "kernel": platform.release(),
            "cpu_model": _cpu_model(), "redis": redis.version,
            "transport": "tcp 127.0.0.1" if a.tcp else "unix socket",
        }
        report["params"] = {k: v for k, v in vars(a).items() if k not in ("out", "celer")}
        t_start = time.monotonic()
        for p in peers:
            if p in not_installed:
                report["peers"][p] = {"version": None, "config": None, "ok": False,
                                      "errors": [not_installed[p]], "metrics": {}}
                log("%s not installed: %s" % (p, not_installed[p]))
                continue
            log("%s: n=%d reps=%d" % (p, a.n, a.reps))
            t0 = time.monotonic()
            report["peers"][p] = run_peer(p, a, redis, tmp)
            report["peers"][p]["seconds"] = round(time.monotonic() - t0, 1)
        report["seconds"] = round(time.monotonic() - t_start, 1)
    finally:
        if redis:
            redis.stop()
        if a.keep_tmp:
            log("temp dir kept: %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print("Peers (n=%d, %d reps, medians; Redis %s, %s, %d cores):" % (
        a.n, a.reps, report["machine"]["redis"], report["machine"]["transport"],
        report["machine"]["cpus"]))
    print(peers_table(report))
    for p, pr in report["peers"].items():
        print("  %-8s %s; %s" % (p, pr["version"] or "not available", pr["config"] or ""))
        for e in pr["errors"]:
            print("           FAILED: %s" % e)
        st = pr["metrics"].get("drain_fair_stalled")
        if st:
            print("           * fair drain stalled in %d of %d repetitions: %s" % (
                len(st["runs"]), a.reps, "; ".join(st["runs"])))
    print("JSON: %s" % a.out)
    if a.celer:
        sys.path.insert(0, HERE)
        import compare
        print()
        print(compare.compare_files(a.out, a.celer))
    return 0 if all(pr["ok"] for pr in report["peers"].values()) else 1


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            return m.group(1) if m else None
    except OSError:
        return None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log("error: %s" % e)
        sys.exit(2)
