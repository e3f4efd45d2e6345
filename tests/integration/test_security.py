"""CURVE and roles: no key, no service; each role only what it may do."""
import os
import unittest

import zmq

from tmtest import client, cluster, main, tm_proto

GOOD = [("sec/e-1", "pm25", 3.0, 1_700_000_000_000)]
STRANGER = [("sec/stranger", "pm25", 3.0, 1_700_000_000_000)]


class SecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=1)
        # A key made the same way but not on any allow-list.
        cls.outside = os.path.join(cls.c.tmp, "outside-keys")
        os.makedirs(cls.outside)
        cls.c.keygen("stranger", "admin", keys_dir=cls.outside)

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    def test_unknown_key_gets_nothing(self):
        for daemon in ("gateway-0", "broker", "worker-0"):
            cl = client(self.c, daemon, "stranger", keys_dir=self.outside)
            try:
                rep = cl.request(tm_proto.INGEST, tm_proto.batch(STRANGER), timeout_ms=2000)
                self.assertIsNone(rep, daemon + " answered a key not on its allow-list")
            finally:
                cl.close()
        r = self.c.twinctl("status", "--cert", os.path.join(self.outside, "stranger.key_secret"),
                           "--timeout", "2s", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no reply", r.stderr)
        self.assertIsNone(self.c.twin("sec/stranger"))

    def test_plaintext_client_gets_nothing(self):
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(self.c.endpoint("gateway-0"))
        s.send_multipart([tm_proto.header(tm_proto.INGEST, 1), tm_proto.batch(GOOD)])
        self.assertEqual(s.poll(1500), 0)
        s.close(0)

    def test_roles(self):
        # ingest may not read status or twins, nor append to a worker directly
        cases = [
            ("broker", "producer", tm_proto.STATUS, b""),
            ("worker-0", "producer", tm_proto.TWIN_GET, tm_proto.field_bytes(1, "sec/e-1")),
            ("worker-0", "producer", tm_proto.APPEND, tm_proto.batch(GOOD)),
            ("worker-0", "admin", tm_proto.APPEND, tm_proto.batch(GOOD)),
            ("gateway-0", "analyst", tm_proto.INGEST, tm_proto.batch(GOOD)),
            # a worker key may only speak for the worker id of its own name
            ("broker", "worker-0", tm_proto.HELLO,
             tm_proto.field_bytes(1, "worker-9") + tm_proto.field_bytes(2, "worker")
             + tm_proto.field_bytes(3, "tcp://127.0.0.1:1")
             + tm_proto.field_bytes(4, "0" * 40)),
            ("broker", "producer", tm_proto.HELLO,
             tm_proto.field_bytes(1, "worker-9") + tm_proto.field_bytes(2, "worker")
             + tm_proto.field_bytes(3, "tcp://127.0.0.1:1")
             + tm_proto.field_bytes(4, "0" * 40)),
        ]
        for daemon, who, mtype, body in cases:
            cl = client(self.c, daemon, who)
            try:
                rep = cl.request(mtype, body, epoch=1)
                self.assertIsNotNone(rep, (daemon, who, mtype))
                self.assertEqual(rep[0]["status"], "UNAUTHORIZED", (daemon, who, mtype, rep))
            finally:
                cl.close()
        # and the allowed ones work
        gw = client(self.c, "gateway-0", "producer")
        try:
            self.assertEqual(gw.request(tm_proto.INGEST, tm_proto.batch(GOOD))[0]["status"], "OK")
        finally:
            gw.close()
        r = self.c.twinctl("status", "--cert", os.path.join(self.c.keys_dir, "analyst.key_secret"))
        self.assertEqual(r.returncode, 0)

    def test_secret_key_file_mode(self):
        st = os.stat(os.path.join(self.c.keys_dir, "producer.key_secret"))
        self.assertEqual(st.st_mode & 0o077, 0)


if __name__ == "__main__":
    main()
