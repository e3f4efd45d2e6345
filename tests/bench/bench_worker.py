#!/usr/bin/python3
"""bench_worker - a worker's memory per twin and its recovery time.

One broker, one gateway and ONE worker (so every twin is on it), fed by
`twinctl sim --twins N` until every twin has all its properties. Then:

  memory    the worker's resident set (VmRSS) before and after ingest; the
            difference divided by the twins it holds is bytes per twin
            (allocator overhead, the twin table and property names included;
            RocksDB's memtables and block cache are in it too, so the figure is
            an upper bound of what a twin costs);
  recovery  the worker is SIGKILLed and started again on the same data: the
            time from exec to its "ready" log line (state loaded and the log
            replayed, serving) and to the first successful `twinctl twin get`;
            then the same after a clean stop (SIGTERM: a final checkpoint, so
            nothing to replay).

    python3 tests/bench/bench_worker.py --build build --twins 1000000

The sim's twins have 1 to 5 properties (air stations 5, traffic counters 2,
parking bays 1); the report says the mean.
"""

import argparse
import os
import re
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import twinmesh_cluster  # noqa: E402


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker_stats(c):
    for n in c.status()["nodes"]:
        if n["id"] == "worker-0":
            return n["stats"]
    return {}


def wait_log(c, name, pattern, since, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = c.log(name)[since:]
        m = re.search(pattern, text)
        if m:
            return m
        time.sleep(0.01)
    return None


def recover(c, entity, sig):
    c.kill("worker-0", sig)
    since = len(c.log("worker-0"))
    t0 = time.monotonic()
    c.start("worker-0")
    m = wait_log(c, "worker-0", r"worker: ready", since, 300)
    t_ready = time.monotonic() - t0
    rec = re.search(r"recovered twins=(\d+) log_records=(\d+) bad_twins=(\d+) ms=(\d+)",
                    c.log("worker-0")[since:])
    t_get = None
    while time.monotonic() - t0 < 300:
        r = c.twinctl("twin", "get", entity, check=False, timeout=30)
        if r.returncode == 0:
            t_get = time.monotonic() - t0
            break
        time.sleep(0.02)
    return {"ready_s": t_ready if m else None, "first_get_s": t_get,
            "twins": int(rec.group(1)) if rec else None,
            "log_records": int(rec.group(2)) if rec else None,
            "recover_ms": int(rec.group(4)) if rec else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--twins", type=int, default=1000000)
    ap.add_argument("--duration", default="15s", help="sim duration (must cover every series)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    with twinmesh_cluster.Cluster(a.build, workers=1, keep=a.keep) as c:
        pid = c.pid("worker-0")
        rss0 = rss_bytes(pid)
        s = c.sim(twins=a.twins, duration=a.duration, batch=1000, window=8,
                  timeout=3600)
        time.sleep(2.5)
        st = worker_stats(c)
        twins = st.get("twins", 0)
        rss1 = rss_bytes(pid)
        series = s.get("series", 0)
        print("ingest: %d readings acked at %d/s; %d twins, %d series (%.2f properties/twin)"
              % (s["readings_acked"], s["rate_per_s"], twins, series,
                 series / twins if twins else 0))
        if twins < a.twins:
            print("warning: only %d of %d twins were reached; raise --duration" % (twins, a.twins))
        print("memory: worker VmRSS %.1f MiB before, %.1f MiB after: %.0f bytes/twin "
              "(%.0f bytes/series)" % (rss0 / 2**20, rss1 / 2**20,
                                       (rss1 - rss0) / max(twins, 1),
                                       (rss1 - rss0) / max(series, 1)))
        entity = "milan/air-%06d" % (a.twins - 5 if a.twins > 5 else 0)
        for label, sig in (("after SIGKILL", signal.SIGKILL), ("after SIGTERM", signal.SIGTERM)):
            r = recover(c, entity, sig)
            print("recovery %s: ready in %.2f s, first twin get in %.2f s "
                  "(worker: %s twins loaded, %s log records replayed, %s ms)"
                  % (label, r["ready_s"] or -1, r["first_get_s"] or -1, r["twins"],
                     r["log_records"], r["recover_ms"]))


if __name__ == "__main__":
    main()
