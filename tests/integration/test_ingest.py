"""Ingest end to end: what is acked is visible, on the worker that owns its shard.

Readings are sent with the Python codec (tests/lib/tm_proto.py) straight to the
gateway, so the count of what was acked is known exactly; they are read back with
`twinctl twin get`, and the owner of each twin is computed in Python from the
broker's shard map.
"""
import time
import unittest

from tmtest import client, cluster, main, shard_map, shard_of, tm_proto

N_ENT, PROPS, STEPS = 120, ("pm25", "no2", "temperature"), 4
T0 = 1_700_000_000_000


def readings():
    out = []
    for step in range(STEPS):
        for e in range(N_ENT):
            for p, prop in enumerate(PROPS):
                out.append(("test/ent-%04d" % e, prop, e + p / 10 + step, T0 + step * 1000))
    return out


class IngestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=2)

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    def send(self, rs, batch=500):
        cl = client(self.c, "gateway-0", "producer")
        acked = 0
        try:
            for i in range(0, len(rs), batch):
                rep = cl.request(tm_proto.INGEST, tm_proto.batch(rs[i:i + batch]))
                self.assertIsNotNone(rep, "no INGEST_ACK")
                hdr, body = rep
                self.assertEqual(hdr["type"], tm_proto.INGEST_ACK)
                self.assertEqual(hdr["status"], "OK", hdr["detail"])
                acked += tm_proto.decode(body).get(1, [0])[0]
        finally:
            cl.close()
        return acked

    def test_1_acked_readings_are_visible_on_their_owner(self):
        rs = readings()
        self.assertEqual(self.send(rs), len(rs))
        m = shard_map(self.c)
        self.assertGreater(m["epoch"], 0)
        self.assertEqual(len(m["owners"]), m["num_shards"])
        self.assertEqual({w["id"] for w in m["workers"]}, {"worker-0", "worker-1"})
        total = 0
        owners_seen = set()
        for e in range(N_ENT):
            entity = "test/ent-%04d" % e
            t = self.c.twin(entity)
            self.assertIsNotNone(t, entity)
            shard = shard_of(m, entity)
            owner = m["workers"][m["owners"][shard]]["id"]
            owners_seen.add(owner)
            self.assertEqual(t["shard"], shard, entity)
            self.assertEqual(t["worker"], owner, entity)
            props = {p["name"]: p for p in t["properties"]}
            self.assertEqual(set(props), set(PROPS))
            for p, prop in enumerate(PROPS):
                self.assertEqual(props[prop]["count"], STEPS)
                self.assertAlmostEqual(props[prop]["value"], e + p / 10 + STEPS - 1)
                self.assertEqual(props[prop]["ts_ms"], T0 + (STEPS - 1) * 1000)
            total += sum(p["count"] for p in t["properties"])
        self.assertEqual(total, len(rs))
        # Both workers own shards and hold some of these twins.
        self.assertEqual(owners_seen, {"worker-0", "worker-1"})

    def test_1b_good_requests_are_not_refused(self):
        # Every APPEND and TWIN_GET so far was well-formed and for the
        # worker's own shards: none may be answered with an error as well.
        # (A missing else once sent every message on to "a worker does not
        # serve ...", counted malformed, with a stray ERROR reply.)
        time.sleep(1.5)                 # a heartbeat carries the counters
        for n in self.c.status()["nodes"]:
            if n["role"] == "worker":
                self.assertEqual(n["stats"]["malformed"], 0, n)
                self.assertEqual(n["stats"]["refused"], 0, n)

    def test_2_non_owner_refuses_reads(self):
        m = shard_map(self.c)
        entity = "test/ent-0001"
        owner = m["workers"][m["owners"][shard_of(m, entity)]]["id"]
        other = "worker-1" if owner == "worker-0" else "worker-0"
        cl = client(self.c, other, "admin")
        try:
            body = tm_proto.field_bytes(1, entity)
            hdr, _ = cl.request(tm_proto.TWIN_GET, body, epoch=m["epoch"])
            self.assertEqual(hdr["status"], "WRONG_SHARD", hdr)
        finally:
            cl.close()

    def test_3_repeated_batch_changes_nothing(self):
        rs = readings()[: 3 * N_ENT]
        self.send(rs)
        before = self.c.twin("test/ent-0007")
        self.assertEqual(self.send(rs), len(rs))      # acked again: durable again
        after = self.c.twin("test/ent-0007")
        self.assertEqual(before["properties"], after["properties"])
        self.assertEqual(before["version"], after["version"])

    def test_4_status_counts_twins_and_workers(self):
        # Node stats travel with heartbeats (1 s): give them two.
        time.sleep(2.2)
        st = self.c.status()
        nodes = st["nodes"]
        workers = [n for n in nodes if n["role"] == "worker"]
        self.assertEqual(len(workers), 2)
        self.assertTrue(all(n["up"] for n in workers))
        self.assertEqual(sum(n["shards"] for n in workers), st["num_shards"])
        self.assertGreaterEqual(sum(n["stats"]["twins"] for n in workers), N_ENT)
        self.assertEqual(st["unassigned_shards"], 0)

    def test_5_sim_through_the_gateway(self):
        s = self.c.sim(twins=300, duration=2, batch=500, window=4)
        self.assertGreater(s["readings_acked"], 0)
        self.assertEqual(s["readings_acked"], s["readings_sent"])
        self.assertEqual(s.get("refused", 0), 0)


if __name__ == "__main__":
    main()
