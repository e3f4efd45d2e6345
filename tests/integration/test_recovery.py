"""Recovery: SIGKILL a worker during sustained ingest, and check every series' history.

Three producers, each with its own CURVE connection to the gateway and its own
series (20 twins x 2 properties), send batches of one reading per series, one
batch in flight, so each knows exactly which readings were acked: every batch
answered OK is acked; a batch that timed out or got RETRY_LATER is either sent
again unchanged (then acked or not as the retry says) or, one time in three,
given up ("sent, not acked": it may or may not be in the history, never twice).
Timestamps are unique per series and increase from batch to batch.

While they run, the worker is SIGKILLed three times at random moments
(seeded; the seed is printed) and started again at once; the second time it
is killed again as soon as it serves, before its first checkpoint round has
written the log it replayed. The checkpoint
interval is 200 ms, so a checkpoint round (a tenth of the shards every 20 ms)
is running nearly all the time: kills land inside rounds, between a shard's
history write and the round's end, and across chunk closes (a chunk is 120
readings; each series gets hundreds).

Then, for every series, through `twinctl twin history --json` and `twin get`:
- every acked reading is in the history, with its value;
- every point in the history was sent (acked, or given up), with its value,
  and appears once;
- the twin's applied count for the series is the number of points not late,
  so no reading was counted twice;
- the latest value is the newest point, and not older than the last acked.
The same checks run again after a clean restart (history from the store) and
a last SIGKILL with nothing in flight.
"""
import json
import os
import random
import signal
import threading
import time
import unittest

from tmtest import client, cluster, main, tm_proto

PRODUCERS = 3
TWINS_PER_PRODUCER = 20
PROPS = ("a", "b")
INGEST_S = 6.0                 # producers send for this long
KILLS = 3
# Recent: far older readings would be history_retention's (30 days) to drop
# at the first compaction.
T0 = int(time.time() * 1000) - 3_600_000


def value(series_index, k):
    return round(series_index * 0.5 + (k % 997) * 0.25, 2)


class Producer:
    """One producer thread: its series, what it acked and what it gave up."""

    def __init__(self, c, index, stop, rng_seed):
        self.c = c
        self.index = index
        self.stop = stop
        self.rng = random.Random(rng_seed)
        self.series = [("rec/p%d-twin-%02d" % (index, t), prop)
                       for t in range(TWINS_PER_PRODUCER) for prop in PROPS]
        self.acked = {s: {} for s in self.series}      # series -> {ts: value}
        self.maybe = {s: {} for s in self.series}      # sent, never acked
        self.batches = self.failures = self.given_up = 0
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def batch(self, k):
        rs = []
        for i, (entity, prop) in enumerate(self.series):
            ts = T0 + k * 1000 + i                      # unique per series, increasing in k
            rs.append((entity, prop, value(self.index * 100 + i, k), ts))
        return rs

    def send(self, gw, rs):
        """True if acked; False on RETRY_LATER or no answer in time."""
        rid = gw.next_id
        gw.next_id += 1
        gw.send_frames([tm_proto.header(tm_proto.INGEST, rid), tm_proto.batch(rs)])
        deadline = time.monotonic() + 3.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            rep = gw.recv(int(left * 1000) + 1)
            if rep is None:
                return False
            hdr, _ = rep
            if hdr["request_id"] != rid:
                continue                                # a stale answer to a given-up try
            if hdr["status"] == "OK":
                return True
            if hdr["status"] == "RETRY_LATER":
                return False
            raise AssertionError("batch refused: %s" % hdr)

    def run(self):
        gw = client(self.c, "gateway-0", "producer")
        try:
            k = 0
            while not self.stop.is_set():
                rs = self.batch(k)
                k += 1
                # After stop, the last batch is retried until acked (20 s),
                # so the final state is known.
                final_deadline = None
                while True:
                    if self.send(gw, rs):
                        for entity, prop, v, ts in rs:
                            self.acked[(entity, prop)][ts] = v
                            self.maybe[(entity, prop)].pop(ts, None)
                        self.batches += 1
                        break
                    self.failures += 1
                    for entity, prop, v, ts in rs:
                        self.maybe[(entity, prop)][ts] = v
                    if self.stop.is_set():
                        final_deadline = final_deadline or time.monotonic() + 20
                        if time.monotonic() > final_deadline:
                            raise AssertionError("the last batch was never acked")
                        time.sleep(0.1)
                        continue
                    if self.rng.random() < 1 / 3:
                        self.given_up += 1
                        break                            # move on: newer timestamps
                    time.sleep(0.05)
        except Exception as e:                           # reported by the test
            self.error = e
        finally:
            gw.close()


class RecoveryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=1, extra_args={
            "worker": {"checkpoint_interval": "200ms"},
            "gateway": {"ack_timeout": "2s"}})

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    def history(self, entity, prop):
        r = self.c.twinctl("twin", "history", entity, prop, "--json")
        h = json.loads(r.stdout)
        self.assertFalse(h["truncated"], (entity, prop))
        return h

    def check_series(self, producers):
        checked = 0
        for p in producers:
            entities = {}
            for (entity, prop) in p.series:
                if entity not in entities:
                    r = self.c.twinctl("twin", "get", entity, "--json")
                    entities[entity] = {q["name"]: q for q in json.loads(r.stdout)["properties"]}
                acked, maybe = p.acked[(entity, prop)], p.maybe[(entity, prop)]
                h = self.history(entity, prop)
                pts = [(q["ts_ms"], q["value"]) for q in h["points"]]
                where = "%s.%s" % (entity, prop)
                ts_list = [ts for ts, _ in pts]
                self.assertEqual(len(ts_list), len(set(ts_list)), where + ": a point twice")
                got = dict(pts)
                missing = [ts for ts in acked if ts not in got]
                self.assertEqual(missing[:5], [], where + ": acked readings lost (%d)"
                                 % len(missing))
                for ts, v in pts:
                    want = acked.get(ts, maybe.get(ts))
                    self.assertIsNotNone(want, where + ": a reading never sent, ts=%d" % ts)
                    self.assertEqual(v, want, where + ": wrong value at ts=%d" % ts)
                extra = len(pts) - len(acked)
                self.assertGreaterEqual(extra, 0)
                self.assertLessEqual(extra, len(maybe))
                q = entities[entity][prop]
                # Applied once each: the twin's count is every point but the
                # late ones (given-up tries that arrived after newer ones).
                self.assertEqual(q["count"], len(pts) - h["late"], where)
                newest = max(pts)
                self.assertEqual((q["ts_ms"], q["value"]), newest, where)
                self.assertGreaterEqual(q["ts_ms"], max(acked), where)
                if not any(ts > max(acked) for ts in maybe):
                    self.assertEqual(q["ts_ms"], max(acked), where)
                checked += 1
        return checked

    def test_sigkill_during_ingest(self):
        seed = int(os.environ.get("TM_TEST_SEED", time.time_ns() % 1_000_000))
        print("\nrecovery: seed %d (TM_TEST_SEED=%d to repeat)" % (seed, seed))
        rng = random.Random(seed)
        stop = threading.Event()
        producers = [Producer(self.c, i, stop, seed * 10 + i) for i in range(PRODUCERS)]
        for p in producers:
            p.thread.start()
        t_start = time.monotonic()
        # Kill times: spread over the run, at random inside each third.
        span = (INGEST_S - 1.5) / KILLS
        kills = [0.5 + i * span + rng.uniform(0.1, span - 0.2) for i in range(KILLS)]
        since = len(self.c.log("worker-0"))
        for n, at in enumerate(kills):
            time.sleep(max(0.0, t_start + at - time.monotonic()))
            self.c.kill("worker-0", signal.SIGKILL)
            self.c.start("worker-0")        # returns once it listens, so serves
            if n == 1:
                # Once more at once: the replayed log is then in memory
                # only (the first round writes it), and must replay again.
                self.c.kill("worker-0", signal.SIGKILL)
                self.c.start("worker-0")
        time.sleep(max(0.0, t_start + INGEST_S - time.monotonic()))
        stop.set()
        for p in producers:
            p.thread.join(60)
            self.assertFalse(p.thread.is_alive(), "producer %d hangs" % p.index)
            self.assertIsNone(p.error, "producer %d: %s" % (p.index, p.error))
        self.c.wait_ready()
        acked = sum(len(a) for p in producers for a in p.acked.values())
        maybe = sum(len(m) for p in producers for m in p.maybe.values())
        print("recovery: %d kills at %s s (the second twice); %d readings acked, %d sent and not acked; "
              "batches acked %s, failed tries %s, given up %s"
              % (KILLS, ["%.2f" % k for k in kills], acked, maybe,
                 [p.batches for p in producers], [p.failures for p in producers],
                 [p.given_up for p in producers]))
        log = self.c.log("worker-0")[since:]
        self.assertEqual(log.count("worker: recovered"), KILLS + 1,
                         "every kill was recovered from")
        # The kills were felt: tries failed, and the log had records to replay.
        self.assertGreater(sum(p.failures for p in producers), 0)
        self.assertGreater(sum(p.batches for p in producers), 20 * PRODUCERS)
        self.assertNotIn("bad_twins=1", log)
        n = self.check_series(producers)
        self.assertEqual(n, PRODUCERS * TWINS_PER_PRODUCER * len(PROPS))
        # Once more with the history read back from the store only: a clean
        # restart writes everything, then a SIGKILL with nothing in flight.
        self.c.restart("worker-0")
        self.c.kill("worker-0", signal.SIGKILL)
        self.c.start("worker-0")
        self.c.wait_ready()
        self.check_series(producers)


if __name__ == "__main__":
    main()
