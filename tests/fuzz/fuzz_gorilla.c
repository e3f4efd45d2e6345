/*  fuzz_gorilla - tm_gorilla's decoder over arbitrary bytes, and its
    encoder over arbitrary points

    The input is used twice. As a chunk: the decoder must not crash, must
    return strictly increasing timestamps, no more points than the header
    announces, and a reason with every error; a chunk that decodes must
    resume into an encoder byte for byte, and its points re-encoded (in
    both value modes) must decode to the same values, bit for bit. As a
    script of points: each 9-byte record is a timestamp step and a value
    (raw bits, or a decimal, so both modes and their switches run), and
    encoding them must round-trip exactly. A broken promise aborts.
*/
#include "fuzz.h"
#include "tm_gorilla.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t
s_bits (double v)
{
    uint64_t u;
    memcpy (&u, &v, sizeof u);
    return u;
}

//  Decode data and expect exactly these points.
static void
s_expect (const uint8_t *data, size_t size, const int64_t *ts, const double *v, size_t n)
{
    tm_gorilla_dec_t dec;
    if (tm_gorilla_dec_init (&dec, data, size) != 0 || tm_gorilla_dec_count (&dec) != n)
        abort ();
    int64_t t;
    double x;
    for (size_t i = 0; i < n; i++)
        if (tm_gorilla_dec_next (&dec, &t, &x) != 1 || t != ts[i] || s_bits (x) != s_bits (v[i]))
            abort ();
    if (tm_gorilla_dec_next (&dec, &t, &x) != 0)
        abort ();
}

//  Encode the points (all appends must succeed), check the round trip.
static void
s_encode_check (const int64_t *ts, const double *v, size_t n, bool xor_only)
{
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    tm_gorilla_enc_set_xor_only (&enc, xor_only);
    for (size_t i = 0; i < n; i++)
        if (tm_gorilla_enc_append (&enc, ts[i], v[i]) != 0)
            abort ();
    size_t size;
    const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
    s_expect (data, size, ts, v, n);
    tm_gorilla_enc_fini (&enc);
}

static void
s_as_chunk (const uint8_t *data, size_t size)
{
    tm_gorilla_dec_t dec;
    tm_gorilla_dec_init (&dec, data, size);
    uint32_t count = tm_gorilla_dec_count (&dec);
    //  The decoder bounds count by the size: at most 4 points a byte.
    if (count > size * 4 + 1)
        abort ();
    int64_t *ts = malloc (((size_t) count + 1) * sizeof *ts);
    double *v = malloc (((size_t) count + 1) * sizeof *v);
    if (!ts || !v)
        abort ();
    size_t n = 0;
    int rc;
    while ((rc = tm_gorilla_dec_next (&dec, &ts[n], &v[n])) == 1) {
        if (n >= count || (n > 0 && ts[n] <= ts[n - 1]))
            abort ();
        n++;
    }
    if (rc == -1 && !dec.error)
        abort ();
    if (rc == 0) {
        if (n != count)
            abort ();
        s_encode_check (ts, v, n, false);
        s_encode_check (ts, v, n, true);
        //  Resume: the same bytes, and appending goes on.
        tm_gorilla_enc_t enc;
        tm_gorilla_enc_init (&enc);
        if (tm_gorilla_enc_resume (&enc, data, size, NULL) != 0)
            abort ();
        size_t again_size;
        const uint8_t *again = tm_gorilla_enc_data (&enc, &again_size);
        if (again_size != size || memcmp (again, data, size) != 0)
            abort ();
        if (n > 0 && ts[n - 1] < INT64_MAX) {
            ts[n] = ts[n - 1] + 1;
            v[n] = 0.5;
            if (tm_gorilla_enc_append (&enc, ts[n], v[n]) != 0)
                abort ();
            again = tm_gorilla_enc_data (&enc, &again_size);
            s_expect (again, again_size, ts, v, n + 1);
        }
        tm_gorilla_enc_fini (&enc);
    }
    free (ts);
    free (v);
}

static void
s_as_points (const uint8_t *data, size_t size)
{
    size_t n = size / 9;
    if (n == 0)
        return;
    int64_t *ts = malloc (n * sizeof *ts);
    double *v = malloc (n * sizeof *v);
    if (!ts || !v)
        abort ();
    uint64_t t = 1700000000000ULL;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *r = data + 9 * i;
        uint64_t raw = 0;
        for (int b = 0; b < 8; b++)
            raw = raw << 8 | r[1 + b];
        //  Steps from 1 ms to years, a few exact repeats of the cadence.
        unsigned sel = r[0];
        t += sel < 128? 1000: sel < 192? sel: sel < 250? (uint64_t) sel << (sel & 31)
                                                       : raw >> 20;
        ts[i] = (int64_t) (t & (UINT64_MAX >> 2));
        if (i > 0 && ts[i] <= ts[i - 1])
            ts[i] = ts[i - 1] + 1;
        //  Values: decimals at scale raw % 23 most of the time, else raw bits.
        if (raw >> 62 != 3)
            v[i] = (double) (int64_t) (raw % 2000001 - 1000000) / pow (10, (double) (raw % 23));
        else
            memcpy (&v[i], &raw, sizeof raw);
    }
    s_encode_check (ts, v, n, false);
    free (ts);
    free (v);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    s_as_chunk (data, size);
    s_as_points (data, size);
    return 0;
}
