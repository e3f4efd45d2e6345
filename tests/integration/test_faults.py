"""Faults: nothing acked is lost, nothing is counted twice.

Three simulated cities are sent at once, while a worker is SIGKILLed and restarted,
while a worker is SIGSTOPped, and while the broker is down. The simulators resend
whatever was not acked (RETRY_LATER or timeout); afterwards the count of readings
applied across all twins must equal what was acked exactly: a lost acked reading
makes it smaller, a reading applied twice makes it larger. Every simulated reading
is distinct (each series' timestamps strictly increase), so the equality is exact.

Each simulator keeps one batch in flight (window 1): with more, a batch resent after
a failure can arrive behind a newer batch of the same series, and its readings are
then *late* (durable in the log, counted as late, not the latest value), which would
make the count smaller for a reason that is not a loss. Three producers at once
still give the worker several parts per group commit.
"""
import signal
import threading
import time
import unittest

from tmtest import cluster, main

TWINS = 200


CITIES = ("north", "south", "east")


def twin_ids(c, n, city):
    r = c.twinctl("sim", "--list-twins", str(n), "--twins", str(n), "--city", city)
    ids = [line.split(",")[0] for line in r.stdout.splitlines()[1:] if line.strip()]
    assert len(ids) == n, r.stdout[:500]
    return ids


def applied_total(c, ids):
    total = 0
    for entity in ids:
        t = c.twin(entity)
        if t:
            total += sum(p["count"] for p in t["properties"])
    return total


class Background:
    """Run one c.sim(city=X, **kw) per city in threads; join() gives the summaries."""

    def __init__(self, c, **kw):
        self.results = {}
        self.errors = []

        def run(city):
            try:
                self.results[city] = c.sim(timeout=180, check=False, city=city, **kw)
            except Exception as e:      # reported by join()
                self.errors.append(e)
        self.threads = [threading.Thread(target=run, args=(city,)) for city in CITIES]
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join(200)
        if self.errors:
            raise self.errors[0]
        return [self.results.get(city) for city in CITIES]


class FaultTest(unittest.TestCase):
    def setUp(self):
        self.c = cluster(workers=2, extra_args={"gateway": {"ack_timeout": "2s"}})
        self.ids = [e for city in CITIES for e in twin_ids(self.c, TWINS, city)]

    def tearDown(self):
        self.c.stop_all()

    def check_exact(self, summaries):
        acked = 0
        for s in summaries:
            self.assertIsNotNone(s)
            self.assertEqual(s.get("failed", 0), 0, s)
            self.assertEqual(s.get("refused", 0), 0, s)
            self.assertEqual(s["readings_acked"], s["readings_sent"], s)
            self.assertGreater(s["readings_acked"], 0)
            acked += s["readings_acked"]
        self.assertEqual(applied_total(self.c, self.ids), acked)

    def test_worker_sigkill_and_restart(self):
        # No rate limit: parts are always in flight when the kill lands.
        bg = Background(self.c, twins=TWINS, duration=5, batch=200, window=1)
        time.sleep(2)
        self.c.kill("worker-1", signal.SIGKILL)
        time.sleep(1)
        self.c.start("worker-1")
        ss = bg.join()
        # The outage was felt: batches were resent or waited for the restart.
        self.assertTrue(any(s.get("retries", 0) > 0 or s["max_ms"] > 500 for s in ss),
                        "the kill was not noticed: %s" % ss)
        self.c.wait_ready()
        self.check_exact(ss)
        self.assertIn("recovered", self.c.log("worker-1"))

    def test_worker_sigstop(self):
        bg = Background(self.c, twins=TWINS, duration=5, batch=200, window=1)
        time.sleep(1.5)
        self.c.pause("worker-0")
        time.sleep(3)
        self.c.resume("worker-0")
        self.check_exact(bg.join())

    def test_broker_down_data_plane_goes_on(self):
        epoch = self.c.status()["epoch"]
        self.c.kill("broker", signal.SIGKILL)
        ss = Background(self.c, twins=TWINS, duration=2, batch=200, window=1).join()
        # Reading twins back needs the map, so the broker comes back first.
        self.c.start("broker")
        self.c.wait_ready()
        self.assertEqual(self.c.status()["epoch"], epoch)
        self.check_exact(ss)

    def test_worker_restart_keeps_state(self):
        ss = Background(self.c, twins=TWINS, duration=1, batch=200, window=1).join()
        before = applied_total(self.c, self.ids)
        for w in ("worker-0", "worker-1"):
            self.c.kill(w, signal.SIGKILL)
            self.c.start(w)
        self.c.wait_ready()
        self.assertEqual(applied_total(self.c, self.ids), before)
        self.assertEqual(before, sum(s["readings_acked"] for s in ss))


if __name__ == "__main__":
    main()
