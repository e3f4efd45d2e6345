#!/usr/bin/python3
"""bench_query - query latency over a million twins, against PostgreSQL.

One data set, made here from a seed: --twins twins of a simulated Milan (60%
air stations with pm25 and temperature, 40% traffic counters with vehicles),
each with a district and a location. The same latest values go to

  twinmesh    a fresh cluster (broker, --workers workers, 1 gateway) through
              the gateway with the Python codec (tests/lib/tm_proto.py), one
              reading per property, the attributes on the first;
  postgresql  a fresh server from Debian's package (initdb in a temporary
              directory, 127.0.0.1 on a free port, fsync off: loading is not
              what is measured), one row per twin in a table with a B-tree
              index on (model, district) and a GiST index on
              ll_to_earth(lat, lon) (cube + earthdistance).

Then each query runs --reps times on each side (after --warmup runs), one
client at a time, and the table gives p50/p99 latency per side and the ratio
postgresql/twinmesh (how many times faster twinmesh is). Latency is measured
at the client: for twinmesh a CURVE DEALER sending QUERY to the broker (parse,
scatter to every worker, scan, merge, answer); for PostgreSQL psycopg2 over
TCP. The answers of the two sides are compared, so both did the same work.

  filter+group   SELECT district, count(*), avg(pm25) FROM twins
                 WHERE model = 'air_station' AND pm25 > 20 GROUP BY district
  geo-radius     count(*), avg(pm25) of the twins within 1 km of the Duomo

    python3 tests/bench/bench_query.py --build build --twins 1000000 --workers 4

Everything it starts is stopped when it ends, however it ends.
"""

import argparse
import atexit
import json
import math
import os
import random
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
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import tm_proto  # noqa: E402
import twinmesh_cluster  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
DISTRICTS = [("Centro Storico", 45.4642, 9.1900), ("Brera", 45.4719, 9.1873),
             ("Navigli", 45.4515, 9.1760), ("Porta Romana", 45.4520, 9.2030),
             ("Isola", 45.4870, 9.1890), ("Citta Studi", 45.4780, 9.2270),
             ("San Siro", 45.4780, 9.1240), ("Lambrate", 45.4840, 9.2410),
             ("Bicocca", 45.5140, 9.2110)]
GEO = (45.4642, 9.19, 1000)
QUERIES = {
    "filter+group": (
        "SELECT district, count(*), avg(pm25) FROM twins WHERE model = 'air_station'"
        " AND pm25 > 20 GROUP BY district",
        "SELECT district, count(*), avg(pm25) FROM twins WHERE model = 'air_station'"
        " AND pm25 > 20 GROUP BY district ORDER BY district"),
    #  earthdistance's sphere is 6378168 m, ours (and the test's haversine)
    #  6371008.8 m: the GiST box, scaled up a little, picks candidates, and
    #  the haversine with our radius decides, so both count the same twins.
    "geo-radius": (
        "SELECT count(*), avg(pm25) FROM twins WHERE within(location, %r, %r, %r)" % GEO,
        "SELECT count(*), avg(pm25) FROM twins WHERE earth_box(ll_to_earth(%r, %r), %r)"
        " @> ll_to_earth(lat, lon) AND 2 * 6371008.8 * asin(sqrt(power(sin(radians(lat - %r)"
        " / 2), 2) + cos(radians(%r)) * cos(radians(lat)) * power(sin(radians(lon - %r) / 2),"
        " 2))) <= %r" % (GEO[0], GEO[1], GEO[2] * 1.01, GEO[0], GEO[0], GEO[1], GEO[2])),
}

_cleanups = []


def _cleanup_all():
    while _cleanups:
        try:
            _cleanups.pop()()
        except Exception as e:  # noqa: BLE001 - best effort
            sys.stderr.write("bench_query: cleanup: %s\n" % e)


atexit.register(_cleanup_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def log(msg):
    sys.stderr.write("bench_query: %s\n" % msg)
    sys.stderr.flush()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_twins(n, seed):
    rnd = random.Random(seed)
    for i in range(n):
        name, lat0, lon0 = DISTRICTS[rnd.randrange(len(DISTRICTS))]
        air = rnd.random() < 0.6
        yield {"entity": "milan/%s-%07d" % ("air" if air else "traffic", i),
               "model": "air_station" if air else "traffic_counter",
               "district": "milan/district/" + name,
               "lat": lat0 + rnd.gauss(0, 0.0055), "lon": lon0 + rnd.gauss(0, 0.0078),
               "pm25": round(rnd.lognormvariate(2.8, 0.6), 1) if air else None,
               "temperature": round(rnd.uniform(-2, 30), 1) if air else None,
               "vehicles": None if air else float(rnd.randrange(900))}


# ------------------------------------------------------------------ twinmesh

def load_twinmesh(c, twins, ts, window=8, batch=2000):
    """Send every twin's readings, window batches in flight; returns readings acked."""
    cl = tm_proto.Client(c.endpoint("gateway-0"), os.path.join(c.keys_dir, "gateway-0.key"),
                         os.path.join(c.keys_dir, "producer.key_secret"))
    acked = sent = 0
    inflight = {}
    buf, nbuf = [], 0

    def flush():
        nonlocal buf, nbuf, sent
        if not buf:
            return
        while len(inflight) >= window:
            collect()
        rid = cl.next_id
        cl.next_id += 1
        body = b"".join(buf)
        cl.send_frames([tm_proto.header(tm_proto.INGEST, rid), body])
        inflight[rid] = (body, nbuf, 0)
        sent += nbuf
        buf, nbuf = [], 0

    def collect():
        nonlocal acked
        rep = cl.recv(30000)
        if rep is None:
            raise RuntimeError("gateway did not ack within 30 s")
        hdr, body = rep
        rid = hdr["request_id"]
        if rid not in inflight:
            return
        data, n, tries = inflight.pop(rid)
        if hdr["status"] == "RETRY_LATER" and tries < 50:
            time.sleep(0.05)
            nrid = cl.next_id
            cl.next_id += 1
            cl.send_frames([tm_proto.header(tm_proto.INGEST, nrid), data])
            inflight[nrid] = (data, n, tries + 1)
            return
        if hdr["status"] != "OK":
            raise RuntimeError("INGEST refused: %s %s" % (hdr["status"], hdr["detail"]))
        acked += tm_proto.decode(body).get(1, [0])[0]

    try:
        for t in twins:
            attrs = {"district": json.dumps(t["district"]),
                     "location": '{"lat":%.7f,"lon":%.7f}' % (t["lat"], t["lon"])}
            first = True
            for p in ("pm25", "temperature", "vehicles"):
                if t[p] is None:
                    continue
                buf.append(tm_proto.reading(t["entity"], p, t[p], ts,
                                            t["model"] if first else None,
                                            attrs if first else None))
                nbuf += 1
                first = False
            if nbuf >= batch:
                flush()
        flush()
        while inflight:
            collect()
    finally:
        cl.close()
    return acked


def twinmesh_client(c):
    """One connection for every query: a CURVE handshake per query would be
    measured too (PostgreSQL's connection is reused the same way)."""
    return tm_proto.Client(c.endpoint("broker"), os.path.join(c.keys_dir, "broker.key"),
                           os.path.join(c.keys_dir, "analyst.key_secret"))


def twinmesh_query(cl, text, timeout_ms=60000):
    body = tm_proto.field_bytes(1, text) + tm_proto.field_varint(2, timeout_ms)
    t = time.perf_counter()
    rep = cl.request(tm_proto.QUERY, body, timeout_ms=timeout_ms + 5000)
    took = time.perf_counter() - t
    if rep is None or rep[0]["status"] != "OK":
        raise RuntimeError("query failed: %s" % (rep[0] if rep else "no answer"))
    return took, decode_result(rep[1])


def decode_value(b):
    f = tm_proto.decode(b)
    if 1 in f:
        import struct
        return struct.unpack("<d", f[1][0])[0]
    if 2 in f:
        return f[2][0].decode()
    if 3 in f:
        return bool(f[3][0])
    return None


def decode_result(body):
    f = tm_proto.decode(body)
    rows = [[decode_value(v) for v in tm_proto.decode(r).get(1, [])] for r in f.get(2, [])]
    missing = f.get(4, [])
    if missing:
        raise RuntimeError("partial answer: %d shards missing" % len(missing))
    return rows


# ---------------------------------------------------------------- postgresql

class Postgres:
    def __init__(self, tmp_root):
        self.dir = tempfile.mkdtemp(prefix="bench-pg-", dir=tmp_root)
        self.port = free_port()
        self.proc = None
        user = []
        if os.geteuid() == 0:
            #  initdb refuses root: run as the package's postgres user.
            shutil.chown(self.dir, "postgres", "postgres")
            user = ["runuser", "-u", "postgres", "--"]
        self.user = user
        subprocess.run(user + [PG_BIN + "/initdb", "-D", self.dir + "/data", "-A", "trust",
                               "-U", "bench"], check=True, stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            user + [PG_BIN + "/postgres", "-D", self.dir + "/data", "-p", str(self.port),
                    "-k", self.dir, "-h", "127.0.0.1", "-c", "fsync=off",
                    "-c", "shared_buffers=256MB", "-c", "synchronous_commit=off"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir + "/log", "w"))
        _cleanups.append(self.stop)
        import psycopg2
        deadline = time.monotonic() + 30
        while True:
            try:
                self.conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="bench",
                                             dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.conn.autocommit = True

    def load(self, twins):
        import io
        cur = self.conn.cursor()
        cur.execute("CREATE EXTENSION cube; CREATE EXTENSION earthdistance;")
        cur.execute("CREATE TABLE twins (entity text PRIMARY KEY, model text, district text,"
                    " lat float8, lon float8, pm25 float8, temperature float8,"
                    " vehicles float8)")
        buf = io.StringIO()
        for t in twins:
            buf.write("\t".join("\\N" if t[k] is None else str(t[k]) for k in
                                ("entity", "model", "district", "lat", "lon", "pm25",
                                 "temperature", "vehicles")) + "\n")
        buf.seek(0)
        cur.copy_from(buf, "twins")
        cur.execute("CREATE INDEX ON twins (model, district)")
        cur.execute("CREATE INDEX ON twins USING gist (ll_to_earth(lat, lon))")
        cur.execute("VACUUM ANALYZE twins")

    def query(self, text):
        cur = self.conn.cursor()
        t = time.perf_counter()
        cur.execute(text)
        rows = cur.fetchall()
        return time.perf_counter() - t, [list(r) for r in rows]

    def version(self):
        cur = self.conn.cursor()
        cur.execute("SHOW server_version")
        return cur.fetchone()[0]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def same_answer(a, b):
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            if isinstance(x, float) or isinstance(y, float):
                if x is None or y is None or abs(float(x) - float(y)) > 1e-6 * max(1, abs(float(y))):
                    return False
            elif x != y:
                return False
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--twins", type=int, default=1000000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tmp-root", default=None)
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    a = ap.parse_args(argv)

    twins = list(make_twins(a.twins, a.seed))
    log("%d twins made" % len(twins))
    pg = None
    if not a.skip_postgres:
        pg = Postgres(a.tmp_root)
        t = time.monotonic()
        pg.load(twins)
        log("postgresql %s loaded in %.1f s" % (pg.version(), time.monotonic() - t))
    c = twinmesh_cluster.Cluster(a.build, workers=a.workers, gateways=1, fsync=False,
                                 tmp_root=a.tmp_root)
    _cleanups.append(c.stop_all)
    t = time.monotonic()
    acked = load_twinmesh(c, twins, int(time.time() * 1000))
    log("twinmesh loaded %d readings in %.1f s" % (acked, time.monotonic() - t))
    del twins
    results = {}
    cl = twinmesh_client(c)
    _cleanups.append(cl.close)
    for name, (ours, theirs) in QUERIES.items():
        tm_times, pg_times = [], []
        tm_rows = pg_rows = None
        for i in range(a.warmup + a.reps):
            took, tm_rows = twinmesh_query(cl, ours)
            if i >= a.warmup:
                tm_times.append(took)
            if pg:
                took, pg_rows = pg.query(theirs)
                if i >= a.warmup:
                    pg_times.append(took)
        agree = same_answer(tm_rows, pg_rows) if pg else None
        results[name] = {"twinmesh_p50_ms": statistics.median(tm_times) * 1e3,
                         "twinmesh_p99_ms": pct(tm_times, 0.99) * 1e3,
                         "postgres_p50_ms": statistics.median(pg_times) * 1e3 if pg else None,
                         "postgres_p99_ms": pct(pg_times, 0.99) * 1e3 if pg else None,
                         "answers_agree": agree}
        if agree is False:
            log("%s: answers differ!\n  twinmesh %s\n  postgres %s" % (name, tm_rows, pg_rows))
    print("bench_query: %d twins, %d workers, %d reps after %d warm-up, %s"
          % (a.twins, a.workers, a.reps, a.warmup,
             ("PostgreSQL " + pg.version()) if pg else "no PostgreSQL"))
    print("%-14s %12s %12s %12s %12s %8s %7s" % ("query", "tm p50 ms", "tm p99 ms",
                                                  "pg p50 ms", "pg p99 ms", "pg/tm", "agree"))
    for name, r in results.items():
        ratio = (r["postgres_p50_ms"] / r["twinmesh_p50_ms"]) if pg else None
        r["ratio_p50"] = ratio
        print("%-14s %12.2f %12.2f %12s %12s %8s %7s"
              % (name, r["twinmesh_p50_ms"], r["twinmesh_p99_ms"],
                 "%.2f" % r["postgres_p50_ms"] if pg else "-",
                 "%.2f" % r["postgres_p99_ms"] if pg else "-",
                 "%.2fx" % ratio if ratio else "-", r["answers_agree"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all(r["answers_agree"] is not False for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
