"""Predictions: forecast, time to limit, and what-ifs that leave the twin alone.

A pump's vibration rises on a perfect line (0.001 per reading, a reading a minute):
Holt's trend must find the slope, so the forecast and the time to a limit are
checked against the line itself; a what-if must move the forecast and leave the
live twin exactly as it was.
"""
import json
import os
import unittest

from tmtest import client, cluster, main, tm_proto

T0 = 1_700_000_000_000
STEP_MS = 60_000
N = 300
SLOPE = 0.001                       # per reading, i.e. per minute


def value(k):
    return 1.0 + SLOPE * k


class PredictTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=2)
        gw = client(cls.c, "gateway-0", "producer")
        try:
            rs = [("pred/pump-1", "vibration_rms", value(k), T0 + k * STEP_MS) for k in range(N)]
            for i in range(0, N, 100):
                hdr, _ = gw.request(tm_proto.INGEST, tm_proto.batch(rs[i:i + 100]))
                assert hdr["status"] == "OK", hdr
        finally:
            gw.close()

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    def forecast(self, *args):
        r = self.c.twinctl("twin", *args, "--json")
        return json.loads(r.stdout)

    def test_forecast_follows_the_line(self):
        f = self.forecast("forecast", "pred/pump-1", "vibration_rms", "--horizon", "2h",
                          "--step", "1h")
        last = T0 + (N - 1) * STEP_MS
        self.assertEqual(f["from_ms"], last)
        self.assertEqual([p["at_ms"] for p in f["points"]], [last + 3600_000, last + 7200_000])
        for p, hours in zip(f["points"], (1, 2)):
            self.assertAlmostEqual(p["value"], value(N - 1) + SLOPE * 60 * hours, delta=1e-3)
            self.assertGreaterEqual(p["stddev"], 0)
        self.assertEqual(f["limit"]["status"], "no_limit")

    def test_time_to_limit(self):
        limit = 7.1
        f = self.forecast("forecast", "pred/pump-1", "vibration_rms", "--limit", str(limit),
                          "--horizon", "200h")
        expected_ms = (limit - value(N - 1)) / SLOPE * STEP_MS
        self.assertEqual(f["limit"]["status"], "within_horizon")
        self.assertAlmostEqual(f["limit"]["in_ms"] / expected_ms, 1.0, delta=0.02)
        text = self.c.twinctl("twin", "forecast", "pred/pump-1", "vibration_rms",
                              "--limit", str(limit), "--horizon", "200h").stdout
        self.assertIn("reaches 7.1 in about 4d0h", text)   # 5801 min
        # Beyond a short horizon it says so; below the line it never arrives.
        f = self.forecast("forecast", "pred/pump-1", "vibration_rms", "--limit", str(limit))
        self.assertEqual(f["limit"]["status"], "beyond_horizon")
        f = self.forecast("forecast", "pred/pump-1", "vibration_rms", "--limit", "0.5")
        self.assertEqual(f["limit"]["status"], "never")

    def test_simulate_leaves_the_twin_alone(self):
        before = self.c.twin("pred/pump-1")
        base = self.forecast("forecast", "pred/pump-1", "vibration_rms", "--horizon", "1h",
                             "--step", "1h")
        sim = self.forecast("simulate", "pred/pump-1", "--set", "vibration_rms=5",
                            "--horizon", "1h", "--step", "1h")
        self.assertTrue(sim["simulated"])
        # "vibration_rms is now 5": the line moves to 5 and keeps its slope.
        self.assertAlmostEqual(sim["points"][0]["value"], 5 + SLOPE * 60, delta=2e-3)
        self.assertAlmostEqual(base["points"][0]["value"], value(N - 1) + SLOPE * 60, delta=1e-3)
        f = self.forecast("simulate", "pred/pump-1", "--set", "vibration_rms=5",
                          "--limit", "7.1", "--horizon", "200h")
        self.assertAlmostEqual(f["limit"]["in_ms"] / ((7.1 - 5) / SLOPE * STEP_MS), 1.0,
                               delta=0.02)
        after = self.c.twin("pred/pump-1")
        self.assertEqual(before, after)

    def test_errors(self):
        r = self.c.twinctl("twin", "forecast", "pred/pump-1", "nope", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no property nope", r.stderr)
        r = self.c.twinctl("twin", "simulate", "pred/pump-1", "--set", "vibration_rms",
                           check=False)
        self.assertEqual(r.returncode, 2)
        r = self.c.twinctl("twin", "forecast", "pred/pump-1", "vibration_rms", "--cert",
                           os.path.join(self.c.keys_dir, "producer.key_secret"), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unauthorized", r.stderr)


if __name__ == "__main__":
    main()
