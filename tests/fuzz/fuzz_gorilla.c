/*  fuzz_gorilla - tm_gorilla's decoders and state loader over arbitrary
    bytes, and its encoder over arbitrary points and flushes

    The input is used four ways. As a v1 chunk: the decoder must not
    crash, must return strictly increasing timestamps, no more points than
    the header announces, and a reason with every error; a chunk that
    decodes must resume into a v2 encoder holding the same bit stream, and
    its points re-encoded (in both value modes) must decode to the same
    values, bit for bit. As a v2 chunk: a count (2 bytes) and a bit length
    (3 bytes) first, then the chunk, with the same promises. As a saved
    encoder state: load must refuse it or give a state that appends
    safely (the sanitizers watch), whose bookkeeping stays consistent and
    which saves back to the same bytes. As a script of points: each 9-byte
    record is a timestamp step and a value (raw bits, or a decimal, so both
    modes and their switches run) and a choice of checkpoint after it (a
    flush, a saved state, neither); the chunks rebuilt from the flushed
    pieces must decode to the points exactly. A broken promise aborts.
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

//  Check a started decoder gives exactly these points, then its end.
static void
s_expect_dec (tm_gorilla_dec_t *dec, const int64_t *ts, const double *v, size_t n)
{
    if (tm_gorilla_dec_count (dec) != n)
        abort ();
    int64_t t;
    double x;
    for (size_t i = 0; i < n; i++)
        if (tm_gorilla_dec_next (dec, &t, &x) != 1 || t != ts[i] || s_bits (x) != s_bits (v[i]))
            abort ();
    if (tm_gorilla_dec_next (dec, &t, &x) != 0)
        abort ();
}

//  A v2 chunk of n points in bits: exactly these points.
static void
s_expect_stream (const uint8_t *data, size_t size, uint64_t bits, const int64_t *ts,
                 const double *v, size_t n)
{
    tm_gorilla_dec_t dec;
    if (tm_gorilla_dec_init_stream (&dec, data, size, (uint32_t) n, bits) != 0)
        abort ();
    s_expect_dec (&dec, ts, v, n);
}

//  Encode the points (all appends must succeed, or the chunk be full:
//  another encoder's chunk may not fit ours), check the round trip.
static void
s_encode_check (const int64_t *ts, const double *v, size_t n, bool xor_only)
{
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    tm_gorilla_enc_set_xor_only (&enc, xor_only);
    for (size_t i = 0; i < n; i++) {
        int rc = tm_gorilla_enc_append (&enc, ts[i], v[i]);
        if (rc == TM_GORILLA_E_FULL && i > 0) {
            n = i;
            break;
        }
        if (rc != 0)
            abort ();
    }
    size_t size;
    const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
    s_expect_stream (data, size, tm_gorilla_enc_bits (&enc), ts, v, n);
    tm_gorilla_enc_fini (&enc);
}

//  Do the points fit one v2 chunk? (A decoded chunk's may not.)
static bool
s_fits_v2 (const int64_t *ts, size_t n, size_t v2_size)
{
    if (n > TM_GORILLA_STREAM_MAX_POINTS || v2_size > TM_GORILLA_STREAM_MAX_BYTES)
        return false;
    if (n > 0 && (uint64_t) ts[n - 1] - (uint64_t) ts[0] > TM_GORILLA_STREAM_MAX_SPAN)
        return false;
    for (size_t i = 1; i < n; i++)
        if ((uint64_t) ts[i] - (uint64_t) ts[i - 1] > TM_GORILLA_STREAM_MAX_DELTA)
            return false;
    return true;
}

//  Decode with dec (started); on success check the round trips. v1_data
//  is the v1 chunk when it is one (for resume), else NULL.
static void
s_decoded (tm_gorilla_dec_t *dec, size_t size, const uint8_t *v1_data)
{
    uint32_t count = tm_gorilla_dec_count (dec);
    //  The decoder bounds count by the size: at most 4 points a byte.
    if (count > size * 4 + 1)
        abort ();
    int64_t *ts = malloc (((size_t) count + 1) * sizeof *ts);
    double *v = malloc (((size_t) count + 1) * sizeof *v);
    if (!ts || !v)
        abort ();
    size_t n = 0;
    int rc;
    while ((rc = tm_gorilla_dec_next (dec, &ts[n], &v[n])) == 1) {
        if (n >= count || (n > 0 && ts[n] <= ts[n - 1]))
            abort ();
        n++;
    }
    if (rc == -1 && !dec->error)
        abort ();
    if (rc == 0 && n != count)
        abort ();
    if (rc == 0) {
        s_encode_check (ts, v, n, false);
        s_encode_check (ts, v, n, true);
    }
    if (rc == 0 && v1_data) {
        //  Resume: the same bit stream as v2, and appending goes on.
        tm_gorilla_enc_t enc;
        tm_gorilla_enc_init (&enc);
        int resumed = tm_gorilla_enc_resume (&enc, v1_data, size, NULL);
        if (resumed != 0 && (n == 0 || s_fits_v2 (ts, n, size - 4)))
            abort ();
        if (resumed == 0 && n > 0) {
            size_t again_size;
            const uint8_t *again = tm_gorilla_enc_data (&enc, &again_size);
            if (tm_gorilla_enc_count (&enc) != n || again_size != size - 4
                || again[0] != TM_GORILLA_STREAM_VERSION
                || memcmp (again + 1, v1_data + 5, size - 5) != 0)
                abort ();
            if (ts[n - 1] < INT64_MAX) {
                ts[n] = ts[n - 1] + 1;
                v[n] = 0.5;
                int app = tm_gorilla_enc_append (&enc, ts[n], v[n]);
                if (app == 0) {
                    again = tm_gorilla_enc_data (&enc, &again_size);
                    s_expect_stream (again, again_size, tm_gorilla_enc_bits (&enc), ts, v, n + 1);
                }
                else
                if (app != TM_GORILLA_E_FULL)
                    abort ();
            }
        }
        tm_gorilla_enc_fini (&enc);
    }
    free (ts);
    free (v);
}

static void
s_as_v1 (const uint8_t *data, size_t size)
{
    tm_gorilla_dec_t dec;
    tm_gorilla_dec_init (&dec, data, size);
    s_decoded (&dec, size, data);
}

static void
s_as_v2 (const uint8_t *data, size_t size)
{
    if (size < 5)
        return;
    uint32_t count = (uint32_t) data[0] | (uint32_t) data[1] << 8;
    uint64_t bits = (uint64_t) data[2] | (uint64_t) data[3] << 8 | (uint64_t) data[4] << 16;
    //  The chunk's bytes exactly: a read past them shows.
    size_t csize = size - 5;
    uint8_t *chunk = malloc (csize? csize: 1);
    if (!chunk)
        abort ();
    memcpy (chunk, data + 5, csize);
    tm_gorilla_dec_t dec;
    tm_gorilla_dec_init_stream (&dec, csize? chunk: NULL, csize, count, bits);
    s_decoded (&dec, csize, NULL);
    free (chunk);
}

//  The pending bytes are where the bits say, and readable.
static void
s_check_pending (const tm_gorilla_enc_t *enc)
{
    uint32_t start;
    size_t psize;
    const uint8_t *p = tm_gorilla_enc_pending (enc, &start, &psize);
    uint64_t bits = tm_gorilla_enc_bits (enc);
    if ((uint64_t) start + psize != (bits + 7) / 8 || (bits + 7) / 8 > TM_GORILLA_STREAM_MAX_BYTES
        || (tm_gorilla_enc_count (enc) == 0) != (p == NULL))
        abort ();
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < psize; i++)
        sink ^= p[i];
    (void) sink;
}

//  Save the state and load it back: the same bytes again.
static void
s_reload (tm_gorilla_enc_t *enc, bool as_flushed)
{
    size_t bound = tm_gorilla_enc_save_size (enc, as_flushed);
    uint8_t *blob = malloc (bound);
    if (!blob)
        abort ();
    size_t n = tm_gorilla_enc_save (enc, as_flushed, blob);
    tm_gorilla_enc_t back;
    tm_gorilla_enc_init (&back);
    size_t used;
    if (n > bound || tm_gorilla_enc_load (&back, blob, n, &used, NULL) != 0 || used != n
        || tm_gorilla_enc_count (&back) != tm_gorilla_enc_count (enc)
        || tm_gorilla_enc_bits (&back) != tm_gorilla_enc_bits (enc)
        || tm_gorilla_enc_first_ts (&back) != tm_gorilla_enc_first_ts (enc)
        || tm_gorilla_enc_last_ts (&back) != tm_gorilla_enc_last_ts (enc))
        abort ();
    uint8_t *again = malloc (tm_gorilla_enc_save_size (&back, false));
    if (!again || tm_gorilla_enc_save (&back, false, again) != n || memcmp (again, blob, n) != 0)
        abort ();
    free (again);
    free (blob);
    tm_gorilla_enc_fini (enc);
    *enc = back;
}

//  A point from a 9-byte record: a step after t and a value.
static void
s_point (const uint8_t *r, uint64_t *t, int64_t *ts, double *v)
{
    uint64_t raw = 0;
    for (int b = 0; b < 8; b++)
        raw = raw << 8 | r[1 + b];
    //  Steps from 1 ms to years, a few exact repeats of the cadence.
    unsigned sel = r[0];
    *t += sel < 128? 1000: sel < 192? sel: sel < 250? (uint64_t) sel << (sel & 31): raw >> 20;
    *ts = (int64_t) (*t & (UINT64_MAX >> 2));
    //  Values: decimals at scale raw % 23 most of the time, else raw bits.
    if (raw >> 62 != 3)
        *v = (double) (int64_t) (raw % 2000001 - 1000000) / pow (10, (double) (raw % 23));
    else
        memcpy (v, &raw, sizeof raw);
}

static void
s_as_state (const uint8_t *data, size_t size)
{
    uint8_t *exact = malloc (size? size: 1);
    if (!exact)
        abort ();
    if (size)
        memcpy (exact, data, size);
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    size_t used = 0;
    const char *error = NULL;
    if (tm_gorilla_enc_load (&enc, exact, size, &used, &error) != 0) {
        if (!error || tm_gorilla_enc_count (&enc) != 0 || tm_gorilla_enc_heap (&enc) != 0)
            abort ();
        free (exact);
        return;
    }
    if (used > size)
        abort ();
    s_check_pending (&enc);
    s_reload (&enc, false);
    //  Append what follows the state, a few points at most.
    uint64_t t = (uint64_t) tm_gorilla_enc_last_ts (&enc);
    for (size_t at = used, k = 0; at + 9 <= size && k < 16; at += 9, k++) {
        int64_t ts;
        double v;
        s_point (exact + at, &t, &ts, &v);
        int rc = tm_gorilla_enc_append (&enc, ts, v);
        if (rc != 0 && rc != TM_GORILLA_E_ORDER && rc != TM_GORILLA_E_FULL)
            abort ();
        s_check_pending (&enc);
        if (exact[at] & 1)
            tm_gorilla_enc_flushed (&enc);
        if (exact[at] & 2)
            s_reload (&enc, (exact[at] & 4) != 0);
    }
    tm_gorilla_enc_fini (&enc);
    free (exact);
}

//  An open chunk's state (either format) with its caller's last point from
//  the first 16 bytes: refused with a reason and nothing held, or loaded
//  and appended to with the point the caller keeps.
static void
s_as_open_state (const uint8_t *data, size_t size)
{
    if (size < 16)
        return;
    int64_t last_ts;
    double last;
    memcpy (&last_ts, data, 8);
    memcpy (&last, data + 8, 8);
    data += 16;
    size -= 16;
    uint8_t *exact = malloc (size? size: 1);
    if (!exact)
        abort ();
    if (size)
        memcpy (exact, data, size);
    tm_gorilla_open_t open;
    tm_gorilla_open_init (&open);
    size_t used = 0;
    const char *error = NULL;
    if (tm_gorilla_open_load (&open, last_ts, last, exact, size, &used, &error) != 0) {
        if (!error || tm_gorilla_open_count (&open) != 0 || tm_gorilla_open_heap (&open) != 0)
            abort ();
        free (exact);
        return;
    }
    if (used > size)
        abort ();
    uint64_t t = (uint64_t) last_ts;
    for (size_t at = used, k = 0; at + 9 <= size && k < 16; at += 9, k++) {
        int64_t ts;
        double v;
        s_point (exact + at, &t, &ts, &v);
        int rc = tm_gorilla_open_append (&open, last_ts, last, ts, v);
        if (rc != 0 && rc != TM_GORILLA_E_ORDER && rc != TM_GORILLA_E_FULL)
            abort ();
        if (rc == 0) {
            last_ts = ts;
            last = v;
        }
        if (exact[at] & 1)
            tm_gorilla_open_flushed (&open);
    }
    //  The bytes loaded are not decoded by the loader (a checkpoint's own,
    //  in the store's checksummed blocks): what is checked is that nothing
    //  goes out of bounds whatever they and the point say.
    uint32_t start;
    size_t psize;
    if (tm_gorilla_open_count (&open) && !tm_gorilla_open_pending (&open, &start, &psize))
        abort ();
    tm_gorilla_open_fini (&open);
    free (exact);
}

//  The store of one chunk: pieces laid over each other at their start.
typedef struct {
    uint8_t *bytes;                //  The chunk so far
    size_t size;                   //  Its bytes
} s_store_t;

//  Lay the pending bytes over the stored ones (as a checkpoint does, or a
//  read with what is not stored yet), into out (which may be st).
static void
s_overlay (const s_store_t *st, const tm_gorilla_enc_t *enc, s_store_t *out)
{
    uint32_t start;
    size_t psize;
    const uint8_t *p = tm_gorilla_enc_pending (enc, &start, &psize);
    if (start > st->size || (psize == 0 && start != st->size))
        abort ();
    size_t size = psize? start + psize: st->size;
    uint8_t *bytes = malloc (size? size: 1);
    if (!bytes)
        abort ();
    if (st->size)
        memcpy (bytes, st->bytes, st->size);
    if (psize)
        memcpy (bytes + start, p, psize);
    if (out == st)
        free (st->bytes);
    out->bytes = bytes;
    out->size = size;
}

//  The chunk rebuilt from the store and the pending bytes: these points.
static void
s_expect_rebuilt (const s_store_t *st, const tm_gorilla_enc_t *enc, const int64_t *ts,
                  const double *v, size_t n)
{
    s_store_t whole;
    s_overlay (st, enc, &whole);
    s_expect_stream (whole.bytes, whole.size, tm_gorilla_enc_bits (enc), ts, v, n);
    free (whole.bytes);
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
        s_point (data + 9 * i, &t, &ts[i], &v[i]);
        if (i > 0 && ts[i] <= ts[i - 1])
            ts[i] = ts[i - 1] + 1;
    }
    //  Chunk after chunk, each closed at E_FULL and then checked.
    s_store_t st = {NULL, 0};
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = tm_gorilla_enc_append (&enc, ts[i], v[i]);
        if (rc == TM_GORILLA_E_FULL && i > first) {
            s_expect_rebuilt (&st, &enc, ts + first, v + first, i - first);
            free (st.bytes);
            st = (s_store_t) {NULL, 0};
            tm_gorilla_enc_fini (&enc);
            first = i;
            rc = tm_gorilla_enc_append (&enc, ts[i], v[i]);
        }
        if (rc != 0)
            abort ();
        //  After the point, the record's low bits choose a checkpoint.
        unsigned c = data[9 * i + 8] & 7;
        if (c == 1 || c == 2) {
            s_overlay (&st, &enc, &st);
            if (c == 1)
                tm_gorilla_enc_flushed (&enc);
            else
                s_reload (&enc, true);
        }
        else
        if (c == 3)
            s_reload (&enc, false);
        if (c != 0)
            s_expect_rebuilt (&st, &enc, ts + first, v + first, i + 1 - first);
    }
    s_expect_rebuilt (&st, &enc, ts + first, v + first, n - first);
    //  Never flushed: the whole chunk at once, and its v1 twin.
    if (first == 0) {
        tm_gorilla_enc_t whole;
        tm_gorilla_enc_init (&whole);
        for (size_t i = 0; i < n; i++)
            if (tm_gorilla_enc_append (&whole, ts[i], v[i]) != 0)
                abort ();
        s_store_t rebuilt;
        s_overlay (&st, &enc, &rebuilt);
        size_t size_whole;
        const uint8_t *bytes = tm_gorilla_enc_data (&whole, &size_whole);
        if (rebuilt.size != size_whole || memcmp (rebuilt.bytes, bytes, size_whole) != 0)
            abort ();
        free (rebuilt.bytes);
        tm_gorilla_enc_fini (&whole);
    }
    free (st.bytes);
    tm_gorilla_enc_fini (&enc);
    free (ts);
    free (v);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    s_as_v1 (data, size);
    s_as_v2 (data, size);
    s_as_state (data, size);
    s_as_open_state (data, size);
    s_as_points (data, size);
    return 0;
}
