"""Federation: three sites on loopback, each its own broker, worker and gateway,
peering their brokers over CURVE with keys of role site.

    milan  export_policy raw          (rows and aggregates)
    turin  export_policy aggregates   (groups of fewer than 5 twins suppressed)
    rome   export_policy none         (nothing leaves)

Each site holds its own air stations. Queries asked at milan name their sites;
the answers must be the merge of what each site's policy lets out, keep a
per-site breakdown, and say which site did not answer (refused, or down).
"""
import json
import os
import shutil
import time
import unittest

from tmtest import client, cluster, key, main, tm_proto

T0 = 1_700_000_000_000
SITES = {
    "milan": ("raw", {"Brera": 12, "Isola": 8, "Navigli": 6}),
    "turin": ("aggregates", {"Centro": 9, "Crocetta": 7, "Lingotto": 3}),
    "rome": ("none", {"Trastevere": 10}),
}


def stations(site, districts):
    """(readings, {district: [pm25...]}) for one site; values are exact in binary."""
    rs, values = [], {}
    n = 0
    for d, count in districts.items():
        for _ in range(count):
            v = 5.0 + (n * 7) % 40 + 0.5
            ent = "%s/air-%03d" % (site, n)
            attrs = {"district": json.dumps("%s/district/%s" % (site, d))}
            rs.append((ent, "pm25", v, T0, "air_station", attrs))
            values.setdefault(d, []).append(v)
            n += 1
    return rs, values


class FederationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sites = {}
        for name in SITES:
            cls.sites[name] = cluster(workers=1, start=False)
        for name, c in cls.sites.items():
            c.keygen_all()
            c.keygen("site-" + name, "site")
        # Each site allow-lists the others' site keys and keeps their brokers'
        # public keys under peers/.
        for name, c in cls.sites.items():
            os.makedirs(os.path.join(c.keys_dir, "peers"), exist_ok=True)
            for other, oc in cls.sites.items():
                if other == name:
                    continue
                shutil.copy(os.path.join(oc.keys_dir, "site-%s.key" % other), c.keys_dir)
                shutil.copy(os.path.join(oc.keys_dir, "broker.key"),
                            os.path.join(c.keys_dir, "peers", other + ".key"))
        for name, c in cls.sites.items():
            peers = ",".join("%s=%s" % (o, oc.endpoint("broker"))
                             for o, oc in cls.sites.items() if o != name)
            c.extra_args["broker"] = {"site": name, "peers": peers,
                                      "export_policy": SITES[name][0],
                                      "export_min_group": 5}
        try:
            for c in cls.sites.values():
                c.start_all(keygen=False)
        except BaseException:
            for c in cls.sites.values():
                c.stop_all()
            raise
        cls.values = {}
        for name, c in cls.sites.items():
            rs, cls.values[name] = stations(name, SITES[name][1])
            cl = client(c, "gateway-0", "producer")
            try:
                rep = cl.request(tm_proto.INGEST, b"".join(tm_proto.reading(*r) for r in rs))
            finally:
                cl.close()
            assert rep and rep[0]["status"] == "OK", rep

    @classmethod
    def tearDownClass(cls):
        for c in cls.sites.values():
            c.stop_all()

    def query(self, text, site="milan", deadline=None):
        c = self.sites[site]
        args = ["query", text, "--format", "json", "--cert", key(c, "analyst")]
        if deadline:
            args += ["--deadline", deadline]
        r = c.twinctl(*args, check=False, timeout=60)
        self.assertIn(r.returncode, (0, 3), r.stderr)
        return r.returncode, json.loads(r.stdout)

    def site_answers(self, ans):
        return {s["site"]: s for s in ans["sites"]}

    def test_1_local_query_is_local(self):
        rc, ans = self.query("SELECT count(*) FROM twins")
        self.assertEqual(rc, 0)
        self.assertEqual(ans["rows"], [[26]])
        self.assertEqual(ans["sites"], [])

    def test_2_aggregates_merge_with_policies_applied(self):
        rc, ans = self.query("SELECT district, count(*), sum(pm25) FROM twins"
                             " GROUP BY district AT SITES (milan, turin)")
        self.assertEqual(rc, 0, ans)
        want = {}
        for site in ("milan", "turin"):
            for d, vs in self.values[site].items():
                if site == "turin" and len(vs) < 5:
                    continue        # suppressed by turin's policy
                want["%s/district/%s" % (site, d)] = (len(vs), sum(vs))
        got = {r[0]: (r[1], r[2]) for r in ans["rows"]}
        self.assertEqual(got, want)
        sites = self.site_answers(ans)
        self.assertEqual(set(sites), {"milan", "turin"})
        self.assertTrue(sites["milan"]["answered"] and sites["turin"]["answered"])
        self.assertIn("suppressed", sites["turin"]["detail"])
        # The per-site breakdown: each site's own rows.
        turin_rows = {r[0] for r in sites["turin"]["rows"]}
        self.assertEqual(turin_rows, {"turin/district/Centro", "turin/district/Crocetta"})
        self.assertEqual(sites["milan"]["matched"], 26)

    def test_3_rows_are_refused_by_an_aggregates_site(self):
        rc, ans = self.query("SELECT entity FROM twins AT SITES (milan, turin)")
        self.assertEqual(rc, 3)
        self.assertTrue(ans["partial"])
        self.assertEqual(len(ans["rows"]), 26)
        self.assertTrue(all(r[0].startswith("milan/") for r in ans["rows"]))
        turin = self.site_answers(ans)["turin"]
        self.assertFalse(turin["answered"])
        self.assertIn("aggregates only", turin["detail"])

    def test_4_a_site_that_exports_nothing(self):
        rc, ans = self.query("SELECT count(*) FROM twins AT ALL SITES")
        self.assertEqual(rc, 3)
        sites = self.site_answers(ans)
        self.assertEqual(set(sites), {"milan", "turin", "rome"})
        self.assertFalse(sites["rome"]["answered"])
        self.assertIn("exports nothing", sites["rome"]["detail"])
        # milan's 26 + turin's 19 (one group, no suppression: no GROUP BY and 19 >= 5).
        self.assertEqual(ans["rows"], [[45]])

    def test_5_a_site_that_is_down_gives_a_partial_answer(self):
        turin = self.sites["turin"]
        turin.pause("broker")
        try:
            t = time.monotonic()
            rc, ans = self.query("SELECT count(*) FROM twins AT SITES (milan, turin)",
                                 deadline="1500ms")
            self.assertLess(time.monotonic() - t, 10)
        finally:
            turin.resume("broker")
        self.assertEqual(rc, 3)
        self.assertEqual(ans["rows"], [[26]])
        sites = self.site_answers(ans)
        self.assertTrue(sites["milan"]["answered"])
        self.assertFalse(sites["turin"]["answered"])
        self.assertIn("deadline", sites["turin"]["detail"])
        # Back: complete again (late answers of the stopped broker are ignored).
        deadline = time.monotonic() + 20
        while True:
            rc, ans = self.query("SELECT count(*) FROM twins AT SITES (milan, turin)")
            if rc == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(rc, 0)
        self.assertEqual(ans["rows"], [[45]])

    def test_6_only_site_keys_may_ask_a_site(self):
        turin = self.sites["turin"]
        body = tm_proto.field_bytes(1, "SELECT count(*) FROM twins")
        cl = client(turin, "broker", "analyst")
        try:
            hdr, _ = cl.request(tm_proto.SITE_QUERY, body)
        finally:
            cl.close()
        self.assertEqual(hdr["status"], "UNAUTHORIZED")
        # An unknown site name is an error, not a silent local answer.
        c = self.sites["milan"]
        r = c.twinctl("query", "SELECT count(*) FROM twins AT SITES (paris)", "--cert",
                      key(c, "analyst"), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown site 'paris'", r.stderr)


if __name__ == "__main__":
    main()
