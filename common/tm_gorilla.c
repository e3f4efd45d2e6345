/*  tm_gorilla - compressed chunks of one series' history (ts_ms, value)

    The format is described in tm_gorilla.h. A point is encoded into a
    zeroed scratch buffer that starts with the chunk's last partial byte
    and has room for the largest point, so encoding checks capacity once
    per point, not once per field; its bytes are then copied to the end of
    the pending bytes, which grow by exactly what the point took. The
    decoder checks every read against the end.
*/
#include "tm_gorilla.h"
#include "tm_varint.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

//  Decimal mode rebuilds a value as (double) n / 10^s and relies on that
//  being the same double on every machine that reads the chunk.
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "tm_gorilla needs doubles evaluated in double precision (FLT_EVAL_METHOD 0)"
#endif

#define S_MODE_XOR 255             //  Header mode byte: the first value is raw
#define S_XOR 31                   //  scale field value meaning XOR mode
#define S_SCALE_MAX 22             //  10^22 is the largest power of 10 a double holds exactly
#define S_N_MAX (1LL << 53)        //  |n| limit: every such integer is an exact double
#define S_RICE_QMAX 12             //  Unary quotient limit; 12 ones is the escape
#define S_RICE_RESET 32            //  Halve the Rice statistics at this many deltas
#define S_RICE_CAP (1u << 26)      //  Largest zz one delta adds to rice_sum
#define S_HEADER_MIN 4             //  v2 header bytes at least: version, ts, mode, value
#define S_HEADER_MAX 21            //  1 + 10 (ts varint) + 1 + 9 (8 raw or n varint)
#define S_POINT_MAX_BYTES 21       //  tcode <= 69 bits, vcode <= 95 bits
#define S_SCRATCH 32               //  A point (from a partial byte) or the header, 8 to spare
#define S_MAX_BITS ((uint32_t) TM_GORILLA_STREAM_MAX_BYTES * 8)
#define S_SAVE_FORMAT_WHOLE 1      //  First byte of a saved state: with its last point
#define S_SAVE_FORMAT_OPEN 2       //  First byte of a saved state: without (the caller's)
#define S_SAVE_XOR_ONLY 1          //  Saved state flags
#define S_SAVE_POINTS 2
#define S_SAVE_DIRTY 4             //  Points appended since the last flush
//  A saved state but its pending bytes, at most: format, flags, count,
//  bits, start, last_ts, span, last_delta, five bytes, rice_sum, last
//  (format 2 has neither last_ts nor last: 19 bytes fewer).
#define S_SAVE_FIXED (1 + 1 + 3 + 3 + 3 + 10 + 6 + 5 + 5 + 5 + 10)

_Static_assert (S_HEADER_MAX + 8 <= S_SCRATCH && 1 + S_POINT_MAX_BYTES + 8 <= S_SCRATCH,
                "scratch holds the header or a point, and a word write past it");
_Static_assert (TM_GORILLA_STREAM_MAX_BYTES <= UINT16_MAX
                    && TM_GORILLA_STREAM_MAX_POINTS <= UINT16_MAX,
                "start and count are 16-bit");

//  Powers of ten a double holds exactly (the decimal scales).
static const double s_pow10[S_SCALE_MAX + 1] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

//  Delta-of-delta buckets: payload bits after 0..5 leading ones.
static const unsigned s_ts_bits[6] = {0, 7, 12, 20, 32, 64};

//  ---------------------------------------------------------------------
//  Integer helpers: all arithmetic on untrusted or wrapping values is
//  done in uint64_t, where overflow is defined.

//  Two's complement reinterpretation without implementation-defined casts.
static int64_t
s_signed (uint64_t u)
{
    return u <= (uint64_t) INT64_MAX? (int64_t) u: -(int64_t) (~u) - 1;
}

//  Bits needed to write v (at least 1).
static unsigned
s_bitlen (uint64_t v)
{
    return v? 64 - (unsigned) __builtin_clzll (v): 1;
}

static uint64_t
s_double_bits (double v)
{
    uint64_t u;
    memcpy (&u, &v, sizeof u);
    return u;
}

static double
s_bits_double (uint64_t u)
{
    double v;
    memcpy (&v, &u, sizeof v);
    return v;
}

//  The Rice parameter: the smallest k with n * 2^k >= sum, i.e. about
//  log2 of the mean zigzag delta (the rule of JPEG-LS's Golomb coder).
static unsigned
s_rice_k (uint32_t sum, unsigned n)
{
    unsigned k = 0;
    while (((uint64_t) n << k) < sum)
        k++;
    return k;
}

static uint32_t
s_rice_start (int64_t n)
{
    uint64_t mag = (uint64_t) (n < 0? -n: n) >> 4;
    return mag > S_RICE_CAP? S_RICE_CAP: (uint32_t) mag;
}

static void
s_rice_update (uint32_t *sum, unsigned *n, uint64_t zz)
{
    *sum += zz > S_RICE_CAP? S_RICE_CAP: (uint32_t) zz;
    if (++*n == S_RICE_RESET) {
        *sum >>= 1;
        *n >>= 1;
    }
}

//  x (|x| < 2^53) to the nearest integer, halves away from zero: how a
//  decimal's n is found, and found again from its value (s_prev_raw).
static int64_t
s_round (double x)
{
    return (int64_t) (x < 0? x - 0.5: x + 0.5);
}

//  Is v exactly n / 10^scale for an integer |n| <= 2^53? Bit-for-bit, so
//  -0.0, NaN and values with more digits than the scale are refused.
static bool
s_decimal (double v, unsigned scale, int64_t *n)
{
    double x = v * s_pow10[scale];
    if (!(x > -(double) S_N_MAX && x < (double) S_N_MAX))
        return false;
    int64_t m = s_round (x);
    double back = (double) m / s_pow10[scale];
    if (s_double_bits (back) != s_double_bits (v))
        return false;
    *n = m;
    return true;
}

//  The smallest scale at which v is a decimal, or -1. Bounded: at most
//  S_SCALE_MAX + 1 tries, fewer as v * 10^s reaches 2^53.
static int
s_find_scale (double v, int64_t *n)
{
    for (unsigned s = 0; s <= S_SCALE_MAX; s++) {
        if (s_decimal (v, s, n))
            return (int) s;
        if (!(fabs (v * s_pow10[s]) < (double) S_N_MAX))
            break;
    }
    return -1;
}

//  Big-endian 64-bit words (the stream is MSB first): one load and a
//  byte swap, which gcc does not make of a byte loop.
static uint64_t
s_load_be64 (const uint8_t *p)
{
    uint64_t w;
    memcpy (&w, p, sizeof w);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    w = __builtin_bswap64 (w);
#endif
    return w;
}

static void
s_store_be64 (uint8_t *p, uint64_t w)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    w = __builtin_bswap64 (w);
#endif
    memcpy (p, &w, sizeof w);
}

//  ---------------------------------------------------------------------
//  Pending bytes: chunk bytes [start, ceil (bits / 8)), inside the state
//  while they fit in TM_GORILLA_INLINE bytes, else on the heap in a block
//  whose size is a function of their length (s_heap_cap), so no capacity
//  is stored.

static size_t
s_pending_len (const tm_gorilla_open_t *self)
{
    return (((size_t) self->bits + 7) >> 3) - self->start;
}

static bool
s_on_heap (size_t len)
{
    return len > TM_GORILLA_INLINE;
}

static uint8_t *
s_pending_bytes (tm_gorilla_open_t *self)
{
    return s_on_heap (s_pending_len (self))? self->pend.heap: self->pend.inl;
}

//  The span, last_ts - first_ts: less than 2^36, so first_lo (first_ts
//  mod 2^36) gives it without updating a field at every point.
#define S_SPAN_MASK ((uint64_t) TM_GORILLA_STREAM_MAX_SPAN)
static uint64_t
s_span (const tm_gorilla_open_t *self, int64_t last_ts)
{
    return ((uint64_t) last_ts - self->first_lo) & S_SPAN_MASK;
}

//  The heap block for len pending bytes (len > TM_GORILLA_INLINE). The
//  malloc chunk it lands in (len plus glibc's and musl's 8-byte size word)
//  is rounded up to a quarter of the power of two below it, and to a
//  multiple of 32: blocks of 24, 56, 88, 120, 152 ... 248, 312, 376 ...
//  bytes, so a chunk grows by about a quarter at a time (a realloc per
//  twenty points or so, as the v1 encoder did: growing by exactly what a
//  point needs would realloc at every point, and a realloc, which copies
//  the bytes to a new place, costs as much as encoding a few points). A
//  rounded size rounds to itself, so the block only changes when the
//  length passes it.
static size_t
s_heap_cap (size_t len)
{
    size_t total = len + 8;
    unsigned e = 63 - (unsigned) __builtin_clzll ((unsigned long long) total - 1);
    size_t step = e < 7? 32: (size_t) 1 << (e - 2);
    return ((total + step - 1) & ~(step - 1)) - 8;
}

//  Bytes len pending bytes have room for: inline or their heap block.
static size_t
s_room (size_t len)
{
    return s_on_heap (len)? s_heap_cap (len): TM_GORILLA_INLINE;
}

//  Move len0 pending bytes at p to a heap block for len: a new one (from
//  inline) or a larger one. The new place, or NULL (nothing changed).
static uint8_t *
s_grow (tm_gorilla_open_t *self, uint8_t *p, size_t len0, size_t len)
{
    if (s_on_heap (len0))
        p = realloc (p, s_heap_cap (len));
    else {
        p = malloc (s_heap_cap (len));
        if (p)
            memcpy (p, self->pend.inl, len0);
    }
    if (p)
        self->pend.heap = p;
    return p;
}

//  ---------------------------------------------------------------------
//  Encoder

//  The chunk's last point while a point is appended: the caller keeps it
//  (tm_gorilla_open_t), the encoder works on this copy.
typedef struct {
    int64_t ts;                    //  Its timestamp
    uint64_t raw;                  //  Its value as coded: n (decimal mode) or its bits
    double value;                  //  Its value
} s_prev_t;

//  The last value as the code goes on from it. In decimal mode every value
//  the chunk took passed s_decimal at the current scale, so rounding it
//  times 10^scale gives its n back exactly (the same expression on the same
//  double); a value that was not (a state loaded from bytes is checked, so
//  only a caller's bug) gives some n, never undefined behaviour.
static uint64_t
s_prev_raw (const tm_gorilla_open_t *self, double last)
{
    if (self->scale == S_XOR)
        return s_double_bits (last);
    double x = last * s_pow10[self->scale];
    return x > -(double) S_N_MAX && x < (double) S_N_MAX? (uint64_t) s_round (x): 0;
}

//  Where a point is written: bits MSB first, OR-ed into zeroed scratch.
typedef struct {
    uint8_t *buf;                  //  S_SCRATCH bytes
    unsigned bits;                 //  Bits written at buf
} s_out_t;

//  Write v, which has no bits above the low n (n <= 64), most significant
//  first. One 64-bit read-modify-write of the zeroed tail: the scratch
//  buffer has 8 bytes to spare beyond the largest point.
static void
s_put (s_out_t *o, uint64_t v, unsigned n)
{
    if (n == 0)
        return;
    unsigned off = o->bits & 7;
    if (off + n > 64) {
        s_put (o, v >> 32, n - 32);
        s_put (o, v & 0xFFFFFFFFu, 32);
        return;
    }
    uint8_t *p = o->buf + (o->bits >> 3);
    s_store_be64 (p, s_load_be64 (p) | v << (64 - off - n));
    o->bits += n;
}

static void
s_put_ones (s_out_t *o, unsigned n)
{
    s_put (o, n == 64? UINT64_MAX: ((uint64_t) 1 << n) - 1, n);
}

static void
s_rice_reset (tm_gorilla_open_t *self, int64_t n)
{
    self->rice_sum = s_rice_start (n);
    self->rice_n = 1;
}

//  A value written whole after a switch to decimal mode.
static void
s_put_absolute (s_out_t *o, int64_t n)
{
    uint64_t zz = tm_zigzag (n);
    unsigned len = s_bitlen (zz);
    s_put (o, len - 1, 6);
    s_put (o, zz, len);
}

static void
s_enter_decimal (tm_gorilla_open_t *self, s_prev_t *prev, unsigned scale, int64_t n)
{
    self->scale = scale & 31;
    self->hint = scale & 31;
    prev->raw = (uint64_t) n;
    s_rice_reset (self, n);
}

//  The XOR code of a value in XOR mode (not a switch).
static void
s_put_xor (tm_gorilla_open_t *self, s_prev_t *prev, s_out_t *o, uint64_t bits)
{
    uint64_t x = bits ^ prev->raw;
    prev->raw = bits;
    if (x == 0) {
        s_put (o, 0, 1);
        return;
    }
    unsigned lead = (unsigned) __builtin_clzll (x);
    unsigned trail = (unsigned) __builtin_ctzll (x);
    if (lead > 31)
        lead = 31;
    unsigned len = 64 - lead - trail;
    unsigned window = 64 - self->lead - self->trail;
    //  Reuse the window when it fits and is not dearer than a new one
    //  (Gorilla always reuses; a wide stale window costs more bits).
    if (lead >= self->lead && trail >= self->trail && window <= len + 11) {
        s_put (o, 2, 2);
        s_put (o, x >> self->trail, window);
        return;
    }
    s_put (o, 3, 2);
    s_put (o, lead, 5);
    s_put (o, len - 1, 6);
    s_put (o, x >> trail, len);
    self->lead = lead & 31;
    self->trail = trail & 63;
}

//  Timestamp code; the caller has checked that delta = ts_ms - last_ts is
//  1 .. TM_GORILLA_STREAM_MAX_DELTA and fits the span.
static void
s_put_ts (tm_gorilla_open_t *self, s_prev_t *prev, s_out_t *o, int64_t ts_ms,
          uint32_t delta)
{
    int64_t dod = (int64_t) delta - (int64_t) self->last_delta;
    prev->ts = ts_ms;
    self->last_delta = delta;
    if (dod == 0) {
        s_put (o, 0, 1);
        return;
    }
    for (unsigned b = 1; b < 5; b++) {
        unsigned nb = s_ts_bits[b];
        int64_t half = (int64_t) 1 << (nb - 1);
        if (dod >= -half && dod < half) {
            //  b ones, a zero, nb payload bits: one write (<= 37 bits).
            uint64_t prefix = (((uint64_t) 1 << b) - 1) << 1;
            s_put (o, prefix << nb | ((uint64_t) dod & (((uint64_t) 1 << nb) - 1)), b + 1 + nb);
            return;
        }
    }
    s_put_ones (o, 5);
    s_put (o, (uint64_t) dod, 64);
}

//  Value code in decimal mode.
static void
s_put_value_decimal (tm_gorilla_open_t *self, s_prev_t *prev, s_out_t *o, double value)
{
    int64_t n;
    if (s_decimal (value, self->scale, &n)) {
        uint64_t zz = tm_zigzag (n - s_signed (prev->raw));
        unsigned rice_n = self->rice_n;
        unsigned k = s_rice_k (self->rice_sum, rice_n);
        uint64_t q = zz >> k;
        if (q < S_RICE_QMAX && q + 1 + k <= 64) {
            //  q ones, a zero, k low bits: one write.
            uint64_t low = zz & (((uint64_t) 1 << k) - 1);
            s_put (o, (((uint64_t) 1 << q) - 1) << (k + 1) | low, (unsigned) q + 1 + k);
        }
        else {
            s_put_ones (o, S_RICE_QMAX);
            s_put (o, 0, 1);
            unsigned len = s_bitlen (zz);
            s_put (o, len - 1, 6);
            s_put (o, zz, len);
        }
        uint32_t sum = self->rice_sum;
        s_rice_update (&sum, &rice_n, zz);
        self->rice_sum = sum;
        self->rice_n = rice_n & 31;
        prev->raw = (uint64_t) n;
        return;
    }
    s_put_ones (o, S_RICE_QMAX);
    s_put (o, 1, 1);
    int scale = s_find_scale (value, &n);
    if (scale >= 0) {
        s_put (o, (uint64_t) scale, 5);
        s_put_absolute (o, n);
        s_enter_decimal (self, prev, (unsigned) scale, n);
        return;
    }
    //  Not a decimal at any scale: XOR from the previous value's bits,
    //  with a fresh (full) window.
    s_put (o, S_XOR, 5);
    prev->raw = s_double_bits (prev->value);
    self->scale = S_XOR;
    self->lead = 0;
    self->trail = 0;
    s_put_xor (self, prev, o, s_double_bits (value));
}

//  Value code in XOR mode: back to decimal mode when the value allows.
//  The hinted scale is tried on every point, all scales on every eighth
//  (a full search is up to 23 multiply-divides, too dear per point for a
//  series of full-precision floats).
static void
s_put_value_xor (tm_gorilla_open_t *self, s_prev_t *prev, s_out_t *o, double value,
                 uint32_t index)
{
    uint64_t bits = s_double_bits (value);
    if (bits != prev->raw && !self->xor_only) {
        int64_t n;
        int scale = -1;
        if (s_decimal (value, self->hint, &n))
            scale = (int) self->hint;
        else
        if ((index & 7) == 0)
            scale = s_find_scale (value, &n);
        if (scale >= 0) {
            s_put (o, 0x1FFF, 13);       //  11 11111 111111: the switch code
            s_put (o, (uint64_t) scale, 5);
            s_put_absolute (o, n);
            s_enter_decimal (self, prev, (unsigned) scale, n);
            return;
        }
    }
    s_put_xor (self, prev, o, bits);
}

//  The first point: the header, with the first value whole, into p
//  (S_SCRATCH bytes); returns its bytes.
static size_t
s_encode_first (tm_gorilla_open_t *self, s_prev_t *prev, uint8_t *p, int64_t ts_ms,
                double value)
{
    size_t len = 0;
    p[len++] = TM_GORILLA_STREAM_VERSION;
    len += tm_varint_put (p + len, tm_zigzag (ts_ms));
    int64_t n;
    int scale = self->xor_only? -1: s_find_scale (value, &n);
    if (scale >= 0) {
        p[len++] = (uint8_t) scale;
        len += tm_varint_put (p + len, tm_zigzag (n));
        s_enter_decimal (self, prev, (unsigned) scale, n);
    }
    else {
        p[len++] = S_MODE_XOR;
        uint64_t bits = s_double_bits (value);
        for (int i = 0; i < 8; i++)
            p[len++] = (uint8_t) (bits >> (8 * i));
        prev->raw = bits;
        self->scale = S_XOR;
        self->hint = 0;
        self->lead = 0;
        self->trail = 0;
    }
    prev->ts = ts_ms;
    self->last_delta = 0;
    self->first_lo = (uint64_t) ts_ms & S_SPAN_MASK;
    return len;
}

//  The first point, into empty pending bytes.
static int
s_append_first (tm_gorilla_open_t *self, int64_t ts_ms, double value)
{
    uint8_t scratch[S_SCRATCH];
    tm_gorilla_open_t saved = *self;
    s_prev_t prev;
    size_t len = s_encode_first (self, &prev, scratch, ts_ms, value);
    uint8_t *p = self->pend.inl;
    if (s_on_heap (len) && !(p = s_grow (self, p, 0, len))) {
        *self = saved;
        return -1;
    }
    memcpy (p, scratch, len);
    self->bits = (uint32_t) len * 8;
    self->count = 1;
    return 0;
}

//  A later point is encoded into scratch, starting with the chunk's last
//  partial byte, then its bytes are copied to the end of the pending
//  bytes: they grow by exactly the bytes the point took, where writing in
//  place needed room for the largest point (21 bytes; most take one or
//  two) kept free in every open chunk.
static int s_append (tm_gorilla_open_t *self, s_prev_t *prev, int64_t ts_ms, double value);

int
tm_gorilla_open_append (tm_gorilla_open_t *self, int64_t last_ts, double last, int64_t ts_ms,
                        double value)
{
    assert (self);
    int rc;
    if (self->count == 0)
        rc = s_append_first (self, ts_ms, value);
    else {
        s_prev_t prev = {.ts = last_ts, .raw = s_prev_raw (self, last), .value = last};
        rc = s_append (self, &prev, ts_ms, value);
    }
    if (rc == 0)
        self->dirty = 1;
    return rc;
}

//  A point after the first.
static int
s_append (tm_gorilla_open_t *self, s_prev_t *prev, int64_t ts_ms, double value)
{
    if (ts_ms <= prev->ts)
        return TM_GORILLA_E_ORDER;
    uint64_t delta = (uint64_t) ts_ms - (uint64_t) prev->ts;
    if (delta > TM_GORILLA_STREAM_MAX_DELTA
        || delta > TM_GORILLA_STREAM_MAX_SPAN - s_span (self, prev->ts)
        || self->count >= TM_GORILLA_STREAM_MAX_POINTS)
        return TM_GORILLA_E_FULL;
    tm_gorilla_open_t saved = *self;
    uint32_t bits0 = self->bits;
    size_t start = self->start;
    size_t at = (bits0 >> 3) - start;                //  The partial byte, or the end
    size_t len0 = ((bits0 + 7) >> 3) - start;
    uint8_t *p = s_on_heap (len0)? self->pend.heap: self->pend.inl;
    uint8_t scratch[S_SCRATCH];
    memset (scratch, 0, S_SCRATCH);
    s_out_t o = {scratch, bits0 & 7};
    if (o.bits)
        scratch[0] = p[at];
    s_put_ts (self, prev, &o, ts_ms, (uint32_t) delta);
    if (self->scale == S_XOR)
        s_put_value_xor (self, prev, &o, value, self->count);
    else
        s_put_value_decimal (self, prev, &o, value);
    uint32_t bits = (bits0 & ~7u) + o.bits;
    size_t len = ((bits + 7) >> 3) - start;
    if (bits > S_MAX_BITS) {
        *self = saved;
        return TM_GORILLA_E_FULL;
    }
    if (len > s_room (len0) && !(p = s_grow (self, p, len0, len))) {
        *self = saved;
        return -1;
    }
    //  Mostly one to three bytes: a loop beats a call to memcpy.
    for (size_t i = 0, n = len - at; i < n; i++)
        p[at + i] = scratch[i];
    self->bits = bits;
    self->count++;
    return 0;
}

void
tm_gorilla_open_init (tm_gorilla_open_t *self)
{
    assert (self);
    _Static_assert (sizeof (tm_gorilla_open_t) <= 32, "an open chunk's state stays small");
    memset (self, 0, sizeof *self);
}

void
tm_gorilla_open_set_xor_only (tm_gorilla_open_t *self, bool xor_only)
{
    assert (self);
    self->xor_only = xor_only;
}

uint32_t
tm_gorilla_open_count (const tm_gorilla_open_t *self)
{
    assert (self);
    return self->count;
}

int64_t
tm_gorilla_open_first_ts (const tm_gorilla_open_t *self, int64_t last_ts)
{
    assert (self);
    return self->count? s_signed ((uint64_t) last_ts - s_span (self, last_ts)): 0;
}

uint32_t
tm_gorilla_open_bits (const tm_gorilla_open_t *self)
{
    assert (self);
    return self->bits;
}

size_t
tm_gorilla_open_heap (const tm_gorilla_open_t *self)
{
    assert (self);
    size_t len = s_pending_len (self);
    return s_on_heap (len)? s_heap_cap (len): 0;
}

const uint8_t *
tm_gorilla_open_pending (const tm_gorilla_open_t *self, uint32_t *start, size_t *size)
{
    assert (self);
    assert (start);
    assert (size);
    if (self->count == 0) {
        *start = 0;
        *size = 0;
        return NULL;
    }
    *start = self->start;
    *size = s_pending_len (self);
    return s_pending_bytes ((tm_gorilla_open_t *) self);
}

void
tm_gorilla_open_flushed (tm_gorilla_open_t *self)
{
    assert (self);
    size_t len = s_pending_len (self);
    if (s_on_heap (len)) {
        uint8_t *heap = self->pend.heap;
        memset (&self->pend, 0, sizeof self->pend);
        if (self->bits & 7)
            self->pend.inl[0] = heap[len - 1];
        free (heap);
    }
    else
    if ((self->bits & 7) && len > 1)
        self->pend.inl[0] = self->pend.inl[len - 1];
    self->start = (uint16_t) (self->bits >> 3);
    self->dirty = 0;
}

bool
tm_gorilla_open_dirty (const tm_gorilla_open_t *self)
{
    assert (self);
    return self->dirty;
}

const uint8_t *
tm_gorilla_open_data (const tm_gorilla_open_t *self, size_t *size)
{
    assert (self);
    if (self->count == 0 || self->start > 0) {
        if (size)
            *size = 0;
        return NULL;
    }
    if (size)
        *size = s_pending_len (self);
    return s_pending_bytes ((tm_gorilla_open_t *) self);
}

void
tm_gorilla_open_fini (tm_gorilla_open_t *self)
{
    assert (self);
    if (s_on_heap (s_pending_len (self)))
        free (self->pend.heap);
    bool xor_only = self->xor_only;
    memset (self, 0, sizeof *self);
    self->xor_only = xor_only;
}

//  ---------------------------------------------------------------------
//  Saved state

//  Both formats but the last point: with it (format 1, a whole encoder's),
//  without (format 2, an open chunk's: its caller saves the point).
static size_t
s_save_size (const tm_gorilla_open_t *self, bool as_flushed, bool with_last)
{
    if (self->count == 0)
        return 2;
    return S_SAVE_FIXED - (with_last? 0: 19)
           + (as_flushed? (self->bits & 7) != 0: s_pending_len (self));
}

static size_t
s_save (const tm_gorilla_open_t *self, const s_prev_t *last, int64_t last_ts, bool as_flushed,
        uint8_t *out)
{
    size_t n = 0;
    out[n++] = last? S_SAVE_FORMAT_WHOLE: S_SAVE_FORMAT_OPEN;
    out[n++] = (uint8_t) ((self->xor_only? S_SAVE_XOR_ONLY: 0) | (self->count? S_SAVE_POINTS: 0)
                          | (self->dirty && !as_flushed? S_SAVE_DIRTY: 0));
    if (self->count == 0)
        return n;
    uint32_t start = as_flushed? self->bits >> 3: self->start;
    n += tm_varint_put (out + n, self->count);
    n += tm_varint_put (out + n, self->bits);
    n += tm_varint_put (out + n, start);
    if (last)
        n += tm_varint_put (out + n, tm_zigzag (last->ts));
    n += tm_varint_put (out + n, s_span (self, last_ts));
    n += tm_varint_put (out + n, (uint64_t) self->last_delta);
    out[n++] = (uint8_t) self->scale;
    out[n++] = (uint8_t) self->hint;
    out[n++] = (uint8_t) self->lead;
    out[n++] = (uint8_t) self->trail;
    out[n++] = (uint8_t) self->rice_n;
    n += tm_varint_put (out + n, self->rice_sum);
    if (last && self->scale == S_XOR)
        for (int i = 0; i < 8; i++)
            out[n++] = (uint8_t) (last->raw >> (8 * i));
    else
    if (last)
        n += tm_varint_put (out + n, tm_zigzag (s_signed (last->raw)));
    //  The pending bytes from start: the last ones of what we hold.
    size_t len = (((size_t) self->bits + 7) >> 3) - start;
    const uint8_t *pend = s_pending_bytes ((tm_gorilla_open_t *) self);
    memcpy (out + n, pend + s_pending_len (self) - len, len);
    return n + len;
}

size_t
tm_gorilla_open_save_size (const tm_gorilla_open_t *self, bool as_flushed)
{
    assert (self);
    return s_save_size (self, as_flushed, false);
}

size_t
tm_gorilla_open_save (const tm_gorilla_open_t *self, int64_t last_ts, bool as_flushed,
                      uint8_t *out)
{
    assert (self);
    assert (out);
    return s_save (self, NULL, last_ts, as_flushed, out);
}

//  A varint at most max into *v; false if truncated, too long or larger.
static bool
s_get_bounded (const uint8_t **p, const uint8_t *end, uint64_t max, uint64_t *v)
{
    return tm_varint_get (p, end, v) == 0 && *v <= max;
}

//  Parse and check a saved state into st (zeroed), of either format; NULL,
//  or the reason. A format-1 state holds its last point, which goes to
//  *last; a format-2 one ends at *last (its caller's: ts and value set),
//  which is checked to be a point the state can go on from. Allocates
//  nothing: the pending bytes are left at *pending.
static const char *
s_load_state (tm_gorilla_open_t *st, s_prev_t *last, const uint8_t **pos, const uint8_t *end,
              const uint8_t **pending)
{
    const uint8_t *p = *pos;
    if (end - p < 2)
        return "state truncated";
    if (p[0] != S_SAVE_FORMAT_WHOLE && p[0] != S_SAVE_FORMAT_OPEN)
        return "unknown state format";
    bool whole = p[0] == S_SAVE_FORMAT_WHOLE;
    uint8_t flags = p[1];
    p += 2;
    if (flags & ~(S_SAVE_XOR_ONLY | S_SAVE_POINTS | S_SAVE_DIRTY))
        return "unknown state flags";
    st->xor_only = (flags & S_SAVE_XOR_ONLY) != 0;
    st->dirty = (flags & S_SAVE_DIRTY) != 0;
    if (!(flags & S_SAVE_POINTS)) {
        *pos = p;
        *pending = p;
        return NULL;
    }
    uint64_t count, bits, start, zz_ts = 0, span, last_delta, rice_sum, raw = 0;
    if (!s_get_bounded (&p, end, TM_GORILLA_STREAM_MAX_POINTS, &count)
        || !s_get_bounded (&p, end, S_MAX_BITS, &bits)
        || !s_get_bounded (&p, end, S_MAX_BITS / 8, &start)
        || (whole && tm_varint_get (&p, end, &zz_ts) != 0)
        || !s_get_bounded (&p, end, TM_GORILLA_STREAM_MAX_SPAN, &span)
        || !s_get_bounded (&p, end, TM_GORILLA_STREAM_MAX_DELTA, &last_delta))
        return "state truncated or out of range";
    if (end - p < 5)
        return "state truncated";
    unsigned scale = p[0], hint = p[1], lead = p[2], trail = p[3], rice_n = p[4];
    p += 5;
    if (!s_get_bounded (&p, end, UINT32_MAX, &rice_sum))
        return "state truncated or out of range";
    if (whole && scale == S_XOR) {
        if (end - p < 8)
            return "state truncated";
        for (int i = 7; i >= 0; i--)
            raw = raw << 8 | p[i];
        p += 8;
    }
    else
    if (whole && tm_varint_get (&p, end, &raw) != 0)
        return "state truncated";
    //  The chunk: a header, then at least two bits a point.
    if (count == 0 || bits < S_HEADER_MIN * 8 || (count - 1) * 2 > bits - S_HEADER_MIN * 8)
        return "count and bits disagree";
    if (start > bits / 8)
        return "flushed offset past the bits";
    //  Timestamps: each delta at least 1, the last one within the span,
    //  the first timestamp (last_ts - span) representable.
    int64_t last_ts = whole? tm_unzigzag (zz_ts): last->ts;
    if (count == 1? span != 0 || last_delta != 0
                  : last_delta == 0 || last_delta > span || span - last_delta < count - 2)
        return "timestamps out of range";
    if ((uint64_t) last_ts - (uint64_t) INT64_MIN < span)
        return "timestamps out of range";
    if (scale != S_XOR) {
        if (scale > S_SCALE_MAX)
            return "decimal scale out of range";
        if (rice_n == 0)
            return "Rice statistics out of range";
        if (whole) {
            int64_t n = tm_unzigzag (raw);
            if (n < -S_N_MAX || n > S_N_MAX)
                return "decimal value out of range";
            raw = (uint64_t) n;
        }
    }
    //  As the encoder keeps them: a scale to try, a window of at least one
    //  bit, Rice statistics of at most 31 deltas of at most S_RICE_CAP.
    if (hint > S_SCALE_MAX)
        return "scale hint out of range";
    if (lead > 31 || trail > 63 || lead + trail > 63)
        return "XOR window out of range";
    if (rice_n >= S_RICE_RESET || rice_sum > (uint64_t) rice_n * S_RICE_CAP)
        return "Rice statistics out of range";
    size_t len = (size_t) ((bits + 7) / 8 - start);
    if ((size_t) (end - p) < len)
        return "pending bytes truncated";
    if (start == 0 && p[0] != TM_GORILLA_STREAM_VERSION)
        return "unknown chunk version";
    //  Later points are OR-ed into the last byte: its padding must be clear.
    if ((bits & 7) && (p[len - 1] & (0xFF >> (bits & 7))))
        return "padding bits are not zero";
    //  The last value: the saved one's double, or the caller's, which in
    //  decimal mode must be a decimal at the scale (s_prev_raw finds its n).
    int64_t n;
    if (whole)
        *last = (s_prev_t) {.ts = last_ts, .raw = raw,
                            .value = scale == S_XOR? s_bits_double (raw):
                                     (double) s_signed (raw) / s_pow10[scale]};
    if (scale != S_XOR && (!s_decimal (last->value, scale, &n)
                           || (whole && (uint64_t) n != raw)))
        return "the last value is not a decimal at the chunk's scale";
    st->count = (uint16_t) count;
    st->bits = (uint32_t) bits;
    st->start = (uint16_t) start;
    st->first_lo = ((uint64_t) last_ts - span) & S_SPAN_MASK;
    st->last_delta = (uint32_t) last_delta;
    st->scale = scale & 31;
    st->hint = hint & 31;
    st->lead = lead & 31;
    st->trail = trail & 63;
    st->rice_n = rice_n & 31;
    st->rice_sum = (uint32_t) rice_sum;
    *pending = p;
    *pos = p + len;
    return NULL;
}

//  Give st (its fields set, pend empty) its len pending bytes. 0 or -1.
static int
s_set_pending (tm_gorilla_open_t *st, const uint8_t *bytes, size_t len)
{
    assert (len == s_pending_len (st));
    uint8_t *p = st->pend.inl;
    if (s_on_heap (len)) {
        p = malloc (s_heap_cap (len));
        if (!p)
            return -1;
        st->pend.heap = p;
    }
    memcpy (p, bytes, len);
    return 0;
}

//  Load either format into self (empty); *last as s_load_state has it.
static int
s_load (tm_gorilla_open_t *self, s_prev_t *last, const uint8_t *data, size_t size, size_t *used,
        const char **error)
{
    assert (self->count == 0);
    assert (used);
    tm_gorilla_open_t st;
    memset (&st, 0, sizeof st);
    const uint8_t *p = data, *pending = NULL;
    const char *why = data? s_load_state (&st, last, &p, data + size, &pending): "state truncated";
    if (!why && s_set_pending (&st, pending, s_pending_len (&st)) != 0)
        why = "out of memory";
    if (why) {
        if (error)
            *error = why;
        return -1;
    }
    *self = st;
    *used = (size_t) (p - data);
    return 0;
}

int
tm_gorilla_open_load (tm_gorilla_open_t *self, int64_t last_ts, double last, const uint8_t *data,
                      size_t size, size_t *used, const char **error)
{
    assert (self);
    s_prev_t want = {.ts = last_ts, .value = last};
    s_prev_t got = want;
    if (s_load (self, &got, data, size, used, error) != 0)
        return -1;
    //  A whole encoder's state ends at a point of its own: the caller's.
    if (self->count && (got.ts != want.ts
                        || s_double_bits (got.value) != s_double_bits (want.value))) {
        tm_gorilla_open_fini (self);
        if (error)
            *error = "the state does not end at the series' last point";
        return -1;
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Decoder

static int
s_fail (tm_gorilla_dec_t *self, const char *why)
{
    if (!self->error)
        self->error = why;
    return -1;
}

//  Read n bits (n <= 64) into *v; -1 if the chunk ends first.
static int
s_get (tm_gorilla_dec_t *self, unsigned n, uint64_t *v)
{
    if (n > self->end - self->pos)
        return s_fail (self, "chunk ends inside a point");
    uint64_t pos = self->pos;
    self->pos += n;
    //  Fast path: one 64-bit load when 8 bytes are there (57 bits usable).
    if (n <= 57 && (pos >> 3) + 8 <= self->end >> 3) {
        uint64_t w = s_load_be64 (self->data + (pos >> 3)) << (pos & 7);
        *v = n? w >> (64 - n): 0;
        return 0;
    }
    uint64_t out = 0;
    while (n > 0) {
        unsigned room = 8 - (unsigned) (pos & 7);
        unsigned take = n < room? n: room;
        unsigned byte = self->data[pos >> 3];
        out = out << take | ((byte >> (room - take)) & ((1u << take) - 1));
        pos += take;
        n -= take;
    }
    *v = out;
    return 0;
}

//  Count leading one bits, at most max; the zero that ends a shorter run
//  is consumed. -1 if the chunk ends first.
static int
s_get_ones (tm_gorilla_dec_t *self, unsigned max, unsigned *ones)
{
    uint64_t pos = self->pos;
    if ((pos >> 3) + 8 <= self->end >> 3) {
        //  Fast path: max < 57, so the run and its zero are in the word.
        uint64_t w = s_load_be64 (self->data + (pos >> 3)) << (pos & 7);
        unsigned n = ~w? (unsigned) __builtin_clzll (~w): 64;
        if (n >= max) {
            *ones = max;
            self->pos += max;
        }
        else {
            *ones = n;
            self->pos += n + 1;
        }
        return 0;
    }
    unsigned n = 0;
    while (n < max) {
        uint64_t bit;
        if (s_get (self, 1, &bit) != 0)
            return -1;
        if (!bit)
            break;
        n++;
    }
    *ones = n;
    return 0;
}

//  n of a decimal value, checked against the range the encoder uses.
static int
s_check_n (tm_gorilla_dec_t *self, uint64_t raw, int64_t *n)
{
    int64_t v = s_signed (raw);
    if (v < -S_N_MAX || v > S_N_MAX)
        return s_fail (self, "decimal value out of range");
    *n = v;
    return 0;
}

static void
s_dec_enter_decimal (tm_gorilla_dec_t *self, unsigned scale, int64_t n)
{
    self->scale = scale;
    self->last_scale = scale;
    self->last = (uint64_t) n;
    self->rice_sum = s_rice_start (n);
    self->rice_n = 1;
}

static int
s_get_absolute (tm_gorilla_dec_t *self, unsigned scale, double *value)
{
    uint64_t len, zz;
    int64_t n;
    if (s_get (self, 6, &len) != 0 || s_get (self, (unsigned) len + 1, &zz) != 0
        || s_check_n (self, (uint64_t) tm_unzigzag (zz), &n) != 0)
        return -1;
    s_dec_enter_decimal (self, scale, n);
    *value = (double) n / s_pow10[scale];
    return 0;
}

//  A value in XOR mode. may_switch is false right after a switch to XOR
//  mode, so a point holds at most one switch.
static int
s_get_value_xor (tm_gorilla_dec_t *self, double *value, bool may_switch)
{
    uint64_t ctl, x;
    if (s_get (self, 1, &ctl) != 0)
        return -1;
    if (ctl == 0) {
        *value = s_bits_double (self->last);
        return 0;
    }
    if (s_get (self, 1, &ctl) != 0)
        return -1;
    if (ctl == 0) {
        unsigned window = 64 - self->lead - self->trail;
        if (s_get (self, window, &x) != 0)
            return -1;
        x <<= self->trail;
    }
    else {
        uint64_t lead, len1;
        if (s_get (self, 5, &lead) != 0 || s_get (self, 6, &len1) != 0)
            return -1;
        if (lead == 31 && len1 == 63) {
            uint64_t scale;
            if (!may_switch)
                return s_fail (self, "switch right after a switch");
            if (s_get (self, 5, &scale) != 0)
                return -1;
            if (scale > S_SCALE_MAX)
                return s_fail (self, "decimal scale out of range");
            return s_get_absolute (self, (unsigned) scale, value);
        }
        unsigned len = (unsigned) len1 + 1;
        if (lead + len > 64)
            return s_fail (self, "XOR window wider than 64 bits");
        if (s_get (self, len, &x) != 0)
            return -1;
        self->lead = (unsigned) lead;
        self->trail = 64 - (unsigned) lead - len;
        x <<= self->trail;
    }
    self->last ^= x;
    *value = s_bits_double (self->last);
    return 0;
}

static int
s_get_value_decimal (tm_gorilla_dec_t *self, double *value)
{
    unsigned k = s_rice_k (self->rice_sum, self->rice_n);
    unsigned q;
    uint64_t zz, low, ctl;
    if (s_get_ones (self, S_RICE_QMAX, &q) != 0)
        return -1;
    if (q < S_RICE_QMAX) {
        if (s_get (self, k, &low) != 0)
            return -1;
        zz = (uint64_t) q << k | low;
    }
    else {
        if (s_get (self, 1, &ctl) != 0)
            return -1;
        if (ctl) {
            uint64_t scale;
            if (s_get (self, 5, &scale) != 0)
                return -1;
            if (scale == S_XOR) {
                self->last = s_double_bits ((double) s_signed (self->last)
                                            / s_pow10[self->scale]);
                self->scale = S_XOR;
                self->lead = 0;
                self->trail = 0;
                return s_get_value_xor (self, value, false);
            }
            if (scale > S_SCALE_MAX)
                return s_fail (self, "decimal scale out of range");
            return s_get_absolute (self, (unsigned) scale, value);
        }
        uint64_t len;
        if (s_get (self, 6, &len) != 0 || s_get (self, (unsigned) len + 1, &zz) != 0)
            return -1;
    }
    int64_t n;
    if (s_check_n (self, self->last + (uint64_t) tm_unzigzag (zz), &n) != 0)
        return -1;
    s_rice_update (&self->rice_sum, &self->rice_n, zz);
    self->last = (uint64_t) n;
    *value = (double) n / s_pow10[self->scale];
    return 0;
}

//  The first point (ts, mode, value) at p, not past end: 0 with the
//  state set and *pos after it, or -1.
static int
s_get_first (tm_gorilla_dec_t *self, const uint8_t **pos, const uint8_t *end)
{
    const uint8_t *p = *pos;
    uint64_t raw;
    if (tm_varint_get (&p, end, &raw) != 0)
        return s_fail (self, "first timestamp truncated");
    self->last_ts = tm_unzigzag (raw);
    if (p >= end)
        return s_fail (self, "first value truncated");
    uint8_t mode = *p++;
    if (mode == S_MODE_XOR) {
        if (end - p < 8)
            return s_fail (self, "first value truncated");
        raw = 0;
        for (int i = 7; i >= 0; i--)
            raw = raw << 8 | p[i];
        p += 8;
        self->last = raw;
        self->scale = S_XOR;
        self->first_value = s_bits_double (raw);
    }
    else
    if (mode <= S_SCALE_MAX) {
        int64_t n;
        if (tm_varint_get (&p, end, &raw) != 0)
            return s_fail (self, "first value truncated");
        if (s_check_n (self, (uint64_t) tm_unzigzag (raw), &n) != 0)
            return -1;
        s_dec_enter_decimal (self, mode, n);
        self->first_value = (double) n / s_pow10[mode];
    }
    else
        return s_fail (self, "unknown first value mode");
    *pos = p;
    return 0;
}

//  Set the count once the first point is read: every point after the
//  first takes at least two bits, so the work is bounded by the bits.
static int
s_set_count (tm_gorilla_dec_t *self, uint32_t count)
{
    if ((uint64_t) (count - 1) > (self->end - self->pos) / 2)
        return s_fail (self, "count larger than the chunk can hold");
    self->count = count;
    return 0;
}

int
tm_gorilla_dec_init (tm_gorilla_dec_t *self, const uint8_t *data, size_t size)
{
    assert (self);
    memset (self, 0, sizeof *self);
    self->data = data;
    self->version = TM_GORILLA_VERSION;
    if (!data || size < TM_GORILLA_EMPTY_SIZE)
        return s_fail (self, "chunk shorter than its header");
    if (data[0] != TM_GORILLA_VERSION)
        return s_fail (self, "unknown chunk version");
    uint32_t count = (uint32_t) data[1] | (uint32_t) data[2] << 8 | (uint32_t) data[3] << 16
                   | (uint32_t) data[4] << 24;
    if (count == 0) {
        if (size != TM_GORILLA_EMPTY_SIZE)
            return s_fail (self, "bytes after an empty chunk");
        return 0;
    }
    const uint8_t *p = data + TM_GORILLA_EMPTY_SIZE;
    if (s_get_first (self, &p, data + size) != 0)
        return -1;
    self->pos = (uint64_t) (p - data) * 8;
    self->end = (uint64_t) size * 8;
    return s_set_count (self, count);
}

int
tm_gorilla_dec_init_stream (tm_gorilla_dec_t *self, const uint8_t *data, size_t size,
                            uint32_t count, uint64_t bits)
{
    assert (self);
    memset (self, 0, sizeof *self);
    self->data = data;
    self->version = TM_GORILLA_STREAM_VERSION;
    if (count == 0 && bits == 0)
        return 0;
    if (count == 0)
        return s_fail (self, "bits for an empty chunk");
    if (!data || bits / 8 + ((bits & 7) != 0) > size)
        return s_fail (self, "chunk shorter than its bits");
    if (bits < 8)
        return s_fail (self, "chunk shorter than its header");
    if (data[0] != TM_GORILLA_STREAM_VERSION)
        return s_fail (self, "unknown chunk version");
    //  The header is whole bytes, all within the bits.
    const uint8_t *p = data + 1;
    if (s_get_first (self, &p, data + bits / 8) != 0)
        return -1;
    //  The last byte is padded with zeros (later points are OR-ed in).
    if ((bits & 7) && (data[bits / 8] & (0xFF >> (bits & 7))))
        return s_fail (self, "padding bits are not zero");
    self->pos = (uint64_t) (p - data) * 8;
    self->end = bits;
    return s_set_count (self, count);
}

int
tm_gorilla_dec_next (tm_gorilla_dec_t *self, int64_t *ts_ms, double *value)
{
    assert (self);
    if (self->error)
        return -1;
    if (self->index == self->count) {
        //  v2: the points end exactly at the bits the container gave.
        if (self->version == TM_GORILLA_STREAM_VERSION) {
            if (self->pos != self->end)
                return s_fail (self, "bits after the last point");
            return 0;
        }
        //  v1: the encoder pads the last byte with zeros and writes
        //  nothing more: anything else is damage. pos stays at the end of
        //  the last point (tm_gorilla_enc_resume continues from there).
        uint64_t rest;
        if (self->end - self->pos >= 8)
            return s_fail (self, "bytes after the last point");
        uint64_t pos = self->pos;
        if (s_get (self, (unsigned) (self->end - pos), &rest) != 0 || rest != 0)
            return s_fail (self, "padding bits are not zero");
        self->pos = pos;
        return 0;
    }
    if (self->index == 0) {
        self->index = 1;
        *ts_ms = self->last_ts;
        *value = self->first_value;
        return 1;
    }
    if (self->version == TM_GORILLA_STREAM_VERSION && self->pos == self->end)
        return s_fail (self, "chunk ends before its count");
    unsigned bucket;
    uint64_t raw = 0;
    if (s_get_ones (self, 5, &bucket) != 0)
        return -1;
    if (bucket > 0) {
        unsigned bits = s_ts_bits[bucket];
        if (s_get (self, bits, &raw) != 0)
            return -1;
        if (bits < 64 && (raw >> (bits - 1)) & 1)
            raw |= UINT64_MAX << bits;           //  sign-extend
    }
    uint64_t delta = (uint64_t) self->last_delta + raw;
    int64_t ts = s_signed ((uint64_t) self->last_ts + delta);
    if (ts <= self->last_ts)
        return s_fail (self, "timestamps do not increase");
    int rc = self->scale == S_XOR? s_get_value_xor (self, value, true)
                                 : s_get_value_decimal (self, value);
    if (rc != 0)
        return -1;
    self->last_ts = ts;
    self->last_delta = s_signed (delta);
    self->index++;
    *ts_ms = ts;
    return 1;
}

uint32_t
tm_gorilla_dec_count (const tm_gorilla_dec_t *self)
{
    assert (self);
    return self->count;
}

//  ---------------------------------------------------------------------
//  Resuming a v1 chunk

//  Into self (empty), with *last its last point.
static int
s_resume (tm_gorilla_open_t *self, s_prev_t *last, const uint8_t *data, size_t size,
          const char **error)
{
    assert (self->count == 0);
    tm_gorilla_dec_t dec;
    int64_t first_ts = 0, ts = 0;
    double v = 0;
    int rc;
    tm_gorilla_dec_init (&dec, data, size);
    while ((rc = tm_gorilla_dec_next (&dec, &ts, &v)) == 1) {
        if (dec.index == 1)
            first_ts = ts;
        *last = (s_prev_t) {.ts = ts, .raw = dec.last, .value = v};
    }
    if (rc != 0) {
        if (error)
            *error = dec.error;
        return -1;
    }
    if (dec.count == 0)
        return 0;
    //  The same bit stream without the count: 32 bits fewer. A v1 chunk
    //  ends in its last point's byte, so the v2 one is size - 4 bytes.
    uint64_t bits = dec.pos - 32;
    if (dec.count > TM_GORILLA_STREAM_MAX_POINTS || bits > S_MAX_BITS
        || (uint64_t) dec.last_ts - (uint64_t) first_ts > TM_GORILLA_STREAM_MAX_SPAN
        || dec.last_delta < 0 || dec.last_delta > TM_GORILLA_STREAM_MAX_DELTA) {
        if (error)
            *error = "chunk beyond the limits of a v2 chunk";
        return -1;
    }
    tm_gorilla_open_t st;
    memset (&st, 0, sizeof st);
    st.xor_only = self->xor_only;
    st.count = (uint16_t) dec.count;
    st.bits = (uint32_t) bits;
    st.first_lo = (uint64_t) first_ts & S_SPAN_MASK;
    st.last_delta = (uint32_t) dec.last_delta;
    st.dirty = 1;                  //  nothing of it is stored as a v2 chunk yet
    st.rice_sum = dec.rice_sum;
    st.rice_n = dec.rice_n & 31;
    st.scale = dec.scale & 31;
    st.hint = dec.last_scale & 31;
    st.lead = dec.lead & 31;
    st.trail = dec.trail & 63;
    //  Going on means finding the last n again from the last value: a
    //  chunk whose n does not come back so (no encoder of ours wrote it)
    //  stays as it is, closed.
    if (st.scale != S_XOR && s_prev_raw (&st, last->value) != last->raw) {
        if (error)
            *error = "chunk's last value is not the decimal its code says";
        return -1;
    }
    size_t len = s_pending_len (&st);
    assert (len == size - 4);
    uint8_t *p = st.pend.inl;
    if (s_on_heap (len)) {
        p = malloc (s_heap_cap (len));
        if (!p) {
            if (error)
                *error = "out of memory";
            return -1;
        }
        st.pend.heap = p;
    }
    p[0] = TM_GORILLA_STREAM_VERSION;
    memcpy (p + 1, data + TM_GORILLA_EMPTY_SIZE, len - 1);
    *self = st;
    return 0;
}

int
tm_gorilla_open_resume (tm_gorilla_open_t *self, int64_t last_ts, double last,
                        const uint8_t *data, size_t size, const char **error)
{
    assert (self);
    s_prev_t got = {0};
    if (s_resume (self, &got, data, size, error) != 0)
        return -1;
    if (self->count && (got.ts != last_ts || s_double_bits (got.value) != s_double_bits (last))) {
        tm_gorilla_open_fini (self);
        if (error)
            *error = "the chunk does not end at the series' last point";
        return -1;
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  A whole encoder: an open chunk and its last point

void
tm_gorilla_enc_init (tm_gorilla_enc_t *self)
{
    assert (self);
    _Static_assert (sizeof (tm_gorilla_enc_t) <= 48, "the encoder state stays small");
    memset (self, 0, sizeof *self);
}

void
tm_gorilla_enc_set_xor_only (tm_gorilla_enc_t *self, bool xor_only)
{
    assert (self);
    tm_gorilla_open_set_xor_only (&self->open, xor_only);
}

int
tm_gorilla_enc_append (tm_gorilla_enc_t *self, int64_t ts_ms, double value)
{
    assert (self);
    int rc = tm_gorilla_open_append (&self->open, self->last_ts, self->last, ts_ms, value);
    if (rc == 0) {
        self->last_ts = ts_ms;
        self->last = value;
    }
    return rc;
}

uint32_t
tm_gorilla_enc_count (const tm_gorilla_enc_t *self)
{
    assert (self);
    return self->open.count;
}

int64_t
tm_gorilla_enc_first_ts (const tm_gorilla_enc_t *self)
{
    assert (self);
    return tm_gorilla_open_first_ts (&self->open, self->last_ts);
}

int64_t
tm_gorilla_enc_last_ts (const tm_gorilla_enc_t *self)
{
    assert (self);
    return self->open.count? self->last_ts: 0;
}

uint32_t
tm_gorilla_enc_bits (const tm_gorilla_enc_t *self)
{
    assert (self);
    return self->open.bits;
}

size_t
tm_gorilla_enc_heap (const tm_gorilla_enc_t *self)
{
    assert (self);
    return tm_gorilla_open_heap (&self->open);
}

const uint8_t *
tm_gorilla_enc_pending (const tm_gorilla_enc_t *self, uint32_t *start, size_t *size)
{
    assert (self);
    return tm_gorilla_open_pending (&self->open, start, size);
}

void
tm_gorilla_enc_flushed (tm_gorilla_enc_t *self)
{
    assert (self);
    tm_gorilla_open_flushed (&self->open);
}

bool
tm_gorilla_enc_dirty (const tm_gorilla_enc_t *self)
{
    assert (self);
    return self->open.dirty;
}

const uint8_t *
tm_gorilla_enc_data (const tm_gorilla_enc_t *self, size_t *size)
{
    assert (self);
    return tm_gorilla_open_data (&self->open, size);
}

size_t
tm_gorilla_enc_save_size (const tm_gorilla_enc_t *self, bool as_flushed)
{
    assert (self);
    return s_save_size (&self->open, as_flushed, true);
}

size_t
tm_gorilla_enc_save (const tm_gorilla_enc_t *self, bool as_flushed, uint8_t *out)
{
    assert (self);
    assert (out);
    s_prev_t last = {.ts = self->last_ts, .raw = s_prev_raw (&self->open, self->last),
                     .value = self->last};
    return s_save (&self->open, &last, self->last_ts, as_flushed, out);
}

int
tm_gorilla_enc_load (tm_gorilla_enc_t *self, const uint8_t *data, size_t size, size_t *used,
                     const char **error)
{
    assert (self);
    //  A whole encoder has nothing to go on from but what the state holds.
    if (data && size > 0 && data[0] == S_SAVE_FORMAT_OPEN) {
        if (error)
            *error = "state saved without its last point";
        return -1;
    }
    s_prev_t last = {0};
    if (s_load (&self->open, &last, data, size, used, error) != 0)
        return -1;
    self->last_ts = last.ts;
    self->last = last.value;
    return 0;
}

int
tm_gorilla_enc_resume (tm_gorilla_enc_t *self, const uint8_t *data, size_t size,
                       const char **error)
{
    assert (self);
    s_prev_t last = {0};
    if (s_resume (&self->open, &last, data, size, error) != 0)
        return -1;
    self->last_ts = last.ts;
    self->last = last.value;
    return 0;
}

void
tm_gorilla_enc_fini (tm_gorilla_enc_t *self)
{
    assert (self);
    tm_gorilla_open_fini (&self->open);
    self->last_ts = 0;
    self->last = 0;
}
