/*  bench_history - stored bytes per reading of tm_gorilla history chunks

    Issue #3 sets the goal: at most 2 bytes per reading on smooth sensor
    data (Gorilla reports 1.37 on Facebook's monitoring data). This
    program measures what tm_gorilla stores per reading, per series and in
    chunks of up to 120 and 1024 points (the range the worker may close
    chunks at), on:

    - the simulated city: the series kinds of cli/tm_sim.c (diurnal cycle
      plus noise and rare spikes, the same parameters), with values
      rounded as real sensors report them and 1 s .. 5 min intervals, each
      both with exact timestamps (device clocks) and with arrival jitter
      (stamped at a gateway) and a few missed readings;
    - UCI Air Quality: 13 hourly channels of one device (2004-2005);
    - EPA daily PM2.5 and AQI of the New York metro area (2022), per
      monitor, with the gaps of every-3rd/6th-day samplers.

    It also encodes with Gorilla's XOR values only, for comparison, checks
    that every chunk decodes to its points bit for bit, and reports encode
    and decode time per point.

        bench_history [DATA_DIR] [-v]

    DATA_DIR defaults to ../shared/data beside the source tree (the
    shared data sets; a missing one is skipped with a message).
*/
#include "tm_gorilla.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TM_SOURCE_ROOT
#define TM_SOURCE_ROOT "."         //  meson passes the repository root
#endif

#define S_DAY_MS 86400000LL
#define S_SIM_POINTS 4096          //  Points per simulated series
#define S_SIM_TWINS 4              //  Twins per kind, interval and clock
#define S_MAX_LINE 4096            //  Longest CSV line read

typedef struct {
    char group[48];                //  Data set, e.g. "uci-air-quality"
    char name[64];                 //  Series, e.g. "T" or "360050110/4 pm25"
    char kind[32];                 //  Rows are summed per (group, kind)
    int64_t *ts;                   //  Timestamps, ms, strictly increasing
    double *v;                     //  Values
    size_t n;                      //  Points
    size_t cap;                    //  Allocated points
} s_series_t;

typedef struct {
    s_series_t *items;             //  All series of all data sets
    size_t n;                      //  Used
    size_t cap;                    //  Allocated
} s_set_t;

static s_series_t *
s_series_add (s_set_t *set, const char *group, const char *kind, const char *name)
{
    if (set->n == set->cap) {
        size_t cap = set->cap? set->cap * 2: 64;
        s_series_t *grown = realloc (set->items, cap * sizeof *grown);
        if (!grown) {
            fprintf (stderr, "bench_history: out of memory\n");
            exit (1);
        }
        set->items = grown;
        set->cap = cap;
    }
    s_series_t *s = &set->items[set->n++];
    memset (s, 0, sizeof *s);
    snprintf (s->group, sizeof s->group, "%s", group);
    snprintf (s->kind, sizeof s->kind, "%s", kind);
    snprintf (s->name, sizeof s->name, "%s", name);
    return s;
}

static void
s_series_push (s_series_t *s, int64_t ts, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap? s->cap * 2: 256;
        int64_t *ts_grown = realloc (s->ts, cap * sizeof *ts_grown);
        double *v_grown = ts_grown? realloc (s->v, cap * sizeof *v_grown): NULL;
        if (!ts_grown || !v_grown) {
            fprintf (stderr, "bench_history: out of memory\n");
            exit (1);
        }
        s->ts = ts_grown;
        s->v = v_grown;
        s->cap = cap;
    }
    s->ts[s->n] = ts;
    s->v[s->n] = v;
    s->n++;
}

//  Days since 1970-01-01 of a civil date (proleptic Gregorian).
static int64_t
s_days (int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0? y: y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2? -3: 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

//  ---------------------------------------------------------------------
//  The simulated city, as cli/tm_sim.c generates it, rounded as sensors
//  report: PM to 0.1 ug/m3, NO2 to 1 ug/m3, temperature and humidity to
//  0.1, vehicles as counts, speed to 1 km/h, occupancy 0/1.

typedef struct {
    const char *name;              //  Property
    double base, amp, peak_hour;   //  Daily mean, diurnal amplitude, peak (tm_sim.c)
    double noise;                  //  Noise standard deviation per reading (tm_sim.c)
    double spike_prob, spike;      //  Rare spikes (tm_sim.c)
    double min, max;               //  Physical range (tm_sim.c)
    double resolution;             //  What the sensor reports: 0.1, 1
} s_kind_t;

static const s_kind_t s_kinds[] = {
    {"pm25", 18, 8, 9, 3, 0.002, 60, 0, 500, 0.1},
    {"pm10", 28, 10, 9, 5, 0.002, 80, 0, 600, 0.1},
    {"no2", 40, 15, 8, 6, 0.002, 90, 0, 400, 1},
    {"temperature", 14, 6, 15, 0.5, 0, 0, -30, 50, 0.1},
    {"humidity", 65, -15, 15, 3, 0, 0, 0, 100, 0.1},
    {"vehicles", 300, 250, 17, 40, 0.003, 400, 0, 5000, 1},
    {"speed_kmh", 40, -12, 17, 5, 0.001, -25, 0, 130, 1},
    {"occupied", 0, 0, 13, 0, 0, 0, 0, 1, 1},
};
#define S_KINDS (sizeof s_kinds / sizeof s_kinds[0])

static const int64_t s_intervals[] = {1000, 10000, 60000, 300000};
#define S_INTERVALS (sizeof s_intervals / sizeof s_intervals[0])

static uint64_t s_rng = 0x2545F4914F6CDD1DULL;

static double
s_uniform (void)
{
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return (double) ((s_rng * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

static double
s_gauss (void)
{
    return (s_uniform () + s_uniform () + s_uniform () + s_uniform () - 2.0) * 1.7320508075688772;
}

//  Round to the sensor's resolution the way its firmware prints it: the
//  value is the double nearest to the printed decimal.
static double
s_quantize (double v, double resolution)
{
    if (resolution >= 1)
        return floor (v / resolution + 0.5) * resolution;
    double per = floor (1 / resolution + 0.5);
    return floor (v * per + 0.5) / per;
}

static void
s_make_sim (s_set_t *set)
{
    for (size_t k = 0; k < S_KINDS; k++)
        for (size_t iv = 0; iv < S_INTERVALS; iv++)
            for (int jitter = 0; jitter < 2; jitter++)
                for (int tw = 0; tw < S_SIM_TWINS; tw++) {
                    const s_kind_t *kd = &s_kinds[k];
                    char name[64];
                    snprintf (name, sizeof name, "%s %llds %s #%d", kd->name,
                              (long long) (s_intervals[iv] / 1000),
                              jitter? "gateway": "device", tw);
                    s_series_t *s = s_series_add (set, "sim", kd->name, name);
                    double scale = 0.7 + 0.6 * s_uniform ();
                    double amp = 0.8 + 0.4 * s_uniform ();
                    double phase = (s_uniform () - 0.5) * 0.52;
                    bool occupied = s_uniform () < 0.5;
                    int64_t t0 = 1700000000000LL + (int64_t) (s_uniform () * 1000) * 1000;
                    int64_t last = INT64_MIN;
                    for (size_t i = 0; i < S_SIM_POINTS; i++) {
                        int64_t ts = t0 + (int64_t) i * s_intervals[iv];
                        if (jitter) {
                            //  Arrival at the gateway: a few tens of ms, and
                            //  one reading in 200 lost.
                            if (s_uniform () < 0.005)
                                continue;
                            ts += (int64_t) fabs (s_gauss () * 30);
                        }
                        if (ts <= last)
                            continue;
                        double tod = (double) ((ts + 3600000) % S_DAY_MS) / (double) S_DAY_MS;
                        double angle = 2 * M_PI * (tod - kd->peak_hour / 24.0) + phase;
                        double v;
                        if (kd->max == 1) {
                            double busy = 0.5 + 0.5 * cos (angle);
                            if (s_uniform () < 0.03 + 0.25 * busy)
                                occupied = !occupied;
                            v = occupied;
                        }
                        else {
                            v = kd->base * scale + kd->amp * amp * cos (angle)
                              + kd->noise * s_gauss ();
                            if (kd->spike_prob > 0 && s_uniform () < kd->spike_prob)
                                v += kd->spike * (1 + s_uniform ());
                            v = v < kd->min? kd->min: v > kd->max? kd->max: v;
                            v = s_quantize (v, kd->resolution);
                        }
                        s_series_push (s, ts, v);
                        last = ts;
                    }
                }
}

//  ---------------------------------------------------------------------
//  Real data sets

//  Split a line in place at sep, honouring double quotes (EPA quotes
//  every field and some contain commas). Returns the number of fields.
static size_t
s_split (char *line, char sep, char **fields, size_t max)
{
    size_t n = 0;
    char *p = line;
    while (n < max) {
        bool quoted = *p == '"';
        if (quoted)
            p++;
        fields[n++] = p;
        char *w = p;
        while (*p && *p != '\r' && *p != '\n') {
            if (quoted && *p == '"') {
                if (p[1] == '"') {
                    *w++ = '"';
                    p += 2;
                    continue;
                }
                quoted = false;
                p++;
                continue;
            }
            if (!quoted && *p == sep)
                break;
            *w++ = *p++;
        }
        bool more = *p == sep;
        *w = 0;
        if (!more)
            break;
        p++;
    }
    return n;
}

//  UCI: "10/03/2004;18.00.00;2,6;1360;...;0,7578;;", decimal commas,
//  -200 for a missing value, trailing lines of only semicolons.
static int
s_load_uci (s_set_t *set, const char *dir)
{
    char path[1024], line[S_MAX_LINE];
    snprintf (path, sizeof path, "%s/uci-air-quality/AirQualityUCI.csv", dir);
    FILE *f = fopen (path, "r");
    if (!f) {
        printf ("skipped uci-air-quality: cannot open %s\n", path);
        return -1;
    }
    char *fields[32];
    s_series_t *series[13];
    if (!fgets (line, sizeof line, f) || s_split (line, ';', fields, 32) < 15) {
        printf ("skipped uci-air-quality: unexpected header in %s\n", path);
        fclose (f);
        return -1;
    }
    for (int c = 0; c < 13; c++)
        series[c] = s_series_add (set, "uci-air-quality", fields[2 + c], fields[2 + c]);
    while (fgets (line, sizeof line, f)) {
        size_t nf = s_split (line, ';', fields, 32);
        int d, m, y, hh, mm, ss;
        if (nf < 15 || sscanf (fields[0], "%d/%d/%d", &d, &m, &y) != 3
            || sscanf (fields[1], "%d.%d.%d", &hh, &mm, &ss) != 3)
            continue;
        int64_t ts = s_days (y, m, d) * S_DAY_MS + ((int64_t) hh * 3600 + mm * 60 + ss) * 1000;
        for (int c = 0; c < 13; c++) {
            char *comma = strchr (fields[2 + c], ',');
            if (comma)
                *comma = '.';
            char *end;
            double v = strtod (fields[2 + c], &end);
            if (end == fields[2 + c] || v == -200)
                continue;
            s_series_t *s = series[c];
            if (s->n == 0 || ts > s->ts[s->n - 1])
                s_series_push (s, ts, v);
        }
    }
    fclose (f);
    return 0;
}

typedef struct {
    int64_t ts;                    //  Day, ms
    double pm25, aqi;              //  Daily mean, AQI
    char key[24];                  //  Site ID/POC
} s_epa_row_t;

static int
s_epa_compare (const void *a, const void *b)
{
    const s_epa_row_t *x = a, *y = b;
    int c = strcmp (x->key, y->key);
    return c? c: (x->ts > y->ts) - (x->ts < y->ts);
}

//  EPA: one row per monitor (Site ID + POC) and day, MM/DD/YYYY.
static int
s_load_epa (s_set_t *set, const char *dir)
{
    char path[1024], line[S_MAX_LINE];
    snprintf (path, sizeof path, "%s/epa-nyc-pm25-2022/ad_viz_plotval_data.csv", dir);
    FILE *f = fopen (path, "r");
    if (!f) {
        printf ("skipped epa-nyc-pm25-2022: cannot open %s\n", path);
        return -1;
    }
    s_epa_row_t *rows = NULL;
    size_t n = 0, cap = 0;
    char *fields[32];
    if (!fgets (line, sizeof line, f)) {
        fclose (f);
        return -1;
    }
    while (fgets (line, sizeof line, f)) {
        if (s_split (line, ',', fields, 32) < 7)
            continue;
        int m, d, y;
        if (sscanf (fields[0], "%d/%d/%d", &m, &d, &y) != 3)
            continue;
        if (n == cap) {
            cap = cap? cap * 2: 1024;
            s_epa_row_t *grown = realloc (rows, cap * sizeof *grown);
            if (!grown) {
                fclose (f);
                free (rows);
                return -1;
            }
            rows = grown;
        }
        s_epa_row_t *r = &rows[n++];
        r->ts = s_days (y, m, d) * S_DAY_MS;
        r->pm25 = strtod (fields[4], NULL);
        r->aqi = strtod (fields[6], NULL);
        snprintf (r->key, sizeof r->key, "%s/%s", fields[2], fields[3]);
    }
    fclose (f);
    qsort (rows, n, sizeof *rows, s_epa_compare);
    s_series_t *pm = NULL, *aqi = NULL;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp (rows[i].key, rows[i - 1].key) != 0) {
            char name[64];
            snprintf (name, sizeof name, "%s pm25", rows[i].key);
            pm = s_series_add (set, "epa-nyc-pm25-2022", "pm25 (daily)", name);
            snprintf (name, sizeof name, "%s aqi", rows[i].key);
            aqi = s_series_add (set, "epa-nyc-pm25-2022", "aqi (daily)", name);
        }
        if (pm->n == 0 || rows[i].ts > pm->ts[pm->n - 1]) {
            s_series_push (pm, rows[i].ts, rows[i].pm25);
            s_series_push (aqi, rows[i].ts, rows[i].aqi);
        }
    }
    free (rows);
    return 0;
}

//  ---------------------------------------------------------------------
//  Measuring

//  Encode points [start, end) of a series into enc (empty) until one
//  does not fit a v2 chunk (TM_GORILLA_E_FULL: a gap of more than 49
//  days, say); returns the end of the points taken. Exits on any other
//  failure.
static size_t
s_encode_chunk (tm_gorilla_enc_t *enc, const s_series_t *s, size_t start, size_t end)
{
    for (size_t i = start; i < end; i++) {
        int rc = tm_gorilla_enc_append (enc, s->ts[i], s->v[i]);
        if (rc == TM_GORILLA_E_FULL && i > start)
            return i;
        if (rc != 0) {
            fprintf (stderr, "bench_history: append failed in %s (%d)\n", s->name, rc);
            exit (1);
        }
    }
    return end;
}

//  Bytes of a series stored in chunks of up to chunk points; every chunk
//  is decoded and compared. Exits on a mismatch: the codec is broken.
//  A chunk's bytes are the v2 chunk's (its container's count and bit
//  length are not counted, as the v1 header's count was).
static size_t
s_stored_bytes (const s_series_t *s, size_t chunk, bool xor_only)
{
    size_t total = 0;
    for (size_t start = 0, end; start < s->n; start = end) {
        end = start + chunk < s->n? start + chunk: s->n;
        tm_gorilla_enc_t enc;
        tm_gorilla_enc_init (&enc);
        tm_gorilla_enc_set_xor_only (&enc, xor_only);
        end = s_encode_chunk (&enc, s, start, end);
        size_t size;
        const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
        tm_gorilla_dec_t dec;
        tm_gorilla_dec_init_stream (&dec, data, size, tm_gorilla_enc_count (&enc),
                                    tm_gorilla_enc_bits (&enc));
        int64_t ts;
        double v;
        for (size_t i = start; i < end; i++)
            if (tm_gorilla_dec_next (&dec, &ts, &v) != 1 || ts != s->ts[i]
                || memcmp (&v, &s->v[i], sizeof v) != 0) {
                fprintf (stderr, "bench_history: %s point %zu does not round-trip\n",
                         s->name, i);
                exit (1);
            }
        total += size;
        tm_gorilla_enc_fini (&enc);
    }
    return total;
}

typedef struct {
    size_t points;                 //  Readings
    size_t bytes120;               //  Stored in chunks of <= 120 points
    size_t bytes1024;              //  Stored in chunks of <= 1024 points
    size_t xor1024;                //  Same, XOR values only (plain Gorilla)
} s_sum_t;

static void
s_row (const char *group, const char *name, size_t nseries, const s_sum_t *t)
{
    double p = t->points? (double) t->points: 1;
    char label[80];
    if (nseries > 1)
        snprintf (label, sizeof label, "%s (%zu series)", name, nseries);
    else
        snprintf (label, sizeof label, "%s", name);
    printf ("%-18s %-30s %9zu %10zu %6.2f %10zu %6.2f %7.2f\n", group, label, t->points,
            t->bytes120, (double) t->bytes120 / p, t->bytes1024, (double) t->bytes1024 / p,
            (double) t->xor1024 / p);
}

static void
s_add (s_sum_t *a, const s_sum_t *b)
{
    a->points += b->points;
    a->bytes120 += b->bytes120;
    a->bytes1024 += b->bytes1024;
    a->xor1024 += b->xor1024;
}

static s_sum_t
s_measure (const s_series_t *s)
{
    return (s_sum_t) {s->n, s_stored_bytes (s, 120, false), s_stored_bytes (s, 1024, false),
                      s_stored_bytes (s, 1024, true)};
}

//  One row per (data set, kind), in order of first appearance, then the
//  data set's total; with verbose, every series before its kind's row.
static void
s_report (const s_set_t *set, bool verbose)
{
    printf ("%-18s %-30s %9s %10s %6s %10s %6s %7s\n", "data set", "series", "points",
            "bytes@120", "B/pt", "bytes@1024", "B/pt", "XOR B/pt");
    for (size_t g = 0; g < set->n; g++) {
        const char *group = set->items[g].group;
        bool seen = false;
        for (size_t j = 0; j < g && !seen; j++)
            seen = strcmp (set->items[j].group, group) == 0;
        if (seen)
            continue;
        s_sum_t group_sum = {0};
        for (size_t k = g; k < set->n; k++) {
            const s_series_t *first = &set->items[k];
            if (strcmp (first->group, group) != 0)
                continue;
            bool kind_seen = false;
            for (size_t j = g; j < k && !kind_seen; j++)
                kind_seen = strcmp (set->items[j].group, group) == 0
                         && strcmp (set->items[j].kind, first->kind) == 0;
            if (kind_seen)
                continue;
            s_sum_t kind_sum = {0};
            size_t nseries = 0;
            for (size_t i = k; i < set->n; i++) {
                const s_series_t *s = &set->items[i];
                if (strcmp (s->group, group) != 0 || strcmp (s->kind, first->kind) != 0)
                    continue;
                s_sum_t t = s_measure (s);
                if (verbose)
                    s_row (group, s->name, 1, &t);
                s_add (&kind_sum, &t);
                nseries++;
            }
            s_row (group, first->kind, nseries, &kind_sum);
            s_add (&group_sum, &kind_sum);
        }
        s_row (group, "ALL", 0, &group_sum);
        printf ("\n");
    }
}

//  The sim's breakdown by interval and clock, over all kinds.
static void
s_report_sim_timing (const s_set_t *set)
{
    printf ("sim by interval and timestamp source (all kinds, chunks of 1024):\n");
    for (size_t iv = 0; iv < S_INTERVALS; iv++)
        for (int jitter = 0; jitter < 2; jitter++) {
            char tag[48];
            snprintf (tag, sizeof tag, " %llds %s ", (long long) (s_intervals[iv] / 1000),
                      jitter? "gateway": "device");
            size_t points = 0, bytes = 0;
            for (size_t i = 0; i < set->n; i++)
                if (strcmp (set->items[i].group, "sim") == 0
                    && strstr (set->items[i].name, tag)) {
                    points += set->items[i].n;
                    bytes += s_stored_bytes (&set->items[i], 1024, false);
                }
            printf ("  %-22s %9zu points %6.2f B/pt\n", tag, points,
                    points? (double) bytes / (double) points: 0);
        }
    printf ("\n");
}

static double
s_now_ns (void)
{
    struct timespec t;
    clock_gettime (CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec * 1e9 + (double) t.tv_nsec;
}

//  Encode and decode time per point over the series of one group (or
//  all), chunks of 1024, best of a few rounds (shared machines are noisy).
static void
s_report_speed (const s_set_t *set, const char *group)
{
    double best_enc = 1e30, best_dec = 1e30;
    size_t points = 0;
    volatile double sink = 0;
    for (int round = 0; round < 5; round++) {
        double enc_ns = 0, dec_ns = 0;
        points = 0;
        for (size_t i = 0; i < set->n; i++) {
            const s_series_t *s = &set->items[i];
            if (group && strcmp (s->group, group) != 0)
                continue;
            for (size_t start = 0, end; start < s->n; start = end) {
                end = start + 1024 < s->n? start + 1024: s->n;
                tm_gorilla_enc_t enc;
                tm_gorilla_enc_init (&enc);
                double t0 = s_now_ns ();
                end = s_encode_chunk (&enc, s, start, end);
                double t1 = s_now_ns ();
                size_t size;
                const uint8_t *data = tm_gorilla_enc_data (&enc, &size);
                tm_gorilla_dec_t dec;
                tm_gorilla_dec_init_stream (&dec, data, size, tm_gorilla_enc_count (&enc),
                                            tm_gorilla_enc_bits (&enc));
                int64_t ts;
                double v, acc = 0;
                while (tm_gorilla_dec_next (&dec, &ts, &v) == 1)
                    acc += v;
                double t2 = s_now_ns ();
                sink += acc;
                enc_ns += t1 - t0;
                dec_ns += t2 - t1;
                points += end - start;
                tm_gorilla_enc_fini (&enc);
            }
        }
        if (points == 0)
            return;
        best_enc = fmin (best_enc, enc_ns / (double) points);
        best_dec = fmin (best_dec, dec_ns / (double) points);
    }
    printf ("speed %-18s %9zu points: encode %5.1f ns/point, decode %5.1f ns/point\n",
            group? group: "(all)", points, best_enc, best_dec);
}

int
main (int argc, char **argv)
{
    const char *dir = TM_SOURCE_ROOT "/../shared/data";
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "-v") == 0)
            verbose = true;
        else
        if (strcmp (argv[i], "-h") == 0 || strcmp (argv[i], "--help") == 0) {
            printf ("usage: bench_history [DATA_DIR] [-v]\n"
                    "  DATA_DIR  shared data sets (default %s)\n"
                    "  -v        one row per series\n",
                    dir);
            return 0;
        }
        else
            dir = argv[i];
    }
    s_set_t set = {0};
    s_make_sim (&set);
    s_load_uci (&set, dir);
    s_load_epa (&set, dir);
    printf ("tm_gorilla chunk format v%d, encoder state %zu bytes; raw points are 16 bytes\n\n",
            TM_GORILLA_STREAM_VERSION, sizeof (tm_gorilla_enc_t));
    s_report (&set, verbose);
    s_report_sim_timing (&set);
    s_report_speed (&set, "sim");
    s_report_speed (&set, "uci-air-quality");
    s_report_speed (&set, "epa-nyc-pm25-2022");
    for (size_t i = 0; i < set.n; i++) {
        free (set.items[i].ts);
        free (set.items[i].v);
    }
    free (set.items);
    return 0;
}
