/*  test_gorilla - unit tests for tm_gorilla, the history chunk codec

    A chunk is the only copy of a reading once the log is trimmed, so the
    codec is checked for exact round trips (bit for bit, including -0.0,
    denormals, NaN payloads) over every shape of series it will meet, at
    every prefix (the open chunk is flushed at any moment) and across a
    resume. As a decoder of untrusted bytes it is fed every truncation and
    every single-bit corruption of real chunks, and hand-made malformed
    headers and streams for each error it reports.
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

//  Decode a chunk and expect exactly these points (values bit for bit).
static void
s_expect_decodes (const uint8_t *data, size_t size, const series_t *s, size_t n)
{
    tm_gorilla_dec_t dec;
    assert_int_equal (tm_gorilla_dec_init (&dec, data, size), 0);
    assert_int_equal (tm_gorilla_dec_count (&dec), n);
    int64_t ts;
    double v;
    for (size_t i = 0; i < n; i++) {
        int rc = tm_gorilla_dec_next (&dec, &ts, &v);
        if (rc != 1)
            fail_msg ("point %zu of %zu: rc=%d error=%s", i, n, rc,
                      dec.error? dec.error: "-");
        assert_int_equal (ts, s->ts[i]);
        if (s_bits (v) != s_bits (s->v[i]))
            fail_msg ("point %zu: got %.17g want %.17g", i, v, s->v[i]);
    }
    assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 0);
    assert_int_equal (tm_gorilla_dec_next (&dec, &ts, &v), 0);
}

//  Encode, check the bookkeeping and the round trip; returns the size.
static size_t
s_round_trip (const series_t *s, bool xor_only)
{
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    tm_gorilla_enc_set_xor_only (&enc, xor_only);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal (tm_gorilla_enc_append (&enc, s->ts[i], s->v[i]), 0);
    assert_int_equal (tm_gorilla_enc_count (&enc), s->n);
    if (s->n) {
        assert_int_equal (tm_gorilla_enc_first_ts (&enc), s->ts[0]);
        assert_int_equal (tm_gorilla_enc_last_ts (&enc), s->ts[s->n - 1]);
    }
    size_t size;
    const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
    //  The buffer holds the chunk and at most a growth step more (a
    //  quarter of the size, at least 32 bytes), rounded to malloc's 16.
    size_t step = size / 4 > 32? size / 4 + 16: 48;
    assert_true (s->n == 0 || tm_gorilla_enc_heap (&enc) < size + step);
    s_expect_decodes (data, size, s, s->n);
    tm_gorilla_enc_fini (&enc);
    assert_int_equal (tm_gorilla_enc_count (&enc), 0);
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

static void
test_empty_and_one_point (void **state)
{
    (void) state;
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    assert_int_equal (tm_gorilla_enc_heap (&enc), 0);
    size_t size;
    const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
    assert_int_equal (size, TM_GORILLA_EMPTY_SIZE);
    assert_int_equal (tm_gorilla_enc_count (&enc), 0);
    assert_int_equal (tm_gorilla_enc_first_ts (&enc), 0);
    series_t none = s_series_new (0);
    s_expect_decodes (data, size, &none, 0);
    s_series_free (&none);
    tm_gorilla_enc_fini (&enc);

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
    series_t s = s_series_new (100000);
    s_regular_ts (&s, 10000);
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = round ((18 + 8 * sin ((double) i * 2 * M_PI / 8640) + 0.3 * s_gauss ()) * 10)
               / 10;
    size_t dec = s_check (&s);
    size_t plain = s_round_trip (&s, true);
    printf ("smooth data (sine + noise, 0.1 resolution, 10 s): %zu points, "
            "%.2f bytes/point (XOR only: %.2f)\n",
            s.n, (double) dec / (double) s.n, (double) plain / (double) s.n);
    assert_true (dec < s.n * 2);
    //  Unrounded: full-precision doubles, XOR all the way.
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = 18 + 8 * sin ((double) i * 2 * M_PI / 8640) + 0.3 * s_gauss ();
    s_check (&s);
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
        //  missed readings and long outages.
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
    s_check (&s);
    s_series_free (&s);
}

static void
test_huge_gaps (void **state)
{
    (void) state;
    series_t s = s_series_new (8);
    int64_t stamps[] = {INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX / 2, INT64_MAX - 1, INT64_MAX};
    memcpy (s.ts, stamps, sizeof stamps);
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = (double) i;
    s_check (&s);
    //  Alternating tiny and huge deltas: every bucket, both signs.
    series_t t = s_series_new (200);
    int64_t ts = -5000000000000LL;
    for (size_t i = 0; i < t.n; i++) {
        int64_t steps[] = {1, 1, 64, 65, 2048, 2049, 1 << 19, (1 << 19) + 1,
                           1LL << 31, (1LL << 31) + 1, 1LL << 40, 3};
        ts += steps[i % 12];
        t.ts[i] = ts;
        t.v[i] = 1.5;
    }
    s_check (&t);
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

//  The open chunk is flushed at any moment: every prefix must decode.
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
        s_expect_decodes (data, size, &s, i + 1);
    }
    tm_gorilla_enc_fini (&enc);
    s_series_free (&s);
}

//  Resuming at any point gives the same bytes as never stopping.
static void
test_resume (void **state)
{
    (void) state;
    series_t s = s_series_new (400);
    int64_t ts = T0;
    for (size_t i = 0; i < s.n; i++) {
        ts += 5000 + (int64_t) (s_rand () % 3000);
        s.ts[i] = ts;
        s.v[i] = i % 100 < 70? round (s_gauss () * 1000) / 100: s_gauss ();
    }
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
        size_t size;
        const uint8_t *data = tm_gorilla_enc_data (&a, &size);
        tm_gorilla_enc_init (&b);
        const char *error = NULL;
        assert_int_equal (tm_gorilla_enc_resume (&b, data, size, &error), 0);
        assert_int_equal (tm_gorilla_enc_count (&b), cut);
        tm_gorilla_enc_fini (&a);
        for (size_t i = cut; i < s.n; i++)
            assert_int_equal (tm_gorilla_enc_append (&b, s.ts[i], s.v[i]), 0);
        data = tm_gorilla_enc_data (&b, &size);
        assert_int_equal (size, whole_size);
        assert_memory_equal (data, whole_data, size);
        tm_gorilla_enc_fini (&b);
    }
    //  A malformed chunk is refused and leaves the encoder empty.
    tm_gorilla_enc_t c;
    tm_gorilla_enc_init (&c);
    const char *error = NULL;
    assert_int_equal (tm_gorilla_enc_resume (&c, whole_data, whole_size - 1, &error), -1);
    assert_non_null (error);
    assert_int_equal (tm_gorilla_enc_count (&c), 0);
    tm_gorilla_enc_fini (&c);
    tm_gorilla_enc_fini (&whole);
    s_series_free (&s);
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
    assert_int_equal (tm_gorilla_enc_append (&enc, T0 + 10, 3.0), TM_GORILLA_E_ORDER);
    assert_int_equal (tm_gorilla_enc_append (&enc, T0 + 5, 3.0), TM_GORILLA_E_ORDER);
    assert_int_equal (tm_gorilla_enc_append (&enc, INT64_MIN, 3.0), TM_GORILLA_E_ORDER);
    size_t after;
    data = tm_gorilla_enc_data (&enc, &after);
    assert_int_equal (after, before);
    assert_memory_equal (data, copy, before);
    assert_int_equal (tm_gorilla_enc_count (&enc), 2);
    assert_int_equal (tm_gorilla_enc_last_ts (&enc), T0 + 10);
    assert_int_equal (tm_gorilla_enc_append (&enc, T0 + 11, 3.0), 0);
    tm_gorilla_enc_fini (&enc);
}

//  A varied chunk for the damage tests.
static uint8_t *
s_sample_chunk (size_t *size, series_t *s)
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
    uint8_t *copy = malloc (*size);
    assert_non_null (copy);
    memcpy (copy, data, *size);
    tm_gorilla_enc_fini (&enc);
    return copy;
}

//  Decode all of a (possibly damaged) chunk from an exactly sized heap
//  copy, so a read past the end shows under ASan and valgrind. Returns
//  the points decoded, *rc the final return code.
static size_t
s_decode_all (const uint8_t *data, size_t size, int *rc)
{
    uint8_t *exact = malloc (size? size: 1);
    assert_non_null (exact);
    memcpy (exact, data, size);
    tm_gorilla_dec_t dec;
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
    size_t size;
    uint8_t *chunk = s_sample_chunk (&size, &s);
    int rc;
    assert_int_equal (s_decode_all (chunk, size, &rc), s.n);
    assert_int_equal (rc, 0);
    //  Every cut loses a part of the last point: always an error.
    for (size_t len = 0; len < size; len++) {
        s_decode_all (chunk, len, &rc);
        assert_int_equal (rc, -1);
    }
    free (chunk);
    s_series_free (&s);
}

static void
test_corrupted (void **state)
{
    (void) state;
    series_t s;
    size_t size;
    uint8_t *chunk = s_sample_chunk (&size, &s);
    size_t errors = 0;
    for (size_t bit = 0; bit < size * 8; bit++) {
        chunk[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        int rc;
        s_decode_all (chunk, size, &rc);
        errors += rc == -1;
        chunk[bit / 8] ^= (uint8_t) (1u << (bit % 8));
    }
    //  Many flips desynchronise the stream and are caught; others only
    //  change a value, which no format without a checksum can see.
    printf ("single-bit flips of a %zu-byte chunk detected: %zu of %zu\n", size, errors,
            size * 8);
    assert_true (errors > size * 8 / 10);
    //  Random garbage: never a crash or an endless loop.
    uint8_t junk[256];
    for (int round = 0; round < 2000; round++) {
        size_t len = s_rand () % sizeof junk;
        for (size_t i = 0; i < len; i++)
            junk[i] = (uint8_t) s_rand ();
        if (len > 0)
            junk[0] = TM_GORILLA_VERSION;
        int rc;
        s_decode_all (junk, len, &rc);
    }
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
        cmocka_unit_test (test_resume),
        cmocka_unit_test (test_order_errors),
        cmocka_unit_test (test_truncated),
        cmocka_unit_test (test_corrupted),
        cmocka_unit_test (test_malformed),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
