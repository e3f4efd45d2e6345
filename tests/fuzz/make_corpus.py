#!/usr/bin/env python3
"""make_corpus.py - write the seed corpus for the fuzz targets.

Seeds are small hand-built protobuf and ZPL inputs: valid ones, so the
fuzzer starts from inputs that reach deep into the decoders, and invalid
ones for each error path, so the replay test (suite 'fuzz') checks every
one of them on every build. Run from anywhere; it rewrites
tests/fuzz/corpus/<target>/seed-* and leaves other files (crash
regressions, named regress-*) alone.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
PK = b"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def key(field, wt):
    return varint(field << 3 | wt)


def ld(field, data):
    return key(field, 2) + varint(len(data)) + data


def vi(field, v):
    return key(field, 0) + varint(v)


def f64(field, v):
    return key(field, 1) + struct.pack("<d", v)


def reading(entity=b"station-1", prop=b"pm25", value=12.5, ts=1700000000000, model=None):
    body = b""
    if entity is not None:
        body += ld(1, entity)
    if prop is not None:
        body += ld(2, prop)
    if value is not None:
        body += f64(3, value)
    if ts is not None:
        body += vi(4, ts)
    if model is not None:
        body += ld(5, model)
    return body


def batch(*bodies):
    return b"".join(ld(1, b) for b in bodies)


def wire_seeds():
    good = batch(reading(), reading(b"bay-42", b"occupied", 1.0, 1, b"parking_bay"))
    return {
        "empty": b"",
        "one": batch(reading()),
        "two": good,
        "concat": good + good,
        "unicode": batch(reading("pompe/été-🚰".encode(), "débit".encode())),
        "unknown-fields": vi(2, 7) + batch(reading() + vi(6, 1) + ld(8, b"x")) + ld(4, b"t"),
        "max-entity": batch(reading(b"e" * 128, b"p" * 64, model=b"m" * 64)),
        "long-entity": batch(reading(b"e" * 129)),
        "no-entity": batch(reading(entity=None)),
        "bad-utf8": batch(reading(b"bad\xc0\xaf")),
        "surrogate": batch(reading(prop=b"\xed\xa0\x80")),
        "nan": batch(reading(value=float("nan"))),
        "inf": batch(reading(value=float("inf"))),
        "no-value": batch(reading(value=None)),
        "zero-ts": batch(reading(ts=0)),
        "negative-ts": batch(reading(ts=-5)),
        "truncated-varint": b"\x0a\x80",
        "past-end": b"\x0a\x7f" + reading(),
        "wrong-wire-type": key(1, 0) + varint(5),
        "inner-wrong-wire-type": batch(reading() + key(1, 0) + varint(1)),
        "group": key(2, 3) + key(2, 4),
        "inner-group": batch(reading() + key(7, 3)),
        "eleven-byte-varint": b"\x80" * 10 + b"\x00",
        "field-zero": b"\x00\x00",
    }


def header(version=1, mtype=1, seq=1, req=7, epoch=3, status=0, detail=b""):
    out = b""
    if version:
        out += vi(1, version)
    if mtype:
        out += vi(2, mtype)
    if seq:
        out += vi(3, seq)
    if req:
        out += vi(4, req)
    if epoch:
        out += vi(5, epoch)
    if status:
        out += vi(6, status)
    if detail:
        out += ld(7, detail)
    return out


def header_seeds():
    return {
        "ingest": header(),
        "reply": header(mtype=4, status=5, detail=b"wrong shard 12"),
        "long-detail": header(detail=b"d" * 300),
        "utf8-cut": header(detail=b"d" * 254 + "é".encode()),
        "version-2": header(version=2),
        "version-0": header(version=0),
        "max-values": header(seq=2**64 - 1, req=2**64 - 1, epoch=2**64 - 1, mtype=2**32 - 1),
        "empty": b"",
        "garbage": b"\xff\xff\xff\xff",
        "truncated": header()[:-1] + b"\x80",
        "bad-utf8-detail": header(detail=b"\xff\xfe"),
        "too-big": header(detail=b"x" * 1100),
    }


def worker(wid=b"worker-0", ep=b"tcp://w0:5560", pk=PK):
    out = b""
    if wid is not None:
        out += ld(1, wid)
    if ep is not None:
        out += ld(2, ep)
    if pk is not None:
        out += ld(3, pk)
    return out


def shardmap(epoch=5, n=8, k=b"0123456789abcdef", workers=None, owners=None, packed=True):
    if workers is None:
        workers = [worker(), worker(b"worker-1", b"tcp://w1:5560")]
    if owners is None:
        owners = [s % 2 for s in range(n)]
    out = vi(1, epoch) + vi(2, n) + ld(3, k)
    out += b"".join(ld(4, w) for w in workers)
    if packed:
        out += ld(5, b"".join(varint(o) for o in owners))
    else:
        out += b"".join(vi(5, o) for o in owners)
    return out


def shardmap_seeds():
    return {
        "two-workers": shardmap(),
        "unpacked-owners": shardmap(packed=False),
        "unassigned": shardmap(owners=[0xFFFFFFFF] * 8),
        "no-workers": shardmap(workers=[], owners=[0xFFFFFFFF] * 8),
        "epoch-0": shardmap(epoch=0, n=1, workers=[], owners=[0xFFFFFFFF]),
        "owner-out-of-range": shardmap(owners=[0, 1, 2, 0, 1, 0, 1, 0]),
        "short-key": shardmap(k=b"short"),
        "dup-worker": shardmap(workers=[worker(), worker()]),
        "no-endpoint": shardmap(workers=[worker(ep=None), worker(b"w1")]),
        "bad-key-len": shardmap(workers=[worker(pk=b"x" * 39), worker(b"w1")]),
        "zero-shards": shardmap(n=0, owners=[]),
        "owners-mismatch": shardmap(n=9),
        "too-many-shards": vi(2, 65537) + ld(3, b"0123456789abcdef"),
        "garbage": b"\x0a\xff\xff\xff\x0f",
        "empty": b"",
    }


def config_seeds():
    return {
        "simple": b'id = "worker-7"\nmax_batch_bytes = 4096\nfsync = false\nheartbeat = 250ms\n',
        "section": b'fuzz\n    bind = "tcp://0.0.0.0:1"\nother\n    x = 1\n',
        "comment": b"#   a comment\n\nid = w\n",
        "unknown": b"nosuch = 1\n",
        "bad-int": b"max_batch_bytes = lots\n",
        "bad-duration": b"heartbeat = 5x\n",
        "nan-duration": b"heartbeat = nan\n",
        "quotes": b"id = \"unterminated\n",
        "deep": b"a\n    b\n        c\n            d = 1\n",
        "tabs": b"id =\t'x'\n\tbind = y\n",
        "empty": b"",
        "binary": b"\x00\xff\n\x01 = \x02\n",
    }


def main():
    sets = {
        "wire": wire_seeds(),
        "header": header_seeds(),
        "shardmap": shardmap_seeds(),
        "config": config_seeds(),
    }
    for target, seeds in sets.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if name.startswith("seed-"):
                os.remove(os.path.join(d, name))
        for name, data in seeds.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
