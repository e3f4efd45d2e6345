#!/usr/bin/python3
"""bench_cost - CPU time per reading of each daemon, to compare two builds.

Wall-clock throughput on these shared 2-core machines swings by 2x from one
minute to the next; CPU time per reading, read from /proc for each process,
is far steadier. For each build given (alternating, --rounds times), start a
cluster (broker, gateway, 2 workers), run `twinctl sim` at full speed, and
print the workers' and the gateway's CPU nanoseconds per acked reading.

    python3 tests/bench/bench_cost.py --build /tmp/before/build --build build
"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

import twinmesh_cluster  # noqa: E402


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(build, a):
    with twinmesh_cluster.Cluster(build, workers=2) as c:
        names = ["worker-0", "worker-1", "gateway-0"]
        pids = [c.pid(n) for n in names]
        before = [cpu_s(p) for p in pids]
        s = c.sim(twins=a.twins, duration=a.duration, batch=a.batch, window=a.window)
        after = [cpu_s(p) for p in pids]
        n = s["readings_acked"]
        workers = (after[0] - before[0] + after[1] - before[1]) / n * 1e9
        gateway = (after[2] - before[2]) / n * 1e9
        return n, workers, gateway


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="append", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--twins", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--window", type=int, default=8)
    a = ap.parse_args()
    results = {b: [] for b in a.build}
    for r in range(a.rounds):
        for b in a.build:
            n, w, g = one(b, a)
            results[b].append((n, w, g))
            print("round %d %-30s %9d readings  workers %5.0f ns/reading  gateway %5.0f ns/reading"
                  % (r + 1, b, n, w, g), flush=True)
    for b in a.build:
        rs = results[b]
        print("median %-30s %9d readings  workers %5.0f ns/reading  gateway %5.0f ns/reading"
              % (b, statistics.median(x[0] for x in rs), statistics.median(x[1] for x in rs),
                 statistics.median(x[2] for x in rs)))


if __name__ == "__main__":
    main()
