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


def gorilla_seeds():
    """Chunks in tm_gorilla's format (see common/tm_gorilla.h), built by a
    small independent encoder: points are (ts, ("d", n, scale)) for the
    decimal n / 10^scale or (ts, ("x", float)) for a raw double. It always
    takes a new XOR window and switches mode whenever the kind changes, so
    every code of the format appears."""

    class Bits:
        def __init__(self):
            self.bits = []

        def put(self, v, n):
            self.bits += [(v >> (n - 1 - i)) & 1 for i in range(n)]

        def ones(self, n):
            self.bits += [1] * n

        def tobytes(self):
            b = self.bits + [0] * (-len(self.bits) % 8)
            return bytes(int("".join(map(str, b[i:i + 8])), 2) for i in range(0, len(b), 8))

    def zz(v):
        return ((v << 1) ^ (v >> 63)) & (1 << 64) - 1

    def dbits(f):
        return struct.unpack("<Q", struct.pack("<d", f))[0]

    def bitlen(v):
        return max(1, v.bit_length())

    def chunk(points):
        out = bytes([1]) + struct.pack("<I", len(points))
        if not points:
            return out
        ts0, val = points[0]
        out += varint(zz(ts0))
        w = Bits()
        st = {}

        def enter_decimal(n, scale):
            st.update(mode=scale, last=n, sum=min(abs(n) >> 4, 1 << 26), cnt=1)

        def put_xor(f):
            x = dbits(f) ^ st["last"]
            st["last"] = dbits(f)
            if x == 0:
                w.put(0, 1)
                return
            lead = min(31, 64 - x.bit_length())
            trail = (x & -x).bit_length() - 1
            length = 64 - lead - trail
            w.put(3, 2)
            w.put(lead, 5)
            w.put(length - 1, 6)
            w.put(x >> trail, length)

        if val[0] == "d":
            out += bytes([val[2]]) + varint(zz(val[1]))
            enter_decimal(val[1], val[2])
        else:
            out += bytes([255]) + struct.pack("<d", val[1])
            st.update(mode="x", last=dbits(val[1]))
        prev_ts, prev_delta = ts0, 0
        for ts, val in points[1:]:
            delta = ts - prev_ts
            dod = delta - prev_delta
            prev_ts, prev_delta = ts, delta
            if dod == 0:
                w.put(0, 1)
            else:
                for b, nb in enumerate([7, 12, 20, 32, 64], 1):
                    if -(1 << (nb - 1)) <= dod < (1 << (nb - 1)) or nb == 64:
                        w.ones(b)
                        if b < 5:
                            w.put(0, 1)
                        w.put(dod & (1 << nb) - 1, nb)
                        break
            if st["mode"] == "x":
                if val[0] == "x":
                    put_xor(val[1])
                else:
                    w.put(0x1FFF, 13)
                    w.put(val[2], 5)
                    w.put(bitlen(zz(val[1])) - 1, 6)
                    w.put(zz(val[1]), bitlen(zz(val[1])))
                    enter_decimal(val[1], val[2])
            elif val[0] == "x":
                w.ones(12)
                w.put(1, 1)
                w.put(31, 5)
                st["last"] = dbits(st["last"] / 10.0 ** st["mode"])
                st["mode"] = "x"
                put_xor(val[1])
            elif val[2] != st["mode"]:
                w.ones(12)
                w.put(1, 1)
                w.put(val[2], 5)
                w.put(bitlen(zz(val[1])) - 1, 6)
                w.put(zz(val[1]), bitlen(zz(val[1])))
                enter_decimal(val[1], val[2])
            else:
                d = zz(val[1] - st["last"])
                k = 0
                while st["cnt"] << k < st["sum"]:
                    k += 1
                if d >> k < 12:
                    w.ones(d >> k)
                    w.put(0, 1)
                    w.put(d & (1 << k) - 1, k)
                else:
                    w.ones(12)
                    w.put(0, 1)
                    w.put(bitlen(d) - 1, 6)
                    w.put(d, bitlen(d))
                st["sum"] += min(d, 1 << 26)
                st["cnt"] += 1
                if st["cnt"] == 32:
                    st["sum"] >>= 1
                    st["cnt"] >>= 1
                st["last"] = val[1]
        return out + w.tobytes()

    t0 = 1700000000000
    regular = [(t0 + 60000 * i, ("d", 180 + (i * 7) % 13 - 6, 1)) for i in range(40)]
    jitter = [(t0 + 1000 * i + (i * 37) % 90, ("d", 21 + i % 3, 0)) for i in range(40)]
    steps = [1, 100, 3000, 700000, 5 * 86400000, 1 << 40]
    gaps = [(t0 + sum(steps[j % 6] for j in range(i)), ("d", i, 0)) for i in range(24)]
    floats = [(t0 + 10 * i, ("x", 18 + i * 0.123456789)) for i in range(20)]
    mixed = [(t0 + 1000 * i, ("d", 1234 + i, 2) if i % 5 else ("x", i / 3.0))
             for i in range(30)]
    scales = [(t0 + 1000 * i, ("d", 7578 - i, 4) if i % 4 else ("d", 1 - i, 0))
              for i in range(30)]
    spike = [(t0 + 1000 * i, ("d", 100 if i != 10 else 10 ** 15, 1)) for i in range(20)]
    good = chunk(regular)
    one = chunk(regular[:1])
    return {
        "empty": chunk([]),
        "one": one,
        "one-xor": chunk(floats[:1]),
        "regular": good,
        "jitter": chunk(jitter),
        "gaps": chunk(gaps),
        "floats": chunk(floats),
        "mixed": chunk(mixed),
        "scales": chunk(scales),
        "spike": chunk(spike),
        "extremes": chunk([(-(1 << 63), ("x", -0.0)), (-1, ("x", float("inf"))),
                           ((1 << 63) - 1, ("x", float("nan")))]),
        "version-2": bytes([2]) + good[1:],
        "count-too-big": good[:1] + struct.pack("<I", 1 << 30) + good[5:],
        "count-short": good[:1] + struct.pack("<I", 39) + good[5:],
        "truncated": good[:-3],
        "trailing": good + b"\x00",
        "padding": good[:-1] + bytes([good[-1] | 1]),
        "bad-mode": one[:11] + b"\x17" + one[12:],
        "empty-trailing": chunk([]) + b"\x00",
        "same-ts": chunk([(5, ("d", 1, 0)), (5, ("d", 2, 0))]),
        "garbage": b"\x01\xff\xff\xff\x7f" + bytes(range(256)),
    }


def model_seeds():
    """Model files (tests/fuzz/fuzz_model.c): every shipped example, a model
    using every field, and one seed per kind of mistake the parser names."""
    seeds = {}
    models = os.path.join(HERE, "..", "..", "models")
    for name in sorted(os.listdir(models)):
        if name.endswith(".json"):
            with open(os.path.join(models, name), "rb") as f:
                seeds["example-" + name[:-5]] = f.read()
    head = b'{"name": "m", "version": 1, '

    def prop(body):
        return head + b'"properties": {"p": {' + body + b"}}}"

    seeds.update({
        "minimal": b'{"name": "m", "version": 1}',
        "full": head + b'"description": "d", "retention_ms": 1000, "x-c": [1], '
        b'"properties": {"flow": {"type": "number", "unit": "m3/h", '
        b'"valid": {"min": -1, "max": 1e300}, "limits": {"lower": 0.1, "upper": 9}, '
        b'"expected_interval_ms": 1000, "stale_factor": 2, "ewma_alpha": 0.30000000000000004, '
        b'"stuck_run": 5, "anomaly": {"enabled": true, "threshold_sigma": 3, "warmup": 0}, '
        b'"forecast": {"enabled": false, "alpha": 1, "beta": 0, "horizon": 1}, '
        b'"retention_ms": 5}, "on": {"type": "boolean"}, "n": {"type": "integer"}}, '
        b'"attributes": {"site": {"type": "string", "required": true}, '
        b'"w": {"type": "location", "default": {"lat": -37.8, "lon": 144.9}}, '
        b'"t": {"type": "tags", "default": ["a", "b"]}, "k": {"type": "number", "default": 2}}, '
        b'"relationships": {"up": {"kind": "parent", "target": "m", "attribute": "site"}}, '
        b'"derived": {"f2": {"unit": "x", "expression": "flow * 2"}}, '
        b'"aggregates": {"flow": {"functions": ["mean", "min", "max", "count_anomalous"], '
        b'"models": ["m", "n"]}}}',
        "empty": b"",
        "not-object": b"[]",
        "truncated": b'{"name": "m", "vers',
        "duplicate-key": head + b'"name": "n"}',
        "unknown-field": head + b'"colour": 1}',
        "bad-name": b'{"name": "air-station", "version": 1}',
        "generic": b'{"name": "generic", "version": 1}',
        "format-2": head + b'"format": 2}',
        "version-real": b'{"name": "m", "version": 1.0}',
        "version-huge": b'{"name": "m", "version": 99999999999999999999}',
        "min-string": prop(b'"valid": {"min": "0"}'),
        "min-max": prop(b'"valid": {"min": 5, "max": 1}'),
        "limit-outside": prop(b'"valid": {"min": 0, "max": 1}, "limits": {"upper": 2}'),
        "boolean-valid": prop(b'"type": "boolean", "valid": {"max": 1}'),
        "alpha-zero": prop(b'"ewma_alpha": 0'),
        "interval-zero": prop(b'"expected_interval_ms": 0'),
        "stuck-one": prop(b'"stuck_run": 1'),
        "typo": prop(b'"anomaly": {"thresold_sigma": 3}'),
        "required-default": head + b'"attributes": {"a": {"type": "string", "required": true, '
        b'"default": "x"}}}',
        "bad-location": head + b'"attributes": {"a": {"type": "location", '
        b'"default": {"lat": 91, "lon": 0}}}}',
        "dup-tag": head + b'"attributes": {"a": {"type": "tags", "default": ["x", "x"]}}}',
        "no-attribute": head + b'"relationships": {"up": {"kind": "parent", "target": "d", '
        b'"attribute": "a"}}}',
        "empty-expression": head + b'"derived": {"d": {"expression": " "}}}',
        "name-clash": head + b'"properties": {"p_mean": {}}, '
        b'"aggregates": {"p": {"functions": ["mean"]}}}',
        "bad-function": head + b'"aggregates": {"p": {"functions": ["median"]}}}',
        "deep": head + b'"x-d": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        "nul": b'{"name": "m\\u0000", "version": 1}',
        "bad-utf8": b'{"name": "\xff", "version": 1}',
        "location-value": b'{"lat": 45.46, "lon": 9.19}',
        "tags-value": b'["a", "b"]',
    })
    return seeds

def expr_seeds():
    """Expressions (tm_expr): text for the parser, and serialised trees
    ("TMX\\x01", a record count, postfix records) for the deserialiser.
    Operator numbers are s_op_t in common/tm_expr.c. In fuzz_expr's
    resolver a name's first letter gives its type: s/m/d string, a/b
    boolean, l location, v any, u unknown, others number."""
    ops = ["neg", "not", "mul", "div", "mod", "add", "sub", "eq", "ne", "lt", "le",
           "gt", "ge", "in", "between", "isnull", "and", "or", "abs", "min", "max",
           "round", "floor", "ceil", "sqrt", "pow", "ln", "exp", "coalesce", "clamp",
           "within", "bbox", "distance"]

    def num(v):
        return b"\x03" + struct.pack("<d", v)

    def text(s):
        b = s.encode()
        return b"\x04" + varint(len(b)) + b

    def name(n, slot, typ, raw=False):
        return (b"\x06" if raw else b"\x05") + varint(slot) + bytes([typ]) + varint(len(n)) + n

    def op(o, n):
        return bytes([0x10 + ops.index(o)]) + varint(n)

    def tree(count, *records):
        return b"TMX\x01" + varint(count) + b"".join(records)

    filt = tree(7, name(b"pm25", 0, 1), num(35), op("gt", 2), name(b"model", 4, 2),
                text("air_station"), op("eq", 2), op("and", 2))
    return {
        "filter": b"model = 'air_station' AND pm25 > 35 AND within(location, 45.4642, 9.19, 2000)",
        "heat-index": b"temperature + 0.33 * humidity - 4",
        "occupancy": b"100 * occupied / capacity",
        "functions": b"abs(x) + min(x, y, 3) + max(x) + round(x, 2) + floor(x) + ceil(x) "
                     b"+ sqrt(x) + pow(x, 2) + ln(x) + exp(x) + clamp(x, 0, 1) "
                     b"+ coalesce(x, 0) + distance(location, 45, 9)",
        "geo": b"bbox(location, 45, 9, 46, 10) OR NOT within(location, 0, 0, 1e7)",
        "predicates": b"x IN (1, 2, y) AND s NOT IN ('a', 'b') AND x BETWEEN 1 AND 2 "
                      b"AND y NOT BETWEEN -1 AND 1 AND z IS NULL AND v IS NOT NULL",
        "logic": b"NOT (a OR b) AND (anomalous OR NOT b) OR a = TRUE AND b != FALSE",
        "strings": "s = 'it''s' OR s < 'caf\u00e9' OR s >= '' OR \"odd name\" > 1".encode(),
        "names": b"location.lat > 45 AND \"from\" < 1 AND \"p.q\" = 2",
        "numbers": b"x > 1e-3 AND x < 1.5E+300 AND x != 0.30000000000000004 AND -0 = 0",
        "fold": b"2 * 3 + 1 / 0 + x % 0 + sqrt(-1) + - -x",
        "any": b"v + 1 > 2 OR v = 'seven' OR coalesce(v, 'x') = 'x'",
        "aggregate": b"count(*) > 5 AND count(*) < 10",
        "case": b"x Between 1 aNd 2 oR NoT a iS nUlL",
        "deep": b"(" * 120 + b"x" + b")" * 120,
        "too-deep": b"(" * 200 + b"x" + b")" * 200,
        "long-chain": b" + ".join([b"x"] * 130),
        "unterminated": b"s = 'abc",
        "bad-number": b"x > 35abc",
        "bad-utf8": b"s = '\xc3\x28'",
        "unknown-name": b"unknown > 1",
        "unknown-function": b"avg(pm25) > 3",
        "chained": b"x < y < z",
        "trailing": b"pm25 > 35 GROUP BY district",
        "type-error": b"s + 1 > x",
        "empty": b"",
        "bytes-filter": filt,
        "bytes-geo": tree(5, name(b"location", 12, 4), num(45.46), num(9.19), num(2000),
                          op("within", 4)),
        "bytes-in": tree(4, name(b"s", 4, 2), text("a"), text(""), op("in", 3)),
        "bytes-any": tree(3, name(b"v", 14, 5), num(-1.5), op("add", 2)),
        "bytes-raw": tree(3, name(b"count(*)", 0, 1, raw=True), num(5), op("gt", 2)),
        "bytes-literals": tree(4, b"\x00", b"\x01", b"\x02", op("coalesce", 3)),
        "bytes-unfolded": tree(3, num(2), num(3), op("mul", 2)),
        "bytes-deep": tree(201, name(b"x", 0, 1), *[op("neg", 1)] * 200),
        "bytes-truncated": filt[:-3],
        "bytes-trailing": filt + b"\x00",
        "bytes-two-trees": tree(2, num(1), num(2)),
        "bytes-arity": tree(2, num(1), op("add", 1)),
        "bytes-type": tree(3, text("a"), num(1), op("add", 2)),
        "bytes-nan": tree(1, b"\x03" + struct.pack("<d", float("nan"))),
        "bytes-bad-slot-type": tree(1, name(b"x", 0, 9)),
        "bytes-huge-count": b"TMX\x01" + varint(2**40),
        "bytes-unknown-record": tree(1, b"\x7f"),
    }

def child_update_seeds():
    """ChildUpdate bodies (worker/tm_hier.h): valid, and one per rule broken."""
    def value(prop=b"pm25", v=12.5, ts=1700000000000, anomalous=False):
        out = ld(1, prop) + f64(2, v) + vi(3, ts)
        return out + (vi(4, 1) if anomalous else b"")

    def entry(parent=b"milan/district/Brera", child=b"milan/air-000001", values=None,
              detached=False, child_model=b"air_station", parent_model=b"district"):
        out = ld(1, parent) + ld(2, child) + ld(3, child_model) + ld(4, parent_model)
        for v in (values if values is not None else [value()]):
            out += ld(5, v)
        return out + (vi(6, 1) if detached else b"")

    def update(*entries):
        return b"".join(ld(1, e) for e in entries)

    good = update(entry(), entry(child=b"milan/air-000002",
                                 values=[value(), value(b"no2", -3.0, 5, True)]))
    return {
        "empty": b"",
        "one": update(entry()),
        "two": good,
        "detach": update(entry(values=[], detached=True)),
        "detach-with-values": update(entry(detached=True)),
        "no-parent": update(entry(parent=b"")),
        "long-child": update(entry(child=b"c" * 129)),
        "long-model": update(entry(child_model=b"m" * 65)),
        "bad-utf8": update(entry(parent=b"d\xff\xfe")),
        "nan": update(entry(values=[value(v=float("nan"))])),
        "inf": update(entry(values=[value(v=float("-inf"))])),
        "no-property": update(entry(values=[value(prop=b"")])),
        "too-many-values": update(entry(values=[value(b"p%d" % i) for i in range(65)])),
        "truncated": good[:-4],
        "huge-length": ld(1, b"")[:1] + varint(2**40),
    }


def history_value_seeds():
    """Inputs of fuzz_history_value: kind byte (even 'H', odd 'L'), clock
    (8 bytes, shifted right by one), then a stored value."""
    def ts(v):
        return struct.pack(">Q", (v ^ (1 << 63)) & ((1 << 64) - 1))

    def clock(ms):
        return struct.pack(">Q", ms << 1)

    # A chunk of one point (version 1, count 1, ts zigzag 1000, decimal
    # mode 0, value zigzag 5): the bytes tm_gorilla writes.
    chunk = bytes([1, 1, 0, 0, 0]) + bytes([0xd0, 0x0f]) + bytes([0, 10])
    now = 1700000000000
    return {
        "chunk-v0": b"\0" + clock(now) + ts(1000) + chunk,
        "chunk-v1": b"\0" + clock(now) + ts(1000) + b"\xe1" + ts(5000) + chunk,
        "chunk-v1-future": b"\0" + clock(now) + ts(1000) + b"\xe1" + ts(now * 2) + chunk,
        "chunk-v1-short": b"\0" + clock(now) + ts(1000) + b"\xe1" + ts(5000)[:4],
        "chunk-garbage": b"\0" + clock(now) + ts(1000) + b"\x07\xff\xff",
        "late-v0": b"\1" + clock(now) + struct.pack("<d", 12.5),
        "late-v1": b"\1" + clock(now) + struct.pack("<d", 12.5) + b"\xe1" + ts(90000),
        "late-v1-bad-marker": b"\1" + clock(now) + struct.pack("<d", 12.5) + b"\xe2" + ts(9),
        "late-long": b"\1" + clock(now) + bytes(30),
    }


def main():
    sets = {
        "child_update": child_update_seeds(),
        "history_value": history_value_seeds(),
        "wire": wire_seeds(),
        "header": header_seeds(),
        "shardmap": shardmap_seeds(),
        "config": config_seeds(),
        "model": model_seeds(),
        "gorilla": gorilla_seeds(),
        "expr": expr_seeds(),
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
