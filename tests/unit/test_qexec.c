/*  test_qexec - partials, merges and results against a brute-force model

    A synthetic city of 1000 twins (air stations and parking bays in six
    districts, some without a district or a pm25 reading) is fed into one
    partial and, separately, split across three worker partials that go
    through the wire (plan bytes to the workers, partial bytes back) and
    are merged. Both answers must be identical and must equal what the
    test computes by brute force.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>
#include <jansson.h>

#include "tm_qexec.h"
#include "tm_sketch.h"

#define NTWINS 1000
#define NDISTRICTS 6

static const char *s_districts[NDISTRICTS] = {
    "milan/district/Brera",          "milan/district/Isola",    "milan/district/Navigli, south",
    "milan/district/Citt\xc3\xa0 \"Studi\"", "milan/district/Centro", "milan/district/Lambrate",
};

//  One synthetic twin.
typedef struct {
    char entity[32];                   //  twin-0042
    bool air;                          //  model air_station, else parking_bay
    int district;                      //  Index, or -1: no district attribute
    bool has_pm25;                     //  A reading exists
    double pm25;                       //  Quarters: sums are exact in any order
    double lat;                        //  Location
    double lon;
} s_twin_t;

static s_twin_t s_city[NTWINS];

static void
s_make_city (void)
{
    for (int i = 0; i < NTWINS; i++) {
        s_twin_t *t = &s_city[i];
        snprintf (t->entity, sizeof t->entity, "twin-%04d", i);
        t->air = i % 5 != 4;
        //  Uneven districts, so that HAVING and minimum sizes cut some.
        t->district = i % 7 == 6? -1
                    : i % 10 < 4? 0: i % 10 < 6? 1: i % 10 < 7? 2: 3 + i % 3;
        t->has_pm25 = i % 11 != 0;
        t->pm25 = ((i * 37) % 200) / 4.0;
        t->lat = 45.40 + (i % 100) * 0.001;
        t->lon = 9.10 + (i / 100) * 0.01;
    }
}

//  Fill the query's columns for twin i, as a worker would.
static size_t
s_fill (const tm_query_t *q, int i, tm_expr_value_t *values)
{
    const s_twin_t *t = &s_city[i];
    size_t n = tm_query_columns (q);
    for (size_t c = 0; c < n; c++) {
        const char *name = tm_query_column_name (q, c);
        tm_expr_value_t v = tm_expr_null ();
        if (strcmp (name, "entity") == 0)
            v = tm_expr_string (t->entity, (uint32_t) strlen (t->entity));
        else
        if (strcmp (name, "model") == 0)
            v = t->air? tm_expr_string ("air_station", 11): tm_expr_string ("parking_bay", 11);
        else
        if (strcmp (name, "district") == 0 && t->district >= 0)
            v = tm_expr_string (s_districts[t->district],
                                (uint32_t) strlen (s_districts[t->district]));
        else
        if (strcmp (name, "pm25") == 0 && t->has_pm25)
            v = tm_expr_number (t->pm25);
        else
        if (strcmp (name, "location") == 0)
            v = tm_expr_location (t->lat, t->lon);
        values[c] = v;
    }
    return n;
}

static tm_query_t *
s_parse (const char *text)
{
    tm_expr_error_t err;
    tm_query_t *q = tm_query_parse (text, &err);
    if (!q)
        fail_msg ("'%s': %s", text, err.message);
    return q;
}

//  All twins into one partial of the parsed query.
static tm_qpartial_t *
s_feed_one (const tm_query_t *q)
{
    tm_qpartial_t *p = tm_qpartial_new (q);
    assert_non_null (p);
    tm_expr_value_t values[64];
    for (int i = 0; i < NTWINS; i++)
        tm_qpartial_feed (p, values, s_fill (q, i, values));
    return p;
}

//  Twins split over three workers that see only the plan bytes; their
//  partials travel as bytes and are merged by the broker.
static tm_qpartial_t *
s_feed_three (const tm_query_t *q)
{
    size_t plan_size;
    uint8_t *plan = tm_query_plan_encode (q, &plan_size);
    assert_non_null (plan);
    tm_qpartial_t *merged = tm_qpartial_new (q);
    assert_non_null (merged);
    for (int w = 0; w < 3; w++) {
        tm_expr_error_t err;
        tm_query_t *wq = tm_query_plan_decode (plan, plan_size, &err);
        assert_non_null (wq);
        tm_qpartial_t *p = tm_qpartial_new (wq);
        tm_expr_value_t values[64];
        for (int i = 0; i < NTWINS; i++)
            if ((i * 7 + 3) % 3 == w)
                tm_qpartial_feed (p, values, s_fill (wq, i, values));
        size_t size;
        uint8_t *bytes = tm_qpartial_encode (p, &size);
        assert_non_null (bytes);
        char why[256];
        if (tm_qpartial_merge (merged, bytes, size, why, sizeof why) != 0)
            fail_msg ("merge: %s", why);
        free (bytes);
        tm_qpartial_destroy (&p);
        tm_query_destroy (&wq);
    }
    free (plan);
    return merged;
}

//  The twins into one partial in batches, column by column (as the
//  worker's column scan does), every 13th flagged as another query's: the
//  partial must encode to exactly the bytes of a twin-at-a-time partial
//  fed the same twins (s_feed_except).
//  A column in the typed form a worker would keep it in, when all its
//  values fit one: numbers (NaN for null), strings (ids into a dictionary
//  of distinct values; the dictionary's strings are the city's own, or
//  copies for entity ids), locations. Otherwise plain values.
typedef struct {
    tm_expr_col_t col;
    double *nums;
    uint32_t *ids;
    double *pairs;
    tm_expr_value_t dict[NTWINS + 1];
    uint32_t ndict;
} s_typed_t;

static void
s_type_column (s_typed_t *t, const tm_expr_value_t *values)
{
    bool nums = true, strs = true, locs = true;
    for (int i = 0; i < NTWINS; i++) {
        int ty = values[i].type;
        nums = nums && (ty == TM_EXPR_NUMBER || ty == TM_EXPR_NULL);
        strs = strs && (ty == TM_EXPR_STRING || ty == TM_EXPR_NULL);
        locs = locs && (ty == TM_EXPR_LOCATION || ty == TM_EXPR_NULL);
    }
    if (nums) {
        t->nums = calloc (NTWINS, sizeof (double));
        assert_non_null (t->nums);
        for (int i = 0; i < NTWINS; i++)
            t->nums[i] = values[i].type == TM_EXPR_NUMBER? values[i].num: NAN;
        t->col = (tm_expr_col_t) {.kind = TM_EXPR_COL_NUMBERS, .nums = t->nums};
    }
    else
    if (strs) {
        t->ids = calloc (NTWINS, sizeof (uint32_t));
        assert_non_null (t->ids);
        t->dict[0] = tm_expr_null ();
        t->ndict = 1;
        for (int i = 0; i < NTWINS; i++) {
            if (values[i].type == TM_EXPR_NULL)
                continue;
            uint32_t d = 1;
            while (d < t->ndict && !(t->dict[d].len == values[i].len
                                     && memcmp (t->dict[d].str, values[i].str, values[i].len) == 0))
                d++;
            if (d == t->ndict)
                t->dict[t->ndict++] = values[i];
            t->ids[i] = d;
        }
        t->col = (tm_expr_col_t) {.kind = TM_EXPR_COL_STRINGS, .ids = t->ids, .dict = t->dict,
                                  .ndict = t->ndict};
    }
    else
    if (locs) {
        t->pairs = calloc (2 * NTWINS, sizeof (double));
        assert_non_null (t->pairs);
        for (int i = 0; i < NTWINS; i++) {
            t->pairs[2 * i] = values[i].type == TM_EXPR_LOCATION? values[i].lat: NAN;
            t->pairs[2 * i + 1] = values[i].type == TM_EXPR_LOCATION? values[i].lon: NAN;
        }
        t->col = (tm_expr_col_t) {.kind = TM_EXPR_COL_LOCATIONS, .latlon = t->pairs};
    }
    else
        t->col = (tm_expr_col_t) {.kind = TM_EXPR_COL_VALUES, .values = values};
}

//  The twins into one partial in batches, column by column (as the
//  worker's column scan does), every 13th flagged as another query's: the
//  partial must encode to exactly the bytes of a twin-at-a-time partial
//  fed the same twins (s_feed_except). typed: the columns in the forms a
//  worker keeps them in (s_type_column), else plain values.
static tm_qpartial_t *
s_feed_batch (const tm_query_t *q, bool typed)
{
    size_t ncols = tm_query_columns (q);
    tm_expr_value_t *cols[64];
    s_typed_t *forms[64];
    tm_expr_col_t view[64];
    assert_true (ncols <= 64);
    for (size_t c = 0; c < ncols; c++) {
        cols[c] = calloc (NTWINS, sizeof (tm_expr_value_t));
        forms[c] = calloc (1, sizeof (s_typed_t));
        assert_non_null (cols[c]);
        assert_non_null (forms[c]);
    }
    uint8_t skip[NTWINS];
    tm_expr_value_t values[64];
    for (int i = 0; i < NTWINS; i++) {
        s_fill (q, i, values);
        for (size_t c = 0; c < ncols; c++)
            cols[c][i] = values[c];
        skip[i] = i % 13 == 5;
    }
    for (size_t c = 0; c < ncols; c++) {
        if (typed)
            s_type_column (forms[c], cols[c]);
        else
            forms[c]->col = (tm_expr_col_t) {.kind = TM_EXPR_COL_VALUES, .values = cols[c]};
        view[c] = forms[c]->col;
    }
    tm_qpartial_t *p = tm_qpartial_new (q);
    assert_non_null (p);
    //  Odd-sized calls, so that passes end mid-way.
    for (size_t from = 0; from < NTWINS; from += 333) {
        size_t n = NTWINS - from < 333? NTWINS - from: 333;
        tm_expr_col_t shifted[64];
        for (size_t c = 0; c < ncols; c++)
            shifted[c] = tm_expr_col_shift (&view[c], from);
        tm_qpartial_feed_batch (p, shifted, ncols, n, skip + from);
    }
    for (size_t c = 0; c < ncols; c++) {
        free (cols[c]);
        free (forms[c]->nums);
        free (forms[c]->ids);
        free (forms[c]->pairs);
        free (forms[c]);
    }
    return p;
}

static tm_qpartial_t *
s_feed_except (const tm_query_t *q)
{
    tm_qpartial_t *p = tm_qpartial_new (q);
    assert_non_null (p);
    tm_expr_value_t values[64];
    for (int i = 0; i < NTWINS; i++)
        if (i % 13 != 5)
            tm_qpartial_feed (p, values, s_fill (q, i, values));
    return p;
}

static bool
s_same_value (tm_expr_value_t a, tm_expr_value_t b)
{
    if (a.type != b.type)
        return false;
    switch (a.type) {
        case TM_EXPR_NUMBER:
            return a.num == b.num;
        case TM_EXPR_STRING:
            return a.len == b.len && memcmp (a.str, b.str, a.len) == 0;
        case TM_EXPR_BOOL:
            return a.b == b.b;
        case TM_EXPR_LOCATION:
            return a.lat == b.lat && a.lon == b.lon;
        default:
            return true;
    }
}

static void
s_assert_same_result (const tm_qresult_t *a, const tm_qresult_t *b)
{
    assert_int_equal (tm_qresult_columns (a), tm_qresult_columns (b));
    assert_int_equal (tm_qresult_rows (a), tm_qresult_rows (b));
    for (size_t c = 0; c < tm_qresult_columns (a); c++)
        assert_string_equal (tm_qresult_column (a, c), tm_qresult_column (b, c));
    for (size_t r = 0; r < tm_qresult_rows (a); r++)
        for (size_t c = 0; c < tm_qresult_columns (a); c++)
            if (!s_same_value (tm_qresult_cell (a, r, c), tm_qresult_cell (b, r, c)))
                fail_msg ("row %zu column %zu differs", r, c);
    assert_int_equal (tm_qresult_scanned (a), tm_qresult_scanned (b));
    assert_int_equal (tm_qresult_matched (a), tm_qresult_matched (b));
    assert_int_equal (tm_qresult_truncated (a), tm_qresult_truncated (b));
}

//  Run a query both ways, check they agree; returns the one-partial result.
static tm_qresult_t *
s_run (const char *text, tm_query_t **q_p)
{
    tm_query_t *q = s_parse (text);
    tm_qpartial_t *one = s_feed_one (q);
    tm_qpartial_t *three = s_feed_three (q);
    tm_qpartial_t *except = s_feed_except (q);
    size_t one_size;
    uint8_t *one_bytes = tm_qpartial_encode (except, &one_size);
    assert_non_null (one_bytes);
    for (int typed = 0; typed < 2; typed++) {
        tm_qpartial_t *batch = s_feed_batch (q, typed);
        size_t batch_size;
        uint8_t *batch_bytes = tm_qpartial_encode (batch, &batch_size);
        assert_non_null (batch_bytes);
        if (one_size != batch_size || memcmp (one_bytes, batch_bytes, one_size) != 0)
            fail_msg ("'%s': the batch partial over %s columns differs from the twin-at-a-time "
                      "one", text, typed? "typed": "plain");
        free (batch_bytes);
        tm_qpartial_destroy (&batch);
    }
    free (one_bytes);
    tm_qpartial_destroy (&except);
    assert_int_equal (tm_qpartial_scanned (one), NTWINS);
    assert_int_equal (tm_qpartial_scanned (three), NTWINS);
    assert_int_equal (tm_qpartial_matched (one), tm_qpartial_matched (three));
    tm_qresult_t *r1 = tm_qresult_new (q, one);
    tm_qresult_t *r3 = tm_qresult_new (q, three);
    assert_non_null (r1);
    assert_non_null (r3);
    s_assert_same_result (r1, r3);
    tm_qresult_destroy (&r3);
    tm_qpartial_destroy (&one);
    tm_qpartial_destroy (&three);
    *q_p = q;
    return r1;
}

//  Brute force: per district (index NDISTRICTS = no district) over air
//  stations.
typedef struct {
    uint64_t twins;                    //  count(*)
    uint64_t count;                    //  count(pm25)
    double sum;                        //  sum(pm25)
    double min;                        //  min(pm25)
    double max;                        //  max(pm25)
    double values[NTWINS];             //  pm25 values, for quantiles
} s_truth_t;

static s_truth_t s_truth[NDISTRICTS + 1];

static void
s_compute_truth (bool air_only)
{
    memset (s_truth, 0, sizeof s_truth);
    for (int i = 0; i < NTWINS; i++) {
        const s_twin_t *t = &s_city[i];
        if (air_only && !t->air)
            continue;
        s_truth_t *g = &s_truth[t->district < 0? NDISTRICTS: t->district];
        g->twins++;
        if (!t->has_pm25)
            continue;
        if (g->count == 0 || t->pm25 < g->min)
            g->min = t->pm25;
        if (g->count == 0 || t->pm25 > g->max)
            g->max = t->pm25;
        g->values[g->count++] = t->pm25;
        g->sum += t->pm25;
    }
}

static int
s_double_cmp (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y? -1: x > y;
}

//  District index of a result cell (NDISTRICTS for null).
static int
s_district_of (tm_expr_value_t v)
{
    if (v.type == TM_EXPR_NULL)
        return NDISTRICTS;
    assert_int_equal (v.type, TM_EXPR_STRING);
    for (int d = 0; d < NDISTRICTS; d++)
        if (strlen (s_districts[d]) == v.len && memcmp (s_districts[d], v.str, v.len) == 0)
            return d;
    fail_msg ("unknown district");
    return -1;
}

static void
s_assert_number (tm_expr_value_t v, double want)
{
    assert_int_equal (v.type, TM_EXPR_NUMBER);
    if (v.num != want)
        fail_msg ("got %.17g, want %.17g", v.num, want);
}

//  A group per twin: far more groups than the batch path's group cache
//  has entries, with keys of one length, so cache entries are reused by
//  other groups all the time (s_run checks the batch partial's bytes).
static void
test_many_groups (void **state)
{
    (void) state;
    tm_query_t *q;
    tm_qresult_t *r = s_run ("SELECT entity, district, count(*), sum(pm25) FROM twins "
                             "GROUP BY entity, district", &q);
    assert_int_equal (tm_qresult_rows (r), NTWINS);
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
}

static void
test_groups (void **state)
{
    (void) state;
    tm_query_t *q;
    tm_qresult_t *r = s_run ("SELECT district, count(*), count(pm25), sum(pm25), avg(pm25), "
                             "min(pm25), max(pm25), max(pm25) - min(pm25) FROM twins "
                             "WHERE model = 'air_station' GROUP BY district", &q);
    s_compute_truth (true);
    assert_int_equal (tm_qresult_rows (r), NDISTRICTS + 1);
    assert_int_equal (tm_qresult_columns (r), 8);
    assert_string_equal (tm_qresult_column (r, 4), "avg(pm25)");
    uint64_t matched = 0;
    for (size_t row = 0; row < tm_qresult_rows (r); row++) {
        int d = s_district_of (tm_qresult_cell (r, row, 0));
        const s_truth_t *g = &s_truth[d];
        matched += g->twins;
        s_assert_number (tm_qresult_cell (r, row, 1), (double) g->twins);
        s_assert_number (tm_qresult_cell (r, row, 2), (double) g->count);
        s_assert_number (tm_qresult_cell (r, row, 3), g->sum);
        s_assert_number (tm_qresult_cell (r, row, 4), g->sum / (double) g->count);
        s_assert_number (tm_qresult_cell (r, row, 5), g->min);
        s_assert_number (tm_qresult_cell (r, row, 6), g->max);
        s_assert_number (tm_qresult_cell (r, row, 7), g->max - g->min);
        //  Without ORDER BY: group keys ascending, bytewise, null last.
        if (row > 0) {
            tm_expr_value_t a = tm_qresult_cell (r, row - 1, 0), b = tm_qresult_cell (r, row, 0);
            assert_int_equal (a.type, TM_EXPR_STRING);
            if (b.type == TM_EXPR_STRING) {
                size_t n = a.len < b.len? a.len: b.len;
                int c = memcmp (a.str, b.str, n);
                assert_true (c < 0 || (c == 0 && a.len < b.len));
            }
        }
    }
    assert_int_equal (tm_qresult_cell (r, NDISTRICTS, 0).type, TM_EXPR_NULL);
    assert_int_equal (tm_qresult_matched (r), matched);
    assert_int_equal (tm_qresult_scanned (r), NTWINS);
    assert_false (tm_qresult_truncated (r));
    assert_false (tm_qresult_partial (r));
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
}

static void
test_having_order_limit (void **state)
{
    (void) state;
    s_compute_truth (true);
    //  Threshold: the median group size, so HAVING drops some groups.
    uint64_t sizes[NDISTRICTS + 1];
    for (int d = 0; d <= NDISTRICTS; d++)
        sizes[d] = s_truth[d].twins;
    uint64_t sorted[NDISTRICTS + 1];
    memcpy (sorted, sizes, sizeof sorted);
    for (int i = 0; i <= NDISTRICTS; i++)
        for (int j = i + 1; j <= NDISTRICTS; j++)
            if (sorted[j] < sorted[i]) {
                uint64_t t = sorted[i];
                sorted[i] = sorted[j];
                sorted[j] = t;
            }
    uint64_t threshold = sorted[2];
    char text[512];
    snprintf (text, sizeof text,
              "SELECT district AS d, avg(pm25) AS a FROM twins WHERE model = 'air_station' "
              "GROUP BY district HAVING count(*) > %llu ORDER BY a DESC LIMIT 3",
              (unsigned long long) threshold);
    tm_query_t *q;
    tm_qresult_t *r = s_run (text, &q);
    //  Brute force: filter, sort by average descending, keep 3.
    int order[NDISTRICTS + 1], n = 0;
    for (int d = 0; d <= NDISTRICTS; d++)
        if (s_truth[d].twins > threshold)
            order[n++] = d;
    assert_true (n >= 3 && n < NDISTRICTS + 1);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double ai = s_truth[order[i]].sum / (double) s_truth[order[i]].count;
            double aj = s_truth[order[j]].sum / (double) s_truth[order[j]].count;
            if (aj > ai) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        }
    assert_int_equal (tm_qresult_rows (r), 3);
    assert_string_equal (tm_qresult_column (r, 0), "d");
    for (size_t row = 0; row < 3; row++) {
        assert_int_equal (s_district_of (tm_qresult_cell (r, row, 0)), order[row]);
        s_assert_number (tm_qresult_cell (r, row, 1),
                         s_truth[order[row]].sum / (double) s_truth[order[row]].count);
    }
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
}

static void
test_quantiles (void **state)
{
    (void) state;
    tm_query_t *q;
    tm_qresult_t *r = s_run ("SELECT district, p50(pm25), p90(pm25), p99(pm25) FROM twins "
                             "GROUP BY district", &q);
    s_compute_truth (false);
    const double qs[3] = {0.5, 0.9, 0.99};
    for (size_t row = 0; row < tm_qresult_rows (r); row++) {
        s_truth_t *g = &s_truth[s_district_of (tm_qresult_cell (r, row, 0))];
        qsort (g->values, g->count, sizeof (double), s_double_cmp);
        for (int k = 0; k < 3; k++) {
            double exact = g->values[(size_t) floor (qs[k] * (double) (g->count - 1))];
            tm_expr_value_t v = tm_qresult_cell (r, row, (size_t) k + 1);
            assert_int_equal (v.type, TM_EXPR_NUMBER);
            if (fabs (v.num - exact) > TM_SKETCH_DEFAULT_ALPHA * fabs (exact) + 1e-9)
                fail_msg ("p%g: got %g, exact %g", qs[k] * 100, v.num, exact);
        }
    }
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
}

static void
test_no_twins (void **state)
{
    (void) state;
    tm_query_t *q;
    //  No GROUP BY: one row over zero matching twins, as in SQL.
    tm_qresult_t *r = s_run ("SELECT count(*), count(pm25), avg(pm25), max(pm25), p50(pm25) "
                             "FROM twins WHERE pm25 > 1000", &q);
    assert_int_equal (tm_qresult_rows (r), 1);
    s_assert_number (tm_qresult_cell (r, 0, 0), 0);
    s_assert_number (tm_qresult_cell (r, 0, 1), 0);
    for (size_t c = 2; c < 5; c++)
        assert_int_equal (tm_qresult_cell (r, 0, c).type, TM_EXPR_NULL);
    assert_int_equal (tm_qresult_matched (r), 0);
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
    //  With GROUP BY: no groups, no rows.
    r = s_run ("SELECT model, count(*) FROM twins WHERE pm25 > 1000 GROUP BY model", &q);
    assert_int_equal (tm_qresult_rows (r), 0);
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
    //  Nothing fed at all, and a partial fed short value arrays.
    q = s_parse ("SELECT count(*), sum(pm25) FROM twins");
    tm_qpartial_t *p = tm_qpartial_new (q);
    tm_qpartial_feed (p, NULL, 0);
    r = tm_qresult_new (q, p);
    assert_int_equal (tm_qresult_rows (r), 1);
    s_assert_number (tm_qresult_cell (r, 0, 0), 1);
    assert_int_equal (tm_qresult_cell (r, 0, 1).type, TM_EXPR_NULL);
    tm_qresult_destroy (&r);
    tm_qpartial_destroy (&p);
    tm_query_destroy (&q);
}

static int
s_twin_cmp (const void *a, const void *b)
{
    const s_twin_t *x = *(const s_twin_t *const *) a, *y = *(const s_twin_t *const *) b;
    if (x->pm25 != y->pm25)
        return x->pm25 > y->pm25? -1: 1;
    return strcmp (x->entity, y->entity);
}

static void
test_rows (void **state)
{
    (void) state;
    tm_query_t *q;
    tm_qresult_t *r = s_run ("SELECT entity, pm25, location FROM twins "
                             "WHERE pm25 IS NOT NULL AND model = 'air_station' "
                             "ORDER BY pm25 DESC, entity LIMIT 7", &q);
    const s_twin_t *best[NTWINS];
    size_t n = 0;
    for (int i = 0; i < NTWINS; i++)
        if (s_city[i].has_pm25 && s_city[i].air)
            best[n++] = &s_city[i];
    qsort (best, n, sizeof best[0], s_twin_cmp);
    assert_int_equal (tm_qresult_rows (r), 7);
    for (size_t row = 0; row < 7; row++) {
        tm_expr_value_t e = tm_qresult_cell (r, row, 0);
        assert_int_equal (e.type, TM_EXPR_STRING);
        assert_int_equal (e.len, strlen (best[row]->entity));
        assert_memory_equal (e.str, best[row]->entity, e.len);
        s_assert_number (tm_qresult_cell (r, row, 1), best[row]->pm25);
        tm_expr_value_t loc = tm_qresult_cell (r, row, 2);
        assert_int_equal (loc.type, TM_EXPR_LOCATION);
        assert_true (loc.lat == best[row]->lat && loc.lon == best[row]->lon);
    }
    assert_int_equal (tm_qresult_matched (r), n);
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
    //  Nulls sort last in both directions; without LIMIT every row comes.
    r = s_run ("SELECT entity, pm25 FROM twins WHERE model = 'parking_bay' ORDER BY pm25 DESC, "
               "entity", &q);
    size_t rows = tm_qresult_rows (r);
    assert_int_equal (rows, tm_qresult_matched (r));
    assert_int_equal (tm_qresult_cell (r, rows - 1, 1).type, TM_EXPR_NULL);
    assert_int_equal (tm_qresult_cell (r, 0, 1).type, TM_EXPR_NUMBER);
    assert_false (tm_qresult_truncated (r));
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
    //  Without ORDER BY, LIMIT still bounds the rows.
    q = s_parse ("SELECT entity FROM twins LIMIT 4");
    tm_qpartial_t *p = s_feed_three (q);
    r = tm_qresult_new (q, p);
    assert_int_equal (tm_qresult_rows (r), 4);
    assert_false (tm_qresult_truncated (r));
    tm_qresult_destroy (&r);
    tm_qpartial_destroy (&p);
    tm_query_destroy (&q);
}

static void
test_merge_refuses (void **state)
{
    (void) state;
    tm_query_t *q = s_parse ("SELECT district, count(*) FROM twins GROUP BY district");
    tm_qpartial_t *p = s_feed_one (q);
    char why[256];
    assert_int_equal (tm_qpartial_merge (p, (const uint8_t *) "\xff\xff\xff", 3, why,
                                         sizeof why), -1);
    assert_int_equal (tm_qpartial_scanned (p), NTWINS);
    //  A partial of another shape: two keys.
    tm_query_t *other = s_parse ("SELECT district, model, count(*) FROM twins "
                                 "GROUP BY district, model");
    tm_qpartial_t *op = s_feed_one (other);
    size_t size;
    uint8_t *bytes = tm_qpartial_encode (op, &size);
    assert_int_equal (tm_qpartial_merge (p, bytes, size, why, sizeof why), -1);
    assert_non_null (strstr (why, "keys"));
    assert_int_equal (tm_qpartial_scanned (p), NTWINS);
    //  Every cut of good bytes is refused or merged, never a crash.
    for (size_t cut = 0; cut < size; cut += 7) {
        tm_qpartial_t *t = tm_qpartial_new (other);
        tm_qpartial_merge (t, bytes, cut, why, sizeof why);
        tm_qpartial_destroy (&t);
    }
    free (bytes);
    //  Rows into an aggregate query.
    tm_query_t *rowq = s_parse ("SELECT entity FROM twins");
    tm_qpartial_t *rp = s_feed_one (rowq);
    bytes = tm_qpartial_encode (rp, &size);
    assert_int_equal (tm_qpartial_merge (p, bytes, size, why, sizeof why), -1);
    assert_non_null (strstr (why, "rows"));
    free (bytes);
    //  A decoded plan has no final phase.
    size_t plan_size;
    uint8_t *plan = tm_query_plan_encode (q, &plan_size);
    tm_query_t *wq = tm_query_plan_decode (plan, plan_size, NULL);
    tm_qpartial_t *wp = tm_qpartial_new (wq);
    assert_null (tm_qresult_new (wq, wp));
    free (plan);
    tm_qpartial_destroy (&wp);
    tm_query_destroy (&wq);
    tm_qpartial_destroy (&rp);
    tm_query_destroy (&rowq);
    tm_qpartial_destroy (&op);
    tm_query_destroy (&other);
    tm_qpartial_destroy (&p);
    tm_query_destroy (&q);
}

static void
test_truncation (void **state)
{
    (void) state;
    tm_query_t *q = s_parse ("SELECT k, count(*) FROM twins GROUP BY k");
    tm_qpartial_t *p = tm_qpartial_new (q);
    for (int i = 0; i <= TM_QUERY_MAX_LIMIT; i++) {
        tm_expr_value_t v = tm_expr_number (i);
        tm_qpartial_feed (p, &v, 1);
    }
    assert_true (tm_qpartial_truncated (p));
    tm_qresult_t *r = tm_qresult_new (q, p);
    assert_int_equal (tm_qresult_rows (r), TM_QUERY_MAX_LIMIT);
    assert_true (tm_qresult_truncated (r));
    tm_qresult_destroy (&r);
    tm_qpartial_destroy (&p);
    tm_query_destroy (&q);
}

static void
test_policies (void **state)
{
    (void) state;
    tm_query_t *q = s_parse ("SELECT district, count(*), sum(pm25), min(pm25), p50(pm25) "
                             "FROM twins WHERE model = 'air_station' GROUP BY district");
    s_compute_truth (true);
    //  Suppress the small groups.
    uint64_t min_twins = 80;
    size_t expect = 0;
    for (int d = 0; d <= NDISTRICTS; d++)
        expect += s_truth[d].twins < min_twins;
    assert_true (expect > 0);
    tm_qpartial_t *p = s_feed_three (q);
    assert_int_equal (tm_qpartial_suppress_small (p, min_twins), expect);
    tm_qresult_t *r = tm_qresult_new (q, p);
    assert_int_equal (tm_qresult_rows (r), NDISTRICTS + 1 - expect);
    for (size_t row = 0; row < tm_qresult_rows (r); row++) {
        tm_expr_value_t c = tm_qresult_cell (r, row, 1);
        assert_true (c.num >= (double) min_twins);
    }
    tm_qresult_destroy (&r);
    //  Still mergeable after: feed more into it through bytes.
    size_t size;
    uint8_t *bytes = tm_qpartial_encode (p, &size);
    tm_qpartial_t *home = tm_qpartial_new (q);
    assert_int_equal (tm_qpartial_merge (home, bytes, size, NULL, 0), 0);
    free (bytes);
    tm_qpartial_destroy (&home);
    tm_qpartial_destroy (&p);

    //  Noise: same groups and keys, counts move, min and quantiles gone.
    p = s_feed_one (q);
    tm_qresult_t *exact = tm_qresult_new (q, p);
    tm_qpartial_add_noise (p, 0.5, 50);
    bytes = tm_qpartial_encode (p, &size);
    home = tm_qpartial_new (q);
    assert_int_equal (tm_qpartial_merge (home, bytes, size, NULL, 0), 0);
    free (bytes);
    r = tm_qresult_new (q, home);
    assert_int_equal (tm_qresult_rows (r), tm_qresult_rows (exact));
    size_t moved = 0;
    for (size_t row = 0; row < tm_qresult_rows (r); row++) {
        assert_true (s_same_value (tm_qresult_cell (r, row, 0), tm_qresult_cell (exact, row, 0)));
        tm_expr_value_t c = tm_qresult_cell (r, row, 1);
        assert_int_equal (c.type, TM_EXPR_NUMBER);
        assert_true (c.num >= 0 && c.num == floor (c.num));
        moved += c.num != tm_qresult_cell (exact, row, 1).num;
        assert_int_equal (tm_qresult_cell (r, row, 3).type, TM_EXPR_NULL);
        assert_int_equal (tm_qresult_cell (r, row, 4).type, TM_EXPR_NULL);
    }
    assert_true (moved > 0);
    //  Bad epsilon: nothing happens.
    tm_qpartial_t *again = s_feed_one (q);
    tm_qpartial_add_noise (again, 0, 1);
    tm_qpartial_add_noise (again, NAN, 1);
    tm_qresult_t *same = tm_qresult_new (q, again);
    s_assert_same_result (same, exact);
    tm_qresult_destroy (&same);
    tm_qpartial_destroy (&again);
    tm_qresult_destroy (&r);
    tm_qresult_destroy (&exact);
    tm_qpartial_destroy (&home);
    tm_qpartial_destroy (&p);
    tm_query_destroy (&q);

    //  Dropping rows.
    q = s_parse ("SELECT entity FROM twins");
    p = s_feed_one (q);
    tm_qpartial_drop_rows (p);
    r = tm_qresult_new (q, p);
    assert_int_equal (tm_qresult_rows (r), 0);
    assert_int_equal (tm_qresult_matched (r), NTWINS);
    tm_qresult_destroy (&r);
    tm_qpartial_destroy (&p);
    tm_query_destroy (&q);
}

//  A small result with metadata, for the encoding and printing tests.
static tm_qresult_t *
s_small_result (tm_query_t **q_p)
{
    tm_query_t *q = s_parse ("SELECT district, count(*) AS n, avg(pm25), "
                             "max(pm25) > 40 AS high FROM twins "
                             "WHERE model = 'air_station' GROUP BY district");
    tm_qpartial_t *p = s_feed_one (q);
    tm_qresult_t *r = tm_qresult_new (q, p);
    tm_qpartial_destroy (&p);
    const uint32_t missing[2] = {3, 17};
    assert_int_equal (tm_qresult_set_shards (r, 32, missing, 2), 0);
    tm_qresult_set_elapsed_us (r, 12345);
    assert_int_equal (tm_qresult_add_site (r, "milan", true, "this site", 800), 0);
    assert_int_equal (tm_qresult_add_site_answer (r, "turin", false, "no answer", 0, NULL, 0), 0);
    assert_int_equal (tm_qresult_add_warning (r, "worker w3 answered late"), 0);
    *q_p = q;
    return r;
}

static void
test_result_round_trip (void **state)
{
    (void) state;
    tm_query_t *q;
    tm_qresult_t *r = s_small_result (&q);
    size_t size;
    uint8_t *bytes = tm_qresult_encode (r, &size);
    assert_non_null (bytes);
    char why[256];
    tm_qresult_t *d = tm_qresult_decode (bytes, size, why, sizeof why);
    assert_non_null (d);
    s_assert_same_result (r, d);
    assert_int_equal (tm_qresult_shards_total (d), 32);
    const uint32_t *missing;
    assert_int_equal (tm_qresult_missing (d, &missing), 2);
    assert_int_equal (missing[1], 17);
    assert_int_equal (tm_qresult_elapsed_us (d), 12345);
    assert_true (tm_qresult_partial (d));
    assert_int_equal (tm_qresult_sites (d), 2);
    bool answered;
    uint64_t matched;
    assert_string_equal (tm_qresult_site (d, 1, &answered, &matched, NULL), "turin");
    assert_false (answered);
    assert_int_equal (tm_qresult_warnings (d), 1);
    assert_string_equal (tm_qresult_warning (d, 0), "worker w3 answered late");
    //  Hostile bytes: cuts and flips never crash.
    for (size_t cut = 0; cut < size; cut++) {
        tm_qresult_t *t = tm_qresult_decode (bytes, cut, why, sizeof why);
        tm_qresult_destroy (&t);
    }
    for (size_t i = 0; i < size; i++) {
        bytes[i] ^= 0xA5;
        tm_qresult_t *t = tm_qresult_decode (bytes, size, why, sizeof why);
        tm_qresult_destroy (&t);
        bytes[i] ^= 0xA5;
    }
    assert_null (tm_qresult_decode ((const uint8_t *) "\xff", 1, why, sizeof why));
    free (bytes);
    tm_qresult_destroy (&d);
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
}

static char *
s_print (const tm_qresult_t *r, tm_qresult_format_t format, char **trailer)
{
    char *out = NULL, *err = NULL;
    size_t out_size, err_size;
    FILE *fo = open_memstream (&out, &out_size);
    FILE *fe = open_memstream (&err, &err_size);
    assert_int_equal (tm_qresult_print (r, format, fo, fe), 0);
    fclose (fo);
    fclose (fe);
    if (trailer)
        *trailer = err;
    else
        free (err);
    return out;
}

static void
test_print (void **state)
{
    (void) state;
    tm_query_t *q;
    tm_qresult_t *r = s_small_result (&q);
    char *trailer;
    //  CSV: RFC 4180 quoting of a comma and of a quote.
    char *csv = s_print (r, TM_QRESULT_CSV, &trailer);
    assert_true (strncmp (csv, "district,n,avg(pm25),high\r\n", 27) == 0);
    assert_non_null (strstr (csv, "\r\n\"milan/district/Navigli, south\","));
    assert_non_null (strstr (csv, "\r\n\"milan/district/Citt\xc3\xa0 \"\"Studi\"\"\","));
    assert_non_null (strstr (csv, ",true\r\n") ? csv: NULL);
    //  The null district: an empty field.
    assert_non_null (strstr (csv, "\r\n,"));
    assert_non_null (strstr (trailer, "7 rows; "));
    assert_non_null (strstr (trailer, "of 1000 twins matched; 12.3 ms\n"));
    assert_non_null (strstr (trailer, "PARTIAL ANSWER: 2 of 32 shards did not answer within the "
                                      "deadline: 3,17\n"));
    assert_non_null (strstr (trailer, "site milan: answered, 800 twins matched (this site)\n"));
    assert_non_null (strstr (trailer, "PARTIAL ANSWER: site turin did not answer (no answer)\n"));
    assert_non_null (strstr (trailer, "warning: worker w3 answered late\n"));
    free (csv);
    free (trailer);
    //  Table: header, separator, aligned rows, NULL.
    char *table = s_print (r, TM_QRESULT_TABLE, NULL);
    char *second = strchr (table, '\n') + 1;
    assert_true (strncmp (table, "district ", 9) == 0);
    assert_true (strncmp (second, "--------", 8) == 0);
    assert_non_null (strstr (table, "\nNULL "));
    assert_non_null (strstr (table, "milan/district/Brera "));
    //  Every line of the body as wide as the header (display characters).
    size_t lines = 0;
    for (char *p = table; *p; p = strchr (p, '\n') + 1)
        lines++;
    assert_int_equal (lines, 2 + 7);
    free (table);
    //  JSON: everything in one object.
    char *js = s_print (r, TM_QRESULT_JSON, &trailer);
    assert_string_equal (trailer, "");
    free (trailer);
    json_error_t jerr;
    json_t *root = json_loads (js, 0, &jerr);
    assert_non_null (root);
    assert_int_equal (json_array_size (json_object_get (root, "columns")), 4);
    assert_int_equal (json_array_size (json_object_get (root, "rows")), 7);
    assert_true (json_is_true (json_object_get (root, "partial")));
    assert_int_equal (json_integer_value (json_object_get (root, "scanned")), NTWINS);
    assert_int_equal (json_integer_value (json_object_get (root, "shards_total")), 32);
    assert_int_equal (json_array_size (json_object_get (root, "missing_shards")), 2);
    assert_int_equal (json_array_size (json_object_get (root, "sites")), 2);
    assert_int_equal (json_array_size (json_object_get (root, "warnings")), 1);
    assert_true (json_is_false (json_object_get (root, "truncated")));
    assert_true (json_real_value (json_object_get (root, "elapsed_ms")) == 12.345);
    json_t *last = json_array_get (json_object_get (root, "rows"), 6);
    assert_true (json_is_null (json_array_get (last, 0)));
    json_decref (root);
    free (js);
    tm_qresult_destroy (&r);
    tm_query_destroy (&q);
    //  Numbers for people: whole numbers in full, others 6 digits.
    q = s_parse ("SELECT 123456789012 AS big, 1 / 3 AS third, -0.0 AS z, location "
                 "FROM twins LIMIT 1");
    tm_qpartial_t *p = s_feed_one (q);
    r = tm_qresult_new (q, p);
    table = s_print (r, TM_QRESULT_TABLE, NULL);
    assert_non_null (strstr (table, "123456789012  0.333333  0  45.4,9.1\n"));
    free (table);
    csv = s_print (r, TM_QRESULT_CSV, NULL);
    assert_non_null (strstr (csv, "123456789012,0.3333333333333333,0,\"45.4,9.1\"\r\n"));
    free (csv);
    tm_qresult_destroy (&r);
    tm_qpartial_destroy (&p);
    tm_query_destroy (&q);
}

int
main (void)
{
    s_make_city ();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_groups),
        cmocka_unit_test (test_having_order_limit),
        cmocka_unit_test (test_quantiles),
        cmocka_unit_test (test_no_twins),
        cmocka_unit_test (test_rows),
        cmocka_unit_test (test_merge_refuses),
        cmocka_unit_test (test_truncation),
        cmocka_unit_test (test_many_groups),
        cmocka_unit_test (test_policies),
        cmocka_unit_test (test_result_round_trip),
        cmocka_unit_test (test_print),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
