#!/usr/bin/python3
"""bench_restart - a worker's restart time on a kept store, median of runs.

Recovery is measured on the same data every time: a store kept from one
bench_worker run (`--keep`) is copied afresh before each start (a start
checkpoints and trims, so it would change the store), the worker is started
on the copy with the run's keys, and the time from exec to its "worker:
ready" line (state loaded, log replayed, serving) is taken, with the
process's CPU time at that moment (user + system: above the wall time when
the restore's helper thread ran in parallel) and the worker's own recovery
log lines. The worker is then SIGKILLed. No broker is needed: recovery
reads the shard map the worker saved.

    python3 tests/bench/bench_worker.py --build build --twins 1000000 --keep
    python3 tests/bench/bench_restart.py --build build --runs 3 \\
        --store /tmp/twinmesh-XXXX/data/worker-0 --keys /tmp/twinmesh-XXXX/keys

On shared 2-core VMs the wall time varies by a factor of two with what else
runs; compare builds by alternating them (--build A --build B).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(build, store, keys, work):
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["cp", "-a", store, work], check=True)
    log_path = work + ".log"
    argv = [os.path.join(build, "worker", "twinmesh-worker"), "--keys", keys, "--id",
            "worker-0", "--bind", "tcp://127.0.0.1:*", "--broker", "tcp://127.0.0.1:1",
            "--broker-pub", "tcp://127.0.0.1:2", "--data-dir", work, "--fsync=true"]
    with open(log_path, "w") as log:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                with open(log_path) as f:
                    text = f.read()
                if "worker: ready" in text:
                    break
                if p.poll() is not None:
                    sys.exit("worker exited:\n" + text)
                time.sleep(0.005)
            ready = time.monotonic() - t0
            with open("/proc/%d/stat" % p.pid) as f:
                st = f.read().rsplit(")", 1)[1].split()
            cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
        finally:
            p.kill()
            p.wait()
    rec = re.search(r"recovered twins=(\d+) log_records=(\d+)", text)
    load = re.search(r"load_ms=(\d+)", text)
    return {"ready": ready, "cpu": cpu, "twins": int(rec.group(1)) if rec else None,
            "records": int(rec.group(2)) if rec else None,
            "load_ms": int(load.group(1)) if load else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="append", help="build directory (repeat to alternate)")
    ap.add_argument("--store", required=True, help="a worker's data_dir, kept")
    ap.add_argument("--keys", required=True, help="the keys directory of the same run")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    builds = a.build or ["build"]
    tmp = tempfile.mkdtemp(prefix="bench-restart-")
    results = {b: [] for b in builds}
    try:
        for i in range(a.runs):
            for b in builds:
                r = one_run(b, a.store, a.keys, os.path.join(tmp, "store"))
                results[b].append(r)
                print("%s run %d: ready %.2f s, cpu %.2f s (twins %s, log records %s, "
                      "load_ms %s)" % (b, i, r["ready"], r["cpu"], r["twins"], r["records"],
                                       r["load_ms"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for b in builds:
        rs = results[b]
        print("%s: median of %d: ready %.2f s, cpu %.2f s"
              % (b, len(rs), statistics.median(r["ready"] for r in rs),
                 statistics.median(r["cpu"] for r in rs)))


if __name__ == "__main__":
    main()
