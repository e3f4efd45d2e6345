/*  test_sketch - unit tests for tm_sketch, the DDSketch behind p50/p90/p99

    A percentile in a query is only as good as this sketch, and it is
    computed by workers and merged by brokers of other sites, so the tests
    check the three promises that makes: every quantile is within alpha of
    the exact one (measured against a sorted copy, over distributions of
    different shapes, signs and ranges), merging gives the sketch of the
    union (same quantiles, count and bytes, in any order, even once
    buckets collapse), and the decoder of bytes from another process
    accepts exactly the encodings the encoder writes: every truncation,
    every single-bit corruption and hand-made malformed fields are fed to
    it, and whatever it accepts must encode back to the same bytes.
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

#include "tm_sketch.h"
#include "tm_varint.h"

#define N_VALUES 100000            //  Values per accuracy test
//  Headroom over alpha for rounding in log() at bucket boundaries: a value
//  a few ulps past a boundary may land in the bucket below.
#define S_SLACK 1e-12

static const double s_quantiles[] = {0.0,  0.001, 0.01, 0.1,  0.25,  0.5,
                                     0.75, 0.9,   0.95, 0.99, 0.999, 1.0};
#define N_QUANTILES (sizeof s_quantiles / sizeof s_quantiles[0])

static uint64_t s_rng = 0x9E3779B97F4A7C15ULL;

static uint64_t
s_rand (void)
{
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return s_rng * 0x2545F4914F6CDD1DULL;
}

//  Uniform in (0, 1): never 0, so log() of it is finite.
static double
s_uniform (void)
{
    return ((double) (s_rand () >> 11) + 0.5) * 0x1.0p-53;
}

static double
s_gauss (void)
{
    return sqrt (-2 * log (s_uniform ())) * cos (6.283185307179586 * s_uniform ());
}

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a;
    double y = *(const double *) b;
    return x < y? -1: x > y;
}

static tm_sketch_t *
s_sketch_of (const double *v, size_t n, double alpha)
{
    tm_sketch_t *sketch = tm_sketch_new (alpha);
    assert_non_null (sketch);
    for (size_t i = 0; i < n; i++)
        assert_int_equal (tm_sketch_add (sketch, v[i]), 0);
    assert_int_equal (tm_sketch_count (sketch), n);
    return sketch;
}

//  Largest relative error over s_quantiles; fails past alpha.
static double
s_check_accuracy (const char *name, const double *v, size_t n, double alpha)
{
    tm_sketch_t *sketch = s_sketch_of (v, n, alpha);
    double *sorted = malloc (n * sizeof *sorted);
    assert_non_null (sorted);
    memcpy (sorted, v, n * sizeof *sorted);
    qsort (sorted, n, sizeof *sorted, s_cmp_double);
    //  The promise holds down to TM_SKETCH_MAX_BINS - 1 buckets below the
    //  highest magnitude of each sign; lower, buckets may have collapsed.
    double span = pow ((1 + alpha) / (1 - alpha), TM_SKETCH_MAX_BINS - 2);
    double worst = 0;
    double previous = -INFINITY;
    size_t collapsed = 0;
    for (size_t k = 0; k < N_QUANTILES; k++) {
        double q = s_quantiles[k];
        double exact = sorted[(size_t) floor (q * (double) (n - 1))];
        double got = tm_sketch_quantile (sketch, q);
        assert_false (isnan (got));
        double error = exact == 0? fabs (got): fabs (got - exact) / fabs (exact);
        double top = exact < 0? -sorted[0]: sorted[n - 1];
        if (exact != 0 && fabs (exact) * span < top) {
            collapsed++;
            error = 0;
        }
        if (error > worst)
            worst = error;
        if (error > alpha * (1 + S_SLACK)) {
            fprintf (stderr, "%s alpha=%g q=%g exact=%.17g got=%.17g error=%g\n", name, alpha,
                     q, exact, got, error);
            fail ();
        }
        assert_true (got >= sorted[0] && got <= sorted[n - 1]);
        assert_true (got >= previous);   //  Quantiles do not decrease with q
        previous = got;
    }
    assert_true (tm_sketch_quantile (sketch, 0) == sorted[0]);
    assert_true (tm_sketch_quantile (sketch, 1) == sorted[n - 1]);
    printf ("    %-12s alpha=%-5g worst relative error %.6f%s\n", name, alpha, worst,
            collapsed? " (some quantiles in collapsed buckets, not checked)": "");
    free (sorted);
    tm_sketch_destroy (&sketch);
    assert_null (sketch);
    return worst;
}

typedef enum {
    D_UNIFORM,
    D_EXPONENTIAL,
    D_LOGNORMAL,
    D_NEGATIVE,
    D_MIXED,
    D_ZEROS,
    D_CONSTANT,
    D_INTEGERS
} dist_t;

static const char *s_dist_name[] = {"uniform",  "exponential", "lognormal", "negative",
                                    "mixed",    "zeros",       "constant",  "integers"};

static double *
s_values (dist_t dist, size_t n)
{
    double *v = malloc (n * sizeof *v);
    assert_non_null (v);
    for (size_t i = 0; i < n; i++) {
        switch (dist) {
            case D_UNIFORM:
                v[i] = 1000 * s_uniform ();
                break;
            case D_EXPONENTIAL:
                v[i] = -log (s_uniform ()) * 0.25;
                break;
            case D_LOGNORMAL:
                v[i] = exp (1 + 2 * s_gauss ());
                break;
            case D_NEGATIVE:
                v[i] = -exp (3 + s_gauss ());
                break;
            case D_MIXED:       //  Both signs and some exact zeros
                v[i] = s_rand () % 10 == 0? 0: 50 * s_gauss ();
                break;
            case D_ZEROS:       //  Half zeros (both signs of them), half small readings
                v[i] = s_rand () % 2? (s_rand () % 2? 0.0: -0.0): s_uniform () * 0.001;
                break;
            case D_CONSTANT:
                v[i] = 21.5;
                break;
            case D_INTEGERS:    //  Many exact repeats, as counters give
                v[i] = (double) (s_rand () % 50) - 10;
                break;
        }
    }
    return v;
}

static void
test_accuracy (void **state)
{
    (void) state;
    const double alphas[] = {TM_SKETCH_DEFAULT_ALPHA, 0.05, 0.001};
    for (size_t a = 0; a < sizeof alphas / sizeof alphas[0]; a++)
        for (dist_t d = D_UNIFORM; d <= D_INTEGERS; d++) {
            double *v = s_values (d, N_VALUES);
            s_check_accuracy (s_dist_name[d], v, N_VALUES, alphas[a]);
            free (v);
        }
}

static void
test_small_counts (void **state)
{
    (void) state;
    //  Ranks at small n are where an off-by-one shows.
    for (size_t n = 1; n <= 40; n++) {
        double *v = s_values (D_MIXED, n);
        s_check_accuracy ("small", v, n, 0.02);
        free (v);
    }
    //  Values that count as zero (subnormals), next to a normal one: the
    //  zero bucket answers 0, then clamped to the exact min.
    tm_sketch_t *sketch = tm_sketch_new (0.01);
    assert_int_equal (tm_sketch_add (sketch, 1e-320), 0);
    assert_int_equal (tm_sketch_add (sketch, 1e-320), 0);
    assert_int_equal (tm_sketch_add (sketch, 3.0), 0);
    assert_true (tm_sketch_quantile (sketch, 0) == 1e-320);
    assert_true (tm_sketch_quantile (sketch, 0.5) == 1e-320);
    assert_true (tm_sketch_quantile (sketch, 1) == 3.0);
    //  The extremes of double.
    assert_int_equal (tm_sketch_add (sketch, DBL_MAX), 0);
    assert_int_equal (tm_sketch_add (sketch, -DBL_MAX), 0);
    assert_int_equal (tm_sketch_add (sketch, DBL_MIN), 0);
    assert_true (tm_sketch_quantile (sketch, 1) == DBL_MAX);
    assert_true (tm_sketch_quantile (sketch, 0) == -DBL_MAX);
    //  Sorted: -DBL_MAX, two zeros, DBL_MIN, 3, DBL_MAX. DBL_MIN and 3 are
    //  tens of thousands of buckets below DBL_MAX: collapsed into the
    //  lowest positive bucket kept, but counted.
    assert_int_equal (tm_sketch_count (sketch), 6);
    assert_true (tm_sketch_quantile (sketch, 0.3) == 0);
    double collapsed = tm_sketch_quantile (sketch, 0.9);
    assert_true (collapsed > 1e280 && collapsed < 1e300);
    assert_true (tm_sketch_quantile (sketch, 0.6) == collapsed);
    tm_sketch_destroy (&sketch);
    //  The lowest normal magnitudes, with no collapse.
    sketch = tm_sketch_new (0.01);
    assert_int_equal (tm_sketch_add (sketch, -DBL_MIN), 0);
    assert_int_equal (tm_sketch_add (sketch, 1.5 * DBL_MIN), 0);
    assert_int_equal (tm_sketch_add (sketch, DBL_MIN), 0);
    assert_int_equal (tm_sketch_add (sketch, 1e-300), 0);
    //  Sorted: -DBL_MIN, DBL_MIN, 1.5 DBL_MIN, 1e-300; ranks floor(q * 3).
    double p = tm_sketch_quantile (sketch, 0.67);
    assert_true (fabs (p - 1.5 * DBL_MIN) <= 0.01 * 1.5 * DBL_MIN);
    p = tm_sketch_quantile (sketch, 0.5);
    assert_true (fabs (p - DBL_MIN) <= 0.01 * DBL_MIN);
    p = tm_sketch_quantile (sketch, 0.2);
    assert_true (p >= -DBL_MIN && fabs (p + DBL_MIN) <= 0.01 * DBL_MIN);
    tm_sketch_destroy (&sketch);
}

static void
test_empty_and_refused (void **state)
{
    (void) state;
    assert_null (tm_sketch_new (0));
    assert_null (tm_sketch_new (1));
    assert_null (tm_sketch_new (-0.01));
    assert_null (tm_sketch_new (1.5));
    assert_null (tm_sketch_new (NAN));
    assert_null (tm_sketch_new (INFINITY));
    assert_null (tm_sketch_new (1e-12));
    tm_sketch_destroy (NULL);

    tm_sketch_t *sketch = tm_sketch_new (TM_SKETCH_DEFAULT_ALPHA);
    assert_non_null (sketch);
    assert_true (tm_sketch_alpha (sketch) == TM_SKETCH_DEFAULT_ALPHA);
    assert_int_equal (tm_sketch_count (sketch), 0);
    assert_true (isnan (tm_sketch_quantile (sketch, 0)));
    assert_true (isnan (tm_sketch_quantile (sketch, 0.5)));
    assert_true (isnan (tm_sketch_quantile (sketch, 1)));

    assert_int_equal (tm_sketch_add (sketch, NAN), -1);
    assert_int_equal (tm_sketch_add (sketch, INFINITY), -1);
    assert_int_equal (tm_sketch_add (sketch, -INFINITY), -1);
    assert_int_equal (tm_sketch_count (sketch), 0);
    assert_true (isnan (tm_sketch_quantile (sketch, 0.5)));

    assert_int_equal (tm_sketch_add (sketch, 7), 0);
    assert_int_equal (tm_sketch_add (sketch, NAN), -1);
    assert_int_equal (tm_sketch_count (sketch), 1);
    assert_true (tm_sketch_quantile (sketch, 0.5) == 7);
    assert_true (isnan (tm_sketch_quantile (sketch, -0.01)));
    assert_true (isnan (tm_sketch_quantile (sketch, 1.01)));
    assert_true (isnan (tm_sketch_quantile (sketch, NAN)));
    tm_sketch_destroy (&sketch);
    assert_null (sketch);
    tm_sketch_destroy (&sketch);
}

//  The same sketch: count, quantiles and bytes.
static void
s_assert_same (const tm_sketch_t *a, const tm_sketch_t *b)
{
    assert_int_equal (tm_sketch_count (a), tm_sketch_count (b));
    assert_true (tm_sketch_alpha (a) == tm_sketch_alpha (b));
    for (size_t k = 0; k < N_QUANTILES; k++) {
        double x = tm_sketch_quantile (a, s_quantiles[k]);
        double y = tm_sketch_quantile (b, s_quantiles[k]);
        assert_true (x == y || (isnan (x) && isnan (y)));
    }
    size_t size_a, size_b;
    uint8_t *bytes_a = tm_sketch_encode (a, &size_a);
    uint8_t *bytes_b = tm_sketch_encode (b, &size_b);
    assert_non_null (bytes_a);
    assert_non_null (bytes_b);
    assert_int_equal (size_a, size_b);
    assert_memory_equal (bytes_a, bytes_b, size_a);
    free (bytes_a);
    free (bytes_b);
}

//  Values from 1e-300 to 1e300: far more buckets than TM_SKETCH_MAX_BINS.
static double *
s_wide_values (size_t n)
{
    double *v = malloc (n * sizeof *v);
    assert_non_null (v);
    for (size_t i = 0; i < n; i++) {
        double x = pow (10, 600 * s_uniform () - 300);
        v[i] = s_rand () % 3 == 0? -x: x;
    }
    return v;
}

static void
s_check_merge (const double *v, size_t n, double alpha)
{
    tm_sketch_t *all = s_sketch_of (v, n, alpha);
    tm_sketch_t *a = tm_sketch_new (alpha);
    tm_sketch_t *b = tm_sketch_new (alpha);
    tm_sketch_t *c = tm_sketch_new (alpha);
    assert_non_null (a);
    assert_non_null (b);
    assert_non_null (c);
    //  Three uneven parts, b the largest, so merges grow both ways.
    for (size_t i = 0; i < n; i++) {
        uint64_t r = s_rand () % 10;
        assert_int_equal (tm_sketch_add (r < 2? a: r < 9? b: c, v[i]), 0);
    }
    tm_sketch_t *ab_c = tm_sketch_new (alpha);
    assert_int_equal (tm_sketch_merge (ab_c, a), 0);
    assert_int_equal (tm_sketch_merge (ab_c, b), 0);
    assert_int_equal (tm_sketch_merge (ab_c, c), 0);
    s_assert_same (ab_c, all);
    //  Another order, into a non-empty sketch.
    assert_int_equal (tm_sketch_merge (c, b), 0);
    assert_int_equal (tm_sketch_merge (c, a), 0);
    s_assert_same (c, all);
    //  Merging an empty sketch changes nothing.
    tm_sketch_t *empty = tm_sketch_new (alpha);
    assert_int_equal (tm_sketch_merge (c, empty), 0);
    s_assert_same (c, all);
    tm_sketch_destroy (&empty);
    tm_sketch_destroy (&a);
    tm_sketch_destroy (&b);
    tm_sketch_destroy (&c);
    tm_sketch_destroy (&ab_c);
    tm_sketch_destroy (&all);
}

static void
test_merge (void **state)
{
    (void) state;
    for (dist_t d = D_UNIFORM; d <= D_INTEGERS; d++) {
        double *v = s_values (d, N_VALUES / 4);
        s_check_merge (v, N_VALUES / 4, TM_SKETCH_DEFAULT_ALPHA);
        free (v);
    }
    double *v = s_wide_values (N_VALUES / 4);
    s_check_merge (v, N_VALUES / 4, TM_SKETCH_DEFAULT_ALPHA);
    s_check_merge (v, N_VALUES / 4, 0.2);
    free (v);
}

static void
test_merge_self_and_mismatch (void **state)
{
    (void) state;
    double *v = s_values (D_MIXED, 1000);
    tm_sketch_t *once = s_sketch_of (v, 1000, 0.01);
    tm_sketch_t *twice = s_sketch_of (v, 1000, 0.01);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal (tm_sketch_add (twice, v[i]), 0);
    assert_int_equal (tm_sketch_merge (once, once), 0);
    s_assert_same (once, twice);

    //  Another alpha: refused, self unchanged.
    tm_sketch_t *other = s_sketch_of (v, 10, 0.02);
    size_t before_size, after_size;
    uint8_t *before = tm_sketch_encode (once, &before_size);
    assert_int_equal (tm_sketch_merge (once, other), -1);
    uint8_t *after = tm_sketch_encode (once, &after_size);
    assert_int_equal (before_size, after_size);
    assert_memory_equal (before, after, before_size);
    assert_int_equal (tm_sketch_count (once), 2000);
    free (before);
    free (after);
    tm_sketch_destroy (&other);
    tm_sketch_destroy (&once);
    tm_sketch_destroy (&twice);
    free (v);
}

static void
test_collapse (void **state)
{
    (void) state;
    double *v = s_wide_values (N_VALUES);
    tm_sketch_t *sketch = s_sketch_of (v, N_VALUES, TM_SKETCH_DEFAULT_ALPHA);
    assert_int_equal (tm_sketch_count (sketch), N_VALUES);
    double *sorted = malloc (N_VALUES * sizeof *sorted);
    assert_non_null (sorted);
    memcpy (sorted, v, N_VALUES * sizeof *sorted);
    qsort (sorted, N_VALUES, sizeof *sorted, s_cmp_double);
    assert_true (tm_sketch_quantile (sketch, 0) == sorted[0]);
    assert_true (tm_sketch_quantile (sketch, 1) == sorted[N_VALUES - 1]);
    //  2048 buckets of 2% cover 17 decades: the top of each sign (the
    //  highest 1% of positives, the lowest 1% of negatives) stays exact
    //  to alpha; what collapsed is still counted and in range.
    double extremes[] = {0.001, 0.999};
    for (size_t k = 0; k < 2; k++) {
        double q = extremes[k];
        double exact = sorted[(size_t) floor (q * (N_VALUES - 1))];
        double got = tm_sketch_quantile (sketch, q);
        assert_true (fabs (got - exact) <= TM_SKETCH_DEFAULT_ALPHA * (1 + S_SLACK) * fabs (exact));
    }
    double previous = -INFINITY;
    for (double q = 0; q <= 1; q += 0.01) {
        double got = tm_sketch_quantile (sketch, q);
        assert_true (got >= previous && got >= sorted[0] && got <= sorted[N_VALUES - 1]);
        previous = got;
    }
    //  Bounded size: at most TM_SKETCH_MAX_BINS counts per sign.
    size_t size;
    uint8_t *bytes = tm_sketch_encode (sketch, &size);
    assert_non_null (bytes);
    assert_true (size < 2 * TM_SKETCH_MAX_BINS * 4);
    tm_sketch_t *back = tm_sketch_decode (bytes, size);
    assert_non_null (back);
    s_assert_same (back, sketch);
    free (bytes);
    tm_sketch_destroy (&back);

    //  The collapsed bucket keeps counting: values far below the kept
    //  range still land somewhere and are counted.
    for (int i = 0; i < 1000; i++)
        assert_int_equal (tm_sketch_add (sketch, 1e-305), 0);
    assert_int_equal (tm_sketch_count (sketch), N_VALUES + 1000);
    free (sorted);
    free (v);
    tm_sketch_destroy (&sketch);
}

static tm_sketch_t *
s_round_trip (const tm_sketch_t *sketch, size_t *size_p)
{
    size_t size;
    uint8_t *bytes = tm_sketch_encode (sketch, &size);
    assert_non_null (bytes);
    tm_sketch_t *back = tm_sketch_decode (bytes, size);
    assert_non_null (back);
    s_assert_same (back, sketch);
    free (bytes);
    if (size_p)
        *size_p = size;
    return back;
}

static void
test_round_trip (void **state)
{
    (void) state;
    tm_sketch_t *empty = tm_sketch_new (0.03);
    tm_sketch_t *back = s_round_trip (empty, NULL);
    assert_int_equal (tm_sketch_count (back), 0);
    assert_true (isnan (tm_sketch_quantile (back, 0.5)));
    //  A decoded sketch goes on adding and merging.
    assert_int_equal (tm_sketch_add (back, -2), 0);
    assert_int_equal (tm_sketch_merge (back, back), 0);
    assert_true (tm_sketch_quantile (back, 0.5) == -2);
    tm_sketch_destroy (&back);
    tm_sketch_destroy (&empty);

    for (dist_t d = D_UNIFORM; d <= D_INTEGERS; d++) {
        double *v = s_values (d, N_VALUES);
        tm_sketch_t *sketch = s_sketch_of (v, N_VALUES, TM_SKETCH_DEFAULT_ALPHA);
        size_t size;
        back = s_round_trip (sketch, &size);
        printf ("    %-12s %d values encode in %zu bytes\n", s_dist_name[d], N_VALUES, size);
        if (d == D_CONSTANT)
            assert_true (size < 40);
        tm_sketch_destroy (&back);
        tm_sketch_destroy (&sketch);
        free (v);
    }
}

//  A decoder's answer to some bytes: NULL, or a sketch that encodes back
//  to exactly those bytes (the encoding is canonical) and keeps its word.
static void
s_decode_hostile (const uint8_t *bytes, size_t size)
{
    tm_sketch_t *sketch = tm_sketch_decode (bytes, size);
    if (!sketch)
        return;
    size_t again_size;
    uint8_t *again = tm_sketch_encode (sketch, &again_size);
    assert_non_null (again);
    assert_int_equal (again_size, size);
    assert_memory_equal (again, bytes, size);
    double lo = tm_sketch_quantile (sketch, 0);
    double hi = tm_sketch_quantile (sketch, 1);
    for (size_t k = 0; k < N_QUANTILES; k++) {
        double x = tm_sketch_quantile (sketch, s_quantiles[k]);
        if (tm_sketch_count (sketch) == 0)
            assert_true (isnan (x));
        else
            assert_true (x >= lo && x <= hi);
    }
    free (again);
    tm_sketch_destroy (&sketch);
}

static void
test_decode_corrupted (void **state)
{
    (void) state;
    const size_t sizes[] = {0, 1, 3, 200};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        double *v = s_values (D_MIXED, sizes[s]? sizes[s]: 1);
        tm_sketch_t *sketch = s_sketch_of (v, sizes[s], 0.05);
        size_t size;
        uint8_t *bytes = tm_sketch_encode (sketch, &size);
        assert_non_null (bytes);
        //  Every strict prefix is refused; so is a byte more.
        for (size_t n = 0; n < size; n++) {
            uint8_t *prefix = malloc (n? n: 1);
            assert_non_null (prefix);
            memcpy (prefix, bytes, n);
            assert_null (tm_sketch_decode (prefix, n));
            free (prefix);
        }
        uint8_t *longer = malloc (size + 1);
        assert_non_null (longer);
        memcpy (longer, bytes, size);
        longer[size] = 0;
        assert_null (tm_sketch_decode (longer, size + 1));
        free (longer);
        //  Every single-bit flip: refused, or a sketch that keeps its word.
        for (size_t i = 0; i < size; i++)
            for (int bit = 0; bit < 8; bit++) {
                bytes[i] ^= (uint8_t) (1u << bit);
                s_decode_hostile (bytes, size);
                bytes[i] ^= (uint8_t) (1u << bit);
            }
        //  Random bytes over a valid header.
        for (int t = 0; t < 2000; t++) {
            uint8_t junk[64];
            memcpy (junk, bytes, size < 10? size: 10);
            for (size_t i = 10; i < sizeof junk; i++)
                junk[i] = (uint8_t) s_rand ();
            s_decode_hostile (junk, 10 + s_rand () % (sizeof junk - 10));
        }
        assert_null (tm_sketch_decode (NULL, 0));
        free (bytes);
        free (v);
        tm_sketch_destroy (&sketch);
    }
}

//  Hand-made encodings, field by field, as the format in tm_sketch.c says.
typedef struct {
    uint8_t data[30000];           //  Room for two full stores
    size_t size;                   //  Bytes written
} buf_t;

static void
s_byte (buf_t *b, uint8_t v)
{
    b->data[b->size++] = v;
}

static void
s_varint (buf_t *b, uint64_t v)
{
    b->size += tm_varint_put (b->data + b->size, v);
}

static void
s_double (buf_t *b, double v)
{
    uint64_t bits;
    memcpy (&bits, &v, sizeof bits);
    for (int i = 0; i < 8; i++)
        s_byte (b, (uint8_t) (bits >> (8 * i)));
}

static void
s_header (buf_t *b, double alpha, uint64_t zeros)
{
    b->size = 0;
    s_byte (b, 0x5D);
    s_byte (b, 1);
    s_double (b, alpha);
    s_varint (b, zeros);
}

static void
s_assert_refused (const buf_t *b)
{
    assert_null (tm_sketch_decode (b->data, b->size));
}

static void
test_decode_malformed (void **state)
{
    (void) state;
    buf_t b;
    //  Accepted: 2 zeros, negatives at -3 (one run of 2), positives in two
    //  runs. Checks the builder, so the refusals below mean something.
    s_header (&b, 0.1, 2);
    s_varint (&b, 1);
    s_varint (&b, tm_zigzag (5));
    s_varint (&b, 1);
    s_varint (&b, 4);
    s_varint (&b, 1);
    s_varint (&b, 2);
    s_varint (&b, tm_zigzag (-3));
    s_varint (&b, 0);
    s_varint (&b, 7);
    s_varint (&b, 0);              //  One empty bucket
    s_varint (&b, 1);
    s_varint (&b, 1);
    s_varint (&b, 1);
    s_double (&b, -4.0);
    s_double (&b, 2.0);
    tm_sketch_t *ok = tm_sketch_decode (b.data, b.size);
    assert_non_null (ok);
    assert_int_equal (tm_sketch_count (ok), 2 + 5 + 9);
    assert_true (tm_sketch_alpha (ok) == 0.1);
    tm_sketch_destroy (&ok);
    buf_t good = b;

    //  Wrong magic, wrong version.
    b = good;
    b.data[0] ^= 1;
    s_assert_refused (&b);
    b = good;
    b.data[1] = 2;
    s_assert_refused (&b);

    //  Alpha outside (0, 1) or not a number.
    const double bad_alphas[] = {0, 1, -0.5, 2, NAN, INFINITY, 1e-300};
    for (size_t i = 0; i < sizeof bad_alphas / sizeof bad_alphas[0]; i++) {
        s_header (&b, bad_alphas[i], 0);
        s_varint (&b, 0);
        s_varint (&b, 0);
        s_assert_refused (&b);
    }
    s_header (&b, 0.5, 0);         //  The same, valid: an empty sketch
    s_varint (&b, 0);
    s_varint (&b, 0);
    ok = tm_sketch_decode (b.data, b.size);
    assert_non_null (ok);
    tm_sketch_destroy (&ok);

    //  An empty sketch with min and max; a non-empty one without.
    s_double (&b, 1);
    s_double (&b, 1);
    s_assert_refused (&b);
    s_header (&b, 0.5, 1);
    s_varint (&b, 0);
    s_varint (&b, 0);
    s_assert_refused (&b);

    //  Zero count plus a bucket count overflowing 64 bits.
    s_header (&b, 0.5, UINT64_MAX);
    s_varint (&b, 0);
    s_varint (&b, 1);
    s_varint (&b, tm_zigzag (0));
    s_varint (&b, 0);
    s_varint (&b, 1);
    s_double (&b, 0);
    s_double (&b, 1);
    s_assert_refused (&b);
    //  Two buckets overflowing within a store.
    s_header (&b, 0.5, 0);
    s_varint (&b, 0);
    s_varint (&b, 1);
    s_varint (&b, tm_zigzag (0));
    s_varint (&b, 1);
    s_varint (&b, UINT64_MAX);
    s_varint (&b, 1);
    s_double (&b, 1);
    s_double (&b, 1);
    s_assert_refused (&b);

    //  Min and max: NaN, inverted, of the wrong sign for the stores.
    const double bad_bounds[][2] = {{NAN, 1}, {1, NAN}, {-INFINITY, 1}, {1, INFINITY},
                                    {2, 1},   {1, -1},  {0, 1},         {-1, 1}};
    for (size_t i = 0; i < sizeof bad_bounds / sizeof bad_bounds[0]; i++) {
        s_header (&b, 0.5, 0);
        s_varint (&b, 0);
        s_varint (&b, 1);
        s_varint (&b, tm_zigzag (0));
        s_varint (&b, 0);
        s_varint (&b, 3);
        s_double (&b, bad_bounds[i][0]);
        s_double (&b, bad_bounds[i][1]);
        s_assert_refused (&b);
    }

    //  An empty bucket written inside a run, and a run of empty buckets.
    s_header (&b, 0.5, 0);
    s_varint (&b, 0);
    s_varint (&b, 1);
    s_varint (&b, tm_zigzag (0));
    s_varint (&b, 1);
    s_varint (&b, 1);
    s_varint (&b, 0);
    s_double (&b, 1);
    s_double (&b, 1);
    s_assert_refused (&b);

    //  A store spanning TM_SKETCH_MAX_BINS + 1 buckets: one run too long,
    //  or two runs too far apart. One less is accepted.
    for (int over = 0; over <= 1; over++) {
        s_header (&b, 0.01, 0);
        s_varint (&b, 0);
        s_varint (&b, 1);
        s_varint (&b, tm_zigzag (-100));
        s_varint (&b, TM_SKETCH_MAX_BINS - 1 + (uint64_t) over);
        for (int i = 0; i < TM_SKETCH_MAX_BINS + over; i++)
            s_varint (&b, 1);
        s_double (&b, 0.5);
        s_double (&b, 1e10);
        tm_sketch_t *s = tm_sketch_decode (b.data, b.size);
        assert_true (over? s == NULL: s != NULL);
        tm_sketch_destroy (&s);

        s_header (&b, 0.01, 0);
        s_varint (&b, 0);
        s_varint (&b, 2);
        s_varint (&b, tm_zigzag (0));
        s_varint (&b, 0);
        s_varint (&b, 1);
        s_varint (&b, TM_SKETCH_MAX_BINS - 3 + (uint64_t) over);   //  Gap - 1
        s_varint (&b, 0);
        s_varint (&b, 1);
        s_double (&b, 1);
        s_double (&b, 1e10);
        s = tm_sketch_decode (b.data, b.size);
        assert_true (over? s == NULL: s != NULL);
        tm_sketch_destroy (&s);
    }
    //  A huge run count, length or gap, with nothing behind them.
    const uint64_t huge[] = {TM_SKETCH_MAX_BINS + 1, UINT64_MAX};
    for (size_t h = 0; h < 2; h++) {
        s_header (&b, 0.01, 0);
        s_varint (&b, huge[h]);
        s_assert_refused (&b);
        s_header (&b, 0.01, 0);
        s_varint (&b, 1);
        s_varint (&b, tm_zigzag (0));
        s_varint (&b, huge[h]);
        s_assert_refused (&b);
        s_header (&b, 0.01, 0);
        s_varint (&b, 2);
        s_varint (&b, tm_zigzag (0));
        s_varint (&b, 0);
        s_varint (&b, 1);
        s_varint (&b, huge[h]);
        s_varint (&b, 0);
        s_varint (&b, 1);
        s_assert_refused (&b);
    }
    //  A bucket index no double maps to.
    const int64_t bad_index[] = {100000, -100000, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < 4; i++) {
        s_header (&b, 0.01, 0);
        s_varint (&b, 0);
        s_varint (&b, 1);
        s_varint (&b, tm_zigzag (bad_index[i]));
        s_varint (&b, 0);
        s_varint (&b, 1);
        s_double (&b, 1);
        s_double (&b, 1);
        s_assert_refused (&b);
    }

    //  Non-minimal varints: 0 as two bytes, then an 11th byte.
    b = good;
    memmove (b.data + 11, b.data + 10, b.size - 10);
    b.data[10] = 0x82;             //  2 zeros as 0x82 0x00
    b.data[11] = 0x00;
    b.size++;
    s_assert_refused (&b);
    s_header (&b, 0.5, 0);
    b.size--;
    for (int i = 0; i < 10; i++)
        s_byte (&b, 0xFF);
    s_byte (&b, 0x01);
    s_assert_refused (&b);
    //  A tenth byte with bits past the 64th.
    s_header (&b, 0.5, 0);
    b.size--;
    for (int i = 0; i < 9; i++)
        s_byte (&b, 0xFF);
    s_byte (&b, 0x03);
    s_varint (&b, 0);
    s_varint (&b, 0);
    s_double (&b, 0);
    s_double (&b, 0);
    s_assert_refused (&b);
    b.data[19] = 0x01;             //  The same with one bit: UINT64_MAX zeros
    ok = tm_sketch_decode (b.data, b.size);
    assert_non_null (ok);
    assert_true (tm_sketch_count (ok) == UINT64_MAX);
    //  A count that cannot grow any more refuses values and merges.
    assert_int_equal (tm_sketch_add (ok, 0), -1);
    tm_sketch_t *one = tm_sketch_new (0.5);
    assert_int_equal (tm_sketch_add (one, 1), 0);
    assert_int_equal (tm_sketch_merge (ok, one), -1);
    assert_int_equal (tm_sketch_merge (one, ok), -1);
    assert_true (tm_sketch_count (ok) == UINT64_MAX);
    assert_int_equal (tm_sketch_count (one), 1);
    //  A rank past 2^53 still lands on the zero bucket.
    assert_true (tm_sketch_quantile (ok, 0.999999) == 0);
    tm_sketch_destroy (&one);
    tm_sketch_destroy (&ok);
}

static void
test_lognormal_size (void **state)
{
    (void) state;
    double *v = s_values (D_LOGNORMAL, N_VALUES);
    tm_sketch_t *sketch = s_sketch_of (v, N_VALUES, TM_SKETCH_DEFAULT_ALPHA);
    size_t size;
    uint8_t *bytes = tm_sketch_encode (sketch, &size);
    assert_non_null (bytes);
    printf ("    lognormal(1, 2): %d values, alpha %g, %zu bytes\n", N_VALUES,
            TM_SKETCH_DEFAULT_ALPHA, size);
    //  About 8 sigma of range over buckets 2% wide, up to 3 bytes each.
    assert_true (size < 2500);
    free (bytes);
    free (v);
    tm_sketch_destroy (&sketch);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_accuracy),
        cmocka_unit_test (test_small_counts),
        cmocka_unit_test (test_empty_and_refused),
        cmocka_unit_test (test_merge),
        cmocka_unit_test (test_merge_self_and_mismatch),
        cmocka_unit_test (test_collapse),
        cmocka_unit_test (test_round_trip),
        cmocka_unit_test (test_decode_corrupted),
        cmocka_unit_test (test_decode_malformed),
        cmocka_unit_test (test_lognormal_size),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
