#!/usr/bin/python3
"""docker/docker-compose.yml, checked and run without a container engine.
Statically: its services, environment and commands against the programs'
real --help, the modules that exist and the settings the programs read.
Then for real: redis-server with docker/redis.conf (Redis 7: AOF,
noeviction), each worker service started through docker/entrypoint.sh
with the service's environment (worker-users twice, as --scale does,
sharing one users database), and the producer's scenario run to its end;
the workers stop cleanly on SIGTERM."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deploylib import (Redis, args, base_env, check,  # noqa: E402
                       dockerfile_instructions, free_port, help_flags, help_text,
                       parse_seconds, rmtree, run_checks, stop_process, tmpdir, value_flags,
                       wait_until)

A = args()
DOCKER = os.path.abspath(os.path.join(A.source, "docker"))
COMPOSE = os.path.join(DOCKER, "docker-compose.yml")
BIN = os.path.join(A.build, "bin")
MODULES = os.path.join(A.build, "lib/celer/modules")
WORKER_SERVICES = ("worker-users", "worker-notify")
# Replicas of each worker service the run starts, as `--scale` would.
REPLICAS = {"worker-users": 2, "worker-notify": 1}
# The margin between the shutdown timeout and the time `docker stop`
# gives (as for the systemd unit's TimeoutStopSec).
STOP_MARGIN_S = 15
# The worker's default --shutdown-timeout (celer-worker --help).
DEFAULT_SHUTDOWN_S = 30
# How long the producer may take for its whole scenario.
PRODUCER_TIMEOUT_S = 120
TMP = tmpdir()
state = {}


def image_env():
    """The ENV of the Dockerfile's runtime stage: {name: value}."""
    env = {}
    for stage, word, arg in dockerfile_instructions(os.path.join(DOCKER, "Dockerfile")):
        if word == "ENV" and stage == "runtime":
            for m in re.finditer(r"(\w+)=(\S+)", arg):
                env[m.group(1)] = m.group(2)
    return env


def parse():
    with open(COMPOSE) as f:
        doc = yaml.safe_load(f)
    services = doc.get("services", {})
    check(set(services) == {"redis", *WORKER_SERVICES, "producer"},
          f"services are {sorted(services)}")
    state["services"] = services
    state["volumes"] = doc.get("volumes", {})
    state["worker_help"] = help_text(os.path.join(BIN, "celer-worker"))
    state["taskctl_help"] = help_text(os.path.join(BIN, "taskctl"))
    state["image_env"] = image_env()
    with open(os.path.join(DOCKER, "entrypoint.sh")) as f:
        m = re.search(r'^WORKER_FLAGS="([^"]*)"', f.read(), re.M)
    check(m, "docker/entrypoint.sh has no WORKER_FLAGS")
    state["entry_flags"] = m.group(1).split()


def local_path(service, spec):
    """The host file of a bind mount "./x:/y[:ro]", or None for a volume."""
    src = spec.split(":")[0]
    return os.path.normpath(os.path.join(DOCKER, src)) if src.startswith(".") else None


def redis_service():
    s = state["services"]["redis"]
    check(re.fullmatch(r"redis:7([.-].*)?", s["image"]), f"Redis image is {s['image']}, not 7")
    cmd = s["command"]
    check(cmd[0] == "redis-server", f"redis runs {cmd[0]}")
    mounts = {m.split(":")[1]: local_path("redis", m) for m in s["volumes"]}
    check(cmd[1] in mounts and mounts[cmd[1]] == os.path.join(DOCKER, "redis.conf"),
          f"{cmd[1]} is not docker/redis.conf")
    check(mounts.get("/data") is None and "/data" in mounts, "/data is not a volume")
    check(s["healthcheck"]["test"][1:] == ["redis-cli", "ping"], "no redis-cli ping healthcheck")
    state["redis_words"] = cmd[2:]


def entrypoint_flags_are_worker_flags():
    flags = value_flags(state["worker_help"])
    for f in state["entry_flags"]:
        check(f in flags, f"entrypoint maps CELER_WORKER_{f.upper()} to --{f}, "
                          "which celer-worker --help does not list with a value")
    check("module" in help_flags(state["worker_help"]), "celer-worker has no --module")


def known_setting(var, files):
    """Whether one of these programs or modules reads the variable: its
    name is among their bytes (getenv's argument)."""
    for f in files:
        with open(f, "rb") as fh:
            if var.encode() in fh.read():
                return True
    return False


def worker_services():
    flags = value_flags(state["worker_help"])
    mounts_of_image = ("/var/lib/celer",)
    metrics_port = state["image_env"]["CELER_WORKER_METRICS_ADDR"].rsplit(":", 1)[1]
    for name in WORKER_SERVICES:
        s = state["services"][name]
        check(s.get("build", {}).get("dockerfile") == "docker/Dockerfile" and
              os.path.normpath(os.path.join(DOCKER, s["build"]["context"])) ==
              os.path.abspath(A.source), f"{name} is not built from docker/Dockerfile")
        check("command" not in s and "entrypoint" not in s,
              f"{name} overrides the entry point; configure it through its environment")
        env = {k: str(v) for k, v in s["environment"].items()}
        modules = env.get("CELER_WORKER_MODULES", "").split(",")
        check(modules != [""], f"{name} loads no module")
        files = [os.path.join(BIN, "celer-worker")]
        for m in modules:
            so = os.path.join(MODULES, f"{m}.so")
            check(os.path.isfile(so), f"{name}: module {m} is not built ({so})")
            files.append(so)
        for var, value in env.items():
            if var == "CELER_WORKER_MODULES":
                continue
            if var.startswith("CELER_WORKER_"):
                flag = var[len("CELER_WORKER_"):].lower().replace("_", "-")
                check(flag in state["entry_flags"], f"{name}: the entrypoint ignores {var}")
                check(flag in flags, f"{name}: {var}: celer-worker has no --{flag}")
            else:
                check(known_setting(var, files),
                      f"{name}: {var} is read by neither celer-worker nor its modules")
            if value.startswith("/"):
                check(value.startswith(mounts_of_image),
                      f"{name}: {var}={value} is outside the volume {mounts_of_image[0]}")
        vols = [v.split(":")[1] for v in s.get("volumes", [])]
        check("/var/lib/celer" in vols, f"{name} keeps /var/lib/celer in no volume")
        shutdown = float(env.get("CELER_WORKER_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_S))
        grace = parse_seconds(s.get("stop_grace_period", "10s"))
        check(grace >= shutdown + STOP_MARGIN_S,
              f"{name}: stop_grace_period {grace} s is not {STOP_MARGIN_S} s above "
              f"the shutdown timeout {shutdown} s")
        check(s.get("stop_signal", "SIGTERM") == "SIGTERM", f"{name}: stop_signal")
        check(s.get("init") is True, f"{name}: no init to forward signals")
        check(any(str(p).endswith(f":{metrics_port}") or str(p) == metrics_port
                  for p in s.get("ports", [])), f"{name} publishes no metrics port {metrics_port}")
        check(s.get("depends_on", {}).get("redis", {}).get("condition") == "service_healthy",
              f"{name} does not wait for a healthy Redis")
    queues = {n: state["services"][n]["environment"]["CELER_WORKER_QUEUES"].split(",")
              for n in WORKER_SERVICES}
    # users.create's follow-ups go to `default` from a worker without the
    # notify module (include/celer/task.h): a notify worker must serve it.
    check("default" in queues["worker-notify"], "no notify worker serves default")
    check("default" not in queues["worker-users"], "the users worker would take notify.send")


def taskctl_commands(help_out):
    """The commands `taskctl --help` lists."""
    section = help_out.split("Commands:", 1)[1].split("\n\n", 1)[0]
    return {ln.split()[0] for ln in section.splitlines() if ln.strip()}


def producer_service():
    s = state["services"]["producer"]
    check(s.get("build", {}).get("dockerfile") == "docker/Dockerfile", "producer's image")
    check(s["command"] == ["sh", "/producer.sh"], f"producer runs {s['command']}")
    mounts = {m.split(":")[1]: local_path("producer", m) for m in s["volumes"]}
    script = mounts.get("/producer.sh")
    check(script == os.path.join(DOCKER, "producer.sh") and os.path.isfile(script),
          "/producer.sh is not docker/producer.sh")
    check(s.get("healthcheck", {}).get("disable") is True, "the one-shot producer has a healthcheck")
    check(s.get("restart") == "no", "the one-shot producer restarts")
    for n in WORKER_SERVICES:
        check(s["depends_on"][n]["condition"] == "service_healthy",
              f"the producer does not wait for a healthy {n}")
    with open(script) as f:
        text = f.read()
    for var in s["environment"]:
        check(known_setting(var, [os.path.join(BIN, "taskctl")]) or f"${{{var}" in text,
              f"producer: {var} is read by neither taskctl nor producer.sh")
    # Every taskctl command and option the script uses exists.
    commands = taskctl_commands(state["taskctl_help"])
    global_opts = help_flags(state["taskctl_help"])
    enqueue_opts = help_flags(help_text(os.path.join(BIN, "taskctl"), "enqueue"))
    used = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        words = shlex.split(line.replace("$(", " ").replace(")", " "), comments=True) \
            if "taskctl" in line or line.startswith("expect ") else []
        if line.startswith("expect "):
            used.append(("enqueue", [w for w in words[3:]]))
        elif "taskctl" in words:
            used.append((None, words[words.index("taskctl") + 1:]))
    check(used, "producer.sh runs no taskctl")
    for cmd, words in used:
        opts = [w.split("=")[0][2:] for w in words if w.startswith("--")]
        if cmd is None:
            cmd = next((w for w in words if not w.startswith("-")), None)
        check(cmd in commands or cmd.startswith("$"), f"producer.sh: taskctl has no {cmd}")
        allowed = global_opts | (enqueue_opts if cmd == "enqueue" else set())
        if cmd in commands and cmd != "enqueue":
            allowed |= help_flags(help_text(os.path.join(BIN, "taskctl"), cmd))
        for o in opts:
            check(o in allowed, f"producer.sh: taskctl {cmd} has no --{o}")


def readme_commands_exist():
    """The taskctl commands and celer-worker flags docker/README.md shows."""
    with open(os.path.join(DOCKER, "README.md")) as f:
        text = f.read()
    commands = taskctl_commands(state["taskctl_help"])
    used = re.findall(r"\btaskctl ([a-z]+)", text)
    check(used, "docker/README.md shows no taskctl command")
    for c in used:
        check(c in commands, f"docker/README.md: taskctl has no command {c}")
    flags = help_flags(state["worker_help"])
    for var in re.findall(r"`CELER_WORKER_([A-Z_]+)`", text):
        if var != "MODULES":
            flag = var.lower().replace("_", "-")
            check(flag in flags and flag in state["entry_flags"],
                  f"docker/README.md: CELER_WORKER_{var} is no worker flag the entrypoint maps")


def redis_conf_on_redis_7():
    v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    check(re.search(r"v=7\.", v), f"this redis-server is not 7: {v}")
    words = list(state["redis_words"])
    # The compose file's own words, with its data directory here.
    if "--dir" in words:
        words[words.index("--dir") + 1] = os.path.join(TMP, "redis-data")
        os.makedirs(words[words.index("--dir") + 1])
    redis = Redis(TMP, extra=words, conf=os.path.join(DOCKER, "redis.conf"))
    state["redis"] = redis
    want = {"appendonly": "yes", "maxmemory-policy": "noeviction"}
    for k, v in want.items():
        got = redis.cli("CONFIG", "GET", k).split("\n")[-1]
        check(got == v, f"redis.conf: {k} is {got}, not {v}")
    fsync = redis.cli("CONFIG", "GET", "appendfsync").split("\n")[-1]
    check(fsync in ("everysec", "always"), f"appendfsync is {fsync}")
    check(int(redis.cli("CONFIG", "GET", "maxmemory").split("\n")[-1]) > 0,
          "no maxmemory: noeviction never applies")


def service_env(name, redis, data_dir, metrics_port):
    """A service's environment for a process here: the image's ENV under
    the service's, the broker and the volume's paths moved here."""
    env = {**state["image_env"],
           **{k: str(v) for k, v in state["services"][name]["environment"].items()}}
    env["CELER_BROKER_URL"] = redis.url
    env["CELER_WORKER_METRICS_ADDR"] = f"127.0.0.1:{metrics_port}"
    for k, v in env.items():
        if v.startswith("/var/lib/celer/"):
            env[k] = os.path.join(data_dir, v[len("/var/lib/celer/"):])
    env.update(base_env())
    env["PATH"] = f"{os.path.abspath(BIN)}:{env['PATH']}"
    return env


def run_the_scenario():
    redis = state["redis"]
    procs = []
    try:
        for name in WORKER_SERVICES:
            data = os.path.join(TMP, f"{name}-data")  # the service's named volume
            os.makedirs(data)
            for i in range(REPLICAS[name]):
                port = free_port()
                env = service_env(name, redis, data, port)
                log = open(os.path.join(TMP, f"{name}-{i}.log"), "w")
                p = subprocess.Popen(["sh", os.path.join(DOCKER, "entrypoint.sh")], env=env,
                                     stdout=log, stderr=log, cwd=data)
                procs.append((f"{name}-{i}", p, port, env))
        for label, p, port, env in procs:
            def healthy():
                check(p.poll() is None, f"{label} exited {p.returncode}: {tail(label)}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                timeout=2) as r:
                        return r.status == 200
                except OSError:
                    return False
            wait_until(healthy, f"{label}: /healthz answers 200")

        # Each worker registered with the queues and concurrency of its
        # environment (a heartbeat every 5 s: poll until all are there).
        def registered():
            entries = [json.loads(v) for v in
                       (redis.cli("HVALS", "celer:workers") or "").splitlines() if v]
            return entries if len(entries) == len(procs) else None
        entries = wait_until(registered, "every worker is in the registry")
        for label, p, port, env in procs:
            queues = [q.split(":")[0] for q in env["CELER_WORKER_QUEUES"].split(",")]
            match = [e for e in entries if e["queues"] == queues and
                     e["concurrency"] == int(env["CELER_WORKER_CONCURRENCY"])]
            check(match, f"{label}: no registry entry with queues {queues} and concurrency "
                         f"{env['CELER_WORKER_CONCURRENCY']}: {entries}")

        env = service_env("producer", redis, TMP, 0)
        r = subprocess.run(["sh", os.path.join(DOCKER, "producer.sh")], env=env, cwd=TMP,
                           capture_output=True, text=True, timeout=PRODUCER_TIMEOUT_S)
        print("     " + "\n     ".join((r.stdout + r.stderr).splitlines()[-8:]))
        check(r.returncode == 0, f"the producer exited {r.returncode}:\n{r.stdout}{r.stderr}")
        log = os.path.join(TMP, "worker-notify-data", "notify.log")
        with open(log) as f:
            lines = [json.loads(ln) for ln in f if ln.strip()]
        check(any("Welcome" in json.dumps(ln) for ln in lines),
              f"no welcome notification in the notify log: {lines}")

        for label, p, port, env in procs:
            rc = stop_process(p, signal.SIGTERM, DEFAULT_SHUTDOWN_S + STOP_MARGIN_S)
            check(rc == 0, f"{label} exited {rc} on SIGTERM: {tail(label)}")
    finally:
        for label, p, port, env in procs:
            stop_process(p, signal.SIGKILL)


def tail(label):
    try:
        with open(os.path.join(TMP, f"{label}.log")) as f:
            return f.read()[-1500:]
    except OSError:
        return ""


try:
    status = run_checks("deploy_compose", [
        ("docker-compose.yml parses: redis, two worker services, producer", parse),
        ("redis: Redis 7, docker/redis.conf, a data volume, a healthcheck", redis_service),
        ("the entrypoint's CELER_WORKER_* flags are celer-worker's flags",
         entrypoint_flags_are_worker_flags),
        ("worker services: modules, flags, settings, stop grace, metrics port", worker_services),
        ("producer: its script's taskctl commands and options exist", producer_service),
        ("docker/README.md: its taskctl commands and CELER_WORKER_* variables exist",
         readme_commands_exist),
        ("redis.conf on redis-server 7: AOF, fsync, noeviction, maxmemory",
         redis_conf_on_redis_7),
        ("the services run: workers healthy and registered, the producer's scenario passes, "
         "clean stops", run_the_scenario),
    ])
finally:
    if "redis" in state:
        state["redis"].stop()
    rmtree(TMP)
sys.exit(status)
