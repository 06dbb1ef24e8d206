#!/usr/bin/python3
"""One table: Celery, RQ, Sidekiq, BullMQ (run.py's JSON) and Celer
(celer-bench's JSON report), with Celer's ratio to the best peer.

    /usr/bin/python3 bench/peers/compare.py PEERS.json CELER.json

PEERS.json is what run.py --out writes.  CELER.json is `celer-bench all
--json FILE`'s report: its "results" rows (workload, measure, median, and on
the first row of each run the series redis_cpu_us_per_task,
worker_cpu_us_per_task, worker_peak_rss_mib, worker_peak_pss_mib) are read as
    enqueue_one_tps   enqueue row whose measure says "one"
    enqueue_bulk_tps  enqueue row whose measure says "batch"
    drain_tps         drain row "(best config)" (else the fastest drain row)
    drain_fair_tps    drain row "(fair)"
    redis_cpu_us_per_task   Redis µs of the enqueue-one row + the best drain row
    worker_cpu_us_per_task  worker µs of the best drain row
    latency_p50_ms / latency_p99_ms   latency rows "enqueue→start p50/p99"
    worker_rss_mib / worker_pss_mib   peak RSS / PSS of the best drain row
A CELER.json that instead has a top-level "metrics" object with these names
(numbers, or objects with a "median") is taken as it is.

Ratio: how many times better Celer is than the best peer on that row
(Celer/best for rates, best/Celer for costs and latencies); below 1 = worse.
"""
import json
import sys

PEERS = ["celery", "rq", "sidekiq", "bullmq"]
TITLES = {"celery": "Celery", "rq": "RQ", "sidekiq": "Sidekiq", "bullmq": "BullMQ"}

# (label, metric, format, higher is better)
ROWS = [
    ("enqueue, one call per task (tasks/s)", "enqueue_one_tps", "{:,.0f}", True),
    ("enqueue, bulk API (tasks/s)", "enqueue_bulk_tps", "{:,.0f}", True),
    ("drain N queued tasks, best config (tasks/s)", "drain_tps", "{:,.0f}", True),
    ("drain, one task per fetch (fair, tasks/s)", "drain_fair_tps", "{:,.0f}", True),
    ("Redis CPU per task, enqueue + drain (µs)", "redis_cpu_us_per_task", "{:,.1f}", False),
    ("worker CPU per task (µs)", "worker_cpu_us_per_task", "{:,.1f}", False),
    ("enqueue → start latency p50 (ms, idle worker)", "latency_p50_ms", "{:,.2f}", False),
    ("enqueue → start latency p99 (ms, idle worker)", "latency_p99_ms", "{:,.2f}", False),
    ("worker resident memory, whole worker (MiB RSS)", "worker_rss_mib", "{:,.1f}", False),
    ("worker memory, whole worker (MiB PSS)", "worker_pss_mib", "{:,.1f}", False),
]


def _median(v):
    if isinstance(v, dict):
        v = v.get("median")
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def celer_metrics(rep):
    """Canonical metrics from celer-bench's report (or a plain mapping)."""
    if isinstance(rep.get("metrics"), dict):
        return {k: _median(v) for k, v in rep["metrics"].items()}, []
    rows = rep.get("results") or []
    m, notes = {}, []

    def find(workload, pred):
        for r in rows:
            if r.get("workload") == workload and pred(r.get("measure", "")):
                return r
        return None

    one = find("enqueue", lambda s: "one" in s)
    bulk = find("enqueue", lambda s: "batch" in s)
    best = find("drain", lambda s: "best" in s)
    if best is None:
        drains = [r for r in rows if r.get("workload") == "drain" and _median(r) is not None]
        best = max(drains, key=_median) if drains else None
    fair = find("drain", lambda s: "fair" in s)
    p50 = find("latency", lambda s: "start" in s and "p50" in s)
    p99 = find("latency", lambda s: "start" in s and "p99" in s)
    m["enqueue_one_tps"] = _median(one)
    m["enqueue_bulk_tps"] = _median(bulk)
    m["drain_tps"] = _median(best)
    m["drain_fair_tps"] = _median(fair)
    m["latency_p50_ms"] = _median(p50)
    m["latency_p99_ms"] = _median(p99)
    if best:
        m["worker_cpu_us_per_task"] = _median(best.get("worker_cpu_us_per_task"))
        m["worker_rss_mib"] = _median(best.get("worker_peak_rss_mib"))
        m["worker_pss_mib"] = _median(best.get("worker_peak_pss_mib"))
        r_drain = _median(best.get("redis_cpu_us_per_task"))
        r_enq = _median(one.get("redis_cpu_us_per_task")) if one else None
        if r_drain is not None and r_enq is not None:
            m["redis_cpu_us_per_task"] = r_enq + r_drain
        notes.append("Celer drain: %s" % best.get("measure"))
    if bulk:
        notes.append("Celer bulk: %s" % bulk.get("measure"))
    if p50:
        notes.append("Celer latency: %s" % p50.get("measure"))
        for r in rows:
            if (r.get("workload") == "latency" and r is not p50 and r is not p99
                    and _median(r) is not None):
                notes.append("  also %s: %.3f" % (r.get("measure"), _median(r)))
    idle = (rep.get("idle_worker") or {}).get("cpu_ms")
    if isinstance(idle, (int, float)):
        notes.append("Celer's worker CPU counts its start-up and shutdown (an idle worker's "
                     "start + stop: %.1f ms CPU); the peers' counts only the drain." % idle)
    ceil = [r for r in rows if r.get("workload") == "ceiling" and _median(r) is not None]
    for r in ceil:
        if r.get("unit") == "tasks/s":
            notes.append("Redis-bound ceiling, %s: %s" % (r.get("measure", "").strip(),
                                                          "{:,.0f}".format(_median(r))))
    return m, notes


def peer_value(pr, key):
    met = (pr or {}).get("metrics") or {}
    if key not in met:
        return None, ("failed" if (pr or {}).get("errors") else "-")
    v = met[key].get("median")
    if v is None:
        return None, ("none" if key == "enqueue_bulk_tps" else "-")
    if key == "drain_fair_tps" and "drain_fair_stalled" in met:
        return v, "*"
    return v, None


def ratio_text(celer, best, best_name, higher):
    if celer is None or best is None or celer <= 0 or best <= 0:
        return "-"
    r = celer / best if higher else best / celer
    return "%s× vs %s" % (("{:,.1f}" if r < 100 else "{:,.0f}").format(r), TITLES[best_name])


def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    out = ["| " + " | ".join(str(h).ljust(widths[i]) for i, h in enumerate(header)) + " |",
           "| " + " | ".join("-" * w for w in widths) + " |"]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                                     for i, c in enumerate(r)) + " |")
    return "\n".join(out)


def compare(peers_rep, celer_rep):
    cm, notes = celer_metrics(celer_rep) if celer_rep else ({}, ["no Celer report"])
    prs = peers_rep.get("peers", {})
    header = ["workload"]
    for p in PEERS:
        v = (prs.get(p) or {}).get("version")
        header.append("%s %s" % (TITLES[p], v.split()[0]) if v else TITLES[p])
    header += ["Celer %s" % celer_rep.get("celer_version", "") if celer_rep else "Celer",
               "Celer vs best peer"]
    rows = []
    for label, key, f, higher in ROWS:
        row, best, best_name = [label], None, None
        for p in PEERS:
            v, text = peer_value(prs.get(p), key)
            row.append(text if v is None else f.format(v) + (text or ""))
            if v is not None and (best is None or (v > best if higher else v < best)):
                best, best_name = v, p
        c = cm.get(key)
        row.append("-" if c is None else f.format(c))
        row.append(ratio_text(c, best, best_name, higher))
        rows.append(row)
    out = [table(rows, header),
           "Celer vs best peer: how many times better Celer is than the best peer on the row "
           "(above 1: ahead; below 1: behind)."]
    pm = peers_rep.get("machine", {})
    cmach = (celer_rep or {}).get("machine", {})
    out.append("")
    out.append("Peers: n=%s per run, %s repetitions, medians; Redis %s over %s; %s cores." % (
        peers_rep.get("params", {}).get("n"), peers_rep.get("params", {}).get("reps"),
        pm.get("redis"), pm.get("transport"), pm.get("cpus")))
    if celer_rep:
        cfg = celer_rep.get("config", {})
        out.append("Celer: tasks=%s (per-workload default when null), %s repetitions; "
                   "Redis %s, %s." % (cfg.get("tasks"), cfg.get("repeat"),
                                      cmach.get("redis_version"), cmach.get("broker")))
        if celer_rep.get("ok") is False:
            out.append("Celer's run reported an error: %s" % celer_rep.get("error"))
        ct = str(cmach.get("broker", "")).lower()
        if pm.get("transport") and ct and (("unix" in ct) != ("unix" in pm["transport"])):
            out.append("WARNING: Celer and the peers reached Redis over different transports.")
    for p in PEERS:
        pr = prs.get(p)
        if pr:
            out.append("%s: %s" % (TITLES[p], pr.get("config") or "not run"))
            for e in pr.get("errors") or []:
                out.append("  FAILED: %s" % e)
            st = ((pr.get("metrics") or {}).get("drain_fair_stalled") or {}).get("runs")
            if st:
                out.append("  * its fair drain stalled (rate taken over the time limit): %s"
                           % "; ".join(st))
    out += notes
    out.append("Peers' fair drain: Celery with prefetch multiplier 1 and task_acks_late, BullMQ "
               "with concurrency 2; RQ and Sidekiq always fetch one task at a time, so their "
               "fair row is their best drain.")
    return "\n".join(out)


def compare_files(peers_path, celer_path):
    with open(peers_path) as f:
        peers_rep = json.load(f)
    celer_rep = None
    try:
        with open(celer_path) as f:
            celer_rep = json.load(f)
    except (OSError, ValueError) as e:
        sys.stderr.write("compare: cannot read Celer's report %s: %s\n" % (celer_path, e))
    return compare(peers_rep, celer_rep)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    print(compare_files(sys.argv[1], sys.argv[2]))
