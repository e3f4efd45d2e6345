"""History: every accepted reading kept once, in time order, across a SIGKILL.

A series of 1000 readings goes in through the gateway with duplicates (same
timestamp as the newest, another value: must change nothing) and late readings
(held back and sent after newer ones: kept, counted, not lost). twinctl twin
history must give back exactly the expected series, raw and per step, before
and after the worker that owns it is SIGKILLed and restarted.
"""
import json
import math
import os
import signal
import unittest

from tmtest import client, cluster, main, shard_map, shard_of, tm_proto

T0 = 1_700_000_000_000
STEP_MS = 1000
N = 1000
ENTITY = "hist/sensor-1"
PROP = "temp"


def value(k):
    return round(20 + 5 * math.sin(k / 20.0), 2)


class HistoryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The series is from 2023 (fixed times the text output is checked
        # against): keep it, whatever the default retention would drop.
        cls.c = cluster(workers=2, extra_args={"worker": {"history_retention": "0s"}})
        cls.expected = {}
        cls.late = 0
        held = []
        sends = []
        for k in range(N):
            ts = T0 + k * STEP_MS
            if k % 50 == 25:
                held.append((ENTITY, PROP, value(k), ts))   # sent late, after k + 3
                continue
            sends.append((ENTITY, PROP, value(k), ts))
            if k % 7 == 0:                                  # a duplicate: ignored
                sends.append((ENTITY, PROP, value(k) + 100, ts))
            if held and k % 50 == 28:
                sends.extend(held)
                cls.late += len(held)
                held = []
        sends.extend(held)
        cls.late += len(held)
        for k in range(N):
            cls.expected[T0 + k * STEP_MS] = value(k)
        gw = client(cls.c, "gateway-0", "producer")
        try:
            for i in range(0, len(sends), 97):
                hdr, _ = gw.request(tm_proto.INGEST, tm_proto.batch(sends[i:i + 97]))
                assert hdr["status"] == "OK", hdr
        finally:
            gw.close()

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    def history(self, *args):
        r = self.c.twinctl("twin", "history", ENTITY, PROP, "--json", *args)
        return json.loads(r.stdout)

    def check_all(self):
        h = self.history()
        self.assertFalse(h["truncated"])
        got = [(p["ts_ms"], p["value"]) for p in h["points"]]
        self.assertEqual(got, sorted(self.expected.items()))
        self.assertEqual(h["late"], self.late)
        # Per minute: the same aggregates computed here, in time order.
        buckets = {}
        for ts, v in sorted(self.expected.items()):
            buckets.setdefault(ts - ts % 60000, []).append(v)
        for agg in ("avg", "min", "max", "last", "count"):
            h = self.history("--step", "1m", "--agg", agg)
            want = []
            for b, vs in sorted(buckets.items()):
                total = 0.0
                for v in vs:
                    total += v
                want.append((b, {"avg": total / len(vs), "min": min(vs), "max": max(vs),
                                 "last": vs[-1], "count": len(vs)}[agg], len(vs)))
            self.assertEqual([(p["ts_ms"], p["value"], p["count"]) for p in h["points"]],
                             want, agg)
        # A range and a limit.
        h = self.history("--from", str(T0 + 10 * STEP_MS), "--to", str(T0 + 20 * STEP_MS))
        self.assertEqual([p["ts_ms"] for p in h["points"]],
                         [T0 + k * STEP_MS for k in range(10, 20)])
        h = self.history("--limit", "5")
        self.assertEqual(len(h["points"]), 5)
        self.assertTrue(h["truncated"])

    def test_1_history_exact(self):
        self.check_all()
        text = self.c.twinctl("twin", "history", ENTITY, PROP, "--from",
                              "2023-11-14T22:13:20Z", "--to", "2023-11-14T22:13:22Z").stdout
        self.assertIn("2023-11-14T22:13:20.000Z", text)
        self.assertIn("2 points", text)
        # Relative times: a long time ago is everything, now is nothing.
        self.assertEqual(len(self.history("--from", "-100000d")["points"]), N)
        self.assertEqual(len(self.history("--from", "now")["points"]), 0)
        h = self.history("--from", "2023-11-14T22:13:21.500Z", "--limit", "1")
        self.assertEqual(h["points"][0]["ts_ms"], T0 + 2000)

    def test_2_after_sigkill(self):
        m = shard_map(self.c)
        owner = m["workers"][m["owners"][shard_of(m, ENTITY)]]["id"]
        self.c.kill(owner, signal.SIGKILL)
        self.c.start(owner)
        self.c.wait_ready()
        self.check_all()

    def test_3_after_clean_restart_and_sigkill(self):
        # A clean stop checkpoints: chunks and late readings now come from
        # the store, and a SIGKILL after that must not double any of them.
        m = shard_map(self.c)
        owner = m["workers"][m["owners"][shard_of(m, ENTITY)]]["id"]
        self.c.restart(owner)
        self.c.wait_ready()
        self.check_all()
        self.c.kill(owner, signal.SIGKILL)
        self.c.start(owner)
        self.c.wait_ready()
        self.check_all()

    def test_errors(self):
        r = self.c.twinctl("twin", "history", ENTITY, "nope", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no property nope", r.stderr)
        r = self.c.twinctl("twin", "history", ENTITY, PROP, "--agg", "median", check=False)
        self.assertEqual(r.returncode, 2)
        r = self.c.twinctl("twin", "history", ENTITY, PROP, "--from", "yesterday", check=False)
        self.assertEqual(r.returncode, 2)
        r = self.c.twinctl("twin", "history", ENTITY, PROP, "--cert",
                           os.path.join(self.c.keys_dir, "producer.key_secret"), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unauthorized", r.stderr)


if __name__ == "__main__":
    main()
