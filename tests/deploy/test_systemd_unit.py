#!/usr/bin/python3
"""The systemd unit that `make install` installs: it is where the docs say,
names the installed worker, passes `systemd-analyze verify` and the offline
security check, has the stop, restart and hardening settings the docs
promise, and the worker started with exactly its ExecStart line and
environment stops cleanly on its KillSignal within TimeoutStopSec while a
task runs (the task finishes)."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deploylib import (DEADLINE_S, Redis, args, base_env, check, expand_exec,  # noqa: E402
                       free_port, parse_seconds, read_env_file, read_unit, rmtree,
                       run_checks, stop_process, tmpdir, unit_value, wait_until)

A = args()
TMP = tmpdir()
# Installed without DESTDIR under a prefix of our own, so that ExecStart
# names a binary that exists and systemd-analyze can check it.
PREFIX = os.path.join(TMP, "prefix")
UNIT = os.path.join(PREFIX, "lib/systemd/system/celer-worker.service")
# The margin the unit's comments and docs/worker.md promise between
# --shutdown-timeout and TimeoutStopSec.
STOP_MARGIN_S = 15
# Highest exposure `systemd-analyze security` may give the unit, in
# tenths (3.2 today, "OK"; 5.0 and above is "MEDIUM").
EXPOSURE_MAX = 40
# How long the task runs that the graceful stop must let finish.
SLEEP_TASK_S = 1.5
state = {}


def install():
    r = subprocess.run(["cmake", "--install", A.build, "--prefix", PREFIX],
                       capture_output=True, text=True, timeout=DEADLINE_S * 4)
    check(r.returncode == 0, f"cmake --install failed: {r.stderr[-1000:]}")
    check(os.path.isfile(UNIT), "no lib/systemd/system/celer-worker.service under the prefix")
    state["unit"] = read_unit(UNIT)


def exec_start_names_installed_worker():
    line = unit_value(state["unit"], "Service", "ExecStart")
    check(line is not None, "no ExecStart")
    binary = expand_exec(line, {})[0]
    check(binary == os.path.join(PREFIX, "bin/celer-worker"),
          f"ExecStart runs {binary}, not the installed worker")
    check(os.access(binary, os.X_OK), f"{binary} is not executable")


def analyze_verify():
    r = subprocess.run(["systemd-analyze", "verify", UNIT], capture_output=True, text=True,
                       timeout=DEADLINE_S)
    out = (r.stdout + r.stderr).strip()
    check(r.returncode == 0 and not out, f"systemd-analyze verify: exit {r.returncode}: {out}")


def analyze_verify_catches_errors():
    # The check above can fail: a unit with an unknown setting and a
    # missing binary is refused or reported.
    bad = os.path.join(TMP, "celer-broken.service")
    with open(UNIT) as f:
        text = f.read()
    text = text.replace("KillMode=mixed", "KillMode=mixed\nNoSuchSetting=1")
    text = text.replace(os.path.join(PREFIX, "bin/celer-worker"), "/nonexistent/celer-worker")
    with open(bad, "w") as f:
        f.write(text)
    r = subprocess.run(["systemd-analyze", "verify", bad], capture_output=True, text=True,
                       timeout=DEADLINE_S)
    out = r.stdout + r.stderr
    check("NoSuchSetting" in out and "/nonexistent/celer-worker" in out,
          f"systemd-analyze verify did not report the broken unit: {out}")


def analyze_security():
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                        f"--threshold={EXPOSURE_MAX}", UNIT],
                       capture_output=True, text=True, timeout=DEADLINE_S)
    overall = [ln for ln in r.stdout.splitlines() if "Overall exposure" in ln]
    check(r.returncode == 0,
          f"exposure above {EXPOSURE_MAX / 10}: {overall or r.stderr.strip()}")
    print(f"     {overall[0].strip() if overall else ''}")


def stop_and_restart_settings():
    u = state["unit"]
    want = {"KillSignal": "SIGTERM", "KillMode": "mixed", "Restart": "on-failure",
            "RestartPreventExitStatus": "2", "Type": "simple", "OOMPolicy": "continue"}
    for k, v in want.items():
        check(unit_value(u, "Service", k) == v, f"{k} is {unit_value(u, 'Service', k)}, not {v}")
    argv = expand_exec(unit_value(u, "Service", "ExecStart"), {})
    check("--shutdown-timeout" in argv, "ExecStart does not set --shutdown-timeout")
    shutdown = float(argv[argv.index("--shutdown-timeout") + 1])
    stop = parse_seconds(unit_value(u, "Service", "TimeoutStopSec"))
    check(stop >= shutdown + STOP_MARGIN_S,
          f"TimeoutStopSec={stop} is not {STOP_MARGIN_S} s above --shutdown-timeout {shutdown}")
    state["shutdown_s"] = shutdown
    state["stop_s"] = stop


def hardening_settings():
    u = state["unit"]
    want = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
            "ProtectHome": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
            "RestrictSUIDSGID": "yes", "User": "celer"}
    for k, v in want.items():
        check(unit_value(u, "Service", k) == v, f"{k} is {unit_value(u, 'Service', k)!r}, not {v!r}")


def start_with_exec_start_and_stop():
    u = state["unit"]
    redis = Redis(TMP)
    proc = None
    try:
        metrics_port = free_port()
        env_file = os.path.join(TMP, "worker.env")
        with open(env_file, "w") as f:
            f.write(f"# as /etc/celer/worker.env\n"
                    f"CELER_BROKER_URL={redis.url}\n"
                    f"CELER_LOG_FORMAT=json\n"
                    f"CELER_WORKER_MODULE=testing\n"
                    f"CELER_WORKER_ARGS=--queues unit --concurrency 1 --name unit-test "
                    f"--metrics-addr 127.0.0.1:{metrics_port}\n")
        # The unit's one EnvironmentFile, with the test's file in its place.
        env_files = u.get(("Service", "EnvironmentFile"), [])
        check(env_files == ["-/etc/celer/worker.env"], f"EnvironmentFile is {env_files}")
        file_env = read_env_file(env_file)
        env = {**base_env(), **file_env}
        argv = expand_exec(unit_value(u, "Service", "ExecStart"), file_env)
        log = open(os.path.join(TMP, "worker.log"), "w")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd="/")
        healthz = f"http://127.0.0.1:{metrics_port}/healthz"
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"

        def healthy():
            check(proc.poll() is None, f"the worker exited {proc.returncode}: {worker_log()}")
            try:
                with urllib.request.urlopen(healthz, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(healthy, "/healthz answers 200")
        wait_until(lambda: redis.cli("HEXISTS", "celer:workers", "unit-test") == "1",
                   "the worker is in the registry")
        taskctl = os.path.join(PREFIX, "bin/taskctl")
        r = subprocess.run([taskctl, "--broker", redis.url, "--json", "enqueue", "test.sleep",
                            "--queue", "unit", "--kwargs", json.dumps({"seconds": SLEEP_TASK_S})],
                           capture_output=True, text=True, env=base_env(), timeout=DEADLINE_S)
        check(r.returncode == 0, f"taskctl enqueue: {r.stderr}")
        task_id = json.loads(r.stdout)["id"]

        def task_state():
            out = redis.cli("GET", f"celer:{{unit}}:result:{task_id}")
            return json.loads(out)["state"] if out else None

        # A running task has no record yet; the child's slot says it runs.
        def busy():
            with urllib.request.urlopen(metrics, timeout=2) as r:
                return "\nceler_children_busy 1\n" in r.read().decode()

        wait_until(busy, "the task runs (celer_children_busy 1)")
        check(task_state() is None, f"the task is {task_state()} before the stop")
        kill = getattr(signal, unit_value(u, "Service", "KillSignal"))
        # KillMode=mixed: the KillSignal goes to the main process alone.
        rc = stop_process(proc, kill, state["stop_s"])
        check(rc is not None, f"the worker did not exit within TimeoutStopSec: {worker_log()}")
        check(rc == 0, f"the worker exited {rc} on {kill.name}: {worker_log()}")
        check(task_state() == "SUCCEEDED",
              f"the running task is {task_state()} after the stop, not SUCCEEDED")
        check(redis.cli("HEXISTS", "celer:workers", "unit-test") == "0",
              "the worker is still in the registry after a clean stop")
    finally:
        if proc is not None:
            stop_process(proc, signal.SIGKILL)
        redis.stop()


def worker_log():
    try:
        with open(os.path.join(TMP, "worker.log")) as f:
            return f.read()[-2000:]
    except OSError:
        return ""


try:
    status = run_checks("deploy_systemd_unit", [
        ("make install puts the unit in <prefix>/lib/systemd/system", install),
        ("ExecStart runs the installed celer-worker", exec_start_names_installed_worker),
        ("systemd-analyze verify accepts the unit", analyze_verify),
        ("systemd-analyze verify reports a broken copy", analyze_verify_catches_errors),
        ("systemd-analyze security: exposure within bounds", analyze_security),
        ("graceful stop and restart settings", stop_and_restart_settings),
        ("hardening settings", hardening_settings),
        ("ExecStart with the unit's environment; KillSignal stops it cleanly",
         start_with_exec_start_and_stop),
    ])
finally:
    rmtree(TMP)
sys.exit(status)
