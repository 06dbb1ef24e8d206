"""Helpers of the deployment tests: a private redis-server, polling with a
deadline, the programs' --help, and readers for the Makefile, the
Dockerfile and systemd unit files. Real processes only; nothing waits a
fixed time for readiness."""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

# How long anything may take to become ready before a test fails.
DEADLINE_S = 30
# Between two checks of a polled condition.
POLL_S = 0.05

# Sanitizer options, as `make test-asan` sets them, passed on to the
# programs a test starts with an environment of its own.
SANITIZER_VARS = ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS")


class Failure(Exception):
    """A check did not hold; the message says which and why."""


def check(cond, message):
    if not cond:
        raise Failure(message)


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True, help="the repository's root")
    p.add_argument("--build", required=True, help="the build tree")
    p.add_argument("--sanitize", default="0", help="1 for an ASan+UBSan build")
    a = p.parse_args()
    a.sanitize = a.sanitize in ("1", "ON", "TRUE", "true")
    return a


def run_checks(name, checks):
    """Runs each (description, fn) in order, one line per check, and stops
    at the first failure (later checks build on earlier ones). Returns the
    exit status: 0 when all passed."""
    for n, (desc, fn) in enumerate(checks):
        try:
            fn()
            print(f"ok   {desc}", flush=True)
        except Exception as e:  # a failed check, or a crash of the test itself
            kind = "" if isinstance(e, Failure) else f"{type(e).__name__}: "
            print(f"FAIL {desc}: {kind}{e}", flush=True)
            print(f"{name}: {n} passed, 1 failed, {len(checks) - n - 1} not run")
            return 1
    print(f"{name}: {len(checks)} passed, 0 failed")
    return 0


def wait_until(cond, what, deadline_s=DEADLINE_S):
    """Polls cond() until it returns a true value, which it returns; fails
    with `what` past the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= end:
            raise Failure(f"{what}: not within {deadline_s} s")
        time.sleep(POLL_S)


def free_port():
    """A loopback port nobody listens on right now, from the kernel."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env():
    """The environment a service manager gives a program: a PATH and the
    sanitizer options of the run, nothing of ours."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    for k in SANITIZER_VARS:
        if k in os.environ:
            env[k] = os.environ[k]
    return env


class Redis:
    """A private redis-server on a free loopback port, in its own temp dir.
    extra: further command-line words; conf: a config file to start from."""

    def __init__(self, tmp, extra=(), conf=None):
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=tmp)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = ["redis-server"]
        if conf:
            argv.append(conf)
        argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                 "--logfile", os.path.join(self.dir, "redis.log"), *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.proc.poll() is not None or self.cli("PING") == "PONG",
                   "redis-server answers PING")
        check(self.proc.poll() is None, f"redis-server exited: {self.log()}")

    def cli(self, *words):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *words],
                           capture_output=True, text=True, timeout=DEADLINE_S)
        return r.stdout.strip() if r.returncode == 0 else None

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stop_process(proc, sig=signal.SIGTERM, timeout_s=DEADLINE_S):
    """Sends sig to proc (a Popen we started) and waits; SIGKILL past the
    timeout. Returns the exit status, or None when it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def help_text(*argv):
    """The --help output of a program (stdout and stderr together)."""
    r = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=DEADLINE_S)
    check(r.returncode == 0, f"{' '.join(argv)} --help exited {r.returncode}")
    return r.stdout + r.stderr


def help_flags(text):
    """The long options a --help text names: {"queues", "json", ...}."""
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", text))


def value_flags(text):
    """The long options a --help text shows with a value
    ("--queues Q1,Q2", "--prefetch N")."""
    return set(re.findall(r"^\s+--([a-z][a-z0-9-]*) [A-Z]", text, re.M))


# The Makefile ----------------------------------------------------------------

def makefile_rules(path):
    """{target: (prerequisites, recipe lines)} of a Makefile's explicit
    rules, and the set of variables it lets the caller set (NAME ?= ...)."""
    rules = {}
    overridable = set()
    current = None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("\t"):
                if current:
                    for t in current:
                        # Without make's echo and error prefixes.
                        rules[t][1].append(line.strip().lstrip("@-+"))
                continue
            current = None
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\?=", line)
            if m:
                overridable.add(m.group(1))
                continue
            m = re.match(r"^([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?![=])(.*)$", line)
            if m and not line.startswith("."):
                targets = m.group(1).split()
                prereqs = m.group(2).split()
                for t in targets:
                    rules.setdefault(t, ([], []))[0].extend(prereqs)
                current = targets
    return rules, overridable


def make_closure(rules, roots):
    """Every target `make ROOTS` runs, through prerequisites and recipes
    that call $(MAKE) or make."""
    seen = set()
    todo = list(roots)
    while todo:
        t = todo.pop()
        if t in seen or t not in rules:
            continue
        seen.add(t)
        prereqs, recipe = rules[t]
        todo.extend(prereqs)
        for line in recipe:
            for m in re.finditer(r"(?:\$\(MAKE\)|\bmake)\s+([A-Za-z0-9_.-]+)", line):
                todo.append(m.group(1))
    return seen


# The Dockerfile --------------------------------------------------------------

def dockerfile_instructions(path):
    """[(stage name, INSTRUCTION, argument text)] with continuation lines
    joined and comments dropped. The stage name is the FROM's AS name, or
    its index."""
    out = []
    stage = None
    buf = ""
    with open(path) as f:
        lines = f.read().split("\n")
    for line in lines:
        if not buf and (line.strip().startswith("#") or not line.strip()):
            continue
        if buf and line.strip().startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        word = word.upper()
        rest = rest.strip()
        if word == "FROM":
            m = re.search(r"\s+AS\s+(\S+)$", rest, re.I)
            stage = m.group(1) if m else str(sum(1 for o in out if o[1] == "FROM"))
        out.append((stage, word, rest))
        buf = ""
    return out


def shell_commands(text):
    """The simple commands of a RUN line: split at &&, || and ;."""
    return [c.strip() for c in re.split(r"&&|\|\||;", text) if c.strip()]


# systemd units -----------------------------------------------------------------

def read_unit(path):
    """{(section, key): [values]} of a unit file: comments dropped,
    continuation lines joined, repeated keys kept in order."""
    unit = {}
    section = None
    buf = ""
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip()[0] in "#;"):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            line = buf + line
            buf = ""
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, _, value = line.partition("=")
            unit.setdefault((section, key.strip()), []).append(value.strip())
    return unit


def unit_value(unit, section, key):
    """The last value of key in section (the one systemd uses), or None."""
    v = unit.get((section, key))
    return v[-1] if v else None


def read_env_file(path):
    """NAME=value lines of an EnvironmentFile: comments and blank lines
    skipped, one pair of surrounding quotes removed."""
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key.strip()] = value
    return env


def expand_exec(line, env):
    """argv of an Exec= line as systemd builds it: words split at
    whitespace (quotes group), the prefixes -@:+! dropped, "${NAME}"
    replaced inside its word, and a word that is exactly "$NAME" split at
    whitespace into words (none when empty)."""
    import shlex
    line = line.lstrip("-@:+!")
    argv = []
    for word in shlex.split(line):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv.extend(env.get(m.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                           lambda mm: env.get(mm.group(1), ""), word))
    return argv


def parse_seconds(text):
    """A systemd time span ("45", "45s", "1min 30s") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        check(unit in units, f"unknown time unit in {text!r}")
        total += float(num) * units[unit]
    return total


def tmpdir():
    d = tempfile.mkdtemp(prefix="celer-deploy-")
    return d


def rmtree(d):
    shutil.rmtree(d, ignore_errors=True)
