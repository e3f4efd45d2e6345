"""Gateways hold no state of their own: two side by side serve the same cluster."""
import threading
import time
import unittest

from tmtest import cluster, main


class GatewaysTest(unittest.TestCase):
    def test_two_gateways_side_by_side(self):
        with cluster(workers=2, gateways=2) as c:
            results = {}

            def run(g):
                results[g] = c.sim(gateway=g, twins=100, duration=2, batch=250, window=4,
                                   seed=g + 1, city="gw%d" % g)
            threads = [threading.Thread(target=run, args=(g,)) for g in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            for g in (0, 1):
                s = results[g]
                self.assertGreater(s["readings_acked"], 0)
                self.assertEqual(s["readings_acked"], s["readings_sent"])
            time.sleep(2.2)       # node stats travel with 1 s heartbeats
            st = c.status()
            gws = [n for n in st["nodes"] if n["role"] == "gateway"]
            self.assertEqual(sorted(n["id"] for n in gws), ["gateway-0", "gateway-1"])
            self.assertTrue(all(n["up"] for n in gws))
            self.assertTrue(all(n["stats"]["readings"] > 0 for n in gws), gws)


if __name__ == "__main__":
    main()
