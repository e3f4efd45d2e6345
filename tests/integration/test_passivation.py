"""Passivation: idle twins leave a worker's memory and still answer.

One worker with a memory budget it is always over (1 byte) and a
passivation idle time of 1 s, so every twin not heard from for a second
goes to the store at the next checkpoint round (every 300 ms). Then:
- the worker's status counts them passive, its heap drops;
- a fleet query still counts every twin once, with their values;
- `twin get` of a passive twin answers with its state (and brings it back);
- a reading of a passive twin is applied on top of the state it left with;
- its history (closed chunks, and its open chunk that went with it) is whole;
- after SIGKILL and a restart, all of the above still holds: nothing lost,
  nothing counted twice.
"""
import json
import signal
import time
import unittest

from tmtest import client, cluster, key, main, tm_proto

TWINS = 300
READINGS = 130         # per twin and property: one closed chunk (120) and an open one
T0 = int(time.time() * 1000) - 3_600_000


def value(i, k):
    return round(i * 0.5 + k * 0.25, 2)


class PassivationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=1, extra_args={"worker": {
            "memory_budget": 1, "passivate_idle": "1s", "checkpoint_interval": "300ms"}})

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    def send(self, rs, batch=2000):
        cl = client(self.c, "gateway-0", "producer")
        try:
            for i in range(0, len(rs), batch):
                body = b"".join(tm_proto.reading(*r) for r in rs[i:i + batch])
                for _ in range(100):
                    rep = cl.request(tm_proto.INGEST, body)
                    self.assertIsNotNone(rep, "no INGEST_ACK")
                    if rep[0]["status"] != "RETRY_LATER":
                        break
                    time.sleep(0.1)
                self.assertEqual(rep[0]["status"], "OK", rep[0])
        finally:
            cl.close()

    def worker_stats(self):
        for n in self.c.status()["nodes"]:
            if n["role"] == "worker" and n["stats"]:
                return n["stats"]
        self.fail("no worker in status")

    def wait_stats(self, what, ok, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.worker_stats()
            if ok(st):
                return st
            time.sleep(0.3)
        self.fail("%s never came: %s" % (what, self.worker_stats()))

    def wait_passive(self, at_least):
        return self.wait_stats("%d passive twins" % at_least,
                               lambda st: st["passive_twins"] >= at_least)

    def query(self, text):
        r = self.c.twinctl("query", text, "--format", "json", "--cert", key(self.c, "analyst"),
                           timeout=90)
        return json.loads(r.stdout)

    def props(self, entity):
        t = self.c.twin(entity)
        self.assertIsNotNone(t, entity)
        return {p["name"]: p for p in t["properties"]}

    def history(self, entity, prop):
        r = self.c.twinctl("twin", "history", entity, prop, "--json")
        return [(q["ts_ms"], q["value"]) for q in json.loads(r.stdout)["points"]]

    def check_fleet(self, extra):
        """Every twin once; sum(a) over their latest values; extra: {i: latest a}."""
        want = sum(extra.get(i, value(i, READINGS - 1)) for i in range(TWINS))
        ans = self.query("SELECT count(*), sum(a), count(b) FROM twins")
        self.assertFalse(ans["partial"])
        self.assertEqual(ans["rows"][0][0], TWINS)
        self.assertEqual(ans["rows"][0][2], TWINS)
        self.assertAlmostEqual(ans["rows"][0][1], want, delta=1e-6 * abs(want))

    def test_passive_twins_answer_across_a_crash(self):
        rs = [("pas/t-%03d" % i, prop, value(i, k), T0 + k * 1000)
              for k in range(READINGS) for i in range(TWINS) for prop in ("a", "b")]
        self.send(rs)
        st = self.wait_passive(TWINS)
        self.assertEqual(st["twins"], 0, st)
        self.assertGreaterEqual(st["passivated"], TWINS)
        self.assertGreater(st["heap_bytes"], 0)
        self.assertEqual(st["malformed"], 0, st)
        self.check_fleet({})

        # A request brings one back with its state; a reading brings another
        # back and applies once on top of it.
        p = self.props("pas/t-007")
        self.assertEqual(p["a"]["count"], READINGS)
        self.assertEqual(p["a"]["value"], value(7, READINGS - 1))
        self.send([("pas/t-011", "a", 999.5, T0 + READINGS * 1000)])
        p = self.props("pas/t-011")
        self.assertEqual(p["a"]["count"], READINGS + 1)
        self.assertEqual(p["b"]["count"], READINGS)
        self.wait_stats("2 reactivations", lambda st: st["reactivated"] >= 2)
        self.check_fleet({11: 999.5})
        pts = self.history("pas/t-020", "a")
        self.assertEqual(pts, [(T0 + k * 1000, value(20, k)) for k in range(READINGS)])

        # They go again (idle once more), then a crash.
        self.wait_passive(TWINS)
        self.c.kill("worker-0", signal.SIGKILL)
        self.c.start("worker-0")
        self.c.wait_ready()
        self.wait_stats("every twin active or passive after the restart",
                        lambda st: st["twins"] + st["passive_twins"] == TWINS)
        self.check_fleet({11: 999.5})
        p = self.props("pas/t-011")
        self.assertEqual(p["a"]["count"], READINGS + 1)
        self.assertEqual(p["a"]["value"], 999.5)
        pts = self.history("pas/t-011", "a")
        self.assertEqual(len(pts), READINGS + 1)
        self.assertEqual(len(set(ts for ts, _ in pts)), READINGS + 1)
        self.assertEqual(self.history("pas/t-299", "b"),
                         [(T0 + k * 1000, value(299, k)) for k in range(READINGS)])


if __name__ == "__main__":
    main()
