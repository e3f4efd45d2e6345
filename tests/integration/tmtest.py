"""tmtest - what every integration test module shares.

Each test module is a unittest program run by meson as
    /usr/bin/python3 tests/integration/test_X.py --build BUILD_DIR
It starts real daemons on 127.0.0.1 through tests/lib/twinmesh_cluster.py and speaks
the protocol either through twinctl or through tests/lib/tm_proto.py (an independent
Python implementation of the wire format).
"""
import os
import struct
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

import tm_proto  # noqa: E402
from twinmesh_cluster import Cluster, ClusterError  # noqa: E402,F401

BUILD = os.environ.get("TM_BUILD_DIR", "build")


def main():
    global BUILD
    argv = list(sys.argv)
    if "--build" in argv:
        i = argv.index("--build")
        BUILD = argv[i + 1]
        del argv[i:i + 2]
    unittest.main(argv=argv, verbosity=2)


def cluster(**kw):
    return Cluster(BUILD, **kw)


def key(c, name, secret=True):
    return os.path.join(c.keys_dir, name + (".key_secret" if secret else ".key"))


def client(c, daemon, as_key, keys_dir=None):
    """A raw CURVE DEALER to a daemon's endpoint, presenting key as_key."""
    kd = keys_dir or c.keys_dir
    server_pub = os.path.join(c.keys_dir, daemon + ".key")
    return tm_proto.Client(c.endpoint(daemon), server_pub,
                           os.path.join(kd, as_key + ".key_secret"))


def shard_map(c):
    """The broker's current shard map, fetched and decoded in Python."""
    cl = client(c, "broker", "admin")
    try:
        rep = cl.request(tm_proto.MAP_GET)
    finally:
        cl.close()
    assert rep is not None, "broker did not answer MAP_GET"
    hdr, body = rep
    assert hdr["status"] == "OK", hdr
    f = tm_proto.decode(body)
    workers = []
    for w in f.get(4, []):
        wf = tm_proto.decode(w)
        workers.append({"id": wf[1][0].decode(), "endpoint": wf[2][0].decode(),
                        "public_key": wf[3][0].decode()})
    owners = []
    for chunk in f.get(5, []):
        if isinstance(chunk, bytes):       # packed repeated uint32
            i = 0
            while i < len(chunk):
                v = shift = 0
                while True:
                    b = chunk[i]
                    i += 1
                    v |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                owners.append(v)
        else:
            owners.append(chunk)
    return {"epoch": f.get(1, [0])[0], "num_shards": f.get(2, [0])[0],
            "key": f.get(3, [b""])[0], "workers": workers, "owners": owners}


def shard_of(m, entity):
    """The entity's shard, computed apart from our C code (PyNaCl's siphash24,
    our own byte order and modulo), to check where the C side put a twin."""
    import nacl.encoding
    import nacl.hash
    h = nacl.hash.siphash24(entity.encode(), key=m["key"], encoder=nacl.encoding.RawEncoder)
    return struct.unpack("<Q", h)[0] % m["num_shards"]
