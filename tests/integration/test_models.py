"""Models: twinctl model load / list / show against a real broker.

The shipped examples load, read back as they were written, load again as
unchanged; a second model under the same version is refused and a higher
version replaces it; a file with a mistake never leaves twinctl; roles are
enforced; the catalogue is still there after the broker is killed; and
the workers fetch the models and judge readings by them (valid range,
limits for forecasts). The tests run in order (test_1 ... test_8) on one
cluster: each builds on the catalogue the one before left.
"""
import glob
import json
import os
import time
import unittest

from tmtest import HERE, client, cluster, main, tm_proto

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "models")
FILES = sorted(glob.glob(os.path.join(MODELS_DIR, "*.json")))


def load_json(path):
    with open(path) as f:
        return json.load(f)


class ModelsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = cluster(workers=1, gateways=1)
        cls.work = os.path.join(cls.c.tmp, "models")
        os.makedirs(cls.work)

    @classmethod
    def tearDownClass(cls):
        cls.c.stop_all()

    def twinctl(self, *args, **kw):
        return self.c.twinctl(*args, check=False, **kw)

    def model_list(self, *cert):
        r = self.twinctl("model", "list", "--json", *cert)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def write(self, name, doc):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def test_1_load_examples(self):
        self.assertGreaterEqual(len(FILES), 7, MODELS_DIR)
        self.assertEqual(self.model_list()["models"], [])
        r = self.twinctl("model", "load", *FILES)
        self.assertEqual(r.returncode, 0, r.stderr)
        for path in FILES:
            doc = load_json(path)
            self.assertIn("%s v%d: stored" % (doc["name"], doc["version"]), r.stdout)
        self.assertIn("model stored name=air_station version=1", self.c.log("broker"))

    def test_2_list(self):
        listed = self.model_list()
        want = sorted((load_json(p) for p in FILES), key=lambda d: d["name"])
        self.assertEqual([m["name"] for m in listed["models"]], [d["name"] for d in want])
        for m, d in zip(listed["models"], want):
            self.assertEqual(m["version"], d["version"])
            self.assertEqual(m["properties"], len(d.get("properties", {})))
            self.assertEqual(m["description"], d.get("description", ""))
        self.assertGreaterEqual(listed["generation"], len(FILES))
        r = self.twinctl("model", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split()[:3], ["NAME", "VERSION", "PROPERTIES"])
        row = [line.split() for line in lines if line.startswith("air_station ")][0]
        self.assertEqual(row[1:3], ["1", "5"])

    def test_3_show(self):
        for path in FILES:
            doc = load_json(path)
            r = self.twinctl("model", "show", doc["name"], "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(len(r.stdout.strip().splitlines()), 1)   # compact
            got = json.loads(r.stdout)
            self.assertEqual(got["name"], doc["name"])
            self.assertEqual(got["version"], doc["version"])
            self.assertEqual(list(got["properties"]), list(doc.get("properties", {})))
            self.assertNotIn("x-comment", got)
            for pname, prop in doc.get("properties", {}).items():
                for field in ("unit", "valid", "limits", "expected_interval_ms"):
                    if field in prop:
                        self.assertEqual(got["properties"][pname][field], prop[field],
                                         (doc["name"], pname, field))
            # The default output is the same JSON, indented.
            r2 = self.twinctl("model", "show", doc["name"])
            self.assertEqual(r2.returncode, 0, r2.stderr)
            self.assertEqual(json.loads(r2.stdout), got)
            self.assertIn('\n  "name": ', r2.stdout)
        r = self.twinctl("model", "show", "no_such_model")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no model named no_such_model", r.stderr)

    def test_4_versions(self):
        r = self.twinctl("model", "load", *FILES)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("air_station v1: unchanged", r.stdout)
        self.assertNotIn("stored", r.stdout)
        gen = self.model_list()["generation"]

        doc = load_json(os.path.join(MODELS_DIR, "air_station.json"))
        doc["description"] = "a different station"
        same = self.write("air_station_same_version.json", doc)
        r = self.twinctl("model", "load", same)
        self.assertEqual(r.returncode, 1)
        self.assertIn("air_station version 1 exists with different content: raise version",
                      r.stderr)
        self.assertEqual(self.model_list()["generation"], gen)

        doc["version"] = 2
        newer = self.write("air_station_v2.json", doc)
        r = self.twinctl("model", "load", newer)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("air_station v2: stored", r.stdout)
        listed = {m["name"]: m for m in self.model_list()["models"]}
        self.assertEqual(listed["air_station"]["version"], 2)
        self.assertEqual(listed["air_station"]["description"], "a different station")

        # The shipped v1 is now older: refused, and the other files still load.
        r = self.twinctl("model", "load", os.path.join(MODELS_DIR, "air_station.json"),
                         os.path.join(MODELS_DIR, "district.json"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("air_station version 1 is older than the stored 2", r.stderr)
        self.assertIn("district v1: unchanged", r.stdout)
        r = self.twinctl("model", "load", "--json", same, os.path.join(MODELS_DIR, "district.json"))
        self.assertEqual(r.returncode, 1)
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertEqual([x["outcome"] for x in lines], ["refused", "unchanged"])
        self.assertIn("is older than the stored 2", lines[0]["error"])
        self.assertEqual((lines[1]["name"], lines[1]["version"]), ("district", 1))

    def test_5_invalid_file(self):
        doc = load_json(os.path.join(MODELS_DIR, "parking_bay.json"))
        doc["version"] = 5
        prop = next(iter(doc["properties"]))
        doc["properties"][prop]["ewma_alpha"] = 1.5
        bad = self.write("parking_bay_bad.json", doc)
        gen = self.model_list()["generation"]
        r = self.twinctl("model", "load", bad)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s: properties.%s.ewma_alpha: must be in (0, 1]" % (bad, prop), r.stderr)
        self.assertEqual(self.model_list()["generation"], gen)
        listed = {m["name"]: m for m in self.model_list()["models"]}
        self.assertEqual(listed["parking_bay"]["version"], 1)
        r = self.twinctl("model", "load", os.path.join(self.work, "missing.json"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.json: No such file or directory", r.stderr)

        # Sent raw, past twinctl's check: the broker parses it itself.
        cl = client(self.c, "broker", "admin")
        try:
            with open(bad, "rb") as f:
                rep = cl.request(tm_proto.MODEL_PUT, tm_proto.field_bytes(1, f.read()))
            self.assertEqual(rep[0]["status"], "MALFORMED", rep)
            self.assertIn("request: properties.%s.ewma_alpha" % prop, rep[0]["detail"])
            big = b'{"name": "big", "version": 1, "description": "' + b"x" * (1 << 20) + b'"}'
            rep = cl.request(tm_proto.MODEL_PUT, tm_proto.field_bytes(1, big))
            self.assertIsNotNone(rep, "no answer to an oversized model")
            self.assertEqual(rep[0]["status"], "TOO_LARGE", rep)
        finally:
            cl.close()

    def test_6_roles(self):
        producer = os.path.join(self.c.keys_dir, "producer.key_secret")
        analyst = os.path.join(self.c.keys_dir, "analyst.key_secret")
        doc = load_json(os.path.join(MODELS_DIR, "traffic_counter.json"))
        doc["version"] = 9
        path = self.write("traffic_counter_v9.json", doc)
        for cert in (producer, analyst):
            r = self.twinctl("model", "load", path, "--cert", cert)
            self.assertEqual(r.returncode, 1, cert)
            self.assertIn("unauthorized", r.stderr)
        listed = {m["name"]: m for m in self.model_list("--cert", analyst)["models"]}
        self.assertEqual(listed["traffic_counter"]["version"], 1)
        r = self.twinctl("model", "show", "traffic_counter", "--cert", analyst)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.twinctl("model", "list", "--cert", producer)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unauthorized", r.stderr)

    def test_7_survives_restart(self):
        before = self.model_list()
        self.c.kill("broker")
        self.c.start("broker")
        self.c.wait_ready()
        after = self.model_list()
        self.assertEqual(after, before)
        r = self.twinctl("model", "show", "air_station", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["version"], 2)
        r = self.twinctl("model", "load", os.path.join(MODELS_DIR, "uci_multisensor.json"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("uci_multisensor v1: unchanged", r.stdout)

    def wait_for(self, what, check, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                self.fail("timed out waiting for " + what)
            time.sleep(0.2)

    def twin(self, entity):
        r = self.twinctl("twin", "get", entity, "--json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def test_8_workers_use_models(self):
        path = os.path.join(MODELS_DIR, "air_station.json")
        doc = load_json(path)
        # Refused as older after test_4 stored v2 (same properties): either
        # way the broker holds an air_station.
        self.twinctl("model", "load", path)
        self.wait_for("the worker to install air_station",
                      lambda: "modelsync: model installed name=air_station"
                      in self.c.log("worker-0"))
        pm25 = doc["properties"]["pm25"]
        too_high = pm25["valid"]["max"] + 1
        t0 = int(time.time() * 1000) - 60_000
        # Rising good readings (a trend for the forecast), then one too high.
        rs = [("mdl/air-1", "pm25", 10.0 + k, t0 + k * 1000, "air_station") for k in range(10)]
        rs.append(("mdl/air-1", "pm25", too_high, t0 + 10 * 1000, "air_station"))
        gw = client(self.c, "gateway-0", "producer")
        try:
            hdr, _ = gw.request(tm_proto.INGEST, b"".join(tm_proto.reading(*r) for r in rs))
            self.assertEqual(hdr["status"], "OK", hdr)
        finally:
            gw.close()

        def flagged():
            t = self.twin("mdl/air-1")
            props = {p["name"]: p for p in (t or {}).get("properties", [])}
            p = props.get("pm25")
            return p if p and p["value"] == too_high else None
        p = self.wait_for("the reading to reach the twin", flagged)
        self.assertIn("out_of_range", p["flags"], p)
        self.assertEqual(p["in_range"], 10, p)

        # No --limit: the model's limits are used.
        if "limits" in pm25:
            r = self.twinctl("twin", "forecast", "mdl/air-1", "pm25", "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            f = json.loads(r.stdout)
            self.assertNotEqual(f["limit"]["status"], "no_limit", f)


if __name__ == "__main__":
    main()
