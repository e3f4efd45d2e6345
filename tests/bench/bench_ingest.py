#!/usr/bin/python3
"""bench_ingest - twinmesh's ingest path against Redis doing the same job.

For each of --runs runs:

  twinmesh  a fresh cluster (broker, 2 workers, 1 gateway, fsync on, via
            tests/lib/twinmesh_cluster.py) fed by
            `twinctl sim --twins T --batch B --window W --duration D --json`;
  redis     a fresh redis-server on 127.0.0.1 (a free port, a temporary
            directory, --appendonly yes --appendfsync everysec --save '') fed
            by redis_ingest with the same twins, batch, window and duration:
            per reading HSET (latest value) + XADD (history), pipelined.

Then a table of readings/s and batch ack latency p50/p99 per run, the
medians, the ratio twinmesh/redis, and what the run ran on (RocksDB build,
Redis version, CPU). Every run starts from empty stores, so the runs are
alike. Note what each side promises: twinmesh acks after fsync of the
worker's log; Redis with appendfsync everysec acks before its fsync and can
lose up to about a second of acked writes on a crash.

    python3 tests/bench/bench_ingest.py --build build --duration 10 --runs 3

Everything it starts is stopped when it ends, however it ends.
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True     # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import twinmesh_cluster  # noqa: E402

_cleanups = []


def _cleanup_all():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - best effort, report and go on
            sys.stderr.write("bench_ingest: cleanup: %s\n" % e)


atexit.register(_cleanup_all)


def _on_signal(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def log(msg):
    sys.stderr.write("bench_ingest: %s\n" % msg)
    sys.stderr.flush()


def parse_duration_s(text):
    t = str(text).strip()
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if t.endswith(suffix):
            return float(t[:-len(suffix)]) * mult
    return float(t)


# --------------------------------------------------------------------- environment

def _run_text(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info(redis_server):
    info = {}
    info["rocksdb_pkgconfig"] = _run_text(["pkg-config", "--modversion", "rocksdb"])
    pkgs = _run_text(["dpkg-query", "-W", "-f", "${Package} ${Version}\n", "librocksdb*"])
    if pkgs:
        pkgs = [l for l in pkgs.splitlines() if l.split()[1:]]  # installed ones have a version
    info["rocksdb_debian"] = ", ".join(pkgs) if pkgs else None
    info["redis_server"] = _run_text([redis_server, "--version"]) if redis_server else None
    info["hiredis"] = _run_text(["pkg-config", "--modversion", "hiredis"])
    try:
        info["nproc"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["nproc"] = os.cpu_count()
    info["loadavg_start"] = " ".join("%.2f" % x for x in os.getloadavg())
    info["cpu_model"] = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def ensure_redis(redis_server, install):
    """Path of redis-server; installs the Debian package if allowed and missing."""
    path = redis_server or shutil.which("redis-server") or "/usr/bin/redis-server"
    if os.access(path, os.X_OK):
        return path
    if not install:
        raise SystemExit("bench_ingest: redis-server not found (apt-get install -y "
                         "redis-server, or scripts/install-deps.sh bench, or --install)")
    installed = subprocess.run(["dpkg", "-s", "redis-server"], capture_output=True).returncode == 0
    if not installed:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-q", "redis-server"]
        if os.geteuid() != 0:
            cmd = ["sudo"] + cmd
        log("installing redis-server")
        if subprocess.run(cmd, env=env, timeout=600).returncode != 0:
            subprocess.run(cmd[:-4] + ["update", "-q"], env=env, timeout=600)
            subprocess.run(cmd, env=env, timeout=600, check=True)
    path = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(path, os.X_OK):
        raise SystemExit("bench_ingest: redis-server still not found after install")
    return path


# --------------------------------------------------------------------- redis

class RedisServer:
    """A throwaway redis-server on 127.0.0.1 in its own temporary directory."""

    def __init__(self, binary, tmp_root=None):
        self.dir = tempfile.mkdtemp(prefix="twinmesh-redis-", dir=tmp_root)
        self.proc = None
        self.port = None
        _cleanups.append(self.stop)
        for attempt in range(5):
            self.port = twinmesh_cluster.free_port()
            argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--dir", self.dir, "--appendonly", "yes", "--appendfsync", "everysec",
                    "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                    "--logfile", os.path.join(self.dir, "redis.log")]
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
            if self._wait_ping(10.0):
                return
            self._kill()
            text = self.log_tail()
            if "in use" not in text.lower():
                break
        raise RuntimeError("redis-server did not start; log ends:\n" + self.log_tail())

    def _wait_ping(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def log_tail(self, n=20):
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def stop(self):
        self._kill()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self.stop in _cleanups:
            _cleanups.remove(self.stop)


def run_redis(binary, redis_ingest, a, seed):
    server = RedisServer(binary, a.tmp_root)
    try:
        argv = [redis_ingest, "--port", str(server.port), "--twins", str(a.twins),
                "--batch", str(a.batch), "--window", str(a.window),
                "--duration", "%gs" % a.duration_s, "--seed", str(seed), "--json"]
        if a.step:
            argv += ["--step", a.step]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=a.duration_s + 120)
        if r.returncode != 0:
            raise RuntimeError("redis_ingest failed (rc=%d): %s" % (r.returncode, r.stderr))
        return json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        server.stop()


# --------------------------------------------------------------------- twinmesh

def run_twinmesh(a, seed):
    c = twinmesh_cluster.Cluster(a.build, workers=a.workers, gateways=1, fsync=True,
                                 tmp_root=a.tmp_root, keep=a.keep)
    _cleanups.append(c.stop_all)
    try:
        kw = dict(twins=a.twins, batch=a.batch, window=a.window, duration=a.duration_s,
                  seed=seed)
        if a.step:
            kw["step"] = a.step
        if a.rate is not None:
            kw["rate"] = a.rate
        #  check=False: a run with refused or failed batches still has a
        #  summary; the report flags it.
        return c.sim(timeout=a.duration_s + 120, check=False, **kw)
    finally:
        c.stop_all()
        if a.keep:
            log("kept %s" % c.tmp)
        if c.stop_all in _cleanups:
            _cleanups.remove(c.stop_all)


# --------------------------------------------------------------------- report

def _fmt_rate(v):
    return "-" if v is None else "{:,.0f}".format(v)


def _fmt_ms(v):
    return "-" if v is None else "%.1f" % v


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(rows, info, a, out):
    cols = ("run", "twinmesh/s", "p50 ms", "p99 ms", "redis/s", "p50 ms", "p99 ms")
    widths = (5, 13, 8, 8, 13, 8, 8)

    def line(cells):
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))

    def cells(label, t, r):
        return (label, _fmt_rate(t.get("rate_per_s")), _fmt_ms(t.get("p50_ms")),
                _fmt_ms(t.get("p99_ms")), _fmt_rate(r.get("rate_per_s")),
                _fmt_ms(r.get("p50_ms")), _fmt_ms(r.get("p99_ms")))

    out.write("ingest benchmark: %d twins, batch %d, window %d, %gs per run, %d runs\n"
              % (a.twins, a.batch, a.window, a.duration_s, a.runs))
    out.write("twinmesh: broker + %d workers + 1 gateway, fsync per group commit; "
              "redis: appendonly, appendfsync everysec\n\n" % a.workers)
    out.write(line(cols) + "\n")
    for i, (t, r) in enumerate(rows, 1):
        out.write(line(cells(i, t, r)) + "\n")
    med = {}
    for side, idx in (("twinmesh", 0), ("redis", 1)):
        med[side] = {k: _median([row[idx].get(k) for row in rows])
                     for k in ("rate_per_s", "p50_ms", "p99_ms", "p999_ms")}
    out.write(line(cells("med", med["twinmesh"], med["redis"])) + "\n\n")
    ratio = None
    if med["twinmesh"]["rate_per_s"] and med["redis"]["rate_per_s"]:
        ratio = med["twinmesh"]["rate_per_s"] / med["redis"]["rate_per_s"]
        out.write("ratio twinmesh/redis (median readings/s): %.2f\n" % ratio)
    problems = []
    for i, (t, r) in enumerate(rows, 1):
        for k in ("refused", "failed", "unacked", "timeouts"):
            if t.get(k):
                problems.append("run %d: twinmesh %s=%s" % (i, k, t[k]))
        if r.get("errors"):
            problems.append("run %d: redis errors=%s (%s)" % (i, r["errors"],
                                                             r.get("first_error", "")))
    for p in problems:
        out.write("warning: %s\n" % p)
    out.write("\nRocksDB: pkg-config %s; Debian %s\n"
              % (info.get("rocksdb_pkgconfig") or "?", info.get("rocksdb_debian") or "?"))
    out.write("Redis: %s; hiredis %s\n" % (info.get("redis_server") or "-",
                                          info.get("hiredis") or "-"))
    info["loadavg_end"] = " ".join("%.2f" % x for x in os.getloadavg())
    out.write("CPU: %s x %s; load average %s at start, %s at end\n"
              % (info.get("nproc"), info.get("cpu_model") or "?", info.get("loadavg_start"),
                 info["loadavg_end"]))
    out.flush()
    return {"params": {"twins": a.twins, "batch": a.batch, "window": a.window,
                       "duration_s": a.duration_s, "runs": a.runs, "workers": a.workers},
            "runs": [{"twinmesh": t, "redis": r} for t, r in rows],
            "median": med, "ratio": ratio, "machine": info}


# --------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", default="10s", help="per run (10s, 500ms; bare = seconds)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--twins", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--step", default=None, help="simulated time per pass (both sides)")
    ap.add_argument("--rate", default=None, help="twinctl sim --rate (default: sim's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--build", default="build", help="meson build directory")
    ap.add_argument("--redis-ingest", default=None,
                    help="redis_ingest binary (default <build>/tests/bench/redis_ingest)")
    ap.add_argument("--redis-server", default=None, help="redis-server binary")
    ap.add_argument("--install", action="store_true",
                    help="apt-get install redis-server if it is missing")
    ap.add_argument("--skip-redis", action="store_true")
    ap.add_argument("--skip-twinmesh", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--tmp-root", default=None, help="where temporary directories go")
    ap.add_argument("--keep", action="store_true", help="keep the clusters' directories")
    a = ap.parse_args(argv)
    a.duration_s = parse_duration_s(a.duration)
    if a.duration_s <= 0 or a.runs < 1:
        ap.error("--duration and --runs must be positive")
    a.build = twinmesh_cluster.Cluster._find_build_dir(a.build)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)

    redis_server = redis_ingest = None
    if not a.skip_redis:
        redis_server = ensure_redis(a.redis_server, a.install)
        redis_ingest = a.redis_ingest or os.path.join(a.build, "tests", "bench", "redis_ingest")
        if not os.access(redis_ingest, os.X_OK):
            raise SystemExit("bench_ingest: %s not built (needs libhiredis-dev and "
                             "subdir('bench') in tests/meson.build); or pass --redis-ingest"
                             % redis_ingest)
    info = machine_info(redis_server)

    rows = []
    try:
        for run in range(1, a.runs + 1):
            t = r = {}
            if not a.skip_twinmesh:
                log("run %d/%d: twinmesh" % (run, a.runs))
                t = run_twinmesh(a, seed=run)
                log("  %s readings/s, p50 %s ms, p99 %s ms"
                    % (_fmt_rate(t.get("rate_per_s")), _fmt_ms(t.get("p50_ms")),
                       _fmt_ms(t.get("p99_ms"))))
            if not a.skip_redis:
                log("run %d/%d: redis" % (run, a.runs))
                r = run_redis(redis_server, redis_ingest, a, seed=run)
                log("  %s readings/s, p50 %s ms, p99 %s ms"
                    % (_fmt_rate(r.get("rate_per_s")), _fmt_ms(r.get("p50_ms")),
                       _fmt_ms(r.get("p99_ms"))))
            rows.append((t, r))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, twinmesh_cluster.ClusterError) as e:
        log("failed: %s" % e)
        if rows:
            report(rows, info, a, sys.stdout)
        return 1
    finally:
        _cleanup_all()
    result = report(rows, info, a, sys.stdout)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
