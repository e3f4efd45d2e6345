/*  tm_segment - history chunks joined from segments  */
#include "tm_segment.h"

#include <stdlib.h>
#include <string.h>

#define S_HEAD 8                   //  last_ts
#define S_STAMP 9                  //  0xE1 expires(8)
#define S_JOINED_FIXED 10          //  marker flags count bits
#define S_PIECE_FIXED 14           //  marker flags count bits start

void
tm_segment_put_ts (uint8_t *p, int64_t ts)
{
    uint64_t v = (uint64_t) ts ^ (1ULL << 63);
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t) v;
        v >>= 8;
    }
}

int64_t
tm_segment_get_ts (const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t) (v ^ (1ULL << 63));
}


static void
s_put_u32 (uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static uint32_t
s_get_u32 (const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}

static size_t
s_head_size (int64_t expires)
{
    return S_HEAD + (expires == TM_SEGMENT_NO_EXPIRY? 0: S_STAMP);
}

size_t
tm_segment_size (const tm_segment_t *seg)
{
    size_t n = s_head_size (seg->expires);
    if (seg->kind == TM_SEGMENT_BROKEN)
        return n + 1;
    return n + (seg->kind == TM_SEGMENT_PIECE? S_PIECE_FIXED: S_JOINED_FIXED) + seg->size;
}

size_t
tm_segment_put (uint8_t *out, const tm_segment_t *seg)
{
    size_t n = 0;
    tm_segment_put_ts (out, seg->last_ts);
    n += S_HEAD;
    if (seg->expires != TM_SEGMENT_NO_EXPIRY) {
        out[n++] = TM_SEGMENT_STAMPED;
        tm_segment_put_ts (out + n, seg->expires);
        n += 8;
    }
    out[n++] = seg->kind;
    if (seg->kind == TM_SEGMENT_BROKEN)
        return n;
    out[n++] = seg->flags;
    s_put_u32 (out + n, seg->count);
    s_put_u32 (out + n + 4, seg->bits);
    n += 8;
    if (seg->kind == TM_SEGMENT_PIECE) {
        s_put_u32 (out + n, seg->start);
        n += 4;
    }
    if (seg->size)
        memcpy (out + n, seg->bytes, seg->size);
    return n + seg->size;
}

int
tm_segment_parse (const void *val, size_t vlen, tm_segment_t *out)
{
    const uint8_t *v = (const uint8_t *) val;
    memset (out, 0, sizeof *out);
    out->expires = TM_SEGMENT_NO_EXPIRY;
    if (!v || vlen < S_HEAD + 1)
        return -1;
    out->last_ts = tm_segment_get_ts (v);
    size_t n = S_HEAD;
    if (v[n] == TM_SEGMENT_STAMPED) {
        if (vlen < S_HEAD + S_STAMP + 1)
            return -1;
        out->expires = tm_segment_get_ts (v + n + 1);
        n += S_STAMP;
    }
    out->kind = v[n];
    if (out->kind == TM_SEGMENT_BROKEN)
        return vlen == n + 1? 0: -1;
    size_t fixed = out->kind == TM_SEGMENT_PIECE? S_PIECE_FIXED:
                   out->kind == TM_SEGMENT_JOINED? S_JOINED_FIXED: 0;
    if (fixed == 0 || vlen < n + fixed)
        return -1;
    out->flags = v[n + 1];
    out->count = s_get_u32 (v + n + 2);
    out->bits = s_get_u32 (v + n + 6);
    if (out->kind == TM_SEGMENT_PIECE)
        out->start = s_get_u32 (v + n + 10);
    n += fixed;
    uint64_t end = ((uint64_t) out->bits + 7) / 8;
    if ((out->flags & ~TM_SEGMENT_CLOSED) || end > TM_SEGMENT_MAX_BYTES || out->start > end
        || vlen - n != end - out->start)
        return -1;
    out->bytes = v + n;
    out->size = vlen - n;
    return 0;
}

//  A chunk being joined: its bytes from `start` of the chunk.
typedef struct {
    tm_segment_t head;             //  Head, flags, count, bits of the newest part
    uint32_t start;                //  Chunk offset of buf[0]
    uint8_t *buf;                  //  Bytes [start, ceil(bits / 8)), owned
    size_t size;
    size_t cap;
    bool broken;
} s_join_t;

//  Take part p (whole chunk from 0 if joined); false if memory is short.
//  A part that leaves a gap, or starts before what a combine holds, makes
//  the join broken (or, for a combine, impossible: *fits false).
static bool
s_take (s_join_t *j, const tm_segment_t *p, bool *fits)
{
    *fits = true;
    j->head.last_ts = p->last_ts;
    j->head.expires = p->expires;
    j->head.flags = p->flags;
    if (j->broken)
        return true;
    if (p->kind == TM_SEGMENT_BROKEN) {
        j->broken = true;
        return true;
    }
    //  Where p's bytes go in buf; a gap if past the bits joined so far.
    if (p->start < j->start || (uint64_t) p->start * 8 > j->head.bits
        || (size_t) (p->start - j->start) > j->size) {
        *fits = false;
        j->broken = true;
        return true;
    }
    size_t at = p->start - j->start;
    size_t need = at + p->size;
    if (need > j->cap) {
        size_t cap = need > 2 * j->cap? need: 2 * j->cap;
        uint8_t *grown = realloc (j->buf, cap? cap: 1);
        if (!grown)
            return false;
        j->buf = grown;
        j->cap = cap;
    }
    if (p->size)
        memcpy (j->buf + at, p->bytes, p->size);
    j->size = need;
    j->head.count = p->count;
    j->head.bits = p->bits;
    return true;
}

static uint8_t *
s_output (s_join_t *j, uint8_t kind, size_t *size)
{
    tm_segment_t out = j->head;
    out.kind = j->broken? TM_SEGMENT_BROKEN: kind;
    out.start = j->start;
    out.bytes = j->buf;
    out.size = j->size;
    *size = tm_segment_size (&out);
    uint8_t *value = malloc (*size);
    if (value)
        tm_segment_put (value, &out);
    free (j->buf);
    return value;
}

uint8_t *
tm_segment_join (const uint8_t *base, size_t blen, const char *const *ops, const size_t *lens,
                 int n, size_t *size)
{
    s_join_t j = {.head = {.expires = TM_SEGMENT_NO_EXPIRY}};
    bool fits;
    if (base) {
        tm_segment_t b;
        if (tm_segment_parse (base, blen, &b) != 0 || b.kind == TM_SEGMENT_PIECE) {
            //  A v1 chunk, or bytes that are no value: nothing joins to
            //  them. Keep their head when there is one (retention).
            j.broken = true;
            if (blen >= S_HEAD)
                j.head.last_ts = tm_segment_get_ts (base);
        }
        else
        if (!s_take (&j, &b, &fits))
            goto oom;
    }
    for (int i = 0; i < n; i++) {
        tm_segment_t p;
        if (tm_segment_parse (ops[i], lens[i], &p) != 0) {
            j.broken = true;
            continue;
        }
        if (!s_take (&j, &p, &fits))
            goto oom;
    }
    return s_output (&j, TM_SEGMENT_JOINED, size);
oom:
    free (j.buf);
    return NULL;
}

uint8_t *
tm_segment_combine (const char *const *ops, const size_t *lens, int n, size_t *size)
{
    if (n < 1)
        return NULL;
    s_join_t j = {.head = {.expires = TM_SEGMENT_NO_EXPIRY}};
    for (int i = 0; i < n; i++) {
        tm_segment_t p;
        bool fits;
        if (tm_segment_parse (ops[i], lens[i], &p) != 0 || p.kind != TM_SEGMENT_PIECE)
            goto fail;
        if (i == 0) {
            j.start = p.start;
            j.head.bits = p.start * 8;
        }
        if (!s_take (&j, &p, &fits) || !fits || j.broken)
            goto fail;
    }
    return s_output (&j, TM_SEGMENT_PIECE, size);
fail:
    free (j.buf);
    return NULL;
}
