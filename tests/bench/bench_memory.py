#!/usr/bin/python3
"""bench_memory - bytes per twin of 8 properties: twinmesh's table against Redis.

Runs build/tests/bench/bench_memory (N twins x 8 properties fed through
tm_twins_apply, K readings per series for each K asked, each K in its own
process) and then a fresh redis-server on 127.0.0.1 (a free port, a
temporary directory, --save '' --appendonly no) holding the same N twins,
each one hash of its 8 properties (HSET key field value ..., loaded with
redis-cli --pipe), and prints both per twin and the ratio twinmesh / Redis.

What the two hold is not the same, and the ratio must be read with that
in mind: Redis keeps only each property's latest value (as a short
string in a listpack), while a twinmesh twin also keeps per property the
reading count, its timestamp, running mean and variance, min, max, EWMA,
a Holt forecast, an anomaly score and quality streaks, the twin's sync
state, and the open history chunk of every series (the readings since the
chunk opened, compressed). Redis's figure is used_memory's growth (its
allocator's view, jemalloc) and used_memory_rss's; twinmesh's is the heap's
growth (mallinfo2) and VmRSS's.

    python3 tests/bench/bench_memory.py --build build --twins 200000 --k 1,60,120,0

Everything it starts is stopped when it ends, however it ends.
"""

import argparse
import os
import random
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

from bench_ingest import RedisServer  # noqa: E402

PROPS = ["pm25", "pm10", "no2", "o3", "temperature", "humidity", "pressure", "co"]
START = [12.0, 25.0, 30.0, 40.0, 18.5, 55.0, 1013.0, 0.4]


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def run_redis(binary, n):
    rng = random.Random(1)
    server = RedisServer(binary, persist=False)
    try:
        before = server.info_memory()
        chunks = []
        for i in range(n):
            args = ["HSET", "milan/air-%06d" % i]
            for p, s in zip(PROPS, START):
                args += [p, "%.1f" % (s + rng.randrange(50) / 10.0)]
            chunks.append(resp(*args))
        out = server.cli("--pipe", stdin=b"".join(chunks))
        if "errors: 0" not in out:
            raise RuntimeError("redis-cli --pipe: " + out.strip())
        after = server.info_memory()
        size = int(server.cli("DBSIZE").strip())
        if size != n:
            raise RuntimeError("Redis holds %d keys, not %d" % (size, n))
        sample = int(server.cli("MEMORY", "USAGE", "milan/air-000000").strip())
        version = server.cli("INFO", "server")
        version = re.search(r"redis_version:(\S+)", version).group(1)
        return {
            "used": (int(after["used_memory"]) - int(before["used_memory"])) / n,
            "rss": (int(after["used_memory_rss"]) - int(before["used_memory_rss"])) / n,
            "sample": sample,
            "version": version,
        }
    finally:
        server.stop()


def run_ours(build, n, ks):
    exe = os.path.join(build, "tests", "bench", "bench_memory")
    out = subprocess.run([exe, str(n), ks], capture_output=True, check=True,
                         timeout=3600).stdout.decode()
    sys.stdout.write(out)
    rows = []
    for line in out.splitlines():
        if line.startswith("RESULT "):
            rows.append({k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--twins", type=int, default=200000)
    ap.add_argument("--k", default="1,60,120,0",
                    help="readings per series, comma-separated (0: open chunks of 0 .. 119 "
                         "points, evenly spread, as in a worker that has run for a while)")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    a = ap.parse_args(argv)
    ours = run_ours(a.build, a.twins, a.k)
    r = run_redis(a.redis_server, a.twins)
    print()
    print("Redis %s, %d hashes of 8 fields: used_memory %.0f bytes/key, used_memory_rss "
          "%.0f, MEMORY USAGE of one key %d" % (r["version"], a.twins, r["used"], r["rss"],
                                                r["sample"]))
    print("(Redis keeps the latest values only; twinmesh also its analytics and open history)")
    print()
    print("| K | twinmesh heap/twin | twinmesh VmRSS/twin | Redis used_memory/key | "
          "heap ratio ours/Redis | RSS ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in ours:
        print("| %s | %.0f | %.0f | %.0f | %.1fx | %.1fx |" % (
            "%d" % row["k"] if row["k"] else "mix", row["heap_per_twin"], row["rss_per_twin"], r["used"],
            row["heap_per_twin"] / r["used"], row["rss_per_twin"] / max(r["rss"], 1.0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
