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

--build given more than once compares builds (say the tree before a change
and after it) in the same run: each run starts a fresh cluster of every
build in turn, the order rotated from one run to the next so that none
always goes first, then Redis once; the report gives each build's medians,
its ratio to the first build (the median of the runs' readings/s, and the
median of the per-run ratios, which cancels most of the machine's drift
between runs) and to Redis:

    python3 tests/bench/bench_ingest.py --build before=../old/build-rel --build after=build-rel

A build is a meson build directory, optionally named LABEL=DIR. A relative
DIR is looked up from the current directory, then from this tree's root.
The cluster scripts are always this tree's: a flag they pass that an older
build's daemon or twinctl does not list in its --help is left out for that
build, and the report says which.

Everything it starts is stopped when it ends, however it ends.
"""

import argparse
import atexit
import json
import os
import re
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

def write_machine(out, info):
    """The lines saying what a run ran on, and the load at its end."""
    out.write("RocksDB: pkg-config %s; Debian %s\n"
              % (info.get("rocksdb_pkgconfig") or "?", info.get("rocksdb_debian") or "?"))
    out.write("Redis: %s; hiredis %s\n" % (info.get("redis_server") or "-",
                                          info.get("hiredis") or "-"))
    info["loadavg_end"] = " ".join("%.2f" % x for x in os.getloadavg())
    out.write("CPU: %s x %s; load average %s at start, %s at end\n"
              % (info.get("nproc"), info.get("cpu_model") or "?", info.get("loadavg_start"),
                 info["loadavg_end"]))
    out.flush()


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 in its own temporary directory."""

    def __init__(self, binary, tmp_root=None, persist=True):
        """persist: appendonly with fsync every second (ingest), else no
        persistence at all (memory)."""
        self.dir = tempfile.mkdtemp(prefix="twinmesh-redis-", dir=tmp_root)
        self.proc = None
        self.port = None
        _cleanups.append(self.stop)
        durability = (["--appendonly", "yes", "--appendfsync", "everysec"] if persist
                      else ["--appendonly", "no"])
        for attempt in range(5):
            self.port = twinmesh_cluster.free_port()
            argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--dir", self.dir] + durability + [
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

    def cli(self, *args, stdin=None):
        """redis-cli against this server; its output as text."""
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)] + list(args)
        return subprocess.run(argv, input=stdin, capture_output=True, check=True,
                              timeout=600).stdout.decode(errors="replace")

    def info_memory(self):
        text = self.cli("INFO", "memory")
        return {k: v for k, v in re.findall(r"^(\w+):(\S+)", text, re.M)}

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

_LABEL_RE = re.compile(r"^([A-Za-z0-9_.+-]+)=(.+)$")

#  What each daemon kind is called in the build directory, for its --help.
_DAEMON_BINS = {"broker": twinmesh_cluster.BROKER_BIN, "worker": twinmesh_cluster.WORKER_BIN,
                "gateway": twinmesh_cluster.GATEWAY_BIN}


def _listed_flags(argv):
    """The --flags a binary's --help lists, or None if its help cannot be
    read or lists no --keys (then nothing is left out: better to fail
    loudly on a flag than to guess from a help we did not understand)."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = set(re.findall(r"(--[a-z][a-z0-9-]*)", r.stdout + r.stderr))
    return found if "--keys" in found else None


def _drop_unlisted(args, accepted, dropped):
    """args without the --flags (and their values) that accepted does not
    hold; the names left out are added to the set dropped."""
    out = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out += args[i:]
            break
        if a.startswith("--"):
            name = a.split("=", 1)[0]
            if name not in accepted:
                dropped.add(name)
                #  --flag VALUE: the value goes too; --flag=VALUE and a bare
                #  boolean --flag are one word.
                takes_value = "=" not in a and i + 1 < len(args) \
                    and not args[i + 1].startswith("--")
                i += 2 if takes_value else 1
                continue
        out.append(a)
        i += 1
    return out


class Build:
    """One build under test: where it is, what it is called, and which flags
    its binaries list (read from their --help once, lazily)."""

    def __init__(self, spec, index):
        m = _LABEL_RE.match(spec)
        if m and not os.path.isdir(spec):
            label, path = m.group(1), m.group(2)
        else:
            label, path = None, spec
        self.spec = spec
        self.dir = twinmesh_cluster.Cluster._find_build_dir(path)
        self.label = label or self._default_label(path, self.dir, index)
        self.source, self.buildtype = self._meson_info(self.dir)
        self.commit = self._git_commit(self.source)
        self._flags = {}            # daemon kind or "twinctl SUB" -> listed flags or None
        self.dropped = {}           # daemon kind or "twinctl SUB" -> flags left out

    @staticmethod
    def _default_label(path, full, index):
        #  build/, build-rel/ say nothing on their own: name the tree too.
        base = os.path.basename(os.path.normpath(full))
        parent = os.path.basename(os.path.dirname(os.path.normpath(full)))
        label = "%s/%s" % (parent, base) if parent else base
        return label or "build%d" % index

    @staticmethod
    def _meson_info(build_dir):
        source = buildtype = None
        try:
            with open(os.path.join(build_dir, "meson-info", "meson-info.json")) as f:
                source = json.load(f).get("directories", {}).get("source")
            with open(os.path.join(build_dir, "meson-info", "intro-buildoptions.json")) as f:
                for o in json.load(f):
                    if o.get("name") == "buildtype":
                        buildtype = o.get("value")
        except (OSError, ValueError, AttributeError):
            pass
        return source, buildtype

    @staticmethod
    def _git_commit(source):
        if not source:
            return None
        head = _run_text(["git", "-C", source, "rev-parse", "--short", "HEAD"])
        if head is None:
            return None
        dirty = _run_text(["git", "-C", source, "status", "--porcelain", "--untracked-files=no"])
        return head + ("+changes" if dirty else "")

    def flags(self, what):
        if what not in self._flags:
            if what.startswith("twinctl "):
                argv = [os.path.join(self.dir, twinmesh_cluster.TWINCTL_BIN),
                        what.split(" ", 1)[1], "--help"]
            else:
                argv = [os.path.join(self.dir, _DAEMON_BINS[what]), "--help"]
            self._flags[what] = _listed_flags(argv)
        return self._flags[what]

    def filter(self, what, args):
        accepted = self.flags(what)
        if accepted is None:
            return list(args)
        dropped = self.dropped.setdefault(what, set())
        out = _drop_unlisted(list(args), accepted, dropped)
        if not dropped:
            del self.dropped[what]
        return out

    def describe(self):
        parts = [self.dir]
        if self.source:
            parts.append("tree %s" % self.source)
        if self.commit:
            parts.append("commit %s" % self.commit)
        if self.buildtype:
            parts.append(self.buildtype)
        return ", ".join(parts)


class _CompatCluster(twinmesh_cluster.Cluster):
    """A Cluster that leaves out, per binary, the flags an older build does
    not list: the harness is this tree's and may pass settings that did not
    exist yet. Overrides the harness's _argv and twinctl hooks, the two
    places every daemon argv and every twinctl argv go through."""

    def __init__(self, build, **kw):
        self._build = build         # set before the base class starts daemons
        super().__init__(build.dir, **kw)

    def _argv(self, p):
        argv = super()._argv(p)
        return argv[:1] + self._build.filter(p.kind, argv[1:])

    def twinctl(self, *args, **kw):
        args = [str(a) for a in args]
        #  --help and keygen's NAME are not flags: only filter a subcommand's
        #  own flags, after its name.
        if args and not args[0].startswith("-") and "--help" not in args:
            args = args[:1] + self._build.filter("twinctl " + args[0], args[1:])
        return super().twinctl(*args, **kw)


def run_twinmesh(a, seed, build=None):
    """One sim run against a fresh cluster of build (default: a.build, the
    only one, through the harness as it is)."""
    if build is None:
        c = twinmesh_cluster.Cluster(a.build, workers=a.workers, gateways=1, fsync=True,
                                     tmp_root=a.tmp_root, keep=a.keep)
    else:
        c = _CompatCluster(build, workers=a.workers, gateways=1, fsync=True,
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
    out.write("\n")
    write_machine(out, info)
    return {"params": {"twins": a.twins, "batch": a.batch, "window": a.window,
                       "duration_s": a.duration_s, "runs": a.runs, "workers": a.workers},
            "runs": [{"twinmesh": t, "redis": r} for t, r in rows],
            "median": med, "ratio": ratio, "machine": info}


def _ratio_text(v):
    return "-" if v is None else "%.2f (%+.0f%%)" % (v, (v - 1) * 100)


def report_builds(runs, builds, info, a, out):
    """The report of a run over several builds. runs: one dict per run,
    {"order": [build index...], "twinmesh": {index: summary}, "redis": summary}."""
    cols = ("run", "#", "build", "readings/s", "p50 ms", "p99 ms")
    wl = max([len(b.label) for b in builds] + [len("redis"), len("build")])
    widths = (3, 2, wl, 13, 8, 8)

    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 2 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    def cells(run, pos, label, t):
        return (run, pos, label, _fmt_rate(t.get("rate_per_s")), _fmt_ms(t.get("p50_ms")),
                _fmt_ms(t.get("p99_ms")))

    out.write("ingest benchmark: %d twins, batch %d, window %d, %gs per run, %d runs, "
              "%d builds\n" % (a.twins, a.batch, a.window, a.duration_s, a.runs, len(builds)))
    out.write("twinmesh: broker + %d workers + 1 gateway, fsync per group commit; "
              "redis: appendonly, appendfsync everysec\n" % a.workers)
    out.write("each run: every build on a fresh cluster, in the order # (rotated per run)%s\n\n"
              % ("" if a.skip_redis else ", then redis"))
    for b in builds:
        out.write("  %s  %s\n" % (b.label.ljust(wl), b.describe()))
    out.write("\n" + line(cols) + "\n")
    for i, r in enumerate(runs, 1):
        for pos, bi in enumerate(r["order"], 1):
            out.write(line(cells(i, pos, builds[bi].label, r["twinmesh"].get(bi, {}))) + "\n")
        if r.get("redis"):
            out.write(line(cells(i, "-", "redis", r["redis"])) + "\n")

    keys = ("rate_per_s", "p50_ms", "p99_ms", "p999_ms")
    med = {}
    for bi, b in enumerate(builds):
        med[b.label] = {k: _median([r["twinmesh"].get(bi, {}).get(k) for r in runs])
                        for k in keys}
    med["redis"] = {k: _median([(r.get("redis") or {}).get(k) for r in runs]) for k in keys}
    out.write("\nmedians\n")
    for b in builds:
        out.write(line(cells("", "", b.label, med[b.label])) + "\n")
    if any(r.get("redis") for r in runs):
        out.write(line(cells("", "", "redis", med["redis"])) + "\n")

    #  Against the first build: the ratio of the medians, and the median of
    #  each run's ratio (the two builds of one run ran a minute apart, so
    #  this one cancels the drift of the machine's speed between runs).
    first = builds[0]
    ratios = {}
    out.write("\n")
    for bi, b in enumerate(builds[1:], 1):
        m0, m1 = med[first.label]["rate_per_s"], med[b.label]["rate_per_s"]
        of_medians = m1 / m0 if m0 and m1 else None
        per_run = [r["twinmesh"][bi]["rate_per_s"] / r["twinmesh"][0]["rate_per_s"]
                   for r in runs
                   if r["twinmesh"].get(bi, {}).get("rate_per_s")
                   and r["twinmesh"].get(0, {}).get("rate_per_s")]
        median_per_run = statistics.median(per_run) if per_run else None
        lat = {}
        for k in ("p50_ms", "p99_ms"):
            v0, v1 = med[first.label][k], med[b.label][k]
            lat[k] = v1 / v0 if v0 and v1 else None
        ratios[b.label] = {"of_medians": of_medians, "median_per_run": median_per_run,
                           "per_run": per_run, "p50": lat["p50_ms"], "p99": lat["p99_ms"]}
        out.write("%s/%s readings/s: %s (medians); %s (median of per-run ratios%s)\n"
                  % (b.label, first.label, _ratio_text(of_medians), _ratio_text(median_per_run),
                     ", range %.2f-%.2f" % (min(per_run), max(per_run)) if per_run else ""))
        out.write("%s/%s ack latency: p50 %s, p99 %s\n"
                  % (b.label, first.label, "-" if lat["p50_ms"] is None else "%.2fx" % lat["p50_ms"],
                     "-" if lat["p99_ms"] is None else "%.2fx" % lat["p99_ms"]))
    vs_redis = {}
    if med["redis"]["rate_per_s"]:
        for b in builds:
            if med[b.label]["rate_per_s"]:
                vs_redis[b.label] = med[b.label]["rate_per_s"] / med["redis"]["rate_per_s"]
        out.write("vs redis (median readings/s): %s\n"
                  % "; ".join("%s/redis %.2f" % (k, v) for k, v in vs_redis.items()))

    problems = []
    for i, r in enumerate(runs, 1):
        for bi, t in sorted(r["twinmesh"].items()):
            for k in ("refused", "failed", "unacked", "timeouts"):
                if t.get(k):
                    problems.append("run %d: %s %s=%s" % (i, builds[bi].label, k, t[k]))
        rr = r.get("redis") or {}
        if rr.get("errors"):
            problems.append("run %d: redis errors=%s (%s)" % (i, rr["errors"],
                                                             rr.get("first_error", "")))
    for b in builds:
        for what, names in sorted(b.dropped.items()):
            problems.append("%s: %s does not list %s: left out"
                            % (b.label, what, ", ".join(sorted(names))))
    out.write("\n")
    for p in problems:
        out.write("warning: %s\n" % p)
    write_machine(out, info)
    return {"params": {"twins": a.twins, "batch": a.batch, "window": a.window,
                       "duration_s": a.duration_s, "runs": a.runs, "workers": a.workers},
            "builds": [{"label": b.label, "dir": b.dir, "source": b.source,
                        "commit": b.commit, "buildtype": b.buildtype,
                        "dropped_flags": {k: sorted(v) for k, v in b.dropped.items()}}
                       for b in builds],
            "runs": [{"order": [builds[bi].label for bi in r["order"]],
                      "twinmesh": {builds[bi].label: t for bi, t in r["twinmesh"].items()},
                      "redis": r.get("redis") or {}} for r in runs],
            "median": med, "vs_first": ratios, "vs_redis": vs_redis, "machine": info}


# --------------------------------------------------------------------- main

def _run_one_build(a, redis_server, redis_ingest):
    rows = []
    try:
        for run in range(1, a.runs + 1):
            t = r = {}
            if not a.skip_twinmesh:
                log("run %d/%d: twinmesh" % (run, a.runs))
                t = run_twinmesh(a, seed=run)
                log_result(t)
            if not a.skip_redis:
                log("run %d/%d: redis" % (run, a.runs))
                r = run_redis(redis_server, redis_ingest, a, seed=run)
                log_result(r)
            rows.append((t, r))
    except KeyboardInterrupt:
        log("interrupted")
        return 130, None
    except (RuntimeError, twinmesh_cluster.ClusterError) as e:
        log("failed: %s" % e)
        if rows:
            report(rows, a.info, a, sys.stdout)
        return 1, None
    finally:
        _cleanup_all()
    return 0, report(rows, a.info, a, sys.stdout)


def log_result(res):
    log("  %s readings/s, p50 %s ms, p99 %s ms"
        % (_fmt_rate(res.get("rate_per_s")), _fmt_ms(res.get("p50_ms")),
           _fmt_ms(res.get("p99_ms"))))


def _run_builds(a, builds, redis_server, redis_ingest):
    runs = []
    n = len(builds)
    try:
        for run in range(1, a.runs + 1):
            #  Rotate who goes first: the machine's speed drifts within a run
            #  too, and the first cluster of a run starts on a cooler page
            #  cache; rotation spreads both over the builds.
            order = [((run - 1) + k) % n for k in range(n)]
            entry = {"order": order, "twinmesh": {}, "redis": {}}
            runs.append(entry)
            if not a.skip_twinmesh:
                for pos, bi in enumerate(order, 1):
                    b = builds[bi]
                    log("run %d/%d: twinmesh %s (%d/%d)" % (run, a.runs, b.label, pos, n))
                    t = run_twinmesh(a, seed=run, build=b)
                    entry["twinmesh"][bi] = t
                    log_result(t)
            if not a.skip_redis:
                log("run %d/%d: redis" % (run, a.runs))
                r = run_redis(redis_server, redis_ingest, a, seed=run)
                entry["redis"] = r
                log_result(r)
    except KeyboardInterrupt:
        log("interrupted")
        return 130, None
    except (RuntimeError, twinmesh_cluster.ClusterError) as e:
        log("failed: %s" % e)
        if runs:
            report_builds(runs, builds, a.info, a, sys.stdout)
        return 1, None
    finally:
        _cleanup_all()
    return 0, report_builds(runs, builds, a.info, a, sys.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--duration", default="10s",
                    help="per run and side (10s, 500ms, 2m; bare = seconds) (default: 10s)")
    ap.add_argument("--runs", type=int, default=3, help="(default: 3)")
    ap.add_argument("--twins", type=int, default=10000, help="(default: 10000)")
    ap.add_argument("--batch", type=int, default=1000, help="readings per batch (default: 1000)")
    ap.add_argument("--window", type=int, default=8, help="batches in flight (default: 8)")
    ap.add_argument("--step", default=None,
                    help="simulated time between two readings of one series, both sides "
                         "(default: twinctl sim's and redis_ingest's, 1s)")
    ap.add_argument("--rate", default=None,
                    help="twinctl sim --rate, readings/s; twinmesh only: redis_ingest always "
                         "runs as fast as its window allows (default: sim's, unlimited)")
    ap.add_argument("--workers", type=int, default=2, help="twinmesh workers (default: 2)")
    ap.add_argument("--build", action="append", default=None, metavar="[LABEL=]DIR",
                    help="meson build directory; give it again to compare builds in one run, "
                         "the first being the baseline of the ratios (default: build)")
    ap.add_argument("--redis-ingest", default=None,
                    help="redis_ingest binary (default: <build>/tests/bench/redis_ingest of "
                         "the first --build that has one)")
    ap.add_argument("--redis-server", default=None,
                    help="redis-server binary (default: the one on PATH)")
    ap.add_argument("--install", action="store_true",
                    help="apt-get install redis-server if it is missing")
    ap.add_argument("--skip-redis", action="store_true", help="run twinmesh only")
    ap.add_argument("--skip-twinmesh", action="store_true",
                    help="run Redis only (still needs a --build for redis_ingest)")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--tmp-root", default=None, help="where temporary directories go")
    ap.add_argument("--keep", action="store_true", help="keep the clusters' directories")
    a = ap.parse_args(argv)
    a.duration_s = parse_duration_s(a.duration)
    if a.duration_s <= 0 or a.runs < 1:
        ap.error("--duration and --runs must be positive")
    specs = a.build or ["build"]
    builds = None
    if len(specs) == 1:
        #  One build: exactly the harness as it is, and the report as it was.
        m = _LABEL_RE.match(specs[0])
        path = m.group(2) if m and not os.path.isdir(specs[0]) else specs[0]
        a.build = twinmesh_cluster.Cluster._find_build_dir(path)
        build_dirs = [a.build]
    else:
        builds = [Build(spec, i) for i, spec in enumerate(specs)]
        labels = [b.label for b in builds]
        if "redis" in labels:
            ap.error("a build cannot be called redis: the report's Redis rows are")
        if len(set(labels)) != len(labels):
            ap.error("two builds are both called %s: name them, --build LABEL=DIR"
                     % ", ".join(sorted(set(x for x in labels if labels.count(x) > 1))))
        a.build = builds[0].dir
        build_dirs = [b.dir for b in builds]

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)

    redis_server = redis_ingest = None
    if not a.skip_redis:
        redis_server = ensure_redis(a.redis_server, a.install)
        redis_ingest = a.redis_ingest
        if redis_ingest is None:
            candidates = [os.path.join(d, "tests", "bench", "redis_ingest") for d in build_dirs]
            redis_ingest = next((c for c in candidates if os.access(c, os.X_OK)), candidates[0])
        if not os.access(redis_ingest, os.X_OK):
            raise SystemExit("bench_ingest: %s not built (needs libhiredis-dev and "
                             "subdir('bench') in tests/meson.build); or pass --redis-ingest"
                             % redis_ingest)
    a.info = machine_info(redis_server)

    if builds is None:
        rc, result = _run_one_build(a, redis_server, redis_ingest)
    else:
        rc, result = _run_builds(a, builds, redis_server, redis_ingest)
    if rc == 0 and a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
