/*  bench_memory - resident bytes per active twin in a worker's twin table

    Issue #3 sets a memory goal: a twin with eight properties, analytics
    included, in at most 1 KiB. This feeds N twins (default 200,000) x 8
    properties through tm_twins_apply, K readings per series, and reports
    per twin the growth of the heap (mallinfo2: uordblks + hblkhd, which
    counts malloc's own chunk headers) and of the process's VmRSS, with a
    breakdown by what holds the bytes. Each K runs in a forked child, so
    one table's freed memory does not hide the next one's growth.

    The readings look like an air station's (pm25, pm10, no2, o3,
    temperature, humidity, pressure, co): one a second with up to 20 ms of
    jitter, one-decimal values on a random walk. No model is loaded (none
    in models/ has eight properties), so the analytics use the defaults;
    the state is the same size either way. No attributes are sent.
    A checkpoint (by default after every 5 seconds of readings, the
    worker's default checkpoint_interval) is simulated as the worker's
    leaves memory once its write succeeds: closed chunks dropped, and the
    open chunks that were due (tm_twins_flush_due) forget their bytes but
    the partial last byte (tm_segment: they are in the store). So what is counted is what stays in memory
    between checkpoints: each open chunk's encoder state, with the bytes
    since the last checkpoint. K = 0 ("mix") is a worker that has run for
    a while: twin i starts reading at a step of its own in 0 .. 119 and
    all stop at step 240, so open chunks hold 0 .. 119 points, evenly
    spread, and freed memory has been reused (VmRSS is then the figure a
    long-running worker shows). A third argument sets the seconds between
    checkpoints, for a worker whose rounds take longer under load.

    The breakdown walks the table: allocations are counted with
    malloc_usable_size plus malloc's 8-byte header (glibc), so the parts
    add up to about the mallinfo2 total; "table arrays" is the rest (slot
    array, rows, changed list, interned names).

    Usage: bench_memory [twins] [K,K,...] [seconds between checkpoints]
           (default 200000 1,60,120,0 5)
    Prints a table, then one `RESULT k=.. heap_per_twin=.. rss_per_twin=..`
    line per K for tests/bench/bench_memory.py.
*/
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tm_twins.h"

#define S_PROPS 8
#define S_MAX_K 16                 //  K values one run takes
#define S_GOAL 1024                //  Bytes per twin (issue #3, item 10)

static const uint8_t s_key[TM_SHARDMAP_KEY_BYTES] = "0123456789abcdef";
static const char *s_props[S_PROPS] = {"pm25", "pm10",     "no2",      "o3",
                                       "temperature", "humidity", "pressure", "co"};
//  Start values and walk steps in tenths, per property.
static const int s_start[S_PROPS] = {120, 250, 300, 400, 185, 550, 10130, 4};
static const int s_step[S_PROPS] = {3, 5, 4, 6, 1, 3, 1, 1};

static uint64_t s_rng = 0x2545F4914F6CDD1DULL;
static int s_every = 5;            //  Steps (seconds of readings) between checkpoints

static uint32_t
s_rand (void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (uint32_t) (s_rng >> 32);
}

static double
s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static size_t
s_heap (void)
{
    struct mallinfo2 mi = mallinfo2 ();
    return mi.uordblks + mi.hblkhd;
}

static size_t
s_rss (void)
{
    FILE *f = fopen ("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    size_t kib = 0;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "VmRSS:", 6) == 0) {
            kib = strtoul (line + 6, NULL, 10);
            break;
        }
    fclose (f);
    return kib * 1024;
}

//  Bytes a live allocation takes from the heap (glibc: usable size plus
//  its size word).
static size_t
s_chunk (const void *p)
{
    return p? malloc_usable_size ((void *) p) + sizeof (size_t): 0;
}

typedef struct {
    double twin;                   //  tm_twin_t and its entity id
    double props;                  //  Property arrays (name id, count, analytics; the encoders apart)
    double hist_state;             //  Encoder state of open chunks (with the bytes
                                   //  not yet stored that fit in it)
    double hist_bytes;             //  Bytes not yet stored, where they outgrew the state
    double hist_slack;             //  Allocated beyond state and bytes, headers included
    double slots;                  //  The table's slot array
} s_parts_t;

static void
s_walk (tm_twins_t *twins, size_t n, s_parts_t *parts)
{
    size_t nrows, nslots;
    tm_twin_t *const *rows = tm_twins_rows (twins, &nrows);
    tm_twins_slots (twins, &nslots);
    size_t twin = 0, props = 0, hstate = 0, hheap = 0, bytes = 0;
    for (size_t i = 0; i < nrows; i++) {
        const tm_twin_t *t = rows[i];
        twin += s_chunk (t);
        //  The id is inside the twin's own allocation: counted with it.
        props += s_chunk (t->props);
        //  The encoders live in the property array: counted apart from it.
        for (uint16_t k = 0; k < t->nprops; k++) {
            const tm_gorilla_open_t *h = &t->props[k].hist;
            hstate += sizeof *h;
            hheap += sizeof *h;
            size_t heap = tm_gorilla_open_heap (h);
            if (heap) {
                //  Bytes not yet stored that outgrew the state's own room.
                uint32_t start;
                size_t size;
                tm_gorilla_open_pending (h, &start, &size);
                hheap += heap + sizeof (size_t);
                bytes += size;
            }
        }
    }
    props -= hstate;
    parts->twin = (double) twin / (double) n;
    parts->props = (double) props / (double) n;
    parts->hist_state = (double) hstate / (double) n;
    parts->hist_bytes = (double) bytes / (double) n;
    parts->hist_slack = (double) (hheap - hstate - bytes) / (double) n;
    parts->slots = (double) nslots * sizeof (tm_twin_t *) / (double) n;
}

//  What a checkpoint leaves in memory once it has written every changed
//  shard: closed chunks and the open chunks' bytes are in the store.
static void
s_checkpoint (tm_twins_t *twins)
{
    static uint8_t *buf;
    static size_t cap;
    size_t ndirty;
    uint32_t *dirty = tm_twins_take_dirty (twins, &ndirty);
    for (size_t i = 0; i < ndirty; i++) {
        //  Encoding notes the series due a segment, as in a round's step
        //  (which holds about a megabyte of blobs: one shard here).
        tm_twins_due_clear (twins);
        if (tm_twins_encode_shard (twins, dirty[i], &buf, &cap) == 0)
            fprintf (stderr, "bench_memory: a shard does not encode\n");
        tm_twins_pending_drop (twins, dirty[i]);
        tm_twins_history_flushed (twins, dirty[i]);
    }
    free (dirty);
}

static int
s_run (long n, int k)
{
    char (*ids)[32] = malloc ((size_t) n * sizeof *ids);
    int *walk = malloc ((size_t) n * S_PROPS * sizeof *walk);
    if (!ids || !walk)
        return 1;
    for (long i = 0; i < n; i++) {
        snprintf (ids[i], sizeof ids[i], "milan/air-%06ld", i);
        for (int p = 0; p < S_PROPS; p++)
            walk[i * S_PROPS + p] = s_start[p] + (int) (s_rand () % 50);
    }
    size_t heap0 = s_heap (), rss0 = s_rss ();
    tm_twins_t *twins = tm_twins_new ();
    if (!twins)
        return 1;
    tm_reading_t r = {0};
    int64_t t0 = 1764000000000;
    double ns0 = s_now_ns ();
    //  Time-major, as a city reports: every twin's readings of one second,
    //  then the next second's (allocations interleave as they would).
    int steps = k? k: 2 * TM_TWINS_CHUNK_POINTS;
    long nreadings = 0;
    for (int step = 0; step < steps; step++) {
        for (long i = 0; i < n; i++) {
            if (!k && step < (int) ((i * 7919) % TM_TWINS_CHUNK_POINTS))
                continue;
            nreadings += S_PROPS;
            r.entity = ids[i];
            r.entity_len = strlen (ids[i]);
            for (int p = 0; p < S_PROPS; p++) {
                int *v = &walk[i * S_PROPS + p];
                *v += (int) (s_rand () % (2u * (unsigned) s_step[p] + 1)) - s_step[p];
                if (*v < 0)
                    *v = 0;
                r.property = s_props[p];
                r.property_len = strlen (s_props[p]);
                r.value = *v / 10.0;
                r.ts_ms = t0 + step * 1000LL + (int64_t) (s_rand () % 41) - 20;
                tm_twins_apply (twins, &r, s_key, 1024, r.ts_ms);
            }
        }
        if ((step + 1) % s_every == 0)
            s_checkpoint (twins);
    }
    double ns = (s_now_ns () - ns0) / (double) nreadings;
    //  mallinfo2 says nothing under a sanitizer's allocator: "?" below.
    size_t heap1 = s_heap (), rss1 = s_rss ();
    double heap = (double) (heap1 - heap0) / (double) n;
    double rss = (double) (rss1 - rss0) / (double) n;
    s_parts_t parts;
    s_walk (twins, (size_t) n, &parts);
    double other = heap - parts.twin - parts.props - parts.hist_state - parts.hist_bytes
                   - parts.hist_slack - parts.slots;
    char label[16];
    snprintf (label, sizeof label, k? "%d": "mix", k);
    printf ("%4s %8.0f %8.0f %7.0f %7.0f %7.0f %7.0f %7.0f %7.0f %7.0f %7.1f  %s\n", label, heap,
            rss, parts.twin, parts.props, parts.hist_state, parts.hist_bytes, parts.hist_slack,
            parts.slots, other, ns, heap1 == heap0? "?": heap <= S_GOAL? "yes": "no");
    printf ("RESULT k=%d twins=%ld heap_per_twin=%.1f rss_per_twin=%.1f twin=%.1f props=%.1f "
            "hist_state=%.1f hist_bytes=%.1f hist_slack=%.1f slots=%.1f other=%.1f "
            "ns_per_apply=%.1f\n",
            k, n, heap, rss, parts.twin, parts.props, parts.hist_state, parts.hist_bytes,
            parts.hist_slack, parts.slots, other, ns);
    fflush (stdout);
    tm_twins_destroy (&twins);
    free (walk);
    free (ids);
    return 0;
}

int
main (int argc, char *argv[])
{
    long n = argc > 1? atol (argv[1]): 200000;
    const char *klist = argc > 2? argv[2]: "1,60,120,0";
    s_every = argc > 3? atoi (argv[3]): 5;
    if (s_every < 1 || s_every > 100000) {
        fprintf (stderr, "bench_memory: seconds between checkpoints must be 1 .. 100000\n");
        return 2;
    }
    if (n <= 0 || n > 50000000) {
        fprintf (stderr, "bench_memory: twins must be 1 .. 50000000\n");
        return 2;
    }
    int ks[S_MAX_K], nk = 0;
    for (const char *s = klist; *s && nk < S_MAX_K;) {
        char *end;
        long k = strtol (s, &end, 10);
        if (end == s || k < 0 || k > 100000) {
            fprintf (stderr, "bench_memory: K must be 0 .. 100000: %s\n", klist);
            return 2;
        }
        ks[nk++] = (int) k;
        s = *end == ','? end + 1: end;
    }
    printf ("bench_memory: %ld twins x %d properties, a checkpoint every %d s of readings, "
            "bytes per twin (goal <= %d, heap)\n", n, S_PROPS, s_every, S_GOAL);
    printf ("sizeof: tm_twin_t %zu, tm_prop_t %zu, tm_analytics_t %zu, tm_gorilla_open_t %zu\n",
            sizeof (tm_twin_t), sizeof (tm_prop_t), sizeof (tm_analytics_t),
            sizeof (tm_gorilla_open_t));
    printf ("%4s %8s %8s %7s %7s %7s %7s %7s %7s %7s %7s  %s\n", "K", "heap", "VmRSS", "twin",
            "props", "hstate", "hbytes", "hslack", "slots", "other", "ns/app", "goal");
    fflush (stdout);
    int rc = 0;
    for (int i = 0; i < nk; i++) {
        pid_t pid = fork ();
        if (pid < 0)
            return 1;
        if (pid == 0)
            _exit (s_run (n, ks[i]));
        int status;
        if (waitpid (pid, &status, 0) != pid || !WIFEXITED (status) || WEXITSTATUS (status))
            rc = 1;
    }
    printf ("twin: tm_twin_t + entity id; props: the property array; hstate/hbytes/hslack: "
            "open chunks'\nencoder state, encoded bytes, and the rest of their allocations; "
            "slots: the hash table;\nother: rows, changed list, names (heap minus the parts). "
            "ns/app: ns per tm_twins_apply\nwhile feeding (new twins included). K mix: open "
            "chunks of 0 .. %d points, evenly spread.\n", TM_TWINS_CHUNK_POINTS - 1);
    return rc;
}
