"""Faults: nothing acked is lost, nothing is counted twice.

A simulated city is sent while a worker is SIGKILLed and restarted, while a worker is
SIGSTOPped, and while the broker is down. The simulator resends whatever was not
acked (RETRY_LATER or timeout); afterwards the count of readings applied across all
twins must equal what was acked exactly: a lost acked reading makes it smaller, a
reading applied twice makes it larger. Every simulated reading is distinct (each
series' timestamps strictly increase), so the equality is exact.
"""
import signal
import threading
import time
import unittest

from tmtest import cluster, main

TWINS = 200


def twin_ids(c, n):
    r = c.twinctl("sim", "--list-twins", str(n), "--twins", str(n))
    ids = [line.split()[0] for line in r.stdout.splitlines()
           if line.strip() and not line.startswith(("#", "id", "ID"))]
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
    """Run c.sim(**kw) in a thread; .result is its JSON summary."""

    def __init__(self, c, **kw):
        self.result = self.error = None

        def run():
            try:
                self.result = c.sim(timeout=180, check=False, **kw)
            except Exception as e:      # reported by join()
                self.error = e
        self.t = threading.Thread(target=run)
        self.t.start()

    def join(self):
        self.t.join(200)
        if self.error:
            raise self.error
        return self.result


class FaultTest(unittest.TestCase):
    def setUp(self):
        self.c = cluster(workers=2, extra_args={"gateway": {"ack_timeout": "2s"}})
        self.ids = twin_ids(self.c, TWINS)

    def tearDown(self):
        self.c.stop_all()

    def check_exact(self, summary):
        self.assertIsNotNone(summary)
        self.assertEqual(summary.get("failed", 0), 0, summary)
        self.assertEqual(summary.get("refused", 0), 0, summary)
        self.assertEqual(summary["readings_acked"], summary["readings_sent"], summary)
        self.assertGreater(summary["readings_acked"], 0)
        self.assertEqual(applied_total(self.c, self.ids), summary["readings_acked"])

    def test_worker_sigkill_and_restart(self):
        bg = Background(self.c, twins=TWINS, duration=6, batch=200, window=4, rate=20000)
        time.sleep(2)
        self.c.kill("worker-1", signal.SIGKILL)
        time.sleep(1)
        self.c.start("worker-1")
        s = bg.join()
        self.assertGreater(s.get("retries", 0), 0, "the kill was not noticed: %s" % s)
        self.c.wait_ready()
        self.check_exact(s)
        self.assertIn("recovered", self.c.log("worker-1"))

    def test_worker_sigstop(self):
        bg = Background(self.c, twins=TWINS, duration=6, batch=200, window=4, rate=20000)
        time.sleep(1.5)
        self.c.pause("worker-0")
        time.sleep(3)
        self.c.resume("worker-0")
        s = bg.join()
        self.check_exact(s)

    def test_broker_down_data_plane_goes_on(self):
        epoch = self.c.status()["epoch"]
        self.c.kill("broker", signal.SIGKILL)
        s = self.c.sim(twins=TWINS, duration=2, batch=200, window=4)
        self.check_exact(s)
        self.c.start("broker")
        self.c.wait_ready()
        self.assertEqual(self.c.status()["epoch"], epoch)

    def test_worker_restart_keeps_state(self):
        s = self.c.sim(twins=TWINS, duration=1, batch=200, window=4)
        before = applied_total(self.c, self.ids)
        for w in ("worker-0", "worker-1"):
            self.c.kill(w, signal.SIGKILL)
            self.c.start(w)
        self.c.wait_ready()
        self.assertEqual(applied_total(self.c, self.ids), before)
        self.assertEqual(before, s["readings_acked"])


if __name__ == "__main__":
    main()
