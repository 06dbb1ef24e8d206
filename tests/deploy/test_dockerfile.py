#!/usr/bin/python3
"""docker/Dockerfile, checked without a container engine: both stages are
debian:bookworm-slim; every build and install step is a project target
that CI runs (no command exists only in the Dockerfile); what the runtime
stage copies is what `make install` installs; the runtime packages cover
every library the installed programs and modules load; it runs as a
non-root user with a HEALTHCHECK on the worker's /healthz, and takes its
configuration from the environment."""

import os
import re
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deploylib import (DEADLINE_S, args, check, dockerfile_instructions, help_text,  # noqa: E402
                       make_closure, makefile_rules, rmtree, run_checks, shell_commands,
                       tmpdir, value_flags)

A = args()
DOCKERFILE = os.path.join(A.source, "docker/Dockerfile")
BASE_IMAGE = "debian:bookworm-slim"
# Runtime-stage commands that only shape the image (a user for the
# worker, apt's cache removed): no build or install step of the project.
IMAGE_HOUSEKEEPING = {"useradd", "rm"}
# Libraries of the sanitizer runtime, which only a sanitizer build loads.
SANITIZER_LIBS = re.compile(r"lib(asan|ubsan|lsan)\.so")
TMP = tmpdir()
state = {}


def parse():
    state["ins"] = dockerfile_instructions(DOCKERFILE)
    stages = [(s, arg) for s, word, arg in state["ins"] if word == "FROM"]
    check(len(stages) == 2, f"expected a build and a runtime stage, found {stages}")
    for name, arg in stages:
        check(arg.split()[0] == BASE_IMAGE, f"stage {name} starts from {arg.split()[0]}")
    state["build"], state["runtime"] = stages[0][0], stages[1][0]
    rules, overridable = makefile_rules(os.path.join(A.source, "Makefile"))
    state["rules"], state["overridable"] = rules, overridable


def ci_targets():
    """The Makefile targets CI runs: those .ci/run calls, and what they
    run in turn."""
    with open(os.path.join(A.source, ".ci/run")) as f:
        ci = f.read()
    roots = re.findall(r"\bmake\s+([A-Za-z0-9_.-]+)", ci)
    check(roots, ".ci/run calls no make target")
    return make_closure(state["rules"], roots)


def install_target_is_tested():
    """`make install` is `cmake --install` of the build tree; the ctest
    `install` runs that same command into a DESTDIR and checks the result."""
    recipe = " ".join(state["rules"]["install"][1])
    check("cmake --install $(BUILD_DIR)" in recipe, f"the install recipe is {recipe!r}")
    with open(os.path.join(A.source, "tests/CMakeLists.txt")) as f:
        tests = f.read()
    check(re.search(r"add_test\(NAME install\b.*test_install\.sh", tests),
          "tests/CMakeLists.txt registers no install test")
    with open(os.path.join(A.source, "tests/install/test_install.sh")) as f:
        check("cmake --install" in f.read(), "the install test does not run cmake --install")


def build_stage_runs_only_ci_targets():
    ci = ci_targets()
    for t in ("deps", "build"):
        check(t in ci, f"CI does not run make {t}")
    install_target_is_tested()
    exercised = ci | {"install"}
    deps_recipe = state["rules"]["deps"][1]
    runs = [arg for s, word, arg in state["ins"] if s == state["build"] and word == "RUN"]
    check(runs, "the build stage runs nothing")
    for run in runs:
        for cmd in shell_commands(run):
            words = shlex.split(cmd)
            if words[0] == "make":
                targets = [w for w in words[1:] if "=" not in w]
                check(targets, f"{cmd!r}: make without a target")
                for t in targets:
                    check(t in state["rules"], f"{cmd!r}: the Makefile has no target {t}")
                    check(t in exercised, f"{cmd!r}: CI does not run make {t}")
                for w in words[1:]:
                    if "=" in w:
                        var = w.split("=")[0]
                        check(var in state["overridable"],
                              f"{cmd!r}: the Makefile does not take {var}")
            else:
                # Only a target's own recipe, run before make is installed.
                owner = [t for t, (_, recipe) in state["rules"].items()
                         if recipe == [cmd] and t in exercised]
                check(owner, f"{cmd!r} is not a CI target's recipe "
                             f"(make deps runs {deps_recipe})")


def runtime_stage_commands():
    runs = [arg for s, word, arg in state["ins"] if s == state["runtime"] and word == "RUN"]
    copies = {}
    for s, word, arg in state["ins"]:
        if s == state["runtime"] and word == "COPY" and not arg.startswith("--from"):
            src, dst = arg.split()[0], arg.split()[-1]
            copies[dst] = src
    for run in runs:
        for cmd in shell_commands(run):
            words = shlex.split(cmd)
            if words[0] == "sh":
                # The project's dependency script, in its runtime mode.
                check(copies.get(words[1]) == "scripts/deps.sh" and words[2:] == ["--runtime"],
                      f"{cmd!r} is not scripts/deps.sh --runtime")
            else:
                check(words[0] in IMAGE_HOUSEKEEPING, f"{cmd!r} exists only in the Dockerfile")
    # The runtime mode of the script is accepted and its packages exist
    # (everything is installed here, so it installs nothing).
    r = subprocess.run(["sh", os.path.join(A.source, "scripts/deps.sh"), "--runtime"],
                       capture_output=True, text=True, timeout=DEADLINE_S * 10)
    check(r.returncode == 0, f"scripts/deps.sh --runtime: {r.stderr}")


def runtime_packages():
    with open(os.path.join(A.source, "scripts/deps.sh")) as f:
        m = re.search(r'^RUNTIME_PACKAGES="([^"]*)"', f.read(), re.M)
    check(m, "scripts/deps.sh has no RUNTIME_PACKAGES")
    return m.group(1).split()


def dependency_closure(packages):
    """The packages apt installs for these: their Depends and Pre-Depends,
    recursively (installed packages only: all of them are, here)."""
    seen = set()
    todo = list(packages)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"package {p} is not installed")
        for alt in r.stdout.split(","):
            name = alt.split("|")[0].strip().split(" ")[0].split(":")[0]
            if name:
                todo.append(name)
    return seen


def install_tree():
    """The tree `make install` (its cmake --install) stages for the image."""
    root = os.path.join(TMP, "stage")
    env = {**os.environ, "DESTDIR": root}
    r = subprocess.run(["cmake", "--install", A.build, "--prefix", "/usr/local"], env=env,
                       capture_output=True, text=True, timeout=DEADLINE_S * 4)
    check(r.returncode == 0, f"cmake --install failed: {r.stderr[-1000:]}")
    return root


def copies_come_from_make_install():
    root = install_tree()
    state["stage"] = root
    from_build = [arg for s, word, arg in state["ins"]
                  if s == state["runtime"] and word == "COPY" and arg.startswith("--from=")]
    check(from_build, "the runtime stage copies nothing from the build stage")
    run = [shlex.split(arg) for s, word, arg in state["ins"]
           if s == state["build"] and word == "RUN" and "make install" in arg]
    check(run, "the build stage does not run make install")
    destdir = [w.split("=", 1)[1] for w in run[0] if w.startswith("DESTDIR=")]
    prefix = [w.split("=", 1)[1] for w in run[0] if w.startswith("PREFIX=")]
    check(destdir and prefix == ["/usr/local"], "make install without DESTDIR or PREFIX=/usr/local")
    copied = []
    for arg in from_build:
        words = arg.split()
        check(words[0] == f"--from={state['build']}", f"COPY {arg}: not from the build stage")
        for src in words[1:-1]:
            check(src.startswith(destdir[0] + prefix[0] + "/"),
                  f"COPY {src}: not from the installed tree {destdir[0]}{prefix[0]}")
            rel = src[len(destdir[0]):]
            check(os.path.exists(root + rel), f"COPY {src}: make install does not install {rel}")
            copied.append(root + rel)
    for prog in ("bin/celer-worker", "bin/taskctl"):
        check(any(c.endswith(prog) for c in copied), f"the image lacks {prog}")
    check(any(c.rstrip("/").endswith("lib/celer/modules") for c in copied),
          "the image lacks the modules")
    state["copied"] = copied


def owner_of(lib):
    """The Debian package that holds this library file, or None."""
    real = os.path.realpath(lib)
    for path in (lib, real, re.sub(r"^/lib", "/usr/lib", real), re.sub(r"^/usr/lib", "/lib", real)):
        q = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if q.returncode == 0:
            return q.stdout.split(":")[0]
    return None


def runtime_packages_cover_libraries():
    covered = dependency_closure(runtime_packages())
    files = []
    for c in state["copied"]:
        if os.path.isdir(c):
            files += [os.path.join(c, f) for f in sorted(os.listdir(c)) if f.endswith(".so")]
        else:
            files.append(c)
    for f in files:
        r = subprocess.run(["ldd", f], capture_output=True, text=True, timeout=DEADLINE_S)
        check(r.returncode == 0, f"ldd {f}: {r.stderr}")
        check("not found" not in r.stdout, f"{f} needs a library that is missing: {r.stdout}")
        libs = re.findall(r"=>\s+(/\S+)", r.stdout)
        if A.sanitize:
            # The sanitizer runtime and what it brings (libstdc++) are
            # the sanitizer build's own, not the image's.
            sanitizer = [owner_of(lib) for lib in libs if SANITIZER_LIBS.search(lib)]
            covered |= dependency_closure([p for p in sanitizer if p])
        for lib in libs:
            owner = owner_of(lib)
            check(owner, f"no package owns {lib}, which {os.path.basename(f)} loads")
            check(owner in covered,
                  f"{os.path.basename(f)} loads {lib} of package {owner}, "
                  f"which RUNTIME_PACKAGES does not bring")


def non_root_user():
    users = [arg for s, word, arg in state["ins"] if s == state["runtime"] and word == "USER"]
    check(users, "the runtime stage sets no USER")
    check(users[-1].split(":")[0] not in ("root", "0"), f"runs as {users[-1]}")
    run = " ".join(arg for s, word, arg in state["ins"] if s == state["runtime"] and word == "RUN")
    check(re.search(rf"useradd\b.*\b{re.escape(users[-1])}\b", run),
          f"the user {users[-1]} is not created")


def healthcheck_on_healthz():
    hc = [arg for s, word, arg in state["ins"] if s == state["runtime"] and word == "HEALTHCHECK"]
    check(hc, "no HEALTHCHECK")
    cmd = hc[-1]
    check("/healthz" in cmd and "curl" in cmd, f"the HEALTHCHECK is not a request to /healthz: {cmd}")
    check("curl" in runtime_packages(), "the HEALTHCHECK's curl is not a runtime package")
    env = " ".join(arg for s, word, arg in state["ins"] if s == state["runtime"] and word == "ENV")
    m = re.search(r"CELER_WORKER_METRICS_ADDR=(\S+)", env)
    check(m and "CELER_WORKER_METRICS_ADDR" in cmd,
          "the HEALTHCHECK's port does not follow CELER_WORKER_METRICS_ADDR")
    port = m.group(1).rsplit(":", 1)[1]
    exposed = [arg for s, word, arg in state["ins"] if s == state["runtime"] and word == "EXPOSE"]
    check(port in " ".join(exposed).split(), f"port {port} is not EXPOSEd")


def configuration_from_environment():
    ins = [(word, arg) for s, word, arg in state["ins"] if s == state["runtime"]]
    entry = [arg for word, arg in ins if word == "ENTRYPOINT"]
    check(entry == ['["/usr/local/bin/celer-entrypoint"]'], f"ENTRYPOINT is {entry}")
    check(not [arg for word, arg in ins if word == "CMD"],
          "a CMD holds configuration that belongs in the environment")
    check(not [arg for word, arg in ins if word == "ARG"], "the runtime stage takes build ARGs")
    copies = [arg.split() for word, arg in ins if word == "COPY" and not arg.startswith("--from")]
    check(["docker/entrypoint.sh", "/usr/local/bin/celer-entrypoint"] in copies,
          "docker/entrypoint.sh is not the entry point")
    # COPY keeps the file's mode: the entry point must be executable.
    check(os.access(os.path.join(A.source, "docker/entrypoint.sh"), os.X_OK),
          "docker/entrypoint.sh is not executable")
    # Every CELER_WORKER_* variable of the image is a worker flag.
    flags = value_flags(help_text(os.path.join(A.build, "bin/celer-worker")))
    env = " ".join(arg for word, arg in ins if word == "ENV")
    for var in re.findall(r"CELER_WORKER_([A-Z_]+)=", env):
        flag = var.lower().replace("_", "-")
        check(flag in flags, f"CELER_WORKER_{var}: celer-worker has no --{flag} VALUE")
    stop = [arg for word, arg in ins if word == "STOPSIGNAL"]
    check(stop == ["SIGTERM"], f"STOPSIGNAL is {stop}")


def ignore_file_keeps_build_trees_out():
    with open(os.path.join(A.source, "docker/Dockerfile.dockerignore")) as f:
        patterns = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    check("build*" in patterns and ".git" in patterns,
          "docker/Dockerfile.dockerignore does not leave out build trees and .git")


try:
    status = run_checks("deploy_dockerfile", [
        ("two stages from debian:bookworm-slim", parse),
        ("the build stage runs only Makefile targets CI runs", build_stage_runs_only_ci_targets),
        ("the runtime stage installs through scripts/deps.sh --runtime", runtime_stage_commands),
        ("the runtime stage copies what make install installs", copies_come_from_make_install),
        ("RUNTIME_PACKAGES bring every library the programs and modules load",
         runtime_packages_cover_libraries),
        ("a non-root user", non_root_user),
        ("a HEALTHCHECK on /healthz", healthcheck_on_healthz),
        ("configuration from the environment", configuration_from_environment),
        ("the build context leaves out build trees", ignore_file_keeps_build_trees_out),
    ])
finally:
    rmtree(TMP)
sys.exit(status)
