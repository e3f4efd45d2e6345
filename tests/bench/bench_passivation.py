#!/usr/bin/python3
"""bench_passivation - what passivation saves and what it costs.

One broker, one gateway and ONE worker with a memory budget it is always
over (--budget, default 1 byte) and --idle (default 20 s), fed by
`twinctl sim --twins N` for --duration. Then, while every twin is still
active (within --idle of the last reading) and again once the worker has
passivated them all:

  memory    the worker's heap in use (its status' heap_bytes, what the budget
            counts) and resident set (VmRSS), and per twin;
  queries   `twinctl query` wall time of a count and a GROUP BY over every
            twin (median of --reps): active twins are scanned in memory,
            passive ones read from the store;
  get       TWIN_GET latency straight to the worker (no twinctl start-up),
            median and p99 over --gets twins: of an active twin, and of a
            passive one (which brings it back: one RocksDB read and decode).

    python3 tests/bench/bench_passivation.py --build build --twins 200000

Ratios are passive/active within the one run. Everything it starts is
stopped when it ends.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import tm_proto  # noqa: E402
from bench_worker import rss_bytes, worker_stats  # noqa: E402
import twinmesh_cluster  # noqa: E402

QUERIES = ("SELECT count(*) FROM twins",
           "SELECT district, count(*), avg(pm25), max(vehicles) FROM twins GROUP BY district")


def time_queries(c, reps):
    out = []
    for q in QUERIES:
        times = []
        for _ in range(reps):
            t0 = time.monotonic()
            r = c.twinctl("query", q, "--format", "json", "--cert",
                          os.path.join(c.keys_dir, "analyst.key_secret"), timeout=300)
            times.append(time.monotonic() - t0)
            ans = json.loads(r.stdout)
            if ans.get("partial"):
                raise SystemExit("query answered partially: %s" % q)
        out.append((q, statistics.median(times), ans["rows"][0] if ans["rows"] else None))
    return out


def time_gets(c, entities):
    cl = tm_proto.Client(c.endpoint("worker-0"), os.path.join(c.keys_dir, "worker-0.key"),
                         os.path.join(c.keys_dir, "admin.key_secret"))
    times = []
    try:
        for e in entities:
            t0 = time.perf_counter()
            rep = cl.request(tm_proto.TWIN_GET, tm_proto.field_bytes(1, e), epoch=1)
            times.append(time.perf_counter() - t0)
            if rep is None or rep[0]["status"] != "OK":
                raise SystemExit("TWIN_GET %s: %s" % (e, rep and rep[0]))
    finally:
        cl.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def snapshot(c, pid, reps):
    st = worker_stats(c)
    return {"stats": st, "rss": rss_bytes(pid), "queries": time_queries(c, reps)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--twins", type=int, default=200000)
    ap.add_argument("--duration", default="10s", help="sim duration (must cover every series)")
    ap.add_argument("--budget", type=int, default=1, help="the worker's memory_budget, bytes")
    ap.add_argument("--idle", type=int, default=20, help="passivate_idle, seconds")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gets", type=int, default=300)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    extra = {"worker": {"memory_budget": a.budget, "passivate_idle": "%ds" % a.idle,
                        "checkpoint_interval": "1s"}}
    with twinmesh_cluster.Cluster(a.build, workers=1, keep=a.keep, extra_args=extra) as c:
        pid = c.pid("worker-0")
        rss0 = rss_bytes(pid)
        s = c.sim(twins=a.twins, duration=a.duration, batch=1000, window=8, timeout=3600)
        t_end = time.monotonic()
        time.sleep(1.5)
        r = c.twinctl("query", "SELECT entity FROM twins LIMIT %d" % (2 * a.gets), "--format",
                      "json", "--cert", os.path.join(c.keys_dir, "analyst.key_secret"))
        entities = [row[0] for row in json.loads(r.stdout)["rows"]]
        random.Random(7).shuffle(entities)
        active = snapshot(c, pid, a.reps)
        time_gets(c, entities[a.gets:a.gets + 20])     # warm up the client's path
        got_active = time_gets(c, entities[a.gets:])
        if time.monotonic() - t_end > a.idle:
            print("warning: the active measurements took longer than --idle; some twins "
                  "may have passivated meanwhile")
        deadline = time.monotonic() + a.idle + 600
        while time.monotonic() < deadline:
            st = worker_stats(c)
            if st.get("passive_twins", 0) >= 0.99 * a.twins and st.get("twins", 1) <= 0.01 * a.twins:
                break
            time.sleep(1)
        passive = snapshot(c, pid, a.reps)
        got_passive = time_gets(c, entities[:a.gets])
        n = a.twins
        print("ingest: %d readings acked at %d/s, %d twins (VmRSS %.1f MiB before ingest)"
              % (s["readings_acked"], s["rate_per_s"], active["stats"].get("twins", 0),
                 rss0 / 2**20))
        for label, snap in (("active", active), ("passive", passive)):
            st = snap["stats"]
            print("%-8s twins=%d passive=%d heap %.1f MiB (%.0f B/twin), VmRSS %.1f MiB"
                  % (label, st.get("twins", 0), st.get("passive_twins", 0),
                     st.get("heap_bytes", 0) / 2**20, st.get("heap_bytes", 0) / n,
                     snap["rss"] / 2**20))
        ha, hp = active["stats"].get("heap_bytes", 1), passive["stats"].get("heap_bytes", 0)
        print("heap passive/active: %.3f" % (hp / ha))
        for (q, ta, ra), (_, tp, rp) in zip(active["queries"], passive["queries"]):
            print("query %-70s active %.3f s, passive %.3f s (x%.1f)%s"
                  % (q[:70], ta, tp, tp / ta, "" if ra == rp else "  ANSWERS DIFFER %s %s"
                     % (ra, rp)))
        print("twin get: active median %.2f ms p99 %.2f ms; passive (reactivation) median "
              "%.2f ms p99 %.2f ms (x%.1f)"
              % (got_active[0] * 1e3, got_active[1] * 1e3, got_passive[0] * 1e3,
                 got_passive[1] * 1e3, got_passive[0] / got_active[0]))


if __name__ == "__main__":
    main()
