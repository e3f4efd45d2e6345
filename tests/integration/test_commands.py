"""Commands: desired values, their deltas, and devices following them.

`twinctl twin set` with an operator key records a desired value on the worker
that owns the twin; analyst and ingest keys are refused, a value outside the
model's range is refused with the reason; `twinctl twin get` shows desired
against reported and the delta; a device (`twinctl twin watch` with an ingest
key) subscribed through the gateway sees the set, and sees it cleared when a
reading sent through the gateway reports the value; a watcher that starts
later gets what was set meanwhile from the snapshot; a worker SIGKILLed right
after the OK still has the value when it comes back, and replaying its log
(readings that reported the value before it was set) neither loses nor clears
it. The tests run in order on one cluster.
"""
import json
import os
import signal
import struct
import subprocess
import threading
import time
import unittest

from tmtest import client, cluster, key, main, shard_map, shard_of, tm_proto

MODEL = {
    "format": 1,
    "name": "cmd_valve",
    "version": 1,
    "description": "A test valve with a setpoint and an open flag",
    "properties": {
        "setpoint": {"type": "number", "unit": "%", "valid": {"min": 0, "max": 100}},
        "open": {"type": "boolean", "unit": "1"},
    },
}
T0 = 1_700_000_000_000


class CommandsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=2, gateways=1, start=False)
        cls.c.keygen_all()
        cls.c.keygen("operator", "operator")
        cls.c.start_all(keygen=False)
        cls.work = os.path.join(cls.c.tmp, "commands")
        os.makedirs(cls.work)
        path = os.path.join(cls.work, "cmd_valve.json")
        with open(path, "w") as f:
            json.dump(MODEL, f)
        cls.c.twinctl("model", "load", path)
        cls.ts = T0

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    # --- helpers -----------------------------------------------------------

    def twinctl(self, *args, **kw):
        return self.c.twinctl(*args, check=False, **kw)

    def as_key(self, name, *args):
        return self.twinctl(*args, "--cert", key(self.c, name))

    def send(self, entity, prop, value, model="cmd_valve"):
        """One reading through the gateway; returns its timestamp."""
        CommandsTest.ts += 1000
        cl = client(self.c, "gateway-0", "producer")
        try:
            rep = cl.request(tm_proto.INGEST, tm_proto.batch(
                [(entity, prop, value, CommandsTest.ts, model)]))
        finally:
            cl.close()
        self.assertIsNotNone(rep, "no INGEST_ACK")
        self.assertEqual(rep[0]["status"], "OK", rep[0]["detail"])
        return CommandsTest.ts

    def wait_reported(self, entity, prop, value, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.twinctl("twin", "get", entity, "--json")
            if r.returncode == 0:
                t = json.loads(r.stdout)
                for p in t["properties"]:
                    if p["name"] == prop and p["value"] == value:
                        return t
            time.sleep(0.2)
        self.fail("%s.%s never reported %s" % (entity, prop, value))

    def set_ok(self, entity, *changes):
        r = self.as_key("operator", "twin", "set", entity, *changes, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def desired(self, entity):
        r = self.twinctl("twin", "deltas", entity, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = {}
        for line in r.stdout.splitlines():
            ev = json.loads(line)
            self.assertEqual(ev["event"], "snapshot")
            out[ev["desired"]["property"]] = ev["desired"]
        return out

    def owner(self, entity):
        m = shard_map(self.c)
        return m["workers"][m["owners"][shard_of(m, entity)]]["id"]

    def start_watch(self, *entities, count=1, timeout=30, as_key="producer"):
        """A device's watch through the gateway, started and subscribed."""
        argv = [self.c.twinctl_bin, "twin", "watch", *entities, "--json",
                "--count", str(count), "--timeout", "%ds" % timeout,
                "--keys", self.c.keys_dir, "--broker", self.c.endpoint("broker"),
                "--broker-key", key(self.c, "broker", secret=False),
                "--gateway", self.c.endpoint("gateway-0"),
                "--gateway-key", key(self.c, "gateway-0", secret=False),
                "--cert", key(self.c, as_key)]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=self.c.tmp, stdin=subprocess.DEVNULL)
        err = []
        ready = threading.Event()

        def read_err():
            for line in p.stderr:
                err.append(line)
                if "watching" in line:
                    ready.set()
            ready.set()
        threading.Thread(target=read_err, daemon=True).start()
        self.assertTrue(ready.wait(20), "watch never got ready")
        self.assertIsNone(p.poll(), "watch exited: %s" % "".join(err))
        p.err = err
        return p

    def finish_watch(self, p, timeout=30):
        out, _ = p.communicate(timeout=timeout)
        self.assertEqual(p.returncode, 0, "watch failed: %s" % "".join(p.err))
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_model(self, entity):
        """Until the worker judges the twin by its model (a refusal proves it)."""
        deadline = time.time() + 15
        while time.time() < deadline:
            r = self.as_key("operator", "twin", "set", entity, "setpoint=1000")
            if r.returncode != 0 and "valid range" in r.stderr:
                return r
            if r.returncode == 0:
                self.as_key("operator", "twin", "unset", entity, "setpoint")
            time.sleep(0.3)
        self.fail("the worker never checked the model")

    # --- tests -------------------------------------------------------------

    def test_1_roles(self):
        e = "cmd/valve-roles"
        self.send(e, "setpoint", 10)
        for name in ("analyst", "producer"):
            r = self.as_key(name, "twin", "set", e, "setpoint=20")
            self.assertNotEqual(r.returncode, 0, "%s may not set: %s" % (name, r.stdout))
            self.assertIn("UNAUTHORIZED", r.stderr.upper())
            self.assertIn("operator or admin", r.stderr)
        self.assertEqual(self.desired(e), {})
        out = self.set_ok(e, "setpoint=20")
        self.assertEqual(out["results"][0]["outcome"], "set")
        self.assertEqual(self.desired(e)["setpoint"]["desired"], 20)
        # An admin may too; an analyst may not unset.
        r = self.as_key("analyst", "twin", "unset", e, "setpoint")
        self.assertNotEqual(r.returncode, 0)
        r = self.as_key("admin", "twin", "unset", e, "setpoint", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["results"][0]["outcome"], "unset")
        self.assertEqual(self.desired(e), {})

    def test_2_model_range_and_type(self):
        e = "cmd/valve-range"
        self.send(e, "setpoint", 10)
        r = self.wait_model(e)
        self.assertIn("0..100", r.stderr)
        self.assertIn("cmd_valve", r.stderr)
        r = self.as_key("operator", "twin", "set", e, "open=0.5")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("boolean", r.stderr)
        r = self.as_key("operator", "twin", "set", e, "nosuch=1")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no property nosuch", r.stderr)
        # All or none: one bad change refuses the whole command.
        r = self.as_key("operator", "twin", "set", e, "setpoint=50", "open=7")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(self.desired(e), {})
        self.set_ok(e, "setpoint=100", "open=true")
        d = self.desired(e)
        self.assertEqual((d["setpoint"]["desired"], d["open"]["desired"]), (100, 1))

    def test_3_get_shows_delta_and_repeats_are_idempotent(self):
        e = "cmd/valve-get"
        self.send(e, "setpoint", 20)
        self.wait_reported(e, "setpoint", 20)
        first = self.set_ok(e, "setpoint=42")["results"][0]
        again = self.set_ok(e, "setpoint=42")["results"][0]
        self.assertEqual(again["outcome"], "unchanged")
        self.assertEqual((again["version"], again["set_ms"]), (first["version"], first["set_ms"]))
        r = self.twinctl("twin", "get", e, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        t = json.loads(r.stdout)
        [d] = t["desired"]
        self.assertEqual((d["property"], d["desired"], d["reported"], d["delta"], d["in_sync"]),
                         ("setpoint", 42, 20, 22, False))
        self.assertEqual(d["set_by"], "operator")
        r = self.twinctl("twin", "get", e)
        self.assertIn("desired", r.stdout)
        self.assertIn("42", r.stdout)
        # A value the twin reports already leaves nothing outstanding.
        out = self.set_ok(e, "setpoint=20")["results"][0]
        self.assertEqual(out["outcome"], "in_sync")
        self.assertEqual(self.desired(e), {})
        # A twin that has not reported yet: accepted, pending.
        self.set_ok("cmd/valve-never-seen", "setpoint=5")
        d = self.desired("cmd/valve-never-seen")["setpoint"]
        self.assertIsNone(d["reported"])
        self.assertEqual(d["delta"], "pending")

    def test_4_watch_sees_set_and_clear(self):
        e = "cmd/valve-watch"
        self.send(e, "setpoint", 30)
        self.wait_reported(e, "setpoint", 30)
        w = self.start_watch(e, count=2)
        self.set_ok(e, "setpoint=55")
        self.send(e, "setpoint", 54)       # not yet
        self.send(e, "setpoint", 55)       # reported: clears it
        evs = self.finish_watch(w)
        self.assertEqual([ev["event"] for ev in evs], ["set", "cleared"], evs)
        self.assertEqual(evs[0]["desired"]["desired"], 55)
        self.assertEqual(evs[0]["desired"]["reported"], 30)
        self.assertEqual(evs[1]["desired"]["reported"], 55)
        self.assertTrue(evs[1]["desired"]["in_sync"])
        self.assertGreater(evs[1]["desired"]["version"], evs[0]["desired"]["version"])
        self.assertEqual(self.desired(e), {})
        self.assertEqual(json.loads(self.twinctl("twin", "get", e, "--json").stdout)["desired"],
                         [])

    def test_5_tolerance(self):
        e = "cmd/valve-tol"
        self.send(e, "setpoint", 10)
        self.set_ok(e, "setpoint=60~0.5")
        self.send(e, "setpoint", 59.2)
        self.wait_reported(e, "setpoint", 59.2)
        self.assertIn("setpoint", self.desired(e))
        self.send(e, "setpoint", 59.6)
        self.wait_reported(e, "setpoint", 59.6)
        self.assertEqual(self.desired(e), {})

    def test_6_snapshot_after_reconnect(self):
        e = "cmd/valve-away"
        self.send(e, "setpoint", 5)
        # Set while no device watches.
        self.set_ok(e, "setpoint=66")
        w = self.start_watch(e, count=1)
        self.send(e, "setpoint", 66)
        evs = self.finish_watch(w)
        self.assertEqual([ev["event"] for ev in evs], ["snapshot", "cleared"], evs)
        self.assertEqual(evs[0]["desired"]["desired"], 66)
        self.assertEqual(evs[0]["desired"]["reported"], 5)

    def test_7_watch_refused_for_analyst(self):
        argv = [self.c.twinctl_bin, "twin", "watch", "cmd/x", "--timeout", "3s",
                "--keys", self.c.keys_dir, "--broker", self.c.endpoint("broker"),
                "--broker-key", key(self.c, "broker", secret=False),
                "--gateway", self.c.endpoint("gateway-0"),
                "--gateway-key", key(self.c, "gateway-0", secret=False),
                "--cert", key(self.c, "analyst")]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=self.c.tmp)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("did not confirm", r.stderr)

    def test_8_sigkill_after_ok_and_replay(self):
        e = "cmd/valve-crash"
        w = self.owner(e)
        # Readings logged before the set that report the value must not
        # clear it when the log is replayed after the crash.
        self.send(e, "setpoint", 77)
        self.send(e, "setpoint", 10)
        self.wait_reported(e, "setpoint", 10)
        self.assertEqual(self.set_ok(e, "setpoint=77")["results"][0]["outcome"], "set")
        # And one cleared just before the crash stays cleared.
        c = "cmd/valve-crash-cleared"
        self.send(c, "setpoint", 1)
        self.set_ok(c, "setpoint=2")
        self.send(c, "setpoint", 2)
        self.wait_reported(c, "setpoint", 2)
        self.c.kill(w, signal.SIGKILL)
        self.c.start(w)
        self.c.wait_ready()
        d = self.desired(e)
        self.assertIn("setpoint", d, "the desired value was lost in the crash")
        self.assertEqual((d["setpoint"]["desired"], d["setpoint"]["reported"]), (77, 10))
        if self.owner(c) == w:
            self.assertEqual(self.desired(c), {})
        # Once more, now with the state checkpointed by the clean start, and
        # the worker's events on another port: the gateway must follow.
        events = "tcp://127.0.0.1:%d" % self.c._new_port()
        self.c.extra_args[w] = {"events_bind": events}
        self.c.kill(w, signal.SIGKILL)
        self.c.start(w)
        self.c.wait_ready()
        self.assertEqual(self.desired(e)["setpoint"]["desired"], 77)
        deadline = time.time() + 10
        while ("following delta events worker=%s endpoint=%s" % (w, events)
               not in self.c.log("gateway-0")):
            self.assertLess(time.time(), deadline, "the gateway did not follow %s" % events)
            time.sleep(0.2)
        # The worker still follows it: a reading clears it, and a watcher
        # started after the restart sees that through the gateway.
        watch = self.start_watch(e, count=1)
        self.send(e, "setpoint", 77)
        evs = self.finish_watch(watch)
        self.assertEqual([ev["event"] for ev in evs], ["snapshot", "cleared"], evs)
        self.assertEqual(self.desired(e), {})

    def test_9_hostile_requests(self):
        # Bytes that are not a TwinSet, a TwinSet without changes, a
        # DeltasGet that does not decode: each refused MALFORMED, and the
        # worker goes on answering.
        cl = client(self.c, "worker-0", "operator")
        try:
            for t, body in ((tm_proto.TWIN_SET, b"\xff\xff\xff"),
                            (tm_proto.TWIN_SET, tm_proto.field_bytes(1, "cmd/x")),
                            (tm_proto.DELTAS_GET, b"\x0a\xff"),
                            (tm_proto.DELTAS_GET, b"")):
                rep = cl.request(t, body)
                self.assertIsNotNone(rep, "no answer to %d" % t)
                self.assertEqual(rep[0]["status"], "MALFORMED", rep[0])
        finally:
            cl.close()
        self.assertTrue(self.c.is_running("worker-0"))
        self.set_ok("cmd/after-hostile", "setpoint=3")

    def raw_sub(self, daemon, as_key, prefix):
        """A SUB in Python (not our C code) to a daemon's events, via EVENTS_INFO."""
        import zmq
        import zmq.auth
        cl = client(self.c, daemon, as_key)
        try:
            rep = cl.request(tm_proto.EVENTS_INFO)
        finally:
            cl.close()
        self.assertIsNotNone(rep)
        self.assertEqual(rep[0]["type"], tm_proto.EVENTS_INFO_REPLY)
        endpoint = tm_proto.decode(rep[1])[1][0].decode()
        sock = zmq.Context.instance().socket(zmq.SUB)
        pub, sec = zmq.auth.load_certificate(key(self.c, as_key))
        server, _ = zmq.auth.load_certificate(key(self.c, daemon, secret=False))
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = pub, sec, server
        sock.linger = 0
        sock.connect(endpoint)
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
        return sock

    def test_10_wire_format_seen_from_python(self):
        # A device written against proto/twinmesh.proto alone: a prefix
        # subscription at the gateway, the "subscribed" answer, then the
        # set event as frames [entity NUL, Header, DeltaEvent].
        sock = self.raw_sub("gateway-0", "producer", b"cmd/raw")
        try:
            self.assertTrue(sock.poll(5000), "no subscribed event")
            topic, hdr, body = sock.recv_multipart()
            self.assertEqual(topic, b"cmd/raw")
            self.assertEqual(tm_proto.parse_header(hdr)["type"], tm_proto.DELTA_EVENT)
            ev = tm_proto.decode(body)
            self.assertEqual(ev[2][0], b"subscribed")
            self.assertEqual(ev[5][0], b"cmd/raw")
            self.set_ok("cmd/raw-1", "setpoint=12.5")
            self.assertTrue(sock.poll(5000), "no set event")
            topic, hdr, body = sock.recv_multipart()
            self.assertEqual(topic, b"cmd/raw-1\0")
            h = tm_proto.parse_header(hdr)
            self.assertEqual((h["type"], h["version"]), (tm_proto.DELTA_EVENT, 1))
            self.assertGreater(h["seq"], 0)
            ev = tm_proto.decode(body)
            self.assertEqual((ev[1][0], ev[2][0]), (b"cmd/raw-1", b"set"))
            d = tm_proto.decode(ev[3][0])
            self.assertEqual(d[1][0], b"setpoint")
            self.assertEqual(struct.unpack("<d", d[2][0])[0], 12.5)
        finally:
            sock.close(0)
        # The worker's own events take gateways only: an admin key gets
        # nothing there, while the gateway relays the same event.
        w = self.owner("cmd/raw-2")
        direct = self.raw_sub(w, "admin", b"")
        relayed = self.raw_sub("gateway-0", "admin", b"cmd/raw-2\0")
        try:
            self.assertTrue(relayed.poll(5000), "admin got no subscribed event")
            relayed.recv_multipart()
            time.sleep(0.5)
            self.set_ok("cmd/raw-2", "setpoint=13")
            self.assertTrue(relayed.poll(5000), "no relayed event")
            self.assertEqual(relayed.recv_multipart()[0], b"cmd/raw-2\0")
            self.assertFalse(direct.poll(1000), "a worker published to an admin key")
        finally:
            direct.close(0)
            relayed.close(0)

    def test_11_snapshot_through_the_gateway(self):
        # Twins on both workers: the gateway asks each owner and merges, each
        # twin with its owner's clock; a twin without desired values is
        # answered too (its as_of still matters to a device).
        names = ["cmd/multi-%d" % i for i in range(40)]
        by_owner = {}
        for n in names:
            by_owner.setdefault(self.owner(n), []).append(n)
        self.assertEqual(len(by_owner), 2, "expected twins on both workers")
        a, b = (v[0] for v in by_owner.values())
        quiet = next(v[1] for v in by_owner.values() if len(v) > 1)
        self.set_ok(a, "setpoint=21")
        self.set_ok(b, "setpoint=22", "open=1")
        cl = client(self.c, "gateway-0", "producer")
        try:
            body = b"".join(tm_proto.field_bytes(1, e) for e in (a, b, quiet))
            rep = cl.request(tm_proto.DELTAS_GET, body)
            self.assertIsNotNone(rep)
            self.assertEqual((rep[0]["type"], rep[0]["status"]), (tm_proto.DELTAS, "OK"), rep[0])
            got = {}
            for t in tm_proto.decode(rep[1]).get(1, []):
                f = tm_proto.decode(t)
                props = {tm_proto.decode(d)[1][0].decode(): tm_proto.decode(d)
                         for d in f.get(2, [])}
                got[f[1][0].decode()] = (f.get(3, [0])[0], props)
            self.assertEqual(set(got), {a, b, quiet})
            self.assertTrue(all(v[0] > 0 for v in got.values()), got)
            self.assertEqual(set(got[a][1]), {"setpoint"})
            self.assertEqual(set(got[b][1]), {"setpoint", "open"})
            self.assertEqual(got[quiet][1], {})
            # Hostile: not a DeltasGet, or none asked.
            for bad in (b"\x0a\xff", b""):
                rep = cl.request(tm_proto.DELTAS_GET, bad)
                self.assertEqual(rep[0]["status"], "MALFORMED", rep[0])
        finally:
            cl.close()
        # One watch over twins of both workers sees both clears.
        w = self.start_watch(a, b, count=3)
        self.send(a, "setpoint", 21)
        self.send(b, "setpoint", 22)
        self.send(b, "open", 1)
        evs = self.finish_watch(w)
        snap = sorted((e["entity"], e["desired"]["property"]) for e in evs
                      if e["event"] == "snapshot")
        self.assertEqual(snap, sorted([(a, "setpoint"), (b, "setpoint"), (b, "open")]))
        cleared = sorted((e["entity"], e["desired"]["property"]) for e in evs
                         if e["event"] == "cleared")
        self.assertEqual(cleared, snap)


if __name__ == "__main__":
    main()
