#!/usr/bin/python3
"""twinmesh_cluster - start a whole twinmesh cluster on loopback, for tests.

Used by the integration tests, the fault tests, the benchmarks and the local
demo. A Cluster owns one temporary directory with everything in it:

    <tmp>/keys/          keys made by `twinctl keygen` (the allow-list of every
                         server: broker, worker-i, gateway-i, producer, admin,
                         analyst)
    <tmp>/data/<name>/   each daemon's data directory
    <tmp>/logs/<name>.log  each daemon's stderr and stdout (appended on restart)

Every daemon listens on a free TCP port of 127.0.0.1, chosen by binding to
port 0 and releasing it; if a daemon still loses the race and cannot bind, it
is started again on new ports. Daemons are started in dependency order
(broker, workers, gateways) and the cluster is ready when `twinctl
wait-ready` says so and every gateway shows up in the broker's status.

    with Cluster("build", workers=2) as c:
        print(c.sim(twins=1000, duration=2))
        c.kill("worker-1")           # SIGKILL
        c.start("worker-1")          # same arguments and data directory
        c.wait_ready()
        print(c.twin("milan/air-000001"))

Standard library only; runs with Debian 12's /usr/bin/python3 (3.11).

Command line (for scripts): start a cluster, run a command with
TWINMESH_KEYS, TWINMESH_BROKER, TWINMESH_BROKER_KEY, TWINMESH_GATEWAY and
TWINMESH_GATEWAY_KEY in its environment, stop everything:

    python3 tests/lib/twinmesh_cluster.py --build build --workers 2 run -- CMD ...
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref

__all__ = ["Cluster", "ClusterError", "free_port"]

HOST = "127.0.0.1"

#  Binaries, relative to the build directory.
BROKER_BIN = os.path.join("broker", "twinmesh-broker")
WORKER_BIN = os.path.join("worker", "twinmesh-worker")
GATEWAY_BIN = os.path.join("gateway", "twinmesh-gateway")
TWINCTL_BIN = os.path.join("cli", "twinctl")

#  Keys every cluster has besides its daemons': name -> role.
USER_KEYS = (("producer", "ingest"), ("admin", "admin"), ("analyst", "analyst"))

#  How many times a daemon that failed to bind is started again on new ports.
BIND_RETRIES = 5
#  How long a freshly started daemon is given to listen on its ports.
LISTEN_TIMEOUT_S = 10.0
#  How long stop() waits after SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 10.0
#  Lines of a daemon's log quoted in errors.
LOG_TAIL_LINES = 40

_BIND_ERRORS = ("address already in use", "eaddrinuse", "cannot bind", "bind failed",
                "failed to bind", "can't bind", "could not bind")

_live_clusters = weakref.WeakSet()


class ClusterError(RuntimeError):
    """A cluster could not be started or a command against it failed."""


def free_port(exclude=()):
    """A TCP port of 127.0.0.1 that was free a moment ago (bind to 0, release)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port
    raise ClusterError("no free TCP port found on %s" % HOST)


def _listening_ports():
    """Ports in LISTEN state on this host (from /proc/net/tcp*), or None."""
    ports = set()
    found = False
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if found else None


def _tail(path, lines=LOG_TAIL_LINES):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(no log: %s)" % e
    return "\n".join(text.splitlines()[-lines:])


def _clean_env(extra=None):
    """This process's environment without TWINMESH_* settings (so a stray
    variable cannot change a daemon's or twinctl's settings), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINMESH_")}
    if extra:
        env.update(extra)
    return env


def _duration(value):
    """A duration flag value: numbers are seconds, strings pass as they are."""
    if isinstance(value, bool):
        raise TypeError("a duration cannot be a bool")
    if isinstance(value, (int, float)):
        ms = int(round(value * 1000))
        return "%ds" % (ms // 1000) if ms % 1000 == 0 else "%dms" % ms
    return str(value)


def _setting_args(settings):
    """Flags from a dict {setting: value} (a list of strings passes as is).
    A value of True is written --name=true, None leaves the setting out."""
    if settings is None:
        return []
    if isinstance(settings, (list, tuple)):
        return [str(a) for a in settings]
    args = []
    for name, value in settings.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append("%s=%s" % (flag, "true" if value else "false"))
        else:
            args += [flag, str(value)]
    return args


def _has_flag(args, name):
    return any(a == name or a.startswith(name + "=") for a in args)


class _Proc:
    """One daemon: how to start it, and the running process if any."""

    def __init__(self, name, kind, binary, ports):
        self.name = name            # broker, worker-0, gateway-0 ...
        self.kind = kind            # broker | worker | gateway
        self.binary = binary
        self.ports = ports          # {"bind": port, "pub_bind": port}
        self.popen = None
        self.paused = False
        self.log_path = None
        self.data_dir = None
        self.started_at = 0.0

    @property
    def running(self):
        return self.popen is not None and self.popen.poll() is None


class Cluster:
    """A broker, workers and gateways on loopback, in one temporary directory.

    build_dir   meson build directory holding broker/, worker/, gateway/, cli/
    workers     number of workers (worker-0 ...), the broker's expect_workers
    gateways    number of gateways (gateway-0 ...)
    num_shards  the cluster's virtual shard count
    fsync       the workers' fsync setting
    extra_args  extra settings per daemon, keyed by name ("worker-1") or kind
                ("broker", "worker", "gateway"); each a dict {setting: value}
                or a list of flags. Kind first, then name, so a name wins.
    keep        leave the temporary directory in place after stop_all()
    tmp_root    where the temporary directory is made (default: $TMPDIR, /tmp)
    log_level   every daemon's log_level (default: the daemons' own)
    start       start the cluster now (else call start_all())
    ready_timeout  seconds for the whole cluster to be ready
    """

    def __init__(self, build_dir, workers=2, gateways=1, num_shards=1024, fsync=True,
                 extra_args=None, keep=False, tmp_root=None, log_level=None, start=True,
                 ready_timeout=30.0):
        self.build_dir = self._find_build_dir(build_dir)
        self.nworkers = int(workers)
        self.ngateways = int(gateways)
        self.num_shards = int(num_shards)
        self.fsync = bool(fsync)
        self.extra_args = dict(extra_args or {})
        self.keep = keep
        self.log_level = log_level
        self.ready_timeout = float(ready_timeout)
        for b in (BROKER_BIN, WORKER_BIN, GATEWAY_BIN, TWINCTL_BIN):
            path = os.path.join(self.build_dir, b)
            if not os.access(path, os.X_OK):
                raise ClusterError("%s is not built (looked for %s)" % (os.path.basename(b), path))
        self.twinctl_bin = os.path.join(self.build_dir, TWINCTL_BIN)

        self.tmp = tempfile.mkdtemp(prefix="twinmesh-", dir=tmp_root)
        self.keys_dir = os.path.join(self.tmp, "keys")
        self.logs_dir = os.path.join(self.tmp, "logs")
        self.data_root = os.path.join(self.tmp, "data")
        for d in (self.keys_dir, self.logs_dir, self.data_root):
            os.makedirs(d)
        self._removed = False
        self._used_ports = set()
        self._help_cache = {}           # twinctl subcommand -> flags its --help lists
        self.procs = {}             # name -> _Proc, in start order
        self.procs["broker"] = _Proc("broker", "broker", BROKER_BIN,
                                     {"bind": None, "pub_bind": None})
        for i in range(self.nworkers):
            self.procs["worker-%d" % i] = _Proc("worker-%d" % i, "worker", WORKER_BIN,
                                                {"bind": None})
        for i in range(self.ngateways):
            self.procs["gateway-%d" % i] = _Proc("gateway-%d" % i, "gateway", GATEWAY_BIN,
                                                 {"bind": None})
        for p in self.procs.values():
            p.log_path = os.path.join(self.logs_dir, p.name + ".log")
            if p.kind != "gateway":
                p.data_dir = os.path.join(self.data_root, p.name)
            for k in p.ports:
                p.ports[k] = self._new_port()
        _live_clusters.add(self)
        if start:
            try:
                self.start_all()
            except BaseException:
                self.stop_all()
                raise

    # ----------------------------------------------------------------- set-up

    @staticmethod
    def _find_build_dir(build_dir):
        candidates = [build_dir]
        if not os.path.isabs(build_dir):
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            candidates.append(os.path.join(root, build_dir))
        for c in candidates:
            if os.path.isdir(c):
                return os.path.abspath(c)
        raise ClusterError("build directory %r not found" % build_dir)

    def _new_port(self):
        port = free_port(self._used_ports)
        self._used_ports.add(port)
        return port

    def start_all(self, keygen=True):
        """Make keys (unless keygen is False: made already), start every daemon
        in order, wait until the cluster is ready."""
        if keygen:
            self.keygen_all()
        deadline = time.monotonic() + self.ready_timeout
        self._start_group([self.procs["broker"]], deadline)
        self._start_group([p for p in self.procs.values() if p.kind == "worker"], deadline)
        self._start_group([p for p in self.procs.values() if p.kind == "gateway"], deadline)
        self.wait_ready(timeout=max(1.0, deadline - time.monotonic()))

    def keygen_all(self):
        names = [("broker", "broker")]
        names += [("worker-%d" % i, "worker") for i in range(self.nworkers)]
        names += [("gateway-%d" % i, "gateway") for i in range(self.ngateways)]
        names += list(USER_KEYS)
        for name, role in names:
            self.keygen(name, role)

    def keygen(self, name, role, keys_dir=None):
        """Make a keypair NAME with ROLE in keys_dir (default: the allow-list)."""
        self.twinctl("keygen", name, "--role", role, "--dir", keys_dir or self.keys_dir,
                     timeout=30)

    def _argv(self, p):
        b = self.procs["broker"]
        argv = [os.path.join(self.build_dir, p.binary), "--keys", self.keys_dir]
        if self.log_level:
            argv += ["--log-level", self.log_level]
        if p.kind == "broker":
            argv += ["--bind", self._ep(p.ports["bind"]),
                     "--pub-bind", self._ep(p.ports["pub_bind"]),
                     "--data-dir", p.data_dir,
                     "--num-shards", str(self.num_shards),
                     "--expect-workers", str(self.nworkers)]
        else:
            argv += ["--id", p.name,
                     "--bind", self._ep(p.ports["bind"]),
                     "--broker", self._ep(b.ports["bind"]),
                     "--broker-pub", self._ep(b.ports["pub_bind"])]
            if p.kind == "worker":
                argv += ["--data-dir", p.data_dir,
                         "--fsync=%s" % ("true" if self.fsync else "false")]
        argv += _setting_args(self.extra_args.get(p.kind))
        argv += _setting_args(self.extra_args.get(p.name))
        return argv

    @staticmethod
    def _ep(port):
        return "tcp://%s:%d" % (HOST, port)

    def _spawn(self, p):
        if p.data_dir:
            os.makedirs(p.data_dir, exist_ok=True)
        argv = self._argv(p)
        with open(p.log_path, "ab") as log:
            log.write(("=== %s start: %s\n" % (time.strftime("%H:%M:%S"), " ".join(argv)))
                      .encode())
            log.flush()
            p.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, cwd=self.tmp,
                                       env=_clean_env(), start_new_session=True)
        p.paused = False
        p.started_at = time.monotonic()

    def _start_group(self, group, deadline):
        """Start daemons side by side; restart those that could not bind on new
        ports; raise with the log's tail for one that died otherwise."""
        attempts = {p.name: 0 for p in group}
        pending = list(group)
        for p in pending:
            self._spawn(p)
        while pending:
            listen_deadline = min(deadline, time.monotonic() + LISTEN_TIMEOUT_S)
            failed = self._wait_listening(pending, listen_deadline)
            pending = []
            for p in failed:
                log = _tail(p.log_path).lower()
                attempts[p.name] += 1
                if any(e in log for e in _BIND_ERRORS) and attempts[p.name] <= BIND_RETRIES:
                    for k in p.ports:
                        p.ports[k] = self._new_port()
                    self._spawn(p)
                    pending.append(p)
                    continue
                raise ClusterError("%s exited with status %s at start; log %s ends:\n%s"
                                   % (p.name, p.popen.returncode, p.log_path,
                                      _tail(p.log_path)))

    def _wait_listening(self, procs, deadline):
        """Wait until every process listens on its ports; return those that
        exited. One still alive but not listening by the deadline is left to
        wait_ready to judge."""
        waiting = list(procs)
        failed = []
        while waiting and time.monotonic() < deadline:
            listening = _listening_ports()
            still = []
            for p in waiting:
                if p.popen.poll() is not None:
                    failed.append(p)
                elif listening is None:
                    #  No /proc: settle for "alive for a moment".
                    if time.monotonic() - p.started_at < 0.5:
                        still.append(p)
                elif not all(port in listening for port in p.ports.values()):
                    still.append(p)
            waiting = still
            if waiting:
                time.sleep(0.05)
        #  Catch one that bound and then died (a second port failing).
        time.sleep(0.05)
        failed += [p for p in procs if p not in failed and p.popen.poll() is not None]
        return failed

    def wait_ready(self, workers=None, timeout=None):
        """Wait until the broker reports `workers` workers up (default: all)
        and every shard assigned (`twinctl wait-ready`), then until the broker
        has heard from every running worker and gateway since that daemon's
        latest start (so a restarted daemon has registered again)."""
        timeout = self.ready_timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + timeout
        n = self.nworkers if workers is None else workers
        r = self.twinctl("wait-ready", "--workers", str(n), "--timeout", _duration(timeout),
                         check=False, timeout=timeout + 15)
        if r.returncode != 0:
            raise ClusterError("cluster not ready after %.0fs (twinctl wait-ready: rc=%d)\n"
                               "%s%s\n%s" % (timeout, r.returncode, r.stdout, r.stderr,
                                             self._dead_report()))
        waiting = [p for p in self.procs.values() if p.kind != "broker" and p.running]
        while waiting and time.monotonic() < deadline:
            try:
                nodes = self._nodes(self.status())
            except (ClusterError, ValueError):
                nodes = {}
            if nodes is None:       # status does not list nodes: cannot tell
                return
            now = time.monotonic()
            still = []
            for p in waiting:
                node = nodes.get(p.name)
                if node is None or not node.get("up", True):
                    still.append(p)
                    continue
                ago = node.get("last_seen_ms_ago")
                if isinstance(ago, (int, float)) and ago > (now - p.started_at) * 1000:
                    still.append(p)         # the broker has only heard its previous run
            waiting = still
            if waiting:
                time.sleep(0.1)
        if waiting:
            raise ClusterError("%s not up in the broker's status after %.0fs\n%s"
                               % (", ".join(p.name for p in waiting), timeout,
                                  "\n".join("--- %s:\n%s" % (p.name, _tail(p.log_path))
                                            for p in waiting)))

    @staticmethod
    def _nodes(status):
        """{node id: node} from a parsed status, or None if it lists no nodes."""
        nodes = status.get("nodes") if isinstance(status, dict) else None
        if not isinstance(nodes, list):
            return None
        found = {}
        for n in nodes:
            if not isinstance(n, dict):
                continue
            info = n.get("info") if isinstance(n.get("info"), dict) else n
            name = info.get("id") or info.get("name")
            if name:
                found[name] = n
        return found

    def _dead_report(self):
        parts = []
        for p in self.procs.values():
            if p.popen is not None and p.popen.poll() is not None:
                parts.append("--- %s exited with status %s; log ends:\n%s"
                             % (p.name, p.popen.returncode, _tail(p.log_path)))
        return "\n".join(parts) or "(every daemon is still running; see logs in %s)" \
            % self.logs_dir

    # ----------------------------------------------------------------- twinctl

    def twinctl(self, *args, check=True, timeout=60, gateway=0, input=None, env=None):
        """Run twinctl ARGS against this cluster; returns CompletedProcess
        (text). Adds --keys, --broker, --broker-key, and for sim and replay
        --gateway and --gateway-key of gateway `gateway`, unless given.
        check: raise ClusterError on a non-zero exit."""
        args = [str(a) for a in args]
        sub = args[0] if args else ""
        if sub == "keygen" or "--help" in args:
            extra = []
        else:
            extra = ["--keys", self.keys_dir,
                     "--broker", self.endpoint("broker"),
                     "--broker-key", os.path.join(self.keys_dir, "broker.key")]
            if sub in ("sim", "replay") and self.ngateways > 0:
                g = "gateway-%d" % gateway
                extra += ["--gateway", self.endpoint(g),
                          "--gateway-key", os.path.join(self.keys_dir, g + ".key")]
        #  A flag the caller gave wins, and one the subcommand does not take
        #  (by its --help) is left out; ours go before any "--".
        accepted = self._flags_of(sub) if extra else None
        flags = []
        for i in range(0, len(extra), 2):
            if _has_flag(args, extra[i]):
                continue
            if accepted and extra[i] not in accepted:
                continue
            flags += extra[i:i + 2]
        if "--" in args:
            cut = args.index("--")
            argv = [self.twinctl_bin] + args[:cut] + flags + args[cut:]
        else:
            argv = [self.twinctl_bin] + args + flags
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               cwd=self.tmp, env=_clean_env(env), input=input,
                               stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise ClusterError("twinctl %s timed out after %ss\nstdout: %s\nstderr: %s"
                               % (" ".join(args), timeout, e.stdout, e.stderr)) from None
        if check and r.returncode != 0:
            raise ClusterError("twinctl %s failed (rc=%d)\nstdout: %s\nstderr: %s"
                               % (" ".join(args), r.returncode, r.stdout.strip(),
                                  r.stderr.strip()))
        return r

    def _flags_of(self, sub):
        """The --flags that `twinctl SUB --help` lists (cached), or None when
        it lists none (then every flag is passed)."""
        if sub in self._help_cache:
            return self._help_cache[sub]
        flags = None
        try:
            r = subprocess.run([self.twinctl_bin, sub, "--help"], capture_output=True,
                               text=True, timeout=10, cwd=self.tmp, env=_clean_env(),
                               stdin=subprocess.DEVNULL)
            found = set(re.findall(r"(--[a-z][a-z0-9-]*)", r.stdout + r.stderr))
            if "--keys" in found:
                flags = found
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._help_cache[sub] = flags
        return flags

    @staticmethod
    def _parse_json(text, what):
        text = text.strip()
        try:
            return json.loads(text)
        except ValueError:
            pass
        #  Progress lines before the JSON: take the last line that parses.
        for line in reversed(text.splitlines()):
            line = line.strip()
            if line.startswith("{") or line.startswith("["):
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        raise ClusterError("%s: no JSON in output:\n%s" % (what, text[-2000:]))

    def sim(self, gateway=0, timeout=None, check=True, **kw):
        """Run `twinctl sim --json` with flags from kw (twins=1000, duration=5
        (seconds, or "250ms"), batch=, window=, rate=, seed=, step=...); returns
        the parsed summary. check=False returns the summary of a run that
        exited non-zero (refused or failed batches) instead of raising."""
        args = ["sim", "--json"]
        for name, value in kw.items():
            if value is None or name == "json":
                continue
            flag = "--" + name.replace("_", "-")
            if name in ("duration", "step", "timeout"):
                args += [flag, _duration(value)]
            elif value is True:
                args.append(flag)
            elif value is False:
                args.append(flag + "=false")
            else:
                args += [flag, str(value)]
        if timeout is None:
            d = kw.get("duration", 10)
            timeout = (d if isinstance(d, (int, float)) else 60) + 60
        r = self.twinctl(*args, check=check, timeout=timeout, gateway=gateway)
        try:
            return self._parse_json(r.stdout, "twinctl sim")
        except ClusterError:
            raise ClusterError("twinctl sim (rc=%d) printed no JSON summary; stderr ends:\n%s"
                               % (r.returncode, "\n".join(r.stderr.splitlines()[-20:]))) \
                from None

    def status(self):
        """The broker's status (`twinctl status --json`), parsed."""
        r = self.twinctl("status", "--json", timeout=30)
        return self._parse_json(r.stdout, "twinctl status")

    def twin(self, entity, timeout=30):
        """A twin's state (`twinctl twin get ID --json`), parsed; None if not found."""
        r = self.twinctl("twin", "get", entity, "--json", check=False, timeout=timeout)
        if r.returncode == 0:
            return self._parse_json(r.stdout, "twinctl twin get")
        text = (r.stdout + r.stderr).lower()
        if "not_found" in text or "not found" in text:
            return None
        raise ClusterError("twinctl twin get %s failed (rc=%d)\nstdout: %s\nstderr: %s"
                           % (entity, r.returncode, r.stdout.strip(), r.stderr.strip()))

    # ----------------------------------------------------------------- daemons

    def _proc(self, name):
        try:
            return self.procs[name]
        except KeyError:
            raise ClusterError("no daemon %r (have: %s)"
                               % (name, ", ".join(self.procs))) from None

    @property
    def names(self):
        """Daemon names in start order."""
        return list(self.procs)

    def endpoint(self, name, which="bind"):
        """A daemon's endpoint, tcp://127.0.0.1:PORT; which="pub_bind" gives
        the broker's shard map publisher."""
        return self._ep(self._proc(name).ports[which])

    def pid(self, name):
        p = self._proc(name)
        return p.popen.pid if p.running else None

    def is_running(self, name):
        return self._proc(name).running

    def data_dir(self, name):
        return self._proc(name).data_dir

    def log_path(self, name):
        return self._proc(name).log_path

    def log(self, name):
        """Everything the daemon has written (all its runs), as text."""
        try:
            with open(self._proc(name).log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def kill(self, name, sig=signal.SIGKILL, wait=True):
        """Send sig to a daemon; for SIGKILL (and SIGTERM/SIGINT) wait until
        it has exited (up to STOP_TIMEOUT_S). Returns its exit status or None."""
        p = self._proc(name)
        if not p.running:
            return p.popen.returncode if p.popen else None
        if p.paused and sig in (signal.SIGTERM, signal.SIGINT):
            p.popen.send_signal(signal.SIGCONT)
            p.paused = False
        p.popen.send_signal(sig)
        if sig == signal.SIGSTOP:
            p.paused = True
        elif sig == signal.SIGCONT:
            p.paused = False
        if wait and sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            try:
                return p.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                return None
        return None

    def stop(self, name, timeout=STOP_TIMEOUT_S):
        """SIGTERM (the daemon drains), then SIGKILL after timeout. Returns the
        exit status."""
        p = self._proc(name)
        if not p.running:
            return p.popen.returncode if p.popen else None
        if p.paused:
            p.popen.send_signal(signal.SIGCONT)
            p.paused = False
        p.popen.send_signal(signal.SIGTERM)
        try:
            return p.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with open(p.log_path, "ab") as log:
                log.write(b"=== harness: no exit %gs after SIGTERM, sending SIGKILL\n" % timeout)
            p.popen.kill()
            return p.popen.wait(timeout=STOP_TIMEOUT_S)

    def start(self, name):
        """Start a stopped daemon again with the same arguments, ports and data
        directory (new ports only if the old ones cannot be bound). Does not
        wait for the cluster to be ready: call wait_ready() for that."""
        p = self._proc(name)
        if p.running:
            raise ClusterError("%s is already running" % name)
        self._start_group([p], time.monotonic() + LISTEN_TIMEOUT_S + 5)

    def restart(self, name, sig=signal.SIGTERM):
        if sig == signal.SIGTERM:
            self.stop(name)
        else:
            self.kill(name, sig)
        self.start(name)

    def pause(self, name):
        """SIGSTOP a daemon (it stays connected but answers nothing)."""
        self.kill(name, signal.SIGSTOP)

    def resume(self, name):
        """SIGCONT a paused daemon."""
        self.kill(name, signal.SIGCONT)

    def stop_all(self, check=True):
        """Stop every daemon (gateways, workers, then broker: SIGTERM, then
        SIGKILL), and remove the temporary directory unless keep. Idempotent.
        With check, a daemon that was running and did not exit 0 on SIGTERM
        (a crash at shutdown, a sanitizer's report, a hang) raises
        ClusterError with its log's tail, after everything is stopped."""
        procs = [p for p in reversed(list(self.procs.values())) if p.popen is not None]
        stopping = []
        for p in procs:
            if p.running:
                if p.paused:
                    p.popen.send_signal(signal.SIGCONT)
                    p.paused = False
                p.popen.send_signal(signal.SIGTERM)
                stopping.append(p)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        bad = []
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                bad.append((p, "no exit %ds after SIGTERM" % STOP_TIMEOUT_S))
                try:
                    p.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                continue
            if p in stopping and p.popen.returncode != 0:
                bad.append((p, "exit status %s after SIGTERM" % p.popen.returncode))
        report = ["%s: %s; log ends:\n%s" % (p.name, why, _tail(p.log_path)) for p, why in bad]
        if not self.keep and not self._removed and not (check and bad):
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._removed = True
        _live_clusters.discard(self)
        if check and bad:
            raise ClusterError("daemons did not stop cleanly (directory kept: %s)\n%s"
                               % (self.tmp, "\n".join(report)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        #  An exception already on its way says more than a shutdown report.
        self.stop_all(check=exc[0] is None)
        return False

    def env(self, gateway=0):
        """The TWINMESH_* variables that point twinctl at this cluster."""
        e = {"TWINMESH_KEYS": self.keys_dir,
             "TWINMESH_BROKER": self.endpoint("broker"),
             "TWINMESH_BROKER_KEY": os.path.join(self.keys_dir, "broker.key")}
        if self.ngateways > 0:
            g = "gateway-%d" % gateway
            e["TWINMESH_GATEWAY"] = self.endpoint(g)
            e["TWINMESH_GATEWAY_KEY"] = os.path.join(self.keys_dir, g + ".key")
        return e


@atexit.register
def _stop_leftovers():
    for c in list(_live_clusters):
        try:
            c.stop_all()
        except Exception:      # noqa: BLE001 - best effort at exit
            pass


# --------------------------------------------------------------------- command line

def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Start a twinmesh cluster on loopback and run a command against it.",
        usage="%(prog)s [options] run -- COMMAND [ARG...]")
    ap.add_argument("--build", default="build", help="meson build directory (default: build)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gateways", type=int, default=1)
    ap.add_argument("--num-shards", type=int, default=1024)
    ap.add_argument("--no-fsync", action="store_true", help="workers run with fsync=false")
    ap.add_argument("--log-level", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to get ready")
    ap.add_argument("action", choices=["run"])
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("run needs a command after --")

    #  Turn SIGTERM/SIGHUP into an exception so the finally below runs.
    def _on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)

    cluster = None
    child = None
    try:
        cluster = Cluster(a.build, workers=a.workers, gateways=a.gateways,
                          num_shards=a.num_shards, fsync=not a.no_fsync, keep=a.keep,
                          log_level=a.log_level, ready_timeout=a.timeout)
        env = dict(os.environ)
        env.update(cluster.env())
        env["TM_CLUSTER_DIR"] = cluster.tmp      # not TWINMESH_*: that prefix is for settings
        sys.stderr.write("twinmesh_cluster: ready in %s (broker %s, gateway %s)\n"
                         % (cluster.tmp, cluster.endpoint("broker"),
                            env.get("TWINMESH_GATEWAY", "-")))
        sys.stderr.flush()
        child = subprocess.Popen(cmd, env=env)
        rc = child.wait()
        return rc if rc >= 0 else 128 - rc
    except ClusterError as e:
        sys.stderr.write("twinmesh_cluster: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        return 130
    finally:
        if cluster is not None:
            if a.keep:
                sys.stderr.write("twinmesh_cluster: kept %s\n" % cluster.tmp)
            cluster.stop_all()


if __name__ == "__main__":
    sys.exit(main())
