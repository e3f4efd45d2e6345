/*  tm_varint - base-128 varints and zigzag, as protobuf writes them

    The wire scanner, the history codec and the worker's checkpoint format
    all read and write varints; one definition keeps their limits the same:
    at most 10 bytes, a read that does not fit leaves the position alone.
    Header-only and inline: these sit in per-reading loops.
*/
#ifndef TM_VARINT_H_INCLUDED
#define TM_VARINT_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

//  Bytes tm_varint_put writes for v: 1 to 10.
static inline size_t
tm_varint_len (uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

//  Write v at p (room for 10 bytes); returns the bytes written.
static inline size_t
tm_varint_put (uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t) (v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t) v;
    return n;
}

//  Read a varint at *pos, not past end: 0 with *out set and *pos moved, or
//  -1 if truncated or longer than 10 bytes (*pos unchanged).
static inline int
tm_varint_get (const uint8_t **pos, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    const uint8_t *p = *pos;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (p >= end)
            return -1;
        uint8_t b = *p++;
        v |= (uint64_t) (b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *pos = p;
            *out = v;
            return 0;
        }
    }
    return -1;
}

//  Signed to unsigned so that small magnitudes stay small (protobuf's sint).
static inline uint64_t
tm_zigzag (int64_t v)
{
    return (uint64_t) v << 1 ^ (v < 0? UINT64_MAX: 0);
}

//  The inverse, without signed overflow for any input.
static inline int64_t
tm_unzigzag (uint64_t z)
{
    uint64_t u = z >> 1 ^ (0 - (z & 1));
    return u <= (uint64_t) INT64_MAX? (int64_t) u: -(int64_t) (~u) - 1;
}

//  Eight bytes big-endian: RocksDB keys and values whose byte order must
//  sort as the number does (log sequence numbers, stored clocks).
static inline void
tm_be64_put (uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t) v;
        v >>= 8;
    }
}

static inline uint64_t
tm_be64_get (const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

#endif
