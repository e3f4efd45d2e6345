/*  bench_scan - a worker's query scan, columnar and twin at a time

    The query path's hot loop, alone: one twin table filled like
    bench_query.py's city (60% air stations with pm25 and temperature, 40%
    traffic counters, nine districts with a location each), then
    bench_query's two queries scanned by tm_wquery_scan (columns kept
    between scans) and by tm_wquery_scan_rows (twin by twin, what the worker
    did before), each the median of a few runs after a warm-up, in ns per
    twin. The two answers are compared, so both did the same work.

    Run: bench_scan [twins [columns-only-runs [query]]] (default 250000: a
    quarter of a million-twin city, one of bench_query's four workers).
    With a second argument it only runs the columnar scan that many times
    per query (for perf record or callgrind), with a third only that query
    (0 or 1).
*/
#include "tm_qexec.h"
#include "tm_query.h"
#include "tm_wquery.h"
#include "tm_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t s_key[TM_SHARDMAP_KEY_BYTES] = "bench-scan-key!!";

static const struct {
    const char *name;
    double lat, lon;
} s_districts[] = {
    {"Centro Storico", 45.4642, 9.1900}, {"Brera", 45.4719, 9.1873},
    {"Navigli", 45.4515, 9.1760}, {"Porta Romana", 45.4520, 9.2030},
    {"Isola", 45.4870, 9.1890}, {"Citta Studi", 45.4780, 9.2270},
    {"San Siro", 45.4780, 9.1240}, {"Lambrate", 45.4840, 9.2410},
    {"Bicocca", 45.5140, 9.2110},
};

static uint64_t s_rng = 42;

static double
s_uniform (void)
{
    s_rng = s_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double) (s_rng >> 11) / 9007199254740992.0;
}

static double
s_gauss (void)
{
    double u = s_uniform () + 1e-12, v = s_uniform ();
    return sqrt (-2 * log (u)) * cos (2 * 3.14159265358979 * v);
}

static int
s_apply (tm_twins_t *twins, const char *entity, const char *prop, double value, int64_t ts,
         const char *model, const tm_wire_attr_t *attrs, size_t nattrs)
{
    uint8_t buf[1024];
    size_t n = tm_wire_encode_attrs (buf, sizeof buf, entity, prop, value, ts, model, attrs,
                                     nattrs);
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, buf, n);
    if (n == 0 || tm_wire_next (&it, &r) != 1)
        return -1;
    return tm_twins_apply (twins, &r, s_key, 1024, ts) == TM_APPLY_APPLIED? 0: -1;
}

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y? -1: x > y;
}

static uint8_t *
s_result (const char *text, tm_qpartial_t *part, size_t *size)
{
    tm_expr_error_t err;
    tm_query_t *q = tm_query_parse (text, &err);
    size_t psize;
    uint8_t *pb = tm_qpartial_encode (part, &psize);
    tm_qpartial_t *merged = tm_qpartial_new (q);
    char why[256];
    uint8_t *out = NULL;
    if (merged && pb && tm_qpartial_merge (merged, pb, psize, why, sizeof why) == 0) {
        tm_qresult_t *res = tm_qresult_new (q, merged);
        if (res)
            out = tm_qresult_encode (res, size);
        tm_qresult_destroy (&res);
    }
    free (pb);
    tm_qpartial_destroy (&merged);
    tm_query_destroy (&q);
    return out;
}

//  The same answer, but for the last bits of sums: the two scans add the
//  twins up in different orders.
static bool
s_same (const uint8_t *a, size_t a_size, const uint8_t *b, size_t b_size)
{
    char err[256];
    tm_qresult_t *x = a? tm_qresult_decode (a, a_size, err, sizeof err): NULL;
    tm_qresult_t *y = b? tm_qresult_decode (b, b_size, err, sizeof err): NULL;
    bool same = x && y && tm_qresult_rows (x) == tm_qresult_rows (y)
                && tm_qresult_columns (x) == tm_qresult_columns (y)
                && tm_qresult_matched (x) == tm_qresult_matched (y);
    for (size_t r = 0; same && r < tm_qresult_rows (x); r++)
        for (size_t c = 0; same && c < tm_qresult_columns (x); c++) {
            tm_expr_value_t u = tm_qresult_cell (x, r, c), v = tm_qresult_cell (y, r, c);
            same = u.type == v.type;
            if (same && u.type == TM_EXPR_NUMBER)
                same = fabs (u.num - v.num) <= 1e-9 * fmax (1, fabs (v.num));
            else
            if (same && u.type == TM_EXPR_STRING)
                same = u.len == v.len && memcmp (u.str, v.str, u.len) == 0;
        }
    tm_qresult_destroy (&x);
    tm_qresult_destroy (&y);
    return same;
}

int
main (int argc, char **argv)
{
    long ntwins = argc > 1? atol (argv[1]): 250000;
    if (ntwins <= 0) {
        fprintf (stderr, "usage: bench_scan [twins]\n");
        return 2;
    }
    tm_twins_t *twins = tm_twins_new ();
    tm_wquery_t *wq = twins? tm_wquery_new (twins): NULL;
    if (!wq)
        return 1;
    int64_t ts = 1700000000000;
    for (long i = 0; i < ntwins; i++) {
        size_t d = (size_t) (s_uniform () * 9) % 9;
        bool air = s_uniform () < 0.6;
        char entity[64], district[96], location[96];
        snprintf (entity, sizeof entity, "milan/%s-%07ld", air? "air": "traffic", i);
        int dl = snprintf (district, sizeof district, "\"milan/district/%s\"",
                           s_districts[d].name);
        int ll = snprintf (location, sizeof location, "{\"lat\":%.7f,\"lon\":%.7f}",
                           s_districts[d].lat + s_gauss () * 0.0055,
                           s_districts[d].lon + s_gauss () * 0.0078);
        tm_wire_attr_t attrs[2] = {{"district", 8, district, (size_t) dl},
                                   {"location", 8, location, (size_t) ll}};
        int rc = air? s_apply (twins, entity, "pm25", round (exp (2.8 + 0.6 * s_gauss ()) * 10) / 10,
                               ts, "air_station", attrs, 2)
                      | s_apply (twins, entity, "temperature", round (s_uniform () * 320 - 20) / 10,
                                 ts, NULL, NULL, 0)
                    : s_apply (twins, entity, "vehicles", floor (s_uniform () * 900), ts,
                               "traffic_counter", attrs, 2);
        if (rc != 0) {
            fprintf (stderr, "bench_scan: apply failed\n");
            return 1;
        }
    }
    long only = argc > 2? atol (argv[2]): 0;
    long which = argc > 3? atol (argv[3]): -1;
    static uint32_t shards[1024];
    for (uint32_t s = 0; s < 1024; s++)
        shards[s] = s;
    static const char *queries[][2] = {
        {"filter+group", "SELECT district, count(*), avg(pm25) FROM twins WHERE model = "
                         "'air_station' AND pm25 > 20 GROUP BY district"},
        {"geo-radius", "SELECT count(*), avg(pm25) FROM twins WHERE "
                       "within(location, 45.4642, 9.19, 1000)"},
    };
    printf ("bench_scan: %ld twins, median of 9 runs after 2 warm-ups\n", ntwins);
    printf ("%-14s %14s %14s %8s %6s\n", "query", "columns ns/twin", "rows ns/twin", "ratio",
            "same");
    int status = 0;
    for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
        tm_expr_error_t err;
        tm_query_t *parsed = tm_query_parse (queries[q][1], &err);
        size_t psize;
        uint8_t *pbytes = parsed? tm_query_plan_encode (parsed, &psize): NULL;
        tm_query_t *plan = pbytes? tm_query_plan_decode (pbytes, psize, &err): NULL;
        if (!plan) {
            fprintf (stderr, "bench_scan: %s\n", err.message);
            return 1;
        }
        for (long run = 0; run < only && (which < 0 || (size_t) which == q); run++) {
            tm_qpartial_t *part = tm_qpartial_new (plan);
            tm_wquery_scan (wq, NULL, NULL, plan, shards, 1024, ts, part);
            tm_qpartial_destroy (&part);
        }
        if (only)
            continue;
        double took[2][9];
        uint8_t *answer[2] = {NULL, NULL};
        size_t answer_size[2] = {0, 0};
        for (int way = 0; way < 2; way++)
            for (int run = 0; run < 11; run++) {
                tm_qpartial_t *part = tm_qpartial_new (plan);
                int64_t t0 = tm_util_mono_us ();
                long n = way == 0
                         ? tm_wquery_scan (wq, NULL, NULL, plan, shards, 1024, ts, part)
                         : tm_wquery_scan_rows (twins, NULL, NULL, plan, shards, 1024, ts, part);
                int64_t us = tm_util_mono_us () - t0;
                if (n != ntwins) {
                    fprintf (stderr, "bench_scan: scanned %ld of %ld\n", n, ntwins);
                    return 1;
                }
                if (run >= 2)
                    took[way][run - 2] = (double) us * 1000 / (double) ntwins;
                if (run == 10)
                    answer[way] = s_result (queries[q][1], part, &answer_size[way]);
                tm_qpartial_destroy (&part);
            }
        qsort (took[0], 9, sizeof (double), s_cmp_double);
        qsort (took[1], 9, sizeof (double), s_cmp_double);
        bool same = s_same (answer[0], answer_size[0], answer[1], answer_size[1]);
        printf ("%-14s %14.1f %14.1f %7.1fx %6s\n", queries[q][0], took[0][4], took[1][4],
                took[1][4] / took[0][4], same? "yes": "NO");
        if (!same)
            status = 1;
        free (answer[0]);
        free (answer[1]);
        free (pbytes);
        tm_query_destroy (&plan);
        tm_query_destroy (&parsed);
    }
    tm_wquery_destroy (&wq);
    tm_twins_destroy (&twins);
    return status;
}
