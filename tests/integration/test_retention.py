"""Retention per model: a compaction drops each series' history by its own model.

Three models keep history 1 day (short), 10 years with one property at 1 day
(long.fast) and nothing said (inherit: the worker's history_retention, 2 days
here); twins of no model and of a model never loaded keep the worker's 2 days
too. Every series gets 150 readings a minute apart from 5 days ago (the first
120 close a chunk, written by the checkpoint; 30 stay in the open chunk) and
one late reading; other twins get the same 1.5 days and an hour ago. The
worker runs with compact_at_start, so a restart compacts the whole store:
then the expired series have only their 30 open points left, the others all
151, and the latest values are untouched.
"""
import json
import os
import time
import unittest

from tmtest import client, cluster, main, tm_proto

DAY_MS = 86_400_000
N = 150
OPEN = N - 120                  # points left in the open chunk

MODELS = {
    "ret_short": {"retention_ms": DAY_MS, "properties": {"p": {}}},
    "ret_long": {"retention_ms": 3650 * DAY_MS,
                 "properties": {"p": {}, "fast": {"retention_ms": DAY_MS}}},
    "ret_inherit": {"properties": {"p": {}}},
}

# entity, property, model, days ago, kept after compaction
SERIES = [
    ("ret/short-old", "p", "ret_short", 5, False),
    ("ret/short-fresh", "p", "ret_short", 1 / 24, True),
    ("ret/long-old", "p", "ret_long", 5, True),
    ("ret/long-old", "fast", "ret_long", 5, False),
    ("ret/long-old", "other", "ret_long", 5, True),     # not in the model: the model's
    ("ret/inherit-old", "p", "ret_inherit", 5, False),  # the worker's 2 days
    ("ret/none-old", "p", None, 5, False),              # no model: the worker's
    ("ret/absent-old", "p", "ret_absent", 5, False),    # not loaded: the worker's
    ("ret/inherit-fresh", "p", "ret_inherit", 1 / 24, True),
    # 1.5 days: past the short model's day, within the worker's two.
    ("ret/short-mid", "p", "ret_short", 1.5, False),
    ("ret/inherit-mid", "p", "ret_inherit", 1.5, True),
    ("ret/long-mid", "fast", "ret_long", 1.5, False),
    ("ret/none-mid", "p", None, 1.5, True),
]


def value(k):
    return round(10 + k * 0.25, 2)


class RetentionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=1, extra_args={"worker": {
            "history_retention": "2d", "compact_at_start": True,
            "checkpoint_interval": "300ms"}})
        paths = []
        for name, body in MODELS.items():
            doc = dict(body, name=name, version=1)
            path = os.path.join(cls.c.tmp, name + ".json")
            with open(path, "w") as f:
                json.dump(doc, f)
            paths.append(path)
        cls.c.twinctl("model", "load", *paths)
        deadline = time.monotonic() + 20
        while not all("modelsync: model installed name=%s " % n in cls.c.log("worker-0")
                      for n in MODELS):
            assert time.monotonic() < deadline, "models did not reach the worker"
            time.sleep(0.1)
        now = int(time.time() * 1000)
        cls.expected = {}
        readings = []
        for entity, prop, model, days, _ in SERIES:
            t0 = now - int(days * DAY_MS)
            pts = {t0 + k * 60_000: value(k) for k in range(N)}
            late = (t0 + 30_000, 99.5)          # between the first two: late
            rs = [(entity, prop, v, ts, model) if model else (entity, prop, v, ts)
                  for ts, v in sorted(pts.items())]
            rs.append((entity, prop, late[1], late[0], model) if model
                      else (entity, prop, late[1], late[0]))
            readings += rs
            pts[late[0]] = late[1]
            cls.expected[(entity, prop)] = pts
        gw = client(cls.c, "gateway-0", "producer")
        try:
            for i in range(0, len(readings), 200):
                hdr, _ = gw.request(tm_proto.INGEST, tm_proto.batch(readings[i:i + 200]))
                assert hdr["status"] == "OK", hdr
        finally:
            gw.close()

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    def history(self, entity, prop):
        r = self.c.twinctl("twin", "history", entity, prop, "--json")
        h = json.loads(r.stdout)
        self.assertFalse(h["truncated"])
        return [(p["ts_ms"], p["value"]) for p in h["points"]]

    def latest(self, entity):
        r = self.c.twinctl("twin", "get", entity, "--json")
        return {p["name"]: (p["ts_ms"], p["value"]) for p in json.loads(r.stdout)["properties"]}

    def test_retention_by_model(self):
        # Everything is there before a compaction ran over it.
        for entity, prop, _, _, _ in SERIES:
            self.assertEqual(self.history(entity, prop),
                             sorted(self.expected[(entity, prop)].items()), (entity, prop))
        # A clean stop writes every closed chunk and late reading; the
        # restart compacts the store.
        since = len(self.c.log("worker-0"))
        self.c.restart("worker-0")
        self.c.wait_ready()
        self.assertIn("worker: compacted at start", self.c.log("worker-0")[since:])
        for entity, prop, model, days, kept in SERIES:
            want = sorted(self.expected[(entity, prop)].items())
            if not kept:
                want = want[-OPEN:]             # the open chunk, in the checkpoint blob
            self.assertEqual(self.history(entity, prop), want,
                             "%s.%s (model %s)" % (entity, prop, model))
            last_ts, last_v = want[-1]
            self.assertEqual(self.latest(entity)[prop], (last_ts, last_v), (entity, prop))


if __name__ == "__main__":
    main()
