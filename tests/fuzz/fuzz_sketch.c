/*  fuzz_sketch - tm_sketch's decoder over arbitrary bytes, and the sketch
    itself over arbitrary values

    The input is used twice. As an encoding: the decoder must not crash,
    and what it accepts must be a sketch that keeps every promise: it
    encodes back to exactly the input (the format is canonical), decodes
    again to the same count and bytes, answers quantiles that never
    decrease and stay within [q=0, q=1], merges into a fresh sketch as
    itself, and into itself as twice itself. As a script of values: the
    first byte picks alpha, then each 9-byte record is a value (raw bits,
    or a decimal of any scale) and which of two sketches it goes to;
    merged they must be byte for byte the sketch of all values, and both
    must round-trip. A broken promise aborts.
*/
#include "fuzz.h"
#include "tm_sketch.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const double s_quantiles[] = {0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1};
#define N_QUANTILES (sizeof s_quantiles / sizeof s_quantiles[0])

static bool
s_same_bytes (const tm_sketch_t *a, const tm_sketch_t *b)
{
    size_t size_a, size_b;
    uint8_t *bytes_a = tm_sketch_encode (a, &size_a);
    uint8_t *bytes_b = tm_sketch_encode (b, &size_b);
    if (!bytes_a || !bytes_b)
        abort ();
    bool same = size_a == size_b && memcmp (bytes_a, bytes_b, size_a) == 0;
    free (bytes_a);
    free (bytes_b);
    return same;
}

//  Quantiles of a sketch: NAN when empty, else non-decreasing in [lo, hi].
static void
s_check_quantiles (const tm_sketch_t *sketch)
{
    double lo = tm_sketch_quantile (sketch, 0);
    double hi = tm_sketch_quantile (sketch, 1);
    double previous = lo;
    for (size_t k = 0; k < N_QUANTILES; k++) {
        double x = tm_sketch_quantile (sketch, s_quantiles[k]);
        if (tm_sketch_count (sketch) == 0) {
            if (!isnan (x))
                abort ();
        }
        else if (!(x >= lo && x <= hi && x >= previous))
            abort ();
        previous = x;
    }
    if (!isnan (tm_sketch_quantile (sketch, -0.5)) || !isnan (tm_sketch_quantile (sketch, NAN)))
        abort ();
}

//  Encode, decode: the same count, the same bytes.
static void
s_check_round_trip (const tm_sketch_t *sketch)
{
    size_t size;
    uint8_t *bytes = tm_sketch_encode (sketch, &size);
    if (!bytes)
        abort ();
    tm_sketch_t *back = tm_sketch_decode (bytes, size);
    if (!back || tm_sketch_count (back) != tm_sketch_count (sketch) || !s_same_bytes (back, sketch))
        abort ();
    tm_sketch_destroy (&back);
    free (bytes);
}

static void
s_as_encoding (const uint8_t *data, size_t size)
{
    tm_sketch_t *sketch = tm_sketch_decode (data, size);
    if (!sketch)
        return;
    size_t again_size;
    uint8_t *again = tm_sketch_encode (sketch, &again_size);
    if (!again || again_size != size || memcmp (again, data, size) != 0)
        abort ();
    free (again);
    s_check_round_trip (sketch);
    s_check_quantiles (sketch);

    tm_sketch_t *fresh = tm_sketch_new (tm_sketch_alpha (sketch));
    if (!fresh || tm_sketch_merge (fresh, sketch) != 0 || !s_same_bytes (fresh, sketch))
        abort ();
    //  Into itself: twice the count, unless that overflows (then refused,
    //  unchanged).
    uint64_t count = tm_sketch_count (sketch);
    int rc = tm_sketch_merge (fresh, fresh);
    if (count <= UINT64_MAX / 2) {
        if (rc != 0 || tm_sketch_count (fresh) != 2 * count)
            abort ();
        s_check_round_trip (fresh);
        s_check_quantiles (fresh);
    }
    else if (rc != -1 || !s_same_bytes (fresh, sketch))
        abort ();
    tm_sketch_destroy (&fresh);
    tm_sketch_destroy (&sketch);
}

static void
s_as_values (const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    //  Alphas from coarse to fine, so few values already collapse.
    static const double alphas[] = {0.01, 0.5, 0.2, 0.05, 0.001, 1e-6};
    double alpha = alphas[data[0] % (sizeof alphas / sizeof alphas[0])];
    tm_sketch_t *all = tm_sketch_new (alpha);
    tm_sketch_t *part[2] = {tm_sketch_new (alpha), tm_sketch_new (alpha)};
    if (!all || !part[0] || !part[1])
        abort ();
    uint64_t added = 0;
    for (size_t i = 1; i + 9 <= size; i += 9) {
        const uint8_t *r = data + i;
        uint64_t raw = 0;
        for (int b = 0; b < 8; b++)
            raw = raw << 8 | r[1 + b];
        double v;
        if (r[0] & 2)
            memcpy (&v, &raw, sizeof v);
        else
            v = (double) (int64_t) (raw % 2000001 - 1000000) * pow (10, (double) (raw % 601) - 300);
        int rc = tm_sketch_add (all, v);
        if (rc != (isfinite (v)? 0: -1) || tm_sketch_add (part[r[0] & 1], v) != rc)
            abort ();
        added += rc == 0;
    }
    if (tm_sketch_count (all) != added)
        abort ();
    if (tm_sketch_merge (part[0], part[1]) != 0 || tm_sketch_count (part[0]) != added
        || !s_same_bytes (part[0], all))
        abort ();
    s_check_quantiles (all);
    s_check_round_trip (all);
    s_check_round_trip (part[1]);
    tm_sketch_destroy (&all);
    tm_sketch_destroy (&part[0]);
    tm_sketch_destroy (&part[1]);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    s_as_encoding (data, size);
    s_as_values (data, size);
    return 0;
}
