/*  tm_gorilla - compressed chunks of one series' history (ts_ms, value)

    The format is described in tm_gorilla.h. Bits are written MSB first by
    OR-ing into a zeroed buffer that always has room for the largest point
    (S_POINT_MAX_BYTES), so append checks capacity once per point, not
    once per field. The decoder checks every read against the end.
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
#define S_HEADER_MAX 25            //  1 + 4 + 10 (ts varint) + 1 + 9 (8 raw or n varint)
#define S_POINT_MAX_BYTES 21       //  tcode <= 69 bits, vcode <= 95 bits
#define S_SCRATCH 32               //  A point or the header, from a partial byte, plus 8 for word writes

//  Powers of ten a double holds exactly (the decimal scales).
static const double s_pow10[S_SCALE_MAX + 1] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

//  Delta-of-delta buckets: payload bits after 0..5 leading ones.
static const unsigned s_ts_bits[6] = {0, 7, 12, 20, 32, 64};

static const uint8_t s_empty_chunk[TM_GORILLA_EMPTY_SIZE] = {TM_GORILLA_VERSION, 0, 0, 0, 0};

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

//  Is v exactly n / 10^scale for an integer |n| <= 2^53? Bit-for-bit, so
//  -0.0, NaN and values with more digits than the scale are refused.
static bool
s_decimal (double v, unsigned scale, int64_t *n)
{
    double x = v * s_pow10[scale];
    if (!(x > -(double) S_N_MAX && x < (double) S_N_MAX))
        return false;
    int64_t m = (int64_t) (x < 0? x - 0.5: x + 0.5);
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

//  ---------------------------------------------------------------------
//  Encoder

//  Allocation sizes: what a malloc chunk holds (glibc and musl: a
//  multiple of 16 less its 8-byte size word, so asking for less buys
//  nothing). A chunk starts at the size of its first point.
static size_t
s_alloc_size (size_t need)
{
    return ((need + 8 + 15) & ~(size_t) 15) - 8;
}

//  The size an allocation of size bytes grows to for need: a quarter
//  more, at least 32 bytes. Growing by exactly what a point needs would
//  realloc every ten points or so, and a realloc, which copies the chunk
//  to a new place, costs as much as encoding a few points: measured in
//  tm_twins_apply, 16-byte steps added 45 instructions per reading.
static size_t
s_grow_size (size_t size, size_t need)
{
    size_t want = size + (size / 4 > 32? size / 4: 32);
    return s_alloc_size (want > need? want: need);
}

//  Make room for a chunk of need bytes; 0, or -1 if memory is short.
static int
s_reserve (tm_gorilla_enc_t *self, size_t need)
{
    if (need <= self->cap)
        return 0;
    size_t cap = self->buf? s_grow_size (self->cap, need): s_alloc_size (need);
    uint8_t *grown = realloc (self->buf, cap);
    if (!grown)
        return -1;
    self->buf = grown;
    self->cap = (uint32_t) cap;
    return 0;
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

//  Write v, which has no bits above the low n (n <= 64), most significant
//  first. One 64-bit read-modify-write of the zeroed tail: points are
//  written into a scratch buffer (s_encode_point) with 8 bytes to spare
//  beyond the largest.
static void
s_put (tm_gorilla_enc_t *self, uint64_t v, unsigned n)
{
    if (n == 0)
        return;
    unsigned off = self->bits & 7;
    if (off + n > 64) {
        s_put (self, v >> 32, n - 32);
        s_put (self, v & 0xFFFFFFFFu, 32);
        return;
    }
    uint8_t *p = self->buf + (self->bits >> 3);
    s_store_be64 (p, s_load_be64 (p) | v << (64 - off - n));
    self->bits += n;
}

static void
s_put_ones (tm_gorilla_enc_t *self, unsigned n)
{
    s_put (self, n == 64? UINT64_MAX: ((uint64_t) 1 << n) - 1, n);
}


//  The header's little-endian count: one load or store (it is read and
//  written on every append).
static void
s_put_count (uint8_t *buf, uint32_t count)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    count = __builtin_bswap32 (count);
#endif
    memcpy (buf + 1, &count, sizeof count);
}

static uint32_t
s_get_count (const uint8_t *buf)
{
    uint32_t count;
    memcpy (&count, buf + 1, sizeof count);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    count = __builtin_bswap32 (count);
#endif
    return count;
}

static void
s_rice_reset (tm_gorilla_enc_t *self, int64_t n)
{
    self->rice_sum = s_rice_start (n);
    self->rice_n = 1;
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

//  A value written whole after a switch to decimal mode.
static void
s_put_absolute (tm_gorilla_enc_t *self, int64_t n)
{
    uint64_t zz = tm_zigzag (n);
    unsigned len = s_bitlen (zz);
    s_put (self, len - 1, 6);
    s_put (self, zz, len);
}

static void
s_enter_decimal (tm_gorilla_enc_t *self, unsigned scale, int64_t n)
{
    self->scale = scale & 31;
    self->hint = scale & 31;
    self->last = (uint64_t) n;
    s_rice_reset (self, n);
}

//  The XOR code of a value in XOR mode (not a switch).
static void
s_put_xor (tm_gorilla_enc_t *self, uint64_t bits)
{
    uint64_t x = bits ^ self->last;
    self->last = bits;
    if (x == 0) {
        s_put (self, 0, 1);
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
        s_put (self, 2, 2);
        s_put (self, x >> self->trail, window);
        return;
    }
    s_put (self, 3, 2);
    s_put (self, lead, 5);
    s_put (self, len - 1, 6);
    s_put (self, x >> trail, len);
    self->lead = lead & 31;
    self->trail = trail & 63;
}

//  Timestamp code; the caller has checked ts_ms > last_ts.
static void
s_put_ts (tm_gorilla_enc_t *self, int64_t ts_ms)
{
    uint64_t delta = (uint64_t) ts_ms - (uint64_t) self->last_ts;
    int64_t dod = s_signed (delta - (uint64_t) self->last_delta);
    self->last_ts = ts_ms;
    self->last_delta = s_signed (delta);
    if (dod == 0) {
        s_put (self, 0, 1);
        return;
    }
    for (unsigned b = 1; b < 5; b++) {
        unsigned nb = s_ts_bits[b];
        int64_t half = (int64_t) 1 << (nb - 1);
        if (dod >= -half && dod < half) {
            //  b ones, a zero, nb payload bits: one write (<= 37 bits).
            uint64_t prefix = (((uint64_t) 1 << b) - 1) << 1;
            s_put (self, prefix << nb | ((uint64_t) dod & (((uint64_t) 1 << nb) - 1)), b + 1 + nb);
            return;
        }
    }
    s_put_ones (self, 5);
    s_put (self, (uint64_t) dod, 64);
}

//  Value code in decimal mode.
static void
s_put_value_decimal (tm_gorilla_enc_t *self, double value)
{
    int64_t n;
    if (s_decimal (value, self->scale, &n)) {
        uint64_t zz = tm_zigzag (n - (int64_t) self->last);
        unsigned rice_n = self->rice_n;
        unsigned k = s_rice_k (self->rice_sum, rice_n);
        uint64_t q = zz >> k;
        if (q < S_RICE_QMAX && q + 1 + k <= 64) {
            //  q ones, a zero, k low bits: one write.
            uint64_t low = zz & (((uint64_t) 1 << k) - 1);
            s_put (self, (((uint64_t) 1 << q) - 1) << (k + 1) | low, (unsigned) q + 1 + k);
        }
        else {
            s_put_ones (self, S_RICE_QMAX);
            s_put (self, 0, 1);
            unsigned len = s_bitlen (zz);
            s_put (self, len - 1, 6);
            s_put (self, zz, len);
        }
        uint32_t sum = self->rice_sum;
        s_rice_update (&sum, &rice_n, zz);
        self->rice_sum = sum;
        self->rice_n = rice_n & 63;
        self->last = (uint64_t) n;
        return;
    }
    s_put_ones (self, S_RICE_QMAX);
    s_put (self, 1, 1);
    int scale = s_find_scale (value, &n);
    if (scale >= 0) {
        s_put (self, (uint64_t) scale, 5);
        s_put_absolute (self, n);
        s_enter_decimal (self, (unsigned) scale, n);
        return;
    }
    //  Not a decimal at any scale: XOR from the previous value's bits,
    //  with a fresh (full) window.
    s_put (self, S_XOR, 5);
    self->last = s_double_bits ((double) s_signed (self->last) / s_pow10[self->scale]);
    self->scale = S_XOR;
    self->lead = 0;
    self->trail = 0;
    s_put_xor (self, s_double_bits (value));
}

//  Value code in XOR mode: back to decimal mode when the value allows.
//  The hinted scale is tried on every point, all scales on every eighth
//  (a full search is up to 23 multiply-divides, too dear per point for a
//  series of full-precision floats).
static void
s_put_value_xor (tm_gorilla_enc_t *self, double value, uint32_t index)
{
    uint64_t bits = s_double_bits (value);
    if (bits != self->last && !self->xor_only) {
        int64_t n;
        int scale = -1;
        if (s_decimal (value, self->hint, &n))
            scale = (int) self->hint;
        else
        if ((index & 7) == 0)
            scale = s_find_scale (value, &n);
        if (scale >= 0) {
            s_put (self, 0x1FFF, 13);       //  11 11111 111111: the switch code
            s_put (self, (uint64_t) scale, 5);
            s_put_absolute (self, n);
            s_enter_decimal (self, (unsigned) scale, n);
            return;
        }
    }
    s_put_xor (self, bits);
}

//  The first point: the header, with the first value whole, into p
//  (S_SCRATCH bytes); returns its bytes.
static size_t
s_encode_first (tm_gorilla_enc_t *self, uint8_t *p, int64_t ts_ms, double value)
{
    size_t len = 0;
    p[len++] = TM_GORILLA_VERSION;
    s_put_count (p, 1);
    len += 4;
    len += tm_varint_put (p + len, tm_zigzag (ts_ms));
    int64_t n;
    int scale = self->xor_only? -1: s_find_scale (value, &n);
    if (scale >= 0) {
        p[len++] = (uint8_t) scale;
        len += tm_varint_put (p + len, tm_zigzag (n));
        s_enter_decimal (self, (unsigned) scale, n);
    }
    else {
        p[len++] = S_MODE_XOR;
        uint64_t bits = s_double_bits (value);
        for (int i = 0; i < 8; i++)
            p[len++] = (uint8_t) (bits >> (8 * i));
        self->last = bits;
        self->scale = S_XOR;
        self->hint = 0;
        self->lead = 0;
        self->trail = 0;
    }
    self->last_ts = ts_ms;
    self->last_delta = 0;
    return len;
}

//  A later point into scratch (S_SCRATCH bytes), starting with the
//  chunk's last partial byte: the chunk then grows by exactly the bytes
//  the point took, where writing in place needed room for the largest
//  point (21 bytes; most take one or two) kept free in every open chunk.
//  Returns the bits in scratch.
static unsigned
s_encode_point (tm_gorilla_enc_t *self, uint8_t *scratch, int64_t ts_ms, double value,
                uint32_t index)
{
    uint8_t *buf = self->buf;
    uint32_t bits = self->bits;
    memset (scratch, 0, S_SCRATCH);
    if (bits & 7)
        scratch[0] = buf[bits >> 3];
    self->buf = scratch;
    self->bits = bits & 7;
    s_put_ts (self, ts_ms);
    if (self->scale == S_XOR)
        s_put_value_xor (self, value, index);
    else
        s_put_value_decimal (self, value);
    unsigned n = self->bits;
    self->buf = buf;
    self->bits = bits;
    return n;
}

//  Encode a point into scratch: 0 with *bits the chunk's bits with it
//  (the state has moved on, buf and bits not yet), or an outcome with
//  nothing changed.
static int
s_encode (tm_gorilla_enc_t *self, int64_t ts_ms, double value, uint8_t *scratch, uint32_t *bits)
{
    if (!self->buf) {
        *bits = (uint32_t) s_encode_first (self, scratch, ts_ms, value) * 8;
        return 0;
    }
    if (ts_ms <= self->last_ts)
        return TM_GORILLA_E_ORDER;
    uint32_t count = s_get_count (self->buf);
    if (count == UINT32_MAX
        || (size_t) self->bits / 8 + 1 + S_POINT_MAX_BYTES > TM_GORILLA_MAX_BYTES)
        return TM_GORILLA_E_FULL;
    *bits = (self->bits & ~7u) + s_encode_point (self, scratch, ts_ms, value, count);
    return 0;
}

//  Copy an encoded point into the buffer, which has room, and count it.
static void
s_commit (tm_gorilla_enc_t *self, const uint8_t *scratch, uint32_t bits, bool first)
{
    size_t at = first? 0: self->bits >> 3;
    size_t n = ((size_t) bits + 7) / 8 - at;
    //  Mostly one to three bytes: a loop beats a call to memcpy.
    for (size_t i = 0; i < n; i++)
        self->buf[at + i] = scratch[i];
    if (!first)
        s_put_count (self->buf, s_get_count (self->buf) + 1);
    self->bits = bits;
}

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
    self->xor_only = xor_only;
}

int
tm_gorilla_enc_append (tm_gorilla_enc_t *self, int64_t ts_ms, double value)
{
    assert (self);
    uint8_t scratch[S_SCRATCH];
    tm_gorilla_enc_t saved = *self;
    bool first = !self->buf;
    uint32_t bits;
    int rc = s_encode (self, ts_ms, value, scratch, &bits);
    if (rc != 0)
        return rc;
    if (s_reserve (self, ((size_t) bits + 7) / 8) != 0) {
        *self = saved;
        return -1;
    }
    s_commit (self, scratch, bits, first);
    return 0;
}

const uint8_t *
tm_gorilla_enc_data (const tm_gorilla_enc_t *self, size_t *size)
{
    assert (self);
    if (!self->buf) {
        if (size)
            *size = sizeof s_empty_chunk;
        return s_empty_chunk;
    }
    if (size)
        *size = ((size_t) self->bits + 7) / 8;
    return self->buf;
}

uint32_t
tm_gorilla_enc_count (const tm_gorilla_enc_t *self)
{
    assert (self);
    return self->buf? s_get_count (self->buf): 0;
}

int64_t
tm_gorilla_enc_first_ts (const tm_gorilla_enc_t *self)
{
    assert (self);
    if (!self->buf)
        return 0;
    //  The header's varint, written by this encoder: at most 10 bytes.
    uint64_t v = 0;
    const uint8_t *p = self->buf + TM_GORILLA_EMPTY_SIZE;
    for (unsigned shift = 0; shift < 70; shift += 7, p++) {
        v |= (uint64_t) (*p & 0x7F) << shift;
        if (!(*p & 0x80))
            break;
    }
    return tm_unzigzag (v);
}

int64_t
tm_gorilla_enc_last_ts (const tm_gorilla_enc_t *self)
{
    assert (self);
    return self->buf? self->last_ts: 0;
}

size_t
tm_gorilla_enc_heap (const tm_gorilla_enc_t *self)
{
    assert (self);
    return self->buf? self->cap: 0;
}

void
tm_gorilla_enc_fini (tm_gorilla_enc_t *self)
{
    assert (self);
    free (self->buf);
    bool xor_only = self->xor_only;
    memset (self, 0, sizeof *self);
    self->xor_only = xor_only;
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

int
tm_gorilla_dec_init (tm_gorilla_dec_t *self, const uint8_t *data, size_t size)
{
    assert (self);
    memset (self, 0, sizeof *self);
    self->data = data;
    if (!data || size < TM_GORILLA_EMPTY_SIZE)
        return s_fail (self, "chunk shorter than its header");
    if (data[0] != TM_GORILLA_VERSION)
        return s_fail (self, "unknown chunk version");
    uint32_t count = s_get_count (data);
    if (count == 0) {
        if (size != TM_GORILLA_EMPTY_SIZE)
            return s_fail (self, "bytes after an empty chunk");
        return 0;
    }
    const uint8_t *p = data + TM_GORILLA_EMPTY_SIZE, *end = data + size;
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
    self->pos = (uint64_t) (p - data) * 8;
    self->end = (uint64_t) size * 8;
    //  Every point after the first takes at least two bits.
    if ((uint64_t) (count - 1) > (self->end - self->pos) / 2)
        return s_fail (self, "count larger than the chunk can hold");
    self->count = count;
    return 0;
}

int
tm_gorilla_dec_next (tm_gorilla_dec_t *self, int64_t *ts_ms, double *value)
{
    assert (self);
    if (self->error)
        return -1;
    if (self->index == self->count) {
        //  The encoder pads the last byte with zeros and writes nothing
        //  more: anything else is damage.
        //  pos stays at the end of the last point (tm_gorilla_enc_resume
        //  continues from there).
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

//  Decode a stored chunk to its end, for resuming: 0 with *dec at its
//  last point, or -1 (*error says why, if error is not NULL).
static int
s_resume_scan (tm_gorilla_dec_t *dec, const uint8_t *data, size_t size, const char **error)
{
    int64_t ts;
    double v;
    int rc;
    tm_gorilla_dec_init (dec, data, size);
    while ((rc = tm_gorilla_dec_next (dec, &ts, &v)) == 1)
        ;
    if (rc == 0 && size > TM_GORILLA_MAX_BYTES) {
        dec->error = "chunk larger than an encoder builds";
        rc = -1;
    }
    if (rc != 0 && error)
        *error = dec->error;
    return rc;
}

//  The state the encoder had after the chunk's last point (all but buf,
//  cap and xor_only).
static void
s_resume_state (tm_gorilla_enc_t *self, const tm_gorilla_dec_t *dec)
{
    //  The end of the last point, not of the padded last byte.
    self->bits = (uint32_t) dec->pos;
    self->last_ts = dec->last_ts;
    self->last_delta = dec->last_delta;
    self->last = dec->last;
    self->rice_sum = dec->rice_sum;
    self->rice_n = dec->rice_n & 63;
    self->scale = dec->scale & 31;
    self->hint = dec->last_scale & 31;
    self->lead = dec->lead & 31;
    self->trail = dec->trail & 63;
}

int
tm_gorilla_enc_resume (tm_gorilla_enc_t *self, const uint8_t *data, size_t size,
                       const char **error)
{
    assert (self);
    assert (!self->buf);
    tm_gorilla_dec_t dec;
    if (s_resume_scan (&dec, data, size, error) != 0)
        return -1;
    if (dec.count == 0)
        return 0;
    if (s_reserve (self, size) != 0) {
        if (error)
            *error = "out of memory";
        return -1;
    }
    memcpy (self->buf, data, size);
    s_resume_state (self, &dec);
    return 0;
}

