/*  test_gorilla - unit tests for tm_gorilla, the history chunk codec

    A chunk is the only copy of a reading once the log is trimmed, so the
    codec is checked for exact round trips (bit for bit, including -0.0,
    denormals, NaN payloads) over every shape of series it will meet, at
    every prefix, and as the worker stores an open chunk: in pieces, each
    flushed at any moment (also twice in a row, or with nothing new), laid
    over the previous ones, with the encoder's state saved and loaded in
    between, and up to each of a v2 chunk's limits. v1 chunks, which stores
    written before v2 hold, must still decode and resume. As a decoder of
    untrusted bytes it is fed every truncation and every single-bit
    corruption of real chunks of both versions, hand-made malformed headers
    and streams for each error it reports, and wrong counts and bit
    lengths; loading a saved state gets every truncation and corruption of
    real states, then must append safely.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm_gorilla.h"
#include "tm_varint.h"

#define T0 1700000000000LL         //  A plausible first timestamp (Nov 2023)

typedef struct {
    int64_t *ts;                   //  Timestamps, strictly increasing
    double *v;                     //  Values
    size_t n;                      //  Points
} series_t;

static uint64_t s_rng = 0x9E3779B97F4A7C15ULL;

static uint64_t
s_rand (void)
{
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return s_rng * 0x2545F4914F6CDD1DULL;
}

static double
s_uniform (void)
{
    return (double) (s_rand () >> 11) * 0x1.0p-53;
}

static double
s_gauss (void)
{
    return (s_uniform () + s_uniform () + s_uniform () + s_uniform () - 2.0) * 1.7320508;
}

static series_t
s_series_new (size_t n)
{
    series_t s = {calloc (n? n: 1, sizeof (int64_t)), calloc (n? n: 1, sizeof (double)), n};
    assert_non_null (s.ts);
    assert_non_null (s.v);
    return s;
}

static void
s_series_free (series_t *s)
{
    free (s->ts);
    free (s->v);
}

static uint64_t
s_bits (double v)
{
    uint64_t u;
    memcpy (&u, &v, sizeof u);
    return u;
}

static double
s_from_bits (uint64_t u)
{
    double v;
    memcpy (&v, &u, sizeof v);
    return v;
}

static size_t
s_bytes_of (uint64_t bits)
{
    return (size_t) ((bits + 7) / 8);
}

//  A mixed series: decimals, full-precision floats, jitter, a gap.
static series_t
s_mixed_series (size_t n)
{
    series_t s = s_series_new (n);
    int64_t ts = T0;
    for (size_t i = 0; i < n; i++) {
        ts += i % 97 == 0? 3600000: 5000 + (int64_t) (s_rand () % 3000);
        s.ts[i] = ts;
        s.v[i] = i % 100 < 70? round (s_gauss () * 1000) / 100
               : i % 100 < 90? s_gauss (): (double) (i % 5);
    }
    return s;
}

//  Check the next points of a started decoder, then its end.
static void
s_expect_points (tm_gorilla_dec_t *dec, const series_t *s, size_t first, size_t n)
{
    assert_int_equal (tm_gorilla_dec_count (dec), n);
    int64_t ts;
    double v;
    for (size_t i = 0; i < n; i++) {
        int rc = tm_gorilla_dec_next (dec, &ts, &v);
        if (rc != 1)
            fail_msg ("point %zu of %zu: rc=%d error=%s", i, n, rc,
                      dec->error? dec->error: "-");
        assert_int_equal (ts, s->ts[first + i]);
        if (s_bits (v) != s_bits (s->v[first + i]))
            fail_msg ("point %zu: got %.17g want %.17g", i, v, s->v[first + i]);
    }
    int rc = tm_gorilla_dec_next (dec, &ts, &v);
    if (rc != 0)
        fail_msg ("after %zu points: rc=%d error=%s", n, rc, dec->error? dec->error: "-");
    assert_int_equal (tm_gorilla_dec_next (dec, &ts, &v), 0);
}

//  Decode a v2 chunk and expect exactly points [first, first + n).
static void
s_expect_stream (const uint8_t *data, size_t size, uint64_t bits, const series_t *s,
                 size_t first, size_t n)
{
    tm_gorilla_dec_t dec;
    int rc = tm_gorilla_dec_init_stream (&dec, data, size, (uint32_t) n, bits);
    if (rc != 0)
        fail_msg ("init_stream: %s", dec.error? dec.error: "-");
    s_expect_points (&dec, s, first, n);
}

//  Decode a v1 chunk and expect exactly these points.
static void
s_expect_decodes (const uint8_t *data, size_t size, const series_t *s, size_t n)
{
    tm_gorilla_dec_t dec;
    int rc = tm_gorilla_dec_init (&dec, data, size);
    if (rc != 0)
        fail_msg ("init: %s", dec.error? dec.error: "-");
    s_expect_points (&dec, s, 0, n);
}

//  The v1 chunk of the same points as a v2 chunk: its count after the
//  version byte (the header is whole bytes, the bit stream the same).
//  The caller frees it.
static uint8_t *
s_v1_of (const uint8_t *v2, size_t size, uint32_t count, size_t *v1_size)
{
    *v1_size = count? size + 4: 5;
    uint8_t *v1 = malloc (*v1_size);
    assert_non_null (v1);
    v1[0] = TM_GORILLA_VERSION;
    for (int i = 0; i < 4; i++)
        v1[1 + i] = (uint8_t) (count >> (8 * i));
    if (count)
        memcpy (v1 + 5, v2 + 1, size - 1);
    return v1;
}

//  Encode points [first, s->n) into enc, empty, until the chunk is full
//  (TM_GORILLA_E_FULL, which must leave it unchanged); returns the end.
static size_t
s_fill (tm_gorilla_enc_t *enc, const series_t *s, size_t first)
{
    for (size_t i = first; i < s->n; i++) {
        uint32_t bits = tm_gorilla_enc_bits (enc);
        int rc = tm_gorilla_enc_append (enc, s->ts[i], s->v[i]);
        if (rc == TM_GORILLA_E_FULL && i > first) {
            assert_int_equal (tm_gorilla_enc_bits (enc), bits);
            assert_int_equal (tm_gorilla_enc_count (enc), i - first);
            return i;
        }
        assert_int_equal (rc, 0);
    }
    return s->n;
}

//  Encode in chunks (a new one at E_FULL), check the bookkeeping and the
//  round trip of each, as v2 and as the same chunk in v1; returns the
//  bytes. *chunks gets the number of chunks if not NULL.
static size_t
s_round_trip_chunks (const series_t *s, bool xor_only, size_t *chunks)
{
    size_t total = 0, nchunks = 0;
    for (size_t first = 0, end; first < s->n || (s->n == 0 && nchunks == 0); first = end) {
        tm_gorilla_enc_t enc;
        tm_gorilla_enc_init (&enc);
        tm_gorilla_enc_set_xor_only (&enc, xor_only);
        end = s_fill (&enc, s, first);
        size_t n = end - first;
        assert_int_equal (tm_gorilla_enc_count (&enc), n);
        size_t size;
        const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
        uint32_t bits = tm_gorilla_enc_bits (&enc);
        assert_int_equal (size, s_bytes_of (bits));
        if (n) {
            assert_non_null (data);
            assert_int_equal (data[0], TM_GORILLA_STREAM_VERSION);
            assert_int_equal (tm_gorilla_enc_first_ts (&enc), s->ts[first]);
            assert_int_equal (tm_gorilla_enc_last_ts (&enc), s->ts[end - 1]);
            //  The heap holds the chunk and at most a growth step more (a
            //  quarter, at least 32 bytes); nothing while it fits inline.
            size_t heap = tm_gorilla_enc_heap (&enc);
            if (size <= TM_GORILLA_INLINE)
                assert_int_equal (heap, 0);
            else
                assert_true (heap >= size && heap < size + (size / 4 > 32? size / 4: 32) + 8);
        }
        else {
            assert_null (data);
            assert_int_equal (bits, 0);
        }
        s_expect_stream (data, size, bits, s, first, n);
        //  The pending bytes of an unflushed chunk are the whole chunk.
        uint32_t start;
        size_t psize;
        const uint8_t *pending = tm_gorilla_enc_pending (&enc, &start, &psize);
        assert_true (pending == data && start == 0 && psize == size);
        //  The same chunk as v1 decodes to the same points.
        size_t v1_size;
        uint8_t *v1 = s_v1_of (data, size, (uint32_t) n, &v1_size);
        s_expect_decodes (v1, v1_size, &(series_t) {s->ts + first, s->v + first, n}, n);
        free (v1);
        tm_gorilla_enc_fini (&enc);
        assert_int_equal (tm_gorilla_enc_count (&enc), 0);
        assert_int_equal (tm_gorilla_enc_bits (&enc), 0);
        assert_int_equal (tm_gorilla_enc_heap (&enc), 0);
        total += size;
        nchunks++;
    }
    if (chunks)
        *chunks = nchunks;
    return total;
}

//  One chunk, which must hold every point.
static size_t
s_round_trip (const series_t *s, bool xor_only)
{
    size_t chunks;
    size_t size = s_round_trip_chunks (s, xor_only, &chunks);
    assert_int_equal (chunks, 1);
    return size;
}

//  Both value modes, same points.
static size_t
s_check (const series_t *s)
{
    s_round_trip (s, true);
    return s_round_trip (s, false);
}

static void
s_regular_ts (series_t *s, int64_t step)
{
    for (size_t i = 0; i < s->n; i++)
        s->ts[i] = T0 + (int64_t) i * step;
}

//  ---------------------------------------------------------------------
//  The store a worker keeps of one open chunk: pieces laid over each
//  other at their start byte, as the lead's merge operator does.

typedef struct {
    uint8_t *bytes;                //  The chunk's bytes stored so far
    size_t size;                   //  ceil (bits / 8)
    uint32_t bits;                 //  Bits stored
    uint32_t count;                //  Points stored
} store_t;

//  Lay pending bytes over the stored ones at start (a copy of both).
static uint8_t *
s_overlay (const store_t *st, const uint8_t *pending, uint32_t start, size_t psize,
           size_t *size)
{
    //  The piece starts at the stored partial byte, or right after the
    //  stored bytes: never past them, never before their last byte.
    assert_true (start == st->bits / 8);
    assert_true (start <= st->size);
    size_t whole = psize? start + psize: st->size;
    uint8_t *out = malloc (whole? whole: 1);
    assert_non_null (out);
    if (st->size)
        memcpy (out, st->bytes, st->size);
    if (psize) {
        //  The repeated byte keeps the bits stored in it.
        if (st->bits & 7) {
            uint8_t mask = (uint8_t) (0xFF << (8 - (st->bits & 7)));
            assert_int_equal (out[start] & mask, pending[0] & mask);
        }
        memcpy (out + start, pending, psize);
    }
    *size = whole;
    return out;
}

//  A checkpoint: store the pending bytes, then tell the encoder.
static void
s_flush (store_t *st, tm_gorilla_enc_t *enc)
{
    uint32_t start;
    size_t psize;
    const uint8_t *pending = tm_gorilla_enc_pending (enc, &start, &psize);
    if (tm_gorilla_enc_count (enc) == 0) {
        assert_null (pending);
        assert_int_equal (start, 0);
        assert_int_equal (psize, 0);
        return;
    }
    size_t size;
    uint8_t *whole = s_overlay (st, pending, start, psize, &size);
    free (st->bytes);
    st->bytes = whole;
    st->size = size;
    st->bits = tm_gorilla_enc_bits (enc);
    st->count = tm_gorilla_enc_count (enc);
    assert_int_equal (st->size, s_bytes_of (st->bits));
    tm_gorilla_enc_flushed (enc);
    //  Flushed: back inline, no whole chunk, only the partial byte pending.
    assert_int_equal (tm_gorilla_enc_heap (enc), 0);
    assert_null (tm_gorilla_enc_data (enc, &size));
    pending = tm_gorilla_enc_pending (enc, &start, &psize);
    assert_non_null (pending);
    assert_int_equal (start, st->bits / 8);
    assert_int_equal (psize, (st->bits & 7) != 0);
    if (psize)
        assert_int_equal (pending[0], st->bytes[start]);
}

//  The whole chunk as a history read rebuilds it: stored bytes overlaid
//  with the pending ones; decoded, it must give points [first, first + n).
static void
s_expect_rebuilt (const store_t *st, const tm_gorilla_enc_t *enc, const series_t *s,
                  size_t first, size_t n)
{
    uint32_t start;
    size_t psize, size;
    const uint8_t *pending = tm_gorilla_enc_pending (enc, &start, &psize);
    assert_int_equal (tm_gorilla_enc_count (enc), n);
    if (n == 0) {
        assert_null (pending);
        s_expect_stream (NULL, 0, 0, s, first, 0);
        return;
    }
    uint8_t *whole = s_overlay (st, pending, start, psize, &size);
    //  Exactly sized, so a read past the end shows under ASan.
    s_expect_stream (whole, size, tm_gorilla_enc_bits (enc), s, first, n);
    free (whole);
}

static void
s_store_free (store_t *st)
{
    free (st->bytes);
    memset (st, 0, sizeof *st);
}

//  ---------------------------------------------------------------------

static void
test_empty_and_one_point (void **state)
{
    (void) state;
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    assert_int_equal (tm_gorilla_enc_heap (&enc), 0);
    size_t size = 99;
    assert_null (tm_gorilla_enc_data (&enc, &size));
    assert_int_equal (size, 0);
    assert_int_equal (tm_gorilla_enc_count (&enc), 0);
    assert_int_equal (tm_gorilla_enc_bits (&enc), 0);
    assert_int_equal (tm_gorilla_enc_first_ts (&enc), 0);
    assert_int_equal (tm_gorilla_enc_last_ts (&enc), 0);
    uint32_t start = 99;
    assert_null (tm_gorilla_enc_pending (&enc, &start, &size));
    assert_int_equal (start, 0);
    assert_int_equal (size, 0);
    tm_gorilla_enc_flushed (&enc);
    assert_int_equal (tm_gorilla_enc_count (&enc), 0);
    assert_int_equal (tm_gorilla_enc_append (&enc, T0, 1.5), 0);
    assert_non_null (tm_gorilla_enc_data (&enc, &size));
    tm_gorilla_enc_fini (&enc);
    //  The empty chunk: no bytes, count 0, bits 0.
    series_t none = s_series_new (0);
    s_expect_stream (NULL, 0, 0, &none, 0, 0);
    s_expect_stream ((const uint8_t *) "", 0, 0, &none, 0, 0);
    s_round_trip (&none, false);
    s_series_free (&none);

    series_t s = s_series_new (1);
    double values[] = {0.0, -0.0, 12.3, -7.25, 1e300, 5e-324, M_PI, -1.0 / 3};
    int64_t stamps[] = {T0, 0, -1, INT64_MIN, INT64_MAX, 1};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        for (size_t j = 0; j < sizeof stamps / sizeof stamps[0]; j++) {
            s.ts[0] = stamps[j];
            s.v[0] = values[i];
            s_check (&s);
        }
    s_series_free (&s);
}

static void
test_constant_and_step (void **state)
{
    (void) state;
    series_t s = s_series_new (1000);
    s_regular_ts (&s, 60000);
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = 21.5;
    size_t size = s_check (&s);
    //  A regular constant series: two bits a point.
    assert_true (size < 30 + s.n * 2 / 8);
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = (i / 100) % 2? 1.0: 0.0;
    s_check (&s);
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = (double) (i / 37) * 1000.5 - 3000;
    s_check (&s);
    s_series_free (&s);
}

static void
test_random_values (void **state)
{
    (void) state;
    series_t s = s_series_new (5000);
    s_regular_ts (&s, 1000);
    for (size_t i = 0; i < s.n; i++) {
        double v;
        do
            v = s_from_bits (s_rand ());
        while (!isfinite (v));
        s.v[i] = v;
    }
    size_t size = s_check (&s);
    //  Incompressible: near 8 bytes plus the codes, never much worse.
    assert_true (size < s.n * 9);
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = s_uniform () * 200 - 100;
    s_check (&s);
    s_series_free (&s);
}

//  Smooth sensor data, at the resolutions sensors report.
static void
test_sine_noise (void **state)
{
    (void) state;
    series_t s = s_series_new (30000);
    s_regular_ts (&s, 10000);
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = round ((18 + 8 * sin ((double) i * 2 * M_PI / 8640) + 0.3 * s_gauss ()) * 10)
               / 10;
    //  XOR only takes several chunks: a chunk holds at most
    //  TM_GORILLA_STREAM_MAX_BYTES.
    size_t dec = s_round_trip (&s, false);
    size_t plain = s_round_trip_chunks (&s, true, NULL);
    printf ("smooth data (sine + noise, 0.1 resolution, 10 s): %zu points, "
            "%.2f bytes/point (XOR only: %.2f)\n",
            s.n, (double) dec / (double) s.n, (double) plain / (double) s.n);
    assert_true (dec < s.n * 2);
    //  Unrounded: full-precision doubles, XOR all the way.
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = 18 + 8 * sin ((double) i * 2 * M_PI / 8640) + 0.3 * s_gauss ();
    size_t chunks;
    s_round_trip_chunks (&s, false, &chunks);
    assert_true (chunks > 1);
    s_series_free (&s);
}

static void
test_irregular_timestamps (void **state)
{
    (void) state;
    series_t s = s_series_new (20000);
    int64_t ts = T0 + 123;
    for (size_t i = 0; i < s.n; i++) {
        //  1 s .. 5 min nominal, jitter of a few to a few hundred ms,
        //  missed readings and long outages (up to 40 days).
        uint64_t r = s_rand () % 100;
        int64_t step = i < 5000? 1000: i < 10000? 60000: 300000;
        int64_t gap = r < 80? step + (int64_t) (s_rand () % 61) - 30
                    : r < 95? step + (int64_t) (s_rand () % 2001) - 1000
                    : r < 99? step * (int64_t) (2 + s_rand () % 5)
                            : (int64_t) (s_rand () % (40LL * 86400000)) + 1;
        ts += gap;
        s.ts[i] = ts;
        s.v[i] = (double) (int64_t) (s_rand () % 50);
    }
    //  The outages add up to years: chunks close at the span limit.
    size_t chunks;
    s_round_trip_chunks (&s, true, &chunks);
    s_round_trip_chunks (&s, false, &chunks);
    assert_true (chunks > 1);
    s_series_free (&s);
}

static void
test_huge_gaps (void **state)
{
    (void) state;
    //  Deltas beyond a v2 chunk's limits: a new chunk at each.
    series_t s = s_series_new (8);
    int64_t stamps[] = {INT64_MIN,     INT64_MIN + 1, -1, 0, 1, INT64_MAX / 2,
                        INT64_MAX - 1, INT64_MAX};
    memcpy (s.ts, stamps, sizeof stamps);
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = (double) i;
    size_t chunks;
    s_round_trip_chunks (&s, false, &chunks);
    assert_int_equal (chunks, 4);
    //  Alternating tiny and huge deltas: every bucket, both signs, in as
    //  few chunks as the span allows.
    series_t t = s_series_new (200);
    int64_t ts = -5000000000000LL;
    for (size_t i = 0; i < t.n; i++) {
        int64_t steps[] = {1, 1, 64, 65, 2048, 2049, 1 << 19, (1 << 19) + 1,
                           1LL << 31, (1LL << 31) + 1, TM_GORILLA_STREAM_MAX_DELTA, 3};
        ts += steps[i % 12];
        t.ts[i] = ts;
        t.v[i] = 1.5;
    }
    s_round_trip_chunks (&t, true, NULL);
    s_round_trip_chunks (&t, false, &chunks);
    assert_true (chunks > 1 && chunks < 10);
    s_series_free (&s);
    s_series_free (&t);
}

static void
test_special_values (void **state)
{
    (void) state;
    double specials[] = {
        0.0, -0.0, 5e-324, -5e-324, 2.2250738585072009e-308, DBL_MIN, -DBL_MIN, DBL_MAX,
        -DBL_MAX, 1e-300, 1e22, 1e23, 9007199254740992.0, 9007199254740993.0, -0.001,
        0.1, 0.2, 0.30000000000000004, 123456789.123456, 1e-22, 1.0000000000000002,
        INFINITY, -INFINITY, NAN, s_from_bits (0x7FF8DEADBEEF0001ULL), 12.3, 12.3, -0.0,
    };
    size_t ns = sizeof specials / sizeof specials[0];
    series_t s = s_series_new (ns * 20);
    s_regular_ts (&s, 1000);
    for (size_t i = 0; i < s.n; i++) {
        //  Mix decimal, special and full-precision values so every
        //  switch between the modes happens.
        uint64_t r = s_rand () % 4;
        s.v[i] = r == 0? specials[s_rand () % ns]
               : r == 1? round (s_gauss () * 1000) / 100
               : r == 2? s_gauss ()
                       : specials[i % ns];
    }
    s_check (&s);
    //  Near zero, negative, at every scale.
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = -round (s_uniform () * 1e6) / pow (10, (double) (s_rand () % 23));
    s_check (&s);
    s_series_free (&s);
}

//  The open chunk is read at any moment: every prefix must decode.
static void
test_every_prefix (void **state)
{
    (void) state;
    series_t s = s_series_new (1500);
    int64_t ts = T0;
    for (size_t i = 0; i < s.n; i++) {
        ts += 1000 + (int64_t) (s_rand () % 50);
        s.ts[i] = ts;
        s.v[i] = i % 300 < 200? round (s_gauss () * 100) / 10: s_gauss ();
    }
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    for (size_t i = 0; i < s.n; i++) {
        assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[i], s.v[i]), 0);
        size_t size;
        const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
        s_expect_stream (data, size, tm_gorilla_enc_bits (&enc), &s, 0, i + 1);
    }
    tm_gorilla_enc_fini (&enc);
    s_series_free (&s);
}

//  The worker's way: flushes at random points (often after every point,
//  sometimes twice in a row or with nothing new), the chunk rebuilt from
//  the store and the pending bytes at every point; the stored bytes end
//  up the same as an encoder that never flushed.
static void
test_flush_overlay (void **state)
{
    (void) state;
    for (int round = 0; round < 40; round++) {
        series_t s = s_mixed_series (50 + s_rand () % 400);
        tm_gorilla_enc_t whole;
        tm_gorilla_enc_init (&whole);
        for (size_t i = 0; i < s.n; i++)
            assert_int_equal (tm_gorilla_enc_append (&whole, s.ts[i], s.v[i]), 0);
        size_t whole_size;
        const uint8_t *whole_data = tm_gorilla_enc_data (&whole, &whole_size);

        store_t st = {0};
        tm_gorilla_enc_t enc;
        tm_gorilla_enc_init (&enc);
        //  Flush 0 .. 20 points apart, depending on the round.
        unsigned every = (unsigned) (round % 4 == 0? 1: 1 + s_rand () % 20);
        s_flush (&st, &enc);
        for (size_t i = 0; i < s.n; i++) {
            assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[i], s.v[i]), 0);
            s_expect_rebuilt (&st, &enc, &s, 0, i + 1);
            uint64_t r = s_rand ();
            if (r % every == 0) {
                s_flush (&st, &enc);
                s_expect_rebuilt (&st, &enc, &s, 0, i + 1);
                if ((r >> 8) % 4 == 0) {
                    //  Again with nothing new: harmless.
                    s_flush (&st, &enc);
                    s_expect_rebuilt (&st, &enc, &s, 0, i + 1);
                }
            }
            //  While the pending bytes fit inline, nothing is allocated.
            uint32_t start;
            size_t psize;
            tm_gorilla_enc_pending (&enc, &start, &psize);
            assert_true (psize > TM_GORILLA_INLINE || tm_gorilla_enc_heap (&enc) == 0);
            assert_int_equal (tm_gorilla_enc_first_ts (&enc), s.ts[0]);
            assert_int_equal (tm_gorilla_enc_last_ts (&enc), s.ts[i]);
        }
        s_flush (&st, &enc);
        assert_int_equal (st.size, whole_size);
        assert_memory_equal (st.bytes, whole_data, whole_size);
        assert_int_equal (st.bits, tm_gorilla_enc_bits (&whole));
        assert_int_equal (st.count, s.n);
        tm_gorilla_enc_fini (&enc);
        tm_gorilla_enc_fini (&whole);
        s_store_free (&st);
        s_series_free (&s);
    }
}

//  Save the state, load it into a fresh encoder (after other bytes, and
//  with more after it) and check the bookkeeping survived.
static void
s_save_load (tm_gorilla_enc_t *enc, bool as_flushed)
{
    size_t bound = tm_gorilla_enc_save_size (enc, as_flushed);
    uint8_t *blob = malloc (bound + 3);
    assert_non_null (blob);
    size_t n = tm_gorilla_enc_save (enc, as_flushed, blob);
    assert_true (n <= bound);
    assert_true (n >= 2);
    memcpy (blob + n, "xyz", 3);
    tm_gorilla_enc_t back;
    tm_gorilla_enc_init (&back);
    size_t used = 0;
    const char *error = NULL;
    if (tm_gorilla_enc_load (&back, blob, n + 3, &used, &error) != 0)
        fail_msg ("load: %s", error? error: "-");
    assert_int_equal (used, n);
    assert_int_equal (tm_gorilla_enc_count (&back), tm_gorilla_enc_count (enc));
    assert_int_equal (tm_gorilla_enc_bits (&back), tm_gorilla_enc_bits (enc));
    assert_int_equal (tm_gorilla_enc_first_ts (&back), tm_gorilla_enc_first_ts (enc));
    assert_int_equal (tm_gorilla_enc_last_ts (&back), tm_gorilla_enc_last_ts (enc));
    assert_int_equal (back.open.xor_only, enc->open.xor_only);
    //  Saved again, the same bytes.
    uint8_t *again = malloc (tm_gorilla_enc_save_size (&back, false));
    assert_non_null (again);
    size_t m = tm_gorilla_enc_save (&back, false, again);
    assert_int_equal (m, n);
    assert_memory_equal (again, blob, n);
    free (again);
    free (blob);
    tm_gorilla_enc_fini (enc);
    *enc = back;
}

//  A checkpoint that saves the state too: as flushed, written in the same
//  batch as the pending bytes (mode 0); with its pending bytes in it (1);
//  after an ordinary flush (2). Then the state is loaded again.
static void
s_checkpoint (store_t *st, tm_gorilla_enc_t *enc, int mode)
{
    if (mode == 0) {
        uint32_t start;
        size_t psize;
        const uint8_t *pending = tm_gorilla_enc_pending (enc, &start, &psize);
        if (pending) {
            size_t size;
            uint8_t *whole = s_overlay (st, pending, start, psize, &size);
            free (st->bytes);
            st->bytes = whole;
            st->size = size;
            st->bits = tm_gorilla_enc_bits (enc);
            st->count = tm_gorilla_enc_count (enc);
        }
        s_save_load (enc, true);
    }
    else
    if (mode == 1)
        s_save_load (enc, false);
    else {
        s_flush (st, enc);
        s_save_load (enc, s_rand () % 2);
    }
}

//  A restart in the middle: the state saved (as the checkpoint writes
//  it: as flushed, in the same batch as the pending bytes, or not
//  flushed) and loaded, then appending goes on; the chunk rebuilt from
//  the store must hold every point, and be the bytes of an encoder that
//  never stopped.
static void
test_save_load (void **state)
{
    (void) state;
    for (int round = 0; round < 60; round++) {
        series_t s = s_mixed_series (20 + s_rand () % 300);
        bool xor_only = round % 7 == 3;
        tm_gorilla_enc_t whole;
        tm_gorilla_enc_init (&whole);
        tm_gorilla_enc_set_xor_only (&whole, xor_only);
        for (size_t i = 0; i < s.n; i++)
            assert_int_equal (tm_gorilla_enc_append (&whole, s.ts[i], s.v[i]), 0);
        size_t whole_size;
        const uint8_t *whole_data = tm_gorilla_enc_data (&whole, &whole_size);

        store_t st = {0};
        tm_gorilla_enc_t enc;
        tm_gorilla_enc_init (&enc);
        tm_gorilla_enc_set_xor_only (&enc, xor_only);
        for (size_t i = 0; i <= s.n; i++) {
            if (s_rand () % 8 == 0) {
                s_checkpoint (&st, &enc, (int) (s_rand () % 3));
                s_expect_rebuilt (&st, &enc, &s, 0, i);
            }
            if (i < s.n)
                assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[i], s.v[i]), 0);
        }
        s_expect_rebuilt (&st, &enc, &s, 0, s.n);
        s_flush (&st, &enc);
        assert_int_equal (st.size, whole_size);
        assert_memory_equal (st.bytes, whole_data, whole_size);
        tm_gorilla_enc_fini (&enc);
        tm_gorilla_enc_fini (&whole);
        s_store_free (&st);
        s_series_free (&s);
    }
    //  An empty encoder, with its setting.
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    tm_gorilla_enc_set_xor_only (&enc, true);
    assert_int_equal (tm_gorilla_enc_save_size (&enc, false), 2);
    s_save_load (&enc, false);
    assert_int_equal (tm_gorilla_enc_count (&enc), 0);
    assert_true (enc.open.xor_only);
    tm_gorilla_enc_fini (&enc);
}

//  Appending after a load must be safe whatever the state said: a few
//  points of each kind, then the chunk's own bookkeeping.
static void
s_append_some (tm_gorilla_enc_t *enc)
{
    double values[] = {1.5, 1.5, -0.0, 12.25, M_PI, 1e300, 7, 7.1, NAN, 0.001};
    int64_t ts = tm_gorilla_enc_last_ts (enc);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        ts = ts < INT64_MAX - 100000? ts + 1 + (int64_t) (s_rand () % 100000): ts;
        int rc = tm_gorilla_enc_append (enc, ts, values[i]);
        assert_true (rc == 0 || rc == TM_GORILLA_E_ORDER || rc == TM_GORILLA_E_FULL);
        //  Read every pending byte (ASan checks they are there).
        uint32_t start;
        size_t psize;
        const uint8_t *p = tm_gorilla_enc_pending (enc, &start, &psize);
        unsigned sum = 0;
        for (size_t j = 0; j < psize; j++)
            sum += p[j];
        assert_true (sum <= 255 * psize);
        assert_true (start + psize == s_bytes_of (tm_gorilla_enc_bits (enc)));
        assert_true (s_bytes_of (tm_gorilla_enc_bits (enc)) <= TM_GORILLA_STREAM_MAX_BYTES);
    }
}

//  A saved state mid-chunk, for the damage tests.
static uint8_t *
s_sample_state (size_t *size, bool as_flushed, size_t points)
{
    series_t s = s_mixed_series (points);
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    for (size_t i = 0; i < s.n; i++) {
        assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[i], s.v[i]), 0);
        if (i == s.n / 2)
            tm_gorilla_enc_flushed (&enc);
    }
    uint8_t *blob = malloc (tm_gorilla_enc_save_size (&enc, as_flushed));
    assert_non_null (blob);
    *size = tm_gorilla_enc_save (&enc, as_flushed, blob);
    tm_gorilla_enc_fini (&enc);
    s_series_free (&s);
    return blob;
}

//  Load from an exactly sized heap copy (ASan sees a read past the end);
//  on success append some points. Returns load's result.
static int
s_load_and_append (const uint8_t *data, size_t size, const char **error)
{
    uint8_t *exact = malloc (size? size: 1);
    assert_non_null (exact);
    if (size)
        memcpy (exact, data, size);
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    size_t used = 0;
    *error = NULL;
    int rc = tm_gorilla_enc_load (&enc, data? exact: NULL, size, &used, error);
    if (rc == 0) {
        assert_true (used <= size);
        s_append_some (&enc);
    }
    else {
        assert_int_equal (rc, -1);
        assert_non_null (*error);
        assert_int_equal (tm_gorilla_enc_count (&enc), 0);
        assert_int_equal (tm_gorilla_enc_heap (&enc), 0);
    }
    tm_gorilla_enc_fini (&enc);
    free (exact);
    return rc;
}

static void
test_load_damaged (void **state)
{
    (void) state;
    const char *error;
    for (int as_flushed = 0; as_flushed < 2; as_flushed++) {
        size_t size;
        uint8_t *blob = s_sample_state (&size, as_flushed, 40);
        assert_int_equal (s_load_and_append (blob, size, &error), 0);
        //  Every cut: refused, never a read past the end.
        for (size_t len = 0; len < size; len++)
            assert_int_equal (s_load_and_append (blob, len, &error), -1);
        //  Every byte set to every value: refused or safe to append to.
        size_t refused = 0, tries = 0;
        for (size_t at = 0; at < size; at++) {
            uint8_t keep = blob[at];
            for (unsigned b = 0; b < 256; b += 1 + (at > 40) * 6) {
                blob[at] = (uint8_t) b;
                refused += s_load_and_append (blob, size, &error) != 0;
                tries++;
            }
            blob[at] = keep;
        }
        printf ("damaged states (%s, %zu bytes) refused: %zu of %zu\n",
                as_flushed? "as flushed": "with pending", size, refused, tries);
        free (blob);
    }
    //  Random bytes after a valid format byte and flags.
    uint8_t junk[96];
    for (int round = 0; round < 20000; round++) {
        size_t len = s_rand () % sizeof junk;
        for (size_t i = 0; i < len; i++)
            junk[i] = (uint8_t) s_rand ();
        if (len > 1) {
            junk[0] = 1;
            junk[1] = (uint8_t) (junk[1] & 3);
        }
        s_load_and_append (junk, len, &error);
    }
}

//  A state written field by field, to reach each check of load.
typedef struct {
    uint64_t count, bits, start, last_ts_zz, span, last_delta;
    uint8_t scale, hint, lead, trail, rice_n;
    uint64_t rice_sum, last;
    const uint8_t *pending;
    size_t pending_size;
} raw_state_t;

static size_t
s_raw_state (uint8_t *p, const raw_state_t *r)
{
    size_t n = 0;
    p[n++] = 1;
    p[n++] = 2;
    n += tm_varint_put (p + n, r->count);
    n += tm_varint_put (p + n, r->bits);
    n += tm_varint_put (p + n, r->start);
    n += tm_varint_put (p + n, r->last_ts_zz);
    n += tm_varint_put (p + n, r->span);
    n += tm_varint_put (p + n, r->last_delta);
    p[n++] = r->scale;
    p[n++] = r->hint;
    p[n++] = r->lead;
    p[n++] = r->trail;
    p[n++] = r->rice_n;
    n += tm_varint_put (p + n, r->rice_sum);
    if (r->scale == 31)
        for (int i = 0; i < 8; i++)
            p[n++] = (uint8_t) (r->last >> (8 * i));
    else
        n += tm_varint_put (p + n, r->last);
    memcpy (p + n, r->pending, r->pending_size);
    return n + r->pending_size;
}

static void
s_expect_load_error (const raw_state_t *r, const char *why)
{
    uint8_t b[256];
    size_t n = s_raw_state (b, r);
    const char *error;
    assert_int_equal (s_load_and_append (b, n, &error), -1);
    assert_string_equal (error, why);
}

static void
test_load_malformed (void **state)
{
    (void) state;
    //  One point, 2.0 at ts 1 in decimal mode at scale 0: 32 bits.
    static const uint8_t chunk[] = {2, 2, 0, 4};
    raw_state_t ok = {1, 32, 0, 2, 0, 0, 0, 0, 0, 0, 1, 0, 4, chunk, 4};
    uint8_t b[256];
    size_t n = s_raw_state (b, &ok);
    const char *error = "";
    assert_int_equal (s_load_and_append (b, n, &error), 0);
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    size_t used;
    assert_int_equal (tm_gorilla_enc_load (&enc, b, n, &used, NULL), 0);
    assert_int_equal (used, n);
    assert_int_equal (tm_gorilla_enc_count (&enc), 1);
    assert_int_equal (tm_gorilla_enc_first_ts (&enc), 1);
    size_t size;
    const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
    assert_int_equal (size, 4);
    assert_memory_equal (data, chunk, 4);
    tm_gorilla_enc_fini (&enc);

    assert_int_equal (s_load_and_append (NULL, 0, &error), -1);
    assert_int_equal (s_load_and_append ((const uint8_t *) "\x03\x00", 2, &error), -1);
    assert_string_equal (error, "unknown state format");
    //  An open chunk's state has no last point for a whole encoder.
    assert_int_equal (s_load_and_append ((const uint8_t *) "\x02\x00", 2, &error), -1);
    assert_string_equal (error, "state saved without its last point");
    assert_int_equal (s_load_and_append ((const uint8_t *) "\x01\x08", 2, &error), -1);
    assert_string_equal (error, "unknown state flags");
    assert_int_equal (s_load_and_append ((const uint8_t *) "\x01\x02", 2, &error), -1);
    assert_int_equal (s_load_and_append ((const uint8_t *) "\x01\x01", 2, &error), 0);

    raw_state_t r = ok;
    r.count = 0;
    s_expect_load_error (&r, "count and bits disagree");
    r = ok;
    r.count = 65536;
    s_expect_load_error (&r, "state truncated or out of range");
    r = ok;
    r.bits = 31;
    s_expect_load_error (&r, "count and bits disagree");
    r = ok;
    r.count = 2;            //  A second point needs two more bits
    s_expect_load_error (&r, "count and bits disagree");
    r = ok;
    r.bits = 65535 * 8 + 1;
    s_expect_load_error (&r, "state truncated or out of range");
    r = ok;
    r.start = 5;
    s_expect_load_error (&r, "flushed offset past the bits");
    r = ok;
    r.span = 1;
    s_expect_load_error (&r, "timestamps out of range");
    r = ok;
    r.last_delta = 1;
    s_expect_load_error (&r, "timestamps out of range");
    r = ok;
    r.span = (uint64_t) TM_GORILLA_STREAM_MAX_SPAN + 1;
    s_expect_load_error (&r, "state truncated or out of range");
    r = ok;
    r.last_delta = (uint64_t) TM_GORILLA_STREAM_MAX_DELTA + 1;
    s_expect_load_error (&r, "state truncated or out of range");
    //  Two points: the last delta within the span, the first ts in range.
    static const uint8_t two[] = {2, 2, 0, 4, 0x80, 0x80};   //  10 0000001 0: dod 1, zz 0
    raw_state_t r2 = {2, 42, 0, 4, 1, 1, 0, 0, 0, 0, 2, 0, 4, two, 6};
    n = s_raw_state (b, &r2);
    assert_int_equal (s_load_and_append (b, n, &error), 0);
    r = r2;
    r.last_delta = 2;
    s_expect_load_error (&r, "timestamps out of range");
    r = r2;
    r.last_delta = 0;
    s_expect_load_error (&r, "timestamps out of range");
    r = r2;
    r.last_ts_zz = 2 * (uint64_t) INT64_MAX + 1;       //  INT64_MIN: no ts before it
    s_expect_load_error (&r, "timestamps out of range");
    r = r2;
    r.scale = 23;
    s_expect_load_error (&r, "decimal scale out of range");
    r = r2;
    r.last = (2ULL << 53) + 2;                         //  zigzag of 2^53 + 1
    s_expect_load_error (&r, "decimal value out of range");
    r = r2;
    r.rice_n = 0;
    s_expect_load_error (&r, "Rice statistics out of range");
    r = r2;
    r.rice_n = 32;
    s_expect_load_error (&r, "Rice statistics out of range");
    r = r2;
    r.rice_sum = 2 * (1u << 26) + 1;
    s_expect_load_error (&r, "Rice statistics out of range");
    r = r2;
    r.hint = 23;
    s_expect_load_error (&r, "scale hint out of range");
    r = r2;
    r.lead = 32;
    s_expect_load_error (&r, "XOR window out of range");
    r = r2;
    r.lead = 31;
    r.trail = 33;
    s_expect_load_error (&r, "XOR window out of range");
    r = r2;
    r.trail = 64;
    s_expect_load_error (&r, "XOR window out of range");
    r = r2;
    r.pending_size = 5;
    s_expect_load_error (&r, "pending bytes truncated");
    r = r2;
    static const uint8_t v1[] = {1, 2, 0, 4, 0x80, 0x80};
    r.pending = v1;
    s_expect_load_error (&r, "unknown chunk version");
    static const uint8_t padded[] = {2, 2, 0, 4, 0x80, 0xA0};
    r.pending = padded;
    s_expect_load_error (&r, "padding bits are not zero");
    //  Flushed: only the partial byte pending, whatever the stored bytes.
    static const uint8_t tail[] = {0x80};
    r = r2;
    r.start = 5;
    r.pending = tail;
    r.pending_size = 1;
    n = s_raw_state (b, &r);
    assert_int_equal (s_load_and_append (b, n, &error), 0);
    //  XOR mode: any value bits, no Rice statistics needed.
    r = r2;
    r.scale = 31;
    r.rice_n = 0;
    r.last = s_bits (-0.0);
    n = s_raw_state (b, &r);
    assert_int_equal (s_load_and_append (b, n, &error), 0);
}

//  A v2 chunk's limits: each returns TM_GORILLA_E_FULL and changes nothing,
//  at the point that would go past it and not before; the chunk, flushed
//  or not, still decodes.
static void
s_expect_full (tm_gorilla_enc_t *enc, int64_t ts, double v)
{
    uint32_t bits = tm_gorilla_enc_bits (enc), count = tm_gorilla_enc_count (enc);
    int64_t last = tm_gorilla_enc_last_ts (enc), first = tm_gorilla_enc_first_ts (enc);
    uint32_t start0, start1;
    size_t size0, size1;
    const uint8_t *p0 = tm_gorilla_enc_pending (enc, &start0, &size0);
    uint8_t copy[64];
    size_t keep = size0 < sizeof copy? size0: sizeof copy;
    memcpy (copy, p0 + size0 - keep, keep);
    assert_int_equal (tm_gorilla_enc_append (enc, ts, v), TM_GORILLA_E_FULL);
    assert_int_equal (tm_gorilla_enc_bits (enc), bits);
    assert_int_equal (tm_gorilla_enc_count (enc), count);
    assert_int_equal (tm_gorilla_enc_last_ts (enc), last);
    assert_int_equal (tm_gorilla_enc_first_ts (enc), first);
    const uint8_t *p1 = tm_gorilla_enc_pending (enc, &start1, &size1);
    assert_int_equal (start1, start0);
    assert_int_equal (size1, size0);
    assert_memory_equal (p1 + size1 - keep, copy, keep);
}

static void
test_full (void **state)
{
    (void) state;
    //  Points: 65535 of them, 2 bits each after the first.
    {
        series_t s = s_series_new (TM_GORILLA_STREAM_MAX_POINTS);
        s_regular_ts (&s, 1000);
        for (size_t i = 0; i < s.n; i++)
            s.v[i] = 3.5;
        store_t st = {0};
        tm_gorilla_enc_t enc;
        tm_gorilla_enc_init (&enc);
        for (size_t i = 0; i < s.n; i++) {
            assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[i], s.v[i]), 0);
            if (i % 1000 == 999)
                s_flush (&st, &enc);
        }
        s_expect_full (&enc, s.ts[s.n - 1] + 1000, 3.5);
        s_expect_rebuilt (&st, &enc, &s, 0, s.n);
        s_flush (&st, &enc);
        s_expect_full (&enc, s.ts[s.n - 1] + 1000, 3.5);
        s_expect_rebuilt (&st, &enc, &s, 0, s.n);
        tm_gorilla_enc_fini (&enc);
        s_store_free (&st);
        s_series_free (&s);
    }
    //  Bytes: random doubles, about 9 bytes each, until the chunk is full;
    //  a value that costs fewer bits still fits after a dearer one did not.
    {
        series_t s = s_series_new (10000);
        s_regular_ts (&s, 1000);
        for (size_t i = 0; i < s.n; i++)
            s.v[i] = s_from_bits (s_rand () >> 2 | 1);
        for (int flush = 0; flush < 2; flush++) {
            store_t st = {0};
            tm_gorilla_enc_t enc;
            tm_gorilla_enc_init (&enc);
            size_t n = 0;
            int rc;
            while ((rc = tm_gorilla_enc_append (&enc, s.ts[n], s.v[n])) == 0) {
                n++;
                assert_true (n < s.n);
                if (flush && s_rand () % 3 == 0)
                    s_flush (&st, &enc);
            }
            assert_int_equal (rc, TM_GORILLA_E_FULL);
            uint32_t bits = tm_gorilla_enc_bits (&enc);
            assert_true (s_bytes_of (bits) <= TM_GORILLA_STREAM_MAX_BYTES);
            assert_true (s_bytes_of (bits) > TM_GORILLA_STREAM_MAX_BYTES - 22);
            s_expect_full (&enc, s.ts[n], s.v[n]);
            s_expect_rebuilt (&st, &enc, &s, 0, n);
            //  The same value again takes 2 bits: those fit until the chunk
            //  is within 2 bits of its limit, exactly.
            while (n < s.n) {
                s.v[n] = s.v[n - 1];
                rc = tm_gorilla_enc_append (&enc, s.ts[n], s.v[n]);
                if (rc != 0)
                    break;
                n++;
                assert_true (tm_gorilla_enc_bits (&enc) <= TM_GORILLA_STREAM_MAX_BYTES * 8u);
            }
            assert_int_equal (rc, TM_GORILLA_E_FULL);
            bits = tm_gorilla_enc_bits (&enc);
            assert_true (bits <= TM_GORILLA_STREAM_MAX_BYTES * 8u
                         && bits + 2 > TM_GORILLA_STREAM_MAX_BYTES * 8u);
            s_expect_full (&enc, s.ts[n], s.v[n]);
            s_expect_rebuilt (&st, &enc, &s, 0, n);
            tm_gorilla_enc_fini (&enc);
            s_store_free (&st);
        }
        s_series_free (&s);
    }
    //  A delta: TM_GORILLA_STREAM_MAX_DELTA fits, one more does not.
    {
        series_t s = s_series_new (3);
        s.ts[0] = T0;
        s.ts[1] = T0 + TM_GORILLA_STREAM_MAX_DELTA;
        s.ts[2] = s.ts[1] + 1;
        tm_gorilla_enc_t enc;
        tm_gorilla_enc_init (&enc);
        assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[0], 0), 0);
        s_expect_full (&enc, T0 + TM_GORILLA_STREAM_MAX_DELTA + 1, 0);
        s_expect_full (&enc, INT64_MAX, 0);
        assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[1], 0), 0);
        assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[2], 0), 0);
        size_t size;
        const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
        s_expect_stream (data, size, tm_gorilla_enc_bits (&enc), &s, 0, 3);
        tm_gorilla_enc_fini (&enc);
        s_series_free (&s);
    }
    //  The span: the largest deltas up to TM_GORILLA_STREAM_MAX_SPAN exactly.
    {
        int64_t max_delta = TM_GORILLA_STREAM_MAX_DELTA;
        size_t n = (size_t) (TM_GORILLA_STREAM_MAX_SPAN / max_delta) + 2;
        series_t s = s_series_new (n);
        int64_t first = INT64_MIN + 5;
        for (size_t i = 0; i < n - 1; i++)
            s.ts[i] = first + (int64_t) i * max_delta;
        s.ts[n - 1] = first + TM_GORILLA_STREAM_MAX_SPAN;
        tm_gorilla_enc_t enc;
        tm_gorilla_enc_init (&enc);
        for (size_t i = 0; i < n - 1; i++)
            assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[i], (double) i), 0);
        s_expect_full (&enc, s.ts[n - 1] + 1, 0);
        assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[n - 1], 1), 0);
        s.v[n - 1] = 1;
        for (size_t i = 0; i < n - 1; i++)
            s.v[i] = (double) i;
        assert_int_equal (tm_gorilla_enc_first_ts (&enc), first);
        assert_int_equal (tm_gorilla_enc_last_ts (&enc), first + TM_GORILLA_STREAM_MAX_SPAN);
        s_expect_full (&enc, s.ts[n - 1] + 1, 0);
        size_t size;
        const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
        s_expect_stream (data, size, tm_gorilla_enc_bits (&enc), &s, 0, n);
        //  Saved and loaded at the limit, still exact.
        s_save_load (&enc, false);
        assert_int_equal (tm_gorilla_enc_first_ts (&enc), first);
        s_expect_full (&enc, s.ts[n - 1] + 1, 0);
        tm_gorilla_enc_fini (&enc);
        s_series_free (&s);
    }
}

static void
test_order_errors (void **state)
{
    (void) state;
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    assert_int_equal (tm_gorilla_enc_append (&enc, T0, 1.0), 0);
    assert_int_equal (tm_gorilla_enc_append (&enc, T0 + 10, 2.0), 0);
    size_t before;
    const uint8_t *data = tm_gorilla_enc_data (&enc, &before);
    uint8_t copy[64];
    memcpy (copy, data, before);
    uint32_t bits = tm_gorilla_enc_bits (&enc);
    assert_int_equal (tm_gorilla_enc_append (&enc, T0 + 10, 3.0), TM_GORILLA_E_ORDER);
    assert_int_equal (tm_gorilla_enc_append (&enc, T0 + 5, 3.0), TM_GORILLA_E_ORDER);
    assert_int_equal (tm_gorilla_enc_append (&enc, INT64_MIN, 3.0), TM_GORILLA_E_ORDER);
    size_t after;
    data = tm_gorilla_enc_data (&enc, &after);
    assert_int_equal (after, before);
    assert_memory_equal (data, copy, before);
    assert_int_equal (tm_gorilla_enc_bits (&enc), bits);
    assert_int_equal (tm_gorilla_enc_count (&enc), 2);
    assert_int_equal (tm_gorilla_enc_last_ts (&enc), T0 + 10);
    assert_int_equal (tm_gorilla_enc_append (&enc, T0 + 11, 3.0), 0);
    tm_gorilla_enc_fini (&enc);
}

//  ---------------------------------------------------------------------
//  v1

//  A chunk the v1 encoder wrote (before v2), and its points: both modes,
//  switches, a repeat, -0.0, NaN, denormals, jitter, a day's gap.
static const uint8_t s_v1_fixture[] = {
    0x01, 0x18, 0x00, 0x00, 0x00, 0x80, 0xa0, 0xab, 0xfe, 0xf9, 0x62, 0x01,
    0xae, 0x03, 0xe0, 0x27, 0x10, 0x04, 0x0c, 0xae, 0x07, 0x17, 0xa5, 0xdb,
    0xff, 0xe2, 0x32, 0x27, 0x4f, 0xff, 0xbb, 0x18, 0xed, 0xcf, 0x3b, 0x51,
    0x24, 0x19, 0xff, 0xf7, 0xe9, 0x35, 0x08, 0x69, 0xd9, 0x1c, 0x44, 0xa0,
    0x00, 0x00, 0x00, 0x7f, 0xff, 0xf6, 0x00, 0x2d, 0xf8, 0x54, 0x58, 0xa2,
    0xbb, 0x4a, 0xfe, 0x37, 0xe4, 0x3c, 0x88, 0x00, 0x75, 0x9c, 0x47, 0xc3,
    0xef, 0xb4, 0xa2, 0x33, 0x3d, 0x80, 0xce, 0x37, 0x55, 0x55, 0x55, 0x55,
    0x55, 0x57, 0xf0, 0x00, 0x48, 0x05, 0x86, 0x9d, 0xa9, 0x1e, 0x66, 0x66,
    0x66, 0x66, 0x66, 0xfb, 0xff, 0xdb, 0xfd, 0x43, 0xff, 0xef, 0xca, 0xb1,
    0x37, 0x0f, 0xcf, 0x90, 0x00, 0x3f, 0xfd, 0x2d, 0xd2, 0x1d, 0xba, 0x00,
    0x1e, 0x05, 0x1a, 0xea, 0x50, 0xff, 0xf8, 0x58, 0x98, 0x96, 0x85, 0x7b,
    0xeb, 0x94, 0x56, 0xc3, 0xff, 0xe2, 0x2a, 0xd4, 0xbf, 0xff, 0xfc, 0x07,
    0xdf, 0xf2, 0xb0, 0xfd, 0xff, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,
    0xbf, 0x63, 0xc4, 0xff, 0xf8, 0x8b, 0xe1, 0x0f, 0x00, 0x1b, 0x3c, 0xa6,
    0x8a, 0x7b, 0xff, 0x26, 0xb7, 0x08, 0x50,
};

static const struct {
    int64_t ts;
    double v;
} s_v1_points[] = {
    {1700000000000LL, 21.5}, {1700000010000LL, 21.5}, {1700000020003LL, 21.6},
    {1700000029990LL, 21.4}, {1700000040000LL, 22.0}, {1700000050000LL, 22.05},
    {1700000060000LL, 3.14159265358979}, {1700000070000LL, 2.718281828459045},
    {1700000080000LL, 2.718281828459045}, {1700000090000LL, -0.0},
    {1700000100000LL, 1e300}, {1700000110000LL, 12.3}, {1700000120000LL, 12.4},
    {1700000720000LL, 431}, {1700000730000LL, 0.7578}, {1700000740000LL, 0.7579},
    {1700086400000LL, 1000000.5}, {1700086410000LL, -7.25}, {1700086420000LL, 0},
    {1700086430000LL, 5e-324}, {1700086430001LL, 5e-324}, {1700086430002LL, 18.0},
    {1700090000000LL, 18.1}, {1700090010000LL, 18.2},
};
#define S_V1_POINTS (sizeof s_v1_points / sizeof s_v1_points[0])

static series_t
s_v1_series (void)
{
    series_t s = s_series_new (S_V1_POINTS);
    for (size_t i = 0; i < s.n; i++) {
        s.ts[i] = s_v1_points[i].ts;
        s.v[i] = i == 18? s_from_bits (0x7FF8000000000000ULL): s_v1_points[i].v;
    }
    return s;
}

static void
test_v1_fixture (void **state)
{
    (void) state;
    series_t s = s_v1_series ();
    s_expect_decodes (s_v1_fixture, sizeof s_v1_fixture, &s, s.n);
    //  The v2 encoder writes the same bit stream, without the count.
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    for (size_t i = 0; i < s.n; i++)
        assert_int_equal (tm_gorilla_enc_append (&enc, s.ts[i], s.v[i]), 0);
    size_t size;
    const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
    assert_int_equal (size, sizeof s_v1_fixture - 4);
    assert_int_equal (data[0], TM_GORILLA_STREAM_VERSION);
    assert_memory_equal (data + 1, s_v1_fixture + 5, size - 1);
    size_t v1_size;
    uint8_t *v1 = s_v1_of (data, size, (uint32_t) s.n, &v1_size);
    assert_int_equal (v1_size, sizeof s_v1_fixture);
    assert_memory_equal (v1, s_v1_fixture, v1_size);
    free (v1);
    //  Resumed, then continued: the bytes of an encoder that never stopped.
    tm_gorilla_enc_t resumed;
    tm_gorilla_enc_init (&resumed);
    const char *error = NULL;
    assert_int_equal (tm_gorilla_enc_resume (&resumed, s_v1_fixture, sizeof s_v1_fixture,
                                             &error), 0);
    assert_int_equal (tm_gorilla_enc_count (&resumed), s.n);
    assert_int_equal (tm_gorilla_enc_bits (&resumed), tm_gorilla_enc_bits (&enc));
    assert_int_equal (tm_gorilla_enc_first_ts (&resumed), s.ts[0]);
    assert_int_equal (tm_gorilla_enc_last_ts (&resumed), s.ts[s.n - 1]);
    size_t rsize;
    const uint8_t *rdata = tm_gorilla_enc_data (&resumed, &rsize);
    assert_int_equal (rsize, size);
    assert_memory_equal (rdata, data, size);
    for (int i = 0; i < 50; i++) {
        int64_t ts = s.ts[s.n - 1] + 1000 * (i + 1) + i % 3;
        double v = i % 5 == 4? s_gauss (): round (s_gauss () * 100) / 10;
        assert_int_equal (tm_gorilla_enc_append (&enc, ts, v), 0);
        assert_int_equal (tm_gorilla_enc_append (&resumed, ts, v), 0);
    }
    data = tm_gorilla_enc_data (&enc, &size);
    rdata = tm_gorilla_enc_data (&resumed, &rsize);
    assert_int_equal (rsize, size);
    assert_memory_equal (rdata, data, size);
    tm_gorilla_enc_fini (&resumed);
    tm_gorilla_enc_fini (&enc);
    s_series_free (&s);
}

//  An open chunk whose caller keeps the last point codes exactly what a
//  whole encoder does, saves without the point and goes on from the one it
//  is given; a point it cannot go on from is refused, never used.
static void
test_open_last_point (void **state)
{
    (void) state;
    series_t s = s_mixed_series (500);
    tm_gorilla_enc_t whole;
    tm_gorilla_enc_init (&whole);
    tm_gorilla_open_t open;
    tm_gorilla_open_init (&open);
    int64_t last_ts = 0;
    double last = 0;
    for (size_t i = 0; i < s.n; i++) {
        assert_int_equal (tm_gorilla_enc_append (&whole, s.ts[i], s.v[i]), 0);
        if (i == 250) {
            //  Saved and loaded halfway, as a checkpoint blob and a restart do.
            uint8_t *saved = malloc (tm_gorilla_open_save_size (&open, false));
            assert_non_null (saved);
            size_t n = tm_gorilla_open_save (&open, last_ts, false, saved);
            assert_int_equal (saved[0], 2);
            tm_gorilla_open_fini (&open);
            size_t used = 0;
            const char *error = NULL;
            assert_int_equal (tm_gorilla_open_load (&open, last_ts, last, saved, n, &used, &error),
                              0);
            assert_int_equal (used, n);
            free (saved);
        }
        assert_int_equal (tm_gorilla_open_append (&open, last_ts, last, s.ts[i], s.v[i]), 0);
        last_ts = s.ts[i];
        last = s.v[i];
    }
    assert_int_equal (tm_gorilla_open_first_ts (&open, last_ts), s.ts[0]);
    size_t wsize, osize;
    const uint8_t *wdata = tm_gorilla_enc_data (&whole, &wsize);
    const uint8_t *odata = tm_gorilla_open_data (&open, &osize);
    assert_int_equal (osize, wsize);
    assert_memory_equal (odata, wdata, wsize);
    s_expect_stream (odata, osize, tm_gorilla_open_bits (&open), &s, 0, s.n);

    //  A whole encoder's state loads only at its own last point.
    uint8_t *saved = malloc (tm_gorilla_enc_save_size (&whole, false));
    assert_non_null (saved);
    size_t n = tm_gorilla_enc_save (&whole, false, saved);
    tm_gorilla_open_t back;
    tm_gorilla_open_init (&back);
    size_t used;
    const char *error = NULL;
    assert_int_equal (tm_gorilla_open_load (&back, last_ts + 1, last, saved, n, &used, &error), -1);
    assert_string_equal (error, "the state does not end at the series' last point");
    assert_int_equal (tm_gorilla_open_count (&back), 0);
    assert_int_equal (tm_gorilla_open_load (&back, last_ts, last, saved, n, &used, &error), 0);
    assert_int_equal (tm_gorilla_open_bits (&back), tm_gorilla_enc_bits (&whole));
    tm_gorilla_open_fini (&back);
    free (saved);

    //  In decimal mode the given value must be a decimal at the scale: 2.5
    //  is at scale 1, 2.5 + 2^-40 at none.
    tm_gorilla_open_t dec;
    tm_gorilla_open_init (&dec);
    assert_int_equal (tm_gorilla_open_append (&dec, 0, 0, T0, 1.5), 0);
    assert_int_equal (tm_gorilla_open_append (&dec, T0, 1.5, T0 + 1000, 2.5), 0);
    uint8_t two[64];
    n = tm_gorilla_open_save (&dec, T0 + 1000, false, two);
    tm_gorilla_open_fini (&dec);
    assert_int_equal (tm_gorilla_open_load (&dec, T0 + 1000, 2.5 + ldexp (1, -40), two, n, &used,
                                            &error), -1);
    assert_string_equal (error, "the last value is not a decimal at the chunk's scale");
    assert_int_equal (tm_gorilla_open_load (&dec, T0 + 1000, NAN, two, n, &used, &error), -1);
    assert_int_equal (tm_gorilla_open_load (&dec, T0 + 1000, 2.5, two, n, &used, &error), 0);
    assert_int_equal (tm_gorilla_open_append (&dec, T0 + 1000, 2.5, T0 + 2000, 3.5), 0);
    const uint8_t *ddata = tm_gorilla_open_data (&dec, &osize);
    series_t three = s_series_new (3);
    three.ts[0] = T0, three.ts[1] = T0 + 1000, three.ts[2] = T0 + 2000;
    three.v[0] = 1.5, three.v[1] = 2.5, three.v[2] = 3.5;
    s_expect_stream (ddata, osize, tm_gorilla_open_bits (&dec), &three, 0, 3);
    s_series_free (&three);
    tm_gorilla_open_fini (&dec);

    //  A v1 chunk resumes only at its own last point.
    size_t v1_size;
    uint8_t *v1 = s_v1_of (wdata, wsize, (uint32_t) s.n, &v1_size);
    assert_int_equal (tm_gorilla_open_resume (&back, last_ts, last + 1, v1, v1_size, &error), -1);
    assert_string_equal (error, "the chunk does not end at the series' last point");
    assert_int_equal (tm_gorilla_open_resume (&back, last_ts, last, v1, v1_size, &error), 0);
    assert_int_equal (tm_gorilla_open_bits (&back), tm_gorilla_enc_bits (&whole));
    tm_gorilla_open_fini (&back);
    free (v1);
    tm_gorilla_open_fini (&open);
    tm_gorilla_enc_fini (&whole);
    s_series_free (&s);
}


//  A v1 chunk resumed at any point gives the bytes of a v2 encoder that
//  never stopped; flushing and saving go on from there.
static void
test_resume (void **state)
{
    (void) state;
    series_t s = s_mixed_series (400);
    tm_gorilla_enc_t whole;
    tm_gorilla_enc_init (&whole);
    for (size_t i = 0; i < s.n; i++)
        assert_int_equal (tm_gorilla_enc_append (&whole, s.ts[i], s.v[i]), 0);
    size_t whole_size;
    const uint8_t *whole_data = tm_gorilla_enc_data (&whole, &whole_size);
    for (size_t cut = 0; cut <= s.n; cut += 7) {
        tm_gorilla_enc_t a, b;
        tm_gorilla_enc_init (&a);
        for (size_t i = 0; i < cut; i++)
            assert_int_equal (tm_gorilla_enc_append (&a, s.ts[i], s.v[i]), 0);
        size_t size, v1_size;
        const uint8_t *data = tm_gorilla_enc_data (&a, &size);
        uint8_t *v1 = s_v1_of (data, size, (uint32_t) cut, &v1_size);
        tm_gorilla_enc_init (&b);
        const char *error = NULL;
        assert_int_equal (tm_gorilla_enc_resume (&b, v1, v1_size, &error), 0);
        free (v1);
        assert_int_equal (tm_gorilla_enc_count (&b), cut);
        assert_int_equal (tm_gorilla_enc_bits (&b), tm_gorilla_enc_bits (&a));
        tm_gorilla_enc_fini (&a);
        store_t st = {0};
        for (size_t i = cut; i < s.n; i++) {
            if (i % 50 == 0)
                s_flush (&st, &b);
            if (i % 70 == 0)
                s_checkpoint (&st, &b, (int) (i / 70 % 3));
            assert_int_equal (tm_gorilla_enc_append (&b, s.ts[i], s.v[i]), 0);
        }
        s_flush (&st, &b);
        assert_int_equal (st.size, whole_size);
        assert_memory_equal (st.bytes, whole_data, whole_size);
        s_store_free (&st);
        tm_gorilla_enc_fini (&b);
    }
    //  A malformed chunk is refused and leaves the encoder empty; so is one
    //  beyond a v2 chunk's limits.
    size_t v1_size;
    uint8_t *v1 = s_v1_of (whole_data, whole_size, (uint32_t) s.n, &v1_size);
    tm_gorilla_enc_t c;
    tm_gorilla_enc_init (&c);
    const char *error = NULL;
    assert_int_equal (tm_gorilla_enc_resume (&c, v1, v1_size - 1, &error), -1);
    assert_non_null (error);
    assert_int_equal (tm_gorilla_enc_count (&c), 0);
    assert_int_equal (tm_gorilla_enc_heap (&c), 0);
    free (v1);
    //  Bits 10 0000001 (dod 1) in a chunk whose first point is ts 1, then
    //  a tcode 11111 + 64 bits: a delta of 2^40 + 1, beyond v2's.
    static const uint8_t far[] = {1,    3,    0,    0,    0,    2,    0,    2,    0x80,
                                  0xBE, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
    {
        //  Check the chunk itself first: it decodes as v1.
        tm_gorilla_dec_t dec;
        int64_t ts;
        double v;
        assert_int_equal (tm_gorilla_dec_init (&dec, far, sizeof far), 0);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_int_equal (ts, 2);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_int_equal (ts, 2 + (1LL << 40) + 2);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 0);
    }
    error = NULL;
    assert_int_equal (tm_gorilla_enc_resume (&c, far, sizeof far, &error), -1);
    assert_string_equal (error, "chunk beyond the limits of a v2 chunk");
    assert_int_equal (tm_gorilla_enc_count (&c), 0);
    //  The same with a last delta of 2^33 ms: within the span limit, not
    //  the delta's.
    static const uint8_t wide[] = {1,    3,    0,    0,    0,    2,    0,    2,    0x80,
                                   0xBE, 0x00, 0x00, 0x00, 0x03, 0xFF, 0xFF, 0xFF, 0xFE};
    {
        tm_gorilla_dec_t dec;
        int64_t ts;
        double v;
        assert_int_equal (tm_gorilla_dec_init (&dec, wide, sizeof wide), 0);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_int_equal (ts, 2 + (1LL << 33));
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 0);
    }
    error = NULL;
    assert_int_equal (tm_gorilla_enc_resume (&c, wide, sizeof wide, &error), -1);
    assert_string_equal (error, "chunk beyond the limits of a v2 chunk");
    assert_int_equal (tm_gorilla_enc_count (&c), 0);
    //  The empty v1 chunk resumes as an empty encoder.
    assert_int_equal (tm_gorilla_enc_resume (&c, (const uint8_t *) "\x01\0\0\0\0", 5, NULL),
                      0);
    assert_int_equal (tm_gorilla_enc_count (&c), 0);
    tm_gorilla_enc_fini (&c);
    tm_gorilla_enc_fini (&whole);
    s_series_free (&s);
}

//  ---------------------------------------------------------------------
//  Damage

//  A varied chunk for the damage tests (v2; v1 is the same with a count).
static uint8_t *
s_sample_chunk (size_t *size, uint32_t *bits, series_t *s)
{
    *s = s_series_new (300);
    int64_t ts = T0;
    for (size_t i = 0; i < s->n; i++) {
        ts += i % 50 == 0? 3600000: 1000 + (int64_t) (s_rand () % 200);
        s->ts[i] = ts;
        s->v[i] = i % 90 < 60? round (s_gauss () * 300) / 10
                : i % 90 < 80? s_gauss (): (double) (i % 7);
    }
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal (tm_gorilla_enc_append (&enc, s->ts[i], s->v[i]), 0);
    const uint8_t *data = tm_gorilla_enc_data (&enc, size);
    *bits = tm_gorilla_enc_bits (&enc);
    uint8_t *copy = malloc (*size);
    assert_non_null (copy);
    memcpy (copy, data, *size);
    tm_gorilla_enc_fini (&enc);
    return copy;
}

//  Decode all of a (possibly damaged) chunk from an exactly sized heap
//  copy, so a read past the end shows under ASan and valgrind; v2 if
//  stream, with count and bits. Returns the points decoded, *rc the
//  final return code.
static size_t
s_decode_all (const uint8_t *data, size_t size, bool stream, uint32_t count, uint64_t bits,
              int *rc)
{
    uint8_t *exact = malloc (size? size: 1);
    assert_non_null (exact);
    memcpy (exact, data, size);
    tm_gorilla_dec_t dec;
    if (stream)
        tm_gorilla_dec_init_stream (&dec, exact, size, count, bits);
    else
        tm_gorilla_dec_init (&dec, exact, size);
    int64_t ts, last = INT64_MIN;
    double v;
    size_t n = 0;
    while ((*rc = tm_gorilla_dec_next (&dec, &ts, &v)) == 1) {
        assert_true (n == 0 || ts > last);
        last = ts;
        n++;
        assert_true (n <= tm_gorilla_dec_count (&dec));
    }
    if (*rc == -1)
        assert_non_null (dec.error);
    else
        assert_int_equal (n, tm_gorilla_dec_count (&dec));
    free (exact);
    return n;
}

static void
test_truncated (void **state)
{
    (void) state;
    series_t s;
    size_t size, v1_size;
    uint32_t bits;
    uint8_t *chunk = s_sample_chunk (&size, &bits, &s);
    uint8_t *v1 = s_v1_of (chunk, size, (uint32_t) s.n, &v1_size);
    uint32_t count = (uint32_t) s.n;
    int rc;
    assert_int_equal (s_decode_all (v1, v1_size, false, 0, 0, &rc), s.n);
    assert_int_equal (rc, 0);
    assert_int_equal (s_decode_all (chunk, size, true, count, bits, &rc), s.n);
    assert_int_equal (rc, 0);
    //  Every cut loses a part of the last point: always an error. v2 is
    //  cut in bytes (the size short of the bits) and in bits (the same
    //  bytes, fewer bits claimed).
    for (size_t len = 0; len < v1_size; len++) {
        s_decode_all (v1, len, false, 0, 0, &rc);
        assert_int_equal (rc, -1);
    }
    for (size_t len = 0; len < size; len++) {
        s_decode_all (chunk, len, true, count, bits, &rc);
        assert_int_equal (rc, -1);
    }
    for (uint32_t b = 0; b < bits; b++) {
        //  Clear the bits past b, as a chunk of b bits would be padded.
        uint8_t *cut = malloc (size);
        assert_non_null (cut);
        memcpy (cut, chunk, size);
        if (b & 7)
            cut[b / 8] &= (uint8_t) (0xFF << (8 - (b & 7)));
        s_decode_all (cut, s_bytes_of (b), true, count, b, &rc);
        assert_int_equal (rc, -1);
        free (cut);
    }
    free (v1);
    free (chunk);
    s_series_free (&s);
}

//  The container's count and bits must match the chunk exactly.
static void
test_stream_count_bits (void **state)
{
    (void) state;
    series_t s;
    size_t size;
    uint32_t bits;
    uint8_t *chunk = s_sample_chunk (&size, &bits, &s);
    uint32_t count = (uint32_t) s.n;
    //  Room for more bits: zeros after the chunk.
    uint8_t *big = calloc (size + 16, 1);
    assert_non_null (big);
    memcpy (big, chunk, size);
    int rc;
    tm_gorilla_dec_t dec;
    //  Bytes past ceil (bits / 8) are not read (even garbage).
    memset (big + size, 0xAB, 16);
    assert_int_equal (s_decode_all (big, size + 16, true, count, bits, &rc), s.n);
    assert_int_equal (rc, 0);
    memset (big + size, 0, 16);
    //  Fewer points than there are: trailing points.
    for (uint32_t c = 1; c < count; c += 1 + c / 4) {
        s_decode_all (chunk, size, true, c, bits, &rc);
        assert_int_equal (rc, -1);
    }
    s_decode_all (chunk, size, true, count - 1, bits, &rc);
    assert_int_equal (rc, -1);
    tm_gorilla_dec_init_stream (&dec, chunk, size, count - 1, bits);
    int64_t ts;
    double v;
    while ((rc = tm_gorilla_dec_next (&dec, &ts, &v)) == 1)
        ;
    assert_int_equal (rc, -1);
    assert_string_equal (dec.error, "bits after the last point");
    //  More points than there are.
    s_decode_all (chunk, size, true, count + 1, bits, &rc);
    assert_int_equal (rc, -1);
    tm_gorilla_dec_init_stream (&dec, chunk, size, count + 1, bits);
    while ((rc = tm_gorilla_dec_next (&dec, &ts, &v)) == 1)
        ;
    assert_int_equal (rc, -1);
    assert_string_equal (dec.error, "chunk ends before its count");
    //  More bits than the points take (zeros after them): some decode as
    //  more points, never as these points exactly.
    for (uint32_t extra = 1; extra < 64; extra++) {
        s_decode_all (big, size + 16, true, count, (uint64_t) bits + extra, &rc);
        assert_int_equal (rc, -1);
    }
    //  Counts no chunk of these bits holds, and absurd bits.
    s_decode_all (chunk, size, true, UINT32_MAX, bits, &rc);
    assert_int_equal (rc, -1);
    tm_gorilla_dec_init_stream (&dec, chunk, size, bits, bits);
    assert_string_equal (dec.error, "count larger than the chunk can hold");
    assert_int_equal (tm_gorilla_dec_init_stream (&dec, chunk, size, count, UINT64_MAX), -1);
    assert_string_equal (dec.error, "chunk shorter than its bits");
    uint64_t past = (uint64_t) size * 8 + 1;
    assert_int_equal (tm_gorilla_dec_init_stream (&dec, chunk, size, count, past), -1);
    assert_string_equal (dec.error, "chunk shorter than its bits");
    free (big);
    free (chunk);
    s_series_free (&s);
}

static void
test_corrupted (void **state)
{
    (void) state;
    series_t s;
    size_t size, v1_size;
    uint32_t bits;
    uint8_t *chunk = s_sample_chunk (&size, &bits, &s);
    uint8_t *v1 = s_v1_of (chunk, size, (uint32_t) s.n, &v1_size);
    size_t errors = 0, errors1 = 0;
    for (size_t bit = 0; bit < size * 8; bit++) {
        chunk[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        int rc;
        s_decode_all (chunk, size, true, (uint32_t) s.n, bits, &rc);
        errors += rc == -1;
        chunk[bit / 8] ^= (uint8_t) (1u << (bit % 8));
    }
    for (size_t bit = 0; bit < v1_size * 8; bit++) {
        v1[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        int rc;
        s_decode_all (v1, v1_size, false, 0, 0, &rc);
        errors1 += rc == -1;
        v1[bit / 8] ^= (uint8_t) (1u << (bit % 8));
    }
    //  Many flips desynchronise the stream and are caught; others only
    //  change a value, which no format without a checksum can see.
    printf ("single-bit flips of a %zu-byte chunk detected: v2 %zu of %zu, v1 %zu of %zu\n",
            size, errors, size * 8, errors1, v1_size * 8);
    assert_true (errors > size * 8 / 10);
    assert_true (errors1 > v1_size * 8 / 10);
    //  Random garbage: never a crash or an endless loop.
    uint8_t junk[256];
    for (int round = 0; round < 4000; round++) {
        size_t len = s_rand () % sizeof junk;
        for (size_t i = 0; i < len; i++)
            junk[i] = (uint8_t) s_rand ();
        if (len > 0)
            junk[0] = round % 2? TM_GORILLA_VERSION: TM_GORILLA_STREAM_VERSION;
        int rc;
        if (round % 2)
            s_decode_all (junk, len, false, 0, 0, &rc);
        else
            s_decode_all (junk, len, true, (uint32_t) (s_rand () % (len * 4 + 2)),
                          s_rand () % (len * 8 + 1), &rc);
    }
    free (v1);
    free (chunk);
    s_series_free (&s);
}

static void
s_expect_error (const uint8_t *data, size_t size, const char *why)
{
    tm_gorilla_dec_t dec;
    int64_t ts;
    double v;
    int rc = tm_gorilla_dec_init (&dec, data, size);
    while (rc == 0 && (rc = tm_gorilla_dec_next (&dec, &ts, &v)) == 1)
        rc = 0;
    assert_int_equal (rc, -1);
    assert_non_null (dec.error);
    assert_string_equal (dec.error, why);
    //  Sticky.
    assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), -1);
}

//  The same for a v2 chunk of count points in bits.
static void
s_expect_stream_error (const uint8_t *data, size_t size, uint32_t count, uint64_t bits,
                       const char *why)
{
    tm_gorilla_dec_t dec;
    int64_t ts;
    double v;
    int rc = tm_gorilla_dec_init_stream (&dec, data, size, count, bits);
    while (rc == 0 && (rc = tm_gorilla_dec_next (&dec, &ts, &v)) == 1)
        rc = 0;
    assert_int_equal (rc, -1);
    assert_non_null (dec.error);
    assert_string_equal (dec.error, why);
    assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), -1);
}

//  A chunk header with a decimal first value 1 (scale 0) at ts 1.
static size_t
s_header (uint8_t *p, uint32_t count)
{
    size_t n = 0;
    p[n++] = TM_GORILLA_VERSION;
    for (int i = 0; i < 4; i++)
        p[n++] = (uint8_t) (count >> (8 * i));
    p[n++] = 2;                    //  ts 1, zigzag
    p[n++] = 0;                    //  scale 0
    p[n++] = 2;                    //  n 1, zigzag
    return n;
}

static void
test_malformed (void **state)
{
    (void) state;
    uint8_t b[64];
    size_t n;
    s_expect_error (NULL, 0, "chunk shorter than its header");
    s_expect_error ((const uint8_t *) "\x01\x00\x00", 3, "chunk shorter than its header");
    s_expect_error ((const uint8_t *) "\x02\x00\x00\x00\x00", 5, "unknown chunk version");
    s_expect_error ((const uint8_t *) "\x01\x00\x00\x00\x00\x00", 6,
                    "bytes after an empty chunk");
    n = s_header (b, 1);
    s_expect_error (b, 5, "first timestamp truncated");
    s_expect_error (b, 6, "first value truncated");
    s_expect_error (b, 7, "first value truncated");
    b[6] = 23;
    s_expect_error (b, n, "unknown first value mode");
    b[6] = 255;
    s_expect_error (b, n, "first value truncated");
    //  A first value beyond 2^53 at scale 0.
    n = s_header (b, 1);
    memcpy (b + 7, "\x82\x80\x80\x80\x80\x80\x80\x20", 8);
    s_expect_error (b, 15, "decimal value out of range");
    //  10 varint bytes and more.
    n = s_header (b, 1);
    memset (b + 5, 0x80, 11);
    s_expect_error (b, 16, "first timestamp truncated");
    //  Counts the bytes cannot hold: 3 points need at least 4 more bits.
    n = s_header (b, 3);
    s_expect_error (b, n, "count larger than the chunk can hold");
    s_header (b, 0xFFFFFFFF);
    s_expect_error (b, n, "count larger than the chunk can hold");
    //  One point, then garbage.
    n = s_header (b, 1);
    b[n] = 0;
    s_expect_error (b, n + 1, "bytes after the last point");
    //  Two points, tcode 0: dod 0 repeats the timestamp.
    n = s_header (b, 2);
    b[n] = 0x00;
    s_expect_error (b, n + 1, "timestamps do not increase");
    //  Bits 10 0000001 (dod 1), 0 (Rice k=0, zz 0), then a padding bit set.
    b[n] = 0x80;
    b[n + 1] = 0x81;
    s_expect_error (b, n + 2, "padding bits are not zero");
    b[n + 1] = 0x80;
    {
        tm_gorilla_dec_t dec;
        int64_t ts;
        double v;
        assert_int_equal (tm_gorilla_dec_init (&dec, b, n + 2), 0);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_int_equal (ts, 2);
        assert_true (v == 1.0);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 0);
    }
    //  Decimal mode: 12 ones, 1 (a switch), scale 23 (out of range).
    //  Bits 10 0000001 | 111111111111 1 10111
    memcpy (b + n, "\x80\xFF\xFE\xE0", 4);
    s_expect_error (b, n + 4, "decimal scale out of range");
    //  A switch to XOR (scale 31), then at once the switch code again.
    //  Bits 10 0000001 | 111111111111 1 11111 | 11 11111 111111
    memcpy (b + n, "\x80\xFF\xFF\xFF\xFF\x00", 6);
    s_expect_error (b, n + 6, "switch right after a switch");
    //  XOR mode from a raw first value 1.0.
    n = s_header (b, 2);
    b[n - 2] = 255;
    memcpy (b + n - 1, "\x00\x00\x00\x00\x00\x00\xf0\x3f", 8);
    n += 7;
    //  Bits 10 0000001 | 11 11111 100111: lead 31 + length 40 > 64.
    memcpy (b + n, "\x80\xFF\x9C\x00", 4);
    s_expect_error (b, n + 4, "XOR window wider than 64 bits");
    //  Bits 10 0000001 | 11 11111 000000 1: a 1-bit window; cut it short.
    memcpy (b + n, "\x80\xFF\x02", 3);
    s_expect_error (b, n + 2, "chunk ends inside a point");
    {
        tm_gorilla_dec_t dec;
        int64_t ts;
        double v;
        assert_int_equal (tm_gorilla_dec_init (&dec, b, n + 3), 0);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_true (v == 1.0);
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
        assert_true (s_bits (v) == (s_bits (1.0) ^ ((uint64_t) 1 << 32)));
        assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 0);
    }
}

static void
test_malformed_stream (void **state)
{
    (void) state;
    //  v2: 02, ts 1, scale 0, n 1; then bits 10 0000001 0 (ts 2, value 1).
    static const uint8_t c[] = {2, 2, 0, 2, 0x80, 0x80};
    s_expect_stream_error (NULL, 0, 1, 8, "chunk shorter than its bits");
    s_expect_stream_error (NULL, 0, 0, 1, "bits for an empty chunk");
    s_expect_stream_error (c, 6, 0, 42, "bits for an empty chunk");
    s_expect_stream_error (c, 0, 1, 32, "chunk shorter than its bits");
    s_expect_stream_error (c, 5, 2, 42, "chunk shorter than its bits");
    s_expect_stream_error (c, 6, 1, 0, "chunk shorter than its header");
    s_expect_stream_error (c, 6, 1, 7, "chunk shorter than its header");
    s_expect_stream_error ((const uint8_t *) "\x01\x02\x00\x02", 4, 1, 32,
                           "unknown chunk version");
    //  The header must end within the bits.
    s_expect_stream_error (c, 6, 1, 8, "first timestamp truncated");
    s_expect_stream_error (c, 6, 1, 16, "first value truncated");
    s_expect_stream_error (c, 6, 1, 24, "first value truncated");
    s_expect_stream_error (c, 6, 1, 31, "first value truncated");
    s_expect_stream_error ((const uint8_t *) "\x02\x02\x17\x02", 4, 1, 32,
                           "unknown first value mode");
    //  One point exactly, two points exactly.
    tm_gorilla_dec_t dec;
    int64_t ts;
    double v;
    assert_int_equal (tm_gorilla_dec_init_stream (&dec, c, 6, 1, 32), 0);
    assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
    assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 0);
    assert_int_equal (tm_gorilla_dec_init_stream (&dec, c, 6, 2, 42), 0);
    assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
    assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 1);
    assert_int_equal (ts, 2);
    assert_true (v == 1.0);
    assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 0);
    //  One point given but more bits: trailing points.
    s_expect_stream_error (c, 6, 1, 42, "bits after the last point");
    s_expect_stream_error (c, 6, 2, 41, "chunk ends inside a point");
    s_expect_stream_error (c, 6, 2, 43, "bits after the last point");
    s_expect_stream_error (c, 6, 2, 32, "count larger than the chunk can hold");
    s_expect_stream_error (c, 6, 3, 42, "chunk ends before its count");
    //  A padding bit set after the bits.
    static const uint8_t p[] = {2, 2, 0, 2, 0x80, 0xA0};
    s_expect_stream_error (p, 6, 2, 42, "padding bits are not zero");
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_empty_and_one_point),
        cmocka_unit_test (test_constant_and_step),
        cmocka_unit_test (test_random_values),
        cmocka_unit_test (test_sine_noise),
        cmocka_unit_test (test_irregular_timestamps),
        cmocka_unit_test (test_huge_gaps),
        cmocka_unit_test (test_special_values),
        cmocka_unit_test (test_every_prefix),
        cmocka_unit_test (test_flush_overlay),
        cmocka_unit_test (test_save_load),
        cmocka_unit_test (test_load_damaged),
        cmocka_unit_test (test_load_malformed),
        cmocka_unit_test (test_full),
        cmocka_unit_test (test_order_errors),
        cmocka_unit_test (test_v1_fixture),
        cmocka_unit_test (test_resume),
        cmocka_unit_test (test_open_last_point),
        cmocka_unit_test (test_truncated),
        cmocka_unit_test (test_stream_count_bits),
        cmocka_unit_test (test_corrupted),
        cmocka_unit_test (test_malformed),
        cmocka_unit_test (test_malformed_stream),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
