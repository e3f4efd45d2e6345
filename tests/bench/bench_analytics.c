/*  bench_analytics - what the per-reading analytics cost, in time and bytes

    Issue #3 budgets the analytics at a quarter of the ingest throughput
    (~1.5M readings/s on 2 cores, so well under 100 ns a reading) and a twin
    of 8 properties at 1 KiB all included. This prints both, so a change to
    tm_analytics can be checked against them:

    - ns per tm_analytics_update with the state in cache (as in the worker,
      where tm_twins_apply has just touched the property), on regular steps
      and with every other step a gap (the exp() path);
    - ns per update over 100k twins x 8 properties visited at random (cache
      misses included: an upper bound, not the worker's case);
    - ns per tm_analytics_sync_reading, and update + sync together;
    - sizeof the structs, and the resident bytes of a twin with 8
      properties laid out as tm_twins would hold it once the analytics are
      wired in, counted from the allocator's real chunk sizes.

    Usage: bench_analytics [readings]   (default 20 million; takes ~2 s)
*/
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tm_analytics.h"
#include "tm_twins.h"

#define S_NVALUES 4096             //  Power of two: a cheap index mask

static double s_values[S_NVALUES];

static double
s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

//  A sensor-like series: a slow cosine with noise, so every branch of the
//  update (clipping, flags) runs at its natural rate.
static void
s_fill_values (void)
{
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < S_NVALUES; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double noise = (double) (x >> 11) / 9007199254740992.0 - 0.5;
        s_values[i] = 20 + 5 * cos (i / 300.0) + noise;
    }
}

static double
s_bench_hot (const tm_analytics_settings_t *s, long n, int64_t gap_ms, unsigned *sink)
{
    tm_analytics_t a;
    tm_analytics_init (&a);
    int64_t t = 1700000000000LL;
    unsigned acc = 0;
    double start = s_now_ns ();
    for (long i = 0; i < n; i++) {
        t += (i & 1) && gap_ms? gap_ms: s->interval_ms;
        acc += tm_analytics_update (&a, s, t, s_values[i & (S_NVALUES - 1)]);
    }
    double ns = (s_now_ns () - start) / n;
    *sink += acc + (unsigned) tm_analytics_level (&a);
    return ns;
}

static double
s_bench_sync (const tm_analytics_settings_t *s, long n, bool with_update, unsigned *sink)
{
    tm_analytics_t a[8];
    tm_analytics_sync_t sync;
    tm_analytics_sync_init (&sync);
    for (int p = 0; p < 8; p++)
        tm_analytics_init (&a[p]);
    int64_t t = 1700000000000LL;
    unsigned acc = 0;
    double start = s_now_ns ();
    for (long i = 0; i < n; i++) {
        unsigned p = (unsigned) i & 7;
        if (p == 0)
            t += s->interval_ms;
        unsigned flags = 0;
        if (with_update)
            flags = tm_analytics_update (&a[p], s, t, s_values[i & (S_NVALUES - 1)]);
        acc += tm_analytics_sync_reading (&sync, s, p, flags, t);
    }
    double ns = (s_now_ns () - start) / n;
    *sink += acc + sync.state;
    return ns;
}

static double
s_bench_cold (const tm_analytics_settings_t *s, long n, unsigned *sink)
{
    enum { TWINS = 100000, PROPS = 8, STATES = TWINS * PROPS };
    tm_analytics_t *states = malloc (sizeof (tm_analytics_t) * STATES);
    uint32_t *order = malloc (sizeof (uint32_t) * STATES);
    if (!states || !order) {
        free (states);
        free (order);
        return NAN;
    }
    for (uint32_t i = 0; i < STATES; i++) {
        tm_analytics_init (&states[i]);
        order[i] = i;
    }
    uint64_t x = 12345;
    for (uint32_t i = STATES - 1; i > 0; i--) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t j = (uint32_t) ((x >> 33) % (i + 1));
        uint32_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    int64_t t = 1700000000000LL;
    unsigned acc = 0;
    double start = s_now_ns ();
    for (long i = 0; i < n; i++) {
        long k = i % STATES;
        if (k == 0)
            t += s->interval_ms;
        acc += tm_analytics_update (&states[order[k]], s, t, s_values[i & (S_NVALUES - 1)]);
    }
    double ns = (s_now_ns () - start) / n;
    *sink += acc;
    free (states);
    free (order);
    return ns;
}

//  A property as tm_twins would hold it with the analytics wired in: the
//  analytics state carries the latest value and timestamp, so those two
//  fields leave tm_prop_t; the settings pointer is optional (see below).
typedef struct {
    const char *name;              //  Interned name, shared by all twins
    uint64_t count;                //  Readings applied (any quality)
    const tm_analytics_settings_t *settings;   //  The model's, shared
    tm_analytics_t an;             //  Analytics, latest value and timestamp
} s_prop_projected_t;

typedef struct {
    uint8_t twin[sizeof (tm_twin_t)];  //  Today's twin header (its id apart, below)
    tm_analytics_sync_t sync;      //  Sync status, per twin
} s_twin_projected_t;

static size_t
s_chunk (void *p)
{
    //  glibc: the usable size plus one 8-byte size header per chunk.
    return p? malloc_usable_size (p) + 8: 0;
}

static void
s_twin_bytes (size_t prop_size, size_t *total, size_t *props_part)
{
    s_twin_projected_t *t = calloc (1, sizeof *t);
    char *entity = strdup ("milan/air-000123");
    char *model = strdup ("air_station");
    //  tm_twins grows the property array 4 -> 8.
    void *props = malloc (4 * prop_size);
    void *grown = props? realloc (props, 8 * prop_size): NULL;
    if (grown)
        props = grown;
    //  A table slot is a pointer; the table is between 35% and 70% full.
    size_t slot = 2 * sizeof (void *);
    *props_part = s_chunk (props);
    *total = s_chunk (t) + s_chunk (entity) + s_chunk (model) + *props_part + slot;
    free (t);
    free (entity);
    free (model);
    free (props);
}

#define S_ROUNDS 5

static double
s_best (double a, double b)
{
    return a < b? a: b;
}

int
main (int argc, char *argv[])
{
    long n = argc > 1? atol (argv[1]): 20000000;
    if (n < 1000)
        n = 1000;
    s_fill_values ();
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    s.valid_min = 0;
    s.valid_max = 100;
    s.stuck_run = 10;
    s.limit_upper = 30;
    unsigned sink = 0;

    //  The best of S_ROUNDS runs: the machine is shared, and the fastest
    //  run is the one least disturbed by neighbours.
    double hot = INFINITY, gaps = INFINITY, sync = INFINITY, both = INFINITY;
    for (int round = 0; round < S_ROUNDS; round++) {
        long part = n / S_ROUNDS;
        hot = s_best (hot, s_bench_hot (&s, part, 0, &sink));
        gaps = s_best (gaps, s_bench_hot (&s, part, 5000, &sink));
        sync = s_best (sync, s_bench_sync (&s, part, false, &sink));
        both = s_best (both, s_bench_sync (&s, part, true, &sink));
    }
    double cold = s_bench_cold (&s, n / 4, &sink);

    printf ("bench_analytics: %ld readings, best of %d runs\n", n, S_ROUNDS);
    printf ("update, in cache, regular steps:      %6.1f ns\n", hot);
    printf ("update, in cache, every other a gap:   %6.1f ns\n", gaps);
    printf ("update, 800k states at random (misses): %5.1f ns\n", cold);
    printf ("sync_reading alone:                    %6.1f ns\n", sync);
    printf ("update + sync_reading, 8 properties:   %6.1f ns\n", both);
    printf ("at 1.5M readings/s, update + sync uses %.1f%% of one core\n", both * 1.5e6 / 1e7);

    printf ("sizeof tm_analytics_t          %zu\n", sizeof (tm_analytics_t));
    printf ("sizeof tm_analytics_sync_t     %zu\n", sizeof (tm_analytics_sync_t));
    printf ("sizeof tm_analytics_settings_t %zu (shared per model, not per twin)\n",
            sizeof (tm_analytics_settings_t));
    printf ("sizeof tm_twin_t today %zu, tm_prop_t today %zu\n", sizeof (tm_twin_t),
            sizeof (tm_prop_t));
    size_t total, props;
    s_twin_bytes (sizeof (s_prop_projected_t), &total, &props);
    printf ("twin with 8 properties, prop {name, count, settings*, analytics} = %zu B: "
            "%zu B resident (props %zu)\n",
            sizeof (s_prop_projected_t), total, props);
    s_twin_bytes (sizeof (s_prop_projected_t) - sizeof (void *), &total, &props);
    printf ("twin with 8 properties, prop {name, count, analytics} = %zu B: "
            "%zu B resident (props %zu)\n",
            sizeof (s_prop_projected_t) - sizeof (void *), total, props);
    printf ("(sink %u)\n", sink);
    return 0;
}
