"""Bad input never takes a process down: every refusal has a reason, and service goes on.

Each daemon gets malformed frames, bad versions, invalid readings and oversized
messages from an allow-listed key; each must answer with the documented status and
then serve a good request.
"""
import math
import unittest

from tmtest import client, cluster, main, tm_proto

GOOD = [("bad/ok-1", "pm25", 12.5, 1_700_000_000_000)]


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=1)

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    def setUp(self):
        self.gw = client(self.c, "gateway-0", "producer")

    def tearDown(self):
        self.gw.close()

    def assertServes(self):
        hdr, _ = self.gw.request(tm_proto.INGEST, tm_proto.batch(GOOD))
        self.assertEqual(hdr["status"], "OK", hdr)
        for name in self.c.names:
            self.assertTrue(self.c.is_running(name), name + " died")

    def raw(self, frames):
        self.gw.send_frames(frames)
        rep = self.gw.recv(5000)
        self.assertIsNotNone(rep, "no reply to %r" % (frames,))
        return rep[0]

    def test_garbage_header(self):
        hdr = self.raw([b"\xff\xff\xff\xff", b""])
        self.assertEqual(hdr["status"], "MALFORMED")
        self.assertServes()

    def test_wrong_frame_counts(self):
        self.assertEqual(self.raw([tm_proto.header(tm_proto.INGEST, 5)])["status"], "MALFORMED")
        hdr = self.raw([tm_proto.header(tm_proto.INGEST, 6), b"", b"extra"])
        self.assertEqual(hdr["status"], "MALFORMED")
        self.assertServes()

    def test_bad_version(self):
        hdr = self.raw([tm_proto.header(tm_proto.INGEST, 7, version=99), b""])
        self.assertEqual(hdr["status"], "BAD_VERSION")
        self.assertServes()

    def test_invalid_readings(self):
        cases = [
            [("x" * 129, "pm25", 1.0, 1)],                 # entity too long
            [("ok", "", 1.0, 1)],                          # no property
            [("ok", "pm25", math.nan, 1)],                 # not finite
            [("ok", "pm25", 1.0, 0)],                      # no timestamp
            GOOD + [("ok", "p" * 65, 1.0, 1)],               # property too long
        ]
        for rs in cases:
            hdr, _ = self.gw.request(tm_proto.INGEST, tm_proto.batch(rs))
            self.assertEqual(hdr["status"], "MALFORMED", (rs, hdr))
            self.assertIn("reading", hdr["detail"])
        # Bytes that are not UTF-8 in an entity id.
        body = tm_proto.field_bytes(1, tm_proto.field_bytes(1, b"\xc3\x28")
                                    + tm_proto.field_bytes(2, "p")
                                    + tm_proto.field_double(3, 1.0)
                                    + tm_proto.field_varint(4, 5))
        hdr, _ = self.gw.request(tm_proto.INGEST, body)
        self.assertEqual(hdr["status"], "MALFORMED")
        # Truncated: a length that runs past the end.
        hdr, _ = self.gw.request(tm_proto.INGEST, b"\x0a\x40\x0a\x02ab")
        self.assertEqual(hdr["status"], "MALFORMED")
        self.assertServes()
        # Nothing of a refused batch was applied.
        self.assertIsNone(self.c.twin("ok"))

    def test_oversized_batch(self):
        big = tm_proto.batch([("big/e-%d" % i, "p" * 60, 1.0, 1 + i) for i in range(60000)])
        self.assertGreater(len(big), 4 * 1024 * 1024)
        hdr, _ = self.gw.request(tm_proto.INGEST, big, timeout_ms=15000)
        self.assertEqual(hdr["status"], "TOO_LARGE")
        self.assertServes()

    def test_unexpected_type(self):
        hdr, _ = self.gw.request(tm_proto.STATUS)
        self.assertNotEqual(hdr["status"], "OK")
        self.assertServes()

    def test_worker_and_broker_survive_garbage(self):
        for daemon, as_key in (("worker-0", "gateway-0"), ("broker", "admin")):
            cl = client(self.c, daemon, as_key)
            try:
                cl.send_frames([b"\x08\x01\x10", b"junk"])
                rep = cl.recv(5000)
                self.assertIsNotNone(rep, daemon + " did not answer garbage")
                self.assertIn(rep[0]["status"], ("MALFORMED", "BAD_VERSION"))
                cl.send_frames([tm_proto.header(tm_proto.APPEND, 3, 1), b"\x0a\x05zz"])
                rep = cl.recv(5000)
                self.assertIsNotNone(rep)
                self.assertNotEqual(rep[0]["status"], "OK")
            finally:
                cl.close()
        self.assertServes()


if __name__ == "__main__":
    main()
