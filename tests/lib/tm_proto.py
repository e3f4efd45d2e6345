"""tm_proto - a second, independent implementation of twinmesh's wire format.

Integration tests speak the protocol with this module instead of the C library, so
a bug in the C codec cannot hide itself by being on both ends. It writes and reads
only the messages the tests need (proto/twinmesh.proto is the specification).
"""
import struct

import zmq
import zmq.auth

# MsgType and Status numbers, from proto/twinmesh.proto.
INGEST, INGEST_ACK, APPEND, APPEND_ACK, HELLO, HELLO_ACK = 1, 2, 3, 4, 5, 6
MAP_GET, MAP, STATUS, STATUS_REPLY, TWIN_GET, TWIN, ERROR = 7, 8, 9, 10, 11, 12, 13
MODEL_PUT, MODEL_ACK, MODEL_LIST, MODEL_LIST_REPLY, MODEL_GET, MODEL = 16, 17, 18, 19, 20, 21
QUERY, QUERY_RESULT, QUERY_SCAN, QUERY_PARTIAL = 24, 25, 26, 27
SITE_QUERY, SITE_PARTIAL = 28, 29
TWIN_SET, TWIN_SET_ACK, DELTAS_GET, DELTAS, EVENTS_INFO, EVENTS_INFO_REPLY = 30, 31, 32, 33, 34, 35
DELTA_EVENT = 36
CHILD_UPDATE, CHILD_UPDATE_ACK, HIER_RESYNC, HIER_RESYNC_ACK = 40, 41, 42, 43
CHILDREN_GET, CHILDREN = 44, 45
STATUS_NAMES = ["OK", "RETRY_LATER", "MALFORMED", "UNAUTHORIZED", "TOO_LARGE",
                "WRONG_SHARD", "NOT_FOUND", "BAD_VERSION", "NOT_READY", "CONFLICT"]


def varint(v):
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


def field_double(num, v):
    return varint(num << 3 | 1) + struct.pack("<d", v)


def header(msg_type, request_id=0, epoch=0, version=1, seq=0):
    return (field_varint(1, version) + field_varint(2, msg_type) + field_varint(3, seq)
            + field_varint(4, request_id) + field_varint(5, epoch))


def reading(entity, prop, value, ts_ms, model=None, attributes=None):
    """attributes: {name: JSON text} sent with the reading (Reading field 6)."""
    body = field_bytes(1, entity) + field_bytes(2, prop) + field_double(3, value) \
        + field_varint(4, ts_ms)
    if model:
        body += field_bytes(5, model)
    for name, text in (attributes or {}).items():
        body += field_bytes(6, field_bytes(1, name) + field_bytes(2, text))
    return field_bytes(1, body)


def batch(readings):
    """readings: iterable of (entity, property, value, ts_ms[, model[, attributes]])."""
    return b"".join(reading(*r) for r in readings)


def decode(buf):
    """Decode protobuf bytes into {field: [values]} (varints as int, LEN as bytes,
    fixed64 as bytes). Raises ValueError on malformed input."""
    out = {}
    i = 0

    def rd_varint():
        nonlocal i
        v = shift = 0
        while True:
            if i >= len(buf) or shift > 63:
                raise ValueError("truncated varint")
            b = buf[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v
    while i < len(buf):
        key = rd_varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            val = rd_varint()
        elif wt == 1:
            val = buf[i:i + 8]
            i += 8
        elif wt == 2:
            n = rd_varint()
            val = buf[i:i + n]
            i += n
        elif wt == 5:
            val = buf[i:i + 4]
            i += 4
        else:
            raise ValueError("bad wire type %d" % wt)
        if i > len(buf):
            raise ValueError("field past the end")
        out.setdefault(num, []).append(val)
    return out


def parse_header(buf):
    f = decode(buf)
    g = lambda n, d=0: f.get(n, [d])[-1]
    return {"version": g(1), "type": g(2), "seq": g(3), "request_id": g(4),
            "epoch": g(5), "status": STATUS_NAMES[g(6)] if g(6) < len(STATUS_NAMES) else g(6),
            "detail": g(7, b"").decode(errors="replace")}


class Client:
    """A DEALER speaking CURVE with a czmq certificate pair, for raw protocol tests."""

    def __init__(self, endpoint, server_public_cert, secret_cert):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        pub, sec = zmq.auth.load_certificate(secret_cert)
        server_pub, _ = zmq.auth.load_certificate(server_public_cert)
        self.sock.curve_publickey = pub
        self.sock.curve_secretkey = sec
        self.sock.curve_serverkey = server_pub
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.next_id = 1

    def send_frames(self, frames):
        self.sock.send_multipart(frames)

    def request(self, msg_type, body=b"", epoch=0, timeout_ms=5000, **hdr):
        rid = self.next_id
        self.next_id += 1
        self.sock.send_multipart([header(msg_type, rid, epoch, **hdr), body])
        return self.recv(timeout_ms)

    def recv(self, timeout_ms=5000):
        """(header dict, body bytes), or None on timeout."""
        if not self.sock.poll(timeout_ms):
            return None
        frames = self.sock.recv_multipart()
        hdr = parse_header(frames[0])
        return hdr, frames[1] if len(frames) > 1 else b""

    def close(self):
        self.sock.close(0)
