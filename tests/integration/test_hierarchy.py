"""Hierarchy: parent twins aggregating their children, across workers.

Air stations (models/air_station.json) name their district twin in the
`district` attribute; the district (models/district.json) keeps, per
property, the number of children reporting, the mean, min and max of their
latest good values and how many are anomalous. Entity ids are chosen (the
owners computed in Python from the broker's map) so that every district has
children on both workers: some contributions are local, some travel as
CHILD_UPDATE between workers. The aggregates are checked against a Python
recomputation from the readings sent, then again after the parent's worker
is SIGKILLed and restarted (the aggregates are rebuilt by a resync), after
the parent's worker is SIGSTOPped while its children change (the updates are
resent), after a child's worker is SIGSTOPped while readings wait for it,
and after children move to another parent.
"""
import json
import os
import threading
import time
import unittest

from tmtest import client, cluster, main, shard_map, shard_of, tm_proto

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "models")
PROPS = ("pm25", "no2", "temperature")
VALID = {"pm25": (0, 1000), "no2": (0, 1000), "temperature": (-50, 60),   # models/air_station.json
         "occupied": (0, 1),                                               # models/parking_bay.json
         "level": (-1e308, 1e308)}                                         # test_10's hier_sensor
T0 = int(time.time() * 1000) - 3_600_000
CHILDREN_PER_WORKER = 6
WAIT_S = 30.0


def owner(m, entity):
    return m["workers"][m["owners"][shard_of(m, entity)]]["id"]


class HierarchyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=2)
        try:
            cls.setup_cluster()
        except BaseException:
            cls.c.stop_all()
            raise

    @classmethod
    def setup_cluster(cls):
        c = cls.c
        names = ("air_station", "district", "parking_bay")
        c.twinctl("model", "load", *[os.path.join(MODELS_DIR, n + ".json") for n in names])
        deadline = time.monotonic() + WAIT_S
        for w in ("worker-0", "worker-1"):
            while not all("modelsync: model installed name=%s" % n in c.log(w) for n in names):
                if time.monotonic() > deadline:
                    raise AssertionError("%s did not install the models" % w)
                time.sleep(0.2)
        m = cls.map = shard_map(c)
        # One district owned by each worker; each gets children on both.
        cls.districts = {}
        i = 0
        while len(cls.districts) < 2:
            d = "hier/district/D%d" % i
            o = owner(m, d)
            if o not in cls.districts.values():
                cls.districts[d] = o
            i += 1
        cls.children = {d: [] for d in cls.districts}
        i = 0
        for d in cls.districts:
            want = {"worker-0": CHILDREN_PER_WORKER, "worker-1": CHILDREN_PER_WORKER}
            while any(want.values()):
                e = "hier/air-%04d" % i
                i += 1
                o = owner(m, e)
                if want[o]:
                    want[o] -= 1
                    cls.children[d].append(e)
        cls.newest = {}          # (child, prop) -> ts of the child's newest reading
        cls.latest = {}          # (child, prop) -> (ts, value): its latest good value
        cls.ts = T0

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    # ------------------------------------------------------------ helpers

    def send(self, rs, timeout_ms=10_000):
        gw = client(self.c, "gateway-0", "producer")
        try:
            for i in range(0, len(rs), 500):
                rep = gw.request(tm_proto.INGEST, tm_proto.batch(rs[i:i + 500]),
                                 timeout_ms=timeout_ms)
                self.assertIsNotNone(rep, "no INGEST_ACK")
                hdr, _ = rep
                self.assertEqual(hdr["status"], "OK", hdr)
        finally:
            gw.close()
        # The children keep the newest reading of each series (a repeat or an
        # older reading changes nothing); the parent holds the latest good one.
        for e, prop, value, ts, *_ in rs:
            if ts > self.newest.get((e, prop), -1):
                self.newest[(e, prop)] = ts
                lo, hi = VALID[prop]
                if lo <= value <= hi:
                    self.latest[(e, prop)] = (ts, value)

    def step(self, fn, children=None):
        """One reading per child and property at the next timestamp."""
        self.__class__.ts += 1000
        rs = []
        for d, kids in self.children.items():
            for k, e in enumerate(kids):
                if children is not None and e not in children:
                    continue
                attrs = {"district": json.dumps(d),
                         "location": json.dumps({"lat": 45.4 + k / 100, "lon": 9.1})}
                for p, prop in enumerate(PROPS):
                    rs.append((e, prop, fn(d, k, p), self.ts, "air_station", attrs))
        return rs

    def expected(self, d):
        out = {}
        for prop in PROPS:
            vals = [self.latest[(e, prop)][1] for e in self.children[d]
                    if (e, prop) in self.latest]
            if vals:
                out[prop] = {"children": len(vals), "mean": sum(vals) / len(vals),
                             "min": min(vals), "max": max(vals), "anomalous": 0}
        return out

    def aggregates(self, d):
        t = self.c.twin(d)
        if t is None:
            return None, None
        return t, {a["property"]: a for a in t.get("child_aggregates", [])}

    def matches(self, d):
        want = self.expected(d)
        t, got = self.aggregates(d)
        if got is None or set(got) != set(want):
            return False
        for prop, w in want.items():
            g = got[prop]
            if (g["children"] != w["children"] or g["min"] != w["min"] or g["max"] != w["max"]
                    or g["anomalous"] != w["anomalous"]
                    or abs(g["mean"] - w["mean"]) > 1e-9 * max(1.0, abs(w["mean"]))):
                return False
        return t["children"] == len(self.children[d])

    def wait_all_match(self, what, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while True:
            bad = [d for d in self.districts if not self.matches(d)]
            if not bad:
                return
            if time.monotonic() > deadline:
                d = bad[0]
                self.fail("%s: %s aggregates %s, expected %s" % (
                    what, d, self.aggregates(d)[1], self.expected(d)))
            time.sleep(0.3)

    # -------------------------------------------------------------- tests

    def test_01_aggregates_match_a_recomputation(self):
        # Children on both workers for both parents.
        for d, kids in self.children.items():
            self.assertEqual({owner(self.map, e) for e in kids}, {"worker-0", "worker-1"}, d)
        self.assertEqual(set(self.districts.values()), {"worker-0", "worker-1"})
        self.send(self.step(lambda d, k, p: 10.0 + 3 * k + p))
        rs = self.step(lambda d, k, p: 40.0 - 2 * k - p)     # values go down and up
        self.send(rs)
        self.send(rs)                                         # a repeat changes nothing
        late = [(e, prop, 999.0, ts - 1500, model, attrs)     # older than held: ignored
                for e, prop, _, ts, model, attrs in rs]
        self.send(late)
        self.wait_all_match("after two steps, a repeat and late readings")
        # The parent twin exists with its model though it never had a reading.
        for d in self.districts:
            t = self.c.twin(d)
            self.assertEqual(t["model"], "district", t)
            self.assertEqual(t["worker"], self.districts[d], t)
            self.assertEqual(t["properties"], [], t)

    def test_02_children_listed(self):
        self.wait_all_match("before listing")
        d = next(iter(self.districts))
        r = self.c.twinctl("twin", "children", d, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = json.loads(r.stdout)
        self.assertEqual(rep["total"], len(self.children[d]))
        self.assertEqual([c["entity"] for c in rep["children"]], sorted(self.children[d]))
        for ch in rep["children"]:
            self.assertEqual(ch["model"], "air_station")
            for prop in PROPS:
                ts, value = self.latest[(ch["entity"], prop)]
                self.assertEqual(ch["values"][prop]["value"], value, ch)
                self.assertEqual(ch["values"][prop]["ts_ms"], ts, ch)
        text = self.c.twinctl("twin", "get", d).stdout
        self.assertIn("CHILDREN'S PROPERTY", text)

    def test_03_only_workers_may_send_child_updates(self):
        d = next(d for d, o in self.districts.items() if o == "worker-1")
        entry = (tm_proto.field_bytes(1, d) + tm_proto.field_bytes(2, "hier/forged")
                 + tm_proto.field_bytes(3, "air_station")
                 + tm_proto.field_bytes(5, tm_proto.field_bytes(1, "pm25")
                                        + tm_proto.field_double(2, 1e6)
                                        + tm_proto.field_varint(3, T0)))
        body = tm_proto.field_bytes(1, entry)
        for as_key in ("producer", "admin", "gateway-0"):
            cl = client(self.c, "worker-1", as_key)
            try:
                hdr, _ = cl.request(tm_proto.CHILD_UPDATE, body, epoch=self.map["epoch"])
                self.assertEqual(hdr["status"], "UNAUTHORIZED", (as_key, hdr))
            finally:
                cl.close()
        # A worker's key with hostile bytes: refused with a reason, service goes on.
        cl = client(self.c, "worker-1", "worker-0")
        try:
            for junk in (b"\xff\xff\xff", tm_proto.field_bytes(1, b"\x0a\x05ab"),
                         tm_proto.field_bytes(1, tm_proto.field_bytes(1, d)
                                              + tm_proto.field_bytes(2, "x" * 200))):
                hdr, _ = cl.request(tm_proto.CHILD_UPDATE, junk, epoch=self.map["epoch"])
                self.assertEqual(hdr["status"], "MALFORMED", hdr)
        finally:
            cl.close()
        self.wait_all_match("after refused updates")   # nothing forged was counted

    def test_04_parent_worker_sigkill_and_restart(self):
        d, parent_worker = next(iter(self.districts.items()))
        before = self.aggregates(d)[1]
        self.c.kill(parent_worker)
        self.c.start(parent_worker)
        self.c.wait_ready()
        self.wait_all_match("after SIGKILL and restart of %s" % parent_worker)
        self.assertEqual(self.aggregates(d)[1], before)

    def test_05_parent_worker_paused_catches_up(self):
        d, parent_worker = next(iter(self.districts.items()))
        other = "worker-1" if parent_worker == "worker-0" else "worker-0"
        remote = [e for e in self.children[d] if owner(self.map, e) == other]
        self.c.pause(parent_worker)
        try:
            # Readings for children on the running worker are acked; their
            # parent cannot hear of them yet.
            self.send(self.step(lambda d_, k, p: 50.0 - 5 * k + p, children=remote))
            time.sleep(2.5)       # CHILD_UPDATEs time out and are queued again
        finally:
            self.c.resume(parent_worker)
        self.wait_all_match("after %s resumed" % parent_worker)

    def test_06_child_worker_paused_catches_up(self):
        d, parent_worker = next(iter(self.districts.items()))
        child_worker = "worker-1" if parent_worker == "worker-0" else "worker-0"
        remote = [e for e in self.children[d] if owner(self.map, e) == child_worker]
        rs = self.step(lambda d_, k, p: 7.0 + k + p / 2, children=remote)
        self.c.pause(child_worker)
        errors = []

        def produce():
            try:
                self.send(rs, timeout_ms=60_000)
            except BaseException as e:           # reported below
                errors.append(e)
        th = threading.Thread(target=produce)
        try:
            th.start()
            time.sleep(2.0)
        finally:
            self.c.resume(child_worker)
        th.join(90)
        self.assertFalse(th.is_alive(), "the producer never got its ack")
        self.assertEqual(errors, [])
        self.wait_all_match("after %s resumed" % child_worker)

    def test_07_out_of_range_keeps_the_last_good_value(self):
        # Temperature 100 is outside its valid range: the parents keep each
        # child's previous good value; pm25 and no2 (valid to 1000) move.
        self.send(self.step(lambda d, k, p: 100.0 + k))
        self.wait_all_match("after out-of-range temperatures")
        for d in self.districts:
            got = self.aggregates(d)[1]
            self.assertLess(got["temperature"]["max"], 60, got)
            self.assertGreaterEqual(got["pm25"]["min"], 100, got)

    def test_08_a_child_that_changes_parent_moves(self):
        (a, a_worker), (b, _) = list(self.districts.items())
        other = "worker-1" if a_worker == "worker-0" else "worker-0"
        # One child on a's worker (a local detachment), one on the other
        # worker (a detachment sent in a CHILD_UPDATE).
        moved = [next(e for e in self.children[a] if owner(self.map, e) == a_worker),
                 next(e for e in self.children[a] if owner(self.map, e) == other)]
        for e in moved:
            self.children[a].remove(e)
            self.children[b].append(e)
        self.send(self.step(lambda d, k, p: 20.0 + k + p, children=moved))
        self.wait_all_match("after two children moved from %s to %s" % (a, b))
        r = self.c.twinctl("twin", "children", a, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = [ch["entity"] for ch in json.loads(r.stdout)["children"]]
        self.assertEqual(listed, sorted(self.children[a]))

    def test_09_derived_properties_read_aggregates(self):
        # models/district.json: parking_free_ratio = 1 - occupied_mean, over
        # the district's parking bays (aggregate "occupied", models parking_bay).
        d = "hier/district/parking"
        bays = ["hier/bay-%03d" % i for i in range(10)]
        occupied = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
        attrs = {"district": json.dumps(d), "location": json.dumps({"lat": 45.5, "lon": 9.2})}
        self.__class__.ts += 1000
        self.send([(b, "occupied", float(o), self.ts, "parking_bay", attrs)
                   for b, o in zip(bays, occupied)])
        want = 1 - sum(occupied) / len(occupied)
        deadline = time.monotonic() + WAIT_S
        while True:
            t, got = self.aggregates(d)
            props = {p["name"]: p for p in (t or {}).get("properties", [])}
            if got and got.get("occupied", {}).get("children") == len(bays) \
                    and "parking_free_ratio" in props:
                break
            self.assertLess(time.monotonic(), deadline, "no aggregates for %s: %s" % (d, t))
            time.sleep(0.3)
        self.assertAlmostEqual(got["occupied"]["mean"], sum(occupied) / len(occupied))
        self.assertTrue(props["parking_free_ratio"].get("derived"), props)
        self.assertAlmostEqual(props["parking_free_ratio"]["value"], want)
        # Queries see the derived property too (through the same code).
        r = self.c.twinctl("query", "SELECT entity, parking_free_ratio FROM twins WHERE "
                           "entity = '%s'" % d, "--format", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = json.loads(r.stdout)["rows"]
        self.assertEqual(len(rows), 1, rows)
        self.assertAlmostEqual(rows[0][1], want)
        # A change among the children is a change of the parent: its version
        # moves, and a query sees the new value (no stale cached column).
        version = t["version"]
        self.__class__.ts += 1000
        self.send([(b, "occupied", 1.0, self.ts, "parking_bay", attrs) for b in bays])
        deadline = time.monotonic() + WAIT_S
        while True:
            r = self.c.twinctl("query", "SELECT entity, parking_free_ratio FROM twins WHERE "
                               "entity = '%s'" % d, "--format", "json")
            rows = json.loads(r.stdout)["rows"] if r.returncode == 0 else []
            if rows and rows[0][1] == 0:
                break
            self.assertLess(time.monotonic(), deadline, "query still answers %s" % rows)
            time.sleep(0.3)
        self.assertGreater(self.c.twin(d)["version"], version)

    def test_10_anomalous_children_are_counted(self):
        # Own models, so that scoring starts after 5 readings (air_station
        # waits for 60): a level that hovers, then one child spikes.
        sensor = {"format": 1, "name": "hier_sensor", "version": 1,
                  "properties": {"level": {"anomaly": {"threshold_sigma": 4, "warmup": 5},
                                           "forecast": {"beta": 0}}},
                  "attributes": {"area": {"type": "string"}},
                  "relationships": {"area": {"kind": "parent", "target": "hier_area",
                                             "attribute": "area"}}}
        area = {"format": 1, "name": "hier_area", "version": 1,
                "aggregates": {"level": {"functions": ["mean", "count_anomalous"]}}}
        paths = []
        for doc in (sensor, area):
            path = os.path.join(self.c.tmp, doc["name"] + ".json")
            with open(path, "w") as f:
                json.dump(doc, f)
            paths.append(path)
        self.c.twinctl("model", "load", *paths)
        deadline = time.monotonic() + WAIT_S
        for w in ("worker-0", "worker-1"):
            while "modelsync: model installed name=hier_area" not in self.c.log(w):
                self.assertLess(time.monotonic(), deadline, "%s lacks the models" % w)
                time.sleep(0.2)
        a = "hier/area/A"
        a_worker = owner(self.map, a)
        sensors, i = [], 0
        for want in (a_worker, "worker-1" if a_worker == "worker-0" else "worker-0"):
            while owner(self.map, "hier/sensor-%d" % i) != want:
                i += 1
            sensors.append("hier/sensor-%d" % i)
            i += 1
        attrs = {"area": json.dumps(a)}
        rs = [(e, "level", 10.0 + (k % 3) * 0.1, T0 + k * 1000, "hier_sensor", attrs)
              for k in range(30) for e in sensors]
        self.send(rs)

        def area_level():
            _, got = self.aggregates(a)
            return (got or {}).get("level")
        deadline = time.monotonic() + WAIT_S
        while not (area_level() or {}).get("children") == 2:
            self.assertLess(time.monotonic(), deadline, "no aggregate for %s" % a)
            time.sleep(0.3)
        self.assertEqual(area_level()["anomalous"], 0)
        # The child on the other worker spikes: its parent counts it.
        self.send([(sensors[1], "level", 500.0, T0 + 30 * 1000, "hier_sensor", attrs)])
        deadline = time.monotonic() + WAIT_S
        while area_level()["anomalous"] != 1:
            self.assertLess(time.monotonic(), deadline, "spike not counted: %s" % area_level())
            time.sleep(0.3)
        self.assertAlmostEqual(area_level()["mean"], (500.0 + 10.2) / 2)
        r = self.c.twinctl("twin", "children", a, "--json")
        flags = {c["entity"]: c["values"]["level"]["anomalous"]
                 for c in json.loads(r.stdout)["children"]}
        self.assertEqual(flags, {sensors[0]: False, sensors[1]: True})

    def test_11_status_shows_the_counters(self):
        cl = client(self.c, "worker-1", "producer")
        try:
            hdr, _ = cl.request(tm_proto.CHILD_UPDATE, b"", epoch=self.map["epoch"])
            self.assertEqual(hdr["status"], "UNAUTHORIZED", hdr)
        finally:
            cl.close()
        cl = client(self.c, "worker-1", "worker-0")
        try:
            hdr, _ = cl.request(tm_proto.CHILD_UPDATE, b"\x0a\x02\x0a", epoch=self.map["epoch"])
            self.assertEqual(hdr["status"], "MALFORMED", hdr)
        finally:
            cl.close()
        # test_09 and test_10 added 10 bays and 2 sensors to their own parents.
        want_children = sum(len(v) for v in self.children.values()) + 10 + 2
        deadline = time.monotonic() + WAIT_S
        while True:
            nodes = {n["id"]: n for n in self.c.status()["nodes"] if n["role"] == "worker"}
            h = {w: (n.get("stats") or {}).get("hierarchy") or {} for w, n in nodes.items()}
            total = lambda k: sum(x.get(k, 0) for x in h.values())
            if (len(h) == 2 and total("children") == want_children and total("parents") == 4
                    and h["worker-1"].get("malformed", 0) >= 1
                    and h["worker-1"].get("unauthorized", 0) >= 1):
                break
            self.assertLess(time.monotonic(), deadline, "status says %s" % h)
            time.sleep(0.5)
        self.assertGreater(total("sent"), 0)
        self.assertGreater(total("acked"), 0)
        self.assertGreater(total("received"), 0)
        self.assertGreater(total("local_values"), 0)
        self.assertEqual(total("refused"), 0)


if __name__ == "__main__":
    main()
